//! The five figures of a theory sweep, one panel per configuration:
//!
//! 1. `spectra`: sorted lambda_i(X M X^T) for several p beside p lambda_i(X^T X);
//! 2. `lambda1`: lambda_1 against p with p lambda_1(X^T X) and the concentration band;
//! 3. `stable_lr`: the largest stable learning rate, 2n/lambda_1 against bisection;
//! 4. `distance`: ||w_hat|| against p with its expectation and lower bound;
//! 5. `gd_curves`: GD loss curves just below and above the threshold.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::solution::rank_cutoff;
use super::sweep::{ConfigResult, Part, SweepResult};
use crate::error::Result;
use crate::report::plot::{Chart, save_panels};
use crate::report::table::format_float;
use crate::report::{Axis, ErrorPoint, LegendPosition, SeriesData};
use crate::stats::{Summary, log_grid};

/// One of the theory figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    Spectra,
    Lambda1,
    StableLr,
    Distance,
    GdCurves,
}

impl Figure {
    /// Every figure, in the order of the issue.
    pub const ALL: [Figure; 5] = [
        Figure::Spectra,
        Figure::Lambda1,
        Figure::StableLr,
        Figure::Distance,
        Figure::GdCurves,
    ];

    /// The file stem, e.g. `stable_lr`.
    pub fn name(self) -> &'static str {
        match self {
            Figure::Spectra => "spectra",
            Figure::Lambda1 => "lambda1",
            Figure::StableLr => "stable_lr",
            Figure::Distance => "distance",
            Figure::GdCurves => "gd_curves",
        }
    }

    /// Whether a sweep of `part` has the data for this figure.
    pub fn available(self, part: Part) -> bool {
        match self {
            Figure::Spectra | Figure::Lambda1 => true,
            Figure::StableLr | Figure::GdCurves => part.has_lr(),
            Figure::Distance => part.has_distance(),
        }
    }

    /// The figures a sweep of `part` can draw.
    pub fn for_part(part: Part) -> Vec<Figure> {
        Figure::ALL
            .into_iter()
            .filter(|f| f.available(part))
            .collect()
    }

    /// The figure's panels, one per configuration of the sweep.
    pub fn charts(self, result: &SweepResult) -> Vec<Chart> {
        result
            .configs
            .iter()
            .map(|config| {
                let context = context(result, config, self);
                match self {
                    Figure::Spectra => spectra(config, &context),
                    Figure::Lambda1 => lambda1(result, config, &context),
                    Figure::StableLr => stable_lr(config, &context),
                    Figure::Distance => distance(config, &context),
                    Figure::GdCurves => gd_curves(result, config, &context),
                }
            })
            .collect()
    }

    /// Writes `stem.svg` and `stem.png`: the panels, two per row.
    pub fn save(self, result: &SweepResult, stem: &Path) -> Result<Vec<PathBuf>> {
        save_panels(&self.charts(result), 2, stem)
    }
}

/// The panel subtitle: the configuration, the data law, the noise level where the
/// figure depends on it, and which masks it shows.
fn context(result: &SweepResult, config: &ConfigResult, figure: Figure) -> String {
    let spec = &result.spec;
    let data = match (&spec.x, spec.dist) {
        (Some(_), _) => "X from file".to_string(),
        (None, super::EntryLaw::Uniform) => format!("U[0,{}]", format_float(config.r)),
        (None, super::EntryLaw::Normal) => "N(0,1)".to_string(),
    };
    let sigma = format!("σ={}", format_float(config.sigma));
    let masks = match spec.trials {
        1 => "1 mask".to_string(),
        trials => format!("{trials} masks"),
    };
    let tail = match figure {
        Figure::Spectra | Figure::Lambda1 | Figure::StableLr => masks,
        Figure::Distance => format!("{sigma}, {masks}"),
        Figure::GdCurves => format!("{sigma}, first mask per p"),
    };
    format!("n={}, d={}, {data}, {tail}", config.n, config.d)
}

/// At most `max` cells, evenly spread over the sweep (first and last included).
fn spread<T>(items: &[T], max: usize) -> Vec<&T> {
    if items.len() <= max {
        return items.iter().collect();
    }
    (0..max)
        .map(|i| &items[i * (items.len() - 1) / (max - 1)])
        .collect()
}

