//! Loss landscapes in the masked subspace: the loss along one or two directions
//! `θ + α d₁ (+ β d₂)` that move only the masked coordinates, beside the quadratic
//! model `L₀ + α gᵀd₁ + β gᵀd₂ + ½(α² d₁ᵀHd₁ + 2αβ d₁ᵀHd₂ + β² d₂ᵀHd₂)` built from
//! the measured gradient and curvature (one Hessian-vector product per direction,
//! exact, no finite differences).
//!
//! Directions:
//! - `top-eigen`: the unit eigenvector(s) of the largest masked-Hessian eigenvalues
//!   (Lanczos, or read from a probe's `eigenvectors.safetensors`);
//! - `random`: Gaussian, normalized per weight matrix as is customary for
//!   landscape plots (Li, Xu, Taylor, Studer & Goldstein, "Visualizing the loss
//!   landscape of neural nets", NeurIPS 2018, with whole matrices in place of
//!   filters): the direction's entries in each tensor get the norm of that tensor's
//!   masked weights, so `α = 1` moves every matrix by its own size;
//! - `gradient`: the unit masked gradient; in 2-D the second direction is a random
//!   one (normalized per matrix), made orthogonal to the gradient, of unit norm.
//!
//! `top-eigen` and `gradient` directions have unit norm, so `α` is a distance in
//! parameter space; `random` ones are relative to the weights.

use std::ops::Range;
use std::path::{Path, PathBuf};

use rand::Rng as _;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::device::{BackendJob, Device, Dtype, GpuOptions, dispatch};
use super::inputs::{DataInputs, DataRequest, HessianChoice, ModelInputs, record_inputs};
use super::memory;
use super::operator::{HessianOperator, ProductPath};
use super::output::{read_eigenvectors, record_identities};
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::model::objective::ObjectiveBuffers;
use crate::model::{Memory, Objective, Opt, OptConfig, ParamLayout};
use crate::progress::Progress;
use crate::report::table::format_float;
use crate::report::{Axis, Chart, LegendPosition, Manifest, SeriesData, Table, atomic};
use crate::rng;
use crate::spectral::{HostSpace, LanczosOptions, LinearOperator, Which, lanczos};

/// Tags the random directions' streams.
const DIRECTION_STREAM: u64 = 0x6469_7265; // "dire"

/// How the directions are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionKind {
    TopEigen,
    Random,
    Gradient,
}

impl DirectionKind {
    pub fn name(self) -> &'static str {
        match self {
            DirectionKind::TopEigen => "top-eigen",
            DirectionKind::Random => "random",
            DirectionKind::Gradient => "gradient",
        }
    }
}

/// Settings of a landscape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LandscapeOptions {
    pub directions: DirectionKind,
    /// The grid covers `[-span, span]` along each direction.
    pub span: f64,
    /// Grid points per direction.
    pub points: usize,
    /// Two directions (a `points x points` grid) instead of one.
    pub two_d: bool,
    /// Seed of random directions and of the Lanczos start vector.
    pub seed: u64,
    /// Lanczos budget and tolerance for `top-eigen`.
    pub iters: usize,
    pub tol: f64,
    /// Read `top-eigen` directions from a probe's eigenvector file instead.
    pub eigenvectors: Option<PathBuf>,
}

impl Default for LandscapeOptions {
    fn default() -> Self {
        LandscapeOptions {
            directions: DirectionKind::TopEigen,
            span: 1.0,
            points: 41,
            two_d: false,
            seed: 0,
            iters: 100,
            tol: 1e-6,
            eigenvectors: None,
        }
    }
}

