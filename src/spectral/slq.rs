//! Stochastic Lanczos quadrature (SLQ): the spectral density of a symmetric
//! operator from a few random probes.
//!
//! For a unit probe `v`, `m` Lanczos steps give the tridiagonal `T_m = S Θ Sᵀ`, and
//! `vᵀ f(A) v ≈ Σ_i τ_i f(θ_i)` with nodes `θ_i` and weights `τ_i = (e₁ᵀ s_i)²`:
//! the `m`-point Gauss quadrature of the spectral measure of `A` seen from `v`
//! (Golub & Meurant; Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via
//! stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38, 2017). Averaging
//! over independent Rademacher or Gaussian probes gives an unbiased estimate of
//! the eigenvalue distribution `(1/n) Σ_j δ(λ_j)` in the sense of quadrature;
//! every probe's nodes and weights are kept ([`SlqResult`]) so any functional,
//! density or histogram can be recomputed without new products.
//!
//! The density on a grid is the quadrature measure convolved with a Gaussian
//! ([`SlqResult::density`]). Width rule ([`Broadening::Auto`]): `σ = (b - a)/m`,
//! where `[a, b]` spans the nodes (in the plotting coordinate) and `m` is the
//! number of Lanczos steps. An `m`-point Gauss rule places its nodes about
//! `π (b - a)/(2m)` apart in the bulk of the spectrum, so features finer than that
//! are not resolved by the quadrature; `σ` at that scale removes the spikes of the
//! individual nodes and widens genuine features by no more than one node spacing.
//! [`Broadening::Width`] overrides it. With [`DensityScale::SymLog`] the grid, the
//! nodes and the width live in the coordinate `u = sign(λ) log₁₀(1 + |λ|/w)`, for
//! spectra that span decades (Hessians: a bulk near zero and outliers); the density
//! is then per unit of `u`.
//!
//! Probes run in lockstep batches through the operator's batched apply (one GEMM
//! for a dense matrix, one batched HVP on a GPU). With `reorthogonalize`, each
//! probe's Lanczos vectors are kept and orthogonalized by CGS2 (memory `m` vectors
//! per probe in flight); without, three vectors per probe suffice and the quadrature
//! stays accurate: lost orthogonality only duplicates converged nodes, splitting
//! their weight (Knizhnerman 1996; Greenbaum 1989).

use serde::{Deserialize, Serialize};

use super::operator::{OperatorOn, check_space};
use super::small::tridiagonal_eigen;
use super::vector::{Distribution, Precision, VectorSpace};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng;

/// Parameters of [`slq`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlqOptions {
    /// Number of random probes.
    pub probes: usize,
    /// Lanczos steps (products) per probe: the number of quadrature nodes.
    pub steps: usize,
    pub distribution: Distribution,
    /// Keep and fully reorthogonalize each probe's Lanczos basis.
    pub reorthogonalize: bool,
    /// Probes advanced together through batched products (`0`: all).
    pub batch: usize,
    pub seed: u64,
}

impl Default for SlqOptions {
    fn default() -> Self {
        SlqOptions {
            probes: 10,
            steps: 80,
            distribution: Distribution::Rademacher,
            reorthogonalize: true,
            batch: 0,
            seed: 0,
        }
    }
}

/// Per-probe Gauss quadrature rules of the spectral measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlqResult {
    /// The operator's dimension.
    pub dim: usize,
    /// Nodes (Ritz values, ascending) of each probe.
    pub nodes: Vec<Vec<f64>>,
    /// Weights of each probe's nodes (squared first components; they sum to 1).
    pub weights: Vec<Vec<f64>>,
    /// `‖z‖²` of each unnormalized probe (`n` for Rademacher probes).
    pub probe_norms_squared: Vec<f64>,
    /// Products used.
    pub products: u64,
    /// Lanczos steps requested per probe (a probe stops early only when its Krylov
    /// space becomes invariant, making its quadrature exact).
    pub steps: usize,
}

/// The coordinate in which a density is gridded and broadened.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DensityScale {
    Linear,
    /// `u = sign(λ) log₁₀(1 + |λ|/linear_width)`.
    SymLog {
        linear_width: f64,
    },
}

