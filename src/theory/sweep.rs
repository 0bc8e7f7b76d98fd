//! Sweeps over (n, d, r, sigma) x p x trials, run in parallel with rayon.
//!
//! X and w* are fixed per configuration (drawn from the seed, n, d and the
//! distribution); every trial draws its own mask and noise from its own stream,
//! identified by (configuration, p, trial). The work of one trial is sequential, so
//! results are bit-identical whatever the number of threads.

use std::path::PathBuf;
use std::str::FromStr;

use rand::Rng as _;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::concentration::{concentration_bound, concentration_error};
use super::data::{Design, EntryLaw, stream_tag};
use super::mask::{CoordinateMask, MaskKind};
use super::problem::MaskedRegression;
use super::solution::{self, Distance};
use super::spectrum::{self, Eigen};
use super::stability::{self, StabilityOptions, ThresholdBracket};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng;
use crate::stats::{Summary, log_grid};

/// Which analyses a sweep runs. The spectrum is always computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// Masked spectra, concentration and the trace identity.
    Eigen,
    /// Spectra plus the measured divergence threshold and GD loss curves.
    Lr,
    /// Spectra plus the minimum-norm solution's distance.
    Distance,
    /// Everything.
    All,
}

impl Part {
    /// Whether the learning-rate analysis runs.
    pub fn has_lr(self) -> bool {
        matches!(self, Part::Lr | Part::All)
    }

    /// Whether the solution-distance analysis runs.
    pub fn has_distance(self) -> bool {
        matches!(self, Part::Distance | Part::All)
    }
}

/// The keep ratios p of a sweep: a list, or a log-spaced grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ratios {
    List(Vec<f64>),
    LogGrid { from: f64, to: f64, points: usize },
}

impl Ratios {
    /// The ratios in sweep order, each checked to lie in (0, 1].
    pub fn values(&self) -> Result<Vec<f64>> {
        let values = match *self {
            Ratios::List(ref list) => list.clone(),
            Ratios::LogGrid { from, to, points } => {
                check_ratio("--ratios", from)?;
                check_ratio("--ratios", to)?;
                if points == 0 {
                    return Err(Error::arg("--ratios", "a grid needs at least one point"));
                }
                log_grid(from, to, points)
            }
        };
        if values.is_empty() {
            return Err(Error::arg("--ratios", "no ratio given"));
        }
        for &p in &values {
            check_ratio("--ratios", p)?;
        }
        Ok(values)
    }
}

/// Parses `1,0.5,0.1` (a list) or `log:FROM:TO:POINTS` (a log-spaced grid).
impl FromStr for Ratios {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let number = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| Error::arg("--ratios", format!("`{}` is not a number", s.trim())))
        };
        let ratios = if let Some(grid) = text.strip_prefix("log:") {
            let parts: Vec<&str> = grid.split(':').collect();
            let [from, to, points] = parts[..] else {
                return Err(Error::arg(
                    "--ratios",
                    format!("`{text}`: a grid is written log:FROM:TO:POINTS"),
                ));
            };
            let points = points.trim().parse::<usize>().map_err(|_| {
                Error::arg("--ratios", format!("`{points}` is not a number of points"))
            })?;
            Ratios::LogGrid {
                from: number(from)?,
                to: number(to)?,
                points,
            }
        } else {
            Ratios::List(text.split(',').map(number).collect::<Result<_>>()?)
        };
        ratios.values()?;
        Ok(ratios)
    }
}

fn check_ratio(flag: &str, p: f64) -> Result<()> {
    if p > 0.0 && p <= 1.0 {
        Ok(())
    } else {
        Err(Error::arg(flag, format!("{p} is outside (0, 1]")))
    }
}

/// Everything a sweep needs; every field has a default (the project's reference
/// simulation, a setting chosen here: the paper publishes no numbers for its theory
/// section), so experiment specs list only what they change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepSpec {
    pub part: Part,
    /// Sample counts; empty means 50 (or the rows of `x`).
    pub n: Vec<usize>,
    /// Feature counts; empty means 5000 (or the columns of `x`).
    pub d: Vec<usize>,
    /// Entry ranges of U[0, r] data; empty means 1. Only for uniform data.
    pub r: Vec<f64>,
    /// Noise levels of y = X w* + sigma eps.
    pub sigma: Vec<f64>,
    pub ratios: Ratios,
    /// Masks (and noise draws) per ratio.
    pub trials: usize,
    pub seed: u64,
    pub dist: EntryLaw,
    /// A data matrix file (.npy or .csv) to use instead of drawing X.
    pub x: Option<PathBuf>,
    pub mask: MaskKind,
    /// The failure probability of the concentration bound.
    pub delta: f64,
    /// Ratios whose GD loss curves are recorded (learning-rate part).
    pub curve_ratios: Vec<f64>,
    /// Steps of each GD loss curve.
    pub curve_steps: usize,
    /// Multiples of 2n/lambda_1 at which the loss curves are run.
    pub curve_factors: Vec<f64>,
    pub stability: StabilityOptions,
}

