//! `anneal quantize --auto` on SmallCnn over the digits: with a 0.5-point
//! absolute criterion the tuned plan meets it, and it is smaller than the
//! all-int8 per-tensor model when that one misses the criterion, and no
//! larger than it when that one already meets it. The test prints and
//! asserts which of the two cases holds.

use anneal_optim::{Adam, AdamConfig};
use anneal_quant::{
    copy_state, quantize_static, AutoQuantOptions, Calibration, Criterion, LayerScheme, QuantConfig,
};
use anneal_zoo::autoquant::{calibration_batches, tune_digits};
use anneal_zoo::data::{load_digits, stratified_split};
use anneal_zoo::models::SmallCnnConfig;
use anneal_zoo::registry::build_model;
use anneal_zoo::trainer::{evaluate, train, TrainConfig};

#[test]
fn auto_meets_half_a_point_and_beats_all_int8_per_tensor() {
    let data = load_digits().unwrap();
    let split = stratified_split(&data.labels, 0.2, 0).unwrap();
    let (tr, te) = (
        data.subset(&split.train).unwrap(),
        data.subset(&split.test).unwrap(),
    );
    // The registry's small-cnn (seed 0), trained with Adam as `anneal train` does (6 epochs).
    let mut model = build_model("small-cnn", None, 0).unwrap();
    let mut opt = Adam::new(AdamConfig::new(3e-3)).unwrap();
    let cfg = TrainConfig {
        epochs: 6,
        ..Default::default()
    };
    train(&mut model, &mut opt, None, &tr, &te, &cfg).unwrap();
    let (_, float_acc) = evaluate(model.as_ref(), &te, 256).unwrap();
    let criterion = Criterion::AbsoluteDrop(0.005);

    // All layers int8 per tensor, min-max calibration.
    let mut int8 = SmallCnnConfig::default().init::<f32>().unwrap();
    copy_state(model.as_ref(), &mut int8).unwrap();
    let plain = quantize_static(
        &mut int8,
        &QuantConfig::uniform(LayerScheme::Int8 {
            per_channel: false,
            calibration: Calibration::MinMax,
        }),
        &calibration_batches(&tr).unwrap(),
    )
    .unwrap();
    let (_, int8_acc) = evaluate(&int8, &te, 256).unwrap();
    let int8_meets = criterion.is_met(float_acc, int8_acc);

    let opts = AutoQuantOptions {
        criterion,
        ..Default::default()
    };
    let r = tune_digits("small-cnn", model.as_ref(), &tr, &te, &opts).unwrap();
    eprintln!("{}\n{}", r.table(), r.history());
    eprintln!(
        "float {:.2}% {} B | all-int8 per-tensor {:.2}% {} B (meets: {int8_meets}) | auto {:.2}% {} B, {} trials",
        float_acc * 100.0,
        r.float_bytes,
        int8_acc * 100.0,
        plain.quant_model_bytes,
        r.accuracy * 100.0,
        r.bytes,
        r.trials.len()
    );

    assert_eq!(r.float_accuracy, float_acc);
    assert!(float_acc >= 0.95, "SmallCnn trained to {float_acc}");
    assert!(
        criterion.is_met(float_acc, r.accuracy),
        "auto lost {:.2} points",
        (float_acc - r.accuracy) * 100.0
    );
    assert!(
        !r.budget_exhausted && r.chosen_trial > 0,
        "a quantised plan was found"
    );
    assert!(r.bytes * 3 < r.float_bytes, "under a third of f32");
    if int8_meets {
        eprintln!("case: all-int8 per-tensor already meets the criterion; auto is no larger");
        assert!(r.bytes <= plain.quant_model_bytes);
    } else {
        eprintln!("case: all-int8 per-tensor misses the criterion; auto meets it and is smaller");
        assert!(r.bytes < plain.quant_model_bytes);
    }
    // The float model is untouched.
    assert_eq!(evaluate(model.as_ref(), &te, 256).unwrap().1, float_acc);
}
