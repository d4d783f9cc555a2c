//! Criterion benchmarks of the integer kernels against anneal's f32 GEMM.
//!
//! Run with
//! `cargo bench -p anneal-quant --bench int8_gemm -- --warm-up-time 1 --measurement-time 3`.
//! Throughput is in "elements" = operations (2 per multiply-add), so
//! criterion's `Gelem/s` reads as GOP/s.

use std::hint::black_box;

use anneal_quant::kernels::*;
use anneal_tensor::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn f32_data(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let t = Tensor::<f32>::randn_seeded(&[len], seed).unwrap();
    t.to_vec().into_iter().map(|v| v * scale).collect()
}

/// `[M, K] × [N, K]ᵀ`, 1024×1024 weights, batch 64.
fn gemm_batch64(c: &mut Criterion) {
    let (m, n, k) = (64usize, 1024usize, 1024usize);
    let mut g = c.benchmark_group("gemm 64x1024x1024");
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    let x = Tensor::from_vec(f32_data(m * k, 1, 1.0), &[m, k]).unwrap();
    let wf = f32_data(n * k, 2, 0.03);
    let w = Tensor::from_vec(wf.clone(), &[n, k]).unwrap();
    let wt = w.transpose(0, 1).unwrap();
    g.bench_function("f32 Tensor::matmul", |b| {
        b.iter(|| black_box(x.matmul(&wt).unwrap()))
    });
    g.bench_function("f32 Tensor::linear", |b| {
        b.iter(|| black_box(x.linear(&w, None).unwrap()))
    });
    let (packed, ws) = PackedWeightsI8::from_f32_per_channel(&wf, n, k).unwrap();
    let (a, qp) = quantize_activations_u8(x.as_slice()).unwrap();
    let mut acc = vec![0i32; m * n];
    g.bench_function("int8 gemm_u8i8_i32", |b| {
        b.iter(|| gemm_u8i8_i32(black_box(&a), &packed, &mut acc).unwrap())
    });
    let rq = Requant {
        input: qp,
        w_scales: &ws,
        bias: None,
    };
    let mut y = vec![0f32; m * n];
    g.bench_function("int8 gemm_u8i8_f32 (fused requant)", |b| {
        b.iter(|| gemm_u8i8_f32(black_box(&a), &packed, &rq, &mut y).unwrap())
    });
    g.finish();

    // Every kernel path on the same problem (the slow ones with few samples).
    let mut g = c.benchmark_group("gemm paths 64x1024x1024");
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    g.sample_size(10);
    for path in KernelPath::all_available() {
        g.bench_function(
            BenchmarkId::new("gemm_u8i8_i32", format!("{path:?}")),
            |b| b.iter(|| gemm_u8i8_i32_with(path, black_box(&a), &packed, &mut acc).unwrap()),
        );
    }
    g.finish();
}

/// Quantise + GEMM + requantise vs f32 `Tensor::linear`, 1024 → 1024.
fn linear_batch64(c: &mut Criterion) {
    let (m, n, k) = (64usize, 1024usize, 1024usize);
    let mut g = c.benchmark_group("linear 1024->1024 b64");
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    let xs = f32_data(m * k, 3, 1.0);
    let x = Tensor::from_vec(xs.clone(), &[m, k]).unwrap();
    let wf = f32_data(n * k, 4, 0.03);
    let w = Tensor::from_vec(wf.clone(), &[n, k]).unwrap();
    let bias = f32_data(n, 5, 0.1);
    let bt = Tensor::from_vec(bias.clone(), &[n]).unwrap();
    g.bench_function("f32 Tensor::linear", |b| {
        b.iter(|| black_box(x.linear(&w, Some(&bt)).unwrap()))
    });
    let (packed, ws) = PackedWeightsI8::from_f32_per_channel(&wf, n, k).unwrap();
    let mut y = vec![0f32; m * n];
    g.bench_function("int8 linear_dynamic_int8", |b| {
        b.iter(|| linear_dynamic_int8(black_box(&xs), &packed, &ws, Some(&bias), &mut y).unwrap())
    });
    g.finish();
}

/// 4096×4096 weights at batch 1: f32, int8, Q8_0, Q4_0.
fn matvec_batch1(c: &mut Criterion) {
    let (n, k) = (4096usize, 4096usize);
    let mut g = c.benchmark_group("matvec 4096x4096 b1");
    g.throughput(Throughput::Elements((2 * n * k) as u64));
    let xs = f32_data(k, 6, 1.0);
    let x = Tensor::from_vec(xs.clone(), &[1, k]).unwrap();
    let wf = f32_data(n * k, 7, 0.02);
    let w = Tensor::from_vec(wf.clone(), &[n, k]).unwrap();
    g.sample_size(20);
    g.bench_function("f32 Tensor::linear", |b| {
        b.iter(|| black_box(x.linear(&w, None).unwrap()))
    });
    let xv = Tensor::from_vec(xs.clone(), &[k]).unwrap();
    g.bench_function("f32 Tensor::matmul (W·x)", |b| {
        b.iter(|| black_box(w.matmul(&xv).unwrap()))
    });
    let (packed, ws) = PackedWeightsI8::from_f32_per_channel(&wf, n, k).unwrap();
    let (a, _) = quantize_activations_u8(&xs).unwrap();
    let mut acc = vec![0i32; n];
    g.bench_function("int8 gemm_u8i8_i32", |b| {
        b.iter(|| gemm_u8i8_i32(black_box(&a), &packed, &mut acc).unwrap())
    });
    let mut y = vec![0f32; n];
    g.bench_function("int8 linear_dynamic_int8", |b| {
        b.iter(|| linear_dynamic_int8(black_box(&xs), &packed, &ws, None, &mut y).unwrap())
    });
    let q8 = Q8Matrix::quantize(&wf, n, k).unwrap();
    g.bench_function("Q8_0 matvec_q8_0", |b| {
        b.iter(|| matvec_q8_0(black_box(&xs), &q8, &mut y).unwrap())
    });
    let q4 = Q4Matrix::quantize(&wf, n, k).unwrap();
    g.bench_function("Q4_0 matvec_q4_0", |b| {
        b.iter(|| matvec_q4_0(black_box(&xs), &q4, &mut y).unwrap())
    });
    g.finish();
}

/// Q4_0 at batch 64, 4096×4096, vs f32 `Tensor::linear`.
fn blocks_batch64(c: &mut Criterion) {
    let (m, n, k) = (64usize, 4096usize, 4096usize);
    let mut g = c.benchmark_group("block matmul 64x4096x4096");
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    g.sample_size(10);
    let xs = f32_data(m * k, 8, 1.0);
    let x = Tensor::from_vec(xs.clone(), &[m, k]).unwrap();
    let wf = f32_data(n * k, 9, 0.02);
    let w = Tensor::from_vec(wf.clone(), &[n, k]).unwrap();
    g.bench_function("f32 Tensor::linear", |b| {
        b.iter(|| black_box(x.linear(&w, None).unwrap()))
    });
    let mut y = vec![0f32; m * n];
    let q4 = Q4Matrix::quantize(&wf, n, k).unwrap();
    g.bench_function("Q4_0 matmul_q4_0", |b| {
        b.iter(|| matmul_q4_0(black_box(&xs), &q4, &mut y).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    gemm_batch64,
    linear_batch64,
    matvec_batch1,
    blocks_batch64
);
criterion_main!(benches);
