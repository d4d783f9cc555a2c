//! The backward walk and the [`Gradients`] store.

use std::collections::{HashMap, HashSet};

use anneal_tensor::{shape_to_string, Element, Error, Result, Tensor};

use crate::param::{Param, ParamId};
use crate::var::{Var, VarId};

/// Gradients produced by [`Var::backward`]: one per parameter and per leaf
/// that the loss depends on. A parameter that does not reach the loss has no
/// entry (not a zero tensor).
#[derive(Debug, Clone)]
pub struct Gradients<T: Element = f32> {
    params: HashMap<ParamId, Tensor<T>>,
    leaves: HashMap<VarId, Tensor<T>>,
}

impl<T: Element> Default for Gradients<T> {
    fn default() -> Self {
        Gradients {
            params: HashMap::new(),
            leaves: HashMap::new(),
        }
    }
}

impl<T: Element> Gradients<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The gradient of a parameter, if the loss depends on it.
    pub fn get(&self, param: &Param<T>) -> Option<&Tensor<T>> {
        self.params.get(&param.id())
    }

    /// The gradient of a parameter by id.
    pub fn get_by_id(&self, id: ParamId) -> Option<&Tensor<T>> {
        self.params.get(&id)
    }

    /// The gradient of a leaf `Var` (made by [`Var::leaf`] or [`Param::var`]).
    pub fn wrt(&self, var: &Var<T>) -> Option<&Tensor<T>> {
        match var.node.param {
            Some(id) => self.params.get(&id),
            None => self.leaves.get(&var.id()),
        }
    }

    /// Sets (replaces) the gradient of a parameter, e.g. after clipping.
    pub fn insert(&mut self, id: ParamId, grad: Tensor<T>) {
        self.params.insert(id, grad);
    }

    /// Removes and returns a parameter's gradient.
    pub fn remove(&mut self, id: ParamId) -> Option<Tensor<T>> {
        self.params.remove(&id)
    }

    /// Iterates over `(parameter id, gradient)` pairs in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Tensor<T>)> {
        self.params.iter().map(|(k, v)| (*k, v))
    }

    /// Mutable iteration over parameter gradients (for in-place clipping).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Tensor<T>)> {
        self.params.iter_mut().map(|(k, v)| (*k, v))
    }

    /// Number of parameter gradients held.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when no parameter gradient is held.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Adds every gradient of `other` into `self` (gradient accumulation
    /// over micro-batches).
    pub fn accumulate(&mut self, other: &Gradients<T>) -> Result<()> {
        for (id, g) in &other.params {
            match self.params.get_mut(id) {
                Some(acc) => *acc = acc.add(g)?,
                None => {
                    self.params.insert(*id, g.clone());
                }
            }
        }
        for (id, g) in &other.leaves {
            match self.leaves.get_mut(id) {
                Some(acc) => *acc = acc.add(g)?,
                None => {
                    self.leaves.insert(*id, g.clone());
                }
            }
        }
        Ok(())
    }
}

impl<T: Element> Var<T> {
    /// Back-propagates from a scalar (one-element) output, seeding its
    /// gradient with 1. A non-scalar output is an error: use
    /// [`Var::backward_with`] and give its gradient explicitly.
    pub fn backward(&self) -> Result<Gradients<T>> {
        if self.value().numel() != 1 {
            return Err(Error::invalid(
                "backward",
                format!(
                    "output of shape {} is not a scalar; pass its gradient with backward_with",
                    shape_to_string(self.shape())
                ),
            ));
        }
        self.backward_with(Tensor::ones_like(self.value()))
    }

    /// Back-propagates with an explicit gradient of this output (same shape).
    ///
    /// One reverse topological walk, iterative (no recursion, so graphs of
    /// any depth work); gradients of values used several times add up.
    pub fn backward_with(&self, grad: Tensor<T>) -> Result<Gradients<T>> {
        if grad.shape() != self.shape() {
            return Err(Error::shape(
                "backward",
                &[self.shape(), grad.shape()],
                "the output gradient must have the output's shape",
            ));
        }
        let mut out = Gradients::new();
        if !self.requires_grad() {
            return Ok(out);
        }
        let order = topological_order(self);
        let mut pending: HashMap<VarId, Tensor<T>> = HashMap::new();
        pending.insert(self.id(), grad);
        for var in order.iter().rev() {
            let Some(g) = pending.remove(&var.id()) else {
                continue;
            };
            let node = &var.node;
            match &node.backward {
                None => {
                    // A leaf: report its gradient.
                    match node.param {
                        Some(id) => accumulate(&mut out.params, id, g)?,
                        None => accumulate(&mut out.leaves, node.id, g)?,
                    }
                }
                Some(f) => {
                    let needs: Vec<bool> = node.parents.iter().map(|p| p.requires_grad()).collect();
                    let grads = f(&g, &needs)?;
                    for (parent, pg) in node.parents.iter().zip(grads) {
                        let Some(pg) = pg else { continue };
                        if !parent.requires_grad() {
                            continue;
                        }
                        if pg.shape() != parent.shape() {
                            return Err(Error::shape(
                                node.op,
                                &[parent.shape(), pg.shape()],
                                "internal error: backward produced a gradient of the wrong shape",
                            ));
                        }
                        accumulate(&mut pending, parent.id(), pg)?;
                    }
                }
            }
        }
        Ok(out)
    }
}

fn accumulate<K: std::hash::Hash + Eq, T: Element>(
    map: &mut HashMap<K, Tensor<T>>,
    key: K,
    g: Tensor<T>,
) -> Result<()> {
    match map.get_mut(&key) {
        Some(acc) => {
            // Sum in place when the buffer is not shared.
            let dst = acc.data_mut();
            for (a, &b) in dst.iter_mut().zip(g.as_slice()) {
                *a += b;
            }
        }
        None => {
            map.insert(key, g);
        }
    }
    Ok(())
}

/// Nodes reachable from `root` that require a gradient, parents before
/// children (iterative depth-first post-order).
fn topological_order<T: Element>(root: &Var<T>) -> Vec<Var<T>> {
    let mut order = Vec::new();
    let mut visited: HashSet<VarId> = HashSet::new();
    let mut stack: Vec<(Var<T>, bool)> = vec![(root.clone(), false)];
    while let Some((var, expanded)) = stack.pop() {
        if expanded {
            order.push(var);
            continue;
        }
        if !visited.insert(var.id()) {
            continue;
        }
        stack.push((var.clone(), true));
        for p in &var.node.parents {
            if p.requires_grad() && !visited.contains(&p.id()) {
                stack.push((p.clone(), false));
            }
        }
    }
    order
}
