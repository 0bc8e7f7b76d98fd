//! Causal multi-head self-attention with a key padding mask (the part between the
//! q/k/v projections and the output projection).
//!
//! Per sequence and head, `P = softmax(q k^T / sqrt(d))` over keys `j <= i` that are
//! not padding, `o = P v`. A query with no allowed key (left padding) outputs zeros.
//! The rules are written out in `backend/cpu/attention.rs`; the probabilities `P` and
//! their tangent are saved by the forward and the JVP for the reverse sweep.

use crate::backend::{AttentionDims, Backend, Scalar};

/// The attention of one layer on one batch.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub dims: AttentionDims,
}

/// Queries, keys and values (`rows x width` each).
#[derive(Clone, Copy)]
pub struct Qkv<V> {
    pub q: V,
    pub k: V,
    pub v: V,
}

impl<V> Qkv<V> {
    /// Applies `f` to each of q, k and v.
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> Qkv<W> {
        Qkv {
            q: f(self.q),
            k: f(self.k),
            v: f(self.v),
        }
    }
}

impl Attention {
    /// `out = P v`, saving `P` in `probs`.
    pub fn forward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out: B::ViewMut<'_>,
        probs: B::ViewMut<'_>,
        x: Qkv<B::View<'_>>,
        key_mask: &B::Index,
    ) {
        b.attention_forward(out, probs, x.q, x.k, x.v, key_mask, self.dims);
    }

    /// `out' = P' v + P v'`, saving `P'` in `probs_dot`.
    pub fn jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out_dot: B::ViewMut<'_>,
        probs_dot: B::ViewMut<'_>,
        probs: B::View<'_>,
        x: Qkv<B::View<'_>>,
        x_dot: Qkv<B::View<'_>>,
    ) {
        b.attention_jvp(
            out_dot, probs_dot, probs, x.q, x.k, x.v, x_dot.q, x_dot.k, x_dot.v, self.dims,
        );
    }

    /// Writes the adjoints of q, k and v.
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dx: Qkv<B::ViewMut<'_>>,
        dout: B::View<'_>,
        probs: B::View<'_>,
        x: Qkv<B::View<'_>>,
    ) {
        b.attention_backward(dx.q, dx.k, dx.v, dout, probs, x.q, x.k, x.v, self.dims);
    }

    /// Writes the tangents of the adjoints of q, k and v.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dx_dot: Qkv<B::ViewMut<'_>>,
        dout: B::View<'_>,
        dout_dot: B::View<'_>,
        probs: B::View<'_>,
        probs_dot: B::View<'_>,
        x: Qkv<B::View<'_>>,
        x_dot: Qkv<B::View<'_>>,
    ) {
        b.attention_backward_jvp(
            dx_dot.q, dx_dot.k, dx_dot.v, dout, dout_dot, probs, probs_dot, x.q, x.k, x.v, x_dot.q,
            x_dot.k, x_dot.v, self.dims,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::ops::check::{Rules, check_rules};

    const DIMS: AttentionDims = AttentionDims {
        batch: 2,
        seq: 4,
        heads: 2,
        head_dim: 3,
    };
    /// Sequence 0 is unpadded; sequence 1 has one left and one right padding position,
    /// so its first query has no allowed key at all.
    const MASK: [u32; 8] = [1, 1, 1, 1, 0, 1, 1, 0];

    /// Flat input `[q, k, v]` of attention with these dimensions and key mask.
    struct Op {
        dims: AttentionDims,
        mask: Vec<u32>,
    }

    impl Op {
        fn small() -> Self {
            Op {
                dims: DIMS,
                mask: MASK.to_vec(),
            }
        }

        fn len(&self) -> usize {
            self.dims.rows() * self.dims.width()
        }

        fn split<'x>(&self, x: &'x [f64]) -> Qkv<&'x [f64]> {
            let n = self.len();
            Qkv {
                q: &x[..n],
                k: &x[n..2 * n],
                v: &x[2 * n..],
            }
        }

        fn grads<'x>(&self, g: &'x mut [f64]) -> Qkv<&'x mut [f64]> {
            let (q, rest) = g.split_at_mut(self.len());
            let (k, v) = rest.split_at_mut(self.len());
            Qkv { q, k, v }
        }

        fn att(&self) -> Attention {
            Attention { dims: self.dims }
        }

        fn run_forward(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
            let mut out = vec![0.0; self.len()];
            let mut probs = vec![0.0; self.dims.probs_len()];
            self.att()
                .forward::<f64, Cpu>(&Cpu, &mut out, &mut probs, self.split(x), &self.mask);
            (out, probs)
        }

        fn run_jvp(&self, x: &[f64], xd: &[f64]) -> (Vec<f64>, Vec<f64>) {
            let (_, probs) = self.run_forward(x);
            let mut out = vec![0.0; self.len()];
            let mut pd = vec![0.0; self.dims.probs_len()];
            self.att().jvp::<f64, Cpu>(
                &Cpu,
                &mut out,
                &mut pd,
                &probs,
                self.split(x),
                self.split(xd),
            );
            (out, pd)
        }
    }

    impl Rules for Op {
        fn input_len(&self) -> usize {
            3 * self.len()
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            self.run_forward(x).0
        }
        fn jvp(&self, x: &[f64], xd: &[f64]) -> Vec<f64> {
            self.run_jvp(x, xd).0
        }
        fn backward(&self, x: &[f64], yb: &[f64]) -> Vec<f64> {
            let (_, probs) = self.run_forward(x);
            let mut g = vec![0.0; x.len()];
            self.att()
                .backward::<f64, Cpu>(&Cpu, self.grads(&mut g), yb, &probs, self.split(x));
            g
        }
        fn backward_jvp(&self, x: &[f64], xd: &[f64], yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            let (_, probs) = self.run_forward(x);
            let (_, pd) = self.run_jvp(x, xd);
            let mut g = vec![0.0; x.len()];
            self.att().backward_jvp::<f64, Cpu>(
                &Cpu,
                self.grads(&mut g),
                yb,
                ybd,
                &probs,
                &pd,
                self.split(x),
                self.split(xd),
            );
            g
        }
    }

    #[test]
    fn four_rules_match_central_differences() {
        check_rules("attention", &Op::small(), 31);
        // 37 positions: the CPU kernels' causal blocks (16, 16 and a ragged 5) skip
        // the zero blocks above the diagonal; two left- and three right-padded keys
        let long = Op {
            dims: AttentionDims {
                batch: 1,
                seq: 37,
                heads: 2,
                head_dim: 3,
            },
            mask: (0..37).map(|j| u32::from((2..34).contains(&j))).collect(),
        };
        check_rules("attention, 37 positions", &long, 32);
    }

    #[test]
    fn masked_keys_get_no_weight_and_empty_rows_are_zero() {
        let op = Op::small();
        let x = crate::model::ops::check::normal(op.input_len(), 5);
        let (out, probs) = op.run_forward(&x);
        let n = DIMS.seq;
        for p in 0..DIMS.batch * DIMS.heads {
            let b = p / DIMS.heads;
            for i in 0..n {
                let row = &probs[(p * n + i) * n..(p * n + i + 1) * n];
                let allowed: Vec<bool> = (0..n).map(|j| j <= i && MASK[b * n + j] != 0).collect();
                let total: f64 = row.iter().sum();
                if allowed.iter().any(|&a| a) {
                    assert!((total - 1.0).abs() < 1e-14);
                } else {
                    assert_eq!(total, 0.0);
                }
                for j in 0..n {
                    if !allowed[j] {
                        assert_eq!(row[j], 0.0);
                    }
                }
            }
        }
        // sequence 1, query 0: no allowed key, zero output and no NaN anywhere
        let w = DIMS.width();
        assert!(out[4 * w..5 * w].iter().all(|&x| x == 0.0));
        assert!(out.iter().all(|x| x.is_finite()));
    }
}
