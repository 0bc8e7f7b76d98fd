//! Loading the reference fixtures and variants of them (other key prefixes,
//! dtypes, shards, PyTorch `.bin`), and the random-save-load round trip.

use std::collections::BTreeMap;
use std::path::Path;

use ::safetensors::tensor::TensorView;

use super::*;
use crate::model::presets::preset;
use crate::testing::{TestResult, fixture};

const FIXTURES: [&str; 3] = ["opt-tiny-preln", "opt-tiny-postln-proj", "opt-small-preln"];

/// A tensor as the safetensors crate writes it: name, dtype, shape, little-endian bytes.
type RawTensor = (String, ::safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Name -> (shape, values) of a float64 safetensors file.
type RawF64 = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// The tensors of a float64 safetensors file, read with the safetensors crate alone.
fn raw_f64(path: &Path) -> TestResult<RawF64> {
    let bytes = std::fs::read(path)?;
    let file = ::safetensors::SafeTensors::deserialize(&bytes)?;
    Ok(file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), ::safetensors::Dtype::F64);
            let (chunks, _) = view.data().as_chunks::<8>();
            let values = chunks.iter().map(|c| f64::from_le_bytes(*c)).collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect())
}

/// Writes `tensors` with the safetensors crate.
fn write_raw(path: &Path, tensors: &[RawTensor]) -> TestResult {
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<TestResult<Vec<(String, TensorView)>>>()?;
    ::safetensors::serialize_to_file(views, None, path)?;
    Ok(())
}

/// A copy of fixture `name`'s config in a fresh folder, with tensors edited by `edit`
/// (starting from the fixture's f64 tensors) written as one safetensors file.
fn variant(
    name: &str,
    edit: impl FnOnce(&mut Vec<RawTensor>) -> TestResult,
) -> TestResult<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        fixture(name).join("config.json"),
        dir.path().join("config.json"),
    )?;
    let mut tensors: Vec<_> = raw_f64(&fixture(name).join("model.safetensors"))?
        .into_iter()
        .map(|(n, (s, v))| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n, ::safetensors::Dtype::F64, s, bytes)
        })
        .collect();
    edit(&mut tensors)?;
    write_raw(&dir.path().join("model.safetensors"), &tensors)?;
    Ok(dir)
}

/// The tensor of `tensors` whose name ends with `suffix`.
fn tensor_named<'a>(tensors: &'a mut [RawTensor], suffix: &str) -> TestResult<&'a mut RawTensor> {
    Ok(tensors
        .iter_mut()
        .find(|t| t.0.ends_with(suffix))
        .ok_or_else(|| format!("no tensor named *{suffix}"))?)
}

fn load_err(dir: &Path) -> String {
    Checkpoint::<f64>::load(dir).unwrap_err().to_string()
}

#[test]
fn fixtures_flatten_in_params_json_order_with_the_stored_values() -> TestResult {
    for name in FIXTURES {
        let dir = fixture(name);
        let params: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("params.json"))?)?;
        let checkpoint = Checkpoint::<f64>::load(&dir)?;
        let entries = checkpoint.layout.entries();
        let order: Vec<&str> = params["order"]
            .as_array()
            .ok_or("params.json: `order` is not an array")?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or("params.json: a name in `order` is not a string")
            })
            .collect::<Result<_, _>>()?;
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, order, "{name}");
        for (entry, shape) in entries.iter().zip(
            params["shapes"]
                .as_array()
                .ok_or("params.json: `shapes` is not an array")?,
        ) {
            let shape: Vec<usize> = serde_json::from_value(shape.clone())?;
            assert_eq!(entry.shape, shape, "{name}: {}", entry.name);
        }
        // Every value sits in its tensor's slice, bit for bit.
        let raw = raw_f64(&dir.join("model.safetensors"))?;
        assert_eq!(raw.len(), entries.len());
        for entry in entries {
            assert_eq!(
                &checkpoint.params[entry.range()],
                &raw[&entry.name].1[..],
                "{}",
                entry.name
            );
        }
        // f32 is the same weights rounded.
        let single = Checkpoint::<f32>::load(&dir)?;
        assert!(
            single
                .params
                .iter()
                .zip(&checkpoint.params)
                .all(|(a, b)| *a == *b as f32)
        );
    }
    let tiny = Checkpoint::<f64>::load(&fixture("opt-tiny-preln"))?;
    assert_eq!(tiny.params.len(), 1680);
    // A spot check against numbers read off the file by hand: the first two entries
    // of the token embedding, and the first of layer 1's q_proj bias.
    let q_bias = ParamRole::Layer {
        layer: 1,
        tensor: crate::model::LayerTensor::QBias,
    };
    let raw = raw_f64(&fixture("opt-tiny-preln/model.safetensors"))?;
    assert_eq!(
        tiny.tensor(ParamRole::TokenEmbedding)
            .ok_or("no token embedding")?[..2],
        raw["model.decoder.embed_tokens.weight"].1[..2]
    );
    assert_eq!(
        tiny.tensor(q_bias).ok_or("no q_proj bias in layer 1")?[0],
        raw["model.decoder.layers.1.self_attn.q_proj.bias"].1[0]
    );
    Ok(())
}

