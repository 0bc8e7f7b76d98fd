//! The LM head of a decoder, the log-probabilities of the targets, and the loss.
//!
//! The head (a `vocab x embed` product per row, most of a pass's work on a small
//! model with a large vocabulary) runs only on the rows whose logits a loss reads,
//! gathered from the rest; the loss itself is evaluated on the host from the rows'
//! log-probabilities, and its adjoint is written back for the reverse sweep.

use super::prepared::{HeadRows, Prepared};
use super::{Lin, Outputs, Pass, PassScalars};
use crate::backend::{Backend, Scalar};
use crate::error::Result;
use crate::model::ops::linear::Linear;
use crate::model::ops::logprob::{HeadLogProb, LogProb};

/// The LM head: `logits = x W^T` (W the tied token embedding or `lm_head`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LmHead {
    pub weight: Lin,
    /// Width of the head's input.
    pub embed: usize,
    pub vocab: usize,
}

/// The head's buffers, for the rows whose logits a loss reads (every row when the
/// logits themselves are asked for): a classification batch scores a few positions
/// per sequence, and the `rows x vocab` logits of the others would cost most of a
/// pass on a 50k vocabulary. Sized for `capacity` rows, grown on demand.
pub(crate) struct HeadBuffers<Buf> {
    capacity: usize,
    /// The head's input at the head rows (a pair): gathered from the full input.
    x: Buf,
    logits: Buf,
    /// Softmax of each head row's logits.
    probs: Buf,
    /// Log-probability of each head row's target (and its tangent).
    lp: Buf,
    /// The reverse sweep's, allocated with the other adjoints.
    adj: Option<HeadAdjoints<Buf>>,
    /// Whether the last forward ran the head fused with the log-probabilities
    /// ([`HeadLogProb`]): its reverse then reads `jac`, not the softmax.
    fused: bool,
    /// Every row's log-probability from the last loss evaluation (0 where nothing
    /// is scored), as the loss head read them.
    pub row_lp: Vec<f64>,
}

/// Adjoint pairs of the head's buffers.
struct HeadAdjoints<Buf> {
    x: Buf,
    logits: Buf,
    lp: Buf,
    /// `d lp / d x` at each head row, from a fused forward (value passes only).
    jac: Buf,
}

impl<Buf> HeadBuffers<Buf> {
    pub fn empty<T: Scalar, B: Backend<T, Buf = Buf>>(b: &B) -> Result<Self> {
        Ok(HeadBuffers {
            capacity: 0,
            x: b.zeros(0)?,
            logits: b.zeros(0)?,
            probs: b.zeros(0)?,
            lp: b.zeros(0)?,
            adj: None,
            fused: false,
            row_lp: Vec::new(),
        })
    }

    /// Calls `f` on every buffer (for counting what a workspace holds).
    #[cfg(test)]
    pub(crate) fn for_each_buf(&self, mut f: impl FnMut(&Buf)) {
        for buf in [&self.x, &self.logits, &self.probs, &self.lp] {
            f(buf);
        }
        if let Some(a) = &self.adj {
            for buf in [&a.x, &a.logits, &a.lp, &a.jac] {
                f(buf);
            }
        }
    }

    /// Makes the buffers hold `rows` rows of pairs of `pair` halves (and their
    /// adjoints when `reverse`, with the fused head's `jac` in a value pass), growing
    /// them when they are too small.
    pub fn reserve<T: Scalar, B: Backend<T, Buf = Buf>>(
        &mut self,
        b: &B,
        head: LmHead,
        rows: usize,
        pair: usize,
        reverse: bool,
    ) -> Result<()> {
        let (e, v) = (head.embed, head.vocab);
        if rows > self.capacity {
            // drop the old buffers before allocating new ones
            let row_lp = std::mem::take(&mut self.row_lp);
            *self = HeadBuffers::empty(b)?;
            self.x = b.zeros(pair * rows * e)?;
            self.logits = b.zeros(pair * rows * v)?;
            self.probs = b.zeros(rows * v)?;
            self.lp = b.zeros(pair * rows)?;
            self.capacity = rows;
            self.row_lp = row_lp;
        }
        if reverse && self.adj.is_none() {
            let n = self.capacity;
            self.adj = Some(HeadAdjoints {
                x: b.zeros(pair * n * e)?,
                logits: b.zeros(pair * n * v)?,
                lp: b.zeros(pair * n)?,
                jac: b.zeros(if pair == 1 { n * e } else { 0 })?,
            });
        }
        Ok(())
    }

