//! A training sweep's spec: the `[sweep]`, `[train]` and `[hessian]` tables of a
//! `kind = "training_sweep"` experiment, checked key by key, and the requests and
//! masks it describes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mask::{MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::probe::device::{Device, Dtype, GpuOptions};
use crate::probe::inputs::{HessianChoice, data_spec};
use crate::train::data::{BatchSize, TrainDataRequest};
use crate::train::optimizer::{OptimizerKind, OptimizerSettings};
use crate::train::run::{Length, TrainSettings};

/// A checkpoint every run of a sweep starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// A short label, used in cell ids and legends.
    pub name: String,
    /// The checkpoint folder.
    pub path: PathBuf,
}

/// `[sweep]`: the grid and its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridSpec {
    pub checkpoints: Vec<Checkpoint>,
    /// The training file and how its rows become examples (as the data flags).
    pub data: PathBuf,
    pub task: Option<String>,
    pub template: Option<String>,
    pub candidates: Option<Vec<String>>,
    /// `FIELD=COLUMN` overrides.
    pub columns: Vec<String>,
    /// A tokenizer folder for checkpoints that ship none.
    pub tokenizer: Option<PathBuf>,
    /// Train and dev examples drawn (disjoint) from the training file.
    pub train_examples: Option<usize>,
    pub dev_examples: Option<usize>,
    /// A dev file instead of the draw from the training file.
    pub dev: Option<PathBuf>,
    /// The test file, evaluated at each run's best state, and how many of its rows.
    pub test: Option<PathBuf>,
    pub test_examples: Option<usize>,
    /// Seed of the split draws (the same splits for every cell).
    pub data_seed: u64,
    /// Sequences per evaluation batch (memory, not results).
    pub eval_batch: usize,
    pub scope: Scope,
    pub ratio_of: RatioOf,
    pub sampling: Sampling,
    /// Random (element-wise) masks at these trainable ratios.
    pub ratios: Vec<f64>,
    /// Structured (whole-column) masks at these ratios: the same expected trainable
    /// count as a random mask of the ratio.
    pub structured_ratios: Vec<f64>,
    /// Full fine-tuning (every parameter), the paper's FT baseline.
    pub full: bool,
    /// Peak learning rates.
    pub lrs: Vec<f64>,
    /// Each seed draws the mask and the data order of its runs.
    pub seeds: Vec<u64>,
    /// The learning rate of the distance figure's common-rate curve (default: the
    /// middle of `lrs`).
    pub common_lr: Option<f64>,
}

impl Default for GridSpec {
    fn default() -> Self {
        GridSpec {
            checkpoints: Vec::new(),
            data: PathBuf::new(),
            task: None,
            template: None,
            candidates: None,
            columns: Vec::new(),
            tokenizer: None,
            train_examples: None,
            dev_examples: None,
            dev: None,
            test: None,
            test_examples: None,
            data_seed: 0,
            eval_batch: 32,
            scope: Scope::Qv,
            ratio_of: RatioOf::Total,
            sampling: Sampling::Bernoulli,
            ratios: Vec::new(),
            structured_ratios: Vec::new(),
            full: false,
            lrs: Vec::new(),
            seeds: vec![0, 1],
            common_lr: None,
        }
    }
}

/// A number, or the word a setting without one takes (`clip = "none"`,
/// `batch = "all"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumberOr<N> {
    Number(N),
    Word(String),
}

/// `[train]`: every run's settings, as `maskscape train`'s flags (the learning rate
/// and seed come from the grid).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainTable {
    pub optimizer: OptimizerKind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub warmup_steps: usize,
    /// The gradient-norm clip, or `"none"`.
    pub clip: NumberOr<f64>,
    pub epochs: usize,
    /// Examples per step, or `"all"`.
    pub batch: NumberOr<usize>,
    pub grad_accum: usize,
    pub dtype: Dtype,
    pub device: Device,
    pub gpu: GpuOptions,
    /// Recompute the blocks' activations in the runs' passes and the Hessians'
    /// products (`--recompute`); not part of a unit's key (the same bits).
    pub recompute: bool,
}

