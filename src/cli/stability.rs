//! `maskscape sweep` on a `kind = "gd_stability"` spec: the same modes as a probe
//! sweep (all cells, one shard, `--status`, `--report`), on the stability grid.

use super::sweep_lines::{no_cells, print_report, print_run, print_shard};
use std::path::{Path, PathBuf};

use super::probe::SweepMode;
use crate::error::Result;
use crate::experiment::Spec;
use crate::experiment::stability::{markdown, reading, stability_spec, write_stability};
use crate::probe::Device;
use crate::report::Manifest;
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
                return Err(no_cells(&cells).into());
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
            print_report(&status, written.len(), out);
        }
        SweepMode::Run(shard) if shard == Shard::WHOLE => {
            let progress = super::BarProgress::new();
            let result = run_stability(&stability, &cells, shard, &progress)?;
            drop(progress);
            write_outputs(spec_path, spec, &stability, &result, "", out)?;
            print_reading(&result, &stability);
            print_run(result.computed, "", result.cached, &cells);
        }
        SweepMode::Run(shard) => {
            let progress = super::BarProgress::new();
            let result = run_stability(&stability, &cells, shard, &progress)?;
            drop(progress);
            print_shard(
                shard,
                &stability.partition(shard.count()),
                stability.grid().len(),
                (result.computed, "", result.cached),
                &cells,
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
