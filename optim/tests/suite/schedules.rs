//! 100 steps of every learning-rate schedule against PyTorch 1.13's
//! `torch.optim.lr_scheduler`, recorded by `tests/fixtures/generate.py` into
//! `schedules.json` (`lrs[t]` = the rate used by step `t`).

use anneal_optim::{
    AnnealStrategy, BoxedSchedule, ChainedLr, CosineAnnealingLr, CosineAnnealingWarmRestarts,
    ExponentialLr, LinearLr, LrSchedule, Mode, MultiStepLr, OneCycleConfig, OneCycleLr, Optimizer,
    PlateauConfig, ReduceLrOnPlateau, SequentialLr, Sgd, SgdConfig, StepLr, ThresholdMode,
};
use serde_json::Value;

/// Required: 1e-9, relative (the plateau case goes down to ~5e-9).
const RTOL: f64 = 1e-9;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedules.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("valid JSON")
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("option {key} missing in {v}"))
}

fn u(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("option {key} missing in {v}")) as usize
}

/// The step-count schedule a fixture entry describes.
fn build(kind: &str, o: &Value, base: f64) -> BoxedSchedule {
    match kind {
        "StepLR" => Box::new(StepLr::new(base, u(o, "step_size"), f(o, "gamma")).unwrap()),
        "MultiStepLR" => {
            let ms: Vec<usize> = o["milestones"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_u64().unwrap() as usize)
                .collect();
            Box::new(MultiStepLr::new(base, &ms, f(o, "gamma")).unwrap())
        }
        "ExponentialLR" => Box::new(ExponentialLr::new(base, f(o, "gamma")).unwrap()),
        "CosineAnnealingLR" => {
            Box::new(CosineAnnealingLr::new(base, u(o, "T_max"), f(o, "eta_min")).unwrap())
        }
        "CosineAnnealingWarmRestarts" => Box::new(
            CosineAnnealingWarmRestarts::new(base, u(o, "T_0"), u(o, "T_mult"), f(o, "eta_min"))
                .unwrap(),
        ),
        "LinearLR" => Box::new(
            LinearLr::new(
                base,
                f(o, "start_factor"),
                f(o, "end_factor"),
                u(o, "total_iters"),
            )
            .unwrap(),
        ),
        "OneCycleLR" => {
            assert_eq!(
                o["cycle_momentum"], false,
                "momentum cycling is not implemented"
            );
            let mut c = OneCycleConfig::new(f(o, "max_lr"), u(o, "total_steps"));
            c.pct_start = f(o, "pct_start");
            c.div_factor = f(o, "div_factor");
            c.final_div_factor = f(o, "final_div_factor");
            c.three_phase = o["three_phase"].as_bool().unwrap();
            c.anneal_strategy = match o["anneal_strategy"].as_str().unwrap() {
                "cos" => AnnealStrategy::Cos,
                "linear" => AnnealStrategy::Linear,
                s => panic!("anneal_strategy {s}"),
            };
            Box::new(OneCycleLr::new(c).unwrap())
        }
        "SequentialLR" | "ChainedScheduler" => {
            let subs: Vec<BoxedSchedule> = o["schedulers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| build(s["scheduler"].as_str().unwrap(), &s["options"], base))
                .collect();
            if kind == "ChainedScheduler" {
                Box::new(ChainedLr::new(subs).unwrap())
            } else {
                let ms: Vec<usize> = o["milestones"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_u64().unwrap() as usize)
                    .collect();
                Box::new(SequentialLr::new(subs, &ms).unwrap())
            }
        }
        other => panic!("unknown scheduler {other}"),
    }
}

fn check(name: &str, t: usize, got: f64, want: f64) -> f64 {
    let rel = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        rel <= RTOL,
        "{name}: lr[{t}] = {got:e}, PyTorch {want:e} (rel {rel:e})"
    );
    rel
}

#[test]
fn every_schedule_matches_pytorch() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    let mut report = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let kind = case["scheduler"].as_str().unwrap();
        let base = f(case, "base_lr");
        let want: Vec<f64> = case["lrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(want.len(), 100);
        let mut worst = 0.0f64;
        if kind == "ReduceLROnPlateau" {
            let o = &case["options"];
            let config = PlateauConfig {
                mode: match o["mode"].as_str().unwrap() {
                    "min" => Mode::Min,
                    _ => Mode::Max,
                },
                factor: f(o, "factor"),
                patience: u(o, "patience"),
                threshold: f(o, "threshold"),
                threshold_mode: match o["threshold_mode"].as_str().unwrap() {
                    "rel" => ThresholdMode::Rel,
                    _ => ThresholdMode::Abs,
                },
                cooldown: u(o, "cooldown"),
                min_lr: f(o, "min_lr"),
                eps: f(o, "eps"),
            };
            let metrics = case["metrics"].as_array().unwrap();
            let mut s = ReduceLrOnPlateau::new(base, config).unwrap();
            for (t, &w) in want.iter().enumerate() {
                worst = worst.max(check(name, t, s.lr(), w));
                s.step(metrics[t].as_f64().unwrap());
            }
        } else {
            let mut s = build(kind, &case["options"], base);
            for (t, &w) in want.iter().enumerate() {
                worst = worst.max(check(name, t, s.lr(), w));
                assert_eq!(s.lr(), s.lr_at(t));
                s.step();
            }
        }
        report.push(format!("{name:32} max rel err {worst:.2e}"));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn apply_drives_the_optimiser_and_its_groups() {
    let mut opt = Sgd::<f64>::new(SgdConfig::new(0.1)).unwrap();
    let other = anneal_autograd::ParamId::fresh();
    opt.add_param_group(
        &[other],
        anneal_optim::GroupOverrides {
            lr: Some(0.01),
            weight_decay: None,
        },
    )
    .unwrap();
    let mut s = StepLr::new(opt.learning_rate(), 2, 0.5).unwrap();
    for _ in 0..4 {
        s.step();
    }
    s.apply(&mut opt);
    assert_eq!(opt.learning_rate(), 0.025);
    assert!((opt.groups()[1].lr - 0.0025).abs() < 1e-17);

    let mut p = ReduceLrOnPlateau::new(
        0.1,
        PlateauConfig {
            patience: 0,
            ..PlateauConfig::default()
        },
    )
    .unwrap();
    p.step(1.0);
    p.step(1.0);
    p.apply(&mut opt);
    assert!((opt.learning_rate() - 0.01).abs() < 1e-17);
}

#[test]
fn a_restored_schedule_continues() {
    let fx = fixture();
    let case = &fx["cases"][4]; // cosine warm restarts
    let mut a = build(case["scheduler"].as_str().unwrap(), &case["options"], 0.1);
    let mut b = build(case["scheduler"].as_str().unwrap(), &case["options"], 0.1);
    for _ in 0..37 {
        a.step();
    }
    b.set_step(a.current_step());
    for _ in 0..20 {
        assert_eq!(a.lr().to_bits(), b.lr().to_bits());
        a.step();
        b.step();
    }
}
