//! Cosine annealing, with and without warm restarts.

use std::f64::consts::PI;

use anneal_tensor::{Error, Result};

use super::{check_lr, step_counter, LrSchedule};

/// Cosine annealing from `base` to `eta_min` over `t_max` steps
/// (`lr_scheduler.CosineAnnealingLR`):
///
/// ```text
/// lr(t) = η_min + (base − η_min)·(1 + cos(π·t / T_max)) / 2
/// ```
///
/// As in PyTorch, past `T_max` the rate climbs back up: the curve is
/// periodic with period `2·T_max` (PyTorch computes it recursively; the two
/// agree to ~1e-15). Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent
/// with Warm Restarts" (2017).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLr {
    base_lr: f64,
    t_max: usize,
    eta_min: f64,
    t: usize,
}

impl CosineAnnealingLr {
    /// A schedule from `base_lr`; errors if `t_max` is 0.
    pub fn new(base_lr: f64, t_max: usize, eta_min: f64) -> Result<Self> {
        check_lr("CosineAnnealingLr::new", "base_lr", base_lr)?;
        check_lr("CosineAnnealingLr::new", "eta_min", eta_min)?;
        if t_max == 0 {
            return Err(Error::invalid(
                "CosineAnnealingLr::new",
                "t_max must be at least 1",
            ));
        }
        Ok(CosineAnnealingLr {
            base_lr,
            t_max,
            eta_min,
            t: 0,
        })
    }
}

impl LrSchedule for CosineAnnealingLr {
    fn lr_at(&self, t: usize) -> f64 {
        // Reduce t modulo the period first: cos is exact-periodic, and this
        // keeps π·t small for long runs.
        let t = self.t_max.checked_mul(2).map_or(t, |period| t % period);
        self.eta_min
            + (self.base_lr - self.eta_min) * (1.0 + (PI * t as f64 / self.t_max as f64).cos())
                / 2.0
    }
    fn base_lr(&self) -> f64 {
        self.base_lr
    }
    step_counter!();
}

/// Cosine annealing with warm restarts (`lr_scheduler.CosineAnnealingWarmRestarts`):
/// the first cycle lasts `t_0` steps, each next one `t_mult` times longer;
/// within a cycle of length `Tᵢ`, at position `T_cur`:
///
/// ```text
/// lr = η_min + (base − η_min)·(1 + cos(π·T_cur / Tᵢ)) / 2
/// ```
///
/// Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
/// Restarts" (2017).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingWarmRestarts {
    base_lr: f64,
    t_0: usize,
    t_mult: usize,
    eta_min: f64,
    t: usize,
}

impl CosineAnnealingWarmRestarts {
    /// A schedule from `base_lr`; errors if `t_0` is 0 or `t_mult` is 0.
    pub fn new(base_lr: f64, t_0: usize, t_mult: usize, eta_min: f64) -> Result<Self> {
        let op = "CosineAnnealingWarmRestarts::new";
        check_lr(op, "base_lr", base_lr)?;
        check_lr(op, "eta_min", eta_min)?;
        if t_0 == 0 {
            return Err(Error::invalid(op, "t_0 must be at least 1"));
        }
        if t_mult == 0 {
            return Err(Error::invalid(op, "t_mult must be at least 1"));
        }
        Ok(CosineAnnealingWarmRestarts {
            base_lr,
            t_0,
            t_mult,
            eta_min,
            t: 0,
        })
    }

    /// `(T_cur, Tᵢ)`: the position in the current cycle and its length.
    pub fn cycle_position(&self, t: usize) -> (usize, usize) {
        if self.t_mult == 1 {
            return (t % self.t_0, self.t_0);
        }
        let (mut cur, mut len) = (t, self.t_0);
        while cur >= len {
            cur -= len;
            len = len.saturating_mul(self.t_mult);
        }
        (cur, len)
    }
}

impl LrSchedule for CosineAnnealingWarmRestarts {
    fn lr_at(&self, t: usize) -> f64 {
        let (cur, len) = self.cycle_position(t);
        self.eta_min
            + (self.base_lr - self.eta_min) * (1.0 + (PI * cur as f64 / len as f64).cos()) / 2.0
    }
    fn base_lr(&self) -> f64 {
        self.base_lr
    }
    step_counter!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_hits_eta_min_and_comes_back() {
        let s = CosineAnnealingLr::new(1.0, 10, 0.1).unwrap();
        assert_eq!(s.lr_at(0), 1.0);
        assert!((s.lr_at(10) - 0.1).abs() < 1e-15);
        assert!((s.lr_at(20) - 1.0).abs() < 1e-15);
        assert!((s.lr_at(5) - 0.55).abs() < 1e-15);
    }

    #[test]
    fn restarts_at_the_right_steps() {
        let s = CosineAnnealingWarmRestarts::new(1.0, 10, 2, 0.0).unwrap();
        assert_eq!(s.cycle_position(9), (9, 10));
        assert_eq!(s.cycle_position(10), (0, 20));
        assert_eq!(s.cycle_position(30), (0, 40));
        assert_eq!(s.cycle_position(70), (0, 80));
        let s = CosineAnnealingWarmRestarts::new(1.0, 7, 1, 0.0).unwrap();
        assert_eq!(s.cycle_position(15), (1, 7));
    }
}
