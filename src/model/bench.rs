//! Timing the engine's sweeps: what `maskscape bench hvp` measures.
//!
//! Each phase runs `warmup` times untimed (buffers allocated, caches warm), then
//! `reps` times timed; the median is the figure to quote. Vectors live on the
//! backend, so transfers are not timed. A GPU runs its kernels asynchronously, so
//! every timed run ends by copying one number back to the host, which waits for
//! all the work queued before it: the clock stops when the result exists.
//!
//! Beside the phases it times the arithmetic floor `F`: one forward sweep's matrix
//! products at the model's own shapes, run back to back on resident operands with
//! nothing else in between. A full HVP is about `8 F` of products (per linear map:
//! its value and the value's two tangent terms, the input adjoint and its two
//! tangent terms, the weight adjoint's two tangent terms) and a masked one about
//! `4 F`, so a phase's time in units of `F` says how far it is from what the
//! backend's products allow.

use std::time::Instant;

use rand::Rng as _;
use rand_distr::StandardNormal;

use super::batch::{Batch, IGNORE_LABEL, Targets, TokenBatch, scored_rows};
use super::config::OptConfig;
use super::memory::{Footprint, Memory, Operation, PassShape};
use super::objective::Objective;
use super::opt::Opt;
use crate::backend::{Backend, Gemm, Scalar};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng;

/// Stream tags, so the benchmark's draws are independent of other uses of the seed.
const TOKENS_STREAM: u64 = 0x746f_6b73; // "toks"
const PROBE_STREAM: u64 = 0x7072_6f62; // "prob"
const MASKED_PROBE_STREAM: u64 = 0x6d70_726f; // "mpro"

/// `batch` sequences of `seq` token ids drawn uniformly from `[4, vocab)` (no
/// special tokens), scored on every next token, as in PyTorch's reference benchmark.
pub fn random_batch(config: &OptConfig, batch: usize, seq: usize, seed: u64) -> Result<Batch> {
    if config.vocab_size <= 4 {
        return Err(Error::arg(
            "--config",
            "the vocabulary needs more than the 4 special tokens",
        ));
    }
    let mut r = rng::stream(seed, TOKENS_STREAM);
    let input_ids: Vec<u32> = (0..batch * seq)
        .map(|_| r.random_range(4..config.vocab_size as u32))
        .collect();
    let labels = input_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            if i % seq == 0 {
                IGNORE_LABEL
            } else {
                i64::from(id)
            }
        })
        .collect();
    Ok(Batch {
        tokens: TokenBatch::unpadded(batch, seq, input_ids),
        targets: Targets::NextToken { labels },
    })
}

/// Timings of one phase, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseTimes {
    pub phase: &'static str,
    pub samples_ms: Vec<f64>,
    /// With a paired floor: `F` timed right before each sample.
    pub floor_ms: Vec<f64>,
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

impl PhaseTimes {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples_ms.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        median(self.samples_ms.clone())
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// The phases of `bench hvp` and the arithmetic floor they are measured against.
#[derive(Clone, Debug)]
pub struct HvpBench {
    /// Forward (loss), gradient, masked gradient, full HVP and masked HVP.
    pub phases: Vec<PhaseTimes>,
    /// One forward sweep's matrix products (`F`), timed like a phase.
    pub floor: PhaseTimes,
    /// The flops of those products.
    pub floor_flops: f64,
    /// Whether the passes recomputed the blocks' activations (`None`: no pass ran).
    pub recomputed: Option<bool>,
}

impl HvpBench {
    /// A phase's median in units of the floor's median `F`; with a paired floor,
    /// the median of each sample over the `F` timed right before it (which cancels
    /// a shared machine's drift between the phases).
    pub fn in_floor_units(&self, phase: &PhaseTimes) -> f64 {
        if phase.floor_ms.len() == phase.samples_ms.len() && !phase.floor_ms.is_empty() {
            let ratios = phase.samples_ms.iter().zip(&phase.floor_ms);
            median(ratios.map(|(s, f)| s / f).collect())
        } else {
            phase.median() / self.floor.median()
        }
    }

