//! Batches of token sequences and what they are scored on: the types the data layer
//! (datasets, prompts, tokenization) fills and the engine consumes.
//!
//! A dataset is a slice of [`Batch`]es. Its loss is the mean over all of its loss
//! terms (scored tokens for [`Targets::NextToken`], questions for
//! [`Targets::Choice`]), so processing it in batches gives exactly the loss,
//! gradient and Hessian of one big batch.

use std::ops::Range;

use super::config::OptConfig;
use super::examples::{ClassificationExample, Dataset, LmExample};
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
    /// Examples in the batch: questions (classification) or rows (language
    /// modelling).
    pub fn examples(&self) -> usize {
        match &self.targets {
            Targets::Choice { questions } => questions.len(),
            Targets::NextToken { .. } => self.tokens.batch,
        }
    }

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

/// Which end of a sequence padding goes on. Both give every row the loss it would
/// have alone (positions count real tokens only; padded keys are never attended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Left,
    Right,
}

/// Packs a tokenized dataset into batches of at most `max_rows` sequences, each
/// padded with `pad_id` to its batch's longest sequence. The candidates of one
/// classification example always share a batch (the choice loss couples them), so a
/// batch holds whole examples; an example with more than `max_rows` candidates gets
/// a batch of its own.
pub fn batches(
    dataset: &Dataset,
    max_rows: usize,
    pad_id: u32,
    padding: Padding,
) -> Result<Vec<Batch>> {
    if max_rows == 0 {
        return Err(Error::arg("--batch", "must be at least 1"));
    }
    match dataset {
        Dataset::Lm(examples) => Ok(examples
            .chunks(max_rows)
            .map(|chunk| {
                let rows: Vec<&[u32]> = chunk.iter().map(|e| e.ids.as_slice()).collect();
                let (tokens, shifts) = pad(&rows, pad_id, padding, 0);
                let labels = lm_labels(chunk, &tokens, &shifts);
                Batch {
                    tokens,
                    targets: Targets::NextToken { labels },
                }
            })
            .collect()),
        Dataset::Classification(examples) => {
            let mut out = Vec::new();
            let mut group: Vec<&ClassificationExample> = Vec::new();
            let mut rows = 0;
            for e in examples {
                if !group.is_empty() && rows + e.candidates.len() > max_rows {
                    out.push(choice_batch(&group, pad_id, padding, 0));
                    group.clear();
                    rows = 0;
                }
                group.push(e);
                rows += e.candidates.len();
            }
            if !group.is_empty() {
                out.push(choice_batch(&group, pad_id, padding, 0));
            }
            Ok(out)
        }
    }
}

/// Every example of `dataset` in one batch, right-padded to `seq` tokens (or to its
/// longest sequence, if longer): a training step's batches keep one shape from step
/// to step, so the engine reuses its buffers instead of reallocating them.
pub fn padded_batch(dataset: &Dataset, pad_id: u32, seq: usize) -> Batch {
    match dataset {
        Dataset::Lm(examples) => {
            let rows: Vec<&[u32]> = examples.iter().map(|e| e.ids.as_slice()).collect();
            let (tokens, shifts) = pad(&rows, pad_id, Padding::Right, seq);
            let labels = lm_labels(examples, &tokens, &shifts);
            Batch {
                tokens,
                targets: Targets::NextToken { labels },
            }
        }
        Dataset::Classification(examples) => {
            let group: Vec<&ClassificationExample> = examples.iter().collect();
            choice_batch(&group, pad_id, Padding::Right, seq)
        }
    }
}

/// Pads `rows` to one length, at least `min_len`; returns the batch and each row's
/// shift (left padding).
fn pad(rows: &[&[u32]], pad_id: u32, padding: Padding, min_len: usize) -> (TokenBatch, Vec<usize>) {
    let seq = rows
        .iter()
        .map(|ids| ids.len())
        .max()
        .unwrap_or(0)
        .max(min_len);
    let mut input_ids = Vec::with_capacity(rows.len() * seq);
    let mut attention_mask = Vec::with_capacity(rows.len() * seq);
    let mut shifts = Vec::with_capacity(rows.len());
    for ids in rows {
        let gap = seq - ids.len();
        let (left, right) = match padding {
            Padding::Left => (gap, 0),
            Padding::Right => (0, gap),
        };
        input_ids.extend(
            std::iter::repeat_n(pad_id, left)
                .chain(ids.iter().copied())
                .chain(std::iter::repeat_n(pad_id, right)),
        );
        attention_mask.extend(
            std::iter::repeat_n(0, left)
                .chain(std::iter::repeat_n(1, ids.len()))
                .chain(std::iter::repeat_n(0, right)),
        );
        shifts.push(left);
    }
    (
        TokenBatch {
            batch: rows.len(),
            seq,
            input_ids,
            attention_mask,
        },
        shifts,
    )
}

