//! What an OPT pass keeps from the forward sweep for the reverse sweep, and the
//! reverse sweep's adjoints. Every `rows x width` buffer holds a pair in a tangent
//! pass (`[value; tangent]` forward, `[adjoint tangent; adjoint]` back).

use super::Dims;
use crate::backend::{Backend, Scalar};
use crate::error::Result;
use crate::model::config::OptConfig;

/// One decoder block's activations.
pub(crate) struct LayerActs<Buf> {
    /// Pre-LN: LN1(input), the attention block's input. Unused in post-LN.
    pub attn_in: Buf,
    pub ln1_mean: Buf,
    pub ln1_rstd: Buf,
    pub att: AttnActs<Buf>,
    /// Input + attention branch.
    pub mid: Buf,
    /// The MLP's input: pre-LN LN2(mid), post-LN LN1(mid).
    pub ffn_in: Buf,
    pub ln2_mean: Buf,
    pub ln2_rstd: Buf,
    pub mlp: MlpActs<Buf>,
    /// Post-LN: ffn_in + MLP branch (LN2's input). Unused in pre-LN.
    pub ffn_sum: Buf,
}

/// Inside the attention block.
pub(crate) struct AttnActs<Buf> {
    pub q: Buf,
    pub k: Buf,
    pub v: Buf,
    /// Attention probabilities `[batch, heads, seq, seq]` (and their tangent).
    pub probs: Buf,
    pub attn: Buf,
}

/// Inside the MLP block: fc1's pre-activation and its ReLU.
pub(crate) struct MlpActs<Buf> {
    pub fc1: Buf,
    pub act: Buf,
}

/// Which tangents of a block may be nonzero (the others are exactly zero).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LayerLive {
    pub attn_in: bool,
    pub attn: bool,
    pub mid: bool,
    pub ffn_in: bool,
    pub fc1: bool,
    pub ffn_sum: bool,
}

/// The whole forward sweep's activations.
pub(crate) struct Activations<Buf> {
    /// Token embeddings before `project_in` (only with projections).
    pub tok: Buf,
    /// The residual stream: `streams[l]` enters block `l`, `streams[layers]` leaves the last.
    pub streams: Vec<Buf>,
    /// Every block's activations, or, when recomputing, one block's: the scratch
    /// that the forward sweep runs each block in and the reverse sweep reruns each
    /// block into (`acts.layers[0]`).
    pub layers: Vec<LayerActs<Buf>>,
    pub lnf: Buf,
    pub lnf_mean: Buf,
    pub lnf_rstd: Buf,
    /// After `project_out` (only with projections).
    pub proj: Buf,
}

/// Liveness of the tangents.
#[derive(Clone, Debug, Default)]
pub(crate) struct Live {
    pub tok: bool,
    pub streams: Vec<bool>,
    pub layers: Vec<LayerLive>,
    pub lnf: bool,
    pub proj: bool,
}

/// Adjoints for the reverse sweep, one block's worth, reused from the top down.
pub(crate) struct Adjoints<Buf> {
    pub stream: Buf,
    pub tmp: Buf,
    pub ln: Buf,
    pub att: AttnAdjoints<Buf>,
    pub mlp: MlpAdjoints<Buf>,
    pub emb: Buf,
}

/// Adjoints inside the attention block.
pub(crate) struct AttnAdjoints<Buf> {
    pub attn: Buf,
    pub q: Buf,
    pub k: Buf,
    pub v: Buf,
}

/// Adjoints inside the MLP block.
pub(crate) struct MlpAdjoints<Buf> {
    pub fc: Buf,
    pub act: Buf,
}

/// An OPT pass's buffers: the activations, their liveness and (once a reverse
/// sweep has run) the adjoints.
pub struct OptBuffers<Buf> {
    pub(crate) acts: Activations<Buf>,
    pub(crate) adj: Option<Adjoints<Buf>>,
    pub(crate) live: Live,
    /// One block's activations (recomputed by the reverse sweep) or every block's.
    pub(crate) recompute: bool,
}

