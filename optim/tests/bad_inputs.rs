//! Bad-input sweep of the optim crate: every optimiser is built from valid
//! and invalid configurations, then stepped with gradients that are
//! missing, mis-shaped, empty or NaN/±∞, with learning rates set to bad
//! values, with parameter groups misused and with another optimiser's
//! state; every schedule is asked for its rate at steps up to `usize::MAX`;
//! penalties, clipping and early stopping meet NaN/±∞ and out-of-range
//! arguments. Each call returns a typed error naming its op or a result;
//! none panics or hangs.

use anneal_autograd::{Gradients, Param, ParamId};
use anneal_optim::*;
use anneal_tensor::{Result, Tensor};

#[path = "../../tensor/tests/support/sweep.rs"]
mod sweep;
use sweep::Sweep;

/// Values that configurations must reject or survive.
const BAD: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -1.0,
    0.0,
    1.0,
    1.5,
    1e300,
];

fn optimisers() -> Vec<(String, Box<dyn Optimizer<f32>>)> {
    vec![
        (
            "sgd".into(),
            Box::new(Sgd::new(SgdConfig::new(0.1)).unwrap()),
        ),
        (
            "sgd nesterov".into(),
            Box::new(
                Sgd::new(SgdConfig {
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 0.1,
                    ..SgdConfig::new(0.1)
                })
                .unwrap(),
            ),
        ),
        (
            "adam amsgrad".into(),
            Box::new(
                Adam::new(AdamConfig {
                    amsgrad: true,
                    ..AdamConfig::new(1e-3)
                })
                .unwrap(),
            ),
        ),
        (
            "adamw".into(),
            Box::new(AdamW::new(AdamWConfig::new(1e-3)).unwrap()),
        ),
        (
            "rmsprop centered".into(),
            Box::new(
                RmsProp::new(RmsPropConfig {
                    centered: true,
                    momentum: 0.5,
                    ..RmsPropConfig::new(1e-2)
                })
                .unwrap(),
            ),
        ),
        (
            "adagrad".into(),
            Box::new(Adagrad::new(AdagradConfig::new(1e-2)).unwrap()),
        ),
        (
            "adadelta".into(),
            Box::new(Adadelta::new(AdadeltaConfig::new(1.0)).unwrap()),
        ),
        (
            "lion".into(),
            Box::new(Lion::new(LionConfig::new(1e-4)).unwrap()),
        ),
    ]
}

