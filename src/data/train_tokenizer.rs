//! Training a small byte-level BPE tokenizer with OPT's conventions, for models
//! built from scratch (the bundled default): GPT-2's byte-level pre-tokenizer
//! without a prefix space, the fairseq special ids `<s>` = 0, `<pad>` = 1, `</s>` = 2,
//! `<unk>` = 3, and `</s>` as BOS. The output is what OPT checkpoints on the hub ship:
//! `vocab.json` + `merges.txt`, plus an equivalent `tokenizer.json`.

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Model, Tokenizer};

use crate::data::table::RawTable;
use crate::error::{Error, Result};
use crate::report::atomic;

/// OPT's special tokens in id order.
pub const OPT_SPECIAL_TOKENS: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];

/// The smallest vocabulary: the special tokens and the 256 byte symbols.
pub const MIN_VOCAB_SIZE: usize = OPT_SPECIAL_TOKENS.len() + 256;

/// Reads training texts: the column `column` of each data file (any format
/// [`RawTable`] reads), or every non-blank line of a `.txt` file.
pub fn read_training_texts(files: &[PathBuf], column: &str) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for path in files {
        if path.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            texts.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        } else {
            let table = RawTable::read(path)?;
            texts.extend(table.text_column(column)?.into_iter().flatten());
        }
    }
    if texts.iter().all(|t| t.trim().is_empty()) {
        return Err(Error::arg("--text", "the training files hold no text"));
    }
    Ok(texts)
}

/// Trains a byte-level BPE tokenizer of at most `vocab_size` tokens on `texts`.
///
/// Merges are learned from pairs seen at least twice, so a small corpus may stop
/// short of `vocab_size`. Training is deterministic: ties between equally frequent
/// pairs are broken by token id. Cost: about linear in the corpus size times the
/// number of merges, well under a second for a few hundred sentences.
pub fn train_byte_level_bpe(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(Error::arg(
            "--vocab-size",
            format!(
                "{vocab_size} is below {MIN_VOCAB_SIZE} (4 special tokens and 256 byte symbols)"
            ),
        ));
    }
    let failed = |e: tokenizers::Error| Error::Numerical(format!("BPE training failed: {e}"));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(
            OPT_SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(failed)?;
    // As HuggingFace converts OPT's tokenizer: `</s>` opens every sequence.
    let bos = OPT_SPECIAL_TOKENS[2];
    let post = TemplateProcessing::builder()
        .try_single(format!("{bos}:0 $A:0"))
        .and_then(|b| b.try_pair(format!("{bos}:0 $A:0 $B:1")))
        .map_err(|e| Error::Numerical(format!("BOS template: {e}")))?
        .special_tokens(vec![(bos, 2)])
        .build()
        .map_err(|e| Error::Numerical(format!("BOS template: {e}")))?;
    tokenizer.with_post_processor(Some(post));
    for (id, token) in OPT_SPECIAL_TOKENS.iter().enumerate() {
        // invariant: the trainer places the special tokens first, in order.
        assert_eq!(
            tokenizer.token_to_id(token),
            Some(id as u32),
            "special token ids"
        );
    }
    Ok(tokenizer)
}

