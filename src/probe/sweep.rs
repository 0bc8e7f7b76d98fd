//! Ratio sweeps: the largest masked-Hessian eigenvalue and the masked trace over a
//! grid of trainable ratios x mask seeds (x checkpoints), beside what theory says
//! of any network.
//!
//! For each checkpoint the whole-scope Hessian `H_scope` is probed once (its
//! largest eigenvalue and trace); every cell then draws a mask at its ratio and
//! seed and probes `H_m = P H_scope Pᵀ`. Three comparisons hold for any network:
//! - Cauchy interlacing: `λmax(H_m) ≤ λmax(H_scope)` (the ceiling);
//! - the trace identity: `E[tr H_m] = p tr H_scope` for Bernoulli(p) masks, with p
//!   the keep probability per scoped entry;
//! - p-proportional scaling `λmax(H_m) ≈ p λmax(H_scope)`, which the paper's linear
//!   model obeys (its Hessian has low rank) and a network need not: the fitted
//!   slope of `log λmax` against `log ratio` measures how far it is from 1.
//!
//! Each cell is cached as one JSON file, written atomically once it is complete
//! and keyed by everything that determines it (checkpoint and data hashes, mask
//! and probe settings, program version); a rerun skips the cells it finds, so an
//! interrupted sweep resumes where it stopped. The scope references are cells of
//! their own, so the grid splits over independent processes ([`run_sweep_shard`],
//! with the partition of [`crate::shard`]), and [`sweep_on_disk`] reads what is done
//! for a status or a report without computing anything.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::device::{BackendJob, Device, Dtype, GpuOptions, OnBackend, SpectralBackend, dispatch};
use super::inputs::{
    DataInputs, DataRequest, ModelIdentity, ModelInputs, data_spec, indices_hash, scope_indices,
};
use super::memory;
use super::operator::{HessianOperator, ProductPath, Restriction};
use super::spectrum::RitzPair;
use crate::backend::Scalar;
use crate::error::{Error, Result};
use crate::mask::{Mask, MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::model::{Memory, Opt, OptConfig, ParamLayout};
use crate::progress::Progress;
use crate::report::manifest::{sha256_bytes, sha256_file};
use crate::report::table::{format_float, format_significant};
use crate::report::{Axis, Chart, ErrorPoint, LegendPosition, SeriesData, Table, atomic, plot};
use crate::rng;
use crate::shard::{CellState, GridStatus, Partition, Shard, Unit};
use crate::spectral::{
    Distribution, LanczosOptions, LinearOperator, TraceEstimate, Which, hutch_plus_plus, lanczos,
};
use crate::stats::Summary;

/// One checkpoint of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEntry {
    /// A short label (`init`, `after`), used in file names and legends.
    pub name: String,
    /// The checkpoint folder.
    pub path: PathBuf,
    /// A training run's `delta.safetensors` to add to it (the checkpoint after
    /// fine-tuning, without a full copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<PathBuf>,
}

/// A sweep: the `[sweep]` table of a `kind = "sweep"` spec. Paths are relative to
/// the folder maskscape runs in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSpec {
    pub checkpoints: Vec<CheckpointEntry>,
    /// The dataset and how its rows become examples (as the data flags).
    pub data: PathBuf,
    pub task: Option<String>,
    pub template: Option<String>,
    pub candidates: Option<Vec<String>>,
    /// `FIELD=COLUMN` overrides.
    pub columns: Vec<String>,
    pub max_examples: Option<usize>,
    pub data_seed: u64,
    /// A tokenizer folder for checkpoints that ship none.
    pub tokenizer: Option<PathBuf>,
    /// Sequences per batch.
    pub batch: usize,
    pub scope: Scope,
    pub ratio_of: RatioOf,
    pub sampling: Sampling,
    pub structure: Structure,
    /// Trainable ratios (of all parameters, unless `ratio_of = "scope"`).
    pub ratios: Vec<f64>,
    /// Mask seeds per ratio.
    pub seeds: Vec<u64>,
    pub dtype: Dtype,
    pub device: Device,
    /// Which GPU, and whether TF32 is allowed (with `device = "cuda"`).
    pub gpu: GpuOptions,
    /// Lanczos product budget and tolerance per cell.
    pub iters: usize,
    pub tol: f64,
    /// Hutch++ products per cell.
    pub trace_products: usize,
    /// Seed of the probe vectors.
    pub seed: u64,
    /// Budgets of the whole-scope reference probe.
    pub scope_iters: usize,
    pub scope_trace_products: usize,
    /// Recompute the blocks' activations in the reverse sweep (`--recompute`);
    /// otherwise they are stored when they fit in the free memory. Not part of a
    /// cell's key: both give the same products.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recompute: bool,
}

impl Default for SweepSpec {
    fn default() -> Self {
        SweepSpec {
            checkpoints: Vec::new(),
            data: PathBuf::new(),
            task: None,
            template: None,
            candidates: None,
            columns: Vec::new(),
            max_examples: None,
            data_seed: 0,
            tokenizer: None,
            batch: 64,
            scope: Scope::Qv,
            ratio_of: RatioOf::Total,
            sampling: Sampling::Bernoulli,
            structure: Structure::Elements,
            ratios: Vec::new(),
            seeds: vec![0, 1, 2],
            dtype: Dtype::F64,
            device: Device::Cpu,
            gpu: GpuOptions::default(),
            iters: 80,
            tol: 1e-6,
            trace_products: 30,
            seed: 0,
            scope_iters: 150,
            scope_trace_products: 90,
            recompute: false,
        }
    }
}

