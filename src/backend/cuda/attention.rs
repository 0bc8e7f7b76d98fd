//! Causal self-attention with a key padding mask: its four rules.

use cudarc::driver::CudaSlice;

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};
use crate::backend::AttentionDims;

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    probs: DeviceViewMut<'_, T>,
    q: DeviceView<'_, T>,
    k: DeviceView<'_, T>,
    v: DeviceView<'_, T>,
    key_mask: &CudaSlice<u32>,
    dims: AttentionDims,
) {
    todo!("attention::forward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn jvp<T: CudaScalar>(
    cuda: &Cuda,
    out_dot: DeviceViewMut<'_, T>,
    probs_dot: DeviceViewMut<'_, T>,
    probs: DeviceView<'_, T>,
    q: DeviceView<'_, T>,
    k: DeviceView<'_, T>,
    v: DeviceView<'_, T>,
    q_dot: DeviceView<'_, T>,
    k_dot: DeviceView<'_, T>,
    v_dot: DeviceView<'_, T>,
    dims: AttentionDims,
) {
    todo!("attention::jvp")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward<T: CudaScalar>(
    cuda: &Cuda,
    dq: DeviceViewMut<'_, T>,
    dk: DeviceViewMut<'_, T>,
    dv: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    probs: DeviceView<'_, T>,
    q: DeviceView<'_, T>,
    k: DeviceView<'_, T>,
    v: DeviceView<'_, T>,
    dims: AttentionDims,
) {
    todo!("attention::backward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward_jvp<T: CudaScalar>(
    cuda: &Cuda,
    dq_dot: DeviceViewMut<'_, T>,
    dk_dot: DeviceViewMut<'_, T>,
    dv_dot: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    dout_dot: DeviceView<'_, T>,
    probs: DeviceView<'_, T>,
    probs_dot: DeviceView<'_, T>,
    q: DeviceView<'_, T>,
    k: DeviceView<'_, T>,
    v: DeviceView<'_, T>,
    q_dot: DeviceView<'_, T>,
    k_dot: DeviceView<'_, T>,
    v_dot: DeviceView<'_, T>,
    dims: AttentionDims,
) {
    todo!("attention::backward_jvp")
}
