//! Masks: the fixtures' masks load, draws obey their spec, files round-trip.

use std::path::PathBuf;

use super::*;
use crate::model::layout::LayerTensor;
use crate::model::presets::preset;
use crate::model::{OptConfig, ParamRole};
use crate::testing::{TestResult, fixture, raw_safetensors};

fn fixture_layout(name: &str) -> TestResult<ParamLayout> {
    let config = OptConfig::from_file(&fixture(name).join("config.json"))?;
    Ok(ParamLayout::new(&config))
}

fn mini() -> TestResult<ParamLayout> {
    Ok(ParamLayout::new(
        &preset("opt-mini").ok_or("no preset opt-mini")?,
    ))
}

fn spec(scope: Scope, ratio: f64, sampling: Sampling, structure: Structure) -> MaskSpec {
    MaskSpec {
        scope,
        ratio,
        ratio_of: RatioOf::Total,
        sampling,
        structure,
        seed: 9,
    }
}

#[test]
fn fixture_masks_load_from_their_reference_files() -> TestResult {
    for (name, k) in [
        ("opt-tiny-preln", 168),
        ("opt-tiny-postln-proj", 168),
        ("opt-small-preln", 639),
    ] {
        let layout = fixture_layout(name)?;
        let mask = Mask::load(&fixture(name).join("reference.safetensors"), &layout)?;
        assert_eq!(
            (mask.len(), mask.total(), mask.spec.clone()),
            (k, layout.total(), None),
            "{name}"
        );
        // Grouping by tensor partitions the index list in order.
        let groups = mask.by_tensor(&layout);
        assert_eq!(groups.iter().map(|g| g.indices.len()).sum::<usize>(), k);
        for g in &groups {
            assert_eq!(
                &mask.indices()[g.first..g.first + g.indices.len()],
                g.indices
            );
            assert!(
                g.indices
                    .iter()
                    .all(|&i| g.entry.range().contains(&(i as usize)))
            );
        }
    }
    Ok(())
}

#[test]
fn qv_bernoulli_masks_follow_the_paper() -> TestResult {
    let layout = mini()?;
    let s = spec(Scope::Qv, 1e-2, Sampling::Bernoulli, Structure::Elements);
    let mask = Mask::draw(&s, &layout)?;
    let qv = |role: ParamRole| {
        matches!(
            role,
            ParamRole::Layer {
                tensor: LayerTensor::QWeight | LayerTensor::VWeight,
                ..
            }
        )
    };
    assert!(mask.by_tensor(&layout).iter().all(|g| qv(g.entry.role)));
    assert_eq!(mask.by_tensor(&layout).len(), 8); // q and v of 4 layers
    // k is binomial(scope size, q) with mean ratio x N.
    let mean = 1e-2 * layout.total() as f64;
    let q = s.keep_probability(&layout)?;
    let sd = (Scope::Qv.size(&layout) as f64 * q * (1.0 - q)).sqrt();
    assert!(
        (mask.len() as f64 - mean).abs() < 5.0 * sd,
        "{} vs {mean}",
        mask.len()
    );
    // Same spec, same mask, whatever the thread count; another seed, another mask.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    assert_eq!(pool.install(|| Mask::draw(&s, &layout))?, mask);
    assert_ne!(
        Mask::draw(
            &MaskSpec {
                seed: 10,
                ..s.clone()
            },
            &layout
        )?
        .indices(),
        mask.indices()
    );
    Ok(())
}

#[test]
fn draws_are_pinned_across_machines() -> TestResult {
    // The first indices of a fixed spec over the tiny fixture layout. They depend
    // only on ChaCha20, the rng stream ids and the geometric-gap sampler, so a
    // change here means every saved seed now names a different mask.
    let layout = fixture_layout("opt-tiny-preln")?;
    let mask = Mask::draw(
        &MaskSpec {
            seed: 0,
            ..spec(Scope::All, 0.1, Sampling::Bernoulli, Structure::Elements)
        },
        &layout,
    )?;
    assert_eq!(
        &mask.indices()[..8],
        PINNED_FIRST_INDICES,
        "{:?}",
        &mask.indices()[..8]
    );
    Ok(())
}

const PINNED_FIRST_INDICES: &[u64] = &[5, 21, 34, 39, 48, 49, 51, 53];

#[test]
fn exact_masks_keep_the_rounded_count_in_every_tensor() -> TestResult {
    let layout = mini()?;
    let s = MaskSpec {
        ratio_of: RatioOf::Scope,
        ..spec(Scope::Linear, 0.0123, Sampling::Exact, Structure::Elements)
    };
    let mask = Mask::draw(&s, &layout)?;
    let groups = mask.by_tensor(&layout);
    assert_eq!(groups.len(), Scope::Linear.entries(&layout).count());
    for g in groups {
        assert_eq!(
            g.indices.len(),
            (0.0123 * g.entry.len() as f64).round() as usize,
            "{}",
            g.entry.name
        );
    }
    Ok(())
}

