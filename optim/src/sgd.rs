//! Stochastic gradient descent with momentum, dampening, Nesterov momentum,
//! weight decay and maximisation (`torch.optim.SGD`).

use std::collections::BTreeMap;

use anneal_autograd::{Gradients, Param};
use anneal_tensor::{Element, Error, Result};

use crate::optimizer::{
    c, check_non_negative, forward_optimizer_methods, hyper_bool, hyper_get, Core,
};
use crate::Optimizer;

const NEW_OP: &str = "Sgd::new";
const LOAD_OP: &str = "Sgd::load_state_dict";

/// Hyper-parameters of [`Sgd`], with PyTorch's defaults.
///
/// PyTorch 1.13 has no default learning rate for SGD (`lr` is required);
/// PyTorch ≥ 2.2 defaults it to 1e-3, as here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate `γ` (default 1e-3).
    pub lr: f64,
    /// Momentum factor `μ` (default 0).
    pub momentum: f64,
    /// Dampening `τ` of the momentum (default 0).
    pub dampening: f64,
    /// L2 weight decay `λ`, added to the gradient as `λ·θ` (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false; needs `momentum > 0`, `dampening = 0`).
    pub nesterov: bool,
    /// Maximise the objective instead of minimising it (default false).
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

impl SgdConfig {
    /// The defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            ..Self::default()
        }
    }

    /// Checks every hyper-parameter as PyTorch's constructor does.
    pub fn validate(&self) -> Result<()> {
        check_non_negative(NEW_OP, "SGD learning rate", self.lr)?;
        check_non_negative(NEW_OP, "SGD momentum", self.momentum)?;
        check_non_negative(NEW_OP, "SGD dampening", self.dampening)?;
        check_non_negative(NEW_OP, "SGD weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid(
                NEW_OP,
                format!(
                    "SGD: Nesterov momentum requires momentum > 0 and dampening = 0 (got momentum {}, dampening {})",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn buffer_names(&self) -> Vec<&'static str> {
        if self.momentum != 0.0 {
            vec!["momentum_buffer"]
        } else {
            Vec::new()
        }
    }

    pub(crate) fn to_hyper(self) -> BTreeMap<String, f64> {
        [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("dampening", self.dampening),
            ("weight_decay", self.weight_decay),
            ("nesterov", self.nesterov as u8 as f64),
            ("maximize", self.maximize as u8 as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub(crate) fn from_hyper(m: &BTreeMap<String, f64>) -> Result<Self> {
        let n = "SGD";
        Ok(SgdConfig {
            lr: hyper_get(LOAD_OP, n, m, "lr")?,
            momentum: hyper_get(LOAD_OP, n, m, "momentum")?,
            dampening: hyper_get(LOAD_OP, n, m, "dampening")?,
            weight_decay: hyper_get(LOAD_OP, n, m, "weight_decay")?,
            nesterov: hyper_bool(LOAD_OP, n, m, "nesterov")?,
            maximize: hyper_bool(LOAD_OP, n, m, "maximize")?,
        })
    }
}

/// Stochastic gradient descent, exactly as `torch.optim.SGD`.
///
/// For each parameter `θ` with gradient `g` at its step `t`:
///
/// ```text
/// g ← −g                         if maximize
/// g ← g + λ·θ                    if λ ≠ 0
/// if μ ≠ 0:
///     b ← g                      at t = 1 (no dampening on the first step)
///     b ← μ·b + (1 − τ)·g        at t > 1
///     g ← g + μ·b                if nesterov, else g ← b
/// θ ← θ − γ·g
/// ```
///
/// State: `momentum_buffer` when `μ ≠ 0`.
/// Sutskever et al., "On the importance of initialization and momentum in
/// deep learning" (2013).
#[derive(Debug, Clone)]
pub struct Sgd<T: Element = f32> {
    config: SgdConfig,
    core: Core<T>,
}

impl<T: Element> Sgd<T> {
    /// A new optimiser; errors on an invalid hyper-parameter.
    pub fn new(config: SgdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sgd {
            config,
            core: Core::new("SGD", "Sgd::step", LOAD_OP, config.lr, config.weight_decay),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

fn sgd_kernel<T: Element>(
    p: &mut [T],
    g: &[T],
    bufs: &mut [&mut [T]],
    cfg: &SgdConfig,
    lr: f64,
    wd: f64,
    first: bool,
) {
    let n = p.len();
    let g = &g[..n];
    let neg_lr: T = c(-lr);
    let wd_t: T = c(wd);
    let mu: T = c(cfg.momentum);
    let one_minus_damp: T = c(1.0 - cfg.dampening);
    let grad = |i: usize, p: T| {
        let mut d = if cfg.maximize { -g[i] } else { g[i] };
        if wd != 0.0 {
            d += wd_t * p;
        }
        d
    };
    if cfg.momentum == 0.0 {
        for (i, p) in p.iter_mut().enumerate() {
            *p += neg_lr * grad(i, *p);
        }
        return;
    }
    let b = &mut bufs[0][..n];
    for i in 0..n {
        let d = grad(i, p[i]);
        b[i] = if first {
            d
        } else {
            b[i] * mu + one_minus_damp * d
        };
        let d = if cfg.nesterov { d + mu * b[i] } else { b[i] };
        p[i] += neg_lr * d;
    }
}

impl<T: Element> Optimizer<T> for Sgd<T> {
    forward_optimizer_methods!(SgdConfig);

    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()> {
        let cfg = self.config;
        let nbufs = cfg.buffer_names().len();
        self.core.step(
            params,
            grads,
            |n| vec![vec![T::zero(); n]; nbufs],
            |h, t| {
                let first = t == 1;
                move |p: &mut [T], g: &[T], b: &mut [&mut [T]]| {
                    sgd_kernel(p, g, b, &cfg, h.lr, h.weight_decay, first)
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anneal_tensor::Tensor;

    fn one(p: f64, g: f64) -> (Param<f64>, Gradients<f64>) {
        let param = Param::new(Tensor::from_vec(vec![p], &[1]).unwrap());
        let mut grads = Gradients::new();
        grads.insert(param.id(), Tensor::from_vec(vec![g], &[1]).unwrap());
        (param, grads)
    }

    #[test]
    fn first_momentum_step_is_undampened() {
        let mut opt = Sgd::<f64>::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.5,
            ..SgdConfig::default()
        })
        .unwrap();
        let (mut p, grads) = one(1.0, 2.0);
        opt.step(&mut [&mut p], &grads).unwrap();
        // b = g = 2; θ = 1 − 0.1·2
        assert_eq!(p.value().to_vec(), vec![1.0 - 0.1 * 2.0]);
        opt.step(&mut [&mut p], &grads).unwrap();
        // b = 0.9·2 + 0.5·2 = 2.8
        assert!((p.value().to_vec()[0] - (0.8 - 0.1 * 2.8)).abs() < 1e-15);
    }

    #[test]
    fn invalid_hyper_parameters_are_named() {
        let e = Sgd::<f32>::new(SgdConfig::new(-0.1)).unwrap_err();
        assert!(e.to_string().contains("SGD learning rate: -0.1"), "{e}");
        let e = Sgd::<f32>::new(SgdConfig {
            nesterov: true,
            ..SgdConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("Nesterov"), "{e}");
        assert!(Sgd::<f32>::new(SgdConfig::new(f64::NAN)).is_err());
    }
}
