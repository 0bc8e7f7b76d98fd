//! Reporting: tables (polars), figures (plotters: charts, and maps of 2-D fields), run
//! manifests, and atomic output.

pub mod atomic;
pub mod manifest;
pub mod map;
pub mod plot;
pub mod table;
pub mod tensors;

pub use manifest::Manifest;
pub use plot::{Axis, Chart, ErrorPoint, LegendPosition, Scale, SeriesData};
pub use table::{Column, Table};