    /// The rate of the floor's products, in GFLOP/s (at its median).
    pub fn floor_gflops(&self) -> f64 {
        self.floor_flops / (self.floor.median() * 1e6)
    }
}

/// The matrix products of one forward sweep of `config` over `batch` sequences of
/// `seq` tokens whose LM head runs on `head_rows` rows, as the backend's [`Gemm`]s:
/// per block the q, k, v and out projections, fc1 and fc2, and the attention
/// scores and their application as full `seq x seq` squares batched over the
/// (sequence, head) pairs; `project_in` and `project_out` when the embedding is
/// narrower than the model; the LM head.
pub fn forward_products(
    config: &OptConfig,
    batch: usize,
    seq: usize,
    head_rows: usize,
) -> Vec<Gemm> {
    let rows = batch * seq;
    let (h, f, e) = (
        config.hidden_size,
        config.ffn_dim,
        config.word_embed_proj_dim,
    );
    let heads = config.num_attention_heads;
    let head_dim = h / heads.max(1);
    let pairs = batch * heads;
    let per_pair = seq * head_dim;
    let block = [
        Gemm::nt(rows, h, h), // q
        Gemm::nt(rows, h, h), // k
        Gemm::nt(rows, h, h), // v
        Gemm::nt(seq, seq, head_dim).batched(pairs, per_pair, per_pair, seq * seq),
        Gemm::nn(seq, head_dim, seq).batched(pairs, seq * seq, per_pair, per_pair),
        Gemm::nt(rows, h, h), // out
        Gemm::nt(rows, f, h), // fc1
        Gemm::nt(rows, h, f), // fc2
    ];
    let projected = e != h;
    let mut products = Vec::new();
    if projected {
        products.push(Gemm::nt(rows, h, e));
    }
    for _ in 0..config.num_hidden_layers {
        products.extend(block);
    }
    if projected {
        products.push(Gemm::nt(rows, e, h));
    }
    products.push(Gemm::nt(head_rows, config.vocab_size, e));
    products
}

/// Flops of a list of products.
pub fn flops(products: &[Gemm]) -> f64 {
    products
        .iter()
        .map(|g| 2.0 * (g.m * g.n * g.k * g.batch) as f64)
        .sum()
}

/// Matrix products to run back to back on the backend. Every product reads and
/// writes the start of three shared buffers sized for the largest, so its operands
/// are resident, as they would be in the best case inside a sweep.
pub struct Products<T: Scalar, B: Backend<T>> {
    products: Vec<Gemm>,
    lhs: B::Buf,
    rhs: B::Buf,
    out: B::Buf,
}

/// The lengths of the three buffers [`Products`] runs `products` on.
fn extents(products: &[Gemm]) -> [usize; 3] {
    let extent = |pick: fn((usize, usize, usize)) -> usize| {
        products
            .iter()
            .map(|g| pick(g.extents()))
            .max()
            .unwrap_or(0)
    };
    [extent(|e| e.0), extent(|e| e.1), extent(|e| e.2)]
}

impl<T: Scalar, B: Backend<T>> Products<T, B> {
    pub fn new(b: &B, products: Vec<Gemm>) -> Result<Self> {
        let [lhs, rhs, out] = extents(&products);
        Ok(Products {
            lhs: b.zeros(lhs)?,
            rhs: b.zeros(rhs)?,
            out: b.zeros(out)?,
            products,
        })
    }

    /// Queues every product once.
    pub fn run(&mut self, b: &B) {
        for g in &self.products {
            b.gemm(
                g,
                b.view(&self.lhs),
                b.view(&self.rhs),
                b.view_mut(&mut self.out),
            );
        }
    }

    pub fn flops(&self) -> f64 {
        flops(&self.products)
    }
}

/// A phase of `bench hvp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The loss (forward sweeps only).
    Forward,
    /// The dense gradient (an N-vector).
    Gradient,
    /// The gradient at the mask.
    MaskedGradient,
    /// The full HVP (N-vectors in and out).
    Hvp,
    /// The masked HVP (k-vectors in and out).
    MaskedHvp,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 5] = [
        Phase::Forward,
        Phase::Gradient,
        Phase::MaskedGradient,
        Phase::Hvp,
        Phase::MaskedHvp,
    ];

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Gradient => "gradient",
            Phase::MaskedGradient => "masked gradient",
            Phase::Hvp => "hvp",
            Phase::MaskedHvp => "masked hvp",
        }
    }

    /// What the phase computes, for its memory.
    pub fn operation(self) -> Operation {
        match self {
            Phase::Forward => Operation::Loss,
            Phase::Gradient => Operation::Gradient,
            Phase::MaskedGradient => Operation::MaskedGradient,
            Phase::Hvp => Operation::Hvp { gradient: false },
            Phase::MaskedHvp => Operation::MaskedHvp,
        }
    }
}

