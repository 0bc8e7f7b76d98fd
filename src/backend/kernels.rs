//! The [`Backend`] trait: device memory, one matrix product, and the kernels the
//! model's ops are made of.
//!
//! The model (`crate::model`) is written once against this trait; each backend
//! implements it function by function (`backend/cpu/*.rs`, and `backend/cuda/*.rs`
//! launching the CUDA C of `backend/cuda/kernels/*.cu`), in the manner of llm.c:
//! every kernel takes explicit buffers whose shapes are in its signature, and
//! nothing is allocated behind the caller's back except small per-call scratch.
//!
//! Conventions shared by all kernels:
//! - Matrices are row-major. `rows` counts tokens (`batch * seq`), `width` features.
//! - Each op has four kernels named after its four rules: `*_forward` (the value),
//!   `*_jvp` (the tangent of the value, given the forward's saved state),
//!   `*_backward` (the VJP: adjoints of the inputs from the adjoint of the output),
//!   `*_backward_jvp` (the tangent of the VJP, which is what makes H v exact).
//!   Where two rules coincide (a linear map is its own JVP) the op reuses one kernel.
//! - Adjoint outputs named `d*` are accumulated (`+=`) when the doc says so (parameter
//!   gradients, residual streams), otherwise overwritten.
//! - Kernel launches return nothing. A backend whose launches can fail (CUDA) must
//!   remember the first failure and return it from the next [`Backend::download`];
//!   the CPU backend cannot fail.

use std::ops::Range;

use super::Scalar;
use crate::error::Result;

/// Marks "no target" in a target-token index buffer.
pub const NO_TARGET: u32 = u32::MAX;

/// One strided, batched matrix product on row-major matrices:
/// `C[i] = alpha * op(A[i]) * op(B[i]) (+ C[i] when accumulating)` for `i < batch`.
///
/// `op(A)` is `m x k`: `A` is stored `m x k` (leading dimension `lda`), or `k x m` when
/// `trans_a`. `op(B)` is `k x n`: stored `k x n`, or `n x k` when `trans_b`. `C` is
/// `m x n` with leading dimension `ldc`. Matrix `i` starts `i * stride_*` elements
/// into its view. Cost: `2 m n k batch` flops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub alpha: f64,
    pub accumulate: bool,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl Gemm {
    /// `C = op(A) op(B)` with dense leading dimensions, one matrix, alpha 1.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            lda: if trans_a { m } else { k },
            ldb: if trans_b { k } else { n },
            ldc: n,
            alpha: 1.0,
            accumulate: false,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
        }
    }

    /// `C = A B`.
    pub fn nn(m: usize, n: usize, k: usize) -> Self {
        Self::new(m, n, k, false, false)
    }

    /// `C = A B^T` (a linear layer: activations times the transposed weight).
    pub fn nt(m: usize, n: usize, k: usize) -> Self {
        Self::new(m, n, k, false, true)
    }

    /// `C = A^T B` (a weight gradient: adjoints transposed times activations).
    pub fn tn(m: usize, n: usize, k: usize) -> Self {
        Self::new(m, n, k, true, false)
    }

    /// Adds into `C` instead of overwriting it.
    pub fn accumulate(mut self) -> Self {
        self.accumulate = true;
        self
    }

    /// Scales the product by `alpha`.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets the leading dimensions (row strides) of A, B and C.
    pub fn leading(mut self, lda: usize, ldb: usize, ldc: usize) -> Self {
        self.lda = lda;
        self.ldb = ldb;
        self.ldc = ldc;
        self
    }

    /// Makes it a batch of `batch` products, matrix `i` at `i * stride_*`.
    pub fn batched(
        mut self,
        batch: usize,
        stride_a: usize,
        stride_b: usize,
        stride_c: usize,
    ) -> Self {
        self.batch = batch;
        self.stride_a = stride_a;
        self.stride_b = stride_b;
        self.stride_c = stride_c;
        self
    }

    /// Elements of the views A, B and C that the product touches (for bounds checks).
    pub fn extents(&self) -> (usize, usize, usize) {
        let extent = |rows: usize, cols: usize, ld: usize, stride: usize| {
            if rows == 0 || cols == 0 || self.batch == 0 {
                0
            } else {
                (self.batch - 1) * stride + (rows - 1) * ld + cols
            }
        };
        let (ar, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        (
            extent(ar, ac, self.lda, self.stride_a),
            extent(br, bc, self.ldb, self.stride_b),
            extent(self.m, self.n, self.ldc, self.stride_c),
        )
    }
}

