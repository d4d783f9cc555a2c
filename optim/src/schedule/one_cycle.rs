//! The one-cycle policy.

use std::f64::consts::PI;

use anneal_tensor::{Error, Result};

use super::{check_lr, step_counter, LrSchedule};

/// How a phase of [`OneCycleLr`] interpolates between its end points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnnealStrategy {
    /// Cosine: `end + (start − end)/2 · (cos(π·pct) + 1)` (the default).
    #[default]
    Cos,
    /// Linear: `(end − start)·pct + start`.
    Linear,
}

/// Settings of [`OneCycleLr`], with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycleConfig {
    /// The peak rate.
    pub max_lr: f64,
    /// Steps in the cycle.
    pub total_steps: usize,
    /// Fraction of the cycle spent increasing the rate (default 0.3).
    pub pct_start: f64,
    /// Interpolation (default cosine).
    pub anneal_strategy: AnnealStrategy,
    /// `initial_lr = max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor` (default 1e4).
    pub final_div_factor: f64,
    /// Three phases (up, back down to `initial_lr`, then to `min_lr`)
    /// instead of two (default false).
    pub three_phase: bool,
}

impl OneCycleConfig {
    /// PyTorch's defaults for a cycle of `total_steps` peaking at `max_lr`.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        OneCycleConfig {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal_strategy: AnnealStrategy::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Phase {
    end_step: f64,
    start_lr: f64,
    end_lr: f64,
}

/// The 1cycle policy (`lr_scheduler.OneCycleLR`, learning rate only): from
/// `initial_lr = max_lr/div_factor` up to `max_lr` over the first
/// `pct_start` of the steps, then down to `min_lr = initial_lr/final_div_factor`
/// at the last step. It sets the rate outright: the optimiser's own rate is
/// ignored, as in PyTorch. Phase `k` runs from the previous phase's end step
/// to its own (`pct_start·total − 1`, then `total − 1`; with three phases
/// `pct_start·total − 1`, `2·pct_start·total − 2`, `total − 1`).
///
/// Differences from PyTorch: momentum cycling (`cycle_momentum`) is not
/// done, and past the last step the rate stays at `min_lr` where PyTorch
/// raises an error. Smith & Topin, "Super-Convergence" (2018).
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycleLr {
    config: OneCycleConfig,
    initial_lr: f64,
    phases: Vec<Phase>,
    t: usize,
}

impl OneCycleLr {
    /// A cycle; errors on `total_steps = 0`, `pct_start` outside [0, 1] or
    /// non-positive divisors.
    pub fn new(config: OneCycleConfig) -> Result<Self> {
        let op = "OneCycleLr::new";
        check_lr(op, "max_lr", config.max_lr)?;
        if config.total_steps == 0 {
            return Err(Error::invalid(op, "total_steps must be at least 1"));
        }
        if !(0.0..=1.0).contains(&config.pct_start) {
            return Err(Error::invalid(
                op,
                format!("pct_start {} must be in [0, 1]", config.pct_start),
            ));
        }
        for (what, x) in [
            ("div_factor", config.div_factor),
            ("final_div_factor", config.final_div_factor),
        ] {
            if !(x.is_finite() && x > 0.0) {
                return Err(Error::invalid(op, format!("{what} {x} must be > 0")));
            }
        }
        let initial_lr = config.max_lr / config.div_factor;
        let min_lr = initial_lr / config.final_div_factor;
        let total = config.total_steps as f64;
        let phases = if config.three_phase {
            vec![
                Phase {
                    end_step: config.pct_start * total - 1.0,
                    start_lr: initial_lr,
                    end_lr: config.max_lr,
                },
                Phase {
                    end_step: 2.0 * config.pct_start * total - 2.0,
                    start_lr: config.max_lr,
                    end_lr: initial_lr,
                },
                Phase {
                    end_step: total - 1.0,
                    start_lr: initial_lr,
                    end_lr: min_lr,
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: config.pct_start * total - 1.0,
                    start_lr: initial_lr,
                    end_lr: config.max_lr,
                },
                Phase {
                    end_step: total - 1.0,
                    start_lr: config.max_lr,
                    end_lr: min_lr,
                },
            ]
        };
        Ok(OneCycleLr {
            config,
            initial_lr,
            phases,
            t: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &OneCycleConfig {
        &self.config
    }
}

impl LrSchedule for OneCycleLr {
    fn lr_at(&self, t: usize) -> f64 {
        let step = t.min(self.config.total_steps - 1) as f64;
        let mut start_step = 0.0;
        let last = self.phases.len() - 1;
        for (i, ph) in self.phases.iter().enumerate() {
            if step <= ph.end_step || i == last {
                // A phase of no steps (e.g. `pct_start · total_steps = 1`,
                // where PyTorch divides by zero) is at its end rate.
                let span = ph.end_step - start_step;
                let pct = if span == 0.0 {
                    1.0
                } else {
                    (step - start_step) / span
                };
                return match self.config.anneal_strategy {
                    AnnealStrategy::Cos => {
                        let cos_out = (PI * pct).cos() + 1.0;
                        ph.end_lr + (ph.start_lr - ph.end_lr) / 2.0 * cos_out
                    }
                    AnnealStrategy::Linear => (ph.end_lr - ph.start_lr) * pct + ph.start_lr,
                };
            }
            start_step = ph.end_step;
        }
        unreachable!("the last phase always matches")
    }
    fn base_lr(&self) -> f64 {
        self.initial_lr
    }
    step_counter!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_end_points() {
        let s = OneCycleLr::new(OneCycleConfig::new(1.0, 100)).unwrap();
        // PyTorch's value too: 1 + (0.04 − 1)/2·2 rounds to 0.040000000000000036.
        assert_eq!(s.lr_at(0), 0.040000000000000036);
        assert_eq!(s.lr_at(29), 1.0);
        assert!((s.lr_at(99) - 0.04 / 1e4).abs() < 1e-18);
        assert_eq!(s.lr_at(1000), s.lr_at(99));
        let mut c = OneCycleConfig::new(1.0, 100);
        c.three_phase = true;
        let s = OneCycleLr::new(c).unwrap();
        assert_eq!(s.lr_at(29), 1.0);
        assert!((s.lr_at(58) - 0.04).abs() < 1e-15);
    }
}
