//! Eigenvalues, spectral densities and traces of symmetric linear operators.
//!
//! The algorithms see an operator only through [`OperatorOn`] (every host
//! [`LinearOperator`] is one) and do their own vector work through a
//! [`VectorSpace`] ([`HostSpace`], or the CUDA backend's device memory), so they know nothing of
//! models and never move vectors between devices on their own.
//!
//! - [`lanczos`]: extreme eigenpairs, full / partial (memory-bounded) / no
//!   reorthogonalization, thick restart, computed residuals, ghost detection.
//! - [`power`]: power iteration with deflation (what the paper used), for
//!   comparison of product counts.
//! - [`slq`]: stochastic Lanczos quadrature for the spectral density.
//! - [`trace`]: Hutchinson and Hutch++ estimates with standard errors, and exact
//!   traces when the diagonal is cheap.
//! - [`bounds`]: the Kaniel–Paige–Saad bound on the products Lanczos needs.
//! - [`report`]: the `maskscape spectrum` command's work (run, compare, write).
//! - [`verdict`]: what the numbers can be used for, in words every command shares.
//! - [`bench`], [`metered`]: the cost of the Lanczos modes outside the operator, in
//!   seconds and in vector passes.
//!
//! Every random draw comes from [`crate::rng`] streams; results are deterministic
//! for a given seed (the host kernels also for any thread count). Long runs report
//! through [`crate::progress::Progress`] and stop between two products when
//! cancelled.

pub mod bench;
pub mod bounds;
pub mod dense;
pub mod host;
pub mod lanczos;
pub mod metered;
pub mod operator;
pub mod power;
pub mod report;
pub mod slq;
pub(crate) mod small;
#[cfg(test)]
pub(crate) mod testing;
pub mod trace;
pub mod vector;
pub mod verdict;

pub use dense::DenseSymmetric;
pub use host::{HostBasis, HostSpace};
pub use lanczos::{LanczosOptions, LanczosResult, Reorthogonalization, Which, lanczos};
pub use operator::{
    Counting, Diagonal, DiagonalSimilarity, LinearOperator, OperatorOn, PrincipalSubOperator,
    ShiftScale,
};
pub use power::{PowerOptions, PowerResult, power_iteration};
pub use slq::{
    Broadening, DensityOptions, DensityScale, SlqOptions, SlqResult, SpectralDensity, slq,
};
pub use trace::{TraceEstimate, exact_trace, hutch_plus_plus, hutchinson};
pub use vector::{Distribution, Precision, VectorSpace};
pub use verdict::LanczosVerdict;
