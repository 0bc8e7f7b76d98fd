//! One pass of the engine over one batch: the machinery a decoder's network is
//! written on, whatever its architecture (`model::opt` is one).
//!
//! A pass runs forward and, when asked, in reverse, doing whatever its
//! [`Direction`] and [`Outputs`] ask for:
//! - forward only (logits, loss);
//! - forward and reverse with values only (the gradient, dense or at a mask);
//! - forward with (value, tangent) pairs and reverse with (adjoint, adjoint tangent)
//!   pairs: loss, `g . v`, optionally the gradient, and `H v` (dense, or at a mask's
//!   entries only), the exact forward-over-reverse Hessian-vector product.
//!
//! Pair layouts (see `model::ops`): in a tangent pass every `rows x width` buffer
//! holds `[value; tangent]` going forward and `[adjoint tangent; adjoint]` going back.
//! A tangent known to be zero (below the first perturbed parameter) is not computed:
//! each op runner returns whether its output's tangent may be nonzero ("live").
//!
//! - [`Pass`] (this file): views of pairs, the parameters and their tangents, and
//!   each op run in value or tangent mode;
//! - [`outputs`]: where parameter adjoints and their tangents go ([`Outputs`]);
//! - [`mask_plan`]: a mask split by tensor ([`MaskPlan`]);
//! - [`head`]: the LM head, the targets' log-probabilities and the loss;
//! - [`prepared`]: a batch uploaded to a backend;
//! - [`workspace`]: buffers reused across passes of one shape.

pub mod head;
pub mod mask_plan;
pub mod outputs;
pub mod prepared;
pub mod workspace;

pub use mask_plan::MaskPlan;
pub(crate) use outputs::{Outputs, Sink};
pub use prepared::Prepared;
pub use workspace::Workspace;

use super::layout::ParamLayout;
use super::ops::Tangent;
use super::ops::attention::{Attention, Qkv};
use super::ops::embedding::Embedding;
use super::ops::layernorm::{Affine, LayerNorm};
use super::ops::linear::{Linear, LinearGrads, LinearParams};
use super::ops::relu::Relu;
use super::ops::residual::Residual;
use crate::backend::{Backend, Scalar};

/// The direction `v` of a tangent pass.
pub(crate) enum Direction<'a, T: Scalar, B: Backend<T>> {
    /// No tangents: a forward or gradient pass.
    None,
    /// A dense N-vector.
    Dense(B::View<'a>),
    /// A k-vector on a mask's coordinates (zero elsewhere).
    Masked {
        plan: &'a MaskPlan<T, B>,
        values: B::View<'a>,
    },
}

/// The results of one pass over one batch, already scaled by the dataset's size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassScalars {
    pub loss: f64,
    /// `g . v` in a tangent pass.
    pub loss_dot: f64,
}

impl std::ops::AddAssign for PassScalars {
    fn add_assign(&mut self, other: PassScalars) {
        self.loss += other.loss;
        self.loss_dot += other.loss_dot;
    }
}

/// A linear layer's weight and bias, as positions in the layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lin {
    pub w: usize,
    pub b: Option<usize>,
}

/// A LayerNorm's weight and bias (absent without elementwise affine).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Norm {
    pub w: Option<usize>,
    pub b: Option<usize>,
}

/// One pass over one batch of `rows` tokens: the ops of any network, each run in
/// value mode or, in a tangent pass, on pairs.
pub(crate) struct Pass<'a, T: Scalar, B: Backend<T>> {
    pub b: &'a B,
    /// The flat parameter vector.
    params: B::View<'a>,
    layout: &'a ParamLayout,
    pub rows: usize,
    /// A tangent pass (pairs), or values only.
    pub dual: bool,
    dir: &'a Direction<'a, T, B>,
}

impl<'a, T: Scalar, B: Backend<T>> Pass<'a, T, B> {
    pub fn new(
        b: &'a B,
        params: B::View<'a>,
        layout: &'a ParamLayout,
        rows: usize,
        dir: &'a Direction<'a, T, B>,
    ) -> Self {
        Pass {
            b,
            params,
            layout,
            rows,
            dual: !matches!(dir, Direction::None),
            dir,
        }
    }

    // ---- views of pairs ----

    /// Elements of one half of a `rows x width` pair.
    pub fn n(&self, width: usize) -> usize {
        self.rows * width
    }

    /// Values per row-element of a pair: 2 in a tangent pass, else 1.
    pub fn pair_len(&self) -> usize {
        if self.dual { 2 } else { 1 }
    }

