//! Already tokenized data: a safetensors file holding `input_ids`, `attention_mask`
//! and `labels` (integers, batch x seq), as HuggingFace collators produce and as the
//! reference fixtures store them. Rows are right-padded; `labels[b, t + 1]` is the
//! target of the logits at `(b, t)`, and -100 marks positions that are not scored.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::data::tokenize::LmExample;
use crate::error::{Error, Result};

/// HuggingFace's "ignore this position" label.
pub const IGNORE_LABEL: i64 = -100;

/// Reads the rows of a tokenized safetensors file, padding removed.
///
/// `input_ids` is required; `attention_mask` defaults to all ones and `labels` to
/// `input_ids` (every position scored). Each row must be right-padded (its mask is
/// ones then zeros) and must not score padded positions.
pub fn read_pretokenized(path: &Path) -> Result<Vec<LmExample>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let ids = int_matrix(&file, path, "input_ids")?
        .ok_or_else(|| Error::file(path, missing_tensor("input_ids", &file)))?;
    let (rows, cols) = (ids.rows, ids.cols);
    let mask = match int_matrix(&file, path, "attention_mask")? {
        Some(m) => same_shape(m, &ids, path)?,
        None => IntMatrix {
            rows,
            cols,
            values: vec![1; rows * cols],
        },
    };
    let labels = match int_matrix(&file, path, "labels")? {
        Some(l) => same_shape(l, &ids, path)?,
        None => IntMatrix {
            rows,
            cols,
            values: ids
                .values
                .iter()
                .zip(&mask.values)
                .map(|(&id, &m)| if m == 0 { IGNORE_LABEL } else { id })
                .collect(),
        },
    };
    if rows == 0 || cols == 0 {
        return Err(Error::file(
            path,
            "the dataset is empty (input_ids has no rows)",
        ));
    }
    (0..rows)
        .map(|r| {
            let row = r * cols..(r + 1) * cols;
            to_example(
                &ids.values[row.clone()],
                &mask.values[row.clone()],
                &labels.values[row],
            )
            .map_err(|message| Error::file(path, format!("row {}: {message}", r + 1)))
        })
        .collect()
}

fn to_example(ids: &[i64], mask: &[i64], labels: &[i64]) -> std::result::Result<LmExample, String> {
    let length = mask.iter().take_while(|&&m| m == 1).count();
    if let Some(t) = mask[length..].iter().position(|&m| m != 0) {
        return Err(format!(
            "attention_mask is not right padding (value {} at position {}); only \
             right-padded rows are supported",
            mask[length + t],
            length + t
        ));
    }
    if length == 0 {
        return Err("attention_mask is all zeros (an empty row)".into());
    }
    if let Some(t) = labels[length..].iter().position(|&l| l != IGNORE_LABEL) {
        return Err(format!(
            "labels score padded position {} (expected -100 there)",
            length + t
        ));
    }
    let token = |value: i64, what: &str, t: usize| {
        u32::try_from(value)
            .map_err(|_| format!("{what} {value} at position {t} is not a token id"))
    };
    let ids = ids[..length]
        .iter()
        .enumerate()
        .map(|(t, &v)| token(v, "input id", t))
        .collect::<std::result::Result<Vec<u32>, String>>()?;
    let labels = labels[..length]
        .iter()
        .enumerate()
        .map(|(t, &v)| {
            if v == IGNORE_LABEL || t == 0 {
                Ok(None)
            } else {
                token(v, "label", t).map(Some)
            }
        })
        .collect::<std::result::Result<Vec<Option<u32>>, String>>()?;
    Ok(LmExample { ids, labels })
}

struct IntMatrix {
    rows: usize,
    cols: usize,
    values: Vec<i64>,
}

fn missing_tensor(name: &str, file: &SafeTensors) -> String {
    let mut names = file.names();
    names.sort_unstable();
    format!(
        "missing tensor `{name}` (tensors present: {})",
        names.join(", ")
    )
}

/// The tensor `name` as a row-major integer matrix, or `None` when absent.
fn int_matrix(file: &SafeTensors, path: &Path, name: &str) -> Result<Option<IntMatrix>> {
    let Ok(view) = file.tensor(name) else {
        return Ok(None);
    };
    let &[rows, cols] = view.shape() else {
        return Err(Error::file(
            path,
            format!(
                "tensor `{name}` has shape {:?}, expected batch x seq",
                view.shape()
            ),
        ));
    };
    let data = view.data();
    let values = match view.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        other => {
            return Err(Error::file(
                path,
                format!("tensor `{name}` has dtype {other:?}, expected int64 (or int32)"),
            ));
        }
    };
    Ok(Some(IntMatrix { rows, cols, values }))
}