impl SweepSpec {
    /// Checks everything that needs no file (the ratios' upper limit depends on the
    /// model and is checked when the masks are drawn).
    pub fn validate(&self) -> Result<()> {
        if self.checkpoints.is_empty() {
            return Err(Error::arg(
                "checkpoints",
                "list at least one { name, path } checkpoint",
            ));
        }
        for (i, c) in self.checkpoints.iter().enumerate() {
            let safe = !c.name.is_empty()
                && c.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !safe {
                return Err(Error::arg(
                    "checkpoints",
                    format!(
                        "name `{}` must be non-empty ASCII letters, digits, '-', '_' or '.'",
                        c.name
                    ),
                ));
            }
            if self.checkpoints[..i].iter().any(|o| o.name == c.name) {
                return Err(Error::arg(
                    "checkpoints",
                    format!("name `{}` appears twice", c.name),
                ));
            }
        }
        if self.data.as_os_str().is_empty() {
            return Err(Error::arg("data", "required: the dataset file"));
        }
        if self.ratios.is_empty() {
            return Err(Error::arg("ratios", "list at least one ratio"));
        }
        if let Some(r) = self
            .ratios
            .iter()
            .find(|r| !(r.is_finite() && **r > 0.0 && **r <= 1.0))
        {
            return Err(Error::arg(
                "ratios",
                format!("{r} is not a trainable ratio (each must lie in (0, 1])"),
            ));
        }
        for (i, r) in self.ratios.iter().enumerate() {
            if self.ratios[..i].contains(r) {
                return Err(Error::arg("ratios", format!("{r} appears twice")));
            }
        }
        if self.seeds.is_empty() {
            return Err(Error::arg("seeds", "list at least one mask seed"));
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                return Err(Error::arg("seeds", format!("{s} appears twice")));
            }
        }
        if self.batch == 0 {
            return Err(Error::arg("batch", "must be at least 1"));
        }
        if self.iters < 4 || self.scope_iters < 4 {
            return Err(Error::arg("iters", "budgets must be at least 4 products"));
        }
        if self.trace_products < 4 || self.scope_trace_products < 4 {
            return Err(Error::arg(
                "trace_products",
                "Hutch++ needs at least 4 products",
            ));
        }
        if !(self.tol > 0.0 && self.tol < 1.0) {
            return Err(Error::arg("tol", "must lie in (0, 1)"));
        }
        self.data_request()?;
        Ok(())
    }

    /// The dataset request the spec describes.
    pub fn data_request(&self) -> Result<DataRequest> {
        Ok(DataRequest {
            spec: data_spec(
                &self.data,
                self.task.as_deref(),
                self.template.as_deref(),
                self.candidates.as_deref(),
                &self.columns,
                self.max_examples,
                self.data_seed,
            )?,
            tokenizer: self.tokenizer.clone(),
            batch_rows: self.batch,
        })
    }

    /// The mask of one cell.
    pub fn mask_spec(&self, ratio: f64, seed: u64) -> MaskSpec {
        MaskSpec {
            scope: self.scope,
            ratio,
            ratio_of: self.ratio_of,
            sampling: self.sampling,
            structure: self.structure,
            seed,
        }
    }

    /// Cells of the grid, scope references included.
    pub fn cell_count(&self) -> usize {
        self.checkpoints.len() * (1 + self.ratios.len() * self.seeds.len())
    }

    /// Every cell of the grid, from the spec alone (no file is read): per
    /// checkpoint, the whole-scope reference, then ratio by ratio the mask seeds.
    ///
    /// Each cell's expected cost, in Hessian-vector products of a vanishing mask,
    /// is its product budget (the Lanczos budget, which convergence may cut short,
    /// plus the Hutch++ products) times the cost of one product relative to that,
    /// `1 + MASK_ENTRY_WEIGHT k/P` for a mask keeping k of the model's P parameters:
    /// the forward and reverse sweeps cost the same for any mask, the tangent of the
    /// perturbation and the weight-gradient tangents at the mask grow with k (see
    /// [`MASK_ENTRY_WEIGHT`]). k/P is the ratio itself when `ratio_of = "total"`,
    /// and for the scope reference (and `ratio_of = "scope"`) it takes the scope's
    /// nominal share of an OPT model ([`nominal_scope_share`]), since the true
    /// share needs the checkpoint's config and the partition must not.
    pub fn grid(&self) -> Vec<GridCell> {
        let share = nominal_scope_share(self.scope);
        let cost =
            |products: usize, fraction: f64| products as f64 * (1.0 + MASK_ENTRY_WEIGHT * fraction);
        let mut cells = Vec::with_capacity(self.cell_count());
        for (c, checkpoint) in self.checkpoints.iter().enumerate() {
            cells.push(GridCell {
                checkpoint: c,
                kind: CellKind::Scope,
                ratio: None,
                seed: None,
                id: format!("{}/scope", checkpoint.name),
                cost: cost(self.scope_iters + self.scope_trace_products, share),
            });
            for &ratio in &self.ratios {
                let fraction = match self.ratio_of {
                    RatioOf::Total => ratio,
                    RatioOf::Scope => ratio * share,
                };
                for &seed in &self.seeds {
                    cells.push(GridCell {
                        checkpoint: c,
                        kind: CellKind::Mask,
                        ratio: Some(ratio),
                        seed: Some(seed),
                        id: format!("{}/ratio-{ratio:e}-seed-{seed}", checkpoint.name),
                        cost: cost(self.iters + self.trace_products, fraction),
                    });
                }
            }
        }
        cells
    }

    /// The cost-balanced split of [`Self::grid`] over `shards` processes (indices
    /// into the grid); the same for every process that reads the same spec.
    pub fn partition(&self, shards: usize) -> Partition {
        let units: Vec<Unit> = self.grid().iter().map(GridCell::unit).collect();
        Partition::new(&units, shards)
    }
}

/// The cost of a masked Hessian-vector product grows as `1 + MASK_ENTRY_WEIGHT
/// k/P` (k masked of P parameters) relative to a vanishing mask's. Measured with
/// `maskscape bench hvp --config opt-125m --batch 1 --seq 32 --dtype f32` on the
/// CPU, in units of F: 4.9 at ratio 1e-3, 4.8 at 3e-3, 6.3 at 1e-2, 12.5 at 3e-2,
/// 30.5 at 0.1, about 4.6 + 260 k/P (not measured on a GPU yet). Only the balance
/// of the shards rests on it.
pub const MASK_ENTRY_WEIGHT: f64 = 50.0;

/// The fraction of an OPT model's parameters a scope holds, roughly (q/v: 11% of
/// OPT-125m, 15% of OPT-1.3b, 16% of OPT-13b; the attention projections twice
/// that; every linear weight 68% of OPT-125m, 93% of OPT-1.3b).
pub fn nominal_scope_share(scope: Scope) -> f64 {
    match scope {
        Scope::Qv => 0.15,
        Scope::Attention => 0.3,
        Scope::Linear => 0.85,
        Scope::All => 1.0,
    }
}

/// A cell of a sweep's grid as the spec describes it, before anything is computed.
#[derive(Clone, Debug, PartialEq)]
pub struct GridCell {
    /// Index into the spec's `checkpoints`.
    pub checkpoint: usize,
    pub kind: CellKind,
    /// Ratio and mask seed (none for the scope reference).
    pub ratio: Option<f64>,
    pub seed: Option<u64>,
    /// `<checkpoint>/scope` or `<checkpoint>/ratio-<ratio>-seed-<seed>`: the cell's
    /// file under the cache folder without `.json`, and its id in a partition.
    pub id: String,
    /// Expected cost in products of a vanishing mask (see [`SweepSpec::grid`]).
    pub cost: f64,
}

impl GridCell {
    /// The cell's file under `cache_dir`.
    pub fn path(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("{}.json", self.id))
    }

    /// The cell as a unit of a partition.
    pub fn unit(&self) -> Unit {
        Unit {
            id: self.id.clone(),
            cost: self.cost,
        }
    }

    /// Its Lanczos budget and Hutch++ products.
    fn budgets(&self, spec: &SweepSpec) -> (usize, usize) {
        match self.kind {
            CellKind::Scope => (spec.scope_iters, spec.scope_trace_products),
            CellKind::Mask => (spec.iters, spec.trace_products),
        }
    }
}

/// What a cell probed: a random mask, or the whole scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    Mask,
    Scope,
}