impl LandscapeOptions {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.span.is_finite() && self.span > 0.0) {
            return Err(Error::arg(
                "--span",
                format!("must be a positive number, got {}", self.span),
            ));
        }
        if self.points < 3 {
            return Err(Error::arg("--points", "must be at least 3"));
        }
        if self.iters < 4 {
            return Err(Error::arg("--iters", "must be at least 4"));
        }
        if self.eigenvectors.is_some() && self.directions != DirectionKind::TopEigen {
            return Err(Error::arg(
                "--eigenvectors",
                "only used with --directions top-eigen",
            ));
        }
        Ok(())
    }

    /// The grid coordinates along one direction.
    pub fn grid(&self) -> Vec<f64> {
        let n = self.points;
        (0..n)
            .map(|i| self.span * (2.0 * i as f64 / (n - 1) as f64 - 1.0))
            .collect()
    }
}

/// One direction and what the quadratic model knows of it.
#[derive(Clone, Debug, Serialize)]
pub struct DirectionSummary {
    pub label: String,
    pub norm: f64,
    /// `gᵀd`.
    pub slope: f64,
    /// `dᵀHd`.
    pub curvature: f64,
    /// `dᵀHd / dᵀd`: the curvature per unit length (an eigenvalue for `top-eigen`).
    pub rayleigh_quotient: f64,
}

/// A computed landscape.
#[derive(Clone, Debug, Serialize)]
pub struct Landscape {
    pub hessian: String,
    pub dim: usize,
    pub options: LandscapeOptions,
    /// The loss at the checkpoint.
    pub base_loss: f64,
    pub directions: Vec<DirectionSummary>,
    /// `d₁ᵀHd₂` (2-D only).
    pub cross_curvature: Option<f64>,
    /// Grid along `d₁`, and along `d₂` (`[0]` in 1-D).
    pub alphas: Vec<f64>,
    pub betas: Vec<f64>,
    /// Loss at `(alphas[i], betas[j])`, index `j * alphas.len() + i`.
    pub loss: Vec<f64>,
    pub quadratic: Vec<f64>,
    /// Loss evaluations (forward sweeps over the dataset) and products used.
    pub evaluations: usize,
    pub hvps: u64,
    /// What identifies the inputs: the checkpoint's and the data's SHA-256, the
    /// mask's spec and the hash of its indices.
    pub model_sha256: String,
    pub data_sha256: String,
    pub mask_spec: Option<crate::mask::MaskSpec>,
    pub indices_sha256: Option<String>,
}

impl Landscape {
    /// The largest `|α|` (along `d₁`, `β = 0`) up to which the quadratic model stays
    /// within `tolerance` of the measured loss, relative to the loss's range.
    pub fn quadratic_trust_radius(&self, tolerance: f64) -> f64 {
        let n = self.alphas.len();
        let row = self.betas.iter().position(|&b| b == 0.0).unwrap_or(0) * n;
        let measured = &self.loss[row..row + n];
        let model = &self.quadratic[row..row + n];
        let (lo, hi) = measured
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let scale = (hi - lo).max(f64::EPSILON * self.base_loss.abs().max(1.0));
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| self.alphas[a].abs().total_cmp(&self.alphas[b].abs()));
        let mut radius = 0.0;
        for i in order {
            if (measured[i] - model[i]).abs() > tolerance * scale {
                break;
            }
            radius = self.alphas[i].abs();
        }
        radius
    }
}

/// Everything a landscape needs to know.
#[derive(Clone, Debug)]
pub struct LandscapeRequest {
    pub model: PathBuf,
    pub data: DataRequest,
    pub hessian: HessianChoice,
    pub options: LandscapeOptions,
    pub dtype: Dtype,
    pub device: Device,
    /// Which GPU, and whether TF32 is allowed (with `Device::Cuda`).
    pub gpu: GpuOptions,
    /// Whether the passes store or recompute the blocks' activations.
    pub memory: Memory,
}

/// A landscape with the inputs for its manifest.
pub struct LandscapeRun {
    pub landscape: Landscape,
    pub inputs: Manifest,
}

/// Computes the landscape `request` describes on its device.
pub fn run_landscape(
    request: &LandscapeRequest,
    manifest: Manifest,
    progress: &dyn Progress,
) -> Result<LandscapeRun> {
    dispatch(
        request.device,
        request.gpu,
        request.dtype,
        LandscapeJob {
            request,
            manifest,
            progress,
        },
    )
}

