//! The divergence threshold of full-batch gradient descent, found by bisection on
//! the learning rate, for any GD that reports its losses: the network's (in
//! [`super::stability`]) and, in the tests, a quadratic whose threshold is known to
//! be exactly `2 / lambda_max` (Prop. 5.2).
//!
//! A run **diverges** when, within its step budget, a loss is not finite or exceeds
//! `blowup` times the initial loss (as the theory lab's test, whose `blowup` is
//! 1e6; a network's loss saturates, so its specs use a small factor). On a quadratic
//! below the threshold every eigen-mode contracts and the loss never rises, so any
//! `blowup >= 1` gives the same threshold there, biased upwards only by the steps
//! the top mode needs to grow past the others: at `(1 + e) 2/lambda_max` it grows
//! like `(1 + 2e)^(2t)` times its share `s` of the initial loss, so an overshoot `e`
//! is caught within `S` steps once `e >= ln(blowup / s) / (4 S)`.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The divergence test and the search's resolution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BisectOptions {
    /// GD steps per run.
    pub steps: usize,
    /// A run diverges when a loss exceeds `blowup` x the initial loss (or is not finite).
    pub blowup: f64,
    /// The search stops when diverged / stable <= 1 + tolerance.
    pub tolerance: f64,
    /// The search gives up above `max_factor` x its start (and below 1/`max_factor`).
    pub max_factor: f64,
}

/// The losses of one run summarised for the divergence test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub lr: f64,
    /// The largest loss seen over the initial one (`None`: a loss was not finite).
    pub peak_ratio: Option<f64>,
    /// The last loss computed over the initial one (`None`: not finite).
    pub final_ratio: Option<f64>,
    /// The first step whose loss crossed the limit (`None`: stable).
    pub diverged_at: Option<usize>,
}

impl RunOutcome {
    /// Reads `losses` (`L(theta_0)`, `L(theta_1)`, ...) with the divergence test of
    /// `options`; a run that stopped early (its losses end at the crossing) is read
    /// the same way.
    pub fn from_losses(lr: f64, losses: &[f64], options: &BisectOptions) -> Self {
        let initial = losses.first().copied().unwrap_or(f64::NAN);
        let ratio = |l: f64| Some(l / initial).filter(|r| r.is_finite());
        let limit = options.blowup * initial;
        RunOutcome {
            lr,
            peak_ratio: losses
                .iter()
                .try_fold(0.0, |peak: f64, &l| Some(peak.max(ratio(l)?))),
            final_ratio: losses.last().and_then(|&l| ratio(l)),
            diverged_at: losses.iter().position(|&l| !l.is_finite() || l > limit),
        }
    }

    pub fn diverged(&self) -> bool {
        self.diverged_at.is_some()
    }
}

/// What the bisection found: the largest learning rate seen stable and the
/// smallest seen diverging (either may be missing when the search gave up), and
/// every run in the order made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub stable: Option<f64>,
    pub diverged: Option<f64>,
    pub runs: Vec<RunOutcome>,
}

impl Threshold {
    /// The geometric midpoint of the bracket, when there is one.
    pub fn estimate(&self) -> Option<f64> {
        Some((self.stable? * self.diverged?).sqrt())
    }
}

