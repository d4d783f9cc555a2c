//! Reference models: each a config struct with defaults plus a builder, with
//! PyTorch-style state-dict names.

mod cnn;

pub use cnn::{SmallCnn, SmallCnnConfig, SourceCnn, SourceCnnConfig};
