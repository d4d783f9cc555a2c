//! `anneal`: train, evaluate, quantise and compare the reference models on
//! the bundled digits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anneal_layers::{load_safetensors, save_safetensors, Module, ModuleExt};
use anneal_quant::{
    quantize_static, quantize_weights, Calibration, LayerScheme, QuantConfig, QuantReport,
};
use anneal_tensor::Tensor;
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::plot::{write_curves, Panel, Series};
use anneal_zoo::registry::{build_model, defaults_for, MODEL_NAMES};
use anneal_zoo::trainer::{evaluate, train, History, TrainConfig};
use anneal_zoo::tune::{
    digits_tune_split, halving_rounds, schedule_arg, train_run, tune, OptimizerName, RunConfig,
    ScheduleName, TrainFile, TuneConfig,
};
use anneal_zoo::{Error, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// anneal: train, evaluate, quantise and compare neural networks in pure Rust.
#[derive(Parser)]
#[command(name = "anneal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on the bundled digits, evaluate it and print a summary.
    Train(TrainArgs),
    /// Evaluate saved weights on the test split.
    Eval(EvalArgs),
    /// Quantise saved weights and report accuracy, size and per-layer SQNR.
    Quantize(QuantizeArgs),
    /// Train the same model with each optimiser (or regulariser) and compare.
    Compare(CompareArgs),
    /// Time the reference workloads at 1 and 2 threads and print one table.
    Bench(BenchArgs),
    /// Search optimiser, learning rate, schedule, L2 and dropout by
    /// successive halving on a validation split; write the best as JSON.
    Tune(TuneArgs),
}

#[derive(Args)]
struct TuneArgs {
    /// Model to tune.
    #[arg(long, default_value = "small-cnn")]
    model: String,
    /// Configurations in the first round (the better half goes on each round).
    #[arg(long, default_value_t = 8)]
    configs: usize,
    /// Epochs of the first round (doubled each round).
    #[arg(long, default_value_t = 1)]
    min_epochs: usize,
    /// Mini-batch size of every run.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Seed of the sampling, the validation split and the training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sample every configuration (configuration 0 is otherwise `anneal
    /// train`'s defaults).
    #[arg(long)]
    no_defaults: bool,
    /// Output folder for best.json and the finalists' curves.
    #[arg(long, default_value = "anneal-out")]
    out: PathBuf,
}

