// Device-resident vectors of the spectral algorithms (src/backend/cuda/space.rs),
// mirroring src/spectral/host.rs.
//
// Working vectors are always `double`. A basis stores its vectors as `real`: its
// kernels are launched from the f64 program for an f64 basis and from the f32
// program for an f32 one; every product and every sum is in double either way.
// A basis is passed as a table of slot addresses (`vecs[s]` = the s-th listed
// slot), so any list of slots is one launch. Coefficients follow the table in the
// same upload.
//
// Reductions are deterministic: a fixed grid (space.rs: blocks = min(1024,
// ceil(n / 256))) walks the vector in grid-stride loops, each block writes one
// partial sum per output (`partials[out * gridDim.x + blockIdx.x]`), and
// vec_sum_partials adds a row of partials in a fixed order. No atomics.

#define VEC_THREADS 256
#define VEC_TILE 8

// Sum of `x` over the calling warp, returned to every lane (double whatever
// `real` is).
__device__ __forceinline__ double vec_warp_sum(double x) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    }
    return x;
}

// Sum of `x` over the block (blockDim.x a multiple of 32), returned to every
// thread. `scratch`: 32 doubles of shared memory. Ends with a barrier.
__device__ double vec_block_sum(double x, double* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    x = vec_warp_sum(x);
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = (lane < warps) ? scratch[lane] : 0.0;
    x = vec_warp_sum(x);
    __syncthreads();
    return x;
}

__device__ __forceinline__ long long vec_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long vec_stride() {
    return (long long)gridDim.x * blockDim.x;
}

// y += alpha x.
extern "C" __global__ void vec_axpy(double* y, const double* x, double alpha, long long n) {
    const long long i = vec_index();
    if (i < n) y[i] += alpha * x[i];
}

// x *= alpha.
extern "C" __global__ void vec_scale(double* x, double alpha, long long n) {
    const long long i = vec_index();
    if (i < n) x[i] *= alpha;
}

// partials[blockIdx.x] = this block's share of a · b.
extern "C" __global__ void vec_dot_partial(double* partials, const double* a, const double* b,
                                           long long n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long long i = vec_index(); i < n; i += vec_stride()) acc += a[i] * b[i];
    acc = vec_block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// y += alpha x, then partials[blockIdx.x] = this block's share of z · y (y · y
