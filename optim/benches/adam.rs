//! One Adam step over 10M f32 parameters — as one parameter of 10M elements
//! and as 100 parameters of 100k — reported in bytes moved per second.
//!
//! Each step reads θ, g, m, v and writes θ, m, v: 7 × 4 B per element, so
//! criterion's throughput is 280 MB per step. `stream_reference` moves the
//! same seven streams with trivial arithmetic, split over the same threads,
//! as the machine's attainable bandwidth for this access pattern.
//!
//! `cargo bench -p anneal-optim --bench adam -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use anneal_autograd::{Gradients, Param};
use anneal_optim::{Adam, AdamConfig, Optimizer};
use anneal_tensor::Tensor;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;

const N: usize = 10_000_000;
const BYTES_PER_ELEMENT: u64 = 7 * 4;

fn params(count: usize, each: usize) -> (Vec<Param<f32>>, Gradients<f32>) {
    let mut ps = Vec::with_capacity(count);
    let mut grads = Gradients::new();
    for i in 0..count {
        let p = Param::new(Tensor::rand_uniform_seeded(&[each], -1.0f32, 1.0, i as u64).unwrap());
        let g = Tensor::rand_uniform_seeded(&[each], -1.0f32, 1.0, 1000 + i as u64).unwrap();
        grads.insert(p.id(), g);
        ps.push(p);
    }
    (ps, grads)
}

fn adam_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("adam_step_10M_f32");
    group.throughput(Throughput::Bytes(BYTES_PER_ELEMENT * N as u64));
    group.sample_size(10);

    for (name, count) in [("1x10M", 1usize), ("100x100k", 100)] {
        let (mut ps, grads) = params(count, N / count);
        let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
        {
            // The first step allocates the moments; measure steady state.
            let mut refs: Vec<&mut Param<f32>> = ps.iter_mut().collect();
            opt.step(&mut refs, &grads).unwrap();
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut refs: Vec<&mut Param<f32>> = ps.iter_mut().collect();
                opt.step(black_box(&mut refs), black_box(&grads)).unwrap();
            })
        });
    }

    // Seven streams (read p, g, m, v; write p, m, v) with trivial arithmetic,
    // chunked over rayon as the optimiser's loop is.
    let mut p = vec![0.5f32; N];
    let g = vec![0.25f32; N];
    let mut m = vec![0.0f32; N];
    let mut v = vec![0.0f32; N];
    group.bench_function("stream_reference", |b| {
        b.iter(|| {
            p.par_chunks_mut(1 << 14)
                .zip(g.par_chunks(1 << 14))
                .zip(m.par_chunks_mut(1 << 14))
                .zip(v.par_chunks_mut(1 << 14))
                .for_each(|(((p, g), m), v)| {
                    for i in 0..p.len() {
                        m[i] = m[i] * 0.5 + g[i];
                        v[i] = v[i] * 0.5 + g[i];
                        p[i] += m[i] * 1e-3 - v[i] * 1e-3;
                    }
                });
            black_box(&p);
        })
    });
    group.finish();
}

criterion_group!(benches, adam_step);
criterion_main!(benches);
