//! L2 and dropout measurably narrow the train–test gap of an over-fitting
//! configuration: a wide dense network on 300 training images, a third of
//! whose labels are corrupted (the test labels are clean), so an
//! unregularised network memorises the noise.

use anneal_layers::{Dropout, Flatten, LinearConfig, Relu, Sequential};
use anneal_optim::{Adam, AdamConfig};
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::trainer::{evaluate, train, TrainConfig};
use rand::SeedableRng;

fn net(dropout: f64) -> Sequential {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut s = Sequential::new()
        .push(Flatten::default())
        .push(LinearConfig::new(64, 1024).init(&mut rng).unwrap())
        .push(Relu);
    if dropout > 0.0 {
        s = s.push(Dropout::new(dropout, 1).unwrap());
    }
    s.push(LinearConfig::new(1024, 10).init(&mut rng).unwrap())
}

/// (train accuracy − test accuracy, test accuracy) after training.
fn gap(tr: &Dataset, te: &Dataset, l2: f64, dropout: f64) -> (f64, f64) {
    let mut m = net(dropout);
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    let cfg = TrainConfig {
        epochs: 100,
        batch_size: 16,
        l2,
        ..Default::default()
    };
    train(&mut m, &mut opt, None, tr, te, &cfg).unwrap();
    let (_, train_acc) = evaluate(&m, tr, 256).unwrap();
    let (_, test_acc) = evaluate(&m, te, 256).unwrap();
    (train_acc - test_acc, test_acc)
}

#[test]
fn l2_and_dropout_narrow_the_generalisation_gap() {
    let d = load_digits().unwrap();
    let s = stratified_split(&d.labels, 0.2, 0).unwrap();
    let small: Vec<usize> = s.train.iter().copied().step_by(4).take(300).collect();
    let (mut tr, te) = (d.subset(&small).unwrap(), d.subset(&s.test).unwrap());
    for (i, l) in tr.labels.iter_mut().enumerate() {
        if i % 3 == 0 {
            *l = (*l + 1 + i % 9) % 10; // a wrong label, deterministically
        }
    }
    let none = gap(&tr, &te, 0.0, 0.0);
    let l2 = gap(&tr, &te, 0.003, 0.0);
    let dropout = gap(&tr, &te, 0.0, 0.8);
    for (name, (g, acc)) in [
        ("none", none),
        ("L2 λ=0.003", l2),
        ("dropout p=0.8", dropout),
    ] {
        eprintln!(
            "{name:>14}: train − test accuracy gap {:5.1} pt, test accuracy {:.1}%",
            g * 100.0,
            acc * 100.0
        );
    }
    assert!(
        none.0 > 0.2,
        "the base configuration should over-fit (gap {:.3})",
        none.0
    );
    assert!(l2.0 < none.0 - 0.05, "L2 gap {:.3} vs {:.3}", l2.0, none.0);
    assert!(
        dropout.0 < none.0 - 0.05,
        "dropout gap {:.3} vs {:.3}",
        dropout.0,
        none.0
    );
}
