//! The LM head fused with the targets' log-probabilities, for a value pass whose
//! reverse sweep wants the adjoint of the head's input and not of its weight (a
//! masked gradient that leaves the embeddings out).
//!
//! Unfused, the head writes `rows x vocab` logits, the log-probability reads them and
//! writes their softmax, its VJP writes the logits' adjoint, and a second product
//! reads the whole weight again for the input's adjoint. Here the vocabulary is
//! walked once in chunks that stay in cache: a chunk's logits, their exponentials
//! under a running row maximum (what came before is rescaled when it grows, as in an
//! online softmax) and their product with the chunk's weight rows follow each other.
//! Out come `lp` and `jac = d lp / d x = w[t] - sum_v p_v w[v]` per row, from which
//! the reverse sweep's adjoint is a row scaling. On OPT-125m's head (63 rows, a
//! 50272 x 768 weight, f32, 2 threads) the walk took 44-61 ms against 69-88 ms for
//! the unfused product, log-softmax, VJP and product, measured alternately.
//!
//! The vocabulary is cut into groups, each a task with its own running sums in
//! `scratch`, merged in order afterwards: the bits do not depend on the thread count.
//! A vocabulary too narrow for two groups is left to the unfused head: the walk would
//! run on one thread, and such a head stays in cache unfused (opt-mini's 2048 x 256
//! head on 4 x 64 tokens: masked gradient 20.3 ms unfused, 21.7 ms fused).

use rayon::prelude::*;

use super::CpuScalar;
use super::gemm::gemm;
use super::logprob::target;
use super::reduce::sum;
use crate::backend::Gemm;

/// Vocabulary rows per step: OPT-125m's 256 x 768 f32 chunk of the weight (768 KiB)
/// stays in L2 between its two products (128 to 1024 measured alike).
const CHUNK: usize = 256;

/// Vocabulary rows per group at least: a 50k vocabulary makes 12 tasks, which two
/// threads share within one group's time.
const GROUP: usize = 4096;

/// One group's running sums, carved from its part of `scratch`.
struct Partial<S> {
    /// Per row: the largest logit so far,
    max: S,
    /// the sum of the exponentials under it,
    total: S,
    /// and the target's logit when it lies in the group (else 0).
    target_logit: S,
    /// `rows x width`: the weight rows summed with those exponentials.
    weighted: S,
}

/// Scalars of one group's part of `scratch`, per row: its partial sums and one
/// chunk's logits.
fn group_row_len(width: usize) -> usize {
    3 + width + CHUNK
}

/// The number of groups for a vocabulary and an input width: each at least `GROUP`
/// and `group_row_len(width)` rows wide, so that every group's part fits in the
/// `rows x vocab` scratch; `None` below two.
fn group_count(vocab: usize, width: usize) -> Option<usize> {
    let groups = vocab / GROUP.max(group_row_len(width));
    (groups >= 2).then_some(groups)
}

fn carve<T>(part: &mut [T], rows: usize, width: usize) -> (Partial<&mut [T]>, &mut [T]) {
    let (max, rest) = part.split_at_mut(rows);
    let (total, rest) = rest.split_at_mut(rows);
    let (target_logit, rest) = rest.split_at_mut(rows);
    let (weighted, logits) = rest.split_at_mut(rows * width);
    let partial = Partial {
        max,
        total,
        target_logit,
        weighted,
    };
    (partial, logits)
}

fn read<T>(part: &[T], rows: usize, width: usize) -> Partial<&[T]> {
    let (max, rest) = part.split_at(rows);
    let (total, rest) = rest.split_at(rows);
    let (target_logit, rest) = rest.split_at(rows);
    Partial {
        max,
        total,
        target_logit,
        weighted: &rest[..rows * width],
    }
}

