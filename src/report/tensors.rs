//! Safetensors files: a streaming writer (the header first, then each tensor's data
//! in pieces, which is how `init` writes a 51 GB OPT-13b checkpoint in the memory
//! of its largest tensor), and small files of named vectors and matrices (deltas,
//! trajectories, resumable state) written atomically and read back checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use super::atomic;
use crate::error::{Error, Result};
use std::io::Write;

/// A tensor announced in the header of a file being written.
#[derive(Clone, Debug)]
pub struct HeaderEntry {
    pub name: String,
    /// The safetensors dtype tag ("F32", "I64", ...).
    pub dtype: &'static str,
    pub element_size: usize,
    pub shape: Vec<usize>,
}

impl HeaderEntry {
    fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.element_size
    }
}

/// Writes a safetensors file in one pass: the header first, then the data of each
/// announced tensor, in announcement order, in pieces of any size.
pub struct SafetensorsWriter<'w> {
    out: &'w mut dyn Write,
    path: PathBuf,
    expected_bytes: usize,
    written_bytes: usize,
}

impl<'w> SafetensorsWriter<'w> {
    /// Writes the header for `tensors` (their data must follow in this order) and
    /// the `__metadata__` strings; `path` names the file in errors.
    pub fn begin(
        out: &'w mut dyn Write,
        path: &Path,
        tensors: &[HeaderEntry],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert(
                "__metadata__".into(),
                serde_json::to_value(metadata)
                    .map_err(|e| Error::file(path, format!("cannot encode metadata: {e}")))?,
            );
        }
        let mut offset = 0;
        for t in tensors {
            let end = offset + t.byte_len();
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut text = serde_json::Value::Object(header).to_string().into_bytes();
        // Pad the header with spaces so that the data starts 8-byte aligned, as the
        // reference implementation does (readers may then map f64 data in place).
        text.resize(text.len().next_multiple_of(8), b' ');
        let io = |e| Error::io(path, e);
        out.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&text).map_err(io)?;
        Ok(SafetensorsWriter {
            out,
            path: path.to_path_buf(),
            expected_bytes: offset,
            written_bytes: 0,
        })
    }

    /// Appends data bytes (the next part of the current tensor).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.written_bytes += bytes.len();
        if self.written_bytes > self.expected_bytes {
            return Err(Error::file(
                &self.path,
                "more tensor data than the header announced",
            ));
        }
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Checks that exactly the announced data was written.
    pub fn finish(self) -> Result<()> {
        if self.written_bytes != self.expected_bytes {
            return Err(Error::file(
                &self.path,
                format!(
                    "wrote {} bytes of tensor data, the header announced {}",
                    self.written_bytes, self.expected_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// The values of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A named tensor to write.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Values,
}

impl Tensor {
    /// A vector.
    pub fn vector(name: &str, values: Values) -> Self {
        Tensor {
            name: name.to_string(),
            shape: vec![values.len()],
            values,
        }
    }
}

/// Writes `tensors` and `metadata` to `path` atomically. The header's keys are
/// sorted, so the same tensors give the same bytes.
pub fn write_tensors(path: &Path, tensors: &[Tensor], metadata: &[(&str, String)]) -> Result<()> {
    let header = tensors
        .iter()
        .map(|t| {
            if t.shape.iter().product::<usize>() != t.values.len() {
                return Err(Error::file(
                    path,
                    format!("`{}`: shape {:?} does not hold its values", t.name, t.shape),
                ));
            }
            let (dtype, element_size) = match t.values {
                Values::F32(_) => ("F32", 4),
                Values::F64(_) => ("F64", 8),
                Values::I64(_) => ("I64", 8),
            };
            Ok(HeaderEntry {
                name: t.name.clone(),
                dtype,
                element_size,
                shape: t.shape.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: BTreeMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    atomic::write_with(path, |out| {
        let mut writer = SafetensorsWriter::begin(out, path, &header, &metadata)?;
        for t in tensors {
            writer.write(&t.values.bytes())?;
        }
        writer.finish()
    })
}

/// A safetensors file read whole, for checked access by name.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("parsed when read") // invariant: `read` parsed the same bytes
    }

    /// Whether the file holds tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.parsed().tensor(name).is_ok()
    }

    /// The metadata entry `key`.
    pub fn metadata(&self, key: &str) -> Option<String> {
        let (_, header) = SafeTensors::read_metadata(&self.bytes).ok()?;
        header.metadata().as_ref()?.get(key).cloned()
    }

    /// Tensor `name`'s shape and values as f64 (f32, f64 or f16/bf16 stored).
    pub fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let st = self.parsed();
        let t = st
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("missing tensor `{name}`")))?;
        let data = t.data();
        let values: Vec<f64> = match t.dtype() {
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))) // invariant: chunks_exact(8)
                .collect(),
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes")))) // invariant: chunks_exact(4)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            other => {
                return Err(Error::file(
                    &self.path,
                    format!("`{name}` must be a float tensor, found {other:?}"),
                ));
            }
        };
        Ok((t.shape().to_vec(), values))
    }

    /// Tensor `name` as a vector of f64 (see [`TensorFile::floats`]), refusing
    /// non-finite values.
    pub fn finite_vector(&self, name: &str) -> Result<Vec<f64>> {
        let (shape, values) = self.floats(name)?;
        if shape.len() != 1 {
            return Err(Error::file(
                &self.path,
                format!("`{name}` must be 1-D, found shape {shape:?}"),
            ));
        }
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::file(
                &self.path,
                format!("`{name}`: entry {i} is not finite"),
            ));
        }
        Ok(values)
    }

    /// Tensor `name` as int64 values.
    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        let st = self.parsed();
        let t = st
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("missing tensor `{name}`")))?;
        if t.dtype() != Dtype::I64 {
            return Err(Error::file(
                &self.path,
                format!("`{name}` must be int64, found {:?}", t.dtype()),
            ));
        }
        Ok(t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))) // invariant: chunks_exact(8)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn tensors_round_trip_and_bad_ones_are_named() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.safetensors");
        let tensors = [
            Tensor::vector("a", Values::F32(vec![1.5, -2.0])),
            Tensor {
                name: "m".into(),
                shape: vec![2, 2],
                values: Values::F64(vec![1.0, 2.0, 3.0, f64::NAN]),
            },
            Tensor::vector("i", Values::I64(vec![7, 9])),
        ];
        write_tensors(&path, &tensors, &[("format", "test".into())])?;
        let file = TensorFile::read(&path)?;
        assert_eq!(file.finite_vector("a")?, vec![1.5, -2.0]);
        assert_eq!(file.ints("i")?, vec![7, 9]);
        assert_eq!(file.metadata("format").as_deref(), Some("test"));
        assert!(file.has("m") && !file.has("x"));
        let m = file.floats("m")?;
        assert_eq!(m.0, vec![2, 2]);
        assert!(
            file.finite_vector("m")
                .unwrap_err()
                .to_string()
                .contains("1-D")
        );
        assert!(file.ints("a").unwrap_err().to_string().contains("int64"));
        assert!(
            file.floats("x")
                .unwrap_err()
                .to_string()
                .contains("missing tensor `x`")
        );
        let bad = [Tensor {
            name: "b".into(),
            shape: vec![3],
            values: Values::F64(vec![1.0]),
        }];
        assert!(write_tensors(&dir.path().join("b.safetensors"), &bad, &[]).is_err());
        Ok(())
    }
}
