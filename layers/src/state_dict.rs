//! State dicts on disk as safetensors, named and laid out as PyTorch's
//! `state_dict()`, so weights exported from PyTorch load unchanged.
//!
//! Loading is all-or-nothing: every name, dtype and shape is checked first
//! and all problems are reported together; the model is only touched when
//! everything fits. Saving writes a temporary file and renames it, so a
//! crash mid-write leaves any previous file intact.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anneal_tensor::{shape_to_string, DType, Element, Error, Result, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::module::{Entry, EntryMut, Module};

/// One entry of a state dict.
#[derive(Debug, Clone, PartialEq)]
pub enum StateValue<T: Element> {
    /// A parameter or floating-point buffer.
    Float(Tensor<T>),
    /// An integer counter (stored as a rank-0 int64 tensor, as PyTorch does).
    Int(i64),
}

/// The state dict of a module: every parameter and buffer by dotted name.
pub fn state_dict<T: Element, M: Module<T> + ?Sized>(
    module: &M,
) -> BTreeMap<String, StateValue<T>> {
    let mut out = BTreeMap::new();
    module.visit("", &mut |name, e| {
        let v = match e {
            Entry::Param(p) => StateValue::Float(p.value().clone()),
            Entry::Buffer(b) => StateValue::Float(b.clone()),
            Entry::Counter(c) => StateValue::Int(*c),
        };
        out.insert(name.to_string(), v);
    });
    out
}

fn float_bytes<T: Element>(t: &Tensor<T>) -> (Dtype, Vec<u8>) {
    match T::DTYPE {
        DType::F64 => (
            Dtype::F64,
            t.as_slice()
                .iter()
                .flat_map(|v| v.to_f64_exact().to_le_bytes())
                .collect(),
        ),
        _ => (
            Dtype::F32,
            t.as_slice()
                .iter()
                .flat_map(|v| (v.to_f64_exact() as f32).to_le_bytes())
                .collect(),
        ),
    }
}

