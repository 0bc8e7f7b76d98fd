//! The training sweep's figures: accuracy against the learning rate and the
//! optimal rate against the ratio (the paper's Fig. 3), λmax before and after
//! training (Fig. 4a), the distance travelled (Fig. 4b), random against structured
//! masks (Fig. 5). Each draws the mean over seeds with the range as bars; diverged
//! runs are drawn as their own markers.

use std::path::{Path, PathBuf};

use super::{ArmSummary, RunRecord, Spread, arms, lambda_after, optimal_lr_fit, trace_after};
use crate::error::Result;
use crate::report::{Axis, Chart, ErrorPoint, LegendPosition, SeriesData, plot};
use crate::train::sweep::records::TrainSweepResult;
use crate::train::sweep::spec::Arm;

/// The palette index of diverged-run markers and of reference lines.
const DIVERGED: usize = 7;
const REFERENCE: usize = 6;

fn bar(x: f64, s: Spread) -> ErrorPoint {
    ErrorPoint {
        x,
        y: s.mean,
        lo: s.lo,
        hi: s.hi,
    }
}

/// The arm's legend label, with its checkpoint when the sweep has several.
pub fn label(arm: &ArmSummary, several: bool) -> String {
    let what = match arm.arm {
        Arm::Random(r) => format!("random {r}"),
        Arm::Structured(r) => format!("columns {r}"),
        Arm::Full => "full FT".to_string(),
    };
    if several {
        format!("{what} [{}]", arm.checkpoint)
    } else {
        what
    }
}

/// Every figure of the sweep, as `<stem>-<name>.{png,svg}`; `lab` is the theory
/// lab's distance curve `(p, ‖ŵ‖)` drawn beside the measured distances.
pub fn write_figures(
    result: &TrainSweepResult,
    stem: &Path,
    lab: &[(f64, f64)],
) -> Result<Vec<PathBuf>> {
    let summaries = arms(result);
    let named = |name: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(format!("-{name}"));
        PathBuf::from(s)
    };
    let several = result.spec.sweep.checkpoints.len() > 1;
    let mut written = Vec::new();
    written.extend(plot::save_panels(
        &accuracy(result, &summaries, several),
        3,
        &named("accuracy"),
    )?);
    written.extend(plot::save_panels(
        &sharpness(result, &summaries, several),
        2,
        &named("sharpness"),
    )?);
    written.extend(plot::save_panels(
        &distance(result, &summaries, lab, several),
        2,
        &named("distance"),
    )?);
    if !result.spec.sweep.structured_ratios.is_empty() {
        written.extend(structured(&summaries, several).save(&named("structured"))?);
    }
    Ok(written)
}

