//! Stability of full-batch gradient descent in a network: for masks at several
//! trainable ratios, the largest stable learning rate of plain GD on the masked
//! coordinates, measured by bisection ([`super::bisect`]), against the quadratic
//! model's prediction `2 / lambda_max` of the masked Hessian at theta_0 (the
//! paper's Prop. 5.2), and the edge-of-stability view: the sharpness along GD runs
//! at a few multiples of that prediction, against their thresholds `2 / lr`.
//!
//! The grid has three kinds of cells, each cached as one JSON file under a cell
//! folder and keyed by everything that determines it (model and data hashes,
//! settings, program version), so a rerun resumes and the grid splits over
//! processes like the probe sweep's ([`crate::shard`]):
//! - `ratio-<r>-seed-<s>`: lambda_max at theta_0 (Lanczos, computed residual) and
//!   the bisection's runs;
//! - `scope`: lambda_max of the whole-scope Hessian, for the p-proportional line;
//! - `edge/factor-<f>`: one GD run at `f x 2/lambda_max` with the sharpness every
//!   few steps.
//!
//! Every run starts from the checkpoint on the same fixed batch (the spec's first
//! `examples` of a seeded draw), with SGD without momentum, clipping, warm-up or
//! weight decay: `theta <- theta - lr grad L(theta)` on the masked coordinates.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bisect::{BisectOptions, Threshold};
use crate::error::{Error, Result};
use crate::mask::{MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::probe::device::{Device, Dtype, GpuOptions, dispatch};
use crate::probe::inputs::{DataRequest, data_spec};
use crate::progress::Progress;
use crate::shard::{GridStatus, Partition, Shard, Unit};

mod compute;

use compute::{CellKeys, StabilityJob};

/// The `[stability]` table of a `kind = "gd_stability"` spec. Paths are relative to
/// the folder maskscape runs in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StabilitySpec {
    /// The checkpoint folder (theta_0).
    pub model: PathBuf,
    /// A tokenizer folder for checkpoints that ship none.
    pub tokenizer: Option<PathBuf>,
    /// The dataset and its task, as the data flags describe them.
    pub data: PathBuf,
    pub task: Option<String>,
    pub template: Option<String>,
    pub candidates: Option<Vec<String>>,
    pub columns: Vec<String>,
    /// The fixed full batch: this many examples drawn from the file with `data_seed`.
    pub examples: usize,
    pub data_seed: u64,
    /// Bernoulli masks over `scope` at each ratio (of all parameters unless
    /// `ratio_of = "scope"`), one per mask seed.
    pub scope: Scope,
    pub ratio_of: RatioOf,
    pub ratios: Vec<f64>,
    pub seeds: Vec<u64>,
    pub dtype: Dtype,
    pub device: Device,
    pub gpu: GpuOptions,
    /// Lanczos's product budget and relative residual tolerance for lambda_max.
    pub iters: usize,
    pub tol: f64,
    /// Seed of the Lanczos start vectors.
    pub seed: u64,
    /// GD steps per bisection run.
    pub steps: usize,
    /// Divergence levels, one bisection each: a run diverges at level `b` when a
    /// loss exceeds `b` x the initial loss (or is not finite). On the quadratic
    /// model every level gives the same threshold; a network's loss saturates, so
    /// the levels tell a first rise (1) from a blow-up.
    pub blowup: Vec<f64>,
    /// The bisection stops when diverged / stable <= 1 + tolerance.
    pub tolerance: f64,
    /// The search gives up above `max_factor` x the prediction.
    pub max_factor: f64,
    /// The edge-of-stability runs (none when absent).
    pub edge: Option<EdgeSpec>,
}

/// The edge-of-stability runs: one mask, GD at a few multiples of its prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub ratio: f64,
    #[serde(default)]
    pub seed: u64,
    /// Learning rates as multiples of the predicted threshold 2/lambda_max(theta_0).
    pub factors: Vec<f64>,
    pub steps: usize,
    /// The sharpness is measured before the first step and after every this many.
    pub sharpness_every: usize,
}

impl Default for StabilitySpec {
    fn default() -> Self {
        StabilitySpec {
            model: PathBuf::new(),
            tokenizer: None,
            data: PathBuf::new(),
            task: None,
            template: None,
            candidates: None,
            columns: Vec::new(),
            examples: 16,
            data_seed: 0,
            scope: Scope::Qv,
            ratio_of: RatioOf::Total,
            ratios: Vec::new(),
            seeds: vec![0],
            dtype: Dtype::F32,
            device: Device::Cpu,
            gpu: GpuOptions::default(),
            iters: 40,
            tol: 1e-4,
            seed: 0,
            steps: 40,
            blowup: vec![1.0, 2.0],
            tolerance: 0.05,
            max_factor: 256.0,
            edge: None,
        }
    }
}

/// Sequences per batch of the fixed batch (memory only: a step's gradient is the
/// mean over all of its batches).
const BATCH_ROWS: usize = 64;

