//! The device, its one stream, the compiled kernels, and how they are launched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::{CudaBlas, sys as cublas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg, ValidAsZeroBits, result as driver,
};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use super::signatures::{self, KernelTable};
use super::{CudaScalar, Precision};
use crate::error::{Error, Result};

/// The kernel sources, in the order they are concatenated into one program.
/// `common.cuh` comes first: the block reductions every other file uses.
pub(super) const SOURCES: [(&str, &str); 8] = [
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("elementwise.cu", include_str!("kernels/elementwise.cu")),
    ("sparse.cu", include_str!("kernels/sparse.cu")),
    ("embedding.cu", include_str!("kernels/embedding.cu")),
    ("layernorm.cu", include_str!("kernels/layernorm.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    ("logprob.cu", include_str!("kernels/logprob.cu")),
    ("vector.cu", include_str!("kernels/vector.cu")),
];

/// The parameter lists of every kernel of [`SOURCES`], parsed once (the tests
/// check that this succeeds, so the error is for a binary built without them).
pub(super) fn kernel_table() -> &'static std::result::Result<KernelTable, String> {
    static TABLE: OnceLock<std::result::Result<KernelTable, String>> = OnceLock::new();
    TABLE.get_or_init(|| signatures::parse_program(&SOURCES))
}

/// The whole CUDA C program for one precision: `real` defined, then every source.
pub fn kernel_program(precision: Precision) -> String {
    let real = match precision {
        Precision::F32 => "float",
        Precision::F64 => "double",
    };
    let mut program = format!("typedef {real} real;\n");
    for (name, source) in SOURCES {
        program.push_str(&format!("// ---- {name} ----\n{source}\n"));
    }
    program
}

/// Compiles the kernels of one precision to PTX for `arch` (e.g. `sm_90`). Needs
/// only NVRTC, not a GPU: the tests use it to check every kernel compiles.
pub fn compile_kernels(precision: Precision, arch: &str) -> Result<Ptx> {
    let nvrtc_present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !nvrtc_present {
        return Err(Error::Device(
            "NVRTC (libnvrtc.so) is not on the library path".into(),
        ));
    }
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(format!("maskscape_{precision:?}.cu").to_lowercase()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(kernel_program(precision), options).map_err(|e| {
        // The compiler's log (file, line, message) is what a reader needs; the
        // error's Display form buries it in an escaped CString.
        let detail = match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        };
        Error::Device(format!(
            "compiling the {precision:?} kernels for {arch}: {detail}"
        ))
    })
}

/// Checks that the CUDA driver, NVRTC and cuBLAS can be loaded and that a device
/// exists. Every other CUDA call comes after this: cudarc panics when a library it
/// loads dynamically is missing.
pub fn availability() -> Result<()> {
    // SAFETY: each probe only tries to dlopen the library.
    let libraries = unsafe {
        [
            (
                "the CUDA driver (libcuda.so)",
                cudarc::driver::sys::is_culib_present(),
            ),
            (
                "NVRTC (libnvrtc.so)",
                cudarc::nvrtc::sys::is_culib_present(),
            ),
            (
                "cuBLAS (libcublas.so)",
                cudarc::cublas::sys::is_culib_present(),
            ),
        ]
    };
    let missing: Vec<&str> = libraries
        .iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Device(format!(
            "{} not found on the library path; --device cuda needs an NVIDIA GPU with CUDA 13",
            missing.join(", ")
        )));
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(Error::Device("the CUDA driver reports no device".into())),
        Err(e) => Err(Error::Device(format!("the CUDA driver did not start: {e}"))),
    }
}

/// The CUDA backend: one device, one stream, one cuBLAS handle, and the kernels
/// compiled for both precisions. Cheap to clone (shared).
#[derive(Clone)]
pub struct Cuda {
    shared: Arc<Shared>,
}

struct Shared {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    modules: [Arc<CudaModule>; 2],
    functions: Mutex<HashMap<(usize, &'static str), CudaFunction>>,
    /// The first failure of an operation that could not return it (a launch).
    failure: Mutex<Option<String>>,
    tf32: bool,
    description: String,
}

fn device_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Device(format!("{what}: {e}"))
}

