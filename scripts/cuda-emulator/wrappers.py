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


def sparse_sampled_tn(L, out, a, b, idx, rows, out_dim, in_dim):
    assert idx.size == out.size
    assert a.size >= rows * out_dim and b.size >= rows * in_dim
    nnz = idx.size
    L.launch("sparse_sampled_tn", elements(nnz * WARP), [out, a, b, idx, nnz, rows, out_dim, in_dim])


# ---- embedding.rs ----
def emb_forward(L, out, ids, table, rows, width, accumulate):
    assert ids.size >= rows and out.size >= rows * width
    L.launch("emb_forward", elements(rows * width), [out, ids, table, rows, width, int(accumulate)])


def emb_backward(L, dtable, dout, ids, rows, width):
    assert ids.size >= rows and dout.size >= rows * width
    L.launch("emb_backward", elements(rows * width), [dtable, dout, ids, rows, width])


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
