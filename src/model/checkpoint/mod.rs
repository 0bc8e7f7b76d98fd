//! OPT checkpoints: every parameter as one flat vector in [`ParamLayout`] order,
//! loaded from HuggingFace folders, drawn at random, and saved back.
//!
//! Loading accepts `model.safetensors`, sharded safetensors (an `*.index.json`
//! beside its shards) and PyTorch's `pytorch_model.bin` (zip archives, read as
//! untrusted input: see [`pickle`]), with keys with or without the `model.`
//! prefix, stored as f16, bf16, f32 or f64. Each tensor is decoded straight from a
//! memory map into its slice of the flat vector, so the only full copy of the
//! weights in memory is the flat vector itself.
//!
//! The LM head: when `tie_word_embeddings` is true the head is the token embedding
//! and has no slot of its own. A file may still carry `lm_head.weight` (PyTorch
//! `.bin` files of tied models often do); it is then checked to equal the
//! embedding after rounding to the compute type, and a file where the two differ is
//! refused rather than silently computing a model other than the one stored.

pub mod dtype;
pub mod files;
pub mod pickle;
pub mod random;
pub mod safetensors;
pub mod save;
pub mod stored;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::backend::Scalar;
use crate::error::{Error, Result};
use crate::model::config::OptConfig;
use crate::model::layout::{ParamLayout, ParamRole};
use crate::progress::Progress;

pub use dtype::StoredDtype;
use random::RandomTensor;
use stored::StoredTensor;

/// The key of an untied LM head.
const LM_HEAD: &str = "lm_head.weight";

/// An OPT model's configuration and all of its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint<T: Scalar> {
    pub config: OptConfig,
    pub layout: ParamLayout,
    /// Every parameter, in `layout` order (length `layout.total()`).
    pub params: Vec<T>,
}