// when z is null).
extern "C" __global__ void vec_axpy_dot_partial(double* partials, double* y, const double* x,
                                                const double* z, double alpha, long long n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long long i = vec_index(); i < n; i += vec_stride()) {
        const double yi = y[i] + alpha * x[i];
        y[i] = yi;
        acc += (z ? z[i] : yi) * yi;
    }
    acc = vec_block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Counts the non-finite entries of x (this block's share).
extern "C" __global__ void vec_nonfinite_partial(double* partials, const double* x, long long n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long long i = vec_index(); i < n; i += vec_stride()) acc += isfinite(x[i]) ? 0.0 : 1.0;
    acc = vec_block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// out[blockIdx.x] = sum of partials[blockIdx.x * count .. + count], in a fixed
// order (one block per output).
extern "C" __global__ void vec_sum_partials(double* out, const double* partials, long long count) {
    __shared__ double scratch[32];
    const double* p = partials + (long long)blockIdx.x * count;
    double acc = 0.0;
    for (long long b = threadIdx.x; b < count; b += blockDim.x) acc += p[b];
    acc = vec_block_sum(acc, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

// dst = (real)(x * alpha), and x_out = x * alpha when x_out is not null (x_out
// is x itself for a scale-and-push).
extern "C" __global__ void vec_store(real* dst, const double* x, double* x_out, double alpha,
                                     long long n) {
    const long long i = vec_index();
    if (i < n) {
        const double v = x[i] * alpha;
        if (x_out) x_out[i] = v;
        dst[i] = (real)v;
    }
}

// out = (double)src.
extern "C" __global__ void vec_load(double* out, const real* src, long long n) {
    const long long i = vec_index();
    if (i < n) out[i] = (double)src[i];
}

// dst[idx[j]] = (real)src[j] for j < k.
extern "C" __global__ void vec_scatter(real* dst, const unsigned int* idx, const double* src,
                                       long long k) {
    const long long j = vec_index();
    if (j < k) dst[idx[j]] = (real)src[j];
}

// dst[j] = (double)src[idx[j]] for j < k.
extern "C" __global__ void vec_gather(double* dst, const real* src, const unsigned int* idx,
                                      long long k) {
    const long long j = vec_index();
    if (j < k) dst[j] = (double)src[idx[j]];
}

// Grid (blocks, ceil(m / VEC_TILE)): partials[s * gridDim.x + blockIdx.x] = this
// block's share of vecs[s] · x, for the VEC_TILE slots of this blockIdx.y. `x` is
// read once per tile.
extern "C" __global__ void vec_basis_dots_partial(double* partials, const real* const* vecs,
                                                  long long m, const double* x, long long n) {
    __shared__ double scratch[32];
    const long long s0 = (long long)blockIdx.y * VEC_TILE;
    const real* v[VEC_TILE];
    double acc[VEC_TILE];
#pragma unroll
    for (int t = 0; t < VEC_TILE; ++t) {
        v[t] = (s0 + t < m) ? vecs[s0 + t] : nullptr;
        acc[t] = 0.0;
    }
    for (long long i = vec_index(); i < n; i += vec_stride()) {
        const double xi = x[i];
#pragma unroll
        for (int t = 0; t < VEC_TILE; ++t) {
            if (v[t]) acc[t] += (double)v[t][i] * xi;
        }
    }
#pragma unroll
    for (int t = 0; t < VEC_TILE; ++t) {
        const double s = vec_block_sum(acc[t], scratch);
        if (threadIdx.x == 0 && s0 + t < m) partials[(s0 + t) * gridDim.x + blockIdx.x] = s;
    }
}

// x = x + alpha ax - sum_s coeffs[s] vecs[s] (the axpy skipped when ax is null,
// the slots subtracted in order); then, when push is not null, x *= scale and
// push = (real)x. One pass: basis_subtract, the first sweep of
// axpy_subtract_norm, and the whole of update_scale_push.
extern "C" __global__ void vec_update(double* x, const double* ax, double alpha,
                                      const real* const* vecs, const double* coeffs, long long m,
                                      real* push, double scale, long long n) {
    const long long i = vec_index();
    if (i >= n) return;
    double xi = x[i];
    if (ax) xi += alpha * ax[i];
    for (long long s = 0; s < m; ++s) xi += (-coeffs[s]) * (double)vecs[s][i];
    if (push) {
        xi *= scale;
        push[i] = (real)xi;
    }
    x[i] = xi;
}

// vec_update without a push, in a grid-stride loop over a reduction grid, then
// partials[blockIdx.x] = this block's share of ||x||^2 after the update (the
// norm accumulated in the same sweep, as the host's subtract_sweep does).
extern "C" __global__ void vec_update_norm_partial(double* partials, double* x, const double* ax,
                                                   double alpha, const real* const* vecs,
                                                   const double* coeffs, long long m,
                                                   long long n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long long i = vec_index(); i < n; i += vec_stride()) {
        double xi = x[i];
        if (ax) xi += alpha * ax[i];
        for (long long s = 0; s < m; ++s) xi += (-coeffs[s]) * (double)vecs[s][i];
        x[i] = xi;
        acc += xi * xi;
    }
    acc = vec_block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// out = sum_j coeffs[j] vecs[j] over j < m, accumulated from zero in slot order.
extern "C" __global__ void vec_basis_combine(double* out, const real* const* vecs,
                                             const double* coeffs, long long m, long long n) {
    const long long i = vec_index();
    if (i >= n) return;
    double acc = 0.0;
    for (long long j = 0; j < m; ++j) acc += coeffs[j] * (double)vecs[j][i];
    out[i] = acc;
}

// Thick-restart rotation of entries [start, start + len), first half: grid
// (ceil(len / 256), cols), temp[j * len + t] = sum_i transform[i + j * rows]
// vecs[i][start + t] (transform column-major rows x cols).
extern "C" __global__ void vec_rotate(double* temp, const real* const* vecs,
                                      const double* transform, long long rows, long long start,
                                      long long len) {
    const long long t = vec_index();
    if (t >= len) return;
    const long long j = blockIdx.y;
    double acc = 0.0;
    for (long long i = 0; i < rows; ++i) acc += transform[i + j * rows] * (double)vecs[i][start + t];
    temp[j * len + t] = acc;
}

// Second half: vecs[j][start + t] = (real)temp[j * len + t], grid as vec_rotate.
extern "C" __global__ void vec_rotate_store(real* const* vecs, const double* temp,
                                            long long start, long long len) {
    const long long t = vec_index();
    if (t >= len) return;
    const long long j = blockIdx.y;
    vecs[j][start + t] = (real)temp[j * len + t];
}
