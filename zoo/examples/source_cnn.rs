//! Network structure: the source material's CNN, composed by hand.
//!
//! Three conv blocks (32/64/128 channels, each conv 3×3 + BatchNorm + ReLU)
//! and a dense head 1024 → 512 → 10, built from two small helper functions
//! with `Sequential::push`, then trained for 3 epochs on the bundled digits.
//! Two fixes over the source material: flatten *before* the dense layers,
//! and raw logits out (`cross_entropy` applies log-softmax itself).
//!
//! The reference implementation is `anneal_zoo::models::SourceCnnConfig`.
//!
//! Run: `cargo run --release -p anneal-zoo --example source_cnn`

use anneal_layers::{
    BatchNormConfig, Conv2dConfig, Flatten, LinearConfig, ModuleExt, Relu, Sequential,
};
use anneal_optim::{Adam, AdamConfig};
use anneal_zoo::data::{load_digits, stratified_split};
use anneal_zoo::trainer::{evaluate, train, TrainConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// conv 3×3 (padding 1, so 8×8 stays 8×8) → BatchNorm → ReLU.
fn conv_layer(c_in: usize, c_out: usize, rng: &mut StdRng) -> Res<Sequential> {
    Ok(Sequential::new()
        .push(
            Conv2dConfig::new(c_in, c_out, 3)
                .with_padding(1)
                .init(rng)?,
        )
        .push(BatchNormConfig::new(c_out).init()?)
        .push(Relu))
}

/// A dense layer, optionally followed by ReLU (the last layer has none:
/// it returns raw logits).
fn fc_layer(n_in: usize, n_out: usize, relu: bool, rng: &mut StdRng) -> Res<Sequential> {
    let mut s = Sequential::new().push(LinearConfig::new(n_in, n_out).init(rng)?);
    if relu {
        s = s.push(Relu);
    }
    Ok(s)
}

fn main() -> Res<()> {
    // Every weight is drawn from this one generator: same seed, same model.
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Sequential::new()
        .push(conv_layer(1, 32, &mut rng)?) //    [N, 1, 8, 8]  → [N, 32, 8, 8]
        .push(conv_layer(32, 64, &mut rng)?) //   → [N, 64, 8, 8]
        .push(conv_layer(64, 128, &mut rng)?) //  → [N, 128, 8, 8]
        .push(Flatten::default()) //              → [N, 8192]
        .push(fc_layer(128 * 8 * 8, 1024, true, &mut rng)?)
        .push(fc_layer(1024, 512, true, &mut rng)?)
        .push(fc_layer(512, 10, false, &mut rng)?); // → [N, 10] logits

    // Parameter names are PyTorch's `named_parameters()` names for the same
    // nesting: `<block>.<layer>.weight`. (BatchNorm's running mean and
    // variance are buffers, not parameters; `Module::visit` lists them too.)
    println!("{:<12} {:>16} {:>10}", "parameter", "shape", "count");
    for (name, p) in model.named_parameters() {
        let n = p.value().numel();
        println!("{name:<12} {:>16} {n:>10}", format!("{:?}", p.shape()));
    }
    println!("total: {} parameters\n", model.num_parameters());

    // The bundled UCI digits: 1,797 8×8 images, stratified 80/20 split.
    let data = load_digits()?;
    let split = stratified_split(&data.labels, 0.2, 0)?;
    let (train_set, test_set) = (data.subset(&split.train)?, data.subset(&split.test)?);

    // The zoo trainer: shuffled mini-batches, cross-entropy, one Adam step
    // per batch, evaluation on the test split after every epoch.
    let mut opt = Adam::new(AdamConfig::new(1e-3))?;
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 64,
        seed: 0,
        ..Default::default()
    };
    let history = train(&mut model, &mut opt, None, &train_set, &test_set, &cfg)?;
    for e in &history.epochs {
        println!(
            "epoch {}: train loss {:.4}, test accuracy {:.2}%",
            e.epoch + 1,
            e.train_loss,
            e.eval_accuracy * 100.0
        );
    }
    let (loss, acc) = evaluate(&model, &test_set, 256)?;
    println!(
        "\nfinal test accuracy: {:.2}% (loss {loss:.4}) on {} images",
        acc * 100.0,
        test_set.len()
    );
    Ok(())
}
