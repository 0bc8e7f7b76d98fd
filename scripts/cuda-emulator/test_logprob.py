"""lp_* kernels (logprob.cu through logprob.rs) against PyTorch f64 autograd, with
rows that have no target (NO_TARGET): lp 0, no adjoint, probs left alone."""
import numpy as np
import torch

import wrappers as W
from harness import Lib, check, finish

torch.set_default_dtype(torch.float64)
NT = 0xFFFFFFFF


def run(real, rows, vocab, tg):
    L = Lib(real)
    a = L.arr
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(rows, vocab)) * 3
    ld, dlp, dlpd = rng.normal(size=(rows, vocab)), rng.normal(size=rows), rng.normal(size=rows)
    has = tg != NT

    def f(l):
        lse = torch.logsumexp(l, -1)
        t = torch.tensor(np.where(has, tg, 0).astype(np.int64))
        return torch.where(torch.tensor(has), l.gather(1, t[:, None])[:, 0] - lse, 0.0)

    lt = torch.tensor(logits)
    lp_ref, probs_ref = f(lt).numpy(), torch.softmax(lt, -1).numpy()
    lp_ref_jvp = torch.func.jvp(f, (lt,), (torch.tensor(ld),))[1].numpy()

    def bwd(l, g):
        return torch.func.vjp(f, l)[1](g)[0]

    dl_ref = bwd(lt, torch.tensor(dlp)).numpy()
    dld_ref = torch.func.jvp(bwd, (lt, torch.tensor(dlp)), (torch.tensor(ld), torch.tensor(dlpd)))[1].numpy()
    tag = f"rows={rows} vocab={vocab}"
    TG = L.idx(tg)
    lp, probs = L.full(rows, 7.0), L.full((rows, vocab), 5.0)
    W.lp_forward(L, lp, probs, a(logits), TG, rows, vocab)
    check(real, f"{tag} lp", lp, lp_ref)
    check(real, f"{tag} probs (target rows)", probs[has], probs_ref[has])
    check(real, f"{tag} probs untouched without target", probs[~has], np.full(((~has).sum(), vocab), 5.0), exact=True)
    lpd = L.full(rows, 7.0)
    W.lp_jvp(L, lpd, probs, a(ld), TG, rows, vocab)
    check(real, f"{tag} jvp (overwrite)", lpd, lp_ref_jvp)
    dl = L.full((rows, vocab), 7.0)
    W.lp_backward(L, dl, probs, a(dlp), TG, rows, vocab)
    check(real, f"{tag} backward (overwrite)", dl, dl_ref)
    dld = L.full((rows, vocab), 7.0)
    W.lp_backward_jvp(L, dld, probs, a(ld), a(dlp), a(dlpd), TG, rows, vocab)
    check(real, f"{tag} backward_jvp (overwrite)", dld, dld_ref)


for real in ("double", "float"):
    run(real, 5, 300, np.array([3, NT, 299, 0, 17], dtype=np.uint32))
    run(real, 1, 7, np.array([6], dtype=np.uint32))
    run(real, 3, 1000, np.array([NT, 999, 512], dtype=np.uint32))
finish()
