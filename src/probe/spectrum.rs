//! The spectral part of a probe: Lanczos, power iteration, stochastic Lanczos
//! quadrature and Hutch++ on any symmetric operator, with convergence histories.
//!
//! This module sees only an operator on a vector space (in practice a
//! [`super::HessianOperator`] on its backend's space, see
//! [`super::SpectralBackend`]): it picks the algorithms' settings from the
//! operator's dimension and the user's budget and collects what they return into
//! serializable reports. Only Ritz vectors asked for cross to the host.

use serde::{Deserialize, Serialize};

use super::history::{HistoryPoint, HistorySpace, Recorder};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng;
use crate::spectral::{
    Broadening, DensityOptions, DensityScale, Distribution, LanczosOptions, LanczosVerdict,
    OperatorOn, PowerOptions, Reorthogonalization, SlqOptions, SlqResult, SpectralDensity,
    TraceEstimate, Which, hutch_plus_plus, lanczos, power_iteration, slq,
};

/// Bytes a fully reorthogonalized Lanczos basis (or an SLQ probe's basis) may take
/// before the memory-bounded mode is used instead.
const FULL_BASIS_BUDGET_BYTES: usize = 2 << 30;

/// Which estimates a probe computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Extreme eigenpairs by Lanczos.
    Lanczos,
    /// The top eigenpair(s) by power iteration (largest magnitude), as the paper did.
    Power,
    /// The spectral density by stochastic Lanczos quadrature.
    Slq,
    /// The trace by Hutch++.
    Trace,
    /// All four.
    All,
}

impl Method {
    fn runs(self, part: Method) -> bool {
        self == Method::All || self == part
    }
}

/// Settings of a probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeOptions {
    pub method: Method,
    /// Eigenpairs wanted at each requested end (Lanczos), or in all (power).
    pub k: usize,
    pub which: Which,
    /// Product budget of Lanczos and of power iteration; Lanczos steps per SLQ probe.
    pub iters: usize,
    /// Relative residual tolerance `‖H y − θ y‖ ≤ tol |θ|` (Lanczos, power).
    pub tol: f64,
    /// Seed of every random vector (start vectors, SLQ and trace probes).
    pub seed: u64,
    /// SLQ probe vectors.
    pub probes: usize,
    /// Hutch++ products.
    pub trace_products: usize,
    /// Grid points of the density.
    pub density_points: usize,
    /// Keep the Lanczos eigenvectors (to save them).
    pub eigenvectors: bool,
    /// Lanczos reorthogonalization; `None` picks full when the basis fits in 2 GiB,
    /// the memory-bounded partial mode otherwise.
    pub reorthogonalization: Option<Reorthogonalization>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            method: Method::All,
            k: 5,
            which: Which::Both,
            iters: 100,
            tol: 1e-8,
            seed: 0,
            probes: 4,
            trace_products: 60,
            density_points: 400,
            eigenvectors: false,
            reorthogonalization: None,
        }
    }
}

impl ProbeOptions {
    /// Checks the settings that need no operator.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::arg("--k", "must be at least 1"));
        }
        if self.iters == 0 {
            return Err(Error::arg("--iters", "must be at least 1"));
        }
        if !(self.tol > 0.0 && self.tol < 1.0) {
            return Err(Error::arg(
                "--tol",
                format!("must lie in (0, 1), got {}", self.tol),
            ));
        }
        if self.method.runs(Method::Slq) && self.probes == 0 {
            return Err(Error::arg("--probes", "must be at least 1"));
        }
        if self.method.runs(Method::Trace) && self.trace_products < 4 {
            return Err(Error::arg(
                "--trace-products",
                "Hutch++ needs at least 4 products",
            ));
        }
        if self.method.runs(Method::Slq) && self.density_points < 2 {
            return Err(Error::arg("--density-points", "must be at least 2"));
        }
        Ok(())
    }
}

/// One eigenvalue estimate with its computed residual and the two verdicts on it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RitzPair {
    pub value: f64,
    /// `‖H y − θ y‖` for the unit Ritz vector `y`.
    pub residual: f64,
    /// The residual is within the tolerance: `value` is an eigenvalue to that
    /// accuracy.
    pub residual_converged: bool,
    /// `residual_converged` and, where the run checked multiplicities (Lanczos in a
    /// probe), that the check concluded: the value is the eigenvalue of its rank
    /// counting multiplicity. Where nothing checks multiplicities (power
    /// iteration, a sweep cell's λmax) it equals `residual_converged`.
    pub converged: bool,
}

impl RitzPair {
    /// `residual / |value|`.
    pub fn relative_residual(&self) -> f64 {
        self.residual / self.value.abs()
    }
}

