//! Any text given to the quantisation-config reader: an error naming the
//! file, or a plan that survives `to_json` → `from_json` exactly — never a
//! panic.
#![no_main]

use anneal_quant::QuantConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match QuantConfig::from_json(&text, "fuzz.json") {
        Ok(c) => assert_eq!(QuantConfig::from_json(&c.to_json(), "again").unwrap(), c),
        Err(e) => assert!(e.to_string().contains("fuzz.json: "), "{e}"),
    }
});
