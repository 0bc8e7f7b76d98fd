//! [`VectorSpace`] on the GPU: the spectral algorithms' vectors and bases live in
//! device memory, so a Lanczos step (its axpys, its orthogonalization against the
//! stored basis, its restarts) runs on the device and the host sees only the
//! scalars the algorithm decides on.
//!
//! Mirrors [`crate::spectral::HostSpace`] operation by operation (same formulas,
//! same order of the terms inside each entry):
//!
//! - Vectors are `CudaSlice<f64>` of length n.
//! - A [`CudaBasis`] holds one device buffer per stored vector, in f64 or f32
//!   (`Precision`). One buffer per slot, not one `capacity x n` block: the trait
//!   promises that memory is taken as vectors are pushed (full reorthogonalization
//!   asks for `max_products + 1` slots), and a thick restart then drops slots by
//!   moving handles, not memory. Kernels receive the listed slots as a table of
//!   device addresses, uploaded with the coefficients in one copy per call.
//! - Every product and sum is in f64 (an f32 basis is promoted entry by entry).
//! - Reductions are deterministic: a grid of `min(1024, ceil(n / 256))` blocks
//!   writes one partial sum per block and output, and one block per output adds
//!   them in a fixed order (`vec_sum_partials`); no atomics. The result does not
//!   depend on scheduling, only on n. Several reductions of one step share the
//!   final sum and its single download (`axpy_dot_block`: one synchronization).
//! - Random vectors are drawn on the host with [`crate::rng`] exactly as the host
//!   space draws them (same seed, same numbers), then uploaded.
//!
//! A model's Hessian acts on these vectors directly (the probe's
//! `OperatorOn<CudaSpace>`): [`CudaSpace::cast_into`] casts the f64 vector (or
//! scatters it, on the gathered path) into the model's precision on the device, the
//! product runs, and [`CudaSpace::cast_from`] casts the result back; nothing crosses
//! to the host.
//!
//! Launch failures are latched by [`Cuda`] and surface at the next reduction or
//! download, as for the backend's kernels.

use std::sync::{Mutex, MutexGuard};

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits};

use super::runtime::{elements, scalar, size};
use super::{Cuda, CudaScalar};
use crate::error::{Error, Result};
use crate::spectral::vector::{BlockDots, Precision, VectorSpace};

/// Threads per block of every `vec_` kernel (a multiple of 32).
const THREADS: u32 = 256;
/// Most blocks of a reduction's first pass.
const MAX_BLOCKS: usize = 1024;
/// Slots per `blockIdx.y` of `vec_basis_dots_partial` (`VEC_TILE`).
const TILE: usize = 8;
/// Entries of the temporary buffer of a rotation (128 MiB of f64): the rotated
/// vectors are formed in chunks of `ROTATE_ENTRIES / cols` entries.
const ROTATE_ENTRIES: usize = 1 << 24;

/// The space `R^n` with vectors in the memory of one GPU.
pub struct CudaSpace {
    cuda: Cuda,
    dim: usize,
    /// Blocks of a reduction's first pass (fixed by `dim`, so results are too).
    blocks: usize,
    scratch: Mutex<Scratch>,
}

/// Device buffers reused by every call: the slot table (addresses, then
/// coefficients), the partial sums and the final sums. Held for the whole of a
/// call, so concurrent calls cannot overwrite each other's table.
#[derive(Default)]
struct Scratch {
    table: Option<CudaSlice<u64>>,
    partials: Option<CudaSlice<f64>>,
    sums: Option<CudaSlice<f64>>,
}

/// A block of device vectors in f64 or f32 (see the module documentation).
pub struct CudaBasis {
    store: Store,
    capacity: usize,
}

enum Store {
    F64(Slots<f64>),
    F32(Slots<f32>),
}

/// The stored vectors, and those dropped by a truncation or a restart, kept for
/// the next pushes.
struct Slots<T> {
    vecs: Vec<CudaSlice<T>>,
    spare: Vec<CudaSlice<T>>,
}

impl<T> Slots<T> {
    fn new() -> Self {
        Slots {
            vecs: Vec::new(),
            spare: Vec::new(),
        }
    }
}

impl CudaBasis {
    /// Number of stored vectors.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::F64(s) => s.vecs.len(),
            Store::F32(s) => s.vecs.len(),
        }
    }

    /// Whether no vector is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Device bytes held by the stored vectors.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F64(s) => s.vecs.iter().map(|v| v.len() * 8).sum(),
            Store::F32(s) => s.vecs.iter().map(|v| v.len() * 4).sum(),
        }
    }

    fn check_not_full(&self) -> Result<()> {
        if self.len() >= self.capacity {
            return Err(Error::Numerical(format!(
                "basis full ({} vectors)",
                self.capacity
            )));
        }
        Ok(())
    }

    fn check_slots(&self, slots: &[usize]) -> Result<()> {
        let len = self.len();
        match slots.iter().find(|&&s| s >= len) {
            Some(&bad) => Err(slot_error(bad, len)),
            None => Ok(()),
        }
    }
}

/// Applies `$body` with `$slots` bound to the basis storage, whatever its precision
/// (the body calls generic helpers, which infer the element type from it).
macro_rules! with_store {
    ($basis:expr, $slots:ident => $body:expr) => {
        match &$basis.store {
            Store::F64($slots) => $body,
            Store::F32($slots) => $body,
        }
    };
}

macro_rules! with_store_mut {
    ($basis:expr, $slots:ident => $body:expr) => {
        match &mut $basis.store {
            Store::F64($slots) => $body,
            Store::F32($slots) => $body,
        }
    };
}

fn slot_error(slot: usize, len: usize) -> Error {
    Error::Numerical(format!("basis slot {slot} requested, {len} stored"))
}