impl Cuda {
    /// Opens device `ordinal`, compiles the kernels for its architecture, and
    /// creates the cuBLAS handle. `tf32` lets cuBLAS round f32 products' inputs to
    /// TF32 on tensor cores (faster, about 1e-3 relative error); off by default.
    pub fn new(ordinal: usize, tf32: bool) -> Result<Cuda> {
        availability()?;
        let context = CudaContext::new(ordinal).map_err(device_error("opening the device"))?;
        // One stream orders every operation, so per-buffer events would only cost.
        // SAFETY: no buffer exists yet, and all work goes to the one stream.
        unsafe { context.disable_event_tracking() };
        let stream = context.default_stream();
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| Error::Device(format!("creating the cuBLAS handle: {e}")))?;
        let math = if tf32 {
            cublas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: the handle is valid for the life of `blas`.
        unsafe { cublas_sys::cublasSetMathMode(*blas.handle(), math) }
            .result()
            .map_err(|e| Error::Device(format!("setting the cuBLAS math mode: {e}")))?;
        let (major, minor) = context
            .compute_capability()
            .map_err(device_error("reading the compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        // NVRTC takes about a second per precision: compile both at once.
        let [f32_ptx, f64_ptx] = std::thread::scope(|scope| {
            [Precision::F32, Precision::F64]
                .map(|precision| {
                    let arch = &arch;
                    scope.spawn(move || compile_kernels(precision, arch))
                })
                .map(|compiling| {
                    compiling.join().unwrap_or_else(|_| {
                        Err(Error::Device("the NVRTC compile thread panicked".into()))
                    })
                })
        });
        let load = |ptx: Result<Ptx>| -> Result<Arc<CudaModule>> {
            context
                .load_module(ptx?)
                .map_err(device_error("loading the kernels"))
        };
        let modules = [load(f32_ptx)?, load(f64_ptx)?];
        let name = context.name().unwrap_or_else(|_| "unknown device".into());
        let description = format!("{name} ({arch}, device {ordinal})");
        Ok(Cuda {
            shared: Arc::new(Shared {
                context,
                stream,
                blas,
                modules,
                functions: Mutex::new(HashMap::new()),
                failure: Mutex::new(None),
                tf32,
                description,
            }),
        })
    }

    /// The device's name, architecture and ordinal, for reports.
    pub fn description(&self) -> &str {
        &self.shared.description
    }

    /// Whether f32 products may use TF32 tensor cores.
    pub fn tf32(&self) -> bool {
        self.shared.tf32
    }

    /// Free and total device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.shared
            .context
            .mem_get_info()
            .map_err(device_error("reading the memory use"))
    }

    /// Waits for all queued work; returns the first failure since the last check.
    pub fn synchronize(&self) -> Result<()> {
        self.shared
            .stream
            .synchronize()
            .map_err(device_error("synchronizing"))?;
        self.take_failure()
    }

    pub(crate) fn blas(&self) -> &CudaBlas {
        &self.shared.blas
    }

    /// Remembers the first failure of an operation that cannot return it.
    pub(crate) fn latch(&self, message: String) {
        let mut failure = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(message);
    }

    fn take_failure(&self) -> Result<()> {
        let mut failure = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match failure.take() {
            Some(message) => Err(Error::Device(message)),
            None => Ok(()),
        }
    }

    fn function(&self, precision: Precision, kernel: &'static str) -> Result<CudaFunction> {
        let slot = precision as usize;
        let mut functions = self
            .shared
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(function) = functions.get(&(slot, kernel)) {
            return Ok(function.clone());
        }
        let function = self.shared.modules[slot]
            .load_function(kernel)
            .map_err(|e| Error::Device(format!("kernel `{kernel}`: {e}")))?;
        functions.insert((slot, kernel), function.clone());
        Ok(function)
    }

    /// Launches `kernel` of `T`'s precision with `args`, each one 8-byte parameter
    /// (a device address, a `long long` size, or a `double`'s bits). Failures are
    /// latched, among them a word count other than the kernel's parameter count
    /// (checked even when the grid is empty, which launches nothing).
    pub(crate) fn launch<T: CudaScalar>(
        &self,
        kernel: &'static str,
        config: LaunchConfig,
        args: &[u64],
    ) {
        let arity = kernel_table()
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|table| signatures::check_launch(table, kernel, args.len()));
        if let Err(message) = arity {
            return self.latch(message);
        }
        let (x, y, z) = config.grid_dim;
        if x == 0 || y == 0 || z == 0 {
            return;
        }
        let function = match self.function(T::PRECISION, kernel) {
            Ok(function) => function,
            Err(e) => return self.latch(e.to_string()),
        };
        let mut builder = self.shared.stream.launch_builder(&function);
        for word in args {
            builder.arg(word);
        }
        // SAFETY: every kernel takes only 8-byte parameters (checked when the table
        // is parsed), one per word (checked above), and the addresses come from
        // live views of this context's buffers.
        if let Err(e) = unsafe { builder.launch(config) } {
            self.latch(format!("launching `{kernel}`: {e}"));
        }
    }