/// What `bench hvp` needs in memory for `phases` (their vectors are all allocated
/// before the first runs: see [`Footprint::together`]), with the floor's buffers
/// beside them when `paired_floor`.
pub fn bench_footprint(
    config: &OptConfig,
    scalar_bytes: usize,
    data: &[Batch],
    k: usize,
    phases: &[Phase],
    paired_floor: bool,
) -> Footprint {
    let shapes: Vec<PassShape> = data.iter().map(PassShape::of).collect();
    let parts: Vec<Footprint> = phases
        .iter()
        .map(|p| Footprint::new(config, scalar_bytes, &shapes, p.operation(), k))
        .collect();
    let names: Vec<&str> = phases.iter().map(|p| p.label()).collect();
    let footprint = Footprint::together(&parts, format!("bench hvp ({})", names.join(", ")));
    let floor = match (paired_floor, data.first()) {
        (true, Some(batch)) => {
            let head_rows = PassShape::of(batch).head_rows;
            let list = forward_products(config, batch.tokens.batch, batch.tokens.seq, head_rows);
            extents(&list).iter().sum::<usize>() * scalar_bytes
        }
        _ => 0,
    };
    footprint.plus_vectors(floor as u64)
}

/// How `bench hvp` runs.
#[derive(Clone, Debug)]
pub struct HvpBenchOptions {
    pub phases: Vec<Phase>,
    /// Whether the passes store or recompute the blocks' activations.
    pub memory: Memory,
    /// Timed runs per phase, after `warmup` untimed ones.
    pub reps: usize,
    pub warmup: usize,
    /// Seed of the probe vectors.
    pub seed: u64,
    /// Time `F` right before every timed run too (its buffers then live beside the
    /// phases'), for in-pair ratios on a shared machine.
    pub paired_floor: bool,
}

