//! Property tests of the quantisation-config JSON reader: every plan round
//! trips; truncated, bit-flipped, mistyped, deeply nested and random
//! documents are errors naming the file (and the field) — never a panic, and
//! never an allocation beyond a small multiple of the text (a counting
//! allocator records the largest single allocation on this thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use anneal_quant::{Calibration, LayerScheme, QuantConfig};
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

const SOURCE: &str = "plan.json";

fn calibration() -> impl Strategy<Value = Calibration> {
    prop_oneof![
        Just(Calibration::MinMax),
        Just(Calibration::MovingAverage),
        Just(Calibration::Mse),
        Just(Calibration::Entropy),
        (50.0f64..=100.0)
            .prop_filter("in (50, 100]", |p| *p > 50.0)
            .prop_map(Calibration::Percentile),
        (1e-6f64..1e6).prop_map(Calibration::MeanStd),
    ]
}

fn scheme() -> impl Strategy<Value = LayerScheme> {
    prop_oneof![
        Just(LayerScheme::Float),
        Just(LayerScheme::Int4WeightOnly),
        Just(LayerScheme::Int8WeightOnly),
        any::<bool>().prop_map(|per_channel| LayerScheme::DynamicInt8 { per_channel }),
        (any::<bool>(), calibration()).prop_map(|(per_channel, calibration)| {
            LayerScheme::Int8 {
                per_channel,
                calibration,
            }
        }),
    ]
}

fn config() -> impl Strategy<Value = QuantConfig> {
    (
        scheme(),
        prop::collection::btree_map("\\PC{0,12}", scheme(), 0..6),
    )
        .prop_map(|(default, overrides)| QuantConfig { default, overrides })
}

/// Parses `text`; a panic fails the test. Returns the result (errors as
/// text) and the largest single allocation made.
fn parse(text: &str) -> (Result<QuantConfig, String>, usize) {
    LARGEST.with(|c| c.set(0));
    let r = catch_unwind(AssertUnwindSafe(|| QuantConfig::from_json(text, SOURCE)))
        .expect("QuantConfig::from_json panicked");
    (r.map_err(|e| e.to_string()), LARGEST.with(|c| c.get()))
}

/// `text` is rejected with a message naming the file and holding `needle`,
/// within a small multiple of the text's length in any one allocation.
fn rejected(text: &str, needle: &str) -> Result<(), TestCaseError> {
    let (r, largest) = parse(text);
    let e = match r {
        Ok(c) => return Err(TestCaseError::fail(format!("parsed as {c:?}"))),
        Err(e) => e,
    };
    prop_assert!(
        e.contains(&format!("{SOURCE}: ")),
        "the file is not named: {e}"
    );
    prop_assert!(e.contains(needle), "{needle:?} missing from: {e}");
    prop_assert!(
        largest <= 64 * text.len() + (64 << 10),
        "allocated {largest} bytes for {} bytes of text ({e})",
        text.len()
    );
    Ok(())
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every plan survives `to_json` → `from_json` exactly.
    #[test]
    fn plans_round_trip(c in config()) {
        let (r, _) = parse(&c.to_json());
        prop_assert_eq!(r.unwrap(), c);
    }

    /// Every proper prefix of a plan is rejected as incomplete JSON.
    #[test]
    fn truncated_plans_are_rejected(c in config(), cut in 0.0f64..1.0) {
        let text = c.to_json();
        let mut len = (cut * text.len() as f64) as usize;
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        rejected(&text[..len], "document: not valid JSON")?;
    }

    /// A flipped bit gives an error naming the file, or (inside a layer
    /// name, say) another valid plan — never a panic.
    #[test]
    fn flipped_bits_never_panic(c in config(), pos in 0.0f64..1.0, bit in 0u32..8) {
        let mut bytes = c.to_json().into_bytes();
        let i = (pos * bytes.len() as f64) as usize;
        bytes[i] ^= 1 << bit;
        if let Ok(text) = String::from_utf8(bytes) {
            if let (Err(e), _) = parse(&text) {
                prop_assert!(e.contains(&format!("{SOURCE}: ")), "{e}");
            }
        }
    }

    /// A value of the wrong JSON type is rejected, naming the field.
    #[test]
    fn mistyped_fields_are_rejected(
        which in 0usize..6,
        value in prop::sample::select(vec!["1", "-1", "2.5", "null", "[]", "{}", "\"x\"", "true"]),
    ) {
        let (field, text) = match which {
            0 => ("version", format!(r#"{{"format":"anneal-quant-config","version":{value}}}"#)),
            1 => ("default", format!(r#"{{"format":"anneal-quant-config","version":1,"default":{value}}}"#)),
            2 => ("layers", format!(r#"{{"format":"anneal-quant-config","version":1,"layers":{value}}}"#)),
            3 => ("layers.a.scheme", format!(
                r#"{{"format":"anneal-quant-config","version":1,"layers":{{"a":{{"scheme":{value}}}}}}}"#
            )),
            4 => ("layers.a.per_channel", format!(
                r#"{{"format":"anneal-quant-config","version":1,"layers":{{"a":{{"scheme":"int8","per_channel":{value}}}}}}}"#
            )),
            _ => ("default.calibration", format!(
                r#"{{"format":"anneal-quant-config","version":1,"default":{{"scheme":"int8","calibration":{value}}}}}"#
            )),
        };
        // Values of the right type for the field are not lies.
        let fine = match which {
            0 => value == "1",
            1 | 2 => value == "{}" && which == 2,
            4 => value == "true",
            _ => false,
        };
        prop_assume!(!fine);
        rejected(&text, &format!("{SOURCE}: {field}"))?;
    }

    /// Calibration parameters out of range or not numbers are rejected.
    #[test]
    fn bad_calibration_parameters_are_rejected(
        name in prop::sample::select(vec!["percentile", "meanstd"]),
        v in prop::sample::select(vec![
            "0", "-1", "50", "100.5", "NaN", "inf", "-inf", "1e999", "", "x", "1:2",
        ]),
    ) {
        let ok = name == "meanstd" && matches!(v, "100.5" | "50");
        prop_assume!(!ok);
        let text = format!(
            r#"{{"format":"anneal-quant-config","version":1,"default":{{"scheme":"int8","calibration":"{name}:{v}"}}}}"#
        );
        rejected(&text, &format!("{SOURCE}: default.calibration: "))?;
    }

    /// Random text: an error naming the file, or a plan — never a panic.
    #[test]
    fn random_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        if let (Err(e), largest) = parse(&text) {
            prop_assert!(e.contains(&format!("{SOURCE}: ")), "{e}");
            prop_assert!(largest <= 64 * text.len() + (64 << 10));
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
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        let text = format!(
            r#"{{"format":"anneal-quant-config","version":1,"layers":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let (r, _) = parse(&text);
        let e = r.unwrap_err();
        assert!(e.contains("plan.json: document: not valid JSON"), "{e}");
    }
}

#[test]
fn a_missing_or_unreadable_file_is_named() {
    let dir = std::env::temp_dir().join(format!("anneal-quant-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nope.json");
    let e = QuantConfig::load_json(&path, &[]).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    std::fs::write(&path, b"{\"format\": \"anneal-quant-config\", \xff}").unwrap();
    let e = QuantConfig::load_json(&path, &[]).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    // Saving over it replaces it whole and leaves no temporary beside it.
    let plan = QuantConfig {
        default: LayerScheme::Float,
        overrides: BTreeMap::new(),
    };
    plan.save_json(&path).unwrap();
    assert_eq!(QuantConfig::load_json(&path, &[]).unwrap(), plan);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
