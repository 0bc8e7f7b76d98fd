//! Products with a sparse weight (a masked tangent) and sampled weight gradients.

use cudarc::driver::CudaSlice;

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn matmul_nt<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    x: DeviceView<'_, T>,
    idx: &CudaSlice<u32>,
    values: DeviceView<'_, T>,
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    todo!("sparse::matmul_nt")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn matmul_nn<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    dy: DeviceView<'_, T>,
    idx: &CudaSlice<u32>,
    values: DeviceView<'_, T>,
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    todo!("sparse::matmul_nn")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn sampled_tn<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    a: DeviceView<'_, T>,
    b: DeviceView<'_, T>,
    idx: &CudaSlice<u32>,
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    todo!("sparse::sampled_tn")
}
