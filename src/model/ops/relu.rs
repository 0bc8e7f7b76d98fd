//! ReLU, OPT's activation: `y = max(x, 0)`.
//!
//! Its Jacobian is the diagonal `1[x > 0]` (PyTorch's convention at 0), which is
//! symmetric and locally constant, so the rules are one masking: JVP `y' = 1[x>0] x'`,
//! VJP `xb = 1[x>0] yb`, JVP of the VJP `xb' = 1[x>0] yb'` (the second derivative is
//! zero away from the kink, as in PyTorch's double backward).

use crate::backend::{Backend, Scalar};

/// ReLU on a flat buffer.
#[derive(Clone, Copy, Debug)]
pub struct Relu;

impl Relu {
    pub fn forward<T: Scalar, B: Backend<T>>(&self, b: &B, out: B::ViewMut<'_>, inp: B::View<'_>) {
        b.relu_forward(out, inp);
    }

    /// `out' = 1[inp > 0] inp'`.
    pub fn jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        out_dot: B::ViewMut<'_>,
        inp: B::View<'_>,
        inp_dot: B::View<'_>,
    ) {
        b.relu_backward(out_dot, inp, inp_dot);
    }

    /// `dinp = 1[inp > 0] dout` (overwritten).
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dinp: B::ViewMut<'_>,
        inp: B::View<'_>,
        dout: B::View<'_>,
    ) {
        b.relu_backward(dinp, inp, dout);
    }

    /// `dinp' = 1[inp > 0] dout'` (overwritten).
    pub fn backward_jvp<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dinp_dot: B::ViewMut<'_>,
        inp: B::View<'_>,
        dout_dot: B::View<'_>,
    ) {
        b.relu_backward(dinp_dot, inp, dout_dot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::ops::check::{Rules, check_rules, normal};

    struct Op;

    impl Rules for Op {
        fn input_len(&self) -> usize {
            40
        }
        /// Away from the kink, so that central differences never straddle it.
        fn point(&self, seed: u64) -> Vec<f64> {
            normal(40, seed)
                .into_iter()
                .map(|x| x + 0.2 * x.signum())
                .collect()
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            let mut y = vec![0.0; x.len()];
            Relu.forward::<f64, Cpu>(&Cpu, &mut y, x);
            y
        }
        fn jvp(&self, x: &[f64], xd: &[f64]) -> Vec<f64> {
            let mut y = vec![0.0; x.len()];
            Relu.jvp::<f64, Cpu>(&Cpu, &mut y, x, xd);
            y
        }
        fn backward(&self, x: &[f64], yb: &[f64]) -> Vec<f64> {
            let mut g = vec![0.0; x.len()];
            Relu.backward::<f64, Cpu>(&Cpu, &mut g, x, yb);
            g
        }
        fn backward_jvp(&self, x: &[f64], _xd: &[f64], _yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            let mut g = vec![0.0; x.len()];
            Relu.backward_jvp::<f64, Cpu>(&Cpu, &mut g, x, ybd);
            g
        }
    }

    #[test]
    fn four_rules_match_central_differences() {
        check_rules("relu", &Op, 41);
    }
}
