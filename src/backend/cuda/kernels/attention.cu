// Causal self-attention with a key padding mask and its four rules; the CUDA twin of
// src/backend/cpu/attention.rs.
//
// Per (sequence b, head h), with `s = 1/sqrt(head_dim)`, `S = s Q K^T`,
// `P = softmax(S)` over the allowed keys (`j <= i`, `key_mask[b, j] != 0`), `O = P V`:
// - JVP: `S' = s (Q' K^T + Q K'^T)`, `P' = P * (S' - rowsum(P * S'))`, `O' = P' V + P V'`.
// - VJP: `Pb = Ob V^T`, `r = rowsum(P * Pb)`, `Sb = P * (Pb - r)`, `Qb = s Sb K`,
//   `Kb = s Sb^T Q`, `Vb = P^T Ob`.
// - tangent of the VJP: `Pb' = Ob' V^T + Ob V'^T`, `r' = rowsum(P' * Pb) + rowsum(P * Pb')`,
//   `Sb' = P' * (Pb - r) + P * (Pb' - r')`, `Qb' = s Sb' K + s Sb K'`,
//   `Kb' = s Sb'^T Q + s Sb^T Q'`, `Vb' = P'^T Ob + P^T Ob'`.
// Disallowed entries have `P = 0`, hence `P' = Sb = Sb' = 0`, so the sums below run
// over `j <= i` only (the CPU sums over all `j`; the extra terms are exact zeros).
//
// Geometry. Row kernels (`attn_forward`, `attn_jvp`, `attn_backward_query`,
// `attn_backward_jvp_query`): one block per (query i, head h, sequence b) =
// (blockIdx.x, blockIdx.y, blockIdx.z); the row of scores (or of `Pb`) lives in
// dynamic shared memory (`seq` reals per row kept), each key's dot product is done
// by one warp (lanes over the head's columns), then threads over the head's columns
// sum over keys in order. Key kernels (`attn_backward_key`, `attn_backward_jvp_key`):
// one block per (key j, h, b) summing over queries `i >= j` in order, in tiles of
// ATTN_TILE queries whose `P`, `Sb` (and tangents) are staged in shared memory; the
// per-query sums `r` (and `r'`) come from the query kernel through a scratch buffer.
// blockDim.x is a multiple of 32 and at least head_dim (the key kernels keep one
// column per thread across tiles). Everything is a fixed-order sum: deterministic.

#define ATTN_TILE 128

extern __shared__ real attn_shared[];

// -infinity, the identity of max.
__device__ __forceinline__ real attn_neg_inf() {
    return (real)(-__longlong_as_double(0x7ff0000000000000LL));
}

// `a . b` over `n` entries by the calling warp (lanes stride over the entries),
// returned to every lane. Every lane of the warp must call it.
__device__ __forceinline__ real attn_warp_dot(const real* a, const real* b, long long n) {
    real acc = 0;
    for (long long d = threadIdx.x & 31; d < n; d += 32) acc += a[d] * b[d];
    return warp_sum(acc);
}

// Head `h` of token `t` of sequence `b` in a `batch*seq x heads*hd` matrix.
__device__ __forceinline__ long long attn_at(long long b, long long h, long long t,
                                             long long seq, long long heads, long long hd) {
    return (b * seq + t) * heads * hd + h * hd;
}

// Copies `n` reals to shared memory with the whole block (no barrier).
__device__ __forceinline__ void attn_load(real* dst, const real* src, long long n) {
    for (long long d = threadIdx.x; d < n; d += blockDim.x) dst[d] = src[d];
}

// `1/sqrt(head_dim)` rounded as the CPU rounds it (in `real`).
__device__ __forceinline__ real attn_scale(long long hd) {
    return (real)1 / sqrt((real)hd);
}