#[derive(Args)]
struct BenchArgs {
    /// Thread counts to run at.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2])]
    threads: Vec<usize>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum MethodName {
    Minmax,
    Percentile,
    Mse,
    Entropy,
    Meanstd,
}

#[derive(Args)]
struct QuantizeArgs {
    /// Model the weights belong to.
    #[arg(long, default_value = "small-cnn")]
    model: String,
    /// Weights file written by `anneal train` (model.safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Activation calibration method (8-bit).
    #[arg(long, value_enum, default_value_t = MethodName::Minmax)]
    method: MethodName,
    /// Weight bits: 8 (int8 weights and activations) or 4 (weight-only blocks).
    #[arg(long, default_value_t = 8)]
    bits: u32,
    /// One weight scale per output channel (8-bit only).
    #[arg(long)]
    per_channel: bool,
    /// Accuracy-driven tuning: search each layer's scheme and calibration.
    #[arg(long, conflicts_with_all = ["config", "method", "bits", "per_channel"])]
    auto: bool,
    /// With --auto: allowed accuracy drop, rel:FRACTION or abs:FRACTION.
    #[arg(long, default_value = "rel:0.01", requires = "auto")]
    criterion: String,
    /// With --auto: what to optimise among plans meeting the criterion.
    #[arg(long, value_enum, default_value_t = anneal_zoo::autoquant::ObjectiveName::Size, requires = "auto")]
    objective: anneal_zoo::autoquant::ObjectiveName,
    /// With --auto: most quantised trials to run.
    #[arg(long, default_value_t = 100, requires = "auto")]
    budget: usize,
    /// With --auto: write the chosen plan here (JSON).
    #[arg(long, requires = "auto")]
    out: Option<PathBuf>,
    /// Apply a plan written by --auto --out.
    #[arg(long, conflicts_with_all = ["method", "bits", "per_channel"])]
    config: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct TrainArgs {
    /// Model: small-cnn, source-cnn, lstm, gru or transformer.
    #[arg(long, default_value = "small-cnn")]
    model: String,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam)]
    optimizer: OptimizerName,
    /// Learning rate (default: the model's own).
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Learning-rate schedule over the epochs.
    #[arg(long, value_enum, default_value_t = ScheduleName::Constant)]
    schedule: ScheduleName,
    /// Epochs (default: the model's own).
    #[arg(long)]
    epochs: Option<usize>,
    /// Mini-batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// L2 penalty λ (½λ‖w‖² on weights, not biases or norms).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    l2: f64,
    /// Dropout probability where the model has dropout.
    #[arg(long, allow_negative_numbers = true)]
    dropout: Option<f64>,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for weights, checkpoints and curves.
    #[arg(long, default_value = "anneal-out")]
    out: PathBuf,
    /// JSON file of train settings (e.g. `anneal tune`'s best.json, fields
    /// named as the flags, `batch_size` with an underscore): its fields
    /// replace the flags' defaults; a flag also given must agree with it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Model the weights belong to.
    #[arg(long, default_value = "small-cnn")]
    model: String,
    /// Weights file written by `anneal train` (model.safetensors).
    #[arg(long)]
    weights: PathBuf,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum CompareWhat {
    Optimizers,
    Regularizers,
}

#[derive(Args)]
struct CompareArgs {
    /// What to vary.
    #[arg(long, value_enum, default_value_t = CompareWhat::Optimizers)]
    what: CompareWhat,
    /// Model.
    #[arg(long, default_value = "small-cnn")]
    model: String,
    /// Epochs per run.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for the curves.
    #[arg(long, default_value = "anneal-out")]
    out: PathBuf,
}

fn check_model(name: &str) -> Result<()> {
    if MODEL_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "unknown model {name:?}; choose one of {}",
            MODEL_NAMES.join(", ")
        )))
    }
}

fn digits_split() -> Result<(Dataset, Dataset)> {
    let data = load_digits()?;
    let split = stratified_split(&data.labels, 0.2, 0)?;
    Ok((data.subset(&split.train)?, data.subset(&split.test)?))
}

/// Bytes of the parameters and buffers as stored in f32.
fn model_bytes(m: &dyn Module<f32>) -> usize {
    let mut n = 0;
    m.visit("", &mut |_, e| {
        n += match e {
            anneal_layers::Entry::Param(p) => p.value().numel() * 4,
            anneal_layers::Entry::Buffer(b) => b.numel() * 4,
            anneal_layers::Entry::Counter(_) => 8,
        }
    });
    n
}

/// Inference throughput (samples/s) over the test set, batch 256, best of 3.
fn throughput(m: &dyn Module<f32>, data: &Dataset) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        evaluate(m, data, 256)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(data.len() as f64 / best.max(1e-9))
}

fn curves(stem: &Path, runs: &[(String, &History)]) -> Result<()> {
    let series =
        |f: &dyn Fn(&anneal_zoo::trainer::EpochRecord) -> f64, suffix: &str| -> Vec<Series> {
            runs.iter()
                .map(|(name, h)| Series {
                    label: format!("{name}{suffix}"),
                    points: h
                        .epochs
                        .iter()
                        .map(|e| ((e.epoch + 1) as f64, f(e)))
                        .collect(),
                })
                .collect()
        };
    let mut loss = series(&|e| e.eval_loss, " test");
    let mut acc = series(&|e| e.eval_accuracy * 100.0, " test");
    if runs.len() == 1 {
        loss.extend(series(&|e| e.train_loss, " train"));
        acc.extend(series(&|e| e.train_accuracy * 100.0, " train"));
    }
    write_curves(
        stem,
        &[
            Panel {
                title: "loss".into(),
                y_label: "cross-entropy".into(),
                series: loss,
            },
            Panel {
                title: "accuracy".into(),
                y_label: "%".into(),
                series: acc,
            },
        ],
    )
}

