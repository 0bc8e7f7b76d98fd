//! Spectra of masked Gram matrices.
//!
//! The nonzero eigenvalues of the d x d matrix M X^T X M are those of the n x n Gram
//! matrix X M X^T = X_S X_S^T (S = kept columns), so everything here works on n x n
//! matrices: a d x d matrix is never formed.
//!
//! All faer calls run sequentially (`Par::Seq`): parallelism lives one level up, over
//! trials, which keeps every result independent of the thread count.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{ComputeEigenvectors, self_adjoint_evd, self_adjoint_evd_scratch};
use faer::linalg::matmul::triangular::{BlockStructure, matmul as triangular_matmul};
use faer::{Accum, Mat, MatRef, Par};

use crate::error::{Error, Result};

/// Columns gathered per block when forming X_S X_S^T: an n x 512 block stays in
/// cache for n up to a few hundred, and keeps the extra memory at n x 512.
const GATHER_BLOCK: usize = 512;

/// The Gram matrix X_S X_S^T = sum_{j in S} z_j z_j^T of the columns `columns` of
/// `x` (n x n, symmetric, both halves filled).
///
/// Cost: n^2 |S| / 2 multiply-adds (the lower half by blocked matrix products,
/// then mirrored).
pub fn masked_gram(x: MatRef<'_, f64>, columns: &[usize]) -> Mat<f64> {
    let n = x.nrows();
    let mut gram = Mat::<f64>::zeros(n, n);
    let mut block = Mat::<f64>::zeros(n, GATHER_BLOCK.min(columns.len()));
    for (index, chunk) in columns.chunks(GATHER_BLOCK).enumerate() {
        for (c, &j) in chunk.iter().enumerate() {
            block.col_mut(c).copy_from(x.col(j));
        }
        let part = block.as_ref().subcols(0, chunk.len());
        let accum = if index == 0 {
            Accum::Replace
        } else {
            Accum::Add
        };
        triangular_matmul(
            gram.as_mut(),
            BlockStructure::TriangularLower,
            accum,
            part,
            BlockStructure::Rectangular,
            part.transpose(),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
    }
    for j in 0..n {
        for i in 0..j {
            gram[(i, j)] = gram[(j, i)];
        }
    }
    gram
}

/// The eigenvalues of the symmetric matrix `a` (lower half read), largest first.
/// Cost about 4/3 n^3 flops.
pub fn eigenvalues_desc(a: MatRef<'_, f64>) -> Result<Vec<f64>> {
    let (values, _) = decompose(a, false)?;
    Ok(values)
}

/// An eigendecomposition A = U diag(values) U^T with the eigenvalues largest first.
#[derive(Clone, Debug)]
pub struct Eigen {
    /// Eigenvalues, largest first.
    pub values: Vec<f64>,
    /// Orthonormal eigenvectors, column i belonging to `values[i]`.
    pub vectors: Mat<f64>,
}

impl Eigen {
    /// The decomposition of the symmetric matrix `a` (lower half read). Cost about
    /// 9 n^3 flops.
    pub fn of(a: MatRef<'_, f64>) -> Result<Self> {
        let (values, vectors) = decompose(a, true)?;
        let vectors = vectors.expect("eigenvectors"); // invariant: requested above
        Ok(Eigen { values, vectors })
    }

    /// The coordinates U^T v of `v` in the eigenbasis.
    pub fn coordinates(&self, v: &[f64]) -> Vec<f64> {
        (0..self.values.len())
            .map(|i| self.vectors.col(i).iter().zip(v).map(|(u, x)| u * x).sum())
            .collect()
    }
}

fn decompose(a: MatRef<'_, f64>, vectors: bool) -> Result<(Vec<f64>, Option<Mat<f64>>)> {
    let n = a.nrows();
    debug_assert_eq!(n, a.ncols());
    let mut s = Diag::<f64>::zeros(n);
    let mut u = vectors.then(|| Mat::<f64>::zeros(n, n));
    let compute = if vectors {
        ComputeEigenvectors::Yes
    } else {
        ComputeEigenvectors::No
    };
    let mut memory = MemBuffer::new(self_adjoint_evd_scratch::<f64>(
        n,
        compute,
        Par::Seq,
        Default::default(),
    ));
    self_adjoint_evd(
        a,
        s.as_mut(),
        u.as_mut().map(|u| u.as_mut()),
        Par::Seq,
        MemStack::new(&mut memory),
        Default::default(),
    )
    .map_err(|e| Error::Numerical(format!("symmetric eigendecomposition: {e:?}")))?;
    // faer sorts ascending; reverse values and vectors to put the largest first.
    let mut values: Vec<f64> = s.column_vector().iter().copied().collect();
    values.reverse();
    let u = u.map(|u| Mat::from_fn(n, n, |i, j| u[(i, n - 1 - j)]));
    Ok((values, u))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    /// Closed form: with orthogonal columns, X^T X = diag(||z_j||^2), so the masked
    /// spectrum is {||z_j||^2 : j kept} padded with zeros.
    #[test]
    fn orthogonal_columns_give_the_kept_column_norms() -> TestResult {
        let (n, d) = (7, 5);
        // Columns: scaled columns of the orthogonal matrix I - 2 v v^T / v^T v.
        let v = [1.0, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0];
        let vv: f64 = v.iter().map(|a| a * a).sum();
        let norms = [3.0, 0.5, 2.0, 7.0, 1.5];
        let x = Mat::from_fn(n, d, |i, j| {
            let q = f64::from(u8::from(i == j)) - 2.0 * v[i] * v[j] / vv;
            norms[j] * q
        });
        let full = eigenvalues_desc(masked_gram(x.as_ref(), &[0, 1, 2, 3, 4]).as_ref())?;
        let expected_full = [49.0, 9.0, 4.0, 2.25, 0.25, 0.0, 0.0];
        for (a, b) in full.iter().zip(expected_full) {
            assert!((a - b).abs() < 1e-12, "{full:?}");
        }
        let kept = [1, 3, 4];
        let masked = eigenvalues_desc(masked_gram(x.as_ref(), &kept).as_ref())?;
        let expected = [49.0, 2.25, 0.25, 0.0, 0.0, 0.0, 0.0];
        for (a, b) in masked.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{masked:?}");
        }
        Ok(())
    }

    #[test]
    fn gram_matches_a_direct_sum_and_eigenvectors_reconstruct_it() -> TestResult {
        let (n, d) = (6, 1300);
        let x = Mat::from_fn(n, d, |i, j| ((i * 31 + j * 17) % 13) as f64 / 13.0 - 0.3);
        let kept: Vec<usize> = (0..d).filter(|j| j % 3 != 1).collect();
        let g = masked_gram(x.as_ref(), &kept);
        for i in 0..n {
            for k in 0..n {
                let direct: f64 = kept.iter().map(|&j| x[(i, j)] * x[(k, j)]).sum();
                assert!((g[(i, k)] - direct).abs() < 1e-10 * direct.abs().max(1.0));
            }
        }
        let eigen = Eigen::of(g.as_ref())?;
        assert!(eigen.values.windows(2).all(|w| w[0] >= w[1]));
        let values = eigenvalues_desc(g.as_ref())?;
        for (a, b) in values.iter().zip(&eigen.values) {
            assert!((a - b).abs() < 1e-10 * values[0]);
        }
        for i in 0..n {
            for k in 0..n {
                let rebuilt: f64 = (0..n)
                    .map(|m| eigen.vectors[(i, m)] * eigen.values[m] * eigen.vectors[(k, m)])
                    .sum();
                assert!((rebuilt - g[(i, k)]).abs() < 1e-9 * values[0]);
            }
        }
        let e0: Vec<f64> = (0..n).map(|i| eigen.vectors[(i, 0)]).collect();
        let c = eigen.coordinates(&e0);
        assert!((c[0] - 1.0).abs() < 1e-12 && c[1].abs() < 1e-12);
        Ok(())
    }
}
