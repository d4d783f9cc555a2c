//! Any bytes given to the IDX reader: an error naming the file and a byte
//! offset, or an array whose shape and element width account for every
//! byte — never a panic.
#![no_main]

use anneal_zoo::data::parse_idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| match parse_idx(data, "fuzz.idx") {
    Ok(a) => {
        let width = match data[2] {
            0x08 | 0x09 => 1,
            0x0B => 2,
            0x0C | 0x0D => 4,
            _ => 8,
        };
        assert_eq!(a.shape.len(), data[3] as usize);
        assert_eq!(a.shape.iter().product::<usize>(), a.data.len());
        assert_eq!(4 + 4 * a.shape.len() + width * a.data.len(), data.len());
    }
    Err(e) => assert!(e.to_string().starts_with("fuzz.idx: byte "), "{e}"),
});
