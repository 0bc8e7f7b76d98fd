//! A model's loss on a dataset, and its exact derivatives: the API the verifier, the
//! benchmarks, the spectral probes and training call.
//!
//! The dataset is a list of batches; every quantity is the mean over all of the
//! dataset's loss terms, accumulated batch by batch, so it equals the value for one
//! big batch (up to rounding).

use super::batch::Batch;
use super::memory::{Footprint, Memory, Operation, PassShape};
use super::opt::{Opt, OptPass, OptWorkspace};
use super::pass::{Direction, MaskPlan, Outputs, PassScalars, Prepared, Sink};
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};

/// Loss, gradient and `H v` of a model on a dataset, with reusable buffers.
pub struct Objective<'m, T: Scalar, B: Backend<T>> {
    model: &'m Opt<T, B>,
    batches: Vec<Prepared<T, B>>,
    terms: usize,
    buffers: ObjectiveBuffers<T, B>,
}

/// What an [`Objective`] reuses from one call to the next: the pass's workspace, a
/// prepared mask and the memory mode. They outlive the objective
/// ([`Objective::into_buffers`]), so a training loop can move the model's
/// parameters between steps, which needs the model free of borrows, and keep its
/// buffers, mask and mode.
pub struct ObjectiveBuffers<T: Scalar, B: Backend<T>> {
    workspace: Option<OptWorkspace<T, B>>,
    mask: Option<MaskState<T, B>>,
    memory: Memory,
}

impl<T: Scalar, B: Backend<T>> Default for ObjectiveBuffers<T, B> {
    fn default() -> Self {
        ObjectiveBuffers {
            workspace: None,
            mask: None,
            memory: Memory::Auto,
        }
    }
}

impl<T: Scalar, B: Backend<T>> ObjectiveBuffers<T, B> {
    /// Buffers with the sorted, distinct flat indices `mask` prepared on `model`'s
    /// backend (see [`Objective::set_mask`]).
    pub fn with_mask(model: &Opt<T, B>, mask: &[u64]) -> Result<Self> {
        let plan = model.mask_plan(mask)?;
        let b = model.backend();
        Ok(ObjectiveBuffers {
            workspace: None,
            mask: Some(MaskState {
                grad_scratch: plan.output_scratch(b)?,
                hvp_scratch: plan.output_scratch(b)?,
                plan,
            }),
            ..Self::default()
        })
    }

    /// Empty buffers whose passes store or recompute the blocks' activations as
    /// `memory` says (see [`Objective::set_memory`]).
    pub fn with_memory(memory: Memory) -> Self {
        ObjectiveBuffers {
            memory,
            ..Self::default()
        }
    }

    /// The prepared mask, once one is set.
    pub fn mask_plan(&self) -> Option<&MaskPlan<T, B>> {
        self.mask.as_ref().map(|m| &m.plan)
    }

    /// Whether the passes store or recompute the blocks' activations.
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// Store or recompute the blocks' activations from the next pass on (a
    /// workspace of the other mode is dropped then).
    pub fn set_memory(&mut self, memory: Memory) {
        self.memory = memory;
    }

    /// Whether the current workspace recomputes (`None` before the first pass).
    pub fn recomputing(&self) -> Option<bool> {
        self.workspace.as_ref().map(|ws| ws.shape().recompute)
    }
}

/// A prepared mask and the output scratch of its small tensors, one set for the
/// gradient and one for `H v`.
struct MaskState<T: Scalar, B: Backend<T>> {
    plan: MaskPlan<T, B>,
    grad_scratch: Vec<B::Buf>,
    hvp_scratch: Vec<B::Buf>,
}

/// The results of one forward-over-reverse pass over the dataset.
#[derive(Clone, Debug)]
pub struct HvpResult<T> {
    pub loss: f64,
    /// `g . v`.
    pub grad_dot_v: f64,
    pub gradient: Vec<T>,
    pub hvp: Vec<T>,
}

/// A masked sink into `out` (zeroed here) and its small tensors' `scratch` (zeroed).
fn masked_sink<'a, T: Scalar, B: Backend<T>>(
    b: &B,
    plan: &'a MaskPlan<T, B>,
    out: &'a mut B::Buf,
    scratch: &'a mut [B::Buf],
) -> Sink<'a, T, B> {
    b.zero(b.view_mut(out));
    for s in scratch.iter_mut() {
        b.zero(b.view_mut(s));
    }
    Sink::Masked {
        plan,
        out: b.view_mut(out),
        small_out: scratch.iter_mut().map(|s| b.view_mut(s)).collect(),
    }
}

