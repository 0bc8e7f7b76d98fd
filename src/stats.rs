//! Trial statistics: mean, spread and a 95% interval for the mean; log-spaced grids;
//! least-squares slopes for reading scaling laws off a sweep.

use serde::{Deserialize, Serialize};

/// Mean, sample standard deviation and the Student-t 95% confidence interval of the
/// mean, over the finite values of a sample (non-finite values are counted apart).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    /// Sample standard deviation (divisor count - 1); 0 for a single value.
    pub std: f64,
    pub ci_lo: f64,
    pub ci_hi: f64,
    /// Values left out because they were NaN or infinite.
    pub non_finite: usize,
}

impl Summary {
    /// Summarises `values`; with no finite value every statistic is NaN.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let (finite, non_finite): (Vec<f64>, Vec<f64>) =
            values.into_iter().partition(|v| v.is_finite());
        let count = finite.len();
        if count == 0 {
            return Summary {
                count,
                mean: f64::NAN,
                std: f64::NAN,
                ci_lo: f64::NAN,
                ci_hi: f64::NAN,
                non_finite: non_finite.len(),
            };
        }
        let mean = finite.iter().sum::<f64>() / count as f64;
        let std = if count > 1 {
            let ss: f64 = finite.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (count - 1) as f64).sqrt()
        } else {
            0.0
        };
        let half_width = if count > 1 {
            student_t_975(count - 1) * std / (count as f64).sqrt()
        } else {
            0.0
        };
        Summary {
            count,
            mean,
            std,
            ci_lo: mean - half_width,
            ci_hi: mean + half_width,
            non_finite: non_finite.len(),
        }
    }

    /// Standard error of the mean, std / sqrt(count).
    pub fn standard_error(&self) -> f64 {
        self.std / (self.count as f64).sqrt()
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%).
///
/// Exact table values up to 30 degrees of freedom; beyond, the Cornish-Fisher
/// expansion around the normal quantile, accurate to 1e-4 there.
pub fn student_t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
        2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
        2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => {
            let z: f64 = 1.959_963_984_540_054;
            let v = df as f64;
            let (z3, z5) = (z.powi(3), z.powi(5));
            z + (z3 + z) / (4.0 * v) + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        }
    }
}

/// `points` values from `from` to `to` (both included) equally spaced in log10.
pub fn log_grid(from: f64, to: f64, points: usize) -> Vec<f64> {
    match points {
        0 => Vec::new(),
        1 => vec![from],
        _ => {
            let (a, b) = (from.log10(), to.log10());
            (0..points)
                .map(|i| {
                    let t = i as f64 / (points - 1) as f64;
                    10f64.powf(a + t * (b - a))
                })
                .collect()
        }
    }
}

/// Least-squares slope of `log y` against `log x` over the pairs where both are
/// positive and finite: the exponent of a power law `y ~ x^slope`. NaN with fewer
/// than two usable points.
pub fn log_log_slope(points: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let logs: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|&(x, y)| x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if logs.len() < 2 {
        return f64::NAN;
    }
    let count = logs.len() as f64;
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / count;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / count;
    let sxy: f64 = logs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = logs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    if sxx == 0.0 { f64::NAN } else { sxy / sxx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_hand_computation() {
        let s = Summary::of([1.0, 2.0, 3.0, 4.0, f64::NAN]);
        assert_eq!(s.count, 4);
        assert_eq!(s.non_finite, 1);
        assert_eq!(s.mean, 2.5);
        let std = (5.0f64 / 3.0).sqrt();
        assert!((s.std - std).abs() < 1e-15);
        let half = 3.1824 * std / 2.0;
        assert!((s.ci_hi - 2.5 - half).abs() < 1e-12);
        assert!((s.standard_error() - std / 2.0).abs() < 1e-15);
        assert!(Summary::of([]).mean.is_nan());
        assert_eq!(Summary::of([7.0]).std, 0.0);
    }

    #[test]
    fn t_quantiles_join_the_table_smoothly() {
        // Known values: t(40) = 2.0211, t(120) = 1.9799.
        assert!((student_t_975(40) - 2.0211).abs() < 2e-4);
        assert!((student_t_975(120) - 1.9799).abs() < 1e-4);
        assert!(student_t_975(31) < student_t_975(30));
    }

    #[test]
    fn grids_and_slopes() {
        let g = log_grid(1.0, 0.01, 5);
        assert_eq!(g.len(), 5);
        assert!((g[2] - 0.1).abs() < 1e-15 && (g[4] - 0.01).abs() < 1e-15);
        let slope = log_log_slope(g.iter().map(|&p| (p, 3.0 * p.powf(-0.5))));
        assert!((slope + 0.5).abs() < 1e-12);
        assert!(log_log_slope([(1.0, 1.0)]).is_nan());
    }
}
