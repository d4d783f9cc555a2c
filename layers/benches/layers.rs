//! LSTM and TransformerEncoderLayer forward and forward+backward, the
//! workloads of the README's benchmark table.

use std::hint::black_box;

use anneal_autograd::{no_grad, Var};
use anneal_layers::{LstmConfig, Module, TransformerLayerConfig};
use anneal_tensor::Tensor;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;

fn lstm(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let lstm = LstmConfig::new(64, 128).init::<f32>(&mut rng).unwrap();
    let x = Tensor::<f32>::randn_seeded(&[32, 50, 64], 1).unwrap();
    let mut g = c.benchmark_group("lstm in 64 hidden 128 seq 50 batch 32");
    g.sample_size(20);
    g.bench_function("forward", |b| {
        b.iter(|| no_grad(|| black_box(lstm.forward(&Var::constant(x.clone())).unwrap())))
    });
    g.bench_function("forward+backward", |b| {
        b.iter(|| {
            let xv = Var::leaf(x.clone());
            let y = lstm.forward(&xv).unwrap().sum_all().unwrap();
            black_box(y.backward().unwrap())
        })
    });
    g.finish();
}

fn transformer(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let layer = TransformerLayerConfig::new(128, 4)
        .with_dim_feedforward(512)
        .with_dropout(0.0)
        .init_encoder::<f32>(&mut rng)
        .unwrap();
    let x = Tensor::<f32>::randn_seeded(&[16, 64, 128], 1).unwrap();
    let mut g = c.benchmark_group("transformer encoder layer d128 h4 ffn512 seq 64 batch 16");
    g.sample_size(20);
    g.bench_function("forward", |b| {
        b.iter(|| no_grad(|| black_box(layer.forward(&Var::constant(x.clone())).unwrap())))
    });
    g.bench_function("forward+backward", |b| {
        b.iter(|| {
            let xv = Var::leaf(x.clone());
            let y = layer.forward(&xv).unwrap().sum_all().unwrap();
            black_box(y.backward().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, lstm, transformer);
criterion_main!(benches);
