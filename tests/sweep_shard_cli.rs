//! Sharded sweeps through the binary on the bundled model: two shard processes at
//! once give the same files as one process, byte for byte; a shard killed
//! (SIGKILL) inside a cell leaves only complete cells and its rerun completes the
//! grid; `--status` and `--report` on an incomplete grid; bad flags.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{assert_same_tree, assert_user_error, names, path_str, sweep, tree};

/// Two checkpoint names for the bundled model (ten cells): each shard of two then
/// owns one whole-scope reference and cells of both checkpoints.
const SPEC: &str = "kind = \"sweep\"\ntitle = \"Sharded\"\n[sweep]\n\
    checkpoints = [{ name = \"a\", path = \"bundled/opt-bundled\" }, \
                   { name = \"b\", path = \"bundled/opt-bundled\" }]\n\
    data = \"bundled/sst2-mini/dev.jsonl\"\ntask = \"sst2\"\nmax_examples = 2\nbatch = 8\n\
    ratios = [0.1, 0.01]\nseeds = [0, 1]\ndtype = \"f32\"\niters = 6\ntrace_products = 4\n\
    scope_iters = 8\nscope_trace_products = 6\n";

/// A folder with the spec `sharded.toml`.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::write(dir.path(), "sharded.toml", SPEC);
    (dir, spec)
}

