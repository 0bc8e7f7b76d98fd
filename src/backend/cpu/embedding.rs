//! Embedding lookups (token and position tables) and their adjoints.

use rayon::prelude::*;

use super::CpuScalar;

pub fn forward<T: CpuScalar>(
    out: &mut [T],
    ids: &[u32],
    table: &[T],
    rows: usize,
    width: usize,
    accumulate: bool,
) {
    out[..rows * width]
        .par_chunks_mut(width)
        .zip(&ids[..rows])
        .with_min_len(8)
        .for_each(|(o, &id)| {
            let src = &table[id as usize * width..(id as usize + 1) * width];
            if accumulate {
                o.iter_mut().zip(src).for_each(|(o, &s)| *o += s);
            } else {
                o.copy_from_slice(src);
            }
        });
}

/// Serial on purpose: rows sharing a token id add into the same table row, and a
/// fixed order keeps the result bitwise reproducible.
pub fn backward<T: CpuScalar>(
    dtable: &mut [T],
    dout: &[T],
    ids: &[u32],
    rows: usize,
    width: usize,
) {
    for (r, &id) in ids[..rows].iter().enumerate() {
        let dst = &mut dtable[id as usize * width..(id as usize + 1) * width];
        dst.iter_mut()
            .zip(&dout[r * width..(r + 1) * width])
            .for_each(|(d, &g)| *d += g);
    }
}

pub fn forward_sparse<T: CpuScalar>(
    out: &mut [T],
    ids: &[u32],
    idx: &[u32],
    values: &[T],
    rows: usize,
    width: usize,
) {
    for (&e, &val) in idx.iter().zip(values) {
        let (j, c) = (e as usize / width, e as usize % width);
        for (r, &id) in ids[..rows].iter().enumerate() {
            if id as usize == j {
                out[r * width + c] += val;
            }
        }
    }
}

pub fn backward_sampled<T: CpuScalar>(
    out: &mut [T],
    dout: &[T],
    ids: &[u32],
    idx: &[u32],
    rows: usize,
    width: usize,
) {
    out.par_iter_mut()
        .zip(idx)
        .with_min_len(64)
        .for_each(|(o, &e)| {
            let (j, c) = (e as usize / width, e as usize % width);
            for (r, &id) in ids[..rows].iter().enumerate() {
                if id as usize == j {
                    *o += dout[r * width + c];
                }
            }
        });
}
