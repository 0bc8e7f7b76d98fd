//! The strided batched GEMM through cuBLAS.

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};
use crate::backend::Gemm;

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn gemm<T: CudaScalar>(
    cuda: &Cuda,
    spec: &Gemm,
    a: DeviceView<'_, T>,
    b: DeviceView<'_, T>,
    c: DeviceViewMut<'_, T>,
) {
    todo!("blas::gemm")
}
