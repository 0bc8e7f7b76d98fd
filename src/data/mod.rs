//! Datasets for the probes: files (JSON lines, CSV/TSV, Parquet, or already
//! tokenized safetensors) turned into text examples by a task, then into token ids.
//!
//! - [`table`]: reading a file into named columns (polars).
//! - [`task`]: the paper's prompts and label words, `lm`, and custom templates.
//! - [`tokenize`]: id-level examples and the truncation policy.
//! - [`pretokenized`]: safetensors with `input_ids`, `attention_mask`, `labels`.
//! - [`train_tokenizer`]: byte-level BPE training for small bundled models.
//!
//! [`load_for_model`] is the one call a probe needs: file, task, sampling and model
//! folder in, token ids that fit the model out.

pub mod pretokenized;
pub mod table;
pub mod task;
pub mod tokenize;
pub mod train_tokenizer;

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;

pub use pretokenized::read_pretokenized;
pub use table::{Format, LabelValue, RawTable};
pub use task::{ClassificationText, LmText, TASK_NAMES, Task, TextExample};
pub use tokenize::{
    ClassificationExample, Dataset, LmExample, OPT_BOS_ID, TextEncoder, Tokenized,
    tokenize_classification, tokenize_lm,
};

use crate::error::{Error, Result};
use crate::model::OptConfig;
use crate::model::tokenizer::OptTokenizer;
use crate::rng;

/// What to load: a file, how to read its rows, and which of them to keep.
#[derive(Clone, Debug)]
pub struct DataSpec {
    pub path: PathBuf,
    /// How rows become examples; `None` only for tokenized `.safetensors` files.
    pub task: Option<Task>,
    /// `(field, column)` pairs overriding the task's default column names.
    pub columns: Vec<(String, String)>,
    /// Keep at most this many examples, drawn at random with `seed`.
    pub max_examples: Option<usize>,
    pub seed: u64,
}

impl DataSpec {
    /// A spec that reads every row of `path` with `task` and the default columns.
    pub fn new(path: impl Into<PathBuf>, task: Task) -> DataSpec {
        DataSpec {
            path: path.into(),
            task: Some(task),
            columns: Vec::new(),
            max_examples: None,
            seed: 0,
        }
    }