impl Default for SweepSpec {
    fn default() -> Self {
        SweepSpec {
            part: Part::All,
            n: Vec::new(),
            d: Vec::new(),
            r: Vec::new(),
            sigma: vec![0.5],
            ratios: Ratios::List(vec![1.0, 0.5, 0.1, 0.05, 0.01]),
            trials: 20,
            seed: 0,
            dist: EntryLaw::Uniform,
            x: None,
            mask: MaskKind::Bernoulli,
            delta: 0.05,
            curve_ratios: vec![1.0, 0.1, 0.01],
            curve_steps: 60,
            curve_factors: vec![0.9, 1.1],
            stability: StabilityOptions::default(),
        }
    }
}

const DEFAULT_N: usize = 50;
const DEFAULT_D: usize = 5000;
const DEFAULT_R: f64 = 1.0;

/// One (n, d, r, sigma) configuration of a sweep, with its fixed data.
#[derive(Clone, Debug)]
pub struct ConfigResult {
    pub n: usize,
    pub d: usize,
    /// The entry bound r: of U[0, r], or max |x_ij| for other data.
    pub r: f64,
    pub sigma: f64,
    /// The nonzero-candidate spectrum lambda_i(X^T X), i = 1..n, largest first (from
    /// the n x n matrix X X^T).
    pub full_spectrum: Vec<f64>,
    /// ||X||_F^2.
    pub frobenius_sq: f64,
    /// The concentration bound sqrt(8 n r^2 lambda_1(X^T X) log(2n/delta)).
    pub bound: f64,
    /// One cell per ratio, in sweep order.
    pub cells: Vec<Cell>,
    /// GD loss curves (learning-rate part only).
    pub curves: Vec<LossCurve>,
}

impl ConfigResult {
    /// A short label such as `n=50, d=5000, r=1, σ=0.5`.
    pub fn label(&self) -> String {
        format!(
            "n={}, d={}, r={}, σ={}",
            self.n,
            self.d,
            crate::report::table::format_float(self.r),
            crate::report::table::format_float(self.sigma)
        )
    }

    /// Whether p d lies within a factor 2 of n, where the minimum-norm solution's
    /// distance peaks (the model just barely interpolates).
    pub fn near_interpolation(&self, p: f64) -> bool {
        let ratio = p * self.d as f64 / self.n as f64;
        (0.5..=2.0).contains(&ratio)
    }
}

/// The trials of one ratio.
#[derive(Clone, Debug)]
pub struct Cell {
    pub p: f64,
    /// E[k]/d: p for Bernoulli masks, k/d for exact-count masks.
    pub keep_fraction: f64,
    pub trials: Vec<TrialRecord>,
}

/// What one trial (one mask and one noise draw) measured.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialRecord {
    pub trial: usize,
    /// The number of kept coordinates k.
    pub kept: usize,
    /// lambda_i(X M X^T), i = 1..n, largest first.
    pub eigenvalues: Vec<f64>,
    /// trace(X M X^T) = trace(M X^T X M).
    pub trace: f64,
    /// max_i |lambda_i - keep_fraction lambda_i(X^T X)|.
    pub concentration_error: f64,
    /// The theoretical largest stable learning rate 2n / lambda_1.
    pub lr_theory: f64,
    /// The measured divergence threshold (learning-rate part; `None` when not run
    /// or when GD cannot diverge).
    pub threshold: Option<ThresholdBracket>,
    /// The minimum-norm solution's distance (distance part).
    pub distance: Option<Distance>,
}

impl Cell {
    /// The summary over trials of `f` (NaN and infinite values are left out).
    pub fn summary(&self, f: impl Fn(&TrialRecord) -> f64) -> Summary {
        Summary::of(self.trials.iter().map(f))
    }

    /// The index-wise mean of the sorted spectra over trials.
    pub fn mean_spectrum(&self) -> Vec<f64> {
        let len = self.trials.first().map_or(0, |t| t.eigenvalues.len());
        (0..len)
            .map(|i| self.summary(|t| t.eigenvalues[i]).mean)
            .collect()
    }

