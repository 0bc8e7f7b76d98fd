//! Every kernel of the backend trait against the CPU's f64 kernel of the same name, on
//! the same inputs: what names the failing kernel when an end-to-end product in
//! tests/gpu.rs disagrees.
//!
//! Inputs are standard normal, rounded to f32 so that every precision reads the same
//! numbers. Outputs start from the same random values on both sides, so a kernel that
//! accumulates where it should overwrite (or the reverse) differs too. Shapes are
//! ragged on purpose: rows, widths and sequence lengths that are not multiples of a
//! warp, a tile or a block. On a GPU both precisions of the CUDA backend are checked;
//! without one the CPU's f32 kernels are, and the CUDA half says why it is skipped.

use maskscape::backend::cuda::availability;
use maskscape::backend::{AttentionDims, Backend, Cpu, Cuda, Gemm, NO_TARGET, Scalar};
use rand::Rng as _;
use rand_distr::StandardNormal;

/// `n` standard normal values, rounded to f32 (exact in either precision).
fn data(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = maskscape::rng::stream(seed, 0);
    (0..n)
        .map(|_| f64::from(rng.sample::<f64, _>(StandardNormal) as f32))
        .collect()
}

/// `count` distinct sorted indices below `n`.
fn indices(n: usize, count: usize, seed: u64) -> Vec<u32> {
    let mut rng = maskscape::rng::stream(seed, 0);
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < count {
        chosen.insert(rng.random_range(0..n as u32));
    }
    chosen.into_iter().collect()
}

/// `n` token ids below `vocab`, with repeats (the embedding's scatter-add must sum them).
fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = maskscape::rng::stream(seed, 0);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// One backend in one precision, with the conversions a case needs.
struct On<'b, B>(&'b B);

impl<B> On<'_, B> {
    fn up<T: Scalar>(&self, x: &[f64]) -> B::Buf
    where
        B: Backend<T>,
    {
        let host: Vec<T> = x.iter().map(|&v| T::from_f64(v)).collect();
        self.0.upload(&host).unwrap()
    }

    fn index<T: Scalar>(&self, x: &[u32]) -> B::Index
    where
        B: Backend<T>,
    {
        self.0.upload_index(x).unwrap()
    }

    fn down<T: Scalar>(&self, buf: &B::Buf, len: usize) -> maskscape::Result<Vec<f64>>
    where
        B: Backend<T>,
    {
        let mut host = vec![T::ZERO; len];
        self.0.download(self.0.view(buf), &mut host)?;
        Ok(host.iter().map(|v| v.to_f64()).collect())
    }
}

/// The kernels under test, with their shapes.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Copy,
    AddAssign,
    Zero,
    Scatter,
    GatherAdd,
    Product(Gemm),
    SparseMatmulNt,
    SparseMatmulNn,
    /// `nnz` entries: below `(OUT + IN) / 8` the CUDA kernel reads the operands as
    /// they are, above it through transposed copies.
    SampledMatmulTn {
        nnz: usize,
    },
    EmbeddingForward {
        accumulate: bool,
    },
    EmbeddingBackward,
    EmbeddingForwardSparse,
    EmbeddingBackwardSampled,
    BiasForward,
    BiasBackward,
    LayerNorm {
        width: usize,
        affine: bool,
    },
    Relu,
    Attention(AttentionDims),
    Logprob {
        vocab: usize,
    },
}

const ROWS: usize = 37;
const LEN: usize = 1029;
/// A sparse weight of `OUT x IN` with `NNZ` entries.
const OUT: usize = 24;
const IN: usize = 70;
const NNZ: usize = 150;
const VOCAB: usize = 50;