/// Finds the divergence threshold of `run` (learning rate -> outcome), starting at
/// `start` (the predicted threshold): up by doubling while stable, or down by
/// halving while diverging, to a bracket of ratio 2, then by geometric bisection to
/// `options.tolerance`. Cost: `log2(measured / start)` runs to bracket, then
/// `log2(ln 2 / ln(1 + tolerance))` more; a diverging run may stop at its crossing.
pub fn bisect_threshold(
    start: f64,
    options: &BisectOptions,
    mut run: impl FnMut(f64) -> Result<RunOutcome>,
) -> Result<Threshold> {
    let mut runs = Vec::new();
    let mut probe = |lr: f64, runs: &mut Vec<RunOutcome>| -> Result<bool> {
        let outcome = run(lr)?;
        runs.push(outcome);
        Ok(outcome.diverged())
    };
    let (mut stable, mut diverged) = (None, None);
    let mut lr = start;
    if probe(lr, &mut runs)? {
        diverged = Some(lr);
        while stable.is_none() && lr / 2.0 >= start / options.max_factor {
            lr /= 2.0;
            if probe(lr, &mut runs)? {
                diverged = Some(lr);
            } else {
                stable = Some(lr);
            }
        }
    } else {
        stable = Some(lr);
        while diverged.is_none() && lr * 2.0 <= start * options.max_factor {
            lr *= 2.0;
            if probe(lr, &mut runs)? {
                diverged = Some(lr);
            } else {
                stable = Some(lr);
            }
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (stable, diverged) {
        while hi / lo > 1.0 + options.tolerance {
            let middle = (lo * hi).sqrt();
            if probe(middle, &mut runs)? {
                hi = middle;
            } else {
                lo = middle;
            }
        }
        (stable, diverged) = (Some(lo), Some(hi));
    }
    Ok(Threshold {
        stable,
        diverged,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    /// Full-batch GD on `L(w) = 1/2 sum_i a_i (w_i - c_i)^2` from 0: the Hessian is
    /// diag(a), so the threshold is exactly 2 / max a.
    fn quadratic_losses(a: &[f64], c: &[f64], lr: f64, options: &BisectOptions) -> Vec<f64> {
        let loss = |w: &[f64]| {
            0.5 * a
                .iter()
                .zip(c)
                .zip(w)
                .map(|((a, c), w)| a * (w - c) * (w - c))
                .sum::<f64>()
        };
        let mut w = vec![0.0; a.len()];
        let mut losses = vec![loss(&w)];
        for _ in 0..options.steps {
            for ((w, a), c) in w.iter_mut().zip(a).zip(c) {
                *w -= lr * a * (*w - c);
            }
            let l = loss(&w);
            losses.push(l);
            if !l.is_finite() || l > options.blowup * losses[0] {
                break;
            }
        }
        losses
    }

    #[test]
    fn bisection_finds_two_over_lambda_max_on_a_quadratic() -> TestResult {
        // The top mode holds 1% of the initial loss: the others must decay before
        // its growth shows, as in a network whose gradient is not along the top
        // eigenvector.
        let a = [3.0, 1.0, 0.5, 0.1];
        let c = [0.1, 1.7, 1.0, 2.0];
        let threshold = 2.0 / 3.0;
        for blowup in [1.0, 2.0, 1e6] {
            let options = BisectOptions {
                steps: 2000,
                blowup,
                tolerance: 1e-3,
                max_factor: 1e3,
            };
            for start in [0.05, threshold, 20.0] {
                let found = bisect_threshold(start, &options, |lr| {
                    Ok(RunOutcome::from_losses(
                        lr,
                        &quadratic_losses(&a, &c, lr, &options),
                        &options,
                    ))
                })?;
                let (lo, hi) = (
                    found.stable.ok_or("no stable rate")? / threshold,
                    found.diverged.ok_or("no diverging rate")? / threshold,
                );
                assert!(hi / lo <= 1.0 + 1e-3 + 1e-12, "[{lo}, {hi}]");
                // Biased upwards only, by at most ln(blowup / s) / (4 S) = 0.4% here: a
                // rate found diverging is above the threshold.
                assert!(
                    lo > 0.998 && (1.0..1.005).contains(&hi),
                    "blowup {blowup} start {start}: [{lo}, {hi}]"
                );
                let runs = found.runs.len();
                assert!((11..=20).contains(&runs), "{runs} runs from {start}");
                // Every rate recorded stable is, and every one recorded diverged does.
                for r in &found.runs {
                    if r.lr <= threshold {
                        assert!(!r.diverged(), "{r:?}");
                    } else if r.lr > 1.005 * threshold {
                        assert!(r.diverged(), "{r:?}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_loss_that_never_blows_up_leaves_the_bracket_open() -> TestResult {
        let options = BisectOptions {
            steps: 10,
            blowup: 2.0,
            tolerance: 0.05,
            max_factor: 16.0,
        };
        let mut seen = Vec::new();
        let found = bisect_threshold(1.0, &options, |lr| {
            seen.push(lr);
            // A saturating loss: it rises, but never past 1.5 x the first.
            Ok(RunOutcome::from_losses(
                lr,
                &[1.0, 1.0 + lr / (1.0 + lr) / 2.0],
                &options,
            ))
        })?;
        assert_eq!(seen, [1.0, 2.0, 4.0, 8.0, 16.0]);
        assert_eq!((found.stable, found.diverged), (Some(16.0), None));
        assert_eq!(found.estimate(), None);
        Ok(())
    }

    #[test]
    fn outcomes_read_peaks_crossings_and_non_finite_losses() {
        let options = BisectOptions {
            steps: 4,
            blowup: 2.0,
            tolerance: 0.1,
            max_factor: 10.0,
        };
        let r = RunOutcome::from_losses(0.5, &[2.0, 3.0, 4.5, 1.0], &options);
        assert_eq!(
            (r.peak_ratio, r.final_ratio, r.diverged_at),
            (Some(2.25), Some(0.5), Some(2))
        );
        let r = RunOutcome::from_losses(0.5, &[2.0, 1.0, f64::NAN], &options);
        assert_eq!(
            (r.peak_ratio, r.final_ratio, r.diverged_at),
            (None, None, Some(2))
        );
        let r = RunOutcome::from_losses(0.5, &[2.0, 4.0, 1.0], &options);
        assert_eq!((r.peak_ratio, r.diverged_at), (Some(2.0), None));
    }
}
