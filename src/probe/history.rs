//! Convergence histories: what an eigensolver knew after each product.
//!
//! [`Recorder`] wraps an operator and watches every product `y = A x` that passes
//! through it. For each it records the Rayleigh quotient `xᵀy / xᵀx` (the power
//! method's estimate) and, when memory allows, the extreme Rayleigh–Ritz values of
//! `A` on the span of every vector applied so far. For Lanczos that span is the
//! Krylov space, so these are exactly its Ritz values after `j` products; for any
//! other solver they are the best estimates its products support. The basis is
//! kept orthonormal by classical Gram–Schmidt applied twice, and `A q` follows from
//! the recorded products by linearity (`A r = y − Σ cᵢ A qᵢ`), so no extra product
//! is spent; inputs mostly inside the span are left out (see [`NEW_DIRECTION`]). Cost per product: `O(j n)` for the projections and `O(j³)` for the
//! projected eigenproblem; memory: two n-vectors per new direction.
//!
//! The recorder acts on the vectors of any [`HistorySpace`]. The Ritz history needs
//! the vectors on the host, so it is kept only in spaces whose vectors are host
//! slices ([`HostSpace`]); on a device space ([`CudaSpace`]) copying two n-vectors
//! per product off the device would cost more than the product, so there only the
//! Rayleigh quotient is recorded, from two device reductions (two scalars cross).

use std::sync::Mutex;

use faer::{Mat, Side};
use serde::Serialize;

use crate::backend::cuda::CudaSpace;
use crate::error::{Error, Result};
use crate::spectral::{HostSpace, OperatorOn, VectorSpace};

/// A vector space the [`Recorder`] can watch: it says whether its vectors are host
/// slices, which the Ritz history needs.
pub trait HistorySpace: VectorSpace {
    /// `x` as a host slice, when the space keeps its vectors on the host.
    fn host_slice<'v>(&self, x: &'v Self::Vector) -> Option<&'v [f64]>;
}

impl HistorySpace for HostSpace {
    fn host_slice<'v>(&self, x: &'v Vec<f64>) -> Option<&'v [f64]> {
        Some(x)
    }
}

impl HistorySpace for CudaSpace {
    fn host_slice<'v>(&self, _x: &'v Self::Vector) -> Option<&'v [f64]> {
        None
    }
}

/// Bytes the Ritz history may hold (two n-vectors per direction); beyond this
/// only Rayleigh quotients are recorded.
pub const HISTORY_BUDGET_BYTES: usize = 512 << 20;

/// An input joins the basis when its part orthogonal to the basis keeps at least
/// this fraction of its norm. `A r` is found by subtracting the images of the
/// basis, which amplifies their rounding by `‖x‖ / ‖r‖`; keeping the ratio at 2 or
/// less keeps the projected matrix accurate to working precision. Lanczos vectors
/// (orthogonal to every earlier input) always join; Ritz vectors applied to verify
/// residuals, which lie in the span, never do.
const NEW_DIRECTION: f64 = 0.5;

/// The estimates after one product.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Products applied so far (this one included).
    pub products: u64,
    /// `xᵀ A x / xᵀ x` of this product's input.
    pub rayleigh: f64,
    /// Largest and smallest Rayleigh–Ritz values on the span of every input so far
    /// (absent when the history is not recorded).
    pub top: Option<f64>,
    pub bottom: Option<f64>,
}

/// An operator that records a [`HistoryPoint`] per product.
pub struct Recorder<A> {
    inner: A,
    state: Mutex<State>,
}

struct State {
    ritz: bool,
    off_host: bool,
    basis: Vec<Vec<f64>>,
    images: Vec<Vec<f64>>,
    /// `basis[i] · images[j]` for `i, j` below the basis length, row `i` first.
    projected: Vec<Vec<f64>>,
    points: Vec<HistoryPoint>,
}

impl<A> Recorder<A> {
    /// Watches `inner` (of dimension `dim`); records Ritz values while at most
    /// `max_products` vectors of its dimension fit in [`HISTORY_BUDGET_BYTES`] twice
    /// over and the vectors are on the host.
    pub fn new(inner: A, dim: usize, max_products: usize) -> Self {
        let bytes = 2 * 8 * dim.saturating_mul(max_products);
        Recorder {
            inner,
            state: Mutex::new(State {
                ritz: bytes <= HISTORY_BUDGET_BYTES,
                off_host: false,
                basis: Vec::new(),
                images: Vec::new(),
                projected: Vec::new(),
                points: Vec::new(),
            }),
        }
    }

    /// Watches `inner`, recording only Rayleigh quotients (what power iteration
    /// itself estimates).
    pub fn rayleigh_only(inner: A) -> Self {
        let recorder = Recorder::new(inner, 0, 0);
        if let Ok(mut state) = recorder.state.lock() {
            state.ritz = false;
        }
        recorder
    }

    /// The points recorded so far, one per product.
    pub fn into_points(self) -> Vec<HistoryPoint> {
        self.state
            .into_inner()
            .map(|s| s.points)
            .unwrap_or_default()
    }

    /// Whether a product's vectors were not on the host (so no Ritz values were
    /// recorded from it on).
    pub fn off_host(&self) -> bool {
        self.state.lock().map(|s| s.off_host).unwrap_or(false)
    }

