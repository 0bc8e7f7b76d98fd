//! Matrix products on the CPU through faer (AVX-512/AVX2 micro-kernels).
//!
//! Parallelism is ours, not faer's: a large product is cut into independent blocks
//! of the output (each reading its own slice of the large operand, so nothing is
//! packed twice) that run as rayon tasks, each a single-threaded faer call. Measured
//! on the 2-core development machine while other jobs shared it, faer's own
//! multi-threaded kernels lost up to 4x to barrier waits, whereas independent tasks
//! degrade to one core's speed at worst.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::CpuScalar;
use super::transpose::transpose;
use crate::backend::Gemm;

/// Work below which a product runs as one task (about 20-50 µs of arithmetic).
const MIN_TASK_FLOPS: usize = 4 << 20;

/// Tasks per thread, so that a core slowed by other work hands its share over.
const TASKS_PER_THREAD: usize = 2;

/// Block sizes are multiples of these (rows of `C`: tokens in a layer's products,
/// the output features in a weight gradient; columns: features).
/// faer's micro-kernel tiles are 96 (f32) or 48 (f64) features by 4 tokens, so
/// whole tiles would want multiples of 96 columns; but on 2 threads such coarse
/// steps leave the blocks unbalanced (512 rows in steps of 96 gave blocks of 192,
/// 192 and 128), which costs more than ragged tiles do. Measured on opt-mini's
/// HVP (4 x 64 tokens): steps of 96/96 113 ms, 16/32 89-95 ms, 16/16 97 ms, 16/64
/// 97 ms, 8/32 97 ms; f64 193 / 174 / 173 / 187 (48) ms.
const ROW_STEP: usize = 16;
const COL_STEP: usize = 32;

/// A weight gradient `A^T B` (both operands token-major) reaches faer's kernels
/// with a row-major right-hand operand, which they read unpacked: one cache line
/// per step of `k`. Such products can go through a transposed copy of `A` instead,
/// as `A' B`. In opt-mini's HVP (12 calls each, in place, 2 threads) that took
/// f64's fc1 weight gradient (1024 x 256 x 512) from 82-88 to 102-107 GFLOP/s and
/// its q/k/v/out ones (256 x 256 x 512) from 86-88 to 94-97: f64 always gains. In
/// f32 only the products whose `A` rows lie a multiple of 4 KiB apart gain (every
/// read of a `k` step then maps to one L1 set): fc1 186-188 -> 237-242, the LM head
/// (2048 x 256 x 504) 167-174 -> 195-197, while the 256-wide ones lost 2-5%.
fn transposes_first<T>(spec: &Gemm) -> bool {
    let aliased = (spec.lda * size_of::<T>()).is_multiple_of(ALIASING_STRIDE);
    spec.trans_a
        && !spec.trans_b
        && spec.m >= MIN_TRANSPOSED_SIDE
        && spec.k >= MIN_TRANSPOSED_DEPTH
        && spec.m * spec.k <= MAX_TRANSPOSED_LEN
        && (size_of::<T>() >= 8 || aliased)
}

/// Below this many rows of `C` the copy does not pay.
const MIN_TRANSPOSED_SIDE: usize = 64;

/// faer's kernels read `k` steps of the right-hand operand one cache line each;
/// up to about 128 steps those lines stay in L1 and the copy gains nothing (OPT-125m
/// on 1 x 64 tokens, f64: HVP 1126-1160 ms as is, 1123-1169 copied).
const MIN_TRANSPOSED_DEPTH: usize = 256;

/// The copy is kept by the thread between calls; above this many elements (an LM
/// head's gradient on a large batch) it would hold too much memory for too little.
const MAX_TRANSPOSED_LEN: usize = 1 << 23;

/// A row stride (bytes) whose multiples all map reads to one L1 cache set.
const ALIASING_STRIDE: usize = 4096;

/// The strided batched GEMM of [`Gemm`] on row-major slices, in parallel when large.
pub fn gemm<T: CpuScalar>(spec: &Gemm, a: &[T], b: &[T], c: &mut [T]) {
    check(spec, a, b, c);
    if transposes_first::<T>(spec) {
        let mut plain = *spec;
        plain.trans_a = false;
        plain.lda = spec.k;
        plain.stride_a = spec.m * spec.k;
        // a scratch kept by the thread: a fresh allocation of this size would cost
        // page faults comparable to the copy
        T::with_scratch(|a_t| {
            a_t.resize(spec.batch * plain.stride_a, T::ZERO);
            for i in 0..spec.batch {
                transpose(
                    &a[i * spec.stride_a..],
                    spec.k,
                    spec.m,
                    spec.lda,
                    &mut a_t[i * plain.stride_a..],
                );
            }
            products(&plain, a_t, b, c);
        });
        return;
    }
    products(spec, a, b, c);
}

