//! The network kinds: `probe` (one Hessian probe of a checkpoint), `landscape`
//! (the loss along masked directions) and `sweep` (λmax and the trace over ratios
//! x mask seeds x checkpoints). They run [`crate::probe`] and write figures,
//! tables and a reading of the numbers for REPORT.md.
//!
//! `probe` and `landscape` specs take the tables `[model]`, `[data]`, `[mask]` and
//! `[probe]` or `[landscape]`; `sweep` specs take one `[sweep]` table (every field
//! of [`SweepSpec`]). Paths are relative to the folder `reproduce` runs in (the
//! repository root). Outputs that `reproduce` commits carry no wall times, so a
//! rerun gives the same files.
//!
//! ```toml
//! kind = "probe"
//! title = "..."
//! [model]
//! path = "bundled/opt-bundled"
//! [data]
//! file = "bundled/sst2-mini/dev.jsonl"
//! task = "sst2"
//! [mask]
//! ratio = 0.01
//! [probe]
//! method = "all"
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Context, Runner, Section, Spec};
use crate::error::{Error, Result};
use crate::mask::{MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::model::Memory;
use crate::probe::inputs::data_spec;
use crate::probe::landscape::{agreement_fraction, slices_stem, write_landscape};
use crate::probe::output::ritz_table;
use crate::probe::{
    DataRequest, Device, Dtype, GpuOptions, HessianChoice, LandscapeOptions, LandscapeRequest,
    ProbeOptions, ProbeOutputs, ProbeRequest, SweepSpec, run_landscape, run_probe, run_sweep,
    write_probe, write_sweep,
};
use crate::report::Manifest;
use crate::report::table::{format_float, format_significant};

/// The runner for `kind = "probe"`.
pub const PROBE: Runner = Runner {
    kind: "probe",
    check: |spec| parse_probe(spec).map(|_| ()),
    run: run_probe_spec,
};

/// The runner for `kind = "landscape"`.
pub const LANDSCAPE: Runner = Runner {
    kind: "landscape",
    check: |spec| parse_landscape(spec).map(|_| ()),
    run: run_landscape_spec,
};

/// The runner for `kind = "sweep"`.
pub const SWEEP: Runner = Runner {
    kind: "sweep",
    check: |spec| sweep_spec(spec).map(|_| ()),
    run: run_sweep_spec,
};

/// `[model]`: the checkpoint and where the engine runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTable {
    path: PathBuf,
    /// A training run's `delta.safetensors` to add to the checkpoint.
    delta: Option<PathBuf>,
    /// A tokenizer folder for checkpoints that ship none.
    tokenizer: Option<PathBuf>,
    #[serde(default)]
    dtype: Dtype,
    #[serde(default)]
    device: Device,
    /// Which GPU, and TF32 (with `device = "cuda"`).
    #[serde(default)]
    gpu: GpuOptions,
    /// Recompute the blocks' activations in the reverse sweep (`--recompute`);
    /// otherwise stored when they fit in the free memory.
    #[serde(default)]
    recompute: bool,
}

/// `[data]`: the dataset, as the data flags describe it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataTable {
    file: PathBuf,
    task: Option<String>,
    template: Option<String>,
    candidates: Option<Vec<String>>,
    #[serde(default)]
    columns: Vec<String>,
    max_examples: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_batch")]
    batch: usize,
}

fn default_batch() -> usize {
    64
}

/// `[mask]`: a drawn mask (`ratio`, ...), a mask `file`, `full = true` or
/// `whole_scope = true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaskTable {
    #[serde(default = "default_scope")]
    scope: Scope,
    ratio: Option<f64>,
    #[serde(default = "default_ratio_of")]
    ratio_of: RatioOf,
    #[serde(default = "default_sampling")]
    sampling: Sampling,
    #[serde(default = "default_structure")]
    structure: Structure,
    #[serde(default)]
    seed: u64,
    file: Option<PathBuf>,
    #[serde(default)]
    full: bool,
    #[serde(default)]
    whole_scope: bool,
}

fn default_scope() -> Scope {
    Scope::Qv
}
fn default_ratio_of() -> RatioOf {
    RatioOf::Total
}
fn default_sampling() -> Sampling {
    Sampling::Bernoulli
}
fn default_structure() -> Structure {
    Structure::Elements
}