struct LandscapeJob<'a> {
    request: &'a LandscapeRequest,
    manifest: Manifest,
    progress: &'a dyn Progress,
}

impl BackendJob for LandscapeJob<'_> {
    type Output = LandscapeRun;

    fn run<T: Scalar, B: Backend<T> + Clone>(self, backend: B) -> Result<LandscapeRun> {
        let LandscapeJob {
            request,
            mut manifest,
            progress,
        } = self;
        let options = &request.options;
        options.validate()?;
        // planned (or refused) before the weights are read
        let config = OptConfig::from_file(&request.model.join("config.json"))?;
        let data = DataInputs::load(&request.data, &request.model, &config)?;
        let resolved = request.hessian.resolve(&ParamLayout::new(&config))?;
        let dim = memory::dim(&config, &resolved.restriction);
        // Lanczos's basis for top-eigen and the directions, in f64; on the CPU the
        // host copy of the weights the grid moves from shares the memory too
        let basis = (options.iters + 8) * dim * 8;
        let host_weights = if backend.name() == "cpu" {
            ParamLayout::new(&config).total() * std::mem::size_of::<T>()
        } else {
            0
        };
        let (_, mode) = memory::plan(
            &backend,
            &config,
            &data.batches,
            memory::restricted(&resolved.restriction),
            (basis + host_weights) as u64,
            request.memory,
            "the landscape",
        )?;
        let model = ModelInputs::<T>::load_with_config(&request.model, config)?;
        record_inputs(&mut manifest, &model, &data, &request.hessian)?;
        if let Some(path) = &options.eigenvectors {
            manifest.add_input("eigenvectors", path)?;
        }
        let params = &model.checkpoint.params;
        let indices = resolved.restriction.indices(params.len());
        let network = Opt::new(backend.clone(), model.config().clone(), params)?;
        let op = HessianOperator::with_options(
            &network,
            &data.batches,
            &resolved.restriction,
            ProductPath::Auto,
            mode,
        )?;

        let directions = directions(&op, options, &indices, params, model.layout(), progress)?;
        let mut summaries = Vec::new();
        let mut images = Vec::new();
        let mut base_loss = f64::NAN;
        for (label, d) in &directions {
            progress.check()?;
            let mut hd = vec![0.0; d.len()];
            let scalars = op.apply_with_scalars(d, &mut hd)?;
            base_loss = scalars.loss;
            let curvature = dot(d, &hd);
            let norm2 = dot(d, d);
            summaries.push(DirectionSummary {
                label: label.clone(),
                norm: norm2.sqrt(),
                slope: scalars.loss_dot,
                curvature,
                rayleigh_quotient: curvature / norm2,
            });
            images.push(hd);
        }
        let cross_curvature = (directions.len() == 2).then(|| dot(&directions[0].1, &images[1]));

        let alphas = options.grid();
        let betas = if options.two_d {
            options.grid()
        } else {
            vec![0.0]
        };
        let hvps = op.products();
        drop(op);
        // The grid moves only the masked coordinates, in place on the backend: one
        // model and one set of pass buffers for every point.
        let mut network = network;
        let plan = network.mask_plan(&indices)?;
        let base: Vec<T> = indices.iter().map(|&i| params[i as usize]).collect();
        let mut moved = base.clone();
        let mut buffers = ObjectiveBuffers::with_memory(mode);
        let mut loss = Vec::with_capacity(alphas.len() * betas.len());
        progress.start((alphas.len() * betas.len()) as u64, "landscape");
        for &beta in &betas {
            for &alpha in &alphas {
                progress.check()?;
                for (i, x) in moved.iter_mut().enumerate() {
                    let mut shift = alpha * directions[0].1[i];
                    if let Some((_, d2)) = directions.get(1) {
                        shift += beta * d2[i];
                    }
                    *x = base[i] + T::from_f64(shift);
                }
                network.set_at_mask(&plan, &moved)?;
                let mut objective = Objective::with_buffers(&network, &data.batches, buffers)?;
                loss.push(objective.loss()?);
                buffers = objective.into_buffers();
                progress.advance(1);
            }
        }
        let quadratic = betas
            .iter()
            .flat_map(|&beta| {
                let summaries = &summaries;
                alphas.iter().map(move |&alpha| {
                    let s1 = &summaries[0];
                    let mut q = base_loss + alpha * s1.slope + 0.5 * alpha * alpha * s1.curvature;
                    if let (Some(s2), Some(c12)) = (summaries.get(1), cross_curvature) {
                        q +=
                            beta * s2.slope + alpha * beta * c12 + 0.5 * beta * beta * s2.curvature;
                    }
                    q
                })
            })
            .collect();
        let landscape = Landscape {
            hessian: resolved.description.clone(),
            dim: indices.len(),
            options: options.clone(),
            base_loss,
            directions: summaries,
            cross_curvature,
            evaluations: loss.len(),
            alphas,
            betas,
            loss,
            quadratic,
            hvps,
            model_sha256: model.sha256.clone(),
            data_sha256: data.sha256.clone(),
            mask_spec: resolved.mask.as_ref().and_then(|m| m.spec.clone()),
            indices_sha256: resolved.mask_sha256(),
        };
        Ok(LandscapeRun {
            landscape,
            inputs: manifest,
        })
    }
}

