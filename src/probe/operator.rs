//! The Hessian of a model's loss over a whole dataset, as a [`LinearOperator`].
//!
//! The operator acts on the coordinates a [`Restriction`] keeps: all N parameters
//! (the full Hessian), or the k flat indices of a mask (the masked Hessian
//! `P H Pᵀ`, also used with every index of a scope for the whole-scope Hessian).
//! Each product is one forward-over-reverse sweep of the engine over every batch
//! of the dataset ([`Objective`]), so the operator is the Hessian of the exact
//! dataset mean, not of a minibatch.
//!
//! Two exact ways to apply a restricted Hessian ([`ProductPath`]): the engine's
//! masked product, whose tangent and weight-gradient work is `O(k x tokens)`
//! scalar operations, or the dense product (matrix products throughout) followed by
//! a gather. The masked one wins for sparse masks, the dense one for dense index
//! sets such as a whole scope (bundled model, f32, 32 sequences: whole qv scope 333
//! ms masked against 89 ms dense; ratio 1e-3 about equal); `Auto` takes the
//! masked path while `k <= N / 20`. Vectors cross to the backend in the model's
//! precision and come back as f64; products and the time spent in them are
//! counted, so reports can split wall time between products and everything else.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::model::{
    Batch, Footprint, Memory, Objective, Operation, Opt, OptConfig, ParamLayout, PassScalars,
    PassShape,
};
use crate::spectral::LinearOperator;
use crate::spectral::operator::check_apply;

/// Which coordinates of the parameter vector the Hessian is restricted to.
#[derive(Clone, Debug, PartialEq)]
pub enum Restriction {
    /// Every parameter: the full N x N Hessian.
    Full,
    /// The sorted, distinct flat indices of a mask (or of a whole scope): the
    /// principal submatrix `H[idx, idx]`, applied through the engine's masked
    /// product (which never forms the N-vector of the product).
    Indices(Vec<u64>),
}

impl Restriction {
    /// The operator's dimension on a model of `total` parameters.
    pub fn dim(&self, total: usize) -> usize {
        match self {
            Restriction::Full => total,
            Restriction::Indices(idx) => idx.len(),
        }
    }

    /// The kept flat indices (`0..total` for the full Hessian).
    pub fn indices(&self, total: usize) -> Vec<u64> {
        match self {
            Restriction::Full => (0..total as u64).collect(),
            Restriction::Indices(idx) => idx.clone(),
        }
    }
}

/// How a restricted product is computed (both are exact).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProductPath {
    /// Masked while `k <= N / 20`, dense and gathered beyond.
    #[default]
    Auto,
    /// The engine's masked product (never forms an N-vector).
    Masked,
    /// The full product of the zero-padded vector, then its rows at the indices.
    Gathered,
}

/// The largest `k / N` for which [`ProductPath::Auto`] takes the masked path.
const MASKED_DENSITY_LIMIT: f64 = 0.05;

impl ProductPath {
    /// Whether a restriction to `k` of `total` coordinates takes the engine's
    /// masked product.
    pub fn is_masked(self, k: usize, total: usize) -> bool {
        match self {
            ProductPath::Masked => true,
            ProductPath::Gathered => false,
            ProductPath::Auto => k as f64 <= MASKED_DENSITY_LIMIT * total as f64,
        }
    }
}

/// The memory of a [`HessianOperator`] on a model of `config` in a scalar of
/// `scalar_bytes` over batches of `shapes`, restricted to `k` coordinates (`None`:
/// the full Hessian): the weights, the product's pass (stored or recomputed), its
/// input and output on the backend (k-vectors on the masked path, N-vectors
/// otherwise) and, when `host_too` (the CPU, where both are the same memory), their
/// host images.
pub fn operator_footprint(
    config: &OptConfig,
    scalar_bytes: usize,
    shapes: &[PassShape],
    k: Option<usize>,
    path: ProductPath,
    host_too: bool,
) -> Footprint {
    let total = ParamLayout::new(config).total();
    let masked = k.is_some_and(|k| path.is_masked(k, total));
    let k = k.unwrap_or(total);
    let (op, width) = if masked {
        (Operation::MaskedHvp, k)
    } else {
        (Operation::Hvp { gradient: false }, total)
    };
    let footprint = Footprint::new(config, scalar_bytes, shapes, op, k);
    let host = if host_too {
        2 * width * scalar_bytes
    } else {
        0
    };
    footprint.plus_vectors(host as u64)
}

