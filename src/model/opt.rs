//! The OPT decoder (`OPTForCausalLM`), written once over a [`Backend`].
//!
//! Read top to bottom like the architecture: token embedding (and `project_in`),
//! learned positions, `num_hidden_layers` blocks of self-attention and a ReLU MLP
//! with residual connections, LayerNorms before (pre-LN: 125m, 1.3b, 13b) or after
//! (post-LN: 350m) each block, the final LayerNorm (pre-LN only), `project_out`, and
//! the LM head tied to the token embedding.
//!
//! One sweep does whatever a [`Pass`] asks for:
//! - forward only (logits, loss);
//! - forward and reverse with values only (the gradient);
//! - forward with (value, tangent) pairs and reverse with (adjoint, adjoint tangent)
//!   pairs: loss, `g . v`, optionally the gradient, and `H v` (dense, or at a mask's
//!   entries only), the exact forward-over-reverse Hessian-vector product.
//!
//! In the tangent sweep a tangent that is known to be zero (before the first
//! perturbed parameter) is not computed, and the reverse sweep stops below the
//! lowest parameter whose output is wanted. The LM head (a `vocab x embed` product
//! per row, most of a sweep's work on a small model with a large vocabulary) runs
//! only on the rows whose logits a loss reads, gathered from the rest.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Range;

use super::batch::{Batch, scored_rows};
use super::config::OptConfig;
use super::layout::{LayerTensor, ParamLayout, ParamRole};
use super::ops::attention::{Attention, Qkv};
use super::ops::embedding::{self, Embedding};
use super::ops::layernorm::{Affine, LayerNorm};
use super::ops::linear::{Linear, LinearGrads, LinearParams};
use super::ops::logprob::LogProb;
use super::ops::loss::LossHead;
use super::ops::relu::Relu;
use super::ops::residual::Residual;
use super::ops::{Tangent, TangentOut};
use crate::backend::{AttentionDims, Backend, Scalar};
use crate::error::{Error, Result};

/// The epsilon of every LayerNorm in OPT (PyTorch's default; OPT's config has no key
/// for it).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// An OPT model whose parameters live on a backend.
pub struct Opt<T: Scalar, B: Backend<T>> {
    backend: B,
    config: OptConfig,
    layout: ParamLayout,
    params: B::Buf,
    tensors: Tensors,
    _scalar: PhantomData<T>,
}

/// A linear layer's weight and bias, as positions in the layout.
#[derive(Clone, Copy, Debug)]
struct Lin {
    w: usize,
    b: Option<usize>,
}

/// A LayerNorm's weight and bias (absent without elementwise affine).
#[derive(Clone, Copy, Debug)]
struct Norm {
    w: Option<usize>,
    b: Option<usize>,
}

/// The tensors of one decoder block.
#[derive(Clone, Copy, Debug)]
struct BlockTensors {
    q: Lin,
    k: Lin,
    v: Lin,
    out: Lin,
    /// `self_attn_layer_norm`.
    ln1: Norm,
    fc1: Lin,
    fc2: Lin,
    /// `final_layer_norm` of the block.
    ln2: Norm,
}

/// Where every tensor the network reads sits in the layout, resolved once so that
/// the sweeps never look anything up.
#[derive(Clone, Debug)]
struct Tensors {
    token: usize,
    position: usize,
    project_in: Option<Lin>,
    project_out: Option<Lin>,
    final_ln: Norm,
    /// The LM head's weight: the token embedding when tied.
    head: Lin,
    blocks: Vec<BlockTensors>,
}

impl Tensors {
    fn resolve(layout: &ParamLayout, config: &OptConfig) -> Result<Self> {
        let entries: HashMap<ParamRole, usize> = layout
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (e.role, i))
            .collect();
        let find = |role: ParamRole| entries.get(&role).copied();
        let need = |role: ParamRole| {
            find(role)
                .ok_or_else(|| Error::Unsupported(format!("the parameter layout has no {role:?}")))
        };
        let lin = |w: ParamRole, b: Option<ParamRole>| -> Result<Lin> {
            Ok(Lin {
                w: need(w)?,
                b: b.and_then(find),
            })
        };
        let layer = |layer: usize, tensor: LayerTensor| ParamRole::Layer { layer, tensor };
        let blocks = (0..config.num_hidden_layers)
            .map(|l| {
                use LayerTensor::*;
                let pair = |w, b| lin(layer(l, w), Some(layer(l, b)));
                let norm = |w, b| Norm {
                    w: find(layer(l, w)),
                    b: find(layer(l, b)),
                };
                Ok(BlockTensors {
                    q: pair(QWeight, QBias)?,
                    k: pair(KWeight, KBias)?,
                    v: pair(VWeight, VBias)?,
                    out: pair(OutWeight, OutBias)?,
                    ln1: norm(AttnLayerNormWeight, AttnLayerNormBias),
                    fc1: pair(Fc1Weight, Fc1Bias)?,
                    fc2: pair(Fc2Weight, Fc2Bias)?,
                    ln2: norm(FinalLayerNormWeight, FinalLayerNormBias),
                })
            })
            .collect::<Result<_>>()?;
        let head = if config.tie_word_embeddings {
            ParamRole::TokenEmbedding
        } else {
            ParamRole::LmHead
        };
        let projections = config.has_projections();
        Ok(Tensors {
            token: need(ParamRole::TokenEmbedding)?,
            position: need(ParamRole::PositionEmbedding)?,
            project_in: projections
                .then(|| lin(ParamRole::ProjectIn, None))
                .transpose()?,
            project_out: projections
                .then(|| lin(ParamRole::ProjectOut, None))
                .transpose()?,
            final_ln: Norm {
                w: find(ParamRole::FinalLayerNormWeight),
                b: find(ParamRole::FinalLayerNormBias),
            },
            head: lin(head, None)?,
            blocks,
        })
    }
}

impl<T: Scalar, B: Backend<T>> Opt<T, B> {
    /// Uploads `params` (the flat vector in [`ParamLayout`] order) to `backend`.
    pub fn new(backend: B, config: OptConfig, params: &[T]) -> Result<Self> {
        let layout = ParamLayout::new(&config);
        if params.len() != layout.total() {
            return Err(Error::ShapeMismatch {
                name: "flat parameter vector".into(),
                expected: vec![layout.total()],
                found: vec![params.len()],
            });
        }
        if let Some(i) = params.iter().position(|x| !x.is_finite()) {
            let name = layout.entry_of(i).map_or("?", |e| e.name.as_str());
            return Err(Error::NonFinite(format!("parameter {i} (in `{name}`)")));
        }
        let tensors = Tensors::resolve(&layout, &config)?;
        let params = backend.upload(params)?;
        Ok(Opt {
            backend,
            config,
            layout,
            params,
            tensors,
            _scalar: PhantomData,
        })
    }

    pub fn config(&self) -> &OptConfig {
        &self.config
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Number of parameters N.
    pub fn num_params(&self) -> usize {
        self.layout.total()
    }

    fn param(&self, entry: usize) -> B::View<'_> {
        let b = &self.backend;
        b.sub(b.view(&self.params), self.layout.entries()[entry].range())
    }

    fn range(&self, entry: usize) -> Range<usize> {
        self.layout.entries()[entry].range()
    }

    /// Which sweep stage a tensor belongs to: 0 the embeddings, `l + 1` decoder block
    /// `l`, `layers + 1` the top (final LayerNorm, `project_out`, LM head).
    fn stage(&self, entry: usize) -> usize {
        match self.layout.entries()[entry].role {
            ParamRole::TokenEmbedding | ParamRole::PositionEmbedding | ParamRole::ProjectIn => 0,
            ParamRole::Layer { layer, .. } => layer + 1,
            _ => self.config.num_hidden_layers + 1,
        }
    }

    /// Checks `batch` against the model and uploads what the kernels need.
    pub fn prepare(&self, batch: &Batch) -> Result<Prepared<T, B>> {
        batch.validate(&self.config)?;
        let t = &batch.tokens;
        let b = &self.backend;
        let targets = batch.row_targets();
        let scored = scored_rows(&targets);
        let scored_ids: Vec<u32> = scored.iter().map(|&r| r as u32).collect();
        let scored_targets: Vec<u32> = scored.iter().map(|&r| targets[r]).collect();
        Ok(Prepared {
            batch: t.batch,
            seq: t.seq,
            ids: b.upload_index(&t.input_ids)?,
            positions: b.upload_index(&embedding::positions(&t.attention_mask, t.batch, t.seq))?,
            key_mask: b.upload_index(&t.attention_mask)?,
            targets: b.upload_index(&targets)?,
            scored_ids: b.upload_index(&scored_ids)?,
            scored_targets: b.upload_index(&scored_targets)?,
            scored,
            head: batch.loss_head(),
            terms: batch.loss_terms(),
            _scalar: PhantomData,
        })
    }
}