impl DensityScale {
    /// The plotting coordinate of `x`.
    pub fn forward(self, x: f64) -> f64 {
        match self {
            DensityScale::Linear => x,
            DensityScale::SymLog { linear_width } => {
                x.signum() * (1.0 + x.abs() / linear_width).log10()
            }
        }
    }

    /// The value whose plotting coordinate is `u`.
    pub fn inverse(self, u: f64) -> f64 {
        match self {
            DensityScale::Linear => u,
            DensityScale::SymLog { linear_width } => {
                u.signum() * linear_width * (10f64.powf(u.abs()) - 1.0)
            }
        }
    }
}

/// How wide the Gaussian kernel is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "sigma")]
pub enum Broadening {
    /// `σ = (b - a)/m` in the plotting coordinate (see the module documentation).
    Auto,
    /// A fixed `σ` in the plotting coordinate.
    Width(f64),
}

/// Parameters of [`SlqResult::density`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityOptions {
    /// Grid points.
    pub points: usize,
    pub scale: DensityScale,
    pub broadening: Broadening,
    /// Grid range in eigenvalue units; default: the nodes' range padded by 3σ.
    pub range: Option<(f64, f64)>,
}

impl Default for DensityOptions {
    fn default() -> Self {
        DensityOptions {
            points: 512,
            scale: DensityScale::Linear,
            broadening: Broadening::Auto,
            range: None,
        }
    }
}

/// A spectral density on a grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpectralDensity {
    /// Grid in eigenvalue units.
    pub x: Vec<f64>,
    /// Grid in the plotting coordinate (uniformly spaced).
    pub u: Vec<f64>,
    /// Density per unit of `u` (integrates to about 1 over the grid).
    pub density: Vec<f64>,
    /// Kernel width in the plotting coordinate.
    pub sigma: f64,
    pub scale: DensityScale,
}

impl SpectralDensity {
    /// The density as a discrete measure on its grid (points in eigenvalue units,
    /// weights summing to 1), e.g. for Wasserstein distances.
    pub fn as_measure(&self) -> (Vec<f64>, Vec<f64>) {
        let total: f64 = self.density.iter().sum();
        let weights = self.density.iter().map(|d| d / total).collect();
        (self.x.clone(), weights)
    }
}

/// Runs SLQ: `options.probes × options.steps` products at most.
pub fn slq<S, A, P>(op: &A, space: &S, options: &SlqOptions, progress: &P) -> Result<SlqResult>
where
    S: VectorSpace,
    A: OperatorOn<S> + ?Sized,
    P: Progress + ?Sized,
{
    check_space(op, space)?;
    let n = op.dim();
    if options.probes == 0 {
        return Err(Error::arg("--probes", "must be at least 1"));
    }
    if options.steps == 0 {
        return Err(Error::arg("--iters", "must be at least 1"));
    }
    let steps = options.steps.min(n);
    progress.start((options.probes * steps) as u64, "slq");
    let batch = if options.batch == 0 {
        options.probes
    } else {
        options.batch
    };
    let mut result = SlqResult {
        dim: n,
        nodes: vec![Vec::new(); options.probes],
        weights: vec![Vec::new(); options.probes],
        probe_norms_squared: vec![0.0; options.probes],
        products: 0,
        steps,
    };
    let mut first = 0;
    while first < options.probes {
        let last = (first + batch).min(options.probes);
        run_batch(
            op,
            space,
            options,
            steps,
            first..last,
            &mut result,
            progress,
        )?;
        first = last;
    }
    Ok(result)
}

/// The Lanczos state of one probe.
struct ProbeState<S: VectorSpace> {
    probe: usize,
    cur: S::Vector,
    prev: S::Vector,
    basis: Option<S::Basis>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
}

