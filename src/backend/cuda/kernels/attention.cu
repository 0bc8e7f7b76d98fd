// Causal self-attention with a key padding mask: the layout changes and the softmax
// rows of its four rules. The products (`S = s Q K^T`, `O = P V` and their
// derivatives) are cuBLAS strided-batched GEMMs over the (sequence, head) pairs, on
// head-major copies of q, k, v (src/backend/cuda/attention.rs); what is left for
// these kernels is row-wise, on the `[batch, heads, seq, seq]` score matrices.
//
// Per (sequence b, head h), with `P = softmax(S)` over the allowed keys (`j <= i`,
// `key_mask[b, j] != 0`):
// - JVP: `P' = P * (S' - rowsum(P * S'))`;
// - VJP: `r = rowsum(P * Pb)`, `Sb = P * (Pb - r)`;
// - tangent of the VJP: `r' = rowsum(P' * Pb) + rowsum(P * Pb')`,
//   `Sb' = P' * (Pb - r) + P * (Pb' - r')`.
// Disallowed entries have `P = 0`, hence `P' = Sb = Sb' = 0`: the row sums run over
// `j <= i` only, and every entry of a row is written.
//
// Geometry: one warp per row of `seq` scores, ATTN_ROWS rows per block; each lane
// takes the keys `j = lane, lane + 32, ...`, then the warp sums in a fixed order,
// so results are deterministic.

#define ATTN_ROWS 4

// -infinity, the identity of max.
__device__ __forceinline__ real attn_neg_inf() {
    return (real)(-__longlong_as_double(0x7ff0000000000000LL));
}

// `[batch, seq, heads, hd]` (token-major, as the model keeps q, k, v) to
// `[batch, heads, seq, hd]` (head-major, one contiguous `seq x hd` matrix per pair).
// One block per token: it reads the token's row whole and writes it as `heads`
// runs of `hd`, so both sides are coalesced and the index arithmetic is per token.
extern "C" __global__ void attn_heads_first(real* dst, const real* src, long long seq,
                                            long long heads, long long hd) {
    const long long token = blockIdx.x, b = token / seq, t = token - b * seq;
    const int width = (int)(heads * hd), head_dim = (int)hd;
    const real* row = src + token * width;
    for (int e = threadIdx.x; e < width; e += blockDim.x) {
        const int h = e / head_dim;
        dst[((b * heads + h) * seq + t) * hd + (e - h * head_dim)] = row[e];
    }
}

// The inverse of `attn_heads_first`, one block per token likewise.
extern "C" __global__ void attn_heads_last(real* dst, const real* src, long long seq,
                                           long long heads, long long hd) {
    const long long token = blockIdx.x, b = token / seq, t = token - b * seq;
    const int width = (int)(heads * hd), head_dim = (int)hd;
    real* row = dst + token * width;
    for (int e = threadIdx.x; e < width; e += blockDim.x) {
        const int h = e / head_dim;
        row[e] = src[((b * heads + h) * seq + t) * hd + (e - h * head_dim)];
    }
}

// The row of the calling warp (`rows` = batch * heads * seq in all), its query
// position `i`, and whether the warp has a row at all.
struct AttnRow {
    long long row, i;
    bool live;
};

__device__ __forceinline__ AttnRow attn_row(long long rows, long long seq) {
    const long long row = (long long)blockIdx.x * ATTN_ROWS + (threadIdx.x >> 5);
    return AttnRow{row, row % seq, row < rows};
}

// `s` holds the scaled scores `S`; overwritten by `P`. Sequence `b` of the row is
// `row / (heads * seq)`. A row with no allowed key is all zero.
extern "C" __global__ void attn_softmax(real* s, const unsigned int* key_mask, long long heads,
                                        long long rows, long long seq) {
    const AttnRow r = attn_row(rows, seq);
    if (!r.live) return;
    const int lane = threadIdx.x & 31;
    const unsigned int* mask = key_mask + (r.row / (heads * seq)) * seq;
    real* x = s + r.row * seq;
    real m = attn_neg_inf();
    for (long long j = lane; j <= r.i; j += 32) {
        if (mask[j] != 0) m = max(m, x[j]);
    }
    m = warp_max(m);
    if (m == attn_neg_inf()) {
        for (long long j = lane; j < seq; j += 32) x[j] = (real)0;
        return;
    }
    real sum = 0;
    for (long long j = lane; j <= r.i; j += 32) {
        const real e = mask[j] != 0 ? exp(x[j] - m) : (real)0;
        x[j] = e;
        sum += e;
    }
    const real inv = (real)1 / warp_sum(sum);
    for (long long j = lane; j < seq; j += 32) x[j] = j <= r.i ? x[j] * inv : (real)0;
}

// `x = P * (x - rowsum(P * x))` in place: `P'` from `S'` (the JVP), and `Sb` from
// `Pb` (the VJP).
extern "C" __global__ void attn_softmax_center(real* x, const real* p, long long rows,
                                               long long seq) {
    const AttnRow r = attn_row(rows, seq);
    if (!r.live) return;
    const int lane = threadIdx.x & 31;
    real* xr = x + r.row * seq;
    const real* pr = p + r.row * seq;
    real dot = 0;
    for (long long j = lane; j <= r.i; j += 32) dot += pr[j] * xr[j];
    dot = warp_sum(dot);
    for (long long j = lane; j < seq; j += 32) xr[j] = j <= r.i ? pr[j] * (xr[j] - dot) : (real)0;
}

// `sb` holds `Pb`, `sbd` holds `Pb'`; overwritten by `Sb` and `Sb'`.
extern "C" __global__ void attn_softmax_backward_jvp(real* sb, real* sbd, const real* p,
                                                     const real* pd, long long rows,
                                                     long long seq) {
    const AttnRow r = attn_row(rows, seq);
    if (!r.live) return;
    const int lane = threadIdx.x & 31;
    real* b = sb + r.row * seq;
    real* bd = sbd + r.row * seq;
    const real* pr = p + r.row * seq;
    const real* pdr = pd + r.row * seq;
    real rs = 0, rsd = 0;
    for (long long j = lane; j <= r.i; j += 32) {
        rs += pr[j] * b[j];
        rsd += pdr[j] * b[j] + pr[j] * bd[j];
    }
    rs = warp_sum(rs);
    rsd = warp_sum(rsd);
    for (long long j = lane; j < seq; j += 32) {
        real sbj = 0, sbdj = 0;
        if (j <= r.i) {
            sbj = pr[j] * (b[j] - rs);
            sbdj = pdr[j] * (b[j] - rs) + pr[j] * (bd[j] - rsd);
        }
        b[j] = sbj;
        bd[j] = sbdj;
    }
}