/// Writes a landscape's table (`landscape.csv/.parquet`: alpha, beta, loss,
/// quadratic), `summary.json`, its figure at `figure_stem` and `manifest.json` into
/// `dir`; returns the files, the manifest last.
pub fn write_landscape(run: &LandscapeRun, dir: &Path, figure_stem: &Path) -> Result<Vec<PathBuf>> {
    let l = &run.landscape;
    let n = l.alphas.len();
    let table = Table::new()
        .with_f64(
            "alpha",
            (0..l.loss.len()).map(|i| l.alphas[i % n]).collect(),
        )
        .with_f64("beta", (0..l.loss.len()).map(|i| l.betas[i / n]).collect())
        .with_f64("loss", l.loss.clone())
        .with_f64("quadratic_model", l.quadratic.clone());
    let mut written = table.write_both(&dir.join("landscape"))?;
    let summary = dir.join("summary.json");
    atomic::write_json(
        &summary,
        &serde_json::json!({
            "hessian": l.hessian,
            "dim": l.dim,
            "options": l.options,
            "base_loss": l.base_loss,
            "directions": l.directions,
            "cross_curvature": l.cross_curvature,
            "evaluations": l.evaluations,
            "hvps": l.hvps,
            "quadratic_trust_radius_1pct": l.quadratic_trust_radius(0.01),
            "model_sha256": l.model_sha256,
            "data_sha256": l.data_sha256,
            "indices_sha256": l.indices_sha256,
        }),
    )?;
    written.push(summary);
    written.extend(landscape_chart(l).save(figure_stem)?);
    let mut manifest = run.inputs.clone();
    record_identities(
        &mut manifest,
        serde_json::json!({
            "model_sha256": l.model_sha256,
            "data_sha256": l.data_sha256,
            "mask_spec": l.mask_spec,
            "indices_sha256": l.indices_sha256,
            "dim": l.dim,
        }),
    );
    manifest.add_outputs(&written);
    manifest.write(dir)?;
    written.push(dir.join("manifest.json"));
    Ok(written)
}

