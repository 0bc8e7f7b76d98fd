//! One probe from files to numbers: load the checkpoint, the data and the mask,
//! evaluate the loss and accuracy, run the spectral estimates, and time it all.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::device::{
    BackendJob, Device, Dtype, Engine, GpuOptions, GpuSummary, OnBackend, SpectralBackend,
};
use super::evaluate::{Evaluation, evaluate};
use super::inputs::{DataInputs, DataRequest, HessianChoice, ModelInputs, record_inputs};
use super::memory;
use super::operator::{HessianOperator, ProductPath};
use super::spectrum::{ProbeOptions, SpectrumReport, probe_spectrum};
use crate::backend::Scalar;
use crate::error::Result;
use crate::mask::MaskSpec;
use crate::model::{Memory, Opt, OptConfig, ParamLayout};
use crate::progress::Progress;
use crate::report::Manifest;
use crate::spectral::LinearOperator;

/// Everything a probe needs to know.
#[derive(Clone, Debug)]
pub struct ProbeRequest {
    /// The checkpoint folder.
    pub model: PathBuf,
    /// A training run's `delta.safetensors` added to the checkpoint.
    pub delta: Option<PathBuf>,
    pub data: DataRequest,
    pub hessian: HessianChoice,
    pub options: ProbeOptions,
    pub dtype: Dtype,
    pub device: Device,
    /// Which GPU, and whether TF32 is allowed (with `Device::Cuda`).
    pub gpu: GpuOptions,
    /// Whether the passes store or recompute the blocks' activations.
    pub memory: Memory,
}

/// The checkpoint as the report records it.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub path: String,
    pub sha256: String,
    pub parameters: usize,
}

/// The dataset as the report records it.
#[derive(Clone, Debug, Serialize)]
pub struct DataSummary {
    pub path: String,
    pub sha256: String,
    pub task: Option<String>,
    pub examples: usize,
    pub rows_in_file: usize,
    /// Sequences per sweep (one per candidate for classification).
    pub sequences: usize,
    pub batches: usize,
    /// Examples shortened to fit the model's positions.
    pub truncated: usize,
}

/// The operator as the report records it.
#[derive(Clone, Debug, Serialize)]
pub struct HessianSummary {
    pub description: String,
    /// The operator's dimension (k for a mask).
    pub dim: usize,
    /// `dim / N`.
    pub ratio_of_total: f64,
    /// How the mask was drawn, when it was.
    pub mask_spec: Option<MaskSpec>,
    /// The probability with which each scoped entry is kept, for drawn masks.
    pub keep_probability: Option<f64>,
    /// SHA-256 of the kept indices (as little-endian u64).
    pub indices_sha256: Option<String>,
}

/// Where the wall time went.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub total_s: f64,
    /// Reading and hashing the checkpoint and the data, drawing the mask, uploading.
    pub load_s: f64,
    /// Forward sweeps for the loss and accuracy.
    pub evaluation_s: f64,
    /// Inside Hessian-vector products.
    pub hvp_s: f64,
    /// Everything else: the algorithms' own vector work and bookkeeping.
    pub other_s: f64,
    pub ms_per_hvp: f64,
    /// How the passes kept the blocks' activations (`stored` or `recompute`; with
    /// `--memory auto`, decided from the free memory, so it lives with the timing).
    pub memory: Memory,
    /// The bytes the probe was planned to need in that mode (weights, the pass,
    /// the operator's and the algorithms' vectors: `probe::memory`).
    pub memory_planned_bytes: u64,
}

/// The summary of a probe (`summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub model: ModelSummary,
    pub data: DataSummary,
    pub hessian: HessianSummary,
    pub dtype: Dtype,
    pub device: Device,
    /// The GPU the products ran on (absent on the CPU, so CPU outputs do not change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSummary>,
    pub options: ProbeOptions,
    pub evaluation: Evaluation,
    pub spectrum: SpectrumReport,
    /// Hessian-vector products over the whole probe.
    pub hvps: u64,
    /// Absent in outputs meant to be byte-identical across reruns.
    pub timing: Option<Timing>,
}

/// Unit eigenvectors in the operator's coordinates, with what identifies them.
#[derive(Clone, Debug)]
pub struct Eigenvectors {
    pub values: Vec<f64>,
    pub vectors: Vec<Vec<f64>>,
    /// The flat parameter index of each coordinate.
    pub indices: Vec<u64>,
    pub indices_sha256: String,
    pub model_sha256: String,
}

/// A finished probe: its report, its inputs for the manifest, its eigenvectors.
pub struct ProbeRun {
    pub report: ProbeReport,
    /// Inputs with hashes (model files, data, tokenizer, mask file).
    pub inputs: Manifest,
    pub eigenvectors: Option<Eigenvectors>,
}

