//! Small safetensors files of named vectors and matrices (deltas, trajectories,
//! resumable state), written atomically and read back with every tensor checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::atomic;
use crate::error::{Error, Result};

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

    fn dtype(&self) -> Dtype {
        match self {
            Values::F32(_) => Dtype::F32,
            Values::F64(_) => Dtype::F64,
            Values::I64(_) => Dtype::I64,
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

/// Writes `tensors` and `metadata` to `path` atomically.
pub fn write_tensors(path: &Path, tensors: &[Tensor], metadata: &[(&str, String)]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| t.values.bytes()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, data)| {
            if t.shape.iter().product::<usize>() != t.values.len() {
                return Err(Error::file(
                    path,
                    format!("`{}`: shape {:?} does not hold its values", t.name, t.shape),
                ));
            }
            TensorView::new(t.values.dtype(), t.shape.clone(), data)
                .map(|view| (t.name.clone(), view))
                .map_err(|err| Error::file(path, format!("`{}`: {err}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let serialized = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|err| Error::file(path, format!("cannot serialise: {err}")))?;
    atomic::write_bytes(path, &serialized)
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
