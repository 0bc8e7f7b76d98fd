//! End-to-end tests of `maskscape theory` and `maskscape reproduce` through the binary.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_user_error, path_str, run as maskscape};

#[test]
fn bad_input_is_one_clear_line_and_exit_code_two() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = path_str(&out);
    for ratios in ["0,0.5", "1.5", "-0.1,0.5", "0.5,nan"] {
        assert_user_error(
            &["theory", "eigen", "--ratios", ratios, "--out", out],
            &["--ratios"],
        );
    }
    assert_user_error(
        &["theory", "eigen", "--ratios", "0.5,2", "--out", out],
        &["--ratios", "2 is outside (0, 1]"],
    );
    assert_user_error(
        &["theory", "eigen", "--n", "0", "--out", out],
        &["--n", "at least 1"],
    );
    assert_user_error(
        &["theory", "lr", "--d", "0", "--out", out],
        &["--d", "at least 1"],
    );
    assert_user_error(
        &["theory", "eigen", "--trials", "0", "--out", out],
        &["--trials"],
    );
    assert_user_error(
        &["theory", "eigen", "--sigma", "-1", "--out", out],
        &["--sigma"],
    );
    assert_user_error(
        &["theory", "eigen", "--delta", "1.5", "--out", out],
        &["--delta"],
    );

    let nan_csv = dir.path().join("nan.csv");
    std::fs::write(&nan_csv, "1,2,3\n4,NaN,6\n").unwrap();
    assert_user_error(
        &["theory", "eigen", "--x", path_str(&nan_csv), "--out", out],
        &["nan.csv", "non-finite", "row 2, column 2"],
    );
    let inf_csv = dir.path().join("inf.csv");
    std::fs::write(&inf_csv, "1,inf\n").unwrap();
    assert_user_error(
        &["theory", "eigen", "--x", path_str(&inf_csv), "--out", out],
        &["inf.csv", "non-finite"],
    );
    let missing = dir.path().join("missing.npy");
    assert_user_error(
        &["theory", "all", "--x", path_str(&missing), "--out", out],
        &["missing.npy"],
    );
    let matrix = dir.path().join("x.csv");
    std::fs::write(&matrix, "1,2,3\n4,5,6\n").unwrap();
    assert_user_error(
        &[
            "theory",
            "eigen",
            "--x",
            path_str(&matrix),
            "--n",
            "5",
            "--out",
            out,
        ],
        &["--n", "x.csv has 2 rows"],
    );
    // Nothing was written by any of the failed runs.
    assert!(!dir.path().join("out").exists());
}

