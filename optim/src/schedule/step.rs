//! Step-wise decays: StepLR, MultiStepLR, ExponentialLR.

use anneal_tensor::{Error, Result};

use super::{check_lr, step_counter, LrSchedule};

/// Decays the rate by `gamma` every `step_size` steps (`lr_scheduler.StepLR`):
/// `lr(t) = base · γ^⌊t / step_size⌋`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    base_lr: f64,
    step_size: usize,
    gamma: f64,
    t: usize,
}

impl StepLr {
    /// A schedule from `base_lr`; errors if `step_size` is 0 or a rate is invalid.
    pub fn new(base_lr: f64, step_size: usize, gamma: f64) -> Result<Self> {
        check_lr("StepLr::new", "base_lr", base_lr)?;
        check_lr("StepLr::new", "gamma", gamma)?;
        if step_size == 0 {
            return Err(Error::invalid(
                "StepLr::new",
                "step_size must be at least 1",
            ));
        }
        Ok(StepLr {
            base_lr,
            step_size,
            gamma,
            t: 0,
        })
    }
}

impl LrSchedule for StepLr {
    fn lr_at(&self, t: usize) -> f64 {
        self.base_lr * self.gamma.powi((t / self.step_size) as i32)
    }
    fn base_lr(&self) -> f64 {
        self.base_lr
    }
    step_counter!();
}

/// Decays the rate by `gamma` at each milestone (`lr_scheduler.MultiStepLR`):
/// `lr(t) = base · γ^(number of milestones ≤ t)`; a milestone listed twice
/// counts twice, as in PyTorch.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    base_lr: f64,
    milestones: Vec<usize>,
    gamma: f64,
    t: usize,
}

impl MultiStepLr {
    /// A schedule from `base_lr` with the given milestones (any order).
    pub fn new(base_lr: f64, milestones: &[usize], gamma: f64) -> Result<Self> {
        check_lr("MultiStepLr::new", "base_lr", base_lr)?;
        check_lr("MultiStepLr::new", "gamma", gamma)?;
        let mut milestones = milestones.to_vec();
        milestones.sort_unstable();
        Ok(MultiStepLr {
            base_lr,
            milestones,
            gamma,
            t: 0,
        })
    }
}

impl LrSchedule for MultiStepLr {
    fn lr_at(&self, t: usize) -> f64 {
        let passed = self.milestones.partition_point(|&m| m <= t);
        self.base_lr * self.gamma.powi(passed as i32)
    }
    fn base_lr(&self) -> f64 {
        self.base_lr
    }
    step_counter!();
}

/// Decays the rate by `gamma` every step (`lr_scheduler.ExponentialLR`):
/// `lr(t) = base · γᵗ`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialLr {
    base_lr: f64,
    gamma: f64,
    t: usize,
}

impl ExponentialLr {
    /// A schedule from `base_lr`.
    pub fn new(base_lr: f64, gamma: f64) -> Result<Self> {
        check_lr("ExponentialLr::new", "base_lr", base_lr)?;
        check_lr("ExponentialLr::new", "gamma", gamma)?;
        Ok(ExponentialLr {
            base_lr,
            gamma,
            t: 0,
        })
    }
}

impl LrSchedule for ExponentialLr {
    fn lr_at(&self, t: usize) -> f64 {
        self.base_lr * self.gamma.powf(t as f64)
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
    fn step_lr_halves_every_step_size() {
        let mut s = StepLr::new(1.0, 3, 0.5).unwrap();
        let lrs: Vec<f64> = (0..7)
            .map(|_| {
                let lr = s.lr();
                s.step();
                lr
            })
            .collect();
        assert_eq!(lrs, vec![1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]);
        assert!(StepLr::new(1.0, 0, 0.5).is_err());
    }

    #[test]
    fn repeated_milestones_count_twice() {
        let s = MultiStepLr::new(1.0, &[4, 2, 4], 0.1).unwrap();
        assert_eq!(s.lr_at(1), 1.0);
        assert_eq!(s.lr_at(2), 0.1);
        assert!((s.lr_at(4) - 1e-3).abs() < 1e-18);
    }
}