fn kernels() -> Vec<Kernel> {
    use Kernel::*;
    let gemms = [
        Gemm::nn(37, 45, 53),
        Gemm::nt(37, 45, 53),
        Gemm::tn(37, 45, 53).accumulate().alpha(0.5),
        Gemm::new(33, 29, 130, true, true).leading(40, 131, 31),
        Gemm::nt(37, 37, 16)
            .leading(48, 48, 37)
            .batched(3, 16, 16, 37 * 37),
    ];
    let attention = [
        AttentionDims {
            batch: 2,
            seq: 37,
            heads: 3,
            head_dim: 16,
        },
        AttentionDims {
            batch: 1,
            seq: 130,
            heads: 2,
            head_dim: 64,
        },
        // OPT-125m's heads, as tests/gpu.rs runs it
        AttentionDims {
            batch: 2,
            seq: 32,
            heads: 12,
            head_dim: 64,
        },
    ];
    [
        Copy,
        AddAssign,
        Zero,
        Scatter,
        GatherAdd,
        SparseMatmulNt,
        SparseMatmulNn,
        SampledMatmulTn { nnz: NNZ },
        SampledMatmulTn { nnz: 5 },
        EmbeddingForward { accumulate: false },
        EmbeddingForward { accumulate: true },
        EmbeddingBackward,
        EmbeddingForwardSparse,
        EmbeddingBackwardSampled,
        BiasForward,
        BiasBackward,
        LayerNorm {
            width: 200,
            affine: true,
        },
        LayerNorm {
            width: 200,
            affine: false,
        },
        LayerNorm {
            width: 2050,
            affine: true,
        },
        Relu,
        Logprob { vocab: 1000 },
        Logprob { vocab: 50272 },
    ]
    .into_iter()
    .chain(gemms.map(Product))
    .chain(attention.map(Attention))
    .collect()
}