fn validate(a: &TrainArgs) -> Result<(f64, usize)> {
    check_model(&a.model)?;
    let (lr0, ep0) = defaults_for(&a.model);
    let lr = a.lr.unwrap_or(lr0);
    let epochs = a.epochs.unwrap_or(ep0);
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::Invalid(format!(
            "--lr {lr} must be a positive number"
        )));
    }
    if epochs == 0 || epochs > 10_000 {
        return Err(Error::Invalid(format!(
            "--epochs {epochs} must be between 1 and 10000"
        )));
    }
    if a.batch_size == 0 || a.batch_size > 1_000_000 {
        return Err(Error::Invalid(format!(
            "--batch-size {} must be between 1 and 1000000",
            a.batch_size
        )));
    }
    if !(a.l2.is_finite() && a.l2 >= 0.0) {
        return Err(Error::Invalid(format!(
            "--l2 {} must be a non-negative number",
            a.l2
        )));
    }
    if let Some(p) = a.dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Invalid(format!("--dropout {p} must be in [0, 1)")));
        }
    }
    Ok((lr, epochs))
}

struct Trained {
    model: Box<dyn Module<f32>>,
    history: History,
    test: Dataset,
}

fn run_training(a: &TrainArgs, progress: bool) -> Result<Trained> {
    let (lr, epochs) = validate(a)?;
    let config = RunConfig {
        model: a.model.clone(),
        optimizer: a.optimizer,
        lr,
        schedule: a.schedule,
        epochs,
        batch_size: a.batch_size,
        l2: a.l2,
        dropout: a.dropout,
        seed: a.seed,
    };
    let (train_set, test) = digits_split()?;
    let mut run = config.build(train_set.len())?;
    let cfg = TrainConfig {
        progress,
        checkpoint_dir: Some(a.out.join("checkpoints")),
        ..config.train_config()
    };
    let history = train(
        &mut *run.model,
        &mut *run.optimizer,
        schedule_arg(&mut run.schedule),
        &train_set,
        &test,
        &cfg,
    )?;
    Ok(Trained {
        model: run.model,
        history,
        test,
    })
}

/// A value as the CLI and the JSON file write it.
trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_by_display {
    ($($t:ty),*) => {$(impl Shown for $t {
        fn shown(&self) -> String {
            self.to_string()
        }
    })*};
}
shown_by_display!(String, f64, usize, u64);

impl Shown for OptimizerName {
    fn shown(&self) -> String {
        self.name().into()
    }
}

impl Shown for ScheduleName {
    fn shown(&self) -> String {
        self.name().into()
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref().map_or("null".into(), Shown::shown)
    }
}