// Forward. Shared: scores/probabilities of row i (seq), q_i (hd).
// `S_ij = s q_i . k_j` for allowed j, `P_ij = exp(S_ij - max) / sum` (a row with no
// allowed key is all zero, as is its output), `o_i = sum_{j <= i} P_ij v_j`.
// Writes the whole probs row, zeros included.
extern "C" __global__ void attn_forward(real* out, real* probs, const real* q, const real* k,
                                        const real* v, const unsigned int* key_mask,
                                        long long seq, long long heads, long long hd) {
    __shared__ real scratch[32];
    real* p = attn_shared;
    real* qi = attn_shared + seq;
    const long long i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const unsigned int* mask = key_mask + b * seq;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const real s = attn_scale(hd);
    attn_load(qi, q + attn_at(b, h, i, seq, heads, hd), hd);
    __syncthreads();
    for (long long j = warp; j <= i; j += warps) {
        if (mask[j] == 0) continue;
        const real dot = attn_warp_dot(qi, k + attn_at(b, h, j, seq, heads, hd), hd);
        if (lane == 0) p[j] = s * dot;
    }
    __syncthreads();
    real m = attn_neg_inf();
    int any = 0;
    for (long long j = threadIdx.x; j <= i; j += blockDim.x) {
        if (mask[j] != 0) {
            m = max(m, p[j]);
            any = 1;
        }
    }
    real* prow = probs + ((b * heads + h) * seq + i) * seq;
    real* orow = out + attn_at(b, h, i, seq, heads, hd);
    if (!__syncthreads_or(any)) {
        for (long long j = threadIdx.x; j < seq; j += blockDim.x) prow[j] = (real)0;
        for (long long d = threadIdx.x; d < hd; d += blockDim.x) orow[d] = (real)0;
        return;
    }
    m = block_max(m, scratch);
    real sum = 0;
    for (long long j = threadIdx.x; j <= i; j += blockDim.x) {
        const real e = mask[j] != 0 ? exp(p[j] - m) : (real)0;
        p[j] = e;
        sum += e;
    }
    sum = block_sum(sum, scratch);
    const real inv = (real)1 / sum;
    for (long long j = threadIdx.x; j < seq; j += blockDim.x) {
        real pj = 0;
        if (j <= i) {
            pj = p[j] * inv;
            p[j] = pj;
        }
        prow[j] = pj;
    }
    __syncthreads();
    for (long long d = threadIdx.x; d < hd; d += blockDim.x) {
        real o = 0;
        for (long long j = 0; j <= i; ++j) o += p[j] * v[attn_at(b, h, j, seq, heads, hd) + d];
        orow[d] = o;
    }
}

// JVP. Shared: P' of row i (seq), P of row i (seq), q_i, q'_i (hd each).
// `S'_ij = s q'_i . k_j + s q_i . k'_j`, `P'_ij = P_ij (S'_ij - sum_j P_ij S'_ij)`,
// `o'_i = sum_j P'_ij v_j + sum_j P_ij v'_j`. Writes the whole probs_dot row.
extern "C" __global__ void attn_jvp(real* out_dot, real* probs_dot, const real* probs,
                                    const real* q, const real* k, const real* v,
                                    const real* q_dot, const real* k_dot, const real* v_dot,
                                    long long seq, long long heads, long long hd) {
    __shared__ real scratch[32];
    real* pd = attn_shared;
    real* p = attn_shared + seq;
    real* qi = attn_shared + 2 * seq;
    real* qdi = qi + hd;
    const long long i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const real s = attn_scale(hd);
    const real* prow = probs + ((b * heads + h) * seq + i) * seq;
    attn_load(qi, q + attn_at(b, h, i, seq, heads, hd), hd);
    attn_load(qdi, q_dot + attn_at(b, h, i, seq, heads, hd), hd);
    attn_load(p, prow, i + 1);
    __syncthreads();
    for (long long j = warp; j <= i; j += warps) {
        const long long kj = attn_at(b, h, j, seq, heads, hd);
        const real a = attn_warp_dot(qdi, k + kj, hd);
        const real c = attn_warp_dot(qi, k_dot + kj, hd);
        if (lane == 0) pd[j] = s * a + s * c;
    }
    __syncthreads();
    real r = 0;
    for (long long j = threadIdx.x; j <= i; j += blockDim.x) r += p[j] * pd[j];
    r = block_sum(r, scratch);
    real* pdrow = probs_dot + ((b * heads + h) * seq + i) * seq;
    for (long long j = threadIdx.x; j < seq; j += blockDim.x) {
        real x = 0;
        if (j <= i) {
            x = p[j] * (pd[j] - r);
            pd[j] = x;
        }
        pdrow[j] = x;
    }
    __syncthreads();
    for (long long d = threadIdx.x; d < hd; d += blockDim.x) {
        real o1 = 0;
        real o2 = 0;
        for (long long j = 0; j <= i; ++j) {
            const long long vj = attn_at(b, h, j, seq, heads, hd) + d;
            o1 += pd[j] * v[vj];
            o2 += p[j] * v_dot[vj];
        }
        out_dot[attn_at(b, h, i, seq, heads, hd) + d] = o1 + o2;
    }
}

