//! Schemes, quantisation parameters and quantised tensors: round trips,
//! saturation, ties, 4-bit and restricted ranges, per-channel accuracy,
//! observer behaviour from first principles, and every error case.
//!
//! Reference values come from the formulas (PyTorch's `_calculate_qparams`,
//! ONNX's `QuantizeLinear`), never from the code under test.

use anneal_quant::{
    dequantize_value, fake_quantize, quantize_value, sqnr_db, EntropyObserver, Granularity,
    HistogramObserver, MeanStdObserver, MinMaxObserver, MovingAverageMinMaxObserver, Observer,
    PerChannelMinMaxObserver, PercentileObserver, QDType, QMapping, QParams, QScheme, QTensor,
    QUANT_EPS,
};
use anneal_tensor::{Error, Tensor};
use proptest::prelude::*;

const DTYPES: [QDType; 4] = [QDType::U8, QDType::I8, QDType::U4, QDType::I4];

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor<f32> {
    Tensor::from_vec(data, shape).unwrap()
}

fn t1(data: &[f32]) -> Tensor<f32> {
    t(data.to_vec(), &[data.len()])
}

fn message(e: Error) -> String {
    e.to_string()
}

// ---- schemes ----------------------------------------------------------------------------------

#[test]
fn scheme_ranges_follow_pytorch() {
    let u8a = QScheme::per_tensor_affine(QDType::U8);
    assert_eq!((u8a.qmin(), u8a.qmax(), u8a.levels()), (0, 255, 256));
    let r = u8a.with_reduce_range().unwrap();
    assert_eq!((r.qmin(), r.qmax()), (0, 127));
    let i8s = QScheme::per_tensor_symmetric(QDType::I8);
    let r = i8s.with_reduce_range().unwrap();
    assert_eq!((r.qmin(), r.qmax()), (-64, 63));
    let restricted = i8s.with_range(-127, 127).unwrap();
    assert_eq!((restricted.qmin(), restricted.qmax()), (-127, 127));
    assert!(restricted.has_custom_range());
    // PyTorch halves custom ranges with floor division too: [-127, 127] → [-64, 63].
    let r = restricted.with_reduce_range().unwrap();
    assert_eq!((r.qmin(), r.qmax()), (-64, 63));
    let i4 = QScheme::per_channel_symmetric(QDType::I4, 1);
    assert_eq!((i4.qmin(), i4.qmax(), i4.axis()), (-8, 7, Some(1)));
    assert_eq!(i4.granularity(), Granularity::PerChannel { axis: 1 });
    assert_eq!(
        i4.with_granularity(Granularity::PerTensor).axis(),
        None,
        "with_granularity"
    );
    assert_eq!(QScheme::default(), u8a);
    assert_eq!(u8a.mapping(), QMapping::Affine);
    assert_eq!(
        QScheme::per_channel_affine(QDType::U8, 2).to_string(),
        "per-channel (axis 2) affine quint8 [0, 255]"
    );
}

#[test]
fn qparams_follow_the_formulas() {
    let eps = QUANT_EPS;
    // affine u8 on [-2, 6]: s = 8/255, zp = 0 − round(−2/s) = round(63.75) = 64
    let p = QScheme::per_tensor_affine(QDType::U8)
        .qparams_from_range(&[-2.0], &[6.0])
        .unwrap();
    assert_eq!(p.scale(), 8.0f32 / 255.0);
    assert_eq!(p.zero_point(), 64);
    // symmetric i8 on [-2, 6]: s = 6 / 127.5, zp = 0; u8: zp = 128
    for (dt, zp) in [(QDType::I8, 0), (QDType::U8, 128)] {
        let p = QScheme::per_tensor_symmetric(dt)
            .qparams_from_range(&[-2.0], &[6.0])
            .unwrap();
        assert_eq!(p.scale(), 6.0f32 / 127.5);
        assert_eq!(p.zero_point(), zp);
    }
    // All positive: the range is widened to contain 0, so zp = qmin.
    let p = QScheme::per_tensor_affine(QDType::I8)
        .qparams_from_range(&[1.0], &[3.0])
        .unwrap();
    assert_eq!((p.scale(), p.zero_point()), (3.0 / 255.0, -128));
    // All negative: zp = qmax.
    let p = QScheme::per_tensor_affine(QDType::U8)
        .qparams_from_range(&[-5.0], &[-1.0])
        .unwrap();
    assert_eq!((p.scale(), p.zero_point()), (5.0 / 255.0, 255));
    // Zero range at 0 (all-zero tensor): PyTorch's eps fallback.
    for (scheme, zp) in [
        (QScheme::per_tensor_affine(QDType::U8), 0),
        (QScheme::per_tensor_affine(QDType::I8), -128),
        (QScheme::per_tensor_symmetric(QDType::U8), 128),
        (QScheme::per_tensor_symmetric(QDType::I8), 0),
    ] {
        let p = scheme.qparams_from_range(&[0.0], &[0.0]).unwrap();
        assert_eq!((p.scale(), p.zero_point()), (eps, zp), "{scheme}");
    }
    // A range so small that its scale would be subnormal is raised to eps.
    let p = QScheme::per_tensor_affine(QDType::U8)
        .qparams_from_range(&[0.0], &[1e-40])
        .unwrap();
    assert_eq!(p.scale(), eps);
    // Per channel: one pair per channel, the scheme's axis.
    let p = QScheme::per_channel_symmetric(QDType::I8, 1)
        .qparams_from_range(&[-1.0, 0.0, -4.0], &[0.5, 0.0, 2.0])
        .unwrap();
    assert_eq!(p.axis(), Some(1));
    assert_eq!(p.scales(), &[1.0 / 127.5, eps, 4.0 / 127.5]);
    assert_eq!(p.zero_points(), &[0, 0, 0]);
}