/// What a product also measures besides `H v`: the loss and the directional
/// derivative `g · v` (both over the whole dataset).
pub type Scalars = PassScalars;

/// The (restricted) Hessian of the dataset loss of a model. Products are
/// serialized (the engine reuses one workspace); each costs one sweep over the
/// dataset.
pub struct HessianOperator<'m, T: Scalar, B: Backend<T>> {
    model: &'m Opt<T, B>,
    state: Mutex<State<'m, T, B>>,
    restriction_is_full: bool,
    /// The indices, when the product is dense and gathered.
    gather: Option<Vec<usize>>,
    dim: usize,
    total: usize,
    loss_terms: usize,
    products: AtomicU64,
    nanos: AtomicU64,
}

struct State<'m, T: Scalar, B: Backend<T>> {
    objective: Objective<'m, T, B>,
    /// Host images of the backend's input and output (N-vectors when gathering).
    host_in: Vec<T>,
    host_out: Vec<T>,
    device_in: B::Buf,
    device_out: B::Buf,
    /// The gathered path's indices on the backend, uploaded by the first
    /// [`HessianOperator::apply_on_backend`] (the host path never needs them).
    gather_index: Option<B::Index>,
}

impl<'m, T: Scalar, B: Backend<T>> HessianOperator<'m, T, B> {
    /// The network whose Hessian this is.
    pub fn model(&self) -> &'m Opt<T, B> {
        self.model
    }

    /// The Hessian of `model`'s mean loss over `batches`, restricted to
    /// `restriction`, with the product path chosen automatically. Checks and
    /// uploads every batch.
    pub fn new(model: &'m Opt<T, B>, batches: &[Batch], restriction: &Restriction) -> Result<Self> {
        Self::with_path(model, batches, restriction, ProductPath::Auto)
    }

    /// As [`HessianOperator::new`], with the product path given.
    pub fn with_path(
        model: &'m Opt<T, B>,
        batches: &[Batch],
        restriction: &Restriction,
        path: ProductPath,
    ) -> Result<Self> {
        Self::with_options(model, batches, restriction, path, Memory::Auto)
    }

    /// As [`HessianOperator::with_path`], the products' passes storing or
    /// recomputing the blocks' activations as `memory` says (see
    /// [`Objective::set_memory`]; [`operator_footprint`] counts what each needs).
    pub fn with_options(
        model: &'m Opt<T, B>,
        batches: &[Batch],
        restriction: &Restriction,
        path: ProductPath,
        memory: Memory,
    ) -> Result<Self> {
        let total = model.num_params();
        let mut objective = Objective::new(model, batches)?;
        objective.set_memory(memory);
        let (restriction_is_full, gather) = match restriction {
            Restriction::Full => (true, None),
            Restriction::Indices(idx) => {
                if idx.is_empty() {
                    return Err(Error::arg(
                        "--ratio",
                        "the mask keeps no parameter (k = 0): raise the ratio or change the seed",
                    ));
                }
                if let Some(&last) = idx.last()
                    && last as usize >= total
                {
                    return Err(Error::arg(
                        "--mask",
                        format!("index {last} is outside the model's {total} parameters"),
                    ));
                }
                if path.is_masked(idx.len(), total) {
                    objective.set_mask(idx)?;
                    (false, None)
                } else {
                    (false, Some(idx.iter().map(|&i| i as usize).collect()))
                }
            }
        };
        let dim = restriction.dim(total);
        let width = if restriction_is_full || gather.is_some() {
            total
        } else {
            dim
        };
        let b = model.backend();
        let state = State {
            objective,
            host_in: vec![T::ZERO; width],
            host_out: vec![T::ZERO; width],
            device_in: b.zeros(width)?,
            device_out: b.zeros(width)?,
            gather_index: None,
        };
        Ok(HessianOperator {
            model,
            state: Mutex::new(state),
            restriction_is_full,
            gather,
            dim,
            total,
            loss_terms: batches.iter().map(Batch::loss_terms).sum(),
            products: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        })
    }

    /// Hessian-vector products applied so far.
    pub fn products(&self) -> u64 {
        self.products.load(Ordering::Relaxed)
    }

    /// Seconds spent inside Hessian-vector products (transfers included).
    pub fn product_seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// The number of parameters N of the model.
    pub fn total_parameters(&self) -> usize {
        self.total
    }

    /// `y = H x` together with the loss and `g · x` (one sweep; counted as a
    /// product).
    pub fn apply_with_scalars(&self, x: &[f64], y: &mut [f64]) -> Result<Scalars> {
        check_apply("Hessian", self.dim, x, y)?;
        let started = Instant::now();
        let mut guard = self
            .state
            .lock()
            .map_err(|_| Error::Numerical("an earlier Hessian-vector product panicked".into()))?;
        let state = &mut *guard;
        let b = self.model.backend();
        match &self.gather {
            Some(idx) => {
                for (&i, &v) in idx.iter().zip(x) {
                    state.host_in[i] = T::from_f64(v);
                }
            }
            None => {
                for (h, &v) in state.host_in.iter_mut().zip(x) {
                    *h = T::from_f64(v);
                }
            }
        }
        b.write(b.view_mut(&mut state.device_in), &state.host_in)?;
        let scalars = if self.restriction_is_full || self.gather.is_some() {
            state
                .objective
                .hvp_into(&state.device_in, &mut state.device_out, None)?
        } else {
            state
                .objective
                .masked_hvp_into(&state.device_in, &mut state.device_out)?
        };
        b.download(b.view(&state.device_out), &mut state.host_out)?;
        match &self.gather {
            Some(idx) => {
                for (out, &i) in y.iter_mut().zip(idx) {
                    *out = state.host_out[i].to_f64();
                }
            }
            None => {
                for (out, h) in y.iter_mut().zip(&state.host_out) {
                    *out = h.to_f64();
                }
            }
        }
        drop(guard);
        self.products.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "entry {i} of a Hessian-vector product (overflow in {}? try --dtype f64)",
                T::NAME
            )));
        }
        Ok(scalars)
    }

    /// One product on the backend's own buffers, for operators on device-resident
    /// vectors (`OperatorOn<CudaSpace>`): `load` writes the input into the
    /// backend's input buffer (in the model's precision: N entries for the full
    /// Hessian and for the gathered path, where it must write only the entries at
    /// the indices it is given, the others staying zero; k entries for the masked
    /// path, where the index is `None`); then the product runs, and `store` reads
    /// the output buffer (N or k entries, as for `load`). Counted and timed like
    /// [`HessianOperator::apply_with_scalars`]; no vector crosses to the host.
    pub fn apply_on_backend(
        &self,
        load: impl FnOnce(&B, &mut B::Buf, Option<&B::Index>) -> Result<()>,
        store: impl FnOnce(&B, &B::Buf, Option<&B::Index>) -> Result<()>,
    ) -> Result<Scalars> {
        let started = Instant::now();
        let mut guard = self
            .state
            .lock()
            .map_err(|_| Error::Numerical("an earlier Hessian-vector product panicked".into()))?;
        let state = &mut *guard;
        let b = self.model.backend();
        if let (Some(idx), None) = (&self.gather, &state.gather_index) {
            let narrow = idx
                .iter()
                .map(|&i| u32::try_from(i))
                .collect::<std::result::Result<Vec<u32>, _>>()
                .map_err(|_| Error::Numerical("a mask index does not fit in 32 bits".into()))?;
            state.gather_index = Some(b.upload_index(&narrow)?);
        }
        let index = state.gather_index.as_ref();
        load(b, &mut state.device_in, index)?;
        let scalars = if self.restriction_is_full || self.gather.is_some() {
            state
                .objective
                .hvp_into(&state.device_in, &mut state.device_out, None)?
        } else {
            state
                .objective
                .masked_hvp_into(&state.device_in, &mut state.device_out)?
        };
        store(b, &state.device_out, index)?;
        drop(guard);
        self.products.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(scalars)
    }

    /// Runs `f` on the underlying objective (loss, gradient, logits): forward and
    /// gradient sweeps are not counted as products.
    pub fn with_objective<R>(&self, f: impl FnOnce(&mut Objective<'m, T, B>) -> R) -> Result<R> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| Error::Numerical("an earlier Hessian-vector product panicked".into()))?;
        Ok(f(&mut guard.objective))
    }
}

impl<T: Scalar, B: Backend<T>> LinearOperator for HessianOperator<'_, T, B> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn name(&self) -> String {
        let what = if self.restriction_is_full {
            format!("Hessian ({} parameters)", self.total)
        } else {
            format!("masked Hessian (k = {} of {})", self.dim, self.total)
        };
        format!("{what} of the mean loss over {} terms", self.loss_terms)
    }

    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        self.apply_with_scalars(x, y).map(|_| ())
    }

    /// The products run in the model's precision (vectors cross in `T`).
    fn precision(&self) -> f64 {
        T::EPSILON
    }
}
