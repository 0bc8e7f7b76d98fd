//! Random parameter masks as data.
//!
//! A mask is the sorted list of flat indices (into the [`ParamLayout`] order) of
//! the trainable coordinates. It is drawn from a [`MaskSpec`] (scope, ratio and
//! its meaning, sampling, structure, seed) with one rng stream per scoped tensor,
//! so the same spec gives the same mask on every machine and for every thread
//! count, and it is saved as a safetensors file holding an int64 `mask_idx`
//! tensor plus a JSON sidecar with the spec and a hash of the indices.

pub mod io;
pub mod sample;
pub mod spec;

use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::layout::{ParamEntry, ParamLayout};
use crate::rng;

pub use spec::{MaskSpec, RatioOf, Sampling, Scope, Structure};

/// Tags the mask's rng streams so that a mask and a random model drawn with the
/// same seed are independent.
const MASK_STREAM_TAG: u64 = 0x6d61_736b; // "mask"

/// A set of trainable coordinates of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    /// Sorted, distinct flat indices, each below `total`.
    indices: Vec<u64>,
    /// The number of parameters N of the model the indices refer to.
    total: u64,
    /// How the mask was drawn (absent for masks read from other tools).
    pub spec: Option<MaskSpec>,
}

/// The kept coordinates that fall in one tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorMask<'a> {
    /// Position of the tensor in the layout.
    pub entry_index: usize,
    pub entry: &'a ParamEntry,
    /// Flat indices (global, sorted) of the kept coordinates of this tensor.
    pub indices: &'a [u64],
    /// Where `indices` starts in the mask's index list (its position in a k-vector).
    pub first: usize,
}

impl Mask {
    /// Draws the mask `spec` describes over `layout`. Cost: O(kept) time and
    /// memory (the per-tensor draws run in parallel, each on its own stream).
    pub fn draw(spec: &MaskSpec, layout: &ParamLayout) -> Result<Self> {
        let q = spec.keep_probability(layout)?;
        let scoped: Vec<(usize, &ParamEntry)> = spec.scope.entries(layout).collect();
        let per_tensor: Vec<Vec<u64>> = scoped
            .par_iter()
            .map(|&(index, entry)| {
                let mut rng =
                    rng::stream(spec.seed, rng::stream_id(&[MASK_STREAM_TAG, index as u64]));
                let offset = entry.offset as u64;
                match spec.structure {
                    Structure::Elements => {
                        let mut kept =
                            sample::kept_units(&mut rng, entry.len() as u64, q, spec.sampling);
                        kept.iter_mut().for_each(|i| *i += offset);
                        kept
                    }
                    Structure::Columns => {
                        let columns = entry.columns() as u64;
                        let rows = entry.len() as u64 / columns;
                        let kept = sample::kept_units(&mut rng, columns, q, spec.sampling);
                        (0..rows)
                            .flat_map(|row| kept.iter().map(move |c| offset + row * columns + c))
                            .collect()
                    }
                }
            })
            .collect();
        // Gather without doubling the peak: the reserved pages become resident only
        // as they are filled, while each tensor's list is freed once copied.
        let mut indices = Vec::with_capacity(per_tensor.iter().map(Vec::len).sum());
        for kept in per_tensor {
            indices.extend_from_slice(&kept);
        }
        Ok(Mask {
            indices,
            total: layout.total() as u64,
            spec: Some(spec.clone()),
        })
    }

    /// A mask from given indices over a model of `total` parameters, checked to be
    /// in range, sorted and distinct; `origin` names the source in errors.
    pub fn from_indices(indices: Vec<u64>, total: usize, origin: &Path) -> Result<Self> {
        for (i, w) in indices.windows(2).enumerate() {
            if w[1] <= w[0] {
                return Err(Error::InvalidFile {
                    path: origin.to_path_buf(),
                    message: format!(
                        "mask_idx[{}] = {} is not above mask_idx[{i}] = {}: indices must be sorted and distinct",
                        i + 1,
                        w[1],
                        w[0]
                    ),
                });
            }
        }
        if let Some(&last) = indices.last()
            && last >= total as u64
        {
            return Err(Error::InvalidFile {
                path: origin.to_path_buf(),
                message: format!(
                    "mask_idx[{}] = {last} is outside the model's {total} parameters",
                    indices.len() - 1
                ),
            });
        }
        Ok(Mask {
            indices,
            total: total as u64,
            spec: None,
        })
    }

    /// The kept flat indices, sorted.
    pub fn indices(&self) -> &[u64] {
        &self.indices
    }

    /// Number of kept coordinates k.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The number of parameters N of the model the mask refers to.
    pub fn total(&self) -> usize {
        self.total as usize
    }

    /// k / N: the trainable ratio relative to all parameters.
    pub fn ratio_of_total(&self) -> f64 {
        self.len() as f64 / self.total as f64
    }

    /// Checks that the mask was made for a model of `layout`'s size.
    pub fn check_layout(&self, layout: &ParamLayout) -> Result<()> {
        if self.total() != layout.total() {
            return Err(Error::arg(
                "--mask",
                format!(
                    "the mask is for a model of {} parameters, this model has {}",
                    self.total,
                    layout.total()
                ),
            ));
        }
        Ok(())
    }

    /// The kept coordinates grouped by tensor, for every tensor of `layout` that
    /// holds at least one (binary searches: O(tensors x log k)).
    pub fn by_tensor<'a>(&'a self, layout: &'a ParamLayout) -> Vec<TensorMask<'a>> {
        layout
            .entries()
            .iter()
            .enumerate()
            .filter_map(|(entry_index, entry)| {
                let range = entry.range();
                let first = self.indices.partition_point(|&i| i < range.start as u64);
                let end = self.indices.partition_point(|&i| i < range.end as u64);
                (end > first).then(|| TensorMask {
                    entry_index,
                    entry,
                    indices: &self.indices[first..end],
                    first,
                })
            })
            .collect()
    }

    /// SHA-256 (hex) of the indices as little-endian u64: the mask's identity in
    /// sidecars and manifests.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for chunk in self.indices.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|i| i.to_le_bytes()).collect();
            hasher.update(&bytes);
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests;
