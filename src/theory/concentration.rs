//! Eigenvalue concentration: how far the masked spectrum lambda_i(X M X^T) strays from
//! p lambda_i(X^T X), against a bound that provably holds.
//!
//! X M X^T - p X X^T = sum_j (m_j - p) z_j z_j^T is a sum of independent, mean-zero
//! symmetric matrices with (m_j - p)^2 (z_j z_j^T)^2 <= n r^2 z_j z_j^T when |x_ij| <= r.
//! Matrix Hoeffding gives ||X M X^T - p X X^T|| <= sqrt(8 n r^2 lambda_1(X^T X) log(2n/delta))
//! with probability at least 1 - delta, and Weyl's inequality carries the bound to
//! every eigenvalue.

/// The bound sqrt(8 n r^2 lambda_1(X^T X) log(2n / delta)) on
/// max_i |lambda_i(X M X^T) - p lambda_i(X^T X)|, holding with probability 1 - delta.
pub fn concentration_bound(n: usize, entry_bound: f64, full_lambda1: f64, delta: f64) -> f64 {
    let n = n as f64;
    (8.0 * n * entry_bound * entry_bound * full_lambda1 * (2.0 * n / delta).ln()).sqrt()
}

/// max_i |masked_i - keep_fraction * full_i| over two spectra sorted the same way.
pub fn concentration_error(masked: &[f64], full: &[f64], keep_fraction: f64) -> f64 {
    masked
        .iter()
        .zip(full)
        .map(|(m, f)| (m - keep_fraction * f).abs())
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_and_error_by_hand() {
        // The reference setting: n = 50, r = 1, lambda_1 = 62888, delta = 0.05.
        let bound = concentration_bound(50, 1.0, 62888.0, 0.05);
        let by_hand = (8.0 * 50.0 * 62888.0 * 2000f64.ln()).sqrt();
        assert!((bound - by_hand).abs() < 1e-9 * by_hand);
        assert!((bound - 13_827.6).abs() < 0.1, "{bound}");
        assert_eq!(concentration_error(&[5.0, 2.0], &[10.0, 2.0], 0.5), 1.0);
    }
}