/// A first-pass reduction grid: `blocks` x `tiles` blocks of [`THREADS`].
fn reduction(blocks: usize, tiles: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, tiles as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// An element-wise launch over `n` entries for each of `columns` (`blockIdx.y`).
fn columns(n: usize, count: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as usize) as u32, count as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Makes `slot` hold at least `len` elements (growing by powers of two); returns
/// its device address.
fn ensure<U: DeviceRepr + ValidAsZeroBits>(
    cuda: &Cuda,
    slot: &mut Option<CudaSlice<U>>,
    len: usize,
) -> Result<u64> {
    let buffer = match slot {
        Some(b) if b.len() >= len => b,
        _ => slot.insert(cuda.alloc_zeros(len.max(1).next_power_of_two())?),
    };
    Ok(cuda.address(buffer))
}

impl CudaSpace {
    /// The space `R^dim` on the device of `cuda` (use the model's backend, so that
    /// the Hessian acts on these vectors on the same device and stream).
    pub fn new(cuda: Cuda, dim: usize) -> Self {
        let blocks = dim.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS);
        CudaSpace {
            cuda,
            dim,
            blocks,
            scratch: Mutex::new(Scratch::default()),
        }
    }

    /// The device the vectors live on.
    pub fn cuda(&self) -> &Cuda {
        &self.cuda
    }

    /// The number of non-finite entries of `x` (a reduction; one synchronization).
    pub fn count_nonfinite(&self, x: &CudaSlice<f64>) -> Result<usize> {
        self.check(x)?;
        let mut scratch = self.lock();
        let partials = self.partials(&mut scratch, 1)?;
        self.cuda.launch::<f64>(
            "vec_nonfinite_partial",
            reduction(self.blocks, 1),
            &[partials, self.addr(x), size(self.dim)],
        );
        Ok(self.sums(&mut scratch, partials, 1)?[0] as usize)
    }

    fn lock(&self) -> MutexGuard<'_, Scratch> {
        self.scratch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `dst[i] = x[i]` in `T` (a model's precision), or `dst[idx[i]] = x[i]` when
    /// `idx` is given (the rest of `dst` untouched): the operand of a product.
    pub(crate) fn cast_into<T: CudaScalar>(
        &self,
        x: &CudaSlice<f64>,
        dst: &mut CudaSlice<T>,
        idx: Option<&CudaSlice<u32>>,
    ) -> Result<()> {
        self.check(x)?;
        let (n, cuda, xa) = (self.dim, &self.cuda, self.addr(x));
        match idx {
            Some(idx) => cuda.launch::<T>(
                "vec_scatter",
                elements(n),
                &[cuda.address(dst), cuda.address(idx), xa, size(n)],
            ),
            None => cuda.launch::<T>(
                "vec_store",
                elements(n),
                &[cuda.address(dst), xa, 0, scalar(1.0), size(n)],
            ),
        }
        Ok(())
    }

    /// `y[i] = src[i]` in f64, or `y[i] = src[idx[i]]` when `idx` is given: the
    /// result of a product.
    pub(crate) fn cast_from<T: CudaScalar>(
        &self,
        src: &CudaSlice<T>,
        y: &mut CudaSlice<f64>,
        idx: Option<&CudaSlice<u32>>,
    ) -> Result<()> {
        self.check(y)?;
        let (n, cuda) = (self.dim, &self.cuda);
        let ya = self.addr(y);
        match idx {
            Some(idx) => cuda.launch::<T>(
                "vec_gather",
                elements(n),
                &[ya, cuda.address(src), cuda.address(idx), size(n)],
            ),
            None => cuda.launch::<T>("vec_load", elements(n), &[ya, cuda.address(src), size(n)]),
        }
        Ok(())
    }

    fn addr<U>(&self, buf: &CudaSlice<U>) -> u64 {
        self.cuda.address(buf)
    }

    fn check(&self, x: &CudaSlice<f64>) -> Result<()> {
        if x.len() == self.dim {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                name: "vector".into(),
                expected: vec![self.dim],
                found: vec![x.len()],
            })
        }
    }

    /// Uploads `words` into the scratch table; returns its device address.
    fn table(&self, scratch: &mut Scratch, words: &[u64]) -> Result<u64> {
        let address = ensure(&self.cuda, &mut scratch.table, words.len())?;
        if !words.is_empty() {
            self.cuda.write_host(address, words.len(), words)?;
        }
        Ok(address)
    }

    /// The address of room for `outputs` rows of partial sums.
    fn partials(&self, scratch: &mut Scratch, outputs: usize) -> Result<u64> {
        ensure(&self.cuda, &mut scratch.partials, outputs * self.blocks)
    }

    /// The address of row `output` of the partial sums at `partials`.
    fn row(&self, partials: u64, output: usize) -> u64 {
        partials + (output * self.blocks * size_of::<f64>()) as u64
    }

    /// Sums each of the first `outputs` rows of partials in a fixed order and
    /// downloads the sums (the one synchronization of a reduction).
    fn sums(&self, scratch: &mut Scratch, partials: u64, outputs: usize) -> Result<Vec<f64>> {
        let mut host = vec![0.0; outputs];
        if outputs == 0 {
            return Ok(host);
        }
        let sums = ensure(&self.cuda, &mut scratch.sums, outputs)?;
        self.cuda.launch::<f64>(
            "vec_sum_partials",
            LaunchConfig {
                grid_dim: (outputs as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            },
            &[sums, partials, size(self.blocks)],
        );
        self.cuda.read_host(sums, outputs, &mut host)?;
        Ok(host)
    }

    /// The addresses of the listed slots, then the coefficients' bits.
    fn slot_words<T>(&self, vecs: &[CudaSlice<T>], slots: &[usize], coeffs: &[f64]) -> Vec<u64> {
        slots
            .iter()
            .map(|&s| self.addr(&vecs[s]))
            .chain(coeffs.iter().map(|c| c.to_bits()))
            .collect()
    }

    /// A buffer for a push: a spare one when available.
    fn take_spare<T: CudaScalar>(&self, slots: &mut Slots<T>) -> Result<CudaSlice<T>> {
        match slots.spare.pop() {
            Some(v) if v.len() == self.dim => Ok(v),
            _ => self.cuda.alloc_zeros(self.dim),
        }
    }

    /// Appends `(T)(x * alpha)`, writing `x * alpha` back to `x_out` when not null.
    fn push_scaled<T: CudaScalar>(
        &self,
        slots: &mut Slots<T>,
        x: u64,
        x_out: u64,
        alpha: f64,
    ) -> Result<()> {
        let copy = self.take_spare(slots)?;
        self.cuda.launch::<T>(
            "vec_store",
            elements(self.dim),
            &[self.addr(&copy), x, x_out, scalar(alpha), size(self.dim)],
        );
        slots.vecs.push(copy);
        Ok(())
    }

    /// Launches the partial sums of `v_s · x` for the slots whose addresses are in
    /// the table at `table` (`m` of them) into rows `first..first + m`.
    fn launch_slot_dots<T: CudaScalar>(
        &self,
        table: u64,
        m: usize,
        x: u64,
        partials: u64,
        first: usize,
    ) {
        if m == 0 {
            return;
        }
        self.cuda.launch::<T>(
            "vec_basis_dots_partial",
            reduction(self.blocks, m.div_ceil(TILE)),
            &[self.row(partials, first), table, size(m), x, size(self.dim)],
        );
    }

    fn dots_in<T: CudaScalar>(
        &self,
        s: &Slots<T>,
        slots: &[usize],
        x: &CudaSlice<f64>,
    ) -> Result<Vec<f64>> {
        let m = slots.len();
        if m == 0 {
            return Ok(Vec::new());
        }
        let mut scratch = self.lock();
        let table = self.table(&mut scratch, &self.slot_words(&s.vecs, slots, &[]))?;
        let partials = self.partials(&mut scratch, m)?;
        self.launch_slot_dots::<T>(table, m, self.addr(x), partials, 0);
        self.sums(&mut scratch, partials, m)
    }

    /// `x = x + alpha ax - Σ coeffs[i] v_{slots[i]}` (`ax` = 0 for no axpy), then,
    /// when `push`, `x *= scale` and a copy of `x` appended to the slots.
    #[allow(clippy::too_many_arguments)]
    fn update_in<T: CudaScalar>(
        &self,
        s: &mut Slots<T>,
        x: &mut CudaSlice<f64>,
        ax: u64,
        alpha: f64,
        slots: &[usize],
        coeffs: &[f64],
        push: bool,
        scale: f64,
    ) -> Result<()> {
        let m = slots.len().min(coeffs.len());
        let mut scratch = self.lock();
        let table = self.table(
            &mut scratch,
            &self.slot_words(&s.vecs, &slots[..m], &coeffs[..m]),
        )?;
        let copy = if push {
            Some(self.take_spare(s)?)
        } else {
            None
        };
        let push_addr = copy.as_ref().map_or(0, |c| self.addr(c));
        self.cuda.launch::<T>(
            "vec_update",
            elements(self.dim),
            &[
                self.addr(x),
                ax,
                scalar(alpha),
                table,
                table + (m * size_of::<u64>()) as u64,
                size(m),
                push_addr,
                scalar(scale),
                size(self.dim),
            ],
        );
        drop(scratch);
        if let Some(copy) = copy {
            s.vecs.push(copy);
        }
        Ok(())
    }

    fn combine_in<T: CudaScalar>(
        &self,
        s: &Slots<T>,
        coeffs: &[f64],
        out: &mut CudaSlice<f64>,
    ) -> Result<()> {
        let m = coeffs.len();
        let slots: Vec<usize> = (0..m).collect();
        let mut scratch = self.lock();
        let table = self.table(&mut scratch, &self.slot_words(&s.vecs, &slots, coeffs))?;
        self.cuda.launch::<T>(
            "vec_basis_combine",
            elements(self.dim),
            &[
                self.addr(out),
                table,
                table + (m * size_of::<u64>()) as u64,
                size(m),
                size(self.dim),
            ],
        );
        Ok(())
    }

    fn rotate_in<T: CudaScalar>(
        &self,
        s: &mut Slots<T>,
        transform: &[f64],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        if let Some(per_column) = ROTATE_ENTRIES.checked_div(cols) {
            let n = self.dim;
            let slots: Vec<usize> = (0..rows).collect();
            let chunk = per_column.clamp(1, n.max(1));
            let temp = self.cuda.alloc_zeros::<f64>(chunk * cols)?;
            let mut scratch = self.lock();
            let table = self.table(&mut scratch, &self.slot_words(&s.vecs, &slots, transform))?;
            let transform_addr = table + (rows * size_of::<u64>()) as u64;
            let mut start = 0;
            while start < n {
                let len = chunk.min(n - start);
                self.cuda.launch::<T>(
                    "vec_rotate",
                    columns(len, cols),
                    &[
                        self.addr(&temp),
                        table,
                        transform_addr,
                        size(rows),
                        size(start),
                        size(len),
                    ],
                );
                self.cuda.launch::<T>(
                    "vec_rotate_store",
                    columns(len, cols),
                    &[table, self.addr(&temp), size(start), size(len)],
                );
                start += len;
            }
        }
        // Slots cols..rows are dropped, later ones move down (handles only).
        let dropped: Vec<CudaSlice<T>> = s.vecs.drain(cols..rows).collect();
        s.spare.extend(dropped);
        Ok(())
    }

    fn gram_in<T: CudaScalar>(&self, s: &Slots<T>) -> Result<Vec<f64>> {
        let m = s.vecs.len();
        let mut gram = vec![0.0; m * m];
        let column = self.zeros()?;
        for j in 0..m {
            self.cuda.launch::<T>(
                "vec_load",
                elements(self.dim),
                &[self.addr(&column), self.addr(&s.vecs[j]), size(self.dim)],
            );
            let slots: Vec<usize> = (0..=j).collect();
            let dots = self.dots_in(s, &slots, &column)?;
            gram[j * m..j * m + j + 1].copy_from_slice(&dots);
        }
        for j in 0..m {
            for i in 0..j {
                gram[j + i * m] = gram[i + j * m];
            }
        }
        Ok(gram)
    }
}

