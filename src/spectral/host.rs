//! [`VectorSpace`] on host memory: `Vec<f64>` vectors, rayon-parallel kernels.
//!
//! Every kernel walks its vectors in fixed chunks of [`CHUNK`] entries. Chunks run
//! in parallel, each reduction sums its chunk serially, and the per-chunk partial
//! sums are added in chunk order on one thread; the floating-point operations are
//! therefore the same for any number of threads, and every result is bit-for-bit
//! reproducible. Block operations against a basis process one chunk of `x` against
//! all basis vectors before moving on, so `x` is read once per call (it stays in
//! cache) and each basis vector is streamed once.

use std::ops::Range;

use rayon::prelude::*;

use super::vector::{BlockDots, Distribution, Precision, VectorSpace, random_values};
use crate::error::{Error, Result};
use crate::scalar::Scalar;

/// Entries per work unit: 64 KiB of f64, small enough to stay in L2 while a block
/// of basis vectors streams past it.
const CHUNK: usize = 8192;

/// The host vector space of dimension `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSpace {
    dim: usize,
}

impl HostSpace {
    /// The space `R^dim`.
    pub fn new(dim: usize) -> Self {
        HostSpace { dim }
    }
}

/// A block of host vectors stored in f64 or f32.
///
/// Vectors dropped by a truncation or a thick restart are kept as spare storage
/// and reused by the next pushes: at 10^7 dimensions a fresh allocation costs more
/// in page faults than the kernel that fills it.
#[derive(Clone, Debug)]
pub struct HostBasis {
    store: Store,
    capacity: usize,
    spare64: Vec<Vec<f64>>,
    spare32: Vec<Vec<f32>>,
}

/// A vector of length `n` for a push: a spare one when available.
fn take_spare<T: Scalar>(spare: &mut Vec<Vec<T>>, n: usize) -> Vec<T> {
    match spare.pop() {
        Some(v) if v.len() == n => v,
        _ => vec![T::ZERO; n],
    }
}

#[derive(Clone, Debug)]
enum Store {
    F64(Vec<Vec<f64>>),
    F32(Vec<Vec<f32>>),
}

impl HostBasis {
    /// Number of stored vectors.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::F64(v) => v.len(),
            Store::F32(v) => v.len(),
        }
    }

    /// Whether no vector is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the vectors in `range` to the spare storage.
    fn recycle(&mut self, range: Range<usize>) {
        match &mut self.store {
            Store::F64(v) => self.spare64.extend(v.drain(range)),
            Store::F32(v) => self.spare32.extend(v.drain(range)),
        }
    }

    /// Bytes held by the stored vectors.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F64(v) => v.iter().map(|x| x.len() * 8).sum(),
            Store::F32(v) => v.iter().map(|x| x.len() * 4).sum(),
        }
    }
}

/// Applies `$body` with `$vecs` bound to the basis vectors, whatever their precision.
macro_rules! with_store {
    ($basis:expr, $vecs:ident => $body:expr) => {
        match &$basis.store {
            Store::F64($vecs) => $body,
            Store::F32($vecs) => $body,
        }
    };
}

macro_rules! with_store_mut {
    ($basis:expr, $vecs:ident => $body:expr) => {
        match &mut $basis.store {
            Store::F64($vecs) => $body,
            Store::F32($vecs) => $body,
        }
    };
}

fn chunk_count(n: usize) -> usize {
    n.div_ceil(CHUNK)
}

fn chunk_range(n: usize, c: usize) -> Range<usize> {
    c * CHUNK..((c + 1) * CHUNK).min(n)
}

/// Maps every chunk index through `f` (in parallel when there is more than one
/// chunk) and returns the results in chunk order.
fn map_chunks<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    let chunks = chunk_count(n);
    if chunks <= 1 {
        (0..chunks).map(f).collect()
    } else {
        (0..chunks).into_par_iter().map(f).collect()
    }
}

/// Sums `f(chunk)` over all chunks in chunk order.
fn sum_chunks(n: usize, f: impl Fn(Range<usize>) -> f64 + Sync + Send) -> f64 {
    map_chunks(n, |c| f(chunk_range(n, c))).into_iter().sum()
}

