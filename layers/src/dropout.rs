//! Dropout (Srivastava et al. 2014), inverted: active only in training.

use anneal_autograd::Var;
use anneal_tensor::{Element, Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::module::{Entry, EntryMut, Module};

/// Zeroes each element with probability `p` during training and scales the
/// rest by `1/(1 − p)`; the identity at inference (`torch.nn.Dropout`).
/// Masks come from the layer's own seeded generator, so runs are reproducible.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: StdRng,
}

impl Dropout {
    /// Dropout with probability `p ∈ [0, 1]` and a seeded generator.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "Dropout",
                format!("probability {p} is outside [0, 1]"),
            ));
        }
        Ok(Dropout {
            p,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }
}

impl<T: Element> Module<T> for Dropout {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(x.clone())
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        x.dropout(self.p, &mut self.rng)
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    fn visit<'a>(&'a self, _: &str, _: &mut dyn FnMut(&str, Entry<'a, T>)) {}
    fn visit_mut<'a>(&'a mut self, _: &str, _: &mut dyn FnMut(&str, EntryMut<'a, T>)) {}
}
