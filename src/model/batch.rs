//! Batches of token sequences and what they are scored on: the types the data layer
//! (datasets, prompts, tokenization) fills and the engine consumes.
//!
//! A dataset is a slice of [`Batch`]es. Its loss is the mean over all of its loss
//! terms (scored tokens for [`Targets::NextToken`], questions for
//! [`Targets::Choice`]), so processing it in batches gives exactly the loss,
//! gradient and Hessian of one big batch.

use std::ops::Range;

use super::config::OptConfig;
use super::ops::loss::{ChoiceRows, LossHead};
use crate::backend::NO_TARGET;
use crate::error::{Error, Result};

/// The label that marks a position as not scored (PyTorch's `ignore_index`).
pub const IGNORE_LABEL: i64 = -100;

/// `batch` token sequences padded to `seq` tokens (left or right).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq: usize,
    /// `batch x seq` token ids, row-major.
    pub input_ids: Vec<u32>,
    /// `batch x seq`: 1 for a real token, 0 for padding.
    pub attention_mask: Vec<u32>,
}

impl TokenBatch {
    /// Unpadded sequences of equal length.
    pub fn unpadded(batch: usize, seq: usize, input_ids: Vec<u32>) -> Self {
        TokenBatch {
            batch,
            seq,
            input_ids,
            attention_mask: vec![1; batch * seq],
        }
    }

    /// Number of token positions (`batch * seq`).
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
}

/// What a batch's loss is computed from.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Language modelling: position `t` of row `b` is scored by the cross-entropy of
    /// its logits against `labels[b, t + 1]`, unless that label is [`IGNORE_LABEL`]
    /// (the fixtures' convention; `labels` is `batch x seq`).
    NextToken { labels: Vec<i64> },
    /// Classification by candidate answers (the paper's loss): see [`Question`].
    Choice { questions: Vec<Question> },
}

/// One classification example: each candidate answer is a row of the batch holding
/// prompt + answer, and is scored by the mean log-probability of its answer tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    pub candidates: Vec<Candidate>,
    /// Index of the right candidate.
    pub gold: usize,
}

/// A candidate answer: batch row `row`, answer tokens at positions `answer` (each
/// predicted from the position before it, so `answer.start >= 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub row: usize,
    pub answer: Range<usize>,
}

/// A batch of sequences and its targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tokens: TokenBatch,
    pub targets: Targets,
}

impl Batch {
    /// The number of loss terms the batch contributes to its dataset's mean.
    pub fn loss_terms(&self) -> usize {
        match &self.targets {
            Targets::NextToken { .. } => self
                .row_targets()
                .iter()
                .filter(|&&t| t != NO_TARGET)
                .count(),
            Targets::Choice { questions } => questions.len(),
        }
    }

    /// Checks the batch against the model: shapes, token ids inside the vocabulary,
    /// sequence length within the learned positions, labels and candidates in range.
    pub fn validate(&self, config: &OptConfig) -> Result<()> {
        let t = &self.tokens;
        let rows = t.rows();
        if t.batch == 0 || t.seq == 0 {
            return Err(Error::arg(
                "batch",
                "a batch needs at least one sequence of one token",
            ));
        }
        if t.input_ids.len() != rows || t.attention_mask.len() != rows {
            return Err(Error::arg(
                "batch",
                format!(
                    "{} x {} tokens need {rows} input ids and mask entries, found {} and {}",
                    t.batch,
                    t.seq,
                    t.input_ids.len(),
                    t.attention_mask.len()
                ),
            ));
        }
        if t.seq > config.max_position_embeddings {
            return Err(Error::arg(
                "batch",
                format!(
                    "sequences of {} tokens exceed the model's {} positions (max_position_embeddings)",
                    t.seq, config.max_position_embeddings
                ),
            ));
        }
        if let Some(r) = t
            .input_ids
            .iter()
            .position(|&id| id as usize >= config.vocab_size)
        {
            return Err(Error::arg(
                "input_ids",
                format!(
                    "token id {} at sequence {}, position {} is outside the vocabulary (vocab_size {})",
                    t.input_ids[r],
                    r / t.seq,
                    r % t.seq,
                    config.vocab_size
                ),
            ));
        }
        if let Some(&m) = t.attention_mask.iter().find(|&&m| m > 1) {
            return Err(Error::arg(
                "attention_mask",
                format!("entries must be 0 or 1, found {m}"),
            ));
        }
        match &self.targets {
            Targets::NextToken { labels } => validate_labels(labels, rows, config.vocab_size),
            Targets::Choice { questions } => validate_questions(questions, t),
        }
    }

    /// Per row `b * seq + t`: the token its logits are scored against, or
    /// [`NO_TARGET`]. Assumes [`Batch::validate`] passed.
    pub(crate) fn row_targets(&self) -> Vec<u32> {
        let t = &self.tokens;
        let mut out = vec![NO_TARGET; t.rows()];
        match &self.targets {
            Targets::NextToken { labels } => {
                for b in 0..t.batch {
                    for s in 0..t.seq - 1 {
                        let label = labels[b * t.seq + s + 1];
                        if label != IGNORE_LABEL {
                            out[b * t.seq + s] = label as u32;
                        }
                    }
                }
            }
            Targets::Choice { questions } => {
                for c in questions.iter().flat_map(|q| &q.candidates) {
                    for pos in c.answer.clone() {
                        out[c.row * t.seq + pos - 1] = t.input_ids[c.row * t.seq + pos];
                    }
                }
            }
        }
        out
    }

