//! Dense symmetric matrices (faer): an operator with an exactly known spectrum, read
//! from `.npy` or `.safetensors` files.

use std::path::Path;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use super::operator::{LinearOperator, check_apply};
use crate::error::{Error, Result};
use crate::npy::{self, NpyFloat};

/// Below this order a product runs on one thread: splitting a small GEMV across
/// threads costs more than it saves.
const PARALLEL_ORDER: usize = 256;

/// A dense symmetric matrix held in faer's column-major storage.
#[derive(Debug)]
pub struct DenseSymmetric {
    matrix: Mat<f64>,
    name: String,
}

impl DenseSymmetric {
    /// Wraps a square, finite, symmetric matrix. Symmetry is checked with the
    /// relative tolerance `symmetry_tol` (entries may differ by
    /// `symmetry_tol · max |a_ij|`); the stored matrix is the exact symmetric part
    /// `(A + A^T)/2`, so every algorithm sees an exactly symmetric operator.
    pub fn new(matrix: Mat<f64>, name: impl Into<String>, symmetry_tol: f64) -> Result<Self> {
        let name = name.into();
        let (rows, cols) = (matrix.nrows(), matrix.ncols());
        if rows != cols || rows == 0 {
            return Err(Error::ShapeMismatch {
                name,
                expected: vec![rows.max(cols), rows.max(cols)],
                found: vec![rows, cols],
            });
        }
        check_finite_symmetric(&matrix, symmetry_tol).map_err(|problem| match problem {
            Problem::NonFinite(m) => Error::NonFinite(format!("{name}: {m}")),
            Problem::Asymmetric(m) => Error::Unsupported(format!("{name} is {m}")),
        })?;
        let symmetric = Mat::from_fn(rows, cols, |i, j| 0.5 * (matrix[(i, j)] + matrix[(j, i)]));
        Ok(DenseSymmetric {
            matrix: symmetric,
            name,
        })
    }

    /// Builds from a row-major slice of order `n` (tolerance as in [`Self::new`]).
    pub fn from_row_major(
        values: &[f64],
        n: usize,
        name: impl Into<String>,
        symmetry_tol: f64,
    ) -> Result<Self> {
        let name = name.into();
        if values.len() != n * n {
            return Err(Error::ShapeMismatch {
                name,
                expected: vec![n, n],
                found: vec![values.len()],
            });
        }
        let matrix = Mat::from_fn(n, n, |i, j| values[i * n + j]);
        Self::new(matrix, name, symmetry_tol)
    }

    /// Reads a dense symmetric matrix from a `.npy` file or a `.safetensors` file
    /// (the tensor named `tensor`, or the file's only tensor). Float16/bfloat16/
    /// float32/float64 data is accepted; symmetry is checked to 64 units of roundoff
    /// of the stored type.
    pub fn load(path: &Path, tensor: Option<&str>) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::file(path, "no such file"));
        }
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let (values, shape, epsilon) = match extension.as_str() {
            "npy" => read_npy(path)?,
            "safetensors" => read_safetensors(path, tensor)?,
            _ => {
                return Err(Error::file(
                    path,
                    "unknown matrix format: expected a .npy or .safetensors file",
                ));
            }
        };
        if shape.len() != 2 || shape[0] != shape[1] || shape[0] == 0 {
            return Err(Error::file(
                path,
                format!("expected a square matrix, found shape {shape:?}"),
            ));
        }
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        let n = shape[0];
        let matrix = Mat::from_fn(n, n, |i, j| values[i * n + j]);
        check_finite_symmetric(&matrix, 64.0 * epsilon).map_err(|problem| match problem {
            Problem::NonFinite(m) | Problem::Asymmetric(m) => Error::file(path, m),
        })?;
        Self::new(matrix, name, 64.0 * epsilon)
    }

    /// The matrix.
    pub fn matrix(&self) -> MatRef<'_, f64> {
        self.matrix.as_ref()
    }

    /// All eigenvalues in ascending order (faer's self-adjoint eigensolver, `O(n³)`).
    pub fn eigenvalues(&self) -> Result<Vec<f64>> {
        self.matrix
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| Error::Numerical(format!("dense eigensolver: {e:?}")))
    }

    fn parallelism(&self) -> Par {
        if self.matrix.nrows() < PARALLEL_ORDER {
            Par::Seq
        } else {
            Par::rayon(0)
        }
    }
}

impl LinearOperator for DenseSymmetric {
    fn dim(&self) -> usize {
        self.matrix.nrows()
    }

