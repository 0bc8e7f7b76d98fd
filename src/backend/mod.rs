//! Numerical backends the model is written against: `cpu` now, `cuda` later.

pub mod scalar;

pub use scalar::Scalar;
