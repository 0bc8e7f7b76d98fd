//! How much memory a pass needs, and whether the forward sweep's activations are
//! stored for the reverse sweep or recomputed block by block.
//!
//! A forward-over-reverse pass keeps, per decoder block, its activations (and in a
//! tangent pass their tangents) until the reverse sweep reaches the block: for
//! OPT-13b at 4 x 128 tokens in f32, 13 GB beside 51 GB of weights. With
//! [`Memory::Recompute`] the forward sweep keeps only each block's input (the
//! residual stream, value and tangent) and one block's activations as scratch; the
//! reverse sweep reruns block `l`'s forward from its input into the scratch when it
//! reaches it. The same kernels on the same inputs give the same bits, so every
//! result equals the stored path's exactly, at the cost of one more forward sweep
//! of the blocks below the top one.
//!
//! [`Footprint`] counts the bytes from the configuration and the batch shapes
//! (exactly the buffers `OptBuffers` and the LM head allocate, see the test
//! below), and [`Footprint::choose`] turns [`Memory::Auto`] into a decision
//! against the memory the device has free.

use serde::{Deserialize, Serialize};

use super::config::OptConfig;
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};

/// Whether a pass stores every block's activations or recomputes them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Memory {
    /// Stored when the stored activations fit in the free memory, recomputed when
    /// only the recomputing pass fits (see [`Footprint::choose`]).
    #[default]
    Auto,
    /// Every block's activations kept from the forward sweep for the reverse one.
    Stored,
    /// Each block's input kept; its activations recomputed by the reverse sweep.
    Recompute,
}

impl Memory {
    /// `recompute`, `stored` or `auto`.
    pub fn name(self) -> &'static str {
        match self {
            Memory::Auto => "auto",
            Memory::Stored => "stored",
            Memory::Recompute => "recompute",
        }
    }

    /// `Recompute` when `recompute`, else `Auto` (a spec's `recompute = true`).
    pub fn from_flag(recompute: bool) -> Memory {
        if recompute {
            Memory::Recompute
        } else {
            Memory::Auto
        }
    }
}

/// What a pass computes, which decides its buffers (tangent pairs, adjoints) and
/// the vectors beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Forward only.
    Loss,
    /// The dense gradient (an N-vector).
    Gradient,
    /// The gradient at a mask's k coordinates.
    MaskedGradient,
    /// `H v` for an N-vector `v`, and the gradient too when `gradient`.
    Hvp { gradient: bool },
    /// The masked Hessian times a k-vector.
    MaskedHvp,
}

impl Operation {
    /// A tangent pass (value and tangent pairs).
    pub fn dual(self) -> bool {
        matches!(self, Operation::Hvp { .. } | Operation::MaskedHvp)
    }

    /// A reverse sweep runs.
    pub fn reverse(self) -> bool {
        !matches!(self, Operation::Loss)
    }

    /// The scalars of the vectors an [`super::Objective`] call needs beside the
    /// pass's buffers, for `n` parameters and a mask of `k`: the input and output
    /// N-vectors (or k-vectors) on the backend.
    pub fn vector_elements(self, n: usize, k: usize) -> usize {
        match self {
            Operation::Loss => 0,
            Operation::Gradient => n,
            Operation::MaskedGradient => k,
            Operation::Hvp { gradient } => (2 + usize::from(gradient)) * n,
            Operation::MaskedHvp => 2 * k,
        }
    }

    /// For messages: `masked HVP`, ...
    pub fn describe(self) -> &'static str {
        match self {
            Operation::Loss => "forward pass",
            Operation::Gradient => "gradient",
            Operation::MaskedGradient => "masked gradient",
            Operation::Hvp { .. } => "full HVP",
            Operation::MaskedHvp => "masked HVP",
        }
    }
}

/// The sizes of one batch as a pass sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassShape {
    pub batch: usize,
    pub seq: usize,
    /// Rows the LM head runs on (the scored rows; every row for the logits).
    pub head_rows: usize,
}

impl PassShape {
    /// The shape of a pass over `batch` (its LM head on the scored rows).
    pub fn of(batch: &super::Batch) -> PassShape {
        PassShape {
            batch: batch.tokens.batch,
            seq: batch.tokens.seq,
            head_rows: super::batch::scored_rows(&batch.row_targets()).len(),
        }
    }
}

