//! End-to-end tests of `maskscape spectrum`: real matrices written to .npy and
//! .safetensors files, results checked against the known spectrum, and every bad
//! input answered by one line and exit code 2.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_user_error, run};

/// A dense symmetric matrix with the given eigenvalues: `H diag(λ) H` with `H` a
/// Householder reflection along a fixed pseudo-random direction (row-major).
fn with_spectrum(lambda: &[f64]) -> Vec<f64> {
    let n = lambda.len();
    let mut u: Vec<f64> = (0..n)
        .map(|i| ((i * 7919 + 13) % 101) as f64 - 50.0)
        .collect();
    let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
    u.iter_mut().for_each(|x| *x /= norm);
    let w: Vec<f64> = (0..n).map(|i| lambda[i] * u[i]).collect();
    let uw: f64 = u.iter().zip(&w).map(|(a, b)| a * b).sum();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let d = if i == j { lambda[i] } else { 0.0 };
            a[i * n + j] = d - 2.0 * u[i] * w[j] - 2.0 * w[i] * u[j] + 4.0 * uw * u[i] * u[j];
        }
    }
    // Exact symmetry (the construction is symmetric up to rounding).
    for i in 0..n {
        for j in 0..i {
            let m = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = m;
            a[j * n + i] = m;
        }
    }
    a
}

/// A spectrum with separated outliers at both ends and a bulk in [-1, 1].
fn test_spectrum(n: usize) -> Vec<f64> {
    let mut lambda: Vec<f64> = (0..n)
        .map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64)
        .collect();
    lambda[..4].copy_from_slice(&[10.0, 7.0, 5.0, -6.0]);
    lambda
}