fn products<T: CpuScalar>(spec: &Gemm, a: &[T], b: &[T], c: &mut [T]) {
    let flops = 2 * spec.m * spec.n * spec.k;
    let tasks = (flops / MIN_TASK_FLOPS).clamp(1, TASKS_PER_THREAD * rayon::current_num_threads());
    for i in 0..spec.batch {
        let (lhs, rhs, mut dst) = matrices(spec, i, a, b, c);
        if spec.k == 0 {
            if !spec.accumulate {
                dst.fill(T::ZERO);
            }
            continue;
        }
        if tasks == 1 {
            product(dst, spec, lhs, rhs);
        } else {
            blocks(dst, lhs, rhs, tasks)
                .into_par_iter()
                .for_each(|(d, l, r)| product(d, spec, l, r));
        }
    }
}

fn check<T>(spec: &Gemm, a: &[T], b: &[T], c: &[T]) {
    let (ea, eb, ec) = spec.extents();
    assert!(
        a.len() >= ea && b.len() >= eb && c.len() >= ec,
        "gemm operands too short for {spec:?}: {} {} {}",
        a.len(),
        b.len(),
        c.len()
    );
}

/// `op(A)`, `op(B)` and `C` of batch entry `i` as faer views.
fn matrices<'x, T: CpuScalar>(
    spec: &Gemm,
    i: usize,
    a: &'x [T],
    b: &'x [T],
    c: &'x mut [T],
) -> (MatRef<'x, T>, MatRef<'x, T>, MatMut<'x, T>) {
    let lhs = operand(
        &a[i * spec.stride_a..],
        spec.m,
        spec.k,
        spec.lda,
        spec.trans_a,
    );
    let rhs = operand(
        &b[i * spec.stride_b..],
        spec.k,
        spec.n,
        spec.ldb,
        spec.trans_b,
    );
    // The row-major C is the transpose of a column-major view (faer 0.24.4's
    // `from_row_major_slice_with_stride_mut` builds a column-major view instead, which
    // the test below would catch).
    let dst = MatMut::from_column_major_slice_with_stride_mut(
        &mut c[i * spec.stride_c..],
        spec.n,
        spec.m,
        spec.ldc,
    )
    .transpose_mut();
    (lhs, rhs, dst)
}

/// `op(X)` as an `rows x cols` faer view of row-major storage with leading dimension `ld`.
fn operand<T: CpuScalar>(
    x: &[T],
    rows: usize,
    cols: usize,
    ld: usize,
    trans: bool,
) -> MatRef<'_, T> {
    if trans {
        MatRef::from_row_major_slice_with_stride(x, cols, rows, ld).transpose()
    } else {
        MatRef::from_row_major_slice_with_stride(x, rows, cols, ld)
    }
}

/// One single-threaded faer product `dst (+)= alpha lhs rhs`.
///
/// faer is handed `dst^T = rhs^T lhs^T`, a column-major destination: measured
/// 10-15% faster than the row-major form for products with few rows (a linear layer
/// on 64-128 tokens).
fn product<T: CpuScalar>(dst: MatMut<'_, T>, spec: &Gemm, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>) {
    let accum = if spec.accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    matmul(
        dst.transpose_mut(),
        accum,
        rhs.transpose(),
        lhs.transpose(),
        T::from_f64(spec.alpha),
        Par::Seq,
    );
    clear_upper_vector_state();
}

/// Splits `dst = lhs rhs` into about `tasks` independent products along the longer
/// side of `dst`: each block reads its own rows of `lhs` or columns of `rhs`.
fn blocks<'x, T: CpuScalar>(
    dst: MatMut<'x, T>,
    lhs: MatRef<'x, T>,
    rhs: MatRef<'x, T>,
    tasks: usize,
) -> Vec<(MatMut<'x, T>, MatRef<'x, T>, MatRef<'x, T>)> {
    let by_cols = dst.ncols() >= dst.nrows();
    let (len, unit) = if by_cols {
        (dst.ncols(), COL_STEP)
    } else {
        (dst.nrows(), ROW_STEP)
    };
    let step = len.div_ceil(tasks).next_multiple_of(unit);
    let mut out = Vec::with_capacity(tasks);
    let (mut d, mut l, mut r) = (dst, lhs, rhs);
    loop {
        let here = if by_cols { d.ncols() } else { d.nrows() };
        if here <= step {
            out.push((d, l, r));
            return out;
        }
        if by_cols {
            let (d0, d1) = d.split_at_col_mut(step);
            let (r0, r1) = r.split_at_col(step);
            out.push((d0, l, r0));
            (d, r) = (d1, r1);
        } else {
            let (d0, d1) = d.split_at_row_mut(step);
            let (l0, l1) = l.split_at_row(step);
            out.push((d0, l0, r));
            (d, l) = (d1, l1);
        }
    }
}