/// The labels of `examples` padded into `tokens` (row b shifted right by `shifts[b]`),
/// in HuggingFace's layout: position t holds the token the logits at t - 1 predict,
/// [`IGNORE_LABEL`] where nothing is scored (first positions, padding).
fn lm_labels(examples: &[LmExample], tokens: &TokenBatch, shifts: &[usize]) -> Vec<i64> {
    let mut labels = vec![IGNORE_LABEL; tokens.rows()];
    for (b, (example, shift)) in examples.iter().zip(shifts).enumerate() {
        for (t, l) in example.labels.iter().enumerate().skip(1) {
            if let Some(l) = l {
                labels[b * tokens.seq + shift + t] = i64::from(*l);
            }
        }
    }
    labels
}

fn choice_batch(
    examples: &[&ClassificationExample],
    pad_id: u32,
    padding: Padding,
    min_len: usize,
) -> Batch {
    let sequences: Vec<Vec<u32>> = examples
        .iter()
        .flat_map(|e| (0..e.candidates.len()).map(|c| e.sequence(c)))
        .collect();
    let rows: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
    let (tokens, shifts) = pad(&rows, pad_id, padding, min_len);
    let mut row = 0;
    let questions = examples
        .iter()
        .map(|e| Question {
            candidates: (0..e.candidates.len())
                .map(|c| {
                    let p = e.candidate_positions(c);
                    let candidate = Candidate {
                        row,
                        answer: p.start + shifts[row]..p.end + shifts[row],
                    };
                    row += 1;
                    candidate
                })
                .collect(),
            gold: e.gold,
        })
        .collect();
    Batch {
        tokens,
        targets: Targets::Choice { questions },
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

/// The rows of [`Batch::row_targets`] with a target (ascending), the only ones whose
/// logits a loss reads.
pub(crate) fn scored_rows(targets: &[u32]) -> Vec<usize> {
    (0..targets.len())
        .filter(|&r| targets[r] != NO_TARGET)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;
    use crate::testing::TestResult;

    fn config() -> TestResult<OptConfig> {
        let mut c = preset("opt-mini").ok_or("no preset opt-mini")?;
        c.vocab_size = 10;
        c.max_position_embeddings = 6;
        Ok(c)
    }

    #[test]
    fn next_token_targets_shift_labels_by_one() -> TestResult {
        let tokens = TokenBatch::unpadded(1, 4, vec![5, 6, 7, 8]);
        let batch = Batch {
            tokens,
            targets: Targets::NextToken {
                labels: vec![-100, 6, -100, 8],
            },
        };
        batch.validate(&config()?)?;
        assert_eq!(batch.row_targets(), vec![6, NO_TARGET, 8, NO_TARGET]);
        assert_eq!(batch.loss_terms(), 2);
        Ok(())
    }

    #[test]
    fn choice_targets_score_answer_tokens_from_the_previous_position() -> TestResult {
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
        batch.validate(&config()?)?;
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
        Ok(())
    }

    #[test]
    fn datasets_pack_into_padded_batches() -> TestResult {
        let lm = Dataset::Lm(vec![
            LmExample::from_ids(vec![2, 5, 6]),
            LmExample::from_ids(vec![2, 7]),
        ]);
        let [right] = &batches(&lm, 4, 1, Padding::Right)?[..] else {
            panic!()
        };
        assert_eq!(right.tokens.input_ids, vec![2, 5, 6, 2, 7, 1]);
        assert_eq!(right.tokens.attention_mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(
            right.row_targets(),
            vec![5, 6, NO_TARGET, 7, NO_TARGET, NO_TARGET]
        );
        let [left] = &batches(&lm, 4, 1, Padding::Left)?[..] else {
            panic!()
        };
        assert_eq!(left.tokens.input_ids, vec![2, 5, 6, 1, 2, 7]);
        assert_eq!(
            left.row_targets(),
            vec![5, 6, NO_TARGET, NO_TARGET, 7, NO_TARGET]
        );
        assert_eq!(batches(&lm, 1, 1, Padding::Right)?.len(), 2);

        let e = |gold| ClassificationExample {
            prompt: vec![2, 4],
            candidates: vec![vec![5], vec![6, 7]],
            gold,
        };
        let cls = Dataset::Classification(vec![e(0), e(1), e(0)]);
        let packed = batches(&cls, 5, 1, Padding::Left)?;
        assert_eq!(packed.len(), 2, "whole examples only: 2 + 2 rows, then 2");
        packed[0].validate(&config()?)?;
        assert_eq!(packed[0].tokens.input_ids[..4], [1, 2, 4, 5]);
        let Targets::Choice { questions } = &packed[0].targets else {
            panic!()
        };
        assert_eq!(
            questions[1].candidates[0],
            Candidate {
                row: 2,
                answer: 3..4
            }
        );
        assert_eq!(questions[1].gold, 1);
        assert_eq!(
            packed[0].row_targets()[..4],
            [NO_TARGET, NO_TARGET, 5, NO_TARGET]
        );
        Ok(())
    }

    #[test]
    fn bad_batches_are_named_errors() -> TestResult {
        let config = config()?;
        let ids = TokenBatch::unpadded(1, 3, vec![4, 12, 5]);
        let err = Batch {
            tokens: ids,
            targets: Targets::NextToken {
                labels: vec![-100; 3],
            },
        }
        .validate(&config)
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
        .validate(&config)
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
        .validate(&config)
        .unwrap_err()
        .to_string();
        assert!(err.contains("two candidates"), "{err}");
        Ok(())
    }
}
