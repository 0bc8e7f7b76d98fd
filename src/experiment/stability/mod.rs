//! The `gd_stability` kind: the divergence threshold of full-batch gradient descent
//! in a network against `2 / lambda_max` at theta_0 (Prop. 5.2), per trainable
//! ratio, and the sharpness along GD runs against `2 / lr` (the edge of
//! stability). It runs [`crate::train::stability`] and writes the figures, the
//! tables and a reading of the numbers; `maskscape sweep` runs the same spec with
//! its cells kept, in shards, and reports from what is on disk.
//!
//! ```toml
//! kind = "gd_stability"
//! title = "..."
//! [stability]
//! model = "bundled/opt-bundled"
//! data = "bundled/sst2-mini/train.jsonl"
//! task = "sst2"
//! examples = 16
//! ratios = [0.1, 0.01, 0.001]
//! [stability.edge]
//! ratio = 0.01
//! factors = [0.5, 1.5, 4.0]
//! steps = 60
//! sharpness_every = 4
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Context, Runner, Section, Spec};
use crate::error::{Error, Result};
use crate::probe::inputs::ModelIdentity;
use crate::report::table::{format_float, format_significant};
use crate::report::{Manifest, Table};
use crate::shard::Shard;
use crate::stats::log_log_slope;
use crate::train::bisect::RunOutcome;
use crate::train::stability::{
    EdgeRecord, SharpnessPoint, StabilityResult, StabilitySpec, ThresholdRecord, run_stability,
};

mod figures;

use figures::{edge_figure, threshold_figure};

/// The `kind` value of these specs.
pub const KIND: &str = "gd_stability";

/// The runner for `kind = "gd_stability"`.
pub const RUNNER: Runner = Runner {
    kind: KIND,
    check: |spec| stability_spec(spec).map(|_| ()),
    run: run_stability_spec,
};

/// The `[stability]` table of a spec, validated; errors name the file and the key.
pub fn stability_spec(spec: &Spec) -> Result<StabilitySpec> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        stability: StabilitySpec,
    }
    let params: Params = spec.parse_params()?;
    params
        .stability
        .validate()
        .map_err(|e| Error::file(&spec.path, format!("[stability] {e}")))?;
    Ok(params.stability)
}

fn run_stability_spec(spec: &Spec, context: &Context<'_>) -> Result<Section> {
    let stability = stability_spec(spec)?;
    // `reproduce` recomputes every cell: the cell folder lives only for this run.
    let cells = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let result = run_stability(&stability, cells.path(), Shard::WHOLE, context.progress)?;
    let tables_dir = context.tables_dir(spec);
    let stem = context.figures_dir.join(&spec.name);
    let mut outputs = write_stability(&result, &stability, &tables_dir, &stem)?;
    let mut manifest = Manifest::new(
        &format!("reproduce {}", spec.name),
        Some(stability.seed),
        &serde_json::json!({ "kind": spec.kind, "parameters": stability }),
    )?;
    manifest.add_input("spec", &spec.path)?;
    for (file, _, _) in ModelIdentity::of(&stability.model, None)?.files {
        manifest.add_input("model", &file)?;
    }
    manifest.add_input("data", &stability.data)?;
    manifest.add_outputs(&outputs);
    manifest.write(&tables_dir)?;
    outputs.push(tables_dir.join("manifest.json"));
    let mut md = String::new();
    for png in figure_files(&result, &stem) {
        let _ = writeln!(md, "![gd stability]({})\n", context.report_link(&png));
    }
    md.push_str(&markdown(&result, &stability));
    let _ = writeln!(
        md,
        "\nTables (`thresholds`, `runs`, `edge_losses`, `edge_sharpness`) and `manifest.json`: \
         `{}/`.",
        context.report_link(&tables_dir)
    );
    Ok(Section {
        markdown: md,
        outputs,
    })
}

/// The PNGs [`write_stability`] draws for `result` at `stem`.
pub fn figure_files(result: &StabilityResult, stem: &Path) -> Vec<PathBuf> {
    let mut files = vec![stem.with_extension("png")];
    if !result.edges.is_empty() {
        files.push(edge_stem(stem).with_extension("png"));
    }
    files
}

