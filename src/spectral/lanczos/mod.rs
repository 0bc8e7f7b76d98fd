//! Lanczos for the extreme eigenpairs of a symmetric operator.
//!
//! Three orthogonality regimes, one interface ([`lanczos`]):
//!
//! - [`Reorthogonalization::Full`]: every new Lanczos vector is orthogonalized
//!   against the whole basis by CGS2 (two classical Gram–Schmidt passes). Ritz
//!   values as accurate as the arithmetic allows; memory grows with the number of
//!   steps (thick restart bounds it when `max_basis` is set).
//! - [`Reorthogonalization::Partial`]: memory-bounded. The basis holds at most
//!   `max_basis` vectors (locked Ritz vectors included), kept by thick restart (Wu &
//!   Simon 2000). Orthogonality is kept to semi-orthogonality (`√ε`, which costs
//!   Ritz values nothing, Simon 1984) by three mechanisms, cheapest first:
//!   selective orthogonalization (Parlett & Scott 1979) against the kept Ritz
//!   vectors that have converged, folded into the two sweeps of each step (Paige:
//!   orthogonality is lost exactly along converged Ritz vectors); when Simon's ω
//!   recurrence still predicts a loss beyond `√ε`, an early thick restart that makes
//!   the newly converged directions explicit kept vectors; and partial
//!   reorthogonalization against the slots whose ω exceeds `ε^{3/4}` when a restart
//!   is too recent. A plain step is two sweeps over its vectors (the norm follows
//!   from the first by Pythagoras, with the measured norm of `v_j` and a guard
//!   against cancellation): about 13 vector passes per product including restarts
//!   (`maskscape bench spectral`). The stored basis may be f32 ([`Precision::F32`]);
//!   Ritz vectors are then accurate to about `1e-7`, eigenvalues still to about the
//!   residual squared over the gap.
//! - [`Reorthogonalization::None`]: the bare three-term recurrence with three
//!   vectors of memory. Orthogonality is lost as Ritz values converge, producing
//!   "ghost" copies; they are identified by the Cullum–Willoughby test and reported
//!   apart ([`LanczosResult::ghosts`]). Residuals are estimates.
//!
//! Convergence (full and partial modes) is declared on the Ritz residual
//! `‖A y - θ y‖ ≤ tol · |θ|`, first estimated from the projected matrix and then
//! **computed**: each wanted Ritz vector is formed and multiplied by `A` (one
//! product each), and the computed residuals are what is reported. The tolerance is
//! floored at `256 ε ‖A‖` with `ε` the unit roundoff of the operator's products
//! ([`LinearOperator::precision`](super::LinearOperator::precision): f32 for a
//! Hessian computed in f32), the attainable level; a result says when the floor
//! replaced the requested tolerance ([`LanczosResult::tolerance_clipped`]). The
//! estimate `β_m |s_m|` of a converged pair keeps falling geometrically even below
//! what the products can deliver, so after a computed residual disappoints, the
//! next explicit check waits for the estimate to fall tenfold and for twice as many
//! steps as the previous wait: a tolerance out of reach costs `O(k log m)` checking
//! products over `m` steps, not one check per step.
//!
//! Repeated eigenvalues. A single start vector's Krylov space holds one direction
//! per eigenspace, so in exact arithmetic Lanczos cannot see a second copy of a
//! repeated eigenvalue. With `verify_multiplicity`, once the wanted pairs have
//! converged they are locked, and two checks make sure that the `k` reported at
//! each end are the `k` extreme eigenvalues counting multiplicity:
//!
//! - The unexplored space (orthogonal to the basis and the locked vectors) is
//!   tested with one product on a random vector of it: if that vector is an
//!   eigenvector, the space is (with probability one) a single eigenspace, the
//!   null space of a rank-deficient Hessian being the common case. Its copies are
//!   then locked while they belong among the wanted, one product each, and the
//!   spectrum is accounted for.
//! - Otherwise Lanczos is rerun from a fresh random vector on the deflated operator
//!   `(I - YYᵀ) A (I - YYᵀ)`; Ritz values of the deflated operator that belong
//!   among the wanted ones (missing copies, or values missed for any other reason)
//!   are verified (first corrected for the locked pairs' residuals, which the
//!   deflation ignores), locked, and the probe repeats until one finds nothing. A
//!   probe stops when its extreme Ritz value has converged, or after as many steps
//!   as the first phase needed if it shows nothing beyond the wanted set: a
//!   missing copy of a wanted eigenvalue converges at least as fast in the
//!   deflated operator (the competitors above it are gone).
//!
//! Only a probe that concluded (or the test above) verifies the set
//! ([`LanczosResult::multiplicities_verified`]). The two verdicts are kept apart:
//! [`LanczosResult::residual_converged`] says per pair that its computed residual
//! met the tolerance (the value is an eigenvalue to that accuracy), and
//! [`LanczosResult::converged`] says both that and that the set was verified.
//! When the budget runs out before a probe concludes, no pair is flagged
//! converged, and [`LanczosResult::products_to_verify`] says about what budget
//! would let the check conclude. This costs up to one extra phase; it is the
//! price of reporting multiplicities, which no single-vector Krylov method can
//! certify.

