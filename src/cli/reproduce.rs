//! `maskscape reproduce`: rerun every experiment spec, rewrite figures/ and analysis/.

use std::path::PathBuf;

use crate::cli::BarProgress;
use crate::cli::theory::with_threads;
use crate::experiment::{ReproduceOptions, reproduce};

/// Flags of `maskscape reproduce`.
#[derive(clap::Args)]
pub struct ReproduceArgs {
    /// Folder of experiment specs (*.toml).
    #[arg(long, default_value = "experiments")]
    experiments: PathBuf,
    /// Folder the figures are written to.
    #[arg(long, default_value = "figures")]
    figures: PathBuf,
    /// Folder the tables and REPORT.md are written to.
    #[arg(long, default_value = "analysis")]
    analysis: PathBuf,
    /// Worker threads (default: all cores); results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs every spec and prints where the report went.
pub fn run(args: ReproduceArgs) -> anyhow::Result<()> {
    let options = ReproduceOptions {
        experiments: args.experiments,
        figures: args.figures,
        analysis: args.analysis,
        kinds: None,
    };
    let done = with_threads(args.threads, || reproduce(&options, &BarProgress::new()))??;
    println!(
        "ran {} experiments ({}); wrote {} files; report: {}",
        done.specs.len(),
        done.specs.join(", "),
        done.outputs.len(),
        done.report.display()
    );
    Ok(())
}
