//! What a training run writes: `summary.json`; the `steps`, `evals` and
//! `sharpness` tables (CSV and Parquet); the `losses`, `distance` and `sharpness`
//! figures (SVG and PNG); `delta.safetensors` (the trained coordinates' moves);
//! `trajectory.safetensors` with `--save-every`; the trained model with
//! `--save-model`; and `manifest.json`.

use std::path::{Path, PathBuf};

use super::run::TrainRun;
use crate::error::Result;
use crate::mask::io::MASK_TENSOR;
use crate::model::StoredDtype;
use crate::model::checkpoint::save::write_hf_checkpoint;
use crate::probe::Dtype;
use crate::probe::output::record_identities;
use crate::progress::Silent;
use crate::report::tensors::{Tensor, Values, write_tensors};
use crate::report::{Axis, Chart, LegendPosition, SeriesData, Table, atomic};

/// The tensor names of a delta file.
pub const DELTA: &str = "delta";
pub const DELTA_FINAL: &str = "delta_final";

/// Where and how a run is written.
pub struct TrainOutputs<'a> {
    pub dir: &'a Path,
    /// Figure `name` goes to `figure_stem(name)` (+ `.svg`, `.png`).
    pub figure_stem: &'a dyn Fn(&str) -> PathBuf,
    /// Keep the wall times in `summary.json` (off for byte-identical reruns).
    pub timing: bool,
    /// Also write the best state as a HuggingFace folder here.
    pub save_model: Option<&'a Path>,
}

/// `values` in the compute precision's type.
fn in_dtype(dtype: Dtype, values: &[f64]) -> Values {
    match dtype {
        Dtype::F32 => Values::F32(values.iter().map(|&x| x as f32).collect()),
        Dtype::F64 => Values::F64(values.to_vec()),
    }
}

/// Writes `run`; returns the files written, the manifest last.
pub fn write_train(run: &TrainRun, outputs: &TrainOutputs<'_>) -> Result<Vec<PathBuf>> {
    let dir = outputs.dir;
    let mut summary = run.summary.clone();
    if !outputs.timing {
        summary.timing = None;
    }
    let dtype = summary.settings.dtype;
    let mut written = Vec::new();
    let path = dir.join("summary.json");
    atomic::write_json(&path, &summary)?;
    written.push(path);

    let steps = Table::new()
        .with_i64("step", run.steps.iter().map(|r| r.step as i64).collect())
        .with_i64("epoch", run.steps.iter().map(|r| r.epoch as i64).collect())
        .with_f64("lr", run.steps.iter().map(|r| r.lr).collect())
        .with_f64(
            "train_loss",
            run.steps.iter().map(|r| r.train_loss).collect(),
        )
        .with_f64("grad_norm", run.steps.iter().map(|r| r.grad_norm).collect())
        .with_f64(
            "update_norm",
            run.steps.iter().map(|r| r.update_norm).collect(),
        )
        .with_f64("distance", run.steps.iter().map(|r| r.distance).collect());
    written.extend(steps.write_both(&dir.join("steps"))?);
    let evals = Table::new()
        .with_i64("step", run.evals.iter().map(|r| r.step as i64).collect())
        .with_i64("epoch", run.evals.iter().map(|r| r.epoch as i64).collect())
        .with_f64(
            "train_loss",
            run.evals.iter().map(|r| r.train_loss).collect(),
        )
        .with_f64("dev_loss", run.evals.iter().map(|r| r.dev_loss).collect())
        .with_f64(
            "dev_accuracy",
            run.evals
                .iter()
                .map(|r| r.dev_accuracy.unwrap_or(f64::NAN))
                .collect(),
        );
    written.extend(evals.write_both(&dir.join("evals"))?);
    if !run.sharpness.is_empty() {
        let s = &run.sharpness;
        let opt = |f: fn(&super::sharpness::SharpnessRow) -> Option<f64>| {
            s.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect()
        };
        let table = Table::new()
            .with_i64("step", s.iter().map(|r| r.step as i64).collect())
            .with_f64("lr", s.iter().map(|r| r.lr).collect())
            .with_f64("lambda_max", s.iter().map(|r| r.lambda_max).collect())
            .with_f64("residual", s.iter().map(|r| r.residual).collect())
            .with_bool("converged", s.iter().map(|r| r.converged).collect())
            .with_f64("preconditioned_lambda_max", opt(|r| r.preconditioned))
            .with_f64(
                "preconditioned_residual",
                opt(|r| r.preconditioned_residual),
            )
            .with_f64("threshold", s.iter().map(|r| r.threshold).collect())
            .with_f64("gd_threshold", s.iter().map(|r| r.gd_threshold).collect());
        written.extend(table.write_both(&dir.join("sharpness"))?);
        written.extend(sharpness_chart(run).save(&(outputs.figure_stem)("sharpness"))?);
    }
    written.extend(losses_chart(run).save(&(outputs.figure_stem)("losses"))?);
    written.extend(distance_chart(run).save(&(outputs.figure_stem)("distance"))?);

    let path = dir.join("delta.safetensors");
    let mut tensors = Vec::new();
    if let Some(indices) = &run.indices {
        let idx = indices.iter().map(|&i| i as i64).collect();
        tensors.push(Tensor::vector(MASK_TENSOR, Values::I64(idx)));
    }
    tensors.push(Tensor::vector(DELTA, in_dtype(dtype, &run.delta_best)));
    tensors.push(Tensor::vector(
        DELTA_FINAL,
        in_dtype(dtype, &run.delta_final),
    ));
    let metadata = [
        ("format", "maskscape-delta".to_string()),
        ("model_sha256", summary.model_sha256.clone()),
        ("best_step", summary.best.step.to_string()),
        ("final_step", summary.steps.to_string()),
    ];
    write_tensors(&path, &tensors, &metadata)?;
    written.push(path);

    if !run.trajectory.is_empty() {
        let path = dir.join("trajectory.safetensors");
        let width = run.theta0.len();
        let mut tensors = Vec::new();
        if let Some(indices) = &run.indices {
            let idx = indices.iter().map(|&i| i as i64).collect();
            tensors.push(Tensor::vector(MASK_TENSOR, Values::I64(idx)));
        }
        let steps = run.trajectory.iter().map(|(s, _)| *s as i64).collect();
        tensors.push(Tensor::vector("steps", Values::I64(steps)));
        let flat: Vec<f64> = run
            .trajectory
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        tensors.push(Tensor {
            name: "theta".into(),
            shape: vec![run.trajectory.len(), width],
            values: in_dtype(dtype, &flat),
        });
        let losses = run
            .trajectory
            .iter()
            .map(|(s, _)| {
                run.steps
                    .iter()
                    .find(|r| r.step == s + 1)
                    .map_or(f64::NAN, |r| r.train_loss)
            })
            .collect();
        tensors.push(Tensor::vector("train_loss", Values::F64(losses)));
        write_tensors(
            &path,
            &tensors,
            &[
                ("format", "maskscape-trajectory".into()),
                ("model_sha256", summary.model_sha256.clone()),
            ],
        )?;
        written.push(path);
    }

    if let (Some(model_dir), Some((config, params))) = (outputs.save_model, &run.model) {
        let stored = match dtype {
            Dtype::F32 => StoredDtype::F32,
            Dtype::F64 => StoredDtype::F64,
        };
        let files = write_hf_checkpoint(model_dir, config, stored, &Silent, |_, entry| {
            params[entry.range()].iter().copied()
        })?;
        written.extend(files);
    }

    let mut manifest = run.inputs.clone();
    record_identities(
        &mut manifest,
        serde_json::json!({
            "model_sha256": summary.model_sha256,
            "indices_sha256": summary.indices_sha256,
            "trained": summary.trained,
        }),
    );
    manifest.add_outputs(&written);
    manifest.write(dir)?;
    written.push(dir.join("manifest.json"));
    Ok(written)
}

