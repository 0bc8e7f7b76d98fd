// Embedding lookups (token and position tables), their scatter-add adjoints, and the
// sparse-table variants. Wrappers and launch geometry: embedding.rs. Twins on the
// CPU: src/backend/cpu/embedding.rs. Tables can pass 2^31 elements (50272 x 5120),
// so every flat offset is a `long long`.

// out[r, c] = table[ids[r], c] (or += when `accumulate` is nonzero), one thread per
// element of out.
extern "C" __global__ void emb_forward(real* out, const unsigned int* ids, const real* table,
                                       long long rows, long long width, long long accumulate) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= rows * width) return;
    const long long r = t / width;
    const long long c = t - r * width;
    const real value = table[(long long)ids[r] * width + c];
    if (accumulate) {
        out[t] += value;
    } else {
        out[t] = value;
    }
}

// The rows sharing each token id, as chains for `emb_backward`: `chain[r]` is the
// next row after r with the same id (`rows` when none), and `chain[rows + r]` is 1
// when r is the first row with its id. One thread per row, scanning the ids: O(rows)
// per thread, in cache, and done once per call instead of once per element.
extern "C" __global__ void emb_chain(unsigned int* chain, const unsigned int* ids,
                                     long long rows) {
    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const unsigned int id = ids[r];
    unsigned int first = 1;
    for (long long q = 0; q < r; ++q) first &= ids[q] != id;
    long long next = r + 1;
    while (next < rows && ids[next] != id) ++next;
    chain[r] = (unsigned int)next;
    chain[rows + r] = first;
}

// dtable[ids[r], c] += dout[r, c] for every row r.
//
// Rows sharing a token id add into the same table element, so the element is owned
// by thread (r0, c) where r0 is the first row with that id: it follows the chain of
// rows with that id from `emb_chain`, adding dout[r, c] in row order, starting from
// dtable's value (the CPU's order exactly). Deterministic and free of atomics.
extern "C" __global__ void emb_backward(real* dtable, const real* dout, const unsigned int* ids,
                                        const unsigned int* chain, long long rows,
                                        long long width) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= rows * width) return;
    const long long r0 = t / width;
    const long long c = t - r0 * width;
    if (chain[rows + r0] == 0) return;
    real* dst = dtable + (long long)ids[r0] * width + c;
    real acc = *dst;
    for (long long r = r0; r < rows; r = chain[r]) acc += dout[r * width + c];
    *dst = acc;
}

// out[r, c_e] += values[e] for every row r with ids[r] = j_e, where idx[e] =
// j_e * width + c_e. One thread per entry, looping over the rows. The entries are
// distinct, so for a given row at most one entry matches a column: no two threads
// write the same element, and each element receives at most one term.
extern "C" __global__ void emb_forward_sparse(real* out, const unsigned int* ids,
                                              const unsigned int* idx, const real* values,
                                              long long nnz, long long rows, long long width) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= nnz) return;
    const long long flat = idx[e];
    const long long j = flat / width;
    const long long c = flat - j * width;
    const real value = values[e];
    for (long long r = 0; r < rows; ++r) {
        if ((long long)ids[r] == j) out[r * width + c] += value;
    }
}

// out[e] += sum_{r: ids[r] = j_e} dout[r, c_e]: the table gradient at the pattern
// only. One thread per entry, adding in row order starting from out[e] (the CPU's
// order exactly).
extern "C" __global__ void emb_backward_sampled(real* out, const real* dout,
                                                const unsigned int* ids, const unsigned int* idx,
                                                long long nnz, long long rows, long long width) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= nnz) return;
    const long long flat = idx[e];
    const long long j = flat / width;
    const long long c = flat - j * width;
    real acc = out[e];
    for (long long r = 0; r < rows; ++r) {
        if ((long long)ids[r] == j) acc += dout[r * width + c];
    }
    out[e] = acc;
}