impl Default for TrainTable {
    fn default() -> Self {
        let paper = OptimizerSettings::default();
        TrainTable {
            optimizer: paper.kind,
            beta1: paper.beta1,
            beta2: paper.beta2,
            eps: paper.eps,
            weight_decay: paper.weight_decay,
            momentum: paper.momentum,
            warmup_steps: paper.warmup_steps,
            clip: NumberOr::Number(1.0),
            epochs: 5,
            batch: NumberOr::Number(8),
            grad_accum: 1,
            dtype: Dtype::F32,
            device: Device::Cpu,
            gpu: GpuOptions::default(),
            recompute: false,
        }
    }
}

/// `[hessian]`: how λmax and the trace are measured at each run's start and end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HessianTable {
    /// The fixed batch: the first this many examples of the train split.
    pub examples: usize,
    /// Lanczos's product budget and relative tolerance (default: 1e-4 in f32,
    /// 1e-8 in f64).
    pub iters: usize,
    pub tol: Option<f64>,
    /// Hutch++ products per trace.
    pub trace_products: usize,
    /// The budgets of the whole-scope reference (the interlacing ceiling).
    pub scope_iters: usize,
    pub scope_trace_products: usize,
    /// Seed of the probe vectors.
    pub seed: u64,
}

impl Default for HessianTable {
    fn default() -> Self {
        HessianTable {
            examples: 16,
            iters: 20,
            tol: None,
            trace_products: 12,
            scope_iters: 40,
            scope_trace_products: 30,
            seed: 0,
        }
    }
}

/// A whole training sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSweepSpec {
    pub sweep: GridSpec,
    #[serde(default)]
    pub train: TrainTable,
    #[serde(default)]
    pub hessian: HessianTable,
}

/// What trains in a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arm", content = "ratio", rename_all = "lowercase")]
pub enum Arm {
    /// A Bernoulli element mask at this ratio (the paper's).
    Random(f64),
    /// A whole-column mask at this ratio (the paper's structured ablation).
    Structured(f64),
    /// Every parameter (full fine-tuning).
    Full,
}

impl Arm {
    /// The arm's part of a cell id: `ratio-1e-2`, `columns-1e-2`, `full`.
    pub fn name(self) -> String {
        match self {
            Arm::Random(r) => format!("ratio-{r:e}"),
            Arm::Structured(r) => format!("columns-{r:e}"),
            Arm::Full => "full".to_string(),
        }
    }

    /// The trainable ratio, when a mask draws the arm.
    pub fn ratio(self) -> Option<f64> {
        match self {
            Arm::Random(r) | Arm::Structured(r) => Some(r),
            Arm::Full => None,
        }
    }
}

/// A rejected key, as `[table] key: why`.
fn bad(table: &str, key: &str, why: impl std::fmt::Display) -> Error {
    Error::arg(format!("[{table}] {key}"), why.to_string())
}

fn check_distinct<X: PartialEq + std::fmt::Display>(key: &str, values: &[X]) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(bad("sweep", key, format!("{v} appears twice")));
        }
    }
    Ok(())
}

fn check_ratios(key: &str, ratios: &[f64]) -> Result<()> {
    if let Some(r) = ratios
        .iter()
        .find(|r| !(r.is_finite() && **r > 0.0 && **r <= 1.0))
    {
        return Err(bad(
            "sweep",
            key,
            format!("{r} is not a trainable ratio (each must lie in (0, 1])"),
        ));
    }
    check_distinct(key, ratios)
}

