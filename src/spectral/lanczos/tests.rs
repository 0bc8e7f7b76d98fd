//! Lanczos against faer's dense eigensolver on matrices with known spectra.

use super::*;
use crate::progress::Silent;
use crate::spectral::bounds::theoretical_products;
use crate::spectral::host::HostSpace;
use crate::spectral::operator::{Counting, Diagonal, LinearOperator};
use crate::spectral::testing::with_spectrum;
use crate::spectral::vector::Distribution;
use crate::spectral::vector::random_values;
use crate::spectral::verdict::LanczosVerdict;

/// The exact wanted eigenvalues in the order `lanczos` reports them.
fn exact_wanted(sorted_ascending: &[f64], k: usize, which: Which) -> Vec<f64> {
    let n = sorted_ascending.len();
    let top = sorted_ascending[n - k..].iter().rev().copied();
    let bottom = sorted_ascending[..k].iter().copied();
    match which {
        Which::Largest => top.collect(),
        Which::Smallest => bottom.collect(),
        Which::Both => top.chain(bottom.rev()).collect(),
    }
}

fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    random_values(n, Distribution::Gaussian, seed, 77)
        .iter()
        .map(|g| lo + (hi - lo) * 0.5 * (1.0 + libm_erf(g / std::f64::consts::SQRT_2)))
        .collect()
}

/// erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7): only shapes test spectra.
fn libm_erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

struct Case {
    name: &'static str,
    spectrum: Vec<f64>,
    which: Which,
}

/// Places `outliers` first, then a bulk drawn uniformly from `bulk`.
fn spectrum(n: usize, outliers: &[f64], bulk: (f64, f64), seed: u64) -> Vec<f64> {
    let mut values = uniform(n, bulk.0, bulk.1, seed);
    values[..outliers.len()].copy_from_slice(outliers);
    values
}

fn cases() -> Vec<Case> {
    vec![
        // Indefinite, with separated outliers at both ends.
        Case {
            name: "indefinite n=300",
            spectrum: spectrum(
                300,
                &[4.0, 3.6, 3.3, 3.1, 3.0, -4.0, -3.5, -3.2, -3.1, -3.0],
                (-2.5, 2.5),
                1,
            ),
            which: Which::Both,
        },
        // Indefinite with no outliers: the ends of a uniform bulk are packed tight.
        Case {
            name: "uniform n=200",
            spectrum: uniform(200, -1.0, 1.0, 2),
            which: Which::Both,
        },
        // A cluster of three within 2e-4 relative at the top.
        Case {
            name: "clustered n=1000",
            spectrum: spectrum(1000, &[10.0, 9.999, 9.998, 9.5, 9.4], (0.0, 8.0), 3),
            which: Which::Largest,
        },
        // Exactly repeated eigenvalues at both ends (a triple and a double).
        Case {
            name: "repeated n=800",
            spectrum: spectrum(
                800,
                &[5.0, 5.0, 5.0, 4.0, 3.5, -3.0, -3.0, -2.8, -2.7, -2.6],
                (-2.0, 3.0),
                4,
            ),
            which: Which::Both,
        },
        // A triple eigenvalue far above the rest: converges before rounding can
        // reveal the copies, so the multiplicity probes must find them.
        Case {
            name: "separated triple n=600",
            spectrum: spectrum(600, &[5.0, 5.0, 5.0, 2.0, 1.9], (0.0, 1.0), 6),
            which: Which::Largest,
        },
        // Hessian-like: decaying positive outliers, a bulk near zero, small negatives.
        Case {
            name: "hessian-like n=2000",
            spectrum: {
                let mut outliers: Vec<f64> =
                    (0..20).map(|i| 50.0 / (1.0 + i as f64).powf(1.5)).collect();
                outliers.extend([-0.5, -0.4, -0.3, -0.25, -0.2]);
                spectrum(2000, &outliers, (-0.05, 0.1), 5)
            },
            which: Which::Both,
        },
    ]
}

