//! Extension points that let a later crate (quantisation) change how the
//! Linear and Conv2d layers run without `layers` depending on it:
//!
//! * an [`InferenceKernel`] replaces the layer's inference forward (e.g. an
//!   int8 GEMM on pre-packed weights);
//! * an [`InputObserver`] sees every input during calibration;
//! * a [`FakeQuantHook`] rewrites the input and weight `Var`s in both passes
//!   (quantisation-aware training with a straight-through estimator).
//!
//! [`Module::visit_layers_mut`](crate::Module::visit_layers_mut) walks the
//! layers that accept hooks, by their PyTorch names.

use std::fmt;
use std::sync::Arc;

use anneal_autograd::Var;
use anneal_tensor::{Element, Result, Tensor};

use crate::{Conv2d, Linear};

/// A replacement inference forward for one layer.
pub trait InferenceKernel<T: Element>: Send + Sync {
    /// `y = layer(x)` on values (no gradient flows through a kernel).
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>>;
    /// A short description, e.g. `int8 per-channel (static)`.
    fn describe(&self) -> String;
    /// Bytes of the weights and quantisation parameters it holds.
    fn weight_bytes(&self) -> usize;
}

/// Sees a layer's inputs (calibration). Implementations use interior
/// mutability, since inference works from `&self`.
pub trait InputObserver<T: Element>: Send + Sync {
    /// Records one input batch.
    fn observe(&self, x: &Tensor<T>) -> Result<()>;
}

/// Rewrites a layer's input and weight in the graph (fake quantisation).
pub trait FakeQuantHook<T: Element>: Send + Sync {
    /// The input as the layer should see it.
    fn input(&self, x: &Var<T>) -> Result<Var<T>>;
    /// The weight as the layer should use it.
    fn weight(&self, w: &Var<T>) -> Result<Var<T>>;
}

/// The hooks installed on one layer; all empty by default.
pub struct LayerHooks<T: Element> {
    /// Replaces the inference forward.
    pub kernel: Option<Arc<dyn InferenceKernel<T>>>,
    /// Sees every input.
    pub observer: Option<Arc<dyn InputObserver<T>>>,
    /// Fake-quantises input and weight.
    pub fake_quant: Option<Arc<dyn FakeQuantHook<T>>>,
}

impl<T: Element> Default for LayerHooks<T> {
    fn default() -> Self {
        LayerHooks {
            kernel: None,
            observer: None,
            fake_quant: None,
        }
    }
}

impl<T: Element> Clone for LayerHooks<T> {
    fn clone(&self) -> Self {
        LayerHooks {
            kernel: self.kernel.clone(),
            observer: self.observer.clone(),
            fake_quant: self.fake_quant.clone(),
        }
    }
}

impl<T: Element> fmt::Debug for LayerHooks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerHooks")
            .field("kernel", &self.kernel.as_ref().map(|k| k.describe()))
            .field("observer", &self.observer.is_some())
            .field("fake_quant", &self.fake_quant.is_some())
            .finish()
    }
}

impl<T: Element> LayerHooks<T> {
    /// Removes every hook.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Runs the observer and fake-quantisation on the way into a layer;
    /// returns the (possibly rewritten) input and weight.
    pub(crate) fn enter(&self, x: &Var<T>, w: Var<T>) -> Result<(Var<T>, Var<T>)> {
        if let Some(o) = &self.observer {
            o.observe(x.value())?;
        }
        match &self.fake_quant {
            Some(fq) => Ok((fq.input(x)?, fq.weight(&w)?)),
            None => Ok((x.clone(), w)),
        }
    }
}

/// A layer that accepts hooks, as [`Module::visit_layers_mut`](crate::Module::visit_layers_mut) hands it out.
pub enum HookableLayer<'a, T: Element> {
    /// A fully connected layer.
    Linear(&'a mut Linear<T>),
    /// A 2-D convolution.
    Conv2d(&'a mut Conv2d<T>),
}

impl<T: Element> HookableLayer<'_, T> {
    /// The layer's hooks.
    pub fn hooks(&mut self) -> &mut LayerHooks<T> {
        match self {
            HookableLayer::Linear(l) => &mut l.hooks,
            HookableLayer::Conv2d(c) => &mut c.hooks,
        }
    }
}
