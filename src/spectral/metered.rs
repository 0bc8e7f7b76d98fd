//! A [`VectorSpace`] wrapper that counts memory traffic: every vector read or
//! written in full counts one pass (half for a vector stored in f32). Used by the
//! benchmark to report the vector passes per product, a machine-independent
//! measure of an algorithm's own cost at large dimensions, where that cost is
//! bound by memory bandwidth.

use std::sync::atomic::{AtomicU64, Ordering};

use super::vector::{BlockDots, Distribution, Precision, VectorSpace};
use crate::error::Result;

/// `inner` with a pass counter.
pub struct Metered<S> {
    inner: S,
    /// Passes counted in halves (f32 vectors count one half).
    halves: AtomicU64,
}

impl<S: VectorSpace> Metered<S> {
    pub fn new(inner: S) -> Self {
        Metered {
            inner,
            halves: AtomicU64::new(0),
        }
    }

    /// The wrapped space.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Full-vector passes counted so far.
    pub fn passes(&self) -> f64 {
        self.halves.load(Ordering::Relaxed) as f64 / 2.0
    }

    /// Resets the counter.
    pub fn reset(&self) {
        self.halves.store(0, Ordering::Relaxed);
    }

    fn count(&self, vectors: usize) {
        self.halves.fetch_add(2 * vectors as u64, Ordering::Relaxed);
    }

    /// Counts `slots` stored vectors of `basis`.
    fn count_stored(&self, basis: &S::Basis, slots: usize) {
        let per = match self.inner.basis_precision(basis) {
            Precision::F64 => 2,
            Precision::F32 => 1,
        };
        self.halves
            .fetch_add((per * slots) as u64, Ordering::Relaxed);
    }
}