/// `Σ a_i b_i` with eight independent accumulators (vectorizes), summed in a fixed order.
fn dot_kernel<T: Scalar>(a: &[T], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x.to_f64() * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for lane in 0..8 {
            acc[lane] += x[lane].to_f64() * y[lane];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `y += alpha x` on one chunk.
fn axpy_kernel<T: Scalar>(alpha: f64, x: &[T], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi.to_f64();
    }
}

/// Checks that a vector has the space's dimension (a programming error otherwise,
/// but cheap to report as a value).
fn check_len(space: &HostSpace, len: usize) -> Result<()> {
    if len == space.dim {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            name: "vector".into(),
            expected: vec![space.dim],
            found: vec![len],
        })
    }
}

/// Checks that every listed slot is stored.
fn check_slots(basis: &HostBasis, slots: &[usize]) -> Result<()> {
    let len = basis.len();
    match slots.iter().find(|&&s| s >= len) {
        Some(&bad) => Err(slot_error(bad, len)),
        None => Ok(()),
    }
}

fn slot_error(slot: usize, len: usize) -> Error {
    Error::Numerical(format!("basis slot {slot} requested, {len} stored"))
}

/// Splits every vector of `vecs` into its chunks and regroups them by chunk:
/// element `c` holds chunk `c` of every vector, so chunks can be processed in
/// parallel with mutable access to all vectors.
fn chunks_by_row<T>(vecs: &mut [Vec<T>]) -> Vec<Vec<&mut [T]>> {
    let n = vecs.first().map_or(0, Vec::len);
    let mut rows: Vec<Vec<&mut [T]>> = (0..chunk_count(n))
        .map(|_| Vec::with_capacity(vecs.len()))
        .collect();
    for v in vecs.iter_mut() {
        for (row, piece) in rows.iter_mut().zip(v.chunks_mut(CHUNK)) {
            row.push(piece);
        }
    }
    rows
}

impl VectorSpace for HostSpace {
    type Vector = Vec<f64>;
    type Basis = HostBasis;

    fn dim(&self) -> usize {
        self.dim
    }

    fn zeros(&self) -> Result<Vec<f64>> {
        Ok(vec![0.0; self.dim])
    }

    fn upload(&self, values: &[f64]) -> Result<Vec<f64>> {
        check_len(self, values.len())?;
        Ok(values.to_vec())
    }

    fn download(&self, x: &Vec<f64>) -> Result<Vec<f64>> {
        Ok(x.clone())
    }

    fn random(&self, distribution: Distribution, seed: u64, stream: u64) -> Result<Vec<f64>> {
        Ok(random_values(self.dim, distribution, seed, stream))
    }

    fn copy(&self, src: &Vec<f64>, dst: &mut Vec<f64>) -> Result<()> {
        check_len(self, src.len())?;
        dst.resize(self.dim, 0.0);
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    }

    fn dot(&self, x: &Vec<f64>, y: &Vec<f64>) -> Result<f64> {
        check_len(self, x.len())?;
        check_len(self, y.len())?;
        Ok(sum_chunks(self.dim, |r| dot_kernel(&x[r.clone()], &y[r])))
    }