    /// Records a product whose vectors stay off the host: its Rayleigh quotient only
    /// (the Ritz history stops, as it needs the vectors).
    fn observe_scalars(&self, xx: f64, xy: f64) -> Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Numerical("history recorder poisoned".into()))?;
        state.ritz = false;
        state.off_host = true;
        let rayleigh = if xx > 0.0 { xy / xx } else { 0.0 };
        let products = state.points.len() as u64 + 1;
        state.points.push(HistoryPoint {
            products,
            rayleigh,
            top: None,
            bottom: None,
        });
        Ok(())
    }

    fn observe(&self, x: &[f64], y: &[f64]) -> Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Numerical("history recorder poisoned".into()))?;
        let xx = dot(x, x);
        let rayleigh = if xx > 0.0 { dot(x, y) / xx } else { 0.0 };
        if state.ritz && xx > 0.0 {
            state.absorb(x, y, xx.sqrt());
        }
        let (top, bottom) = if state.ritz && !state.basis.is_empty() {
            let values = state.ritz_values()?;
            (values.last().copied(), values.first().copied())
        } else {
            (None, None)
        };
        let products = state.points.len() as u64 + 1;
        state.points.push(HistoryPoint {
            products,
            rayleigh,
            top,
            bottom,
        });
        Ok(())
    }
}

impl State {
    /// Adds the direction of `x` (with image `y = A x`) to the basis when it is new.
    fn absorb(&mut self, x: &[f64], y: &[f64], norm: f64) {
        let mut r = x.to_vec();
        let mut ar = y.to_vec();
        for _ in 0..2 {
            for (q, aq) in self.basis.iter().zip(&self.images) {
                let c = dot(q, &r);
                axpy(-c, q, &mut r);
                axpy(-c, aq, &mut ar);
            }
        }
        let rest = dot(&r, &r).sqrt();
        if rest <= NEW_DIRECTION * norm {
            return;
        }
        r.iter_mut().for_each(|v| *v /= rest);
        ar.iter_mut().for_each(|v| *v /= rest);
        let new_row: Vec<f64> = self.images.iter().map(|aq| dot(&r, aq)).collect();
        for (row, q) in self.projected.iter_mut().zip(&self.basis) {
            row.push(dot(q, &ar));
        }
        let mut last = new_row;
        last.push(dot(&r, &ar));
        self.projected.push(last);
        self.basis.push(r);
        self.images.push(ar);
    }

    /// Eigenvalues (ascending) of the symmetric part of the projected matrix.
    fn ritz_values(&self) -> Result<Vec<f64>> {
        let m = self.basis.len();
        let t = Mat::from_fn(m, m, |i, j| {
            0.5 * (self.projected[i][j] + self.projected[j][i])
        });
        t.self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| Error::Numerical(format!("Ritz values of the history: {e:?}")))
    }
}

impl<S: HistorySpace, A: OperatorOn<S> + ?Sized> OperatorOn<S> for Recorder<&A> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn apply_in(&self, space: &S, x: &S::Vector, y: &mut S::Vector) -> Result<()> {
        self.inner.apply_in(space, x, y)?;
        match (space.host_slice(x), space.host_slice(y)) {
            (Some(x), Some(y)) => self.observe(x, y),
            _ => self.observe_scalars(space.dot(x, x)?, space.dot(x, y)?),
        }
    }

    fn precision(&self) -> f64 {
        self.inner.precision()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::spectral::{Diagonal, HostSpace, LanczosOptions, lanczos};
    use crate::testing::TestResult;

    #[test]
    fn ritz_history_converges_to_the_extremes_without_extra_products() -> TestResult {
        let values: Vec<f64> = (0..200).map(|i| -3.0 + 0.05 * i as f64).collect();
        let diagonal = Diagonal::new(values);
        let recorder = Recorder::new(&diagonal, 200, 100);
        let options = LanczosOptions {
            k: 1,
            which: crate::spectral::Which::Both,
            tol: 1e-10,
            max_products: 100,
            ..LanczosOptions::default()
        };
        let result = lanczos(&recorder, &HostSpace::new(200), &options, &Silent)?;
        let points = recorder.into_points();
        assert_eq!(points.len() as u64, result.products);
        let last = points.last().ok_or("no history")?;
        let (top, bottom) = (last.top.ok_or("no top")?, last.bottom.ok_or("no bottom")?);
        assert!((top - 6.95).abs() < 1e-9, "{last:?}");
        assert!((bottom + 3.0).abs() < 1e-9, "{last:?}");
        // Every product within the budget has Ritz values at both ends, and they
        // move monotonically outwards (interlacing).
        assert!(points.iter().all(|p| p.top.is_some() && p.bottom.is_some()));
        for w in points.windows(2) {
            assert!(w[1].top >= w[0].top.map(|t| t - 1e-12), "{w:?}");
            assert!(w[1].bottom <= w[0].bottom.map(|b| b + 1e-12), "{w:?}");
        }
        // The first product's Rayleigh quotient is its only Ritz value.
        assert_eq!(
            points[0]
                .top
                .map(|t| (points[0].rayleigh - t).abs() < 1e-12),
            Some(true)
        );
        Ok(())
    }

    #[test]
    fn over_budget_keeps_only_rayleigh_quotients() -> TestResult {
        let diagonal = Diagonal::new(vec![2.0; 4]);
        let recorder = Recorder::new(&diagonal, 4, usize::MAX / 64);
        let mut y = vec![0.0; 4];
        recorder.apply_in(&HostSpace::new(4), &vec![1.0, 0.0, 0.0, 0.0], &mut y)?;
        let points = recorder.into_points();
        assert_eq!(points[0].rayleigh, 2.0);
        assert_eq!(points[0].top, None);
        Ok(())
    }
}