impl<S: VectorSpace> VectorSpace for Metered<S> {
    type Vector = S::Vector;
    type Basis = S::Basis;

    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn zeros(&self) -> Result<S::Vector> {
        self.count(1);
        self.inner.zeros()
    }
    fn upload(&self, values: &[f64]) -> Result<S::Vector> {
        self.count(1);
        self.inner.upload(values)
    }
    fn download(&self, x: &S::Vector) -> Result<Vec<f64>> {
        self.count(1);
        self.inner.download(x)
    }
    fn random(&self, distribution: Distribution, seed: u64, stream: u64) -> Result<S::Vector> {
        self.count(1);
        self.inner.random(distribution, seed, stream)
    }
    fn copy(&self, src: &S::Vector, dst: &mut S::Vector) -> Result<()> {
        self.count(2);
        self.inner.copy(src, dst)
    }
    fn dot(&self, x: &S::Vector, y: &S::Vector) -> Result<f64> {
        self.count(2);
        self.inner.dot(x, y)
    }
    fn norm(&self, x: &S::Vector) -> Result<f64> {
        self.count(1);
        self.inner.norm(x)
    }
    fn axpy(&self, alpha: f64, x: &S::Vector, y: &mut S::Vector) -> Result<()> {
        self.count(3);
        self.inner.axpy(alpha, x, y)
    }
    fn scale(&self, alpha: f64, x: &mut S::Vector) -> Result<()> {
        self.count(2);
        self.inner.scale(alpha, x)
    }
    fn axpy_dot(&self, alpha: f64, x: &S::Vector, y: &mut S::Vector, z: &S::Vector) -> Result<f64> {
        self.count(4);
        self.inner.axpy_dot(alpha, x, y, z)
    }
    fn axpy_norm(&self, alpha: f64, x: &S::Vector, y: &mut S::Vector) -> Result<f64> {
        self.count(3);
        self.inner.axpy_norm(alpha, x, y)
    }
    fn axpy_dot_block(
        &self,
        alpha: f64,
        x: &S::Vector,
        y: &mut S::Vector,
        z: &S::Vector,
        basis: &S::Basis,
        slots: &[usize],
    ) -> Result<BlockDots> {
        self.count(4);
        self.count_stored(basis, slots.len());
        self.inner.axpy_dot_block(alpha, x, y, z, basis, slots)
    }
    fn axpy_subtract_norm(
        &self,
        alpha: f64,
        x: &S::Vector,
        y: &mut S::Vector,
        basis: &S::Basis,
        slots: &[usize],
        coeffs: &[f64],
    ) -> Result<f64> {
        self.count(3);
        self.count_stored(basis, slots.len());
        self.inner
            .axpy_subtract_norm(alpha, x, y, basis, slots, coeffs)
    }
    fn update_scale_push(
        &self,
        alpha: f64,
        x: &S::Vector,
        y: &mut S::Vector,
        basis: &mut S::Basis,
        slots: &[usize],
        coeffs: &[f64],
        scale: f64,
    ) -> Result<()> {
        self.count(3);
        self.count_stored(basis, slots.len() + 1);
        self.inner
            .update_scale_push(alpha, x, y, basis, slots, coeffs, scale)
    }
    fn new_basis(&self, capacity: usize, precision: Precision) -> Result<S::Basis> {
        self.inner.new_basis(capacity, precision)
    }
    fn basis_len(&self, basis: &S::Basis) -> usize {
        self.inner.basis_len(basis)
    }
    fn basis_precision(&self, basis: &S::Basis) -> Precision {
        self.inner.basis_precision(basis)
    }
    fn basis_push(&self, basis: &mut S::Basis, x: &S::Vector) -> Result<()> {
        self.count(1);
        self.count_stored(basis, 1);
        self.inner.basis_push(basis, x)
    }
    fn scale_and_push(&self, alpha: f64, x: &mut S::Vector, basis: &mut S::Basis) -> Result<()> {
        self.count(2);
        self.count_stored(basis, 1);
        self.inner.scale_and_push(alpha, x, basis)
    }
    fn basis_set(&self, basis: &mut S::Basis, slot: usize, x: &S::Vector) -> Result<()> {
        self.count(1);
        self.count_stored(basis, 1);
        self.inner.basis_set(basis, slot, x)
    }
    fn basis_get(&self, basis: &S::Basis, slot: usize, out: &mut S::Vector) -> Result<()> {
        self.count(1);
        self.count_stored(basis, 1);
        self.inner.basis_get(basis, slot, out)
    }
    fn basis_truncate(&self, basis: &mut S::Basis, len: usize) {
        self.inner.basis_truncate(basis, len)
    }
    fn basis_dots(&self, basis: &S::Basis, slots: &[usize], x: &S::Vector) -> Result<Vec<f64>> {
        self.count(1);
        self.count_stored(basis, slots.len());
        self.inner.basis_dots(basis, slots, x)
    }
    fn basis_subtract(
        &self,
        basis: &S::Basis,
        slots: &[usize],
        coeffs: &[f64],
        x: &mut S::Vector,
    ) -> Result<()> {
        self.count(2);
        self.count_stored(basis, slots.len());
        self.inner.basis_subtract(basis, slots, coeffs, x)
    }
    fn basis_orthogonalize(
        &self,
        basis: &S::Basis,
        slots: &[usize],
        x: &mut S::Vector,
    ) -> Result<(Vec<f64>, f64)> {
        self.count(5);
        self.count_stored(basis, 3 * slots.len());
        self.inner.basis_orthogonalize(basis, slots, x)
    }
    fn basis_project_out(
        &self,
        basis: &S::Basis,
        slots: &[usize],
        x: &mut S::Vector,
    ) -> Result<(Vec<f64>, f64)> {
        self.count(3);
        self.count_stored(basis, 2 * slots.len());
        self.inner.basis_project_out(basis, slots, x)
    }
    fn basis_combine(&self, basis: &S::Basis, coeffs: &[f64], out: &mut S::Vector) -> Result<()> {
        self.count(1);
        self.count_stored(basis, coeffs.len());
        self.inner.basis_combine(basis, coeffs, out)
    }
    fn basis_combine_many(
        &self,
        basis: &S::Basis,
        coeffs: &[Vec<f64>],
        outs: &mut [S::Vector],
    ) -> Result<()> {
        self.count(outs.len());
        self.count_stored(basis, coeffs.iter().map(Vec::len).max().unwrap_or(0));
        self.inner.basis_combine_many(basis, coeffs, outs)
    }
    fn basis_rotate(
        &self,
        basis: &mut S::Basis,
        transform: &[f64],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.count_stored(basis, rows + cols);
        self.inner.basis_rotate(basis, transform, rows, cols)
    }
    fn basis_gram(&self, basis: &S::Basis) -> Result<Vec<f64>> {
        self.count_stored(basis, self.inner.basis_len(basis));
        self.inner.basis_gram(basis)
    }
}
