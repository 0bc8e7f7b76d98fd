//! Training paths on a landscape: a run's trained coordinates every `--save-every`
//! steps (`trajectory.safetensors`), projected onto the landscape's plane, and the
//! plane of the path itself (its two principal directions, as Li et al.'s
//! loss-landscape draws a trajectory).

use std::path::{Path, PathBuf};

use faer::{Mat, Side};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::mask::io::MASK_TENSOR;
use crate::report::tensors::TensorFile;

/// A run's saved path: its steps and trained coordinates.
#[derive(Clone, Debug)]
pub struct Trajectory {
    pub file: PathBuf,
    /// The trained coordinates' flat indices (`None`: every parameter).
    pub indices: Option<Vec<u64>>,
    pub steps: Vec<usize>,
    /// `theta[i]` at `steps[i]`, one value per trained coordinate.
    pub theta: Vec<Vec<f64>>,
    /// The checkpoint the run started from.
    pub model_sha256: Option<String>,
}

impl Trajectory {
    /// Reads `trajectory.safetensors` from a run folder (or the file itself).
    pub fn read(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("trajectory.safetensors")
        } else {
            path.to_path_buf()
        };
        if !file.is_file() {
            return Err(Error::arg(
                "--trajectory",
                format!(
                    "{} is not a trajectory (train with --save-every N to keep one)",
                    file.display()
                ),
            ));
        }
        let t = TensorFile::read(&file)?;
        let indices = if t.has(MASK_TENSOR) {
            Some(
                t.ints(MASK_TENSOR)?
                    .into_iter()
                    .map(|i| {
                        u64::try_from(i).map_err(|_| {
                            Error::file(&file, format!("{MASK_TENSOR}: index {i} is negative"))
                        })
                    })
                    .collect::<Result<Vec<u64>>>()?,
            )
        } else {
            None
        };
        let steps = t
            .ints("steps")?
            .into_iter()
            .map(|s| usize::try_from(s).map_err(|_| Error::file(&file, "a negative step")))
            .collect::<Result<Vec<usize>>>()?;
        let (shape, flat) = t.floats("theta")?;
        let [n, w] = shape[..] else {
            return Err(Error::file(
                &file,
                "`theta` must be 2-D (points x coordinates)",
            ));
        };
        if n != steps.len() || n == 0 {
            return Err(Error::file(
                &file,
                format!("{} steps for {n} points of `theta`", steps.len()),
            ));
        }
        if flat.iter().any(|x| !x.is_finite()) {
            return Err(Error::file(&file, "`theta` holds non-finite values"));
        }
        Ok(Trajectory {
            indices,
            steps,
            theta: flat.chunks(w).map(<[f64]>::to_vec).collect(),
            model_sha256: t.metadata("model_sha256"),
            file,
        })
    }
}

/// Two orthonormal directions of largest variance of a set of points, and the
/// share of the variance each explains.
#[derive(Clone, Debug, Serialize)]
pub struct PrincipalPlane {
    #[serde(skip)]
    pub directions: [Vec<f64>; 2],
    /// Variance along each direction over the total (mean-centered, as sklearn's
    /// PCA, which loss-landscape uses).
    pub explained: [f64; 2],
}