    /// Whether the last forward ran the head fused with the log-probabilities.
    #[cfg(test)]
    pub(crate) fn fused(&self) -> bool {
        self.fused
    }

    /// The logits of the first `n` elements (a pass over every row: `rows x vocab`).
    pub fn logits<'a, T: Scalar, B: Backend<T, Buf = Buf>>(
        &'a self,
        b: &B,
        n: usize,
    ) -> B::View<'a> {
        b.sub(b.view(&self.logits), 0..n)
    }
}

/// `dst[i] = src[rows[i]]` for `n` rows of `width`: a row gather is a table lookup.
fn gather_rows<T: Scalar, B: Backend<T>>(
    b: &B,
    dst: B::ViewMut<'_>,
    src: B::View<'_>,
    rows: &B::Index,
    n: usize,
    width: usize,
) {
    b.embedding_forward(dst, rows, src, n, width, false);
}

/// `dst[rows[i]] += src[i]` for `n` rows of `width` (the adjoint of [`gather_rows`]).
fn scatter_add_rows<T: Scalar, B: Backend<T>>(
    b: &B,
    dst: B::ViewMut<'_>,
    src: B::View<'_>,
    rows: &B::Index,
    n: usize,
    width: usize,
) {
    b.embedding_backward(dst, src, rows, n, width);
}

