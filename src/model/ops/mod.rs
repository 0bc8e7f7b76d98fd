//! The network as explicit ops, each with four rules.
//!
//! For an op `y = f(x, theta)`, each rule is a method named as the backend kernel
//! that runs it (`layernorm_backward_jvp` is the kernel of `LayerNorm::backward_jvp`):
//! - **`forward`**: `y`, plus whatever the other rules need (saved state);
//! - **`jvp`**: the tangent `y' = J_x x' + J_theta theta'`;
//! - **`backward`** (the VJP): the adjoints `xb = J_x^T yb`, `thetab = J_theta^T yb`;
//! - **`backward_jvp`** (the JVP of the VJP): the tangents `xb'`, `thetab'` of those
//!   adjoints when `x`, `theta` and `yb` move along `x'`, `theta'`, `yb'`.
//!
//! Sweeping forward with (value, tangent) pairs and back with (adjoint, adjoint
//! tangent) pairs gives the loss, its gradient and the exact Hessian-vector product
//! `H v` in one pass (forward-over-reverse), with no tape and no finite differences.
//! The ops call the kernels of a [`Backend`]; the network in `model::opt` is written
//! once on top of them.
//!
//! Pair layouts (used by the fused rules of [`linear::Linear`]): a forward pair is
//! one buffer `[value; tangent]`, an adjoint pair is `[adjoint tangent; adjoint]`.
//! The adjoint's tangent comes first so that a weight's gradient tangent
//! `yb'^T x + yb^T x'` is the single product `[yb'; yb]^T [x; x']` with `K = 2 rows`.

pub mod attention;
pub mod embedding;
pub mod layernorm;
pub mod linear;
pub mod logprob;
pub mod loss;
pub mod relu;
pub mod residual;

#[cfg(test)]
pub(crate) mod check;

use crate::backend::{Backend, Scalar};

/// The tangent of a parameter tensor in a forward-over-reverse sweep.
pub enum Tangent<'a, T: Scalar, B: Backend<T> + 'a> {
    /// Not perturbed: every term it would feed is skipped.
    Zero,
    /// A dense tangent, laid out like the tensor.
    Dense(B::View<'a>),
    /// A sparse tangent: `values[e]` at flat index `idx[e]` of the tensor (a mask).
    Sparse {
        idx: &'a B::Index,
        values: B::View<'a>,
    },
}

impl<'a, T: Scalar, B: Backend<T> + 'a> Tangent<'a, T, B> {
    /// Whether the tangent is known to be zero.
    pub fn is_zero(&self) -> bool {
        matches!(self, Tangent::Zero)
    }

    /// The dense view, for tensors that are never sparse (biases, LayerNorm).
    ///
    /// Sparse tangents of such small tensors are densified by the caller, so a
    /// sparse one here is a bug.
    pub fn dense(&self) -> Option<B::View<'a>> {
        match self {
            Tangent::Zero => None,
            Tangent::Dense(v) => Some(*v),
            Tangent::Sparse { .. } => unreachable!("invariant: small tensors get dense tangents"),
        }
    }
}

/// Where a parameter's adjoint (its rows of the gradient) or the adjoint's tangent
/// (its rows of `H v`) goes.
pub enum AdjointOut<'a, T: Scalar, B: Backend<T> + 'a> {
    /// Not wanted.
    Skip,
    /// Accumulated into a dense tensor-shaped view.
    Dense(B::ViewMut<'a>),
    /// Accumulated only at the mask entries `idx` into `out` (one value per entry):
    /// a weight's entry is one dot product over the rows, so a mask of k entries
    /// costs `O(k x rows)` instead of the full product.
    Sparse {
        idx: &'a B::Index,
        out: B::ViewMut<'a>,
    },
}

impl<'a, T: Scalar, B: Backend<T> + 'a> AdjointOut<'a, T, B> {
    /// The dense view, for tensors that are never sparse (see [`Tangent::dense`]).
    pub fn dense(self) -> Option<B::ViewMut<'a>> {
        match self {
            AdjointOut::Skip => None,
            AdjointOut::Dense(v) => Some(v),
            AdjointOut::Sparse { .. } => unreachable!("invariant: small tensors get dense outputs"),
        }
    }

    /// Whether anything is wanted.
    pub fn is_wanted(&self) -> bool {
        !matches!(self, AdjointOut::Skip)
    }
}