    fn axpy(&self, alpha: f64, x: &Vec<f64>, y: &mut Vec<f64>) -> Result<()> {
        check_len(self, x.len())?;
        check_len(self, y.len())?;
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| axpy_kernel(alpha, xc, yc));
        Ok(())
    }

    fn scale(&self, alpha: f64, x: &mut Vec<f64>) -> Result<()> {
        check_len(self, x.len())?;
        x.par_chunks_mut(CHUNK).for_each(|xc| {
            for v in xc {
                *v *= alpha;
            }
        });
        Ok(())
    }

    fn axpy_dot(&self, alpha: f64, x: &Vec<f64>, y: &mut Vec<f64>, z: &Vec<f64>) -> Result<f64> {
        check_len(self, x.len())?;
        check_len(self, y.len())?;
        check_len(self, z.len())?;
        let parts: Vec<f64> = y
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(z.par_chunks(CHUNK))
            .map(|((yc, xc), zc)| {
                axpy_kernel(alpha, xc, yc);
                dot_kernel(yc, zc)
            })
            .collect();
        Ok(parts.into_iter().sum())
    }

    fn axpy_norm(&self, alpha: f64, x: &Vec<f64>, y: &mut Vec<f64>) -> Result<f64> {
        check_len(self, x.len())?;
        check_len(self, y.len())?;
        let parts: Vec<f64> = y
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .map(|(yc, xc)| {
                axpy_kernel(alpha, xc, yc);
                dot_kernel(yc, yc)
            })
            .collect();
        Ok(parts.into_iter().sum::<f64>().sqrt())
    }

    fn axpy_dot_block(
        &self,
        alpha: f64,
        x: &Vec<f64>,
        y: &mut Vec<f64>,
        z: &Vec<f64>,
        basis: &HostBasis,
        slots: &[usize],
    ) -> Result<BlockDots> {
        check_len(self, x.len())?;
        check_len(self, y.len())?;
        check_len(self, z.len())?;
        check_slots(basis, slots)?;
        let n = self.dim;
        let m = slots.len();
        let parts = with_store!(basis, vecs => {
            y.par_chunks_mut(CHUNK)
                .enumerate()
                .map(|(c, yc)| {
                    let r = chunk_range(n, c);
                    axpy_kernel(alpha, &x[r.clone()], yc);
                    let zc = &z[r.clone()];
                    let mut out = Vec::with_capacity(2 * m + 3);
                    out.push(dot_kernel(yc, zc));
                    out.push(dot_kernel(yc, yc));
                    out.push(dot_kernel(zc, zc));
                    out.extend(slots.iter().map(|&s| dot_kernel(&vecs[s][r.clone()], yc)));
                    out.extend(slots.iter().map(|&s| dot_kernel(&vecs[s][r.clone()], zc)));
                    out
                })
                .collect::<Vec<_>>()
        });
        let sums = sum_parts(&parts, 2 * m + 3);
        Ok(BlockDots {
            z_dot: sums[0],
            norm_squared: sums[1],
            z_norm_squared: sums[2],
            slot_dots: sums[3..m + 3].to_vec(),
            slot_dots_z: sums[m + 3..].to_vec(),
        })
    }

    fn update_scale_push(
        &self,
        alpha: f64,
        x: &Vec<f64>,
        y: &mut Vec<f64>,
        basis: &mut HostBasis,
        slots: &[usize],
        coeffs: &[f64],
        scale: f64,
    ) -> Result<()> {
        check_len(self, x.len())?;
        check_len(self, y.len())?;
        check_slots(basis, slots)?;
        if basis.len() >= basis.capacity {
            return Err(Error::Numerical(format!(
                "basis full ({} vectors)",
                basis.capacity
            )));
        }
        #[allow(clippy::too_many_arguments)]
        fn sweep<T: Scalar>(
            mut copy: Vec<T>,
            vecs: &[Vec<T>],
            alpha: f64,
            x: &[f64],
            y: &mut [f64],
            slots: &[usize],
            coeffs: &[f64],
            scale: f64,
        ) -> Vec<T> {
            let n = copy.len();
            copy.par_chunks_mut(CHUNK)
                .zip(y.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, (out, yc))| {
                    let r = chunk_range(n, c);
                    axpy_kernel(alpha, &x[r.clone()], yc);
                    for (&s, &coef) in slots.iter().zip(coeffs) {
                        axpy_kernel(-coef, &vecs[s][r.clone()], yc);
                    }
                    for (o, v) in out.iter_mut().zip(yc.iter_mut()) {
                        *v *= scale;
                        *o = T::from_f64(*v);
                    }
                });
            copy
        }
        let n = self.dim;
        match &mut basis.store {
            Store::F64(vecs) => {
                let copy = take_spare(&mut basis.spare64, n);
                let copy = sweep(copy, vecs, alpha, x, y, slots, coeffs, scale);
                vecs.push(copy);
            }
            Store::F32(vecs) => {
                let copy = take_spare(&mut basis.spare32, n);
                let copy = sweep(copy, vecs, alpha, x, y, slots, coeffs, scale);
                vecs.push(copy);
            }
        }
        Ok(())
    }

    fn axpy_subtract_norm(
        &self,
        alpha: f64,
        x: &Vec<f64>,
        y: &mut Vec<f64>,
        basis: &HostBasis,
        slots: &[usize],
        coeffs: &[f64],
    ) -> Result<f64> {
        check_len(self, x.len())?;
        check_len(self, y.len())?;
        check_slots(basis, slots)?;
        let n = self.dim;
        let parts = with_store!(basis, vecs => {
            y.par_chunks_mut(CHUNK)
                .enumerate()
                .map(|(c, yc)| {
                    let r = chunk_range(n, c);
                    axpy_kernel(alpha, &x[r.clone()], yc);
                    for (&s, &coef) in slots.iter().zip(coeffs) {
                        axpy_kernel(-coef, &vecs[s][r.clone()], yc);
                    }
                    dot_kernel(yc, yc)
                })
                .collect::<Vec<f64>>()
        });
        Ok(parts.into_iter().sum::<f64>().sqrt())
    }

    fn new_basis(&self, capacity: usize, precision: Precision) -> Result<HostBasis> {
        let store = match precision {
            Precision::F64 => Store::F64(Vec::new()),
            Precision::F32 => Store::F32(Vec::new()),
        };
        Ok(HostBasis {
            store,
            capacity,
            spare64: Vec::new(),
            spare32: Vec::new(),
        })
    }

    fn basis_len(&self, basis: &HostBasis) -> usize {
        basis.len()
    }

    fn basis_precision(&self, basis: &HostBasis) -> Precision {
        match basis.store {
            Store::F64(_) => Precision::F64,
            Store::F32(_) => Precision::F32,
        }
    }

    fn basis_push(&self, basis: &mut HostBasis, x: &Vec<f64>) -> Result<()> {
        check_len(self, x.len())?;
        if basis.len() >= basis.capacity {
            return Err(Error::Numerical(format!(
                "basis full ({} vectors)",
                basis.capacity
            )));
        }
        fn converted<T: Scalar>(mut copy: Vec<T>, x: &[f64]) -> Vec<T> {
            copy.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(c, xc)| {
                    for (ci, xi) in c.iter_mut().zip(xc) {
                        *ci = T::from_f64(*xi);
                    }
                });
            copy
        }
        let n = self.dim;
        match &mut basis.store {
            Store::F64(v) => v.push(converted(take_spare(&mut basis.spare64, n), x)),
            Store::F32(v) => v.push(converted(take_spare(&mut basis.spare32, n), x)),
        }
        Ok(())
    }

    fn scale_and_push(&self, alpha: f64, x: &mut Vec<f64>, basis: &mut HostBasis) -> Result<()> {
        check_len(self, x.len())?;
        if basis.len() >= basis.capacity {
            return Err(Error::Numerical(format!(
                "basis full ({} vectors)",
                basis.capacity
            )));
        }
        fn scaled_copy<T: Scalar>(mut copy: Vec<T>, alpha: f64, x: &mut [f64]) -> Vec<T> {
            copy.par_chunks_mut(CHUNK)
                .zip(x.par_chunks_mut(CHUNK))
                .for_each(|(c, xc)| {
                    for (ci, xi) in c.iter_mut().zip(xc.iter_mut()) {
                        *xi *= alpha;
                        *ci = T::from_f64(*xi);
                    }
                });
            copy
        }
        let n = self.dim;
        match &mut basis.store {
            Store::F64(v) => v.push(scaled_copy(take_spare(&mut basis.spare64, n), alpha, x)),
            Store::F32(v) => v.push(scaled_copy(take_spare(&mut basis.spare32, n), alpha, x)),
        }
        Ok(())
    }

    fn basis_set(&self, basis: &mut HostBasis, slot: usize, x: &Vec<f64>) -> Result<()> {
        check_len(self, x.len())?;
        let len = basis.len();
        with_store_mut!(basis, vecs => {
            let target = vecs.get_mut(slot).ok_or_else(|| slot_error(slot, len))?;
            target
                .par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(t, s)| {
                    for (a, b) in t.iter_mut().zip(s) {
                        *a = Scalar::from_f64(*b);
                    }
                });
        });
        Ok(())
    }

    fn basis_get(&self, basis: &HostBasis, slot: usize, out: &mut Vec<f64>) -> Result<()> {
        let len = basis.len();
        out.resize(self.dim, 0.0);
        with_store!(basis, vecs => {
            let src = vecs.get(slot).ok_or_else(|| slot_error(slot, len))?;
            out.par_chunks_mut(CHUNK)
                .zip(src.par_chunks(CHUNK))
                .for_each(|(o, s)| {
                    for (a, b) in o.iter_mut().zip(s) {
                        *a = b.to_f64();
                    }
                });
        });
        Ok(())
    }

    fn basis_truncate(&self, basis: &mut HostBasis, len: usize) {
        basis.recycle(len..basis.len());
    }

    fn basis_dots(&self, basis: &HostBasis, slots: &[usize], x: &Vec<f64>) -> Result<Vec<f64>> {
        check_len(self, x.len())?;
        check_slots(basis, slots)?;
        let n = self.dim;
        let parts = with_store!(basis, vecs => map_chunks(n, |c| {
            let r = chunk_range(n, c);
            slots
                .iter()
                .map(|&s| dot_kernel(&vecs[s][r.clone()], &x[r.clone()]))
                .collect::<Vec<f64>>()
        }));
        Ok(sum_parts(&parts, slots.len()))
    }

    fn basis_subtract(
        &self,
        basis: &HostBasis,
        slots: &[usize],
        coeffs: &[f64],
        x: &mut Vec<f64>,
    ) -> Result<()> {
        check_len(self, x.len())?;
        check_slots(basis, slots)?;
        with_store!(basis, vecs => {
            x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, xc)| {
                let r = chunk_range(self.dim, c);
                for (&s, &coef) in slots.iter().zip(coeffs) {
                    axpy_kernel(-coef, &vecs[s][r.clone()], xc);
                }
            });
        });
        Ok(())
    }

    /// CGS2 in three sweeps instead of four (plus the norm): the first pass's
    /// coefficients are global once the first sweep ends, so the second sweep
    /// subtracts them and accumulates the second pass's projections chunk by chunk;
    /// the third subtracts those and accumulates the norm.
    fn basis_orthogonalize(
        &self,
        basis: &HostBasis,
        slots: &[usize],
        x: &mut Vec<f64>,
    ) -> Result<(Vec<f64>, f64)> {
        let first = self.basis_dots(basis, slots, x)?;
        let second = subtract_sweep(self.dim, basis, slots, &first, x, Then::Dots);
        let norm_squared = subtract_sweep(self.dim, basis, slots, &second, x, Then::Norm)[0];
        let coeffs = first.iter().zip(&second).map(|(a, b)| a + b).collect();
        Ok((coeffs, norm_squared.sqrt()))
    }

    /// One pass in two sweeps, the norm accumulated in the second.
    fn basis_project_out(
        &self,
        basis: &HostBasis,
        slots: &[usize],
        x: &mut Vec<f64>,
    ) -> Result<(Vec<f64>, f64)> {
        let coeffs = self.basis_dots(basis, slots, x)?;
        let norm_squared = subtract_sweep(self.dim, basis, slots, &coeffs, x, Then::Norm)[0];
        Ok((coeffs, norm_squared.sqrt()))
    }

    fn basis_combine(&self, basis: &HostBasis, coeffs: &[f64], out: &mut Vec<f64>) -> Result<()> {
        let len = basis.len();
        if coeffs.len() > len {
            return Err(slot_error(coeffs.len() - 1, len));
        }
        out.resize(self.dim, 0.0);
        with_store!(basis, vecs => {
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, oc)| {
                let r = chunk_range(self.dim, c);
                oc.fill(0.0);
                for (v, &coef) in vecs.iter().zip(coeffs) {
                    axpy_kernel(coef, &v[r.clone()], oc);
                }
            });
        });
        Ok(())
    }

    fn basis_combine_many(
        &self,
        basis: &HostBasis,
        coeffs: &[Vec<f64>],
        outs: &mut [Vec<f64>],
    ) -> Result<()> {
        let len = basis.len();
        if let Some(c) = coeffs.iter().find(|c| c.len() > len) {
            return Err(slot_error(c.len() - 1, len));
        }
        for out in outs.iter_mut() {
            out.resize(self.dim, 0.0);
        }
        with_store!(basis, vecs => {
            let by_row = chunks_by_row(outs);
            by_row.into_par_iter().enumerate().for_each(|(c, mut pieces)| {
                let r = chunk_range(self.dim, c);
                for piece in pieces.iter_mut() {
                    piece.fill(0.0);
                }
                for (i, v) in vecs.iter().enumerate() {
                    let vc = &v[r.clone()];
                    for (piece, coeff) in pieces.iter_mut().zip(coeffs) {
                        if let Some(&a) = coeff.get(i) {
                            axpy_kernel(a, vc, piece);
                        }
                    }
                }
            });
        });
        Ok(())
    }

    fn basis_rotate(
        &self,
        basis: &mut HostBasis,
        transform: &[f64],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let len = basis.len();
        if rows > len || cols > rows || transform.len() != rows * cols {
            return Err(Error::Numerical(format!(
                "basis rotation {rows}x{cols} on {len} stored vectors"
            )));
        }
        with_store_mut!(basis, vecs => {
            let by_row = chunks_by_row(&mut vecs[..rows]);
            by_row.into_par_iter().for_each(|mut pieces| {
                let m = pieces.first().map_or(0, |p| p.len());
                let mut rotated = vec![0.0f64; m * cols];
                for j in 0..cols {
                    let out = &mut rotated[j * m..(j + 1) * m];
                    for (i, piece) in pieces.iter().enumerate() {
                        axpy_kernel(transform[i + j * rows], piece, out);
                    }
                }
                for (j, piece) in pieces.iter_mut().take(cols).enumerate() {
                    for (a, b) in piece.iter_mut().zip(&rotated[j * m..(j + 1) * m]) {
                        *a = Scalar::from_f64(*b);
                    }
                }
            });
        });
        basis.recycle(cols..rows);
        Ok(())
    }

    fn basis_gram(&self, basis: &HostBasis) -> Result<Vec<f64>> {
        let m = basis.len();
        let n = self.dim;
        let parts = with_store!(basis, vecs => map_chunks(n, |c| {
            let r = chunk_range(n, c);
            let promoted: Vec<Vec<f64>> = vecs
                .iter()
                .map(|v| v[r.clone()].iter().map(|a| a.to_f64()).collect())
                .collect();
            let mut g = vec![0.0; m * m];
            for j in 0..m {
                for i in 0..=j {
                    g[i + j * m] = dot_kernel(&promoted[i], &promoted[j]);
                }
            }
            g
        }));
        let mut gram = sum_parts(&parts, m * m);
        for j in 0..m {
            for i in 0..j {
                gram[j + i * m] = gram[i + j * m];
            }
        }
        Ok(gram)
    }
}