/// The measured loss (solid) and its quadratic model (dashed) along `d₁`; in 2-D,
/// five slices at evenly spaced `β`.
pub fn landscape_chart(l: &Landscape) -> Chart {
    let n = l.alphas.len();
    let two_d = l.betas.len() > 1;
    let kind = l.options.directions.name();
    let title = if two_d {
        format!("Loss on a 2-D slice ({kind} directions): slices at fixed β")
    } else {
        format!("Loss along a {kind} direction of the masked subspace")
    };
    let mut chart = Chart::new(
        title,
        Axis::linear("α (step along d₁)"),
        Axis::linear("loss"),
    )
    .with_legend(LegendPosition::UpperLeft);
    let rows: Vec<usize> = if two_d {
        let m = l.betas.len() - 1;
        let mut rows: Vec<usize> = (0..5).map(|i| i * m / 4).collect();
        rows.dedup();
        rows
    } else {
        vec![0]
    };
    for (c, &row) in rows.iter().enumerate() {
        let slice = |values: &[f64]| -> Vec<(f64, f64)> {
            l.alphas
                .iter()
                .copied()
                .zip(values[row * n..(row + 1) * n].iter().copied())
                .collect()
        };
        let at = if two_d {
            format!(" at β = {}", format_float(l.betas[row]))
        } else {
            String::new()
        };
        chart.add(
            Some(&format!("loss{at}")),
            c,
            SeriesData::Line(slice(&l.loss)),
        );
        let d = &l.directions[0];
        let label = if two_d {
            format!("quadratic model{at}")
        } else {
            format!(
                "quadratic model (gᵀd = {}, dᵀHd = {})",
                format_float(d.slope),
                format_float(d.curvature)
            )
        };
        chart
            .add(Some(&label), c, SeriesData::Line(slice(&l.quadratic)))
            .dashed();
    }
    chart
}

