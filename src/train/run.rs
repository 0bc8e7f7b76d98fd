//! The training loop, read top to bottom as nanoGPT's `train.py` reads: per step,
//! the step's batches, the (masked) gradient, clipping, the scheduled rate, the
//! update in place on the backend; evaluation, sharpness and the resumable state at
//! their intervals.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::data::{BatchSize, TrainData, TrainDataRequest};
use super::optimizer::{Optimizer, OptimizerSettings, norm};
use super::sharpness::{SharpnessRow, SharpnessSettings, measure};
use super::state::{self, Best, EvalRow, History, Saved, StepRow, Vectors};
use super::trainer::{StepOutcome, Trainer};
use crate::backend::Scalar;
use crate::error::{Error, Result};
use crate::model::objective::ObjectiveBuffers;
use crate::model::{Memory, Objective, Opt, OptConfig};
use crate::probe::Restriction;
use crate::probe::device::{BackendJob, Device, Dtype, Engine, GpuOptions, SpectralBackend};
use crate::probe::evaluate::{Evaluation, evaluate};
use crate::probe::inputs::{HessianChoice, ModelInputs, Resolved, record_inputs};
use crate::progress::{Progress, Silent};
use crate::report::Manifest;

/// How long a run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Length {
    Epochs(usize),
    Steps(usize),
}

/// Everything that determines a run's numbers (the resumable state is refused for
/// a run with other settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    pub optimizer: OptimizerSettings,
    pub length: Length,
    pub batch: BatchSize,
    /// Micro-batches per step (the step's gradient is their mean).
    pub grad_accum: usize,
    /// Seed of the data order.
    pub seed: u64,
    /// Evaluate every this many steps (default: at the end of every epoch).
    pub eval_every: Option<usize>,
    pub sharpness: Option<SharpnessSettings>,
    /// Keep the trained coordinates every this many steps (a trajectory).
    pub save_every: Option<usize>,
    pub dtype: Dtype,
    pub device: Device,
}

impl TrainSettings {
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        match self.length {
            Length::Epochs(0) => return Err(Error::arg("--epochs", "must be at least 1")),
            Length::Steps(0) => return Err(Error::arg("--steps", "must be at least 1")),
            _ => {}
        }
        if self.batch == BatchSize::Examples(0) {
            return Err(Error::arg("--batch", "must be at least 1 (or `all`)"));
        }
        if self.grad_accum == 0 {
            return Err(Error::arg("--grad-accum", "must be at least 1"));
        }
        if self.grad_accum > 1 && self.batch == BatchSize::All {
            return Err(Error::arg(
                "--grad-accum",
                "needs --batch N (with --batch all every step already sees every example)",
            ));
        }
        for (flag, every) in [
            ("--eval-every", self.eval_every),
            ("--save-every", self.save_every),
        ] {
            if every == Some(0) {
                return Err(Error::arg(flag, "must be at least 1"));
            }
        }
        if let Some(s) = &self.sharpness {
            s.validate()?;
        }
        Ok(())
    }
}

/// A training run to make.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    /// The checkpoint folder it starts from.
    pub model: PathBuf,
    pub data: TrainDataRequest,
    /// What trains: a mask's coordinates, a whole scope, or every parameter.
    pub trained: HessianChoice,
    pub settings: TrainSettings,
    pub gpu: GpuOptions,
    /// Where the resumable state is kept (the run's output folder).
    pub out: PathBuf,
    /// Continue the run saved in `out`.
    pub resume: bool,
    /// Also return the best state's whole parameter vector (to save as a model).
    pub keep_model: bool,
    /// Store or recompute the blocks' activations (not part of the run's identity:
    /// the results are the same bits either way, so a run may resume in the other
    /// mode).
    pub memory: Memory,
}

