//! Recomputing the blocks' activations in the reverse sweep (`Memory::Recompute`)
//! gives the stored path's results to the bit: loss, `g . v`, gradient, `H v`,
//! masked gradient and masked `H v`, on the PyTorch fixtures and on random OPT
//! shapes (pre-LN and post-LN with projections, with and without biases, final
//! LayerNorm and LayerNorm affines), in f64 and f32.

mod common;

use maskscape::backend::{Backend, Cpu, Scalar};
use maskscape::mask::{Mask, MaskSpec, RatioOf, Scope};
use maskscape::model::bench::random_batch;
use maskscape::model::{Batch, Checkpoint, Memory, Objective, Opt, OptConfig, Targets, TokenBatch};
use maskscape::probe::verify::Reference;
use rand::Rng as _;
use rand_distr::StandardNormal;

use common::fixture;

/// Everything an objective computes, as bits.
#[derive(Debug, PartialEq)]
struct Results {
    loss: u64,
    logits: Vec<u64>,
    gradient: (u64, Vec<u64>),
    hvp: (u64, u64, Vec<u64>, Vec<u64>),
    masked_gradient: (u64, Vec<u64>),
    masked_hvp: Vec<u64>,
    /// The masked product again after the others (the scratch reused in place).
    masked_hvp_again: Vec<u64>,
}

fn bits<T: Scalar>(x: &[T]) -> Vec<u64> {
    x.iter().map(|v| v.to_f64().to_bits()).collect()
}

fn normal<T: Scalar>(n: usize, seed: u64) -> Vec<T> {
    let mut rng = maskscape::rng::stream(seed, 7);
    (0..n)
        .map(|_| T::from_f64(rng.sample(StandardNormal)))
        .collect()
}

/// Every quantity with `memory`; the objective must actually store or recompute.
fn results<T: Scalar>(model: &Opt<T, Cpu>, data: &[Batch], mask: &[u64], memory: Memory) -> Results
where
    Cpu: Backend<T>,
{
    let mut obj = Objective::new(model, data).unwrap();
    obj.set_memory(memory);
    let n = model.num_params();
    let v = normal::<T>(n, 1);
    let vk = normal::<T>(mask.len(), 2);
    obj.set_mask(mask).unwrap();
    let masked_hvp = bits(&obj.masked_hvp(&vk).unwrap());
    let loss = obj.loss().unwrap().to_bits();
    let logits = bits(&obj.logits(0).unwrap());
    let (l, g) = obj.gradient().unwrap();
    let r = obj.loss_gradient_hvp(&v).unwrap();
    let (ml, mg) = obj.masked_gradient().unwrap();
    let masked_hvp_again = bits(&obj.masked_hvp(&vk).unwrap());
    let buffers = obj.into_buffers();
    assert_eq!(
        buffers.recomputing(),
        Some(memory == Memory::Recompute),
        "the workspace follows the mode"
    );
    Results {
        loss,
        logits,
        gradient: (l.to_bits(), bits(&g)),
        hvp: (
            r.loss.to_bits(),
            r.grad_dot_v.to_bits(),
            bits(&r.gradient),
            bits(&r.hvp),
        ),
        masked_gradient: (ml.to_bits(), bits(&mg)),
        masked_hvp,
        masked_hvp_again,
    }
}

fn assert_same<T: Scalar>(what: &str, model: &Opt<T, Cpu>, data: &[Batch], mask: &[u64])
where
    Cpu: Backend<T>,
{
    let stored = results(model, data, mask, Memory::Stored);
    let recomputed = results(model, data, mask, Memory::Recompute);
    // sanity: the quantities are not trivially zero
    assert!(
        stored.hvp.3.iter().any(|&b| f64::from_bits(b) != 0.0),
        "{what}"
    );
    assert!(
        stored.masked_hvp.iter().any(|&b| f64::from_bits(b) != 0.0),
        "{what}"
    );
    assert_eq!(stored.masked_hvp, stored.masked_hvp_again, "{what}");
    assert!(
        stored == recomputed,
        "{what} in {}: recomputed differs",
        T::NAME
    );
}

/// A mask over every kind of tensor (embeddings included: the reverse sweep runs
/// to the bottom), and one over the top block's q/v only (it stops there).
fn masks<T: Scalar>(model: &Opt<T, Cpu>, seed: u64) -> Vec<Vec<u64>>
where
    Cpu: Backend<T>,
{
    let layout = model.layout();
    let all = MaskSpec {
        scope: Scope::All,
        ratio: 0.05,
        ratio_of: RatioOf::Scope,
        ..MaskSpec::paper(0.05, seed)
    };
    let top = model.config().num_hidden_layers - 1;
    let top_qv: Vec<u64> = layout
        .entries()
        .iter()
        .filter(|e| {
            e.name.contains(&format!("layers.{top}.")) && e.name.contains("q_proj.weight")
                || e.name.contains(&format!("layers.{top}.")) && e.name.contains("v_proj.weight")
        })
        .flat_map(|e| e.range().step_by(3).map(|i| i as u64))
        .collect();
    assert!(!top_qv.is_empty());
    vec![Mask::draw(&all, layout).unwrap().indices().to_vec(), top_qv]
}

