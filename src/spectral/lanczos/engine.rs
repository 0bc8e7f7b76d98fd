//! The Krylov engine behind the full and the partial reorthogonalization modes:
//! the Lanczos recurrence on a stored basis, thick restarts when the basis is
//! full, and deflation against locked Ritz vectors.
//!
//! Invariant between steps: slots `0..len` of the basis hold orthonormal vectors
//! whose products with `A` are known through the projected matrix `H` (`len × len`,
//! symmetric), and slot `len` holds the continuation vector `cur`, coupled to them
//! by the row `coupling`:
//!
//! `A V = V H + cur · couplingᵀ` (up to rounding and, with locked vectors, the
//! deflation `(I - Y Yᵀ)`).
//!
//! After a plain Lanczos step the coupling is `β e_len` (three-term recurrence);
//! after a thick restart (Wu & Simon, "Thick-restart Lanczos method for large
//! symmetric eigenvalue problems", SIAM J. Matrix Anal. Appl. 22, 2000) the kept
//! Ritz vectors make `H` diagonal and the coupling a full row (an arrowhead). Ritz
//! residuals follow as `|couplingᵀ s|` for a Ritz pair `(θ, s)` of `H`.

use super::Which;
use super::omega::Omega;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng;
use crate::spectral::operator::OperatorOn;
use crate::spectral::small::{SmallEigen, symmetric_eigen};
use crate::spectral::vector::{Distribution, Precision, VectorSpace};

/// A new vector whose norm after orthogonalization falls below this fraction of
/// `‖A‖` spans nothing new: the Krylov space is invariant.
const BREAKDOWN: f64 = 64.0 * f64::EPSILON;

/// The one-sweep norm `β² = ‖u‖² - α² - Σ c²` loses `log₁₀(‖u‖²/β²)` digits to
/// cancellation; below this ratio (four digits) the norm is recomputed by a pass.
const PYTHAGORAS_MIN: f64 = 1e-4;

/// Fewest steps between two restarts for lost orthogonality; closer losses are
/// handled by partial reorthogonalization instead.
const MIN_CYCLE: usize = 8;

/// How the engine keeps its basis orthogonal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Orthogonality {
    /// CGS2 against the whole basis at every step.
    Full,
    /// One Gram–Schmidt pass, only when Simon's ω estimate exceeds `threshold`,
    /// against the slots whose estimate exceeds `eta` (and again at the step
    /// after, as Simon prescribes).
    Partial { threshold: f64, eta: f64 },
}

/// Which Ritz values the engine is after, `count` at each requested end.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    pub which: Which,
    pub count: usize,
}

impl Target {
    pub fn total(&self) -> usize {
        match self.which {
            Which::Both => 2 * self.count,
            _ => self.count,
        }
    }

    /// Indices (into ascending Ritz values of `len` values) of the wanted pairs:
    /// largest first for the top end, smallest first for the bottom end.
    pub fn wanted(&self, len: usize) -> Vec<usize> {
        self.extremes(len, self.count)
    }

    /// For each index of [`Self::wanted`], whether it belongs to the top end.
    pub fn wanted_ends(&self, len: usize) -> Vec<bool> {
        let wanted = self.wanted(len);
        match self.which {
            Which::Largest => vec![true; wanted.len()],
            Which::Smallest => vec![false; wanted.len()],
            Which::Both => {
                let top = self.count.min(len.div_ceil(2));
                (0..wanted.len()).map(|i| i < top).collect()
            }
        }
    }

    /// The `keep` Ritz pairs nearest the wanted end(s), kept at a thick restart.
    pub fn keep(&self, len: usize, keep: usize) -> Vec<usize> {
        match self.which {
            Which::Both => self.extremes(len, keep.div_ceil(2)),
            _ => self.extremes(len, keep),
        }
    }

    fn extremes(&self, len: usize, per_end: usize) -> Vec<usize> {
        match self.which {
            Which::Largest => (len.saturating_sub(per_end)..len).rev().collect(),
            Which::Smallest => (0..per_end.min(len)).collect(),
            Which::Both => {
                let top = per_end.min(len.div_ceil(2));
                let bottom = per_end.min(len - top);
                (len - top..len).rev().chain(0..bottom).collect()
            }
        }
    }
}

