//! `maskscape spectrum`: eigenvalues, densities and traces of a dense symmetric
//! matrix from a file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::BarProgress;
use super::probe::WhichArg;
use crate::report::Manifest;
use crate::spectral::lanczos::Reorthogonalization;
use crate::spectral::report::{Method, SpectrumConfig, run_spectrum};
use crate::spectral::{DenseSymmetric, LinearOperator, Precision};
use crate::theory::MaskedRegression;
use crate::theory::data::Design;
use crate::theory::hessian::{MaskedHessian, probe_mask};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MethodArg {
    Lanczos,
    Power,
    Slq,
    Trace,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReorthArg {
    Full,
    Partial,
    None,
}

/// Eigenvalues (Lanczos, power iteration), spectral density (SLQ) or trace
/// (Hutchinson, Hutch++) of a dense symmetric matrix, or of the theory lab's masked
/// Hessian (1/n) M X^T X M, compared with the exact eigenvalues.
#[derive(Args, Debug)]
pub struct SpectrumArgs {
    /// The matrix: a .npy or .safetensors file holding one dense symmetric matrix.
    #[arg(long, required_unless_present = "theory", conflicts_with = "theory")]
    matrix: Option<PathBuf>,
    /// Probe the linear-regression Hessian (1/n) M X^T X M of the theory lab instead
    /// of a matrix file (data X drawn from --seed, mask drawn with keep ratio --ratio).
    #[arg(long)]
    theory: bool,
    /// Samples n of the theory problem.
    #[arg(long, default_value_t = 50, requires = "theory")]
    n: usize,
    /// Features d of the theory problem (the operator's dimension).
    #[arg(long, default_value_t = 5000, requires = "theory")]
    d: usize,
    /// Keep ratio p in (0, 1] of the theory problem's mask.
    #[arg(
        long,
        default_value_t = 0.1,
        requires = "theory",
        allow_negative_numbers = true
    )]
    ratio: f64,
    /// Entry range r of U[0, r] data (theory problem).
    #[arg(
        long,
        default_value_t = 1.0,
        requires = "theory",
        allow_negative_numbers = true
    )]
    r: f64,
    /// Distribution of the entries of X (theory problem).
    #[arg(long, value_enum, default_value = "uniform", requires = "theory")]
    dist: crate::theory::EntryLaw,
    /// Bernoulli(p) masks, or exactly round(p d) kept coordinates (theory problem).
    #[arg(long, value_enum, default_value = "bernoulli", requires = "theory")]
    mask: crate::theory::MaskKind,
    /// The tensor to read from a .safetensors file holding several.
    #[arg(long)]
    tensor: Option<String>,
    #[arg(long, value_enum, default_value = "lanczos")]
    method: MethodArg,
    /// Eigenpairs per end (lanczos, power).
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[arg(long, value_enum, default_value = "largest")]
    which: WhichArg,
    /// Products: the limit for lanczos and power, the Lanczos steps per probe for
    /// slq, the budget of each estimator for trace.
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Relative residual tolerance ‖Ay − θy‖ ≤ tol |θ|.
    #[arg(long, default_value_t = 1e-8)]
    tol: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reorthogonalization: full, partial (memory-bounded), none (ghosts detected).
    #[arg(long, value_enum, default_value = "full")]
    reorth: ReorthArg,
    /// Most basis vectors stored (0: unbounded for full, 40 for partial).
    #[arg(long, default_value_t = 0)]
    basis: usize,
    /// Store the Lanczos basis in f32.
    #[arg(long)]
    f32_basis: bool,
    /// Random probes (slq).
    #[arg(long, default_value_t = 10)]
    probes: usize,
    /// Density and figure on a symmetric-log axis.
    #[arg(long)]
    log_density: bool,
    /// Half-width of the linear part of the symmetric-log axis.
    #[arg(long)]
    linear_width: Option<f64>,
    /// Gaussian broadening width (in the plotting coordinate) instead of the rule
    /// σ = (node range)/steps.
    #[arg(long)]
    width: Option<f64>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Runs the command.
