//! What a probe reads: a checkpoint, a dataset in batches, and the coordinates the
//! Hessian is restricted to, each with the hashes that identify it in manifests
//! and sweep caches.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::operator::Restriction;
use crate::backend::Scalar;
use crate::data::{self, DataSpec, Dataset, LoadedData, Task, TextEncoder, parse_column_flag};
use crate::error::{Error, Result};
use crate::mask::{Mask, MaskSpec, Scope};
use crate::model::batch::{Padding, batches};
use crate::model::checkpoint::files::open_weights;
use crate::model::tokenizer::OptTokenizer;
use crate::model::{Batch, Checkpoint, OptConfig, ParamLayout};
use crate::report::Manifest;
use crate::report::manifest::{InputRecord, sha256_bytes, sha256_file};
use crate::report::tensors::TensorFile;

/// A checkpoint loaded in the compute precision, with the files it came from.
pub struct ModelInputs<T: Scalar> {
    pub dir: PathBuf,
    pub checkpoint: Checkpoint<T>,
    /// `config.json` and every weight file (shards included), in reading order,
    /// with their SHA-256 and size.
    pub files: Vec<(PathBuf, String, u64)>,
    /// SHA-256 over the files' names and contents: the checkpoint's identity.
    pub sha256: String,
}

impl<T: Scalar> ModelInputs<T> {
    /// Loads the checkpoint in `dir` (see [`Checkpoint::load`]), plus the trained
    /// moves of a `delta` file when one is given (see [`apply_delta`]), and hashes
    /// the files (a pass over the weights: about a second per 500 MB).
    pub fn load(dir: &Path, delta: Option<&Path>) -> Result<Self> {
        let config = OptConfig::from_file(&dir.join("config.json"))?;
        Self::load_with_config(dir, config, delta)
    }

    /// As [`ModelInputs::load`], with `config.json` already read into `config`.
    pub fn load_with_config(dir: &Path, config: OptConfig, delta: Option<&Path>) -> Result<Self> {
        let mut checkpoint = Checkpoint::<T>::load_weights(config, dir)?;
        let mut identity = ModelIdentity::of(dir, None)?;
        if let Some(path) = delta {
            apply_delta(&mut checkpoint.params, path, &identity.sha256)?;
            identity = identity.with_delta(path)?;
        }
        let ModelIdentity { files, sha256 } = identity;
        Ok(ModelInputs {
            dir: dir.to_path_buf(),
            checkpoint,
            files,
            sha256,
        })
    }

    pub fn config(&self) -> &OptConfig {
        &self.checkpoint.config
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.checkpoint.layout
    }
}

/// The files of a checkpoint and the hash that identifies it, without its weights
/// loaded: what a sweep needs to tell whether its cached cells belong to it.
pub struct ModelIdentity {
    /// `config.json` and every weight file (shards included), in reading order,
    /// with their SHA-256 and size.
    pub files: Vec<(PathBuf, String, u64)>,
    /// SHA-256 over the files' names and contents.
    pub sha256: String,
}

