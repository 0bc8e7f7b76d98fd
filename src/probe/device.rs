//! Where a probe runs and in which precision: one enum each, dispatched once to a
//! function generic over the scalar type and the backend. Adding the CUDA backend
//! means adding its arm to [`dispatch`]; nothing else changes.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Cpu, Scalar};
use crate::error::{Error, Result};

/// The device the engine runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

/// The element type the engine computes in (the spectral algorithms work in f64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    #[default]
    F64,
}

impl Dtype {
    /// The default Lanczos/power tolerance: what the precision can reach on a
    /// Hessian-vector product (f64 products agree with PyTorch to ~1e-13, f32 ones
    /// to ~1e-5).
    pub fn default_tolerance(self) -> f64 {
        match self {
            Dtype::F64 => 1e-8,
            Dtype::F32 => 1e-4,
        }
    }
}

/// Work that runs on any backend in any precision.
pub trait BackendJob {
    type Output;
    /// Runs the work on `backend` in precision `T`.
    fn run<T: Scalar, B: Backend<T> + Clone>(self, backend: B) -> Result<Self::Output>;
}

/// Runs `job` on `device` in `dtype`.
pub fn dispatch<J: BackendJob>(device: Device, dtype: Dtype, job: J) -> Result<J::Output> {
    match (device, dtype) {
        (Device::Cpu, Dtype::F32) => job.run::<f32, Cpu>(Cpu),
        (Device::Cpu, Dtype::F64) => job.run::<f64, Cpu>(Cpu),
        (Device::Cuda, _) => Err(Error::arg(
            "--device",
            "cuda is not available in this build yet (the CUDA backend is a later issue); \
             use --device cpu",
        )),
    }
}