    fn name(&self) -> String {
        format!("{} (dense {}x{})", self.name, self.dim(), self.dim())
    }

    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        let n = self.dim();
        check_apply("dense", n, x, y)?;
        matmul(
            MatMut::from_column_major_slice_mut(y, n, 1),
            Accum::Replace,
            self.matrix.as_ref(),
            MatRef::from_column_major_slice(x, n, 1),
            1.0,
            self.parallelism(),
        );
        Ok(())
    }

    /// One GEMM for the whole block: the matrix is read once for all columns.
    fn apply_batch(&self, xs: &[&[f64]], ys: &mut [&mut [f64]]) -> Result<()> {
        let n = self.dim();
        for (x, y) in xs.iter().zip(ys.iter()) {
            check_apply("dense", n, x, y)?;
        }
        let block = Mat::from_fn(n, xs.len(), |i, j| xs[j][i]);
        let mut out = Mat::<f64>::zeros(n, xs.len());
        matmul(
            out.as_mut(),
            Accum::Replace,
            self.matrix.as_ref(),
            block.as_ref(),
            1.0,
            self.parallelism(),
        );
        for (j, y) in ys.iter_mut().enumerate() {
            for (i, yi) in y.iter_mut().enumerate() {
                *yi = out[(i, j)];
            }
        }
        Ok(())
    }

    fn diagonal(&self) -> Option<Vec<f64>> {
        Some((0..self.dim()).map(|i| self.matrix[(i, i)]).collect())
    }
}

/// Why a matrix was rejected.
enum Problem {
    NonFinite(String),
    Asymmetric(String),
}

/// Every entry finite, and `|a_ij - a_ji| ≤ tol · max |a|` (the worst pair named).
fn check_finite_symmetric(matrix: &Mat<f64>, tol: f64) -> std::result::Result<(), Problem> {
    let n = matrix.nrows();
    let mut largest: f64 = 0.0;
    for j in 0..n {
        for i in 0..n {
            let v = matrix[(i, j)];
            if !v.is_finite() {
                return Err(Problem::NonFinite(format!(
                    "non-finite entry ({i}, {j}): {v}"
                )));
            }
            largest = largest.max(v.abs());
        }
    }
    let mut worst = (0.0, 0, 0);
    for j in 0..n {
        for i in j + 1..n {
            let gap = (matrix[(i, j)] - matrix[(j, i)]).abs();
            if gap > worst.0 {
                worst = (gap, i, j);
            }
        }
    }
    if worst.0 > tol * largest {
        let (gap, i, j) = worst;
        return Err(Problem::Asymmetric(format!(
            "not symmetric: |A[{i},{j}] - A[{j},{i}]| = {gap:.3e} (largest entry {largest:.3e})"
        )));
    }
    Ok(())
}

/// Values (row-major, as f64), shape and unit roundoff of the stored type.
type RawMatrix = (Vec<f64>, Vec<usize>, f64);

/// A `.npy` file (C or Fortran order: a symmetric matrix reads the same either way).
fn read_npy(path: &Path) -> Result<RawMatrix> {
    let array = npy::read(path)?;
    let epsilon = match array.dtype {
        NpyFloat::F64 => f64::EPSILON,
        NpyFloat::F32 => f64::from(f32::EPSILON),
        NpyFloat::F16 => 9.8e-4,
    };
    Ok((array.values, array.shape, epsilon))
}

fn read_safetensors(path: &Path, tensor: Option<&str>) -> Result<RawMatrix> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("not a readable safetensors file: {e}")))?;
    let name = match tensor {
        Some(name) => name.to_string(),
        None => {
            let mut names = file.names();
            names.sort_unstable();
            match names.as_slice() {
                [only] => only.to_string(),
                [] => return Err(Error::file(path, "the file holds no tensor")),
                many => {
                    return Err(Error::file(
                        path,
                        format!(
                            "the file holds {} tensors ({}); choose one with --tensor",
                            many.len(),
                            many.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    let view = file.tensor(&name).map_err(|_| Error::MissingKey {
        path: path.to_path_buf(),
        key: name.clone(),
    })?;
    let data = view.data();
    let (values, epsilon): (Vec<f64>, f64) = match view.dtype() {
        Dtype::F64 => (
            data.chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            f64::EPSILON,
        ),
        Dtype::F32 => (
            data.chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            f64::from(f32::EPSILON),
        ),
        Dtype::F16 => (
            data.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
            9.8e-4,
        ),
        Dtype::BF16 => (
            data.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
            7.9e-3,
        ),
        other => {
            return Err(Error::file(
                path,
                format!("tensor `{name}`: expected floating-point data, found {other:?}"),
            ));
        }
    };
    Ok((values, view.shape().to_vec(), epsilon))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    #[test]
    fn validates_and_applies() -> TestResult {
        let a = DenseSymmetric::from_row_major(&[2.0, 1.0, 1.0, 3.0], 2, "a", 1e-12)?;
        let mut y = vec![0.0; 2];
        a.apply(&[1.0, -1.0], &mut y)?;
        assert_eq!(y, vec![1.0, -2.0]);
        let eig = a.eigenvalues()?;
        let disc = (0.25f64 + 1.0).sqrt();
        assert!((eig[0] - (2.5 - disc)).abs() < 1e-14 && (eig[1] - (2.5 + disc)).abs() < 1e-14);

        let asym = DenseSymmetric::from_row_major(&[1.0, 2.0, 0.0, 1.0], 2, "b", 1e-12);
        assert!(asym.unwrap_err().to_string().contains("not symmetric"));
        let nan = DenseSymmetric::from_row_major(&[1.0, f64::NAN, f64::NAN, 1.0], 2, "c", 1e-12);
        assert!(nan.unwrap_err().to_string().contains("non-finite"));
        Ok(())
    }
}