impl TrainSweepSpec {
    /// Checks everything that needs no file (a ratio's upper limit depends on the
    /// model and is checked when its mask is drawn); errors name the table and key.
    pub fn validate(&self) -> Result<()> {
        let g = &self.sweep;
        if g.checkpoints.is_empty() {
            return Err(bad(
                "sweep",
                "checkpoints",
                "list at least one { name, path }",
            ));
        }
        for (i, c) in g.checkpoints.iter().enumerate() {
            let safe = !c.name.is_empty()
                && c.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !safe {
                return Err(bad(
                    "sweep",
                    "checkpoints",
                    format!(
                        "name `{}` must be non-empty ASCII letters, digits, '-', '_' or '.'",
                        c.name
                    ),
                ));
            }
            if g.checkpoints[..i].iter().any(|o| o.name == c.name) {
                return Err(bad(
                    "sweep",
                    "checkpoints",
                    format!("name `{}` appears twice", c.name),
                ));
            }
        }
        if g.data.as_os_str().is_empty() {
            return Err(bad("sweep", "data", "required: the training file"));
        }
        if g.dev_examples.is_none() && g.dev.is_none() {
            return Err(bad(
                "sweep",
                "dev_examples",
                "required (or `dev`): the best state and the optimal learning rate are chosen on dev",
            ));
        }
        if g.test.is_none() {
            return Err(bad(
                "sweep",
                "test",
                "required: the test file the figures score",
            ));
        }
        for (key, n) in [
            ("train_examples", g.train_examples),
            ("dev_examples", g.dev_examples),
            ("test_examples", g.test_examples),
        ] {
            if n == Some(0) {
                return Err(bad("sweep", key, "must be at least 1"));
            }
        }
        if g.eval_batch == 0 {
            return Err(bad("sweep", "eval_batch", "must be at least 1"));
        }
        check_ratios("ratios", &g.ratios)?;
        check_ratios("structured_ratios", &g.structured_ratios)?;
        if g.ratios.is_empty() && g.structured_ratios.is_empty() && !g.full {
            return Err(bad(
                "sweep",
                "ratios",
                "list at least one ratio (or structured_ratios, or full = true)",
            ));
        }
        if g.lrs.is_empty() {
            return Err(bad("sweep", "lrs", "list at least one learning rate"));
        }
        if let Some(lr) = g.lrs.iter().find(|lr| !(lr.is_finite() && **lr > 0.0)) {
            return Err(bad(
                "sweep",
                "lrs",
                format!("{lr} is not a positive learning rate"),
            ));
        }
        check_distinct("lrs", &g.lrs)?;
        if g.seeds.is_empty() {
            return Err(bad("sweep", "seeds", "list at least one seed"));
        }
        check_distinct("seeds", &g.seeds)?;
        if let Some(lr) = g.common_lr
            && !g.lrs.contains(&lr)
        {
            return Err(bad(
                "sweep",
                "common_lr",
                format!("{lr} is not one of `lrs`"),
            ));
        }
        let t = &self.train;
        if t.epochs == 0 {
            return Err(bad("train", "epochs", "must be at least 1"));
        }
        if let NumberOr::Word(w) = &t.clip
            && w != "none"
        {
            return Err(bad(
                "train",
                "clip",
                format!("expected a number or \"none\", got \"{w}\""),
            ));
        }
        if let NumberOr::Word(w) = &t.batch
            && w != "all"
        {
            return Err(bad(
                "train",
                "batch",
                format!("expected a number or \"all\", got \"{w}\""),
            ));
        }
        self.settings(g.lrs[0], g.seeds[0])
            .validate()
            .map_err(|e| Error::arg("[train]", e.to_string()))?;
        let h = &self.hessian;
        if h.examples == 0 {
            return Err(bad("hessian", "examples", "must be at least 1"));
        }
        if h.iters < 4 || h.scope_iters < 4 {
            return Err(bad(
                "hessian",
                "iters",
                "budgets must be at least 4 products",
            ));
        }
        if h.trace_products < 4 || h.scope_trace_products < 4 {
            return Err(bad(
                "hessian",
                "trace_products",
                "Hutch++ needs at least 4 products",
            ));
        }
        if !(self.tol() > 0.0 && self.tol() < 1.0) {
            return Err(bad("hessian", "tol", "must lie in (0, 1)"));
        }
        self.data_request()
            .map_err(|e| Error::arg("[sweep]", e.to_string()))?;
        Ok(())
    }