#[test]
fn four_bit_and_restricted_ranges() {
    // u4 affine on [-1, 2]: s = 3/15 = 0.2, zp = 0 − round(−1/0.2) = 5
    let u4 = QScheme::per_tensor_affine(QDType::U4);
    let p = u4.qparams_from_range(&[-1.0], &[2.0]).unwrap();
    assert_eq!((p.scale(), p.zero_point()), (3.0f32 / 15.0, 5));
    let x = t1(&[-1.0, -0.3, 0.0, 0.5, 2.0, 9.0, -9.0]);
    let q = QTensor::quantize(&x, &u4, &p).unwrap();
    // -1/0.2 = -5 → 0; -0.3/0.2 = -1.5 → -2 → 3; 0.5/0.2 = 2.5 → 2 → 7 (ties to even)
    assert_eq!(q.int_repr().to_vec(), vec![0, 3, 5, 7, 15, 15, 0]);
    assert_eq!(q.to_u8().unwrap().to_vec(), vec![0, 3, 5, 7, 15, 15, 0]);
    assert_eq!(q.data_bytes(), 4, "7 four-bit values pack into 4 bytes");
    assert!(q.to_i8().is_err());

    // i4 symmetric on [-3, 1.5]: s = 3/7.5 = 0.4, zp = 0, values in [-8, 7]
    let i4 = QScheme::per_tensor_symmetric(QDType::I4);
    let p = i4.qparams_from_range(&[-3.0], &[1.5]).unwrap();
    assert_eq!((p.scale(), p.zero_point()), (3.0f32 / 7.5, 0));
    let q = QTensor::quantize(&t1(&[-3.0, 3.0, 0.2, 0.6, -100.0]), &i4, &p).unwrap();
    // -7.5 → -8 (even), 7.5 → 8 → 7 (saturates), 0.5 → 0, 1.5 → 2
    assert_eq!(q.int_repr().to_vec(), vec![-8, 7, 0, 2, -8]);
    assert_eq!(q.to_i8().unwrap().to_vec(), vec![-8, 7, 0, 2, -8]);

    // restricted int8 [-127, 127]: s = max|x| / 127, ±max|x| → ±127, never -128
    let r = QScheme::per_tensor_symmetric(QDType::I8)
        .with_range(-127, 127)
        .unwrap();
    let p = r.qparams_from_range(&[-2.54], &[1.0]).unwrap();
    assert_eq!(p.scale(), 2.54f32 / 127.0);
    let q = QTensor::quantize(&t1(&[-2.54, 2.54, -1e9, 1e9]), &r, &p).unwrap();
    assert_eq!(q.int_repr().to_vec(), vec![-127, 127, -127, 127]);

    // restricted u8 symmetric [0, 15] (custom range): zp = ⌊15/2⌋ = 7, PyTorch's rule
    let c = QScheme::per_tensor_symmetric(QDType::U8)
        .with_range(0, 15)
        .unwrap();
    assert_eq!(
        c.qparams_from_range(&[-1.0], &[1.0]).unwrap().zero_point(),
        7
    );
    // full-range u4 symmetric: zp = 8
    let s = QScheme::per_tensor_symmetric(QDType::U4);
    assert_eq!(
        s.qparams_from_range(&[-1.0], &[1.0]).unwrap().zero_point(),
        8
    );
}

#[test]
fn round_half_to_even_at_exact_ties() {
    // x / s = k + 1/2 exactly: rounds to the even neighbour.
    let cases = [
        (0.5f32, 0),
        (1.5, 2),
        (2.5, 2),
        (3.5, 4),
        (-0.5, 0),
        (-1.5, -2),
        (-2.5, -2),
        (-3.5, -4),
        (126.5, 126),
        (-127.5, -128),
    ];
    for (v, want) in cases {
        for s in [1.0f32, 0.5, 0.25, 4.0] {
            assert_eq!(quantize_value(v * s, s, 0, -128, 127), want, "{v}·{s}");
        }
        // The zero point is added after rounding.
        assert_eq!(quantize_value(v, 1.0, 100, -1000, 1000), want + 100);
    }
    let q = QTensor::quantize(
        &t1(&[0.25, 0.75, 1.25, -0.25, -0.75]),
        &QScheme::per_tensor_affine(QDType::U8),
        &QParams::per_tensor(0.5, 128).unwrap(),
    )
    .unwrap();
    assert_eq!(q.int_repr().to_vec(), vec![128, 130, 130, 128, 126]);
}

