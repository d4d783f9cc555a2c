//! RMSprop with smoothing constant, centering and momentum
//! (`torch.optim.RMSprop`).

use std::collections::BTreeMap;

use anneal_autograd::{Gradients, Param};
use anneal_tensor::{Element, Result};

use crate::optimizer::{
    c, check_non_negative, forward_optimizer_methods, hyper_bool, hyper_get, Core,
};
use crate::Optimizer;

const NEW_OP: &str = "RmsProp::new";
const LOAD_OP: &str = "RmsProp::load_state_dict";

/// Hyper-parameters of [`RmsProp`], with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate `γ` (default 1e-2).
    pub lr: f64,
    /// Smoothing constant `α` of the squared-gradient average (default 0.99).
    pub alpha: f64,
    /// Term `ε` added to the denominator, outside the square root (default 1e-8).
    pub eps: f64,
    /// L2 weight decay `λ`, added to the gradient as `λ·θ` (default 0).
    pub weight_decay: f64,
    /// Momentum factor `μ` (default 0).
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the raw second moment
    /// (default false).
    pub centered: bool,
    /// Maximise the objective instead of minimising it (default false).
    pub maximize: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

impl RmsPropConfig {
    /// The defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        RmsPropConfig {
            lr,
            ..Self::default()
        }
    }

    /// Checks every hyper-parameter as PyTorch's constructor does.
    pub fn validate(&self) -> Result<()> {
        check_non_negative(NEW_OP, "RMSprop learning rate", self.lr)?;
        check_non_negative(NEW_OP, "RMSprop eps", self.eps)?;
        check_non_negative(NEW_OP, "RMSprop momentum", self.momentum)?;
        check_non_negative(NEW_OP, "RMSprop weight_decay", self.weight_decay)?;
        check_non_negative(NEW_OP, "RMSprop alpha", self.alpha)
    }

    pub(crate) fn buffer_names(&self) -> Vec<&'static str> {
        let mut v = vec!["square_avg"];
        if self.momentum > 0.0 {
            v.push("momentum_buffer");
        }
        if self.centered {
            v.push("grad_avg");
        }
        v
    }

    pub(crate) fn to_hyper(self) -> BTreeMap<String, f64> {
        [
            ("lr", self.lr),
            ("alpha", self.alpha),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
            ("momentum", self.momentum),
            ("centered", self.centered as u8 as f64),
            ("maximize", self.maximize as u8 as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub(crate) fn from_hyper(m: &BTreeMap<String, f64>) -> Result<Self> {
        let n = "RMSprop";
        Ok(RmsPropConfig {
            lr: hyper_get(LOAD_OP, n, m, "lr")?,
            alpha: hyper_get(LOAD_OP, n, m, "alpha")?,
            eps: hyper_get(LOAD_OP, n, m, "eps")?,
            weight_decay: hyper_get(LOAD_OP, n, m, "weight_decay")?,
            momentum: hyper_get(LOAD_OP, n, m, "momentum")?,
            centered: hyper_bool(LOAD_OP, n, m, "centered")?,
            maximize: hyper_bool(LOAD_OP, n, m, "maximize")?,
        })
    }
}

/// RMSprop, exactly as `torch.optim.RMSprop`.
///
/// For each parameter `θ` with gradient `g`:
///
/// ```text
/// g ← −g                               if maximize
/// g ← g + λ·θ                          if λ ≠ 0
/// s ← α·s + (1 − α)·g²
/// if centered:  a ← α·a + (1 − α)·g;   d ← √(s − a²) + ε
/// else:                                d ← √s + ε
/// if μ > 0:     b ← μ·b + g/d;         θ ← θ − γ·b     (b starts at 0)
/// else:                                θ ← θ − γ·g/d
/// ```
///
/// State: `square_avg` (s), `momentum_buffer` (b) when `μ > 0`, `grad_avg`
/// (a) when centered. Hinton, Lecture 6e of "Neural Networks for Machine
/// Learning" (2012); centered form from Graves, "Generating Sequences With
/// Recurrent Neural Networks" (2013).
#[derive(Debug, Clone)]
pub struct RmsProp<T: Element = f32> {
    config: RmsPropConfig,
    core: Core<T>,
}

impl<T: Element> RmsProp<T> {
    /// A new optimiser; errors on an invalid hyper-parameter.
    pub fn new(config: RmsPropConfig) -> Result<Self> {
        config.validate()?;
        Ok(RmsProp {
            config,
            core: Core::new(
                "RMSprop",
                "RmsProp::step",
                LOAD_OP,
                config.lr,
                config.weight_decay,
            ),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }
}

fn rmsprop_kernel<T: Element>(
    p: &mut [T],
    g: &[T],
    bufs: &mut [&mut [T]],
    cfg: &RmsPropConfig,
    lr: f64,
    wd: f64,
) {
    let n = p.len();
    let g = &g[..n];
    let (alpha, one_minus_alpha): (T, T) = (c(cfg.alpha), c(1.0 - cfg.alpha));
    let (eps, mu, wd_t, neg_lr): (T, T, T, T) = (c(cfg.eps), c(cfg.momentum), c(wd), c(-lr));
    let (sq, rest) = bufs
        .split_first_mut()
        .expect("RMSprop has a square_avg buffer");
    let sq = &mut sq[..n];
    let (mut mom, mut gavg): (&mut [T], &mut [T]) = (&mut [], &mut []);
    let mut rest = rest.iter_mut();
    if cfg.momentum > 0.0 {
        mom = &mut rest.next().expect("momentum_buffer")[..n];
    }
    if cfg.centered {
        gavg = &mut rest.next().expect("grad_avg")[..n];
    }
    for i in 0..n {
        let mut d = if cfg.maximize { -g[i] } else { g[i] };
        if wd != 0.0 {
            d += wd_t * p[i];
        }
        sq[i] = sq[i] * alpha + (one_minus_alpha * d) * d;
        let avg = if cfg.centered {
            gavg[i] = gavg[i] * alpha + one_minus_alpha * d;
            (sq[i] - gavg[i] * gavg[i]).sqrt()
        } else {
            sq[i].sqrt()
        } + eps;
        if cfg.momentum > 0.0 {
            mom[i] = mom[i] * mu + d / avg;
            p[i] += neg_lr * mom[i];
        } else {
            p[i] += (neg_lr * d) / avg;
        }
    }
}

impl<T: Element> Optimizer<T> for RmsProp<T> {
    forward_optimizer_methods!(RmsPropConfig);

    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()> {
        let cfg = self.config;
        let nbufs = cfg.buffer_names().len();
        self.core.step(
            params,
            grads,
            |n| vec![vec![T::zero(); n]; nbufs],
            |h, _| {
                move |p: &mut [T], g: &[T], b: &mut [&mut [T]]| {
                    rmsprop_kernel(p, g, b, &cfg, h.lr, h.weight_decay)
                }
            },
        )
    }
}
