//! Test matrices with known spectra.

use faer::Mat;

use super::dense::DenseSymmetric;
use super::vector::{Distribution, random_values};

/// `Q diag(spectrum) Qᵀ` with `Q` a product of three Householder reflections
/// along random Gaussian directions: a dense symmetric matrix whose eigenvalues
/// are exactly `spectrum` (to rounding) and whose eigenvectors have no structure.
/// Lanczos from a Gaussian start vector behaves the same for every orthogonal `Q`
/// (the start vector's eigen-components are Gaussian whatever `Q` is), so this
/// `O(n²)` construction stands in for a Haar-random `Q` at no loss.
pub(crate) fn with_spectrum(spectrum: &[f64], seed: u64) -> DenseSymmetric {
    let n = spectrum.len();
    let mut a = Mat::from_fn(n, n, |i, j| if i == j { spectrum[i] } else { 0.0 });
    for reflection in 0..3 {
        let mut u = random_values(n, Distribution::Gaussian, seed, 1000 + reflection);
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        u.iter_mut().for_each(|x| *x /= norm);
        // H A H with H = I - 2 u uᵀ: A - 2 u wᵀ - 2 w uᵀ + 4 (uᵀ w) u uᵀ, w = A u.
        let w: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a[(i, j)] * u[j]).sum())
            .collect();
        let uw: f64 = u.iter().zip(&w).map(|(x, y)| x * y).sum();
        a = Mat::from_fn(n, n, |i, j| {
            a[(i, j)] - 2.0 * u[i] * w[j] - 2.0 * w[i] * u[j] + 4.0 * uw * u[i] * u[j]
        });
    }
    DenseSymmetric::new(a, "test matrix", 1e-12).expect("symmetric") // invariant: by construction
}
