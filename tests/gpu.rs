//! The CUDA backend on a GPU: PyTorch's fixtures (`maskscape verify`'s checks, with
//! the tolerances of the CPU engine), products against the CPU on OPT-125m-shaped
//! random weights, and Lanczos against the CPU on the same operator.
//!
//! Every test first asks `availability()`; without a CUDA driver, NVRTC, cuBLAS or a
//! device (as in CI) it prints why and passes without checking anything. On the GPU
//! machine these run from the prebuilt test binary (scripts/gpu-check.sh).

use std::path::{Path, PathBuf};

use maskscape::backend::cuda::availability;
use maskscape::backend::{Backend, Cpu, Cuda, Scalar};
use maskscape::mask::{Mask, MaskSpec};
use maskscape::model::bench::random_batch;
use maskscape::model::presets::preset;
use maskscape::model::{Batch, Checkpoint, Objective, Opt};
use maskscape::probe::verify::{Reference, rel_error, verify};
use maskscape::probe::{
    HessianOperator, Method, OnBackend, ProbeOptions, Restriction, SpectralBackend, probe_spectrum,
};
use maskscape::progress::Silent;
use maskscape::spectral::{LinearOperator, Which};
use rand::Rng as _;
use rand_distr::StandardNormal;

/// Fixture `name`, relative to the working directory: `cargo test` runs in the
/// repository root, and so does scripts/gpu-check.sh, on a machine where the path
/// this crate was built in (`CARGO_MANIFEST_DIR`) does not exist.
fn fixture(name: &str) -> PathBuf {
    Path::new("tests/fixtures").join(name)
}

/// The GPU, or `None` after printing why the test is skipped.
fn gpu() -> Option<Cuda> {
    if let Err(e) = availability() {
        eprintln!("skipped: no CUDA device: {e}");
        return None;
    }
    // A device that is present but cannot be opened is a failure, not a skip.
    Some(Cuda::new(0, false).unwrap())
}

fn normal<T: Scalar>(n: usize, seed: u64) -> Vec<T> {
    let mut rng = maskscape::rng::stream(seed, 0);
    (0..n)
        .map(|_| T::from_f64(rng.sample(StandardNormal)))
        .collect()
}

fn to_f64<T: Scalar>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// `maskscape verify`'s checks of fixture `name` on the GPU in `T`: every quantity
/// the fixture holds, within 1e-9 in f64 (1e-4 on derivatives, 1e-5 on values in f32).
fn check_fixture<T: Scalar>(cuda: &Cuda, name: &str)
where
    Cuda: Backend<T>,
{
    let checkpoint = Checkpoint::<T>::load(&fixture(name)).unwrap();
    let model = Opt::new(cuda.clone(), checkpoint.config, &checkpoint.params).unwrap();
    let reference = Reference::load(&fixture(name).join("reference.safetensors")).unwrap();
    let report = verify(&model, &reference, &Silent).unwrap();
    let table = report.table().to_text();
    println!("{name} {} on {}:\n{table}", T::NAME, cuda.description());
    assert!(report.passed(), "{name} in {}:\n{table}", T::NAME);
    // every quantity the fixture holds was compared
    // (the gradient is also compared at the mask, through the masked path)
    let expected = if name == "opt-small-preln" { 8 } else { 10 };
    assert_eq!(
        report.checks.iter().filter(|c| c.skipped.is_none()).count(),
        expected,
        "{name}:\n{table}"
    );
}

const FIXTURES: [&str; 3] = ["opt-tiny-preln", "opt-tiny-postln-proj", "opt-small-preln"];

#[test]
fn fixtures_match_pytorch_on_the_gpu_in_f64() {
    let Some(cuda) = gpu() else { return };
    for name in FIXTURES {
        check_fixture::<f64>(&cuda, name);
    }
}

#[test]
fn fixtures_match_pytorch_on_the_gpu_in_f32() {
    let Some(cuda) = gpu() else { return };
    for name in FIXTURES {
        check_fixture::<f32>(&cuda, name);
    }
}

