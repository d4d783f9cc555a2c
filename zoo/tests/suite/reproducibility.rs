//! Reproducibility of every reference model (the registry's small-cnn,
//! source-cnn, lstm, gru and transformer, plus the tiny language model):
//!
//! * the same seed gives bit-identical weights after a short training run,
//!   on a rayon pool of 1 thread and of 2 threads;
//! * a run stopped after some epochs and resumed from its checkpoint (into a
//!   freshly built model and optimiser) ends bit-identical to the
//!   uninterrupted run.
//!
//! The runs exercise dropout (its generators are re-seeded per epoch),
//! Adam's moments, a cosine schedule, an L2 penalty, label smoothing and
//! gradient clipping, so all of that state has to survive a resume. They are
//! tiny (a few batches of 64, big enough for the kernels' parallel paths) so
//! that the file runs in seconds.

use crate::common::fresh_dir;
use std::path::PathBuf;
use std::time::Instant;

use anneal_autograd::Var;
use anneal_layers::{
    cross_entropy, load_safetensors, mix_seed, save_safetensors, state_dict, CrossEntropyOptions,
    Module, ModuleExt, StateValue,
};
use anneal_optim::{Adam, AdamConfig, CosineAnnealingLr, Optimizer, OptimizerState};
use anneal_tensor::Tensor;
use anneal_zoo::data::{load_digits, sequence_task, stratified_split, Dataset, SequenceTask};
use anneal_zoo::models::{TinyLm, TinyLmConfig};
use anneal_zoo::registry::{build_model, MODEL_NAMES};
use anneal_zoo::trainer::{resume, train, TrainConfig};

/// Every float and counter of the state dict, as raw bits.
fn bits<M: Module<f32> + ?Sized>(m: &M) -> Vec<(String, Vec<u32>)> {
    state_dict(m)
        .into_iter()
        .map(|(k, v)| {
            let b = match v {
                StateValue::Float(t) => t.as_slice().iter().map(|x| x.to_bits()).collect(),
                StateValue::Int(i) => vec![i as u32, (i >> 32) as u32],
            };
            (k, b)
        })
        .collect()
}

/// Runs `f` on a fresh rayon pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn tmp(name: &str) -> PathBuf {
    fresh_dir("repro", name)
}

/// 128 training images (two batches of 64) and 64 evaluation images.
fn digits() -> (Dataset, Dataset) {
    let d = load_digits().unwrap();
    let s = stratified_split(&d.labels, 0.2, 0).unwrap();
    let tr: Vec<usize> = s.train.iter().copied().step_by(9).take(128).collect();
    let te: Vec<usize> = s.test.iter().copied().take(64).collect();
    (d.subset(&tr).unwrap(), d.subset(&te).unwrap())
}

