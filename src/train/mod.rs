//! Masked fine-tuning: the paper's training protocol on the engine's masked
//! gradient, so the workbench makes the solutions whose landscapes it measures.
//!
//! Only the trained coordinates move: a mask's k entries (optimizer state and
//! updates are k-vectors, the gradient is the masked gradient, no N-vector is
//! formed), every entry of a scope, or all N parameters (full fine-tuning, the
//! paper's FT baseline).
//!
//! - [`data`]: the splits, the data order and each step's batches;
//! - [`optimizer`]: AdamW and SGD as PyTorch steps them, the warm-up, clipping;
//! - [`sharpness`]: the Hessian's largest eigenvalue (and Adam's preconditioned
//!   one) during training, beside the stability thresholds;
//! - [`trainer`]: one step (gradient, clipping, update in place);
//! - [`state`]: what `--resume` continues from;
//! - [`bisect`]: the divergence threshold of gradient descent, by bisection on the rate;
//! - [`stability`]: that threshold in a network against 2/lambda_max, per mask, and
//!   the sharpness along GD runs (cells cached like the probe sweep's);
//! - [`run`] the loop, [`output`] what a run writes, [`bench`] a step's timing;
//! - [`sweep`]: grids of runs (checkpoints x ratios x learning rates x seeds) with
//!   the masked Hessian before and after each, cached and shardable.

pub mod bench;
pub mod bisect;
pub mod data;
pub mod optimizer;
pub mod output;
pub mod run;
pub mod sharpness;
pub mod stability;
pub mod state;
pub mod sweep;
pub mod trainer;

pub use data::{BatchSize, TrainDataRequest};
pub use optimizer::{OptimizerKind, OptimizerSettings};
pub use run::{Length, TrainRequest, TrainRun, TrainSettings, run_train, run_train_on};
pub use sharpness::SharpnessSettings;
