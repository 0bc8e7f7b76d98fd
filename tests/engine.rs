//! The engine against PyTorch's float64 fixtures, and the identities an exact
//! Hessian obeys: symmetry, masked products as rows of full ones, padding and
//! batching invariance, and central differences for the classification loss.

mod common;

use maskscape::backend::{Backend, Cpu, Scalar};
use maskscape::data::{ClassificationExample, Dataset, LmExample};
use maskscape::mask::{Mask, MaskSpec, RatioOf, Scope};
use maskscape::model::batch::{Padding, batches};
use maskscape::model::bench::random_batch;
use maskscape::model::presets::preset;
use maskscape::model::{Batch, Checkpoint, Objective, Opt};
use maskscape::probe::verify::{Reference, rel_error, verify};
use maskscape::progress::Silent;
use rand::Rng as _;
use rand_distr::StandardNormal;

use common::fixture;

fn model<T: Scalar>(name: &str) -> Opt<T, Cpu>
where
    Cpu: Backend<T>,
{
    let ckpt = Checkpoint::<T>::load(&fixture(name)).unwrap();
    Opt::new(Cpu, ckpt.config, &ckpt.params).unwrap()
}

fn normal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = maskscape::rng::stream(seed, 0);
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check_fixture<T: Scalar>(name: &str)
where
    Cpu: Backend<T>,
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
    // every quantity the fixture holds was compared
    // (the gradient is also compared at the mask, through the masked path)
    let expected = if name == "opt-small-preln" { 8 } else { 10 };
    assert_eq!(
        report.checks.iter().filter(|c| c.skipped.is_none()).count(),
        expected
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

/// The fixture's own batch (right-padded language modelling).
fn fixture_batch(name: &str, vocab: usize) -> Batch {
    Reference::load(&fixture(name).join("reference.safetensors"))
        .unwrap()
        .to_batch(vocab)
        .unwrap()
}

#[test]
fn hessian_is_symmetric_to_1e_12() {
    for name in ["opt-small-preln", "opt-tiny-postln-proj"] {
        let m = model::<f64>(name);
        let data = [fixture_batch(name, m.config().vocab_size)];
        let mut obj = Objective::new(&m, &data).unwrap();
        let n = m.num_params();
        let (u, v) = (normal(n, 1), normal(n, 2));
        let (hu, hv) = (obj.hvp(&u).unwrap(), obj.hvp(&v).unwrap());
        let (a, b) = (dot(&u, &hv), dot(&v, &hu));
        let e = (a - b).abs() / a.abs();
        assert!(
            e < 1e-12,
            "{name}: u.Hv = {a}, v.Hu = {b}, relative difference {e:.1e}"
        );
    }
}

#[test]
fn one_pass_gives_loss_gradient_and_hvp_consistently() {
    let m = model::<f64>("opt-tiny-postln-proj");
    let data = [fixture_batch("opt-tiny-postln-proj", m.config().vocab_size)];
    let mut obj = Objective::new(&m, &data).unwrap();
    let v = normal(m.num_params(), 3);
    let r = obj.loss_gradient_hvp(&v).unwrap();
    let (loss, grad) = obj.gradient().unwrap();
    assert!((r.loss - loss).abs() <= 1e-15 * loss.abs());
    assert!((r.loss - obj.loss().unwrap()).abs() <= 1e-15 * loss.abs());
    assert!(rel_error(&r.gradient, &grad) < 1e-14);
    assert!((r.grad_dot_v - dot(&grad, &v)).abs() < 1e-12 * dot(&grad, &v).abs());
    assert!(rel_error(&r.hvp, &obj.hvp(&v).unwrap()) < 1e-15);
}

/// `(H P^T v)[mask]` from the full product of the zero-padded vector.
fn masked_rows_of_full(
    obj: &mut Objective<'_, f64, Cpu>,
    mask: &[u64],
    vk: &[f64],
    n: usize,
) -> Vec<f64> {
    let mut padded = vec![0.0; n];
    for (&i, &x) in mask.iter().zip(vk) {
        padded[i as usize] = x;
    }
    let full = obj.hvp(&padded).unwrap();
    mask.iter().map(|&i| full[i as usize]).collect()
}

#[test]
fn masked_hvp_equals_the_masked_rows_of_the_full_hvp() {
    for name in ["opt-small-preln", "opt-tiny-postln-proj"] {
        let m = model::<f64>(name);
        let n = m.num_params();
        let layout = m.layout().clone();
        let data = [fixture_batch(name, m.config().vocab_size)];
        let mut obj = Objective::new(&m, &data).unwrap();
        let every = |keep: &dyn Fn(&str) -> bool, step: usize| -> Vec<u64> {
            layout
                .entries()
                .iter()
                .filter(|e| keep(&e.name))
                .flat_map(|e| e.range().step_by(step).map(|i| i as u64))
                .collect()
        };
        let masks: Vec<(&str, Vec<u64>)> = vec![
            // the paper's scope: tangents vanish below layer 0's q/v
            (
                "qv",
                Mask::draw(&MaskSpec::paper(0.05, 7), &layout)
                    .unwrap()
                    .indices()
                    .to_vec(),
            ),
            // only the top block: the reverse sweep stops inside it
            ("top block", every(&|k| k.contains("layers.1."), 3)),
            // only a LayerNorm of the top block (its input adjoint is scratch)
            (
                "top LayerNorm",
                every(&|k| k.contains("layers.1.self_attn_layer_norm"), 1),
            ),
            // embeddings, positions, projections and the final LayerNorm
            ("outside the blocks", every(&|k| !k.contains("layers."), 5)),
            // everything, sparsely
            ("all", every(&|_| true, 11)),
        ];
        for (label, mask) in masks {
            assert!(!mask.is_empty(), "{label}");
            obj.set_mask(&mask).unwrap();
            let vk = normal(mask.len(), 4);
            let masked = obj.masked_hvp(&vk).unwrap();
            let want = masked_rows_of_full(&mut obj, &mask, &vk, n);
            let e = rel_error(&masked, &want);
            assert!(e < 1e-12, "{name}, mask {label}: relative error {e:.1e}");
        }
    }
}

/// The masked gradient against the fixture's PyTorch gradient at its mask.
fn check_masked_gradient<T: Scalar>(name: &str, tolerance: f64)
where
    Cpu: Backend<T>,
{
    let m = model::<T>(name);
    let reference = Reference::load(&fixture(name).join("reference.safetensors")).unwrap();
    let mask = reference.mask(m.num_params()).unwrap().unwrap();
    let grad = &reference.grad.as_ref().unwrap().values;
    let want: Vec<f64> = mask.indices().iter().map(|&i| grad[i as usize]).collect();
    let data = [fixture_batch(name, m.config().vocab_size)];
    let mut obj = Objective::new(&m, &data).unwrap();
    obj.set_mask(mask.indices()).unwrap();
    let (loss, got) = obj.masked_gradient().unwrap();
    let got: Vec<f64> = got.iter().map(|x| x.to_f64()).collect();
    let e = rel_error(&got, &want);
    assert!(
        e < tolerance,
        "{name} in {}: relative error {e:.1e}",
        T::NAME
    );
    assert!((loss - obj.loss().unwrap()).abs() <= 1e-6 * loss.abs());
}

#[test]
fn masked_gradient_matches_pytorch_at_the_fixture_masks() {
    for name in ["opt-tiny-preln", "opt-tiny-postln-proj", "opt-small-preln"] {
        check_masked_gradient::<f64>(name, 1e-12);
        check_masked_gradient::<f32>(name, 1e-5);
    }
}

#[test]
fn masked_gradient_equals_the_dense_gradient_at_random_masks_of_every_scope() {
    for name in ["opt-small-preln", "opt-tiny-postln-proj"] {
        let m = model::<f64>(name);
        let data = [fixture_batch(name, m.config().vocab_size)];
        let mut obj = Objective::new(&m, &data).unwrap();
        let (loss, dense) = obj.gradient().unwrap();
        for (seed, scope) in [Scope::Qv, Scope::Attention, Scope::Linear, Scope::All]
            .into_iter()
            .enumerate()
        {
            let spec = MaskSpec {
                scope,
                ratio: 0.1,
                ratio_of: RatioOf::Scope,
                ..MaskSpec::paper(0.1, seed as u64)
            };
            let mask = Mask::draw(&spec, m.layout()).unwrap();
            obj.set_mask(mask.indices()).unwrap();
            let (masked_loss, got) = obj.masked_gradient().unwrap();
            let want: Vec<f64> = mask.indices().iter().map(|&i| dense[i as usize]).collect();
            let e = rel_error(&got, &want);
            let ctx = format!("{name}, scope {}", scope.name());
            assert!(e < 1e-13, "{ctx}: relative error {e:.1e}");
            assert!(
                (masked_loss - loss).abs() <= 1e-15 * loss.abs(),
                "{ctx}: loss"
            );
        }
    }
}

/// A vocabulary wide enough for the CPU's fused LM head (`backend/cpu/head.rs`: two
/// groups of 4096 at least), with small blocks: pre-LN, and post-LN with projections.
fn wide_vocabulary_models() -> Vec<Opt<f64, Cpu>> {
    let mut pre = preset("opt-mini").unwrap();
    (pre.vocab_size, pre.hidden_size, pre.ffn_dim) = (9001, 32, 48);
    (pre.num_hidden_layers, pre.num_attention_heads) = (2, 4);
    let mut post = preset("opt-350m").unwrap();
    (post.vocab_size, post.hidden_size, post.ffn_dim) = (8500, 24, 40);
    (post.word_embed_proj_dim, post.num_hidden_layers) = (16, 2);
    post.num_attention_heads = 4;
    [pre, post]
        .into_iter()
        .map(|config| {
            let params = Checkpoint::<f64>::random(config.clone(), 3).params;
            Opt::new(Cpu, config, &params).unwrap()
        })
        .collect()
}

#[test]
fn masked_gradient_through_the_fused_head_equals_the_dense_gradient() {
    // A q/v or LayerNorm mask leaves the head's weight alone, so the CPU fuses the
    // head with the log-probabilities (no logits formed whole); a mask over
    // everything wants the embedding's gradient and runs the unfused head. Both
    // against the dense gradient, on next-token and choice batches (all rows and
    // gathered rows).
    for m in wide_vocabulary_models() {
        let vocab = m.config().vocab_size as u32;
        let lm = vec![random_batch(m.config(), 2, 9, 4).unwrap()];
        let choice = batches(&choice_dataset(vocab), 2, 1, Padding::Right).unwrap();
        let draw = |scope| {
            let spec = MaskSpec {
                scope,
                ratio: 0.1,
                ratio_of: RatioOf::Scope,
                ..MaskSpec::paper(0.1, 5)
            };
            Mask::draw(&spec, m.layout()).unwrap().indices().to_vec()
        };
        let layer_norms: Vec<u64> = m
            .layout()
            .entries()
            .iter()
            .filter(|e| e.name.contains("layer_norm"))
            .flat_map(|e| e.range().map(|i| i as u64))
            .collect();
        let masks = [
            ("qv", draw(Scope::Qv)),
            ("LayerNorms", layer_norms),
            ("all", draw(Scope::All)),
        ];
        for (what, data) in [("next-token", lm), ("choice", choice)] {
            let mut obj = Objective::new(&m, &data).unwrap();
            let (loss, dense) = obj.gradient().unwrap();
            for (label, mask) in &masks {
                obj.set_mask(mask).unwrap();
                let (masked_loss, got) = obj.masked_gradient().unwrap();
                let want: Vec<f64> = mask.iter().map(|&i| dense[i as usize]).collect();
                let e = rel_error(&got, &want);
                let ctx = format!("vocabulary {vocab}, {what}, {label}");
                assert!(e < 1e-12, "{ctx}: relative error {e:.1e}");
                let loss_error = (masked_loss - loss).abs() / loss.abs();
                assert!(loss_error <= 1e-13, "{ctx}: loss");
            }
        }
    }
}

/// Two rows of different lengths, scored on every token.
fn two_rows(vocab: u32) -> (LmExample, LmExample) {
    let ids = |n: usize, seed: u32| {
        (0..n as u32)
            .map(|i| 4 + (i * 7 + seed) % (vocab - 4))
            .collect::<Vec<_>>()
    };
    (
        LmExample::from_ids(ids(7, 1)),
        LmExample::from_ids(ids(11, 5)),
    )
}

#[test]
fn padding_on_either_side_leaves_every_row_its_own_loss() {
    for name in ["opt-small-preln", "opt-tiny-postln-proj"] {
        let m = model::<f64>(name);
        let vocab = m.config().vocab_size as u32;
        let (a, b) = two_rows(vocab);
        let alone =
            |e: &LmExample| batches(&Dataset::Lm(vec![e.clone()]), 1, 1, Padding::Right).unwrap();
        let separate: Vec<Batch> = [alone(&a), alone(&b)].concat();
        let together = Dataset::Lm(vec![a.clone(), b.clone()]);
        let v = normal(m.num_params(), 5);
        let mask = Mask::draw(&MaskSpec::paper(0.05, 3), m.layout()).unwrap();
        let vk = normal(mask.len(), 6);
        let results = |data: &[Batch]| {
            let mut obj = Objective::new(&m, data).unwrap();
            let r = obj.loss_gradient_hvp(&v).unwrap();
            obj.set_mask(mask.indices()).unwrap();
            (r, obj.masked_hvp(&vk).unwrap())
        };
        let (want, want_masked) = results(&separate);
        for padding in [Padding::Right, Padding::Left] {
            let data = batches(&together, 2, 1, padding).unwrap();
            let (got, got_masked) = results(&data);
            let ctx = format!("{name}, {padding:?} padding");
            assert!(
                (got.loss - want.loss).abs() < 1e-14 * want.loss.abs(),
                "{ctx}: loss"
            );
            assert!(
                rel_error(&got.gradient, &want.gradient) < 1e-13,
                "{ctx}: gradient"
            );
            assert!(rel_error(&got.hvp, &want.hvp) < 1e-13, "{ctx}: hvp");
            assert!(
                rel_error(&got_masked, &want_masked) < 1e-13,
                "{ctx}: masked hvp"
            );
            assert!(
                got.gradient.iter().chain(&got.hvp).all(|x| x.is_finite()),
                "{ctx}: NaN"
            );
        }
        // the real positions' logits do not move either
        let left = batches(&together, 2, 1, Padding::Left).unwrap();
        let logits = Objective::new(&m, &left).unwrap().logits(0).unwrap();
        let own = Objective::new(&m, &alone(&a)).unwrap().logits(0).unwrap();
        let (seq, v) = (b.ids.len(), vocab as usize);
        let shifted = &logits[(seq - a.ids.len()) * v..seq * v];
        assert!(
            rel_error(shifted, &own) < 1e-14,
            "{name}: left-padded logits"
        );
    }
}

/// Three classification examples with two or three candidates of varying length.
fn choice_dataset(vocab: u32) -> Dataset {
    let t = |x: u32| 4 + x % (vocab - 4);
    Dataset::Classification(vec![
        ClassificationExample {
            prompt: vec![2, t(10), t(11), t(12)],
            candidates: vec![vec![t(20)], vec![t(21), t(22)]],
            gold: 1,
        },
        ClassificationExample {
            prompt: vec![2, t(13)],
            candidates: vec![vec![t(23)], vec![t(24)], vec![t(25), t(26), t(27)]],
            gold: 0,
        },
        ClassificationExample {
            prompt: vec![2, t(14), t(15), t(16), t(17)],
            candidates: vec![vec![t(28), t(29)], vec![t(30)]],
            gold: 1,
        },
    ])
}

#[test]
fn outputs_overwrite_whatever_their_buffers_held() {
    // the engine writes most output tensors without zeroing them first: stale NaNs
    // must vanish, whether the head is tied (small) or has projections (tiny), and
    // over a dataset of several batches
    for name in ["opt-small-preln", "opt-tiny-postln-proj"] {
        let m = model::<f64>(name);
        let vocab = m.config().vocab_size as u32;
        let (a, b) = two_rows(vocab);
        let data = Dataset::Lm(vec![a, b]);
        let split = batches(&data, 1, 1, Padding::Left).unwrap();
        let n = m.num_params();
        let v = normal(n, 9);
        let mut obj = Objective::new(&m, &split).unwrap();
        let want = obj.loss_gradient_hvp(&v).unwrap();
        let (mut grad, mut hvp) = (vec![f64::NAN; n], vec![f64::NAN; n]);
        obj.hvp_into(&v, &mut hvp, Some(&mut grad)).unwrap();
        assert!(rel_error(&grad, &want.gradient) < 1e-15, "{name}: gradient");
        assert!(rel_error(&hvp, &want.hvp) < 1e-15, "{name}: hvp");
        let mut grad = vec![f64::NAN; n];
        obj.gradient_into(&mut grad).unwrap();
        assert!(
            rel_error(&grad, &want.gradient) < 1e-15,
            "{name}: gradient alone"
        );
    }
}

#[test]
fn dataset_results_do_not_depend_on_batching() {
    let m = model::<f64>("opt-small-preln");
    let vocab = m.config().vocab_size as u32;
    let (a, b) = two_rows(vocab);
    let c = LmExample::from_ids(vec![2, 9, 10, 11]);
    let lm = Dataset::Lm(vec![a, b, c]);
    let v = normal(m.num_params(), 8);
    for data in [lm, choice_dataset(vocab)] {
        let one = batches(&data, 100, 1, Padding::Right).unwrap();
        assert_eq!(one.len(), 1);
        let mut want = Objective::new(&m, &one).unwrap();
        let want = want.loss_gradient_hvp(&v).unwrap();
        for rows in [1, 2] {
            let split = batches(&data, rows, 1, Padding::Left).unwrap();
            assert!(split.len() > 1);
            let got = Objective::new(&m, &split)
                .unwrap()
                .loss_gradient_hvp(&v)
                .unwrap();
            assert!(
                (got.loss - want.loss).abs() < 1e-14 * want.loss.abs(),
                "loss, {rows} rows"
            );
            assert!(
                rel_error(&got.gradient, &want.gradient) < 1e-13,
                "gradient, {rows} rows"
            );
            assert!(rel_error(&got.hvp, &want.hvp) < 1e-13, "hvp, {rows} rows");
        }
    }
}

#[test]
fn classification_loss_derivatives_match_central_differences() {
    let m = model::<f64>("opt-small-preln");
    let data = batches(
        &choice_dataset(m.config().vocab_size as u32),
        8,
        1,
        Padding::Right,
    )
    .unwrap();
    assert_eq!(data.len(), 1);
    let ckpt = Checkpoint::<f64>::load(&fixture("opt-small-preln")).unwrap();
    let v = normal(m.num_params(), 9);
    let r = Objective::new(&m, &data)
        .unwrap()
        .loss_gradient_hvp(&v)
        .unwrap();
    let h = 1e-5;
    let shifted = |s: f64| {
        let p: Vec<f64> = ckpt
            .params
            .iter()
            .zip(&v)
            .map(|(p, v)| p + s * h * v)
            .collect();
        let m = Opt::new(Cpu, ckpt.config.clone(), &p).unwrap();
        let mut obj = Objective::new(&m, &data).unwrap();
        obj.gradient().unwrap()
    };
    let ((lp, gp), (lm, gm)) = (shifted(1.0), shifted(-1.0));
    let fd_gv = (lp - lm) / (2.0 * h);
    assert!(
        (fd_gv - r.grad_dot_v).abs() < 1e-7 * r.grad_dot_v.abs(),
        "g.v {} vs {fd_gv}",
        r.grad_dot_v
    );
    let fd_hv: Vec<f64> = gp
        .iter()
        .zip(&gm)
        .map(|(p, m)| (p - m) / (2.0 * h))
        .collect();
    let e = rel_error(&r.hvp, &fd_hv);
    assert!(
        e < 1e-6,
        "H v vs central differences of the gradient: {e:.1e}"
    );
    // and the loss is the cross-entropy over mean candidate log-probabilities
    let mut obj = Objective::new(&m, &data).unwrap();
    let logits = obj.logits(0).unwrap();
    assert!((obj.loss().unwrap() - r.loss).abs() < 1e-15);
    assert!((r.loss - choice_loss_by_hand(&data[0], &logits, m.config().vocab_size)).abs() < 1e-13);
}

/// The choice loss recomputed from the logits with plain loops.
fn choice_loss_by_hand(batch: &Batch, logits: &[f64], vocab: usize) -> f64 {
    let maskscape::model::Targets::Choice { questions } = &batch.targets else {
        panic!()
    };
    let seq = batch.tokens.seq;
    let log_prob = |row: usize, pos: usize| {
        let l = &logits[(row * seq + pos - 1) * vocab..(row * seq + pos) * vocab];
        let max = l.iter().copied().fold(f64::MIN, f64::max);
        let lse = max + l.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        l[batch.tokens.input_ids[row * seq + pos] as usize] - lse
    };
    let total: f64 = questions
        .iter()
        .map(|q| {
            let scores: Vec<f64> = q
                .candidates
                .iter()
                .map(|c| {
                    c.answer.clone().map(|p| log_prob(c.row, p)).sum::<f64>()
                        / c.answer.len() as f64
                })
                .collect();
            let lse = scores.iter().map(|s| s.exp()).sum::<f64>().ln();
            lse - scores[q.gold]
        })
        .sum();
    total / questions.len() as f64
}