/// Runs `kernel` on `b` in `T`; every output it writes, in a fixed order.
fn run<T: Scalar, B: Backend<T>>(kernel: Kernel, b: &B) -> maskscape::Result<Vec<Vec<f64>>> {
    let on = On(b);
    let up = |x: &[f64]| on.up::<T>(x);
    let index = |x: &[u32]| on.index::<T>(x);
    let down = |buf: &B::Buf, len: usize| on.down::<T>(buf, len);
    match kernel {
        Kernel::Copy | Kernel::AddAssign | Kernel::Zero => {
            let mut dst = up(&data(LEN, 1));
            let src = up(&data(LEN, 2));
            let (d, s) = (b.view_mut(&mut dst), b.view(&src));
            match kernel {
                Kernel::Copy => b.copy(d, s),
                Kernel::AddAssign => b.add_assign(d, s),
                _ => b.zero(d),
            }
            Ok(vec![down(&dst, LEN)?])
        }
        Kernel::Scatter => {
            let mut dst = up(&data(LEN, 1));
            let idx = index(&indices(LEN, 300, 3));
            let values = up(&data(300, 2));
            b.scatter(b.view_mut(&mut dst), &idx, b.view(&values));
            Ok(vec![down(&dst, LEN)?])
        }
        Kernel::GatherAdd => {
            let mut dst = up(&data(300, 1));
            let idx = index(&indices(LEN, 300, 3));
            let src = up(&data(LEN, 2));
            b.gather_add(b.view_mut(&mut dst), &idx, b.view(&src));
            Ok(vec![down(&dst, 300)?])
        }
        Kernel::Product(spec) => {
            let (la, lb, lc) = spec.extents();
            let (a, bb) = (up(&data(la, 1)), up(&data(lb, 2)));
            let mut c = up(&data(lc, 3));
            b.gemm(&spec, b.view(&a), b.view(&bb), b.view_mut(&mut c));
            Ok(vec![down(&c, lc)?])
        }
        Kernel::SparseMatmulNt | Kernel::SparseMatmulNn | Kernel::SampledMatmulTn { .. } => {
            let nnz = match kernel {
                Kernel::SampledMatmulTn { nnz } => nnz,
                _ => NNZ,
            };
            let idx = index(&indices(OUT * IN, nnz, 3));
            let values = up(&data(nnz, 4));
            let x = up(&data(ROWS * IN, 1));
            let dy = up(&data(ROWS * OUT, 2));
            match kernel {
                Kernel::SparseMatmulNt => {
                    let mut out = up(&data(ROWS * OUT, 5));
                    let (o, x) = (b.view_mut(&mut out), b.view(&x));
                    b.sparse_matmul_nt(o, x, &idx, b.view(&values), ROWS, OUT, IN);
                    Ok(vec![down(&out, ROWS * OUT)?])
                }
                Kernel::SparseMatmulNn => {
                    let mut out = up(&data(ROWS * IN, 5));
                    let (o, dy) = (b.view_mut(&mut out), b.view(&dy));
                    b.sparse_matmul_nn(o, dy, &idx, b.view(&values), ROWS, OUT, IN);
                    Ok(vec![down(&out, ROWS * IN)?])
                }
                _ => {
                    let mut out = up(&data(nnz, 5));
                    let (o, dy, x) = (b.view_mut(&mut out), b.view(&dy), b.view(&x));
                    b.sampled_matmul_tn(o, dy, x, &idx, ROWS, OUT, IN);
                    Ok(vec![down(&out, nnz)?])
                }
            }
        }
        Kernel::EmbeddingForward { accumulate } => {
            let (tokens, table) = (index(&ids(ROWS, VOCAB, 6)), up(&data(VOCAB * IN, 1)));
            let mut out = up(&data(ROWS * IN, 2));
            let (o, t) = (b.view_mut(&mut out), b.view(&table));
            b.embedding_forward(o, &tokens, t, ROWS, IN, accumulate);
            Ok(vec![down(&out, ROWS * IN)?])
        }
        Kernel::EmbeddingBackward => {
            let tokens = index(&ids(ROWS, VOCAB, 6));
            let mut dtable = up(&data(VOCAB * IN, 1));
            let dout = up(&data(ROWS * IN, 2));
            b.embedding_backward(b.view_mut(&mut dtable), b.view(&dout), &tokens, ROWS, IN);
            Ok(vec![down(&dtable, VOCAB * IN)?])
        }
        Kernel::EmbeddingForwardSparse => {
            let tokens = index(&ids(ROWS, VOCAB, 6));
            let idx = index(&indices(VOCAB * IN, NNZ, 3));
            let values = up(&data(NNZ, 4));
            let mut out = up(&data(ROWS * IN, 2));
            let (o, v) = (b.view_mut(&mut out), b.view(&values));
            b.embedding_forward_sparse(o, &tokens, &idx, v, ROWS, IN);
            Ok(vec![down(&out, ROWS * IN)?])
        }
        Kernel::EmbeddingBackwardSampled => {
            // few tokens, so that sampled rows are hit (by several rows each)
            let tokens = index(&ids(ROWS, 6, 6));
            let idx = index(&indices(6 * IN, NNZ, 3));
            let dout = up(&data(ROWS * IN, 2));
            let mut out = up(&data(NNZ, 5));
            let (o, d) = (b.view_mut(&mut out), b.view(&dout));
            b.embedding_backward_sampled(o, d, &tokens, &idx, ROWS, IN);
            Ok(vec![down(&out, NNZ)?])
        }
        Kernel::BiasForward => {
            let mut out = up(&data(ROWS * IN, 1));
            let bias = up(&data(IN, 2));
            b.bias_forward(b.view_mut(&mut out), b.view(&bias), ROWS, IN);
            Ok(vec![down(&out, ROWS * IN)?])
        }
        Kernel::BiasBackward => {
            let mut dbias = up(&data(IN, 1));
            let dout = up(&data(ROWS * IN, 2));
            b.bias_backward(b.view_mut(&mut dbias), b.view(&dout), ROWS, IN);
            Ok(vec![down(&dbias, IN)?])
        }
        Kernel::LayerNorm { width, affine } => layernorm(&on, width, affine),
        Kernel::Relu => {
            let inp = up(&data(LEN, 1));
            let grad = up(&data(LEN, 2));
            let (mut out, mut back) = (up(&data(LEN, 3)), up(&data(LEN, 4)));
            b.relu_forward(b.view_mut(&mut out), b.view(&inp));
            b.relu_backward(b.view_mut(&mut back), b.view(&inp), b.view(&grad));
            Ok(vec![down(&out, LEN)?, down(&back, LEN)?])
        }
        Kernel::Attention(dims) => attention(&on, dims),
        Kernel::Logprob { vocab } => logprob(&on, vocab),
    }
}

