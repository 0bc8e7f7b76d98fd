// LayerNorm over the rows of a matrix and its four rules; the CUDA twin of
// src/backend/cpu/layernorm.rs.
//
// Per row: `xhat = (x - mean) * rstd`, `rstd = 1/sqrt(var + eps)` (biased variance,
// two passes), `y = xhat * w + b`. Along a tangent `xdot`: `a = mean(xhat * xdot)`,
// `rstd_dot = -rstd^2 a`, `xhat_dot = rstd (xdot - mean(xdot) - xhat a)`.
//
// Geometry: the row rules run one block per row (blockIdx.x = r), threads striding
// over the columns, block reductions from common.cuh. The parameter adjoints (sums
// over rows) run as a separate kernel over 32-column tiles: a block of 32 x 32
// threads, thread (c, y) summing rows y, y + 32, ... of column c, then the 32
// partial sums added in order of y: deterministic, no atomics. Optional buffers
// (weight, bias, their tangents and adjoints) are null when absent.

// The biased average of a block-reduced sum over `width` columns.
__device__ __forceinline__ real ln_average(real x, real* scratch, long long width) {
    return block_sum(x, scratch) / (real)width;
}

// Forward: writes `out`, `mean`, `rstd` of row r.
extern "C" __global__ void ln_forward(real* out, real* mean, real* rstd, const real* inp,
                                      const real* weight, const real* bias, long long width,
                                      double eps) {
    __shared__ real scratch[32];
    const long long r = blockIdx.x;
    const real* x = inp + r * width;
    real* y = out + r * width;
    real s = 0;
    for (long long c = threadIdx.x; c < width; c += blockDim.x) s += x[c];
    const real m = ln_average(s, scratch, width);
    real v = 0;
    for (long long c = threadIdx.x; c < width; c += blockDim.x) v += (x[c] - m) * (x[c] - m);
    const real var = ln_average(v, scratch, width);
    const real rs = (real)1 / sqrt(var + (real)eps);
    if (threadIdx.x == 0) {
        mean[r] = m;
        rstd[r] = rs;
    }
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        real o = (x[c] - m) * rs;
        if (weight) o *= weight[c];
        if (bias) o += bias[c];
        y[c] = o;
    }
}

// JVP (overwrites): `out_dot = xhat_dot * w + xhat * w_dot + b_dot`, each term present
// when its buffer is.
extern "C" __global__ void ln_jvp(real* out_dot, const real* inp, const real* inp_dot,
                                  const real* mean, const real* rstd, const real* weight,
                                  const real* weight_dot, const real* bias_dot,
                                  long long width) {
    __shared__ real scratch[32];
    const long long r = blockIdx.x;
    const real* x = inp + r * width;
    const real* xd = inp_dot + r * width;
    real* yd = out_dot + r * width;
    const real m = mean[r];
    const real rs = rstd[r];
    real sa = 0;
    real sm = 0;
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        sa += (x[c] - m) * rs * xd[c];
        sm += xd[c];
    }
    const real a = ln_average(sa, scratch, width);
    const real md = ln_average(sm, scratch, width);
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        const real h = (x[c] - m) * rs;
        const real hd = rs * (xd[c] - md - h * a);
        real o = weight ? hd * weight[c] : hd;
        if (weight_dot) o += h * weight_dot[c];
        if (bias_dot) o += bias_dot[c];
        yd[c] = o;
    }
}

// VJP of the input (accumulates): with `g = dout * w`,
// `dinp += rstd (g - mean(g) - xhat mean(g xhat))`.
extern "C" __global__ void ln_backward(real* dinp, const real* dout, const real* inp,
                                       const real* mean, const real* rstd, const real* weight,
                                       long long width) {
    __shared__ real scratch[32];
    const long long r = blockIdx.x;
    const real* x = inp + r * width;
    const real* dy = dout + r * width;
    real* dx = dinp + r * width;
    const real m = mean[r];
    const real rs = rstd[r];
    real sg = 0;
    real sgx = 0;
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        const real g = weight ? dy[c] * weight[c] : dy[c];
        sg += g;
        sgx += g * ((x[c] - m) * rs);
    }
    const real mg = ln_average(sg, scratch, width);
    const real mgx = ln_average(sgx, scratch, width);
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        const real g = weight ? dy[c] * weight[c] : dy[c];
        const real h = (x[c] - m) * rs;
        dx[c] += rs * (g - mg - h * mgx);
    }
}