mod engine;
mod omega;
mod plain;

use serde::{Deserialize, Serialize};

use engine::{Engine, Orthogonality, Target};

use super::operator::OperatorOn;
use super::vector::{Precision, VectorSpace};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Which end(s) of the spectrum to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    /// The `k` largest (algebraically) eigenvalues.
    Largest,
    /// The `k` smallest (algebraically) eigenvalues.
    Smallest,
    /// The `k` largest and the `k` smallest, from one Krylov space.
    Both,
}

/// How the Lanczos vectors are kept orthogonal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reorthogonalization {
    /// CGS2 against the whole basis at every step.
    Full,
    /// Memory-bounded: thick restart, ω-driven partial reorthogonalization.
    Partial,
    /// None: three vectors of memory, ghosts detected and reported apart.
    None,
}

/// Parameters of [`lanczos`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LanczosOptions {
    /// Eigenpairs wanted at each requested end.
    pub k: usize,
    pub which: Which,
    /// Relative residual tolerance `‖A y - θ y‖ ≤ tol |θ|`. For
    /// [`Reorthogonalization::None`], `0` runs exactly `max_products` steps.
    pub tol: f64,
    /// Hard limit on operator products, verification products included.
    pub max_products: usize,
    pub reorthogonalization: Reorthogonalization,
    /// Vectors the stored basis may hold, locked Ritz vectors included. Not counted:
    /// three working vectors, and the wanted Ritz vectors while their residuals are
    /// computed. `0`: unbounded for `Full`, 40 for `Partial`.
    pub max_basis: usize,
    /// Storage precision of the basis (working vectors are always f64).
    pub basis_precision: Precision,
    /// Return the Ritz vectors.
    pub ritz_vectors: bool,
    /// Probe the deflated operator for missing copies of repeated eigenvalues.
    pub verify_multiplicity: bool,
    /// Compute `max |VᵀV - I|` of the Lanczos basis at the end of each phase
    /// (`O(m² n)` flops).
    pub measure_orthogonality: bool,
    /// Seed of the random start vectors.
    pub seed: u64,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions {
            k: 5,
            which: Which::Largest,
            tol: 1e-8,
            max_products: 500,
            reorthogonalization: Reorthogonalization::Full,
            max_basis: 0,
            basis_precision: Precision::F64,
            ritz_vectors: false,
            verify_multiplicity: true,
            measure_orthogonality: true,
            seed: 0,
        }
    }
}

/// What [`lanczos`] found.
#[derive(Clone, Debug)]
pub struct LanczosResult<V> {
    /// Wanted eigenvalues: descending for `Largest` and `Both` (the `k` largest then
    /// the `k` smallest), ascending for `Smallest`.
    pub eigenvalues: Vec<f64>,
    /// `‖A y - θ y‖` of each pair: computed (full, partial) or estimated (none).
    pub residuals: Vec<f64>,
    /// Whether each pair's residual is within the tolerance, whatever the
    /// multiplicity check concluded: the value is then an eigenvalue to about the
    /// residual (squared over the gap), though perhaps not the one of its rank.
    pub residual_converged: Vec<bool>,
    /// Both verdicts at once: the pair's residual is within the tolerance and,
    /// with [`LanczosOptions::verify_multiplicity`], the wanted set was verified to
    /// hold the extreme eigenvalues counting multiplicity
    /// ([`Self::multiplicities_verified`]); an unverified set flags no pair.
    /// Without the check it equals [`Self::residual_converged`].
    pub converged: Vec<bool>,
    /// Whether the reported eigenvalues are known to be the `k` extreme ones at each
    /// requested end counting multiplicity: a multiplicity probe found nothing
    /// beyond them, or the whole spectrum was accounted for (the basis spanned the
    /// space, or the unexplored rest of it proved to be one eigenspace). `false`
    /// when the budget ran out first, when probes were off, and in the
    /// [`Reorthogonalization::None`] mode.
    pub multiplicities_verified: bool,
    /// Whether the multiplicity check was part of the run: asked for, outside the
    /// [`Reorthogonalization::None`] mode (it starts once every residual meets the
    /// tolerance).
    pub multiplicities_checked: bool,
    /// When the budget cut the multiplicity check short after every residual met
    /// the tolerance: about the `max_products` with which it concludes. A probe
    /// that finds nothing stops after as many steps as the first phase took, so
    /// this is the products spent before the cut probe, plus that many steps, plus
    /// the reserve for computed residuals; twice that when the cut probe had
    /// already found a missed value (the next probe must then conclude), and more
    /// if a later probe finds another. `None` otherwise.
    pub products_to_verify: Option<u64>,
    /// The budget the run had ([`LanczosOptions::max_products`]).
    pub max_products: u64,
    /// Whether `residuals` are computed with explicit products.
    pub residuals_computed: bool,
    /// The smallest residual the operator's arithmetic supports, `256 ε ‖A‖` with
    /// `‖A‖` estimated from below by the projected matrix (the value the checks
    /// used); the tolerance is never below it. 0 for
    /// [`Reorthogonalization::None`], whose estimates are taken as they come.
    pub residual_floor: f64,
    /// Whether `tol |θ|` was below [`Self::residual_floor`] for a reported pair, which
    /// was then judged against the floor instead.
    pub tolerance_clipped: bool,
    /// Ritz vectors (unit norm), when requested.
    pub vectors: Option<Vec<V>>,
    /// Operator products used in total.
    pub products: u64,
    /// Products spent forming computed residuals.
    pub verification_products: u64,
    /// Products spent probing the deflated operator for missing multiplicities.
    pub probe_products: u64,
    /// Probes run (and how many found something).
    pub probes: usize,
    pub probes_successful: usize,
    pub restarts: u64,
    pub reorthogonalizations: u64,
    /// Most vectors stored at once (basis and locked Ritz vectors).
    pub peak_stored_vectors: usize,
    /// Measured `max |VᵀV - I|` of the Lanczos basis (largest over phases), when
    /// measured. For the `None` mode: `max_j |v_1 · v_j|`.
    pub orthogonality_loss: Option<f64>,
    /// Measured `max |YᵀY - I|` of the returned Ritz vectors.
    pub ritz_orthogonality_loss: Option<f64>,
    /// Largest ω estimate seen without reorthogonalizing (partial mode).
    pub estimated_orthogonality: Option<f64>,
    /// Ghosts (none mode): Ritz values of the tridiagonal matrix identified by the
    /// Cullum–Willoughby test as copies or spurious, not eigenvalues of `A`.
    pub ghosts: Vec<f64>,
}

