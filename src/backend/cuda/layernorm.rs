//! LayerNorm: forward, JVP, VJP and the JVP of the VJP.

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    mean: DeviceViewMut<'_, T>,
    rstd: DeviceViewMut<'_, T>,
    inp: DeviceView<'_, T>,
    weight: Option<DeviceView<'_, T>>,
    bias: Option<DeviceView<'_, T>>,
    rows: usize,
    width: usize,
    eps: f64,
) {
    todo!("layernorm::forward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn jvp<T: CudaScalar>(
    cuda: &Cuda,
    out_dot: DeviceViewMut<'_, T>,
    inp: DeviceView<'_, T>,
    inp_dot: DeviceView<'_, T>,
    mean: DeviceView<'_, T>,
    rstd: DeviceView<'_, T>,
    weight: Option<DeviceView<'_, T>>,
    weight_dot: Option<DeviceView<'_, T>>,
    bias_dot: Option<DeviceView<'_, T>>,
    rows: usize,
    width: usize,
) {
    todo!("layernorm::jvp")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward<T: CudaScalar>(
    cuda: &Cuda,
    dinp: DeviceViewMut<'_, T>,
    dweight: Option<DeviceViewMut<'_, T>>,
    dbias: Option<DeviceViewMut<'_, T>>,
    dout: DeviceView<'_, T>,
    inp: DeviceView<'_, T>,
    mean: DeviceView<'_, T>,
    rstd: DeviceView<'_, T>,
    weight: Option<DeviceView<'_, T>>,
    rows: usize,
    width: usize,
) {
    todo!("layernorm::backward")
}

#[allow(clippy::too_many_arguments, unused_variables)]
pub(super) fn backward_jvp<T: CudaScalar>(
    cuda: &Cuda,
    dinp_dot: DeviceViewMut<'_, T>,
    dweight_dot: Option<DeviceViewMut<'_, T>>,
    dbias_dot: Option<DeviceViewMut<'_, T>>,
    dout: DeviceView<'_, T>,
    dout_dot: DeviceView<'_, T>,
    inp: DeviceView<'_, T>,
    inp_dot: DeviceView<'_, T>,
    mean: DeviceView<'_, T>,
    rstd: DeviceView<'_, T>,
    weight: Option<DeviceView<'_, T>>,
    weight_dot: Option<DeviceView<'_, T>>,
    rows: usize,
    width: usize,
) {
    todo!("layernorm::backward_jvp")
}
