//! `maskscape bench <area>`: timed workloads, one subcommand per area.

use std::path::PathBuf;
use std::time::Instant;

use super::BarProgress;
use crate::backend::{Backend, Scalar};
use crate::cli::MemoryArgs;
use crate::cli::theory::with_threads;
use crate::experiment::{ReproduceOptions, reproduce};
use crate::mask::{Mask, MaskSpec, RatioOf, Sampling, Scope, Structure};
use crate::model::batch::padded_batch;
use crate::model::bench::{
    HvpBenchOptions, Phase, PhaseTimes, bench_footprint, bench_hvp, random_batch,
};
use crate::model::memory::gb;
use crate::model::{Batch, Checkpoint, Memory, Opt, ParamLayout};
use crate::probe::inputs::data_spec;
use crate::probe::{BackendJob, DataInputs, DataRequest, Device, Dtype, Engine, GpuOptions};
use crate::progress::Silent;
use crate::report::Table;
use crate::spectral::bench::{LanczosBench, lanczos_overhead};
use crate::theory::{Part, Ratios, SweepSpec, run_sweep};
use crate::train::OptimizerSettings;
use crate::train::bench::bench_train_step;

/// The benchmark groups.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The theory lab: the n=200, d=20000 eigenvalue sweep (target < 20 s) and the
    /// theory specs of `reproduce` (target < 120 s).
    Theory(TheoryBenchArgs),
    /// Exact derivatives of OPT: forward, gradient, masked gradient, full and masked
    /// HVP of a random model on random tokens.
    Hvp(HvpArgs),
    /// One masked AdamW training step of a random model on the first examples of a
    /// dataset, and its masked gradient alone, against one forward's products F.
    Train(TrainBenchArgs),
    /// The spectral toolkit: time per product spent outside the operator by the
    /// Lanczos modes at large dimensions (full reorthogonalization where its basis
    /// fits in memory, and the memory-bounded mode in f64 and f32), and the vector
    /// passes per product.
    Spectral(SpectralBenchArgs),
}

/// Flags of `maskscape bench theory`.
#[derive(clap::Args)]
pub struct TheoryBenchArgs {
    /// Timed repetitions of each workload (the best and the median are reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Folder of experiment specs for the reproduce workload.
    #[arg(long, default_value = "experiments")]
    experiments: std::path::PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs the chosen benchmark group and prints its timings.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Theory(args) => theory(args),
        BenchCommand::Hvp(args) => hvp(args),
        BenchCommand::Train(args) => train(args),
        BenchCommand::Spectral(args) => spectral(args),
    }
}

/// One timed workload: name, target seconds, and the work.
struct Workload<'a> {
    name: &'a str,
    target_s: f64,
    work: Box<dyn Fn() -> crate::Result<()> + Sync + 'a>,
}

fn theory(args: TheoryBenchArgs) -> anyhow::Result<()> {
    if args.repeats == 0 {
        return Err(crate::Error::arg("--repeats", "must be at least 1").into());
    }
    let eigen_sweep = SweepSpec {
        part: Part::Eigen,
        n: vec![200],
        d: vec![20_000],
        ratios: Ratios::LogGrid {
            from: 1.0,
            to: 0.01,
            points: 10,
        },
        trials: 20,
        ..SweepSpec::default()
    };
    let scratch = tempfile::tempdir()?;
    let reproduce_options = ReproduceOptions {
        experiments: args.experiments.clone(),
        figures: scratch.path().join("figures"),
        analysis: scratch.path().join("analysis"),
        kinds: Some(vec!["theory".to_string()]),
    };
    let workloads = [
        Workload {
            name: "eigen sweep n=200 d=20000, 10 ratios x 20 trials",
            target_s: 20.0,
            work: Box::new(|| run_sweep(&eigen_sweep, &Silent).map(|_| ())),
        },
        Workload {
            name: "reproduce (theory specs)",
            target_s: 120.0,
            work: Box::new(|| reproduce(&reproduce_options, &Silent).map(|_| ())),
        },
    ];
    let threads = with_threads(args.threads, rayon::current_num_threads)?;
    let mut names = Vec::new();
    let (mut best, mut median, mut target, mut pass) = (vec![], vec![], vec![], vec![]);
    for workload in &workloads {
        let mut seconds = Vec::new();
        for _ in 0..args.repeats {
            let start = Instant::now();
            with_threads(args.threads, || (workload.work)())??;
            seconds.push(start.elapsed().as_secs_f64());
        }
        seconds.sort_by(f64::total_cmp);
        eprintln!("{}: {:?} s", workload.name, seconds);
        names.push(workload.name.to_string());
        best.push(seconds[0]);
        median.push(seconds[seconds.len() / 2]);
        target.push(workload.target_s);
        pass.push(seconds[seconds.len() / 2] < workload.target_s);
    }
    let table = Table::new()
        .with_str("workload", names)
        .with_f64("best_s", best)
        .with_f64("median_s", median)
        .with_f64("target_s", target)
        .with_bool("median_under_target", pass);
    println!(
        "theory benchmarks ({threads} threads, {} repeats)",
        args.repeats
    );
    print!("{}", table.to_text());
    Ok(())
}

