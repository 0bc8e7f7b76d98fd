//! The bundled default (`bundled/`): the pretraining corpus is clear of the
//! sentiment data, the commands of `bundled/README.md` remake the committed
//! tokenizer and pretrained weights byte for byte, and the committed model's
//! held-out loss and zero-shot accuracy are the ones the READMEs state.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use maskscape::backend::Cpu;
use maskscape::data::{self, DataSpec, Dataset, Task};
use maskscape::model::batch::{Padding, batches};
use maskscape::model::tokenizer::OptTokenizer;
use maskscape::model::{Checkpoint, Objective, Opt, ParamLayout};
use maskscape::probe::evaluate::{Evaluation, evaluate};
use maskscape::progress::Silent;

use common::{maskscape, path_str, repo};

const MODEL: &str = "bundled/opt-bundled";
const CORPUS_TRAIN: &str = "bundled/corpus/train.jsonl";
const CORPUS_HELDOUT: &str = "bundled/corpus/heldout.jsonl";
/// The line of `bundled/README.md` above the fenced block of pretraining commands.
const COMMANDS_MARKER: &str = "<!-- tests/bundled.rs runs the commands below -->";

fn task(name: &str) -> Task {
    Task::new(name, None, None).unwrap()
}

/// The `text` column of a corpus file, one row per line.
fn corpus_rows(path: &str) -> Vec<String> {
    let spec = DataSpec::new(repo(path), task("lm"));
    let text = data::load_text(&spec).unwrap();
    let data::TextDataset::Lm(rows) = text.examples else {
        panic!("{path}: language-modelling rows expected");
    };
    rows.into_iter().map(|r| r.text).collect()
}

