//! Reporting: tables (polars), figures (plotters), run manifests, and atomic output.

pub mod atomic;
pub mod manifest;
pub mod plot;
pub mod table;
pub mod tensors;

pub use manifest::Manifest;
pub use plot::{Axis, Chart, ErrorPoint, LegendPosition, Scale, SeriesData};
pub use table::{Column, Table};