fn edge_stem(stem: &Path) -> PathBuf {
    let name = stem.file_name().map(|n| n.to_string_lossy().into_owned());
    stem.with_file_name(format!("{}-edge", name.unwrap_or_default()))
}

/// Writes the tables under `tables_dir` and the figures at `stem` (`stem.png`, and
/// `stem-edge.png` when there are edge runs); returns the files.
pub fn write_stability(
    result: &StabilityResult,
    spec: &StabilitySpec,
    tables_dir: &Path,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = thresholds_table(result, spec).write_both(&tables_dir.join("thresholds"))?;
    written.extend(runs_table(result).write_both(&tables_dir.join("runs"))?);
    if !result.edges.is_empty() {
        let (losses, sharpness) = edge_tables(&result.edges);
        written.extend(losses.write_both(&tables_dir.join("edge_losses"))?);
        written.extend(sharpness.write_both(&tables_dir.join("edge_sharpness"))?);
    }
    written.extend(threshold_figure(result, spec, stem)?);
    if !result.edges.is_empty() {
        written.extend(edge_figure(&result.edges, &edge_stem(stem))?);
    }
    Ok(written)
}

/// The threshold cells in grid order (ratio, then seed).
fn sorted(result: &StabilityResult) -> Vec<&ThresholdRecord> {
    let mut cells: Vec<&ThresholdRecord> = result.thresholds.iter().collect();
    cells.sort_by(|a, b| b.ratio.total_cmp(&a.ratio).then(a.seed.cmp(&b.seed)));
    cells
}

/// Every (cell, level) pair, cells in grid order.
fn levels(result: &StabilityResult) -> Vec<(&ThresholdRecord, usize)> {
    sorted(result)
        .into_iter()
        .flat_map(|c| (0..c.thresholds.len()).map(move |l| (c, l)))
        .collect()
}

fn thresholds_table(result: &StabilityResult, spec: &StabilitySpec) -> Table {
    let rows = levels(result);
    let f = |get: &dyn Fn(&ThresholdRecord, usize) -> f64| {
        rows.iter().map(|&(c, l)| get(c, l)).collect()
    };
    let nan = f64::NAN;
    Table::new()
        .with_f64("ratio", f(&|c, _| c.ratio))
        .with_i64("seed", rows.iter().map(|(c, _)| c.seed as i64).collect())
        .with_f64("keep_probability", f(&|c, _| c.keep_probability))
        .with_i64("k", rows.iter().map(|(c, _)| c.dim as i64).collect())
        .with_f64("loss0", f(&|c, _| c.loss0))
        .with_f64("lambda_max", f(&|c, _| c.lambda_max.value))
        .with_f64("lambda_residual", f(&|c, _| c.lambda_max.residual))
        .with_bool(
            "lambda_converged",
            rows.iter().map(|(c, _)| c.lambda_max.converged).collect(),
        )
        .with_f64("predicted", f(&|c, _| c.predicted))
        .with_f64(
            "blowup",
            f(&|_, l| spec.blowup.get(l).copied().unwrap_or(nan)),
        )
        .with_f64("stable", f(&|c, l| c.thresholds[l].stable.unwrap_or(nan)))
        .with_f64(
            "diverged",
            f(&|c, l| c.thresholds[l].diverged.unwrap_or(nan)),
        )
        .with_f64(
            "measured",
            f(&|c, l| c.thresholds[l].estimate().unwrap_or(nan)),
        )
        .with_f64(
            "measured_over_predicted",
            f(&|c, l| c.ratio_to_predicted(l).unwrap_or(nan)),
        )
        .with_i64(
            "runs",
            rows.iter()
                .map(|(c, l)| c.thresholds[*l].runs.len() as i64)
                .collect(),
        )
}

/// Every distinct GD run of each cell (the levels share runs at the rates they
/// both tried), by rate.
fn distinct_runs(cell: &ThresholdRecord) -> Vec<&RunOutcome> {
    let mut runs: Vec<&RunOutcome> = cell.thresholds.iter().flat_map(|t| &t.runs).collect();
    runs.sort_by(|a, b| a.lr.total_cmp(&b.lr));
    runs.dedup_by(|a, b| a.lr == b.lr);
    runs
}