/// The one or two directions, labelled.
fn directions<T: Scalar, B: Backend<T>>(
    op: &HessianOperator<'_, T, B>,
    options: &LandscapeOptions,
    indices: &[u64],
    params: &[T],
    layout: &ParamLayout,
    progress: &dyn Progress,
) -> Result<Vec<(String, Vec<f64>)>> {
    let count = if options.two_d { 2 } else { 1 };
    let k = indices.len();
    let random = |j: u64| -> Vec<f64> {
        let mut r = rng::stream(options.seed, rng::stream_id(&[DIRECTION_STREAM, j]));
        let mut d: Vec<f64> = (0..k).map(|_| r.sample(StandardNormal)).collect();
        normalize_per_tensor(&mut d, indices, params, layout);
        d
    };
    match options.directions {
        DirectionKind::TopEigen => {
            let (values, vectors) = match &options.eigenvectors {
                Some(path) => {
                    let e = read_eigenvectors(path)?;
                    if e.indices != indices {
                        return Err(Error::file(
                            path,
                            format!(
                                "its {} coordinates are not the {} of this Hessian's mask",
                                e.indices.len(),
                                k
                            ),
                        ));
                    }
                    if e.vectors.len() < count {
                        return Err(Error::file(
                            path,
                            format!("holds {} eigenvectors, {count} needed", e.vectors.len()),
                        ));
                    }
                    (e.values, e.vectors)
                }
                None => {
                    if k < count + 1 {
                        return Err(Error::arg(
                            "--directions",
                            format!("top-eigen needs a mask of more than {count} coordinates"),
                        ));
                    }
                    let result = lanczos(
                        op,
                        &HostSpace::new(op.dim()),
                        &LanczosOptions {
                            k: count,
                            which: Which::Largest,
                            tol: options.tol,
                            max_products: options.iters,
                            ritz_vectors: true,
                            seed: options.seed,
                            ..LanczosOptions::default()
                        },
                        progress,
                    )?;
                    let vectors = result.vectors.expect("Ritz vectors requested"); // invariant: ritz_vectors was requested.
                    if vectors.len() < count {
                        return Err(Error::Numerical(format!(
                            "Lanczos returned {} eigenvectors within --iters {}, {count} needed",
                            vectors.len(),
                            options.iters
                        )));
                    }
                    (result.eigenvalues, vectors)
                }
            };
            Ok((0..count)
                .map(|i| {
                    (
                        format!("eigenvector {} (λ = {:.4e})", i + 1, values[i]),
                        vectors[i].clone(),
                    )
                })
                .collect())
        }
        DirectionKind::Random => Ok((0..count)
            .map(|j| {
                (
                    format!("random direction {} (per-matrix normalized)", j + 1),
                    random(j as u64),
                )
            })
            .collect()),
        DirectionKind::Gradient => {
            let (_, gradient) = op.with_objective(|o: &mut Objective<'_, T, B>| o.gradient())??;
            let mut g: Vec<f64> = indices
                .iter()
                .map(|&i| gradient[i as usize].to_f64())
                .collect();
            let norm = dot(&g, &g).sqrt();
            if norm == 0.0 {
                return Err(Error::Numerical(
                    "the masked gradient is zero: no gradient direction".into(),
                ));
            }
            g.iter_mut().for_each(|v| *v /= norm);
            let mut out = vec![("unit masked gradient".to_string(), g)];
            if count == 2 {
                let mut d = random(0);
                let c = dot(&d, &out[0].1);
                d.iter_mut().zip(&out[0].1).for_each(|(d, g)| *d -= c * g);
                let n = dot(&d, &d).sqrt();
                d.iter_mut().for_each(|v| *v /= n);
                out.push(("random direction orthogonal to the gradient".into(), d));
            }
            Ok(out)
        }
    }
}

/// Scales `d`'s entries in each tensor so that they have the norm of the tensor's
/// weights at the same coordinates (entries of all-zero weights are set to zero).
fn normalize_per_tensor<T: Scalar>(
    d: &mut [f64],
    indices: &[u64],
    params: &[T],
    layout: &ParamLayout,
) {
    for range in tensor_segments(indices, layout) {
        let weights: f64 = indices[range.clone()]
            .iter()
            .map(|&i| params[i as usize].to_f64().powi(2))
            .sum::<f64>()
            .sqrt();
        let segment = &mut d[range];
        let norm = dot(segment, segment).sqrt();
        let scale = if norm > 0.0 { weights / norm } else { 0.0 };
        segment.iter_mut().for_each(|v| *v *= scale);
    }
}

/// The ranges of `indices` (sorted flat indices) that fall in each tensor.
fn tensor_segments(indices: &[u64], layout: &ParamLayout) -> Vec<Range<usize>> {
    layout
        .entries()
        .iter()
        .filter_map(|e| {
            let r = e.range();
            let start = indices.partition_point(|&i| i < r.start as u64);
            let end = indices.partition_point(|&i| i < r.end as u64);
            (end > start).then_some(start..end)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;

    #[test]
    fn per_tensor_normalization_matches_the_weights() {
        let config = preset("opt-mini").unwrap();
        let layout = ParamLayout::new(&config);
        let e = &layout.entries()[3];
        let (a, b) = (e.range().start as u64, e.range().start as u64 + 5);
        let f = &layout.entries()[5];
        let c = f.range().start as u64 + 2;
        let indices = vec![a, b, c];
        let mut params = vec![0.0f64; layout.total()];
        params[a as usize] = 3.0;
        params[b as usize] = 4.0;
        params[c as usize] = -2.0;
        let mut d = vec![1.0, 1.0, 7.0];
        normalize_per_tensor(&mut d, &indices, &params, &layout);
        assert!((d[0] - 5.0 / 2f64.sqrt()).abs() < 1e-12);
        assert!((d[1] - 5.0 / 2f64.sqrt()).abs() < 1e-12);
        assert!((d[2] - 2.0).abs() < 1e-12);
        assert_eq!(tensor_segments(&indices, &layout), vec![0..2, 2..3]);
    }

    #[test]
    fn grid_is_symmetric_and_hits_zero() {
        let options = LandscapeOptions {
            span: 2.0,
            points: 5,
            ..LandscapeOptions::default()
        };
        assert_eq!(options.grid(), vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
    }
}