impl StabilitySpec {
    /// Checks everything that needs no file; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if self.model.as_os_str().is_empty() {
            return Err(Error::arg("model", "is required (a checkpoint folder)"));
        }
        if self.data.as_os_str().is_empty() {
            return Err(Error::arg("data", "is required (a dataset file)"));
        }
        if self.examples == 0 {
            return Err(Error::arg("examples", "must be at least 1"));
        }
        let ratio_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 1.0;
        if self.ratios.is_empty() || !self.ratios.iter().all(|&r| ratio_ok(r)) {
            return Err(Error::arg(
                "ratios",
                format!(
                    "must be a non-empty list of numbers in (0, 1], got {:?}",
                    self.ratios
                ),
            ));
        }
        if self.seeds.is_empty() {
            return Err(Error::arg("seeds", "must list at least one mask seed"));
        }
        if self.iters < 4 {
            return Err(Error::arg("iters", "must be at least 4 products"));
        }
        if !(self.tol > 0.0 && self.tol < 1.0) {
            return Err(Error::arg("tol", "must lie in (0, 1)"));
        }
        if self.steps == 0 {
            return Err(Error::arg("steps", "must be at least 1"));
        }
        if self.blowup.is_empty() || !self.blowup.iter().all(|b| b.is_finite() && *b >= 1.0) {
            return Err(Error::arg(
                "blowup",
                format!(
                    "must be a non-empty list of numbers >= 1, got {:?}",
                    self.blowup
                ),
            ));
        }
        if !(self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(Error::arg("tolerance", "must lie in (0, 1)"));
        }
        if !(self.max_factor.is_finite() && self.max_factor >= 2.0) {
            return Err(Error::arg("max_factor", "must be at least 2"));
        }
        if let Some(edge) = &self.edge {
            if !ratio_ok(edge.ratio) {
                return Err(Error::arg("edge.ratio", "must be a number in (0, 1]"));
            }
            if edge.factors.is_empty() || !edge.factors.iter().all(|f| f.is_finite() && *f > 0.0) {
                return Err(Error::arg(
                    "edge.factors",
                    "must be a non-empty list of positive numbers",
                ));
            }
            if edge.steps == 0 {
                return Err(Error::arg("edge.steps", "must be at least 1"));
            }
            if edge.sharpness_every == 0 {
                return Err(Error::arg("edge.sharpness_every", "must be at least 1"));
            }
        }
        self.data_request()?;
        Ok(())
    }

    /// The fixed batch's dataset request.
    pub fn data_request(&self) -> Result<DataRequest> {
        Ok(DataRequest {
            spec: data_spec(
                &self.data,
                self.task.as_deref(),
                self.template.as_deref(),
                self.candidates.as_deref(),
                &self.columns,
                Some(self.examples),
                self.data_seed,
            )?,
            tokenizer: self.tokenizer.clone(),
            batch_rows: BATCH_ROWS,
        })
    }

    /// The Bernoulli mask of one ratio and seed.
    pub fn mask_spec(&self, ratio: f64, seed: u64) -> MaskSpec {
        MaskSpec {
            scope: self.scope,
            ratio,
            ratio_of: self.ratio_of,
            sampling: Sampling::Bernoulli,
            structure: Structure::Elements,
            seed,
        }
    }

    /// The bisection's settings at each divergence level.
    pub fn bisect_options(&self) -> Vec<BisectOptions> {
        self.blowup
            .iter()
            .map(|&blowup| BisectOptions {
                steps: self.steps,
                blowup,
                tolerance: self.tolerance,
                max_factor: self.max_factor,
            })
            .collect()
    }

    /// Every cell, from the spec alone: ratio by ratio the seeds, the whole-scope
    /// reference, then the edge runs. Costs are in GD steps (a Lanczos product
    /// counted as two, a diverging run as half its budget), only for the balance
    /// of shards.
    pub fn grid(&self) -> Vec<StabilityCell> {
        let bisect_runs = 2.0
            + self.blowup.len() as f64 * (2.0f64.ln() / (1.0 + self.tolerance).ln()).log2().ceil();
        let mut cells = Vec::new();
        for &ratio in &self.ratios {
            for &seed in &self.seeds {
                cells.push(StabilityCell {
                    kind: CellKind::Threshold { ratio, seed },
                    id: format!("ratio-{ratio:e}-seed-{seed}"),
                    cost: 2.0 * self.iters as f64 + 0.75 * bisect_runs * self.steps as f64,
                });
            }
        }
        cells.push(StabilityCell {
            kind: CellKind::Scope,
            id: "scope".to_string(),
            cost: 2.0 * self.iters as f64,
        });
        if let Some(edge) = &self.edge {
            for &factor in &edge.factors {
                let measurements = (edge.steps / edge.sharpness_every + 1) as f64;
                cells.push(StabilityCell {
                    kind: CellKind::Edge { factor },
                    id: format!("edge/factor-{factor}"),
                    cost: edge.steps as f64 + 2.0 * self.iters as f64 * (measurements + 1.0),
                });
            }
        }
        cells
    }

    /// The cost-balanced split of [`Self::grid`] over `shards` processes.
    pub fn partition(&self, shards: usize) -> Partition {
        let units: Vec<Unit> = self.grid().iter().map(StabilityCell::unit).collect();
        Partition::new(&units, shards)
    }
}