fn runs_table(result: &StabilityResult) -> Table {
    let rows: Vec<(&ThresholdRecord, &RunOutcome)> = sorted(result)
        .into_iter()
        .flat_map(|c| distinct_runs(c).into_iter().map(move |r| (c, r)))
        .collect();
    let nan = f64::NAN;
    Table::new()
        .with_f64("ratio", rows.iter().map(|(c, _)| c.ratio).collect())
        .with_i64("seed", rows.iter().map(|(c, _)| c.seed as i64).collect())
        .with_f64("lr", rows.iter().map(|(_, r)| r.lr).collect())
        .with_f64(
            "lr_over_predicted",
            rows.iter().map(|(c, r)| r.lr / c.predicted).collect(),
        )
        .with_f64(
            "peak_loss_ratio",
            rows.iter()
                .map(|(_, r)| r.peak_ratio.unwrap_or(nan))
                .collect(),
        )
        .with_f64(
            "final_loss_ratio",
            rows.iter()
                .map(|(_, r)| r.final_ratio.unwrap_or(nan))
                .collect(),
        )
}

fn edge_tables(edges: &[EdgeRecord]) -> (Table, Table) {
    let losses: Vec<(&EdgeRecord, usize, f64)> = edges
        .iter()
        .flat_map(|e| e.losses.iter().enumerate().map(move |(s, &l)| (e, s, l)))
        .collect();
    let points: Vec<(&EdgeRecord, &SharpnessPoint)> = edges
        .iter()
        .flat_map(|e| e.sharpness.iter().map(move |p| (e, p)))
        .collect();
    (
        Table::new()
            .with_f64("factor", losses.iter().map(|(e, _, _)| e.factor).collect())
            .with_f64("lr", losses.iter().map(|(e, _, _)| e.lr).collect())
            .with_i64("step", losses.iter().map(|(_, s, _)| *s as i64).collect())
            .with_f64("loss", losses.iter().map(|(_, _, l)| *l).collect()),
        Table::new()
            .with_f64("factor", points.iter().map(|(e, _)| e.factor).collect())
            .with_f64("lr", points.iter().map(|(e, _)| e.lr).collect())
            .with_f64(
                "two_over_lr",
                points.iter().map(|(e, _)| 2.0 / e.lr).collect(),
            )
            .with_i64("step", points.iter().map(|(_, p)| p.step as i64).collect())
            .with_f64(
                "lambda_max",
                points.iter().map(|(_, p)| p.lambda_max).collect(),
            )
            .with_f64("residual", points.iter().map(|(_, p)| p.residual).collect())
            .with_bool(
                "converged",
                points.iter().map(|(_, p)| p.converged).collect(),
            ),
    )
}

/// One ratio at one divergence level, over the mask seeds.
struct RatioRow {
    ratio: f64,
    keep_probability: f64,
    /// Mean over seeds of 2/lambda_max(theta_0).
    predicted: f64,
    /// Over the seeds whose bracket closed: the mean estimate, the lowest stable
    /// and highest diverged rates, and measured/predicted's range.
    measured: f64,
    lo: f64,
    hi: f64,
    factor_lo: f64,
    factor_hi: f64,
    /// Cells whose bracket stayed open (no divergence up to `max_factor`), and
    /// the largest rate they ran stably.
    open: usize,
    open_stable: f64,
    seeds: usize,
}

fn min_max(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
        (l.min(x), h.max(x))
    })
}

