//! The `theory` kind: one sweep of the linear-regression lab, its tables, the
//! figures the spec lists, and a reading of the numbers for REPORT.md.
//!
//! Parameters: `figures` (default: every figure the sweep's part can draw), a
//! `[sweep]` table (any field of [`SweepSpec`]; omitted fields take the reference
//! simulation's values) and an optional `[reference]` table of numbers to compare
//! with, whose `source` says where they come from (printed with the comparison).

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::json;

use super::{Context, Runner, Section, Spec};
use crate::error::{Error, Result};
use crate::report::Manifest;
use crate::report::table::format_float;
use crate::stats::{Summary, log_log_slope};
use crate::theory::figures::Figure;
use crate::theory::output::{write_figures, write_tables};
use crate::theory::sweep::{ConfigResult, SweepResult, SweepSpec, run_sweep};
use crate::theory::tables;

/// The runner for `kind = "theory"`.
pub const RUNNER: Runner = Runner {
    kind: "theory",
    check: |spec| parse(spec).map(|_| ()),
    run,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    figures: Option<Vec<Figure>>,
    #[serde(default)]
    sweep: SweepSpec,
    reference: Option<Reference>,
}

/// Values to compare with, one entry per ratio in `p`: an earlier run's, a
/// paper's, whatever `source` names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reference {
    /// Where the numbers come from, in words: the report prints it beside them.
    source: String,
    p: Vec<f64>,
    lambda1: Vec<f64>,
    stable_lr: Vec<f64>,
    w_norm: Vec<f64>,
}

fn parse(spec: &Spec) -> Result<Params> {
    let params: Params = spec.parse_params()?;
    let in_spec = |e: Error| Error::file(&spec.path, format!("[sweep] {e}"));
    params.sweep.validate().map_err(in_spec)?;
    for figure in params.figures.iter().flatten() {
        if !figure.available(params.sweep.part) {
            return Err(Error::file(
                &spec.path,
                format!(
                    "figure `{}` needs a sweep part that computes it (part = \"all\" has \
                    every figure)",
                    figure.name()
                ),
            ));
        }
    }
    if let Some(reference) = &params.reference {
        let ratios = params.sweep.ratios.values().map_err(in_spec)?;
        let n = reference.p.len();
        if [
            reference.lambda1.len(),
            reference.stable_lr.len(),
            reference.w_norm.len(),
        ]
        .iter()
        .any(|&len| len != n)
        {
            return Err(Error::file(
                &spec.path,
                "[reference] p, lambda1, stable_lr and w_norm must have the same length",
            ));
        }
        if let Some(p) = reference.p.iter().find(|p| !ratios.contains(p)) {
            return Err(Error::file(
                &spec.path,
                format!("[reference] p = {p} is not a ratio of the sweep"),
            ));
        }
        if !params.sweep.part.has_distance() {
            return Err(Error::file(
                &spec.path,
                "[reference] needs part = \"distance\" or \"all\"",
            ));
        }
    }
    Ok(params)
}

fn run(spec: &Spec, context: &Context<'_>) -> Result<Section> {
    let params = parse(spec)?;
    let result = run_sweep(&params.sweep, context.progress)?;
    let tables_dir = context.tables_dir(spec);
    let mut outputs = write_tables(&result, &tables_dir)?;

    let figures = params
        .figures
        .clone()
        .unwrap_or_else(|| Figure::for_part(params.sweep.part));
    let stem = |figure: Figure| {
        if figures.len() == 1 {
            spec.name.clone()
        } else {
            format!("{}-{}", spec.name, figure.name())
        }
    };
    outputs.extend(write_figures(&result, &figures, context.figures_dir, stem)?);

    let mut manifest = Manifest::new(
        &format!("reproduce {}", spec.name),
        Some(params.sweep.seed),
        &json!({ "kind": spec.kind, "parameters": result.parameters() }),
    )?;
    manifest.add_input("spec", &spec.path)?;
    if let Some(path) = &params.sweep.x {
        manifest.add_input("data", path)?;
    }
    manifest.add_outputs(&outputs);
    manifest.write(&tables_dir)?;
    outputs.push(tables_dir.join("manifest.json"));

    let mut markdown = String::new();
    for &figure in &figures {
        let png = context.figures_dir.join(format!("{}.png", stem(figure)));
        let _ = writeln!(
            markdown,
            "![{}]({})\n",
            figure.name(),
            context.report_link(&png)
        );
        markdown.push_str("Reading the numbers:\n\n");
        for line in reading(figure, &result) {
            let _ = writeln!(markdown, "- {line}");
        }
        markdown.push('\n');
    }
    if let Some(reference) = &params.reference {
        markdown.push_str(&compare_with_reference(&result, reference));
    }
    for (title, table) in tables::terminal_views(&result) {
        let _ = write!(
            markdown,
            "**{}**\n\n{}\n",
            capitalise(title),
            table.to_markdown()
        );
    }
    let _ = writeln!(
        markdown,
        "Full tables (CSV and Parquet, per trial and per p) and `manifest.json`: `{}/`.",
        context.report_link(&tables_dir)
    );
    Ok(Section { markdown, outputs })
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `x` with two significant digits, for standard errors.
fn two_digits(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format_float(x);
    }
    let exponent = x.abs().log10().floor() as i32;
    if (-3..5).contains(&exponent) {
        let decimals = (1 - exponent).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.1e}")
    }
}

