//! Writing a sweep's outputs: tables (CSV and Parquet), figures (SVG and PNG) and
//! the run manifest, each file atomically.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::figures::Figure;
use super::sweep::SweepResult;
use super::tables;
use crate::error::Result;
use crate::report::Manifest;

impl SweepResult {
    /// The full parameter set as the sweep used it: the spec, the resolved ratios and
    /// the configurations (n, d, r, sigma) after defaults and data loading.
    pub fn parameters(&self) -> serde_json::Value {
        let configs: Vec<_> = self
            .configs
            .iter()
            .map(|c| json!({ "n": c.n, "d": c.d, "r": c.r, "sigma": c.sigma }))
            .collect();
        json!({ "sweep": self.spec, "ratios": self.ratios, "configs": configs })
    }
}

/// Writes every table of the sweep as `dir/NAME.csv` and `dir/NAME.parquet`.
pub fn write_tables(result: &SweepResult, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, table) in tables::all_tables(result) {
        written.extend(table.write_both(&dir.join(name))?);
    }
    Ok(written)
}

/// Writes the figures `figures` as `dir/<stem(figure)>.svg` and `.png`.
pub fn write_figures(
    result: &SweepResult,
    figures: &[Figure],
    dir: &Path,
    stem: impl Fn(Figure) -> String,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for &figure in figures {
        written.extend(figure.save(result, &dir.join(stem(figure)))?);
    }
    Ok(written)
}

/// Writes a complete run folder: every table, every figure the sweep's part can
/// draw, and `manifest.json` (seed, parameters, the data file with its hash, the
/// outputs). Returns the files written, manifest last.
pub fn write_run(result: &SweepResult, dir: &Path, command: &str) -> Result<Vec<PathBuf>> {
    let mut written = write_tables(result, dir)?;
    let figures = Figure::for_part(result.spec.part);
    written.extend(write_figures(result, &figures, dir, |f| {
        f.name().to_string()
    })?);
    let mut manifest = Manifest::new(command, Some(result.spec.seed), &result.parameters())?;
    if let Some(path) = &result.spec.x {
        manifest.add_input("data", path)?;
    }
    manifest.add_outputs(&written);
    manifest.write(dir)?;
    written.push(dir.join("manifest.json"));
    Ok(written)
}
