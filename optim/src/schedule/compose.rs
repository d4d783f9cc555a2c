//! Composition of schedules: one after another, or multiplied together.

use anneal_tensor::{Error, Result};

use super::{step_counter, LrSchedule};

/// A boxed schedule, as the compositions hold them.
pub type BoxedSchedule = Box<dyn LrSchedule + Send + Sync>;

/// Runs schedules one after another, switching at the milestones
/// (`lr_scheduler.SequentialLR`, PyTorch 1.13 semantics): before the first
/// milestone `m₁` the first schedule runs at step `t`; from `mₖ` on, schedule
/// `k` runs at step `t − mₖ`, so it restarts from its own step 0 (a cosine
/// after a warm-up restarts at its base rate).
pub struct SequentialLr {
    schedules: Vec<BoxedSchedule>,
    milestones: Vec<usize>,
    t: usize,
}

impl std::fmt::Debug for SequentialLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequentialLr")
            .field("schedules", &self.schedules.len())
            .field("milestones", &self.milestones)
            .field("t", &self.t)
            .finish()
    }
}

impl SequentialLr {
    /// `schedules.len() − 1` increasing milestones are needed.
    pub fn new(schedules: Vec<BoxedSchedule>, milestones: &[usize]) -> Result<Self> {
        let op = "SequentialLr::new";
        if schedules.is_empty() {
            return Err(Error::invalid(op, "at least one schedule is needed"));
        }
        if milestones.len() + 1 != schedules.len() {
            return Err(Error::invalid(
                op,
                format!(
                    "{} schedules need {} milestones, got {}",
                    schedules.len(),
                    schedules.len() - 1,
                    milestones.len()
                ),
            ));
        }
        if milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::invalid(
                op,
                format!("milestones {milestones:?} must be non-decreasing"),
            ));
        }
        Ok(SequentialLr {
            schedules,
            milestones: milestones.to_vec(),
            t: 0,
        })
    }
}

impl LrSchedule for SequentialLr {
    fn lr_at(&self, t: usize) -> f64 {
        let k = self.milestones.partition_point(|&m| m <= t);
        let local = if k == 0 {
            t
        } else {
            t - self.milestones[k - 1]
        };
        self.schedules[k].lr_at(local)
    }
    fn base_lr(&self) -> f64 {
        self.schedules[0].base_lr()
    }
    step_counter!();
}

/// Multiplies schedules together (`lr_scheduler.ChainedScheduler`): every
/// schedule steps every step and contributes its factor,
///
/// ```text
/// lr(t) = base₀ · Π_k lr_k(t) / base_k
/// ```
///
/// which is PyTorch's value whenever each schedule is a factor of its base
/// rate (StepLR, MultiStepLR, ExponentialLR, LinearLR, cosine with
/// `eta_min = 0`); PyTorch's recursive forms of schedules with an absolute
/// floor interact in ways this product does not reproduce.
pub struct ChainedLr {
    schedules: Vec<BoxedSchedule>,
    t: usize,
}

impl std::fmt::Debug for ChainedLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainedLr")
            .field("schedules", &self.schedules.len())
            .field("t", &self.t)
            .finish()
    }
}

impl ChainedLr {
    /// Errors if `schedules` is empty or one has a base rate of 0.
    pub fn new(schedules: Vec<BoxedSchedule>) -> Result<Self> {
        let op = "ChainedLr::new";
        if schedules.is_empty() {
            return Err(Error::invalid(op, "at least one schedule is needed"));
        }
        if let Some(k) = schedules.iter().position(|s| s.base_lr() <= 0.0) {
            return Err(Error::invalid(
                op,
                format!("schedule {k} has base rate 0: its factor is undefined"),
            ));
        }
        Ok(ChainedLr { schedules, t: 0 })
    }
}

impl LrSchedule for ChainedLr {
    fn lr_at(&self, t: usize) -> f64 {
        self.schedules
            .iter()
            .fold(self.base_lr(), |lr, s| lr * (s.lr_at(t) / s.base_lr()))
    }
    fn base_lr(&self) -> f64 {
        self.schedules[0].base_lr()
    }
    step_counter!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExponentialLr, LinearLr, StepLr};

    #[test]
    fn sequential_restarts_the_next_schedule() {
        let s = SequentialLr::new(
            vec![
                Box::new(LinearLr::new(1.0, 0.5, 1.0, 10).unwrap()),
                Box::new(StepLr::new(1.0, 2, 0.5).unwrap()),
            ],
            &[3],
        )
        .unwrap();
        assert_eq!(s.lr_at(2), 0.6);
        assert_eq!(s.lr_at(3), 1.0);
        assert_eq!(s.lr_at(5), 0.5);
        assert!(
            SequentialLr::new(vec![Box::new(StepLr::new(1.0, 2, 0.5).unwrap())], &[3]).is_err()
        );
    }

    #[test]
    fn chained_multiplies_factors() {
        let s = ChainedLr::new(vec![
            Box::new(StepLr::new(2.0, 2, 0.5).unwrap()),
            Box::new(ExponentialLr::new(2.0, 0.5).unwrap()),
        ])
        .unwrap();
        assert_eq!(s.lr_at(0), 2.0);
        assert_eq!(s.lr_at(2), 2.0 * 0.5 * 0.25);
    }
}
