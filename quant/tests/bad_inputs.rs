//! Bad-input sweep of the quant crate: schemes, parameters, quantised
//! tensors, observers, the int8 and block kernels, quantised layers and the
//! PTQ/QAT flows meet empty, mismatched, NaN/±∞, out-of-range and huge
//! inputs. Each call returns a typed error naming its op or a documented
//! value (out-of-range values saturate; NaN quantises to the zero point);
//! none panics, aborts or hangs.

use anneal_autograd::Var;
use anneal_layers::{Conv2dConfig, LinearConfig, Module, Relu, Sequential};
use anneal_quant::kernels::*;
use anneal_quant::*;
use anneal_tensor::{Result, Tensor};
use rand::SeedableRng;

#[path = "../../tensor/tests/support/sweep.rs"]
mod sweep;
use sweep::Sweep;

const SPECIAL: &[f32] = &[
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1e30,
    -1e-30,
    3.5,
    f32::MAX,
    -7.25,
];

fn special(shape: &[usize]) -> Tensor<f32> {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| SPECIAL[i % SPECIAL.len()]).collect(), shape).unwrap()
}

fn finite(shape: &[usize]) -> Tensor<f32> {
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect(),
        shape,
    )
    .unwrap()
}

const F: &[f32] = &[
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -1.0,
    1e-45,
    1e30,
    f32::MAX,
    0.5,
];
const I: &[i32] = &[i32::MIN, -129, -128, -1, 0, 1, 127, 128, 255, 256, i32::MAX];
const DTYPES: [QDType; 4] = [QDType::U8, QDType::I8, QDType::U4, QDType::I4];

fn schemes() -> Vec<QScheme> {
    let mut v = Vec::new();
    for d in DTYPES {
        v.push(QScheme::per_tensor_affine(d));
        v.push(QScheme::per_tensor_symmetric(d));
        for axis in [0, 1, 5, usize::MAX] {
            v.push(QScheme::per_channel_affine(d, axis));
            v.push(QScheme::per_channel_symmetric(d, axis));
        }
    }
    v
}

