//! `maskscape mask`: draw a random mask, save it, and summarise it per tensor.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::mask::{Mask, MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::model::{OptConfig, ParamLayout};
use crate::report::{Manifest, Table};

/// Draws a mask over a model's parameters and writes FILE (.safetensors with an
/// int64 `mask_idx`) plus its JSON sidecar; reuse it with `--mask FILE`.
#[derive(clap::Args, Debug)]
pub struct MaskArgs {
    /// A model folder (only its config.json is read).
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    model: Option<PathBuf>,
    /// A preset (opt-125m, ...) or a config.json path, instead of --model.
    #[arg(long)]
    config: Option<String>,
    /// The tensors the mask may select from.
    #[arg(long, value_enum, default_value = "qv")]
    scope: Scope,
    /// The trainable ratio (see --ratio-of).
    #[arg(long)]
    ratio: f64,
    /// `total`: a fraction of all parameters (the paper's ratio); `scope`: of the scope.
    #[arg(long, value_enum, default_value = "total")]
    ratio_of: RatioOf,
    /// `bernoulli`: each unit kept independently; `exact`: a fixed count per tensor.
    #[arg(long, value_enum, default_value = "bernoulli")]
    sampling: Sampling,
    /// `elements`: single weights; `columns`: whole columns of each weight matrix.
    #[arg(long, value_enum, default_value = "elements")]
    structure: Structure,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file, ending in .safetensors (the sidecar gets the same stem, .json).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: MaskArgs) -> anyhow::Result<()> {
    let (config, source) = match (&args.model, &args.config) {
        (Some(dir), _) => {
            let path = dir.join("config.json");
            (OptConfig::from_file(&path)?, Some(path))
        }
        (None, Some(spec)) => {
            let config = super::init::resolve_config(spec)?;
            let file = Path::new(spec);
            (config, file.is_file().then(|| file.to_path_buf()))
        }
        // invariant: clap requires one of --model and --config.
        (None, None) => unreachable!("clap enforces --model or --config"),
    };
    let layout = ParamLayout::new(&config);
    let spec = MaskSpec {
        scope: args.scope,
        ratio: args.ratio,
        ratio_of: args.ratio_of,
        sampling: args.sampling,
        structure: args.structure,
        seed: args.seed,
    };
    let q = spec.keep_probability(&layout)?;
    let started = Instant::now();
    let mask = Mask::draw(&spec, &layout)?;
    let elapsed = started.elapsed();

    let mut manifest = Manifest::new("mask", Some(args.seed), &spec)?;
    if let Some(path) = &source {
        manifest.add_input("config", path)?;
    }
    let written = mask.save(&args.out, &layout, Some(manifest))?;

    let counts = mask.counts(&layout);
    let table = Table::new()
        .with_str("tensor", counts.iter().map(|c| c.name.clone()).collect())
        .with_i64("kept", counts.iter().map(|c| c.kept as i64).collect())
        .with_i64("size", counts.iter().map(|c| c.size as i64).collect())
        .with_f64(
            "fraction",
            counts
                .iter()
                .map(|c| c.kept as f64 / c.size as f64)
                .collect(),
        );
    println!("{}", table.to_text());
    println!(
        "scope {} ({} parameters), keep probability {q:.6} per {}",
        args.scope.name(),
        args.scope.size(&layout),
        match args.structure {
            Structure::Elements => "element",
            Structure::Columns => "column",
        }
    );
    println!(
        "kept {} of {} parameters ({:.6}% of all), drawn in {:.1} ms",
        mask.len(),
        layout.total(),
        100.0 * mask.ratio_of_total(),
        elapsed.as_secs_f64() * 1e3
    );
    println!(
        "wrote {}",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
