//! Writing checkpoints in HuggingFace's layout (`config.json` + `model.safetensors`
//! with `model.decoder.*` keys, no `lm_head.weight` when tied), one tensor at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::dtype::StoredDtype;
use crate::error::Result;
use crate::model::config::OptConfig;
use crate::model::layout::{ParamEntry, ParamLayout};
use crate::progress::Progress;
use crate::report::atomic;
use crate::report::tensors::{HeaderEntry, SafetensorsWriter};

/// Elements encoded per write.
const WRITE_BLOCK: usize = 1 << 16;

/// Writes `dir/model.safetensors` then `dir/config.json`, each atomically, taking
/// the values of layout tensor `i` from `values(i, entry)` (row-major, exactly
/// `entry.len()` of them) and storing them as `dtype`. Memory: one write block plus
/// whatever `values` holds. Returns the paths written.
pub fn write_hf_checkpoint<I: Iterator<Item = f64>>(
    dir: &Path,
    config: &OptConfig,
    dtype: StoredDtype,
    progress: &dyn Progress,
    mut values: impl FnMut(usize, &ParamEntry) -> I,
) -> Result<Vec<PathBuf>> {
    let layout = ParamLayout::new(config);
    let weights = dir.join("model.safetensors");
    let header: Vec<HeaderEntry> = layout
        .entries()
        .iter()
        .map(|e| HeaderEntry {
            name: e.name.clone(),
            dtype: dtype.safetensors_tag(),
            element_size: dtype.size(),
            shape: e.shape.clone(),
        })
        .collect();
    // transformers refuses safetensors files whose metadata lacks a known format.
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    progress.start(layout.total() as u64, "writing model.safetensors");
    atomic::write_with(&weights, |out| {
        let mut writer = SafetensorsWriter::begin(out, &weights, &header, &metadata)?;
        let mut bytes = Vec::with_capacity(WRITE_BLOCK * dtype.size());
        for (index, entry) in layout.entries().iter().enumerate() {
            let mut tensor = values(index, entry).take(entry.len());
            let mut written = 0;
            while written < entry.len() {
                progress.check()?;
                bytes.clear();
                dtype.encode_extend(tensor.by_ref().take(WRITE_BLOCK), &mut bytes);
                let n = bytes.len() / dtype.size();
                if n == 0 {
                    break; // a short source is caught by `finish`
                }
                writer.write(&bytes)?;
                written += n;
                progress.advance(n as u64);
            }
        }
        writer.finish()
    })?;
    let config_path = dir.join("config.json");
    atomic::write_json(&config_path, &hf_config_json(config, dtype))?;
    Ok(vec![weights, config_path])
}

/// HuggingFace's `config.json` for `config`, recording the stored dtype under both
/// the current (`dtype`) and the older (`torch_dtype`) key of transformers.
pub fn hf_config_json(config: &OptConfig, dtype: StoredDtype) -> serde_json::Value {
    let mut json = config.to_hf_json();
    if let Some(map) = json.as_object_mut() {
        map.insert("torch_dtype".into(), dtype.torch_name().into());
        map.insert("dtype".into(), dtype.torch_name().into());
    }
    json
}
