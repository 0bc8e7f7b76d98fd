//! `maskscape train`: parse the flags, run [`crate::train`], write its outputs,
//! print what it found.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use serde::Serialize;

use super::MemoryArgs;
use super::probe::{DataFileArgs, HessianArgs};
use super::theory::with_threads;
use crate::error::{Error, Result};
use crate::probe::{Device, Dtype, GpuOptions};
use crate::progress::Progress;
use crate::report::Manifest;
use crate::report::table::format_float;
use crate::train::output::{TrainOutputs, write_train};
use crate::train::run::TrainSummary;
use crate::train::{
    BatchSize, Length, OptimizerKind, OptimizerSettings, SharpnessSettings, TrainDataRequest,
    TrainRequest, TrainSettings, run_train,
};

/// Exit status of a run stopped by Ctrl-C (its state saved for `--resume`).
const EXIT_INTERRUPTED: u8 = 130;

/// The test hook that stands in for Ctrl-C after a number of steps.
const STOP_AFTER_VARIABLE: &str = "MASKSCAPE_TRAIN_STOP_AFTER";

/// Fine-tune a checkpoint on the coordinates of a random mask (or a whole scope,
/// or every parameter), as the paper does: AdamW or SGD, warm-up, clipping, dev
/// evaluation, the best state by dev loss, test accuracy; tracks the distance from
/// the start and, on request, the sharpness. Writes summary.json, tables, figures,
/// delta.safetensors and a manifest to --out; Ctrl-C saves a state --resume
/// continues from.
#[derive(Args, Debug, Serialize)]
pub struct TrainArgs {
    /// A HuggingFace OPT checkpoint folder (the starting point).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    #[command(flatten)]
    data: DataFileArgs,
    /// Train on this many examples of the file (default: every one not in dev).
    #[arg(long)]
    train_examples: Option<usize>,
    /// Draw a dev split of this many examples from the training file (or from --dev).
    #[arg(long)]
    dev_examples: Option<usize>,
    /// A dev file (instead of a split of the training file).
    #[arg(long, value_name = "FILE")]
    dev: Option<PathBuf>,
    /// A test file, evaluated at the best state.
    #[arg(long, value_name = "FILE")]
    test: Option<PathBuf>,
    /// Draw this many test examples (default: all).
    #[arg(long)]
    test_examples: Option<usize>,
    /// Seed of the split draws.
    #[arg(long, default_value_t = 0)]
    data_seed: u64,
    /// Sequences per batch when evaluating (memory only).
    #[arg(long, default_value_t = 32)]
    eval_batch: usize,
    #[command(flatten)]
    trained: HessianArgs,
    #[arg(long, value_enum, default_value = "adamw")]
    optimizer: OptimizerKind,
    /// The peak learning rate.
    #[arg(long)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// Decoupled for AdamW, coupled for SGD.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// SGD's heavy-ball momentum.
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
    /// Steps of linear warm-up.
    #[arg(long, default_value_t = 2)]
    warmup_steps: usize,
    /// Clip the gradient's global norm over the trained coordinates (`none`: never).
    #[arg(long, default_value = "1.0")]
    clip: String,
    /// Epochs (default 5, the paper's).
    #[arg(long, conflicts_with = "steps")]
    epochs: Option<usize>,
    /// Steps instead of epochs.
    #[arg(long)]
    steps: Option<usize>,
    /// Examples per step, or `all` (full-batch gradient descent).
    #[arg(long, default_value = "8")]
    batch: String,
    /// Micro-batches per step (the step's gradient is their mean).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate on dev every this many steps (default: every epoch).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Measure the sharpness before training and every this many steps.
    #[arg(long)]
    sharpness_every: Option<usize>,
    /// The sharpness batch: the first this many train examples.
    #[arg(long, default_value_t = 32)]
    sharpness_examples: usize,
    /// Lanczos products per sharpness value.
    #[arg(long, default_value_t = 40)]
    sharpness_iters: usize,
    /// Lanczos tolerance of the sharpness (default: 1e-8 in f64, 1e-4 in f32).
    #[arg(long)]
    sharpness_tol: Option<f64>,
    /// Keep the trained coordinates every this many steps (trajectory.safetensors).
    #[arg(long)]
    save_every: Option<usize>,
    /// Also write the best state as a HuggingFace checkpoint folder.
    #[arg(long, value_name = "DIR")]
    save_model: Option<PathBuf>,
    /// The precision of the network's passes.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    gpu: GpuOptions,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Worker threads (default: all cores); results are the same for any count.
    #[arg(long)]
    threads: Option<usize>,
    /// Continue the interrupted run saved in --out (same flags).
    #[arg(long)]
    resume: bool,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl TrainArgs {
    fn request(&self) -> Result<TrainRequest> {
        let train = self.data.spec(None, self.data_seed)?;
        if self.eval_batch == 0 {
            return Err(Error::arg("--eval-batch", "must be at least 1"));
        }
        let clip = match self.clip.as_str() {
            "none" => None,
            text => Some(text.parse::<f64>().map_err(|_| {
                Error::arg(
                    "--clip",
                    format!("expected a number or `none`, got `{text}`"),
                )
            })?),
        };
        let batch = match self.batch.as_str() {
            "all" => BatchSize::All,
            text => BatchSize::Examples(text.parse::<usize>().map_err(|_| {
                Error::arg(
                    "--batch",
                    format!("expected a number or `all`, got `{text}`"),
                )
            })?),
        };
        let length = match (self.epochs, self.steps) {
            (_, Some(s)) => Length::Steps(s),
            (e, None) => Length::Epochs(e.unwrap_or(5)),
        };
        let sharpness = self.sharpness_every.map(|every| SharpnessSettings {
            every,
            examples: self.sharpness_examples,
            iters: self.sharpness_iters,
            tol: self.sharpness_tol.unwrap_or(self.dtype.default_tolerance()),
            seed: self.seed,
        });
        Ok(TrainRequest {
            model: self.model.clone(),
            data: TrainDataRequest {
                train,
                tokenizer: self.data.tokenizer.clone(),
                train_examples: self.train_examples,
                dev_examples: self.dev_examples,
                data_seed: self.data_seed,
                dev: self.dev.clone(),
                test: self.test.clone(),
                test_examples: self.test_examples,
                eval_rows: self.eval_batch,
            },
            trained: self.trained.choice(),
            settings: TrainSettings {
                optimizer: OptimizerSettings {
                    kind: self.optimizer,
                    lr: self.lr,
                    beta1: self.beta1,
                    beta2: self.beta2,
                    eps: self.eps,
                    weight_decay: self.weight_decay,
                    momentum: self.momentum,
                    warmup_steps: self.warmup_steps,
                    clip,
                },
                length,
                batch,
                grad_accum: self.grad_accum,
                seed: self.seed,
                eval_every: self.eval_every,
                sharpness,
                save_every: self.save_every,
                dtype: self.dtype,
                device: self.device,
            },
            gpu: self.gpu,
            out: self.out.clone(),
            resume: self.resume,
            keep_model: self.save_model.is_some(),
            memory: self.memory.mode(),
        })
    }
}

/// The terminal's progress, stopped after a number of steps when the test hook
/// asks (as Ctrl-C would stop it).
struct Bar {
    bar: super::BarProgress,
    stop_after: Option<u64>,
    done: AtomicU64,
}

impl Progress for Bar {
    fn start(&self, total: u64, label: &str) {
        self.bar.start(total, label);
    }
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
        self.bar.advance(n);
    }
    fn note(&self, message: &str) {
        self.bar.note(message);
    }
    fn is_cancelled(&self) -> bool {
        self.bar.is_cancelled()
            || self
                .stop_after
                .is_some_and(|n| self.done.load(Ordering::SeqCst) >= n)
    }
}

