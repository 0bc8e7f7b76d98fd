//! The training sweep's reading: sentences computed from the numbers of each
//! figure (slopes, ranges over seeds, which of the paper's claims the grid
//! reproduces and how sure), never fixed verdicts.

use std::fmt::Write as _;

use super::figures::label;
use super::{
    ArmSummary, RunRecord, Spread, arms, arms_table, lambda_after, optimal_lr_fit, power_law,
};
use crate::report::table::format_significant;
use crate::train::optimizer::OptimizerKind;
use crate::train::sweep::records::TrainSweepResult;
use crate::train::sweep::spec::Arm;

fn num(x: f64) -> String {
    // a least-squares slope through exactly flat data is a rounding error from 0
    if x.abs() < 1e-12 {
        return "0".into();
    }
    format_significant(x, 3)
}

/// A learning rate as the cell ids write it (`1e-3`, `3e-2`).
fn rate(x: f64) -> String {
    format!("{x:e}")
}

fn spread(s: Spread) -> String {
    if s.n > 1 {
        format!("{} [{}, {}]", num(s.mean), num(s.lo), num(s.hi))
    } else {
        num(s.mean)
    }
}

/// A fitted exponent with the words for its direction against the ratio.
fn trend(slope: f64) -> &'static str {
    if slope > 0.1 {
        "falls as the ratio falls"
    } else if slope < -0.1 {
        "grows as the ratio falls"
    } else {
        "barely moves with the ratio"
    }
}

/// The reading of every figure, as Markdown: one `figure` heading per figure (the
/// caller's image line for its name first) and bullets under it, then the arms
/// table.
pub fn markdown(
    result: &TrainSweepResult,
    lab: &[(f64, f64)],
    image: &dyn Fn(&str) -> String,
) -> String {
    let summaries = arms(result);
    let several = result.spec.sweep.checkpoints.len() > 1;
    let mut md = String::new();
    for checkpoint in &result.spec.sweep.checkpoints {
        let mine: Vec<&ArmSummary> = summaries
            .iter()
            .filter(|a| a.checkpoint == checkpoint.name)
            .collect();
        if several {
            let _ = writeln!(md, "Checkpoint `{}`:\n", checkpoint.name);
        }
        let sections: [(&str, &str, Vec<String>); 4] = [
            (
                "accuracy",
                "Fig. 3: accuracy and the optimal learning rate",
                accuracy(result, &mine),
            ),
            (
                "sharpness",
                "Fig. 4a: λmax before and after training",
                sharpness(result, &mine, &checkpoint.name),
            ),
            (
                "distance",
                "Fig. 4b: distance from the start",
                distance(result, &mine, lab),
            ),
            (
                "structured",
                "Fig. 5: random against structured masks",
                structured(&mine),
            ),
        ];
        for (name, title, lines) in sections {
            if lines.is_empty() {
                continue;
            }
            let _ = writeln!(md, "**{title}.**\n\n{}", image(name));
            for line in lines {
                let _ = writeln!(md, "- {line}");
            }
            md.push('\n');
        }
    }
    let _ = writeln!(
        md,
        "Per arm (optimal rate, scores and Hessian there):\n\n{}",
        arms_table(&summaries, result.spec.common_lr()).to_markdown()
    );
    md
}

