//! Sharded grids: one sweep's cells split over N independent processes (the tasks
//! of a cluster array job), all writing into the same cell folder.
//!
//! A grid is a list of [`Unit`]s, each with a stable id and an expected cost.
//! [`Partition::new`] assigns them to N shards deterministically from that list
//! alone (no clock, no file on disk), balancing the summed expected cost rather than
//! the count: units are taken in order of decreasing cost (ties broken by id) and
//! each goes to the shard with the least cost so far (ties to the lowest shard), the
//! longest-processing-time rule, whose largest load is within 4/3 of the best
//! possible. Every process that sees the same units computes the same partition, so
//! the shards need no coordination: shard I runs the units it owns, skips those
//! already on disk, and writes each one atomically (`report::atomic`) once
//! complete. Two processes never own the same unit; a unit computed twice (a plain
//! run beside a shard, say) is a complete file renamed over a complete file, so
//! either copy is valid.
//!
//! # How a sweep kind plugs in
//!
//! The probe sweep (`probe::sweep`) is the first user; a new kind (a training
//! sweep, say) does the same:
//!
//! 1. Describe every cell of a spec as a [`Unit`]: the id is derived from the spec
//!    alone and names the cell's file under `cells/` (e.g. `init/ratio-1e-3-seed-0`),
//!    the cost is the cell's expected work in any unit that is consistent within
//!    the grid (products, training steps). Units that other cells or the report
//!    need (a reference per checkpoint) are units of their own, cached like cells.
//! 2. Run: `Partition::new(&units, shard.count())`, then compute the units with
//!    `partition.owner(i) == shard` that are not on disk, writing each atomically.
//! 3. `--status` and `--report`: classify each unit as [`CellState`] (a cell file
//!    whose recorded key does not match the spec's is [`CellState::Stale`]), build a
//!    [`GridStatus`], print [`GridStatus::text`], and put [`GridStatus::markdown`]
//!    at the top of a report built from the cells that are done.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::error::{Error, Result};

/// Shard `index` of `count`, 1-based as array jobs number their tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// The whole grid: one shard of one.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Shard `index` of `count`; `index` runs from 1 to `count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index == 0 || index > count {
            return Err(Error::arg(
                "--shard",
                format!("{index}/{count}: the shard I of N must satisfy 1 <= I <= N"),
            ));
        }
        Ok(Shard { index, count })
    }

    /// The 1-based index.
    pub fn index(self) -> usize {
        self.index
    }

    /// The number of shards.
    pub fn count(self) -> usize {
        self.count
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses `I/N`, e.g. `3/8`.
    fn from_str(text: &str) -> Result<Self> {
        let parse = |part: &str| part.trim().parse::<usize>().ok();
        match text.split_once('/').map(|(i, n)| (parse(i), parse(n))) {
            Some((Some(index), Some(count))) => Shard::new(index, count),
            _ => Err(Error::arg(
                "--shard",
                format!("`{text}` is not I/N (shard I of N, 1-based, e.g. 3/8)"),
            )),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One unit of work of a grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    /// Stable and unique within the grid, derived from the spec alone.
    pub id: String,
    /// Expected cost, finite and non-negative, in the grid's own unit.
    pub cost: f64,
}

/// Which shard owns each unit of a grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Per unit (in the grid's order), the 1-based owning shard.
    owners: Vec<usize>,
    /// Per shard, the summed expected cost of its units.
    loads: Vec<f64>,
}

impl Partition {
    /// The longest-processing-time partition of `units` over `count` shards (at
    /// least 1): by decreasing cost, ties by id, each unit to the least-loaded shard,
    /// ties to the lowest index. It depends on the units alone, not on their order.
    pub fn new(units: &[Unit], count: usize) -> Self {
        let count = count.max(1);
        let mut order: Vec<usize> = (0..units.len()).collect();
        order.sort_by(|&a, &b| {
            units[b]
                .cost
                .total_cmp(&units[a].cost)
                .then_with(|| units[a].id.cmp(&units[b].id))
        });
        let mut owners = vec![0; units.len()];
        let mut loads = vec![0.0; count];
        for i in order {
            // The first least-loaded shard: `min_by` would keep the last of equals.
            let mut best = 0;
            for (s, load) in loads.iter().enumerate() {
                if *load < loads[best] {
                    best = s;
                }
            }
            loads[best] += units[i].cost;
            owners[i] = best + 1;
        }
        Partition { owners, loads }
    }

    /// The shard that owns unit `i` (an index into the units given to [`Self::new`]).
    pub fn owner(&self, i: usize) -> Shard {
        Shard {
            index: self.owners[i],
            count: self.loads.len(),
        }
    }

    /// The units `shard` owns, in the grid's order.
    pub fn units_of(&self, shard: Shard) -> Vec<usize> {
        (0..self.owners.len())
            .filter(|&i| self.owners[i] == shard.index)
            .collect()
    }

    /// The summed expected cost of the units of shard `index` (1-based).
    pub fn load(&self, index: usize) -> f64 {
        self.loads[index - 1]
    }
}

/// Where a unit stands on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellState {
    /// A complete cell for this spec.
    Done,
    /// No file.
    Missing,
    /// A file that belongs to other settings, another build, or cannot be read: it
    /// is recomputed (and replaced) like a missing one.
    Stale,
}