    pub(crate) fn alloc_zeros<U: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<U>> {
        self.shared
            .stream
            .alloc_zeros(len)
            .map_err(|e| Error::Device(format!("allocating {len} elements: {e}")))
    }

    pub(crate) fn upload_slice<U: DeviceRepr>(&self, host: &[U]) -> Result<CudaSlice<U>> {
        self.shared.stream.clone_htod(host).map_err(|e| {
            Error::Device(format!(
                "copying {} elements to the device: {e}",
                host.len()
            ))
        })
    }

    /// The device address of a buffer.
    pub(crate) fn address<U>(&self, buf: &CudaSlice<U>) -> u64 {
        // Event tracking is off, so the guard returned beside the address is inert.
        let (ptr, _guard) = buf.device_ptr(&self.shared.stream);
        ptr
    }

    pub(crate) fn write_host<U>(&self, dst: u64, len: usize, host: &[U]) -> Result<()> {
        if host.len() != len {
            return Err(Error::Device(format!(
                "write: {} host elements into a device range of {len}",
                host.len()
            )));
        }
        // SAFETY: `dst` addresses `len` elements; a copy from pageable memory
        // returns only once the host data has been staged.
        unsafe { driver::memcpy_htod_async(dst, host, self.shared.stream.cu_stream()) }
            .map_err(device_error("copying to the device"))
    }

    pub(crate) fn read_host<U>(&self, src: u64, len: usize, host: &mut [U]) -> Result<()> {
        if host.len() != len {
            return Err(Error::Device(format!(
                "download: a device range of {len} into {} host elements",
                host.len()
            )));
        }
        self.take_failure()?;
        // SAFETY: `src` addresses `len` elements; the stream is synchronized before
        // `host` is read.
        unsafe { driver::memcpy_dtoh_async(host, src, self.shared.stream.cu_stream()) }
            .map_err(device_error("copying from the device"))?;
        self.synchronize()
    }

    pub(crate) fn memset_zero(&self, dst: u64, bytes: u64) {
        // SAFETY: `dst` addresses at least `bytes` bytes of a live buffer.
        let result = unsafe {
            driver::memset_d8_async(dst, 0, bytes as usize, self.shared.stream.cu_stream())
        };
        if let Err(e) = result {
            self.latch(format!("zeroing: {e}"));
        }
    }

    pub(crate) fn memcpy_device(&self, dst: u64, src: u64, bytes: u64) {
        // SAFETY: both address at least `bytes` bytes of live buffers.
        let result = unsafe {
            driver::memcpy_dtod_async(dst, src, bytes as usize, self.shared.stream.cu_stream())
        };
        if let Err(e) = result {
            self.latch(format!("copying on the device: {e}"));
        }
    }
}

/// A launch over `n` independent elements: blocks of 256 threads.
pub(crate) fn elements(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` per row, for `rows` rows (row-wise reductions).
pub(crate) fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A size as a kernel argument (`long long`).
pub(crate) fn size(n: usize) -> u64 {
    n as u64
}

/// A scalar as a kernel argument (`double`).
pub(crate) fn scalar(x: f64) -> u64 {
    x.to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles in both precisions for the H100's architecture. Needs
    /// only NVRTC (no GPU); skipped, saying so, where NVRTC is absent.
    #[test]
    fn every_kernel_compiles_with_nvrtc() {
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipped: NVRTC (libnvrtc.so) is not on the library path");
            return;
        }
        for precision in [Precision::F32, Precision::F64] {
            if let Err(e) = compile_kernels(precision, "sm_90") {
                panic!("{e}");
            }
        }
    }
}
