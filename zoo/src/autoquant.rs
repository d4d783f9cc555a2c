//! `anneal quantize --auto` (accuracy-driven quantisation of a digits
//! classifier with [`anneal_quant::auto_quantize`]) and `anneal quantize
//! --config` (apply a saved plan).
//!
//! The tuner's evaluation is the accuracy on the digits test split, the
//! same split `anneal quantize` reports (the role of Intel Neural
//! Compressor's `eval_dataloader`); calibration uses the first 256 training
//! images, as every other quantisation command does.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anneal_layers::{load_safetensors, Module};
use anneal_quant::{
    apply_config, auto_quantize, layer_names, plan_table, scheme_name, AutoQuantOptions,
    AutoQuantResult, Criterion, Objective, QuantConfig,
};
use anneal_tensor::Tensor;
use clap::ValueEnum;

use crate::data::{load_digits, stratified_split, Dataset};
use crate::registry::{build_model, MODEL_NAMES};
use crate::trainer::evaluate;
use crate::{Error, Result};

/// What `--auto` optimises (`--objective`).
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum ObjectiveName {
    /// Smallest model.
    Size,
    /// Highest measured inference throughput.
    Speed,
}

/// Options of `anneal quantize --auto` / `--config`.
#[derive(Debug, Clone)]
pub struct PlanArgs {
    /// Model name (see [`MODEL_NAMES`]).
    pub model: String,
    /// Weights written by `anneal train`.
    pub weights: PathBuf,
    /// Run the tuner (`--auto`).
    pub auto: bool,
    /// `rel:FRACTION` or `abs:FRACTION`.
    pub criterion: String,
    /// What to optimise.
    pub objective: ObjectiveName,
    /// Most quantised trials.
    pub budget: usize,
    /// Where `--auto` writes the chosen plan.
    pub out: Option<PathBuf>,
    /// A plan to apply (`--config`).
    pub config: Option<PathBuf>,
}

fn digits_split() -> Result<(Dataset, Dataset)> {
    let data = load_digits()?;
    let split = stratified_split(&data.labels, 0.2, 0)?;
    Ok((data.subset(&split.train)?, data.subset(&split.test)?))
}

/// Calibration batches: the first 256 training images in batches of 64
/// (as `anneal quantize` and `anneal train` use).
pub fn calibration_batches(train: &Dataset) -> Result<Vec<Tensor<f32>>> {
    let n = train.len().min(256);
    (0..n.div_ceil(64))
        .map(|b| Ok(train.inputs.narrow(0, b * 64, 64.min(n - b * 64))?))
        .collect()
}

fn tensor_err(op: &'static str) -> impl Fn(Error) -> anneal_tensor::Error {
    move |e| anneal_tensor::Error::invalid(op, e.to_string())
}

/// Tunes a plan for the registry model `model_name` whose trained weights
/// are in `float`: calibrated on `train`'s first images, evaluated by
/// accuracy on `eval` (fractions in `[0, 1]`, so `abs:0.005` is half a
/// point). For the speed objective the batch timed is `eval`'s first 256
/// images unless `options.speed_batch` is set. `float` is left unchanged.
pub fn tune_digits(
    model_name: &str,
    float: &dyn Module<f32>,
    train: &Dataset,
    eval: &Dataset,
    options: &AutoQuantOptions,
) -> Result<AutoQuantResult> {
    let calib = calibration_batches(train)?;
    let build = || build_model(model_name, None, 0).map_err(tensor_err("build_model"));
    let mut acc = |m: &dyn Module<f32>| -> anneal_tensor::Result<f64> {
        evaluate(m, eval, 256)
            .map(|(_, a)| a)
            .map_err(tensor_err("evaluate"))
    };
    let mut opts = options.clone();
    if opts.objective == Objective::Speed && opts.speed_batch.is_none() {
        opts.speed_batch = Some(eval.inputs.narrow(0, 0, eval.len().min(256))?);
    }
    Ok(auto_quantize(float, &build, &calib, &mut acc, &opts)?)
}

/// Inference throughput (images/s) over `data`, batch 256, best of 3.
fn throughput(m: &dyn Module<f32>, data: &Dataset) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        evaluate(m, data, 256)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(data.len() as f64 / best.max(1e-9))
}

fn row(
    model: &str,
    label: &str,
    bytes: usize,
    m: &dyn Module<f32>,
    test: &Dataset,
) -> Result<String> {
    let (loss, acc) = evaluate(m, test, 256)?;
    Ok(format!(
        "| {model} | {label} | {:.1} KiB | {:.2}% | {:.4} | {:.0} images/s |",
        bytes as f64 / 1024.0,
        acc * 100.0,
        loss,
        throughput(m, test)?
    ))
}

/// `auto (2 int8 per-tensor, 1 int4 weight-only)`: the plan's scheme counts.
fn plan_label(prefix: &str, config: &QuantConfig, names: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for n in names {
        let s = scheme_name(&config.scheme_for(n));
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, c)) => *c += 1,
            None => counts.push((s, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, c)| format!("{c} {s}")).collect();
    format!("{prefix} ({})", parts.join(", "))
}

