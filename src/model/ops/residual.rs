//! The residual connection `y = a + b`.
//!
//! Rules: JVP `y' = a' + b'`; VJP `ab += yb`, `bb += yb`; JVP of the VJP
//! `ab' += yb'`, `bb' += yb'`. The network applies them in place: the forward adds
//! the branch into the stream, and the reverse sweep lets the stream's adjoint flow
//! through unchanged while the branch's adjoint is accumulated into it.

use crate::backend::{Backend, Scalar};

/// A residual addition.
#[derive(Clone, Copy, Debug)]
pub struct Residual;

impl Residual {
    /// `stream += branch` (value, or tangent: the map is linear).
    pub fn forward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        stream: B::ViewMut<'_>,
        branch: B::View<'_>,
    ) {
        b.add_assign(stream, branch);
    }

    /// `dinp += dout` for one of the two inputs (adjoint, or its tangent).
    pub fn backward<T: Scalar, B: Backend<T>>(
        &self,
        b: &B,
        dinp: B::ViewMut<'_>,
        dout: B::View<'_>,
    ) {
        b.add_assign(dinp, dout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::ops::check::{Rules, check_rules};

    /// Flat input `[a, b]`.
    struct Op;

    impl Rules for Op {
        fn input_len(&self) -> usize {
            12
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            let mut y = x[..6].to_vec();
            Residual.forward::<f64, Cpu>(&Cpu, &mut y, &x[6..]);
            y
        }
        fn jvp(&self, _x: &[f64], xd: &[f64]) -> Vec<f64> {
            self.forward(xd)
        }
        fn backward(&self, _x: &[f64], yb: &[f64]) -> Vec<f64> {
            let mut g = vec![0.0; 12];
            let (ga, gb) = g.split_at_mut(6);
            Residual.backward::<f64, Cpu>(&Cpu, ga, yb);
            Residual.backward::<f64, Cpu>(&Cpu, gb, yb);
            g
        }
        fn backward_jvp(&self, x: &[f64], _xd: &[f64], _yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            self.backward(x, ybd)
        }
    }

    #[test]
    fn four_rules_match_central_differences() {
        check_rules("residual", &Op, 51);
    }
}