#[test]
fn schemes_parameters_and_quantised_tensors() {
    let mut s = Sweep::default();
    for scheme in schemes() {
        for &lo in I {
            for &hi in I {
                s.fallible(
                    || format!("{scheme:?} range {lo} {hi}"),
                    || scheme.with_range(lo, hi),
                );
            }
        }
        s.fallible(
            || format!("{scheme:?} reduce"),
            || scheme.with_reduce_range(),
        );
        for (min, max) in [
            (vec![], vec![]),
            (vec![-1.0], vec![1.0]),
            (vec![1.0], vec![-1.0]),
            (vec![0.0, 0.0], vec![0.0]),
            (vec![f32::NAN], vec![1.0]),
            (vec![f32::NEG_INFINITY], vec![f32::INFINITY]),
            (vec![-f32::MAX], vec![f32::MAX]),
            (vec![0.0; 3], vec![1e-45; 3]),
        ] {
            let w = || format!("{scheme:?} qparams_from_range {min:?} {max:?}");
            if let Some(Ok(p)) = s.fallible(w, || scheme.qparams_from_range(&min, &max)) {
                if p.scales().iter().any(|&x| !(x.is_finite() && x > 0.0)) {
                    s.bad_errors
                        .push(format!("{}: scale {:?}", w(), p.scales()));
                }
            }
        }
        let mut params = Vec::new();
        for &scale in F {
            for &zp in I {
                let w = || format!("per_tensor {scale} {zp}");
                if let Some(Ok(p)) = s.fallible(w, || QParams::per_tensor(scale, zp)) {
                    params.push(p);
                }
            }
        }
        for (scales, zps, axis) in [
            (vec![], vec![], 0),
            (vec![1.0], vec![0, 0], 0),
            (vec![1.0, 0.5], vec![0, 1], 1),
            (vec![1.0, f32::NAN], vec![0, 1], 0),
            (vec![1.0, 2.0, 3.0], vec![0, 0, 0], usize::MAX),
        ] {
            let w = || format!("per_channel {scales:?} {zps:?} {axis}");
            if let Some(Ok(p)) = s.fallible(w, || {
                QParams::per_channel(scales.clone(), zps.clone(), axis)
            }) {
                params.push(p);
            }
        }
        for p in &params {
            s.fallible(|| format!("{scheme:?} check {p:?}"), || p.check(&scheme));
            for shape in [&[][..], &[0], &[2, 3], &[3, 2, 2], &[1, 0, 4]] {
                let x = special(shape);
                let w = || format!("{scheme:?} {p:?} {shape:?}");
                if let Some(Ok(q)) = s.fallible(w, || QTensor::quantize(&x, &scheme, p)) {
                    s.run(w, || q.dequantize());
                    s.fallible(w, || q.to_u8());
                    s.fallible(w, || q.to_i8());
                    s.run(w, || q.data_bytes());
                }
                s.fallible(w, || fake_quantize(&x, &scheme, p));
                let ints =
                    Tensor::from_vec((0..x.numel()).map(|k| I[k % I.len()]).collect(), shape)
                        .unwrap();
                s.fallible(w, || {
                    QTensor::from_int(ints, scheme, p.clone()).map(|q| q.dequantize())
                });
            }
        }
    }
    for &x in F {
        for &scale in F {
            for &zp in I {
                // An empty range (qmin > qmax) is `qmax`, as `torch.clamp` has it.
                for (lo, hi) in [(-128, 127), (127, -128), (i32::MIN, i32::MAX), (5, 5)] {
                    let w = || format!("value {x} {scale} {zp} in [{lo}, {hi}]");
                    if let Some(q) = s.run(w, || quantize_value(x, scale, zp, lo, hi)) {
                        let ok = if lo <= hi {
                            (lo..=hi).contains(&q)
                        } else {
                            q == hi
                        };
                        if !ok {
                            s.bad_errors.push(format!("{}: {q} outside the range", w()));
                        }
                    }
                }
                for &q in I {
                    let w = || format!("dequantize {q} {scale} {zp}");
                    if let Some(v) = s.run(w, || dequantize_value(q, scale, zp)) {
                        let want = (i64::from(q) - i64::from(zp)) as f32 * scale;
                        if v.to_bits() != want.to_bits() {
                            s.bad_errors.push(format!("{}: {v}, expected {want}", w()));
                        }
                    }
                }
            }
        }
    }
    for (a, b) in [
        (vec![], vec![]),
        (vec![1.0], vec![]),
        (vec![1.0, 2.0], vec![1.0, 2.0]),
        (vec![f32::NAN], vec![1.0]),
        (vec![0.0], vec![0.0]),
        (vec![f32::INFINITY], vec![f32::INFINITY]),
    ] {
        let w = || format!("sqnr {a:?} {b:?}");
        if let Some(r) = s.fallible(w, || sqnr_db(&a, &b)) {
            if r.is_ok() != (a.len() == b.len()) {
                s.bad_errors.push(format!("{}: {r:?}", w()));
            }
        }
    }
    s.finish(20_000);
}

