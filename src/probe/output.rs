//! Writing a probe's results: `summary.json`, tables (CSV + Parquet), figures
//! (SVG + PNG), eigenvectors (safetensors) and `manifest.json`. Everything is
//! computed before the first file is written, and every file is written atomically,
//! so an interrupted probe leaves nothing behind.

use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use super::history::HistoryPoint;
use super::session::{Eigenvectors, ProbeReport, ProbeRun};
use super::spectrum::{RitzPair, SpectrumReport};
use crate::error::{Error, Result};
use crate::report::table::format_float;
use crate::report::tensors::{Tensor, Values, write_tensors};
use crate::report::{Axis, Chart, LegendPosition, Manifest, SeriesData, Table, atomic, plot};
use crate::spectral::verdict::{residual_note, trace_text};

/// The tensor names of an eigenvector file.
pub const EIGENVECTORS: &str = "eigenvectors";
pub const EIGENVALUES: &str = "eigenvalues";
pub const INDICES: &str = "mask_idx";

/// Relative gaps below this are rounding: the convergence plot floors them here.
const GAP_FLOOR: f64 = 1e-12;

/// Where a probe's files go.
pub struct ProbeOutputs<'a> {
    /// Tables, `summary.json`, eigenvectors and `manifest.json`.
    pub dir: &'a Path,
    /// The stem of each figure (`density`, `convergence`) without extension.
    pub figure_stem: &'a dyn Fn(&str) -> PathBuf,
    /// Record wall times (off for outputs that must be identical across reruns).
    pub timing: bool,
    /// Write the eigenvectors, when the probe kept them.
    pub eigenvectors: bool,
}

/// Writes every output of `run`; returns the files written, `manifest.json` last.
pub fn write_probe(run: &ProbeRun, outputs: &ProbeOutputs<'_>) -> Result<Vec<PathBuf>> {
    let mut report = run.report.clone();
    if !outputs.timing {
        report.timing = None;
    }
    let dir = outputs.dir;
    let mut written = Vec::new();
    let summary = dir.join("summary.json");
    atomic::write_json(&summary, &report)?;
    written.push(summary);
    written.extend(ritz_table(&report.spectrum).write_both(&dir.join("ritz_values"))?);
    if let Some(density) = &report.spectrum.density {
        let d = &density.density;
        let table = Table::new()
            .with_f64("eigenvalue", d.x.clone())
            .with_f64("symlog_coordinate", d.u.clone())
            .with_f64("density", d.density.clone());
        written.extend(table.write_both(&dir.join("density"))?);
        written.extend(quadrature_table(&density.quadrature).write_both(&dir.join("slq_nodes"))?);
        written.extend(density_chart(&report).save(&(outputs.figure_stem)("density"))?);
    }
    if let Some(table) = convergence_table(&report.spectrum) {
        written.extend(table.write_both(&dir.join("convergence"))?);
        written.extend(plot::save_panels(
            &convergence_charts(&report.spectrum),
            2,
            &(outputs.figure_stem)("convergence"),
        )?);
    }
    if outputs.eigenvectors
        && let Some(vectors) = &run.eigenvectors
    {
        let path = dir.join("eigenvectors.safetensors");
        write_eigenvectors(&path, vectors)?;
        written.push(path);
    }
    let mut manifest = run.inputs.clone();
    record_identities(
        &mut manifest,
        serde_json::json!({
            "model_sha256": report.model.sha256,
            "data_sha256": report.data.sha256,
            "mask_spec": report.hessian.mask_spec,
            "indices_sha256": report.hessian.indices_sha256,
            "dim": report.hessian.dim,
        }),
    );
    manifest.add_outputs(&written);
    manifest.write(dir)?;
    written.push(dir.join("manifest.json"));
    Ok(written)
}

/// Adds what the run resolved from its flags (content hashes, the mask's seed and
/// the hash of its indices) to the manifest's parameters, under `resolved`.
pub fn record_identities(manifest: &mut Manifest, resolved: serde_json::Value) {
    match &mut manifest.parameters {
        serde_json::Value::Object(map) => {
            map.insert("resolved".into(), resolved);
        }
        other => {
            let flags = other.take();
            *other = serde_json::json!({ "flags": flags, "resolved": resolved });
        }
    }
}

