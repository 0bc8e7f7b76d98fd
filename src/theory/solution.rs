//! The solution GD reaches: the minimum-norm least-squares solution
//! w_hat = (X M)^+ y, computed through the n x n Gram matrix G = X M X^T.
//!
//! With G = U diag(lambda) U^T, w_hat = M X^T G^+ y and
//! ||w_hat||^2 = y^T G^+ y = sum_{lambda_i > 0} (u_i^T y)^2 / lambda_i. Over the noise
//! (y = X w* + sigma eps), E[||w_hat||^2 | M] = ||(XM)^+ X w*||^2 + sigma^2 sum 1/lambda_i,
//! which is at least sigma^2 sum_i lambda_i / lambda_1^2.

use serde::{Deserialize, Serialize};

use super::problem::MaskedRegression;
use super::spectrum::Eigen;

/// The distance ||w_hat - w0|| = ||w_hat|| and its predictions for one trial.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distance {
    /// ||w_hat|| for the trial's noisy targets.
    pub norm: f64,
    /// ||(XM)^+ X w*||^2, the noiseless part of the expectation.
    pub signal_sq: f64,
    /// sigma^2 sum_{lambda_i > 0} 1/lambda_i, the noise part.
    pub noise_sq: f64,
    /// sigma^2 sum_i lambda_i / lambda_1^2, the lower bound on the expectation.
    pub lower_bound_sq: f64,
    /// The numerical rank of X M (eigenvalues above the cutoff of [`rank_cutoff`]).
    pub rank: usize,
}

impl Distance {
    /// E[||w_hat||^2 | M] = signal_sq + noise_sq.
    pub fn expected_sq(&self) -> f64 {
        self.signal_sq + self.noise_sq
    }
}

/// Eigenvalues of G at or below this are treated as zero: max(n, k) machine epsilons
/// of lambda_1, the rounding level of an eigenvalue computed from a Gram matrix.
pub fn rank_cutoff(values: &[f64], kept: usize) -> f64 {
    let top = values.first().copied().unwrap_or(0.0).max(0.0);
    values.len().max(kept) as f64 * f64::EPSILON * top
}

/// The distance of the minimum-norm solution for targets `y`, and its expectation
/// and lower bound for noise level `sigma`, from the eigendecomposition of G.
/// Cost O(n^2).
pub fn distance(eigen: &Eigen, kept: usize, y: &[f64], clean_y: &[f64], sigma: f64) -> Distance {
    let cutoff = rank_cutoff(&eigen.values, kept);
    let coordinates = eigen.coordinates(y);
    let clean = eigen.coordinates(clean_y);
    let mut norm_sq = 0.0;
    let mut signal_sq = 0.0;
    let mut inverse_sum = 0.0;
    let mut rank = 0;
    for ((&lambda, c), s) in eigen.values.iter().zip(&coordinates).zip(&clean) {
        if lambda > cutoff {
            norm_sq += c * c / lambda;
            signal_sq += s * s / lambda;
            inverse_sum += 1.0 / lambda;
            rank += 1;
        }
    }
    let top = eigen.values.first().copied().unwrap_or(0.0);
    let positive_sum: f64 = eigen.values.iter().filter(|&&l| l > cutoff).sum();
    let lower_bound_sq = if top > 0.0 {
        sigma * sigma * positive_sum / (top * top)
    } else {
        0.0
    };
    Distance {
        norm: norm_sq.sqrt(),
        signal_sq,
        noise_sq: sigma * sigma * inverse_sum,
        lower_bound_sq,
        rank,
    }
}

