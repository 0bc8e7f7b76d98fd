//! Reading a data matrix X (rows = samples) from a NumPy `.npy` file or a plain CSV.
//!
//! Every failure names the file and says what is wrong with it; values must be
//! finite, and the matrix must have at least one row and one column.

use std::path::Path;

use faer::Mat;

use crate::error::{Error, Result};
use crate::npy;

/// Reads the matrix at `path`, choosing the format by extension (`.npy` or `.csv`).
pub fn read_matrix(path: &Path) -> Result<Mat<f64>> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let matrix = match extension.as_deref() {
        Some("npy") => {
            let array = npy::read(path)?;
            let [rows, cols] = array.shape[..] else {
                return Err(Error::file(
                    path,
                    format!(
                        "expected a 2-D array (samples x features), found shape {:?}",
                        array.shape
                    ),
                ));
            };
            Mat::from_fn(rows, cols, |i, j| array.values[i * cols + j])
        }
        Some("csv") => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            parse_csv(&text).map_err(|message| Error::file(path, message))?
        }
        _ => {
            return Err(Error::file(
                path,
                "unknown matrix format: expected a .npy or .csv file",
            ));
        }
    };
    if matrix.nrows() == 0 || matrix.ncols() == 0 {
        return Err(Error::file(
            path,
            format!(
                "the matrix is empty ({} x {})",
                matrix.nrows(),
                matrix.ncols()
            ),
        ));
    }
    for j in 0..matrix.ncols() {
        for i in 0..matrix.nrows() {
            let v = matrix[(i, j)];
            if !v.is_finite() {
                return Err(Error::file(
                    path,
                    format!("non-finite value {v} at row {}, column {}", i + 1, j + 1),
                ));
            }
        }
    }
    Ok(matrix)
}

/// Parses a CSV of numbers, one matrix row per line (blank lines skipped).
fn parse_csv(text: &str) -> std::result::Result<Mat<f64>, String> {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row = line
            .split(',')
            .enumerate()
            .map(|(col, cell)| {
                let cell = cell.trim();
                cell.parse::<f64>().map_err(|_| {
                    format!(
                        "line {}, column {}: `{cell}` is not a number",
                        line_index + 1,
                        col + 1
                    )
                })
            })
            .collect::<std::result::Result<Vec<f64>, String>>()?;
        if let Some(first) = rows.first()
            && first.len() != row.len()
        {
            return Err(format!(
                "line {} has {} values, the first row has {}",
                line_index + 1,
                row.len(),
                first.len()
            ));
        }
        rows.push(row);
    }
    let ncols = rows.first().map_or(0, Vec::len);
    Ok(Mat::from_fn(rows.len(), ncols, |i, j| rows[i][j]))
}

/// The bytes of a version 1.0 `.npy` file holding `matrix` as C-order float64: the
/// inverse of [`read_matrix`], for fixtures and exports.
pub fn npy_bytes(matrix: &Mat<f64>) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {}), }}",
        matrix.nrows(),
        matrix.ncols()
    );
    // The header is padded with spaces and a newline to a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let len = u16::try_from(header.len()).expect("short header"); // invariant: 2-D: < 64 KiB
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for i in 0..matrix.nrows() {
        for j in 0..matrix.ncols() {
            bytes.extend_from_slice(&matrix[(i, j)].to_le_bytes());
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    fn sample() -> Mat<f64> {
        Mat::from_fn(3, 4, |i, j| (i * 10 + j) as f64 - 0.5)
    }

    #[test]
    fn npy_round_trips_and_reads_numpy_layouts() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy_bytes(&sample()))?;
        assert_eq!(read_matrix(&path)?, sample());

        // A Fortran-order float32 file, as numpy writes it with np.asfortranarray.
        let mut header = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }".to_string();
        let pad = (10 + header.len() + 1).next_multiple_of(64) - (10 + header.len() + 1);
        header.push_str(&" ".repeat(pad));
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, bytes)?;
        assert_eq!(
            read_matrix(&path)?,
            Mat::from_fn(2, 3, |i, j| (i * 3 + j + 1) as f64)
        );

        // Three axes are not a data matrix.
        let mut cube = npy_bytes(&sample());
        let header_end = cube
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header end")?;
        let header = std::str::from_utf8(&cube[10..header_end])?.replace("(3, 4), ", "(3,4,1),");
        cube.splice(10..header_end, header.bytes());
        std::fs::write(&path, cube)?;
        let err = read_matrix(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.npy") && err.contains("found shape [3, 4, 1]"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn csv_is_read_and_bad_files_are_named() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "1, 2,3\n\n4,5,6e0\n")?;
        assert_eq!(
            read_matrix(&path)?,
            Mat::from_fn(2, 3, |i, j| (i * 3 + j + 1) as f64)
        );

        std::fs::write(&path, "1,2\n3,nan\n")?;
        let err = read_matrix(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.csv") && err.contains("row 2, column 2"),
            "{err}"
        );

        std::fs::write(&path, "1,2\n3\n")?;
        let err = read_matrix(&path).unwrap_err().to_string();
        assert!(err.contains("line 2 has 1 values"), "{err}");

        std::fs::write(&path, "a,b\n")?;
        assert!(
            read_matrix(&path)
                .unwrap_err()
                .to_string()
                .contains("`a` is not a number")
        );

        let missing = dir.path().join("missing.npy");
        let err = read_matrix(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.npy"), "{err}");

        let npy = dir.path().join("bad.npy");
        std::fs::write(&npy, b"not numpy")?;
        assert!(
            read_matrix(&npy)
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );
        Ok(())
    }
}
