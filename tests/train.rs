//! Training steps against PyTorch: five masked AdamW steps with minibatches, warm-up
//! and clipping, as `torch.optim.AdamW` takes them on the paper's dense-mask
//! formulation (`tests/fixtures/make_train_reference.py`), in f64.

mod common;

use maskscape::backend::Cpu;
use maskscape::model::{Batch, Checkpoint, Opt, Targets, TokenBatch};
use maskscape::probe::verify::rel_error;
use maskscape::report::tensors::TensorFile;
use maskscape::train::OptimizerSettings;
use maskscape::train::trainer::{StepOutcome, Trainer};

use common::fixture;

/// Minibatch `s` of the reference file.
fn batch(file: &TensorFile, s: usize) -> Batch {
    let ints = |name: &str| file.ints(&format!("batch{s}_{name}")).unwrap();
    let ids = ints("input_ids");
    let seq = 10;
    Batch {
        tokens: TokenBatch {
            batch: ids.len() / seq,
            seq,
            input_ids: ids.iter().map(|&i| i as u32).collect(),
            attention_mask: ints("attention_mask").iter().map(|&i| i as u32).collect(),
        },
        targets: Targets::NextToken {
            labels: ints("labels"),
        },
    }
}

#[test]
fn five_masked_adamw_steps_match_pytorch() {
    let dir = fixture("opt-tiny-preln");
    let reference = TensorFile::read(&dir.join("train_reference.safetensors")).unwrap();
    let checkpoint = Checkpoint::<f64>::load(&dir).unwrap();
    let key_bias: Vec<usize> = checkpoint
        .layout
        .entries()
        .iter()
        .filter(|e| e.name.ends_with("k_proj.bias"))
        .flat_map(|e| e.range())
        .collect();
    assert!(!key_bias.is_empty());
    let model = Opt::new(Cpu, checkpoint.config, &checkpoint.params).unwrap();
    let mask: Vec<u64> = reference
        .ints("mask_idx")
        .unwrap()
        .iter()
        .map(|&i| i as u64)
        .collect();
    let lr = reference.finite_vector("lr").unwrap()[0];
    // the paper's AdamW: (0.9, 0.999, 1e-8), no decay, warm-up 2, clipped to 1
    let settings = OptimizerSettings {
        lr,
        ..OptimizerSettings::default()
    };
    let mut trainer = Trainer::new(model, Some(&mask), &settings).unwrap();
    for s in 0..5 {
        let outcome = trainer.step(&[batch(&reference, s)]).unwrap();
        let StepOutcome::Moved(stats) = outcome else {
            panic!("step {s} diverged: {outcome:?}");
        };
        let want_loss = reference.finite_vector(&format!("loss{s}")).unwrap()[0];
        let e_loss = (stats.loss - want_loss).abs() / want_loss.abs();
        assert!(
            e_loss < 1e-12,
            "step {s}: loss {} vs {want_loss}",
            stats.loss
        );
        let want = reference.finite_vector(&format!("delta{s}")).unwrap();
        let got: Vec<f64> = trainer
            .theta()
            .iter()
            .zip(trainer.theta0())
            .map(|(a, b)| a - b)
            .collect();
        // A key bias has no gradient (the softmax ignores a shift of a query's scores),
        // so both sides compute rounding noise there, which Adam's g / (|g| + eps)
        // turns into moves of about lr * 1e-10 of either sign: compared apart.
        let (noise, signal): (Vec<usize>, Vec<usize>) =
            (0..mask.len()).partition(|&i| key_bias.contains(&(mask[i] as usize)));
        let pick = |v: &[f64], idx: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let e = rel_error(&pick(&got, &signal), &pick(&want, &signal));
        println!(
            "step {s}: loss {:.12}, delta relative error {e:.2e}",
            stats.loss
        );
        assert!(e < 1e-10, "step {s}: delta relative error {e:.2e}");
        for &i in &noise {
            assert!(
                got[i].abs() < 1e-9 && want[i].abs() < 1e-9,
                "step {s}: key bias moved"
            );
        }
    }
}