fn run_batch<S, A, P>(
    op: &A,
    space: &S,
    options: &SlqOptions,
    steps: usize,
    probes: std::ops::Range<usize>,
    result: &mut SlqResult,
    progress: &P,
) -> Result<()>
where
    S: VectorSpace,
    A: OperatorOn<S> + ?Sized,
    P: Progress + ?Sized,
{
    let mut active: Vec<ProbeState<S>> = Vec::new();
    let mut outputs: Vec<S::Vector> = Vec::new();
    for probe in probes {
        let mut cur = space.random(
            options.distribution,
            options.seed,
            rng::stream_id(&[2, probe as u64]),
        )?;
        let norm2 = space.dot(&cur, &cur)?;
        result.probe_norms_squared[probe] = norm2;
        space.scale(1.0 / norm2.sqrt(), &mut cur)?;
        let basis = if options.reorthogonalize {
            let mut b = space.new_basis(steps, Precision::F64)?;
            space.basis_push(&mut b, &cur)?;
            Some(b)
        } else {
            None
        };
        active.push(ProbeState {
            probe,
            cur,
            prev: space.zeros()?,
            basis,
            alpha: Vec::new(),
            beta: Vec::new(),
        });
        outputs.push(space.zeros()?);
    }
    let mut norm_estimate: f64 = 0.0;
    for step in 0..steps {
        if active.is_empty() {
            break;
        }
        progress.check()?;
        let inputs: Vec<&S::Vector> = active.iter().map(|p| &p.cur).collect();
        op.apply_batch_in(space, &inputs, &mut outputs)?;
        result.products += active.len() as u64;
        progress.advance(active.len() as u64);
        let mut finished = Vec::new();
        for (index, (state, w)) in active.iter_mut().zip(outputs.iter_mut()).enumerate() {
            let alpha = match state.beta.last() {
                Some(&b) => space.axpy_dot(-b, &state.prev, w, &state.cur)?,
                None => space.dot(&state.cur, w)?,
            };
            let mut beta = space.axpy_norm(-alpha, &state.cur, w)?;
            if let Some(basis) = &state.basis {
                let slots: Vec<usize> = (0..space.basis_len(basis)).collect();
                beta = space.basis_orthogonalize(basis, &slots, w)?.1;
            }
            state.alpha.push(alpha);
            norm_estimate = norm_estimate.max((alpha * alpha + beta * beta).sqrt());
            if step + 1 == steps || beta <= 64.0 * f64::EPSILON * norm_estimate {
                finished.push(index);
                continue;
            }
            state.beta.push(beta);
            space.scale(1.0 / beta, w)?;
            if let Some(basis) = &mut state.basis {
                space.basis_push(basis, w)?;
            }
            std::mem::swap(&mut state.prev, &mut state.cur);
            std::mem::swap(&mut state.cur, w);
        }
        for &index in finished.iter().rev() {
            let state = active.remove(index);
            outputs.remove(index);
            let eig = tridiagonal_eigen(&state.alpha, &state.beta)?;
            result.weights[state.probe] =
                (0..eig.order).map(|i| eig.vector(i)[0].powi(2)).collect();
            result.nodes[state.probe] = eig.values;
        }
    }
    Ok(())
}

impl SlqResult {
    /// All probes' nodes and weights as one discrete measure (weights sum to 1).
    pub fn measure(&self) -> (Vec<f64>, Vec<f64>) {
        let probes = self.nodes.len() as f64;
        let nodes = self.nodes.iter().flatten().copied().collect();
        let weights = self.weights.iter().flatten().map(|w| w / probes).collect();
        (nodes, weights)
    }

    /// The estimate of `tr f(A) = Σ_j f(λ_j)`: the mean over probes of
    /// `‖z‖² Σ_i τ_i f(θ_i)` (Ubaru, Chen & Saad 2017).
    pub fn trace_of(&self, f: impl Fn(f64) -> f64) -> f64 {
        let per_probe = self.per_probe_traces(f);
        per_probe.iter().sum::<f64>() / per_probe.len() as f64
    }

    /// The standard error of [`Self::trace_of`] from the spread of the probes'
    /// own estimates (`s/√probes`); `None` with a single probe, which gives no
    /// spread. It measures the random-probe error, not the quadrature's (which is
    /// exact for polynomials of degree below `2 · steps`).
    pub fn trace_standard_error(&self, f: impl Fn(f64) -> f64) -> Option<f64> {
        let per_probe = self.per_probe_traces(f);
        let m = per_probe.len();
        if m < 2 {
            return None;
        }
        let mean = per_probe.iter().sum::<f64>() / m as f64;
        let variance = per_probe.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (m - 1) as f64;
        Some((variance / m as f64).sqrt())
    }

