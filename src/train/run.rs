//! The training loop, read top to bottom as nanoGPT's `train.py` reads: per step,
//! the step's batches, the (masked) gradient, clipping, the scheduled rate, the
//! update in place on the backend; evaluation, sharpness and the resumable state at
//! their intervals.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::data::{BatchSize, TrainData, TrainDataRequest};
use super::optimizer::{Optimizer, OptimizerSettings, Schedule, clip_to_norm, norm};
use super::sharpness::{SharpnessRow, SharpnessSettings, measure};
use super::state::{self, Best, EvalRow, History, Saved, StepRow, Vectors};
use crate::backend::Scalar;
use crate::error::{Error, Result};
use crate::model::objective::ObjectiveBuffers;
use crate::model::{Objective, Opt, OptConfig};
use crate::probe::Restriction;
use crate::probe::device::{BackendJob, Device, Dtype, Engine, GpuOptions, SpectralBackend};
use crate::probe::evaluate::{Evaluation, evaluate};
use crate::probe::inputs::{HessianChoice, ModelInputs, Resolved};
use crate::progress::Progress;
use crate::report::Manifest;

/// A loss this many times the first step's, or not finite, ends a run as diverged.
pub const DIVERGENCE_FACTOR: f64 = 1e6;

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

struct TrainJob<'a> {
    request: &'a TrainRequest,
    manifest: Manifest,
    progress: &'a dyn Progress,
}

/// Sets the trained coordinates to `values`: at the mask prepared in `buffers`, or
/// every parameter when there is none (full fine-tuning).
fn set_trained<T: Scalar, B: SpectralBackend<T>>(
    model: &mut Opt<T, B>,
    buffers: &ObjectiveBuffers<T, B>,
    values: &[T],
) -> Result<()> {
    match buffers.mask_plan() {
        Some(plan) => model.set_at_mask(plan, values),
        None => model.set_params(values),
    }
}

