//! The [`Module`] trait: forward passes plus a visitor over named parameters
//! and buffers, named exactly as PyTorch's `state_dict()` names them.

use anneal_autograd::{Param, Var};
use anneal_tensor::{Element, Result, Tensor};

use crate::hooks::HookableLayer;

/// One named entry of a module, seen by [`Module::visit`].
#[derive(Debug)]
pub enum Entry<'a, T: Element> {
    /// A trainable parameter (`nn.Parameter`).
    Param(&'a Param<T>),
    /// A floating-point buffer (e.g. `running_mean`).
    Buffer(&'a Tensor<T>),
    /// An integer counter buffer (e.g. `num_batches_tracked`, int64 in PyTorch).
    Counter(&'a i64),
}

/// One named entry of a module, seen by [`Module::visit_mut`].
#[derive(Debug)]
pub enum EntryMut<'a, T: Element> {
    /// A trainable parameter.
    Param(&'a mut Param<T>),
    /// A floating-point buffer.
    Buffer(&'a mut Tensor<T>),
    /// An integer counter buffer.
    Counter(&'a mut i64),
}

/// Joins a parent prefix and a child name with a dot (`features` + `0` →
/// `features.0`); an empty prefix yields the name alone.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A neural-network building block.
///
/// * [`Module::forward`] is inference (PyTorch's `eval()` mode): it works
///   from `&self`, so one model can serve many threads.
/// * [`Module::forward_train`] is training mode: BatchNorm uses and updates
///   batch statistics, Dropout draws masks from its seeded generator.
/// * [`Module::visit`] / [`Module::visit_mut`] walk every parameter and
///   buffer with its dotted PyTorch name; optimisers, state dicts, freezing
///   and quantisation all go through them.
pub trait Module<T: Element = f32>: Send + Sync {
    /// Inference forward pass.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>>;

    /// Training forward pass; defaults to [`Module::forward`] for layers that
    /// behave the same in both modes.
    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        self.forward(x)
    }

    /// Re-seeds every random generator inside the module (dropout masks).
    /// Training loops call it at each epoch start with a seed derived from
    /// the run's seed and the epoch, so a run resumed from a checkpoint draws
    /// the same masks as an uninterrupted one. Containers forward it to their
    /// children; layers without randomness ignore it.
    fn reseed(&mut self, seed: u64) {
        let _ = seed;
    }

    /// Hands every Linear and Conv2d layer inside (with its dotted name) to
    /// `f`, so quantisation can install hooks. Containers forward it to their
    /// children; the default reaches nothing.
    fn visit_layers_mut<'a>(
        &'a mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, HookableLayer<'a, T>),
    ) {
        let _ = (prefix, f);
    }

    /// Calls `f(name, entry)` for every parameter and buffer, names prefixed
    /// by `prefix`.
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>));

    /// Mutable twin of [`Module::visit`].
    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>));
}

/// Conveniences available on every module.
pub trait ModuleExt<T: Element>: Module<T> {
    /// `(name, parameter)` pairs in visiting order (`named_parameters()`).
    fn named_parameters(&self) -> Vec<(String, &Param<T>)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, e| {
            if let Entry::Param(p) = e {
                out.push((name.to_string(), p));
            }
        });
        out
    }

    /// Mutable parameters in visiting order, ready for an optimiser step.
    fn parameters_mut(&mut self) -> Vec<&mut Param<T>> {
        let mut out = Vec::new();
        self.visit_mut("", &mut |_, e| {
            if let EntryMut::Param(p) = e {
                out.push(p);
            }
        });
        out
    }

    /// Total number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.named_parameters()
            .iter()
            .map(|(_, p)| p.value().numel())
            .sum()
    }

    /// Freezes (or unfreezes) every parameter whose name satisfies `pred`.
    fn set_requires_grad_where(&mut self, requires_grad: bool, pred: &dyn Fn(&str) -> bool) {
        self.visit_mut("", &mut |name, e| {
            if let EntryMut::Param(p) = e {
                if pred(name) {
                    p.set_requires_grad(requires_grad);
                }
            }
        });
    }
}

impl<T: Element, M: Module<T> + ?Sized> ModuleExt<T> for M {}

impl<T: Element> Module<T> for Box<dyn Module<T>> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        (**self).forward(x)
    }
    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        (**self).forward_train(x)
    }
    fn reseed(&mut self, seed: u64) {
        (**self).reseed(seed)
    }
    fn visit_layers_mut<'a>(
        &'a mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, HookableLayer<'a, T>),
    ) {
        (**self).visit_layers_mut(prefix, f)
    }
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        (**self).visit(prefix, f)
    }
    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        (**self).visit_mut(prefix, f)
    }
}

/// Errors unless `x` has the expected rank; names the layer.
pub(crate) fn expect_rank<T: Element>(
    layer: &'static str,
    x: &Var<T>,
    ranks: &[usize],
    what: &str,
) -> Result<()> {
    if !ranks.contains(&x.rank()) {
        return Err(anneal_tensor::Error::shape(
            layer,
            &[x.shape()],
            format!("expected input {what}"),
        ));
    }
    Ok(())
}

/// The dims of a parameter `what` of `layer` that must have rank `N`: its
/// value can be replaced by a tensor of any shape (`Param::value_mut`, the
/// layers' public fields), so forward passes check before indexing.
pub(crate) fn param_dims<const N: usize>(
    layer: &'static str,
    what: &str,
    shape: &[usize],
) -> Result<[usize; N]> {
    <[usize; N]>::try_from(shape).map_err(|_| {
        anneal_tensor::Error::shape(layer, &[shape], format!("{what} must have rank {N}"))
    })
}

/// Visits `weight` and an optional `bias` under `prefix` (the pair every
/// affine layer has).
pub(crate) fn visit_weight_bias<'a, T: Element>(
    prefix: &str,
    weight: &'a Param<T>,
    bias: Option<&'a Param<T>>,
    f: &mut dyn FnMut(&str, Entry<'a, T>),
) {
    f(&join(prefix, "weight"), Entry::Param(weight));
    if let Some(b) = bias {
        f(&join(prefix, "bias"), Entry::Param(b));
    }
}

/// Mutable twin of [`visit_weight_bias`].
pub(crate) fn visit_weight_bias_mut<'a, T: Element>(
    prefix: &str,
    weight: &'a mut Param<T>,
    bias: Option<&'a mut Param<T>>,
    f: &mut dyn FnMut(&str, EntryMut<'a, T>),
) {
    f(&join(prefix, "weight"), EntryMut::Param(weight));
    if let Some(b) = bias {
        f(&join(prefix, "bias"), EntryMut::Param(b));
    }
}