/// Scalars of the buffers one pass over `shape` holds: the residual stream at
/// every block boundary, every block's activations (one block's when
/// `recompute`), the final LayerNorm and projections, one block's adjoints (with a
/// reverse sweep) and the LM head's buffers. In a `dual` pass every buffer holds a
/// pair (the attention probabilities carry their tangent too) except the LayerNorm
/// statistics and the head's softmax.
///
/// In symbols, with r = batch x seq rows, h hidden, f ffn, e the embedding width,
/// V the vocabulary, L layers, A = batch x heads x seq² attention probabilities,
/// p = 2 in a tangent pass (else 1), R the head's rows:
/// - per block: `p r (7h + 2f) + p A + 4r`;
/// - streams: `(L + 1) p r h`, final LayerNorm `p r h + 2r`, projections `2 p r e`;
/// - adjoints: `p r (7h + 2f)` (+ `p r e` with projections);
/// - head: `R (p e + p V + V + p)`, and `R (p e + p V + p)` more with a reverse
///   sweep (`R e` more in a value pass: the fused head's `d lp / d x`).
pub fn workspace_elements(
    c: &OptConfig,
    shape: PassShape,
    dual: bool,
    reverse: bool,
    recompute: bool,
) -> usize {
    let p = if dual { 2 } else { 1 };
    let r = shape.batch * shape.seq;
    let (h, f, e, v) = (
        c.hidden_size,
        c.ffn_dim,
        c.word_embed_proj_dim,
        c.vocab_size,
    );
    let probs = shape.batch * c.num_attention_heads * shape.seq * shape.seq;
    let layers = c.num_hidden_layers;
    let proj = c.has_projections();
    let block = p * r * (7 * h + 2 * f) + p * probs + 4 * r;
    let blocks = if recompute { layers.min(1) } else { layers };
    let mut n = blocks * block + (layers + 1) * p * r * h + 2 * r;
    if c.has_final_layer_norm() {
        n += p * r * h;
    }
    if proj {
        n += 2 * p * r * e;
    }
    let hr = shape.head_rows;
    n += hr * (p * e + p * v + v + p);
    if reverse {
        n += p * r * (7 * h + 2 * f) + if proj { p * r * e } else { 0 };
        n += hr * (p * e + p * v + p);
        if !dual {
            n += hr * e;
        }
    }
    n
}

/// The bytes a computation needs on its device, in parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// The parameters: N scalars.
    pub weights: u64,
    /// The vectors beside the pass (inputs and outputs, an operator's buffers, an
    /// algorithm's basis).
    pub vectors: u64,
    /// The pass's buffers with every block's activations stored (the largest batch
    /// shape: a workspace is dropped before the next shape's is made).
    pub stored: u64,
    /// The same with one block's activations, recomputed.
    pub recompute: u64,
    /// What the computation is, for messages.
    pub what: String,
}

/// The share of the free memory a computation may plan to fill: the rest is
/// headroom for what the formula does not count (allocator rounding, the GPU's
/// cuBLAS workspace, the host's other users).
pub const USABLE_SHARE: f64 = 0.95;

impl Footprint {
    /// The footprint of `op` on a model of `config` in a scalar of `scalar_bytes`
    /// over batches of `shapes`, with a mask of `k` coordinates.
    pub fn new(
        config: &OptConfig,
        scalar_bytes: usize,
        shapes: &[PassShape],
        op: Operation,
        k: usize,
    ) -> Self {
        let n = super::layout::ParamLayout::new(config).total();
        let pass = |recompute: bool| {
            shapes
                .iter()
                .map(|&s| workspace_elements(config, s, op.dual(), op.reverse(), recompute))
                .max()
                .unwrap_or(0)
        };
        let bytes = |elements: usize| (elements * scalar_bytes) as u64;
        Footprint {
            weights: bytes(n),
            vectors: bytes(op.vector_elements(n, k)),
            stored: bytes(pass(false)),
            recompute: bytes(pass(true)),
            what: op.describe().to_string(),
        }
    }

    /// The footprint of several computations whose vectors are all held at once
    /// and whose passes run one after the other (sharing one workspace at a time):
    /// the vectors add up, the passes take the largest.
    pub fn together(parts: &[Footprint], what: impl Into<String>) -> Footprint {
        let max = |f: fn(&Footprint) -> u64| parts.iter().map(f).max().unwrap_or(0);
        Footprint {
            weights: max(|f| f.weights),
            vectors: parts.iter().map(|f| f.vectors).sum(),
            stored: max(|f| f.stored),
            recompute: max(|f| f.recompute),
            what: what.into(),
        }
    }

    /// [`Footprint::choose`] against the free memory of `backend` (the host's for
    /// the CPU, the GPU's for CUDA).
    pub fn choose_on<T: Scalar, B: Backend<T>>(&self, backend: &B, mode: Memory) -> Result<Memory> {
        let device = if backend.name() == "cpu" {
            "the host (MemAvailable)"
        } else {
            "the GPU"
        };
        self.choose(mode, backend.available_memory(), device)
    }

    /// [`Footprint::new`] for a dataset of `batches` in `T` (the batch shapes, their
    /// LM head on the scored rows): what a command plans from `config.json` and its
    /// data before it reads the weights.
    pub fn for_batches<T: Scalar>(
        config: &OptConfig,
        batches: &[super::Batch],
        op: Operation,
        k: usize,
    ) -> Self {
        let shapes: Vec<PassShape> = batches.iter().map(PassShape::of).collect();
        Self::new(config, std::mem::size_of::<T>(), &shapes, op, k)
    }

