//! `maskscape sweep` on a `kind = "gd_stability"` spec: the same modes as a probe
//! sweep (all cells, one shard, `--status`, `--report`), on the stability grid.

use std::path::{Path, PathBuf};

use super::probe::SweepMode;
use crate::error::{Error, Result};
use crate::experiment::Spec;
use crate::experiment::stability::{markdown, reading, stability_spec, write_stability};
use crate::probe::Device;
use crate::report::Manifest;
use crate::report::table::format_float;
use crate::shard::Shard;
use crate::train::stability::{StabilityResult, StabilitySpec, run_stability, stability_on_disk};

/// Runs `mode` on the stability spec at `spec_path`, writing under `out`.
pub(super) fn run_sweep(
    spec_path: &Path,
    spec: &Spec,
    mode: SweepMode,
    device: Option<Device>,
    out: &Path,
) -> anyhow::Result<()> {
    let mut stability = stability_spec(spec)?;
    if let Some(device) = device {
        stability.device = device;
    }
    let cells = out.join("cells");
    match mode {
        SweepMode::Status(shards) => {
            let (_, status) = stability_on_disk(&stability, &cells, shards)?;
            print!("{}: {}", cells.display(), status.text());
        }
        SweepMode::Report(shards) => {
            let (result, status) = stability_on_disk(&stability, &cells, shards)?;
            if status.done() == 0 {
                return Err(Error::file(
                    &cells,
                    "holds no cell of this spec: run the sweep (or its shards) first",
                )
                .into());
            }
            let written = write_outputs(
                spec_path,
                spec,
                &stability,
                &result,
                &status.markdown(),
                out,
            )?;
            print_reading(&result, &stability);
            if !status.is_complete() {
                print!("{}", status.text());
            }
            println!(
                "{} of {} cells on disk; wrote {} files to {}",
                status.done(),
                status.total(),
                written.len(),
                out.display()
            );
        }
        SweepMode::Run(shard) if shard == Shard::WHOLE => {
            let progress = super::BarProgress::new();
            let result = run_stability(&stability, &cells, shard, &progress)?;
            drop(progress);
            write_outputs(spec_path, spec, &stability, &result, "", out)?;
            print_reading(&result, &stability);
            println!(
                "{} cells computed, {} reused from {}",
                result.computed,
                result.cached,
                cells.display()
            );
        }
        SweepMode::Run(shard) => {
            let progress = super::BarProgress::new();
            let result = run_stability(&stability, &cells, shard, &progress)?;
            drop(progress);
            let partition = stability.partition(shard.count());
            let total: f64 = (1..=shard.count()).map(|s| partition.load(s)).sum();
            println!(
                "shard {shard}: {} of the {} cells (expected cost {} of {}), {} computed, {} \
                 reused from {}",
                result.computed + result.cached,
                stability.grid().len(),
                format_float(partition.load(shard.index())),
                format_float(total),
                result.computed,
                result.cached,
                cells.display()
            );
            println!(
                "With the same spec and --out: `--status --shards {}` shows the whole grid, \
                 `--report` writes the tables, figures and report once every shard is done",
                shard.count()
            );
        }
    }
    Ok(())
}

/// Writes the tables, figures, `report.md` (opening with `missing`, the cells left
/// out of an incomplete grid) and the manifest under `out`; returns the files.
fn write_outputs(
    spec_path: &Path,
    spec: &Spec,
    stability: &StabilitySpec,
    result: &StabilityResult,
    missing: &str,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = write_stability(result, stability, out, &out.join(&spec.name))?;
    let report = out.join("report.md");
    crate::report::atomic::write_bytes(
        &report,
        format!(
            "# {}\n\n{}{}",
            spec.title,
            missing,
            markdown(result, stability)
        )
        .as_bytes(),
    )?;
    written.push(report);
    let mut manifest = Manifest::new("sweep", Some(stability.seed), stability)?;
    manifest.add_input("spec", spec_path)?;
    manifest.add_outputs(&written);
    manifest.write(out)?;
    Ok(written)
}

fn print_reading(result: &StabilityResult, stability: &StabilitySpec) {
    for line in reading(result, stability) {
        println!("- {line}");
    }
}
