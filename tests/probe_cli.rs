//! `maskscape probe`, `landscape` and `sweep` through the binary: outputs and
//! manifests on the PyTorch fixture, eigenvectors reused by a landscape, a sweep
//! rerun that reuses its cells, and bad input (one-line errors, exit code 2, no
//! partial output).

mod common;

use std::path::Path;

use serde_json::Value;

use common::{assert_user_error, maskscape, repo};

const TINY: &str = "tests/fixtures/opt-tiny-preln";
const REFERENCE: &str = "tests/fixtures/opt-tiny-preln/reference.safetensors";

fn run_ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = maskscape(args);
    assert_eq!(code, 0, "{args:?}\n{stdout}\n{stderr}");
    stdout
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The float64 values of a tensor in a safetensors file.
fn tensor_f64(path: &str, name: &str) -> Vec<f64> {
    let bytes = std::fs::read(repo(path)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn probe_writes_every_output_and_matches_the_fixture() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("probe");
    let dir_s = dir.to_str().unwrap();
    let stdout = run_ok(&[
        "probe",
        "--model",
        TINY,
        "--tokenized",
        REFERENCE,
        "--mask",
        REFERENCE,
        "--method",
        "all",
        "--k",
        "5",
        "--which",
        "both",
        "--iters",
        "300",
        "--trace-products",
        "90",
        "--probes",
        "2",
        "--save-eigenvectors",
        "--out",
        dir_s,
    ]);
    assert!(
        stdout.contains("largest eigenvalues (Lanczos): 1.8326"),
        "{stdout}"
    );
    for file in [
        "summary.json",
        "manifest.json",
        "ritz_values.csv",
        "ritz_values.parquet",
        "density.csv",
        "density.parquet",
        "slq_nodes.csv",
        "convergence.csv",
        "convergence.parquet",
        "density.svg",
        "density.png",
        "convergence.svg",
        "convergence.png",
        "eigenvectors.safetensors",
    ] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
    let summary = json(&dir.join("summary.json"));
    let exact = tensor_f64(REFERENCE, "masked_hessian_eigs");
    let top = summary["spectrum"]["lanczos"]["top"].as_array().unwrap();
    for (i, pair) in top.iter().enumerate() {
        let want = exact[exact.len() - 1 - i];
        let got = pair["value"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-8 * want.abs(), "{got} vs {want}");
        assert!(pair["residual"].as_f64().unwrap() < 1e-6);
    }
    let bottom = summary["spectrum"]["lanczos"]["bottom"].as_array().unwrap();
    for (i, pair) in bottom.iter().enumerate() {
        let got = pair["value"].as_f64().unwrap();
        assert!((got - exact[i]).abs() <= 1e-8 * exact[i].abs());
    }
    let trace = &summary["spectrum"]["trace"];
    let exact_trace = tensor_f64(REFERENCE, "masked_hessian_trace")[0];
    let (lo, hi) = (
        trace["interval95"][0].as_f64().unwrap(),
        trace["interval95"][1].as_f64().unwrap(),
    );
    assert!(lo <= exact_trace && exact_trace <= hi);
    assert!(trace["standard_error"].as_f64().unwrap() > 0.0);
    let loss = tensor_f64(REFERENCE, "loss")[0];
    assert!((summary["evaluation"]["loss"].as_f64().unwrap() - loss).abs() < 1e-12);
    let timing = &summary["timing"];
    let total = timing["total_s"].as_f64().unwrap();
    let parts = ["load_s", "evaluation_s", "hvp_s", "other_s"]
        .iter()
        .map(|k| timing[k].as_f64().unwrap())
        .sum::<f64>();
    assert!((parts - total).abs() < 1e-6 * total.max(1.0));
    assert!(summary["hvps"].as_u64().unwrap() > 100);

    let manifest = json(&dir.join("manifest.json"));
    assert_eq!(manifest["command"], "probe");
    let roles: Vec<&str> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["model", "model", "data", "mask"]);
    for input in manifest["inputs"].as_array().unwrap() {
        assert_eq!(input["sha256"].as_str().unwrap().len(), 64);
    }
    assert_eq!(manifest["parameters"]["iters"], 300);
    assert_eq!(manifest["parameters"]["hessian"]["mask_seed"], 0);
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    let resolved = &manifest["parameters"]["resolved"];
    assert_eq!(
        resolved["indices_sha256"],
        summary["hessian"]["indices_sha256"]
    );
    assert_eq!(resolved["model_sha256"], summary["model"]["sha256"]);
    assert_eq!(resolved["dim"], 168);
    assert_eq!(
        summary["hessian"]["indices_sha256"].as_str().unwrap().len(),
        64
    );
    assert_eq!(summary["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        manifest["outputs"].as_array().unwrap().len(),
        std::fs::read_dir(&dir).unwrap().count() - 1
    );

    // The saved top eigenvectors feed a landscape: along the first, the measured
    // curvature is the top eigenvalue.
    let eig = dir.join("eigenvectors.safetensors");
    let land = out.path().join("landscape");
    run_ok(&[
        "landscape",
        "--model",
        TINY,
        "--tokenized",
        REFERENCE,
        "--mask",
        REFERENCE,
        "--directions",
        "top-eigen",
        "--eigenvectors",
        eig.to_str().unwrap(),
        "--span",
        "1e-4",
        "--points",
        "5",
        "--out",
        land.to_str().unwrap(),
    ]);
    let s = json(&land.join("summary.json"));
    let curvature = s["directions"][0]["rayleigh_quotient"].as_f64().unwrap();
    let want = exact[exact.len() - 1];
    assert!((curvature - want).abs() < 1e-8 * want.abs(), "{curvature}");
    for file in [
        "landscape.csv",
        "landscape.parquet",
        "landscape.svg",
        "landscape.png",
        "manifest.json",
    ] {
        assert!(land.join(file).is_file(), "missing {file}");
    }
    // The same file against another mask is refused.
    let other = out.path().join("other");
    assert_user_error(
        &[
            "landscape",
            "--model",
            TINY,
            "--tokenized",
            REFERENCE,
            "--ratio",
            "0.05",
            "--eigenvectors",
            eig.to_str().unwrap(),
            "--out",
            other.to_str().unwrap(),
        ],
        &["are not the"],
    );
    assert!(!other.exists());
}

/// Runs a Lanczos probe of the fixture with `iters` products; returns stdout and
/// `summary.json`'s Lanczos part.
fn lanczos_probe(dir: &Path, iters: u64) -> (String, Value) {
    let out = dir.join(format!("iters-{iters}"));
    let stdout = run_ok(&[
        "probe",
        "--model",
        TINY,
        "--tokenized",
        REFERENCE,
        "--mask",
        REFERENCE,
        "--method",
        "lanczos",
        "--k",
        "5",
        "--which",
        "both",
        "--iters",
        &iters.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let summary = json(&out.join("summary.json"));
    (stdout, summary["spectrum"]["lanczos"].clone())
}

/// Every pair of the Lanczos summary, top then bottom.
fn pairs(lanczos: &Value) -> Vec<Value> {
    let mut all = lanczos["top"].as_array().unwrap().clone();
    all.extend(lanczos["bottom"].as_array().unwrap().iter().cloned());
    all
}

#[test]
fn printed_verdicts_match_the_summary_and_name_the_budget_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    // Too few products for the residuals: the first line says so, in words, and
    // each pair that missed says it.
    let (stdout, lanczos) = lanczos_probe(tmp.path(), 40);
    let missed = pairs(&lanczos)
        .iter()
        .filter(|p| !p["residual_converged"].as_bool().unwrap())
        .count();
    assert!(missed > 0);
    assert!(
        stdout.contains(&format!(
            "Lanczos verdict: NOT CONVERGED: {missed} of 10 residuals above the tolerance after 40 products"
        )),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("above tolerance)").count(),
        missed,
        "{stdout}"
    );
    assert_eq!(
        lanczos["verdict"]["residuals_converged"],
        10 - missed as u64
    );

    // Enough for the residuals, not for the multiplicity check: the values are
    // accurate and said to be, and the line names the budget the check needs.
    let (stdout, lanczos) = lanczos_probe(tmp.path(), 60);
    for pair in pairs(&lanczos) {
        assert_eq!(pair["residual_converged"], true, "{pair}");
        assert_eq!(pair["converged"], false, "{pair}");
    }
    let verdict = &lanczos["verdict"];
    assert_eq!(verdict["multiplicities_checked"], true);
    assert_eq!(verdict["multiplicities_verified"], false);
    let needed = verdict["products_to_verify"].as_u64().unwrap();
    assert_eq!(verdict["additional_products_to_verify"], needed - 60);
    assert!(
        stdout.contains(&format!(
            "Lanczos verdict: all 10 residuals within the tolerance (the values are accurate); \
             multiplicities not verified within 60 products: raise --iters to about {needed} to \
             check for missed repeated eigenvalues"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("above tolerance"), "{stdout}");

    // The budget it names verifies: every verdict true, in the summary and on screen.
    let (stdout, lanczos) = lanczos_probe(tmp.path(), needed);
    for pair in pairs(&lanczos) {
        assert_eq!(pair["residual_converged"], true, "{pair}");
        assert_eq!(pair["converged"], true, "{pair}");
    }
    assert_eq!(lanczos["verdict"]["multiplicities_verified"], true);
    assert_eq!(lanczos["verdict"]["products_to_verify"], Value::Null);
    assert!(
        stdout.contains(
            "Lanczos verdict: all 10 residuals within the tolerance; multiplicities verified"
        ),
        "{stdout}"
    );
    let table = std::fs::read_to_string(tmp.path().join(format!("iters-{needed}/ritz_values.csv")))
        .unwrap();
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .ends_with("relative_residual,residual_converged,converged"),
        "{table}"
    );
}

#[test]
fn two_d_landscape_and_full_hessian_probe() {
    let out = tempfile::tempdir().unwrap();
    let land = out.path().join("land2d");
    run_ok(&[
        "landscape",
        "--model",
        TINY,
        "--tokenized",
        REFERENCE,
        "--ratio",
        "0.05",
        "--mask-seed",
        "3",
        "--directions",
        "random",
        "--2d",
        "--points",
        "5",
        "--span",
        "0.5",
        "--out",
        land.to_str().unwrap(),
    ]);
    let table = std::fs::read_to_string(land.join("landscape.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 25);
    assert!(table.starts_with("alpha,beta,loss,quadratic_model"));
    // The map, and the slices beside it.
    for file in [
        "landscape.svg",
        "landscape.png",
        "landscape-slices.svg",
        "landscape-slices.png",
    ] {
        assert!(land.join(file).is_file(), "missing {file}");
    }
    let fraction = json(&land.join("summary.json"))["quadratic_agreement_fraction_1pct"]
        .as_f64()
        .unwrap();
    assert!(
        (0.0..=1.0).contains(&fraction) && fraction > 0.0,
        "{fraction}"
    );
    let full = out.path().join("full");
    let stdout = run_ok(&[
        "probe",
        "--model",
        TINY,
        "--tokenized",
        REFERENCE,
        "--full",
        "--method",
        "lanczos",
        "--k",
        "2",
        "--which",
        "largest",
        "--out",
        full.to_str().unwrap(),
    ]);
    let exact = tensor_f64(REFERENCE, "full_hessian_eigs");
    let summary = json(&full.join("summary.json"));
    let top = summary["spectrum"]["lanczos"]["top"][0]["value"]
        .as_f64()
        .unwrap();
    assert!(
        (top - exact[exact.len() - 1]).abs() < 1e-8 * top.abs(),
        "{stdout}"
    );
    assert_eq!(summary["hessian"]["dim"], 1680);
}

#[test]
fn sweep_rerun_reuses_every_cell() {
    let out = tempfile::tempdir().unwrap();
    let spec = out.path().join("tiny_sweep.toml");
    std::fs::write(
        &spec,
        format!(
            "kind = \"sweep\"\ntitle = \"tiny\"\n[sweep]\ndata = \"{REFERENCE}\"\n\
             checkpoints = [{{ name = \"tiny\", path = \"{TINY}\" }}]\nratios = [0.1, 0.05]\n\
             seeds = [0, 1]\niters = 40\ntrace_products = 12\nscope_iters = 60\n\
             scope_trace_products = 24\n"
        ),
    )
    .unwrap();
    let dir = out.path().join("run");
    let args = [
        "sweep",
        spec.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ];
    let first = run_ok(&args);
    assert!(first.contains("5 cells computed"), "{first}");
    // The verdict comes first, and agrees with the cells' table.
    let verdict = first.lines().next().unwrap();
    assert!(verdict.starts_with("- Verdict: "), "{first}");
    let cells = std::fs::read_to_string(dir.join("cells.csv")).unwrap();
    let header: Vec<&str> = cells.lines().next().unwrap().split(',').collect();
    let column = header
        .iter()
        .position(|&c| c == "residual_converged")
        .unwrap();
    let missed = cells
        .lines()
        .skip(1)
        .filter(|row| row.split(',').nth(column) == Some("false"))
        .count();
    assert_eq!(
        missed == 0,
        verdict.contains("every λmax residual (4 cells and the whole-scope reference) is within"),
        "{verdict}\n{cells}"
    );
    let second = run_ok(&args);
    assert!(
        second.contains("0 cells computed (0 Hessian-vector products), 5 reused"),
        "{second}"
    );
    for file in [
        "cells.csv",
        "summary.parquet",
        "tiny_sweep.svg",
        "tiny_sweep.png",
        "report.md",
        "manifest.json",
    ] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("Fitted slope of log λmax against log ratio"));
    assert!(report.contains("Interlacing ceiling"));
    assert!(report.contains("Trace identity"));
}

#[test]
fn bad_input_gives_one_line_errors_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let out = tmp.path().join("out");
    let out_s = out.to_str().unwrap().to_string();
    let probe = |data: &str, extra: &[&str], expected: &str| {
        let mut args = vec![
            "probe",
            "--model",
            "bundled/opt-bundled",
            "--data",
            data,
            "--task",
            "sst2",
            "--out",
            &out_s,
        ];
        args.extend_from_slice(extra);
        assert_user_error(&args, &[expected]);
        assert!(!out.exists(), "no output after an error");
    };
    let no_text = write("no_text.jsonl", "{\"review\": \"Fine.\", \"label\": 1}\n");
    let ratio: &[&str] = &["--ratio", "0.01"];
    probe(&no_text, ratio, "task sst2 needs a `sentence` column");
    let bad_label = write(
        "bad_label.jsonl",
        "{\"sentence\": \"Fine.\", \"label\": 1}\n{\"sentence\": \"Odd.\", \"label\": 2}\n",
    );
    probe(
        &bad_label,
        ratio,
        "row 2: label 2 is not one of the candidates",
    );
    let empty = write("empty.jsonl", "");
    probe(&empty, ratio, "empty");
    let fine = write("fine.jsonl", "{\"sentence\": \"Fine.\", \"label\": 1}\n");
    probe(
        &fine,
        &["--ratio", "0.01", "--tf32"],
        "--tf32: applies to --device cuda only",
    );
    probe(&fine, &["--ratio", "0.5"], "--ratio");
    probe(
        &fine,
        &["--ratio", "0.01", "--k", "0"],
        "--k: must be at least 1",
    );
    let spec = write(
        "zero.toml",
        "kind = \"sweep\"\ntitle = \"x\"\n[sweep]\ndata = \"bundled/sst2-mini/dev.jsonl\"\n\
         task = \"sst2\"\ncheckpoints = [{ name = \"b\", path = \"bundled/opt-bundled\" }]\n\
         ratios = [0.01, 0.0]\n",
    );
    assert_user_error(
        &["sweep", &spec, "--out", &out_s],
        &["zero.toml: [sweep] ratios: 0 is not a trainable ratio (each must lie in (0, 1])"],
    );
    assert!(!out.exists());
    let wrong_kind = write("theory.toml", "kind = \"theory\"\ntitle = \"x\"\n");
    assert_user_error(
        &["sweep", &wrong_kind, "--out", &out_s],
        &["maskscape sweep runs kind = \"sweep\""],
    );
}