    /// Adds `bytes` of vectors (an operator's or an algorithm's).
    pub fn plus_vectors(mut self, bytes: u64) -> Self {
        self.vectors += bytes;
        self
    }

    /// Everything, with the pass storing or recomputing its activations.
    pub fn total(&self, recompute: bool) -> u64 {
        let pass = if recompute {
            self.recompute
        } else {
            self.stored
        };
        self.weights + self.vectors + pass
    }

    /// One line: the total of each mode and its parts.
    pub fn describe(&self) -> String {
        format!(
            "{} needs {} with stored activations and {} recomputing them \
             (weights {} + vectors {} + pass {} stored / {} recomputing)",
            self.what,
            gb(self.total(false)),
            gb(self.total(true)),
            gb(self.weights),
            gb(self.vectors),
            gb(self.stored),
            gb(self.recompute),
        )
    }

    /// Stored or recomputed, as `mode` asks, given `available` free bytes on the
    /// device (`None`: unknown, nothing is checked and `Auto` stores). A mode fits
    /// when its total is at most [`USABLE_SHARE`] of the free memory; `Auto` stores
    /// when that fits, recomputes when only that fits, and, like an explicit mode
    /// that does not fit, is refused with both figures and the free memory, before
    /// anything large is allocated. `device` names the memory in the message.
    pub fn choose(&self, mode: Memory, available: Option<u64>, device: &str) -> Result<Memory> {
        let Some(free) = available else {
            return Ok(match mode {
                Memory::Auto => Memory::Stored,
                m => m,
            });
        };
        let fits = |recompute: bool| self.total(recompute) as f64 <= USABLE_SHARE * free as f64;
        let chosen = match mode {
            Memory::Auto if fits(false) => Some(Memory::Stored),
            Memory::Auto if fits(true) => Some(Memory::Recompute),
            Memory::Stored if fits(false) => Some(Memory::Stored),
            Memory::Recompute if fits(true) => Some(Memory::Recompute),
            _ => None,
        };
        chosen.ok_or_else(|| {
            let hint = match mode {
                Memory::Stored if fits(true) => " (--recompute would fit)",
                Memory::Stored | Memory::Auto if !fits(true) => {
                    ": use fewer tokens per batch (--batch) or a smaller dtype"
                }
                _ => "",
            };
            Error::OutOfMemory(format!(
                "{}, but {device} has {} free ({}% usable: {}){hint}",
                self.describe(),
                gb(free),
                (USABLE_SHARE * 100.0).round(),
                gb((USABLE_SHARE * free as f64) as u64),
            ))
        })
    }
}

/// `12.34 GB` (10^9 bytes).
pub fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        None => Some(value),
        _ => None,
    }
}

/// The host's available memory (`MemAvailable` of `/proc/meminfo`: free memory
/// plus what the kernel can reclaim without swapping); `None` where unreadable.
pub fn host_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_available(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       24567892 kB\nMemFree:  100 kB\nMemAvailable:   21000000 kB\n";
        assert_eq!(meminfo_available(text), Some(21_000_000 * 1024));
        assert_eq!(meminfo_available("MemFree: 1 kB\n"), None);
    }

    /// The figures the README quotes: OPT-13b at 4 x 128 in f32, masked HVP.
    #[test]
    fn opt_13b_masked_hvp_fits_in_80_gb_either_way() {
        let c = preset("opt-13b").unwrap();
        let shape = PassShape {
            batch: 4,
            seq: 128,
            head_rows: 4 * 127,
        };
        let f = Footprint::new(&c, 4, &[shape], Operation::MaskedHvp, 12_000);
        assert!((51.0e9..52.0e9).contains(&(f.weights as f64)), "{f:?}");
        assert!(f.total(false) < 70_000_000_000, "{}", f.describe());
        assert!(f.total(true) < 55_000_000_000, "{}", f.describe());
        assert!(f.stored > 7 * f.recompute, "{}", f.describe());
    }

    #[test]
    fn auto_stores_when_it_fits_recomputes_when_only_that_fits_else_refuses() {
        let f = Footprint {
            weights: 50,
            vectors: 10,
            stored: 40,
            recompute: 5,
            what: "masked HVP".into(),
        };
        let choose = |mode, free| f.choose(mode, free, "the host").ok();
        assert_eq!(choose(Memory::Auto, Some(200)), Some(Memory::Stored));
        assert_eq!(choose(Memory::Auto, Some(80)), Some(Memory::Recompute));
        assert_eq!(choose(Memory::Auto, None), Some(Memory::Stored));
        assert_eq!(choose(Memory::Recompute, None), Some(Memory::Recompute));
        assert_eq!(choose(Memory::Stored, Some(200)), Some(Memory::Stored));
        let err = f.choose(Memory::Stored, Some(80), "the host").unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)));
        assert!(err.to_string().contains("--recompute would fit"), "{err}");
        let err = f.choose(Memory::Auto, Some(60), "the host").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("needs 0.00 GB"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
