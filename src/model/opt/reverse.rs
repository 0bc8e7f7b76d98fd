//! OPT's reverse sweep: the forward's ops in reverse order, each turning the
//! adjoint (pair) of its output into those of its inputs and its parameters'
//! outputs. The sweep stops below the lowest stage whose parameters want an output
//! (a masked gradient or `H v` never reaches the embeddings unless they are masked).
//! When the buffers recompute (`model::memory`), each block below the top one is
//! first rerun forward from its stored input into the one block of scratch.

use super::buffers::{
    Adjoints, AttnActs, AttnAdjoints, LayerActs, LayerLive, MlpActs, MlpAdjoints,
};
use super::{OptBuffers, OptPass};
use crate::backend::{Backend, Scalar};
use crate::model::ops::attention::Qkv;
use crate::model::pass::head::HeadBuffers;
use crate::model::pass::prepared::HeadRows;
use crate::model::pass::{Outputs, Prepared};

impl<T: Scalar, B: Backend<T>> OptPass<'_, T, B> {
    /// The reverse sweep after [`OptPass::forward`] and the loss.
    pub(super) fn reverse(
        &self,
        s: &mut OptBuffers<B::Buf>,
        head: &mut HeadBuffers<B::Buf>,
        batch: &Prepared<T, B>,
        rows: &HeadRows<'_, B::Index>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let lowest = outs.lowest_stage();
        let layers = self.d.layers;
        if lowest > layers + 1 {
            return;
        }
        let (p, c, t) = (&self.p, &self.m.config, &self.m.tensors);
        let (b, h, e) = (p.b, self.d.hidden, self.d.embed);
        let OptBuffers {
            acts,
            adj,
            live,
            recompute,
        } = s;
        let recompute = *recompute;
        let adj = adj.as_mut().expect("adjoints"); // invariant: allocated by `run` before the reverse sweep

        // LM head, project_out, final_layer_norm
        let last = &acts.streams[layers];
        let (top_in, top_live) = if c.has_final_layer_norm() {
            (&acts.lnf, live.lnf)
        } else {
            (last, live.streams[layers])
        };
        let (head_in, head_live, head_dx) = if c.has_projections() {
            (&acts.proj, live.proj, &mut adj.emb)
        } else {
            (top_in, top_live, &mut adj.tmp)
        };
        let lm = self.m.head();
        p.head_backward(outs, lm, head, head_dx, head_in, head_live, rows);
        if let Some(po) = t.project_out {
            let lin = p.linear(h, e);
            p.linear_backward(
                outs,
                lin,
                Some(&mut adj.tmp),
                false,
                &adj.emb,
                top_in,
                top_live,
                po,
            );
        }
        if c.has_final_layer_norm() {
            b.zero(b.view_mut(&mut adj.stream));
            let (mean, rstd) = (&acts.lnf_mean, &acts.lnf_rstd);
            let ln = self.ln();
            p.layernorm_backward(
                outs,
                ln,
                &mut adj.stream,
                &adj.tmp,
                last,
                mean,
                rstd,
                t.final_ln,
            );
        } else {
            b.copy(b.view_mut(&mut adj.stream), b.view(&adj.tmp));
        }

        for l in (0..layers).rev() {
            if lowest > l + 1 {
                return;
            }
            // Recomputing: block l's activations again, from its input. The top
            // block's are still in the scratch from the forward sweep.
            let slot = if recompute { 0 } else { l };
            if recompute && l + 1 < layers {
                self.block_forward(l, slot, acts, live, batch);
            }
            let need_below = lowest <= l;
            let (a, ll) = (&acts.layers[slot], &live.layers[l]);
            let (inp, inp_live) = (&acts.streams[l], live.streams[l]);
            if c.do_layer_norm_before {
                self.pre_ln_block_reverse(l, a, ll, inp, need_below, adj, outs);
            } else {
                self.post_ln_block_reverse(l, a, ll, inp, inp_live, need_below, adj, outs);
            }
        }
        if lowest > 0 {
            return;
        }

        // embed_positions, project_in, embed_tokens
        p.embedding_backward(outs, &adj.stream, &batch.positions, t.position, h);
        match t.project_in {
            Some(pi) => {
                let lin = p.linear(e, h);
                let d_tok = Some(&mut adj.emb);
                p.linear_backward(
                    outs,
                    lin,
                    d_tok,
                    false,
                    &adj.stream,
                    &acts.tok,
                    live.tok,
                    pi,
                );
                p.embedding_backward(outs, &adj.emb, &batch.ids, t.token, e);
            }
            None => p.embedding_backward(outs, &adj.stream, &batch.ids, t.token, h),
        }
    }

    /// Turns `adj.stream` from the adjoint of a pre-LN block's output into the adjoint
    /// of its input (when `need_below`), collecting the block's parameter outputs.
    #[allow(clippy::too_many_arguments)]
    fn pre_ln_block_reverse(
        &self,
        l: usize,
        a: &LayerActs<B::Buf>,
        live: &LayerLive,
        inp: &B::Buf,
        need_below: bool,
        adj: &mut Adjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let (p, bt, ln) = (&self.p, self.m.tensors.blocks[l], self.ln());
        // d mid = d out (residual) + LN2^T mlp^T d out
        let d_ffn_in = &mut adj.ln;
        self.mlp_block_reverse(
            l,
            &a.mlp,
            live,
            &a.ffn_in,
            &adj.stream,
            d_ffn_in,
            false,
            &mut adj.mlp,
            outs,
        );
        let (mean2, rstd2) = (&a.ln2_mean, &a.ln2_rstd);
        p.layernorm_backward(
            outs,
            ln,
            &mut adj.stream,
            &adj.ln,
            &a.mid,
            mean2,
            rstd2,
            bt.ln2,
        );

        // d inp = d mid (residual) + LN1^T attn^T d mid
        let need_dx = need_below || outs.wants(bt.ln1.w) || outs.wants(bt.ln1.b);
        let d_attn_in = need_dx.then_some(&mut adj.ln);
        self.attention_block_reverse(
            l,
            &a.att,
            live.attn,
            &adj.stream,
            &a.attn_in,
            live.attn_in,
            d_attn_in,
            false,
            &mut adj.att,
            outs,
        );
        let (mean1, rstd1) = (&a.ln1_mean, &a.ln1_rstd);
        if need_below {
            p.layernorm_backward(
                outs,
                ln,
                &mut adj.stream,
                &adj.ln,
                inp,
                mean1,
                rstd1,
                bt.ln1,
            );
        } else if need_dx {
            // only LayerNorm 1's own parameters are wanted: its input adjoint is scratch
            p.b.zero(p.b.view_mut(&mut adj.tmp));
            p.layernorm_backward(outs, ln, &mut adj.tmp, &adj.ln, inp, mean1, rstd1, bt.ln1);
        }
    }

    /// As [`OptPass::pre_ln_block_reverse`], for a post-LN block.
    #[allow(clippy::too_many_arguments)]
    fn post_ln_block_reverse(
        &self,
        l: usize,
        a: &LayerActs<B::Buf>,
        live: &LayerLive,
        inp: &B::Buf,
        inp_live: bool,
        need_below: bool,
        adj: &mut Adjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let (p, bt, ln) = (&self.p, self.m.tensors.blocks[l], self.ln());
        let b = p.b;
        // d ffn_sum = LN2^T d out, kept in `ln`
        b.zero(b.view_mut(&mut adj.ln));
        let (mean2, rstd2) = (&a.ln2_mean, &a.ln2_rstd);
        p.layernorm_backward(
            outs,
            ln,
            &mut adj.ln,
            &adj.stream,
            &a.ffn_sum,
            mean2,
            rstd2,
            bt.ln2,
        );
        // d ffn_in = d ffn_sum (residual) + mlp^T d ffn_sum, in `tmp`
        b.copy(b.view_mut(&mut adj.tmp), b.view(&adj.ln));
        self.mlp_block_reverse(
            l,
            &a.mlp,
            live,
            &a.ffn_in,
            &adj.ln,
            &mut adj.tmp,
            true,
            &mut adj.mlp,
            outs,
        );
        // d mid = LN1^T d ffn_in, in `stream`, and a copy in `ln` to read from
        b.zero(b.view_mut(&mut adj.stream));
        let (mean1, rstd1) = (&a.ln1_mean, &a.ln1_rstd);
        p.layernorm_backward(
            outs,
            ln,
            &mut adj.stream,
            &adj.tmp,
            &a.mid,
            mean1,
            rstd1,
            bt.ln1,
        );
        b.copy(b.view_mut(&mut adj.ln), b.view(&adj.stream));
        // d inp = d mid (residual) + attn^T d mid
        let d_inp = need_below.then_some(&mut adj.stream);
        self.attention_block_reverse(
            l,
            &a.att,
            live.attn,
            &adj.ln,
            inp,
            inp_live,
            d_inp,
            true,
            &mut adj.att,
            outs,
        );
    }

    /// Adjoint of the attention block from `d_out` (the adjoint of its output): the
    /// output projection, attention, and q/k/v, whose input adjoint goes into `dx`
    /// (accumulated when `dx_accumulate`) when given.
    #[allow(clippy::too_many_arguments)]
    fn attention_block_reverse(
        &self,
        l: usize,
        a: &AttnActs<B::Buf>,
        attn_live: bool,
        d_out: &B::Buf,
        x: &B::Buf,
        x_live: bool,
        mut dx: Option<&mut B::Buf>,
        dx_accumulate: bool,
        adj: &mut AttnAdjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let (p, bt) = (&self.p, self.m.tensors.blocks[l]);
        let lin = p.linear(self.d.hidden, self.d.hidden);
        p.linear_backward(
            outs,
            lin,
            Some(&mut adj.attn),
            false,
            d_out,
            &a.attn,
            attn_live,
            bt.out,
        );
        let d_qkv = Qkv {
            q: &mut adj.q,
            k: &mut adj.k,
            v: &mut adj.v,
        };
        let qkv = Qkv {
            q: &a.q,
            k: &a.k,
            v: &a.v,
        };
        p.attention_backward(self.attention_op(), d_qkv, &adj.attn, &a.probs, qkv);
        let grads = [(&adj.q, bt.q), (&adj.k, bt.k), (&adj.v, bt.v)];
        for (i, (dy, lp)) in grads.into_iter().enumerate() {
            let acc = dx_accumulate || i > 0;
            p.linear_backward(outs, lin, dx.as_deref_mut(), acc, dy, x, x_live, lp);
        }
    }

    /// Adjoint of the MLP block from `d_out` into `dx` (overwritten or accumulated).
    #[allow(clippy::too_many_arguments)]
    fn mlp_block_reverse(
        &self,
        l: usize,
        a: &MlpActs<B::Buf>,
        live: &LayerLive,
        ffn_in: &B::Buf,
        d_out: &B::Buf,
        dx: &mut B::Buf,
        dx_accumulate: bool,
        adj: &mut MlpAdjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let (p, bt, (h, f)) = (
            &self.p,
            self.m.tensors.blocks[l],
            (self.d.hidden, self.d.ffn),
        );
        p.linear_backward(
            outs,
            p.linear(f, h),
            Some(&mut adj.act),
            false,
            d_out,
            &a.act,
            live.fc1,
            bt.fc2,
        );
        p.relu_backward(&mut adj.fc, &a.fc1, &adj.act, f);
        p.linear_backward(
            outs,
            p.linear(h, f),
            Some(dx),
            dx_accumulate,
            &adj.fc,
            ffn_in,
            live.ffn_in,
            bt.fc1,
        );
    }
}
