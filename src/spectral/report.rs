//! The work of `maskscape spectrum`: run one method on one operator and write its
//! summary (JSON), its table (CSV and Parquet), its figure (SVG and PNG) and the run
//! manifest, comparing with the exact eigenvalues whenever they are known.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bounds::theoretical_products;
use super::host::HostSpace;
use super::lanczos::{LanczosOptions, Reorthogonalization, Which, lanczos};
use super::operator::LinearOperator;
use super::power::{PowerOptions, power_iteration};
use super::slq::{Broadening, DensityOptions, DensityScale, SlqOptions, slq, wasserstein1};
use super::trace::{TraceEstimate, exact_trace, hutch_plus_plus, hutchinson};
use super::vector::{Distribution, Precision};
use super::verdict::{LanczosVerdict, trace_text};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::{Axis, Chart, ErrorPoint, Manifest, SeriesData, Table, atomic};

/// The algorithm `spectrum` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Lanczos,
    Power,
    Slq,
    Trace,
}

/// Everything `spectrum` needs besides the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpectrumConfig {
    pub method: Method,
    /// Eigenpairs per end (Lanczos, power).
    pub k: usize,
    pub which: Which,
    /// Products: the limit for Lanczos and power iteration, the Lanczos steps per
    /// probe for SLQ, the budget of each trace estimator.
    pub iters: usize,
    pub tol: f64,
    pub seed: u64,
    pub reorthogonalization: Reorthogonalization,
    /// Basis bound (`0`: the mode's default).
    pub max_basis: usize,
    pub basis_precision: Precision,
    /// SLQ probes.
    pub probes: usize,
    /// Density (and figure) on a symmetric-log axis.
    pub log_density: bool,
    /// Linear region of the symmetric-log axis (default: automatic).
    pub linear_width: Option<f64>,
    /// Gaussian broadening width in the plotting coordinate (default: the rule).
    pub width: Option<f64>,
}

impl Default for SpectrumConfig {
    fn default() -> Self {
        SpectrumConfig {
            method: Method::Lanczos,
            k: 5,
            which: Which::Largest,
            iters: 100,
            tol: 1e-8,
            seed: 0,
            reorthogonalization: Reorthogonalization::Full,
            max_basis: 0,
            basis_precision: Precision::F64,
            probes: 10,
            log_density: false,
            linear_width: None,
            width: None,
        }
    }
}

impl SpectrumConfig {
    /// Checks the configuration against an operator of dimension `dim`, so that a
    /// bad flag is reported before any expensive work.
    pub fn validate(&self, dim: usize) -> Result<()> {
        if self.iters == 0 {
            return Err(Error::arg("--iters", "must be at least 1"));
        }
        match self.method {
            Method::Lanczos | Method::Power => {
                let ends = if self.which == Which::Both { 2 } else { 1 };
                if self.k == 0 || ends * self.k > dim {
                    return Err(Error::arg(
                        "--k",
                        format!(
                            "{} eigenvalues requested, but the operator has dimension {dim}",
                            ends * self.k
                        ),
                    ));
                }
                let none = self.reorthogonalization == Reorthogonalization::None;
                if !(self.tol < 1.0 && (self.tol > 0.0 || (none && self.tol == 0.0))) {
                    return Err(Error::arg("--tol", "must lie in (0, 1)"));
                }
                if self.method == Method::Power && self.which != Which::Largest {
                    return Err(Error::arg(
                        "--which",
                        "power iteration finds the eigenvalues of largest magnitude; use --method lanczos for smallest or both",
                    ));
                }
            }
            Method::Slq => {
                if self.probes == 0 {
                    return Err(Error::arg("--probes", "must be at least 1"));
                }
            }
            Method::Trace => {
                if self.iters < 4 {
                    return Err(Error::arg(
                        "--iters",
                        "the trace estimators need at least 4 products",
                    ));
                }
            }
        }
        for (flag, value) in [
            ("--width", self.width),
            ("--linear-width", self.linear_width),
        ] {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(Error::arg(flag, "must be positive"));
            }
        }
        Ok(())
    }
}