/// Writes `vocab.json`, `merges.txt` and `tokenizer.json` into `dir` (created if
/// needed), each file atomically. Returns the paths written.
pub fn save_tokenizer(tokenizer: &Tokenizer, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let scratch = tempfile::tempdir_in(dir).map_err(|e| Error::io(dir, e))?;
    let saved = tokenizer
        .get_model()
        .save(scratch.path(), None)
        .map_err(|e| Error::file(dir, format!("cannot write the vocabulary: {e}")))?;
    let mut written = Vec::new();
    for file in saved {
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let name = file.file_name().ok_or_else(|| {
            Error::file(&file, "the tokenizer library saved a file without a name")
        })?;
        let target = dir.join(name);
        atomic::write_bytes(&target, &bytes)?;
        written.push(target);
    }
    let json_path = dir.join("tokenizer.json");
    let json = tokenizer
        .to_string(true)
        .map_err(|e| Error::file(&json_path, format!("cannot serialise: {e}")))?;
    atomic::write_bytes(&json_path, json.as_bytes())?;
    written.push(json_path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::OptTokenizer;
    use crate::testing::TestResult;

    fn ids(tokenizer: &Tokenizer, text: &str) -> TestResult<Vec<u32>> {
        Ok(tokenizer.encode(text, false)?.get_ids().to_vec())
    }

    fn corpus() -> Vec<String> {
        [
            "A quiet, lovely film about two brothers.",
            "The plot drags and the jokes fall flat.",
            "A lovely score lifts every quiet scene.",
            "The jokes land; the plot never drags.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn opt_ids_bos_and_continuations() -> TestResult {
        let tokenizer = train_byte_level_bpe(&corpus(), 300)?;
        // The tiny corpus runs out of pairs seen twice before 300 tokens.
        let size = tokenizer.get_vocab_size(true);
        assert!((MIN_VOCAB_SIZE + 10..=300).contains(&size), "{size}");
        let joint = ids(&tokenizer, "The plot was lovely")?;
        let mut split = ids(&tokenizer, "The plot was")?;
        split.extend(ids(&tokenizer, " lovely")?);
        assert_eq!(joint, split, "a candidate encodes as a continuation");
        let with_bos = tokenizer.encode("The plot", true)?;
        assert_eq!(with_bos.get_ids()[0], 2);
        let decoded = tokenizer.decode(&joint, false)?;
        assert_eq!(decoded, "The plot was lovely");
        // Unseen bytes still encode (byte-level: no unknown token).
        assert!(!ids(&tokenizer, "Ωmega")?.is_empty());
        Ok(())
    }

    #[test]
    fn training_is_deterministic_and_files_reload() -> TestResult {
        let dir = tempfile::tempdir()?;
        let a = train_byte_level_bpe(&corpus(), 320)?;
        let b = train_byte_level_bpe(&corpus(), 320)?;
        let paths = save_tokenizer(&a, &dir.path().join("a"))?;
        save_tokenizer(&b, &dir.path().join("b"))?;
        for name in ["vocab.json", "merges.txt", "tokenizer.json"] {
            let x = std::fs::read(dir.path().join("a").join(name))?;
            let y = std::fs::read(dir.path().join("b").join(name))?;
            assert_eq!(x, y, "{name} differs between two trainings");
        }
        assert_eq!(paths.len(), 3);
        let vocab: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("a/vocab.json"))?)?;
        assert_eq!(vocab["<s>"], 0);
        assert_eq!(vocab["</s>"], 2);
        assert_eq!(vocab["<unk>"], 3);
        let merges = std::fs::read_to_string(dir.path().join("a/merges.txt"))?;
        assert!(merges.starts_with("#version: 0.2\n"));
        // The OPT loader reads the files both ways a hub checkpoint ships them and
        // gets the trained ids: tokenizer.json, then vocab.json + merges.txt.
        let text = "A lovely plot, never quiet";
        let mut expected = vec![2];
        expected.extend(ids(&a, text)?);
        let from_json = OptTokenizer::from_dir(&dir.path().join("a"))?;
        assert_eq!(from_json.encode(text, true)?, expected);
        std::fs::remove_file(dir.path().join("a/tokenizer.json"))?;
        let from_pair = OptTokenizer::from_dir(&dir.path().join("a"))?;
        assert_eq!(from_pair.encode(text, true)?, expected);
        assert_eq!(from_pair.vocab_size(), a.get_vocab_size(true));
        Ok(())
    }

    #[test]
    fn tiny_vocabularies_are_refused() {
        let err = train_byte_level_bpe(&corpus(), 100)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--vocab-size: 100 is below 260"), "{err}");
    }
}
