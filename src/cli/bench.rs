//! `maskscape bench <area>`: timed workloads, one subcommand per area.

use std::time::Instant;

use crate::cli::theory::with_threads;
use crate::experiment::{ReproduceOptions, reproduce};
use crate::progress::Silent;
use crate::report::Table;
use crate::theory::{Part, Ratios, SweepSpec, run_sweep};

/// The benchmark groups.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The theory lab: the n=200, d=20000 eigenvalue sweep (target < 20 s) and the
    /// theory specs of `reproduce` (target < 120 s).
    Theory(TheoryBenchArgs),
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