impl<T: Scalar> Checkpoint<T> {
    /// Loads `dir/config.json` and the weights beside it, converted to `T`.
    /// Memory: the flat vector (N x size of T) plus the file pages of one tensor.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = OptConfig::from_file(&dir.join("config.json"))?;
        Self::load_weights(config, dir)
    }

    /// Loads the weights in `dir` for a known `config` (see [`files`] for the
    /// accepted layouts). Every parameter must be present exactly once with its
    /// expected shape; anything else is an error naming the tensor.
    pub fn load_weights(config: OptConfig, dir: &Path) -> Result<Self> {
        let tensors = files::open_weights(dir)?;
        Self::from_stored(config, dir, &tensors)
    }

    fn from_stored(config: OptConfig, dir: &Path, tensors: &[StoredTensor]) -> Result<Self> {
        let layout = ParamLayout::new(&config);
        let slots: HashMap<&str, usize> = layout
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        // Every tensor is matched to its slot before the flat vector is allocated:
        // config.json declares the sizes, and only stored tensors of exactly those
        // shapes (whose bytes the file readers have checked are present) show that
        // a vector of that size is wanted, not a typo of 10^12 parameters.
        let mut source: Vec<Option<&StoredTensor>> = vec![None; layout.entries().len()];
        let mut tied_head = None;
        for tensor in tensors {
            let name = canonical_name(&tensor.name);
            if name == LM_HEAD && config.tie_word_embeddings {
                tied_head = Some(tensor);
                continue;
            }
            let Some(&slot) = slots.get(name.as_str()) else {
                return Err(Error::file(
                    &tensor.file,
                    format!(
                        "unexpected tensor `{}` (shape {:?}): not a parameter of this OPT config",
                        tensor.name, tensor.shape
                    ),
                ));
            };
            if let Some(first) = source[slot] {
                return Err(Error::file(
                    &tensor.file,
                    format!(
                        "tensor `{}` is stored twice (also in {})",
                        tensor.name,
                        first.file.display()
                    ),
                ));
            }
            check_shape(tensor, &layout.entries()[slot].shape)?;
            source[slot] = Some(tensor);
        }
        let stored: Vec<&StoredTensor> = layout
            .entries()
            .iter()
            .zip(source)
            .map(|(entry, tensor)| {
                tensor.ok_or_else(|| {
                    Error::file(
                        dir,
                        format!(
                            "tensor `{}`: expected shape {:?}, found none (missing from the checkpoint)",
                            entry.name, entry.shape
                        ),
                    )
                })
            })
            .collect::<Result<_>>()?;
        let mut params = vec![T::ZERO; layout.total()];
        for (entry, tensor) in layout.entries().iter().zip(stored) {
            tensor.read_into(&mut params[entry.range()])?;
        }
        let checkpoint = Checkpoint {
            config,
            layout,
            params,
        };
        if let Some(head) = tied_head {
            checkpoint.check_tied_head(head)?;
        }
        Ok(checkpoint)
    }

    /// Checks a stored `lm_head.weight` of a tied model against the embedding.
    fn check_tied_head(&self, head: &StoredTensor) -> Result<()> {
        let embedding = self.layout.find(ParamRole::TokenEmbedding);
        let embedding = embedding.expect("token embedding"); // invariant: in every layout
        check_shape(head, &embedding.shape)?;
        if head.equals(&self.params[embedding.range()])? {
            Ok(())
        } else {
            Err(Error::file(
                &head.file,
                format!(
                    "tensor `{}` differs from the token embedding, but config.json ties them \
                     (tie_word_embeddings); set it to false to use a separate LM head",
                    head.name
                ),
            ))
        }
    }

    /// A model with random weights drawn as the reference fixtures draw theirs
    /// (matrices and embeddings N(0, 1/last dim), LayerNorm weights 1 + 0.1 N(0,1),
    /// biases 0.1 N(0,1)); tensor `i` comes from `rng::stream(seed, i)`, so the
    /// result is the same on every machine and for every thread count.
    pub fn random(config: OptConfig, seed: u64) -> Self {
        let layout = ParamLayout::new(&config);
        let mut params = vec![T::ZERO; layout.total()];
        let mut slices = Vec::with_capacity(layout.entries().len());
        let mut rest = params.as_mut_slice();
        for entry in layout.entries() {
            let (head, tail) = rest.split_at_mut(entry.len());
            slices.push(head);
            rest = tail;
        }
        slices
            .into_par_iter()
            .zip(layout.entries().par_iter())
            .enumerate()
            .for_each(|(index, (slice, entry))| {
                for (x, v) in slice.iter_mut().zip(RandomTensor::new(entry, index, seed)) {
                    *x = T::from_f64(v);
                }
            });
        Checkpoint {
            config,
            layout,
            params,
        }
    }

    /// The values of the tensor with `role`, if the model has it.
    pub fn tensor(&self, role: ParamRole) -> Option<&[T]> {
        let range = self.layout.find(role)?.range();
        Some(&self.params[range])
    }

    /// The values of the tensor with `role`, mutably.
    pub fn tensor_mut(&mut self, role: ParamRole) -> Option<&mut [T]> {
        let range = self.layout.find(role)?.range();
        Some(&mut self.params[range])
    }

    /// Saves the model to `dir` in HuggingFace's layout, stored as `dtype`
    /// (`config.json` + `model.safetensors`, each written atomically). Returns the
    /// paths written.
    pub fn save(&self, dir: &Path, dtype: StoredDtype) -> Result<Vec<PathBuf>> {
        save::write_hf_checkpoint(
            dir,
            &self.config,
            dtype,
            &crate::progress::Silent,
            |_, e| self.params[e.range()].iter().map(|x| x.to_f64()),
        )
    }
}

/// Writes a random checkpoint of `config` to `dir` as [`Checkpoint::random`] would
/// draw it, stored as `dtype`, without holding the model in memory: the header is
/// written first and each tensor is drawn while it is written (memory: a few
/// hundred kilobytes, whatever the model size). Returns the paths written.
pub fn write_random_checkpoint(
    config: &OptConfig,
    seed: u64,
    dtype: StoredDtype,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>> {
    save::write_hf_checkpoint(dir, config, dtype, progress, |index, entry| {
        RandomTensor::new(entry, index, seed)
    })
}

/// The canonical key of a stored tensor: hub checkpoints of OPT may omit the
/// `model.` prefix (`decoder.layers.0...`).
fn canonical_name(name: &str) -> String {
    if name.starts_with("decoder.") {
        format!("model.{name}")
    } else {
        name.to_string()
    }
}

fn check_shape(tensor: &StoredTensor, expected: &[usize]) -> Result<()> {
    if tensor.shape == expected {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            name: format!("{}` in `{}", tensor.name, tensor.file.display()),
            expected: expected.to_vec(),
            found: tensor.shape.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