// VJP, query side: `dq` (overwritten) and `r_i` into `rsum[(b, h, i)]` for the key
// side. Shared: Pb then Sb of row i (seq), Ob_i (hd).
// `Pb_ij = Ob_i . v_j`, `r_i = sum_j P_ij Pb_ij`, `Sb_ij = P_ij (Pb_ij - r_i)`,
// `dq_i = s sum_j Sb_ij k_j`.
extern "C" __global__ void attn_backward_query(real* dq, real* rsum, const real* dout,
                                               const real* probs, const real* k,
                                               const real* v, long long seq, long long heads,
                                               long long hd) {
    __shared__ real scratch[32];
    real* sb = attn_shared;
    real* obi = attn_shared + seq;
    const long long i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const real s = attn_scale(hd);
    const long long row = (b * heads + h) * seq + i;
    const real* prow = probs + row * seq;
    attn_load(obi, dout + attn_at(b, h, i, seq, heads, hd), hd);
    __syncthreads();
    for (long long j = warp; j <= i; j += warps) {
        const real dot = attn_warp_dot(obi, v + attn_at(b, h, j, seq, heads, hd), hd);
        if (lane == 0) sb[j] = dot;
    }
    __syncthreads();
    real r = 0;
    for (long long j = threadIdx.x; j <= i; j += blockDim.x) r += prow[j] * sb[j];
    r = block_sum(r, scratch);
    for (long long j = threadIdx.x; j <= i; j += blockDim.x) sb[j] = prow[j] * (sb[j] - r);
    if (threadIdx.x == 0) rsum[row] = r;
    __syncthreads();
    for (long long d = threadIdx.x; d < hd; d += blockDim.x) {
        real acc = 0;
        for (long long j = 0; j <= i; ++j) acc += sb[j] * k[attn_at(b, h, j, seq, heads, hd) + d];
        dq[attn_at(b, h, i, seq, heads, hd) + d] = s * acc;
    }
}

