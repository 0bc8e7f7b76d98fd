//! Where the algorithms' vectors live: the [`VectorSpace`] trait.
//!
//! Every algorithm in [`crate::spectral`] is written against this trait, never
//! against `Vec<f64>`: dot products, axpys, norms, and the block operations on a
//! stored basis (project onto it, subtract a combination of it, orthogonalize
//! against it, rotate it for a thick restart). [`super::HostSpace`] implements it
//! with rayon on host memory; a CUDA space can implement it with device-resident
//! vectors and cuBLAS/NVRTC kernels, and the algorithms run unchanged.
//!
//! The few fused operations (`axpy_dot`, `axpy_norm`, `axpy_dot_block`,
//! `axpy_subtract_norm`, `update_scale_push`, `scale_and_push`,
//! `basis_orthogonalize`, `basis_project_out`, `basis_combine_many`) exist because at 10^7–10^8 dimensions the algorithms'
//! own work is bound by memory traffic: a fused kernel reads each vector once where
//! the composition of primitives would read it two or three times. Their default
//! bodies compose the primitives, so a new backend only needs the primitives to be
//! correct and can add fused kernels later for speed.
//!
//! Reductions return their scalar to the host (`Result<f64>`): the algorithms make
//! decisions on them (convergence, reorthogonalization), so a device backend
//! synchronizes there, once or twice per operator product.

use serde::{Deserialize, Serialize};

use rand::Rng as _;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::error::Result;
use crate::rng;

/// Precision in which a [`VectorSpace::Basis`] stores its vectors. The working
/// vectors of every algorithm are always f64; `F32` halves the memory and the
/// traffic of the stored Krylov basis at the cost of basis vectors rounded to
/// single precision (Ritz vectors accurate to about 1e-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F64,
    F32,
}

/// The distribution of the entries of a random vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Independent ±1 with equal probability (smallest variance for trace estimation).
    Rademacher,
    /// Independent standard normal entries.
    Gaussian,
}

/// A real vector space of fixed dimension with the operations Krylov methods need.
///
/// Vectors are opaque (`Self::Vector`); a `Basis` is an ordered block of stored
/// vectors, addressed by slot, in the precision chosen when it was created. All
/// reductions must be deterministic for a given thread count (the host space is
/// deterministic for any thread count).
pub trait VectorSpace: Sync {
    /// A vector of this space (host: `Vec<f64>`; CUDA: a device buffer).
    type Vector: Send + Sync;
    /// A block of stored vectors (a Krylov basis, locked Ritz vectors).
    type Basis: Send + Sync;

    /// The dimension n.
    fn dim(&self) -> usize;
    /// A new zero vector.
    fn zeros(&self) -> Result<Self::Vector>;
    /// A vector holding `values` (length n).
    fn upload(&self, values: &[f64]) -> Result<Self::Vector>;
    /// The entries of `x`, copied to host memory.
    fn download(&self, x: &Self::Vector) -> Result<Vec<f64>>;
    /// A random vector from `(seed, stream)` (see [`crate::rng`]): the same numbers
    /// on every backend and for every thread count, so results do not depend on
    /// where the vectors live.
    fn random(&self, distribution: Distribution, seed: u64, stream: u64) -> Result<Self::Vector> {
        self.upload(&random_values(self.dim(), distribution, seed, stream))
    }

    /// `dst = src`.
    fn copy(&self, src: &Self::Vector, dst: &mut Self::Vector) -> Result<()>;
    /// `x · y`.
    fn dot(&self, x: &Self::Vector, y: &Self::Vector) -> Result<f64>;
    /// `‖x‖₂`.
    fn norm(&self, x: &Self::Vector) -> Result<f64> {
        Ok(self.dot(x, x)?.sqrt())
    }
    /// `y += alpha x`.
    fn axpy(&self, alpha: f64, x: &Self::Vector, y: &mut Self::Vector) -> Result<()>;
    /// `x *= alpha`.
    fn scale(&self, alpha: f64, x: &mut Self::Vector) -> Result<()>;
    /// `y += alpha x`, then returns `z · y` (one pass when fused).
    fn axpy_dot(
        &self,
        alpha: f64,
        x: &Self::Vector,
        y: &mut Self::Vector,
        z: &Self::Vector,
    ) -> Result<f64> {
        self.axpy(alpha, x, y)?;
        self.dot(z, y)
    }
    /// `y += alpha x`, then returns `‖y‖₂` (one pass when fused).
    fn axpy_norm(&self, alpha: f64, x: &Self::Vector, y: &mut Self::Vector) -> Result<f64> {
        self.axpy(alpha, x, y)?;
        self.norm(y)
    }

