//! Any text given to the CSV reader (the first byte picks 0–7 feature
//! columns): an error naming the file and line, or finite features filling
//! `[rows, features]` with one label per row — never a panic.
#![no_main]

use anneal_zoo::data::parse_csv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&f, rest)) = data.split_first() else {
        return;
    };
    let features = (f % 8) as usize;
    let text = String::from_utf8_lossy(rest);
    match parse_csv(&text, features, "fuzz.csv") {
        Ok((x, labels)) => {
            assert_eq!(x.len(), labels.len() * features);
            assert!(x.iter().all(|v| v.is_finite()));
            assert!(labels.iter().all(|&l| l < usize::MAX));
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.csv:"), "{e}"),
    }
});
