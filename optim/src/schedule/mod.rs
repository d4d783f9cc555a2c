//! Learning-rate schedules (`torch.optim.lr_scheduler`).
//!
//! A schedule counts steps from 0; [`LrSchedule::lr`] is the rate for the
//! current step (PyTorch's `optimizer.param_groups[0]["lr"]` read before the
//! `t`-th `optimizer.step()`), and [`LrSchedule::step`] advances it (PyTorch's
//! `scheduler.step()`, called after `optimizer.step()`):
//!
//! ```
//! use anneal_optim::{Adam, AdamConfig, LrSchedule, Optimizer, StepLr};
//! let mut opt = Adam::<f32>::new(AdamConfig::new(0.1))?;
//! let mut sched = StepLr::new(opt.learning_rate(), 10, 0.5)?;
//! for t in 0..30 {
//!     sched.apply(&mut opt);          // opt uses sched.lr() for this step
//!     // … forward, backward, opt.step(&mut params, &grads)? …
//!     sched.step();
//! }
//! assert_eq!(opt.learning_rate(), 0.1 * 0.25);
//! # Ok::<(), anneal_tensor::Error>(())
//! ```
//!
//! Every schedule here is a closed form of the step count, so a schedule is
//! restored by setting its step ([`LrSchedule::set_step`]) and composes with
//! any other ([`SequentialLr`], [`ChainedLr`]). PyTorch computes several of
//! them recursively (`lr ← lr·factor`); the two agree to about 1e-15
//! relative, and where PyTorch's recursion and its own closed form differ
//! in meaning (`CosineAnnealingLR` past `T_max`, `SequentialLR` at a
//! milestone) the values here are PyTorch's. [`ReduceLrOnPlateau`] depends
//! on a metric, not on the step count, and is its own type.

mod compose;
mod cosine;
mod linear;
mod one_cycle;
mod plateau;
mod step;

pub use compose::{BoxedSchedule, ChainedLr, SequentialLr};
pub use cosine::{CosineAnnealingLr, CosineAnnealingWarmRestarts};
pub use linear::LinearLr;
pub use one_cycle::{AnnealStrategy, OneCycleConfig, OneCycleLr};
pub use plateau::{PlateauConfig, ReduceLrOnPlateau, ThresholdMode};
pub use step::{ExponentialLr, MultiStepLr, StepLr};

use anneal_tensor::{Element, Error, Result};

use crate::Optimizer;

/// A learning rate as a function of the step count.
pub trait LrSchedule {
    /// The rate for step `t` (`t = 0` is the first step).
    fn lr_at(&self, t: usize) -> f64;

    /// The rate the schedule starts from (the optimiser's initial rate).
    fn base_lr(&self) -> f64;

    /// The current step count.
    fn current_step(&self) -> usize;

    /// Sets the step count (to resume a run).
    fn set_step(&mut self, t: usize);

    /// The rate for the current step.
    fn lr(&self) -> f64 {
        self.lr_at(self.current_step())
    }

    /// Advances one step (PyTorch's `scheduler.step()`).
    fn step(&mut self) {
        let t = self.current_step();
        self.set_step(t.saturating_add(1));
    }

    /// Sets the optimiser's learning rate to [`LrSchedule::lr`] (through
    /// [`Optimizer::set_learning_rate`], which keeps the ratios between
    /// parameter groups).
    fn apply<T: Element, O: Optimizer<T> + ?Sized>(&self, opt: &mut O)
    where
        Self: Sized,
    {
        opt.set_learning_rate(self.lr());
    }
}

impl<S: LrSchedule + ?Sized> LrSchedule for Box<S> {
    fn lr_at(&self, t: usize) -> f64 {
        (**self).lr_at(t)
    }
    fn base_lr(&self) -> f64 {
        (**self).base_lr()
    }
    fn current_step(&self) -> usize {
        (**self).current_step()
    }
    fn set_step(&mut self, t: usize) {
        (**self).set_step(t)
    }
}

/// Errors unless `x` is finite and non-negative.
fn check_lr(op: &'static str, what: &str, x: f64) -> Result<()> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("invalid {what}: {x} (must be finite and >= 0)"),
        ))
    }
}

/// Implements the step-counter methods of [`LrSchedule`] over a field `t`.
macro_rules! step_counter {
    () => {
        fn current_step(&self) -> usize {
            self.t
        }
        fn set_step(&mut self, t: usize) {
            self.t = t;
        }
    };
}
use step_counter;
