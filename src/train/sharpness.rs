//! Sharpness during training: the largest eigenvalue of the Hessian over the trained
//! coordinates on a fixed batch, and for AdamW the preconditioned sharpness, the
//! largest eigenvalue of `P^-1/2 H P^-1/2` with `P = diag(sqrt(v_hat) + eps)` (the
//! Adam step's own preconditioner), each beside the step size's stability threshold
//! (Cohen et al. 2021, 2022; see [`super::optimizer::OptimizerSettings::stability_threshold`]).

use serde::{Deserialize, Serialize};

use crate::backend::Scalar;
use crate::error::{Error, Result};
use crate::model::{Batch, Memory, Opt};
use crate::probe::operator::ProductPath;
use crate::probe::{HessianOperator, OnBackend, Restriction, SpectralBackend};
use crate::progress::Progress;
use crate::rng;
use crate::spectral::{
    DiagonalSimilarity, HostSpace, LanczosOptions, LanczosResult, LinearOperator, OperatorOn,
    VectorSpace, Which, lanczos,
};

/// When and how the sharpness is measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharpnessSettings {
    /// Measured before the first step and after every `every` steps.
    pub every: usize,
    /// The fixed batch: the first this many train examples (file order).
    pub examples: usize,
    /// Lanczos's product budget per eigenvalue.
    pub iters: usize,
    /// Lanczos's relative residual tolerance.
    pub tol: f64,
    /// Seed of the Lanczos start vectors.
    pub seed: u64,
}

impl SharpnessSettings {
    pub fn validate(&self) -> Result<()> {
        if self.every == 0 {
            return Err(Error::arg("--sharpness-every", "must be at least 1"));
        }
        if self.examples == 0 {
            return Err(Error::arg("--sharpness-examples", "must be at least 1"));
        }
        if self.iters < 2 {
            return Err(Error::arg("--sharpness-iters", "must be at least 2"));
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(Error::arg("--sharpness-tol", "must be positive"));
        }
        Ok(())
    }

    /// Whether the sharpness is measured after `steps` updates.
    pub fn due(&self, steps: usize) -> bool {
        steps.is_multiple_of(self.every)
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharpnessRow {
    /// Updates made before the measurement.
    pub step: usize,
    /// The learning rate of the next update.
    pub lr: f64,
    pub lambda_max: f64,
    /// `‖H y - λ y‖` of its Ritz pair.
    pub residual: f64,
    pub converged: bool,
    /// AdamW only, once it has a second moment.
    pub preconditioned: Option<f64>,
    pub preconditioned_residual: Option<f64>,
    /// The optimizer's threshold at `lr`: `(2 + 2 mu) / lr` for SGD against
    /// `lambda_max`, `38 / lr` (beta1 0.9) for AdamW against `preconditioned`.
    pub threshold: f64,
    /// `2 / lr`, plain gradient descent's threshold, against `lambda_max`.
    pub gd_threshold: f64,
}

/// The largest eigenpair by Lanczos with a computed residual.
fn top<S: VectorSpace>(
    op: &(impl OperatorOn<S> + ?Sized),
    space: &S,
    settings: &SharpnessSettings,
    part: u64,
    progress: &dyn Progress,
) -> Result<LanczosResult<S::Vector>> {
    lanczos(
        op,
        space,
        &LanczosOptions {
            k: 1,
            which: Which::Largest,
            tol: settings.tol,
            max_products: settings.iters.min(op.dim().max(2)),
            verify_multiplicity: false,
            measure_orthogonality: false,
            seed: rng::stream_id(&[settings.seed, part]),
            ..LanczosOptions::default()
        },
        progress,
    )
}

/// The sharpness of `model` on `batches` over `restriction`'s coordinates:
/// `(lambda_max, residual, converged)`, and the preconditioned pair for a
/// diagonal preconditioner `p` (in the restriction's coordinates). The products
/// store or recompute the blocks' activations as `memory` says.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn measure<T: Scalar, B: SpectralBackend<T>>(
    model: &Opt<T, B>,
    batches: &[Batch],
    restriction: &Restriction,
    memory: Memory,
    p: Option<&[f64]>,
    settings: &SharpnessSettings,
    progress: &dyn Progress,
) -> Result<((f64, f64, bool), Option<(f64, f64)>)> {
    let op = HessianOperator::with_options(model, batches, restriction, ProductPath::Auto, memory)?;
    let space = model.backend().space(LinearOperator::dim(&op))?;
    let plain = top(&OnBackend(&op), &space, settings, 1, progress)?;
    let plain = (plain.eigenvalues[0], plain.residuals[0], plain.converged[0]);
    let preconditioned = match p {
        None => None,
        Some(p) => {
            let scale = p.iter().map(|x| 1.0 / x.sqrt()).collect();
            let similar = DiagonalSimilarity::new(&op as &dyn LinearOperator, scale)?;
            let host = HostSpace::new(LinearOperator::dim(&similar));
            let r = top(&similar, &host, settings, 2, progress)?;
            Some((r.eigenvalues[0], r.residuals[0]))
        }
    };
    Ok((plain, preconditioned))
}
