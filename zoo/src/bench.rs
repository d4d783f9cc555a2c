//! `anneal bench`: the reference workloads of the README's speed table,
//! each timed at 1 and 2 threads (median and fastest of repeated runs).

use std::time::Instant;

use anneal_autograd::{no_grad, Var};
use anneal_layers::{
    cross_entropy, Conv2dConfig, CrossEntropyOptions, Flatten, LinearConfig, LstmConfig, MaxPool2d,
    Module, ModuleExt, Relu, Sequential, TransformerLayerConfig,
};
use anneal_optim::{Optimizer, Sgd, SgdConfig};
use anneal_quant::kernels::{linear_dynamic_int8, PackedWeightsI8};
use anneal_tensor::{Conv2dParams, Tensor};
use rand::SeedableRng;

use crate::{Error, Result};

/// One measured workload.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// What ran.
    pub workload: String,
    /// Rayon threads.
    pub threads: usize,
    /// Median seconds per call.
    pub median_s: f64,
    /// Fastest call in seconds: on a shared machine, the least disturbed by
    /// other load.
    pub min_s: f64,
    /// Throughput, with its unit.
    pub throughput: String,
}

/// Median and fastest seconds per call: one warm-up call, then at least
/// `min_reps` calls, continuing while under 0.5 s and 200 calls.
fn time_calls(min_reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?; // warm-up: caches, scratch buffers, thread pool
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_reps || (start.elapsed().as_secs_f64() < 0.5 && times.len() < 200) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0]))
}

/// One reference workload: its name, one call of it, and how to turn a
/// median time in seconds into a throughput string.
pub type Workload = (
    String,
    Box<dyn FnMut() -> Result<()>>,
    Box<dyn Fn(f64) -> String>,
);

fn gflops(flop: f64) -> Box<dyn Fn(f64) -> String> {
    Box::new(move |s| format!("{:.1} GFLOP/s", flop / s / 1e9))
}

fn per_second(n: f64, unit: &'static str) -> Box<dyn Fn(f64) -> String> {
    Box::new(move |s| format!("{:.0} {unit}/s", n / s))
}

