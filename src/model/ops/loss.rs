//! The losses, as maps from a batch's token log-probabilities (see `logprob`) to a
//! scalar, with their four rules. They run on the host: their inputs are one number
//! per token.
//!
//! Both are normalised by a `scale` the caller sets to one over the number of loss
//! terms in the whole dataset, so that summing batch results gives exactly the loss
//! of one big batch.
//! - Next-token loss (the fixtures'): `L = -scale sum_r lp[r]` over the scored rows.
//! - Choice loss (the paper's classification loss): candidate `c` of a question is
//!   scored by the mean log-probability of its answer tokens, `s_c = mean_{r in c} lp[r]`,
//!   and `L = scale sum_questions (logsumexp_c s_c - s_gold)`. Its candidates' rows
//!   must sit in the same batch, since the softmax couples them.

/// How a batch's log-probabilities combine into its loss.
#[derive(Clone, Debug, PartialEq)]
pub enum LossHead {
    /// Mean token cross-entropy: every scored row is one term.
    NextToken,
    /// Cross-entropy over candidate answers, one term per question.
    Choice(Vec<ChoiceRows>),
}

/// One question of a choice loss: for each candidate, the rows whose log-probabilities
/// score its answer tokens; and which candidate is right.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceRows {
    pub candidates: Vec<Vec<usize>>,
    pub gold: usize,
}

impl ChoiceRows {
    /// Candidate scores `s_c = mean_{r in c} x[r]` of any per-row quantity `x`.
    fn scores(&self, x: &[f64]) -> Vec<f64> {
        self.candidates
            .iter()
            .map(|rows| rows.iter().map(|&r| x[r]).sum::<f64>() / rows.len() as f64)
            .collect()
    }

    /// `softmax(s)` with the maximum subtracted.
    fn softmax(s: &[f64]) -> Vec<f64> {
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|&v| (v - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|v| v / z).collect()
    }

    /// Spreads per-candidate adjoints back onto the rows (`d s_c / d lp[r] = 1/m_c`).
    fn spread(&self, per_candidate: &[f64], out: &mut [f64]) {
        for (rows, &g) in self.candidates.iter().zip(per_candidate) {
            for &r in rows {
                out[r] += g / rows.len() as f64;
            }
        }
    }
}

impl LossHead {
    /// Each question's candidate scores `s_c` (the mean log-probability of the
    /// candidate's answer tokens); none for a next-token loss.
    pub fn choice_scores(&self, lp: &[f64]) -> Vec<Vec<f64>> {
        match self {
            LossHead::NextToken => Vec::new(),
            LossHead::Choice(questions) => questions.iter().map(|q| q.scores(lp)).collect(),
        }
    }

    /// The batch's contribution to the loss.
    pub fn forward(&self, lp: &[f64], scale: f64) -> f64 {
        match self {
            LossHead::NextToken => -scale * lp.iter().sum::<f64>(),
            LossHead::Choice(questions) => {
                scale
                    * questions
                        .iter()
                        .map(|q| {
                            let s = q.scores(lp);
                            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            let lse = max + s.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
                            lse - s[q.gold]
                        })
                        .sum::<f64>()
            }
        }
    }

    /// `L'` along `lp'`.
    pub fn jvp(&self, lp: &[f64], lp_dot: &[f64], scale: f64) -> f64 {
        match self {
            LossHead::NextToken => -scale * lp_dot.iter().sum::<f64>(),
            LossHead::Choice(questions) => {
                scale
                    * questions
                        .iter()
                        .map(|q| {
                            let p = ChoiceRows::softmax(&q.scores(lp));
                            let sd = q.scores(lp_dot);
                            p.iter().zip(&sd).map(|(p, s)| p * s).sum::<f64>() - sd[q.gold]
                        })
                        .sum::<f64>()
            }
        }
    }

    /// `dL/dlp` (the adjoint of the log-probabilities for `Lb = 1`).
    pub fn backward(&self, lp: &[f64], scale: f64) -> Vec<f64> {
        match self {
            LossHead::NextToken => vec![-scale; lp.len()],
            LossHead::Choice(questions) => {
                let mut out = vec![0.0; lp.len()];
                for q in questions {
                    let mut g = ChoiceRows::softmax(&q.scores(lp));
                    g[q.gold] -= 1.0;
                    g.iter_mut().for_each(|g| *g *= scale);
                    q.spread(&g, &mut out);
                }
                out
            }
        }
    }

    /// The tangent of [`LossHead::backward`] along `lp'`.
    pub fn backward_jvp(&self, lp: &[f64], lp_dot: &[f64], scale: f64) -> Vec<f64> {
        match self {
            LossHead::NextToken => vec![0.0; lp.len()],
            LossHead::Choice(questions) => {
                let mut out = vec![0.0; lp.len()];
                for q in questions {
                    let p = ChoiceRows::softmax(&q.scores(lp));
                    let sd = q.scores(lp_dot);
                    let mean: f64 = p.iter().zip(&sd).map(|(p, s)| p * s).sum();
                    let g: Vec<f64> = p
                        .iter()
                        .zip(&sd)
                        .map(|(p, s)| scale * p * (s - mean))
                        .collect();
                    q.spread(&g, &mut out);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::check::{Rules, check_rules};

    struct Op(LossHead);

    impl Rules for Op {
        fn input_len(&self) -> usize {
            9
        }
        fn forward(&self, x: &[f64]) -> Vec<f64> {
            vec![self.0.forward(x, 0.25)]
        }
        fn jvp(&self, x: &[f64], xd: &[f64]) -> Vec<f64> {
            vec![self.0.jvp(x, xd, 0.25)]
        }
        fn backward(&self, x: &[f64], yb: &[f64]) -> Vec<f64> {
            self.0.backward(x, 0.25).iter().map(|g| g * yb[0]).collect()
        }
        fn backward_jvp(&self, x: &[f64], xd: &[f64], yb: &[f64], ybd: &[f64]) -> Vec<f64> {
            // (yb g(x))' = yb' g(x) + yb g'(x) x'
            let g = self.0.backward(x, 0.25);
            let gd = self.0.backward_jvp(x, xd, 0.25);
            g.iter()
                .zip(&gd)
                .map(|(g, gd)| ybd[0] * g + yb[0] * gd)
                .collect()
        }
    }

    fn two_questions() -> LossHead {
        LossHead::Choice(vec![
            ChoiceRows {
                candidates: vec![vec![0, 1], vec![2], vec![3, 4, 5]],
                gold: 2,
            },
            ChoiceRows {
                candidates: vec![vec![6], vec![7, 8]],
                gold: 0,
            },
        ])
    }

    #[test]
    fn four_rules_match_central_differences() {
        check_rules("next-token loss", &Op(LossHead::NextToken), 81);
        check_rules("choice loss", &Op(two_questions()), 82);
    }

    #[test]
    fn choice_loss_is_cross_entropy_over_mean_log_probabilities() {
        let lp = [-1.0, -3.0, -0.5, -2.0, -2.0, -2.0, -0.1, -4.0, -2.0];
        // question 1: scores -2, -0.5, -2; gold 2
        let q1 = (((-2.0f64).exp() + (-0.5f64).exp() + (-2.0f64).exp()).ln()) + 2.0;
        // question 2: scores -0.1, -3; gold 0
        let q2 = (((-0.1f64).exp() + (-3.0f64).exp()).ln()) + 0.1;
        let got = two_questions().forward(&lp, 0.5);
        assert!((got - 0.5 * (q1 + q2)).abs() < 1e-14);
    }
}
