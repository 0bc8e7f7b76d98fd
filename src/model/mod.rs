//! The OPT model: configuration, checkpoint loading, tokenizer, and the network as a
//! sequence of explicit ops with exact first and second derivatives.

pub mod config;
pub mod layout;
pub mod ops;
pub mod presets;

pub use config::OptConfig;
pub use layout::{LayerTensor, ParamEntry, ParamLayout, ParamRole};