/// OPT-125m's shapes with the random weights of `maskscape init` (seed 0), two
/// sequences of 32 random tokens, and the paper's q/v mask at ratio 1e-3.
struct Problem<T: Scalar> {
    checkpoint: Checkpoint<T>,
    data: [Batch; 1],
    mask: Vec<u64>,
}

fn opt_125m<T: Scalar>() -> Problem<T> {
    // invariant: opt-125m is one of the presets
    let config = preset("opt-125m").expect("opt-125m preset");
    let data = [random_batch(&config, 2, 32, 0).unwrap()];
    let checkpoint = Checkpoint::<T>::random(config, 0);
    let layout = maskscape::model::ParamLayout::new(&checkpoint.config);
    let mask = Mask::draw(&MaskSpec::paper(1e-3, 0), &layout)
        .unwrap()
        .indices()
        .to_vec();
    Problem {
        checkpoint,
        data,
        mask,
    }
}

/// The full and the masked Hessian-vector product of `problem` on `backend`.
fn products<T: Scalar, B: Backend<T>>(
    backend: B,
    problem: &Problem<T>,
    v: &[T],
    vk: &[T],
) -> (Vec<f64>, Vec<f64>) {
    let c = &problem.checkpoint;
    let model = Opt::new(backend, c.config.clone(), &c.params).unwrap();
    let mut objective = Objective::new(&model, &problem.data).unwrap();
    objective.set_mask(&problem.mask).unwrap();
    let hvp = objective.hvp(v).unwrap();
    let masked = objective.masked_hvp(vk).unwrap();
    (to_f64(&hvp), to_f64(&masked))
}

/// GPU against CPU in `T` on OPT-125m: full and masked products within `tol`.
fn gpu_matches_cpu<T: Scalar>(tol: f64)
where
    Cpu: Backend<T>,
    Cuda: Backend<T>,
{
    let Some(cuda) = gpu() else { return };
    let problem = opt_125m::<T>();
    let v = normal::<T>(problem.checkpoint.params.len(), 1);
    let vk = normal::<T>(problem.mask.len(), 2);
    let (cpu_hvp, cpu_masked) = products(Cpu, &problem, &v, &vk);
    let (gpu_hvp, gpu_masked) = products(cuda.clone(), &problem, &v, &vk);
    let (e_hvp, e_masked) = (
        rel_error(&gpu_hvp, &cpu_hvp),
        rel_error(&gpu_masked, &cpu_masked),
    );
    println!(
        "opt-125m 2 x 32 {} on {}: hvp {e_hvp:.2e}, masked hvp {e_masked:.2e} (k = {})",
        T::NAME,
        cuda.description(),
        problem.mask.len()
    );
    // Both against the same products in f64 on the same (rounded) weights and
    // vectors: says whether a gap between them is the GPU's error or the
    // problem's conditioning in T.
    let exact = Problem::<f64> {
        checkpoint: Checkpoint {
            config: problem.checkpoint.config.clone(),
            layout: problem.checkpoint.layout.clone(),
            params: to_f64(&problem.checkpoint.params),
        },
        data: problem.data.clone(),
        mask: problem.mask.clone(),
    };
    let (exact_hvp, exact_masked) = products::<f64, Cpu>(Cpu, &exact, &to_f64(&v), &to_f64(&vk));
    println!(
        "  against f64: cpu hvp {:.2e}, masked {:.2e}; gpu hvp {:.2e}, masked {:.2e}",
        rel_error(&cpu_hvp, &exact_hvp),
        rel_error(&cpu_masked, &exact_masked),
        rel_error(&gpu_hvp, &exact_hvp),
        rel_error(&gpu_masked, &exact_masked),
    );
    // The blocks where the GPU's full product departs most from the CPU's, in
    // absolute terms (relative to the whole product), with each side's departure
    // from f64.
    let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let whole = norm(&exact_hvp);
    let mut blocks: Vec<(f64, String)> = problem
        .checkpoint
        .layout
        .entries()
        .iter()
        .map(|e| {
            let r = e.range();
            let gap = |a: &[f64], b: &[f64]| {
                let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
                norm(&d) / whole
            };
            let line = format!(
                "{}: gpu-cpu {:.1e}, cpu-f64 {:.1e}, gpu-f64 {:.1e}, |block| {:.1e}",
                e.name,
                gap(&gpu_hvp[r.clone()], &cpu_hvp[r.clone()]),
                gap(&cpu_hvp[r.clone()], &exact_hvp[r.clone()]),
                gap(&gpu_hvp[r.clone()], &exact_hvp[r.clone()]),
                norm(&exact_hvp[r.clone()]) / whole,
            );
            (gap(&gpu_hvp[r.clone()], &cpu_hvp[r]), line)
        })
        .collect();
    blocks.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, line) in &blocks[..8] {
        println!("  {line}");
    }
    // No atomics on the full product's path: a second run gives the same bits.
    let (again, _) = products(cuda.clone(), &problem, &v, &vk);
    assert!(
        again == gpu_hvp,
        "the full product differs between two runs on the GPU"
    );
    assert!(e_hvp < tol, "hvp: relative error {e_hvp:.2e} >= {tol:.0e}");
    assert!(
        e_masked < tol,
        "masked hvp: relative error {e_masked:.2e} >= {tol:.0e}"
    );
}

