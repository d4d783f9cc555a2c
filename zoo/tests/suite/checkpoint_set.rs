//! A checkpoint's three files are one set: the trainer JSON, written last,
//! records the length and FNV-1a hash of the model and optimiser files it
//! was saved with, and `resume` refuses a set whose files come from
//! different epochs (what a crash between the writes of a save leaves), a
//! truncated or edited trainer JSON, and one from before the fingerprints,
//! leaving the model and the optimiser untouched. Saving removes the hidden
//! temporaries a killed save left behind, and nothing else.

use crate::common::fresh_dir;
use std::path::{Path, PathBuf};

use anneal_layers::{state_dict, Module, StateValue};
use anneal_optim::{Adam, AdamConfig, Optimizer};
use anneal_zoo::data::{load_digits, stratified_split, Dataset};
use anneal_zoo::models::{SmallCnn, SmallCnnConfig};
use anneal_zoo::trainer::{resume, train, TrainConfig};
use anneal_zoo::Error;

const FILES: [&str; 3] = [
    "last.model.safetensors",
    "last.optimizer.safetensors",
    "last.trainer.json",
];

fn small() -> (Dataset, Dataset) {
    let d = load_digits().unwrap();
    let s = stratified_split(&d.labels, 0.2, 0).unwrap();
    let tr: Vec<usize> = s.train.iter().copied().take(64).collect();
    let te: Vec<usize> = s.test.iter().copied().take(32).collect();
    (d.subset(&tr).unwrap(), d.subset(&te).unwrap())
}

