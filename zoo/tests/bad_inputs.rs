//! Bad-input sweep of the zoo's library API: data sets, splits, synthetic
//! tasks, model configurations and forward passes, the registry, the tiny
//! language model's generation, the trainer's configuration and checkpoints,
//! the plots and the benchmark runner meet empty, inconsistent, NaN/±∞,
//! out-of-range and huge inputs. Each call returns an error (one line,
//! naming what is wrong) or a result; none panics, aborts or hangs. The
//! file loaders have their own property tests.

use std::path::PathBuf;

use anneal_autograd::Var;
use anneal_layers::Module;
use anneal_optim::{Adam, AdamConfig};
use anneal_tensor::Tensor;
use anneal_zoo::bench::run_benchmarks;
use anneal_zoo::data::{load_digits, sequence_task, stratified_split, Dataset, SequenceTask};
use anneal_zoo::models::*;
use anneal_zoo::plot::{write_curves, Panel, Series};
use anneal_zoo::registry::{build_model, MODEL_NAMES};
use anneal_zoo::trainer::{evaluate, resume, train, TrainConfig};
use anneal_zoo::Result;
use rand::SeedableRng;

#[path = "../../tensor/tests/support/sweep.rs"]
mod sweep;
use sweep::SweepError;

/// Zoo errors are one non-empty line (the CLI prints them as
/// `anneal: error: …`).
impl SweepError for anneal_zoo::Error {
    fn fault(&self) -> Option<String> {
        let msg = self.to_string();
        if msg.trim().is_empty() || msg.contains('\n') {
            Some(format!("error is not one line: {msg:?}"))
        } else {
            None
        }
    }
}

type Sweep = sweep::Sweep<anneal_zoo::Error>;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("anneal-zoo-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn special(shape: &[usize]) -> Tensor<f32> {
    let vals = [
        f32::NAN,
        f32::INFINITY,
        -1e30,
        0.0,
        3.0,
        f32::NEG_INFINITY,
        0.5,
    ];
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| vals[i % vals.len()]).collect(), shape).unwrap()
}

fn ones(shape: &[usize]) -> Tensor<f32> {
    Tensor::ones(shape).unwrap()
}

#[test]
fn data_sets_splits_and_synthetic_tasks() {
    let mut s = Sweep::new();
    let d = load_digits().unwrap();
    let inconsistent = Dataset {
        inputs: ones(&[3, 1, 8, 8]),
        labels: vec![0, 1],
        num_classes: 10,
    };
    for idx in [vec![], vec![0, 1], vec![2], vec![5], vec![usize::MAX]] {
        let w = || format!("subset {idx:?}");
        s.fallible(w, || d.subset(&idx).map(|x| x.len()));
        s.fallible(w, || inconsistent.subset(&idx).map(|x| x.len()));
    }
    let label_sets: Vec<Vec<usize>> = vec![
        vec![],
        vec![0],
        vec![3, 3, 3],
        vec![0, 1 << 40],
        vec![usize::MAX, 0, usize::MAX],
        d.labels.clone(),
    ];
    for labels in &label_sets {
        for f in [0.0, 0.2, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            let w = || format!("split of {} labels at {f}", labels.len());
            if let Some(Ok(sp)) = s.fallible(w, || stratified_split(labels, f, 3)) {
                let mut all: Vec<usize> = sp.train.iter().chain(&sp.test).copied().collect();
                all.sort_unstable();
                if all != (0..labels.len()).collect::<Vec<_>>() {
                    s.bad_errors
                        .push(format!("{}: not a partition of the indices", w()));
                }
            }
        }
    }
    for task in [
        SequenceTask::Copy,
        SequenceTask::Reverse,
        SequenceTask::Sort,
        SequenceTask::Parity,
    ] {
        for (n, len, vocab) in [
            (0, 3, 4),
            (2, 0, 4),
            (2, 3, 0),
            (2, 3, 1),
            (2, 3, usize::MAX),
            (usize::MAX, 2, 4),
            (1 << 40, 1 << 30, 4),
            (1 << 47, 1, 4),
        ] {
            let w = || format!("{task:?} n {n} len {len} vocab {vocab}");
            s.fallible(w, || {
                sequence_task(task, n, len, vocab, 0).map(|(x, _)| x.len())
            });
        }
    }
    s.finish(80);
}