/// Flags of `maskscape bench hvp`.
#[derive(clap::Args, Debug)]
pub struct HvpArgs {
    /// A preset (opt-mini, opt-125m, ..., opt-13b) or the path of an OPT config.json.
    #[arg(long, default_value = "opt-mini")]
    config: String,
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    seq: usize,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// The masked product's scope.
    #[arg(long, value_enum, default_value = "qv")]
    mask_scope: Scope,
    /// The mask's trainable ratio, as a fraction of all parameters (the paper's).
    #[arg(long, default_value_t = 1e-3)]
    ratio: f64,
    /// Where the engine runs; on a GPU every phase ends by waiting for the device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    gpu: GpuOptions,
    /// Timed repetitions per phase (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seed of the weights, tokens, mask and probe vectors.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The phases to time, comma separated (only their vectors are allocated:
    /// a full HVP holds two N-vectors beside the weights, the gradient one).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Phase::ALL)]
    phases: Vec<Phase>,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Also time F right before every timed run, and give each phase in units of F
    /// as the median of its runs' ratios to them: on a shared machine the drift
    /// between phases cancels.
    #[arg(long)]
    paired_floor: bool,
}

fn hvp(args: HvpArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.seq == 0 {
        return Err(
            crate::Error::arg("--batch/--seq", "need at least one sequence of one token").into(),
        );
    }
    let engine = Engine::open(args.device, args.gpu)?;
    Ok(engine.run(
        args.dtype,
        HvpBench {
            args: &args,
            device: engine.describe(),
        },
    )?)
}

/// `bench hvp` on the backend the engine opened.
struct HvpBench<'a> {
    args: &'a HvpArgs,
    /// The device as the header line names it.
    device: String,
}

impl BackendJob for HvpBench<'_> {
    type Output = ();

    fn run<T: Scalar, B: Backend<T> + Clone>(self, backend: B) -> crate::Result<()> {
        hvp_on::<T, B>(backend, self.args, &self.device)
    }
}

fn hvp_on<T: Scalar, B: Backend<T>>(backend: B, args: &HvpArgs, device: &str) -> crate::Result<()> {
    let config = super::init::resolve_config(&args.config)?;
    let layout = ParamLayout::new(&config);
    let mask = bench_mask(args.mask_scope, args.ratio, args.seed, &layout)?;
    let data = [random_batch(&config, args.batch, args.seq, args.seed)?];
    // decided before the weights exist: refused here when it cannot fit
    let mut phases = args.phases.clone();
    phases.dedup();
    let footprint = bench_footprint(
        &config,
        std::mem::size_of::<T>(),
        &data,
        mask.len(),
        &phases,
        args.paired_floor,
    );
    let free = backend.available_memory();
    let memory = footprint.choose_on(&backend, args.memory.mode())?;
    let Checkpoint { config, params, .. } = Checkpoint::<T>::random(config, args.seed);
    let model = Opt::from_vec(backend, config, params)?;
    println!(
        "{}: {} parameters, {} x {} tokens, {}, {} mask of ratio {} (k = {}), {device}, median of {} after {} warm-up",
        args.config,
        layout.total(),
        args.batch,
        args.seq,
        T::NAME,
        args.mask_scope.name(),
        args.ratio,
        mask.len(),
        args.reps,
        args.warmup
    );
    println!(
        "memory: {}; {} free: {} (--memory {})",
        footprint.describe(),
        free.map_or("unknown".to_string(), gb),
        match memory {
            Memory::Recompute => "recomputing",
            _ => "storing",
        },
        args.memory.mode().name()
    );
    let progress = super::BarProgress::new();
    let options = HvpBenchOptions {
        phases,
        memory,
        reps: args.reps,
        warmup: args.warmup,
        seed: args.seed,
        paired_floor: args.paired_floor,
    };
    let bench = bench_hvp(&model, &data, mask.indices(), &options, &progress)?;
    drop(progress);
    let rows: Vec<&PhaseTimes> = bench.phases.iter().chain([&bench.floor]).collect();
    print_phases(&rows, |p| bench.in_floor_units(p));
    println!(
        "F: one forward's matrix products back to back, {:.2} GFLOP at {:.0} GFLOP/s \
         (a full HVP needs about 8 F of products, a masked one about 4 F)",
        bench.floor_flops / 1e9,
        bench.floor_gflops()
    );
    if args.paired_floor {
        println!(
            "in_F: each phase's median ratio of a run to the F timed right before it \
             (--paired-floor)"
        );
    }
    Ok(())
}

