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

/// The `(row, column)` of each flat index of an `_ x in_dim` matrix, decoded once
/// per call rather than once per activation row (an integer division per entry and
/// row cost more than the multiply-adds).
fn decode(idx: &[u32], in_dim: usize) -> Vec<(usize, usize)> {
    idx.iter()
        .map(|&e| (e as usize / in_dim, e as usize % in_dim))
        .collect()
}

pub fn matmul_nt<T: CpuScalar>(
    out: &mut [T],
    x: &[T],
    idx: &[u32],
    values: &[T],
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    let entries = decode(idx, in_dim);
    out[..rows * out_dim]
        .par_chunks_mut(out_dim)
        .zip(x[..rows * in_dim].par_chunks(in_dim))
        .with_min_len(MIN_ROWS)
        .for_each(|(y, x)| {
            for (&(o, i), &w) in entries.iter().zip(values) {
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
    let entries = decode(idx, in_dim);
    out[..rows * in_dim]
        .par_chunks_mut(in_dim)
        .zip(dy[..rows * out_dim].par_chunks(out_dim))
        .with_min_len(MIN_ROWS)
        .for_each(|(dx, dy)| {
            for (&(o, i), &w) in entries.iter().zip(values) {
                dx[i] += w * dy[o];
            }
        });
}

/// Entries per parallel task of [`sampled_tn`]: a qv mask of ratio 1e-3 puts a few
/// hundred entries in each matrix, which must still spread over the cores.
const ENTRY_BLOCK: usize = 64;

pub fn sampled_tn<T: CpuScalar>(
    out: &mut [T],
    a: &[T],
    b: &[T],
    idx: &[u32],
    rows: usize,
    out_dim: usize,
    in_dim: usize,
) {
    let entries = decode(idx, in_dim);
    out.par_chunks_mut(ENTRY_BLOCK)
        .zip(entries.par_chunks(ENTRY_BLOCK))
        .for_each(|(out, entries)| {
            for r in 0..rows {
                let (ar, br) = (
                    &a[r * out_dim..(r + 1) * out_dim],
                    &b[r * in_dim..(r + 1) * in_dim],
                );
                for (o, &(oi, ii)) in out.iter_mut().zip(entries) {
                    *o += ar[oi] * br[ii];
                }
            }
        });
}