#[test]
fn sqnr_db_by_hand() {
    assert!((sqnr_db(&[1.0, 1.0], &[1.0, 0.0]).unwrap() - 10.0 * 2f64.log10()).abs() < 1e-12);
    assert!((sqnr_db(&[3.0, 4.0], &[3.0, 3.0]).unwrap() - 10.0 * 25f64.log10()).abs() < 1e-12);
    assert_eq!(sqnr_db(&[1.0, -2.0], &[1.0, -2.0]).unwrap(), f64::INFINITY);
    assert_eq!(sqnr_db(&[0.0], &[1.0]).unwrap(), f64::NEG_INFINITY);
}

#[test]
fn sqnr_db_rejects_different_lengths() {
    let e = sqnr_db(&[1.0], &[1.0, 2.0]).unwrap_err();
    assert_eq!(e.to_string(), "sqnr_db: reference has 1 values, approx 2");
}

#[test]
fn per_channel_quantize_any_axis() {
    // [2, 3, 2], axis 1: channel c scales by 10^c.
    let x = t(
        vec![
            0.1, -0.2, 1.0, -2.0, 10.0, -20.0, 0.3, 0.05, 3.0, 0.5, 30.0, 5.0,
        ],
        &[2, 3, 2],
    );
    let scheme = QScheme::per_channel_symmetric(QDType::I8, 1);
    let mut obs = PerChannelMinMaxObserver::new(scheme).unwrap();
    obs.observe(&x).unwrap();
    let (lo, hi) = obs.range().unwrap();
    assert_eq!(lo, vec![-0.2, -2.0, -20.0]);
    assert_eq!(hi, vec![0.3, 3.0, 30.0]);
    let p = obs.qparams().unwrap();
    assert_eq!(p.scales(), &[0.3 / 127.5, 3.0 / 127.5, 30.0 / 127.5]);
    let q = QTensor::quantize(&x, &scheme, &p).unwrap();
    for (i, (&v, &qv)) in x.as_slice().iter().zip(q.int_repr().as_slice()).enumerate() {
        let c = (i / 2) % 3;
        let s = p.scales()[c];
        assert_eq!(
            qv,
            ((v / s).round_ties_even() as i32).clamp(-128, 127),
            "{i}"
        );
    }
    let y = q.dequantize();
    for (i, (&v, &w)) in x.as_slice().iter().zip(y.as_slice()).enumerate() {
        assert!((v - w).abs() <= p.scales()[(i / 2) % 3] / 2.0 * 1.0001);
    }
    assert_eq!(fake_quantize(&x, &scheme, &p).unwrap(), y);
}

#[test]
fn quantize_saturates_infinities_and_rejects_nan() {
    let s = QScheme::per_tensor_affine(QDType::U8);
    let p = QParams::per_tensor(0.1, 10).unwrap();
    let q = QTensor::quantize(&t1(&[f32::INFINITY, f32::NEG_INFINITY, -0.0]), &s, &p).unwrap();
    assert_eq!(q.int_repr().to_vec(), vec![255, 0, 10]);
    let e =
        message(QTensor::quantize(&t(vec![0.0, 1.0, f32::NAN, 2.0], &[2, 2]), &s, &p).unwrap_err());
    assert!(e.contains("NaN at index 2 [1, 0]"), "{e}");
    assert_eq!(quantize_value(f32::NAN, 1.0, 3, 0, 255), 3);
    assert_eq!(dequantize_value(13, 0.5, 3), 5.0);
}

// ---- error cases ------------------------------------------------------------------------------

