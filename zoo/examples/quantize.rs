//! Quantisation: post-training int8 with each calibration method, and int4.
//!
//! Trains the zoo's `SmallCnn` briefly, then quantises its Linear and
//! Conv2d layers to int8 weights and u8 activations (static PTQ), once per
//! way of choosing the activation range from calibration data, and once to
//! 4-bit weights (blocks of 32, Q4_0) with f32 activations. Between runs
//! `dequantize` removes the int kernels: the float weights are untouched,
//! so every method starts from the same float model.
//!
//! Run: `cargo run --release -p anneal-zoo --example quantize`

use anneal_optim::{Adam, AdamConfig};
use anneal_quant::{
    dequantize, float_model_bytes, quantize_static, quantize_weights, Calibration, LayerScheme,
    QuantConfig, QuantReport,
};
use anneal_tensor::Tensor;
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::models::{SmallCnn, SmallCnnConfig};
use anneal_zoo::trainer::{evaluate, train, TrainConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One table row: test accuracy and loss of `model` as it is now (float or
/// with int kernels installed), its size, and the mean over layers of the
/// SQNR of each layer's output against the float layer's.
fn row(name: &str, model: &SmallCnn, test: &Dataset, r: Option<&QuantReport>) -> Res<()> {
    let (loss, acc) = evaluate(model, test, 256)?;
    let bytes = r.map_or(float_model_bytes(model), |r| r.quant_model_bytes);
    let sqnr = r.map_or(String::new(), |r| {
        let v: Vec<f64> = r.layers.iter().filter_map(|l| l.sqnr_db).collect();
        format!("{:.1} dB", v.iter().sum::<f64>() / v.len().max(1) as f64)
    });
    let kib = bytes as f64 / 1024.0;
    println!(
        "| {name} | {:.2}% | {loss:.4} | {kib:.1} KiB | {sqnr} |",
        acc * 100.0
    );
    Ok(())
}

fn main() -> Res<()> {
    let data = load_digits()?;
    let split = stratified_split(&data.labels, 0.2, 0)?;
    let (train_set, test_set) = (data.subset(&split.train)?, data.subset(&split.test)?);

    // 1. A float model to start from.
    let mut model = SmallCnnConfig::default().init::<f32>()?;
    let mut opt = Adam::new(AdamConfig::new(3e-3))?;
    let cfg = TrainConfig {
        epochs: 6,
        ..Default::default()
    };
    train(&mut model, &mut opt, None, &train_set, &test_set, &cfg)?;

    // 2. Calibration data: the first 256 training images, in batches of 64.
    //    (Never the test images: that would leak them into the ranges.)
    let batches: Vec<Tensor<f32>> = (0..4)
        .map(|b| train_set.inputs.narrow(0, b * 64, 64))
        .collect::<Result<_, _>>()?;

    println!("SmallCnn, {} test images\n", test_set.len());
    println!("| method | test accuracy | test loss | model size | mean layer SQNR |");
    println!("|---|---|---|---|---|");
    row("float32", &model, &test_set, None)?;

    // 3. Static int8 with each calibration method. Weights are int8 per
    //    output channel; only the activation range differs between rows.
    let methods = [
        ("int8 min-max", Calibration::MinMax),
        ("int8 percentile 99.99", Calibration::Percentile(99.99)),
        ("int8 MSE search", Calibration::Mse),
        ("int8 entropy (KL)", Calibration::Entropy),
        ("int8 mean ± 3σ", Calibration::MeanStd(3.0)),
    ];
    let mut shown: Option<QuantReport> = None;
    for (name, calibration) in methods {
        let plan = QuantConfig::uniform(LayerScheme::Int8 {
            per_channel: true,
            calibration,
        });
        // Inserts observers, runs the calibration batches, swaps in int8 kernels.
        let report = quantize_static(&mut model, &plan, &batches)?;
        row(name, &model, &test_set, Some(&report))?;
        shown.get_or_insert(report);
        dequantize(&mut model); // back to float for the next method
    }

    // 4. Weight-only int4: no activation ranges needed; the batches only feed
    //    the per-layer error report.
    let plan = QuantConfig::uniform(LayerScheme::Int4WeightOnly);
    let report = quantize_weights(&mut model, &plan, &batches)?;
    row("int4 weight-only", &model, &test_set, Some(&report))?;
    dequantize(&mut model);

    // 5. Per-layer detail of the min-max run: bytes before/after and the
    //    SQNR of each layer's output against the float layer (higher is
    //    better; each 6 dB is about one bit of precision).
    if let Some(r) = shown {
        println!("\nper-layer report, int8 min-max:\n{}", r.table());
    }
    Ok(())
}
