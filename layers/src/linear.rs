//! Fully connected layer.

use anneal_autograd::{Param, Var};
use anneal_tensor::{Element, Result};
use rand::Rng;

use crate::hooks::{HookableLayer, LayerHooks};
use crate::init;
use crate::module::{
    expect_rank, param_dims, visit_weight_bias, visit_weight_bias_mut, Entry, EntryMut, Module,
};

/// Configuration of a [`Linear`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether to add a bias.
    pub bias: bool,
}

impl LinearConfig {
    /// `in_features → out_features` with a bias.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// Sets whether the layer has a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builds the layer with PyTorch's default initialisation.
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<Linear<T>> {
        let weight = Param::new(init::default_weight(
            &[self.out_features, self.in_features],
            rng,
        )?);
        let bias = if self.bias {
            Some(Param::new(init::default_bias(
                self.out_features,
                self.in_features,
                rng,
            )?))
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            hooks: LayerHooks::default(),
        })
    }
}

/// `y = x·Wᵀ + b` (`torch.nn.Linear`); weight `[out, in]`, bias `[out]`.
///
/// # Shapes
/// `[.., in]` → `[.., out]`.
#[derive(Debug, Clone)]
pub struct Linear<T: Element = f32> {
    /// Weight `[out_features, in_features]`.
    pub weight: Param<T>,
    /// Optional bias `[out_features]`.
    pub bias: Option<Param<T>>,
    /// Quantisation hooks (none by default).
    pub hooks: LayerHooks<T>,
}

impl<T: Element> Linear<T> {
    /// Builds a layer from existing tensors (e.g. loaded weights).
    pub fn from_params(weight: Param<T>, bias: Option<Param<T>>) -> Self {
        Linear {
            weight,
            bias,
            hooks: LayerHooks::default(),
        }
    }
}

impl<T: Element> Module<T> for Linear<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let [_, in_features] = param_dims("Linear", "weight", self.weight.shape())?;
        if x.rank() == 0 || x.shape()[x.rank() - 1] != in_features {
            return Err(anneal_tensor::Error::shape(
                "Linear",
                &[x.shape(), self.weight.shape()],
                format!("expected input [.., {in_features}]"),
            ));
        }
        expect_rank("Linear", x, &[1, 2, 3, 4, 5, 6], "of rank ≥ 1")?;
        if let Some(k) = &self.hooks.kernel {
            return Ok(Var::constant(k.forward(x.value())?));
        }
        let (x, w) = self.hooks.enter(x, self.weight.var())?;
        let b = self.bias.as_ref().map(|b| b.var());
        x.linear(&w, b.as_ref())
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        // Training always runs in floating point (with fake quantisation if installed).
        let (x, w) = self.hooks.enter(x, self.weight.var())?;
        let b = self.bias.as_ref().map(|b| b.var());
        x.linear(&w, b.as_ref())
    }

    fn visit_layers_mut<'a>(
        &'a mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, HookableLayer<'a, T>),
    ) {
        f(prefix, HookableLayer::Linear(self));
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        visit_weight_bias_mut(prefix, &mut self.weight, self.bias.as_mut(), f);
    }
}
