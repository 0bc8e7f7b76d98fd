//! Computing the cells of a stability grid: the network and the fixed batch loaded
//! once, then per cell the mask, lambda_max at theta_0 and the GD runs; and the
//! keys that tell a cell on disk from a stale one.

use std::path::Path;

use serde_json::json;

use super::{
    CellKind, EdgeRecord, Record, ScopeRecord, SharpnessPoint, StabilityCell, StabilityResult,
    StabilitySpec, ThresholdRecord, TopEigen,
};
use crate::backend::Scalar;
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::model::{Batch, Memory, Objective, Opt, OptConfig, ParamLayout};
use crate::probe::Restriction;
use crate::probe::device::{BackendJob, SpectralBackend};
use crate::probe::inputs::{DataInputs, ModelIdentity, ModelInputs, indices_hash, scope_indices};
use crate::progress::{Progress, Silent};
use crate::report::atomic;
use crate::report::manifest::{sha256_bytes, sha256_file};
use crate::shard::{CellState, Shard};
use crate::train::bisect::{RunOutcome, bisect_threshold};
use crate::train::optimizer::{OptimizerKind, OptimizerSettings};
use crate::train::sharpness::{SharpnessSettings, measure};
use crate::train::trainer::{StepOutcome, Trainer};

pub(super) struct StabilityJob<'a> {
    pub(super) spec: &'a StabilitySpec,
    pub(super) cells_dir: &'a Path,
    pub(super) shard: Shard,
    pub(super) progress: &'a dyn Progress,
}

/// The checkpoint and the fixed batch every cell starts from.
struct Start<'a, T: Scalar, B: SpectralBackend<T>> {
    backend: B,
    config: OptConfig,
    params: Vec<T>,
    layout: ParamLayout,
    batches: Vec<Batch>,
    spec: &'a StabilitySpec,
    progress: &'a dyn Progress,
}

impl BackendJob for StabilityJob<'_> {
    type Output = StabilityResult;

    fn run<T: Scalar, B: SpectralBackend<T>>(self, backend: B) -> Result<StabilityResult> {
        let StabilityJob {
            spec,
            cells_dir,
            shard,
            progress,
        } = self;
        let grid = spec.grid();
        let owned = spec.partition(shard.count()).units_of(shard);
        progress.start(owned.len() as u64, "gd stability");
        // Cached cells are recognised from the files' hashes: a rerun whose cells
        // are all on disk never loads the weights.
        let keys = CellKeys::new(spec)?;
        let mut result = StabilityResult::default();
        let mut todo = Vec::new();
        for i in owned {
            match keys.read(spec, cells_dir, &grid[i]) {
                (CellState::Done, Some(record)) => {
                    result.add(record);
                    result.cached += 1;
                    progress.advance(1);
                }
                _ => todo.push(i),
            }
        }
        if todo.is_empty() {
            return Ok(result);
        }
        let mut model = ModelInputs::<T>::load(&spec.model, None)?;
        let data = DataInputs::load(&spec.data_request()?, &spec.model, model.config())?;
        let start = Start {
            backend,
            config: model.config().clone(),
            layout: model.layout().clone(),
            params: std::mem::take(&mut model.checkpoint.params),
            batches: data.batches,
            spec,
            progress,
        };
        for i in todo {
            progress.check()?;
            let cell = &grid[i];
            let key = keys.key(spec, cell);
            let record = match cell.kind {
                CellKind::Threshold { ratio, seed } => {
                    let r = start.threshold_cell(ratio, seed, key)?;
                    atomic::write_json(&cell.path(cells_dir), &r)?;
                    Record::Threshold(r)
                }
                CellKind::Scope => {
                    let r = start.scope_cell(key)?;
                    atomic::write_json(&cell.path(cells_dir), &r)?;
                    Record::Scope(r)
                }
                CellKind::Edge { factor } => {
                    let r = start.edge_cell(factor, key)?;
                    atomic::write_json(&cell.path(cells_dir), &r)?;
                    Record::Edge(r)
                }
            };
            result.add(record);
            result.computed += 1;
            progress.advance(1);
        }
        Ok(result)
    }
}

