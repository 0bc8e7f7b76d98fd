//! `maskscape train` end to end: single steps against the fixtures' PyTorch
//! gradient, the sharpness against `probe` on the same state, resuming, thread
//! counts, divergence, and bad input.

mod common;

use std::path::Path;

use maskscape::report::tensors::TensorFile;

use common::{assert_user_error, fixture, maskscape, path_str, repo};

/// The fixture's PyTorch gradient at its mask, and which of those coordinates are
/// key biases (no gradient: the softmax ignores a shift of a query's scores, so
/// both sides hold rounding noise there).
fn fixture_gradient_at_mask(name: &str) -> (Vec<f64>, Vec<bool>) {
    let dir = fixture(name);
    let reference = TensorFile::read(&dir.join("reference.safetensors")).unwrap();
    let grad = reference.finite_vector("grad").unwrap();
    let mask = reference.ints("mask_idx").unwrap();
    let layout = maskscape::model::Checkpoint::<f64>::load(&dir)
        .unwrap()
        .layout;
    let key_bias = |i: usize| {
        layout
            .entry_of(i)
            .is_some_and(|e| e.name.ends_with("k_proj.bias"))
    };
    (
        mask.iter().map(|&i| grad[i as usize]).collect(),
        mask.iter().map(|&i| key_bias(i as usize)).collect(),
    )
}

/// `delta_final` of a run's delta file.
fn delta_final(out: &Path) -> Vec<f64> {
    TensorFile::read(&out.join("delta.safetensors"))
        .unwrap()
        .finite_vector("delta_final")
        .unwrap()
}

/// The norm-wise relative error of `got` against `want` off the `skip` coordinates.
fn rel_error_except(got: &[f64], want: &[f64], skip: &[bool]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for ((g, w), &s) in got.iter().zip(want).zip(skip) {
        if !s {
            num += (g - w) * (g - w);
            den += w * w;
        }
    }
    (num / den).sqrt()
}

/// One full-batch step on the fixture (its own batch, its own mask), f64.
fn one_step(optimizer: &str, lr: &str, out: &Path) {
    let dir = fixture("opt-tiny-preln");
    let reference = dir.join("reference.safetensors");
    let args = [
        "train",
        "--model",
        path_str(&dir),
        "--tokenized",
        path_str(&reference),
        "--mask",
        path_str(&reference),
        "--optimizer",
        optimizer,
        "--lr",
        lr,
        "--batch",
        "all",
        "--steps",
        "1",
        "--warmup-steps",
        "0",
        "--clip",
        "none",
        "--dtype",
        "f64",
        "--out",
        path_str(out),
    ];
    let (code, stdout, stderr) = maskscape(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("1 of 1 steps"), "{stdout}");
}

#[test]
fn one_full_batch_sgd_step_is_minus_lr_times_pytorchs_gradient() {
    let dir = tempfile::tempdir().unwrap();
    one_step("sgd", "0.5", dir.path());
    let (grad, key_bias) = fixture_gradient_at_mask("opt-tiny-preln");
    let want: Vec<f64> = grad.iter().map(|g| -0.5 * g).collect();
    let got = delta_final(dir.path());
    let e = rel_error_except(&got, &want, &vec![false; want.len()]);
    assert!(e < 1e-12, "relative error {e:.2e}");
    assert!(key_bias.iter().any(|&k| k), "the mask holds key biases");
}

#[test]
fn one_adamw_step_is_minus_lr_times_the_sign_with_eps() {
    let dir = tempfile::tempdir().unwrap();
    one_step("adamw", "0.01", dir.path());
    let (grad, key_bias) = fixture_gradient_at_mask("opt-tiny-preln");
    let want: Vec<f64> = grad.iter().map(|g| -0.01 * g / (g.abs() + 1e-8)).collect();
    let got = delta_final(dir.path());
    let e = rel_error_except(&got, &want, &key_bias);
    assert!(e < 1e-12, "relative error {e:.2e}");
    // on the key biases both are noise divided by eps: far below lr
    for (&g, &k) in got.iter().zip(&key_bias) {
        if k {
            assert!(g.abs() < 1e-6, "{g}");
        }
    }
}

