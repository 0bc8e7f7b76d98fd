//! Timing one training step: what `maskscape bench train` measures.
//!
//! A step on a masked model is the masked gradient (a forward pass and the input
//! adjoints down to the lowest masked tensor; the masked weight gradients are one dot
//! product per entry), clipping, AdamW on k-vectors and the in-place update: its
//! floor is about `2 F`, F being one forward's matrix products at the batch's shapes
//! (timed in the same run, as `bench hvp` does).

use std::time::Instant;

use super::optimizer::OptimizerSettings;
use super::trainer::{StepOutcome, Trainer};
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::model::bench::{PhaseTimes, Products, floor_products};
use crate::model::{Batch, Objective, Opt};
use crate::progress::Progress;

/// The timings of `bench train`.
#[derive(Clone, Debug)]
pub struct TrainBench {
    /// The whole step, and the masked gradient alone.
    pub phases: Vec<PhaseTimes>,
    /// One forward's matrix products (`F`).
    pub floor: PhaseTimes,
    pub floor_flops: f64,
}

impl TrainBench {
    /// A phase's median in units of the floor's median `F`.
    pub fn in_floor_units(&self, phase: &PhaseTimes) -> f64 {
        phase.median() / self.floor.median()
    }
}

/// Times `reps` masked steps of `settings` (after `warmup`) on `batch` with the mask
/// `mask`, the masked gradient alone, and the floor `F` of the batch's shapes.
pub fn bench_train_step<T: Scalar, B: Backend<T>>(
    model: Opt<T, B>,
    batch: &Batch,
    mask: &[u64],
    settings: &OptimizerSettings,
    reps: usize,
    warmup: usize,
    progress: &dyn Progress,
) -> Result<TrainBench> {
    if reps == 0 {
        return Err(Error::arg("--reps", "must be at least 1"));
    }
    let floor = floor_products(&model, batch);
    let mut trainer = Trainer::new(model, Some(mask), settings)?;
    let batches = std::slice::from_ref(batch);
    progress.start((3 * (warmup + reps)) as u64, "benchmark");
    // Every phase ends with a download, which waits for a GPU's queued work.
    let time = |phase: &'static str, run: &mut dyn FnMut() -> Result<()>| -> Result<PhaseTimes> {
        let mut samples_ms = Vec::with_capacity(reps);
        for i in 0..warmup + reps {
            progress.check()?;
            let start = Instant::now();
            run()?;
            if i >= warmup {
                samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            progress.advance(1);
        }
        Ok(PhaseTimes {
            phase,
            samples_ms,
            floor_ms: Vec::new(),
        })
    };
    let step = time("masked AdamW step", &mut || match trainer.step(batches)? {
        StepOutcome::Moved(_) => Ok(()),
        StepOutcome::Diverged { reason, .. } => Err(Error::Numerical(reason)),
    })?;
    let model = trainer.model();
    let mut objective = Objective::new(model, batches)?;
    objective.set_mask(mask)?;
    let gradient = time("masked gradient", &mut || {
        objective.masked_gradient().map(drop)
    })?;
    drop(objective);
    let b = model.backend();
    let mut products = Products::new(b, floor)?;
    let mut first = [T::ZERO];
    let sink = b.zeros(1)?;
    let floor_times = time("forward products (F)", &mut || {
        products.run(b);
        b.download(b.view(&sink), &mut first)
    })?;
    Ok(TrainBench {
        phases: vec![step, gradient],
        floor: floor_times,
        floor_flops: products.flops(),
    })
}