/// The cells of a grid on disk and their owners under a partition.
#[derive(Clone, Debug)]
pub struct GridStatus {
    units: Vec<Unit>,
    states: Vec<CellState>,
    partition: Partition,
}

impl GridStatus {
    /// The status of `units` (with their `states`, in the same order) under an
    /// N-way split, `shards` = N.
    pub fn new(units: Vec<Unit>, states: Vec<CellState>, shards: usize) -> Self {
        let partition = Partition::new(&units, shards);
        GridStatus {
            units,
            states,
            partition,
        }
    }

    /// Units in the grid.
    pub fn total(&self) -> usize {
        self.units.len()
    }

    /// Units done.
    pub fn done(&self) -> usize {
        self.count(CellState::Done)
    }

    /// Whether every unit is done.
    pub fn is_complete(&self) -> bool {
        self.done() == self.total()
    }

    fn count(&self, state: CellState) -> usize {
        self.states.iter().filter(|s| **s == state).count()
    }

    /// The units not done, in grid order: (id, state, owning shard).
    pub fn not_done(&self) -> Vec<(&str, CellState, Shard)> {
        (0..self.units.len())
            .filter(|&i| self.states[i] != CellState::Done)
            .map(|i| {
                (
                    self.units[i].id.as_str(),
                    self.states[i],
                    self.partition.owner(i),
                )
            })
            .collect()
    }

    /// The status as `--status` prints it: totals, one line per shard, one line per
    /// cell not done with its owner.
    pub fn text(&self) -> String {
        let shards = self.partition.loads.len();
        let mut out = format!(
            "{} cells: {} done, {} missing",
            self.total(),
            self.done(),
            self.total() - self.done()
        );
        let stale = self.count(CellState::Stale);
        if stale > 0 {
            let _ = write!(
                out,
                " ({stale} of them stale: a file from other settings or another build, \
                 recomputed when its shard runs)"
            );
        }
        out.push('\n');
        for index in 1..=shards {
            let units = self.partition.units_of(Shard {
                index,
                count: shards,
            });
            let done = units
                .iter()
                .filter(|&&i| self.states[i] == CellState::Done)
                .count();
            let _ = writeln!(
                out,
                "shard {index}/{shards}: {} cell{}, {done} done, {} missing (expected cost {})",
                units.len(),
                if units.len() == 1 { "" } else { "s" },
                units.len() - done,
                crate::report::table::format_float(self.partition.load(index)),
            );
        }
        for (id, state, owner) in self.not_done() {
            let _ = writeln!(out, "{} {id}: shard {owner}", state_word(state));
        }
        out
    }

    /// For a report built from an incomplete grid: a paragraph that says so and
    /// lists the cells left out with their owners; empty when the grid is complete.
    pub fn markdown(&self) -> String {
        if self.is_complete() {
            return String::new();
        }
        let mut out = format!(
            "**Incomplete: {} of {} cells are missing**, so the tables, figure and reading \
             below use the {} cells on disk. The missing cells, each with the shard (of {}) \
             that owns it:\n\n",
            self.total() - self.done(),
            self.total(),
            self.done(),
            self.partition.loads.len(),
        );
        for (id, state, owner) in self.not_done() {
            let _ = writeln!(out, "- `{id}` ({}, shard {owner})", state_word(state));
        }
        out.push('\n');
        out
    }
}

