//! Optimiser state as data, and its safetensors file format.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anneal_tensor::{DType, Element, Error, Result, Tensor};
use safetensors::tensor::Metadata;
use safetensors::Dtype;

const FORMAT: &str = "anneal-optim-state/1";
const SAVE_OP: &str = "OptimizerState::save";
const LOAD_OP: &str = "OptimizerState::load";

/// A parameter group's learning rates and weight decay, as saved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupState {
    /// The current learning rate.
    pub lr: f64,
    /// The rate the group was created with.
    pub initial_lr: f64,
    /// The weight decay.
    pub weight_decay: f64,
}

/// One parameter's saved state.
#[derive(Debug, Clone)]
pub struct ParamState<T: Element = f32> {
    /// Steps taken on this parameter (steps where it had a gradient).
    pub step: u64,
    /// The rule's buffers by name (`exp_avg`, `momentum_buffer`, …), each
    /// with the parameter's shape.
    pub buffers: BTreeMap<String, Tensor<T>>,
}

/// Everything an optimiser needs to continue bit for bit: its name, its
/// hyper-parameters, its groups' rates and decays, and each parameter's
/// buffers and step count keyed by the parameter's number (its position in
/// the slice passed to [`Optimizer::step`](crate::Optimizer::step)).
///
/// # File format
///
/// One safetensors file. Tensors:
///
/// | name | dtype | shape |
/// |---|---|---|
/// | `state.{i}.{buffer}` (e.g. `state.0.exp_avg`) | the optimiser's element type (`F32`/`F64`) | the parameter's |
/// | `state.{i}.step` | `I64` | `[]` |
///
/// where `i` numbers the parameters in the order the optimiser first saw them
/// (their position in the slice passed to `step`). The header's metadata holds
/// `format` (`anneal-optim-state/1`), `optimizer` (e.g. `Adam`), `dtype`,
/// `hyper.{name}` (every hyper-parameter, `f64` in Rust's round-trip `{:e}`
/// notation; flags as 0/1), `groups` (their count), `group.{g}.lr`,
/// `group.{g}.initial_lr`, `group.{g}.weight_decay`, and `checksum`: a 64-bit
/// FNV-1a hash over every other metadata entry and every tensor's name,
/// dtype, shape and bytes, so that a corrupted byte anywhere is reported
/// instead of silently changing a value.
#[derive(Debug, Clone)]
pub struct OptimizerState<T: Element = f32> {
    /// The algorithm, e.g. `"Adam"`.
    pub optimizer: String,
    /// Every hyper-parameter of the configuration (flags as 0/1).
    pub hyper: BTreeMap<String, f64>,
    /// The parameter groups; index 0 is the default group.
    pub groups: Vec<GroupState>,
    /// Per-parameter state by parameter number.
    pub params: BTreeMap<usize, ParamState<T>>,
}

impl<T: Element> PartialEq for ParamState<T> {
    fn eq(&self, other: &Self) -> bool {
        self.step == other.step
            && self.buffers.len() == other.buffers.len()
            && self
                .buffers
                .iter()
                .zip(&other.buffers)
                .all(|((ka, a), (kb, b))| {
                    ka == kb && a.shape() == b.shape() && bits_equal(a.as_slice(), b.as_slice())
                })
    }
}

impl<T: Element> PartialEq for OptimizerState<T> {
    /// Equality of every field; buffers compare bit for bit.
    fn eq(&self, other: &Self) -> bool {
        self.optimizer == other.optimizer
            && self.groups == other.groups
            && self.params == other.params
            && self.hyper.len() == other.hyper.len()
            && self
                .hyper
                .iter()
                .zip(&other.hyper)
                .all(|((ka, a), (kb, b))| ka == kb && a.to_bits() == b.to_bits())
    }
}

fn bits_equal<T: Element>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_f64_exact().to_bits() == y.to_f64_exact().to_bits())
}

/// A tensor of a parsed file: dtype, shape and its bytes.
#[derive(Clone, Copy)]
struct View<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    data: &'a [u8],
}

