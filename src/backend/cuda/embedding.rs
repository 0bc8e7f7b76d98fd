//! Embedding lookups, their scatter-add adjoints, and the sparse variants
//! (`kernels/embedding.cu`; CPU twins in `backend/cpu/embedding.rs`).
//!
//! Every kernel runs in blocks of 256 threads: `forward` and `backward` one thread
//! per element of the `rows x width` activation, the sparse variants one thread per
//! table entry looping over the rows. All four are deterministic (no atomics).

use cudarc::driver::CudaSlice;

use super::runtime::{elements, size};
use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

/// `out[r] = table[ids[r]]`, or `+=` when `accumulate`.
pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    ids: &CudaSlice<u32>,
    table: DeviceView<'_, T>,
    rows: usize,
    width: usize,
    accumulate: bool,
) {
    assert!(
        ids.len() >= rows && out.len() >= rows * width,
        "embedding_forward: operands too short"
    );
    cuda.launch::<T>(
        "emb_forward",
        elements(rows * width),
        &[
            out.ptr(),
            cuda.address(ids),
            table.ptr(),
            size(rows),
            size(width),
            u64::from(accumulate),
        ],
    );
}

/// `dtable[ids[r]] += dout[r]`. Each touched table element is owned by the thread
/// of its first row, which adds the rows in order (the CPU's order), following the
/// chain of rows with the same id that a first kernel links (`O(rows^2)` compares
/// in all, not per element).
pub(super) fn backward<T: CudaScalar>(
    cuda: &Cuda,
    dtable: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    ids: &CudaSlice<u32>,
    rows: usize,
    width: usize,
) {
    assert!(
        ids.len() >= rows && dout.len() >= rows * width,
        "embedding_backward: operands too short"
    );
    // Freed stream-ordered when it drops, after both launches.
    let chain = match cuda.alloc_zeros::<u32>(2 * rows) {
        Ok(chain) => chain,
        Err(e) => return cuda.latch(format!("embedding_backward scratch: {e}")),
    };
    cuda.launch::<T>(
        "emb_chain",
        elements(rows),
        &[cuda.address(&chain), cuda.address(ids), size(rows)],
    );
    cuda.launch::<T>(
        "emb_backward",
        elements(rows * width),
        &[
            dtable.ptr(),
            dout.ptr(),
            cuda.address(ids),
            cuda.address(&chain),
            size(rows),
            size(width),
        ],
    );
}

/// `out[r, c] += values[e]` for every entry `e = (ids[r], c)` (flat index `idx[e]`,
/// distinct). Cost `O(nnz * rows)`.
pub(super) fn forward_sparse<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    ids: &CudaSlice<u32>,
    idx: &CudaSlice<u32>,
    values: DeviceView<'_, T>,
    rows: usize,
    width: usize,
) {
    assert_eq!(
        idx.len(),
        values.len(),
        "embedding_forward_sparse: idx and values differ"
    );
    assert!(
        ids.len() >= rows && out.len() >= rows * width,
        "embedding_forward_sparse: operands too short"
    );
    let nnz = idx.len();
    cuda.launch::<T>(
        "emb_forward_sparse",
        elements(nnz),
        &[
            out.ptr(),
            cuda.address(ids),
            cuda.address(idx),
            values.ptr(),
            size(nnz),
            size(rows),
            size(width),
        ],
    );
}

/// `out[e] += sum_{r: ids[r] = j_e} dout[r, c_e]`. Cost `O(nnz * rows)`.
pub(super) fn backward_sampled<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    dout: DeviceView<'_, T>,
    ids: &CudaSlice<u32>,
    idx: &CudaSlice<u32>,
    rows: usize,
    width: usize,
) {
    assert_eq!(
        idx.len(),
        out.len(),
        "embedding_backward_sampled: idx and out differ"
    );
    assert!(
        ids.len() >= rows && dout.len() >= rows * width,
        "embedding_backward_sampled: operands too short"
    );
    let nnz = idx.len();
    cuda.launch::<T>(
        "emb_backward_sampled",
        elements(nnz),
        &[
            out.ptr(),
            dout.ptr(),
            cuda.address(ids),
            cuda.address(idx),
            size(nnz),
            size(rows),
            size(width),
        ],
    );
}