impl<T: Scalar, B: SpectralBackend<T>> Start<'_, T, B> {
    /// The mask of a ratio and seed: its indices and keep probability.
    fn mask(&self, ratio: f64, seed: u64) -> Result<(Vec<u64>, f64)> {
        let mask_spec = self.spec.mask_spec(ratio, seed);
        let keep = mask_spec.keep_probability(&self.layout).map_err(|e| {
            Error::arg(
                "ratios",
                format!("{ratio} in {}: {e}", self.spec.model.display()),
            )
        })?;
        let mask = Mask::draw(&mask_spec, &self.layout)?;
        if mask.is_empty() {
            return Err(Error::arg(
                "ratios",
                format!(
                    "{ratio} keeps no parameter with mask seed {seed} in {} (raise the ratio)",
                    self.spec.model.display()
                ),
            ));
        }
        Ok((mask.indices().to_vec(), keep))
    }

    fn network(&self) -> Result<Opt<T, B>> {
        Opt::new(self.backend.clone(), self.config.clone(), &self.params)
    }

    /// The sharpness settings of lambda_max on the fixed batch.
    fn lanczos(&self) -> SharpnessSettings {
        SharpnessSettings {
            every: 1,
            examples: self.spec.examples,
            iters: self.spec.iters,
            tol: self.spec.tol,
            seed: self.spec.seed,
        }
    }

    /// lambda_max of the Hessian over `indices` of `model` on the fixed batch.
    fn top_eigen(&self, model: &Opt<T, B>, indices: &[u64]) -> Result<TopEigen> {
        let restriction = Restriction::Indices(indices.to_vec());
        let ((value, residual, converged), _) = measure(
            model,
            &self.batches,
            &restriction,
            Memory::Auto,
            None,
            &self.lanczos(),
            &Silent,
        )?;
        Ok(TopEigen {
            value,
            residual,
            converged,
        })
    }

    fn threshold_cell(&self, ratio: f64, seed: u64, key: String) -> Result<ThresholdRecord> {
        let (indices, keep_probability) = self.mask(ratio, seed)?;
        let network = self.network()?;
        let lambda_max = self.top_eigen(&network, &indices)?;
        let loss0 = Objective::new(&network, &self.batches)?.loss()?;
        drop(network);
        if lambda_max.value.is_nan() || lambda_max.value <= 0.0 {
            return Err(Error::Numerical(format!(
                "ratio {ratio}, seed {seed}: lambda_max at theta_0 is {} (not positive), so \
                 2/lambda_max predicts no threshold",
                lambda_max.value
            )));
        }
        let predicted = 2.0 / lambda_max.value;
        // One GD run per rate serves every level: it stops at the highest level's
        // crossing, after every lower level's.
        let highest = self.spec.blowup.iter().copied().fold(1.0, f64::max);
        let mut made: Vec<(f64, Vec<f64>)> = Vec::new();
        let mut thresholds = Vec::new();
        for options in self.spec.bisect_options() {
            let threshold = bisect_threshold(predicted, &options, |lr| {
                if let Some((_, losses)) = made.iter().find(|(r, _)| *r == lr) {
                    return Ok(RunOutcome::from_losses(lr, losses, &options));
                }
                self.progress.check()?;
                let (losses, _) = self.gd(&indices, lr, options.steps, Some(highest), None)?;
                let outcome = RunOutcome::from_losses(lr, &losses, &options);
                made.push((lr, losses));
                Ok(outcome)
            })?;
            thresholds.push(threshold);
        }
        Ok(ThresholdRecord {
            key,
            ratio,
            seed,
            keep_probability,
            dim: indices.len(),
            indices_sha256: indices_hash(&indices),
            loss0,
            lambda_max,
            predicted,
            thresholds,
            gd_runs: made.len(),
        })
    }

    fn scope_cell(&self, key: String) -> Result<ScopeRecord> {
        let indices = scope_indices(self.spec.scope, &self.layout);
        if indices.is_empty() {
            return Err(Error::arg(
                "scope",
                format!(
                    "scope `{}` holds no parameters in {}",
                    self.spec.scope.name(),
                    self.spec.model.display()
                ),
            ));
        }
        let network = self.network()?;
        Ok(ScopeRecord {
            key,
            dim: indices.len(),
            lambda_max: self.top_eigen(&network, &indices)?,
        })
    }

    fn edge_cell(&self, factor: f64, key: String) -> Result<EdgeRecord> {
        let edge = self
            .spec
            .edge
            .as_ref()
            .ok_or_else(|| Error::arg("edge", "absent"))?;
        let (indices, _) = self.mask(edge.ratio, edge.seed)?;
        let lambda_max = self.top_eigen(&self.network()?, &indices)?;
        let predicted = 2.0 / lambda_max.value;
        let lr = factor * predicted;
        let (mut losses, sharpness) =
            self.gd(&indices, lr, edge.steps, None, Some(edge.sharpness_every))?;
        let diverged = losses.len() < edge.steps + 1;
        losses.retain(|l| l.is_finite());
        Ok(EdgeRecord {
            key,
            ratio: edge.ratio,
            seed: edge.seed,
            factor,
            lr,
            predicted,
            losses,
            diverged,
            sharpness,
        })
    }

    /// Plain full-batch GD on `indices` from theta_0 with rate `lr` for `steps`
    /// steps: the losses `L(theta_0)`, ..., `L(theta_steps)`, stopping at the first
    /// loss above `stop_above` x the first (or at the trainer's own divergence
    /// test, whose loss may not be finite), and the sharpness every
    /// `sharpness_every` steps.
    fn gd(
        &self,
        indices: &[u64],
        lr: f64,
        steps: usize,
        stop_above: Option<f64>,
        sharpness_every: Option<usize>,
    ) -> Result<(Vec<f64>, Vec<SharpnessPoint>)> {
        let settings = OptimizerSettings {
            kind: OptimizerKind::Sgd,
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_steps: 0,
            clip: None,
            ..OptimizerSettings::default()
        };
        let mut trainer = Trainer::new(self.network()?, Some(indices), &settings)?;
        let restriction = Restriction::Indices(indices.to_vec());
        let mut losses = Vec::with_capacity(steps + 1);
        let mut sharpness = Vec::new();
        let mut measure_at = |trainer: &Trainer<T, B>, step: usize| -> Result<()> {
            if sharpness_every.is_some_and(|n| step.is_multiple_of(n)) {
                let ((lambda_max, residual, converged), _) = measure(
                    trainer.model(),
                    &self.batches,
                    &restriction,
                    trainer.memory(),
                    None,
                    &self.lanczos(),
                    &Silent,
                )?;
                sharpness.push(SharpnessPoint {
                    step,
                    lambda_max,
                    residual,
                    converged,
                });
            }
            Ok(())
        };
        for step in 0..steps {
            measure_at(&trainer, step)?;
            let loss = match trainer.step(&self.batches)? {
                StepOutcome::Moved(stats) => stats.loss,
                StepOutcome::Diverged { loss, .. } => {
                    losses.push(loss);
                    return Ok((losses, sharpness));
                }
            };
            losses.push(loss);
            if stop_above.is_some_and(|b| loss > b * losses[0]) {
                return Ok((losses, sharpness));
            }
        }
        measure_at(&trainer, steps)?;
        losses.push(Objective::new(trainer.model(), &self.batches)?.loss()?);
        Ok((losses, sharpness))
    }
}

