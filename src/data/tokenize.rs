//! The tokenization of text examples into the id-level examples the network
//! consumes (`model::examples`).
//!
//! OPT sequences start with `</s>` (id 2) as BOS. A classification example is the
//! prompt (BOS first) followed by one candidate's tokens; the candidate is encoded on
//! its own, as a continuation (no BOS, with the leading space the template implies),
//! so its tokens are exactly the last ones of the sequence and can be scored alone.

use std::collections::HashMap;

use crate::data::task::{ClassificationText, LmText};
use crate::error::{Error, Result};
pub use crate::model::examples::{ClassificationExample, Dataset, LmExample};
use crate::model::tokenizer::OptTokenizer;

/// OPT's beginning-of-sequence token, `</s>`.
pub const OPT_BOS_ID: u32 = 2;

/// Turns text into token ids. Implemented by the OPT tokenizer; anything that can
/// encode text without adding special tokens will do.
pub trait TextEncoder {
    /// The ids of `text`, with no special tokens added.
    fn token_ids(&self, text: &str) -> Result<Vec<u32>>;

    /// The id every sequence starts with.
    fn bos_id(&self) -> u32 {
        OPT_BOS_ID
    }
}

impl TextEncoder for OptTokenizer {
    fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, false)
    }

    fn bos_id(&self) -> u32 {
        OptTokenizer::bos_id(self)
    }
}

/// The outcome of tokenizing a text dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenized {
    pub dataset: Dataset,
    /// Examples that were cut to fit `max_len` (see [`tokenize_classification`] and
    /// [`tokenize_lm`] for where the cut falls).
    pub truncated: usize,
}

/// Tokenizes classification examples into sequences of at most `max_len` tokens
/// (the model's `max_position_embeddings`).
///
/// Truncation: when BOS + prompt + the longest candidate exceeds `max_len`, tokens
/// are dropped from the start of the prompt (just after BOS), so every candidate
/// always fits whole and the text nearest the answer is kept. A candidate that does
/// not fit even with an empty prompt is an error.
pub fn tokenize_classification(
    examples: &[ClassificationText],
    encoder: &dyn TextEncoder,
    max_len: usize,
) -> Result<Tokenized> {
    // Candidates repeat across rows: encode each distinct one once.
    let mut candidate_ids: HashMap<&str, Vec<u32>> = HashMap::new();
    let mut truncated = 0;
    let mut out = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let mut candidates = Vec::with_capacity(example.candidates.len());
        for text in &example.candidates {
            if !candidate_ids.contains_key(text.as_str()) {
                let ids = encoder.token_ids(text)?;
                if ids.is_empty() {
                    return Err(Error::arg(
                        "--candidates",
                        format!("candidate {text:?} encodes to no tokens"),
                    ));
                }
                candidate_ids.insert(text, ids);
            }
            candidates.push(candidate_ids[text.as_str()].clone());
        }
        let longest = candidates.iter().map(Vec::len).max().unwrap_or(0);
        if 1 + longest > max_len {
            return Err(Error::arg(
                "--candidates",
                format!(
                    "example {}: a candidate takes {longest} tokens, which with BOS exceeds \
                     the model's {max_len} positions",
                    i + 1
                ),
            ));
        }
        let mut prompt = vec![encoder.bos_id()];
        let body = encoder.token_ids(&example.prompt)?;
        let room = max_len - 1 - longest;
        if body.len() > room {
            truncated += 1;
            prompt.extend_from_slice(&body[body.len() - room..]);
        } else {
            prompt.extend_from_slice(&body);
        }
        out.push(ClassificationExample {
            prompt,
            candidates,
            gold: example.gold,
        });
    }
    Ok(Tokenized {
        dataset: Dataset::Classification(out),
        truncated,
    })
}

