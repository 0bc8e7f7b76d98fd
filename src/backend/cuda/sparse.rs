//! Products with a sparse weight (a masked tangent) and sampled weight gradients
//! (`kernels/sparse.cu`; CPU twins in `backend/cpu/sparse.rs`).
//!
//! Entry `e` of the sparse `out_dim x in_dim` matrix sits at the flat index
//! `idx[e] = o_e * in_dim + i_e`; `matmul_nt` needs the indices sorted ascending (a
//! mask's are). Launch geometry:
//! - `matmul_nt`: x over outputs `o` (256 per block), y over chunks of
//!   [`ROW_CHUNK`] rows. Deterministic (no atomics).
//! - `matmul_nn`: x over entries (256 per block), y over row chunks. Uses atomicAdd,
//!   so the last bits may vary between runs.
//! - `sampled_tn`: one warp per entry (8 per block of 256), its lanes splitting
//!   the rows, on transposed copies of both operands unless the mask is tiny.
//!   Deterministic.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::runtime::{elements, size};
use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};

/// Rows per thread in the row-chunked kernels (the kernels' `SPARSE_ROW_CHUNK`).
const ROW_CHUNK: usize = 8;

/// The most blocks along grid dimension y; the kernels stride over further chunks.
const MAX_GRID_Y: usize = 65_535;

/// A launch with `x` threads along x (blocks of 256) and one block row per chunk of
/// [`ROW_CHUNK`] rows (at most [`MAX_GRID_Y`]), and the chunk count to pass.
fn row_chunked(x: usize, rows: usize) -> (LaunchConfig, u64) {
    let chunks = rows.div_ceil(ROW_CHUNK);
    let config = LaunchConfig {
        grid_dim: (x.div_ceil(256) as u32, chunks.min(MAX_GRID_Y) as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    (config, size(chunks))
}

/// `out[r, o] += sum_e values[e] * x[r, i_e]`; `idx` sorted ascending. Cost: two
/// binary searches per output, then `O(nnz * rows)`.
#[allow(clippy::too_many_arguments)]
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
    assert_eq!(
        idx.len(),
        values.len(),
        "sparse_matmul_nt: idx and values differ"
    );
    assert!(
        out.len() >= rows * out_dim && x.len() >= rows * in_dim,
        "sparse_matmul_nt: operands too short"
    );
    if idx.is_empty() {
        return;
    }
    let (config, chunks) = row_chunked(out_dim, rows);
    cuda.launch::<T>(
        "sparse_matmul_nt",
        config,
        &[
            out.ptr(),
            x.ptr(),
            cuda.address(idx),
            values.ptr(),
            size(idx.len()),
            size(rows),
            size(out_dim),
            size(in_dim),
            chunks,
        ],
    );
}

/// `out[r, i_e] += values[e] * dy[r, o_e]`, through atomicAdd (see the module doc).
/// Cost `O(nnz * rows)`.
#[allow(clippy::too_many_arguments)]
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
    assert_eq!(
        idx.len(),
        values.len(),
        "sparse_matmul_nn: idx and values differ"
    );
    assert!(
        out.len() >= rows * in_dim && dy.len() >= rows * out_dim,
        "sparse_matmul_nn: operands too short"
    );
    let (config, chunks) = row_chunked(idx.len(), rows);
    cuda.launch::<T>(
        "sparse_matmul_nn",
        config,
        &[
            out.ptr(),
            dy.ptr(),
            cuda.address(idx),
            values.ptr(),
            size(idx.len()),
            size(rows),
            size(out_dim),
            size(in_dim),
            chunks,
        ],
    );
}

/// Threads per entry in `sparse_sampled_tn` (one warp).
const WARP: usize = 32;

/// `out[e] += sum_r a[r, o_e] * b[r, i_e]`. Cost `O(nnz * rows)`.
#[allow(clippy::too_many_arguments)]
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
    assert_eq!(
        idx.len(),
        out.len(),
        "sampled_matmul_tn: idx and out differ"
    );
    assert!(
        a.len() >= rows * out_dim && b.len() >= rows * in_dim,
        "sampled_matmul_tn: operands too short"
    );
    let nnz = idx.len();
    // Transposing reads each operand once, coalesced; the direct kernel reads a cache
    // line per term. Worth it unless the mask keeps very few entries.
    if nnz * 8 >= out_dim + in_dim {
        if let (Some(at), Some(bt)) = (
            transposed(cuda, a, rows, out_dim),
            transposed(cuda, b, rows, in_dim),
        ) {
            cuda.launch::<T>(
                "sparse_sampled_tn_transposed",
                elements(nnz * WARP),
                &[
                    out.ptr(),
                    cuda.address(&at),
                    cuda.address(&bt),
                    cuda.address(idx),
                    size(nnz),
                    size(rows),
                    size(in_dim),
                ],
            );
        }
        return;
    }
    cuda.launch::<T>(
        "sparse_sampled_tn",
        elements(nnz * WARP),
        &[
            out.ptr(),
            a.ptr(),
            b.ptr(),
            cuda.address(idx),
            size(nnz),
            size(rows),
            size(out_dim),
            size(in_dim),
        ],
    );
}

/// Side of the transpose kernel's square tile.
const TILE: usize = 32;

/// The transpose of the row-major `rows x cols` matrix `src`, in a new buffer (freed
/// stream-ordered when it drops); `None` with the failure latched.
fn transposed<T: CudaScalar>(
    cuda: &Cuda,
    src: DeviceView<'_, T>,
    rows: usize,
    cols: usize,
) -> Option<CudaSlice<T>> {
    let row_tiles = rows.div_ceil(TILE);
    if row_tiles > MAX_GRID_Y {
        cuda.latch(format!("sparse transpose: {rows} rows exceed the grid"));
        return None;
    }
    let dst = match cuda.alloc_zeros::<T>(rows * cols) {
        Ok(dst) => dst,
        Err(e) => {
            cuda.latch(format!("sparse transpose scratch: {e}"));
            return None;
        }
    };
    let config = LaunchConfig {
        grid_dim: (cols.div_ceil(TILE) as u32, row_tiles as u32, 1),
        block_dim: (TILE as u32, 8, 1),
        shared_mem_bytes: 0,
    };
    cuda.launch::<T>(
        "sparse_transpose",
        config,
        &[cuda.address(&dst), src.ptr(), size(rows), size(cols)],
    );
    Some(dst)
}
