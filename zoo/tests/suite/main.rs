//! The zoo integration tests, in one binary (one link instead of twelve:
//! each would instantiate the whole generic stack again). Tests that need
//! their own global allocator (`peak_memory`, `loader_props`) or the shared
//! sweep harness (`bad_inputs`) stay separate.

mod autoquant_cnn;
mod checkpoint_set;
mod cli;
mod cli_autoquant;
mod common;
mod quantize_cnn;
mod regularisation;
mod reproducibility;
mod save_load;
mod train_cnn;
mod train_sequence;
mod trainer_errors;
mod tune;
