//! SmallCnn trained on the digits keeps its accuracy after static int8 PTQ
//! (≤ 1 point lost), int4 weight-only (≤ 2 points) and QAT (≤ 0.5 points).

use anneal_layers::Module;
use anneal_optim::{Adam, AdamConfig};
use anneal_quant::{
    convert_qat, prepare_qat, quantize_static, quantize_weights, Calibration, LayerScheme,
    QuantConfig,
};
use anneal_tensor::Tensor;
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::models::SmallCnnConfig;
use anneal_zoo::trainer::{evaluate, train, TrainConfig};

fn setup() -> (Dataset, Dataset) {
    let data = load_digits().unwrap();
    let split = stratified_split(&data.labels, 0.2, 0).unwrap();
    (
        data.subset(&split.train).unwrap(),
        data.subset(&split.test).unwrap(),
    )
}

fn trained(tr: &Dataset, te: &Dataset) -> anneal_zoo::models::SmallCnn {
    let mut model = SmallCnnConfig::default().init::<f32>().unwrap();
    let mut opt = Adam::new(AdamConfig::new(3e-3)).unwrap();
    train(
        &mut model,
        &mut opt,
        None,
        tr,
        te,
        &TrainConfig {
            epochs: 12,
            ..Default::default()
        },
    )
    .unwrap();
    model
}

fn calibration(tr: &Dataset) -> Vec<Tensor<f32>> {
    (0..4)
        .map(|b| tr.inputs.narrow(0, b * 64, 64).unwrap())
        .collect()
}

#[test]
fn ptq_int4_and_qat_keep_accuracy() {
    let (tr, te) = setup();
    let mut model = trained(&tr, &te);
    let (_, float_acc) = evaluate(&model, &te, 256).unwrap();

    let cfg = QuantConfig::uniform(LayerScheme::Int8 {
        per_channel: true,
        calibration: Calibration::MinMax,
    });
    let report = quantize_static(&mut model, &cfg, &calibration(&tr)).unwrap();
    let (_, int8_acc) = evaluate(&model, &te, 256).unwrap();
    eprintln!("{}", report.table());
    eprintln!("float {float_acc:.4}  static int8 {int8_acc:.4}");
    assert_eq!(report.layers.len(), 3);
    assert!(
        report.quant_model_bytes * 3 < report.float_model_bytes,
        "int8 model should be well under a third of f32"
    );
    assert!(
        report.layers.iter().all(|l| l.sqnr_db.unwrap() > 15.0),
        "{}",
        report.table()
    );
    assert!(
        float_acc - int8_acc <= 0.01,
        "static int8 lost {:.2} points",
        (float_acc - int8_acc) * 100.0
    );

    anneal_quant::dequantize(&mut model);
    let (_, back) = evaluate(&model, &te, 256).unwrap();
    assert_eq!(back, float_acc, "dequantize restores the float model");

    let int4 = QuantConfig::uniform(LayerScheme::Int4WeightOnly);
    quantize_weights(&mut model, &int4, &calibration(&tr)).unwrap();
    let (_, int4_acc) = evaluate(&model, &te, 256).unwrap();
    eprintln!("int4 weight-only {int4_acc:.4}");
    assert!(
        float_acc - int4_acc <= 0.02,
        "int4 lost {:.2} points",
        (float_acc - int4_acc) * 100.0
    );
    anneal_quant::dequantize(&mut model);

    let q8 = QuantConfig::uniform(LayerScheme::Int8WeightOnly);
    quantize_weights(&mut model, &q8, &calibration(&tr)).unwrap();
    let (_, q8_acc) = evaluate(&model, &te, 256).unwrap();
    assert!(
        float_acc - q8_acc <= 0.01,
        "Q8_0 lost {:.2} points",
        (float_acc - q8_acc) * 100.0
    );
    anneal_quant::dequantize(&mut model);

    // QAT: fine-tune two epochs with fake quantisation, then convert.
    let cfg = QuantConfig::uniform(LayerScheme::Int8 {
        per_channel: false,
        calibration: Calibration::MovingAverage,
    });
    let qat = prepare_qat(&mut model, &cfg).unwrap();
    let mut opt = Adam::new(AdamConfig::new(3e-4)).unwrap();
    train(
        &mut model,
        &mut opt,
        None,
        &tr,
        &te,
        &TrainConfig {
            epochs: 2,
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let report = convert_qat(&mut model, &cfg, qat).unwrap();
    let (_, qat_acc) = evaluate(&model, &te, 256).unwrap();
    eprintln!("QAT int8 per-tensor {qat_acc:.4}\n{}", report.table());
    assert!(
        float_acc - qat_acc <= 0.005,
        "QAT lost {:.2} points",
        (float_acc - qat_acc) * 100.0
    );
    let _ = model
        .forward(&anneal_autograd::Var::constant(
            te.inputs.narrow(0, 0, 2).unwrap(),
        ))
        .unwrap();
}
