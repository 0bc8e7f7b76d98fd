//! Out-of-place transposes, in square tiles moved through vector registers.
//!
//! The matrix products use them to turn a weight gradient `A^T B` (both operands
//! stored token-major) into the `A' B` form that faer's kernels run fastest: faer
//! reads its right-hand operand unpacked, so a token-major one is walked one cache
//! line per step of `k` (see `gemm.rs`).

use rayon::prelude::*;

use super::CpuScalar;

/// Elements per parallel task (a few microseconds of copying).
const MIN_TASK_ELEMENTS: usize = 1 << 14;

/// `dst (cols x rows, row-major) = src^T`, where `src` is `rows x cols` with rows
/// `ld_src` elements apart. Parallel over strips of `dst` rows.
pub fn transpose<T: CpuScalar>(src: &[T], rows: usize, cols: usize, ld_src: usize, dst: &mut [T]) {
    assert!(
        rows == 0 || cols == 0 || src.len() >= (rows - 1) * ld_src + cols,
        "transpose: source too short"
    );
    let dst = &mut dst[..rows * cols];
    if dst.is_empty() {
        return;
    }
    // a strip is a whole number of tiles wide, so only the last has ragged tiles
    let strip = (MIN_TASK_ELEMENTS / rows.max(1))
        .max(1)
        .next_multiple_of(T::TRANSPOSE_TILE);
    dst.par_chunks_mut(strip * rows)
        .enumerate()
        .for_each(|(i, d)| {
            let c0 = i * strip;
            T::transpose_strip(&src[c0..], ld_src, rows, d.len() / rows, d);
        });
}

/// The plain loop: `dst[c * rows + r] = src[r * ld + c]`.
fn scalar_strip<T: Copy>(src: &[T], ld: usize, rows: usize, cols: usize, dst: &mut [T]) {
    for (c, out) in dst.chunks_exact_mut(rows).take(cols).enumerate() {
        for (r, o) in out.iter_mut().enumerate() {
            *o = src[r * ld + c];
        }
    }
}

/// `scalar_strip` for the ragged edges of a strip whose `tile`-aligned part
/// (`full_rows x full_cols`) is already done.
fn edges<T: Copy>(src: &[T], ld: usize, rows: usize, cols: usize, dst: &mut [T], tile: usize) {
    let (full_rows, full_cols) = (rows - rows % tile, cols - cols % tile);
    for c in 0..cols {
        let first = if c < full_cols { full_rows } else { 0 };
        for r in first..rows {
            dst[c * rows + r] = src[r * ld + c];
        }
    }
}

/// Checks the extents an unchecked strip kernel relies on.
fn check_strip<T>(src: &[T], ld: usize, rows: usize, cols: usize, dst: &[T]) {
    assert!(
        rows > 0 && cols > 0 && src.len() >= (rows - 1) * ld + cols && dst.len() >= rows * cols,
        "transpose strip out of bounds"
    );
}

pub fn strip_f32(src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    strip_with(src, ld, rows, cols, dst, 8, avx::strip_f32);
    #[cfg(not(target_arch = "x86_64"))]
    scalar_strip(src, ld, rows, cols, dst);
}

pub fn strip_f64(src: &[f64], ld: usize, rows: usize, cols: usize, dst: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    strip_with(src, ld, rows, cols, dst, 4, avx::strip_f64);
    #[cfg(not(target_arch = "x86_64"))]
    scalar_strip(src, ld, rows, cols, dst);
}