/// Builds every reference workload of issue 8's table (fresh data, seeded).
pub fn workloads() -> Result<Vec<Workload>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut out: Vec<Workload> = Vec::new();

    let a = Tensor::<f32>::randn_seeded(&[1024, 1024], 1)?;
    let b = Tensor::<f32>::randn_seeded(&[1024, 1024], 2)?;
    out.push((
        "sgemm 1024³".into(),
        Box::new(move || a.matmul(&b).map(drop).map_err(Error::from)),
        gflops(2.0 * 1024f64.powi(3)),
    ));

    let x = Tensor::<f32>::randn_seeded(&[32, 32, 28, 28], 3)?;
    let w = Tensor::<f32>::randn_seeded(&[64, 32, 3, 3], 4)?;
    let p = Conv2dParams::new(1, 1);
    let conv_flop = 2.0 * 32.0 * 64.0 * 32.0 * 9.0 * 784.0;
    let (x1, w1) = (x.clone(), w.clone());
    out.push((
        "conv2d fwd N32 C32→64 28×28 3×3".into(),
        Box::new(move || x1.conv2d(&w1, None, p).map(drop).map_err(Error::from)),
        gflops(conv_flop),
    ));
    out.push((
        "conv2d fwd+bwd, same".into(),
        Box::new(move || {
            let xv = Var::leaf(x.clone());
            let wv = Var::leaf(w.clone());
            xv.conv2d(&wv, None, p)?.sum_all()?.backward()?;
            Ok(())
        }),
        gflops(3.0 * conv_flop),
    ));

    let mut mlp = Sequential::new()
        .push(LinearConfig::new(784, 512).init::<f32>(&mut rng)?)
        .push(Relu)
        .push(LinearConfig::new(512, 512).init::<f32>(&mut rng)?)
        .push(Relu)
        .push(LinearConfig::new(512, 10).init::<f32>(&mut rng)?);
    let xm = Tensor::<f32>::randn_seeded(&[128, 784], 5)?;
    let tm = Tensor::from_vec((0..128).map(|i| i % 10).collect(), &[128])?;
    let mut sgd = Sgd::new(SgdConfig::new(0.01))?;
    out.push((
        "MLP 784-512-512-10 b128 train step".into(),
        Box::new(move || {
            let loss = cross_entropy(
                &mlp.forward_train(&Var::constant(xm.clone()))?,
                &tm,
                &CrossEntropyOptions::default(),
            )?;
            let g = loss.backward()?;
            sgd.step(&mut mlp.parameters_mut(), &g)?;
            Ok(())
        }),
        per_second(128.0, "samples"),
    ));

    let mut cnn = Sequential::new()
        .push(
            Conv2dConfig::new(1, 32, 3)
                .with_padding(1)
                .init::<f32>(&mut rng)?,
        )
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(
            Conv2dConfig::new(32, 64, 3)
                .with_padding(1)
                .init::<f32>(&mut rng)?,
        )
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(Flatten::default())
        .push(LinearConfig::new(3136, 128).init::<f32>(&mut rng)?)
        .push(Relu)
        .push(LinearConfig::new(128, 10).init::<f32>(&mut rng)?);
    let xc = Tensor::<f32>::randn_seeded(&[64, 1, 28, 28], 6)?;
    let tc = Tensor::from_vec((0..64).map(|i| i % 10).collect(), &[64])?;
    let mut sgd2 = Sgd::new(SgdConfig::new(0.01))?;
    out.push((
        "CNN 28×28 b64 train step".into(),
        Box::new(move || {
            let loss = cross_entropy(
                &cnn.forward_train(&Var::constant(xc.clone()))?,
                &tc,
                &CrossEntropyOptions::default(),
            )?;
            let g = loss.backward()?;
            sgd2.step(&mut cnn.parameters_mut(), &g)?;
            Ok(())
        }),
        per_second(64.0, "samples"),
    ));

    let lstm = LstmConfig::new(64, 128).init::<f32>(&mut rng)?;
    let xl = Tensor::<f32>::randn_seeded(&[32, 50, 64], 7)?;
    let (lstm2, xl2) = (lstm.clone(), xl.clone());
    out.push((
        "LSTM in64 h128 seq50 b32 fwd".into(),
        Box::new(move || {
            no_grad(|| lstm.forward(&Var::constant(xl.clone())).map(drop)).map_err(Error::from)
        }),
        per_second(32.0, "sequences"),
    ));
    out.push((
        "LSTM in64 h128 seq50 b32 fwd+bwd".into(),
        Box::new(move || {
            lstm2
                .forward(&Var::leaf(xl2.clone()))?
                .sum_all()?
                .backward()?;
            Ok(())
        }),
        per_second(32.0, "sequences"),
    ));

    let enc = TransformerLayerConfig::new(128, 4)
        .with_dim_feedforward(512)
        .with_dropout(0.0)
        .init_encoder::<f32>(&mut rng)?;
    let xt = Tensor::<f32>::randn_seeded(&[16, 64, 128], 8)?;
    let (enc2, xt2) = (enc.clone(), xt.clone());
    out.push((
        "Transformer layer d128 h4 ffn512 seq64 b16 fwd".into(),
        Box::new(move || {
            no_grad(|| enc.forward(&Var::constant(xt.clone())).map(drop)).map_err(Error::from)
        }),
        per_second(16.0, "sequences"),
    ));
    out.push((
        "Transformer layer … fwd+bwd".into(),
        Box::new(move || {
            enc2.forward(&Var::leaf(xt2.clone()))?
                .sum_all()?
                .backward()?;
            Ok(())
        }),
        per_second(16.0, "sequences"),
    ));

    let wl = Tensor::<f32>::randn_seeded(&[1024, 1024], 9)?.mul_scalar(0.03);
    let xq = Tensor::<f32>::randn_seeded(&[64, 1024], 10)?;
    let (packed, scales) = PackedWeightsI8::from_f32_per_channel(wl.as_slice(), 1024, 1024)?;
    let (wl2, xq2) = (wl.clone(), xq.clone());
    let lin_flop = 2.0 * 64.0 * 1024.0 * 1024.0;
    out.push((
        "Linear 1024→1024 b64 f32".into(),
        Box::new(move || xq2.linear(&wl2, None).map(drop).map_err(Error::from)),
        gflops(lin_flop),
    ));
    let mut y = vec![0f32; 64 * 1024];
    out.push((
        "Linear 1024→1024 b64 dynamic int8".into(),
        Box::new(move || {
            linear_dynamic_int8(xq.as_slice(), &packed, &scales, None, &mut y).map_err(Error::from)
        }),
        Box::new(move |s| format!("{:.1} GOP/s", lin_flop / s / 1e9)),
    ));
    Ok(out)
}

/// Runs every workload at each thread count (1 to 256; anything else is an
/// error).
pub fn run_benchmarks(threads: &[usize]) -> Result<Vec<BenchResult>> {
    // rayon reads 0 as "the default", and thousands of threads only thrash.
    if let Some(&t) = threads.iter().find(|&&t| t == 0 || t > 256) {
        return Err(Error::Invalid(format!(
            "run_benchmarks: {t} threads; use 1 to 256"
        )));
    }
    let mut results = Vec::new();
    for &t in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
        let rows = pool.install(|| -> Result<Vec<BenchResult>> {
            let mut rows = Vec::new();
            for (name, mut f, tput) in workloads()? {
                let (m, fastest) = time_calls(5, &mut f)?;
                rows.push(BenchResult {
                    workload: name,
                    threads: t,
                    median_s: m,
                    min_s: fastest,
                    throughput: tput(m),
                });
            }
            Ok(rows)
        })?;
        results.extend(rows);
    }
    Ok(results)
}
