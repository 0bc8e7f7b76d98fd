//! The probe library against PyTorch's float64 fixtures and hand computations:
//! masked and full spectra and traces, the classification loss and accuracy on a
//! hand-computed two-example case, the landscape's quadratic model, and a sweep
//! that resumes after an interruption without recomputing finished cells.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use maskscape::backend::Cpu;
use maskscape::data::{ClassificationExample, Dataset};
use maskscape::model::batch::{IGNORE_LABEL, Padding, batches};
use maskscape::model::{Batch, Checkpoint, Memory, Objective, Opt, Targets, TokenBatch};
use maskscape::probe::inputs::data_spec;
use maskscape::probe::operator::ProductPath;
use maskscape::probe::sweep::{CellRecord, CheckpointEntry};
use maskscape::probe::verify::Reference;
use maskscape::probe::{
    DataRequest, Device, DirectionKind, Dtype, GpuOptions, HessianChoice, HessianOperator,
    LandscapeOptions, LandscapeRequest, Method, ProbeOptions, ProbeRequest, Regime, Restriction,
    SweepSpec, evaluate, probe_spectrum, run_landscape, run_probe, run_sweep,
};
use maskscape::progress::{Progress, Silent};
use maskscape::report::Manifest;
use maskscape::spectral::{HostSpace, LinearOperator, Which};

use common::fixture;

fn tiny() -> PathBuf {
    fixture("opt-tiny-preln")
}

fn reference() -> Reference {
    Reference::load(&tiny().join("reference.safetensors")).unwrap()
}

/// The fixture's own rows as tokenized data, one batch.
fn tokenized_request() -> DataRequest {
    DataRequest {
        spec: data_spec(
            &tiny().join("reference.safetensors"),
            None,
            None,
            None,
            &[],
            None,
            0,
        )
        .unwrap(),
        tokenizer: None,
        batch_rows: 8,
    }
}

fn request(hessian: HessianChoice, options: ProbeOptions) -> ProbeRequest {
    ProbeRequest {
        model: tiny(),
        delta: None,
        data: tokenized_request(),
        hessian,
        options,
        dtype: Dtype::F64,
        device: Device::Cpu,
        gpu: GpuOptions::default(),
        memory: Memory::Auto,
    }
}