fn error_point(x: f64, s: &Summary) -> ErrorPoint {
    ErrorPoint {
        x,
        y: s.mean,
        lo: s.ci_lo,
        hi: s.ci_hi,
    }
}

fn p_label(p: f64) -> String {
    format!("p = {}", format_float(p))
}

const GRAY: usize = 7;

fn spectra(config: &ConfigResult, context: &str) -> Chart {
    let mut chart = Chart::new(
        format!("Masked spectra: {context}"),
        Axis::linear("index i"),
        Axis::log("eigenvalue λᵢ of X M Xᵀ"),
    );
    chart
        .add(
            Some("p·λᵢ(XᵀX), for each p"),
            GRAY,
            SeriesData::Line(Vec::new()),
        )
        .dashed();
    for (color, cell) in spread(&config.cells, 5).into_iter().enumerate() {
        let mean = cell.mean_spectrum();
        // Eigenvalues at rounding level (p d < n leaves n - k exact zeros) are not drawn.
        let kept = (cell.keep_fraction * config.d as f64).round() as usize;
        let cutoff = rank_cutoff(&mean, kept);
        let measured: Vec<(f64, f64)> = mean
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l > cutoff)
            .map(|(i, &l)| ((i + 1) as f64, l))
            .collect();
        let predicted: Vec<(f64, f64)> = config
            .full_spectrum
            .iter()
            .enumerate()
            .map(|(i, &l)| ((i + 1) as f64, cell.keep_fraction * l))
            .collect();
        chart.add(
            Some(&format!("{}: mean λᵢ", p_label(cell.p))),
            color,
            SeriesData::Line(measured.clone()),
        );
        chart.add(None, color, SeriesData::Markers(measured));
        chart.add(None, color, SeriesData::Line(predicted)).dashed();
    }
    chart
}

fn lambda1(result: &SweepResult, config: &ConfigResult, context: &str) -> Chart {
    let mut chart = Chart::new(
        format!("λ₁ against p: {context}"),
        Axis::log("keep ratio p"),
        Axis::log("λ₁(X M Xᵀ)"),
    )
    .with_legend(LegendPosition::UpperLeft);
    let lambda_full = config.full_spectrum[0];
    // The band is a formula in p: draw it on a fine grid, so its lower edge bends
    // smoothly down the log axis where p·λ₁(XᵀX) meets the bound.
    let (p_min, p_max) = config
        .cells
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), c| {
            (lo.min(c.p), hi.max(c.p))
        });
    let band = log_grid(p_min, p_max, 200)
        .into_iter()
        .map(|p| {
            let centre = result.spec.mask.keep_fraction(p, config.d) * lambda_full;
            (p, centre - config.bound, centre + config.bound)
        })
        .collect();
    chart.add(
        Some(&format!(
            "p·λ₁(XᵀX) ± concentration bound (δ = {})",
            format_float(result.spec.delta)
        )),
        GRAY,
        SeriesData::Band(band),
    );
    chart.add(
        Some("measured λ₁: mean and 95% CI over masks"),
        0,
        SeriesData::ErrorBars(
            config
                .cells
                .iter()
                .map(|c| error_point(c.p, &c.summary(|t| t.eigenvalues[0])))
                .collect(),
        ),
    );
    // Drawn last, so the prediction stays visible where it meets the measurement.
    chart
        .add(
            Some("p·λ₁(XᵀX)"),
            1,
            SeriesData::Line(
                config
                    .cells
                    .iter()
                    .map(|c| (c.p, c.keep_fraction * lambda_full))
                    .collect(),
            ),
        )
        .dashed();
    chart
}

