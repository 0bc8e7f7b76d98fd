//! Causal self-attention with a key padding mask: its four rules, the CUDA twin of
//! `backend/cpu/attention.rs` (row kernels and formulas in `kernels/attention.cu`).
//!
//! Every product runs as one cuBLAS strided-batched GEMM over the (sequence, head)
//! pairs. cuBLAS needs one stride between the matrices of a batch, and the model's
//! token-major `[batch, seq, heads, head_dim]` layout has two (between heads, and
//! between sequences), so q, k, v and their tangents and adjoints are first copied
//! head-major, `[batch, heads, seq, head_dim]`, and results copied back: memory-bound
//! copies of `rows x width` that cost far less than the serial per-query loops the
//! products would otherwise be. The score matrices `[batch, heads, seq, seq]` are
//! already one contiguous `seq x seq` matrix per pair, as the `probs` buffer is laid
//! out. Products compute the whole square; entries above the diagonal are zeroed by
//! the row kernels (`P` is 0 there), which is cheaper at OPT's sequence lengths than
//! skipping them with many small calls.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::runtime::size;
use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut};
use crate::backend::{AttentionDims, Backend, Gemm};

/// Rows of scores per block of the row kernels (`ATTN_ROWS` in `attention.cu`): one
/// warp each.
const ROWS_PER_BLOCK: usize = 4;

/// The launch of the row kernels: one warp per row of scores.
fn per_score_row(dims: &AttentionDims) -> LaunchConfig {
    let rows = dims.batch * dims.heads * dims.seq;
    LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
        block_dim: (32 * ROWS_PER_BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Head-major buffers and the products between them for one call.
struct HeadMajor<'c> {
    cuda: &'c Cuda,
    dims: AttentionDims,
}

impl<'c> HeadMajor<'c> {
    /// `None` when there is nothing to compute.
    fn new(cuda: &'c Cuda, dims: AttentionDims) -> Option<Self> {
        (dims.probs_len() > 0 && dims.head_dim > 0).then_some(HeadMajor { cuda, dims })
    }

    /// Elements of q (and of every other `rows x width` operand).
    fn len(&self) -> usize {
        self.dims.rows() * self.dims.width()
    }

    fn shape(&self) -> [u64; 3] {
        let d = &self.dims;
        [size(d.seq), size(d.heads), size(d.head_dim)]
    }

    /// The launch of the layout copies: one block per token.
    fn per_token(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.dims.rows() as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// A zeroed device buffer of `len` reals; `None` with the failure latched.
    fn scratch<T: CudaScalar>(&self, len: usize) -> Option<CudaSlice<T>> {
        match self.cuda.alloc_zeros::<T>(len) {
            Ok(buf) => Some(buf),
            Err(e) => {
                self.cuda.latch(format!("attention scratch: {e}"));
                None
            }
        }
    }

    /// A head-major copy of the token-major `src`.
    fn heads_first<T: CudaScalar>(&self, src: DeviceView<'_, T>) -> Option<CudaSlice<T>> {
        debug_assert!(src.len() >= self.len());
        let dst = self.scratch::<T>(self.len())?;
        let [seq, heads, head_dim] = self.shape();
        self.cuda.launch::<T>(
            "attn_heads_first",
            self.per_token(),
            &[self.cuda.address(&dst), src.ptr(), seq, heads, head_dim],
        );
        Some(dst)
    }

    /// Copies the head-major `src` into the token-major `dst` (overwritten).
    fn heads_last<T: CudaScalar>(&self, dst: DeviceViewMut<'_, T>, src: &CudaSlice<T>) {
        debug_assert!(dst.len() >= self.len());
        let [seq, heads, head_dim] = self.shape();
        self.cuda.launch::<T>(
            "attn_heads_last",
            self.per_token(),
            &[dst.ptr(), self.cuda.address(src), seq, heads, head_dim],
        );
    }

    /// `C (+)= alpha X Y^T` per pair, `X`, `Y` head-major (`seq x head_dim`), `C` a
    /// score matrix (`seq x seq`).
    fn scores<T: CudaScalar>(
        &self,
        alpha: f64,
        x: &CudaSlice<T>,
        y: &CudaSlice<T>,
        c: DeviceViewMut<'_, T>,
        accumulate: bool,
    ) {
        let (n, d) = (self.dims.seq, self.dims.head_dim);
        let mut spec = Gemm::nt(n, n, d)
            .alpha(alpha)
            .batched(self.pairs(), n * d, n * d, n * n);
        spec.accumulate = accumulate;
        self.gemm(&spec, self.view(x), self.view(y), c);
    }

    /// `C (+)= alpha op(S) X` per pair: `S` a score matrix (transposed when `trans`),
    /// `X` head-major, `C` head-major.
    fn apply<T: CudaScalar>(
        &self,
        alpha: f64,
        s: DeviceView<'_, T>,
        trans: bool,
        x: &CudaSlice<T>,
        c: &mut CudaSlice<T>,
        accumulate: bool,
    ) {
        let (n, d) = (self.dims.seq, self.dims.head_dim);
        let mut spec = Gemm::new(n, d, n, trans, false).alpha(alpha).batched(
            self.pairs(),
            n * n,
            n * d,
            n * d,
        );
        spec.accumulate = accumulate;
        let c = Backend::<T>::view_mut(self.cuda, c);
        self.gemm(&spec, s, self.view(x), c);
    }

    fn pairs(&self) -> usize {
        self.dims.batch * self.dims.heads
    }

    fn view<'a, T: CudaScalar>(&self, buf: &'a CudaSlice<T>) -> DeviceView<'a, T> {
        Backend::<T>::view(self.cuda, buf)
    }

    fn gemm<T: CudaScalar>(
        &self,
        spec: &Gemm,
        a: DeviceView<'_, T>,
        b: DeviceView<'_, T>,
        c: DeviceViewMut<'_, T>,
    ) {
        Backend::<T>::gemm(self.cuda, spec, a, b, c);
    }

    /// `1/sqrt(head_dim)`, rounded in `T` as the CPU rounds it.
    fn scale<T: CudaScalar>(&self) -> f64 {
        (T::ONE / T::from_usize(self.dims.head_dim).sqrt()).to_f64()
    }

    /// A row kernel over every score row, with the row count and `seq` after `args`.
    fn rows<T: CudaScalar>(&self, kernel: &'static str, args: &[u64]) {
        let rows = self.dims.batch * self.dims.heads * self.dims.seq;
        let mut words = args.to_vec();
        words.extend([size(rows), size(self.dims.seq)]);
        self.cuda
            .launch::<T>(kernel, per_score_row(&self.dims), &words);
    }
}