/// The rows of divergence level `level`, by decreasing ratio.
fn ratio_rows(result: &StabilityResult, level: usize) -> Vec<RatioRow> {
    let cells = sorted(result);
    let mut ratios: Vec<f64> = cells.iter().map(|c| c.ratio).collect();
    ratios.dedup();
    ratios
        .into_iter()
        .map(|ratio| {
            let here: Vec<&ThresholdRecord> =
                cells.iter().copied().filter(|c| c.ratio == ratio).collect();
            let closed: Vec<&ThresholdRecord> = here
                .iter()
                .copied()
                .filter(|c| c.thresholds[level].estimate().is_some())
                .collect();
            let estimates: Vec<f64> = closed
                .iter()
                .filter_map(|c| c.thresholds[level].estimate())
                .collect();
            // NaN, not infinities, where no bracket closed: a table shows "NaN".
            let (factor_lo, factor_hi, lo, hi) = if closed.is_empty() {
                (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
            } else {
                let (f_lo, f_hi) =
                    min_max(closed.iter().filter_map(|c| c.ratio_to_predicted(level)));
                let lo = min_max(closed.iter().filter_map(|c| c.thresholds[level].stable)).0;
                let hi = min_max(closed.iter().filter_map(|c| c.thresholds[level].diverged)).1;
                (f_lo, f_hi, lo, hi)
            };
            RatioRow {
                ratio,
                keep_probability: here[0].keep_probability,
                predicted: here.iter().map(|c| c.predicted).sum::<f64>() / here.len() as f64,
                measured: estimates.iter().sum::<f64>() / estimates.len() as f64,
                lo,
                hi,
                factor_lo,
                factor_hi,
                open: here.len() - closed.len(),
                open_stable: min_max(
                    here.iter()
                        .filter(|c| c.thresholds[level].diverged.is_none())
                        .filter_map(|c| c.thresholds[level].stable),
                )
                .1,
                seeds: here.len(),
            }
        })
        .collect()
}

/// The reading of the numbers, for REPORT.md and `report.md`.
pub fn markdown(result: &StabilityResult, spec: &StabilitySpec) -> String {
    let mut md = String::from("Reading the numbers:\n\n");
    for line in reading(result, spec) {
        let _ = writeln!(md, "- {line}");
    }
    let rows: Vec<(f64, RatioRow)> = spec
        .blowup
        .iter()
        .enumerate()
        .flat_map(|(level, &b)| ratio_rows(result, level).into_iter().map(move |r| (b, r)))
        .collect();
    if !rows.is_empty() {
        md.push('\n');
        let table = Table::new()
            .with_f64("ratio", rows.iter().map(|(_, r)| r.ratio).collect())
            .with_i64("seeds", rows.iter().map(|(_, r)| r.seeds as i64).collect())
            .with_f64(
                "2/λmax(θ₀)",
                rows.iter().map(|(_, r)| r.predicted).collect(),
            )
            .with_f64("divergence level", rows.iter().map(|(b, _)| *b).collect())
            .with_f64("measured", rows.iter().map(|(_, r)| r.measured).collect())
            .with_f64(
                "measured / predicted (min)",
                rows.iter().map(|(_, r)| r.factor_lo).collect(),
            )
            .with_f64(
                "measured / predicted (max)",
                rows.iter().map(|(_, r)| r.factor_hi).collect(),
            )
            .with_i64(
                "open brackets",
                rows.iter().map(|(_, r)| r.open as i64).collect(),
            );
        md.push_str(&table.to_markdown());
    }
    md
}

fn range_text(lo: f64, hi: f64) -> String {
    if lo == hi {
        format_significant(lo, 3)
    } else {
        format!(
            "{} to {}",
            format_significant(lo, 3),
            format_significant(hi, 3)
        )
    }
}

/// Sentences that read the figures' numbers.
pub fn reading(result: &StabilityResult, spec: &StabilitySpec) -> Vec<String> {
    let mut lines = Vec::new();
    let cells = sorted(result);
    let Some(first) = cells.first() else {
        return vec!["No threshold cell is done yet.".to_string()];
    };
    let levels: Vec<String> = spec.blowup.iter().map(|&b| format_float(b)).collect();
    lines.push(format!(
        "Setup: plain full-batch GD (SGD, no momentum, clipping or warm-up) on the {} masked \
         coordinates of {} on {} examples of {} ({}), from θ₀ (loss {}). A run diverges at \
         level b when a loss within {} steps exceeds b x the initial loss or is not finite; one \
         bisection per level (b = {}) narrows the bracket to {}% and gives up at {} x the \
         prediction. λmax(θ₀) by Lanczos ({} products at most, relative residual tolerance {}).",
        spec.scope.name(),
        spec.model.display(),
        spec.examples,
        spec.data.display(),
        match spec.dtype {
            crate::probe::Dtype::F32 => "f32",
            crate::probe::Dtype::F64 => "f64",
        },
        format_float(first.loss0),
        spec.steps,
        levels.join(", "),
        format_float(100.0 * spec.tolerance),
        format_float(spec.max_factor),
        spec.iters,
        format_float(spec.tol),
    ));
    let per_level: Vec<Vec<RatioRow>> = (0..spec.blowup.len())
        .map(|l| ratio_rows(result, l))
        .collect();
    for (i, r) in per_level[0].iter().enumerate() {
        let k: Vec<String> = cells
            .iter()
            .filter(|c| c.ratio == r.ratio)
            .map(|c| c.dim.to_string())
            .collect();
        let mut line = format!(
            "Ratio {} (k = {}): predicted 2/λmax(θ₀) = {}",
            format_significant(r.ratio, 3),
            k.join(", "),
            format_float(r.predicted)
        );
        for (level, rows) in per_level.iter().enumerate() {
            let r = &rows[i];
            let _ = write!(line, "; level {}: ", levels[level]);
            if r.measured.is_finite() {
                let _ = write!(
                    line,
                    "measured {} (bracket {} to {}), {} x the prediction",
                    format_float(r.measured),
                    format_float(r.lo),
                    format_float(r.hi),
                    range_text(r.factor_lo, r.factor_hi)
                );
            }
            if r.open > 0 {
                let _ = write!(
                    line,
                    "{}{} of {} mask(s) never diverged, up to {} ({} x the prediction)",
                    if r.measured.is_finite() { ", " } else { "" },
                    r.open,
                    r.seeds,
                    format_float(r.open_stable),
                    format_significant(r.open_stable / r.predicted, 3)
                );
            }
        }
        line.push('.');
        lines.push(line);
    }
    for (level, b) in levels.iter().enumerate() {
        let factors: Vec<f64> = cells
            .iter()
            .filter_map(|c| c.ratio_to_predicted(level))
            .collect();
        let open = cells.len() - factors.len();
        if factors.is_empty() {
            lines.push(format!(
                "Departure from Prop. 5.2 at level {b}: no mask diverged at any rate tried."
            ));
            continue;
        }
        let (lo, hi) = min_max(factors.iter().copied());
        let within = factors.iter().filter(|&&f| (f - 1.0).abs() <= 0.1).count();
        lines.push(format!(
            "Departure from Prop. 5.2 at level {b}: the measured threshold is {} x 2/λmax(θ₀) \
             over {} mask(s) (the quadratic model gives 1 at every level, to the bracket's {}%); \
             {within} of them lie within 10% of it{}.",
            range_text(lo, hi),
            factors.len(),
            format_float(100.0 * spec.tolerance),
            if open > 0 {
                format!(", and {open} mask(s) never diverged")
            } else {
                String::new()
            }
        ));
    }
    // The bisection assumes one stable interval below the threshold; a run above a
    // bracket that stayed below its level says the stable rates are not one.
    for (level, &b) in spec.blowup.iter().enumerate() {
        for c in &cells {
            let Some(hi) = c.thresholds[level].diverged else {
                continue;
            };
            let quiet: Vec<f64> = distinct_runs(c)
                .into_iter()
                .filter(|r| r.lr > hi && r.peak_ratio.is_some_and(|p| p <= b))
                .map(|r| r.lr / c.predicted)
                .collect();
            if let (Some(lo), Some(hi)) = (quiet.first(), quiet.last()) {
                lines.push(format!(
                    "Not one interval at level {}: for ratio {} (seed {}), {} run(s) at {} x the \
                     prediction, above the bracket, stayed below {} x the initial loss: the \
                     bracket marks the first rate that diverges, and larger ones may not.",
                    levels[level],
                    format_significant(c.ratio, 3),
                    c.seed,
                    quiet.len(),
                    range_text(*lo, *hi),
                    levels[level]
                ));
            }
        }
    }
    let highest = spec.blowup.len() - 1;
    let above: Vec<&RunOutcome> = cells
        .iter()
        .flat_map(|c| {
            distinct_runs(c)
                .into_iter()
                .filter(move |r| r.lr > 1.01 * c.predicted)
        })
        .filter(|r| r.peak_ratio.is_some_and(|p| p <= spec.blowup[highest]))
        .collect();
    if !above.is_empty() {
        let recovered = above
            .iter()
            .filter(|r| r.final_ratio.is_some_and(|f| f < 1.0))
            .count();
        let peak = above
            .iter()
            .filter_map(|r| r.peak_ratio)
            .fold(0.0f64, f64::max);
        lines.push(format!(
            "{} run(s) above their prediction stayed below {} x the initial loss; {} of them \
             ended below the initial loss after {} steps, with transients up to {} x it: above \
             2/λmax(θ₀) the network's loss spikes and recovers instead of growing without bound \
             as the quadratic model's does.",
            above.len(),
            levels[highest],
            recovered,
            spec.steps,
            format_significant(peak, 3)
        ));
    }
    if per_level[0].len() >= 2 {
        let points = per_level[0].iter().map(|r| (r.ratio, r.predicted));
        let mut line = format!(
            "Log-log slope against the ratio: {} for 2/λmax(θ₀)",
            format_significant(log_log_slope(points), 3)
        );
        for (level, rows) in per_level.iter().enumerate() {
            let measured: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.measured.is_finite())
                .map(|r| (r.ratio, r.measured))
                .collect();
            if measured.len() >= 2 {
                let _ = write!(
                    line,
                    ", {} for the threshold at level {}",
                    format_significant(log_log_slope(measured), 3),
                    levels[level]
                );
            }
        }
        line.push_str(" (the p-proportional model gives -1: λmax ∝ p).");
        if let Some(scope) = &result.scope {
            let rows = &per_level[0];
            let _ = write!(
                line,
                " The whole-scope λmax is {} (k = {}), so 2/(p·λmax(H_scope)) runs from {} to {}.",
                format_float(scope.lambda_max.value),
                scope.dim,
                format_float(2.0 / (rows[0].keep_probability * scope.lambda_max.value)),
                format_float(
                    2.0 / (rows[rows.len() - 1].keep_probability * scope.lambda_max.value)
                )
            );
        }
        lines.push(line);
    }
    lines.extend(edge_reading(&result.edges));
    lines
}

