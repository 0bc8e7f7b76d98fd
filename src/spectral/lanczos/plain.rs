//! Lanczos without reorthogonalization, and the identification of its ghosts.
//!
//! The bare recurrence keeps three vectors. Paige (1976) showed that orthogonality
//! is lost exactly as Ritz values converge; the basis then rediscovers converged
//! eigenvalues and the tridiagonal matrix `T_m` acquires extra copies ("ghosts") of
//! them, plus spurious values still on their way to becoming copies. Cullum &
//! Willoughby ("Lanczos Algorithms for Large Symmetric Eigenvalue Computations",
//! vol. 1, 1985, ch. 4) identify them without any vector work:
//!
//! - a numerically multiple eigenvalue of `T_m` is a converged eigenvalue of `A`:
//!   one copy is kept, the others are ghosts;
//! - a simple eigenvalue of `T_m` that is also an eigenvalue of `T̂_m` (`T_m` with its
//!   first row and column deleted) has a negligible weight on the start vector: it
//!   is spurious.
//!
//! Genuine eigenvalues of `A` are never rejected by the second test (their Ritz
//! vectors keep a component along the start vector, so strict interlacing holds),
//! but a genuinely repeated eigenvalue of `A` is merged into one, as no
//! reorthogonalization-free run can tell it from a ghost.

use super::engine::Target;
use super::{LanczosOptions, LanczosResult};
use crate::error::Result;
use crate::progress::Progress;
use crate::rng;
use crate::spectral::operator::OperatorOn;
use crate::spectral::small::{symmetric_eigen, tridiagonal_eigenvalues};
use crate::spectral::vector::{Distribution, VectorSpace};

/// Eigenvalues of `T_m` closer than this (relative to `‖T‖`) are copies.
const MULTIPLE_TOL: f64 = 1e-11;
/// A simple eigenvalue of `T_m` this close to one of `T̂_m` (relative to `‖T‖`) is spurious.
const SPURIOUS_TOL: f64 = 1e-11;
/// Steps between convergence checks.
const CHECK_EVERY: usize = 10;

pub(super) fn run<S, A, P>(
    op: &A,
    space: &S,
    options: &LanczosOptions,
    progress: &P,
) -> Result<LanczosResult<S::Vector>>
where
    S: VectorSpace,
    A: OperatorOn<S> + ?Sized,
    P: Progress + ?Sized,
{
    let target = Target {
        which: options.which,
        count: options.k,
    };
    let mut cur = space.random(
        Distribution::Gaussian,
        options.seed,
        rng::stream_id(&[0, 0]),
    )?;
    let norm = space.norm(&cur)?;
    space.scale(1.0 / norm, &mut cur)?;
    let first = if options.measure_orthogonality {
        let mut f = space.zeros()?;
        space.copy(&cur, &mut f)?;
        Some(f)
    } else {
        None
    };
    let mut prev = space.zeros()?;
    let mut work = space.zeros()?;
    let mut alpha = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut norm_estimate: f64 = 0.0;
    let mut loss: f64 = 0.0;
    let mut classified = None;
    for step in 0..options.max_products {
        progress.check()?;
        op.apply_in(space, &cur, &mut work)?;
        progress.advance(1);
        let a = match beta.last() {
            Some(&b) => space.axpy_dot(-b, &prev, &mut work, &cur)?,
            None => space.dot(&cur, &work)?,
        };
        let b = space.axpy_norm(-a, &cur, &mut work)?;
        alpha.push(a);
        beta.push(b);
        norm_estimate = norm_estimate.max((a * a + b * b).sqrt());
        // Without reorthogonalization the recurrence runs past n steps (its vectors
        // are no longer independent): only an exact breakdown stops it.
        if b <= 64.0 * f64::EPSILON * norm_estimate {
            break;
        }
        space.scale(1.0 / b, &mut work)?;
        std::mem::swap(&mut prev, &mut cur);
        std::mem::swap(&mut cur, &mut work);
        if let Some(f) = &first {
            loss = loss.max(space.dot(f, &cur)?.abs());
        }
        if options.tol > 0.0 && (step + 1) % CHECK_EVERY == 0 {
            let c = classify(&alpha, &beta)?;
            let wanted = target.wanted(c.good.len());
            let done = wanted.len() == target.total()
                && wanted.iter().all(|&i| {
                    let (theta, r) = c.good[i];
                    r <= options.tol * theta.abs()
                });
            if done {
                classified = Some(c);
                break;
            }
        }
    }
    let products = alpha.len() as u64;
    let classified = match classified {
        Some(c) => c,
        None => classify(&alpha, &beta)?,
    };
    let wanted = target.wanted(classified.good.len());
    let mut pairs: Vec<(f64, f64)> = wanted.iter().map(|&i| classified.good[i]).collect();
    match options.which {
        super::Which::Smallest => pairs.sort_by(|a, b| a.0.total_cmp(&b.0)),
        _ => pairs.sort_by(|a, b| b.0.total_cmp(&a.0)),
    }
    let converged: Vec<bool> = pairs
        .iter()
        .map(|p| p.1 <= options.tol * p.0.abs())
        .collect();
    Ok(LanczosResult {
        eigenvalues: pairs.iter().map(|p| p.0).collect(),
        residuals: pairs.iter().map(|p| p.1).collect(),
        // No multiplicity check runs here, so the two verdicts coincide.
        residual_converged: converged.clone(),
        converged,
        // Ghost detection keeps one copy of each eigenvalue by design.
        multiplicities_verified: false,
        multiplicities_checked: false,
        products_to_verify: None,
        max_products: options.max_products as u64,
        residuals_computed: false,
        residual_floor: 0.0,
        tolerance_clipped: false,
        vectors: None,
        products,
        verification_products: 0,
        probe_products: 0,
        probes: 0,
        probes_successful: 0,
        restarts: 0,
        reorthogonalizations: 0,
        peak_stored_vectors: 0,
        orthogonality_loss: first.map(|_| loss),
        ritz_orthogonality_loss: None,
        estimated_orthogonality: None,
        ghosts: classified.ghosts,
    })
}

