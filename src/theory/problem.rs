//! One masked regression problem: data X, targets y and a mask M, with the loss
//! L(w) = (1/(2n)) ||y - X M w||^2 and its Hessian H = (1/n) M X^T X M.
//!
//! Weights are stored over the kept coordinates only (masked coordinates never move
//! from w0 = 0), so a weight vector has length k = |S|, not d.

use faer::{Mat, MatRef};

use super::data::Design;
use super::mask::CoordinateMask;
use super::spectrum;

/// The masked least-squares problem of one trial.
#[derive(Clone, Debug)]
pub struct MaskedRegression<'a> {
    data: &'a Design,
    mask: CoordinateMask,
    targets: Vec<f64>,
}

impl<'a> MaskedRegression<'a> {
    /// The problem with data `data`, trainable coordinates `mask` and targets `targets`
    /// (length n).
    pub fn new(data: &'a Design, mask: CoordinateMask, targets: Vec<f64>) -> Self {
        debug_assert_eq!(targets.len(), data.n());
        debug_assert_eq!(mask.dim(), data.d());
        MaskedRegression {
            data,
            mask,
            targets,
        }
    }

    /// The data matrix X (n x d).
    pub fn x(&self) -> MatRef<'_, f64> {
        self.data.x()
    }

    /// The dataset the problem is built on.
    pub fn data(&self) -> &'a Design {
        self.data
    }

    /// The mask.
    pub fn mask(&self) -> &CoordinateMask {
        &self.mask
    }

    /// The trainable coordinates S, sorted.
    pub fn kept(&self) -> &[usize] {
        self.mask.kept()
    }

    /// Number of samples n (the Hessian is (1/n) M X^T X M).
    pub fn n(&self) -> usize {
        self.data.n()
    }

    /// Number of features d.
    pub fn d(&self) -> usize {
        self.data.d()
    }

    /// The targets y.
    pub fn targets(&self) -> &[f64] {
        &self.targets
    }

    /// The n x n Gram matrix X M X^T, whose eigenvalues are the nonzero eigenvalues
    /// of M X^T X M (n times those of the Hessian). Cost n^2 k / 2.
    pub fn gram(&self) -> Mat<f64> {
        spectrum::masked_gram(self.x(), self.kept())
    }

    /// The residual y - X_S w for weights `w` over the kept coordinates. Cost n k.
    pub fn residual(&self, w: &[f64]) -> Vec<f64> {
        let x = self.x();
        let mut r = self.targets.clone();
        for (&j, &wj) in self.kept().iter().zip(w) {
            if wj != 0.0 {
                for (ri, xij) in r.iter_mut().zip(x.col(j).iter()) {
                    *ri -= xij * wj;
                }
            }
        }
        r
    }

    /// The loss (1/(2n)) ||y - X M w|| ^2 for weights over the kept coordinates.
    pub fn loss(&self, w: &[f64]) -> f64 {
        squared_norm(&self.residual(w)) / (2.0 * self.n() as f64)
    }

    /// The gradient over the kept coordinates, -(1/n) X_S^T (y - X_S w), given the
    /// residual y - X_S w. Cost n k.
    pub fn gradient_from_residual(&self, residual: &[f64]) -> Vec<f64> {
        let x = self.x();
        let scale = -1.0 / self.n() as f64;
        self.kept()
            .iter()
            .map(|&j| {
                scale
                    * x.col(j)
                        .iter()
                        .zip(residual)
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
            })
            .collect()
    }

    /// Embeds weights over the kept coordinates into R^d (zeros elsewhere).
    pub fn embed(&self, w: &[f64]) -> Vec<f64> {
        let mut full = vec![0.0; self.d()];
        for (&j, &wj) in self.kept().iter().zip(w) {
            full[j] = wj;
        }
        full
    }
}

/// ||v||^2.
pub(crate) fn squared_norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum()
}
