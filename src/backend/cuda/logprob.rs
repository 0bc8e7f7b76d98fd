//! Token log-probabilities: forward, JVP, VJP and the JVP of the VJP.

use cudarc::driver::CudaSlice;

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
    lp: DeviceViewMut<'_, T>,
    probs: DeviceViewMut<'_, T>,
    logits: DeviceView<'_, T>,
    targets: &CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) {
    todo!("logprob::forward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn jvp<T: CudaScalar>(
    cuda: &Cuda,
    lp_dot: DeviceViewMut<'_, T>,
    probs: DeviceView<'_, T>,
    logits_dot: DeviceView<'_, T>,
    targets: &CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) {
    todo!("logprob::jvp")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward<T: CudaScalar>(
    cuda: &Cuda,
    dlogits: DeviceViewMut<'_, T>,
    probs: DeviceView<'_, T>,
    dlp: DeviceView<'_, T>,
    targets: &CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) {
    todo!("logprob::backward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward_jvp<T: CudaScalar>(
    cuda: &Cuda,
    dlogits_dot: DeviceViewMut<'_, T>,
    probs: DeviceView<'_, T>,
    logits_dot: DeviceView<'_, T>,
    dlp: DeviceView<'_, T>,
    dlp_dot: DeviceView<'_, T>,
    targets: &CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) {
    todo!("logprob::backward_jvp")
}
