//! Training sweeps through the binary on the bundled model: a sweep killed
//! (SIGKILL) inside a run resumes that run and recomputes nothing finished, giving
//! the files of a sweep never interrupted; shards cover the grid; a cell's run is
//! `maskscape train`'s run bit for bit; a diverged run is a recorded result; bad
//! specs are one error line naming the key.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{assert_same_tree, assert_user_error, maskscape, names, path_str, sweep, tree};

/// Seven units: the scope reference, then per arm (a random mask at ratio 0.01, and
/// full fine-tuning) the start and two runs of SGD without clipping (four steps
/// each: 16 train examples, batch 8, 2 epochs). At rate 1e30 full fine-tuning's
/// logits overflow, so that run diverges (a masked q/v run saturates instead: the
/// layer norms bound its loss).
const SPEC: &str = "kind = \"training_sweep\"\ntitle = \"Tiny training sweep\"\n[sweep]\n\
    checkpoints = [{ name = \"init\", path = \"bundled/opt-bundled\" }]\n\
    data = \"bundled/sst2-mini/train.jsonl\"\ntask = \"sst2\"\n\
    train_examples = 16\ndev_examples = 8\n\
    test = \"bundled/sst2-mini/dev.jsonl\"\ntest_examples = 8\n\
    ratios = [0.01]\nfull = true\nlrs = [0.01, 1e30]\nseeds = [0]\n\
    [train]\noptimizer = \"sgd\"\nclip = \"none\"\nepochs = 2\nbatch = 8\n\
    [hessian]\nexamples = 2\niters = 4\ntrace_products = 4\n\
    scope_iters = 4\nscope_trace_products = 4\n";

