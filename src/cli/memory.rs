//! The memory flags shared by the commands that run forward-over-reverse passes
//! (`probe`, `landscape`, `verify`, `bench hvp`; a training command takes them
//! the same way, `#[command(flatten)] memory: MemoryArgs`).

use clap::Args;
use serde::Serialize;

use crate::model::Memory;

/// `--recompute`, or `--memory auto|stored|recompute`.
#[derive(Args, Clone, Copy, Debug, Serialize)]
pub struct MemoryArgs {
    /// Keep only each decoder block's input in the forward sweep and recompute the
    /// block's activations in the reverse sweep: the same results to the bit, about
    /// one more forward sweep per pass, the blocks' activations L times smaller
    /// (same as --memory recompute).
    #[arg(long, conflicts_with = "memory")]
    recompute: bool,
    /// auto: store every block's activations when they fit in the free memory,
    /// recompute them when only that fits, refuse up front when neither does;
    /// stored or recompute: as said (still refused up front when it cannot fit).
    #[arg(long, value_enum, default_value = "auto")]
    memory: Memory,
}

impl MemoryArgs {
    /// The mode asked for.
    pub fn mode(&self) -> Memory {
        if self.recompute {
            Memory::Recompute
        } else {
            self.memory
        }
    }
}
