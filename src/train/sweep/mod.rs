//! Training sweeps: a grid of `maskscape train` runs (checkpoints x what trains x
//! learning rates x seeds), each with the masked Hessian's λmax (Lanczos, computed
//! residual) and trace (Hutch++) at its start and its end, cached unit by unit and
//! shardable like the probe sweep ([`crate::probe::sweep`], [`crate::shard`]).
//!
//! What trains, an [`Arm`]: a random mask at each of `ratios` (Bernoulli elements of
//! the scope, the paper's), a structured mask at each of `structured_ratios` (whole
//! columns, the paper's ablation) and, with `full = true`, every parameter (the FT
//! baseline). A seed draws the mask and the data order; the splits are the same
//! for every cell (`data_seed`).
//!
//! The grid's units, each one JSON file under `cells/` (its id + `.json`), keyed by
//! everything that determines it:
//! - `<checkpoint>/scope`: the whole-scope Hessian at the checkpoint, the
//!   interlacing ceiling and the p-proportional reference of the sharpness figure;
//! - `<checkpoint>/<arm>/seed-<s>/start` (`<checkpoint>/full/start`): the Hessian
//!   over the arm's coordinates at the checkpoint, where every run of that arm and
//!   seed starts (the same for every learning rate, so measured once);
//! - `<checkpoint>/<arm>/seed-<s>/lr-<lr>`: one training run, its scores and
//!   distance, and the Hessian at its best state (none when it diverged).
//!
//! Every Hessian is taken on one fixed batch, the first `[hessian] examples` of the
//! train split. A run in progress keeps `maskscape train`'s resumable state in
//! `cells/.work/<id>/` until its cell is written, so a killed sweep continues that
//! run from its last evaluation and a rerun computes only the units not on disk.

mod compute;
mod records;
mod spec;
pub mod summary;

use std::path::{Path, PathBuf};

pub use records::{HessianPoint, HessianRecord, RunRecord, TrainSweepResult};
pub use spec::{Arm, Checkpoint, GridSpec, HessianTable, NumberOr, TrainSweepSpec, TrainTable};

use crate::error::Result;
use crate::probe::device::dispatch;
use crate::probe::sweep::{MASK_ENTRY_WEIGHT, nominal_scope_share};
use crate::progress::Progress;
use crate::shard::{CellState, GridStatus, Partition, Shard, Unit};

/// What a unit computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnitKind {
    /// The whole-scope Hessian at the checkpoint.
    Scope,
    /// The Hessian over an arm's coordinates at the checkpoint (no seed for `full`).
    Start { arm: Arm, seed: Option<u64> },
    /// One training run.
    Run { arm: Arm, seed: u64, lr: f64 },
}

/// A unit of a training sweep's grid, from the spec alone.
#[derive(Clone, Debug, PartialEq)]
pub struct GridUnit {
    /// Index into the spec's checkpoints.
    pub checkpoint: usize,
    pub kind: UnitKind,
    /// The file under the cells folder without `.json`, and the id in a partition.
    pub id: String,
    /// Expected cost (see [`TrainSweepSpec::grid`]).
    pub cost: f64,
}

impl GridUnit {
    /// The unit's file under `cache_dir`.
    pub fn path(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("{}.json", self.id))
    }

    /// Where a run keeps its resumable state until its cell is written.
    pub fn work_dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(".work").join(&self.id)
    }

    fn unit(&self) -> Unit {
        Unit {
            id: self.id.clone(),
            cost: self.cost,
        }
    }
}

/// Relative costs for the shard partition, in one train example's masked gradient
/// at a vanishing mask. Measured on the CPU with the bundled model (batch 8 of
/// SST-2-mini): a step at ratio 1e-3 took 14 ms, at 1e-1 41 ms; a Hessian-vector
/// product over 16 examples 42 ms at 1e-3 (so about twice a gradient per example)
/// and growing as `1 + MASK_ENTRY_WEIGHT k/P` (see [`MASK_ENTRY_WEIGHT`]); the
/// dense gradient of full fine-tuning about 2.5 vanishing ones; an evaluation
/// forward about 0.4 of a gradient. Only the balance of the shards rests on them.
const GRADIENT_MASK_WEIGHT: f64 = 17.5;
const DENSE_GRADIENT: f64 = 2.5;
const HVP_OVER_GRADIENT: f64 = 2.0;
const FORWARD_OVER_GRADIENT: f64 = 0.4;

impl TrainSweepSpec {
    /// The fraction of the model's parameters an arm trains, as the partition
    /// prices it (for `ratio_of = "scope"` and the scope itself, the scope's
    /// nominal share of an OPT model: the partition must not read the checkpoint).
    fn nominal_fraction(&self, arm: Option<Arm>) -> f64 {
        let share = nominal_scope_share(self.sweep.scope);
        match arm.and_then(Arm::ratio) {
            None if arm == Some(Arm::Full) => 1.0,
            None => share,
            Some(r) => match self.sweep.ratio_of {
                crate::mask::RatioOf::Total => r,
                crate::mask::RatioOf::Scope => r * share,
            },
        }
    }

    /// A Hessian point's cost: its products over the fixed batch.
    fn hessian_cost(&self, products: usize, fraction: f64) -> f64 {
        let per_product = HVP_OVER_GRADIENT * (1.0 + MASK_ENTRY_WEIGHT * fraction.min(0.05));
        (products * self.hessian.examples) as f64 * per_product
    }