#[test]
fn scheme_and_params_errors() {
    let i8s = QScheme::per_tensor_symmetric(QDType::I8);
    assert!(i8s
        .with_range(1, 10)
        .unwrap_err()
        .to_string()
        .contains("must contain 0"));
    assert!(i8s.with_range(0, 0).is_err());
    assert!(i8s
        .with_range(-200, 100)
        .unwrap_err()
        .to_string()
        .contains("does not fit"));
    assert!(QScheme::per_tensor_affine(QDType::U4)
        .with_range(0, 16)
        .is_err());
    let e = QScheme::per_tensor_symmetric(QDType::U8)
        .with_reduce_range()
        .unwrap_err();
    assert!(e.to_string().contains("cannot reduce"), "{e}");
    assert!(
        i8s.with_range(0, 1).unwrap().with_reduce_range().is_err(),
        "[0, 1] halves to [0, 0]"
    );

    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        assert!(QParams::per_tensor(bad, 0).is_err(), "scale {bad}");
    }
    assert!(QParams::per_channel(vec![1.0, 2.0], vec![0], 0).is_err());
    assert!(QParams::per_channel(vec![], vec![], 0).is_err());
    assert!(QParams::per_channel(vec![1.0, 0.0], vec![0, 0], 0).is_err());

    let u8a = QScheme::per_tensor_affine(QDType::U8);
    assert!(u8a
        .qparams_from_range(&[1.0], &[0.0])
        .unwrap_err()
        .to_string()
        .contains("greater than"));
    assert!(u8a.qparams_from_range(&[f32::NAN], &[0.0]).is_err());
    assert!(u8a.qparams_from_range(&[0.0], &[f32::INFINITY]).is_err());
    assert!(
        u8a.qparams_from_range(&[0.0, 0.0], &[1.0, 1.0]).is_err(),
        "two ranges for a per-tensor scheme"
    );
    assert!(u8a.qparams_from_range(&[0.0], &[1.0, 2.0]).is_err());
    assert!(u8a.qparams_from_range(&[], &[]).is_err());
    let e = u8a.qparams_from_range(&[-3e38], &[3e38]).unwrap_err();
    assert!(e.to_string().contains("overflows"), "{e}");
}

#[test]
fn mismatched_channel_axes_are_errors() {
    let x = Tensor::<f32>::ones(&[4, 3]).unwrap();
    // params for axis 0 with a scheme for axis 1
    let scheme = QScheme::per_channel_affine(QDType::U8, 1);
    let p0 = QParams::per_channel(vec![1.0; 4], vec![0; 4], 0).unwrap();
    let e = QTensor::quantize(&x, &scheme, &p0).unwrap_err();
    assert!(e.to_string().contains("channel axis 0"), "{e}");
    // per-channel params for a per-tensor scheme and vice versa
    assert!(QTensor::quantize(&x, &QScheme::default(), &p0).is_err());
    let pt = QParams::per_tensor(1.0, 0).unwrap();
    assert!(QTensor::quantize(&x, &scheme, &pt).is_err());
    // wrong number of channels
    let p1 = QParams::per_channel(vec![1.0; 4], vec![0; 4], 1).unwrap();
    let e = QTensor::quantize(&x, &scheme, &p1).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // axis beyond the rank
    let s5 = QScheme::per_channel_affine(QDType::U8, 5);
    let p5 = QParams::per_channel(vec![1.0], vec![0], 5).unwrap();
    assert!(matches!(
        QTensor::quantize(&x, &s5, &p5).unwrap_err(),
        Error::AxisOutOfRange {
            axis: 5,
            rank: 2,
            ..
        }
    ));
    // zero point outside the range
    let bad = QParams::per_tensor(1.0, 300).unwrap();
    assert!(QTensor::quantize(&x, &QScheme::default(), &bad)
        .unwrap_err()
        .to_string()
        .contains("zero point 300"));

    // the observer: axis beyond the rank, then a different channel count
    let mut obs =
        PerChannelMinMaxObserver::new(QScheme::per_channel_symmetric(QDType::I8, 2)).unwrap();
    let e = obs.observe(&x).unwrap_err();
    assert!(
        matches!(
            e,
            Error::AxisOutOfRange {
                op: "PerChannelMinMaxObserver",
                ..
            }
        ),
        "{e}"
    );
    let mut obs =
        PerChannelMinMaxObserver::new(QScheme::per_channel_symmetric(QDType::I8, 1)).unwrap();
    obs.observe(&x).unwrap();
    let e = obs
        .observe(&Tensor::<f32>::ones(&[4, 5]).unwrap())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("5 channels along axis 1, but earlier batches had 3"),
        "{e}"
    );
    assert_eq!(
        obs.qparams().unwrap().len(),
        3,
        "state unchanged by the failed batch"
    );

    // per-channel schemes for per-tensor observers and the other way round
    let pc = QScheme::per_channel_symmetric(QDType::I8, 0);
    assert!(MinMaxObserver::new(pc).is_err());
    assert!(MovingAverageMinMaxObserver::new(pc).is_err());
    assert!(MeanStdObserver::new(pc).is_err());
    assert!(HistogramObserver::new(pc).is_err());
    assert!(EntropyObserver::new(pc).is_err());
    assert!(PercentileObserver::new(pc, 99.9).is_err());
    assert!(PerChannelMinMaxObserver::new(QScheme::default()).is_err());
}

