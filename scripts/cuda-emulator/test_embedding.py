"""emb_* kernels (embedding.cu through embedding.rs) against numpy f64, with repeated
token ids (the scatter-add must sum every row of an id)."""
import numpy as np

import wrappers as W
from harness import Lib, check, finish


def run(real):
    L = Lib(real)
    rng = np.random.default_rng(30)
    vocab = 50
    for rows, width in ((1, 1), (1, 70), (37, 70), (300, 33), (8, 64)):
        ids = rng.integers(0, vocab, size=rows).astype(np.uint32)
        if rows > 4:
            ids[[1, 3, rows - 1]] = ids[0]  # repeats, the last row included
        table = rng.normal(size=(vocab, width))
        I, T = L.idx(ids), L.arr(table)
        tag = f"rows={rows} width={width}"

        out = L.full((rows, width), 9.0)
        W.emb_forward(L, out, I, T, rows, width, False)
        check(real, f"forward {tag} (overwrite)", out, table[ids], exact=True)
        out0 = rng.normal(size=(rows, width))
        out = L.arr(out0)
        W.emb_forward(L, out, I, T, rows, width, True)
        check(real, f"forward {tag} (accumulate)", out, out0 + table[ids])

        dout, dt0 = rng.normal(size=(rows, width)), rng.normal(size=(vocab, width))
        dt = L.arr(dt0)
        W.emb_backward(L, dt, L.arr(dout), I, rows, width)
        want = dt0.copy()
        np.add.at(want, ids.astype(np.int64), dout)
        check(real, f"backward {tag} (+=, repeated ids)", dt, want)

        # A sparse table: sorted distinct flat indices j * width + c, some on used ids.
        nnz = min(vocab * width, 3 * width + 5)
        idx = np.sort(rng.choice(vocab * width, nnz, replace=False))
        idx[: min(width, nnz)] = ids[0] * width + np.arange(min(width, nnz))  # a used row, whole
        idx = np.unique(idx).astype(np.uint32)
        vals = rng.normal(size=idx.size)
        sparse = np.zeros(vocab * width)
        sparse[idx.astype(np.int64)] = vals
        sparse = sparse.reshape(vocab, width)
        out0 = rng.normal(size=(rows, width))
        out = L.arr(out0)
        W.emb_forward_sparse(L, out, I, L.idx(idx), L.arr(vals), rows, width)
        check(real, f"forward_sparse {tag} nnz={idx.size} (+=)", out, out0 + sparse[ids])

        o0 = rng.normal(size=idx.size)
        o = L.arr(o0)
        W.emb_backward_sampled(L, o, L.arr(dout), I, L.idx(idx), rows, width)
        full = np.zeros((vocab, width))
        np.add.at(full, ids.astype(np.int64), dout)
        check(real, f"backward_sampled {tag} nnz={idx.size} (+=)", o, o0 + full.reshape(-1)[idx.astype(np.int64)])


run("double")
run("float")
finish()
