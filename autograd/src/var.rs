//! [`Var`]: a tensor that remembers how it was made.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anneal_tensor::{Element, Result, Tensor};

use crate::no_grad::is_grad_enabled;
use crate::param::ParamId;

static NEXT_VAR_ID: AtomicU64 = AtomicU64::new(1);

/// The identity of a graph node (unique within the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(u64);

/// A backward rule: given the gradient of the output and which parents need
/// a gradient, returns one optional gradient per parent (same order).
pub(crate) type BackwardFn<T> =
    Box<dyn Fn(&Tensor<T>, &[bool]) -> Result<Vec<Option<Tensor<T>>>> + Send + Sync>;

pub(crate) struct Node<T: Element> {
    pub(crate) id: VarId,
    pub(crate) value: Tensor<T>,
    pub(crate) requires_grad: bool,
    pub(crate) op: &'static str,
    pub(crate) parents: Vec<Var<T>>,
    pub(crate) backward: Option<BackwardFn<T>>,
    pub(crate) param: Option<ParamId>,
}

impl<T: Element> Drop for Node<T> {
    /// Frees the graph iteratively so that dropping a very deep graph (a chain
    /// of 10,000 ops) cannot overflow the stack.
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.parents);
        while let Some(v) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(v.node) {
                stack.append(&mut node.parents);
            }
        }
    }
}

/// A node of the computation graph: a value plus, when it requires a
/// gradient, the op that made it and its parents.
///
/// Cloning is cheap (an `Arc`). Every op of `anneal-tensor` that a network
/// needs has a differentiable twin on `Var`. The graph is freed when the last
/// `Var` referring to it is dropped.
#[derive(Clone)]
pub struct Var<T: Element = f32> {
    pub(crate) node: Arc<Node<T>>,
}

impl<T: Element> std::fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Var")
            .field("op", &self.node.op)
            .field("requires_grad", &self.node.requires_grad)
            .field("value", &self.node.value)
            .finish()
    }
}

impl<T: Element> Var<T> {
    fn make(
        value: Tensor<T>,
        requires_grad: bool,
        op: &'static str,
        parents: Vec<Var<T>>,
        backward: Option<BackwardFn<T>>,
        param: Option<ParamId>,
    ) -> Self {
        Var {
            node: Arc::new(Node {
                id: VarId(NEXT_VAR_ID.fetch_add(1, Ordering::Relaxed)),
                value,
                requires_grad,
                op,
                parents,
                backward,
                param,
            }),
        }
    }

    /// A constant: no gradient flows into it.
    pub fn constant(value: Tensor<T>) -> Self {
        Self::make(value, false, "constant", Vec::new(), None, None)
    }

    /// A leaf whose gradient [`Var::backward`] reports (`requires_grad=True`).
    /// Under [`no_grad`](crate::no_grad) it is a constant.
    pub fn leaf(value: Tensor<T>) -> Self {
        Self::make(value, is_grad_enabled(), "leaf", Vec::new(), None, None)
    }

    pub(crate) fn param_leaf(value: Tensor<T>, id: ParamId, requires_grad: bool) -> Self {
        let rg = requires_grad && is_grad_enabled();
        Self::make(value, rg, "param", Vec::new(), None, Some(id))
    }

    /// Records the result of an op. If recording is off or no parent needs
    /// a gradient, the result is a constant and `backward` is dropped unused.
    pub(crate) fn from_op(
        op: &'static str,
        value: Tensor<T>,
        parents: &[&Var<T>],
        backward: impl Fn(&Tensor<T>, &[bool]) -> Result<Vec<Option<Tensor<T>>>> + Send + Sync + 'static,
    ) -> Self {
        if !is_grad_enabled() || !parents.iter().any(|p| p.requires_grad()) {
            return Self::make(value, false, op, Vec::new(), None, None);
        }
        let parents = parents.iter().map(|&p| p.clone()).collect();
        Self::make(value, true, op, parents, Some(Box::new(backward)), None)
    }

    /// Records a user-defined differentiable op: `value` computed from
    /// `parents`, and `backward(grad_output, needs_grad)` returning one
    /// optional gradient per parent (same order and shapes). This is how
    /// crates built on autograd add ops (e.g. fake quantisation with a
    /// straight-through estimator). Nothing is recorded under `no_grad` or
    /// when no parent needs a gradient.
    pub fn custom(
        op: &'static str,
        value: Tensor<T>,
        parents: &[&Var<T>],
        backward: impl Fn(&Tensor<T>, &[bool]) -> Result<Vec<Option<Tensor<T>>>> + Send + Sync + 'static,
    ) -> Self {
        Self::from_op(op, value, parents, backward)
    }

    /// The value.
    pub fn value(&self) -> &Tensor<T> {
        &self.node.value
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.node.value.shape()
    }

    /// The rank of the value.
    pub fn rank(&self) -> usize {
        self.node.value.rank()
    }

    /// Whether gradients flow into this node.
    pub fn requires_grad(&self) -> bool {
        self.node.requires_grad
    }

    /// The node's identity (for [`Gradients::wrt`](crate::Gradients::wrt)).
    pub fn id(&self) -> VarId {
        self.node.id
    }

    /// The name of the op that produced this node (`"leaf"`, `"param"`,
    /// `"constant"`, `"matmul"`, …).
    pub fn op_name(&self) -> &'static str {
        self.node.op
    }

    /// The same value cut from the graph (`tensor.detach()`).
    pub fn detach(&self) -> Self {
        Self::constant(self.node.value.clone())
    }
}

impl<T: Element> From<Tensor<T>> for Var<T> {
    /// Wraps a tensor as a constant.
    fn from(t: Tensor<T>) -> Self {
        Var::constant(t)
    }
}
