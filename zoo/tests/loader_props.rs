//! Property tests of the IDX and CSV readers against hostile files:
//! truncations, flipped bytes, unknown type codes, lying headers (extents
//! whose product overflows, extents far larger than the file), ragged or
//! non-numeric rows and random bytes. Each is an error naming the file and
//! the position at fault — never a panic, and for IDX never an allocation
//! sized by the header (a counting allocator records the largest single
//! allocation the reader makes on this thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anneal_zoo::data::{parse_csv, parse_idx, read_csv, read_idx, IdxArray};
use proptest::prelude::*;

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

const SOURCE: &str = "hostile.idx";

/// A fresh file path per call (tests run on several threads).
fn scratch_file(ext: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("zoo-loader_props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("f{}.{ext}", N.fetch_add(1, Ordering::Relaxed)))
}

/// IDX type codes with their element widths.
const TYPES: [(u8, usize); 6] = [
    (0x08, 1),
    (0x09, 1),
    (0x0B, 2),
    (0x0C, 4),
    (0x0D, 4),
    (0x0E, 8),
];

/// An IDX file: magic, big-endian extents, then `body`.
fn idx(code: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(body);
    b
}

/// Parses `bytes`; a panic fails the test. Returns the result as text and
/// the largest single allocation made.
fn parse(bytes: &[u8]) -> (Result<IdxArray, String>, usize) {
    LARGEST.with(|c| c.set(0));
    let r =
        catch_unwind(AssertUnwindSafe(|| parse_idx(bytes, SOURCE))).expect("parse_idx panicked");
    (r.map_err(|e| e.to_string()), LARGEST.with(|c| c.get()))
}

/// The IDX bytes are rejected with a message naming the file and holding
/// `needle`, and no single allocation exceeds a small multiple of the length.
fn rejected(bytes: &[u8], needle: &str) -> Result<(), TestCaseError> {
    let (r, largest) = parse(bytes);
    let e = match r {
        Ok(a) => return Err(TestCaseError::fail(format!("parsed as {:?}", a.shape))),
        Err(e) => e,
    };
    prop_assert!(e.starts_with(&format!("{SOURCE}: byte ")), "{e}");
    prop_assert!(e.contains(needle), "{needle:?} missing from: {e}");
    prop_assert!(
        largest <= 16 * bytes.len() + 4096,
        "allocated {largest} bytes for a {}-byte file ({e})",
        bytes.len()
    );
    Ok(())
}

/// A valid IDX file of any type and shape (at most 4 × 5 × 6 elements).
fn valid_idx() -> impl Strategy<Value = (u8, Vec<u32>, Vec<u8>)> {
    (
        prop::sample::select(TYPES.to_vec()),
        prop::collection::vec(0u32..6, 0..4),
    )
        .prop_flat_map(|((code, width), dims)| {
            let n = dims.iter().product::<u32>() as usize * width;
            (
                Just(code),
                Just(dims),
                prop::collection::vec(any::<u8>(), n..=n),
            )
        })
}

// ----------------------------------------------------------- IDX properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Valid files decode to the declared shape and the big-endian values.
    #[test]
    fn idx_valid_files_decode((code, dims, body) in valid_idx()) {
        let (r, _) = parse(&idx(code, &dims, &body));
        let a = r.unwrap();
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        prop_assert_eq!(&a.shape, &shape);
        let width = TYPES.iter().find(|t| t.0 == code).unwrap().1;
        prop_assert_eq!(a.data.len() * width, body.len());
        for (v, c) in a.data.iter().zip(body.chunks_exact(width)) {
            let want = match code {
                0x08 => c[0] as f64,
                0x09 => c[0] as i8 as f64,
                0x0B => i16::from_be_bytes([c[0], c[1]]) as f64,
                0x0C => i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64,
                0x0D => f32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64,
                _ => f64::from_be_bytes(c.try_into().unwrap()),
            };
            prop_assert_eq!(v.to_bits(), want.to_bits());
        }
    }

    /// Every proper prefix of a valid file is rejected, at the right place.
    #[test]
    fn idx_truncations_are_rejected((code, dims, body) in valid_idx(), cut in 0.0f64..1.0) {
        let bytes = idx(code, &dims, &body);
        let len = (cut * bytes.len() as f64) as usize;
        let needle = if len < 4 {
            "too short for the 4-byte magic"
        } else if len < 4 + 4 * dims.len() {
            "header needs"
        } else {
            "header promises"
        };
        rejected(&bytes[..len], needle)?;
    }

    /// Extra bytes after the data are rejected.
    #[test]
    fn idx_trailing_bytes_are_rejected(
        (code, dims, body) in valid_idx(),
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut bytes = idx(code, &dims, &body);
        bytes.extend_from_slice(&extra);
        rejected(&bytes, "header promises")?;
    }

    /// Unknown type codes and a non-zero magic are rejected.
    #[test]
    fn idx_bad_magic_is_rejected(code in any::<u8>(), zero in any::<[u8; 2]>()) {
        let bytes = idx(code, &[1], &[0; 8]);
        if !TYPES.iter().any(|t| t.0 == code) {
            rejected(&bytes, "unknown data type code")?;
        }
        if zero != [0, 0] {
            let mut b = bytes.clone();
            b[..2].copy_from_slice(&zero);
            rejected(&b, "magic starts")?;
        }
    }

    /// Extents whose product overflows, or far exceeds the file, are
    /// rejected without allocating anything of that size.
    #[test]
    fn idx_lying_extents_are_rejected(
        dims in prop::collection::vec(1u32 << 16..u32::MAX, 1..8),
        code in prop::sample::select(TYPES.to_vec()),
    ) {
        let bytes = idx(code.0, &dims, &[0u8; 64]);
        let product = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let needle = match product.and_then(|p| p.checked_mul(code.1 as u64)) {
            None => "overflows",
            Some(_) => "header promises",
        };
        rejected(&bytes, needle)?;
    }

    /// Flipped bits in the data change one value; anywhere else they give
    /// an error naming the file or another valid array — never a panic.
    #[test]
    fn idx_flipped_bits_never_panic(
        (code, dims, body) in valid_idx(),
        pos in 0.0f64..1.0,
        bit in 0u32..8,
    ) {
        let bytes = idx(code, &dims, &body);
        let i = (pos * bytes.len() as f64) as usize;
        let mut b = bytes.clone();
        b[i] ^= 1 << bit;
        let (r, _) = parse(&b);
        match r {
            Ok(a) => prop_assert_eq!(
                a.data.len() * TYPES.iter().find(|t| t.0 == b[2]).unwrap().1,
                b.len() - 4 - 4 * b[3] as usize
            ),
            Err(e) => prop_assert!(e.starts_with(SOURCE), "{e}"),
        }
        if i >= 4 + 4 * dims.len() {
            prop_assert!(parse(&b).0.is_ok());
        }
    }

    /// Random bytes: an error naming the file, or an array whose shape
    /// accounts for every byte.
    #[test]
    fn idx_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let (r, largest) = parse(&bytes);
        prop_assert!(largest <= 16 * bytes.len() + 4096);
        match r {
            Ok(a) => {
                let width = TYPES.iter().find(|t| t.0 == bytes[2]).unwrap().1;
                prop_assert_eq!(a.shape.iter().product::<usize>(), a.data.len());
                prop_assert_eq!(4 + 4 * a.shape.len() + width * a.data.len(), bytes.len());
            }
            Err(e) => prop_assert!(e.starts_with(SOURCE), "{e}"),
        }
    }
}