/// Reads every CSV in `dir` by name.
fn csv_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn a_run_writes_tables_figures_and_manifest_identically_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let run = |threads: &str, name: &str| {
        let out = dir.path().join(name);
        let args = [
            "theory",
            "all",
            "--n",
            "10",
            "--d",
            "200",
            "--ratios",
            "1,0.3,0.08",
            "--trials",
            "3",
            "--curve-ratios",
            "0.3",
            "--seed",
            "5",
            "--threads",
            threads,
            "--out",
            path_str(&out),
        ];
        let output = maskscape(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        (out, String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (one, stdout) = run("1", "one");
    let (two, _) = run("2", "two");

    assert!(stdout.contains("lambda1_mean") && stdout.contains("lr_measured_mean"));
    assert!(stdout.contains("w_norm_mean"));
    for stem in ["spectra", "lambda1", "stable_lr", "distance", "gd_curves"] {
        assert!(one.join(format!("{stem}.svg")).is_file(), "{stem}.svg");
        assert!(one.join(format!("{stem}.png")).is_file(), "{stem}.png");
    }
    for table in [
        "eigen_summary",
        "eigen_trials",
        "spectra",
        "lr_summary",
        "lr_trials",
        "gd_curves",
        "distance_summary",
        "distance_trials",
    ] {
        assert!(
            one.join(format!("{table}.parquet")).is_file(),
            "{table}.parquet"
        );
    }
    let tables = csv_files(&one);
    assert_eq!(tables.len(), 8);
    assert_eq!(
        tables,
        csv_files(&two),
        "results depend on the thread count"
    );

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"], 5);
    assert_eq!(manifest["command"], "theory all");
    assert_eq!(manifest["parameters"]["configs"][0]["n"], 10);
    assert_eq!(manifest["parameters"]["sweep"]["trials"], 3);
    assert_eq!(manifest["parameters"]["ratios"][1], 0.3);
    assert!(manifest["outputs"].as_array().unwrap().len() >= 26);

    // The summary holds one row per ratio, with the statistics the issue asks for.
    let summary = &tables
        .iter()
        .find(|(n, _)| n == "eigen_summary.csv")
        .unwrap()
        .1;
    let header = summary.lines().next().unwrap();
    for column in [
        "lambda1_mean",
        "lambda1_std",
        "lambda1_ci_lo",
        "lambda1_ci_hi",
        "bound",
        "trace_expected",
    ] {
        assert!(
            header.split(',').any(|c| c == column),
            "{column} missing: {header}"
        );
    }
    assert_eq!(summary.lines().count(), 4);
}

#[test]
fn a_matrix_file_fixes_n_and_d_and_is_recorded_with_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = faer::Mat::from_fn(6, 40, |i, j| ((i * 7 + j * 3) % 11) as f64 / 11.0);
    let npy = dir.path().join("x.npy");
    std::fs::write(&npy, maskscape::theory::matrix_file::npy_bytes(&matrix)).unwrap();
    let out = dir.path().join("out");
    let output = maskscape(&[
        "theory",
        "distance",
        "--x",
        path_str(&npy),
        "--ratios",
        "1,0.5",
        "--trials",
        "2",
        "--out",
        path_str(&out),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["parameters"]["configs"][0]["n"], 6);
    assert_eq!(manifest["parameters"]["configs"][0]["d"], 40);
    let input = &manifest["inputs"][0];
    assert_eq!(input["role"], "data");
    let (sha, _) = maskscape::report::manifest::sha256_file(&npy).unwrap();
    assert_eq!(input["sha256"], sha.as_str());
    // The entry bound of loaded data is max |x_ij| = 10/11.
    let r = manifest["parameters"]["configs"][0]["r"].as_f64().unwrap();
    assert!((r - 10.0 / 11.0).abs() < 1e-15);
}

const SPEC: &str = r#"
kind = "theory"
title = "A small sweep"
description = "Two ratios, two trials."
figures = ["lambda1", "stable_lr"]

[sweep]
part = "all"
n = [8]
d = [120]
ratios = [1.0, 0.25]
trials = 2
curve_ratios = [0.25]
curve_steps = 5
"#;

#[test]
fn reproduce_writes_figures_and_a_report_and_is_byte_identical_on_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let experiments = dir.path().join("experiments");
    std::fs::create_dir(&experiments).unwrap();
    std::fs::write(experiments.join("small.toml"), SPEC).unwrap();
    let run = |name: &str| {
        let root = dir.path().join(name);
        let output = maskscape(&[
            "reproduce",
            "--experiments",
            path_str(&experiments),
            "--figures",
            path_str(&root.join("figures")),
            "--analysis",
            path_str(&root.join("analysis")),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        root
    };
    let first = run("first");
    let second = run("second");
    for figure in ["small-lambda1", "small-stable_lr"] {
        assert!(
            first
                .join("figures")
                .join(format!("{figure}.png"))
                .is_file(),
            "{figure}"
        );
    }
    let report = std::fs::read_to_string(first.join("analysis/REPORT.md")).unwrap();
    assert!(report.contains("## A small sweep"), "{report}");
    assert!(report.contains("../figures/small-lambda1.png"));
    assert!(report.contains("Fitted slope of log λ₁ against log p"));
    assert!(report.contains("brackets lie within 1% of 2n/λ₁"));
    assert_eq!(
        report,
        std::fs::read_to_string(second.join("analysis/REPORT.md")).unwrap()
    );
    let tables = csv_files(&first.join("analysis/small"));
    assert!(!tables.is_empty());
    assert_eq!(tables, csv_files(&second.join("analysis/small")));
    for (name, _) in &tables {
        let parquet = name.replace(".csv", ".parquet");
        assert_eq!(
            std::fs::read(first.join("analysis/small").join(&parquet)).unwrap(),
            std::fs::read(second.join("analysis/small").join(&parquet)).unwrap(),
            "{parquet}"
        );
    }

    // A bad spec stops the run before anything is written, naming the file.
    std::fs::write(
        experiments.join("broken.toml"),
        "kind = \"theory\"\ntitle = \"x\"\n[sweep]\nratios = [0.0]\n",
    )
    .unwrap();
    let out = dir.path().join("third");
    assert_user_error(
        &[
            "reproduce",
            "--experiments",
            path_str(&experiments),
            "--figures",
            path_str(&out.join("figures")),
            "--analysis",
            path_str(&out.join("analysis")),
        ],
        &["broken.toml", "--ratios"],
    );
    assert!(!out.exists());
}
