//! Accuracy-driven quantisation: a model with one deliberately fragile
//! layer, determinism, the budget, and the JSON form of a plan.
//!
//! The fragile layer (`2`, a Linear 64 → 64) carries weights of 1000 on an
//! input feature that the layer before always leaves at zero (a dead ReLU
//! unit): they never change the float output, but they set the int8 scale
//! of every row (per tensor and per channel alike) to 1000/127 ≈ 7.9, so all
//! its ordinary weights (|w| < 0.125) round to zero; int4 blocks of 32 lose
//! the same first block of each row. Only float keeps that layer's output.

use std::sync::atomic::{AtomicUsize, Ordering};

use anneal_autograd::{no_grad, Var};
use anneal_layers::{LinearConfig, Module, ModuleExt, Relu, Sequential};
use anneal_quant::{
    apply_config, auto_quantize, copy_state, layer_names, quantize_static, AutoQuantOptions,
    Calibration, Criterion, LayerScheme, Objective, Phase, QuantConfig,
};
use anneal_tensor::{Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

const DEAD: usize = 5;

/// The architecture with seeded PyTorch-default weights.
fn architecture(seed: u64) -> Result<Box<dyn Module<f32>>> {
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(Box::new(
        Sequential::new()
            .push(LinearConfig::new(16, 64).init::<f32>(&mut rng)?)
            .push(Relu)
            .push(LinearConfig::new(64, 64).init::<f32>(&mut rng)?)
            .push(Relu)
            .push(LinearConfig::new(64, 10).init::<f32>(&mut rng)?),
    ))
}

/// The float model: unit `DEAD` of layer 0 is always zero after the ReLU,
/// and layer 2 has weight 1000 on that unit in every row.
fn fragile_model() -> Box<dyn Module<f32>> {
    let mut m = architecture(7).unwrap();
    m.visit_mut("", &mut |name, e| {
        if let anneal_layers::EntryMut::Param(p) = e {
            let shape = p.shape().to_vec();
            let v = p.value_mut().data_mut();
            match name {
                "0.weight" => v[DEAD * 16..(DEAD + 1) * 16].fill(0.0),
                "0.bias" => v[DEAD] = -1.0,
                "2.weight" => (0..shape[0]).for_each(|r| v[r * 64 + DEAD] = 1000.0),
                _ => {}
            }
        }
    });
    m
}

/// Inputs whose float prediction has a clear margin (top-1 minus top-2
/// logit above the median), labelled with that prediction, so the float
/// model scores 1.0 and only real damage changes a label.
fn dataset(model: &dyn Module<f32>) -> (Tensor<f32>, Vec<usize>) {
    let x = Tensor::<f32>::randn_seeded(&[2048, 16], 11).unwrap();
    let logits = predict(model, &x);
    let mut rows: Vec<(f32, usize, usize)> = logits
        .chunks(10)
        .enumerate()
        .map(|(i, r)| {
            let mut s = r.to_vec();
            s.sort_by(|a, b| b.total_cmp(a));
            let arg = r.iter().position(|&v| v == s[0]).unwrap();
            (s[0] - s[1], i, arg)
        })
        .collect();
    let mut margins: Vec<f32> = rows.iter().map(|r| r.0).collect();
    margins.sort_by(|a, b| a.total_cmp(b));
    let median = margins[margins.len() / 2];
    rows.retain(|r| r.0 > median);
    let data: Vec<f32> = rows
        .iter()
        .flat_map(|r| x.as_slice()[r.1 * 16..(r.1 + 1) * 16].to_vec())
        .collect();
    let n = rows.len();
    (
        Tensor::from_vec(data, &[n, 16]).unwrap(),
        rows.iter().map(|r| r.2).collect(),
    )
}

fn predict(model: &dyn Module<f32>, x: &Tensor<f32>) -> Vec<f32> {
    no_grad(|| model.forward(&Var::constant(x.clone())))
        .unwrap()
        .value()
        .to_vec()
}

fn accuracy(model: &dyn Module<f32>, x: &Tensor<f32>, labels: &[usize]) -> f64 {
    let logits = predict(model, x);
    let hits = logits
        .chunks(10)
        .zip(labels)
        .filter(|(r, &l)| {
            let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            r[l] == m
        })
        .count();
    hits as f64 / labels.len() as f64
}

fn calibration() -> Vec<Tensor<f32>> {
    (0..2)
        .map(|i| Tensor::<f32>::randn_seeded(&[128, 16], 100 + i).unwrap())
        .collect()
}

fn params(m: &dyn Module<f32>) -> Vec<Vec<f32>> {
    m.named_parameters()
        .iter()
        .map(|(_, p)| p.value().to_vec())
        .collect()
}

#[test]
fn fragile_layer_stays_float_and_the_rest_is_quantised() {
    let float = fragile_model();
    let (x, labels) = dataset(float.as_ref());
    assert_eq!(accuracy(float.as_ref(), &x, &labels), 1.0);
    let before = params(float.as_ref());
    let calib = calibration();

    // Plain int8 per tensor everywhere misses the 1 % criterion by far.
    let mut plain = architecture(0).unwrap();
    copy_state(float.as_ref(), plain.as_mut()).unwrap();
    let int8 = QuantConfig::uniform(LayerScheme::Int8 {
        per_channel: false,
        calibration: Calibration::MinMax,
    });
    let plain_report = quantize_static(plain.as_mut(), &int8, &calib).unwrap();
    let plain_acc = accuracy(plain.as_ref(), &x, &labels);
    assert!(
        !Criterion::default().is_met(1.0, plain_acc),
        "all-int8 per-tensor should miss the criterion, got {plain_acc}"
    );

    let evals = AtomicUsize::new(0);
    let mut eval = |m: &dyn Module<f32>| -> Result<f64> {
        evals.fetch_add(1, Ordering::Relaxed);
        Ok(accuracy(m, &x, &labels))
    };
    let build = || architecture(0);
    let opts = AutoQuantOptions::default();
    let r = auto_quantize(float.as_ref(), &build, &calib, &mut eval, &opts).unwrap();
    eprintln!(
        "all-int8 per-tensor: accuracy {plain_acc:.4}, {} bytes\n{}\n{}\nsensitivity {:?}",
        plain_report.quant_model_bytes,
        r.table(),
        r.history(),
        r.sensitivity
    );

    // The criterion holds, the fragile layer is float (or int8 per channel),
    // every other layer is quantised.
    assert!(Criterion::default().is_met(r.float_accuracy, r.accuracy));
    assert_eq!(r.float_accuracy, 1.0);
    assert!(matches!(
        r.config.scheme_for("2"),
        LayerScheme::Float
            | LayerScheme::Int8 {
                per_channel: true,
                ..
            }
    ));
    for l in ["0", "4"] {
        assert_ne!(r.config.scheme_for(l), LayerScheme::Float, "layer {l}");
    }
    assert!(r.bytes < r.float_bytes && r.chosen_trial > 0);
    // The fragile layer is ranked most sensitive and fell back first.
    assert_eq!(r.sensitivity[0].name, "2");
    assert!(r.sensitivity[0].accuracy_drop > 0.01);
    assert!(r.sensitivity[1..]
        .iter()
        .all(|l| l.accuracy_drop < r.sensitivity[0].accuracy_drop));
    assert_eq!(r.trials[0].phase, Phase::Aggressive);
    assert!(!r.trials[0].meets_criterion);
    assert!(r.trials.len() <= opts.budget && !r.budget_exhausted);
    assert_eq!(evals.load(Ordering::Relaxed), r.trials.len() + 1);
    // The trial numbers of the result are what the plan really does.
    let mut again = architecture(3).unwrap();
    copy_state(float.as_ref(), again.as_mut()).unwrap();
    let report = apply_config(again.as_mut(), &r.config, &calib).unwrap();
    assert_eq!(report.quant_model_bytes, r.bytes);
    assert_eq!(accuracy(again.as_ref(), &x, &labels), r.accuracy);
    // The float model was only read.
    assert_eq!(params(float.as_ref()), before);
    assert_eq!(accuracy(float.as_ref(), &x, &labels), 1.0);
    // The table names every layer with its scheme.
    let t = r.table();
    assert!(
        t.contains("| 2 | float |") || t.contains("| 2 | int8 per-channel |"),
        "{t}"
    );

    // Same seed ⇒ same search and answer.
    let r2 = auto_quantize(float.as_ref(), &build, &calib, &mut eval, &opts).unwrap();
    assert_eq!(r2, r);
}

#[test]
fn budget_runs_out_with_the_best_plan_found() {
    let float = fragile_model();
    let (x, labels) = dataset(float.as_ref());
    let build = || architecture(0);
    let mut eval = |m: &dyn Module<f32>| -> Result<f64> { Ok(accuracy(m, &x, &labels)) };
    // One trial: the aggressive plan fails, nothing else is tried, and the
    // answer is the float model, which meets the criterion by definition.
    let opts = AutoQuantOptions {
        budget: 1,
        ..Default::default()
    };
    let r = auto_quantize(float.as_ref(), &build, &calibration(), &mut eval, &opts).unwrap();
    assert!(r.budget_exhausted);
    assert_eq!(r.trials.len(), 1);
    assert_eq!(r.chosen_trial, 0);
    assert_eq!(r.bytes, r.float_bytes);
    assert!(r
        .config
        .overrides
        .values()
        .all(|s| *s == LayerScheme::Float));
    // Five trials: aggressive plus the three sensitivity trials, then one
    // fallback; the best plan meeting the criterion among them is kept.
    let opts = AutoQuantOptions {
        budget: 5,
        ..Default::default()
    };
    let r = auto_quantize(float.as_ref(), &build, &calibration(), &mut eval, &opts).unwrap();
    assert_eq!(r.trials.len(), 5);
    assert!(r.budget_exhausted);
    let best = r
        .trials
        .iter()
        .filter(|t| t.meets_criterion)
        .map(|t| t.bytes)
        .min()
        .unwrap_or(r.float_bytes);
    assert_eq!(r.bytes, best);
    assert!(r.accuracy >= Criterion::default().threshold(1.0) - 1e-9);
}

#[test]
fn bad_options_and_models_are_errors() {
    let float = fragile_model();
    let build = || architecture(0);
    let mut eval = |_: &dyn Module<f32>| -> Result<f64> { Ok(1.0) };
    let calib = calibration();
    let with = |o: AutoQuantOptions| o;
    for (opts, needle) in [
        (
            with(AutoQuantOptions {
                budget: 0,
                ..Default::default()
            }),
            "budget",
        ),
        (
            with(AutoQuantOptions {
                calibrations: vec![],
                ..Default::default()
            }),
            "calibration method",
        ),
        (
            with(AutoQuantOptions {
                criterion: Criterion::RelativeDrop(1.5),
                ..Default::default()
            }),
            "drop",
        ),
    ] {
        let e = auto_quantize(float.as_ref(), &build, &calib, &mut eval, &opts).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
    let e = auto_quantize(
        float.as_ref(),
        &build,
        &[],
        &mut eval,
        &AutoQuantOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("calibration batches"), "{e}");
    // A builder of another architecture cannot receive the state.
    let other = || -> Result<Box<dyn Module<f32>>> {
        let mut rng = StdRng::seed_from_u64(0);
        Ok(Box::new(LinearConfig::new(16, 10).init::<f32>(&mut rng)?))
    };
    let e = auto_quantize(
        float.as_ref(),
        &other,
        &calib,
        &mut eval,
        &AutoQuantOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("copy_state"), "{e}");
    let mut nan = |_: &dyn Module<f32>| -> Result<f64> { Ok(f64::NAN) };
    let e = auto_quantize(
        float.as_ref(),
        &build,
        &calib,
        &mut nan,
        &AutoQuantOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
}

#[test]
fn criterion_parsing_and_thresholds() {
    assert_eq!(
        Criterion::parse("rel:0.01").unwrap(),
        Criterion::RelativeDrop(0.01)
    );
    assert_eq!(
        Criterion::parse("abs:0.005").unwrap(),
        Criterion::AbsoluteDrop(0.005)
    );
    for bad in [
        "", "0.01", "rel", "rel:x", "pct:0.01", "rel:-0.1", "rel:1", "abs:inf",
    ] {
        let e = Criterion::parse(bad).unwrap_err().to_string();
        assert!(e.contains("criterion") || e.contains("drop"), "{bad}: {e}");
    }
    // 1 % of 0.9 is 0.009; half a point is 0.005.
    assert!((Criterion::RelativeDrop(0.01).threshold(0.9) - 0.891).abs() < 1e-12);
    assert!((Criterion::AbsoluteDrop(0.005).threshold(0.98) - 0.975).abs() < 1e-12);
    assert!(Criterion::AbsoluteDrop(0.005).is_met(0.98, 0.975));
    assert!(!Criterion::AbsoluteDrop(0.005).is_met(0.98, 0.9749));
}

fn every_scheme() -> QuantConfig {
    QuantConfig::uniform(LayerScheme::Int8 {
        per_channel: false,
        calibration: Calibration::Entropy,
    })
    .with_layer("0", LayerScheme::Float)
    .with_layer(
        "2",
        LayerScheme::Int8 {
            per_channel: true,
            calibration: Calibration::Percentile(99.9),
        },
    )
    .with_layer("4", LayerScheme::Int4WeightOnly)
    .with_layer("5", LayerScheme::Int8WeightOnly)
    .with_layer("6", LayerScheme::DynamicInt8 { per_channel: true })
    .with_layer(
        "7",
        LayerScheme::Int8 {
            per_channel: false,
            calibration: Calibration::MeanStd(2.5),
        },
    )
    .with_layer(
        "8",
        LayerScheme::Int8 {
            per_channel: false,
            calibration: Calibration::Mse,
        },
    )
    .with_layer(
        "9",
        LayerScheme::Int8 {
            per_channel: true,
            calibration: Calibration::MovingAverage,
        },
    )
    .with_layer(
        "10",
        LayerScheme::Int8 {
            per_channel: false,
            calibration: Calibration::MinMax,
        },
    )
}

#[test]
fn json_round_trip() {
    let c = every_scheme();
    let text = c.to_json();
    assert_eq!(QuantConfig::from_json(&text, "mem").unwrap(), c);
    assert!(
        text.contains("\"calibration\": \"percentile:99.9\""),
        "{text}"
    );
    assert!(text.contains("\"scheme\": \"int4_weight_only\""), "{text}");

    // Through a file, checked against the model's layer names.
    let mut m = fragile_model();
    let names = layer_names(m.as_mut());
    assert_eq!(names, ["0", "2", "4"]);
    let plan = QuantConfig::uniform(LayerScheme::Float)
        .with_layer(
            "0",
            LayerScheme::Int8 {
                per_channel: true,
                calibration: Calibration::MeanStd(2.5),
            },
        )
        .with_layer("4", LayerScheme::Int4WeightOnly);
    let path = std::env::temp_dir().join(format!("anneal-quant-auto-{}.json", std::process::id()));
    plan.save_json(&path).unwrap();
    assert_eq!(QuantConfig::load_json(&path, &names).unwrap(), plan);
    std::fs::remove_file(&path).unwrap();

    // Optional fields take their defaults.
    let short = r#"{"format": "anneal-quant-config", "version": 1,
                    "layers": {"2": {"scheme": "int8"}}}"#;
    assert_eq!(
        QuantConfig::from_json(short, "mem").unwrap(),
        QuantConfig::uniform(LayerScheme::Float).with_layer(
            "2",
            LayerScheme::Int8 {
                per_channel: false,
                calibration: Calibration::MinMax
            }
        )
    );
}

#[test]
fn corrupt_json_is_a_clear_error() {
    let head = r#""format": "anneal-quant-config", "version": 1"#;
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not valid JSON"),
        ("[1, 2]".into(), "expected a JSON object"),
        (r#"{"version": 1}"#.into(), "format"),
        (
            r#"{"format": "anneal-quant-config", "version": 2}"#.into(),
            "version: expected 1, found 2",
        ),
        (format!(r#"{{{head}, "extra": 1}}"#), "extra: unknown field"),
        (
            format!(r#"{{{head}, "layers": {{"2": {{"scheme": "int3"}}}}}}"#),
            "layers.2.scheme: unknown scheme \"int3\"",
        ),
        (
            format!(r#"{{{head}, "layers": {{"2": "int8"}}}}"#),
            "layers.2: expected an object",
        ),
        (
            format!(r#"{{{head}, "layers": {{"2": {{"scheme": "int8", "calibration": "kl"}}}}}}"#),
            "layers.2.calibration: unknown calibration \"kl\"",
        ),
        (
            format!(
                r#"{{{head}, "layers": {{"2": {{"scheme": "int8", "calibration": "percentile:20"}}}}}}"#
            ),
            "percentile 20 must lie in (50, 100]",
        ),
        (
            format!(
                r#"{{{head}, "layers": {{"2": {{"scheme": "int8", "calibration": "meanstd:abc"}}}}}}"#
            ),
            "\"abc\" is not a number",
        ),
        (
            format!(r#"{{{head}, "layers": {{"2": {{"scheme": "int8", "per_channel": "yes"}}}}}}"#),
            "layers.2.per_channel: expected true or false",
        ),
        (
            format!(r#"{{{head}, "layers": {{"2": {{"scheme": "float", "per_channel": true}}}}}}"#),
            "layers.2.per_channel: unknown field for scheme \"float\"",
        ),
        (
            format!(r#"{{{head}, "default": {{"per_channel": true}}}}"#),
            "default: missing \"scheme\"",
        ),
        (
            format!(r#"{{{head}, "layers": [1]}}"#),
            "layers: expected an object",
        ),
    ];
    for (text, needle) in &cases {
        let e = QuantConfig::from_json(text, "plan.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plan.json") && e.contains(needle),
            "{text}\n→ {e}\n(expected {needle:?})"
        );
    }

    // Unknown layer names and unreadable files name the file.
    let path = std::env::temp_dir().join(format!("anneal-quant-bad-{}.json", std::process::id()));
    let plan =
        QuantConfig::uniform(LayerScheme::Float).with_layer("classifier.9", LayerScheme::Float);
    plan.save_json(&path).unwrap();
    let names = vec!["0".to_string(), "2".to_string(), "4".to_string()];
    let e = QuantConfig::load_json(&path, &names)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("layers.classifier.9: unknown layer")
            && e.contains("0, 2, 4"),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
    let e = QuantConfig::load_json(&path, &names)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
}

#[test]
fn apply_config_without_calibration() {
    let float = fragile_model();
    let mut m = architecture(1).unwrap();
    copy_state(float.as_ref(), m.as_mut()).unwrap();
    let static8 = QuantConfig::uniform(LayerScheme::Float).with_layer(
        "4",
        LayerScheme::Int8 {
            per_channel: false,
            calibration: Calibration::MinMax,
        },
    );
    let e = apply_config(m.as_mut(), &static8, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 4") && e.contains("calibration"), "{e}");
    let weights =
        QuantConfig::uniform(LayerScheme::Int4WeightOnly).with_layer("2", LayerScheme::Float);
    let r = apply_config(m.as_mut(), &weights, &[]).unwrap();
    assert!(r.quant_model_bytes < r.float_model_bytes);
    assert!(r.layers[0].scheme.contains("int4") && r.layers[1].scheme == "float");
}

#[test]
fn speed_objective_measures_throughput() {
    let float = fragile_model();
    let (x, labels) = dataset(float.as_ref());
    let build = || architecture(0);
    let mut eval = |m: &dyn Module<f32>| -> Result<f64> { Ok(accuracy(m, &x, &labels)) };
    let opts = AutoQuantOptions {
        objective: Objective::Speed,
        budget: 8,
        speed_repeats: 2,
        calibrations: vec![Calibration::MinMax],
        ..Default::default()
    };
    let r = auto_quantize(float.as_ref(), &build, &calibration(), &mut eval, &opts).unwrap();
    assert!(r.float_throughput.unwrap() > 0.0);
    assert!(r.trials.iter().all(|t| t.throughput.unwrap() > 0.0));
    // The answer is the fastest plan measured among those meeting the criterion.
    let fastest = r
        .trials
        .iter()
        .filter(|t| t.meets_criterion)
        .map(|t| t.throughput.unwrap())
        .chain(r.float_throughput)
        .fold(0.0, f64::max);
    assert_eq!(r.throughput.unwrap(), fastest);
    // The speed ladder starts from static int8 per tensor.
    assert_eq!(
        r.trials[0].config.scheme_for("0"),
        LayerScheme::Int8 {
            per_channel: false,
            calibration: Calibration::MinMax
        }
    );
}