// ----------------------------------------------------------- CSV properties

/// A table of finite features and labels, `features` columns wide.
fn table() -> impl Strategy<Value = (usize, Vec<(Vec<f32>, usize)>)> {
    (0usize..5).prop_flat_map(|features| {
        let row = (
            prop::collection::vec(
                any::<f32>().prop_filter("finite", |v| v.is_finite()),
                features..=features,
            ),
            0usize..20,
        );
        (Just(features), prop::collection::vec(row, 1..12))
    })
}

fn to_text(rows: &[(Vec<f32>, usize)]) -> String {
    let mut s = String::new();
    for (x, l) in rows {
        for v in x {
            s += &format!("{v},");
        }
        s += &format!("{l}\n");
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Written tables read back exactly (Rust's float formatting round-trips).
    #[test]
    fn csv_round_trips((features, rows) in table()) {
        let (data, labels) = parse_csv(&to_text(&rows), features, "t.csv").unwrap();
        let want: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
        prop_assert_eq!(
            data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        prop_assert_eq!(labels, rows.iter().map(|r| r.1).collect::<Vec<_>>());
    }

    /// A file cut anywhere either parses to the complete rows before the cut
    /// (plus the cut row, if what is left of it still parses) or is an error
    /// naming the file and the cut line.
    #[test]
    fn csv_truncations_are_rejected_or_a_prefix((features, rows) in table(), cut in 0.0f64..1.0) {
        let text = to_text(&rows);
        let len = (cut * text.len() as f64) as usize;
        let cut_text = &text[..len];
        let complete = cut_text.matches('\n').count();
        match parse_csv(cut_text, features, "t.csv") {
            Ok((_, labels)) => {
                prop_assert!(labels.len() == complete || labels.len() == complete + 1);
                prop_assert_eq!(&labels[..complete], &rows[..complete].iter().map(|r| r.1).collect::<Vec<_>>()[..]);
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.starts_with(&format!("t.csv:{}: ", complete + 1)), "{e}");
            }
        }
    }

    /// A bad cell (non-numeric, non-finite, or a bad label) is reported with
    /// its line and column.
    #[test]
    fn csv_bad_cells_are_named(
        (features, rows) in table(),
        which in any::<prop::sample::Index>(),
        col in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec!["x", "", "NaN", "inf", "-inf", "1e39", "1..2", "0x10"]),
    ) {
        // An emptied label-only row is a blank line, which is skipped.
        prop_assume!(!(features == 0 && bad.is_empty()));
        let r = which.index(rows.len());
        let c = col.index(features + 1);
        let mut lines: Vec<String> = to_text(&rows).lines().map(String::from).collect();
        let mut cells: Vec<String> = lines[r].split(',').map(String::from).collect();
        cells[c] = bad.to_string();
        lines[r] = cells.join(",");
        let e = parse_csv(&lines.join("\n"), features, "t.csv").unwrap_err().to_string();
        prop_assert!(e.starts_with(&format!("t.csv:{}: ", r + 1)), "{e}");
        if c < features {
            prop_assert!(e.contains(&format!("column {}", c + 1)), "{e}");
        } else {
            prop_assert!(e.contains("label"), "{e}");
        }
    }

    /// A row with too many or too few cells is reported with its line.
    #[test]
    fn csv_ragged_rows_are_named(
        (features, rows) in table(),
        which in any::<prop::sample::Index>(),
        more in prop::bool::ANY,
    ) {
        let r = which.index(rows.len());
        let mut lines: Vec<String> = to_text(&rows).lines().map(String::from).collect();
        if more {
            lines[r] += ",1";
        } else if let Some(p) = lines[r].rfind(',') {
            lines[r].truncate(p);
        } else {
            lines[r] = format!("1,{}", lines[r]); // a label-only row: add a cell
        }
        let e = parse_csv(&lines.join("\n"), features, "t.csv").unwrap_err().to_string();
        prop_assert!(e.starts_with(&format!("t.csv:{}: expected {} comma-separated values", r + 1, features + 1)), "{e}");
    }

    /// Random bytes in a file: an error naming the file, or rows that fit.
    #[test]
    fn csv_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let path = scratch_file("csv");
        std::fs::write(&path, &bytes).unwrap();
        let r = catch_unwind(|| read_csv(&path, 2)).expect("read_csv panicked");
        std::fs::remove_file(&path).unwrap();
        match r {
            Ok(d) => prop_assert_eq!(d.inputs.shape(), &[d.len(), 2][..]),
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.starts_with(&path.display().to_string()), "{e}");
            }
        }
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