/// A batch checked against the model and uploaded to its backend.
pub struct Prepared<T: Scalar, B: Backend<T>> {
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    ids: B::Index,
    positions: B::Index,
    key_mask: B::Index,
    /// Per row: the token its logits are scored against, or `NO_TARGET`.
    targets: B::Index,
    /// The rows with a target (ascending), the only ones whose logits a loss reads.
    scored: Vec<usize>,
    scored_ids: B::Index,
    /// Their targets.
    scored_targets: B::Index,
    head: LossHead,
    pub(crate) terms: usize,
    _scalar: PhantomData<T>,
}

impl<T: Scalar, B: Backend<T>> Prepared<T, B> {
    /// Each question's candidate scores from the rows' log-probabilities (empty for a
    /// next-token batch).
    pub(crate) fn choice_scores(&self, row_lp: &[f64]) -> Vec<Vec<f64>> {
        self.head.choice_scores(row_lp)
    }
}

/// The sizes of one sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    batch: usize,
    seq: usize,
    rows: usize,
    hidden: usize,
    embed: usize,
    ffn: usize,
    vocab: usize,
    heads: usize,
    layers: usize,
}

impl Dims {
    fn new(c: &OptConfig, batch: usize, seq: usize) -> Self {
        Dims {
            batch,
            seq,
            rows: batch * seq,
            hidden: c.hidden_size,
            embed: c.word_embed_proj_dim,
            ffn: c.ffn_dim,
            vocab: c.vocab_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
        }
    }

    fn attention(&self) -> AttentionDims {
        AttentionDims {
            batch: self.batch,
            seq: self.seq,
            heads: self.heads,
            head_dim: self.hidden / self.heads,
        }
    }
}

/// What one decoder block keeps from the forward sweep for the reverse sweep. Every
/// `rows x width` buffer holds `[value; tangent]` in a tangent sweep.
struct LayerActs<Buf> {
    /// Pre-LN: LN1(input), the attention block's input. Unused in post-LN.
    attn_in: Buf,
    ln1_mean: Buf,
    ln1_rstd: Buf,
    att: AttnActs<Buf>,
    /// Input + attention branch.
    mid: Buf,
    /// The MLP's input: pre-LN LN2(mid), post-LN LN1(mid).
    ffn_in: Buf,
    ln2_mean: Buf,
    ln2_rstd: Buf,
    mlp: MlpActs<Buf>,
    /// Post-LN: ffn_in + MLP branch (LN2's input). Unused in pre-LN.
    ffn_sum: Buf,
}

/// Inside the attention block.
struct AttnActs<Buf> {
    q: Buf,
    k: Buf,
    v: Buf,
    /// Attention probabilities `[batch, heads, seq, seq]` (and their tangent).
    probs: Buf,
    attn: Buf,
}

/// Inside the MLP block: fc1's pre-activation and its ReLU.
struct MlpActs<Buf> {
    fc1: Buf,
    act: Buf,
}

/// Which tangents of a block may be nonzero (the others are exactly zero).
#[derive(Clone, Copy, Debug, Default)]
struct LayerLive {
    attn_in: bool,
    attn: bool,
    mid: bool,
    ffn_in: bool,
    fc1: bool,
    ffn_sum: bool,
}

struct Activations<Buf> {
    /// Token embeddings before `project_in` (only with projections).
    tok: Buf,
    /// The residual stream: `streams[l]` enters block `l`, `streams[layers]` leaves the last.
    streams: Vec<Buf>,
    layers: Vec<LayerActs<Buf>>,
    lnf: Buf,
    lnf_mean: Buf,
    lnf_rstd: Buf,
    /// After `project_out` (only with projections).
    proj: Buf,
}

/// The LM head's buffers, for the rows whose logits a loss reads (every row when
/// the logits themselves are asked for): a classification batch scores a few
/// positions per sequence, and the `rows x vocab` logits of the others would cost
/// most of a sweep on a 50k vocabulary. Sized for `capacity` rows, grown on demand.
struct HeadBuffers<Buf> {
    capacity: usize,
    /// The head's input at the head rows (a pair): gathered from the full input.
    x: Buf,
    logits: Buf,
    /// Softmax of each head row's logits.
    probs: Buf,
    /// Log-probability of each head row's target (and its tangent).
    lp: Buf,
    /// The reverse sweep's, allocated with the other adjoints.
    adj: Option<HeadAdjoints<Buf>>,
}

impl<Buf> HeadBuffers<Buf> {
    fn empty<T: Scalar, B: Backend<T, Buf = Buf>>(b: &B) -> Result<Self> {
        Ok(HeadBuffers {
            capacity: 0,
            x: b.zeros(0)?,
            logits: b.zeros(0)?,
            probs: b.zeros(0)?,
            lp: b.zeros(0)?,
            adj: None,
        })
    }
}

/// Adjoint pairs of the head's buffers.
struct HeadAdjoints<Buf> {
    x: Buf,
    logits: Buf,
    lp: Buf,
}

/// Liveness of the tangents outside the blocks.
#[derive(Clone, Debug, Default)]
struct Live {
    tok: bool,
    streams: Vec<bool>,
    layers: Vec<LayerLive>,
    lnf: bool,
    proj: bool,
    logits: bool,
}

/// Adjoints for the reverse sweep, one block's worth, reused from the top down. In a
/// tangent sweep each holds `[adjoint tangent; adjoint]`.
struct Adjoints<Buf> {
    stream: Buf,
    tmp: Buf,
    ln: Buf,
    att: AttnAdjoints<Buf>,
    mlp: MlpAdjoints<Buf>,
    emb: Buf,
}

/// Adjoints inside the attention block.
struct AttnAdjoints<Buf> {
    attn: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
}

/// Adjoints inside the MLP block.
struct MlpAdjoints<Buf> {
    fc: Buf,
    act: Buf,
}

/// Buffers for sweeps over batches of one shape, reused across calls (allocating
/// them per call would cost page faults comparable to the arithmetic on a CPU).
pub struct Workspace<T: Scalar, B: Backend<T>> {
    dims: Dims,
    dual: bool,
    acts: Activations<B::Buf>,
    adj: Option<Adjoints<B::Buf>>,
    head: HeadBuffers<B::Buf>,
    live: Live,
    host_lp: Vec<T>,
    /// Every row's log-probability from the last loss evaluation (0 where nothing
    /// is scored), as the loss head read them.
    row_lp: Vec<f64>,
}

impl<T: Scalar, B: Backend<T>> Workspace<T, B> {
    /// Buffers for `batch x seq` tokens; `dual` doubles them for tangents.
    fn new(m: &Opt<T, B>, dims: Dims, dual: bool) -> Result<Self> {
        let b = &m.backend;
        let c = &m.config;
        let p = if dual { 2 } else { 1 };
        let (r, h, f) = (dims.rows, dims.hidden, dims.ffn);
        let pre = c.do_layer_norm_before;
        let proj = c.has_projections();
        let pair = |w: usize| b.zeros(p * r * w);
        let opt = |on: bool, n: usize| b.zeros(if on { n } else { 0 });
        let layers = (0..dims.layers)
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
        Ok(Workspace {
            dims,
            dual,
            acts,
            adj: None,
            head: HeadBuffers::empty(b)?,
            live: Live::default(),
            host_lp: Vec::new(),
            row_lp: Vec::new(),
        })
    }

    /// Makes the head's buffers hold `rows` rows (and their adjoints when `reverse`),
    /// growing them when they are too small.
    fn head_buffers(&mut self, m: &Opt<T, B>, rows: usize, reverse: bool) -> Result<()> {
        let b = &m.backend;
        let p = if self.dual { 2 } else { 1 };
        let (e, v) = (self.dims.embed, self.dims.vocab);
        let head = &mut self.head;
        if rows > head.capacity {
            // drop the old buffers before allocating new ones
            *head = HeadBuffers::empty(b)?;
            head.x = b.zeros(p * rows * e)?;
            head.logits = b.zeros(p * rows * v)?;
            head.probs = b.zeros(rows * v)?;
            head.lp = b.zeros(p * rows)?;
            head.capacity = rows;
        }
        if reverse && head.adj.is_none() {
            let n = head.capacity;
            head.adj = Some(HeadAdjoints {
                x: b.zeros(p * n * e)?,
                logits: b.zeros(p * n * v)?,
                lp: b.zeros(p * n)?,
            });
        }
        Ok(())
    }

