//! The OPT decoder (`OPTForCausalLM`), written once over a [`Backend`].
//!
//! Read top to bottom like the architecture ([`forward`]): token embedding (and
//! `project_in`), learned positions, `num_hidden_layers` blocks of self-attention and
//! a ReLU MLP with residual connections, LayerNorms before (pre-LN: 125m, 1.3b, 13b)
//! or after (post-LN: 350m) each block, the final LayerNorm (pre-LN only),
//! `project_out`, and the LM head tied to the token embedding. [`reverse`] is the
//! same list of ops run backwards.
//!
//! - [`tensors`]: where each of OPT's tensors sits in the flat parameter vector;
//! - [`buffers`]: what a pass keeps from the forward sweep for the reverse sweep
//!   (every block's activations, or each block's input and one block's scratch
//!   when recomputing: `model::memory`);
//! - [`forward`] and [`reverse`]: the two sweeps, on the machinery of `model::pass`.
//!
//! The parameters live on the backend and can move in place ([`Opt::add_at_mask`],
//! [`Opt::set_at_mask`], [`Opt::set_params`]) without rebuilding the model.

mod buffers;
mod forward;
mod reverse;
mod tensors;

use std::marker::PhantomData;

pub(crate) use buffers::OptBuffers;
use tensors::Tensors;

use super::batch::Batch;
use super::config::OptConfig;
use super::layout::{ParamLayout, ParamRole};
use super::memory::{Memory, PassShape, USABLE_SHARE, workspace_elements};
use super::ops::embedding;
use super::pass::head::LmHead;
use super::pass::workspace::Shape;
use super::pass::{Direction, MaskPlan, Outputs, Pass, PassScalars, Prepared, Workspace};
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

/// The workspace of OPT's passes.
pub type OptWorkspace<T, B> = Workspace<T, B, OptBuffers<<B as Backend<T>>::Buf>>;

/// The first non-finite value of `values`, as an error naming its coordinate.
fn check_finite<T: Scalar>(
    what: &str,
    values: &[T],
    name_of: impl Fn(usize) -> String,
) -> Result<()> {
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::NonFinite(format!(
            "{what}: {} at {}",
            values[i].to_f64(),
            name_of(i)
        ))),
    }
}

impl<T: Scalar, B: Backend<T>> Opt<T, B> {
    /// Uploads `params` (the flat vector in [`ParamLayout`] order) to `backend`.
    pub fn new(backend: B, config: OptConfig, params: &[T]) -> Result<Self> {
        let (layout, tensors) = Self::check_params(&config, params)?;
        let params = backend.upload(params)?;
        Ok(Self::assemble(backend, config, layout, tensors, params))
    }

    /// As [`Opt::new`], moving `params` to the backend: on the CPU the model keeps
    /// the vector itself, so the weights are never held twice.
    pub fn from_vec(backend: B, config: OptConfig, params: Vec<T>) -> Result<Self> {
        let (layout, tensors) = Self::check_params(&config, &params)?;
        let params = backend.upload_vec(params)?;
        Ok(Self::assemble(backend, config, layout, tensors, params))
    }

    fn check_params(config: &OptConfig, params: &[T]) -> Result<(ParamLayout, Tensors)> {
        let layout = ParamLayout::new(config);
        check_len(&layout, params.len())?;
        check_finite("parameter", params, |i| describe(&layout, i))?;
        let tensors = Tensors::resolve(&layout, config)?;
        Ok((layout, tensors))
    }

