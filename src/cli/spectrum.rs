//! `maskscape spectrum`: eigenvalues, densities and traces of a dense symmetric
//! matrix from a file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::BarProgress;
use crate::report::Manifest;
use crate::spectral::lanczos::{Reorthogonalization, Which};
use crate::spectral::report::{Method, SpectrumConfig, run_spectrum};
use crate::spectral::{DenseSymmetric, LinearOperator, Precision};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MethodArg {
    Lanczos,
    Power,
    Slq,
    Trace,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WhichArg {
    Largest,
    Smallest,
    Both,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReorthArg {
    Full,
    Partial,
    None,
}

/// Eigenvalues (Lanczos, power iteration), spectral density (SLQ) or trace
/// (Hutchinson, Hutch++) of a dense symmetric matrix, compared with its exact
/// eigenvalues.
#[derive(Args, Debug)]
pub struct SpectrumArgs {
    /// The matrix: a .npy or .safetensors file holding one dense symmetric matrix.
    #[arg(long)]
    matrix: PathBuf,
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
        which: match args.which {
            WhichArg::Largest => Which::Largest,
            WhichArg::Smallest => Which::Smallest,
            WhichArg::Both => Which::Both,
        },
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
    let matrix = DenseSymmetric::load(&args.matrix, args.tensor.as_deref())?;
    config.validate(LinearOperator::dim(&matrix))?;
    let exact = matrix.eigenvalues()?;
    let mut manifest = Manifest::new("spectrum", Some(args.seed), &config)?;
    manifest.add_input("matrix", &args.matrix)?;
    let source = json!({ "kind": "matrix", "path": args.matrix.display().to_string(), "tensor": args.tensor });
    let progress = BarProgress::new();
    let outcome = run_spectrum(
        &matrix,
        Some(&exact),
        source,
        &config,
        &args.out,
        manifest,
        &progress,
    )?;
    drop(progress);
    print!("{}", outcome.table.to_text());
    println!("{}", outcome.headline);
    println!(
        "wrote {} files to {}",
        outcome.outputs.len(),
        args.out.display()
    );
    Ok(())
}