/// Runs `request` on its device (see [`ProbeRequest`]); `manifest` names the
/// command and holds the flags, and receives the inputs.
pub fn run_probe(
    request: &ProbeRequest,
    manifest: Manifest,
    progress: &dyn Progress,
) -> Result<ProbeRun> {
    let engine = Engine::open(request.device, request.gpu)?;
    engine.run(
        request.dtype,
        ProbeJob {
            request,
            manifest,
            progress,
            gpu: engine.gpu_summary(),
        },
    )
}

struct ProbeJob<'a> {
    request: &'a ProbeRequest,
    manifest: Manifest,
    progress: &'a dyn Progress,
    gpu: Option<GpuSummary>,
}

impl BackendJob for ProbeJob<'_> {
    type Output = ProbeRun;

    fn run<T: Scalar, B: SpectralBackend<T>>(self, backend: B) -> Result<ProbeRun> {
        let ProbeJob {
            request,
            mut manifest,
            progress,
            gpu,
        } = self;
        request.options.validate()?;
        let started = Instant::now();
        // Everything but the weights first: the memory is planned (and a run that
        // cannot fit refused) before they are read.
        let config = OptConfig::from_file(&request.model.join("config.json"))?;
        let data = DataInputs::load(&request.data, &request.model, &config)?;
        let resolved = request.hessian.resolve(&ParamLayout::new(&config))?;
        let dim = memory::dim(&config, &resolved.restriction);
        let (footprint, mode) = memory::plan(
            &backend,
            &config,
            &data.batches,
            memory::restricted(&resolved.restriction),
            memory::spectral_bytes(&request.options, dim),
            request.memory,
            "the probe",
        )?;
        let mut model =
            ModelInputs::<T>::load_with_config(&request.model, config, request.delta.as_deref())?;
        record_inputs(&mut manifest, &model, &data.files, &request.hessian)?;
        let params = std::mem::take(&mut model.checkpoint.params);
        let network = Opt::from_vec(backend.clone(), model.config().clone(), params)?;
        let op = HessianOperator::with_options(
            &network,
            &data.batches,
            &resolved.restriction,
            ProductPath::Auto,
            mode,
        )?;
        let load_s = started.elapsed().as_secs_f64();

        let evaluation = op.with_objective(|o| evaluate(o, &data.batches, progress))??;
        let evaluation_s = started.elapsed().as_secs_f64() - load_s;
        let space = backend.space(op.dim())?;
        let spectrum = probe_spectrum(&OnBackend(&op), &space, &request.options, progress)?;
        let total_s = started.elapsed().as_secs_f64();
        let hvps = op.products();
        let hvp_s = op.product_seconds();

        let dim = op.dim();
        let total = op.total_parameters();
        let indices_sha256 = resolved.mask_sha256();
        let mask_spec = resolved.mask.as_ref().and_then(|m| m.spec.clone());
        let keep_probability = match &mask_spec {
            Some(spec) => Some(spec.keep_probability(model.layout())?),
            None => None,
        };
        let eigenvectors = spectrum
            .lanczos
            .as_ref()
            .and_then(|l| {
                let pairs = if l.top.is_empty() { &l.bottom } else { &l.top };
                l.vectors.as_ref().map(|v| (pairs, v))
            })
            .map(|(pairs, vectors)| Eigenvectors {
                values: pairs.iter().map(|p| p.value).collect(),
                vectors: vectors.clone(),
                indices: resolved.restriction.indices(total),
                indices_sha256: indices_sha256.clone().unwrap_or_default(),
                model_sha256: model.sha256.clone(),
            });
        let report = ProbeReport {
            model: ModelSummary {
                path: model.dir.display().to_string(),
                sha256: model.sha256.clone(),
                parameters: total,
            },
            data: DataSummary {
                path: request.data.spec.path.display().to_string(),
                sha256: data.sha256.clone(),
                task: request
                    .data
                    .spec
                    .task
                    .as_ref()
                    .map(|t| t.name().to_string()),
                examples: data.examples(),
                rows_in_file: data.loaded.rows_in_file,
                sequences: data.sequences(),
                batches: data.batches.len(),
                truncated: data.loaded.truncated,
            },
            hessian: HessianSummary {
                description: resolved.description.clone(),
                dim,
                ratio_of_total: dim as f64 / total as f64,
                mask_spec,
                keep_probability,
                indices_sha256,
            },
            dtype: request.dtype,
            device: request.device,
            gpu,
            options: request.options.clone(),
            evaluation,
            spectrum,
            hvps,
            timing: Some(Timing {
                total_s,
                load_s,
                evaluation_s,
                hvp_s,
                other_s: (total_s - load_s - evaluation_s - hvp_s).max(0.0),
                ms_per_hvp: if hvps > 0 {
                    1e3 * hvp_s / hvps as f64
                } else {
                    0.0
                },
                memory: mode,
                memory_planned_bytes: footprint.total(mode == Memory::Recompute),
            }),
        };
        Ok(ProbeRun {
            report,
            inputs: manifest,
            eigenvectors,
        })
    }
}
