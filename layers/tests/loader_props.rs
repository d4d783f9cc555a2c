//! Property tests of the safetensors state-dict loader against hostile
//! files: truncations, flipped bytes, wrong dtypes, lying headers (offsets
//! past the end, overlapping tensors, gaps, shapes whose element count
//! overflows, huge declared lengths) and random bytes. Every one is an error
//! that names the file and the problem, never a panic, never a change to the
//! model, and never an allocation sized by the header: a counting allocator
//! records the largest single allocation the loader makes on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use anneal_layers::{
    load_safetensors, load_safetensors_bytes, state_dict, to_safetensors_bytes, BatchNormConfig,
    LinearConfig, Sequential,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

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

const SOURCE: &str = "hostile.safetensors";

/// Linear(2 → 3) then BatchNorm1d(3): float parameters, float buffers and an
/// int64 counter (`1.num_batches_tracked`).
fn small() -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(13);
    Sequential::new()
        .push(LinearConfig::new(2, 3).init::<f32>(&mut rng).unwrap())
        .push(BatchNormConfig::new(3).init::<f32>().unwrap())
}

/// A safetensors file from a JSON header and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Loads `bytes` into a fresh small model, strictly. Panics fail the test;
/// a failed load must leave the model untouched. Returns the error message
/// and the largest single allocation the load made.
fn load(bytes: &[u8]) -> (Result<(), String>, usize) {
    let mut m = small();
    let before = state_dict(&m);
    LARGEST.with(|c| c.set(0));
    let r = catch_unwind(AssertUnwindSafe(|| {
        load_safetensors_bytes(&mut m, bytes, true, SOURCE)
    }))
    .expect("load_safetensors_bytes panicked");
    let largest = LARGEST.with(|c| c.get());
    let r = r.map(|_| ()).map_err(|e| e.to_string());
    if r.is_err() {
        assert!(state_dict(&m) == before, "a failed load changed the model");
    }
    (r, largest)
}

/// The load fails with a message naming the file and containing `needle`,
/// and no single allocation exceeds a small multiple of the file's length.
fn rejected(bytes: &[u8], needle: &str) -> Result<(), TestCaseError> {
    let (r, largest) = load(bytes);
    let e = match r {
        Ok(()) => return Err(TestCaseError::fail("a hostile file loaded")),
        Err(e) => e,
    };
    prop_assert!(e.contains(SOURCE), "the file is not named: {e}");
    prop_assert!(e.contains(needle), "{needle:?} missing from: {e}");
    prop_assert!(
        largest <= 64 * bytes.len() + (64 << 10),
        "allocated {largest} bytes for a {}-byte file ({e})",
        bytes.len()
    );
    Ok(())
}

fn good() -> Vec<u8> {
    to_safetensors_bytes(&small()).unwrap()
}

