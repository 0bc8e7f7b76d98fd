//! A model's loss on a dataset, and its exact derivatives: the API the verifier, the
//! benchmarks and the spectral probes call.
//!
//! The dataset is a list of batches; every quantity is the mean over all of the
//! dataset's loss terms, accumulated batch by batch, so it equals the value for one
//! big batch (up to rounding).

use super::batch::Batch;
use super::opt::{
    Direction, MaskPlan, Opt, Outputs, Pass, Prepared, Sink, SweepScalars, Workspace, workspace,
};
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};

/// Loss, gradient and `H v` of a model on a dataset, with reusable buffers.
pub struct Objective<'m, T: Scalar, B: Backend<T>> {
    model: &'m Opt<T, B>,
    batches: Vec<Prepared<T, B>>,
    terms: usize,
    workspace: Option<Workspace<T, B>>,
    mask: Option<MaskState<T, B>>,
}

/// A prepared mask and the output scratch of its small tensors.
struct MaskState<T: Scalar, B: Backend<T>> {
    plan: MaskPlan<T, B>,
    scratch: Vec<B::Buf>,
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

impl<'m, T: Scalar, B: Backend<T>> Objective<'m, T, B> {
    /// Checks and uploads `data` (every batch is validated against the model).
    pub fn new(model: &'m Opt<T, B>, data: &[Batch]) -> Result<Self> {
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
            workspace: None,
            mask: None,
        })
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
        let ws = workspace(&mut self.workspace, self.model, batch, false)?;
        Pass::new(self.model, batch, &Direction::None)
            .all_rows()
            .run(ws, batch, scale, None)?;
        let b = self.model.backend();
        let logits = ws.logits(b);
        let mut host = vec![T::ZERO; batch.batch * batch.seq * self.model.config().vocab_size];
        b.download(logits, &mut host)?;
        Ok(host)
    }

    /// The loss, and each batch's candidate scores per question as the choice loss
    /// scores them (the mean log-probability of each candidate's answer tokens; none
    /// for a next-token batch), from one forward sweep: the LM head runs on the
    /// scored rows only, and only their log-probabilities are read back.
    pub fn loss_and_choice_scores(&mut self) -> Result<(f64, Vec<Vec<Vec<f64>>>)> {
        let scale = self.scale();
        let mut loss = 0.0;
        let mut scores = Vec::with_capacity(self.batches.len());
        for batch in &self.batches {
            let ws = workspace(&mut self.workspace, self.model, batch, false)?;
            loss += Pass::new(self.model, batch, &Direction::None)
                .run(ws, batch, scale, None)?
                .loss;
            scores.push(batch.choice_scores(ws.row_logprobs()));
        }
        Ok((loss, scores))
    }

    /// The loss (forward sweeps only).
    pub fn loss(&mut self) -> Result<f64> {
        let scale = self.scale();
        Ok(sweep(
            self.model,
            &self.batches,
            &mut self.workspace,
            scale,
            &Direction::None,
            None,
        )?
        .loss)
    }

    /// The loss and its gradient, into `grad` (an N-vector on the backend, overwritten).
    pub fn gradient_into(&mut self, grad: &mut B::Buf) -> Result<f64> {
        let b = self.model.backend();
        let mut outs = Outputs::new(self.model, Some(b.view_mut(grad)), Sink::None);
        let scale = self.scale();
        Ok(sweep(
            self.model,
            &self.batches,
            &mut self.workspace,
            scale,
            &Direction::None,
            Some(&mut outs),
        )?
        .loss)
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
    ) -> Result<SweepScalars> {
        let b = self.model.backend();
        let grad = grad.map(|g| b.view_mut(g));
        let mut outs = Outputs::new(self.model, grad, Sink::Dense(b.view_mut(hvp)));
        let scale = self.scale();
        sweep(
            self.model,
            &self.batches,
            &mut self.workspace,
            scale,
            &Direction::Dense(b.view(v)),
            Some(&mut outs),
        )
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

    /// Restricts [`Objective::masked_hvp`] to the sorted, distinct flat indices `mask`
    /// (`crate::mask::Mask::indices()`).
    pub fn set_mask(&mut self, mask: &[u64]) -> Result<()> {
        let plan = MaskPlan::new(self.model, mask)?;
        let scratch = plan.output_scratch(self.model.backend())?;
        self.mask = Some(MaskState { plan, scratch });
        Ok(())
    }

    /// The number k of masked coordinates, once a mask is set.
    pub fn mask_len(&self) -> Option<usize> {
        self.mask.as_ref().map(|m| m.plan.len())
    }

    /// The masked Hessian times a k-vector: `(H (P^T v))[mask]` with `P^T v` the
    /// zero-padded N-vector, into `out` (a k-vector on the backend, overwritten).
    /// Exploits the mask's sparsity (see `ops::linear`); the gradient is not formed.
    pub fn masked_hvp_into(&mut self, v: &B::Buf, out: &mut B::Buf) -> Result<SweepScalars> {
        let b = self.model.backend();
        let scale = self.scale();
        let MaskState { plan, scratch } = self.mask.as_mut().ok_or_else(|| {
            Error::arg(
                "mask",
                "set a mask before asking for a masked Hessian-vector product",
            )
        })?;
        plan.load(b, b.view(v));
        for s in scratch.iter_mut() {
            b.zero(b.view_mut(s));
        }
        b.zero(b.view_mut(out));
        let plan = &*plan;
        let small_out = scratch.iter_mut().map(|s| b.view_mut(s)).collect();
        let masked = Sink::Masked {
            plan,
            out: b.view_mut(out),
            small_out,
        };
        let mut outs = Outputs::new(self.model, None, masked);
        let dir = Direction::Masked {
            plan,
            values: b.view(v),
        };
        let s = sweep(
            self.model,
            &self.batches,
            &mut self.workspace,
            scale,
            &dir,
            Some(&mut outs),
        )?;
        drop(outs);
        plan.store(b, b.view_mut(out), scratch);
        Ok(s)
    }

    /// The masked Hessian times a k-vector `v` (see [`Objective::masked_hvp_into`]).
    pub fn masked_hvp(&mut self, v: &[T]) -> Result<Vec<T>> {
        let k = self.mask_len().ok_or_else(|| {
            Error::arg(
                "mask",
                "set a mask before asking for a masked Hessian-vector product",
            )
        })?;
        self.check_len("v", v.len(), k)?;
        let b = self.model.backend();
        let v = b.upload(v)?;
        let mut out = b.zeros(k)?;
        self.masked_hvp_into(&v, &mut out)?;
        self.download(&out, k)
    }
}

/// One sweep per batch, summing the scalars; outputs accumulate across batches,
/// and are complete (zero where no sweep wrote) on return.
fn sweep<'a, T: Scalar, B: Backend<T>>(
    model: &'a Opt<T, B>,
    batches: &[Prepared<T, B>],
    slot: &mut Option<Workspace<T, B>>,
    scale: f64,
    dir: &'a Direction<'a, T, B>,
    mut outs: Option<&mut Outputs<'_, T, B>>,
) -> Result<SweepScalars> {
    let dual = !matches!(dir, Direction::None);
    let mut total = SweepScalars::default();
    for batch in batches {
        let ws = workspace(slot, model, batch, dual)?;
        let s = Pass::new(model, batch, dir).run(ws, batch, scale, outs.as_deref_mut())?;
        total.loss += s.loss;
        total.loss_dot += s.loss_dot;
    }
    if let Some(outs) = outs {
        outs.finish(model);
    }
    Ok(total)
}
