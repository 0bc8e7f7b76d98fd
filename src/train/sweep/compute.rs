//! Computing a training sweep's units on one backend: per checkpoint the weights,
//! the splits and the fixed Hessian batch are loaded once; each unit is then a
//! Hessian point or a `maskscape train` run plus the Hessian at its best state,
//! written atomically once complete.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::records::{
    DivergedAt, EvalPoint, HessianPoint, HessianRecord, RunRecord, TrainSweepResult, UnitKeys,
    UnitRecord,
};
use super::spec::{Arm, Checkpoint, TrainSweepSpec};
use super::{GridUnit, UnitKind};
use crate::backend::Scalar;
use crate::error::{Error, Result};
use crate::model::{Batch, Memory, Opt};
use crate::probe::device::{BackendJob, SpectralBackend};
use crate::probe::inputs::{HessianChoice, ModelInputs, indices_hash, scope_indices};
use crate::probe::operator::ProductPath;
use crate::probe::sweep::{PointBudget, lambda_max_and_trace};
use crate::probe::{HessianOperator, Restriction};
use crate::progress::Progress;
use crate::report::manifest::sha256_bytes;
use crate::report::{Manifest, atomic};
use crate::shard::{CellState, Shard};
use crate::train::data::{TrainData, TrainDataRequest};
use crate::train::run::{TrainRequest, TrainRun, run_train_on};
use crate::train::state;

pub(super) struct SweepJob<'a> {
    pub spec: &'a TrainSweepSpec,
    pub cache_dir: &'a Path,
    pub shard: Shard,
    pub stall: Option<Stall>,
    pub progress: &'a dyn Progress,
}

/// Passes cancellation through while hiding the inner runs' bars and notes, so the
/// sweep's bar counts units; the training steps it sees drive the stall hook.
struct Inner<'a> {
    outer: &'a dyn Progress,
    stall: Option<&'a Stall>,
}

impl Progress for Inner<'_> {
    fn advance(&self, n: u64) {
        if let Some(stall) = self.stall {
            stall.count(n);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.outer.is_cancelled()
    }
}

/// The `MASKSCAPE_TRAIN_SWEEP_STALL_AFTER` test hook (see
/// [`super::run_train_sweep_shard`]).
pub(super) struct Stall {
    after: u64,
    steps: AtomicU64,
}

impl Stall {
    const VARIABLE: &'static str = "MASKSCAPE_TRAIN_SWEEP_STALL_AFTER";

    pub(super) fn from_env() -> Result<Option<Self>> {
        let Some(value) = std::env::var_os(Self::VARIABLE) else {
            return Ok(None);
        };
        let after = value
            .to_str()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                Error::arg(
                    Self::VARIABLE,
                    format!("{value:?} is not a number of training steps"),
                )
            })?;
        Ok(Some(Stall {
            after,
            steps: AtomicU64::new(0),
        }))
    }

    fn count(&self, n: u64) {
        let before = self.steps.fetch_add(n, Ordering::SeqCst);
        if before < self.after && before + n >= self.after {
            // A test hook, not a report: the test reads this line to know the
            // process is inside a run before it kills it.
            eprintln!(
                "{}: stalled inside a run after {} training steps",
                Self::VARIABLE,
                before + n
            );
            std::thread::sleep(std::time::Duration::from_secs(300));
        }
    }
}

/// One checkpoint, loaded: its weights, the splits and the fixed Hessian batch.
struct Loaded<'a, T: Scalar, B: SpectralBackend<T>> {
    checkpoint: &'a Checkpoint,
    model: ModelInputs<T>,
    network: Opt<T, B>,
    batches: Vec<Batch>,
    data: TrainDataRequest,
}