/// Computes extreme eigenpairs of the symmetric operator `op` on `space` (see the
/// module documentation for the method and its guarantees). Deterministic for a
/// given seed and thread count.
pub fn lanczos<S, A, P>(
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
    validate(op, space, options)?;
    progress.start(options.max_products as u64, "lanczos");
    match options.reorthogonalization {
        Reorthogonalization::None => plain::run(op, space, options, progress),
        Reorthogonalization::Full => {
            Solver::new(op, space, options, Orthogonality::Full)?.run(progress)
        }
        Reorthogonalization::Partial => Solver::new(
            op,
            space,
            options,
            match options.basis_precision {
                Precision::F64 => Orthogonality::Partial {
                    threshold: f64::EPSILON.sqrt(),
                    eta: f64::EPSILON.powf(0.75),
                },
                Precision::F32 => Orthogonality::Partial {
                    threshold: F32_SEMI_ORTHOGONALITY,
                    eta: (F32_SEMI_ORTHOGONALITY * f64::from(f32::EPSILON)).sqrt(),
                },
            },
        )?
        .run(progress),
    }
}

fn validate<S: VectorSpace, A: OperatorOn<S> + ?Sized>(
    op: &A,
    space: &S,
    options: &LanczosOptions,
) -> Result<()> {
    let n = op.dim();
    if space.dim() != n {
        return Err(Error::ShapeMismatch {
            name: "vector space".into(),
            expected: vec![n],
            found: vec![space.dim()],
        });
    }
    let ends = if options.which == Which::Both { 2 } else { 1 };
    if options.k == 0 {
        return Err(Error::arg("--k", "must be at least 1"));
    }
    if ends * options.k > n {
        return Err(Error::arg(
            "--k",
            format!(
                "{} eigenvalues requested but the operator has dimension {n}",
                ends * options.k
            ),
        ));
    }
    if options.max_products == 0 {
        return Err(Error::arg("--iters", "must be at least 1"));
    }
    if !(options.tol >= 0.0 && options.tol < 1.0) {
        return Err(Error::arg("--tol", "must lie in [0, 1)"));
    }
    if options.tol == 0.0 && options.reorthogonalization != Reorthogonalization::None {
        return Err(Error::arg("--tol", "must be positive"));
    }
    if options.reorthogonalization != Reorthogonalization::None {
        let total = ends * options.k;
        if options.max_products <= total {
            return Err(Error::arg(
                "--iters",
                format!("needs more than {total} products (one per computed residual)"),
            ));
        }
        if options.max_basis != 0 && options.max_basis < 2 * total + 3 {
            return Err(Error::arg(
                "--basis",
                format!(
                    "must be at least {} for {total} wanted eigenpairs",
                    2 * total + 3
                ),
            ));
        }
    }
    Ok(())
}