/// LayerNorm's four rules, the later ones reading the forward's saved state.
fn layernorm<T: Scalar, B: Backend<T>>(
    on: &On<'_, B>,
    width: usize,
    affine: bool,
) -> maskscape::Result<Vec<Vec<f64>>> {
    let b = on.0;
    let n = ROWS * width;
    let up = |x: &[f64]| on.up::<T>(x);
    let param = |seed| affine.then(|| up(&data(width, seed)));
    let (inp, inp_dot) = (up(&data(n, 1)), up(&data(n, 2)));
    let (weight, bias, weight_dot, bias_dot) = (param(3), param(4), param(5), param(6));
    let (dout, dout_dot) = (up(&data(n, 7)), up(&data(n, 8)));
    let (mut out, mut mean, mut rstd) = (up(&data(n, 9)), up(&data(ROWS, 10)), up(&data(ROWS, 11)));
    b.layernorm_forward(
        b.view_mut(&mut out),
        b.view_mut(&mut mean),
        b.view_mut(&mut rstd),
        b.view(&inp),
        optional(b, &weight),
        optional(b, &bias),
        ROWS,
        width,
        1e-5,
    );
    let mut out_dot = up(&data(n, 12));
    b.layernorm_jvp(
        b.view_mut(&mut out_dot),
        b.view(&inp),
        b.view(&inp_dot),
        b.view(&mean),
        b.view(&rstd),
        optional(b, &weight),
        optional(b, &weight_dot),
        optional(b, &bias_dot),
        ROWS,
        width,
    );
    let mut dinp = up(&data(n, 13));
    let (mut dweight, mut dbias) = (param(14), param(15));
    b.layernorm_backward(
        b.view_mut(&mut dinp),
        dweight.as_mut().map(|x| b.view_mut(x)),
        dbias.as_mut().map(|x| b.view_mut(x)),
        b.view(&dout),
        b.view(&inp),
        b.view(&mean),
        b.view(&rstd),
        optional(b, &weight),
        ROWS,
        width,
    );
    let mut dinp_dot = up(&data(n, 16));
    let (mut dweight_dot, mut dbias_dot) = (param(17), param(18));
    b.layernorm_backward_jvp(
        b.view_mut(&mut dinp_dot),
        dweight_dot.as_mut().map(|x| b.view_mut(x)),
        dbias_dot.as_mut().map(|x| b.view_mut(x)),
        b.view(&dout),
        b.view(&dout_dot),
        b.view(&inp),
        b.view(&inp_dot),
        b.view(&mean),
        b.view(&rstd),
        optional(b, &weight),
        optional(b, &weight_dot),
        ROWS,
        width,
    );
    let mut outputs = vec![
        on.down(&out, n)?,
        on.down(&mean, ROWS)?,
        on.down(&rstd, ROWS)?,
        on.down(&out_dot, n)?,
        on.down(&dinp, n)?,
        on.down(&dinp_dot, n)?,
    ];
    for param in [&dweight, &dbias, &dweight_dot, &dbias_dot]
        .into_iter()
        .flatten()
    {
        outputs.push(on.down(param, width)?);
    }
    Ok(outputs)
}

/// The view of a parameter a LayerNorm without affine parameters does not have.
fn optional<'a, T: Scalar, B: Backend<T>>(b: &B, x: &'a Option<B::Buf>) -> Option<B::View<'a>> {
    x.as_ref().map(|x| b.view(x))
}

