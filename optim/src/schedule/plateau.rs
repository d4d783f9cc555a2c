//! Reduce the learning rate when a metric stops improving.

use anneal_tensor::{Element, Error, Result};

use super::check_lr;
use crate::{Mode, Optimizer};

/// How [`ReduceLrOnPlateau`] measures an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThresholdMode {
    /// Relative: better than `best·(1 − threshold)` (min) or
    /// `best·(1 + threshold)` (max). The default.
    #[default]
    Rel,
    /// Absolute: better than `best − threshold` (min) or `best + threshold` (max).
    Abs,
}

/// Settings of [`ReduceLrOnPlateau`], with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateauConfig {
    /// Whether lower (`Min`, the default) or higher (`Max`) is better.
    pub mode: Mode,
    /// Multiplier of the rate at each reduction (default 0.1; must be < 1).
    pub factor: f64,
    /// Non-improving steps tolerated before a reduction (default 10).
    pub patience: usize,
    /// Minimum improvement that counts (default 1e-4).
    pub threshold: f64,
    /// Relative or absolute threshold (default relative).
    pub threshold_mode: ThresholdMode,
    /// Steps to wait after a reduction before counting again (default 0).
    pub cooldown: usize,
    /// Lower bound of the rate (default 0).
    pub min_lr: f64,
    /// A reduction smaller than this is skipped (default 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        PlateauConfig {
            mode: Mode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// Reduces the learning rate when a monitored metric has stopped improving
/// (`lr_scheduler.ReduceLROnPlateau`). Call [`ReduceLrOnPlateau::step`] with
/// the metric after each epoch; it follows PyTorch's rule exactly:
///
/// ```text
/// if better(m, best): best ← m; bad ← 0   else: bad ← bad + 1
/// if cooldown_counter > 0: cooldown_counter ← cooldown_counter − 1; bad ← 0
/// if bad > patience:
///     new ← max(lr·factor, min_lr); if lr − new > eps: lr ← new
///     cooldown_counter ← cooldown; bad ← 0
/// ```
///
/// `best` starts at +∞ (min) or −∞ (max). A NaN metric is never an
/// improvement. It is not an [`LrSchedule`](super::LrSchedule): its rate
/// depends on the metrics, not on the step count.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    config: PlateauConfig,
    lr: f64,
    best: f64,
    num_bad: usize,
    cooldown_counter: usize,
    steps: usize,
}

impl ReduceLrOnPlateau {
    /// A scheduler starting at `base_lr`; errors if `factor >= 1` or a rate
    /// or threshold is invalid.
    pub fn new(base_lr: f64, config: PlateauConfig) -> Result<Self> {
        let op = "ReduceLrOnPlateau::new";
        check_lr(op, "base_lr", base_lr)?;
        check_lr(op, "min_lr", config.min_lr)?;
        check_lr(op, "eps", config.eps)?;
        check_lr(op, "threshold", config.threshold)?;
        if !(config.factor >= 0.0 && config.factor < 1.0) {
            return Err(Error::invalid(
                op,
                format!("factor {} must be in [0, 1)", config.factor),
            ));
        }
        Ok(ReduceLrOnPlateau {
            config,
            lr: base_lr,
            best: Self::worst(config.mode),
            num_bad: 0,
            cooldown_counter: 0,
            steps: 0,
        })
    }

    fn worst(mode: Mode) -> f64 {
        match mode {
            Mode::Min => f64::INFINITY,
            Mode::Max => f64::NEG_INFINITY,
        }
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, th) = (self.best, self.config.threshold);
        match (self.config.mode, self.config.threshold_mode) {
            (Mode::Min, ThresholdMode::Rel) => a < best * (1.0 - th),
            (Mode::Min, ThresholdMode::Abs) => a < best - th,
            (Mode::Max, ThresholdMode::Rel) => a > best * (th + 1.0),
            (Mode::Max, ThresholdMode::Abs) => a > best + th,
        }
    }

    /// Records one epoch's metric; returns true if the rate was reduced.
    pub fn step(&mut self, metric: f64) -> bool {
        self.steps += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad = 0;
        } else {
            self.num_bad += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad = 0;
        }
        let mut reduced = false;
        if self.num_bad > self.config.patience {
            let new_lr = (self.lr * self.config.factor).max(self.config.min_lr);
            if self.lr - new_lr > self.config.eps {
                self.lr = new_lr;
                reduced = true;
            }
            self.cooldown_counter = self.config.cooldown;
            self.num_bad = 0;
        }
        reduced
    }

    /// The current rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the optimiser's rate to [`ReduceLrOnPlateau::lr`].
    pub fn apply<T: Element, O: Optimizer<T> + ?Sized>(&self, opt: &mut O) {
        opt.set_learning_rate(self.lr);
    }

    /// The best metric so far (±∞ before the first step).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Consecutive steps without improvement.
    pub fn num_bad_epochs(&self) -> usize {
        self.num_bad
    }

    /// Whether a cooldown is running.
    pub fn in_cooldown(&self) -> bool {
        self.cooldown_counter > 0
    }

    /// Metrics recorded so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The settings.
    pub fn config(&self) -> &PlateauConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_after_patience_then_cools_down() {
        let mut s = ReduceLrOnPlateau::new(
            1.0,
            PlateauConfig {
                factor: 0.5,
                patience: 1,
                cooldown: 1,
                ..PlateauConfig::default()
            },
        )
        .unwrap();
        assert!(!s.step(1.0)); // best
        assert!(!s.step(1.0)); // bad 1
        assert!(s.step(1.0)); // bad 2 > 1: reduce, cooldown 1
        assert_eq!(s.lr(), 0.5);
        assert!(!s.step(1.0)); // cooldown: bad reset
        assert!(!s.step(1.0)); // bad 1
        assert!(s.step(1.0));
        assert_eq!(s.lr(), 0.25);
        assert!(ReduceLrOnPlateau::new(
            1.0,
            PlateauConfig {
                factor: 1.0,
                ..Default::default()
            }
        )
        .is_err());
    }
}