/// What `spectrum` reports back to the terminal.
pub struct SpectrumOutcome {
    /// The main table (also written to disk).
    pub table: Table,
    /// One line: method, products, headline numbers.
    pub headline: String,
    /// Files written.
    pub outputs: Vec<PathBuf>,
}

/// Runs `config.method` on `op` and writes `summary.json`, the table, the figure
/// and `manifest.json` into `out`. `exact` holds the operator's eigenvalues when
/// known (any order); `source` describes the operator for the summary.
pub fn run_spectrum<P: Progress + ?Sized>(
    op: &dyn LinearOperator,
    exact: Option<&[f64]>,
    source: Value,
    config: &SpectrumConfig,
    out: &Path,
    mut manifest: Manifest,
    progress: &P,
) -> Result<SpectrumOutcome> {
    config.validate(op.dim())?;
    let exact: Option<Vec<f64>> = exact.map(|e| {
        let mut sorted = e.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
    });
    let run = match config.method {
        Method::Lanczos => run_lanczos(op, exact.as_deref(), config, progress)?,
        Method::Power => run_power(op, exact.as_deref(), config, progress)?,
        Method::Slq => run_slq(op, exact.as_deref(), config, progress)?,
        Method::Trace => run_trace(op, config, progress)?,
    };
    let mut outputs = run.table.write_both(&out.join(run.table_name))?;
    for (name, table) in &run.extra_tables {
        outputs.extend(table.write_both(&out.join(name))?);
    }
    outputs.extend(run.chart.save(&out.join("spectrum"))?);
    let summary = json!({
        "method": config.method,
        "operator": op.name(),
        "dimension": op.dim(),
        "source": source,
        "config": config,
        "exact_eigenvalues_known": exact.is_some(),
        "result": run.summary,
    });
    let summary_path = out.join("summary.json");
    atomic::write_json(&summary_path, &summary)?;
    outputs.push(summary_path);
    manifest.add_outputs(&outputs);
    manifest.write(out)?;
    outputs.push(out.join("manifest.json"));
    Ok(SpectrumOutcome {
        table: run.table,
        headline: run.headline,
        outputs,
    })
}

