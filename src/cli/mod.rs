//! The `maskscape` command line: parse flags, call the library, print results.
//! No mathematics lives here.

mod bench;
mod data;
mod init;
mod inspect;
mod mask;
mod progress;
mod reproduce;
mod theory;
mod tokenizer;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use data::DataArgs;
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
    /// Check the engine on a checkpoint against a reference file (PyTorch's values).
    Verify(verify::VerifyArgs),
    /// The linear-regression theory lab: masked spectra, stable learning rates,
    /// solution distances (tables, figures, manifest).
    Theory(theory::TheoryArgs),
    /// Rerun every experiment in experiments/ and rewrite figures/ and analysis/.
    Reproduce(reproduce::ReproduceArgs),
    /// Timed benchmarks, one group per area.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the command line and maps every error to one line on stderr and exit code 2.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Mask(args) => mask::run(args),
        Command::Data(args) => data::run(args),
        Command::Tokenizer(args) => tokenizer::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Theory(args) => theory::run(args),
        Command::Reproduce(args) => reproduce::run(args),
        Command::Bench(command) => bench::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USER_ERROR)
        }
    }
}
