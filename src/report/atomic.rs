//! Atomic file output: a file either appears whole or not at all.
//!
//! Every output is written to a temporary file in the destination folder and then
//! renamed over the final name, so an interrupted run (Ctrl-C, a crash, a full disk)
//! never leaves a half-written table, figure or checkpoint behind.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes the file at `path` through `fill`, atomically. Parent folders are created.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".maskscape-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    {
        let mut writer = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut writer)?;
        writer.flush().map_err(|e| Error::io(path, e))?;
    }
    publish(tmp, path)
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Writes `value` as pretty JSON (with a final newline) to `path` atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
    text.push('\n');
    write_bytes(path, text.as_bytes())
}

/// Produces the file at `path` with a writer that insists on a path of its own (a
/// plotting backend, say): `render` writes to a temporary path with the same
/// extension in the destination folder, which is then renamed onto `path`.
pub fn write_via_path(path: &Path, render: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path)?;
    let suffix = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(".maskscape-")
        .suffix(&suffix)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    render(tmp.path())?;
    publish(tmp, path)
}

/// Gives the finished temporary file ordinary permissions and renames it onto `path`.
fn publish(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    // Temporary files are created private (0600); outputs are ordinary files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(tmp.path(), permissions).map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// The folder that will hold `path`, created if needed.
fn parent_dir(path: &Path) -> Result<&Path> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn failed_writes_leave_nothing_behind() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out.csv");
        let result = write_with(&path, |w| {
            w.write_all(b"half a row")
                .map_err(|e| Error::io(&path, e))?;
            Err(Error::Cancelled)
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        write_bytes(&path, b"whole")?;
        assert_eq!(std::fs::read(&path)?, b"whole");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)?.permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        Ok(())
    }
}
