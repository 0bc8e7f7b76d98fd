//! A batch uploaded to a backend, with the rows its loss reads.

use std::marker::PhantomData;

use crate::backend::{Backend, Scalar};
use crate::error::Result;
use crate::model::batch::{Batch, scored_rows};
use crate::model::memory::PassShape;
use crate::model::ops::loss::LossHead;

/// A batch checked against a model and uploaded to its backend.
pub struct Prepared<T: Scalar, B: Backend<T>> {
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    pub(crate) ids: B::Index,
    pub(crate) positions: B::Index,
    pub(crate) key_mask: B::Index,
    /// Per row: the token its logits are scored against, or `NO_TARGET`.
    targets: B::Index,
    /// The rows with a target (ascending), the only ones whose logits a loss reads.
    pub(crate) scored: Vec<usize>,
    scored_ids: B::Index,
    /// Their targets.
    scored_targets: B::Index,
    pub(crate) head: LossHead,
    pub(crate) terms: usize,
    _scalar: PhantomData<T>,
}

/// The rows the LM head runs on.
pub(crate) struct HeadRows<'x, I> {
    pub n: usize,
    /// Where they sit among all rows; `None`: all rows, in order.
    pub gather: Option<&'x I>,
    /// The target of each (or `NO_TARGET`).
    pub targets: &'x I,
}

impl<T: Scalar, B: Backend<T>> Prepared<T, B> {
    /// Uploads `batch` (already validated against the model) with the position id
    /// of every token, as the architecture numbers them.
    pub(crate) fn upload(b: &B, batch: &Batch, positions: &[u32]) -> Result<Self> {
        let t = &batch.tokens;
        let targets = batch.row_targets();
        let scored = scored_rows(&targets);
        let scored_ids: Vec<u32> = scored.iter().map(|&r| r as u32).collect();
        let scored_targets: Vec<u32> = scored.iter().map(|&r| targets[r]).collect();
        Ok(Prepared {
            batch: t.batch,
            seq: t.seq,
            ids: b.upload_index(&t.input_ids)?,
            positions: b.upload_index(positions)?,
            key_mask: b.upload_index(&t.attention_mask)?,
            targets: b.upload_index(&targets)?,
            scored_ids: b.upload_index(&scored_ids)?,
            scored_targets: b.upload_index(&scored_targets)?,
            scored,
            head: batch.loss_head(),
            terms: batch.loss_terms(),
            _scalar: PhantomData,
        })
    }

    /// Each question's candidate scores from the rows' log-probabilities (empty for a
    /// next-token batch).
    pub(crate) fn choice_scores(&self, row_lp: &[f64]) -> Vec<Vec<f64>> {
        self.head.choice_scores(row_lp)
    }

    /// The sizes a pass over this batch allocates for (the LM head on the scored
    /// rows).
    pub fn pass_shape(&self) -> PassShape {
        PassShape {
            batch: self.batch,
            seq: self.seq,
            head_rows: self.scored.len(),
        }
    }

    /// Tokens in the batch.
    pub(crate) fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// The rows the LM head runs on: every row when `all_rows` (for the logits),
    /// else only the scored ones, which gives the same loss and derivatives exactly
    /// (the other rows' logits receive no adjoint).
    pub(crate) fn head_rows(&self, all_rows: bool) -> HeadRows<'_, B::Index> {
        if all_rows {
            HeadRows {
                n: self.rows(),
                gather: None,
                targets: &self.targets,
            }
        } else {
            HeadRows {
                n: self.scored.len(),
                gather: Some(&self.scored_ids),
                targets: &self.scored_targets,
            }
        }
    }
}