fn percent(x: f64) -> String {
    format!("{:+.2}%", 100.0 * x)
}

/// A few sentences that read the figure's numbers, per configuration.
fn reading(figure: Figure, result: &SweepResult) -> Vec<String> {
    let several = result.configs.len() > 1;
    result
        .configs
        .iter()
        .flat_map(|config| {
            let lines = match figure {
                Figure::Spectra => read_spectra(config),
                Figure::Lambda1 => read_lambda1(config),
                Figure::StableLr => read_stable_lr(result, config),
                Figure::Distance => read_distance(config),
                Figure::GdCurves => read_gd_curves(result, config),
            };
            let prefix = if several {
                format!("{}: ", config.label())
            } else {
                String::new()
            };
            lines.into_iter().map(move |l| format!("{prefix}{l}"))
        })
        .collect()
}

fn read_spectra(config: &ConfigResult) -> Vec<String> {
    config
        .cells
        .iter()
        .map(|cell| {
            let mean = cell.mean_spectrum();
            let predicted: Vec<f64> = config
                .full_spectrum
                .iter()
                .map(|l| cell.keep_fraction * l)
                .collect();
            let worst = cell
                .trials
                .iter()
                .map(|t| t.concentration_error)
                .fold(0.0, f64::max);
            let mut bulk: Vec<f64> = mean
                .iter()
                .zip(&predicted)
                .skip(1)
                .map(|(m, p)| (m / p - 1.0).abs())
                .collect();
            bulk.sort_by(f64::total_cmp);
            let median = bulk.get(bulk.len() / 2).copied().unwrap_or(f64::NAN);
            format!(
                "p = {}: mean λ₁ = {} against p·λ₁(XᵀX) = {} ({}); over i ≥ 2 the mean λᵢ \
                sit a median {:.1}% from p·λᵢ(XᵀX); the largest |λᵢ − p·λᵢ(XᵀX)| in any \
                trial is {} = {:.1}% of the bound {}.",
                format_float(cell.p),
                format_float(mean[0]),
                format_float(predicted[0]),
                percent(mean[0] / predicted[0] - 1.0),
                100.0 * median,
                format_float(worst),
                100.0 * worst / config.bound,
                format_float(config.bound),
            )
        })
        .collect()
}

fn read_lambda1(config: &ConfigResult) -> Vec<String> {
    let means: Vec<(f64, Summary)> = config
        .cells
        .iter()
        .map(|c| (c.p, c.summary(|t| t.eigenvalues[0])))
        .collect();
    let slope = log_log_slope(means.iter().map(|(p, s)| (*p, s.mean)));
    let (worst_p, worst) = config
        .cells
        .iter()
        .zip(&means)
        .map(|(c, (p, s))| {
            (
                *p,
                s.mean / (c.keep_fraction * config.full_spectrum[0]) - 1.0,
            )
        })
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap_or((f64::NAN, f64::NAN));
    let trials: Vec<_> = config.cells.iter().flat_map(|c| &c.trials).collect();
    let within = trials
        .iter()
        .filter(|t| t.concentration_error <= config.bound)
        .count();
    let largest = trials
        .iter()
        .map(|t| t.concentration_error)
        .fold(0.0, f64::max);
    let (trace_p, trace_z) = config
        .cells
        .iter()
        .map(|c| {
            let s = c.summary(|t| t.trace);
            let expected = c.keep_fraction * config.frobenius_sq;
            // With p = 1 every mask is the same and the spread is rounding noise.
            let z = if s.std > 1e-9 * expected {
                (s.mean - expected) / s.standard_error()
            } else {
                0.0
            };
            (c.p, z)
        })
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap_or((f64::NAN, f64::NAN));
    vec![
        format!("Fitted slope of log λ₁ against log p: {slope:.4} (p·λ₁(XᵀX) has slope 1)."),
        format!(
            "Largest deviation of mean λ₁ from p·λ₁(XᵀX): {} at p = {}.",
            percent(worst),
            format_float(worst_p)
        ),
        format!(
            "Concentration error within the bound √(8 n r² λ₁(XᵀX) log(2n/δ)) = {} in \
            {within} of {} trials; the largest error, {}, is {:.1}% of it (the bound is \
            loose by design: it holds for every X with entries in [0, r]).",
            format_float(config.bound),
            trials.len(),
            format_float(largest),
            100.0 * largest / config.bound
        ),
        format!(
            "Trace identity E[trace(M XᵀX M)] = p‖X‖²_F: the largest gap between the trial \
            mean and p‖X‖²_F is {trace_z:.2} standard errors (p = {}).",
            format_float(trace_p)
        ),
    ]
}

