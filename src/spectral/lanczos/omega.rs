//! Simon's ω recurrence: an estimate of the loss of orthogonality of the Lanczos
//! vectors that costs `O(m²)` scalar work per step and no vector pass.
//!
//! H. D. Simon, "The Lanczos algorithm with partial reorthogonalization", Math.
//! Comp. 42 (1984). With `ω_{jk} ≈ v_j · v_k`, taking the inner product of the
//! computed recurrence `β_j v_{j+1} = A v_j - Σ_i H_ij v_i + f_j` with `v_k` and
//! using the symmetry of `A` gives
//!
//! `β_j ω_{j+1,k} = Σ_i H_ik ω_ij - Σ_i H_ij ω_ik + (rounding)`,
//!
//! where `H` is the projected matrix. Written with the full projected matrix rather
//! than its three diagonals, the same recurrence covers the arrowhead matrices of a
//! thick restart (Wu & Simon 2000). The rounding term is modelled pessimistically
//! as `ε √n ‖A‖`, added with the sign of the computed value (so estimates only err
//! towards reorthogonalizing too early). Semi-orthogonality, `|ω| ≤ √ε`, is enough
//! for the projected matrix to be the exact projection of `A` onto an orthonormal
//! basis up to `O(ε ‖A‖)` (Simon 1984, Thm. 4), so Ritz values lose no accuracy.

/// The estimated inner products of the active Lanczos basis (slots `0..=len`).
pub(super) struct Omega {
    /// Column-major `cap × cap`, symmetric, unit diagonal.
    w: Vec<f64>,
    cap: usize,
    /// The relative size of one step's rounding error in an inner product.
    unit: f64,
}

impl Omega {
    /// Estimates for a basis of up to `cap` vectors whose inner products carry a
    /// rounding error of `unit` per step (`ε √n` for f64 vectors of dimension `n`;
    /// `ε₃₂` when the basis is stored in f32, whose rounding perturbs an inner
    /// product by up to that much whatever `n`).
    pub fn new(cap: usize, unit: f64) -> Self {
        let mut w = vec![0.0; cap * cap];
        for i in 0..cap {
            w[i + i * cap] = 1.0;
        }
        Omega { w, cap, unit }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.w[i + j * self.cap]
    }

    fn set(&mut self, i: usize, j: usize, value: f64) {
        self.w[i + j * self.cap] = value;
        self.w[j + i * self.cap] = value;
    }

    /// Predicts `ω_{j+1,k}` for every `k ≤ j` after slot `j` was expanded with
    /// projected matrix `h` (leading dimension `ld`), new norm `beta` and operator
    /// norm estimate `norm`; returns the largest `|ω_{j+1,k}|`.
    pub fn advance(&mut self, h: &[f64], ld: usize, j: usize, beta: f64, norm: f64) -> f64 {
        let noise = self.unit * norm;
        let mut largest: f64 = 0.0;
        let mut next = vec![0.0; j + 1];
        for (k, slot) in next.iter_mut().enumerate().take(j) {
            let mut num = 0.0;
            for i in 0..=j {
                num += h[i + k * ld] * self.at(i, j) - h[i + j * ld] * self.at(i, k);
            }
            let value = (num + noise.copysign(num)) / beta;
            largest = largest.max(value.abs());
            *slot = value;
        }
        next[j] = noise / beta;
        largest = largest.max(next[j]);
        for (k, value) in next.into_iter().enumerate() {
            self.set(j + 1, k, value);
        }
        largest
    }

    /// Records that slot `j` was just orthogonalized against every earlier slot.
    pub fn reset(&mut self, j: usize) {
        for k in 0..j {
            self.set(j, k, self.unit);
        }
    }

    /// Records that slot `j` was just orthogonalized against `slots`.
    pub fn reset_slots(&mut self, j: usize, slots: &[usize]) {
        for &k in slots {
            self.set(j, k, self.unit);
        }
    }

    /// `max_{k<j} |ω_{jk}|`.
    pub fn largest_in_row(&self, j: usize) -> f64 {
        (0..j).map(|k| self.at(j, k).abs()).fold(0.0, f64::max)
    }

    /// The slots `k < j` with `|ω_{jk}| > eta`: those a partial reorthogonalization
    /// of slot `j` must include (Simon's η = ε^{3/4} selection).
    pub fn above(&self, j: usize, eta: f64) -> Vec<usize> {
        (0..j).filter(|&k| self.at(j, k).abs() > eta).collect()
    }

    /// Carries the estimates through a thick restart: the kept vectors are
    /// `V S` (`S` column-major `rows × cols`), the continuation vector moves from
    /// slot `rows` to slot `cols`; `floor` is the rounding of the rotation itself.
    pub fn rotate(&mut self, s: &[f64], rows: usize, cols: usize, floor: f64) {
        let mut rotated = vec![0.0; self.cap * self.cap];
        let mut ws = vec![0.0; rows * cols];
        for b in 0..cols {
            for i in 0..rows {
                ws[i + b * rows] = (0..rows).map(|r| self.at(i, r) * s[r + b * rows]).sum();
            }
        }
        for b in 0..cols {
            for a in 0..cols {
                let value: f64 = if a == b {
                    1.0
                } else {
                    let v: f64 = (0..rows).map(|i| s[i + a * rows] * ws[i + b * rows]).sum();
                    v + floor.copysign(v)
                };
                rotated[a + b * self.cap] = value;
            }
            let to_continuation: f64 = (0..rows).map(|r| self.at(rows, r) * s[r + b * rows]).sum();
            let value = to_continuation + floor.copysign(to_continuation);
            rotated[b + cols * self.cap] = value;
            rotated[cols + b * self.cap] = value;
        }
        for i in cols + 1..self.cap {
            rotated[i + i * self.cap] = 1.0;
        }
        rotated[cols + cols * self.cap] = 1.0;
        self.w = rotated;
    }
}