#[test]
fn from_int_checks_the_range() {
    let s = QScheme::per_tensor_affine(QDType::U4);
    let p = QParams::per_tensor(0.5, 3).unwrap();
    let ok = QTensor::from_int(
        Tensor::from_vec(vec![0, 15, 3], &[3]).unwrap(),
        s,
        p.clone(),
    )
    .unwrap();
    assert_eq!(ok.dequantize().to_vec(), vec![-1.5, 6.0, 0.0]);
    assert_eq!((ok.shape(), ok.numel()), (&[3usize][..], 3));
    assert_eq!(ok.scheme(), &s);
    assert_eq!(ok.qparams(), &p);
    let e = QTensor::from_int(Tensor::from_vec(vec![0, 16], &[2]).unwrap(), s, p).unwrap_err();
    assert!(e.to_string().contains("value 16 at index 1"), "{e}");
}

fn all_observers(scheme: QScheme) -> Vec<Box<dyn Observer>> {
    vec![
        Box::new(MinMaxObserver::new(scheme).unwrap()),
        Box::new(MovingAverageMinMaxObserver::new(scheme).unwrap()),
        Box::new(MeanStdObserver::new(scheme).unwrap()),
        Box::new(HistogramObserver::new(scheme).unwrap()),
        Box::new(EntropyObserver::new(scheme).unwrap()),
        Box::new(PercentileObserver::new(scheme, 99.99).unwrap()),
        Box::new(
            PerChannelMinMaxObserver::new(
                scheme.with_granularity(Granularity::PerChannel { axis: 0 }),
            )
            .unwrap(),
        ),
    ]
}

#[test]
fn observers_reject_non_finite_data_and_empty_state() {
    for mut obs in all_observers(QScheme::per_tensor_affine(QDType::U8)) {
        let name = obs.name();
        let e = obs.qparams().unwrap_err();
        assert!(e.to_string().contains("no data observed"), "{name}: {e}");
        assert_eq!(e.op(), name);
        // empty tensors are ignored
        obs.observe(&Tensor::<f32>::zeros(&[0, 3]).unwrap())
            .unwrap();
        assert!(obs.range().is_err(), "{name}");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let x = t(vec![0.5, -1.0, 2.0, 0.0, bad, 1.0], &[2, 3]);
            let e = obs.observe(&x).unwrap_err();
            assert_eq!(e.op(), name);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "{name}: non-finite calibration value {bad} at index 4 [1, 1]"
                )),
                "{msg}"
            );
            assert!(
                obs.range().is_err(),
                "{name}: a rejected batch leaves no trace"
            );
        }
        obs.observe(&t(vec![-1.0, 3.0, 0.5, 2.0], &[2, 2])).unwrap();
        let p = obs.qparams().unwrap();
        assert!(
            p.scales().iter().all(|s| s.is_normal() && *s >= QUANT_EPS),
            "{name}"
        );
        obs.reset();
        assert!(obs.qparams().is_err(), "{name}: reset");
    }
}

#[test]
fn constant_tensors_use_the_eps_fallback() {
    for scheme in [
        QScheme::per_tensor_affine(QDType::U8),
        QScheme::per_tensor_symmetric(QDType::I8),
    ] {
        for mut obs in all_observers(scheme) {
            let name = obs.name();
            obs.observe(&Tensor::<f32>::zeros(&[2, 8]).unwrap())
                .unwrap();
            let p = obs.qparams().unwrap();
            assert!(p.scales().iter().all(|&s| s == QUANT_EPS), "{name}: {p:?}");
            // affine u8: 0 − round(0 / eps) = 0; symmetric i8: 0
            assert!(p.zero_points().iter().all(|&z| z == 0), "{name}: {p:?}");

            obs.reset();
            obs.observe(&Tensor::full(&[2, 8], 2.5f32).unwrap())
                .unwrap();
            let p = obs.qparams().unwrap();
            let want = if scheme.is_symmetric() {
                2.5 / 127.5
            } else {
                2.5 / 255.0
            };
            assert!(p.scales().iter().all(|&s| s == want), "{name}: {p:?}");
        }
    }
}

// ---- observers from first principles ----------------------------------------------------------

#[test]
fn min_max_is_global_over_batches() {
    let scheme = QScheme::per_tensor_affine(QDType::U8);
    let a = t1(&[0.5, -0.25, 3.0]);
    let b = t(vec![-2.0, 1.0, 0.0, 1.5], &[2, 2]);
    let mut obs = MinMaxObserver::new(scheme).unwrap();
    obs.observe(&a).unwrap();
    obs.observe(&b).unwrap();
    assert_eq!(obs.range().unwrap(), (vec![-2.0], vec![3.0]));
    let whole = scheme.qparams_from_range(&[-2.0], &[3.0]).unwrap();
    assert_eq!(obs.qparams().unwrap(), whole);
}