/// Moves the trained coordinates `theta` by `delta` on the backend: in place at the
/// mask (`O(k)`), or by replacing every parameter with `theta + delta`.
fn move_trained<T: Scalar, B: SpectralBackend<T>>(
    model: &mut Opt<T, B>,
    buffers: &ObjectiveBuffers<T, B>,
    theta: &[T],
    delta: &[T],
) -> Result<()> {
    match buffers.mask_plan() {
        Some(plan) => model.add_at_mask(plan, delta),
        None => {
            let next: Vec<T> = theta.iter().zip(delta).map(|(&a, &d)| a + d).collect();
            model.set_params(&next)
        }
    }
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
        let model_inputs = ModelInputs::<T>::load(&request.model, None)?;
        let data = TrainData::load(&request.data, &model_inputs.dir, model_inputs.config())?;
        let resolved: Resolved = request.trained.resolve(model_inputs.layout())?;
        for (path, sha256, bytes) in &model_inputs.files {
            manifest.inputs.push(crate::report::manifest::InputRecord {
                role: "model".into(),
                path: path.display().to_string(),
                sha256: sha256.clone(),
                bytes: *bytes,
            });
        }
        for (role, file) in &data.files {
            manifest.add_input(role, file)?;
        }
        if let HessianChoice::File { path } = &request.trained {
            manifest.add_input("mask", path)?;
        }
        let key = serde_json::json!({
            "settings": settings,
            "model_sha256": model_inputs.sha256,
            "inputs": manifest.inputs.iter().map(|i| (i.role.clone(), i.sha256.clone())).collect::<Vec<_>>(),
            "trained": resolved.mask_sha256(),
            "data": {
                "train_examples": request.data.train_examples,
                "dev_examples": request.data.dev_examples,
                "test_examples": request.data.test_examples,
                "data_seed": request.data.data_seed,
            },
        });

        let config = model_inputs.config().clone();
        let params = model_inputs.checkpoint.params;
        let mut model = Opt::new(backend.clone(), config.clone(), &params)?;
        let masked_indices = match &resolved.restriction {
            Restriction::Indices(indices) => Some(indices.clone()),
            Restriction::Full => None,
        };
        // the pass buffers of the training steps, with the mask prepared once
        let mut buffers: ObjectiveBuffers<T, B> = match &masked_indices {
            Some(indices) => ObjectiveBuffers::with_mask(&model, indices)?,
            None => ObjectiveBuffers::default(),
        };
        let theta0: Vec<T> = match &masked_indices {
            Some(indices) => indices.iter().map(|&i| params[i as usize]).collect(),
            None => params.clone(),
        };
        let k = theta0.len();

        // the run so far: fresh, or as saved
        let (mut history, mut theta, mut optimizer, mut trajectory) = if request.resume {
            let saved = state::load(&request.out, &key)?;
            let mut optimizer = Optimizer::new(settings.optimizer.clone(), k);
            optimizer.steps = saved.history.optimizer_steps;
            if !saved.vectors.m.is_empty() {
                optimizer.m = saved.vectors.m;
            }
            if !saved.vectors.v.is_empty() {
                optimizer.v = saved.vectors.v;
            }
            let theta: Vec<T> = saved
                .vectors
                .theta
                .iter()
                .map(|&x| T::from_f64(x))
                .collect();
            if theta.len() != k {
                return Err(Error::arg("--resume", "the saved state has another size"));
            }
            (saved.history, theta, optimizer, saved.vectors.trajectory)
        } else {
            let history = History {
                step: 0,
                optimizer_steps: 0,
                initial_loss: None,
                running_loss: (0.0, 0),
                examples_seen: 0,
                best: None,
                steps: Vec::new(),
                evals: Vec::new(),
                sharpness: Vec::new(),
                trajectory_steps: Vec::new(),
                seconds: [0.0; 3],
            };
            let optimizer = Optimizer::new(settings.optimizer.clone(), k);
            (history, theta0.clone(), optimizer, Vec::new())
        };
        // the model at the saved state
        if history.step > 0 {
            set_trained(&mut model, &buffers, &theta)?;
        }
        let load_s = started.elapsed().as_secs_f64();

        let spe = data.steps_per_epoch(settings.batch, settings.grad_accum);
        let planned = match settings.length {
            Length::Epochs(e) => e * spe,
            Length::Steps(s) => s,
        };
        let schedule = Schedule {
            peak: settings.optimizer.lr,
            warmup_steps: settings.optimizer.warmup_steps,
        };
        let sharpness_batches = match &settings.sharpness {
            Some(s) => data.first_train(s.examples)?,
            None => Vec::new(),
        };
        let mut dev_buffers: ObjectiveBuffers<T, B> = ObjectiveBuffers::default();
        let to_f64 = |x: &[T]| x.iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
        let distance = |theta: &[T]| {
            theta
                .iter()
                .zip(&theta0)
                .map(|(a, b)| {
                    let d = a.to_f64() - b.to_f64();
                    d * d
                })
                .sum::<f64>()
                .sqrt()
        };
        let mut diverged = None;
        let mut interrupted = None;
        let mut order: Option<(usize, Vec<usize>)> = None;
        let clock = |seconds: &mut f64, since: Instant| *seconds += since.elapsed().as_secs_f64();

        // the sharpness before any update, and the trajectory's start
        if history.step == 0 {
            if let Some(s) = &settings.sharpness
                && history.sharpness.is_empty()
            {
                let t0 = Instant::now();
                let row = sharpness_row(
                    &model,
                    &sharpness_batches,
                    &resolved.restriction,
                    &optimizer,
                    s,
                    &schedule,
                    0,
                )?;
                history.sharpness.push(row);
                clock(&mut history.seconds[2], t0);
            }
            if settings.save_every.is_some() && history.trajectory_steps.is_empty() {
                history.trajectory_steps.push(0);
                trajectory.push(to_f64(&theta));
            }
        }

        progress.start(planned as u64, "train");
        progress.advance(history.step.min(planned) as u64);
        while history.step < planned {
            if progress.is_cancelled() {
                interrupted = Some(history.step);
                break;
            }
            let t = history.step;
            let t0 = Instant::now();
            let epoch = t / spe;
            if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                order = Some((epoch, data.epoch_order(settings.seed, epoch)));
            }
            let (_, epoch_order) = order.as_ref().expect("set just above"); // invariant: set just above
            let batches =
                data.step_batches(epoch_order, t % spe, settings.batch, settings.grad_accum);
            let examples: usize = batches.iter().map(|b| b.examples()).sum();
            let mut objective = Objective::with_buffers(&model, &batches, buffers)?;
            let (loss, grad) = if masked_indices.is_some() {
                objective.masked_gradient()?
            } else {
                objective.gradient()?
            };
            buffers = objective.into_buffers();
            let initial = *history.initial_loss.get_or_insert(loss);
            if !loss.is_finite() || loss > DIVERGENCE_FACTOR * initial {
                diverged = Some(Divergence {
                    step: t + 1,
                    loss,
                    reason: format!(
                        "the loss {loss:.6e} is not finite or above {DIVERGENCE_FACTOR:e} times the first step's {initial:.6e}"
                    ),
                });
                break;
            }
            let mut g = to_f64(&grad);
            let grad_norm = clip_to_norm(&mut g, settings.optimizer.clip);
            let lr = schedule.lr(t);
            let step = optimizer.step(&to_f64(&theta), &g, lr);
            let delta: Vec<T> = step.iter().map(|&d| T::from_f64(d)).collect();
            if let Err(e) = move_trained(&mut model, &buffers, &theta, &delta) {
                diverged = Some(Divergence {
                    step: t + 1,
                    loss,
                    reason: format!("the update is not finite ({e})"),
                });
                break;
            }
            for (a, &d) in theta.iter_mut().zip(&delta) {
                *a = *a + d;
            }
            history.step = t + 1;
            history.optimizer_steps = optimizer.steps;
            history.examples_seen += examples;
            history.running_loss.0 += loss;
            history.running_loss.1 += 1;
            history.steps.push(StepRow {
                step: t + 1,
                epoch,
                lr,
                train_loss: loss,
                grad_norm,
                update_norm: norm(&to_f64(&delta)),
                distance: distance(&theta),
            });
            clock(&mut history.seconds[0], t0);
            progress.advance(1);

            let step = history.step;
            if settings.save_every.is_some_and(|n| step.is_multiple_of(n)) {
                history.trajectory_steps.push(step);
                trajectory.push(to_f64(&theta));
            }
            if let Some(s) = &settings.sharpness
                && s.due(step)
            {
                let t1 = Instant::now();
                let row = sharpness_row(
                    &model,
                    &sharpness_batches,
                    &resolved.restriction,
                    &optimizer,
                    s,
                    &schedule,
                    step,
                )?;
                history.sharpness.push(row);
                clock(&mut history.seconds[2], t1);
            }
            let end_of_epoch = step.is_multiple_of(spe);
            let eval_due = match settings.eval_every {
                Some(n) => step.is_multiple_of(n),
                None => end_of_epoch,
            } || step == planned;
            if eval_due {
                let t2 = Instant::now();
                let (sum, count) = history.running_loss;
                history.running_loss = (0.0, 0);
                let dev = match &data.dev {
                    Some(split) => {
                        let mut o = Objective::with_buffers(&model, &split.batches, dev_buffers)?;
                        let e = evaluate(&mut o, &split.batches, &crate::progress::Silent)?;
                        dev_buffers = o.into_buffers();
                        Some(e)
                    }
                    None => None,
                };
                let row = EvalRow {
                    step,
                    epoch,
                    train_loss: sum / count.max(1) as f64,
                    dev_loss: dev.as_ref().map_or(f64::NAN, |e| e.loss),
                    dev_accuracy: dev
                        .as_ref()
                        .and_then(|e| e.accuracy.as_ref().map(|a| a.accuracy)),
                };
                let better = match (&history.best, &dev) {
                    (_, None) => true,
                    (None, Some(_)) => true,
                    (Some(best), Some(e)) => best.dev_loss.is_none_or(|b| e.loss < b),
                };
                if better {
                    history.best = Some(Best {
                        step,
                        dev_loss: dev.as_ref().map(|e| e.loss),
                        dev_accuracy: row.dev_accuracy,
                        theta: to_f64(&theta),
                    });
                }
                history.evals.push(row);
                clock(&mut history.seconds[1], t2);
                progress.note(&format!(
                    "step {step}: train loss {:.4}",
                    sum / count.max(1) as f64
                ));
                state::save(
                    &request.out,
                    &Saved {
                        key: key.clone(),
                        history: history.clone(),
                        vectors: Vectors {
                            theta: to_f64(&theta),
                            m: optimizer.m.clone(),
                            v: optimizer.v.clone(),
                            trajectory: trajectory.clone(),
                        },
                    },
                )?;
            }
        }
        if interrupted.is_some() {
            state::save(
                &request.out,
                &Saved {
                    key: key.clone(),
                    history: history.clone(),
                    vectors: Vectors {
                        theta: to_f64(&theta),
                        m: optimizer.m.clone(),
                        v: optimizer.v.clone(),
                        trajectory: trajectory.clone(),
                    },
                },
            )?;
        }

        // the best state (the last one when nothing was evaluated) and its test score
        let best = history.best.clone().unwrap_or_else(|| Best {
            step: history.step,
            dev_loss: None,
            dev_accuracy: None,
            theta: to_f64(&theta),
        });
        let best_theta: Vec<T> = best.theta.iter().map(|&x| T::from_f64(x)).collect();
        let t3 = Instant::now();
        let test = match (&data.test, interrupted) {
            (Some(split), None) => {
                set_trained(&mut model, &buffers, &best_theta)?;
                let mut o = Objective::new(&model, &split.batches)?;
                Some(evaluate(&mut o, &split.batches, &crate::progress::Silent)?)
            }
            _ => None,
        };
        clock(&mut history.seconds[1], t3);
        if interrupted.is_none() {
            state::remove(&request.out)?;
        }

        let subtract = |a: &[T]| -> Vec<f64> {
            a.iter()
                .zip(&theta0)
                .map(|(&x, &y)| (x - y).to_f64())
                .collect()
        };
        let delta_best = subtract(&best_theta);
        let delta_final = subtract(&theta);
        let model_out = if request.keep_model {
            let mut all: Vec<f64> = params.iter().map(|x| x.to_f64()).collect();
            match &masked_indices {
                Some(idx) => {
                    for (&i, &x) in idx.iter().zip(&best.theta) {
                        all[i as usize] = x;
                    }
                }
                None => all.clone_from(&best.theta),
            }
            Some((config, all))
        } else {
            None
        };
        let best_train_loss = history
            .evals
            .iter()
            .find(|e| e.step == best.step)
            .map(|e| e.train_loss);
        let total_s = started.elapsed().as_secs_f64();
        let [steps_s, evaluation_s, sharpness_s] = history.seconds;
        let summary = TrainSummary {
            settings: settings.clone(),
            model_sha256: model_inputs.sha256.clone(),
            parameters: params.len(),
            trained: resolved.description.clone(),
            trained_count: k,
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
            best_train_loss,
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
            indices: masked_indices,
            theta0: to_f64(&theta0),
            delta_best,
            delta_final,
            trajectory,
            model: model_out,
            inputs: manifest,
            interrupted,
        })
    }
}

/// The sharpness after `step` updates, beside the thresholds of the next update's rate.
#[allow(clippy::too_many_arguments)]
fn sharpness_row<T: Scalar, B: SpectralBackend<T>>(
    model: &Opt<T, B>,
    batches: &[crate::model::Batch],
    restriction: &Restriction,
    optimizer: &Optimizer,
    settings: &SharpnessSettings,
    schedule: &Schedule,
    step: usize,
) -> Result<SharpnessRow> {
    // Not cancellable: a Ctrl-C waits for the measurement and stops at the next
    // step boundary, where the state is saved.
    let p = optimizer.preconditioner();
    let ((lambda_max, residual, converged), pre) = measure(
        model,
        batches,
        restriction,
        p.as_deref(),
        settings,
        &crate::progress::Silent,
    )?;
    let lr = schedule.lr(step);
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
