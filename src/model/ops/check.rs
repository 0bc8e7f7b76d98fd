//! Test harness: an op's four rules against central differences in f64.
//!
//! An op under test is wrapped as a map of one flat vector (its inputs and
//! parameters concatenated) to one flat vector (its outputs). Then, at a random
//! point `x` with random directions:
//! - JVP: `jvp(x, x')` against `(f(x + h x') - f(x - h x')) / 2h`;
//! - VJP: the dot-product identity `<yb, J x'> = <J^T yb, x'>` (with the JVP checked);
//! - JVP of the VJP: against `(backward(x + h x', yb + h yb') - backward(x - h x', yb - h yb')) / 2h`.

use rand::Rng as _;
use rand_distr::StandardNormal;

/// An op as a map between flat f64 vectors, with its four rules.
pub(crate) trait Rules {
    /// Length of the flat input.
    fn input_len(&self) -> usize;
    /// A point to check at (standard normal unless the op needs otherwise).
    fn point(&self, seed: u64) -> Vec<f64> {
        normal(self.input_len(), seed)
    }
    fn forward(&self, x: &[f64]) -> Vec<f64>;
    fn jvp(&self, x: &[f64], x_dot: &[f64]) -> Vec<f64>;
    fn backward(&self, x: &[f64], y_bar: &[f64]) -> Vec<f64>;
    fn backward_jvp(&self, x: &[f64], x_dot: &[f64], y_bar: &[f64], y_bar_dot: &[f64]) -> Vec<f64>;
}

pub(crate) fn normal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = crate::rng::stream(seed, 0);
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(x: &[f64], h: f64, d: &[f64]) -> Vec<f64> {
    x.iter().zip(d).map(|(x, d)| x + h * d).collect()
}

/// `||a - b|| / ||b||`.
pub(crate) fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Checks all four rules of `op` at a random point; panics with the failing rule.
pub(crate) fn check_rules(name: &str, op: &impl Rules, seed: u64) {
    let h = 1e-5;
    let x = op.point(seed);
    let x_dot = normal(x.len(), seed + 1);
    let y = op.forward(&x);
    let y_bar = normal(y.len(), seed + 2);
    let y_bar_dot = normal(y.len(), seed + 3);

    let jvp = op.jvp(&x, &x_dot);
    let fd: Vec<f64> = op
        .forward(&axpy(&x, h, &x_dot))
        .iter()
        .zip(op.forward(&axpy(&x, -h, &x_dot)))
        .map(|(p, m)| (p - m) / (2.0 * h))
        .collect();
    let e = rel_err(&jvp, &fd);
    assert!(
        e < 1e-7,
        "{name}: JVP vs central differences, relative error {e:.2e}"
    );

    let backward = op.backward(&x, &y_bar);
    let (lhs, rhs) = (dot(&y_bar, &jvp), dot(&backward, &x_dot));
    let e = (lhs - rhs).abs() / lhs.abs().max(rhs.abs());
    assert!(
        e < 1e-12,
        "{name}: <yb, J x'> = {lhs} but <J^T yb, x'> = {rhs} ({e:.2e})"
    );

    let backward_jvp = op.backward_jvp(&x, &x_dot, &y_bar, &y_bar_dot);
    let fd: Vec<f64> = op
        .backward(&axpy(&x, h, &x_dot), &axpy(&y_bar, h, &y_bar_dot))
        .iter()
        .zip(op.backward(&axpy(&x, -h, &x_dot), &axpy(&y_bar, -h, &y_bar_dot)))
        .map(|(p, m)| (p - m) / (2.0 * h))
        .collect();
    let e = rel_err(&backward_jvp, &fd);
    assert!(
        e < 1e-7,
        "{name}: JVP of the VJP vs central differences, relative error {e:.2e}"
    );
}