/// Ritz pairs of the current projected matrix with their estimated residuals.
pub(super) struct Ritz {
    pub eig: SmallEigen,
    pub residuals: Vec<f64>,
}

pub(super) struct Engine<'a, S: VectorSpace, A: OperatorOn<S> + ?Sized> {
    space: &'a S,
    op: &'a A,
    orthogonality: Orthogonality,
    target: Target,
    basis: S::Basis,
    precision: Precision,
    cap: usize,
    len: usize,
    /// Projected matrix, column-major `cap × cap`.
    h: Vec<f64>,
    /// Coupling of the continuation vector to slots `0..len`.
    coupling: Vec<f64>,
    cur: S::Vector,
    prev: S::Vector,
    work: S::Vector,
    /// `prev` holds slot `len - 1` and the coupling is `β e_{len-1}`.
    prev_is_neighbor: bool,
    omega: Option<Omega>,
    /// Kept Ritz vectors converged to `√ε ‖A‖`: every new vector loses orthogonality
    /// to them fastest (Paige), so each step orthogonalizes against them.
    selective: Vec<usize>,
    /// Steps since the last restart (a restart for lost orthogonality needs a few).
    steps_since_restart: usize,
    /// Slots the next step must be orthogonalized against (Simon's second step).
    reorthogonalize_next: Option<Vec<usize>>,
    seed: u64,
    stream: u64,
    injections: u64,
    /// Lower bound on `‖A‖`: the largest `‖A v‖` seen.
    pub norm_estimate: f64,
    /// The basis (with the locked vectors) spans an invariant subspace that no
    /// random vector can extend: every Ritz value is exact.
    pub exhausted: bool,
    pub products: u64,
    pub reorthogonalizations: u64,
    pub restarts: u64,
    pub largest_omega: f64,
}

