//! OPT's forward sweep as a list of op calls, in the order of HuggingFace's
//! `OPTDecoder.forward` and `OPTDecoderLayer.forward`. Each runner of
//! `model::pass::Pass` computes a value (and in a tangent pass its tangent) and
//! returns whether the tangent may be nonzero, which the next ops read as `*_live`.

use super::buffers::{Activations, AttnActs, LayerActs, LayerLive, Live, MlpActs, OptBuffers};
use super::{LAYER_NORM_EPS, OptPass};
use crate::backend::{Backend, Scalar};
use crate::model::ops::attention::{Attention, Qkv};
use crate::model::ops::layernorm::LayerNorm;
use crate::model::pass::Prepared;

impl<T: Scalar, B: Backend<T>> OptPass<'_, T, B> {
    /// The forward sweep up to the LM head's input ([`OptBuffers::head_input`]);
    /// returns whether that input's tangent may be nonzero.
    pub(super) fn forward(&self, s: &mut OptBuffers<B::Buf>, batch: &Prepared<T, B>) -> bool {
        let (p, c, t) = (&self.p, &self.m.config, &self.m.tensors);
        let (h, e, layers) = (self.d.hidden, self.d.embed, self.d.layers);
        let recompute = s.recompute;
        let (acts, live) = (&mut s.acts, &mut s.live);
        live.streams = vec![false; layers + 1];
        live.layers = vec![LayerLive::default(); layers];

        // embed_tokens (then project_in) + embed_positions
        let x0 = &mut acts.streams[0];
        live.streams[0] = match t.project_in {
            Some(pi) => {
                live.tok = p.embedding_forward(&mut acts.tok, &batch.ids, t.token, e, false);
                p.linear_forward(p.linear(e, h), x0, &acts.tok, live.tok, pi)
            }
            None => p.embedding_forward(x0, &batch.ids, t.token, h, false),
        };
        live.streams[0] |= p.embedding_forward(x0, &batch.positions, t.position, h, true);

        for l in 0..layers {
            let slot = if recompute { 0 } else { l };
            self.block_forward(l, slot, acts, live, batch);
        }

        // final_layer_norm, then project_out
        let mut x = &acts.streams[layers];
        let mut x_live = live.streams[layers];
        if c.has_final_layer_norm() {
            let (lnf, mean, rstd) = (&mut acts.lnf, &mut acts.lnf_mean, &mut acts.lnf_rstd);
            x_live = p.layernorm_forward(self.ln(), lnf, mean, rstd, x, x_live, t.final_ln);
            live.lnf = x_live;
            x = &acts.lnf;
        }
        if let Some(po) = t.project_out {
            x_live = p.linear_forward(p.linear(h, e), &mut acts.proj, x, x_live, po);
            live.proj = x_live;
        }
        x_live
    }

    /// Block `l` from `streams[l]` into `streams[l + 1]`, its activations into
    /// `acts.layers[slot]` and their liveness into `live`. The reverse sweep reruns it
    /// when recomputing: the same kernels on the same inputs, the same bits.
    pub(super) fn block_forward(
        &self,
        l: usize,
        slot: usize,
        acts: &mut Activations<B::Buf>,
        live: &mut Live,
        batch: &Prepared<T, B>,
    ) {
        let (below, above) = acts.streams.split_at_mut(l + 1);
        let (inp, out) = (&below[l], &mut above[0]);
        let (a, ll) = (&mut acts.layers[slot], &mut live.layers[l]);
        live.streams[l + 1] = if self.m.config.do_layer_norm_before {
            self.pre_ln_block(l, a, ll, inp, live.streams[l], out, batch)
        } else {
            self.post_ln_block(l, a, ll, inp, live.streams[l], out, batch)
        };
    }

    /// A LayerNorm over the hidden features.
    pub(super) fn ln(&self) -> LayerNorm {
        LayerNorm {
            rows: self.d.rows,
            width: self.d.hidden,
            eps: LAYER_NORM_EPS,
        }
    }

    pub(super) fn attention_op(&self) -> Attention {
        Attention {
            dims: self.d.attention(),
        }
    }

    /// Pre-LN block: `mid = inp + attn(LN1(inp))`, `out = mid + mlp(LN2(mid))`.
    /// Returns whether `out`'s tangent may be nonzero.
    #[allow(clippy::too_many_arguments)]
    fn pre_ln_block(
        &self,
        l: usize,
        a: &mut LayerActs<B::Buf>,
        live: &mut LayerLive,
        inp: &B::Buf,
        inp_live: bool,
        out: &mut B::Buf,
        batch: &Prepared<T, B>,
    ) -> bool {
        let (p, bt, ln) = (&self.p, self.m.tensors.blocks[l], self.ln());
        let (mean1, rstd1) = (&mut a.ln1_mean, &mut a.ln1_rstd);
        live.attn_in = p.layernorm_forward(ln, &mut a.attn_in, mean1, rstd1, inp, inp_live, bt.ln1);
        let branch_live;
        (live.attn, branch_live) =
            self.attention_block(l, &mut a.att, &a.attn_in, live.attn_in, &mut a.mid, batch);
        p.residual_forward(&mut a.mid, inp);
        live.mid = inp_live || branch_live;

        let (mean2, rstd2) = (&mut a.ln2_mean, &mut a.ln2_rstd);
        live.ffn_in =
            p.layernorm_forward(ln, &mut a.ffn_in, mean2, rstd2, &a.mid, live.mid, bt.ln2);
        let mlp_live;
        (live.fc1, mlp_live) = self.mlp_block(l, &mut a.mlp, &a.ffn_in, live.ffn_in, out);
        p.residual_forward(out, &a.mid);
        live.mid || mlp_live
    }

    /// Post-LN block: `h1 = LN1(inp + attn(inp))`, `out = LN2(h1 + mlp(h1))`.
    /// Returns whether `out`'s tangent may be nonzero.
    #[allow(clippy::too_many_arguments)]
    fn post_ln_block(
        &self,
        l: usize,
        a: &mut LayerActs<B::Buf>,
        live: &mut LayerLive,
        inp: &B::Buf,
        inp_live: bool,
        out: &mut B::Buf,
        batch: &Prepared<T, B>,
    ) -> bool {
        let (p, bt, ln) = (&self.p, self.m.tensors.blocks[l], self.ln());
        let branch_live;
        (live.attn, branch_live) =
            self.attention_block(l, &mut a.att, inp, inp_live, &mut a.mid, batch);
        p.residual_forward(&mut a.mid, inp);
        live.mid = inp_live || branch_live;
        let (mean1, rstd1) = (&mut a.ln1_mean, &mut a.ln1_rstd);
        live.ffn_in =
            p.layernorm_forward(ln, &mut a.ffn_in, mean1, rstd1, &a.mid, live.mid, bt.ln1);

        let mlp_live;
        (live.fc1, mlp_live) =
            self.mlp_block(l, &mut a.mlp, &a.ffn_in, live.ffn_in, &mut a.ffn_sum);
        p.residual_forward(&mut a.ffn_sum, &a.ffn_in);
        live.ffn_sum = live.ffn_in || mlp_live;
        let (mean2, rstd2) = (&mut a.ln2_mean, &mut a.ln2_rstd);
        p.layernorm_forward(ln, out, mean2, rstd2, &a.ffn_sum, live.ffn_sum, bt.ln2)
    }

    /// `self_attn`: q, k, v from `x`, causal attention, and `out_proj` into `out`
    /// (no residual). Returns the liveness of the attention output and of `out`.
    fn attention_block(
        &self,
        l: usize,
        a: &mut AttnActs<B::Buf>,
        x: &B::Buf,
        x_live: bool,
        out: &mut B::Buf,
        batch: &Prepared<T, B>,
    ) -> (bool, bool) {
        let (p, bt) = (&self.p, self.m.tensors.blocks[l]);
        let lin = p.linear(self.d.hidden, self.d.hidden);
        let q_live = p.linear_forward(lin, &mut a.q, x, x_live, bt.q);
        let k_live = p.linear_forward(lin, &mut a.k, x, x_live, bt.k);
        let v_live = p.linear_forward(lin, &mut a.v, x, x_live, bt.v);
        let attn_live = q_live || k_live || v_live;
        let qkv = Qkv {
            q: &a.q,
            k: &a.k,
            v: &a.v,
        };
        let att = self.attention_op();
        p.attention_forward(
            att,
            &mut a.attn,
            &mut a.probs,
            qkv,
            attn_live,
            &batch.key_mask,
        );
        let out_live = p.linear_forward(lin, out, &a.attn, attn_live, bt.out);
        (attn_live, out_live)
    }

    /// fc1, ReLU, fc2 from `x` into `out` (no residual). Returns the liveness of fc1's
    /// output and of `out`.
    fn mlp_block(
        &self,
        l: usize,
        a: &mut MlpActs<B::Buf>,
        x: &B::Buf,
        x_live: bool,
        out: &mut B::Buf,
    ) -> (bool, bool) {
        let (p, bt, (h, f)) = (
            &self.p,
            self.m.tensors.blocks[l],
            (self.d.hidden, self.d.ffn),
        );
        let fc1_live = p.linear_forward(p.linear(h, f), &mut a.fc1, x, x_live, bt.fc1);
        p.relu_forward(&mut a.act, &a.fc1, fc1_live, f);
        let out_live = p.linear_forward(p.linear(f, h), out, &a.act, fc1_live, bt.fc2);
        (fc1_live, out_live)
    }
}