fn header_len(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every proper prefix is rejected, and says the file is truncated.
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

    /// A flipped bit in the data changes exactly the element it lands in; a
    /// flipped bit in the header is an error naming the file, or a file that
    /// still parses — never a panic.
    #[test]
    fn flipped_bits_never_panic(pos in 0.0f64..1.0, bit in 0u32..8) {
        let bytes = good();
        let i = (pos * bytes.len() as f64) as usize;
        let mut b = bytes.clone();
        b[i] ^= 1 << bit;
        let (r, _) = load(&b);
        if i >= header_len(&bytes) {
            prop_assert!(r.is_ok(), "a flip in the data was rejected: {r:?}");
        } else if let Err(e) = r {
            prop_assert!(e.contains(SOURCE), "{e}");
        }
    }

    /// A weight stored with any dtype other than F32/F64 is rejected, naming
    /// the tensor and the dtype.
    #[test]
    fn wrong_dtypes_are_rejected(
        dtype in prop::sample::select(vec![
            ("BOOL", 1), ("U8", 1), ("I8", 1), ("F8_E4M3", 1), ("F8_E5M2", 1),
            ("I16", 2), ("U16", 2), ("F16", 2), ("BF16", 2),
            ("I32", 4), ("U32", 4), ("I64", 8), ("U64", 8),
        ]),
    ) {
        let (name, width) = dtype;
        let mut m = small();
        let bytes = to_safetensors_bytes(&m).unwrap();
        // Rewrite `0.bias` (shape [3]) with the other dtype and a fitting size.
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut header = String::from("{");
        let mut data = Vec::new();
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        for (k, n) in names.iter().enumerate() {
            let v = st.tensor(n).unwrap();
            let (dt, raw) = if n == "0.bias" {
                (name.to_string(), vec![0u8; 3 * width])
            } else {
                (format!("{:?}", v.dtype()), v.data().to_vec())
            };
            let shape: Vec<String> = v.shape().iter().map(|d| d.to_string()).collect();
            header += &format!(
                "{}\"{n}\":{{\"dtype\":\"{dt}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                if k == 0 { "" } else { "," },
                shape.join(","),
                data.len(),
                data.len() + raw.len()
            );
            data.extend_from_slice(&raw);
        }
        header += "}";
        let e = load_safetensors_bytes(&mut m, &file(&header, &data), true, SOURCE)
            .unwrap_err()
            .to_string();
        prop_assert!(e.contains(SOURCE) && e.contains("0.bias") && e.contains(name), "{e}");
    }

    /// Offsets that run past the data section are rejected before anything
    /// is read, however far past they point.
    #[test]
    fn offsets_past_the_end_are_rejected(extra in 1usize..usize::MAX / 16) {
        let end = 24usize.saturating_add(extra);
        // Keep the dtype/shape consistent with the span so that only the end lies.
        let header = format!(
            r#"{{"0.weight":{{"dtype":"U8","shape":[{end}],"data_offsets":[0,{end}]}}}}"#
        );
        rejected(&file(&header, &[0u8; 24]), "data section holds 24 bytes")?;
    }

    /// Two tensors sharing bytes are rejected, naming both.
    #[test]
    fn overlapping_tensors_are_rejected(a in 1usize..16, shift in 0usize..16) {
        let shift = shift % a.max(1);
        // `first` covers [0, a); `second` starts inside it.
        let b = 4usize;
        let header = format!(
            r#"{{"first":{{"dtype":"U8","shape":[{a}],"data_offsets":[0,{a}]}},"second":{{"dtype":"U8","shape":[{b}],"data_offsets":[{shift},{}]}}}}"#,
            shift + b
        );
        let data = vec![0u8; a.max(shift + b)];
        let (r, _) = load(&file(&header, &data));
        let e = r.unwrap_err();
        prop_assert!(e.contains(SOURCE) && e.contains("overlaps"), "{e}");
        prop_assert!(e.contains("first") && e.contains("second"), "{e}");
    }

    /// Bytes that belong to no tensor (a gap, or trailing bytes) are rejected.
    #[test]
    fn gaps_and_trailing_bytes_are_rejected(gap in 1usize..32, trailing in prop::bool::ANY) {
        let header = if trailing {
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_string()
        } else {
            format!(
                r#"{{"a":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}},"b":{{"dtype":"F32","shape":[1],"data_offsets":[{},{}]}}}}"#,
                8 + gap,
                12 + gap
            )
        };
        let data = vec![0u8; if trailing { 8 + gap } else { 12 + gap }];
        rejected(&file(&header, &data), "belong to no tensor")?;
    }

    /// Shapes whose element count (or byte count) overflows `usize` are
    /// rejected without allocating anything of that size.
    #[test]
    fn overflowing_shapes_are_rejected(
        dims in prop::collection::vec(1usize << 20..usize::MAX, 4..8),
        dtype in prop::sample::select(vec!["U8", "F32", "F64"]),
    ) {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let header = format!(
            r#"{{"0.weight":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[0,24]}}}}"#,
            shape.join(",")
        );
        rejected(&file(&header, &[0u8; 24]), "overflows")?;
    }

    /// A shape whose size fits `usize` but not the span it claims (a lying
    /// 2^60-element tensor in a 24-byte file) is rejected without allocation.
    #[test]
    fn huge_shapes_in_tiny_files_are_rejected(log2 in 20u32..61) {
        let n = 1usize << log2;
        let header = format!(
            r#"{{"0.weight":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,24]}}}}"#
        );
        rejected(&file(&header, &[0u8; 24]), &format!("needs {n} bytes"))?;
    }

    /// A header length field larger than the file is rejected before any
    /// header-sized buffer exists.
    #[test]
    fn huge_header_lengths_are_rejected(n in 3u64..u64::MAX) {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        rejected(&b, "header length field says")?;
    }

    /// Random bytes (half of them with a plausible header length) are
    /// rejected and the message names the file.
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

/// The counting allocator sees large requests, so the bounds above mean
/// something.
#[test]
fn the_counting_allocator_sees_large_requests() {
    LARGEST.with(|c| c.set(0));
    let v = std::hint::black_box(Vec::<u8>::with_capacity(1 << 24));
    assert!(LARGEST.with(|c| c.get()) >= 1 << 24);
    drop(v);
}

/// Tensors whose offsets end near `usize::MAX` (safetensors' own
/// `read_metadata` overflows computing `end + 8 + header`, a panic in debug
/// builds): an error, checked before safetensors sees the file.
#[test]
fn offsets_ending_near_usize_max_are_rejected() {
    let size = (1usize << 61) - 1; // the largest U8 tensor whose bit count fits
    let mut header = String::from("{");
    for k in 0..8 {
        header += &format!(
            r#"{}"t{k}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
            if k == 0 { "" } else { "," },
            k * size,
            (k + 1) * size
        );
    }
    header += "}";
    let (r, largest) = load(&file(&header, &[0u8; 16]));
    let e = r.unwrap_err();
    assert!(
        e.contains(SOURCE) && e.contains("truncated or lying header"),
        "{e}"
    );
    assert!(largest < 1 << 20, "{largest}");
}

#[test]
fn the_path_is_named_when_loading_from_disk() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loader_props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("half.safetensors");
    let bytes = good();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let e = load_safetensors(&mut small(), &path, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("truncated"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn specific_lies_get_specific_messages() {
    let cases: [(&str, usize, &str); 6] = [
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            8,
            "end before they start",
        ),
        (
            r#"{"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "tensor `w`: unknown variant `F33`",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            8,
            "tensor `w`: invalid value",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2]}}"#,
            8,
            "missing field `data_offsets`",
        ),
        (
            r#"{"__metadata__":{"k":1}}"#,
            0,
            "`__metadata__` must map names to strings",
        ),
        (r#"[1, 2]"#, 0, "not a JSON object"),
    ];
    for (header, data, needle) in cases {
        let (r, _) = load(&file(header, &vec![0u8; data]));
        let e = r.unwrap_err();
        assert!(e.contains(SOURCE) && e.contains(needle), "{header}: {e}");
    }
    // Invalid UTF-8 in the header.
    let mut b = 4u64.to_le_bytes().to_vec();
    b.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    let (r, _) = load(&b);
    assert!(r.unwrap_err().contains("not UTF-8"));
    // And the untouched file loads.
    assert_eq!(load(&good()).0, Ok(()));
}
