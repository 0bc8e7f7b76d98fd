//! `maskscape sweep` on a `gd_stability` spec through the binary on the bundled
//! model: cells are cached and a rerun resumes (recomputing only what is missing,
//! to the same bits), `--status` and `--report` read the cells on disk, and a bad
//! key is one error line naming it.

mod common;

use common::{assert_user_error, path_str, sweep};

/// One mask, one divergence level, one edge run: three cells of a few GD steps.
const SPEC: &str = "kind = \"gd_stability\"\ntitle = \"Tiny\"\n[stability]\n\
    model = \"bundled/opt-bundled\"\ndata = \"bundled/sst2-mini/train.jsonl\"\n\
    task = \"sst2\"\nexamples = 2\nratios = [0.01]\nseeds = [0]\niters = 6\nsteps = 3\n\
    blowup = [1.0]\ntolerance = 0.5\nmax_factor = 4.0\n\
    [stability.edge]\nratio = 0.01\nfactors = [2.0]\nsteps = 4\nsharpness_every = 2\n";

#[test]
fn cells_are_cached_and_a_rerun_resumes_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::write(dir.path(), "tiny.toml", SPEC);
    let out = dir.path().join("out");
    let stdout = sweep(&spec, &out, &[]);
    assert!(stdout.contains("3 cells computed, 0 reused"), "{stdout}");
    let cells = out.join("cells");
    let threshold = cells.join("ratio-1e-2-seed-0.json");
    let edge = cells.join("edge/factor-2.json");
    let (threshold_bytes, edge_bytes) = (
        std::fs::read(&threshold).unwrap(),
        std::fs::read(&edge).unwrap(),
    );
    for name in [
        "thresholds.csv",
        "runs.csv",
        "edge_sharpness.csv",
        "report.md",
        "tiny.png",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }

    // A killed run leaves whole cells only: one gone is recomputed, bit for bit,
    // and nothing else is.
    std::fs::remove_file(&edge).unwrap();
    let stdout = sweep(&spec, &out, &[]);
    assert!(stdout.contains("1 cells computed, 2 reused"), "{stdout}");
    assert_eq!(std::fs::read(&edge).unwrap(), edge_bytes);
    assert_eq!(std::fs::read(&threshold).unwrap(), threshold_bytes);

    // The record holds the prediction and a bracket around the measured rate.
    let record: serde_json::Value = serde_json::from_slice(&threshold_bytes).unwrap();
    let predicted = record["predicted"].as_f64().unwrap();
    let lambda = record["lambda_max"]["value"].as_f64().unwrap();
    assert!((predicted * lambda - 2.0).abs() < 1e-12, "{record}");
    let runs = record["thresholds"][0]["runs"].as_array().unwrap();
    assert_eq!(runs[0]["lr"].as_f64().unwrap(), predicted);

    // A cell from other settings is stale: --status says so, a rerun replaces it.
    let text = String::from_utf8(threshold_bytes.clone()).unwrap();
    let key = record["key"].as_str().unwrap();
    std::fs::write(&threshold, text.replace(key, &"0".repeat(64))).unwrap();
    let status = sweep(&spec, &out, &["--status"]);
    assert!(
        status.contains("3 cells: 2 done, 1 missing (1 of them stale"),
        "{status}"
    );
    assert!(
        status.contains("stale ratio-1e-2-seed-0: shard 1/1"),
        "{status}"
    );
    let stdout = sweep(&spec, &out, &[]);
    assert!(stdout.contains("1 cells computed, 2 reused"), "{stdout}");
    assert_eq!(std::fs::read(&threshold).unwrap(), threshold_bytes);

    // --report from an incomplete grid says which cell is missing.
    std::fs::remove_file(cells.join("scope.json")).unwrap();
    let stdout = sweep(&spec, &out, &["--report", "--shards", "2"]);
    assert!(stdout.contains("2 of 3 cells on disk"), "{stdout}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("**Incomplete: 1 of 3 cells are missing**"),
        "{report}"
    );
    assert!(report.contains("- `scope` (missing, shard"), "{report}");
}

#[test]
fn bad_keys_are_one_error_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (edit, expected) in [
        (("steps = 3", "stepz = 3"), "stepz"),
        (("steps = 3", "steps = 0"), "steps: must be at least 1"),
        (
            ("blowup = [1.0]", "blowup = [0.5]"),
            "blowup: must be a non-empty list",
        ),
        (("ratios = [0.01]", "ratios = [2.0]"), "ratios:"),
        (
            ("sharpness_every = 2", "sharpness_every = 0"),
            "edge.sharpness_every",
        ),
    ] {
        let spec = common::write(dir.path(), "bad.toml", &SPEC.replace(edit.0, edit.1));
        let out = dir.path().join("out");
        assert_user_error(
            &["sweep", path_str(&spec), "--out", path_str(&out)],
            &["bad.toml", expected],
        );
        assert!(!out.exists(), "{expected}: wrote output");
    }
    // A ratio the model's scope cannot hold is found once the model is read.
    let spec = common::write(dir.path(), "bad.toml", &SPEC.replace("[0.01]", "[0.5]"));
    assert_user_error(
        &[
            "sweep",
            path_str(&spec),
            "--out",
            path_str(&dir.path().join("out2")),
        ],
        &["ratios", "0.5"],
    );
}