/// The run's summary (`summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub settings: TrainSettings,
    pub model_sha256: String,
    pub parameters: usize,
    /// What trained, and how many coordinates.
    pub trained: String,
    pub trained_count: usize,
    pub indices_sha256: Option<String>,
    pub examples: SplitSizes,
    pub steps_per_epoch: usize,
    pub steps_planned: usize,
    pub steps: usize,
    pub examples_seen: usize,
    pub diverged: Option<Divergence>,
    pub best: Best,
    pub best_train_loss: Option<f64>,
    pub final_train_loss: Option<f64>,
    pub final_dev: Option<f64>,
    pub test: Option<Evaluation>,
    pub distance_best: f64,
    pub distance_final: f64,
    pub last_sharpness: Option<SharpnessRow>,
    /// Absent in outputs meant to be byte-identical across reruns.
    pub timing: Option<TrainTiming>,
}

/// Examples per split.
#[derive(Clone, Debug, Serialize)]
pub struct SplitSizes {
    pub train: usize,
    pub dev: Option<usize>,
    pub test: Option<usize>,
}

/// Where a diverged run stopped.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    /// The step whose loss (or update) was the first out of bounds.
    pub step: usize,
    pub loss: f64,
    pub reason: String,
}

/// Where the wall time went.
#[derive(Clone, Debug, Serialize)]
pub struct TrainTiming {
    pub load_s: f64,
    pub steps_s: f64,
    pub evaluation_s: f64,
    pub sharpness_s: f64,
    pub total_s: f64,
    pub ms_per_step: f64,
}

/// A finished (or interrupted) run.
pub struct TrainRun {
    pub summary: TrainSummary,
    pub steps: Vec<StepRow>,
    pub evals: Vec<EvalRow>,
    pub sharpness: Vec<SharpnessRow>,
    /// The trained coordinates' flat indices (`None`: all, in layout order).
    pub indices: Option<Vec<u64>>,
    pub theta0: Vec<f64>,
    /// `theta_best - theta_0` and `theta_final - theta_0`, computed in the compute
    /// precision (held as f64).
    pub delta_best: Vec<f64>,
    pub delta_final: Vec<f64>,
    /// `(step, trained coordinates)` every `save_every` steps.
    pub trajectory: Vec<(usize, Vec<f64>)>,
    /// The best state's config and whole parameter vector, when asked for.
    pub model: Option<(OptConfig, Vec<f64>)>,
    pub inputs: Manifest,
    /// The step a Ctrl-C stopped the run at (its state is saved for `--resume`).
    pub interrupted: Option<usize>,
}

/// Runs `request` on its device.
pub fn run_train(
    request: &TrainRequest,
    manifest: Manifest,
    progress: &dyn Progress,
) -> Result<TrainRun> {
    request.settings.validate()?;
    let engine = Engine::open(request.settings.device, request.gpu)?;
    engine.run(
        request.settings.dtype,
        TrainJob {
            request,
            manifest,
            progress,
        },
    )
}

/// Runs `request` on an open backend whose scalar is the request's dtype (a
/// training sweep runs its cells on one engine).
pub fn run_train_on<T: Scalar, B: SpectralBackend<T>>(
    backend: B,
    request: &TrainRequest,
    manifest: Manifest,
    progress: &dyn Progress,
) -> Result<TrainRun> {
    request.settings.validate()?;
    TrainJob {
        request,
        manifest,
        progress,
    }
    .run::<T, B>(backend)
}

struct TrainJob<'a> {
    request: &'a TrainRequest,
    manifest: Manifest,
    progress: &'a dyn Progress,
}