/// The Ritz values of `T_m` sorted into good ones (with residual estimates
/// `β_m |s_m|`, ascending by value) and ghosts.
pub(crate) struct Classified {
    pub good: Vec<(f64, f64)>,
    pub ghosts: Vec<f64>,
}

/// The Cullum–Willoughby identification test on the tridiagonal matrix with
/// diagonal `alpha` and off-diagonal `beta[..m-1]`; `beta[m-1]` is the last
/// computed norm (for residual estimates).
pub(crate) fn classify(alpha: &[f64], beta: &[f64]) -> Result<Classified> {
    let m = alpha.len();
    let mut t = vec![0.0; m * m];
    for i in 0..m {
        t[i + i * m] = alpha[i];
        if i + 1 < m {
            t[i + 1 + i * m] = beta[i];
            t[i + (i + 1) * m] = beta[i];
        }
    }
    let eig = symmetric_eigen(&t, m, m)?;
    let hat = if m > 1 {
        tridiagonal_eigenvalues(&alpha[1..], &beta[1..m - 1])?
    } else {
        Vec::new()
    };
    let scale = eig
        .values
        .iter()
        .fold(0.0f64, |a, v| a.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let last_beta = beta.get(m - 1).copied().unwrap_or(0.0);
    let residual = |i: usize| last_beta * eig.vector(i)[m - 1].abs();

    let mut good = Vec::new();
    let mut ghosts = Vec::new();
    let mut start = 0;
    while start < m {
        let mut end = start + 1;
        while end < m && eig.values[end] - eig.values[end - 1] <= MULTIPLE_TOL * scale {
            end += 1;
        }
        if end - start > 1 {
            // invariant: the cluster start..end is non-empty.
            let best = (start..end)
                .min_by(|&a, &b| residual(a).total_cmp(&residual(b)))
                .expect("non-empty cluster");
            good.push((eig.values[best], residual(best)));
            ghosts.extend((start..end).filter(|&i| i != best).map(|i| eig.values[i]));
        } else {
            let theta = eig.values[start];
            let spurious = hat
                .iter()
                .any(|h| (h - theta).abs() <= SPURIOUS_TOL * scale);
            if spurious {
                ghosts.push(theta);
            } else {
                good.push((theta, residual(start)));
            }
        }
        start = end;
    }
    Ok(Classified { good, ghosts })
}
