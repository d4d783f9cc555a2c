//! State dicts on disk: save → load round trips, strict and non-strict
//! loading with every problem reported at once, dtype checks, corrupt files
//! (truncated, flipped bytes, random bytes) that must fail without panicking
//! and without touching the model, and the atomic save.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use anneal_autograd::Var;
use anneal_layers::{
    load_safetensors, load_safetensors_bytes, save_safetensors, state_dict, to_safetensors_bytes,
    BatchNormConfig, Conv2dConfig, EntryMut, Flatten, LinearConfig, LoadReport, Module, Relu,
    Sequential, StateValue,
};
use anneal_tensor::{Element, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

// ------------------------------------------------------------------ helpers

/// A fresh, empty folder for one test under Cargo's per-target temp dir.
fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("state_dict-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names in a folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Conv2d(2→4, 3, padding 1) → BatchNorm2d(4) → ReLU → Flatten → Linear(100 → 3),
/// PyTorch's default initialisation from `seed`, BatchNorm's affine
/// parameters perturbed so that they are not the constants 1 and 0.
fn model<T: Element>(seed: u64) -> Sequential<T> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bn = BatchNormConfig::new(4).init::<T>().unwrap();
    for p in [bn.weight.as_mut().unwrap(), bn.bias.as_mut().unwrap()] {
        for v in p.value_mut().data_mut() {
            *v += T::from_f64_lossy(rng.random_range(-0.3..0.3));
        }
    }
    Sequential::new()
        .push(
            Conv2dConfig::new(2, 4, 3)
                .with_padding(1)
                .init::<T>(&mut rng)
                .unwrap(),
        )
        .push(bn)
        .push(Relu)
        .push(Flatten::default())
        .push(LinearConfig::new(4 * 5 * 5, 3).init::<T>(&mut rng).unwrap())
}

/// A model whose BatchNorm has seen two training batches (non-trivial
/// running statistics and num_batches_tracked = 2).
fn trained_model(seed: u64) -> Sequential<f32> {
    let mut m = model::<f32>(seed);
    for s in 0..2 {
        let x = Var::constant(Tensor::randn_seeded(&[3, 2, 5, 5], seed * 10 + s).unwrap());
        m.forward_train(&x).unwrap();
    }
    m
}

fn input() -> Var<f32> {
    Var::constant(Tensor::randn_seeded(&[2, 2, 5, 5], 99).unwrap())
}

/// One raw entry of a safetensors file.
#[derive(Clone)]
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn parse(bytes: &[u8]) -> BTreeMap<String, Raw> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                Raw {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    bytes: v.data().to_vec(),
                },
            )
        })
        .collect()
}

fn serialize(entries: &BTreeMap<String, Raw>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, r)| {
            (
                n.clone(),
                TensorView::new(r.dtype, r.shape.clone(), &r.bytes).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

fn f32_entry(shape: &[usize], fill: f32) -> Raw {
    let n: usize = shape.iter().product();
    Raw {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: std::iter::repeat_n(fill.to_le_bytes(), n)
            .flatten()
            .collect(),
    }
}

/// Loads `bytes` and returns the outcome; a panic fails the test with the
/// case named, and a failed load must leave the model exactly as it was.
fn load_must_not_panic(
    m: &mut Sequential<f32>,
    bytes: &[u8],
    strict: bool,
    what: &str,
) -> Result<LoadReport, String> {
    let before = state_dict(m);
    let r = catch_unwind(AssertUnwindSafe(|| {
        load_safetensors_bytes(m, bytes, strict, "corrupt.safetensors")
    }))
    .unwrap_or_else(|_| panic!("{what}: load_safetensors_bytes panicked"));
    match r {
        Ok(rep) => Ok(rep),
        Err(e) => {
            assert!(
                state_dict(m) == before,
                "{what}: a failed load changed the model ({e})"
            );
            Err(e.to_string())
        }
    }
}

// --------------------------------------------------------------- round trip

#[test]
fn save_then_load_into_another_seed_is_bit_identical() {
    let dir = scratch("round_trip");
    let path = dir.join("model.safetensors");
    let trained = trained_model(1);
    save_safetensors(&trained, &path).unwrap();

    let mut fresh = model::<f32>(2);
    let x = input();
    let want = trained.forward(&x).unwrap();
    assert_ne!(fresh.forward(&x).unwrap().value(), want.value());
    let report = load_safetensors(&mut fresh, &path, true).unwrap();
    assert_eq!(report, LoadReport::default());

    assert!(state_dict(&fresh) == state_dict(&trained));
    let got = fresh.forward(&x).unwrap();
    let bits = |t: &Tensor<f32>| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got.value()), bits(want.value()));
    assert_eq!(
        to_safetensors_bytes(&fresh).unwrap(),
        std::fs::read(&path).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_file_has_pytorch_names_dtypes_and_shapes() {
    let bytes = to_safetensors_bytes(&trained_model(3)).unwrap();
    let entries = parse(&bytes);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "0.bias",
            "0.weight",
            "1.bias",
            "1.num_batches_tracked",
            "1.running_mean",
            "1.running_var",
            "1.weight",
            "4.bias",
            "4.weight"
        ]
    );
    let nbt = &entries["1.num_batches_tracked"];
    assert_eq!((nbt.dtype, nbt.shape.as_slice()), (Dtype::I64, &[][..]));
    assert_eq!(nbt.bytes, 2i64.to_le_bytes());
    assert_eq!(entries["0.weight"].dtype, Dtype::F32);
    assert_eq!(entries["0.weight"].shape, [4, 2, 3, 3]);
    assert_eq!(entries["4.weight"].shape, [3, 100]);
}

