//! Token log-probabilities: forward, JVP, VJP and the JVP of the VJP, the CUDA twin
//! of `backend/cpu/logprob.rs` (kernels in `kernels/logprob.cu`).
//!
//! Every kernel runs one block per row: a row's logsumexp and its dot products with
//! the softmax are block reductions over the vocabulary (50272 for OPT), and a block
//! per row keeps them deterministic without atomics.

use cudarc::driver::CudaSlice;

use super::runtime::{per_row, size};
use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

/// Threads per row: enough to stream a 50k vocabulary, few enough that the batch's
/// rows fill the device.
const THREADS: u32 = 256;

pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
    lp: DeviceViewMut<'_, T>,
    probs: DeviceViewMut<'_, T>,
    logits: DeviceView<'_, T>,
    targets: &CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) {
    debug_assert!(lp.len() >= rows && probs.len() >= rows * vocab && logits.len() >= rows * vocab);
    cuda.launch::<T>(
        "lp_forward",
        per_row(rows, THREADS),
        &[
            lp.ptr(),
            probs.ptr(),
            logits.ptr(),
            cuda.address(targets),
            size(vocab),
        ],
    );
}

pub(super) fn jvp<T: CudaScalar>(
    cuda: &Cuda,
    lp_dot: DeviceViewMut<'_, T>,
    probs: DeviceView<'_, T>,
    logits_dot: DeviceView<'_, T>,
    targets: &CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) {
    debug_assert!(
        lp_dot.len() >= rows && probs.len() >= rows * vocab && logits_dot.len() >= rows * vocab
    );
    cuda.launch::<T>(
        "lp_jvp",
        per_row(rows, THREADS),
        &[
            lp_dot.ptr(),
            probs.ptr(),
            logits_dot.ptr(),
            cuda.address(targets),
            size(vocab),
        ],
    );
}

pub(super) fn backward<T: CudaScalar>(
    cuda: &Cuda,
    dlogits: DeviceViewMut<'_, T>,
    probs: DeviceView<'_, T>,
    dlp: DeviceView<'_, T>,
    targets: &CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) {
    debug_assert!(
        dlogits.len() >= rows * vocab && probs.len() >= rows * vocab && dlp.len() >= rows
    );
    cuda.launch::<T>(
        "lp_backward",
        per_row(rows, THREADS),
        &[
            dlogits.ptr(),
            probs.ptr(),
            dlp.ptr(),
            cuda.address(targets),
            size(vocab),
        ],
    );
}

#[allow(clippy::too_many_arguments)]
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
    debug_assert!(
        dlogits_dot.len() >= rows * vocab
            && probs.len() >= rows * vocab
            && logits_dot.len() >= rows * vocab
            && dlp.len() >= rows
            && dlp_dot.len() >= rows
    );
    cuda.launch::<T>(
        "lp_backward_jvp",
        per_row(rows, THREADS),
        &[
            dlogits_dot.ptr(),
            probs.ptr(),
            logits_dot.ptr(),
            dlp.ptr(),
            dlp_dot.ptr(),
            cuda.address(targets),
            size(vocab),
        ],
    );
}