/// One finished cell, as cached on disk: only what the spec determines (no wall
/// time), so a cell's file is the same bytes whichever process or shard wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// SHA-256 of everything that determines the cell.
    pub key: String,
    pub checkpoint: String,
    pub kind: CellKind,
    pub ratio: Option<f64>,
    pub seed: Option<u64>,
    /// The probability with which each scoped entry is kept (1 for the scope).
    pub keep_probability: f64,
    /// Coordinates probed (k).
    pub dim: usize,
    pub indices_sha256: String,
    pub lambda_max: RitzPair,
    pub trace: TraceEstimate,
    /// The loss at the checkpoint (the same for every cell of a checkpoint).
    pub loss: f64,
    pub hvps: u64,
}

/// The outcome of a sweep.
#[derive(Clone, Debug)]
pub struct SweepResult {
    pub spec: SweepSpec,
    /// Every grid cell, in checkpoint, ratio, seed order.
    pub cells: Vec<CellRecord>,
    /// The whole-scope reference of each checkpoint.
    pub scopes: Vec<CellRecord>,
    /// Cells computed by this run, and found in the cache.
    pub computed: usize,
    pub cached: usize,
    /// Products spent by this run (cached cells cost none).
    pub hvps_this_run: u64,
}

impl SweepResult {
    fn empty(spec: &SweepSpec) -> Self {
        SweepResult {
            spec: spec.clone(),
            cells: Vec::new(),
            scopes: Vec::new(),
            computed: 0,
            cached: 0,
            hvps_this_run: 0,
        }
    }

    /// Files the records of `grid` (in grid order) as scope references and cells.
    fn fill(&mut self, grid: &[GridCell], records: Vec<Option<CellRecord>>) {
        for (cell, record) in grid.iter().zip(records) {
            match (cell.kind, record) {
                (CellKind::Scope, Some(r)) => self.scopes.push(r),
                (CellKind::Mask, Some(r)) => self.cells.push(r),
                (_, None) => {}
            }
        }
    }
}

/// Runs (or resumes) `spec`, caching cells under `cache_dir`.
pub fn run_sweep(
    spec: &SweepSpec,
    cache_dir: &Path,
    progress: &dyn Progress,
) -> Result<SweepResult> {
    run_sweep_shard(spec, cache_dir, Shard::WHOLE, progress)
}

/// Runs (or resumes) the cells of `shard` (see [`SweepSpec::partition`]), caching
/// them under `cache_dir`; the result holds those cells only.
///
/// Test hook: with the environment variable `MASKSCAPE_SWEEP_STALL_AFTER=N` the run
/// stops for up to five minutes once it has spent N Hessian-vector products,
/// always inside a cell (its file not yet written), after saying so on stderr, so
/// a test can kill the process at a known point mid-cell.
pub fn run_sweep_shard(
    spec: &SweepSpec,
    cache_dir: &Path,
    shard: Shard,
    progress: &dyn Progress,
) -> Result<SweepResult> {
    spec.validate()?;
    let stall = Stall::from_env()?;
    dispatch(
        spec.device,
        spec.gpu,
        spec.dtype,
        SweepJob {
            spec,
            cache_dir,
            shard,
            stall,
            progress,
        },
    )
}

/// The cells of `spec` on disk under `cache_dir`, computing nothing: the ones done
/// (as a result, for the tables and report) and the state of every cell, with its
/// owner under a split into `shards`. Hashes each checkpoint's files and the data
/// file to tell the spec's cells from stale ones.
pub fn sweep_on_disk(
    spec: &SweepSpec,
    cache_dir: &Path,
    shards: usize,
) -> Result<(SweepResult, GridStatus)> {
    spec.validate()?;
    let grid = spec.grid();
    let mut records = vec![None; grid.len()];
    let mut states = vec![CellState::Missing; grid.len()];
    for (c, checkpoint) in spec.checkpoints.iter().enumerate() {
        let keys = CellKeys::new(spec, checkpoint)?;
        for (i, cell) in grid.iter().enumerate().filter(|(_, g)| g.checkpoint == c) {
            let (state, record) = keys.read(spec, cache_dir, cell);
            states[i] = state;
            records[i] = record;
        }
    }
    let mut result = SweepResult::empty(spec);
    result.cached = states.iter().filter(|s| **s == CellState::Done).count();
    result.fill(&grid, records);
    let status = GridStatus::new(grid.iter().map(GridCell::unit).collect(), states, shards);
    Ok((result, status))
}

struct SweepJob<'a> {
    spec: &'a SweepSpec,
    cache_dir: &'a Path,
    shard: Shard,
    stall: Option<Stall>,
    progress: &'a dyn Progress,
}

/// Passes cancellation through while hiding the inner algorithms' progress, so the
/// bar counts cells; the products it sees drive the stall hook.
struct CancelOnly<'a> {
    outer: &'a dyn Progress,
    stall: Option<Stall>,
}

impl Progress for CancelOnly<'_> {
    fn advance(&self, n: u64) {
        if let Some(stall) = &self.stall {
            stall.count(n);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.outer.is_cancelled()
    }
}

/// The `MASKSCAPE_SWEEP_STALL_AFTER` test hook (see [`run_sweep_shard`]).
struct Stall {
    after: u64,
    products: std::sync::atomic::AtomicU64,
}

impl Stall {
    const VARIABLE: &'static str = "MASKSCAPE_SWEEP_STALL_AFTER";

