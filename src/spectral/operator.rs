//! Linear operators: what the spectral algorithms see of a matrix.
//!
//! Two traits meet here.
//!
//! - [`LinearOperator`] is the host contract: `y = A x` on `f64` slices for a
//!   symmetric `A`, an optional batched apply, an optional cheap diagonal, and a name
//!   for reports. Dense matrices, masks (principal sub-operators), shifts, the theory
//!   lab's Hessian and CPU Hessian-vector products implement it.
//! - [`OperatorOn<S>`] is what the algorithms call: an operator acting on the vectors
//!   of a [`VectorSpace`] `S`. Every `LinearOperator` is an `OperatorOn<HostSpace>`
//!   through a blanket implementation, so host code never sees the distinction.
//!
//! Why not make the algorithms call the host trait and copy? A GPU Hessian-vector
//! product at 10^8 dimensions takes about 25 ms; moving its input and output across
//! PCIe (1.6 GB) takes longer than that. So a device backend implements
//! `OperatorOn<CudaSpace>` directly on device-resident vectors, and the algorithms,
//! generic over the space, never move a vector off the device. A host-only operator
//! can still be used with a device space through an adapter that copies, paying the
//! transfers knowingly.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::host::HostSpace;
use super::vector::VectorSpace;
use crate::error::{Error, Result};

/// A symmetric linear operator on `R^n`, applied to host `f64` slices.
pub trait LinearOperator: Sync {
    /// The dimension n.
    fn dim(&self) -> usize;
    /// A short description for reports (`dense 2000x2000`, `masked Hessian p=0.1`).
    fn name(&self) -> String;
    /// `y = A x` (both of length n).
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()>;
    /// `ys[j] = A xs[j]` for every column; override when a batch is cheaper than its
    /// columns one by one (a dense matrix times a block is one GEMM).
    fn apply_batch(&self, xs: &[&[f64]], ys: &mut [&mut [f64]]) -> Result<()> {
        for (x, y) in xs.iter().zip(ys.iter_mut()) {
            self.apply(x, y)?;
        }
        Ok(())
    }
    /// The diagonal of `A`, when it is cheap to form (`O(n)` or close); `None`
    /// otherwise. Enables the exact trace.
    fn diagonal(&self) -> Option<Vec<f64>> {
        None
    }
    /// The unit roundoff of the arithmetic a product runs in (f64's unless the
    /// operator computes in a coarser type): residuals much below this, relative
    /// to `‖A‖`, are out of reach and no algorithm should wait for them.
    fn precision(&self) -> f64 {
        f64::EPSILON
    }
}

impl<A: LinearOperator + ?Sized> LinearOperator for &A {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        (**self).apply(x, y)
    }
    fn apply_batch(&self, xs: &[&[f64]], ys: &mut [&mut [f64]]) -> Result<()> {
        (**self).apply_batch(xs, ys)
    }
    fn diagonal(&self) -> Option<Vec<f64>> {
        (**self).diagonal()
    }
    fn precision(&self) -> f64 {
        (**self).precision()
    }
}

/// A symmetric operator acting on the vectors of the space `S`: the trait the
/// algorithms are generic over.
pub trait OperatorOn<S: VectorSpace>: Sync {
    /// The dimension n.
    fn dim(&self) -> usize;
    /// A short description for reports.
    fn name(&self) -> String;
    /// `y = A x`.
    fn apply_in(&self, space: &S, x: &S::Vector, y: &mut S::Vector) -> Result<()>;
    /// `ys[j] = A xs[j]` for every column.
    fn apply_batch_in(&self, space: &S, xs: &[&S::Vector], ys: &mut [S::Vector]) -> Result<()> {
        for (x, y) in xs.iter().zip(ys.iter_mut()) {
            self.apply_in(space, x, y)?;
        }
        Ok(())
    }
    /// As [`LinearOperator::precision`].
    fn precision(&self) -> f64 {
        f64::EPSILON
    }
}