    /// The measured-over-theory threshold ratios of the trials that have one.
    pub fn threshold_ratios(&self) -> Vec<f64> {
        self.trials
            .iter()
            .filter_map(|t| t.threshold.map(|b| b.estimate() / t.lr_theory))
            .collect()
    }
}

impl TrialRecord {
    /// Whether both ends of the measured bracket lie within `tolerance` (relative) of
    /// 2n/lambda_1; `None` when no threshold was measured.
    pub fn threshold_within(&self, tolerance: f64) -> Option<bool> {
        let close = |eta: f64| (eta / self.lr_theory - 1.0).abs() <= tolerance;
        self.threshold.map(|b| close(b.stable) && close(b.diverged))
    }
}

/// The loss of GD on the weights, L(w_t) for t = 0..: one curve.
#[derive(Clone, Debug, PartialEq)]
pub struct LossCurve {
    pub p: f64,
    /// eta as a multiple of the trial's 2n/lambda_1.
    pub factor: f64,
    pub eta: f64,
    pub losses: Vec<f64>,
}

/// The outcome of a sweep.
#[derive(Clone, Debug)]
pub struct SweepResult {
    pub spec: SweepSpec,
    /// The ratios, in sweep order.
    pub ratios: Vec<f64>,
    pub configs: Vec<ConfigResult>,
}

impl SweepSpec {
    /// Checks every field, naming the flag of the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.ratios.values()?;
        for &p in &self.curve_ratios {
            check_ratio("--curve-ratios", p)?;
        }
        if self.trials == 0 {
            return Err(Error::arg("--trials", "must be at least 1"));
        }
        if self.n.contains(&0) {
            return Err(Error::arg("--n", "must be at least 1"));
        }
        if self.d.contains(&0) {
            return Err(Error::arg("--d", "must be at least 1"));
        }
        if let Some(r) = self.r.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(Error::arg(
                "--r",
                format!("{r} is not a finite positive number"),
            ));
        }
        if !self.r.is_empty() && (self.dist != EntryLaw::Uniform || self.x.is_some()) {
            return Err(Error::arg(
                "--r",
                "only uniform data is drawn in [0, r]; for other data r is max |x_ij|",
            ));
        }
        if self.sigma.is_empty() {
            return Err(Error::arg("--sigma", "no noise level given"));
        }
        if let Some(s) = self.sigma.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::arg(
                "--sigma",
                format!("{s} is not a finite number >= 0"),
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(Error::arg(
                "--delta",
                format!("{} is outside (0, 1)", self.delta),
            ));
        }
        if let Some(f) = self
            .curve_factors
            .iter()
            .find(|f| !(f.is_finite() && **f > 0.0))
        {
            return Err(Error::arg(
                "--curve-factors",
                format!("{f} is not positive"),
            ));
        }
        let s = &self.stability;
        let usable = |x: f64, above: f64| x.is_finite() && x > above;
        if s.steps == 0 || !usable(s.blowup, 1.0) || !usable(s.tolerance, 0.0) {
            return Err(Error::arg(
                "stability",
                "needs steps >= 1, blowup > 1 and tolerance > 0",
            ));
        }
        Ok(())
    }

    /// The datasets of the sweep: drawn for each (n, d, r), or the loaded matrix.
    fn datasets(&self) -> Result<Vec<Design>> {
        if let Some(path) = &self.x {
            let data = Design::load(path, self.seed)?;
            for (flag, given, found, what) in [
                ("--n", &self.n, data.n(), "rows"),
                ("--d", &self.d, data.d(), "columns"),
            ] {
                if given.iter().any(|&v| v != found) {
                    return Err(Error::arg(
                        flag,
                        format!("{} has {found} {what}; leave {flag} out", path.display()),
                    ));
                }
            }
            return Ok(vec![data]);
        }
        let or_default = |list: &Vec<usize>, default| {
            if list.is_empty() {
                vec![default]
            } else {
                list.clone()
            }
        };
        let rs = if self.r.is_empty() {
            vec![DEFAULT_R]
        } else {
            self.r.clone()
        };
        let mut datasets = Vec::new();
        for n in or_default(&self.n, DEFAULT_N) {
            for d in or_default(&self.d, DEFAULT_D) {
                for &r in &rs {
                    datasets.push(Design::generate(self.dist, n, d, r, self.seed));
                }
            }
        }
        Ok(datasets)
    }

    /// The stream of trial `trial` at ratio `p` for data of size n x d: shared by
    /// every r and sigma, so sweeps over those compare the same masks and noise.
    fn trial_stream(&self, n: usize, d: usize, p: f64, trial: usize) -> rng::Rng {
        let source = if self.x.is_some() {
            2
        } else {
            self.dist.code()
        };
        rng::stream(
            self.seed,
            rng::stream_id(&[
                stream_tag::TRIAL,
                source,
                n as u64,
                d as u64,
                p.to_bits(),
                trial as u64,
            ]),
        )
    }
}

