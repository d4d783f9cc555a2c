//! Any bytes given to the optimiser-state loader, as f32 and as f64 state:
//! an error, or a state that saves to a file loading back to the same state —
//! never a panic.
//!
//! The file's checksum would stop almost every mutation at the checksum
//! check, so when the first byte is odd the rest, if it parses as
//! safetensors at all, is re-sealed with a matching checksum first; that
//! lets the fuzzer reach the metadata, name, dtype and shape checks behind it.
#![no_main]

use std::collections::BTreeMap;

use anneal_optim::OptimizerState;
use anneal_tensor::Element;
use libfuzzer_sys::fuzz_target;
use safetensors::{Dtype, SafeTensors};

/// A tensor to re-serialise.
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

/// The file with its `checksum` metadata recomputed as the documented
/// format does (64-bit FNV-1a over length-prefixed metadata entries but
/// `checksum`, then each tensor's name, dtype, shape and bytes by name).
fn reseal(bytes: &[u8]) -> Option<Vec<u8>> {
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    let st = SafeTensors::deserialize(bytes).ok()?;
    let mut meta: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let tensors: BTreeMap<String, Raw> = st
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
    for (name, r) in &tensors {
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
    .ok()
}

fn check<T: Element>(bytes: &[u8]) {
    if let Ok(s) = OptimizerState::<T>::from_bytes(bytes) {
        let again = OptimizerState::<T>::from_bytes(&s.to_bytes().unwrap()).unwrap();
        assert!(again == s);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        check::<f32>(data);
        return;
    };
    let sealed;
    let bytes = if mode & 1 == 1 {
        match reseal(rest) {
            Some(b) => {
                sealed = b;
                &sealed[..]
            }
            None => rest,
        }
    } else {
        rest
    };
    check::<f32>(bytes);
    check::<f64>(bytes);
});
