"""blas.rs's gemm: the row-major Gemm (src/backend/kernels.rs) mapped onto cuBLAS's
column-major gemm_strided_batched. `gemm` below mirrors blas.rs line for line
(Problem::new, the swapped operands and flags, beta, the k = 0 path through
ew_zero_matrices, which runs in the emulator); `cublas_gemm_strided_batched`
implements cuBLAS's documented semantics (column-major, argument validation, beta = 0
never reads C) on flat buffers. Checked against the row-major definition for every
transpose pair, accumulate, alpha, padded leading dimensions and batch strides."""
import itertools

import numpy as np

import wrappers as W
from harness import Lib, check, finish

INT_MAX = 2**31 - 1


def colmajor(buf, off, rows, cols, ld):
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return off + r + c * ld


def cublas_gemm_strided_batched(transa, transb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, dtype):
    """cuBLAS: C[i] = alpha op(A[i]) op(B[i]) + beta C[i], column-major."""
    if min(m, n, k, batch) < 0 or lda < max(1, m if transa == "N" else k) or ldb < max(1, k if transb == "N" else n) \
            or ldc < max(1, m):
        raise ValueError("CUBLAS_STATUS_INVALID_VALUE")
    for i in range(batch):
        a = A[colmajor(A, i * sa, *((m, k) if transa == "N" else (k, m)), lda)].astype(np.float64)
        b = B[colmajor(B, i * sb, *((k, n) if transb == "N" else (n, k)), ldb)].astype(np.float64)
        a = a if transa == "N" else a.T
        b = b if transb == "N" else b.T
        ci = colmajor(C, i * sc, m, n, ldc)
        prod = alpha * (a @ b)
        C[ci] = (prod + beta * C[ci].astype(np.float64) if beta != 0 else prod).astype(dtype)


class Gemm:
    def __init__(self, m, n, k, trans_a, trans_b, alpha=1.0, accumulate=False, pad=(0, 0, 0),
                 batch=1, extra_stride=(0, 0, 0), broadcast_b=False):
        self.m, self.n, self.k, self.trans_a, self.trans_b = m, n, k, trans_a, trans_b
        self.lda = (m if trans_a else k) + pad[0]
        self.ldb = (k if trans_b else n) + pad[1]
        self.ldc = n + pad[2]
        self.alpha, self.accumulate, self.batch = alpha, accumulate, batch
        ra = k if trans_a else m
        rb = n if trans_b else k
        self.stride_a = ra * self.lda + extra_stride[0] if batch > 1 else 0
        self.stride_b = 0 if broadcast_b or batch == 1 else rb * self.ldb + extra_stride[1]
        self.stride_c = m * self.ldc + extra_stride[2] if batch > 1 else 0

    def extents(self):  # Gemm::extents
        def extent(rows, cols, ld, stride):
            return 0 if rows == 0 or cols == 0 or self.batch == 0 else (self.batch - 1) * stride + (rows - 1) * ld + cols
        ar, ac = (self.k, self.m) if self.trans_a else (self.m, self.k)
        br, bc = (self.n, self.k) if self.trans_b else (self.k, self.n)
        return (extent(ar, ac, self.lda, self.stride_a), extent(br, bc, self.ldb, self.stride_b),
                extent(self.m, self.n, self.ldc, self.stride_c))

    def __repr__(self):
        t = ("T" if self.trans_a else "N") + ("T" if self.trans_b else "N")
        return (f"{t} m={self.m} n={self.n} k={self.k} ld=({self.lda},{self.ldb},{self.ldc}) alpha={self.alpha} "
                f"acc={int(self.accumulate)} batch={self.batch} strides=({self.stride_a},{self.stride_b},{self.stride_c})")


