//! Numerical backends the model is written against: `cpu`, and `cuda` (NVIDIA GPUs through cudarc).
//!
//! [`Backend`] is the whole contract between the model and a device: memory, one
//! strided batched GEMM, and the kernels of the ops (each with its four rules).

pub mod cpu;
pub mod cuda;
pub mod kernels;

pub use crate::scalar::Scalar;
pub use cpu::Cpu;
pub use cuda::Cuda;
pub use kernels::{AttentionDims, Backend, Gemm, NO_TARGET};
