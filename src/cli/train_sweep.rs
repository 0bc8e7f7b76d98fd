//! `maskscape sweep SPEC` for `kind = "training_sweep"`: run the grid (or one
//! shard of it), print its status, or write its report from the cells on disk.

use super::sweep_lines::{no_cells, print_report, print_run, print_shard};
use std::path::Path;

use super::probe::{SweepArgs, SweepMode};
use crate::error::Result;
use crate::experiment::Spec;
use crate::experiment::training::{OutputPaths, reading_markdown, train_sweep_spec, write_outputs};
use crate::report::atomic;
use crate::shard::Shard;
use crate::train::sweep::{
    TrainSweepResult, run_train_sweep, run_train_sweep_shard, train_sweep_on_disk,
};

/// Runs the training sweep `spec` as `args` and `mode` ask.
pub fn run(args: &SweepArgs, spec: &Spec, mode: SweepMode) -> anyhow::Result<()> {
    let mut sweep = train_sweep_spec(spec)?;
    if let Some(device) = args.device {
        sweep.train.device = device;
    }
    sweep.train.recompute |= args.recompute;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(&spec.name));
    let cells = out.join("cells");
    match mode {
        SweepMode::Status(shards) => {
            let (_, status) = train_sweep_on_disk(&sweep, &cells, shards)?;
            print!("{}: {}", cells.display(), status.text());
        }
        SweepMode::Report(shards) => {
            let (result, status) = train_sweep_on_disk(&sweep, &cells, shards)?;
            if status.done() == 0 {
                return Err(no_cells(&cells).into());
            }
            let written = write(spec, &result, &status.markdown(), &out)?;
            print_report(&status, written, &out);
        }
        SweepMode::Run(shard) if shard == Shard::WHOLE => {
            let progress = super::BarProgress::new();
            let result = run_train_sweep(&sweep, &cells, &progress)?;
            drop(progress);
            write(spec, &result, "", &out)?;
            print_run(result.computed, "", result.cached, &cells);
        }
        SweepMode::Run(shard) => {
            let progress = super::BarProgress::new();
            let result = run_train_sweep_shard(&sweep, &cells, shard, &progress)?;
            drop(progress);
            print_shard(
                shard,
                &sweep.partition(shard.count()),
                sweep.grid().len(),
                (result.computed, "", result.cached),
                &cells,
            );
        }
    }
    Ok(())
}

/// Writes the tables, figures, manifest and `report.md` (opening with `missing`,
/// the cells left out of an incomplete grid) under `out`, prints the reading;
/// returns the number of files written.
fn write(spec: &Spec, result: &TrainSweepResult, missing: &str, out: &Path) -> Result<usize> {
    let stem = out.join(&spec.name);
    let paths = OutputPaths {
        tables: out,
        figure_stem: &stem,
    };
    let (written, lab) = write_outputs(spec, result, &paths)?;
    let link = |png: &Path| {
        png.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let reading = reading_markdown(result, &lab, &paths, &written, &link);
    atomic::write_bytes(
        &out.join("report.md"),
        format!("# {}\n\n{missing}{reading}", spec.title).as_bytes(),
    )?;
    println!(
        "{}",
        reading_markdown(result, &lab, &paths, &[], &link).trim_end()
    );
    Ok(written.len() + 1)
}