/// The benchmarks' mask: Bernoulli elements of `scope`, `ratio` of all parameters.
fn bench_mask(scope: Scope, ratio: f64, seed: u64, layout: &ParamLayout) -> crate::Result<Mask> {
    let spec = MaskSpec {
        scope,
        ratio,
        ratio_of: RatioOf::Total,
        sampling: Sampling::Bernoulli,
        structure: Structure::Elements,
        seed,
    };
    Mask::draw(&spec, layout)
}

/// Flags of `maskscape bench train`.
#[derive(clap::Args, Debug)]
pub struct TrainBenchArgs {
    /// A preset (opt-mini, opt-125m, ...) or the path of an OPT config.json (random
    /// weights from --seed).
    #[arg(long, default_value = "opt-125m")]
    config: String,
    /// The examples: the first --examples of this file, tokenized by --tokenizer.
    #[arg(long, default_value = "bundled/sst2-mini/train.jsonl")]
    data: PathBuf,
    #[arg(long, default_value = "sst2")]
    task: String,
    #[arg(long, default_value = "bundled/opt-bundled")]
    tokenizer: PathBuf,
    /// Examples in the step's batch.
    #[arg(long, default_value_t = 8)]
    examples: usize,
    #[arg(long, value_enum, default_value = "qv")]
    mask_scope: Scope,
    /// The mask's trainable ratio, as a fraction of all parameters.
    #[arg(long, default_value_t = 1e-3)]
    ratio: f64,
    /// AdamW's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    gpu: GpuOptions,
    #[arg(long, default_value_t = 5)]
    reps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the batch (token ids, answer positions, gold candidates) and the
    /// mask here, for PyTorch's benchmark of the same step
    /// (scripts/torch_train_step_bench.py).
    #[arg(long, value_name = "FILE")]
    dump_batch: Option<PathBuf>,
}

fn train(args: TrainBenchArgs) -> anyhow::Result<()> {
    if args.examples == 0 {
        return Err(crate::Error::arg("--examples", "must be at least 1").into());
    }
    let engine = Engine::open(args.device, args.gpu)?;
    Ok(engine.run(
        args.dtype,
        TrainBenchJob {
            args: &args,
            device: engine.describe(),
        },
    )?)
}

/// `bench train` on the backend the engine opened.
struct TrainBenchJob<'a> {
    args: &'a TrainBenchArgs,
    device: String,
}

impl BackendJob for TrainBenchJob<'_> {
    type Output = ();

    fn run<T: Scalar, B: Backend<T> + Clone>(self, backend: B) -> crate::Result<()> {
        let args = self.args;
        let config = super::init::resolve_config(&args.config)?;
        let layout = ParamLayout::new(&config);
        let mask = bench_mask(args.mask_scope, args.ratio, args.seed, &layout)?;
        let request = DataRequest {
            spec: data_spec(&args.data, Some(&args.task), None, None, &[], None, 0)?,
            tokenizer: Some(args.tokenizer.clone()),
            batch_rows: usize::MAX,
        };
        let data = DataInputs::load(&request, &args.tokenizer, &config)?;
        let n = args.examples.min(data.examples());
        let head: Vec<usize> = (0..n).collect();
        let batch = padded_batch(&data.loaded.dataset.select(&head), config.pad_token_id, 0);
        if let Some(path) = &args.dump_batch {
            dump_batch(path, &batch, mask.indices())?;
        }
        let Checkpoint { config, params, .. } = Checkpoint::<T>::random(config, args.seed);
        let model = Opt::new(backend, config, &params)?;
        drop(params);
        println!(
            "{}: {} parameters, {} examples ({} sequences of {} tokens), {}, {} mask of ratio {} \
             (k = {}), AdamW lr {}, {}, median of {} after {} warm-up",
            args.config,
            layout.total(),
            n,
            batch.tokens.batch,
            batch.tokens.seq,
            T::NAME,
            args.mask_scope.name(),
            args.ratio,
            mask.len(),
            args.lr,
            self.device,
            args.reps,
            args.warmup
        );
        let settings = OptimizerSettings {
            lr: args.lr,
            ..OptimizerSettings::default()
        };
        let progress = super::BarProgress::new();
        let bench = bench_train_step(
            model,
            &batch,
            mask.indices(),
            &settings,
            args.reps,
            args.warmup,
            &progress,
        )?;
        drop(progress);
        let rows: Vec<&PhaseTimes> = bench.phases.iter().chain([&bench.floor]).collect();
        print_phases(&rows, |p| bench.in_floor_units(p));
        println!(
            "F: one forward's matrix products back to back, {:.2} GFLOP (a masked step's \
             floor is about 2 F: the forward and the input adjoints)",
            bench.floor_flops / 1e9
        );
        Ok(())
    }
}

