//! The engine against PyTorch's float64 fixtures, and the identities an exact
//! Hessian obeys.

use std::path::{Path, PathBuf};

use maskscape::backend::{Cpu, Scalar};
use maskscape::model::verify::{Reference, Tolerances, rel_error, verify};
use maskscape::model::{Objective, Opt, OptConfig, ParamLayout};
use maskscape::progress::Silent;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture's weights as one flat vector in layout order (read directly with the
/// safetensors crate: the checkpoint loader is tested on its own).
fn load_params(dir: &Path, config: &OptConfig) -> Vec<f64> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let layout = ParamLayout::new(config);
    let mut flat = Vec::with_capacity(layout.total());
    for e in layout.entries() {
        let t = st.tensor(&e.name).unwrap();
        assert_eq!(t.shape(), &e.shape[..], "{}", e.name);
        flat.extend(
            t.data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap())),
        );
    }
    flat
}

fn model<T: Scalar>(name: &str) -> Opt<T, Cpu>
where
    Cpu: maskscape::backend::Backend<T>,
{
    let dir = fixture(name);
    let config = OptConfig::from_file(&dir.join("config.json")).unwrap();
    let params: Vec<T> = load_params(&dir, &config)
        .into_iter()
        .map(T::from_f64)
        .collect();
    Opt::new(Cpu, config, &params).unwrap()
}

fn check_fixture<T: Scalar>(name: &str)
where
    Cpu: maskscape::backend::Backend<T>,
{
    let m = model::<T>(name);
    let reference = Reference::load(&fixture(name).join("reference.safetensors")).unwrap();
    let report = verify(&m, &reference, &Silent).unwrap();
    println!("{name} {}:\n{}", T::NAME, report.table().to_text());
    assert!(
        report.passed(),
        "{name} in {}:\n{}",
        T::NAME,
        report.table().to_text()
    );
}

#[test]
fn tiny_preln_matches_pytorch_in_f64() {
    check_fixture::<f64>("opt-tiny-preln");
}

#[test]
fn tiny_postln_with_projections_matches_pytorch_in_f64() {
    check_fixture::<f64>("opt-tiny-postln-proj");
}

#[test]
fn small_preln_matches_pytorch_in_f64() {
    check_fixture::<f64>("opt-small-preln");
}

#[test]
fn tiny_preln_matches_pytorch_in_f32() {
    check_fixture::<f32>("opt-tiny-preln");
}

#[test]
fn tiny_postln_with_projections_matches_pytorch_in_f32() {
    check_fixture::<f32>("opt-tiny-postln-proj");
}

#[test]
fn small_preln_matches_pytorch_in_f32() {
    check_fixture::<f32>("opt-small-preln");
}