impl VectorSpace for CudaSpace {
    type Vector = CudaSlice<f64>;
    type Basis = CudaBasis;

    fn dim(&self) -> usize {
        self.dim
    }

    fn zeros(&self) -> Result<CudaSlice<f64>> {
        self.cuda.alloc_zeros(self.dim)
    }

    fn upload(&self, values: &[f64]) -> Result<CudaSlice<f64>> {
        if values.len() != self.dim {
            return Err(Error::ShapeMismatch {
                name: "vector".into(),
                expected: vec![self.dim],
                found: vec![values.len()],
            });
        }
        self.cuda.upload_slice(values)
    }

    fn download(&self, x: &CudaSlice<f64>) -> Result<Vec<f64>> {
        let mut host = vec![0.0; x.len()];
        self.cuda.read_host(self.addr(x), x.len(), &mut host)?;
        Ok(host)
    }

    // `random` keeps the trait's body: the host space's numbers, uploaded.

    fn copy(&self, src: &CudaSlice<f64>, dst: &mut CudaSlice<f64>) -> Result<()> {
        self.check(src)?;
        if dst.len() != self.dim {
            *dst = self.zeros()?;
        }
        self.cuda.memcpy_device(
            self.addr(dst),
            self.addr(src),
            (self.dim * size_of::<f64>()) as u64,
        );
        Ok(())
    }

