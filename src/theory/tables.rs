//! The tables a sweep produces: one row per trial, and one row per (configuration,
//! p) with the mean, standard deviation and 95% interval of the mean over trials.
//!
//! Every table starts with the configuration columns n, d, r, sigma and p, so tables
//! of sweeps over several configurations stay flat and easy to filter.

use super::sweep::{Cell, ConfigResult, LossCurve, SweepResult, TrialRecord};
use crate::report::Table;

/// A trial in context, the row type of per-trial tables.
struct TrialRow<'a> {
    config: &'a ConfigResult,
    cell: &'a Cell,
    trial: &'a TrialRecord,
}

/// A (configuration, p) pair, the row type of summary tables.
struct CellRow<'a> {
    config: &'a ConfigResult,
    cell: &'a Cell,
}

/// One column: its name and how to read it from a row.
enum Col<'f, R> {
    F(&'static str, &'f dyn Fn(&R) -> f64),
    I(&'static str, &'f dyn Fn(&R) -> i64),
    B(&'static str, &'f dyn Fn(&R) -> bool),
}

fn build<R>(rows: &[R], columns: &[Col<'_, R>]) -> Table {
    let mut table = Table::new();
    for column in columns {
        table = match column {
            Col::F(name, f) => table.with_f64(*name, rows.iter().map(f).collect()),
            Col::I(name, f) => table.with_i64(*name, rows.iter().map(f).collect()),
            Col::B(name, f) => table.with_bool(*name, rows.iter().map(f).collect()),
        };
    }
    table
}

/// The configuration columns, then `columns`.
fn with_config<'f, R: HasConfig>(columns: Vec<Col<'f, R>>) -> Vec<Col<'f, R>> {
    let mut all: Vec<Col<'f, R>> = vec![
        Col::I("n", &|r: &R| r.config().n as i64),
        Col::I("d", &|r: &R| r.config().d as i64),
        Col::F("r", &|r: &R| r.config().r),
        Col::F("sigma", &|r: &R| r.config().sigma),
        Col::F("p", &|r: &R| r.cell().p),
    ];
    all.extend(columns);
    all
}

trait HasConfig {
    fn config(&self) -> &ConfigResult;
    fn cell(&self) -> &Cell;
}

impl HasConfig for TrialRow<'_> {
    fn config(&self) -> &ConfigResult {
        self.config
    }
    fn cell(&self) -> &Cell {
        self.cell
    }
}

impl HasConfig for CellRow<'_> {
    fn config(&self) -> &ConfigResult {
        self.config
    }
    fn cell(&self) -> &Cell {
        self.cell
    }
}

fn trial_rows(result: &SweepResult) -> Vec<TrialRow<'_>> {
    result
        .configs
        .iter()
        .flat_map(|config| {
            config.cells.iter().flat_map(move |cell| {
                cell.trials.iter().map(move |trial| TrialRow {
                    config,
                    cell,
                    trial,
                })
            })
        })
        .collect()
}

fn cell_rows(result: &SweepResult) -> Vec<CellRow<'_>> {
    result
        .configs
        .iter()
        .flat_map(|config| {
            config
                .cells
                .iter()
                .map(move |cell| CellRow { config, cell })
        })
        .collect()
}

fn fraction(values: impl Iterator<Item = bool>) -> f64 {
    let (hits, total) = values.fold((0usize, 0usize), |(h, t), v| (h + usize::from(v), t + 1));
    if total == 0 {
        f64::NAN
    } else {
        hits as f64 / total as f64
    }
}

fn kept_mean(r: &CellRow<'_>) -> f64 {
    r.cell.summary(|t| t.kept as f64).mean
}

/// Per-trial spectrum facts: lambda_1, trace, concentration error against the bound.
pub fn eigen_trials(result: &SweepResult) -> Table {
    let rows = trial_rows(result);
    build(
        &rows,
        &with_config(vec![
            Col::I("trial", &|r: &TrialRow| r.trial.trial as i64),
            Col::I("kept", &|r: &TrialRow| r.trial.kept as i64),
            Col::F("lambda1", &|r: &TrialRow| r.trial.eigenvalues[0]),
            Col::F("p_lambda1_full", &|r: &TrialRow| {
                r.cell.keep_fraction * r.config.full_spectrum[0]
            }),
            Col::F("trace", &|r: &TrialRow| r.trial.trace),
            Col::F("concentration_error", &|r: &TrialRow| {
                r.trial.concentration_error
            }),
            Col::F("bound", &|r: &TrialRow| r.config.bound),
            Col::B("within_bound", &|r: &TrialRow| {
                r.trial.concentration_error <= r.config.bound
            }),
        ]),
    )
}

