//! The CUDA backend: device memory through cudarc, matrix products through cuBLAS,
//! and every other kernel as CUDA C (`kernels/*.cu`, embedded in the binary and
//! compiled once per process by NVRTC for the device's architecture, once for f32
//! and once for f64).
//!
//! Nothing here touches the CUDA libraries before [`Cuda::new`] has checked, through
//! [`availability`], that the driver, NVRTC and cuBLAS can be loaded: cudarc loads
//! them dynamically and panics on first use of a missing one.
//!
//! One stream runs everything, in order, so views are plain device pointers
//! ([`DeviceView`], [`DeviceViewMut`]) and cudarc's per-buffer event tracking is off.
//! Launches cannot return errors through the [`Backend`] trait: the first failure is
//! latched and returned by the next [`Backend::download`] (or [`Cuda::synchronize`]).
//!
//! Kernel calling convention (see `runtime.rs`): every kernel parameter is 8 bytes:
//! pointers (`real*`, `const unsigned int*`), sizes as `long long`, scalars as
//! `double`; an absent optional buffer is a null pointer. `real` is `float` or
//! `double`, defined before each source is compiled. `signatures.rs` reads every
//! kernel's parameter list from the sources, refuses other widths, and checks each
//! launch's word count against it (at run time, and every launch site in the tests).

mod attention;
mod blas;
mod elementwise;
mod embedding;
mod layernorm;
mod logprob;
mod runtime;
mod signatures;
mod space;
mod sparse;

use std::marker::PhantomData;
use std::ops::Range;

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use super::Scalar;
use super::kernels::{AttentionDims, Backend, Gemm};
use crate::error::Result;

pub use runtime::{Cuda, availability};
pub use space::CudaSpace;

/// Which of the two compiled kernel sets a scalar type uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

/// The element types the CUDA backend computes in (f32 and f64).
pub trait CudaScalar: Scalar + DeviceRepr + ValidAsZeroBits {
    /// The kernel set compiled with `real` = this type.
    const PRECISION: Precision;
}

impl CudaScalar for f32 {
    const PRECISION: Precision = Precision::F32;
}

impl CudaScalar for f64 {
    const PRECISION: Precision = Precision::F64;
}

/// A read-only range of device memory holding `T`s: a device address and a length,
/// borrowed from a [`CudaSlice`] for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceView<'a, T> {
    ptr: u64,
    len: usize,
    marker: PhantomData<&'a [T]>,
}

/// A writable range of device memory holding `T`s, borrowed exclusively for `'a`.
#[derive(Debug)]
pub struct DeviceViewMut<'a, T> {
    ptr: u64,
    len: usize,
    marker: PhantomData<&'a mut [T]>,
}

