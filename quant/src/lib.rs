//! # anneal-quant
//!
//! Quantisation for anneal (in progress).

#![warn(missing_docs)]

mod fake_quant;
mod flow;
pub mod kernels;
mod observer;
mod qmodules;
mod scheme;

pub use fake_quant::fake_quantize_ste;
pub use flow::{
    convert, convert_qat, dequantize, float_model_bytes, prepare, prepare_qat, quantize_static,
    quantize_weights, Calibration, LayerReport, LayerScheme, Prepared, QatPrepared, QuantConfig,
    QuantReport,
};
pub use observer::*;
pub use qmodules::{ActivationQuant, BlockKernel, Int4Kernel, QConv2dKernel, QLinearKernel};
pub use scheme::*;