#[test]
fn observers_with_bad_arguments_and_values() {
    let mut s = Sweep::default();
    // Every dtype, mapping and granularity, with in-range and out-of-range
    // axes (the histogram searches make the full scheme list slow).
    let schemes = [
        QScheme::per_tensor_affine(QDType::U8),
        QScheme::per_tensor_symmetric(QDType::I8),
        QScheme::per_tensor_affine(QDType::U4),
        QScheme::per_tensor_symmetric(QDType::I4),
        QScheme::per_channel_affine(QDType::U8, 0),
        QScheme::per_channel_symmetric(QDType::I8, 1),
        QScheme::per_channel_affine(QDType::U4, 5),
        QScheme::per_channel_symmetric(QDType::I8, usize::MAX),
    ];
    for scheme in schemes {
        let mut obs: Vec<Box<dyn Observer>> = Vec::new();
        let w = || format!("{scheme:?}");
        let mut add = |r: Option<Result<Box<dyn Observer>>>| {
            if let Some(Ok(o)) = r {
                obs.push(o);
            }
        };
        add(s.fallible(w, || {
            Ok(Box::new(MinMaxObserver::new(scheme)?) as Box<dyn Observer>)
        }));
        add(s.fallible(w, || {
            Ok(Box::new(PerChannelMinMaxObserver::new(scheme)?) as Box<dyn Observer>)
        }));
        add(s.fallible(w, || {
            Ok(Box::new(MeanStdObserver::new(scheme)?) as Box<dyn Observer>)
        }));
        add(s.fallible(w, || {
            Ok(Box::new(HistogramObserver::new(scheme)?) as Box<dyn Observer>)
        }));
        add(s.fallible(w, || {
            Ok(Box::new(EntropyObserver::new(scheme)?) as Box<dyn Observer>)
        }));
        add(s.fallible(w, || {
            Ok(Box::new(MovingAverageMinMaxObserver::new(scheme)?) as Box<dyn Observer>)
        }));
        for &k in &[f64::NAN, -1.0, 0.0, f64::INFINITY, 3.0] {
            add(s.fallible(w, || {
                Ok(Box::new(MeanStdObserver::with_k(scheme, k)?) as Box<dyn Observer>)
            }));
            add(s.fallible(w, || {
                Ok(Box::new(PercentileObserver::new(scheme, k * 40.0)?) as Box<dyn Observer>)
            }));
            add(s.fallible(w, || {
                Ok(
                    Box::new(MovingAverageMinMaxObserver::with_averaging_constant(
                        scheme, k as f32,
                    )?) as Box<dyn Observer>,
                )
            }));
        }
        for (bins, up) in [
            (0, 1),
            (1, 0),
            (1, 1),
            (3, 2),
            (2048, 128),
            (usize::MAX, 1),
            (1 << 40, 1 << 40),
        ] {
            add(s.fallible(w, || {
                Ok(Box::new(HistogramObserver::with_bins(scheme, bins, up)?) as Box<dyn Observer>)
            }));
            add(s.fallible(w, || {
                Ok(Box::new(EntropyObserver::with_bins(scheme, bins)?) as Box<dyn Observer>)
            }));
            add(s.fallible(w, || {
                Ok(Box::new(PercentileObserver::with_bins(scheme, 99.0, bins)?)
                    as Box<dyn Observer>)
            }));
        }
        for o in obs.iter_mut() {
            let name = o.name();
            s.fallible(
                || format!("{name} {scheme:?} range before data"),
                || o.range(),
            );
            s.fallible(
                || format!("{name} {scheme:?} qparams before data"),
                || o.qparams(),
            );
            for shape in [&[][..], &[0], &[4], &[2, 3], &[3, 0], &[2, 3, 4]] {
                for (kind, x) in [
                    ("special", special(shape)),
                    ("finite", finite(shape)),
                    ("equal", Tensor::full(shape, 2.5).unwrap()),
                    ("huge", Tensor::full(shape, f32::MAX).unwrap()),
                    ("tiny", Tensor::full(shape, 1e-45).unwrap()),
                ] {
                    let w = || format!("{name} {scheme:?} observes {kind} {shape:?}");
                    s.fallible(w, || o.observe(&x));
                    if let Some(Ok(p)) = s.fallible(w, || o.qparams()) {
                        if p.scales().iter().any(|&v| !(v.is_finite() && v > 0.0)) {
                            s.bad_errors
                                .push(format!("{}: scales {:?}", w(), p.scales()));
                        }
                    }
                }
            }
            s.run(|| format!("{name} reset"), || o.reset());
        }
    }
    s.finish(1000);
}

