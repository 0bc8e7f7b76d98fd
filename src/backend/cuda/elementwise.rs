//! Elementwise kernels: residual adds, scatter/gather at a mask, bias, ReLU
//! (`kernels/elementwise.cu`; CPU twins in `backend/cpu/elementwise.rs`).
//!
//! Every kernel but `bias_backward` runs one thread per element in blocks of 256.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::runtime::{elements, size};
use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

/// `dst += src`.
pub(super) fn add_assign<T: CudaScalar>(
    cuda: &Cuda,
    dst: DeviceViewMut<'_, T>,
    src: DeviceView<'_, T>,
) {
    assert_eq!(dst.len(), src.len(), "add_assign: lengths differ");
    let n = dst.len();
    cuda.launch::<T>(
        "ew_add_assign",
        elements(n),
        &[dst.ptr(), src.ptr(), size(n)],
    );
}

/// `dst[idx[i]] = values[i]`; the indices must be distinct (a mask's are), else the
/// value written at a repeated index is whichever thread ran last.
pub(super) fn scatter<T: CudaScalar>(
    cuda: &Cuda,
    dst: DeviceViewMut<'_, T>,
    idx: &CudaSlice<u32>,
    values: DeviceView<'_, T>,
) {
    assert_eq!(idx.len(), values.len(), "scatter: lengths differ");
    let n = idx.len();
    cuda.launch::<T>(
        "ew_scatter",
        elements(n),
        &[dst.ptr(), cuda.address(idx), values.ptr(), size(n)],
    );
}

/// `dst[i] += src[idx[i]]`.
pub(super) fn gather_add<T: CudaScalar>(
    cuda: &Cuda,
    dst: DeviceViewMut<'_, T>,
    idx: &CudaSlice<u32>,
    src: DeviceView<'_, T>,
) {
    assert_eq!(idx.len(), dst.len(), "gather_add: lengths differ");
    let n = dst.len();
    cuda.launch::<T>(
        "ew_gather_add",
        elements(n),
        &[dst.ptr(), cuda.address(idx), src.ptr(), size(n)],
    );
}

/// `out[r] += bias` for each of `rows` rows of `width`.
pub(super) fn bias_forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    bias: DeviceView<'_, T>,
    rows: usize,
    width: usize,
) {
    assert_eq!(bias.len(), width, "bias_forward: bias width");
    assert!(out.len() >= rows * width, "bias_forward: out too short");
    cuda.launch::<T>(
        "ew_bias_forward",
        elements(rows * width),
        &[out.ptr(), bias.ptr(), size(rows), size(width)],
    );
}

/// Threads per column in `ew_bias_backward` (its `EW_BIAS_LANES`).
const BIAS_LANES: u32 = 32;

/// `dbias += sum_r dout[r]`: one block of 32 x [`BIAS_LANES`] threads per 32
/// columns, each column summed in a fixed order (deterministic).
pub(super) fn bias_backward<T: CudaScalar>(
    cuda: &Cuda,
    dbias: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    rows: usize,
    width: usize,
) {
    assert_eq!(dbias.len(), width, "bias_backward: bias width");
    assert!(dout.len() >= rows * width, "bias_backward: dout too short");
    let config = LaunchConfig {
        grid_dim: (width.div_ceil(32) as u32, 1, 1),
        block_dim: (32, BIAS_LANES, 1),
        shared_mem_bytes: 0,
    };
    cuda.launch::<T>(
        "ew_bias_backward",
        config,
        &[dbias.ptr(), dout.ptr(), size(rows), size(width)],
    );
}

/// `out = max(inp, 0)`.
pub(super) fn relu_forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    inp: DeviceView<'_, T>,
) {
    assert_eq!(out.len(), inp.len(), "relu_forward: lengths differ");
    let n = out.len();
    cuda.launch::<T>(
        "ew_relu_forward",
        elements(n),
        &[out.ptr(), inp.ptr(), size(n)],
    );
}

/// `out = grad` where `inp > 0`, else 0.
pub(super) fn relu_backward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    inp: DeviceView<'_, T>,
    grad: DeviceView<'_, T>,
) {
    assert!(
        out.len() == inp.len() && inp.len() == grad.len(),
        "relu_backward: lengths differ"
    );
    let n = out.len();
    cuda.launch::<T>(
        "ew_relu_backward",
        elements(n),
        &[out.ptr(), inp.ptr(), grad.ptr(), size(n)],
    );
}

/// Zeroes `batch` matrices of `rows x cols` (row stride `ld`, matrix `i` at
/// `i * stride`) inside `c`: a GEMM's overwritten output when `k = 0`.
pub(super) fn zero_matrices<T: CudaScalar>(
    cuda: &Cuda,
    c: &DeviceViewMut<'_, T>,
    batch: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    stride: usize,
) {
    cuda.launch::<T>(
        "ew_zero_matrices",
        elements(batch * rows * cols),
        &[
            c.ptr(),
            size(batch),
            size(rows),
            size(cols),
            size(ld),
            size(stride),
        ],
    );
}
