//! End-to-end: the sequence models train on the bundled digits (read row by
//! row) and the tiny language model learns to reverse sequences.

use anneal_autograd::Var;
use anneal_layers::{cross_entropy, CrossEntropyOptions, Module, ModuleExt};
use anneal_optim::{Adam, AdamConfig, Optimizer};
use anneal_tensor::Tensor;
use anneal_zoo::data::{load_digits, sequence_task, stratified_split, SequenceTask};
use anneal_zoo::models::TinyLmConfig;
use anneal_zoo::registry::{build_model, defaults_for};
use anneal_zoo::trainer::{train, TrainConfig};

fn digits_accuracy(name: &str) -> f64 {
    let data = load_digits().unwrap();
    let split = stratified_split(&data.labels, 0.2, 0).unwrap();
    let (tr, te) = (
        data.subset(&split.train).unwrap(),
        data.subset(&split.test).unwrap(),
    );
    let mut model = build_model(name, None, 0).unwrap();
    let (lr, epochs) = defaults_for(name);
    let mut opt = Adam::new(AdamConfig::new(lr)).unwrap();
    let cfg = TrainConfig {
        epochs,
        batch_size: 32,
        ..Default::default()
    };
    let h = train(&mut model, &mut opt, None, &tr, &te, &cfg).unwrap();
    eprintln!(
        "{name}: {:?}",
        h.epochs
            .iter()
            .map(|e| (e.eval_accuracy * 1000.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    h.epochs.last().unwrap().eval_accuracy
}

#[test]
fn lstm_classifier_reaches_95_percent() {
    let acc = digits_accuracy("lstm");
    assert!(acc >= 0.95, "LSTM test accuracy {acc}");
}

#[test]
fn gru_classifier_reaches_95_percent() {
    let acc = digits_accuracy("gru");
    assert!(acc >= 0.95, "GRU test accuracy {acc}");
}

#[test]
fn transformer_classifier_reaches_95_percent() {
    let acc = digits_accuracy("transformer");
    assert!(acc >= 0.95, "Transformer test accuracy {acc}");
}

#[test]
fn tiny_lm_learns_to_reverse() {
    // Sequence "x₁ … x_L SEP y₁ … y_L" with y the reverse of x; the model is
    // scored on predicting every y token from its prefix (teacher forcing).
    let (vocab, len, sep) = (10usize, 6usize, 10usize);
    let cfg = TinyLmConfig {
        vocab: vocab + 1,
        max_len: 2 * len + 1,
        ..Default::default()
    };
    let mut lm = cfg.init::<f32>().unwrap();
    let mut opt = Adam::new(AdamConfig::new(3e-3)).unwrap();
    let batch = 64;
    let make = |seed: u64| {
        let (x, y) = sequence_task(SequenceTask::Reverse, batch, len, vocab, seed).unwrap();
        let mut rows = Vec::with_capacity(batch * (2 * len + 1));
        for b in 0..batch {
            rows.extend_from_slice(&x[b * len..(b + 1) * len]);
            rows.push(sep);
            rows.extend_from_slice(&y[b * len..(b + 1) * len]);
        }
        rows
    };
    let t = 2 * len + 1;
    // Inputs are positions 0..t−1, targets 1..t; only the answer half counts.
    let step = |lm: &mut anneal_zoo::models::TinyLm, rows: &[usize], train: bool| -> (Var, f64) {
        let inp: Vec<f32> = (0..batch)
            .flat_map(|b| rows[b * t..b * t + t - 1].iter().map(|&v| v as f32))
            .collect();
        let x = Var::constant(Tensor::from_vec(inp, &[batch, t - 1]).unwrap());
        let logits = if train {
            lm.forward_train(&x).unwrap()
        } else {
            lm.forward(&x).unwrap()
        };
        let answer = logits
            .narrow(1, len, len)
            .unwrap()
            .reshape(&[batch * len, vocab + 1])
            .unwrap();
        let tgt: Vec<usize> = (0..batch)
            .flat_map(|b| rows[b * t + len + 1..(b + 1) * t].to_vec())
            .collect();
        let pred = answer.value().argmax(-1, false).unwrap();
        let acc = pred
            .as_slice()
            .iter()
            .zip(&tgt)
            .filter(|(p, y)| p == y)
            .count() as f64
            / tgt.len() as f64;
        let loss = cross_entropy(
            &answer,
            &Tensor::from_vec(tgt, &[batch * len]).unwrap(),
            &CrossEntropyOptions::default(),
        )
        .unwrap();
        (loss, acc)
    };
    for it in 0..600u64 {
        let rows = make(it);
        let (loss, _) = step(&mut lm, &rows, true);
        let grads = loss.backward().unwrap();
        let mut params = lm.parameters_mut();
        opt.step(&mut params, &grads).unwrap();
    }
    let mut total = 0.0;
    for s in 0..4 {
        total += step(&mut lm, &make(1_000_000 + s), false).1;
    }
    let acc = total / 4.0;
    assert!(acc >= 0.99, "TinyLm per-token accuracy on reverse {acc}");
}

#[test]
fn tiny_lm_generates_from_a_prompt() {
    use rand::SeedableRng;
    let lm = TinyLmConfig::default().init::<f32>().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let greedy = lm.generate(&[1, 2, 3], 5, 0.0, &mut rng).unwrap();
    assert_eq!(greedy.len(), 8);
    assert_eq!(&greedy[..3], &[1, 2, 3]);
    assert_eq!(
        greedy,
        lm.generate(&[1, 2, 3], 5, 0.0, &mut rng).unwrap(),
        "greedy decoding is deterministic"
    );
    let sampled = lm.generate(&[1], 40, 1.0, &mut rng).unwrap();
    assert!(sampled.iter().all(|&t| t < 12));
    assert!(lm.generate(&[], 1, 0.0, &mut rng).is_err());
    assert!(lm.generate(&[1], 1, -1.0, &mut rng).is_err());
}