/// Fig. 3: dev and test accuracy against the learning rate per ratio, and the
/// optimal learning rate against the ratio with its fitted slope.
fn accuracy(result: &TrainSweepResult, summaries: &[ArmSummary], several: bool) -> Vec<Chart> {
    let panel = |what: &str| {
        Chart::new(
            format!("{what} accuracy at the best state against the learning rate"),
            Axis::log("peak learning rate"),
            Axis::linear(format!("{what} accuracy (mean, min-max over seeds)")),
        )
        .with_legend(LegendPosition::LowerLeft)
    };
    let (mut dev, mut test) = (panel("dev"), panel("test"));
    let drawn: Vec<&ArmSummary> = summaries
        .iter()
        .filter(|a| !matches!(a.arm, Arm::Structured(_)))
        .collect();
    let mut diverged: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for (color, arm) in drawn.iter().enumerate() {
        let name = label(arm, several);
        for (chart, pick, marks) in [
            (
                &mut dev,
                (|r: &RunRecord| r.best_dev_accuracy) as fn(&RunRecord) -> Option<f64>,
                0,
            ),
            (&mut test, |r: &RunRecord| r.test_accuracy, 1),
        ] {
            let points: Vec<ErrorPoint> = arm
                .lrs
                .iter()
                .filter_map(|s| {
                    Spread::of(
                        s.runs
                            .iter()
                            .filter(|r| !r.diverged())
                            .filter_map(|r| pick(r)),
                    )
                    .map(|sp| bar(s.lr, sp))
                })
                .collect();
            if !points.is_empty() {
                chart.add(Some(&name), color, SeriesData::ErrorBars(points));
            }
            diverged[marks].extend(
                arm.lrs
                    .iter()
                    .flat_map(|s| s.runs.iter().filter(|r| r.diverged()))
                    .filter_map(|r| pick(r).map(|y| (r.lr, y))),
            );
        }
    }
    for (chart, marks) in [(&mut dev, &diverged[0]), (&mut test, &diverged[1])] {
        if !marks.is_empty() {
            chart.add(
                Some("diverged run (its best state before)"),
                DIVERGED,
                SeriesData::Markers(marks.clone()),
            );
        }
    }

    let mut optimum = Chart::new(
        "Optimal learning rate against the trainable ratio",
        Axis::log("trainable ratio (fraction of all parameters)"),
        Axis::log("optimal learning rate (lowest dev loss)"),
    )
    .with_legend(LegendPosition::UpperRight);
    for (c, checkpoint) in result.spec.sweep.checkpoints.iter().enumerate() {
        let mine: Vec<&ArmSummary> = summaries
            .iter()
            .filter(|a| a.checkpoint == checkpoint.name)
            .collect();
        let tag = |what: &str| match several {
            true => format!("{what} [{}]", checkpoint.name),
            false => what.to_string(),
        };
        let points: Vec<ErrorPoint> = mine
            .iter()
            .filter(|a| matches!(a.arm, Arm::Random(_)))
            .filter_map(|a| {
                let lr = a.optimal_lr?;
                let seeds = Spread::of(a.seed_optima.iter().map(|(_, lr)| *lr))?;
                Some(ErrorPoint {
                    x: a.x(),
                    y: lr,
                    lo: seeds.lo,
                    hi: seeds.hi,
                })
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        optimum.add(
            Some(&tag("random masks (bars: each seed's optimum)")),
            2 * c,
            SeriesData::ErrorBars(points),
        );
        let fit = optimal_lr_fit(&mine, &result.spec.sweep.seeds);
        if let Some((slope, intercept)) = fit.slope {
            let (lo, hi) = fit
                .points
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), p| {
                    (l.min(p.0), h.max(p.0))
                });
            let line = |s: f64, b: f64| {
                SeriesData::Line(
                    [lo, hi]
                        .iter()
                        .map(|&x| (x, (b + s * x.ln()).exp()))
                        .collect(),
                )
            };
            optimum
                .add(
                    Some(&tag(&format!("fit: slope {slope:.2}"))),
                    2 * c + 1,
                    line(slope, intercept),
                )
                .dashed();
            // slope -1 through the fit's centre, where the fit passes the data's mean
            let mx = fit.points.iter().map(|p| p.0.ln()).sum::<f64>() / fit.points.len() as f64;
            let my = intercept + slope * mx;
            optimum
                .add(
                    Some(&tag("slope −1 (linear model, plain GD)")),
                    REFERENCE,
                    line(-1.0, my + mx),
                )
                .dashed();
        }
        if let Some(full) = mine.iter().find(|a| a.arm == Arm::Full)
            && let Some(lr) = full.optimal_lr
        {
            optimum.add(
                Some(&tag("full FT")),
                DIVERGED - 2,
                SeriesData::Markers(vec![(1.0, lr)]),
            );
        }
    }
    vec![dev, test, optimum]
}