/// Trains registry model `name` for `epochs` epochs at 1 and at 2 threads
/// and through a resume after `epochs − 1` epochs; all three must end with
/// the same bits.
fn check_registry_model(name: &str, epochs: usize) {
    let (tr, te) = digits();
    let model_seed = 5;
    let lr = 2e-3;
    let cfg = |dir: Option<PathBuf>| TrainConfig {
        epochs,
        batch_size: 64,
        seed: 9,
        label_smoothing: 0.1,
        l2: 1e-4,
        clip_grad_norm: Some(5.0),
        checkpoint_dir: dir,
        ..Default::default()
    };
    let run = |threads: usize| {
        on_threads(threads, || {
            let mut m = build_model(name, Some(0.3), model_seed).unwrap();
            let mut opt = Adam::new(AdamConfig::new(lr)).unwrap();
            let mut sched = CosineAnnealingLr::new(lr, epochs, 0.0).unwrap();
            let h = train(&mut m, &mut opt, Some(&mut sched), &tr, &te, &cfg(None)).unwrap();
            assert_eq!(h.epochs.len(), epochs);
            assert!(h.epochs.iter().all(|e| e.train_loss.is_finite()));
            bits(m.as_ref())
        })
    };
    let start = Instant::now();
    let one = run(1);
    let two = run(2);
    assert!(
        one == two,
        "{name}: weights differ between 1 and 2 threads (first differing tensor: {:?})",
        one.iter()
            .zip(&two)
            .find(|(a, b)| a != b)
            .map(|(a, _)| &a.0)
    );

    // Stop one epoch short, then resume into a differently
    // initialised model and a fresh optimiser and schedule.
    let dir = tmp(name);
    let resumed = on_threads(2, || {
        let mut m = build_model(name, Some(0.3), model_seed).unwrap();
        let mut opt = Adam::new(AdamConfig::new(lr)).unwrap();
        let mut sched = CosineAnnealingLr::new(lr, epochs, 0.0).unwrap();
        let short = TrainConfig {
            epochs: epochs - 1,
            ..cfg(Some(dir.clone()))
        };
        train(&mut m, &mut opt, Some(&mut sched), &tr, &te, &short).unwrap();
        let mut m2 = build_model(name, Some(0.3), model_seed + 100).unwrap();
        let initial = build_model(name, Some(0.3), model_seed).unwrap();
        assert_ne!(
            bits(m2.as_ref()),
            bits(initial.as_ref()),
            "{name}: the fresh model must start elsewhere"
        );
        let mut opt2 = Adam::new(AdamConfig::new(lr)).unwrap();
        let mut sched2 = CosineAnnealingLr::new(lr, epochs, 0.0).unwrap();
        let h = resume(
            &mut m2,
            &mut opt2,
            Some(&mut sched2),
            &tr,
            &te,
            &cfg(Some(dir.clone())),
            "last",
        )
        .unwrap();
        assert_eq!(
            h.epochs.len(),
            1,
            "{name}: the resumed run trains the last epoch"
        );
        bits(m2.as_ref())
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        resumed == one,
        "{name}: the resumed run differs from the uninterrupted one (first differing tensor: {:?})",
        one.iter()
            .zip(&resumed)
            .find(|(a, b)| a != b)
            .map(|(a, _)| &a.0)
    );
    eprintln!("{name}: {:.2} s", start.elapsed().as_secs_f64());
}

#[test]
fn small_cnn_is_reproducible() {
    check_registry_model("small-cnn", 3);
}

#[test]
fn source_cnn_is_reproducible() {
    // 8.4 M parameters (its 8192 → 1024 dense layer): two epochs, resumed
    // after one, keep the checkpoints it writes few.
    check_registry_model("source-cnn", 2);
}

#[test]
fn lstm_is_reproducible() {
    check_registry_model("lstm", 3);
}

#[test]
fn gru_is_reproducible() {
    check_registry_model("gru", 3);
}

#[test]
fn transformer_is_reproducible() {
    check_registry_model("transformer", 3);
}

#[test]
fn every_registry_model_is_covered() {
    assert_eq!(
        MODEL_NAMES,
        &["small-cnn", "source-cnn", "lstm", "gru", "transformer"],
        "a model was added to the registry: give it a reproducibility test"
    );
}

// --- The tiny language model (not a classifier: its own short loop) ------

const LM_LEN: usize = 6;
const LM_VOCAB: usize = 8;
const LM_BATCH: usize = 64;

fn lm_config(seed: u64) -> TinyLmConfig {
    TinyLmConfig {
        vocab: LM_VOCAB + 1,
        max_len: 2 * LM_LEN + 1,
        d_model: 32,
        heads: 4,
        layers: 2,
        ffn: 64,
        dropout: 0.2,
        seed,
    }
}

/// Steps `steps` of next-token training on the reverse task: the batch and
/// the dropout masks of each step depend only on the run's seed and the
/// step number, as the trainer's epochs do.
fn lm_train(lm: &mut TinyLm, opt: &mut Adam, steps: std::ops::Range<usize>) {
    let sep = LM_VOCAB;
    let t = 2 * LM_LEN + 1;
    for step in steps {
        let (x, y) = sequence_task(
            SequenceTask::Reverse,
            LM_BATCH,
            LM_LEN,
            LM_VOCAB,
            mix_seed(3, step as u64),
        )
        .unwrap();
        let mut rows = Vec::with_capacity(LM_BATCH * t);
        for b in 0..LM_BATCH {
            rows.extend_from_slice(&x[b * LM_LEN..(b + 1) * LM_LEN]);
            rows.push(sep);
            rows.extend_from_slice(&y[b * LM_LEN..(b + 1) * LM_LEN]);
        }
        let inp: Vec<f32> = (0..LM_BATCH)
            .flat_map(|b| rows[b * t..b * t + t - 1].iter().map(|&v| v as f32))
            .collect();
        let tgt: Vec<usize> = (0..LM_BATCH)
            .flat_map(|b| rows[b * t + 1..(b + 1) * t].to_vec())
            .collect();
        lm.reseed(mix_seed(11, step as u64));
        let logits = lm
            .forward_train(&Var::constant(
                Tensor::from_vec(inp, &[LM_BATCH, t - 1]).unwrap(),
            ))
            .unwrap()
            .reshape(&[LM_BATCH * (t - 1), LM_VOCAB + 1])
            .unwrap();
        let loss = cross_entropy(
            &logits,
            &Tensor::from_vec(tgt, &[LM_BATCH * (t - 1)]).unwrap(),
            &CrossEntropyOptions::default(),
        )
        .unwrap();
        assert!(loss.value().item().unwrap().is_finite());
        let grads = loss.backward().unwrap();
        opt.step(&mut lm.parameters_mut(), &grads).unwrap();
    }
}

#[test]
fn tiny_lm_is_reproducible() {
    const STEPS: usize = 6;
    let start = Instant::now();
    let run = |threads: usize| {
        on_threads(threads, || {
            let mut lm = lm_config(4).init::<f32>().unwrap();
            let mut opt = Adam::new(AdamConfig::new(3e-3)).unwrap();
            lm_train(&mut lm, &mut opt, 0..STEPS);
            bits(&lm)
        })
    };
    let one = run(1);
    let two = run(2);
    assert!(one == two, "TinyLm: weights differ between 1 and 2 threads");

    // Stop after 4 steps, save model and optimiser, resume into fresh ones.
    let dir = tmp("tiny-lm");
    std::fs::create_dir_all(&dir).unwrap();
    let resumed = on_threads(2, || {
        let mut lm = lm_config(4).init::<f32>().unwrap();
        let mut opt = Adam::new(AdamConfig::new(3e-3)).unwrap();
        lm_train(&mut lm, &mut opt, 0..4);
        save_safetensors(&lm, dir.join("lm.safetensors")).unwrap();
        opt.state_dict().save(dir.join("opt.safetensors")).unwrap();

        let mut lm2 = lm_config(40).init::<f32>().unwrap();
        assert_ne!(bits(&lm2), bits(&lm_config(4).init::<f32>().unwrap()));
        load_safetensors(&mut lm2, dir.join("lm.safetensors"), true).unwrap();
        let mut opt2 = Adam::new(AdamConfig::new(3e-3)).unwrap();
        opt2.load_state_dict(&OptimizerState::load(dir.join("opt.safetensors")).unwrap())
            .unwrap();
        lm_train(&mut lm2, &mut opt2, 4..STEPS);
        bits(&lm2)
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        resumed == one,
        "TinyLm: the resumed run differs from the uninterrupted one"
    );
    eprintln!("tiny-lm: {:.2} s", start.elapsed().as_secs_f64());
}
