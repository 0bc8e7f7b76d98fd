//! Matrix products on the CPU through faer (AVX-512/AVX2 micro-kernels, rayon).

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::CpuScalar;
use crate::backend::Gemm;

/// The strided batched GEMM of [`Gemm`] on row-major slices.
///
/// `par` is the parallelism of each product: `Par::rayon(0)` from the caller's
/// thread, `Par::Seq` inside kernels that already run in parallel.
pub fn gemm<T: CpuScalar>(spec: &Gemm, a: &[T], b: &[T], c: &mut [T], par: Par) {
    let (ea, eb, ec) = spec.extents();
    assert!(
        a.len() >= ea && b.len() >= eb && c.len() >= ec,
        "gemm operands too short for {spec:?}: {} {} {}",
        a.len(),
        b.len(),
        c.len()
    );
    if spec.m == 0 || spec.n == 0 {
        return;
    }
    let alpha = T::from_f64(spec.alpha);
    for i in 0..spec.batch {
        let a = &a[i * spec.stride_a..];
        let b = &b[i * spec.stride_b..];
        let c = &mut c[i * spec.stride_c..];
        let lhs = operand(a, spec.m, spec.k, spec.lda, spec.trans_a);
        let rhs = operand(b, spec.k, spec.n, spec.ldb, spec.trans_b);
        let accum = if spec.accumulate {
            Accum::Add
        } else {
            Accum::Replace
        };
        if spec.k == 0 {
            if !spec.accumulate {
                for row in c.chunks_mut(spec.ldc).take(spec.m) {
                    row[..spec.n].fill(T::ZERO);
                }
            }
            continue;
        }
        // A row-major destination, built as the transpose of a column-major view:
        // faer 0.24.4's `from_row_major_slice_with_stride_mut` builds a column-major
        // view instead (its read-only twin is right), which the test below catches.
        let dst = MatMut::from_column_major_slice_with_stride_mut(c, spec.n, spec.m, spec.ldc)
            .transpose_mut();
        matmul(dst, accum, lhs, rhs, alpha, par);
    }
    match par {
        Par::Seq => clear_upper_vector_state(),
        _ => clear_upper_vector_state_everywhere(),
    }
}

/// faer's AVX-512 micro-kernels return with the upper halves of the vector registers
/// in use ("dirty"). Until a `vzeroupper`, every legacy-SSE instruction on that core
/// (all of this crate's baseline x86-64 code: softmax, LayerNorm, ...) pays a merge
/// penalty: measured here, the log-softmax of a 256 x 2048 block took 97 ms after a
/// GEMM instead of 7.5 ms. This clears the state on the calling thread.
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX, checked just above.
        unsafe { zero_upper() }
    }
}

/// [`clear_upper_vector_state`] on the calling thread and on every thread of rayon's
/// global pool (where faer runs its parallel kernels). Costs one broadcast (~µs).
fn clear_upper_vector_state_everywhere() {
    rayon::broadcast(|_| clear_upper_vector_state());
    clear_upper_vector_state();
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
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
    fn matches_naive_product_for_all_transposes_strides_and_batches() {
        let fill = |n: usize, seed: f64| {
            (0..n)
                .map(|i| ((i as f64 + seed) * 0.37).sin())
                .collect::<Vec<_>>()
        };
        // faer's small-matrix kernels, then its blocked ones
        for (m, n, k) in [(5, 7, 3), (40, 70, 30)] {
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
                    gemm(&spec, &a, &b, &mut c, Par::rayon(2));
                    for (x, y) in c.iter().zip(&want) {
                        assert!(
                            (x - y).abs() < 1e-13,
                            "{m}x{n}x{k} {ta} {tb} {accumulate}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}