    /// The reverse sweep's buffers, allocated on first use.
    fn adjoints(&mut self, m: &Opt<T, B>) -> Result<()> {
        if self.adj.is_some() {
            return Ok(());
        }
        let b = &m.backend;
        let p = if self.dual { 2 } else { 1 };
        let d = self.dims;
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
            emb: pair(if m.config.has_projections() {
                d.embed
            } else {
                0
            })?,
        });
        Ok(())
    }

    /// The logits of the last forward sweep run with [`Pass::all_rows`] (`rows x
    /// vocab` values, on the backend).
    pub(crate) fn logits<'a>(&'a self, b: &B) -> B::View<'a> {
        let n = self.dims.rows * self.dims.vocab;
        b.sub(b.view(&self.head.logits), 0..n)
    }

    /// Every row's log-probability from the last forward sweep (0 where unscored).
    pub(crate) fn row_logprobs(&self) -> &[f64] {
        &self.row_lp
    }
}

/// `dst[i] = src[rows[i]]` for `n` rows of `width`: a row gather is a table lookup.
fn gather_rows<T: Scalar, B: Backend<T>>(
    b: &B,
    dst: B::ViewMut<'_>,
    src: B::View<'_>,
    rows: &B::Index,
    n: usize,
    width: usize,
) {
    b.embedding_forward(dst, rows, src, n, width, false);
}

/// `dst[rows[i]] += src[i]` for `n` rows of `width` (the adjoint of [`gather_rows`]).
fn scatter_add_rows<T: Scalar, B: Backend<T>>(
    b: &B,
    dst: B::ViewMut<'_>,
    src: B::View<'_>,
    rows: &B::Index,
    n: usize,
    width: usize,
) {
    b.embedding_backward(dst, src, rows, n, width);
}

/// Workspace for `prepared`'s shape, reusing `slot` when it fits.
pub(crate) fn workspace<'w, T: Scalar, B: Backend<T>>(
    slot: &'w mut Option<Workspace<T, B>>,
    m: &Opt<T, B>,
    prepared: &Prepared<T, B>,
    dual: bool,
) -> Result<&'w mut Workspace<T, B>> {
    let dims = Dims::new(&m.config, prepared.batch, prepared.seq);
    if !matches!(slot, Some(ws) if ws.dims == dims && ws.dual == dual) {
        // drop the old buffers before allocating new ones
        *slot = None;
        *slot = Some(Workspace::new(m, dims, dual)?);
    }
    Ok(slot.as_mut().expect("workspace was just created")) // invariant: set just above
}

/// A mask prepared for masked Hessian-vector products: its sorted flat indices split
/// by tensor. Matrices get sparse tangents and sampled gradients; small tensors
/// (biases, LayerNorm parameters) get dense scratch copies, which costs nothing.
pub struct MaskPlan<T: Scalar, B: Backend<T>> {
    k: usize,
    per_entry: Vec<Option<EntryMask<B::Index>>>,
    /// The small masked tensors and their dense tangents (filled per call).
    small: Vec<SmallTangent<B::Buf>>,
    lowest_stage: usize,
}

struct EntryMask<Index> {
    /// Where this tensor's entries sit in the k-vector.
    k_range: Range<usize>,
    /// Their flat indices inside the tensor.
    idx: Index,
    /// Index into `MaskPlan::small` for a small tensor.
    small: Option<usize>,
}

struct SmallTangent<Buf> {
    entry: usize,
    len: usize,
    tangent: Buf,
}

impl<T: Scalar, B: Backend<T>> MaskPlan<T, B> {
    /// Splits the sorted, distinct flat indices `mask` (as in [`crate::mask::Mask`]) by
    /// tensor.
    pub fn new(m: &Opt<T, B>, mask: &[u64]) -> Result<Self> {
        let b = &m.backend;
        let n = m.layout.total() as u64;
        if let Some(w) = mask.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::arg(
                "mask",
                format!(
                    "indices must be sorted and distinct ({} then {})",
                    w[0], w[1]
                ),
            ));
        }
        if let Some(&last) = mask.last()
            && last >= n
        {
            return Err(Error::arg(
                "mask",
                format!("index {last} is outside the {n} parameters"),
            ));
        }
        let mut per_entry: Vec<Option<EntryMask<B::Index>>> = Vec::new();
        let mut small = Vec::new();
        let mut lowest_stage = usize::MAX;
        let mut start = 0;
        for (e, entry) in m.layout.entries().iter().enumerate() {
            let range = entry.range();
            let end = start + mask[start..].partition_point(|&i| i < range.end as u64);
            if end == start {
                per_entry.push(None);
                continue;
            }
            lowest_stage = lowest_stage.min(m.stage(e));
            let local: Vec<u32> = mask[start..end]
                .iter()
                .map(|&i| (i - range.start as u64) as u32)
                .collect();
            let is_small = entry.shape.len() == 1;
            if is_small {
                small.push(SmallTangent {
                    entry: e,
                    len: entry.len(),
                    tangent: b.zeros(entry.len())?,
                });
            }
            per_entry.push(Some(EntryMask {
                k_range: start..end,
                idx: b.upload_index(&local)?,
                small: is_small.then(|| small.len() - 1),
            }));
            start = end;
        }
        Ok(MaskPlan {
            k: mask.len(),
            per_entry,
            small,
            lowest_stage,
        })
    }

    /// Number of masked coordinates k.
    pub fn len(&self) -> usize {
        self.k
    }

    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    fn small_mask(&self, s: &SmallTangent<B::Buf>) -> &EntryMask<B::Index> {
        self.per_entry[s.entry]
            .as_ref()
            .expect("small tensor is masked") // invariant: `small` is built from masked entries only
    }

    /// Zeroed output scratch for the small masked tensors (one buffer each).
    pub(crate) fn output_scratch(&self, b: &B) -> Result<Vec<B::Buf>> {
        self.small.iter().map(|s| b.zeros(s.len)).collect()
    }

    /// Before a sweep: densifies the small tensors' tangents from `values` (the k-vector).
    pub(crate) fn load(&mut self, b: &B, values: B::View<'_>) {
        let ranges: Vec<Range<usize>> = self
            .small
            .iter()
            .map(|s| self.small_mask(s).k_range.clone())
            .collect();
        for (s, range) in self.small.iter_mut().zip(ranges) {
            b.zero(b.view_mut(&mut s.tangent));
            let em = self.per_entry[s.entry]
                .as_ref()
                .expect("small tensor is masked"); // invariant: as in `small_mask`
            b.scatter(b.view_mut(&mut s.tangent), &em.idx, b.sub(values, range));
        }
    }

    /// After a sweep: adds the small tensors' outputs at the mask into `out` (the k-vector).
    pub(crate) fn store(&self, b: &B, mut out: B::ViewMut<'_>, scratch: &[B::Buf]) {
        for (s, buf) in self.small.iter().zip(scratch) {
            let em = self.small_mask(s);
            let dst = b.sub_mut(b.reborrow(&mut out), em.k_range.clone());
            b.gather_add(dst, &em.idx, b.view(buf));
        }
    }
}

/// The direction `v` of a tangent sweep.
pub(crate) enum Direction<'a, T: Scalar, B: Backend<T>> {
    /// No tangents: a forward or gradient sweep.
    None,
    /// A dense N-vector.
    Dense(B::View<'a>),
    /// A k-vector on a mask's coordinates (zero elsewhere).
    Masked {
        plan: &'a MaskPlan<T, B>,
        values: B::View<'a>,
    },
}

/// Where a sweep's results go (accumulated, so batches add up).
pub(crate) struct Outputs<'a, T: Scalar, B: Backend<T>> {
    /// The gradient (N-vector), when wanted.
    pub grad: Option<B::ViewMut<'a>>,
    pub tangent: Sink<'a, T, B>,
    /// Per layout entry: its ranges of the dense outputs (`grad` and a dense
    /// `tangent`) still hold values from before this computation. Such an entry is
    /// zeroed when first handed out, unless its first write replaces it whole; the
    /// dense outputs need no zeroing pass of their own (for OPT-125m, 500 MB).
    stale: Vec<bool>,
}

/// Where the gradient's tangent `H v` goes.
pub(crate) enum Sink<'a, T: Scalar, B: Backend<T>> {
    None,
    /// A dense N-vector.
    Dense(B::ViewMut<'a>),
    /// The k-vector of a mask (its small tensors through the plan's scratch).
    Masked {
        plan: &'a MaskPlan<T, B>,
        out: B::ViewMut<'a>,
        small_out: Vec<B::ViewMut<'a>>,
    },
}