#[test]
fn int8_and_block_kernels_with_bad_lengths_and_values() {
    let mut s = Sweep::default();
    for &lo in F {
        for &hi in F {
            let w = || format!("choose_qparams_u8 {lo} {hi}");
            if let Some(Ok(p)) = s.fallible(w, || choose_qparams_u8(lo, hi)) {
                if !(p.scale.is_finite() && p.scale > 0.0) {
                    s.bad_errors.push(format!("{}: scale {}", w(), p.scale));
                }
            }
        }
    }
    for x in [
        vec![],
        vec![f32::NAN],
        vec![1.0, f32::INFINITY],
        vec![f32::MAX, -f32::MAX],
        vec![0.0; 5],
    ] {
        s.fallible(
            || format!("quantize_activations_u8 {x:?}"),
            || quantize_activations_u8(&x),
        );
        let mut out = vec![0u8; 2];
        s.fallible(
            || format!("into {x:?}"),
            || quantize_activations_u8_into(&x, &mut out),
        );
    }
    let sizes = [0usize, 1, 3, 32, 33, MAX_K, MAX_K + 1, usize::MAX];
    for &n in &sizes {
        for &k in &sizes {
            let w = || format!("n {n} k {k}");
            let len = n.saturating_mul(k).min(4096);
            s.fallible(w, || {
                PackedWeightsI8::pack(&vec![1i8; len], n, k).map(|_| ())
            });
            s.fallible(w, || {
                quantize_weights_i8_per_channel(&vec![0.5; len], n, k).map(|_| ())
            });
            s.fallible(w, || Q4Matrix::quantize(&vec![0.5; len], n, k).map(|_| ()));
            s.fallible(w, || Q8Matrix::quantize(&vec![0.5; len], n, k).map(|_| ()));
        }
    }
    for wv in [
        vec![f32::NAN; 64],
        vec![f32::INFINITY; 64],
        vec![f32::MAX; 64],
        vec![0.0; 64],
    ] {
        let w = || format!("weights {:?}", wv[0]);
        s.fallible(w, || {
            PackedWeightsI8::from_f32_per_channel(&wv, 2, 32).map(|_| ())
        });
        s.fallible(w, || Q4Matrix::quantize(&wv, 2, 32).map(|_| ()));
        s.fallible(w, || Q8Matrix::quantize(&wv, 2, 32).map(|_| ()));
        let blk: [f32; QK] = wv[..QK].try_into().unwrap();
        s.run(w, || BlockQ4_0::quantize(&blk).dequantize());
        s.run(w, || BlockQ8_0::quantize(&blk).dequantize());
    }
    let (packed, scales) =
        PackedWeightsI8::from_f32_per_channel(&finite(&[3, 8]).to_vec(), 3, 8).unwrap();
    let q4 = Q4Matrix::quantize(&finite(&[3, 64]).to_vec(), 3, 64).unwrap();
    let q8 = Q8Matrix::quantize(&finite(&[3, 64]).to_vec(), 3, 64).unwrap();
    for path in KernelPath::ALL {
        for (alen, olen) in [
            (0, 0),
            (8, 3),
            (16, 6),
            (7, 3),
            (8, 2),
            (8, 4),
            (usize::MAX / 2, 3),
        ] {
            let a = vec![3u8; alen.min(64)];
            let w = || format!("{path:?} a {alen} out {olen}");
            let mut oi = vec![0i32; olen];
            let mut of = vec![0f32; olen];
            let mut ou = vec![0u8; olen];
            s.fallible(w, || gemm_u8i8_i32_with(path, &a, &packed, &mut oi));
            for (scale, ws, bias) in [
                (0.1, &scales[..], None),
                (f32::NAN, &scales[..], None),
                (0.0, &scales[..1], None),
                (0.1, &scales[..2], Some(&[1.0f32][..])),
                (0.1, &[][..], Some(&[1.0f32, 2.0, 3.0][..])),
            ] {
                let rq = Requant {
                    input: AffineU8 {
                        scale,
                        zero_point: 128,
                    },
                    w_scales: ws,
                    bias,
                };
                let w2 = || format!("{} rq {scale} {} {bias:?}", w(), ws.len());
                s.fallible(w2, || gemm_u8i8_f32_with(path, &a, &packed, &rq, &mut of));
                for out_scale in [1.0, f32::NAN, -1.0] {
                    let output = AffineU8 {
                        scale: out_scale,
                        zero_point: 3,
                    };
                    s.fallible(w2, || {
                        gemm_u8i8_u8_with(path, &a, &packed, &rq, output, &mut ou)
                    });
                    s.fallible(w2, || {
                        requantize_u8(&oi, packed.row_sums(), &rq, output, &mut ou)
                    });
                }
                s.fallible(w2, || requantize_f32(&oi, packed.row_sums(), &rq, &mut of));
            }
            let x = vec![0.5f32; alen.min(64)];
            for xv in [0.5, f32::NAN, f32::INFINITY] {
                let x: Vec<f32> = x.iter().map(|_| xv).collect();
                s.fallible(w, || {
                    linear_dynamic_int8_with(path, &x, &packed, &scales, None, &mut of)
                });
            }
        }
    }
    for bpath in [BlockPath::Avx512, BlockPath::Portable] {
        for (xlen, olen) in [(64, 3), (0, 0), (63, 3), (64, 2), (128, 6), (128, 5)] {
            let x = vec![1.0f32; xlen];
            let mut out = vec![0f32; olen];
            let w = || format!("{bpath:?} x {xlen} out {olen}");
            s.fallible(w, || matvec_q4_0_with(bpath, &x, &q4, &mut out));
            s.fallible(w, || matmul_q4_0_with(bpath, &x, &q4, &mut out));
            s.fallible(w, || matvec_q8_0_with(bpath, &x, &q8, &mut out));
            s.fallible(w, || matmul_q8_0_with(bpath, &x, &q8, &mut out));
        }
    }
    s.run(
        || "block out of range".into(),
        || (q4.block(usize::MAX, 0), q8.block(0, usize::MAX)),
    );
    for &x in F {
        for zp in [0u8, 255] {
            let p = AffineU8 {
                scale: x,
                zero_point: zp,
            };
            s.run(
                || format!("affine {x} {zp}"),
                || (p.quantize(x), p.dequantize(zp)),
            );
        }
    }
    s.finish(1000);
}

