//! Peak memory of one training step, measured with a counting allocator:
//! it must stay within parameters + gradients + optimiser state +
//! activations, plus a stated margin (issue 8).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use anneal_autograd::Var;
use anneal_layers::{
    cross_entropy, CrossEntropyOptions, LinearConfig, Module, ModuleExt, Relu, Sequential,
};
use anneal_optim::{Adam, AdamConfig, Optimizer};
use anneal_tensor::Tensor;
use rand::SeedableRng;

/// Counts live heap bytes and remembers the high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only adding bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn mlp_training_step_peak_memory_is_bounded() {
    const BATCH: usize = 128;
    let widths = [784usize, 512, 512, 10];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut model = Sequential::new();
    for (i, pair) in widths.windows(2).enumerate() {
        model = model.push(
            LinearConfig::new(pair[0], pair[1])
                .init::<f32>(&mut rng)
                .unwrap(),
        );
        if i + 2 < widths.len() {
            model = model.push(Relu);
        }
    }
    let x = Tensor::<f32>::randn_seeded(&[BATCH, 784], 1).unwrap();
    let t = Tensor::from_vec((0..BATCH).map(|i| i % 10).collect(), &[BATCH]).unwrap();
    let mut adam = Adam::new(AdamConfig::new(1e-3)).unwrap();
    let mut step = |model: &mut Sequential<f32>| {
        let logits = model.forward_train(&Var::constant(x.clone())).unwrap();
        let loss = cross_entropy(&logits, &t, &CrossEntropyOptions::default()).unwrap();
        let grads = loss.backward().unwrap();
        adam.step(&mut model.parameters_mut(), &grads).unwrap();
    };
    // The first step allocates Adam's moments and the per-thread GEMM packing
    // buffers; measure a steady-state step.
    step(&mut model);
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    step(&mut model);
    let peak_extra = PEAK.load(Ordering::SeqCst) - before;

    let f32s = std::mem::size_of::<f32>();
    let params = model.num_parameters() * f32s;
    let gradients = params;
    let optimiser_state = 2 * params; // Adam's first and second moments
                                      // Saved for backward per Linear + ReLU: the layer input, its output and
                                      // the ReLU output; plus logits, their softmax and the loss gradient.
    let activations = widths
        .windows(2)
        .map(|p| BATCH * (p[0] + 2 * p[1]))
        .sum::<usize>()
        * f32s
        + 3 * BATCH * 10 * f32s;
    // Stated margin: half the activations again for transient buffers
    // (gradient accumulation, softmax temporaries) plus 2 MiB for GEMM
    // packing buffers and graph bookkeeping.
    let margin = activations / 2 + (2 << 20);
    let input = 2 * BATCH * 784 * f32s; // the batch and its targets, generously
    let total_peak = PEAK.load(Ordering::SeqCst);
    eprintln!(
        "live at step start {before} B, step peak {peak_extra} B above it, total peak {total_peak} B; \
         parameters {params} B, activations {activations} B, margin {margin} B"
    );
    assert!(
        peak_extra <= gradients + activations + margin,
        "a step's peak {peak_extra} B above its start exceeds gradients {gradients} B + \
         activations {activations} B + margin {margin} B"
    );
    assert!(
        total_peak <= params + optimiser_state + gradients + activations + margin + input,
        "total peak {total_peak} B exceeds parameters + optimiser state + gradients + \
         activations + margin"
    );
}
