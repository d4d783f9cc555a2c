//! Regularisation: Dropout against over-fitting.
//!
//! Part 1 shows what `Dropout` does: at inference (`forward`) it is the
//! identity, so predictions are deterministic; in training
//! (`forward_train`) it zeroes each unit with probability p and scales the
//! survivors by 1/(1 − p), so the expected activation is unchanged.
//!
//! Part 2 trains the over-fitting dense network of `l2_regularisation.rs`
//! (64→256→10 on 150 digits) with the zoo trainer, without and with
//! Dropout after the hidden layer, for three seeds (a single run's
//! difference of about a point is the size of seed-to-seed noise).
//!
//! Run: `cargo run --release -p anneal-zoo --example dropout`

use anneal_autograd::Var;
use anneal_layers::{Dropout, Flatten, LinearConfig, Module, Relu, Sequential};
use anneal_optim::{Adam, AdamConfig};
use anneal_tensor::Tensor;
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::trainer::{evaluate, train, TrainConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const P: f64 = 0.7;
const EPOCHS: usize = 1000;
const SEEDS: u64 = 3;

/// Trains Flatten → Linear 64→256 → ReLU → [Dropout p] → Linear 256→10;
/// returns train/test accuracy and test loss, measured in inference mode
/// (dropout off), as the model will be used.
fn fit(p: f64, seed: u64, train_set: &Dataset, test_set: &Dataset) -> Res<(f64, f64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed); // same initial weights with and without
    let mut model = Sequential::new()
        .push(Flatten::default())
        .push(LinearConfig::new(64, 256).init(&mut rng)?)
        .push(Relu);
    if p > 0.0 {
        model = model.push(Dropout::new(p, seed)?); // its own seeded mask generator
    }
    model = model.push(LinearConfig::new(256, 10).init(&mut rng)?);
    let mut opt = Adam::new(AdamConfig::new(3e-3))?;
    // One batch of all 150 images per epoch: mini-batch noise is itself a
    // mild regulariser, and without it the effect of dropout is clearer.
    let cfg = TrainConfig {
        epochs: EPOCHS,
        batch_size: train_set.len(),
        seed, // the trainer re-seeds the dropout masks from it every epoch
        ..Default::default()
    };
    // `train` calls `forward_train`, so dropout is active only here.
    train(&mut model, &mut opt, None, train_set, test_set, &cfg)?;
    let (_, train_acc) = evaluate(&model, train_set, 256)?;
    let (test_loss, test_acc) = evaluate(&model, test_set, 256)?;
    Ok((train_acc, test_acc, test_loss))
}

fn main() -> Res<()> {
    // Part 1: inference vs training behaviour on a row of ones.
    let mut drop = Dropout::new(0.5, 0)?;
    let x = Var::constant(Tensor::<f32>::ones(&[1, 10])?);
    println!("Dropout(p = 0.5) on ten ones:");
    for _ in 0..2 {
        println!("  forward        {:?}", drop.forward(&x)?.value().to_vec());
    }
    for _ in 0..2 {
        println!(
            "  forward_train  {:?}",
            drop.forward_train(&x)?.value().to_vec()
        );
    }
    println!();

    // Part 2: the train–test gap with and without dropout.
    let data = load_digits()?;
    let split = stratified_split(&data.labels, 0.2, 0)?;
    let small: Vec<usize> = split.train.iter().copied().step_by(9).take(150).collect();
    let (train_set, test_set) = (data.subset(&small)?, data.subset(&split.test)?);
    println!(
        "dense 64→256→10, {} training / {} test images, {EPOCHS} full-batch Adam steps (lr 3e-3)",
        train_set.len(),
        test_set.len()
    );
    println!(
        "{:<5} {:<12} {:>10} {:>10} {:>10} {:>10}",
        "seed", "run", "train acc", "test acc", "gap", "test loss"
    );
    let mut mean_gap = [0.0; 2];
    for seed in 0..SEEDS {
        for (k, p) in [0.0, P].into_iter().enumerate() {
            let label = ["no dropout", "dropout 0.7"][k];
            let (train_acc, test_acc, test_loss) = fit(p, seed, &train_set, &test_set)?;
            let gap = (train_acc - test_acc) * 100.0;
            mean_gap[k] += gap / SEEDS as f64;
            println!(
                "{seed:<5} {label:<12} {:>9.2}% {:>9.2}% {gap:>7.2} pt {test_loss:>10.4}",
                train_acc * 100.0,
                test_acc * 100.0
            );
        }
    }
    println!(
        "\nmean train–test gap: {:.2} pt without dropout, {:.2} pt with ({:+.2} pt)",
        mean_gap[0],
        mean_gap[1],
        mean_gap[1] - mean_gap[0]
    );
    Ok(())
}