fn accuracy(result: &TrainSweepResult, arms: &[&ArmSummary]) -> Vec<String> {
    let spec = &result.spec;
    let mut lines = Vec::new();
    let runs: Vec<&RunRecord> = arms
        .iter()
        .flat_map(|a| a.lrs.iter().flat_map(|s| s.runs.iter().copied()))
        .collect();
    if runs.is_empty() {
        return lines;
    }
    let diverged: Vec<String> = arms
        .iter()
        .flat_map(|a| {
            a.lrs.iter().filter(|s| s.diverged() > 0).map(|s| {
                format!(
                    "{} at {} ({} of {})",
                    label(a, false),
                    rate(s.lr),
                    s.diverged(),
                    s.runs.len()
                )
            })
        })
        .collect();
    lines.push(format!(
        "{} runs on disk ({} arms x {} learning rates x {} seeds, {} epochs of batch {}); {} diverged{}.",
        runs.len(),
        arms.len(),
        spec.sweep.lrs.len(),
        spec.sweep.seeds.len(),
        spec.train.epochs,
        match &spec.train.batch {
            super::super::spec::NumberOr::Number(n) => n.to_string(),
            super::super::spec::NumberOr::Word(w) => w.clone(),
        },
        runs.iter().filter(|r| r.diverged()).count(),
        if diverged.is_empty() {
            String::new()
        } else {
            format!(": {}", diverged.join("; "))
        }
    ));
    let optima: Vec<String> = arms
        .iter()
        .filter(|a| !matches!(a.arm, Arm::Structured(_)))
        .map(|a| match a.at_optimum() {
            Some(s) => format!(
                "{}: {} (each seed's: {}), dev accuracy {}, test accuracy {}",
                label(a, false),
                rate(s.lr),
                a.seed_optima
                    .iter()
                    .map(|(_, lr)| rate(*lr))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.spread(|r| r.best_dev_accuracy).map_or("-".into(), spread),
                s.spread(|r| r.test_accuracy).map_or("-".into(), spread),
            ),
            None => format!(
                "{}: none (every rate diverged or lacks a seed)",
                label(a, false)
            ),
        })
        .collect();
    lines.push(format!(
        "Optimal learning rate (lowest seed-mean dev loss; mean [min, max] over seeds): {}.",
        optima.join("; ")
    ));
    let fit = optimal_lr_fit(arms, &spec.sweep.seeds);
    if let Some((slope, _)) = fit.slope {
        let edges = arms
            .iter()
            .filter(|a| matches!(a.arm, Arm::Random(_)) && a.optimum_at_edge())
            .count();
        let optimizer = match spec.train.optimizer {
            OptimizerKind::AdamW => "AdamW",
            OptimizerKind::Sgd => "SGD",
        };
        lines.push(format!(
            "Log-log slope of the optimal rate against the ratio over {} random-mask ratios: {}{} \
             (the linear model predicts −1 for plain gradient descent, whose stable rate grows \
             as 1/p). With {optimizer} the optimal rate {}{}.",
            fit.points.len(),
            num(slope),
            fit.seed_slopes
                .map(|s| format!(
                    " (fits to each seed's optima: {} to {})",
                    num(s.lo),
                    num(s.hi)
                ))
                .unwrap_or_default(),
            if slope < -0.1 {
                "grows as the mask gets sparser, as the paper reports"
            } else if slope > 0.1 {
                "falls as the mask gets sparser, against the paper"
            } else {
                "barely moves with the ratio"
            },
            if edges > 0 {
                format!(
                    "; {edges} of the {} optima sit at an end of the rate grid, so the slope \
                     is only a bound: widen `lrs` to pin them",
                    fit.points.len()
                )
            } else {
                String::new()
            }
        ));
    }
    let best = arms
        .iter()
        .filter_map(|a| Some((a, a.at_optimum()?.spread(|r| r.test_accuracy)?)))
        .max_by(|x, y| x.1.mean.total_cmp(&y.1.mean));
    let baseline = runs
        .iter()
        .find_map(|r| Some((r.test_majority?, r.test_examples?)));
    if let (Some((arm, acc)), Some((majority, n))) = (best, baseline) {
        let se = (majority * (1.0 - majority) / n as f64).sqrt();
        let z = (acc.mean - majority) / se;
        lines.push(format!(
            "Best seed-mean test accuracy at an optimum: {} ({}), against the majority class's {} \
             on {n} test examples (one binomial standard error {}): {} standard errors {}.",
            spread(acc),
            label(arm, false),
            num(majority),
            num(se),
            num(z.abs()),
            if z.abs() < 2.0 {
                "away, within chance: no arm has learned the task well enough to rank rates by \
                 accuracy, and the optimal rates above rest on dev-loss differences"
            } else if z > 0.0 {
                "above it: the runs learn the task"
            } else {
                "below it"
            }
        ));
    }
    lines
}