#[test]
fn full_reorthogonalization_meets_1e_10_within_3x_theory() {
    let tol = 1e-10;
    let k = 5;
    println!("| case | which | max rel. error | products | theory | ratio | probes | orth. loss |");
    for (c, case) in cases().into_iter().enumerate() {
        let a = with_spectrum(&case.spectrum, 10 + c as u64);
        let exact = a.eigenvalues().unwrap();
        let n = exact.len();
        let op = Counting::new(&a);
        let options = LanczosOptions {
            k,
            which: case.which,
            tol,
            max_products: 2000,
            seed: c as u64,
            ..LanczosOptions::default()
        };
        let result = lanczos(&op, &HostSpace::new(n), &options, &Silent).unwrap();
        let wanted = exact_wanted(&exact, k, case.which);
        let worst = result
            .eigenvalues
            .iter()
            .zip(&wanted)
            .map(|(got, want)| (got - want).abs() / want.abs())
            .fold(0.0, f64::max);
        let theory = theoretical_products(&case.spectrum, k, case.which, tol);
        let ratio = result.products as f64 / theory as f64;
        println!(
            "| {} | {:?} | {:.1e} | {} | {} | {:.2} | {}/{} | {:.1e} |",
            case.name,
            case.which,
            worst,
            result.products,
            theory,
            ratio,
            result.probes_successful,
            result.probes,
            result.orthogonality_loss.unwrap()
        );
        assert_eq!(
            result.products,
            op.products(),
            "{}: product count",
            case.name
        );
        assert!(
            result.converged.iter().all(|&c| c),
            "{}: not converged",
            case.name
        );
        assert!(
            result
                .residuals
                .iter()
                .zip(&result.eigenvalues)
                .all(|(r, t)| *r <= tol * t.abs()),
            "{}: residuals {:?}",
            case.name,
            result.residuals
        );
        assert!(
            worst <= tol,
            "{}: eigenvalues {:?} vs {:?}",
            case.name,
            result.eigenvalues,
            wanted
        );
        assert!(
            ratio <= 3.0,
            "{}: {} products, theory {}",
            case.name,
            result.products,
            theory
        );
    }
}

#[test]
fn multiplicity_probes_find_missing_copies() {
    // The top eigenvalue is a triple far above the rest and k = 3: the first phase
    // converges on one copy and two lesser values before rounding can reveal the
    // other copies; the probes of the deflated operator must supply them.
    let values = spectrum(600, &[5.0, 5.0, 5.0, 2.0, 1.9], (0.0, 1.0), 6);
    let a = with_spectrum(&values, 7);
    let options = LanczosOptions {
        k: 3,
        tol: 1e-10,
        max_products: 1000,
        ..LanczosOptions::default()
    };
    let result = lanczos(&a, &HostSpace::new(600), &options, &Silent).unwrap();
    println!(
        "{:?} probes {}/{} products {} (probe {}), theory {}",
        result.eigenvalues,
        result.probes_successful,
        result.probes,
        result.products,
        result.probe_products,
        theoretical_products(&values, 3, Which::Largest, 1e-10)
    );
    assert!(
        result
            .eigenvalues
            .iter()
            .all(|v| (v - 5.0).abs() <= 1e-10 * 5.0),
        "{:?}",
        result.eigenvalues
    );
    let theory = theoretical_products(&values, 3, Which::Largest, 1e-10);
    assert!(
        result.products as f64 <= 3.0 * theory as f64,
        "{} vs theory {theory}",
        result.products
    );

    let without = LanczosOptions {
        verify_multiplicity: false,
        ..options
    };
    let single = lanczos(&a, &HostSpace::new(600), &without, &Silent).unwrap();
    println!("without probes: {:?}", single.eigenvalues);
}

/// A 10^5-dimensional diagonal operator: five separated top eigenvalues, a
/// uniform bulk, and a few negative values.
fn large_diagonal() -> Diagonal {
    let n = 100_000;
    let mut values = uniform(n, -1.0, 8.0, 8);
    values[..5].copy_from_slice(&[10.0, 9.7, 9.5, 9.2, 9.0]);
    Diagonal::new(values)
}