fn same_shape(matrix: IntMatrix, ids: &IntMatrix, path: &Path) -> Result<IntMatrix> {
    if (matrix.rows, matrix.cols) != (ids.rows, ids.cols) {
        return Err(Error::file(
            path,
            format!(
                "attention_mask/labels have shape [{}, {}] but input_ids has [{}, {}]",
                matrix.rows, matrix.cols, ids.rows, ids.cols
            ),
        ));
    }
    Ok(matrix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestResult, raw_safetensors};
    use std::collections::HashMap;

    fn write(path: &Path, tensors: &[(&str, Vec<usize>, Vec<i64>)]) -> TestResult {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, v)| {
                (
                    n.to_string(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, s, b)| {
                let view = safetensors::tensor::TensorView::new(Dtype::I64, s.clone(), b)?;
                Ok((n.clone(), view))
            })
            .collect::<TestResult<HashMap<String, safetensors::tensor::TensorView>>>()?;
        safetensors::serialize_to_file(&views, None, path)?;
        Ok(())
    }

    #[test]
    fn padding_is_removed_and_defaults_fill_in() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.safetensors");
        write(
            &path,
            &[
                ("input_ids", vec![2, 3], vec![2, 7, 8, 2, 9, 1]),
                ("attention_mask", vec![2, 3], vec![1, 1, 1, 1, 1, 0]),
            ],
        )?;
        let rows = read_pretokenized(&path)?;
        assert_eq!(rows[0].ids, vec![2, 7, 8]);
        assert_eq!(rows[0].labels, vec![None, Some(7), Some(8)]);
        assert_eq!(rows[1].ids, vec![2, 9]);
        assert_eq!(rows[1].scored_tokens(), 1);
        Ok(())
    }

    #[test]
    fn left_padding_and_scored_padding_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.safetensors");
        write(
            &path,
            &[
                ("input_ids", vec![1, 3], vec![1, 7, 8]),
                ("attention_mask", vec![1, 3], vec![0, 1, 1]),
            ],
        )?;
        let err = read_pretokenized(&path).unwrap_err().to_string();
        assert!(
            err.contains("row 1: attention_mask is not right padding"),
            "{err}"
        );
        write(
            &path,
            &[
                ("input_ids", vec![1, 3], vec![2, 7, 1]),
                ("attention_mask", vec![1, 3], vec![1, 1, 0]),
                ("labels", vec![1, 3], vec![-100, 7, 1]),
            ],
        )?;
        let err = read_pretokenized(&path).unwrap_err().to_string();
        assert!(
            err.contains("row 1: labels score padded position 2"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn missing_input_ids_lists_the_tensors() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.safetensors");
        write(&path, &[("tokens", vec![1, 2], vec![2, 3])])?;
        let err = read_pretokenized(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("missing tensor `input_ids` (tensors present: tokens)"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn declared_shapes_beyond_the_file_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.safetensors");
        // 10^18 ids over 16 bytes; 2^32 x 2^32 ids, whose count overflows; 2^31 x
        // 2^31 ids, whose byte count does.
        for shape in [
            "[1000000000,1000000000]",
            "[4294967296,4294967296]",
            "[2147483648,2147483648]",
        ] {
            let header = format!(
                r#"{{"input_ids":{{"dtype":"I64","shape":{shape},"data_offsets":[0,16]}}}}"#
            );
            std::fs::write(&path, raw_safetensors(&header, &[0; 16]))?;
            let err = read_pretokenized(&path).unwrap_err().to_string();
            assert!(
                err.contains("t.safetensors") && err.contains("not a safetensors file"),
                "{shape}: {err}"
            );
        }
        // A shape with a zero holds nothing, whatever its other dimension.
        let header =
            r#"{"input_ids":{"dtype":"I64","shape":[1000000000000000000,0],"data_offsets":[0,0]}}"#;
        std::fs::write(&path, raw_safetensors(header, &[]))?;
        let err = read_pretokenized(&path).unwrap_err().to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("empty"),
            "{err}"
        );
        Ok(())
    }
}
