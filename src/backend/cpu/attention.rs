//! Causal self-attention with a key padding mask, one (sequence, head) pair per
//! rayon task, its small products through faer.
//!
//! Per pair, with `s = 1/sqrt(head_dim)`, `S = s Q K^T`, `P = softmax(S)` over the
//! allowed keys, `O = P V`:
//! - JVP: `S' = s (Q' K^T + Q K'^T)`, `P' = P * (S' - rowsum(P * S'))`, `O' = P' V + P V'`.
//! - VJP: `Pb = Ob V^T`, `Vb = P^T Ob`, `Sb = P * (Pb - rowsum(P * Pb))`,
//!   `Qb = s Sb K`, `Kb = s Sb^T Q`.
//! - tangent of the VJP: `Pb' = Ob' V^T + Ob V'^T`, `Vb' = P'^T Ob + P^T Ob'`,
//!   `Sb' = P' * (Pb - r) + P * (Pb' - r')` with `r = rowsum(P * Pb)`,
//!   `r' = rowsum(P' * Pb + P * Pb')`, `Qb' = s (Sb' K + Sb K')`, `Kb' = s (Sb'^T Q + Sb^T Q')`.
//!
//! Disallowed entries have `P = 0`, hence `P' = Sb = Sb' = 0`: masking needs no
//! special case beyond the softmax. A query with no allowed key (a left-padding
//! position) gets an all-zero row instead of NaN.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::CpuScalar;
use super::reduce::dot;
use crate::backend::AttentionDims;

/// One head of one sequence inside a `rows x width` matrix.
fn head<'a, T: CpuScalar>(x: &'a [T], d: &AttentionDims, b: usize, h: usize) -> MatRef<'a, T> {
    let w = d.width();
    MatRef::from_row_major_slice_with_stride(
        &x[b * d.seq * w + h * d.head_dim..],
        d.seq,
        d.head_dim,
        w,
    )
}

fn square<T: CpuScalar>(x: &[T], n: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(x, n, n)
}

fn square_mut<T: CpuScalar>(x: &mut [T], n: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(x, n, n)
}

/// The `seq x head_dim` block of every (sequence, head) pair of a `rows x width`
/// output, in pair order: disjoint views, so each parallel task writes its own.
fn head_blocks<'a, T: CpuScalar>(x: &'a mut [T], d: &AttentionDims) -> Vec<MatMut<'a, T>> {
    let (w, pairs) = (d.width(), d.batch * d.heads);
    let mut blocks = Vec::with_capacity(pairs);
    let mut rest =
        MatMut::from_row_major_slice_mut(&mut x[..d.batch * d.seq * w], d.batch * d.seq, w);
    for _ in 0..d.batch {
        let (mut sequence, below) = rest.split_at_row_mut(d.seq);
        rest = below;
        for _ in 0..d.heads {
            let (block, right) = sequence.split_at_col_mut(d.head_dim);
            blocks.push(block);
            sequence = right;
        }
    }
    blocks
}

/// `dst (+)= alpha * lhs * rhs`, sequential (we are inside a parallel task).
fn mm<T: CpuScalar>(
    dst: MatMut<'_, T>,
    add: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
) {
    let accum = if add { Accum::Add } else { Accum::Replace };
    matmul(dst, accum, lhs, rhs, alpha, Par::Seq);
    super::gemm::clear_upper_vector_state();
}

/// The query blocks of the causal products: `(start, end)` row ranges. Block `b`
/// sees keys `0..end` only, so products with a causal `n x n` operand skip the zero
/// blocks above its diagonal: with 4 blocks, 10 of the 16 (37.5% of the flops).
fn causal_blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = n.div_ceil(8).max(16);
    (0..n)
        .step_by(step)
        .map(move |start| (start, (start + step).min(n)))
}

/// `dst (+)= alpha * lower * rhs` for a causal (lower-triangular) `n x n` `lower`.
fn mm_causal<T: CpuScalar>(
    mut dst: MatMut<'_, T>,
    add: bool,
    lower: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
) {
    for (start, end) in causal_blocks(lower.nrows()) {
        mm(
            dst.as_mut().subrows_mut(start, end - start),
            add,
            lower.submatrix(start, 0, end - start, end),
            rhs.subrows(0, end),
            alpha,
        );
    }
}

/// `dst (+)= alpha * lower^T * rhs` for a causal `n x n` `lower`: row block `b` of
/// the result reads only the rows of `lower` from `b` on.
fn mm_causal_transposed<T: CpuScalar>(
    mut dst: MatMut<'_, T>,
    add: bool,
    lower: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
) {
    let n = lower.nrows();
    for (start, end) in causal_blocks(n) {
        mm(
            dst.as_mut().subrows_mut(start, end - start),
            add,
            lower
                .submatrix(start, start, n - start, end - start)
                .transpose(),
            rhs.subrows(start, n - start),
            alpha,
        );
    }
}

