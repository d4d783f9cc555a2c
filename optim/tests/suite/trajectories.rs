//! 50-step trajectories of every optimiser against PyTorch 1.13 (float64),
//! recorded by `tests/fixtures/generate.py` into `optimizers.json`.
//!
//! The problem: parameters `w` [2, 3] and `b` [4], gradient
//! `g = c·(p − t) + 0.3·cos(3·p)` element-wise; `trajectory[k]` holds both
//! parameters after step `k`. At the steps in `absent_grad_steps`, `b` has no
//! gradient and must be skipped entirely (value, state, step count, decay).

use anneal_autograd::{Gradients, Param};
use anneal_optim::{
    Adadelta, AdadeltaConfig, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig,
    GroupOverrides, Lion, LionConfig, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use anneal_tensor::Tensor;
use serde_json::Value;

/// Required: 1e-6 relative. What we hold ourselves to (and get) is far tighter.
const RTOL: f64 = 1e-10;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optimizers.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("valid JSON")
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("option {key} missing in {v}"))
}

fn flag(v: &Value, key: &str) -> bool {
    v[key]
        .as_bool()
        .unwrap_or_else(|| panic!("flag {key} missing in {v}"))
}

fn betas(v: &Value) -> (f64, f64) {
    (
        v["betas"][0].as_f64().unwrap(),
        v["betas"][1].as_f64().unwrap(),
    )
}

