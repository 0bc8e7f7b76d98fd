//! The CPU backend: host memory (`Vec<T>`), faer matrix products, rayon over rows,
//! heads and mask entries. Generic over f32 and f64.
//!
//! Each kernel of [`Backend`] lives in the file named after its op; this module only
//! binds them to the trait. Reductions over rows (parameter gradients) sum fixed
//! blocks in a fixed order, so results do not depend on the number of threads.

mod attention;
mod elementwise;
mod embedding;
mod exp;
pub(crate) mod gemm;
mod head;
mod layernorm;
mod logprob;
mod reduce;
mod sparse;
mod transpose;

use std::ops::Range;

use rayon::prelude::*;

use super::Scalar;
use super::kernels::{AttentionDims, Backend, Gemm};
use crate::error::Result;

/// The element types the CPU backend computes in (f32 and f64).
pub trait CpuScalar: Scalar + faer::traits::ComplexField + exp::ShiftedExp {
    /// Side of the square tiles [`CpuScalar::transpose_strip`] moves at once.
    const TRANSPOSE_TILE: usize;

    /// Runs `f` on a scratch vector of the calling thread, kept between calls (a
    /// fresh one if a caller further up the stack holds it).
    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R;

    /// `dst[c * rows + r] = src[r * ld + c]` for `r < rows`, `c < cols`.
    fn transpose_strip(src: &[Self], ld: usize, rows: usize, cols: usize, dst: &mut [Self]);
}

thread_local! {
    static SCRATCH_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_F64: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on the vector in `cell`, or on a fresh one while `cell` is borrowed (a rayon
/// worker waiting inside one product may run a task that starts another).
fn with_cell<T, R>(cell: &std::cell::RefCell<Vec<T>>, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Vec::new()),
    }
}

impl CpuScalar for f32 {
    const TRANSPOSE_TILE: usize = 8;

    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        SCRATCH_F32.with(|s| with_cell(s, f))
    }

    fn transpose_strip(src: &[Self], ld: usize, rows: usize, cols: usize, dst: &mut [Self]) {
        transpose::strip_f32(src, ld, rows, cols, dst);
    }
}

impl CpuScalar for f64 {
    const TRANSPOSE_TILE: usize = 4;

    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        SCRATCH_F64.with(|s| with_cell(s, f))
    }

    fn transpose_strip(src: &[Self], ld: usize, rows: usize, cols: usize, dst: &mut [Self]) {
        transpose::strip_f64(src, ld, rows, cols, dst);
    }
}

/// The CPU backend. Uses rayon's global thread pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// Rows per block of [`blocked_rows`]: fixed, so the summation order is too.
const SUM_BLOCK: usize = 32;

/// Visits every row `r` as `visit(r, out_row, sums, scratch)`: `out_row` is row `r`
/// of `out` (`out_width` long, possibly 0), `sums` the `sums_len` accumulators of
/// its block, `scratch` `scratch_len` elements of the block's own. Blocks of rows
/// run in parallel and their sums are added in block order, which makes the result
/// independent of the thread count.
fn blocked_rows<T: CpuScalar>(
    out: &mut [T],
    out_width: usize,
    rows: usize,
    sums_len: usize,
    scratch_len: usize,
    visit: impl Fn(usize, &mut [T], &mut [T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut blocks = Vec::with_capacity(rows.div_ceil(SUM_BLOCK));
    let mut rest = &mut out[..rows * out_width];
    for start in (0..rows).step_by(SUM_BLOCK) {
        let (block, tail) = rest.split_at_mut((rows - start).min(SUM_BLOCK) * out_width);
        blocks.push((start, block));
        rest = tail;
    }
    let partials: Vec<Vec<T>> = blocks
        .into_par_iter()
        .map(|(start, block)| {
            let mut sums = vec![T::ZERO; sums_len];
            let mut scratch = vec![T::ZERO; scratch_len];
            for r in start..(start + SUM_BLOCK).min(rows) {
                let row = &mut block[(r - start) * out_width..(r - start + 1) * out_width];
                visit(r, row, &mut sums, &mut scratch);
            }
            sums
        })
        .collect();
    let mut total = vec![T::ZERO; sums_len];
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, &x)| *t += x);
    }
    total
}

/// Sums per-row contributions into `groups * width` accumulators: `add_row(r, acc)`
/// adds row `r` (see [`blocked_rows`]).
fn column_sums<T: CpuScalar>(
    rows: usize,
    width: usize,
    groups: usize,
    add_row: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    blocked_rows(&mut [], 0, rows, groups * width, 0, |r, _, acc, _| {
        add_row(r, acc)
    })
}