/// A strip through `tiles` (its whole `tile x tile` tiles, in AVX registers) and
/// the plain loop for the ragged edges; all of it by the plain loop without AVX.
#[cfg(target_arch = "x86_64")]
fn strip_with<T: Copy>(
    src: &[T],
    ld: usize,
    rows: usize,
    cols: usize,
    dst: &mut [T],
    tile: usize,
    tiles: unsafe fn(&[T], usize, usize, usize, &mut [T]),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    if !std::arch::is_x86_feature_detected!("avx") {
        scalar_strip(src, ld, rows, cols, dst);
        return;
    }
    check_strip(src, ld, rows, cols, dst);
    // SAFETY: AVX is present (checked above) and every tile lies inside the
    // extents checked by `check_strip`.
    unsafe { tiles(src, ld, rows, cols, dst) };
    edges(src, ld, rows, cols, dst, tile);
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// The whole 8 x 8 tiles of a strip (f32), through eight 256-bit registers.
    ///
    /// # Safety
    /// AVX must be available and `src`, `dst` must hold the strip (`check_strip`).
    #[target_feature(enable = "avx")]
    pub unsafe fn strip_f32(src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for r in (0..rows - rows % 8).step_by(8) {
            for c in (0..cols - cols % 8).step_by(8) {
                // SAFETY: rows r..r+8 and columns c..c+8 lie inside both matrices.
                unsafe { tile_f32(s.add(r * ld + c), ld, d.add(c * rows + r), rows) };
            }
        }
        _mm256_zeroupper();
    }

    #[target_feature(enable = "avx")]
    unsafe fn tile_f32(s: *const f32, ls: usize, d: *mut f32, ld: usize) {
        // SAFETY: the caller guarantees 8 rows of 8 elements at `s` and at `d`.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * ls)));
            // interleave pairs of rows, then pairs of pairs: each 128-bit lane then
            // holds a 4 x 4 transpose, and the lanes are recombined at the end
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ];
            let v = [
                _mm256_shuffle_ps::<0x44>(t4, t6),
                _mm256_shuffle_ps::<0xEE>(t4, t6),
                _mm256_shuffle_ps::<0x44>(t5, t7),
                _mm256_shuffle_ps::<0xEE>(t5, t7),
            ];
            for i in 0..4 {
                _mm256_storeu_ps(d.add(i * ld), _mm256_permute2f128_ps::<0x20>(u[i], v[i]));
                _mm256_storeu_ps(
                    d.add((i + 4) * ld),
                    _mm256_permute2f128_ps::<0x31>(u[i], v[i]),
                );
            }
        }
    }

    /// The whole 4 x 4 tiles of a strip (f64).
    ///
    /// # Safety
    /// As for [`strip_f32`].
    #[target_feature(enable = "avx")]
    pub unsafe fn strip_f64(src: &[f64], ld: usize, rows: usize, cols: usize, dst: &mut [f64]) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for r in (0..rows - rows % 4).step_by(4) {
            for c in (0..cols - cols % 4).step_by(4) {
                // SAFETY: rows r..r+4 and columns c..c+4 lie inside both matrices.
                unsafe { tile_f64(s.add(r * ld + c), ld, d.add(c * rows + r), rows) };
            }
        }
        _mm256_zeroupper();
    }

    #[target_feature(enable = "avx")]
    unsafe fn tile_f64(s: *const f64, ls: usize, d: *mut f64, ld: usize) {
        // SAFETY: the caller guarantees 4 rows of 4 elements at `s` and at `d`.
        unsafe {
            let r: [__m256d; 4] = std::array::from_fn(|i| _mm256_loadu_pd(s.add(i * ls)));
            let t0 = _mm256_unpacklo_pd(r[0], r[1]);
            let t1 = _mm256_unpackhi_pd(r[0], r[1]);
            let t2 = _mm256_unpacklo_pd(r[2], r[3]);
            let t3 = _mm256_unpackhi_pd(r[2], r[3]);
            _mm256_storeu_pd(d, _mm256_permute2f128_pd::<0x20>(t0, t2));
            _mm256_storeu_pd(d.add(ld), _mm256_permute2f128_pd::<0x20>(t1, t3));
            _mm256_storeu_pd(d.add(2 * ld), _mm256_permute2f128_pd::<0x31>(t0, t2));
            _mm256_storeu_pd(d.add(3 * ld), _mm256_permute2f128_pd::<0x31>(t1, t3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: CpuScalar + std::fmt::Debug>() {
        // whole tiles, ragged edges both ways, a padded source, one task and many
        for (rows, cols, ld) in [(8, 8, 8), (13, 7, 9), (64, 96, 100), (300, 257, 261)] {
            let src: Vec<T> = (0..rows * ld).map(|i| T::from_usize(i)).collect();
            let mut dst = vec![T::ZERO; rows * cols];
            transpose(&src, rows, cols, ld, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * ld + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn transposes_every_element_in_f32_and_f64() {
        check::<f32>();
        check::<f64>();
    }
}