impl ModelIdentity {
    /// Hashes the checkpoint files in `dir` (a pass over the weights: about a second
    /// per 500 MB; only the weight files' headers are parsed), and the `delta` file
    /// applied to them, if any.
    pub fn of(dir: &Path, delta: Option<&Path>) -> Result<Self> {
        let mut paths = vec![dir.join("config.json")];
        for tensor in open_weights(dir)? {
            if !paths.contains(&tensor.file) {
                paths.push(tensor.file);
            }
        }
        let files = paths
            .into_iter()
            .map(|path| {
                let (hash, bytes) = sha256_file(&path)?;
                Ok((path, hash, bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let sha256 = combined_hash(&files);
        let identity = ModelIdentity { files, sha256 };
        match delta {
            Some(path) => identity.with_delta(path),
            None => Ok(identity),
        }
    }

    /// The identity of the checkpoint moved by the `delta` file at `path`.
    fn with_delta(mut self, path: &Path) -> Result<Self> {
        let (hash, bytes) = sha256_file(path)?;
        self.files.push((path.to_path_buf(), hash, bytes));
        self.sha256 = combined_hash(&self.files);
        Ok(self)
    }
}

/// Adds a training run's `delta.safetensors` to `params`: `delta` at the int64
/// `mask_idx` when the file has one, else an N-long `delta` in layout order, each
/// added in the compute precision (the checkpoint plus the run's move, without
/// writing a full copy). A file whose `model_sha256` names another checkpoint than
/// `model_sha256`, indices outside the model or a length that does not match is
/// refused, naming the file.
pub fn apply_delta<T: Scalar>(params: &mut [T], path: &Path, model_sha256: &str) -> Result<()> {
    let file = TensorFile::read(path)?;
    if let Some(made_for) = file.metadata("model_sha256")
        && made_for != model_sha256
    {
        return Err(Error::file(
            path,
            format!(
                "made for the checkpoint with SHA-256 {made_for}, not this one ({model_sha256})"
            ),
        ));
    }
    let delta = file.finite_vector("delta")?;
    let n = params.len();
    if file.has(crate::mask::io::MASK_TENSOR) {
        let indices = file
            .ints(crate::mask::io::MASK_TENSOR)?
            .into_iter()
            .map(|i| {
                u64::try_from(i)
                    .map_err(|_| Error::file(path, format!("mask_idx: index {i} is negative")))
            })
            .collect::<Result<Vec<u64>>>()?;
        let mask = Mask::from_indices(indices, n, path)?;
        if mask.len() != delta.len() {
            return Err(Error::file(
                path,
                format!(
                    "`delta` holds {} values for the {} indices of `mask_idx`",
                    delta.len(),
                    mask.len()
                ),
            ));
        }
        for (&i, &d) in mask.indices().iter().zip(&delta) {
            params[i as usize] += T::from_f64(d);
        }
    } else {
        if delta.len() != n {
            return Err(Error::file(
                path,
                format!(
                    "`delta` holds {} values but the model has {n} parameters (a delta of \
                     another model?)",
                    delta.len()
                ),
            ));
        }
        for (p, &d) in params.iter_mut().zip(&delta) {
            *p += T::from_f64(d);
        }
    }
    Ok(())
}

/// How a dataset is read for a probe.
#[derive(Clone, Debug)]
pub struct DataRequest {
    pub spec: DataSpec,
    /// A folder with the tokenizer, when the model folder has none (text data only).
    pub tokenizer: Option<PathBuf>,
    /// Sequences per batch (a classification example's candidates stay together).
    pub batch_rows: usize,
}

/// A dataset tokenized for a model and packed into right-padded batches.
pub struct DataInputs {
    pub loaded: LoadedData,
    pub batches: Vec<Batch>,
    /// The data file and the tokenizer files read, with their roles.
    pub files: Vec<(String, PathBuf)>,
    /// SHA-256 of the data file.
    pub sha256: String,
}

impl DataInputs {
    /// Loads `request` for the model in `model_dir` with `config`: text through the
    /// tokenizer of `request.tokenizer` (or else of the model folder), tokenized
    /// `.safetensors` as they are; every id is checked against the vocabulary.
    pub fn load(request: &DataRequest, model_dir: &Path, config: &OptConfig) -> Result<Self> {
        let spec = &request.spec;
        let mut files = vec![("data".to_string(), spec.path.clone())];
        let loaded = if spec.is_pretokenized() {
            if request.tokenizer.is_some() {
                return Err(Error::arg(
                    "--tokenizer",
                    "not used with tokenized data (a .safetensors file)",
                ));
            }
            data::load(spec, None, config.max_position_embeddings)?
        } else {
            let dir = request.tokenizer.as_deref().unwrap_or(model_dir);
            let tokenizer = OptTokenizer::from_dir(dir)?;
            tokenizer.check_against(config)?;
            files.extend(tokenizer_files(dir));
            data::load(
                spec,
                Some(&tokenizer as &dyn TextEncoder),
                config.max_position_embeddings,
            )?
        };
        loaded.dataset.check_vocab(config.vocab_size)?;
        if loaded.dataset.is_empty() {
            return Err(Error::file(&spec.path, "the dataset is empty"));
        }
        let batches = batches(
            &loaded.dataset,
            request.batch_rows,
            config.pad_token_id,
            Padding::Right,
        )?;
        let (sha256, _) = sha256_file(&spec.path)?;
        Ok(DataInputs {
            loaded,
            batches,
            files,
            sha256,
        })
    }

    /// Examples (questions or rows) in the dataset.
    pub fn examples(&self) -> usize {
        self.loaded.dataset.len()
    }

    /// Sequences the network runs per sweep (each candidate is one).
    pub fn sequences(&self) -> usize {
        self.batches.iter().map(|b| b.tokens.batch).sum()
    }

    /// Whether the task is classification.
    pub fn is_classification(&self) -> bool {
        matches!(self.loaded.dataset, Dataset::Classification(_))
    }
}

/// A [`DataSpec`] from the settings the data flags (and experiment specs) give:
/// a task name with its template and candidates, `FIELD=COLUMN` overrides, and
/// the `--max-examples` draw.
pub fn data_spec(
    path: &Path,
    task: Option<&str>,
    template: Option<&str>,
    candidates: Option<&[String]>,
    columns: &[String],
    max_examples: Option<usize>,
    seed: u64,
) -> Result<DataSpec> {
    let task = task
        .map(|name| Task::new(name, template, candidates))
        .transpose()?;
    if task.is_none() && (template.is_some() || candidates.is_some()) {
        return Err(Error::arg(
            "--task",
            "--template and --candidates need --task classification",
        ));
    }
    Ok(DataSpec {
        path: path.to_path_buf(),
        task,
        columns: columns
            .iter()
            .map(|c| parse_column_flag(c))
            .collect::<Result<_>>()?,
        max_examples,
        seed,
    })
}

/// The coordinates a Hessian is restricted to, as the user chose them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum HessianChoice {
    /// A random mask drawn from a spec.
    Draw { spec: MaskSpec },
    /// A saved mask, or any safetensors file with an int64 `mask_idx`.
    File { path: PathBuf },
    /// Every parameter of a scope (the whole-scope Hessian).
    Scope { scope: Scope },
    /// Every parameter.
    Full,
}

/// A resolved restriction, with the mask it came from.
pub struct Resolved {
    pub restriction: Restriction,
    pub mask: Option<Mask>,
    /// "masked (qv, ratio 0.001, seed 0)", "whole scope qv", "full".
    pub description: String,
}

impl Resolved {
    /// The mask's identity in manifests (absent for the full Hessian).
    pub fn mask_sha256(&self) -> Option<String> {
        match (&self.mask, &self.restriction) {
            (Some(mask), _) => Some(mask.hash()),
            (None, Restriction::Indices(idx)) => Some(indices_hash(idx)),
            (None, Restriction::Full) => None,
        }
    }
}

impl HessianChoice {
    /// The restriction over `layout`.
    pub fn resolve(&self, layout: &ParamLayout) -> Result<Resolved> {
        match self {
            HessianChoice::Draw { spec } => {
                let mask = Mask::draw(spec, layout)?;
                let description = format!(
                    "masked: scope {}, ratio {} of {}, seed {} (k = {})",
                    spec.scope.name(),
                    spec.ratio,
                    match spec.ratio_of {
                        crate::mask::RatioOf::Total => "all parameters",
                        crate::mask::RatioOf::Scope => "the scope",
                    },
                    spec.seed,
                    mask.len()
                );
                Ok(Resolved {
                    restriction: Restriction::Indices(mask.indices().to_vec()),
                    mask: Some(mask),
                    description,
                })
            }
            HessianChoice::File { path } => {
                let mask = Mask::load(path, layout)?;
                let description = format!("masked: {} (k = {})", path.display(), mask.len());
                Ok(Resolved {
                    restriction: Restriction::Indices(mask.indices().to_vec()),
                    mask: Some(mask),
                    description,
                })
            }
            HessianChoice::Scope { scope } => {
                let indices = scope_indices(*scope, layout);
                if indices.is_empty() {
                    return Err(Error::arg(
                        "--mask-scope",
                        format!("scope `{}` holds no parameters in this model", scope.name()),
                    ));
                }
                Ok(Resolved {
                    description: format!(
                        "whole scope {} ({} parameters)",
                        scope.name(),
                        indices.len()
                    ),
                    restriction: Restriction::Indices(indices),
                    mask: None,
                })
            }
            HessianChoice::Full => Ok(Resolved {
                restriction: Restriction::Full,
                mask: None,
                description: format!("full ({} parameters)", layout.total()),
            }),
        }
    }
}

/// Every flat index of the tensors in `scope`, sorted.
pub fn scope_indices(scope: Scope, layout: &ParamLayout) -> Vec<u64> {
    let mut indices: Vec<u64> = scope
        .entries(layout)
        .flat_map(|(_, e)| e.range().map(|i| i as u64))
        .collect();
    indices.sort_unstable();
    indices
}

/// SHA-256 of indices as little-endian u64 (the same digest as [`Mask::hash`]).
pub fn indices_hash(indices: &[u64]) -> String {
    let bytes: Vec<u8> = indices.iter().flat_map(|i| i.to_le_bytes()).collect();
    sha256_bytes(&bytes)
}

/// Records the model, data (`(role, file)` pairs) and mask inputs in a manifest.
pub fn record_inputs<T: Scalar>(
    manifest: &mut Manifest,
    model: &ModelInputs<T>,
    data_files: &[(String, PathBuf)],
    choice: &HessianChoice,
) -> Result<()> {
    for (path, sha256, bytes) in &model.files {
        manifest.inputs.push(InputRecord {
            role: "model".into(),
            path: path.display().to_string(),
            sha256: sha256.clone(),
            bytes: *bytes,
        });
    }
    for (role, file) in data_files {
        manifest.add_input(role, file)?;
    }
    if let HessianChoice::File { path } = choice {
        manifest.add_input("mask", path)?;
    }
    Ok(())
}

/// The tokenizer files `OptTokenizer::from_dir` reads from `dir`.
fn tokenizer_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return vec![("tokenizer".into(), json)];
    }
    ["vocab.json", "merges.txt"]
        .iter()
        .map(|name| ("tokenizer".to_string(), dir.join(name)))
        .collect()
}

/// SHA-256 over `name:sha256` lines of every file, so a checkpoint's identity does
/// not depend on the folder it sits in.
fn combined_hash(files: &[(PathBuf, String, u64)]) -> String {
    let mut lines = String::new();
    for (path, hash, _) in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        lines.push_str(&format!("{name}:{hash}\n"));
    }
    sha256_bytes(lines.as_bytes())
}
