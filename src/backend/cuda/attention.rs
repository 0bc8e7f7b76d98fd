//! Causal self-attention with a key padding mask: its four rules, the CUDA twin of
//! `backend/cpu/attention.rs` (kernels and formulas in `kernels/attention.cu`).
//!
//! Direct kernels rather than cuBLAS: one block per (query, head, sequence) keeps a
//! query's row of scores in shared memory, so the causal and padding masks, the
//! softmax and its tangents sit beside the products that feed them, and the `probs`
//! layout `[batch, heads, seq, seq]` is written as the CPU writes it. The VJPs need
//! sums over queries for each key (`dk`, `dv`): a second kernel, one block per (key,
//! head, sequence), sums them in a fixed order instead of scattering with atomics,
//! reading the per-query softmax sums `r` the first kernel leaves in a scratch buffer.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::runtime::size;
use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};
use crate::backend::AttentionDims;

/// Queries per tile of the key-side kernels (`ATTN_TILE` in `attention.cu`).
const TILE: usize = 128;

/// Dynamic shared memory a block may take without opting in to more (48 KiB), less
/// the 32 reals of static block-reduction scratch.
const SHARED_LIMIT: usize = 48 * 1024 - 32 * 8;

/// The launch of one block per (position, head, sequence) with `shared` reals of
/// dynamic shared memory, and at least `head_dim` threads (the key kernels keep one
/// column per thread). `None` when there is nothing to do, or, with the failure
/// latched, when the shape does not fit a launch.
fn per_position<T: CudaScalar>(
    cuda: &Cuda,
    dims: &AttentionDims,
    shared: usize,
    kernel: &str,
) -> Option<LaunchConfig> {
    if dims.probs_len() == 0 || dims.head_dim == 0 {
        return None;
    }
    let bytes = shared * size_of::<T>();
    let problem = if bytes > SHARED_LIMIT {
        Some(format!(
            "needs {bytes} bytes of shared memory per block (seq {}, head_dim {}), more than {SHARED_LIMIT}",
            dims.seq, dims.head_dim
        ))
    } else if dims.head_dim > 1024 {
        Some(format!("head_dim {} is over 1024", dims.head_dim))
    } else if dims.heads > 65535 || dims.batch > 65535 || dims.seq > i32::MAX as usize {
        Some(format!(
            "grid {} x {} x {} is too large",
            dims.seq, dims.heads, dims.batch
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        cuda.latch(format!("attention kernel `{kernel}`: {problem}"));
        return None;
    }
    Some(LaunchConfig {
        grid_dim: (dims.seq as u32, dims.heads as u32, dims.batch as u32),
        block_dim: (
            dims.head_dim.next_multiple_of(32).clamp(128, 1024) as u32,
            1,
            1,
        ),
        shared_mem_bytes: bytes as u32,
    })
}

/// Per-query scratch of `per_row` reals for each (sequence, head, query), or `None`
/// with the failure latched.
fn scratch<T: CudaScalar>(
    cuda: &Cuda,
    dims: &AttentionDims,
    per_row: usize,
) -> Option<CudaSlice<T>> {
    match cuda.alloc_zeros::<T>(per_row * dims.batch * dims.heads * dims.seq) {
        Ok(buf) => Some(buf),
        Err(e) => {
            cuda.latch(format!("attention scratch: {e}"));
            None
        }
    }
}

/// The shape words every attention kernel ends with.
fn shape(dims: &AttentionDims) -> [u64; 3] {
    [size(dims.seq), size(dims.heads), size(dims.head_dim)]
}

#[allow(clippy::too_many_arguments)]
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
    let n = dims.rows() * dims.width();
    debug_assert!(out.len() >= n && q.len() >= n && k.len() >= n && v.len() >= n);
    debug_assert!(probs.len() >= dims.probs_len() && key_mask.len() >= dims.rows());
    let Some(config) = per_position::<T>(cuda, &dims, dims.seq + dims.head_dim, "attn_forward")
    else {
        return;
    };
    let [seq, heads, head_dim] = shape(&dims);
    cuda.launch::<T>(
        "attn_forward",
        config,
        &[
            out.ptr(),
            probs.ptr(),
            q.ptr(),
            k.ptr(),
            v.ptr(),
            cuda.address(key_mask),
            seq,
            heads,
            head_dim,
        ],
    );
}

#[allow(clippy::too_many_arguments)]
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
    let n = dims.rows() * dims.width();
    debug_assert!(out_dot.len() >= n && q_dot.len() >= n && k_dot.len() >= n && v_dot.len() >= n);
    debug_assert!(probs_dot.len() >= dims.probs_len() && probs.len() >= dims.probs_len());
    let shared = 2 * dims.seq + 2 * dims.head_dim;
    let Some(config) = per_position::<T>(cuda, &dims, shared, "attn_jvp") else {
        return;
    };
    let [seq, heads, head_dim] = shape(&dims);
    cuda.launch::<T>(
        "attn_jvp",
        config,
        &[
            out_dot.ptr(),
            probs_dot.ptr(),
            probs.ptr(),
            q.ptr(),
            k.ptr(),
            v.ptr(),
            q_dot.ptr(),
            k_dot.ptr(),
            v_dot.ptr(),
            seq,
            heads,
            head_dim,
        ],
    );
}