#[test]
fn f64_models_round_trip_bit_identically() {
    let src = model::<f64>(4);
    let bytes = to_safetensors_bytes(&src).unwrap();
    assert_eq!(parse(&bytes)["0.weight"].dtype, Dtype::F64);
    let mut dst = model::<f64>(5);
    load_safetensors_bytes(&mut dst, &bytes, true, "mem").unwrap();
    assert!(state_dict(&dst) == state_dict(&src));
}

// --------------------------------------------------------- strict / lenient

/// The trained model's file with `4.bias` removed, `extra.weight` and
/// `1.extra_buffer` added, `0.weight` and `1.running_mean` of the wrong shape.
fn broken_file() -> Vec<u8> {
    let mut e = parse(&to_safetensors_bytes(&trained_model(6)).unwrap());
    e.remove("4.bias");
    e.insert("extra.weight".into(), f32_entry(&[2, 2], 1.0));
    e.insert("1.extra_buffer".into(), f32_entry(&[4], 1.0));
    e.insert("0.weight".into(), f32_entry(&[4, 2, 2, 2], 0.5));
    e.insert("1.running_mean".into(), f32_entry(&[5], 0.5));
    serialize(&e)
}

#[test]
fn strict_load_reports_every_problem_in_one_message_naming_the_file() {
    let dir = scratch("strict");
    let path = dir.join("broken.safetensors");
    std::fs::write(&path, broken_file()).unwrap();
    let mut m = model::<f32>(7);
    let before = state_dict(&m);
    let err = load_safetensors(&mut m, &path, true)
        .unwrap_err()
        .to_string();
    for needle in [
        path.display().to_string().as_str(),
        "4.bias",         // missing
        "extra.weight",   // unexpected
        "1.extra_buffer", // unexpected
        "0.weight",       // wrong shape …
        "[4, 2, 3, 3]",   // … expected
        "[4, 2, 2, 2]",   // … found
        "1.running_mean",
        "[5]",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    assert!(state_dict(&m) == before, "a failed load changed the model");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lenient_load_reports_missing_and_unexpected_and_loads_the_rest() {
    let src = trained_model(8);
    let mut e = parse(&to_safetensors_bytes(&src).unwrap());
    e.remove("4.bias");
    e.remove("1.num_batches_tracked");
    e.insert("extra.weight".into(), f32_entry(&[2, 2], 1.0));
    let bytes = serialize(&e);

    let mut m = model::<f32>(9);
    let before = state_dict(&m);
    // Strict refuses it …
    let err = load_safetensors_bytes(&mut m, &bytes, true, "partial.safetensors")
        .unwrap_err()
        .to_string();
    assert!(err.contains("partial.safetensors") && err.contains("4.bias"));
    assert!(state_dict(&m) == before);
    // … lenient loads what fits and says what it skipped.
    let report = load_safetensors_bytes(&mut m, &bytes, false, "partial.safetensors").unwrap();
    assert_eq!(
        report,
        LoadReport {
            missing: vec!["1.num_batches_tracked".into(), "4.bias".into()],
            unexpected: vec!["extra.weight".into()],
        }
    );
    let (got, want) = (state_dict(&m), state_dict(&src));
    for (name, v) in &got {
        match name.as_str() {
            "4.bias" | "1.num_batches_tracked" => assert!(v == &before[name], "{name} kept"),
            _ => assert!(v == &want[name], "{name} loaded"),
        }
    }
}

#[test]
fn lenient_load_still_rejects_a_wrong_shape() {
    let mut m = model::<f32>(10);
    let before = state_dict(&m);
    let err = load_safetensors_bytes(&mut m, &broken_file(), false, "broken.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("0.weight") && err.contains("1.running_mean"),
        "{err}"
    );
    assert!(
        !err.contains("extra.weight"),
        "lenient: unexpected names are no error: {err}"
    );
    assert!(state_dict(&m) == before);
}

#[test]
fn wrong_dtypes_are_errors() {
    let good = parse(&to_safetensors_bytes(&trained_model(11)).unwrap());
    let cases: Vec<(&str, &str, Raw)> = vec![
        (
            "int8 weight",
            "0.weight",
            Raw {
                dtype: Dtype::I8,
                shape: vec![4, 2, 3, 3],
                bytes: vec![1u8; 72],
            },
        ),
        (
            "int64 buffer",
            "1.running_var",
            Raw {
                dtype: Dtype::I64,
                shape: vec![4],
                bytes: vec![0u8; 32],
            },
        ),
        (
            "float counter",
            "1.num_batches_tracked",
            f32_entry(&[], 2.0),
        ),
        (
            "counter of several elements",
            "1.num_batches_tracked",
            Raw {
                dtype: Dtype::I64,
                shape: vec![2],
                bytes: vec![0u8; 16],
            },
        ),
    ];
    for (what, name, raw) in cases {
        let mut e = good.clone();
        e.insert(name.into(), raw);
        let bytes = serialize(&e);
        for strict in [true, false] {
            let mut m = model::<f32>(12);
            let err = load_must_not_panic(&mut m, &bytes, strict, what)
                .expect_err(what)
                .to_string();
            assert!(err.contains(name), "{what}: {err}");
        }
    }
}

// ----------------------------------------------------------- corrupt files

/// A small model so that every prefix and every byte can be tried.
fn small() -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(13);
    Sequential::new()
        .push(LinearConfig::new(2, 3).init::<f32>(&mut rng).unwrap())
        .push(BatchNormConfig::new(3).init::<f32>().unwrap())
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = to_safetensors_bytes(&small()).unwrap();
    assert!(bytes.len() < 1024);
    let mut m = small();
    for w in m.parameters_mut_for_test() {
        *w = 0.25;
    }
    for len in 0..bytes.len() {
        let r = load_must_not_panic(&mut m, &bytes[..len], true, &format!("prefix of {len}"));
        assert!(
            r.is_err(),
            "a prefix of {len} of {} bytes loaded",
            bytes.len()
        );
    }
    // Trailing garbage is not a valid file either.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"xyz");
    assert!(load_must_not_panic(&mut m, &longer, true, "trailing bytes").is_err());
    // And the whole file loads.
    load_must_not_panic(&mut m, &bytes, true, "whole file").unwrap();
}

/// Sets every float parameter and buffer element (test helper).
trait Fill {
    fn parameters_mut_for_test(&mut self) -> Vec<&mut f32>;
}
impl Fill for Sequential<f32> {
    fn parameters_mut_for_test(&mut self) -> Vec<&mut f32> {
        let mut out = Vec::new();
        self.visit_mut("", &mut |_, e| match e {
            EntryMut::Param(p) => out.extend(p.value_mut().data_mut().iter_mut()),
            EntryMut::Buffer(b) => out.extend(b.data_mut().iter_mut()),
            EntryMut::Counter(_) => {}
        });
        out
    }
}

#[test]
fn flipped_header_bytes_are_errors_and_no_flip_panics() {
    let bytes = to_safetensors_bytes(&small()).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut m = small();
    // Inverting any byte of the length or of the JSON header breaks the file
    // (an inverted ASCII byte is never valid UTF-8).
    for i in 0..8 + header_len {
        let mut b = bytes.clone();
        b[i] ^= 0xFF;
        let r = load_must_not_panic(&mut m, &b, false, &format!("byte {i} inverted"));
        assert!(r.is_err(), "inverting byte {i} of the header still loaded");
    }
    // Any single-bit flip anywhere: an error (model untouched) or, for flips
    // in the data, a successful load — never a panic.
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let _ = load_must_not_panic(&mut m, &b, true, &format!("byte {i} bit {bit}"));
        }
    }
}

