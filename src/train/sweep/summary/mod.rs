//! What a training sweep's runs say, arm by arm: the spread over seeds at each
//! learning rate, the optimal learning rate and its fit against the ratio, the
//! Hessian before and after, the distance; with the tables, figures and the
//! reading built from them ([`figures`], [`reading`]).
//!
//! The optimal learning rate of an arm is the one with the lowest seed-mean dev
//! loss at the runs' best states (the criterion each run picks its best state by;
//! accuracy on a few dozen dev examples moves in steps too coarse to rank rates),
//! among the rates at which no seed diverged. Each seed also has its own optimum,
//! which gives the range drawn around it.

pub mod figures;
pub mod reading;

use std::path::{Path, PathBuf};

use super::records::{HessianRecord, RunRecord, TrainSweepResult};
use super::spec::Arm;
use crate::error::Result;
use crate::report::Table;
use crate::stats::log_log_slope;

/// Mean and range of the finite values among some runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// Finite values summarised.
    pub n: usize,
}

impl Spread {
    /// The spread of the finite `values`; `None` when there is none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        Some(Spread {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            lo: v.iter().copied().fold(f64::INFINITY, f64::min),
            hi: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }
}

/// An arm's runs at one learning rate, over seeds.
#[derive(Clone, Debug)]
pub struct LrSummary<'a> {
    pub lr: f64,
    pub runs: Vec<&'a RunRecord>,
}

impl LrSummary<'_> {
    /// The spread of `f` over this rate's runs (diverged ones included where `f`
    /// gives them a value).
    pub fn spread(&self, f: impl Fn(&RunRecord) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.runs.iter().filter_map(|r| f(r)))
    }

    pub fn diverged(&self) -> usize {
        self.runs.iter().filter(|r| r.diverged()).count()
    }

    /// The seed-mean dev loss, when every seed ran and none diverged.
    fn ranking_loss(&self, seeds: usize) -> Option<f64> {
        if self.runs.len() < seeds || self.diverged() > 0 {
            return None;
        }
        let losses: Option<Vec<f64>> = self.runs.iter().map(|r| r.best_dev_loss).collect();
        losses.map(|l| l.iter().sum::<f64>() / l.len() as f64)
    }
}

/// One arm of one checkpoint.
#[derive(Clone, Debug)]
pub struct ArmSummary<'a> {
    pub checkpoint: String,
    pub arm: Arm,
    /// By increasing learning rate.
    pub lrs: Vec<LrSummary<'a>>,
    /// The starts (one per seed; one in all for full fine-tuning).
    pub starts: Vec<&'a HessianRecord>,
    /// See the module's doc.
    pub optimal_lr: Option<f64>,
    /// Each seed's own optimum (lowest dev loss among its runs that did not diverge).
    pub seed_optima: Vec<(u64, f64)>,
}

impl<'a> ArmSummary<'a> {
    fn new(result: &'a TrainSweepResult, checkpoint: &str, arm: Arm) -> Self {
        let spec = &result.spec.sweep;
        let mut rates = spec.lrs.clone();
        rates.sort_by(f64::total_cmp);
        let mine = |r: &&RunRecord| r.checkpoint == checkpoint && r.arm == arm;
        let lrs: Vec<LrSummary> = rates
            .iter()
            .map(|&lr| LrSummary {
                lr,
                runs: result
                    .runs
                    .iter()
                    .filter(mine)
                    .filter(|r| r.lr == lr)
                    .collect(),
            })
            .collect();
        let optimal_lr = lrs
            .iter()
            .filter_map(|s| s.ranking_loss(spec.seeds.len()).map(|l| (s.lr, l)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(lr, _)| lr);
        let seed_optima = spec
            .seeds
            .iter()
            .filter_map(|&seed| {
                result
                    .runs
                    .iter()
                    .filter(mine)
                    .filter(|r| r.seed == seed && !r.diverged())
                    .filter_map(|r| r.best_dev_loss.map(|l| (r.lr, l)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(lr, _)| (seed, lr))
            })
            .collect();
        let starts = result
            .starts
            .iter()
            .filter(|s| s.checkpoint == checkpoint && s.arm == Some(arm))
            .collect();
        ArmSummary {
            checkpoint: checkpoint.to_string(),
            arm,
            lrs,
            starts,
            optimal_lr,
            seed_optima,
        }
    }

    /// The runs at `lr`.
    pub fn at(&self, lr: f64) -> Option<&LrSummary<'a>> {
        self.lrs.iter().find(|s| s.lr == lr)
    }

    /// The runs at the optimal learning rate.
    pub fn at_optimum(&self) -> Option<&LrSummary<'a>> {
        self.optimal_lr.and_then(|lr| self.at(lr))
    }

