//! One training step, as the paper's protocol takes it: the (masked) gradient of the
//! step's batches, clipped, then the optimizer's update at the scheduled rate,
//! added in place to the trained coordinates on the backend.

use super::optimizer::{Optimizer, OptimizerSettings, Schedule, clip_to_norm, norm};
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::model::objective::ObjectiveBuffers;
use crate::model::{Batch, Memory, Objective, Opt};

/// A loss this many times the first step's, or not finite, ends a run as diverged.
pub const DIVERGENCE_FACTOR: f64 = 1e6;

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    pub lr: f64,
    /// The loss of the step's batches before the update.
    pub loss: f64,
    /// The gradient's norm over the trained coordinates, before clipping.
    pub grad_norm: f64,
    pub update_norm: f64,
    /// `‖theta - theta_0‖` after the update.
    pub distance: f64,
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    Moved(StepStats),
    /// The loss (or the update) left the finite range: the model was not moved.
    Diverged {
        loss: f64,
        reason: String,
    },
}

/// A model whose trained coordinates (a mask's, or all of them) an optimizer steps.
pub struct Trainer<T: Scalar, B: Backend<T>> {
    model: Opt<T, B>,
    /// The training passes' buffers, with the mask when there is one.
    buffers: ObjectiveBuffers<T, B>,
    optimizer: Optimizer,
    schedule: Schedule,
    theta0: Vec<T>,
    /// The trained coordinates as they are on the backend (the same bits).
    theta: Vec<T>,
    initial_loss: Option<f64>,
}

impl<T: Scalar, B: Backend<T>> Trainer<T, B> {
    /// Trains the sorted, distinct flat `indices` of `model` (every parameter when
    /// `None`) with `settings`.
    pub fn new(
        model: Opt<T, B>,
        indices: Option<&[u64]>,
        settings: &OptimizerSettings,
    ) -> Result<Self> {
        let buffers = match indices {
            Some(indices) => ObjectiveBuffers::with_mask(&model, indices)?,
            None => ObjectiveBuffers::default(),
        };
        let theta0 = match buffers.mask_plan() {
            Some(plan) => model.values_at_mask(plan)?,
            None => model.params()?,
        };
        Ok(Trainer {
            optimizer: Optimizer::new(settings.clone(), theta0.len()),
            schedule: Schedule {
                peak: settings.lr,
                warmup_steps: settings.warmup_steps,
            },
            theta: theta0.clone(),
            theta0,
            model,
            buffers,
            initial_loss: None,
        })
    }

    /// Store or recompute the blocks' activations in the training passes (and the
    /// sharpness's Hessian products): the same bits either way, see `model::memory`.
    pub fn set_memory(&mut self, memory: Memory) {
        self.buffers.set_memory(memory);
    }

    pub fn memory(&self) -> Memory {
        self.buffers.memory()
    }

    pub fn model(&self) -> &Opt<T, B> {
        &self.model
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The trained coordinates at the start.
    pub fn theta0(&self) -> &[T] {
        &self.theta0
    }

    /// The trained coordinates now.
    pub fn theta(&self) -> &[T] {
        &self.theta
    }

    /// The first step's loss, the reference of the divergence test.
    pub fn initial_loss(&self) -> Option<f64> {
        self.initial_loss
    }

    /// `‖theta - theta_0‖`.
    pub fn distance(&self) -> f64 {
        self.theta
            .iter()
            .zip(&self.theta0)
            .map(|(a, b)| {
                let d = a.to_f64() - b.to_f64();
                d * d
            })
            .sum::<f64>()
            .sqrt()
    }

    /// Continues from a saved state: the trained coordinates, the optimizer (its
    /// step count and moments) and the first step's loss.
    pub fn restore(
        &mut self,
        theta: Vec<T>,
        optimizer: Optimizer,
        initial_loss: Option<f64>,
    ) -> Result<()> {
        if theta.len() != self.theta0.len() {
            return Err(Error::arg(
                "--resume",
                format!(
                    "the saved state trains {} coordinates, this run {}",
                    theta.len(),
                    self.theta0.len()
                ),
            ));
        }
        self.set_trained(&theta)?;
        self.theta = theta;
        self.optimizer = optimizer;
        self.initial_loss = initial_loss;
        Ok(())
    }

    /// Puts `values` in the trained coordinates of the model (to evaluate a saved
    /// state); `theta` and the optimizer are left as they are.
    pub fn set_trained(&mut self, values: &[T]) -> Result<()> {
        match self.buffers.mask_plan() {
            Some(plan) => self.model.set_at_mask(plan, values),
            None => self.model.set_params(values),
        }
    }

    /// Puts the current `theta` back in the model (after [`Trainer::set_trained`]).
    pub fn reset_trained(&mut self) -> Result<()> {
        let theta = std::mem::take(&mut self.theta);
        let result = self.set_trained(&theta);
        self.theta = theta;
        result
    }

    /// One step on `batches` (the step's gradient is the mean over all their loss
    /// terms).
    pub fn step(&mut self, batches: &[Batch]) -> Result<StepOutcome> {
        let buffers = std::mem::take(&mut self.buffers);
        let mut objective = Objective::with_buffers(&self.model, batches, buffers)?;
        let result = if objective.mask_len().is_some() {
            objective.masked_gradient()
        } else {
            objective.gradient()
        };
        self.buffers = objective.into_buffers();
        let (loss, grad) = result?;
        let initial = *self.initial_loss.get_or_insert(loss);
        if !loss.is_finite() || loss > DIVERGENCE_FACTOR * initial {
            return Ok(StepOutcome::Diverged {
                loss,
                reason: format!(
                    "the loss {loss:.6e} is not finite or above {DIVERGENCE_FACTOR:e} times the \
                     first step's {initial:.6e}"
                ),
            });
        }
        let mut g: Vec<f64> = grad.iter().map(|x| x.to_f64()).collect();
        let grad_norm = clip_to_norm(&mut g, self.optimizer.settings.clip);
        let lr = self.schedule.lr(self.optimizer.steps);
        let theta: Vec<f64> = self.theta.iter().map(|x| x.to_f64()).collect();
        let delta: Vec<T> = self
            .optimizer
            .step(&theta, &g, lr)
            .into_iter()
            .map(T::from_f64)
            .collect();
        let moved = match self.buffers.mask_plan() {
            Some(plan) => self.model.add_at_mask(plan, &delta),
            None => {
                let next: Vec<T> = self
                    .theta
                    .iter()
                    .zip(&delta)
                    .map(|(&a, &d)| a + d)
                    .collect();
                self.model.set_params(&next)
            }
        };
        if let Err(e) = moved {
            // the update was refused whole, so the model did not move; the run ends
            // here, so the optimizer's advanced moments are never used
            return Ok(StepOutcome::Diverged {
                loss,
                reason: format!("the update is not finite ({e})"),
            });
        }
        for (a, &d) in self.theta.iter_mut().zip(&delta) {
            *a += d;
        }
        Ok(StepOutcome::Moved(StepStats {
            lr,
            loss,
            grad_norm,
            update_norm: norm(&delta.iter().map(|x| x.to_f64()).collect::<Vec<_>>()),
            distance: self.distance(),
        }))
    }
}
