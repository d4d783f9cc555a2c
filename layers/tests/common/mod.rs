//! Reading the PyTorch reference fixtures of `tests/fixtures/` (see
//! `generate.py`'s docstring and `cases.json`) and comparing against them.
//!
//! ```ignore
//! mod common;
//! let fx = common::load("conv2d_basic");
//! fx.load_params(&mut conv);                        // every `param.*` tensor, strict
//! let x = Var::leaf(fx.tensor("input"));
//! let y = conv.forward_train(&x)?;
//! common::assert_close("output", y.value(), &fx.tensor("output"), 1e-5, 1e-6);
//! ```
//!
//! A case's tensors are stored with its prefix (`"mean."` for the loss
//! variant `cross_entropy.mean`); [`Fixture`] strips it, so every case reads
//! `input`, `output`, `grad.input`, … whatever file it lives in.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use anneal_autograd::Gradients;
use anneal_layers::{Entry, Module, StateValue};
use anneal_tensor::{Element, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

/// The folder holding the fixtures and `cases.json`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// `cases.json`, parsed once.
pub fn cases_json() -> &'static Value {
    static CASES: OnceLock<Value> = OnceLock::new();
    CASES.get_or_init(|| {
        let path = fixtures_dir().join("cases.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    })
}

/// The entries of `cases.json`'s `cases` array.
pub fn cases() -> &'static [Value] {
    cases_json()["cases"]
        .as_array()
        .expect("cases.json: `cases` is an array")
}

/// Every case name, in file order.
pub fn case_names() -> Vec<String> {
    cases()
        .iter()
        .map(|c| c["name"].as_str().expect("case name").to_string())
        .collect()
}

/// Names of the cases whose `module` field equals `module`.
pub fn cases_of_module(module: &str) -> Vec<String> {
    cases()
        .iter()
        .filter(|c| c["module"].as_str() == Some(module))
        .map(|c| c["name"].as_str().expect("case name").to_string())
        .collect()
}

/// One stored tensor, undecoded.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Its safetensors dtype (F32, I64 or BOOL in these fixtures).
    pub dtype: Dtype,
    /// Its shape (`[]` for scalars).
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
}

/// One case of `cases.json` with its tensors (names without the case prefix).
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Case name, e.g. `cross_entropy.mean`.
    pub name: String,
    /// File name inside the fixtures folder.
    pub file: String,
    /// The prefix stripped from the stored names (`""` or `"<variant>."`).
    pub prefix: String,
    /// The PyTorch module or function, e.g. `torch.nn.modules.conv.Conv2d`.
    pub module: String,
    /// Constructor or call options as recorded by the generator.
    pub options: Value,
    /// `train` or `eval`: the PyTorch mode of the forward pass.
    pub mode: String,
    /// What the generator ran.
    pub call: String,
    /// Free-text notes of the case.
    pub notes: String,
    tensors: BTreeMap<String, RawTensor>,
}

fn read_tensors(file: &str, prefix: &str) -> BTreeMap<String, RawTensor> {
    let path = fixtures_dir().join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: not a safetensors file: {e}", path.display()));
    st.tensors()
        .into_iter()
        .filter_map(|(name, view)| {
            let short = name.strip_prefix(prefix)?.to_string();
            Some((
                short,
                RawTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes: view.data().to_vec(),
                },
            ))
        })
        .collect()
}

/// Loads a case of `cases.json` by name (e.g. `linear`, `cross_entropy.kdim`,
/// `activation.gelu_tanh`). Panics with a clear message if it does not exist.
pub fn load(case: &str) -> Fixture {
    let c = cases()
        .iter()
        .find(|c| c["name"].as_str() == Some(case))
        .unwrap_or_else(|| panic!("no case {case:?} in cases.json"));
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    let (file, prefix) = (s("file"), s("prefix"));
    let tensors = read_tensors(&file, &prefix);
    assert!(
        !tensors.is_empty(),
        "case {case}: no tensor with prefix {prefix:?} in {file}"
    );
    Fixture {
        name: case.to_string(),
        file,
        prefix,
        module: s("module"),
        options: c["options"].clone(),
        mode: s("mode"),
        call: s("call"),
        notes: s("notes"),
        tensors,
    }
}