#[allow(clippy::too_many_arguments)]
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
    let n = dims.rows() * dims.width();
    debug_assert!(dq.len() >= n && dk.len() >= n && dv.len() >= n && dout.len() >= n);
    debug_assert!(probs.len() >= dims.probs_len());
    let query = dims.seq + dims.head_dim;
    let key = 2 * TILE + dims.head_dim;
    let (Some(query), Some(key)) = (
        per_position::<T>(cuda, &dims, query, "attn_backward_query"),
        per_position::<T>(cuda, &dims, key, "attn_backward_key"),
    ) else {
        return;
    };
    // `r_i = sum_j P_ij Pb_ij` per query, from the query kernel to the key kernel.
    // Freed stream-ordered when it drops, after both launches.
    let Some(rsum_buf) = scratch::<T>(cuda, &dims, 1) else {
        return;
    };
    let rsum = cuda.address(&rsum_buf);
    let [seq, heads, head_dim] = shape(&dims);
    cuda.launch::<T>(
        "attn_backward_query",
        query,
        &[
            dq.ptr(),
            rsum,
            dout.ptr(),
            probs.ptr(),
            k.ptr(),
            v.ptr(),
            seq,
            heads,
            head_dim,
        ],
    );
    cuda.launch::<T>(
        "attn_backward_key",
        key,
        &[
            dk.ptr(),
            dv.ptr(),
            dout.ptr(),
            probs.ptr(),
            rsum,
            q.ptr(),
            v.ptr(),
            seq,
            heads,
            head_dim,
        ],
    );
}

#[allow(clippy::too_many_arguments)]
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
    let n = dims.rows() * dims.width();
    debug_assert!(dq_dot.len() >= n && dk_dot.len() >= n && dv_dot.len() >= n);
    debug_assert!(dout_dot.len() >= n && probs_dot.len() >= dims.probs_len());
    let query = 2 * dims.seq + 2 * dims.head_dim;
    let key = 4 * TILE + 2 * dims.head_dim;
    let (Some(query), Some(key)) = (
        per_position::<T>(cuda, &dims, query, "attn_backward_jvp_query"),
        per_position::<T>(cuda, &dims, key, "attn_backward_jvp_key"),
    ) else {
        return;
    };
    // `(r_i, r'_i)` per query, from the query kernel to the key kernel.
    // Freed stream-ordered when it drops, after both launches.
    let Some(rsums_buf) = scratch::<T>(cuda, &dims, 2) else {
        return;
    };
    let rsums = cuda.address(&rsums_buf);
    let [seq, heads, head_dim] = shape(&dims);
    cuda.launch::<T>(
        "attn_backward_jvp_query",
        query,
        &[
            dq_dot.ptr(),
            rsums,
            dout.ptr(),
            dout_dot.ptr(),
            probs.ptr(),
            probs_dot.ptr(),
            k.ptr(),
            v.ptr(),
            k_dot.ptr(),
            v_dot.ptr(),
            seq,
            heads,
            head_dim,
        ],
    );
    cuda.launch::<T>(
        "attn_backward_jvp_key",
        key,
        &[
            dk_dot.ptr(),
            dv_dot.ptr(),
            dout.ptr(),
            dout_dot.ptr(),
            probs.ptr(),
            probs_dot.ptr(),
            rsums,
            q.ptr(),
            v.ptr(),
            q_dot.ptr(),
            v_dot.ptr(),
            seq,
            heads,
            head_dim,
        ],
    );
}