#[test]
fn memory_bounded_mode_meets_1e_10_with_40_vectors() {
    let op = large_diagonal();
    let mut exact = op.values().to_vec();
    exact.sort_by(f64::total_cmp);
    let wanted = exact_wanted(&exact, 5, Which::Largest);
    let n = exact.len();
    for precision in [Precision::F64, Precision::F32] {
        let options = LanczosOptions {
            k: 5,
            tol: 1e-10,
            max_products: 3000,
            reorthogonalization: Reorthogonalization::Partial,
            max_basis: 40,
            basis_precision: precision,
            ..LanczosOptions::default()
        };
        let result = lanczos(&op, &HostSpace::new(n), &options, &Silent).unwrap();
        let worst = result
            .eigenvalues
            .iter()
            .zip(&wanted)
            .map(|(g, w)| (g - w).abs() / w.abs())
            .fold(0.0, f64::max);
        let theory = theoretical_products(&exact, 5, Which::Largest, 1e-10);
        println!(
            "{precision:?}: error {worst:.1e} products {} (theory {theory}, probe {}) restarts {} reorth {} peak {} loss {:?} omega {:?} residuals {:?}",
            result.products,
            result.probe_products,
            result.restarts,
            result.reorthogonalizations,
            result.peak_stored_vectors,
            result.orthogonality_loss,
            result.estimated_orthogonality,
            result.residuals
        );
        assert!(result.peak_stored_vectors <= 40);
    }
}

/// Strakoš's diagonal matrix: eigenvalues accumulating at the lower end and well
/// separated at the upper end, the classic test on which Lanczos without
/// reorthogonalization produces ghost copies of the largest eigenvalues.
fn strakos(n: usize, lo: f64, hi: f64, rho: f64) -> Vec<f64> {
    (0..n)
        .map(|i| lo + (i as f64 / (n - 1) as f64) * (hi - lo) * rho.powi((n - 1 - i) as i32))
        .collect()
}

#[test]
fn ghosts_are_detected_without_reorthogonalization() {
    let values = strakos(48, 0.1, 100.0, 0.9);
    let op = Diagonal::new(values.clone());
    let mut exact = values.clone();
    exact.sort_by(f64::total_cmp);
    let options = LanczosOptions {
        k: 4,
        tol: 0.0,
        max_products: 150,
        reorthogonalization: Reorthogonalization::None,
        ..LanczosOptions::default()
    };
    let result = lanczos(&op, &HostSpace::new(48), &options, &Silent).unwrap();
    println!(
        "good {:?}\nghosts {:?}\nloss {:?}",
        result.eigenvalues, result.ghosts, result.orthogonality_loss
    );
    // Orthogonality is lost completely...
    assert!(result.orthogonality_loss.unwrap() > 0.1);
    // ...copies of the largest eigenvalue appeared and were marked...
    let top = exact[47];
    let copies = result
        .ghosts
        .iter()
        .filter(|g| (*g - top).abs() <= 1e-8 * top)
        .count();
    assert!(
        copies >= 1,
        "no ghost of the top eigenvalue among {:?}",
        result.ghosts
    );
    // ...and the reported values are the distinct top eigenvalues, once each.
    let wanted = exact_wanted(&exact, 4, Which::Largest);
    for (got, want) in result.eigenvalues.iter().zip(&wanted) {
        assert!(
            (got - want).abs() <= 1e-10 * want,
            "{:?} vs {:?}",
            result.eigenvalues,
            wanted
        );
    }
    assert_eq!(result.products, 150);
}

#[test]
fn null_space_copies_are_found_at_both_ends() {
    // A rank-deficient matrix (a Hessian of an overparameterized model): 40 exact
    // zeros at the bottom. The probes must find five copies of zero while both ends
    // are deflated at once.
    let mut values = spectrum(400, &[9.0, 7.5, 6.0, 5.5, 5.0], (0.5, 4.0), 12);
    for v in values.iter_mut().skip(5).take(40) {
        *v = 0.0;
    }
    let a = with_spectrum(&values, 13);
    let options = LanczosOptions {
        k: 5,
        which: Which::Both,
        tol: 1e-10,
        max_products: 1500,
        ..LanczosOptions::default()
    };
    let result = lanczos(&a, &HostSpace::new(400), &options, &Silent).unwrap();
    let norm = 9.0;
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let wanted = exact_wanted(&sorted, 5, Which::Both);
    for (got, want) in result.eigenvalues.iter().zip(&wanted) {
        assert!(
            (got - want).abs() <= 1e-10 * want.abs().max(norm),
            "{:?}",
            result.eigenvalues
        );
    }
    assert!(result.converged.iter().all(|&c| c));
    assert!(result.ritz_orthogonality_loss.unwrap() < 1e-12);
    println!(
        "null space: {} products, {} probes ({} found)",
        result.products, result.probes, result.probes_successful
    );
}