/// Tokenizes texts into BOS-first rows of at most `max_len` tokens, scored on every
/// token after BOS. Truncation keeps the start of a long text and drops its end.
pub fn tokenize_lm(
    examples: &[LmText],
    encoder: &dyn TextEncoder,
    max_len: usize,
) -> Result<Tokenized> {
    if max_len < 2 {
        return Err(Error::arg(
            "--max-len",
            "a language-modelling row needs at least 2 positions",
        ));
    }
    let mut truncated = 0;
    let mut out = Vec::with_capacity(examples.len());
    for example in examples {
        let mut ids = vec![encoder.bos_id()];
        ids.extend(encoder.token_ids(&example.text)?);
        if ids.len() > max_len {
            truncated += 1;
            ids.truncate(max_len);
        }
        out.push(LmExample::from_ids(ids));
    }
    Ok(Tokenized {
        dataset: Dataset::Lm(out),
        truncated,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::TestResult;

    /// A toy encoder: one token per space-separated word, id = 10 + word length,
    /// a leading space costs a token of its own (id 4) so continuations are visible.
    pub(crate) struct WordLengths;

    impl TextEncoder for WordLengths {
        fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
            let mut ids = Vec::new();
            if text.starts_with(' ') {
                ids.push(4);
            }
            ids.extend(text.split_whitespace().map(|w| 10 + w.len() as u32));
            Ok(ids)
        }
    }

    fn text(prompt: &str, candidates: &[&str], gold: usize) -> ClassificationText {
        ClassificationText {
            prompt: prompt.into(),
            candidates: candidates.iter().map(|c| c.to_string()).collect(),
            gold,
        }
    }

    #[test]
    fn candidates_follow_the_prompt_without_bos() -> TestResult {
        let data = [text("a bb ccc", &[" dddd", " e"], 0)];
        let out = tokenize_classification(&data, &WordLengths, 64)?;
        let Dataset::Classification(ex) = out.dataset else {
            panic!("classification expected")
        };
        let ex = &ex[0];
        assert_eq!(ex.prompt, vec![2, 11, 12, 13]);
        assert_eq!(ex.candidates, vec![vec![4, 14], vec![4, 11]]);
        assert_eq!(ex.sequence(1), vec![2, 11, 12, 13, 4, 11]);
        assert_eq!(ex.candidate_positions(0), 4..6);
        let row = ex.candidate_row(0);
        assert_eq!(row.labels, vec![None, None, None, None, Some(4), Some(14)]);
        assert_eq!(row.scored_tokens(), 2);
        assert_eq!(out.truncated, 0);
        Ok(())
    }

    #[test]
    fn long_prompts_lose_their_start_and_keep_bos() -> TestResult {
        // BOS + 5 prompt tokens + 2 candidate tokens = 8 > 6: drop 2 from the left.
        let data = [text("a bb ccc dddd eeeee", &[" f", " gg"], 1)];
        let out = tokenize_classification(&data, &WordLengths, 6)?;
        let Dataset::Classification(ex) = &out.dataset else {
            panic!("classification expected")
        };
        assert_eq!(ex[0].prompt, vec![2, 13, 14, 15]);
        assert_eq!(out.dataset.max_len(), 6);
        assert_eq!(out.truncated, 1);
        let err = tokenize_classification(&data, &WordLengths, 2).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the model's 2 positions"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn lm_rows_start_with_bos_and_keep_their_start() -> TestResult {
        let data = [LmText {
            text: "a bb ccc".into(),
        }];
        let out = tokenize_lm(&data, &WordLengths, 3)?;
        assert_eq!(
            out.dataset,
            Dataset::Lm(vec![LmExample {
                ids: vec![2, 11, 12],
                labels: vec![None, Some(11), Some(12)],
            }])
        );
        assert_eq!(out.truncated, 1);
        Ok(())
    }

    #[test]
    fn vocabulary_check_names_the_example() {
        let data = Dataset::Lm(vec![
            LmExample::from_ids(vec![2, 5]),
            LmExample::from_ids(vec![2, 40]),
        ]);
        assert!(data.check_vocab(41).is_ok());
        let err = data.check_vocab(40).unwrap_err().to_string();
        assert!(err.contains("example 2: token id 40 is outside"), "{err}");
    }
}
