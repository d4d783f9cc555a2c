//! The trainer stops on a non-finite loss with an error naming the step, or
//! skips such batches when asked; early stopping ends a stalled run.

use anneal_optim::{Adam, AdamConfig, Sgd, SgdConfig};
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::models::SmallCnnConfig;
use anneal_zoo::trainer::{train, TrainConfig};
use anneal_zoo::Error;

fn small() -> (Dataset, Dataset) {
    let d = load_digits().unwrap();
    let s = stratified_split(&d.labels, 0.2, 0).unwrap();
    let tr: Vec<usize> = s.train.iter().copied().take(64).collect();
    (d.subset(&tr).unwrap(), d.subset(&s.test).unwrap())
}

#[test]
fn non_finite_loss_names_the_step_or_is_skipped() {
    let (mut tr, te) = small();
    // Poison one image: sample 40 lands in some batch of the first epoch.
    let mut x = tr.inputs.to_vec();
    x[40 * 64] = f32::NAN;
    tr.inputs = anneal_tensor::Tensor::from_vec(x, tr.inputs.shape()).unwrap();
    let mut m = SmallCnnConfig::default().init::<f32>().unwrap();
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..Default::default()
    };
    match train(&mut m, &mut opt, None, &tr, &te, &cfg) {
        Err(Error::NonFinite { step, what }) => {
            assert!(step < 4, "step {step}");
            assert!(what.contains("loss"), "{what}");
        }
        other => panic!("expected a non-finite loss error, got {other:?}"),
    }
    let mut m = SmallCnnConfig::default().init::<f32>().unwrap();
    let h = train(
        &mut m,
        &mut opt,
        None,
        &tr,
        &te,
        &TrainConfig {
            skip_nonfinite: true,
            ..cfg
        },
    )
    .unwrap();
    assert_eq!(h.skipped_batches, 1);
    assert!(h.epochs[0].train_loss.is_finite());
}

#[test]
fn early_stopping_ends_a_stalled_run() {
    let (tr, te) = small();
    let mut m = SmallCnnConfig::default().init::<f32>().unwrap();
    // A zero learning rate never improves the evaluation loss after epoch 0.
    let mut opt = Sgd::new(SgdConfig::new(0.0)).unwrap();
    let cfg = TrainConfig {
        epochs: 20,
        batch_size: 32,
        early_stopping_patience: Some(2),
        ..Default::default()
    };
    let h = train(&mut m, &mut opt, None, &tr, &te, &cfg).unwrap();
    assert!(h.stopped_early);
    assert_eq!(
        h.epochs.len(),
        3,
        "epoch 0 sets the best, then two without improvement"
    );
    assert_eq!(h.best_epoch, Some(0));
}