/// Attention's four rules; sequence 0 is left-padded by 3 keys, the others
/// right-padded by 4, so some queries see no key at all.
fn attention<T: Scalar, B: Backend<T>>(
    on: &On<'_, B>,
    dims: AttentionDims,
) -> maskscape::Result<Vec<Vec<f64>>> {
    let b = on.0;
    let (n, p) = (dims.rows() * dims.width(), dims.probs_len());
    let up = |x: &[f64]| on.up::<T>(x);
    let key_mask: Vec<u32> = (0..dims.rows())
        .map(|r| {
            let (s, j) = (r / dims.seq, r % dims.seq);
            u32::from(if s == 0 { j >= 3 } else { j + 4 < dims.seq })
        })
        .collect();
    let key_mask = on.index::<T>(&key_mask);
    let [q, k, v, q_dot, k_dot, v_dot, dout, dout_dot] =
        std::array::from_fn(|i| up(&data(n, i as u64 + 1)));
    let (mut out, mut probs) = (up(&data(n, 9)), up(&data(p, 10)));
    b.attention_forward(
        b.view_mut(&mut out),
        b.view_mut(&mut probs),
        b.view(&q),
        b.view(&k),
        b.view(&v),
        &key_mask,
        dims,
    );
    let (mut out_dot, mut probs_dot) = (up(&data(n, 11)), up(&data(p, 12)));
    b.attention_jvp(
        b.view_mut(&mut out_dot),
        b.view_mut(&mut probs_dot),
        b.view(&probs),
        b.view(&q),
        b.view(&k),
        b.view(&v),
        b.view(&q_dot),
        b.view(&k_dot),
        b.view(&v_dot),
        dims,
    );
    let [mut dq, mut dk, mut dv] = std::array::from_fn(|i| up(&data(n, i as u64 + 13)));
    b.attention_backward(
        b.view_mut(&mut dq),
        b.view_mut(&mut dk),
        b.view_mut(&mut dv),
        b.view(&dout),
        b.view(&probs),
        b.view(&q),
        b.view(&k),
        b.view(&v),
        dims,
    );
    let [mut dq_dot, mut dk_dot, mut dv_dot] = std::array::from_fn(|i| up(&data(n, i as u64 + 16)));
    b.attention_backward_jvp(
        b.view_mut(&mut dq_dot),
        b.view_mut(&mut dk_dot),
        b.view_mut(&mut dv_dot),
        b.view(&dout),
        b.view(&dout_dot),
        b.view(&probs),
        b.view(&probs_dot),
        b.view(&q),
        b.view(&k),
        b.view(&v),
        b.view(&q_dot),
        b.view(&k_dot),
        b.view(&v_dot),
        dims,
    );
    let mut outputs = vec![on.down(&probs, p)?, on.down(&probs_dot, p)?];
    for buf in [&out, &out_dot, &dq, &dk, &dv, &dq_dot, &dk_dot, &dv_dot] {
        outputs.push(on.down(buf, n)?);
    }
    Ok(outputs)
}

