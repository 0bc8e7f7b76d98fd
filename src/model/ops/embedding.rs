//! Embedding lookups: the token table `E` (tied to the LM head) and OPT's learned
//! positions, stored with an offset of 2 and counted from the attention mask.
//!
//! A lookup `y[r] = E[id_r]` is linear in the table, so its JVP is the lookup of the
//! tangent table, its VJP the scatter-add `Eb[id_r] += yb[r]`, and the JVP of the VJP
//! the scatter-add of `yb'`. A sparse (masked) table tangent is looked up entry by
//! entry, and a masked table gradient summed only at the mask's entries.

use super::{AdjointOut, Tangent};
use crate::backend::{Backend, Scalar};
use crate::model::config::POSITION_OFFSET;

/// A lookup of `rows` ids in a table of rows of `width`.
#[derive(Clone, Copy, Debug)]
pub struct Embedding {
    pub rows: usize,
    pub width: usize,
}

impl Embedding {
    /// `out[r] (+)= table[ids[r]]`.
    pub fn forward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out: B::ViewMut<'_>,
        ids: &B::Index,
        table: B::View<'_>,
        accumulate: bool,
    ) {
        b.embedding_forward(out, ids, table, self.rows, self.width, accumulate);
    }

    /// `out'[r] (+)= table'[ids[r]]`; returns whether the table tangent is nonzero.
    pub fn jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out_dot: B::ViewMut<'_>,
        ids: &B::Index,
        table_dot: &Tangent<'_, T, B>,
        accumulate: bool,
    ) -> bool {
        match table_dot {
            Tangent::Zero => {
                if !accumulate {
                    b.zero(out_dot);
                }
                return false;
            }
            Tangent::Dense(td) => {
                b.embedding_forward(out_dot, ids, *td, self.rows, self.width, accumulate)
            }
            Tangent::Sparse { idx, values } => {
                let mut out_dot = out_dot;
                if !accumulate {
                    b.zero(b.reborrow(&mut out_dot));
                }
                b.embedding_forward_sparse(out_dot, ids, idx, *values, self.rows, self.width);
            }
        }
        true
    }

    /// `dtable[ids[r]] += dout[r]`, densely or at a mask's entries.
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dtable: AdjointOut<'_, T, B>,
        dout: B::View<'_>,
        ids: &B::Index,
    ) {
        match dtable {
            AdjointOut::Skip => {}
            AdjointOut::Dense(d) => b.embedding_backward(d, dout, ids, self.rows, self.width),
            AdjointOut::Sparse { idx, out } => {
                b.embedding_backward_sampled(out, dout, ids, idx, self.rows, self.width)
            }
        }
    }

    /// `dtable'[ids[r]] += dout'[r]`: the lookup is linear in the table and the
    /// adjoint does not depend on it, so the tangent of the adjoint is the adjoint
    /// of the tangent, the same scatter-add.
    pub fn backward_jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dtable_dot: AdjointOut<'_, T, B>,
        dout_dot: B::View<'_>,
        ids: &B::Index,
    ) {
        self.backward(b, dtable_dot, dout_dot, ids);
    }
}

/// OPT's position ids, as HuggingFace computes them: the running count of attended
/// tokens in each row, minus one, plus the offset of 2; padding positions get 1.
/// So a row's first real token has position 2 whether the row is padded on the left,
/// on the right, or not at all. `mask` is `batch x seq` of 0/1.
pub fn positions(mask: &[u32], batch: usize, seq: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(batch * seq);
    for row in mask[..batch * seq].chunks(seq) {
        let mut count = 0u32;
        for &m in row {
            count += m;
            let pos = if m != 0 { count - 1 } else { u32::MAX };
            // u32::MAX + 2 wraps to 1: HuggingFace's -1 + offset
            out.push(pos.wrapping_add(POSITION_OFFSET as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::ops::check::{Rules, check_rules, normal, rel_err};

    const E: Embedding = Embedding { rows: 5, width: 3 };
    const IDS: [u32; 5] = [2, 0, 2, 3, 1];
    const TABLE_ROWS: usize = 4;

    /// Flat input: the table.
    struct Op;

    impl Rules for Op {
        fn input_len(&self) -> usize {
            TABLE_ROWS * E.width
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            let mut y = vec![0.0; E.rows * E.width];
            E.forward::<f64, Cpu>(&Cpu, &mut y, &IDS.to_vec(), x, false);
            y
        }
        fn jvp(&self, _x: &[f64], xd: &[f64]) -> Vec<f64> {
            let mut y = vec![0.0; E.rows * E.width];
            E.jvp::<f64, Cpu>(&Cpu, &mut y, &IDS.to_vec(), &Tangent::Dense(xd), false);
            y
        }
        fn backward(&self, x: &[f64], yb: &[f64]) -> Vec<f64> {
            let mut g = vec![0.0; x.len()];
            E.backward::<f64, Cpu>(&Cpu, AdjointOut::Dense(&mut g[..]), yb, &IDS.to_vec());
            g
        }
        fn backward_jvp(&self, x: &[f64], _xd: &[f64], _yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            let mut g = vec![0.0; x.len()];
            E.backward_jvp::<f64, Cpu>(&Cpu, AdjointOut::Dense(&mut g[..]), ybd, &IDS.to_vec());
            g
        }
    }

    #[test]
    fn four_rules_match_central_differences() {
        check_rules("embedding", &Op, 61);
    }

    #[test]
    fn sparse_lookup_and_sampled_gradient_match_dense_ones() {
        let idx: Vec<u32> = vec![1, 6, 7, 11];
        let values = normal(idx.len(), 1);
        let mut dense = [0.0; TABLE_ROWS * E.width];
        for (&i, &v) in idx.iter().zip(&values) {
            dense[i as usize] = v;
        }
        let ids = IDS.to_vec();
        let mut y_sparse = normal(E.rows * E.width, 2);
        let mut y_dense = y_sparse.clone();
        E.jvp::<f64, Cpu>(
            &Cpu,
            &mut y_sparse,
            &ids,
            &Tangent::Sparse {
                idx: &idx,
                values: &values,
            },
            true,
        );
        E.jvp::<f64, Cpu>(&Cpu, &mut y_dense, &ids, &Tangent::Dense(&dense[..]), true);
        assert!(rel_err(&y_sparse, &y_dense) < 1e-15);

        let dout = normal(E.rows * E.width, 3);
        let mut full = [0.0; TABLE_ROWS * E.width];
        E.backward_jvp::<f64, Cpu>(&Cpu, AdjointOut::Dense(&mut full[..]), &dout, &ids);
        let mut masked = vec![0.0; idx.len()];
        E.backward_jvp::<f64, Cpu>(
            &Cpu,
            AdjointOut::Sparse {
                idx: &idx,
                out: &mut masked[..],
            },
            &dout,
            &ids,
        );
        let gathered: Vec<f64> = idx.iter().map(|&i| full[i as usize]).collect();
        assert!(rel_err(&masked, &gathered) < 1e-15);
    }

    #[test]
    fn positions_follow_huggingface_for_left_and_right_padding() {
        let mask = [1, 1, 1, 0, 0, /* left padded */ 0, 0, 1, 1, 1];
        assert_eq!(positions(&mask, 2, 5), vec![2, 3, 4, 1, 1, 1, 1, 2, 3, 4]);
    }
}