#[test]
fn pytorch_bin_fixture_loads_like_its_safetensors_source() -> TestResult {
    // Keys without the `model.` prefix, f32 storage, tied lm_head.weight present.
    let bin = Checkpoint::<f64>::load(&fixture("opt-tiny-preln-bin"))?;
    let reference = Checkpoint::<f64>::load(&fixture("opt-tiny-preln"))?;
    assert_eq!(bin.layout, reference.layout);
    assert!(
        bin.params
            .iter()
            .zip(&reference.params)
            .all(|(a, b)| *a == f64::from(*b as f32))
    );
    Ok(())
}

#[test]
fn crafted_pickle_is_refused_before_reading() {
    let err = load_err(&fixture("malicious-bin"));
    assert!(
        err.contains("pytorch_model.bin") && err.contains("posix.system"),
        "{err}"
    );
}

#[test]
fn hub_key_spellings_and_half_precision_load() -> TestResult {
    // No `model.` prefix, f16 storage, and a tied lm_head.weight equal to the embedding.
    let dir = variant("opt-tiny-preln", |tensors| {
        for (name, dtype, _, bytes) in tensors.iter_mut() {
            *name = name.trim_start_matches("model.").to_string();
            *dtype = ::safetensors::Dtype::F16;
            let (chunks, _) = bytes.as_chunks::<8>();
            *bytes = chunks
                .iter()
                .flat_map(|c| half::f16::from_f64(f64::from_le_bytes(*c)).to_le_bytes())
                .collect();
        }
        let embed = tensor_named(tensors, "decoder.embed_tokens.weight")?.clone();
        tensors.push(("lm_head.weight".into(), embed.1, embed.2, embed.3));
        Ok(())
    })?;
    let half = Checkpoint::<f64>::load(dir.path())?;
    let reference = Checkpoint::<f64>::load(&fixture("opt-tiny-preln"))?;
    for (a, b) in half.params.iter().zip(&reference.params) {
        assert_eq!(*a, half::f16::from_f64(*b).to_f64());
    }
    Ok(())
}