// VJP, key side: `dk`, `dv` (overwritten) of key j, summing over queries i >= j.
// Shared: P_ij, Sb_ij of one tile of queries (ATTN_TILE each), v_j (hd).
// `Sb_ij = P_ij (Ob_i . v_j - r_i)`, `dk_j = s sum_i Sb_ij q_i`, `dv_j = sum_i P_ij Ob_i`.
extern "C" __global__ void attn_backward_key(real* dk, real* dv, const real* dout,
                                             const real* probs, const real* rsum,
                                             const real* q, const real* v, long long seq,
                                             long long heads, long long hd) {
    real* tp = attn_shared;
    real* ts = tp + ATTN_TILE;
    real* vj = ts + ATTN_TILE;
    const long long j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const real s = attn_scale(hd);
    const long long bh = b * heads + h;
    const long long d = threadIdx.x;
    attn_load(vj, v + attn_at(b, h, j, seq, heads, hd), hd);
    __syncthreads();
    real kacc = 0;
    real vacc = 0;
    for (long long i0 = j; i0 < seq; i0 += ATTN_TILE) {
        const long long n = min((long long)ATTN_TILE, seq - i0);
        for (long long t = warp; t < n; t += warps) {
            const long long i = i0 + t;
            const real pb = attn_warp_dot(dout + attn_at(b, h, i, seq, heads, hd), vj, hd);
            if (lane == 0) {
                const real pij = probs[(bh * seq + i) * seq + j];
                tp[t] = pij;
                ts[t] = pij * (pb - rsum[bh * seq + i]);
            }
        }
        __syncthreads();
        if (d < hd) {
            for (long long t = 0; t < n; ++t) {
                const long long at = attn_at(b, h, i0 + t, seq, heads, hd) + d;
                kacc += ts[t] * q[at];
                vacc += tp[t] * dout[at];
            }
        }
        __syncthreads();
    }
    if (d < hd) {
        const long long at = attn_at(b, h, j, seq, heads, hd) + d;
        dk[at] = s * kacc;
        dv[at] = vacc;
    }
}

// Tangent of the VJP, query side: `dq_dot` (overwritten) and `(r_i, r'_i)` into
// `rsums[2 (b, h, i)]` for the key side. Shared: Pb then Sb (seq), Pb' then Sb'
// (seq), Ob_i, Ob'_i (hd each).
// `Pb'_ij = Ob'_i . v_j + Ob_i . v'_j`, `r'_i = sum_j P'_ij Pb_ij + sum_j P_ij Pb'_ij`,
// `Sb'_ij = P'_ij (Pb_ij - r_i) + P_ij (Pb'_ij - r'_i)`,
// `dq'_i = s sum_j Sb'_ij k_j + s sum_j Sb_ij k'_j`.
extern "C" __global__ void attn_backward_jvp_query(real* dq_dot, real* rsums, const real* dout,
                                                   const real* dout_dot, const real* probs,
                                                   const real* probs_dot, const real* k,
                                                   const real* v, const real* k_dot,
                                                   const real* v_dot, long long seq,
                                                   long long heads, long long hd) {
    __shared__ real scratch[32];
    real* sb = attn_shared;
    real* sbd = sb + seq;
    real* obi = sbd + seq;
    real* obdi = obi + hd;
    const long long i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const real s = attn_scale(hd);
    const long long row = (b * heads + h) * seq + i;
    const real* prow = probs + row * seq;
    const real* pdrow = probs_dot + row * seq;
    attn_load(obi, dout + attn_at(b, h, i, seq, heads, hd), hd);
    attn_load(obdi, dout_dot + attn_at(b, h, i, seq, heads, hd), hd);
    __syncthreads();
    for (long long j = warp; j <= i; j += warps) {
        const long long vj = attn_at(b, h, j, seq, heads, hd);
        const real pb = attn_warp_dot(obi, v + vj, hd);
        const real a = attn_warp_dot(obdi, v + vj, hd);
        const real c = attn_warp_dot(obi, v_dot + vj, hd);
        if (lane == 0) {
            sb[j] = pb;
            sbd[j] = a + c;
        }
    }
    __syncthreads();
    real r = 0;
    real r1 = 0;
    real r2 = 0;
    for (long long j = threadIdx.x; j <= i; j += blockDim.x) {
        r += prow[j] * sb[j];
        r1 += pdrow[j] * sb[j];
        r2 += prow[j] * sbd[j];
    }
    r = block_sum(r, scratch);
    r1 = block_sum(r1, scratch);
    r2 = block_sum(r2, scratch);
    const real rd = r1 + r2;
    for (long long j = threadIdx.x; j <= i; j += blockDim.x) {
        const real pij = prow[j];
        const real pb = sb[j];
        sb[j] = pij * (pb - r);
        sbd[j] = pdrow[j] * (pb - r) + pij * (sbd[j] - rd);
    }
    if (threadIdx.x == 0) {
        rsums[2 * row] = r;
        rsums[2 * row + 1] = rd;
    }
    __syncthreads();
    for (long long d = threadIdx.x; d < hd; d += blockDim.x) {
        real a = 0;
        real c = 0;
        for (long long j = 0; j <= i; ++j) {
            const long long kj = attn_at(b, h, j, seq, heads, hd) + d;
            a += sbd[j] * k[kj];
            c += sb[j] * k_dot[kj];
        }
        dq_dot[attn_at(b, h, i, seq, heads, hd) + d] = s * a + s * c;
    }
}

