//! Trainable parameters: a tensor with a stable identity.

use std::sync::atomic::{AtomicU64, Ordering};

use anneal_tensor::{Element, Tensor};

use crate::Var;

static NEXT_PARAM_ID: AtomicU64 = AtomicU64::new(1);

/// The stable identity of a [`Param`]; optimiser state and gradients are
/// keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

impl ParamId {
    /// A fresh identity, never handed out before in this process.
    pub fn fresh() -> Self {
        ParamId(NEXT_PARAM_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The raw number (for display and debugging).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// A trainable tensor owned by a module (PyTorch's `nn.Parameter`).
///
/// [`Param::var`] makes the leaf that a forward pass differentiates;
/// after `backward`, `grads.get(&param)` reads its gradient. Cloning a
/// `Param` gives a new parameter with a fresh [`ParamId`] (as
/// `copy.deepcopy` does for a PyTorch module), so optimiser state never
/// leaks between copies.
#[derive(Debug)]
pub struct Param<T: Element = f32> {
    id: ParamId,
    value: Tensor<T>,
    requires_grad: bool,
}

impl<T: Element> Clone for Param<T> {
    fn clone(&self) -> Self {
        Param {
            id: ParamId::fresh(),
            value: self.value.clone(),
            requires_grad: self.requires_grad,
        }
    }
}

impl<T: Element> Param<T> {
    /// A trainable parameter holding `value`.
    pub fn new(value: Tensor<T>) -> Self {
        Param {
            id: ParamId::fresh(),
            value,
            requires_grad: true,
        }
    }

    /// The stable identity.
    pub fn id(&self) -> ParamId {
        self.id
    }

    /// The current value.
    pub fn value(&self) -> &Tensor<T> {
        &self.value
    }

    /// Mutable access to the value (copy-on-write if a graph still holds it).
    pub fn value_mut(&mut self) -> &mut Tensor<T> {
        &mut self.value
    }

    /// Replaces the value; errors if the shape differs.
    pub fn set_value(&mut self, value: Tensor<T>) -> anneal_tensor::Result<()> {
        if value.shape() != self.value.shape() {
            return Err(anneal_tensor::Error::shape(
                "Param::set_value",
                &[self.value.shape(), value.shape()],
                "new value must keep the parameter's shape",
            ));
        }
        self.value = value;
        Ok(())
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Whether the parameter is trained (false when frozen).
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// Freezes (`false`) or unfreezes (`true`) the parameter.
    pub fn set_requires_grad(&mut self, requires_grad: bool) {
        self.requires_grad = requires_grad;
    }

    /// A graph leaf for this parameter's current value. It records gradients
    /// unless the parameter is frozen or gradient recording is off.
    pub fn var(&self) -> Var<T> {
        Var::param_leaf(self.value.clone(), self.id, self.requires_grad)
    }
}
