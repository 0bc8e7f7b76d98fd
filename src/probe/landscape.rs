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
use super::inputs::{
    DataInputs, DataRequest, HessianChoice, ModelIdentity, ModelInputs, record_inputs,
};
use super::memory;
use super::operator::{HessianOperator, ProductPath};
use super::output::{read_eigenvectors, record_identities};
use super::trajectory::{Trajectory, principal_plane};
use crate::backend::{Backend, Scalar};
use crate::error::{Error, Result};
use crate::model::objective::ObjectiveBuffers;
use crate::model::{Memory, Objective, Opt, OptConfig, ParamLayout};
use crate::progress::Progress;
use crate::report::map::{Grid, MapPanel, MapPath, Overlay, Region, round_levels, save_maps};
use crate::report::table::format_significant;
use crate::report::{Axis, Chart, LegendPosition, Manifest, SeriesData, Table, atomic};
use crate::rng;
use crate::spectral::{HostSpace, LanczosOptions, LanczosVerdict, LinearOperator, Which, lanczos};

/// Tags the random directions' streams.
const DIRECTION_STREAM: u64 = 0x6469_7265; // "dire"

/// How the directions are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionKind {
    TopEigen,
    Random,
    Gradient,
    /// The top two principal directions of a training path (`--trajectory`).
    Pca,
}