/// The outputs of one parameter tensor.
struct ParamOut<'a, T: Scalar, B: Backend<T>> {
    grad: Option<B::ViewMut<'a>>,
    tangent: TangentOut<'a, T, B>,
    /// Its dense outputs hold stale values, to be overwritten by the first write.
    replace: bool,
}

impl<T: Scalar, B: Backend<T>> ParamOut<'_, T, B> {
    /// Zeroes the dense outputs (the gradient and a dense tangent).
    fn zero_dense(&mut self, b: &B) {
        if let Some(g) = self.grad.as_mut() {
            b.zero(b.reborrow(g));
        }
        if let TangentOut::Dense(t) = &mut self.tangent {
            b.zero(b.reborrow(t));
        }
    }
}

/// The output of one tensor under a mask: its sparse range of the k-vector, or its
/// small tensor's dense scratch.
fn masked_out<'x, T: Scalar, B: Backend<T>>(
    em: Option<&'x EntryMask<B::Index>>,
    sparse: Option<B::ViewMut<'x>>,
    small: &mut [Option<B::ViewMut<'x>>],
) -> TangentOut<'x, T, B> {
    match em {
        None => TangentOut::Skip,
        Some(EntryMask { small: Some(s), .. }) => {
            TangentOut::Dense(small[*s].take().expect("small scratch taken once")) // invariant: `take2` reborrowed the scratch of each small entry it asked for
        }
        Some(x) => TangentOut::Sparse {
            idx: &x.idx,
            out: sparse.expect("sparse entry has an output range"), // invariant: `carve2` returns a view for every sparse entry it was given
        },
    }
}

/// Two sub-views of `view` at disjoint ranges (the first before the second).
fn carve2<'x, T: Scalar, B: Backend<T>>(
    b: &B,
    view: B::ViewMut<'x>,
    r1: Option<Range<usize>>,
    r2: Option<Range<usize>>,
) -> (Option<B::ViewMut<'x>>, Option<B::ViewMut<'x>>) {
    match (r1, r2) {
        (None, None) => (None, None),
        (Some(r), None) => (Some(b.sub_mut(view, r)), None),
        (None, Some(r)) => (None, Some(b.sub_mut(view, r))),
        (Some(r1), Some(r2)) => {
            assert!(r1.end <= r2.start, "carve2: ranges out of order");
            let (lo, hi) = b.split_mut(view, r2.start);
            (Some(b.sub_mut(lo, r1)), Some(b.sub_mut(hi, 0..r2.len())))
        }
    }
}

impl<'a, T: Scalar, B: Backend<T>> Outputs<'a, T, B> {
    /// Outputs into `grad` and `tangent`, whose dense N-vectors hold arbitrary values
    /// (every entry of them is written by the sweeps and [`Outputs::finish`]). A
    /// masked sink is the caller's to zero: it is small, and its sparse entries are
    /// only ever added to.
    pub fn new(m: &Opt<T, B>, grad: Option<B::ViewMut<'a>>, tangent: Sink<'a, T, B>) -> Self {
        let dense = grad.is_some() || matches!(tangent, Sink::Dense(_));
        Outputs {
            grad,
            tangent,
            stale: vec![dense; m.layout.entries().len()],
        }
    }

    /// Zeroes the outputs of the tensors that no sweep reached.
    pub fn finish(&mut self, m: &Opt<T, B>) {
        for e in 0..self.stale.len() {
            if self.stale[e] {
                self.take1(m, Some(e));
            }
        }
    }

    /// Whether any output of tensor `e` is wanted.
    fn wants(&self, e: Option<usize>) -> bool {
        let Some(e) = e else { return false };
        self.grad.is_some()
            || match &self.tangent {
                Sink::None => false,
                Sink::Dense(_) => true,
                Sink::Masked { plan, .. } => plan.per_entry[e].is_some(),
            }
    }

    /// The outputs of tensors `e1` and `e2` (`e1` before `e2` in the layout). Stale
    /// dense outputs are zeroed first, except those of `e1` when `e1_whole` (the
    /// caller's first write covers all of `e1` and can replace instead of add).
    fn take2(
        &mut self,
        m: &Opt<T, B>,
        e1: Option<usize>,
        e2: Option<usize>,
        e1_whole: bool,
    ) -> (ParamOut<'_, T, B>, ParamOut<'_, T, B>) {
        let b = &m.backend;
        let mut was_stale =
            |e: Option<usize>| e.is_some_and(|e| std::mem::replace(&mut self.stale[e], false));
        let (stale1, stale2) = (was_stale(e1), was_stale(e2));
        let range = |e: Option<usize>| e.map(|e| m.range(e));
        let (g1, g2) = match self.grad.as_mut() {
            Some(g) => carve2(b, b.reborrow(g), range(e1), range(e2)),
            None => (None, None),
        };
        let (t1, t2) = match &mut self.tangent {
            Sink::None => (TangentOut::Skip, TangentOut::Skip),
            Sink::Dense(v) => {
                let (a, c) = carve2(b, b.reborrow(v), range(e1), range(e2));
                (
                    a.map_or(TangentOut::Skip, TangentOut::Dense),
                    c.map_or(TangentOut::Skip, TangentOut::Dense),
                )
            }
            Sink::Masked {
                plan,
                out,
                small_out,
            } => {
                let plan: &MaskPlan<T, B> = plan;
                let mask = |e: Option<usize>| e.and_then(|e| plan.per_entry[e].as_ref());
                let (m1, m2) = (mask(e1), mask(e2));
                let sparse = |em: Option<&EntryMask<B::Index>>| {
                    em.filter(|x| x.small.is_none()).map(|x| x.k_range.clone())
                };
                let (o1, o2) = carve2(b, b.reborrow(out), sparse(m1), sparse(m2));
                let (s1, s2) = (m1.and_then(|x| x.small), m2.and_then(|x| x.small));
                let mut small: Vec<Option<B::ViewMut<'_>>> = small_out
                    .iter_mut()
                    .enumerate()
                    .map(|(i, v)| (Some(i) == s1 || Some(i) == s2).then(|| b.reborrow(v)))
                    .collect();
                (
                    masked_out(m1, o1, &mut small),
                    masked_out(m2, o2, &mut small),
                )
            }
        };
        let mut out1 = ParamOut {
            grad: g1,
            tangent: t1,
            replace: stale1 && e1_whole,
        };
        let mut out2 = ParamOut {
            grad: g2,
            tangent: t2,
            replace: false,
        };
        if stale1 && !e1_whole {
            out1.zero_dense(b);
        }
        if stale2 {
            out2.zero_dense(b);
        }
        (out1, out2)
    }

    fn take1(&mut self, m: &Opt<T, B>, e: Option<usize>) -> ParamOut<'_, T, B> {
        self.take2(m, e, None, false).0
    }
}

/// The results of one sweep over one batch, already scaled by the dataset's size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SweepScalars {
    pub loss: f64,
    /// `g . v` in a tangent sweep.
    pub loss_dot: f64,
}

/// One sweep over one batch.
pub(crate) struct Pass<'a, T: Scalar, B: Backend<T>> {
    m: &'a Opt<T, B>,
    b: &'a B,
    d: Dims,
    dual: bool,
    dir: &'a Direction<'a, T, B>,
    /// Run the LM head on every row (for the logits), not only on the scored ones.
    all_rows: bool,
}

/// The rows the LM head runs on.
struct HeadRows<'x, I> {
    n: usize,
    /// Where they sit among all rows; `None`: all rows, in order.
    gather: Option<&'x I>,
    /// The target of each (or `NO_TARGET`).
    targets: &'x I,
}

impl<'a, T: Scalar, B: Backend<T>> Pass<'a, T, B> {
    pub fn new(m: &'a Opt<T, B>, prepared: &Prepared<T, B>, dir: &'a Direction<'a, T, B>) -> Self {
        Pass {
            m,
            b: &m.backend,
            d: Dims::new(&m.config, prepared.batch, prepared.seq),
            dual: !matches!(dir, Direction::None),
            dir,
            all_rows: false,
        }
    }

    /// Computes the logits of every row (see [`Workspace::logits`]); otherwise the
    /// LM head runs only on the rows a loss reads, which gives the same loss and
    /// derivatives exactly (the other rows' logits receive no adjoint).
    pub fn all_rows(mut self) -> Self {
        self.all_rows = true;
        self
    }