fn no_mask() -> Error {
    Error::arg(
        "mask",
        "set a mask before asking for a masked gradient or Hessian-vector product",
    )
}

impl<'m, T: Scalar, B: Backend<T>> Objective<'m, T, B> {
    /// Checks and uploads `data` (every batch is validated against the model).
    pub fn new(model: &'m Opt<T, B>, data: &[Batch]) -> Result<Self> {
        Self::with_buffers(model, data, ObjectiveBuffers::default())
    }

    /// As [`Objective::new`], reusing `buffers` (and the mask set in them) from an
    /// earlier objective on the same model.
    pub fn with_buffers(
        model: &'m Opt<T, B>,
        data: &[Batch],
        buffers: ObjectiveBuffers<T, B>,
    ) -> Result<Self> {
        if data.is_empty() {
            return Err(Error::arg("dataset", "needs at least one batch"));
        }
        let batches = data
            .iter()
            .map(|b| model.prepare(b))
            .collect::<Result<Vec<_>>>()?;
        let terms = batches.iter().map(|b| b.terms).sum();
        if terms == 0 {
            return Err(Error::arg("dataset", "has no scored token or question"));
        }
        Ok(Objective {
            model,
            batches,
            terms,
            buffers,
        })
    }

    /// The reusable buffers, for [`Objective::with_buffers`].
    pub fn into_buffers(self) -> ObjectiveBuffers<T, B> {
        self.buffers
    }

    /// Whether the forward-over-reverse passes keep every block's activations
    /// ([`Memory::Stored`]) or only each block's input, recomputing the activations
    /// in the reverse sweep ([`Memory::Recompute`]: the same results to the bit, one
    /// more forward sweep of the blocks, a workspace about `layers` times smaller).
    /// [`Memory::Auto`] (the default) decides per workspace from the memory free
    /// when it is made (see `Opt::workspace`); a caller that knows the whole run
    /// decides up front with [`Objective::footprint`] and [`Footprint::choose`].
    /// Takes effect at the next pass (a workspace of the other mode is dropped).
    pub fn set_memory(&mut self, memory: Memory) {
        self.buffers.memory = memory;
    }

    pub fn memory(&self) -> Memory {
        self.buffers.memory
    }

    /// The bytes `op` needs on this objective's batches: the weights, its vectors,
    /// and the pass's buffers stored or recomputed (see `model::memory`).
    pub fn footprint(&self, op: Operation) -> Footprint {
        let shapes: Vec<PassShape> = self.batches.iter().map(Prepared::pass_shape).collect();
        let k = self.mask_len().unwrap_or(0);
        Footprint::new(
            self.model.config(),
            std::mem::size_of::<T>(),
            &shapes,
            op,
            k,
        )
    }

    pub fn model(&self) -> &Opt<T, B> {
        self.model
    }

    /// The number of loss terms the loss is the mean of.
    pub fn loss_terms(&self) -> usize {
        self.terms
    }

    fn scale(&self) -> f64 {
        1.0 / self.terms as f64
    }

    /// The logits of batch `i`, `batch x seq x vocab`.
    pub fn logits(&mut self, i: usize) -> Result<Vec<T>> {
        let batch = self.batches.get(i).ok_or_else(|| {
            Error::arg(
                "batch",
                format!("no batch {i} in a dataset of {}", self.batches.len()),
            )
        })?;
        let scale = self.scale();
        let m = self.model;
        let memory = self.buffers.memory;
        let ws = m.workspace(&mut self.buffers.workspace, batch, false, false, memory)?;
        OptPass::new(m, batch, &Direction::None)
            .all_rows()
            .run(ws, batch, scale, None)?;
        let b = m.backend();
        let vocab = m.config().vocab_size;
        let mut host = vec![T::ZERO; batch.batch * batch.seq * vocab];
        b.download(ws.logits(b, vocab), &mut host)?;
        Ok(host)
    }

    /// The loss, and each batch's candidate scores per question as the choice loss
    /// scores them (the mean log-probability of each candidate's answer tokens; none
    /// for a next-token batch), from one forward pass: the LM head runs on the
    /// scored rows only, and only their log-probabilities are read back.
    pub fn loss_and_choice_scores(&mut self) -> Result<(f64, Vec<Vec<Vec<f64>>>)> {
        let scale = self.scale();
        let m = self.model;
        let mut loss = 0.0;
        let mut scores = Vec::with_capacity(self.batches.len());
        let memory = self.buffers.memory;
        for batch in &self.batches {
            let ws = m.workspace(&mut self.buffers.workspace, batch, false, false, memory)?;
            loss += OptPass::new(m, batch, &Direction::None)
                .run(ws, batch, scale, None)?
                .loss;
            scores.push(batch.choice_scores(ws.row_logprobs()));
        }
        Ok((loss, scores))
    }

