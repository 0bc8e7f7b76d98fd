//! Timing the engine's sweeps: what `maskscape bench hvp` measures.
//!
//! Each phase runs `warmup` times untimed (buffers allocated, caches warm), then
//! `reps` times timed; the median is the figure to quote. Vectors live on the
//! backend, so transfers are not timed. A GPU runs its kernels asynchronously, so
//! every timed run ends by copying one number back to the host, which waits for
//! all the work queued before it: the clock stops when the result exists.

use std::time::Instant;

use rand::Rng as _;
use rand_distr::StandardNormal;

use super::batch::{Batch, IGNORE_LABEL, Targets, TokenBatch};
use super::config::OptConfig;
use super::objective::Objective;
use super::opt::Opt;
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng;

/// Stream tags, so the benchmark's draws are independent of other uses of the seed.
const TOKENS_STREAM: u64 = 0x746f_6b73; // "toks"
const PROBE_STREAM: u64 = 0x7072_6f62; // "prob"

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
}

impl PhaseTimes {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples_ms.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        let s = self.sorted();
        let n = s.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// Times forward (loss), gradient, full HVP and masked HVP of `model` on `data`
/// with the mask `mask` (sorted flat indices). The probe vectors are standard
/// normal draws from `seed`.
pub fn bench_hvp<T: Scalar, B: Backend<T>>(
    model: &Opt<T, B>,
    data: &[Batch],
    mask: &[u64],
    reps: usize,
    warmup: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Vec<PhaseTimes>> {
    if reps == 0 {
        return Err(Error::arg("--reps", "must be at least 1"));
    }
    let b = model.backend();
    let n = model.num_params();
    let mut objective = Objective::new(model, data)?;
    objective.set_mask(mask)?;
    let mut r = rng::stream(seed, PROBE_STREAM);
    let mut normal = |len: usize| -> Vec<T> {
        (0..len)
            .map(|_| T::from_f64(r.sample(StandardNormal)))
            .collect()
    };
    let v = b.upload(&normal(n))?;
    let vk = b.upload(&normal(mask.len()))?;
    let mut grad = b.zeros(n)?;
    let mut hvp = b.zeros(n)?;
    let mut hvp_k = b.zeros(mask.len())?;
    progress.start((4 * (reps + warmup)) as u64, "benchmark");
    let mut first = [T::from_f64(0.0)];
    // A download is ordered after every kernel launched before it (one stream).
    let mut wait_for_device = || b.download(b.sub(b.view(&v), 0..1), &mut first);
    let mut time =
        |phase: &'static str, run: &mut dyn FnMut() -> Result<()>| -> Result<PhaseTimes> {
            let mut samples_ms = Vec::with_capacity(reps);
            for i in 0..warmup + reps {
                progress.check()?;
                let start = Instant::now();
                run()?;
                wait_for_device()?;
                if i >= warmup {
                    samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
                }
                progress.advance(1);
            }
            Ok(PhaseTimes { phase, samples_ms })
        };
    Ok(vec![
        time("forward", &mut || objective.loss().map(drop))?,
        time("gradient", &mut || {
            objective.gradient_into(&mut grad).map(drop)
        })?,
        time("hvp", &mut || {
            objective.hvp_into(&v, &mut hvp, None).map(drop)
        })?,
        time("masked hvp", &mut || {
            objective.masked_hvp_into(&vk, &mut hvp_k).map(drop)
        })?,
    ])
}