/// Writes a version 1.0 `.npy` file: the header dict `header`, padded as numpy pads
/// it, then `data` as given.
fn write_raw_npy(path: &Path, header: &str, data: &[u8]) {
    let mut header = header.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// A C-order float64 `.npy` file of `values` (row-major) with `shape`.
fn write_npy(path: &Path, values: &[f64], shape: &[usize]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw_npy(path, &header, &data);
}

fn write_safetensors(path: &Path, tensors: &[(&str, &[f64], [usize; 2])]) {
    let mut header = Vec::new();
    let mut data = Vec::new();
    for (name, values, shape) in tensors {
        let start = data.len();
        for v in values.iter() {
            data.extend(v.to_le_bytes());
        }
        header.push(format!(
            "\"{name}\":{{\"dtype\":\"F64\",\"shape\":[{},{}],\"data_offsets\":[{start},{}]}}",
            shape[0],
            shape[1],
            data.len()
        ));
    }
    let mut json = format!("{{{}}}", header.join(","));
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn summary(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(value: &serde_json::Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    npy: PathBuf,
    safetensors: PathBuf,
    spectrum: Vec<f64>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let n = 120;
    let spectrum = test_spectrum(n);
    let a = with_spectrum(&spectrum);
    let npy = root.join("a.npy");
    write_npy(&npy, &a, &[n, n]);
    let safetensors = root.join("a.safetensors");
    write_safetensors(&safetensors, &[("hessian", &a, [n, n])]);
    Fixture {
        _dir: dir,
        root,
        npy,
        safetensors,
        spectrum,
    }
}

#[test]
fn lanczos_matches_the_exact_spectrum_and_writes_every_output() {
    let f = fixture();
    let out = f.root.join("lanczos");
    let o = run(&[
        "spectrum",
        "--matrix",
        f.npy.to_str().unwrap(),
        "--method",
        "lanczos",
        "--k",
        "2",
        "--which",
        "both",
        "--tol",
        "1e-10",
        "--iters",
        "200",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in [
        "summary.json",
        "ritz.csv",
        "ritz.parquet",
        "spectrum.svg",
        "spectrum.png",
        "manifest.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let s = summary(&out);
    let got = floats(&s["result"]["eigenvalues"]);
    let mut sorted = f.spectrum.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = sorted.len();
    let want = [sorted[0], sorted[1], sorted[n - 2], sorted[n - 1]];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-9 * w.abs(), "{got:?}");
    }
    assert!(s["result"]["max_relative_error"].as_f64().unwrap() < 1e-9);
    assert!(
        s["result"]["theoretical_products_saad_bound"]
            .as_u64()
            .unwrap()
            > 0
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"], 3);
    assert_eq!(manifest["inputs"][0]["role"], "matrix");

    // Same seed, same bytes.
    let again = f.root.join("again");
    let o = run(&[
        "spectrum",
        "--matrix",
        f.npy.to_str().unwrap(),
        "--k",
        "2",
        "--which",
        "both",
        "--tol",
        "1e-10",
        "--iters",
        "200",
        "--seed",
        "3",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(out.join("ritz.csv")).unwrap(),
        std::fs::read(again.join("ritz.csv")).unwrap()
    );

    // The memory-bounded mode with an f32 basis through the same command.
    let bounded = f.root.join("bounded");
    let o = run(&[
        "spectrum",
        "--matrix",
        f.npy.to_str().unwrap(),
        "--k",
        "2",
        "--tol",
        "1e-6",
        "--iters",
        "400",
        "--reorth",
        "partial",
        "--basis",
        "16",
        "--f32-basis",
        "--out",
        bounded.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&bounded);
    assert!(s["result"]["peak_stored_vectors"].as_u64().unwrap() <= 16);
    let got = floats(&s["result"]["eigenvalues"]);
    assert!(
        (got[0] - 10.0).abs() < 1e-6 && (got[1] - 7.0).abs() < 1e-6,
        "{got:?}"
    );
}

#[test]
fn a_fortran_order_npy_gives_the_same_spectrum() {
    // numpy writes a transposed array in Fortran order: the columns one after the
    // other. For a symmetric matrix that is the same matrix.
    let n = 40;
    let spectrum = test_spectrum(n);
    let a = with_spectrum(&spectrum);
    let mut columns = Vec::with_capacity(n * n);
    for j in 0..n {
        for i in 0..n {
            columns.extend(a[i * n + j].to_le_bytes());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fortran.npy");
    write_raw_npy(
        &path,
        &format!("{{'descr': '<f8', 'fortran_order': True, 'shape': ({n}, {n}), }}"),
        &columns,
    );
    let out = dir.path().join("out");
    let o = run(&[
        "spectrum",
        "--matrix",
        path.to_str().unwrap(),
        "--method",
        "lanczos",
        "--k",
        "2",
        "--which",
        "both",
        "--tol",
        "1e-10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = floats(&summary(&out)["result"]["eigenvalues"]);
    let mut sorted = spectrum.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let want = [sorted[0], sorted[1], sorted[n - 2], sorted[n - 1]];
    assert_eq!(got.len(), 4, "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-9 * w.abs(), "{got:?} against {want:?}");
    }
}

#[test]
fn power_slq_and_trace_on_safetensors() {
    let f = fixture();
    let path = f.safetensors.to_str().unwrap();

    let out = f.root.join("power");
    let o = run(&[
        "spectrum",
        "--matrix",
        path,
        "--method",
        "power",
        "--k",
        "2",
        "--tol",
        "1e-8",
        "--iters",
        "500",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = floats(&summary(&out)["result"]["eigenvalues"]);
    assert!(
        (got[0] - 10.0).abs() < 1e-6 && (got[1] - 7.0).abs() < 1e-6,
        "{got:?}"
    );

    let out = f.root.join("slq");
    let o = run(&[
        "spectrum",
        "--matrix",
        path,
        "--method",
        "slq",
        "--iters",
        "40",
        "--probes",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["density.csv", "nodes.parquet", "spectrum.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let s = summary(&out);
    assert_eq!(s["result"]["products"], 320);
    let w1 = s["result"]["wasserstein1_over_width"]["density_to_exact"]
        .as_f64()
        .unwrap();
    assert!(w1 < 0.05, "W1 {w1}");

    let out = f.root.join("trace");
    let o = run(&[
        "spectrum",
        "--matrix",
        path,
        "--method",
        "trace",
        "--iters",
        "60",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&out);
    let exact: f64 = f.spectrum.iter().sum();
    assert!((s["result"]["exact_trace"].as_f64().unwrap() - exact).abs() < 1e-9);
    for estimate in s["result"]["estimates"].as_array().unwrap() {
        let (value, se) = (
            estimate["estimate"].as_f64().unwrap(),
            estimate["standard_error"].as_f64().unwrap(),
        );
        assert!((value - exact).abs() < 5.0 * se + 1e-9, "{estimate}");
    }
}

#[test]
fn theory_hessian_probe_matches_the_gram_spectrum() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("theory");
    let o = run(&[
        "spectrum",
        "--theory",
        "--n",
        "30",
        "--d",
        "800",
        "--ratio",
        "0.2",
        "--k",
        "3",
        "--which",
        "both",
        "--tol",
        "1e-10",
        "--iters",
        "400",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&out);
    assert_eq!(s["source"]["kind"], "theory");
    assert_eq!(s["dimension"], 800);
    // Largest from the 30 x 30 Gram matrix, smallest are the exact zeros of the
    // d - n dimensional null space, found once each by the multiplicity probes.
    assert!(
        s["result"]["max_relative_error"].as_f64().unwrap() < 1e-9,
        "{s}"
    );
    let got = floats(&s["result"]["eigenvalues"]);
    assert!(got[3..].iter().all(|v| v.abs() < 1e-10 * got[0]), "{got:?}");

    let trace = dir.path().join("trace");
    let o = run(&[
        "spectrum",
        "--theory",
        "--n",
        "30",
        "--d",
        "800",
        "--method",
        "trace",
        "--iters",
        "30",
        "--out",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exact = summary(&trace)["result"]["exact_trace"].as_f64().unwrap();
    assert!(exact > 0.0);
}

#[test]
fn bad_input_gives_one_line_and_exit_code_2() {
    let f = fixture();
    let dir = &f.root;
    let npy = |name: &str, values: &[f64], shape: &[usize]| {
        let p = dir.join(name);
        write_npy(&p, values, shape);
        p.to_str().unwrap().to_string()
    };
    let non_square = npy("rect.npy", &[0.0; 12], &[3, 4]);
    let asymmetric = npy("asym.npy", &[1.0, 2.0, 0.0, 1.0], &[2, 2]);
    let nan = npy("nan.npy", &[1.0, f64::NAN, f64::NAN, 1.0], &[2, 2]);
    let small = npy("small.npy", &[1.0, 0.0, 0.0, 2.0], &[2, 2]);
    let text = dir.join("matrix.txt");
    std::fs::write(&text, "1 0\n0 1\n").unwrap();
    let two = dir.join("two.safetensors");
    write_safetensors(&two, &[("a", &[1.0], [1, 1]), ("b", &[2.0], [1, 1])]);
    let missing = dir.join("missing.npy");
    let good = f.npy.to_str().unwrap().to_string();
    // Shapes whose size the file cannot hold: 10^18 float64s over 16 bytes, and
    // 2^31 x 2^31 float64s, whose byte count overflows (and wraps to 0).
    let huge = dir.join("huge.npy");
    write_raw_npy(
        &huge,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 1000000000), }",
        &[0; 16],
    );
    let wrapping = dir.join("wrapping.npy");
    write_raw_npy(
        &wrapping,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2147483648, 2147483648), }",
        &[],
    );

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--matrix".into(), missing.to_str().unwrap().into()],
            "missing.npy",
        ),
        (
            vec!["--matrix".into(), huge.to_str().unwrap().into()],
            "huge.npy: the header declares shape (1000000000, 1000000000)",
        ),
        (
            vec!["--matrix".into(), wrapping.to_str().unwrap().into()],
            "wrapping.npy: shape (2147483648, 2147483648) is too large",
        ),
        (vec!["--matrix".into(), non_square], "square"),
        (vec!["--matrix".into(), asymmetric], "not symmetric"),
        (vec!["--matrix".into(), nan], "non-finite"),
        (
            vec!["--matrix".into(), text.to_str().unwrap().into()],
            ".npy or .safetensors",
        ),
        (
            vec!["--matrix".into(), two.to_str().unwrap().into()],
            "--tensor",
        ),
        (
            vec!["--matrix".into(), small.clone(), "--k".into(), "3".into()],
            "--k",
        ),
        (
            vec![
                "--matrix".into(),
                small,
                "--k".into(),
                "1".into(),
                "--which".into(),
                "both".into(),
                "--method".into(),
                "power".into(),
            ],
            "--which",
        ),
        (
            vec![
                "--matrix".into(),
                good.clone(),
                "--iters".into(),
                "0".into(),
            ],
            "--iters",
        ),
        (
            vec!["--matrix".into(), good, "--tol".into(), "2".into()],
            "--tol",
        ),
    ];
    for (i, (args, needle)) in cases.into_iter().enumerate() {
        let out = dir.join(format!("bad{i}"));
        let mut full = vec!["spectrum".to_string()];
        full.extend(args);
        full.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        assert_user_error(&refs, &[needle]);
        assert!(!out.exists(), "case {i}: output folder written");
    }
}
