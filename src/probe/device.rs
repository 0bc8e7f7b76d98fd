//! Where a probe runs and in which precision: one enum each, dispatched once to a
//! function generic over the scalar type and the backend. [`Engine::open`] turns a
//! [`Device`] (and, for a GPU, its [`GpuOptions`]) into the backend itself; running a
//! job on it picks the precision.

use serde::{Deserialize, Serialize};

use super::history::HistorySpace;
use super::operator::HessianOperator;
use crate::backend::cpu::CpuScalar;
use crate::backend::cuda::{CudaScalar, CudaSpace};
use crate::backend::{Backend, Cpu, Cuda, Scalar};
use crate::error::{Error, Result};
use crate::spectral::{HostSpace, LinearOperator, OperatorOn, VectorSpace};

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
    fn run<T: Scalar, B: SpectralBackend<T>>(self, backend: B) -> Result<Self::Output>;
}

/// A backend together with the vector space its Hessian acts on: the host for the
/// CPU, device memory for CUDA, so that the spectral algorithms keep their vectors
/// where the products run. Wrap a [`HessianOperator`] in [`OnBackend`] to hand it
/// to an algorithm with [`SpectralBackend::space`].
pub trait SpectralBackend<T: Scalar>: Backend<T> + Clone {
    /// Where the spectral algorithms' vectors live.
    type Space: HistorySpace;
    /// The space `R^dim` on this backend's device.
    fn space(&self, dim: usize) -> Result<Self::Space>;
    /// `y = H x` for vectors of `space`.
    fn apply_hessian(
        op: &HessianOperator<'_, T, Self>,
        space: &Self::Space,
        x: &<Self::Space as VectorSpace>::Vector,
        y: &mut <Self::Space as VectorSpace>::Vector,
    ) -> Result<()>;
}

impl<T: CpuScalar> SpectralBackend<T> for Cpu {
    type Space = HostSpace;

    fn space(&self, dim: usize) -> Result<HostSpace> {
        Ok(HostSpace::new(dim))
    }

    fn apply_hessian(
        op: &HessianOperator<'_, T, Self>,
        space: &HostSpace,
        x: &Vec<f64>,
        y: &mut Vec<f64>,
    ) -> Result<()> {
        OperatorOn::<HostSpace>::apply_in(op, space, x, y)
    }
}

impl<T: CudaScalar> SpectralBackend<T> for Cuda {
    type Space = CudaSpace;

    fn space(&self, dim: usize) -> Result<CudaSpace> {
        Ok(CudaSpace::new(self.clone(), dim))
    }

    fn apply_hessian(
        op: &HessianOperator<'_, T, Self>,
        space: &CudaSpace,
        x: &<CudaSpace as VectorSpace>::Vector,
        y: &mut <CudaSpace as VectorSpace>::Vector,
    ) -> Result<()> {
        OperatorOn::<CudaSpace>::apply_in(op, space, x, y)
    }
}

/// The Hessian of a model on the CUDA backend, applied to device-resident f64
/// vectors: the input is cast to the model's precision on the device (scattered
/// into the zero N-vector on the gathered path), the product runs on the model's
/// buffers, and the output is cast (gathered) back. The only host traffic is one
/// reduction that rejects non-finite products, as the host path does. `space` must
/// be on the model's device.
impl<T: CudaScalar> OperatorOn<CudaSpace> for HessianOperator<'_, T, Cuda> {
    fn dim(&self) -> usize {
        LinearOperator::dim(self)
    }

    fn name(&self) -> String {
        LinearOperator::name(self)
    }

    fn apply_in(
        &self,
        space: &CudaSpace,
        x: &<CudaSpace as VectorSpace>::Vector,
        y: &mut <CudaSpace as VectorSpace>::Vector,
    ) -> Result<()> {
        let n = LinearOperator::dim(self);
        if space.dim() != n {
            return Err(Error::ShapeMismatch {
                name: "Hessian operand".into(),
                expected: vec![n],
                found: vec![space.dim()],
            });
        }
        // Counted inside the product, so its synchronization makes the product's
        // time the device's time, not the launches'.
        let mut nonfinite = 0;
        self.apply_on_backend(
            |_, input, index| space.cast_into(x, input, index),
            |_, output, index| {
                space.cast_from(output, y, index)?;
                nonfinite = space.count_nonfinite(y)?;
                Ok(())
            },
        )?;
        if nonfinite > 0 {
            let host = space.download(y)?;
            let i = host.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(Error::NonFinite(format!(
                "entry {i} of a Hessian-vector product (overflow in {}? try --dtype f64)",
                T::NAME
            )));
        }
        Ok(())
    }
}

/// A [`HessianOperator`] acting on the vectors of its backend's space (see
/// [`SpectralBackend`]); its products run in the model's precision, which it
/// reports to the algorithms.
pub struct OnBackend<'a, 'm, T: Scalar, B: Backend<T>>(pub &'a HessianOperator<'m, T, B>);

impl<T: Scalar, B: SpectralBackend<T>> OperatorOn<B::Space> for OnBackend<'_, '_, T, B> {
    fn dim(&self) -> usize {
        LinearOperator::dim(self.0)
    }

    fn name(&self) -> String {
        LinearOperator::name(self.0)
    }

    fn apply_in(
        &self,
        space: &B::Space,
        x: &<B::Space as VectorSpace>::Vector,
        y: &mut <B::Space as VectorSpace>::Vector,
    ) -> Result<()> {
        B::apply_hessian(self.0, space, x, y)
    }

    fn precision(&self) -> f64 {
        LinearOperator::precision(self.0)
    }
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
