//! `maskscape verify` and `maskscape bench hvp` through the binary: success, failed
//! verification, and bad input (each a one-line error and exit status 2).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use common::{assert_user_error, fixture, path_str, run as maskscape};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of `name`'s reference file with tensors edited by `edit` (name -> replacement,
/// `None` to drop it), written into `dir`.
fn edited_reference(
    name: &str,
    dir: &Path,
    edit: impl Fn(&str, Dtype, &[usize], &[u8]) -> Option<(Vec<usize>, Vec<u8>)>,
) -> PathBuf {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, t)| {
            edit(&k, t.dtype(), t.shape(), t.data())
                .map(|(shape, data)| (k, t.dtype(), shape, data))
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = kept
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let path = dir.join("reference.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

fn unchanged(_: &str, _: Dtype, shape: &[usize], data: &[u8]) -> Option<(Vec<usize>, Vec<u8>)> {
    Some((shape.to_vec(), data.to_vec()))
}

#[test]
fn verify_passes_on_a_fixture_and_prints_the_table() {
    let model = fixture("opt-tiny-postln-proj");
    let reference = model.join("reference.safetensors");
    for dtype in ["f64", "f32"] {
        let out = maskscape(&[
            "verify",
            "--model",
            model.to_str().unwrap(),
            "--reference",
            reference.to_str().unwrap(),
            "--dtype",
            dtype,
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{dtype}: {stdout}\n{stderr}");
        for quantity in [
            "logits",
            "loss",
            "grad",
            "grad_masked",
            "hvp",
            "hvp_masked",
            "masked_hessian_eigs",
            "full_hessian_trace",
        ] {
            assert!(
                stdout.contains(quantity),
                "{dtype}: {quantity} missing from\n{stdout}"
            );
        }
        assert!(
            // (9 before the masked gradient joined them)
            stdout.contains("all 10 quantities within tolerance"),
            "{stdout}"
        );
    }
}

#[test]
fn verify_fails_with_status_2_when_a_quantity_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_reference("opt-tiny-preln", dir.path(), |k, d, s, b| {
        if k == "loss" {
            Some((
                s.to_vec(),
                (f64::from_le_bytes(b.try_into().unwrap()) * 1.001)
                    .to_le_bytes()
                    .to_vec(),
            ))
        } else if k.contains("hessian") {
            None // keep the test fast
        } else {
            unchanged(k, d, s, b)
        }
    });
    let out = maskscape(&[
        "verify",
        "--model",
        fixture("opt-tiny-preln").to_str().unwrap(),
        "--reference",
        path.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stderr.contains("verification failed") && stderr.contains("loss"),
        "{stderr}"
    );
}

#[test]
fn token_ids_outside_the_vocabulary_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_reference("opt-tiny-preln", dir.path(), |k, d, s, b| {
        if k == "input_ids" {
            let mut b = b.to_vec();
            b[8 * 5..8 * 6].copy_from_slice(&57i64.to_le_bytes());
            Some((s.to_vec(), b))
        } else {
            unchanged(k, d, s, b)
        }
    });
    let out = maskscape(&[
        "verify",
        "--model",
        fixture("opt-tiny-preln").to_str().unwrap(),
        "--reference",
        path.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("token id 57") && stderr.contains("vocab_size 40"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_reference_missing_a_tensor_or_misshaped_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("opt-tiny-preln");
    let missing = edited_reference("opt-tiny-preln", dir.path(), |k, d, s, b| {
        (k != "attention_mask")
            .then(|| unchanged(k, d, s, b))
            .flatten()
    });
    let out = maskscape(&[
        "verify",
        "--model",
        model.to_str().unwrap(),
        "--reference",
        missing.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("missing tensor `attention_mask`")
            && stderr.contains("reference.safetensors"),
        "{stderr}"
    );

    let short = edited_reference("opt-tiny-preln", dir.path(), |k, d, s, b| {
        if k == "grad" {
            Some((vec![s[0] - 1], b[..b.len() - 8].to_vec()))
        } else {
            unchanged(k, d, s, b)
        }
    });
    let out = maskscape(&[
        "verify",
        "--model",
        model.to_str().unwrap(),
        "--reference",
        short.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tensor `grad` has shape [1679], expected [1680]"),
        "{stderr}"
    );
}

#[test]
fn bench_hvp_times_the_four_phases_and_the_floor() {
    let config = fixture("opt-tiny-preln").join("config.json");
    let out = maskscape(&[
        "bench",
        "hvp",
        "--config",
        config.to_str().unwrap(),
        "--batch",
        "2",
        "--seq",
        "8",
        "--ratio",
        "0.05",
        "--reps",
        "2",
        "--warmup",
        "0",
        "--dtype",
        "f64",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for phase in [
        "forward",
        "gradient",
        "hvp",
        "masked hvp",
        "forward products (F)",
    ] {
        assert!(stdout.contains(phase), "{phase} missing from\n{stdout}");
    }
    assert!(stdout.contains("GFLOP at"), "{stdout}");
    assert!(
        stdout.contains("1680 parameters") && stdout.contains("2 x 8 tokens"),
        "{stdout}"
    );
}

/// Without a usable GPU (this is what CI sees), `--device cuda` is one line naming
/// what is missing, exit status 2, and no output. Where a GPU is present the
/// commands would run instead (tests/gpu.rs covers that), so this test skips there.
#[test]
fn device_cuda_without_a_gpu_is_one_clear_error() {
    let missing = match maskscape::backend::cuda::availability() {
        Ok(()) => {
            eprintln!("skipped: a CUDA device is present");
            return;
        }
        Err(e) => e.to_string(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("opt-tiny-preln");
    let reference = model.join("reference.safetensors");
    let (model, reference, out_s) = (path_str(&model), path_str(&reference), path_str(&out));
    let commands: [&[&str]; 4] = [
        &["bench", "hvp", "--config", "opt-mini", "--device", "cuda"],
        &[
            "verify",
            "--model",
            model,
            "--reference",
            reference,
            "--device",
            "cuda",
        ],
        &[
            "verify",
            "--model",
            model,
            "--reference",
            reference,
            "--device",
            "cuda",
            "--dtype",
            "f32",
            "--tf32",
        ],
        &[
            "probe",
            "--model",
            model,
            "--tokenized",
            reference,
            "--ratio",
            "0.1",
            "--device",
            "cuda",
            "--gpu",
            "0",
            "--out",
            out_s,
        ],
    ];
    for args in commands {
        assert_user_error(args, &[&missing]);
    }
    assert!(!out.exists(), "no output after an error");
}