    /// `‖z‖² Σ_i τ_i f(θ_i)` of each probe.
    fn per_probe_traces(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        self.nodes
            .iter()
            .zip(&self.weights)
            .zip(&self.probe_norms_squared)
            .map(|((nodes, weights), norm2)| {
                norm2
                    * nodes
                        .iter()
                        .zip(weights)
                        .map(|(t, w)| w * f(*t))
                        .sum::<f64>()
            })
            .collect()
    }

    /// Smallest and largest node over all probes.
    pub fn node_range(&self) -> (f64, f64) {
        self.nodes
            .iter()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| {
                (lo.min(t), hi.max(t))
            })
    }

    /// The Gaussian-broadened density on a grid (see the module documentation for
    /// the width rule).
    pub fn density(&self, options: &DensityOptions) -> Result<SpectralDensity> {
        if options.points < 2 {
            return Err(Error::arg("--points", "must be at least 2"));
        }
        let scale = options.scale;
        if let DensityScale::SymLog { linear_width } = scale
            && !(linear_width > 0.0 && linear_width.is_finite())
        {
            return Err(Error::arg("--linear-width", "must be positive"));
        }
        let (lo, hi) = self.node_range();
        if !lo.is_finite() {
            return Err(Error::Numerical("no quadrature nodes".into()));
        }
        let (ulo, uhi) = (scale.forward(lo), scale.forward(hi));
        let span = (uhi - ulo).max(f64::EPSILON * ulo.abs().max(uhi.abs()).max(1.0));
        let sigma = match options.broadening {
            Broadening::Auto => span / self.steps as f64,
            Broadening::Width(s) if s > 0.0 && s.is_finite() => s,
            Broadening::Width(_) => return Err(Error::arg("--width", "must be positive")),
        };
        let (glo, ghi) = match options.range {
            Some((a, b)) if a < b => (scale.forward(a), scale.forward(b)),
            Some(_) => {
                return Err(Error::arg(
                    "--range",
                    "lower end must lie below the upper end",
                ));
            }
            None => (ulo - 3.0 * sigma, uhi + 3.0 * sigma),
        };
        let step = (ghi - glo) / (options.points - 1) as f64;
        let u: Vec<f64> = (0..options.points).map(|i| glo + step * i as f64).collect();
        let (nodes, weights) = self.measure();
        let transformed: Vec<f64> = nodes.iter().map(|&t| scale.forward(t)).collect();
        let norm = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
        let density = u
            .iter()
            .map(|&ui| {
                transformed
                    .iter()
                    .zip(&weights)
                    .map(|(t, w)| {
                        let z = (ui - t) / sigma;
                        if z.abs() > 12.0 {
                            0.0
                        } else {
                            w * norm * (-0.5 * z * z).exp()
                        }
                    })
                    .sum()
            })
            .collect();
        Ok(SpectralDensity {
            x: u.iter().map(|&v| scale.inverse(v)).collect(),
            u,
            density,
            sigma,
            scale,
        })
    }
}

/// The Wasserstein-1 distance `∫ |F(t) - G(t)| dt` between two discrete measures on
/// the real line, given as points and non-negative weights (each normalized to
/// total mass 1 here). `O((p + q) log(p + q))`.
pub fn wasserstein1(a: (&[f64], &[f64]), b: (&[f64], &[f64])) -> f64 {
    let total_a: f64 = a.1.iter().sum();
    let total_b: f64 = b.1.iter().sum();
    let mut events: Vec<(f64, f64)> =
        a.0.iter()
            .zip(a.1)
            .map(|(&x, &w)| (x, w / total_a))
            .chain(b.0.iter().zip(b.1).map(|(&x, &w)| (x, -w / total_b)))
            .collect();
    events.sort_by(|p, q| p.0.total_cmp(&q.0));
    let mut distance = 0.0;
    let mut difference = 0.0;
    for pair in events.windows(2) {
        difference += pair[0].1;
        distance += difference.abs() * (pair[1].0 - pair[0].0);
    }
    distance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_of_shifted_point_masses_is_the_shift() {
        let d = wasserstein1((&[0.0, 1.0], &[0.5, 0.5]), (&[0.25, 1.25], &[1.0, 1.0]));
        assert!((d - 0.25).abs() < 1e-15);
    }

    #[test]
    fn trace_standard_error_is_the_spread_of_the_probes() {
        // Probe traces 4·(0.5·1 + 0.5·3) = 8 and 4·(1·3) = 12: mean 10,
        // sample standard deviation 2√2, standard error 2.
        let result = SlqResult {
            dim: 4,
            nodes: vec![vec![1.0, 3.0], vec![3.0]],
            weights: vec![vec![0.5, 0.5], vec![1.0]],
            probe_norms_squared: vec![4.0, 4.0],
            products: 3,
            steps: 2,
        };
        assert_eq!(result.trace_of(|x| x), 10.0);
        let se = result.trace_standard_error(|x| x).unwrap();
        assert!((se - 2.0).abs() < 1e-15, "{se}");
        let single = SlqResult {
            nodes: vec![vec![1.0]],
            weights: vec![vec![1.0]],
            probe_norms_squared: vec![4.0],
            ..result
        };
        assert_eq!(single.trace_standard_error(|x| x), None);
    }

    #[test]
    fn symlog_coordinate_round_trips() {
        let s = DensityScale::SymLog { linear_width: 1e-3 };
        for x in [-5e3, -1e-4, 0.0, 2e-2, 7.0] {
            assert!((s.inverse(s.forward(x)) - x).abs() <= 1e-12 * x.abs().max(1e-3));
        }
    }
}

