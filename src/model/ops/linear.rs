//! A linear layer `y = x W^T + b` (`W` is `out x in`, as PyTorch stores it). Also the
//! projections (no bias) and the tied LM head (`W` = the token embedding).
//!
//! Rules:
//! - JVP: `y' = x' W^T + x W'^T + b'`;
//! - VJP: `xb = yb W`, `Wb = yb^T x`, `bb = sum_rows yb`;
//! - JVP of the VJP: `xb' = yb' W + yb W'`, `Wb' = yb'^T x + yb^T x'`, `bb' = sum_rows yb'`.
//!
//! The fused rules work on pairs (see `ops`): `[y; y'] = [x; x'] W^T + [0; x W'^T]`
//! and `[xb'; xb] = [yb'; yb] W + [yb W'; 0]` are two products each instead of three,
//! and `Wb' = [yb'; yb]^T [x; x']` is one product with `K = 2 rows`. A sparse `W'` (a
//! mask) costs `O(nnz rows)` and a masked `Wb'` is formed only at the mask's entries.

use super::{AdjointOut, Tangent};
use crate::backend::{Backend, Gemm, Scalar};

/// A linear map of `rows` rows from `in_dim` to `out_dim` features.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub rows: usize,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// A linear layer's parameters and, in a forward-over-reverse sweep, their tangents.
pub struct LinearParams<'a, T: Scalar, B: Backend<T> + 'a> {
    pub weight: B::View<'a>,
    pub bias: Option<B::View<'a>>,
    pub weight_dot: Tangent<'a, T, B>,
    /// Dense (biases are small; a masked bias tangent is densified by the caller).
    pub bias_dot: Option<B::View<'a>>,
}

/// Where a linear layer's parameter adjoints and their tangents go: accumulated,
/// except that dense weight outputs are overwritten when `weight_replace` is set.
pub struct LinearGrads<'a, T: Scalar, B: Backend<T> + 'a> {
    pub weight: AdjointOut<'a, T, B>,
    pub bias: Option<B::ViewMut<'a>>,
    pub weight_dot: AdjointOut<'a, T, B>,
    pub bias_dot: Option<B::ViewMut<'a>>,
    /// The weight's outputs hold stale values, which the product replaces: a
    /// first write skips both the zeroing pass over the output and the product's
    /// read of it (for OPT-125m, 85M of the 125M entries of a gradient or `H v`).
    pub weight_replace: bool,
}

impl<'a, T: Scalar, B: Backend<T> + 'a> LinearGrads<'a, T, B> {
    /// Nothing wanted (a frozen layer, or one below every masked entry).
    pub fn none() -> Self {
        LinearGrads {
            weight: AdjointOut::Skip,
            bias: None,
            weight_dot: AdjointOut::Skip,
            bias_dot: None,
            weight_replace: false,
        }
    }
}