impl BackendJob for TrainJob<'_> {
    type Output = TrainRun;

    fn run<T: Scalar, B: SpectralBackend<T>>(self, backend: B) -> Result<TrainRun> {
        let TrainJob {
            request,
            mut manifest,
            progress,
        } = self;
        let settings = &request.settings;
        let started = Instant::now();
        let model = ModelInputs::<T>::load(&request.model, None)?;
        let data = TrainData::load(&request.data, &model.dir, model.config())?;
        let resolved: Resolved = request.trained.resolve(model.layout())?;
        record_inputs(&mut manifest, &model, &data.files, &request.trained)?;
        let key = run_key(request, &model.sha256, &manifest, &resolved);
        let indices = match &resolved.restriction {
            Restriction::Indices(indices) => Some(indices.clone()),
            Restriction::Full => None,
        };
        let config = model.config().clone();
        let network = Opt::new(backend.clone(), config.clone(), &model.checkpoint.params)?;
        let mut trainer = Trainer::new(network, indices.as_deref(), &settings.optimizer)?;
        trainer.set_memory(request.memory);
        let to_f64 = |x: &[T]| x.iter().map(|v| v.to_f64()).collect::<Vec<f64>>();

        // the run so far: fresh, or as saved
        let (mut history, mut trajectory) = if request.resume {
            let saved = state::load(&request.out, &key)?;
            let mut optimizer = Optimizer::new(settings.optimizer.clone(), trainer.theta0().len());
            optimizer.steps = saved.history.optimizer_steps;
            if !optimizer.m.is_empty() {
                optimizer.m = saved.vectors.m;
            }
            if !optimizer.v.is_empty() {
                optimizer.v = saved.vectors.v;
            }
            let theta = saved
                .vectors
                .theta
                .iter()
                .map(|&x| T::from_f64(x))
                .collect();
            trainer.restore(theta, optimizer, saved.history.initial_loss)?;
            (saved.history, saved.vectors.trajectory)
        } else {
            (History::default(), Vec::new())
        };
        let load_s = started.elapsed().as_secs_f64();

        let spe = data.steps_per_epoch(settings.batch, settings.grad_accum);
        let planned = match settings.length {
            Length::Epochs(e) => e * spe,
            Length::Steps(s) => s,
        };
        let sharpness_batches = match &settings.sharpness {
            Some(s) => data.first_train(s.examples)?,
            None => Vec::new(),
        };
        let sharpness =
            |trainer: &Trainer<T, B>, step: usize, history: &mut History| -> Result<()> {
                if let Some(s) = &settings.sharpness {
                    let t = Instant::now();
                    let row =
                        sharpness_row(trainer, &sharpness_batches, &resolved.restriction, s, step)?;
                    history.sharpness.push(row);
                    history.seconds[2] += t.elapsed().as_secs_f64();
                }
                Ok(())
            };
        let save = |history: &History, trainer: &Trainer<T, B>, trajectory: &[Vec<f64>]| {
            let optimizer = trainer.optimizer();
            state::save(
                &request.out,
                &Saved {
                    key: key.clone(),
                    history: history.clone(),
                    vectors: Vectors {
                        theta: to_f64(trainer.theta()),
                        m: optimizer.m.clone(),
                        v: optimizer.v.clone(),
                        trajectory: trajectory.to_vec(),
                    },
                },
            )
        };

        // before any update: the sharpness, and the trajectory's start
        if history.step == 0 {
            if history.sharpness.is_empty() {
                sharpness(&trainer, 0, &mut history)?;
            }
            if settings.save_every.is_some() && history.trajectory_steps.is_empty() {
                history.trajectory_steps.push(0);
                trajectory.push(to_f64(trainer.theta()));
            }
        }

        let mut dev_buffers: ObjectiveBuffers<T, B> = ObjectiveBuffers::default();
        let mut diverged = None;
        let mut interrupted = None;
        let mut order: Option<(usize, Vec<usize>)> = None;
        progress.start(planned as u64, "train");
        progress.advance(history.step.min(planned) as u64);
        while history.step < planned {
            if progress.is_cancelled() {
                interrupted = Some(history.step);
                save(&history, &trainer, &trajectory)?;
                break;
            }
            let t0 = Instant::now();
            let epoch = history.step / spe;
            if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                order = Some((epoch, data.epoch_order(settings.seed, epoch)));
            }
            let (_, epoch_order) = order.as_ref().expect("set just above"); // invariant: set just above
            let index = history.step % spe;
            let batches =
                data.step_batches(epoch_order, index, settings.batch, settings.grad_accum);
            let stats = match trainer.step(&batches)? {
                StepOutcome::Moved(stats) => stats,
                StepOutcome::Diverged { loss, reason } => {
                    diverged = Some(Divergence {
                        step: history.step + 1,
                        loss,
                        reason,
                    });
                    break;
                }
            };
            history.step += 1;
            let step = history.step;
            history.optimizer_steps = trainer.optimizer().steps;
            history.initial_loss = trainer.initial_loss();
            history.examples_seen += batches.iter().map(|b| b.examples()).sum::<usize>();
            history.running_loss.0 += stats.loss;
            history.running_loss.1 += 1;
            history.steps.push(StepRow {
                step,
                epoch,
                lr: stats.lr,
                train_loss: stats.loss,
                grad_norm: stats.grad_norm,
                update_norm: stats.update_norm,
                distance: stats.distance,
            });
            history.seconds[0] += t0.elapsed().as_secs_f64();
            progress.advance(1);

            if settings.save_every.is_some_and(|n| step.is_multiple_of(n)) {
                history.trajectory_steps.push(step);
                trajectory.push(to_f64(trainer.theta()));
            }
            if settings.sharpness.as_ref().is_some_and(|s| s.due(step)) {
                sharpness(&trainer, step, &mut history)?;
            }
            let due = match settings.eval_every {
                Some(n) => step.is_multiple_of(n),
                None => step.is_multiple_of(spe),
            } || step == planned;
            if due {
                let t = Instant::now();
                let (sum, count) = std::mem::take(&mut history.running_loss);
                let train_loss = sum / count.max(1) as f64;
                let dev = match &data.dev {
                    Some(split) => {
                        let mut o =
                            Objective::with_buffers(trainer.model(), &split.batches, dev_buffers)?;
                        let e = evaluate(&mut o, &split.batches, &Silent)?;
                        dev_buffers = o.into_buffers();
                        Some(e)
                    }
                    None => None,
                };
                let row = EvalRow {
                    step,
                    epoch,
                    train_loss,
                    dev_loss: dev.as_ref().map_or(f64::NAN, |e| e.loss),
                    dev_accuracy: dev
                        .as_ref()
                        .and_then(|e| e.accuracy.as_ref().map(|a| a.accuracy)),
                };
                // by dev loss (ties keep the earlier state); without dev, the latest
                let better = match (&history.best, row.dev_loss.is_finite()) {
                    (Some(best), true) => best.dev_loss.is_none_or(|b| row.dev_loss < b),
                    _ => true,
                };
                if better {
                    history.best = Some(Best {
                        step,
                        dev_loss: dev.as_ref().map(|e| e.loss),
                        dev_accuracy: row.dev_accuracy,
                        theta: to_f64(trainer.theta()),
                    });
                }
                history.evals.push(row);
                history.seconds[1] += t.elapsed().as_secs_f64();
                progress.note(&format!("step {step}: train loss {train_loss:.4}"));
                save(&history, &trainer, &trajectory)?;
            }
        }

        // the best state (the last one when nothing was evaluated) and its test score
        let best = history.best.clone().unwrap_or_else(|| Best {
            step: history.step,
            dev_loss: None,
            dev_accuracy: None,
            theta: to_f64(trainer.theta()),
        });
        let best_theta: Vec<T> = best.theta.iter().map(|&x| T::from_f64(x)).collect();
        let t = Instant::now();
        let test = match (&data.test, interrupted) {
            (Some(split), None) => {
                trainer.set_trained(&best_theta)?;
                let mut o = Objective::new(trainer.model(), &split.batches)?;
                let e = evaluate(&mut o, &split.batches, &Silent)?;
                drop(o);
                trainer.reset_trained()?;
                Some(e)
            }
            _ => None,
        };
        history.seconds[1] += t.elapsed().as_secs_f64();
        if interrupted.is_none() {
            state::remove(&request.out)?;
        }

        let theta0 = trainer.theta0();
        let subtract = |a: &[T]| -> Vec<f64> {
            a.iter()
                .zip(theta0)
                .map(|(&x, &y)| (x - y).to_f64())
                .collect()
        };
        let delta_best = subtract(&best_theta);
        let delta_final = subtract(trainer.theta());
        let model_out = request.keep_model.then(|| {
            let mut all: Vec<f64> = to_f64(&model.checkpoint.params);
            match &indices {
                Some(idx) => {
                    for (&i, &x) in idx.iter().zip(&best.theta) {
                        all[i as usize] = x;
                    }
                }
                None => all.clone_from(&best.theta),
            }
            (config, all)
        });
        let total_s = started.elapsed().as_secs_f64();
        let [steps_s, evaluation_s, sharpness_s] = history.seconds;
        let summary = TrainSummary {
            settings: settings.clone(),
            model_sha256: model.sha256.clone(),
            parameters: model.checkpoint.params.len(),
            trained: resolved.description.clone(),
            trained_count: theta0.len(),
            indices_sha256: resolved.mask_sha256(),
            examples: SplitSizes {
                train: data.train.len(),
                dev: data.dev.as_ref().map(|s| s.dataset.len()),
                test: data.test.as_ref().map(|s| s.dataset.len()),
            },
            steps_per_epoch: spe,
            steps_planned: planned,
            steps: history.step,
            examples_seen: history.examples_seen,
            diverged,
            distance_best: norm(&delta_best),
            distance_final: norm(&delta_final),
            best_train_loss: history
                .evals
                .iter()
                .find(|e| e.step == best.step)
                .map(|e| e.train_loss),
            final_train_loss: history.evals.last().map(|e| e.train_loss),
            final_dev: history
                .evals
                .last()
                .map(|e| e.dev_loss)
                .filter(|x| x.is_finite()),
            best,
            test,
            last_sharpness: history.sharpness.last().cloned(),
            timing: Some(TrainTiming {
                load_s,
                steps_s,
                evaluation_s,
                sharpness_s,
                total_s,
                ms_per_step: 1e3 * steps_s / history.steps.len().max(1) as f64,
            }),
        };
        let trajectory = history
            .trajectory_steps
            .iter()
            .copied()
            .zip(trajectory)
            .collect();
        Ok(TrainRun {
            summary,
            steps: history.steps,
            evals: history.evals,
            sharpness: history.sharpness,
            indices,
            theta0: to_f64(theta0),
            delta_best,
            delta_final,
            trajectory,
            model: model_out,
            inputs: manifest,
            interrupted,
        })
    }
}

