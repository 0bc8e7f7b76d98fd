//! Mask files: a safetensors file with one int64 tensor `mask_idx` (the sorted flat
//! indices, as the reference fixtures store theirs) and, beside it, a JSON sidecar
//! (`NAME.json` for `NAME.safetensors`) recording the spec, the counts per tensor,
//! the SHA-256 of the indices and the provenance of the draw.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Mask, MaskSpec};
use crate::error::{Error, Result};
use crate::model::checkpoint::safetensors::MappedSafetensors;
use crate::model::layout::ParamLayout;
use crate::report::tensors::{HeaderEntry, SafetensorsWriter};
use crate::report::{Manifest, atomic};

/// The name of the index tensor.
pub const MASK_TENSOR: &str = "mask_idx";

/// The sidecar JSON of a mask file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MaskRecord {
    /// How the mask was drawn (absent for masks from other tools).
    pub spec: Option<MaskSpec>,
    /// N, the parameter count of the model the indices refer to.
    pub total_parameters: usize,
    /// k, the number of kept coordinates.
    pub kept: usize,
    pub ratio_of_total: f64,
    /// SHA-256 of the indices as little-endian u64 ([`Mask::hash`]).
    pub indices_sha256: String,
    pub per_tensor: Vec<TensorCount>,
    /// Program version, seed and inputs of the run that drew the mask.
    pub provenance: Option<Manifest>,
}

/// How many coordinates of one tensor a mask keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorCount {
    pub name: String,
    pub kept: usize,
    pub size: usize,
}

impl Mask {
    /// The sidecar path of mask file `path` (`x.safetensors` -> `x.json`).
    pub fn sidecar_path(path: &Path) -> PathBuf {
        path.with_extension("json")
    }

    /// The kept count of every tensor of `layout` that the mask touches.
    pub fn counts(&self, layout: &ParamLayout) -> Vec<TensorCount> {
        self.by_tensor(layout)
            .into_iter()
            .map(|t| TensorCount {
                name: t.entry.name.clone(),
                kept: t.indices.len(),
                size: t.entry.len(),
            })
            .collect()
    }

    /// The sidecar record of this mask over `layout`.
    pub fn record(&self, layout: &ParamLayout, provenance: Option<Manifest>) -> MaskRecord {
        MaskRecord {
            spec: self.spec.clone(),
            total_parameters: self.total(),
            kept: self.len(),
            ratio_of_total: self.ratio_of_total(),
            indices_sha256: self.hash(),
            per_tensor: self.counts(layout),
            provenance,
        }
    }

    /// Writes `path` (which must end in `.safetensors`) and its JSON sidecar, each
    /// atomically, streaming the indices. Returns both paths.
    pub fn save(
        &self,
        path: &Path,
        layout: &ParamLayout,
        provenance: Option<Manifest>,
    ) -> Result<Vec<PathBuf>> {
        if path.extension().is_none_or(|e| e != "safetensors") {
            return Err(Error::file(
                path,
                "a mask file name must end in .safetensors",
            ));
        }
        self.check_layout(layout)?;
        let header = [HeaderEntry {
            name: MASK_TENSOR.into(),
            dtype: "I64",
            element_size: 8,
            shape: vec![self.len()],
        }];
        let metadata = BTreeMap::from([("format".to_string(), "maskscape-mask".to_string())]);
        atomic::write_with(path, |out| {
            let mut writer = SafetensorsWriter::begin(out, path, &header, &metadata)?;
            for chunk in self.indices.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk
                    .iter()
                    .flat_map(|&i| (i as i64).to_le_bytes())
                    .collect();
                writer.write(&bytes)?;
            }
            writer.finish()
        })?;
        let sidecar = Self::sidecar_path(path);
        atomic::write_json(&sidecar, &self.record(layout, provenance))?;
        Ok(vec![path.to_path_buf(), sidecar])
    }

    /// Reads the int64 `mask_idx` tensor of any safetensors file (a saved mask, or a
    /// reference fixture) as a mask over `layout`, checking that the indices are
    /// in range, sorted and distinct. When a maskscape sidecar lies beside the file,
    /// its spec is attached after checking that its hash matches the indices.
    pub fn load(path: &Path, layout: &ParamLayout) -> Result<Self> {
        let file = MappedSafetensors::open(path)?;
        let tensor = file.tensor(MASK_TENSOR).ok_or_else(|| {
            Error::file(
                path,
                format!("no `{MASK_TENSOR}` tensor (the flat indices of a mask)"),
            )
        })?;
        if tensor.dtype != safetensors::Dtype::I64 || tensor.shape.len() != 1 {
            return Err(Error::file(
                path,
                format!(
                    "`{MASK_TENSOR}` must be a 1-D int64 tensor, found {} of shape {:?}",
                    tensor.dtype, tensor.shape
                ),
            ));
        }
        let (chunks, _) = file.bytes(tensor).as_chunks::<8>();
        let indices = chunks
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let value = i64::from_le_bytes(b);
                u64::try_from(value).map_err(|_| {
                    Error::file(path, format!("{MASK_TENSOR}[{i}] = {value} is negative"))
                })
            })
            .collect::<Result<Vec<u64>>>()?;
        let mut mask = Mask::from_indices(indices, layout.total(), path)?;
        let sidecar = Self::sidecar_path(path);
        if sidecar.is_file() {
            let text = std::fs::read_to_string(&sidecar).map_err(|e| Error::io(&sidecar, e))?;
            let record: MaskRecord = serde_json::from_str(&text)
                .map_err(|e| Error::file(&sidecar, format!("not a mask record: {e}")))?;
            if record.indices_sha256 != mask.hash() || record.total_parameters != mask.total() {
                return Err(Error::file(
                    &sidecar,
                    format!("describes a different mask than {}", path.display()),
                ));
            }
            mask.spec = record.spec;
        }
        Ok(mask)
    }
}
