//! # anneal-quant
//!
//! Quantisation for anneal (in progress).

#![warn(missing_docs)]

mod auto;
mod fake_quant;
mod flow;
pub mod kernels;
mod observer;
mod qmodules;
mod scheme;

pub use auto::{
    apply_config, auto_quantize, calibration_name, copy_state, layer_names, measure_throughput,
    plan_table, scheme_name, AutoQuantOptions, AutoQuantResult, BuildFn, Criterion, EvalFn,
    LayerSensitivity, Objective, Phase, Trial,
};
pub use fake_quant::fake_quantize_ste;
pub use flow::{
    convert, convert_qat, dequantize, float_model_bytes, prepare, prepare_qat, quantize_static,
    quantize_weights, Calibration, LayerReport, LayerScheme, Prepared, QatPrepared, QuantConfig,
    QuantReport,
};
pub use observer::*;
pub use qmodules::{ActivationQuant, BlockKernel, Int4Kernel, QConv2dKernel, QLinearKernel};
pub use scheme::*;
