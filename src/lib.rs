//! maskscape: a workbench for the loss landscape of randomly masked fine-tuning.
//!
//! - [`theory`]: the overparameterized linear-regression lab of Xu & Zhang (2024).
//! - [`experiment`]: experiment specs and `reproduce`, which reruns them all.
//! - [`spectral`]: eigenvalues, spectral densities and traces of any linear operator.
//! - [`mask`]: random parameter masks as data.
//! - [`data`]: datasets, the paper's prompts, and tokenization into id-level examples.
//! - [`model`]: OPT checkpoints and their exact Hessian-vector products.
//! - [`probe`]: Hessian probes, landscapes and ratio sweeps of checkpoints on data.
//! - [`backend`]: the numerical backends the model runs on (CPU, and CUDA GPUs).
//! - [`report`]: tables, figures and run manifests.
//! - [`shard`]: sweep grids split over independent processes (array jobs).
//! - [`npy`]: NumPy `.npy` arrays, read with their declared size checked.
//! - [`scalar`], [`stats`], [`rng`]: the element types, trial statistics and seeded
//!   random streams every layer shares.
//! - [`cli`]: the `maskscape` command line.

pub mod backend;
pub mod cli;
pub mod data;
pub mod error;
pub mod experiment;
pub mod mask;
pub mod model;
pub mod npy;
pub mod probe;
pub mod progress;
pub mod report;
pub mod rng;
pub mod scalar;
pub mod shard;
pub mod spectral;
pub mod stats;
#[cfg(test)]
pub(crate) mod testing;
pub mod theory;
pub mod train;

pub use error::{Error, Result};