/// Times `options.phases` (forward, gradient, masked gradient, full HVP, masked
/// HVP) of `model` on `data` with the mask `mask` (sorted flat indices), and the
/// floor `F` of the first batch's shapes. The probe vectors are standard normal
/// draws from the seed; only the phases' own vectors are allocated.
pub fn bench_hvp<T: Scalar, B: Backend<T>>(
    model: &Opt<T, B>,
    data: &[Batch],
    mask: &[u64],
    options: &HvpBenchOptions,
    progress: &dyn Progress,
) -> Result<HvpBench> {
    let HvpBenchOptions {
        ref phases,
        memory,
        reps,
        warmup,
        seed,
        paired_floor,
    } = *options;
    if reps == 0 {
        return Err(Error::arg("--reps", "must be at least 1"));
    }
    if phases.is_empty() {
        return Err(Error::arg("--phases", "name at least one phase"));
    }
    let b = model.backend();
    let n = model.num_params();
    let mut objective = Objective::new(model, data)?;
    objective.set_memory(memory);
    objective.set_mask(mask)?;
    // v and the k-vector from streams of their own, so a run without the full HVP
    // neither holds nor draws v (as large as the weights).
    let normal = |len: usize, stream: u64| -> Vec<T> {
        let mut r = rng::stream(seed, stream);
        (0..len)
            .map(|_| T::from_f64(r.sample(StandardNormal)))
            .collect()
    };
    let has = |p: Phase| phases.contains(&p);
    let v = b.upload_vec(normal(if has(Phase::Hvp) { n } else { 0 }, PROBE_STREAM))?;
    let vk = b.upload(&normal(mask.len(), MASKED_PROBE_STREAM))?;
    let vector = |on: bool, len: usize| b.zeros(if on { len } else { 0 });
    let mut grad = vector(has(Phase::Gradient), n)?;
    let mut hvp = vector(has(Phase::Hvp), n)?;
    let mut hvp_k = vector(has(Phase::MaskedHvp), mask.len())?;
    let mut grad_k = vector(has(Phase::MaskedGradient), mask.len())?;
    let sync = b.zeros(1)?;
    progress.start(((phases.len() + 1) * (reps + warmup)) as u64, "benchmark");
    // invariant: Objective::new refused an empty dataset
    let floor_list = floor_products(model, &data[0]);
    let mut paired = if paired_floor {
        Some(Products::new(b, floor_list.clone())?)
    } else {
        None
    };
    let mut first = [T::from_f64(0.0)];
    // A download is ordered after every kernel launched before it (one stream).
    let wait_for_device = |first: &mut [T; 1]| b.download(b.view(&sync), first);
    let mut time = |phase: &'static str,
                    run: &mut dyn FnMut() -> Result<()>,
                    mut pair: Option<&mut Products<T, B>>|
     -> Result<PhaseTimes> {
        let mut samples_ms = Vec::with_capacity(reps);
        let mut floor_ms = Vec::new();
        for i in 0..warmup + reps {
            progress.check()?;
            if let (Some(floor), true) = (pair.as_deref_mut(), i >= warmup) {
                wait_for_device(&mut first)?;
                let start = Instant::now();
                floor.run(b);
                wait_for_device(&mut first)?;
                floor_ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            let start = Instant::now();
            run()?;
            wait_for_device(&mut first)?;
            if i >= warmup {
                samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            progress.advance(1);
        }
        Ok(PhaseTimes {
            phase,
            samples_ms,
            floor_ms,
        })
    };
    let mut times = Vec::new();
    for &phase in phases.iter() {
        let (o, pair) = (&mut objective, paired.as_mut());
        let label = phase.label();
        let t = match phase {
            Phase::Forward => time(label, &mut || o.loss().map(drop), pair)?,
            Phase::Gradient => time(label, &mut || o.gradient_into(&mut grad).map(drop), pair)?,
            Phase::MaskedGradient => time(
                label,
                &mut || o.masked_gradient_into(&mut grad_k).map(drop),
                pair,
            )?,
            Phase::Hvp => time(
                label,
                &mut || o.hvp_into(&v, &mut hvp, None).map(drop),
                pair,
            )?,
            Phase::MaskedHvp => time(
                label,
                &mut || o.masked_hvp_into(&vk, &mut hvp_k).map(drop),
                pair,
            )?,
        };
        times.push(t);
    }
    let recomputed = objective.into_buffers().recomputing();
    // the phases' buffers go before the floor's come, so they never add up
    drop((v, vk, grad, hvp, hvp_k, grad_k));
    let mut floor = match paired.take() {
        Some(floor) => floor,
        None => Products::new(b, floor_list)?,
    };
    let floor_times = time(
        "forward products (F)",
        &mut || {
            floor.run(b);
            Ok(())
        },
        None,
    )?;
    Ok(HvpBench {
        phases: times,
        floor: floor_times,
        floor_flops: floor.flops(),
        recomputed,
    })
}

/// The products of one forward sweep over `batch` (its LM head on the scored rows).
pub fn floor_products<T: Scalar, B: Backend<T>>(model: &Opt<T, B>, batch: &Batch) -> Vec<Gemm> {
    let head_rows = scored_rows(&batch.row_targets()).len();
    forward_products(
        model.config(),
        batch.tokens.batch,
        batch.tokens.seq,
        head_rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::presets::preset;

    /// `2 m n k` summed by hand over opt-mini's products on 4 x 64 tokens.
    #[test]
    fn forward_flops_match_the_closed_form() {
        let config = preset("opt-mini").unwrap();
        let (rows, h, f, v, head_rows) = (256.0, 256.0, 1024.0, 2048.0, 252.0);
        let linear = 2.0 * rows * (4.0 * h * h + 2.0 * h * f);
        // scores and their application: 16 (sequence, head) pairs of 64 x 64 x 64
        let attention = 2.0 * 2.0 * 16.0 * 64.0 * 64.0 * 64.0;
        let expected = 4.0 * (linear + attention) + 2.0 * head_rows * v * h;
        assert_eq!(flops(&forward_products(&config, 4, 64, 252)), expected);
    }

    /// OPT-350m's 512-wide embedding adds `project_in` and `project_out`, and its
    /// LM head is 512 wide.
    #[test]
    fn projections_enter_when_the_embedding_is_narrower() {
        let config = preset("opt-350m").unwrap();
        let products = forward_products(&config, 1, 8, 7);
        assert_eq!(products.len(), 2 + 24 * 8 + 1);
        assert_eq!(products[0], Gemm::nt(8, 1024, 512));
        assert_eq!(products[products.len() - 2], Gemm::nt(8, 512, 1024));
        assert_eq!(products[products.len() - 1], Gemm::nt(7, 50272, 512));
    }

    /// The shared buffers are large enough for every product: the CPU backend checks
    /// each operand's extent and panics on a short one.
    #[test]
    fn products_run_on_buffers_sized_for_the_largest() {
        let mut config = preset("opt-350m").unwrap();
        config.num_hidden_layers = 1;
        config.vocab_size = 64;
        let list = forward_products(&config, 2, 16, 30);
        Products::<f64, _>::new(&Cpu, list).unwrap().run(&Cpu);
    }
}