impl<T: CpuScalar> Backend<T> for Cpu {
    type Buf = Vec<T>;
    type Index = Vec<u32>;
    type View<'a> = &'a [T];
    type ViewMut<'a> = &'a mut [T];

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; len])
    }

    fn upload(&self, host: &[T]) -> Result<Vec<T>> {
        Ok(host.to_vec())
    }

    fn upload_vec(&self, host: Vec<T>) -> Result<Vec<T>> {
        Ok(host)
    }

    fn available_memory(&self) -> Option<u64> {
        crate::model::memory::host_available()
    }

    fn upload_index(&self, host: &[u32]) -> Result<Vec<u32>> {
        Ok(host.to_vec())
    }

    fn write(&self, dst: &mut [T], host: &[T]) -> Result<()> {
        dst.copy_from_slice(host);
        Ok(())
    }

    fn download(&self, src: &[T], host: &mut [T]) -> Result<()> {
        host.copy_from_slice(src);
        Ok(())
    }

    fn view<'a>(&self, buf: &'a Vec<T>) -> &'a [T] {
        buf
    }

    fn view_mut<'a>(&self, buf: &'a mut Vec<T>) -> &'a mut [T] {
        buf
    }

    fn sub<'a>(&self, view: Self::View<'a>, range: Range<usize>) -> Self::View<'a> {
        &view[range]
    }

    fn sub_mut<'a>(&self, view: Self::ViewMut<'a>, range: Range<usize>) -> Self::ViewMut<'a> {
        &mut view[range]
    }

    fn split_mut<'a>(
        &self,
        view: Self::ViewMut<'a>,
        mid: usize,
    ) -> (Self::ViewMut<'a>, Self::ViewMut<'a>) {
        view.split_at_mut(mid)
    }

    fn reborrow<'b>(&self, view: &'b mut &mut [T]) -> &'b mut [T] {
        view
    }

    fn freeze<'b>(&self, view: &'b &mut [T]) -> &'b [T] {
        view
    }

    fn zero(&self, dst: &mut [T]) {
        dst.fill(T::ZERO);
    }

    fn copy(&self, dst: &mut [T], src: &[T]) {
        dst.copy_from_slice(src);
    }

    fn add_assign(&self, dst: &mut [T], src: &[T]) {
        elementwise::add_assign(dst, src);
    }

    fn scatter(&self, dst: &mut [T], idx: &Vec<u32>, values: &[T]) {
        elementwise::scatter(dst, idx, values);
    }

    fn gather_add(&self, dst: &mut [T], idx: &Vec<u32>, src: &[T]) {
        elementwise::gather_add(dst, idx, src);
    }

    fn gemm(&self, spec: &Gemm, a: &[T], b: &[T], c: &mut [T]) {
        gemm::gemm(spec, a, b, c);
    }

    #[allow(clippy::too_many_arguments)]
    fn sparse_matmul_nt(
        &self,
        out: &mut [T],
        x: &[T],
        idx: &Vec<u32>,
        values: &[T],
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    ) {
        sparse::matmul_nt(out, x, idx, values, rows, out_dim, in_dim);
    }

    #[allow(clippy::too_many_arguments)]
    fn sparse_matmul_nn(
        &self,
        out: &mut [T],
        dy: &[T],
        idx: &Vec<u32>,
        values: &[T],
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    ) {
        sparse::matmul_nn(out, dy, idx, values, rows, out_dim, in_dim);
    }

    #[allow(clippy::too_many_arguments)]
    fn sampled_matmul_tn(
        &self,
        out: &mut [T],
        a: &[T],
        b: &[T],
        idx: &Vec<u32>,
        rows: usize,
        out_dim: usize,
        in_dim: usize,
    ) {
        sparse::sampled_tn(out, a, b, idx, rows, out_dim, in_dim);
    }

    fn embedding_forward(
        &self,
        out: &mut [T],
        ids: &Vec<u32>,
        table: &[T],
        rows: usize,
        width: usize,
        accumulate: bool,
    ) {
        embedding::forward(out, ids, table, rows, width, accumulate);
    }

    fn embedding_backward(
        &self,
        dtable: &mut [T],
        dout: &[T],
        ids: &Vec<u32>,
        rows: usize,
        width: usize,
    ) {
        embedding::backward(dtable, dout, ids, rows, width);
    }

    fn embedding_forward_sparse(
        &self,
        out: &mut [T],
        ids: &Vec<u32>,
        idx: &Vec<u32>,
        values: &[T],
        rows: usize,
        width: usize,
    ) {
        embedding::forward_sparse(out, ids, idx, values, rows, width);
    }

    fn embedding_backward_sampled(
        &self,
        out: &mut [T],
        dout: &[T],
        ids: &Vec<u32>,
        idx: &Vec<u32>,
        rows: usize,
        width: usize,
    ) {
        embedding::backward_sampled(out, dout, ids, idx, rows, width);
    }

    fn bias_forward(&self, out: &mut [T], bias: &[T], rows: usize, width: usize) {
        elementwise::bias_forward(out, bias, rows, width);
    }

    fn bias_backward(&self, dbias: &mut [T], dout: &[T], rows: usize, width: usize) {
        elementwise::bias_backward(dbias, dout, rows, width);
    }

    fn layernorm_forward(
        &self,
        out: &mut [T],
        mean: &mut [T],
        rstd: &mut [T],
        inp: &[T],
        weight: Option<&[T]>,
        bias: Option<&[T]>,
        rows: usize,
        width: usize,
        eps: f64,
    ) {
        layernorm::forward(out, mean, rstd, inp, weight, bias, rows, width, eps);
    }

    fn layernorm_jvp(
        &self,
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
        layernorm::jvp(
            out_dot, inp, inp_dot, mean, rstd, weight, weight_dot, bias_dot, rows, width,
        );
    }

    fn layernorm_backward(
        &self,
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
        layernorm::backward(
            dinp, dweight, dbias, dout, inp, mean, rstd, weight, rows, width,
        );
    }

    fn layernorm_backward_jvp(
        &self,
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
        layernorm::backward_jvp(
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

    fn relu_forward(&self, out: &mut [T], inp: &[T]) {
        elementwise::relu_forward(out, inp);
    }

    fn relu_backward(&self, out: &mut [T], inp: &[T], grad: &[T]) {
        elementwise::relu_backward(out, inp, grad);
    }

    fn attention_forward(
        &self,
        out: &mut [T],
        probs: &mut [T],
        q: &[T],
        k: &[T],
        v: &[T],
        key_mask: &Vec<u32>,
        dims: AttentionDims,
    ) {
        attention::forward(out, probs, q, k, v, key_mask, dims);
    }

    fn attention_jvp(
        &self,
        out_dot: &mut [T],
        probs_dot: &mut [T],
        probs: &[T],
        q: &[T],
        k: &[T],
        v: &[T],
        q_dot: &[T],
        k_dot: &[T],
        v_dot: &[T],
        dims: AttentionDims,
    ) {
        attention::jvp(
            out_dot, probs_dot, probs, q, k, v, q_dot, k_dot, v_dot, dims,
        );
    }

    fn attention_backward(
        &self,
        dq: &mut [T],
        dk: &mut [T],
        dv: &mut [T],
        dout: &[T],
        probs: &[T],
        q: &[T],
        k: &[T],
        v: &[T],
        dims: AttentionDims,
    ) {
        attention::backward(dq, dk, dv, dout, probs, q, k, v, dims);
    }

    fn attention_backward_jvp(
        &self,
        dq_dot: &mut [T],
        dk_dot: &mut [T],
        dv_dot: &mut [T],
        dout: &[T],
        dout_dot: &[T],
        probs: &[T],
        probs_dot: &[T],
        q: &[T],
        k: &[T],
        v: &[T],
        q_dot: &[T],
        k_dot: &[T],
        v_dot: &[T],
        dims: AttentionDims,
    ) {
        attention::backward_jvp(
            dq_dot, dk_dot, dv_dot, dout, dout_dot, probs, probs_dot, q, k, v, q_dot, k_dot, v_dot,
            dims,
        );
    }

    fn logprob_forward(
        &self,
        lp: &mut [T],
        probs: &mut [T],
        logits: &[T],
        targets: &Vec<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::forward(lp, probs, logits, targets, rows, vocab);
    }

    fn logprob_jvp(
        &self,
        lp_dot: &mut [T],
        probs: &[T],
        logits_dot: &[T],
        targets: &Vec<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::jvp(lp_dot, probs, logits_dot, targets, rows, vocab);
    }

    fn logprob_backward(
        &self,
        dlogits: &mut [T],
        probs: &[T],
        dlp: &[T],
        targets: &Vec<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::backward(dlogits, probs, dlp, targets, rows, vocab);
    }

    fn logprob_backward_jvp(
        &self,
        dlogits_dot: &mut [T],
        probs: &[T],
        logits_dot: &[T],
        dlp: &[T],
        dlp_dot: &[T],
        targets: &Vec<u32>,
        rows: usize,
        vocab: usize,
    ) {
        logprob::backward_jvp(
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

    fn logprob_head_forward(
        &self,
        lp: &mut [T],
        jac: &mut [T],
        scratch: &mut [T],
        x: &[T],
        weight: &[T],
        targets: &Vec<u32>,
        rows: usize,
        width: usize,
        vocab: usize,
    ) -> bool {
        head::forward(lp, jac, scratch, x, weight, targets, rows, width, vocab)
    }
}
