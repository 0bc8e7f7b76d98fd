//! What a mask is drawn from: scope, ratio and its meaning, sampling, structure, seed.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::layout::{LayerTensor, ParamEntry, ParamLayout, ParamRole};

/// The tensors a mask may select coordinates from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Query and value projection weights of every layer (the paper's choice, where
    /// LoRA goes); no biases.
    Qv,
    /// The q, k, v and out projection weights.
    Attention,
    /// Every linear layer's weight: q, k, v, out, fc1, fc2, and project_in,
    /// project_out and an untied LM head where the model has them.
    Linear,
    /// Every parameter (embeddings, LayerNorms and biases included).
    All,
}

impl Scope {
    /// Whether the tensor with `role` belongs to the scope.
    pub fn contains(self, role: ParamRole) -> bool {
        use LayerTensor::*;
        match (self, role) {
            (Scope::All, _) => true,
            (Scope::Qv, ParamRole::Layer { tensor, .. }) => matches!(tensor, QWeight | VWeight),
            (Scope::Attention, ParamRole::Layer { tensor, .. }) => {
                matches!(tensor, QWeight | KWeight | VWeight | OutWeight)
            }
            (Scope::Linear, ParamRole::Layer { tensor, .. }) => tensor.is_linear_weight(),
            (Scope::Linear, ParamRole::ProjectIn | ParamRole::ProjectOut | ParamRole::LmHead) => {
                true
            }
            _ => false,
        }
    }

    /// The scoped tensors of `layout`, with their positions in it.
    pub fn entries(self, layout: &ParamLayout) -> impl Iterator<Item = (usize, &ParamEntry)> {
        layout
            .entries()
            .iter()
            .enumerate()
            .filter(move |(_, e)| self.contains(e.role))
    }

    /// Number of parameters in the scope.
    pub fn size(self, layout: &ParamLayout) -> usize {
        self.entries(layout).map(|(_, e)| e.len()).sum()
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Qv => "qv",
            Scope::Attention => "attention",
            Scope::Linear => "linear",
            Scope::All => "all",
        }
    }
}

/// What `ratio` is a fraction of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RatioOf {
    /// Of all the model's parameters (the paper's "trainable ratio"): each scoped
    /// tensor keeps coordinates with probability ratio x P / (scope size).
    Total,
    /// Of the scope's parameters: the keep probability is the ratio itself.
    Scope,
}

/// How coordinates are drawn within a scoped tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Each unit (element or column) kept independently with the keep probability
    /// (the paper's masks).
    Bernoulli,
    /// Exactly round(q x units) units per tensor, uniformly without replacement.
    Exact,
}

/// The unit a mask keeps or drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Structure {
    /// Single weights.
    Elements,
    /// Whole columns of a weight matrix W (`[out, in]`): every weight reading one
    /// input feature (the paper's structured ablation). A vector counts as one row.
    Columns,
}

/// Everything that determines a random mask, given the model's layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskSpec {
    pub scope: Scope,
    pub ratio: f64,
    pub ratio_of: RatioOf,
    pub sampling: Sampling,
    pub structure: Structure,
    pub seed: u64,
}

impl MaskSpec {
    /// The paper's masks: Bernoulli elements of the q and v weights, `ratio` of all
    /// parameters.
    pub fn paper(ratio: f64, seed: u64) -> Self {
        MaskSpec {
            scope: Scope::Qv,
            ratio,
            ratio_of: RatioOf::Total,
            sampling: Sampling::Bernoulli,
            structure: Structure::Elements,
            seed,
        }
    }

    /// The largest `--ratio` the scope can hold: 1 for `--ratio-of scope`, the
    /// scope's share of all parameters for `--ratio-of total` (11.3% for OPT-125m's
    /// q and v weights).
    pub fn max_ratio(&self, layout: &ParamLayout) -> f64 {
        match self.ratio_of {
            RatioOf::Scope => 1.0,
            RatioOf::Total => self.scope.size(layout) as f64 / layout.total() as f64,
        }
    }