#[test]
fn cancellation_stops_between_products() {
    use crate::progress::Progress;
    use std::sync::atomic::{AtomicU64, Ordering};
    /// Cancels after a fixed number of products.
    struct CancelAfter(AtomicU64, u64);
    impl Progress for CancelAfter {
        fn advance(&self, n: u64) {
            self.0.fetch_add(n, Ordering::SeqCst);
        }
        fn is_cancelled(&self) -> bool {
            self.0.load(Ordering::SeqCst) >= self.1
        }
    }
    let op = Counting::new(Diagonal::new((1..=500).map(f64::from).collect()));
    let progress = CancelAfter(AtomicU64::new(0), 17);
    let options = LanczosOptions {
        tol: 1e-14,
        max_products: 400,
        ..LanczosOptions::default()
    };
    let result = lanczos(&op, &HostSpace::new(500), &options, &progress);
    assert!(matches!(result, Err(crate::Error::Cancelled)));
    assert_eq!(op.products(), 17);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let op = Diagonal::new(uniform(50_000, -1.0, 3.0, 14));
    let options = LanczosOptions {
        k: 3,
        which: Which::Both,
        tol: 1e-8,
        max_products: 400,
        reorthogonalization: Reorthogonalization::Partial,
        max_basis: 24,
        ..LanczosOptions::default()
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| lanczos(&op, &HostSpace::new(50_000), &options, &Silent).unwrap())
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.eigenvalues, two.eigenvalues);
    assert_eq!(one.residuals, two.residuals);
    assert_eq!(one.products, two.products);
}

/// `A` applied in f32: input and output rounded to single precision, so products
/// carry errors of about `ε₃₂ ‖A‖`. Declares that precision only when `honest`.
struct SinglePrecision<A> {
    inner: A,
    honest: bool,
}

impl<A: LinearOperator> LinearOperator for SinglePrecision<A> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn name(&self) -> String {
        format!("{} in f32", self.inner.name())
    }
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        let rounded: Vec<f64> = x.iter().map(|&v| f64::from(v as f32)).collect();
        self.inner.apply(&rounded, y)?;
        y.iter_mut().for_each(|v| *v = f64::from(*v as f32));
        Ok(())
    }
    fn precision(&self) -> f64 {
        if self.honest {
            f64::from(f32::EPSILON)
        } else {
            f64::EPSILON
        }
    }
}

fn single_precision_case(honest: bool) -> (LanczosResult<Vec<f64>>, Vec<f64>, u64) {
    let values = spectrum(500, &[5.0, 4.0, 3.5], (0.0, 3.0), 15);
    let a = with_spectrum(&values, 16);
    let mut exact = a.eigenvalues().unwrap();
    exact.sort_by(f64::total_cmp);
    let op = Counting::new(SinglePrecision { inner: a, honest });
    let options = LanczosOptions {
        k: 3,
        tol: 1e-12,
        max_products: 300,
        ..LanczosOptions::default()
    };
    let result = lanczos(&op, &HostSpace::new(500), &options, &Silent).unwrap();
    let products = op.products();
    (result, exact_wanted(&exact, 3, Which::Largest), products)
}

