//! Lion, the sign-momentum optimiser found by program search (Chen et al.
//! 2023). PyTorch has no built-in Lion; this follows the paper's Algorithm 2
//! and lucidrains' `lion-pytorch`.

use std::collections::BTreeMap;

use anneal_autograd::{Gradients, Param};
use anneal_tensor::{Element, Result};

use crate::optimizer::{
    c, check_non_negative, check_unit, forward_optimizer_methods, hyper_bool, hyper_get, Core,
};
use crate::Optimizer;

const NEW_OP: &str = "Lion::new";
const LOAD_OP: &str = "Lion::load_state_dict";

/// Hyper-parameters of [`Lion`], with the paper's (and `lion-pytorch`'s) defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionConfig {
    /// Learning rate `γ` (default 1e-4; the paper advises 3–10× smaller than AdamW's).
    pub lr: f64,
    /// `(β₁, β₂)`: interpolation for the update, decay of the momentum
    /// (default (0.9, 0.99)).
    pub betas: (f64, f64),
    /// Decoupled weight decay `λ`: `θ ← θ·(1 − γλ)` each step (default 0).
    pub weight_decay: f64,
    /// Maximise the objective instead of minimising it (default false; an
    /// anneal extension: the gradient is negated first).
    pub maximize: bool,
}

impl Default for LionConfig {
    fn default() -> Self {
        LionConfig {
            lr: 1e-4,
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

impl LionConfig {
    /// The defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        LionConfig {
            lr,
            ..Self::default()
        }
    }

    /// Checks every hyper-parameter.
    pub fn validate(&self) -> Result<()> {
        check_non_negative(NEW_OP, "Lion learning rate", self.lr)?;
        check_unit(NEW_OP, "Lion beta1", self.betas.0, true)?;
        check_unit(NEW_OP, "Lion beta2", self.betas.1, true)?;
        check_non_negative(NEW_OP, "Lion weight_decay", self.weight_decay)
    }

    pub(crate) fn buffer_names(&self) -> Vec<&'static str> {
        vec!["exp_avg"]
    }

    pub(crate) fn to_hyper(self) -> BTreeMap<String, f64> {
        [
            ("lr", self.lr),
            ("beta1", self.betas.0),
            ("beta2", self.betas.1),
            ("weight_decay", self.weight_decay),
            ("maximize", self.maximize as u8 as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub(crate) fn from_hyper(m: &BTreeMap<String, f64>) -> Result<Self> {
        let n = "Lion";
        Ok(LionConfig {
            lr: hyper_get(LOAD_OP, n, m, "lr")?,
            betas: (
                hyper_get(LOAD_OP, n, m, "beta1")?,
                hyper_get(LOAD_OP, n, m, "beta2")?,
            ),
            weight_decay: hyper_get(LOAD_OP, n, m, "weight_decay")?,
            maximize: hyper_bool(LOAD_OP, n, m, "maximize")?,
        })
    }
}

/// Lion ("EvoLved Sign Momentum").
///
/// For each parameter `θ` with gradient `g`:
///
/// ```text
/// g ← −g                                  if maximize
/// θ ← θ·(1 − γλ)
/// θ ← θ − γ·sign(β₁·m + (1 − β₁)·g)       (sign(0) = 0)
/// m ← β₂·m + (1 − β₂)·g
/// ```
///
/// State: `exp_avg` (m). Chen et al., "Symbolic Discovery of Optimization
/// Algorithms" (2023), Algorithm 2.
#[derive(Debug, Clone)]
pub struct Lion<T: Element = f32> {
    config: LionConfig,
    core: Core<T>,
}

impl<T: Element> Lion<T> {
    /// A new optimiser; errors on an invalid hyper-parameter.
    pub fn new(config: LionConfig) -> Result<Self> {
        config.validate()?;
        Ok(Lion {
            config,
            core: Core::new(
                "Lion",
                "Lion::step",
                LOAD_OP,
                config.lr,
                config.weight_decay,
            ),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LionConfig {
        &self.config
    }
}

/// `torch.sign`: −1, 0 or 1 (0 for ±0 and NaN).
#[inline(always)]
fn sign<T: Element>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else if x < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

fn lion_kernel<T: Element>(p: &mut [T], g: &[T], m: &mut [T], cfg: &LionConfig, lr: f64, wd: f64) {
    let n = p.len();
    let (g, m) = (&g[..n], &mut m[..n]);
    let (b1, c1): (T, T) = (c(cfg.betas.0), c(1.0 - cfg.betas.0));
    let (b2, c2): (T, T) = (c(cfg.betas.1), c(1.0 - cfg.betas.1));
    let (decay, neg_lr): (T, T) = (c(1.0 - lr * wd), c(-lr));
    for i in 0..n {
        let gi = if cfg.maximize { -g[i] } else { g[i] };
        let pi = p[i] * decay;
        let update = sign(m[i] * b1 + c1 * gi);
        p[i] = pi + neg_lr * update;
        m[i] = m[i] * b2 + c2 * gi;
    }
}

impl<T: Element> Optimizer<T> for Lion<T> {
    forward_optimizer_methods!(LionConfig);

    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()> {
        let cfg = self.config;
        self.core.step(
            params,
            grads,
            |n| vec![vec![T::zero(); n]],
            |h, _| {
                move |p: &mut [T], g: &[T], b: &mut [&mut [T]]| {
                    lion_kernel(p, g, b[0], &cfg, h.lr, h.weight_decay)
                }
            },
        )
    }
}