#[test]
fn model_configurations_and_forward_passes() {
    let mut s = Sweep::new();
    let mut models: Vec<(String, Box<dyn Module<f32>>)> = Vec::new();
    let mut add = |s: &mut Sweep, name: String, r: Option<Result<Box<dyn Module<f32>>>>| {
        if let Some(Ok(m)) = r {
            models.push((name, m));
        }
        let _ = s;
    };
    for name in MODEL_NAMES.iter().chain(&["resnet", ""]) {
        for p in [
            None,
            Some(0.0),
            Some(0.5),
            Some(1.0),
            Some(-0.1),
            Some(1.5),
            Some(f64::NAN),
        ] {
            let w = || format!("build_model {name} dropout {p:?}");
            let r = s.fallible(w, || build_model(name, p, 1));
            if let Some(Ok(_)) = &r {
                if p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                    s.bad_errors.push(format!("{}: accepted", w()));
                }
            }
            add(&mut s, format!("{name} {p:?}"), r);
        }
    }
    for z in [0usize, 1, usize::MAX] {
        let w = || format!("configs with {z}");
        let r = s.fallible(w, || {
            Ok(Box::new(
                SmallCnnConfig {
                    channels: [z, 4],
                    ..Default::default()
                }
                .init::<f32>()?,
            ) as Box<dyn Module<f32>>)
        });
        add(&mut s, format!("small-cnn channels {z}"), r);
        let r = s.fallible(w, || {
            Ok(Box::new(
                SourceCnnConfig {
                    input_size: [z, 8],
                    channels: [2, 2, 2],
                    hidden: [4, 4],
                    ..Default::default()
                }
                .init::<f32>()?,
            ) as Box<dyn Module<f32>>)
        });
        add(&mut s, format!("source-cnn input {z}"), r);
        let r = s.fallible(w, || {
            Ok(Box::new(
                SequenceClassifierConfig {
                    hidden_size: z,
                    ..Default::default()
                }
                .init::<f32>()?,
            ) as Box<dyn Module<f32>>)
        });
        add(&mut s, format!("lstm hidden {z}"), r);
        let r = s.fallible(w, || {
            Ok(Box::new(
                TransformerClassifierConfig {
                    heads: z,
                    ..Default::default()
                }
                .init::<f32>()?,
            ) as Box<dyn Module<f32>>)
        });
        add(&mut s, format!("transformer heads {z}"), r);
        let r = s.fallible(w, || {
            Ok(Box::new(
                TinyLmConfig {
                    vocab: z,
                    max_len: 4,
                    ..Default::default()
                }
                .init::<f32>()?,
            ) as Box<dyn Module<f32>>)
        });
        add(&mut s, format!("tiny-lm vocab {z}"), r);
    }
    let inputs: &[&[usize]] = &[
        &[2, 1, 8, 8],
        &[0, 1, 8, 8],
        &[2, 3, 8, 8],
        &[2, 1, 4, 4],
        &[2, 1, 16, 16],
        &[2, 8, 8],
        &[2, 64],
        &[8, 8],
        &[],
    ];
    for (name, m) in models.iter_mut() {
        for shape in inputs {
            for (kind, x) in [("ones", ones(shape)), ("special", special(shape))] {
                let w = || format!("{name} on {kind} {shape:?}");
                let x = Var::leaf(x);
                s.fallible(w, || Ok(m.forward(&x)?.shape().to_vec()));
                if let Some(Ok(y)) = s.fallible(w, || Ok(m.forward_train(&x)?)) {
                    s.fallible(w, || Ok(y.sum_all()?.backward()?.len()));
                }
            }
        }
    }
    s.finish(500);
}

#[test]
fn tiny_lm_generation_and_logits_with_bad_tokens() {
    let mut s = Sweep::new();
    let lm = TinyLmConfig {
        vocab: 5,
        max_len: 4,
        d_model: 8,
        heads: 2,
        layers: 1,
        ffn: 8,
        ..Default::default()
    }
    .init::<f32>()
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for prompt in [
        vec![],
        vec![0],
        vec![4, 1, 2, 3, 0, 1],
        vec![5],
        vec![usize::MAX],
    ] {
        for temperature in [0.0, 1.0, 1e-30, 1e30, f64::INFINITY, -1.0, f64::NAN] {
            let w = || format!("generate {prompt:?} at {temperature}");
            let r = s.fallible(w, || Ok(lm.generate(&prompt, 6, temperature, &mut rng)?));
            if let Some(Ok(seq)) = r {
                if seq.len() != prompt.len() + 6 || seq[prompt.len()..].iter().any(|&t| t >= 5) {
                    s.bad_errors.push(format!("{}: {seq:?}", w()));
                }
            }
        }
    }
    for (tokens, shape) in [
        (vec![0, 1], vec![2]),
        (vec![], vec![1, 0]),
        (vec![0, 1, 2, 3, 4], vec![1, 5]),
        (vec![9, 1], vec![1, 2]),
        (vec![0; 8], vec![2, 2, 2]),
    ] {
        let t = Tensor::from_vec(tokens, &shape).unwrap();
        s.fallible(
            || format!("logits {shape:?}"),
            || Ok(lm.logits(&t)?.shape().to_vec()),
        );
    }
    s.finish(30);
}