    /// `y += alpha x`, then the reductions a Lanczos step needs from one sweep:
    /// `z · y`, `‖y‖²`, `‖z‖²`, and `v_s · y`, `v_s · z` for the listed slots
    /// (selective orthogonalization folded in).
    fn axpy_dot_block(
        &self,
        alpha: f64,
        x: &Self::Vector,
        y: &mut Self::Vector,
        z: &Self::Vector,
        basis: &Self::Basis,
        slots: &[usize],
    ) -> Result<BlockDots> {
        let z_dot = self.axpy_dot(alpha, x, y, z)?;
        Ok(BlockDots {
            z_dot,
            norm_squared: self.dot(y, y)?,
            z_norm_squared: self.dot(z, z)?,
            slot_dots: self.basis_dots(basis, slots, y)?,
            slot_dots_z: self.basis_dots(basis, slots, z)?,
        })
    }
    /// `y += alpha x - Σ coeffs[i] v_{slots[i]}`, then returns `‖y‖₂`: the second
    /// sweep of a Lanczos step with selective orthogonalization folded in.
    fn axpy_subtract_norm(
        &self,
        alpha: f64,
        x: &Self::Vector,
        y: &mut Self::Vector,
        basis: &Self::Basis,
        slots: &[usize],
        coeffs: &[f64],
    ) -> Result<f64> {
        self.axpy(alpha, x, y)?;
        self.basis_subtract(basis, slots, coeffs, y)?;
        self.norm(y)
    }

    /// `y ← (y + alpha x - Σ coeffs[i] v_{slots[i]}) · scale`, then appends a copy of
    /// `y` to `basis`: the second sweep of a Lanczos step whose norm is already known.
    #[allow(clippy::too_many_arguments)]
    fn update_scale_push(
        &self,
        alpha: f64,
        x: &Self::Vector,
        y: &mut Self::Vector,
        basis: &mut Self::Basis,
        slots: &[usize],
        coeffs: &[f64],
        scale: f64,
    ) -> Result<()> {
        self.axpy(alpha, x, y)?;
        self.basis_subtract(basis, slots, coeffs, y)?;
        self.scale_and_push(scale, y, basis)
    }

    /// An empty basis that can hold up to `capacity` vectors in `precision`.
    /// Memory is taken as vectors are pushed, not up front.
    fn new_basis(&self, capacity: usize, precision: Precision) -> Result<Self::Basis>;
    /// Number of stored vectors.
    fn basis_len(&self, basis: &Self::Basis) -> usize;
    /// The precision the basis stores its vectors in.
    fn basis_precision(&self, basis: &Self::Basis) -> Precision;
    /// Appends a copy of `x` (rounded to the basis precision); fails when full.
    fn basis_push(&self, basis: &mut Self::Basis, x: &Self::Vector) -> Result<()>;
    /// `x *= alpha`, then appends a copy of `x` (one pass when fused).
    fn scale_and_push(
        &self,
        alpha: f64,
        x: &mut Self::Vector,
        basis: &mut Self::Basis,
    ) -> Result<()> {
        self.scale(alpha, x)?;
        self.basis_push(basis, x)
    }
    /// Overwrites slot `slot` (which must exist) with `x`.
    fn basis_set(&self, basis: &mut Self::Basis, slot: usize, x: &Self::Vector) -> Result<()>;
    /// Copies slot `slot` into `out` (promoted to f64).
    fn basis_get(&self, basis: &Self::Basis, slot: usize, out: &mut Self::Vector) -> Result<()>;
    /// Drops every slot from `len` on.
    fn basis_truncate(&self, basis: &mut Self::Basis, len: usize);