// Tangent of the VJP, key side: `dk_dot`, `dv_dot` (overwritten) of key j, summing
// over queries i >= j. Shared: P, P', Sb, Sb' of one tile (ATTN_TILE each), v_j, v'_j
// (hd each). `dk'_j = s sum_i Sb'_ij q_i + s sum_i Sb_ij q'_i`,
// `dv'_j = sum_i P'_ij Ob_i + sum_i P_ij Ob'_i`.
extern "C" __global__ void attn_backward_jvp_key(real* dk_dot, real* dv_dot, const real* dout,
                                                 const real* dout_dot, const real* probs,
                                                 const real* probs_dot, const real* rsums,
                                                 const real* q, const real* v,
                                                 const real* q_dot, const real* v_dot,
                                                 long long seq, long long heads,
                                                 long long hd) {
    real* tp = attn_shared;
    real* tpd = tp + ATTN_TILE;
    real* ts = tpd + ATTN_TILE;
    real* tsd = ts + ATTN_TILE;
    real* vj = tsd + ATTN_TILE;
    real* vdj = vj + hd;
    const long long j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const real s = attn_scale(hd);
    const long long bh = b * heads + h;
    const long long d = threadIdx.x;
    attn_load(vj, v + attn_at(b, h, j, seq, heads, hd), hd);
    attn_load(vdj, v_dot + attn_at(b, h, j, seq, heads, hd), hd);
    __syncthreads();
    real ka = 0;
    real kc = 0;
    real va = 0;
    real vc = 0;
    for (long long i0 = j; i0 < seq; i0 += ATTN_TILE) {
        const long long n = min((long long)ATTN_TILE, seq - i0);
        for (long long t = warp; t < n; t += warps) {
            const long long i = i0 + t;
            const long long oi = attn_at(b, h, i, seq, heads, hd);
            const real pb = attn_warp_dot(dout + oi, vj, hd);
            const real a = attn_warp_dot(dout_dot + oi, vj, hd);
            const real c = attn_warp_dot(dout + oi, vdj, hd);
            if (lane == 0) {
                const long long row = bh * seq + i;
                const real pij = probs[row * seq + j];
                const real pdij = probs_dot[row * seq + j];
                const real r = rsums[2 * row];
                const real rd = rsums[2 * row + 1];
                tp[t] = pij;
                tpd[t] = pdij;
                ts[t] = pij * (pb - r);
                tsd[t] = pdij * (pb - r) + pij * ((a + c) - rd);
            }
        }
        __syncthreads();
        if (d < hd) {
            for (long long t = 0; t < n; ++t) {
                const long long at = attn_at(b, h, i0 + t, seq, heads, hd) + d;
                ka += tsd[t] * q[at];
                kc += ts[t] * q_dot[at];
                va += tpd[t] * dout[at];
                vc += tp[t] * dout_dot[at];
            }
        }
        __syncthreads();
    }
    if (d < hd) {
        const long long at = attn_at(b, h, j, seq, heads, hd) + d;
        dk_dot[at] = s * ka + s * kc;
        dv_dot[at] = va + vc;
    }
}
