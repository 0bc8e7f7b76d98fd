//! Drawing the kept units of one tensor, in O(kept) time and memory.

use std::collections::HashSet;

use rand::Rng as _;

use super::spec::Sampling;
use crate::rng::Rng;

/// The sorted positions in `0..n` of the units kept with probability `q` each.
///
/// Bernoulli sampling draws the geometric gaps between kept positions (the number
/// of failures before a success is floor(ln U / ln(1 - q)) for U uniform in (0, 1]),
/// one draw per kept unit instead of one coin per unit: 1e8 weights at q = 1e-5
/// cost a thousand draws. Exact sampling picks round(q n) distinct positions with
/// Floyd's algorithm (O(k) draws and memory) and sorts them.
pub fn kept_units(rng: &mut Rng, n: u64, q: f64, sampling: Sampling) -> Vec<u64> {
    match sampling {
        Sampling::Bernoulli => bernoulli(rng, n, q),
        Sampling::Exact => exact(rng, n, (q * n as f64).round() as u64),
    }
}

fn bernoulli(rng: &mut Rng, n: u64, q: f64) -> Vec<u64> {
    if q >= 1.0 {
        return (0..n).collect();
    }
    // ln(1 - q), accurate for tiny q.
    let log_miss = (-q).ln_1p();
    let expected = q * n as f64;
    // Room for the mean plus five standard deviations: one allocation in practice.
    let mut kept =
        Vec::with_capacity((expected + 5.0 * expected.sqrt() + 1.0).min(n as f64) as usize);
    let mut next = 0u64;
    loop {
        let u = 1.0 - rng.random::<f64>(); // in (0, 1]
        // `as` saturates: a gap beyond u64 simply ends the tensor.
        let gap = (u.ln() / log_miss).floor() as u64;
        match next.checked_add(gap) {
            Some(position) if position < n => {
                kept.push(position);
                next = position + 1;
            }
            _ => return kept,
        }
    }
}

fn exact(rng: &mut Rng, n: u64, k: u64) -> Vec<u64> {
    let k = k.min(n);
    let mut chosen = HashSet::with_capacity(k as usize);
    // Floyd: for j = n-k .. n-1, take a uniform t in 0..=j, or j itself if t is taken.
    for j in n - k..n {
        let t = rng.random_range(0..=j);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    let mut kept: Vec<u64> = chosen.into_iter().collect();
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use crate::testing::TestResult;

    #[test]
    fn bernoulli_gaps_give_the_right_rate_and_uniform_positions() -> TestResult {
        let n = 2_000_000u64;
        let q = 1e-3;
        let kept = kept_units(&mut rng::stream(1, 0), n, q, Sampling::Bernoulli);
        let mean = q * n as f64;
        let sd = (n as f64 * q * (1.0 - q)).sqrt();
        assert!(
            (kept.len() as f64 - mean).abs() < 5.0 * sd,
            "{} vs {mean}",
            kept.len()
        );
        assert!(kept.windows(2).all(|w| w[0] < w[1]) && *kept.last().ok_or("nothing kept")? < n);
        // Positions are uniform: each tenth of the range holds about a tenth.
        for decile in 0..10u64 {
            let count = kept.iter().filter(|&&i| i * 10 / n == decile).count() as f64;
            assert!(
                (count - mean / 10.0).abs() < 5.0 * (mean / 10.0).sqrt(),
                "decile {decile}: {count}"
            );
        }
        // Mean gap (1 - q) / q, as for coins.
        let gaps: Vec<f64> = kept.windows(2).map(|w| (w[1] - w[0] - 1) as f64).collect();
        let mean_gap = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let expected_gap = (1.0 - q) / q;
        let sd_mean = expected_gap / (gaps.len() as f64).sqrt();
        assert!(
            (mean_gap - expected_gap).abs() < 5.0 * sd_mean,
            "{mean_gap}"
        );
        Ok(())
    }

    #[test]
    fn tiny_rates_on_huge_tensors_cost_only_the_kept_units() {
        // 1e12 units at q = 1e-9: about a thousand kept, never a coin per unit.
        let kept = kept_units(
            &mut rng::stream(2, 0),
            1_000_000_000_000,
            1e-9,
            Sampling::Bernoulli,
        );
        assert!(
            (kept.len() as f64 - 1000.0).abs() < 5.0 * 1000f64.sqrt(),
            "{}",
            kept.len()
        );
        assert_eq!(
            kept_units(&mut rng::stream(2, 0), 5, 1.0, Sampling::Bernoulli),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn exact_sampling_keeps_the_rounded_count_uniformly() -> TestResult {
        let n = 1000u64;
        let mut hits = vec![0u32; n as usize];
        for stream in 0..400 {
            let kept = kept_units(&mut rng::stream(3, stream), n, 0.1234, Sampling::Exact);
            assert_eq!(kept.len(), 123);
            assert!(kept.windows(2).all(|w| w[0] < w[1]));
            for i in kept {
                hits[i as usize] += 1;
            }
        }
        // Each position is kept 400 x 0.123 = 49.2 times on average.
        let min = hits.iter().min().ok_or("no positions")?;
        let max = hits.iter().max().ok_or("no positions")?;
        assert!(*min > 20 && *max < 85, "{min} {max}");
        assert_eq!(
            kept_units(&mut rng::stream(3, 0), 7, 1.0, Sampling::Exact),
            (0..7).collect::<Vec<_>>()
        );
        Ok(())
    }
}
