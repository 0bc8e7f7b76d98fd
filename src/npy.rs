//! Reading NumPy `.npy` files (format versions 1 to 3) of little-endian float16,
//! float32 or float64 arrays, in C or Fortran order.
//!
//! The file is untrusted input: the size its header declares is checked, with
//! overflow-checked products, against the bytes that follow the header before
//! anything is allocated, so a header declaring 10^9 x 10^9 elements over a few
//! bytes is an error naming the file, not an aborted allocation.

use std::path::Path;

use crate::error::{Error, Result};

/// The element types read (what `spectrum` and the theory lab accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyFloat {
    F16,
    F32,
    F64,
}

impl NpyFloat {
    /// Bytes per element.
    fn width(self) -> usize {
        match self {
            NpyFloat::F16 => 2,
            NpyFloat::F32 => 4,
            NpyFloat::F64 => 8,
        }
    }

    /// The value of one element's little-endian bytes (`width()` of them).
    fn decode(self, bytes: &[u8]) -> f64 {
        match (self, bytes) {
            (NpyFloat::F16, &[a, b]) => half::f16::from_le_bytes([a, b]).to_f64(),
            (NpyFloat::F32, &[a, b, c, d]) => f64::from(f32::from_le_bytes([a, b, c, d])),
            (NpyFloat::F64, &[a, b, c, d, e, f, g, h]) => {
                f64::from_le_bytes([a, b, c, d, e, f, g, h])
            }
            // invariant: callers pass chunks of exactly `width()` bytes.
            _ => unreachable!("npy element of {} bytes for {self:?}", bytes.len()),
        }
    }
}

/// An array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The shape the header declares (`[rows, cols]` for a matrix).
    pub shape: Vec<usize>,
    /// The stored element type.
    pub dtype: NpyFloat,
    /// Every element as f64, in C (row-major) order whatever the file's order.
    pub values: Vec<f64>,
}

/// Reads the `.npy` file at `path`; every failure names the file.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|message| Error::file(path, message))
}

/// Parses the bytes of a `.npy` file; the error says what is wrong with them.
pub fn parse(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic bytes)".into());
    }
    let major = bytes[6];
    let (header_len, header_start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!("unsupported .npy version {major}")),
    };
    let header = header_start
        .checked_add(header_len)
        .and_then(|end| bytes.get(header_start..end))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;
    let data = &bytes[header_start + header.len()..];

    let descr = header_value(header, "descr")
        .ok_or("the header has no `descr`")?
        .trim_matches(|c| c == '\'' || c == '"');
    // numpy writes `<f8`; the one-letter codes (`<d`) and `=` (native, which is
    // little-endian wherever this runs) are read too. `>` is big-endian.
    let code = descr.strip_prefix(['<', '=', '|']).unwrap_or(descr);
    let dtype = match code {
        "f8" | "d" => NpyFloat::F64,
        "f4" | "f" => NpyFloat::F32,
        "f2" | "e" => NpyFloat::F16,
        _ => {
            return Err(format!(
                "unsupported dtype `{descr}`: expected little-endian float16, float32 or float64"
            ));
        }
    };
    let fortran = match header_value(header, "fortran_order") {
        Some("True") => true,
        Some("False") => false,
        Some(other) => return Err(format!("bad fortran_order `{other}`")),
        None => return Err("the header has no `fortran_order`".into()),
    };
    let shape_text = header_value(header, "shape").ok_or("the header has no `shape`")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_text}"))
        })
        .collect::<std::result::Result<_, _>>()?;

    // The declared size, checked against what the file holds before allocating.
    let too_large = || format!("shape {shape_text} is too large: its size in bytes overflows");
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_large)?;
    let expected = count.checked_mul(dtype.width()).ok_or_else(too_large)?;
    if data.len() != expected {
        return Err(format!(
            "the header declares shape {shape_text} of {descr}, {expected} bytes of data, \
             but the file holds {} bytes after its header",
            data.len()
        ));
    }

    let stored: Vec<f64> = data
        .chunks_exact(dtype.width())
        .map(|chunk| dtype.decode(chunk))
        .collect();
    let values = if fortran && count > 0 {
        fortran_to_c_order(&stored, &shape)
    } else {
        stored
    };
    Ok(NpyArray {
        shape,
        dtype,
        values,
    })
}