    /// The ratio drawn on the figures' x axis: the arm's, or 1 for full
    /// fine-tuning (every parameter).
    pub fn x(&self) -> f64 {
        self.arm.ratio().unwrap_or(1.0)
    }

    /// The seed-mean keep probability per scoped unit (from the starts).
    pub fn keep_probability(&self) -> Option<f64> {
        Spread::of(self.starts.iter().filter_map(|s| s.keep_probability)).map(|s| s.mean)
    }

    /// λmax at the start, over seeds.
    pub fn lambda_before(&self) -> Option<Spread> {
        Spread::of(self.starts.iter().map(|s| s.point.lambda_max.value))
    }

    /// Whether the optimum lies at an end of the learning-rate grid (then it is
    /// only a bound).
    pub fn optimum_at_edge(&self) -> bool {
        let (first, last) = (self.lrs.first(), self.lrs.last());
        self.optimal_lr
            .is_some_and(|lr| first.is_some_and(|f| f.lr == lr) || last.is_some_and(|l| l.lr == lr))
    }
}

pub fn lambda_after(r: &RunRecord) -> Option<f64> {
    r.end.as_ref().map(|e| e.lambda_max.value)
}

pub fn trace_after(r: &RunRecord) -> Option<f64> {
    r.end.as_ref().map(|e| e.trace.estimate)
}

/// Every arm of every checkpoint, in the spec's order.
pub fn arms(result: &TrainSweepResult) -> Vec<ArmSummary<'_>> {
    let mut out = Vec::new();
    for checkpoint in &result.spec.sweep.checkpoints {
        for arm in result.spec.arms() {
            out.push(ArmSummary::new(result, &checkpoint.name, arm));
        }
    }
    out
}

/// The least-squares line of `log y` against `log x`: `(slope, intercept)`, the
/// exponent of a power law `y = e^intercept x^slope`; `None` with fewer than two
/// usable points.
pub fn power_law(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let slope = log_log_slope(points.iter().copied());
    if !slope.is_finite() {
        return None;
    }
    let logs: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let n = logs.len() as f64;
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
    Some((slope, my - slope * mx))
}

/// The fit of the optimal learning rate against the ratio over the random-mask
/// arms of `checkpoint`: the slope of the seed-mean optimum, and the range of the
/// slopes fitted to each seed's own optima.
pub struct OptimalLrFit {
    pub points: Vec<(f64, f64)>,
    pub slope: Option<(f64, f64)>,
    pub seed_slopes: Option<Spread>,
}

pub fn optimal_lr_fit(arms: &[&ArmSummary], seeds: &[u64]) -> OptimalLrFit {
    let random: Vec<&&ArmSummary> = arms
        .iter()
        .filter(|a| matches!(a.arm, Arm::Random(_)))
        .collect();
    let points: Vec<(f64, f64)> = random
        .iter()
        .filter_map(|a| a.optimal_lr.map(|lr| (a.x(), lr)))
        .collect();
    let seed_slopes = Spread::of(seeds.iter().map(|&seed| {
        let per_seed: Vec<(f64, f64)> = random
            .iter()
            .filter_map(|a| {
                a.seed_optima
                    .iter()
                    .find(|(s, _)| *s == seed)
                    .map(|(_, lr)| (a.x(), *lr))
            })
            .collect();
        log_log_slope(per_seed)
    }));
    OptimalLrFit {
        slope: power_law(&points),
        points,
        seed_slopes,
    }
}

fn opt(x: Option<f64>) -> f64 {
    x.unwrap_or(f64::NAN)
}

