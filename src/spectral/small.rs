//! Eigen-decompositions of the small projected matrices (order ≤ a few hundred)
//! that Krylov methods produce, through faer.

use faer::{Mat, Side};

use crate::error::{Error, Result};

/// Eigenvalues (ascending) and eigenvectors (column-major, `order × order`) of a
/// small symmetric matrix.
pub(crate) struct SmallEigen {
    pub values: Vec<f64>,
    pub vectors: Vec<f64>,
    pub order: usize,
}

impl SmallEigen {
    /// Eigenvector `i` (of eigenvalue `values[i]`).
    pub fn vector(&self, i: usize) -> &[f64] {
        &self.vectors[i * self.order..(i + 1) * self.order]
    }
}

/// The eigen-decomposition of the leading `order × order` block of the symmetric
/// matrix stored column-major with leading dimension `ld` in `h` (only the lower
/// triangle is read). `O(order³)`.
pub(crate) fn symmetric_eigen(h: &[f64], order: usize, ld: usize) -> Result<SmallEigen> {
    if order == 0 {
        return Ok(SmallEigen {
            values: Vec::new(),
            vectors: Vec::new(),
            order,
        });
    }
    let m = Mat::from_fn(order, order, |i, j| h[i + j * ld]);
    let eig = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numerical(format!("projected eigenproblem: {e:?}")))?;
    let values: Vec<f64> = (0..order).map(|i| eig.S().column_vector()[i]).collect();
    let u = eig.U();
    let mut vectors = Vec::with_capacity(order * order);
    for j in 0..order {
        for i in 0..order {
            vectors.push(u[(i, j)]);
        }
    }
    Ok(SmallEigen {
        values,
        vectors,
        order,
    })
}

/// Eigenvalues (ascending) of the symmetric tridiagonal matrix with diagonal
/// `alpha` and off-diagonal `beta` (`beta.len() + 1 == alpha.len()`).
pub(crate) fn tridiagonal_eigenvalues(alpha: &[f64], beta: &[f64]) -> Result<Vec<f64>> {
    Ok(tridiagonal_eigen(alpha, beta)?.values)
}

/// Eigen-decomposition of a symmetric tridiagonal matrix (see
/// [`tridiagonal_eigenvalues`]).
pub(crate) fn tridiagonal_eigen(alpha: &[f64], beta: &[f64]) -> Result<SmallEigen> {
    let m = alpha.len();
    let mut h = vec![0.0; m * m];
    for i in 0..m {
        h[i + i * m] = alpha[i];
        if i + 1 < m {
            h[i + 1 + i * m] = beta[i];
            h[i + (i + 1) * m] = beta[i];
        }
    }
    symmetric_eigen(&h, m, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn tridiagonal_toeplitz_has_closed_form_spectrum() -> TestResult {
        // tridiag(-1, 2, -1) of order m: 2 - 2 cos(k pi / (m + 1)).
        let m = 12;
        let values = tridiagonal_eigenvalues(&vec![2.0; m], &vec![-1.0; m - 1])?;
        for (k, v) in values.iter().enumerate() {
            let exact = 2.0 - 2.0 * ((k + 1) as f64 * std::f64::consts::PI / (m + 1) as f64).cos();
            assert!((v - exact).abs() < 1e-13);
        }
        Ok(())
    }
}
