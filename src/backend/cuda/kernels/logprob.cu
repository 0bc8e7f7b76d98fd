// Token log-probabilities `lp[r] = logits[r, t_r] - logsumexp(logits[r])` and their
// three other rules; the CUDA twin of src/backend/cpu/logprob.rs.
//
// Geometry: one block per row (blockIdx.x = r), threads striding over the vocabulary,
// block reductions from common.cuh. A row whose target is NO_TARGET (0xffffffff)
// takes the same early exit in every thread of its block, so no barrier is skipped
// by some threads only.

#define LP_NO_TARGET 0xffffffffu

// Forward: `p = exp(l - max) / sum`, `lp = l[t] - max - log(sum)`. Rows without a
// target get `lp = 0` and leave their `probs` row untouched, as the CPU does.
extern "C" __global__ void lp_forward(real* lp, real* probs, const real* logits,
                                      const unsigned int* targets, long long vocab) {
    __shared__ real scratch[32];
    const long long r = blockIdx.x;
    const unsigned int t = targets[r];
    if (t == LP_NO_TARGET) {
        if (threadIdx.x == 0) lp[r] = (real)0;
        return;
    }
    const real* l = logits + r * vocab;
    real* p = probs + r * vocab;
    real m = l[0];
    for (long long c = threadIdx.x; c < vocab; c += blockDim.x) m = max(m, l[c]);
    m = block_max(m, scratch);
    real s = 0;
    for (long long c = threadIdx.x; c < vocab; c += blockDim.x) {
        const real e = exp(l[c] - m);
        p[c] = e;
        s += e;
    }
    s = block_sum(s, scratch);
    const real inv = (real)1 / s;
    for (long long c = threadIdx.x; c < vocab; c += blockDim.x) p[c] *= inv;
    if (threadIdx.x == 0) lp[r] = l[t] - m - log(s);
}

// JVP: `lp_dot = ld[t] - p . ld` (0 without target).
extern "C" __global__ void lp_jvp(real* lp_dot, const real* probs, const real* logits_dot,
                                  const unsigned int* targets, long long vocab) {
    __shared__ real scratch[32];
    const long long r = blockIdx.x;
    const unsigned int t = targets[r];
    if (t == LP_NO_TARGET) {
        if (threadIdx.x == 0) lp_dot[r] = (real)0;
        return;
    }
    const real* p = probs + r * vocab;
    const real* ld = logits_dot + r * vocab;
    real pl = 0;
    for (long long c = threadIdx.x; c < vocab; c += blockDim.x) pl += p[c] * ld[c];
    pl = block_sum(pl, scratch);
    if (threadIdx.x == 0) lp_dot[r] = ld[t] - pl;
}

// VJP (overwrites): `dl = -a p`, then `dl[t] += a`, with `a = dlp[r]`; a row without
// target gets zeros.
extern "C" __global__ void lp_backward(real* dlogits, const real* probs, const real* dlp,
                                       const unsigned int* targets, long long vocab) {
    const long long r = blockIdx.x;
    const unsigned int t = targets[r];
    real* dl = dlogits + r * vocab;
    if (t == LP_NO_TARGET) {
        for (long long c = threadIdx.x; c < vocab; c += blockDim.x) dl[c] = (real)0;
        return;
    }
    const real* p = probs + r * vocab;
    const real a = dlp[r];
    for (long long c = threadIdx.x; c < vocab; c += blockDim.x) {
        real d = -a * p[c];
        if (c == (long long)t) d += a;
        dl[c] = d;
    }
}

// Tangent of the VJP (overwrites): with `a = dlp[r]`, `ad = dlp_dot[r]`,
// `pl = p . ld`: `dld = -ad p - a p (ld - pl)`, then `dld[t] += ad`
// (= ad (e_t - p) - a p_dot, `p_dot = p (ld - pl)` the softmax tangent).
extern "C" __global__ void lp_backward_jvp(real* dlogits_dot, const real* probs,
                                           const real* logits_dot, const real* dlp,
                                           const real* dlp_dot, const unsigned int* targets,
                                           long long vocab) {
    __shared__ real scratch[32];
    const long long r = blockIdx.x;
    const unsigned int t = targets[r];
    real* dld = dlogits_dot + r * vocab;
    if (t == LP_NO_TARGET) {
        for (long long c = threadIdx.x; c < vocab; c += blockDim.x) dld[c] = (real)0;
        return;
    }
    const real* p = probs + r * vocab;
    const real* ld = logits_dot + r * vocab;
    real pl = 0;
    for (long long c = threadIdx.x; c < vocab; c += blockDim.x) pl += p[c] * ld[c];
    pl = block_sum(pl, scratch);
    const real a = dlp[r];
    const real ad = dlp_dot[r];
    for (long long c = threadIdx.x; c < vocab; c += blockDim.x) {
        real d = -ad * p[c] - a * p[c] * (ld[c] - pl);
        if (c == (long long)t) d += ad;
        dld[c] = d;
    }
}