/// The device address of a writable view, for a kernel that rewrites it in place.
fn address_mut<T>(view: &DeviceViewMut<'_, T>) -> u64 {
    view.ptr()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
    out: DeviceViewMut<'_, T>,
    mut probs: DeviceViewMut<'_, T>,
    q: DeviceView<'_, T>,
    k: DeviceView<'_, T>,
    v: DeviceView<'_, T>,
    key_mask: &CudaSlice<u32>,
    dims: AttentionDims,
) {
    debug_assert!(probs.len() >= dims.probs_len() && key_mask.len() >= dims.rows());
    let Some(hm) = HeadMajor::new(cuda, dims) else {
        return;
    };
    let (Some(qh), Some(kh), Some(vh), Some(mut oh)) = (
        hm.heads_first(q),
        hm.heads_first(k),
        hm.heads_first(v),
        hm.scratch::<T>(hm.len()),
    ) else {
        return;
    };
    let s = hm.scale::<T>();
    hm.scores(s, &qh, &kh, Backend::<T>::reborrow(cuda, &mut probs), false);
    let words = [
        address_mut(&probs),
        cuda.address(key_mask),
        size(dims.heads),
    ];
    hm.rows::<T>("attn_softmax", &words);
    let p = Backend::<T>::freeze(cuda, &probs);
    hm.apply(1.0, p, false, &vh, &mut oh, false);
    hm.heads_last(out, &oh);
}