/// Shape of one causal self-attention call: `batch` sequences of `seq` tokens,
/// `heads` heads of width `head_dim` (q, k, v and the output are `batch*seq x
/// heads*head_dim`, head `h` in columns `h*head_dim..`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionDims {
    /// Tokens (rows of q, k, v).
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
    /// Features (columns of q, k, v).
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Elements of the attention-probability buffer `[batch, heads, seq, seq]`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
}

/// A compute device for the model: memory, a GEMM, and the kernels of the ops, for
/// one element type `T`.
///
/// The CUDA backend implements it with device slices, `gemm` through cuBLAS
/// (`gemm_strided_batched`), and each kernel as NVRTC-compiled CUDA C named after
/// the trait method with its op's prefix and the same rule suffix: the method
/// `layernorm_backward_jvp` (the rule `LayerNorm::backward_jvp` of `model::ops`)
/// launches `ln_backward_jvp` of `kernels/layernorm.cu` (and `ln_param_backward_jvp`
/// for the parameters' part); `attention_*` launches `attn_*`, `logprob_*` `lp_*`,
/// `embedding_*` `emb_*`, the elementwise kernels `ew_*`, and the sparse and
/// sampled products `sparse_*`. A method may launch several kernels (attention's
/// backward: one over queries, one over keys).
pub trait Backend<T: Scalar>: Sync {
    /// Owned device memory holding `T`s.
    type Buf: Send + Sync;
    /// Owned device memory holding `u32` indices (token ids, targets, mask entries).
    type Index: Send + Sync;
    /// A borrowed, read-only range of a [`Backend::Buf`].
    type View<'a>: Copy + Send + Sync
    where
        Self: 'a;
    /// A borrowed, writable range of a [`Backend::Buf`].
    type ViewMut<'a>: Send
    where
        Self: 'a;

    /// A short name for messages ("cpu").
    fn name(&self) -> &'static str;

    // ---- memory ----