impl DirectionKind {
    pub fn name(self) -> &'static str {
        match self {
            DirectionKind::TopEigen => "top-eigen",
            DirectionKind::Random => "random",
            DirectionKind::Gradient => "gradient",
            DirectionKind::Pca => "pca",
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
    /// A training run (its folder or `trajectory.safetensors`) whose path is drawn
    /// on the 2-D map.
    pub trajectory: Option<PathBuf>,
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
            trajectory: None,
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
        if self.trajectory.is_some() && !self.two_d {
            return Err(Error::arg("--trajectory", "draws on a 2-D map: add --2d"));
        }
        if self.directions == DirectionKind::Pca && self.trajectory.is_none() {
            return Err(Error::arg(
                "--directions",
                "pca takes the principal directions of a training path: add --trajectory RUN",
            ));
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
    /// What Lanczos established about `top-eigen` directions it computed (none
    /// for directions read from a file, random or gradient ones).
    pub eigenvector_verdict: Option<LanczosVerdict>,
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
    /// The training path drawn on the map, with `--trajectory`.
    pub path: Option<PathOnMap>,
}

/// A training path on the landscape's plane.
#[derive(Clone, Debug, Serialize)]
pub struct PathOnMap {
    pub file: String,
    pub steps: Vec<usize>,
    /// Each point's coordinates on the plane (the nearest point of the plane).
    pub alphas: Vec<f64>,
    pub betas: Vec<f64>,
    /// Its distance from the plane.
    pub off_plane: Vec<f64>,
    /// The loss (on the landscape's data) at the point, and at its projection.
    pub loss: Vec<f64>,
    pub loss_projected: Vec<f64>,
    /// With `--directions pca`: the variance share of the two directions.
    pub explained: Option<[f64; 2]>,
}

impl Landscape {
    /// `|loss − quadratic| − tolerance · (range of the loss)` at every grid point
    /// (index as [`Self::loss`]): where it is at most 0 the quadratic model agrees
    /// with the measured loss within `tolerance` of the loss's range over the grid
    /// (the yardstick of [`Self::quadratic_trust_radius`]).
    pub fn agreement_gap(&self, tolerance: f64) -> Vec<f64> {
        agreement_gap(&self.loss, &self.quadratic, tolerance)
    }

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
    /// A training run's delta added to the checkpoint.
    pub delta: Option<PathBuf>,
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
        let model =
            ModelInputs::<T>::load_with_config(&request.model, config, request.delta.as_deref())?;
        record_inputs(&mut manifest, &model, &data.files, &request.hessian)?;
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

        // the path's offsets from the checkpoint, in the landscape's coordinates
        let path = match &options.trajectory {
            Some(run) => Some(read_path(run, &request.model, &indices, params)?),
            None => None,
        };
        if let Some(path) = &path {
            manifest.add_input("trajectory", &path.0.file)?;
        }
        let (directions, eigenvector_verdict, explained) = match &path {
            Some((_, offsets)) if options.directions == DirectionKind::Pca => {
                let plane = principal_plane(offsets)?;
                let [d1, d2] = plane.directions;
                let label = |i: usize| {
                    format!(
                        "principal direction {} of the path ({}% of its variance)",
                        i + 1,
                        format_significant(100.0 * plane.explained[i], 3)
                    )
                };
                (
                    vec![(label(0), d1), (label(1), d2)],
                    None,
                    Some(plane.explained),
                )
            }
            _ => {
                let (d, v) = directions(&op, options, &indices, params, model.layout(), progress)?;
                (d, v, None)
            }
        };
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
        // the path: each point, and its projection onto the plane, evaluated
        let path = match path {
            None => None,
            Some((trajectory, offsets)) => {
                let (d1, d2) = (&directions[0].1, &directions[1].1);
                let mut on_map = PathOnMap {
                    file: trajectory.file.display().to_string(),
                    steps: trajectory.steps.clone(),
                    alphas: Vec::new(),
                    betas: Vec::new(),
                    off_plane: Vec::new(),
                    loss: Vec::new(),
                    loss_projected: Vec::new(),
                    explained,
                };
                let mut loss_at = |values: &[T]| -> Result<f64> {
                    network.set_at_mask(&plan, values)?;
                    let mut o = Objective::with_buffers(
                        &network,
                        &data.batches,
                        std::mem::take(&mut buffers),
                    )?;
                    let l = o.loss()?;
                    buffers = o.into_buffers();
                    Ok(l)
                };
                for offset in &offsets {
                    progress.check()?;
                    let ((a, b), off) = project_onto_plane(offset, d1, d2)?;
                    let point: Vec<T> = base
                        .iter()
                        .zip(offset)
                        .map(|(&x, &o)| x + T::from_f64(o))
                        .collect();
                    let projected: Vec<T> = base
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| x + T::from_f64(a * d1[i] + b * d2[i]))
                        .collect();
                    on_map.alphas.push(a);
                    on_map.betas.push(b);
                    on_map.off_plane.push(off);
                    on_map.loss.push(loss_at(&point)?);
                    on_map.loss_projected.push(loss_at(&projected)?);
                }
                Some(on_map)
            }
        };
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
            eigenvector_verdict,
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
            path,
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
            "eigenvector_verdict": l.eigenvector_verdict,
            "cross_curvature": l.cross_curvature,
            "evaluations": l.evaluations,
            "hvps": l.hvps,
            "quadratic_trust_radius_1pct": l.quadratic_trust_radius(0.01),
            "quadratic_agreement_fraction_1pct": agreement_fraction(&l.agreement_gap(0.01)),
            "model_sha256": l.model_sha256,
            "data_sha256": l.data_sha256,
            "indices_sha256": l.indices_sha256,
            "path": l.path,
        }),
    )?;
    written.push(summary);
    if l.betas.len() > 1 {
        let paths: Vec<MapPath> = l
            .path
            .iter()
            .map(|p| MapPath {
                label: format!(
                    "training path (steps {} to {})",
                    p.steps.first().copied().unwrap_or(0),
                    p.steps.last().copied().unwrap_or(0)
                ),
                points: p
                    .alphas
                    .iter()
                    .copied()
                    .zip(p.betas.iter().copied())
                    .collect(),
            })
            .collect();
        written.extend(save_maps(&landscape_maps(l, &paths)?, figure_stem)?);
        written.extend(landscape_chart(l).save(&slices_stem(figure_stem))?);
        if let Some(p) = &l.path {
            let table = Table::new()
                .with_i64("step", p.steps.iter().map(|&s| s as i64).collect())
                .with_f64("alpha", p.alphas.clone())
                .with_f64("beta", p.betas.clone())
                .with_f64("off_plane", p.off_plane.clone())
                .with_f64("loss", p.loss.clone())
                .with_f64("loss_projected", p.loss_projected.clone());
            written.extend(table.write_both(&dir.join("trajectory"))?);
            written.extend(path_chart(p).save(&path_stem(figure_stem))?);
        }
    } else {
        written.extend(landscape_chart(l).save(figure_stem)?);
    }
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

