//! `maskscape init`: a HuggingFace-format OPT checkpoint with random weights.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::checkpoint::write_random_checkpoint;
use crate::model::presets::{PRESET_NAMES, preset};
use crate::model::{OptConfig, ParamLayout, StoredDtype};
use crate::report::Manifest;

/// Writes config.json + model.safetensors with random weights (the law of the
/// reference fixtures; one rng stream per tensor), loadable by transformers.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// A preset (opt-mini, opt-125m, opt-350m, opt-1.3b, opt-2.7b, opt-6.7b, opt-13b)
    /// or the path of an OPT config.json.
    #[arg(long)]
    config: String,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stored element type: f16, bf16, f32 or f64.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: StoredDtype,
    /// Output folder (created if needed).
    #[arg(long)]
    out: PathBuf,
}

fn parse_dtype(name: &str) -> std::result::Result<StoredDtype, String> {
    StoredDtype::from_name(name)
        .ok_or_else(|| format!("`{name}` is not one of f16, bf16, f32, f64"))
}

/// The configuration named by `--config`: a preset name or a config.json path.
pub(super) fn resolve_config(spec: &str) -> Result<OptConfig> {
    if let Some(config) = preset(spec) {
        return Ok(config);
    }
    let path = Path::new(spec);
    if path.is_file() {
        return OptConfig::from_file(path);
    }
    Err(Error::arg(
        "--config",
        format!(
            "`{spec}` is neither a preset ({}) nor a file",
            PRESET_NAMES.join(", ")
        ),
    ))
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let config = resolve_config(&args.config)?;
    let total = ParamLayout::new(&config).total();
    let progress = super::BarProgress::new();
    let written = write_random_checkpoint(&config, args.seed, args.dtype, &args.out, &progress)?;
    drop(progress);
    let mut manifest = Manifest::new(
        "init",
        Some(args.seed),
        &serde_json::json!({
            "config": args.config,
            "dtype": args.dtype,
            "parameters": total,
            "architecture": config,
        }),
    )?;
    if preset(&args.config).is_none() {
        manifest.add_input("config", Path::new(&args.config))?;
    }
    manifest.add_outputs(&written);
    manifest.write(&args.out)?;
    let bytes = total * args.dtype.size();
    println!(
        "wrote {}: {} with {total} parameters ({:.1} MB of {} weights), seed {}",
        args.out.display(),
        args.config,
        bytes as f64 / 1e6,
        args.dtype,
        args.seed
    );
    Ok(())
}