/// What a cell computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CellKind {
    Threshold { ratio: f64, seed: u64 },
    Scope,
    Edge { factor: f64 },
}

/// A cell of the grid before anything is computed.
#[derive(Clone, Debug, PartialEq)]
pub struct StabilityCell {
    pub kind: CellKind,
    /// The cell's file under the cell folder without `.json`, and its id in a partition.
    pub id: String,
    pub cost: f64,
}

impl StabilityCell {
    pub fn path(&self, cells_dir: &Path) -> PathBuf {
        cells_dir.join(format!("{}.json", self.id))
    }

    pub fn unit(&self) -> Unit {
        Unit {
            id: self.id.clone(),
            cost: self.cost,
        }
    }
}

/// An eigenvalue from Lanczos with its computed residual `‖H y - lambda y‖`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopEigen {
    pub value: f64,
    pub residual: f64,
    pub converged: bool,
}

/// A threshold cell: the prediction at theta_0 and, per divergence level, the
/// bisection's bracket and runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRecord {
    pub key: String,
    pub ratio: f64,
    pub seed: u64,
    /// The probability with which each scoped entry is kept.
    pub keep_probability: f64,
    /// Trained coordinates (k).
    pub dim: usize,
    pub indices_sha256: String,
    /// The loss at theta_0 on the fixed batch.
    pub loss0: f64,
    pub lambda_max: TopEigen,
    /// 2 / lambda_max.
    pub predicted: f64,
    /// In the order of the spec's `blowup` levels.
    pub thresholds: Vec<Threshold>,
    /// Distinct GD runs made (the levels share the rates they both try).
    pub gd_runs: usize,
}

impl ThresholdRecord {
    /// The measured threshold at level `level` over the predicted one (`None` when
    /// the bracket is open).
    pub fn ratio_to_predicted(&self, level: usize) -> Option<f64> {
        Some(self.thresholds[level].estimate()? / self.predicted)
    }
}

/// The whole-scope reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeRecord {
    pub key: String,
    pub dim: usize,
    pub lambda_max: TopEigen,
}

/// One sharpness measurement along an edge run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharpnessPoint {
    /// Updates made before it.
    pub step: usize,
    pub lambda_max: f64,
    pub residual: f64,
    pub converged: bool,
}

/// An edge-of-stability run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeRecord {
    pub key: String,
    pub ratio: f64,
    pub seed: u64,
    pub factor: f64,
    pub lr: f64,
    pub predicted: f64,
    /// `L(theta_0)`, `L(theta_1)`, ...: a diverging run ends early, at a loss 1e6 x
    /// the first or before one that is not finite (JSON holds finite numbers only).
    pub losses: Vec<f64>,
    /// Whether the run stopped early as diverged.
    pub diverged: bool,
    pub sharpness: Vec<SharpnessPoint>,
}

/// The cells of a grid that are done (computed now or read from disk).
#[derive(Clone, Debug, Default)]
pub struct StabilityResult {
    pub thresholds: Vec<ThresholdRecord>,
    pub scope: Option<ScopeRecord>,
    pub edges: Vec<EdgeRecord>,
    /// Cells computed by this run, and found on disk.
    pub computed: usize,
    pub cached: usize,
}

/// A cell's record, whatever its kind.
enum Record {
    Threshold(ThresholdRecord),
    Scope(ScopeRecord),
    Edge(EdgeRecord),
}

impl StabilityResult {
    fn add(&mut self, record: Record) {
        match record {
            Record::Threshold(r) => self.thresholds.push(r),
            Record::Scope(r) => self.scope = Some(r),
            Record::Edge(r) => self.edges.push(r),
        }
    }
}

/// Runs (or resumes) the cells `shard` owns, caching them under `cells_dir`.
pub fn run_stability(
    spec: &StabilitySpec,
    cells_dir: &Path,
    shard: Shard,
    progress: &dyn Progress,
) -> Result<StabilityResult> {
    spec.validate()?;
    dispatch(
        spec.device,
        spec.gpu,
        spec.dtype,
        StabilityJob {
            spec,
            cells_dir,
            shard,
            progress,
        },
    )
}

/// The cells of `spec` on disk, computing nothing: those done, and the state of
/// every cell with its owner under a split into `shards`.
pub fn stability_on_disk(
    spec: &StabilitySpec,
    cells_dir: &Path,
    shards: usize,
) -> Result<(StabilityResult, GridStatus)> {
    spec.validate()?;
    let keys = CellKeys::new(spec)?;
    let grid = spec.grid();
    let mut result = StabilityResult::default();
    let mut states = Vec::with_capacity(grid.len());
    for cell in &grid {
        let (state, record) = keys.read(spec, cells_dir, cell);
        if let Some(record) = record {
            result.add(record);
            result.cached += 1;
        }
        states.push(state);
    }
    let status = GridStatus::new(
        grid.iter().map(StabilityCell::unit).collect(),
        states,
        shards,
    );
    Ok((result, status))
}
