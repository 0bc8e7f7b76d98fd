"""ln_* kernels (layernorm.cu through layernorm.rs) against PyTorch f64 autograd:
forward, JVP, VJP (+=) and the JVP of the VJP (+=), with and without the affine."""
import numpy as np
import torch
import torch.nn.functional as F

import wrappers as W
from harness import Lib, check, finish

torch.set_default_dtype(torch.float64)
T = torch.tensor


def run(real, affine, rows, width, tol=None):
    L = Lib(real)
    a = L.arr
    rng = np.random.default_rng(2)
    eps = 1e-5
    x = rng.normal(size=(rows, width)) * 2 + 0.5
    w, bb = rng.normal(size=width), rng.normal(size=width)
    xd, wd, bd = rng.normal(size=(rows, width)), rng.normal(size=width), rng.normal(size=width)
    dy, dyd = rng.normal(size=(rows, width)), rng.normal(size=(rows, width))
    if affine:
        f = lambda x, w, b: F.layer_norm(x, (width,), w, b, eps)  # noqa: E731
    else:
        f = lambda x, w, b: F.layer_norm(x, (width,), None, None, eps)  # noqa: E731
    y_ref = f(T(x), T(w), T(bb)).numpy()
    yd_ref = torch.func.jvp(f, (T(x), T(w), T(bb)), (T(xd), T(wd), T(bd)))[1].numpy()

    def bwd(x, w, b, g):
        return torch.func.vjp(f, x, w, b)[1](g)

    g_ref = [t.numpy() for t in bwd(T(x), T(w), T(bb), T(dy))]
    gd_ref = [t.numpy() for t in torch.func.jvp(bwd, (T(x), T(w), T(bb), T(dy)), (T(xd), T(wd), T(bd), T(dyd)))[1]]
    tag = f"{'affine' if affine else 'plain'} {rows}x{width}"
    Wt = a(w) if affine else None
    Bt = a(bb) if affine else None
    Wd = a(wd) if affine else None
    Bd = a(bd) if affine else None

    out, mean, rstd = L.full((rows, width), 9.0), L.full(rows, 9.0), L.full(rows, 9.0)
    W.ln_forward(L, out, mean, rstd, a(x), Wt, Bt, rows, width, eps)
    check(real, f"{tag} forward", out, y_ref, tol)
    check(real, f"{tag} mean", mean, x.mean(1), tol)
    check(real, f"{tag} rstd", rstd, 1 / np.sqrt(x.var(1) + eps), tol)

    od = L.full((rows, width), 9.0)
    W.ln_jvp(L, od, a(x), a(xd), mean, rstd, Wt, Wd, Bd, rows, width)
    check(real, f"{tag} jvp (overwrite)", od, yd_ref, tol)

    base, pbase = rng.normal(size=(rows, width)), rng.normal(size=width)
    dx = a(base)
    dw, db = (a(pbase), a(pbase)) if affine else (None, None)
    W.ln_backward(L, dx, dw, db, a(dy), a(x), mean, rstd, Wt, rows, width)
    check(real, f"{tag} backward dinp (+=)", dx, base + g_ref[0], tol)
    if affine:
        check(real, f"{tag} backward dweight (+=)", dw, pbase + g_ref[1], tol)
        check(real, f"{tag} backward dbias (+=)", db, pbase + g_ref[2], tol)
        dw = a(pbase)  # only one of the two parameter adjoints
        W.ln_backward(L, a(base), dw, None, a(dy), a(x), mean, rstd, Wt, rows, width)
        check(real, f"{tag} backward dweight alone (+=)", dw, pbase + g_ref[1], tol)

    dxd = a(base)
    dwd, dbd = (a(pbase), a(pbase)) if affine else (None, None)
    W.ln_backward_jvp(L, dxd, dwd, dbd, a(dy), a(dyd), a(x), a(xd), mean, rstd, Wt, Wd, rows, width)
    check(real, f"{tag} backward_jvp dinp_dot (+=)", dxd, base + gd_ref[0], tol)
    if affine:
        check(real, f"{tag} backward_jvp dweight_dot (+=)", dwd, pbase + gd_ref[1], tol)
        check(real, f"{tag} backward_jvp dbias_dot (+=)", dbd, pbase + gd_ref[2], tol)
        dbd = a(pbase)
        W.ln_backward_jvp(L, a(base), None, dbd, a(dy), a(dyd), a(x), a(xd), mean, rstd, Wt, Wd, rows, width)
        check(real, f"{tag} backward_jvp dbias_dot alone (+=)", dbd, pbase + gd_ref[2], tol)


for affine in (True, False):
    for rows, width in ((37, 70), (1, 33), (3, 300)):
        run("double", affine, rows, width)
        run("float", affine, rows, width, 2e-5)
finish()
