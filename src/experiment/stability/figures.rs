//! The figures of a `gd_stability` spec: the thresholds against the ratio beside
//! every bisection run's peak loss, and the sharpness along the edge runs beside
//! their losses.

use std::path::{Path, PathBuf};

use super::{RatioRow, distinct_runs, ratio_rows, sorted};
use crate::error::Result;
use crate::report::table::{format_float, format_significant};
use crate::report::{Axis, Chart, ErrorPoint, LegendPosition, SeriesData, plot};
use crate::train::stability::{EdgeRecord, StabilityResult, StabilitySpec};

pub(super) fn threshold_figure(
    result: &StabilityResult,
    spec: &StabilitySpec,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let predicted = ratio_rows(result, 0);
    let mut thresholds = Chart::new(
        "Largest stable learning rate of full-batch GD against the ratio",
        Axis::log("trainable ratio (fraction of all parameters)"),
        Axis::log("learning rate"),
    )
    .with_legend(LegendPosition::UpperLeft);
    thresholds.add(
        Some("predicted 2/λmax(θ₀) (Prop. 5.2)"),
        0,
        SeriesData::Line(predicted.iter().map(|r| (r.ratio, r.predicted)).collect()),
    );
    if let Some(scope) = &result.scope {
        thresholds
            .add(
                Some("2/(p·λmax(H_scope)) (p-proportional)"),
                2,
                SeriesData::Line(
                    predicted
                        .iter()
                        .map(|r| (r.ratio, 2.0 / (r.keep_probability * scope.lambda_max.value)))
                        .collect(),
                ),
            )
            .dashed();
    }
    for (level, &blowup) in spec.blowup.iter().enumerate() {
        let rows = ratio_rows(result, level);
        // Colours 0 and 2 are the predictions; each level takes two of its own.
        let color = 1 + 3 * level;
        let closed: Vec<&RatioRow> = rows.iter().filter(|r| r.measured.is_finite()).collect();
        if !closed.is_empty() {
            thresholds.add(
                Some(&format!(
                    "measured, loss > {} x initial (mean, bracket over seeds)",
                    format_float(blowup)
                )),
                color,
                SeriesData::ErrorBars(
                    closed
                        .iter()
                        .map(|r| ErrorPoint {
                            x: r.ratio,
                            y: r.measured,
                            lo: r.lo,
                            hi: r.hi,
                        })
                        .collect(),
                ),
            );
        }
        let open: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.open > 0)
            .map(|r| (r.ratio, r.open_stable))
            .collect();
        if !open.is_empty() {
            thresholds.add(
                Some(&format!(
                    "no loss > {} x initial up to this rate",
                    format_float(blowup)
                )),
                color + 2,
                SeriesData::Markers(open),
            );
        }
    }

    let mut peaks = Chart::new(
        "Peak loss of each bisection run against its rate",
        Axis::log("learning rate / predicted 2/λmax(θ₀)"),
        Axis::log("largest loss / initial loss"),
    )
    .with_legend(LegendPosition::UpperLeft);
    let (mut x_lo, mut x_hi) = (f64::INFINITY, 0.0f64);
    for (i, row) in predicted.iter().enumerate() {
        let points: Vec<(f64, f64)> = sorted(result)
            .into_iter()
            .filter(|c| c.ratio == row.ratio)
            .flat_map(|c| {
                distinct_runs(c)
                    .into_iter()
                    .filter_map(move |r| Some((r.lr / c.predicted, r.peak_ratio?)))
            })
            .collect();
        for p in &points {
            (x_lo, x_hi) = (x_lo.min(p.0), x_hi.max(p.0));
        }
        let label = format!("ratio {}", format_significant(row.ratio, 3));
        peaks.add(Some(&label), i, SeriesData::Markers(points.clone()));
        peaks.add(None, i, SeriesData::Line(points));
    }
    if x_hi > 0.0 {
        for (level, &blowup) in spec.blowup.iter().enumerate() {
            peaks
                .add(
                    Some(&format!(
                        "divergence level {} x initial",
                        format_float(blowup)
                    )),
                    5 + level,
                    SeriesData::Line(vec![(x_lo, blowup), (x_hi, blowup)]),
                )
                .dashed();
        }
        peaks.add(
            Some("rate = prediction"),
            4,
            SeriesData::VerticalLines(vec![1.0]),
        );
    }
    plot::save_panels(&[thresholds, peaks], 2, stem)
}

pub(super) fn edge_figure(edges: &[EdgeRecord], stem: &Path) -> Result<Vec<PathBuf>> {
    let mut sharpness = Chart::new(
        "Sharpness along full-batch GD against 2/lr",
        Axis::linear("step"),
        Axis::log("λmax of the masked Hessian"),
    )
    .with_legend(LegendPosition::UpperRight);
    let mut losses = Chart::new(
        "Training loss on the fixed batch",
        Axis::linear("step"),
        Axis::log("loss"),
    )
    .with_legend(LegendPosition::LowerLeft);
    let last = edges
        .iter()
        .map(|e| e.losses.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    for (i, e) in edges.iter().enumerate() {
        let label = format!(
            "lr = {} x 2/λmax(θ₀) = {}",
            format_significant(e.factor, 3),
            format_significant(e.lr, 3)
        );
        sharpness.add(
            Some(&label),
            i,
            SeriesData::Line(
                e.sharpness
                    .iter()
                    .map(|p| (p.step as f64, p.lambda_max))
                    .collect(),
            ),
        );
        sharpness
            .add(
                Some(&format!("2/lr = {}", format_significant(2.0 / e.lr, 3))),
                i,
                SeriesData::Line(vec![(0.0, 2.0 / e.lr), (last as f64, 2.0 / e.lr)]),
            )
            .dashed();
        losses.add(
            Some(&label),
            i,
            SeriesData::Line(
                e.losses
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| **l > 0.0)
                    .map(|(s, &l)| (s as f64, l))
                    .collect(),
            ),
        );
    }
    plot::save_panels(&[sharpness, losses], 2, stem)
}
