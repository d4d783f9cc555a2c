//! The same seed gives bit-identical weights, and a run resumed from a
//! checkpoint ends exactly where an uninterrupted run ends.

use anneal_layers::{state_dict, StateValue};
use anneal_optim::{Adam, AdamConfig};
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::models::SmallCnnConfig;
use anneal_zoo::trainer::{resume, train, TrainConfig};

fn data() -> (Dataset, Dataset) {
    let d = load_digits().unwrap();
    let s = stratified_split(&d.labels, 0.2, 0).unwrap();
    // A quarter of the data keeps the test quick; dropout is on so its
    // generator state matters.
    let train_idx: Vec<usize> = s.train.iter().copied().step_by(4).collect();
    (d.subset(&train_idx).unwrap(), d.subset(&s.test).unwrap())
}

fn bits(m: &impl anneal_layers::Module) -> Vec<(String, Vec<u32>)> {
    state_dict(m)
        .into_iter()
        .map(|(k, v)| {
            let b = match v {
                StateValue::Float(t) => t.as_slice().iter().map(|x| x.to_bits()).collect(),
                StateValue::Int(i) => vec![i as u32],
            };
            (k, b)
        })
        .collect()
}

#[test]
fn same_seed_same_bits_and_resume_is_exact() {
    let (tr, te) = data();
    let model_cfg = SmallCnnConfig {
        dropout: 0.3,
        seed: 5,
        ..Default::default()
    };
    let dir = std::env::temp_dir().join(format!("anneal-resume-{}", std::process::id()));
    let cfg = |epochs: usize| TrainConfig {
        epochs,
        batch_size: 16,
        seed: 9,
        checkpoint_dir: Some(dir.clone()),
        ..Default::default()
    };

    let run_full = || {
        let mut m = model_cfg.init::<f32>().unwrap();
        let mut opt = Adam::new(AdamConfig::new(2e-3)).unwrap();
        train(&mut m, &mut opt, None, &tr, &te, &cfg(4)).unwrap();
        bits(&m)
    };
    let a = run_full();
    let b = run_full();
    assert_eq!(a, b, "same seed must give bit-identical weights");

    // Two epochs, then a fresh model and optimiser resume from "last".
    let mut m = model_cfg.init::<f32>().unwrap();
    let mut opt = Adam::new(AdamConfig::new(2e-3)).unwrap();
    train(&mut m, &mut opt, None, &tr, &te, &cfg(2)).unwrap();
    let mut m2 = SmallCnnConfig {
        seed: 77,
        ..model_cfg.clone()
    }
    .init::<f32>()
    .unwrap();
    let mut opt2 = Adam::new(AdamConfig::new(2e-3)).unwrap();
    let h = resume(&mut m2, &mut opt2, None, &tr, &te, &cfg(4), "last").unwrap();
    assert_eq!(h.epochs.len(), 2, "resumed run trains the remaining epochs");
    assert_eq!(
        bits(&m2),
        a,
        "resumed run must end bit-identical to the uninterrupted one"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