pub fn run(args: SpectrumArgs) -> anyhow::Result<()> {
    let config = SpectrumConfig {
        method: match args.method {
            MethodArg::Lanczos => Method::Lanczos,
            MethodArg::Power => Method::Power,
            MethodArg::Slq => Method::Slq,
            MethodArg::Trace => Method::Trace,
        },
        k: args.k,
        which: args.which.into(),
        iters: args.iters,
        tol: args.tol,
        seed: args.seed,
        reorthogonalization: match args.reorth {
            ReorthArg::Full => Reorthogonalization::Full,
            ReorthArg::Partial => Reorthogonalization::Partial,
            ReorthArg::None => Reorthogonalization::None,
        },
        max_basis: args.basis,
        basis_precision: if args.f32_basis {
            Precision::F32
        } else {
            Precision::F64
        },
        probes: args.probes,
        log_density: args.log_density,
        linear_width: args.linear_width,
        width: args.width,
    };
    if args.iters == 0 {
        anyhow::bail!("--iters: must be at least 1");
    }
    let progress = BarProgress::new();
    let outcome = match &args.matrix {
        Some(path) => {
            let matrix = DenseSymmetric::load(path, args.tensor.as_deref())?;
            config.validate(LinearOperator::dim(&matrix))?;
            let exact = matrix.eigenvalues()?;
            let source = json!({ "kind": "matrix", "path": path.display().to_string(), "tensor": args.tensor });
            let mut manifest = Manifest::new(
                "spectrum",
                Some(args.seed),
                &json!({ "config": config, "source": source }),
            )?;
            manifest.add_input("matrix", path)?;
            run_spectrum(
                &matrix,
                Some(&exact),
                source,
                &config,
                &args.out,
                manifest,
                &progress,
            )?
        }
        None => {
            check_theory_flags(&args)?;
            config.validate(args.d)?;
            let data = Design::generate(args.dist, args.n, args.d, args.r, args.seed);
            let mask = probe_mask(args.mask, args.ratio, args.n, args.d, args.seed);
            let problem = MaskedRegression::new(&data, mask, data.clean_targets().to_vec());
            let hessian = MaskedHessian::new(&problem);
            let exact = hessian.eigenvalues()?;
            let source = json!({
                "kind": "theory",
                "n": args.n,
                "d": args.d,
                "ratio": args.ratio,
                "r": args.r,
                "dist": args.dist,
                "mask": args.mask,
                "kept": problem.kept().len(),
            });
            let manifest = Manifest::new(
                "spectrum",
                Some(args.seed),
                &json!({ "config": config, "source": source }),
            )?;
            run_spectrum(
                &hessian,
                Some(&exact),
                source,
                &config,
                &args.out,
                manifest,
                &progress,
            )?
        }
    };
    drop(progress);
    // The headline carries the verdict: first, where a glance at the output looks.
    println!("{}", outcome.headline);
    print!("{}", outcome.table.to_text());
    println!(
        "wrote {} files to {}",
        outcome.outputs.len(),
        args.out.display()
    );
    Ok(())
}

/// The theory problem's flags, checked before anything is drawn.
fn check_theory_flags(args: &SpectrumArgs) -> crate::Result<()> {
    use crate::Error;
    if args.n == 0 {
        return Err(Error::arg("--n", "must be at least 1"));
    }
    if args.d == 0 {
        return Err(Error::arg("--d", "must be at least 1"));
    }
    if !(args.ratio > 0.0 && args.ratio <= 1.0) {
        return Err(Error::arg("--ratio", "must lie in (0, 1]"));
    }
    if !(args.r > 0.0 && args.r.is_finite()) {
        return Err(Error::arg("--r", "must be positive"));
    }
    Ok(())
}