/// Semi-orthogonality level for an f32 basis: its vectors cannot be orthogonal
/// beyond `ε₃₂`, so `√ε₆₄` is out of reach; at `1e-5` the projected matrix still
/// errs only by `O(ω² ‖A‖) = 1e-10 ‖A‖` (Simon 1984).
const F32_SEMI_ORTHOGONALITY: f64 = 1e-5;

/// The smallest residual the arithmetic supports, in units of `‖A‖ ε` (with `ε`
/// the operator's unit roundoff).
const FLOOR_ULPS: f64 = 256.0;

/// A verified eigenpair kept aside (deflated) while probing.
#[derive(Clone, Copy, Debug)]
struct LockedPair {
    value: f64,
    residual: f64,
    converged: bool,
    slot: usize,
    top: bool,
}

/// The full/partial driver: a main phase, then multiplicity probes.
struct Solver<'a, S: VectorSpace, A: OperatorOn<S> + ?Sized> {
    op: &'a A,
    space: &'a S,
    options: &'a LanczosOptions,
    orthogonality: Orthogonality,
    target: Target,
    cap: usize,
    /// The smallest attainable residual in units of `‖A‖`.
    floor: f64,
    locked: S::Basis,
    pairs: Vec<LockedPair>,
    products: u64,
    verification_products: u64,
    probe_products: u64,
    restarts: u64,
    reorthogonalizations: u64,
    peak_stored: usize,
    orthogonality_loss: Option<f64>,
    largest_omega: f64,
    norm_estimate: f64,
    probes: usize,
    probes_successful: usize,
    multiplicities_verified: bool,
    products_to_verify: Option<u64>,
}

/// What one multiplicity probe established.
struct ProbeOutcome {
    /// It locked pairs further out than those held before.
    found: bool,
    /// Nothing further out remains: the probe concluded without finding anything,
    /// or the whole remaining spectrum became known.
    settled: bool,
}

impl<'a, S: VectorSpace, A: OperatorOn<S> + ?Sized> Solver<'a, S, A> {
    fn new(
        op: &'a A,
        space: &'a S,
        options: &'a LanczosOptions,
        orthogonality: Orthogonality,
    ) -> Result<Self> {
        let target = Target {
            which: options.which,
            count: options.k,
        };
        let total = target.total();
        let n = space.dim();
        let max_basis = match (options.max_basis, orthogonality) {
            (0, Orthogonality::Full) => options.max_products + 1 + total,
            (0, Orthogonality::Partial { .. }) => 40,
            (m, _) => m,
        };
        if max_basis < 2 * total + 3 {
            return Err(Error::arg(
                "--basis",
                format!(
                    "must be at least {} for {total} wanted eigenpairs",
                    2 * total + 3
                ),
            ));
        }
        // The active basis never needs more than n + 1 slots.
        let cap = (max_basis - total).min(n + 1);
        Ok(Solver {
            op,
            space,
            options,
            orthogonality,
            target,
            cap,
            floor: FLOOR_ULPS * op.precision().max(f64::EPSILON),
            locked: space.new_basis(total, Precision::F64)?,
            pairs: Vec::new(),
            products: 0,
            verification_products: 0,
            probe_products: 0,
            restarts: 0,
            reorthogonalizations: 0,
            peak_stored: 0,
            orthogonality_loss: None,
            largest_omega: 0.0,
            norm_estimate: 0.0,
            probes: 0,
            probes_successful: 0,
            multiplicities_verified: false,
            products_to_verify: None,
        })
    }

    /// The residual an estimate must reach.
    fn tolerance(&self, theta: f64, norm: f64) -> f64 {
        (self.options.tol * theta.abs()).max(self.floor * norm)
    }

    /// The residual a computed Ritz pair must reach: as [`Self::tolerance`], but
    /// with an f32 basis no Ritz vector is more accurate than its storage, so the
    /// floor rises to `8 ε₃₂ ‖A‖` (the eigenvalue, from the f64 projected matrix,
    /// stays accurate to about the residual squared over the gap).
    fn verified_tolerance(&self, theta: f64, norm: f64) -> f64 {
        let storage = match self.options.basis_precision {
            Precision::F64 => 0.0,
            Precision::F32 => 8.0 * f64::from(f32::EPSILON) * norm,
        };
        self.tolerance(theta, norm).max(storage)
    }

    /// Products still available beyond the reserve for one final verification.
    fn can_step(&self, engine_products: u64) -> bool {
        self.products + engine_products + (self.target.total() as u64)
            < self.options.max_products as u64
    }