fn tmp(name: &str) -> PathBuf {
    let d = fresh_dir("ckset", name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cfg(epochs: usize, dir: &Path) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        seed: 3,
        checkpoint_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

/// A small CNN (narrow, so that the tests stay quick).
fn cnn(seed: u64) -> SmallCnn<f32> {
    SmallCnnConfig {
        channels: [8, 16],
        seed,
        ..Default::default()
    }
    .init::<f32>()
    .unwrap()
}

/// Every float and counter of the model, as raw bits.
fn bits<M: Module<f32> + ?Sized>(m: &M) -> Vec<(String, Vec<u32>)> {
    state_dict(m)
        .into_iter()
        .map(|(n, v)| match v {
            StateValue::Float(t) => (n, t.as_slice().iter().map(|x| x.to_bits()).collect()),
            StateValue::Int(i) => (n, vec![i as u32, (i >> 32) as u32]),
        })
        .collect()
}

/// A model and an optimiser that both hold state of their own (one epoch
/// of training from another seed), to check that a failed resume keeps it.
fn trained_elsewhere(tr: &Dataset, te: &Dataset) -> (SmallCnn<f32>, Adam<f32>) {
    let mut m = cnn(77);
    let mut opt = Adam::new(AdamConfig::new(5e-4)).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 32,
        seed: 11,
        ..Default::default()
    };
    train(&mut m, &mut opt, None, tr, te, &cfg).unwrap();
    (m, opt)
}

/// Copies the `last` set into `to`: the model, optimiser and trainer JSON
/// from the three `sources` in that order.
fn assemble(to: &Path, sources: [&Path; 3]) {
    for (file, from) in FILES.iter().zip(sources) {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// Resumes from `dir` into a model and optimiser with state of their own,
/// expects an error, and checks that neither changed.
fn resume_fails(dir: &Path, tr: &Dataset, te: &Dataset) -> Error {
    let (mut m, mut opt) = trained_elsewhere(tr, te);
    let (before, opt_before) = (bits(&m), opt.state_dict());
    let err = resume(&mut m, &mut opt, None, tr, te, &cfg(3, dir), "last")
        .expect_err("resumed from an inconsistent checkpoint");
    assert!(bits(&m) == before, "a failed resume changed the model");
    assert!(
        opt.state_dict() == opt_before,
        "a failed resume changed the optimiser"
    );
    err
}

#[test]
fn files_from_different_epochs_are_refused_and_change_nothing() {
    let (tr, te) = small();
    let run_dir = tmp("run");
    let (e1, e2, mixed) = (tmp("e1"), tmp("e2"), tmp("mixed"));
    let mut m = cnn(0);
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    train(&mut m, &mut opt, None, &tr, &te, &cfg(1, &run_dir)).unwrap();
    assemble(&e1, [&run_dir; 3]);
    // Train on (the resume checks the first set is consistent) to epoch 2.
    let h = resume(&mut m, &mut opt, None, &tr, &te, &cfg(2, &run_dir), "last").unwrap();
    assert_eq!(h.epochs.len(), 1);
    assemble(&e2, [&run_dir; 3]);
    for f in &FILES[..2] {
        assert_ne!(
            std::fs::read(e1.join(f)).unwrap(),
            std::fs::read(e2.join(f)).unwrap(),
            "{f} should differ between epochs"
        );
    }

    // Model, optimiser, trainer JSON: one file from the other epoch each.
    let cases: [([&Path; 3], &str); 4] = [
        ([&e2, &e1, &e1], "last.model.safetensors"),
        ([&e1, &e2, &e1], "last.optimizer.safetensors"),
        ([&e1, &e2, &e2], "last.model.safetensors"),
        ([&e2, &e1, &e2], "last.optimizer.safetensors"),
    ];
    for (sources, culprit) in cases {
        assemble(&mixed, sources);
        match resume_fails(&mixed, &tr, &te) {
            Error::Invalid(msg) => {
                for want in [
                    "checkpoint last".to_string(),
                    mixed.display().to_string(),
                    format!("{culprit} is not the one last.trainer.json"),
                    "another epoch or a crash mid-save".to_string(),
                ] {
                    assert!(msg.contains(&want), "{msg:?} lacks {want:?}");
                }
            }
            other => panic!("expected a mismatch naming {culprit}, got {other:?}"),
        }
    }

    // Either epoch's complete set still resumes.
    for (set, done) in [(&e1, 1), (&e2, 2)] {
        assemble(&mixed, [set; 3]);
        let mut m = cnn(0);
        let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
        let h = resume(&mut m, &mut opt, None, &tr, &te, &cfg(3, &mixed), "last").unwrap();
        assert_eq!(h.epochs.len(), 3 - done);
        assert_eq!(h.epochs[0].epoch, done);
    }
    for d in [run_dir, e1, e2, mixed] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn truncated_edited_or_unfingerprinted_trainer_json_is_refused() {
    let (tr, te) = small();
    let (good, dir) = (tmp("good"), tmp("edited"));
    let mut m = cnn(0);
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    train(&mut m, &mut opt, None, &tr, &te, &cfg(1, &good)).unwrap();
    let json = std::fs::read_to_string(good.join("last.trainer.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["next_epoch"], 1);
    let hash = v["model"]["fnv1a64"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 16);

    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = v.clone();
        f(&mut v);
        v.to_string()
    };
    let flipped = format!("{:016x}", u64::from_str_radix(&hash, 16).unwrap() ^ 1);
    let cases: Vec<(&str, String)> = vec![
        ("truncated", json[..json.len() / 2].to_string()),
        ("empty", String::new()),
        (
            "model hash edited",
            edit(&|v| v["model"]["fnv1a64"] = flipped.clone().into()),
        ),
        (
            "optimizer length edited",
            edit(&|v| {
                let n = v["optimizer"]["bytes"].as_u64().unwrap();
                v["optimizer"]["bytes"] = (n + 1).into();
            }),
        ),
        (
            "hash not hex",
            edit(&|v| v["model"]["fnv1a64"] = "not-a-hash-00000".into()),
        ),
        (
            "hash as a number",
            edit(&|v| v["optimizer"]["fnv1a64"] = 12345.into()),
        ),
        (
            "from before fingerprints",
            edit(&|v| {
                let o = v.as_object_mut().unwrap();
                o.remove("model");
                o.remove("optimizer");
            }),
        ),
    ];
    for (what, text) in cases {
        assemble(&dir, [&good; 3]);
        std::fs::write(dir.join("last.trainer.json"), &text).unwrap();
        let err = resume_fails(&dir, &tr, &te);
        let msg = err.to_string();
        match what {
            "model hash edited" => assert!(
                msg.contains("last.model.safetensors is not the one"),
                "{what}: {msg}"
            ),
            "optimizer length edited" => assert!(
                msg.contains("last.optimizer.safetensors is not the one"),
                "{what}: {msg}"
            ),
            "from before fingerprints" => {
                assert!(matches!(err, Error::Parse { .. }), "{what}: {err:?}");
                assert!(
                    msg.contains("last.trainer.json") && msg.contains("no `model` fingerprint"),
                    "{what}: {msg}"
                );
            }
            _ => assert!(
                matches!(err, Error::Parse { .. }) && msg.contains("last.trainer.json"),
                "{what}: {err:?}"
            ),
        }
    }
    for d in [good, dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_refused_model_or_configuration_leaves_model_and_optimiser_as_they_were() {
    let (tr, te) = small();
    let dir = tmp("other-model");
    let mut m = cnn(0);
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    train(&mut m, &mut opt, None, &tr, &te, &cfg(1, &dir)).unwrap();
    // Same optimiser, a model of another shape: the optimiser state loads,
    // the model file does not, and the optimiser must be put back.
    let (_, mut opt2) = trained_elsewhere(&tr, &te);
    let mut other = SmallCnnConfig {
        channels: [4, 8],
        ..Default::default()
    }
    .init::<f32>()
    .unwrap();
    let (before, opt_before) = (bits(&other), opt2.state_dict());
    let err = resume(&mut other, &mut opt2, None, &tr, &te, &cfg(2, &dir), "last")
        .expect_err("resumed into a model of another shape");
    assert!(err.to_string().contains("last.model.safetensors"), "{err}");
    assert!(bits(&other) == before, "the model changed");
    assert!(opt2.state_dict() == opt_before, "the optimiser changed");
    // A configuration that run would refuse is refused before loading.
    let (mut m2, mut opt3) = trained_elsewhere(&tr, &te);
    let (before, opt_before) = (bits(&m2), opt3.state_dict());
    let bad = TrainConfig {
        batch_size: 0,
        ..cfg(2, &dir)
    };
    resume(&mut m2, &mut opt3, None, &tr, &te, &bad, "last").expect_err("batch size 0");
    assert!(bits(&m2) == before, "the model changed");
    assert!(opt3.state_dict() == opt_before, "the optimiser changed");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn saving_removes_the_temporaries_of_a_killed_save_and_nothing_else() {
    let (tr, te) = small();
    let dir = tmp("stale");
    // The temporary name write_atomically uses: `.{name}.tmp-{pid}-{n}`.
    let mut seen = Vec::new();
    let target = dir.join("probe.bin");
    let _ = anneal_layers::write_atomically_with(&target, |_| {
        seen = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        Err(std::io::Error::other("abandon the write"))
    });
    assert_eq!(seen.len(), 1, "{seen:?}");
    let prefix = format!(".probe.bin.tmp-{}-", std::process::id());
    assert!(
        seen[0].starts_with(&prefix) && seen[0][prefix.len()..].parse::<u64>().is_ok(),
        "write_atomically's temporary is named {:?}",
        seen[0]
    );

    // Another process (pid 4000000000 is above any real one) killed mid-save.
    let stale = [
        ".last.model.safetensors.tmp-4000000000-0",
        ".last.optimizer.safetensors.tmp-4000000000-12",
        ".last.trainer.json.tmp-4000000000-3",
        ".best.model.safetensors.tmp-4000000000-1",
    ];
    let own = format!(".last.model.safetensors.tmp-{}-99", std::process::id());
    let keep = [
        own.as_str(),
        "last.model.safetensors.tmp-4000000000-0",
        ".last.model.safetensors.tmp-4000000000",
        ".last.model.safetensors.tmp-4000000000-0.keep",
        ".last.model.safetensors.tmp-abc-0",
        ".last.notes.txt.tmp-4000000000-0",
        ".other.model.safetensors.tmp-4000000000-0",
        ".lastx.model.safetensors.tmp-4000000000-0",
        "notes.txt",
    ];
    for name in stale.iter().chain(&keep) {
        std::fs::write(dir.join(name), b"partial").unwrap();
    }
    let mut m = cnn(0);
    let mut opt = Adam::new(AdamConfig::new(1e-3)).unwrap();
    train(&mut m, &mut opt, None, &tr, &te, &cfg(1, &dir)).unwrap();
    for name in stale {
        assert!(!dir.join(name).exists(), "{name} was left behind");
    }
    for name in keep {
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            b"partial",
            "{name} was touched"
        );
    }
    for tag in ["best", "last"] {
        for kind in ["model.safetensors", "optimizer.safetensors", "trainer.json"] {
            assert!(dir.join(format!("{tag}.{kind}")).is_file(), "{tag}.{kind}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