/// The top two principal directions of `points` (each a vector of the same
/// length), from the eigendecomposition of the small `n x n` Gram matrix of the
/// mean-centered points (n points, never a `k x k` matrix).
pub fn principal_plane(points: &[Vec<f64>]) -> Result<PrincipalPlane> {
    let n = points.len();
    if n < 3 {
        return Err(Error::arg(
            "--directions pca",
            format!("needs at least 3 points on the path, found {n}"),
        ));
    }
    let k = points[0].len();
    let mean: Vec<f64> = (0..k)
        .map(|j| points.iter().map(|p| p[j]).sum::<f64>() / n as f64)
        .collect();
    let centered: Vec<Vec<f64>> = points
        .iter()
        .map(|p| p.iter().zip(&mean).map(|(x, m)| x - m).collect())
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let gram = Mat::<f64>::from_fn(n, n, |i, j| dot(&centered[i], &centered[j]));
    let eigen = gram.self_adjoint_eigen(Side::Lower).map_err(|e| {
        Error::Numerical(format!(
            "eigendecomposition of the path's Gram matrix: {e:?}"
        ))
    })?;
    let (values, vectors) = (eigen.S(), eigen.U());
    let total: f64 = (0..n).map(|i| values[i].max(0.0)).sum();
    // ascending: the last two are the largest
    let direction = |col: usize| -> Result<(Vec<f64>, f64)> {
        let sigma2 = values[col];
        if sigma2.is_nan() || sigma2 <= 1e-12 * total {
            return Err(Error::Numerical(
                "the path spans fewer than two directions: no plane to draw it on".into(),
            ));
        }
        let mut d = vec![0.0; k];
        for (i, c) in centered.iter().enumerate() {
            let w = vectors[(i, col)];
            for (dj, cj) in d.iter_mut().zip(c) {
                *dj += w * cj;
            }
        }
        let norm = dot(&d, &d).sqrt();
        d.iter_mut().for_each(|x| *x /= norm);
        Ok((d, sigma2 / total))
    };
    let (d1, e1) = direction(n - 1)?;
    let (mut d2, e2) = direction(n - 2)?;
    // exact orthogonality against rounding (Gram-Schmidt once)
    let c = dot(&d1, &d2);
    d2.iter_mut().zip(&d1).for_each(|(x, a)| *x -= c * a);
    let norm = dot(&d2, &d2).sqrt();
    d2.iter_mut().for_each(|x| *x /= norm);
    Ok(PrincipalPlane {
        directions: [d1, d2],
        explained: [e1, e2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn principal_directions_are_orthonormal_and_explain_what_they_claim() -> TestResult {
        // points a_t u + b_t v + small noise in R^7, u and v orthonormal; b is
        // symmetric about the path's middle, so it is uncorrelated with the linear
        // a and the principal directions are u and v themselves (up to the noise)
        let u = [0.6, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0];
        let v = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let noise = |t: usize, j: usize| 1e-3 * (((t * 7 + j * 13) % 11) as f64 - 5.0);
        let points: Vec<Vec<f64>> = (0..12)
            .map(|t| {
                let (a, b) = (3.0 * t as f64, ((t as f64 - 5.5) * 0.5).cos());
                (0..7).map(|j| a * u[j] + b * v[j] + noise(t, j)).collect()
            })
            .collect();
        let plane = principal_plane(&points)?;
        let [d1, d2] = &plane.directions;
        assert!((dot(d1, d1) - 1.0).abs() < 1e-12 && (dot(d2, d2) - 1.0).abs() < 1e-12);
        assert!(dot(d1, d2).abs() < 1e-12);
        // d1 is u (up to sign), d2 close to v
        assert!((dot(d1, &u).abs() - 1.0).abs() < 1e-5, "{d1:?}");
        assert!((dot(d2, &v).abs() - 1.0).abs() < 1e-3, "{d2:?}");
        // the claimed shares are the variance of the projections over the total
        let n = points.len() as f64;
        let mean: Vec<f64> = (0..7)
            .map(|j| points.iter().map(|p| p[j]).sum::<f64>() / n)
            .collect();
        let centered: Vec<Vec<f64>> = points
            .iter()
            .map(|p| p.iter().zip(&mean).map(|(x, m)| x - m).collect())
            .collect();
        let total: f64 = centered.iter().map(|c| dot(c, c)).sum();
        for (d, claimed) in [(d1, plane.explained[0]), (d2, plane.explained[1])] {
            let along: f64 = centered.iter().map(|c| dot(c, d).powi(2)).sum();
            assert!((along / total - claimed).abs() < 1e-12, "{claimed}");
        }
        assert!(plane.explained[0] > 0.99);
        Ok(())
    }

    #[test]
    fn a_straight_path_has_no_plane() {
        let points: Vec<Vec<f64>> = (0..5).map(|t| vec![t as f64, 2.0 * t as f64]).collect();
        assert!(principal_plane(&points).is_err());
        assert!(principal_plane(&points[..2]).is_err());
    }
}
