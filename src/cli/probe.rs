//! `maskscape probe`, `maskscape landscape` and `maskscape sweep`: parse the flags,
//! call [`crate::probe`], write its outputs, print a summary.

use super::sweep_lines::{no_cells, print_report, print_run, print_shard};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use serde::Serialize;

use super::MemoryArgs;
use crate::data::DataSpec;
use crate::error::{Error, Result};
use crate::experiment::Spec;
use crate::mask::{MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::probe::inputs::data_spec;
use crate::probe::landscape::{agreement_fraction, slices_stem, write_landscape};
use crate::probe::output::spectrum_lines;
use crate::probe::{
    DataRequest, Device, DirectionKind, Dtype, GpuOptions, HessianChoice, LandscapeOptions,
    LandscapeRequest, Method, ProbeOptions, ProbeOutputs, ProbeRequest, SweepResult, SweepSpec,
    run_landscape, run_probe, run_sweep, run_sweep_shard, sweep_on_disk, write_probe, write_sweep,
};
use crate::report::Manifest;
use crate::report::table::{format_float, format_significant};
use crate::shard::Shard;
use crate::spectral::{Reorthogonalization, Which};

/// A dataset file and how its rows become examples: the data flags of `maskscape
/// data` that `probe`, `landscape` and `train` share.
#[derive(Args, Clone, Debug, Serialize)]
#[command(group(ArgGroup::new("dataset").required(true).args(["data", "tokenized"])))]
pub struct DataFileArgs {
    /// Dataset: JSON lines (.jsonl/.json), CSV, TSV, Parquet, or tokenized .safetensors.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Already tokenized data: safetensors with input_ids, attention_mask and labels
    /// (language-modelling loss over the labels).
    #[arg(long, value_name = "FILE")]
    tokenized: Option<PathBuf>,
    /// sst2, rte, cb, boolq (the paper's prompts), lm, or classification (with
    /// --template and --candidates).
    #[arg(long)]
    task: Option<String>,
    /// Read a field from another column, e.g. --column sentence=review (repeatable).
    #[arg(long = "column", value_name = "FIELD=COLUMN")]
    columns: Vec<String>,
    /// Prompt template of --task classification, e.g. "{text} It was {answer}".
    #[arg(long)]
    template: Option<String>,
    /// Candidate answers of --task classification in label order, e.g. terrible,great.
    #[arg(long, value_delimiter = ',')]
    candidates: Option<Vec<String>>,
    /// A folder with the tokenizer (tokenizer.json, or vocab.json + merges.txt), for
    /// checkpoints that ship none.
    #[arg(long, value_name = "DIR")]
    pub(super) tokenizer: Option<PathBuf>,
}

impl DataFileArgs {
    /// The spec of the file, keeping `max_examples` rows drawn with `seed`.
    pub(super) fn spec(&self, max_examples: Option<usize>, seed: u64) -> Result<DataSpec> {
        let path = match (&self.data, &self.tokenized) {
            (Some(path), None) => path.clone(),
            (None, Some(path)) => {
                if path
                    .extension()
                    .is_none_or(|e| !e.eq_ignore_ascii_case("safetensors"))
                {
                    return Err(Error::arg(
                        "--tokenized",
                        format!("{} must be a .safetensors file", path.display()),
                    ));
                }
                path.clone()
            }
            // invariant: clap's `dataset` group requires exactly one of the two.
            _ => unreachable!("clap requires one of --data and --tokenized"),
        };
        data_spec(
            &path,
            self.task.as_deref(),
            self.template.as_deref(),
            self.candidates.as_deref(),
            &self.columns,
            max_examples,
            seed,
        )
    }
}

/// The dataset flags of the probes (the data flags of `maskscape data`, with the
/// sampling seed renamed `--data-seed` beside the probes' own seeds).
#[derive(Args, Clone, Debug, Serialize)]
pub struct ProbeDataArgs {
    #[command(flatten)]
    file: DataFileArgs,
    /// Keep this many examples, drawn at random with --data-seed, in file order.
    #[arg(long)]
    max_examples: Option<usize>,
    /// Seed of the --max-examples draw.
    #[arg(long, default_value_t = 0)]
    data_seed: u64,
    /// Sequences per batch (a classification example's candidates stay together);
    /// the loss is averaged exactly over all batches.
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

impl ProbeDataArgs {
    fn request(&self) -> Result<DataRequest> {
        let spec = self.file.spec(self.max_examples, self.data_seed)?;
        if self.batch == 0 {
            return Err(Error::arg("--batch", "must be at least 1"));
        }
        Ok(DataRequest {
            spec,
            tokenizer: self.file.tokenizer.clone(),
            batch_rows: self.batch,
        })
    }
}

/// Which coordinates the Hessian is restricted to, or (in `train`) which ones
/// train: the mask flags of `maskscape mask`, prefixed `--mask-` where they would
/// clash.
#[derive(Args, Clone, Debug, Serialize)]
pub struct HessianArgs {
    /// Reuse a saved mask, or any safetensors file with an int64 `mask_idx`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ratio", "full", "whole_scope"])]
    mask: Option<PathBuf>,
    /// Every parameter: the full Hessian (in `train`: full fine-tuning, the paper's
    /// FT baseline).
    #[arg(long, conflicts_with_all = ["ratio", "whole_scope"])]
    full: bool,
    /// Every parameter of --mask-scope (for probes: the interlacing ceiling).
    #[arg(long, conflicts_with = "ratio")]
    whole_scope: bool,
    /// The tensors the mask draws from.
    #[arg(long, value_enum, default_value = "qv")]
    mask_scope: Scope,
    /// The trainable ratio (see --ratio-of).
    #[arg(long, required_unless_present_any = ["mask", "full", "whole_scope"])]
    ratio: Option<f64>,
    /// `total`: a fraction of all parameters (the paper's); `scope`: of the scope.
    #[arg(long, value_enum, default_value = "total")]
    ratio_of: RatioOf,
    #[arg(long, value_enum, default_value = "bernoulli")]
    sampling: Sampling,
    #[arg(long, value_enum, default_value = "elements")]
    structure: Structure,
    /// Seed of the mask draw.
    #[arg(long, default_value_t = 0)]
    mask_seed: u64,
}

impl HessianArgs {
    pub(super) fn choice(&self) -> HessianChoice {
        if let Some(path) = &self.mask {
            HessianChoice::File { path: path.clone() }
        } else if self.full {
            HessianChoice::Full
        } else if self.whole_scope {
            HessianChoice::Scope {
                scope: self.mask_scope,
            }
        } else {
            // `required_unless_present_any` makes clap refuse a missing --ratio here.
            let ratio = self.ratio.expect("--ratio required"); // invariant: see above
            HessianChoice::Draw {
                spec: MaskSpec {
                    scope: self.mask_scope,
                    ratio,
                    ratio_of: self.ratio_of,
                    sampling: self.sampling,
                    structure: self.structure,
                    seed: self.mask_seed,
                },
            }
        }
    }
}

/// Where the engine runs.
#[derive(Args, Clone, Debug, Serialize)]
pub struct EngineArgs {
    /// The precision of the network's sweeps (the spectral algorithms use f64).
    #[arg(long, value_enum, default_value = "f64")]
    dtype: Dtype,
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    gpu: GpuOptions,
    #[command(flatten)]
    memory: MemoryArgs,
}

/// Which end of the spectrum Lanczos computes (`--which` of `probe` and `spectrum`;
/// the spectral code itself knows nothing of clap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(super) enum WhichArg {
    Largest,
    Smallest,
    Both,
}

impl From<WhichArg> for Which {
    fn from(which: WhichArg) -> Which {
        match which {
            WhichArg::Largest => Which::Largest,
            WhichArg::Smallest => Which::Smallest,
            WhichArg::Both => Which::Both,
        }
    }
}

/// Lanczos's reorthogonalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum ReorthArg {
    /// Full when the basis fits in 2 GiB, partial otherwise.
    Auto,
    Full,
    Partial,
}