#[test]
fn products_match_the_cpu_on_opt_125m_in_f64() {
    gpu_matches_cpu::<f64>(1e-10);
}

#[test]
fn products_match_the_cpu_on_opt_125m_in_f32() {
    gpu_matches_cpu::<f32>(1e-4);
}

/// The five largest eigenvalues of the masked Hessian from a 60-step Lanczos run
/// through the probe's operator and spectral driver, with the vectors in the
/// backend's space (device memory on the GPU).
fn top_five<B: SpectralBackend<f64>>(
    backend: B,
    checkpoint: &Checkpoint<f64>,
    data: &[Batch],
    mask: &[u64],
) -> Vec<f64> {
    let model = Opt::new(
        backend.clone(),
        checkpoint.config.clone(),
        &checkpoint.params,
    )
    .unwrap();
    let op = HessianOperator::new(&model, data, &Restriction::Indices(mask.to_vec())).unwrap();
    let space = backend.space(op.dim()).unwrap();
    let options = ProbeOptions {
        method: Method::Lanczos,
        k: 5,
        which: Which::Largest,
        iters: 60,
        // small enough that both runs take all 60 steps
        tol: 1e-14,
        ..ProbeOptions::default()
    };
    let report = probe_spectrum(&OnBackend(&op), &space, &options, &Silent).unwrap();
    // invariant: method Lanczos always yields its report
    let lanczos = report.lanczos.expect("a Lanczos report");
    lanczos.top.iter().map(|p| p.value).collect()
}

#[test]
fn lanczos_on_the_gpu_reproduces_the_cpu_top_eigenvalues() {
    let Some(cuda) = gpu() else { return };
    // OPT-mini's shapes keep the CPU's 60 products short; the operator is the
    // probe's, so the GPU's only difference is where the products run.
    // invariant: opt-mini is one of the presets
    let config = preset("opt-mini").expect("opt-mini preset");
    let data = [random_batch(&config, 2, 32, 0).unwrap()];
    let checkpoint = Checkpoint::<f64>::random(config, 0);
    let layout = maskscape::model::ParamLayout::new(&checkpoint.config);
    let mask = Mask::draw(&MaskSpec::paper(1e-2, 0), &layout).unwrap();
    let cpu = top_five(Cpu, &checkpoint, &data, mask.indices());
    let gpu = top_five(cuda.clone(), &checkpoint, &data, mask.indices());
    println!(
        "top five on {} (k = {}): cpu {cpu:?}, gpu {gpu:?}",
        cuda.description(),
        mask.len()
    );
    assert_eq!(cpu.len(), 5);
    assert_eq!(gpu.len(), 5);
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        let e = (c - g).abs() / c.abs();
        assert!(
            e < 1e-8,
            "eigenvalue {i}: cpu {c}, gpu {g}, relative {e:.1e}"
        );
    }
}

