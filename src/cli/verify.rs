//! `maskscape verify`: recompute a reference file's quantities and compare.

use std::path::PathBuf;

use anyhow::bail;

use crate::backend::{Backend, Cpu, Scalar};
use crate::model::verify::{Reference, verify};
use crate::model::{Checkpoint, Opt};

/// The element type the engine computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Precision {
    F32,
    F64,
}

/// Checks the engine on a checkpoint against a reference computed elsewhere
/// (PyTorch): logits, loss, gradient, Hessian-vector products, masked products,
/// and Hessian spectra and traces, whichever the reference holds.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A HuggingFace OPT checkpoint folder (config.json and weights).
    #[arg(long)]
    model: PathBuf,
    /// A reference file: safetensors holding `input_ids`, `attention_mask`, `labels`
    /// and the quantities to check (the format of tests/fixtures/README.md).
    #[arg(long)]
    reference: PathBuf,
    /// Compute in f64 (every quantity within 1e-9) or f32 (1e-4 on derivatives,
    /// 1e-5 on logits and loss).
    #[arg(long, value_enum, default_value = "f64")]
    dtype: Precision,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    match args.dtype {
        Precision::F64 => run_in::<f64>(&args),
        Precision::F32 => run_in::<f32>(&args),
    }
}

fn run_in<T: Scalar>(args: &VerifyArgs) -> anyhow::Result<()>
where
    Cpu: Backend<T>,
{
    let reference = Reference::load(&args.reference)?;
    let checkpoint = Checkpoint::<T>::load(&args.model)?;
    let model = Opt::new(Cpu, checkpoint.config, &checkpoint.params)?;
    let progress = super::BarProgress::new();
    let report = verify(&model, &reference, &progress)?;
    drop(progress);
    println!(
        "{} against {} in {} ({} parameters):",
        args.model.display(),
        args.reference.display(),
        T::NAME,
        report.num_params
    );
    println!("{}", report.table().to_text());
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| format!("{} ({:.2e} > {:.0e})", c.quantity, c.rel_error, c.tolerance))
        .collect();
    if !failed.is_empty() {
        bail!(
            "verification failed, outside tolerance: {}",
            failed.join(", ")
        );
    }
    println!("all {} quantities within tolerance", report.checks.len());
    Ok(())
}