    fn assemble(
        backend: B,
        config: OptConfig,
        layout: ParamLayout,
        tensors: Tensors,
        params: B::Buf,
    ) -> Self {
        Opt {
            backend,
            config,
            layout,
            params,
            tensors,
            _scalar: PhantomData,
        }
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

    /// Which pass stage a tensor belongs to: 0 the embeddings, `l + 1` decoder block
    /// `l`, `layers + 1` the top (final LayerNorm, `project_out`, LM head).
    fn stage(&self, entry: usize) -> usize {
        match self.layout.entries()[entry].role {
            ParamRole::TokenEmbedding | ParamRole::PositionEmbedding | ParamRole::ProjectIn => 0,
            ParamRole::Layer { layer, .. } => layer + 1,
            _ => self.config.num_hidden_layers + 1,
        }
    }

    /// Splits the sorted, distinct flat indices `mask` by tensor, for masked passes
    /// and in-place updates.
    pub fn mask_plan(&self, mask: &[u64]) -> Result<MaskPlan<T, B>> {
        MaskPlan::new(&self.backend, &self.layout, |e| self.stage(e), mask)
    }

    // ---- parameters that move ----

    /// The whole parameter vector, downloaded.
    pub fn params(&self) -> Result<Vec<T>> {
        let b = &self.backend;
        let mut host = vec![T::ZERO; self.num_params()];
        b.download(b.view(&self.params), &mut host)?;
        Ok(host)
    }

    /// Replaces every parameter with `params` (the flat vector in layout order).
    pub fn set_params(&mut self, params: &[T]) -> Result<()> {
        check_len(&self.layout, params.len())?;
        check_finite("parameter", params, |i| describe(&self.layout, i))?;
        let b = &self.backend;
        b.write(b.view_mut(&mut self.params), params)
    }

    /// The parameters at `plan`'s coordinates (a k-vector in mask order).
    pub fn values_at_mask(&self, plan: &MaskPlan<T, B>) -> Result<Vec<T>> {
        let b = &self.backend;
        let mut values = b.zeros(plan.len())?;
        for (e, em) in plan.entries() {
            let dst = b.sub_mut(b.view_mut(&mut values), em.k_range.clone());
            b.gather_add(dst, &em.idx, self.weight(e));
        }
        let mut host = vec![T::ZERO; plan.len()];
        b.download(b.view(&values), &mut host)?;
        Ok(host)
    }

    /// `theta[mask] = values` for the k-vector `values`.
    pub fn set_at_mask(&mut self, plan: &MaskPlan<T, B>, values: &[T]) -> Result<()> {
        self.check_masked("value", plan, values)?;
        let b = &self.backend;
        let values = b.upload(values)?;
        self.scatter_at_mask(plan, &values);
        Ok(())
    }

    /// `theta[mask] += delta` for the k-vector `delta`, in the parameters' precision:
    /// the same bits as adding on the host. Only `delta` is checked for finiteness
    /// (the parameters were checked when they were set), so an update costs `O(k)`.
    pub fn add_at_mask(&mut self, plan: &MaskPlan<T, B>, delta: &[T]) -> Result<()> {
        self.check_masked("update", plan, delta)?;
        let b = &self.backend;
        // Mask indices are distinct, so gather, add and scatter back is exact.
        let mut moved = b.upload(delta)?;
        for (e, em) in plan.entries() {
            let dst = b.sub_mut(b.view_mut(&mut moved), em.k_range.clone());
            b.gather_add(dst, &em.idx, self.weight(e));
        }
        self.scatter_at_mask(plan, &moved);
        Ok(())
    }

    fn check_masked(&self, what: &str, plan: &MaskPlan<T, B>, values: &[T]) -> Result<()> {
        if values.len() != plan.len() {
            return Err(Error::arg(
                what,
                format!(
                    "expected {} values (one per masked coordinate), found {}",
                    plan.len(),
                    values.len()
                ),
            ));
        }
        check_finite(what, values, |i| {
            let (e, em) = plan
                .entries()
                .find(|(_, em)| em.k_range.contains(&i))
                .expect("every k-vector position belongs to a tensor"); // invariant: the plan's ranges tile 0..k
            format!(
                "masked coordinate {i} (in `{}`, {} of the tensor's masked entries)",
                self.layout.entries()[e].name,
                i - em.k_range.start
            )
        })
    }

    /// `theta[mask] = values` for a k-vector on the backend.
    fn scatter_at_mask(&mut self, plan: &MaskPlan<T, B>, values: &B::Buf) {
        let b = &self.backend;
        for (e, em) in plan.entries() {
            let range = self.layout.entries()[e].range();
            let dst = b.sub_mut(b.view_mut(&mut self.params), range);
            b.scatter(dst, &em.idx, b.sub(b.view(values), em.k_range.clone()));
        }
    }

    fn weight(&self, e: usize) -> B::View<'_> {
        let b = &self.backend;
        b.sub(b.view(&self.params), self.layout.entries()[e].range())
    }

