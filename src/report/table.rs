//! Result tables: built column by column, written as CSV and Parquet through polars,
//! and rendered as Markdown for reports and the terminal.
//!
//! Output is deterministic: the same table gives byte-identical files, so rerunning
//! an experiment with the same seed can be checked with `cmp`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use polars::prelude::{Column as PlColumn, CsvWriter, DataFrame, ParquetWriter, SerWriter};

use super::atomic;
use crate::error::{Error, Result};

/// One column of values.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Str(v) => v.len(),
        }
    }

    fn cell(&self, row: usize) -> String {
        match self {
            Column::F64(v) => format_float(v[row]),
            Column::I64(v) => v[row].to_string(),
            Column::Bool(v) => v[row].to_string(),
            Column::Str(v) => v[row].clone(),
        }
    }

    fn to_polars(&self, name: &str) -> PlColumn {
        match self {
            Column::F64(v) => PlColumn::new(name.into(), v.as_slice()),
            Column::I64(v) => PlColumn::new(name.into(), v.as_slice()),
            Column::Bool(v) => PlColumn::new(name.into(), v.as_slice()),
            Column::Str(v) => PlColumn::new(name.into(), v.as_slice()),
        }
    }
}

/// Formats a float for humans: 5 significant digits, scientific outside [1e-3, 1e5).
pub fn format_float(x: f64) -> String {
    format_significant(x, 5)
}