/// The loss along a training path, at its points and at their projections onto the
/// map's plane: how much of the path the plane shows.
fn path_chart(p: &PathOnMap) -> Chart {
    let mut chart = Chart::new(
        "Loss along the training path",
        Axis::linear("step"),
        Axis::linear("loss"),
    );
    let series = |values: &[f64]| -> Vec<(f64, f64)> {
        p.steps
            .iter()
            .map(|&s| s as f64)
            .zip(values.iter().copied())
            .collect()
    };
    chart.add(Some("at θ_t"), 0, SeriesData::Line(series(&p.loss)));
    chart
        .add(
            Some("at its projection onto the map's plane"),
            1,
            SeriesData::Line(series(&p.loss_projected)),
        )
        .dashed();
    chart
}

/// Where the loss along a training path goes beside the map: `<stem>-path`.
pub fn path_stem(figure_stem: &Path) -> PathBuf {
    let mut name = figure_stem
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push("-path");
    figure_stem.with_file_name(name)
}

/// Where a 2-D landscape's slices go beside its map: `<stem>-slices`.
pub fn slices_stem(figure_stem: &Path) -> PathBuf {
    let mut name = figure_stem
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push("-slices");
    figure_stem.with_file_name(name)
}

/// `|loss − quadratic| − tolerance · (max loss − min loss)` per grid point.
pub fn agreement_gap(loss: &[f64], quadratic: &[f64], tolerance: f64) -> Vec<f64> {
    let (lo, hi) = loss
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let scale = if hi > lo { hi - lo } else { 0.0 };
    loss.iter()
        .zip(quadratic)
        .map(|(l, q)| (l - q).abs() - tolerance * scale)
        .collect()
}

/// The fraction of grid points where the gap is at most 0.
pub fn agreement_fraction(gap: &[f64]) -> f64 {
    gap.iter().filter(|&&g| g <= 0.0).count() as f64 / gap.len().max(1) as f64
}

/// The coordinates `(α, β)` of the point of the plane `θ + α d₁ + β d₂` nearest
/// to `θ + offset`, and the distance between them (how far `offset` leaves the
/// plane). This is how a trajectory `θ_t` goes on a landscape's map: project
/// `θ_t − θ` for each `t` and draw the points as a [`MapPath`]. The directions
/// need not be orthogonal (random ones are only nearly so): the 2 × 2 normal
/// equations are solved. Errors when the directions are parallel.
pub fn project_onto_plane(offset: &[f64], d1: &[f64], d2: &[f64]) -> Result<((f64, f64), f64)> {
    if d1.len() != offset.len() || d2.len() != offset.len() {
        return Err(Error::ShapeMismatch {
            name: "landscape directions".into(),
            expected: vec![offset.len()],
            found: vec![d1.len(), d2.len()],
        });
    }
    let (g11, g12, g22) = (dot(d1, d1), dot(d1, d2), dot(d2, d2));
    let (b1, b2) = (dot(d1, offset), dot(d2, offset));
    let det = g11 * g22 - g12 * g12;
    if det.is_nan() || det <= 1e-12 * g11 * g22 {
        return Err(Error::Numerical(
            "the landscape's two directions are parallel: no plane to project on".into(),
        ));
    }
    let alpha = (g22 * b1 - g12 * b2) / det;
    let beta = (g11 * b2 - g12 * b1) / det;
    let residual: f64 = offset
        .iter()
        .zip(d1.iter().zip(d2))
        .map(|(x, (a, b))| (x - alpha * a - beta * b).powi(2))
        .sum::<f64>()
        .sqrt();
    Ok(((alpha, beta), residual))
}