/// Per-p spectrum summary: lambda_1 against p lambda_1(X^T X), the concentration
/// error against the bound, and the trace identity.
pub fn eigen_summary(result: &SweepResult) -> Table {
    let rows = cell_rows(result);
    let lambda1 = |r: &CellRow| r.cell.summary(|t| t.eigenvalues[0]);
    let trace = |r: &CellRow| r.cell.summary(|t| t.trace);
    let trace_expected = |r: &CellRow| r.cell.keep_fraction * r.config.frobenius_sq;
    build(
        &rows,
        &with_config(vec![
            Col::I("trials", &|r: &CellRow| r.cell.trials.len() as i64),
            Col::F("kept_mean", &kept_mean),
            Col::F("lambda1_mean", &|r: &CellRow| lambda1(r).mean),
            Col::F("lambda1_std", &|r: &CellRow| lambda1(r).std),
            Col::F("lambda1_ci_lo", &|r: &CellRow| lambda1(r).ci_lo),
            Col::F("lambda1_ci_hi", &|r: &CellRow| lambda1(r).ci_hi),
            Col::F("p_lambda1_full", &|r: &CellRow| {
                r.cell.keep_fraction * r.config.full_spectrum[0]
            }),
            Col::F("concentration_error_mean", &|r: &CellRow| {
                r.cell.summary(|t| t.concentration_error).mean
            }),
            Col::F("concentration_error_max", &|r: &CellRow| {
                r.cell
                    .trials
                    .iter()
                    .map(|t| t.concentration_error)
                    .fold(0.0, f64::max)
            }),
            Col::F("bound", &|r: &CellRow| r.config.bound),
            Col::F("within_bound", &|r: &CellRow| {
                fraction(
                    r.cell
                        .trials
                        .iter()
                        .map(|t| t.concentration_error <= r.config.bound),
                )
            }),
            Col::F("trace_mean", &|r: &CellRow| trace(r).mean),
            Col::F("trace_expected", &trace_expected),
            Col::F("trace_rel_error", &|r: &CellRow| {
                trace(r).mean / trace_expected(r) - 1.0
            }),
            Col::F("trace_rel_se", &|r: &CellRow| {
                trace(r).standard_error() / trace_expected(r)
            }),
        ]),
    )
}

/// The mean sorted spectrum per p beside p lambda_i(X^T X), one row per (p, i).
pub fn spectra(result: &SweepResult) -> Table {
    struct Row<'a> {
        config: &'a ConfigResult,
        cell: &'a Cell,
        index: usize,
        mean: f64,
        std: f64,
    }
    impl HasConfig for Row<'_> {
        fn config(&self) -> &ConfigResult {
            self.config
        }
        fn cell(&self) -> &Cell {
            self.cell
        }
    }
    let rows: Vec<Row> = cell_rows(result)
        .into_iter()
        .flat_map(|CellRow { config, cell }| {
            (0..config.n).map(move |index| {
                let s = cell.summary(|t| t.eigenvalues[index]);
                Row {
                    config,
                    cell,
                    index,
                    mean: s.mean,
                    std: s.std,
                }
            })
        })
        .collect();
    build(
        &rows,
        &with_config(vec![
            Col::I("i", &|r: &Row| r.index as i64 + 1),
            Col::F("lambda_mean", &|r: &Row| r.mean),
            Col::F("lambda_std", &|r: &Row| r.std),
            Col::F("p_lambda_full", &|r: &Row| {
                r.cell.keep_fraction * r.config.full_spectrum[r.index]
            }),
        ]),
    )
}

fn threshold_field(t: &TrialRecord, f: impl Fn(&super::stability::ThresholdBracket) -> f64) -> f64 {
    t.threshold.as_ref().map_or(f64::NAN, f)
}

/// Per-trial learning rates: 2n/lambda_1 and the measured bracket.
pub fn lr_trials(result: &SweepResult) -> Table {
    let rows = trial_rows(result);
    build(
        &rows,
        &with_config(vec![
            Col::I("trial", &|r: &TrialRow| r.trial.trial as i64),
            Col::I("kept", &|r: &TrialRow| r.trial.kept as i64),
            Col::F("lr_theory", &|r: &TrialRow| r.trial.lr_theory),
            Col::F("lr_stable", &|r: &TrialRow| {
                threshold_field(r.trial, |b| b.stable)
            }),
            Col::F("lr_diverged", &|r: &TrialRow| {
                threshold_field(r.trial, |b| b.diverged)
            }),
            Col::F("lr_measured", &|r: &TrialRow| {
                threshold_field(r.trial, |b| b.estimate())
            }),
            Col::F("measured_over_theory", &|r: &TrialRow| {
                threshold_field(r.trial, |b| b.estimate() / r.trial.lr_theory)
            }),
            Col::I("gd_runs", &|r: &TrialRow| {
                r.trial.threshold.map_or(0, |b| b.runs as i64)
            }),
            Col::B("within_1pct", &|r: &TrialRow| {
                r.trial.threshold_within(0.01).unwrap_or(false)
            }),
        ]),
    )
}