/// Probes the Hessian of a checkpoint's loss on a dataset, restricted to a random
/// mask (or the full Hessian, or a whole scope): extreme eigenvalues, spectral
/// density, trace, loss and accuracy; writes summary.json, tables, figures and a
/// manifest to --out.
#[derive(Args, Debug, Serialize)]
pub struct ProbeArgs {
    /// A HuggingFace OPT checkpoint folder.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// A training run's delta.safetensors, added to the checkpoint (the trained
    /// model without a full copy).
    #[arg(long, value_name = "FILE")]
    delta: Option<PathBuf>,
    #[command(flatten)]
    data: ProbeDataArgs,
    #[command(flatten)]
    hessian: HessianArgs,
    /// lanczos | power | slq | trace | all.
    #[arg(long, value_enum, default_value = "all")]
    method: Method,
    /// Eigenvalues per requested end.
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[arg(long, value_enum, default_value = "both")]
    which: WhichArg,
    /// Product budget of Lanczos and power iteration; steps per SLQ probe.
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Relative residual tolerance (default: 1e-8 in f64, 1e-4 in f32).
    #[arg(long)]
    tol: Option<f64>,
    /// Seed of the probe vectors (Lanczos start, SLQ and Hutch++ probes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// SLQ probe vectors.
    #[arg(long, default_value_t = 4)]
    probes: usize,
    /// Hutch++ products for the trace.
    #[arg(long, default_value_t = 60)]
    trace_products: usize,
    /// Grid points of the density table.
    #[arg(long, default_value_t = 400)]
    density_points: usize,
    /// Save the Lanczos eigenvectors (mask coordinates) to eigenvectors.safetensors.
    #[arg(long)]
    save_eigenvectors: bool,
    #[arg(long, value_enum, default_value = "auto")]
    reorth: ReorthArg,
    #[command(flatten)]
    engine: EngineArgs,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs `maskscape probe`.
pub fn run_probe_command(args: ProbeArgs) -> anyhow::Result<()> {
    let options = ProbeOptions {
        method: args.method,
        k: args.k,
        which: args.which.into(),
        iters: args.iters,
        tol: args.tol.unwrap_or(args.engine.dtype.default_tolerance()),
        seed: args.seed,
        probes: args.probes,
        trace_products: args.trace_products,
        density_points: args.density_points,
        eigenvectors: args.save_eigenvectors,
        reorthogonalization: match args.reorth {
            ReorthArg::Auto => None,
            ReorthArg::Full => Some(Reorthogonalization::Full),
            ReorthArg::Partial => Some(Reorthogonalization::Partial),
        },
    };
    if args.save_eigenvectors && args.method != Method::Lanczos && args.method != Method::All {
        return Err(Error::arg(
            "--save-eigenvectors",
            "needs --method lanczos or all (the eigenvectors come from Lanczos)",
        )
        .into());
    }
    let request = ProbeRequest {
        model: args.model.clone(),
        delta: args.delta.clone(),
        data: args.data.request()?,
        hessian: args.hessian.choice(),
        options,
        dtype: args.engine.dtype,
        device: args.engine.device,
        gpu: args.engine.gpu,
        memory: args.engine.memory.mode(),
    };
    let manifest = Manifest::new("probe", Some(args.seed), &args)?;
    let progress = super::BarProgress::new();
    let run = run_probe(&request, manifest, &progress)?;
    drop(progress);
    let stem = |name: &str| args.out.join(name);
    let written = write_probe(
        &run,
        &ProbeOutputs {
            dir: &args.out,
            figure_stem: &stem,
            timing: true,
            eigenvectors: args.save_eigenvectors,
        },
    )?;
    print_probe(&run.report);
    println!("wrote {} files to {}", written.len(), args.out.display());
    Ok(())
}

fn print_probe(report: &crate::probe::ProbeReport) {
    println!(
        "{}: {} parameters; Hessian {}",
        report.model.path, report.model.parameters, report.hessian.description
    );
    if let Some(gpu) = &report.gpu {
        let tf32 = if gpu.tf32 { ", TF32 f32 products" } else { "" };
        println!("on {}{tf32}", gpu.description);
    }
    println!(
        "data {}: {} examples ({} sequences, {} batches): {}",
        report.data.path,
        report.data.examples,
        report.data.sequences,
        report.data.batches,
        report.evaluation.describe()
    );
    for line in spectrum_lines(&report.spectrum, "--iters", "--trace-products") {
        println!("{line}");
    }
    if let Some(t) = &report.timing {
        println!(
            "{} Hessian-vector products; wall {:.2} s = load {:.2} + evaluation {:.2} + HVPs {:.2} \
             ({:.1} ms each) + other {:.2}",
            report.hvps, t.total_s, t.load_s, t.evaluation_s, t.hvp_s, t.ms_per_hvp, t.other_s
        );
        println!(
            "memory: activations {} (planned {})",
            match t.memory {
                crate::model::Memory::Recompute => "recomputed in the reverse sweep",
                _ => "stored",
            },
            crate::model::memory::gb(t.memory_planned_bytes)
        );
    }
}

/// The loss along one or two directions in the masked subspace, with the quadratic
/// model from the measured gradient and curvature; writes a table, a figure,
/// summary.json and a manifest to --out.
#[derive(Args, Debug, Serialize)]
pub struct LandscapeArgs {
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// A training run's delta.safetensors, added to the checkpoint.
    #[arg(long, value_name = "FILE")]
    delta: Option<PathBuf>,
    #[command(flatten)]
    data: ProbeDataArgs,
    #[command(flatten)]
    hessian: HessianArgs,
    /// top-eigen (unit eigenvectors), random (normalized per weight matrix), gradient.
    #[arg(long, value_enum, default_value = "top-eigen")]
    directions: DirectionKind,
    /// The grid spans [-span, span] along each direction.
    #[arg(long, default_value_t = 1.0)]
    span: f64,
    /// Grid points per direction.
    #[arg(long, default_value_t = 41)]
    points: usize,
    /// Two directions (a points x points grid).
    #[arg(long = "2d")]
    two_d: bool,
    /// Seed of random directions and of the Lanczos start vector.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Lanczos budget for top-eigen directions.
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Lanczos tolerance for top-eigen directions.
    #[arg(long, default_value_t = 1e-6)]
    tol: f64,
    /// Read top-eigen directions from a probe's eigenvectors.safetensors.
    #[arg(long, value_name = "FILE")]
    eigenvectors: Option<PathBuf>,
    /// A training run (its folder, kept with `train --save-every N`) whose path is
    /// drawn on the 2-D map, with the loss along it; with `--directions pca` the map's
    /// plane is the path's own (its two principal directions). The run must have
    /// trained this landscape's coordinates: pass its delta.safetensors as --mask.
    #[arg(long, value_name = "RUN")]
    trajectory: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs `maskscape landscape`.
pub fn run_landscape_command(args: LandscapeArgs) -> anyhow::Result<()> {
    let request = LandscapeRequest {
        model: args.model.clone(),
        delta: args.delta.clone(),
        data: args.data.request()?,
        hessian: args.hessian.choice(),
        options: LandscapeOptions {
            directions: args.directions,
            span: args.span,
            points: args.points,
            two_d: args.two_d,
            seed: args.seed,
            iters: args.iters,
            tol: args.tol,
            eigenvectors: args.eigenvectors.clone(),
            trajectory: args.trajectory.clone(),
        },
        dtype: args.engine.dtype,
        device: args.engine.device,
        gpu: args.engine.gpu,
        memory: args.engine.memory.mode(),
    };
    let manifest = Manifest::new("landscape", Some(args.seed), &args)?;
    let progress = super::BarProgress::new();
    let run = run_landscape(&request, manifest, &progress)?;
    drop(progress);
    let written = write_landscape(&run, &args.out, &args.out.join("landscape"))?;
    let l = &run.landscape;
    println!(
        "Hessian {}; loss at the checkpoint {}",
        l.hessian,
        format_float(l.base_loss)
    );
    if let Some(verdict) = &l.eigenvector_verdict {
        println!(
            "top-eigen directions, Lanczos verdict: {}",
            verdict.text("--iters")
        );
    }
    for d in &l.directions {
        println!(
            "{}: g·d = {}, dᵀHd = {} (per unit length {})",
            d.label,
            format_float(d.slope),
            format_float(d.curvature),
            format_float(d.rayleigh_quotient)
        );
    }
    println!(
        "{} loss evaluations, {} Hessian-vector products; the quadratic model stays within 1% of \
         the loss range up to |α| = {}",
        l.evaluations,
        l.hvps,
        format_float(l.quadratic_trust_radius(0.01))
    );
    if l.betas.len() > 1 {
        println!(
            "over the plane it agrees within 1% at {}% of the grid points; the map is {}, the \
             slices at fixed β {}",
            format_significant(100.0 * agreement_fraction(&l.agreement_gap(0.01)), 3),
            args.out.join("landscape.png").display(),
            slices_stem(&args.out.join("landscape"))
                .with_extension("png")
                .display()
        );
    }
    if let Some(p) = &l.path {
        let far = |v: &[f64]| v.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        let (a, b) = (far(&p.alphas), far(&p.betas));
        let off = p.off_plane.iter().fold(0.0_f64, |m, &x| m.max(x));
        println!(
            "training path: {} points, up to {} from the plane; loss from {} to {} along it (at \
             its projections: {} to {})",
            p.steps.len(),
            format_significant(off, 3),
            format_significant(p.loss[0], 4),
            format_significant(p.loss[p.loss.len() - 1], 4),
            format_significant(p.loss_projected[0], 4),
            format_significant(p.loss_projected[p.loss_projected.len() - 1], 4)
        );
        if a > args.span || b > args.span {
            println!(
                "  the path reaches |α| = {}, |β| = {}, beyond --span {}: raise it to see all of \
                 the path on the map",
                format_significant(a, 3),
                format_significant(b, 3),
                args.span
            );
        }
    }
    println!("wrote {} files to {}", written.len(), args.out.display());
    Ok(())
}

/// Runs a ratio sweep spec (`kind = "sweep"`, as in experiments/): every ratio x
/// mask seed x checkpoint cell, cached so that an interrupted sweep resumes; or one
/// shard of it; or, computing nothing, its status or its report.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The spec file (TOML with kind = "sweep" and a [sweep] table, or kind =
    /// "training_sweep", or kind = "gd_stability" and a [stability] table).
    pub(super) spec: PathBuf,
    /// Output folder (cells cache, tables, figure, report); default runs/<spec name>.
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
    /// Run only shard I of N (1-based, as array jobs number their tasks): the cells
    /// a deterministic, cost-balanced split of the spec gives it, written to the
    /// shared cells/ folder. Writes no report: run --report once every shard is done.
    #[arg(long, value_name = "I/N")]
    pub(super) shard: Option<String>,
    /// Print the cells done and missing, and the shard that owns each missing one
    /// (of --shards N); computes nothing.
    #[arg(long)]
    pub(super) status: bool,
    /// Write the tables, figure, report and manifest from the cells on disk,
    /// computing none; missing cells are listed, and marked in the report.
    #[arg(long)]
    pub(super) report: bool,
    /// With --status or --report: the N of the shards' --shard I/N, to name the
    /// shard that owns each missing cell (default 1: a single process).
    #[arg(long, value_name = "N")]
    pub(super) shards: Option<usize>,
    /// Overrides the spec's `device` (e.g. in a GPU array job). It is part of every
    /// cell's key: give --status and --report the same.
    #[arg(long, value_enum)]
    pub(super) device: Option<Device>,
    /// Recompute the blocks' activations in the reverse sweep (the spec's
    /// `recompute = true`); not part of a cell's key (the products are the same).
    #[arg(long)]
    pub(super) recompute: bool,
}

/// What `maskscape sweep` was asked to do.
pub(super) enum SweepMode {
    /// Every cell (or one shard's), then, for the whole grid, the outputs.
    Run(Shard),
    /// With the shard count that owners are named for.
    Status(usize),
    Report(usize),
}

impl SweepArgs {
    /// The mode the flags ask for; conflicting flags are one error naming them.
    fn mode(&self) -> Result<SweepMode> {
        if self.shards == Some(0) {
            return Err(Error::arg("--shards", "must be at least 1"));
        }
        let shards = self.shards.unwrap_or(1);
        match (&self.shard, self.status, self.report) {
            (_, true, true) => Err(Error::arg(
                "--status",
                "and --report are separate steps: pass one",
            )),
            (Some(_), true, _) | (Some(_), _, true) => Err(Error::arg(
                "--shard",
                "runs cells; --status and --report take --shards N instead",
            )),
            (_, false, false) if self.shards.is_some() => Err(Error::arg(
                "--shards",
                "goes with --status or --report (a shard runs with --shard I/N)",
            )),
            (Some(shard), false, false) => Ok(SweepMode::Run(shard.parse()?)),
            (None, true, false) => Ok(SweepMode::Status(shards)),
            (None, false, true) => Ok(SweepMode::Report(shards)),
            (None, false, false) => Ok(SweepMode::Run(Shard::WHOLE)),
        }
    }
}

/// Runs `maskscape sweep`.
pub fn run_sweep_command(args: SweepArgs) -> anyhow::Result<()> {
    let mode = args.mode()?;
    let spec = Spec::load(&args.spec)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(&spec.name));
    if spec.kind == crate::experiment::training::RUNNER.kind {
        return super::train_sweep::run(&args, &spec, mode);
    }
    if spec.kind == crate::experiment::stability::KIND {
        return super::stability::run_sweep(&args.spec, &spec, mode, args.device, &out);
    }
    if spec.kind != "sweep" {
        return Err(Error::file(
            &args.spec,
            format!(
                "has kind `{}`; maskscape sweep runs kind = \"sweep\", \"{}\" or \"{}\"",
                spec.kind,
                crate::experiment::training::RUNNER.kind,
                crate::experiment::stability::KIND
            ),
        )
        .into());
    }
    let mut sweep = crate::experiment::network::sweep_spec(&spec)?;
    if let Some(device) = args.device {
        sweep.device = device;
    }
    sweep.recompute |= args.recompute;
    let cells = out.join("cells");
    match mode {
        SweepMode::Status(shards) => {
            let (_, status) = sweep_on_disk(&sweep, &cells, shards)?;
            print!("{}: {}", cells.display(), status.text());
        }
        SweepMode::Report(shards) => {
            let (result, status) = sweep_on_disk(&sweep, &cells, shards)?;
            if status.done() == 0 {
                return Err(no_cells(&cells).into());
            }
            let mut missing = status.markdown();
            for checkpoint in &sweep.checkpoints {
                if result.scope(&checkpoint.name).is_none() {
                    missing.push_str(&format!(
                        "Checkpoint `{0}` has no summary rows or reading until its whole-scope \
                         reference `{0}/scope` is computed.\n\n",
                        checkpoint.name
                    ));
                }
            }
            let written = write_sweep_outputs(&args.spec, &spec, &sweep, &result, &missing, &out)?;
            print_reading(&result);
            print_report(&status, written.len(), &out);
        }
        SweepMode::Run(shard) if shard == Shard::WHOLE => {
            let progress = super::BarProgress::new();
            let result = run_sweep(&sweep, &cells, &progress)?;
            drop(progress);
            write_sweep_outputs(&args.spec, &spec, &sweep, &result, "", &out)?;
            print_reading(&result);
            let work = format!(" ({} Hessian-vector products)", result.hvps_this_run);
            print_run(result.computed, &work, result.cached, &cells);
        }
        SweepMode::Run(shard) => {
            let progress = super::BarProgress::new();
            let result = run_sweep_shard(&sweep, &cells, shard, &progress)?;
            drop(progress);
            let work = format!(" ({} Hessian-vector products)", result.hvps_this_run);
            print_shard(
                shard,
                &sweep.partition(shard.count()),
                sweep.cell_count(),
                (result.computed, &work, result.cached),
                &cells,
            );
        }
    }
    Ok(())
}

/// Writes a sweep's tables, figure, `report.md` (opening with `missing`, the list
/// of cells left out when the grid is incomplete) and manifest under `out`;
/// returns the files.
fn write_sweep_outputs(
    spec_path: &Path,
    spec: &Spec,
    sweep: &SweepSpec,
    result: &SweepResult,
    missing: &str,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = write_sweep(result, out, &out.join(&spec.name))?;
    let report = out.join("report.md");
    crate::report::atomic::write_bytes(
        &report,
        format!("# {}\n\n{}{}", spec.title, missing, result.markdown()).as_bytes(),
    )?;
    written.push(report);
    let mut manifest = Manifest::new("sweep", Some(sweep.seed), sweep)?;
    manifest.add_input("spec", spec_path)?;
    manifest.add_outputs(&written);
    manifest.write(out)?;
    Ok(written)
}

fn print_reading(result: &SweepResult) {
    // The reading opens with each checkpoint's verdict: printed before the table,
    // it is what a glance at the output sees.
    for line in result.reading() {
        println!("- {line}");
    }
    println!("{}", result.summary_table().to_text());
}