fn read_stable_lr(result: &SweepResult, config: &ConfigResult) -> Vec<String> {
    let ratios: Vec<(f64, f64)> = config
        .cells
        .iter()
        .flat_map(|c| c.threshold_ratios().into_iter().map(move |r| (c.p, r)))
        .collect();
    let total: usize = config.cells.iter().map(|c| c.trials.len()).sum();
    let by_ratio = |a: &&(f64, f64), b: &&(f64, f64)| a.1.total_cmp(&b.1);
    let none = (f64::NAN, f64::NAN);
    let (min_p, min) = ratios.iter().min_by(by_ratio).copied().unwrap_or(none);
    let (max_p, max) = ratios.iter().max_by(by_ratio).copied().unwrap_or(none);
    let within = config
        .cells
        .iter()
        .flat_map(|c| &c.trials)
        .filter(|t| t.threshold_within(0.01) == Some(true))
        .count();
    let slope = log_log_slope(config.cells.iter().map(|c| {
        (
            c.p,
            c.summary(|t| t.threshold.map_or(f64::NAN, |b| b.estimate()))
                .mean,
        )
    }));
    let runs = Summary::of(
        config
            .cells
            .iter()
            .flat_map(|c| &c.trials)
            .filter_map(|t| t.threshold.map(|b| b.runs as f64)),
    );
    let options = &result.spec.stability;
    vec![
        format!(
            "Measured threshold / (2n/λ₁) over {} trials: from {:.5} (p = {}) to {:.5} (p = \
            {}); {within} of {total} brackets lie within 1% of 2n/λ₁.",
            ratios.len(),
            min,
            format_float(min_p),
            max,
            format_float(max_p)
        ),
        format!(
            "Fitted slope of log(measured threshold) against log p: {slope:.4} (theory: −1, \
            the stable rate grows like 1/p)."
        ),
        format!(
            "Divergence: loss above {:e} × the initial loss (or not finite) within {} \
            steps; bisection to a relative bracket width of {}, {:.1} GD runs per trial on \
            average.",
            options.blowup,
            options.steps,
            format_float(options.tolerance),
            runs.mean
        ),
    ]
}