impl<'a, S: VectorSpace, A: OperatorOn<S> + ?Sized> Engine<'a, S, A> {
    /// An engine whose first vector is a random vector of stream `stream`,
    /// orthogonalized against the locked vectors.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        space: &'a S,
        op: &'a A,
        orthogonality: Orthogonality,
        target: Target,
        cap: usize,
        precision: Precision,
        locked: &S::Basis,
        seed: u64,
        stream: u64,
    ) -> Result<Self> {
        let n = space.dim();
        let omega = match orthogonality {
            Orthogonality::Partial { .. } => Some(Omega::new(
                cap,
                match precision {
                    Precision::F64 => f64::EPSILON * (n as f64).sqrt(),
                    Precision::F32 => f64::from(f32::EPSILON),
                },
            )),
            Orthogonality::Full => None,
        };
        let mut engine = Engine {
            space,
            op,
            orthogonality,
            target,
            basis: space.new_basis(cap, precision)?,
            precision,
            cap,
            len: 0,
            h: vec![0.0; cap * cap],
            coupling: vec![0.0; cap],
            cur: space.zeros()?,
            prev: space.zeros()?,
            work: space.zeros()?,
            prev_is_neighbor: false,
            omega,
            reorthogonalize_next: None,
            selective: Vec::new(),
            steps_since_restart: 0,
            seed,
            stream,
            injections: 0,
            norm_estimate: 0.0,
            exhausted: false,
            products: 0,
            reorthogonalizations: 0,
            restarts: 0,
            largest_omega: 0.0,
        };
        if !engine.inject_random(locked)? {
            engine.exhausted = true;
        }
        Ok(engine)
    }

    /// Number of expanded basis vectors (the order of the projected matrix).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Vectors stored in the basis right now.
    pub fn stored(&self) -> usize {
        self.space.basis_len(&self.basis)
    }

    /// Puts a fresh random unit vector, orthogonal to the locked vectors and the
    /// basis, in the continuation slot with zero coupling. Returns `false` when
    /// nothing is left to span.
    fn inject_random(&mut self, locked: &S::Basis) -> Result<bool> {
        let Some((cur, norm)) = self.random_orthogonal(locked, self.len)? else {
            return Ok(false);
        };
        self.cur = cur;
        self.space
            .scale_and_push(1.0 / norm, &mut self.cur, &mut self.basis)?;
        self.coupling[..self.len].fill(0.0);
        self.prev_is_neighbor = false;
        if let Some(omega) = &mut self.omega {
            omega.reset(self.len);
        }
        Ok(true)
    }

    /// A fresh random vector orthogonalized against the locked vectors and basis
    /// slots `0..slots`, with its norm; `None` when they (nearly) span the space.
    fn random_orthogonal(
        &mut self,
        locked: &S::Basis,
        slots: usize,
    ) -> Result<Option<(S::Vector, f64)>> {
        let n = self.space.dim();
        let locked_len = self.space.basis_len(locked);
        if slots + locked_len >= n {
            return Ok(None);
        }
        let stream = rng::stream_id(&[self.stream, self.injections]);
        self.injections += 1;
        let mut v = self
            .space
            .random(Distribution::Gaussian, self.seed, stream)?;
        let initial = self.space.norm(&v)?;
        let slots: Vec<usize> = (0..slots).collect();
        let locked_slots: Vec<usize> = (0..locked_len).collect();
        let mut norm = initial;
        // Two rounds: a random vector is far from the span, but after deflation of a
        // nearly complete basis most of it may cancel.
        for _ in 0..2 {
            if !locked_slots.is_empty() {
                norm = self
                    .space
                    .basis_orthogonalize(locked, &locked_slots, &mut v)?
                    .1;
            }
            if !slots.is_empty() {
                norm = self
                    .space
                    .basis_orthogonalize(&self.basis, &slots, &mut v)?
                    .1;
            }
        }
        if norm <= 1e-10 * initial {
            return Ok(None);
        }
        Ok(Some((v, norm)))
    }

    /// Tests the space the engine has not explored (orthogonal to every stored
    /// vector, the continuation included, and to the locked vectors) with one
    /// product on a random unit vector `u` of it: returns `(uᵀAu, ‖Au - (uᵀAu) u‖,
    /// u)`, or `None` when nothing is left outside. A small residual says that `u`
    /// is an eigenvector, which a random vector is (with probability one) only when
    /// the space it was drawn from is a single eigenspace: the residual of a random
    /// vector is the spread of that space's eigenvalues weighted by its random
    /// components, so it resolves the space's spectrum to about the residual times
    /// the square root of its dimension.
    pub fn complement_eigenpair<P: Progress + ?Sized>(
        &mut self,
        locked: &S::Basis,
        progress: &P,
    ) -> Result<Option<(f64, f64, S::Vector)>> {
        let Some((mut u, norm)) = self.random_orthogonal(locked, self.stored())? else {
            return Ok(None);
        };
        self.space.scale(1.0 / norm, &mut u)?;
        progress.check()?;
        self.op.apply_in(self.space, &u, &mut self.work)?;
        self.products += 1;
        progress.advance(1);
        let value = self.space.dot(&u, &self.work)?;
        let residual = self.space.axpy_norm(-value, &u, &mut self.work)?;
        Ok(Some((value, residual, u)))
    }

    /// `A x`, one product counted against this engine.
    pub fn apply<P: Progress + ?Sized>(
        &mut self,
        x: &S::Vector,
        progress: &P,
    ) -> Result<S::Vector> {
        let mut out = self.space.zeros()?;
        progress.check()?;
        self.op.apply_in(self.space, x, &mut out)?;
        self.products += 1;
        progress.advance(1);
        Ok(out)
    }

    /// One Lanczos step: expands the continuation vector with one product
    /// (restarting first when the basis is full).
    pub fn step<P: Progress + ?Sized>(&mut self, locked: &S::Basis, progress: &P) -> Result<()> {
        if self.exhausted {
            return Ok(());
        }
        if self.len + 2 > self.cap {
            self.restart()?;
        }
        progress.check()?;
        self.op.apply_in(self.space, &self.cur, &mut self.work)?;
        self.products += 1;
        progress.advance(1);
        let space = self.space;
        let locked_slots: Vec<usize> = (0..space.basis_len(locked)).collect();

        let j = self.len;
        let neighbors: Vec<usize> = (0..j).filter(|&i| self.coupling[i] != 0.0).collect();
        let lanczos_form = self.prev_is_neighbor && neighbors == [j - 1];
        // In the partial mode a plain step takes two sweeps: the first forms
        // u = A v_j - β v_{j-1} and every inner product the step needs, the norm
        // β = ‖u - α v_j - Σ c_i y_i‖ follows by Pythagoras, and the second sweep
        // subtracts, normalizes and stores. Selective orthogonalization against the
        // converged kept Ritz vectors y_i rides along (their coefficients c_i are
        // rounding errors and stay out of H, as in Parlett & Scott 1979).
        let mut deferred: Option<Vec<f64>> = None;
        let fused = lanczos_form
            && locked_slots.is_empty()
            && matches!(self.orthogonality, Orthogonality::Partial { .. });
        let (alpha, mut beta) = if fused {
            let dots = space.axpy_dot_block(
                -self.coupling[j - 1],
                &self.prev,
                &mut self.work,
                &self.cur,
                &self.basis,
                &self.selective,
            )?;
            let alpha = dots.z_dot;
            // The coefficients are taken before `α v_j` is subtracted; correct them
            // for it, or the overlap with v_j is fed back amplified by α/β.
            let so: Vec<f64> = dots
                .slot_dots
                .iter()
                .zip(&dots.slot_dots_z)
                .map(|(w, c)| w - alpha * c)
                .collect();
            // ‖u - α v - Σ c_i y_i‖² with ‖v‖² measured, not assumed: an error in
            // ‖v‖ would otherwise feed into the next norm, amplified by α²/β².
            let squared = dots.norm_squared
                - alpha * alpha * (2.0 - dots.z_norm_squared)
                - so.iter().map(|c| c * c).sum::<f64>();
            if squared > PYTHAGORAS_MIN * dots.norm_squared {
                deferred = Some(so);
                (alpha, squared.sqrt())
            } else {
                let beta = space.axpy_subtract_norm(
                    -alpha,
                    &self.cur,
                    &mut self.work,
                    &self.basis,
                    &self.selective,
                    &so,
                )?;
                (alpha, beta)
            }
        } else {
            if !neighbors.is_empty() {
                let coeffs: Vec<f64> = neighbors.iter().map(|&i| self.coupling[i]).collect();
                space.basis_subtract(&self.basis, &neighbors, &coeffs, &mut self.work)?;
            }
            let alpha = space.dot(&self.cur, &self.work)?;
            (alpha, space.axpy_norm(-alpha, &self.cur, &mut self.work)?)
        };

        let cap = self.cap;
        self.h[j + j * cap] = alpha;
        let mut column_norm2 = alpha * alpha + beta * beta;
        for &i in &neighbors {
            self.h[i + j * cap] = self.coupling[i];
            self.h[j + i * cap] = self.coupling[i];
            column_norm2 += self.coupling[i] * self.coupling[i];
        }
        self.norm_estimate = self.norm_estimate.max(column_norm2.sqrt());

        let all: Vec<usize> = (0..=j).collect();
        match self.orthogonality {
            Orthogonality::Full => {
                beta = space
                    .basis_orthogonalize(&self.basis, &all, &mut self.work)?
                    .1;
                self.reorthogonalizations += 1;
            }
            Orthogonality::Partial { threshold, eta } => {
                // invariant: omega exists in partial mode (set in `new`).
                let omega = self.omega.as_mut().expect("partial mode keeps ω");
                omega.advance(&self.h, cap, j, beta, self.norm_estimate);
                if lanczos_form {
                    // Selectively orthogonalized (now or in the deferred sweep).
                    omega.reset_slots(j + 1, &self.selective);
                }
                let largest = omega.largest_in_row(j + 1);
                let forced = self.reorthogonalize_next.take();
                let early_restart = forced.is_none()
                    && largest > threshold
                    && self.steps_since_restart >= MIN_CYCLE
                    && beta > BREAKDOWN * self.norm_estimate;
                if early_restart {
                    if let Some(so) = deferred.take() {
                        beta = space.axpy_subtract_norm(
                            -alpha,
                            &self.cur,
                            &mut self.work,
                            &self.basis,
                            &self.selective,
                            &so,
                        )?;
                    }
                    return self.restart_on_lost_orthogonality(j, beta, eta);
                }
                if largest > threshold || forced.is_some() {
                    let mut slots = omega.above(j + 1, eta);
                    if let Some(previous) = &forced {
                        slots.extend(previous.iter().filter(|&&s| s <= j));
                        slots.sort_unstable();
                        slots.dedup();
                    }
                    if !slots.is_empty() {
                        if let Some(so) = deferred.take() {
                            space.axpy_subtract_norm(
                                -alpha,
                                &self.cur,
                                &mut self.work,
                                &self.basis,
                                &self.selective,
                                &so,
                            )?;
                        }
                        beta = space
                            .basis_project_out(&self.basis, &slots, &mut self.work)?
                            .1;
                        omega.reset_slots(j + 1, &slots);
                        self.reorthogonalizations += 1;
                    }
                    // Simon: the vector after a reorthogonalized one needs it too,
                    // since the recurrence carries the error of both.
                    if forced.is_none() {
                        self.reorthogonalize_next = Some(slots);
                    }
                } else {
                    self.largest_omega = self.largest_omega.max(largest);
                }
            }
        }

        if !locked_slots.is_empty() {
            // Deflation by the locked Ritz vectors Y: the step applies
            // (I - YYᵀ) A (I - YYᵀ). Projecting the new vector (not A v_j) keeps it
            // orthogonal to Y: components of Y in v_j and v_{j-1}, subtracted by the
            // recurrence with weights α and β, would otherwise grow by about
            // (|α| + |β|)/β per step.
            beta = space
                .basis_orthogonalize(locked, &locked_slots, &mut self.work)?
                .1;
        }
        self.len = j + 1;
        self.coupling[..self.len].fill(0.0);
        if beta <= BREAKDOWN * self.norm_estimate {
            if !self.inject_random(locked)? {
                self.exhausted = true;
            }
            return Ok(());
        }
        match deferred {
            Some(so) => space.update_scale_push(
                -alpha,
                &self.cur,
                &mut self.work,
                &mut self.basis,
                &self.selective,
                &so,
                1.0 / beta,
            )?,
            None => space.scale_and_push(1.0 / beta, &mut self.work, &mut self.basis)?,
        }
        std::mem::swap(&mut self.prev, &mut self.cur);
        std::mem::swap(&mut self.cur, &mut self.work);
        self.coupling[j] = beta;
        self.prev_is_neighbor = true;
        self.steps_since_restart += 1;
        Ok(())
    }

    /// Partial mode, when ω says the new vector `work` (norm `beta`, expanding
    /// slot `j`) has lost orthogonality: rather than orthogonalizing it against
    /// the whole basis (and the next one too), restart now. Paige's theorem says
    /// the lost directions are those of converged Ritz vectors; the restart makes
    /// them explicit kept vectors, which every later step orthogonalizes against at
    /// the cost of one extra vector read (selective orthogonalization). The new
    /// continuation vector is projected off the kept vectors its ω still leans on.
    fn restart_on_lost_orthogonality(&mut self, j: usize, beta: f64, eta: f64) -> Result<()> {
        let space = self.space;
        self.len = j + 1;
        self.coupling[..self.len].fill(0.0);
        self.coupling[j] = beta;
        space.scale_and_push(1.0 / beta, &mut self.work, &mut self.basis)?;
        std::mem::swap(&mut self.prev, &mut self.cur);
        std::mem::swap(&mut self.cur, &mut self.work);
        self.restart()?;
        let slot = self.len;
        // invariant: omega exists in partial mode, the only caller.
        let omega = self.omega.as_mut().expect("partial mode keeps ω");
        let leaning = omega.above(slot, eta);
        if !leaning.is_empty() {
            let norm = space
                .basis_project_out(&self.basis, &leaning, &mut self.cur)?
                .1;
            space.scale(1.0 / norm, &mut self.cur)?;
            space.basis_set(&mut self.basis, slot, &self.cur)?;
            omega.reset_slots(slot, &leaning);
            self.reorthogonalizations += 1;
        }
        Ok(())
    }

    /// Ritz pairs of the projected matrix with residual estimates `|couplingᵀ s|`.
    pub fn ritz(&self) -> Result<Ritz> {
        let eig = symmetric_eigen(&self.h, self.len, self.cap)?;
        let residuals = (0..self.len)
            .map(|i| {
                if self.exhausted {
                    0.0
                } else {
                    eig.vector(i)
                        .iter()
                        .zip(&self.coupling)
                        .map(|(s, c)| s * c)
                        .sum::<f64>()
                        .abs()
                }
            })
            .collect();
        Ok(Ritz { eig, residuals })
    }

    /// Thick restart: keeps the Ritz vectors nearest the wanted end(s) (the wanted
    /// ones plus half of the rest of the basis), so that the basis never exceeds
    /// its capacity while the Krylov information about the wanted pairs is kept.
    fn restart(&mut self) -> Result<()> {
        let ritz = self.ritz()?;
        let rows = self.len;
        let wanted = self.target.total();
        let keep = (wanted + (rows - wanted) / 3)
            .min(rows - 1)
            .max(wanted.min(rows - 1));
        let kept = self.target.keep(rows, keep);
        let cols = kept.len();
        let mut s = vec![0.0; rows * cols];
        for (b, &i) in kept.iter().enumerate() {
            s[b * rows..(b + 1) * rows].copy_from_slice(ritz.eig.vector(i));
        }
        self.space.basis_rotate(&mut self.basis, &s, rows, cols)?;
        let coupling: Vec<f64> = (0..cols)
            .map(|b| (0..rows).map(|r| self.coupling[r] * s[r + b * rows]).sum())
            .collect();
        self.h.fill(0.0);
        self.coupling.fill(0.0);
        for (b, &i) in kept.iter().enumerate() {
            self.h[b + b * self.cap] = ritz.eig.values[i];
            self.coupling[b] = coupling[b];
        }
        if let Some(omega) = &mut self.omega {
            let floor = match self.precision {
                Precision::F32 => f64::from(f32::EPSILON),
                Precision::F64 => f64::EPSILON,
            };
            omega.rotate(&s, rows, cols, floor * (rows as f64).sqrt());
            self.reorthogonalize_next = None;
            let level = f64::EPSILON.sqrt() * self.norm_estimate;
            self.selective = (0..cols).filter(|&b| coupling[b].abs() <= level).collect();
        }
        self.len = cols;
        self.prev_is_neighbor = false;
        self.restarts += 1;
        self.steps_since_restart = 0;
        Ok(())
    }

    /// The Ritz vectors `y = V s` for the given coefficient vectors (formed in one
    /// pass over the basis), each normalized, with its computed residual: one product
    /// each. Returns the Rayleigh quotient `yᵀ A y` (the best eigenvalue estimate for
    /// `y`), `‖A y - θ y‖` and `y`.
    pub fn explicit_residuals<P: Progress + ?Sized>(
        &mut self,
        coeffs: &[Vec<f64>],
        progress: &P,
    ) -> Result<Vec<(f64, f64, S::Vector)>> {
        if coeffs.iter().any(|c| c.len() != self.len) {
            return Err(Error::Numerical(
                "Ritz coefficients do not match the basis".into(),
            ));
        }
        let mut ys: Vec<S::Vector> = (0..coeffs.len())
            .map(|_| self.space.zeros())
            .collect::<Result<_>>()?;
        self.space
            .basis_combine_many(&self.basis, coeffs, &mut ys)?;
        let mut out = Vec::with_capacity(ys.len());
        for mut y in ys {
            let norm = self.space.norm(&y)?;
            self.space.scale(1.0 / norm, &mut y)?;
            progress.check()?;
            self.op.apply_in(self.space, &y, &mut self.work)?;
            self.products += 1;
            progress.advance(1);
            let theta = self.space.dot(&y, &self.work)?;
            let residual = self.space.axpy_norm(-theta, &y, &mut self.work)?;
            out.push((theta, residual, y));
        }
        Ok(out)
    }

    /// `max |VᵀV - I|` over the stored basis (one pass, `O(len² n)` flops).
    pub fn orthogonality_loss(&self) -> Result<f64> {
        let gram = self.space.basis_gram(&self.basis)?;
        Ok(crate::spectral::vector::orthogonality_loss(
            &gram,
            self.stored(),
        ))
    }
}