#[test]
fn column_masks_keep_whole_columns() -> TestResult {
    let layout = mini()?;
    for sampling in [Sampling::Bernoulli, Sampling::Exact] {
        let s = MaskSpec {
            ratio_of: RatioOf::Scope,
            ..spec(Scope::Attention, 0.05, sampling, Structure::Columns)
        };
        let mask = Mask::draw(&s, &layout)?;
        for g in mask.by_tensor(&layout) {
            let (rows, columns) = (g.entry.shape[0] as u64, g.entry.shape[1] as u64);
            let local: Vec<u64> = g
                .indices
                .iter()
                .map(|&i| i - g.entry.offset as u64)
                .collect();
            let kept: Vec<u64> = local
                .iter()
                .take_while(|&&i| i < columns)
                .copied()
                .collect();
            // Row r keeps exactly the columns row 0 keeps.
            assert_eq!(local.len() as u64, rows * kept.len() as u64);
            for (i, &index) in local.iter().enumerate() {
                let (row, column) = (i as u64 / kept.len() as u64, kept[i % kept.len()]);
                assert_eq!(index, row * columns + column);
            }
            if sampling == Sampling::Exact {
                assert_eq!(kept.len(), (0.05 * columns as f64).round() as usize);
            }
        }
    }
    Ok(())
}

#[test]
fn saved_masks_reload_with_their_spec() -> TestResult {
    let layout = mini()?;
    let mask = Mask::draw(
        &spec(Scope::Qv, 1e-3, Sampling::Bernoulli, Structure::Elements),
        &layout,
    )?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    let written = mask.save(&path, &layout, None)?;
    assert_eq!(written, [path.clone(), dir.path().join("m.json")]);
    assert_eq!(Mask::load(&path, &layout)?, mask);
    let record: io::MaskRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json"))?)?;
    assert_eq!(record.indices_sha256, mask.hash());
    assert_eq!(
        record.per_tensor.iter().map(|c| c.kept).sum::<usize>(),
        mask.len()
    );

    // A sidecar that describes another mask is refused.
    let other = Mask::draw(
        &MaskSpec {
            seed: 1,
            ..mask.spec.clone().ok_or("a drawn mask records its spec")?
        },
        &layout,
    )?;
    std::fs::write(
        dir.path().join("m.json"),
        serde_json::to_string(&other.record(&layout, None))?,
    )?;
    assert!(
        Mask::load(&path, &layout)
            .unwrap_err()
            .to_string()
            .contains("different mask")
    );
    // Without a sidecar the indices alone load.
    std::fs::remove_file(dir.path().join("m.json"))?;
    let bare = Mask::load(&path, &layout)?;
    assert_eq!(
        (bare.indices(), bare.spec.is_none()),
        (mask.indices(), true)
    );
    // A mask for another model size is refused.
    let err = Mask::load(&path, &fixture_layout("opt-tiny-preln")?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the model's 1680 parameters"), "{err}");
    Ok(())
}

#[test]
fn bad_index_files_are_refused_with_the_position() -> TestResult {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, dtype: ::safetensors::Dtype, values: &[i64]| -> TestResult<PathBuf> {
        let path = dir.path().join(name);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = if dtype == ::safetensors::Dtype::I32 {
            bytes[..values.len() * 4].to_vec()
        } else {
            bytes
        };
        let view = ::safetensors::tensor::TensorView::new(dtype, vec![values.len()], &bytes)?;
        ::safetensors::serialize_to_file([("mask_idx", view)], None, &path)?;
        Ok(path)
    };
    let layout = fixture_layout("opt-tiny-preln")?;
    let cases = [
        (
            write(
                "unsorted.safetensors",
                ::safetensors::Dtype::I64,
                &[3, 9, 5],
            )?,
            "mask_idx[2] = 5 is not above mask_idx[1] = 9",
        ),
        (
            write("dup.safetensors", ::safetensors::Dtype::I64, &[3, 3])?,
            "sorted and distinct",
        ),
        (
            write("range.safetensors", ::safetensors::Dtype::I64, &[3, 1680])?,
            "mask_idx[1] = 1680 is outside",
        ),
        (
            write("neg.safetensors", ::safetensors::Dtype::I64, &[-1])?,
            "mask_idx[0] = -1 is negative",
        ),
        (
            write("i32.safetensors", ::safetensors::Dtype::I32, &[1, 2])?,
            "1-D int64",
        ),
    ];
    for (path, expected) in cases {
        let err = Mask::load(&path, &layout).unwrap_err().to_string();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("a case path without a file name")?;
        assert!(err.contains(expected) && err.contains(name), "{err}");
    }
    let err = Mask::load(&fixture("opt-tiny-preln/model.safetensors"), &layout)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `mask_idx` tensor"), "{err}");
    Ok(())
}

#[test]
fn index_counts_beyond_the_file_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("huge.safetensors");
    let layout = fixture_layout("opt-tiny-preln")?;
    // 10^18 indices over 16 bytes; 2^61 x 8 indices, whose count overflows; 2^61
    // indices, whose byte count does (wrapping to 0 unchecked).
    for shape in [
        "[1000000000000000000]",
        "[2305843009213693952,8]",
        "[2305843009213693952]",
    ] {
        let header =
            format!(r#"{{"mask_idx":{{"dtype":"I64","shape":{shape},"data_offsets":[0,16]}}}}"#);
        std::fs::write(&path, raw_safetensors(&header, &[0; 16]))?;
        let err = Mask::load(&path, &layout).unwrap_err().to_string();
        assert!(
            err.contains("huge.safetensors") && err.contains("not a valid safetensors file"),
            "{shape}: {err}"
        );
    }
    Ok(())
}
