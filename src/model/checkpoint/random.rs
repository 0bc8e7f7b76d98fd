//! Random weights with the law of the reference fixtures, identical on every
//! machine: tensor `i` of the layout is drawn, in row-major order, from
//! `rng::stream(seed, i)`.

use rand_distr::{Distribution, StandardNormal};

use crate::model::layout::{LayerTensor, ParamEntry, ParamRole};
use crate::rng;

/// The law of one tensor's initial values.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Law {
    /// Matrices and embeddings: N(0, 1 / last dimension).
    Matrix { std: f64 },
    /// LayerNorm weights: 1 + 0.1 N(0, 1).
    LayerNormWeight,
    /// Biases (LayerNorm biases included): 0.1 N(0, 1).
    Bias,
}

fn law(entry: &ParamEntry) -> Law {
    use LayerTensor::*;
    match entry.role {
        ParamRole::FinalLayerNormWeight
        | ParamRole::Layer {
            tensor: AttnLayerNormWeight | FinalLayerNormWeight,
            ..
        } => Law::LayerNormWeight,
        _ if entry.shape.len() == 1 => Law::Bias,
        _ => Law::Matrix {
            std: 1.0 / (entry.columns() as f64).sqrt(),
        },
    }
}

/// The initial values of layout tensor number `index`, in row-major order.
pub struct RandomTensor {
    rng: rng::Rng,
    law: Law,
    remaining: usize,
}

impl RandomTensor {
    pub fn new(entry: &ParamEntry, index: usize, seed: u64) -> Self {
        RandomTensor {
            rng: rng::stream(seed, index as u64),
            law: law(entry),
            remaining: entry.len(),
        }
    }
}

impl Iterator for RandomTensor {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        self.remaining = self.remaining.checked_sub(1)?;
        let z: f64 = StandardNormal.sample(&mut self.rng);
        Some(match self.law {
            Law::Matrix { std } => std * z,
            Law::LayerNormWeight => 1.0 + 0.1 * z,
            Law::Bias => 0.1 * z,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for RandomTensor {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ParamLayout, presets::preset};
    use crate::testing::TestResult;

    #[test]
    fn laws_follow_the_fixtures() -> TestResult {
        let layout = ParamLayout::new(&preset("opt-mini").ok_or("no preset opt-mini")?);
        let find = |name: &str| {
            layout
                .entries()
                .iter()
                .position(|e| e.name.ends_with(name))
                .ok_or_else(|| format!("no tensor *{name}"))
        };
        let stats = |index: usize| {
            let entry = &layout.entries()[index];
            let values: Vec<f64> = RandomTensor::new(entry, index, 3).collect();
            assert_eq!(values.len(), entry.len());
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt(), n)
        };
        // fc2 is [256, 1024]: std 1/32. Standard errors: std / sqrt(n).
        let (mean, std, n) = stats(find("layers.0.fc2.weight")?);
        assert!(
            mean.abs() < 4.0 / 32.0 / n.sqrt() && (std * 32.0 - 1.0).abs() < 0.01,
            "{mean} {std}"
        );
        let (mean, std, _) = stats(find("layers.1.self_attn_layer_norm.weight")?);
        assert!(
            (mean - 1.0).abs() < 0.03 && (std - 0.1).abs() < 0.015,
            "{mean} {std}"
        );
        let (mean, std, _) = stats(find("layers.1.fc1.bias")?);
        assert!(
            mean.abs() < 0.015 && (std - 0.1).abs() < 0.01,
            "{mean} {std}"
        );
        // Streams differ per tensor and per seed, and repeat exactly.
        let entry = &layout.entries()[5];
        let a: Vec<f64> = RandomTensor::new(entry, 5, 3).take(4).collect();
        assert_eq!(
            a,
            RandomTensor::new(entry, 5, 3).take(4).collect::<Vec<_>>()
        );
        assert_ne!(
            a,
            RandomTensor::new(entry, 6, 3).take(4).collect::<Vec<_>>()
        );
        assert_ne!(
            a,
            RandomTensor::new(entry, 5, 4).take(4).collect::<Vec<_>>()
        );
        Ok(())
    }
}