#[test]
fn a_tied_head_that_differs_is_refused() -> TestResult {
    let dir = variant("opt-tiny-preln", |tensors| {
        let mut embed = tensor_named(tensors, "embed_tokens.weight")?.clone();
        embed.0 = "lm_head.weight".into();
        embed.3[0] ^= 1; // flip the lowest mantissa bit of the first element
        tensors.push(embed);
        Ok(())
    })?;
    let err = load_err(dir.path());
    assert!(
        err.contains("lm_head.weight") && err.contains("tie_word_embeddings"),
        "{err}"
    );
    Ok(())
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() -> TestResult {
    let missing = variant("opt-tiny-preln", |t| {
        t.retain(|t| !t.0.ends_with("layers.1.fc2.bias"));
        Ok(())
    })?;
    let err = load_err(missing.path());
    assert!(
        err.contains("model.decoder.layers.1.fc2.bias")
            && err.contains("[8]")
            && err.contains("found none"),
        "{err}"
    );

    let extra = variant("opt-tiny-preln", |t| {
        t.push((
            "model.decoder.extra.weight".into(),
            ::safetensors::Dtype::F64,
            vec![1],
            vec![0; 8],
        ));
        Ok(())
    })?;
    let err = load_err(extra.path());
    assert!(
        err.contains("unexpected tensor `model.decoder.extra.weight`"),
        "{err}"
    );

    let misshaped = variant("opt-tiny-preln", |t| {
        tensor_named(t, "layers.0.fc1.weight")?.2 = vec![8, 16];
        Ok(())
    })?;
    let err = load_err(misshaped.path());
    assert!(
        err.contains("layers.0.fc1.weight") && err.contains("[16, 8]") && err.contains("[8, 16]"),
        "{err}"
    );

    let twice = variant("opt-tiny-preln", |t| {
        let mut copy = tensor_named(t, "layers.0.fc1.bias")?.clone();
        copy.0 = copy.0.trim_start_matches("model.").to_string();
        t.push(copy);
        Ok(())
    })?;
    assert!(load_err(twice.path()).contains("stored twice"));

    let nan = variant("opt-tiny-preln", |t| {
        tensor_named(t, "layers.0.fc1.bias")?.3[8..16].copy_from_slice(&f64::NAN.to_le_bytes());
        Ok(())
    })?;
    let err = load_err(nan.path());
    assert!(
        err.contains("non-finite") && err.contains("fc1.bias") && err.contains("element 1"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_config_declaring_more_than_the_weights_hold_is_refused_before_allocating() -> TestResult {
    // vocab_size 10^12: an embedding of 8 x 10^12 parameters (64 TB in f64),
    // which the 40-row stored embedding shows to be a mistake.
    let dir = tempfile::tempdir()?;
    let source = fixture("opt-tiny-preln");
    std::fs::copy(
        source.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )?;
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json"))?)?;
    config["vocab_size"] = 1_000_000_000_000u64.into();
    std::fs::write(dir.path().join("config.json"), config.to_string())?;
    let err = load_err(dir.path());
    assert!(
        err.contains("embed_tokens.weight") && err.contains("[1000000000000, 8]"),
        "{err}"
    );
    Ok(())
}

#[test]
fn sharded_checkpoints_load_and_a_missing_shard_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let source = fixture("opt-small-preln");
    std::fs::copy(source.join("config.json"), dir.path().join("config.json"))?;
    let raw = raw_f64(&source.join("model.safetensors"))?;
    let mut weight_map = serde_json::Map::new();
    let (first, second): (Vec<_>, Vec<_>) =
        raw.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let tensors: Vec<_> = part
            .into_iter()
            .map(|(_, (name, (shape, values)))| {
                weight_map.insert(name.clone(), shard.into());
                let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                (name, ::safetensors::Dtype::F64, shape, bytes)
            })
            .collect();
        write_raw(&dir.path().join(shard), &tensors)?;
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )?;
    let sharded = Checkpoint::<f64>::load(dir.path())?;
    assert_eq!(sharded, Checkpoint::<f64>::load(&source)?);

    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors"))?;
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors.index.json")
            && err.contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
    Ok(())
}

#[test]
fn random_models_save_and_load_exactly() -> TestResult {
    let mut config = preset("opt-mini").ok_or("no preset opt-mini")?;
    config.vocab_size = 64; // keep the test small
    let model = Checkpoint::<f64>::random(config.clone(), 11);
    let dir = tempfile::tempdir()?;
    model.save(dir.path(), StoredDtype::F64)?;
    assert_eq!(Checkpoint::<f64>::load(dir.path())?, model);

    // The streamed writer stores exactly what `random` draws.
    write_random_checkpoint(
        &config,
        11,
        StoredDtype::F32,
        dir.path(),
        &crate::progress::Silent,
    )?;
    let streamed = Checkpoint::<f32>::load(dir.path())?;
    assert_eq!(streamed, Checkpoint::<f32>::random(config.clone(), 11));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json"))?)?;
    assert_eq!(json["torch_dtype"], "float32");
    assert_eq!(
        OptConfig::from_file(&dir.path().join("config.json"))?,
        config
    );

    // Half precision stores the draw rounded once.
    write_random_checkpoint(
        &config,
        11,
        StoredDtype::BF16,
        dir.path(),
        &crate::progress::Silent,
    )?;
    let rounded = Checkpoint::<f64>::load(dir.path())?;
    assert!(
        rounded
            .params
            .iter()
            .zip(&model.params)
            .all(|(a, b)| *a == half::bf16::from_f64(*b).to_f64())
    );

    // An untied head gets a slot and a key of its own.
    config.tie_word_embeddings = false;
    let untied = Checkpoint::<f64>::random(config, 2);
    untied.save(dir.path(), StoredDtype::F64)?;
    let names: Vec<String> = files::open_weights(dir.path())?
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"lm_head.weight".to_string()));
    assert_eq!(Checkpoint::<f64>::load(dir.path())?, untied);
    Ok(())
}

#[test]
fn random_draws_do_not_depend_on_the_thread_count() -> TestResult {
    let config = Checkpoint::<f64>::load(&fixture("opt-small-preln"))?.config;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let serial = pool.install(|| Checkpoint::<f64>::random(config.clone(), 5));
    let mut parallel = Checkpoint::<f64>::random(config, 5);
    assert_eq!(serial, parallel);
    let ln = ParamRole::FinalLayerNormWeight;
    parallel.tensor_mut(ln).ok_or("no final layer norm")?[0] = 7.0;
    let offset = parallel
        .layout
        .find(ln)
        .ok_or("no final layer norm")?
        .offset;
    assert_eq!(parallel.params[offset], 7.0);
    assert!(parallel.tensor(ParamRole::LmHead).is_none());
    Ok(())
}
