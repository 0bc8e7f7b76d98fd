//! The linear-regression theory lab of Xu & Zhang (2024), section 5.
//!
//! Overparameterized least squares, L(w) = (1/(2n)) ||y - X M w||^2 with X in R^{n x d}
//! (d >> n) and a random coordinate mask M = diag(m), m_j ~ Bernoulli(p). Its Hessian is
//! (1/n) M X^T X M, whose nonzero eigenvalues are those of the n x n Gram matrix
//! X M X^T: every computation here is done at size n x n.
//!
//! - [`data`], [`mask`], [`problem`]: the data, the masks and one masked problem;
//! - [`spectrum`], [`concentration`]: masked spectra against p lambda_i(X^T X);
//! - [`stability`]: the measured divergence threshold of GD against 2n / lambda_1;
//! - [`solution`]: the minimum-norm solution GD converges to, and its distance;
//! - [`sweep`]: parallel, seeded sweeps (their statistics: [`crate::stats`]);
//! - [`tables`], [`figures`], [`output`]: what a sweep writes;
//! - [`hessian`]: H_p as an operator for the spectral toolkit.

pub mod concentration;
pub mod data;
pub mod figures;
pub mod hessian;
pub mod mask;
pub mod matrix_file;
pub mod output;
pub mod problem;
pub mod solution;
pub mod spectrum;
pub mod stability;
pub mod sweep;
pub mod tables;

pub use data::{Design, EntryLaw};
pub use mask::{CoordinateMask, MaskKind};
pub use problem::MaskedRegression;
pub use sweep::{Part, Ratios, SweepResult, SweepSpec, run_sweep};