/// Loads a whole fixture file without case metadata (e.g.
/// `cnn_lstm_io.safetensors`); names are kept as stored.
pub fn load_file(file: &str) -> Fixture {
    Fixture {
        name: file.to_string(),
        file: file.to_string(),
        prefix: String::new(),
        module: String::new(),
        options: Value::Null,
        mode: String::new(),
        call: String::new(),
        notes: String::new(),
        tensors: read_tensors(file, ""),
    }
}

impl Fixture {
    /// Every tensor name (prefix stripped), sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Names starting with `prefix`, with `prefix` removed (e.g. `param.` →
    /// `weight`, `bias`, …), sorted.
    pub fn names_under(&self, prefix: &str) -> Vec<String> {
        self.tensors
            .keys()
            .filter_map(|n| n.strip_prefix(prefix).map(str::to_string))
            .collect()
    }

    /// Whether a tensor exists.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The undecoded tensor.
    pub fn raw(&self, name: &str) -> &RawTensor {
        self.tensors.get(name).unwrap_or_else(|| {
            panic!(
                "case {}: no tensor {name:?} (have {:?})",
                self.name,
                self.names()
            )
        })
    }

    /// The shape of a tensor.
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.raw(name).shape.clone()
    }

    fn expect_dtype(&self, name: &str, dtype: Dtype) -> &RawTensor {
        let r = self.raw(name);
        assert_eq!(
            r.dtype, dtype,
            "case {}: tensor {name} has dtype {:?}, expected {dtype:?}",
            self.name, r.dtype
        );
        r
    }

    /// An F32 tensor.
    pub fn tensor(&self, name: &str) -> Tensor<f32> {
        let r = self.expect_dtype(name, Dtype::F32);
        let v: Vec<f32> = r
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Tensor::from_vec(v, &r.shape).expect("fixture shape matches its data")
    }

    /// An F32 tensor widened to f64.
    pub fn tensor_f64(&self, name: &str) -> Tensor<f64> {
        self.tensor(name).map(|v| v as f64)
    }

    /// An I64 tensor as raw integers.
    pub fn ints(&self, name: &str) -> Vec<i64> {
        let r = self.expect_dtype(name, Dtype::I64);
        r.bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }

    /// A rank-0 (or one-element) I64 tensor, e.g. `num_batches_tracked`.
    pub fn int(&self, name: &str) -> i64 {
        let v = self.ints(name);
        assert_eq!(v.len(), 1, "case {}: {name} is not a scalar", self.name);
        v[0]
    }

    /// An I64 tensor of indices or class targets; panics on a negative value.
    pub fn indices(&self, name: &str) -> Tensor<usize> {
        let v: Vec<usize> = self
            .ints(name)
            .into_iter()
            .map(|i| {
                usize::try_from(i).unwrap_or_else(|_| {
                    panic!("case {}: {name} holds a negative index {i}", self.name)
                })
            })
            .collect();
        Tensor::from_vec(v, &self.raw(name).shape).expect("fixture shape matches its data")
    }

    /// A BOOL mask (`true` = masked / padding, PyTorch's convention).
    pub fn mask(&self, name: &str) -> Tensor<bool> {
        let r = self.expect_dtype(name, Dtype::BOOL);
        let v: Vec<bool> = r.bytes.iter().map(|&b| b != 0).collect();
        Tensor::from_vec(v, &r.shape).expect("fixture shape matches its data")
    }

    /// The tensors under `prefix` (e.g. `param.` or `after.`) re-serialised
    /// as a safetensors file with the prefix removed: exactly the state dict
    /// that `anneal_layers::load_safetensors_bytes` expects.
    pub fn state_dict_bytes(&self, prefix: &str) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> = self
            .tensors
            .iter()
            .filter_map(|(n, r)| {
                let short = n.strip_prefix(prefix)?;
                let view = TensorView::new(r.dtype, r.shape.clone(), &r.bytes)
                    .expect("fixture tensor is consistent");
                Some((short.to_string(), view))
            })
            .collect();
        assert!(
            !views.is_empty(),
            "case {}: no tensor under {prefix:?}",
            self.name
        );
        safetensors::tensor::serialize(views, None).expect("serialising a fixture state dict")
    }

    /// Loads every `param.*` tensor into `module` (strict: names, shapes and
    /// dtypes must all match PyTorch's `state_dict()`).
    pub fn load_params<M: Module<f32> + ?Sized>(&self, module: &mut M) {
        let bytes = self.state_dict_bytes("param.");
        let report = anneal_layers::load_safetensors_bytes(module, &bytes, true, &self.name)
            .unwrap_or_else(|e| panic!("case {}: loading param.*: {e}", self.name));
        assert!(report.missing.is_empty() && report.unexpected.is_empty());
    }

    /// An option as a `usize` (accepts `3` or `[3]`).
    pub fn opt_usize(&self, key: &str) -> usize {
        let v = &self.options[key];
        v.as_u64()
            .or_else(|| v.as_array().and_then(|a| a.first()).and_then(Value::as_u64))
            .unwrap_or_else(|| panic!("case {}: option {key} = {v} is not a count", self.name))
            as usize
    }

    /// An option as `[usize; 2]` (accepts `3` or `[3, 2]`).
    pub fn opt_pair(&self, key: &str) -> [usize; 2] {
        let v = &self.options[key];
        if let Some(x) = v.as_u64() {
            return [x as usize; 2];
        }
        match v
            .as_array()
            .map(|a| a.iter().map(Value::as_u64).collect::<Vec<_>>())
        {
            Some(a) if a.len() == 2 && a.iter().all(Option::is_some) => {
                [a[0].unwrap() as usize, a[1].unwrap() as usize]
            }
            _ => panic!("case {}: option {key} = {v} is not a pair", self.name),
        }
    }

    /// A list option as `Vec<usize>`.
    pub fn opt_list(&self, key: &str) -> Vec<usize> {
        let v = &self.options[key];
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
            .unwrap_or_else(|| panic!("case {}: option {key} = {v} is not a list", self.name))
    }

    /// An option as `f64`.
    pub fn opt_f64(&self, key: &str) -> f64 {
        let v = &self.options[key];
        v.as_f64()
            .unwrap_or_else(|| panic!("case {}: option {key} = {v} is not a number", self.name))
    }

    /// An option as `i64` (e.g. `ignore_index = -100`).
    pub fn opt_i64(&self, key: &str) -> i64 {
        let v = &self.options[key];
        v.as_i64()
            .unwrap_or_else(|| panic!("case {}: option {key} = {v} is not an integer", self.name))
    }

    /// An option as `bool`.
    pub fn opt_bool(&self, key: &str) -> bool {
        let v = &self.options[key];
        v.as_bool()
            .unwrap_or_else(|| panic!("case {}: option {key} = {v} is not a bool", self.name))
    }

    /// An option as a string (`None` when absent, null or not a string).
    pub fn opt_str(&self, key: &str) -> Option<&str> {
        self.options[key].as_str()
    }

    /// True when an option is present and not null.
    pub fn opt_set(&self, key: &str) -> bool {
        !self.options[key].is_null()
    }

    /// Compares `module`'s parameter gradients with `grad.param.<name><suffix>`
    /// for every parameter, and checks that every `grad.param.*<suffix>` of
    /// the fixture belongs to a parameter of the module. A parameter the loss does not reach must
    /// have an all-zero reference. Returns the worst relative error.
    pub fn check_param_grads<M: Module<f32> + ?Sized>(
        &self,
        module: &M,
        grads: &Gradients<f32>,
        suffix: &str,
        rtol: f64,
        atol: f64,
    ) -> f64 {
        let mut worst = 0.0f64;
        let mut seen = Vec::new();
        module.visit("", &mut |name, e| {
            if let Entry::Param(p) = e {
                let key = format!("grad.param.{name}{suffix}");
                let want = self.tensor(&key);
                let got = grads
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros_like(p.value()));
                worst = worst.max(assert_close(
                    &format!("{}: {key}", self.name),
                    &got,
                    &want,
                    rtol,
                    atol,
                ));
                seen.push(format!("{name}{suffix}"));
            }
        });
        for n in self.names_under("grad.param.") {
            if n.ends_with(suffix) {
                assert!(
                    seen.contains(&n),
                    "case {}: the fixture has grad.param.{n} but the module has no such parameter \
                     (module parameters: {seen:?})",
                    self.name
                );
            }
        }
        worst
    }

    /// Compares `module`'s state dict with the tensors under `prefix`
    /// (`after.` or `after_0.`): every name stored there must exist in the
    /// module and agree (floats within tolerance, counters exactly).
    pub fn check_state<M: Module<f32> + ?Sized>(
        &self,
        module: &M,
        prefix: &str,
        rtol: f64,
        atol: f64,
    ) -> f64 {
        let sd = anneal_layers::state_dict(module);
        let mut worst = 0.0f64;
        let names = self.names_under(prefix);
        assert!(
            !names.is_empty(),
            "case {}: nothing under {prefix}",
            self.name
        );
        for n in names {
            let key = format!("{prefix}{n}");
            match sd.get(&n) {
                Some(StateValue::Float(t)) => {
                    worst = worst.max(assert_close(
                        &format!("{}: {key}", self.name),
                        t,
                        &self.tensor(&key),
                        rtol,
                        atol,
                    ));
                }
                Some(StateValue::Int(i)) => {
                    assert_eq!(*i, self.int(&key), "case {}: {key}", self.name)
                }
                None => panic!(
                    "case {}: the fixture has {key} but the module's state dict lacks {n} (has {:?})",
                    self.name,
                    sd.keys().collect::<Vec<_>>()
                ),
            }
        }
        worst
    }
}