/// Runs `train` on the bundled model and SST-2-mini with `extra` flags into `out`.
/// `train` on the bundled model and data, q/v at 1e-2, into `out`, with `extra`.
fn bundled_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        "bundled/opt-bundled",
        "--data",
        "bundled/sst2-mini/train.jsonl",
        "--task",
        "sst2",
        "--mask-scope",
        "qv",
        "--ratio",
        "1e-2",
        "--out",
        path_str(out),
    ];
    args.extend_from_slice(extra);
    args
}

fn bundled(out: &Path, extra: &[&str]) -> (i32, String, String) {
    maskscape(&bundled_args(out, extra))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The outputs that must not depend on how the run was made.
const RESULTS: [&str; 4] = [
    "delta.safetensors",
    "steps.csv",
    "evals.csv",
    "trajectory.safetensors",
];

#[test]
fn a_resumed_run_any_thread_count_and_recomputing_give_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = [
        "--dev-examples",
        "40",
        "--train-examples",
        "120",
        "--lr",
        "1e-2",
        "--epochs",
        "2",
        "--eval-every",
        "4",
        "--save-every",
        "5",
    ];
    let whole = tmp.path().join("whole");
    let (code, stdout, stderr) = bundled(&whole, &[&flags[..], &["--threads", "1"]].concat());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        !whole.join("resume").exists(),
        "a finished run keeps no state"
    );

    // two threads recomputing the blocks' activations, interrupted after 11 steps
    // (as Ctrl-C would), then resumed storing them
    let parts = tmp.path().join("parts");
    let out = common::run_with_env(
        &bundled_args(
            &parts,
            &[&["--threads", "2", "--recompute"][..], &flags].concat(),
        ),
        &[("MASKSCAPE_TRAIN_STOP_AFTER", "11")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after step 11"), "{stderr}");
    assert!(parts.join("resume/state.json").is_file());
    assert!(
        !parts.join("summary.json").exists(),
        "an interrupted run writes no results"
    );
    let (code, stdout, stderr) = bundled(
        &parts,
        &[
            &flags[..],
            &["--threads", "2", "--memory", "stored", "--resume"],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for name in RESULTS {
        assert!(
            read(&whole.join(name)) == read(&parts.join(name)),
            "{name} differs between the whole run and the resumed one"
        );
    }
    // a resume with other settings is refused, naming what differs
    let (code, stdout, stderr) = {
        let other = tmp.path().join("other");
        let out = common::run_with_env(
            &bundled_args(&other, &flags),
            &[("MASKSCAPE_TRAIN_STOP_AFTER", "3")],
        );
        assert_eq!(out.status.code(), Some(130));
        let changed: Vec<&str> = flags
            .iter()
            .map(|f| if *f == "1e-2" { "2e-2" } else { f })
            .collect();
        bundled(&other, &[&changed[..], &["--resume"]].concat())
    };
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.starts_with("error: --resume"), "{stderr}");
    assert!(stderr.contains("settings.optimizer.lr"), "{stderr}");
}

#[test]
fn the_sharpness_is_probes_on_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    // eight examples: the sharpness batch is the whole training file
    let rows: String = std::fs::read_to_string(repo("bundled/sst2-mini/train.jsonl"))
        .unwrap()
        .lines()
        .take(8)
        .map(|l| format!("{l}\n"))
        .collect();
    let data = common::write(tmp.path(), "eight.jsonl", &rows);
    let out = tmp.path().join("run");
    let common = [
        "--model",
        "bundled/opt-bundled",
        "--data",
        path_str(&data),
        "--task",
        "sst2",
        "--mask-scope",
        "qv",
        "--ratio",
        "1e-2",
        "--mask-seed",
        "3",
        "--dtype",
        "f64",
    ];
    let (code, stdout, stderr) = maskscape(
        &[
            &["train"][..],
            &common,
            &[
                "--lr",
                "0.05",
                "--steps",
                "4",
                "--batch",
                "4",
                "--sharpness-every",
                "4",
            ],
            &[
                "--sharpness-examples",
                "8",
                "--sharpness-iters",
                "60",
                "--out",
                path_str(&out),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let table = std::fs::read_to_string(out.join("sharpness.csv")).unwrap();
    let lambdas: Vec<f64> = table
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(lambdas.len(), 2, "{table}");
    let probe = |delta: Option<&Path>, dir: &str| -> f64 {
        let dir = tmp.path().join(dir);
        let mut args = vec!["probe"];
        args.extend_from_slice(&common);
        args.extend_from_slice(&[
            "--method", "lanczos", "--k", "1", "--which", "largest", "--iters", "60", "--out",
        ]);
        args.push(path_str(&dir));
        if let Some(d) = delta {
            args.extend_from_slice(&["--delta", path_str(d)]);
        }
        let (code, stdout, stderr) = maskscape(&args);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        summary["spectrum"]["lanczos"]["top"][0]["value"]
            .as_f64()
            .unwrap()
    };
    let before = probe(None, "before");
    let after = probe(Some(&out.join("delta.safetensors")), "after");
    for (got, want) in [(lambdas[0], before), (lambdas[1], after)] {
        assert!((got - want).abs() <= 1e-8 * want.abs(), "{got} vs {want}");
    }
    assert!(
        (lambdas[0] - lambdas[1]).abs() > 1e-6,
        "training moved the sharpness"
    );
}

#[test]
fn a_diverged_run_is_a_result() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = [
        "train",
        "--model",
        "bundled/opt-bundled",
        "--data",
        "bundled/sst2-mini/train.jsonl",
        "--task",
        "sst2",
        "--full",
        "--optimizer",
        "sgd",
        "--lr",
        "1e3",
        "--clip",
        "none",
        "--warmup-steps",
        "0",
        "--steps",
        "30",
        "--out",
        path_str(&out),
    ];
    let (code, stdout, stderr) = maskscape(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("diverged at step"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let step = summary["diverged"]["step"].as_u64().unwrap();
    assert!((2..=30).contains(&step), "{summary}");
    assert_eq!(summary["steps"].as_u64().unwrap(), step - 1);
}

#[test]
fn bad_input_is_one_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    let o = path_str(&out);
    let base = [
        "train",
        "--model",
        "bundled/opt-bundled",
        "--data",
        "bundled/sst2-mini/train.jsonl",
        "--task",
        "sst2",
        "--ratio",
        "1e-2",
        "--out",
        o,
    ];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--lr", "0"], vec!["--lr", "positive"]),
        (vec!["--lr", "NaN"], vec!["--lr"]),
        (vec!["--lr", "1e-3", "--epochs", "0"], vec!["--epochs"]),
        (vec!["--lr", "1e-3", "--steps", "0"], vec!["--steps"]),
        (vec!["--lr", "1e-3", "--batch", "0"], vec!["--batch"]),
        (
            vec!["--lr", "1e-3", "--batch", "some"],
            vec!["--batch", "`some`"],
        ),
        (vec!["--lr", "1e-3", "--clip", "x"], vec!["--clip"]),
        (
            vec!["--lr", "1e-3", "--train-examples", "1000"],
            vec!["--train-examples", "asked for 1000", "holds 320"],
        ),
        (
            vec!["--lr", "1e-3", "--dev-examples", "320"],
            vec!["train split is empty"],
        ),
        (
            vec!["--lr", "1e-3", "--test-examples", "5"],
            vec!["--test-examples", "--test FILE"],
        ),
        (
            vec!["--lr", "1e-3", "--resume"],
            vec!["--resume", "no interrupted run"],
        ),
    ];
    for (extra, expected) in cases {
        let args = [&base[..], &extra].concat();
        assert_user_error(&args, &expected);
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    // a mask drawn for another model (its sidecar records the other model's size)
    let other = tmp.path().join("other.safetensors");
    let (code, _, stderr) = maskscape(&[
        "mask",
        "--model",
        path_str(&fixture("opt-small-preln")),
        "--scope",
        "all",
        "--ratio",
        "0.01",
        "--out",
        path_str(&other),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let args = [
        "train",
        "--model",
        "bundled/opt-bundled",
        "--data",
        "bundled/sst2-mini/train.jsonl",
        "--task",
        "sst2",
        "--mask",
        path_str(&other),
        "--lr",
        "1e-3",
        "--out",
        o,
    ];
    assert_user_error(&args, &["other.json"]);
    assert!(!out.exists());
    // a delta made for another checkpoint
    let run = tmp.path().join("fixture-run");
    one_step("sgd", "0.1", &run);
    let probe = [
        "probe",
        "--model",
        "bundled/opt-bundled",
        "--data",
        "bundled/sst2-mini/dev.jsonl",
        "--task",
        "sst2",
        "--ratio",
        "1e-2",
        "--delta",
    ];
    let delta = run.join("delta.safetensors");
    let args = [&probe[..], &[path_str(&delta), "--out", o]].concat();
    assert_user_error(&args, &["delta.safetensors", "made for the checkpoint"]);
    assert!(!out.exists());
}

/// `landscape` of the bundled model on 8 dev examples (the flags before the mask).
const LANDSCAPE_ON_DEV: [&str; 9] = [
    "landscape",
    "--model",
    "bundled/opt-bundled",
    "--data",
    "bundled/sst2-mini/dev.jsonl",
    "--task",
    "sst2",
    "--max-examples",
    "8",
];

#[test]
fn a_training_path_draws_on_the_landscape_in_its_own_plane() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (code, stdout, stderr) = bundled(
        &run,
        &[
            "--lr",
            "2e-2",
            "--steps",
            "12",
            "--save-every",
            "3",
            "--dtype",
            "f64",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let land = tmp.path().join("land");
    let delta = run.join("delta.safetensors");
    let (code, stdout, stderr) = maskscape(
        &[
            &LANDSCAPE_ON_DEV[..],
            &[
                "--mask",
                path_str(&delta),
                "--directions",
                "pca",
                "--trajectory",
                path_str(&run),
                "--2d",
                "--span",
                "1",
                "--points",
                "5",
                "--dtype",
                "f64",
                "--out",
                path_str(&land),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("training path: 5 points"), "{stdout}");
    for file in ["landscape.png", "landscape-path.png", "trajectory.csv"] {
        assert!(land.join(file).is_file(), "{file}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(land.join("summary.json")).unwrap()).unwrap();
    let path = &summary["path"];
    let floats = |key: &str| -> Vec<f64> {
        path[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    // step 0 is the landscape's own checkpoint: the origin of the plane, on it, at its loss
    assert_eq!(path["steps"][0].as_u64(), Some(0));
    assert_eq!((floats("alphas")[0], floats("betas")[0]), (0.0, 0.0));
    assert_eq!(floats("off_plane")[0], 0.0);
    let base = summary["base_loss"].as_f64().unwrap();
    assert!((floats("loss")[0] - base).abs() <= 1e-12 * base);
    // the plane is the path's: two directions share nearly all of its variance
    let explained = floats("explained");
    assert!(explained[0] >= explained[1] && explained[0] + explained[1] <= 1.0 + 1e-12);
    assert!(explained[0] + explained[1] > 0.5, "{explained:?}");
    // a landscape of other coordinates refuses the path
    let other = tmp.path().join("other");
    common::assert_user_error(
        &[
            &LANDSCAPE_ON_DEV[..],
            &[
                "--ratio",
                "1e-3",
                "--directions",
                "pca",
                "--trajectory",
                path_str(&run),
                "--2d",
                "--out",
                path_str(&other),
            ],
        ]
        .concat(),
        &["trajectory.safetensors", "--mask"],
    );
}

#[test]
fn a_saved_model_is_the_checkpoint_plus_the_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let saved = tmp.path().join("saved");
    let (code, stdout, stderr) = bundled(
        &run,
        &[
            "--lr",
            "1e-2",
            "--steps",
            "3",
            "--dtype",
            "f64",
            "--save-model",
            path_str(&saved),
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let (code, stdout, stderr) = maskscape(&["inspect", "--model", path_str(&saved)]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let base = maskscape::model::Checkpoint::<f64>::load(&repo("bundled/opt-bundled")).unwrap();
    let moved = maskscape::model::Checkpoint::<f64>::load(&saved).unwrap();
    let delta = TensorFile::read(&run.join("delta.safetensors")).unwrap();
    let idx = delta.ints("mask_idx").unwrap();
    let d = delta.finite_vector("delta").unwrap();
    let mut want = base.params.clone();
    for (&i, &x) in idx.iter().zip(&d) {
        want[i as usize] += x;
    }
    let max_gap = want
        .iter()
        .zip(&moved.params)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    // the bundled checkpoint is f32: the saved f64 model holds its values exactly
    assert!(max_gap < 1e-15, "{max_gap}");
    assert!(d.iter().any(|&x| x != 0.0));
}
