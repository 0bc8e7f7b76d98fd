//! LayerNorm over the rows of a matrix, with its four rules.
//!
//! Per row: `xhat = (x - mean) * rstd`, `rstd = 1/sqrt(var + eps)` with the biased
//! variance computed in two passes as PyTorch does, `y = xhat * w + b`. Along a
//! tangent `xdot`: with `a = mean(xhat * xdot)`, `rstd_dot = -rstd^2 a` and
//! `xhat_dot = rstd (xdot - mean(xdot) - xhat a)`.

use std::borrow::Cow;

use rayon::prelude::*;

use super::reduce::{dot, squared_deviation, sum};
use super::{CpuScalar, blocked_rows};

/// Rows per parallel task.
const MIN_ROWS: usize = 4;

/// A LayerNorm parameter row, or `fill` repeated when there is none: the row loops
/// then zip plain slices, which the compiler vectorises (an `Option` looked up per
/// element kept them scalar). Adding 0 or multiplying by 1 leaves values unchanged.
fn or_filled<T: CpuScalar>(param: Option<&[T]>, width: usize, fill: T) -> Cow<'_, [T]> {
    match param {
        Some(p) => Cow::Borrowed(&p[..width]),
        None => Cow::Owned(vec![fill; width]),
    }
}

/// `1 / width`, the factor of every row mean.
fn inv_len<T: CpuScalar>(width: usize) -> T {
    T::ONE / T::from_usize(width)
}

/// `xhat` of one row from its saved statistics.
fn normalise<T: CpuScalar>(xhat: &mut [T], x: &[T], mean: T, rstd: T) {
    xhat.iter_mut()
        .zip(x)
        .for_each(|(h, &x)| *h = (x - mean) * rstd);
}

/// `xhat_dot` of one row (see the module doc); returns `a = mean(xhat * xdot)`.
fn normalise_dot<T: CpuScalar>(xhat_dot: &mut [T], xhat: &[T], xdot: &[T], rstd: T) -> T {
    let inv_n = inv_len::<T>(xhat.len());
    let a = dot(xhat, xdot) * inv_n;
    let m = sum(xdot) * inv_n;
    for ((hd, &h), &d) in xhat_dot.iter_mut().zip(xhat).zip(xdot) {
        *hd = rstd * (d - m - h * a);
    }
    a
}

#[allow(clippy::too_many_arguments)]
pub fn forward<T: CpuScalar>(
    out: &mut [T],
    mean_out: &mut [T],
    rstd_out: &mut [T],
    inp: &[T],
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    rows: usize,
    width: usize,
    eps: f64,
) {
    let eps = T::from_f64(eps);
    let (w, b) = (
        or_filled(weight, width, T::ONE),
        or_filled(bias, width, T::ZERO),
    );
    out[..rows * width]
        .par_chunks_mut(width)
        .zip(mean_out[..rows].par_iter_mut().zip(&mut rstd_out[..rows]))
        .enumerate()
        .with_min_len(MIN_ROWS)
        .for_each(|(r, (y, (mu, rs)))| {
            let x = &inp[r * width..(r + 1) * width];
            let m = sum(x) * inv_len::<T>(width);
            let var = squared_deviation(x, m) * inv_len::<T>(width);
            let rstd = T::ONE / (var + eps).sqrt();
            *mu = m;
            *rs = rstd;
            for ((y, &x), (&w, &b)) in y.iter_mut().zip(x).zip(w.iter().zip(b.iter())) {
                *y = (x - m) * rstd * w + b;
            }
        });
}

#[allow(clippy::too_many_arguments)]
pub fn jvp<T: CpuScalar>(
    out_dot: &mut [T],
    inp: &[T],
    inp_dot: &[T],
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    weight_dot: Option<&[T]>,
    bias_dot: Option<&[T]>,
    rows: usize,
    width: usize,
) {
    let w = or_filled(weight, width, T::ONE);
    let (wd, bd) = (
        or_filled(weight_dot, width, T::ZERO),
        or_filled(bias_dot, width, T::ZERO),
    );
    blocked_rows(out_dot, width, rows, 0, 2 * width, |r, yd, _, scratch| {
        let (xhat, xhat_dot) = scratch.split_at_mut(width);
        let span = r * width..(r + 1) * width;
        normalise(xhat, &inp[span.clone()], mean[r], rstd[r]);
        normalise_dot(xhat_dot, xhat, &inp_dot[span], rstd[r]);
        // every slice cut to `width`, so the indexed loop has no bounds checks left
        let (yd, xhat, xhat_dot) = (&mut yd[..width], &xhat[..width], &xhat_dot[..width]);
        let (w, wd, bd) = (&w[..width], &wd[..width], &bd[..width]);
        for c in 0..width {
            yd[c] = xhat_dot[c] * w[c] + xhat[c] * wd[c] + bd[c];
        }
    });
}

/// The parameter sums of a backward rule, when any is wanted: `2 * width` of them
/// (weight then bias), or none.
fn sums_len(weight: bool, bias: bool, width: usize) -> usize {
    if weight || bias { 2 * width } else { 0 }
}

