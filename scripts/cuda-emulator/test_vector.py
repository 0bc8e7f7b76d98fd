"""vec_* kernels (vector.cu through space.rs: CudaSpace, CudaBasis, the Hessian
operator's casts) against numpy f64 twins of HostSpace (src/spectral/host.rs), for
an f64 basis (double program) and an f32 basis (float program; vectors stay f64).

Sizes: n = 1, 255, 1000 (not multiples of 256; 1000 takes 4 reduction blocks) and
n = 1300 with MAX_BLOCKS shrunk to 2 (every reduction's grid-stride loop runs
three times) and ROTATE_ENTRIES shrunk so a rotation runs in chunks. Up to 10
slots, listed out of order, so vec_basis_dots_partial's second tile of 8 is
partial. Every case runs twice on fresh buffers and must give the same bits."""
import numpy as np

import wrappers as W
from harness import Lib, check, finish

TOL = {"double": 1e-13, "float": 1e-6}  # f32 basis: 1e-6 (values rounded to f32 once)


def rounded(v, real):
    return np.asarray(v, dtype=np.float32 if real == "float" else np.float64).astype(np.float64)


def case(L64, Lb, n, tag, rng_seed):
    """Every operation once; returns every result (for the determinism check)."""
    real = Lb.real
    tol = TOL[real]
    rng = np.random.default_rng(rng_seed)
    sp = W.Space(L64, n)
    out = []
    name = f"{tag} n={n} blocks={sp.blocks}"

    def chk(what, got, want, exact=False):
        got = np.asarray(got, dtype=np.float64).copy()
        out.append(got)
        check(real, f"{what} [{name}]", got, want, tol=None if exact else tol, exact=exact)

    vals = [rng.normal(size=n) for _ in range(6)]
    v = [sp.upload(a) for a in vals]
    # Plain vectors (always the double program): dot, axpy, scale, axpy_dot, axpy_norm.
    chk("dot", sp.dot(v[0], v[1]), vals[0] @ vals[1])
    sp.axpy(0.75, v[0], v[2]); h2 = vals[2] + 0.75 * vals[0]
    chk("axpy", v[2], h2)
    sp.scale(-1.5, v[3]); h3 = vals[3] * -1.5
    chk("scale", v[3], h3)
    d = sp.axpy_dot(0.5, v[0], v[2], v[1]); h2 = h2 + 0.5 * vals[0]
    chk("axpy_dot y", v[2], h2); chk("axpy_dot z.y", d, vals[1] @ h2)
    d = sp.axpy_norm(-2.0, v[1], v[3]); h3 = h3 - 2.0 * vals[1]
    chk("axpy_norm y", v[3], h3); chk("axpy_norm |y|", d, np.linalg.norm(h3))

    # Non-finite count.
    bad = vals[4].copy()
    k = 0
    for i, x in zip(range(0, n, max(n // 3, 1)), [np.nan, np.inf, -np.inf]):
        bad[i], k = x, k + 1
    chk("count_nonfinite", sp.count_nonfinite(sp.upload(bad)), k, exact=True)
    chk("count_nonfinite (none)", sp.count_nonfinite(v[4]), 0, exact=True)

    # A basis of m orthonormal vectors (rounded to the basis precision), pushed.
    m = min(10, n)
    q = np.linalg.qr(rng.normal(size=(n, m)))[0].T
    basis = sp.new_basis(m + 3, Lb)
    hb = []
    for j in range(m - 1):
        sp.basis_push(basis, sp.upload(q[j]))
        hb.append(rounded(q[j], real))
    # scale_and_push: x *= alpha, slot = (T)x.
    x = sp.upload(q[m - 1] / 3.0)
    sp.scale_and_push(3.0, x, basis)
    hb.append(rounded(q[m - 1] / 3.0 * 3.0, real))
    chk("scale_and_push x", x, q[m - 1] / 3.0 * 3.0)
    for j in range(m):
        chk(f"basis_push slot {j}" if j < m - 1 else "scale_and_push slot", basis.vecs[j], hb[j], exact=True)
    o = sp.zeros()
    sp.basis_get(basis, m // 2, o)
    chk("basis_get", o, hb[m // 2], exact=True)

    slots = list(rng.permutation(m))[: max(m - 1, 1)]  # out of order, m-1 of them
    coeffs = rng.normal(size=len(slots))
    B = np.array([hb[s] for s in slots])

    chk("basis_dots", sp.basis_dots(basis, slots, v[5]), B @ vals[5])
    y = sp.upload(vals[5]); sp.basis_subtract(basis, slots, coeffs, y)
    chk("basis_subtract", y, vals[5] - coeffs @ B)
    sp.basis_subtract(basis, [], [], y)
    chk("basis_subtract (no slots)", y, vals[5] - coeffs @ B, exact=False)

    # axpy_dot_block: y += alpha x; z.y, y.y, z.z, V y, V z.
    y = sp.upload(vals[2])
    r = sp.axpy_dot_block(0.3, v[0], y, v[1], basis, slots)
    hy = vals[2] + 0.3 * vals[0]
    chk("axpy_dot_block y", y, hy)
    chk("axpy_dot_block z.y", r["z_dot"], vals[1] @ hy)
    chk("axpy_dot_block y.y", r["norm_squared"], hy @ hy)
    chk("axpy_dot_block z.z", r["z_norm_squared"], vals[1] @ vals[1])
    chk("axpy_dot_block V y", r["slot_dots"], B @ hy)
    chk("axpy_dot_block V z", r["slot_dots_z"], B @ vals[1])
    y = sp.upload(vals[2])
    r = sp.axpy_dot_block(0.3, v[0], y, v[1], basis, [])
    chk("axpy_dot_block (no slots) z.y", r["z_dot"], vals[1] @ hy)

    # axpy_subtract_norm: y = y + alpha x - sum c v; |y|.
    y = sp.upload(vals[3])
    nr = sp.axpy_subtract_norm(-0.7, v[0], y, basis, slots, coeffs)
    hy = vals[3] - 0.7 * vals[0] - coeffs @ B
    chk("axpy_subtract_norm y", y, hy); chk("axpy_subtract_norm |y|", nr, np.linalg.norm(hy))

    # basis_orthogonalize (CGS2) and basis_project_out; with and without slots.
    for nm, f in (("basis_orthogonalize", sp.basis_orthogonalize), ("basis_project_out", sp.basis_project_out)):
        y = sp.upload(vals[4])
        c, nr = f(basis, slots, y)
        c1 = B @ vals[4]
        hy = vals[4] - c1 @ B
        if nm == "basis_orthogonalize":
            c2 = B @ hy
            hy = hy - c2 @ B
            c1 = c1 + c2
        chk(f"{nm} coeffs", c, c1); chk(f"{nm} x", y, hy); chk(f"{nm} |x|", nr, np.linalg.norm(hy))
        y = sp.upload(vals[4])
        c, nr = f(basis, [], y)
        chk(f"{nm} (no slots) |x|", nr, np.linalg.norm(vals[4]))

    # basis_combine and basis_combine_many (coefficient lists shorter than the basis).
    outs = [sp.zeros() for _ in range(3)]
    cs = [rng.normal(size=k) for k in (m, max(m - 2, 0), 0)]
    sp.basis_combine(basis, cs[0], outs[0])
    chk("basis_combine", outs[0], cs[0] @ np.array(hb))
    outs = [sp.upload(vals[0]) for _ in range(3)]
    sp.basis_combine_many(basis, cs, outs)
    for k, (c, o) in enumerate(zip(cs, outs)):
        chk(f"basis_combine_many {k} ({c.size} coeffs)", o, c @ np.array(hb)[: c.size] if c.size else np.zeros(n))

    # update_scale_push: y = (y + alpha x - sum c v) * scale; push (T)y.
    y = sp.upload(vals[5])
    sp.update_scale_push(0.4, v[1], y, basis, slots, coeffs, 1.0 / 7.0)
    hy = (vals[5] + 0.4 * vals[1] - coeffs @ B) * (1.0 / 7.0)
    hb.append(rounded(hy, real))
    chk("update_scale_push y", y, hy); chk("update_scale_push slot", basis.vecs[m], hb[m])

    # basis_set (slot 0 from a vector), basis_gram.
    sp.basis_set(basis, 0, v[2])
    hb[0] = rounded(sp_h2 := np.array(v[2]), real)
    chk("basis_set", basis.vecs[0], sp_h2, exact=True)
    H = np.array(hb)
    chk("basis_gram", sp.basis_gram(basis), (H @ H.T).T.reshape(-1))

    # basis_rotate: slots 0..cols = V S (S column-major rows x cols), cols..rows dropped,
    # later slots moved down; then a push reuses a dropped buffer.
    rows, cols = m, max(m - 3, 1)
    S = rng.normal(size=(rows, cols))
    sp.basis_rotate(basis, S.T.reshape(-1), rows, cols)
    hb = [rounded(v_, real) for v_ in (S.T @ H[:rows])] + hb[rows:]
    chk("basis_rotate len", len(basis.vecs), len(hb), exact=True)
    for j in range(len(hb)):
        chk(f"basis_rotate slot {j}", basis.vecs[j], hb[j])
    sp.basis_push(basis, v[3])
    chk("push after rotate (spare buffer)", basis.vecs[-1], np.array(v[3]), exact=True)
    sp.basis_truncate(basis, 1)
    sp.basis_rotate(basis, [2.0], 1, 1)
    chk("basis_rotate 1x1 after truncate", basis.vecs[0], rounded(2.0 * hb[0], real))

    # The Hessian operator's casts: f64 -> model precision (store / scatter into an
    # N-vector at sorted indices) and back (load / gather); the model's program is Lb.
    inp = Lb.arr(np.zeros(n))
    W.vec_cast_in(Lb, inp, v[0])
    chk("hessian cast in (vec_store)", inp, vals[0], exact=True)
    yo = sp.zeros()
    W.vec_cast_out(Lb, yo, inp)
    chk("hessian cast out (vec_load)", yo, rounded(vals[0], real), exact=True)
    N = 3 * n + 5
    idx = np.sort(rng.choice(N, n, replace=False)).astype(np.uint32)
    full0 = np.zeros(N)
    inp = Lb.arr(full0)
    W.vec_cast_in(Lb, inp, v[1], Lb.idx(idx))
    want = full0.copy(); want[idx] = vals[1]
    chk("hessian scatter in (vec_scatter)", inp, want, exact=True)
    W.vec_cast_out(Lb, yo, inp, Lb.idx(idx))
    chk("hessian gather out (vec_gather)", yo, rounded(vals[1], real), exact=True)
    return out


def run():
    L64, L32 = Lib("double"), Lib("float")
    cases = [(1, "one entry"), (255, "under a block"), (1000, "4 blocks")]
    for Lb in (L64, L32):
        for n, tag in cases:
            a = case(L64, Lb, n, tag, n)
            b = case(L64, Lb, n, tag, n)
            same = len(a) == len(b) and all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
            check(Lb.real, f"determinism n={n} (same bits twice, {len(a)} results)", 0.0 if same else 1.0, 0.0)
        # Past the fixed reduction grid: MAX_BLOCKS is 1024 in Rust (n > 262144 needed);
        # shrunk to 2 here so every reduction's grid-stride loop runs; ROTATE_ENTRIES
        # shrunk so basis_rotate runs in chunks (start > 0, a short last chunk).
        saved = W.MAX_BLOCKS, W.ROTATE_ENTRIES
        W.MAX_BLOCKS, W.ROTATE_ENTRIES = 2, 700
        a = case(L64, Lb, 1300, "grid-stride (MAX_BLOCKS=2), chunked rotation (ROTATE_ENTRIES=700)", 7)
        b = case(L64, Lb, 1300, "grid-stride (MAX_BLOCKS=2), chunked rotation (ROTATE_ENTRIES=700)", 7)
        same = all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
        check(Lb.real, "determinism n=1300 (same bits twice)", 0.0 if same else 1.0, 0.0)
        W.MAX_BLOCKS, W.ROTATE_ENTRIES = saved


run()
finish()