    /// `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// A copy of host data.
    fn upload(&self, host: &[T]) -> Result<Self::Buf>;
    /// Host data moved to the backend: on the CPU the vector itself (no second
    /// copy of, say, the weights), elsewhere a copy.
    fn upload_vec(&self, host: Vec<T>) -> Result<Self::Buf> {
        self.upload(&host)
    }
    /// Bytes of memory free for new buffers (the host's `MemAvailable` for the
    /// CPU, the device's free memory for a GPU); `None` when unknown.
    fn available_memory(&self) -> Option<u64> {
        None
    }
    /// A copy of host indices.
    fn upload_index(&self, host: &[u32]) -> Result<Self::Index>;
    /// Copies host data into device memory of the same length.
    fn write(&self, dst: Self::ViewMut<'_>, host: &[T]) -> Result<()>;
    /// Copies `src` into `host` (same length); reports any earlier kernel failure.
    fn download(&self, src: Self::View<'_>, host: &mut [T]) -> Result<()>;
    /// The whole buffer, read-only.
    fn view<'a>(&self, buf: &'a Self::Buf) -> Self::View<'a>;
    /// The whole buffer, writable.
    fn view_mut<'a>(&self, buf: &'a mut Self::Buf) -> Self::ViewMut<'a>;
    /// A sub-range of a view.
    fn sub<'a>(&self, view: Self::View<'a>, range: Range<usize>) -> Self::View<'a>;
    /// A sub-range of a writable view.
    fn sub_mut<'a>(&self, view: Self::ViewMut<'a>, range: Range<usize>) -> Self::ViewMut<'a>;
    /// Splits a writable view at `mid` into two disjoint writable views.
    fn split_mut<'a>(
        &self,
        view: Self::ViewMut<'a>,
        mid: usize,
    ) -> (Self::ViewMut<'a>, Self::ViewMut<'a>);
    /// Reborrows a writable view for a shorter time (so it can be used again after).
    fn reborrow<'b>(&self, view: &'b mut Self::ViewMut<'_>) -> Self::ViewMut<'b>;
    /// Reads a writable view (for a kernel that needs an output's current value).
    fn freeze<'b>(&self, view: &'b Self::ViewMut<'_>) -> Self::View<'b>;

    // ---- elementwise ----

    /// `dst = 0`.
    fn zero(&self, dst: Self::ViewMut<'_>);
    /// `dst = src`.
    fn copy(&self, dst: Self::ViewMut<'_>, src: Self::View<'_>);
    /// `dst += src` (residual connections and their adjoints).
    fn add_assign(&self, dst: Self::ViewMut<'_>, src: Self::View<'_>);
    /// `dst[idx[i]] = values[i]`: a sparse vector written into a dense one.
    fn scatter(&self, dst: Self::ViewMut<'_>, idx: &Self::Index, values: Self::View<'_>);
    /// `dst[i] += src[idx[i]]`: the entries of a dense vector at a mask.
    fn gather_add(&self, dst: Self::ViewMut<'_>, idx: &Self::Index, src: Self::View<'_>);

    // ---- matrix products ----

    /// The strided batched GEMM described by `spec`.
    fn gemm(&self, spec: &Gemm, a: Self::View<'_>, b: Self::View<'_>, c: Self::ViewMut<'_>);

    /// `out[r, o] += sum_e values[e] * x[r, i_e]` where entry `e` of the sparse
    /// `out_dim x in_dim` matrix sits at flat index `idx[e] = o_e * in_dim + i_e`:
    /// `x W^T` for a sparse `W`. Cost `O(nnz * rows)`.
    #[allow(clippy::too_many_arguments)]
    fn sparse_matmul_nt(
        &self,
        out: Self::ViewMut<'_>,
        x: Self::View<'_>,
        idx: &Self::Index,
        values: Self::View<'_>,
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    );
    /// `out[r, i] += sum_e values[e] * dy[r, o_e]`: `dy W` for a sparse `W` (layout as
    /// in [`Backend::sparse_matmul_nt`]). Cost `O(nnz * rows)`.
    #[allow(clippy::too_many_arguments)]
    fn sparse_matmul_nn(
        &self,
        out: Self::ViewMut<'_>,
        dy: Self::View<'_>,
        idx: &Self::Index,
        values: Self::View<'_>,
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    );
    /// `out[e] += sum_r a[r, o_e] * b[r, i_e]`: the entries of `A^T B` at a sparse
    /// pattern (a weight gradient formed only where a mask keeps it). `a` is
    /// `rows x out_dim`, `b` is `rows x in_dim`. Cost `O(nnz * rows)`.
    #[allow(clippy::too_many_arguments)]
    fn sampled_matmul_tn(
        &self,
        out: Self::ViewMut<'_>,
        a: Self::View<'_>,
        b: Self::View<'_>,
        idx: &Self::Index,
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    );

    // ---- embedding (a lookup; linear in the table, so its JVP is itself) ----

    /// `out[r] (+)= table[ids[r]]`, rows of `width`.
    fn embedding_forward(
        &self,
        out: Self::ViewMut<'_>,
        ids: &Self::Index,
        table: Self::View<'_>,
        rows: usize,
        width: usize,
        accumulate: bool,
    );
    /// `dtable[ids[r]] += dout[r]` (scatter-add).
    fn embedding_backward(
        &self,
        dtable: Self::ViewMut<'_>,
        dout: Self::View<'_>,
        ids: &Self::Index,
        rows: usize,
        width: usize,
    );
    /// `out[r, c] += values[e]` for every entry `e = (ids[r], c)` of a sparse table
    /// (flat index `idx[e]`): the lookup of a sparse table. Cost `O(nnz * rows)`.
    fn embedding_forward_sparse(
        &self,
        out: Self::ViewMut<'_>,
        ids: &Self::Index,
        idx: &Self::Index,
        values: Self::View<'_>,
        rows: usize,
        width: usize,
    );
    /// `out[e] += sum_{r: ids[r] = j_e} dout[r, c_e]`: the table gradient at a sparse
    /// pattern only. Cost `O(nnz * rows)`.
    fn embedding_backward_sampled(
        &self,
        out: Self::ViewMut<'_>,
        dout: Self::View<'_>,
        ids: &Self::Index,
        idx: &Self::Index,
        rows: usize,
        width: usize,
    );

    // ---- bias (linear layers) ----

    /// `out[r] += bias` for every row.
    fn bias_forward(&self, out: Self::ViewMut<'_>, bias: Self::View<'_>, rows: usize, width: usize);
    /// `dbias += sum_r dout[r]`.
    fn bias_backward(
        &self,
        dbias: Self::ViewMut<'_>,
        dout: Self::View<'_>,
        rows: usize,
        width: usize,
    );

    // ---- LayerNorm: y = (x - mean) * rstd * weight + bias, rstd = 1/sqrt(var + eps) ----

    /// Normalises each row; saves `mean` and `rstd` (one per row) for the other rules.
    /// `weight`/`bias` are absent when the LayerNorm has no elementwise affine.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: Self::ViewMut<'_>,
        mean: Self::ViewMut<'_>,
        rstd: Self::ViewMut<'_>,
        inp: Self::View<'_>,
        weight: Option<Self::View<'_>>,
        bias: Option<Self::View<'_>>,
        rows: usize,
        width: usize,
        eps: f64,
    );
    /// `out_dot`: the tangent of the output from the tangents of the input, weight and
    /// bias.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_jvp(
        &self,
        out_dot: Self::ViewMut<'_>,
        inp: Self::View<'_>,
        inp_dot: Self::View<'_>,
        mean: Self::View<'_>,
        rstd: Self::View<'_>,
        weight: Option<Self::View<'_>>,
        weight_dot: Option<Self::View<'_>>,
        bias_dot: Option<Self::View<'_>>,
        rows: usize,
        width: usize,
    );
    /// VJP: `dinp += J^T dout`, and (when given) `dweight += sum_r dout * xhat`,
    /// `dbias += sum_r dout`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dinp: Self::ViewMut<'_>,
        dweight: Option<Self::ViewMut<'_>>,
        dbias: Option<Self::ViewMut<'_>>,
        dout: Self::View<'_>,
        inp: Self::View<'_>,
        mean: Self::View<'_>,
        rstd: Self::View<'_>,
        weight: Option<Self::View<'_>>,
        rows: usize,
        width: usize,
    );
    /// Tangent of the VJP: `dinp_dot += d/dt (J^T dout)` along the tangents of the
    /// input, weight and `dout`; likewise `dweight_dot`, `dbias_dot` (accumulated).
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward_jvp(
        &self,
        dinp_dot: Self::ViewMut<'_>,
        dweight_dot: Option<Self::ViewMut<'_>>,
        dbias_dot: Option<Self::ViewMut<'_>>,
        dout: Self::View<'_>,
        dout_dot: Self::View<'_>,
        inp: Self::View<'_>,
        inp_dot: Self::View<'_>,
        mean: Self::View<'_>,
        rstd: Self::View<'_>,
        weight: Option<Self::View<'_>>,
        weight_dot: Option<Self::View<'_>>,
        rows: usize,
        width: usize,
    );

    // ---- ReLU: its Jacobian is a 0/1 diagonal, so JVP, VJP and the tangent of the VJP
    // (the second derivative vanishes almost everywhere) are one masking kernel ----

    /// `out = max(inp, 0)`.
    fn relu_forward(&self, out: Self::ViewMut<'_>, inp: Self::View<'_>);
    /// `out = grad` where `inp > 0`, else 0 (the Jacobian applied to `grad`).
    fn relu_backward(&self, out: Self::ViewMut<'_>, inp: Self::View<'_>, grad: Self::View<'_>);

    // ---- causal self-attention with a key padding mask ----

    /// `probs = softmax(q k^T / sqrt(head_dim))` over allowed keys (`j <= i` and
    /// `key_mask[b, j] != 0`; a row with no allowed key is all zero) and
    /// `out = probs v`. `probs` is `[batch, heads, seq, seq]`, saved for the other rules.
    #[allow(clippy::too_many_arguments)]
    fn attention_forward(
        &self,
        out: Self::ViewMut<'_>,
        probs: Self::ViewMut<'_>,
        q: Self::View<'_>,
        k: Self::View<'_>,
        v: Self::View<'_>,
        key_mask: &Self::Index,
        dims: AttentionDims,
    );
    /// Tangents of the probabilities (saved in `probs_dot`) and of the output.
    #[allow(clippy::too_many_arguments)]
    fn attention_jvp(
        &self,
        out_dot: Self::ViewMut<'_>,
        probs_dot: Self::ViewMut<'_>,
        probs: Self::View<'_>,
        q: Self::View<'_>,
        k: Self::View<'_>,
        v: Self::View<'_>,
        q_dot: Self::View<'_>,
        k_dot: Self::View<'_>,
        v_dot: Self::View<'_>,
        dims: AttentionDims,
    );
    /// VJP: writes `dq`, `dk`, `dv` (overwritten) from `dout`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dq: Self::ViewMut<'_>,
        dk: Self::ViewMut<'_>,
        dv: Self::ViewMut<'_>,
        dout: Self::View<'_>,
        probs: Self::View<'_>,
        q: Self::View<'_>,
        k: Self::View<'_>,
        v: Self::View<'_>,
        dims: AttentionDims,
    );
    /// Tangent of the VJP: writes `dq_dot`, `dk_dot`, `dv_dot` (overwritten).
    #[allow(clippy::too_many_arguments)]
    fn attention_backward_jvp(
        &self,
        dq_dot: Self::ViewMut<'_>,
        dk_dot: Self::ViewMut<'_>,
        dv_dot: Self::ViewMut<'_>,
        dout: Self::View<'_>,
        dout_dot: Self::View<'_>,
        probs: Self::View<'_>,
        probs_dot: Self::View<'_>,
        q: Self::View<'_>,
        k: Self::View<'_>,
        v: Self::View<'_>,
        q_dot: Self::View<'_>,
        k_dot: Self::View<'_>,
        v_dot: Self::View<'_>,
        dims: AttentionDims,
    );

    // ---- token log-probabilities: lp[r] = logits[r, t_r] - logsumexp(logits[r]) ----
    // (rows whose target is NO_TARGET give 0 and receive no adjoint)

    /// Writes `lp` and the softmax `probs` of every row with a target (saved).
    fn logprob_forward(
        &self,
        lp: Self::ViewMut<'_>,
        probs: Self::ViewMut<'_>,
        logits: Self::View<'_>,
        targets: &Self::Index,
        rows: usize,
        vocab: usize,
    );
    /// `lp_dot[r] = logits_dot[r, t_r] - probs[r] . logits_dot[r]`.
    fn logprob_jvp(
        &self,
        lp_dot: Self::ViewMut<'_>,
        probs: Self::View<'_>,
        logits_dot: Self::View<'_>,
        targets: &Self::Index,
        rows: usize,
        vocab: usize,
    );
    /// VJP: `dlogits[r] = dlp[r] (e_{t_r} - probs[r])` (overwritten; 0 without target).
    fn logprob_backward(
        &self,
        dlogits: Self::ViewMut<'_>,
        probs: Self::View<'_>,
        dlp: Self::View<'_>,
        targets: &Self::Index,
        rows: usize,
        vocab: usize,
    );
    /// Tangent of the VJP: `dlogits_dot[r] = dlp_dot[r] (e_t - p) - dlp[r] p_dot` with
    /// `p_dot = p * (logits_dot - p . logits_dot)` (overwritten).
    #[allow(clippy::too_many_arguments)]
    fn logprob_backward_jvp(
        &self,
        dlogits_dot: Self::ViewMut<'_>,
        probs: Self::View<'_>,
        logits_dot: Self::View<'_>,
        dlp: Self::View<'_>,
        dlp_dot: Self::View<'_>,
        targets: &Self::Index,
        rows: usize,
        vocab: usize,
    );

    /// The LM head `logits = x weight^T` and `logprob_forward` in one walk over
    /// `weight` (`vocab x width`), for a value pass whose reverse sweep wants the
    /// adjoint of `x` and not of `weight`: writes `lp` as `logprob_forward` would and
    /// `jac[r] = d lp[r] / d x[r] = weight[t_r] - sum_v softmax(logits[r])_v weight[v]`
    /// (`rows x width`; 0 without a target), with `scratch` (`rows x vocab`, what the
    /// unfused head's logits would fill) as its working space and the logits never
    /// formed whole. Returns whether it ran: a backend that does not fuse (or finds
    /// `scratch` too small) writes nothing, and the caller runs the head unfused.
    #[allow(clippy::too_many_arguments)]
    fn logprob_head_forward(
        &self,
        lp: Self::ViewMut<'_>,
        jac: Self::ViewMut<'_>,
        scratch: Self::ViewMut<'_>,
        x: Self::View<'_>,
        weight: Self::View<'_>,
        targets: &Self::Index,
        rows: usize,
        width: usize,
        vocab: usize,
    ) -> bool;
}
