//! Adam with L2 weight decay and AMSGrad (`torch.optim.Adam`), and AdamW
//! with decoupled weight decay (`torch.optim.AdamW`). Both share one fused
//! element-wise kernel.

use std::collections::BTreeMap;

use anneal_autograd::{Gradients, Param};
use anneal_tensor::{Element, Result};

use crate::optimizer::{
    c, check_non_negative, check_unit, forward_optimizer_methods, hyper_bool, hyper_get, Core,
    Hyper,
};
use crate::Optimizer;

/// Hyper-parameters of [`Adam`], with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate `γ` (default 1e-3).
    pub lr: f64,
    /// Decay rates `(β₁, β₂)` of the first and second moments (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term `ε` added to the denominator, after the square root (default 1e-8).
    pub eps: f64,
    /// L2 weight decay `λ`, added to the gradient as `λ·θ` (default 0).
    pub weight_decay: f64,
    /// Use AMSGrad's running maximum of the second moment (default false).
    pub amsgrad: bool,
    /// Maximise the objective instead of minimising it (default false).
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// Hyper-parameters of [`AdamW`], with PyTorch's defaults (as Adam's, but
/// `weight_decay` is decoupled and defaults to 1e-2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate `γ` (default 1e-3).
    pub lr: f64,
    /// Decay rates `(β₁, β₂)` of the first and second moments (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term `ε` added to the denominator, after the square root (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay `λ`: `θ ← θ·(1 − γλ)` each step (default 1e-2).
    pub weight_decay: f64,
    /// Use AMSGrad's running maximum of the second moment (default false).
    pub amsgrad: bool,
    /// Maximise the objective instead of minimising it (default false).
    pub maximize: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
        }
    }
}

macro_rules! adam_config_impl {
    ($cfg:ident, $name:literal, $new_op:literal, $load_op:literal) => {
        impl $cfg {
            /// The defaults with learning rate `lr`.
            pub fn new(lr: f64) -> Self {
                $cfg {
                    lr,
                    ..Self::default()
                }
            }

            /// Checks every hyper-parameter as PyTorch's constructor does.
            pub fn validate(&self) -> Result<()> {
                check_non_negative($new_op, concat!($name, " learning rate"), self.lr)?;
                check_non_negative($new_op, concat!($name, " eps"), self.eps)?;
                check_unit($new_op, concat!($name, " beta1"), self.betas.0, false)?;
                check_unit($new_op, concat!($name, " beta2"), self.betas.1, false)?;
                check_non_negative($new_op, concat!($name, " weight_decay"), self.weight_decay)
            }

            pub(crate) fn buffer_names(&self) -> Vec<&'static str> {
                let mut v = vec!["exp_avg", "exp_avg_sq"];
                if self.amsgrad {
                    v.push("max_exp_avg_sq");
                }
                v
            }

            pub(crate) fn to_hyper(self) -> BTreeMap<String, f64> {
                [
                    ("lr", self.lr),
                    ("beta1", self.betas.0),
                    ("beta2", self.betas.1),
                    ("eps", self.eps),
                    ("weight_decay", self.weight_decay),
                    ("amsgrad", self.amsgrad as u8 as f64),
                    ("maximize", self.maximize as u8 as f64),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            }

            pub(crate) fn from_hyper(m: &BTreeMap<String, f64>) -> Result<Self> {
                let (op, n) = ($load_op, $name);
                Ok($cfg {
                    lr: hyper_get(op, n, m, "lr")?,
                    betas: (hyper_get(op, n, m, "beta1")?, hyper_get(op, n, m, "beta2")?),
                    eps: hyper_get(op, n, m, "eps")?,
                    weight_decay: hyper_get(op, n, m, "weight_decay")?,
                    amsgrad: hyper_bool(op, n, m, "amsgrad")?,
                    maximize: hyper_bool(op, n, m, "maximize")?,
                })
            }
        }
    };
}
adam_config_impl!(AdamConfig, "Adam", "Adam::new", "Adam::load_state_dict");
adam_config_impl!(AdamWConfig, "AdamW", "AdamW::new", "AdamW::load_state_dict");