#[test]
fn every_configuration_field_with_bad_values() {
    let mut s = Sweep::default();
    for &v in BAD {
        let w = || format!("{v}");
        let results = vec![
            s.fallible(w, || Sgd::<f32>::new(SgdConfig::new(v)).map(|_| ())),
            s.fallible(w, || {
                Sgd::<f32>::new(SgdConfig {
                    momentum: v,
                    ..SgdConfig::new(0.1)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Sgd::<f32>::new(SgdConfig {
                    dampening: v,
                    momentum: 0.5,
                    nesterov: true,
                    ..SgdConfig::new(0.1)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Sgd::<f32>::new(SgdConfig {
                    weight_decay: v,
                    ..SgdConfig::new(0.1)
                })
                .map(|_| ())
            }),
            s.fallible(w, || Adam::<f32>::new(AdamConfig::new(v)).map(|_| ())),
            s.fallible(w, || {
                Adam::<f32>::new(AdamConfig {
                    betas: (v, 0.999),
                    ..AdamConfig::new(1e-3)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Adam::<f32>::new(AdamConfig {
                    betas: (0.9, v),
                    ..AdamConfig::new(1e-3)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Adam::<f32>::new(AdamConfig {
                    eps: v,
                    ..AdamConfig::new(1e-3)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                AdamW::<f32>::new(AdamWConfig {
                    weight_decay: v,
                    ..AdamWConfig::new(1e-3)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                RmsProp::<f32>::new(RmsPropConfig {
                    alpha: v,
                    ..RmsPropConfig::new(1e-2)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                RmsProp::<f32>::new(RmsPropConfig {
                    eps: v,
                    ..RmsPropConfig::new(1e-2)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Adagrad::<f32>::new(AdagradConfig {
                    lr_decay: v,
                    ..AdagradConfig::new(1e-2)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Adagrad::<f32>::new(AdagradConfig {
                    initial_accumulator_value: v,
                    ..AdagradConfig::new(1e-2)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Adadelta::<f32>::new(AdadeltaConfig {
                    rho: v,
                    ..AdadeltaConfig::new(1.0)
                })
                .map(|_| ())
            }),
            s.fallible(w, || {
                Lion::<f32>::new(LionConfig {
                    betas: (v, v),
                    ..LionConfig::new(1e-4)
                })
                .map(|_| ())
            }),
        ];
        if !v.is_finite() {
            for (i, r) in results.into_iter().enumerate() {
                if let Some(Ok(())) = r {
                    s.bad_errors.push(format!("configuration {i} accepted {v}"));
                }
            }
        }
    }
    s.finish(100);
}

fn param(shape: &[usize], v: f32) -> Param<f32> {
    Param::new(Tensor::full(shape, v).unwrap())
}

#[test]
fn steps_with_bad_gradients_learning_rates_groups_and_states() {
    let mut s = Sweep::default();
    let grad_cases: Vec<(&str, Option<Tensor<f32>>)> = vec![
        ("missing", None),
        ("right", Some(Tensor::full(&[2, 3], 0.5).unwrap())),
        ("wrong shape", Some(Tensor::full(&[3, 2], 0.5).unwrap())),
        ("scalar", Some(Tensor::scalar(0.5))),
        ("nan", Some(Tensor::full(&[2, 3], f32::NAN).unwrap())),
        ("inf", Some(Tensor::full(&[2, 3], f32::INFINITY).unwrap())),
        ("huge", Some(Tensor::full(&[2, 3], f32::MAX).unwrap())),
    ];
    for (name, mut opt) in optimisers() {
        for (gname, g) in &grad_cases {
            let mut p = param(&[2, 3], 1.0);
            let mut empty = param(&[0], 1.0);
            let mut grads = Gradients::new();
            if let Some(g) = g {
                grads.insert(p.id(), g.clone());
            }
            grads.insert(empty.id(), Tensor::zeros(&[0]).unwrap());
            let w = || format!("{name} grad {gname}");
            let r = s.fallible(w, || opt.step(&mut [&mut p, &mut empty], &grads));
            if *gname == "wrong shape" || *gname == "scalar" {
                if let Some(Ok(())) = r {
                    s.bad_errors.push(format!("{}: accepted", w()));
                }
                if p.value().as_slice() != [1.0; 6] {
                    s.bad_errors.push(format!("{}: changed the parameter", w()));
                }
            }
        }
        // The same parameters after the state exists, in another order and shape.
        let mut a = param(&[2], 1.0);
        let mut b = param(&[3], 1.0);
        let mut grads = Gradients::new();
        grads.insert(a.id(), Tensor::ones(&[2]).unwrap());
        grads.insert(b.id(), Tensor::ones(&[3]).unwrap());
        opt.reset_state();
        s.fallible(
            || format!("{name} first"),
            || opt.step(&mut [&mut a, &mut b], &grads),
        );
        s.fallible(
            || format!("{name} swapped"),
            || opt.step(&mut [&mut b, &mut a], &grads),
        );
        s.fallible(
            || format!("{name} empty"),
            || opt.step(&mut [], &Gradients::new()),
        );
        *a.value_mut() = Tensor::ones(&[5]).unwrap();
        s.fallible(
            || format!("{name} reshaped"),
            || opt.step(&mut [&mut a, &mut b], &grads),
        );
        // Learning rates set out of range are refused at the next step.
        for &lr in BAD {
            opt.set_learning_rate(lr);
            let mut p = param(&[2], 1.0);
            let mut grads = Gradients::new();
            grads.insert(p.id(), Tensor::ones(&[2]).unwrap());
            let w = || format!("{name} lr {lr}");
            let r = s.fallible(w, || opt.step(&mut [&mut p], &grads));
            if !(lr.is_finite() && lr >= 0.0) {
                if let Some(Ok(())) = r {
                    s.bad_errors.push(format!("{}: stepped", w()));
                }
            }
            s.fallible(w, || opt.set_group_learning_rate(0, lr));
            s.fallible(w, || opt.set_group_learning_rate(usize::MAX, lr));
            s.fallible(w, || {
                opt.add_param_group(
                    &[ParamId::fresh()],
                    GroupOverrides {
                        lr: Some(lr),
                        weight_decay: Some(lr),
                    },
                )
            });
        }
        opt.set_learning_rate(1e-3);
        let id = ParamId::fresh();
        s.fallible(
            || format!("{name} group twice"),
            || {
                opt.add_param_group(&[id, id], GroupOverrides::default())?;
                opt.add_param_group(&[id], GroupOverrides::default())
            },
        );
        // Every other optimiser's state.
        for (other, o) in optimisers() {
            let st = o.state_dict();
            s.fallible(
                || format!("{name} loads {other}"),
                || opt.load_state_dict(&st),
            );
        }
        let st = opt.state_dict();
        s.fallible(|| format!("{name} reloads"), || opt.load_state_dict(&st));
    }
    s.finish(400);
}

#[test]
fn schedules_at_extreme_steps_and_with_bad_arguments() {
    let mut s = Sweep::default();
    let steps = [0usize, 1, 7, 1 << 40, usize::MAX - 1, usize::MAX];
    let mut scheds: Vec<(String, Option<BoxedSchedule>)> = Vec::new();
    for &lr in &[0.1, f64::NAN, -1.0, f64::INFINITY] {
        for &n in &[0usize, 1, 3, usize::MAX] {
            for &g in &[0.5, 0.0, 1.0, -1.0, f64::NAN, 2.0] {
                let w = || format!("lr {lr} n {n} g {g}");
                let mut push = |name: &str, r: Option<Result<BoxedSchedule>>| {
                    if let Some(r) = r {
                        scheds.push((format!("{name} {}", w()), r.ok()));
                    }
                };
                push(
                    "step",
                    s.fallible(w, || Ok(Box::new(StepLr::new(lr, n, g)?) as BoxedSchedule)),
                );
                push(
                    "multistep",
                    s.fallible(w, || {
                        Ok(Box::new(MultiStepLr::new(lr, &[n, 2, n], g)?) as BoxedSchedule)
                    }),
                );
                push(
                    "exp",
                    s.fallible(w, || {
                        Ok(Box::new(ExponentialLr::new(lr, g)?) as BoxedSchedule)
                    }),
                );
                push(
                    "cosine",
                    s.fallible(w, || {
                        Ok(Box::new(CosineAnnealingLr::new(lr, n, g)?) as BoxedSchedule)
                    }),
                );
                push(
                    "warm restarts",
                    s.fallible(w, || {
                        Ok(Box::new(CosineAnnealingWarmRestarts::new(lr, n, n, g)?)
                            as BoxedSchedule)
                    }),
                );
                push(
                    "linear",
                    s.fallible(w, || {
                        Ok(Box::new(LinearLr::new(lr, g, g, n)?) as BoxedSchedule)
                    }),
                );
                push(
                    "one cycle",
                    s.fallible(w, || {
                        let mut c = OneCycleConfig::new(lr, n);
                        c.pct_start = g;
                        Ok(Box::new(OneCycleLr::new(c)?) as BoxedSchedule)
                    }),
                );
                push(
                    "one cycle 3",
                    s.fallible(w, || {
                        let mut c = OneCycleConfig::new(lr, n);
                        c.three_phase = true;
                        c.div_factor = g;
                        c.final_div_factor = g;
                        Ok(Box::new(OneCycleLr::new(c)?) as BoxedSchedule)
                    }),
                );
            }
        }
    }
    let w = || "compose".to_string();
    s.fallible(w, || SequentialLr::new(vec![], &[]).map(|_| ()));
    s.fallible(w, || ChainedLr::new(vec![]).map(|_| ()));
    let mk = || -> BoxedSchedule { Box::new(StepLr::new(0.1, 2, 0.5).unwrap()) };
    s.fallible(w, || SequentialLr::new(vec![mk(), mk()], &[]).map(|_| ()));
    s.fallible(w, || {
        SequentialLr::new(vec![mk(), mk()], &[usize::MAX]).map(|_| ())
    });
    s.fallible(w, || {
        SequentialLr::new(vec![mk(), mk(), mk()], &[3, 1]).map(|_| ())
    });
    if let Some(Ok(q)) = s.fallible(w, || SequentialLr::new(vec![mk(), mk()], &[usize::MAX])) {
        scheds.push(("sequential".into(), Some(Box::new(q))));
    }
    if let Some(Ok(c)) = s.fallible(w, || ChainedLr::new(vec![mk(), mk()])) {
        scheds.push(("chained".into(), Some(Box::new(c))));
    }
    for (name, sched) in scheds.iter_mut() {
        let Some(sched) = sched else { continue };
        for &t in &steps {
            let w = || format!("{name} at {t}");
            if let Some(lr) = s.run(w, || sched.lr_at(t)) {
                if lr.is_nan() {
                    s.bad_errors.push(format!("{}: NaN rate", w()));
                }
            }
            s.run(w, || {
                sched.set_step(t);
                sched.step();
                sched.lr()
            });
        }
    }
    // ReduceLrOnPlateau and early stopping with bad metrics.
    for &v in BAD {
        let w = || format!("plateau {v}");
        s.fallible(w, || {
            ReduceLrOnPlateau::new(
                0.1,
                PlateauConfig {
                    factor: v,
                    ..Default::default()
                },
            )
            .map(|_| ())
        });
        s.fallible(w, || {
            ReduceLrOnPlateau::new(
                v,
                PlateauConfig {
                    threshold: v,
                    min_lr: v,
                    eps: v,
                    ..Default::default()
                },
            )
            .map(|_| ())
        });
        s.fallible(w, || {
            EarlyStopping::new(usize::MAX, v, Mode::Max).map(|_| ())
        });
    }
    let mut p = ReduceLrOnPlateau::new(
        0.1,
        PlateauConfig {
            patience: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut e = EarlyStopping::new(0, 0.0, Mode::Min).unwrap();
    for &m in BAD.iter().cycle().take(40) {
        s.run(|| format!("plateau step {m}"), || p.step(m));
        s.run(|| format!("early stopping {m}"), || e.update(m));
    }
    if !(p.lr().is_finite() && p.lr() >= 0.0) {
        s.bad_errors.push(format!("plateau rate {}", p.lr()));
    }
    s.finish(2000);
}

#[test]
fn penalties_and_clipping_with_non_finite_values() {
    let mut s = Sweep::default();
    let params = [
        ("w".to_string(), param(&[3], 1.0)),
        ("b".to_string(), param(&[0], 1.0)),
        ("nan".to_string(), param(&[2], f32::NAN)),
        ("inf".to_string(), param(&[2], f32::INFINITY)),
    ];
    let named = || params.iter().map(|(n, p)| (n.as_str(), p));
    for &l in BAD {
        let w = || format!("lambda {l}");
        let f = ParamFilter::all();
        let rs = [
            s.fallible(w, || l1_penalty(named(), l, &f)),
            s.fallible(w, || l2_penalty(named(), l, &f)),
            s.fallible(w, || elastic_net_penalty(named(), l, 0.5, &f)),
            s.fallible(w, || elastic_net_penalty(named(), 0.5, l, &f)),
            s.fallible(w, || {
                l2_penalty(
                    std::iter::empty::<(&str, &Param<f32>)>(),
                    l,
                    &ParamFilter::no_bias_or_norm(),
                )
            }),
        ];
        for r in rs.into_iter().flatten() {
            match r {
                Ok(v) => {
                    if !(l.is_finite() && l >= 0.0) {
                        s.bad_errors.push(format!("{}: accepted", w()));
                    }
                    s.fallible(w, || v.backward());
                }
                Err(_) if l.is_finite() && l >= 0.0 => {
                    s.bad_errors.push(format!("{}: refused", w()))
                }
                Err(_) => {}
            }
        }
    }
    let grad_sets: &[&[f32]] = &[
        &[],
        &[1.0, 2.0],
        &[f32::NAN],
        &[f32::INFINITY, 1.0],
        &[f32::MAX, f32::MAX],
    ];
    for gs in grad_sets {
        for &max in BAD {
            for &norm in &[
                2.0,
                1.0,
                0.5,
                0.0,
                -1.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ] {
                let mut g = Gradients::new();
                let ids = [ParamId::fresh(), ParamId::fresh()];
                g.insert(ids[0], Tensor::from_slice(gs, &[gs.len()]).unwrap());
                let w = || format!("clip {gs:?} max {max} norm {norm}");
                s.fallible(w, || clip_grad_norm(&mut g, &ids, max, norm));
                s.fallible(w, || clip_grad_norm_all(&mut g, max, norm));
                s.fallible(w, || clip_grad_value(&mut g, &ids, max));
            }
        }
    }
    s.finish(1000);
}

/// The panics and silent NaNs this sweep found, each now an error or a
/// defined value.
#[test]
fn learning_rates_out_of_range_and_degenerate_schedules() {
    // A rate set out of range is refused at the next step, changing nothing.
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    let mut p = param(&[2], 1.0);
    let mut grads = Gradients::new();
    grads.insert(p.id(), Tensor::ones(&[2]).unwrap());
    for lr in [f64::NAN, -1e-3, f64::INFINITY] {
        opt.set_learning_rate(lr);
        let e = opt.step(&mut [&mut p], &grads).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("Adam: the learning rate of group 0 is {lr}")),
            "{msg}"
        );
        assert_eq!(p.value().to_vec(), vec![1.0, 1.0]);
        let e = opt.set_group_learning_rate(0, lr).unwrap_err();
        assert_eq!(e.op(), "Optimizer::set_group_learning_rate");
    }
    opt.set_learning_rate(1e-3);
    opt.step(&mut [&mut p], &grads).unwrap();
    assert!(p.value().to_vec()[0] < 1.0);

    // OneCycle with a warm-up of one step (pct_start · total_steps = 1):
    // PyTorch divides 0 by 0 there; anneal is at the phase's end rate.
    let mut c = OneCycleConfig::new(1.0, 10);
    c.pct_start = 0.1;
    c.anneal_strategy = AnnealStrategy::Linear;
    let s = OneCycleLr::new(c).unwrap();
    let min_lr = 1.0 / 25.0 / 1e4;
    assert_eq!(s.lr_at(0), 1.0);
    // Then linear from max_lr at step 0 to min_lr at step 9.
    assert!((s.lr_at(3) - (1.0 + (min_lr - 1.0) * 3.0 / 9.0)).abs() < 1e-12);
    assert!((s.lr_at(9) - min_lr).abs() < 1e-15);

    // Cosine with a period past usize::MAX, and stepping at usize::MAX.
    let mut s = CosineAnnealingLr::new(0.1, usize::MAX / 2 + 1, 0.0).unwrap();
    assert_eq!(s.lr_at(0), 0.1);
    // At t_max the rate is eta_min; the closed form has period 2·t_max.
    assert!(s.lr_at(usize::MAX / 2 + 1).abs() < 1e-15);
    let end = s.lr_at(usize::MAX);
    assert!((0.0..=0.1).contains(&end), "{end}");
    s.set_step(usize::MAX);
    s.step();
    assert_eq!(s.current_step(), usize::MAX);
}