/// Checks that `op` acts on the vectors of `space` (the same dimension), as every
/// algorithm does before its first product.
pub(crate) fn check_space<S, A>(op: &A, space: &S) -> Result<()>
where
    S: VectorSpace,
    A: OperatorOn<S> + ?Sized,
{
    if op.dim() != space.dim() {
        return Err(Error::ShapeMismatch {
            name: "vector space".into(),
            expected: vec![op.dim()],
            found: vec![space.dim()],
        });
    }
    Ok(())
}

impl<A: LinearOperator + ?Sized> OperatorOn<HostSpace> for A {
    fn dim(&self) -> usize {
        LinearOperator::dim(self)
    }
    fn name(&self) -> String {
        LinearOperator::name(self)
    }
    fn apply_in(&self, _space: &HostSpace, x: &Vec<f64>, y: &mut Vec<f64>) -> Result<()> {
        self.apply(x, y)
    }
    fn apply_batch_in(
        &self,
        _space: &HostSpace,
        xs: &[&Vec<f64>],
        ys: &mut [Vec<f64>],
    ) -> Result<()> {
        let xs: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
        let mut ys: Vec<&mut [f64]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
        self.apply_batch(&xs, &mut ys)
    }
    fn precision(&self) -> f64 {
        LinearOperator::precision(self)
    }
}

/// Checks the lengths of `y = A x` against the operator's dimension.
pub(crate) fn check_apply(name: &str, n: usize, x: &[f64], y: &[f64]) -> Result<()> {
    if x.len() != n || y.len() != n {
        return Err(Error::ShapeMismatch {
            name: format!("{name} operand"),
            expected: vec![n],
            found: vec![if x.len() != n { x.len() } else { y.len() }],
        });
    }
    Ok(())
}

/// Counts the products applied through it (batched columns count one each), so a
/// test or a report can confirm the product counts the algorithms return.
pub struct Counting<A> {
    inner: A,
    products: AtomicU64,
}

impl<A: LinearOperator> Counting<A> {
    /// Wraps `inner` with a zero count.
    pub fn new(inner: A) -> Self {
        Counting {
            inner,
            products: AtomicU64::new(0),
        }
    }

    /// Products applied so far.
    pub fn products(&self) -> u64 {
        self.products.load(Ordering::Relaxed)
    }

    /// The wrapped operator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl<A: LinearOperator> LinearOperator for Counting<A> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        self.products.fetch_add(1, Ordering::Relaxed);
        self.inner.apply(x, y)
    }
    fn apply_batch(&self, xs: &[&[f64]], ys: &mut [&mut [f64]]) -> Result<()> {
        self.products.fetch_add(xs.len() as u64, Ordering::Relaxed);
        self.inner.apply_batch(xs, ys)
    }
    fn diagonal(&self) -> Option<Vec<f64>> {
        self.inner.diagonal()
    }
    fn precision(&self) -> f64 {
        self.inner.precision()
    }
}

/// `scale · A + shift · I`: turns smallest into largest (`scale = -1`), moves a
/// spectrum away from zero, or normalizes it.
pub struct ShiftScale<A> {
    inner: A,
    scale: f64,
    shift: f64,
}

impl<A: LinearOperator> ShiftScale<A> {
    /// The operator `scale · inner + shift · I`.
    pub fn new(inner: A, scale: f64, shift: f64) -> Self {
        ShiftScale {
            inner,
            scale,
            shift,
        }
    }
}

impl<A: LinearOperator> LinearOperator for ShiftScale<A> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn name(&self) -> String {
        format!("{} * ({}) + {}", self.scale, self.inner.name(), self.shift)
    }
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        self.inner.apply(x, y)?;
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = self.scale * *yi + self.shift * xi;
        }
        Ok(())
    }
    fn apply_batch(&self, xs: &[&[f64]], ys: &mut [&mut [f64]]) -> Result<()> {
        self.inner.apply_batch(xs, ys)?;
        for (x, y) in xs.iter().zip(ys.iter_mut()) {
            for (yi, xi) in y.iter_mut().zip(x.iter()) {
                *yi = self.scale * *yi + self.shift * xi;
            }
        }
        Ok(())
    }
    fn diagonal(&self) -> Option<Vec<f64>> {
        let mut d = self.inner.diagonal()?;
        for v in &mut d {
            *v = self.scale * *v + self.shift;
        }
        Some(d)
    }
    fn precision(&self) -> f64 {
        self.inner.precision()
    }
}