/// See `Backend::logprob_head_forward`; false (nothing written) for a vocabulary
/// narrower than two groups.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: CpuScalar>(
    lp: &mut [T],
    jac: &mut [T],
    scratch: &mut [T],
    x: &[T],
    weight: &[T],
    targets: &[u32],
    rows: usize,
    width: usize,
    vocab: usize,
) -> bool {
    let Some(groups) = group_count(vocab, width) else {
        return false;
    };
    let part_len = rows * group_row_len(width);
    let scratch = &mut scratch[..groups * part_len];
    let x = &x[..rows * width];
    scratch
        .par_chunks_mut(part_len)
        .enumerate()
        .for_each(|(g, part)| {
            let (partial, logits) = carve(part, rows, width);
            let vocab_range = g * vocab / groups..(g + 1) * vocab / groups;
            walk(partial, logits, x, weight, targets, vocab_range, width);
        });
    let parts: Vec<Partial<&[T]>> = scratch
        .chunks(part_len)
        .map(|part| read(part, rows, width))
        .collect();
    lp[..rows]
        .par_iter_mut()
        .zip(jac[..rows * width].par_chunks_mut(width))
        .enumerate()
        .for_each(|(r, (lp, jac))| {
            let Some(t) = target(targets, r) else {
                *lp = T::ZERO;
                jac.fill(T::ZERO);
                return;
            };
            let max = parts.iter().fold(parts[0].max[r], |m, p| m.max(p.max[r]));
            let (mut total, mut target_logit) = (T::ZERO, T::ZERO);
            jac.fill(T::ZERO);
            for p in &parts {
                // exactly 0 but in the target's group
                target_logit += p.target_logit[r];
                let scale = (p.max[r] - max).exp();
                total += scale * p.total[r];
                let weighted = &p.weighted[r * width..(r + 1) * width];
                jac.iter_mut()
                    .zip(weighted)
                    .for_each(|(j, &w)| *j += scale * w);
            }
            let inv = T::ONE / total;
            let target_row = &weight[t * width..(t + 1) * width];
            jac.iter_mut()
                .zip(target_row)
                .for_each(|(j, &w)| *j = w - *j * inv);
            // as `logprob::forward` writes it
            *lp = target_logit - max - total.ln();
        });
    true
}

/// One group's vocabulary, a chunk at a time, into its partial sums.
fn walk<T: CpuScalar>(
    s: Partial<&mut [T]>,
    logits: &mut [T],
    x: &[T],
    weight: &[T],
    targets: &[u32],
    vocab_range: std::ops::Range<usize>,
    width: usize,
) {
    let rows = s.max.len();
    s.max.fill(T::from_f64(f64::NEG_INFINITY));
    s.total.fill(T::ZERO);
    s.target_logit.fill(T::ZERO);
    s.weighted.fill(T::ZERO);
    for start in vocab_range.clone().step_by(CHUNK) {
        let len = CHUNK.min(vocab_range.end - start);
        let w = &weight[start * width..(start + len) * width];
        let l = &mut logits[..rows * len];
        gemm(&Gemm::nt(rows, len, width), x, w, l);
        for (r, row) in l.chunks_mut(len).enumerate() {
            let t = targets[r] as usize;
            if (start..start + len).contains(&t) {
                s.target_logit[r] = row[t - start];
            }
            let chunk_max = row.iter().fold(row[0], |m, &v| m.max(v));
            if chunk_max > s.max[r] {
                // the sums so far were taken under the old maximum
                let scale = (s.max[r] - chunk_max).exp();
                s.total[r] *= scale;
                s.weighted[r * width..(r + 1) * width]
                    .iter_mut()
                    .for_each(|w| *w *= scale);
                s.max[r] = chunk_max;
            }
            T::exp_shifted(row, s.max[r]);
            s.total[r] += sum(row);
        }
        gemm(&Gemm::nn(rows, width, len).accumulate(), l, w, s.weighted);
    }
}

#[cfg(test)]
mod tests {
    use super::super::logprob;
    use super::*;
    use crate::backend::NO_TARGET;

    /// The unfused head: logits, `logprob::forward`, and `w[t] - probs w`.
    fn unfused(x: &[f64], w: &[f64], targets: &[u32], width: usize) -> (Vec<f64>, Vec<f64>) {
        let (rows, vocab) = (targets.len(), w.len() / width);
        let mut logits = vec![0.0; rows * vocab];
        gemm(&Gemm::nt(rows, vocab, width), x, w, &mut logits);
        let (mut lp, mut probs) = (vec![0.0; rows], vec![0.0; rows * vocab]);
        logprob::forward(&mut lp, &mut probs, &logits, targets, rows, vocab);
        let mut expected = vec![0.0; rows * width];
        gemm(&Gemm::nn(rows, width, vocab), &probs, w, &mut expected);
        let mut jac = vec![0.0; rows * width];
        for (r, &t) in targets.iter().enumerate() {
            if t == NO_TARGET {
                continue;
            }
            for i in 0..width {
                jac[r * width + i] = w[t as usize * width + i] - expected[r * width + i];
            }
        }
        (lp, jac)
    }