/// Serialises a module's state dict to safetensors bytes.
pub fn to_safetensors_bytes<T: Element, M: Module<T> + ?Sized>(module: &M) -> Result<Vec<u8>> {
    let sd = state_dict(module);
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, v) in sd {
        match v {
            StateValue::Float(t) => {
                let (dt, bytes) = float_bytes(&t);
                owned.push((name, dt, t.shape().to_vec(), bytes));
            }
            StateValue::Int(i) => {
                owned.push((name, Dtype::I64, Vec::new(), i.to_le_bytes().to_vec()))
            }
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, dt, s, b)| TensorView::new(*dt, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid("save_state_dict", e.to_string()))?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| Error::invalid("save_state_dict", e.to_string()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over the target.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name unique to this process, thread and call, so concurrent saves
    // to one path never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable where the platform allows it.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves a module's state dict as a `.safetensors` file (atomically).
pub fn save_safetensors<T: Element, M: Module<T> + ?Sized>(
    module: &M,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_safetensors_bytes(module)?;
    write_atomically(path, &bytes)
        .map_err(|e| Error::invalid("save_state_dict", format!("{}: {e}", path.display())))
}

/// What a non-strict load skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Names the model has but the file lacks.
    pub missing: Vec<String>,
    /// Names the file has but the model lacks.
    pub unexpected: Vec<String>,
}

fn decode_floats<T: Element>(view: &TensorView<'_>) -> Option<Vec<T>> {
    let d = view.data();
    match view.dtype() {
        Dtype::F32 => Some(
            d.chunks_exact(4)
                .map(|c| T::from_f64_lossy(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
                .collect(),
        ),
        Dtype::F64 => Some(
            d.chunks_exact(8)
                .map(|c| T::from_f64_lossy(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
        ),
        _ => None,
    }
}

fn decode_int(view: &TensorView<'_>) -> Option<i64> {
    if view.shape().iter().product::<usize>() != 1 {
        return None;
    }
    let d = view.data();
    match view.dtype() {
        Dtype::I64 => Some(i64::from_le_bytes(d.try_into().ok()?)),
        Dtype::I32 => Some(i32::from_le_bytes(d.try_into().ok()?) as i64),
        _ => None,
    }
}

/// Loads a state dict from safetensors bytes. `source` names the file in
/// errors. In strict mode missing or unexpected names are errors; in either
/// mode a wrong shape or dtype is an error. Nothing is changed unless every
/// entry fits.
pub fn load_safetensors_bytes<T: Element, M: Module<T> + ?Sized>(
    module: &mut M,
    bytes: &[u8],
    strict: bool,
    source: &str,
) -> Result<LoadReport> {
    let op = "load_state_dict";
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::invalid(op, format!("{source}: not a valid safetensors file: {e}")))?;
    let file: HashMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    // What the model expects: name → Some(shape) for floats, None for counters.
    let mut expected: Vec<(String, Option<Vec<usize>>)> = Vec::new();
    module.visit("", &mut |name, e| {
        let shape = match e {
            Entry::Param(p) => Some(p.shape().to_vec()),
            Entry::Buffer(b) => Some(b.shape().to_vec()),
            Entry::Counter(_) => None,
        };
        expected.push((name.to_string(), shape));
    });
    let mut report = LoadReport::default();
    let mut problems = Vec::new();
    let mut floats: HashMap<String, Vec<T>> = HashMap::new();
    let mut ints: HashMap<String, i64> = HashMap::new();
    for (name, shape) in &expected {
        let Some(view) = file.get(name) else {
            report.missing.push(name.clone());
            continue;
        };
        match shape {
            Some(shape) => {
                if view.shape() != shape.as_slice() {
                    problems.push(format!(
                        "{name}: expected shape {} but the file has {}",
                        shape_to_string(shape),
                        shape_to_string(view.shape())
                    ));
                } else if let Some(v) = decode_floats::<T>(view) {
                    floats.insert(name.clone(), v);
                } else {
                    problems.push(format!(
                        "{name}: expected a float tensor but the file has dtype {:?}",
                        view.dtype()
                    ));
                }
            }
            None => match decode_int(view) {
                Some(i) => {
                    ints.insert(name.clone(), i);
                }
                None => problems.push(format!(
                    "{name}: expected an int64 scalar but the file has dtype {:?} shape {}",
                    view.dtype(),
                    shape_to_string(view.shape())
                )),
            },
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    report.unexpected = file
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    report.unexpected.sort();
    if strict {
        if !report.missing.is_empty() {
            problems.push(format!("missing: {}", report.missing.join(", ")));
        }
        if !report.unexpected.is_empty() {
            problems.push(format!("unexpected: {}", report.unexpected.join(", ")));
        }
    }
    if !problems.is_empty() {
        return Err(Error::invalid(
            op,
            format!("{source}: {}", problems.join("; ")),
        ));
    }
    let mut failure = None;
    module.visit_mut("", &mut |name, e| {
        let r = match e {
            EntryMut::Param(p) => match floats.remove(name) {
                Some(v) => Tensor::from_vec(v, p.shape()).and_then(|t| p.set_value(t)),
                None => Ok(()),
            },
            EntryMut::Buffer(b) => match floats.remove(name) {
                Some(v) => Tensor::from_vec(v, b.shape()).map(|t| *b = t),
                None => Ok(()),
            },
            EntryMut::Counter(c) => {
                if let Some(i) = ints.remove(name) {
                    *c = i;
                }
                Ok(())
            }
        };
        if let Err(e) = r {
            failure.get_or_insert(e);
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Loads a `.safetensors` state dict from `path` (see [`load_safetensors_bytes`]).
pub fn load_safetensors<T: Element, M: Module<T> + ?Sized>(
    module: &mut M,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)
        .map_err(|e| Error::invalid("load_state_dict", format!("{}: {e}", path.display())))?;
    load_safetensors_bytes(module, &bytes, strict, &path.display().to_string())
}