    fn dot(&self, x: &CudaSlice<f64>, y: &CudaSlice<f64>) -> Result<f64> {
        self.check(x)?;
        self.check(y)?;
        let mut scratch = self.lock();
        let partials = self.partials(&mut scratch, 1)?;
        self.cuda.launch::<f64>(
            "vec_dot_partial",
            reduction(self.blocks, 1),
            &[partials, self.addr(x), self.addr(y), size(self.dim)],
        );
        Ok(self.sums(&mut scratch, partials, 1)?[0])
    }

    fn axpy(&self, alpha: f64, x: &CudaSlice<f64>, y: &mut CudaSlice<f64>) -> Result<()> {
        self.check(x)?;
        self.check(y)?;
        self.cuda.launch::<f64>(
            "vec_axpy",
            elements(self.dim),
            &[self.addr(y), self.addr(x), scalar(alpha), size(self.dim)],
        );
        Ok(())
    }

    fn scale(&self, alpha: f64, x: &mut CudaSlice<f64>) -> Result<()> {
        self.check(x)?;
        self.cuda.launch::<f64>(
            "vec_scale",
            elements(self.dim),
            &[self.addr(x), scalar(alpha), size(self.dim)],
        );
        Ok(())
    }

    fn axpy_dot(
        &self,
        alpha: f64,
        x: &CudaSlice<f64>,
        y: &mut CudaSlice<f64>,
        z: &CudaSlice<f64>,
    ) -> Result<f64> {
        self.check(x)?;
        self.check(y)?;
        self.check(z)?;
        let mut scratch = self.lock();
        let partials = self.partials(&mut scratch, 1)?;
        self.cuda.launch::<f64>(
            "vec_axpy_dot_partial",
            reduction(self.blocks, 1),
            &[
                partials,
                self.addr(y),
                self.addr(x),
                self.addr(z),
                scalar(alpha),
                size(self.dim),
            ],
        );
        Ok(self.sums(&mut scratch, partials, 1)?[0])
    }

    fn axpy_norm(&self, alpha: f64, x: &CudaSlice<f64>, y: &mut CudaSlice<f64>) -> Result<f64> {
        self.check(x)?;
        self.check(y)?;
        let mut scratch = self.lock();
        let partials = self.partials(&mut scratch, 1)?;
        self.cuda.launch::<f64>(
            "vec_axpy_dot_partial",
            reduction(self.blocks, 1),
            &[
                partials,
                self.addr(y),
                self.addr(x),
                0,
                scalar(alpha),
                size(self.dim),
            ],
        );
        Ok(self.sums(&mut scratch, partials, 1)?[0].sqrt())
    }

    /// All `2m + 3` reductions summed and downloaded together: one synchronization.
    fn axpy_dot_block(
        &self,
        alpha: f64,
        x: &CudaSlice<f64>,
        y: &mut CudaSlice<f64>,
        z: &CudaSlice<f64>,
        basis: &CudaBasis,
        slots: &[usize],
    ) -> Result<BlockDots> {
        self.check(x)?;
        self.check(y)?;
        self.check(z)?;
        basis.check_slots(slots)?;
        let m = slots.len();
        let mut scratch = self.lock();
        let partials = self.partials(&mut scratch, 2 * m + 3)?;
        let (ya, za) = (self.addr(y), self.addr(z));
        let reduce = reduction(self.blocks, 1);
        self.cuda.launch::<f64>(
            "vec_axpy_dot_partial",
            reduce,
            &[
                self.row(partials, 0),
                ya,
                self.addr(x),
                za,
                scalar(alpha),
                size(self.dim),
            ],
        );
        for (row, (a, b)) in [(ya, ya), (za, za)].into_iter().enumerate() {
            self.cuda.launch::<f64>(
                "vec_dot_partial",
                reduce,
                &[self.row(partials, row + 1), a, b, size(self.dim)],
            );
        }
        with_store!(basis, s => {
            let table = self.table(&mut scratch, &self.slot_words(&s.vecs, slots, &[]))?;
            self.launch_slot_dots_of(s, table, m, ya, partials, 3);
            self.launch_slot_dots_of(s, table, m, za, partials, 3 + m);
        });
        let sums = self.sums(&mut scratch, partials, 2 * m + 3)?;
        Ok(BlockDots {
            z_dot: sums[0],
            norm_squared: sums[1],
            z_norm_squared: sums[2],
            slot_dots: sums[3..m + 3].to_vec(),
            slot_dots_z: sums[m + 3..].to_vec(),
        })
    }

    fn axpy_subtract_norm(
        &self,
        alpha: f64,
        x: &CudaSlice<f64>,
        y: &mut CudaSlice<f64>,
        basis: &CudaBasis,
        slots: &[usize],
        coeffs: &[f64],
    ) -> Result<f64> {
        self.check(x)?;
        self.check(y)?;
        basis.check_slots(slots)?;
        let xa = self.addr(x);
        with_store!(basis, s => self.update_norm(s, y, xa, alpha, slots, coeffs))
    }

    fn update_scale_push(
        &self,
        alpha: f64,
        x: &CudaSlice<f64>,
        y: &mut CudaSlice<f64>,
        basis: &mut CudaBasis,
        slots: &[usize],
        coeffs: &[f64],
        scale: f64,
    ) -> Result<()> {
        self.check(x)?;
        self.check(y)?;
        basis.check_slots(slots)?;
        basis.check_not_full()?;
        let xa = self.addr(x);
        with_store_mut!(basis, s => self.update_in(s, y, xa, alpha, slots, coeffs, true, scale))
    }

    fn new_basis(&self, capacity: usize, precision: Precision) -> Result<CudaBasis> {
        let store = match precision {
            Precision::F64 => Store::F64(Slots::new()),
            Precision::F32 => Store::F32(Slots::new()),
        };
        Ok(CudaBasis { store, capacity })
    }

    fn basis_len(&self, basis: &CudaBasis) -> usize {
        basis.len()
    }

    fn basis_precision(&self, basis: &CudaBasis) -> Precision {
        match basis.store {
            Store::F64(_) => Precision::F64,
            Store::F32(_) => Precision::F32,
        }
    }