/// The causal part (on and below the diagonal, by whole blocks) of
/// `dst (+)= alpha * lhs * rhs`, an `n x n` result; the rest of `dst` is not written.
fn mm_into_causal<T: CpuScalar>(
    mut dst: MatMut<'_, T>,
    add: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
) {
    for (start, end) in causal_blocks(dst.nrows()) {
        mm(
            dst.as_mut().submatrix_mut(start, 0, end - start, end),
            add,
            lhs.subrows(start, end - start),
            rhs.subcols(0, end),
            alpha,
        );
    }
}

fn scale<T: CpuScalar>(d: &AttentionDims) -> T {
    T::ONE / T::from_usize(d.head_dim).sqrt()
}

/// `sum_j a[i,j] b[i,j]` for each row `i` of two `n x n` matrices.
fn row_dots<T: CpuScalar>(a: &[T], b: &[T], n: usize) -> Vec<T> {
    a.chunks(n)
        .zip(b.chunks(n))
        .map(|(x, y)| dot(x, y))
        .collect()
}

pub fn forward<T: CpuScalar>(
    out: &mut [T],
    probs: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    key_mask: &[u32],
    d: AttentionDims,
) {
    let n = d.seq;
    let s = scale::<T>(&d);
    probs[..d.probs_len()]
        .par_chunks_mut(n * n)
        .zip(head_blocks(out, &d))
        .enumerate()
        .for_each(|(p, (pr, o))| {
            let (b, h) = (p / d.heads, p % d.heads);
            // scores after the query stay unwritten: the softmax zeroes them
            mm_into_causal(
                square_mut(pr, n),
                false,
                head(q, &d, b, h),
                head(k, &d, b, h).transpose(),
                s,
            );
            let mask = &key_mask[b * n..(b + 1) * n];
            for (i, row) in pr.chunks_mut(n).enumerate() {
                softmax_causal(row, i, mask);
            }
            mm_causal(o, false, square(pr, n), head(v, &d, b, h), T::ONE);
        });
}

