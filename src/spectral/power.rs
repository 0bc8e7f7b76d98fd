//! Power iteration with deflation: the method the paper used for the top Hessian
//! eigenvalue, kept for comparison of cost with [`super::lanczos`].
//!
//! Iterates `v ← A v / ‖A v‖` on the deflated operator `(I - YYᵀ) A (I - YYᵀ)`,
//! `Y` being the eigenvectors found so far, and stops on the computed residual
//! `‖A v - θ v‖ ≤ tol |θ|` of the Rayleigh quotient `θ = vᵀ A v`. Converges to the
//! eigenvalue of largest magnitude (which is the largest eigenvalue only for
//! positive semi-definite operators), with error shrinking by `|λ₂/λ₁|` per
//! product (squared for the Rayleigh quotient). Lanczos, by Chebyshev acceleration,
//! needs about the square root of the products for a small relative gap; the
//! product counts reported here make the comparison.

use serde::{Deserialize, Serialize};

use super::operator::{OperatorOn, check_space};
use super::vector::{Distribution, Precision, VectorSpace};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng;

/// Parameters of [`power_iteration`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerOptions {
    /// Eigenpairs wanted (by decreasing magnitude).
    pub k: usize,
    /// Relative residual tolerance.
    pub tol: f64,
    /// Limit on products over all eigenpairs.
    pub max_products: usize,
    /// Return the eigenvectors.
    pub vectors: bool,
    pub seed: u64,
}

impl Default for PowerOptions {
    fn default() -> Self {
        PowerOptions {
            k: 1,
            tol: 1e-6,
            max_products: 1000,
            vectors: false,
            seed: 0,
        }
    }
}

/// What [`power_iteration`] found, in the order found (decreasing magnitude).
#[derive(Clone, Debug)]
pub struct PowerResult<V> {
    pub eigenvalues: Vec<f64>,
    /// Computed `‖A v - θ v‖`.
    pub residuals: Vec<f64>,
    pub converged: Vec<bool>,
    /// Products spent on each eigenpair.
    pub products_per_eigenpair: Vec<u64>,
    pub products: u64,
    pub vectors: Option<Vec<V>>,
}

/// The `k` eigenpairs of largest magnitude by power iteration with deflation.
/// Memory: `k` stored eigenvectors and three working vectors.
pub fn power_iteration<S, A, P>(
    op: &A,
    space: &S,
    options: &PowerOptions,
    progress: &P,
) -> Result<PowerResult<S::Vector>>
where
    S: VectorSpace,
    A: OperatorOn<S> + ?Sized,
    P: Progress + ?Sized,
{
    check_space(op, space)?;
    let n = op.dim();
    if options.k == 0 || options.k > n {
        return Err(Error::arg(
            "--k",
            format!("must lie in 1..={n} (the operator's dimension)"),
        ));
    }
    if options.max_products == 0 {
        return Err(Error::arg("--iters", "must be at least 1"));
    }
    if !(options.tol > 0.0 && options.tol < 1.0) {
        return Err(Error::arg("--tol", "must lie in (0, 1)"));
    }
    progress.start(options.max_products as u64, "power");
    let mut found = space.new_basis(options.k, Precision::F64)?;
    let mut result = PowerResult {
        eigenvalues: Vec::new(),
        residuals: Vec::new(),
        converged: Vec::new(),
        products_per_eigenpair: Vec::new(),
        products: 0,
        vectors: None,
    };
    let mut v = space.zeros()?;
    let mut w = space.zeros()?;
    let mut r = space.zeros()?;
    for pair in 0..options.k {
        let deflate = |x: &mut S::Vector, found: &S::Basis| -> Result<f64> {
            let slots: Vec<usize> = (0..space.basis_len(found)).collect();
            if slots.is_empty() {
                space.norm(x)
            } else {
                Ok(space.basis_orthogonalize(found, &slots, x)?.1)
            }
        };
        v = space.random(
            Distribution::Gaussian,
            options.seed,
            rng::stream_id(&[1, pair as u64]),
        )?;
        let norm = deflate(&mut v, &found)?;
        space.scale(1.0 / norm, &mut v)?;
        let mut used = 0u64;
        let mut theta;
        let mut residual;
        loop {
            progress.check()?;
            op.apply_in(space, &v, &mut w)?;
            result.products += 1;
            used += 1;
            progress.advance(1);
            let w_norm = deflate(&mut w, &found)?;
            theta = space.dot(&v, &w)?;
            space.copy(&w, &mut r)?;
            residual = space.axpy_norm(-theta, &v, &mut r)?;
            let done = residual <= options.tol * theta.abs() || w_norm == 0.0;
            if done || result.products as usize >= options.max_products {
                break;
            }
            space.scale(1.0 / w_norm, &mut w)?;
            std::mem::swap(&mut v, &mut w);
        }
        result.eigenvalues.push(theta);
        result.residuals.push(residual);
        result.converged.push(residual <= options.tol * theta.abs());
        result.products_per_eigenpair.push(used);
        space.basis_push(&mut found, &v)?;
        if (result.products as usize) >= options.max_products {
            break;
        }
    }
    if options.vectors {
        let mut vs = Vec::new();
        for slot in 0..space.basis_len(&found) {
            space.basis_get(&found, slot, &mut v)?;
            let mut copy = space.zeros()?;
            space.copy(&v, &mut copy)?;
            vs.push(copy);
        }
        result.vectors = Some(vs);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::spectral::host::HostSpace;
    use crate::spectral::lanczos::{LanczosOptions, Which, lanczos};
    use crate::spectral::operator::Counting;
    use crate::spectral::testing::with_spectrum;
    use crate::spectral::vector::random_values;
    use crate::testing::TestResult;

    #[test]
    fn power_iteration_reaches_1e_6_on_a_gapped_matrix_and_costs_more_than_lanczos() -> TestResult {
        let n = 500;
        let mut spectrum: Vec<f64> = random_values(n, Distribution::Gaussian, 3, 0)
            .iter()
            .map(|g| g.clamp(-2.0, 2.0))
            .collect();
        spectrum[0] = 10.0;
        spectrum[1] = -5.0;
        let a = with_spectrum(&spectrum, 4);
        let exact = a.eigenvalues()?;
        let op = Counting::new(&a);
        let options = PowerOptions {
            k: 2,
            tol: 1e-6,
            max_products: 2000,
            ..PowerOptions::default()
        };
        let power = power_iteration(&op, &HostSpace::new(n), &options, &Silent)?;
        assert_eq!(power.products, op.products());
        let dominant = [exact[n - 1], exact[0]];
        for (got, want) in power.eigenvalues.iter().zip(dominant) {
            assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
        }
        assert!(power.converged.iter().all(|&c| c));

        let lanczos_options = LanczosOptions {
            k: 1,
            which: Which::Both,
            tol: 1e-6,
            max_products: 500,
            verify_multiplicity: false,
            ..LanczosOptions::default()
        };
        let krylov = lanczos(&a, &HostSpace::new(n), &lanczos_options, &Silent)?;
        println!(
            "power: {:?} products per pair {:?}; lanczos (both ends): {} products",
            power.eigenvalues, power.products_per_eigenpair, krylov.products
        );
        assert!(krylov.products < power.products);
        Ok(())
    }
}