    fn basis_push(&self, basis: &mut CudaBasis, x: &CudaSlice<f64>) -> Result<()> {
        self.check(x)?;
        basis.check_not_full()?;
        let xa = self.addr(x);
        with_store_mut!(basis, s => self.push_scaled(s, xa, 0, 1.0))
    }

    fn scale_and_push(
        &self,
        alpha: f64,
        x: &mut CudaSlice<f64>,
        basis: &mut CudaBasis,
    ) -> Result<()> {
        self.check(x)?;
        basis.check_not_full()?;
        let xa = self.addr(x);
        with_store_mut!(basis, s => self.push_scaled(s, xa, xa, alpha))
    }

    fn basis_set(&self, basis: &mut CudaBasis, slot: usize, x: &CudaSlice<f64>) -> Result<()> {
        self.check(x)?;
        let len = basis.len();
        let xa = self.addr(x);
        with_store!(basis, s => {
            let target = s.vecs.get(slot).ok_or_else(|| slot_error(slot, len))?;
            self.launch_store(target, xa);
        });
        Ok(())
    }

    fn basis_get(&self, basis: &CudaBasis, slot: usize, out: &mut CudaSlice<f64>) -> Result<()> {
        let len = basis.len();
        if out.len() != self.dim {
            *out = self.zeros()?;
        }
        let oa = self.addr(out);
        with_store!(basis, s => {
            let src = s.vecs.get(slot).ok_or_else(|| slot_error(slot, len))?;
            self.launch_load(oa, src);
        });
        Ok(())
    }

    fn basis_truncate(&self, basis: &mut CudaBasis, len: usize) {
        with_store_mut!(basis, s => {
            if len < s.vecs.len() {
                let dropped: Vec<_> = s.vecs.drain(len..).collect();
                s.spare.extend(dropped);
            }
        })
    }

    fn basis_dots(
        &self,
        basis: &CudaBasis,
        slots: &[usize],
        x: &CudaSlice<f64>,
    ) -> Result<Vec<f64>> {
        self.check(x)?;
        basis.check_slots(slots)?;
        with_store!(basis, s => self.dots_in(s, slots, x))
    }

    fn basis_subtract(
        &self,
        basis: &CudaBasis,
        slots: &[usize],
        coeffs: &[f64],
        x: &mut CudaSlice<f64>,
    ) -> Result<()> {
        self.check(x)?;
        basis.check_slots(slots)?;
        match &basis.store {
            Store::F64(s) => self.update_read_only(s, x, 0, 0.0, slots, coeffs),
            Store::F32(s) => self.update_read_only(s, x, 0, 0.0, slots, coeffs),
        }
    }

    /// CGS2 with the norm accumulated in the second subtraction's sweep.
    fn basis_orthogonalize(
        &self,
        basis: &CudaBasis,
        slots: &[usize],
        x: &mut CudaSlice<f64>,
    ) -> Result<(Vec<f64>, f64)> {
        let first = self.basis_dots(basis, slots, x)?;
        self.basis_subtract(basis, slots, &first, x)?;
        let second = self.basis_dots(basis, slots, x)?;
        let norm = with_store!(basis, s => self.update_norm(s, x, 0, 0.0, slots, &second))?;
        let coeffs = first.iter().zip(&second).map(|(a, b)| a + b).collect();
        Ok((coeffs, norm))
    }

    /// One pass, the norm accumulated in the subtraction's sweep.
    fn basis_project_out(
        &self,
        basis: &CudaBasis,
        slots: &[usize],
        x: &mut CudaSlice<f64>,
    ) -> Result<(Vec<f64>, f64)> {
        let coeffs = self.basis_dots(basis, slots, x)?;
        let norm = with_store!(basis, s => self.update_norm(s, x, 0, 0.0, slots, &coeffs))?;
        Ok((coeffs, norm))
    }

    fn basis_combine(
        &self,
        basis: &CudaBasis,
        coeffs: &[f64],
        out: &mut CudaSlice<f64>,
    ) -> Result<()> {
        let len = basis.len();
        if coeffs.len() > len {
            return Err(slot_error(coeffs.len() - 1, len));
        }
        if out.len() != self.dim {
            *out = self.zeros()?;
        }
        with_store!(basis, s => self.combine_in(s, coeffs, out))
    }

    fn basis_rotate(
        &self,
        basis: &mut CudaBasis,
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
        with_store_mut!(basis, s => self.rotate_in(s, transform, rows, cols))
    }

    fn basis_gram(&self, basis: &CudaBasis) -> Result<Vec<f64>> {
        with_store!(basis, s => self.gram_in(s))
    }
}

/// Helpers whose element type is inferred from the slots they are given.
impl CudaSpace {
    fn launch_slot_dots_of<T: CudaScalar>(
        &self,
        _slots: &Slots<T>,
        table: u64,
        m: usize,
        x: u64,
        partials: u64,
        first: usize,
    ) {
        self.launch_slot_dots::<T>(table, m, x, partials, first);
    }

    fn launch_store<T: CudaScalar>(&self, target: &CudaSlice<T>, x: u64) {
        self.cuda.launch::<T>(
            "vec_store",
            elements(self.dim),
            &[self.addr(target), x, 0, scalar(1.0), size(self.dim)],
        );
    }

    fn launch_load<T: CudaScalar>(&self, out: u64, src: &CudaSlice<T>) {
        self.cuda.launch::<T>(
            "vec_load",
            elements(self.dim),
            &[out, self.addr(src), size(self.dim)],
        );
    }

    /// `x = x + alpha ax - Σ coeffs[i] v_{slots[i]}`, then `‖x‖` from the same
    /// sweep (one pass, one synchronization).
    fn update_norm<T: CudaScalar>(
        &self,
        s: &Slots<T>,
        x: &mut CudaSlice<f64>,
        ax: u64,
        alpha: f64,
        slots: &[usize],
        coeffs: &[f64],
    ) -> Result<f64> {
        let m = slots.len().min(coeffs.len());
        let mut scratch = self.lock();
        let table = self.table(
            &mut scratch,
            &self.slot_words(&s.vecs, &slots[..m], &coeffs[..m]),
        )?;
        let partials = self.partials(&mut scratch, 1)?;
        self.cuda.launch::<T>(
            "vec_update_norm_partial",
            reduction(self.blocks, 1),
            &[
                partials,
                self.addr(x),
                ax,
                scalar(alpha),
                table,
                table + (m * size_of::<u64>()) as u64,
                size(m),
                size(self.dim),
            ],
        );
        Ok(self.sums(&mut scratch, partials, 1)?[0].sqrt())
    }

