//! `maskscape bench`: benchmarks (speed is measured here, never in tests).

use crate::backend::{Backend, Cpu, Scalar};
use crate::mask::{Mask, MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::model::bench::{bench_hvp, random_batch};
use crate::model::{Checkpoint, Opt, ParamLayout};
use crate::report::Table;

use super::verify::Precision;

/// Benchmarks.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BenchCommand {
    /// Time forward, gradient, full and masked Hessian-vector products of a random
    /// OPT model on random tokens.
    Hvp(HvpArgs),
}

/// Where the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Device {
    Cpu,
    Cuda,
}

#[derive(clap::Args, Debug)]
struct HvpArgs {
    /// A preset (opt-mini, opt-125m, ..., opt-13b) or the path of an OPT config.json.
    #[arg(long, default_value = "opt-mini")]
    config: String,
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    seq: usize,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Precision,
    /// The masked product's scope.
    #[arg(long, value_enum, default_value = "qv")]
    mask_scope: Scope,
    /// The mask's trainable ratio, as a fraction of all parameters (the paper's).
    #[arg(long, default_value_t = 1e-3)]
    ratio: f64,
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Timed repetitions per phase (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seed of the weights, tokens, mask and probe vectors.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Hvp(args) => hvp(args),
    }
}

fn hvp(args: HvpArgs) -> anyhow::Result<()> {
    if args.device == Device::Cuda {
        return Err(crate::Error::arg(
            "--device",
            "cuda is not available yet (the CUDA backend is a later issue); use --device cpu",
        )
        .into());
    }
    if args.batch == 0 || args.seq == 0 {
        return Err(
            crate::Error::arg("--batch/--seq", "need at least one sequence of one token").into(),
        );
    }
    match args.dtype {
        Precision::F32 => hvp_on::<f32, _>(Cpu, &args),
        Precision::F64 => hvp_on::<f64, _>(Cpu, &args),
    }
}

fn hvp_on<T: Scalar, B: Backend<T>>(backend: B, args: &HvpArgs) -> anyhow::Result<()> {
    let config = super::init::resolve_config(&args.config)?;
    let layout = ParamLayout::new(&config);
    let spec = MaskSpec {
        scope: args.mask_scope,
        ratio: args.ratio,
        ratio_of: RatioOf::Total,
        sampling: Sampling::Bernoulli,
        structure: Structure::Elements,
        seed: args.seed,
    };
    let mask = Mask::draw(&spec, &layout)?;
    let data = [random_batch(&config, args.batch, args.seq, args.seed)?];
    let Checkpoint { config, params, .. } = Checkpoint::<T>::random(config, args.seed);
    let model = Opt::new(backend, config, &params)?;
    drop(params);
    let name = model.backend().name();
    println!(
        "{}: {} parameters, {} x {} tokens, {}, {} mask of ratio {} (k = {}), {name}, median of {} after {} warm-up",
        args.config,
        layout.total(),
        args.batch,
        args.seq,
        T::NAME,
        args.mask_scope.name(),
        args.ratio,
        mask.len(),
        args.reps,
        args.warmup
    );
    let progress = super::BarProgress::new();
    let phases = bench_hvp(
        &model,
        &data,
        mask.indices(),
        args.reps,
        args.warmup,
        args.seed,
        &progress,
    )?;
    drop(progress);
    let table = Table::new()
        .with_str(
            "phase",
            phases.iter().map(|p| p.phase.to_string()).collect(),
        )
        .with_f64("median_ms", phases.iter().map(|p| p.median()).collect())
        .with_f64("min_ms", phases.iter().map(|p| p.min()).collect())
        .with_f64("max_ms", phases.iter().map(|p| p.max()).collect());
    println!("{}", table.to_text());
    Ok(())
}