/// In place: scores of query `i` to probabilities over keys `j <= i` with `mask[j] != 0`.
fn softmax_causal<T: CpuScalar>(row: &mut [T], i: usize, mask: &[u32]) {
    let allowed = |j: usize| j <= i && mask[j] != 0;
    let mut max: Option<T> = None;
    for (j, &x) in row.iter().enumerate() {
        if allowed(j) {
            max = Some(max.map_or(x, |m: T| m.max(x)));
        }
    }
    let Some(max) = max else {
        row.fill(T::ZERO);
        return;
    };
    // keys after the query are never allowed: exponentiate only up to it
    let (past, future) = row.split_at_mut(i + 1);
    T::exp_shifted(past, max);
    future.fill(T::ZERO);
    let mut sum = T::ZERO;
    for (j, x) in past.iter_mut().enumerate() {
        if !allowed(j) {
            *x = T::ZERO;
        }
        sum += *x;
    }
    let inv = T::ONE / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `P * (X - rowsum(P * X))`, the softmax Jacobian (transposed or not: it is
/// symmetric) applied row by row, in place on `x`. Only the causal part of `x` is
/// read (`P` is 0 after each query); the rest is set to 0.
fn softmax_jacobian<T: CpuScalar>(x: &mut [T], p: &[T], n: usize) {
    for (i, (xr, pr)) in x.chunks_mut(n).zip(p.chunks(n)).enumerate() {
        let (past, future) = xr.split_at_mut(i + 1);
        let r = dot(&pr[..=i], past);
        past.iter_mut()
            .zip(pr)
            .for_each(|(x, &p)| *x = p * (*x - r));
        future.fill(T::ZERO);
    }
}

#[allow(clippy::too_many_arguments)]
pub fn jvp<T: CpuScalar>(
    out_dot: &mut [T],
    probs_dot: &mut [T],
    probs: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    q_dot: &[T],
    k_dot: &[T],
    v_dot: &[T],
    d: AttentionDims,
) {
    let n = d.seq;
    let s = scale::<T>(&d);
    probs_dot[..d.probs_len()]
        .par_chunks_mut(n * n)
        .zip(head_blocks(out_dot, &d))
        .enumerate()
        .for_each(|(p, (pd, mut o))| {
            let (b, h) = (p / d.heads, p % d.heads);
            let pr = &probs[p * n * n..(p + 1) * n * n];
            mm_into_causal(
                square_mut(pd, n),
                false,
                head(q_dot, &d, b, h),
                head(k, &d, b, h).transpose(),
                s,
            );
            mm_into_causal(
                square_mut(pd, n),
                true,
                head(q, &d, b, h),
                head(k_dot, &d, b, h).transpose(),
                s,
            );
            softmax_jacobian(pd, pr, n);
            mm_causal(o.as_mut(), false, square(pd, n), head(v, &d, b, h), T::ONE);
            mm_causal(o, true, square(pr, n), head(v_dot, &d, b, h), T::ONE);
        });
}

/// The blocks of the three outputs `(dq, dk, dv)` of every (sequence, head) pair.
fn grad_blocks<'a, T: CpuScalar>(
    dq: &'a mut [T],
    dk: &'a mut [T],
    dv: &'a mut [T],
    d: &AttentionDims,
) -> Vec<(MatMut<'a, T>, MatMut<'a, T>, MatMut<'a, T>)> {
    let (q, k) = (head_blocks(dq, d), head_blocks(dk, d));
    q.into_iter()
        .zip(k)
        .zip(head_blocks(dv, d))
        .map(|((q, k), v)| (q, k, v))
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuScalar>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    dout: &[T],
    probs: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    d: AttentionDims,
) {
    let n = d.seq;
    let s = scale::<T>(&d);
    grad_blocks(dq, dk, dv, &d)
        .into_par_iter()
        .enumerate()
        .for_each(|(p, (qb, kb, vb))| {
            let (b, h) = (p / d.heads, p % d.heads);
            let pr = &probs[p * n * n..(p + 1) * n * n];
            let ob = head(dout, &d, b, h);
            let mut sb = vec![T::ZERO; n * n];
            mm_into_causal(
                square_mut(&mut sb, n),
                false,
                ob,
                head(v, &d, b, h).transpose(),
                T::ONE,
            );
            softmax_jacobian(&mut sb, pr, n);
            mm_causal_transposed(vb, false, square(pr, n), ob, T::ONE);
            mm_causal(qb, false, square(&sb, n), head(k, &d, b, h), s);
            mm_causal_transposed(kb, false, square(&sb, n), head(q, &d, b, h), s);
        });
}

#[allow(clippy::too_many_arguments)]
pub fn backward_jvp<T: CpuScalar>(
    dq_dot: &mut [T],
    dk_dot: &mut [T],
    dv_dot: &mut [T],
    dout: &[T],
    dout_dot: &[T],
    probs: &[T],
    probs_dot: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    q_dot: &[T],
    k_dot: &[T],
    v_dot: &[T],
    d: AttentionDims,
) {
    let n = d.seq;
    let s = scale::<T>(&d);
    grad_blocks(dq_dot, dk_dot, dv_dot, &d)
        .into_par_iter()
        .enumerate()
        .for_each(|(p, (mut qb, mut kb, mut vb))| {
            let (b, h) = (p / d.heads, p % d.heads);
            let nn = p * n * n..(p + 1) * n * n;
            let (pr, pd) = (&probs[nn.clone()], &probs_dot[nn]);
            let (ob, obd) = (head(dout, &d, b, h), head(dout_dot, &d, b, h));
            let (qh, kh, vh) = (head(q, &d, b, h), head(k, &d, b, h), head(v, &d, b, h));
            let (qd, kd, vd) = (
                head(q_dot, &d, b, h),
                head(k_dot, &d, b, h),
                head(v_dot, &d, b, h),
            );
            // Pb = Ob V^T and Pb' = Ob' V^T + Ob V'^T
            // (zero after each query, as P is)
            let mut pb = vec![T::ZERO; n * n];
            mm_into_causal(square_mut(&mut pb, n), false, ob, vh.transpose(), T::ONE);
            let mut pbd = vec![T::ZERO; n * n];
            mm_into_causal(square_mut(&mut pbd, n), false, obd, vh.transpose(), T::ONE);
            mm_into_causal(square_mut(&mut pbd, n), true, ob, vd.transpose(), T::ONE);
            // Sb and Sb'
            let r = row_dots(pr, &pb, n);
            let r_dot: Vec<T> = row_dots(pd, &pb, n)
                .into_iter()
                .zip(row_dots(pr, &pbd, n))
                .map(|(a, b)| a + b)
                .collect();
            let mut sb = vec![T::ZERO; n * n];
            let mut sbd = vec![T::ZERO; n * n];
            let rows = sb.chunks_mut(n).zip(sbd.chunks_mut(n));
            let inputs = pr
                .chunks(n)
                .zip(pd.chunks(n))
                .zip(pb.chunks(n).zip(pbd.chunks(n)));
            for (i, ((sb, sbd), ((pr, pd), (pb, pbd)))) in rows.zip(inputs).enumerate() {
                // only the causal past: P and P' are 0 after the query (sb, sbd stay 0)
                let (r, r_dot) = (r[i], r_dot[i]);
                let outs = sb.iter_mut().zip(sbd.iter_mut()).take(i + 1);
                let ins = pr.iter().zip(pd).zip(pb.iter().zip(pbd));
                for ((s, s_dot), ((&p, &p_dot), (&b, &b_dot))) in outs.zip(ins) {
                    *s = p * (b - r);
                    *s_dot = p_dot * (b - r) + p * (b_dot - r_dot);
                }
            }
            mm_causal_transposed(vb.as_mut(), false, square(pd, n), ob, T::ONE);
            mm_causal_transposed(vb, true, square(pr, n), obd, T::ONE);
            mm_causal(qb.as_mut(), false, square(&sbd, n), kh, s);
            mm_causal(qb, true, square(&sb, n), kd, s);
            mm_causal_transposed(kb.as_mut(), false, square(&sbd, n), qh, s);
            mm_causal_transposed(kb, true, square(&sb, n), qd, s);
        });
}