    /// [`CudaSpace::update_in`] without a push, on a shared basis.
    fn update_read_only<T: CudaScalar>(
        &self,
        s: &Slots<T>,
        x: &mut CudaSlice<f64>,
        ax: u64,
        alpha: f64,
        slots: &[usize],
        coeffs: &[f64],
    ) -> Result<()> {
        let m = slots.len().min(coeffs.len());
        if m == 0 && ax == 0 {
            return Ok(());
        }
        let mut scratch = self.lock();
        let table = self.table(
            &mut scratch,
            &self.slot_words(&s.vecs, &slots[..m], &coeffs[..m]),
        )?;
        self.cuda.launch::<T>(
            "vec_update",
            elements(self.dim),
            &[
                self.addr(x),
                ax,
                scalar(alpha),
                table,
                table + (m * size_of::<u64>()) as u64,
                size(m),
                0,
                scalar(1.0),
                size(self.dim),
            ],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Every operation against [`HostSpace`] on the same data, and Lanczos on a
    //! dense operator in both spaces. They need a GPU: without one (no driver,
    //! NVRTC or cuBLAS on the library path, or no device) each test says so and
    //! passes.

    use cudarc::cublas::{result as cublas, sys as cublas_sys};

    use super::*;
    use crate::backend::cuda::availability;
    use crate::progress::Silent;
    use crate::spectral::testing::with_spectrum;
    use crate::spectral::vector::Distribution;
    use crate::spectral::vector::random_values;
    use crate::spectral::{
        HostBasis, HostSpace, LanczosOptions, OperatorOn, Reorthogonalization, Which, lanczos,
    };
    use crate::testing::TestResult;

    /// The device, or `None` (after saying why) where there is none.
    fn device() -> TestResult<Option<Cuda>> {
        if let Err(e) = availability() {
            eprintln!("skipped: no CUDA device ({e})");
            return Ok(None);
        }
        Ok(Some(Cuda::new(0, false)?))
    }

    /// `|got - want| <= tol * scale` entry by entry.
    fn assert_close(what: &str, got: &[f64], want: &[f64], scale: f64, tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * scale.max(1.0),
                "{what}[{i}]: cuda {g} vs host {w} (tolerance {tol} x {scale})"
            );
        }
    }

