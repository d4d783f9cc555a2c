//! Reference models: each a config struct with defaults plus a builder, with
//! PyTorch-style state-dict names.

mod cnn;
mod sequence;

pub use cnn::{SmallCnn, SmallCnnConfig, SourceCnn, SourceCnnConfig};
pub use sequence::{
    RecurrentKind, SequenceClassifier, SequenceClassifierConfig, TinyLm, TinyLmConfig,
    TransformerClassifier, TransformerClassifierConfig,
};
