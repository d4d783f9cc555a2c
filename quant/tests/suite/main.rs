//! The quant integration tests, in one binary (one link instead of
//! several: each would instantiate the generic stack again). Tests with
//! their own global allocator or the shared sweep harness stay separate.

mod auto;
mod kernels;
mod observers;
mod scheme;
