//! The `maskscape` command line: parse flags, call the library, print results.
//! No mathematics lives here.

mod bench;
mod data;
mod init;
mod inspect;
mod mask;
mod memory;
mod probe;
mod progress;
mod reproduce;
mod spectrum;
mod stability;
mod sweep_lines;
mod theory;
mod tokenizer;
mod train;
mod train_sweep;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use data::DataArgs;
pub use memory::MemoryArgs;
pub use progress::BarProgress;

/// Exit status for every user error (bad flag, bad file), as clap uses for usage errors.
const EXIT_USER_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "maskscape",
    version,
    about = "The loss landscape of randomly masked fine-tuning: theory lab, exact Hessian probes of OPT models, and reproduction of the paper's figures."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a HuggingFace OPT checkpoint with random weights (config.json + model.safetensors).
    Init(init::InitArgs),
    /// Load a checkpoint (all of the loader's checks) and summarise its tensors.
    Inspect(inspect::InspectArgs),
    /// Draw a random parameter mask (scope, ratio, sampling, structure, seed) and save it.
    Mask(mask::MaskArgs),
    /// Inspect datasets as the probes read them.
    Data(data::DataCommandArgs),
    /// Train tokenizers for models built from scratch.
    Tokenizer(tokenizer::TokenizerArgs),
    /// The linear-regression theory lab: masked spectra, stable learning rates,
    /// solution distances (tables, figures, manifest).
    Theory(theory::TheoryArgs),
    /// Rerun every experiment in experiments/ and rewrite figures/ and analysis/.
    Reproduce(reproduce::ReproduceArgs),
    /// Check the engine on a checkpoint against a reference file (PyTorch's values).
    Verify(verify::VerifyArgs),
    /// Probe the Hessian of a checkpoint's loss on a dataset, restricted to a random
    /// mask: extreme eigenvalues, density, trace, loss and accuracy.
    Probe(probe::ProbeArgs),
    /// The loss along one or two directions of the masked subspace, beside the
    /// quadratic model from the measured curvature.
    Landscape(probe::LandscapeArgs),
    /// Fine-tune a checkpoint on a random mask's coordinates (or every parameter) as
    /// the paper does, tracking the distance from the start and the sharpness.
    Train(Box<train::TrainArgs>),
    /// Run a sweep spec (a ratio x mask seed x checkpoint probe sweep, a training
    /// sweep or a GD stability spec), resuming cached cells; one shard of it; or its
    /// status or report.
    Sweep(probe::SweepArgs),
    /// Eigenvalues, spectral density or trace of a dense symmetric matrix (or of
    /// the theory lab's masked Hessian).
    Spectrum(spectrum::SpectrumArgs),
    /// Timed benchmarks, one group per area (`bench theory`, `bench hvp`, `bench spectral`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the command line and maps every error to one line on stderr and exit code 2.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The command runs on a worker of rayon's pool rather than on the main thread:
    // the engine's parallel loops (hundreds per Hessian-vector product) then fork
    // from inside the pool instead of queueing from outside and sleeping until done.
    // Measured on opt-mini's HVP (4 x 64 tokens, 2 cores): 85.5 ms -> 79.3 ms.
    // Workers get the main thread's usual stack.
    if let Err(err) = rayon::ThreadPoolBuilder::new()
        .stack_size(MAIN_STACK_BYTES)
        .build_global()
    {
        eprintln!("error: starting the thread pool: {err}");
        return ExitCode::from(EXIT_USER_ERROR);
    }
    rayon::scope(|_| run(cli.command))
}

/// The stack of each pool worker: that of a Linux main thread, since one of them
/// runs the whole command.
const MAIN_STACK_BYTES: usize = 8 << 20;

fn run(command: Command) -> ExitCode {
    let done = |r: anyhow::Result<()>| r.map(|()| 0u8);
    let result: anyhow::Result<u8> = match command {
        Command::Train(args) => train::run(*args),
        Command::Init(args) => done(init::run(args)),
        Command::Inspect(args) => done(inspect::run(args)),
        Command::Mask(args) => done(mask::run(args)),
        Command::Data(args) => done(data::run(args)),
        Command::Tokenizer(args) => done(tokenizer::run(args)),
        Command::Theory(args) => done(theory::run(args)),
        Command::Reproduce(args) => done(reproduce::run(args)),
        Command::Verify(args) => done(verify::run(args)),
        Command::Probe(args) => done(probe::run_probe_command(args)),
        Command::Landscape(args) => done(probe::run_landscape_command(args)),
        Command::Sweep(args) => done(probe::run_sweep_command(args)),
        Command::Spectrum(args) => done(spectrum::run(args)),
        Command::Bench(command) => done(bench::run(command)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USER_ERROR)
        }
    }
}