/// Metadata and named tensors, ready for safetensors' serializer.
type Prepared = (HashMap<String, String>, Vec<(String, Raw)>);

/// An owned tensor for safetensors' serializer.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn element_dtype<T: Element>(op: &'static str) -> Result<Dtype> {
    match T::DTYPE {
        DType::F32 => Ok(Dtype::F32),
        DType::F64 => Ok(Dtype::F64),
        other => Err(Error::invalid(
            op,
            format!("element type {other:?} cannot be saved"),
        )),
    }
}

fn to_bytes<T: Element>(xs: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * T::DTYPE.size_in_bytes());
    match T::DTYPE {
        DType::F32 => {
            for x in xs {
                out.extend_from_slice(&(x.to_f64_exact() as f32).to_le_bytes());
            }
        }
        _ => {
            for x in xs {
                out.extend_from_slice(&x.to_f64_exact().to_le_bytes());
            }
        }
    }
    out
}

fn from_bytes<T: Element>(bytes: &[u8]) -> Vec<T> {
    match T::DTYPE {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| T::from_f64_lossy(f32::from_le_bytes(b.try_into().unwrap()) as f64))
            .collect(),
        _ => bytes
            .chunks_exact(8)
            .map(|b| T::from_f64_lossy(f64::from_le_bytes(b.try_into().unwrap())))
            .collect(),
    }
}

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// Hashes a length-prefixed field, so that field boundaries count.
    fn field(&mut self, data: &[u8]) {
        self.bytes(&(data.len() as u64).to_le_bytes());
        self.bytes(data);
    }
}

fn checksum<'a>(
    meta: &BTreeMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = Fnv::new();
    for (k, v) in meta {
        if k != "checksum" {
            h.field(k.as_bytes());
            h.field(v.as_bytes());
        }
    }
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, data) in sorted {
        h.field(name.as_bytes());
        h.field(format!("{dtype:?}").as_bytes());
        h.field(format!("{shape:?}").as_bytes());
        h.field(data);
    }
    format!("{:016x}", h.0)
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