/// Fig. 4a: λmax (and the trace) of the masked Hessian before and after training
/// against the ratio, with the p-proportional line and the whole-scope ceiling.
fn sharpness(result: &TrainSweepResult, summaries: &[ArmSummary], several: bool) -> Vec<Chart> {
    let mut lambda = Chart::new(
        "λmax of the masked Hessian before and after training",
        Axis::log("trainable ratio (fraction of all parameters)"),
        Axis::log("λmax (mean, min-max over seeds)"),
    )
    .with_legend(LegendPosition::LowerRight);
    let mut traces: Vec<(String, usize, Vec<ErrorPoint>, bool)> = Vec::new();
    for (c, checkpoint) in result.spec.sweep.checkpoints.iter().enumerate() {
        let tag = |what: &str| match several {
            true => format!("{what} [{}]", checkpoint.name),
            false => what.to_string(),
        };
        let random: Vec<&ArmSummary> = summaries
            .iter()
            .filter(|a| a.checkpoint == checkpoint.name && matches!(a.arm, Arm::Random(_)))
            .collect();
        let before: Vec<ErrorPoint> = random
            .iter()
            .filter_map(|a| a.lambda_before().map(|s| bar(a.x(), s)))
            .collect();
        let after: Vec<ErrorPoint> = random
            .iter()
            .filter_map(|a| a.at_optimum()?.spread(lambda_after).map(|s| bar(a.x(), s)))
            .collect();
        let base = 4 * c;
        if !before.is_empty() {
            lambda.add(
                Some(&tag("before (θ₀)")),
                base,
                SeriesData::ErrorBars(before),
            );
        }
        if !after.is_empty() {
            lambda.add(
                Some(&tag("after, at the optimal rate")),
                base + 1,
                SeriesData::ErrorBars(after),
            );
        }
        let trace_before: Vec<ErrorPoint> = random
            .iter()
            .filter_map(|a| {
                Spread::of(a.starts.iter().map(|s| s.point.trace.estimate)).map(|s| bar(a.x(), s))
            })
            .collect();
        let trace_after_points: Vec<ErrorPoint> = random
            .iter()
            .filter_map(|a| a.at_optimum()?.spread(trace_after).map(|s| bar(a.x(), s)))
            .collect();
        traces.push((tag("tr H_m before"), base, trace_before, false));
        traces.push((
            tag("tr H_m after, at the optimal rate"),
            base + 1,
            trace_after_points,
            false,
        ));
        let Some(scope) = result.scope(&checkpoint.name) else {
            continue;
        };
        let (lo, hi) = random.iter().fold((f64::INFINITY, 0.0f64), |(l, h), a| {
            (l.min(a.x()), h.max(a.x()))
        });
        if random.is_empty() {
            continue;
        }
        let ceiling = scope.point.lambda_max.value;
        lambda
            .add(
                Some(&tag("ceiling λmax(H_scope)")),
                REFERENCE,
                SeriesData::Line(vec![(lo, ceiling), (hi, ceiling)]),
            )
            .dashed();
        let proportional = |value: f64| -> Vec<ErrorPoint> {
            random
                .iter()
                .filter_map(|a| {
                    let y = a.keep_probability()? * value;
                    Some(ErrorPoint {
                        x: a.x(),
                        y,
                        lo: y,
                        hi: y,
                    })
                })
                .collect()
        };
        let line =
            |points: Vec<ErrorPoint>| SeriesData::Line(points.iter().map(|p| (p.x, p.y)).collect());
        lambda
            .add(
                Some(&tag("p·λmax(H_scope) (p-proportional)")),
                base + 2,
                line(proportional(ceiling)),
            )
            .dashed();
        traces.push((
            tag("p·tr(H_scope)"),
            base + 2,
            proportional(scope.point.trace.estimate),
            true,
        ));
    }
    let values: Vec<f64> = traces
        .iter()
        .flat_map(|t| t.2.iter().flat_map(|p| [p.lo, p.hi]))
        .collect();
    let trace_axis = if values.iter().all(|&v| v > 0.0) {
        Axis::log("trace (mean, min-max over seeds)")
    } else {
        let width = values.iter().map(|v| v.abs()).fold(0.0, f64::max) * 1e-2;
        Axis::symlog("trace (symmetric log)", width.max(1e-12))
    };
    let mut trace = Chart::new(
        "Trace of the masked Hessian (Hutch++) before and after",
        Axis::log("trainable ratio (fraction of all parameters)"),
        trace_axis,
    )
    .with_legend(LegendPosition::LowerRight);
    for (name, color, points, reference) in traces {
        if points.is_empty() {
            continue;
        }
        if reference {
            trace
                .add(
                    Some(&name),
                    color,
                    SeriesData::Line(points.iter().map(|p| (p.x, p.y)).collect()),
                )
                .dashed();
        } else {
            trace.add(Some(&name), color, SeriesData::ErrorBars(points));
        }
    }
    vec![lambda, trace]
}