/// `|got - want| <= tol * max(scale, 1)` entry by entry.
fn assert_close(what: &str, got: &[f64], want: &[f64], scale: f64, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale.max(1.0),
            "{what}[{i}]: cuda {g} vs host {w} (tolerance {tol} x {scale})"
        );
    }
}

fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// The Hessian on device vectors against the same operator through the host
/// path (same model, same kernels: only the casts, the scatter and the gather
/// differ), on the tiny fixture, for the masked, gathered and full products;
/// and the masked product against the PyTorch fixture.
#[test]
fn hessian_on_device_vectors_matches_its_host_path() {
    use maskscape::backend::cuda::CudaSpace;
    use maskscape::probe::inputs::data_spec;
    use maskscape::probe::operator::ProductPath;
    use maskscape::probe::{DataInputs, DataRequest};
    use maskscape::spectral::{OperatorOn, VectorSpace};

    let Some(cuda) = gpu() else { return };
    let dir = fixture("opt-tiny-preln");
    let reference = Reference::load(&dir.join("reference.safetensors")).unwrap();
    let checkpoint = Checkpoint::<f64>::load(&dir).unwrap();
    let model = Opt::new(cuda.clone(), checkpoint.config.clone(), &checkpoint.params).unwrap();
    let spec = data_spec(
        &dir.join("reference.safetensors"),
        None,
        None,
        None,
        &[],
        None,
        0,
    );
    let request = DataRequest {
        spec: spec.unwrap(),
        tokenizer: None,
        batch_rows: 8,
    };
    let data = DataInputs::load(&request, &dir, &checkpoint.config).unwrap();
    let mask: Vec<u64> = reference
        .mask_idx
        .as_ref()
        .unwrap()
        .iter()
        .map(|&i| i as u64)
        .collect();
    let v = &reference.v.as_ref().unwrap().values;
    let masked_want = &reference.hvp_masked.as_ref().unwrap().values;
    let cases = [
        (Restriction::Indices(mask.clone()), ProductPath::Masked),
        (Restriction::Indices(mask.clone()), ProductPath::Gathered),
        (Restriction::Full, ProductPath::Auto),
    ];
    for (restriction, path) in cases {
        let op = HessianOperator::with_path(&model, &data.batches, &restriction, path).unwrap();
        let n = LinearOperator::dim(&op);
        let x: Vec<f64> = match &restriction {
            Restriction::Indices(idx) => idx.iter().map(|&i| v[i as usize]).collect(),
            Restriction::Full => v.clone(),
        };
        let mut host_y = vec![0.0; n];
        op.apply(&x, &mut host_y).unwrap();
        let space = CudaSpace::new(cuda.clone(), n);
        let dx = space.upload(&x).unwrap();
        let mut dy = space.zeros().unwrap();
        op.apply_in(&space, &dx, &mut dy).unwrap();
        let device_y = space.download(&dy).unwrap();
        let what = format!("{path:?} product");
        assert_close(&what, &device_y, &host_y, max_abs(&host_y), 1e-12);
        if matches!(restriction, Restriction::Indices(_)) {
            let what = format!("{path:?} product against PyTorch");
            assert_close(&what, &device_y, masked_want, max_abs(masked_want), 1e-9);
        }
        assert_eq!(op.products(), 2, "both products counted");
    }
}