/// One method's results, ready to be written.
struct MethodRun {
    table: Table,
    table_name: &'static str,
    extra_tables: Vec<(&'static str, Table)>,
    chart: Chart,
    summary: Value,
    headline: String,
}

/// The exact eigenvalues (ascending input) in the order Lanczos reports its
/// wanted values.
pub fn exact_counterparts(ascending: &[f64], k: usize, which: Which) -> Vec<f64> {
    let n = ascending.len();
    let k = k.min(n);
    let top = ascending[n - k..].iter().rev().copied();
    let bottom = ascending[..k].iter().copied();
    match which {
        Which::Largest => top.collect(),
        Which::Smallest => bottom.collect(),
        Which::Both => top.chain(bottom.rev()).collect(),
    }
}

/// `|v - e| / |e|`, or relative to the spectral norm `norm` when `e` is zero (the
/// masked Hessian has exact zero eigenvalues).
fn relative_error(v: f64, e: f64, norm: f64) -> f64 {
    let scale = if e != 0.0 { e.abs() } else { norm };
    (v - e).abs() / scale
}

fn eigen_table(
    values: &[f64],
    residuals: &[f64],
    (residual_converged, converged): (&[bool], &[bool]),
    exact: Option<&[f64]>,
    norm: f64,
) -> Table {
    let mut table = Table::new()
        .with_i64("rank", (1..=values.len() as i64).collect())
        .with_f64("eigenvalue", values.to_vec())
        .with_f64("residual", residuals.to_vec())
        .with_bool("residual_converged", residual_converged.to_vec())
        .with_bool("converged", converged.to_vec());
    if let Some(exact) = exact {
        let abs: Vec<f64> = values
            .iter()
            .zip(exact)
            .map(|(v, e)| (v - e).abs())
            .collect();
        let rel = values
            .iter()
            .zip(exact)
            .map(|(v, e)| relative_error(*v, *e, norm))
            .collect();
        table = table
            .with_f64("exact", exact[..values.len()].to_vec())
            .with_f64("abs_error", abs)
            .with_f64("rel_error", rel);
    }
    table
}

fn max_relative_error(values: &[f64], exact: &[f64], norm: f64) -> f64 {
    values
        .iter()
        .zip(exact)
        .map(|(v, e)| relative_error(*v, *e, norm))
        .fold(0.0, f64::max)
}

/// `max |λ|` of a spectrum (the spectral norm of a symmetric matrix).
fn spectral_norm(exact: Option<&[f64]>) -> f64 {
    exact.map_or(1.0, |e| {
        e.iter()
            .fold(0.0f64, |a, v| a.max(v.abs()))
            .max(f64::MIN_POSITIVE)
    })
}

fn run_lanczos<P: Progress + ?Sized>(
    op: &dyn LinearOperator,
    exact: Option<&[f64]>,
    config: &SpectrumConfig,
    progress: &P,
) -> Result<MethodRun> {
    let options = LanczosOptions {
        k: config.k,
        which: config.which,
        tol: config.tol,
        max_products: config.iters,
        reorthogonalization: config.reorthogonalization,
        max_basis: config.max_basis,
        basis_precision: config.basis_precision,
        ritz_vectors: false,
        verify_multiplicity: true,
        measure_orthogonality: true,
        seed: config.seed,
    };
    let r = lanczos(op, &HostSpace::new(op.dim()), &options, progress)?;
    let counterparts = exact.map(|e| exact_counterparts(e, config.k, config.which));
    let norm = spectral_norm(exact);
    let table = eigen_table(
        &r.eigenvalues,
        &r.residuals,
        (&r.residual_converged, &r.converged),
        counterparts.as_deref(),
        norm,
    );
    let verdict = LanczosVerdict::of(&r);
    let theory = exact.map(|e| theoretical_products(e, config.k, config.which, config.tol));
    let error = counterparts
        .as_deref()
        .map(|c| max_relative_error(&r.eigenvalues, c, norm));
    let summary = json!({
        "eigenvalues": r.eigenvalues,
        "residuals": r.residuals,
        "residuals_computed": r.residuals_computed,
        "residual_converged": r.residual_converged,
        "converged": r.converged,
        "multiplicities_verified": r.multiplicities_verified,
        "verdict": verdict,
        "products": r.products,
        "verification_products": r.verification_products,
        "probe_products": r.probe_products,
        "probes": r.probes,
        "probes_that_found_eigenvalues": r.probes_successful,
        "restarts": r.restarts,
        "reorthogonalizations": r.reorthogonalizations,
        "peak_stored_vectors": r.peak_stored_vectors,
        "orthogonality_loss": r.orthogonality_loss,
        "ritz_orthogonality_loss": r.ritz_orthogonality_loss,
        "estimated_orthogonality": r.estimated_orthogonality,
        "ghosts": r.ghosts,
        "exact": counterparts,
        "max_relative_error": error,
        "theoretical_products_saad_bound": theory,
    });
    let mut headline = format!("lanczos, {} products", r.products);
    if let (Some(e), Some(t)) = (error, theory) {
        headline.push_str(&format!(
            " (max rel. error {e:.2e}, Saad bound {t} products)"
        ));
    }
    headline.push_str(&format!(": {}", verdict.text("--iters")));
    let chart = eigenvalue_chart("Lanczos Ritz values", &r.eigenvalues, exact, config);
    Ok(MethodRun {
        table,
        table_name: "ritz",
        extra_tables: Vec::new(),
        chart,
        summary,
        headline,
    })
}

fn run_power<P: Progress + ?Sized>(
    op: &dyn LinearOperator,
    exact: Option<&[f64]>,
    config: &SpectrumConfig,
    progress: &P,
) -> Result<MethodRun> {
    if config.which != Which::Largest {
        return Err(Error::arg(
            "--which",
            "power iteration finds the eigenvalues of largest magnitude; use --method lanczos for smallest or both",
        ));
    }
    let options = PowerOptions {
        k: config.k,
        tol: config.tol,
        max_products: config.iters,
        vectors: false,
        seed: config.seed,
    };
    let r = power_iteration(op, &HostSpace::new(op.dim()), &options, progress)?;
    let counterparts = exact.map(|e| {
        let mut by_magnitude = e.to_vec();
        by_magnitude.sort_by(|a, b| b.abs().total_cmp(&a.abs()));
        by_magnitude.truncate(r.eigenvalues.len());
        by_magnitude
    });
    let norm = spectral_norm(exact);
    let table = eigen_table(
        &r.eigenvalues,
        &r.residuals,
        (&r.converged, &r.converged),
        counterparts.as_deref(),
        norm,
    )
    .with_i64(
        "products",
        r.products_per_eigenpair.iter().map(|&p| p as i64).collect(),
    );
    let error = counterparts
        .as_deref()
        .map(|c| max_relative_error(&r.eigenvalues, c, norm));
    let summary = json!({
        "eigenvalues": r.eigenvalues,
        "residuals": r.residuals,
        "converged": r.converged,
        "products": r.products,
        "products_per_eigenpair": r.products_per_eigenpair,
        "exact": counterparts,
        "max_relative_error": error,
    });
    let missing = r.converged.iter().filter(|&&c| !c).count();
    let verdict = if missing == 0 {
        "every residual within the tolerance".to_string()
    } else {
        format!(
            "NOT CONVERGED: {missing} of {} residuals above the tolerance (budget exhausted); \
             raise --iters",
            r.eigenvalues.len()
        )
    };
    let mut headline = format!("power, {} products", r.products);
    if let Some(e) = error {
        headline.push_str(&format!(" (max rel. error {e:.2e})"));
    }
    headline.push_str(&format!(": {verdict}"));
    let chart = eigenvalue_chart("Power iteration", &r.eigenvalues, exact, config);
    Ok(MethodRun {
        table,
        table_name: "ritz",
        extra_tables: Vec::new(),
        chart,
        summary,
        headline,
    })
}

fn run_slq<P: Progress + ?Sized>(
    op: &dyn LinearOperator,
    exact: Option<&[f64]>,
    config: &SpectrumConfig,
    progress: &P,
) -> Result<MethodRun> {
    let options = SlqOptions {
        probes: config.probes,
        steps: config.iters,
        distribution: Distribution::Rademacher,
        reorthogonalize: config.reorthogonalization != Reorthogonalization::None,
        batch: 0,
        seed: config.seed,
    };
    let r = slq(op, &HostSpace::new(op.dim()), &options, progress)?;
    let (nodes, weights) = r.measure();
    let scale = density_scale(config, &nodes)?;
    let density = r.density(&DensityOptions {
        points: 512,
        scale,
        broadening: match config.width {
            Some(w) => Broadening::Width(w),
            None => Broadening::Auto,
        },
        range: None,
    })?;
    let (lo, hi) = r.node_range();
    let width = (hi - lo).max(f64::MIN_POSITIVE);
    let distances = exact.map(|e| {
        let ones = vec![1.0; e.len()];
        let (dx, dw) = density.as_measure();
        json!({
            "density_to_exact": wasserstein1((&dx, &dw), (e, &ones)) / width,
            "nodes_to_exact": wasserstein1((&nodes, &weights), (e, &ones)) / width,
        })
    });
    let mut probe_column = Vec::new();
    for (p, n) in r.nodes.iter().enumerate() {
        probe_column.extend(std::iter::repeat_n(p as i64, n.len()));
    }
    let node_table = Table::new()
        .with_i64("probe", probe_column)
        .with_f64("node", r.nodes.iter().flatten().copied().collect())
        .with_f64("weight", r.weights.iter().flatten().copied().collect());
    let table = Table::new()
        .with_f64("x", density.x.clone())
        .with_f64("u", density.u.clone())
        .with_f64("density", density.density.clone());
    let trace = r.trace_of(|t| t);
    let trace_se = r.trace_standard_error(|t| t);
    let summary = json!({
        "products": r.products,
        "probes": r.nodes.len(),
        "steps": r.steps,
        "node_range": [lo, hi],
        "density_scale": scale,
        "sigma": density.sigma,
        "trace_estimate": trace,
        "trace_standard_error": trace_se,
        "exact_trace": exact.map(|e| e.iter().sum::<f64>()),
        "wasserstein1_over_width": distances,
    });
    let mut headline = format!(
        "slq: {} probes x {} steps = {} products, node range [{lo:.4e}, {hi:.4e}], sigma {:.3e}",
        r.nodes.len(),
        r.steps,
        r.products,
        density.sigma
    );
    if let Some(d) = &distances {
        headline.push_str(&format!(
            ", W1/width to exact {:.4}",
            d["density_to_exact"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    headline.push_str(&match trace_se {
        Some(se) => {
            format!("; quadrature trace {trace:.6e} ± {se:.2e} (standard error over the probes)")
        }
        None => format!("; quadrature trace {trace:.6e} (one probe: no error estimate)"),
    });
    let mut chart = Chart::new(
        "Spectral density (SLQ)",
        x_axis(scale),
        Axis::linear(density_label(scale)),
    );
    chart.add(
        Some("SLQ"),
        0,
        SeriesData::Line(
            density
                .x
                .iter()
                .copied()
                .zip(density.density.iter().copied())
                .collect(),
        ),
    );
    if let Some(e) = exact {
        let (a, b) = (density.u[0], density.u[density.u.len() - 1]);
        chart
            .add(
                Some("exact eigenvalues"),
                1,
                SeriesData::Line(histogram(e, scale, 100, (a, b))),
            )
            .dashed();
    }
    Ok(MethodRun {
        table,
        table_name: "density",
        extra_tables: vec![("nodes", node_table)],
        chart,
        summary,
        headline,
    })
}

fn run_trace<P: Progress + ?Sized>(
    op: &dyn LinearOperator,
    config: &SpectrumConfig,
    progress: &P,
) -> Result<MethodRun> {
    let space = HostSpace::new(op.dim());
    let estimates: Vec<TraceEstimate> = vec![
        hutchinson(
            op,
            &space,
            config.iters,
            Distribution::Rademacher,
            config.seed,
            progress,
        )?,
        hutch_plus_plus(
            op,
            &space,
            config.iters,
            Distribution::Rademacher,
            config.seed,
            progress,
        )?,
    ];
    let exact = exact_trace(op);
    let intervals: Vec<(f64, f64)> = estimates.iter().map(|e| e.interval(0.95)).collect();
    let table = Table::new()
        .with_str(
            "method",
            estimates.iter().map(|e| e.method.clone()).collect(),
        )
        .with_f64("estimate", estimates.iter().map(|e| e.estimate).collect())
        .with_f64(
            "standard_error",
            estimates.iter().map(|e| e.standard_error).collect(),
        )
        .with_f64("ci95_low", intervals.iter().map(|i| i.0).collect())
        .with_f64("ci95_high", intervals.iter().map(|i| i.1).collect())
        .with_i64(
            "products",
            estimates.iter().map(|e| e.products as i64).collect(),
        )
        .with_f64("exact", vec![exact.unwrap_or(f64::NAN); estimates.len()]);
    let summary = json!({ "estimates": estimates, "exact_trace": exact });
    let mut headline = format!(
        "trace ({} products each): hutchinson {}; hutch++ {}",
        config.iters,
        trace_text(&estimates[0], "--iters"),
        trace_text(&estimates[1], "--iters"),
    );
    if let Some(t) = exact {
        headline.push_str(&format!(", exact {t:.6e}"));
    }
    let mut chart = Chart::new(
        "Trace estimates (95% intervals)",
        Axis::linear("estimator (0 = Hutchinson, 1 = Hutch++)").with_range(-0.5, 1.5),
        Axis::linear("trace"),
    );
    for (i, (e, (lo, hi))) in estimates.iter().zip(&intervals).enumerate() {
        let point = ErrorPoint {
            x: i as f64,
            y: e.estimate,
            lo: *lo,
            hi: *hi,
        };
        chart.add(Some(&e.method), i, SeriesData::ErrorBars(vec![point]));
    }
    if let Some(t) = exact {
        chart
            .add(
                Some("exact"),
                3,
                SeriesData::Line(vec![(-0.5, t), (1.5, t)]),
            )
            .dashed();
    }
    Ok(MethodRun {
        table,
        table_name: "trace",
        extra_tables: Vec::new(),
        chart,
        summary,
        headline,
    })
}

/// The coordinate for densities and figures: symmetric-log when asked, or when
/// the values span more than three decades around a bulk (outliers far above the
/// median magnitude), linear otherwise.
fn density_scale(config: &SpectrumConfig, values: &[f64]) -> Result<DensityScale> {
    let mut magnitudes: Vec<f64> = values
        .iter()
        .map(|v| v.abs())
        .filter(|v| *v > 0.0)
        .collect();
    magnitudes.sort_by(f64::total_cmp);
    let largest = magnitudes.last().copied().unwrap_or(1.0);
    let median = magnitudes
        .get(magnitudes.len() / 2)
        .copied()
        .unwrap_or(largest);
    let automatic = largest > 1e3 * median;
    if !(config.log_density || automatic) {
        return Ok(DensityScale::Linear);
    }
    let linear_width = match config.linear_width {
        Some(w) if w > 0.0 && w.is_finite() => w,
        Some(_) => return Err(Error::arg("--linear-width", "must be positive")),
        None => (1e-3 * largest).max(median).max(f64::MIN_POSITIVE),
    };
    Ok(DensityScale::SymLog { linear_width })
}

fn x_axis(scale: DensityScale) -> Axis {
    match scale {
        DensityScale::Linear => Axis::linear("eigenvalue"),
        DensityScale::SymLog { linear_width } => Axis::symlog("eigenvalue", linear_width),
    }
}

fn density_label(scale: DensityScale) -> &'static str {
    match scale {
        DensityScale::Linear => "density",
        DensityScale::SymLog { .. } => "density per unit symlog(eigenvalue)",
    }
}

/// A histogram of `values` with `bins` bins uniform in the plotting coordinate over
/// `(lo, hi)` (plotting units), as a step outline of the density per unit of that
/// coordinate.
fn histogram(
    values: &[f64],
    scale: DensityScale,
    bins: usize,
    (lo, hi): (f64, f64),
) -> Vec<(f64, f64)> {
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in values {
        let u = scale.forward(v);
        let bin = ((u - lo) / width).floor();
        if bin >= 0.0 && (bin as usize) < bins {
            counts[bin as usize] += 1;
        }
    }
    let total = values.len().max(1) as f64;
    let mut points = Vec::with_capacity(2 * bins);
    for (b, &c) in counts.iter().enumerate() {
        let height = c as f64 / (total * width);
        points.push((scale.inverse(lo + width * b as f64), height));
        points.push((scale.inverse(lo + width * (b + 1) as f64), height));
    }
    points
}

/// Computed eigenvalues as vertical lines over the exact spectrum's histogram.
fn eigenvalue_chart(
    title: &str,
    computed: &[f64],
    exact: Option<&[f64]>,
    config: &SpectrumConfig,
) -> Chart {
    let all: Vec<f64> = computed
        .iter()
        .chain(exact.unwrap_or(&[]))
        .copied()
        .collect();
    let scale = density_scale(config, &all).unwrap_or(DensityScale::Linear);
    let mut chart = Chart::new(title, x_axis(scale), Axis::linear(density_label(scale)));
    if let Some(e) = exact {
        let (lo, hi) = all
            .iter()
            .map(|&v| scale.forward(v))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), u| {
                (a.min(u), b.max(u))
            });
        let pad = 0.02 * (hi - lo).max(1e-12);
        chart.add(
            Some("exact eigenvalues"),
            1,
            SeriesData::Line(histogram(e, scale, 100, (lo - pad, hi + pad))),
        );
    } else {
        chart.y = Axis::linear("").with_range(0.0, 1.0);
    }
    chart
        .add(
            Some("computed"),
            0,
            SeriesData::VerticalLines(computed.to_vec()),
        )
        .dashed();
    chart
}
