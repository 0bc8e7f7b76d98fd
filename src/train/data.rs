//! The data of a fine-tuning run: the train, dev and test splits, the order the
//! train examples are seen in, and each step's batches.
//!
//! By default every row of the training file trains and there is no dev or test
//! split. The paper's splits (1000 train / 500 dev drawn from the training file, 1000
//! test from another) are `--train-examples`, `--dev-examples` (disjoint draws of one
//! seeded permutation of the file's examples, `--data-seed`) and `--test FILE
//! --test-examples`; `--dev FILE` reads the dev split from its own file instead.
//!
//! Epoch `e` visits the train examples in the order of a permutation drawn from
//! `(seed, e)`: a run can be resumed at any step with nothing but the step number.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;

use crate::data::{DataSpec, sample_indices};
use crate::error::{Error, Result};
use crate::model::batch::padded_batch;
use crate::model::examples::Dataset;
use crate::model::{Batch, OptConfig};
use crate::probe::inputs::{DataInputs, DataRequest};
use crate::rng;

/// Streams of the data draws, apart from every other use of the seeds.
const SPLIT_STREAM: u64 = 0x7370_6c69_7400; // "split"
const ORDER_STREAM: u64 = 0x6f72_6465_7200; // "order"

/// How a run reads its data.
#[derive(Clone, Debug)]
pub struct TrainDataRequest {
    /// The training file and its task (every row is read).
    pub train: DataSpec,
    /// A tokenizer folder for checkpoints that ship none.
    pub tokenizer: Option<PathBuf>,
    /// Train on this many examples of the training file (default: all not in dev).
    pub train_examples: Option<usize>,
    /// Draw a dev split of this many examples from the training file.
    pub dev_examples: Option<usize>,
    /// Seed of the split draws.
    pub data_seed: u64,
    /// A dev file instead (with `dev_examples`, that many are drawn from it).
    pub dev: Option<PathBuf>,
    /// A test file, with `test_examples` drawn from it (default: all).
    pub test: Option<PathBuf>,
    pub test_examples: Option<usize>,
    /// Sequences per batch when evaluating (memory, not results).
    pub eval_rows: usize,
}

/// How many examples one step trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchSize {
    Examples(usize),
    /// Every train example: full-batch gradient descent.
    All,
}

/// A split ready to evaluate on: its examples and their batches.
#[derive(Clone, Debug)]
pub struct Split {
    pub dataset: Dataset,
    pub batches: Vec<Batch>,
}

/// The splits of a run, with the files they came from.
pub struct TrainData {
    pub train: Dataset,
    pub dev: Option<Split>,
    pub test: Option<Split>,
    /// Every file read, with its role (`data`, `dev`, `test`, `tokenizer`).
    pub files: Vec<(String, PathBuf)>,
    /// SHA-256 of the training file.
    pub sha256: String,
    /// Every train sequence is padded to this length, so steps keep one shape.
    pub seq: usize,
    pad_id: u32,
    eval_rows: usize,
}

/// `n` examples asked of a file that holds fewer.
fn too_many(flag: &str, asked: usize, path: &Path, holds: usize, note: &str) -> Error {
    Error::arg(
        flag,
        format!(
            "asked for {asked} examples, but {} holds {holds}{note}",
            path.display()
        ),
    )
}

