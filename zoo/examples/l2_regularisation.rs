//! Regularisation: an L2 penalty against over-fitting.
//!
//! A dense network (Flatten → Linear 64→256 → ReLU → Linear 256→10) trained
//! on only 150 digits memorises them: near-perfect training accuracy, a
//! lower test accuracy. Adding `½·λ·Σw²` to the loss pulls the weights
//! towards zero and narrows that train–test gap. Three seeds, since one
//! run's difference can be the size of seed-to-seed noise. The training
//! loop is written out by hand so that the penalty call is visible; the zoo
//! trainer does the same with `TrainConfig { l2: λ, .. }`.
//!
//! Run: `cargo run --release -p anneal-zoo --example l2_regularisation`

use anneal_autograd::Var;
use anneal_layers::{
    cross_entropy, CrossEntropyOptions, Flatten, LinearConfig, Module, ModuleExt, Relu, Sequential,
};
use anneal_optim::{l2_penalty, Adam, AdamConfig, Optimizer, ParamFilter};
use anneal_tensor::Tensor;
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::trainer::evaluate;
use rand::rngs::StdRng;
use rand::SeedableRng;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const STEPS: usize = 1000;
const LAMBDA: f64 = 3e-3;
const SEEDS: u64 = 3;

/// Trains a fresh dense network with penalty weight `lambda` (0 = none);
/// returns (train accuracy, test accuracy, Σw² of the weights).
fn fit(lambda: f64, seed: u64, train_set: &Dataset, test_set: &Dataset) -> Res<(f64, f64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed); // same initial weights with and without
    let mut model = Sequential::new()
        .push(Flatten::default())
        .push(LinearConfig::new(64, 256).init(&mut rng)?)
        .push(Relu)
        .push(LinearConfig::new(256, 10).init(&mut rng)?);
    let mut opt = Adam::new(AdamConfig::new(3e-3))?;
    // Penalise the weight matrices only, as is usual: not biases or norms.
    let filter = ParamFilter::no_bias_or_norm();
    // Full-batch training: every step sees all 150 images. (Mini-batch noise
    // is itself a mild regulariser; without it the penalty's effect is clearer.)
    let x = Var::constant(train_set.inputs.clone());
    let y = Tensor::from_vec(train_set.labels.clone(), &[train_set.len()])?;
    for _ in 0..STEPS {
        let logits = model.forward_train(&x)?;
        let mut loss = cross_entropy(&logits, &y, &CrossEntropyOptions::default())?;
        if lambda > 0.0 {
            // loss += ½·λ·Σw²; autograd adds λ·w to each weight's gradient.
            let penalty = l2_penalty(model.named_parameters(), lambda, &filter)?;
            loss = loss.add(&penalty)?;
        }
        let grads = loss.backward()?;
        opt.step(&mut model.parameters_mut(), &grads)?;
    }
    let (_, train_acc) = evaluate(&model, train_set, 256)?;
    let (_, test_acc) = evaluate(&model, test_set, 256)?;
    // Σw² of the penalised weights: the penalty itself with λ = 2.
    let sum_sq = l2_penalty(model.named_parameters(), 2.0, &filter)?;
    let sum_sq = sum_sq.value().item()? as f64;
    Ok((train_acc, test_acc, sum_sq))
}

fn main() -> Res<()> {
    let data = load_digits()?;
    let split = stratified_split(&data.labels, 0.2, 0)?;
    // A deliberately small training set (150 images, spread over the
    // sorted training indices) so that the network over-fits.
    let small: Vec<usize> = split.train.iter().copied().step_by(9).take(150).collect();
    let (train_set, test_set) = (data.subset(&small)?, data.subset(&split.test)?);
    println!(
        "dense 64→256→10, {} training / {} test images, {STEPS} full-batch Adam steps (lr 3e-3)",
        train_set.len(),
        test_set.len()
    );
    println!(
        "{:<5} {:<12} {:>10} {:>10} {:>10} {:>8}",
        "seed", "run", "train acc", "test acc", "gap", "Σw²"
    );
    let mut mean_gap = [0.0; 2];
    for seed in 0..SEEDS {
        for (k, lambda) in [0.0, LAMBDA].into_iter().enumerate() {
            let label = ["no penalty", "L2 λ = 3e-3"][k];
            let (train_acc, test_acc, sum_sq) = fit(lambda, seed, &train_set, &test_set)?;
            let gap = (train_acc - test_acc) * 100.0;
            mean_gap[k] += gap / SEEDS as f64;
            println!(
                "{seed:<5} {label:<12} {:>9.2}% {:>9.2}% {gap:>7.2} pt {sum_sq:>8.1}",
                train_acc * 100.0,
                test_acc * 100.0
            );
        }
    }
    println!(
        "\nmean train–test gap: {:.2} pt without the penalty, {:.2} pt with ({:+.2} pt)",
        mean_gap[0],
        mean_gap[1],
        mean_gap[1] - mean_gap[0]
    );
    Ok(())
}
