//! Sums and dot products of rows, in `LANES` interleaved partial sums.
//!
//! A plain running sum is one chain of dependent additions: a row of 256 costs
//! 256 adder latencies, and the compiler may not reorder it. Independent partial
//! sums (combined in a fixed order, so results stay deterministic) let it keep
//! several vector registers busy instead.

use super::CpuScalar;

/// Partial sums per reduction: four AVX-512 registers of f32.
const LANES: usize = 64;

/// `sum_i f(a_i, b_i)` over two rows of equal length.
#[inline(always)]
fn reduce2<T: CpuScalar>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    assert_eq!(a.len(), b.len(), "reduce: lengths differ");
    let mut acc = [T::ZERO; LANES];
    let (blocks_a, blocks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (tail_a, tail_b) = (blocks_a.remainder(), blocks_b.remainder());
    for (xa, xb) in blocks_a.zip(blocks_b) {
        for i in 0..LANES {
            acc[i] += f(xa[i], xb[i]);
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    tail_a
        .iter()
        .zip(tail_b)
        .fold(acc[0], |s, (&x, &y)| s + f(x, y))
}

/// `sum_i a_i b_i`.
pub fn dot<T: CpuScalar>(a: &[T], b: &[T]) -> T {
    reduce2(a, b, |x, y| x * y)
}

/// `sum_i a_i`.
pub fn sum<T: CpuScalar>(a: &[T]) -> T {
    reduce2(a, a, |x, _| x)
}

/// `sum_i (a_i - c)^2`.
pub fn squared_deviation<T: CpuScalar>(a: &[T], c: T) -> T {
    reduce2(a, a, |x, _| (x - c) * (x - c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_exact_sums_at_every_length() {
        for n in [0, 1, 63, 64, 65, 200, 256, 1000] {
            // integers: every partial sum is exact, whatever the order
            let a: Vec<f64> = (0..n).map(|i| (i % 7) as f64 - 3.0).collect();
            let b: Vec<f64> = (0..n).map(|i| (i % 5) as f64).collect();
            let want_dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let want_sum: f64 = a.iter().sum();
            let want_sq: f64 = a.iter().map(|x| (x - 2.0) * (x - 2.0)).sum();
            assert_eq!(dot(&a, &b), want_dot, "dot, n = {n}");
            assert_eq!(sum(&a), want_sum, "sum, n = {n}");
            assert_eq!(squared_deviation(&a, 2.0), want_sq, "deviation, n = {n}");
        }
    }
}
