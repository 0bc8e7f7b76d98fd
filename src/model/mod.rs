//! The OPT model: configuration, checkpoint loading, tokenizer, and the network as a
//! sequence of explicit ops with exact first and second derivatives.

pub mod checkpoint;
pub mod config;
pub mod layout;
pub mod presets;
pub mod tokenizer;

pub use checkpoint::{Checkpoint, StoredDtype};
pub use config::OptConfig;
pub use layout::{LayerTensor, ParamEntry, ParamLayout, ParamRole};
pub use tokenizer::OptTokenizer;