/// Runs the sweep on the current rayon pool. Progress counts trials and loss curves;
/// cancellation is checked before each.
pub fn run_sweep(spec: &SweepSpec, progress: &dyn Progress) -> Result<SweepResult> {
    spec.validate()?;
    let ratios = spec.ratios.values()?;
    let datasets = spec.datasets()?;

    // The configurations: each dataset with each noise level.
    let mut configs = Vec::new();
    for data in &datasets {
        let full_spectrum = spectrum::eigenvalues_desc(
            spectrum::masked_gram(data.x(), &all_columns(data.d())).as_ref(),
        )?;
        let bound = concentration_bound(data.n(), data.entry_bound(), full_spectrum[0], spec.delta);
        for &sigma in &spec.sigma {
            configs.push((
                data,
                ConfigResult {
                    n: data.n(),
                    d: data.d(),
                    r: data.entry_bound(),
                    sigma,
                    full_spectrum: full_spectrum.clone(),
                    frobenius_sq: data.frobenius_sq(),
                    bound,
                    cells: Vec::new(),
                    curves: Vec::new(),
                },
            ));
        }
    }

    let units: Vec<(usize, usize, usize)> = (0..configs.len())
        .flat_map(|c| (0..ratios.len()).flat_map(move |i| (0..spec.trials).map(move |t| (c, i, t))))
        .collect();
    let curve_units: Vec<(usize, f64, f64)> = if spec.part.has_lr() {
        (0..configs.len())
            .flat_map(|c| {
                spec.curve_ratios
                    .iter()
                    .flat_map(move |&p| spec.curve_factors.iter().map(move |&f| (c, p, f)))
            })
            .collect()
    } else {
        Vec::new()
    };
    progress.start((units.len() + curve_units.len()) as u64, "theory sweep");

    let records: Vec<TrialRecord> = units
        .par_iter()
        .map(|&(c, i, t)| {
            progress.check()?;
            let (data, config) = &configs[c];
            let record = run_trial(spec, data, config, ratios[i], t)?;
            progress.advance(1);
            Ok(record)
        })
        .collect::<Result<_>>()?;
    let curves: Vec<LossCurve> = curve_units
        .par_iter()
        .map(|&(c, p, factor)| {
            progress.check()?;
            let (data, config) = &configs[c];
            let curve = loss_curve(spec, data, config.sigma, p, factor)?;
            progress.advance(1);
            Ok(curve)
        })
        .collect::<Result<_>>()?;

    // Regroup in unit order: config, then ratio, then trial.
    let mut records = records.into_iter();
    let mut curves = curves.into_iter();
    let per_config_curves = spec.curve_ratios.len() * spec.curve_factors.len();
    let configs = configs
        .into_iter()
        .map(|(data, mut config)| {
            config.cells = ratios
                .iter()
                .map(|&p| Cell {
                    p,
                    keep_fraction: spec.mask.keep_fraction(p, data.d()),
                    trials: records.by_ref().take(spec.trials).collect(),
                })
                .collect();
            if spec.part.has_lr() {
                config.curves = curves.by_ref().take(per_config_curves).collect();
            }
            config
        })
        .collect();
    Ok(SweepResult {
        spec: spec.clone(),
        ratios,
        configs,
    })
}

fn all_columns(d: usize) -> Vec<usize> {
    (0..d).collect()
}

/// Draws the trial's mask and noise (in that order, from the trial's own stream).
fn draw_problem<'a>(
    spec: &SweepSpec,
    data: &'a Design,
    sigma: f64,
    p: f64,
    trial: usize,
) -> MaskedRegression<'a> {
    let mut stream = spec.trial_stream(data.n(), data.d(), p, trial);
    let mask = CoordinateMask::draw(spec.mask, p, data.d(), &mut stream);
    let noise: Vec<f64> = (0..data.n())
        .map(|_| stream.sample(StandardNormal))
        .collect();
    MaskedRegression::new(data, mask, data.targets(sigma, &noise))
}