fn state_word(state: CellState) -> &'static str {
    match state {
        CellState::Done => "done",
        CellState::Missing => "missing",
        CellState::Stale => "stale",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(costs: &[f64]) -> Vec<Unit> {
        costs
            .iter()
            .enumerate()
            .map(|(i, &cost)| Unit {
                id: format!("cell-{i:02}"),
                cost,
            })
            .collect()
    }

    #[test]
    fn shards_parse_and_refuse_with_the_flag_named() {
        let shard: Shard = "3/8".parse().unwrap();
        assert_eq!((shard.index(), shard.count()), (3, 8));
        assert_eq!(shard.to_string(), "3/8");
        for (text, message) in [
            (
                "0/4",
                "--shard: 0/4: the shard I of N must satisfy 1 <= I <= N",
            ),
            (
                "5/4",
                "--shard: 5/4: the shard I of N must satisfy 1 <= I <= N",
            ),
            (
                "1/0",
                "--shard: 1/0: the shard I of N must satisfy 1 <= I <= N",
            ),
            (
                "3",
                "--shard: `3` is not I/N (shard I of N, 1-based, e.g. 3/8)",
            ),
            (
                "a/b",
                "--shard: `a/b` is not I/N (shard I of N, 1-based, e.g. 3/8)",
            ),
        ] {
            assert_eq!(text.parse::<Shard>().unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn longest_first_to_the_least_loaded() {
        // By cost: 7 -> 1, 5 -> 2, 4 -> 2 (5 < 7), the 3 of cell-00 -> 1 (7 < 9), the
        // 3 of cell-05 -> 2 (9 < 10), 1 -> 1 (10 < 12).
        let grid = units(&[3.0, 5.0, 1.0, 7.0, 4.0, 3.0]);
        let p = Partition::new(&grid, 2);
        let owners: Vec<usize> = (0..grid.len()).map(|i| p.owner(i).index()).collect();
        assert_eq!(owners, [1, 2, 1, 1, 2, 2]);
        assert_eq!((p.load(1), p.load(2)), (11.0, 12.0));
        // Counting alone would give each shard three cells; by cost the loads are
        // within one cell of each other.
        assert_eq!(p.units_of(Shard::new(1, 2).unwrap()), [0, 2, 3]);
    }

    #[test]
    fn every_cell_has_exactly_one_owner_for_any_count() {
        // Costs with repeats (ties broken by id) and a zero.
        let grid = units(&[
            90.0, 40.0, 40.0, 40.0, 40.0, 12.0, 12.0, 12.0, 70.0, 0.0, 40.0, 12.0, 5.0,
        ]);
        let total: f64 = grid.iter().map(|u| u.cost).sum();
        for count in 1..=16 {
            let p = Partition::new(&grid, count);
            let mut seen = vec![0; grid.len()];
            for index in 1..=count {
                for i in p.units_of(Shard::new(index, count).unwrap()) {
                    seen[i] += 1;
                    assert_eq!(p.owner(i).index(), index);
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "count {count}: {seen:?}");
            let loads: Vec<f64> = (1..=count).map(|s| p.load(s)).collect();
            assert_eq!(loads.iter().sum::<f64>(), total);
            // LPT's guarantee: no shard exceeds the mean load by more than the
            // largest unit.
            let largest = loads.iter().copied().fold(0.0, f64::max);
            assert!(largest <= total / count as f64 + 90.0, "{loads:?}");
        }
    }

    #[test]
    fn the_partition_ignores_the_order_units_are_listed_in() {
        let grid = units(&[3.0, 5.0, 1.0, 7.0, 4.0, 3.0, 3.0, 9.0]);
        let mut reversed = grid.clone();
        reversed.reverse();
        let a = Partition::new(&grid, 3);
        let b = Partition::new(&reversed, 3);
        for (i, unit) in grid.iter().enumerate() {
            let j = reversed.iter().position(|u| u.id == unit.id).unwrap();
            assert_eq!(a.owner(i), b.owner(j), "{}", unit.id);
        }
    }

    #[test]
    fn status_lists_each_missing_cell_with_its_owner() {
        let grid = units(&[7.0, 5.0, 3.0]);
        let status = GridStatus::new(
            grid,
            vec![CellState::Done, CellState::Missing, CellState::Stale],
            2,
        );
        assert!(!status.is_complete());
        assert_eq!(
            status.text(),
            "3 cells: 1 done, 2 missing (1 of them stale: a file from other settings or \
             another build, recomputed when its shard runs)\n\
             shard 1/2: 1 cell, 1 done, 0 missing (expected cost 7)\n\
             shard 2/2: 2 cells, 0 done, 2 missing (expected cost 8)\n\
             missing cell-01: shard 2/2\n\
             stale cell-02: shard 2/2\n"
        );
        assert!(
            status
                .markdown()
                .contains("- `cell-01` (missing, shard 2/2)\n")
        );
        let complete = GridStatus::new(units(&[1.0]), vec![CellState::Done], 1);
        assert_eq!(complete.markdown(), "");
    }
}