/// Adds the `[weight | bias]` halves of `sums` into the outputs that are given.
fn add_sums<T: CpuScalar>(sums: &[T], weight: Option<&mut [T]>, bias: Option<&mut [T]>) {
    let (sw, sb) = sums.split_at(sums.len() / 2);
    for (out, s) in [(weight, sw), (bias, sb)] {
        if let Some(out) = out {
            out.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
        }
    }
}

/// Input adjoint per row, and `[sum dout * xhat | sum dout]` in the same sweep.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuScalar>(
    dinp: &mut [T],
    dweight: Option<&mut [T]>,
    dbias: Option<&mut [T]>,
    dout: &[T],
    inp: &[T],
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    rows: usize,
    width: usize,
) {
    let w = or_filled(weight, width, T::ONE);
    let inv_n = inv_len::<T>(width);
    let n_sums = sums_len(dweight.is_some(), dbias.is_some(), width);
    let sums = blocked_rows(
        dinp,
        width,
        rows,
        n_sums,
        2 * width,
        |r, dx, sums, scratch| {
            let (xhat, g) = scratch.split_at_mut(width);
            let span = r * width..(r + 1) * width;
            let dy = &dout[span.clone()];
            normalise(xhat, &inp[span], mean[r], rstd[r]);
            for ((g, &dy), &w) in g.iter_mut().zip(dy).zip(w.iter()) {
                *g = dy * w;
            }
            let mg = sum(g) * inv_n;
            let mgx = dot(g, xhat) * inv_n;
            for ((dx, &g), &h) in dx.iter_mut().zip(g.iter()).zip(xhat.iter()) {
                *dx += rstd[r] * (g - mg - h * mgx);
            }
            if !sums.is_empty() {
                let (sw, sb) = sums.split_at_mut(width);
                let (sw, sb, dy, xhat) = (
                    &mut sw[..width],
                    &mut sb[..width],
                    &dy[..width],
                    &xhat[..width],
                );
                for c in 0..width {
                    sw[c] += dy[c] * xhat[c];
                    sb[c] += dy[c];
                }
            }
        },
    );
    if n_sums > 0 {
        add_sums(&sums, dweight, dbias);
    }
}

/// The tangent of [`backward`], with `[sum (dout_dot * xhat + dout * xhat_dot) |
/// sum dout_dot]` in the same sweep.
#[allow(clippy::too_many_arguments)]
pub fn backward_jvp<T: CpuScalar>(
    dinp_dot: &mut [T],
    dweight_dot: Option<&mut [T]>,
    dbias_dot: Option<&mut [T]>,
    dout: &[T],
    dout_dot: &[T],
    inp: &[T],
    inp_dot: &[T],
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    weight_dot: Option<&[T]>,
    rows: usize,
    width: usize,
) {
    let (w, wd) = (
        or_filled(weight, width, T::ONE),
        or_filled(weight_dot, width, T::ZERO),
    );
    let inv_n = inv_len::<T>(width);
    let n_sums = sums_len(dweight_dot.is_some(), dbias_dot.is_some(), width);
    let sums = blocked_rows(
        dinp_dot,
        width,
        rows,
        n_sums,
        4 * width,
        |r, dxd, sums, scratch| {
            let (xhat, rest) = scratch.split_at_mut(width);
            let (xhat_dot, rest) = rest.split_at_mut(width);
            let (g, g_dot) = rest.split_at_mut(width);
            let span = r * width..(r + 1) * width;
            let rs = rstd[r];
            normalise(xhat, &inp[span.clone()], mean[r], rs);
            let a = normalise_dot(xhat_dot, xhat, &inp_dot[span.clone()], rs);
            let rstd_dot = -rs * rs * a;
            // every slice cut to `width`, so the indexed loops have no bounds checks left
            let (dy, dyd) = (&dout[span.clone()][..width], &dout_dot[span][..width]);
            let (g, g_dot, dxd) = (&mut g[..width], &mut g_dot[..width], &mut dxd[..width]);
            let (xhat, xhat_dot, w, wd) = (
                &xhat[..width],
                &xhat_dot[..width],
                &w[..width],
                &wd[..width],
            );
            for c in 0..width {
                g[c] = dy[c] * w[c];
                g_dot[c] = dyd[c] * w[c] + dy[c] * wd[c];
            }
            let mg = sum(g) * inv_n;
            let mgx = dot(g, xhat) * inv_n;
            let mgd = sum(g_dot) * inv_n;
            let mgx_dot = (dot(g_dot, xhat) + dot(g, xhat_dot)) * inv_n;
            for c in 0..width {
                let primal = g[c] - mg - xhat[c] * mgx;
                let tangent = g_dot[c] - mgd - xhat_dot[c] * mgx - xhat[c] * mgx_dot;
                dxd[c] += rstd_dot * primal + rs * tangent;
            }
            if !sums.is_empty() {
                let (sw, sb) = sums.split_at_mut(width);
                let (sw, sb) = (&mut sw[..width], &mut sb[..width]);
                for c in 0..width {
                    sw[c] += dyd[c] * xhat[c] + dy[c] * xhat_dot[c];
                    sb[c] += dyd[c];
                }
            }
        },
    );
    if n_sums > 0 {
        add_sums(&sums, dweight_dot, dbias_dot);
    }
}
