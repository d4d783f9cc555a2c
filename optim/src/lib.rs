//! # anneal-optim
//!
//! Optimisers, learning-rate schedules and regularisation for anneal, with
//! PyTorch's semantics: the same update formulas, hyper-parameters, defaults
//! and edge cases (first steps, where `ε` goes, per-parameter step counts,
//! parameters without a gradient), checked against trajectories recorded
//! from PyTorch 1.13 (`tests/fixtures/generate.py`).
//!
//! ```
//! use anneal_autograd::{Param, Var};
//! use anneal_optim::{AdamW, AdamWConfig, CosineAnnealingLr, LrSchedule, Optimizer,
//!                    clip_grad_norm};
//! use anneal_tensor::Tensor;
//!
//! let mut w = Param::new(Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3])?);
//! let target = Var::constant(Tensor::from_vec(vec![0.5f32, 0.5, 0.5], &[3])?);
//! let mut opt = AdamW::new(AdamWConfig::new(0.1))?;
//! let mut sched = CosineAnnealingLr::new(opt.learning_rate(), 100, 0.0)?;
//! for _ in 0..100 {
//!     let loss = w.var().sub(&target)?.square().sum_all()?;
//!     let mut grads = loss.backward()?;
//!     clip_grad_norm(&mut grads, &[w.id()], 1.0, 2.0)?;
//!     sched.apply(&mut opt);
//!     opt.step(&mut [&mut w], &grads)?;
//!     sched.step();
//! }
//! assert!(w.value().as_slice().iter().all(|x| (x - 0.5).abs() < 0.05));
//! # Ok::<(), anneal_tensor::Error>(())
//! ```
//!
//! Optimisers are generic over the element type (`f32` by default, `f64`
//! for tight checks) and update each parameter in one fused element-wise
//! pass over slices (no temporary tensors). A step cuts every parameter into
//! fixed chunks and spreads the chunks of all parameters over rayon's pool;
//! every element's update is independent, so the result is the same at any
//! thread count. Adam/AdamW's loop is also compiled for AVX2 and chosen at
//! run time (same operations, no FMA: the same bits). One Adam step over 10M
//! `f32` parameters runs at memory bandwidth (`benches/adam.rs`). State is data ([`OptimizerState`]):
//! it is saved to and restored from safetensors, and a restored run
//! continues bit for bit.
//!
//! ## PyTorch equivalent
//!
//! | PyTorch | anneal |
//! |---|---|
//! | `torch.optim.Optimizer` (`step`, `param_groups`, `state_dict`, `load_state_dict`) | [`Optimizer`] ([`Optimizer::step`], [`Optimizer::add_param_group`], [`Optimizer::state_dict`], [`Optimizer::load_state_dict`]) |
//! | `optim.SGD(lr, momentum, dampening, weight_decay, nesterov, maximize)` | [`Sgd`], [`SgdConfig`] |
//! | `optim.Adam(lr, betas, eps, weight_decay, amsgrad, maximize)` | [`Adam`], [`AdamConfig`] |
//! | `optim.AdamW(...)` | [`AdamW`], [`AdamWConfig`] |
//! | `optim.RMSprop(lr, alpha, eps, weight_decay, momentum, centered, maximize)` | [`RmsProp`], [`RmsPropConfig`] |
//! | `optim.Adagrad(lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize)` | [`Adagrad`], [`AdagradConfig`] |
//! | `optim.Adadelta(lr, rho, eps, weight_decay, maximize)` | [`Adadelta`], [`AdadeltaConfig`] |
//! | `lion_pytorch.Lion(lr, betas, weight_decay)` | [`Lion`], [`LionConfig`] |
//! | `lr_scheduler.StepLR`, `MultiStepLR`, `ExponentialLR` | [`StepLr`], [`MultiStepLr`], [`ExponentialLr`] |
//! | `lr_scheduler.CosineAnnealingLR`, `CosineAnnealingWarmRestarts` | [`CosineAnnealingLr`], [`CosineAnnealingWarmRestarts`] |
//! | `lr_scheduler.LinearLR`, `OneCycleLR` | [`LinearLr`], [`OneCycleLr`] |
//! | `lr_scheduler.ReduceLROnPlateau` | [`ReduceLrOnPlateau`] |
//! | `lr_scheduler.SequentialLR`, `ChainedScheduler` | [`SequentialLr`], [`ChainedLr`] |
//! | `scheduler.step()`, `scheduler.get_last_lr()` | [`LrSchedule::step`], [`LrSchedule::lr`] |
//! | `weight_decay * 0.5 * sum(w**2)` added to the loss; L1, elastic net | [`l2_penalty`], [`l1_penalty`], [`elastic_net_penalty`], [`ParamFilter`] |
//! | `nn.utils.clip_grad_norm_(…, error_if_nonfinite=True)` | [`clip_grad_norm`], [`clip_grad_norm_all`] |
//! | `nn.utils.clip_grad_value_` | [`clip_grad_value`] |
//! | Lightning's / Keras' `EarlyStopping(patience, min_delta, mode)` | [`EarlyStopping`] |
//!
//! ## Deviations from PyTorch
//!
//! - A schedule drives all parameter groups through
//!   [`Optimizer::set_learning_rate`], keeping their ratios (see
//!   [`Optimizer`]); PyTorch runs the schedule per group from each group's
//!   initial rate. The two agree for multiplicative schedules.
//! - [`OneCycleLr`] does not cycle momentum, and holds `min_lr` past its
//!   last step where PyTorch raises.
//! - SGD's default learning rate is PyTorch 2.x's 1e-3 (1.13 requires one).
//! - Sparse gradients, complex parameters and `foreach`/`fused` flags have
//!   no counterpart.

#![warn(missing_docs)]

mod adadelta;
mod adagrad;
mod adam;
mod clip;
mod early_stopping;
mod lion;
mod optimizer;
mod penalty;
mod rmsprop;
pub mod schedule;
mod sgd;
mod state;

pub use adadelta::{Adadelta, AdadeltaConfig};
pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use clip::{clip_grad_norm, clip_grad_norm_all, clip_grad_value};
pub use early_stopping::{Decision, EarlyStopping, Mode};
pub use lion::{Lion, LionConfig};
pub use optimizer::{GroupOverrides, Optimizer, ParamGroup};
pub use penalty::{elastic_net_penalty, l1_penalty, l2_penalty, ParamFilter};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use schedule::{
    AnnealStrategy, BoxedSchedule, ChainedLr, CosineAnnealingLr, CosineAnnealingWarmRestarts,
    ExponentialLr, LinearLr, LrSchedule, MultiStepLr, OneCycleConfig, OneCycleLr, PlateauConfig,
    ReduceLrOnPlateau, SequentialLr, StepLr, ThresholdMode,
};
pub use sgd::{Sgd, SgdConfig};
pub use state::{GroupState, OptimizerState, ParamState};