/// Every run, one row each.
pub fn runs_table(result: &TrainSweepResult) -> Table {
    let runs = &result.runs;
    let start = |r: &RunRecord| {
        result.starts.iter().find(|s| {
            s.checkpoint == r.checkpoint
                && s.arm == Some(r.arm)
                && (r.arm == Arm::Full || s.seed == Some(r.seed))
        })
    };
    let col = |f: &dyn Fn(&RunRecord) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    Table::new()
        .with_str(
            "checkpoint",
            runs.iter().map(|r| r.checkpoint.clone()).collect(),
        )
        .with_str("arm", runs.iter().map(|r| r.arm.name()).collect())
        .with_i64("seed", runs.iter().map(|r| r.seed as i64).collect())
        .with_f64("lr", col(&|r| r.lr))
        .with_i64(
            "trained",
            runs.iter().map(|r| r.trained_count as i64).collect(),
        )
        .with_bool("diverged", runs.iter().map(RunRecord::diverged).collect())
        .with_i64("steps", runs.iter().map(|r| r.steps as i64).collect())
        .with_i64(
            "best_step",
            runs.iter().map(|r| r.best_step as i64).collect(),
        )
        .with_f64("dev_loss", col(&|r| opt(r.best_dev_loss)))
        .with_f64("dev_accuracy", col(&|r| opt(r.best_dev_accuracy)))
        .with_f64("test_loss", col(&|r| opt(r.test_loss)))
        .with_f64("test_accuracy", col(&|r| opt(r.test_accuracy)))
        .with_f64("distance_best", col(&|r| opt(r.distance_best)))
        .with_f64("distance_final", col(&|r| opt(r.distance_final)))
        .with_f64(
            "lambda_max_start",
            col(&|r| opt(start(r).map(|s| s.point.lambda_max.value))),
        )
        .with_f64("lambda_max_end", col(&|r| opt(lambda_after(r))))
        .with_f64(
            "trace_start",
            col(&|r| opt(start(r).map(|s| s.point.trace.estimate))),
        )
        .with_f64("trace_end", col(&|r| opt(trace_after(r))))
}

/// One row per arm: its optimum and what the runs there measured.
pub fn arms_table(arms: &[ArmSummary], common_lr: f64) -> Table {
    let col = |f: &dyn Fn(&ArmSummary) -> Option<f64>| {
        arms.iter().map(|a| opt(f(a))).collect::<Vec<f64>>()
    };
    let at_opt = |f: fn(&RunRecord) -> Option<f64>| {
        move |a: &ArmSummary| a.at_optimum().and_then(|s| s.spread(f)).map(|s| s.mean)
    };
    let seed_lr = |pick: fn(f64, f64) -> f64| {
        move |a: &ArmSummary| a.seed_optima.iter().map(|(_, lr)| *lr).reduce(pick)
    };
    Table::new()
        .with_str(
            "checkpoint",
            arms.iter().map(|a| a.checkpoint.clone()).collect(),
        )
        .with_str("arm", arms.iter().map(|a| a.arm.name()).collect())
        .with_f64("ratio", col(&|a| Some(a.x())))
        .with_f64("keep_probability", col(&|a| a.keep_probability()))
        .with_f64("optimal_lr", col(&|a| a.optimal_lr))
        .with_f64("seed_optimal_lr_min", col(&seed_lr(f64::min)))
        .with_f64("seed_optimal_lr_max", col(&seed_lr(f64::max)))
        .with_f64(
            "dev_accuracy_at_optimum",
            col(&at_opt(|r| r.best_dev_accuracy)),
        )
        .with_f64(
            "test_accuracy_at_optimum",
            col(&at_opt(|r| r.test_accuracy)),
        )
        .with_f64("distance_at_optimum", col(&at_opt(|r| r.distance_best)))
        .with_f64(
            "distance_at_common_lr",
            col(&|a| {
                a.at(common_lr)
                    .and_then(|s| s.spread(|r| r.distance_best))
                    .map(|s| s.mean)
            }),
        )
        .with_f64(
            "lambda_max_before",
            col(&|a| a.lambda_before().map(|s| s.mean)),
        )
        .with_f64("lambda_max_after_at_optimum", col(&at_opt(lambda_after)))
        .with_i64(
            "diverged_runs",
            arms.iter()
                .map(|a| a.lrs.iter().map(LrSummary::diverged).sum::<usize>() as i64)
                .collect(),
        )
}

/// Writes the runs and arms tables (CSV and Parquet) under `dir`.
pub fn write_tables(result: &TrainSweepResult, dir: &Path) -> Result<Vec<PathBuf>> {
    let summaries = arms(result);
    let mut written = runs_table(result).write_both(&dir.join("runs"))?;
    written.extend(arms_table(&summaries, result.spec.common_lr()).write_both(&dir.join("arms"))?);
    Ok(written)
}