/// Formats a float with `digits` significant digits (at least 1), trailing zeros
/// dropped, scientific outside [1e-3, 1e5): figure labels and legends use 4.
pub fn format_significant(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let digits = digits.max(1) as i32;
    let magnitude = x.abs();
    if x == 0.0 || (1e-3..1e5).contains(&magnitude) {
        let decimals = if x == 0.0 {
            0
        } else {
            (digits - 1 - magnitude.log10().floor() as i32).max(0) as usize
        };
        let text = format!("{x:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    } else {
        let precision = (digits - 1) as usize;
        format!("{x:.precision$e}")
    }
}

/// A table with named, equally long columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    names: Vec<String>,
    columns: Vec<Column>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a column (builder style). All columns must have the same length.
    pub fn with(mut self, name: impl Into<String>, column: Column) -> Self {
        self.push(name, column);
        self
    }

    /// Appends a column of floats (builder style).
    pub fn with_f64(self, name: impl Into<String>, values: Vec<f64>) -> Self {
        self.with(name, Column::F64(values))
    }

    /// Appends a column of integers (builder style).
    pub fn with_i64(self, name: impl Into<String>, values: Vec<i64>) -> Self {
        self.with(name, Column::I64(values))
    }

    /// Appends a column of booleans (builder style).
    pub fn with_bool(self, name: impl Into<String>, values: Vec<bool>) -> Self {
        self.with(name, Column::Bool(values))
    }

    /// Appends a column of strings (builder style).
    pub fn with_str(self, name: impl Into<String>, values: Vec<String>) -> Self {
        self.with(name, Column::Str(values))
    }

    /// Appends a column.
    ///
    /// Panics when its length differs from the existing columns': tables are built by
    /// the program, never from user input, so a mismatch is a bug.
    pub fn push(&mut self, name: impl Into<String>, column: Column) {
        if let Some(first) = self.columns.first() {
            // invariant: tables are assembled by maskscape itself, row counts agree.
            assert_eq!(first.len(), column.len(), "table columns differ in length");
        }
        self.names.push(name.into());
        self.columns.push(column);
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Column::len)
    }

    /// Column names in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.columns[i])
    }

    /// The float column called `name`.
    pub fn f64_column(&self, name: &str) -> Option<&[f64]> {
        match self.column(name)? {
            Column::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The columns called `names`, in that order (names not in the table are skipped).
    pub fn select(&self, names: &[&str]) -> Table {
        let mut table = Table::new();
        for name in names {
            if let Some(column) = self.column(name) {
                table.push(*name, column.clone());
            }
        }
        table
    }

    fn to_polars(&self) -> Result<DataFrame> {
        let columns = self
            .names
            .iter()
            .zip(&self.columns)
            .map(|(name, column)| column.to_polars(name))
            .collect();
        DataFrame::new(self.rows(), columns)
            .map_err(|e| Error::Numerical(format!("cannot build table: {e}")))
    }

    /// Writes the table as CSV (full float precision) to `path`, atomically.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut frame = self.to_polars()?;
        atomic::write_with(path, |w| {
            CsvWriter::new(w)
                .finish(&mut frame)
                .map_err(|e| Error::file(path, format!("cannot write CSV: {e}")))
        })
    }

    /// Writes the table as Parquet to `path`, atomically.
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        let mut frame = self.to_polars()?;
        atomic::write_with(path, |w| {
            ParquetWriter::new(w)
                .finish(&mut frame)
                .map(|_| ())
                .map_err(|e| Error::file(path, format!("cannot write Parquet: {e}")))
        })
    }

    /// Writes `stem.csv` and `stem.parquet`; returns both paths.
    pub fn write_both(&self, stem: &Path) -> Result<Vec<PathBuf>> {
        let csv = stem.with_extension("csv");
        let parquet = stem.with_extension("parquet");
        self.write_csv(&csv)?;
        self.write_parquet(&parquet)?;
        Ok(vec![csv, parquet])
    }

    /// The table as a GitHub Markdown table, floats with 5 significant digits.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.names.join(" | "));
        let _ = writeln!(
            out,
            "|{}|",
            self.names
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in 0..self.rows() {
            let cells: Vec<String> = self.columns.iter().map(|c| c.cell(row)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }

    /// The table aligned in plain-text columns, for the terminal.
    pub fn to_text(&self) -> String {
        let cells: Vec<Vec<String>> = (0..self.rows())
            .map(|r| self.columns.iter().map(|c| c.cell(r)).collect())
            .collect();
        let widths: Vec<usize> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                cells
                    .iter()
                    .map(|r| r[i].len())
                    .chain([n.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            row.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = line(&self.names);
        for row in &cells {
            out.push('\n');
            out.push_str(&line(row));
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    fn sample() -> Table {
        Table::new()
            .with_f64("p", vec![1.0, 0.05])
            .with_i64("trials", vec![20, 20])
            .with_str("note", vec!["".into(), "p d = n".into()])
    }

    #[test]
    fn csv_and_parquet_are_written_and_deterministic() -> TestResult {
        let dir = tempfile::tempdir()?;
        let paths = sample().write_both(&dir.path().join("t"))?;
        let csv = std::fs::read_to_string(&paths[0])?;
        assert_eq!(csv, "p,trials,note\n1.0,20,\"\"\n0.05,20,p d = n\n");
        let first = std::fs::read(&paths[1])?;
        sample().write_parquet(&paths[1])?;
        assert_eq!(first, std::fs::read(&paths[1])?);
        assert_eq!(&first[..4], b"PAR1");
        Ok(())
    }

    #[test]
    fn markdown_formats_floats() {
        let md = sample().to_markdown();
        assert!(md.contains("| 0.05 | 20 | p d = n |"), "{md}");
        let narrow = sample().select(&["note", "p", "absent"]);
        assert_eq!(narrow.names(), ["note", "p"]);
        assert_eq!(narrow.f64_column("p"), Some(&[1.0, 0.05][..]));
        assert_eq!(format_float(62888.4), "62888");
        assert_eq!(format_float(0.0015903), "0.0015903");
        assert_eq!(format_float(1.5e-7), "1.5000e-7");
    }

    #[test]
    fn significant_digits_for_labels() {
        assert_eq!(format_significant(-0.571_428_571, 4), "-0.5714");
        assert_eq!(format_significant(2.024_712, 4), "2.025");
        assert_eq!(format_significant(62_888.4, 4), "62888");
        assert_eq!(format_significant(1.5e-7, 4), "1.500e-7");
        assert_eq!(format_significant(-0.451_14, 3), "-0.451");
        assert_eq!(format_significant(0.0, 4), "0");
    }
}