    /// Lanczos's tolerance: the spec's, or the dtype's default.
    pub fn tol(&self) -> f64 {
        self.hessian
            .tol
            .unwrap_or(self.train.dtype.default_tolerance())
    }

    /// The arms in grid order: random masks, structured masks, full fine-tuning.
    pub fn arms(&self) -> Vec<Arm> {
        let g = &self.sweep;
        let mut arms: Vec<Arm> = g.ratios.iter().map(|&r| Arm::Random(r)).collect();
        arms.extend(g.structured_ratios.iter().map(|&r| Arm::Structured(r)));
        if g.full {
            arms.push(Arm::Full);
        }
        arms
    }

    /// The learning rate of the common-rate curves: `common_lr`, or the middle of
    /// the sorted `lrs` (the lower middle for an even count).
    pub fn common_lr(&self) -> f64 {
        self.sweep.common_lr.unwrap_or_else(|| {
            let mut lrs = self.sweep.lrs.clone();
            lrs.sort_by(f64::total_cmp);
            lrs[(lrs.len() - 1) / 2]
        })
    }

    /// The mask an arm draws with a seed.
    pub fn mask_spec(&self, ratio: f64, structure: Structure, seed: u64) -> MaskSpec {
        MaskSpec {
            scope: self.sweep.scope,
            ratio,
            ratio_of: self.sweep.ratio_of,
            sampling: self.sweep.sampling,
            structure,
            seed,
        }
    }

    /// What trains in `arm` with `seed`.
    pub fn trained(&self, arm: Arm, seed: u64) -> HessianChoice {
        match arm {
            Arm::Random(r) => HessianChoice::Draw {
                spec: self.mask_spec(r, Structure::Elements, seed),
            },
            Arm::Structured(r) => HessianChoice::Draw {
                spec: self.mask_spec(r, Structure::Columns, seed),
            },
            Arm::Full => HessianChoice::Full,
        }
    }

    /// The settings of the run at `lr` with `seed` (the data order's seed).
    pub fn settings(&self, lr: f64, seed: u64) -> TrainSettings {
        let t = &self.train;
        TrainSettings {
            optimizer: OptimizerSettings {
                kind: t.optimizer,
                lr,
                beta1: t.beta1,
                beta2: t.beta2,
                eps: t.eps,
                weight_decay: t.weight_decay,
                momentum: t.momentum,
                warmup_steps: t.warmup_steps,
                clip: match t.clip {
                    NumberOr::Number(c) => Some(c),
                    NumberOr::Word(_) => None,
                },
            },
            length: Length::Epochs(t.epochs),
            batch: match t.batch {
                NumberOr::Number(n) => BatchSize::Examples(n),
                NumberOr::Word(_) => BatchSize::All,
            },
            grad_accum: t.grad_accum,
            seed,
            eval_every: None,
            sharpness: None,
            save_every: None,
            dtype: t.dtype,
            device: t.device,
        }
    }

    /// The splits every run reads.
    pub fn data_request(&self) -> Result<TrainDataRequest> {
        let g = &self.sweep;
        Ok(TrainDataRequest {
            train: data_spec(
                &g.data,
                g.task.as_deref(),
                g.template.as_deref(),
                g.candidates.as_deref(),
                &g.columns,
                None,
                g.data_seed,
            )?,
            tokenizer: g.tokenizer.clone(),
            train_examples: g.train_examples,
            dev_examples: g.dev_examples,
            data_seed: g.data_seed,
            dev: g.dev.clone(),
            test: g.test.clone(),
            test_examples: g.test_examples,
            eval_rows: g.eval_batch,
        })
    }
}
