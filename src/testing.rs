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

/// The bytes of a safetensors file whose JSON header is `header`, written as given
/// (so it may declare sizes the data does not have), followed by `data`.
pub(crate) fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}
