//! Reading a dataset file into named columns, through polars.
//!
//! Polars stays inside this module: the rest of the data layer sees text columns
//! (`Vec<Option<String>>`) and label columns (`Vec<Option<LabelValue>>`).

use std::fs::File;
use std::io::{Cursor, Read};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use polars::prelude::{
    CsvParseOptions, CsvReadOptions, DataFrame, DataType, JsonFormat, JsonReader, ParquetReader,
    SerReader, Series,
};

use crate::error::{Error, Result};

/// The on-disk formats a dataset can come in, chosen by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`; `.json` unless it starts with `[`).
    JsonLines,
    /// One JSON array of objects (`.json` whose first character is `[`).
    JsonArray,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
    /// Tab-separated values with a header row (`.tsv`, as GLUE ships them).
    Tsv,
    /// Apache Parquet (`.parquet`, as the HuggingFace hub exports datasets).
    Parquet,
}

impl Format {
    /// The format of the file at `path`, from its extension (and, for `.json`, its
    /// first non-blank byte: HuggingFace's `to_json` writes JSON lines under `.json`).
    pub fn of(path: &Path) -> Result<Format> {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "jsonl" | "ndjson" => Ok(Format::JsonLines),
            "json" => {
                // The first non-blank byte decides; a short prefix is enough to see it.
                let mut head = Vec::new();
                File::open(path)
                    .and_then(|f| f.take(4096).read_to_end(&mut head))
                    .map_err(|e| Error::io(path, e))?;
                let first = head.iter().find(|b| !b.is_ascii_whitespace());
                Ok(if first == Some(&b'[') {
                    Format::JsonArray
                } else {
                    Format::JsonLines
                })
            }
            "csv" => Ok(Format::Csv),
            "tsv" => Ok(Format::Tsv),
            "parquet" => Ok(Format::Parquet),
            _ => Err(Error::file(
                path,
                "unknown dataset format: expected .jsonl, .json, .csv, .tsv, .parquet \
                 or a tokenized .safetensors",
            )),
        }
    }

    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            Format::JsonLines => "JSON lines",
            Format::JsonArray => "JSON",
            Format::Csv => "CSV",
            Format::Tsv => "TSV",
            Format::Parquet => "Parquet",
        }
    }
}

/// A label cell as stored in the file, before a task maps it to a candidate.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelValue {
    /// An integer class id (GLUE/SuperGLUE store labels this way; -1 marks test rows).
    Int(i64),
    /// A boolean (google/boolq's `answer`).
    Bool(bool),
    /// A class name or a candidate word (`"positive"`, `"entailment"`, `"great"`).
    Text(String),
}

impl std::fmt::Display for LabelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelValue::Int(v) => write!(f, "{v}"),
            LabelValue::Bool(v) => write!(f, "{v}"),
            LabelValue::Text(v) => write!(f, "\"{v}\""),
        }
    }
}

/// A dataset file read into memory: named columns of equal length.
pub struct RawTable {
    path: PathBuf,
    format: Format,
    frame: DataFrame,
}

impl RawTable {
    /// Reads the file at `path` in the format its extension names.
    ///
    /// Schema inference looks at every row (not polars' default first 100), so a
    /// column that is null at the top of a file still gets its real type.
    pub fn read(path: &Path) -> Result<RawTable> {
        let format = Format::of(path)?;
        let frame = match format {
            Format::JsonLines | Format::JsonArray => read_json(path, format)?,
            Format::Csv => read_delimited(path, b',')?,
            Format::Tsv => read_delimited(path, b'\t')?,
            Format::Parquet => {
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                ParquetReader::new(file)
                    .finish()
                    .map_err(|e| Error::file(path, format!("cannot read as Parquet: {e}")))?
            }
        };
        Ok(RawTable {
            path: path.to_path_buf(),
            format,
            frame,
        })
    }

