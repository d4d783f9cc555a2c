//! # anneal-zoo
//!
//! Reference models, data and (soon) the training loop and the `anneal` CLI.
//! This crate is in progress: today it holds the data layer — the bundled
//! UCI digits with their checksum, a stratified split, IDX and CSV readers
//! and synthetic sequence tasks.

#![warn(missing_docs)]

pub mod data;
mod error;
pub mod models;
pub mod trainer;

pub use error::{Error, Result};
