//! `maskscape verify`: recompute a reference file's quantities and compare.

use std::path::PathBuf;

use anyhow::bail;

use super::MemoryArgs;
use crate::backend::{Backend, Scalar};
use crate::model::{Checkpoint, Footprint, Operation, Opt, OptConfig, ParamLayout};
use crate::probe::verify::{Reference, VerifyReport, verify_with};
use crate::probe::{BackendJob, Device, Dtype, Engine, GpuOptions};

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
    dtype: Dtype,
    /// Where the engine runs (the tolerances are the same on every device).
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    gpu: GpuOptions,
    #[command(flatten)]
    memory: MemoryArgs,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let engine = Engine::open(args.device, args.gpu)?;
    let report = engine.run(args.dtype, VerifyJob { args: &args })?;
    println!(
        "{} against {} in {} on {} ({} parameters):",
        args.model.display(),
        args.reference.display(),
        report.dtype,
        engine.describe(),
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

/// The verification, generic over the backend the engine opened.
struct VerifyJob<'a> {
    args: &'a VerifyArgs,
}

impl BackendJob for VerifyJob<'_> {
    type Output = VerifyReport;

    fn run<T: Scalar, B: Backend<T> + Clone>(self, backend: B) -> crate::Result<VerifyReport> {
        let reference = Reference::load(&self.args.reference)?;
        // planned (or refused) before the weights are read: one forward-over-reverse
        // pass with the gradient (N-vectors v, H v and g), and on the CPU, in the
        // same memory, their host copies and the reference's f64 vectors
        let config = OptConfig::from_file(&self.args.model.join("config.json"))?;
        let batch = reference.to_batch(config.vocab_size)?;
        let n = ParamLayout::new(&config).total();
        let host = if backend.name() == "cpu" {
            3 * n * (std::mem::size_of::<T>() + 8)
        } else {
            0
        };
        let op = Operation::Hvp { gradient: true };
        let footprint =
            Footprint::for_batches::<T>(&config, &[batch], op, 0).plus_vectors(host as u64);
        let memory = footprint.choose_on(&backend, self.args.memory.mode())?;
        let checkpoint = Checkpoint::<T>::load_weights(config, &self.args.model)?;
        let model = Opt::from_vec(backend, checkpoint.config, checkpoint.params)?;
        let progress = super::BarProgress::new();
        verify_with(&model, &reference, memory, &progress)
    }
}