/// The minimum-norm solution (X M)^+ y over the kept coordinates:
/// w_S = X_S^T G^+ y. Cost O(n^2 + n k).
pub fn min_norm_solution(problem: &MaskedRegression<'_>, eigen: &Eigen) -> Vec<f64> {
    let cutoff = rank_cutoff(&eigen.values, problem.kept().len());
    let coordinates = eigen.coordinates(problem.targets());
    // a = G^+ y = sum_{lambda_i > cutoff} u_i (u_i^T y) / lambda_i.
    let n = problem.n();
    let mut a = vec![0.0; n];
    for (i, (&lambda, c)) in eigen.values.iter().zip(&coordinates).enumerate() {
        if lambda > cutoff {
            for (ak, uk) in a.iter_mut().zip(eigen.vectors.col(i).iter()) {
                *ak += uk * c / lambda;
            }
        }
    }
    let x = problem.x();
    problem
        .kept()
        .iter()
        .map(|&j| x.col(j).iter().zip(&a).map(|(xij, ai)| xij * ai).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use crate::testing::TestResult;
    use crate::theory::data::{Design, EntryLaw};
    use crate::theory::mask::{CoordinateMask, MaskKind};
    use crate::theory::problem::squared_norm;
    use crate::theory::stability::gd_on_weights;
    use rand_distr::{Distribution as _, StandardNormal};

    fn relative_error(a: &[f64], b: &[f64]) -> f64 {
        let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        (squared_norm(&diff) / squared_norm(b)).sqrt()
    }

    /// GD from 0 converges to (XM)^+ y, both when X M has full row rank (k > n,
    /// interpolation) and when it does not (k < n, least squares).
    #[test]
    fn min_norm_solution_is_the_gd_limit() -> TestResult {
        for (dist, n, d, p, seed) in [
            (EntryLaw::Normal, 10, 80, 0.5, 1),
            (EntryLaw::Uniform, 10, 80, 0.5, 2),
            (EntryLaw::Normal, 12, 40, 0.15, 3),
        ] {
            let data = Design::generate(dist, n, d, 1.0, seed);
            let mut stream = rng::stream(seed, 5);
            let mask = CoordinateMask::draw(MaskKind::Bernoulli, p, d, &mut stream);
            let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut stream)).collect();
            let problem = MaskedRegression::new(&data, mask, data.targets(0.5, &noise));
            let eigen = Eigen::of(problem.gram().as_ref())?;
            let cutoff = rank_cutoff(&eigen.values, problem.kept().len());
            let positive: Vec<f64> = eigen
                .values
                .iter()
                .copied()
                .filter(|&l| l > cutoff)
                .collect();
            let (top, bottom) = (positive[0], positive[positive.len() - 1]);
            // The fastest uniform contraction: eta = 2n / (lambda_1 + lambda_min).
            let eta = 2.0 * n as f64 / (top + bottom);
            let rate = (top - bottom) / (top + bottom);
            let steps = (30.0 / -rate.ln()).ceil() as usize;
            let gd = gd_on_weights(&problem, eta, steps, f64::INFINITY);
            let w_hat = min_norm_solution(&problem, &eigen);
            let error = relative_error(&gd.weights, &w_hat);
            assert!(error < 1e-8, "n={n} d={d} p={p}: relative error {error}");
            let norm = distance(
                &eigen,
                problem.kept().len(),
                problem.targets(),
                data.clean_targets(),
                0.5,
            )
            .norm;
            assert!((norm - squared_norm(&w_hat).sqrt()).abs() < 1e-10 * norm);
        }
        Ok(())
    }

    /// The expectation formula against Monte Carlo over the noise, for a fixed mask.
    #[test]
    fn expected_distance_matches_the_noise_average() -> TestResult {
        let (n, d, sigma) = (15, 200, 0.7);
        let data = Design::generate(EntryLaw::Uniform, n, d, 1.0, 4);
        let mut stream = rng::stream(4, 6);
        let mask = CoordinateMask::draw(MaskKind::Bernoulli, 0.3, d, &mut stream);
        let k = mask.len();
        let problem = MaskedRegression::new(&data, mask, data.clean_targets().to_vec());
        let eigen = Eigen::of(problem.gram().as_ref())?;
        let samples: Vec<f64> = (0..4000)
            .map(|_| {
                let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut stream)).collect();
                let y = data.targets(sigma, &noise);
                distance(&eigen, k, &y, data.clean_targets(), sigma)
                    .norm
                    .powi(2)
            })
            .collect();
        let stats = crate::stats::Summary::of(samples.iter().copied());
        let predicted = distance(&eigen, k, data.clean_targets(), data.clean_targets(), sigma);
        let z = (stats.mean - predicted.expected_sq()) / stats.standard_error();
        assert!(
            z.abs() < 4.0,
            "mean {} vs {} (z = {z})",
            stats.mean,
            predicted.expected_sq()
        );
        assert!(predicted.lower_bound_sq <= predicted.noise_sq);
        assert_eq!(predicted.rank, n);
        Ok(())
    }
}
