//! How many products Lanczos needs in theory: the Kaniel–Paige–Saad bound.
//!
//! Saad (SIAM J. Numer. Anal. 17, 1980; "Numerical Methods for Large Eigenvalue
//! Problems", 2nd ed., Thm. 6.4): for eigenvalues `λ₁ > λ₂ > … > λ_N` with
//! eigenvectors `u_i`, the Krylov space `K_m` of a start vector `v` satisfies
//!
//! `tan ∠(u_i, K_m) ≤ κ_i tan ∠(v, u_i) / C_{m-i}(1 + 2γ_i)`,
//!
//! `γ_i = (λ_i - λ_{i+1}) / (λ_{i+1} - λ_N)`, `κ₁ = 1`,
//! `κ_i = Π_{j<i} (λ_j - λ_N) / (λ_j - λ_i)`, `C_k` the Chebyshev polynomial.
//! A unit vector at angle `φ` from `u_i` has residual `‖(A - λ_i) x‖ ≤ sin φ (λ₁ - λ_N)`,
//! so the Krylov space contains a vector meeting the stopping test
//! `‖A x - λ_i x‖ ≤ tol |λ_i|` once `C_{m-i}(1 + 2γ_i) ≥ κ_i tan ∠(v, u_i) (λ₁ - λ_N) / (tol |λ_i|)`:
//! [`saad_steps`] solves for `m`.
//!
//! Repeated eigenvalues: a single vector's Krylov space sees each eigenspace as one
//! direction, so the bound applies to the distinct eigenvalues, and every further
//! copy needs a fresh start vector on the deflated operator (what
//! [`super::lanczos`]'s multiplicity probes do). [`theoretical_products`] therefore
//! counts in layers: layer `r` finds the `r`-th copy of every wanted eigenvalue
//! that has one, on the spectrum left after deflating the earlier layers, and the
//! counts add. For a random Gaussian start vector and an eigenspace of dimension `d`
//! in `R^N`, `tan² ∠(v, U) ≈ (N - d)/d` ([`expected_tan`]).

use super::lanczos::Which;

/// `tan ∠(v, U)` for a random Gaussian `v ∈ R^n` and a `d`-dimensional subspace
/// `U`, from `E cos² = d/n`.
pub fn expected_tan(n: usize, d: usize) -> f64 {
    let d = d.max(1) as f64;
    ((n as f64 - d).max(0.0) / d).sqrt()
}

/// Lanczos steps for the `i`-th (0-based) of the distinct eigenvalues `distinct`
/// (strictly decreasing) to meet the residual test at relative tolerance `tol`,
/// from a start vector at angle `tan_start` from its eigenspace, by Saad's bound.
pub fn saad_steps(distinct: &[f64], i: usize, tan_start: f64, tol: f64) -> usize {
    let n = distinct.len();
    if i + 1 >= n {
        // The last distinct eigenvalue: the Krylov space is complete at n steps.
        return n;
    }
    let lambda = distinct[i];
    let bottom = distinct[n - 1];
    let gamma = (lambda - distinct[i + 1]) / (distinct[i + 1] - bottom);
    let kappa: f64 = distinct[..i]
        .iter()
        .map(|&l| (l - bottom) / (l - lambda))
        .product();
    let spread = distinct[0] - bottom;
    let required = kappa * tan_start * spread / (tol * lambda.abs());
    if required <= 1.0 {
        return i + 1;
    }
    let degree = (required.acosh() / (1.0 + 2.0 * gamma).acosh()).ceil() as usize;
    (i + degree).min(n)
}

/// Products that single-vector Lanczos with exact deflation needs, by Saad's bound,
/// to compute the `k` wanted eigenvalues (per end) of the symmetric matrix with
/// eigenvalues `spectrum` (any order, repeats allowed) to the residual test at `tol`;
/// see the module documentation for the layering over repeated eigenvalues.
pub fn theoretical_products(spectrum: &[f64], k: usize, which: Which, tol: f64) -> usize {
    let mut remaining: Vec<f64> = spectrum.iter().copied().filter(|v| v.is_finite()).collect();
    remaining.sort_by(|a, b| b.total_cmp(a));
    let n = remaining.len();
    let k = k.min(n);
    let mut wanted_top: Vec<f64> = match which {
        Which::Largest | Which::Both => remaining[..k].to_vec(),
        Which::Smallest => Vec::new(),
    };
    let mut wanted_bottom: Vec<f64> = match which {
        Which::Smallest | Which::Both => remaining[n - k..].to_vec(),
        Which::Largest => Vec::new(),
    };
    let mut total = 0;
    while !(wanted_top.is_empty() && wanted_bottom.is_empty()) {
        let (distinct, multiplicity) = distinct_values(&remaining);
        let mut layer = 0;
        let mut found = Vec::new();
        for (wanted, top) in [(&wanted_top, true), (&wanted_bottom, false)] {
            let (values, mult): (Vec<f64>, Vec<usize>) = if top {
                (distinct.clone(), multiplicity.clone())
            } else {
                (
                    distinct.iter().rev().map(|v| -v).collect(),
                    multiplicity.iter().rev().copied().collect(),
                )
            };
            let (wanted_distinct, _) = distinct_values(wanted);
            for w in wanted_distinct {
                let target = if top { w } else { -w };
                // Every wanted value is in the remaining spectrum (both are drawn from
                // it); only a NaN could be missing, and it is skipped.
                let Some(i) = values.iter().position(|&v| v == target) else {
                    continue;
                };
                let steps = saad_steps(&values, i, expected_tan(remaining.len(), mult[i]), tol);
                layer = layer.max(steps);
                found.push((w, top));
            }
        }
        if found.is_empty() {
            break;
        }
        total += layer;
        for (w, top) in found {
            remove_one(&mut remaining, w);
            remove_one(
                if top {
                    &mut wanted_top
                } else {
                    &mut wanted_bottom
                },
                w,
            );
        }
    }
    total
}

/// Distinct values of a decreasingly sorted (or any) list, decreasing, with counts.
fn distinct_values(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut distinct: Vec<f64> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for v in sorted {
        match (distinct.last(), counts.last_mut()) {
            (Some(&last), Some(count)) if last == v => *count += 1,
            _ => {
                distinct.push(v);
                counts.push(1);
            }
        }
    }
    (distinct, counts)
}

fn remove_one(values: &mut Vec<f64>, v: f64) {
    if let Some(i) = values.iter().position(|&x| x == v) {
        values.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_grows_with_accuracy_and_shrinks_with_gap() {
        let spectrum: Vec<f64> = (0..100).map(|i| 100.0 - i as f64).collect();
        let loose = saad_steps(&spectrum, 0, 10.0, 1e-4);
        let tight = saad_steps(&spectrum, 0, 10.0, 1e-10);
        assert!(tight > loose);
        let mut gapped = spectrum.clone();
        gapped[0] = 150.0;
        assert!(saad_steps(&gapped, 0, 10.0, 1e-10) < tight);
    }

    #[test]
    fn repeated_eigenvalues_cost_extra_layers() {
        let mut spectrum: Vec<f64> = (0..200).map(|i| i as f64 / 10.0).collect();
        let simple = theoretical_products(&spectrum, 3, Which::Largest, 1e-10);
        spectrum[0] = spectrum[199];
        let doubled = theoretical_products(&spectrum, 3, Which::Largest, 1e-10);
        assert!(doubled > simple);
    }
}
