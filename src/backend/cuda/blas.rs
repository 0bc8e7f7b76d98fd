//! The strided batched GEMM through cuBLAS (CPU twin: `backend/cpu/gemm.rs`).
//!
//! cuBLAS is column-major, and a row-major `m x n` matrix with row stride `ld` is the
//! same memory as a column-major `n x m` one with leading dimension `ld`. So the
//! row-major `C = op(A) op(B)` is computed as the column-major
//! `C^T = op(B)^T op(A)^T`: the operands swap places, `m` and `n` swap, and each
//! operand keeps its own transpose flag (row-major `B` read column-major is already
//! `B^T`, so `op(B)^T` is `B` transposed exactly when `trans_b`).

use std::ffi::{c_int, c_longlong};

use cudarc::cublas::result::{dgemm_strided_batched, sgemm_strided_batched};
use cudarc::cublas::sys::cublasOperation_t;

use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut, Precision, elementwise};
use crate::backend::Gemm;

/// The cuBLAS operation for a transpose flag.
fn operation(trans: bool) -> cublasOperation_t {
    if trans {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// The column-major problem cuBLAS solves for `spec`, each size as the C type it
/// takes; `None` when a size does not fit.
struct Problem {
    m: c_int,
    n: c_int,
    k: c_int,
    ld_first: c_int,
    ld_second: c_int,
    ldc: c_int,
    stride_first: c_longlong,
    stride_second: c_longlong,
    stride_c: c_longlong,
    batch: c_int,
}

impl Problem {
    /// `C^T = op(B)^T op(A)^T`: B is the first operand, A the second.
    fn new(spec: &Gemm) -> Option<Problem> {
        let int = |x: usize| c_int::try_from(x).ok();
        let long = |x: usize| c_longlong::try_from(x).ok();
        Some(Problem {
            m: int(spec.n)?,
            n: int(spec.m)?,
            k: int(spec.k)?,
            ld_first: int(spec.ldb)?,
            ld_second: int(spec.lda)?,
            ldc: int(spec.ldc)?,
            stride_first: long(spec.stride_b)?,
            stride_second: long(spec.stride_a)?,
            stride_c: long(spec.stride_c)?,
            batch: int(spec.batch)?,
        })
    }
}

/// `C[i] = alpha op(A[i]) op(B[i]) (+ C[i])` for each batch entry, as [`Gemm`]
/// documents. With `k = 0` the product is empty: `C` is zeroed unless accumulating
/// (as on the CPU), without calling cuBLAS. Failures (a size beyond cuBLAS's `int`,
/// a cuBLAS error) are latched.
pub(super) fn gemm<T: CudaScalar>(
    cuda: &Cuda,
    spec: &Gemm,
    a: DeviceView<'_, T>,
    b: DeviceView<'_, T>,
    c: DeviceViewMut<'_, T>,
) {
    let (ea, eb, ec) = spec.extents();
    assert!(
        a.len() >= ea && b.len() >= eb && c.len() >= ec,
        "gemm operands too short for {spec:?}: {} {} {}",
        a.len(),
        b.len(),
        c.len()
    );
    if spec.m == 0 || spec.n == 0 || spec.batch == 0 {
        return;
    }
    if spec.k == 0 {
        if !spec.accumulate {
            elementwise::zero_matrices(
                cuda,
                &c,
                spec.batch,
                spec.m,
                spec.n,
                spec.ldc,
                spec.stride_c,
            );
        }
        return;
    }
    let Some(p) = Problem::new(spec) else {
        return cuda.latch(format!("gemm: a size of {spec:?} exceeds cuBLAS's int"));
    };
    let beta = if spec.accumulate { 1.0 } else { 0.0 };
    let handle = *cuda.blas().handle();
    let (trans_first, trans_second) = (operation(spec.trans_b), operation(spec.trans_a));
    // SAFETY: the extents checked above keep every matrix of the batch inside its
    // view; alpha and beta are host scalars (cuBLAS's default pointer mode) that
    // outlive the call, which reads them before returning; the pointer casts match
    // T's precision.
    let result = unsafe {
        match T::PRECISION {
            Precision::F32 => {
                let (alpha, beta) = (spec.alpha as f32, beta as f32);
                sgemm_strided_batched(
                    handle,
                    trans_first,
                    trans_second,
                    p.m,
                    p.n,
                    p.k,
                    &alpha,
                    b.ptr() as *const f32,
                    p.ld_first,
                    p.stride_first,
                    a.ptr() as *const f32,
                    p.ld_second,
                    p.stride_second,
                    &beta,
                    c.ptr() as *mut f32,
                    p.ldc,
                    p.stride_c,
                    p.batch,
                )
            }
            Precision::F64 => dgemm_strided_batched(
                handle,
                trans_first,
                trans_second,
                p.m,
                p.n,
                p.k,
                &spec.alpha,
                b.ptr() as *const f64,
                p.ld_first,
                p.stride_first,
                a.ptr() as *const f64,
                p.ld_second,
                p.stride_second,
                &beta,
                c.ptr() as *mut f64,
                p.ldc,
                p.stride_c,
                p.batch,
            ),
        }
    };
    if let Err(e) = result {
        cuda.latch(format!("cuBLAS gemm {spec:?}: {e}"));
    }
}
