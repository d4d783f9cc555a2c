//! State dicts on disk as safetensors, named and laid out as PyTorch's
//! `state_dict()`, so weights exported from PyTorch load unchanged.
//!
//! Loading is all-or-nothing: every name, dtype and shape is checked first
//! and all problems are reported together; the model is only touched when
//! everything fits. Saving writes a temporary file and renames it, so a
//! crash mid-write leaves any previous file intact.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
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
/// flushed to disk, then renamed over the target (see [`write_atomically_with`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |f| f.write_all(bytes))
}

/// Removes the temporary file unless it has been renamed, also when the
/// writer panics.
struct TempGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Writes a file atomically with `write`: `write` fills a temporary file in
/// the same folder, which is flushed to disk and then renamed over `path`.
/// If `write` fails or panics, or the flush or rename fails, the temporary
/// file is removed and whatever was at `path` before is left untouched; a
/// process killed mid-write can leave only the hidden temporary
/// (`.{name}.tmp-{pid}-{n}`) behind, never a partial file under `path`.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
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
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let mut guard = TempGuard {
        path: &tmp,
        armed: true,
    };
    write(&mut f)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    guard.armed = false;
    // Make the rename itself durable where the platform allows it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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

/// Checks the layout of a safetensors file before anything is decoded, and
/// says in words what is wrong: the header length against the file length
/// (so nothing is sized by an unchecked header), each entry's dtype, shape
/// and offsets (with checked arithmetic, so a shape whose element count
/// overflows is an error), and that the tensors tile the data section
/// exactly: no overlap, no gap, nothing past the end, nothing left over.
pub(crate) fn check_layout(bytes: &[u8]) -> std::result::Result<(), String> {
    use serde_json::{Map, Value};
    let len = bytes.len();
    let Some(head) = bytes.get(..8) else {
        return Err(format!(
            "{len} bytes is too short for a safetensors file (it starts with an 8-byte header length)"
        ));
    };
    let n = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    let follow = len - 8;
    if n > follow as u64 {
        return Err(format!(
            "truncated or not a safetensors file: the header length field says {n} bytes but only {follow} bytes follow it"
        ));
    }
    let n = n as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n])
        .map_err(|e| format!("the {n}-byte header is not UTF-8 text: {e}"))?;
    let entries: Map<String, Value> = serde_json::from_str(header)
        .map_err(|e| format!("the {n}-byte header is not a JSON object: {e}"))?;
    let data_len = follow - n;
    let mut spans: Vec<(usize, usize, String)> = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            match &value {
                Value::Object(m) if m.values().all(Value::is_string) => continue,
                _ => return Err("`__metadata__` must map names to strings".to_string()),
            }
        }
        let info: safetensors::tensor::TensorInfo =
            serde_json::from_value(value).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let shape = shape_to_string(&info.shape);
        let dtype = info.dtype;
        let bits = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|count| count.checked_mul(dtype.bitsize()))
            .ok_or_else(|| {
                format!("tensor `{name}`: shape {shape} of {dtype:?} is too large to address (its size overflows)")
            })?;
        if bits % 8 != 0 {
            return Err(format!(
                "tensor `{name}`: shape {shape} of {dtype:?} does not fill whole bytes"
            ));
        }
        let (start, end) = info.data_offsets;
        if end < start {
            return Err(format!(
                "tensor `{name}`: data_offsets [{start}, {end}] end before they start"
            ));
        }
        if end - start != bits / 8 {
            return Err(format!(
                "tensor `{name}`: shape {shape} of {dtype:?} needs {} bytes but data_offsets [{start}, {end}] span {}",
                bits / 8,
                end - start
            ));
        }
        if end > data_len {
            return Err(format!(
                "truncated or lying header: tensor `{name}` has data_offsets [{start}, {end}] but the data section holds {data_len} bytes"
            ));
        }
        spans.push((start, end, name));
    }
    spans.sort();
    let mut pos = 0;
    let mut previous: Option<&str> = None;
    for (start, end, name) in &spans {
        if *start < pos {
            return Err(format!(
                "tensor `{name}` (data_offsets [{start}, {end}]) overlaps tensor `{}`, which ends at {pos}",
                previous.unwrap_or_default()
            ));
        }
        if *start > pos {
            return Err(format!(
                "data bytes {pos}..{start} (before tensor `{name}`) belong to no tensor"
            ));
        }
        pos = *end;
        previous = Some(name);
    }
    if pos != data_len {
        return Err(format!(
            "the data section holds {data_len} bytes but the tensors end at {pos}: {} trailing bytes belong to no tensor",
            data_len - pos
        ));
    }
    Ok(())
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
    check_layout(bytes).map_err(|m| Error::invalid(op, format!("{source}: {m}")))?;
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
                        "{name}: expected a float tensor (F32 or F64) but the file has dtype {:?}",
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
