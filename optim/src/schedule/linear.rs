//! Linear ramp of the learning rate (warm-up).

use anneal_tensor::{Error, Result};

use super::{check_lr, step_counter, LrSchedule};

/// Scales the rate linearly from `start_factor` to `end_factor` over
/// `total_iters` steps, then holds it (`lr_scheduler.LinearLR`); the usual
/// linear warm-up:
///
/// ```text
/// lr(t) = base · (s + (e − s)·min(t, T) / T)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLr {
    base_lr: f64,
    start_factor: f64,
    end_factor: f64,
    total_iters: usize,
    t: usize,
}

impl LinearLr {
    /// PyTorch's defaults: `start_factor` 1/3, `end_factor` 1, `total_iters` 5.
    pub fn with_defaults(base_lr: f64) -> Result<Self> {
        Self::new(base_lr, 1.0 / 3.0, 1.0, 5)
    }

    /// A ramp from `base_lr·start_factor` to `base_lr·end_factor`. As in
    /// PyTorch, `start_factor` must be in (0, 1] and `end_factor` in [0, 1].
    pub fn new(
        base_lr: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: usize,
    ) -> Result<Self> {
        let op = "LinearLr::new";
        check_lr(op, "base_lr", base_lr)?;
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(Error::invalid(
                op,
                format!("start_factor {start_factor} must be in (0, 1]"),
            ));
        }
        if !(0.0..=1.0).contains(&end_factor) {
            return Err(Error::invalid(
                op,
                format!("end_factor {end_factor} must be in [0, 1]"),
            ));
        }
        if total_iters == 0 {
            return Err(Error::invalid(op, "total_iters must be at least 1"));
        }
        Ok(LinearLr {
            base_lr,
            start_factor,
            end_factor,
            total_iters,
            t: 0,
        })
    }
}

impl LrSchedule for LinearLr {
    fn lr_at(&self, t: usize) -> f64 {
        let done = t.min(self.total_iters) as f64;
        self.base_lr
            * (self.start_factor
                + (self.end_factor - self.start_factor) * done / self.total_iters as f64)
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
    fn ramps_then_holds() {
        let s = LinearLr::new(1.0, 0.5, 1.0, 4).unwrap();
        assert_eq!(s.lr_at(0), 0.5);
        assert_eq!(s.lr_at(2), 0.75);
        assert_eq!(s.lr_at(4), 1.0);
        assert_eq!(s.lr_at(100), 1.0);
        assert!(LinearLr::new(1.0, 0.0, 1.0, 4).is_err());
        assert!(LinearLr::new(1.0, 0.5, 1.5, 4).is_err());
    }
}
