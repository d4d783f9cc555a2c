//! Activation functions as modules (they hold no parameters).

use anneal_autograd::Var;
use anneal_tensor::{Element, Result};

use crate::module::{Entry, EntryMut, Module};

macro_rules! parameterless {
    ($ty:ident) => {
        impl<T: Element> Module<T> for $ty {
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                self.apply(x)
            }
            fn visit<'a>(&'a self, _: &str, _: &mut dyn FnMut(&str, Entry<'a, T>)) {}
            fn visit_mut<'a>(&'a mut self, _: &str, _: &mut dyn FnMut(&str, EntryMut<'a, T>)) {}
        }
    };
}
pub(crate) use parameterless;

/// `max(x, 0)` (`torch.nn.ReLU`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Relu;
impl Relu {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(x.relu())
    }
}
parameterless!(Relu);

/// `x` if positive else `slope·x` (`torch.nn.LeakyReLU`, default slope 0.01).
#[derive(Debug, Clone, Copy)]
pub struct LeakyRelu {
    /// Negative slope.
    pub slope: f64,
}
impl Default for LeakyRelu {
    fn default() -> Self {
        LeakyRelu { slope: 0.01 }
    }
}
impl LeakyRelu {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(x.leaky_relu(T::from_f64_lossy(self.slope)))
    }
}
parameterless!(LeakyRelu);

/// GELU (`torch.nn.GELU`): exact `x·Φ(x)`, or the tanh approximation when
/// `approximate` is set (`approximate="tanh"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gelu {
    /// Use the tanh approximation.
    pub approximate: bool,
}
impl Gelu {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(if self.approximate {
            x.gelu_tanh()
        } else {
            x.gelu()
        })
    }
}
parameterless!(Gelu);

/// `x·σ(x)` (`torch.nn.SiLU`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silu;
impl Silu {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(x.silu())
    }
}
parameterless!(Silu);

/// Logistic sigmoid (`torch.nn.Sigmoid`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sigmoid;
impl Sigmoid {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(x.sigmoid())
    }
}
parameterless!(Sigmoid);

/// Hyperbolic tangent (`torch.nn.Tanh`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tanh;
impl Tanh {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(x.tanh())
    }
}
parameterless!(Tanh);

/// Softmax along an axis (`torch.nn.Softmax(dim)`).
#[derive(Debug, Clone, Copy)]
pub struct Softmax {
    /// The axis (negative counts from the back).
    pub axis: isize,
}
impl Softmax {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        x.softmax(self.axis)
    }
}
parameterless!(Softmax);

/// Log-softmax along an axis (`torch.nn.LogSoftmax(dim)`).
#[derive(Debug, Clone, Copy)]
pub struct LogSoftmax {
    /// The axis (negative counts from the back).
    pub axis: isize,
}
impl LogSoftmax {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        x.log_softmax(self.axis)
    }
}
parameterless!(LogSoftmax);
