//! Criterion benchmarks of the tensor kernels named in the README table.
//!
//! Run with `cargo bench -p anneal-tensor`; set the thread count with
//! `RAYON_NUM_THREADS=1` (or 2).

use std::hint::black_box;

use anneal_tensor::{Conv2dParams, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn sgemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("sgemm");
    for n in [256usize, 512, 1024, 2048] {
        let a = Tensor::<f32>::randn_seeded(&[n, n], 1).unwrap();
        let b = Tensor::<f32>::randn_seeded(&[n, n], 2).unwrap();
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        if n >= 1024 {
            g.sample_size(10);
        }
        g.bench_function(format!("n={n}"), |bch| {
            bch.iter(|| black_box(a.matmul(&b).unwrap()))
        });
    }
    g.finish();
}

fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    let x = Tensor::<f32>::randn_seeded(&[32, 32, 28, 28], 1).unwrap();
    let w = Tensor::<f32>::randn_seeded(&[64, 32, 3, 3], 2).unwrap();
    let p = Conv2dParams::new(1, 1);
    let flops = 2 * 32 * 64 * 32 * 9 * 28 * 28;
    g.throughput(Throughput::Elements(flops as u64));
    g.sample_size(20);
    g.bench_function("fwd N32 C32-64 28x28 k3 p1", |b| {
        b.iter(|| black_box(x.conv2d(&w, None, p).unwrap()))
    });
    let dy = x.conv2d(&w, None, p).unwrap();
    g.bench_function("input_grad N32 C32-64 28x28 k3 p1", |b| {
        b.iter(|| black_box(dy.conv2d_input_grad(&w, x.shape(), p).unwrap()))
    });
    g.bench_function("weight_grad N32 C32-64 28x28 k3 p1", |b| {
        b.iter(|| black_box(dy.conv2d_weight_grad(&x, w.shape(), p).unwrap()))
    });
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    let n = 4 * 1024 * 1024;
    let a = Tensor::<f32>::randn_seeded(&[2048, 2048], 1).unwrap();
    let b = Tensor::<f32>::randn_seeded(&[2048, 2048], 2).unwrap();
    let row = Tensor::<f32>::randn_seeded(&[2048], 3).unwrap();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("add 4M same shape", |bch| {
        bch.iter(|| black_box(a.add(&b).unwrap()))
    });
    g.bench_function("add 4M broadcast row", |bch| {
        bch.iter(|| black_box(a.add(&row).unwrap()))
    });
    g.finish();
}

fn softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("softmax");
    let x = Tensor::<f32>::randn_seeded(&[4096, 1024], 1).unwrap();
    g.throughput(Throughput::Elements((4096 * 1024) as u64));
    g.bench_function("[4096, 1024] axis -1", |b| {
        b.iter(|| black_box(x.softmax(-1).unwrap()))
    });
    g.finish();
}

fn pooling(c: &mut Criterion) {
    let mut g = c.benchmark_group("max_pool2d");
    let x = Tensor::<f32>::randn_seeded(&[64, 32, 28, 28], 1).unwrap();
    let p = anneal_tensor::Pool2dParams::new(2);
    g.bench_function("2x2 [64, 32, 28, 28]", |b| {
        b.iter(|| black_box(x.max_pool2d(p).unwrap()))
    });
    let (y, idx) = x.max_pool2d(p).unwrap();
    g.bench_function("2x2 backward [64, 32, 28, 28]", |b| {
        b.iter(|| black_box(y.max_pool2d_backward(&idx, x.shape()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, sgemm, conv, elementwise, softmax, pooling);
criterion_main!(benches);
