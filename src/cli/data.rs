//! The dataset flags every data-consuming command shares ([`DataArgs`]), and
//! `maskscape data inspect`: what a probe would see of a dataset, before running it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::data::{self, DataSpec, Dataset, Task, TextDataset, parse_column_flag};
use crate::error::Result;
use crate::model::OptConfig;

/// Where the examples come from and how rows become examples.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset: JSON lines (.jsonl/.json), CSV, TSV, Parquet, or already tokenized
    /// .safetensors (input_ids, attention_mask, labels).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// sst2, rte, cb, boolq (the paper's prompts), lm, or classification (with
    /// --template and --candidates). Not needed for tokenized data.
    #[arg(long)]
    pub task: Option<String>,
    /// Read a field from another column, e.g. --column sentence=review (repeatable).
    #[arg(long = "column", value_name = "FIELD=COLUMN")]
    pub columns: Vec<String>,
    /// Prompt template of --task classification: {column} fields, {answer} last,
    /// \n for a newline, e.g. "{text} It was {answer}".
    #[arg(long)]
    pub template: Option<String>,
    /// Candidate answers of --task classification in label order, e.g. terrible,great.
    #[arg(long, value_delimiter = ',')]
    pub candidates: Option<Vec<String>>,
    /// Keep this many examples, drawn at random (with --seed), in file order.
    #[arg(long)]
    pub max_examples: Option<usize>,
    /// Seed of the --max-examples draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl DataArgs {
    /// The library's description of these flags.
    pub fn spec(&self) -> Result<DataSpec> {
        let task = self
            .task
            .as_deref()
            .map(|name| Task::new(name, self.template.as_deref(), self.candidates.as_deref()))
            .transpose()?;
        if task.is_none() && (self.template.is_some() || self.candidates.is_some()) {
            return Err(crate::Error::arg(
                "--task",
                "--template and --candidates need --task classification",
            ));
        }
        Ok(DataSpec {
            path: self.data.clone(),
            task,
            columns: self
                .columns
                .iter()
                .map(|c| parse_column_flag(c))
                .collect::<Result<_>>()?,
            max_examples: self.max_examples,
            seed: self.seed,
        })
    }
}

/// Datasets.
#[derive(Args)]
pub struct DataCommandArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Load a dataset as a probe would and print what it holds: the columns used,
    /// the label balance and the first prompts (and token counts with --tokenizer).
    Inspect(InspectArgs),
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    data: DataArgs,
    /// A model folder (config.json and its tokenizer): also tokenize as a probe of
    /// this model would, and report token lengths and truncation.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// How many examples to print.
    #[arg(long, default_value_t = 3)]
    show: usize,
}

/// Runs `maskscape data ...`.
pub fn run(args: DataCommandArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Inspect(args) => inspect(&args),
    }
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let spec = args.data.spec()?;
    let tokenized = match &args.model {
        Some(dir) => {
            let config = OptConfig::from_file(&dir.join("config.json"))?;
            Some((data::load_for_model(&spec, dir, &config)?, config))
        }
        None if spec.is_pretokenized() => {
            let loaded = data::load(&spec, None, usize::MAX)?;
            print_tokenized(&spec, &loaded, args.show);
            return Ok(());
        }
        None => None,
    };
    if spec.is_pretokenized() {
        if let Some((loaded, _)) = &tokenized {
            print_tokenized(&spec, loaded, args.show);
        }
        return Ok(());
    }
    let text = data::load_text(&spec)?;
    let task = spec.task.as_ref().map_or("", |t| t.name());
    println!(
        "{}: {}, {} rows",
        spec.path.display(),
        text.format.name(),
        text.rows_in_file
    );
    let columns: Vec<String> = text
        .columns
        .iter()
        .map(|(field, column)| format!("{field} <- `{column}`"))
        .collect();
    println!("task {task}: {}", columns.join(", "));
    let sampled = match spec.max_examples {
        Some(max) => format!(" (at most {max}, seed {})", spec.seed),
        None => String::new(),
    };
    println!("{} examples{sampled}", text.examples.len());
    if text.empty_rows_skipped > 0 {
        println!("{} blank rows skipped", text.empty_rows_skipped);
    }
    match &text.examples {
        TextDataset::Classification(examples) => {
            if let (Some(counts), Some(first)) = (text.examples.gold_counts(), examples.first()) {
                let balance: Vec<String> = first
                    .candidates
                    .iter()
                    .zip(counts)
                    .map(|(c, n)| format!("{:?} {n}", c.trim()))
                    .collect();
                println!("gold: {}", balance.join(", "));
            }
            for (i, example) in examples.iter().take(args.show).enumerate() {
                println!("example {}: prompt {:?}", i + 1, example.prompt);
                println!(
                    "  candidates {:?}, gold {}",
                    example.candidates, example.gold
                );
            }
        }
        TextDataset::Lm(examples) => {
            for (i, example) in examples.iter().take(args.show).enumerate() {
                println!("example {}: {:?}", i + 1, example.text);
            }
        }
    }
    if let Some((loaded, config)) = &tokenized {
        let lengths: Vec<usize> = match &loaded.dataset {
            Dataset::Classification(v) => v.iter().map(|e| e.max_len()).collect(),
            Dataset::Lm(v) => v.iter().map(|e| e.ids.len()).collect(),
        };
        println!(
            "tokens per sequence {} (model positions {}); {} truncated",
            length_summary(lengths.into_iter()),
            config.max_position_embeddings,
            loaded.truncated
        );
    }
    Ok(())
}

fn print_tokenized(spec: &DataSpec, loaded: &data::LoadedData, show: usize) {
    let Dataset::Lm(rows) = &loaded.dataset else {
        // invariant: data::load reads tokenized files as language-modelling rows.
        unreachable!("tokenized files load as language-modelling rows");
    };
    println!(
        "{}: tokenized, {} rows, {} kept",
        spec.path.display(),
        loaded.rows_in_file,
        rows.len()
    );
    let scored: usize = rows.iter().map(|r| r.scored_tokens()).sum();
    println!(
        "tokens per row {}; {scored} scored targets in all",
        length_summary(rows.iter().map(|r| r.ids.len()))
    );
    for (i, row) in rows.iter().take(show).enumerate() {
        println!("example {}: {:?}", i + 1, row.ids);
    }
}

/// "min to max, mean m" of a list of lengths.
fn length_summary(lengths: impl Iterator<Item = usize>) -> String {
    let lengths: Vec<usize> = lengths.collect();
    let (min, max) = (
        lengths.iter().min().copied().unwrap_or(0),
        lengths.iter().max().copied().unwrap_or(0),
    );
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
    format!("{min} to {max}, mean {mean:.1}")
}