fn edge_reading(edges: &[EdgeRecord]) -> Vec<String> {
    let mut lines = Vec::new();
    for e in edges {
        let threshold = 2.0 / e.lr;
        let (Some(start), Some(end)) = (e.sharpness.first(), e.sharpness.last()) else {
            continue;
        };
        let peak = e
            .sharpness
            .iter()
            .map(|p| p.lambda_max)
            .fold(0.0f64, f64::max);
        let above = e
            .sharpness
            .iter()
            .filter(|p| p.lambda_max > threshold)
            .count();
        let near = e
            .sharpness
            .iter()
            .filter(|p| (p.lambda_max / threshold - 1.0).abs() <= 0.2)
            .count();
        let rises = e.losses.windows(2).filter(|w| w[1] > w[0]).count();
        // Where the sharpness first crossed 2/lr, from the side it started on.
        let started_above = start.lambda_max > threshold;
        let crossing = e
            .sharpness
            .iter()
            .find(|p| (p.lambda_max > threshold) != started_above)
            .map_or_else(
                || "never crossed it".to_string(),
                |p| format!("first crossed it at step {}", p.step),
            );
        lines.push(format!(
            "Edge run at {} x the prediction (lr {}, 2/lr = {}): sharpness {} at step 0 ({} \
             2/lr), peak {}, {} at step {}; it {crossing}; {} of {} measurements above 2/lr and \
             {} within 20% of it; loss {} -> {} over {} steps{}, rising at {} of them.",
            format_significant(e.factor, 3),
            format_float(e.lr),
            format_float(threshold),
            format_float(start.lambda_max),
            if started_above { "above" } else { "below" },
            format_float(peak),
            format_float(end.lambda_max),
            end.step,
            above,
            e.sharpness.len(),
            near,
            format_float(e.losses[0]),
            format_float(*e.losses.last().unwrap_or(&f64::NAN)),
            e.losses.len() - 1,
            if e.diverged {
                " (stopped as diverged)"
            } else {
                ""
            },
            rises
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::bisect::Threshold;
    use crate::train::stability::TopEigen;

    fn run(lr: f64, peak: f64, last: f64) -> RunOutcome {
        RunOutcome {
            lr,
            peak_ratio: Some(peak),
            final_ratio: Some(last),
            diverged_at: (peak > 1.0).then_some(1),
        }
    }

    /// A mask whose lambda_max is `lambda`, with brackets per level.
    fn cell(ratio: f64, seed: u64, lambda: f64, levels: &[Option<(f64, f64)>]) -> ThresholdRecord {
        let predicted = 2.0 / lambda;
        ThresholdRecord {
            key: String::new(),
            ratio,
            seed,
            keep_probability: 10.0 * ratio,
            dim: 100,
            indices_sha256: String::new(),
            loss0: 0.7,
            lambda_max: TopEigen {
                value: lambda,
                residual: 1e-6,
                converged: true,
            },
            predicted,
            thresholds: levels
                .iter()
                .map(|bracket| match bracket {
                    Some((lo, hi)) => Threshold {
                        stable: Some(lo * predicted),
                        diverged: Some(hi * predicted),
                        runs: vec![run(predicted, 1.0, 0.1), run(hi * predicted, 2.5, 2.5)],
                    },
                    None => Threshold {
                        stable: Some(8.0 * predicted),
                        diverged: None,
                        runs: vec![run(predicted, 1.0, 0.1), run(8.0 * predicted, 1.5, 0.2)],
                    },
                })
                .collect(),
            gd_runs: 2,
        }
    }

    #[test]
    fn rows_and_reading_follow_the_cells() {
        let spec = StabilitySpec {
            blowup: vec![1.0, 2.0],
            ..StabilitySpec::default()
        };
        // lambda_max proportional to the ratio: thresholds scale as 1/ratio.
        let result = StabilityResult {
            thresholds: vec![
                cell(0.01, 0, 1.0, &[Some((1.5, 2.0)), None]),
                cell(0.1, 0, 10.0, &[Some((1.0, 1.21)), Some((4.0, 6.25))]),
                cell(0.1, 1, 10.0, &[Some((1.21, 1.44)), Some((9.0, 16.0))]),
            ],
            ..StabilityResult::default()
        };
        let rows = ratio_rows(&result, 0);
        assert_eq!(
            rows.iter().map(|r| r.ratio).collect::<Vec<_>>(),
            [0.1, 0.01]
        );
        // Geometric midpoints 1.1 and 1.32 x the prediction 0.2.
        assert!((rows[0].measured - 0.2 * (1.1 + 1.32) / 2.0).abs() < 1e-12);
        assert!(
            (rows[0].factor_lo - 1.1).abs() < 1e-12 && (rows[0].factor_hi - 1.32).abs() < 1e-12
        );
        assert_eq!((rows[0].lo, rows[0].hi), (0.2, 0.2 * 1.44));
        let open = &ratio_rows(&result, 1)[1];
        assert_eq!(
            (open.open, open.open_stable, open.measured.is_nan()),
            (1, 16.0, true)
        );

        let text = reading(&result, &spec).join("\n");
        assert!(
            text.contains("level 1: measured 3.4641 (bracket 3 to 4), 1.73 x the prediction"),
            "{text}"
        );
        assert!(
            text.contains("level 2: 1 of 1 mask(s) never diverged, up to 16 (8 x the prediction)"),
            "{text}"
        );
        assert!(
            text.contains("at level 1: the measured threshold is 1.1 to 1.73 x"),
            "{text}"
        );
        assert!(
            text.contains("at level 2: the measured threshold is 5 to 12 x"),
            "{text}"
        );
        assert!(text.contains("and 1 mask(s) never diverged."), "{text}");
        assert!(
            text.contains("slope against the ratio: -1 for 2/λmax(θ₀)"),
            "{text}"
        );
        // Of the runs above their prediction only the open bracket's (8 x, peak 1.5)
        // stayed below the highest level, and it ended below the initial loss.
        assert!(
            text.contains(
                "1 run(s) above their prediction stayed below 2 x the initial loss; 1 of them"
            ),
            "{text}"
        );
    }
}
