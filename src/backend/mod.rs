//! Numerical backends the model is written against: `cpu` now, `cuda` later.
//!
//! [`Backend`] is the whole contract between the model and a device: memory, one
//! strided batched GEMM, and the kernels of the ops (each with its four rules).

pub mod cpu;
pub mod kernels;
pub mod scalar;

pub use cpu::Cpu;
pub use kernels::{AttentionDims, Backend, Gemm, NO_TARGET};
pub use scalar::Scalar;
