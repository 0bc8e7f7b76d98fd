//! Coordinate masks M = diag(m): which of the d weights are trainable.

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// How a mask with keep ratio p is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// m_j iid Bernoulli(p): the paper's mask; the number kept is Binomial(d, p).
    Bernoulli,
    /// Exactly k = max(1, round(p d)) coordinates, uniformly without replacement.
    Exact,
}

impl MaskKind {
    /// The number of coordinates an exact-count mask keeps.
    fn exact_count(p: f64, dim: usize) -> usize {
        ((p * dim as f64).round() as usize).clamp(1, dim)
    }

    /// The expected fraction of kept coordinates, E[k]/d: p for Bernoulli masks,
    /// k/d for exact-count masks. Predictions such as p lambda_i(X^T X) and
    /// E[trace] = p ||X||_F^2 use this fraction.
    pub fn keep_fraction(self, p: f64, dim: usize) -> f64 {
        match self {
            MaskKind::Bernoulli => p,
            MaskKind::Exact => Self::exact_count(p, dim) as f64 / dim as f64,
        }
    }
}

/// A mask over `dim` coordinates, stored as the sorted indices it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinateMask {
    dim: usize,
    kept: Vec<usize>,
}

impl CoordinateMask {
    /// Draws a mask of kind `kind` with keep ratio `p` in (0, 1] over `dim` coordinates.
    pub fn draw(kind: MaskKind, p: f64, dim: usize, rng: &mut Rng) -> Self {
        let kept = match kind {
            MaskKind::Bernoulli => (0..dim).filter(|_| rng.random_bool(p)).collect(),
            MaskKind::Exact => {
                let mut kept =
                    rand::seq::index::sample(rng, dim, MaskKind::exact_count(p, dim)).into_vec();
                kept.sort_unstable();
                kept
            }
        };
        CoordinateMask { dim, kept }
    }

    /// The mask keeping exactly `kept` (sorted, deduplicated, each below `dim`).
    pub fn from_kept(dim: usize, mut kept: Vec<usize>) -> Self {
        kept.sort_unstable();
        kept.dedup();
        kept.retain(|&j| j < dim);
        CoordinateMask { dim, kept }
    }

    /// The total number of coordinates d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The kept (trainable) coordinates, sorted ascending.
    pub fn kept(&self) -> &[usize] {
        &self.kept
    }

    /// The number of kept coordinates k.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no coordinate is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    #[test]
    fn masks_keep_the_requested_fraction() {
        let mut stream = rng::stream(3, 0);
        let m = CoordinateMask::draw(MaskKind::Bernoulli, 0.3, 10_000, &mut stream);
        // Binomial(10000, 0.3): sd 46.
        assert!((m.len() as f64 - 3000.0).abs() < 5.0 * 46.0, "{}", m.len());
        assert!(m.kept().windows(2).all(|w| w[0] < w[1]));

        let e = CoordinateMask::draw(MaskKind::Exact, 0.3, 10_001, &mut stream);
        assert_eq!(e.len(), 3000);
        assert!(e.kept().windows(2).all(|w| w[0] < w[1]) && e.kept()[2999] < 10_001);
        assert_eq!(MaskKind::Exact.keep_fraction(1e-9, 10), 0.1);
        assert_eq!(MaskKind::Bernoulli.keep_fraction(0.25, 10), 0.25);

        let all = CoordinateMask::draw(MaskKind::Bernoulli, 1.0, 50, &mut stream);
        assert_eq!(all.len(), 50);
        assert_eq!(
            CoordinateMask::from_kept(5, vec![4, 1, 1, 9]).kept(),
            &[1, 4]
        );
    }
}