    // ---- passes ----

    /// Checks `batch` against the model and uploads what the kernels need.
    pub fn prepare(&self, batch: &Batch) -> Result<Prepared<T, B>> {
        batch.validate(&self.config)?;
        let t = &batch.tokens;
        let positions = embedding::positions(&t.attention_mask, t.batch, t.seq);
        Prepared::upload(&self.backend, batch, &positions)
    }

    /// The workspace for `prepared`'s shape, reusing `slot` when it fits, storing or
    /// recomputing the blocks' activations as `memory` says. [`Memory::Auto`] keeps
    /// the slot's choice for its shape; for a new workspace it stores when the
    /// stored buffers fit in [`USABLE_SHARE`] of the backend's free memory (plus
    /// the old workspace's, dropped first), else recomputes. That sees only what is
    /// already resident: callers that know the whole computation decide up front
    /// with [`crate::model::Footprint::choose`] and pass the result.
    pub(crate) fn workspace<'w>(
        &self,
        slot: &'w mut Option<OptWorkspace<T, B>>,
        prepared: &Prepared<T, B>,
        dual: bool,
        reverse: bool,
        memory: Memory,
    ) -> Result<&'w mut OptWorkspace<T, B>> {
        let shape = |recompute| Shape {
            batch: prepared.batch,
            seq: prepared.seq,
            dual,
            recompute,
        };
        let recompute = match memory {
            Memory::Stored => false,
            Memory::Recompute => true,
            Memory::Auto => match slot {
                Some(ws) if ws.shape() == shape(ws.shape().recompute) => ws.shape().recompute,
                _ => {
                    let held = slot
                        .as_ref()
                        .map_or(0, |ws| self.workspace_bytes(ws.shape(), true));
                    let wanted = self.workspace_bytes(shape(false), reverse);
                    self.backend
                        .available_memory()
                        .is_some_and(|free| wanted as f64 > USABLE_SHARE * (free + held) as f64)
                }
            },
        };
        let shape = shape(recompute);
        let dims = Dims::new(&self.config, shape.batch, shape.seq);
        Workspace::reuse(slot, &self.backend, shape, || {
            OptBuffers::new(&self.backend, &self.config, dims, dual, recompute)
        })
    }

    /// Bytes of a workspace of `shape` (with the adjoints when `reverse`), its LM
    /// head on every row (an upper bound).
    fn workspace_bytes(&self, shape: Shape, reverse: bool) -> u64 {
        let pass = PassShape {
            batch: shape.batch,
            seq: shape.seq,
            head_rows: shape.batch * shape.seq,
        };
        let n = workspace_elements(&self.config, pass, shape.dual, reverse, shape.recompute);
        (n * std::mem::size_of::<T>()) as u64
    }

    /// The LM head as the passes run it.
    fn head(&self) -> LmHead {
        LmHead {
            weight: self.tensors.head,
            embed: self.config.word_embed_proj_dim,
            vocab: self.config.vocab_size,
        }
    }
}

fn check_len(layout: &ParamLayout, len: usize) -> Result<()> {
    if len == layout.total() {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        name: "flat parameter vector".into(),
        expected: vec![layout.total()],
        found: vec![len],
    })
}