fn load_float(a: &PlanArgs) -> Result<Box<dyn Module<f32>>> {
    if !MODEL_NAMES.contains(&a.model.as_str()) {
        return Err(Error::Invalid(format!(
            "unknown model {:?}; choose one of {}",
            a.model,
            MODEL_NAMES.join(", ")
        )));
    }
    let mut model = build_model(&a.model, None, 0)?;
    load_safetensors(model.as_mut(), &a.weights, true)?;
    Ok(model)
}

const HEADER: &str =
    "| model | weights | size | test accuracy | test loss | inference |\n|---|---|---|---|---|---|";

/// `anneal quantize --auto` or `--config`: prints the before/after table
/// (size, accuracy, measured throughput) and the per-layer plan.
pub fn run(a: &PlanArgs) -> Result<()> {
    match (&a.config, a.auto) {
        (Some(path), false) => apply_saved(a, path),
        (None, true) => run_auto(a),
        (Some(_), true) => Err(Error::Invalid(
            "--auto and --config exclude each other".into(),
        )),
        (None, false) => Err(Error::Invalid("give --auto or --config FILE".into())),
    }
}

fn run_auto(a: &PlanArgs) -> Result<()> {
    if a.budget == 0 || a.budget > 100_000 {
        return Err(Error::Invalid(format!(
            "--budget {} must be between 1 and 100000",
            a.budget
        )));
    }
    let criterion = Criterion::parse(&a.criterion)
        .map_err(|_| Error::Invalid(format!(
            "--criterion {:?} must be rel:FRACTION or abs:FRACTION with 0 ≤ FRACTION (rel: < 1), e.g. rel:0.01 or abs:0.005",
            a.criterion
        )))?;
    let float = load_float(a)?;
    let (train, test) = digits_split()?;
    let options = AutoQuantOptions {
        criterion,
        objective: match a.objective {
            ObjectiveName::Size => Objective::Size,
            ObjectiveName::Speed => Objective::Speed,
        },
        budget: a.budget,
        ..Default::default()
    };
    println!(
        "anneal quantize --auto: {}, criterion {criterion} (accuracy on the {} test images), objective {}, budget {} trials",
        a.model,
        test.len(),
        format!("{:?}", a.objective).to_lowercase(),
        a.budget
    );
    let r = tune_digits(&a.model, float.as_ref(), &train, &test, &options)?;
    let mut tuned = build_model(&a.model, None, 0)?;
    anneal_quant::copy_state(float.as_ref(), tuned.as_mut())?;
    let report = apply_config(tuned.as_mut(), &r.config, &calibration_batches(&train)?)?;
    let names = layer_names(tuned.as_mut());
    println!("{HEADER}");
    println!(
        "{}",
        row(&a.model, "f32", r.float_bytes, float.as_ref(), &test)?
    );
    println!(
        "{}",
        row(
            &a.model,
            &plan_label("auto", &r.config, &names),
            report.quant_model_bytes,
            tuned.as_ref(),
            &test
        )?
    );
    println!("\nchosen plan:\n{}", r.table());
    println!("trials:\n{}", r.history());
    println!(
        "{} trial(s) of {}{}; chosen: {}; accuracy {:.2}% → {:.2}% (threshold {:.2}%), size {:.1} KiB → {:.1} KiB ({:.2}×)",
        r.trials.len(),
        a.budget,
        if r.budget_exhausted {
            " (budget spent)"
        } else {
            ""
        },
        if r.chosen_trial == 0 {
            "the float model (no quantised plan met the criterion)".to_string()
        } else {
            format!("trial {}", r.chosen_trial)
        },
        r.float_accuracy * 100.0,
        r.accuracy * 100.0,
        criterion.threshold(r.float_accuracy) * 100.0,
        r.float_bytes as f64 / 1024.0,
        r.bytes as f64 / 1024.0,
        r.float_bytes as f64 / r.bytes.max(1) as f64
    );
    if let Some(out) = &a.out {
        r.config.save_json(out)?;
        println!("plan: {}", out.display());
    }
    Ok(())
}

fn apply_saved(a: &PlanArgs, path: &Path) -> Result<()> {
    let float = load_float(a)?;
    let (train, test) = digits_split()?;
    let mut model = build_model(&a.model, None, 0)?;
    anneal_quant::copy_state(float.as_ref(), model.as_mut())?;
    let names = layer_names(model.as_mut());
    let config = QuantConfig::load_json(path, &names)?;
    // Calibrated as in the tuner's trials (also feeds the SQNR column).
    let report = apply_config(model.as_mut(), &config, &calibration_batches(&train)?)?;
    println!("anneal quantize --config {}: {}", path.display(), a.model);
    println!("{HEADER}");
    println!(
        "{}",
        row(
            &a.model,
            "f32",
            report.float_model_bytes,
            float.as_ref(),
            &test
        )?
    );
    println!(
        "{}",
        row(
            &a.model,
            &plan_label("plan", &config, &names),
            report.quant_model_bytes,
            model.as_ref(),
            &test
        )?
    );
    println!("\n{}", plan_table(&config, &report));
    Ok(())
}