#[allow(clippy::too_many_arguments)]
pub(super) fn jvp<T: CudaScalar>(
    cuda: &Cuda,
    out_dot: DeviceViewMut<'_, T>,
    mut probs_dot: DeviceViewMut<'_, T>,
    probs: DeviceView<'_, T>,
    q: DeviceView<'_, T>,
    k: DeviceView<'_, T>,
    v: DeviceView<'_, T>,
    q_dot: DeviceView<'_, T>,
    k_dot: DeviceView<'_, T>,
    v_dot: DeviceView<'_, T>,
    dims: AttentionDims,
) {
    debug_assert!(probs_dot.len() >= dims.probs_len() && probs.len() >= dims.probs_len());
    let Some(hm) = HeadMajor::new(cuda, dims) else {
        return;
    };
    let heads = [q, k, v, q_dot, k_dot, v_dot].map(|x| hm.heads_first(x));
    let [
        Some(qh),
        Some(kh),
        Some(vh),
        Some(qdh),
        Some(kdh),
        Some(vdh),
    ] = heads
    else {
        return;
    };
    let Some(mut odh) = hm.scratch::<T>(hm.len()) else {
        return;
    };
    let s = hm.scale::<T>();
    // S' = s (Q' K^T + Q K'^T), then P' = P * (S' - rowsum(P * S'))
    hm.scores(
        s,
        &qdh,
        &kh,
        Backend::<T>::reborrow(cuda, &mut probs_dot),
        false,
    );
    hm.scores(
        s,
        &qh,
        &kdh,
        Backend::<T>::reborrow(cuda, &mut probs_dot),
        true,
    );
    hm.rows::<T>(
        "attn_softmax_center",
        &[address_mut(&probs_dot), probs.ptr()],
    );
    // O' = P' V + P V'
    let pd = Backend::<T>::freeze(cuda, &probs_dot);
    hm.apply(1.0, pd, false, &vh, &mut odh, false);
    hm.apply(1.0, probs, false, &vdh, &mut odh, true);
    hm.heads_last(out_dot, &odh);
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
    debug_assert!(probs.len() >= dims.probs_len());
    let Some(hm) = HeadMajor::new(cuda, dims) else {
        return;
    };
    let heads = [dout, q, k, v].map(|x| hm.heads_first(x));
    let [Some(doh), Some(qh), Some(kh), Some(vh)] = heads else {
        return;
    };
    let outputs = [(); 3].map(|()| hm.scratch::<T>(hm.len()));
    let [Some(mut dqh), Some(mut dkh), Some(mut dvh)] = outputs else {
        return;
    };
    let Some(mut sb) = hm.scratch::<T>(dims.probs_len()) else {
        return;
    };
    let s = hm.scale::<T>();
    // Pb = Ob V^T, then Sb = P * (Pb - rowsum(P * Pb))
    hm.scores(1.0, &doh, &vh, Backend::<T>::view_mut(cuda, &mut sb), false);
    hm.rows::<T>("attn_softmax_center", &[cuda.address(&sb), probs.ptr()]);
    // Qb = s Sb K, Kb = s Sb^T Q, Vb = P^T Ob
    let sbv = hm.view(&sb);
    hm.apply(s, sbv, false, &kh, &mut dqh, false);
    hm.apply(s, sbv, true, &qh, &mut dkh, false);
    hm.apply(1.0, probs, true, &doh, &mut dvh, false);
    hm.heads_last(dq, &dqh);
    hm.heads_last(dk, &dkh);
    hm.heads_last(dv, &dvh);
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
    debug_assert!(probs.len() >= dims.probs_len() && probs_dot.len() >= dims.probs_len());
    let Some(hm) = HeadMajor::new(cuda, dims) else {
        return;
    };
    let heads = [dout, dout_dot, q, k, v, q_dot, k_dot, v_dot].map(|x| hm.heads_first(x));
    let [
        Some(doh),
        Some(dodh),
        Some(qh),
        Some(kh),
        Some(vh),
        Some(qdh),
        Some(kdh),
        Some(vdh),
    ] = heads
    else {
        return;
    };
    let outputs = [(); 3].map(|()| hm.scratch::<T>(hm.len()));
    let [Some(mut dqh), Some(mut dkh), Some(mut dvh)] = outputs else {
        return;
    };
    let (Some(mut sb), Some(mut sbd)) = (
        hm.scratch::<T>(dims.probs_len()),
        hm.scratch::<T>(dims.probs_len()),
    ) else {
        return;
    };
    let s = hm.scale::<T>();
    // Pb = Ob V^T and Pb' = Ob' V^T + Ob V'^T, then Sb and Sb' in place
    hm.scores(1.0, &doh, &vh, Backend::<T>::view_mut(cuda, &mut sb), false);
    hm.scores(
        1.0,
        &dodh,
        &vh,
        Backend::<T>::view_mut(cuda, &mut sbd),
        false,
    );
    hm.scores(
        1.0,
        &doh,
        &vdh,
        Backend::<T>::view_mut(cuda, &mut sbd),
        true,
    );
    hm.rows::<T>(
        "attn_softmax_backward_jvp",
        &[
            cuda.address(&sb),
            cuda.address(&sbd),
            probs.ptr(),
            probs_dot.ptr(),
        ],
    );
    let (sbv, sbdv) = (hm.view(&sb), hm.view(&sbd));
    // Qb' = s Sb' K + s Sb K'
    hm.apply(s, sbdv, false, &kh, &mut dqh, false);
    hm.apply(s, sbv, false, &kdh, &mut dqh, true);
    // Kb' = s Sb'^T Q + s Sb^T Q'
    hm.apply(s, sbdv, true, &qh, &mut dkh, false);
    hm.apply(s, sbv, true, &qdh, &mut dkh, true);
    // Vb' = P'^T Ob + P^T Ob'
    hm.apply(1.0, probs_dot, true, &doh, &mut dvh, false);
    hm.apply(1.0, probs, true, &dodh, &mut dvh, true);
    hm.heads_last(dq_dot, &dqh);
    hm.heads_last(dk_dot, &dkh);
    hm.heads_last(dv_dot, &dvh);
}
