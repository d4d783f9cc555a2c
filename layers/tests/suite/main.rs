//! The layers integration tests, in one binary (one link instead of
//! several: each would instantiate the generic stack again). Tests with
//! their own global allocator or the shared sweep harness stay separate.

mod atomic_save;
mod attention;
mod cnn_lstm;
#[path = "../common/mod.rs"]
mod common;
mod gradcheck_layers;
mod numerical_safety;
mod pytorch_reference;
mod rnn;
mod state_dict;
