//! The OPT model: configuration, checkpoint loading, tokenizer, and the network as a
//! sequence of explicit ops with exact first and second derivatives.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod examples;
pub mod layout;
pub mod memory;
pub mod objective;
pub mod ops;
pub mod opt;
pub mod pass;
pub mod presets;
pub mod tokenizer;

pub use batch::{Batch, Candidate, Question, Targets, TokenBatch};
pub use checkpoint::{Checkpoint, StoredDtype};
pub use config::OptConfig;
pub use layout::{LayerTensor, ParamEntry, ParamLayout, ParamRole};
pub use memory::{Footprint, Memory, Operation, PassShape};
pub use objective::{HvpResult, Objective};
pub use opt::Opt;
pub use pass::{MaskPlan, PassScalars};
pub use tokenizer::OptTokenizer;