/// The lines a probe prints about its spectrum. Each estimate's verdict comes
/// first (whether its numbers can be used and, if not, which budget to raise),
/// then the numbers: Lanczos's pairs with their residuals, power iteration's,
/// the density's quadrature trace with its spread over the probes, and Hutch++'s
/// interval. `iters` and `trace_products` name the budgets' flags (or keys).
pub fn spectrum_lines(s: &SpectrumReport, iters: &str, trace_products: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let pairs = |pairs: &[RitzPair]| {
        pairs
            .iter()
            .map(|p| {
                format!(
                    "{} ({})",
                    format_float(p.value),
                    residual_note(p.residual, p.residual_converged)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(l) = &s.lanczos {
        lines.push(format!("Lanczos verdict: {}", l.verdict.text(iters)));
        if !l.top.is_empty() {
            lines.push(format!("largest eigenvalues (Lanczos): {}", pairs(&l.top)));
        }
        if !l.bottom.is_empty() {
            lines.push(format!(
                "smallest eigenvalues (Lanczos): {}",
                pairs(&l.bottom)
            ));
        }
        if let Some(note) = &l.history_note {
            lines.push(format!("  {note}"));
        }
        lines.push(format!(
            "  {} products ({} for computed residuals, {} probing for missed multiplicities)",
            l.products, l.verification_products, l.multiplicity_probe_products
        ));
        if l.tolerance_clipped {
            lines.push(format!(
                "  --tol is below what the products' precision supports: residuals were \
                 judged against the floor {:.1e} (256 eps |H|) instead",
                l.residual_floor
            ));
        }
    }
    if let Some(p) = &s.power {
        let verdict = if p.pairs.iter().all(|q| q.residual_converged) {
            "within the tolerance".to_string()
        } else {
            format!("NOT CONVERGED: the budget ran out before the tolerance; raise {iters}")
        };
        lines.push(format!(
            "largest-magnitude eigenvalues (power): {} in {} products; {verdict}",
            pairs(&p.pairs),
            p.products
        ));
    }
    if let Some(d) = &s.density {
        let spread = match d.quadrature.trace_standard_error(|x| x) {
            Some(se) => format!(" ± {} (standard error over the probes)", format_float(se)),
            None => " (one probe: no error estimate)".to_string(),
        };
        lines.push(format!(
            "density: {} SLQ probes x {} steps ({} products); quadrature trace {}{spread}",
            d.probes,
            d.steps,
            d.products,
            format_float(d.trace_estimate)
        ));
    }
    if let Some(t) = &s.trace {
        lines.push(format!(
            "trace (Hutch++, {} products): {}",
            t.estimate.products,
            trace_text(&t.estimate, trace_products)
        ));
    }
    lines
}

/// One row per eigenvalue estimate: Lanczos's top and bottom, power's pairs.
pub fn ritz_table(spectrum: &SpectrumReport) -> Table {
    let mut rows: Vec<(&str, &str, usize, RitzPair)> = Vec::new();
    if let Some(l) = &spectrum.lanczos {
        rows.extend(
            l.top
                .iter()
                .enumerate()
                .map(|(i, p)| ("lanczos", "top", i + 1, *p)),
        );
        rows.extend(
            l.bottom
                .iter()
                .enumerate()
                .map(|(i, p)| ("lanczos", "bottom", i + 1, *p)),
        );
    }
    if let Some(p) = &spectrum.power {
        rows.extend(
            p.pairs
                .iter()
                .enumerate()
                .map(|(i, pair)| ("power", "magnitude", i + 1, *pair)),
        );
    }
    Table::new()
        .with_str("method", rows.iter().map(|r| r.0.to_string()).collect())
        .with_str("end", rows.iter().map(|r| r.1.to_string()).collect())
        .with_i64("rank", rows.iter().map(|r| r.2 as i64).collect())
        .with_f64("eigenvalue", rows.iter().map(|r| r.3.value).collect())
        .with_f64("residual", rows.iter().map(|r| r.3.residual).collect())
        .with_f64(
            "relative_residual",
            rows.iter().map(|r| r.3.relative_residual()).collect(),
        )
        .with_bool(
            "residual_converged",
            rows.iter().map(|r| r.3.residual_converged).collect(),
        )
        .with_bool("converged", rows.iter().map(|r| r.3.converged).collect())
}

fn quadrature_table(q: &crate::spectral::SlqResult) -> Table {
    let mut probe = Vec::new();
    let mut node = Vec::new();
    let mut weight = Vec::new();
    for (p, (nodes, weights)) in q.nodes.iter().zip(&q.weights).enumerate() {
        for (n, w) in nodes.iter().zip(weights) {
            probe.push(p as i64);
            node.push(*n);
            weight.push(*w);
        }
    }
    Table::new()
        .with_i64("probe", probe)
        .with_f64("node", node)
        .with_f64("weight", weight)
}

/// The histories of Lanczos (Ritz values) and power iteration (Rayleigh quotients).
fn convergence_table(spectrum: &SpectrumReport) -> Option<Table> {
    let mut method = Vec::new();
    let mut products = Vec::new();
    let mut top = Vec::new();
    let mut bottom = Vec::new();
    let mut rayleigh = Vec::new();
    let mut push = |name: &str, points: &[HistoryPoint]| {
        for p in points {
            method.push(name.to_string());
            products.push(p.products as i64);
            top.push(p.top.unwrap_or(f64::NAN));
            bottom.push(p.bottom.unwrap_or(f64::NAN));
            rayleigh.push(p.rayleigh);
        }
    };
    if let Some(l) = &spectrum.lanczos {
        push("lanczos", &l.history);
    }
    if let Some(p) = &spectrum.power {
        push("power", &p.history);
    }
    if method.is_empty() {
        return None;
    }
    Some(
        Table::new()
            .with_str("method", method)
            .with_i64("products", products)
            .with_f64("top_ritz", top)
            .with_f64("bottom_ritz", bottom)
            .with_f64("rayleigh_quotient", rayleigh),
    )
}

fn density_chart(report: &ProbeReport) -> Chart {
    let spectrum = &report.spectrum;
    let density = spectrum.density.as_ref().expect("density computed"); // invariant: only called when the density was computed.
    let mut chart = Chart::new(
        format!("Spectral density: {}", short(&report.hessian.description)),
        Axis::symlog(
            format!(
                "eigenvalue (symmetric log, linear within ±{:.2e})",
                density.linear_width
            ),
            density.linear_width,
        ),
        Axis::linear("density (per unit of the symlog coordinate)"),
    );
    let d = &density.density;
    chart.add(
        Some(&format!(
            "SLQ ({} probes x {} steps)",
            density.probes, density.steps
        )),
        0,
        SeriesData::Line(d.x.iter().copied().zip(d.density.iter().copied()).collect()),
    );
    let (lo, hi) = density.quadrature.node_range();
    let mut extremes: Vec<f64> = Vec::new();
    let mut label = "extreme SLQ nodes";
    if let Some(l) = &spectrum.lanczos {
        extremes.extend(l.top.iter().chain(&l.bottom).map(|p| p.value));
        label = "Lanczos extreme Ritz values";
    }
    if extremes.is_empty() {
        extremes = vec![lo, hi];
    }
    chart
        .add(Some(label), 3, SeriesData::VerticalLines(extremes))
        .dashed();
    chart
}

fn convergence_charts(spectrum: &SpectrumReport) -> Vec<Chart> {
    let mut estimate = Chart::new(
        "Top eigenvalue estimate against products",
        Axis::linear("Hessian-vector products"),
        Axis::linear("estimate"),
    )
    .with_legend(LegendPosition::LowerRight);
    let mut error = Chart::new(
        "Distance to the final top eigenvalue",
        Axis::linear("Hessian-vector products"),
        Axis::log("|estimate - final| / |final| (floored at 1e-12)"),
    )
    .with_legend(LegendPosition::UpperRight);
    let final_top = spectrum.lambda_max().map(|p| p.value);
    let mut add = |label: &str, color: usize, points: Vec<(f64, f64)>| {
        if points.is_empty() {
            return;
        }
        if let Some(f) = final_top {
            let gaps = points
                .iter()
                .map(|&(x, y)| (x, ((y - f).abs() / f.abs()).max(GAP_FLOOR)))
                .collect();
            error.add(Some(label), color, SeriesData::Line(gaps));
        }
        estimate.add(Some(label), color, SeriesData::Line(points));
    };
    if let Some(l) = &spectrum.lanczos {
        add(
            "Lanczos: largest Ritz value",
            0,
            l.history
                .iter()
                .filter_map(|p| p.top.map(|t| (p.products as f64, t)))
                .collect(),
        );
    }
    if let Some(p) = &spectrum.power {
        // Power iteration tracks the eigenvalue of largest magnitude: compare it
        // with the top one only when that is what it found.
        add(
            "power: Rayleigh quotient",
            1,
            p.history
                .iter()
                .map(|h| (h.products as f64, h.rayleigh))
                .collect(),
        );
    }
    if let (Some(f), Some(last)) = (
        final_top,
        estimate
            .series
            .iter()
            .filter_map(|s| match &s.data {
                SeriesData::Line(p) => p.last().map(|q| q.0),
                _ => None,
            })
            .reduce(f64::max),
    ) {
        estimate
            .add(
                Some("final largest eigenvalue"),
                7,
                SeriesData::Line(vec![(1.0, f), (last, f)]),
            )
            .dashed();
    }
    vec![estimate, error]
}

/// The description up to its first parenthesis, for figure titles.
fn short(text: &str) -> &str {
    text.split(" (").next().unwrap_or(text)
}

/// Writes unit eigenvectors as safetensors: `eigenvectors` (m x k, f64),
/// `eigenvalues` (m), `mask_idx` (k, int64: the flat index of each coordinate),
/// with the indices' and the model's SHA-256 in the metadata; the header's keys are
/// sorted, so a rerun writes the same bytes.
pub fn write_eigenvectors(path: &Path, e: &Eigenvectors) -> Result<()> {
    let (m, k) = (e.vectors.len(), e.indices.len());
    let vectors = e.vectors.iter().flatten().copied().collect();
    let indices = e.indices.iter().map(|&i| i as i64).collect();
    let tensors = [
        Tensor {
            name: EIGENVECTORS.to_string(),
            shape: vec![m, k],
            values: Values::F64(vectors),
        },
        Tensor::vector(EIGENVALUES, Values::F64(e.values.clone())),
        Tensor::vector(INDICES, Values::I64(indices)),
    ];
    let metadata = [
        ("format", "maskscape-eigenvectors".to_string()),
        ("indices_sha256", e.indices_sha256.clone()),
        ("model_sha256", e.model_sha256.clone()),
    ];
    write_tensors(path, &tensors, &metadata)
}

/// Reads a file written by [`write_eigenvectors`].
pub fn read_eigenvectors(path: &Path) -> Result<Eigenvectors> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let tensor = |name: &str, dtype: StDtype| {
        let t = file.tensor(name).map_err(|_| {
            Error::file(
                path,
                format!("no `{name}` tensor (not an eigenvector file)"),
            )
        })?;
        if t.dtype() != dtype {
            return Err(Error::file(
                path,
                format!("`{name}` must be {dtype:?}, found {:?}", t.dtype()),
            ));
        }
        Ok(t)
    };
    let vectors = tensor(EIGENVECTORS, StDtype::F64)?;
    let shape = vectors.shape().to_vec();
    if shape.len() != 2 {
        return Err(Error::file(
            path,
            format!("`{EIGENVECTORS}` must be 2-D, found {shape:?}"),
        ));
    }
    let (m, k) = (shape[0], shape[1]);
    let floats = |data: &[u8]| -> Vec<f64> {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))) // invariant: chunks_exact(8) yields 8 bytes.
            .collect()
    };
    let flat = floats(vectors.data());
    let values = floats(tensor(EIGENVALUES, StDtype::F64)?.data());
    let indices: Vec<u64> = tensor(INDICES, StDtype::I64)?
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as u64) // invariant: chunks_exact(8) yields 8 bytes.
        .collect();
    if values.len() != m || indices.len() != k {
        return Err(Error::file(
            path,
            format!(
                "{m} x {k} eigenvectors need {m} eigenvalues and {k} indices, found {} and {}",
                values.len(),
                indices.len()
            ),
        ));
    }
    Ok(Eigenvectors {
        values,
        vectors: flat.chunks(k.max(1)).take(m).map(<[f64]>::to_vec).collect(),
        indices,
        indices_sha256: meta.get("indices_sha256").cloned().unwrap_or_default(),
        model_sha256: meta.get("model_sha256").cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvector_files_are_the_same_bytes_every_time_and_read_back() {
        let e = Eigenvectors {
            values: vec![2.5, -0.75],
            vectors: vec![vec![0.6, 0.8, 0.0], vec![0.0, 0.0, -1.0]],
            indices: vec![3, 17, 40],
            indices_sha256: "ab".repeat(32),
            model_sha256: "cd".repeat(32),
        };
        let dir = tempfile::tempdir().unwrap();
        // a header written from a hash map came out in one of 3! orders per write
        let files: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let path = dir.path().join(format!("e{i}.safetensors"));
                write_eigenvectors(&path, &e).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]));
        let back = read_eigenvectors(&dir.path().join("e0.safetensors")).unwrap();
        assert_eq!(
            (back.values, back.vectors, back.indices),
            (e.values, e.vectors, e.indices)
        );
        assert_eq!(back.model_sha256, e.model_sha256);
    }
}