/// Runs `maskscape train`; returns the exit status (130 when interrupted).
pub fn run(args: TrainArgs) -> anyhow::Result<u8> {
    let request = args.request()?;
    let stop_after = match std::env::var(STOP_AFTER_VARIABLE) {
        Ok(v) => Some(v.parse::<u64>().map_err(|_| {
            Error::arg(
                STOP_AFTER_VARIABLE,
                format!("expected a step count, got `{v}`"),
            )
        })?),
        Err(_) => None,
    };
    let manifest = Manifest::new("train", Some(args.seed), &args)?;
    let progress = Bar {
        bar: super::BarProgress::new(),
        stop_after,
        done: AtomicU64::new(0),
    };
    let run = with_threads(args.threads, || run_train(&request, manifest, &progress))??;
    drop(progress);
    if let Some(step) = run.interrupted {
        eprintln!(
            "interrupted after step {step}: the state is saved in {}; run the same command \
             with --resume to continue",
            crate::train::state::dir(&args.out).display()
        );
        return Ok(EXIT_INTERRUPTED);
    }
    let stem = |name: &str| args.out.join(name);
    let written = write_train(
        &run,
        &TrainOutputs {
            dir: &args.out,
            figure_stem: &stem,
            timing: true,
            save_model: args.save_model.as_deref(),
        },
    )?;
    print_summary(&run.summary);
    println!("wrote {} files to {}", written.len(), args.out.display());
    Ok(0)
}

fn print_summary(s: &TrainSummary) {
    println!(
        "trained {} of {} parameters: {}",
        s.trained_count, s.parameters, s.trained
    );
    println!(
        "{} of {} steps ({} per epoch), {} examples seen; train {} / dev {} / test {} examples",
        s.steps,
        s.steps_planned,
        s.steps_per_epoch,
        s.examples_seen,
        s.examples.train,
        s.examples.dev.map_or("-".into(), |n| n.to_string()),
        s.examples.test.map_or("-".into(), |n| n.to_string()),
    );
    if let Some(d) = &s.diverged {
        println!("diverged at step {}: {}", d.step, d.reason);
    }
    let b = &s.best;
    match b.dev_loss {
        Some(loss) => println!(
            "best state: step {} (dev loss {}, dev accuracy {})",
            b.step,
            format_float(loss),
            b.dev_accuracy.map_or("-".into(), format_float)
        ),
        None => println!("best state: the last, step {} (no dev split)", b.step),
    }
    if let Some(t) = &s.test {
        println!("test at the best state: {}", t.describe());
    }
    println!(
        "distance ‖θ − θ₀‖: best {}, final {}",
        format_float(s.distance_best),
        format_float(s.distance_final)
    );
    if let Some(r) = &s.last_sharpness {
        let pre = match r.preconditioned {
            Some(p) => format!(
                "; preconditioned {} against (2+2β₁)/((1−β₁)η) = {}",
                format_float(p),
                format_float(r.threshold)
            ),
            None => String::new(),
        };
        println!(
            "sharpness after step {}: λmax {} (residual {:.1e}) against 2/η = {}{pre}",
            r.step,
            format_float(r.lambda_max),
            r.residual,
            format_float(r.gd_threshold)
        );
    }
    if let Some(t) = &s.timing {
        println!(
            "wall {:.2} s = load {:.2} + steps {:.2} ({:.1} ms each) + evaluation {:.2} + sharpness {:.2}",
            t.total_s, t.load_s, t.steps_s, t.ms_per_step, t.evaluation_s, t.sharpness_s
        );
    }
}
