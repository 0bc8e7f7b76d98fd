//! Hessian probes of OPT checkpoints: the model engine, the data layer and the
//! spectral toolkit joined into what a researcher runs.
//!
//! - [`operator`]: the (masked, full or whole-scope) Hessian of the loss over a
//!   whole dataset as a [`crate::spectral::LinearOperator`], counting products.
//! - [`spectrum`]: Lanczos, power iteration, SLQ density and Hutch++ trace on it.
//! - [`history`]: convergence of the extreme eigenvalues product by product.
//! - [`evaluate`]: loss, accuracy and the regime the checkpoint is in.
//! - [`inputs`]: reading the checkpoint, the dataset and the mask, with hashes.
//! - [`session`]: one probe from files to a report ([`run_probe`]).
//! - [`output`]: the probe's files (summary, tables, figures, eigenvectors, manifest).
//! - [`landscape`]: the loss along directions in the masked subspace, beside its
//!   quadratic model.
//! - [`sweep`]: ratio x seed (x checkpoint) grids, cached cell by cell, against the
//!   interlacing ceiling, the trace identity and p-proportional scaling.
//! - [`device`]: the device and precision enums, dispatched once to generic code.
//! - [`memory`]: what a probe needs in memory, decided before the weights load.

pub mod device;
pub mod evaluate;
pub mod history;
pub mod inputs;
pub mod landscape;
pub mod memory;
pub mod operator;
pub mod output;
pub mod session;
pub mod spectrum;
pub mod sweep;
pub mod trajectory;
pub mod verify;

pub use device::{
    BackendJob, Device, Dtype, Engine, GpuOptions, GpuSummary, OnBackend, SpectralBackend, dispatch,
};
pub use evaluate::{Evaluation, Regime, evaluate};
pub use inputs::{DataInputs, DataRequest, HessianChoice, ModelInputs};
pub use landscape::{DirectionKind, Landscape, LandscapeOptions, LandscapeRequest, run_landscape};
pub use operator::{HessianOperator, Restriction};
pub use output::{ProbeOutputs, read_eigenvectors, write_probe};
pub use session::{ProbeReport, ProbeRequest, ProbeRun, run_probe};
pub use spectrum::{Method, ProbeOptions, SpectrumReport, probe_spectrum};
pub use sweep::{SweepResult, SweepSpec, run_sweep, run_sweep_shard, sweep_on_disk, write_sweep};
