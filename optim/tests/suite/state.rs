//! Optimiser state round trips: save after 20 steps, restore into a fresh
//! optimiser and fresh parameters (new `ParamId`s, as in a new process),
//! continue 30 steps — bit-identical to an uninterrupted 50-step run. And
//! corrupted, truncated or mismatched files are errors, never panics.

use std::path::PathBuf;

use anneal_autograd::{Gradients, Param};
use anneal_optim::{
    Adadelta, AdadeltaConfig, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig,
    GroupOverrides, Lion, LionConfig, Optimizer, OptimizerState, RmsProp, RmsPropConfig, Sgd,
    SgdConfig,
};
use anneal_tensor::{Element, Tensor};

const KINDS: [&str; 10] = [
    "sgd_plain",
    "sgd",
    "sgd_nesterov_wd",
    "adam_amsgrad",
    "adamw",
    "rmsprop_centered_momentum",
    "adagrad",
    "adadelta",
    "lion",
    "adam_groups",
];

fn build<T: Element>(kind: &str) -> Box<dyn Optimizer<T>> {
    match kind {
        "sgd_plain" => Box::new(Sgd::new(SgdConfig::new(0.05)).unwrap()),
        "sgd" => Box::new(
            Sgd::new(SgdConfig {
                momentum: 0.9,
                dampening: 0.1,
                ..SgdConfig::new(0.05)
            })
            .unwrap(),
        ),
        "sgd_nesterov_wd" => Box::new(
            Sgd::new(SgdConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.01,
                ..SgdConfig::new(0.05)
            })
            .unwrap(),
        ),
        "adam_amsgrad" | "adam_groups" => Box::new(
            Adam::new(AdamConfig {
                amsgrad: true,
                weight_decay: 0.01,
                ..AdamConfig::new(0.05)
            })
            .unwrap(),
        ),
        "adamw" => Box::new(AdamW::new(AdamWConfig::new(0.05)).unwrap()),
        "rmsprop_centered_momentum" => Box::new(
            RmsProp::new(RmsPropConfig {
                centered: true,
                momentum: 0.5,
                ..RmsPropConfig::new(0.01)
            })
            .unwrap(),
        ),
        "adagrad" => Box::new(
            Adagrad::new(AdagradConfig {
                lr_decay: 0.01,
                initial_accumulator_value: 0.1,
                ..AdagradConfig::new(0.1)
            })
            .unwrap(),
        ),
        "adadelta" => Box::new(Adadelta::new(AdadeltaConfig::default()).unwrap()),
        "lion" => Box::new(
            Lion::new(LionConfig {
                weight_decay: 0.1,
                ..LionConfig::new(0.01)
            })
            .unwrap(),
        ),
        other => panic!("{other}"),
    }
}

fn params<T: Element>() -> Vec<Param<T>> {
    let w: Vec<T> = [1.2, 0.3, -0.3, 1.8, -1.4, -0.1]
        .iter()
        .map(|&x| T::from_f64_lossy(x))
        .collect();
    let b: Vec<T> = [0.4, -2.0, 0.8, -0.6]
        .iter()
        .map(|&x| T::from_f64_lossy(x))
        .collect();
    vec![
        Param::new(Tensor::from_vec(w, &[2, 3]).unwrap()),
        Param::new(Tensor::from_vec(b, &[4]).unwrap()),
    ]
}

/// Gradients of the fixture's problem (with fixed c = 1.5, t = 0.2), `b`
/// absent at steps 5 and 25.
fn grads<T: Element>(ps: &[Param<T>], step: usize) -> Gradients<T> {
    let mut g = Gradients::new();
    for (i, p) in ps.iter().enumerate() {
        if i == 1 && (step == 5 || step == 25) {
            continue;
        }
        let c = T::from_f64_lossy(1.5);
        let t = T::from_f64_lossy(0.2);
        let k = T::from_f64_lossy(0.3);
        let three = T::from_f64_lossy(3.0);
        let v = p.value().map(|x| c * (x - t) + k * (three * x).cos());
        g.insert(p.id(), v);
    }
    g
}