    /// The file this table was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format it was read as.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.frame.height()
    }

    /// Column names in file order.
    pub fn column_names(&self) -> Vec<String> {
        self.frame
            .get_column_names()
            .into_iter()
            .map(|n| n.to_string())
            .collect()
    }

    /// Whether a column called `name` exists.
    pub fn has_column(&self, name: &str) -> bool {
        self.frame.column(name).is_ok()
    }

    /// The column `name` as text (numbers and booleans are written out as text).
    pub fn text_column(&self, name: &str) -> Result<Vec<Option<String>>> {
        let series = self.series(name)?;
        let text = series.cast(&DataType::String).map_err(|e| {
            Error::file(
                &self.path,
                format!("column `{name}` cannot be read as text: {e}"),
            )
        })?;
        let chunked = text.str().map_err(|e| {
            Error::file(
                &self.path,
                format!("column `{name}` cannot be read as text: {e}"),
            )
        })?;
        Ok(chunked.iter().map(|v| v.map(str::to_owned)).collect())
    }

    /// The column `name` as labels: integers, booleans or text. Floats are accepted
    /// when they hold whole numbers (a CSV column written as `1.0`).
    pub fn label_column(&self, name: &str) -> Result<Vec<Option<LabelValue>>> {
        let series = self.series(name)?;
        let bad = |e: polars::prelude::PolarsError| {
            Error::file(&self.path, format!("column `{name}`: {e}"))
        };
        let dtype = series.dtype().clone();
        if dtype == DataType::Boolean {
            let values = series.bool().map_err(bad)?;
            return Ok(values.iter().map(|v| v.map(LabelValue::Bool)).collect());
        }
        if dtype.is_integer() {
            let ints = series.cast(&DataType::Int64).map_err(bad)?;
            let values = ints.i64().map_err(bad)?;
            return Ok(values.iter().map(|v| v.map(LabelValue::Int)).collect());
        }
        if dtype.is_float() {
            let floats = series.cast(&DataType::Float64).map_err(bad)?;
            let values = floats.f64().map_err(bad)?;
            return values
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    None => Ok(None),
                    Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => {
                        Ok(Some(LabelValue::Int(x as i64)))
                    }
                    Some(x) => Err(Error::file(
                        &self.path,
                        format!(
                            "row {}: label {x} in column `{name}` is not a class id",
                            i + 1
                        ),
                    )),
                })
                .collect();
        }
        Ok(self
            .text_column(name)?
            .into_iter()
            .map(|v| v.map(LabelValue::Text))
            .collect())
    }

    fn series(&self, name: &str) -> Result<&Series> {
        let column = self.frame.column(name).map_err(|_| {
            Error::file(
                &self.path,
                format!(
                    "no column `{name}`; columns present: {}",
                    self.column_names().join(", ")
                ),
            )
        })?;
        Ok(column.as_materialized_series())
    }
}

fn read_json(path: &Path, format: Format) -> Result<DataFrame> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // Polars refuses an empty JSON-lines file; to us it is an empty dataset.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DataFrame::empty());
    }
    let json_format = if format == Format::JsonArray {
        JsonFormat::Json
    } else {
        JsonFormat::JsonLines
    };
    let all_rows: Option<NonZeroUsize> = None;
    JsonReader::new(Cursor::new(&bytes))
        .with_json_format(json_format)
        .infer_schema_len(all_rows)
        .finish()
        .map_err(|e| {
            if format == Format::JsonLines
                && let Some(message) = first_bad_json_line(&bytes)
            {
                return Error::file(path, message);
            }
            Error::file(path, format!("cannot read as {}: {e}", format.name()))
        })
}

/// Polars' JSON-lines errors do not say where the problem is; this finds the first
/// line that is not a JSON object and describes it with its 1-based line number.
fn first_bad_json_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    text.lines().enumerate().find_map(|(i, line)| {
        if line.trim().is_empty() {
            return None;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Err(e) => Some(format!("line {}: malformed JSON ({e})", i + 1)),
            Ok(serde_json::Value::Object(_)) => None,
            Ok(_) => Some(format!("line {}: expected a JSON object", i + 1)),
        }
    })
}

