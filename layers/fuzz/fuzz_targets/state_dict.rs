//! Any bytes given to the safetensors state-dict loader: an error naming the
//! source, or a load — never a panic, and a failed load leaves the model as
//! it was.
#![no_main]

use anneal_layers::{
    load_safetensors_bytes, state_dict, BatchNormConfig, LinearConfig, Sequential,
};
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn model() -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(13);
    Sequential::new()
        .push(LinearConfig::new(2, 3).init::<f32>(&mut rng).unwrap())
        .push(BatchNormConfig::new(3).init::<f32>().unwrap())
}

fuzz_target!(|data: &[u8]| {
    for strict in [true, false] {
        let mut m = model();
        let before = state_dict(&m);
        if let Err(e) = load_safetensors_bytes(&mut m, data, strict, "fuzz.safetensors") {
            assert!(e.to_string().contains("fuzz.safetensors"), "{e}");
            assert!(state_dict(&m) == before, "a failed load changed the model");
        }
    }
});
