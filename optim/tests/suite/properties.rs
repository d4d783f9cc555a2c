//! Algebraic properties of the optimisers, checked on random problems:
//! descent on convex quadratics, Adam's invariance to the loss scale, a zero
//! learning rate changing nothing, and the exact relation between decoupled
//! weight decay, the `weight_decay` option and an L2 penalty in the loss.

use anneal_autograd::{Gradients, Param, Var};
use anneal_optim::{
    l2_penalty, Adadelta, AdadeltaConfig, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW,
    AdamWConfig, Lion, LionConfig, Optimizer, ParamFilter, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use anneal_tensor::Tensor;
use proptest::prelude::*;

type BoxedOptimizer = Box<dyn Optimizer<f64>>;

/// Every rule with settings suited to a quadratic of curvature in [0.5, 2].
fn all_optimizers(zero_lr: bool) -> Vec<(&'static str, Box<dyn Optimizer<f64>>)> {
    let lr = |x: f64| if zero_lr { 0.0 } else { x };
    vec![
        ("sgd", Box::new(Sgd::new(SgdConfig::new(lr(0.1))).unwrap())),
        (
            "sgd_momentum_wd",
            Box::new(
                Sgd::new(SgdConfig {
                    momentum: 0.5,
                    dampening: 0.1,
                    weight_decay: 1e-3,
                    ..SgdConfig::new(lr(0.05))
                })
                .unwrap(),
            ),
        ),
        (
            "sgd_nesterov",
            Box::new(
                Sgd::new(SgdConfig {
                    momentum: 0.5,
                    nesterov: true,
                    ..SgdConfig::new(lr(0.05))
                })
                .unwrap(),
            ),
        ),
        (
            "adam",
            Box::new(
                Adam::new(AdamConfig {
                    weight_decay: 1e-3,
                    ..AdamConfig::new(lr(0.05))
                })
                .unwrap(),
            ),
        ),
        (
            "adam_amsgrad",
            Box::new(
                Adam::new(AdamConfig {
                    amsgrad: true,
                    ..AdamConfig::new(lr(0.05))
                })
                .unwrap(),
            ),
        ),
        (
            "adamw",
            Box::new(AdamW::new(AdamWConfig::new(lr(0.05))).unwrap()),
        ),
        (
            "rmsprop_centered_momentum",
            Box::new(
                RmsProp::new(RmsPropConfig {
                    centered: true,
                    momentum: 0.5,
                    weight_decay: 1e-3,
                    ..RmsPropConfig::new(lr(0.005))
                })
                .unwrap(),
            ),
        ),
        (
            "rmsprop",
            Box::new(RmsProp::new(RmsPropConfig::new(lr(0.01))).unwrap()),
        ),
        (
            "adagrad",
            Box::new(
                Adagrad::new(AdagradConfig {
                    lr_decay: 1e-3,
                    weight_decay: 1e-3,
                    ..AdagradConfig::new(lr(0.5))
                })
                .unwrap(),
            ),
        ),
        (
            "adadelta",
            Box::new(
                Adadelta::new(AdadeltaConfig {
                    weight_decay: 1e-3,
                    ..AdadeltaConfig::new(lr(1.0))
                })
                .unwrap(),
            ),
        ),
        (
            "lion",
            Box::new(
                Lion::new(LionConfig {
                    weight_decay: 1e-3,
                    ..LionConfig::new(lr(0.02))
                })
                .unwrap(),
            ),
        ),
    ]
}

/// A convex quadratic `½·Σ aᵢ(pᵢ − tᵢ)²` and a start at distance ≥ 0.5 per
/// coordinate from its minimum.
#[derive(Debug, Clone)]
struct Quadratic {
    a: Vec<f64>,
    t: Vec<f64>,
    p0: Vec<f64>,
}

impl Quadratic {
    fn loss(&self, p: &[f64]) -> f64 {
        p.iter()
            .zip(&self.a)
            .zip(&self.t)
            .map(|((&p, &a), &t)| 0.5 * a * (p - t) * (p - t))
            .sum()
    }
    fn grad(&self, p: &[f64]) -> Vec<f64> {
        p.iter()
            .zip(&self.a)
            .zip(&self.t)
            .map(|((&p, &a), &t)| a * (p - t))
            .collect()
    }
}

fn quadratic() -> impl Strategy<Value = Quadratic> {
    (1usize..8).prop_flat_map(|n| {
        (
            prop::collection::vec(0.5f64..2.0, n),
            prop::collection::vec(-1.0f64..1.0, n),
            prop::collection::vec((0.5f64..3.0, any::<bool>()), n),
        )
            .prop_map(|(a, t, d)| {
                let p0 = t
                    .iter()
                    .zip(&d)
                    .map(|(&t, &(d, neg))| if neg { t - d } else { t + d })
                    .collect();
                Quadratic { a, t, p0 }
            })
    })
}

fn param(v: &[f64]) -> Param<f64> {
    Param::new(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap())
}

fn grads_of(p: &Param<f64>, g: Vec<f64>) -> Gradients<f64> {
    let mut grads = Gradients::new();
    grads.insert(p.id(), Tensor::from_vec(g, p.shape()).unwrap());
    grads
}

fn step_with(opt: &mut dyn Optimizer<f64>, p: &mut Param<f64>, g: Vec<f64>) {
    let grads = grads_of(p, g);
    opt.step(&mut [p], &grads).unwrap();
}

/// A random gradient sequence (`steps` vectors of length `n`).
fn gradient_sequence(n: usize, steps: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
    prop::collection::vec(prop::collection::vec(-2.0f64..2.0, n), steps)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_optimizer_decreases_a_convex_quadratic(q in quadratic()) {
        let f0 = q.loss(&q.p0);
        for (name, mut opt) in all_optimizers(false) {
            let mut p = param(&q.p0);
            for _ in 0..300 {
                let g = q.grad(p.value().as_slice());
                step_with(opt.as_mut(), &mut p, g);
            }
            let f = q.loss(p.value().as_slice());
            prop_assert!(f < f0, "{name}: loss {f0} -> {f}");
            if name != "adadelta" {
                // Adadelta's first steps are ~√ε-sized; the rest converge.
                prop_assert!(f < 0.05 * f0, "{name}: loss {f0} -> {f}");
            }
        }
    }

    #[test]
    fn zero_learning_rate_changes_nothing(
        p0 in prop::collection::vec(-3.0f64..3.0, 1..6),
        seed_grads in gradient_sequence(6, 8),
    ) {
        for (name, mut opt) in all_optimizers(true) {
            let mut p = param(&p0);
            for g in &seed_grads {
                step_with(opt.as_mut(), &mut p, g[..p0.len()].to_vec());
            }
            prop_assert_eq!(p.value().as_slice(), p0.as_slice(), "{}", name);
        }
    }

    #[test]
    fn adam_is_invariant_to_the_loss_scale(
        p0 in prop::collection::vec(-3.0f64..3.0, 1..6),
        gs in gradient_sequence(6, 10),
        log_scale in -3.0f64..3.0,
        exp2 in -20i32..20,
        amsgrad in any::<bool>(),
    ) {
        // With ε = 0, Adam's update m̂/√v̂ does not change when the loss (so
        // every gradient) is multiplied by s > 0: exactly for s = 2ᵏ, up to
        // rounding otherwise. (With ε > 0 the invariance holds only while
        // √v̂ ≫ ε.)
        let cfg = AdamConfig { eps: 0.0, amsgrad, ..AdamConfig::new(0.05) };
        let n = p0.len();
        let run = |s: f64| {
            let mut opt = Adam::<f64>::new(cfg).unwrap();
            let mut p = param(&p0);
            for g in &gs {
                step_with(&mut opt, &mut p, g[..n].iter().map(|x| s * x).collect());
            }
            p.value().to_vec()
        };
        let base = run(1.0);
        let scaled = run(10f64.powf(log_scale));
        for (a, b) in base.iter().zip(&scaled) {
            prop_assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        }
        prop_assert_eq!(run(2f64.powi(exp2)), base);
    }

    #[test]
    fn decoupled_decay_and_l2_differ_as_the_formulas_say(
        p0 in prop::collection::vec(-3.0f64..3.0, 1..6),
        gs in gradient_sequence(6, 12),
        lambda in 0.0f64..0.5,
    ) {
        let lr = 0.05;
        let n = p0.len();
        let gs: Vec<Vec<f64>> = gs.iter().map(|g| g[..n].to_vec()).collect();

        // (1) AdamW(λ) = Adam(0) on the same gradients, plus θ ← θ·(1 − γλ)
        //     before each step: the moments, hence the Adam update u_k, are
        //     the same, and θ_W[k] = (1 − γλ)·θ_W[k−1] + u_k.
        let mut adamw = AdamW::<f64>::new(AdamWConfig { weight_decay: lambda, ..AdamWConfig::new(lr) }).unwrap();
        let mut adam0 = Adam::<f64>::new(AdamConfig::new(lr)).unwrap();
        let (mut pw, mut pa) = (param(&p0), param(&p0));
        for g in &gs {
            let (w_prev, a_prev) = (pw.value().to_vec(), pa.value().to_vec());
            step_with(&mut adamw, &mut pw, g.clone());
            step_with(&mut adam0, &mut pa, g.clone());
            for i in 0..n {
                let u = pa.value().as_slice()[i] - a_prev[i];
                let want = (1.0 - lr * lambda) * w_prev[i] + u;
                let got = pw.value().as_slice()[i];
                prop_assert!((got - want).abs() <= 1e-13 * want.abs().max(1.0), "{got} vs {want}");
            }
        }

        // (2) Adam(weight_decay = λ) is Adam(0) on the gradient g + λ·θ —
        //     bit for bit: the L2 form couples the decay into the moments.
        let mut adam_l2 = Adam::<f64>::new(AdamConfig { weight_decay: lambda, ..AdamConfig::new(lr) }).unwrap();
        let mut adam_ext = Adam::<f64>::new(AdamConfig::new(lr)).unwrap();
        let (mut pl, mut pe) = (param(&p0), param(&p0));
        for g in &gs {
            step_with(&mut adam_l2, &mut pl, g.clone());
            let ge: Vec<f64> = g.iter().zip(pe.value().as_slice()).map(|(&g, &p)| g + lambda * p).collect();
            step_with(&mut adam_ext, &mut pe, ge);
            prop_assert_eq!(pl.value().as_slice(), pe.value().as_slice());
        }

        // (3) The first step from the same θ, g, in closed form (m̂ = g, √v̂ = |g|):
        //     AdamW:   θ₁ = θ·(1 − γλ) − γ·g/(|g| + ε)
        //     Adam+L2: θ₁ = θ − γ·(g + λθ)/(|g + λθ| + ε)
        let eps = 1e-8;
        let mut w1 = AdamW::<f64>::new(AdamWConfig { weight_decay: lambda, ..AdamWConfig::new(lr) }).unwrap();
        let mut l1 = Adam::<f64>::new(AdamConfig { weight_decay: lambda, ..AdamConfig::new(lr) }).unwrap();
        let (mut pw, mut pl) = (param(&p0), param(&p0));
        step_with(&mut w1, &mut pw, gs[0].clone());
        step_with(&mut l1, &mut pl, gs[0].clone());
        for i in 0..n {
            let (t, g) = (p0[i], gs[0][i]);
            let want_w = t * (1.0 - lr * lambda) - lr * g / (g.abs() + eps);
            let gl = g + lambda * t;
            let want_l = t - lr * gl / (gl.abs() + eps);
            prop_assert!((pw.value().as_slice()[i] - want_w).abs() < 1e-12);
            prop_assert!((pl.value().as_slice()[i] - want_l).abs() < 1e-12);
        }
    }

    #[test]
    fn weight_decay_equals_an_l2_penalty_in_the_loss(
        q in quadratic(),
        lambda in 0.0f64..0.5,
        momentum in 0.0f64..0.9,
    ) {
        // SGD (and Adam) with weight_decay = λ take the same steps as the same
        // rule without decay on loss + l2_penalty(λ) = loss + ½λ‖θ‖², whose
        // gradient autograd computes as g + λ·θ.
        let a = Var::constant(Tensor::from_vec(q.a.clone(), &[q.a.len()]).unwrap());
        let t = Var::constant(Tensor::from_vec(q.t.clone(), &[q.t.len()]).unwrap());
        let loss_of = |p: &Param<f64>, with_penalty: bool| {
            let d = p.var().sub(&t).unwrap();
            let loss = d.square().mul(&a).unwrap().sum_all().unwrap().mul_scalar(0.5);
            if with_penalty {
                loss.add(&l2_penalty([("w", p)], lambda, &ParamFilter::all()).unwrap()).unwrap()
            } else {
                loss
            }
        };
        let pairs: Vec<(BoxedOptimizer, BoxedOptimizer)> = vec![
            (
                Box::new(Sgd::new(SgdConfig { momentum, weight_decay: lambda, ..SgdConfig::new(0.05) }).unwrap()),
                Box::new(Sgd::new(SgdConfig { momentum, ..SgdConfig::new(0.05) }).unwrap()),
            ),
            (
                Box::new(Adam::new(AdamConfig { weight_decay: lambda, ..AdamConfig::new(0.05) }).unwrap()),
                Box::new(Adam::new(AdamConfig::new(0.05)).unwrap()),
            ),
        ];
        for (mut with_wd, mut with_pen) in pairs {
            let (mut p1, mut p2) = (param(&q.p0), param(&q.p0));
            for _ in 0..20 {
                let g1 = loss_of(&p1, false).backward().unwrap();
                with_wd.step(&mut [&mut p1], &g1).unwrap();
                let g2 = loss_of(&p2, true).backward().unwrap();
                with_pen.step(&mut [&mut p2], &g2).unwrap();
                for (x, y) in p1.value().as_slice().iter().zip(p2.value().as_slice()) {
                    prop_assert!((x - y).abs() <= 1e-14 * x.abs().max(1.0), "{} vs {}", x, y);
                }
            }
        }
    }
}

#[test]
fn l2_penalty_gradient_is_lambda_w() {
    let w = param(&[0.3, -1.7, 2.5, 0.0]);
    let g = l2_penalty([("layer.weight", &w)], 0.07, &ParamFilter::all())
        .unwrap()
        .backward()
        .unwrap();
    let want: Vec<f64> = w.value().as_slice().iter().map(|x| 0.07 * x).collect();
    assert_eq!(g.get(&w).unwrap().to_vec(), want);
}

#[test]
fn parameter_without_gradient_is_untouched_state_included() {
    for (name, mut opt) in all_optimizers(false) {
        let mut a = param(&[1.0, 2.0]);
        let mut b = param(&[3.0]);
        let mut both = Gradients::new();
        both.insert(a.id(), Tensor::from_vec(vec![0.5, -0.5], &[2]).unwrap());
        both.insert(b.id(), Tensor::from_vec(vec![0.25], &[1]).unwrap());
        opt.step(&mut [&mut a, &mut b], &both).unwrap();
        let before_state = opt.state_dict();
        let b_before = b.value().to_vec();
        let only_a = grads_of(&a, vec![0.1, 0.1]);
        opt.step(&mut [&mut a, &mut b], &only_a).unwrap();
        assert_eq!(b.value().to_vec(), b_before, "{name}");
        let after_state = opt.state_dict();
        assert_eq!(after_state.params[&1], before_state.params[&1], "{name}");
        assert_eq!(after_state.params[&0].step, 2, "{name}");
        assert_eq!(after_state.params[&1].step, 1, "{name}");
    }
}

#[test]
fn f32_large_parameters_take_the_parallel_path_identically() {
    // A parameter large enough to be split across threads gives the same
    // bits as the same elements updated in small pieces on one thread.
    let n = 200_003;
    let vals: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
    let grads_v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos()).collect();
    let mut big = Param::new(Tensor::from_vec(vals.clone(), &[n]).unwrap());
    let mut opt = Adam::<f32>::new(AdamConfig {
        amsgrad: true,
        weight_decay: 0.01,
        ..AdamConfig::new(1e-3)
    })
    .unwrap();
    let mut g = Gradients::new();
    g.insert(big.id(), Tensor::from_vec(grads_v.clone(), &[n]).unwrap());
    for _ in 0..3 {
        opt.step(&mut [&mut big], &g).unwrap();
    }
    // The same in 1000-element pieces (each below the parallel threshold).
    let mut pieces: Vec<Param<f32>> = vals
        .chunks(1000)
        .map(|c| Param::new(Tensor::from_vec(c.to_vec(), &[c.len()]).unwrap()))
        .collect();
    let mut opt2 = Adam::<f32>::new(*opt.config()).unwrap();
    let mut g2 = Gradients::new();
    for (p, c) in pieces.iter().zip(grads_v.chunks(1000)) {
        g2.insert(p.id(), Tensor::from_vec(c.to_vec(), &[c.len()]).unwrap());
    }
    for _ in 0..3 {
        let mut refs: Vec<&mut Param<f32>> = pieces.iter_mut().collect();
        opt2.step(&mut refs, &g2).unwrap();
    }
    let joined: Vec<u32> = pieces
        .iter()
        .flat_map(|p| p.value().as_slice().iter().map(|x| x.to_bits()))
        .collect();
    let whole: Vec<u32> = big.value().as_slice().iter().map(|x| x.to_bits()).collect();
    assert_eq!(joined, whole);
}