impl BackendJob for SweepJob<'_> {
    type Output = TrainSweepResult;

    fn run<T: Scalar, B: SpectralBackend<T>>(self, backend: B) -> Result<TrainSweepResult> {
        let SweepJob {
            spec,
            cache_dir,
            shard,
            stall,
            progress,
        } = self;
        let inner = Inner {
            outer: progress,
            stall: stall.as_ref(),
        };
        let data = spec.data_request()?;
        let grid = spec.grid();
        let owned = spec.partition(shard.count()).units_of(shard);
        progress.start(owned.len() as u64, "training sweep");
        let mut records: Vec<Option<UnitRecord>> = grid.iter().map(|_| None).collect();
        let mut result = TrainSweepResult::empty(spec);
        for (c, checkpoint) in spec.sweep.checkpoints.iter().enumerate() {
            let keys = UnitKeys::new(spec, checkpoint)?;
            let mut todo = Vec::new();
            for i in owned.iter().copied().filter(|&i| grid[i].checkpoint == c) {
                match keys.read(spec, cache_dir, &grid[i]) {
                    (CellState::Done, Some(record)) => {
                        records[i] = Some(record);
                        result.cached += 1;
                        progress.advance(1);
                    }
                    _ => todo.push(i),
                }
            }
            if todo.is_empty() {
                continue;
            }
            progress.check()?;
            // Units on disk are recognised from the files' hashes: a rerun whose
            // units are all done never loads the weights.
            let model = ModelInputs::<T>::load(&checkpoint.path, None)?;
            let splits = TrainData::load(&data, &model.dir, model.config())?;
            let batches = splits.first_train(spec.hessian.examples)?;
            let network = Opt::new(
                backend.clone(),
                model.config().clone(),
                &model.checkpoint.params,
            )?;
            let loaded = Loaded {
                checkpoint,
                model,
                network,
                batches,
                data: data.clone(),
            };
            for i in todo {
                progress.check()?;
                let unit = &grid[i];
                let key = keys.key(spec, unit);
                let record = compute_unit(spec, &loaded, &backend, unit, key, cache_dir, &inner)?;
                match &record {
                    UnitRecord::Hessian(r) => atomic::write_json(&unit.path(cache_dir), r)?,
                    UnitRecord::Run(r) => {
                        atomic::write_json(&unit.path(cache_dir), r)?;
                        let work = unit.work_dir(cache_dir);
                        if work.exists() {
                            std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
                        }
                    }
                }
                result.computed += 1;
                progress.advance(1);
                records[i] = Some(record);
            }
        }
        for (unit, record) in grid.iter().zip(records) {
            if let Some(record) = record {
                result.file(unit, record);
            }
        }
        Ok(result)
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn compute_unit<T: Scalar, B: SpectralBackend<T>>(
    spec: &TrainSweepSpec,
    loaded: &Loaded<'_, T, B>,
    backend: &B,
    unit: &GridUnit,
    key: String,
    cache_dir: &Path,
    steps: &Inner<'_>,
) -> Result<UnitRecord> {
    // Hessian products are not training steps: only runs drive the stall hook.
    let progress = &Inner {
        outer: steps.outer,
        stall: None,
    };
    let h = &spec.hessian;
    let layout = loaded.model.layout();
    let name = loaded.checkpoint.name.clone();
    match unit.kind {
        UnitKind::Scope => {
            let indices = scope_indices(spec.sweep.scope, layout);
            if indices.is_empty() {
                return Err(Error::arg(
                    "[sweep] scope",
                    format!(
                        "`{}` holds no parameters in {}",
                        spec.sweep.scope.name(),
                        loaded.checkpoint.path.display()
                    ),
                ));
            }
            let sha = indices_hash(&indices);
            let count = indices.len();
            let point = hessian_point(
                spec,
                &loaded.network,
                &loaded.batches,
                &Restriction::Indices(indices),
                (h.scope_iters, h.scope_trace_products),
                progress,
            )?;
            Ok(UnitRecord::Hessian(Box::new(HessianRecord {
                key,
                checkpoint: name,
                arm: None,
                seed: None,
                trained_count: count,
                keep_probability: Some(1.0),
                indices_sha256: Some(sha),
                point: start_point(point, unit)?,
            })))
        }
        UnitKind::Start { arm, seed } => {
            let choice = spec.trained(arm, seed.unwrap_or(0));
            let resolved = resolve(&choice, loaded)?;
            let keep_probability = match &choice {
                HessianChoice::Draw { spec: mask } => Some(mask.keep_probability(layout)?),
                _ => None,
            };
            let count = match &resolved.restriction {
                Restriction::Indices(idx) => idx.len(),
                Restriction::Full => layout.total(),
            };
            let point = hessian_point(
                spec,
                &loaded.network,
                &loaded.batches,
                &resolved.restriction,
                (h.iters, h.trace_products),
                progress,
            )?;
            Ok(UnitRecord::Hessian(Box::new(HessianRecord {
                key,
                checkpoint: name,
                arm: Some(arm),
                seed,
                trained_count: count,
                keep_probability,
                indices_sha256: resolved.mask_sha256(),
                point: start_point(point, unit)?,
            })))
        }
        UnitKind::Run { arm, seed, lr } => {
            let run = train(spec, loaded, backend, unit, arm, seed, lr, cache_dir, steps)?;
            let end = match run.summary.diverged {
                Some(_) => None,
                None => end_point(spec, loaded, backend, &run, progress)?,
            };
            Ok(UnitRecord::Run(Box::new(run_record(
                key, name, arm, seed, lr, &run, end,
            ))))
        }
    }
}

/// The coordinates an arm trains, refusing an empty mask with the key named.
fn resolve<T: Scalar, B: SpectralBackend<T>>(
    choice: &HessianChoice,
    loaded: &Loaded<'_, T, B>,
) -> Result<crate::probe::inputs::Resolved> {
    let resolved = choice.resolve(loaded.model.layout())?;
    if matches!(&resolved.restriction, Restriction::Indices(idx) if idx.is_empty()) {
        return Err(Error::arg(
            "[sweep] ratios",
            format!(
                "{} keeps no parameter in {} (raise the ratio)",
                resolved.description,
                loaded.checkpoint.path.display()
            ),
        ));
    }
    Ok(resolved)
}

/// A point at the checkpoint must be finite: the checkpoint's loss is.
fn start_point(point: Option<HessianPoint>, unit: &GridUnit) -> Result<HessianPoint> {
    point.ok_or_else(|| {
        Error::Numerical(format!(
            "{}: the Hessian at the checkpoint is not finite",
            unit.id
        ))
    })
}

/// λmax by Lanczos (computed residual) and the trace by Hutch++ over
/// `restriction`'s coordinates on the fixed batch, and the batch's loss; `None`
/// when a value is not finite.
fn hessian_point<T: Scalar, B: SpectralBackend<T>>(
    spec: &TrainSweepSpec,
    network: &Opt<T, B>,
    batches: &[Batch],
    restriction: &Restriction,
    (iters, trace_products): (usize, usize),
    progress: &dyn Progress,
) -> Result<Option<HessianPoint>> {
    let memory = Memory::from_flag(spec.train.recompute);
    let op =
        HessianOperator::with_options(network, batches, restriction, ProductPath::Auto, memory)?;
    let budget = PointBudget {
        tol: spec.tol(),
        iters,
        trace_products,
        seed: spec.hessian.seed,
    };
    let (lambda_max, trace, loss) = lambda_max_and_trace(&op, &budget, progress)?;
    let values = [
        lambda_max.value,
        lambda_max.residual,
        trace.estimate,
        trace.standard_error,
        loss,
    ];
    if values.iter().any(|x| !x.is_finite()) {
        return Ok(None);
    }
    Ok(Some(HessianPoint {
        lambda_max,
        trace,
        loss,
        hvps: op.products(),
    }))
}

/// One `maskscape train` run on the sweep's engine, resuming the state a killed
/// sweep left in the unit's work folder.
#[allow(clippy::too_many_arguments)]
fn train<T: Scalar, B: SpectralBackend<T>>(
    spec: &TrainSweepSpec,
    loaded: &Loaded<'_, T, B>,
    backend: &B,
    unit: &GridUnit,
    arm: Arm,
    seed: u64,
    lr: f64,
    cache_dir: &Path,
    progress: &dyn Progress,
) -> Result<TrainRun> {
    let work = unit.work_dir(cache_dir);
    let request = |resume: bool| TrainRequest {
        model: loaded.checkpoint.path.clone(),
        data: loaded.data.clone(),
        trained: spec.trained(arm, seed),
        settings: spec.settings(lr, seed),
        gpu: spec.train.gpu,
        out: work.clone(),
        resume,
        keep_model: false,
        memory: Memory::from_flag(spec.train.recompute),
    };
    let manifest = || Manifest::new("training sweep", Some(seed), &json!({ "unit": unit.id }));
    let saved = state::dir(&work).join("state.json").is_file();
    let run = match run_train_on::<T, B>(backend.clone(), &request(saved), manifest()?, progress) {
        // A state saved for other settings (the spec changed under a killed
        // sweep) is not this unit's: start afresh.
        Err(Error::InvalidArgument { .. }) if saved => {
            state::remove(&work)?;
            run_train_on::<T, B>(backend.clone(), &request(false), manifest()?, progress)?
        }
        other => other?,
    };
    if run.interrupted.is_some() {
        return Err(Error::Cancelled);
    }
    Ok(run)
}

/// The Hessian at a run's best state, over the coordinates it trained.
fn end_point<T: Scalar, B: SpectralBackend<T>>(
    spec: &TrainSweepSpec,
    loaded: &Loaded<'_, T, B>,
    backend: &B,
    run: &TrainRun,
    progress: &dyn Progress,
) -> Result<Option<HessianPoint>> {
    let best = &run.summary.best.theta;
    let mut params = loaded.model.checkpoint.params.clone();
    let restriction = match &run.indices {
        Some(indices) => {
            for (&i, &x) in indices.iter().zip(best) {
                params[i as usize] = T::from_f64(x);
            }
            Restriction::Indices(indices.clone())
        }
        None => {
            params = best.iter().map(|&x| T::from_f64(x)).collect();
            Restriction::Full
        }
    };
    let network = Opt::new(backend.clone(), loaded.model.config().clone(), &params)?;
    let h = &spec.hessian;
    hessian_point(
        spec,
        &network,
        &loaded.batches,
        &restriction,
        (h.iters, h.trace_products),
        progress,
    )
}

fn run_record(
    key: String,
    checkpoint: String,
    arm: Arm,
    seed: u64,
    lr: f64,
    run: &TrainRun,
    end: Option<HessianPoint>,
) -> RunRecord {
    let s = &run.summary;
    let delta: Vec<u8> = run
        .delta_best
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    RunRecord {
        key,
        checkpoint,
        arm,
        seed,
        lr,
        trained_count: s.trained_count,
        indices_sha256: s.indices_sha256.clone(),
        steps: s.steps,
        steps_planned: s.steps_planned,
        diverged: s.diverged.as_ref().map(|d| DivergedAt {
            step: d.step,
            loss: finite(d.loss),
            reason: d.reason.clone(),
        }),
        best_step: s.best.step,
        best_dev_loss: s.best.dev_loss.and_then(finite),
        best_dev_accuracy: s.best.dev_accuracy.and_then(finite),
        test_loss: s.test.as_ref().and_then(|t| finite(t.loss)),
        test_accuracy: s
            .test
            .as_ref()
            .and_then(|t| t.accuracy.as_ref().map(|a| a.accuracy)),
        test_majority: s
            .test
            .as_ref()
            .and_then(|t| t.accuracy.as_ref().map(|a| a.majority_rate)),
        test_examples: s
            .test
            .as_ref()
            .and_then(|t| t.accuracy.as_ref().map(|a| a.total)),
        distance_best: finite(s.distance_best),
        distance_final: finite(s.distance_final),
        delta_best_sha256: sha256_bytes(&delta),
        evals: run
            .evals
            .iter()
            .map(|e| EvalPoint {
                step: e.step,
                train_loss: finite(e.train_loss),
                dev_loss: finite(e.dev_loss),
                dev_accuracy: e.dev_accuracy,
            })
            .collect(),
        end,
    }
}