/// What a saved state must match to be resumed: the settings, the inputs' hashes,
/// the trained coordinates and the split sizes.
fn run_key(
    request: &TrainRequest,
    model_sha256: &str,
    manifest: &Manifest,
    resolved: &Resolved,
) -> serde_json::Value {
    let inputs: Vec<(String, String)> = manifest
        .inputs
        .iter()
        .map(|i| (i.role.clone(), i.sha256.clone()))
        .collect();
    let d = &request.data;
    serde_json::json!({
        "settings": request.settings,
        "model_sha256": model_sha256,
        "inputs": inputs,
        "trained": resolved.mask_sha256(),
        "data": {
            "train_examples": d.train_examples,
            "dev_examples": d.dev_examples,
            "test_examples": d.test_examples,
            "data_seed": d.data_seed,
            "eval_rows": d.eval_rows,
        },
    })
}

/// The sharpness after `step` updates, beside the thresholds of the next update's rate.
fn sharpness_row<T: Scalar, B: SpectralBackend<T>>(
    trainer: &Trainer<T, B>,
    batches: &[crate::model::Batch],
    restriction: &Restriction,
    settings: &SharpnessSettings,
    step: usize,
) -> Result<SharpnessRow> {
    // Not cancellable: a Ctrl-C waits for the measurement and stops at the next
    // step boundary, where the state is saved.
    let optimizer = trainer.optimizer();
    let p = optimizer.preconditioner();
    let ((lambda_max, residual, converged), pre) = measure(
        trainer.model(),
        batches,
        restriction,
        trainer.memory(),
        p.as_deref(),
        settings,
        &Silent,
    )?;
    let lr = trainer.schedule().lr(step);
    Ok(SharpnessRow {
        step,
        lr,
        lambda_max,
        residual,
        converged,
        preconditioned: pre.map(|p| p.0),
        preconditioned_residual: pre.map(|p| p.1),
        threshold: optimizer.settings.stability_threshold(lr),
        gd_threshold: 2.0 / lr,
    })
}
