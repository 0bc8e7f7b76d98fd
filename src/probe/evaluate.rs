//! A checkpoint's loss and accuracy on a dataset, and which regime that puts it in.
//!
//! The loss is the engine's (the exact mean over the dataset). Accuracy applies to
//! classification tasks: each candidate answer is scored by the mean
//! log-probability of its tokens given the prompt (the paper's scoring, the same
//! numbers the loss is built from), the prediction is the best-scored candidate,
//! and ties go to the first. Knowing the regime matters for reading a Hessian: at
//! chance level (random weights, or a model that has not learned the task) the
//! curvature describes an untrained network.

use serde::Serialize;

use crate::backend::{Backend, Scalar};
use crate::error::Result;
use crate::model::{Batch, Objective, Targets};
use crate::progress::Progress;

/// The loss and, for classification, the accuracy of a model on a dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Mean loss over the dataset's loss terms.
    pub loss: f64,
    /// Loss terms: questions (classification) or scored tokens (language modelling).
    pub loss_terms: usize,
    pub accuracy: Option<Accuracy>,
    /// The loss of a uniform guess: `ln C` over C candidates, `ln V` over a
    /// vocabulary of V tokens.
    pub uniform_loss: f64,
    pub regime: Regime,
}

/// Classification accuracy with its baselines.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
    /// The accuracy of always answering the most frequent gold candidate.
    pub majority_rate: f64,
    /// `(accuracy − majority) / sqrt(majority (1 − majority) / total)`: how many
    /// binomial standard errors the accuracy lies above the majority baseline.
    pub z_over_majority: f64,
}

/// Which regime the checkpoint is in on this data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// Accuracy within two standard errors of the majority baseline.
    ChanceLevel,
    /// Accuracy more than two standard errors above the baseline.
    AboveChance,
    /// Accuracy more than two standard errors below it.
    BelowChance,
    /// Language modelling with a loss within 10% of `ln V` (near-uniform predictions).
    NearUniform,
    /// Language modelling with a loss well below `ln V`.
    Predictive,
}

impl Evaluation {
    /// One sentence for reports.
    pub fn describe(&self) -> String {
        match &self.accuracy {
            Some(a) => format!(
                "loss {:.4} (uniform guess {:.4}), accuracy {:.3} ({} of {}; majority class \
                 {:.3}, z = {:+.1}): {}",
                self.loss,
                self.uniform_loss,
                a.accuracy,
                a.correct,
                a.total,
                a.majority_rate,
                a.z_over_majority,
                self.regime.describe()
            ),
            None => format!(
                "loss {:.4} per token over {} tokens (uniform guess {:.4}, perplexity {:.1}): {}",
                self.loss,
                self.loss_terms,
                self.uniform_loss,
                self.loss.exp(),
                self.regime.describe()
            ),
        }
    }
}

impl Regime {
    /// What the regime means for reading the Hessian.
    pub fn describe(self) -> &'static str {
        match self {
            Regime::ChanceLevel => {
                "chance level (an untrained or random-weight regime for this task)"
            }
            Regime::AboveChance => "above chance (the checkpoint has learned the task)",
            Regime::BelowChance => "below chance (systematically wrong)",
            Regime::NearUniform => "near-uniform predictions (an untrained regime)",
            Regime::Predictive => "predictive (well below the uniform loss)",
        }
    }
}

/// Evaluates `objective`'s model on `batches` (the batches it was built from).
/// Cost: one forward sweep, which gives the loss and, for classification, the
/// candidates' scores the loss is made of (no logits leave the backend).
pub fn evaluate<T: Scalar, B: Backend<T>>(
    objective: &mut Objective<'_, T, B>,
    batches: &[Batch],
    progress: &dyn Progress,
) -> Result<Evaluation> {
    progress.check()?;
    let (loss, batch_scores) = objective.loss_and_choice_scores()?;
    let loss_terms = objective.loss_terms();
    let mut correct = 0;
    let mut total = 0;
    let mut gold_counts: Vec<usize> = Vec::new();
    let mut candidates = 0;
    for (batch, scores) in batches.iter().zip(batch_scores) {
        let Targets::Choice { questions } = &batch.targets else {
            continue;
        };
        for (question, scores) in questions.iter().zip(scores) {
            candidates = candidates.max(scores.len());
            if gold_counts.len() < scores.len() {
                gold_counts.resize(scores.len(), 0);
            }
            gold_counts[question.gold] += 1;
            total += 1;
            if argmax(&scores) == question.gold {
                correct += 1;
            }
        }
    }
    let (accuracy, uniform_loss, regime) = if total > 0 {
        let majority = *gold_counts.iter().max().unwrap_or(&0) as f64 / total as f64;
        let rate = correct as f64 / total as f64;
        let se = (majority * (1.0 - majority) / total as f64).sqrt();
        let z = if se > 0.0 {
            (rate - majority) / se
        } else {
            0.0
        };
        let regime = if z > 2.0 {
            Regime::AboveChance
        } else if z < -2.0 {
            Regime::BelowChance
        } else {
            Regime::ChanceLevel
        };
        let accuracy = Accuracy {
            correct,
            total,
            accuracy: rate,
            majority_rate: majority,
            z_over_majority: z,
        };
        (Some(accuracy), (candidates as f64).ln(), regime)
    } else {
        let uniform = (objective.model().config().vocab_size as f64).ln();
        let regime = if loss >= 0.9 * uniform {
            Regime::NearUniform
        } else {
            Regime::Predictive
        };
        (None, uniform, regime)
    };
    Ok(Evaluation {
        loss,
        loss_terms,
        accuracy,
        uniform_loss,
        regime,
    })
}

/// The index of the largest value (the first on ties).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[0.5, 0.7, 0.7]), 1);
        assert_eq!(argmax(&[f64::NEG_INFINITY]), 0);
    }
}