#[cfg(test)]
mod wishart_tests {
    use super::*;
    use crate::progress::Silent;
    use crate::spectral::dense::DenseSymmetric;
    use crate::spectral::host::HostSpace;
    use crate::spectral::vector::random_values;
    use crate::testing::TestResult;
    use faer::Mat;

    /// The Marchenko–Pastur law of `XᵀX/N` for `X` with iid unit-variance entries
    /// and aspect ratio `c = n/N ≤ 1`, discretized on `points` midpoints of its
    /// support (weights ∝ density, summing to 1).
    fn marchenko_pastur(c: f64, points: usize) -> (Vec<f64>, Vec<f64>, (f64, f64)) {
        let (a, b) = ((1.0 - c.sqrt()).powi(2), (1.0 + c.sqrt()).powi(2));
        let h = (b - a) / points as f64;
        let xs: Vec<f64> = (0..points).map(|i| a + h * (i as f64 + 0.5)).collect();
        let ws = xs
            .iter()
            .map(|x| ((b - x) * (x - a)).sqrt() / (2.0 * std::f64::consts::PI * c * x) * h)
            .collect();
        (xs, ws, (a, b))
    }

    #[test]
    fn slq_matches_marchenko_pastur_on_a_wishart_matrix() -> TestResult {
        let (n, samples) = (2000, 4000);
        let x = random_values(samples * n, Distribution::Gaussian, 21, 0);
        let x = Mat::from_fn(samples, n, |i, j| x[i * n + j]);
        let w = (x.transpose() * &x) * faer::Scale(1.0 / samples as f64);
        let a = DenseSymmetric::new(w, "wishart", 1e-10)?;
        let options = SlqOptions {
            probes: 10,
            steps: 80,
            ..SlqOptions::default()
        };
        let result = slq(&a, &HostSpace::new(n), &options, &Silent)?;
        assert_eq!(result.products, 800);
        let density = result.density(&DensityOptions::default())?;

        let (mp_x, mp_w, (lo, hi)) = marchenko_pastur(n as f64 / samples as f64, 20_000);
        let width = hi - lo;
        let (dx, dw) = density.as_measure();
        let (nodes, weights) = result.measure();
        let to_law = wasserstein1((&dx, &dw), (&mp_x, &mp_w)) / width;
        let nodes_to_law = wasserstein1((&nodes, &weights), (&mp_x, &mp_w)) / width;
        let exact = a.eigenvalues()?;
        let uniform = vec![1.0; n];
        let to_exact = wasserstein1((&dx, &dw), (&exact, &uniform)) / width;
        println!(
            "W1/width: density vs MP {to_law:.4}, nodes vs MP {nodes_to_law:.4}, density vs exact eigenvalues {to_exact:.4}; sigma {:.4}",
            density.sigma
        );
        assert!(to_law < 0.05 && nodes_to_law < 0.05 && to_exact < 0.05);
        // The trace of A is estimated well too (unbiased quadrature of f(x) = x).
        let trace: f64 = exact.iter().sum();
        assert!((result.trace_of(|t| t) - trace).abs() < 0.02 * trace);
        Ok(())
    }
}