/// What Lanczos found.
#[derive(Clone, Debug, Serialize)]
pub struct LanczosReport {
    /// The largest eigenvalues, descending (empty for `which = smallest`).
    pub top: Vec<RitzPair>,
    /// The smallest eigenvalues, ascending (empty for `which = largest`).
    pub bottom: Vec<RitzPair>,
    pub products: u64,
    pub verification_products: u64,
    pub multiplicity_probe_products: u64,
    pub reorthogonalization: Reorthogonalization,
    pub orthogonality_loss: Option<f64>,
    /// The smallest residual the products' precision supports (`256 ε ‖H‖`).
    pub residual_floor: f64,
    /// Whether `--tol` asked for less than that for a reported pair, which was then
    /// judged against the floor instead.
    pub tolerance_clipped: bool,
    /// What the run established: residuals per pair, multiplicities per run, and
    /// the budget the multiplicity check would need when it was cut short.
    pub verdict: LanczosVerdict,
    /// Extreme Ritz values after each product.
    #[serde(skip)]
    pub history: Vec<HistoryPoint>,
    /// Why `history` holds no Ritz values when the vectors stayed on a device: the
    /// convergence table then has Rayleigh quotients only.
    #[serde(skip)]
    pub history_note: Option<String>,
    /// Unit eigenvectors of `top` (or of `bottom` for `which = smallest`), in the
    /// same order, when requested.
    #[serde(skip)]
    pub vectors: Option<Vec<Vec<f64>>>,
}

/// What power iteration found (eigenvalues of largest magnitude, in the order found).
#[derive(Clone, Debug, Serialize)]
pub struct PowerReport {
    pub pairs: Vec<RitzPair>,
    pub products_per_eigenpair: Vec<u64>,
    pub products: u64,
    /// The iterate's Rayleigh quotient after each product.
    #[serde(skip)]
    pub history: Vec<HistoryPoint>,
}

/// The spectral density by SLQ.
#[derive(Clone, Debug, Serialize)]
pub struct DensityReport {
    pub probes: usize,
    pub steps: usize,
    pub products: u64,
    /// `tr H` estimated from the quadrature (`Σ` over nodes), for comparison with
    /// Hutch++.
    pub trace_estimate: f64,
    /// Width of the symmetric-log axis's linear part.
    pub linear_width: f64,
    #[serde(skip)]
    pub density: SpectralDensity,
    #[serde(skip)]
    pub quadrature: SlqResult,
}

/// The trace by Hutch++.
#[derive(Clone, Debug, Serialize)]
pub struct TraceReport {
    #[serde(flatten)]
    pub estimate: TraceEstimate,
    /// The 95% interval (Student's t).
    pub interval95: (f64, f64),
}

/// Everything a probe computed about the operator's spectrum.
#[derive(Clone, Debug, Serialize)]
pub struct SpectrumReport {
    pub dim: usize,
    pub lanczos: Option<LanczosReport>,
    pub power: Option<PowerReport>,
    pub density: Option<DensityReport>,
    pub trace: Option<TraceReport>,
}

impl SpectrumReport {
    /// The largest eigenvalue found by Lanczos; without Lanczos, power iteration's
    /// first eigenvalue (the largest in magnitude, which is the largest only when
    /// it is positive).
    pub fn lambda_max(&self) -> Option<RitzPair> {
        self.lanczos
            .as_ref()
            .and_then(|l| l.top.first().copied())
            .or_else(|| self.power.as_ref().and_then(|p| p.pairs.first().copied()))
    }

    /// The smallest eigenvalue found by Lanczos.
    pub fn lambda_min(&self) -> Option<RitzPair> {
        self.lanczos
            .as_ref()
            .and_then(|l| l.bottom.first().copied())
    }
}

/// Runs the estimates `options.method` asks for on `op`, with vectors in `space`
/// (a [`crate::spectral::HostSpace`] on the CPU).
pub fn probe_spectrum<S: HistorySpace, A: OperatorOn<S>>(
    op: &A,
    space: &S,
    options: &ProbeOptions,
    progress: &dyn Progress,
) -> Result<SpectrumReport> {
    options.validate()?;
    let dim = op.dim();
    let seed_of = |part: u64| rng::stream_id(&[options.seed, part]);
    let lanczos = if options.method.runs(Method::Lanczos) {
        Some(run_lanczos(op, space, options, seed_of(1), progress)?)
    } else {
        None
    };
    let power = if options.method.runs(Method::Power) {
        // Beside Lanczos, power iteration is a cost comparison for the top pair.
        let k = if options.method == Method::All {
            1
        } else {
            options.k
        };
        let recorder = Recorder::rayleigh_only(op);
        let power_options = PowerOptions {
            k: k.min(dim),
            tol: options.tol,
            max_products: options.iters,
            vectors: false,
            seed: seed_of(2),
        };
        let result = power_iteration(&recorder, space, &power_options, progress)?;
        Some(PowerReport {
            pairs: pairs(
                &result.eigenvalues,
                &result.residuals,
                &result.converged,
                &result.converged,
            ),
            products_per_eigenpair: result.products_per_eigenpair,
            products: result.products,
            history: recorder.into_points(),
        })
    } else {
        None
    };
    let density = if options.method.runs(Method::Slq) {
        Some(run_slq(op, space, options, seed_of(3), progress)?)
    } else {
        None
    };
    let trace = if options.method.runs(Method::Trace) {
        let estimate = hutch_plus_plus(
            op,
            space,
            options.trace_products,
            Distribution::Rademacher,
            seed_of(4),
            progress,
        )?;
        Some(TraceReport {
            interval95: estimate.interval(0.95),
            estimate,
        })
    } else {
        None
    };
    Ok(SpectrumReport {
        dim,
        lanczos,
        power,
        density,
        trace,
    })
}