fn check_fixture<T: Scalar>(name: &str)
where
    Cpu: Backend<T>,
{
    let ckpt = Checkpoint::<T>::load(&fixture(name)).unwrap();
    let model = Opt::new(Cpu, ckpt.config.clone(), &ckpt.params).unwrap();
    let reference = Reference::load(&fixture(name).join("reference.safetensors")).unwrap();
    let data = [reference.to_batch(ckpt.config.vocab_size).unwrap()];
    for (i, mask) in masks(&model, 3).iter().enumerate() {
        assert_same(&format!("{name}, mask {i}"), &model, &data, mask);
    }
}

#[test]
fn recomputing_gives_the_stored_bits_on_the_fixtures_in_f64() {
    for name in ["opt-tiny-preln", "opt-tiny-postln-proj", "opt-small-preln"] {
        check_fixture::<f64>(name);
    }
}

#[test]
fn recomputing_gives_the_stored_bits_on_the_fixtures_in_f32() {
    for name in ["opt-tiny-preln", "opt-tiny-postln-proj", "opt-small-preln"] {
        check_fixture::<f32>(name);
    }
}

/// A random OPT architecture: sizes, layout and options drawn from `seed`.
fn random_config(seed: u64) -> OptConfig {
    let mut r = maskscape::rng::stream(seed, 11);
    let heads = r.random_range(1..4usize);
    let hidden = heads * r.random_range(2..7usize);
    let pre_ln = seed.is_multiple_of(2);
    let projections = seed % 3 == 1;
    OptConfig {
        vocab_size: r.random_range(20..60),
        hidden_size: hidden,
        ffn_dim: r.random_range(3..20),
        num_hidden_layers: r.random_range(1..5),
        num_attention_heads: heads,
        max_position_embeddings: 32,
        word_embed_proj_dim: if projections {
            r.random_range(2..9)
        } else {
            hidden
        },
        do_layer_norm_before: pre_ln,
        remove_final_layer_norm: pre_ln && r.random_bool(0.3),
        enable_bias: r.random_bool(0.7),
        layer_norm_elementwise_affine: r.random_bool(0.8),
        pad_token_id: 1,
        bos_token_id: 2,
        eos_token_id: 2,
        tie_word_embeddings: true,
    }
}

/// A left-padded next-token batch: row `i` keeps its last `seq - i` tokens.
fn padded_batch(config: &OptConfig, batch: usize, seq: usize, seed: u64) -> Batch {
    let mut b = random_batch(config, batch, seq, seed).unwrap();
    let t = &mut b.tokens;
    let mut labels = match &b.targets {
        Targets::NextToken { labels } => labels.clone(),
        _ => unreachable!("random batches are next-token batches"),
    };
    for row in 0..batch {
        for col in 0..row.min(seq - 2) {
            t.attention_mask[row * seq + col] = 0;
            t.input_ids[row * seq + col] = config.pad_token_id;
            labels[row * seq + col] = -100;
        }
        labels[row * seq + row.min(seq - 2)] = -100;
    }
    Batch {
        tokens: TokenBatch {
            batch,
            seq,
            input_ids: t.input_ids.clone(),
            attention_mask: t.attention_mask.clone(),
        },
        targets: Targets::NextToken { labels },
    }
}

fn check_random<T: Scalar>(seeds: std::ops::Range<u64>)
where
    Cpu: Backend<T>,
{
    let mut kinds = (false, false);
    for seed in seeds {
        let config = random_config(seed);
        kinds.0 |= config.do_layer_norm_before;
        kinds.1 |= !config.do_layer_norm_before && config.has_projections();
        let ckpt = Checkpoint::<T>::random(config.clone(), seed);
        let model = Opt::new(Cpu, config.clone(), &ckpt.params).unwrap();
        // two shapes: the workspace is remade between them
        let data = [
            random_batch(&config, 2, 7, seed).unwrap(),
            padded_batch(&config, 3, 5, seed + 100),
        ];
        for (i, mask) in masks(&model, seed).iter().enumerate() {
            let what = format!("random OPT {seed} ({config:?}), mask {i}");
            assert_same(&what, &model, &data, mask);
        }
    }
    assert!(
        kinds.0 && kinds.1,
        "the draws cover pre-LN and post-LN with projections"
    );
}

#[test]
fn recomputing_gives_the_stored_bits_on_random_opt_shapes_in_f64() {
    check_random::<f64>(0..12);
}