fn run_trial(
    spec: &SweepSpec,
    data: &Design,
    config: &ConfigResult,
    p: f64,
    trial: usize,
) -> Result<TrialRecord> {
    let problem = draw_problem(spec, data, config.sigma, p, trial);
    let gram = problem.gram();
    let (eigenvalues, eigen) = if spec.part.has_distance() {
        let eigen = Eigen::of(gram.as_ref())?;
        (eigen.values.clone(), Some(eigen))
    } else {
        (spectrum::eigenvalues_desc(gram.as_ref())?, None)
    };
    let n = problem.n() as f64;
    let keep_fraction = spec.mask.keep_fraction(p, data.d());
    let threshold = if spec.part.has_lr() {
        stability::divergence_threshold(&gram, problem.targets(), &spec.stability)
    } else {
        None
    };
    let distance = eigen.map(|eigen| {
        solution::distance(
            &eigen,
            problem.kept().len(),
            problem.targets(),
            data.clean_targets(),
            config.sigma,
        )
    });
    Ok(TrialRecord {
        trial,
        kept: problem.kept().len(),
        trace: (0..gram.nrows()).map(|i| gram[(i, i)]).sum(),
        concentration_error: concentration_error(
            &eigenvalues,
            &config.full_spectrum,
            keep_fraction,
        ),
        lr_theory: 2.0 * n / eigenvalues[0],
        eigenvalues,
        threshold,
        distance,
    })
}

