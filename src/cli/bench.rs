//! `maskscape bench ...`: speed measurements (never timed tests).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::BarProgress;
use crate::spectral::bench::{LanczosBench, lanczos_overhead};

/// The benchmark to run.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time per product spent outside the operator by the Lanczos modes, at large
    /// dimensions (full reorthogonalization where its basis fits in memory, and the
    /// memory-bounded mode in f64 and f32).
    Spectral(SpectralBenchArgs),
}

#[derive(Args, Debug)]
pub struct SpectralBenchArgs {
    /// Dimensions, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000, 10_000_000])]
    dims: Vec<usize>,
    /// Products per full-reorthogonalization run.
    #[arg(long, default_value_t = 60)]
    full_steps: usize,
    /// Products per memory-bounded run.
    #[arg(long, default_value_t = 120)]
    bounded_steps: usize,
    /// Basis bound of the memory-bounded runs.
    #[arg(long, default_value_t = 40)]
    basis: usize,
    /// Largest full-reorthogonalization basis to allocate, in GB.
    #[arg(long, default_value_t = 6.0)]
    memory_gb: f64,
    /// Runs per configuration (the fastest is reported).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Also write the table as CSV and Parquet into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs a benchmark and prints its table.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Spectral(args) => {
            if args.dims.iter().any(|&d| d < 100) {
                anyhow::bail!("--dims: every dimension must be at least 100");
            }
            let bench = LanczosBench {
                dims: args.dims,
                full_steps: args.full_steps,
                bounded_steps: args.bounded_steps,
                bounded_basis: args.basis,
                memory_limit: (args.memory_gb * 1e9) as usize,
                repeats: args.repeats,
            };
            let progress = BarProgress::new();
            crate::progress::Progress::start(
                &progress,
                (bench.dims.len() * 3 * bench.repeats) as u64,
                "bench spectral",
            );
            let table = lanczos_overhead(&bench, &progress)?;
            drop(progress);
            print!("{}", table.to_markdown());
            if let Some(out) = args.out {
                table.write_both(&out.join("bench_spectral"))?;
            }
            Ok(())
        }
    }
}
