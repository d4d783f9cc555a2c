//! Optimisation algorithm: Adam against SGD with momentum.
//!
//! Trains two copies of the zoo's `SmallCnn` (same seed, so the same initial
//! weights and the same batches) on the bundled digits, one with Adam and
//! one with SGD + momentum 0.9, and prints both learning curves side by side.
//! Any `anneal_optim::Optimizer` plugs into the same trainer.
//!
//! Run: `cargo run --release -p anneal-zoo --example adam`

use anneal_optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::models::SmallCnnConfig;
use anneal_zoo::trainer::{train, History, TrainConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const EPOCHS: usize = 6;

/// A fresh SmallCnn (seed 0) trained with `opt`; returns the per-epoch history.
fn run(opt: &mut dyn Optimizer, train_set: &Dataset, test_set: &Dataset) -> Res<History> {
    let mut model = SmallCnnConfig::default().init::<f32>()?;
    let cfg = TrainConfig {
        epochs: EPOCHS,
        batch_size: 32,
        seed: 0,
        ..Default::default()
    };
    Ok(train(&mut model, opt, None, train_set, test_set, &cfg)?)
}

fn main() -> Res<()> {
    let data = load_digits()?;
    let split = stratified_split(&data.labels, 0.2, 0)?;
    let (train_set, test_set) = (data.subset(&split.train)?, data.subset(&split.test)?);

    // Adam (Kingma & Ba 2015): per-parameter step sizes from running
    // averages of the gradient and its square; PyTorch's defaults
    // (betas 0.9/0.999, eps 1e-8) with a learning rate of 3e-3.
    let mut adam = Adam::new(AdamConfig::new(3e-3))?;
    // SGD with heavy-ball momentum: v ← μ·v + g, w ← w − lr·v.
    let mut sgd = Sgd::new(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    })?;

    let a = run(&mut adam, &train_set, &test_set)?;
    let s = run(&mut sgd, &train_set, &test_set)?;

    println!("SmallCnn on the digits, batch 32: Adam (lr 3e-3) vs SGD + momentum 0.9 (lr 0.01)");
    println!("loss = mean training cross-entropy of the epoch; accuracy = test split\n");
    println!("{:>5} | {:^20} | {:^20}", "", "Adam", "SGD + momentum");
    println!(
        "{:>5} | {:>10} {:>9} | {:>10} {:>9}",
        "epoch", "loss", "accuracy", "loss", "accuracy"
    );
    println!("{}", "-".repeat(51));
    for (ea, es) in a.epochs.iter().zip(&s.epochs) {
        println!(
            "{:>5} | {:>10.4} {:>8.2}% | {:>10.4} {:>8.2}%",
            ea.epoch + 1,
            ea.train_loss,
            ea.eval_accuracy * 100.0,
            es.train_loss,
            es.eval_accuracy * 100.0
        );
    }
    Ok(())
}