/// Adam, exactly as `torch.optim.Adam`.
///
/// For each parameter `θ` with gradient `g` at its step `t` (counted per
/// parameter, from 1):
///
/// ```text
/// g ← −g                              if maximize
/// g ← g + λ·θ                         if λ ≠ 0   (L2 penalty)
/// m ← β₁·m + (1 − β₁)·g
/// v ← β₂·v + (1 − β₂)·g²
/// v̂ ← max(v̂, v) if amsgrad, else v̂ = v
/// θ ← θ − (γ / (1 − β₁ᵗ)) · m / (√v̂ / √(1 − β₂ᵗ) + ε)
/// ```
///
/// State: `exp_avg` (m), `exp_avg_sq` (v), and `max_exp_avg_sq` with AMSGrad.
/// Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2015);
/// Reddi et al., "On the Convergence of Adam and Beyond" (2018).
#[derive(Debug, Clone)]
pub struct Adam<T: Element = f32> {
    config: AdamConfig,
    core: Core<T>,
}

/// AdamW, exactly as `torch.optim.AdamW`: Adam whose weight decay is
/// decoupled from the gradient.
///
/// As [`Adam`] without the `g ← g + λ·θ` line, and with, before the moment
/// updates:
///
/// ```text
/// θ ← θ·(1 − γλ)
/// ```
///
/// Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (2019).
#[derive(Debug, Clone)]
pub struct AdamW<T: Element = f32> {
    config: AdamWConfig,
    core: Core<T>,
}