    fn head_rows<'x>(&self, batch: &'x Prepared<T, B>) -> HeadRows<'x, B::Index> {
        if self.all_rows {
            HeadRows {
                n: self.d.rows,
                gather: None,
                targets: &batch.targets,
            }
        } else {
            HeadRows {
                n: batch.scored.len(),
                gather: Some(&batch.scored_ids),
                targets: &batch.scored_targets,
            }
        }
    }

    /// Forward, loss, and (when `outs` is given) the reverse sweep, for one batch;
    /// `scale` is one over the dataset's number of loss terms.
    pub fn run(
        &self,
        ws: &mut Workspace<T, B>,
        batch: &Prepared<T, B>,
        scale: f64,
        outs: Option<&mut Outputs<'_, T, B>>,
    ) -> Result<SweepScalars> {
        debug_assert!(ws.dims == self.d && ws.dual == self.dual);
        ws.head_buffers(self.m, self.head_rows(batch).n, outs.is_some())?;
        self.forward(ws, batch);
        let scalars = self.loss(ws, batch, scale, outs.is_some())?;
        if let Some(outs) = outs {
            ws.adjoints(self.m)?;
            self.reverse(ws, batch, outs);
        }
        Ok(scalars)
    }

    // ---- views of pairs ----

    /// Elements of one half of a `rows x width` pair.
    fn n(&self, width: usize) -> usize {
        self.d.rows * width
    }

    fn val<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        self.b.sub(self.b.view(buf), 0..self.n(width))
    }

    fn tan<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        self.b
            .sub(self.b.view(buf), self.n(width)..2 * self.n(width))
    }

    /// The adjoint half of an adjoint pair (`[tangent; adjoint]`, or all of it).
    fn adj<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        let n = self.n(width);
        let range = if self.dual { n..2 * n } else { 0..n };
        self.b.sub(self.b.view(buf), range)
    }

    fn adj_tan<'x>(&self, buf: &'x B::Buf, width: usize) -> B::View<'x> {
        self.b.sub(self.b.view(buf), 0..self.n(width))
    }

    fn halves<'x>(&self, buf: &'x mut B::Buf, width: usize) -> (B::ViewMut<'x>, B::ViewMut<'x>) {
        self.b.split_mut(self.b.view_mut(buf), self.n(width))
    }

    // ---- parameters and their tangents ----

    fn param(&self, e: Option<usize>) -> Option<B::View<'a>> {
        e.map(|e| self.m.param(e))
    }

    fn tangent(&self, e: Option<usize>) -> Tangent<'a, T, B> {
        let Some(e) = e else { return Tangent::Zero };
        match self.dir {
            Direction::None => Tangent::Zero,
            Direction::Dense(v) => Tangent::Dense(self.b.sub(*v, self.m.range(e))),
            Direction::Masked { plan, values } => match &plan.per_entry[e] {
                None => Tangent::Zero,
                Some(em) => match em.small {
                    Some(s) => Tangent::Dense(self.b.view(&plan.small[s].tangent)),
                    None => Tangent::Sparse {
                        idx: &em.idx,
                        values: self.b.sub(*values, em.k_range.clone()),
                    },
                },
            },
        }
    }

    fn linear_params(&self, p: Lin) -> LinearParams<'a, T, B> {
        LinearParams {
            weight: self.m.param(p.w),
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

    fn linear(&self, in_dim: usize, out_dim: usize) -> Linear {
        Linear {
            rows: self.d.rows,
            in_dim,
            out_dim,
        }
    }

    fn layernorm(&self) -> LayerNorm {
        LayerNorm {
            rows: self.d.rows,
            width: self.d.hidden,
            eps: LAYER_NORM_EPS,
        }
    }

    /// `y = x W^T + b` (and its tangent); returns whether the tangent may be nonzero.
    fn linear_forward(
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
    fn linear_forward_views(
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

    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
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
    fn linear_backward_views(
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
        let (ow, ob) = outs.take2(self.m, Some(lp.w), lp.b, true);
        let grads = LinearGrads {
            weight: ow.grad,
            bias: ob.grad,
            weight_dot: ow.tangent,
            bias_dot: ob.tangent.dense(),
            weight_replace: ow.replace,
        };
        if self.dual {
            lin.vjp_dual(b, dx, dx_accumulate, dy, x, x_live, &p, grads);
        } else {
            lin.vjp(b, dx, dx_accumulate, grads, dy, x, p.weight);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: &mut B::Buf,
        mean: &mut B::Buf,
        rstd: &mut B::Buf,
        inp: &B::Buf,
        inp_live: bool,
        n: Norm,
    ) -> bool {
        let (b, ln, h) = (self.b, self.layernorm(), self.d.hidden);
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
    fn layernorm_backward(
        &self,
        outs: &mut Outputs<'_, T, B>,
        dinp: &mut B::Buf,
        dout: &B::Buf,
        inp: &B::Buf,
        mean: &B::Buf,
        rstd: &B::Buf,
        n: Norm,
    ) {
        let (b, ln, h) = (self.b, self.layernorm(), self.d.hidden);
        let (params, params_dot) = self.affine(n);
        let (ow, ob) = outs.take2(self.m, n.w, n.b, false);
        let (mean, rstd) = (b.view(mean), b.view(rstd));
        if !self.dual {
            let d = Affine {
                weight: ow.grad,
                bias: ob.grad,
            };
            ln.vjp(
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
        let d = Affine {
            weight: ow.grad,
            bias: ob.grad,
        };
        ln.vjp(
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
        ln.vjp_jvp(
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

    fn embedding_forward(
        &self,
        out: &mut B::Buf,
        ids: &B::Index,
        table: usize,
        width: usize,
        accumulate: bool,
    ) -> bool {
        let b = self.b;
        let e = Embedding {
            rows: self.d.rows,
            width,
        };
        if !self.dual {
            e.forward(b, b.view_mut(out), ids, self.m.param(table), accumulate);
            return false;
        }
        let (o, od) = self.halves(out, width);
        e.forward(b, o, ids, self.m.param(table), accumulate);
        e.jvp(b, od, ids, &self.tangent(Some(table)), accumulate)
    }

    fn embedding_backward(
        &self,
        outs: &mut Outputs<'_, T, B>,
        dout: &B::Buf,
        ids: &B::Index,
        table: usize,
        width: usize,
    ) {
        let e = Embedding {
            rows: self.d.rows,
            width,
        };
        let o = outs.take1(self.m, Some(table));
        if let Some(g) = o.grad {
            e.vjp(self.b, g, self.adj(dout, width), ids);
        }
        if self.dual {
            e.vjp_jvp(self.b, o.tangent, self.adj_tan(dout, width), ids);
        }
    }

    // ---- forward sweep ----

    fn forward(&self, ws: &mut Workspace<T, B>, batch: &Prepared<T, B>) {
        let c = &self.m.config;
        let (h, e) = (self.d.hidden, self.d.embed);
        let acts = &mut ws.acts;
        let live = &mut ws.live;
        live.streams = vec![false; self.d.layers + 1];
        live.layers = vec![LayerLive::default(); self.d.layers];
        let t = &self.m.tensors;
        let (tok, pos) = (t.token, t.position);
        let stream0 = &mut acts.streams[0];
        live.streams[0] = if let Some(pi) = t.project_in {
            live.tok = self.embedding_forward(&mut acts.tok, &batch.ids, tok, e, false);
            self.linear_forward(self.linear(e, h), stream0, &acts.tok, live.tok, pi)
        } else {
            self.embedding_forward(stream0, &batch.ids, tok, h, false)
        };
        live.streams[0] |= self.embedding_forward(stream0, &batch.positions, pos, h, true);

        for l in 0..self.d.layers {
            let (lower, upper) = acts.streams.split_at_mut(l + 1);
            let (inp, out) = (&lower[l], &mut upper[0]);
            let la = &mut acts.layers[l];
            let (inp_live, ll) = (live.streams[l], &mut live.layers[l]);
            let out_live = if c.do_layer_norm_before {
                self.pre_ln_block(l, la, ll, inp, inp_live, out, batch)
            } else {
                self.post_ln_block(l, la, ll, inp, inp_live, out, batch)
            };
            live.streams[l + 1] = out_live;
        }

        let last = &acts.streams[self.d.layers];
        let mut x_live = live.streams[self.d.layers];
        if c.has_final_layer_norm() {
            x_live = self.layernorm_forward(
                &mut acts.lnf,
                &mut acts.lnf_mean,
                &mut acts.lnf_rstd,
                last,
                x_live,
                t.final_ln,
            );
            live.lnf = x_live;
        }
        let x = if c.has_final_layer_norm() {
            &acts.lnf
        } else {
            last
        };
        if let Some(po) = t.project_out {
            x_live = self.linear_forward(self.linear(h, e), &mut acts.proj, x, x_live, po);
            live.proj = x_live;
        }
        let x = if c.has_projections() { &acts.proj } else { x };
        live.logits = self.head_forward(&mut ws.head, x, x_live, batch);
    }

    /// The LM head and the targets' log-probabilities on the head rows (see
    /// [`HeadBuffers`]), from `x`, the head's input at every row. Returns whether
    /// the logits' tangent may be nonzero.
    fn head_forward(
        &self,
        head: &mut HeadBuffers<B::Buf>,
        x: &B::Buf,
        x_live: bool,
        batch: &Prepared<T, B>,
    ) -> bool {
        let b = self.b;
        let (e, v) = (self.d.embed, self.d.vocab);
        let rows = self.head_rows(batch);
        let n = rows.n;
        if n == 0 {
            return false;
        }
        let p = self.pair_len();
        let x = match rows.gather {
            None => b.view(x),
            Some(idx) => {
                {
                    let gathered = b.sub_mut(b.view_mut(&mut head.x), 0..p * n * e);
                    let (xv, xt) = b.split_mut(gathered, n * e);
                    gather_rows(b, xv, self.val(x, e), idx, n, e);
                    if self.dual && x_live {
                        gather_rows(b, xt, self.tan(x, e), idx, n, e);
                    }
                }
                b.sub(b.view(&head.x), 0..p * n * e)
            }
        };
        let lin = Linear {
            rows: n,
            in_dim: e,
            out_dim: v,
        };
        let logits = b.sub_mut(b.view_mut(&mut head.logits), 0..p * n * v);
        let live = self.linear_forward_views(lin, logits, x, x_live, self.m.tensors.head);

        let lp = LogProb { rows: n, vocab: v };
        let logits = b.view(&head.logits);
        let probs = b.sub_mut(b.view_mut(&mut head.probs), 0..n * v);
        let out = b.sub_mut(b.view_mut(&mut head.lp), 0..p * n);
        if !self.dual {
            lp.forward(b, out, probs, b.sub(logits, 0..n * v), rows.targets);
            return live;
        }
        let (o, od) = b.split_mut(out, n);
        lp.forward(b, o, probs, b.sub(logits, 0..n * v), rows.targets);
        if live {
            let probs = b.sub(b.view(&head.probs), 0..n * v);
            lp.jvp(b, od, probs, b.sub(logits, n * v..2 * n * v), rows.targets);
        } else {
            b.zero(od);
        }
        live
    }

    /// Values per row-element of a pair: 2 in a tangent sweep, else 1.
    fn pair_len(&self) -> usize {
        if self.dual { 2 } else { 1 }
    }

    /// q, k, v from `x`, attention, and the output projection into `out` (no residual).
    /// Returns the liveness of the attention output and of the block's output.
    fn attention_block(
        &self,
        l: usize,
        la: &mut AttnActs<B::Buf>,
        x: &B::Buf,
        x_live: bool,
        out: &mut B::Buf,
        batch: &Prepared<T, B>,
    ) -> (bool, bool) {
        let bt = self.m.tensors.blocks[l];
        let (b, h) = (self.b, self.d.hidden);
        let lin = self.linear(h, h);
        let lq = self.linear_forward(lin, &mut la.q, x, x_live, bt.q);
        let lk = self.linear_forward(lin, &mut la.k, x, x_live, bt.k);
        let lv = self.linear_forward(lin, &mut la.v, x, x_live, bt.v);
        let att = Attention {
            dims: self.d.attention(),
        };
        let np = self.d.attention().probs_len();
        let attn_live = lq || lk || lv;
        if self.dual {
            let (p, pd) = b.split_mut(b.view_mut(&mut la.probs), np);
            let (o, od) = self.halves(&mut la.attn, h);
            let vals = Qkv {
                q: self.val(&la.q, h),
                k: self.val(&la.k, h),
                v: self.val(&la.v, h),
            };
            let mut p = p;
            att.forward(b, o, b.reborrow(&mut p), vals, &batch.key_mask);
            if attn_live {
                let tans = Qkv {
                    q: self.tan(&la.q, h),
                    k: self.tan(&la.k, h),
                    v: self.tan(&la.v, h),
                };
                att.jvp(b, od, pd, b.freeze(&p), vals, tans);
            } else {
                b.zero(od);
                b.zero(pd);
            }
        } else {
            let vals = Qkv {
                q: b.view(&la.q),
                k: b.view(&la.k),
                v: b.view(&la.v),
            };
            att.forward(
                b,
                b.view_mut(&mut la.attn),
                b.view_mut(&mut la.probs),
                vals,
                &batch.key_mask,
            );
        }
        let out_live = self.linear_forward(lin, out, &la.attn, attn_live, bt.out);
        (attn_live, out_live)
    }

    /// fc1, ReLU, fc2 from `x` into `out` (no residual). Returns the liveness of fc1's
    /// output and of the block's output.
    fn mlp_block(
        &self,
        l: usize,
        la: &mut MlpActs<B::Buf>,
        x: &B::Buf,
        x_live: bool,
        out: &mut B::Buf,
    ) -> (bool, bool) {
        let bt = self.m.tensors.blocks[l];
        let (b, h, f) = (self.b, self.d.hidden, self.d.ffn);
        let fc1_live = self.linear_forward(self.linear(h, f), &mut la.fc1, x, x_live, bt.fc1);
        if self.dual {
            let (a, ad) = self.halves(&mut la.act, f);
            Relu.forward(b, a, self.val(&la.fc1, f));
            if fc1_live {
                Relu.jvp(b, ad, self.val(&la.fc1, f), self.tan(&la.fc1, f));
            } else {
                b.zero(ad);
            }
        } else {
            Relu.forward(b, b.view_mut(&mut la.act), b.view(&la.fc1));
        }
        let out_live = self.linear_forward(self.linear(f, h), out, &la.act, fc1_live, bt.fc2);
        (fc1_live, out_live)
    }

    /// Pre-LN block: `mid = inp + attn(LN1(inp))`, `out = mid + mlp(LN2(mid))`.
    #[allow(clippy::too_many_arguments)]
    fn pre_ln_block(
        &self,
        l: usize,
        la: &mut LayerActs<B::Buf>,
        live: &mut LayerLive,
        inp: &B::Buf,
        inp_live: bool,
        out: &mut B::Buf,
        batch: &Prepared<T, B>,
    ) -> bool {
        let bt = self.m.tensors.blocks[l];
        let b = self.b;
        let ln1 = bt.ln1;
        live.attn_in = self.layernorm_forward(
            &mut la.attn_in,
            &mut la.ln1_mean,
            &mut la.ln1_rstd,
            inp,
            inp_live,
            ln1,
        );
        let (attn_live, branch_live) = self.attention_block(
            l,
            &mut la.att,
            &la.attn_in,
            live.attn_in,
            &mut la.mid,
            batch,
        );
        live.attn = attn_live;
        Residual.forward(b, b.view_mut(&mut la.mid), b.view(inp));
        live.mid = inp_live || branch_live;
        let ln2 = bt.ln2;
        live.ffn_in = self.layernorm_forward(
            &mut la.ffn_in,
            &mut la.ln2_mean,
            &mut la.ln2_rstd,
            &la.mid,
            live.mid,
            ln2,
        );
        let (fc1_live, mlp_live) = self.mlp_block(l, &mut la.mlp, &la.ffn_in, live.ffn_in, out);
        live.fc1 = fc1_live;
        Residual.forward(b, b.view_mut(out), b.view(&la.mid));
        live.mid || mlp_live
    }

    /// Post-LN block: `h1 = LN1(inp + attn(inp))`, `out = LN2(h1 + mlp(h1))`.
    #[allow(clippy::too_many_arguments)]
    fn post_ln_block(
        &self,
        l: usize,
        la: &mut LayerActs<B::Buf>,
        live: &mut LayerLive,
        inp: &B::Buf,
        inp_live: bool,
        out: &mut B::Buf,
        batch: &Prepared<T, B>,
    ) -> bool {
        let bt = self.m.tensors.blocks[l];
        let b = self.b;
        let (attn_live, branch_live) =
            self.attention_block(l, &mut la.att, inp, inp_live, &mut la.mid, batch);
        live.attn = attn_live;
        Residual.forward(b, b.view_mut(&mut la.mid), b.view(inp));
        live.mid = inp_live || branch_live;
        let ln1 = bt.ln1;
        live.ffn_in = self.layernorm_forward(
            &mut la.ffn_in,
            &mut la.ln1_mean,
            &mut la.ln1_rstd,
            &la.mid,
            live.mid,
            ln1,
        );
        let (fc1_live, mlp_live) =
            self.mlp_block(l, &mut la.mlp, &la.ffn_in, live.ffn_in, &mut la.ffn_sum);
        live.fc1 = fc1_live;
        Residual.forward(b, b.view_mut(&mut la.ffn_sum), b.view(&la.ffn_in));
        live.ffn_sum = live.ffn_in || mlp_live;
        let ln2 = bt.ln2;
        self.layernorm_forward(
            out,
            &mut la.ln2_mean,
            &mut la.ln2_rstd,
            &la.ffn_sum,
            live.ffn_sum,
            ln2,
        )
    }

    // ---- loss ----

    /// Evaluates the loss head on the host; when the reverse sweep follows, writes the
    /// adjoint of the log-probabilities (and its tangent) for it.
    fn loss(
        &self,
        ws: &mut Workspace<T, B>,
        batch: &Prepared<T, B>,
        scale: f64,
        reverse: bool,
    ) -> Result<SweepScalars> {
        let b = self.b;
        let rows = self.head_rows(batch);
        let n = rows.n;
        let p = self.pair_len();
        ws.host_lp.resize(p * n, T::ZERO);
        b.download(b.sub(b.view(&ws.head.lp), 0..p * n), &mut ws.host_lp)?;
        // Every row's log-probability (0 where nothing is scored), as the loss reads them.
        let spread = |half: &[T]| -> Vec<f64> {
            match rows.gather {
                None => half.iter().map(|x| x.to_f64()).collect(),
                Some(_) => {
                    let mut all = vec![0.0; self.d.rows];
                    for (&r, x) in batch.scored.iter().zip(half) {
                        all[r] = x.to_f64();
                    }
                    all
                }
            }
        };
        let lp = spread(&ws.host_lp[..n]);
        let lp_dot = if self.dual {
            spread(&ws.host_lp[n..])
        } else {
            Vec::new()
        };
        let loss = batch.head.forward(&lp, scale);
        let loss_dot = if self.dual {
            batch.head.jvp(&lp, &lp_dot, scale)
        } else {
            0.0
        };
        if reverse {
            // The adjoints at the head rows (unscored rows receive none).
            let pick = |all: Vec<f64>| -> Vec<T> {
                match rows.gather {
                    None => all.into_iter().map(T::from_f64).collect(),
                    Some(_) => batch.scored.iter().map(|&r| T::from_f64(all[r])).collect(),
                }
            };
            let adj = ws.head.adj.as_mut().expect("head adjoints"); // invariant: allocated by `run` when the reverse sweep follows
            let dlp_all = b.sub_mut(b.view_mut(&mut adj.lp), 0..p * n);
            let dlp = pick(batch.head.vjp(&lp, scale));
            if self.dual {
                let dlp_dot = pick(batch.head.vjp_jvp(&lp, &lp_dot, scale));
                let (t, a) = b.split_mut(dlp_all, n);
                b.write(t, &dlp_dot)?;
                b.write(a, &dlp)?;
            } else {
                b.write(dlp_all, &dlp)?;
            }
        }
        ws.row_lp = lp;
        Ok(SweepScalars { loss, loss_dot })
    }

    // ---- reverse sweep ----

    /// The lowest stage whose parameters need an output (see [`Opt::stage`]).
    fn lowest_stage(&self, outs: &Outputs<'_, T, B>) -> usize {
        match &outs.tangent {
            Sink::Masked { plan, .. } if outs.grad.is_none() => plan.lowest_stage,
            _ => 0,
        }
    }

    fn reverse(
        &self,
        ws: &mut Workspace<T, B>,
        batch: &Prepared<T, B>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let lowest = self.lowest_stage(outs);
        if lowest > self.d.layers + 1 {
            return;
        }
        let c = &self.m.config;
        let (b, h, e) = (self.b, self.d.hidden, self.d.embed);
        let (acts, live) = (&ws.acts, &ws.live);
        let adj = ws.adj.as_mut().expect("adjoints"); // invariant: allocated by `run` before the reverse sweep

        // LM head, project_out, final LayerNorm
        let last = &acts.streams[self.d.layers];
        let last_live = live.streams[self.d.layers];
        let (top_in, top_live) = if c.has_final_layer_norm() {
            (&acts.lnf, live.lnf)
        } else {
            (last, last_live)
        };
        let (head_in, head_live) = if c.has_projections() {
            (&acts.proj, live.proj)
        } else {
            (top_in, top_live)
        };
        let t = &self.m.tensors;
        let head_dx = if c.has_projections() {
            &mut adj.emb
        } else {
            &mut adj.tmp
        };
        self.head_reverse(&mut ws.head, head_dx, head_in, head_live, batch, outs);
        if let Some(po) = t.project_out {
            self.linear_backward(
                outs,
                self.linear(h, e),
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
            self.layernorm_backward(
                outs,
                &mut adj.stream,
                &adj.tmp,
                last,
                &acts.lnf_mean,
                &acts.lnf_rstd,
                t.final_ln,
            );
        } else {
            b.copy(b.view_mut(&mut adj.stream), b.view(&adj.tmp));
        }

        for l in (0..self.d.layers).rev() {
            if lowest > l + 1 {
                return;
            }
            let need_below = lowest <= l;
            let la = &acts.layers[l];
            let (inp, inp_live) = (&acts.streams[l], live.streams[l]);
            if c.do_layer_norm_before {
                self.pre_ln_block_reverse(l, la, &live.layers[l], inp, need_below, adj, outs);
            } else {
                self.post_ln_block_reverse(
                    l,
                    la,
                    &live.layers[l],
                    inp,
                    inp_live,
                    need_below,
                    adj,
                    outs,
                );
            }
        }
        if lowest > 0 {
            return;
        }

        // positions, project_in, token embedding
        self.embedding_backward(outs, &adj.stream, &batch.positions, t.position, h);
        let tok = t.token;
        if let Some(pi) = t.project_in {
            self.linear_backward(
                outs,
                self.linear(e, h),
                Some(&mut adj.emb),
                false,
                &adj.stream,
                &acts.tok,
                live.tok,
                pi,
            );
            self.embedding_backward(outs, &adj.emb, &batch.ids, tok, e);
        } else {
            self.embedding_backward(outs, &adj.stream, &batch.ids, tok, h);
        }
    }

    /// Adjoint of the LM head and the log-probabilities on the head rows: `dx` (the
    /// adjoint pair of the head's input `x` at every row) is overwritten, zero at the
    /// rows the head did not run on; the head weight's outputs go into `outs`.
    fn head_reverse(
        &self,
        head: &mut HeadBuffers<B::Buf>,
        dx: &mut B::Buf,
        x: &B::Buf,
        x_live: bool,
        batch: &Prepared<T, B>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let b = self.b;
        let (e, v) = (self.d.embed, self.d.vocab);
        let rows = self.head_rows(batch);
        let n = rows.n;
        if n == 0 {
            b.zero(b.view_mut(dx));
            return;
        }
        let p = self.pair_len();
        let adj = head.adj.as_mut().expect("head adjoints"); // invariant: allocated by `run` when the reverse sweep follows
        let lp = LogProb { rows: n, vocab: v };
        let probs = b.sub(b.view(&head.probs), 0..n * v);
        let dlp = b.view(&adj.lp);
        let dlogits = b.sub_mut(b.view_mut(&mut adj.logits), 0..p * n * v);
        if self.dual {
            let (t, a) = b.split_mut(dlogits, n * v);
            let (dlp_dot, dlp) = (b.sub(dlp, 0..n), b.sub(dlp, n..2 * n));
            lp.vjp(b, a, probs, dlp, rows.targets);
            let logits_dot = b.sub(b.view(&head.logits), n * v..2 * n * v);
            lp.vjp_jvp(b, t, probs, logits_dot, dlp, dlp_dot, rows.targets);
        } else {
            lp.vjp(b, dlogits, probs, b.sub(dlp, 0..n), rows.targets);
        }

        let lin = Linear {
            rows: n,
            in_dim: e,
            out_dim: v,
        };
        let dy = b.sub(b.view(&adj.logits), 0..p * n * v);
        let weight = self.m.tensors.head;
        let Some(idx) = rows.gather else {
            let dx = Some(b.view_mut(dx));
            self.linear_backward_views(outs, lin, dx, false, dy, b.view(x), x_live, weight);
            return;
        };
        let x = b.sub(b.view(&head.x), 0..p * n * e);
        let dx_rows = Some(b.sub_mut(b.view_mut(&mut adj.x), 0..p * n * e));
        self.linear_backward_views(outs, lin, dx_rows, false, dy, x, x_live, weight);
        b.zero(b.view_mut(dx));
        // each half of the pair to its rows
        let r = self.d.rows;
        for half in 0..p {
            let dst = b.sub_mut(b.view_mut(dx), half * r * e..(half + 1) * r * e);
            let src = b.sub(b.view(&adj.x), half * n * e..(half + 1) * n * e);
            scatter_add_rows(b, dst, src, idx, n, e);
        }
    }

    /// Adjoint of the attention block from `d_out` (the adjoint of its output): the
    /// output projection, attention, and q/k/v, whose input adjoint goes into `dx`
    /// (accumulated when `dx_accumulate`) when given.
    #[allow(clippy::too_many_arguments)]
    fn attention_block_reverse(
        &self,
        l: usize,
        la: &AttnActs<B::Buf>,
        attn_live: bool,
        d_out: &B::Buf,
        x: &B::Buf,
        x_live: bool,
        dx: Option<&mut B::Buf>,
        dx_accumulate: bool,
        adj: &mut AttnAdjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let bt = self.m.tensors.blocks[l];
        let (b, h) = (self.b, self.d.hidden);
        let lin = self.linear(h, h);
        self.linear_backward(
            outs,
            lin,
            Some(&mut adj.attn),
            false,
            d_out,
            &la.attn,
            attn_live,
            bt.out,
        );
        let att = Attention {
            dims: self.d.attention(),
        };
        let np = self.d.attention().probs_len();
        if self.dual {
            let vals = Qkv {
                q: self.val(&la.q, h),
                k: self.val(&la.k, h),
                v: self.val(&la.v, h),
            };
            let tans = Qkv {
                q: self.tan(&la.q, h),
                k: self.tan(&la.k, h),
                v: self.tan(&la.v, h),
            };
            let (qt, qa) = self.halves(&mut adj.q, h);
            let (kt, ka) = self.halves(&mut adj.k, h);
            let (vt, va) = self.halves(&mut adj.v, h);
            let probs = b.sub(b.view(&la.probs), 0..np);
            let probs_dot = b.sub(b.view(&la.probs), np..2 * np);
            att.vjp(
                b,
                Qkv {
                    q: qa,
                    k: ka,
                    v: va,
                },
                self.adj(&adj.attn, h),
                probs,
                vals,
            );
            let (da, da_dot) = (self.adj(&adj.attn, h), self.adj_tan(&adj.attn, h));
            att.vjp_jvp(
                b,
                Qkv {
                    q: qt,
                    k: kt,
                    v: vt,
                },
                da,
                da_dot,
                probs,
                probs_dot,
                vals,
                tans,
            );
        } else {
            let vals = Qkv {
                q: b.view(&la.q),
                k: b.view(&la.k),
                v: b.view(&la.v),
            };
            let d = Qkv {
                q: b.view_mut(&mut adj.q),
                k: b.view_mut(&mut adj.k),
                v: b.view_mut(&mut adj.v),
            };
            att.vjp(b, d, b.view(&adj.attn), b.view(&la.probs), vals);
        }
        let mut dx = dx;
        let grads = [(&adj.q, bt.q), (&adj.k, bt.k), (&adj.v, bt.v)];
        for (i, (dy, lp)) in grads.into_iter().enumerate() {
            let acc = dx_accumulate || i > 0;
            self.linear_backward(outs, lin, dx.as_deref_mut(), acc, dy, x, x_live, lp);
        }
    }

    /// Adjoint of the MLP block from `d_out` into `dx` (overwritten or accumulated).
    #[allow(clippy::too_many_arguments)]
    fn mlp_block_reverse(
        &self,
        l: usize,
        la: &MlpActs<B::Buf>,
        live: &LayerLive,
        ffn_in: &B::Buf,
        d_out: &B::Buf,
        dx: &mut B::Buf,
        dx_accumulate: bool,
        adj: &mut MlpAdjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let bt = self.m.tensors.blocks[l];
        let (b, h, f) = (self.b, self.d.hidden, self.d.ffn);
        self.linear_backward(
            outs,
            self.linear(f, h),
            Some(&mut adj.act),
            false,
            d_out,
            &la.act,
            live.fc1,
            bt.fc2,
        );
        if self.dual {
            let (t, a) = self.halves(&mut adj.fc, f);
            Relu.vjp(b, a, self.val(&la.fc1, f), self.adj(&adj.act, f));
            Relu.vjp_jvp(b, t, self.val(&la.fc1, f), self.adj_tan(&adj.act, f));
        } else {
            Relu.vjp(
                b,
                b.view_mut(&mut adj.fc),
                b.view(&la.fc1),
                b.view(&adj.act),
            );
        }
        self.linear_backward(
            outs,
            self.linear(h, f),
            Some(dx),
            dx_accumulate,
            &adj.fc,
            ffn_in,
            live.ffn_in,
            bt.fc1,
        );
    }

    /// Turns `adj.stream` from the adjoint of the block's output into the adjoint of its
    /// input (when `need_below`), collecting the block's parameter outputs.
    #[allow(clippy::too_many_arguments)]
    fn pre_ln_block_reverse(
        &self,
        l: usize,
        la: &LayerActs<B::Buf>,
        live: &LayerLive,
        inp: &B::Buf,
        need_below: bool,
        adj: &mut Adjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let bt = self.m.tensors.blocks[l];
        let b = self.b;
        // d mid = d out (residual) + LN2^T mlp^T d out
        self.mlp_block_reverse(
            l,
            &la.mlp,
            live,
            &la.ffn_in,
            &adj.stream,
            &mut adj.ln,
            false,
            &mut adj.mlp,
            outs,
        );
        let ln2 = bt.ln2;
        self.layernorm_backward(
            outs,
            &mut adj.stream,
            &adj.ln,
            &la.mid,
            &la.ln2_mean,
            &la.ln2_rstd,
            ln2,
        );
        // d inp = d mid (residual) + LN1^T attn^T d mid
        let ln1 = bt.ln1;
        let need_dx = need_below || outs.wants(ln1.w) || outs.wants(ln1.b);
        let dx = need_dx.then_some(&mut adj.ln);
        self.attention_block_reverse(
            l,
            &la.att,
            live.attn,
            &adj.stream,
            &la.attn_in,
            live.attn_in,
            dx,
            false,
            &mut adj.att,
            outs,
        );
        if need_below {
            self.layernorm_backward(
                outs,
                &mut adj.stream,
                &adj.ln,
                inp,
                &la.ln1_mean,
                &la.ln1_rstd,
                ln1,
            );
        } else if need_dx {
            // only LayerNorm 1's own parameters are wanted: its input adjoint is scratch
            b.zero(b.view_mut(&mut adj.tmp));
            self.layernorm_backward(
                outs,
                &mut adj.tmp,
                &adj.ln,
                inp,
                &la.ln1_mean,
                &la.ln1_rstd,
                ln1,
            );
        }
    }

    /// As [`Pass::pre_ln_block_reverse`], for a post-LN block.
    #[allow(clippy::too_many_arguments)]
    fn post_ln_block_reverse(
        &self,
        l: usize,
        la: &LayerActs<B::Buf>,
        live: &LayerLive,
        inp: &B::Buf,
        inp_live: bool,
        need_below: bool,
        adj: &mut Adjoints<B::Buf>,
        outs: &mut Outputs<'_, T, B>,
    ) {
        let bt = self.m.tensors.blocks[l];
        let b = self.b;
        // d ffn_sum = LN2^T d out, kept in `ln`
        b.zero(b.view_mut(&mut adj.ln));
        let ln2 = bt.ln2;
        self.layernorm_backward(
            outs,
            &mut adj.ln,
            &adj.stream,
            &la.ffn_sum,
            &la.ln2_mean,
            &la.ln2_rstd,
            ln2,
        );
        // d ffn_in = d ffn_sum (residual) + mlp^T d ffn_sum, in `tmp`
        b.copy(b.view_mut(&mut adj.tmp), b.view(&adj.ln));
        self.mlp_block_reverse(
            l,
            &la.mlp,
            live,
            &la.ffn_in,
            &adj.ln,
            &mut adj.tmp,
            true,
            &mut adj.mlp,
            outs,
        );
        // d mid = LN1^T d ffn_in, in `stream`, and a copy in `ln` to read from
        b.zero(b.view_mut(&mut adj.stream));
        let ln1 = bt.ln1;
        self.layernorm_backward(
            outs,
            &mut adj.stream,
            &adj.tmp,
            &la.mid,
            &la.ln1_mean,
            &la.ln1_rstd,
            ln1,
        );
        b.copy(b.view_mut(&mut adj.ln), b.view(&adj.stream));
        // d inp = d mid (residual) + attn^T d mid
        let dx = need_below.then_some(&mut adj.stream);
        self.attention_block_reverse(
            l,
            &la.att,
            live.attn,
            &adj.ln,
            inp,
            inp_live,
            dx,
            true,
            &mut adj.att,
            outs,
        );
    }
}