fn stable_lr(config: &ConfigResult, context: &str) -> Chart {
    let mut chart = Chart::new(
        format!("Stable learning rate: {context}"),
        Axis::log("keep ratio p"),
        Axis::log("learning rate η"),
    )
    .with_secondary(Axis::linear("measured / theory").with_range(0.99, 1.01));
    let lambda_full = config.full_spectrum[0];
    let n = config.n as f64;
    chart.add(
        Some("measured divergence threshold (bisection): mean and 95% CI"),
        1,
        SeriesData::ErrorBars(
            config
                .cells
                .iter()
                .map(|c| {
                    let measured = c.summary(|t| t.threshold.map_or(f64::NAN, |b| b.estimate()));
                    error_point(c.p, &measured)
                })
                .collect(),
        ),
    );
    chart
        .add(
            Some("theory 2n/λ₁: mean over masks"),
            0,
            SeriesData::Line(
                config
                    .cells
                    .iter()
                    .map(|c| (c.p, c.summary(|t| t.lr_theory).mean))
                    .collect(),
            ),
        )
        .dashed();
    chart
        .add(
            Some("2n / (p·λ₁(XᵀX))"),
            GRAY,
            SeriesData::Line(
                config
                    .cells
                    .iter()
                    .map(|c| (c.p, 2.0 * n / (c.keep_fraction * lambda_full)))
                    .collect(),
            ),
        )
        .dashed();
    chart
        .add(
            Some("measured / theory per trial: range (right axis)"),
            2,
            SeriesData::ErrorBars(
                config
                    .cells
                    .iter()
                    .map(|c| {
                        let ratios = c.threshold_ratios();
                        let (lo, hi) = ratios
                            .iter()
                            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                                (lo.min(r), hi.max(r))
                            });
                        ErrorPoint {
                            x: c.p,
                            y: Summary::of(ratios).mean,
                            lo,
                            hi,
                        }
                    })
                    .collect(),
            ),
        )
        .secondary();
    chart
}

fn distance(config: &ConfigResult, context: &str) -> Chart {
    let mut chart = Chart::new(
        format!("Solution distance: {context}"),
        Axis::log("keep ratio p"),
        Axis::log("‖ŵ − w₀‖"),
    );
    let mean_of = |cell: &super::sweep::Cell, f: fn(&super::solution::Distance) -> f64| {
        cell.summary(|t| t.distance.as_ref().map_or(f64::NAN, f))
            .mean
    };
    chart.add(
        Some("√E‖ŵ‖²  (exact expectation given the mask)"),
        1,
        SeriesData::Line(
            config
                .cells
                .iter()
                .map(|c| (c.p, mean_of(c, |s| s.expected_sq()).sqrt()))
                .collect(),
        ),
    );
    chart
        .add(
            Some("lower bound σ·√(Σλᵢ)/λ₁"),
            2,
            SeriesData::Line(
                config
                    .cells
                    .iter()
                    .map(|c| (c.p, mean_of(c, |s| s.lower_bound_sq).sqrt()))
                    .collect(),
            ),
        )
        .dashed();
    chart.add(
        Some("measured ‖ŵ‖: mean and 95% CI over masks"),
        0,
        SeriesData::ErrorBars(
            config
                .cells
                .iter()
                .map(|c| error_point(c.p, &c.summary(|t| t.distance.map_or(f64::NAN, |s| s.norm))))
                .collect(),
        ),
    );
    chart
        .add(
            Some("p d = n (interpolation threshold)"),
            GRAY,
            SeriesData::VerticalLines(vec![config.n as f64 / config.d as f64]),
        )
        .dashed();
    chart
}

fn gd_curves(result: &SweepResult, config: &ConfigResult, context: &str) -> Chart {
    let mut chart = Chart::new(
        format!("GD around the threshold: {context}"),
        Axis::linear("step t"),
        Axis::log("loss L(wₜ) / L(w₀)"),
    )
    .with_legend(LegendPosition::UpperLeft);
    let blowup = result.spec.stability.blowup;
    chart
        .add(
            Some(&format!("divergence criterion ({blowup:e} × initial loss)")),
            GRAY,
            SeriesData::Line(vec![
                (0.0, blowup),
                (result.spec.curve_steps as f64, blowup),
            ]),
        )
        .dashed();
    let mut ratios: Vec<f64> = config.curves.iter().map(|c| c.p).collect();
    ratios.dedup();
    for curve in &config.curves {
        let color = ratios.iter().position(|&p| p == curve.p).unwrap_or(0);
        let points: Vec<(f64, f64)> = curve
            .losses
            .iter()
            .enumerate()
            .map(|(t, &l)| (t as f64, l / curve.losses[0]))
            .collect();
        let label = format!(
            "{}, η = {}×2n/λ₁",
            p_label(curve.p),
            format_float(curve.factor)
        );
        let series = chart.add(Some(&label), color, SeriesData::Line(points));
        if curve.factor > 1.0 {
            series.dashed();
        }
    }
    chart
}