/// `train --config FILE`: the file's fields replace the flags' defaults; a
/// flag given on the command line as well must have the file's value, or
/// it is an error naming both.
fn with_config(a: &TrainArgs, matches: Option<&clap::ArgMatches>) -> Result<TrainArgs> {
    let Some(path) = &a.config else {
        return Ok(a.clone());
    };
    let file = TrainFile::load(path)?;
    let given = |id: &str| {
        matches.is_some_and(|m| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
    };
    let mut b = a.clone();
    macro_rules! take {
        ($field:ident, $flag:literal, $value:expr) => {
            if let Some(v) = $value {
                if given(stringify!($field)) && b.$field != v {
                    return Err(Error::Invalid(format!(
                        "--{} {} contradicts \"{}\": {} in {}; drop one or make them agree",
                        $flag,
                        b.$field.shown(),
                        stringify!($field),
                        v.shown(),
                        path.display()
                    )));
                }
                b.$field = v;
            }
        };
    }
    take!(model, "model", file.model);
    take!(optimizer, "optimizer", file.optimizer);
    take!(lr, "lr", file.lr.map(Some));
    take!(schedule, "schedule", file.schedule);
    take!(epochs, "epochs", file.epochs.map(Some));
    take!(batch_size, "batch-size", file.batch_size);
    take!(l2, "l2", file.l2);
    take!(dropout, "dropout", file.dropout);
    take!(seed, "seed", file.seed);
    take!(out, "out", file.out);
    Ok(b)
}

fn cmd_train(a: &TrainArgs) -> Result<()> {
    let (lr, epochs) = validate(a)?;
    let (train_n, test_n) = {
        let (tr, te) = digits_split()?;
        (tr.len(), te.len())
    };
    println!("anneal train: {} on the UCI digits ({train_n} train / {test_n} test images), {:?} lr {lr}, {epochs} epochs, seed {}", a.model, a.optimizer, a.seed);
    let t = run_training(a, true)?;
    println!(
        "{:>5} {:>11} {:>10} {:>10} {:>9} {:>10}",
        "epoch", "train loss", "train acc", "test loss", "test acc", "samples/s"
    );
    for e in &t.history.epochs {
        println!(
            "{:>5} {:>11.4} {:>9.2}% {:>10.4} {:>8.2}% {:>10.0}",
            e.epoch + 1,
            e.train_loss,
            e.train_accuracy * 100.0,
            e.eval_loss,
            e.eval_accuracy * 100.0,
            e.samples_per_second
        );
    }
    std::fs::create_dir_all(&a.out).map_err(|source| Error::Io {
        path: a.out.clone(),
        source,
    })?;
    let weights = a.out.join("model.safetensors");
    save_safetensors(t.model.as_ref(), &weights)?;
    curves(&a.out.join("curves"), &[(a.model.clone(), &t.history)])?;
    let mut model = t.model;
    let f32_row = table_row(
        &a.model,
        "f32",
        model_bytes(model.as_ref()),
        model.as_ref(),
        &t.test,
    )?;
    let (train_set, _) = digits_split()?;
    let (int8, label8) = quantize_model(model.as_mut(), 8, MethodName::Minmax, true, &train_set)?;
    let int8_row = table_row(
        &a.model,
        &label8,
        int8.quant_model_bytes,
        model.as_ref(),
        &t.test,
    )?;
    anneal_quant::dequantize(model.as_mut());
    let (int4, label4) = quantize_model(model.as_mut(), 4, MethodName::Minmax, false, &train_set)?;
    let int4_row = table_row(
        &a.model,
        &label4,
        int4.quant_model_bytes,
        model.as_ref(),
        &t.test,
    )?;
    anneal_quant::dequantize(model.as_mut());
    println!();
    println!("| model | weights | size | test accuracy | test loss | inference |");
    println!("|---|---|---|---|---|---|");
    println!("{f32_row}\n{int8_row}\n{int4_row}");
    println!();
    println!("int8 per-layer report:\n{}", int8.table());
    println!(
        "weights: {}  curves: {}  ({} parameters)",
        weights.display(),
        a.out.join("curves.svg").display(),
        model.num_parameters()
    );
    Ok(())
}

/// Calibration batches: the first 256 training images in batches of 64.
fn calibration_batches(train: &Dataset) -> Result<Vec<Tensor<f32>>> {
    let n = train.len().min(256);
    (0..n.div_ceil(64))
        .map(|b| Ok(train.inputs.narrow(0, b * 64, 64.min(n - b * 64))?))
        .collect()
}

/// One row of the before/after table.
fn table_row(
    model: &str,
    weights: &str,
    bytes: usize,
    m: &dyn Module<f32>,
    test: &Dataset,
) -> Result<String> {
    let (loss, acc) = evaluate(m, test, 256)?;
    let tput = throughput(m, test)?;
    Ok(format!(
        "| {model} | {weights} | {:.1} KiB | {:.2}% | {:.4} | {:.0} images/s |",
        bytes as f64 / 1024.0,
        acc * 100.0,
        loss,
        tput
    ))
}

fn quantize_model(
    model: &mut dyn Module<f32>,
    bits: u32,
    method: MethodName,
    per_channel: bool,
    train: &Dataset,
) -> Result<(QuantReport, String)> {
    let calib = calibration_batches(train)?;
    match bits {
        8 => {
            let calibration = match method {
                MethodName::Minmax => Calibration::MinMax,
                MethodName::Percentile => Calibration::Percentile(99.99),
                MethodName::Mse => Calibration::Mse,
                MethodName::Entropy => Calibration::Entropy,
                MethodName::Meanstd => Calibration::MeanStd(3.0),
            };
            let cfg = QuantConfig::uniform(LayerScheme::Int8 {
                per_channel,
                calibration,
            });
            let label = format!(
                "int8 ({}{method:?})",
                if per_channel { "per-channel, " } else { "" }
            )
            .to_lowercase();
            Ok((quantize_static(model, &cfg, &calib)?, label))
        }
        4 => Ok((
            quantize_weights(
                model,
                &QuantConfig::uniform(LayerScheme::Int4WeightOnly),
                &calib,
            )?,
            "int4 weight-only".to_string(),
        )),
        b => Err(Error::Invalid(format!("--bits {b} must be 8 or 4"))),
    }
}

fn cmd_quantize(a: &QuantizeArgs) -> Result<()> {
    check_model(&a.model)?;
    if a.auto || a.config.is_some() {
        return anneal_zoo::autoquant::run(&anneal_zoo::autoquant::PlanArgs {
            model: a.model.clone(),
            weights: a.weights.clone(),
            auto: a.auto,
            criterion: a.criterion.clone(),
            objective: a.objective,
            budget: a.budget,
            out: a.out.clone(),
            config: a.config.clone(),
        });
    }
    if a.bits != 8 && a.bits != 4 {
        return Err(Error::Invalid(format!("--bits {} must be 8 or 4", a.bits)));
    }
    let mut model = build_model(&a.model, None, 0)?;
    load_safetensors(model.as_mut(), &a.weights, true)?;
    let (train_set, test) = digits_split()?;
    let before = table_row(
        &a.model,
        "f32",
        model_bytes(model.as_ref()),
        model.as_ref(),
        &test,
    )?;
    let (report, label) =
        quantize_model(model.as_mut(), a.bits, a.method, a.per_channel, &train_set)?;
    let after = table_row(
        &a.model,
        &label,
        report.quant_model_bytes,
        model.as_ref(),
        &test,
    )?;
    println!("| model | weights | size | test accuracy | test loss | inference |\n|---|---|---|---|---|---|\n{before}\n{after}\n");
    println!("{}", report.table());
    Ok(())
}

fn cmd_eval(a: &EvalArgs) -> Result<()> {
    check_model(&a.model)?;
    let mut model = build_model(&a.model, None, 0)?;
    load_safetensors(model.as_mut(), &a.weights, true)?;
    let (_, test) = digits_split()?;
    let (loss, acc) = evaluate(model.as_ref(), &test, 256)?;
    println!(
        "{}: test accuracy {:.2}%, test loss {:.4} on {} images",
        a.model,
        acc * 100.0,
        loss,
        test.len()
    );
    Ok(())
}

fn cmd_compare(a: &CompareArgs) -> Result<()> {
    check_model(&a.model)?;
    if a.epochs == 0 || a.epochs > 10_000 {
        return Err(Error::Invalid(format!(
            "--epochs {} must be between 1 and 10000",
            a.epochs
        )));
    }
    let base = TrainArgs {
        model: a.model.clone(),
        optimizer: OptimizerName::Adam,
        lr: None,
        schedule: ScheduleName::Constant,
        epochs: Some(a.epochs),
        batch_size: 32,
        l2: 0.0,
        dropout: None,
        seed: a.seed,
        out: a.out.join("compare"),
        config: None,
    };
    let runs: Vec<(String, TrainArgs)> = match a.what {
        CompareWhat::Optimizers => [
            (OptimizerName::Sgd, 0.05),
            (OptimizerName::Adam, defaults_for(&a.model).0),
            (OptimizerName::Adamw, defaults_for(&a.model).0),
            (OptimizerName::Rmsprop, 1e-3),
        ]
        .into_iter()
        .map(|(o, lr)| {
            (
                format!("{o:?}").to_lowercase(),
                TrainArgs {
                    optimizer: o,
                    lr: Some(lr),
                    ..base.clone()
                },
            )
        })
        .collect(),
        CompareWhat::Regularizers => vec![
            (
                "none".to_string(),
                TrainArgs {
                    dropout: Some(0.0),
                    ..base.clone()
                },
            ),
            (
                "l2 1e-3".to_string(),
                TrainArgs {
                    l2: 1e-3,
                    dropout: Some(0.0),
                    ..base.clone()
                },
            ),
            (
                "dropout 0.3".to_string(),
                TrainArgs {
                    dropout: Some(0.3),
                    ..base.clone()
                },
            ),
            (
                "l2+dropout".to_string(),
                TrainArgs {
                    l2: 1e-3,
                    dropout: Some(0.3),
                    ..base.clone()
                },
            ),
        ],
    };
    let mut results = Vec::new();
    for (name, args) in &runs {
        eprintln!("training {name} …");
        results.push((name.clone(), run_training(args, false)?.history));
    }
    println!("| {} | final train loss | final train acc | final test acc | best test acc | train−test gap |", if a.what == CompareWhat::Optimizers { "optimiser" } else { "regulariser" });
    println!("|---|---|---|---|---|---|");
    for (name, h) in &results {
        let last = h
            .epochs
            .last()
            .ok_or_else(|| Error::Invalid("no epoch ran".into()))?;
        let best = h.epochs.iter().map(|e| e.eval_accuracy).fold(0.0, f64::max);
        println!(
            "| {name} | {:.4} | {:.2}% | {:.2}% | {:.2}% | {:+.2} pt |",
            last.train_loss,
            last.train_accuracy * 100.0,
            last.eval_accuracy * 100.0,
            best * 100.0,
            (last.train_accuracy - last.eval_accuracy) * 100.0
        );
    }
    let stem = a.out.join(if a.what == CompareWhat::Optimizers {
        "compare-optimizers"
    } else {
        "compare-regularizers"
    });
    let refs: Vec<(String, &History)> = results.iter().map(|(n, h)| (n.clone(), h)).collect();
    curves(&stem, &refs)?;
    println!("\ncurves: {}", stem.with_extension("svg").display());
    Ok(())
}

fn cmd_bench(a: &BenchArgs) -> Result<()> {
    if a.threads.is_empty() || a.threads.iter().any(|&t| t == 0 || t > 256) {
        return Err(Error::Invalid(format!(
            "--threads {:?} must be between 1 and 256",
            a.threads
        )));
    }
    println!("| workload | threads | median | fastest | throughput |\n|---|---|---|---|---|");
    for r in anneal_zoo::bench::run_benchmarks(&a.threads)? {
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {} |",
            r.workload,
            r.threads,
            r.median_s * 1e3,
            r.min_s * 1e3,
            r.throughput
        );
    }
    Ok(())
}

