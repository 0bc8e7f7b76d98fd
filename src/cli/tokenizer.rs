//! `maskscape tokenizer train`: a byte-level BPE tokenizer with OPT's special ids.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::data::train_tokenizer::{read_training_texts, save_tokenizer, train_byte_level_bpe};

/// Tokenizers for models built from scratch.
#[derive(Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    command: TokenizerCommand,
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer (GPT-2 pre-tokenizer, OPT's special ids
    /// <s>=0 <pad>=1 </s>=2 <unk>=3, </s> as BOS) and write vocab.json, merges.txt
    /// and tokenizer.json.
    Train(TrainArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Training text: data files (JSONL, JSON, CSV, TSV, Parquet; read through
    /// --column) or .txt files (one text per line), comma-separated.
    #[arg(
        long,
        value_name = "FILE[,FILE]",
        value_delimiter = ',',
        required = true
    )]
    text: Vec<PathBuf>,
    /// The text column of the data files.
    #[arg(long, default_value = "sentence")]
    column: String,
    /// Largest vocabulary, special tokens and the 256 byte symbols included.
    #[arg(long, default_value_t = 1000)]
    vocab_size: usize,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs `maskscape tokenizer ...`.
pub fn run(args: TokenizerArgs) -> anyhow::Result<()> {
    match args.command {
        TokenizerCommand::Train(args) => {
            let texts = read_training_texts(&args.text, &args.column)?;
            let tokenizer = train_byte_level_bpe(&texts, args.vocab_size)?;
            let written = save_tokenizer(&tokenizer, &args.out)?;
            println!(
                "trained on {} texts: {} tokens",
                texts.len(),
                tokenizer.get_vocab_size(true)
            );
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}
