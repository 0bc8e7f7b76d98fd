"""ew_* kernels (elementwise.cu through elementwise.rs) against numpy f64."""
import numpy as np

import wrappers as W
from harness import Lib, check, finish


def run(real):
    L = Lib(real)
    rng = np.random.default_rng(10)
    for n in (1, 255, 256, 1000):  # one element, below / at / past a block
        dst0, src = rng.normal(size=n), rng.normal(size=n)
        dst = L.arr(dst0)
        W.ew_add_assign(L, dst, L.arr(src))
        check(real, f"add_assign n={n} (+=)", dst, dst0 + src)

        x = rng.normal(size=n)
        x[::7] = 0.0  # relu at exactly 0: masked
        out = L.full(n, 9.0)
        W.ew_relu_forward(L, out, L.arr(x))
        check(real, f"relu_forward n={n}", out, np.maximum(x, 0), exact=True)
        g = rng.normal(size=n)
        out = L.full(n, 9.0)
        W.ew_relu_backward(L, out, L.arr(x), L.arr(g))
        check(real, f"relu_backward n={n} (overwrite)", out, np.where(x > 0, g, 0.0), exact=True)

    # scatter / gather at sorted, distinct mask indices into a longer vector
    for dense, nnz in ((1000, 300), (50, 1), (700, 700)):
        idx = np.sort(rng.choice(dense, nnz, replace=False)).astype(np.uint32)
        vals, base = rng.normal(size=nnz), rng.normal(size=dense)
        dst = L.arr(base)
        W.ew_scatter(L, dst, L.idx(idx), L.arr(vals))
        want = base.copy()
        want[idx] = vals
        check(real, f"scatter dense={dense} nnz={nnz} (overwrite at idx, rest kept)", dst, want, exact=True)
        src, d0 = rng.normal(size=dense), rng.normal(size=nnz)
        dst = L.arr(d0)
        W.ew_gather_add(L, dst, L.idx(idx), L.arr(src))
        check(real, f"gather_add dense={dense} nnz={nnz} (+=)", dst, d0 + src[idx])

    for rows, width in ((1, 1), (1, 70), (37, 70), (100, 33), (5, 64)):
        out0, bias = rng.normal(size=(rows, width)), rng.normal(size=width)
        out = L.arr(out0)
        W.ew_bias_forward(L, out, L.arr(bias), rows, width)
        check(real, f"bias_forward {rows}x{width} (+=)", out, out0 + bias)
        dout, db0 = rng.normal(size=(rows, width)), rng.normal(size=width)
        db = L.arr(db0)
        W.ew_bias_backward(L, db, L.arr(dout), rows, width)
        check(real, f"bias_backward {rows}x{width} (+=)", db, db0 + dout.sum(0))

    # zero_matrices: a strided batch inside a bigger buffer; the gaps must survive
    for batch, rows, cols, ld, stride in ((3, 4, 5, 7, 40), (1, 1, 1, 1, 0), (2, 30, 20, 20, 650)):
        total = (batch - 1) * stride + (rows - 1) * ld + cols + 3
        c0 = rng.normal(size=total)
        c = L.arr(c0)
        W.ew_zero_matrices(L, c, batch, rows, cols, ld, stride)
        want = c0.copy()
        for i in range(batch):
            for r in range(rows):
                want[i * stride + r * ld : i * stride + r * ld + cols] = 0
        check(real, f"zero_matrices b={batch} {rows}x{cols} ld={ld} stride={stride}", c, want, exact=True)


run("double")
run("float")
finish()
