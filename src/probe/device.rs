//! Where a probe runs and in which precision: one enum each, dispatched once to a
//! function generic over the scalar type and the backend. [`Engine::open`] turns a
//! [`Device`] (and, for a GPU, its [`GpuOptions`]) into the backend itself; running a
//! job on it picks the precision.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Cpu, Cuda, Scalar};
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

/// Which GPU `--device cuda` opens and how its f32 products run (the flags `--gpu`
/// and `--tf32`; `gpu = { ordinal = 1, tf32 = true }` in a spec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct GpuOptions {
    /// The CUDA device ordinal (with --device cuda).
    #[arg(long = "gpu", value_name = "N", default_value_t = 0)]
    pub ordinal: usize,
    /// Let f32 matrix products run on TF32 tensor cores (with --device cuda): faster,
    /// about 1e-3 relative error. Off by default; outputs record it.
    #[arg(long)]
    pub tf32: bool,
}

/// A device, opened: the backend a job runs on.
#[derive(Clone)]
pub enum Engine {
    Cpu,
    Cuda(Cuda),
}

/// What the outputs record about the GPU a run used (absent on the CPU).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuSummary {
    /// Name, architecture and ordinal, e.g. `NVIDIA H100 80GB HBM3 (sm_90, device 0)`.
    pub description: String,
    /// Whether f32 products ran on TF32 tensor cores.
    pub tf32: bool,
}

impl Engine {
    /// Opens `device`. For CUDA this loads the driver, NVRTC and cuBLAS, opens
    /// device `gpu.ordinal` and compiles the kernels (about a second); without them
    /// it is one [`Error::Device`] naming what is missing.
    pub fn open(device: Device, gpu: GpuOptions) -> Result<Engine> {
        match device {
            Device::Cpu if gpu.tf32 => Err(Error::arg(
                "--tf32",
                "applies to --device cuda only (the CPU computes f32 products in f32)",
            )),
            Device::Cpu => Ok(Engine::Cpu),
            Device::Cuda => Ok(Engine::Cuda(Cuda::new(gpu.ordinal, gpu.tf32)?)),
        }
    }

    /// The GPU as the outputs record it; `None` on the CPU.
    pub fn gpu_summary(&self) -> Option<GpuSummary> {
        match self {
            Engine::Cpu => None,
            Engine::Cuda(cuda) => Some(GpuSummary {
                description: cuda.description().to_string(),
                tf32: cuda.tf32(),
            }),
        }
    }

    /// One line for messages: `cpu`, or the GPU's description and whether TF32 is on.
    pub fn describe(&self) -> String {
        match self.gpu_summary() {
            None => "cpu".to_string(),
            Some(gpu) if gpu.tf32 => format!("cuda: {}, TF32 f32 products", gpu.description),
            Some(gpu) => format!("cuda: {}", gpu.description),
        }
    }

    /// Runs `job` on this device in `dtype`.
    pub fn run<J: BackendJob>(&self, dtype: Dtype, job: J) -> Result<J::Output> {
        match (self, dtype) {
            (Engine::Cpu, Dtype::F32) => job.run::<f32, Cpu>(Cpu),
            (Engine::Cpu, Dtype::F64) => job.run::<f64, Cpu>(Cpu),
            (Engine::Cuda(cuda), Dtype::F32) => job.run::<f32, Cuda>(cuda.clone()),
            (Engine::Cuda(cuda), Dtype::F64) => job.run::<f64, Cuda>(cuda.clone()),
        }
    }
}

/// Work that runs on any backend in any precision.
pub trait BackendJob {
    type Output;
    /// Runs the work on `backend` in precision `T`.
    fn run<T: Scalar, B: Backend<T> + Clone>(self, backend: B) -> Result<Self::Output>;
}

/// Opens `device` (see [`Engine::open`]) and runs `job` on it in `dtype`.
pub fn dispatch<J: BackendJob>(
    device: Device,
    gpu: GpuOptions,
    dtype: Dtype,
    job: J,
) -> Result<J::Output> {
    Engine::open(device, gpu)?.run(dtype, job)
}