#[test]
fn moving_average_by_hand() {
    let scheme = QScheme::per_tensor_symmetric(QDType::I8);
    let mut obs = MovingAverageMinMaxObserver::with_averaging_constant(scheme, 0.5).unwrap();
    obs.observe(&t1(&[-1.0, 2.0])).unwrap();
    assert_eq!(
        obs.range().unwrap(),
        (vec![-1.0], vec![2.0]),
        "first batch sets the range"
    );
    obs.observe(&t1(&[-3.0, 4.0])).unwrap();
    assert_eq!(obs.range().unwrap(), (vec![-2.0], vec![3.0]));
    assert!(MovingAverageMinMaxObserver::with_averaging_constant(scheme, 0.0).is_err());
    assert!(MovingAverageMinMaxObserver::with_averaging_constant(scheme, 1.5).is_err());
    assert_eq!(
        MovingAverageMinMaxObserver::new(scheme)
            .unwrap()
            .averaging_constant(),
        0.01
    );
}

#[test]
fn mean_std_by_hand() {
    let scheme = QScheme::per_tensor_symmetric(QDType::I8);
    // ±1 alternating: mean 0, σ 1 (population)
    let x: Vec<f32> = (0..100)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let mut obs = MeanStdObserver::with_k(scheme, 0.5).unwrap();
    obs.observe(&t1(&x)).unwrap();
    assert_eq!((obs.mean(), obs.std()), (Some(0.0), Some(1.0)));
    assert_eq!(obs.range().unwrap(), (vec![-0.5], vec![0.5]));
    // k = 3 would pass the data's own extremes: clipped to [min, max].
    let mut obs = MeanStdObserver::new(scheme).unwrap();
    obs.observe(&t1(&x)).unwrap();
    assert_eq!(obs.range().unwrap(), (vec![-1.0], vec![1.0]));
    assert!(MeanStdObserver::with_k(scheme, 0.0).is_err());
    assert!(MeanStdObserver::with_k(scheme, f64::NAN).is_err());
    assert_eq!(MeanStdObserver::new(scheme).unwrap().mean(), None);
}

#[test]
fn percentile_is_within_a_bin_of_the_exact_quantile() {
    let scheme = QScheme::per_tensor_affine(QDType::U8);
    // 0, 1, …, 9999 in two batches
    let x: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
    let mut obs = PercentileObserver::new(scheme, 99.0).unwrap();
    obs.observe(&t1(&x[..6000])).unwrap();
    obs.observe(&t1(&x[6000..])).unwrap();
    let (lo, hi) = obs.range().unwrap();
    // exact: the 1 % and 99 % quantiles are about 100 and 9899
    let bin = 9999.0 / 2048.0 * 2.0; // merged histogram bins are at most twice as wide
    assert!((lo[0] - 100.0).abs() <= bin, "lo {}", lo[0]);
    assert!((hi[0] - 9899.0).abs() <= bin, "hi {}", hi[0]);
    assert_eq!(obs.percentile(), 99.0);
    // 100 % is min-max
    let mut all = PercentileObserver::new(scheme, 100.0).unwrap();
    all.observe(&t1(&x)).unwrap();
    assert_eq!(all.range().unwrap(), (vec![0.0], vec![9999.0]));
    // 99.99 % of a tensor with one huge outlier drops it
    let mut y: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
    y[77] = 1000.0;
    let mut obs = PercentileObserver::with_bins(scheme, 99.99, 1 << 16).unwrap();
    obs.observe(&t1(&y)).unwrap();
    let (_, hi) = obs.range().unwrap();
    assert!(hi[0] < 1.1, "the outlier is clipped: hi = {}", hi[0]);
    assert!(PercentileObserver::new(scheme, 50.0).is_err());
    assert!(PercentileObserver::new(scheme, 100.5).is_err());
    assert!(PercentileObserver::with_bins(scheme, 99.0, 0).is_err());
}

#[test]
fn entropy_clips_outliers_and_keeps_flat_data() {
    let scheme = QScheme::per_tensor_symmetric(QDType::I8);
    // uniform on [-1, 1]: nothing to clip
    let x: Vec<f32> = (0..20_000)
        .map(|i| -1.0 + 2.0 * (i as f32 + 0.5) / 20_000.0)
        .collect();
    let mut obs = EntropyObserver::new(scheme).unwrap();
    obs.observe(&t1(&x)).unwrap();
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert_eq!(obs.threshold(), Some(amax));
    // N(0, 1/16) plus one outlier at 6: the threshold clips the outlier and the far tail.
    let mut y: Vec<f32> = Tensor::<f32>::randn_seeded(&[50_000], 3)
        .unwrap()
        .into_vec();
    y.iter_mut().for_each(|v| *v /= 4.0);
    y[0] = 6.0;
    let mut obs = EntropyObserver::new(scheme).unwrap();
    obs.observe(&t1(&y)).unwrap();
    let th = obs.threshold().unwrap();
    let bulk = y[1..].iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        th < 0.9 * bulk && th > 0.4,
        "threshold {th}, bulk up to {bulk}"
    );
    let (lo, hi) = obs.range().unwrap();
    let min = y.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    assert_eq!((lo[0], hi[0]), (min.max(-th), th));
    // A lone outlier far beyond the bulk leaves every candidate below it with
    // an empty last bin (infinite divergence): TensorRT's search keeps all.
    y[0] = 100.0;
    let mut obs = EntropyObserver::new(scheme).unwrap();
    obs.observe(&t1(&y)).unwrap();
    assert_eq!(obs.threshold(), Some(100.0));
    assert!(EntropyObserver::with_bins(scheme, 0).is_err());
}

