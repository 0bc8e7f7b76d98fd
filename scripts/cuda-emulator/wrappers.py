"""Python twins of the kernel wrappers in src/backend/cuda/<op>.rs: the same launch
geometry (grid, block, dynamic shared bytes), the same words in the same order, the
same early returns and scratch buffers. Keep each function in step with the Rust
function of the same name (the tests exercise the kernels only through these).

`L` is a harness.Lib; buffers are its guarded arrays; None is a null pointer.
"""
import numpy as np

from harness import Config, elements, per_row


def div_ceil(a, b):
    return -(-a // b)


# ---- elementwise.rs ----
def ew_add_assign(L, dst, src):
    assert dst.size == src.size
    n = dst.size
    L.launch("ew_add_assign", elements(n), [dst, src, n])


def ew_scatter(L, dst, idx, values):
    assert idx.size == values.size
    n = idx.size
    L.launch("ew_scatter", elements(n), [dst, idx, values, n])


def ew_gather_add(L, dst, idx, src):
    assert idx.size == dst.size
    n = dst.size
    L.launch("ew_gather_add", elements(n), [dst, idx, src, n])


def ew_bias_forward(L, out, bias, rows, width):
    assert bias.size == width and out.size >= rows * width
    L.launch("ew_bias_forward", elements(rows * width), [out, bias, rows, width])


BIAS_LANES = 32


def ew_bias_backward(L, dbias, dout, rows, width):
    assert dbias.size == width and dout.size >= rows * width
    config = Config((div_ceil(width, 32), 1, 1), (32, BIAS_LANES, 1), 0)
    L.launch("ew_bias_backward", config, [dbias, dout, rows, width])


def ew_relu_forward(L, out, inp):
    n = out.size
    L.launch("ew_relu_forward", elements(n), [out, inp, n])


def ew_relu_backward(L, out, inp, grad):
    n = out.size
    L.launch("ew_relu_backward", elements(n), [out, inp, grad, n])


def ew_zero_matrices(L, c, batch, rows, cols, ld, stride):
    L.launch("ew_zero_matrices", elements(batch * rows * cols), [c, batch, rows, cols, ld, stride])


# ---- sparse.rs ----
ROW_CHUNK = 8
MAX_GRID_Y = 65_535


def row_chunked(x, rows):
    chunks = div_ceil(rows, ROW_CHUNK)
    return Config((div_ceil(x, 256), min(chunks, MAX_GRID_Y), 1), (256, 1, 1), 0), chunks


def sparse_matmul_nt(L, out, x, idx, values, rows, out_dim, in_dim):
    assert idx.size == values.size
    assert out.size >= rows * out_dim and x.size >= rows * in_dim
    if idx.size == 0:
        return
    config, chunks = row_chunked(out_dim, rows)
    L.launch("sparse_matmul_nt", config, [out, x, idx, values, idx.size, rows, out_dim, in_dim, chunks])


def sparse_matmul_nn(L, out, dy, idx, values, rows, out_dim, in_dim):
    assert idx.size == values.size
    assert out.size >= rows * in_dim and dy.size >= rows * out_dim
    config, chunks = row_chunked(idx.size, rows)
    L.launch("sparse_matmul_nn", config, [out, dy, idx, values, idx.size, rows, out_dim, in_dim, chunks])


WARP = 32


TRANSPOSE_TILE = 32


def sparse_transposed(L, src, rows, cols):
    row_tiles = div_ceil(rows, TRANSPOSE_TILE)
    assert row_tiles <= MAX_GRID_Y
    dst = L.arr(np.zeros(rows * cols))
    config = Config((div_ceil(cols, TRANSPOSE_TILE), row_tiles), (TRANSPOSE_TILE, 8))
    L.launch("sparse_transpose", config, [dst, src, rows, cols])
    return dst


def sparse_sampled_tn(L, out, a, b, idx, rows, out_dim, in_dim):
    assert idx.size == out.size
    assert a.size >= rows * out_dim and b.size >= rows * in_dim
    nnz = idx.size
    if nnz * 8 >= out_dim + in_dim:
        at, bt = sparse_transposed(L, a, rows, out_dim), sparse_transposed(L, b, rows, in_dim)
        L.launch("sparse_sampled_tn_transposed", elements(nnz * WARP), [out, at, bt, idx, nnz, rows, in_dim])
        return
    L.launch("sparse_sampled_tn", elements(nnz * WARP), [out, a, b, idx, nnz, rows, out_dim, in_dim])


# ---- embedding.rs ----
def emb_forward(L, out, ids, table, rows, width, accumulate):
    assert ids.size >= rows and out.size >= rows * width
    L.launch("emb_forward", elements(rows * width), [out, ids, table, rows, width, int(accumulate)])


def emb_backward(L, dtable, dout, ids, rows, width):
    assert ids.size >= rows and dout.size >= rows * width
    chain = L.idx(np.zeros(2 * rows))
    L.launch("emb_chain", elements(rows), [chain, ids, rows])
    L.launch("emb_backward", elements(rows * width), [dtable, dout, ids, chain, rows, width])


def emb_forward_sparse(L, out, ids, idx, values, rows, width):
    assert idx.size == values.size
    assert ids.size >= rows and out.size >= rows * width
    nnz = idx.size
    L.launch("emb_forward_sparse", elements(nnz), [out, ids, idx, values, nnz, rows, width])


def emb_backward_sampled(L, out, dout, ids, idx, rows, width):
    assert idx.size == out.size
    assert ids.size >= rows and dout.size >= rows * width
    nnz = idx.size
    L.launch("emb_backward_sampled", elements(nnz), [out, dout, ids, idx, nnz, rows, width])


# ---- layernorm.rs ----
LN_THREADS = 256
LN_TILE = 32


def column_tiles(width):
    return Config((div_ceil(width, LN_TILE), 1, 1), (LN_TILE, LN_TILE, 1), 0)


def ln_forward(L, out, mean, rstd, inp, weight, bias, rows, width, eps):
    L.launch("ln_forward", per_row(rows, LN_THREADS), [out, mean, rstd, inp, weight, bias, width, float(eps)])


def ln_jvp(L, out_dot, inp, inp_dot, mean, rstd, weight, weight_dot, bias_dot, rows, width):
    L.launch("ln_jvp", per_row(rows, LN_THREADS),
             [out_dot, inp, inp_dot, mean, rstd, weight, weight_dot, bias_dot, width])


def ln_backward(L, dinp, dweight, dbias, dout, inp, mean, rstd, weight, rows, width):
    L.launch("ln_backward", per_row(rows, LN_THREADS), [dinp, dout, inp, mean, rstd, weight, width])
    if dweight is None and dbias is None:
        return
    L.launch("ln_param_backward", column_tiles(width), [dweight, dbias, dout, inp, mean, rstd, rows, width])


def ln_backward_jvp(L, dinp_dot, dweight_dot, dbias_dot, dout, dout_dot, inp, inp_dot, mean, rstd,
                    weight, weight_dot, rows, width):
    params = dweight_dot is not None or dbias_dot is not None
    stats = L.full(2 * rows, 0.0) if params else None  # cuda.alloc_zeros
    L.launch("ln_backward_jvp", per_row(rows, LN_THREADS),
             [dinp_dot, stats, dout, dout_dot, inp, inp_dot, mean, rstd, weight, weight_dot, width])
    if not params:
        return
    L.launch("ln_param_backward_jvp", column_tiles(width),
             [dweight_dot, dbias_dot, dout, dout_dot, inp, inp_dot, mean, rstd, stats, rows, width])


# ---- logprob.rs ----
LP_THREADS = 256


def lp_forward(L, lp, probs, logits, targets, rows, vocab):
    L.launch("lp_forward", per_row(rows, LP_THREADS), [lp, probs, logits, targets, vocab])


def lp_jvp(L, lp_dot, probs, logits_dot, targets, rows, vocab):
    L.launch("lp_jvp", per_row(rows, LP_THREADS), [lp_dot, probs, logits_dot, targets, vocab])


def lp_backward(L, dlogits, probs, dlp, targets, rows, vocab):
    L.launch("lp_backward", per_row(rows, LP_THREADS), [dlogits, probs, dlp, targets, vocab])


def lp_backward_jvp(L, dlogits_dot, probs, logits_dot, dlp, dlp_dot, targets, rows, vocab):
    L.launch("lp_backward_jvp", per_row(rows, LP_THREADS),
             [dlogits_dot, probs, logits_dot, dlp, dlp_dot, targets, vocab])


# ---- attention.rs (dims = (batch, seq, heads, head_dim)) ----
ATTN_TILE = 128
SHARED_LIMIT = 48 * 1024 - 32 * 8


def per_position(L, dims, shared):
    batch, seq, heads, head_dim = dims
    if batch * heads * seq * seq == 0 or head_dim == 0:
        return None
    nbytes = shared * np.dtype(L.np).itemsize
    if nbytes > SHARED_LIMIT or head_dim > 1024 or heads > 65535 or batch > 65535:
        raise ValueError("attention: the shape does not fit a launch (latched in Rust)")
    threads = min(max(div_ceil(head_dim, 32) * 32, 128), 1024)
    return Config((seq, heads, batch), (threads, 1, 1), nbytes)


def attn_forward(L, out, probs, q, k, v, key_mask, dims):
    batch, seq, heads, head_dim = dims
    config = per_position(L, dims, seq + head_dim)
    if config:
        L.launch("attn_forward", config, [out, probs, q, k, v, key_mask, seq, heads, head_dim])


def attn_jvp(L, out_dot, probs_dot, probs, q, k, v, q_dot, k_dot, v_dot, dims):
    batch, seq, heads, head_dim = dims
    config = per_position(L, dims, 2 * seq + 2 * head_dim)
    if config:
        L.launch("attn_jvp", config,
                 [out_dot, probs_dot, probs, q, k, v, q_dot, k_dot, v_dot, seq, heads, head_dim])


def attn_backward(L, dq, dk, dv, dout, probs, q, k, v, dims):
    batch, seq, heads, head_dim = dims
    query = per_position(L, dims, seq + head_dim)
    key = per_position(L, dims, 2 * ATTN_TILE + head_dim)
    if not (query and key):
        return
    rsum = L.full(batch * heads * seq, 0.0)
    L.launch("attn_backward_query", query, [dq, rsum, dout, probs, k, v, seq, heads, head_dim])
    L.launch("attn_backward_key", key, [dk, dv, dout, probs, rsum, q, v, seq, heads, head_dim])


def attn_backward_jvp(L, dq_dot, dk_dot, dv_dot, dout, dout_dot, probs, probs_dot, q, k, v,
                      q_dot, k_dot, v_dot, dims):
    batch, seq, heads, head_dim = dims
    query = per_position(L, dims, 2 * seq + 2 * head_dim)
    key = per_position(L, dims, 4 * ATTN_TILE + 2 * head_dim)
    if not (query and key):
        return
    rsums = L.full(2 * batch * heads * seq, 0.0)
    L.launch("attn_backward_jvp_query", query,
             [dq_dot, rsums, dout, dout_dot, probs, probs_dot, k, v, k_dot, v_dot, seq, heads, head_dim])
    L.launch("attn_backward_jvp_key", key,
             [dk_dot, dv_dot, dout, dout_dot, probs, probs_dot, rsums, q, v, q_dot, v_dot,
              seq, heads, head_dim])


# ---- space.rs (CudaSpace, CudaBasis) ----
# Working vectors are f64 buffers of the double program's Lib (`space.L`); a basis
# holds its slots in its own Lib's precision (`basis.L`: the float program for an
# f32 basis) and every basis kernel launches from that program, as `launch::<T>`.
VEC_THREADS = 256
MAX_BLOCKS = 1024  # tests shrink it to reach the grid-stride loops
TILE = 8
ROTATE_ENTRIES = 1 << 24  # tests shrink it to reach the chunked rotation


def vec_reduction(blocks, tiles):
    return Config((blocks, tiles, 1), (VEC_THREADS, 1, 1), 0)


def vec_columns(n, count):
    return Config((div_ceil(n, VEC_THREADS), count, 1), (VEC_THREADS, 1, 1), 0)


class Basis:
    def __init__(self, L, capacity):
        self.L, self.capacity = L, capacity
        self.vecs, self.spare = [], []


class Space:
    """CudaSpace. Scratch buffers (table, partials, sums) are fresh per call, of
    exactly the size the call needs and filled with NaN (space.rs's `ensure` reuses
    zeroed power-of-two buffers): stricter, an overrun hits the guard page and an
    unwritten partial shows as NaN."""

    def __init__(self, L, dim):
        assert L.real == "double"
        self.L, self.dim = L, dim
        self.blocks = min(max(div_ceil(dim, VEC_THREADS), 1), MAX_BLOCKS)

    def _partials(self, outputs):
        return self.L.f64(np.full(outputs * self.blocks, np.nan))

    def _row(self, partials, output):
        return partials[output * self.blocks :]

    def _sums(self, partials, outputs):
        if outputs == 0:
            return np.zeros(0)
        sums = self.L.f64(np.full(outputs, np.nan))
        self.L.launch("vec_sum_partials", Config((outputs, 1, 1), (VEC_THREADS, 1, 1), 0),
                      [sums, partials, self.blocks])
        return np.array(sums)

    @staticmethod
    def _table(basis, slots, coeffs):
        """The slot table: the listed slots' addresses, then the coefficients' bits.
        Returns (table, coefficient view at table + m words)."""
        for s in slots:
            assert basis.vecs[s].dtype == basis.L.np
        words = np.zeros(len(slots) + len(coeffs), dtype=np.uint64)
        words[: len(slots)] = [basis.vecs[s].ctypes.data for s in slots]
        words[len(slots) :] = np.asarray(coeffs, dtype=np.float64).view(np.uint64)
        tab = basis.L.u64(words)
        return tab, tab.view(np.float64)[len(slots) :]

    def _check(self, x):
        assert x.dtype == np.float64 and x.size == self.dim

    def zeros(self):
        return self.L.f64(np.zeros(self.dim))

    def upload(self, values):
        assert len(values) == self.dim
        return self.L.f64(values)

    def count_nonfinite(self, x):
        self._check(x)
        p = self._partials(1)
        self.L.launch("vec_nonfinite_partial", vec_reduction(self.blocks, 1), [p, x, self.dim])
        return int(self._sums(p, 1)[0])

    def dot(self, x, y):
        self._check(x), self._check(y)
        p = self._partials(1)
        self.L.launch("vec_dot_partial", vec_reduction(self.blocks, 1), [p, x, y, self.dim])
        return self._sums(p, 1)[0]

    def axpy(self, alpha, x, y):
        self._check(x), self._check(y)
        self.L.launch("vec_axpy", elements(self.dim), [y, x, float(alpha), self.dim])

    def scale(self, alpha, x):
        self._check(x)
        self.L.launch("vec_scale", elements(self.dim), [x, float(alpha), self.dim])

    def axpy_dot(self, alpha, x, y, z):
        self._check(x), self._check(y), self._check(z)
        p = self._partials(1)
        self.L.launch("vec_axpy_dot_partial", vec_reduction(self.blocks, 1), [p, y, x, z, float(alpha), self.dim])
        return self._sums(p, 1)[0]

    def axpy_norm(self, alpha, x, y):
        self._check(x), self._check(y)
        p = self._partials(1)
        self.L.launch("vec_axpy_dot_partial", vec_reduction(self.blocks, 1),
                      [p, y, x, None, float(alpha), self.dim])
        return float(np.sqrt(self._sums(p, 1)[0]))

    def axpy_dot_block(self, alpha, x, y, z, basis, slots):
        self._check(x), self._check(y), self._check(z)
        m = len(slots)
        p = self._partials(2 * m + 3)
        reduce = vec_reduction(self.blocks, 1)
        self.L.launch("vec_axpy_dot_partial", reduce, [self._row(p, 0), y, x, z, float(alpha), self.dim])
        for row, (a, b) in enumerate([(y, y), (z, z)]):
            self.L.launch("vec_dot_partial", reduce, [self._row(p, row + 1), a, b, self.dim])
        tab, _ = self._table(basis, slots, [])
        self._slot_dots(basis, tab, m, y, p, 3)
        self._slot_dots(basis, tab, m, z, p, 3 + m)
        sums = self._sums(p, 2 * m + 3)
        return dict(z_dot=sums[0], norm_squared=sums[1], z_norm_squared=sums[2],
                    slot_dots=sums[3 : m + 3], slot_dots_z=sums[m + 3 :])

    def _slot_dots(self, basis, tab, m, x, partials, first):
        if m == 0:
            return
        basis.L.launch("vec_basis_dots_partial", vec_reduction(self.blocks, div_ceil(m, TILE)),
                       [self._row(partials, first), tab, m, x, self.dim])

    def _take_spare(self, basis):
        if basis.spare and basis.spare[-1].size == self.dim:
            return basis.spare.pop()
        if basis.spare:
            basis.spare.pop()
        return basis.L.arr(np.zeros(self.dim))

    def _push_scaled(self, basis, x, x_out, alpha):
        copy = self._take_spare(basis)
        basis.L.launch("vec_store", elements(self.dim), [copy, x, x_out, float(alpha), self.dim])
        basis.vecs.append(copy)

    def _dots_in(self, basis, slots, x):
        m = len(slots)
        if m == 0:
            return np.zeros(0)
        tab, _ = self._table(basis, slots, [])
        p = self._partials(m)
        self._slot_dots(basis, tab, m, x, p, 0)
        return self._sums(p, m)

    def _update_in(self, basis, x, ax, alpha, slots, coeffs, push, scale):
        m = min(len(slots), len(coeffs))
        tab, co = self._table(basis, slots[:m], coeffs[:m])
        copy = self._take_spare(basis) if push else None
        basis.L.launch("vec_update", elements(self.dim),
                       [x, ax, float(alpha), tab, co, m, copy, float(scale), self.dim])
        if copy is not None:
            basis.vecs.append(copy)

    def _update_norm(self, basis, x, ax, alpha, slots, coeffs):
        m = min(len(slots), len(coeffs))
        tab, co = self._table(basis, slots[:m], coeffs[:m])
        p = self._partials(1)
        basis.L.launch("vec_update_norm_partial", vec_reduction(self.blocks, 1),
                       [p, x, ax, float(alpha), tab, co, m, self.dim])
        return float(np.sqrt(self._sums(p, 1)[0]))

    def _update_read_only(self, basis, x, ax, alpha, slots, coeffs):
        m = min(len(slots), len(coeffs))
        if m == 0 and ax is None:
            return
        tab, co = self._table(basis, slots[:m], coeffs[:m])
        basis.L.launch("vec_update", elements(self.dim),
                       [x, ax, float(alpha), tab, co, m, None, 1.0, self.dim])

    def axpy_subtract_norm(self, alpha, x, y, basis, slots, coeffs):
        self._check(x), self._check(y)
        return self._update_norm(basis, y, x, alpha, slots, coeffs)

    def update_scale_push(self, alpha, x, y, basis, slots, coeffs, scale):
        self._check(x), self._check(y)
        assert len(basis.vecs) < basis.capacity
        self._update_in(basis, y, x, alpha, slots, coeffs, True, scale)

    def new_basis(self, capacity, L):
        return Basis(L, capacity)

    def basis_push(self, basis, x):
        self._check(x)
        assert len(basis.vecs) < basis.capacity
        self._push_scaled(basis, x, None, 1.0)

    def scale_and_push(self, alpha, x, basis):
        self._check(x)
        assert len(basis.vecs) < basis.capacity
        self._push_scaled(basis, x, x, alpha)

    def basis_set(self, basis, slot, x):
        self._check(x)
        basis.L.launch("vec_store", elements(self.dim), [basis.vecs[slot], x, None, 1.0, self.dim])

    def basis_get(self, basis, slot, out):
        basis.L.launch("vec_load", elements(self.dim), [out, basis.vecs[slot], self.dim])

    def basis_truncate(self, basis, length):
        if length < len(basis.vecs):
            basis.spare.extend(basis.vecs[length:])
            del basis.vecs[length:]

    def basis_dots(self, basis, slots, x):
        self._check(x)
        return self._dots_in(basis, slots, x)

    def basis_subtract(self, basis, slots, coeffs, x):
        self._check(x)
        self._update_read_only(basis, x, None, 0.0, slots, coeffs)

    def basis_orthogonalize(self, basis, slots, x):
        first = self.basis_dots(basis, slots, x)
        self.basis_subtract(basis, slots, first, x)
        second = self.basis_dots(basis, slots, x)
        norm = self._update_norm(basis, x, None, 0.0, slots, second)
        return first + second, norm

    def basis_project_out(self, basis, slots, x):
        coeffs = self.basis_dots(basis, slots, x)
        return coeffs, self._update_norm(basis, x, None, 0.0, slots, coeffs)

    def basis_combine(self, basis, coeffs, out):
        m = len(coeffs)
        assert m <= len(basis.vecs)
        tab, co = self._table(basis, list(range(m)), coeffs)
        basis.L.launch("vec_basis_combine", elements(self.dim), [out, tab, co, m, self.dim])

    def basis_combine_many(self, basis, coeffs, outs):
        # the trait's default body (space.rs keeps it)
        for c, out in zip(coeffs, outs):
            self.basis_combine(basis, c, out)

    def basis_rotate(self, basis, transform, rows, cols):
        assert rows <= len(basis.vecs) and cols <= rows and len(transform) == rows * cols
        if cols > 0:
            n = self.dim
            chunk = min(max(ROTATE_ENTRIES // cols, 1), max(n, 1))
            temp = self.L.f64(np.full(chunk * cols, np.nan))
            tab, tr = self._table(basis, list(range(rows)), transform)
            start = 0
            while start < n:
                length = min(chunk, n - start)
                basis.L.launch("vec_rotate", vec_columns(length, cols), [temp, tab, tr, rows, start, length])
                basis.L.launch("vec_rotate_store", vec_columns(length, cols), [tab, temp, start, length])
                start += length
        basis.spare.extend(basis.vecs[cols:rows])
        del basis.vecs[cols:rows]

    def basis_gram(self, basis):
        m = len(basis.vecs)
        gram = np.zeros(m * m)
        column = self.zeros()
        for j in range(m):
            basis.L.launch("vec_load", elements(self.dim), [column, basis.vecs[j], self.dim])
            dots = self._dots_in(basis, list(range(j + 1)), column)
            gram[j * m : j * m + j + 1] = dots
        for j in range(m):
            for i in range(j):
                gram[j + i * m] = gram[i + j * m]
        return gram


# The Hessian operator's casts (space.rs, OperatorOn<CudaSpace>::apply_in), launched
# from the model's program (L: its precision).
def vec_cast_in(L, inp, x, idx=None):
    n = x.size
    if idx is not None:
        L.launch("vec_scatter", elements(n), [inp, idx, x, n])
    else:
        L.launch("vec_store", elements(n), [inp, x, None, 1.0, n])


def vec_cast_out(L, y, out, idx=None):
    n = y.size
    if idx is not None:
        L.launch("vec_gather", elements(n), [y, out, idx, n])
    else:
        L.launch("vec_load", elements(n), [y, out, n])
