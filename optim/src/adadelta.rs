//! Adadelta (`torch.optim.Adadelta`).

use std::collections::BTreeMap;

use anneal_autograd::{Gradients, Param};
use anneal_tensor::{Element, Result};

use crate::optimizer::{
    c, check_non_negative, check_unit, forward_optimizer_methods, hyper_bool, hyper_get, Core,
};
use crate::Optimizer;

const NEW_OP: &str = "Adadelta::new";
const LOAD_OP: &str = "Adadelta::load_state_dict";

/// Hyper-parameters of [`Adadelta`], with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdadeltaConfig {
    /// Learning rate `γ` scaling the delta (default 1.0).
    pub lr: f64,
    /// Decay `ρ` of both running averages (default 0.9).
    pub rho: f64,
    /// Term `ε` inside both square roots (default 1e-6).
    pub eps: f64,
    /// L2 weight decay `λ`, added to the gradient as `λ·θ` (default 0).
    pub weight_decay: f64,
    /// Maximise the objective instead of minimising it (default false).
    pub maximize: bool,
}

impl Default for AdadeltaConfig {
    fn default() -> Self {
        AdadeltaConfig {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

impl AdadeltaConfig {
    /// The defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        AdadeltaConfig {
            lr,
            ..Self::default()
        }
    }

    /// Checks every hyper-parameter as PyTorch's constructor does.
    pub fn validate(&self) -> Result<()> {
        check_non_negative(NEW_OP, "Adadelta learning rate", self.lr)?;
        check_unit(NEW_OP, "Adadelta rho", self.rho, true)?;
        check_non_negative(NEW_OP, "Adadelta eps", self.eps)?;
        check_non_negative(NEW_OP, "Adadelta weight_decay", self.weight_decay)
    }

    pub(crate) fn buffer_names(&self) -> Vec<&'static str> {
        vec!["square_avg", "acc_delta"]
    }

    pub(crate) fn to_hyper(self) -> BTreeMap<String, f64> {
        [
            ("lr", self.lr),
            ("rho", self.rho),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
            ("maximize", self.maximize as u8 as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub(crate) fn from_hyper(m: &BTreeMap<String, f64>) -> Result<Self> {
        let n = "Adadelta";
        Ok(AdadeltaConfig {
            lr: hyper_get(LOAD_OP, n, m, "lr")?,
            rho: hyper_get(LOAD_OP, n, m, "rho")?,
            eps: hyper_get(LOAD_OP, n, m, "eps")?,
            weight_decay: hyper_get(LOAD_OP, n, m, "weight_decay")?,
            maximize: hyper_bool(LOAD_OP, n, m, "maximize")?,
        })
    }
}

/// Adadelta, exactly as `torch.optim.Adadelta`.
///
/// For each parameter `θ` with gradient `g`:
///
/// ```text
/// g ← −g                                  if maximize
/// g ← g + λ·θ                             if λ ≠ 0
/// s ← ρ·s + (1 − ρ)·g²
/// Δ ← √(u + ε) / √(s + ε) · g
/// u ← ρ·u + (1 − ρ)·Δ²                    (with Δ before scaling by γ)
/// θ ← θ − γ·Δ
/// ```
///
/// State: `square_avg` (s), `acc_delta` (u). Zeiler, "ADADELTA: An Adaptive
/// Learning Rate Method" (2012).
#[derive(Debug, Clone)]
pub struct Adadelta<T: Element = f32> {
    config: AdadeltaConfig,
    core: Core<T>,
}

impl<T: Element> Adadelta<T> {
    /// A new optimiser; errors on an invalid hyper-parameter.
    pub fn new(config: AdadeltaConfig) -> Result<Self> {
        config.validate()?;
        Ok(Adadelta {
            config,
            core: Core::new(
                "Adadelta",
                "Adadelta::step",
                LOAD_OP,
                config.lr,
                config.weight_decay,
            ),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdadeltaConfig {
        &self.config
    }
}

fn adadelta_kernel<T: Element>(
    p: &mut [T],
    g: &[T],
    bufs: &mut [&mut [T]],
    cfg: &AdadeltaConfig,
    lr: f64,
    wd: f64,
) {
    let n = p.len();
    let g = &g[..n];
    let [sq, acc] = bufs else {
        unreachable!("Adadelta has two buffers")
    };
    let (sq, acc) = (&mut sq[..n], &mut acc[..n]);
    let (rho, one_minus_rho, eps): (T, T, T) = (c(cfg.rho), c(1.0 - cfg.rho), c(cfg.eps));
    let (wd_t, neg_lr): (T, T) = (c(wd), c(-lr));
    for i in 0..n {
        let mut d = if cfg.maximize { -g[i] } else { g[i] };
        if wd != 0.0 {
            d += wd_t * p[i];
        }
        sq[i] = sq[i] * rho + (one_minus_rho * d) * d;
        let std = (sq[i] + eps).sqrt();
        let delta = ((acc[i] + eps).sqrt() / std) * d;
        acc[i] = acc[i] * rho + (one_minus_rho * delta) * delta;
        p[i] += neg_lr * delta;
    }
}

impl<T: Element> Optimizer<T> for Adadelta<T> {
    forward_optimizer_methods!(AdadeltaConfig);

    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()> {
        let cfg = self.config;
        self.core.step(
            params,
            grads,
            |n| vec![vec![T::zero(); n]; 2],
            |h, _| {
                move |p: &mut [T], g: &[T], b: &mut [&mut [T]]| {
                    adadelta_kernel(p, g, b, &cfg, h.lr, h.weight_decay)
                }
            },
        )
    }
}