impl<T> DeviceView<'_, T> {
    /// The device address, as a kernel argument.
    pub(crate) fn ptr(&self) -> u64 {
        self.ptr
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl<T> DeviceViewMut<'_, T> {
    /// The device address, as a kernel argument.
    pub(crate) fn ptr(&self) -> u64 {
        self.ptr
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Byte offset of element `i` of a `T` buffer.
fn offset<T>(i: usize) -> u64 {
    (i * size_of::<T>()) as u64
}

/// The address of an optional read-only buffer (null when absent).
fn opt_ptr<T>(view: Option<DeviceView<'_, T>>) -> u64 {
    view.map_or(0, |v| v.ptr)
}

/// The address of an optional writable buffer (null when absent).
fn opt_ptr_mut<T>(view: Option<DeviceViewMut<'_, T>>) -> u64 {
    view.map_or(0, |v| v.ptr)
}

impl<T: CudaScalar> Backend<T> for Cuda {
    type Buf = CudaSlice<T>;
    type Index = CudaSlice<u32>;
    type View<'a> = DeviceView<'a, T>;
    type ViewMut<'a> = DeviceViewMut<'a, T>;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<T>> {
        self.alloc_zeros(len)
    }

    fn upload(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.upload_slice(host)
    }

    fn available_memory(&self) -> Option<u64> {
        self.memory().ok().map(|(free, _)| free as u64)
    }

    fn upload_index(&self, host: &[u32]) -> Result<CudaSlice<u32>> {
        self.upload_slice(host)
    }

    fn write(&self, dst: DeviceViewMut<'_, T>, host: &[T]) -> Result<()> {
        self.write_host(dst.ptr, dst.len, host)
    }

    fn download(&self, src: DeviceView<'_, T>, host: &mut [T]) -> Result<()> {
        self.read_host(src.ptr, src.len, host)
    }

    fn view<'a>(&self, buf: &'a CudaSlice<T>) -> Self::View<'a> {
        DeviceView {
            ptr: self.address(buf),
            len: buf.len(),
            marker: PhantomData,
        }
    }

    fn view_mut<'a>(&self, buf: &'a mut CudaSlice<T>) -> Self::ViewMut<'a> {
        DeviceViewMut {
            ptr: self.address(buf),
            len: buf.len(),
            marker: PhantomData,
        }
    }

    fn sub<'a>(&self, view: Self::View<'a>, range: Range<usize>) -> Self::View<'a> {
        assert!(
            range.start <= range.end && range.end <= view.len,
            "sub: range out of bounds"
        );
        DeviceView {
            ptr: view.ptr + offset::<T>(range.start),
            len: range.len(),
            marker: PhantomData,
        }
    }

    fn sub_mut<'a>(&self, view: Self::ViewMut<'a>, range: Range<usize>) -> Self::ViewMut<'a> {
        assert!(
            range.start <= range.end && range.end <= view.len,
            "sub_mut: range out of bounds"
        );
        DeviceViewMut {
            ptr: view.ptr + offset::<T>(range.start),
            len: range.len(),
            marker: PhantomData,
        }
    }

    fn split_mut<'a>(
        &self,
        view: Self::ViewMut<'a>,
        mid: usize,
    ) -> (Self::ViewMut<'a>, Self::ViewMut<'a>) {
        assert!(mid <= view.len, "split_mut: mid out of bounds");
        let head = DeviceViewMut {
            ptr: view.ptr,
            len: mid,
            marker: PhantomData,
        };
        let tail = DeviceViewMut {
            ptr: view.ptr + offset::<T>(mid),
            len: view.len - mid,
            marker: PhantomData,
        };
        (head, tail)
    }

    fn reborrow<'b>(&self, view: &'b mut Self::ViewMut<'_>) -> Self::ViewMut<'b> {
        DeviceViewMut {
            ptr: view.ptr,
            len: view.len,
            marker: PhantomData,
        }
    }

    fn freeze<'b>(&self, view: &'b Self::ViewMut<'_>) -> Self::View<'b> {
        DeviceView {
            ptr: view.ptr,
            len: view.len,
            marker: PhantomData,
        }
    }

    fn zero(&self, dst: DeviceViewMut<'_, T>) {
        self.memset_zero(dst.ptr, offset::<T>(dst.len));
    }

    fn copy(&self, dst: DeviceViewMut<'_, T>, src: DeviceView<'_, T>) {
        assert_eq!(dst.len, src.len, "copy: lengths differ");
        self.memcpy_device(dst.ptr, src.ptr, offset::<T>(dst.len));
    }

    fn add_assign(&self, dst: DeviceViewMut<'_, T>, src: DeviceView<'_, T>) {
        elementwise::add_assign(self, dst, src);
    }

    fn scatter(&self, dst: DeviceViewMut<'_, T>, idx: &CudaSlice<u32>, values: DeviceView<'_, T>) {
        elementwise::scatter(self, dst, idx, values);
    }

    fn gather_add(&self, dst: DeviceViewMut<'_, T>, idx: &CudaSlice<u32>, src: DeviceView<'_, T>) {
        elementwise::gather_add(self, dst, idx, src);
    }

    fn gemm(
        &self,
        spec: &Gemm,
        a: DeviceView<'_, T>,
        b: DeviceView<'_, T>,
        c: DeviceViewMut<'_, T>,
    ) {
        blas::gemm(self, spec, a, b, c);
    }

    fn sparse_matmul_nt(
        &self,
        out: DeviceViewMut<'_, T>,
        x: DeviceView<'_, T>,
        idx: &CudaSlice<u32>,
        values: DeviceView<'_, T>,
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    ) {
        sparse::matmul_nt(self, out, x, idx, values, rows, out_dim, in_dim);
    }

    fn sparse_matmul_nn(
        &self,
        out: DeviceViewMut<'_, T>,
        dy: DeviceView<'_, T>,
        idx: &CudaSlice<u32>,
        values: DeviceView<'_, T>,
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    ) {
        sparse::matmul_nn(self, out, dy, idx, values, rows, out_dim, in_dim);
    }

    fn sampled_matmul_tn(
        &self,
        out: DeviceViewMut<'_, T>,
        a: DeviceView<'_, T>,
        b: DeviceView<'_, T>,
        idx: &CudaSlice<u32>,
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    ) {
        sparse::sampled_tn(self, out, a, b, idx, rows, out_dim, in_dim);
    }

    fn embedding_forward(
        &self,
        out: DeviceViewMut<'_, T>,
        ids: &CudaSlice<u32>,
        table: DeviceView<'_, T>,
        rows: usize,
        width: usize,
        accumulate: bool,
    ) {
        embedding::forward(self, out, ids, table, rows, width, accumulate);
    }

    fn embedding_backward(
        &self,
        dtable: DeviceViewMut<'_, T>,
        dout: DeviceView<'_, T>,
        ids: &CudaSlice<u32>,
        rows: usize,
        width: usize,
    ) {
        embedding::backward(self, dtable, dout, ids, rows, width);
    }

    fn embedding_forward_sparse(
        &self,
        out: DeviceViewMut<'_, T>,
        ids: &CudaSlice<u32>,
        idx: &CudaSlice<u32>,
        values: DeviceView<'_, T>,
        rows: usize,
        width: usize,
    ) {
        embedding::forward_sparse(self, out, ids, idx, values, rows, width);
    }

    fn embedding_backward_sampled(
        &self,
        out: DeviceViewMut<'_, T>,
        dout: DeviceView<'_, T>,
        ids: &CudaSlice<u32>,
        idx: &CudaSlice<u32>,
        rows: usize,
        width: usize,
    ) {
        embedding::backward_sampled(self, out, dout, ids, idx, rows, width);
    }

    fn bias_forward(
        &self,
        out: DeviceViewMut<'_, T>,
        bias: DeviceView<'_, T>,
        rows: usize,
        width: usize,
    ) {
        elementwise::bias_forward(self, out, bias, rows, width);
    }

    fn bias_backward(
        &self,
        dbias: DeviceViewMut<'_, T>,
        dout: DeviceView<'_, T>,
        rows: usize,
        width: usize,
    ) {
        elementwise::bias_backward(self, dbias, dout, rows, width);
    }

    fn layernorm_forward(
        &self,
        out: DeviceViewMut<'_, T>,
        mean: DeviceViewMut<'_, T>,
        rstd: DeviceViewMut<'_, T>,
        inp: DeviceView<'_, T>,
        weight: Option<DeviceView<'_, T>>,
        bias: Option<DeviceView<'_, T>>,
        rows: usize,
        width: usize,
        eps: f64,
    ) {
        layernorm::forward(self, out, mean, rstd, inp, weight, bias, rows, width, eps);
    }

    fn layernorm_jvp(
        &self,
        out_dot: DeviceViewMut<'_, T>,
        inp: DeviceView<'_, T>,
        inp_dot: DeviceView<'_, T>,
        mean: DeviceView<'_, T>,
        rstd: DeviceView<'_, T>,
        weight: Option<DeviceView<'_, T>>,
        weight_dot: Option<DeviceView<'_, T>>,
        bias_dot: Option<DeviceView<'_, T>>,
        rows: usize,
        width: usize,
    ) {
        layernorm::jvp(
            self, out_dot, inp, inp_dot, mean, rstd, weight, weight_dot, bias_dot, rows, width,
        );
    }

    fn layernorm_backward(
        &self,
        dinp: DeviceViewMut<'_, T>,
        dweight: Option<DeviceViewMut<'_, T>>,
        dbias: Option<DeviceViewMut<'_, T>>,
        dout: DeviceView<'_, T>,
        inp: DeviceView<'_, T>,
        mean: DeviceView<'_, T>,
        rstd: DeviceView<'_, T>,
        weight: Option<DeviceView<'_, T>>,
        rows: usize,
        width: usize,
    ) {
        layernorm::backward(
            self, dinp, dweight, dbias, dout, inp, mean, rstd, weight, rows, width,
        );
    }

    fn layernorm_backward_jvp(
        &self,
        dinp_dot: DeviceViewMut<'_, T>,
        dweight_dot: Option<DeviceViewMut<'_, T>>,
        dbias_dot: Option<DeviceViewMut<'_, T>>,
        dout: DeviceView<'_, T>,
        dout_dot: DeviceView<'_, T>,
        inp: DeviceView<'_, T>,
        inp_dot: DeviceView<'_, T>,
        mean: DeviceView<'_, T>,
        rstd: DeviceView<'_, T>,
        weight: Option<DeviceView<'_, T>>,
        weight_dot: Option<DeviceView<'_, T>>,
        rows: usize,
        width: usize,
    ) {
        layernorm::backward_jvp(
            self,
            dinp_dot,
            dweight_dot,
            dbias_dot,
            dout,
            dout_dot,
            inp,
            inp_dot,
            mean,
            rstd,
            weight,
            weight_dot,
            rows,
            width,
        );
    }

    fn relu_forward(&self, out: DeviceViewMut<'_, T>, inp: DeviceView<'_, T>) {
        elementwise::relu_forward(self, out, inp);
    }

    fn relu_backward(
        &self,
        out: DeviceViewMut<'_, T>,
        inp: DeviceView<'_, T>,
        grad: DeviceView<'_, T>,
    ) {
        elementwise::relu_backward(self, out, inp, grad);
    }

    fn attention_forward(
        &self,
        out: DeviceViewMut<'_, T>,
        probs: DeviceViewMut<'_, T>,
        q: DeviceView<'_, T>,
        k: DeviceView<'_, T>,
        v: DeviceView<'_, T>,
        key_mask: &CudaSlice<u32>,
        dims: AttentionDims,
    ) {
        attention::forward(self, out, probs, q, k, v, key_mask, dims);
    }

    fn attention_jvp(
        &self,
        out_dot: DeviceViewMut<'_, T>,
        probs_dot: DeviceViewMut<'_, T>,
        probs: DeviceView<'_, T>,
        q: DeviceView<'_, T>,
        k: DeviceView<'_, T>,
        v: DeviceView<'_, T>,
        q_dot: DeviceView<'_, T>,
        k_dot: DeviceView<'_, T>,
        v_dot: DeviceView<'_, T>,
        dims: AttentionDims,
    ) {
        attention::jvp(
            self, out_dot, probs_dot, probs, q, k, v, q_dot, k_dot, v_dot, dims,
        );
    }

    fn attention_backward(
        &self,
        dq: DeviceViewMut<'_, T>,
        dk: DeviceViewMut<'_, T>,
        dv: DeviceViewMut<'_, T>,
        dout: DeviceView<'_, T>,
        probs: DeviceView<'_, T>,
        q: DeviceView<'_, T>,
        k: DeviceView<'_, T>,
        v: DeviceView<'_, T>,
        dims: AttentionDims,
    ) {
        attention::backward(self, dq, dk, dv, dout, probs, q, k, v, dims);
    }

    fn attention_backward_jvp(
        &self,
        dq_dot: DeviceViewMut<'_, T>,
        dk_dot: DeviceViewMut<'_, T>,
        dv_dot: DeviceViewMut<'_, T>,
        dout: DeviceView<'_, T>,
        dout_dot: DeviceView<'_, T>,
        probs: DeviceView<'_, T>,
        probs_dot: DeviceView<'_, T>,
        q: DeviceView<'_, T>,
        k: DeviceView<'_, T>,
        v: DeviceView<'_, T>,
        q_dot: DeviceView<'_, T>,
        k_dot: DeviceView<'_, T>,
        v_dot: DeviceView<'_, T>,
        dims: AttentionDims,
    ) {
        attention::backward_jvp(
            self, dq_dot, dk_dot, dv_dot, dout, dout_dot, probs, probs_dot, q, k, v, q_dot, k_dot,
            v_dot, dims,
        );
    }

    fn logprob_forward(
        &self,
        lp: DeviceViewMut<'_, T>,
        probs: DeviceViewMut<'_, T>,
        logits: DeviceView<'_, T>,
        targets: &CudaSlice<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::forward(self, lp, probs, logits, targets, rows, vocab);
    }

    fn logprob_jvp(
        &self,
        lp_dot: DeviceViewMut<'_, T>,
        probs: DeviceView<'_, T>,
        logits_dot: DeviceView<'_, T>,
        targets: &CudaSlice<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::jvp(self, lp_dot, probs, logits_dot, targets, rows, vocab);
    }

    fn logprob_backward(
        &self,
        dlogits: DeviceViewMut<'_, T>,
        probs: DeviceView<'_, T>,
        dlp: DeviceView<'_, T>,
        targets: &CudaSlice<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::backward(self, dlogits, probs, dlp, targets, rows, vocab);
    }

    fn logprob_backward_jvp(
        &self,
        dlogits_dot: DeviceViewMut<'_, T>,
        probs: DeviceView<'_, T>,
        logits_dot: DeviceView<'_, T>,
        dlp: DeviceView<'_, T>,
        dlp_dot: DeviceView<'_, T>,
        targets: &CudaSlice<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::backward_jvp(
            self,
            dlogits_dot,
            probs,
            logits_dot,
            dlp,
            dlp_dot,
            targets,
            rows,
            vocab,
        );
    }

    /// Not fused on a GPU: the unfused head's `rows x vocab` logits make a round trip
    /// through device memory that costs little beside its two products, and a walk
    /// over the vocabulary in cache-sized chunks would be launch-bound there.
    fn logprob_head_forward(
        &self,
        _lp: DeviceViewMut<'_, T>,
        _jac: DeviceViewMut<'_, T>,
        _scratch: DeviceViewMut<'_, T>,
        _x: DeviceView<'_, T>,
        _weight: DeviceView<'_, T>,
        _targets: &CudaSlice<u32>,
        _rows: usize,
        _width: usize,
        _vocab: usize,
    ) -> bool {
        false
    }
}