/// The batch and mask of `bench train` for PyTorch's benchmark: `input_ids` and
/// `attention_mask` (rows x seq), per row its `answer_start`, `answer_end` and
/// `question`, per question its `gold`, and the `mask_idx`.
fn dump_batch(path: &std::path::Path, batch: &Batch, mask: &[u64]) -> crate::Result<()> {
    use crate::model::Targets;
    use crate::report::tensors::{Tensor, Values, write_tensors};
    let Targets::Choice { questions } = &batch.targets else {
        return Err(crate::Error::arg(
            "--dump-batch",
            "PyTorch's step benchmark scores classification tasks",
        ));
    };
    let t = &batch.tokens;
    let ints = |v: Vec<i64>| Values::I64(v);
    let mut rows: Vec<(i64, i64, i64)> = vec![(0, 0, 0); t.batch];
    for (q, question) in questions.iter().enumerate() {
        for c in &question.candidates {
            rows[c.row] = (c.answer.start as i64, c.answer.end as i64, q as i64);
        }
    }
    let matrix = |name: &str, v: &[u32]| Tensor {
        name: name.to_string(),
        shape: vec![t.batch, t.seq],
        values: ints(v.iter().map(|&x| i64::from(x)).collect()),
    };
    let tensors = [
        matrix("input_ids", &t.input_ids),
        matrix("attention_mask", &t.attention_mask),
        Tensor::vector("answer_start", ints(rows.iter().map(|r| r.0).collect())),
        Tensor::vector("answer_end", ints(rows.iter().map(|r| r.1).collect())),
        Tensor::vector("question", ints(rows.iter().map(|r| r.2).collect())),
        Tensor::vector(
            "gold",
            ints(questions.iter().map(|q| q.gold as i64).collect()),
        ),
        Tensor::vector("mask_idx", ints(mask.iter().map(|&i| i as i64).collect())),
    ];
    write_tensors(
        path,
        &tensors,
        &[("format", "maskscape-train-bench".into())],
    )
}

/// The phase table with each phase in units of F.
fn print_phases(rows: &[&PhaseTimes], in_f: impl Fn(&PhaseTimes) -> f64) {
    let table = Table::new()
        .with_str("phase", rows.iter().map(|p| p.phase.to_string()).collect())
        .with_f64("median_ms", rows.iter().map(|p| p.median()).collect())
        .with_f64("min_ms", rows.iter().map(|p| p.min()).collect())
        .with_f64("max_ms", rows.iter().map(|p| p.max()).collect())
        .with_f64("in_F", rows.iter().map(|p| in_f(p)).collect());
    println!("{}", table.to_text());
}

/// Flags of `maskscape bench spectral`.
#[derive(clap::Args)]
pub struct SpectralBenchArgs {
    /// Dimensions, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000, 10_000_000])]
    dims: Vec<usize>,
    /// Products per full-reorthogonalization run.
    #[arg(long, default_value_t = 60)]
    full_steps: usize,
    /// Products per memory-bounded run.
    #[arg(long, default_value_t = 120)]
    bounded_steps: usize,
    /// Basis bound of the memory-bounded runs.
    #[arg(long, default_value_t = 40)]
    basis: usize,
    /// Largest full-reorthogonalization basis to allocate, in GB.
    #[arg(long, default_value_t = 6.0)]
    memory_gb: f64,
    /// Runs per configuration (the fastest is reported).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Also write the table as CSV and Parquet into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn spectral(args: SpectralBenchArgs) -> anyhow::Result<()> {
    if args.dims.iter().any(|&d| d < 100) {
        anyhow::bail!("--dims: every dimension must be at least 100");
    }
    let bench = LanczosBench {
        dims: args.dims,
        full_steps: args.full_steps,
        bounded_steps: args.bounded_steps,
        bounded_basis: args.basis,
        memory_limit: (args.memory_gb * 1e9) as usize,
        repeats: args.repeats,
    };
    let progress = BarProgress::new();
    crate::progress::Progress::start(
        &progress,
        (bench.dims.len() * 3 * bench.repeats) as u64,
        "bench spectral",
    );
    let table = lanczos_overhead(&bench, &progress)?;
    drop(progress);
    print!("{}", table.to_markdown());
    if let Some(out) = args.out {
        table.write_both(&out.join("bench_spectral"))?;
    }
    Ok(())
}