fn read_distance(config: &ConfigResult) -> Vec<String> {
    let norms: Vec<(f64, f64)> = config
        .cells
        .iter()
        .map(|c| {
            (
                c.p,
                c.summary(|t| t.distance.map_or(f64::NAN, |s| s.norm)).mean,
            )
        })
        .collect();
    let (peak_p, peak) = norms
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((f64::NAN, f64::NAN));
    let largest_p = norms
        .iter()
        .copied()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((f64::NAN, f64::NAN));
    let n = config.n as f64;
    let d = config.d as f64;
    let far: Vec<&crate::theory::sweep::Cell> =
        config.cells.iter().filter(|c| c.p * d >= 4.0 * n).collect();
    let slope = log_log_slope(far.iter().map(|c| {
        (
            c.p,
            c.summary(|t| t.distance.map_or(f64::NAN, |s| s.norm)).mean,
        )
    }));
    let agreement: Vec<f64> = far
        .iter()
        .map(|c| {
            let measured = c
                .summary(|t| t.distance.map_or(f64::NAN, |s| s.norm * s.norm))
                .mean;
            let expected = c
                .summary(|t| t.distance.map_or(f64::NAN, |s| s.expected_sq()))
                .mean;
            measured / expected
        })
        .collect();
    let (lo, hi) = agreement
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
    let bound_holds = config.cells.iter().flat_map(|c| &c.trials).all(|t| {
        t.distance
            .is_none_or(|s| s.lower_bound_sq <= s.expected_sq() * (1.0 + 1e-12))
    });
    let flagged: Vec<String> = config
        .cells
        .iter()
        .filter(|c| config.near_interpolation(c.p))
        .map(|c| format_float(c.p))
        .collect();
    let mut lines = vec![
        format!(
            "‖ŵ‖ is {} at p = {} and peaks at {} at p = {} (p d / n = {}), beside the \
            interpolation threshold p d = n.",
            format_float(largest_p.1),
            format_float(largest_p.0),
            format_float(peak),
            format_float(peak_p),
            format_float(peak_p * d / n)
        ),
        format!(
            "Over p d ≥ 4n ({} ratios) the fitted slope of log ‖ŵ‖ against log p is \
            {slope:.3}; ‖ŵ‖² ∝ 1/p would give −0.5.",
            far.len()
        ),
        format!(
            "Over p d ≥ 4n, mean ‖ŵ‖² / mean E[‖ŵ‖² | M] lies between {lo:.3} and {hi:.3} \
            (1 when the expectation formula holds; each mean carries Monte Carlo error)."
        ),
        format!(
            "The lower bound σ²Σλᵢ/λ₁² stays below E[‖ŵ‖² | M] in every trial: {}.",
            if bound_holds { "yes" } else { "no" }
        ),
    ];
    if !flagged.is_empty() {
        lines.push(format!(
            "Flagged near interpolation (n/2 ≤ p d ≤ 2n), where the distance blows up and \
            its mean is dominated by a few masks: p = {}.",
            flagged.join(", ")
        ));
    }
    lines
}

fn read_gd_curves(result: &SweepResult, config: &ConfigResult) -> Vec<String> {
    let blowup = result.spec.stability.blowup;
    config
        .curves
        .iter()
        .map(|curve| {
            let initial = curve.losses[0];
            let crossed = curve
                .losses
                .iter()
                .position(|l| !l.is_finite() || *l > blowup * initial);
            let last = curve.losses.len() - 1;
            let what = match crossed {
                Some(step) => format!("passes {blowup:e} × its start at step {step}"),
                None => format!(
                    "is {}× its start after {last} steps",
                    format_float(curve.losses[last] / initial)
                ),
            };
            format!(
                "p = {}, η = {}×2n/λ₁ = {}: the loss {what}.",
                format_float(curve.p),
                format_float(curve.factor),
                format_float(curve.eta)
            )
        })
        .collect()
}

fn compare_with_reference(result: &SweepResult, reference: &Reference) -> String {
    let config = &result.configs[0];
    let mut out = format!(
        "**Against the reference values** ({}; ours: seed {}, {} masks per p; ± is the standard error of our mean):\n\n\
         | p | λ₁ reference | λ₁ here | Δ | 2n/λ₁ reference | 2n/λ₁ here | Δ | ‖ŵ‖ reference | ‖ŵ‖ here | Δ |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        reference.source, result.spec.seed, result.spec.trials
    );
    for (i, &p) in reference.p.iter().enumerate() {
        let Some(cell) = config.cells.iter().find(|c| c.p == p) else {
            continue;
        };
        let lambda1 = cell.summary(|t| t.eigenvalues[0]);
        let lr = cell.summary(|t| t.lr_theory);
        let norm = cell.summary(|t| t.distance.map_or(f64::NAN, |s| s.norm));
        let cell_text = |ours: &Summary, theirs: f64| {
            format!(
                "{} | {} ± {} | {}",
                format_float(theirs),
                format_float(ours.mean),
                two_digits(ours.standard_error()),
                percent(ours.mean / theirs - 1.0)
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            format_float(p),
            cell_text(&lambda1, reference.lambda1[i]),
            cell_text(&lr, reference.stable_lr[i]),
            cell_text(&norm, reference.w_norm[i]),
        );
    }
    out.push_str(
        "\nThe reference values are single 20-mask means too: where Δ is a few percent, compare it \
         with the standard errors (at p = 0.01 the kept count k ~ Binomial(d, p) alone moves a \
         20-mask mean of λ₁ by about 3%). Near p d = n the distance's mean is dominated by the \
         few masks with the smallest eigenvalues and is not expected to agree.\n\n",
    );
    out
}