impl Linear {
    /// `dW (+)= dy^T x` summed over `k_rows` rows (`dy` and `x` may be pairs read as
    /// `2 rows`): the full product into a dense output (replacing its stale values
    /// when `replace`), or one dot product over the rows per mask entry.
    #[allow(clippy::too_many_arguments)]
    fn weight_adjoint<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out: AdjointOut<'_, T, B>,
        replace: bool,
        dy: B::View<'_>,
        x: B::View<'_>,
        k_rows: usize,
    ) {
        let dy = b.sub(dy, 0..k_rows * self.out_dim);
        let x = b.sub(x, 0..k_rows * self.in_dim);
        match out {
            AdjointOut::Skip => {}
            AdjointOut::Dense(dw) => {
                let mut spec = Gemm::tn(self.out_dim, self.in_dim, k_rows);
                spec.accumulate = !replace;
                b.gemm(&spec, dy, x, dw);
            }
            AdjointOut::Sparse { idx, out } => {
                b.sampled_matmul_tn(out, dy, x, idx, k_rows, self.out_dim, self.in_dim)
            }
        }
    }

    fn len_in(&self) -> usize {
        self.rows * self.in_dim
    }

    fn len_out(&self) -> usize {
        self.rows * self.out_dim
    }

    /// `y = x W^T + b`.
    pub fn forward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        mut y: B::ViewMut<'_>,
        x: B::View<'_>,
        weight: B::View<'_>,
        bias: Option<B::View<'_>>,
    ) {
        b.gemm(
            &Gemm::nt(self.rows, self.out_dim, self.in_dim),
            x,
            weight,
            b.reborrow(&mut y),
        );
        if let Some(bias) = bias {
            b.bias_forward(y, bias, self.rows, self.out_dim);
        }
    }

    /// Value and JVP on pairs: `y2 = [y; y']` from `x2 = [x; x']`. When `x_live` is
    /// false the input tangent is known to be zero and its product is skipped.
    /// Returns whether `y'` may be nonzero.
    pub fn forward_dual<'p, T: Scalar, B: Backend<T> + 'p>(
        &self,
        b: &B,
        y2: B::ViewMut<'_>,
        x2: B::View<'_>,
        x_live: bool,
        p: &LinearParams<'p, T, B>,
    ) -> bool {
        let mut y2 = y2;
        let x = b.sub(x2, 0..self.len_in());
        if x_live {
            // [y; y'] = [x; x'] W^T in one product with 2 rows per token
            let both = Gemm::nt(2 * self.rows, self.out_dim, self.in_dim);
            b.gemm(&both, x2, p.weight, b.reborrow(&mut y2));
        }
        let (mut y, mut y_dot) = b.split_mut(y2, self.len_out());
        if !x_live {
            b.gemm(
                &Gemm::nt(self.rows, self.out_dim, self.in_dim),
                x,
                p.weight,
                b.reborrow(&mut y),
            );
            b.zero(b.reborrow(&mut y_dot));
        }
        if let Some(bias) = p.bias {
            b.bias_forward(y, bias, self.rows, self.out_dim);
        }
        self.add_weight_tangent(b, b.reborrow(&mut y_dot), x, &p.weight_dot);
        if let Some(bias_dot) = p.bias_dot {
            b.bias_forward(y_dot, bias_dot, self.rows, self.out_dim);
        }
        x_live || !p.weight_dot.is_zero() || p.bias_dot.is_some()
    }

    /// `y' += x W'^T`.
    fn add_weight_tangent<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        y_dot: B::ViewMut<'_>,
        x: B::View<'_>,
        weight_dot: &Tangent<'_, T, B>,
    ) {
        match weight_dot {
            Tangent::Zero => {}
            Tangent::Dense(wd) => b.gemm(
                &Gemm::nt(self.rows, self.out_dim, self.in_dim).accumulate(),
                x,
                *wd,
                y_dot,
            ),
            Tangent::Sparse { idx, values } => {
                b.sparse_matmul_nt(y_dot, x, idx, *values, self.rows, self.out_dim, self.in_dim)
            }
        }
    }

    /// VJP: `dx (+)= dy W` (accumulated when `dx_accumulate`), `dW += dy^T x`
    /// (dense, or at a mask's entries only), `db += sum_rows dy`, each where `grads`
    /// wants it (tangents are ignored).
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dx: Option<B::ViewMut<'_>>,
        dx_accumulate: bool,
        grads: LinearGrads<'_, T, B>,
        dy: B::View<'_>,
        x: B::View<'_>,
        weight: B::View<'_>,
    ) {
        if let Some(dx) = dx {
            let mut g = Gemm::nn(self.rows, self.in_dim, self.out_dim);
            g.accumulate = dx_accumulate;
            b.gemm(&g, dy, weight, dx);
        }
        self.weight_adjoint(b, grads.weight, grads.weight_replace, dy, x, self.rows);
        if let Some(db) = grads.bias {
            b.bias_backward(db, dy, self.rows, self.out_dim);
        }
    }

    /// VJP and its tangent on pairs: from `dy2 = [dy'; dy]` and `x2 = [x; x']`,
    /// `dx2 = [dx'; dx] (+)= [dy'; dy] W + [dy W'; 0]` when `dx2` is given, the
    /// parameter adjoints and their tangents into `grads`. `x_live` false means `x' = 0`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_dual<'p, T: Scalar, B: Backend<T> + 'p>(
        &self,
        b: &B,
        dx2: Option<B::ViewMut<'_>>,
        dx_accumulate: bool,
        dy2: B::View<'_>,
        x2: B::View<'_>,
        x_live: bool,
        p: &LinearParams<'p, T, B>,
        grads: LinearGrads<'_, T, B>,
    ) {
        let (no, ni) = (self.len_out(), self.len_in());
        let dy_dot = b.sub(dy2, 0..no);
        let dy = b.sub(dy2, no..2 * no);
        let x = b.sub(x2, 0..ni);
        if let Some(dx2) = dx2 {
            let mut g = Gemm::nn(2 * self.rows, self.in_dim, self.out_dim);
            g.accumulate = dx_accumulate;
            let mut dx2 = dx2;
            b.gemm(&g, dy2, p.weight, b.reborrow(&mut dx2));
            let (dx_dot, _) = b.split_mut(dx2, ni);
            match &p.weight_dot {
                Tangent::Zero => {}
                Tangent::Dense(wd) => b.gemm(
                    &Gemm::nn(self.rows, self.in_dim, self.out_dim).accumulate(),
                    dy,
                    *wd,
                    dx_dot,
                ),
                Tangent::Sparse { idx, values } => b.sparse_matmul_nn(
                    dx_dot,
                    dy,
                    idx,
                    *values,
                    self.rows,
                    self.out_dim,
                    self.in_dim,
                ),
            }
        }
        self.weight_adjoint(b, grads.weight, grads.weight_replace, dy, x, self.rows);
        if let Some(db) = grads.bias {
            b.bias_backward(db, dy, self.rows, self.out_dim);
        }
        // Wb' = [dy'; dy]^T [x; x'] (only dy'^T x when x' = 0)
        let k_rows = if x_live { 2 * self.rows } else { self.rows };
        self.weight_adjoint(b, grads.weight_dot, grads.weight_replace, dy2, x2, k_rows);
        if let Some(dbd) = grads.bias_dot {
            b.bias_backward(dbd, dy_dot, self.rows, self.out_dim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::ops::check::{Rules, check_rules, normal, rel_err};

    const L: Linear = Linear {
        rows: 4,
        in_dim: 5,
        out_dim: 3,
    };

    /// Flat input `[x (rows x in), W (out x in), b (out)]`.
    struct Op;

    fn split(x: &[f64]) -> (&[f64], &[f64], &[f64]) {
        let (xi, rest) = x.split_at(L.rows * L.in_dim);
        let (w, bias) = rest.split_at(L.out_dim * L.in_dim);
        (xi, w, bias)
    }

    fn stack(a: &[f64], b: &[f64]) -> Vec<f64> {
        [a, b].concat()
    }

    fn params<'a>(
        w: &'a [f64],
        bias: &'a [f64],
        wd: Tangent<'a, f64, Cpu>,
        bd: Option<&'a [f64]>,
    ) -> LinearParams<'a, f64, Cpu> {
        LinearParams {
            weight: w,
            bias: Some(bias),
            weight_dot: wd,
            bias_dot: bd,
        }
    }

    impl Rules for Op {
        fn input_len(&self) -> usize {
            L.rows * L.in_dim + L.out_dim * L.in_dim + L.out_dim
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            let (xi, w, bias) = split(x);
            let mut y = vec![0.0; L.rows * L.out_dim];
            L.forward::<f64, Cpu>(&Cpu, &mut y, xi, w, Some(bias));
            y
        }
        fn jvp(&self, x: &[f64], xd: &[f64]) -> Vec<f64> {
            let ((xi, w, bias), (xid, wd, bd)) = (split(x), split(xd));
            let mut y2 = vec![0.0; 2 * L.rows * L.out_dim];
            let live = L.forward_dual(
                &Cpu,
                &mut y2,
                &stack(xi, xid),
                true,
                &params(w, bias, Tangent::Dense(wd), Some(bd)),
            );
            assert!(live);
            assert!(rel_err(&y2[..L.rows * L.out_dim], &self.forward(x)) < 1e-15);
            y2.split_off(L.rows * L.out_dim)
        }
        fn backward(&self, x: &[f64], yb: &[f64]) -> Vec<f64> {
            let (xi, w, _) = split(x);
            let mut g = vec![0.0; x.len()];
            let (gx, rest) = g.split_at_mut(L.rows * L.in_dim);
            let (gw, gb) = rest.split_at_mut(L.out_dim * L.in_dim);
            let grads = LinearGrads {
                weight: AdjointOut::Dense(gw),
                bias: Some(gb),
                ..LinearGrads::none()
            };
            L.backward::<f64, Cpu>(&Cpu, Some(gx), false, grads, yb, xi, w);
            g
        }
        fn backward_jvp(&self, x: &[f64], xd: &[f64], yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            let ((xi, w, bias), (xid, wd, bd)) = (split(x), split(xd));
            let mut g = vec![0.0; x.len()];
            let mut dx2 = vec![0.0; 2 * L.rows * L.in_dim];
            let (_, rest) = g.split_at_mut(L.rows * L.in_dim);
            let (gw, gb) = rest.split_at_mut(L.out_dim * L.in_dim);
            let grads = LinearGrads {
                weight: AdjointOut::Skip,
                bias: None,
                weight_dot: AdjointOut::Dense(gw),
                bias_dot: Some(gb),
                weight_replace: false,
            };
            let p = params(w, bias, Tangent::Dense(wd), Some(bd));
            L.backward_dual(
                &Cpu,
                Some(&mut dx2),
                false,
                &stack(ybd, yb),
                &stack(xi, xid),
                true,
                &p,
                grads,
            );
            // the adjoint half equals the plain VJP
            let plain = self.backward(x, yb);
            assert!(rel_err(&dx2[L.rows * L.in_dim..], &plain[..L.rows * L.in_dim]) < 1e-15);
            g[..L.rows * L.in_dim].copy_from_slice(&dx2[..L.rows * L.in_dim]);
            g
        }
    }

    #[test]
    fn four_rules_match_central_differences() {
        check_rules("linear", &Op, 21);
    }

    #[test]
    fn sparse_tangents_and_masked_gradients_match_dense_ones() {
        let (ni, no, nw) = (L.rows * L.in_dim, L.rows * L.out_dim, L.out_dim * L.in_dim);
        let (x, w, bias) = (normal(ni, 1), normal(nw, 2), normal(L.out_dim, 3));
        let (dy, dy_dot) = (normal(no, 4), normal(no, 5));
        let idx: Vec<u32> = vec![0, 3, 7, 14];
        let values = normal(idx.len(), 6);
        let mut dense_wd = vec![0.0; nw];
        for (&i, &v) in idx.iter().zip(&values) {
            dense_wd[i as usize] = v;
        }
        // x' = 0 (not live) against an explicit zero tangent
        let x2 = stack(&x, &vec![0.0; ni]);
        let mut y_sparse = vec![0.0; 2 * no];
        let sparse = params(
            &w,
            &bias,
            Tangent::Sparse {
                idx: &idx,
                values: &values,
            },
            None,
        );
        assert!(L.forward_dual(&Cpu, &mut y_sparse, &x2, false, &sparse));
        let mut y_dense = vec![0.0; 2 * no];
        L.forward_dual(
            &Cpu,
            &mut y_dense,
            &x2,
            true,
            &params(&w, &bias, Tangent::Dense(&dense_wd[..]), None),
        );
        assert!(rel_err(&y_sparse, &y_dense) < 1e-14);

        let dy2 = stack(&dy_dot, &dy);
        let (mut dx_s, mut dx_d) = (vec![0.0; 2 * ni], vec![0.0; 2 * ni]);
        let mut masked = vec![0.0; idx.len()];
        let grads = LinearGrads {
            weight: AdjointOut::Skip,
            bias: None,
            weight_dot: AdjointOut::Sparse {
                idx: &idx,
                out: &mut masked[..],
            },
            ..LinearGrads::none()
        };
        L.backward_dual(
            &Cpu,
            Some(&mut dx_s),
            false,
            &dy2,
            &x2,
            false,
            &sparse,
            grads,
        );
        let mut full = vec![0.0; nw];
        let grads = LinearGrads {
            weight: AdjointOut::Skip,
            bias: None,
            weight_dot: AdjointOut::Dense(&mut full[..]),
            ..LinearGrads::none()
        };
        L.backward_dual(
            &Cpu,
            Some(&mut dx_d),
            false,
            &dy2,
            &x2,
            true,
            &params(&w, &bias, Tangent::Dense(&dense_wd[..]), None),
            grads,
        );
        assert!(rel_err(&dx_s, &dx_d) < 1e-14);
        let gathered: Vec<f64> = idx.iter().map(|&i| full[i as usize]).collect();
        assert!(rel_err(&masked, &gathered) < 1e-14);
    }

    #[test]
    fn replaced_weight_outputs_ignore_their_stale_values() {
        let (ni, no, nw) = (L.rows * L.in_dim, L.rows * L.out_dim, L.out_dim * L.in_dim);
        let (x2, w, bias) = (normal(2 * ni, 1), normal(nw, 2), normal(L.out_dim, 3));
        let (dy2, wd) = (normal(2 * no, 4), normal(nw, 5));
        let p = params(&w, &bias, Tangent::Dense(&wd[..]), None);
        // (gradient, tangent) from zeroed accumulators, or over stale values replaced
        let run = |start: f64, replace: bool| {
            let (mut g, mut gd) = (vec![start; nw], vec![start; nw]);
            let grads = LinearGrads {
                weight: AdjointOut::Dense(&mut g[..]),
                weight_dot: AdjointOut::Dense(&mut gd[..]),
                weight_replace: replace,
                ..LinearGrads::none()
            };
            L.backward_dual(&Cpu, None, false, &dy2, &x2, true, &p, grads);
            let mut plain = vec![start; nw];
            let grads = LinearGrads {
                weight: AdjointOut::Dense(&mut plain[..]),
                weight_replace: replace,
                ..LinearGrads::none()
            };
            L.backward::<f64, Cpu>(&Cpu, None, false, grads, &dy2[no..], &x2[..ni], &w);
            (g, gd, plain)
        };
        let accumulated = run(0.0, false);
        let replaced = run(1e30, true);
        assert!(accumulated.0.iter().any(|&x| x != 0.0));
        assert!(rel_err(&replaced.0, &accumulated.0) < 1e-15);
        assert!(rel_err(&replaced.1, &accumulated.1) < 1e-15);
        assert!(rel_err(&replaced.2, &accumulated.2) < 1e-15);
    }
}