impl<T: Element> Adam<T> {
    /// A new optimiser; errors on an invalid hyper-parameter.
    pub fn new(config: AdamConfig) -> Result<Self> {
        config.validate()?;
        Ok(Adam {
            config,
            core: Core::new(
                "Adam",
                "Adam::step",
                "Adam::load_state_dict",
                config.lr,
                config.weight_decay,
            ),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

impl<T: Element> AdamW<T> {
    /// A new optimiser; errors on an invalid hyper-parameter.
    pub fn new(config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        Ok(AdamW {
            config,
            core: Core::new(
                "AdamW",
                "AdamW::step",
                "AdamW::load_state_dict",
                config.lr,
                config.weight_decay,
            ),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }
}

/// Weight-decay flavour of the fused kernel.
const WD_NONE: u8 = 0;
const WD_L2: u8 = 1;
const WD_DECOUPLED: u8 = 2;

/// The per-step scalars, computed in `f64` as PyTorch does and cast once.
#[derive(Debug, Clone, Copy)]
struct Scalars<T> {
    beta1: T,
    one_minus_beta1: T,
    beta2: T,
    one_minus_beta2: T,
    bias_correction2_sqrt: T,
    eps: T,
    neg_step_size: T,
    weight_decay: T,
    decay: T,
}

/// One fused pass over a chunk: reads θ, g, m, v (and v̂), writes θ, m, v (v̂).
/// The flags are constants so that each variant compiles to a branch-free loop.
#[inline(always)]
fn adam_loop<T: Element, const MAXIMIZE: bool, const WD: u8, const AMSGRAD: bool>(
    p: &mut [T],
    g: &[T],
    bufs: &mut [&mut [T]],
    s: &Scalars<T>,
) {
    let n = p.len();
    let g = &g[..n];
    let (m, rest) = bufs.split_first_mut().expect("Adam has two buffers");
    let (v, rest) = rest.split_first_mut().expect("Adam has two buffers");
    let m = &mut m[..n];
    let v = &mut v[..n];
    let vmax: &mut [T] = if AMSGRAD { &mut rest[0][..n] } else { &mut [] };
    for i in 0..n {
        let mut gi = if MAXIMIZE { -g[i] } else { g[i] };
        let mut pi = p[i];
        if WD == WD_L2 {
            gi += s.weight_decay * pi;
        }
        if WD == WD_DECOUPLED {
            pi *= s.decay;
        }
        let mi = m[i] * s.beta1 + s.one_minus_beta1 * gi;
        let vi = v[i] * s.beta2 + (s.one_minus_beta2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        let vhat = if AMSGRAD {
            let x = if vi > vmax[i] { vi } else { vmax[i] };
            vmax[i] = x;
            x
        } else {
            vi
        };
        let denom = vhat.sqrt() / s.bias_correction2_sqrt + s.eps;
        p[i] = pi + (s.neg_step_size * mi) / denom;
    }
}

type Kernel<T> = fn(&mut [T], &[T], &mut [&mut [T]], &Scalars<T>);

/// [`adam_loop`] compiled for AVX2 (8 `f32` lanes instead of SSE2's 4): the
/// same IEEE operations in the same order, and no FMA (Rust never contracts
/// `a * b + c`), so the same bits as the portable build.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adam_loop_avx2<T: Element, const MAXIMIZE: bool, const WD: u8, const AMSGRAD: bool>(
    p: &mut [T],
    g: &[T],
    bufs: &mut [&mut [T]],
    s: &Scalars<T>,
) {
    adam_loop::<T, MAXIMIZE, WD, AMSGRAD>(p, g, bufs, s)
}

/// Entry to [`adam_loop_avx2`]; [`pick_kernel`] hands it out only after
/// detecting AVX2 at run time.
#[cfg(target_arch = "x86_64")]
fn adam_loop_avx2_entry<T: Element, const MAXIMIZE: bool, const WD: u8, const AMSGRAD: bool>(
    p: &mut [T],
    g: &[T],
    bufs: &mut [&mut [T]],
    s: &Scalars<T>,
) {
    // SAFETY: only reachable through `pick_kernel(.., avx2 = true)`, which
    // callers pass only when `is_x86_feature_detected!("avx2")`.
    unsafe { adam_loop_avx2::<T, MAXIMIZE, WD, AMSGRAD>(p, g, bufs, s) }
}

/// Whether the AVX2 build of the kernel can run here.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The kernel variant for these flags; `avx2` must only be true when
/// [`has_avx2`] is.
fn pick_kernel<T: Element>(maximize: bool, wd: u8, amsgrad: bool, avx2: bool) -> Kernel<T> {
    macro_rules! k {
        ($m:literal, $w:expr, $a:literal) => {{
            #[cfg(target_arch = "x86_64")]
            {
                if avx2 {
                    return adam_loop_avx2_entry::<T, $m, { $w }, $a> as Kernel<T>;
                }
            }
            let _ = avx2;
            adam_loop::<T, $m, { $w }, $a> as Kernel<T>
        }};
    }
    match (maximize, wd, amsgrad) {
        (false, WD_NONE, false) => k!(false, WD_NONE, false),
        (false, WD_NONE, true) => k!(false, WD_NONE, true),
        (false, WD_L2, false) => k!(false, WD_L2, false),
        (false, WD_L2, true) => k!(false, WD_L2, true),
        (false, _, false) => k!(false, WD_DECOUPLED, false),
        (false, _, true) => k!(false, WD_DECOUPLED, true),
        (true, WD_NONE, false) => k!(true, WD_NONE, false),
        (true, WD_NONE, true) => k!(true, WD_NONE, true),
        (true, WD_L2, false) => k!(true, WD_L2, false),
        (true, WD_L2, true) => k!(true, WD_L2, true),
        (true, _, false) => k!(true, WD_DECOUPLED, false),
        (true, _, true) => k!(true, WD_DECOUPLED, true),
    }
}

/// The kernel and scalars of one Adam/AdamW update of one parameter at its
/// step `t`.
fn adam_prepare<T: Element>(
    h: Hyper,
    t: u64,
    betas: (f64, f64),
    eps: f64,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
) -> (Kernel<T>, Scalars<T>) {
    let (beta1, beta2) = betas;
    let t = t as f64;
    let bias_correction1 = 1.0 - beta1.powf(t);
    let bias_correction2 = 1.0 - beta2.powf(t);
    let step_size = h.lr / bias_correction1;
    let s = Scalars {
        beta1: c(beta1),
        one_minus_beta1: c(1.0 - beta1),
        beta2: c(beta2),
        one_minus_beta2: c(1.0 - beta2),
        bias_correction2_sqrt: c(bias_correction2.sqrt()),
        eps: c(eps),
        neg_step_size: c(-step_size),
        weight_decay: c(h.weight_decay),
        decay: c(1.0 - h.lr * h.weight_decay),
    };
    let wd = if decoupled {
        WD_DECOUPLED
    } else if h.weight_decay != 0.0 {
        WD_L2
    } else {
        WD_NONE
    };
    (pick_kernel::<T>(maximize, wd, amsgrad, has_avx2()), s)
}

impl<T: Element> Optimizer<T> for Adam<T> {
    forward_optimizer_methods!(AdamConfig);

    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()> {
        let cfg = self.config;
        let nbufs = cfg.buffer_names().len();
        self.core.step(
            params,
            grads,
            |n| vec![vec![T::zero(); n]; nbufs],
            |h, t| {
                let (kernel, s) =
                    adam_prepare::<T>(h, t, cfg.betas, cfg.eps, cfg.amsgrad, cfg.maximize, false);
                move |p: &mut [T], g: &[T], b: &mut [&mut [T]]| kernel(p, g, b, &s)
            },
        )
    }
}

impl<T: Element> Optimizer<T> for AdamW<T> {
    forward_optimizer_methods!(AdamWConfig);

    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()> {
        let cfg = self.config;
        let nbufs = cfg.buffer_names().len();
        self.core.step(
            params,
            grads,
            |n| vec![vec![T::zero(); n]; nbufs],
            |h, t| {
                let (kernel, s) =
                    adam_prepare::<T>(h, t, cfg.betas, cfg.eps, cfg.amsgrad, cfg.maximize, true);
                move |p: &mut [T], g: &[T], b: &mut [&mut [T]]| kernel(p, g, b, &s)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anneal_tensor::Tensor;

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // At t = 1, m̂ = g and √v̂ = |g|, so θ moves by γ·g/(|g| + ε) ≈ γ·sign(g).
        let mut opt = Adam::<f64>::new(AdamConfig::new(0.1)).unwrap();
        let mut p = Param::new(Tensor::from_vec(vec![1.0, 1.0], &[2]).unwrap());
        let mut grads = Gradients::new();
        grads.insert(p.id(), Tensor::from_vec(vec![3.0, -0.5], &[2]).unwrap());
        opt.step(&mut [&mut p], &grads).unwrap();
        let v = p.value().to_vec();
        assert!(
            (v[0] - 0.9).abs() < 1e-8 && (v[1] - 1.1).abs() < 1e-8,
            "{v:?}"
        );
    }

    #[test]
    fn invalid_betas_are_named() {
        let e = Adam::<f32>::new(AdamConfig {
            betas: (0.9, 1.0),
            ..AdamConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Adam::new: invalid Adam beta2: 1 (must be in [0, 1))"
        );
        let e = AdamW::<f32>::new(AdamWConfig {
            eps: -1.0,
            ..AdamWConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("AdamW eps: -1"), "{e}");
    }

    #[test]
    fn avx2_and_portable_kernels_agree_bit_for_bit() {
        if !has_avx2() {
            return;
        }
        let n = 1000 + 3;
        let base: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.731).sin()).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).cos() * 3.0).collect();
        let s = Scalars {
            beta1: 0.9f32,
            one_minus_beta1: 0.1,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            bias_correction2_sqrt: 0.05,
            eps: 1e-8,
            neg_step_size: -0.01,
            weight_decay: 0.01,
            decay: 0.9999,
        };
        for (maximize, wd, ams) in [
            (false, WD_NONE, false),
            (true, WD_L2, true),
            (false, WD_DECOUPLED, true),
        ] {
            let run = |avx2: bool| {
                let mut p = base.clone();
                let mut bufs = [
                    base.clone(),
                    g.iter().map(|x| x * x).collect(),
                    vec![0.5f32; n],
                ];
                let k = pick_kernel::<f32>(maximize, wd, ams, avx2);
                for _ in 0..3 {
                    let mut b: Vec<&mut [f32]> =
                        bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
                    k(&mut p, &g, &mut b, &s);
                }
                p.iter()
                    .chain(bufs.iter().flatten())
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(true), run(false));
        }
    }

    #[test]
    fn defaults_are_pytorchs() {
        let a = AdamConfig::default();
        assert_eq!(
            (a.lr, a.betas, a.eps, a.weight_decay),
            (1e-3, (0.9, 0.999), 1e-8, 0.0)
        );
        assert_eq!(AdamWConfig::default().weight_decay, 1e-2);
    }
}