#[test]
fn trainer_configurations_datasets_and_checkpoints() {
    let mut s = Sweep::new();
    let d = load_digits().unwrap();
    let small = d.subset(&(0..32).collect::<Vec<_>>()).unwrap();
    let empty = d.subset(&[]).unwrap();
    let wrong_shape = Dataset {
        inputs: ones(&[32, 3, 8, 8]),
        ..small.clone()
    };
    let bad_labels = Dataset {
        labels: vec![12; 32],
        ..small.clone()
    };
    let short_labels = Dataset {
        labels: vec![1; 5],
        ..small.clone()
    };
    let nan_inputs = Dataset {
        inputs: special(&[32, 1, 8, 8]),
        ..small.clone()
    };
    let sets = [
        ("digits", &small),
        ("empty", &empty),
        ("wrong shape", &wrong_shape),
        ("labels past the classes", &bad_labels),
        ("fewer labels than inputs", &short_labels),
        ("nan inputs", &nan_inputs),
    ];
    let base = TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..Default::default()
    };
    let configs = [
        ("default", base.clone()),
        (
            "batch 0",
            TrainConfig {
                batch_size: 0,
                ..base.clone()
            },
        ),
        (
            "huge batch",
            TrainConfig {
                batch_size: usize::MAX,
                ..base.clone()
            },
        ),
        (
            "smoothing nan",
            TrainConfig {
                label_smoothing: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "smoothing 2",
            TrainConfig {
                label_smoothing: 2.0,
                ..base.clone()
            },
        ),
        (
            "l2 nan",
            TrainConfig {
                l2: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "l1 inf",
            TrainConfig {
                l1: f64::INFINITY,
                ..base.clone()
            },
        ),
        (
            "l2 negative",
            TrainConfig {
                l2: -1.0,
                ..base.clone()
            },
        ),
        (
            "clip nan",
            TrainConfig {
                clip_grad_norm: Some(f64::NAN),
                ..base.clone()
            },
        ),
        (
            "clip 0",
            TrainConfig {
                clip_grad_norm: Some(0.0),
                ..base.clone()
            },
        ),
        (
            "patience 0",
            TrainConfig {
                early_stopping_patience: Some(0),
                ..base.clone()
            },
        ),
    ];
    for (cname, cfg) in &configs {
        for (tname, tr) in &sets {
            for (ename, ev) in &sets {
                let w = || format!("train {cname} on {tname}, eval on {ename}");
                let mut m = SmallCnnConfig {
                    channels: [2, 2],
                    ..Default::default()
                }
                .init::<f32>()
                .unwrap();
                let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
                let r = s.fallible(w, || train(&mut m, &mut opt, None, tr, ev, cfg));
                let invalid = cfg.label_smoothing.is_nan()
                    || cfg.label_smoothing > 1.0
                    || !(cfg.l2.is_finite() && cfg.l2 >= 0.0)
                    || !(cfg.l1.is_finite() && cfg.l1 >= 0.0)
                    || cfg
                        .clip_grad_norm
                        .is_some_and(|c| !(c.is_finite() && c >= 0.0));
                if invalid {
                    if let Some(Ok(_)) = r {
                        s.bad_errors.push(format!("{}: accepted", w()));
                    }
                }
            }
        }
    }
    let m = SmallCnnConfig::default().init::<f32>().unwrap();
    for (name, set) in &sets {
        for bs in [0, 1, usize::MAX] {
            s.fallible(
                || format!("evaluate {name} batch {bs}"),
                || evaluate(&m, set, bs),
            );
        }
    }
    // Resuming without a directory, from a missing or corrupt checkpoint.
    let dir = tmp("resume");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("last.model.safetensors"), b"garbage").unwrap();
    std::fs::write(dir.join("best.trainer.json"), b"{\"next_epoch\": -1}").unwrap();
    for (tag, cdir) in [
        ("last", None),
        ("last", Some(dir.clone())),
        ("best", Some(dir.clone())),
        ("../../etc/passwd", Some(dir.clone())),
        ("", Some(dir.join("missing"))),
    ] {
        let cfg = TrainConfig {
            checkpoint_dir: cdir,
            ..base.clone()
        };
        let mut m = SmallCnnConfig::default().init::<f32>().unwrap();
        let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
        let w = || format!("resume {tag:?} from {:?}", cfg.checkpoint_dir);
        if let Some(Ok(_)) = s.fallible(w, || {
            resume(&mut m, &mut opt, None, &small, &small, &cfg, tag)
        }) {
            s.bad_errors.push(format!("{}: resumed", w()));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    s.finish(400);
}

#[test]
fn plots_and_benchmark_runner_with_bad_arguments() {
    let mut s = Sweep::new();
    let dir = tmp("plots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a-file"), b"x").unwrap();
    let series = |pts: Vec<(f64, f64)>| Series {
        label: "s".into(),
        points: pts,
    };
    let point_sets = vec![
        vec![],
        vec![(0.0, 1.0)],
        vec![(0.0, f64::NAN), (1.0, f64::INFINITY)],
        vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
        vec![(f64::NEG_INFINITY, 0.0), (f64::NAN, 1.0)],
        vec![(0.0, 1.0), (0.0, 1.0)],
        vec![(1e300, 1e-300), (-1e300, -1e-300)],
    ];
    for (i, pts) in point_sets.into_iter().enumerate() {
        let panels = vec![Panel {
            title: String::new(),
            y_label: "loss".into(),
            series: vec![series(pts.clone()), series(vec![])],
        }];
        let w = || format!("curves {i} {pts:?}");
        s.fallible(w, || write_curves(&dir.join(format!("c{i}")), &panels));
        s.fallible(w, || write_curves(&dir.join("a-file").join("c"), &panels));
    }
    s.fallible(
        || "no panels".into(),
        || write_curves(&dir.join("none"), &[]),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    for threads in [vec![0], vec![1, 0], vec![usize::MAX], vec![100_000]] {
        let w = || format!("run_benchmarks {threads:?}");
        if let Some(Ok(_)) = s.fallible(w, || run_benchmarks(&threads)) {
            s.bad_errors.push(format!("{}: ran", w()));
        }
    }
    if let Some(Ok(r)) = s.fallible(|| "run_benchmarks []".into(), || run_benchmarks(&[])) {
        if !r.is_empty() {
            s.bad_errors.push("no thread counts gave results".into());
        }
    }
    s.finish(20);
}

/// What this sweep found, each now an error or a defined result.
#[test]
fn found_by_the_sweep() {
    // A label far past the others no longer makes the split loop over every
    // class up to it (or overflow at usize::MAX).
    let sp = stratified_split(&[usize::MAX, 0, usize::MAX, 1 << 40], 0.5, 1).unwrap();
    assert_eq!(sp.train.len() + sp.test.len(), 4);
    // round(½·n) per class, half away from zero: 1 of the two usize::MAX
    // labels, and each singleton.
    assert_eq!(sp.test.len(), 3, "{sp:?}");
    // A data set whose labels and inputs disagree.
    let d = Dataset {
        inputs: ones(&[3, 4]),
        labels: vec![0, 1],
        num_classes: 2,
    };
    assert_eq!(
        d.subset(&[2]).unwrap_err().to_string(),
        "data set: 3 inputs but 2 labels"
    );
    // Sizes that overflow or cannot be allocated.
    let e = sequence_task(SequenceTask::Copy, usize::MAX, 2, 4, 0).unwrap_err();
    assert!(e.to_string().contains("does not fit in memory"), "{e}");
    let e = SourceCnnConfig {
        input_size: [usize::MAX, 8],
        ..Default::default()
    }
    .init::<f32>()
    .err()
    .unwrap();
    assert!(e.to_string().contains("overflow"), "{e}");
    // Dropout out of range, also for models without dropout.
    for name in MODEL_NAMES {
        let e = build_model(name, Some(f64::NAN), 0).err().unwrap();
        assert_eq!(e.to_string(), "dropout NaN is outside [0, 1]");
    }
    // A NaN penalty no longer switches the penalty off silently.
    let cfg = TrainConfig {
        l2: f64::NAN,
        ..Default::default()
    };
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "train: l2 NaN must be finite and >= 0"
    );
    // Benchmarks at 0 threads (rayon's "default") or thousands.
    assert!(run_benchmarks(&[0]).is_err());
    // Curves with values near f64::MAX are drawn (those points skipped).
    let dir = tmp("huge-curves");
    let panels = [Panel {
        title: "t".into(),
        y_label: "y".into(),
        series: vec![Series {
            label: "s".into(),
            points: vec![(0.0, 1.0), (1.0, f64::MAX), (2.0, 2.0)],
        }],
    }];
    write_curves(&dir.join("c"), &panels).unwrap();
    assert!(dir.join("c.svg").exists() && dir.join("c.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
