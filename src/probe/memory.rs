//! What a probe, a landscape or a sweep cell needs in memory, decided before the
//! weights are loaded: the weights, the Hessian operator's pass and vectors
//! (`operator::operator_footprint`) and the spectral algorithms' vectors; then
//! whether the passes store or recompute the blocks' activations
//! ([`Footprint::choose`]), or a refusal naming both figures and the free memory.

use super::operator::{ProductPath, Restriction, operator_footprint};
use super::spectrum::{Method, ProbeOptions};
use crate::backend::{Backend, Scalar};
use crate::error::Result;
use crate::model::{Batch, Footprint, Memory, OptConfig, ParamLayout, PassShape};
use crate::spectral::Which;

/// The bytes a fully reorthogonalized basis may take before the probe's Lanczos
/// switches to its memory-bounded mode (`probe::spectrum`'s budget).
const FULL_BASIS_BYTES: usize = 2 << 30;

/// Vectors the memory-bounded Lanczos keeps (its default basis).
const PARTIAL_BASIS: usize = 40;

/// Working vectors beside a basis (the algorithms' current, next and residual
/// vectors, with some slack).
const WORKING_VECTORS: usize = 6;

/// An estimate of the bytes of the f64 vectors of dimension `dim` that the probe's
/// algorithms keep at once (they run one after the other): Lanczos's basis
/// (`iters + 1 + ends x k` vectors while that fits in 2 GiB, else its
/// memory-bounded 40), an SLQ probe's `iters + 1`, Hutch++'s `trace_products / 3`,
/// and a few working vectors.
pub fn spectral_bytes(options: &ProbeOptions, dim: usize) -> u64 {
    let ends = if options.which == Which::Both { 2 } else { 1 };
    let bounded = |m: usize| {
        if m * dim * 8 <= FULL_BASIS_BYTES {
            m
        } else {
            PARTIAL_BASIS + ends * options.k
        }
    };
    let lanczos = bounded(options.iters + 1 + ends * options.k);
    let slq = bounded(options.iters + 1);
    let trace = options.trace_products / 3;
    let basis = match options.method {
        Method::Lanczos => lanczos,
        Method::Power => options.k,
        Method::Slq => slq,
        Method::Trace => trace,
        Method::All => lanczos.max(slq).max(trace),
    };
    ((basis + WORKING_VECTORS) * dim * 8) as u64
}

/// The batch shapes a pass over `batches` allocates for.
pub fn shapes(batches: &[Batch]) -> Vec<PassShape> {
    batches.iter().map(PassShape::of).collect()
}

/// The footprint of the Hessian of `config`'s loss over `batches` restricted to
/// `k` coordinates (`None`: all) on `backend`, with `extra` bytes of the caller's vectors (on the
/// device for a GPU, on the host for the CPU), and the mode the passes run in:
/// `memory` as asked, `Auto` decided against the backend's free memory. Refuses,
/// with the figures, what cannot fit.
pub fn plan<T: Scalar, B: Backend<T>>(
    backend: &B,
    config: &OptConfig,
    batches: &[Batch],
    k: Option<usize>,
    extra: u64,
    memory: Memory,
    what: &str,
) -> Result<(Footprint, Memory)> {
    let on_cpu = backend.name() == "cpu";
    let mut footprint = operator_footprint(
        config,
        std::mem::size_of::<T>(),
        &shapes(batches),
        k,
        ProductPath::Auto,
        on_cpu,
    )
    .plus_vectors(extra);
    footprint.what = format!("{what} ({} Hessian-vector products)", footprint.what);
    let chosen = footprint.choose_on(backend, memory)?;
    Ok((footprint, chosen))
}

/// The dimension of the operator of `restriction` on `config`.
pub fn dim(config: &OptConfig, restriction: &Restriction) -> usize {
    restriction.dim(ParamLayout::new(config).total())
}

/// The number of restricted coordinates (`None` for the full Hessian), as
/// [`plan`] takes it.
pub fn restricted(restriction: &Restriction) -> Option<usize> {
    match restriction {
        Restriction::Full => None,
        Restriction::Indices(idx) => Some(idx.len()),
    }
}