impl MaskTable {
    fn choice(&self, path: &Path) -> Result<HessianChoice> {
        let chosen = [
            self.ratio.is_some(),
            self.file.is_some(),
            self.full,
            self.whole_scope,
        ]
        .iter()
        .filter(|&&x| x)
        .count();
        if chosen != 1 {
            return Err(Error::file(
                path,
                "[mask] needs exactly one of ratio, file, full = true, whole_scope = true",
            ));
        }
        Ok(if let Some(ratio) = self.ratio {
            HessianChoice::Draw {
                spec: MaskSpec {
                    scope: self.scope,
                    ratio,
                    ratio_of: self.ratio_of,
                    sampling: self.sampling,
                    structure: self.structure,
                    seed: self.seed,
                },
            }
        } else if let Some(file) = &self.file {
            HessianChoice::File { path: file.clone() }
        } else if self.full {
            HessianChoice::Full
        } else {
            HessianChoice::Scope { scope: self.scope }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeParams {
    model: ModelTable,
    data: DataTable,
    mask: MaskTable,
    #[serde(default)]
    probe: ProbeOptions,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LandscapeParams {
    model: ModelTable,
    data: DataTable,
    mask: MaskTable,
    #[serde(default)]
    landscape: LandscapeOptions,
}

fn data_request(spec: &Spec, model: &ModelTable, data: &DataTable) -> Result<DataRequest> {
    let in_spec = |e: Error| Error::file(&spec.path, format!("[data] {e}"));
    if data.batch == 0 {
        return Err(in_spec(Error::arg("batch", "must be at least 1")));
    }
    Ok(DataRequest {
        spec: data_spec(
            &data.file,
            data.task.as_deref(),
            data.template.as_deref(),
            data.candidates.as_deref(),
            &data.columns,
            data.max_examples,
            data.seed,
        )
        .map_err(in_spec)?,
        tokenizer: model.tokenizer.clone(),
        batch_rows: data.batch,
    })
}

fn parse_probe(spec: &Spec) -> Result<ProbeRequest> {
    let params: ProbeParams = spec.parse_params()?;
    params
        .probe
        .validate()
        .map_err(|e| Error::file(&spec.path, format!("[probe] {e}")))?;
    Ok(ProbeRequest {
        data: data_request(spec, &params.model, &params.data)?,
        hessian: params.mask.choice(&spec.path)?,
        model: params.model.path,
        delta: params.model.delta,
        options: params.probe,
        dtype: params.model.dtype,
        device: params.model.device,
        gpu: params.model.gpu,
        memory: Memory::from_flag(params.model.recompute),
    })
}

fn parse_landscape(spec: &Spec) -> Result<LandscapeRequest> {
    let params: LandscapeParams = spec.parse_params()?;
    params
        .landscape
        .validate()
        .map_err(|e| Error::file(&spec.path, format!("[landscape] {e}")))?;
    Ok(LandscapeRequest {
        data: data_request(spec, &params.model, &params.data)?,
        hessian: params.mask.choice(&spec.path)?,
        model: params.model.path,
        delta: params.model.delta,
        options: params.landscape,
        dtype: params.model.dtype,
        device: params.model.device,
        gpu: params.model.gpu,
        memory: Memory::from_flag(params.model.recompute),
    })
}

/// The `[sweep]` table of a `kind = "sweep"` spec, validated; errors name the file.
pub fn sweep_spec(spec: &Spec) -> Result<SweepSpec> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        sweep: SweepSpec,
    }
    let params: Params = spec.parse_params()?;
    params
        .sweep
        .validate()
        .map_err(|e| Error::file(&spec.path, format!("[sweep] {e}")))?;
    Ok(params.sweep)
}

fn manifest_for(spec: &Spec, seed: u64, parameters: &impl serde::Serialize) -> Result<Manifest> {
    let mut manifest = Manifest::new(
        &format!("reproduce {}", spec.name),
        Some(seed),
        &serde_json::json!({ "kind": spec.kind, "parameters": parameters }),
    )?;
    manifest.add_input("spec", &spec.path)?;
    Ok(manifest)
}

fn image(markdown: &mut String, context: &Context<'_>, alt: &str, png: &Path) {
    let _ = writeln!(markdown, "![{alt}]({})\n", context.report_link(png));
}

fn run_probe_spec(spec: &Spec, context: &Context<'_>) -> Result<Section> {
    let request = parse_probe(spec)?;
    let manifest = manifest_for(
        spec,
        request.options.seed,
        &serde_json::json!({
            "model": request.model, "hessian": request.hessian, "options": request.options,
            "dtype": request.dtype, "device": request.device, "gpu": request.gpu,
            "data": request.data.spec.path, "batch": request.data.batch_rows,
        }),
    )?;
    let run = run_probe(&request, manifest, context.progress)?;
    let tables_dir = context.tables_dir(spec);
    let stem = |name: &str| context.figures_dir.join(format!("{}-{name}", spec.name));
    let outputs = write_probe(
        &run,
        &ProbeOutputs {
            dir: &tables_dir,
            figure_stem: &stem,
            timing: false,
            eigenvectors: false,
        },
    )?;
    let report = &run.report;
    let s = &report.spectrum;
    let mut md = String::new();
    if s.density.is_some() {
        image(
            &mut md,
            context,
            "density",
            &stem("density").with_extension("png"),
        );
    }
    if s.lanczos.is_some() || s.power.is_some() {
        image(
            &mut md,
            context,
            "convergence",
            &stem("convergence").with_extension("png"),
        );
    }
    md.push_str("Reading the numbers:\n\n");
    let _ = writeln!(
        md,
        "- Hessian {} on {} ({} examples, {} sequences); the checkpoint's {}.",
        report.hessian.description,
        report.data.path,
        report.data.examples,
        report.data.sequences,
        report.evaluation.describe()
    );
    if let (Some(l), Some(top)) = (&s.lanczos, s.lambda_max()) {
        let _ = writeln!(
            md,
            "- Lanczos verdict: {}.",
            l.verdict.text("`iters` under `[probe]`")
        );
        let _ = writeln!(
            md,
            "- Lanczos: λmax = {} (relative residual {:.1e}) in {} products in all ({} forming \
             computed residuals, {} probing for missed multiplicities).",
            format_float(top.value),
            top.relative_residual(),
            l.products,
            l.verification_products,
            l.multiplicity_probe_products
        );
        if let Some(bottom) = s.lambda_min() {
            let _ = writeln!(
                md,
                "- λmin = {}: the Hessian is {}; |λmin|/λmax = {}.",
                format_float(bottom.value),
                if bottom.value < 0.0 {
                    "indefinite (a saddle region, as expected away from a minimum)"
                } else {
                    "positive definite on this subspace"
                },
                format_float(bottom.value.abs() / top.value.abs())
            );
        }
        if let Some(p) = &s.power
            && let Some(first) = p.pairs.first()
        {
            let agree = (first.value - top.value).abs() <= 1e-3 * top.value.abs();
            let _ = writeln!(
                md,
                "- Power iteration (the paper's method): {} after {} products ({}); {}.",
                format_float(first.value),
                p.products,
                if first.converged {
                    "residual within the tolerance"
                } else {
                    "NOT CONVERGED: budget exhausted before the tolerance"
                },
                if agree {
                    "it agrees with Lanczos to 0.1%".to_string()
                } else {
                    format!(
                        "{}% away from Lanczos's λmax (power finds the eigenvalue of largest \
                         magnitude, and converges at the rate |λ₂/λ₁| per product)",
                        format_float(100.0 * (first.value / top.value - 1.0))
                    )
                }
            );
        }
    }
    if let Some(t) = &s.trace {
        let _ = writeln!(
            md,
            "- Trace (Hutch++, {} products): {} ± {} (95% interval {} to {}){}.",
            t.estimate.products,
            format_float(t.estimate.estimate),
            format_float(t.estimate.standard_error),
            format_float(t.interval95.0),
            format_float(t.interval95.1),
            match &s.density {
                Some(d) => format!(
                    "; the SLQ quadrature gives {}{}",
                    format_float(d.trace_estimate),
                    match d.quadrature.trace_standard_error(|x| x) {
                        Some(se) => format!(" ± {} (over its probes)", format_float(se)),
                        None => String::new(),
                    }
                ),
                None => String::new(),
            }
        );
    }
    if let Some(d) = &s.density {
        let _ = writeln!(
            md,
            "- Density: {} Rademacher probes x {} Lanczos steps ({} products), Gaussian broadening \
             of width {} in the symmetric-log coordinate (linear within ±{}).",
            d.probes,
            d.steps,
            d.products,
            format_float(d.density.sigma),
            format_float(d.linear_width)
        );
    }
    let _ = writeln!(md, "- {} Hessian-vector products in all.\n", report.hvps);
    let _ = writeln!(md, "{}", ritz_table(s).to_markdown());
    let _ = writeln!(
        md,
        "Tables (Ritz values, density, SLQ nodes, convergence), `summary.json` and `manifest.json`: `{}/`.",
        context.report_link(&tables_dir)
    );
    Ok(Section {
        markdown: md,
        outputs,
    })
}

fn run_landscape_spec(spec: &Spec, context: &Context<'_>) -> Result<Section> {
    let request = parse_landscape(spec)?;
    let manifest = manifest_for(
        spec,
        request.options.seed,
        &serde_json::json!({
            "model": request.model, "hessian": request.hessian, "options": request.options,
            "dtype": request.dtype, "device": request.device, "gpu": request.gpu,
            "data": request.data.spec.path, "batch": request.data.batch_rows,
        }),
    )?;
    let run = run_landscape(&request, manifest, context.progress)?;
    let tables_dir = context.tables_dir(spec);
    let stem = context.figures_dir.join(&spec.name);
    let outputs = write_landscape(&run, &tables_dir, &stem)?;
    let l = &run.landscape;
    let mut md = String::new();
    let two_d = l.betas.len() > 1;
    image(&mut md, context, "landscape", &stem.with_extension("png"));
    if two_d {
        image(
            &mut md,
            context,
            "slices at fixed β",
            &slices_stem(&stem).with_extension("png"),
        );
    }
    md.push_str("Reading the numbers:\n\n");
    let _ = writeln!(
        md,
        "- Hessian {}; loss at the checkpoint {}.",
        l.hessian,
        format_float(l.base_loss)
    );
    if let Some(verdict) = &l.eigenvector_verdict {
        let _ = writeln!(
            md,
            "- Top-eigen directions, Lanczos verdict: {}.",
            verdict.text("`iters` under `[landscape]`")
        );
    }
    for d in &l.directions {
        let _ = writeln!(
            md,
            "- {}: norm {}, slope gᵀd = {}, curvature dᵀHd = {} ({} per unit length).",
            d.label,
            format_float(d.norm),
            format_float(d.slope),
            format_float(d.curvature),
            format_float(d.rayleigh_quotient)
        );
    }
    let n = l.alphas.len();
    let row = l.betas.iter().position(|&b| b == 0.0).unwrap_or(0) * n;
    let worst = (0..n)
        .map(|i| (l.loss[row + i] - l.quadratic[row + i]).abs())
        .fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "- The quadratic model L₀ + α gᵀd + ½ α² dᵀHd stays within 1% of the loss's range up to \
         |α| = {} (of {}); its largest gap on the grid is {}.",
        format_float(l.quadratic_trust_radius(0.01)),
        format_float(l.options.span),
        format_float(worst)
    );
    if two_d {
        let _ = writeln!(
            md,
            "- Over the whole {} x {} grid, the quadratic model (with the cross term d₁ᵀHd₂ = {}) \
             agrees with the loss within 1% of its range at {}% of the points (outlined on the map).",
            l.alphas.len(),
            l.betas.len(),
            format_float(l.cross_curvature.unwrap_or(f64::NAN)),
            format_significant(100.0 * agreement_fraction(&l.agreement_gap(0.01)), 3)
        );
    }
    let _ = writeln!(
        md,
        "- {} loss evaluations (forward sweeps over the dataset) and {} Hessian-vector products.\n",
        l.evaluations, l.hvps
    );
    let _ = writeln!(
        md,
        "Table (α, β, loss, quadratic model), `summary.json` and `manifest.json`: `{}/`.",
        context.report_link(&tables_dir)
    );
    Ok(Section {
        markdown: md,
        outputs,
    })
}

fn run_sweep_spec(spec: &Spec, context: &Context<'_>) -> Result<Section> {
    let sweep = sweep_spec(spec)?;
    // `reproduce` recomputes every cell: the cache lives only for this run.
    let cache = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let result = run_sweep(&sweep, cache.path(), context.progress)?;
    let tables_dir = context.tables_dir(spec);
    let stem = context.figures_dir.join(&spec.name);
    let mut outputs = write_sweep(&result, &tables_dir, &stem)?;
    let mut manifest = manifest_for(spec, sweep.seed, &sweep)?;
    manifest.add_outputs(&outputs);
    manifest.write(&tables_dir)?;
    outputs.push(tables_dir.join("manifest.json"));
    let mut md = String::new();
    image(&mut md, context, "sweep", &stem.with_extension("png"));
    md.push_str(&result.markdown());
    let hvps: u64 = result
        .cells
        .iter()
        .chain(&result.scopes)
        .map(|c| c.hvps)
        .sum();
    let _ = writeln!(
        md,
        "\n{} cells ({} checkpoint(s) x {} ratios x {} seeds, plus one whole-scope reference per \
         checkpoint), {hvps} Hessian-vector products. Per-cell table (`cells`), summary and \
         `manifest.json`: `{}/`.",
        result.cells.len() + result.scopes.len(),
        sweep.checkpoints.len(),
        sweep.ratios.len(),
        sweep.seeds.len(),
        context.report_link(&tables_dir)
    );
    Ok(Section {
        markdown: md,
        outputs,
    })
}
