"""attn_* kernels (attention.cu through attention.rs) against PyTorch f64 autograd:
causal attention with a key padding mask, including a query row with no allowed key
(all-zero probabilities) and a sequence longer than the key kernels' 128-query tile."""
import numpy as np
import torch

import wrappers as W
from harness import Lib, check, finish

torch.set_default_dtype(torch.float64)
T = torch.tensor


def ref_fns(B, H, S, D, mask):
    allowed = torch.tril(torch.ones(S, S, dtype=torch.bool))[None, None] & T(mask != 0).view(B, 1, 1, S)
    anyk = allowed.any(-1, keepdim=True)

    def probs(q, k):
        qh = q.view(B, S, H, D).transpose(1, 2)
        kh = k.view(B, S, H, D).transpose(1, 2)
        s = qh @ kh.transpose(-1, -2) / np.sqrt(D)
        ss = torch.where(allowed, s, 0.0)
        m = torch.where(allowed, s, -1e300).amax(-1, keepdim=True).detach()
        m = torch.where(anyk, m, 0.0)
        e = torch.where(allowed, torch.exp(ss - m), 0.0)
        tot = e.sum(-1, keepdim=True)
        return e / torch.where(anyk, tot, 1.0)

    def out(q, k, v):
        p = probs(q, k)
        vh = v.view(B, S, H, D).transpose(1, 2)
        return (p @ vh).transpose(1, 2).reshape(B * S, H * D)

    return probs, out


def run(real, B, H, S, D, mask, tol=None):
    L = Lib(real)
    rng = np.random.default_rng(3)
    a = L.arr
    R, Wd = B * S, H * D
    q, k, v, qd, kd, vd, do, dod = (rng.normal(size=(R, Wd)) for _ in range(8))
    probs_f, out_f = ref_fns(B, H, S, D, mask)
    P_ref, O_ref = probs_f(T(q), T(k)).numpy(), out_f(T(q), T(k), T(v)).numpy()
    Pd_ref = torch.func.jvp(probs_f, (T(q), T(k)), (T(qd), T(kd)))[1].numpy()
    Od_ref = torch.func.jvp(out_f, (T(q), T(k), T(v)), (T(qd), T(kd), T(vd)))[1].numpy()

    def bwd(q, k, v, g):
        return torch.func.vjp(out_f, q, k, v)[1](g)

    G_ref = [t.numpy() for t in bwd(T(q), T(k), T(v), T(do))]
    Gd_ref = [t.numpy() for t in torch.func.jvp(bwd, (T(q), T(k), T(v), T(do)), (T(qd), T(kd), T(vd), T(dod)))[1]]
    dims = (B, S, H, D)
    tag = f"B={B} H={H} S={S} D={D}"
    out, P = L.full((R, Wd), 9.0), L.full((B, H, S, S), 9.0)
    W.attn_forward(L, out, P, a(q), a(k), a(v), L.idx(mask), dims)
    check(real, f"{tag} probs", P, P_ref, tol)
    check(real, f"{tag} out", out, O_ref, tol)
    od, Pd = L.full((R, Wd), 9.0), L.full((B, H, S, S), 9.0)
    W.attn_jvp(L, od, Pd, P, a(q), a(k), a(v), a(qd), a(kd), a(vd), dims)
    check(real, f"{tag} probs_dot", Pd, Pd_ref, tol)
    check(real, f"{tag} out_dot", od, Od_ref, tol)
    dq, dk, dv = (L.full((R, Wd), 9.0) for _ in range(3))
    W.attn_backward(L, dq, dk, dv, a(do), P, a(q), a(k), a(v), dims)
    for n, g, r in zip("qkv", (dq, dk, dv), G_ref):
        check(real, f"{tag} backward d{n} (overwrite)", g, r, tol)
    dq, dk, dv = (L.full((R, Wd), 9.0) for _ in range(3))
    W.attn_backward_jvp(L, dq, dk, dv, a(do), a(dod), P, Pd, a(q), a(k), a(v), a(qd), a(kd), a(vd), dims)
    for n, g, r in zip("qkv", (dq, dk, dv), Gd_ref):
        check(real, f"{tag} backward_jvp d{n}_dot (overwrite)", g, r, tol)


S = 9
# Sequence 1 masks its first two keys: its query 0 and 1 rows have no allowed key.
mask = np.array([1] * S + [0, 0, 1, 1, 0, 1, 1, 1, 1], dtype=np.uint32)
run("double", 2, 2, S, 40, mask)
run("float", 2, 2, S, 40, mask, 2e-5)
run("double", 2, 1, S, 130, mask)  # head_dim over 128 threads: 160-thread blocks
run("double", 1, 1, 1, 1, np.ones(1, dtype=np.uint32))  # one token, head_dim 1
S = 130  # more queries than ATTN_TILE (128); double only (the emulator is slow here)
m = np.ones(S, dtype=np.uint32)
m[[0, 1, 2, 50]] = 0
run("double", 1, 1, S, 16, m)
finish()
