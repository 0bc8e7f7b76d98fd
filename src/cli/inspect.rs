//! `maskscape inspect`: load a checkpoint (every check of the loader applies) and
//! summarise it.

use std::path::PathBuf;
use std::time::Instant;

use crate::model::{Checkpoint, OptTokenizer};
use crate::report::Table;

/// Loads a HuggingFace OPT folder in f32 and prints its architecture, per-tensor
/// statistics and tokenizer, or the first problem found.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The model folder (config.json + weights, optionally a tokenizer).
    #[arg(long)]
    model: PathBuf,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let checkpoint = Checkpoint::<f32>::load(&args.model)?;
    let elapsed = started.elapsed();
    let entries = checkpoint.layout.entries();
    let stats: Vec<(f64, f64)> = entries
        .iter()
        .map(|e| {
            let values = &checkpoint.params[e.range()];
            let n = values.len() as f64;
            let mean = values.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let rms = (values.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n).sqrt();
            (mean, rms)
        })
        .collect();
    let table = Table::new()
        .with_str("tensor", entries.iter().map(|e| e.name.clone()).collect())
        .with_str(
            "shape",
            entries.iter().map(|e| format!("{:?}", e.shape)).collect(),
        )
        .with_f64("mean", stats.iter().map(|s| s.0).collect())
        .with_f64("rms", stats.iter().map(|s| s.1).collect());
    println!("{}", table.to_text());
    let c = &checkpoint.config;
    println!(
        "{} layers, hidden {}, ffn {}, {} heads, vocab {}, {}{}: {} parameters, loaded in {:.2} s",
        c.num_hidden_layers,
        c.hidden_size,
        c.ffn_dim,
        c.num_attention_heads,
        c.vocab_size,
        if c.do_layer_norm_before {
            "pre-LN"
        } else {
            "post-LN"
        },
        if c.has_projections() {
            " with projections"
        } else {
            ""
        },
        checkpoint.layout.total(),
        elapsed.as_secs_f64()
    );
    match OptTokenizer::from_dir(&args.model) {
        Ok(tokenizer) => {
            tokenizer.check_against(c)?;
            println!(
                "tokenizer: {} ids, BOS {}",
                tokenizer.vocab_size(),
                tokenizer.bos_id()
            );
        }
        Err(_) => println!("tokenizer: none"),
    }
    Ok(())
}