fn run_lanczos<S: HistorySpace, A: OperatorOn<S>>(
    op: &A,
    space: &S,
    options: &ProbeOptions,
    seed: u64,
    progress: &dyn Progress,
) -> Result<LanczosReport> {
    let dim = op.dim();
    let ends = if options.which == Which::Both { 2 } else { 1 };
    let reorthogonalization = options.reorthogonalization.unwrap_or_else(|| {
        let basis = dim.saturating_mul(options.iters + 1 + ends * options.k) * 8;
        if basis <= FULL_BASIS_BUDGET_BYTES {
            Reorthogonalization::Full
        } else {
            Reorthogonalization::Partial
        }
    });
    let lanczos_options = LanczosOptions {
        k: options.k,
        which: options.which,
        tol: options.tol,
        max_products: options.iters,
        reorthogonalization,
        ritz_vectors: options.eigenvectors,
        seed,
        ..LanczosOptions::default()
    };
    let recorder = Recorder::new(op, dim, options.iters);
    let result = lanczos(&recorder, space, &lanczos_options, progress)?;
    let history_note = recorder.off_host().then(|| {
        "Ritz history not recorded: the Lanczos vectors stayed on the device \
         (the convergence table has Rayleigh quotients only)"
            .to_string()
    });
    let all = pairs(
        &result.eigenvalues,
        &result.residuals,
        &result.residual_converged,
        &result.converged,
    );
    let (top, bottom) = match options.which {
        Which::Largest => (all, Vec::new()),
        Which::Smallest => (Vec::new(), all),
        Which::Both => {
            // Descending: the largest first, then the smallest (largest of them first).
            let split = all.len().min(options.k);
            let mut bottom = all[split..].to_vec();
            bottom.reverse();
            (all[..split].to_vec(), bottom)
        }
    };
    let verdict = LanczosVerdict::of(&result);
    let kept = if options.which == Which::Smallest {
        bottom.len()
    } else {
        top.len()
    };
    let vectors = result
        .vectors
        .map(|v| {
            v.iter()
                .take(kept)
                .map(|x| space.download(x))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(LanczosReport {
        top,
        bottom,
        products: result.products,
        verification_products: result.verification_products,
        multiplicity_probe_products: result.probe_products,
        reorthogonalization,
        orthogonality_loss: result.orthogonality_loss,
        residual_floor: result.residual_floor,
        tolerance_clipped: result.tolerance_clipped,
        verdict,
        history: recorder.into_points(),
        history_note,
        vectors,
    })
}

fn run_slq<S: HistorySpace, A: OperatorOn<S>>(
    op: &A,
    space: &S,
    options: &ProbeOptions,
    seed: u64,
    progress: &dyn Progress,
) -> Result<DensityReport> {
    let dim = op.dim();
    let steps = options.iters.min(dim);
    let slq_options = SlqOptions {
        probes: options.probes,
        steps,
        distribution: Distribution::Rademacher,
        reorthogonalize: dim.saturating_mul(steps) * 8 <= FULL_BASIS_BUDGET_BYTES,
        batch: 1,
        seed,
    };
    let quadrature = slq(op, space, &slq_options, progress)?;
    let (lo, hi) = quadrature.node_range();
    let linear_width = symlog_width(lo, hi);
    let density = quadrature.density(&DensityOptions {
        points: options.density_points,
        scale: DensityScale::SymLog { linear_width },
        broadening: Broadening::Auto,
        range: None,
    })?;
    Ok(DensityReport {
        probes: options.probes,
        steps,
        products: quadrature.products,
        trace_estimate: quadrature.trace_of(|x| x),
        linear_width,
        density,
        quadrature,
    })
}

/// The linear part of a symmetric-log axis for a spectrum spanning `[lo, hi]`:
/// 1% of the largest magnitude, so the bulk near zero spreads over the two
/// decades below the extremes (1 for an all-zero spectrum).
pub fn symlog_width(lo: f64, hi: f64) -> f64 {
    let scale = lo.abs().max(hi.abs());
    if scale > 0.0 && scale.is_finite() {
        1e-2 * scale
    } else {
        1.0
    }
}

fn pairs(
    values: &[f64],
    residuals: &[f64],
    residual_converged: &[bool],
    converged: &[bool],
) -> Vec<RitzPair> {
    values
        .iter()
        .zip(residuals)
        .zip(residual_converged.iter().zip(converged))
        .map(
            |((&value, &residual), (&residual_converged, &converged))| RitzPair {
                value,
                residual,
                residual_converged,
                converged,
            },
        )
        .collect()
}