/// `parameter i (in `name`)`.
fn describe(layout: &ParamLayout, i: usize) -> String {
    let name = layout.entry_of(i).map_or("?", |e| e.name.as_str());
    format!("parameter {i} (in `{name}`)")
}

/// The sizes of one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    batch: usize,
    seq: usize,
    rows: usize,
    hidden: usize,
    embed: usize,
    ffn: usize,
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

/// One pass of OPT over one batch: the generic [`Pass`] with the model's tensors
/// and sizes.
pub(crate) struct OptPass<'a, T: Scalar, B: Backend<T>> {
    p: Pass<'a, T, B>,
    m: &'a Opt<T, B>,
    d: Dims,
    /// Run the LM head on every row (for the logits), not only on the scored ones.
    all_rows: bool,
}

impl<'a, T: Scalar, B: Backend<T>> OptPass<'a, T, B> {
    pub fn new(m: &'a Opt<T, B>, prepared: &Prepared<T, B>, dir: &'a Direction<'a, T, B>) -> Self {
        let b = &m.backend;
        let d = Dims::new(&m.config, prepared.batch, prepared.seq);
        OptPass {
            p: Pass::new(b, b.view(&m.params), &m.layout, d.rows, dir),
            m,
            d,
            all_rows: false,
        }
    }

    /// Computes the logits of every row (see [`Workspace::logits`]); otherwise the
    /// LM head runs only on the rows a loss reads.
    pub fn all_rows(mut self) -> Self {
        self.all_rows = true;
        self
    }