fn small_model() -> Sequential<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    Sequential::new()
        .push(
            Conv2dConfig::new(1, 2, 3)
                .with_padding(1)
                .init(&mut rng)
                .unwrap(),
        )
        .push(Relu)
        .push(anneal_layers::Flatten::default())
        .push(LinearConfig::new(2 * 4 * 4, 3).init(&mut rng).unwrap())
}

#[test]
fn flows_and_quantised_layers_with_bad_configs_and_data() {
    let mut s = Sweep::default();
    let calibrations = [
        Calibration::MinMax,
        Calibration::MovingAverage,
        Calibration::Percentile(99.9),
        Calibration::Percentile(150.0),
        Calibration::Percentile(f64::NAN),
        Calibration::Mse,
        Calibration::Entropy,
        Calibration::MeanStd(3.0),
        Calibration::MeanStd(-1.0),
    ];
    let mut configs = vec![
        QuantConfig::uniform(LayerScheme::Float),
        QuantConfig::uniform(LayerScheme::DynamicInt8 { per_channel: true }),
        QuantConfig::uniform(LayerScheme::Int4WeightOnly),
        QuantConfig::uniform(LayerScheme::Int8WeightOnly),
        QuantConfig::uniform(LayerScheme::Int4WeightOnly)
            .with_layer("no.such.layer", LayerScheme::Float),
    ];
    for c in calibrations {
        for per_channel in [false, true] {
            configs.push(QuantConfig::uniform(LayerScheme::Int8 {
                per_channel,
                calibration: c,
            }));
        }
    }
    let batches: Vec<(&str, Vec<Tensor<f32>>)> = vec![
        ("none", vec![]),
        ("good", vec![finite(&[2, 1, 4, 4])]),
        ("nan", vec![special(&[2, 1, 4, 4])]),
        ("equal", vec![Tensor::full(&[2, 1, 4, 4], 1.0).unwrap()]),
        ("empty batch", vec![finite(&[0, 1, 4, 4])]),
        ("wrong shape", vec![finite(&[2, 3, 4, 4])]),
        ("wrong rank", vec![finite(&[4, 4])]),
    ];
    for (ci, cfg) in configs.iter().enumerate() {
        for (bname, b) in &batches {
            let w = || format!("config {ci} {cfg:?} batches {bname}");
            let mut m = small_model();
            let r = s.fallible(w, || quantize_static(&mut m, cfg, b));
            if let Some(Ok(report)) = r {
                s.run(w, || report.table());
                for x in [
                    finite(&[1, 1, 4, 4]),
                    special(&[1, 1, 4, 4]),
                    finite(&[0, 1, 4, 4]),
                    finite(&[3]),
                ] {
                    s.fallible(w, || m.forward(&Var::constant(x)));
                }
            }
            let mut m = small_model();
            s.fallible(w, || quantize_weights(&mut m, cfg, b));
            let mut m = small_model();
            if let Some(Ok(prepared)) = s.fallible(w, || prepare_qat(&mut m, cfg)) {
                for x in b {
                    s.fallible(w, || m.forward_train(&Var::leaf(x.clone())));
                }
                s.fallible(w, || convert_qat(&mut m, cfg, prepared));
            }
            s.run(w, || dequantize(&mut m));
        }
    }
    // Quantised kernels built from layers with non-finite or odd weights.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for (in_f, out_f) in [(8, 3), (31, 2), (64, 2), (1, 1)] {
        for fill in [0.5f32, f32::NAN, f32::INFINITY, 0.0] {
            let mut lin = LinearConfig::new(in_f, out_f)
                .init::<f32>(&mut rng)
                .unwrap();
            lin.weight
                .value_mut()
                .data_mut()
                .iter_mut()
                .step_by(3)
                .for_each(|v| *v = fill);
            let w = || format!("linear {in_f}->{out_f} fill {fill}");
            for act in [
                ActivationQuant::Dynamic,
                ActivationQuant::Static(AffineU8 {
                    scale: 0.1,
                    zero_point: 3,
                }),
                ActivationQuant::Static(AffineU8 {
                    scale: f32::NAN,
                    zero_point: 3,
                }),
            ] {
                use anneal_layers::InferenceKernel;
                if let Some(Ok(k)) = s.fallible(w, || QLinearKernel::new(&lin, true, act)) {
                    for x in [
                        finite(&[2, in_f]),
                        special(&[2, in_f]),
                        finite(&[0, in_f]),
                        finite(&[2, in_f + 1]),
                    ] {
                        s.fallible(w, || k.forward(&x));
                    }
                }
            }
            for bits in [0, 3, 4, 8, 32] {
                s.fallible(w, || BlockKernel::linear_bits(&lin, bits).map(|_| ()));
            }
        }
    }
    s.finish(500);
}

