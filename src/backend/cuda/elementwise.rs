//! Elementwise kernels: residual adds, scatter/gather at a mask, bias, ReLU.

use cudarc::driver::CudaSlice;

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn add_assign<T: CudaScalar>(
    cuda: &Cuda,
    dst: DeviceViewMut<'_, T>,
    src: DeviceView<'_, T>,
) {
    todo!("elementwise::add_assign")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn scatter<T: CudaScalar>(
    cuda: &Cuda,
    dst: DeviceViewMut<'_, T>,
    idx: &CudaSlice<u32>,
    values: DeviceView<'_, T>,
) {
    todo!("elementwise::scatter")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn gather_add<T: CudaScalar>(
    cuda: &Cuda,
    dst: DeviceViewMut<'_, T>,
    idx: &CudaSlice<u32>,
    src: DeviceView<'_, T>,
) {
    todo!("elementwise::gather_add")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn bias_forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    bias: DeviceView<'_, T>,
    rows: usize,
    width: usize,
) {
    todo!("elementwise::bias_forward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn bias_backward<T: CudaScalar>(
    cuda: &Cuda,
    dbias: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    rows: usize,
    width: usize,
) {
    todo!("elementwise::bias_backward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn relu_forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    inp: DeviceView<'_, T>,
) {
    todo!("elementwise::relu_forward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn relu_backward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    inp: DeviceView<'_, T>,
    grad: DeviceView<'_, T>,
) {
    todo!("elementwise::relu_backward")
}
