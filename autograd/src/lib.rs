//! # anneal-autograd
//!
//! Define-by-run reverse-mode differentiation over `anneal-tensor`.
//!
//! Each op on [`Var`]s computes its value at once and, when a parent needs a
//! gradient, records a backward rule. [`Var::backward`] walks the graph once
//! in reverse topological order (iteratively: any depth works) and returns a
//! [`Gradients`] store. Nothing global needs resetting; [`no_grad`] turns
//! recording off for the duration of a closure.
//!
//! ```
//! use anneal_autograd::{Param, Var};
//! use anneal_tensor::Tensor;
//!
//! let w = Param::new(Tensor::from_vec(vec![1.0f32, 2.0], &[2])?);
//! let x = Var::constant(Tensor::from_vec(vec![3.0f32, 4.0], &[2])?);
//! let loss = w.var().mul(&x)?.sum_all()?;      // w·x
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().to_vec(), vec![3.0, 4.0]);
//! # Ok::<(), anneal_tensor::Error>(())
//! ```
//!
//! ## PyTorch equivalent
//!
//! | PyTorch | anneal |
//! |---|---|
//! | `torch.tensor(x, requires_grad=True)` | [`Var::leaf`] |
//! | `nn.Parameter(t)`, `p.grad` | [`Param::new`], [`Gradients::get`] |
//! | `loss.backward()` | [`Var::backward`] (returns the gradients) |
//! | `y.backward(gradient)` | [`Var::backward_with`] |
//! | `with torch.no_grad():` | [`no_grad`]`(|| …)` |
//! | `x.detach()` | [`Var::detach`] |
//! | `torch.autograd.gradcheck` | [`gradcheck`] |

#![warn(missing_docs)]

mod backward;
mod gradcheck;
mod no_grad;
mod ops;
mod param;
mod var;

pub use backward::Gradients;
pub use gradcheck::{gradcheck, GradcheckFailure};
pub use no_grad::{is_grad_enabled, no_grad};
pub use param::{Param, ParamId};
pub use var::{Var, VarId};