#[test]
fn a_tolerance_below_the_products_precision_is_clipped_and_said() {
    let (result, wanted, products) = single_precision_case(true);
    println!(
        "f32 products, tol 1e-12: {:?} residuals {:?} products {} (verification {}) floor {:.1e}",
        result.eigenvalues,
        result.residuals,
        result.products,
        result.verification_products,
        result.residual_floor
    );
    assert_eq!(result.products, products);
    assert!(result.tolerance_clipped);
    assert!(result.converged.iter().all(|&c| c));
    // 256 ε₃₂ ‖A‖ with ‖A‖ = 5 (estimated from below)
    let ratio = result.residual_floor / (256.0 * 5.0 * f64::from(f32::EPSILON));
    assert!((0.5..=1.0 + 1e-9).contains(&ratio), "floor ratio {ratio}");
    assert!(result.residuals.iter().all(|&r| r <= result.residual_floor));
    for (got, want) in result.eigenvalues.iter().zip(&wanted) {
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    }
    // one explicit check of the 3 pairs in the main phase, one per probe
    assert!(
        result.verification_products <= 6,
        "{} verification products",
        result.verification_products
    );
}

#[test]
fn an_unreachable_tolerance_costs_logarithmically_many_checks() {
    // The operator hides its precision: the estimates pass long before the computed
    // residuals can, and every explicit check disappoints until the budget ends.
    let (result, _, products) = single_precision_case(false);
    let checks = result.verification_products / 3;
    println!(
        "hidden f32 products, tol 1e-12: residuals {:?}, {} products, {} checks",
        result.residuals, products, checks
    );
    assert!(!result.tolerance_clipped);
    assert!(result.converged.iter().any(|&c| !c));
    assert_eq!(result.products, 300);
    // checks at doubling waits: log2(300) + the final one, not one per step
    assert!(checks <= 10, "{checks} explicit checks");
}

/// Runs `lanczos` in the full and the memory-bounded modes with `options`.
fn both_modes<A: LinearOperator>(
    op: &A,
    options: &LanczosOptions,
) -> Vec<(Reorthogonalization, LanczosResult<Vec<f64>>)> {
    [Reorthogonalization::Full, Reorthogonalization::Partial]
        .into_iter()
        .map(|mode| {
            let options = LanczosOptions {
                reorthogonalization: mode,
                ..options.clone()
            };
            let result = lanczos(op, &HostSpace::new(op.dim()), &options, &Silent).unwrap();
            println!(
                "{mode:?}: {:?} products {} (probes {}/{}, {} products; verification {}) verified {}",
                result.eigenvalues,
                result.products,
                result.probes_successful,
                result.probes,
                result.probe_products,
                result.verification_products,
                result.multiplicities_verified
            );
            (mode, result)
        })
        .collect()
}

/// Asserts that `result` holds `wanted` (in reported order) to `relative` of `|λ|`
/// (of `norm` for a numerically zero `λ`), every pair converged with a computed
/// residual within the tolerance, and the multiplicities verified.
fn assert_extremes(
    label: &str,
    result: &LanczosResult<Vec<f64>>,
    wanted: &[f64],
    relative: f64,
    norm: f64,
    tol: f64,
) {
    assert_eq!(result.eigenvalues.len(), wanted.len(), "{label}");
    for (got, want) in result.eigenvalues.iter().zip(wanted) {
        let scale = if want.abs() <= 1e-12 * norm {
            norm
        } else {
            want.abs()
        };
        assert!(
            (got - want).abs() <= relative * scale,
            "{label}: {:?} vs {wanted:?}",
            result.eigenvalues
        );
    }
    assert!(result.multiplicities_verified, "{label}: not verified");
    assert!(
        result.converged.iter().all(|&c| c),
        "{label}: {:?}",
        result.converged
    );
    assert!(result.residuals_computed);
    for (r, theta) in result.residuals.iter().zip(&result.eigenvalues) {
        assert!(
            *r <= (tol * theta.abs()).max(result.residual_floor),
            "{label}: residual {r:e} of {theta}"
        );
    }
}

/// The theory lab's masked Hessian `(1/n) M X^T X M` as `maskscape spectrum
/// --theory` draws it: rank at most `n`, so a null space of dimension about
/// `d - n`.
fn theory_case(n: usize, d: usize, ratio: f64, seed: u64) -> (crate::theory::Design, Vec<usize>) {
    use crate::theory::hessian::probe_mask;
    use crate::theory::{Design, EntryLaw, MaskKind, MaskedRegression};
    let data = Design::generate(EntryLaw::Uniform, n, d, 1.0, seed);
    let mask = probe_mask(MaskKind::Bernoulli, ratio, n, d, seed);
    let kept = MaskedRegression::new(&data, mask, data.clean_targets().to_vec())
        .kept()
        .to_vec();
    (data, kept)
}

