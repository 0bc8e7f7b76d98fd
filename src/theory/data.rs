//! The regression data: a matrix X (n samples x d features), a ground truth
//! w* ~ N(0, I/d), and the clean targets X w*. Noisy targets y = X w* + sigma * eps
//! are formed per trial from a noise draw.

use std::path::Path;

use faer::{Mat, MatRef};
use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::matrix_file;
use crate::error::Result;
use crate::rng;

/// Tags that keep the random streams of different purposes apart.
pub(crate) mod stream_tag {
    pub const DATA: u64 = 1;
    pub const GROUND_TRUTH: u64 = 2;
    pub const TRIAL: u64 = 3;
}

/// The law the entries of X are drawn from (not to be confused with the spectral
/// probes' `spectral::Distribution` of random vectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EntryLaw {
    /// iid U[0, r], the paper's assumption (entries bounded by r).
    Uniform,
    /// iid N(0, 1).
    Normal,
}

impl EntryLaw {
    /// A small integer naming the distribution in stream ids.
    pub(crate) fn code(self) -> u64 {
        match self {
            EntryLaw::Uniform => 0,
            EntryLaw::Normal => 1,
        }
    }
}

/// The regression's design: X, w* and X w*, fixed for a configuration while masks
/// and noise vary per trial (a theory problem's data, not a `data::Dataset` of
/// examples).
#[derive(Clone, Debug)]
pub struct Design {
    x: Mat<f64>,
    w_star: Vec<f64>,
    clean_targets: Vec<f64>,
    entry_bound: f64,
}

impl Design {
    /// Draws X (n x d) with iid entries, U[0, r] or N(0, 1), and w* ~ N(0, I/d).
    ///
    /// X depends on (seed, distribution, n, d) only and is scaled by r afterwards,
    /// so sweeps over r see the same matrix up to scale; w* depends on (seed, d).
    pub fn generate(distribution: EntryLaw, n: usize, d: usize, r: f64, seed: u64) -> Self {
        let mut stream = rng::stream(
            seed,
            rng::stream_id(&[stream_tag::DATA, distribution.code(), n as u64, d as u64]),
        );
        let mut x = Mat::<f64>::zeros(n, d);
        for j in 0..d {
            for i in 0..n {
                x[(i, j)] = match distribution {
                    EntryLaw::Uniform => r * stream.random::<f64>(),
                    EntryLaw::Normal => stream.sample(StandardNormal),
                };
            }
        }
        let entry_bound = match distribution {
            EntryLaw::Uniform => r,
            EntryLaw::Normal => max_abs(x.as_ref()),
        };
        Self::with_ground_truth(x, entry_bound, seed)
    }

    /// Reads X from a `.npy` or `.csv` file and draws w* ~ N(0, I/d) from `seed`.
    pub fn load(path: &Path, seed: u64) -> Result<Self> {
        let x = matrix_file::read_matrix(path)?;
        Ok(Self::from_matrix(x, seed))
    }

    /// Uses the given X (finite entries) and draws w* ~ N(0, I/d) from `seed`. The
    /// entry bound r of the concentration bound is max |x_ij|.
    pub fn from_matrix(x: Mat<f64>, seed: u64) -> Self {
        let entry_bound = max_abs(x.as_ref());
        Self::with_ground_truth(x, entry_bound, seed)
    }

    fn with_ground_truth(x: Mat<f64>, entry_bound: f64, seed: u64) -> Self {
        let d = x.ncols();
        let mut stream = rng::stream(seed, rng::stream_id(&[stream_tag::GROUND_TRUTH, d as u64]));
        let scale = 1.0 / (d as f64).sqrt();
        let w_star: Vec<f64> = (0..d)
            .map(|_| scale * stream.sample::<f64, _>(StandardNormal))
            .collect();
        let mut clean_targets = vec![0.0; x.nrows()];
        for (j, &w) in w_star.iter().enumerate() {
            for (i, t) in clean_targets.iter_mut().enumerate() {
                *t += x[(i, j)] * w;
            }
        }
        Design {
            x,
            w_star,
            clean_targets,
            entry_bound,
        }
    }

    /// The data matrix X, n x d, one sample per row (column-major: each feature
    /// column z_j is contiguous).
    pub fn x(&self) -> MatRef<'_, f64> {
        self.x.as_ref()
    }

    /// Number of samples n.
    pub fn n(&self) -> usize {
        self.x.nrows()
    }

    /// Number of features d.
    pub fn d(&self) -> usize {
        self.x.ncols()
    }

    /// The ground-truth weights w*.
    pub fn w_star(&self) -> &[f64] {
        &self.w_star
    }

    /// The noiseless targets X w*.
    pub fn clean_targets(&self) -> &[f64] {
        &self.clean_targets
    }

    /// The bound r on |x_ij| used by the concentration bound: the r of U[0, r],
    /// otherwise the largest |x_ij| of this matrix.
    pub fn entry_bound(&self) -> f64 {
        self.entry_bound
    }

    /// The noisy targets y = X w* + sigma * noise.
    pub fn targets(&self, sigma: f64, noise: &[f64]) -> Vec<f64> {
        self.clean_targets
            .iter()
            .zip(noise)
            .map(|(t, e)| t + sigma * e)
            .collect()
    }

    /// ||X||_F^2, the sum of all squared entries.
    pub fn frobenius_sq(&self) -> f64 {
        (0..self.d())
            .map(|j| self.x.col(j).iter().map(|v| v * v).sum::<f64>())
            .sum()
    }
}

fn max_abs(x: MatRef<'_, f64>) -> f64 {
    (0..x.ncols())
        .map(|j| x.col(j).iter().fold(0.0, |m: f64, v| m.max(v.abs())))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_data_has_the_requested_law_and_is_reproducible() {
        let a = Design::generate(EntryLaw::Uniform, 20, 500, 2.0, 7);
        let b = Design::generate(EntryLaw::Uniform, 20, 500, 1.0, 7);
        // Same draws, scaled by r.
        assert_eq!(a.x()[(3, 77)], 2.0 * b.x()[(3, 77)]);
        assert_eq!(a.w_star(), b.w_star());
        let entries: Vec<f64> = (0..500)
            .flat_map(|j| (0..20).map(move |i| (i, j)))
            .map(|(i, j)| b.x()[(i, j)])
            .collect();
        let mean = entries.iter().sum::<f64>() / entries.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!(entries.iter().all(|v| (0.0..1.0).contains(v)));
        // ||w*||^2 ~ chi^2_d / d: mean 1, sd sqrt(2/d).
        let w2: f64 = b.w_star().iter().map(|w| w * w).sum();
        assert!((w2 - 1.0).abs() < 5.0 * (2.0f64 / 500.0).sqrt(), "{w2}");
        let y = b.targets(0.0, &[0.0; 20]);
        let direct: f64 = (0..500).map(|j| b.x()[(4, j)] * b.w_star()[j]).sum();
        assert!((y[4] - direct).abs() < 1e-12);
        assert_eq!(b.entry_bound(), 1.0);

        let g = Design::generate(EntryLaw::Normal, 20, 500, 1.0, 7);
        assert!(g.entry_bound() > 2.0 && g.entry_bound() < 6.0);
        assert_ne!(
            g.x()[(0, 0)],
            Design::generate(EntryLaw::Normal, 20, 500, 1.0, 8).x()[(0, 0)]
        );
    }
}
