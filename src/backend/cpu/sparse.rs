//! Products with a sparse weight matrix (the tangent of a masked perturbation) and
//! weight gradients formed only at a mask's entries.
//!
//! Loops run row by row, so each activation row stays in L1 while all mask entries
//! visit it; parallel tasks own disjoint rows (products) or disjoint entries
//! (sampled gradients), which keeps the results independent of the thread count.

use rayon::prelude::*;

use super::CpuScalar;

/// Rows per parallel task.
const MIN_ROWS: usize = 8;

pub fn matmul_nt<T: CpuScalar>(
    out: &mut [T],
    x: &[T],
    idx: &[u32],
    values: &[T],
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    out[..rows * out_dim]
        .par_chunks_mut(out_dim)
        .zip(x[..rows * in_dim].par_chunks(in_dim))
        .with_min_len(MIN_ROWS)
        .for_each(|(y, x)| {
            for (&e, &w) in idx.iter().zip(values) {
                let (o, i) = (e as usize / in_dim, e as usize % in_dim);
                y[o] += w * x[i];
            }
        });
}

pub fn matmul_nn<T: CpuScalar>(
    out: &mut [T],
    dy: &[T],
    idx: &[u32],
    values: &[T],
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    out[..rows * in_dim]
        .par_chunks_mut(in_dim)
        .zip(dy[..rows * out_dim].par_chunks(out_dim))
        .with_min_len(MIN_ROWS)
        .for_each(|(dx, dy)| {
            for (&e, &w) in idx.iter().zip(values) {
                let (o, i) = (e as usize / in_dim, e as usize % in_dim);
                dx[i] += w * dy[o];
            }
        });
}

/// Entries per parallel task of [`sampled_tn`].
const ENTRY_BLOCK: usize = 1024;

pub fn sampled_tn<T: CpuScalar>(
    out: &mut [T],
    a: &[T],
    b: &[T],
    idx: &[u32],
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    out.par_chunks_mut(ENTRY_BLOCK)
        .zip(idx.par_chunks(ENTRY_BLOCK))
        .for_each(|(out, idx)| {
            for r in 0..rows {
                let (ar, br) = (
                    &a[r * out_dim..(r + 1) * out_dim],
                    &b[r * in_dim..(r + 1) * in_dim],
                );
                for (o, &e) in out.iter_mut().zip(idx) {
                    let (oi, ii) = (e as usize / in_dim, e as usize % in_dim);
                    *o += ar[oi] * br[ii];
                }
            }
        });
}