/// What identifies the grid's cells on disk: the hashes of the checkpoint and the
/// data file, every setting that shapes a cell, and the program's version and commit.
pub(super) struct CellKeys {
    base: serde_json::Value,
}

impl CellKeys {
    pub(super) fn new(spec: &StabilitySpec) -> Result<Self> {
        let model = ModelIdentity::of(&spec.model, None)?;
        let (data, _) = sha256_file(&spec.data)?;
        Ok(CellKeys {
            base: json!({
                "version": env!("CARGO_PKG_VERSION"),
                "commit": env!("MASKSCAPE_GIT_COMMIT"),
                "model": model.sha256,
                "tokenizer": spec.tokenizer,
                "data": data,
                "data_spec": {
                    "task": spec.task, "template": spec.template, "candidates": spec.candidates,
                    "columns": spec.columns, "examples": spec.examples,
                    "data_seed": spec.data_seed,
                },
                "dtype": spec.dtype,
                "device": spec.device,
                "tf32": spec.gpu.tf32,
                "lanczos": {"iters": spec.iters, "tol": spec.tol, "seed": spec.seed},
            }),
        })
    }

    /// The SHA-256 of everything that determines `cell`.
    pub(super) fn key(&self, spec: &StabilitySpec, cell: &StabilityCell) -> String {
        let what = match cell.kind {
            CellKind::Threshold { ratio, seed } => json!({
                "mask": spec.mask_spec(ratio, seed), "bisect": spec.bisect_options(),
            }),
            CellKind::Scope => json!({"scope": spec.scope}),
            CellKind::Edge { factor } => {
                let edge = spec.edge.as_ref();
                json!({
                    "mask": edge.map(|e| spec.mask_spec(e.ratio, e.seed)), "factor": factor,
                    "steps": edge.map(|e| e.steps),
                    "sharpness_every": edge.map(|e| e.sharpness_every),
                })
            }
        };
        sha256_bytes(
            json!({"base": self.base, "cell": what})
                .to_string()
                .as_bytes(),
        )
    }

    /// The cell's record when its file holds this key: a missing file is missing;
    /// an unreadable or damaged file, or one with another key, is stale.
    pub(super) fn read(
        &self,
        spec: &StabilitySpec,
        cells_dir: &Path,
        cell: &StabilityCell,
    ) -> (CellState, Option<Record>) {
        let text = match std::fs::read_to_string(cell.path(cells_dir)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (CellState::Missing, None);
            }
            Err(_) => return (CellState::Stale, None),
        };
        let key = self.key(spec, cell);
        let record = match cell.kind {
            CellKind::Threshold { .. } => serde_json::from_str::<ThresholdRecord>(&text)
                .ok()
                .filter(|r| r.key == key)
                .map(Record::Threshold),
            CellKind::Scope => serde_json::from_str::<ScopeRecord>(&text)
                .ok()
                .filter(|r| r.key == key)
                .map(Record::Scope),
            CellKind::Edge { .. } => serde_json::from_str::<EdgeRecord>(&text)
                .ok()
                .filter(|r| r.key == key)
                .map(Record::Edge),
        };
        match record {
            Some(r) => (CellState::Done, Some(r)),
            None => (CellState::Stale, None),
        }
    }
}
