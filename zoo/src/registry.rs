//! Reference models by name, as the CLI and the tests build them.

use anneal_layers::Module;

use crate::models::{
    RecurrentKind, SequenceClassifierConfig, SmallCnnConfig, SourceCnnConfig,
    TransformerClassifierConfig,
};
use crate::{Error, Result};

/// The models `anneal train --model …` accepts.
pub const MODEL_NAMES: &[&str] = &["small-cnn", "source-cnn", "lstm", "gru", "transformer"];

/// Builds a digits classifier (8×8 inputs, 10 classes) by name, with the
/// given dropout (where the model has one) and seed.
///
/// Errors on an unknown name or a dropout outside `[0, 1]` (also for the
/// models without dropout, which otherwise ignore it).
pub fn build_model(name: &str, dropout: Option<f64>, seed: u64) -> Result<Box<dyn Module<f32>>> {
    if let Some(p) = dropout.filter(|p| !(0.0..=1.0).contains(p)) {
        return Err(Error::Invalid(format!("dropout {p} is outside [0, 1]")));
    }
    Ok(match name {
        "small-cnn" => {
            let mut c = SmallCnnConfig {
                seed,
                ..Default::default()
            };
            if let Some(p) = dropout {
                c.dropout = p;
            }
            Box::new(c.init::<f32>()?)
        }
        "source-cnn" => {
            let mut c = SourceCnnConfig {
                seed,
                ..Default::default()
            };
            if let Some(p) = dropout {
                c.dropout = p;
            }
            Box::new(c.init::<f32>()?)
        }
        "lstm" | "gru" => {
            let kind = if name == "lstm" {
                RecurrentKind::Lstm
            } else {
                RecurrentKind::Gru
            };
            Box::new(
                SequenceClassifierConfig {
                    kind,
                    seed,
                    ..Default::default()
                }
                .init::<f32>()?,
            )
        }
        "transformer" => {
            let mut c = TransformerClassifierConfig {
                seed,
                ..Default::default()
            };
            if let Some(p) = dropout {
                c.dropout = p;
            }
            Box::new(c.init::<f32>()?)
        }
        other => {
            return Err(Error::Invalid(format!(
                "unknown model {other:?}; choose one of {}",
                MODEL_NAMES.join(", ")
            )))
        }
    })
}

/// The default learning rate and epochs of each model with Adam.
pub fn defaults_for(name: &str) -> (f64, usize) {
    match name {
        "small-cnn" => (3e-3, 12),
        "source-cnn" => (1e-3, 6),
        "lstm" | "gru" => (5e-3, 25),
        "transformer" => (2e-3, 30),
        _ => (1e-3, 10),
    }
}