    /// A run's cost: its training examples' gradients, its evaluations, and the
    /// Hessian at its end (sizes as the spec gives them; unset splits count 100).
    fn run_cost(&self, fraction: f64) -> f64 {
        let g = &self.sweep;
        let train = g.train_examples.unwrap_or(100) as f64;
        let dev = g.dev_examples.unwrap_or(100) as f64;
        let test = g.test_examples.unwrap_or(100) as f64;
        let epochs = self.train.epochs as f64;
        let gradient = (1.0 + GRADIENT_MASK_WEIGHT * fraction).min(DENSE_GRADIENT);
        epochs * train * gradient
            + FORWARD_OVER_GRADIENT * (epochs * dev + test)
            + self.hessian_cost(self.hessian.iters + self.hessian.trace_products, fraction)
    }

    /// Every unit of the grid, from the spec alone (no file is read): per
    /// checkpoint the scope reference, then arm by arm and seed by seed the start
    /// and the runs at each learning rate.
    pub fn grid(&self) -> Vec<GridUnit> {
        let g = &self.sweep;
        let h = &self.hessian;
        let mut units = Vec::new();
        for (c, checkpoint) in g.checkpoints.iter().enumerate() {
            let at = |kind, id: String, cost| GridUnit {
                checkpoint: c,
                kind,
                id: format!("{}/{id}", checkpoint.name),
                cost,
            };
            units.push(at(
                UnitKind::Scope,
                "scope".into(),
                self.hessian_cost(
                    h.scope_iters + h.scope_trace_products,
                    self.nominal_fraction(None),
                ),
            ));
            for arm in self.arms() {
                let fraction = self.nominal_fraction(Some(arm));
                let start_cost = self.hessian_cost(h.iters + h.trace_products, fraction);
                if arm == Arm::Full {
                    units.push(at(
                        UnitKind::Start { arm, seed: None },
                        "full/start".into(),
                        start_cost,
                    ));
                }
                for &seed in &g.seeds {
                    let prefix = format!("{}/seed-{seed}", arm.name());
                    if arm != Arm::Full {
                        units.push(at(
                            UnitKind::Start {
                                arm,
                                seed: Some(seed),
                            },
                            format!("{prefix}/start"),
                            start_cost,
                        ));
                    }
                    for &lr in &g.lrs {
                        units.push(at(
                            UnitKind::Run { arm, seed, lr },
                            format!("{prefix}/lr-{lr:e}"),
                            self.run_cost(fraction),
                        ));
                    }
                }
            }
        }
        units
    }

    /// The cost-balanced split of [`Self::grid`] over `shards` processes; the same
    /// for every process that reads the same spec.
    pub fn partition(&self, shards: usize) -> Partition {
        let units: Vec<Unit> = self.grid().iter().map(GridUnit::unit).collect();
        Partition::new(&units, shards)
    }
}

/// Runs (or resumes) the whole of `spec`, caching units under `cache_dir`.
pub fn run_train_sweep(
    spec: &TrainSweepSpec,
    cache_dir: &Path,
    progress: &dyn Progress,
) -> Result<TrainSweepResult> {
    run_train_sweep_shard(spec, cache_dir, Shard::WHOLE, progress)
}

/// Runs (or resumes) the units of `shard` (see [`TrainSweepSpec::partition`]),
/// caching them under `cache_dir`; the result holds those units only.
///
/// Test hook: with `MASKSCAPE_TRAIN_SWEEP_STALL_AFTER=N` the process stops for up
/// to five minutes once N training steps have run in this process, inside a run
/// (its cell not yet written), after saying so on stderr, so a test can kill it
/// at a known point mid-grid.
pub fn run_train_sweep_shard(
    spec: &TrainSweepSpec,
    cache_dir: &Path,
    shard: Shard,
    progress: &dyn Progress,
) -> Result<TrainSweepResult> {
    spec.validate()?;
    let stall = compute::Stall::from_env()?;
    let t = &spec.train;
    dispatch(
        t.device,
        t.gpu,
        t.dtype,
        compute::SweepJob {
            spec,
            cache_dir,
            shard,
            stall,
            progress,
        },
    )
}

/// The units of `spec` on disk under `cache_dir`, computing nothing: the ones done
/// (as a result, for the tables and report) and the state of every unit, with its
/// owner under a split into `shards`.
pub fn train_sweep_on_disk(
    spec: &TrainSweepSpec,
    cache_dir: &Path,
    shards: usize,
) -> Result<(TrainSweepResult, GridStatus)> {
    spec.validate()?;
    let grid = spec.grid();
    let mut result = TrainSweepResult::empty(spec);
    let mut states = vec![CellState::Missing; grid.len()];
    for (c, checkpoint) in spec.sweep.checkpoints.iter().enumerate() {
        let keys = records::UnitKeys::new(spec, checkpoint)?;
        for (i, unit) in grid.iter().enumerate().filter(|(_, u)| u.checkpoint == c) {
            let (state, record) = keys.read(spec, cache_dir, unit);
            states[i] = state;
            if let Some(record) = record {
                result.file(unit, record);
            }
        }
    }
    result.cached = states.iter().filter(|s| **s == CellState::Done).count();
    let status = GridStatus::new(grid.iter().map(GridUnit::unit).collect(), states, shards);
    Ok((result, status))
}

#[cfg(test)]
mod tests;