fn vec_of(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The optimiser a case describes, from its recorded PyTorch options.
fn build(kind: &str, o: &Value) -> Box<dyn Optimizer<f64>> {
    match kind {
        "sgd" => Box::new(
            Sgd::new(SgdConfig {
                lr: f(o, "lr"),
                momentum: f(o, "momentum"),
                dampening: f(o, "dampening"),
                weight_decay: f(o, "weight_decay"),
                nesterov: flag(o, "nesterov"),
                maximize: flag(o, "maximize"),
            })
            .unwrap(),
        ),
        "adam" => Box::new(
            Adam::new(AdamConfig {
                lr: f(o, "lr"),
                betas: betas(o),
                eps: f(o, "eps"),
                weight_decay: f(o, "weight_decay"),
                amsgrad: flag(o, "amsgrad"),
                maximize: flag(o, "maximize"),
            })
            .unwrap(),
        ),
        "adamw" => Box::new(
            AdamW::new(AdamWConfig {
                lr: f(o, "lr"),
                betas: betas(o),
                eps: f(o, "eps"),
                weight_decay: f(o, "weight_decay"),
                amsgrad: flag(o, "amsgrad"),
                maximize: flag(o, "maximize"),
            })
            .unwrap(),
        ),
        "rmsprop" => Box::new(
            RmsProp::new(RmsPropConfig {
                lr: f(o, "lr"),
                alpha: f(o, "alpha"),
                eps: f(o, "eps"),
                weight_decay: f(o, "weight_decay"),
                momentum: f(o, "momentum"),
                centered: flag(o, "centered"),
                maximize: flag(o, "maximize"),
            })
            .unwrap(),
        ),
        "adagrad" => Box::new(
            Adagrad::new(AdagradConfig {
                lr: f(o, "lr"),
                lr_decay: f(o, "lr_decay"),
                weight_decay: f(o, "weight_decay"),
                initial_accumulator_value: f(o, "initial_accumulator_value"),
                eps: f(o, "eps"),
                maximize: flag(o, "maximize"),
            })
            .unwrap(),
        ),
        "adadelta" => Box::new(
            Adadelta::new(AdadeltaConfig {
                lr: f(o, "lr"),
                rho: f(o, "rho"),
                eps: f(o, "eps"),
                weight_decay: f(o, "weight_decay"),
                maximize: flag(o, "maximize"),
            })
            .unwrap(),
        ),
        "lion" => Box::new(
            Lion::new(LionConfig {
                lr: f(o, "lr"),
                betas: betas(o),
                weight_decay: f(o, "weight_decay"),
                maximize: false,
            })
            .unwrap(),
        ),
        other => panic!("unknown optimiser {other}"),
    }
}

struct Problem {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    init: Vec<Vec<f64>>,
    c: Vec<Vec<f64>>,
    t: Vec<Vec<f64>>,
}

fn problem(fx: &Value) -> Problem {
    let pr = &fx["problem"];
    let names: Vec<String> = pr["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let spec = |n: &str, k: &str| vec_of(&pr["params"][n][k]);
    Problem {
        shapes: names
            .iter()
            .map(|n| {
                pr["params"][n]["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect()
            })
            .collect(),
        init: names.iter().map(|n| spec(n, "init")).collect(),
        c: names.iter().map(|n| spec(n, "c")).collect(),
        t: names.iter().map(|n| spec(n, "t")).collect(),
        names,
    }
}

/// Runs one case; returns the largest relative error over all steps.
fn run_case(pb: &Problem, case: &Value, steps: usize) -> f64 {
    let name = case["name"].as_str().unwrap();
    let mut opt = build(case["optimizer"].as_str().unwrap(), &case["options"]);
    let mut params: Vec<Param<f64>> = pb
        .init
        .iter()
        .zip(&pb.shapes)
        .map(|(v, s)| Param::new(Tensor::from_vec(v.clone(), s).unwrap()))
        .collect();
    if let Some(groups) = case["param_groups"].as_array() {
        // Group 0 of the fixture holds `w` with the defaults; later groups
        // override lr / weight_decay.
        assert_eq!(groups[0]["params"][0], "w");
        assert_eq!(f(&groups[0], "lr"), f(&case["options"], "lr"));
        for g in &groups[1..] {
            let ids: Vec<_> = g["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    let i = pb
                        .names
                        .iter()
                        .position(|m| m == n.as_str().unwrap())
                        .unwrap();
                    params[i].id()
                })
                .collect();
            opt.add_param_group(
                &ids,
                GroupOverrides {
                    lr: Some(f(g, "lr")),
                    weight_decay: Some(f(g, "weight_decay")),
                },
            )
            .unwrap();
        }
    }
    let absent: Vec<u64> = case["absent_grad_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let traj = case["trajectory"].as_array().unwrap();
    assert_eq!(traj.len(), steps, "{name}");
    let mut worst = 0.0f64;
    for (k, expected) in traj.iter().enumerate() {
        let mut grads = Gradients::new();
        for (i, p) in params.iter().enumerate() {
            if pb.names[i] == "b" && absent.contains(&(k as u64)) {
                continue;
            }
            let g: Vec<f64> = p
                .value()
                .as_slice()
                .iter()
                .zip(&pb.c[i])
                .zip(&pb.t[i])
                .map(|((&p, &c), &t)| c * (p - t) + 0.3 * (3.0 * p).cos())
                .collect();
            grads.insert(p.id(), Tensor::from_vec(g, &pb.shapes[i]).unwrap());
        }
        let mut refs: Vec<&mut Param<f64>> = params.iter_mut().collect();
        opt.step(&mut refs, &grads).unwrap();
        for (i, p) in params.iter().enumerate() {
            let want = vec_of(&expected[&pb.names[i]]);
            for (j, (&got, &want)) in p.value().as_slice().iter().zip(&want).enumerate() {
                let rel = (got - want).abs() / want.abs().max(1e-300);
                assert!(
                    rel <= RTOL || (got - want).abs() <= 1e-15,
                    "{name}: step {k}, {}[{j}]: got {got:e}, PyTorch {want:e} (rel {rel:e})",
                    pb.names[i]
                );
                worst = worst.max(rel);
            }
        }
    }
    worst
}

#[test]
fn every_case_matches_pytorch() {
    let fx = fixture();
    let pb = problem(&fx);
    let steps = fx["steps"].as_u64().unwrap() as usize;
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 34, "all cases present");
    let mut report = Vec::new();
    for case in cases {
        let worst = run_case(&pb, case, steps);
        report.push(format!(
            "{:45} max rel err {worst:.2e}",
            case["name"].as_str().unwrap()
        ));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn every_rule_and_option_is_covered() {
    let fx = fixture();
    let names: Vec<&str> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for needed in [
        "sgd_nesterov",
        "sgd_momentum_dampening",
        "sgd_maximize",
        "adam_amsgrad",
        "adam_weight_decay",
        "adamw_wd_amsgrad_absent_b",
        "rmsprop_centered_momentum_wd",
        "adagrad_lr_decay",
        "adagrad_initial_accumulator",
        "adadelta_rho_eps_wd",
        "lion_wd_betas",
        "sgd_momentum_param_groups",
    ] {
        assert!(names.contains(&needed), "{needed}");
    }
}