/// The log-probability's four rules over `ROWS` rows, every fifth without a target.
fn logprob<T: Scalar, B: Backend<T>>(
    on: &On<'_, B>,
    vocab: usize,
) -> maskscape::Result<Vec<Vec<f64>>> {
    let b = on.0;
    let n = ROWS * vocab;
    let up = |x: &[f64]| on.up::<T>(x);
    let targets: Vec<u32> = ids(ROWS, vocab, 6)
        .into_iter()
        .enumerate()
        .map(|(r, t)| if r % 5 == 2 { NO_TARGET } else { t })
        .collect();
    let targets = on.index::<T>(&targets);
    // logits spread like a language model's (a few large, most small)
    let logits: Vec<f64> = data(n, 1).iter().map(|x| 4.0 * x).collect();
    let (logits, logits_dot) = (up(&logits), up(&data(n, 2)));
    let (dlp, dlp_dot) = (up(&data(ROWS, 3)), up(&data(ROWS, 4)));
    let (mut lp, mut probs) = (up(&data(ROWS, 5)), up(&data(n, 6)));
    b.logprob_forward(
        b.view_mut(&mut lp),
        b.view_mut(&mut probs),
        b.view(&logits),
        &targets,
        ROWS,
        vocab,
    );
    let mut lp_dot = up(&data(ROWS, 7));
    let (p, ld) = (b.view(&probs), b.view(&logits_dot));
    b.logprob_jvp(b.view_mut(&mut lp_dot), p, ld, &targets, ROWS, vocab);
    let mut dlogits = up(&data(n, 8));
    let (p, d) = (b.view(&probs), b.view(&dlp));
    b.logprob_backward(b.view_mut(&mut dlogits), p, d, &targets, ROWS, vocab);
    let mut dlogits_dot = up(&data(n, 9));
    b.logprob_backward_jvp(
        b.view_mut(&mut dlogits_dot),
        b.view(&probs),
        b.view(&logits_dot),
        b.view(&dlp),
        b.view(&dlp_dot),
        &targets,
        ROWS,
        vocab,
    );
    Ok(vec![
        on.down(&lp, ROWS)?,
        on.down(&probs, n)?,
        on.down(&lp_dot, ROWS)?,
        on.down(&dlogits, n)?,
        on.down(&dlogits_dot, n)?,
    ])
}

/// `||a - b|| / ||b||`.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Every kernel on `b` in `T` against the CPU in f64: prints one line per kernel and
/// fails, after all have run, when any output is off by `tol` or more (relative, in
/// norm) or a kernel reported an error.
fn check_all<T: Scalar, B: Backend<T>>(b: &B, tol: f64) {
    let mut failures = Vec::new();
    for kernel in kernels() {
        let reference = run::<f64, Cpu>(kernel, &Cpu).unwrap();
        let outcome = run::<T, B>(kernel, b).map(|outputs| {
            assert_eq!(outputs.len(), reference.len());
            outputs
                .iter()
                .zip(&reference)
                .map(|(o, r)| relative(o, r))
                .collect::<Vec<_>>()
        });
        let line = match &outcome {
            Ok(errors) => {
                let shown: Vec<String> = errors.iter().map(|e| format!("{e:.1e}")).collect();
                let shown = shown.join(" ");
                let worst = errors.iter().fold(0.0_f64, |m, &e| m.max(e));
                // NaN fails too
                if worst.is_nan() || worst >= tol {
                    failures.push(format!("{kernel:?}: {shown}"));
                }
                shown
            }
            Err(e) => {
                failures.push(format!("{kernel:?}: {e}"));
                format!("error: {e}")
            }
        };
        println!("{} {} {kernel:?}: {line}", b.name(), T::NAME);
    }
    assert!(
        failures.is_empty(),
        "{} {} kernels off by {tol:.0e} or more against the CPU in f64:\n{}",
        b.name(),
        T::NAME,
        failures.join("\n")
    );
}

#[test]
fn cpu_f32_kernels_match_f64() {
    check_all::<f32, Cpu>(&Cpu, 1e-5);
}

/// The GPU, or `None` after printing why the test is skipped.
fn gpu() -> Option<Cuda> {
    if let Err(e) = availability() {
        eprintln!("skipped: no CUDA device: {e}");
        return None;
    }
    Some(Cuda::new(0, false).unwrap())
}

#[test]
fn cuda_f64_kernels_match_the_cpu() {
    let Some(cuda) = gpu() else { return };
    check_all::<f64, Cuda>(&cuda, 1e-12);
}

#[test]
fn cuda_f32_kernels_match_the_cpu() {
    let Some(cuda) = gpu() else { return };
    check_all::<f32, Cuda>(&cuda, 1e-5);
}