#[test]
fn theory_hessian_bottom_five_are_its_null_space() {
    use crate::theory::hessian::MaskedHessian;
    // n = 50, d = 5000, p = 0.1: the five smallest eigenvalues are all 0 (a null
    // space of dimension 4950) while the Krylov space of one start vector holds a
    // single null direction; the nonzero eigenvalues come from the 50 × 50 Gram
    // matrix. This once reported 0.443 and 0.441 among the bottom five, flagged
    // converged.
    let (data, kept) = theory_case(50, 5000, 0.1, 0);
    let hessian = MaskedHessian::from_parts(data.x(), &kept);
    let exact = hessian.eigenvalues().unwrap();
    let top = exact[0];
    assert!(exact[4] > 1.0 && exact[50..].iter().all(|&v| v == 0.0));
    let tol = 1e-8;
    let options = LanczosOptions {
        k: 5,
        which: Which::Both,
        tol,
        max_products: 1000,
        ..LanczosOptions::default()
    };
    for (mode, result) in both_modes(&hessian, &options) {
        let label = format!("{mode:?}");
        let wanted: Vec<f64> = exact[..5].iter().copied().chain([0.0; 5]).collect();
        // Top five to 1e-8 relative; bottom five |λ| <= 1e-8 λ_max.
        assert_extremes(&label, &result, &wanted, 1e-8, top, tol);
        assert!(
            result.eigenvalues[5..]
                .iter()
                .all(|v| v.abs() <= 1e-8 * top),
            "{label}: {:?}",
            result.eigenvalues
        );
        // Copies of 0 found by probes of the semi-orthogonal mode are orthogonal
        // to its level only.
        let orthogonality = match mode {
            Reorthogonalization::Full => 1e-12,
            _ => 1e-6,
        };
        assert!(
            result.ritz_orthogonality_loss.unwrap() < orthogonality,
            "{label}: {:?}",
            result.ritz_orthogonality_loss
        );
        if mode == Reorthogonalization::Full {
            // The basis of the first phase is invariant: one product on a vector
            // outside it shows the null space, two more lock the missing copies.
            assert_eq!(result.probes, 0, "{label}");
            assert!(result.products <= 80, "{label}: {}", result.products);
        }
    }

    // The memory-bounded mode cannot keep the whole Krylov space (rank + 1 > 30
    // vectors), so it needs the probes; with 100 products it cannot finish them,
    // and must say so rather than flag lesser eigenvalues as the smallest.
    let short = LanczosOptions {
        max_products: 100,
        reorthogonalization: Reorthogonalization::Partial,
        ..options
    };
    let result = lanczos(&hessian, &HostSpace::new(5000), &short, &Silent).unwrap();
    println!("partial, 100 products: {:?}", result.eigenvalues);
    let all_null = result.eigenvalues[5..]
        .iter()
        .all(|v| v.abs() <= 1e-8 * top);
    assert!(result.products <= 100);
    if !all_null {
        assert!(!result.multiplicities_verified);
        assert!(
            result.converged.iter().all(|&c| !c),
            "{:?}",
            result.converged
        );
    }
}

#[test]
fn a_300_fold_zero_is_found_at_both_ends_against_faer() {
    // Dense n = 400 of rank 100, positive semi-definite as a Hessian at a minimum:
    // the five smallest eigenvalues are copies of a 300-fold zero, of which the
    // first phase sees few (a Krylov space of dimension 101 holds one).
    let mut values = uniform(400, 0.5, 4.0, 21);
    values[..3].copy_from_slice(&[9.0, 7.0, 6.0]);
    for v in values.iter_mut().skip(100) {
        *v = 0.0;
    }
    let a = with_spectrum(&values, 22);
    let mut exact = a.eigenvalues().unwrap();
    exact.sort_by(f64::total_cmp);
    let norm = exact[399];
    let tol = 1e-10;
    let options = LanczosOptions {
        k: 5,
        which: Which::Both,
        tol,
        max_products: 3000,
        ..LanczosOptions::default()
    };
    let wanted = exact_wanted(&exact, 5, Which::Both);
    assert!(wanted[5..].iter().all(|v| v.abs() < 1e-13 * norm));
    for (mode, result) in both_modes(&a, &options) {
        assert_extremes(&format!("{mode:?}"), &result, &wanted, 1e-10, norm, tol);
    }
}

