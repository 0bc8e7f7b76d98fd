//! The binary on bad checkpoints, configs and masks: one clear line on stderr,
//! exit code 2, no panic; and the happy paths of `init`, `inspect` and `mask`.

mod common;

use std::path::Path;

use common::{assert_user_error, fixture, maskscape, path_str};

/// A copy of fixture `name` (config and weights) in a fresh folder.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(json.as_object_mut().unwrap());
    std::fs::write(path, json.to_string()).unwrap();
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = copy_fixture("opt-tiny-preln");
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert_user_error(
        &["inspect", "--model", path_str(dir.path())],
        &["model.safetensors", "truncated"],
    );
    // Cut inside the header too.
    std::fs::write(&weights, &bytes[..40]).unwrap();
    assert_user_error(
        &["inspect", "--model", path_str(dir.path())],
        &["model.safetensors", "not a valid safetensors"],
    );
}

#[test]
fn wrong_hidden_size_names_the_tensor_and_both_shapes() {
    let dir = copy_fixture("opt-tiny-preln");
    edit_config(dir.path(), |c| {
        c.insert("hidden_size".into(), 16.into());
    });
    let (code, _, stderr) = maskscape(&["inspect", "--model", path_str(dir.path())]);
    assert_eq!(code, 2);
    // Whichever tensor comes first in the file, its hidden dimension is 8, not 16.
    let line = stderr.trim();
    assert!(
        line.starts_with("error: tensor `") && line.lines().count() == 1,
        "{stderr}"
    );
    assert!(
        line.contains("expected shape [")
            && line.contains("16")
            && line.contains("found [")
            && line.contains("8]"),
        "{stderr}"
    );
}

#[test]
fn missing_config_key_is_named() {
    let dir = copy_fixture("opt-tiny-preln");
    edit_config(dir.path(), |c| {
        c.remove("ffn_dim");
    });
    assert_user_error(
        &["inspect", "--model", path_str(dir.path())],
        &["config.json", "missing required key `ffn_dim`"],
    );
}

#[test]
fn missing_shard_is_named() {
    // Split the fixture into two shards with an index, as save_pretrained does.
    let dir = tempfile::tempdir().unwrap();
    let source = fixture("opt-small-preln");
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let shard = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<_> = part
            .iter()
            .map(|n| (n.to_string(), file.tensor(n).unwrap()))
            .collect();
        for n in part {
            weight_map.insert(n.to_string(), shard.clone().into());
        }
        safetensors::serialize_to_file(views, None, &dir.path().join(&shard)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let (code, stdout, stderr) = maskscape(&["inspect", "--model", path_str(dir.path())]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("21312 parameters"), "{stdout}");

    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert_user_error(
        &["inspect", "--model", path_str(dir.path())],
        &[
            "model.safetensors.index.json",
            "shard `model-00002-of-00002.safetensors`",
            "missing",
        ],
    );
}

#[test]
fn malicious_pickle_is_refused_and_not_run() {
    assert_user_error(
        &["inspect", "--model", path_str(&fixture("malicious-bin"))],
        &["pytorch_model.bin", "refusing global `posix.system`"],
    );
    // A real torch.save file of the same kind loads.
    let (code, stdout, stderr) = maskscape(&[
        "inspect",
        "--model",
        path_str(&fixture("opt-tiny-preln-bin")),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1680 parameters"), "{stdout}");
}

#[test]
fn mask_ratio_above_the_scope_capacity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    assert_user_error(
        &[
            "mask",
            "--config",
            "opt-125m",
            "--scope",
            "qv",
            "--ratio",
            "0.12",
            "--out",
            path_str(&out),
        ],
        &["--ratio", "maximum --ratio is 0.1130"],
    );
    assert_user_error(
        &[
            "mask",
            "--config",
            "opt-125m",
            "--ratio",
            "0.5",
            "--ratio-of",
            "scope",
            "--out",
            "m.json",
        ],
        &["m.json", ".safetensors"],
    );
    assert!(!out.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 0);
}

#[test]
fn init_then_mask_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mini");
    let (code, stdout, stderr) = maskscape(&[
        "init",
        "--config",
        "opt-mini",
        "--seed",
        "1",
        "--dtype",
        "bf16",
        "--out",
        path_str(&model),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("3717120 parameters"), "{stdout}");
    for file in ["config.json", "model.safetensors", "manifest.json"] {
        assert!(model.join(file).is_file(), "{file}");
    }
    assert_eq!(
        std::fs::metadata(model.join("model.safetensors"))
            .unwrap()
            .len()
            % 2,
        0
    );

    let out = dir.path().join("qv.safetensors");
    let (code, stdout, stderr) = maskscape(&[
        "mask",
        "--model",
        path_str(&model),
        "--ratio",
        "1e-3",
        "--sampling",
        "exact",
        "--out",
        path_str(&out),
    ]);
    assert_eq!(code, 0, "{stderr}");
    // 8 scoped matrices of 256 x 256, each keeping round(q x 65536) with
    // q = 1e-3 x 3717120 / 524288 = 0.00709: 465 each.
    assert!(stdout.contains("kept 3720 of 3717120"), "{stdout}");
    assert!(dir.path().join("qv.json").is_file());

    let (code, _, stderr) = maskscape(&["inspect", "--model", path_str(&model)]);
    assert_eq!(code, 0, "{stderr}");
    assert_user_error(
        &["init", "--config", "opt-7b", "--out", path_str(&model)],
        &["--config", "opt-7b"],
    );

    // A config file works as well as a preset, and is recorded as an input.
    let config = fixture("opt-tiny-postln-proj").join("config.json");
    let tiny = dir.path().join("tiny");
    let (code, _, stderr) = maskscape(&[
        "init",
        "--config",
        path_str(&config),
        "--out",
        path_str(&tiny),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let manifest = std::fs::read_to_string(tiny.join("manifest.json")).unwrap();
    assert!(manifest.contains("opt-tiny-postln-proj"), "{manifest}");
    let (_, stdout, _) = maskscape(&["inspect", "--model", path_str(&tiny)]);
    assert!(
        stdout.contains("post-LN with projections: 1680 parameters"),
        "{stdout}"
    );
}

#[test]
fn truncated_pytorch_bin_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture("opt-tiny-preln-bin");
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(source.join("pytorch_model.bin")).unwrap();
    std::fs::write(
        dir.path().join("pytorch_model.bin"),
        &bytes[..bytes.len() * 2 / 3],
    )
    .unwrap();
    assert_user_error(
        &["inspect", "--model", path_str(dir.path())],
        &["pytorch_model.bin", "truncated"],
    );
}
