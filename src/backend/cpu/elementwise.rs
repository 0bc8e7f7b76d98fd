//! Elementwise kernels: copies, residual adds, scatter/gather at a mask, bias, ReLU.

use rayon::prelude::*;

use super::{CpuScalar, column_sums};

/// Elements per parallel task for streaming kernels (small enough to spread over
/// the cores, large enough to amortise rayon's scheduling).
const CHUNK: usize = 1 << 14;

pub fn add_assign<T: CpuScalar>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "add_assign: lengths differ");
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d += s));
}

pub fn scatter<T: CpuScalar>(dst: &mut [T], idx: &[u32], values: &[T]) {
    assert_eq!(idx.len(), values.len(), "scatter: lengths differ");
    for (&i, &v) in idx.iter().zip(values) {
        dst[i as usize] = v;
    }
}

pub fn gather_add<T: CpuScalar>(dst: &mut [T], idx: &[u32], src: &[T]) {
    assert_eq!(idx.len(), dst.len(), "gather_add: lengths differ");
    for (d, &i) in dst.iter_mut().zip(idx) {
        *d += src[i as usize];
    }
}

pub fn bias_forward<T: CpuScalar>(out: &mut [T], bias: &[T], rows: usize, width: usize) {
    assert_eq!(bias.len(), width, "bias_forward: bias width");
    out[..rows * width]
        .par_chunks_mut(width)
        .with_min_len(8)
        .for_each(|row| row.iter_mut().zip(bias).for_each(|(y, &b)| *y += b));
}

pub fn bias_backward<T: CpuScalar>(dbias: &mut [T], dout: &[T], rows: usize, width: usize) {
    let sums = column_sums(rows, width, 1, |r, acc: &mut [T]| {
        acc.iter_mut()
            .zip(&dout[r * width..(r + 1) * width])
            .for_each(|(a, &g)| *a += g);
    });
    dbias.iter_mut().zip(&sums).for_each(|(d, &s)| *d += s);
}

pub fn relu_forward<T: CpuScalar>(out: &mut [T], inp: &[T]) {
    assert_eq!(out.len(), inp.len(), "relu_forward: lengths differ");
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| {
            o.iter_mut()
                .zip(x)
                .for_each(|(o, &x)| *o = if x > T::ZERO { x } else { T::ZERO })
        });
}

pub fn relu_backward<T: CpuScalar>(out: &mut [T], inp: &[T], grad: &[T]) {
    assert!(
        out.len() == inp.len() && inp.len() == grad.len(),
        "relu_backward: lengths differ"
    );
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(o, (x, g))| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                *o = if x > T::ZERO { g } else { T::ZERO };
            }
        });
}
