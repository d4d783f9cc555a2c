//! Adagrad with learning-rate decay and an initial accumulator
//! (`torch.optim.Adagrad`).

use std::collections::BTreeMap;

use anneal_autograd::{Gradients, Param};
use anneal_tensor::{Element, Result};

use crate::optimizer::{
    c, check_non_negative, forward_optimizer_methods, hyper_bool, hyper_get, Core,
};
use crate::Optimizer;

const NEW_OP: &str = "Adagrad::new";
const LOAD_OP: &str = "Adagrad::load_state_dict";

/// Hyper-parameters of [`Adagrad`], with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate `γ` (default 1e-2).
    pub lr: f64,
    /// Learning-rate decay `η` (default 0).
    pub lr_decay: f64,
    /// L2 weight decay `λ`, added to the gradient as `λ·θ` (default 0).
    pub weight_decay: f64,
    /// Starting value of the squared-gradient sum (default 0).
    pub initial_accumulator_value: f64,
    /// Term `ε` added to the denominator, outside the square root (default 1e-10).
    pub eps: f64,
    /// Maximise the objective instead of minimising it (default false).
    pub maximize: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

impl AdagradConfig {
    /// The defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        AdagradConfig {
            lr,
            ..Self::default()
        }
    }

    /// Checks every hyper-parameter as PyTorch's constructor does.
    pub fn validate(&self) -> Result<()> {
        check_non_negative(NEW_OP, "Adagrad learning rate", self.lr)?;
        check_non_negative(NEW_OP, "Adagrad lr_decay", self.lr_decay)?;
        check_non_negative(NEW_OP, "Adagrad weight_decay", self.weight_decay)?;
        check_non_negative(
            NEW_OP,
            "Adagrad initial_accumulator_value",
            self.initial_accumulator_value,
        )?;
        check_non_negative(NEW_OP, "Adagrad eps", self.eps)
    }

    pub(crate) fn buffer_names(&self) -> Vec<&'static str> {
        vec!["sum"]
    }

    pub(crate) fn to_hyper(self) -> BTreeMap<String, f64> {
        [
            ("lr", self.lr),
            ("lr_decay", self.lr_decay),
            ("weight_decay", self.weight_decay),
            ("initial_accumulator_value", self.initial_accumulator_value),
            ("eps", self.eps),
            ("maximize", self.maximize as u8 as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub(crate) fn from_hyper(m: &BTreeMap<String, f64>) -> Result<Self> {
        let n = "Adagrad";
        Ok(AdagradConfig {
            lr: hyper_get(LOAD_OP, n, m, "lr")?,
            lr_decay: hyper_get(LOAD_OP, n, m, "lr_decay")?,
            weight_decay: hyper_get(LOAD_OP, n, m, "weight_decay")?,
            initial_accumulator_value: hyper_get(LOAD_OP, n, m, "initial_accumulator_value")?,
            eps: hyper_get(LOAD_OP, n, m, "eps")?,
            maximize: hyper_bool(LOAD_OP, n, m, "maximize")?,
        })
    }
}

/// Adagrad, exactly as `torch.optim.Adagrad`.
///
/// For each parameter `θ` with gradient `g` at its step `t` (per parameter,
/// from 1):
///
/// ```text
/// g ← −g                        if maximize
/// g ← g + λ·θ                   if λ ≠ 0
/// γ̃ ← γ / (1 + (t − 1)·η)
/// s ← s + g²                    (s starts at initial_accumulator_value)
/// θ ← θ − γ̃·g / (√s + ε)
/// ```
///
/// State: `sum` (s). Duchi, Hazan & Singer, "Adaptive Subgradient Methods for
/// Online Learning and Stochastic Optimization" (2011).
#[derive(Debug, Clone)]
pub struct Adagrad<T: Element = f32> {
    config: AdagradConfig,
    core: Core<T>,
}

impl<T: Element> Adagrad<T> {
    /// A new optimiser; errors on an invalid hyper-parameter.
    pub fn new(config: AdagradConfig) -> Result<Self> {
        config.validate()?;
        Ok(Adagrad {
            config,
            core: Core::new(
                "Adagrad",
                "Adagrad::step",
                LOAD_OP,
                config.lr,
                config.weight_decay,
            ),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdagradConfig {
        &self.config
    }
}

fn adagrad_kernel<T: Element>(
    p: &mut [T],
    g: &[T],
    sum: &mut [T],
    maximize: bool,
    wd: f64,
    clr: f64,
    eps: f64,
) {
    let n = p.len();
    let (g, sum) = (&g[..n], &mut sum[..n]);
    let (wd_t, neg_clr, eps): (T, T, T) = (c(wd), c(-clr), c(eps));
    for i in 0..n {
        let mut d = if maximize { -g[i] } else { g[i] };
        if wd != 0.0 {
            d += wd_t * p[i];
        }
        sum[i] += d * d;
        let std = sum[i].sqrt() + eps;
        p[i] += (neg_clr * d) / std;
    }
}

impl<T: Element> Optimizer<T> for Adagrad<T> {
    forward_optimizer_methods!(AdagradConfig);

    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()> {
        let cfg = self.config;
        let init: T = c(cfg.initial_accumulator_value);
        self.core.step(
            params,
            grads,
            |n| vec![vec![init; n]],
            |h, t| {
                let clr = h.lr / (1.0 + (t as f64 - 1.0) * cfg.lr_decay);
                move |p: &mut [T], g: &[T], b: &mut [&mut [T]]| {
                    adagrad_kernel(p, g, b[0], cfg.maximize, h.weight_decay, clr, cfg.eps)
                }
            },
        )
    }
}