    /// How the scored rows combine into the loss.
    pub(crate) fn loss_head(&self) -> LossHead {
        match &self.targets {
            Targets::NextToken { .. } => LossHead::NextToken,
            Targets::Choice { questions } => {
                let seq = self.tokens.seq;
                LossHead::Choice(
                    questions
                        .iter()
                        .map(|q| ChoiceRows {
                            candidates: q
                                .candidates
                                .iter()
                                .map(|c| {
                                    c.answer.clone().map(|pos| c.row * seq + pos - 1).collect()
                                })
                                .collect(),
                            gold: q.gold,
                        })
                        .collect(),
                )
            }
        }
    }
}

fn validate_labels(labels: &[i64], rows: usize, vocab: usize) -> Result<()> {
    if labels.len() != rows {
        return Err(Error::arg(
            "labels",
            format!("expected {rows} labels, found {}", labels.len()),
        ));
    }
    if let Some(&l) = labels
        .iter()
        .find(|&&l| l != IGNORE_LABEL && !(0..vocab as i64).contains(&l))
    {
        return Err(Error::arg(
            "labels",
            format!(
                "label {l} is neither {IGNORE_LABEL} nor inside the vocabulary (vocab_size {vocab})"
            ),
        ));
    }
    Ok(())
}

fn validate_questions(questions: &[Question], t: &TokenBatch) -> Result<()> {
    let mut used = vec![false; t.batch];
    for (i, q) in questions.iter().enumerate() {
        let bad = |msg: String| Err(Error::arg("questions", format!("question {i}: {msg}")));
        if q.candidates.len() < 2 || q.gold >= q.candidates.len() {
            return bad(format!(
                "needs at least two candidates and a gold index among them (found {} candidates, gold {})",
                q.candidates.len(),
                q.gold
            ));
        }
        for c in &q.candidates {
            if c.row >= t.batch || used[c.row] {
                return bad(format!(
                    "candidate row {} is outside the batch or used twice",
                    c.row
                ));
            }
            used[c.row] = true;
            if c.answer.is_empty() || c.answer.start == 0 || c.answer.end > t.seq {
                return bad(format!(
                    "answer positions {:?} must be non-empty, after the first token and within {} tokens",
                    c.answer, t.seq
                ));
            }
            let real = |pos: usize| t.attention_mask[c.row * t.seq + pos] == 1;
            if !(c.answer.start - 1..c.answer.end).all(real) {
                return bad(format!(
                    "answer positions {:?} (and the one before) must not be padding",
                    c.answer
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;

    fn config() -> OptConfig {
        let mut c = preset("opt-mini").unwrap();
        c.vocab_size = 10;
        c.max_position_embeddings = 6;
        c
    }

    #[test]
    fn next_token_targets_shift_labels_by_one() {
        let tokens = TokenBatch::unpadded(1, 4, vec![5, 6, 7, 8]);
        let batch = Batch {
            tokens,
            targets: Targets::NextToken {
                labels: vec![-100, 6, -100, 8],
            },
        };
        batch.validate(&config()).unwrap();
        assert_eq!(batch.row_targets(), vec![6, NO_TARGET, 8, NO_TARGET]);
        assert_eq!(batch.loss_terms(), 2);
    }

    #[test]
    fn choice_targets_score_answer_tokens_from_the_previous_position() {
        let tokens = TokenBatch::unpadded(2, 3, vec![4, 5, 6, 4, 7, 8]);
        let q = Question {
            candidates: vec![
                Candidate {
                    row: 0,
                    answer: 2..3,
                },
                Candidate {
                    row: 1,
                    answer: 1..3,
                },
            ],
            gold: 1,
        };
        let batch = Batch {
            tokens,
            targets: Targets::Choice { questions: vec![q] },
        };
        batch.validate(&config()).unwrap();
        assert_eq!(
            batch.row_targets(),
            vec![NO_TARGET, 6, NO_TARGET, 7, 8, NO_TARGET]
        );
        assert_eq!(
            batch.loss_head(),
            LossHead::Choice(vec![ChoiceRows {
                candidates: vec![vec![1], vec![3, 4]],
                gold: 1
            }])
        );
        assert_eq!(batch.loss_terms(), 1);
    }

    #[test]
    fn bad_batches_are_named_errors() {
        let ids = TokenBatch::unpadded(1, 3, vec![4, 12, 5]);
        let err = Batch {
            tokens: ids,
            targets: Targets::NextToken {
                labels: vec![-100; 3],
            },
        }
        .validate(&config())
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("token id 12") && err.contains("vocab_size 10"),
            "{err}"
        );
        let long = TokenBatch::unpadded(1, 7, vec![4; 7]);
        let err = Batch {
            tokens: long,
            targets: Targets::NextToken {
                labels: vec![-100; 7],
            },
        }
        .validate(&config())
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_position_embeddings"), "{err}");
        let tokens = TokenBatch::unpadded(1, 3, vec![4, 5, 6]);
        let q = Question {
            candidates: vec![Candidate {
                row: 0,
                answer: 1..3,
            }],
            gold: 0,
        };
        let err = Batch {
            tokens,
            targets: Targets::Choice { questions: vec![q] },
        }
        .validate(&config())
        .unwrap_err()
        .to_string();
        assert!(err.contains("two candidates"), "{err}");
    }
}