    /// One pass per batch, summing the scalars; outputs accumulate across batches,
    /// and are complete (zero where no pass wrote) on return.
    fn run_passes<'d>(
        &mut self,
        dir: &'d Direction<'d, T, B>,
        mut outs: Option<&mut Outputs<'_, T, B>>,
    ) -> Result<PassScalars>
    where
        'm: 'd,
    {
        let m: &'d Opt<T, B> = self.model;
        let scale = self.scale();
        let dual = !matches!(dir, Direction::None);
        let (reverse, memory) = (outs.is_some(), self.buffers.memory);
        let mut total = PassScalars::default();
        for batch in &self.batches {
            let ws = m.workspace(&mut self.buffers.workspace, batch, dual, reverse, memory)?;
            total += OptPass::new(m, batch, dir).run(ws, batch, scale, outs.as_deref_mut())?;
        }
        if let Some(outs) = outs {
            outs.finish(m.backend(), m.layout());
        }
        Ok(total)
    }

    /// The loss (forward passes only).
    pub fn loss(&mut self) -> Result<f64> {
        Ok(self.run_passes(&Direction::None, None)?.loss)
    }

    /// The loss and its gradient, into `grad` (an N-vector on the backend, overwritten).
    pub fn gradient_into(&mut self, grad: &mut B::Buf) -> Result<f64> {
        let m = self.model;
        let b = m.backend();
        let mut outs = Outputs::new(m.layout(), Sink::Dense(b.view_mut(grad)), Sink::None);
        Ok(self.run_passes(&Direction::None, Some(&mut outs))?.loss)
    }

    /// The loss and its gradient.
    pub fn gradient(&mut self) -> Result<(f64, Vec<T>)> {
        let b = self.model.backend();
        let mut grad = b.zeros(self.model.num_params())?;
        let loss = self.gradient_into(&mut grad)?;
        Ok((loss, self.download(&grad, self.model.num_params())?))
    }

    fn download(&self, buf: &B::Buf, len: usize) -> Result<Vec<T>> {
        let b = self.model.backend();
        let mut host = vec![T::ZERO; len];
        b.download(b.view(buf), &mut host)?;
        Ok(host)
    }

    fn check_len(&self, what: &str, len: usize, expected: usize) -> Result<()> {
        if len == expected {
            Ok(())
        } else {
            Err(Error::arg(
                what,
                format!("expected {expected} values, found {len}"),
            ))
        }
    }

    /// `H v` into `hvp` (N-vectors on the backend, `hvp` overwritten); also the
    /// gradient into `grad` when given. Returns the loss and `g . v`.
    pub fn hvp_into(
        &mut self,
        v: &B::Buf,
        hvp: &mut B::Buf,
        grad: Option<&mut B::Buf>,
    ) -> Result<PassScalars> {
        let m = self.model;
        let b = m.backend();
        let grad = grad.map_or(Sink::None, |g| Sink::Dense(b.view_mut(g)));
        let mut outs = Outputs::new(m.layout(), grad, Sink::Dense(b.view_mut(hvp)));
        self.run_passes(&Direction::Dense(b.view(v)), Some(&mut outs))
    }

    /// `H v` for an N-vector `v`.
    pub fn hvp(&mut self, v: &[T]) -> Result<Vec<T>> {
        self.check_len("v", v.len(), self.model.num_params())?;
        let b = self.model.backend();
        let v = b.upload(v)?;
        let mut out = b.zeros(self.model.num_params())?;
        self.hvp_into(&v, &mut out, None)?;
        self.download(&out, self.model.num_params())
    }

    /// Loss, `g . v`, gradient and `H v` in one forward-over-reverse pass.
    pub fn loss_gradient_hvp(&mut self, v: &[T]) -> Result<HvpResult<T>> {
        let n = self.model.num_params();
        self.check_len("v", v.len(), n)?;
        let b = self.model.backend();
        let v = b.upload(v)?;
        let mut out = b.zeros(self.model.num_params())?;
        let mut grad = b.zeros(self.model.num_params())?;
        let s = self.hvp_into(&v, &mut out, Some(&mut grad))?;
        Ok(HvpResult {
            loss: s.loss,
            grad_dot_v: s.loss_dot,
            gradient: self.download(&grad, n)?,
            hvp: self.download(&out, n)?,
        })
    }

    /// Restricts [`Objective::masked_gradient`] and [`Objective::masked_hvp`] to the
    /// sorted, distinct flat indices `mask` (`crate::mask::Mask::indices()`).
    pub fn set_mask(&mut self, mask: &[u64]) -> Result<()> {
        self.buffers.mask = ObjectiveBuffers::with_mask(self.model, mask)?.mask;
        Ok(())
    }

    /// The number k of masked coordinates, once a mask is set.
    pub fn mask_len(&self) -> Option<usize> {
        self.buffers.mask_plan().map(|p| p.len())
    }

    /// The loss and the gradient at the mask, `g[mask]`, into `out` (a k-vector on
    /// the backend, overwritten). Each masked weight entry is one dot product over
    /// the tokens (`O(k x tokens)`), the reverse sweep stops below the lowest masked
    /// tensor, and no N-vector is formed.
    pub fn masked_gradient_into(&mut self, out: &mut B::Buf) -> Result<f64> {
        let m = self.model;
        let b = m.backend();
        let mut mask = self.buffers.mask.take().ok_or_else(no_mask)?;
        let result = {
            let MaskState {
                plan, grad_scratch, ..
            } = &mut mask;
            let sink = masked_sink(b, plan, out, grad_scratch);
            let mut outs = Outputs::new(m.layout(), sink, Sink::None);
            let result = self.run_passes(&Direction::None, Some(&mut outs));
            drop(outs);
            plan.store(b, b.view_mut(out), grad_scratch);
            result
        };
        self.buffers.mask = Some(mask);
        Ok(result?.loss)
    }

    /// The loss and the gradient at the mask (see [`Objective::masked_gradient_into`]).
    pub fn masked_gradient(&mut self) -> Result<(f64, Vec<T>)> {
        let k = self.mask_len().ok_or_else(no_mask)?;
        let mut out = self.model.backend().zeros(k)?;
        let loss = self.masked_gradient_into(&mut out)?;
        Ok((loss, self.download(&out, k)?))
    }

    /// The masked Hessian times a k-vector: `(H (P^T v))[mask]` with `P^T v` the
    /// zero-padded N-vector, into `out` (a k-vector on the backend, overwritten).
    /// Exploits the mask's sparsity (see `ops::linear`); the gradient is not formed.
    pub fn masked_hvp_into(&mut self, v: &B::Buf, out: &mut B::Buf) -> Result<PassScalars> {
        let m = self.model;
        let b = m.backend();
        let mut mask = self.buffers.mask.take().ok_or_else(no_mask)?;
        let result = {
            let MaskState {
                plan, hvp_scratch, ..
            } = &mut mask;
            plan.load(b, b.view(v));
            let plan = &*plan;
            let sink = masked_sink(b, plan, out, hvp_scratch);
            let mut outs = Outputs::new(m.layout(), Sink::None, sink);
            let dir = Direction::Masked {
                plan,
                values: b.view(v),
            };
            let result = self.run_passes(&dir, Some(&mut outs));
            drop(outs);
            plan.store(b, b.view_mut(out), hvp_scratch);
            result
        };
        self.buffers.mask = Some(mask);
        result
    }

    /// The masked Hessian times a k-vector `v` (see [`Objective::masked_hvp_into`]).
    pub fn masked_hvp(&mut self, v: &[T]) -> Result<Vec<T>> {
        let k = self.mask_len().ok_or_else(no_mask)?;
        self.check_len("v", v.len(), k)?;
        let b = self.model.backend();
        let v = b.upload(v)?;
        let mut out = b.zeros(k)?;
        self.masked_hvp_into(&v, &mut out)?;
        self.download(&out, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::mask::{Mask, MaskSpec, RatioOf, Scope};
    use crate::model::Checkpoint;
    use crate::model::bench::random_batch;
    use crate::model::memory::workspace_elements;
    use crate::model::presets::preset;

    /// Scalars the objective's workspace holds, counted buffer by buffer.
    fn held(objective: &Objective<'_, f32, Cpu>) -> usize {
        let ws = objective.buffers.workspace.as_ref().expect("a pass ran");
        let mut n = 0;
        ws.stored.for_each_buf(|b| n += b.len());
        ws.head.for_each_buf(|b| n += b.len());
        n
    }

    /// The head fuses with the log-probabilities exactly in value passes whose
    /// reverse sweep wants nothing of the head's weight, on a vocabulary of two
    /// groups or more (`backend/cpu/head.rs`); the values are checked in
    /// `tests/engine.rs`, this checks which path ran.
    #[test]
    fn the_head_fuses_only_where_its_weight_is_left_alone() {
        let mut wide = preset("opt-mini").unwrap();
        (wide.vocab_size, wide.hidden_size, wide.ffn_dim) = (8200, 16, 32);
        (wide.num_hidden_layers, wide.num_attention_heads) = (1, 2);
        let mut narrow = wide.clone();
        narrow.vocab_size = 8191;
        for (config, wide) in [(wide, true), (narrow, false)] {
            let params = Checkpoint::<f32>::random(config.clone(), 1).params;
            let model = Opt::new(Cpu, config.clone(), &params).unwrap();
            let data = [random_batch(&config, 2, 7, 2).unwrap()];
            let mut o = Objective::new(&model, &data).unwrap();
            let fused = |o: &mut Objective<'_, f32, Cpu>, mask: &Mask| {
                o.set_mask(mask.indices()).unwrap();
                let ws = |o: &Objective<'_, f32, Cpu>| {
                    o.buffers
                        .workspace
                        .as_ref()
                        .expect("a pass ran")
                        .head
                        .fused()
                };
                o.masked_gradient().unwrap();
                let masked_gradient = ws(o);
                o.masked_hvp(&vec![0.5; mask.len()]).unwrap();
                let masked_hvp = ws(o);
                o.gradient().unwrap();
                (masked_gradient, masked_hvp, ws(o))
            };
            let draw = |scope| {
                let spec = MaskSpec {
                    scope,
                    ratio: 0.1,
                    ratio_of: RatioOf::Scope,
                    ..MaskSpec::paper(0.1, 0)
                };
                Mask::draw(&spec, model.layout()).unwrap()
            };
            let (qv, all) = (draw(Scope::Qv), draw(Scope::All));
            assert_eq!(fused(&mut o, &qv), (wide, false, false), "q/v, {config:?}");
            assert_eq!(
                fused(&mut o, &all),
                (false, false, false),
                "all, {config:?}"
            );
        }
    }

    /// `workspace_elements` (the README's formula) counts exactly what a pass
    /// allocates, for every operation and mode, pre-LN and post-LN with
    /// projections.
    #[test]
    fn the_memory_formula_counts_the_allocated_buffers() {
        let mut pre = preset("opt-mini").unwrap();
        pre.vocab_size = 97;
        pre.num_hidden_layers = 3;
        let mut post = preset("opt-350m").unwrap();
        (post.vocab_size, post.hidden_size, post.ffn_dim) = (89, 48, 80);
        (post.word_embed_proj_dim, post.num_hidden_layers) = (24, 2);
        post.num_attention_heads = 4;
        for config in [pre, post] {
            let params = Checkpoint::<f32>::random(config.clone(), 1).params;
            let model = Opt::new(Cpu, config.clone(), &params).unwrap();
            let data = [random_batch(&config, 3, 9, 2).unwrap()];
            let mask = Mask::draw(&MaskSpec::paper(0.01, 0), model.layout()).unwrap();
            let ops = [
                Operation::Loss,
                Operation::Gradient,
                Operation::MaskedGradient,
                Operation::Hvp { gradient: false },
                Operation::MaskedHvp,
            ];
            for memory in [Memory::Stored, Memory::Recompute] {
                for op in ops {
                    let mut o = Objective::new(&model, &data).unwrap();
                    o.set_memory(memory);
                    o.set_mask(mask.indices()).unwrap();
                    let n = model.num_params();
                    match op {
                        Operation::Loss => drop(o.loss().unwrap()),
                        Operation::Gradient => drop(o.gradient().unwrap()),
                        Operation::MaskedGradient => drop(o.masked_gradient().unwrap()),
                        Operation::Hvp { .. } => drop(o.hvp(&vec![0.5; n]).unwrap()),
                        Operation::MaskedHvp => drop(o.masked_hvp(&vec![0.5; mask.len()]).unwrap()),
                    }
                    let shape = o.batches[0].pass_shape();
                    let recompute = memory == Memory::Recompute;
                    let want =
                        workspace_elements(&config, shape, op.dual(), op.reverse(), recompute);
                    assert_eq!(held(&o), want, "{op:?}, {memory:?}, {config:?}");
                    let f = o.footprint(op);
                    let bytes = if recompute { f.recompute } else { f.stored };
                    assert_eq!(bytes, 4 * want as u64);
                    assert_eq!(f.weights, 4 * n as u64);
                }
            }
        }
    }
}