fn cmd_tune(a: &TuneArgs) -> Result<()> {
    let cfg = TuneConfig {
        model: a.model.clone(),
        configs: a.configs,
        min_epochs: a.min_epochs,
        batch_size: a.batch_size,
        seed: a.seed,
        include_defaults: !a.no_defaults,
    };
    let base = cfg.baseline()?;
    let rounds = halving_rounds(a.configs, a.min_epochs)?;
    let data = digits_tune_split(a.seed)?;
    let plan: Vec<String> = rounds
        .iter()
        .map(|r| format!("{}×{}", r.configs, r.epochs))
        .collect();
    println!(
        "anneal tune: {} on the UCI digits ({} train / {} validation / {} test images), {} configurations × epochs {}, seed {}",
        a.model,
        data.train.len(),
        data.val.len(),
        data.test.len(),
        a.configs,
        plan.join(" → "),
        a.seed
    );
    let start = Instant::now();
    let result = tune(&cfg, &data.train, &data.val, &data.test, &mut |p| {
        let t = p.trial;
        let score = match &t.diverged {
            Some(why) => format!("diverged ({why})"),
            None => format!(
                "val acc {:.2}%  loss {:.4}",
                t.val_accuracy * 100.0,
                t.val_loss
            ),
        };
        eprintln!(
            "[{:>3}/{}] round {}/{}  #{:<3} {:<46} {} epochs  {score}  ({:.1} s)",
            p.done,
            p.total,
            p.round + 1,
            p.rounds,
            t.index,
            t.config.summary(),
            t.epochs,
            p.seconds
        );
    })?;
    let seconds = start.elapsed().as_secs_f64();
    println!("\n{}", result.table());
    let winner = &result.leaderboard[0];
    // The defaults' run is bit-identical whether it went on in stretches
    // inside the search or runs once here.
    let (base_acc, base_loss) = match result
        .leaderboard
        .iter()
        .find(|t| cfg.include_defaults && t.index == 0 && t.epochs == base.epochs)
    {
        Some(t) => (t.val_accuracy, t.val_loss),
        None => {
            eprintln!(
                "training the defaults for {} epochs to compare …",
                base.epochs
            );
            let h = train_run(&base, &data.train, &data.val)?;
            let last = h
                .epochs
                .last()
                .ok_or_else(|| Error::Invalid("no epoch ran".into()))?;
            (last.eval_accuracy, last.eval_loss)
        }
    };
    println!(
        "winner #{}: val acc {:.2}%, loss {:.4}; `anneal train` defaults ({}) for {} epochs: val acc {:.2}%, loss {:.4} ({:+.2} points)",
        winner.index,
        winner.val_accuracy * 100.0,
        winner.val_loss,
        base.summary(),
        base.epochs,
        base_acc * 100.0,
        base_loss,
        (winner.val_accuracy - base_acc) * 100.0
    );
    println!(
        "winner on the test split (its only use): accuracy {:.2}%, loss {:.4}",
        result.test_accuracy * 100.0,
        result.test_loss
    );
    std::fs::create_dir_all(&a.out).map_err(|source| Error::Io {
        path: a.out.clone(),
        source,
    })?;
    let best = a.out.join("best.json");
    std::fs::write(&best, result.best.to_json()).map_err(|source| Error::Io {
        path: best.clone(),
        source,
    })?;
    let stem = a.out.join("tune-curves");
    result.write_curves(&stem)?;
    println!(
        "best: {}  finalists' curves: {}  ({seconds:.1} s)\nre-run on the whole training split: anneal train --config {}",
        best.display(),
        stem.with_extension("svg").display(),
        best.display()
    );
    Ok(())
}

/// Prints a command-line error as one line, `anneal: error: …` (clap's own
/// format adds usage and tips on more lines), and returns clap's exit code;
/// `--help` and `--version` print in full and succeed.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let names: Vec<String> = <Cli as clap::CommandFactory>::command()
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            eprintln!(
                "anneal: error: a subcommand is required: {} (see anneal --help)",
                names.join(", ")
            );
        }
        _ => {
            // The first paragraph of clap's message, its lines joined.
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let msg = first.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            eprintln!("anneal: error: {msg} (see --help)");
        }
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn main() -> ExitCode {
    // A bug must still read as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("anneal: internal error: {msg}{at} (please report it)");
    }));
    let matches = match <Cli as clap::CommandFactory>::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e.format(&mut <Cli as clap::CommandFactory>::command())),
    };
    let result = match &cli.command {
        Command::Train(a) => {
            with_config(a, matches.subcommand_matches("train")).and_then(|a| cmd_train(&a))
        }
        Command::Tune(a) => cmd_tune(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Quantize(a) => cmd_quantize(a),
        Command::Compare(a) => cmd_compare(a),
        Command::Bench(a) => cmd_bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anneal: error: {e}");
            ExitCode::FAILURE
        }
    }
}
