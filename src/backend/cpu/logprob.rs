//! Token log-probabilities `lp[r] = logits[r, t_r] - logsumexp(logits[r])`, the part
//! of both losses that touches the vocabulary, with its four rules.
//!
//! The softmax `p` of each scored row is saved by the forward (one exp per logit,
//! with the row maximum subtracted); the other rules only read it.

use rayon::prelude::*;

use super::CpuScalar;
use super::reduce::{dot, sum};
use crate::backend::NO_TARGET;

/// Row `r`'s target, if it has one.
pub(super) fn target(targets: &[u32], r: usize) -> Option<usize> {
    let t = targets[r];
    (t != NO_TARGET).then_some(t as usize)
}

pub fn forward<T: CpuScalar>(
    lp: &mut [T],
    probs: &mut [T],
    logits: &[T],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) {
    lp[..rows]
        .par_iter_mut()
        .zip(probs[..rows * vocab].par_chunks_mut(vocab))
        .enumerate()
        .for_each(|(r, (lp, p))| {
            let Some(t) = target(targets, r) else {
                *lp = T::ZERO;
                return;
            };
            let l = &logits[r * vocab..(r + 1) * vocab];
            let max = l.iter().fold(l[0], |m, &x| m.max(x));
            p.copy_from_slice(l);
            T::exp_shifted(p, max);
            let total = sum(p);
            let inv = T::ONE / total;
            p.iter_mut().for_each(|p| *p *= inv);
            *lp = l[t] - max - total.ln();
        });
}

pub fn jvp<T: CpuScalar>(
    lp_dot: &mut [T],
    probs: &[T],
    logits_dot: &[T],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) {
    lp_dot[..rows]
        .par_iter_mut()
        .enumerate()
        .for_each(|(r, out)| {
            *out = match target(targets, r) {
                Some(t) => {
                    let ld = &logits_dot[r * vocab..(r + 1) * vocab];
                    ld[t] - dot(&probs[r * vocab..(r + 1) * vocab], ld)
                }
                None => T::ZERO,
            };
        });
}

pub fn backward<T: CpuScalar>(
    dlogits: &mut [T],
    probs: &[T],
    dlp: &[T],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) {
    dlogits[..rows * vocab]
        .par_chunks_mut(vocab)
        .enumerate()
        .for_each(|(r, dl)| match target(targets, r) {
            Some(t) => {
                let p = &probs[r * vocab..(r + 1) * vocab];
                dl.iter_mut().zip(p).for_each(|(d, &p)| *d = -dlp[r] * p);
                dl[t] += dlp[r];
            }
            None => dl.fill(T::ZERO),
        });
}

#[allow(clippy::too_many_arguments)]
pub fn backward_jvp<T: CpuScalar>(
    dlogits_dot: &mut [T],
    probs: &[T],
    logits_dot: &[T],
    dlp: &[T],
    dlp_dot: &[T],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) {
    dlogits_dot[..rows * vocab]
        .par_chunks_mut(vocab)
        .enumerate()
        .for_each(|(r, dld)| match target(targets, r) {
            Some(t) => {
                let span = r * vocab..(r + 1) * vocab;
                let (p, ld) = (&probs[span.clone()], &logits_dot[span]);
                let pl = dot(p, ld);
                let (a, ad) = (dlp[r], dlp_dot[r]);
                // ad (e_t - p) - a p (ld - pl)
                for ((d, &p), &l) in dld.iter_mut().zip(p).zip(ld) {
                    *d = -ad * p - a * p * (l - pl);
                }
                dld[t] += ad;
            }
            None => dld.fill(T::ZERO),
        });
}