/// `A` restricted to an index set `I`: the operator `x ↦ (A x̃)_I` on `R^|I|`, where
/// `x̃` is `x` scattered into the coordinates `I` of a zero vector. This is the
/// Hessian of a loss restricted to the weights a mask leaves trainable; by Cauchy
/// interlacing its eigenvalues lie within the spectrum of `A`.
///
/// Each product scatters, applies `A` at full size, and gathers; the two full-size
/// buffers are allocated once and reused (guarded by a mutex, so concurrent applies
/// serialize).
pub struct PrincipalSubOperator<A> {
    inner: A,
    indices: Vec<usize>,
    buffers: Mutex<(Vec<f64>, Vec<f64>)>,
}

impl<A: LinearOperator> PrincipalSubOperator<A> {
    /// The restriction of `inner` to `indices`, which must be strictly increasing
    /// and below `inner.dim()`.
    pub fn new(inner: A, indices: Vec<usize>) -> Result<Self> {
        let n = inner.dim();
        if indices.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::arg("indices", "must be strictly increasing"));
        }
        if let Some(&last) = indices.last().filter(|&&last| last >= n) {
            return Err(Error::arg(
                "indices",
                format!("index {last} out of range for dimension {n}"),
            ));
        }
        Ok(PrincipalSubOperator {
            inner,
            indices,
            buffers: Mutex::new((Vec::new(), Vec::new())),
        })
    }

    /// The retained indices.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<A: LinearOperator> LinearOperator for PrincipalSubOperator<A> {
    fn dim(&self) -> usize {
        self.indices.len()
    }
    fn name(&self) -> String {
        format!(
            "{} restricted to {} of {} coordinates",
            self.inner.name(),
            self.indices.len(),
            self.inner.dim()
        )
    }
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        check_apply("principal sub-operator", self.indices.len(), x, y)?;
        let n = self.inner.dim();
        let mut guard = self
            .buffers
            .lock()
            .map_err(|_| Error::Numerical("a previous product panicked".into()))?;
        let (full_x, full_y) = &mut *guard;
        full_x.clear();
        full_x.resize(n, 0.0);
        full_y.resize(n, 0.0);
        for (&i, &v) in self.indices.iter().zip(x) {
            full_x[i] = v;
        }
        self.inner.apply(full_x, full_y)?;
        for (&i, out) in self.indices.iter().zip(y.iter_mut()) {
            *out = full_y[i];
        }
        Ok(())
    }
    fn diagonal(&self) -> Option<Vec<f64>> {
        let d = self.inner.diagonal()?;
        Some(self.indices.iter().map(|&i| d[i]).collect())
    }
    fn precision(&self) -> f64 {
        self.inner.precision()
    }
}

/// `D A D` for a diagonal `D = diag(scale)`: a symmetric operator similar to
/// `D^2 A`. With `scale = P^-1/2` it has the eigenvalues of `P^-1 A`, the
/// curvature a diagonally preconditioned step (Adam's) sees.
pub struct DiagonalSimilarity<A> {
    inner: A,
    scale: Vec<f64>,
}

impl<A: LinearOperator> DiagonalSimilarity<A> {
    /// `diag(scale) inner diag(scale)`; `scale` must be finite and as long as the
    /// operator's dimension.
    pub fn new(inner: A, scale: Vec<f64>) -> Result<Self> {
        if scale.len() != inner.dim() {
            return Err(Error::ShapeMismatch {
                name: "diagonal scale".into(),
                expected: vec![inner.dim()],
                found: vec![scale.len()],
            });
        }
        if let Some(i) = scale.iter().position(|s| !s.is_finite()) {
            return Err(Error::NonFinite(format!("diagonal scale entry {i}")));
        }
        Ok(DiagonalSimilarity { inner, scale })
    }
}