impl<T: Scalar, B: Backend<T>> Pass<'_, T, B> {
    /// The LM head and the targets' log-probabilities on the head rows, from `x`,
    /// the head's input at every row; fused into one [`HeadLogProb`] when `fuse` (a
    /// value pass whose reverse sweep wants no output of the head's weight) and the
    /// backend fuses. Returns whether the logits' tangent may be nonzero.
    pub fn head_forward(
        &self,
        head: LmHead,
        bufs: &mut HeadBuffers<B::Buf>,
        x: &B::Buf,
        x_live: bool,
        rows: &HeadRows<'_, B::Index>,
        fuse: bool,
    ) -> bool {
        let b = self.b;
        let (e, v) = (head.embed, head.vocab);
        let n = rows.n;
        bufs.fused = false;
        if n == 0 {
            return false;
        }
        let p = self.pair_len();
        let x = match rows.gather {
            None => b.view(x),
            Some(idx) => {
                {
                    let gathered = b.sub_mut(b.view_mut(&mut bufs.x), 0..p * n * e);
                    let (xv, xt) = b.split_mut(gathered, n * e);
                    gather_rows(b, xv, self.val(x, e), idx, n, e);
                    if self.dual && x_live {
                        gather_rows(b, xt, self.tan(x, e), idx, n, e);
                    }
                }
                b.sub(b.view(&bufs.x), 0..p * n * e)
            }
        };
        if fuse && !self.dual && head.weight.b.is_none() {
            let op = HeadLogProb {
                rows: n,
                width: e,
                vocab: v,
            };
            let adj = bufs.adj.as_mut().expect("head adjoints"); // invariant: reserved by the pass when the reverse sweep follows
            let lp = b.sub_mut(b.view_mut(&mut bufs.lp), 0..n);
            let jac = b.sub_mut(b.view_mut(&mut adj.jac), 0..n * e);
            let scratch = b.sub_mut(b.view_mut(&mut bufs.logits), 0..n * v);
            let w = self.weight(head.weight.w);
            bufs.fused = op.forward(b, lp, jac, scratch, x, w, rows.targets);
            if bufs.fused {
                return false;
            }
        }
        let lin = Linear {
            rows: n,
            in_dim: e,
            out_dim: v,
        };
        let logits = b.sub_mut(b.view_mut(&mut bufs.logits), 0..p * n * v);
        let live = self.linear_forward_views(lin, logits, x, x_live, head.weight);

        let lp = LogProb { rows: n, vocab: v };
        let logits = b.view(&bufs.logits);
        let probs = b.sub_mut(b.view_mut(&mut bufs.probs), 0..n * v);
        let out = b.sub_mut(b.view_mut(&mut bufs.lp), 0..p * n);
        if !self.dual {
            lp.forward(b, out, probs, b.sub(logits, 0..n * v), rows.targets);
            return live;
        }
        let (o, od) = b.split_mut(out, n);
        lp.forward(b, o, probs, b.sub(logits, 0..n * v), rows.targets);
        if live {
            let probs = b.sub(b.view(&bufs.probs), 0..n * v);
            lp.jvp(b, od, probs, b.sub(logits, n * v..2 * n * v), rows.targets);
        } else {
            b.zero(od);
        }
        live
    }

    /// Evaluates the loss head on the host; when the reverse sweep follows, writes the
    /// adjoint of the log-probabilities (and its tangent) for it. `scale` is one over
    /// the dataset's number of loss terms.
    pub fn loss(
        &self,
        bufs: &mut HeadBuffers<B::Buf>,
        batch: &Prepared<T, B>,
        rows: &HeadRows<'_, B::Index>,
        scale: f64,
        reverse: bool,
    ) -> Result<PassScalars> {
        let b = self.b;
        let n = rows.n;
        let p = self.pair_len();
        let mut host = vec![T::ZERO; p * n];
        b.download(b.sub(b.view(&bufs.lp), 0..p * n), &mut host)?;
        let host: Vec<f64> = host.iter().map(|x| x.to_f64()).collect();
        // Every row's log-probability (0 where nothing is scored), as the loss reads them.
        let spread = |half: &[f64]| -> Vec<f64> {
            match rows.gather {
                None => half.to_vec(),
                Some(_) => {
                    let mut all = vec![0.0; batch.rows()];
                    for (&r, &x) in batch.scored.iter().zip(half) {
                        all[r] = x;
                    }
                    all
                }
            }
        };
        let lp = spread(&host[..n]);
        let lp_dot = if self.dual {
            spread(&host[n..])
        } else {
            Vec::new()
        };
        let loss = batch.head.forward(&lp, scale);
        let loss_dot = if self.dual {
            batch.head.jvp(&lp, &lp_dot, scale)
        } else {
            0.0
        };
        if reverse {
            // The adjoints at the head rows (unscored rows receive none).
            let pick = |all: Vec<f64>| -> Vec<T> {
                match rows.gather {
                    None => all.into_iter().map(T::from_f64).collect(),
                    Some(_) => batch.scored.iter().map(|&r| T::from_f64(all[r])).collect(),
                }
            };
            let adj = bufs.adj.as_mut().expect("head adjoints"); // invariant: reserved by the pass when the reverse sweep follows
            let dlp_all = b.sub_mut(b.view_mut(&mut adj.lp), 0..p * n);
            let dlp = pick(batch.head.backward(&lp, scale));
            if self.dual {
                let dlp_dot = pick(batch.head.backward_jvp(&lp, &lp_dot, scale));
                let (t, a) = b.split_mut(dlp_all, n);
                b.write(t, &dlp_dot)?;
                b.write(a, &dlp)?;
            } else {
                b.write(dlp_all, &dlp)?;
            }
        }
        bufs.row_lp = lp;
        Ok(PassScalars { loss, loss_dot })
    }

    /// Adjoint of the LM head and the log-probabilities on the head rows: `dx` (the
    /// adjoint pair of the head's input `x` at every row) is overwritten, zero at the
    /// rows the head did not run on; the head weight's outputs go into `outs`.
    #[allow(clippy::too_many_arguments)]
    pub fn head_backward(
        &self,
        outs: &mut Outputs<'_, T, B>,
        head: LmHead,
        bufs: &mut HeadBuffers<B::Buf>,
        dx: &mut B::Buf,
        x: &B::Buf,
        x_live: bool,
        rows: &HeadRows<'_, B::Index>,
    ) {
        let b = self.b;
        let (e, v) = (head.embed, head.vocab);
        let n = rows.n;
        if n == 0 {
            b.zero(b.view_mut(dx));
            return;
        }
        let p = self.pair_len();
        let adj = bufs.adj.as_mut().expect("head adjoints"); // invariant: reserved by the pass when the reverse sweep follows
        if bufs.fused {
            let op = HeadLogProb {
                rows: n,
                width: e,
                vocab: v,
            };
            self.fused_head_backward(op, adj, dx, rows);
            return;
        }
        let lp = LogProb { rows: n, vocab: v };
        let probs = b.sub(b.view(&bufs.probs), 0..n * v);
        let dlp = b.view(&adj.lp);
        let dlogits = b.sub_mut(b.view_mut(&mut adj.logits), 0..p * n * v);
        if self.dual {
            let (t, a) = b.split_mut(dlogits, n * v);
            let (dlp_dot, dlp) = (b.sub(dlp, 0..n), b.sub(dlp, n..2 * n));
            lp.backward(b, a, probs, dlp, rows.targets);
            let logits_dot = b.sub(b.view(&bufs.logits), n * v..2 * n * v);
            lp.backward_jvp(b, t, probs, logits_dot, dlp, dlp_dot, rows.targets);
        } else {
            lp.backward(b, dlogits, probs, b.sub(dlp, 0..n), rows.targets);
        }

        let lin = Linear {
            rows: n,
            in_dim: e,
            out_dim: v,
        };
        let dy = b.sub(b.view(&adj.logits), 0..p * n * v);
        let Some(idx) = rows.gather else {
            let dx = Some(b.view_mut(dx));
            self.linear_backward_views(outs, lin, dx, false, dy, b.view(x), x_live, head.weight);
            return;
        };
        let x = b.sub(b.view(&bufs.x), 0..p * n * e);
        let dx_rows = Some(b.sub_mut(b.view_mut(&mut adj.x), 0..p * n * e));
        self.linear_backward_views(outs, lin, dx_rows, false, dy, x, x_live, head.weight);
        b.zero(b.view_mut(dx));
        // each half of the pair to its rows
        let r = self.rows;
        for half in 0..p {
            let dst = b.sub_mut(b.view_mut(dx), half * r * e..(half + 1) * r * e);
            let src = b.sub(b.view(&adj.x), half * n * e..(half + 1) * n * e);
            scatter_add_rows(b, dst, src, idx, n, e);
        }
    }

    /// [`Pass::head_backward`] after a fused forward: `dx` at the head rows is each
    /// row's `d lp / d x` scaled by the adjoint of its log-probability.
    fn fused_head_backward(
        &self,
        op: HeadLogProb,
        adj: &mut HeadAdjoints<B::Buf>,
        dx: &mut B::Buf,
        rows: &HeadRows<'_, B::Index>,
    ) {
        let b = self.b;
        let (n, e) = (op.rows, op.width);
        let jac = b.sub(b.view(&adj.jac), 0..n * e);
        let dlp = b.sub(b.view(&adj.lp), 0..n);
        let Some(idx) = rows.gather else {
            op.backward(b, b.view_mut(dx), jac, dlp);
            return;
        };
        op.backward(b, b.sub_mut(b.view_mut(&mut adj.x), 0..n * e), jac, dlp);
        b.zero(b.view_mut(dx));
        let src = b.sub(b.view(&adj.x), 0..n * e);
        scatter_add_rows(b, b.view_mut(dx), src, idx, n, e);
    }
}