/// A 2-D landscape as maps: the measured loss as filled contours at round levels
/// with the quadratic model's contours dashed over it, and beside it the quadratic
/// model on the same colours; on both the checkpoint is marked and the region
/// where the two agree within 1% of the loss's range is outlined.
///
/// `paths` are drawn on both maps over everything else: this is where training
/// trajectories go (points `(α, β)` from [`project_onto_plane`]); pass `&[]` for
/// none.
pub fn landscape_maps(l: &Landscape, paths: &[MapPath]) -> Result<Vec<MapPanel>> {
    let field = |values: &[f64]| Grid::new(l.alphas.clone(), l.betas.clone(), values.to_vec());
    let loss = field(&l.loss)?;
    let quadratic = field(&l.quadratic)?;
    let (lo, hi) = loss.range();
    let levels = round_levels(lo, hi, 12);
    let region = Region {
        grid: field(&l.agreement_gap(0.01))?,
        label: "quadratic model within 1% of the loss range (outline)".into(),
    };
    let axis = |index: usize, letter: &str| {
        let d = &l.directions[index];
        let sub = ["₁", "₂"][index];
        Axis::linear(format!(
            "{letter}, step along d{sub}: {}",
            short_label(&d.label)
        ))
    };
    let kind = l.options.directions.name();
    let markers = vec![((0.0, 0.0), "checkpoint (α = β = 0)".to_string())];
    let loss_panel = MapPanel {
        title: format!("Loss over the plane of two {kind} directions"),
        x: axis(0, "α"),
        y: axis(1, "β"),
        field: loss,
        field_label: "loss".into(),
        levels: levels.clone(),
        overlay: Some(Overlay {
            grid: quadratic.clone(),
            label: "quadratic model's contours, same levels (dashed)".into(),
        }),
        region: Some(region.clone()),
        markers: markers.clone(),
        paths: paths.to_vec(),
    };
    let model_panel = MapPanel {
        title: "Its quadratic model L₀ + gᵀδ + ½ δᵀHδ".into(),
        x: axis(0, "α"),
        y: axis(1, "β"),
        field: quadratic,
        field_label: "quadratic model (loss's colours)".into(),
        levels,
        overlay: None,
        region: Some(region),
        markers,
        paths: paths.to_vec(),
    };
    Ok(vec![loss_panel, model_panel])
}

/// A direction's label for an axis: its kind and eigenvalue, without the
/// parenthesis about normalization.
fn short_label(label: &str) -> &str {
    label.split(" (per-matrix").next().unwrap_or(label)
}

/// The measured loss (solid) and its quadratic model (dashed) along `d₁`; in 2-D,
/// five slices at evenly spaced `β` (the map is [`landscape_maps`]).
pub fn landscape_chart(l: &Landscape) -> Chart {
    let n = l.alphas.len();
    let two_d = l.betas.len() > 1;
    let kind = l.options.directions.name();
    let title = if two_d {
        format!("Loss (solid) and quadratic model (dashed) at fixed β, {kind} directions")
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
        // In 2-D one entry per β (the title says which line is which), so the
        // legend stays short.
        let (loss_label, model_label) = if two_d {
            (format!("β = {}", format_significant(l.betas[row], 4)), None)
        } else {
            let d = &l.directions[0];
            (
                "loss".to_string(),
                Some(format!(
                    "quadratic model (gᵀd = {}, dᵀHd = {})",
                    format_significant(d.slope, 4),
                    format_significant(d.curvature, 4)
                )),
            )
        };
        chart.add(Some(&loss_label), c, SeriesData::Line(slice(&l.loss)));
        chart
            .add(
                model_label.as_deref(),
                c,
                SeriesData::Line(slice(&l.quadratic)),
            )
            .dashed();
    }
    chart
}

/// Directions with their labels.
type Directions = Vec<(String, Vec<f64>)>;

