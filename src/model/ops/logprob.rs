//! Token log-probabilities `lp[r] = logits[r, t_r] - logsumexp(logits[r])`: the part
//! of both losses that touches the vocabulary (the rest, in `loss`, is small and
//! runs on the host).
//!
//! Rules, with `p = softmax(logits[r])` (saved by the forward):
//! - JVP: `lp'[r] = logits'[r, t] - p . logits'[r]`;
//! - VJP: `logitsb[r] = lpb[r] (e_t - p)`;
//! - JVP of the VJP: `logitsb'[r] = lpb'[r] (e_t - p) - lpb[r] p'`,
//!   `p' = p (logits'[r] - p . logits'[r])`.
//!
//! Rows whose target is [`NO_TARGET`](crate::backend::NO_TARGET) are not scored.
//!
//! [`HeadLogProb`] is the same with the LM head folded in, for value passes only.

use crate::backend::{Backend, Gemm, Scalar};

/// Log-probabilities of one target token per row over a vocabulary.
#[derive(Clone, Copy, Debug)]
pub struct LogProb {
    pub rows: usize,
    pub vocab: usize,
}

impl LogProb {
    /// `lp` (one per row) and the saved softmax `probs`.
    pub fn forward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        lp: B::ViewMut<'_>,
        probs: B::ViewMut<'_>,
        logits: B::View<'_>,
        targets: &B::Index,
    ) {
        b.logprob_forward(lp, probs, logits, targets, self.rows, self.vocab);
    }

    pub fn jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        lp_dot: B::ViewMut<'_>,
        probs: B::View<'_>,
        logits_dot: B::View<'_>,
        targets: &B::Index,
    ) {
        b.logprob_jvp(lp_dot, probs, logits_dot, targets, self.rows, self.vocab);
    }

    /// Writes `dlogits`.
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dlogits: B::ViewMut<'_>,
        probs: B::View<'_>,
        dlp: B::View<'_>,
        targets: &B::Index,
    ) {
        b.logprob_backward(dlogits, probs, dlp, targets, self.rows, self.vocab);
    }

    /// Writes `dlogits'`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dlogits_dot: B::ViewMut<'_>,
        probs: B::View<'_>,
        logits_dot: B::View<'_>,
        dlp: B::View<'_>,
        dlp_dot: B::View<'_>,
        targets: &B::Index,
    ) {
        b.logprob_backward_jvp(
            dlogits_dot,
            probs,
            logits_dot,
            dlp,
            dlp_dot,
            targets,
            self.rows,
            self.vocab,
        );
    }
}

/// The LM head `logits = x W^T` and [`LogProb`] as one op of `x`, for a value pass
/// whose reverse sweep wants the adjoint of `x` but not of `W` (a masked gradient
/// that leaves the embeddings out): the forward keeps each row's `jac = d lp / d x
/// = W[t] - sum_v softmax(logits)_v W[v]` instead of the `rows x vocab` softmax, and
/// the VJP is `xb[r] = lpb[r] jac[r]`, so the logits are never formed whole and the
/// weight is read once (see `Backend::logprob_head_forward`).
#[derive(Clone, Copy, Debug)]
pub struct HeadLogProb {
    pub rows: usize,
    /// Width of `x`.
    pub width: usize,
    pub vocab: usize,
}

impl HeadLogProb {
    /// `lp` and `jac`, with `scratch` (`rows x vocab`) as working space; false when
    /// the backend does not fuse, and nothing is written.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        lp: B::ViewMut<'_>,
        jac: B::ViewMut<'_>,
        scratch: B::ViewMut<'_>,
        x: B::View<'_>,
        weight: B::View<'_>,
        targets: &B::Index,
    ) -> bool {
        let (rows, width, vocab) = (self.rows, self.width, self.vocab);
        b.logprob_head_forward(lp, jac, scratch, x, weight, targets, rows, width, vocab)
    }

    /// Writes `dx[r] = dlp[r] jac[r]`: a batch of `1 x 1` by `1 x width` products,
    /// one per row, which every backend's GEMM already runs.
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dx: B::ViewMut<'_>,
        jac: B::View<'_>,
        dlp: B::View<'_>,
    ) {
        let w = self.width;
        let rows_scaled = Gemm::nn(1, w, 1).batched(self.rows, 1, w, w);
        b.gemm(&rows_scaled, dlp, jac, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, NO_TARGET};
    use crate::model::ops::check::{Rules, check_rules};

    const OP: LogProb = LogProb { rows: 4, vocab: 6 };
    const TARGETS: [u32; 4] = [3, NO_TARGET, 0, 5];

    /// Flat input: the logits.
    struct Op;

    fn forward(x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut lp = vec![0.0; OP.rows];
        let mut probs = vec![0.0; x.len()];
        OP.forward::<f64, Cpu>(&Cpu, &mut lp, &mut probs, x, &TARGETS.to_vec());
        (lp, probs)
    }

    impl Rules for Op {
        fn input_len(&self) -> usize {
            OP.rows * OP.vocab
        }
        /// Large logits: the max subtraction must keep the exponentials finite.
        fn point(&self, seed: u64) -> Vec<f64> {
            crate::model::ops::check::normal(self.input_len(), seed)
                .iter()
                .map(|x| 300.0 + 3.0 * x)
                .collect()
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            forward(x).0
        }
        fn jvp(&self, x: &[f64], xd: &[f64]) -> Vec<f64> {
            let (_, probs) = forward(x);
            let mut lpd = vec![0.0; OP.rows];
            OP.jvp::<f64, Cpu>(&Cpu, &mut lpd, &probs, xd, &TARGETS.to_vec());
            lpd
        }
        fn backward(&self, x: &[f64], yb: &[f64]) -> Vec<f64> {
            let (_, probs) = forward(x);
            let mut g = vec![0.0; x.len()];
            OP.backward::<f64, Cpu>(&Cpu, &mut g, &probs, yb, &TARGETS.to_vec());
            g
        }
        fn backward_jvp(&self, x: &[f64], xd: &[f64], yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            let (_, probs) = forward(x);
            let mut g = vec![0.0; x.len()];
            OP.backward_jvp::<f64, Cpu>(&Cpu, &mut g, &probs, xd, yb, ybd, &TARGETS.to_vec());
            g
        }
    }

    #[test]
    fn four_rules_match_central_differences() {
        check_rules("logprob", &Op, 71);
    }

    #[test]
    fn forward_is_a_log_softmax_entry() {
        let x: Vec<f64> = (0..24).map(|i| (i as f64 * 0.7).sin() * 4.0).collect();
        let (lp, _) = forward(&x);
        let row = &x[..6];
        let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        assert!((lp[0] - (row[3] - lse)).abs() < 1e-14);
        assert_eq!(lp[1], 0.0);
    }
}
