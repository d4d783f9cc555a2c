//! Property tests of the optimiser-state loader against hostile files:
//! truncations, flipped bits, wrong dtypes, lying headers (offsets past the
//! end, overlapping tensors, gaps, shapes whose size overflows, huge header
//! lengths, impossible group counts) and random bytes. Each is an error that
//! names the file and the problem — never a panic, and never an allocation
//! sized by the header (a counting allocator records the largest single
//! allocation the loader makes on this thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anneal_optim::{GroupState, OptimizerState, ParamState};
use anneal_tensor::Tensor;
use proptest::prelude::*;
use safetensors::{Dtype, SafeTensors};

// ------------------------------------------------------- counting allocator

/// The system allocator, noting the largest single request per thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ------------------------------------------------------------------ helpers

/// An Adam-like state: two parameters with `exp_avg`/`exp_avg_sq` buffers.
fn sample() -> OptimizerState<f32> {
    let mut params = BTreeMap::new();
    for (i, shape) in [(0usize, vec![3usize]), (1, vec![2, 2])] {
        let n: usize = shape.iter().product();
        let mut buffers = BTreeMap::new();
        for (k, name) in ["exp_avg", "exp_avg_sq"].into_iter().enumerate() {
            let v: Vec<f32> = (0..n).map(|j| (i * 10 + j + k) as f32 * 0.125).collect();
            buffers.insert(name.to_string(), Tensor::from_vec(v, &shape).unwrap());
        }
        params.insert(
            i,
            ParamState {
                step: 3 + i as u64,
                buffers,
            },
        );
    }
    let hyper = [
        ("lr", 1e-3),
        ("beta1", 0.9),
        ("beta2", 0.999),
        ("eps", 1e-8),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    OptimizerState {
        optimizer: "Adam".to_string(),
        hyper,
        groups: vec![GroupState {
            lr: 1e-3,
            initial_lr: 1e-3,
            weight_decay: 0.0,
        }],
        params,
    }
}

fn good() -> Vec<u8> {
    sample().to_bytes().unwrap()
}

fn header_len(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// A fresh file path per call (tests run on several threads).
fn scratch_file() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("optim-loader_props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "state-{}.safetensors",
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Loads `bytes` from a file. Panics fail the test. Returns the error (if
/// any), the file's path as displayed, and the largest allocation made.
fn load(bytes: &[u8]) -> (Result<OptimizerState<f32>, String>, String, usize) {
    let path = scratch_file();
    std::fs::write(&path, bytes).unwrap();
    LARGEST.with(|c| c.set(0));
    let r = catch_unwind(AssertUnwindSafe(|| OptimizerState::<f32>::load(&path)))
        .expect("OptimizerState::load panicked");
    let largest = LARGEST.with(|c| c.get());
    std::fs::remove_file(&path).unwrap();
    (
        r.map_err(|e| e.to_string()),
        path.display().to_string(),
        largest,
    )
}

/// The load fails with a message naming the file and containing `needle`,
/// and no single allocation exceeds a small multiple of the file's length.
fn rejected(bytes: &[u8], needle: &str) -> Result<(), TestCaseError> {
    let (r, path, largest) = load(bytes);
    let e = match r {
        Ok(_) => return Err(TestCaseError::fail("a hostile file loaded")),
        Err(e) => e,
    };
    prop_assert!(e.contains(&path), "the file is not named: {e}");
    prop_assert!(e.contains(needle), "{needle:?} missing from: {e}");
    prop_assert!(
        largest <= 64 * bytes.len() + (64 << 10),
        "allocated {largest} bytes for a {}-byte file ({e})",
        bytes.len()
    );
    Ok(())
}

/// A safetensors file from a JSON header and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// One tensor of a forged file.
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
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The file's metadata and tensors, to be edited and re-sealed.
fn unpack(bytes: &[u8]) -> (BTreeMap<String, String>, BTreeMap<String, Raw>) {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let meta = meta.metadata().clone().unwrap().into_iter().collect();
    let st = SafeTensors::deserialize(bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let raw = Raw {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data: v.data().to_vec(),
            };
            (n, raw)
        })
        .collect();
    (meta, tensors)
}

/// Serialises with a checksum that matches (the documented format: 64-bit
/// FNV-1a over the length-prefixed metadata entries but `checksum`, then
/// each tensor's name, dtype, shape and bytes in name order), so that the
/// loader's other checks are the ones that must fire.
fn seal(mut meta: BTreeMap<String, String>, tensors: &BTreeMap<String, Raw>) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut field = |data: &[u8]| {
        for &b in (data.len() as u64).to_le_bytes().iter().chain(data) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    meta.remove("checksum");
    for (k, v) in &meta {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    for (name, r) in tensors {
        field(name.as_bytes());
        field(format!("{:?}", r.dtype).as_bytes());
        field(format!("{:?}", r.shape).as_bytes());
        field(&r.data);
    }
    meta.insert("checksum".into(), format!("{h:016x}"));
    safetensors::serialize(
        tensors.iter().map(|(k, v)| (k.as_str(), v)),
        Some(meta.into_iter().collect()),
    )
    .unwrap()
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every proper prefix is rejected and says the file is cut short.
    #[test]
    fn truncated_files_are_rejected(cut in 0.0f64..1.0) {
        let bytes = good();
        let len = (cut * bytes.len() as f64) as usize;
        let needle = if len < 8 {
            "too short"
        } else if len < header_len(&bytes) {
            "header length field says"
        } else {
            "truncated"
        };
        rejected(&bytes[..len], needle)?;
    }

    /// Any flipped bit is rejected: in the data by the checksum, in the
    /// header by the parser or the checksum.
    #[test]
    fn flipped_bits_are_rejected(pos in 0.0f64..1.0, bit in 0u32..8) {
        let bytes = good();
        let i = (pos * bytes.len() as f64) as usize;
        let mut b = bytes.clone();
        b[i] ^= 1 << bit;
        rejected(&b, if i >= header_len(&bytes) { "checksum mismatch" } else { "" })?;
    }

    /// A buffer or a step count stored with the wrong dtype is rejected by
    /// name even when the checksum matches.
    #[test]
    fn wrong_dtypes_are_rejected(
        dtype in prop::sample::select(vec![
            (Dtype::U8, 1), (Dtype::I8, 1), (Dtype::BOOL, 1), (Dtype::F16, 2),
            (Dtype::BF16, 2), (Dtype::I32, 4), (Dtype::U32, 4), (Dtype::F32, 4),
            (Dtype::F64, 8), (Dtype::I64, 8), (Dtype::U64, 8),
        ]),
        step in prop::bool::ANY,
    ) {
        let (dtype, width) = dtype;
        let (meta, mut tensors) = unpack(&good());
        let (name, same) = if step {
            ("state.1.step", dtype == Dtype::I64)
        } else {
            ("state.1.exp_avg", dtype == Dtype::F32)
        };
        prop_assume!(!same);
        let t = tensors.get_mut(name).unwrap();
        let n: usize = t.shape.iter().product();
        t.dtype = dtype;
        t.data = vec![0u8; n * width];
        let bytes = seal(meta, &tensors);
        rejected(&bytes, name)?;
        rejected(&bytes, &format!("{dtype:?}"))?;
    }

    /// Offsets that run past the data section are rejected, however far.
    #[test]
    fn offsets_past_the_end_are_rejected(extra in 1usize..usize::MAX / 16) {
        let end = 24usize.saturating_add(extra);
        let header = format!(
            r#"{{"state.0.m":{{"dtype":"U8","shape":[{end}],"data_offsets":[0,{end}]}}}}"#
        );
        rejected(&file(&header, &[0u8; 24]), "truncated or lying header")?;
    }

    /// Tensors sharing bytes, or bytes between tensors, are rejected by name.
    #[test]
    fn overlaps_and_gaps_are_rejected(a in 1usize..16, second in 0usize..32) {
        let header = format!(
            r#"{{"state.0.a":{{"dtype":"U8","shape":[{a}],"data_offsets":[0,{a}]}},"state.0.b":{{"dtype":"U8","shape":[4],"data_offsets":[{second},{}]}}}}"#,
            second + 4
        );
        prop_assume!(second != a);
        let data = vec![0u8; a.max(second + 4)];
        rejected(&file(&header, &data), "invalid offset for tensor `state.0.")?;
    }

    /// Bytes after the last tensor are rejected.
    #[test]
    fn trailing_bytes_are_rejected(extra in 1usize..64) {
        let mut bytes = good();
        bytes.extend(std::iter::repeat_n(0u8, extra));
        rejected(&bytes, "the tensors end at byte")?;
    }

    /// Shapes whose size overflows `usize` are rejected without allocating.
    #[test]
    fn overflowing_shapes_are_rejected(
        dims in prop::collection::vec(1usize << 20..usize::MAX, 4..8),
    ) {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let header = format!(
            r#"{{"state.0.m":{{"dtype":"F32","shape":[{}],"data_offsets":[0,24]}}}}"#,
            shape.join(",")
        );
        rejected(&file(&header, &[0u8; 24]), "overflow computing buffer size")?;
    }

    /// A 2^k-element tensor claiming 24 bytes is rejected without allocating.
    #[test]
    fn huge_shapes_in_tiny_files_are_rejected(log2 in 20u32..61) {
        let header = format!(
            r#"{{"state.0.m":{{"dtype":"U8","shape":[{}],"data_offsets":[0,24]}}}}"#,
            1usize << log2
        );
        rejected(&file(&header, &[0u8; 24]), "invalid shape, data type, or offset for tensor")?;
    }

    /// A header length larger than the file is rejected before any
    /// header-sized buffer exists.
    #[test]
    fn huge_header_lengths_are_rejected(n in 3u64..u64::MAX) {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        rejected(&b, "header length field says")?;
    }

    /// A group count the metadata cannot back is rejected before anything
    /// is sized by it, even with a matching checksum.
    #[test]
    fn impossible_group_counts_are_rejected(groups in 2usize..usize::MAX) {
        let (mut meta, tensors) = unpack(&good());
        meta.insert("groups".into(), groups.to_string());
        rejected(&seal(meta, &tensors), "`groups`")?;
    }

    /// Random bytes (half with a plausible header length) are rejected.
    #[test]
    fn random_bytes_are_rejected(
        mut bytes in prop::collection::vec(any::<u8>(), 0..512),
        plausible in prop::bool::ANY,
    ) {
        if plausible && bytes.len() >= 8 {
            let n = (bytes.len() - 8) as u64;
            bytes[..8].copy_from_slice(&n.to_le_bytes());
        }
        rejected(&bytes, "")?;
    }
}

// ------------------------------------------------------------ plain checks

#[test]
fn the_counting_allocator_sees_large_requests() {
    LARGEST.with(|c| c.set(0));
    let v = std::hint::black_box(Vec::<u8>::with_capacity(1 << 24));
    assert!(LARGEST.with(|c| c.get()) >= 1 << 24);
    drop(v);
}

/// Tensors whose offsets end near `usize::MAX`: safetensors' own
/// `read_metadata` computes `end + 8 + header` and overflows (a panic in
/// debug builds); the loader must answer with an error.
#[test]
fn offsets_ending_near_usize_max_are_rejected() {
    let size = (1usize << 61) - 1; // the largest U8 tensor whose bit count fits
    let mut header = String::from("{");
    for k in 0..8 {
        header += &format!(
            r#"{}"state.0.t{k}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
            if k == 0 { "" } else { "," },
            k * size,
            (k + 1) * size
        );
    }
    header += "}";
    let bytes = file(&header, &[0u8; 16]);
    let (r, path, largest) = load(&bytes);
    let e = r.unwrap_err();
    assert!(
        e.contains(&path) && e.contains("truncated or lying header"),
        "{e}"
    );
    assert!(largest < 1 << 20, "{largest}");
}

#[test]
fn forged_files_with_a_matching_checksum_load() {
    // The forging helper reproduces the format, so the rejections above are
    // the loader's own checks, not checksum mismatches.
    let (meta, tensors) = unpack(&good());
    let (r, _, _) = load(&seal(meta, &tensors));
    assert!(r.unwrap() == sample());
}

#[test]
fn misnamed_tensors_are_rejected_by_name() {
    for (name, needle) in [
        ("weights", "unexpected tensor \"weights\""),
        ("state.01.m", "\"01\" is not a parameter number"),
        ("state.+1.m", "\"+1\" is not a parameter number"),
        ("state.x.m", "\"x\" is not a parameter number"),
        ("state.0.", "has no buffer name"),
        ("state.7.m", "state 7 has buffers but no `state.7.step`"),
    ] {
        let (meta, mut tensors) = unpack(&good());
        let m = Raw {
            dtype: Dtype::F32,
            shape: vec![1],
            data: vec![0; 4],
        };
        tensors.insert(name.to_string(), m);
        let (r, path, _) = load(&seal(meta, &tensors));
        let e = r.unwrap_err();
        assert!(e.contains(&path) && e.contains(needle), "{name}: {e}");
    }
}