/// The batch losses against the step, and the dev losses at the evaluations.
fn losses_chart(run: &TrainRun) -> Chart {
    let mut chart = Chart::new(
        "Training loss (batch) and dev loss",
        Axis::linear("step"),
        Axis::linear("loss"),
    )
    .with_legend(LegendPosition::UpperRight);
    let train: Vec<(f64, f64)> = run
        .steps
        .iter()
        .map(|r| (r.step as f64, r.train_loss))
        .filter(|p| p.1.is_finite())
        .collect();
    chart.add(Some("train (batch)"), 0, SeriesData::Line(train));
    let dev: Vec<(f64, f64)> = run
        .evals
        .iter()
        .map(|r| (r.step as f64, r.dev_loss))
        .filter(|p| p.1.is_finite())
        .collect();
    if !dev.is_empty() {
        chart.add(Some("dev"), 1, SeriesData::Line(dev.clone()));
        chart.add(None, 1, SeriesData::Markers(dev));
    }
    chart
}

/// `‖theta_t - theta_0‖` over the trained coordinates.
fn distance_chart(run: &TrainRun) -> Chart {
    let mut chart = Chart::new(
        "Distance from the starting point (trained coordinates)",
        Axis::linear("step"),
        Axis::linear("‖θ − θ₀‖"),
    )
    .with_legend(LegendPosition::LowerRight);
    let points = run
        .steps
        .iter()
        .map(|r| (r.step as f64, r.distance))
        .collect();
    chart.add(Some("distance"), 0, SeriesData::Line(points));
    chart
}

/// The sharpness (and for AdamW the preconditioned sharpness) against the step,
/// with the thresholds they are stable below.
fn sharpness_chart(run: &TrainRun) -> Chart {
    let mut chart = Chart::new(
        "Sharpness and its stability threshold",
        Axis::linear("step"),
        Axis::log("eigenvalue"),
    )
    .with_legend(LegendPosition::LowerRight);
    let s = &run.sharpness;
    let line = |f: &dyn Fn(&super::sharpness::SharpnessRow) -> Option<f64>| -> Vec<(f64, f64)> {
        s.iter()
            .filter_map(|r| f(r).map(|y| (r.step as f64, y)))
            .filter(|p| p.1.is_finite() && p.1 > 0.0)
            .collect()
    };
    let adam = s.iter().any(|r| r.preconditioned.is_some());
    chart.add(
        Some("λmax(H)"),
        0,
        SeriesData::Line(line(&|r| Some(r.lambda_max))),
    );
    chart
        .add(
            Some("2/η (GD threshold)"),
            0,
            SeriesData::Line(line(&|r| Some(r.gd_threshold))),
        )
        .dashed();
    if adam {
        chart.add(
            Some("λmax(P⁻¹H)"),
            1,
            SeriesData::Line(line(&|r| r.preconditioned)),
        );
        chart
            .add(
                Some("(2+2β₁)/((1−β₁)η)"),
                1,
                SeriesData::Line(line(&|r| Some(r.threshold))),
            )
            .dashed();
    } else if s.iter().any(|r| (r.threshold - r.gd_threshold).abs() > 0.0) {
        chart
            .add(
                Some("(2+2μ)/η (momentum)"),
                1,
                SeriesData::Line(line(&|r| Some(r.threshold))),
            )
            .dashed();
    }
    chart
}