/// Found by this sweep: the block matrices sized their buffers from the
/// shape before checking it against the data (a capacity-overflow panic or
/// an aborting allocation), and `sqnr_db` asserted equal lengths.
#[test]
fn block_matrices_check_the_shape_before_allocating() {
    for (rows, cols) in [(1, usize::MAX), (usize::MAX, 32), (1 << 40, 1 << 20)] {
        let e = Q4Matrix::quantize(&[0.5; 4], rows, cols).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "Q4Matrix::quantize: w has 4 elements but shape [{rows}, {cols}]"
            )),
            "{e}"
        );
        let e = Q8Matrix::quantize(&[0.5; 4], rows, cols).unwrap_err();
        assert_eq!(e.op(), "Q8Matrix::quantize");
    }
    assert_eq!(
        sqnr_db(&[1.0, 2.0], &[]).unwrap_err().to_string(),
        "sqnr_db: reference has 2 values, approx 0"
    );
}

/// Layers whose public weight, bias or configuration were edited into
/// shapes that do not fit: quantising them is an error, never a panic.
#[test]
fn quantising_layers_with_inconsistent_public_fields() {
    use anneal_layers::{InferenceKernel, Padding};
    let mut s = Sweep::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let weights: &[&[usize]] = &[&[], &[6], &[3, 2], &[2, 3, 1], &[0, 3]];
    for ws in weights {
        for bias in [None, Some(vec![3]), Some(vec![5]), Some(vec![])] {
            let mut lin = LinearConfig::new(3, 2).init::<f32>(&mut rng).unwrap();
            *lin.weight.value_mut() = finite(ws);
            if let Some(b) = &bias {
                *lin.bias.as_mut().unwrap().value_mut() = finite(b);
            }
            let w = || format!("linear weight {ws:?} bias {bias:?}");
            for per_channel in [false, true] {
                if let Some(Ok(k)) = s.fallible(w, || {
                    QLinearKernel::new(&lin, per_channel, ActivationQuant::Dynamic)
                }) {
                    s.fallible(w, || k.forward(&finite(&[2, 3])));
                }
            }
            s.fallible(w, || BlockKernel::linear(&lin).map(|_| ()));
            let mut m = Sequential::new().push(lin.clone());
            for cfg in [
                QuantConfig::uniform(LayerScheme::Int8 {
                    per_channel: true,
                    calibration: Calibration::MinMax,
                }),
                QuantConfig::uniform(LayerScheme::Int4WeightOnly),
            ] {
                s.fallible(w, || quantize_static(&mut m, &cfg, &[finite(&[2, 3])]));
                let mut m = Sequential::new().push(lin.clone());
                if let Some(Ok(p)) = s.fallible(w, || prepare_qat(&mut m, &cfg)) {
                    s.fallible(w, || m.forward_train(&Var::leaf(finite(&[2, 3]))));
                    s.fallible(w, || convert_qat(&mut m, &cfg, p));
                }
            }
        }
    }
    type Edit = Box<dyn Fn(&mut anneal_layers::Conv2d<f32>)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("groups 0", Box::new(|c| c.config.groups = 0)),
        ("kernel 0", Box::new(|c| c.config.kernel = [0, 3])),
        ("stride 0", Box::new(|c| c.config.stride = [0, 1])),
        (
            "same padding, huge dilation",
            Box::new(|c| {
                c.config.padding = Padding::Same;
                c.config.dilation = [usize::MAX, 1];
            }),
        ),
        (
            "huge padding",
            Box::new(|c| c.config.padding = Padding::Explicit(usize::MAX, 0)),
        ),
        (
            "weight of another shape",
            Box::new(|c| *c.weight.value_mut() = finite(&[4, 2, 3])),
        ),
        (
            "bias of another length",
            Box::new(|c| *c.bias.as_mut().unwrap().value_mut() = finite(&[7])),
        ),
    ];
    for (name, edit) in &edits {
        let mut conv = Conv2dConfig::new(2, 4, 3).init::<f32>(&mut rng).unwrap();
        edit(&mut conv);
        let w = || format!("conv {name}");
        if let Some(Ok(k)) = s.fallible(w, || {
            QConv2dKernel::new(
                &conv,
                true,
                ActivationQuant::Static(AffineU8 {
                    scale: 0.1,
                    zero_point: 3,
                }),
            )
        }) {
            s.fallible(w, || k.forward(&finite(&[1, 2, 5, 5])));
        }
        s.fallible(w, || BlockKernel::conv2d(&conv).map(|_| ()));
    }
    s.finish(100);
}
