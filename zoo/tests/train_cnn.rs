//! End-to-end: the reference CNNs train on the bundled digits.

use anneal_optim::{Adam, AdamConfig};
use anneal_zoo::data::{load_digits, stratified_split};
use anneal_zoo::models::{SmallCnnConfig, SourceCnnConfig};
use anneal_zoo::trainer::{train, TrainConfig};

#[test]
fn small_cnn_reaches_97_percent() {
    let data = load_digits().unwrap();
    let split = stratified_split(&data.labels, 0.2, 0).unwrap();
    let (tr, te) = (
        data.subset(&split.train).unwrap(),
        data.subset(&split.test).unwrap(),
    );
    let mut model = SmallCnnConfig::default().init::<f32>().unwrap();
    let mut opt = Adam::new(AdamConfig::new(3e-3)).unwrap();
    let cfg = TrainConfig {
        epochs: 12,
        batch_size: 32,
        ..Default::default()
    };
    let h = train(&mut model, &mut opt, None, &tr, &te, &cfg).unwrap();
    let last = h.epochs.last().unwrap();
    eprintln!(
        "{:#?}",
        h.epochs
            .iter()
            .map(|e| (e.epoch, e.train_loss, e.eval_accuracy, e.samples_per_second))
            .collect::<Vec<_>>()
    );
    assert!(
        last.eval_accuracy >= 0.97,
        "SmallCnn test accuracy {}",
        last.eval_accuracy
    );
}

#[test]
fn source_cnn_reaches_97_percent() {
    let data = load_digits().unwrap();
    let split = stratified_split(&data.labels, 0.2, 0).unwrap();
    let (tr, te) = (
        data.subset(&split.train).unwrap(),
        data.subset(&split.test).unwrap(),
    );
    let mut model = SourceCnnConfig::default().init::<f32>().unwrap();
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    let cfg = TrainConfig {
        epochs: 6,
        batch_size: 32,
        ..Default::default()
    };
    let h = train(&mut model, &mut opt, None, &tr, &te, &cfg).unwrap();
    let last = h.epochs.last().unwrap();
    eprintln!(
        "{:#?}",
        h.epochs
            .iter()
            .map(|e| (e.epoch, e.train_loss, e.eval_accuracy, e.samples_per_second))
            .collect::<Vec<_>>()
    );
    assert!(
        last.eval_accuracy >= 0.97,
        "SourceCnn test accuracy {}",
        last.eval_accuracy
    );
}