/// The `sentence` column of both sst2-mini splits.
fn sst2_sentences() -> Vec<String> {
    let mut out = Vec::new();
    for split in ["train", "dev"] {
        let path = repo(&format!("bundled/sst2-mini/{split}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push(row["sentence"].as_str().unwrap().to_string());
        }
    }
    out
}

/// The pretraining commands of `bundled/README.md`: the `maskscape ...` lines of the
/// fenced block after [`COMMANDS_MARKER`], continuation lines joined, as arguments.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo("bundled/README.md")).unwrap();
    let after = readme
        .split_once(COMMANDS_MARKER)
        .expect("bundled/README.md marks its pretraining commands")
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a ```sh block follows the marker")
        .0;
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            assert_eq!(words[0], "maskscape", "not a maskscape command: {l}");
            words[1..].to_vec()
        })
        .collect()
}

/// Token counts of the scored tokens (every token after BOS) of `rows`.
fn token_counts(tokenizer: &OptTokenizer, rows: &[String]) -> (Vec<u64>, u64) {
    let mut counts = vec![0u64; tokenizer.vocab_size()];
    let mut total = 0;
    for row in rows {
        for id in tokenizer.encode(row, false).unwrap() {
            counts[id as usize] += 1;
            total += 1;
        }
    }
    (counts, total)
}

/// The loss and accuracy of the bundled model on `spec`, in f32 as `reproduce` runs it.
fn evaluate_bundled(spec: &DataSpec) -> Evaluation {
    let dir = repo(MODEL);
    let checkpoint = Checkpoint::<f32>::load(&dir).unwrap();
    let config = checkpoint.config.clone();
    let loaded = data::load_for_model(spec, &dir, &config).unwrap();
    assert_eq!(loaded.truncated, 0, "{:?} fits the positions", spec.path);
    let batches = batches(&loaded.dataset, 32, config.pad_token_id, Padding::Right).unwrap();
    let model = Opt::new(Cpu, config, &checkpoint.params).unwrap();
    let mut objective = Objective::new(&model, &batches).unwrap();
    evaluate(&mut objective, &batches, &Silent).unwrap()
}

#[test]
fn corpus_holds_no_sst2_mini_sentence_and_fits_the_model() {
    let train = corpus_rows(CORPUS_TRAIN);
    let heldout = corpus_rows(CORPUS_HELDOUT);
    assert_eq!((train.len(), heldout.len()), (6080, 320));
    let sentences = sst2_sentences();
    assert_eq!(sentences.len(), 400);
    // No corpus row is, or contains, an sst2-mini sentence (compared without case).
    let lower: Vec<String> = sentences.iter().map(|s| s.to_lowercase()).collect();
    for row in train.iter().chain(&heldout) {
        let row = row.to_lowercase();
        for sentence in &lower {
            assert!(!row.contains(sentence.as_str()), "`{sentence}` in: {row}");
        }
    }
    // Every row is distinct, and held-out rows are not train rows.
    let seen: HashSet<&String> = train.iter().collect();
    assert_eq!(seen.len(), train.len(), "repeated train rows");
    assert!(heldout.iter().all(|r| !seen.contains(r)));

    // Under the bundled tokenizer every row fits the model's 128 positions whole.
    let dir = repo(MODEL);
    let config = Checkpoint::<f32>::load(&dir).unwrap().config;
    for path in [CORPUS_TRAIN, CORPUS_HELDOUT] {
        let spec = DataSpec::new(repo(path), task("lm"));
        let loaded = data::load_for_model(&spec, &dir, &config).unwrap();
        assert_eq!(loaded.truncated, 0, "{path}");
        let Dataset::Lm(rows) = &loaded.dataset else {
            panic!("lm rows expected")
        };
        let longest = rows.iter().map(|r| r.ids.len()).max().unwrap();
        assert!(
            longest <= config.max_position_embeddings,
            "{path}: {longest}"
        );
    }
}

#[test]
fn readme_commands_remake_the_bundled_model() {
    let commands = readme_commands();
    let names: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(names, ["tokenizer", "init", "train"]);
    // Run them into a temporary folder: the model folder and `runs/` move there; the
    // committed config.json (the architecture, an input of `init`) is copied first.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("opt-bundled");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(repo(MODEL).join("config.json"), model.join("config.json")).unwrap();
    let runs = dir.path().join("runs");
    for command in &commands {
        let args: Vec<String> = command
            .iter()
            .map(|a| {
                a.replace(MODEL, path_str(&model))
                    .replace("runs/", &format!("{}/", path_str(&runs)))
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = maskscape(&args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }
    // The tokenizer and the architecture do not touch floating point: always the same.
    for name in ["vocab.json", "merges.txt", "tokenizer.json", "config.json"] {
        assert_same_file(&model, name);
    }
    // The summary of the pretraining is this run's (wall times aside).
    let read = |path: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("timing");
        v
    };
    let (made, committed) = (
        read(&runs.join("pretrain/summary.json")),
        read(&repo(MODEL).join("pretraining.json")),
    );
    if gemm_kernels() == MADE_WITH_KERNELS {
        assert_same_file(&model, "model.safetensors");
        assert_eq!(made, committed);
    } else {
        // faer's products run other SIMD kernels here, which round some sums
        // differently; over 2,280 steps the weights drift apart, the model does not
        let loss = |v: &serde_json::Value| v["best"]["dev_loss"].as_f64().unwrap();
        let (got, want) = (loss(&made), loss(&committed));
        eprintln!(
            "{} GEMM kernels (the committed weights were made with {MADE_WITH_KERNELS}): \
             held-out loss {got:.4} against the committed {want:.4}",
            gemm_kernels()
        );
        assert!(
            (got - want).abs() <= REMADE_LOSS_TOLERANCE,
            "{got} against {want}"
        );
    }
}

/// The SIMD kernels faer's matrix products take on this CPU (faer 0.24's own
/// choice in `linalg::matmul`: AVX-512 when present, else AVX2 with FMA).
fn gemm_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2";
        }
    }
    "portable"
}

/// The kernels of the machine that made the committed weights; elsewhere the
/// remade model's held-out loss must agree within [`REMADE_LOSS_TOLERANCE`] nats.
const MADE_WITH_KERNELS: &str = "avx512";
const REMADE_LOSS_TOLERANCE: f64 = 0.05;

fn assert_same_file(made_dir: &Path, name: &str) {
    let committed = std::fs::read(repo(MODEL).join(name)).unwrap();
    let made = std::fs::read(made_dir.join(name)).unwrap();
    assert!(made == committed, "{name} differs from the committed file");
}

/// What `bundled/README.md` states about the pretrained model, as measured (f32, as
/// `reproduce` runs it): (held-out loss, add-one unigram loss, the held-out tokens'
/// own entropy) in nats per token, and the zero-shot correct answers of 80 dev and
/// 320 train examples.
const HELDOUT_LOSS: f64 = 1.2534;
const UNIGRAM_LOSS: f64 = 5.4501;
const HELDOUT_ENTROPY: f64 = 5.4337;
const ZERO_SHOT_CORRECT: [(&str, usize, usize); 2] = [("dev", 56, 80), ("train", 217, 320)];

#[test]
fn bundled_model_beats_the_unigram_baseline_and_reads_sentiment_zero_shot() {
    let dir = repo(MODEL);
    let checkpoint = Checkpoint::<f32>::load(&dir).unwrap();
    let config = checkpoint.config.clone();
    let tokenizer = OptTokenizer::from_dir(&dir).unwrap();
    assert_eq!(config.vocab_size, tokenizer.vocab_size());
    assert_eq!(config.vocab_size, 1000);
    assert!(config.do_layer_norm_before);
    assert_eq!(ParamLayout::new(&config).total(), 272_384);
    // The README's words, one space apart: a stated number may wrap across lines.
    let readme = std::fs::read_to_string(repo("bundled/README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");

    // The unigram baseline: held-out tokens under the train split's token
    // frequencies (add-one smoothing over the vocabulary), and, as a floor for any
    // unigram model, the held-out tokens' own entropy.
    let (train_counts, train_total) = token_counts(&tokenizer, &corpus_rows(CORPUS_TRAIN));
    let (held_counts, held_total) = token_counts(&tokenizer, &corpus_rows(CORPUS_HELDOUT));
    let v = config.vocab_size as f64;
    let mut unigram = 0.0;
    let mut entropy = 0.0;
    for (&c, &h) in train_counts.iter().zip(&held_counts) {
        if h > 0 {
            let p_train = (c as f64 + 1.0) / (train_total as f64 + v);
            let p_own = h as f64 / held_total as f64;
            unigram -= h as f64 * p_train.ln();
            entropy -= h as f64 * p_own.ln();
        }
    }
    unigram /= held_total as f64;
    entropy /= held_total as f64;

    let heldout = evaluate_bundled(&DataSpec::new(repo(CORPUS_HELDOUT), task("lm")));
    assert_eq!(heldout.loss_terms as u64, held_total);
    println!(
        "tokens: train {train_total}, held-out {held_total}; held-out loss {:.4}, unigram \
         {unigram:.4}, own entropy {entropy:.4}, uniform {:.4}",
        heldout.loss, heldout.uniform_loss
    );
    let stated = BTreeMap::from([
        ("loss", (heldout.loss, HELDOUT_LOSS)),
        ("unigram", (unigram, UNIGRAM_LOSS)),
        ("entropy", (entropy, HELDOUT_ENTROPY)),
    ]);
    for (name, (got, want)) in stated {
        // f32 sums: other CPUs' kernels may round the last digits differently.
        assert!((got - want).abs() < 5e-4, "{name}: {got:.5}, stated {want}");
        let text = format!("{want:.3}");
        assert!(
            readme.contains(&text),
            "bundled/README.md does not state {text}"
        );
    }
    let text = format!("{:.3}", heldout.uniform_loss);
    assert!(
        readme.contains(&text),
        "bundled/README.md does not state {text}"
    );
    // Pretraining learned far more than token frequencies.
    assert!(heldout.loss < entropy - 3.0);
    let counts = format!("{train_total} train and {held_total} held-out tokens");
    assert!(
        readme.contains(&counts),
        "bundled/README.md does not state {counts}"
    );

    // Zero-shot SST-2 (the paper's prompt, ` terrible` / ` great`) on both splits:
    // well above the majority baseline, and short of saturation, so that fine-tuning
    // has something to improve.
    for (split, correct, total) in ZERO_SHOT_CORRECT {
        let spec = DataSpec::new(
            repo(&format!("bundled/sst2-mini/{split}.jsonl")),
            task("sst2"),
        );
        let e = evaluate_bundled(&spec);
        let a = e.accuracy.as_ref().unwrap();
        println!("sst2-mini {split}: {}", e.describe());
        assert_eq!(a.majority_rate, 0.5, "{split} is balanced");
        assert_eq!(
            (a.correct, a.total),
            (correct, total),
            "{split}: {}",
            e.describe()
        );
        assert!(
            a.z_over_majority > 3.0 && a.accuracy < 0.9,
            "{split}: {}",
            e.describe()
        );
        let text = format!("{correct} of {total}");
        assert!(
            readme.contains(&text),
            "bundled/README.md does not state {text}"
        );
    }
}