fn read_delimited(path: &Path, separator: u8) -> Result<DataFrame> {
    let what = if separator == b'\t' { "TSV" } else { "CSV" };
    let parse = CsvParseOptions::default().with_separator(separator);
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .with_raise_if_empty(false)
        .with_parse_options(parse)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|reader| reader.finish())
        .map_err(|e| Error::file(path, format!("cannot read as {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestResult, write_text};

    #[test]
    fn json_lines_keep_types_and_order() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_text(
            dir.path(),
            "d.jsonl",
            "{\"sentence\": \"fine\", \"label\": 1}\n\n{\"sentence\": \"dull\", \"label\": 0}\n",
        )?;
        let table = RawTable::read(&path)?;
        assert_eq!(table.format(), Format::JsonLines);
        assert_eq!(table.rows(), 2);
        assert_eq!(
            table.text_column("sentence")?,
            vec![Some("fine".to_string()), Some("dull".to_string())]
        );
        assert_eq!(
            table.label_column("label")?,
            vec![Some(LabelValue::Int(1)), Some(LabelValue::Int(0))]
        );
        Ok(())
    }

    #[test]
    fn malformed_json_line_is_named_by_number() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_text(
            dir.path(),
            "d.jsonl",
            "{\"sentence\": \"fine\", \"label\": 1}\n{\"sentence\": \"dull\", \"label\": 0\n",
        )?;
        let err = RawTable::read(&path)
            .err()
            .ok_or("malformed JSON was accepted")?
            .to_string();
        assert!(err.contains("line 2: malformed JSON"), "{err}");
        Ok(())
    }

    #[test]
    fn json_extension_accepts_lines_and_arrays() -> TestResult {
        let dir = tempfile::tempdir()?;
        let lines = write_text(
            dir.path(),
            "a.json",
            "{\"text\": \"x\"}\n{\"text\": \"y\"}\n",
        )?;
        let array = write_text(
            dir.path(),
            "b.json",
            "[{\"text\": \"x\"}, {\"text\": \"y\"}]",
        )?;
        assert_eq!(Format::of(&lines)?, Format::JsonLines);
        assert_eq!(Format::of(&array)?, Format::JsonArray);
        for path in [lines, array] {
            let table = RawTable::read(&path)?;
            assert_eq!(
                table.text_column("text")?,
                vec![Some("x".to_string()), Some("y".to_string())]
            );
        }
        Ok(())
    }

    #[test]
    fn labels_as_booleans_text_and_whole_floats() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_text(
            dir.path(),
            "d.csv",
            "answer,name,score\ntrue,positive,1.0\nfalse,negative,0.0\n",
        )?;
        let table = RawTable::read(&path)?;
        assert_eq!(
            table.label_column("answer")?,
            vec![Some(LabelValue::Bool(true)), Some(LabelValue::Bool(false))]
        );
        assert_eq!(
            table.label_column("name")?[0],
            Some(LabelValue::Text("positive".into()))
        );
        assert_eq!(
            table.label_column("score")?,
            vec![Some(LabelValue::Int(1)), Some(LabelValue::Int(0))]
        );
        Ok(())
    }

    #[test]
    fn tsv_and_missing_column_message() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_text(dir.path(), "d.tsv", "sentence\tlabel\na, b\t1\n")?;
        let table = RawTable::read(&path)?;
        assert_eq!(table.text_column("sentence")?, vec![Some("a, b".into())]);
        let err = table
            .text_column("text")
            .err()
            .ok_or("a missing column was found")?
            .to_string();
        assert!(
            err.contains("no column `text`; columns present: sentence, label"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn unknown_extension_is_refused() -> TestResult {
        let err = Format::of(Path::new("data.txt"))
            .err()
            .ok_or("data.txt got a format")?
            .to_string();
        assert!(err.contains("unknown dataset format"), "{err}");
        Ok(())
    }
}