/// Fig. 4b: the distance ‖θ − θ₀‖ against the ratio at each ratio's optimal rate
/// and at the common rate; beside it the same curves and the theory lab's, each
/// divided by its value at its largest p, against the keep probability p.
fn distance(
    result: &TrainSweepResult,
    summaries: &[ArmSummary],
    lab: &[(f64, f64)],
    several: bool,
) -> Vec<Chart> {
    let common = result.spec.common_lr();
    let mut measured = Chart::new(
        "Distance ‖θ − θ₀‖ over the trained coordinates",
        Axis::log("trainable ratio (fraction of all parameters)"),
        Axis::log("distance at the best state (mean, min-max over seeds)"),
    )
    .with_legend(LegendPosition::LowerLeft);
    let mut shape = Chart::new(
        "Shape: distance relative to its value at the largest p",
        Axis::log("keep probability p per scoped weight"),
        Axis::log("distance / distance at the largest p"),
    )
    .with_legend(LegendPosition::LowerLeft);
    for (c, checkpoint) in result.spec.sweep.checkpoints.iter().enumerate() {
        let tag = |what: &str| match several {
            true => format!("{what} [{}]", checkpoint.name),
            false => what.to_string(),
        };
        let random: Vec<&ArmSummary> = summaries
            .iter()
            .filter(|a| a.checkpoint == checkpoint.name && matches!(a.arm, Arm::Random(_)))
            .collect();
        let curves = [
            (
                "at each ratio's optimal rate",
                random
                    .iter()
                    .filter_map(|a| {
                        let s = a.at_optimum()?.spread(|r| r.distance_best)?;
                        Some((a, s))
                    })
                    .collect::<Vec<_>>(),
            ),
            (
                &*format!("at the common rate {common:e}"),
                random
                    .iter()
                    .filter_map(|a| {
                        let s = a
                            .at(common)?
                            .spread(|r| (!r.diverged()).then_some(r.distance_best?))?;
                        Some((a, s))
                    })
                    .collect::<Vec<_>>(),
            ),
        ];
        for (k, (what, points)) in curves.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let color = 2 * c + k;
            measured.add(
                Some(&tag(what)),
                color,
                SeriesData::ErrorBars(points.iter().map(|(a, s)| bar(a.x(), *s)).collect()),
            );
            let by_p: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|(a, s)| Some((a.keep_probability()?, s.mean)))
                .collect();
            if let Some(&(_, top)) = by_p.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
                shape.add(
                    Some(&tag(what)),
                    color,
                    SeriesData::Line(by_p.iter().map(|&(p, d)| (p, d / top)).collect()),
                );
            }
        }
    }
    if let Some(&(_, top)) = lab.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        shape
            .add(
                Some("theory lab: min-norm ‖ŵ‖ (linear model)"),
                REFERENCE,
                SeriesData::Line(lab.iter().map(|&(p, d)| (p, d / top)).collect()),
            )
            .dashed();
    }
    vec![measured, shape]
}

/// Fig. 5: test accuracy at each arm's optimal rate, random against structured
/// masks at the same ratios (equal expected trainable counts).
fn structured(summaries: &[ArmSummary], several: bool) -> Chart {
    let mut chart = Chart::new(
        "Random against structured (whole-column) masks",
        Axis::log("trainable ratio (fraction of all parameters)"),
        Axis::linear("test accuracy at the optimal rate (mean, min-max over seeds)"),
    )
    .with_legend(LegendPosition::LowerLeft);
    let structured_ratios: Vec<f64> = summaries
        .iter()
        .filter_map(|a| match a.arm {
            Arm::Structured(r) => Some(r),
            _ => None,
        })
        .collect();
    let mut checkpoints: Vec<&str> = summaries.iter().map(|a| a.checkpoint.as_str()).collect();
    checkpoints.dedup();
    for (c, checkpoint) in checkpoints.iter().enumerate() {
        let tag = |what: &str| match several {
            true => format!("{what} [{checkpoint}]"),
            false => what.to_string(),
        };
        let points = |structured: bool| -> Vec<ErrorPoint> {
            summaries
                .iter()
                .filter(|a| a.checkpoint == *checkpoint)
                .filter(|a| match a.arm {
                    Arm::Random(r) => !structured && structured_ratios.contains(&r),
                    Arm::Structured(_) => structured,
                    Arm::Full => false,
                })
                .filter_map(|a| {
                    a.at_optimum()?
                        .spread(|r| r.test_accuracy)
                        .map(|s| bar(a.x(), s))
                })
                .collect()
        };
        for (k, (what, structured)) in [("random", false), ("structured (columns)", true)]
            .into_iter()
            .enumerate()
        {
            let p = points(structured);
            if !p.is_empty() {
                chart.add(Some(&tag(what)), 2 * c + k, SeriesData::ErrorBars(p));
            }
        }
        let (lo, hi) = structured_ratios
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)));
        // a reference line over a single ratio would have no length
        let (lo, hi) = if lo < hi {
            (lo, hi)
        } else {
            (lo / 2.0, hi * 2.0)
        };
        let mine = summaries.iter().filter(|a| a.checkpoint == *checkpoint);
        if let Some(full) = mine.clone().find(|a| a.arm == Arm::Full)
            && let Some(s) = full
                .at_optimum()
                .and_then(|s| s.spread(|r| r.test_accuracy))
        {
            chart
                .add(
                    Some(&tag("full FT")),
                    DIVERGED - 2,
                    SeriesData::Line(vec![(lo, s.mean), (hi, s.mean)]),
                )
                .dashed();
        }
        let majority = mine
            .flat_map(|a| a.lrs.iter().flat_map(|s| s.runs.iter()))
            .find_map(|r| r.test_majority);
        if let Some(m) = majority {
            chart
                .add(
                    Some(&tag("majority class")),
                    REFERENCE,
                    SeriesData::Line(vec![(lo, m), (hi, m)]),
                )
                .dashed();
        }
    }
    chart
}