#[test]
fn random_and_hostile_bytes_are_errors() {
    let mut m = small();
    let mut rng = StdRng::seed_from_u64(14);
    for len in (0..64).chain([100, 1000, 5000]) {
        for _ in 0..8 {
            let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if len >= 8 && rng.random_bool(0.5) {
                // A plausible header length.
                b[..8].copy_from_slice(&((len - 8) as u64).to_le_bytes());
            }
            let r = load_must_not_panic(&mut m, &b, true, &format!("{len} random bytes"));
            assert!(r.is_err(), "{len} random bytes loaded");
        }
    }
    // Well-formed JSON that lies.
    let hostile = [
        r#"{"0.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,99999999]}}"#,
        r#"{"0.weight":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,24]}}"#,
        r#"{"0.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[24,0]}}"#,
        r#"{"0.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},"0.bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#,
        r#"{"0.weight":{"dtype":"NOPE","shape":[3,2],"data_offsets":[0,24]}}"#,
        r#"{"0.weight":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,24]}}"#,
        r#"{"0.weight":[1,2,3]}"#,
        r#"[]"#,
        r#"{"__metadata__":{"a":"b"}"#,
    ];
    for h in hostile {
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend(std::iter::repeat_n(0u8, 24));
        let r = load_must_not_panic(&mut m, &b, false, h);
        assert!(r.is_err(), "hostile header loaded: {h}");
    }
    // A header length beyond the file, and one beyond any sane size.
    for n in [1000u64, u64::MAX, u64::MAX / 2, 100_000_001] {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert!(load_must_not_panic(&mut m, &b, true, &format!("header length {n}")).is_err());
    }
}