    /// Checks the flags that need no file: fails fast, before a large file is read.
    fn check(&self) -> Result<()> {
        if self.max_examples == Some(0) {
            return Err(Error::arg("--max-examples", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether the file is already tokenized (a `.safetensors` file).
    pub fn is_pretokenized(&self) -> bool {
        is_safetensors(&self.path)
    }
}

/// A dataset of text examples, all of one kind.
#[derive(Clone, Debug, PartialEq)]
pub enum TextDataset {
    Classification(Vec<ClassificationText>),
    Lm(Vec<LmText>),
}

impl TextDataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            TextDataset::Classification(v) => v.len(),
            TextDataset::Lm(v) => v.len(),
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many examples have each candidate as gold (classification only).
    pub fn gold_counts(&self) -> Option<Vec<usize>> {
        let TextDataset::Classification(examples) = self else {
            return None;
        };
        let classes = examples.first().map_or(0, |e| e.candidates.len());
        let mut counts = vec![0; classes];
        for example in examples {
            counts[example.gold] += 1;
        }
        Some(counts)
    }

    /// Tokenizes every example into sequences of at most `max_len` tokens (see
    /// [`tokenize_classification`] and [`tokenize_lm`] for the truncation policy).
    pub fn tokenize(&self, encoder: &dyn TextEncoder, max_len: usize) -> Result<Tokenized> {
        match self {
            TextDataset::Classification(v) => tokenize_classification(v, encoder, max_len),
            TextDataset::Lm(v) => tokenize_lm(v, encoder, max_len),
        }
    }
}

/// Text examples read from a file, with what was read.
#[derive(Clone, Debug)]
pub struct TextData {
    pub examples: TextDataset,
    pub format: Format,
    /// Rows in the file, before sampling.
    pub rows_in_file: usize,
    /// `(field, column)`: the column that fed each field, the label included.
    pub columns: Vec<(String, String)>,
    /// Rows dropped because their text was empty (language modelling only).
    pub empty_rows_skipped: usize,
}

/// Token-id examples ready for the network, with what was read.
#[derive(Clone, Debug)]
pub struct LoadedData {
    pub dataset: Dataset,
    /// Examples shortened to fit the model's positions.
    pub truncated: usize,
    /// Rows in the file, before sampling.
    pub rows_in_file: usize,
    /// `(field, column)` pairs used (empty for tokenized files).
    pub columns: Vec<(String, String)>,
}

/// Loads `spec` as token ids: text files through the task and `encoder` (sequences
/// of at most `max_len` tokens: the model's `max_position_embeddings`), tokenized
/// `.safetensors` files as they are (rows longer than `max_len` are an error, since
/// someone else's tokenization is not ours to cut).
pub fn load(
    spec: &DataSpec,
    encoder: Option<&dyn TextEncoder>,
    max_len: usize,
) -> Result<LoadedData> {
    spec.check()?;
    if spec.is_pretokenized() {
        if let Some(task) = &spec.task
            && task.is_classification()
        {
            return Err(Error::arg(
                "--task",
                format!(
                    "{} needs text data; a tokenized .safetensors file holds language-modelling \
                     rows (use --task lm or leave --task out)",
                    task.name()
                ),
            ));
        }
        if !spec.columns.is_empty() {
            return Err(Error::arg(
                "--column",
                "not used with a tokenized .safetensors file",
            ));
        }
        let rows = read_pretokenized(&spec.path)?;
        let rows_in_file = rows.len();
        let keep = sample_indices(rows_in_file, spec.max_examples, spec.seed)?;
        let rows: Vec<LmExample> = keep.into_iter().map(|i| rows[i].clone()).collect();
        if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.ids.len() > max_len) {
            return Err(Error::file(
                &spec.path,
                format!(
                    "example {}: {} tokens exceed the model's {max_len} positions",
                    i + 1,
                    row.ids.len()
                ),
            ));
        }
        return Ok(LoadedData {
            dataset: Dataset::Lm(rows),
            truncated: 0,
            rows_in_file,
            columns: Vec::new(),
        });
    }
    let encoder = encoder.ok_or_else(|| {
        Error::file(
            &spec.path,
            "is text: tokenizing it needs the model's tokenizer (vocab.json + merges.txt or \
             tokenizer.json)",
        )
    })?;
    let text = load_text(spec)?;
    let tokenized = text.examples.tokenize(encoder, max_len)?;
    Ok(LoadedData {
        dataset: tokenized.dataset,
        truncated: tokenized.truncated,
        rows_in_file: text.rows_in_file,
        columns: text.columns,
    })
}

/// Loads `spec` for the OPT model in `model_dir` (with its `config`): text is
/// tokenized by the model's tokenizer (`tokenizer.json`, or `vocab.json` +
/// `merges.txt`, in `model_dir`) into sequences that fit `max_position_embeddings`;
/// tokenized `.safetensors` data needs no tokenizer. Every token id is checked
/// against the model's `vocab_size`.
pub fn load_for_model(spec: &DataSpec, model_dir: &Path, config: &OptConfig) -> Result<LoadedData> {
    spec.check()?;
    let tokenizer = if spec.is_pretokenized() {
        None
    } else {
        let tokenizer = OptTokenizer::from_dir(model_dir)?;
        tokenizer.check_against(config)?;
        Some(tokenizer)
    };
    let encoder = tokenizer.as_ref().map(|t| t as &dyn TextEncoder);
    let loaded = load(spec, encoder, config.max_position_embeddings)?;
    loaded.dataset.check_vocab(config.vocab_size)?;
    Ok(loaded)
}

/// Reads a text dataset (JSON lines, JSON, CSV, TSV or Parquet) and renders its rows
/// with the spec's task, then keeps `max_examples` of them (see [`sample_indices`]).
///
/// Every row is validated, sampled or not, so a bad label anywhere is reported. Each
/// field's column is the one given in `spec.columns`, else the first of the task's
/// defaults present in the file (e.g. SST-2's text is `sentence`, else `text`).
pub fn load_text(spec: &DataSpec) -> Result<TextData> {
    spec.check()?;
    let path = spec.path.as_path();
    if is_safetensors(path) {
        return Err(Error::file(
            path,
            "is already tokenized: it has no text to render with a task",
        ));
    }
    let task = spec.task.as_ref().ok_or_else(|| {
        Error::arg(
            "--task",
            format!("required for the text file {}", path.display()),
        )
    })?;
    check_column_overrides(task, &spec.columns)?;
    let table = RawTable::read(path)?;
    if table.rows() == 0 {
        return Err(Error::file(path, "the dataset is empty (no rows)"));
    }
    let mut columns = Vec::new();
    let mut texts = Vec::new();
    for field in task.text_fields() {
        let column = resolve_column(&table, task, field, &spec.columns)?;
        texts.push(table.text_column(&column)?);
        columns.push((field.role.clone(), column));
    }
    let labels = match task.label_field() {
        Some(field) => {
            let column = resolve_column(&table, task, field, &spec.columns)?;
            let labels = table.label_column(&column)?;
            columns.push((field.role.clone(), column));
            Some(labels)
        }
        None => None,
    };
    let row_error =
        |row: usize, message: String| Error::file(path, format!("row {}: {message}", row + 1));

    let mut classification = Vec::new();
    let mut lm = Vec::new();
    let mut empty_rows_skipped = 0;
    for row in 0..table.rows() {
        let mut values = Vec::with_capacity(texts.len());
        // `columns` starts with the text fields, in the order of `texts`.
        for ((_, name), column) in columns.iter().zip(&texts) {
            match &column[row] {
                Some(text) => values.push(text.as_str()),
                None if !task.is_classification() => values.push(""),
                None => return Err(row_error(row, format!("column `{name}` is null"))),
            }
        }
        let label = labels.as_ref().and_then(|l| l[row].as_ref());
        match task.render(&values, label).map_err(|m| row_error(row, m))? {
            TextExample::Classification(example) => classification.push(example),
            TextExample::Lm(example) if example.text.is_empty() => empty_rows_skipped += 1,
            TextExample::Lm(example) => lm.push(example),
        }
    }
    let examples = if task.is_classification() {
        let keep = sample_indices(classification.len(), spec.max_examples, spec.seed)?;
        TextDataset::Classification(
            keep.into_iter()
                .map(|i| classification[i].clone())
                .collect(),
        )
    } else {
        if lm.is_empty() {
            return Err(Error::file(
                path,
                "the dataset is empty (every text is blank)",
            ));
        }
        let keep = sample_indices(lm.len(), spec.max_examples, spec.seed)?;
        TextDataset::Lm(keep.into_iter().map(|i| lm[i].clone()).collect())
    };
    Ok(TextData {
        examples,
        format: table.format(),
        rows_in_file: table.rows(),
        columns,
        empty_rows_skipped,
    })
}

/// Parses one `--column FIELD=NAME` flag.
pub fn parse_column_flag(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((field, column)) if !field.trim().is_empty() && !column.trim().is_empty() => {
            Ok((field.trim().to_string(), column.trim().to_string()))
        }
        _ => Err(Error::arg(
            "--column",
            format!("`{text}` is not FIELD=COLUMN (e.g. sentence=review)"),
        )),
    }
}

/// The rows kept by `--max-examples`: all of them when `max` is `None` or at least
/// `total`; otherwise `max` rows drawn uniformly without replacement with `seed`,
/// returned in file order. The draw is a prefix of one seeded permutation, so with
/// the same seed a larger `max` keeps a superset of a smaller one's rows.
pub fn sample_indices(total: usize, max: Option<usize>, seed: u64) -> Result<Vec<usize>> {
    /// The stream reserved for dataset sampling, apart from every other use of a seed.
    const SAMPLING_STREAM: u64 = 0x6461_7461_0001;
    match max {
        Some(0) => Err(Error::arg("--max-examples", "must be at least 1")),
        Some(max) if max < total => {
            let mut order: Vec<usize> = (0..total).collect();
            order.shuffle(&mut rng::stream(seed, SAMPLING_STREAM));
            let mut keep = order[..max].to_vec();
            keep.sort_unstable();
            Ok(keep)
        }
        _ => Ok((0..total).collect()),
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

fn check_column_overrides(task: &Task, columns: &[(String, String)]) -> Result<()> {
    let fields: Vec<&str> = task
        .text_fields()
        .iter()
        .chain(task.label_field())
        .map(|f| f.role.as_str())
        .collect();
    for (field, _) in columns {
        if !fields.contains(&field.as_str()) {
            return Err(Error::arg(
                "--column",
                format!(
                    "`{field}` is not a field of task {} (fields: {})",
                    task.name(),
                    fields.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn resolve_column(
    table: &RawTable,
    task: &Task,
    field: &task::Field,
    overrides: &[(String, String)],
) -> Result<String> {
    let present = || table.column_names().join(", ");
    if let Some((_, column)) = overrides.iter().rev().find(|(f, _)| *f == field.role) {
        if table.has_column(column) {
            return Ok(column.clone());
        }
        return Err(Error::file(
            table.path(),
            format!(
                "no column `{column}` (given by --column {}={column}); columns present: {}",
                field.role,
                present()
            ),
        ));
    }
    if let Some(column) = field.default_columns.iter().find(|c| table.has_column(c)) {
        return Ok(column.clone());
    }
    Err(Error::file(
        table.path(),
        format!(
            "task {} needs a `{}` column (looked for: {}); columns present: {} (name it with \
             --column {}=COLUMN)",
            task.name(),
            field.role,
            field.default_columns.join(", "),
            present(),
            field.role
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestResult, write_text};

    #[test]
    fn sampling_is_seeded_sorted_and_nested() -> TestResult {
        let a = sample_indices(100, Some(10), 7)?;
        assert_eq!(a, sample_indices(100, Some(10), 7)?);
        assert_ne!(a, sample_indices(100, Some(10), 8)?);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        let b = sample_indices(100, Some(20), 7)?;
        assert!(a.iter().all(|i| b.contains(i)));
        assert_eq!(sample_indices(3, Some(5), 0)?, vec![0, 1, 2]);
        assert!(sample_indices(3, Some(0), 0).is_err());
        Ok(())
    }

    #[test]
    fn hub_column_variants_load_without_flags() -> TestResult {
        let dir = tempfile::tempdir()?;
        let glue_rte = write_text(
            dir.path(),
            "rte.jsonl",
            "{\"sentence1\": \"A cat sat.\", \"sentence2\": \"A cat exists.\", \"label\": 0, \"idx\": 0}\n",
        )?;
        let data = load_text(&DataSpec::new(&glue_rte, Task::new("rte", None, None)?))?;
        assert_eq!(
            data.columns,
            vec![
                ("premise".to_string(), "sentence1".to_string()),
                ("hypothesis".to_string(), "sentence2".to_string()),
                ("label".to_string(), "label".to_string())
            ]
        );
        let google_boolq = write_text(
            dir.path(),
            "boolq.jsonl",
            "{\"question\": \"is it\", \"answer\": false, \"passage\": \"It is not.\"}\n",
        )?;
        let data = load_text(&DataSpec::new(
            &google_boolq,
            Task::new("boolq", None, None)?,
        ))?;
        let TextDataset::Classification(examples) = data.examples else {
            panic!("classification expected")
        };
        assert_eq!(examples[0].prompt, "It is not. Is it?\n");
        assert_eq!(examples[0].gold, 0);
        Ok(())
    }

    #[test]
    fn overrides_missing_columns_and_bad_rows() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_text(
            dir.path(),
            "d.csv",
            "review,stars\nGood.,1\nBad.,0\nOdd.,2\n",
        )?;
        let sst2 = Task::new("sst2", None, None)?;
        let err = load_text(&DataSpec::new(&path, sst2.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "task sst2 needs a `sentence` column (looked for: sentence, text); columns \
                 present: review, stars (name it with --column sentence=COLUMN)"
            ),
            "{err}"
        );
        let mut spec = DataSpec::new(&path, sst2);
        spec.columns = vec![
            parse_column_flag("sentence=review")?,
            parse_column_flag("label = stars")?,
        ];
        let err = load_text(&spec).unwrap_err().to_string();
        assert!(
            err.contains("d.csv: row 3: label 2 is not one of the candidates"),
            "{err}"
        );
        spec.columns.push(("premise".into(), "review".into()));
        let err = load_text(&spec).unwrap_err().to_string();
        assert_eq!(
            err,
            "--column: `premise` is not a field of task sst2 (fields: sentence, label)"
        );
        assert!(parse_column_flag("sentence").is_err());
        Ok(())
    }

    #[test]
    fn null_text_is_named_by_row_and_column() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_text(
            dir.path(),
            "d.jsonl",
            "{\"sentence\": \"Fine.\", \"label\": 1}\n{\"sentence\": null, \"label\": 0}\n",
        )?;
        let err = load_text(&DataSpec::new(&path, Task::new("sst2", None, None)?))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("d.jsonl: row 2: column `sentence` is null"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn lm_skips_blank_rows_and_empty_files_are_errors() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_text(
            dir.path(),
            "w.jsonl",
            "{\"text\": \"\"}\n{\"text\": \" Hello . \"}\n",
        )?;
        let data = load_text(&DataSpec::new(&path, Task::new("lm", None, None)?))?;
        assert_eq!(data.empty_rows_skipped, 1);
        assert_eq!(
            data.examples,
            TextDataset::Lm(vec![LmText {
                text: "Hello .".into()
            }])
        );
        let empty = write_text(dir.path(), "e.csv", "sentence,label\n")?;
        let err = load_text(&DataSpec::new(&empty, Task::new("sst2", None, None)?))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("e.csv: the dataset is empty (no rows)"),
            "{err}"
        );
        Ok(())
    }
}
