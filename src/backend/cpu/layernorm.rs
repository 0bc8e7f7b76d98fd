//! LayerNorm over the rows of a matrix, with its four rules.
//!
//! Per row: `xhat = (x - mean) * rstd`, `rstd = 1/sqrt(var + eps)` with the biased
//! variance computed in two passes as PyTorch does, `y = xhat * w + b`. Along a
//! tangent `xdot`: with `a = mean(xhat * xdot)`, `rstd_dot = -rstd^2 a` and
//! `xhat_dot = rstd (xdot - mean(xdot) - xhat a)`.

use rayon::prelude::*;

use super::reduce::{dot, squared_deviation, sum};
use super::{CpuScalar, column_sums};

/// Rows per parallel task.
const MIN_ROWS: usize = 4;

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
            for (c, (y, &x)) in y.iter_mut().zip(x).enumerate() {
                let w = weight.map_or(T::ONE, |w| w[c]);
                let b = bias.map_or(T::ZERO, |b| b[c]);
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
    out_dot[..rows * width]
        .par_chunks_mut(width)
        .enumerate()
        .with_min_len(MIN_ROWS)
        .for_each_init(
            || (vec![T::ZERO; width], vec![T::ZERO; width]),
            |(xhat, xhat_dot), (r, yd)| {
                let span = r * width..(r + 1) * width;
                normalise(xhat, &inp[span.clone()], mean[r], rstd[r]);
                normalise_dot(xhat_dot, xhat, &inp_dot[span], rstd[r]);
                for c in 0..width {
                    let w = weight.map_or(T::ONE, |w| w[c]);
                    let mut v = xhat_dot[c] * w;
                    if let Some(wd) = weight_dot {
                        v += xhat[c] * wd[c];
                    }
                    if let Some(bd) = bias_dot {
                        v += bd[c];
                    }
                    yd[c] = v;
                }
            },
        );
}

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
    dinp[..rows * width]
        .par_chunks_mut(width)
        .enumerate()
        .with_min_len(MIN_ROWS)
        .for_each_init(
            || (vec![T::ZERO; width], vec![T::ZERO; width]),
            |(xhat, g), (r, dx)| {
                let span = r * width..(r + 1) * width;
                normalise(xhat, &inp[span.clone()], mean[r], rstd[r]);
                for (c, (g, &dy)) in g.iter_mut().zip(&dout[span]).enumerate() {
                    *g = dy * weight.map_or(T::ONE, |w| w[c]);
                }
                let mg = sum(g) * inv_len::<T>(width);
                let mgx = dot(g, xhat) * inv_len::<T>(width);
                for ((dx, &g), &h) in dx.iter_mut().zip(g.iter()).zip(xhat.iter()) {
                    *dx += rstd[r] * (g - mg - h * mgx);
                }
            },
        );
    if dweight.is_none() && dbias.is_none() {
        return;
    }
    // [sum dout * xhat | sum dout]
    let sums = column_sums(rows, width, 2, |r, acc: &mut [T]| {
        let (aw, ab) = acc.split_at_mut(width);
        let x = &inp[r * width..(r + 1) * width];
        let dy = &dout[r * width..(r + 1) * width];
        for c in 0..width {
            aw[c] += dy[c] * (x[c] - mean[r]) * rstd[r];
            ab[c] += dy[c];
        }
    });
    if let Some(dw) = dweight {
        dw.iter_mut()
            .zip(&sums[..width])
            .for_each(|(d, &s)| *d += s);
    }
    if let Some(db) = dbias {
        db.iter_mut()
            .zip(&sums[width..])
            .for_each(|(d, &s)| *d += s);
    }
}

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
    dinp_dot[..rows * width]
        .par_chunks_mut(width)
        .enumerate()
        .with_min_len(MIN_ROWS)
        .for_each_init(
            || vec![T::ZERO; 4 * width],
            |scratch, (r, dxd)| {
                let (xhat, rest) = scratch.split_at_mut(width);
                let (xhat_dot, rest) = rest.split_at_mut(width);
                let (g, g_dot) = rest.split_at_mut(width);
                let span = r * width..(r + 1) * width;
                let rs = rstd[r];
                normalise(xhat, &inp[span.clone()], mean[r], rs);
                let a = normalise_dot(xhat_dot, xhat, &inp_dot[span.clone()], rs);
                let rstd_dot = -rs * rs * a;
                let (dy, dyd) = (&dout[span.clone()], &dout_dot[span]);
                for c in 0..width {
                    let w = weight.map_or(T::ONE, |w| w[c]);
                    g[c] = dy[c] * w;
                    g_dot[c] = dyd[c] * w + weight_dot.map_or(T::ZERO, |wd| dy[c] * wd[c]);
                }
                let inv_n = inv_len::<T>(width);
                let mg = sum(g) * inv_n;
                let mgx = dot(g, xhat) * inv_n;
                let mgd = sum(g_dot) * inv_n;
                let mgx_dot = (dot(g_dot, xhat) + dot(g, xhat_dot)) * inv_n;
                for c in 0..width {
                    let primal = g[c] - mg - xhat[c] * mgx;
                    let tangent = g_dot[c] - mgd - xhat_dot[c] * mgx - xhat[c] * mgx_dot;
                    dxd[c] += rstd_dot * primal + rs * tangent;
                }
            },
        );
    if dweight_dot.is_none() && dbias_dot.is_none() {
        return;
    }
    // [sum (dout_dot * xhat + dout * xhat_dot) | sum dout_dot]
    let sums = column_sums(rows, width, 2, |r, acc: &mut [T]| {
        let mut xhat = vec![T::ZERO; width];
        let mut xhat_dot = vec![T::ZERO; width];
        let span = r * width..(r + 1) * width;
        normalise(&mut xhat, &inp[span.clone()], mean[r], rstd[r]);
        normalise_dot(&mut xhat_dot, &xhat, &inp_dot[span.clone()], rstd[r]);
        let (aw, ab) = acc.split_at_mut(width);
        let (dy, dyd) = (&dout[span.clone()], &dout_dot[span]);
        for c in 0..width {
            aw[c] += dyd[c] * xhat[c] + dy[c] * xhat_dot[c];
            ab[c] += dyd[c];
        }
    });
    if let Some(dw) = dweight_dot {
        dw.iter_mut()
            .zip(&sums[..width])
            .for_each(|(d, &s)| *d += s);
    }
    if let Some(db) = dbias_dot {
        db.iter_mut()
            .zip(&sums[width..])
            .for_each(|(d, &s)| *d += s);
    }
}
