//! Embedding lookups, their scatter-add adjoints, and the sparse variants.

use cudarc::driver::CudaSlice;

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    ids: &CudaSlice<u32>,
    table: DeviceView<'_, T>,
    rows: usize,
    width: usize,
    accumulate: bool,
) {
    todo!("embedding::forward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward<T: CudaScalar>(
    cuda: &Cuda,
    dtable: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    ids: &CudaSlice<u32>,
    rows: usize,
    width: usize,
) {
    todo!("embedding::backward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn forward_sparse<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    ids: &CudaSlice<u32>,
    idx: &CudaSlice<u32>,
    values: DeviceView<'_, T>,
    rows: usize,
    width: usize,
) {
    todo!("embedding::forward_sparse")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward_sampled<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    ids: &CudaSlice<u32>,
    idx: &CudaSlice<u32>,
    rows: usize,
    width: usize,
) {
    todo!("embedding::backward_sampled")
}
