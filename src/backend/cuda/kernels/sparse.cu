// Products with a sparse out_dim x in_dim weight whose entry e sits at the flat index
// idx[e] = o_e * in_dim + i_e (a masked tangent), and weight gradients sampled at
// such a pattern. Wrappers and launch geometry: sparse.rs. Twins on the CPU:
// src/backend/cpu/sparse.rs. Rows are split into chunks of SPARSE_ROW_CHUNK; grid
// dimension y walks the chunks (strided, so any number of rows fits the grid).

#define SPARSE_ROW_CHUNK 8

// The first position p in idx[0, nnz) with idx[p] >= key (idx sorted ascending).
__device__ __forceinline__ long long sparse_lower_bound(const unsigned int* idx, long long nnz,
                                                        unsigned long long key) {
    long long lo = 0, hi = nnz;
    while (lo < hi) {
        const long long mid = lo + (hi - lo) / 2;
        if ((unsigned long long)idx[mid] < key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// out[r, o] += sum_e values[e] x[r, i_e] over the entries of output o (x W^T).
//
// Deterministic, without atomics: idx is sorted, so the entries of output o form
// one run [o * in_dim, (o + 1) * in_dim) of flat indices, found by two binary
// searches. Thread (o, chunk) owns out[r, o] for the rows of its chunk and adds its
// run's terms in entry order, starting from out's value: the CPU's order exactly.
// Threads of a block take consecutive o, so their writes to a row are coalesced.
extern "C" __global__ void sparse_matmul_nt(real* out, const real* x, const unsigned int* idx,
                                            const real* values, long long nnz, long long rows,
                                            long long out_dim, long long in_dim,
                                            long long chunks) {
    const long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out_dim) return;
    const long long first = sparse_lower_bound(idx, nnz, (unsigned long long)o * in_dim);
    const long long last = sparse_lower_bound(idx, nnz, (unsigned long long)(o + 1) * in_dim);
    if (first == last) return;
    const long long base = o * in_dim;
    for (long long chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
        const long long r_end = min(rows, (chunk + 1) * SPARSE_ROW_CHUNK);
        for (long long r = chunk * SPARSE_ROW_CHUNK; r < r_end; ++r) {
            const real* xr = x + r * in_dim;
            real acc = out[r * out_dim + o];
            for (long long e = first; e < last; ++e) acc += values[e] * xr[idx[e] - base];
            out[r * out_dim + o] = acc;
        }
    }
}

// out[r, i_e] += values[e] dy[r, o_e] (dy W).
//
// Entries sharing an input column i are spread over the runs of every output, so
// thread (e, chunk) adds its entry's term to each row of its chunk with atomicAdd
// (double atomicAdd: sm_60+). The sum is exact up to rounding, but the order of the
// additions into one element depends on scheduling, so the last bits of out may
// differ between runs. Neighbouring entries mostly share o and differ in i, so a
// warp's atomics rarely collide.
extern "C" __global__ void sparse_matmul_nn(real* out, const real* dy, const unsigned int* idx,
                                            const real* values, long long nnz, long long rows,
                                            long long out_dim, long long in_dim,
                                            long long chunks) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= nnz) return;
    const long long flat = idx[e];
    const long long o = flat / in_dim;
    const long long i = flat - o * in_dim;
    const real w = values[e];
    for (long long chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
        const long long r_end = min(rows, (chunk + 1) * SPARSE_ROW_CHUNK);
        for (long long r = chunk * SPARSE_ROW_CHUNK; r < r_end; ++r) {
            atomicAdd(&out[r * in_dim + i], w * dy[r * out_dim + o]);
        }
    }
}

// out[e] += sum_r a[r, o_e] b[r, i_e] (entries of A^T B at the pattern).
//
// One warp per entry: lane l sums rows l, l + 32, ... in order, then warp_sum adds
// the lanes' partial sums in a fixed butterfly order, so the result is deterministic.
// A warp rather than a thread per entry because a mask may keep only a few hundred
// entries of a tensor, which one thread each would leave looping over thousands of
// rows on a handful of SMs. The warp index is uniform across its lanes, so whole
// warps leave together and warp_sum's full mask holds.
extern "C" __global__ void sparse_sampled_tn(real* out, const real* a, const real* b,
                                             const unsigned int* idx, long long nnz,
                                             long long rows, long long out_dim,
                                             long long in_dim) {
    const long long e = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (e >= nnz) return;
    const long long flat = idx[e];
    const long long o = flat / in_dim;
    const long long i = flat - o * in_dim;
    real sum = 0;
    for (long long r = lane; r < rows; r += 32) sum += a[r * out_dim + o] * b[r * in_dim + i];
    sum = warp_sum(sum);
    if (lane == 0) out[e] += sum;
}

// dst = src^T for a row-major `rows x cols` src, through a 32 x 33 shared tile (the
// padding column keeps the transposed reads free of bank conflicts). Blocks of
// 32 x 8 threads; grid x over column tiles, y over row tiles.
extern "C" __global__ void sparse_transpose(real* dst, const real* src, long long rows,
                                            long long cols) {
    __shared__ real tile[32][33];
    const long long c0 = (long long)blockIdx.x * 32, r0 = (long long)blockIdx.y * 32;
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        const long long r = r0 + k, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[k][threadIdx.x] = src[r * cols + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        const long long c = c0 + k, r = r0 + threadIdx.x;
        if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][k];
    }
}

// `sparse_sampled_tn` on transposed operands (`at` is `out_dim x rows`, `bt` is
// `in_dim x rows`): a warp's lanes read consecutive rows, so its loads are coalesced
// where the row-major operands would cost a cache line per lane. Same sums, in the
// same order.
extern "C" __global__ void sparse_sampled_tn_transposed(real* out, const real* at,
                                                        const real* bt,
                                                        const unsigned int* idx, long long nnz,
                                                        long long rows, long long in_dim) {
    const long long e = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (e >= nnz) return;
    const long long flat = idx[e];
    const long long o = flat / in_dim;
    const long long i = flat - o * in_dim;
    const real* ar = at + o * rows;
    const real* br = bt + i * rows;
    real sum = 0;
    for (long long r = lane; r < rows; r += 32) sum += ar[r] * br[r];
    sum = warp_sum(sum);
    if (lane == 0) out[e] += sum;
}