/// The one or two directions, labelled, with Lanczos's verdict when it computed
/// them.
fn directions<T: Scalar, B: Backend<T>>(
    op: &HessianOperator<'_, T, B>,
    options: &LandscapeOptions,
    indices: &[u64],
    params: &[T],
    layout: &ParamLayout,
    progress: &dyn Progress,
) -> Result<(Directions, Option<LanczosVerdict>)> {
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
            let (values, vectors, verdict) = match &options.eigenvectors {
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
                    (e.values, e.vectors, None)
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
                    let verdict = LanczosVerdict::of(&result);
                    let vectors = result.vectors.expect("Ritz vectors requested"); // invariant: ritz_vectors was requested.
                    if vectors.len() < count {
                        return Err(Error::Numerical(format!(
                            "Lanczos returned {} eigenvectors within --iters {}, {count} needed",
                            vectors.len(),
                            options.iters
                        )));
                    }
                    (result.eigenvalues, vectors, Some(verdict))
                }
            };
            let labelled = (0..count)
                .map(|i| {
                    (
                        format!(
                            "eigenvector {} (λ = {})",
                            i + 1,
                            format_significant(values[i], 4)
                        ),
                        vectors[i].clone(),
                    )
                })
                .collect();
            Ok((labelled, verdict))
        }
        DirectionKind::Random => Ok((
            (0..count)
                .map(|j| {
                    (
                        format!("random direction {} (per-matrix normalized)", j + 1),
                        random(j as u64),
                    )
                })
                .collect(),
            None,
        )),
        DirectionKind::Pca => Err(Error::arg(
            "--directions",
            "pca takes the principal directions of a training path: add --trajectory RUN",
        )),
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
            Ok((out, None))
        }
    }
}