/// Renders a flat index as a multi-index of `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        let d = shape[a].max(1);
        idx[a] = flat % d;
        flat /= d;
    }
    idx
}

/// Asserts that `got` and `want` have the same shape and that every element
/// satisfies `|got − want| ≤ max(atol, rtol·max(|want|, 1))`. NaN or infinity
/// anywhere in `got` fails unless `want` holds the same value. On failure the
/// message names the worst element (multi-index, both values, the error and
/// the allowance) and how many elements failed. Returns the worst relative
/// error `|got − want| / max(|want|, 1)`.
pub fn assert_close<T: Element>(
    name: &str,
    got: &Tensor<T>,
    want: &Tensor<T>,
    rtol: f64,
    atol: f64,
) -> f64 {
    assert_eq!(
        got.shape(),
        want.shape(),
        "{name}: shape {:?} differs from the reference {:?}",
        got.shape(),
        want.shape()
    );
    let mut worst_rel = 0.0f64;
    let mut worst: Option<(f64, usize, f64, f64, f64)> = None; // (excess ratio, i, got, want, tol)
    let mut failures = 0usize;
    for (i, (&a, &b)) in got.as_slice().iter().zip(want.as_slice()).enumerate() {
        let (a, b) = (a.to_f64_exact(), b.to_f64_exact());
        let tol = atol.max(rtol * b.abs().max(1.0));
        let err = (a - b).abs();
        let same_special = (a.is_nan() && b.is_nan()) || (a.is_infinite() && a == b);
        let bad = !same_special && (err.is_nan() || err > tol);
        if !same_special {
            let rel = err / b.abs().max(1.0);
            worst_rel = worst_rel.max(if rel.is_nan() { f64::INFINITY } else { rel });
        }
        if bad {
            failures += 1;
            let ratio = if err.is_nan() {
                f64::INFINITY
            } else {
                err / tol
            };
            if worst.is_none_or(|w| ratio > w.0) {
                worst = Some((ratio, i, a, b, tol));
            }
        }
    }
    if let Some((ratio, i, a, b, tol)) = worst {
        panic!(
            "{name}: {failures} of {} elements differ; worst at {:?}: got {a:.9e}, want {b:.9e}, \
             |diff| {:.3e} > allowed {tol:.3e} ({ratio:.1}×)",
            got.numel(),
            unravel(i, got.shape()),
            (a - b).abs()
        );
    }
    worst_rel
}
