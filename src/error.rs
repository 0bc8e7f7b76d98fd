//! The project error type: every failure a user can cause names the flag, file,
//! key or tensor that caused it, in one line.

use std::path::{Path, PathBuf};

/// Errors raised by the maskscape library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    // The cause is part of the message (not a `#[source]`), so `{:#}` chains print it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A command-line flag (or a field of an experiment spec) has an unusable value.
    #[error("{flag}: {message}")]
    InvalidArgument { flag: String, message: String },
    /// A file exists but its content is unusable (corrupt, wrong format, wrong values).
    #[error("{}: {message}", path.display())]
    InvalidFile { path: PathBuf, message: String },
    /// A required key is absent from a configuration or data file.
    #[error("{}: missing required key `{key}`", path.display())]
    MissingKey { path: PathBuf, key: String },
    /// A tensor does not have the shape the model expects.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A feature of the input that maskscape does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Data that must be finite holds NaN or infinity.
    #[error("non-finite value in {0}")]
    NonFinite(String),
    /// A numerical routine could not produce a result (singular system, breakdown).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// The GPU (driver, NVRTC, cuBLAS or a kernel) reported a failure, or is absent.
    #[error("cuda: {0}")]
    Device(String),
    /// A computation would not fit in the device's free memory (refused before
    /// allocating it).
    #[error("memory: {0}")]
    OutOfMemory(String),
    /// The user interrupted the computation (Ctrl-C) between two steps.
    #[error("cancelled")]
    Cancelled,
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            cause,
        }
    }

    /// A bad value for `flag` (write the flag as the user types it, e.g. `--ratios`).
    pub fn arg(flag: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            flag: flag.into(),
            message: message.into(),
        }
    }

    /// Unusable content in the file at `path`.
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}
