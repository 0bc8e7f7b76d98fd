//! Buffers for passes over batches of one shape, reused across calls: allocating
//! them per call would cost page faults comparable to the arithmetic on a CPU.

use std::marker::PhantomData;

use super::head::HeadBuffers;
use crate::backend::{Backend, Scalar};
use crate::error::Result;

/// What a workspace is sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub batch: usize,
    pub seq: usize,
    /// Pairs (a tangent pass) or values only.
    pub dual: bool,
    /// One block's activations, recomputed by the reverse sweep, or every block's
    /// stored (see `model::memory`).
    pub recompute: bool,
}

/// A pass's buffers: the architecture's activations and adjoints (`S`), and the
/// LM head's.
pub struct Workspace<T: Scalar, B: Backend<T>, S> {
    shape: Shape,
    pub(crate) stored: S,
    pub(crate) head: HeadBuffers<B::Buf>,
    _scalar: PhantomData<T>,
}

impl<T: Scalar, B: Backend<T>, S> Workspace<T, B, S> {
    /// The workspace in `slot` when it has `shape`, else a new one from `make`
    /// (the old buffers are dropped first, so the two never coexist).
    pub(crate) fn reuse<'w>(
        slot: &'w mut Option<Self>,
        b: &B,
        shape: Shape,
        make: impl FnOnce() -> Result<S>,
    ) -> Result<&'w mut Self> {
        if !matches!(slot, Some(ws) if ws.shape == shape) {
            *slot = None;
            *slot = Some(Workspace {
                shape,
                stored: make()?,
                head: HeadBuffers::empty(b)?,
                _scalar: PhantomData,
            });
        }
        Ok(slot.as_mut().expect("workspace was just created")) // invariant: set just above
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// The logits of the last forward pass run over every row (`rows x vocab`
    /// values, on the backend).
    pub(crate) fn logits<'a>(&'a self, b: &B, vocab: usize) -> B::View<'a> {
        self.head
            .logits(b, self.shape.batch * self.shape.seq * vocab)
    }

    /// Every row's log-probability from the last forward pass (0 where unscored).
    pub(crate) fn row_logprobs(&self) -> &[f64] {
        &self.head.row_lp
    }
}