#[test]
fn loading_a_missing_file_names_it() {
    let dir = scratch("missing");
    let path = dir.join("nope.safetensors");
    let mut m = small();
    let err = load_safetensors(&mut m, &path, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// -------------------------------------------------------------- atomic save

#[test]
fn saving_over_an_existing_file_replaces_it_and_leaves_no_temporary() {
    let dir = scratch("overwrite");
    let path = dir.join("ckpt.safetensors");
    save_safetensors(&model::<f32>(20), &path).unwrap();
    let second = model::<f32>(21);
    save_safetensors(&second, &path).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        to_safetensors_bytes(&second).unwrap()
    );
    assert_eq!(listing(&dir), ["ckpt.safetensors"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_save_leaves_the_previous_file_intact_and_no_temporary() {
    let dir = scratch("failed_save");
    let m = model::<f32>(22);

    // 1. The parent "folder" is a regular file: nothing can be created.
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let target = blocker.join("model.safetensors");
    let err = save_safetensors(&m, &target).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"not a folder");
    assert_eq!(listing(&dir), ["blocker"]);

    // 2. The write succeeds but the final rename fails (a trailing slash
    //    makes the kernel refuse to rename onto a regular file): the old file
    //    must be intact and the temporary removed.
    let old = dir.join("old.safetensors");
    save_safetensors(&model::<f32>(23), &old).unwrap();
    let old_bytes = std::fs::read(&old).unwrap();
    let mut slashed = old.clone().into_os_string();
    slashed.push("/");
    assert!(save_safetensors(&m, PathBuf::from(slashed)).is_err());
    assert_eq!(std::fs::read(&old).unwrap(), old_bytes);
    assert_eq!(listing(&dir), ["blocker", "old.safetensors"]);

    // 3. The target is a non-empty folder: the rename fails, the folder and
    //    its content stay, no temporary is left beside it.
    let folder = dir.join("taken.safetensors");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("keep"), b"keep").unwrap();
    assert!(save_safetensors(&m, &folder).is_err());
    assert_eq!(std::fs::read(folder.join("keep")).unwrap(), b"keep");
    assert_eq!(
        listing(&dir),
        ["blocker", "old.safetensors", "taken.safetensors"]
    );

    // The old file still loads.
    let mut fresh = model::<f32>(24);
    load_safetensors(&mut fresh, &old, true).unwrap();
    assert!(state_dict(&fresh) == state_dict(&model::<f32>(23)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn state_values_compare_counters_exactly() {
    // num_batches_tracked travels as an exact integer.
    let mut src = small();
    src.visit_mut("", &mut |_, e| {
        if let EntryMut::Counter(c) = e {
            *c = i64::MAX - 1;
        }
    });
    let bytes = to_safetensors_bytes(&src).unwrap();
    let mut dst = small();
    load_safetensors_bytes(&mut dst, &bytes, true, "mem").unwrap();
    assert_eq!(
        state_dict(&dst).get("1.num_batches_tracked"),
        Some(&StateValue::Int(i64::MAX - 1))
    );
}

/// Threads saving to one path never collide on the temporary file.
#[test]
fn concurrent_saves_to_one_path_all_succeed() {
    let dir = std::env::temp_dir().join(format!("anneal-concurrent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let path = path.clone();
            s.spawn(move || {
                let lin = anneal_layers::LinearConfig::new(64, 64)
                    .init::<f32>(&mut StdRng::seed_from_u64(t))
                    .unwrap();
                for _ in 0..20 {
                    anneal_layers::save_safetensors(&lin, &path).unwrap();
                }
            });
        }
    });
    let bytes = std::fs::read(&path).unwrap();
    assert!(SafeTensors::deserialize(&bytes).is_ok());
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 1, "temporary files left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}