    fn max_abs(x: &[f64]) -> f64 {
        x.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    fn norm(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// The host and device spaces side by side, with the same bases.
    struct Pair {
        host: HostSpace,
        cuda: CudaSpace,
        tol: f64,
    }

    impl Pair {
        fn vector(&self, what: &str, h: &[f64], d: &CudaSlice<f64>) -> TestResult {
            let got = self.cuda.download(d)?;
            assert_close(what, &got, h, max_abs(h), self.tol);
            Ok(())
        }

        fn basis(&self, what: &str, h: &HostBasis, d: &CudaBasis) -> TestResult {
            assert_eq!(
                self.host.basis_len(h),
                self.cuda.basis_len(d),
                "{what}: len"
            );
            assert_eq!(
                self.host.basis_precision(h),
                self.cuda.basis_precision(d),
                "{what}: precision"
            );
            let mut hv = self.host.zeros()?;
            let mut dv = self.cuda.zeros()?;
            for slot in 0..self.host.basis_len(h) {
                self.host.basis_get(h, slot, &mut hv)?;
                self.cuda.basis_get(d, slot, &mut dv)?;
                self.vector(&format!("{what} slot {slot}"), &hv, &dv)?;
            }
            Ok(())
        }

        /// Scalars whose size is bounded by `scale` (Cauchy–Schwarz for dots).
        fn scalars(&self, what: &str, got: &[f64], want: &[f64], scale: f64) {
            assert_close(what, got, want, scale, self.tol);
        }
    }

    /// One pass over every method of the trait, on `n` entries, with a basis in
    /// `precision`.
    fn every_method(cuda: &Cuda, n: usize, precision: Precision) -> TestResult {
        let tol = match precision {
            Precision::F64 => 1e-12,
            Precision::F32 => 1e-6,
        };
        let p = Pair {
            host: HostSpace::new(n),
            cuda: CudaSpace::new(cuda.clone(), n),
            tol,
        };
        let (hs, ds) = (&p.host, &p.cuda);
        let what = |op: &str| format!("n={n} {precision:?} {op}");
        let values: Vec<Vec<f64>> = (0..6)
            .map(|s| random_values(n, Distribution::Gaussian, 3, s))
            .collect();
        let big = values.iter().map(|v| norm(v)).fold(0.0, f64::max);
        let dot_scale = big * big;

        // Vectors: upload, download, zeros, random, copy.
        let hv: Vec<Vec<f64>> = values.clone();
        let dv: Vec<CudaSlice<f64>> = values.iter().map(|v| ds.upload(v)).collect::<Result<_>>()?;
        for (h, d) in hv.iter().zip(&dv) {
            assert_eq!(&ds.download(d)?, h, "{}", what("upload/download"));
        }
        assert!(ds.download(&ds.zeros()?)?.iter().all(|&v| v == 0.0));
        for distribution in [Distribution::Gaussian, Distribution::Rademacher] {
            assert_eq!(
                ds.download(&ds.random(distribution, 7, 2)?)?,
                hs.random(distribution, 7, 2)?,
                "{}",
                what("random")
            );
        }
        let (mut hy, mut dy) = (hs.zeros()?, ds.zeros()?);
        hs.copy(&hv[1], &mut hy)?;
        ds.copy(&dv[1], &mut dy)?;
        p.vector(&what("copy"), &hy, &dy)?;

        // Reductions and updates.
        p.scalars(
            &what("dot"),
            &[ds.dot(&dv[0], &dv[1])?],
            &[hs.dot(&hv[0], &hv[1])?],
            dot_scale,
        );
        p.scalars(&what("norm"), &[ds.norm(&dv[2])?], &[hs.norm(&hv[2])?], big);
        hs.axpy(0.75, &hv[0], &mut hy)?;
        ds.axpy(0.75, &dv[0], &mut dy)?;
        p.vector(&what("axpy"), &hy, &dy)?;
        hs.scale(-1.25, &mut hy)?;
        ds.scale(-1.25, &mut dy)?;
        p.vector(&what("scale"), &hy, &dy)?;
        let scale = dot_scale * 4.0;
        p.scalars(
            &what("axpy_dot"),
            &[ds.axpy_dot(0.5, &dv[2], &mut dy, &dv[3])?],
            &[hs.axpy_dot(0.5, &hv[2], &mut hy, &hv[3])?],
            scale,
        );
        p.vector(&what("axpy_dot y"), &hy, &dy)?;
        p.scalars(
            &what("axpy_norm"),
            &[ds.axpy_norm(-0.3, &dv[3], &mut dy)?],
            &[hs.axpy_norm(-0.3, &hv[3], &mut hy)?],
            big * 4.0,
        );
        p.vector(&what("axpy_norm y"), &hy, &dy)?;

        // A basis: push, scale_and_push, set, get, len, precision.
        let (mut hb, mut db) = (hs.new_basis(5, precision)?, ds.new_basis(5, precision)?);
        for v in 0..3 {
            hs.basis_push(&mut hb, &hv[v])?;
            ds.basis_push(&mut db, &dv[v])?;
        }
        let (mut hx, mut dx) = (hv[4].clone(), ds.upload(&values[4])?);
        hs.scale_and_push(0.5, &mut hx, &mut hb)?;
        ds.scale_and_push(0.5, &mut dx, &mut db)?;
        p.vector(&what("scale_and_push x"), &hx, &dx)?;
        hs.basis_set(&mut hb, 1, &hv[5])?;
        ds.basis_set(&mut db, 1, &dv[5])?;
        p.basis(&what("push/set"), &hb, &db)?;
        let slots = [3, 0, 2];

        // Block reductions and updates.
        let hd = hs.basis_dots(&hb, &slots, &hv[5])?;
        let dd = ds.basis_dots(&db, &slots, &dv[5])?;
        p.scalars(&what("basis_dots"), &dd, &hd, dot_scale);
        let coeffs = [0.1, -0.2, 0.3];
        let (mut hx, mut dx) = (hv[5].clone(), ds.upload(&values[5])?);
        hs.basis_subtract(&hb, &slots, &coeffs, &mut hx)?;
        ds.basis_subtract(&db, &slots, &coeffs, &mut dx)?;
        p.vector(&what("basis_subtract"), &hx, &dx)?;
        let hbd = hs.axpy_dot_block(0.4, &hv[0], &mut hx, &hv[1], &hb, &slots)?;
        let dbd = ds.axpy_dot_block(0.4, &dv[0], &mut dx, &dv[1], &db, &slots)?;
        p.vector(&what("axpy_dot_block y"), &hx, &dx)?;
        p.scalars(
            &what("axpy_dot_block"),
            &[dbd.z_dot, dbd.norm_squared, dbd.z_norm_squared],
            &[hbd.z_dot, hbd.norm_squared, hbd.z_norm_squared],
            scale,
        );
        p.scalars(&what("slot_dots"), &dbd.slot_dots, &hbd.slot_dots, scale);
        p.scalars(
            &what("slot_dots_z"),
            &dbd.slot_dots_z,
            &hbd.slot_dots_z,
            scale,
        );
        p.scalars(
            &what("axpy_subtract_norm"),
            &[ds.axpy_subtract_norm(-0.4, &dv[0], &mut dx, &db, &slots, &coeffs)?],
            &[hs.axpy_subtract_norm(-0.4, &hv[0], &mut hx, &hb, &slots, &coeffs)?],
            big * 4.0,
        );
        p.vector(&what("axpy_subtract_norm y"), &hx, &dx)?;
        // The basis is not orthonormal (its vectors have norm ~sqrt(n)), so the first
        // pass grows x by ~n and the second pass's coefficients by ~n^1.5 more: they
        // are compared relative to their own size.
        let (mut ho, mut d_o) = (hv[2].clone(), ds.upload(&values[2])?);
        let (hc, hn) = hs.basis_orthogonalize(&hb, &slots, &mut ho)?;
        let (dc, dn) = ds.basis_orthogonalize(&db, &slots, &mut d_o)?;
        p.scalars(
            &what("orthogonalize"),
            &dc,
            &hc,
            dot_scale.max(max_abs(&hc)),
        );
        p.scalars(&what("orthogonalize norm"), &[dn], &[hn], big.max(hn));
        p.vector(&what("orthogonalize x"), &ho, &d_o)?;
        let (mut ho, mut d_o) = (hv[3].clone(), ds.upload(&values[3])?);
        let (hc, hn) = hs.basis_project_out(&hb, &slots, &mut ho)?;
        let (dc, dn) = ds.basis_project_out(&db, &slots, &mut d_o)?;
        p.scalars(&what("project_out"), &dc, &hc, dot_scale);
        p.scalars(&what("project_out norm"), &[dn], &[hn], big);
        p.vector(&what("project_out x"), &ho, &d_o)?;
        hs.update_scale_push(0.2, &hv[1], &mut hx, &mut hb, &slots, &coeffs, 0.5)?;
        ds.update_scale_push(0.2, &dv[1], &mut dx, &mut db, &slots, &coeffs, 0.5)?;
        p.vector(&what("update_scale_push y"), &hx, &dx)?;
        p.basis(&what("update_scale_push"), &hb, &db)?;
        assert!(
            ds.basis_push(&mut db, &dv[0]).is_err(),
            "a full basis refuses"
        );

        // Combinations, Gram matrix, rotation, truncation.
        let combination = [0.5, -1.0, 2.0, 0.25];
        let (mut hc, mut dc) = (hs.zeros()?, ds.zeros()?);
        hs.basis_combine(&hb, &combination, &mut hc)?;
        ds.basis_combine(&db, &combination, &mut dc)?;
        p.vector(&what("combine"), &hc, &dc)?;
        let many = vec![combination.to_vec(), vec![1.0, 0.0, -3.0]];
        let mut hm = vec![hs.zeros()?, hs.zeros()?];
        let mut dm = vec![ds.zeros()?, ds.zeros()?];
        hs.basis_combine_many(&hb, &many, &mut hm)?;
        ds.basis_combine_many(&db, &many, &mut dm)?;
        for (h, d) in hm.iter().zip(&dm) {
            p.vector(&what("combine_many"), h, d)?;
        }
        p.scalars(
            &what("gram"),
            &ds.basis_gram(&db)?,
            &hs.basis_gram(&hb)?,
            dot_scale * 4.0,
        );
        let transform = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75, 1.0, 0.0, 0.5];
        hs.basis_rotate(&mut hb, &transform, 3, 3)?;
        ds.basis_rotate(&mut db, &transform, 3, 3)?;
        p.basis(&what("rotate 3x3"), &hb, &db)?;
        hs.basis_rotate(&mut hb, &transform[..6], 3, 2)?;
        ds.basis_rotate(&mut db, &transform[..6], 3, 2)?;
        p.basis(&what("rotate 3x2"), &hb, &db)?;
        hs.basis_truncate(&mut hb, 1);
        ds.basis_truncate(&mut db, 1);
        p.basis(&what("truncate"), &hb, &db)?;
        hs.basis_push(&mut hb, &hv[2])?;
        ds.basis_push(&mut db, &dv[2])?;
        p.basis(&what("push after truncate"), &hb, &db)?;
        Ok(())
    }

    #[test]
    fn every_method_matches_the_host_space() -> TestResult {
        let Some(cuda) = device()? else {
            return Ok(());
        };
        // 37: one block; 300_001: the full first-pass grid with grid-stride loops.
        for n in [37, 300_001] {
            for precision in [Precision::F64, Precision::F32] {
                every_method(&cuda, n, precision)?;
            }
        }
        Ok(())
    }

    #[test]
    fn reductions_are_deterministic() -> TestResult {
        let Some(cuda) = device()? else {
            return Ok(());
        };
        let n = 1_000_003;
        let space = CudaSpace::new(cuda, n);
        let x = space.random(Distribution::Gaussian, 1, 0)?;
        let y = space.random(Distribution::Gaussian, 1, 1)?;
        let first = space.dot(&x, &y)?;
        for _ in 0..5 {
            assert_eq!(space.dot(&x, &y)?.to_bits(), first.to_bits());
        }
        Ok(())
    }

    /// A dense symmetric matrix in device memory, applied with cuBLAS `dgemv`.
    struct DeviceDense {
        cuda: Cuda,
        matrix: CudaSlice<f64>,
        n: usize,
    }

    impl OperatorOn<CudaSpace> for DeviceDense {
        fn dim(&self) -> usize {
            self.n
        }
        fn name(&self) -> String {
            format!("device dense {0}x{0}", self.n)
        }
        fn apply_in(
            &self,
            space: &CudaSpace,
            x: &CudaSlice<f64>,
            y: &mut CudaSlice<f64>,
        ) -> Result<()> {
            let n = self.n as i32;
            let (alpha, beta) = (1.0f64, 0.0f64);
            // SAFETY: the matrix holds n² entries, x and y n each, all on the
            // handle's stream; alpha and beta are host scalars (the default mode).
            unsafe {
                cublas::dgemv(
                    *self.cuda.blas().handle(),
                    cublas_sys::cublasOperation_t::CUBLAS_OP_N,
                    n,
                    n,
                    &alpha,
                    self.cuda.address(&self.matrix) as *const f64,
                    n,
                    space.addr(x) as *const f64,
                    1,
                    &beta,
                    space.addr(y) as *mut f64,
                    1,
                )
            }
            .map_err(|e| Error::Device(format!("dgemv: {e}")))
        }
    }

    #[test]
    fn lanczos_agrees_with_the_host_space() -> TestResult {
        let Some(cuda) = device()? else {
            return Ok(());
        };
        let n = 300;
        let mut spectrum: Vec<f64> = (0..n).map(|i| -1.0 + 2.0 * i as f64 / n as f64).collect();
        spectrum[..5].copy_from_slice(&[10.0, 8.0, 6.5, 5.0, 4.0]);
        let host_op = with_spectrum(&spectrum, 5);
        let column_major: Vec<f64> = {
            let m = host_op.matrix();
            (0..n * n).map(|k| m[(k % n, k / n)]).collect()
        };
        let device_op = DeviceDense {
            cuda: cuda.clone(),
            matrix: cuda.upload_slice(&column_major)?,
            n,
        };
        let host = HostSpace::new(n);
        let space = CudaSpace::new(cuda, n);
        for (mode, precision) in [
            (Reorthogonalization::Full, Precision::F64),
            (Reorthogonalization::Partial, Precision::F64),
            (Reorthogonalization::Partial, Precision::F32),
        ] {
            let options = LanczosOptions {
                k: 5,
                which: Which::Largest,
                tol: 1e-10,
                max_products: 200,
                reorthogonalization: mode,
                basis_precision: precision,
                ritz_vectors: true,
                seed: 9,
                ..Default::default()
            };
            let on_host = lanczos(&host_op, &host, &options, &Silent)?;
            let on_device = lanczos(&device_op, &space, &options, &Silent)?;
            println!(
                "{mode:?} {precision:?}: host {:?} ({} products), cuda {:?} ({} products)",
                on_host.eigenvalues, on_host.products, on_device.eigenvalues, on_device.products
            );
            // An f32 basis limits Ritz vectors to about 1e-7: compare with the
            // exact eigenvalues, and do not ask for the 1e-10 residuals.
            let (tol, vector_tol) = match precision {
                Precision::F64 => (1e-10, 1e-6),
                Precision::F32 => (1e-6, 1e-4),
            };
            assert_close(
                &format!("{mode:?} {precision:?} eigenvalues"),
                &on_device.eigenvalues,
                &on_host.eigenvalues,
                10.0,
                tol,
            );
            assert_close(
                &format!("{mode:?} {precision:?} eigenvalues against the exact ones"),
                &on_device.eigenvalues,
                &[10.0, 8.0, 6.5, 5.0, 4.0],
                10.0,
                tol,
            );
            if precision == Precision::F64 {
                assert!(
                    on_device.converged.iter().all(|&c| c),
                    "{mode:?}: converged"
                );
            }
            let vectors = on_device.vectors.as_ref().ok_or("no Ritz vectors")?;
            let host_vectors = on_host.vectors.as_ref().ok_or("no Ritz vectors")?;
            assert_eq!(vectors.len(), host_vectors.len());
            for (d, h) in vectors.iter().zip(host_vectors) {
                // Same vector up to sign.
                let d = space.download(d)?;
                let sign = d.iter().zip(h).map(|(a, b)| a * b).sum::<f64>().signum();
                let flipped: Vec<f64> = d.iter().map(|v| v * sign).collect();
                assert_close("Ritz vector", &flipped, h, 1.0, vector_tol);
            }
        }
        Ok(())
    }
}
