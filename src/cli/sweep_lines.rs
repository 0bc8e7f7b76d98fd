//! The lines every kind of `maskscape sweep` prints the same way: a report with no
//! cells, what a report found on disk, what a whole run and what one shard did.

use std::path::Path;

use crate::error::Error;
use crate::report::table::format_float;
use crate::shard::{GridStatus, Partition, Shard};

/// `--report` before any cell exists.
pub(super) fn no_cells(cells: &Path) -> Error {
    Error::file(
        cells,
        "holds no cell of this spec: run the sweep (or its shards) first",
    )
}

/// After `--report`: the missing cells (if any), then what was written.
pub(super) fn print_report(status: &GridStatus, written: usize, out: &Path) {
    if !status.is_complete() {
        print!("{}", status.text());
    }
    println!(
        "{} of {} cells on disk; wrote {written} files to {}",
        status.done(),
        status.total(),
        out.display()
    );
}

/// What one process did: cells computed (with `work`, e.g. " (40 Hessian-vector
/// products)", or ""), and cells reused from `cells`.
pub(super) fn print_run(computed: usize, work: &str, cached: usize, cells: &Path) {
    println!(
        "{computed} cells computed{work}, {cached} reused from {}",
        cells.display()
    );
}

/// What shard `shard` of `partition` did out of a grid of `grid_len` cells.
pub(super) fn print_shard(
    shard: Shard,
    partition: &Partition,
    grid_len: usize,
    (computed, work, cached): (usize, &str, usize),
    cells: &Path,
) {
    let total: f64 = (1..=shard.count()).map(|s| partition.load(s)).sum();
    println!(
        "shard {shard}: {} of the {grid_len} cells (expected cost {} of {}), {computed} \
         computed{work}, {cached} reused from {}",
        computed + cached,
        format_float(partition.load(shard.index())),
        format_float(total),
        cells.display()
    );
    println!(
        "With the same spec and --out: `--status --shards {}` shows the whole grid, \
         `--report` writes the tables, figures and report once every shard is done",
        shard.count()
    );
}