impl<A: LinearOperator> LinearOperator for DiagonalSimilarity<A> {
    fn dim(&self) -> usize {
        self.scale.len()
    }
    fn name(&self) -> String {
        format!("D ({}) D", self.inner.name())
    }
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        check_apply("diagonal similarity", self.scale.len(), x, y)?;
        let scaled: Vec<f64> = x.iter().zip(&self.scale).map(|(x, s)| x * s).collect();
        self.inner.apply(&scaled, y)?;
        for (yi, s) in y.iter_mut().zip(&self.scale) {
            *yi *= s;
        }
        Ok(())
    }
    fn diagonal(&self) -> Option<Vec<f64>> {
        let d = self.inner.diagonal()?;
        Some(d.iter().zip(&self.scale).map(|(a, s)| a * s * s).collect())
    }
    fn precision(&self) -> f64 {
        self.inner.precision()
    }
}

/// A diagonal matrix: the simplest operator with a known spectrum, and the test bed
/// for the memory-bounded Lanczos mode at 10^5–10^7 dimensions.
pub struct Diagonal {
    values: Vec<f64>,
}

impl Diagonal {
    /// `diag(values)`.
    pub fn new(values: Vec<f64>) -> Self {
        Diagonal { values }
    }

    /// The diagonal entries (the eigenvalues).
    pub fn values(&self) -> &[f64] {
        &self.values
    }
}

impl LinearOperator for Diagonal {
    fn dim(&self) -> usize {
        self.values.len()
    }
    fn name(&self) -> String {
        format!("diagonal {}", self.values.len())
    }
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        use rayon::prelude::*;
        check_apply("diagonal", self.values.len(), x, y)?;
        y.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .zip(self.values.par_chunks(1 << 14))
            .for_each(|((yc, xc), dc)| {
                for ((yi, xi), di) in yc.iter_mut().zip(xc).zip(dc) {
                    *yi = di * xi;
                }
            });
        Ok(())
    }
    fn diagonal(&self) -> Option<Vec<f64>> {
        Some(self.values.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn wrappers_compose_and_count() -> TestResult {
        let d = Counting::new(Diagonal::new(vec![1.0, 2.0, 3.0, 4.0]));
        let shifted = ShiftScale::new(&d, -2.0, 1.0);
        let sub = PrincipalSubOperator::new(&shifted, vec![1, 3])?;
        let mut y = vec![0.0; 2];
        sub.apply(&[1.0, 1.0], &mut y)?;
        assert_eq!(y, vec![-3.0, -7.0]);
        assert_eq!(
            sub.diagonal().ok_or("the sub-operator has no diagonal")?,
            vec![-3.0, -7.0]
        );
        assert_eq!(d.products(), 1);
        assert!(PrincipalSubOperator::new(&d, vec![2, 1]).is_err());
        assert!(PrincipalSubOperator::new(&d, vec![4]).is_err());
        Ok(())
    }

    #[test]
    fn diagonal_similarity_scales_both_sides() -> TestResult {
        use crate::spectral::DenseSymmetric;
        // A = [[2, 1], [1, 3]], D = diag(2, 0.5): D A D = [[8, 1], [1, 0.75]]
        let a = DenseSymmetric::from_row_major(&[2.0, 1.0, 1.0, 3.0], 2, "A", 0.0)?;
        let dad = DiagonalSimilarity::new(&a, vec![2.0, 0.5])?;
        let mut y = vec![0.0; 2];
        dad.apply(&[1.0, 0.0], &mut y)?;
        assert_eq!(y, vec![8.0, 1.0]);
        dad.apply(&[0.0, 1.0], &mut y)?;
        assert_eq!(y, vec![1.0, 0.75]);
        assert!(DiagonalSimilarity::new(&a, vec![1.0]).is_err());
        assert!(DiagonalSimilarity::new(&a, vec![1.0, f64::NAN]).is_err());
        Ok(())
    }
}
