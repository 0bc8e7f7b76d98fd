//! Finding the weight files of a HuggingFace model folder and listing their tensors.
//!
//! Accepted layouts, tried in this order: `model.safetensors`,
//! `model.safetensors.index.json` (sharded safetensors), `pytorch_model.bin`,
//! `pytorch_model.bin.index.json` (sharded PyTorch zip archives).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dtype::StoredDtype;
use super::pickle;
use super::safetensors::MappedSafetensors;
use super::stored::{Location, StoredTensor};
use crate::error::{Error, Result};

/// The single-file and index names looked for, in order of preference.
pub const WEIGHT_FILE_NAMES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Every tensor of the model's weight files (one file or all shards).
pub fn open_weights(dir: &Path) -> Result<Vec<StoredTensor>> {
    let Some(path) = WEIGHT_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
    else {
        return Err(Error::file(
            dir,
            format!(
                "no weights found (looked for {})",
                WEIGHT_FILE_NAMES.join(", ")
            ),
        ));
    };
    if path.extension().is_some_and(|e| e == "json") {
        open_sharded(&path)
    } else {
        open_file(&path)
    }
}

/// The tensors of one weight file, safetensors or PyTorch zip by its extension.
pub fn open_file(path: &Path) -> Result<Vec<StoredTensor>> {
    if path
        .extension()
        .is_some_and(|e| e == "bin" || e == "pt" || e == "pth")
    {
        pickle::open_pytorch_zip(path)
    } else {
        open_safetensors(path)
    }
}

/// The tensors of a safetensors file, each a view of one shared memory map.
pub fn open_safetensors(path: &Path) -> Result<Vec<StoredTensor>> {
    let file = MappedSafetensors::open(path)?;
    let map = Arc::clone(file.map());
    file.tensors
        .iter()
        .map(|t| {
            let dtype = StoredDtype::from_safetensors(t.dtype).ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "tensor `{}` has dtype {}; weights must be F16, BF16, F32 or F64",
                        t.name, t.dtype
                    ),
                )
            })?;
            Ok(StoredTensor {
                name: t.name.clone(),
                dtype,
                shape: t.shape.clone(),
                file: path.to_path_buf(),
                location: Location::Mapped {
                    map: Arc::clone(&map),
                    bytes: t.bytes.clone(),
                },
            })
        })
        .collect()
}

/// The tensors of every shard listed by a HuggingFace index file
/// (`{"weight_map": {tensor: shard file}}`), checked against the index.
fn open_sharded(index_path: &Path) -> Result<Vec<StoredTensor>> {
    let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(index_path, format!("not valid JSON: {e}")))?;
    let weight_map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::MissingKey {
            path: index_path.to_path_buf(),
            key: "weight_map".into(),
        })?;
    // shard file -> tensors the index places in it
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tensor, shard) in weight_map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::file(
                index_path,
                format!("weight_map entry `{tensor}` must name a file"),
            )
        })?;
        shards.entry(shard).or_default().push(tensor);
    }
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut tensors = Vec::new();
    for (shard, listed) in shards {
        // Shards must sit beside the index: refuse paths that climb elsewhere.
        if Path::new(shard).file_name() != Some(shard.as_ref()) {
            return Err(Error::file(
                index_path,
                format!("shard `{shard}` is not a plain file name"),
            ));
        }
        let path: PathBuf = dir.join(shard);
        if !path.is_file() {
            return Err(Error::file(
                index_path,
                format!(
                    "shard `{shard}` (holding `{}` and {} more tensors) is missing",
                    listed[0],
                    listed.len() - 1
                ),
            ));
        }
        let found = open_file(&path)?;
        if let Some(absent) = listed
            .iter()
            .find(|name| !found.iter().any(|t| t.name == **name))
        {
            return Err(Error::file(
                &path,
                format!("the index places tensor `{absent}` in this shard, which does not hold it"),
            ));
        }
        tensors.extend(found);
    }
    Ok(tensors)
}