#[test]
fn files_on_disk_are_named() {
    let path = scratch_file("idx");
    std::fs::write(&path, idx(0x08, &[1 << 30, 1 << 30], &[1, 2, 3])).unwrap();
    let e = read_idx(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: byte 12: header promises", path.display())),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
    let e = read_idx(&path).unwrap_err().to_string();
    assert!(e.starts_with(&path.display().to_string()), "{e}");

    let path = scratch_file("csv");
    std::fs::write(&path, b"1,2,0\n3,4,1\n5,\xff,1\n").unwrap();
    let e = read_csv(&path, 2).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}:3: byte 14 is not UTF-8 text", path.display())
    );
    std::fs::write(&path, format!("1,{}\n", usize::MAX)).unwrap();
    let e = read_csv(&path, 1).unwrap_err().to_string();
    assert!(e.contains(":1: label") && e.contains("too large"), "{e}");
    std::fs::write(&path, b"\n\n").unwrap();
    let e = read_csv(&path, 2).unwrap_err().to_string();
    assert!(e.ends_with("no data rows"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn extreme_csv_arguments_are_errors() {
    // The class count (largest label + 1) must exist.
    let e = parse_csv(&format!("1,{}\n", usize::MAX), 1, "t.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("t.csv:1: label") && e.contains("too large"),
        "{e}"
    );
    let max_ok = usize::MAX - 1;
    let (_, labels) = parse_csv(&format!("1,{max_ok}\n"), 1, "t.csv").unwrap();
    assert_eq!(labels, [max_ok]);
    // A column count that cannot exist.
    let e = parse_csv("1,2\n", usize::MAX, "t.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("t.csv:") && e.contains("feature columns"),
        "{e}"
    );
}