fn setup<T: Element>(kind: &str, ps: &[Param<T>]) -> Box<dyn Optimizer<T>> {
    let mut opt = build::<T>(kind);
    if kind == "adam_groups" {
        opt.add_param_group(
            &[ps[1].id()],
            GroupOverrides {
                lr: Some(0.01),
                weight_decay: Some(0.2),
            },
        )
        .unwrap();
    }
    opt
}

fn run<T: Element>(opt: &mut dyn Optimizer<T>, ps: &mut [Param<T>], from: usize, to: usize) {
    for step in from..to {
        let g = grads(ps, step);
        if step == 12 {
            // A schedule changed the rate mid-run: it must be restored too.
            opt.set_learning_rate(opt.learning_rate() * 0.5);
        }
        let mut refs: Vec<&mut Param<T>> = ps.iter_mut().collect();
        opt.step(&mut refs, &g).unwrap();
    }
}

fn bits<T: Element>(ps: &[Param<T>]) -> Vec<u64> {
    ps.iter()
        .flat_map(|p| {
            p.value()
                .as_slice()
                .iter()
                .map(|x| x.to_f64_exact().to_bits())
        })
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("anneal-optim-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn resume_is_bit_identical<T: Element>(kind: &str) {
    // Uninterrupted.
    let mut ps = params::<T>();
    let mut opt = setup(kind, &ps);
    run(opt.as_mut(), &mut ps, 0, 50);
    let reference = bits(&ps);

    // 20 steps, save, "new process": fresh params (new ids) and optimiser.
    let mut ps = params::<T>();
    let mut opt = setup(kind, &ps);
    run(opt.as_mut(), &mut ps, 0, 20);
    let path = tmp(&format!("{kind}-{:?}.safetensors", T::DTYPE));
    opt.state_dict().save(&path).unwrap();
    let values: Vec<Tensor<T>> = ps.iter().map(|p| p.value().clone()).collect();
    drop((opt, ps));

    let mut ps: Vec<Param<T>> = values.into_iter().map(Param::new).collect();
    let mut opt = setup(kind, &ps);
    let state = OptimizerState::<T>::load(&path).unwrap();
    assert_eq!(state, {
        // The file holds exactly what state_dict gave.

        OptimizerState::<T>::from_bytes(&std::fs::read(&path).unwrap()).unwrap()
    });
    opt.load_state_dict(&state).unwrap();
    assert_eq!(
        opt.state_dict(),
        state,
        "{kind}: load then state_dict is the identity"
    );
    run(opt.as_mut(), &mut ps, 20, 50);
    assert_eq!(
        bits(&ps),
        reference,
        "{kind} ({:?}): resumed run differs",
        T::DTYPE
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn resumed_runs_are_bit_identical_f32() {
    for kind in KINDS {
        resume_is_bit_identical::<f32>(kind);
    }
}

#[test]
fn resumed_runs_are_bit_identical_f64() {
    for kind in KINDS {
        resume_is_bit_identical::<f64>(kind);
    }
}

#[test]
fn in_memory_reload_into_the_same_parameters() {
    // Same process, same parameters, same optimiser: roll back and replay.
    let mut ps = params::<f64>();
    let mut opt = setup("adam_amsgrad", &ps);
    run(opt.as_mut(), &mut ps, 0, 10);
    let saved = opt.state_dict();
    let saved_values: Vec<Tensor<f64>> = ps.iter().map(|p| p.value().clone()).collect();
    run(opt.as_mut(), &mut ps, 10, 20);
    let after = bits(&ps);
    for (p, v) in ps.iter_mut().zip(saved_values) {
        p.set_value(v).unwrap();
    }
    opt.load_state_dict(&saved).unwrap();
    run(opt.as_mut(), &mut ps, 10, 20);
    assert_eq!(bits(&ps), after);
}

fn small_state() -> Vec<u8> {
    let mut ps = params::<f32>();
    let mut opt = setup("sgd", &ps);
    run(opt.as_mut(), &mut ps, 0, 3);
    opt.state_dict().to_bytes().unwrap()
}

#[test]
fn truncated_files_are_errors() {
    let bytes = small_state();
    for len in 0..bytes.len() {
        assert!(
            OptimizerState::<f32>::from_bytes(&bytes[..len]).is_err(),
            "truncated to {len} of {} bytes",
            bytes.len()
        );
    }
    let path = tmp("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = OptimizerState::<f32>::load(&path).unwrap_err();
    assert!(e.to_string().contains("truncated.safetensors"), "{e}");
    std::fs::remove_file(&path).ok();
    assert!(OptimizerState::<f32>::load(tmp("does-not-exist")).is_err());
}

#[test]
fn every_flipped_bit_is_detected() {
    let bytes = small_state();
    let mut undetected = Vec::new();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if OptimizerState::<f32>::from_bytes(&b).is_ok() {
                undetected.push((i, bit, b[i] as char));
            }
        }
    }
    assert!(undetected.is_empty(), "undetected flips: {undetected:?}");
}

#[test]
fn mismatches_are_errors() {
    let mut ps = params::<f32>();
    let mut adam = setup("adam_amsgrad", &ps);
    run(adam.as_mut(), &mut ps, 0, 3);
    let state = adam.state_dict();

    // Another algorithm.
    let mut sgd = build::<f32>("sgd");
    let e = sgd.load_state_dict(&state).unwrap_err();
    assert!(e.to_string().contains("Adam"), "{e}");

    // Another number of groups.
    let mut grouped = setup::<f32>("adam_groups", &params());
    let e = grouped.load_state_dict(&state).unwrap_err();
    assert!(e.to_string().contains("groups"), "{e}");

    // A missing buffer.
    let mut broken = state.clone();
    broken.params.get_mut(&0).unwrap().buffers.remove("exp_avg");
    let e = build::<f32>("adam_amsgrad")
        .load_state_dict(&broken)
        .unwrap_err();
    assert!(e.to_string().contains("exp_avg"), "{e}");

    // A missing hyper-parameter.
    let mut broken = state.clone();
    broken.hyper.remove("beta2");
    let e = build::<f32>("adam_amsgrad")
        .load_state_dict(&broken)
        .unwrap_err();
    assert!(e.to_string().contains("beta2"), "{e}");

    // An invalid hyper-parameter.
    let mut broken = state.clone();
    broken.hyper.insert("beta1".into(), 1.5);
    assert!(build::<f32>("adam_amsgrad")
        .load_state_dict(&broken)
        .is_err());

    // Parameters passed in another order: an error at the next step, and nothing changes.
    let mut fresh = build::<f32>("adam_amsgrad");
    fresh.load_state_dict(&state).unwrap();
    let mut ps = params::<f32>();
    ps.reverse();
    let before = bits(&ps);
    let g = grads(&ps, 0);
    let mut refs: Vec<&mut Param<f32>> = ps.iter_mut().collect();
    let e = fresh.step(&mut refs, &g).unwrap_err();
    assert!(e.to_string().contains("another order"), "{e}");
    assert_eq!(bits(&ps), before);

    // f64 file into an f32 optimiser.
    let bytes = state.to_bytes().unwrap();
    assert!(OptimizerState::<f64>::from_bytes(&bytes).is_err());
}

#[test]
fn wrong_gradient_shape_is_an_error_and_changes_nothing() {
    let mut ps = params::<f64>();
    let mut opt = build::<f64>("adamw");
    let mut g = grads(&ps, 0);
    g.insert(ps[1].id(), Tensor::zeros(&[5]).unwrap());
    let before = bits(&ps);
    let mut refs: Vec<&mut Param<f64>> = ps.iter_mut().collect();
    let e = opt.step(&mut refs, &g).unwrap_err();
    assert!(e.to_string().contains("[4] × [5]"), "{e}");
    assert_eq!(bits(&ps), before);
    assert!(opt.state_dict().params.is_empty());
}

#[test]
fn a_huge_parameter_number_is_not_an_allocation() {
    // A crafted (checksum-consistent) state naming parameter 10¹⁸ loads as
    // data and binds to nothing; it must not allocate per missing index.
    let mut ps = params::<f32>();
    let mut opt = setup("adam_amsgrad", &ps);
    run(opt.as_mut(), &mut ps, 0, 2);
    let mut state = opt.state_dict();
    let s0 = state.params.remove(&0).unwrap();
    state.params.insert(1_000_000_000_000_000_000, s0);
    let back = OptimizerState::<f32>::from_bytes(&state.to_bytes().unwrap()).unwrap();
    let mut fresh = build::<f32>("adam_amsgrad");
    fresh.load_state_dict(&back).unwrap();
    assert_eq!(fresh.state_dict(), back);
}