/// Per-p learning rates: theory and measurement with intervals, the extreme
/// measured/theory ratios and the share of brackets within 1%.
pub fn lr_summary(result: &SweepResult) -> Table {
    let rows = cell_rows(result);
    let theory = |r: &CellRow| r.cell.summary(|t| t.lr_theory);
    let measured = |r: &CellRow| r.cell.summary(|t| threshold_field(t, |b| b.estimate()));
    let ratios = |r: &CellRow| r.cell.threshold_ratios();
    build(
        &rows,
        &with_config(vec![
            Col::I("trials", &|r: &CellRow| r.cell.trials.len() as i64),
            Col::F("lr_theory_mean", &|r: &CellRow| theory(r).mean),
            Col::F("lr_theory_std", &|r: &CellRow| theory(r).std),
            Col::F("lr_theory_ci_lo", &|r: &CellRow| theory(r).ci_lo),
            Col::F("lr_theory_ci_hi", &|r: &CellRow| theory(r).ci_hi),
            Col::F("lr_measured_mean", &|r: &CellRow| measured(r).mean),
            Col::F("lr_measured_std", &|r: &CellRow| measured(r).std),
            Col::F("lr_measured_ci_lo", &|r: &CellRow| measured(r).ci_lo),
            Col::F("lr_measured_ci_hi", &|r: &CellRow| measured(r).ci_hi),
            Col::F("ratio_min", &|r: &CellRow| {
                ratios(r).into_iter().fold(f64::NAN, f64::min)
            }),
            Col::F("ratio_max", &|r: &CellRow| {
                ratios(r).into_iter().fold(f64::NAN, f64::max)
            }),
            Col::F("within_1pct", &|r: &CellRow| {
                fraction(
                    r.cell
                        .trials
                        .iter()
                        .filter_map(|t| t.threshold_within(0.01)),
                )
            }),
        ]),
    )
}

/// GD loss curves, one row per (p, factor, step).
pub fn gd_curves(result: &SweepResult) -> Table {
    struct Row<'a> {
        config: &'a ConfigResult,
        curve: &'a LossCurve,
        step: usize,
    }
    let rows: Vec<Row> = result
        .configs
        .iter()
        .flat_map(|config| {
            config.curves.iter().flat_map(move |curve| {
                (0..curve.losses.len()).map(move |step| Row {
                    config,
                    curve,
                    step,
                })
            })
        })
        .collect();
    build(
        &rows,
        &[
            Col::I("n", &|r: &Row| r.config.n as i64),
            Col::I("d", &|r: &Row| r.config.d as i64),
            Col::F("r", &|r: &Row| r.config.r),
            Col::F("sigma", &|r: &Row| r.config.sigma),
            Col::F("p", &|r: &Row| r.curve.p),
            Col::F("factor", &|r: &Row| r.curve.factor),
            Col::F("eta", &|r: &Row| r.curve.eta),
            Col::I("step", &|r: &Row| r.step as i64),
            Col::F("loss", &|r: &Row| r.curve.losses[r.step]),
            Col::F("loss_over_initial", &|r: &Row| {
                r.curve.losses[r.step] / r.curve.losses[0]
            }),
        ],
    )
}

fn distance_field(t: &TrialRecord, f: impl Fn(&super::solution::Distance) -> f64) -> f64 {
    t.distance.as_ref().map_or(f64::NAN, f)
}

/// Per-trial distances ||w_hat|| with the expectation's parts and the lower bound.
pub fn distance_trials(result: &SweepResult) -> Table {
    let rows = trial_rows(result);
    build(
        &rows,
        &with_config(vec![
            Col::I("trial", &|r: &TrialRow| r.trial.trial as i64),
            Col::I("kept", &|r: &TrialRow| r.trial.kept as i64),
            Col::I("rank", &|r: &TrialRow| {
                r.trial.distance.map_or(0, |s| s.rank as i64)
            }),
            Col::F("w_norm", &|r: &TrialRow| {
                distance_field(r.trial, |s| s.norm)
            }),
            Col::F("expected_sq", &|r: &TrialRow| {
                distance_field(r.trial, |s| s.expected_sq())
            }),
            Col::F("signal_sq", &|r: &TrialRow| {
                distance_field(r.trial, |s| s.signal_sq)
            }),
            Col::F("noise_sq", &|r: &TrialRow| {
                distance_field(r.trial, |s| s.noise_sq)
            }),
            Col::F("lower_bound_sq", &|r: &TrialRow| {
                distance_field(r.trial, |s| s.lower_bound_sq)
            }),
            Col::B("near_interpolation", &|r: &TrialRow| {
                let ratio = r.trial.kept as f64 / r.config.n as f64;
                (0.5..=2.0).contains(&ratio)
            }),
        ]),
    )
}