fn setup(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::write(dir.path(), "tiny.toml", text);
    (dir, spec)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Kills its child (SIGKILL) when dropped, so a failed assertion leaves no
/// stalled process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sweep_killed_inside_a_run_resumes_it_and_redoes_nothing_finished() {
    use std::os::unix::process::ExitStatusExt;

    let (dir, spec) = setup(SPEC);
    let out = dir.path().join("run");
    // The first run saves its state at its dev evaluation after step 2 and
    // stalls at step 3: the scope and the start are done, the run is not.
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_maskscape"))
            .args(["sweep", path_str(&spec), "--out", path_str(&out)])
            .env("MASKSCAPE_TRAIN_SWEEP_STALL_AFTER", "3")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let stalled = BufReader::new(stderr)
        .lines()
        .find_map(|line| line.ok().filter(|l| l.contains("stalled inside a run")))
        .expect("the sweep reaches the stall");
    assert!(stalled.contains("after 3 training steps"), "{stalled}");
    child.0.kill().unwrap();
    assert_eq!(
        child.0.wait().unwrap().signal(),
        Some(9),
        "killed by SIGKILL"
    );

    let cells = out.join("cells");
    let done = tree(&cells);
    assert_eq!(
        names(&done),
        [
            ".work/init/ratio-1e-2/seed-0/lr-1e-2/resume/state.json",
            ".work/init/ratio-1e-2/seed-0/lr-1e-2/resume/state.safetensors",
            "init/ratio-1e-2/seed-0/start.json",
            "init/scope.json",
        ]
    );
    let state = json(&cells.join(".work/init/ratio-1e-2/seed-0/lr-1e-2/resume/state.json"));
    assert_eq!(state["history"]["step"], 2);
    let status = sweep(&spec, &out, &["--status"]);
    assert!(status.contains("7 cells: 2 done, 5 missing\n"), "{status}");
    let modified = |name: &str| {
        std::fs::metadata(cells.join(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = [
        modified("init/scope.json"),
        modified("init/ratio-1e-2/seed-0/start.json"),
    ];

    let rerun = sweep(&spec, &out, &[]);
    assert!(rerun.contains("5 cells computed, 2 reused"), "{rerun}");
    let after = [
        modified("init/scope.json"),
        modified("init/ratio-1e-2/seed-0/start.json"),
    ];
    assert_eq!(before, after, "finished cells are not rewritten");
    assert!(
        !cells.join(".work/init/ratio-1e-2/seed-0/lr-1e-2").exists(),
        "the run's state is cleared"
    );
    let again = sweep(&spec, &out, &[]);
    assert!(again.contains("0 cells computed, 7 reused"), "{again}");

    // The resumed run is the uninterrupted one, bit for bit.
    let fresh = dir.path().join("fresh");
    sweep(&spec, &fresh, &[]);
    assert_same_tree(&fresh.join("cells"), &cells);

    // A diverged run is a result: recorded where it stopped, with no Hessian at
    // its end, drawn and counted in the report.
    let diverged = json(&cells.join("init/full/seed-0/lr-1e30.json"));
    let step = diverged["diverged"]["step"].as_u64().unwrap();
    assert!((1..=4).contains(&step), "{diverged}");
    assert_eq!(diverged["steps"].as_u64().unwrap(), step - 1, "{diverged}");
    assert!(diverged["end"].is_null(), "{diverged}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("4 runs on disk"), "{report}");
    assert!(
        report.contains("1 diverged: full FT at 1e30 (1 of 1)"),
        "{report}"
    );
    assert!(out.join("tiny-accuracy.png").is_file());
    let finished = json(&cells.join("init/ratio-1e-2/seed-0/lr-1e-2.json"));
    assert!(finished["diverged"].is_null(), "{finished}");
    assert!(
        finished["end"]["trace"]["products"].as_u64().unwrap() > 0,
        "{finished}"
    );
}

#[test]
fn a_cell_is_the_train_command_s_run_bit_for_bit() {
    // AdamW with clipping at 1, the paper's (and `train`'s defaults)
    let (dir, spec) = setup(&SPEC.replace("optimizer = \"sgd\"\nclip = \"none\"\n", ""));
    let out = dir.path().join("run");
    sweep(&spec, &out, &["--shard", "1/1"]);
    let cell = json(&out.join("cells/init/ratio-1e-2/seed-0/lr-1e-2.json"));
    let train = dir.path().join("train");
    let (code, stdout, stderr) = maskscape(&[
        "train",
        "--model",
        "bundled/opt-bundled",
        "--data",
        "bundled/sst2-mini/train.jsonl",
        "--task",
        "sst2",
        "--train-examples",
        "16",
        "--dev-examples",
        "8",
        "--test",
        "bundled/sst2-mini/dev.jsonl",
        "--test-examples",
        "8",
        "--ratio",
        "0.01",
        "--mask-seed",
        "0",
        "--seed",
        "0",
        "--lr",
        "0.01",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--out",
        path_str(&train),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let summary = json(&train.join("summary.json"));
    for (ours, theirs) in [
        ("trained_count", &summary["trained_count"]),
        ("indices_sha256", &summary["indices_sha256"]),
        ("steps", &summary["steps"]),
        ("best_step", &summary["best"]["step"]),
        ("best_dev_loss", &summary["best"]["dev_loss"]),
        ("best_dev_accuracy", &summary["best"]["dev_accuracy"]),
        ("test_loss", &summary["test"]["loss"]),
        ("test_accuracy", &summary["test"]["accuracy"]["accuracy"]),
        ("distance_best", &summary["distance_best"]),
        ("distance_final", &summary["distance_final"]),
    ] {
        assert!(!theirs.is_null(), "{ours}");
        assert_eq!(&cell[ours], theirs, "{ours}");
    }
}

#[test]
fn shards_cover_the_grid_and_report_from_disk() {
    let (dir, spec) = setup(SPEC);
    let out = dir.path().join("run");
    let status = sweep(&spec, &out, &["--status", "--shards", "2"]);
    assert!(status.contains("7 cells: 0 done, 7 missing\n"), "{status}");
    let first = sweep(&spec, &out, &["--shard", "1/2"]);
    let status = sweep(&spec, &out, &["--status", "--shards", "2"]);
    let owned_by_2 = status.matches(": shard 2/2\n").count();
    assert!(
        owned_by_2 > 0 && !status.contains(": shard 1/2\n"),
        "{first}\n{status}"
    );
    assert!(
        status.contains(&format!(
            "7 cells: {} done, {owned_by_2} missing\n",
            7 - owned_by_2
        )),
        "{status}"
    );
    // an incomplete grid's report lists what is missing
    sweep(&spec, &out, &["--report", "--shards", "2"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains(&format!("**Incomplete: {owned_by_2} of 7 cells")),
        "{report}"
    );
    sweep(&spec, &out, &["--shard", "2/2"]);
    let status = sweep(&spec, &out, &["--status"]);
    assert!(status.contains("7 cells: 7 done, 0 missing\n"), "{status}");
    sweep(&spec, &out, &["--report"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!report.contains("Incomplete"), "{report}");
    for figure in ["accuracy", "sharpness", "distance"] {
        assert!(out.join(format!("tiny-{figure}.png")).is_file(), "{figure}");
        assert!(out.join(format!("tiny-{figure}.svg")).is_file(), "{figure}");
    }
    // the shards wrote what one process writes
    let whole = dir.path().join("whole");
    sweep(&spec, &whole, &[]);
    assert_same_tree(&whole.join("cells"), &out.join("cells"));
}

#[test]
fn bad_specs_are_one_error_line_naming_the_key() {
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "lrs = [0.01, 1e30]",
            "lrz = [0.01]",
            &["tiny.toml", "unknown field `lrz`"],
        ),
        (
            "epochs = 2",
            "epochs = 0",
            &["tiny.toml", "[train] epochs: must be at least 1"],
        ),
        (
            "ratios = [0.01]",
            "ratios = [0.01, 2.0]",
            &["[sweep] ratios: 2 is not a trainable ratio"],
        ),
        ("iters = 4", "iters = 1", &["[hessian] iters"]),
    ];
    for (from, to, expected) in cases {
        let (dir, spec) = setup(&SPEC.replace(from, to));
        let out = dir.path().join("run");
        assert_user_error(
            &["sweep", path_str(&spec), "--out", path_str(&out)],
            expected,
        );
        assert!(!out.exists(), "{to}: nothing is written");
    }
    let (dir, spec) = setup(SPEC);
    let out = dir.path().join("run");
    assert_user_error(
        &[
            "sweep",
            path_str(&spec),
            "--out",
            path_str(&out),
            "--report",
        ],
        &["holds no cell of this spec"],
    );
}