    /// `[v_s · x for s in slots]`: one pass over `x` and the listed slots.
    fn basis_dots(
        &self,
        basis: &Self::Basis,
        slots: &[usize],
        x: &Self::Vector,
    ) -> Result<Vec<f64>>;
    /// `x -= Σ coeffs[i] v_{slots[i]}`.
    fn basis_subtract(
        &self,
        basis: &Self::Basis,
        slots: &[usize],
        coeffs: &[f64],
        x: &mut Self::Vector,
    ) -> Result<()>;
    /// Orthogonalizes `x` against the listed slots by classical Gram–Schmidt applied
    /// twice (CGS2: "twice is enough", Giraud, Langou, Rozložník & van den Eshof,
    /// Numer. Math. 101, 2005). Returns the sum of both passes' coefficients and the
    /// norm of the orthogonalized `x`.
    fn basis_orthogonalize(
        &self,
        basis: &Self::Basis,
        slots: &[usize],
        x: &mut Self::Vector,
    ) -> Result<(Vec<f64>, f64)> {
        let first = self.basis_dots(basis, slots, x)?;
        self.basis_subtract(basis, slots, &first, x)?;
        let second = self.basis_dots(basis, slots, x)?;
        self.basis_subtract(basis, slots, &second, x)?;
        let coeffs = first.iter().zip(&second).map(|(a, b)| a + b).collect();
        Ok((coeffs, self.norm(x)?))
    }
    /// One classical Gram–Schmidt pass: `x -= V_S (V_Sᵀ x)` over the listed slots.
    /// Enough when `x` is already nearly orthogonal to them (partial
    /// reorthogonalization). Returns the coefficients and the norm of the result.
    fn basis_project_out(
        &self,
        basis: &Self::Basis,
        slots: &[usize],
        x: &mut Self::Vector,
    ) -> Result<(Vec<f64>, f64)> {
        let coeffs = self.basis_dots(basis, slots, x)?;
        self.basis_subtract(basis, slots, &coeffs, x)?;
        Ok((coeffs, self.norm(x)?))
    }
    /// `out = Σ_i coeffs[i] v_i` over the first `coeffs.len()` slots (a Ritz vector).
    fn basis_combine(
        &self,
        basis: &Self::Basis,
        coeffs: &[f64],
        out: &mut Self::Vector,
    ) -> Result<()>;
    /// `outs[k] = Σ_i coeffs[k][i] v_i` for several coefficient vectors at once (one
    /// pass over the basis on fused backends).
    fn basis_combine_many(
        &self,
        basis: &Self::Basis,
        coeffs: &[Vec<f64>],
        outs: &mut [Self::Vector],
    ) -> Result<()> {
        for (c, out) in coeffs.iter().zip(outs.iter_mut()) {
            self.basis_combine(basis, c, out)?;
        }
        Ok(())
    }
    /// Thick-restart rotation in place: slots `0..cols` become `V S`, where `V` is
    /// slots `0..rows` and `S` the column-major `rows × cols` matrix `transform`;
    /// every slot from `cols` to `rows - 1` is dropped, later slots are kept (moved
    /// down). Costs one pass over the `rows` vectors.
    fn basis_rotate(
        &self,
        basis: &mut Self::Basis,
        transform: &[f64],
        rows: usize,
        cols: usize,
    ) -> Result<()>;
    /// The Gram matrix `V^T V` of all stored vectors (column-major), for measuring
    /// the loss of orthogonality. One pass over the basis, `O(len² n)` flops.
    fn basis_gram(&self, basis: &Self::Basis) -> Result<Vec<f64>>;
}

/// The reductions of [`VectorSpace::axpy_dot_block`].
#[derive(Clone, Debug, PartialEq)]
pub struct BlockDots {
    /// `z · y`.
    pub z_dot: f64,
    /// `‖y‖²`.
    pub norm_squared: f64,
    /// `‖z‖²`.
    pub z_norm_squared: f64,
    /// `v_s · y` per slot.
    pub slot_dots: Vec<f64>,
    /// `v_s · z` per slot.
    pub slot_dots_z: Vec<f64>,
}

/// `max_{i,j} |G_ij - δ_ij|` for a column-major Gram matrix of order `m`: the loss
/// of orthogonality of the vectors it was computed from.
pub fn orthogonality_loss(gram: &[f64], m: usize) -> f64 {
    let mut loss: f64 = 0.0;
    for j in 0..m {
        for i in 0..m {
            let target = if i == j { 1.0 } else { 0.0 };
            loss = loss.max((gram[i + j * m] - target).abs());
        }
    }
    loss
}

/// Entries per random-number stream, so that random vectors are generated in
/// parallel yet identical for every thread count.
const RANDOM_CHUNK: usize = 1 << 16;

/// Fills `out` with random values: chunk `c` of `RANDOM_CHUNK` entries comes from
/// stream `stream_id([stream, c])` of `seed`, so the values do not depend on the
/// thread count.
pub(crate) fn fill_random(out: &mut [f64], distribution: Distribution, seed: u64, stream: u64) {
    out.par_chunks_mut(RANDOM_CHUNK)
        .enumerate()
        .for_each(|(c, piece)| {
            let mut rng = rng::stream(seed, rng::stream_id(&[stream, c as u64]));
            match distribution {
                Distribution::Rademacher => {
                    for x in piece.iter_mut() {
                        *x = if rng.random::<bool>() { 1.0 } else { -1.0 };
                    }
                }
                Distribution::Gaussian => {
                    for x in piece.iter_mut() {
                        *x = rng.sample(StandardNormal);
                    }
                }
            }
        });
}

/// A fresh random vector of length `n` (see [`fill_random`]).
pub(crate) fn random_values(
    n: usize,
    distribution: Distribution,
    seed: u64,
    stream: u64,
) -> Vec<f64> {
    let mut values = vec![0.0; n];
    fill_random(&mut values, distribution, seed, stream);
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn random_vectors_are_reproducible_and_thread_independent() -> TestResult {
        let n = 3 * RANDOM_CHUNK + 1;
        let a = random_values(n, Distribution::Rademacher, 5, 9);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
        let b = pool.install(|| random_values(n, Distribution::Rademacher, 5, 9));
        assert_eq!(a, b);
        assert!(a.iter().all(|x| x.abs() == 1.0));
        let c = random_values(n, Distribution::Rademacher, 5, 10);
        assert_ne!(a, c);
        Ok(())
    }
}
