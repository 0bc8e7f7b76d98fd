//! The safetensors format, memory-mapped for reading (writing streams through
//! `report::tensors::SafetensorsWriter`).
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON header
//! mapping each tensor name to its dtype, shape and byte range, and the raw
//! little-endian data.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// One tensor of a mapped file: its header entry and where its bytes lie.
#[derive(Clone, Debug)]
pub struct MappedTensor {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    /// Byte range inside the whole file (header included).
    pub bytes: Range<usize>,
}

/// A safetensors file mapped into memory, with its header validated: every byte
/// range lies inside the file and matches its dtype and shape, so a truncated or
/// corrupt file is refused here, before any tensor is read.
pub struct MappedSafetensors {
    pub path: PathBuf,
    map: Arc<Mmap>,
    /// Tensors in the order of their data in the file.
    pub tensors: Vec<MappedTensor>,
    /// The free-form `__metadata__` strings of the header.
    pub metadata: BTreeMap<String, String>,
}

impl MappedSafetensors {
    /// Maps and validates the file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only; a process truncating or rewriting the
        // file while it is mapped would make reads fault or change, which is the
        // documented risk of every memory-mapped loader (safetensors, candle, torch).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| {
            Error::file(
                path,
                format!("not a valid safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
        let data_start = 8 + header_len;
        let mut tensors: Vec<MappedTensor> = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| MappedTensor {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                bytes: data_start + info.data_offsets.0..data_start + info.data_offsets.1,
            })
            .collect();
        tensors.sort_by_key(|t| t.bytes.start);
        let extra = metadata
            .metadata()
            .clone()
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        Ok(MappedSafetensors {
            path: path.to_path_buf(),
            map: Arc::new(map),
            tensors,
            metadata: extra,
        })
    }

    /// The shared mapping (tensors keep it alive after this struct is gone).
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    /// The tensor called `name`, if the file holds it.
    pub fn tensor(&self, name: &str) -> Option<&MappedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of `tensor`.
    pub fn bytes(&self, tensor: &MappedTensor) -> &[u8] {
        &self.map[tensor.bytes.clone()]
    }
}

/// Drops the pages of `range` from this process's resident set once they have
/// been read: they stay in the page cache, but a loader that streams a whole
/// checkpoint through a mapping then holds at most one tensor's file pages.
pub fn release_pages(map: &Mmap, range: Range<usize>) {
    // SAFETY: the mapping is a read-only file mapping, so MADV_DONTNEED discards
    // nothing: the next access refaults the same bytes from the file. Failure only
    // means the pages stay resident, so the result is ignored.
    #[cfg(unix)]
    unsafe {
        let _ = map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            range.start,
            range.len(),
        );
    }
    #[cfg(not(unix))]
    let _ = (map, range);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tensors::{HeaderEntry, SafetensorsWriter};
    use crate::testing::TestResult;

    #[test]
    fn written_files_read_back_and_truncation_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.safetensors");
        let tensors = [
            HeaderEntry {
                name: "a".into(),
                dtype: "F32",
                element_size: 4,
                shape: vec![2, 3],
            },
            HeaderEntry {
                name: "b".into(),
                dtype: "I64",
                element_size: 8,
                shape: vec![1],
            },
        ];
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        crate::report::atomic::write_with(&path, |w| {
            let mut writer = SafetensorsWriter::begin(w, &path, &tensors, &metadata)?;
            for x in 0..6 {
                writer.write(&(x as f32).to_le_bytes())?;
            }
            writer.write(&7i64.to_le_bytes())?;
            writer.finish()
        })?;
        let file = MappedSafetensors::open(&path)?;
        assert_eq!(file.metadata, metadata);
        let a = file.tensor("a").ok_or("no tensor a")?;
        assert_eq!(
            (a.dtype, a.shape.clone()),
            (safetensors::Dtype::F32, vec![2, 3])
        );
        assert_eq!(&file.bytes(a)[4..8], &1f32.to_le_bytes());
        assert_eq!(
            file.bytes(file.tensor("b").ok_or("no tensor b")?),
            &7i64.to_le_bytes()
        );
        // The data start is 8-byte aligned.
        assert_eq!(a.bytes.start % 8, 0);

        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() - 3])?;
        let err = MappedSafetensors::open(&path)
            .err()
            .ok_or("the corrupt file opened")?
            .to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("truncated"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn short_data_is_an_error() -> TestResult {
        let tensors = [HeaderEntry {
            name: "a".into(),
            dtype: "F64",
            element_size: 8,
            shape: vec![2],
        }];
        let mut sink = Vec::new();
        let mut writer =
            SafetensorsWriter::begin(&mut sink, Path::new("x"), &tensors, &BTreeMap::new())?;
        writer.write(&[0; 8])?;
        assert!(writer.finish().is_err());
        Ok(())
    }
}
