//! LayerNorm over the feature dimension: `y = (x - mean) / sqrt(var + eps) * w + b`
//! per row, the variance biased and computed in two passes as in PyTorch.
//!
//! Rules (per row, `xhat = (x - mean) rstd`, `a = mean(xhat x')`):
//! - JVP: `y' = rstd (x' - mean(x') - xhat a) w + xhat w' + b'`;
//! - VJP: with `g = yb w`: `xb = rstd (g - mean(g) - xhat mean(g xhat))`,
//!   `wb = sum_rows yb xhat`, `bb = sum_rows yb`;
//! - JVP of the VJP: differentiate the VJP along `x'`, `w'`, `yb'` (`rstd' = -rstd^2 a`);
//!   see `backend/cpu/layernorm.rs` for the expanded formula.

use crate::backend::{Backend, Scalar};

/// A LayerNorm over `rows` rows of `width` features.
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    pub rows: usize,
    pub width: usize,
    pub eps: f64,
}

/// The LayerNorm's parameters (absent without elementwise affine).
#[derive(Clone, Copy)]
pub struct Affine<V> {
    pub weight: Option<V>,
    pub bias: Option<V>,
}

impl LayerNorm {
    /// `out = LN(inp)`; saves the per-row `mean` and `rstd`.
    pub fn forward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out: B::ViewMut<'_>,
        mean: B::ViewMut<'_>,
        rstd: B::ViewMut<'_>,
        inp: B::View<'_>,
        params: Affine<B::View<'_>>,
    ) {
        b.layernorm_forward(
            out,
            mean,
            rstd,
            inp,
            params.weight,
            params.bias,
            self.rows,
            self.width,
            self.eps,
        );
    }

    /// `out_dot` from the tangents of the input and the parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out_dot: B::ViewMut<'_>,
        inp: B::View<'_>,
        inp_dot: B::View<'_>,
        mean: B::View<'_>,
        rstd: B::View<'_>,
        params: Affine<B::View<'_>>,
        params_dot: Affine<B::View<'_>>,
    ) {
        b.layernorm_jvp(
            out_dot,
            inp,
            inp_dot,
            mean,
            rstd,
            params.weight,
            params_dot.weight,
            params_dot.bias,
            self.rows,
            self.width,
        );
    }

    /// `dinp += J^T dout`; parameter adjoints accumulated where given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dinp: B::ViewMut<'_>,
        dparams: Affine<B::ViewMut<'_>>,
        dout: B::View<'_>,
        inp: B::View<'_>,
        mean: B::View<'_>,
        rstd: B::View<'_>,
        params: Affine<B::View<'_>>,
    ) {
        b.layernorm_backward(
            dinp,
            dparams.weight,
            dparams.bias,
            dout,
            inp,
            mean,
            rstd,
            params.weight,
            self.rows,
            self.width,
        );
    }

    /// `dinp_dot += (J^T dout)'`; parameter adjoint tangents accumulated where given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dinp_dot: B::ViewMut<'_>,
        dparams_dot: Affine<B::ViewMut<'_>>,
        dout: B::View<'_>,
        dout_dot: B::View<'_>,
        inp: B::View<'_>,
        inp_dot: B::View<'_>,
        mean: B::View<'_>,
        rstd: B::View<'_>,
        params: Affine<B::View<'_>>,
        params_dot: Affine<B::View<'_>>,
    ) {
        b.layernorm_backward_jvp(
            dinp_dot,
            dparams_dot.weight,
            dparams_dot.bias,
            dout,
            dout_dot,
            inp,
            inp_dot,
            mean,
            rstd,
            params.weight,
            params_dot.weight,
            self.rows,
            self.width,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::ops::check::{Rules, check_rules};

    /// Flat input: `[x (rows x width), w (width), b (width)]`.
    struct Op(LayerNorm, bool);

    impl Op {
        fn split<'a>(&self, x: &'a [f64]) -> (&'a [f64], Affine<&'a [f64]>) {
            let n = self.0.rows * self.0.width;
            if self.1 {
                let w = self.0.width;
                (
                    &x[..n],
                    Affine {
                        weight: Some(&x[n..n + w]),
                        bias: Some(&x[n + w..n + 2 * w]),
                    },
                )
            } else {
                (
                    &x[..n],
                    Affine {
                        weight: None,
                        bias: None,
                    },
                )
            }
        }
        fn stats(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
            let (inp, p) = self.split(x);
            let mut out = vec![0.0; inp.len()];
            let (mut mean, mut rstd) = (vec![0.0; self.0.rows], vec![0.0; self.0.rows]);
            self.0.forward(&Cpu, &mut out, &mut mean, &mut rstd, inp, p);
            (out, mean, rstd)
        }
        fn grads(&self, x: &[f64]) -> Vec<f64> {
            vec![0.0; x.len()]
        }
    }

    fn affine_mut(g: &mut [f64], n: usize, w: usize, on: bool) -> (&mut [f64], Affine<&mut [f64]>) {
        let (gx, rest) = g.split_at_mut(n);
        if !on {
            return (
                gx,
                Affine {
                    weight: None,
                    bias: None,
                },
            );
        }
        let (gw, gb) = rest.split_at_mut(w);
        (
            gx,
            Affine {
                weight: Some(gw),
                bias: Some(gb),
            },
        )
    }

    impl Rules for Op {
        fn input_len(&self) -> usize {
            self.0.rows * self.0.width + if self.1 { 2 * self.0.width } else { 0 }
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            self.stats(x).0
        }
        fn jvp(&self, x: &[f64], xd: &[f64]) -> Vec<f64> {
            let (_, mean, rstd) = self.stats(x);
            let (inp, p) = self.split(x);
            let (inp_dot, pd) = self.split(xd);
            let mut out = vec![0.0; inp.len()];
            self.0
                .jvp(&Cpu, &mut out, inp, inp_dot, &mean, &rstd, p, pd);
            out
        }
        fn backward(&self, x: &[f64], yb: &[f64]) -> Vec<f64> {
            let (_, mean, rstd) = self.stats(x);
            let (inp, p) = self.split(x);
            let mut g = self.grads(x);
            let (gx, gp) = affine_mut(&mut g, inp.len(), self.0.width, self.1);
            self.0.backward(&Cpu, gx, gp, yb, inp, &mean, &rstd, p);
            g
        }
        fn backward_jvp(&self, x: &[f64], xd: &[f64], yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            let (_, mean, rstd) = self.stats(x);
            let (inp, p) = self.split(x);
            let (inp_dot, pd) = self.split(xd);
            let mut g = self.grads(x);
            let (gx, gp) = affine_mut(&mut g, inp.len(), self.0.width, self.1);
            self.0
                .backward_jvp(&Cpu, gx, gp, yb, ybd, inp, inp_dot, &mean, &rstd, p, pd);
            g
        }
    }

    #[test]
    fn four_rules_match_central_differences() {
        let ln = LayerNorm {
            rows: 5,
            width: 7,
            eps: 1e-5,
        };
        check_rules("layernorm", &Op(ln, true), 11);
        check_rules("layernorm without affine", &Op(ln, false), 12);
        // more rows than the CPU kernels' blocks of 32: parameter sums over 3 blocks
        let tall = LayerNorm {
            rows: 70,
            width: 9,
            eps: 1e-5,
        };
        check_rules("layernorm, 70 rows", &Op(tall, true), 13);
    }

    #[test]
    fn forward_normalises_rows() {
        let ln = LayerNorm {
            rows: 2,
            width: 4,
            eps: 0.0,
        };
        let x = [1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 0.0];
        let (y, mean, _) = Op(ln, false).stats(&x);
        assert_eq!(mean, vec![2.5, 0.0]);
        for row in y.chunks(4) {
            let m: f64 = row.iter().sum::<f64>() / 4.0;
            let v: f64 = row.iter().map(|x| x * x).sum::<f64>() / 4.0;
            assert!(m.abs() < 1e-15 && (v - 1.0).abs() < 1e-14);
        }
    }
}