    fn from_env() -> Result<Option<Self>> {
        let Some(value) = std::env::var_os(Self::VARIABLE) else {
            return Ok(None);
        };
        let after = value
            .to_str()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                Error::arg(
                    Self::VARIABLE,
                    format!("{value:?} is not a number of products"),
                )
            })?;
        Ok(Some(Stall {
            after,
            products: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    fn count(&self, n: u64) {
        use std::sync::atomic::Ordering;
        let before = self.products.fetch_add(n, Ordering::SeqCst);
        if before < self.after && before + n >= self.after {
            // A test hook, not a report: the test reads this line to know the
            // process is inside a cell before it kills it.
            eprintln!(
                "{}: stalled inside a cell after {} Hessian-vector products",
                Self::VARIABLE,
                before + n
            );
            std::thread::sleep(std::time::Duration::from_secs(300));
        }
    }
}

impl BackendJob for SweepJob<'_> {
    type Output = SweepResult;

    fn run<T: Scalar, B: SpectralBackend<T>>(self, backend: B) -> Result<SweepResult> {
        let SweepJob {
            spec,
            cache_dir,
            shard,
            stall,
            progress,
        } = self;
        let inner = CancelOnly {
            outer: progress,
            stall,
        };
        let request = spec.data_request()?;
        let grid = spec.grid();
        let owned = spec.partition(shard.count()).units_of(shard);
        progress.start(owned.len() as u64, "sweep");
        let mut records = vec![None; grid.len()];
        let mut result = SweepResult::empty(spec);
        for (c, checkpoint) in spec.checkpoints.iter().enumerate() {
            let mine: Vec<usize> = owned
                .iter()
                .copied()
                .filter(|&i| grid[i].checkpoint == c)
                .collect();
            if mine.is_empty() {
                continue;
            }
            progress.check()?;
            // Cached cells are recognised from the files' hashes: a rerun whose
            // cells are all on disk never loads the weights.
            let keys = CellKeys::new(spec, checkpoint)?;
            let mut todo = Vec::new();
            for i in mine {
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
            // The largest cell to come decides the memory, before the weights load.
            let config = OptConfig::from_file(&checkpoint.path.join("config.json"))?;
            let data = DataInputs::load(&request, &checkpoint.path, &config)?;
            let layout = ParamLayout::new(&config);
            let widest = todo
                .iter()
                .map(|&i| expected_cell_dim(spec, &grid[i], &layout))
                .max()
                .unwrap_or(0);
            let basis = (spec.iters.max(spec.scope_iters) + 8) * widest * 8;
            let (_, memory) = memory::plan(
                &backend,
                &config,
                &data.batches,
                Some(widest),
                basis as u64,
                Memory::from_flag(spec.recompute),
                &format!("the sweep on {}", checkpoint.path.display()),
            )?;
            let mut model = ModelInputs::<T>::load_with_config(
                &checkpoint.path,
                config,
                checkpoint.delta.as_deref(),
            )?;
            let params = std::mem::take(&mut model.checkpoint.params);
            let network = Opt::from_vec(backend.clone(), model.config().clone(), params)?;
            for i in todo {
                progress.check()?;
                let cell = &grid[i];
                let (indices, keep_probability) =
                    cell_indices(spec, cell, &layout, &checkpoint.path)?;
                let record = compute_cell(
                    &network,
                    &data,
                    indices,
                    spec,
                    cell,
                    keys.key(spec, cell),
                    keep_probability,
                    memory,
                    &inner,
                )?;
                atomic::write_json(&cell.path(cache_dir), &record)?;
                result.computed += 1;
                result.hvps_this_run += record.hvps;
                progress.advance(1);
                records[i] = Some(record);
            }
        }
        result.fill(&grid, records);
        Ok(result)
    }
}

/// About how many coordinates a cell probes, without drawing its mask: the
/// scope's size, or its expected share of it (1% and 64 over, for the draw's
/// spread).
fn expected_cell_dim(spec: &SweepSpec, cell: &GridCell, layout: &ParamLayout) -> usize {
    let scope = spec.scope.size(layout);
    let (Some(ratio), Some(seed)) = (cell.ratio, cell.seed) else {
        return scope;
    };
    let q = spec
        .mask_spec(ratio, seed)
        .keep_probability(layout)
        .unwrap_or(1.0);
    ((q * scope as f64 * 1.01) as usize + 64).min(scope)
}

/// The coordinates a cell probes and their keep probability: the whole scope, or
/// the cell's mask.
fn cell_indices(
    spec: &SweepSpec,
    cell: &GridCell,
    layout: &ParamLayout,
    model_path: &Path,
) -> Result<(Vec<u64>, f64)> {
    let (Some(ratio), Some(seed)) = (cell.ratio, cell.seed) else {
        let indices = scope_indices(spec.scope, layout);
        if indices.is_empty() {
            return Err(Error::arg(
                "scope",
                format!(
                    "scope `{}` holds no parameters in {}",
                    spec.scope.name(),
                    model_path.display()
                ),
            ));
        }
        return Ok((indices, 1.0));
    };
    let mask_spec = spec.mask_spec(ratio, seed);
    let keep_probability = mask_spec.keep_probability(layout).map_err(|e| {
        Error::arg(
            "ratios",
            format!("{ratio} in {}: {e}", model_path.display()),
        )
    })?;
    let mask = Mask::draw(&mask_spec, layout)?;
    if mask.is_empty() {
        return Err(Error::arg(
            "ratios",
            format!(
                "{ratio} keeps no parameter with mask seed {seed} in {} (raise the ratio)",
                model_path.display()
            ),
        ));
    }
    Ok((mask.indices().to_vec(), keep_probability))
}

/// What a λmax-and-trace probe may spend: Lanczos's relative tolerance and
/// products, Hutch++'s products, and the seed whose streams 1 and 4 draw their
/// probe vectors.
pub struct PointBudget {
    pub tol: f64,
    pub iters: usize,
    pub trace_products: usize,
    pub seed: u64,
}

/// λmax of `op` by Lanczos (with its computed residual), its trace by Hutch++, and
/// the loss on its batches: what a sweep's cell (and a training sweep's Hessian
/// unit) measures.
pub fn lambda_max_and_trace<T: Scalar, B: SpectralBackend<T>>(
    op: &HessianOperator<'_, T, B>,
    budget: &PointBudget,
    progress: &dyn Progress,
) -> Result<(RitzPair, TraceEstimate, f64)> {
    let space = op.model().backend().space(op.dim())?;
    let seed = |part: u64| rng::stream_id(&[budget.seed, part]);
    let top = lanczos(
        &OnBackend(op),
        &space,
        &LanczosOptions {
            k: 1,
            which: Which::Largest,
            tol: budget.tol,
            // a Krylov space of dimension d is exhausted after d products
            max_products: budget.iters.min(op.dim().max(2)),
            verify_multiplicity: false,
            measure_orthogonality: false,
            seed: seed(1),
            ..LanczosOptions::default()
        },
        progress,
    )?;
    let trace = hutch_plus_plus(
        &OnBackend(op),
        &space,
        budget.trace_products,
        Distribution::Rademacher,
        seed(4),
        progress,
    )?;
    let loss = op.with_objective(|o| o.loss())??;
    let lambda_max = RitzPair {
        value: top.eigenvalues[0],
        residual: top.residuals[0],
        residual_converged: top.residual_converged[0],
        converged: top.converged[0],
    };
    Ok((lambda_max, trace, loss))
}

/// Probes one cell: λmax by Lanczos and the trace by Hutch++ on the Hessian
/// restricted to `indices`, and the loss.
#[allow(clippy::too_many_arguments)]
fn compute_cell<T: Scalar, B: SpectralBackend<T>>(
    network: &Opt<T, B>,
    data: &DataInputs,
    indices: Vec<u64>,
    spec: &SweepSpec,
    cell: &GridCell,
    key: String,
    keep_probability: f64,
    memory: Memory,
    progress: &dyn Progress,
) -> Result<CellRecord> {
    let (iters, trace_products) = cell.budgets(spec);
    let indices_sha256 = indices_hash(&indices);
    let restriction = Restriction::Indices(indices);
    let op = HessianOperator::with_options(
        network,
        &data.batches,
        &restriction,
        ProductPath::Auto,
        memory,
    )?;
    let budget = PointBudget {
        tol: spec.tol,
        iters,
        trace_products,
        seed: spec.seed,
    };
    let (lambda_max, trace, loss) = lambda_max_and_trace(&op, &budget, progress)?;
    Ok(CellRecord {
        key,
        checkpoint: spec.checkpoints[cell.checkpoint].name.clone(),
        kind: cell.kind,
        ratio: cell.ratio,
        seed: cell.seed,
        keep_probability,
        dim: op.dim(),
        indices_sha256,
        lambda_max,
        trace,
        loss,
        hvps: op.products(),
    })
}

/// What identifies one checkpoint's cells on disk: the hashes of its files and of
/// the data file, with every setting of the spec that shapes a cell and the
/// program's version and commit.
struct CellKeys {
    base: serde_json::Value,
}

impl CellKeys {
    fn new(spec: &SweepSpec, checkpoint: &CheckpointEntry) -> Result<Self> {
        let model = ModelIdentity::of(&checkpoint.path, checkpoint.delta.as_deref())?;
        let (data, _) = sha256_file(&spec.data)?;
        Ok(CellKeys {
            base: json!({
                "version": env!("CARGO_PKG_VERSION"),
                "commit": env!("MASKSCAPE_GIT_COMMIT"),
                "model": model.sha256,
                "data": data,
                "data_spec": {
                    "task": spec.task, "template": spec.template, "candidates": spec.candidates,
                    "columns": spec.columns, "max_examples": spec.max_examples,
                    "data_seed": spec.data_seed, "batch": spec.batch,
                },
                "dtype": spec.dtype,
                "device": spec.device,
                "tf32": spec.gpu.tf32,
                "seed": spec.seed,
                "tol": spec.tol,
            }),
        })
    }

    /// The SHA-256 of everything that determines `cell`.
    fn key(&self, spec: &SweepSpec, cell: &GridCell) -> String {
        let (iters, trace_products) = cell.budgets(spec);
        let what = match (cell.ratio, cell.seed) {
            (Some(ratio), Some(seed)) => json!({"mask": spec.mask_spec(ratio, seed),
                "iters": iters, "trace_products": trace_products}),
            _ => json!({"scope": spec.scope, "iters": iters,
                "trace_products": trace_products}),
        };
        sha256_bytes(
            json!({"base": self.base, "cell": what})
                .to_string()
                .as_bytes(),
        )
    }

    /// The cell's file, when it holds this key: a missing file is missing; an
    /// unreadable or damaged file, or one with another key, is stale (recomputed
    /// and replaced).
    fn read(
        &self,
        spec: &SweepSpec,
        cache_dir: &Path,
        cell: &GridCell,
    ) -> (CellState, Option<CellRecord>) {
        let text = match std::fs::read_to_string(cell.path(cache_dir)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (CellState::Missing, None);
            }
            Err(_) => return (CellState::Stale, None),
        };
        match serde_json::from_str::<CellRecord>(&text) {
            Ok(record) if record.key == self.key(spec, cell) => (CellState::Done, Some(record)),
            _ => (CellState::Stale, None),
        }
    }
}

/// Per checkpoint and ratio: the cells' λmax and trace over seeds.
#[derive(Clone, Debug)]
pub struct RatioSummary {
    pub checkpoint: String,
    pub ratio: f64,
    pub keep_probability: f64,
    pub mean_k: f64,
    pub lambda_max: Summary,
    pub lambda_min_over_seeds: f64,
    pub lambda_max_over_seeds: f64,
    pub trace: Summary,
    /// `p λmax(H_scope)` and `p tr(H_scope)`.
    pub proportional_lambda: f64,
    pub expected_trace: f64,
    /// The standard error of `expected_trace` (from the scope's Hutch++ error).
    pub expected_trace_se: f64,
}

impl SweepResult {
    /// The scope reference of `checkpoint`.
    pub fn scope(&self, checkpoint: &str) -> Option<&CellRecord> {
        self.scopes.iter().find(|s| s.checkpoint == checkpoint)
    }

    /// Summaries per checkpoint and ratio, in spec order.
    pub fn summaries(&self) -> Vec<RatioSummary> {
        let mut out = Vec::new();
        for checkpoint in &self.spec.checkpoints {
            let Some(scope) = self.scope(&checkpoint.name) else {
                continue;
            };
            for &ratio in &self.spec.ratios {
                let cells: Vec<&CellRecord> = self
                    .cells
                    .iter()
                    .filter(|c| c.checkpoint == checkpoint.name && c.ratio == Some(ratio))
                    .collect();
                if cells.is_empty() {
                    continue;
                }
                let p = cells[0].keep_probability;
                let lambdas: Vec<f64> = cells.iter().map(|c| c.lambda_max.value).collect();
                out.push(RatioSummary {
                    checkpoint: checkpoint.name.clone(),
                    ratio,
                    keep_probability: p,
                    mean_k: cells.iter().map(|c| c.dim as f64).sum::<f64>() / cells.len() as f64,
                    lambda_max: Summary::of(lambdas.iter().copied()),
                    lambda_min_over_seeds: lambdas.iter().copied().fold(f64::INFINITY, f64::min),
                    lambda_max_over_seeds: lambdas
                        .iter()
                        .copied()
                        .fold(f64::NEG_INFINITY, f64::max),
                    trace: Summary::of(cells.iter().map(|c| c.trace.estimate)),
                    proportional_lambda: p * scope.lambda_max.value,
                    expected_trace: p * scope.trace.estimate,
                    expected_trace_se: p * scope.trace.standard_error,
                });
            }
        }
        out
    }

    /// One row per cell (scope references first within each checkpoint).
    pub fn cells_table(&self) -> Table {
        let rows: Vec<&CellRecord> = self
            .spec
            .checkpoints
            .iter()
            .flat_map(|c| {
                self.scopes
                    .iter()
                    .chain(&self.cells)
                    .filter(move |r| r.checkpoint == c.name)
            })
            .collect();
        Table::new()
            .with_str(
                "checkpoint",
                rows.iter().map(|r| r.checkpoint.clone()).collect(),
            )
            .with_str(
                "kind",
                rows.iter()
                    .map(|r| match r.kind {
                        CellKind::Mask => "mask".to_string(),
                        CellKind::Scope => "scope".to_string(),
                    })
                    .collect(),
            )
            .with_f64(
                "ratio",
                rows.iter().map(|r| r.ratio.unwrap_or(f64::NAN)).collect(),
            )
            .with_i64(
                "mask_seed",
                rows.iter()
                    .map(|r| r.seed.map_or(-1, |s| s as i64))
                    .collect(),
            )
            .with_f64(
                "keep_probability",
                rows.iter().map(|r| r.keep_probability).collect(),
            )
            .with_i64("k", rows.iter().map(|r| r.dim as i64).collect())
            .with_f64(
                "lambda_max",
                rows.iter().map(|r| r.lambda_max.value).collect(),
            )
            .with_f64(
                "lambda_max_residual",
                rows.iter().map(|r| r.lambda_max.residual).collect(),
            )
            .with_bool(
                "residual_converged",
                rows.iter()
                    .map(|r| r.lambda_max.residual_converged)
                    .collect(),
            )
            .with_f64(
                "stable_lr",
                rows.iter().map(|r| 2.0 / r.lambda_max.value).collect(),
            )
            .with_f64("trace", rows.iter().map(|r| r.trace.estimate).collect())
            .with_f64(
                "trace_se",
                rows.iter().map(|r| r.trace.standard_error).collect(),
            )
            .with_f64("loss", rows.iter().map(|r| r.loss).collect())
            .with_i64("hvps", rows.iter().map(|r| r.hvps as i64).collect())
            .with_str(
                "indices_sha256",
                rows.iter().map(|r| r.indices_sha256.clone()).collect(),
            )
    }

    /// One row per checkpoint and ratio.
    pub fn summary_table(&self) -> Table {
        let s = self.summaries();
        Table::new()
            .with_str(
                "checkpoint",
                s.iter().map(|r| r.checkpoint.clone()).collect(),
            )
            .with_f64("ratio", s.iter().map(|r| r.ratio).collect())
            .with_f64(
                "keep_probability",
                s.iter().map(|r| r.keep_probability).collect(),
            )
            .with_f64("mean_k", s.iter().map(|r| r.mean_k).collect())
            .with_f64(
                "lambda_max_mean",
                s.iter().map(|r| r.lambda_max.mean).collect(),
            )
            .with_f64(
                "lambda_max_min",
                s.iter().map(|r| r.lambda_min_over_seeds).collect(),
            )
            .with_f64(
                "lambda_max_max",
                s.iter().map(|r| r.lambda_max_over_seeds).collect(),
            )
            .with_f64(
                "p_lambda_scope",
                s.iter().map(|r| r.proportional_lambda).collect(),
            )
            .with_f64(
                "lambda_over_p_lambda_scope",
                s.iter()
                    .map(|r| r.lambda_max.mean / r.proportional_lambda)
                    .collect(),
            )
            .with_f64(
                "stable_lr",
                s.iter().map(|r| 2.0 / r.lambda_max.mean).collect(),
            )
            .with_f64("trace_mean", s.iter().map(|r| r.trace.mean).collect())
            .with_f64(
                "p_trace_scope",
                s.iter().map(|r| r.expected_trace).collect(),
            )
            .with_f64(
                "implied_trace_scope",
                s.iter()
                    .map(|r| r.trace.mean / r.keep_probability)
                    .collect(),
            )
            .with_f64("trace_gap_se", s.iter().map(trace_gap_in_se).collect())
    }

    /// The landscape-claim figure: λmax against the ratio with the ceiling, the
    /// p-proportional line, the fit and 2/λmax; and the masked trace against p tr.
    pub fn figure(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        let summaries = self.summaries();
        let mut lambda = Chart::new(
            "Largest masked-Hessian eigenvalue against the trainable ratio",
            Axis::log("trainable ratio (fraction of all parameters)"),
            Axis::log("λmax of the masked Hessian"),
        )
        .with_secondary(Axis::log("largest stable learning rate 2/λmax"))
        .with_legend(LegendPosition::LowerRight);
        let positive = summaries
            .iter()
            .all(|s| s.trace.mean > 0.0 && s.expected_trace > 0.0);
        let trace_axis = if positive {
            Axis::log("trace of the masked Hessian")
        } else {
            let width = summaries
                .iter()
                .map(|s| s.expected_trace.abs())
                .fold(0.0, f64::max)
                * 1e-2;
            Axis::symlog(
                "trace of the masked Hessian (symmetric log)",
                width.max(1e-12),
            )
        };
        let mut trace = Chart::new(
            "Trace identity: E[tr H_m] = p tr H_scope",
            Axis::log("trainable ratio (fraction of all parameters)"),
            trace_axis,
        )
        .with_legend(LegendPosition::LowerRight);
        let several = self.spec.checkpoints.len() > 1;
        for (c, checkpoint) in self.spec.checkpoints.iter().enumerate() {
            let rows: Vec<&RatioSummary> = summaries
                .iter()
                .filter(|s| s.checkpoint == checkpoint.name)
                .collect();
            let Some(scope) = self.scope(&checkpoint.name) else {
                continue;
            };
            if rows.is_empty() {
                continue;
            }
            let tag = |what: &str| {
                if several {
                    format!("{what} [{}]", checkpoint.name)
                } else {
                    what.to_string()
                }
            };
            let base = 4 * c;
            let seeds = self.spec.seeds.len();
            lambda.add(
                Some(&tag(&format!(
                    "measured (mean, min-max over {seeds} seeds)"
                ))),
                base,
                SeriesData::ErrorBars(
                    rows.iter()
                        .map(|s| ErrorPoint {
                            x: s.ratio,
                            y: s.lambda_max.mean,
                            lo: s.lambda_min_over_seeds,
                            hi: s.lambda_max_over_seeds,
                        })
                        .collect(),
                ),
            );
            let (lo, hi) = rows.iter().fold((f64::INFINITY, 0.0f64), |(l, h), s| {
                (l.min(s.ratio), h.max(s.ratio))
            });
            lambda
                .add(
                    Some(&tag("ceiling λmax(H_scope)")),
                    base + 3,
                    SeriesData::Line(vec![
                        (lo, scope.lambda_max.value),
                        (hi, scope.lambda_max.value),
                    ]),
                )
                .dashed();
            lambda
                .add(
                    Some(&tag("p·λmax(H_scope) (p-proportional)")),
                    base + 2,
                    SeriesData::Line(
                        rows.iter()
                            .map(|s| (s.ratio, s.proportional_lambda))
                            .collect(),
                    ),
                )
                .dashed();
            let (slope, intercept) = log_log_fit(rows.iter().map(|s| (s.ratio, s.lambda_max.mean)));
            if slope.is_finite() {
                lambda
                    .add(
                        Some(&tag(&format!("fit: slope {slope:.3}"))),
                        7,
                        SeriesData::Line(
                            [lo, hi]
                                .iter()
                                .map(|&r| (r, (intercept + slope * r.ln()).exp()))
                                .collect(),
                        ),
                    )
                    .dashed();
            }
            lambda
                .add(
                    Some(&tag("2/λmax (right axis)")),
                    base + 1,
                    SeriesData::Line(
                        rows.iter()
                            .map(|s| (s.ratio, 2.0 / s.lambda_max.mean))
                            .collect(),
                    ),
                )
                .secondary();
            trace.add(
                Some(&tag(&format!(
                    "measured tr H_m (mean, min-max over {seeds} seeds)"
                ))),
                base,
                SeriesData::ErrorBars(
                    rows.iter()
                        .map(|s| {
                            let cells = self.cells.iter().filter(|c| {
                                c.checkpoint == checkpoint.name && c.ratio == Some(s.ratio)
                            });
                            let (l, h) = cells
                                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), c| {
                                    (l.min(c.trace.estimate), h.max(c.trace.estimate))
                                });
                            ErrorPoint {
                                x: s.ratio,
                                y: s.trace.mean,
                                lo: l,
                                hi: h,
                            }
                        })
                        .collect(),
                ),
            );
            trace
                .add(
                    Some(&tag("p·tr(H_scope)")),
                    base + 2,
                    SeriesData::Line(rows.iter().map(|s| (s.ratio, s.expected_trace)).collect()),
                )
                .dashed();
        }
        plot::save_panels(&[lambda, trace], 2, stem)
    }

    /// Sentences that read the figure's numbers, per checkpoint.
    pub fn reading(&self) -> Vec<String> {
        let summaries = self.summaries();
        let several = self.spec.checkpoints.len() > 1;
        let mut lines = Vec::new();
        for checkpoint in &self.spec.checkpoints {
            let rows: Vec<&RatioSummary> = summaries
                .iter()
                .filter(|s| s.checkpoint == checkpoint.name)
                .collect();
            let Some(scope) = self.scope(&checkpoint.name) else {
                continue;
            };
            if rows.is_empty() {
                continue;
            }
            let prefix = if several {
                format!("{}: ", checkpoint.name)
            } else {
                String::new()
            };
            lines.push(format!("{prefix}{}", self.verdict(&checkpoint.name, scope)));
            let mut by_ratio = rows.clone();
            by_ratio.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
            // invariant: rows is non-empty.
            let (smallest, largest) = (by_ratio[0], by_ratio[by_ratio.len() - 1]);
            let (slope, _) = log_log_fit(rows.iter().map(|s| (s.ratio, s.lambda_max.mean)));
            let span = largest.ratio / smallest.ratio;
            let factor = largest.lambda_max.mean / smallest.lambda_max.mean;
            lines.push(format!(
                "{prefix}Fitted slope of log λmax against log ratio: {slope:.3} over ratios {} to {} \
                 (p-proportional scaling has slope 1, a flat curve 0). Across that ×{} change of \
                 ratio, mean λmax changes ×{} (p-proportional: ×{}).",
                format_float(smallest.ratio),
                format_float(largest.ratio),
                format_float(span),
                format_float(factor),
                format_float(span),
            ));
            lines.push(format!(
                "{prefix}Measured λmax / (p·λmax(H_scope)): {} at ratio {} (p = {}, mean k = {}) and {} at \
                 ratio {} (p = {}): at the sparsest mask the top eigenvalue is {}× what p-proportional \
                 scaling predicts.",
                format_float(largest.lambda_max.mean / largest.proportional_lambda),
                format_float(largest.ratio),
                format_float(largest.keep_probability),
                format_float(largest.mean_k),
                format_float(smallest.lambda_max.mean / smallest.proportional_lambda),
                format_float(smallest.ratio),
                format_float(smallest.keep_probability),
                format_float(smallest.lambda_max.mean / smallest.proportional_lambda),
            ));
            let highest = self
                .cells
                .iter()
                .filter(|c| c.checkpoint == checkpoint.name)
                .map(|c| c.lambda_max.value)
                .fold(f64::NEG_INFINITY, f64::max);
            let above = self
                .cells
                .iter()
                .filter(|c| {
                    c.checkpoint == checkpoint.name
                        && c.lambda_max.value
                            > scope.lambda_max.value
                                + scope.lambda_max.residual
                                + c.lambda_max.residual
                })
                .count();
            lines.push(format!(
                "{prefix}Interlacing ceiling λmax(H_scope) = {} (whole scope, {} parameters; residual {}): \
                 the largest λmax of any mask reaches {:.1}% of it, and {above} of {} cells exceed it \
                 beyond their residuals.",
                format_float(scope.lambda_max.value),
                scope.dim,
                format_float(scope.lambda_max.residual),
                100.0 * highest / scope.lambda_max.value,
                self.cells.iter().filter(|c| c.checkpoint == checkpoint.name).count(),
            ));
            let (worst, worst_ratio) = rows
                .iter()
                .map(|s| (trace_gap_in_se(s), s.ratio))
                .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))
                .unwrap_or((f64::NAN, f64::NAN));
            let ratios_of_trace: Vec<f64> = rows
                .iter()
                .map(|s| s.trace.mean / s.expected_trace)
                .collect();
            let (lo, hi) = ratios_of_trace
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &r| {
                    (l.min(r), h.max(r))
                });
            lines.push(format!(
                "{prefix}Trace identity E[tr H_m] = p·tr(H_scope) with tr(H_scope) = {} ± {} (Hutch++): \
                 mean measured / expected lies between {} and {}; the largest gap is {worst:.2} standard \
                 errors (ratio {}; the error combines the spread over seeds and the reference's Hutch++ \
                 error, which all ratios share, so their gaps move together).",
                format_float(scope.trace.estimate),
                format_float(scope.trace.standard_error),
                format_float(lo),
                format_float(hi),
                format_float(worst_ratio),
            ));
            let cells: Vec<&CellRecord> = self
                .cells
                .iter()
                .filter(|c| c.checkpoint == checkpoint.name)
                .collect();
            let (implied, implied_se) = implied_scope_trace(&cells);
            let z = (implied - scope.trace.estimate)
                / (implied_se.powi(2) + scope.trace.standard_error.powi(2)).sqrt();
            lines.push(format!(
                "{prefix}The masks give their own estimate of tr(H_scope): Σ tr H_m / Σ p over the {} \
                 cells is {} ± {} (jackknife), {z:+.2} combined standard errors from the direct estimate.",
                cells.len(),
                format_float(implied),
                format_float(implied_se),
            ));
            lines.push(format!(
                "{prefix}Implied largest stable learning rate 2/λmax (gradient descent on the local \
                 quadratic model): {} at ratio {} and {} at ratio {}, ×{} over the sweep (p-proportional \
                 scaling would give ×{}).",
                format_float(2.0 / largest.lambda_max.mean),
                format_float(largest.ratio),
                format_float(2.0 / smallest.lambda_max.mean),
                format_float(smallest.ratio),
                format_float(largest.lambda_max.mean / smallest.lambda_max.mean),
                format_float(span),
            ));
        }
        lines
    }

    /// Whether a checkpoint's numbers can be used: every λmax residual within the
    /// tolerance or which cells missed it (and the key to raise), and how precise
    /// the Hutch++ traces are. Multiplicities are not checked: a cell reports λmax
    /// alone, which a repeated eigenvalue does not change.
    fn verdict(&self, checkpoint: &str, scope: &CellRecord) -> String {
        let cells: Vec<&CellRecord> = self
            .cells
            .iter()
            .filter(|c| c.checkpoint == checkpoint)
            .collect();
        let missed: Vec<&CellRecord> = cells
            .iter()
            .copied()
            .filter(|c| !c.lambda_max.residual_converged)
            .collect();
        let tol = format!("{:e}", self.spec.tol);
        let lambda = if missed.is_empty() && scope.lambda_max.residual_converged {
            format!(
                "Verdict: every λmax residual ({} cells and the whole-scope reference) is within \
                 the tolerance {tol}·λmax; multiplicities are not checked (a cell reports λmax \
                 alone, which a repeated eigenvalue does not change).",
                cells.len()
            )
        } else {
            let mut ratios: Vec<f64> = missed.iter().filter_map(|c| c.ratio).collect();
            ratios.sort_by(f64::total_cmp);
            ratios.dedup();
            let mut parts = Vec::new();
            if !missed.is_empty() {
                parts.push(format!(
                    "{} of {} cells (ratios {}; raise `iters`)",
                    missed.len(),
                    cells.len(),
                    ratios
                        .iter()
                        .map(|r| format_float(*r))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !scope.lambda_max.residual_converged {
                parts.push("the whole-scope reference (raise `scope_iters`)".to_string());
            }
            format!(
                "Verdict: NOT CONVERGED: the λmax residual of {} is above the tolerance {tol}·λmax, \
                 so that λmax is only the best Ritz value within the budget (see the residual \
                 column).",
                parts.join(" and ")
            )
        };
        let mut relative: Vec<f64> = cells
            .iter()
            .map(|c| c.trace.standard_error / c.trace.estimate.abs())
            .collect();
        relative.sort_by(f64::total_cmp);
        let median = relative
            .get(relative.len() / 2)
            .copied()
            .unwrap_or(f64::NAN);
        format!(
            "{lambda} Hutch++ traces: median standard error {}% of the estimate over the cells, \
             {}% for the reference.",
            format_significant(100.0 * median, 3),
            format_significant(
                100.0 * scope.trace.standard_error / scope.trace.estimate.abs(),
                3
            )
        )
    }

    /// The reading and the summary table as Markdown (for reports).
    pub fn markdown(&self) -> String {
        let mut out = String::from("Reading the numbers:\n\n");
        for line in self.reading() {
            let _ = writeln!(out, "- {line}");
        }
        let _ = write!(out, "\n{}\n", self.summary_table().to_markdown());
        out
    }
}

/// `(mean trace − p tr H_scope)` in standard errors: the seeds' spread of the mean
/// and the reference's Hutch++ error combined.
fn trace_gap_in_se(s: &RatioSummary) -> f64 {
    let se = (s.trace.standard_error().powi(2) + s.expected_trace_se.powi(2)).sqrt();
    if se > 0.0 {
        (s.trace.mean - s.expected_trace) / se
    } else {
        f64::NAN
    }
}

/// tr(H_scope) as the masks see it: the ratio estimator `Σ tr H_m / Σ p` over
/// the cells (unbiased to first order by the trace identity), with its
/// leave-one-cell-out jackknife standard error (NaN with fewer than two cells).
fn implied_scope_trace(cells: &[&CellRecord]) -> (f64, f64) {
    let n = cells.len();
    let total_trace: f64 = cells.iter().map(|c| c.trace.estimate).sum();
    let total_p: f64 = cells.iter().map(|c| c.keep_probability).sum();
    let estimate = total_trace / total_p;
    if n < 2 {
        return (estimate, f64::NAN);
    }
    let leave_one_out: Vec<f64> = cells
        .iter()
        .map(|c| (total_trace - c.trace.estimate) / (total_p - c.keep_probability))
        .collect();
    let mean = leave_one_out.iter().sum::<f64>() / n as f64;
    let spread: f64 = leave_one_out.iter().map(|x| (x - mean).powi(2)).sum();
    (estimate, ((n - 1) as f64 / n as f64 * spread).sqrt())
}

/// Least-squares fit `ln y = intercept + slope ln x` over positive finite pairs.
fn log_log_fit(points: impl IntoIterator<Item = (f64, f64)>) -> (f64, f64) {
    let logs: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|&(x, y)| x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let slope = crate::stats::log_log_slope(logs.iter().map(|&(x, y)| (x.exp(), y.exp())));
    if !slope.is_finite() {
        return (f64::NAN, f64::NAN);
    }
    let n = logs.len() as f64;
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
    (slope, my - slope * mx)
}

/// Writes a sweep's table (`cells`, `summary`) under `tables_dir` and its figure at
/// `figure_stem`; returns the files.
pub fn write_sweep(
    result: &SweepResult,
    tables_dir: &Path,
    figure_stem: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = result.cells_table().write_both(&tables_dir.join("cells"))?;
    written.extend(
        result
            .summary_table()
            .write_both(&tables_dir.join("summary"))?,
    );
    written.extend(result.figure(figure_stem)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_numbers_read_back_bit_for_bit() {
        // A resumed sweep mixes cells read from disk with fresh ones; serde_json's
        // default float parser can land one ulp off (-24.88733217959177 read back
        // as ...766), hence its `float_roundtrip` feature.
        let mut x = -24.887_332_179_591_77_f64;
        for _ in 0..10_000 {
            let text = serde_json::to_string(&x).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{text}");
            x = (x * 1.618_033_988_749_895).sin() * 10f64.powi((x.abs() * 7.0) as i32 % 40 - 20);
        }
    }

    #[test]
    fn fit_recovers_a_power_law() {
        let (slope, intercept) = log_log_fit([
            (0.1, 2.0 * 0.1f64.powf(0.7)),
            (0.01, 2.0 * 0.01f64.powf(0.7)),
        ]);
        assert!((slope - 0.7).abs() < 1e-12);
        assert!((intercept - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn the_shards_of_a_spec_cover_every_cell_exactly_once() {
        // Two checkpoints x (scope + 5 ratios x 3 seeds); the paths do not exist:
        // the grid and its partition come from the spec alone.
        let spec = SweepSpec {
            checkpoints: ["init", "after"]
                .iter()
                .map(|name| CheckpointEntry {
                    name: name.to_string(),
                    path: format!("no/such/{name}").into(),
                    delta: None,
                })
                .collect(),
            data: "no/such/data.jsonl".into(),
            task: Some("sst2".into()),
            ratios: vec![0.1, 0.03, 0.01, 0.003, 0.001],
            ..SweepSpec::default()
        };
        let grid = spec.grid();
        assert_eq!(grid.len(), spec.cell_count());
        assert_eq!(grid[0].id, "init/scope");
        assert_eq!(grid[1].id, "init/ratio-1e-1-seed-0");
        assert_eq!(grid[16].id, "after/scope");
        assert_eq!(grid[31].id, "after/ratio-1e-3-seed-2");
        // (150 + 90) products at k/P = 0.15, (80 + 30) at k/P = 0.1 and 0.001.
        assert_eq!(grid[0].cost, 240.0 * 8.5);
        assert_eq!(grid[1].cost, 110.0 * 6.0);
        assert!((grid[31].cost - 110.0 * 1.05).abs() < 1e-9);
        let total: f64 = grid.iter().map(|c| c.cost).sum();
        for n in [1, 2, 3, 4, 5, 8, 13, 32, 40] {
            let partition = spec.partition(n);
            let mut owners = vec![0; grid.len()];
            for index in 1..=n {
                let shard = Shard::new(index, n).unwrap();
                for i in partition.units_of(shard) {
                    owners[i] += 1;
                }
            }
            assert!(owners.iter().all(|&k| k == 1), "N = {n}: {owners:?}");
            // Balanced by cost: no shard above the mean by more than the largest
            // cell (a scope reference).
            let heaviest = (1..=n).map(|s| partition.load(s)).fold(0.0, f64::max);
            assert!(heaviest <= total / n as f64 + grid[0].cost, "N = {n}");
            assert_eq!(partition, spec.partition(n), "deterministic");
        }
        // Two shards: the two scope references (the dearest cells) go one each,
        // `after/scope` first by the id tie-break.
        let two = spec.partition(2);
        assert_eq!((two.owner(0).index(), two.owner(16).index()), (2, 1));
    }

    #[test]
    fn spec_errors_name_the_key() {
        let spec = SweepSpec {
            checkpoints: vec![CheckpointEntry {
                name: "init".into(),
                path: "m".into(),
                delta: None,
            }],
            data: "d.jsonl".into(),
            task: Some("sst2".into()),
            ratios: vec![0.01, 0.0],
            ..SweepSpec::default()
        };
        let err = spec.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "ratios: 0 is not a trainable ratio (each must lie in (0, 1])"
        );
        let spec = SweepSpec {
            ratios: vec![0.01],
            seeds: vec![1, 1],
            ..spec
        };
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .starts_with("seeds:")
        );
    }
}
