//! Helpers shared by the unit tests under src/ (compiled for tests only).

use std::path::{Path, PathBuf};

/// What unit tests return: `?` turns any error (the crate's, I/O, parsing) or a
/// missing value (`.ok_or("what was missing")?`) into a failure that prints it,
/// where an `unwrap` would only panic.
pub(crate) type TestResult<T = ()> =
    std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The reference fixture folder `tests/fixtures/<name>`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Writes `text` to `dir/name`; returns the path.
pub(crate) fn write_text(dir: &Path, name: &str, text: &str) -> TestResult<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}
