// Elementwise kernels: residual adds, scatter/gather at a mask, bias, ReLU, and the
// zeroing of strided matrices. Wrappers and launch geometry: elementwise.rs. Twins on
// the CPU: src/backend/cpu/elementwise.rs.

// The global index of this thread in a 1-D launch (`long long`: n may pass 2^31).
__device__ __forceinline__ long long ew_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

// dst[t] += src[t], t < n.
extern "C" __global__ void ew_add_assign(real* dst, const real* src, long long n) {
    const long long t = ew_thread_index();
    if (t < n) dst[t] += src[t];
}

// dst[idx[t]] = values[t], t < n. The indices are distinct (a mask), so no two
// threads write the same element.
extern "C" __global__ void ew_scatter(real* dst, const unsigned int* idx, const real* values,
                                      long long n) {
    const long long t = ew_thread_index();
    if (t < n) dst[idx[t]] = values[t];
}

// dst[t] += src[idx[t]], t < n.
extern "C" __global__ void ew_gather_add(real* dst, const unsigned int* idx, const real* src,
                                         long long n) {
    const long long t = ew_thread_index();
    if (t < n) dst[t] += src[idx[t]];
}

// out[r, c] += bias[c] over a rows x width matrix, one thread per element.
extern "C" __global__ void ew_bias_forward(real* out, const real* bias, long long rows,
                                           long long width) {
    const long long t = ew_thread_index();
    if (t < rows * width) out[t] += bias[t % width];
}

// Rows summed by each of the EW_BIAS_LANES threads of a column in ew_bias_backward.
#define EW_BIAS_LANES 32

// dbias[c] += sum_r dout[r, c]. Block (32, EW_BIAS_LANES) owns 32 columns: thread
// (x, y) sums rows y, y + EW_BIAS_LANES, ... of column x in order, then thread
// (x, 0) adds the EW_BIAS_LANES partial sums in lane order. Every order is fixed, so
// the result does not depend on scheduling; reads of a row are coalesced over x.
extern "C" __global__ void ew_bias_backward(real* dbias, const real* dout, long long rows,
                                            long long width) {
    __shared__ real partial[EW_BIAS_LANES][33];
    const long long c = (long long)blockIdx.x * 32 + threadIdx.x;
    real sum = 0;
    if (c < width) {
        for (long long r = threadIdx.y; r < rows; r += EW_BIAS_LANES) {
            sum += dout[r * width + c];
        }
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < width) {
        real total = 0;
        for (int lane = 0; lane < EW_BIAS_LANES; ++lane) total += partial[lane][threadIdx.x];
        dbias[c] += total;
    }
}

// out[t] = max(inp[t], 0), t < n (a NaN input gives 0, as on the CPU).
extern "C" __global__ void ew_relu_forward(real* out, const real* inp, long long n) {
    const long long t = ew_thread_index();
    if (t < n) {
        const real x = inp[t];
        out[t] = x > (real)0 ? x : (real)0;
    }
}

// out[t] = grad[t] where inp[t] > 0, else 0, t < n.
extern "C" __global__ void ew_relu_backward(real* out, const real* inp, const real* grad,
                                            long long n) {
    const long long t = ew_thread_index();
    if (t < n) out[t] = inp[t] > (real)0 ? grad[t] : (real)0;
}

// Zeroes `batch` matrices of rows x cols, row stride ld, matrix i at i * stride (a
// GEMM's C when k = 0), one thread per element.
extern "C" __global__ void ew_zero_matrices(real* c, long long batch, long long rows,
                                            long long cols, long long ld, long long stride) {
    const long long t = ew_thread_index();
    if (t >= batch * rows * cols) return;
    const long long col = t % cols;
    const long long row = (t / cols) % rows;
    const long long mat = t / (cols * rows);
    c[mat * stride + row * ld + col] = 0;
}