impl TrainData {
    /// Reads and tokenizes the files of `request` for the model in `model_dir`.
    pub fn load(request: &TrainDataRequest, model_dir: &Path, config: &OptConfig) -> Result<Self> {
        let read = |spec: DataSpec| {
            let r = DataRequest {
                spec,
                tokenizer: request.tokenizer.clone(),
                batch_rows: request.eval_rows,
            };
            DataInputs::load(&r, model_dir, config)
        };
        let train_inputs = read(request.train.clone())?;
        let mut files = train_inputs.files.clone();
        let path = &request.train.path;
        let all = &train_inputs.loaded.dataset;
        let total = all.len();
        for (flag, n) in [
            ("--train-examples", request.train_examples),
            ("--dev-examples", request.dev_examples),
            ("--test-examples", request.test_examples),
        ] {
            if n == Some(0) {
                return Err(Error::arg(flag, "must be at least 1"));
            }
        }

        // One seeded permutation of the file: dev first, train after it.
        let mut order: Vec<usize> = (0..total).collect();
        order.shuffle(&mut rng::stream(request.data_seed, SPLIT_STREAM));
        let dev_from_train = if request.dev.is_none() {
            request.dev_examples.unwrap_or(0)
        } else {
            0
        };
        if dev_from_train > total {
            return Err(too_many("--dev-examples", dev_from_train, path, total, ""));
        }
        let rest = total - dev_from_train;
        let train_n = request.train_examples.unwrap_or(rest);
        if train_n > rest {
            let note = if dev_from_train > 0 {
                format!(" ({dev_from_train} of them go to --dev-examples)")
            } else {
                String::new()
            };
            return Err(too_many("--train-examples", train_n, path, total, &note));
        }
        let sorted = |mut v: Vec<usize>| {
            v.sort_unstable();
            v
        };
        let (dev_idx, train_idx) = order.split_at(dev_from_train);
        let train = all.select(&sorted(train_idx[..train_n].to_vec()));
        if train.is_empty() {
            return Err(Error::file(path, "the train split is empty"));
        }

        let split = |dataset: Dataset| -> Result<Split> {
            let batches = crate::model::batch::batches(
                &dataset,
                request.eval_rows,
                config.pad_token_id,
                crate::model::batch::Padding::Right,
            )?;
            Ok(Split { dataset, batches })
        };
        // A split from its own file: all of it, or `n` drawn with the data seed.
        let mut from_file = |file: &Path, role: &str, flag: &str, n: Option<usize>| {
            let mut spec = request.train.clone();
            spec.path = file.to_path_buf();
            let inputs = read(spec)?;
            let dataset = inputs.loaded.dataset;
            let holds = dataset.len();
            if let Some(n) = n
                && n > holds
            {
                return Err(too_many(flag, n, file, holds, ""));
            }
            files.push((role.to_string(), file.to_path_buf()));
            split(dataset.select(&sample_indices(holds, n, request.data_seed)?))
        };
        let dev = match &request.dev {
            Some(file) => Some(from_file(
                file,
                "dev",
                "--dev-examples",
                request.dev_examples,
            )?),
            None if dev_from_train > 0 => Some(split(all.select(&sorted(dev_idx.to_vec())))?),
            None => None,
        };
        let test = match &request.test {
            Some(file) => Some(from_file(
                file,
                "test",
                "--test-examples",
                request.test_examples,
            )?),
            None if request.test_examples.is_some() => {
                return Err(Error::arg("--test-examples", "needs --test FILE"));
            }
            None => None,
        };
        Ok(TrainData {
            seq: train.max_len(),
            train,
            dev,
            test,
            files,
            sha256: train_inputs.sha256,
            pad_id: config.pad_token_id,
            eval_rows: request.eval_rows,
        })
    }

    /// Train examples per step.
    pub fn step_examples(&self, size: BatchSize) -> usize {
        match size {
            BatchSize::Examples(n) => n.min(self.train.len()),
            BatchSize::All => self.train.len(),
        }
    }

    /// Steps in one epoch: every train example once (the last step may be short).
    pub fn steps_per_epoch(&self, size: BatchSize, accumulate: usize) -> usize {
        let per_step = self.step_examples(size) * accumulate;
        self.train.len().div_ceil(per_step.min(self.train.len()))
    }

    /// The order epoch `epoch` visits the train examples in.
    pub fn epoch_order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let stream = rng::stream_id(&[ORDER_STREAM, epoch as u64]);
        order.shuffle(&mut rng::stream(seed, stream));
        order
    }

    /// The batches of step `index` within an epoch visiting `order`: `accumulate`
    /// micro-batches of `size` examples (the step's gradient is the mean over all
    /// of them), each padded to the train split's longest sequence. A full-batch
    /// step is cut into batches of the evaluation's size.
    pub fn step_batches(
        &self,
        order: &[usize],
        index: usize,
        size: BatchSize,
        accumulate: usize,
    ) -> Vec<Batch> {
        let per_batch = match size {
            BatchSize::Examples(n) => n,
            BatchSize::All => {
                let seqs = self.train.sequences().div_ceil(self.train.len().max(1));
                (self.eval_rows / seqs.max(1)).max(1)
            }
        };
        let per_step = self.step_examples(size) * accumulate;
        let start = (index * per_step).min(order.len());
        let end = (start + per_step).min(order.len());
        order[start..end]
            .chunks(per_batch)
            .map(|chunk| padded_batch(&self.train.select(chunk), self.pad_id, self.seq))
            .collect()
    }

    /// The first `n` train examples (file order) in evaluation batches: the fixed
    /// batch the sharpness is measured on.
    pub fn first_train(&self, n: usize) -> Result<Vec<Batch>> {
        let n = n.min(self.train.len());
        let head: Vec<usize> = (0..n).collect();
        crate::model::batch::batches(
            &self.train.select(&head),
            self.eval_rows,
            self.pad_id,
            crate::model::batch::Padding::Right,
        )
    }
}