// Tangent of the input's VJP (accumulates). With `g = dout * w`,
// `g_dot = dout_dot * w + dout * w_dot`, `primal = g - mean(g) - xhat mean(g xhat)`:
// `dinp_dot += rstd_dot primal + rstd (g_dot - mean(g_dot) - xhat_dot mean(g xhat)
//              - xhat mean(g_dot xhat + g xhat_dot))`.
// When `stats` is not null, writes the row's `(mean(xdot), a)` there for
// `ln_param_backward_jvp`, which needs them to rebuild `xhat_dot`.
extern "C" __global__ void ln_backward_jvp(real* dinp_dot, real* stats, const real* dout,
                                           const real* dout_dot, const real* inp,
                                           const real* inp_dot, const real* mean,
                                           const real* rstd, const real* weight,
                                           const real* weight_dot, long long width) {
    __shared__ real scratch[32];
    const long long r = blockIdx.x;
    const real* x = inp + r * width;
    const real* xd = inp_dot + r * width;
    const real* dy = dout + r * width;
    const real* dyd = dout_dot + r * width;
    real* dxd = dinp_dot + r * width;
    const real m = mean[r];
    const real rs = rstd[r];
    real sa = 0;
    real sm = 0;
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        sa += (x[c] - m) * rs * xd[c];
        sm += xd[c];
    }
    const real a = ln_average(sa, scratch, width);
    const real md = ln_average(sm, scratch, width);
    if (stats && threadIdx.x == 0) {
        stats[2 * r] = md;
        stats[2 * r + 1] = a;
    }
    const real rstd_dot = -rs * rs * a;
    real sg = 0;
    real sgx = 0;
    real sgd = 0;
    real sgxd = 0;
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        const real h = (x[c] - m) * rs;
        const real hd = rs * (xd[c] - md - h * a);
        const real w = weight ? weight[c] : (real)1;
        const real g = dy[c] * w;
        const real gd = dyd[c] * w + (weight_dot ? dy[c] * weight_dot[c] : (real)0);
        sg += g;
        sgx += g * h;
        sgd += gd;
        sgxd += gd * h + g * hd;
    }
    const real mg = ln_average(sg, scratch, width);
    const real mgx = ln_average(sgx, scratch, width);
    const real mgd = ln_average(sgd, scratch, width);
    const real mgx_dot = ln_average(sgxd, scratch, width);
    for (long long c = threadIdx.x; c < width; c += blockDim.x) {
        const real h = (x[c] - m) * rs;
        const real hd = rs * (xd[c] - md - h * a);
        const real w = weight ? weight[c] : (real)1;
        const real g = dy[c] * w;
        const real gd = dyd[c] * w + (weight_dot ? dy[c] * weight_dot[c] : (real)0);
        const real primal = g - mg - h * mgx;
        const real tangent = gd - mgd - hd * mgx - h * mgx_dot;
        dxd[c] += rstd_dot * primal + rs * tangent;
    }
}

// Tile of the parameter-adjoint kernels: LN_TILE columns by LN_TILE row lanes.
#define LN_TILE 32

// Adds the LN_TILE partial sums of column tile `acc[y][c]` in order of `y` and
// accumulates the total into `dst[c0 + c]` (skipped when `dst` is null).
__device__ void ln_add_partials(real* dst, real (*acc)[LN_TILE + 1], long long c0,
                                long long width) {
    const long long c = c0 + threadIdx.x;
    if (dst && threadIdx.y == 0 && c < width) {
        real s = 0;
        for (int y = 0; y < LN_TILE; ++y) s += acc[y][threadIdx.x];
        dst[c] += s;
    }
}

// Parameter adjoints of the VJP (accumulate): `dweight += sum_r dout * xhat`,
// `dbias += sum_r dout`. Block (LN_TILE, LN_TILE) per tile of columns.
extern "C" __global__ void ln_param_backward(real* dweight, real* dbias, const real* dout,
                                             const real* inp, const real* mean,
                                             const real* rstd, long long rows,
                                             long long width) {
    __shared__ real accw[LN_TILE][LN_TILE + 1];
    __shared__ real accb[LN_TILE][LN_TILE + 1];
    const long long c0 = (long long)blockIdx.x * LN_TILE;
    const long long c = c0 + threadIdx.x;
    real sw = 0;
    real sb = 0;
    if (c < width) {
        for (long long r = threadIdx.y; r < rows; r += LN_TILE) {
            const real dy = dout[r * width + c];
            sw += dy * (inp[r * width + c] - mean[r]) * rstd[r];
            sb += dy;
        }
    }
    accw[threadIdx.y][threadIdx.x] = sw;
    accb[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    ln_add_partials(dweight, accw, c0, width);
    ln_add_partials(dbias, accb, c0, width);
}

// Parameter adjoints of the tangent of the VJP (accumulate):
// `dweight_dot += sum_r (dout_dot * xhat + dout * xhat_dot)`, `dbias_dot += sum_r
// dout_dot`, with `xhat_dot` rebuilt from the `(mean(xdot), a)` per row that
// `ln_backward_jvp` left in `stats`.
extern "C" __global__ void ln_param_backward_jvp(real* dweight_dot, real* dbias_dot,
                                                 const real* dout, const real* dout_dot,
                                                 const real* inp, const real* inp_dot,
                                                 const real* mean, const real* rstd,
                                                 const real* stats, long long rows,
                                                 long long width) {
    __shared__ real accw[LN_TILE][LN_TILE + 1];
    __shared__ real accb[LN_TILE][LN_TILE + 1];
    const long long c0 = (long long)blockIdx.x * LN_TILE;
    const long long c = c0 + threadIdx.x;
    real sw = 0;
    real sb = 0;
    if (c < width) {
        for (long long r = threadIdx.y; r < rows; r += LN_TILE) {
            const long long i = r * width + c;
            const real rs = rstd[r];
            const real h = (inp[i] - mean[r]) * rs;
            const real hd = rs * (inp_dot[i] - stats[2 * r] - h * stats[2 * r + 1]);
            sw += dout_dot[i] * h + dout[i] * hd;
            sb += dout_dot[i];
        }
    }
    accw[threadIdx.y][threadIdx.x] = sw;
    accb[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    ln_add_partials(dweight_dot, accw, c0, width);
    ln_add_partials(dbias_dot, accb, c0, width);
}