/// The masked gradient of OPT-125m shapes on the GPU against the CPU's, before
/// and after moving the masked coordinates in place (the same bits on both: an
/// add in `T` is exact rounding on either device).
fn masked_gradient_matches_cpu<T: Scalar>(tol: f64)
where
    Cpu: Backend<T>,
    Cuda: Backend<T>,
{
    let Some(cuda) = gpu() else { return };
    let problem = opt_125m::<T>();
    let delta = normal::<T>(problem.mask.len(), 3);
    fn both<T: Scalar, B: Backend<T>>(
        backend: B,
        problem: &Problem<T>,
        delta: &[T],
    ) -> (Vec<f64>, Vec<f64>, Vec<T>) {
        let c = &problem.checkpoint;
        let mut model = Opt::new(backend, c.config.clone(), &c.params).unwrap();
        let mut objective = Objective::new(&model, &problem.data).unwrap();
        objective.set_mask(&problem.mask).unwrap();
        let before = to_f64(&objective.masked_gradient().unwrap().1);
        let buffers = objective.into_buffers();
        let plan = model.mask_plan(&problem.mask).unwrap();
        model.add_at_mask(&plan, delta).unwrap();
        let moved = model.values_at_mask(&plan).unwrap();
        let mut objective = Objective::with_buffers(&model, &problem.data, buffers).unwrap();
        let after = to_f64(&objective.masked_gradient().unwrap().1);
        (before, after, moved)
    }
    let (cpu_before, cpu_after, cpu_moved) = both(Cpu, &problem, &delta);
    let (gpu_before, gpu_after, gpu_moved) = both(cuda.clone(), &problem, &delta);
    let (e_before, e_after) = (
        rel_error(&gpu_before, &cpu_before),
        rel_error(&gpu_after, &cpu_after),
    );
    println!(
        "opt-125m 2 x 32 {} masked gradient on {}: {e_before:.2e}, after a move {e_after:.2e}",
        T::NAME,
        cuda.description()
    );
    assert!(gpu_moved == cpu_moved, "the moved coordinates differ");
    assert!(
        e_before < tol,
        "masked gradient: {e_before:.2e} >= {tol:.0e}"
    );
    assert!(e_after < tol, "after the move: {e_after:.2e} >= {tol:.0e}");
}

#[test]
fn masked_gradient_matches_the_cpu_on_opt_125m_in_f64() {
    masked_gradient_matches_cpu::<f64>(1e-10);
}

#[test]
fn masked_gradient_matches_the_cpu_on_opt_125m_in_f32() {
    masked_gradient_matches_cpu::<f32>(1e-4);
}

/// Recomputing the blocks' activations on the GPU gives the stored path's
/// products: bit for bit when the forward kernels are deterministic, and within
/// 1e-14 in f64 in any case (OPT-125m shapes, full and masked HVP, gradient).
#[test]
fn recomputing_matches_storing_on_the_gpu_in_f64() {
    let Some(cuda) = gpu() else { return };
    let problem = opt_125m::<f64>();
    let c = &problem.checkpoint;
    let model = Opt::new(cuda, c.config.clone(), &c.params).unwrap();
    let n = model.num_params();
    let (v, vk) = (normal::<f64>(n, 1), normal::<f64>(problem.mask.len(), 2));
    let run = |memory: maskscape::model::Memory| {
        let mut objective = Objective::new(&model, &problem.data).unwrap();
        objective.set_memory(memory);
        objective.set_mask(&problem.mask).unwrap();
        let r = objective.loss_gradient_hvp(&v).unwrap();
        let masked = objective.masked_hvp(&vk).unwrap();
        let (_, masked_grad) = objective.masked_gradient().unwrap();
        (r, masked, masked_grad)
    };
    let stored = run(maskscape::model::Memory::Stored);
    let recomputed = run(maskscape::model::Memory::Recompute);
    let identical = stored.0.hvp == recomputed.0.hvp && stored.1 == recomputed.1;
    println!("recomputed on the GPU: bit-identical products: {identical}");
    assert!(rel_error(&stored.0.hvp, &recomputed.0.hvp) <= 1e-14);
    assert!(rel_error(&stored.0.gradient, &recomputed.0.gradient) <= 1e-14);
    assert!(rel_error(&stored.1, &recomputed.1) <= 1e-14);
    assert!(rel_error(&stored.2, &recomputed.2) <= 1e-14);
    assert!((stored.0.loss - recomputed.0.loss).abs() <= 1e-14 * stored.0.loss.abs());
}
