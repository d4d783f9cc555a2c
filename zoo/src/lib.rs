//! # anneal-zoo
//!
//! Reference models (the source material's CNN, a small modern CNN, LSTM/GRU
//! and Transformer classifiers, a tiny decoder-only language model), the
//! data they train on (the bundled UCI digits with their checksum, a
//! stratified split, IDX and CSV readers, synthetic sequence tasks), the
//! training loop and the `anneal` command line.

#![warn(missing_docs)]

pub mod autoquant;
pub mod bench;
pub mod data;
mod error;
pub mod models;
pub mod plot;
pub mod registry;
pub mod trainer;
pub mod tune;

pub use error::{Error, Result};