impl<Buf> OptBuffers<Buf> {
    /// Buffers for `dims`; `dual` doubles them for tangents; `recompute` keeps one
    /// block's activations instead of every block's.
    pub(crate) fn new<T: Scalar, B: Backend<T, Buf = Buf>>(
        b: &B,
        c: &OptConfig,
        dims: Dims,
        dual: bool,
        recompute: bool,
    ) -> Result<Self> {
        let p = if dual { 2 } else { 1 };
        let (r, h, f) = (dims.rows, dims.hidden, dims.ffn);
        let pre = c.do_layer_norm_before;
        let proj = c.has_projections();
        let pair = |w: usize| b.zeros(p * r * w);
        let opt = |on: bool, n: usize| b.zeros(if on { n } else { 0 });
        let blocks = if recompute {
            dims.layers.min(1)
        } else {
            dims.layers
        };
        let layers = (0..blocks)
            .map(|_| {
                Ok(LayerActs {
                    attn_in: opt(pre, p * r * h)?,
                    ln1_mean: b.zeros(r)?,
                    ln1_rstd: b.zeros(r)?,
                    att: AttnActs {
                        q: pair(h)?,
                        k: pair(h)?,
                        v: pair(h)?,
                        probs: b.zeros(p * dims.attention().probs_len())?,
                        attn: pair(h)?,
                    },
                    mid: pair(h)?,
                    ffn_in: pair(h)?,
                    ln2_mean: b.zeros(r)?,
                    ln2_rstd: b.zeros(r)?,
                    mlp: MlpActs {
                        fc1: pair(f)?,
                        act: pair(f)?,
                    },
                    ffn_sum: opt(!pre, p * r * h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let acts = Activations {
            tok: opt(proj, p * r * dims.embed)?,
            streams: (0..=dims.layers).map(|_| pair(h)).collect::<Result<_>>()?,
            layers,
            lnf: opt(c.has_final_layer_norm(), p * r * h)?,
            lnf_mean: b.zeros(r)?,
            lnf_rstd: b.zeros(r)?,
            proj: opt(proj, p * r * dims.embed)?,
        };
        Ok(OptBuffers {
            acts,
            adj: None,
            live: Live::default(),
            recompute,
        })
    }

    /// Calls `f` on every buffer (for counting what a workspace holds).
    #[cfg(test)]
    pub(crate) fn for_each_buf(&self, mut f: impl FnMut(&Buf)) {
        let a = &self.acts;
        for buf in [&a.tok, &a.lnf, &a.lnf_mean, &a.lnf_rstd, &a.proj] {
            f(buf);
        }
        a.streams.iter().for_each(&mut f);
        for l in &a.layers {
            let (att, mlp) = (&l.att, &l.mlp);
            for buf in [
                &l.attn_in,
                &l.ln1_mean,
                &l.ln1_rstd,
                &att.q,
                &att.k,
                &att.v,
                &att.probs,
                &att.attn,
                &l.mid,
                &l.ffn_in,
                &l.ln2_mean,
                &l.ln2_rstd,
                &mlp.fc1,
                &mlp.act,
                &l.ffn_sum,
            ] {
                f(buf);
            }
        }
        if let Some(d) = &self.adj {
            for buf in [
                &d.stream,
                &d.tmp,
                &d.ln,
                &d.att.attn,
                &d.att.q,
                &d.att.k,
                &d.att.v,
                &d.mlp.fc,
                &d.mlp.act,
                &d.emb,
            ] {
                f(buf);
            }
        }
    }

    /// The reverse sweep's buffers, allocated on first use.
    pub(crate) fn adjoints<T: Scalar, B: Backend<T, Buf = Buf>>(
        &mut self,
        b: &B,
        c: &OptConfig,
        d: Dims,
        dual: bool,
    ) -> Result<()> {
        if self.adj.is_some() {
            return Ok(());
        }
        let p = if dual { 2 } else { 1 };
        let pair = |w: usize| b.zeros(p * d.rows * w);
        self.adj = Some(Adjoints {
            stream: pair(d.hidden)?,
            tmp: pair(d.hidden)?,
            ln: pair(d.hidden)?,
            att: AttnAdjoints {
                attn: pair(d.hidden)?,
                q: pair(d.hidden)?,
                k: pair(d.hidden)?,
                v: pair(d.hidden)?,
            },
            mlp: MlpAdjoints {
                fc: pair(d.ffn)?,
                act: pair(d.ffn)?,
            },
            emb: pair(if c.has_projections() { d.embed } else { 0 })?,
        });
        Ok(())
    }

    /// The LM head's input at every row: after the final LayerNorm and
    /// `project_out`, when the model has them.
    pub(crate) fn head_input(&self, c: &OptConfig) -> &Buf {
        let a = &self.acts;
        if c.has_projections() {
            &a.proj
        } else if c.has_final_layer_norm() {
            &a.lnf
        } else {
            &a.streams[a.streams.len() - 1]
        }
    }
}