    /// Forward, loss, and (when `outs` is given) the reverse sweep, for one batch;
    /// `scale` is one over the dataset's number of loss terms.
    pub fn run(
        &self,
        ws: &mut OptWorkspace<T, B>,
        batch: &Prepared<T, B>,
        scale: f64,
        outs: Option<&mut Outputs<'_, T, B>>,
    ) -> Result<PassScalars> {
        debug_assert!(ws.shape().dual == self.p.dual && ws.shape().seq == self.d.seq);
        let rows = batch.head_rows(self.all_rows);
        let reverse = outs.is_some();
        let (b, head) = (self.p.b, self.m.head());
        ws.head
            .reserve(b, head, rows.n, self.p.pair_len(), reverse)?;
        let x_live = self.forward(&mut ws.stored, batch);
        let x = ws.stored.head_input(&self.m.config);
        // The head may fuse with the log-probabilities when the reverse sweep needs
        // the adjoint of its input and nothing of its weight.
        let fuse = outs.as_deref().is_some_and(|o| {
            o.lowest_stage() <= self.d.layers + 1 && !o.wants(Some(head.weight.w))
        });
        self.p
            .head_forward(head, &mut ws.head, x, x_live, &rows, fuse);
        let scalars = self.p.loss(&mut ws.head, batch, &rows, scale, reverse)?;
        if let Some(outs) = outs {
            ws.stored.adjoints(b, &self.m.config, self.d, self.p.dual)?;
            self.reverse(&mut ws.stored, &mut ws.head, batch, &rows, outs);
        }
        Ok(scalars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::error::Error;
    use crate::mask::{Mask, MaskSpec, RatioOf, Scope};
    use crate::model::Checkpoint;
    use crate::model::bench::random_batch;
    use crate::model::objective::Objective;
    use crate::testing::{TestResult, fixture};

    fn tiny() -> TestResult<(Opt<f64, Cpu>, Vec<f64>, Batch)> {
        let ckpt = Checkpoint::<f64>::load(&fixture("opt-tiny-preln"))?;
        let model = Opt::new(Cpu, ckpt.config.clone(), &ckpt.params)?;
        let batch = random_batch(&ckpt.config, 3, 12, 0)?;
        Ok((model, ckpt.params, batch))
    }

    /// A mask over every kind of tensor: matrices (sparse paths) and the small
    /// biases and LayerNorm parameters (dense scratch).
    fn mixed_mask(model: &Opt<f64, Cpu>) -> TestResult<Mask> {
        let spec = MaskSpec {
            scope: Scope::All,
            ratio: 0.2,
            ratio_of: RatioOf::Scope,
            ..MaskSpec::paper(0.2, 5)
        };
        Ok(Mask::draw(&spec, model.layout())?)
    }

    #[test]
    fn masked_updates_move_exactly_the_masked_coordinates() -> TestResult {
        let (mut model, params, _) = tiny()?;
        let mask = mixed_mask(&model)?;
        let plan = model.mask_plan(mask.indices())?;
        let delta: Vec<f64> = (0..mask.len()).map(|i| 0.01 * (i as f64 - 7.5)).collect();
        let before = model.values_at_mask(&plan)?;
        let want_before: Vec<f64> = mask.indices().iter().map(|&i| params[i as usize]).collect();
        assert_eq!(before, want_before);

        model.add_at_mask(&plan, &delta)?;
        let mut want = params.clone();
        for (&i, d) in mask.indices().iter().zip(&delta) {
            want[i as usize] += d;
        }
        // the same bits as adding on the host, and nothing else moved
        assert_eq!(model.params()?, want);

        model.set_at_mask(&plan, &before)?;
        assert_eq!(model.params()?, params);
        Ok(())
    }

    #[test]
    fn a_moved_model_computes_what_a_rebuilt_one_does() -> TestResult {
        let (mut model, params, batch) = tiny()?;
        let mask = mixed_mask(&model)?;
        let plan = model.mask_plan(mask.indices())?;
        let delta: Vec<f64> = (0..mask.len())
            .map(|i| 0.1 * ((i % 7) as f64 - 3.0))
            .collect();
        let data = std::slice::from_ref(&batch);
        // buffers from the unmoved model are reused after the move
        let mut objective = Objective::new(&model, data)?;
        objective.set_mask(mask.indices())?;
        let loss_before = objective.loss()?;
        let buffers = objective.into_buffers();
        model.add_at_mask(&plan, &delta)?;
        let mut moved = Objective::with_buffers(&model, data, buffers)?;
        let (loss, grad) = moved.masked_gradient()?;

        let mut shifted = params;
        for (&i, d) in mask.indices().iter().zip(&delta) {
            shifted[i as usize] += d;
        }
        let rebuilt = Opt::new(Cpu, model.config().clone(), &shifted)?;
        let mut fresh = Objective::new(&rebuilt, data)?;
        fresh.set_mask(mask.indices())?;
        let (want_loss, want_grad) = fresh.masked_gradient()?;
        assert_ne!(loss, loss_before);
        assert_eq!(loss.to_bits(), want_loss.to_bits());
        assert_eq!(grad, want_grad);

        model.set_params(&shifted)?;
        assert_eq!(model.params()?, shifted);
        Ok(())
    }

    #[test]
    fn a_non_finite_update_is_refused_naming_its_tensor() -> TestResult {
        let (mut model, params, _) = tiny()?;
        let mask = mixed_mask(&model)?;
        let plan = model.mask_plan(mask.indices())?;
        let mut delta = vec![0.0; mask.len()];
        delta[3] = f64::NAN;
        let err = model.add_at_mask(&plan, &delta).unwrap_err();
        assert!(matches!(err, Error::NonFinite(_)), "{err}");
        let name = &model
            .layout()
            .entry_of(mask.indices()[3] as usize)
            .ok_or("index outside the layout")?
            .name;
        assert!(err.to_string().contains(name.as_str()), "{err}");
        // nothing moved
        assert_eq!(model.params()?, params);
        let short = model.add_at_mask(&plan, &delta[1..]).unwrap_err();
        assert!(short.to_string().contains("expected"), "{short}");
        let mut bad = params.clone();
        bad[10] = f64::INFINITY;
        assert!(matches!(model.set_params(&bad), Err(Error::NonFinite(_))));
        Ok(())
    }
}