/// The elements of a Fortran-order (first index fastest) array of `shape`, in C
/// order (last index fastest). `values` holds the product of `shape`, non-zero.
fn fortran_to_c_order(values: &[f64], shape: &[usize]) -> Vec<f64> {
    // The Fortran stride of each axis; no product overflows, since the full one
    // is the (checked) element count.
    let mut strides = vec![1; shape.len()];
    for axis in 1..shape.len() {
        strides[axis] = strides[axis - 1] * shape[axis - 1];
    }
    let mut out = Vec::with_capacity(values.len());
    let mut index = vec![0; shape.len()];
    let mut offset = 0;
    for _ in 0..values.len() {
        out.push(values[offset]);
        // Step the C-order multi-index (last axis fastest), moving `offset` along.
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            offset += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
            offset -= strides[axis] * shape[axis];
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    /// A version 1.0 file: `header` (a dict, padded here as numpy pads it) and
    /// `data`, the raw element bytes.
    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut header = header.to_string();
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn f64_bytes(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn fortran_order_loads_as_its_c_order_twin() -> TestResult {
        // [[1, 2, 3], [4, 5, 6]]: C order stores rows, Fortran order columns.
        let c = parse(&npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            &f64_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ))?;
        let f = parse(&npy(
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
            &f64_bytes(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
        ))?;
        assert_eq!(c.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(f, c);

        // Three axes: element (i, j, k) = 100 i + 10 j + k, shape (2, 3, 2), stored
        // first index fastest.
        let mut fortran = Vec::new();
        for k in 0..2 {
            for j in 0..3 {
                for i in 0..2 {
                    fortran.push(f64::from(100 * i + 10 * j + k));
                }
            }
        }
        let cube = parse(&npy(
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3, 2), }",
            &f64_bytes(&fortran),
        ))?;
        let mut c_order = Vec::new();
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..2 {
                    c_order.push(f64::from(100 * i + 10 * j + k));
                }
            }
        }
        assert_eq!(cube.values, c_order);
        Ok(())
    }

    #[test]
    fn half_and_single_precision_are_widened() -> TestResult {
        let halves: Vec<u8> = [0.5f32, -2.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let a = parse(&npy(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }",
            &halves,
        ))?;
        assert_eq!((a.dtype, a.values), (NpyFloat::F16, vec![0.5, -2.0]));
        let singles: Vec<u8> = [0.1f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        // The one-letter code of float32, as some writers spell it.
        let b = parse(&npy(
            "{'descr': '<f', 'fortran_order': False, 'shape': (1, 1), }",
            &singles,
        ))?;
        assert_eq!(
            (b.dtype, b.shape, b.values),
            (NpyFloat::F32, vec![1, 1], vec![f64::from(0.1f32)])
        );
        Ok(())
    }

    #[test]
    fn a_declared_size_beyond_the_file_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("huge.npy");
        // 10^18 elements declared over two.
        std::fs::write(
            &path,
            npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 1000000000), }",
                &f64_bytes(&[1.0, 2.0]),
            ),
        )?;
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("huge.npy")
                && err.contains("8000000000000000000 bytes")
                && err.contains("holds 16 bytes"),
            "{err}"
        );

        // 2^32 x 2^32 elements: the element count overflows; 2^31 x 2^31 float64s:
        // the byte count does (and wraps to 0 unchecked, matching an empty body).
        for shape in ["(4294967296, 4294967296)", "(2147483648, 2147483648)"] {
            let header = format!("{{'descr': '<f8', 'fortran_order': True, 'shape': {shape}, }}");
            std::fs::write(&path, npy(&header, &[]))?;
            let err = read(&path).unwrap_err().to_string();
            assert!(
                err.contains("huge.npy") && err.contains("overflows"),
                "{err}"
            );
        }

        // A header length past the end of the file.
        let mut cut = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
            &[],
        );
        cut[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(parse(&cut).unwrap_err().contains("truncated"));
        Ok(())
    }

    #[test]
    fn other_layouts_are_refused_by_name() {
        let big_endian = npy(
            "{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        assert!(parse(&big_endian).unwrap_err().contains("`>f8`"));
        let ints = npy(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        assert!(parse(&ints).unwrap_err().contains("`<i8`"));
        let extra = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 16],
        );
        assert!(parse(&extra).unwrap_err().contains("holds 16 bytes"));
        assert!(
            parse(b"\x93NUMPY\x09\x00\x00\x00")
                .unwrap_err()
                .contains("version")
        );
    }
}