def gemm(L, spec, a, b, c):
    """blas.rs `gemm`."""
    ea, eb, ec = spec.extents()
    assert a.size >= ea and b.size >= eb and c.size >= ec
    if spec.m == 0 or spec.n == 0 or spec.batch == 0:
        return
    if spec.k == 0:
        if not spec.accumulate:
            W.ew_zero_matrices(L, c, spec.batch, spec.m, spec.n, spec.ldc, spec.stride_c)
        return
    # Problem::new: C^T = op(B)^T op(A)^T, B first.
    p = dict(m=spec.n, n=spec.m, k=spec.k, ld_first=spec.ldb, ld_second=spec.lda, ldc=spec.ldc,
             stride_first=spec.stride_b, stride_second=spec.stride_a, stride_c=spec.stride_c, batch=spec.batch)
    assert all(v <= INT_MAX for v in p.values())
    beta = 1.0 if spec.accumulate else 0.0
    trans_first, trans_second = ("T" if spec.trans_b else "N"), ("T" if spec.trans_a else "N")
    alpha = float(np.float32(spec.alpha)) if L.real == "float" else spec.alpha
    cublas_gemm_strided_batched(trans_first, trans_second, p["m"], p["n"], p["k"], alpha, b, p["ld_first"],
                                p["stride_first"], a, p["ld_second"], p["stride_second"], beta, c, p["ldc"],
                                p["stride_c"], p["batch"], L.np)


def reference(spec, a, b, c):
    """The row-major definition in kernels.rs (`Gemm`), on flat buffers."""
    c = c.astype(np.float64).copy()

    def rowmajor(buf, off, rows, cols, ld):
        r, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        return buf[off + r * ld + cc].astype(np.float64)

    for i in range(spec.batch):
        A = rowmajor(a, i * spec.stride_a, *((spec.k, spec.m) if spec.trans_a else (spec.m, spec.k)), spec.lda)
        B = rowmajor(b, i * spec.stride_b, *((spec.n, spec.k) if spec.trans_b else (spec.k, spec.n)), spec.ldb)
        A = A.T if spec.trans_a else A
        B = B.T if spec.trans_b else B
        r, cc = np.meshgrid(np.arange(spec.m), np.arange(spec.n), indexing="ij")
        ci = i * spec.stride_c + r * spec.ldc + cc
        c[ci] = spec.alpha * (A @ B) + (c[ci] if spec.accumulate else 0)
    return c


def run(real):
    L = Lib(real)
    rng = np.random.default_rng(40)
    specs = []
    for ta, tb in itertools.product((False, True), repeat=2):
        specs += [
            Gemm(5, 7, 3, ta, tb),
            Gemm(5, 7, 3, ta, tb, alpha=-0.75, accumulate=True),
            Gemm(4, 6, 9, ta, tb, pad=(2, 3, 5)),
            Gemm(4, 6, 9, ta, tb, alpha=0.5, accumulate=True, pad=(1, 0, 2), batch=3, extra_stride=(4, 1, 3)),
            Gemm(3, 2, 5, ta, tb, accumulate=True, batch=2, broadcast_b=True),
            Gemm(1, 1, 1, ta, tb),
            Gemm(1, 33, 70, ta, tb, batch=2),
        ]
    specs += [Gemm(3, 4, 0, False, False, pad=(0, 0, 2), batch=2, extra_stride=(0, 0, 3)),
              Gemm(3, 4, 0, True, False, accumulate=True), Gemm(0, 4, 5, False, True), Gemm(3, 0, 5, False, False)]
    for spec in specs:
        ea, eb, ec = spec.extents()
        a, b = L.arr(rng.normal(size=max(ea, 1))), L.arr(rng.normal(size=max(eb, 1)))
        c0 = rng.normal(size=ec + 2)
        if not spec.accumulate:
            c0[:ec][rng.random(ec) < 0.2] = np.nan  # beta = 0: C must not be read ... but gaps must survive
        c = L.arr(c0)
        want = reference(spec, a, b, c0)
        # NaNs left in the gaps of an overwritten C are expected to survive; compare them as such.
        gemm(L, spec, a, b, c)
        same_nan = np.isnan(c) == np.isnan(want)
        if not same_nan.all():
            check(real, f"gemm {spec}: NaN pattern", 1.0, 0.0)
            continue
        keep = ~np.isnan(want)
        check(real, f"gemm {spec}", c[keep], want[keep])


run("double")
run("float")
finish()
