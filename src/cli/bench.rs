//! `maskscape bench <area>`: timed workloads, one subcommand per area.

use std::path::PathBuf;
use std::time::Instant;

use super::BarProgress;
use crate::cli::theory::with_threads;
use crate::experiment::{ReproduceOptions, reproduce};
use crate::progress::Silent;
use crate::report::Table;
use crate::spectral::bench::{LanczosBench, lanczos_overhead};
use crate::theory::{Part, Ratios, SweepSpec, run_sweep};

/// The benchmark groups.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The theory lab: the n=200, d=20000 eigenvalue sweep (target < 20 s) and the
    /// theory specs of `reproduce` (target < 120 s).
    Theory(TheoryBenchArgs),
    /// The spectral toolkit: time per product spent outside the operator by the
    /// Lanczos modes at large dimensions (full reorthogonalization where its basis
    /// fits in memory, and the memory-bounded mode in f64 and f32), and the vector
    /// passes per product.
    Spectral(SpectralBenchArgs),
}

/// Flags of `maskscape bench theory`.
#[derive(clap::Args)]
pub struct TheoryBenchArgs {
    /// Timed repetitions of each workload (the best and the median are reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Folder of experiment specs for the reproduce workload.
    #[arg(long, default_value = "experiments")]
    experiments: std::path::PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs the chosen benchmark group and prints its timings.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Theory(args) => theory(args),
        BenchCommand::Spectral(args) => spectral(args),
    }
}

/// One timed workload: name, target seconds, and the work.
struct Workload<'a> {
    name: &'a str,
    target_s: f64,
    work: Box<dyn Fn() -> crate::Result<()> + Sync + 'a>,
}

fn theory(args: TheoryBenchArgs) -> anyhow::Result<()> {
    if args.repeats == 0 {
        return Err(crate::Error::arg("--repeats", "must be at least 1").into());
    }
    let eigen_sweep = SweepSpec {
        part: Part::Eigen,
        n: vec![200],
        d: vec![20_000],
        ratios: Ratios::LogGrid {
            from: 1.0,
            to: 0.01,
            points: 10,
        },
        trials: 20,
        ..SweepSpec::default()
    };
    let scratch = tempfile::tempdir()?;
    let reproduce_options = ReproduceOptions {
        experiments: args.experiments.clone(),
        figures: scratch.path().join("figures"),
        analysis: scratch.path().join("analysis"),
        kinds: Some(vec!["theory".to_string()]),
    };
    let workloads = [
        Workload {
            name: "eigen sweep n=200 d=20000, 10 ratios x 20 trials",
            target_s: 20.0,
            work: Box::new(|| run_sweep(&eigen_sweep, &Silent).map(|_| ())),
        },
        Workload {
            name: "reproduce (theory specs)",
            target_s: 120.0,
            work: Box::new(|| reproduce(&reproduce_options, &Silent).map(|_| ())),
        },
    ];
    let threads = with_threads(args.threads, rayon::current_num_threads)?;
    let mut names = Vec::new();
    let (mut best, mut median, mut target, mut pass) = (vec![], vec![], vec![], vec![]);
    for workload in &workloads {
        let mut seconds = Vec::new();
        for _ in 0..args.repeats {
            let start = Instant::now();
            with_threads(args.threads, || (workload.work)())??;
            seconds.push(start.elapsed().as_secs_f64());
        }
        seconds.sort_by(f64::total_cmp);
        eprintln!("{}: {:?} s", workload.name, seconds);
        names.push(workload.name.to_string());
        best.push(seconds[0]);
        median.push(seconds[seconds.len() / 2]);
        target.push(workload.target_s);
        pass.push(seconds[seconds.len() / 2] < workload.target_s);
    }
    let table = Table::new()
        .with_str("workload", names)
        .with_f64("best_s", best)
        .with_f64("median_s", median)
        .with_f64("target_s", target)
        .with_bool("median_under_target", pass);
    println!(
        "theory benchmarks ({threads} threads, {} repeats)",
        args.repeats
    );
    print!("{}", table.to_text());
    Ok(())
}

/// Flags of `maskscape bench spectral`.
#[derive(clap::Args)]
pub struct SpectralBenchArgs {
    /// Dimensions, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000, 10_000_000])]
    dims: Vec<usize>,
    /// Products per full-reorthogonalization run.
    #[arg(long, default_value_t = 60)]
    full_steps: usize,
    /// Products per memory-bounded run.
    #[arg(long, default_value_t = 120)]
    bounded_steps: usize,
    /// Basis bound of the memory-bounded runs.
    #[arg(long, default_value_t = 40)]
    basis: usize,
    /// Largest full-reorthogonalization basis to allocate, in GB.
    #[arg(long, default_value_t = 6.0)]
    memory_gb: f64,
    /// Runs per configuration (the fastest is reported).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Also write the table as CSV and Parquet into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn spectral(args: SpectralBenchArgs) -> anyhow::Result<()> {
    if args.dims.iter().any(|&d| d < 100) {
        anyhow::bail!("--dims: every dimension must be at least 100");
    }
    let bench = LanczosBench {
        dims: args.dims,
        full_steps: args.full_steps,
        bounded_steps: args.bounded_steps,
        bounded_basis: args.basis,
        memory_limit: (args.memory_gb * 1e9) as usize,
        repeats: args.repeats,
    };
    let progress = BarProgress::new();
    crate::progress::Progress::start(
        &progress,
        (bench.dims.len() * 3 * bench.repeats) as u64,
        "bench spectral",
    );
    let table = lanczos_overhead(&bench, &progress)?;
    drop(progress);
    print!("{}", table.to_markdown());
    if let Some(out) = args.out {
        table.write_both(&out.join("bench_spectral"))?;
    }
    Ok(())
}