    /// The probability q with which each unit of each scoped tensor is kept, or an
    /// error naming `--ratio` when the ratio is not in (0, max_ratio].
    pub fn keep_probability(&self, layout: &ParamLayout) -> Result<f64> {
        let ratio = self.ratio;
        if !(ratio.is_finite() && ratio > 0.0) {
            return Err(Error::arg(
                "--ratio",
                format!("must be a number in (0, 1], got {ratio}"),
            ));
        }
        let scope_size = self.scope.size(layout);
        if scope_size == 0 {
            return Err(Error::arg(
                "--scope",
                format!(
                    "scope `{}` holds no parameters in this model",
                    self.scope.name()
                ),
            ));
        }
        let q = match self.ratio_of {
            RatioOf::Scope => ratio,
            RatioOf::Total => ratio * layout.total() as f64 / scope_size as f64,
        };
        if q > 1.0 {
            let max = self.max_ratio(layout);
            return Err(Error::arg(
                "--ratio",
                match self.ratio_of {
                    RatioOf::Scope => format!("{ratio} is above 1"),
                    RatioOf::Total => format!(
                        "{ratio} of all parameters needs keep probability {q:.3} in scope `{}`, \
                         which holds only {:.2}% of the {} parameters: the maximum --ratio is {max:.4}",
                        self.scope.name(),
                        100.0 * max,
                        layout.total()
                    ),
                },
            ));
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;
    use crate::testing::TestResult;

    #[test]
    fn paper_capacities_in_qv() -> TestResult {
        // The paper: ratios above 11.3% / 15.3% / 16.3% are impossible in q and v.
        for (name, max) in [("opt-125m", 0.113), ("opt-1.3b", 0.153), ("opt-13b", 0.163)] {
            let config = preset(name).ok_or_else(|| format!("no preset {name}"))?;
            let layout = ParamLayout::new(&config);
            let spec = MaskSpec::paper(0.01, 0);
            assert!((spec.max_ratio(&layout) - max).abs() < 5e-4, "{name}");
            // q = ratio x P / (2 L E^2).
            let qv = 2 * config.num_hidden_layers * config.hidden_size.pow(2);
            let q = spec.keep_probability(&layout)?;
            assert!((q - 0.01 * layout.total() as f64 / qv as f64).abs() < 1e-15);
            let err = MaskSpec::paper(max + 1e-3, 0)
                .keep_probability(&layout)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("--ratio") && err.contains(&format!("{max:.3}")),
                "{err}"
            );
        }
        Ok(())
    }

    #[test]
    fn scopes_select_their_tensors() -> TestResult {
        let mut config = preset("opt-350m").ok_or("no preset opt-350m")?;
        config.num_hidden_layers = 1;
        let layout = ParamLayout::new(&config);
        let names = |scope: Scope| -> Vec<String> {
            scope
                .entries(&layout)
                // The module name: `q_proj` of `...q_proj.weight`.
                .map(|(_, e)| e.name.rsplit('.').nth(1).unwrap_or(&e.name).to_string())
                .collect()
        };
        assert_eq!(names(Scope::Qv), ["v_proj", "q_proj"]);
        assert_eq!(
            names(Scope::Attention),
            ["k_proj", "v_proj", "q_proj", "out_proj"]
        );
        assert_eq!(
            names(Scope::Linear),
            [
                "project_out",
                "project_in",
                "k_proj",
                "v_proj",
                "q_proj",
                "out_proj",
                "fc1",
                "fc2"
            ]
        );
        assert_eq!(Scope::All.size(&layout), layout.total());
        let spec = MaskSpec {
            ratio_of: RatioOf::Scope,
            ..MaskSpec::paper(0.5, 0)
        };
        assert_eq!(spec.keep_probability(&layout)?, 0.5);
        for bad in [0.0, -1.0, f64::NAN, 1.5] {
            let spec = MaskSpec {
                ratio: bad,
                ..spec.clone()
            };
            assert!(
                spec.keep_probability(&layout)
                    .unwrap_err()
                    .to_string()
                    .starts_with("--ratio")
            );
        }
        Ok(())
    }
}
