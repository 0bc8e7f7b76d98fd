"""sparse_* kernels (sparse.cu through sparse.rs) against numpy f64, with sorted,
distinct mask indices (idx[e] = o * in_dim + i) as the masks produce them."""
import numpy as np

import wrappers as W
from harness import Lib, check, finish


def mask(rng, out_dim, in_dim, nnz, skip_outputs=()):
    """nnz sorted flat indices, none in the outputs listed in skip_outputs."""
    allowed = np.array([f for f in range(out_dim * in_dim) if f // in_dim not in skip_outputs])
    return np.sort(rng.choice(allowed, min(nnz, allowed.size), replace=False)).astype(np.uint32)


def dense(idx, values, out_dim, in_dim):
    w = np.zeros(out_dim * in_dim)
    w[idx.astype(np.int64)] = values
    return w.reshape(out_dim, in_dim)


def case(L, real, rng, rows, out_dim, in_dim, nnz, tag, skip=()):
    idx = mask(rng, out_dim, in_dim, nnz, skip)
    vals = rng.normal(size=idx.size)
    wd = dense(idx, vals, out_dim, in_dim)
    I, V = L.idx(idx), L.arr(vals)
    name = f"{tag} rows={rows} {out_dim}x{in_dim} nnz={idx.size}"

    x, out0 = rng.normal(size=(rows, in_dim)), rng.normal(size=(rows, out_dim))
    out = L.arr(out0)
    W.sparse_matmul_nt(L, out, L.arr(x), I, V, rows, out_dim, in_dim)
    check(real, f"matmul_nt {name} (+=)", out, out0 + x @ wd.T)

    dy, out0 = rng.normal(size=(rows, out_dim)), rng.normal(size=(rows, in_dim))
    out = L.arr(out0)
    W.sparse_matmul_nn(L, out, L.arr(dy), I, V, rows, out_dim, in_dim)
    check(real, f"matmul_nn {name} (+=, atomics)", out, out0 + dy @ wd)

    a, b, out0 = rng.normal(size=(rows, out_dim)), rng.normal(size=(rows, in_dim)), rng.normal(size=idx.size)
    out = L.arr(out0)
    W.sparse_sampled_tn(L, out, L.arr(a), L.arr(b), I, rows, out_dim, in_dim)
    o, i = idx // in_dim, idx % in_dim
    path = "transposed" if idx.size * 8 >= out_dim + in_dim else "direct"
    check(real, f"sampled_tn {name} {path} (+=)", out, out0 + (a.T @ b)[o, i])


def run(real):
    L = Lib(real)
    rng = np.random.default_rng(20)
    case(L, real, rng, 37, 300, 45, 900, "outputs over a block, empty outputs", skip=(0, 5, 299))
    case(L, real, rng, 1, 7, 33, 1, "one row, one entry")
    case(L, real, rng, 9, 12, 10, 120, "full mask")
    case(L, real, rng, 70, 20, 30, 50, "rows over 64 (lanes loop twice)")
    # More row chunks than grid rows: the kernels' gridDim.y stride (MAX_GRID_Y is
    # 65535 in Rust; shrunk here so the emulator can reach the stride).
    saved, W.MAX_GRID_Y = W.MAX_GRID_Y, 2
    case(L, real, rng, 45, 40, 16, 100, "grid-y stride (MAX_GRID_Y=2)")
    W.MAX_GRID_Y = saved
    # An empty mask: every kernel leaves its output alone.
    e = L.idx(np.zeros(0)), L.arr(np.zeros(0))
    out0 = rng.normal(size=(3, 4))
    out = L.arr(out0)
    W.sparse_matmul_nt(L, out, L.arr(np.ones((3, 5))), *e, 3, 4, 5)
    W.sparse_matmul_nn(L, out, L.arr(np.ones((3, 5))), *e, 3, 5, 4)
    W.sparse_sampled_tn(L, e[1], L.arr(np.ones((3, 4))), L.arr(np.ones((3, 5))), e[0], 3, 4, 5)
    check(real, "empty mask leaves out alone", out, out0, exact=True)


run("double")
run("float")
finish()