/// Per-p distances: ||w_hat|| with its interval, sqrt(E||w_hat||^2) and the lower
/// bound's square root, flagged where p d is within a factor 2 of n.
pub fn distance_summary(result: &SweepResult) -> Table {
    let rows = cell_rows(result);
    let norm = |r: &CellRow| r.cell.summary(|t| distance_field(t, |s| s.norm));
    let mean_of = |r: &CellRow, f: fn(&super::solution::Distance) -> f64| {
        r.cell.summary(|t| distance_field(t, f)).mean
    };
    build(
        &rows,
        &with_config(vec![
            Col::I("trials", &|r: &CellRow| r.cell.trials.len() as i64),
            Col::F("pd_over_n", &|r: &CellRow| {
                r.cell.p * r.config.d as f64 / r.config.n as f64
            }),
            Col::F("kept_mean", &kept_mean),
            Col::F("w_norm_mean", &|r: &CellRow| norm(r).mean),
            Col::F("w_norm_std", &|r: &CellRow| norm(r).std),
            Col::F("w_norm_ci_lo", &|r: &CellRow| norm(r).ci_lo),
            Col::F("w_norm_ci_hi", &|r: &CellRow| norm(r).ci_hi),
            Col::F("w_norm_sq_mean", &|r: &CellRow| {
                mean_of(r, |s| s.norm * s.norm)
            }),
            Col::F("expected_sq_mean", &|r: &CellRow| {
                mean_of(r, |s| s.expected_sq())
            }),
            Col::F("expected_norm", &|r: &CellRow| {
                mean_of(r, |s| s.expected_sq()).sqrt()
            }),
            Col::F("lower_bound_norm", &|r: &CellRow| {
                mean_of(r, |s| s.lower_bound_sq).sqrt()
            }),
            Col::B("near_interpolation", &|r: &CellRow| {
                r.config.near_interpolation(r.cell.p)
            }),
        ]),
    )
}

/// Every table the sweep's part produces, by file stem.
pub fn all_tables(result: &SweepResult) -> Vec<(&'static str, Table)> {
    let part = result.spec.part;
    let mut tables = vec![
        ("eigen_summary", eigen_summary(result)),
        ("eigen_trials", eigen_trials(result)),
        ("spectra", spectra(result)),
    ];
    if part.has_lr() {
        tables.push(("lr_summary", lr_summary(result)));
        tables.push(("lr_trials", lr_trials(result)));
        tables.push(("gd_curves", gd_curves(result)));
    }
    if part.has_distance() {
        tables.push(("distance_summary", distance_summary(result)));
        tables.push(("distance_trials", distance_trials(result)));
    }
    tables
}

/// The summary tables narrowed to the columns worth reading in a terminal, with
/// their titles. The configuration columns are kept only when the sweep has several
/// configurations.
pub fn terminal_views(result: &SweepResult) -> Vec<(&'static str, Table)> {
    let part = result.spec.part;
    let config: &[&str] = if result.configs.len() > 1 {
        &["n", "d", "r", "sigma"]
    } else {
        &[]
    };
    let view = |table: Table, columns: &[&str]| {
        let names: Vec<&str> = config.iter().chain(columns).copied().collect();
        table.select(&names)
    };
    let mut views = vec![(
        "masked spectrum (lambda_1 against p lambda_1(X^T X); concentration error against the bound)",
        view(
            eigen_summary(result),
            &[
                "p",
                "kept_mean",
                "lambda1_mean",
                "lambda1_std",
                "p_lambda1_full",
                "concentration_error_max",
                "bound",
                "trace_rel_error",
            ],
        ),
    )];
    if part.has_lr() {
        views.push((
            "largest stable learning rate (theory 2n/lambda_1 against bisection)",
            view(
                lr_summary(result),
                &[
                    "p",
                    "lr_theory_mean",
                    "lr_measured_mean",
                    "lr_measured_std",
                    "ratio_min",
                    "ratio_max",
                    "within_1pct",
                ],
            ),
        ));
    }
    if part.has_distance() {
        views.push((
            "distance of the minimum-norm solution",
            view(
                distance_summary(result),
                &[
                    "p",
                    "pd_over_n",
                    "w_norm_mean",
                    "w_norm_std",
                    "expected_norm",
                    "lower_bound_norm",
                    "near_interpolation",
                ],
            ),
        ));
    }
    views
}
