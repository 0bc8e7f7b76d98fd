//! The masked Hessian H_p = (1/n) M X^T X M as a [`LinearOperator`], applied
//! without forming it, so the spectral toolkit (Lanczos, SLQ, trace estimators)
//! can probe the theory lab's problems exactly as it will probe a network's
//! Hessian restricted to a mask.
//!
//! The operator lives here rather than in `spectral`: the dependency runs from the
//! application to the toolkit (theory uses spectral's trait, as the model's
//! Hessian-vector products will), and `spectral` stays ignorant of what it probes.

use faer::MatRef;
use rayon::prelude::*;

use super::mask::{CoordinateMask, MaskKind};
use super::problem::MaskedRegression;
use super::spectrum::{eigenvalues_desc, masked_gram};
use crate::error::Result;
use crate::rng;
use crate::spectral::LinearOperator;

/// Kept columns per work unit of a product: partial results are summed in unit
/// order, so products are identical for every thread count.
const COLUMNS_PER_UNIT: usize = 256;

/// The mask `maskscape spectrum --theory` probes: drawn like the sweeps' masks but
/// from its own stream of `seed`, addressed by (n, d, ratio).
pub fn probe_mask(kind: MaskKind, ratio: f64, n: usize, d: usize, seed: u64) -> CoordinateMask {
    let mut stream = rng::stream(
        seed,
        rng::stream_id(&[PROBE_STREAM_TAG, n as u64, d as u64, ratio.to_bits()]),
    );
    CoordinateMask::draw(kind, ratio, d, &mut stream)
}

/// Keeps the probe's mask stream apart from the sweeps' streams.
const PROBE_STREAM_TAG: u64 = 0x5350_4543; // "SPEC"

/// `H_p = (1/n) M X^T X M` on `R^d` (masked coordinates map to zero). One product
/// costs `2 n k` multiply-adds for `k` kept coordinates, plus `O(d)`.
pub struct MaskedHessian<'a> {
    x: MatRef<'a, f64>,
    kept: &'a [usize],
}

impl<'a> MaskedHessian<'a> {
    /// The Hessian of `problem`'s loss.
    pub fn new(problem: &'a MaskedRegression<'a>) -> Self {
        MaskedHessian {
            x: problem.x(),
            kept: problem.kept(),
        }
    }

    /// The Hessian `(1/n) M X^T X M` of data `x` (n × d) and the sorted kept
    /// coordinates `kept`.
    pub fn from_parts(x: MatRef<'a, f64>, kept: &'a [usize]) -> Self {
        MaskedHessian { x, kept }
    }

    /// All `d` eigenvalues in descending order: those of the `n × n` Gram matrix
    /// `X M X^T` divided by `n`, then `d - n` zeros (`O(n² k + n³)`).
    pub fn eigenvalues(&self) -> Result<Vec<f64>> {
        let n = self.x.nrows();
        let gram = masked_gram(self.x, self.kept);
        let mut values: Vec<f64> = eigenvalues_desc(gram.as_ref())?
            .into_iter()
            .map(|v| v / n as f64)
            .collect();
        values.resize(self.x.ncols().max(values.len()), 0.0);
        Ok(values)
    }
}

impl LinearOperator for MaskedHessian<'_> {
    fn dim(&self) -> usize {
        self.x.ncols()
    }

    fn name(&self) -> String {
        format!(
            "masked Hessian (1/n) M X^T X M, n={} d={} kept={}",
            self.x.nrows(),
            self.x.ncols(),
            self.kept.len()
        )
    }

    fn apply(&self, v: &[f64], y: &mut [f64]) -> Result<()> {
        let (n, d) = (self.x.nrows(), self.x.ncols());
        crate::spectral::operator::check_apply("masked Hessian", d, v, y)?;
        // u = X M v = Σ_{j∈S} v_j z_j, summed per unit of columns, units in order.
        let partials: Vec<Vec<f64>> = self
            .kept
            .par_chunks(COLUMNS_PER_UNIT)
            .map(|unit| {
                let mut u = vec![0.0; n];
                for &j in unit {
                    let vj = v[j];
                    if vj != 0.0 {
                        for (ui, xij) in u.iter_mut().zip(self.x.col(j).iter()) {
                            *ui += xij * vj;
                        }
                    }
                }
                u
            })
            .collect();
        let mut u = vec![0.0; n];
        for part in partials {
            for (a, b) in u.iter_mut().zip(part) {
                *a += b;
            }
        }
        // y = (1/n) M X^T u.
        let scale = 1.0 / n as f64;
        y.fill(0.0);
        let values: Vec<f64> = self
            .kept
            .par_iter()
            .map(|&j| {
                scale
                    * self
                        .x
                        .col(j)
                        .iter()
                        .zip(&u)
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
            })
            .collect();
        for (&j, value) in self.kept.iter().zip(values) {
            y[j] = value;
        }
        Ok(())
    }

    /// `(1/n) m_j ‖z_j‖²`: `O(n k)`.
    fn diagonal(&self) -> Option<Vec<f64>> {
        let n = self.x.nrows() as f64;
        let mut d = vec![0.0; self.x.ncols()];
        for &j in self.kept {
            d[j] = self.x.col(j).iter().map(|a| a * a).sum::<f64>() / n;
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::spectral::{HostSpace, LanczosOptions, exact_trace, lanczos};
    use crate::testing::TestResult;
    use crate::theory::{Design, EntryLaw};

    #[test]
    fn lanczos_on_the_masked_hessian_matches_the_gram_spectrum() -> TestResult {
        let data = Design::generate(EntryLaw::Uniform, 30, 600, 1.0, 4);
        let mask = CoordinateMask::draw(MaskKind::Bernoulli, 0.2, 600, &mut rng::stream(4, 9));
        let problem = MaskedRegression::new(&data, mask, data.clean_targets().to_vec());
        let hessian = MaskedHessian::new(&problem);

        // The product against the dense definition on a few coordinates.
        let v: Vec<f64> = (0..600).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
        let mut y = vec![0.0; 600];
        hessian.apply(&v, &mut y)?;
        let x = data.x();
        let kept = problem.kept();
        for &j in kept.iter().take(5) {
            let expected: f64 = (0..30)
                .map(|i| x[(i, j)] * kept.iter().map(|&l| x[(i, l)] * v[l]).sum::<f64>())
                .sum::<f64>()
                / 30.0;
            assert!((y[j] - expected).abs() < 1e-10 * expected.abs().max(1.0));
        }
        assert!((0..600).filter(|j| !kept.contains(j)).all(|j| y[j] == 0.0));

        let exact = hessian.eigenvalues()?;
        let options = LanczosOptions {
            k: 4,
            tol: 1e-10,
            max_products: 200,
            ..LanczosOptions::default()
        };
        let result = lanczos(&hessian, &HostSpace::new(600), &options, &Silent)?;
        for (got, want) in result.eigenvalues.iter().zip(&exact) {
            assert!((got - want).abs() <= 1e-10 * want, "{got} vs {want}");
        }
        // Exact trace from the cheap diagonal equals the sum of the eigenvalues.
        let trace = exact_trace(&hessian).ok_or("the Hessian has no diagonal")?;
        assert!((trace - exact.iter().sum::<f64>()).abs() < 1e-9 * trace);
        Ok(())
    }
}