/// `write` fills a temporary file beside `path`, which is flushed and renamed
/// over `path`; on any failure or panic the temporary is removed and `path`
/// is untouched. (`anneal-layers` has the same writer for state dicts;
/// `optim` does not depend on `layers`.)
fn write_atomically_with(
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
    // Unique per process and call, so concurrent saves never share it.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
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
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Splits a safetensors file into its checked header and its data section.
///
/// The header length is checked against the file before the header is
/// parsed, so nothing is sized by an unchecked field; safetensors' header
/// validation then checks each shape's size with checked arithmetic and that
/// the tensors' offsets follow each other without overlap or gap; last, the
/// tensors must end exactly at the end of the file. (safetensors'
/// `read_metadata` does the last step as `end + 8 + n == len`, which
/// overflows — a panic in debug builds — for offsets near `usize::MAX`.)
fn split_file(bytes: &[u8]) -> std::result::Result<(Metadata, &[u8]), String> {
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
    let (header, data) = bytes[8..].split_at(n as usize);
    let metadata: Metadata = serde_json::from_slice(header)
        .map_err(|e| format!("the {n}-byte header is not a valid safetensors header: {e}"))?;
    if metadata.data_len() != data.len() {
        return Err(format!(
            "truncated or lying header: the tensors end at byte {} of the data section, which holds {} bytes",
            metadata.data_len(),
            data.len()
        ));
    }
    Ok((metadata, data))
}

fn load_err(message: impl Into<String>) -> Error {
    Error::invalid(LOAD_OP, message)
}

fn parse_f64(meta: &HashMap<String, String>, key: &str) -> Result<f64> {
    let s = meta
        .get(key)
        .ok_or_else(|| load_err(format!("metadata entry `{key}` is missing")))?;
    s.parse::<f64>()
        .map_err(|_| load_err(format!("metadata entry `{key}` = {s:?} is not a number")))
}

impl<T: Element> OptimizerState<T> {
    /// Serialises to safetensors bytes (format in the [type docs](OptimizerState)).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (meta, tensors) = self.prepare()?;
        safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
            .map_err(|e| Error::invalid(SAVE_OP, e.to_string()))
    }

    /// Writes a safetensors file atomically: the bytes go to a temporary file
    /// in the same folder, which is flushed and then renamed over `path`, so
    /// a crash mid-write leaves any previous file intact.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        write_atomically_with(path, |f| f.write_all(&bytes))
            .map_err(|e| Error::invalid(SAVE_OP, format!("{}: {e}", path.display())))
    }

    /// Reads a file written by [`OptimizerState::save`]. Errors (never
    /// panics) on an unreadable, truncated or corrupted file, a checksum
    /// mismatch, or tensors of the wrong name, dtype or shape.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|e| load_err(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::InvalidArgument { op, message } => Error::InvalidArgument {
                op,
                message: format!("{}: {message}", path.display()),
            },
            e => e,
        })
    }

    fn prepare(&self) -> Result<Prepared> {
        let dtype = element_dtype::<T>(SAVE_OP)?;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("optimizer".to_string(), self.optimizer.clone());
        meta.insert("dtype".to_string(), format!("{dtype:?}"));
        for (k, v) in &self.hyper {
            meta.insert(format!("hyper.{k}"), format!("{v:e}"));
        }
        meta.insert("groups".to_string(), self.groups.len().to_string());
        for (g, s) in self.groups.iter().enumerate() {
            meta.insert(format!("group.{g}.lr"), format!("{:e}", s.lr));
            meta.insert(
                format!("group.{g}.initial_lr"),
                format!("{:e}", s.initial_lr),
            );
            meta.insert(
                format!("group.{g}.weight_decay"),
                format!("{:e}", s.weight_decay),
            );
        }
        let mut tensors = Vec::new();
        for (i, ps) in &self.params {
            tensors.push((
                format!("state.{i}.step"),
                Raw {
                    dtype: Dtype::I64,
                    shape: Vec::new(),
                    data: (ps.step as i64).to_le_bytes().to_vec(),
                },
            ));
            for (name, t) in &ps.buffers {
                if name == "step" || name.is_empty() {
                    return Err(Error::invalid(
                        SAVE_OP,
                        format!("state {i}: buffer name {name:?} is reserved"),
                    ));
                }
                tensors.push((
                    format!("state.{i}.{name}"),
                    Raw {
                        dtype,
                        shape: t.shape().to_vec(),
                        data: to_bytes(t.as_slice()),
                    },
                ));
            }
        }
        let sum = checksum(
            &meta,
            tensors
                .iter()
                .map(|(k, r)| (k.as_str(), r.dtype, r.shape.as_slice(), r.data.as_slice())),
        );
        meta.insert("checksum".to_string(), sum);
        Ok((meta.into_iter().collect(), tensors))
    }

    /// Parses safetensors bytes written by [`OptimizerState::to_bytes`] or
    /// [`OptimizerState::save`], validating every entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let want_dtype = element_dtype::<T>(LOAD_OP)?;
        // Nothing below is sized by the header before `split_file` has
        // checked it against the file.
        let (metadata, data) = split_file(bytes)
            .map_err(|m| load_err(format!("not a valid safetensors file: {m}")))?;
        let meta = metadata
            .metadata()
            .clone()
            .ok_or_else(|| load_err("the header has no metadata: not an optimiser state"))?;
        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            other => {
                return Err(load_err(format!(
                    "format is {other:?}, expected {FORMAT:?}"
                )))
            }
        }
        let sorted: BTreeMap<String, String> =
            meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let views: Vec<(String, View<'_>)> = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (a, b) = info.data_offsets;
                data.get(a..b)
                    .map(|d| {
                        let view = View {
                            dtype: info.dtype,
                            shape: info.shape.as_slice(),
                            data: d,
                        };
                        (name.clone(), view)
                    })
                    .ok_or_else(|| {
                        load_err(format!(
                            "tensor {name:?}: data_offsets [{a}, {b}] lie outside the {}-byte data section",
                            data.len()
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        let want_sum = checksum(
            &sorted,
            views
                .iter()
                .map(|(k, v)| (k.as_str(), v.dtype, v.shape, v.data)),
        );
        match meta.get("checksum") {
            Some(s) if *s == want_sum => {}
            Some(s) => {
                return Err(load_err(format!(
                    "checksum mismatch (file says {s}, contents hash to {want_sum}): the file is corrupted"
                )))
            }
            None => return Err(load_err("metadata entry `checksum` is missing")),
        }
        let dtype = meta
            .get("dtype")
            .ok_or_else(|| load_err("metadata entry `dtype` is missing"))?;
        if *dtype != format!("{want_dtype:?}") {
            return Err(load_err(format!(
                "the state holds {dtype} buffers but the optimiser works in {want_dtype:?}"
            )));
        }
        let optimizer = meta
            .get("optimizer")
            .ok_or_else(|| load_err("metadata entry `optimizer` is missing"))?
            .clone();
        let mut hyper = BTreeMap::new();
        for (k, _) in sorted.iter() {
            if let Some(name) = k.strip_prefix("hyper.") {
                hyper.insert(name.to_string(), parse_f64(&meta, k)?);
            }
        }
        let n_groups = meta
            .get("groups")
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| load_err("metadata entry `groups` is missing or not a count"))?;
        // Each group has three metadata entries: a larger count is a lie, and
        // is refused before anything is sized by it.
        if n_groups == 0 || n_groups > meta.len() / 3 {
            return Err(load_err(format!(
                "metadata entry `groups` = {n_groups} is impossible: the header has {} entries, three per group",
                meta.len()
            )));
        }
        let mut groups = Vec::with_capacity(n_groups);
        for g in 0..n_groups {
            groups.push(GroupState {
                lr: parse_f64(&meta, &format!("group.{g}.lr"))?,
                initial_lr: parse_f64(&meta, &format!("group.{g}.initial_lr"))?,
                weight_decay: parse_f64(&meta, &format!("group.{g}.weight_decay"))?,
            });
        }
        let mut steps: BTreeMap<usize, u64> = BTreeMap::new();
        let mut buffers: BTreeMap<usize, BTreeMap<String, Tensor<T>>> = BTreeMap::new();
        for (name, view) in &views {
            let view = *view;
            let rest = name
                .strip_prefix("state.")
                .ok_or_else(|| load_err(format!("unexpected tensor {name:?}")))?;
            let (idx, buf) = rest
                .split_once('.')
                .ok_or_else(|| load_err(format!("unexpected tensor {name:?}")))?;
            let idx: usize = idx
                .parse()
                .ok()
                .filter(|_| !idx.starts_with('+') && (idx == "0" || !idx.starts_with('0')))
                .ok_or_else(|| {
                    load_err(format!(
                        "tensor {name:?}: {idx:?} is not a parameter number"
                    ))
                })?;
            if buf.is_empty() {
                return Err(load_err(format!("tensor {name:?} has no buffer name")));
            }
            if buf == "step" {
                if view.dtype != Dtype::I64 || !view.shape.is_empty() {
                    return Err(load_err(format!(
                        "tensor {name:?} must be an I64 scalar, found {:?} of shape {:?}",
                        view.dtype, view.shape
                    )));
                }
                let s = i64::from_le_bytes(
                    view.data
                        .try_into()
                        .map_err(|_| load_err(format!("tensor {name:?} does not hold 8 bytes")))?,
                );
                if s < 0 {
                    return Err(load_err(format!(
                        "tensor {name:?}: negative step count {s}"
                    )));
                }
                steps.insert(idx, s as u64);
            } else {
                if view.dtype != want_dtype {
                    return Err(load_err(format!(
                        "tensor {name:?} is {:?}, expected {want_dtype:?}",
                        view.dtype
                    )));
                }
                let data = from_bytes::<T>(view.data);
                let t = Tensor::from_vec(data, view.shape)
                    .map_err(|e| load_err(format!("tensor {name:?}: {e}")))?;
                buffers.entry(idx).or_default().insert(buf.to_string(), t);
            }
        }
        let mut params = BTreeMap::new();
        for (&i, &step) in &steps {
            params.insert(
                i,
                ParamState {
                    step,
                    buffers: buffers.remove(&i).unwrap_or_default(),
                },
            );
        }
        if let Some((i, _)) = buffers.into_iter().next() {
            return Err(load_err(format!(
                "state {i} has buffers but no `state.{i}.step`"
            )));
        }
        Ok(OptimizerState {
            optimizer,
            hyper,
            groups,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OptimizerState<f32> {
        let mut buffers = BTreeMap::new();
        buffers.insert(
            "exp_avg".to_string(),
            Tensor::from_vec(vec![0.5f32, -1.25, 3.0], &[3]).unwrap(),
        );
        let mut params = BTreeMap::new();
        params.insert(0, ParamState { step: 7, buffers });
        let mut hyper = BTreeMap::new();
        hyper.insert("lr".to_string(), 1e-3);
        hyper.insert("eps".to_string(), 1e-8);
        OptimizerState {
            optimizer: "Adam".to_string(),
            hyper,
            groups: vec![GroupState {
                lr: 0.1 / 3.0,
                initial_lr: 0.1,
                weight_decay: 0.0,
            }],
            params,
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let s = sample();
        let back = OptimizerState::<f32>::from_bytes(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.groups[0].lr.to_bits(), (0.1f64 / 3.0).to_bits());
    }

    #[test]
    fn wrong_dtype_is_an_error() {
        let bytes = sample().to_bytes().unwrap();
        let e = OptimizerState::<f64>::from_bytes(&bytes).unwrap_err();
        assert!(e.to_string().contains("F32"), "{e}");
    }

    fn scratch(test: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("anneal-optim-atomic-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_save_interrupted_by_an_error_or_a_panic_keeps_the_previous_file() {
        let dir = scratch("interrupted");
        let path = dir.join("opt.safetensors");
        let old = sample();
        old.save(&path).unwrap();
        let mut new = sample();
        new.params.get_mut(&0).unwrap().step = 8;
        let bytes = new.to_bytes().unwrap();

        let e = write_atomically_with(&path, |f| {
            f.write_all(&bytes[..bytes.len() / 2])?;
            Err(std::io::Error::other("disk full (injected)"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("injected"));
        assert_eq!(OptimizerState::<f32>::load(&path).unwrap(), old);
        assert_eq!(listing(&dir), ["opt.safetensors"]);

        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_atomically_with(&path, |f| {
                f.write_all(&bytes[..bytes.len() / 3])?;
                panic!("interrupted mid-write")
            })
        }));
        assert!(r.is_err());
        assert_eq!(OptimizerState::<f32>::load(&path).unwrap(), old);
        assert_eq!(listing(&dir), ["opt.safetensors"]);

        // A failed rename (the target is a non-empty folder) leaves no
        // temporary either; a normal save then replaces the file.
        let folder = dir.join("taken");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("keep"), b"keep").unwrap();
        assert!(new.save(&folder).is_err());
        assert_eq!(listing(&dir), ["opt.safetensors", "taken"]);
        new.save(&path).unwrap();
        assert_eq!(OptimizerState::<f32>::load(&path).unwrap(), new);
        assert_eq!(listing(&dir), ["opt.safetensors", "taken"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(OptimizerState::<f32>::from_bytes(&[]).is_err());
        assert!(OptimizerState::<f32>::from_bytes(b"not a file at all").is_err());
        let empty = safetensors::serialize(Vec::<(&str, &Raw)>::new(), None).unwrap();
        let e = OptimizerState::<f32>::from_bytes(&empty).unwrap_err();
        assert!(e.to_string().contains("metadata"), "{e}");
    }
}