#[test]
fn histogram_counts_survive_merging() {
    let scheme = QScheme::per_tensor_affine(QDType::U8);
    let mut obs = HistogramObserver::new(scheme).unwrap();
    assert!(obs.histogram().is_none());
    let batches = [
        Tensor::<f32>::randn_seeded(&[3000], 1).unwrap(),
        Tensor::<f32>::rand_uniform_seeded(&[2000], 5.0, 9.0, 2).unwrap(),
        Tensor::<f32>::rand_uniform_seeded(&[1000], -0.5, 0.5, 3).unwrap(),
        Tensor::full(&[500], 20.0f32).unwrap(),
    ];
    let mut n = 0usize;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for b in &batches {
        obs.observe(b).unwrap();
        n += b.numel();
        for &v in b.as_slice() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let (counts, min, max) = obs.histogram().unwrap();
        let total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
        assert!((total - n as f64).abs() < 1e-2, "{total} vs {n}");
        assert_eq!(min, lo);
        assert!(max >= hi, "the max is only ever relaxed upwards");
    }
    let (l, h) = obs.range().unwrap();
    assert!(l[0] >= lo && h[0] <= obs.histogram().unwrap().2 && l[0] < h[0]);
    assert!(HistogramObserver::with_bins(scheme, 0, 128).is_err());
    assert!(HistogramObserver::with_bins(scheme, 16, 0).is_err());
}

#[test]
fn histogram_after_a_constant_batch_keeps_its_mass() {
    let mut obs = HistogramObserver::with_bins(QScheme::default(), 64, 8).unwrap();
    obs.observe(&Tensor::full(&[10], 0.0f32).unwrap()).unwrap();
    obs.observe(&t1(&[1.0, 2.0, 3.0, 4.0])).unwrap();
    let (counts, min, max) = obs.histogram().unwrap();
    assert_eq!((min, max), (0.0, 4.0));
    assert_eq!(counts[0], 10.0);
    assert_eq!(counts.iter().sum::<f32>(), 14.0);
}

// ---- properties -------------------------------------------------------------------------------