fn eigen_options() -> ProbeOptions {
    ProbeOptions {
        method: Method::All,
        k: 5,
        which: Which::Both,
        iters: 400,
        tol: 1e-10,
        probes: 2,
        trace_products: 90,
        ..ProbeOptions::default()
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Top-5 (descending) and bottom-5 (ascending) of an ascending spectrum.
fn ends(ascending: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = ascending.len();
    let top = ascending[n - 5..].iter().rev().copied().collect();
    (top, ascending[..5].to_vec())
}

/// Checks a probe's Lanczos ends against the exact spectrum and its Hutch++ trace
/// against the exact trace; returns the largest relative eigenvalue error.
fn check_probe(report: &maskscape::probe::ProbeReport, exact: &[f64], trace: f64) -> f64 {
    let lanczos = report.spectrum.lanczos.as_ref().unwrap();
    let (top, bottom) = ends(exact);
    let mut worst: f64 = 0.0;
    for (found, want) in lanczos.top.iter().zip(&top) {
        worst = worst.max(rel(found.value, *want));
        assert!(found.converged, "{found:?}");
    }
    for (found, want) in lanczos.bottom.iter().zip(&bottom) {
        worst = worst.max(rel(found.value, *want));
    }
    assert_eq!(lanczos.top.len(), 5);
    assert_eq!(lanczos.bottom.len(), 5);
    assert!(worst < 1e-8, "largest relative error {worst:e}");
    let t = report.spectrum.trace.as_ref().unwrap();
    let (lo, hi) = t.interval95;
    println!(
        "trace: Hutch++ {} ± {} (95% {lo} to {hi}), exact {trace}",
        t.estimate.estimate, t.estimate.standard_error
    );
    assert!(lo <= trace && trace <= hi, "{lo} .. {hi} misses {trace}");
    assert!((t.estimate.estimate - trace).abs() <= 2.5 * t.estimate.standard_error);
    worst
}

#[test]
fn masked_probe_matches_the_fixture_spectrum_and_trace() {
    let r = reference();
    let exact = r.masked_hessian_eigs.as_ref().unwrap().values.clone();
    let trace = r.masked_hessian_trace.as_ref().unwrap().values[0];
    let run = run_probe(
        &request(
            HessianChoice::File {
                path: tiny().join("reference.safetensors"),
            },
            eigen_options(),
        ),
        Manifest::new("test", Some(0), &()).unwrap(),
        &Silent,
    )
    .unwrap();
    let worst = check_probe(&run.report, &exact, trace);
    println!(
        "masked (k = {}): worst relative eigenvalue error {worst:.2e}, {} HVPs",
        run.report.hessian.dim, run.report.hvps
    );
    assert_eq!(run.report.hessian.dim, 168);
    // The loss of the probe is the fixture's loss.
    let loss = r.loss.as_ref().unwrap().values[0];
    assert!(rel(run.report.evaluation.loss, loss) < 1e-12);
    assert_eq!(run.report.evaluation.regime, Regime::NearUniform);
    // Every product went through the operator's counter.
    let s = &run.report.spectrum;
    let counted = s.lanczos.as_ref().unwrap().products
        + s.power.as_ref().unwrap().products
        + s.density.as_ref().unwrap().products
        + s.trace.as_ref().unwrap().estimate.products;
    assert_eq!(run.report.hvps, counted);
}

#[test]
fn full_probe_matches_the_fixture_spectrum_and_trace() {
    let r = reference();
    let exact = r.full_hessian_eigs.as_ref().unwrap().values.clone();
    let trace = r.full_hessian_trace.as_ref().unwrap().values[0];
    let options = ProbeOptions {
        method: Method::Lanczos,
        ..eigen_options()
    };
    let run = run_probe(
        &request(HessianChoice::Full, options),
        Manifest::new("test", Some(0), &()).unwrap(),
        &Silent,
    )
    .unwrap();
    assert_eq!(run.report.hessian.dim, 1680);
    assert!(run.report.spectrum.trace.is_none());
    // The trace of the full Hessian by Hutch++ on the same operator.
    let trace_run = run_probe(
        &request(
            HessianChoice::Full,
            ProbeOptions {
                method: Method::Trace,
                trace_products: 300,
                ..eigen_options()
            },
        ),
        Manifest::new("test", Some(0), &()).unwrap(),
        &Silent,
    )
    .unwrap();
    let mut report = run.report.clone();
    report.spectrum.trace = trace_run.report.spectrum.trace.clone();
    let worst = check_probe(&report, &exact, trace);
    println!(
        "full (N = 1680): worst relative eigenvalue error {worst:.2e} in {} HVPs",
        run.report.hvps
    );
}

#[test]
fn masked_and_gathered_products_agree_on_the_fixture_mask() {
    let r = reference();
    let checkpoint = Checkpoint::<f64>::load(&tiny()).unwrap();
    let model = Opt::new(Cpu, checkpoint.config.clone(), &checkpoint.params).unwrap();
    let data =
        maskscape::probe::DataInputs::load(&tokenized_request(), &tiny(), &checkpoint.config)
            .unwrap();
    let mask: Vec<u64> = r
        .mask_idx
        .as_ref()
        .unwrap()
        .iter()
        .map(|&i| i as u64)
        .collect();
    let restriction = Restriction::Indices(mask.clone());
    let masked =
        HessianOperator::with_path(&model, &data.batches, &restriction, ProductPath::Masked)
            .unwrap();
    let gathered =
        HessianOperator::with_path(&model, &data.batches, &restriction, ProductPath::Gathered)
            .unwrap();
    // The fixture's masked product, through both paths.
    let v = r.v.as_ref().unwrap();
    let x: Vec<f64> = mask.iter().map(|&i| v.values[i as usize]).collect();
    let want = &r.hvp_masked.as_ref().unwrap().values;
    for op in [&masked, &gathered] {
        let mut y = vec![0.0; x.len()];
        let scalars = op.apply_with_scalars(&x, &mut y).unwrap();
        let err = maskscape::probe::verify::rel_error(&y, want);
        assert!(err < 1e-11, "{err:e}");
        // g · (P^T x) from the same sweep equals the gradient's dot product.
        let grad = &r.grad.as_ref().unwrap().values;
        let g_dot: f64 = mask
            .iter()
            .zip(&x)
            .map(|(&i, xi)| grad[i as usize] * xi)
            .sum();
        assert!(rel(scalars.loss_dot, g_dot) < 1e-11);
    }
    // Lanczos through the engine's masked path finds the fixture's extremes too.
    let options = ProbeOptions {
        method: Method::Lanczos,
        ..eigen_options()
    };
    let before = masked.products();
    let space = HostSpace::new(masked.dim());
    let spectrum = probe_spectrum(&masked, &space, &options, &Silent).unwrap();
    let exact = &r.masked_hessian_eigs.as_ref().unwrap().values;
    let top = spectrum.lambda_max().unwrap().value;
    let bottom = spectrum.lambda_min().unwrap().value;
    assert!(rel(top, exact[exact.len() - 1]) < 1e-8);
    assert!(rel(bottom, exact[0]) < 1e-8);
    assert_eq!(
        masked.products() - before,
        spectrum.lanczos.unwrap().products
    );
}

/// log softmax(z)[t], written out.
fn log_prob(z: &[f64], t: usize) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = z.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
    z[t] - log_sum
}

#[test]
fn classification_loss_and_accuracy_by_hand_on_two_examples() {
    let checkpoint = Checkpoint::<f64>::load(&tiny()).unwrap();
    let config = checkpoint.config.clone();
    let vocab = config.vocab_size;
    let model = Opt::new(Cpu, config.clone(), &checkpoint.params).unwrap();
    // Two questions with two candidates each; one candidate has two tokens, so its
    // score is a mean over two log-probabilities.
    let examples = vec![
        ClassificationExample {
            prompt: vec![2, 5, 9, 11],
            candidates: vec![vec![7], vec![13, 4]],
            gold: 1,
        },
        ClassificationExample {
            prompt: vec![2, 20, 3, 8, 30],
            candidates: vec![vec![7], vec![13, 4]],
            gold: 0,
        },
    ];

    // By hand: each candidate sequence alone through a forward pass, its logits
    // read back, and the candidate's score s = mean_t log p(token_t | prefix).
    let mut scores = Vec::new();
    for e in &examples {
        let mut per_candidate = Vec::new();
        for c in 0..e.candidates.len() {
            let ids = e.sequence(c);
            let mut labels = vec![IGNORE_LABEL; ids.len()];
            labels[ids.len() - 1] = i64::from(ids[ids.len() - 1]);
            let alone = Batch {
                tokens: TokenBatch::unpadded(1, ids.len(), ids.clone()),
                targets: Targets::NextToken { labels },
            };
            let logits = Objective::new(&model, &[alone]).unwrap().logits(0).unwrap();
            let positions = e.candidate_positions(c);
            let lps: Vec<f64> = positions
                .clone()
                .map(|t| log_prob(&logits[(t - 1) * vocab..t * vocab], ids[t] as usize))
                .collect();
            let s = lps.iter().sum::<f64>() / lps.len() as f64;
            println!(
                "candidate {:?}: log-probabilities {lps:?}, score {s}",
                e.candidates[c]
            );
            per_candidate.push(s);
        }
        scores.push(per_candidate);
    }
    // Cross-entropy over the candidates' scores, gold as target, averaged.
    let per_example: Vec<f64> = scores
        .iter()
        .zip(&examples)
        .map(|(s, e)| {
            let log_z = (s[0].exp() + s[1].exp()).ln();
            log_z - s[e.gold]
        })
        .collect();
    let expected_loss = 0.5 * (per_example[0] + per_example[1]);
    let correct = scores
        .iter()
        .zip(&examples)
        .filter(|(s, e)| (if s[1] > s[0] { 1 } else { 0 }) == e.gold)
        .count();
    println!(
        "CE per example {per_example:?}, loss = ({} + {}) / 2 = {expected_loss}; {correct} of 2 correct",
        per_example[0], per_example[1]
    );

    // The engine, through the packed, padded batch the probes use.
    let data = batches(
        &Dataset::Classification(examples.clone()),
        4,
        config.pad_token_id,
        Padding::Right,
    )
    .unwrap();
    assert_eq!(data.len(), 1);
    let op = HessianOperator::new(&model, &data, &Restriction::Full).unwrap();
    let evaluation = op
        .with_objective(|o| evaluate(o, &data, &Silent))
        .unwrap()
        .unwrap();
    assert!(
        (evaluation.loss - expected_loss).abs() < 1e-12,
        "{} vs {expected_loss}",
        evaluation.loss
    );
    let accuracy = evaluation.accuracy.unwrap();
    assert_eq!((accuracy.correct, accuracy.total), (correct, 2));
    assert_eq!(accuracy.majority_rate, 0.5);
    assert!((evaluation.uniform_loss - 2f64.ln()).abs() < 1e-15);
    // The loss a Hessian-vector product reports is the same number.
    let mut y = vec![0.0; op.dim()];
    let x = vec![0.0; op.dim()];
    let scalars = op.apply_with_scalars(&x, &mut y).unwrap();
    assert!((scalars.loss - expected_loss).abs() < 1e-12);
    // Batching does not change it: one example per batch.
    let split = batches(
        &Dataset::Classification(examples),
        2,
        config.pad_token_id,
        Padding::Right,
    )
    .unwrap();
    assert_eq!(split.len(), 2);
    let op = HessianOperator::new(&model, &split, &Restriction::Full).unwrap();
    let evaluation = op
        .with_objective(|o| evaluate(o, &split, &Silent))
        .unwrap()
        .unwrap();
    assert!((evaluation.loss - expected_loss).abs() < 1e-12);
}

#[test]
fn landscape_matches_its_quadratic_model_near_the_checkpoint() {
    let r = reference();
    let landscape = |directions: DirectionKind, span: f64| {
        run_landscape(
            &LandscapeRequest {
                model: tiny(),
                delta: None,
                data: tokenized_request(),
                hessian: HessianChoice::File {
                    path: tiny().join("reference.safetensors"),
                },
                options: LandscapeOptions {
                    directions,
                    span,
                    points: 5,
                    ..LandscapeOptions::default()
                },
                dtype: Dtype::F64,
                device: Device::Cpu,
                gpu: GpuOptions::default(),
                memory: Memory::Recompute,
            },
            Manifest::new("test", Some(0), &()).unwrap(),
            &Silent,
        )
        .unwrap()
        .landscape
    };
    // Along the unit masked gradient g/|g|: slope |g_mask|; the loss agrees with
    // its quadratic model to third order in the step. (Steps of 1e-3 already cross
    // ReLU kinks, where the exact Hessian of one linear region stops describing
    // the loss: the span stays below them.)
    let l = landscape(DirectionKind::Gradient, 1e-4);
    let grad = &r.grad.as_ref().unwrap().values;
    let g_norm: f64 = r
        .mask_idx
        .as_ref()
        .unwrap()
        .iter()
        .map(|&i| grad[i as usize].powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(rel(l.directions[0].slope, g_norm) < 1e-10);
    assert!(rel(l.base_loss, r.loss.as_ref().unwrap().values[0]) < 1e-12);
    assert!(
        rel(l.loss[2], l.base_loss) < 1e-14,
        "grid point 2 is the checkpoint"
    );
    for (measured, model) in l.loss.iter().zip(&l.quadratic) {
        assert!((measured - model).abs() < 1e-11, "{measured} vs {model}");
    }
    // Along the top eigenvector the curvature is the top masked eigenvalue.
    let l = landscape(DirectionKind::TopEigen, 1e-3);
    let exact = &r.masked_hessian_eigs.as_ref().unwrap().values;
    assert!(rel(l.directions[0].rayleigh_quotient, exact[exact.len() - 1]) < 1e-8);
    // Random directions are normalized per weight matrix: norm = |θ_mask|.
    let l = landscape(DirectionKind::Random, 1e-3);
    let params = Checkpoint::<f64>::load(&tiny()).unwrap().params;
    let theta: f64 = r
        .mask_idx
        .as_ref()
        .unwrap()
        .iter()
        .map(|&i| params[i as usize].powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(rel(l.directions[0].norm, theta) < 1e-12);
}

/// Cancels once `limit` cells have been reported finished.
struct StopAfter {
    done: AtomicU64,
    limit: u64,
}

impl Progress for StopAfter {
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
    }
    fn is_cancelled(&self) -> bool {
        self.done.load(Ordering::SeqCst) >= self.limit
    }
}

fn cell_files(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let meta = std::fs::metadata(&p).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            (p, meta.modified().unwrap(), bytes)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[test]
fn interrupted_sweep_resumes_without_recomputing_finished_cells() {
    let spec = SweepSpec {
        checkpoints: vec![CheckpointEntry {
            name: "tiny".into(),
            path: tiny(),
            delta: None,
        }],
        data: tiny().join("reference.safetensors"),
        ratios: vec![0.12, 0.06],
        seeds: vec![0, 1],
        iters: 60,
        tol: 1e-8,
        trace_products: 12,
        scope_iters: 80,
        scope_trace_products: 30,
        ..SweepSpec::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cells");
    let stop = StopAfter {
        done: AtomicU64::new(0),
        limit: 2,
    };
    let err = run_sweep(&spec, &cache, &stop).err().unwrap();
    assert_eq!(err.to_string(), "cancelled");
    let first = cell_files(&cache.join("tiny"));
    let names: Vec<String> = first
        .iter()
        .map(|f| f.0.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ratio-1.2e-1-seed-0.json", "scope.json"]);
    assert!(
        std::fs::read_dir(cache.join("tiny")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".maskscape")),
        "no temporary file is left behind"
    );
    // Let the clock move, so a rewrite would show in the modification times.
    std::thread::sleep(std::time::Duration::from_millis(50));

    let resumed = run_sweep(&spec, &cache, &Silent).unwrap();
    assert_eq!((resumed.computed, resumed.cached), (3, 2));
    let after = cell_files(&cache.join("tiny"));
    assert_eq!(after.len(), 5);
    for (path, modified, bytes) in &first {
        let (_, now, now_bytes) = after.iter().find(|f| &f.0 == path).unwrap();
        assert_eq!(modified, now, "{} was rewritten", path.display());
        assert_eq!(bytes, now_bytes);
    }
    // The rerun's products are exactly those of the three new cells.
    let new_hvps: u64 = after
        .iter()
        .filter(|f| !first.iter().any(|g| g.0 == f.0))
        .map(|f| serde_json::from_slice::<CellRecord>(&f.2).unwrap().hvps)
        .sum();
    assert!(new_hvps > 0);
    assert_eq!(resumed.hvps_this_run, new_hvps);

    // A complete rerun computes nothing; a fresh run gives the same numbers.
    let again = run_sweep(&spec, &cache, &Silent).unwrap();
    assert_eq!(
        (again.computed, again.cached, again.hvps_this_run),
        (0, 5, 0)
    );
    let fresh = run_sweep(&spec, &dir.path().join("fresh"), &Silent).unwrap();
    let values = |r: &maskscape::probe::SweepResult| -> Vec<f64> {
        r.cells
            .iter()
            .chain(&r.scopes)
            .flat_map(|c| [c.lambda_max.value, c.trace.estimate])
            .collect()
    };
    assert_eq!(values(&fresh), values(&resumed));

    // Interlacing: no mask's top eigenvalue exceeds the whole scope's.
    let ceiling = resumed.scopes[0].lambda_max;
    for c in &resumed.cells {
        assert!(c.lambda_max.value <= ceiling.value + ceiling.residual + c.lambda_max.residual);
    }
    // A changed setting changes the keys: every cell is recomputed.
    let changed = SweepSpec { tol: 1e-9, ..spec };
    let redo = run_sweep(&changed, &cache, &Silent).unwrap();
    assert_eq!((redo.computed, redo.cached), (5, 0));
}

#[test]
fn cancelling_between_products_stops_the_probe() {
    // Cancel once the progress bar has seen 10 products: the run returns
    // `Cancelled` (so the command line writes nothing) instead of a partial report.
    let stop = StopAfter {
        done: AtomicU64::new(0),
        limit: 10,
    };
    let err = run_probe(
        &request(
            HessianChoice::File {
                path: tiny().join("reference.safetensors"),
            },
            eigen_options(),
        ),
        Manifest::new("test", Some(0), &()).unwrap(),
        &stop,
    )
    .err()
    .unwrap();
    assert_eq!(err.to_string(), "cancelled");
    assert_eq!(stop.done.load(Ordering::SeqCst), 10);
}