fn spawn(spec: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_maskscape"))
        .args(["sweep", path_str(spec), "--out", path_str(out)])
        .args(extra)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_shards_at_once_write_what_one_process_writes() {
    let (dir, spec) = setup();
    let one = dir.path().join("one");
    let first = sweep(&spec, &one, &[]);
    assert!(first.contains("10 cells computed"), "{first}");

    let two = dir.path().join("two");
    let shards: Vec<Child> = ["1/2", "2/2"]
        .iter()
        .map(|s| spawn(&spec, &two, &["--shard", s], &[]))
        .collect();
    let outputs: Vec<String> = shards
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
        .collect();
    // The split balances cost: each shard owns one scope reference (the dearest
    // cells) and four of the eight masked cells, and computes them all.
    assert!(
        outputs[0].contains("shard 1/2: 5 of the 10 cells (expected cost 269 of 538), 5 computed"),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[1].contains("shard 2/2: 5 of the 10 cells (expected cost 269 of 538), 5 computed"),
        "{}",
        outputs[1]
    );
    // A shard writes cells only; the report comes from --report.
    assert!(!two.join("report.md").exists());
    let status = sweep(&spec, &two, &["--status", "--shards", "2"]);
    assert!(
        status.contains("10 cells: 10 done, 0 missing\n"),
        "{status}"
    );
    let report = sweep(&spec, &two, &["--report", "--shards", "2"]);
    assert!(report.contains("10 of 10 cells on disk"), "{report}");
    // Cells, tables, figure, report and manifest: the same bytes.
    assert_same_tree(&one, &two);

    // A rerun of the whole spec or of a shard computes nothing.
    let again = sweep(&spec, &two, &[]);
    assert!(again.contains("0 cells computed (0 Hessian-vector products), 10 reused"));
    let shard = sweep(&spec, &two, &["--shard", "2/2"]);
    assert!(
        shard.contains("0 computed (0 Hessian-vector products), 5 reused"),
        "{shard}"
    );
    assert_same_tree(&one, &two);
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
fn a_shard_killed_mid_cell_leaves_whole_cells_and_its_rerun_completes_the_grid() {
    use std::os::unix::process::ExitStatusExt;

    let (dir, spec) = setup();
    let out = dir.path().join("run");
    // Shard 1/2 runs a/scope (12 products on the bundled model: Lanczos converges in 6
    // of its 8, then 6 for the trace), then a/ratio-1e-1-seed-0: the hook stops it
    // after 16 products, inside that second cell, and says so on stderr.
    let mut child = KillOnDrop(spawn(
        &spec,
        &out,
        &["--shard", "1/2"],
        &[("MASKSCAPE_SWEEP_STALL_AFTER", "16")],
    ));
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let stalled = lines
        .find_map(|line| line.ok().filter(|l| l.contains("stalled inside a cell")))
        .expect("the shard reaches the stall");
    assert!(
        stalled.contains("after 16 Hessian-vector products"),
        "{stalled}"
    );
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");

    // Only the finished cell is on disk: no partial cell, no temporary file.
    let cells = tree(&out.join("cells"));
    assert_eq!(names(&cells), ["a/scope.json"]);
    let record: serde_json::Value = serde_json::from_slice(&cells[0].1).unwrap();
    assert_eq!(record["kind"], "scope");
    assert_eq!(record["hvps"], 12);
    let status = sweep(&spec, &out, &["--status", "--shards", "2"]);
    assert!(status.contains("10 cells: 1 done, 9 missing\n"), "{status}");
    assert!(
        status.contains("shard 1/2: 5 cells, 1 done, 4 missing (expected cost 269)\n"),
        "{status}"
    );
    assert!(
        status.contains("missing a/ratio-1e-1-seed-0: shard 1/2\n"),
        "{status}"
    );
    assert!(status.contains("missing b/scope: shard 2/2\n"), "{status}");

    // The shard's rerun computes its four missing cells; a plain run of the
    // whole spec then computes only the other shard's five.
    let rerun = sweep(&spec, &out, &["--shard", "1/2"]);
    assert!(rerun.contains("4 computed"), "{rerun}");
    assert!(rerun.contains("1 reused"), "{rerun}");
    let whole = sweep(&spec, &out, &[]);
    assert!(whole.contains("5 cells computed"), "{whole}");
    assert!(whole.contains("5 reused"), "{whole}");
    let status = sweep(&spec, &out, &["--status"]);
    assert!(
        status.contains("10 cells: 10 done, 0 missing\n"),
        "{status}"
    );

    // The same cells as a run never interrupted.
    let fresh = dir.path().join("fresh");
    sweep(&spec, &fresh, &[]);
    assert_same_tree(&fresh.join("cells"), &out.join("cells"));
}

#[test]
fn report_of_an_incomplete_grid_marks_the_missing_cells() {
    let (dir, spec) = setup();
    let out = dir.path().join("run");
    assert_user_error(
        &[
            "sweep",
            path_str(&spec),
            "--out",
            path_str(&out),
            "--report",
        ],
        &["cells: holds no cell of this spec: run the sweep (or its shards) first"],
    );
    sweep(&spec, &out, &["--shard", "2/2"]);
    // A damaged cell counts as stale, to be recomputed.
    let damaged = out.join("cells/b/ratio-1e-2-seed-1.json");
    assert!(damaged.is_file());
    std::fs::write(&damaged, "{\"key\": \"truncated").unwrap();
    let stdout = sweep(&spec, &out, &["--report", "--shards", "2"]);
    assert!(stdout.contains("4 of 10 cells on disk"), "{stdout}");
    assert!(
        stdout.contains("stale b/ratio-1e-2-seed-1: shard 2/2\n"),
        "{stdout}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.starts_with(
            "# Sharded\n\n**Incomplete: 6 of 10 cells are missing**, so the tables, figure and \
             reading below use the 4 cells on disk."
        ),
        "{report}"
    );
    for line in [
        "- `a/scope` (missing, shard 1/2)\n",
        "- `a/ratio-1e-1-seed-0` (missing, shard 1/2)\n",
        "- `b/ratio-1e-2-seed-1` (stale, shard 2/2)\n",
        "Checkpoint `a` has no summary rows or reading until its whole-scope reference \
         `a/scope` is computed.\n",
    ] {
        assert!(report.contains(line), "`{line}` not in:\n{report}");
    }
    // The cells table holds the four cells on disk.
    let table = std::fs::read_to_string(out.join("cells.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 4, "{table}");

    // Shard 2's rerun replaces the damaged cell only.
    let rerun = sweep(&spec, &out, &["--shard", "2/2"]);
    assert!(rerun.contains("1 computed"), "{rerun}");
    assert!(rerun.contains("4 reused"), "{rerun}");
}

#[test]
fn bad_shard_flags_are_one_line_errors_and_write_nothing() {
    let (dir, spec) = setup();
    let out = dir.path().join("run");
    let spec_s = path_str(&spec);
    let out_s = path_str(&out);
    for (extra, expected) in [
        (
            &["--shard", "0/2"][..],
            "--shard: 0/2: the shard I of N must satisfy 1 <= I <= N",
        ),
        (
            &["--shard", "3/2"][..],
            "--shard: 3/2: the shard I of N must satisfy 1 <= I <= N",
        ),
        (
            &["--shard", "2"][..],
            "--shard: `2` is not I/N (shard I of N, 1-based, e.g. 3/8)",
        ),
        (
            &["--status", "--report"][..],
            "--status: and --report are separate steps: pass one",
        ),
        (
            &["--shard", "1/2", "--status"][..],
            "--shard: runs cells; --status and --report take --shards N instead",
        ),
        (
            &["--shards", "2"][..],
            "--shards: goes with --status or --report (a shard runs with --shard I/N)",
        ),
        (
            &["--status", "--shards", "0"][..],
            "--shards: must be at least 1",
        ),
    ] {
        let mut args = vec!["sweep", spec_s, "--out", out_s];
        args.extend_from_slice(extra);
        assert_user_error(&args, &[expected]);
        assert!(!out.exists(), "{extra:?} wrote output");
    }
    let run = spawn(
        &spec,
        &out,
        &["--shard", "1/2"],
        &[("MASKSCAPE_SWEEP_STALL_AFTER", "soon")],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        "error: MASKSCAPE_SWEEP_STALL_AFTER: \"soon\" is not a number of products\n"
    );
    assert!(!out.exists());
}
