//! What a training sweep's units record on disk, and the keys that tell a unit of
//! this spec from a stale one.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::spec::{Arm, Checkpoint, TrainSweepSpec};
use super::{GridUnit, UnitKind};
use crate::error::Result;
use crate::probe::inputs::ModelIdentity;
use crate::probe::spectrum::RitzPair;
use crate::report::manifest::{sha256_bytes, sha256_file};
use crate::shard::CellState;
use crate::spectral::TraceEstimate;

/// The masked Hessian at one point, on the sweep's fixed batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HessianPoint {
    pub lambda_max: RitzPair,
    pub trace: TraceEstimate,
    /// The loss on the fixed batch.
    pub loss: f64,
    pub hvps: u64,
}

/// A Hessian unit: the whole scope, or an arm's coordinates, at the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HessianRecord {
    /// SHA-256 of everything that determines the unit.
    pub key: String,
    pub checkpoint: String,
    /// `None` for the whole-scope reference.
    pub arm: Option<Arm>,
    pub seed: Option<u64>,
    /// Coordinates the Hessian is taken over (k).
    pub trained_count: usize,
    /// The probability with which each scoped unit is kept (1 for the scope, `None`
    /// for full fine-tuning).
    pub keep_probability: Option<f64>,
    pub indices_sha256: Option<String>,
    pub point: HessianPoint,
}

/// Where a diverged run stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DivergedAt {
    pub step: usize,
    /// The loss of that step (`None` when not finite).
    pub loss: Option<f64>,
    pub reason: String,
}

/// One dev evaluation of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    pub train_loss: Option<f64>,
    pub dev_loss: Option<f64>,
    pub dev_accuracy: Option<f64>,
}

/// One training run: what `maskscape train` reports, and the Hessian at its best
/// state. Only what the spec determines (no wall time), so the file is the same
/// bytes whichever process wrote it. Non-finite numbers are `None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub key: String,
    pub checkpoint: String,
    pub arm: Arm,
    pub seed: u64,
    pub lr: f64,
    pub trained_count: usize,
    pub indices_sha256: Option<String>,
    pub steps: usize,
    pub steps_planned: usize,
    /// Where the run diverged: a result, not an error.
    pub diverged: Option<DivergedAt>,
    pub best_step: usize,
    pub best_dev_loss: Option<f64>,
    pub best_dev_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// The test split's majority-class rate and size, the baseline of its accuracy.
    pub test_majority: Option<f64>,
    pub test_examples: Option<usize>,
    /// `‖θ − θ₀‖` over the trained coordinates at the best and the final state.
    pub distance_best: Option<f64>,
    pub distance_final: Option<f64>,
    /// SHA-256 of `θ_best − θ₀` (little-endian f64), to compare runs bit for bit.
    pub delta_best_sha256: String,
    pub evals: Vec<EvalPoint>,
    /// The Hessian at the best state (`None` for a diverged run).
    pub end: Option<HessianPoint>,
}

impl RunRecord {
    pub fn diverged(&self) -> bool {
        self.diverged.is_some()
    }
}

/// A unit's record, as read from disk.
pub enum UnitRecord {
    Hessian(Box<HessianRecord>),
    Run(Box<RunRecord>),
}

/// The units of a sweep that are done.
#[derive(Clone, Debug)]
pub struct TrainSweepResult {
    pub spec: TrainSweepSpec,
    /// The whole-scope reference of each checkpoint.
    pub scopes: Vec<HessianRecord>,
    /// The start of each arm and seed.
    pub starts: Vec<HessianRecord>,
    /// Every run, in grid order.
    pub runs: Vec<RunRecord>,
    /// Units computed by this process, and found on disk.
    pub computed: usize,
    pub cached: usize,
}

impl TrainSweepResult {
    pub(super) fn empty(spec: &TrainSweepSpec) -> Self {
        TrainSweepResult {
            spec: spec.clone(),
            scopes: Vec::new(),
            starts: Vec::new(),
            runs: Vec::new(),
            computed: 0,
            cached: 0,
        }
    }