fn dtype_strategy() -> impl Strategy<Value = QDType> {
    prop::sample::select(DTYPES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Inside the representable range the round trip is within s/2; outside
    /// it saturates to qmin / qmax.
    #[test]
    fn round_trip_within_half_a_step(
        dt in dtype_strategy(),
        log_scale in -8.0f32..4.0,
        zp_frac in 0.0f64..=1.0,
        fracs in prop::collection::vec(-1.5f64..1.5, 1..64),
    ) {
        let scheme = QScheme::per_tensor_affine(dt);
        let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
        let s = log_scale.exp2();
        let zp = qmin + ((qmax - qmin) as f64 * zp_frac).round() as i32;
        let (lo, hi) = ((qmin - zp) as f64 * s as f64, (qmax - zp) as f64 * s as f64);
        let mid = (lo + hi) / 2.0;
        let half = (hi - lo) / 2.0;
        let x: Vec<f32> = fracs.iter().map(|f| (mid + f * half) as f32).collect();
        let p = QParams::per_tensor(s, zp).unwrap();
        let q = QTensor::quantize(&t1(&x), &scheme, &p).unwrap();
        let y = q.dequantize();
        for ((&v, &qv), &w) in x.iter().zip(q.int_repr().as_slice()).zip(y.as_slice()) {
            prop_assert!(qv >= qmin && qv <= qmax);
            let v64 = f64::from(v);
            if v64 >= lo && v64 <= hi {
                prop_assert!((v64 - f64::from(w)).abs() <= s as f64 / 2.0 * (1.0 + 1e-5),
                    "x {v} x̂ {w} s {s}");
            } else if v64 > hi {
                prop_assert_eq!(qv, qmax);
            } else {
                prop_assert_eq!(qv, qmin);
            }
        }
    }

    /// Ties at exact half steps round to even, for any power-of-two scale.
    #[test]
    fn exact_ties_round_to_even(k in -100i32..100, e in -6i32..6, zp in -20i32..20) {
        let s = (e as f32).exp2();
        let x = (k as f32 + 0.5) * s;
        let r = if k % 2 == 0 { k } else { k + 1 };
        prop_assert_eq!(quantize_value(x, s, zp, -1000, 1000), r + zp);
    }

    /// Observed ranges of any size give normal, positive scales and zero
    /// points inside the range; the range's end points stay representable.
    #[test]
    fn qparams_are_always_sane(
        dt in dtype_strategy(),
        symmetric in any::<bool>(),
        a in -1e30f32..1e30,
        b in -1e30f32..1e30,
        tiny in any::<bool>(),
    ) {
        let (a, b) = if tiny { (a * 1e-60, b * 1e-60) } else { (a, b) };
        let (lo, hi) = (a.min(b), a.max(b));
        let mapping = if symmetric { QMapping::Symmetric } else { QMapping::Affine };
        let scheme = QScheme::new(dt, mapping, Granularity::PerTensor);
        let p = scheme.qparams_from_range(&[lo], &[hi]).unwrap();
        let (s, zp) = (p.scale(), p.zero_point());
        prop_assert!(s.is_normal() && s >= QUANT_EPS);
        prop_assert!(zp >= scheme.qmin() && zp <= scheme.qmax());
        // 0 is exactly representable
        prop_assert_eq!(dequantize_value(quantize_value(0.0, s, zp, scheme.qmin(), scheme.qmax()), s, zp), 0.0);
        // the end points are within a step (one step: symmetric ranges may clip by half a step more)
        for v in [lo.min(0.0), hi.max(0.0)] {
            let w = dequantize_value(quantize_value(v, s, zp, scheme.qmin(), scheme.qmax()), s, zp);
            prop_assert!((f64::from(v) - f64::from(w)).abs() <= f64::from(s) * 1.0001, "{v} → {w} (s {s})");
        }
    }

    /// Per-channel quantisation is at least as accurate as per-tensor when
    /// the channels' ranges differ (here by 4× to 16× from one channel to the
    /// next: the widest channel then holds the global range and is quantised
    /// identically both ways, every other one gets a finer step).
    #[test]
    fn per_channel_beats_per_tensor(
        channels in 2usize..10,
        per_channel in 32usize..64,
        growth in 4.0f32..16.0,
        seed in any::<u64>(),
        symmetric in any::<bool>(),
        axis in 0usize..2,
    ) {
        let w = Tensor::<f32>::randn_seeded(&[channels, per_channel], seed).unwrap();
        let mut data = w.into_vec();
        for (i, v) in data.iter_mut().enumerate() {
            *v *= growth.powi((i / per_channel) as i32);
        }
        let mut w = t(data, &[channels, per_channel]);
        if axis == 1 {
            w = w.transpose(0, 1).unwrap();
        }
        let (pt_scheme, pc_scheme) = if symmetric {
            (QScheme::per_tensor_symmetric(QDType::I8), QScheme::per_channel_symmetric(QDType::I8, axis))
        } else {
            (QScheme::per_tensor_affine(QDType::U8), QScheme::per_channel_affine(QDType::U8, axis))
        };
        let mut pt = MinMaxObserver::new(pt_scheme).unwrap();
        pt.observe(&w).unwrap();
        let mut pc = PerChannelMinMaxObserver::new(pc_scheme).unwrap();
        pc.observe(&w).unwrap();
        let y_pt = fake_quantize(&w, &pt_scheme, &pt.qparams().unwrap()).unwrap();
        let y_pc = fake_quantize(&w, &pc_scheme, &pc.qparams().unwrap()).unwrap();
        let (s_pt, s_pc) = (sqnr_db(w.as_slice(), y_pt.as_slice()).unwrap(), sqnr_db(w.as_slice(), y_pc.as_slice()).unwrap());
        prop_assert!(s_pc >= s_pt, "per-channel {s_pc:.2} dB < per-tensor {s_pt:.2} dB");
    }

    /// Global min-max over batches equals min-max over their concatenation,
    /// and the per-channel observer agrees with a direct reduction on any axis.
    #[test]
    fn min_max_observers_reduce_correctly(
        shape in prop::collection::vec(1usize..5, 1..4),
        seed in any::<u64>(),
        axis_pick in 0usize..3,
    ) {
        let x = Tensor::<f32>::randn_seeded(&shape, seed).unwrap();
        let axis = axis_pick % shape.len();
        let mut obs = PerChannelMinMaxObserver::new(QScheme::per_channel_affine(QDType::U8, axis)).unwrap();
        obs.observe(&x).unwrap();
        let (lo, hi) = obs.range().unwrap();
        let others: Vec<usize> = (0..shape.len()).filter(|&d| d != axis).collect();
        let (want_lo, want_hi) = if others.is_empty() {
            (x.to_vec(), x.to_vec())
        } else {
            (x.min_axes(&others, false).unwrap().to_vec(), x.max_axes(&others, false).unwrap().to_vec())
        };
        prop_assert_eq!(lo, want_lo);
        prop_assert_eq!(hi, want_hi);
        let mut g = MinMaxObserver::new(QScheme::default()).unwrap();
        for chunk in x.as_slice().chunks(3) {
            g.observe(&t1(chunk)).unwrap();
        }
        let (glo, ghi) = g.range().unwrap();
        let all = x.as_slice();
        prop_assert_eq!(glo[0], all.iter().cloned().fold(f32::INFINITY, f32::min));
        prop_assert_eq!(ghi[0], all.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    }
}