#[test]
fn a_20_fold_top_eigenvalue_fills_the_top_five() {
    let mut values = uniform(500, 0.0, 8.0, 23);
    values[..20].fill(10.0);
    let a = with_spectrum(&values, 24);
    let mut exact = a.eigenvalues().unwrap();
    exact.sort_by(f64::total_cmp);
    let tol = 1e-10;
    let options = LanczosOptions {
        k: 5,
        which: Which::Largest,
        tol,
        max_products: 3000,
        ..LanczosOptions::default()
    };
    let wanted = exact_wanted(&exact, 5, Which::Largest);
    assert!(wanted.iter().all(|v| (v - 10.0).abs() < 1e-12 * 10.0));
    for (mode, result) in both_modes(&a, &options) {
        assert_extremes(&format!("{mode:?}"), &result, &wanted, 1e-10, 10.0, tol);
    }
}

#[test]
fn verdicts_separate_residuals_from_multiplicities() -> crate::testing::TestResult {
    // A triple top eigenvalue far above the rest, k = 3: the first phase converges
    // on copies of 5 (and at first a lesser value) with residuals far within the
    // tolerance; only the multiplicity probes can show how many copies 5 has.
    let values = spectrum(600, &[5.0, 5.0, 5.0, 2.0, 1.9], (0.0, 1.0), 6);
    let a = with_spectrum(&values, 7);
    let run = |budget: usize| {
        let options = LanczosOptions {
            k: 3,
            tol: 1e-10,
            max_products: budget,
            ..LanczosOptions::default()
        };
        lanczos(&a, &HostSpace::new(600), &options, &Silent)
    };
    // 60 products: the residuals converge, a probe finds a missed copy, and the
    // budget cuts the next probe short.
    let short = run(60)?;
    assert!(short.residual_converged.iter().all(|&c| c), "{short:?}");
    assert!(short.residuals.iter().all(|&r| r <= 1e-10 * 5.0));
    assert!(short.multiplicities_checked && !short.multiplicities_verified);
    assert!(short.converged.iter().all(|&c| !c), "{:?}", short.converged);
    let needed = short.products_to_verify.ok_or("no budget estimate")?;
    assert!(needed > 60, "{needed}");
    let verdict = LanczosVerdict::of(&short);
    assert_eq!(verdict.additional_products_to_verify, Some(needed - 60));
    assert!(
        verdict.text("--iters").contains(&format!(
            "multiplicities not verified within 60 products: raise --iters to about {needed} to \
             check for missed repeated eigenvalues"
        )),
        "{}",
        verdict.text("--iters")
    );

    // The budget it names is enough: every copy of 5, all three verdicts true.
    let enough = run(needed as usize)?;
    assert!(enough.multiplicities_verified, "{enough:?}");
    assert!(enough.residual_converged.iter().all(|&c| c));
    assert!(enough.converged.iter().all(|&c| c));
    assert_eq!(enough.products_to_verify, None);
    assert!(
        enough
            .eigenvalues
            .iter()
            .all(|v| (v - 5.0).abs() <= 1e-10 * 5.0),
        "{:?}",
        enough.eigenvalues
    );
    assert!(
        LanczosVerdict::of(&enough)
            .text("--iters")
            .ends_with("multiplicities verified (no missed copy of a repeated eigenvalue)")
    );

    // Without the check the two verdicts coincide and nothing is estimated.
    let unchecked = lanczos(
        &a,
        &HostSpace::new(600),
        &LanczosOptions {
            k: 3,
            tol: 1e-10,
            max_products: 60,
            verify_multiplicity: false,
            ..LanczosOptions::default()
        },
        &Silent,
    )?;
    assert!(!unchecked.multiplicities_checked);
    assert_eq!(unchecked.converged, unchecked.residual_converged);
    assert_eq!(unchecked.products_to_verify, None);
    Ok(())
}
