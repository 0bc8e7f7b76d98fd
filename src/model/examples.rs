//! Token ids: the id-level examples the network consumes (made from text by
//! `data::tokenize`, or read already tokenized), before they are padded into
//! batches (`model::batch`).

use std::ops::Range;

use crate::error::{Error, Result};

/// A classification example in token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassificationExample {
    /// The prompt, BOS first.
    pub prompt: Vec<u32>,
    /// Each candidate's tokens, to be appended to the prompt.
    pub candidates: Vec<Vec<u32>>,
    /// The index of the correct candidate.
    pub gold: usize,
}

impl ClassificationExample {
    /// The sequence scored for candidate `index`: prompt then candidate.
    pub fn sequence(&self, index: usize) -> Vec<u32> {
        let mut ids = self.prompt.clone();
        ids.extend_from_slice(&self.candidates[index]);
        ids
    }

    /// Positions of candidate `index`'s tokens in [`Self::sequence`]. The token at
    /// position `t` is predicted by the logits at `t - 1`, so its score reads the
    /// logits at `positions.start - 1 .. positions.end - 1`.
    pub fn candidate_positions(&self, index: usize) -> Range<usize> {
        let start = self.prompt.len();
        start..start + self.candidates[index].len()
    }

    /// Candidate `index` as a language-modelling row whose only scored targets are
    /// the candidate's tokens: its mean token loss is minus the candidate's score
    /// (the mean log-probability of its tokens given the prompt).
    pub fn candidate_row(&self, index: usize) -> LmExample {
        let ids = self.sequence(index);
        let positions = self.candidate_positions(index);
        let labels = ids
            .iter()
            .enumerate()
            .map(|(t, &id)| positions.contains(&t).then_some(id))
            .collect();
        LmExample { ids, labels }
    }

    /// Length of the longest of its sequences.
    pub fn max_len(&self) -> usize {
        self.prompt.len() + self.candidates.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// A language-modelling example in token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmExample {
    /// The tokens (BOS first when the text was tokenized by maskscape).
    pub ids: Vec<u32>,
    /// `labels[t]` is the token the logits at `t - 1` must predict, `None` where the
    /// position is not scored (HuggingFace's -100). `labels[0]` is never scored.
    pub labels: Vec<Option<u32>>,
}

impl LmExample {
    /// A row scored on every token after the first.
    pub fn from_ids(ids: Vec<u32>) -> LmExample {
        let labels = ids
            .iter()
            .enumerate()
            .map(|(t, &id)| (t > 0).then_some(id))
            .collect();
        LmExample { ids, labels }
    }

    /// How many tokens the loss averages over in this row. A dataset's loss is the
    /// sum of token losses over all rows divided by the sum of these counts.
    pub fn scored_tokens(&self) -> usize {
        self.labels.iter().skip(1).filter(|l| l.is_some()).count()
    }
}

/// A tokenized dataset: all classification or all language modelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dataset {
    Classification(Vec<ClassificationExample>),
    Lm(Vec<LmExample>),
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Dataset::Classification(v) => v.len(),
            Dataset::Lm(v) => v.len(),
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        match self {
            Dataset::Classification(v) => {
                Dataset::Classification(indices.iter().map(|&i| v[i].clone()).collect())
            }
            Dataset::Lm(v) => Dataset::Lm(indices.iter().map(|&i| v[i].clone()).collect()),
        }
    }

    /// Sequences the network runs for the examples (one per candidate).
    pub fn sequences(&self) -> usize {
        match self {
            Dataset::Classification(v) => v.iter().map(|e| e.candidates.len()).sum(),
            Dataset::Lm(v) => v.len(),
        }
    }

    /// The longest sequence the network will see.
    pub fn max_len(&self) -> usize {
        match self {
            Dataset::Classification(v) => v.iter().map(ClassificationExample::max_len).max(),
            Dataset::Lm(v) => v.iter().map(|e| e.ids.len()).max(),
        }
        .unwrap_or(0)
    }

    /// Checks that every token id (input or label) is below `vocab_size`, naming the
    /// first example that is not: ids from a foreign tokenizer would otherwise index
    /// past the embedding matrix.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        let outside = |ids: &mut dyn Iterator<Item = &u32>| {
            ids.copied().find(|&id| id as usize >= vocab_size)
        };
        for i in 0..self.len() {
            let bad = match self {
                Dataset::Classification(v) => {
                    outside(&mut v[i].prompt.iter().chain(v[i].candidates.iter().flatten()))
                }
                Dataset::Lm(v) => outside(&mut v[i].ids.iter().chain(v[i].labels.iter().flatten())),
            };
            if let Some(id) = bad {
                return Err(Error::Unsupported(format!(
                    "example {}: token id {id} is outside the model's vocabulary of {vocab_size} \
                     (data tokenized for another model?)",
                    i + 1
                )));
            }
        }
        Ok(())
    }
}