    fn run<P: Progress + ?Sized>(mut self, progress: &P) -> Result<LanczosResult<S::Vector>> {
        let (main_steps, complete) = self.main_phase(progress)?;
        let all_converged = self.pairs.iter().all(|p| p.converged);
        // A phase that accounted for the whole spectrum (its basis spanned the
        // space, or the rest of the space is one eigenspace whose wanted copies are
        // locked) has every wanted eigenvalue with its multiplicity.
        self.multiplicities_verified = complete && all_converged;
        if self.options.verify_multiplicity && all_converged && !complete {
            // Probe until one settles; a probe cut short by the budget leaves the
            // multiplicities unverified.
            // Where the probe the budget cut short began, and whether it had found
            // a missed value all the same (then one more probe must conclude).
            let mut cut = (self.products, false);
            while self.can_step(0) {
                let start = self.products;
                self.probes += 1;
                let outcome = self.probe(main_steps, progress)?;
                if outcome.found {
                    self.probes_successful += 1;
                }
                if outcome.settled {
                    self.multiplicities_verified = true;
                    break;
                }
                cut = (start, outcome.found);
            }
            if !self.multiplicities_verified {
                let probes = if cut.1 { 2 } else { 1 };
                self.products_to_verify = Some(self.budget_to_verify(cut.0, main_steps, probes));
            }
        }
        self.finish()
    }

    /// The budget with which `probes` probes, the first starting after `start`
    /// products, run to their end: a probe that finds nothing beyond the locked
    /// pairs stops after `main_steps` steps (a step or two later when the
    /// projected problem is solved only every few steps), and every step keeps the
    /// reserve of one computed residual per wanted pair (see [`Self::can_step`]).
    /// The run is deterministic, so a larger budget repeats every product before
    /// `start`.
    fn budget_to_verify(&self, start: u64, main_steps: u64, probes: u64) -> u64 {
        let total = self.target.total() as u64;
        let slack = (main_steps + total) / 64 + 1;
        start + probes * (main_steps + total + slack)
    }

