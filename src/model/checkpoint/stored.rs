//! Tensors as they lie in checkpoint files, decoded block by block into the
//! scalar type the model computes in.

use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use super::dtype::StoredDtype;
use super::safetensors::release_pages;
use crate::backend::Scalar;
use crate::error::{Error, Result};

/// Elements decoded per block: large enough to amortise the per-block work, small
/// enough that a block buffer is noise next to the parameters (8 MB in f64).
const BLOCK_ELEMENTS: usize = 1 << 20;

/// One tensor of a checkpoint file, not yet read.
#[derive(Clone)]
pub struct StoredTensor {
    /// The key as the file spells it (with or without the `model.` prefix).
    pub name: String,
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
    /// The file holding it (named in errors).
    pub file: PathBuf,
    pub(super) location: Location,
}

/// Where a tensor's bytes are.
#[derive(Clone)]
pub(super) enum Location {
    /// A byte range of a memory-mapped safetensors file.
    Mapped { map: Arc<Mmap>, bytes: Range<usize> },
    /// A stored (uncompressed) entry of a PyTorch zip archive, from a byte offset.
    Zipped { entry: String, byte_offset: u64 },
}

impl StoredTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes the tensor into `out` (of exactly `self.len()` elements), refusing
    /// NaN and infinite values. Mapped data is decoded in parallel blocks; archive
    /// entries stream through one block buffer.
    pub fn read_into<T: Scalar>(&self, out: &mut [T]) -> Result<()> {
        debug_assert_eq!(out.len(), self.len());
        let size = self.dtype.size();
        match &self.location {
            Location::Mapped { map, bytes } => {
                out.par_chunks_mut(BLOCK_ELEMENTS)
                    .zip(map[bytes.clone()].par_chunks(BLOCK_ELEMENTS * size))
                    .enumerate()
                    .try_for_each(|(i, (block, raw))| {
                        self.decode_block(i * BLOCK_ELEMENTS, raw, block)
                    })?;
                release_pages(map, bytes.clone());
                Ok(())
            }
            Location::Zipped { .. } => self.for_each_block(|start, raw| {
                let end = start + raw.len() / size;
                self.decode_block(start, raw, &mut out[start..end])
            }),
        }
    }

    /// Decodes `raw` into `block`, which starts at element `start` of the tensor.
    fn decode_block<T: Scalar>(&self, start: usize, raw: &[u8], block: &mut [T]) -> Result<()> {
        self.dtype.decode_into(raw, block);
        match block.iter().position(|x| !x.to_f64().is_finite()) {
            Some(i) => Err(Error::NonFinite(format!(
                "tensor `{}` (element {}) of {}",
                self.name,
                start + i,
                self.file.display()
            ))),
            None => Ok(()),
        }
    }

    /// Whether the tensor, rounded to `T`, equals `values` element by element.
    pub fn equals<T: Scalar>(&self, values: &[T]) -> Result<bool> {
        let mut equal = values.len() == self.len();
        let mut buffer = Vec::new();
        if equal {
            self.for_each_block(|start, bytes| {
                buffer.resize(bytes.len() / self.dtype.size(), T::ZERO);
                self.dtype.decode_into(bytes, &mut buffer);
                equal &= buffer[..] == values[start..start + buffer.len()];
                Ok(())
            })?;
        }
        Ok(equal)
    }

    /// Calls `visit(first element, bytes)` for consecutive blocks of the raw data.
    fn for_each_block(&self, mut visit: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
        let size = self.dtype.size();
        let total = self.len() * size;
        match &self.location {
            Location::Mapped { map, bytes } => {
                debug_assert_eq!(bytes.len(), total);
                for (i, block) in map[bytes.clone()].chunks(BLOCK_ELEMENTS * size).enumerate() {
                    visit(i * BLOCK_ELEMENTS, block)?;
                }
                release_pages(map, bytes.clone());
                Ok(())
            }
            Location::Zipped { entry, byte_offset } => {
                let file = std::fs::File::open(&self.file).map_err(|e| Error::io(&self.file, e))?;
                let mut archive =
                    zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
                        Error::file(&self.file, format!("not a readable zip archive: {e}"))
                    })?;
                let corrupt = |e: &dyn std::fmt::Display| {
                    Error::file(&self.file, format!("entry `{entry}`: {e}"))
                };
                let mut reader = archive.by_name(entry).map_err(|e| corrupt(&e))?;
                std::io::copy(&mut (&mut reader).take(*byte_offset), &mut std::io::sink())
                    .map_err(|e| corrupt(&e))?;
                let mut buffer = vec![0u8; (BLOCK_ELEMENTS * size).min(total)];
                let mut done = 0;
                while done < total {
                    let n = buffer.len().min(total - done);
                    reader.read_exact(&mut buffer[..n]).map_err(|e| {
                        corrupt(&format!("data of tensor `{}` cut short ({e})", self.name))
                    })?;
                    visit(done / size, &buffer[..n])?;
                    done += n;
                }
                Ok(())
            }
        }
    }
}