    /// Files `record` as the unit it belongs to.
    pub(super) fn file(&mut self, unit: &GridUnit, record: UnitRecord) {
        match (unit.kind, record) {
            (UnitKind::Scope, UnitRecord::Hessian(r)) => self.scopes.push(*r),
            (UnitKind::Start { .. }, UnitRecord::Hessian(r)) => self.starts.push(*r),
            (UnitKind::Run { .. }, UnitRecord::Run(r)) => self.runs.push(*r),
            _ => {}
        }
    }

    /// The whole-scope reference of `checkpoint`.
    pub fn scope(&self, checkpoint: &str) -> Option<&HessianRecord> {
        self.scopes.iter().find(|s| s.checkpoint == checkpoint)
    }
}

/// What identifies one checkpoint's units on disk: the hashes of its files and of
/// the data files, every setting that shapes a unit, and the program's version
/// and commit.
pub(super) struct UnitKeys {
    base: serde_json::Value,
}

impl UnitKeys {
    pub(super) fn new(spec: &TrainSweepSpec, checkpoint: &Checkpoint) -> Result<Self> {
        let model = ModelIdentity::of(&checkpoint.path, None)?;
        let g = &spec.sweep;
        let hash = |path: Option<&Path>| -> Result<Option<String>> {
            path.map(|p| sha256_file(p).map(|(sha, _)| sha)).transpose()
        };
        Ok(UnitKeys {
            base: json!({
                "version": env!("CARGO_PKG_VERSION"),
                "commit": env!("MASKSCAPE_GIT_COMMIT"),
                "model": model.sha256,
                "data": hash(Some(&g.data))?,
                "dev": hash(g.dev.as_deref())?,
                "test": hash(g.test.as_deref())?,
                "data_spec": {
                    "task": g.task, "template": g.template, "candidates": g.candidates,
                    "columns": g.columns, "tokenizer": g.tokenizer,
                    "train_examples": g.train_examples, "dev_examples": g.dev_examples,
                    "test_examples": g.test_examples, "data_seed": g.data_seed,
                },
                "dtype": spec.train.dtype,
                "device": spec.train.device,
                "tf32": spec.train.gpu.tf32,
                "hessian": spec.hessian,
                "tol": spec.tol(),
            }),
        })
    }

    /// The SHA-256 of everything that determines `unit`.
    pub(super) fn key(&self, spec: &TrainSweepSpec, unit: &GridUnit) -> String {
        let what = match unit.kind {
            UnitKind::Scope => json!({ "scope": spec.sweep.scope }),
            UnitKind::Start { arm, seed } => {
                json!({ "start": spec.trained(arm, seed.unwrap_or(0)) })
            }
            UnitKind::Run { arm, seed, lr } => json!({
                "trained": spec.trained(arm, seed),
                "settings": spec.settings(lr, seed),
            }),
        };
        sha256_bytes(
            json!({ "base": self.base, "unit": what })
                .to_string()
                .as_bytes(),
        )
    }

    /// The unit's file, when it holds this key: a missing file is missing; an
    /// unreadable or damaged file, or one with another key, is stale (recomputed
    /// and replaced).
    pub(super) fn read(
        &self,
        spec: &TrainSweepSpec,
        cache_dir: &Path,
        unit: &GridUnit,
    ) -> (CellState, Option<UnitRecord>) {
        let text = match std::fs::read_to_string(unit.path(cache_dir)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (CellState::Missing, None);
            }
            Err(_) => return (CellState::Stale, None),
        };
        let key = self.key(spec, unit);
        let record = match unit.kind {
            UnitKind::Run { .. } => serde_json::from_str::<RunRecord>(&text)
                .ok()
                .filter(|r| r.key == key)
                .map(|r| UnitRecord::Run(Box::new(r))),
            _ => serde_json::from_str::<HessianRecord>(&text)
                .ok()
                .filter(|r| r.key == key)
                .map(|r| UnitRecord::Hessian(Box::new(r))),
        };
        match record {
            Some(r) => (CellState::Done, Some(r)),
            None => (CellState::Stale, None),
        }
    }
}
