//! Reading a data matrix X (rows = samples) from a NumPy `.npy` file or a plain CSV.
//!
//! Every failure names the file and says what is wrong with it; values must be
//! finite, and the matrix must have at least one row and one column.

use std::path::Path;

use faer::Mat;

use crate::error::{Error, Result};

/// Reads the matrix at `path`, choosing the format by extension (`.npy` or `.csv`).
pub fn read_matrix(path: &Path) -> Result<Mat<f64>> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let matrix = match extension.as_deref() {
        Some("npy") => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            parse_npy(&bytes).map_err(|message| Error::file(path, message))?
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

/// Parses the bytes of a version 1-3 `.npy` file holding a 2-D float64 or float32
/// array, in C or Fortran order.
fn parse_npy(bytes: &[u8]) -> std::result::Result<Mat<f64>, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic bytes)".into());
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!("unsupported .npy version {major}")),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;

    let descr = header_value(header, "descr").ok_or("the header has no `descr`")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran =
        header_value(header, "fortran_order").ok_or("the header has no `fortran_order`")?;
    let fortran = match fortran {
        "True" => true,
        "False" => false,
        other => return Err(format!("bad fortran_order `{other}`")),
    };
    let shape = header_value(header, "shape").ok_or("the header has no `shape`")?;
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape}")))
        .collect::<std::result::Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!(
            "expected a 2-D array (samples x features), found shape {shape}"
        ));
    };

    let width = match descr {
        "<f8" | "=f8" => 8,
        "<f4" | "=f4" => 4,
        other => {
            return Err(format!(
                "unsupported dtype `{other}`: expected little-endian float64 or float32"
            ));
        }
    };
    let count = rows
        .checked_mul(cols)
        .ok_or_else(|| format!("shape {shape} is too large"))?;
    let data = &bytes[data_start..];
    if data.len() != count * width {
        return Err(format!(
            "expected {} bytes of data for shape ({rows}, {cols}), found {}",
            count * width,
            data.len()
        ));
    }
    let value = |k: usize| -> f64 {
        let chunk = &data[k * width..(k + 1) * width];
        match chunk {
            [a, b, c, d] => f64::from(f32::from_le_bytes([*a, *b, *c, *d])),
            [a, b, c, d, e, f, g, h] => f64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]),
            // invariant: chunks are `width` long and width is 4 or 8.
            _ => unreachable!("npy element width is 4 or 8"),
        }
    };
    Ok(Mat::from_fn(rows, cols, |i, j| {
        if fortran {
            value(j * rows + i)
        } else {
            value(i * cols + j)
        }
    }))
}

/// The raw text of `key`'s value in a NumPy header dict: `{'descr': '<f8', ...}`.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let quoted = [format!("'{key}'"), format!("\"{key}\"")];
    let start = quoted
        .iter()
        .find_map(|k| header.find(k.as_str()).map(|i| i + k.len()))?;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
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
        let m = parse_npy(&bytes)?;
        assert_eq!(m, Mat::from_fn(2, 3, |i, j| (i * 3 + j + 1) as f64));
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
