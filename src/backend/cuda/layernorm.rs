//! LayerNorm: forward, JVP, VJP and the JVP of the VJP, the CUDA twin of
//! `backend/cpu/layernorm.rs` (kernels in `kernels/layernorm.cu`).
//!
//! The row rules run one block per row (a row's mean, variance and the means of the
//! VJP are block reductions). The parameter adjoints are sums over rows: a second
//! kernel forms them per 32-column tile, each thread summing a fixed set of rows and
//! the partial sums added in a fixed order, so they are reproducible without float
//! atomics.

use cudarc::driver::LaunchConfig;

use super::runtime::{per_row, scalar, size};
use super::{Cuda, CudaScalar, DeviceView, DeviceViewMut, opt_ptr, opt_ptr_mut};

/// Threads per row: OPT's widths (768 to 2048 and more) take a few columns each.
const THREADS: u32 = 256;

/// Columns (and row lanes) of one block of the parameter-adjoint kernels (`LN_TILE`).
const TILE: u32 = 32;

/// One `TILE x TILE` block per tile of `width` columns.
fn column_tiles(width: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (width.div_ceil(TILE as usize) as u32, 1, 1),
        block_dim: (TILE, TILE, 1),
        shared_mem_bytes: 0,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward<T: CudaScalar>(
    cuda: &Cuda,
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
    debug_assert!(out.len() >= rows * width && inp.len() >= rows * width);
    debug_assert!(mean.len() >= rows && rstd.len() >= rows);
    cuda.launch::<T>(
        "ln_forward",
        per_row(rows, THREADS),
        &[
            out.ptr(),
            mean.ptr(),
            rstd.ptr(),
            inp.ptr(),
            opt_ptr(weight),
            opt_ptr(bias),
            size(width),
            scalar(eps),
        ],
    );
}

#[allow(clippy::too_many_arguments)]
pub(super) fn jvp<T: CudaScalar>(
    cuda: &Cuda,
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
    debug_assert!(out_dot.len() >= rows * width && inp_dot.len() >= rows * width);
    cuda.launch::<T>(
        "ln_jvp",
        per_row(rows, THREADS),
        &[
            out_dot.ptr(),
            inp.ptr(),
            inp_dot.ptr(),
            mean.ptr(),
            rstd.ptr(),
            opt_ptr(weight),
            opt_ptr(weight_dot),
            opt_ptr(bias_dot),
            size(width),
        ],
    );
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: CudaScalar>(
    cuda: &Cuda,
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
    debug_assert!(dinp.len() >= rows * width && dout.len() >= rows * width);
    cuda.launch::<T>(
        "ln_backward",
        per_row(rows, THREADS),
        &[
            dinp.ptr(),
            dout.ptr(),
            inp.ptr(),
            mean.ptr(),
            rstd.ptr(),
            opt_ptr(weight),
            size(width),
        ],
    );
    if dweight.is_none() && dbias.is_none() {
        return;
    }
    cuda.launch::<T>(
        "ln_param_backward",
        column_tiles(width),
        &[
            opt_ptr_mut(dweight),
            opt_ptr_mut(dbias),
            dout.ptr(),
            inp.ptr(),
            mean.ptr(),
            rstd.ptr(),
            size(rows),
            size(width),
        ],
    );
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward_jvp<T: CudaScalar>(
    cuda: &Cuda,
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
    debug_assert!(dinp_dot.len() >= rows * width && dout_dot.len() >= rows * width);
    let params = dweight_dot.is_some() || dbias_dot.is_some();
    // Per row `(mean(xdot), a)`: the parameter kernel needs them to rebuild
    // `xhat_dot` and cannot reduce a row itself.
    let stats = if params {
        match cuda.alloc_zeros::<T>(2 * rows) {
            Ok(stats) => Some(stats),
            Err(e) => return cuda.latch(format!("layernorm backward_jvp scratch: {e}")),
        }
    } else {
        None
    };
    let stats_ptr = stats.as_ref().map_or(0, |s| cuda.address(s));
    cuda.launch::<T>(
        "ln_backward_jvp",
        per_row(rows, THREADS),
        &[
            dinp_dot.ptr(),
            stats_ptr,
            dout.ptr(),
            dout_dot.ptr(),
            inp.ptr(),
            inp_dot.ptr(),
            mean.ptr(),
            rstd.ptr(),
            opt_ptr(weight),
            opt_ptr(weight_dot),
            size(width),
        ],
    );
    if !params {
        return;
    }
    // `stats` is freed stream-ordered after this launch has read it.
    cuda.launch::<T>(
        "ln_param_backward_jvp",
        column_tiles(width),
        &[
            opt_ptr_mut(dweight_dot),
            opt_ptr_mut(dbias_dot),
            dout.ptr(),
            dout_dot.ptr(),
            inp.ptr(),
            inp_dot.ptr(),
            mean.ptr(),
            rstd.ptr(),
            stats_ptr,
            size(rows),
            size(width),
        ],
    );
}
