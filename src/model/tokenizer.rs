//! OPT's tokenizer: GPT-2 byte-level BPE with the fairseq id map (`<s>` = 0,
//! `<pad>` = 1, `</s>` = 2, `<unk>` = 3), where a sequence starts with `</s>` as BOS.
//!
//! Hub checkpoints ship either `tokenizer.json` or the older `vocab.json` +
//! `merges.txt` pair; both are read. The ids come from the files (OPT's vocab.json
//! already holds the fairseq map); BOS is added here, not by the file's
//! post-processor, so that `encode(text, false)` means the same for both sources.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::model::config::OptConfig;

/// The special tokens of OPT's vocabulary, recognised as single tokens in text.
const SPECIAL_TOKENS: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];

/// The token OPT prepends to every sequence.
const BOS_TOKEN: &str = "</s>";

/// A loaded OPT tokenizer.
pub struct OptTokenizer {
    inner: Tokenizer,
    bos_id: u32,
}

impl OptTokenizer {
    /// Loads `dir/tokenizer.json`, or else `dir/vocab.json` + `dir/merges.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_and_merges(&vocab, &merges);
        }
        Err(Error::file(
            dir,
            "no tokenizer found (looked for tokenizer.json, and vocab.json with merges.txt)",
        ))
    }

    /// Loads a HuggingFace `tokenizer.json`. Its post-processor, truncation and
    /// padding are dropped: BOS is added by [`encode`](Self::encode) on request,
    /// and sequences are cut and padded by the data pipeline, which knows the
    /// model's positions. Kept, a file's padding would put pad ids into every
    /// encoding, and a declared `Fixed` length of 10^12 would abort the process
    /// allocating them.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::file(path, format!("not a readable tokenizer: {e}")))?;
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::file(path, format!("cannot drop its truncation: {e}")))?;
        Self::new(inner, path)
    }

    /// Builds GPT-2's byte-level BPE from `vocab.json` and `merges.txt`, as
    /// transformers' `GPT2Tokenizer` does for OPT (no prefix space).
    pub fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        let text = |p: &Path| -> Result<String> {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| Error::file(p, "path is not valid UTF-8"))
        };
        let vocab_map: std::collections::HashMap<String, u32> =
            serde_json::from_str(&std::fs::read_to_string(vocab).map_err(|e| Error::io(vocab, e))?)
                .map_err(|e| Error::file(vocab, format!("not a JSON map of tokens to ids: {e}")))?;
        let mut builder = BPE::from_file(&text(vocab)?, &text(merges)?);
        if vocab_map.contains_key("<unk>") {
            builder = builder.unk_token("<unk>".into());
        }
        let bpe = builder.build().map_err(|e| {
            Error::file(
                merges,
                format!("cannot build BPE from it and {}: {e}", vocab.display()),
            )
        })?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .filter(|t| vocab_map.contains_key(**t))
            .map(|t| AddedToken::from(*t, true))
            .collect();
        inner
            .add_special_tokens(specials)
            .map_err(|e| Error::file(vocab, format!("cannot add the special tokens: {e}")))?;
        Self::new(inner, vocab)
    }

    fn new(inner: Tokenizer, origin: &Path) -> Result<Self> {
        let bos_id = inner.token_to_id(BOS_TOKEN).ok_or_else(|| {
            Error::file(
                origin,
                format!("no `{BOS_TOKEN}` token, which OPT uses as BOS"),
            )
        })?;
        Ok(OptTokenizer { inner, bos_id })
    }

    /// The token ids of `text`, preceded by BOS (`</s>`) when `add_bos` is true, as
    /// OPT expects at the start of every sequence.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::arg("text", format!("cannot tokenize: {e}")))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_bos {
            ids.push(self.bos_id);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The text of `ids`; special tokens (BOS, padding) are dropped when
    /// `skip_special` is true.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            return Err(Error::arg(
                "token ids",
                format!(
                    "id {id} is outside the tokenizer's {} ids",
                    self.vocab_size()
                ),
            ));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::arg("token ids", format!("cannot decode: {e}")))
    }

    /// The id of BOS (`</s>`, 2 for OPT).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids the tokenizer can produce (one more than its largest id).
    pub fn vocab_size(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1)
    }

    /// Checks that every id the tokenizer can produce has an embedding row in the
    /// model (OPT pads its embedding to 50272 rows for a 50265-token vocabulary, so
    /// the tokenizer may be smaller than the model, never larger).
    pub fn check_against(&self, config: &OptConfig) -> Result<()> {
        if self.vocab_size() > config.vocab_size {
            return Err(Error::arg(
                "tokenizer",
                format!(
                    "produces ids up to {}, but the model's vocab_size is {}",
                    self.vocab_size() - 1,
                    config.vocab_size
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    /// A hand-made byte-level vocabulary: the four specials, nine characters
    /// (`Ġ` is GPT-2's stand-in for a space byte), and eight merges, ranked by line.
    fn hand_made(dir: &Path) -> TestResult {
        let vocab = serde_json::json!({
            "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3,
            "h": 4, "e": 5, "l": 6, "o": 7, "Ġ": 8, "w": 9, "r": 10, "d": 11, "!": 12,
            "he": 13, "ll": 14, "hell": 15, "hello": 16, "Ġw": 17, "or": 18, "Ġwor": 19, "ld": 20
        });
        std::fs::write(dir.join("vocab.json"), vocab.to_string())?;
        let merges = "#version: 0.2\nh e\nl l\nhe ll\nhell o\nĠ w\no r\nĠw or\nl d\n";
        std::fs::write(dir.join("merges.txt"), merges)?;
        Ok(())
    }

    #[test]
    fn encodes_by_merge_rank_and_decodes_back() -> TestResult {
        let dir = tempfile::tempdir()?;
        hand_made(dir.path())?;
        let tokenizer = OptTokenizer::from_dir(dir.path())?;
        // "hello": h e l l o -> he l l o -> he ll o -> hell o -> hello = [16].
        // " world" is the pre-token "Ġworld": Ġ w o r l d -> Ġw o r l d (rank 4) ->
        // Ġw or l d (5) -> Ġwor l d (6) -> Ġwor ld (7) = [19, 20]. "!" alone = [12].
        assert_eq!(tokenizer.encode("hello world!", false)?, [16, 19, 20, 12]);
        assert_eq!(tokenizer.encode("hello world!", true)?, [2, 16, 19, 20, 12]);
        assert_eq!(tokenizer.decode(&[16, 19, 20, 12], false)?, "hello world!");
        assert_eq!(tokenizer.decode(&[2, 16], true)?, "hello");
        // Special tokens in text are single tokens; unknown characters map to <unk>.
        assert_eq!(tokenizer.encode("hello</s>", false)?, [16, 2]);
        assert_eq!(tokenizer.encode("hz", false)?, [4, 3]);
        assert_eq!(tokenizer.vocab_size(), 21);
        assert!(
            tokenizer
                .decode(&[21], false)
                .unwrap_err()
                .to_string()
                .contains("21")
        );
        Ok(())
    }

    #[test]
    fn tokenizer_json_gives_the_same_ids() -> TestResult {
        let dir = tempfile::tempdir()?;
        hand_made(dir.path())?;
        let from_pair = OptTokenizer::from_dir(dir.path())?;
        from_pair
            .inner
            .save(dir.path().join("tokenizer.json"), false)?;
        std::fs::remove_file(dir.path().join("merges.txt"))?;
        let from_json = OptTokenizer::from_dir(dir.path())?;
        for text in ["hello world!", "hello</s>hello", " wor"] {
            assert_eq!(from_json.encode(text, true)?, from_pair.encode(text, true)?);
        }
        Ok(())
    }

    #[test]
    fn padding_and_truncation_in_tokenizer_json_are_ignored() -> TestResult {
        let dir = tempfile::tempdir()?;
        hand_made(dir.path())?;
        let json = dir.path().join("tokenizer.json");
        OptTokenizer::from_dir(dir.path())?
            .inner
            .save(&json, false)?;
        // A file that pads every encoding to 10^12 tokens and cuts them to one.
        let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        value["padding"] = serde_json::json!({
            "strategy": {"Fixed": 1_000_000_000_000u64},
            "direction": "Right",
            "pad_to_multiple_of": null,
            "pad_id": 1,
            "pad_type_id": 0,
            "pad_token": "<pad>"
        });
        value["truncation"] = serde_json::json!({
            "direction": "Right",
            "max_length": 1,
            "strategy": "LongestFirst",
            "stride": 0
        });
        std::fs::write(&json, value.to_string())?;
        // The file does parse with them (they are not silently rejected) ...
        let raw = Tokenizer::from_file(&json).map_err(|e| e.to_string())?;
        assert!(raw.get_padding().is_some() && raw.get_truncation().is_some());
        // ... and are gone from what maskscape loads.
        let tokenizer = OptTokenizer::from_tokenizer_json(&json)?;
        assert_eq!(tokenizer.encode("hello world!", true)?, [2, 16, 19, 20, 12]);
        Ok(())
    }

    #[test]
    fn ids_beyond_the_model_vocabulary_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        hand_made(dir.path())?;
        let tokenizer = OptTokenizer::from_dir(dir.path())?;
        let mut config = crate::model::presets::preset("opt-mini").ok_or("no preset opt-mini")?;
        assert!(tokenizer.check_against(&config).is_ok());
        config.vocab_size = 16;
        let err = tokenizer.check_against(&config).unwrap_err().to_string();
        assert!(
            err.contains("20") && err.contains("vocab_size is 16"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("vocab.json"))?;
        assert!(
            OptTokenizer::from_dir(dir.path())
                .is_err_and(|e| e.to_string().contains("no tokenizer"))
        );
        Ok(())
    }
}