    pub fn val<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        self.b.sub(self.b.view(buf), 0..self.n(width))
    }

    pub fn tan<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        self.b
            .sub(self.b.view(buf), self.n(width)..2 * self.n(width))
    }

    /// The adjoint half of an adjoint pair (`[tangent; adjoint]`, or all of it).
    pub fn adj<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        let n = self.n(width);
        let range = if self.dual { n..2 * n } else { 0..n };
        self.b.sub(self.b.view(buf), range)
    }

    pub fn adj_tan<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        self.b.sub(self.b.view(buf), 0..self.n(width))
    }

    pub fn halves<'x>(
        &self,
        buf: &'x mut B::Buf,
        width: usize,
    ) -> (B::ViewMut<'x>, B::ViewMut<'x>) {
        self.b.split_mut(self.b.view_mut(buf), self.n(width))
    }

    // ---- parameters and their tangents ----

    /// Layout entry `e` of the parameters.
    pub fn weight(&self, e: usize) -> B::View<'a> {
        self.b.sub(self.params, self.layout.entries()[e].range())
    }

    fn param(&self, e: Option<usize>) -> Option<B::View<'a>> {
        e.map(|e| self.weight(e))
    }

    pub fn tangent(&self, e: Option<usize>) -> Tangent<'a, T, B> {
        let Some(e) = e else { return Tangent::Zero };
        match self.dir {
            Direction::None => Tangent::Zero,
            Direction::Dense(v) => Tangent::Dense(self.b.sub(*v, self.layout.entries()[e].range())),
            Direction::Masked { plan, values } => plan.tangent(self.b, e, *values),
        }
    }

    fn linear_params(&self, p: Lin) -> LinearParams<'a, T, B> {
        LinearParams {
            weight: self.weight(p.w),
            bias: self.param(p.b),
            weight_dot: self.tangent(Some(p.w)),
            bias_dot: self.tangent(p.b).dense(),
        }
    }

    fn affine(&self, n: Norm) -> (Affine<B::View<'a>>, Affine<B::View<'a>>) {
        (
            Affine {
                weight: self.param(n.w),
                bias: self.param(n.b),
            },
            Affine {
                weight: self.tangent(n.w).dense(),
                bias: self.tangent(n.b).dense(),
            },
        )
    }

    // ---- the ops in either mode ----

    /// A linear map over this pass's rows.
    pub fn linear(&self, in_dim: usize, out_dim: usize) -> Linear {
        Linear {
            rows: self.rows,
            in_dim,
            out_dim,
        }
    }

    /// `y = x W^T + b` (and its tangent); returns whether the tangent may be nonzero.
    pub fn linear_forward(
        &self,
        lin: Linear,
        y: &mut B::Buf,
        x: &B::Buf,
        x_live: bool,
        lp: Lin,
    ) -> bool {
        let b = self.b;
        self.linear_forward_views(lin, b.view_mut(y), b.view(x), x_live, lp)
    }

    /// As [`Pass::linear_forward`], on views of the pairs.
    pub fn linear_forward_views(
        &self,
        lin: Linear,
        y: B::ViewMut<'_>,
        x: B::View<'_>,
        x_live: bool,
        lp: Lin,
    ) -> bool {
        let b = self.b;
        let p = self.linear_params(lp);
        if self.dual {
            lin.forward_dual(b, y, x, x_live, &p)
        } else {
            lin.forward(b, y, x, p.weight, p.bias);
            false
        }
    }

    /// `dx (+)= W^T dy` (and tangents) when `dx` is given; the parameters' outputs
    /// into `outs`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_backward(
        &self,
        outs: &mut Outputs<'_, T, B>,
        lin: Linear,
        dx: Option<&mut B::Buf>,
        dx_accumulate: bool,
        dy: &B::Buf,
        x: &B::Buf,
        x_live: bool,
        lp: Lin,
    ) {
        let b = self.b;
        let dx = dx.map(|d| b.view_mut(d));
        self.linear_backward_views(
            outs,
            lin,
            dx,
            dx_accumulate,
            b.view(dy),
            b.view(x),
            x_live,
            lp,
        );
    }

    /// As [`Pass::linear_backward`], on views of the pairs.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_backward_views(
        &self,
        outs: &mut Outputs<'_, T, B>,
        lin: Linear,
        dx: Option<B::ViewMut<'_>>,
        dx_accumulate: bool,
        dy: B::View<'_>,
        x: B::View<'_>,
        x_live: bool,
        lp: Lin,
    ) {
        let b = self.b;
        let p = self.linear_params(lp);
        // the weight's outputs are written whole by one product each
        let (ow, ob) = outs.take2(b, self.layout, Some(lp.w), lp.b, true);
        let grads = LinearGrads {
            weight: ow.grad,
            bias: ob.grad.dense(),
            weight_dot: ow.tangent,
            bias_dot: ob.tangent.dense(),
            weight_replace: ow.replace,
        };
        if self.dual {
            lin.backward_dual(b, dx, dx_accumulate, dy, x, x_live, &p, grads);
        } else {
            lin.backward(b, dx, dx_accumulate, grads, dy, x, p.weight);
        }
    }

    /// LayerNorm of `inp` into `out` (saving `mean` and `rstd`), and its tangent;
    /// returns whether the tangent may be nonzero.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_forward(
        &self,
        ln: LayerNorm,
        out: &mut B::Buf,
        mean: &mut B::Buf,
        rstd: &mut B::Buf,
        inp: &B::Buf,
        inp_live: bool,
        n: Norm,
    ) -> bool {
        let (b, h) = (self.b, ln.width);
        let (params, params_dot) = self.affine(n);
        if !self.dual {
            ln.forward(
                b,
                b.view_mut(out),
                b.view_mut(mean),
                b.view_mut(rstd),
                b.view(inp),
                params,
            );
            return false;
        }
        let (o, od) = self.halves(out, h);
        ln.forward(
            b,
            o,
            b.view_mut(mean),
            b.view_mut(rstd),
            self.val(inp, h),
            params,
        );
        let live = inp_live || params_dot.weight.is_some() || params_dot.bias.is_some();
        if live {
            ln.jvp(
                b,
                od,
                self.val(inp, h),
                self.tan(inp, h),
                b.view(mean),
                b.view(rstd),
                params,
                params_dot,
            );
        } else {
            b.zero(od);
        }
        live
    }

    /// `dinp += LN^T dout` (and tangents), parameter outputs into `outs`.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_backward(
        &self,
        outs: &mut Outputs<'_, T, B>,
        ln: LayerNorm,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        inp: &B::Buf,
        mean: &B::Buf,
        rstd: &B::Buf,
        n: Norm,
    ) {
        let (b, h) = (self.b, ln.width);
        let (params, params_dot) = self.affine(n);
        let (ow, ob) = outs.take2(b, self.layout, n.w, n.b, false);
        let (mean, rstd) = (b.view(mean), b.view(rstd));
        let d = Affine {
            weight: ow.grad.dense(),
            bias: ob.grad.dense(),
        };
        if !self.dual {
            ln.backward(
                b,
                b.view_mut(dinp),
                d,
                b.view(dout),
                b.view(inp),
                mean,
                rstd,
                params,
            );
            return;
        }
        let (dt, da) = self.halves(dinp, h);
        ln.backward(
            b,
            da,
            d,
            self.adj(dout, h),
            self.val(inp, h),
            mean,
            rstd,
            params,
        );
        let dd = Affine {
            weight: ow.tangent.dense(),
            bias: ob.tangent.dense(),
        };
        ln.backward_jvp(
            b,
            dt,
            dd,
            self.adj(dout, h),
            self.adj_tan(dout, h),
            self.val(inp, h),
            self.tan(inp, h),
            mean,
            rstd,
            params,
            params_dot,
        );
    }

    /// `out (+)= table[ids]` (and its tangent); returns whether the tangent may be
    /// nonzero.
    pub fn embedding_forward(
        &self,
        out: &mut B::Buf,
        ids: &B::Index,
        table: usize,
        width: usize,
        accumulate: bool,
    ) -> bool {
        let b = self.b;
        let e = Embedding {
            rows: self.rows,
            width,
        };
        if !self.dual {
            e.forward(b, b.view_mut(out), ids, self.weight(table), accumulate);
            return false;
        }
        let (o, od) = self.halves(out, width);
        e.forward(b, o, ids, self.weight(table), accumulate);
        e.jvp(b, od, ids, &self.tangent(Some(table)), accumulate)
    }

    /// The table's outputs from `dout`, the adjoint (pair) of the lookup's output.
    pub fn embedding_backward(
        &self,
        outs: &mut Outputs<'_, T, B>,
        dout: &B::Buf,
        ids: &B::Index,
        table: usize,
        width: usize,
    ) {
        let e = Embedding {
            rows: self.rows,
            width,
        };
        let o = outs.take1(self.b, self.layout, Some(table));
        e.backward(self.b, o.grad, self.adj(dout, width), ids);
        if self.dual {
            e.backward_jvp(self.b, o.tangent, self.adj_tan(dout, width), ids);
        }
    }

    /// `out = relu(inp)` over `width` features (and its tangent when `live`).
    pub fn relu_forward(&self, out: &mut B::Buf, inp: &B::Buf, live: bool, width: usize) {
        let b = self.b;
        if !self.dual {
            Relu.forward(b, b.view_mut(out), b.view(inp));
            return;
        }
        let (a, ad) = self.halves(out, width);
        Relu.forward(b, a, self.val(inp, width));
        if live {
            Relu.jvp(b, ad, self.val(inp, width), self.tan(inp, width));
        } else {
            b.zero(ad);
        }
    }

    /// `d_inp = relu'(inp) d_out` (and its tangent), overwritten.
    pub fn relu_backward(&self, d_inp: &mut B::Buf, inp: &B::Buf, d_out: &B::Buf, width: usize) {
        let b = self.b;
        if !self.dual {
            Relu.backward(b, b.view_mut(d_inp), b.view(inp), b.view(d_out));
            return;
        }
        let (t, a) = self.halves(d_inp, width);
        Relu.backward(b, a, self.val(inp, width), self.adj(d_out, width));
        Relu.backward_jvp(b, t, self.val(inp, width), self.adj_tan(d_out, width));
    }

    /// `out += inp`, a residual connection (pairs add as pairs).
    pub fn residual_forward(&self, out: &mut B::Buf, inp: &B::Buf) {
        Residual.forward(self.b, self.b.view_mut(out), self.b.view(inp));
    }

    /// Causal self-attention of `qkv` into `out`, saving the probabilities (and
    /// their tangent when `live`: q, k or v has a nonzero tangent).
    pub fn attention_forward(
        &self,
        att: Attention,
        out: &mut B::Buf,
        probs: &mut B::Buf,
        qkv: Qkv<&B::Buf>,
        live: bool,
        key_mask: &B::Index,
    ) {
        let b = self.b;
        let h = att.dims.width();
        if !self.dual {
            let vals = qkv.map(|x| b.view(x));
            att.forward(b, b.view_mut(out), b.view_mut(probs), vals, key_mask);
            return;
        }
        let np = att.dims.probs_len();
        let (mut p, pd) = b.split_mut(b.view_mut(probs), np);
        let (o, od) = self.halves(out, h);
        let vals = qkv.map(|x| self.val(x, h));
        att.forward(b, o, b.reborrow(&mut p), vals, key_mask);
        if live {
            att.jvp(b, od, pd, b.freeze(&p), vals, qkv.map(|x| self.tan(x, h)));
        } else {
            b.zero(od);
            b.zero(pd);
        }
    }

    /// The adjoints of q, k and v (overwritten) from `d_out`, the adjoint of the
    /// attention's output.
    pub fn attention_backward(
        &self,
        att: Attention,
        d_qkv: Qkv<&mut B::Buf>,
        d_out: &B::Buf,
        probs: &B::Buf,
        qkv: Qkv<&B::Buf>,
    ) {
        let b = self.b;
        let h = att.dims.width();
        if !self.dual {
            let d = d_qkv.map(|x| b.view_mut(x));
            let vals = qkv.map(|x| b.view(x));
            att.backward(b, d, b.view(d_out), b.view(probs), vals);
            return;
        }
        let np = att.dims.probs_len();
        let vals = qkv.map(|x| self.val(x, h));
        let tans = qkv.map(|x| self.tan(x, h));
        let Qkv { q, k, v } = d_qkv;
        let (qt, qa) = self.halves(q, h);
        let (kt, ka) = self.halves(k, h);
        let (vt, va) = self.halves(v, h);
        let probs_val = b.sub(b.view(probs), 0..np);
        let probs_dot = b.sub(b.view(probs), np..2 * np);
        let (da, da_dot) = (self.adj(d_out, h), self.adj_tan(d_out, h));
        let adjoints = Qkv {
            q: qa,
            k: ka,
            v: va,
        };
        att.backward(b, adjoints, da, probs_val, vals);
        let tangents = Qkv {
            q: qt,
            k: kt,
            v: vt,
        };
        att.backward_jvp(b, tangents, da, da_dot, probs_val, probs_dot, vals, tans);
    }
}
