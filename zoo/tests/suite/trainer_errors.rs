//! The trainer stops on a non-finite loss or gradient with an error naming
//! the step (and the parameter), or skips such batches when asked; weights
//! that an update makes non-finite stop the run at that step; early
//! stopping ends a stalled run.

use anneal_autograd::{Param, Var};
use anneal_layers::{join, Entry, EntryMut, Module};
use anneal_optim::{Adam, AdamConfig, Sgd, SgdConfig};
use anneal_tensor::Tensor;
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

/// A linear classifier whose bias enters as `√b` with `b = 0`: the loss is
/// finite, but `∂√b/∂b = 1/(2√b)` is infinite.
struct SqrtBias {
    w: Param<f32>,
    b: Param<f32>,
}

impl Module<f32> for SqrtBias {
    fn forward(&self, x: &Var<f32>) -> anneal_tensor::Result<Var<f32>> {
        x.flatten(1, -1)?
            .linear(&self.w.var(), None)?
            .add(&self.b.var().sqrt())
    }
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, f32>)) {
        f(&join(prefix, "w"), Entry::Param(&self.w));
        f(&join(prefix, "b"), Entry::Param(&self.b));
    }
    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, f32>)) {
        f(&join(prefix, "w"), EntryMut::Param(&mut self.w));
        f(&join(prefix, "b"), EntryMut::Param(&mut self.b));
    }
}

#[test]
fn non_finite_gradient_names_the_step_and_the_parameter() {
    let (tr, te) = small();
    let model = || SqrtBias {
        w: Param::new(Tensor::randn_seeded(&[10, 64], 1).unwrap().mul_scalar(0.01)),
        b: Param::new(Tensor::zeros(&[10]).unwrap()),
    };
    let mut m = model();
    let before = m.b.value().to_vec();
    let mut opt = Sgd::new(SgdConfig::new(0.1)).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..Default::default()
    };
    match train(&mut m, &mut opt, None, &tr, &te, &cfg) {
        Err(e @ Error::NonFinite { .. }) => {
            assert_eq!(
                e.to_string(),
                "non-finite gradient of parameter b (10 of 10 values) at step 0"
            );
        }
        other => panic!("expected a non-finite gradient error, got {other:?}"),
    }
    assert_eq!(m.b.value().to_vec(), before, "no update was applied");
    // Skipping: every batch has the infinite gradient, so every batch is skipped.
    let mut m = model();
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
    assert_eq!(h.skipped_batches, 4);
}

#[test]
fn weights_an_update_makes_non_finite_name_the_step_and_the_parameter() {
    let (tr, te) = small();
    let mut m = SmallCnnConfig::default().init::<f32>().unwrap();
    // 1e39 is a finite f64 learning rate that is +∞ in f32.
    let mut opt = Sgd::new(SgdConfig::new(1e39)).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..Default::default()
    };
    match train(&mut m, &mut opt, None, &tr, &te, &cfg) {
        Err(Error::NonFinite { step, what }) => {
            assert_eq!(step, 0);
            assert!(
                what.starts_with("parameter features.0.weight after the update ("),
                "{what}"
            );
        }
        other => panic!("expected a non-finite parameter error, got {other:?}"),
    }
}
