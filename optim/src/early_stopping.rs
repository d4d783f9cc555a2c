//! Early stopping on a monitored metric.

use anneal_tensor::{Error, Result};

/// Whether lower or higher values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Lower is better (losses). The default.
    #[default]
    Min,
    /// Higher is better (accuracies).
    Max,
}

/// What [`EarlyStopping::update`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The metric beat the best so far by more than `min_delta`.
    Improved,
    /// No improvement, but patience is not exhausted.
    Continue,
    /// Stop training: `patience` updates in a row without improvement, or a
    /// non-finite metric.
    Stop,
}

/// Stops training when a monitored metric has stopped improving, as Keras'
/// and PyTorch Lightning's `EarlyStopping` do.
///
/// An update improves when it beats the best value so far by more than
/// `min_delta` (`m < best − min_delta` in `Min` mode, `m > best + min_delta`
/// in `Max` mode); the first finite value always does. After `patience`
/// consecutive updates without improvement the decision is
/// [`Decision::Stop`] (with `patience = 0`, at the first one). As with
/// Lightning's default `check_finite=True`, a NaN or infinite metric stops
/// at once. Once stopped, every later update answers `Stop`.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    mode: Mode,
    best: Option<f64>,
    best_update: Option<usize>,
    wait: usize,
    updates: usize,
    stopped: bool,
}

impl EarlyStopping {
    /// Errors if `min_delta` is negative or not finite.
    pub fn new(patience: usize, min_delta: f64, mode: Mode) -> Result<Self> {
        if !(min_delta.is_finite() && min_delta >= 0.0) {
            return Err(Error::invalid(
                "EarlyStopping::new",
                format!("min_delta must be finite and >= 0, got {min_delta}"),
            ));
        }
        Ok(EarlyStopping {
            patience,
            min_delta,
            mode,
            best: None,
            best_update: None,
            wait: 0,
            updates: 0,
            stopped: false,
        })
    }

    /// Records one value of the metric and decides.
    pub fn update(&mut self, metric: f64) -> Decision {
        let index = self.updates;
        self.updates += 1;
        if self.stopped {
            return Decision::Stop;
        }
        if !metric.is_finite() {
            self.stopped = true;
            return Decision::Stop;
        }
        let improved = match (self.best, self.mode) {
            (None, _) => true,
            (Some(b), Mode::Min) => metric < b - self.min_delta,
            (Some(b), Mode::Max) => metric > b + self.min_delta,
        };
        if improved {
            self.best = Some(metric);
            self.best_update = Some(index);
            self.wait = 0;
            return Decision::Improved;
        }
        self.wait += 1;
        if self.wait >= self.patience {
            self.stopped = true;
            Decision::Stop
        } else {
            Decision::Continue
        }
    }

    /// The best value so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// The index (from 0) of the update that set the best value — the
    /// checkpoint to restore.
    pub fn best_update(&self) -> Option<usize> {
        self.best_update
    }

    /// Updates since the last improvement.
    pub fn wait_count(&self) -> usize {
        self.wait
    }

    /// Whether a [`Decision::Stop`] has been given.
    pub fn should_stop(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_without_improvement() {
        let mut es = EarlyStopping::new(2, 0.1, Mode::Min).unwrap();
        assert_eq!(es.update(1.0), Decision::Improved);
        assert_eq!(es.update(0.95), Decision::Continue); // within min_delta
        assert_eq!(es.update(0.85), Decision::Improved);
        assert_eq!(es.update(0.8), Decision::Continue);
        assert_eq!(es.update(0.9), Decision::Stop);
        assert_eq!(es.update(0.0), Decision::Stop);
        assert_eq!(es.best(), Some(0.85));
        assert_eq!(es.best_update(), Some(2));
    }

    #[test]
    fn max_mode_and_zero_patience() {
        let mut es = EarlyStopping::new(0, 0.0, Mode::Max).unwrap();
        assert_eq!(es.update(0.5), Decision::Improved);
        assert_eq!(es.update(0.6), Decision::Improved);
        assert_eq!(es.update(0.6), Decision::Stop);
    }

    #[test]
    fn non_finite_stops() {
        let mut es = EarlyStopping::new(5, 0.0, Mode::Min).unwrap();
        es.update(1.0);
        assert_eq!(es.update(f64::NAN), Decision::Stop);
        assert!(es.should_stop());
        assert!(EarlyStopping::new(1, -0.1, Mode::Min).is_err());
    }
}