/// GD on the weights of trial 0 at ratio `p`, with eta = factor x 2n/lambda_1.
/// A diverging curve stops once the loss passes 1e12 x its start.
fn loss_curve(
    spec: &SweepSpec,
    data: &Design,
    sigma: f64,
    p: f64,
    factor: f64,
) -> Result<LossCurve> {
    let problem = draw_problem(spec, data, sigma, p, 0);
    let lambda1 = spectrum::eigenvalues_desc(problem.gram().as_ref())?[0];
    let eta = factor * 2.0 * problem.n() as f64 / lambda1;
    let trajectory = stability::gd_on_weights(&problem, eta, spec.curve_steps, 1e12);
    Ok(LossCurve {
        p,
        factor,
        eta,
        losses: trajectory.losses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::stats::Summary;
    use crate::testing::TestResult;

    fn small_spec() -> SweepSpec {
        SweepSpec {
            n: vec![12, 20],
            d: vec![300],
            sigma: vec![0.1, 0.5],
            ratios: Ratios::List(vec![1.0, 0.3, 0.05]),
            trials: 4,
            curve_ratios: vec![0.3],
            curve_steps: 10,
            ..SweepSpec::default()
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() -> TestResult {
        let spec = small_spec();
        let run = |threads| -> TestResult<_> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            Ok(pool.install(|| run_sweep(&spec, &Silent))?)
        };
        let (one, many) = (run(1)?, run(3)?);
        assert_eq!(one.configs.len(), 4);
        for (a, b) in one.configs.iter().zip(&many.configs) {
            assert_eq!(a.full_spectrum, b.full_spectrum);
            assert_eq!(a.curves, b.curves);
            for (ca, cb) in a.cells.iter().zip(&b.cells) {
                // PartialEq on f64 is exact equality: bit-identical results.
                assert_eq!(ca.trials, cb.trials);
                assert!(
                    ca.trials
                        .iter()
                        .all(|t| t.threshold.is_some() && t.distance.is_some())
                );
            }
        }
        // Sweeps over sigma share masks; different trials differ.
        let cells = &one.configs[0].cells;
        assert_eq!(
            cells[1].trials[0].kept,
            one.configs[1].cells[1].trials[0].kept
        );
        assert_ne!(
            cells[1].trials[0].eigenvalues,
            cells[1].trials[1].eigenvalues
        );
        Ok(())
    }

    /// E[trace(M X^T X M)] = p ||X||_F^2, within the Monte Carlo error of the sample.
    #[test]
    fn trace_identity_holds_within_monte_carlo_error() -> TestResult {
        let spec = SweepSpec {
            part: Part::Eigen,
            n: vec![10],
            d: vec![400],
            ratios: Ratios::List(vec![0.3, 0.02]),
            trials: 400,
            ..SweepSpec::default()
        };
        let result = run_sweep(&spec, &Silent)?;
        let config = &result.configs[0];
        for cell in &config.cells {
            let traces = Summary::of(cell.trials.iter().map(|t| t.trace));
            let expected = cell.p * config.frobenius_sq;
            let z = (traces.mean - expected) / traces.standard_error();
            assert!(traces.std > 0.0);
            assert!(
                z.abs() < 4.0,
                "p={}: mean {} vs {expected} (z = {z})",
                cell.p,
                traces.mean
            );
            // The relative error is small too, not just hidden by a large spread.
            assert!((traces.mean / expected - 1.0).abs() < 0.05 / cell.p.sqrt());
        }
        Ok(())
    }

    /// The project's reference simulation (n 50, d 5000, U[0,1], sigma 0.5, 20 masks
    /// per p), an earlier run made for this project, not numbers from the paper
    /// (which publishes none for its theory section). Our random numbers differ from
    /// that run's; the statistics must not.
    ///
    /// The table's entries are themselves 20-mask means with their own sampling
    /// error: at p = 0.01 the kept count k ~ Binomial(5000, 0.01) varies by 14%, so one
    /// 20-mask mean of lambda_1 has a 3% standard error (seeds 0..7 give 614 to 650
    /// against the table's 637). Comparing one replicate with another at 3% would test
    /// the dice, so the test repeats the whole experiment (new X, w*, masks and noise)
    /// for 10 seeds and compares the average of the 20-mask means with the table.
    #[test]
    fn reproduces_the_reference_table() -> TestResult {
        const P: [f64; 5] = [1.0, 0.5, 0.1, 0.05, 0.01];
        const LAMBDA1: [f64; 5] = [62888.0, 31381.0, 6290.0, 3208.0, 637.0];
        const STABLE_LR: [f64; 5] = [0.00159, 0.00319, 0.0160, 0.0312, 0.162];
        const W_NORM: [f64; 5] = [0.200, 0.284, 0.666, 0.989, 6.08];
        const REPLICATES: u64 = 10;
        let mut lambda1 = [0.0; 5];
        let mut lr = [0.0; 5];
        let mut w = [0.0; 5];
        for seed in 0..REPLICATES {
            let spec = SweepSpec {
                part: Part::Distance,
                n: vec![50],
                d: vec![5000],
                sigma: vec![0.5],
                ratios: Ratios::List(P.to_vec()),
                trials: 20,
                seed,
                ..SweepSpec::default()
            };
            let result = run_sweep(&spec, &Silent)?;
            let config = &result.configs[0];
            assert!((config.full_spectrum[0] / 62888.0 - 1.0).abs() < 0.03);
            for (i, cell) in config.cells.iter().enumerate() {
                let mean = |f: &dyn Fn(&TrialRecord) -> f64| {
                    Summary::of(cell.trials.iter().map(f)).mean / REPLICATES as f64
                };
                lambda1[i] += mean(&|t| t.eigenvalues[0]);
                lr[i] += mean(&|t| t.lr_theory);
                let norms = cell
                    .trials
                    .iter()
                    .map(|t| t.distance.map(|d| d.norm))
                    .collect::<Option<Vec<f64>>>()
                    .ok_or("a trial of the distance sweep without a distance")?;
                w[i] += Summary::of(norms).mean / REPLICATES as f64;
            }
        }
        for (i, &p) in P.iter().enumerate() {
            let close =
                |ours: f64, table: f64, tolerance: f64| (ours / table - 1.0).abs() < tolerance;
            assert!(
                close(lambda1[i], LAMBDA1[i], 0.03),
                "p={p}: lambda1 {}",
                lambda1[i]
            );
            assert!(
                close(lr[i], STABLE_LR[i], 0.03),
                "p={p}: 2n/lambda1 {}",
                lr[i]
            );
            if p >= 0.05 {
                assert!(close(w[i], W_NORM[i], 0.10), "p={p}: ||w_hat|| {}", w[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn ratios_parse_and_bad_values_name_the_flag() -> TestResult {
        assert_eq!("1, 0.5".parse::<Ratios>()?, Ratios::List(vec![1.0, 0.5]));
        let grid = "log:1:0.01:3".parse::<Ratios>()?;
        let values = grid.values()?;
        assert!((values[1] - 0.1).abs() < 1e-15);
        for bad in ["0,0.5", "1.5", "-0.1", "nan", "a", "log:1:0:3", "log:1:0.1"] {
            let err = bad.parse::<Ratios>().unwrap_err().to_string();
            assert!(err.starts_with("--ratios: "), "{bad}: {err}");
        }
        let bad = SweepSpec {
            n: vec![0],
            ..SweepSpec::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "--n: must be at least 1"
        );
        Ok(())
    }
}