fn sharpness(result: &TrainSweepResult, arms: &[&ArmSummary], checkpoint: &str) -> Vec<String> {
    let random: Vec<&&ArmSummary> = arms
        .iter()
        .filter(|a| matches!(a.arm, Arm::Random(_)))
        .collect();
    let before: Vec<(f64, Spread)> = random
        .iter()
        .filter_map(|a| Some((a.x(), a.lambda_before()?)))
        .collect();
    if before.is_empty() {
        return Vec::new();
    }
    let after: Vec<(f64, Spread)> = random
        .iter()
        .filter_map(|a| Some((a.x(), a.at_optimum()?.spread(lambda_after)?)))
        .collect();
    let mut lines = Vec::new();
    let slope = |points: &[(f64, Spread)]| {
        power_law(&points.iter().map(|(x, s)| (*x, s.mean)).collect::<Vec<_>>()).map(|f| f.0)
    };
    let list = |points: &[(f64, Spread)]| {
        points
            .iter()
            .map(|(x, s)| format!("{x}: {}", spread(*s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    lines.push(format!(
        "λmax before training (at θ₀, by ratio; mean [min, max] over seeds): {}; log-log slope \
         against the ratio {} (1 would be p-proportional, the linear model's scaling).",
        list(&before),
        slope(&before).map_or("-".into(), num)
    ));
    if !after.is_empty() {
        let factors: Vec<String> = after
            .iter()
            .filter_map(|(x, s)| {
                let b = before.iter().find(|(bx, _)| bx == x)?.1;
                Some(format!("{x}: x{}", num(s.mean / b.mean)))
            })
            .collect();
        lines.push(format!(
            "λmax after training, at each ratio's optimal rate: {}; slope {}; after/before: {}.",
            list(&after),
            slope(&after).map_or("-".into(), num),
            factors.join(", ")
        ));
    }
    for (name, points) in [("before", &before), ("after", &after)] {
        if let Some(s) = slope(points) {
            let (lo, hi) = (points.first(), points.last());
            let disjoint = match (lo, hi) {
                (Some(a), Some(b)) => a.1.hi < b.1.lo || b.1.hi < a.1.lo,
                _ => false,
            };
            lines.push(format!(
                "The paper's claim, sparser masks give a smaller λmax, {} {name} training: the \
                 slope is {}{}.",
                if s > 0.0 { "holds" } else { "does not hold" },
                num(s),
                if disjoint {
                    ", and the seed ranges at the two ends of the ratio grid do not overlap"
                } else {
                    ", but the seed ranges at the two ends of the ratio grid overlap"
                }
            ));
        }
    }
    if let Some(scope) = result.scope(checkpoint) {
        let ceiling = scope.point.lambda_max.value;
        let above = before
            .iter()
            .chain(&after)
            .filter(|(_, s)| s.hi > ceiling)
            .count();
        let trace_ratio: Vec<String> = random
            .iter()
            .filter_map(|a| {
                let p = a.keep_probability()?;
                let t = Spread::of(a.starts.iter().map(|s| s.point.trace.estimate))?;
                Some(format!(
                    "{}: {}",
                    a.x(),
                    num(t.mean / (p * scope.point.trace.estimate))
                ))
            })
            .collect();
        let relative_se = random
            .iter()
            .flat_map(|a| a.starts.iter())
            .map(|s| s.point.trace.standard_error / s.point.trace.estimate.abs())
            .fold(0.0, f64::max);
        lines.push(format!(
            "Ceiling λmax(H_scope) = {} (residual {}); {above} of the points lie above it (interlacing \
             forbids it at θ₀; after training the Hessian is another one). Trace identity \
             E[tr H_m] = p tr H_scope at θ₀, measured/expected by ratio: {} (each trace by \
             Hutch++ with {} products, relative standard errors up to {}; the identity holds \
             in expectation over masks, and each ratio averages {} of them).",
            num(ceiling),
            num(scope.point.lambda_max.residual),
            trace_ratio.join(", "),
            result.spec.hessian.trace_products,
            num(relative_se),
            result.spec.sweep.seeds.len()
        ));
    }
    let points = result
        .starts
        .iter()
        .map(|s| &s.point)
        .chain(result.runs.iter().filter_map(|r| r.end.as_ref()));
    let (count, unconverged) = points.fold((0, 0), |(n, u), p| {
        (n + 1, u + usize::from(!p.lambda_max.converged))
    });
    lines.push(format!(
        "Every Hessian on the first {} train examples; {unconverged} of {count} λmax values did not \
         reach the residual tolerance within {} products (estimates; raise `[hessian] iters`).",
        result.spec.hessian.examples, result.spec.hessian.iters
    ));
    lines
}

fn distance(result: &TrainSweepResult, arms: &[&ArmSummary], lab: &[(f64, f64)]) -> Vec<String> {
    let common = result.spec.common_lr();
    let random: Vec<&&ArmSummary> = arms
        .iter()
        .filter(|a| matches!(a.arm, Arm::Random(_)))
        .collect();
    let mut lines = Vec::new();
    let describe = |what: &str, points: Vec<(&ArmSummary, Spread)>| -> Option<(String, f64)> {
        let fit = power_law(
            &points
                .iter()
                .map(|(a, s)| (a.x(), s.mean))
                .collect::<Vec<_>>(),
        )?;
        let (hi, lo) = (points.first()?, points.last()?);
        Some((
            format!(
                "{what}: {} at ratio {} to {} at {} (x{}), log-log slope {}: the distance {}",
                spread(hi.1),
                hi.0.x(),
                spread(lo.1),
                lo.0.x(),
                num(lo.1.mean / hi.1.mean),
                num(fit.0),
                trend(fit.0)
            ),
            fit.0,
        ))
    };
    let mut by_ratio = random.clone();
    by_ratio.sort_by(|a, b| b.x().total_cmp(&a.x()));
    let at_opt = describe(
        "At each ratio's optimal rate",
        by_ratio
            .iter()
            .filter_map(|a| Some((**a, a.at_optimum()?.spread(|r| r.distance_best)?)))
            .collect(),
    );
    let at_common_points: Vec<(&ArmSummary, Spread)> = by_ratio
        .iter()
        .filter_map(|a| {
            let s = a.at(common)?;
            (s.diverged() == 0).then_some(())?;
            Some((**a, s.spread(|r| r.distance_best)?))
        })
        .collect();
    let at_common = describe(
        &format!("At the common rate {}", rate(common)),
        at_common_points.clone(),
    );
    for d in [&at_opt, &at_common].into_iter().flatten() {
        lines.push(format!("{}.", d.0));
    }
    if let Some(lab_slope) = power_law(lab).map(|f| f.0) {
        let (lo, hi) = lab.iter().fold((f64::INFINITY, 0.0f64), |(l, h), p| {
            (l.min(p.0), h.max(p.0))
        });
        let verdict = |d: &Option<(String, f64)>| match d {
            Some((_, s)) if *s < -0.1 => "grows as p falls, like the linear model's",
            Some((_, s)) if *s > 0.1 => "shrinks as p falls, unlike the linear model's",
            Some(_) => "stays flat, unlike the linear model's",
            None => "is not measured",
        };
        lines.push(format!(
            "The theory lab's minimum-norm distance has log-log slope {} against p over p = {} to {} \
             (it grows as p falls). At the optimal rate the network's distance {}; at the common \
             rate it {}.",
            num(lab_slope),
            num(lo),
            num(hi),
            verdict(&at_opt),
            verdict(&at_common)
        ));
    }
    // An Adam step moves every trained coordinate by about the rate, so at one rate
    // the distance would go as sqrt(k): the per-coordinate distance tests that.
    let per_coordinate: Vec<f64> = at_common_points
        .iter()
        .filter_map(|(a, s)| {
            let k = Spread::of(a.at(common)?.runs.iter().map(|r| r.trained_count as f64))?.mean;
            Some(s.mean / k.sqrt())
        })
        .collect();
    if let Some(s) = Spread::of(per_coordinate.iter().copied())
        && s.n > 1
    {
        lines.push(format!(
            "At the common rate, distance/sqrt(k) (k trained coordinates) runs from {} to {} \
             across ratios (x{}): {}.",
            num(s.lo),
            num(s.hi),
            num(s.hi / s.lo),
            if s.hi / s.lo < 3.0 {
                "roughly constant, as when each trained coordinate moves a similar amount \
                 (Adam's steps are about the rate per coordinate)"
            } else {
                "far from constant, so per-coordinate step size alone does not explain the trend"
            }
        ));
    }
    lines
}

fn structured(arms: &[&ArmSummary]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut below = 0;
    let mut beyond_seeds = 0;
    let mut compared = Vec::new();
    for s in arms.iter().filter(|a| matches!(a.arm, Arm::Structured(_))) {
        let Some(r) = arms.iter().find(|a| a.arm == Arm::Random(s.x())) else {
            continue;
        };
        let score = |a: &ArmSummary| a.at_optimum().and_then(|l| l.spread(|r| r.test_accuracy));
        let count = |a: &ArmSummary| {
            Spread::of(
                a.lrs
                    .iter()
                    .flat_map(|l| l.runs.iter().map(|r| r.trained_count as f64)),
            )
        };
        let (Some(sr), Some(ss)) = (score(r), score(s)) else {
            continue;
        };
        below += usize::from(ss.mean < sr.mean);
        beyond_seeds += usize::from(ss.hi < sr.lo || sr.hi < ss.lo);
        compared.push(format!(
            "ratio {}: random {} (k {}), structured {} (k {}), difference {}",
            s.x(),
            spread(sr),
            count(r).map_or("-".into(), |c| num(c.mean)),
            spread(ss),
            count(s).map_or("-".into(), |c| num(c.mean)),
            num(ss.mean - sr.mean)
        ));
    }
    if compared.is_empty() {
        return lines;
    }
    let tested = arms
        .iter()
        .flat_map(|a| a.lrs.iter().flat_map(|l| l.runs.iter()))
        .find_map(|r| r.test_examples);
    lines.push(format!(
        "Test accuracy at each arm's optimal rate (mean [min, max] over seeds; k the mean trained \
         count): {}.",
        compared.join("; ")
    ));
    lines.push(format!(
        "Structured masks score below random ones at {below} of {} ratios (the paper: they do \
         worse); at {beyond_seeds} of them the seed ranges do not overlap, so {}{}.",
        compared.len(),
        if beyond_seeds == compared.len() {
            "the difference is larger than the spread over seeds at every ratio"
        } else if beyond_seeds == 0 {
            "with these seeds the toy cannot tell the two apart"
        } else {
            "only some of the differences exceed the spread over seeds"
        },
        tested.map_or(String::new(), |n| format!(
            " (an accuracy on {n} test examples has a binomial standard error up to {})",
            num((0.25 / n as f64).sqrt())
        ))
    ));
    lines
}