/// What a subtraction sweep accumulates after subtracting.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// The projections of the updated `x` on the same slots.
    Dots,
    /// `‖x‖²` of the updated `x` (a single value).
    Norm,
}

/// `x -= Σ coeffs[i] v_{slots[i]}`, chunk by chunk, then per chunk either the new
/// projections or the squared norm; returns their chunk-ordered sums.
fn subtract_sweep(
    n: usize,
    basis: &HostBasis,
    slots: &[usize],
    coeffs: &[f64],
    x: &mut [f64],
    then: Then,
) -> Vec<f64> {
    let parts = with_store!(basis, vecs => {
        x.par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(c, xc)| {
                let r = chunk_range(n, c);
                for (&s, &coef) in slots.iter().zip(coeffs) {
                    axpy_kernel(-coef, &vecs[s][r.clone()], xc);
                }
                match then {
                    Then::Dots => slots
                        .iter()
                        .map(|&s| dot_kernel(&vecs[s][r.clone()], xc))
                        .collect::<Vec<f64>>(),
                    Then::Norm => vec![dot_kernel(xc, xc)],
                }
            })
            .collect::<Vec<_>>()
    });
    let len = if then == Then::Dots { slots.len() } else { 1 };
    sum_parts(&parts, len)
}

/// Element-wise sum of per-chunk partial results, in chunk order.
fn sum_parts(parts: &[Vec<f64>], len: usize) -> Vec<f64> {
    let mut total = vec![0.0; len];
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    fn space_and_vectors(n: usize) -> (HostSpace, Vec<Vec<f64>>) {
        let space = HostSpace::new(n);
        let vs = (0..4)
            .map(|s| random_values(n, Distribution::Gaussian, 11, s))
            .collect();
        (space, vs)
    }

    #[test]
    fn kernels_match_plain_loops_across_chunk_boundaries() -> TestResult {
        let n = 3 * CHUNK + 17;
        let (space, vs) = space_and_vectors(n);
        let plain: f64 = vs[0].iter().zip(&vs[1]).map(|(a, b)| a * b).sum();
        let fast = space.dot(&vs[0], &vs[1])?;
        assert!((plain - fast).abs() <= 1e-12 * plain.abs().max(1.0));

        let mut y = vs[1].clone();
        let d = space.axpy_dot(0.5, &vs[0], &mut y, &vs[2])?;
        let expected: f64 = (0..n).map(|i| (vs[1][i] + 0.5 * vs[0][i]) * vs[2][i]).sum();
        assert!((d - expected).abs() <= 1e-10 * expected.abs().max(1.0));
        Ok(())
    }

    #[test]
    fn cgs2_orthogonalizes_in_both_precisions() -> TestResult {
        let n = 2 * CHUNK + 5;
        let (space, vs) = space_and_vectors(n);
        for precision in [Precision::F64, Precision::F32] {
            let mut basis = space.new_basis(3, precision)?;
            for v in &vs[..3] {
                let mut q = v.clone();
                let slots: Vec<usize> = (0..space.basis_len(&basis)).collect();
                let (_, norm) = space.basis_orthogonalize(&basis, &slots, &mut q)?;
                space.scale_and_push(1.0 / norm, &mut q, &mut basis)?;
            }
            let gram = space.basis_gram(&basis)?;
            let loss = super::super::vector::orthogonality_loss(&gram, 3);
            let bound = if precision == Precision::F64 {
                1e-14
            } else {
                1e-6
            };
            assert!(loss < bound, "{precision:?}: loss {loss}");
        }
        Ok(())
    }

    #[test]
    fn rotation_matches_explicit_combination() -> TestResult {
        let n = CHUNK + 3;
        let (space, vs) = space_and_vectors(n);
        let mut basis = space.new_basis(4, Precision::F64)?;
        for v in &vs {
            space.basis_push(&mut basis, v)?;
        }
        // Rotate the first three slots into two; slot 3 moves down to slot 2.
        let s = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
        let mut expected = vec![vec![0.0; n]; 2];
        for (j, out) in expected.iter_mut().enumerate() {
            space.basis_combine(&basis, &s[j * 3..j * 3 + 3], out)?;
        }
        // The many-vector form agrees with the single one.
        let mut many = vec![vec![0.0; n]; 2];
        let columns: Vec<Vec<f64>> = (0..2).map(|j| s[j * 3..j * 3 + 3].to_vec()).collect();
        space.basis_combine_many(&basis, &columns, &mut many)?;
        assert_eq!(many, expected);
        space.basis_rotate(&mut basis, &s, 3, 2)?;
        assert_eq!(space.basis_len(&basis), 3);
        let mut got = vec![0.0; n];
        for (j, want) in expected.iter().enumerate() {
            space.basis_get(&basis, j, &mut got)?;
            assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-14));
        }
        space.basis_get(&basis, 2, &mut got)?;
        assert_eq!(got, vs[3]);
        Ok(())
    }
}
