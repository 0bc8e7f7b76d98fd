//! `maskscape theory`: run a linear-regression sweep and write its folder.

use std::path::PathBuf;

use crate::cli::BarProgress;
use crate::theory::output::write_run;
use crate::theory::tables::terminal_views;
use crate::theory::{EntryLaw, MaskKind, Part, Ratios, SweepSpec, run_sweep};

/// Flags of `maskscape theory`; omitted flags take the paper's reference simulation
/// (n 50, d 5000, U[0,1], sigma 0.5, ratios 1,0.5,0.1,0.05,0.01, 20 trials, seed 0).
#[derive(clap::Args)]
pub struct TheoryArgs {
    /// What to compute: masked spectra (eigen), stable learning rates (lr), solution
    /// distances (distance), or all three.
    #[arg(value_enum)]
    part: Part,
    /// Sample counts n (comma-separated for a sweep).
    #[arg(long, value_delimiter = ',')]
    n: Vec<usize>,
    /// Feature counts d (comma-separated for a sweep).
    #[arg(long, value_delimiter = ',')]
    d: Vec<usize>,
    /// Entry ranges r of U[0, r] data (comma-separated for a sweep).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    r: Vec<f64>,
    /// Noise levels sigma of y = X w* + sigma eps (comma-separated for a sweep).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    sigma: Vec<f64>,
    /// Keep ratios p in (0, 1]: a list `1,0.1,0.01` or a log grid `log:1:0.01:10`.
    #[arg(long, allow_hyphen_values = true)]
    ratios: Option<String>,
    /// Masks (and noise draws) per ratio.
    #[arg(long)]
    trials: Option<usize>,
    /// Seed of every random draw.
    #[arg(long)]
    seed: Option<u64>,
    /// Distribution of the entries of X.
    #[arg(long, value_enum)]
    dist: Option<EntryLaw>,
    /// Data matrix X (rows = samples) from a .npy or .csv file instead of drawing it.
    #[arg(long)]
    x: Option<PathBuf>,
    /// Bernoulli(p) masks, or exactly round(p d) kept coordinates.
    #[arg(long, value_enum)]
    mask: Option<MaskKind>,
    /// Failure probability of the concentration bound.
    #[arg(long, allow_negative_numbers = true)]
    delta: Option<f64>,
    /// Ratios whose GD loss curves are drawn (lr part).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    curve_ratios: Vec<f64>,
    /// Worker threads (default: all cores); results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Output folder for tables, figures and manifest.json.
    #[arg(long)]
    out: PathBuf,
}

impl TheoryArgs {
    fn spec(&self) -> crate::Result<SweepSpec> {
        let default = SweepSpec::default();
        let non_empty = |given: &Vec<f64>, fallback: Vec<f64>| {
            if given.is_empty() {
                fallback
            } else {
                given.clone()
            }
        };
        Ok(SweepSpec {
            part: self.part,
            n: self.n.clone(),
            d: self.d.clone(),
            r: self.r.clone(),
            sigma: non_empty(&self.sigma, default.sigma),
            ratios: match &self.ratios {
                Some(text) => text.parse::<Ratios>()?,
                None => default.ratios,
            },
            trials: self.trials.unwrap_or(default.trials),
            seed: self.seed.unwrap_or(default.seed),
            dist: self.dist.unwrap_or(default.dist),
            x: self.x.clone(),
            mask: self.mask.unwrap_or(default.mask),
            delta: self.delta.unwrap_or(default.delta),
            curve_ratios: non_empty(&self.curve_ratios, default.curve_ratios),
            ..default
        })
    }
}

/// Runs the sweep, writes the folder, prints the summary tables.
pub fn run(args: TheoryArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    spec.validate()?;
    let result = with_threads(args.threads, || run_sweep(&spec, &BarProgress::new()))??;
    let command = format!("theory {}", part_name(args.part));
    let written = write_run(&result, &args.out, &command)?;
    for (title, table) in terminal_views(&result) {
        println!("{title}\n{}", table.to_text());
    }
    println!("wrote {} files to {}", written.len(), args.out.display());
    Ok(())
}

fn part_name(part: Part) -> &'static str {
    match part {
        Part::Eigen => "eigen",
        Part::Lr => "lr",
        Part::Distance => "distance",
        Part::All => "all",
    }
}

/// Runs `work` on a rayon pool of `threads` threads (the global pool when `None`).
pub(crate) fn with_threads<T: Send>(
    threads: Option<usize>,
    work: impl FnOnce() -> T + Send,
) -> anyhow::Result<T> {
    match threads {
        None => Ok(work()),
        Some(0) => Err(crate::Error::arg("--threads", "must be at least 1").into()),
        Some(count) => {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(count).build()?;
            Ok(pool.install(work))
        }
    }
}