    fn new_engine(&self, stream: u64) -> Result<Engine<'a, S, A>> {
        Engine::new(
            self.space,
            self.op,
            self.orthogonality,
            self.target,
            self.cap,
            self.options.basis_precision,
            &self.locked,
            self.options.seed,
            stream,
        )
    }

    fn absorb(&mut self, engine: &Engine<'a, S, A>) -> Result<()> {
        self.products += engine.products;
        self.restarts += engine.restarts;
        self.reorthogonalizations += engine.reorthogonalizations;
        self.largest_omega = self.largest_omega.max(engine.largest_omega);
        self.norm_estimate = self.norm_estimate.max(engine.norm_estimate);
        if self.options.measure_orthogonality {
            let loss = engine.orthogonality_loss()?;
            self.orthogonality_loss =
                Some(self.orthogonality_loss.map_or(loss, |l: f64| l.max(loss)));
        }
        Ok(())
    }

    /// Improves a Ritz pair of a probe whose computed residual misses the
    /// tolerance. The probe works on the deflated operator `(I - YYᵀ) A (I - YYᵀ)`,
    /// so the Ritz vector `y` ignores `Yᵀ A y = R_Yᵀ y`, the locked pairs'
    /// residuals, which their relative tolerance lets be far above the floor of a
    /// pair near zero. First-order perturbation puts those components back:
    /// `y ← y + Σ_i y_i (y_iᵀ A y) / (θ - θ_i)` over the locked pairs not within the
    /// tolerance of `θ` (within it the component is harmless). Two products: `A y`,
    /// and the computed residual of the result.
    fn refine_against_locked<P: Progress + ?Sized>(
        &mut self,
        engine: &mut Engine<'a, S, A>,
        pair: &(f64, f64, S::Vector),
        norm: f64,
        progress: &P,
    ) -> Result<(f64, f64, S::Vector)> {
        let (theta, _, y) = pair;
        let before = engine.products;
        let ay = engine.apply(y, progress)?;
        let slots: Vec<usize> = self.pairs.iter().map(|p| p.slot).collect();
        let leaks = self.space.basis_dots(&self.locked, &slots, &ay)?;
        let margin = self.verified_tolerance(*theta, norm);
        let minus_c: Vec<f64> = self
            .pairs
            .iter()
            .zip(&leaks)
            .map(|(p, g)| {
                if (theta - p.value).abs() > margin {
                    g / (p.value - theta)
                } else {
                    0.0
                }
            })
            .collect();
        let mut refined = self.space.zeros()?;
        self.space.copy(y, &mut refined)?;
        self.space
            .basis_subtract(&self.locked, &slots, &minus_c, &mut refined)?;
        let length = self.space.norm(&refined)?;
        self.space.scale(1.0 / length, &mut refined)?;
        let mut ar = engine.apply(&refined, progress)?;
        let value = self.space.dot(&refined, &ar)?;
        let residual = self.space.axpy_norm(-value, &refined, &mut ar)?;
        self.verification_products += engine.products - before;
        Ok((value, residual, refined))
    }

    /// The requested ends, `true` for the top.
    fn ends(&self) -> Vec<bool> {
        match self.options.which {
            Which::Largest => vec![true],
            Which::Smallest => vec![false],
            Which::Both => vec![true, false],
        }
    }

    /// The end at which one more copy of `value` belongs among the wanted: fewer
    /// than `k` locked pairs of that end lie at or beyond it.
    fn end_wanting_copy(&self, value: f64, norm: f64) -> Option<bool> {
        let margin = self.tolerance(value, norm);
        self.ends().into_iter().find(|&top| {
            let held = self
                .pairs
                .iter()
                .filter(|p| p.top == top)
                .filter(|p| {
                    if top {
                        p.value >= value - margin
                    } else {
                        p.value <= value + margin
                    }
                })
                .count();
            held < self.options.k
        })
    }

    /// After a phase whose pairs are locked: whether the space it left unexplored
    /// (orthogonal to its basis and the locked vectors) is one eigenspace, tested
    /// with one product on a random vector of it ([`Engine::complement_eigenpair`]).
    /// If it is, the spectrum is accounted for: the phase's Ritz values (its basis
    /// is then invariant) and copies of that eigenvalue, of which as many are
    /// locked, one product each, as belong among the wanted. This is the case a
    /// single-vector Krylov method handles worst and a Hessian of an
    /// overparameterized model presents always: a null space of large dimension,
    /// of which the Krylov space holds one direction. One product when the test
    /// fails.
    fn settle_by_complement<P: Progress + ?Sized>(
        &mut self,
        engine: &mut Engine<'a, S, A>,
        progress: &P,
    ) -> Result<bool> {
        let norm = engine.norm_estimate.max(self.norm_estimate);
        while self.products + engine.products < self.options.max_products as u64 {
            let before = engine.products;
            let outside = engine.complement_eigenpair(&self.locked, progress)?;
            self.verification_products += engine.products - before;
            let Some((value, residual, vector)) = outside else {
                // The basis and the locked vectors span the space.
                return Ok(true);
            };
            if residual > self.verified_tolerance(value, norm) {
                return Ok(false);
            }
            let Some(top) = self.end_wanting_copy(value, norm) else {
                return Ok(true);
            };
            if !self.insert(value, residual, true, top, &vector)? {
                // invariant: end_wanting_copy found room at this end.
                return Ok(false);
            }
        }
        Ok(false)
    }

    fn check_due(len: usize, steps_since: usize) -> bool {
        // The projected eigenproblem costs O(len³): past 64 vectors check every
        // len/64 steps, wasting at most ~1.5% of the products.
        steps_since >= (len / 64).max(1)
    }

    /// Runs Lanczos until the wanted pairs have computed residuals within the
    /// tolerance (or the budget ends), and locks them. Returns the Krylov steps used
    /// and whether the whole spectrum was accounted for (the basis came to span the
    /// space, or the rest of it is one eigenspace whose wanted copies are held).
    fn main_phase<P: Progress + ?Sized>(&mut self, progress: &P) -> Result<(u64, bool)> {
        let mut engine = self.new_engine(0)?;
        let total = self.target.total();
        let mut factor = 1.0;
        let mut since_check = 0;
        let mut steps = 0;
        // After a disappointing explicit check: the step before which no other is
        // made, and the wait after the next one (doubling).
        let (mut next_check, mut wait) = (0, 1);
        let mut verified: Option<Vec<(f64, f64, S::Vector)>> = None;
        while !engine.exhausted && self.can_step(engine.products) {
            engine.step(&self.locked, progress)?;
            steps += 1;
            self.peak_stored = self
                .peak_stored
                .max(engine.stored() + self.space.basis_len(&self.locked));
            since_check += 1;
            if !(engine.exhausted || Self::check_due(engine.len(), since_check)) {
                continue;
            }
            since_check = 0;
            let ritz = engine.ritz()?;
            let wanted = self.target.wanted(engine.len());
            let norm = engine.norm_estimate;
            let estimated = wanted.len() == total
                && wanted.iter().all(|&i| {
                    ritz.residuals[i] <= factor * self.tolerance(ritz.eig.values[i], norm)
                });
            if !((estimated && steps >= next_check) || engine.exhausted) {
                continue;
            }
            let pairs = self.verify(&mut engine, &ritz, &wanted, progress)?;
            if pairs
                .iter()
                .all(|(theta, r, _)| *r <= self.verified_tolerance(*theta, norm))
            {
                verified = Some(pairs);
                break;
            }
            // The estimate was optimistic (rounding in the basis, or in the products):
            // ask for more, and wait longer each time so that a residual the
            // products cannot deliver does not cost a check per step.
            factor *= 0.1;
            next_check = steps + wait;
            wait *= 2;
            if engine.exhausted {
                verified = Some(pairs);
                break;
            }
        }
        let complete = verified.is_some() && engine.exhausted;
        let pairs = match verified {
            Some(pairs) => pairs,
            None => {
                // Out of budget: compute the residuals of the best current pairs.
                let ritz = engine.ritz()?;
                let wanted = self.target.wanted(engine.len());
                self.verify(&mut engine, &ritz, &wanted, progress)?
            }
        };
        let norm = engine.norm_estimate;
        let ends = self.target.wanted_ends(engine.len());
        for ((value, residual, vector), top) in pairs.into_iter().zip(ends) {
            let converged = residual <= self.verified_tolerance(value, norm);
            self.insert(value, residual, converged, top, &vector)?;
        }
        self.norm_estimate = self.norm_estimate.max(norm);
        let complete = complete
            || (self.options.verify_multiplicity
                && self.pairs.iter().all(|p| p.converged)
                && self.settle_by_complement(&mut engine, progress)?);
        self.absorb(&engine)?;
        Ok((steps, complete))
    }

    /// Forms the listed Ritz vectors and their computed residuals (one product each).
    fn verify<P: Progress + ?Sized>(
        &mut self,
        engine: &mut Engine<'a, S, A>,
        ritz: &engine::Ritz,
        indices: &[usize],
        progress: &P,
    ) -> Result<Vec<(f64, f64, S::Vector)>> {
        let before = engine.products;
        let coeffs: Vec<Vec<f64>> = indices
            .iter()
            .map(|&i| ritz.eig.vector(i).to_vec())
            .collect();
        let out = engine.explicit_residuals(&coeffs, progress)?;
        self.verification_products += engine.products - before;
        Ok(out)
    }

    /// Locks a verified pair: fills a free slot, or replaces the weakest pair of its
    /// end when the new one lies further out. Returns whether it was locked.
    fn insert(
        &mut self,
        value: f64,
        residual: f64,
        converged: bool,
        top: bool,
        vector: &S::Vector,
    ) -> Result<bool> {
        let same_end: Vec<usize> = (0..self.pairs.len())
            .filter(|&i| self.pairs[i].top == top)
            .collect();
        let per_end = match self.options.which {
            Which::Both => self.options.k,
            _ => self.target.total(),
        };
        if same_end.len() < per_end {
            let slot = self.space.basis_len(&self.locked);
            self.space.basis_push(&mut self.locked, vector)?;
            self.pairs.push(LockedPair {
                value,
                residual,
                converged,
                slot,
                top,
            });
            return Ok(true);
        }
        let outer = |v: f64| if top { v } else { -v };
        // invariant: same_end is non-empty here (per_end >= 1).
        let weakest = *same_end
            .iter()
            .min_by(|&&a, &&b| outer(self.pairs[a].value).total_cmp(&outer(self.pairs[b].value)))
            .expect("an end with pairs");
        if outer(value) > outer(self.pairs[weakest].value) {
            let slot = self.pairs[weakest].slot;
            self.space.basis_set(&mut self.locked, slot, vector)?;
            self.pairs[weakest] = LockedPair {
                value,
                residual,
                converged,
                slot,
                top,
            };
            return Ok(true);
        }
        Ok(false)
    }

    /// One multiplicity probe: Lanczos on the deflated operator from a fresh random
    /// vector, until its extreme Ritz values and every Ritz value beyond the locked
    /// pairs have converged (or, showing nothing beyond them, for as many steps as
    /// the first phase took). Locks the converged pairs found beyond, even when the
    /// budget cuts the probe short (it is then not settled).
    fn probe<P: Progress + ?Sized>(
        &mut self,
        main_steps: u64,
        progress: &P,
    ) -> Result<ProbeOutcome> {
        let mut engine = self.new_engine(self.probes as u64)?;
        // A breakdown is judged against ‖A‖, which the first phase knows better than
        // a fresh engine's first product.
        engine.norm_estimate = self.norm_estimate;
        let boundary = |pairs: &[LockedPair], top: bool| {
            let values = pairs.iter().filter(|p| p.top == top).map(|p| p.value);
            if top {
                values.fold(f64::INFINITY, f64::min)
            } else {
                values.fold(f64::NEG_INFINITY, f64::max)
            }
        };
        let ends = self.ends();
        let edges: Vec<f64> = ends.iter().map(|&top| boundary(&self.pairs, top)).collect();
        let mut since_check = 0;
        let mut steps = 0u64;
        let mut candidates: Vec<(usize, bool)> = Vec::new();
        let mut last_ritz = None;
        let mut concluded = engine.exhausted;
        while !engine.exhausted && self.can_step(engine.products) {
            engine.step(&self.locked, progress)?;
            steps += 1;
            self.peak_stored = self
                .peak_stored
                .max(engine.stored() + self.space.basis_len(&self.locked));
            since_check += 1;
            if !(engine.exhausted || Self::check_due(engine.len(), since_check)) {
                continue;
            }
            since_check = 0;
            let ritz = engine.ritz()?;
            let norm = engine.norm_estimate.max(self.norm_estimate);
            let len = engine.len();
            let converged =
                |i: usize| ritz.residuals[i] <= self.tolerance(ritz.eig.values[i], norm);
            let mut done = true;
            candidates.clear();
            for (&top, &edge) in ends.iter().zip(&edges) {
                let margin = self.tolerance(edge, norm);
                // Outermost first, so that a budget cut verifies the most useful.
                let order: Vec<usize> = if top {
                    (0..len).rev().collect()
                } else {
                    (0..len).collect()
                };
                let beyond: Vec<usize> = order
                    .into_iter()
                    .filter(|&i| {
                        let v = ritz.eig.values[i];
                        if top {
                            v > edge + margin
                        } else {
                            v < edge - margin
                        }
                    })
                    .collect();
                let extreme = if top { len - 1 } else { 0 };
                let end_done = (converged(extreme) && beyond.iter().all(|&i| converged(i)))
                    || (steps >= main_steps && beyond.is_empty());
                done &= end_done;
                candidates.extend(
                    beyond
                        .into_iter()
                        .filter(|&i| converged(i))
                        .take(self.options.k)
                        .map(|i| (i, top)),
                );
            }
            last_ritz = Some(ritz);
            if done || engine.exhausted {
                concluded = true;
                break;
            }
        }
        // The budget keeps one product per wanted pair in reserve for this.
        candidates.truncate(self.target.total());
        let mut found = false;
        if let Some(ritz) = last_ritz.filter(|_| !candidates.is_empty()) {
            let indices: Vec<usize> = candidates.iter().map(|c| c.0).collect();
            let norm = engine.norm_estimate.max(self.norm_estimate);
            let mut pairs = self.verify(&mut engine, &ritz, &indices, progress)?;
            for pair in &mut pairs {
                if pair.1 > self.verified_tolerance(pair.0, norm) {
                    *pair = self.refine_against_locked(&mut engine, pair, norm, progress)?;
                }
            }
            for ((value, residual, vector), &(_, top)) in pairs.into_iter().zip(&candidates) {
                // A pair beyond the locked ones that still misses the tolerance is
                // locked all the same, unconverged: it shows the wanted set was wrong.
                let converged = residual <= self.verified_tolerance(value, norm);
                found |= self.insert(value, residual, converged, top, &vector)?;
            }
        }
        // Settled: nothing further out, or everything the probe did not span is
        // known (it spanned the rest, or the rest is one eigenspace whose wanted
        // copies are now locked).
        let settled = concluded
            && (!found || engine.exhausted || self.settle_by_complement(&mut engine, progress)?);
        self.probe_products += engine.products;
        self.absorb(&engine)?;
        Ok(ProbeOutcome { found, settled })
    }

    fn finish(self) -> Result<LanczosResult<S::Vector>> {
        let mut order: Vec<usize> = (0..self.pairs.len()).collect();
        match self.options.which {
            Which::Smallest => {
                order.sort_by(|&a, &b| self.pairs[a].value.total_cmp(&self.pairs[b].value))
            }
            _ => order.sort_by(|&a, &b| self.pairs[b].value.total_cmp(&self.pairs[a].value)),
        }
        let vectors = if self.options.ritz_vectors {
            let mut vs = Vec::with_capacity(order.len());
            for &i in &order {
                let mut v = self.space.zeros()?;
                self.space
                    .basis_get(&self.locked, self.pairs[i].slot, &mut v)?;
                vs.push(v);
            }
            Some(vs)
        } else {
            None
        };
        let ritz_orthogonality_loss = if self.options.measure_orthogonality {
            let gram = self.space.basis_gram(&self.locked)?;
            Some(super::vector::orthogonality_loss(
                &gram,
                self.space.basis_len(&self.locked),
            ))
        } else {
            None
        };
        let estimated_orthogonality = match self.orthogonality {
            Orthogonality::Partial { .. } => Some(self.largest_omega),
            Orthogonality::Full => None,
        };
        let residual_floor = self.floor * self.norm_estimate;
        let tolerance_clipped = self
            .pairs
            .iter()
            .any(|p| self.options.tol * p.value.abs() < residual_floor);
        let trusted = self.multiplicities_verified || !self.options.verify_multiplicity;
        Ok(LanczosResult {
            eigenvalues: order.iter().map(|&i| self.pairs[i].value).collect(),
            residuals: order.iter().map(|&i| self.pairs[i].residual).collect(),
            residual_converged: order.iter().map(|&i| self.pairs[i].converged).collect(),
            converged: order
                .iter()
                .map(|&i| self.pairs[i].converged && trusted)
                .collect(),
            multiplicities_verified: self.multiplicities_verified,
            multiplicities_checked: self.options.verify_multiplicity,
            products_to_verify: self.products_to_verify,
            max_products: self.options.max_products as u64,
            residuals_computed: true,
            residual_floor,
            tolerance_clipped,
            vectors,
            products: self.products,
            verification_products: self.verification_products,
            probe_products: self.probe_products,
            probes: self.probes,
            probes_successful: self.probes_successful,
            restarts: self.restarts,
            reorthogonalizations: self.reorthogonalizations,
            peak_stored_vectors: self.peak_stored,
            orthogonality_loss: self.orthogonality_loss,
            ritz_orthogonality_loss,
            estimated_orthogonality,
            ghosts: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