/// faer's AVX-512 micro-kernels return with the upper halves of the vector registers
/// in use ("dirty"). Until a `vzeroupper`, every legacy-SSE instruction on that core
/// (all of this crate's baseline x86-64 code: softmax, LayerNorm, ...) pays a merge
/// penalty: measured here, the log-softmax of a 256 x 2048 block took 97 ms after a
/// GEMM instead of 7.5 ms. This clears the state on the calling thread; every faer
/// call of the CPU backend runs on one thread and is followed by it.
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX, checked just above.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(spec: &Gemm, a: &[f64], b: &[f64], c: &mut [f64]) {
        for bi in 0..spec.batch {
            for i in 0..spec.m {
                for j in 0..spec.n {
                    let mut s = 0.0;
                    for l in 0..spec.k {
                        let av = if spec.trans_a {
                            a[bi * spec.stride_a + l * spec.lda + i]
                        } else {
                            a[bi * spec.stride_a + i * spec.lda + l]
                        };
                        let bv = if spec.trans_b {
                            b[bi * spec.stride_b + j * spec.ldb + l]
                        } else {
                            b[bi * spec.stride_b + l * spec.ldb + j]
                        };
                        s += av * bv;
                    }
                    let cij = &mut c[bi * spec.stride_c + i * spec.ldc + j];
                    *cij = spec.alpha * s + if spec.accumulate { *cij } else { 0.0 };
                }
            }
        }
    }

    #[test]
    fn f32_weight_gradients_with_4k_strides_go_through_the_transpose_and_match() {
        // A is k x m with m = 1024 f32 per row (4 KiB): the transposed path
        let (m, n, k) = (1024, 40, 260);
        let spec = Gemm::tn(m, n, k);
        assert!(transposes_first::<f32>(&spec) && !transposes_first::<f32>(&Gemm::tn(256, n, k)));
        let a: Vec<f32> = (0..k * m).map(|i| ((i as f32) * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i as f32) * 0.71).cos()).collect();
        let mut c = vec![f32::NAN; m * n];
        gemm(&spec, &a, &b, &mut c);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|l| f64::from(a[l * m + i]) * f64::from(b[l * n + j]))
                    .sum();
                assert!((f64::from(c[i * n + j]) - want).abs() < 1e-4, "{i},{j}");
            }
        }
    }

    #[test]
    fn matches_naive_product_for_all_transposes_strides_batches_and_splits() {
        let fill = |n: usize, seed: f64| {
            (0..n)
                .map(|i| ((i as f64 + seed) * 0.37).sin())
                .collect::<Vec<_>>()
        };
        // faer's small-matrix kernels; its blocked ones; and products large enough to
        // be split in blocks of rows (tall) and of columns (wide)
        for (m, n, k) in [(5, 7, 3), (40, 70, 30), (600, 37, 400), (40, 600, 400)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for accumulate in [false, true] {
                    let mut spec = Gemm::new(m, n, k, ta, tb).alpha(0.5);
                    spec.accumulate = accumulate;
                    // padded leading dimensions and two matrices per batch
                    let (lda, ldb, ldc) = (spec.lda + 2, spec.ldb + 1, spec.ldc + 3);
                    let (sa, sb, sc) = (m.max(k) * lda + 7, n.max(k) * ldb + 5, m * ldc + 9);
                    let spec = spec.leading(lda, ldb, ldc).batched(2, sa, sb, sc);
                    let a = fill(2 * sa, 1.0);
                    let b = fill(2 * sb, 2.0);
                    let mut c = fill(2 * sc, 3.0);
                    let mut want = c.clone();
                    naive(&spec, &a, &b, &mut want);
                    gemm(&spec, &a, &b, &mut c);
                    for (x, y) in c.iter().zip(&want) {
                        assert!(
                            (x - y).abs() < 1e-12,
                            "{m}x{n}x{k} {ta} {tb} {accumulate}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}
