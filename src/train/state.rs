//! A run's resumable state: everything the loop needs to continue from a step as
//! if it had never stopped (the trained coordinates, the optimizer's moments, the
//! best state so far, the histories). Saved at every evaluation and when Ctrl-C
//! stops a run, in `OUT/resume/`: `state.safetensors` (the vectors, in f64: exact
//! for f32 and f64 values) and `state.json` (the rest, with the SHA-256 of the
//! vectors' file, so a pair torn by a crash between the two writes is refused).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sharpness::SharpnessRow;
use crate::error::{Error, Result};
use crate::report::atomic;
use crate::report::manifest::sha256_file;
use crate::report::tensors::{Tensor, TensorFile, Values, write_tensors};

/// One row of the steps table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    /// 1 for the first update.
    pub step: usize,
    /// 0-based.
    pub epoch: usize,
    pub lr: f64,
    /// The loss of the step's batch before the update.
    pub train_loss: f64,
    /// The gradient's norm over the trained coordinates, before clipping.
    pub grad_norm: f64,
    pub update_norm: f64,
    /// `‖theta - theta_0‖` over the trained coordinates after the update.
    pub distance: f64,
}

/// One evaluation on the dev split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub step: usize,
    pub epoch: usize,
    /// The mean batch loss of the steps since the previous evaluation.
    pub train_loss: f64,
    pub dev_loss: f64,
    pub dev_accuracy: Option<f64>,
}

/// The best state so far (by dev loss; the last one without a dev split).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub step: usize,
    pub dev_loss: Option<f64>,
    pub dev_accuracy: Option<f64>,
    #[serde(skip)]
    pub theta: Vec<f64>,
}

/// Everything but the vectors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Updates made.
    pub step: usize,
    pub optimizer_steps: usize,
    /// The first step's loss, the reference of the divergence test.
    pub initial_loss: Option<f64>,
    /// Sum and count of batch losses since the last evaluation.
    pub running_loss: (f64, usize),
    pub examples_seen: usize,
    pub best: Option<Best>,
    pub steps: Vec<StepRow>,
    pub evals: Vec<EvalRow>,
    pub sharpness: Vec<SharpnessRow>,
    /// Steps whose trained coordinates the trajectory keeps.
    pub trajectory_steps: Vec<usize>,
    /// Seconds spent so far in training steps, evaluation and sharpness.
    pub seconds: [f64; 3],
}

/// The vectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vectors {
    /// The trained coordinates (in the compute precision, held as f64).
    pub theta: Vec<f64>,
    pub m: Vec<f64>,
    pub v: Vec<f64>,
    pub trajectory: Vec<Vec<f64>>,
}

/// A saved state and what it was saved for.
pub struct Saved {
    /// The settings and input hashes of the run (compared on resume).
    pub key: serde_json::Value,
    pub history: History,
    pub vectors: Vectors,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    key: serde_json::Value,
    history: History,
    vectors_sha256: String,
}

/// The state's folder inside a run's output folder.
pub fn dir(out: &Path) -> PathBuf {
    out.join("resume")
}

/// Writes the state (vectors first, then the JSON that vouches for them).
pub fn save(out: &Path, saved: &Saved) -> Result<()> {
    let dir = dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let vectors = dir.join("state.safetensors");
    let v = &saved.vectors;
    let width = v.theta.len();
    let mut tensors = vec![
        Tensor::vector("theta", Values::F64(v.theta.clone())),
        Tensor::vector("m", Values::F64(v.m.clone())),
        Tensor::vector("v", Values::F64(v.v.clone())),
        Tensor {
            name: "trajectory".into(),
            shape: vec![v.trajectory.len(), width],
            values: Values::F64(v.trajectory.concat()),
        },
    ];
    if let Some(best) = &saved.history.best {
        tensors.push(Tensor::vector("best", Values::F64(best.theta.clone())));
    }
    write_tensors(&vectors, &tensors, &[])?;
    let (vectors_sha256, _) = sha256_file(&vectors)?;
    atomic::write_json(
        &dir.join("state.json"),
        &StateFile {
            key: saved.key.clone(),
            history: saved.history.clone(),
            vectors_sha256,
        },
    )
}

/// Reads the state saved in `out`, refusing one saved for another run.
pub fn load(out: &Path, key: &serde_json::Value) -> Result<Saved> {
    let dir = dir(out);
    let json = dir.join("state.json");
    if !json.is_file() {
        return Err(Error::arg(
            "--resume",
            format!(
                "{} holds no interrupted run (no resume/state.json)",
                out.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
    let file: StateFile = serde_json::from_str(&text)
        .map_err(|e| Error::file(&json, format!("not a saved training state: {e}")))?;
    if &file.key != key {
        return Err(Error::arg(
            "--resume",
            format!(
                "the run in {} was made with other settings or inputs: {}",
                out.display(),
                first_difference(&file.key, key)
            ),
        ));
    }
    let vectors_path = dir.join("state.safetensors");
    let (sha, _) = sha256_file(&vectors_path)?;
    if sha != file.vectors_sha256 {
        return Err(Error::file(
            &vectors_path,
            "does not match state.json (the run stopped while saving?)",
        ));
    }
    let t = TensorFile::read(&vectors_path)?;
    let theta = t.floats("theta")?.1;
    let (shape, flat) = t.floats("trajectory")?;
    let trajectory = match shape.as_slice() {
        [_, 0] | [0, _] => Vec::new(),
        [_, w] => flat.chunks(*w).map(<[f64]>::to_vec).collect(),
        _ => return Err(Error::file(&vectors_path, "`trajectory` must be 2-D")),
    };
    let mut history = file.history;
    if let Some(best) = history.best.as_mut() {
        best.theta = t.floats("best")?.1;
    }
    Ok(Saved {
        key: file.key,
        history,
        vectors: Vectors {
            theta,
            m: t.floats("m")?.1,
            v: t.floats("v")?.1,
            trajectory,
        },
    })
}

/// Removes the state of a finished run.
pub fn remove(out: &Path) -> Result<()> {
    let dir = dir(out);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    Ok(())
}

/// `key: saved -> now` for the first entry that differs (depth first).
fn first_difference(saved: &serde_json::Value, now: &serde_json::Value) -> String {
    use serde_json::Value;
    fn walk(path: &str, a: &Value, b: &Value) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter().find_map(|k| {
                    let (va, vb) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    walk(
                        &format!("{path}{}{k}", if path.is_empty() { "" } else { "." }),
                        va,
                        vb,
                    )
                })
            }
            _ if a == b => None,
            _ => Some(format!("{path} was {a} there, {b} here")),
        }
    }
    walk("", saved, now).unwrap_or_else(|| "(no difference found)".into())
}