    fn fused(
        x: &[f64],
        w: &[f64],
        targets: &[u32],
        width: usize,
        threads: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let (rows, vocab) = (targets.len(), w.len() / width);
        let (mut lp, mut jac) = (vec![f64::NAN; rows], vec![f64::NAN; rows * width]);
        let mut scratch = vec![f64::NAN; rows * vocab];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        let ran = pool.install(|| {
            forward(
                &mut lp,
                &mut jac,
                &mut scratch,
                x,
                w,
                targets,
                rows,
                width,
                vocab,
            )
        });
        assert!(ran, "the fused head did not run");
        (lp, jac)
    }

    fn assert_matches_unfused(x: &[f64], w: &[f64], targets: &[u32], width: usize) {
        let (lp_want, jac_want) = unfused(x, w, targets, width);
        let (lp, jac) = fused(x, w, targets, width, 1);
        for (a, b) in lp.iter().zip(&lp_want) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "lp {a} vs {b}");
        }
        for (a, b) in jac.iter().zip(&jac_want) {
            assert!((a - b).abs() <= 1e-12, "jac {a} vs {b}");
        }
    }

    fn wave(n: usize, f: f64, scale: f64) -> Vec<f64> {
        (0..n).map(|i| scale * ((i as f64) * f).sin()).collect()
    }

    #[test]
    fn matches_the_unfused_head_across_groups_and_thread_counts() {
        // 3 groups (the last partial), chunks ending mid-group, logits of a few units
        // so that the running maximum moves; targets in each group and a row without
        let (width, vocab) = (24, 3 * GROUP + 777);
        let w = wave(vocab * width, 0.37, 0.3);
        let x = wave(5 * width, 0.71, 1.0);
        let targets = [
            3,
            GROUP as u32 + 300,
            NO_TARGET,
            vocab as u32 - 1,
            2 * GROUP as u32 + 259,
        ];
        assert_matches_unfused(&x, &w, &targets, width);
        let (lp, jac) = fused(&x, &w, &targets, width, 1);
        assert_eq!(lp[2], 0.0);
        assert!(jac[2 * width..3 * width].iter().all(|&j| j == 0.0));
        let three = fused(&x, &w, &targets, width, 3);
        assert_eq!(three, (lp, jac), "bits depend on the thread count");
    }

    #[test]
    fn groups_fit_the_scratch_and_are_two_at_least() {
        // OPT-125m, OPT-13b (an input wider than a group), opt-mini
        assert_eq!(group_count(50272, 768), Some(12));
        assert_eq!(group_count(50272, 5120), Some(9));
        assert_eq!(group_count(2048, 256), None);
        assert_eq!(
            (group_count(2 * GROUP - 1, 8), group_count(2 * GROUP, 8)),
            (None, Some(2))
        );
        for vocab in (2 * GROUP..60_000).step_by(997) {
            for width in [1, 768, 3837, 3838, 5120, 7168] {
                if let Some(g) = group_count(vocab, width) {
                    assert!(g * group_row_len(width) <= vocab, "{vocab} x {width}");
                }
            }
        }
        // declined: nothing written
        let (vocab, width) = (2 * GROUP - 1, 8);
        let (mut lp, mut jac) = ([f64::NAN; 2], vec![f64::NAN; 2 * width]);
        let mut scratch = vec![0.0; 2 * vocab];
        let (x, w) = (wave(2 * width, 0.71, 1.0), wave(vocab * width, 0.37, 0.3));
        let ran = forward(
            &mut lp,
            &mut jac,
            &mut scratch,
            &x,
            &w,
            &[1, 2],
            2,
            width,
            vocab,
        );
        assert!(!ran && lp[0].is_nan() && jac.iter().all(|j| j.is_nan()));
    }
}
