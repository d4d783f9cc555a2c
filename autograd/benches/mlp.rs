//! Forward and forward+backward of an MLP 784-512-512-10 at batch 128, plus
//! the same backward written directly against the tensor kernels, so the
//! graph's bookkeeping cost can be read off as the difference.

use std::hint::black_box;

use anneal_autograd::{Param, Var};
use anneal_tensor::Tensor;
use criterion::{criterion_group, criterion_main, Criterion};

struct Mlp {
    w: Vec<Param>,
    b: Vec<Param>,
}

fn mlp() -> Mlp {
    let dims = [784, 512, 512, 10];
    let mut w = Vec::new();
    let mut b = Vec::new();
    for (i, win) in dims.windows(2).enumerate() {
        let bound = 1.0 / (win[0] as f32).sqrt();
        w.push(Param::new(
            Tensor::rand_uniform_seeded(&[win[1], win[0]], -bound, bound, i as u64).unwrap(),
        ));
        b.push(Param::new(Tensor::zeros(&[win[1]]).unwrap()));
    }
    Mlp { w, b }
}

fn forward(m: &Mlp, x: &Var, targets: &Tensor<usize>) -> Var {
    let mut h = x.clone();
    for i in 0..3 {
        h = h.linear(&m.w[i].var(), Some(&m.b[i].var())).unwrap();
        if i < 2 {
            h = h.relu();
        }
    }
    let logp = h.log_softmax(-1).unwrap();
    logp.gather(1, targets).unwrap().mean_all().unwrap().neg()
}

/// The same forward and backward with tensor kernels only.
fn manual(m: &Mlp, x: &Tensor, targets: &Tensor<usize>) -> Vec<Tensor> {
    let (w, b) = (&m.w, &m.b);
    let z1 = x.linear(w[0].value(), Some(b[0].value())).unwrap();
    let h1 = z1.relu();
    let z2 = h1.linear(w[1].value(), Some(b[1].value())).unwrap();
    let h2 = z2.relu();
    let z3 = h2.linear(w[2].value(), Some(b[2].value())).unwrap();
    let logp = z3.log_softmax(-1).unwrap();
    let n = x.shape()[0];
    // d loss / d logp = −1/n at the targets; through log_softmax: g − softmax·Σg.
    let g = Tensor::zeros(logp.shape())
        .unwrap()
        .scatter_add(
            1,
            targets,
            &Tensor::full(targets.shape(), -1.0 / n as f32).unwrap(),
        )
        .unwrap();
    let s = g.sum_axes(&[1], true).unwrap();
    let dz3 = g.sub(&logp.exp().mul(&s).unwrap()).unwrap();
    let dw3 = dz3.matmul_t(&h2, true, false).unwrap();
    let db3 = dz3.sum_axes(&[0], false).unwrap();
    let dh2 = dz3.matmul(w[2].value()).unwrap();
    let dz2 = dh2
        .zip_with(&z2, "relu", |g, z| if z > 0.0 { g } else { 0.0 })
        .unwrap();
    let dw2 = dz2.matmul_t(&h1, true, false).unwrap();
    let db2 = dz2.sum_axes(&[0], false).unwrap();
    let dh1 = dz2.matmul(w[1].value()).unwrap();
    let dz1 = dh1
        .zip_with(&z1, "relu", |g, z| if z > 0.0 { g } else { 0.0 })
        .unwrap();
    let dw1 = dz1.matmul_t(x, true, false).unwrap();
    let db1 = dz1.sum_axes(&[0], false).unwrap();
    vec![dw1, db1, dw2, db2, dw3, db3]
}

fn bench(c: &mut Criterion) {
    let m = mlp();
    let x = Tensor::<f32>::randn_seeded(&[128, 784], 9).unwrap();
    let t = Tensor::from_vec((0..128).map(|i| i % 10).collect(), &[128, 1]).unwrap();
    let xv = Var::constant(x.clone());
    let mut g = c.benchmark_group("mlp 784-512-512-10 batch 128");
    g.bench_function("forward", |b| b.iter(|| black_box(forward(&m, &xv, &t))));
    g.bench_function("forward+backward (autograd)", |b| {
        b.iter(|| black_box(forward(&m, &xv, &t).backward().unwrap()))
    });
    g.bench_function("forward+backward (tensor kernels only)", |b| {
        b.iter(|| black_box(manual(&m, &x, &t)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