/// A training run's path and its points' offsets `theta_t - theta` from the
/// landscape's checkpoint, in the landscape's coordinates `indices` (the run must
/// have trained exactly those: pass the run's `delta.safetensors` as `--mask`) and
/// from the checkpoint in `model_dir` (checked by hash when the run recorded it).
fn read_path<T: Scalar>(
    run: &Path,
    model_dir: &Path,
    indices: &[u64],
    params: &[T],
) -> Result<(Trajectory, Vec<Vec<f64>>)> {
    let trajectory = Trajectory::read(run)?;
    let trained = match &trajectory.indices {
        Some(idx) => idx.clone(),
        None => (0..params.len() as u64).collect(),
    };
    if trained != indices {
        return Err(Error::file(
            &trajectory.file,
            format!(
                "the run trained {} coordinates, not the {} of this landscape's mask (pass the \
                 run's delta.safetensors as --mask)",
                trained.len(),
                indices.len()
            ),
        ));
    }
    if let Some(sha) = &trajectory.model_sha256 {
        let here = ModelIdentity::of(model_dir, None)?.sha256;
        if &here != sha {
            return Err(Error::file(
                &trajectory.file,
                format!(
                    "the run started from the checkpoint with SHA-256 {sha}, not this one ({here})"
                ),
            ));
        }
    }
    let center: Vec<f64> = indices
        .iter()
        .map(|&i| params[i as usize].to_f64())
        .collect();
    let offsets = trajectory
        .theta
        .iter()
        .map(|t| t.iter().zip(&center).map(|(x, c)| x - c).collect())
        .collect();
    Ok((trajectory, offsets))
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
    use crate::testing::TestResult;

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
    fn agreement_region_on_a_hand_made_grid() {
        // Loss from 0 to 4 (range 4, so 1% is 0.04); the model misses by 0,
        // 0.03125, 0.0625, 0 and 0.5 at five points.
        let loss = [0.0, 1.0, 2.0, 3.0, 4.0];
        let model = [0.0, 1.031_25, 1.937_5, 3.0, 3.5];
        let gap = agreement_gap(&loss, &model, 0.01);
        let want = [-0.04, -0.008_75, 0.022_5, -0.04, 0.46];
        for (g, w) in gap.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{gap:?}");
        }
        // Within: the first, second and fourth.
        assert_eq!(agreement_fraction(&gap), 0.6);
        // A flat loss has no range: only exact agreement counts.
        let flat = agreement_gap(&[2.0, 2.0], &[2.0, 2.1], 0.01);
        assert_eq!(agreement_fraction(&flat), 0.5);
    }

    #[test]
    fn projection_recovers_plane_coordinates_and_the_distance_off_it() -> TestResult {
        // Non-orthogonal directions in R^4 and a point 2 d1 - 3 d2 + r with r
        // orthogonal to both: the projection is (2, -3) at distance |r| = 5.
        let d1 = [1.0, 0.0, 0.0, 0.0];
        let d2 = [1.0, 1.0, 0.0, 0.0];
        let r = [0.0, 0.0, 3.0, 4.0];
        let offset: Vec<f64> = (0..4).map(|i| 2.0 * d1[i] - 3.0 * d2[i] + r[i]).collect();
        let ((alpha, beta), distance) = project_onto_plane(&offset, &d1, &d2)?;
        assert!((alpha - 2.0).abs() < 1e-12 && (beta + 3.0).abs() < 1e-12);
        assert!((distance - 5.0).abs() < 1e-12);
        assert!(project_onto_plane(&offset, &d1, &d1).is_err());
        assert!(project_onto_plane(&offset[..3], &d1, &d2).is_err());
        Ok(())
    }

    #[test]
    fn two_d_landscapes_draw_as_maps_with_a_path() -> TestResult {
        // A saddle L = 1 + α² − β²/2 + α³/4 measured, its quadratic model without
        // the cubic term: they agree near the checkpoint only.
        let grid: Vec<f64> = (0..9).map(|i| -2.0 + 0.5 * i as f64).collect();
        let mut loss = Vec::new();
        let mut quadratic = Vec::new();
        for &b in &grid {
            for &a in &grid {
                quadratic.push(1.0 + a * a - 0.5 * b * b);
                loss.push(1.0 + a * a - 0.5 * b * b + 0.25 * a * a * a);
            }
        }
        let direction = |label: &str| DirectionSummary {
            label: label.into(),
            norm: 1.0,
            slope: 0.0,
            curvature: 2.0,
            rayleigh_quotient: 2.0,
        };
        let l = Landscape {
            hessian: "test".into(),
            dim: 2,
            options: LandscapeOptions {
                two_d: true,
                span: 2.0,
                points: 9,
                ..LandscapeOptions::default()
            },
            base_loss: 1.0,
            directions: vec![
                direction("eigenvector 1 (λ = 2)"),
                direction("eigenvector 2 (λ = -1)"),
            ],
            eigenvector_verdict: None,
            cross_curvature: Some(0.0),
            alphas: grid.clone(),
            betas: grid,
            loss,
            quadratic,
            evaluations: 81,
            hvps: 2,
            model_sha256: String::new(),
            data_sha256: String::new(),
            mask_spec: None,
            indices_sha256: None,
            path: None,
        };
        let path = MapPath {
            label: "a trajectory".into(),
            points: vec![(1.5, 1.5), (0.8, 0.6), (0.2, 0.1)],
        };
        let panels = landscape_maps(&l, &[path])?;
        assert_eq!(panels.len(), 2);
        // Levels at round values enclosing the loss's range.
        let levels = &panels[0].levels;
        let (lo, hi) = panels[0].field.range();
        assert!(levels[0] <= lo && *levels.last().ok_or("no levels")? >= hi);
        assert!(
            levels
                .iter()
                .all(|v| (v * 2.0 - (v * 2.0).round()).abs() < 1e-9),
            "{levels:?}"
        );
        let dir = tempfile::tempdir()?;
        let stem = dir.path().join("land");
        let files = save_maps(&panels, &stem)?;
        let svg = std::fs::read_to_string(&files[0])?;
        assert!(svg.contains("a trajectory") && svg.contains("checkpoint"));
        assert_eq!(slices_stem(&stem), dir.path().join("land-slices"));
        Ok(())
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