#[test]
fn recomputing_gives_the_stored_bits_on_random_opt_shapes_in_f32() {
    check_random::<f32>(20..26);
}

/// A mode set between calls takes effect at the next pass, and the buffers carry
/// it to the next objective (as a training loop would).
#[test]
fn the_mode_travels_with_the_buffers() {
    let config = random_config(4);
    let ckpt = Checkpoint::<f64>::random(config.clone(), 4);
    let model = Opt::new(Cpu, config.clone(), &ckpt.params).unwrap();
    let data = [random_batch(&config, 2, 6, 0).unwrap()];
    let mut obj = Objective::new(&model, &data).unwrap();
    obj.set_memory(Memory::Recompute);
    let (_, g1) = obj.gradient().unwrap();
    let buffers = obj.into_buffers();
    assert_eq!(buffers.memory(), Memory::Recompute);
    assert_eq!(buffers.recomputing(), Some(true));
    let mut obj = Objective::with_buffers(&model, &data, buffers).unwrap();
    obj.set_memory(Memory::Stored);
    let (_, g2) = obj.gradient().unwrap();
    assert_eq!(obj.into_buffers().recomputing(), Some(false));
    assert_eq!(bits(&g1), bits(&g2));
}

// ---- the flags ----

const TINY: &str = "tests/fixtures/opt-tiny-preln";
const REFERENCE: &str = "tests/fixtures/opt-tiny-preln/reference.safetensors";

fn run_ok(args: &[&str]) -> String {
    let out = common::run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// `probe --recompute` gives the stored probe's numbers exactly.
#[test]
fn probe_recompute_gives_the_stored_summary() {
    let out = tempfile::tempdir().unwrap();
    let summary = |memory: &str| {
        let dir = out.path().join(memory);
        let stdout = run_ok(&[
            "probe",
            "--model",
            TINY,
            "--tokenized",
            REFERENCE,
            "--ratio",
            "0.1",
            "--mask-scope",
            "all",
            "--method",
            "all",
            "--iters",
            "30",
            "--trace-products",
            "12",
            "--probes",
            "2",
            "--memory",
            memory,
            "--out",
            common::path_str(&dir),
        ]);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        let timing = json["timing"].take();
        assert_eq!(timing["memory"], memory, "{stdout}");
        assert!(timing["memory_planned_bytes"].as_u64().unwrap() > 0);
        (json, stdout)
    };
    let (stored, _) = summary("stored");
    let (recomputed, stdout) = summary("recompute");
    assert!(
        stdout.contains("activations recomputed in the reverse sweep"),
        "{stdout}"
    );
    assert_eq!(stored, recomputed);
}

#[test]
fn verify_passes_with_recompute() {
    for dtype in ["f64", "f32"] {
        let stdout = run_ok(&[
            "verify",
            "--model",
            "tests/fixtures/opt-tiny-postln-proj",
            "--reference",
            "tests/fixtures/opt-tiny-postln-proj/reference.safetensors",
            "--dtype",
            dtype,
            "--recompute",
        ]);
        assert!(stdout.contains("within tolerance"), "{stdout}");
    }
}

#[test]
fn bench_runs_chosen_phases_recomputing() {
    let stdout = run_ok(&[
        "bench",
        "hvp",
        "--config",
        "opt-mini",
        "--batch",
        "1",
        "--seq",
        "8",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--phases",
        "masked-hvp,gradient",
        "--recompute",
    ]);
    assert!(
        stdout.contains("recomputing (--memory recompute)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("masked hvp") && stdout.contains("gradient"),
        "{stdout}"
    );
    let phases: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split("  ").find(|w| !w.trim().is_empty()))
        .map(str::trim)
        .collect();
    assert!(!phases.contains(&"forward"), "{stdout}");
}

/// A model far beyond the host's memory is refused up front, from its
/// config.json alone (the folder has no weights), with the figures.
#[test]
fn a_probe_that_cannot_fit_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::fixture("opt-tiny-preln").join("config.json"))
        .unwrap()
        .replace("\"ffn_dim\": 16", "\"ffn_dim\": 65536")
        .replace("\"hidden_size\": 8", "\"hidden_size\": 16384")
        .replace(
            "\"word_embed_proj_dim\": 8",
            "\"word_embed_proj_dim\": 16384",
        )
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 200");
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    for memory in ["auto", "recompute"] {
        let out = common::run(&[
            "probe",
            "--model",
            common::path_str(dir.path()),
            "--tokenized",
            REFERENCE,
            "--full",
            "--memory",
            memory,
            "--out",
            common::path_str(&dir.path().join("out")),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("error: memory: the probe"), "{stderr}");
        assert!(
            stderr.contains("recomputing") && stderr.contains("free"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
