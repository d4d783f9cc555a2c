//! Observers and quantize/dequantize against PyTorch 1.13 (the fixture
//! `tests/fixtures/observers.json`, written by
//! `tests/fixtures/generate_observers.py`).
//!
//! Zero points and integer values must match exactly; scales and chosen
//! ranges within 1e-6 relative. Observers PyTorch lacks are checked against
//! the script's own references: mean ± k·σ in float64 and a NumPy version of
//! TensorRT's entropy calibration run on `torch.histc`'s histogram; their
//! scales and zero points come from PyTorch's `MinMaxObserver` fed the
//! chosen range.

use std::sync::OnceLock;

use anneal_quant::{
    EntropyObserver, HistogramObserver, MeanStdObserver, MinMaxObserver,
    MovingAverageMinMaxObserver, Observer, PerChannelMinMaxObserver, QDType, QParams, QScheme,
    QTensor,
};
use anneal_tensor::Tensor;
use serde_json::Value;

const RTOL: f64 = 1e-6;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        serde_json::from_str(include_str!("../fixtures/observers.json")).expect("valid JSON")
    })
}

fn cases(family: &str) -> &'static [Value] {
    fixture()[family]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no {family} list"))
}

fn tensor(name: &str) -> Tensor<f32> {
    let t = &fixture()["tensors"][name];
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = t["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_vec(data, &shape).unwrap()
}

fn f32_of(v: &Value) -> f32 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as f32
}

fn i32_of(v: &Value) -> i32 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}")) as i32
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn dtype(name: &str) -> QDType {
    match name {
        "quint8" => QDType::U8,
        "qint8" => QDType::I8,
        other => panic!("unknown dtype {other}"),
    }
}

/// The anneal scheme for a fixture case (`dtype`, `qscheme`, `reduce_range`,
/// optional custom `quant_min`/`quant_max`, optional `axis`).
fn scheme_of(case: &Value) -> QScheme {
    let dt = dtype(str_of(&case["dtype"]));
    let axis = case["axis"].as_u64().map(|a| a as usize);
    let mut s = match (str_of(&case["qscheme"]), axis) {
        ("per_tensor_affine", None) => QScheme::per_tensor_affine(dt),
        ("per_tensor_symmetric", None) => QScheme::per_tensor_symmetric(dt),
        ("per_channel_affine", Some(a)) => QScheme::per_channel_affine(dt, a),
        ("per_channel_symmetric", Some(a)) => QScheme::per_channel_symmetric(dt, a),
        (q, a) => panic!("unexpected qscheme {q} with axis {a:?}"),
    };
    if case["custom_range"].as_bool() == Some(true) {
        s = s
            .with_range(i32_of(&case["quant_min"]), i32_of(&case["quant_max"]))
            .unwrap();
    }
    if case["reduce_range"].as_bool() == Some(true) {
        s = s.with_reduce_range().unwrap();
    }
    if let Some(qmin) = case["quant_min"].as_i64() {
        assert_eq!(
            (s.qmin(), s.qmax()),
            (qmin as i32, i32_of(&case["quant_max"])),
            "range of {case}"
        );
    }
    s
}

fn assert_rel(got: f32, want: f32, what: &str, ctx: &Value) {
    let (g, w) = (f64::from(got), f64::from(want));
    let tol = RTOL * w.abs().max(f64::from(f32::MIN_POSITIVE));
    assert!(
        (g - w).abs() <= tol,
        "{what}: got {got:e}, PyTorch {want:e} (relative error {:.2e}) in case {ctx}",
        (g - w).abs() / w.abs()
    );
}

fn assert_qparams(p: &QParams, scales: &[f32], zero_points: &[i32], ctx: &Value) {
    assert_eq!(p.len(), scales.len(), "number of channels in {ctx}");
    for (c, (&g, &w)) in p.scales().iter().zip(scales).enumerate() {
        assert_rel(g, w, &format!("scale[{c}]"), ctx);
        assert!(
            g.is_normal(),
            "scale[{c}] {g} is not a normal float in {ctx}"
        );
    }
    assert_eq!(p.zero_points(), zero_points, "zero points in {ctx}");
}

fn assert_per_tensor(p: &QParams, case: &Value) {
    assert_eq!(p.axis(), None);
    assert_qparams(
        p,
        &[f32_of(&case["scale"])],
        &[i32_of(&case["zero_point"])],
        case,
    );
}

fn observe_all(obs: &mut dyn Observer, names: &[Value]) {
    for name in names {
        obs.observe(&tensor(str_of(name))).unwrap();
    }
}

#[test]
fn fixture_metadata() {
    let f = fixture();
    assert!(str_of(&f["torch_version"]).starts_with("1.13"));
    assert_eq!(f32_of(&f["eps"]), f32::EPSILON);
    for (family, n) in [
        ("minmax", 57),
        ("moving_average", 4),
        ("per_channel", 16),
        ("histogram", 12),
        ("entropy", 8),
        ("mean_std", 16),
        ("quantize", 12),
    ] {
        assert_eq!(
            cases(family).len(),
            n,
            "{family}: fixture changed, update this test"
        );
    }
}

#[test]
fn min_max_observer_matches_pytorch() {
    for case in cases("minmax") {
        let mut obs = MinMaxObserver::new(scheme_of(case)).unwrap();
        obs.observe(&tensor(str_of(&case["tensor"]))).unwrap();
        let (lo, hi) = obs.range().unwrap();
        assert_eq!(
            (lo[0], hi[0]),
            (f32_of(&case["min"]), f32_of(&case["max"])),
            "{case}"
        );
        assert_per_tensor(&obs.qparams().unwrap(), case);
    }
}

#[test]
fn moving_average_observer_matches_pytorch() {
    for case in cases("moving_average") {
        let c = f32_of(&case["averaging_constant"]);
        assert_eq!(c, MovingAverageMinMaxObserver::DEFAULT_AVERAGING_CONSTANT);
        let mut obs = MovingAverageMinMaxObserver::new(scheme_of(case)).unwrap();
        observe_all(&mut obs, case["batches"].as_array().unwrap());
        let (lo, hi) = obs.range().unwrap();
        assert_rel(lo[0], f32_of(&case["min"]), "running min", case);
        assert_rel(hi[0], f32_of(&case["max"]), "running max", case);
        assert_per_tensor(&obs.qparams().unwrap(), case);
    }
}

#[test]
fn per_channel_observer_matches_pytorch() {
    for case in cases("per_channel") {
        let scheme = scheme_of(case);
        let mut obs = PerChannelMinMaxObserver::new(scheme).unwrap();
        obs.observe(&tensor(str_of(&case["tensor"]))).unwrap();
        if let Some(then) = case["then"].as_str() {
            obs.observe(&tensor(then)).unwrap();
        }
        let p = obs.qparams().unwrap();
        assert_eq!(p.axis(), scheme.axis());
        let scales: Vec<f32> = case["scales"]
            .as_array()
            .unwrap()
            .iter()
            .map(f32_of)
            .collect();
        let zps: Vec<i32> = case["zero_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(i32_of)
            .collect();
        assert_qparams(&p, &scales, &zps, case);
    }
}

#[test]
fn histogram_observer_matches_pytorch() {
    for case in cases("histogram") {
        let mut obs = HistogramObserver::with_bins(
            scheme_of(case),
            case["bins"].as_u64().unwrap() as usize,
            case["upsample_rate"].as_u64().unwrap() as usize,
        )
        .unwrap();
        observe_all(&mut obs, case["batches"].as_array().unwrap());
        let (_, hmin, hmax) = obs.histogram().unwrap();
        assert_rel(hmin, f32_of(&case["hist_min"]), "histogram min", case);
        assert_rel(hmax, f32_of(&case["hist_max"]), "histogram max", case);
        let (lo, hi) = obs.range().unwrap();
        assert_rel(lo[0], f32_of(&case["search_min"]), "searched min", case);
        assert_rel(hi[0], f32_of(&case["search_max"]), "searched max", case);
        assert_per_tensor(&obs.qparams().unwrap(), case);
    }
}

#[test]
fn entropy_observer_matches_numpy_tensorrt_reference() {
    for case in cases("entropy") {
        let mut obs =
            EntropyObserver::with_bins(scheme_of(case), case["bins"].as_u64().unwrap() as usize)
                .unwrap();
        obs.observe(&tensor(str_of(&case["tensor"]))).unwrap();
        assert_rel(
            obs.threshold().unwrap(),
            f32_of(&case["threshold"]),
            "threshold",
            case,
        );
        let (lo, hi) = obs.range().unwrap();
        assert_rel(lo[0], f32_of(&case["lo"]), "lo", case);
        assert_rel(hi[0], f32_of(&case["hi"]), "hi", case);
        assert_per_tensor(&obs.qparams().unwrap(), case);
    }
}

#[test]
fn mean_std_observer_matches_float64_reference() {
    for case in cases("mean_std") {
        let k = case["k"].as_f64().unwrap();
        let mut obs = MeanStdObserver::with_k(scheme_of(case), k).unwrap();
        // Split into two batches: the pooled statistics must not care.
        let x = tensor(str_of(&case["tensor"])).into_vec();
        let cut = x.len() / 3;
        obs.observe(&Tensor::from_vec(x[..cut].to_vec(), &[cut]).unwrap())
            .unwrap();
        obs.observe(&Tensor::from_vec(x[cut..].to_vec(), &[x.len() - cut]).unwrap())
            .unwrap();
        let (mean, std) = (
            case["mean"].as_f64().unwrap(),
            case["std"].as_f64().unwrap(),
        );
        assert!((obs.mean().unwrap() - mean).abs() <= 1e-9 * mean.abs().max(1e-6));
        assert!((obs.std().unwrap() - std).abs() <= 1e-9 * std.max(1e-6));
        let (lo, hi) = obs.range().unwrap();
        assert_rel(lo[0], f32_of(&case["lo"]), "lo", case);
        assert_rel(hi[0], f32_of(&case["hi"]), "hi", case);
        assert_per_tensor(&obs.qparams().unwrap(), case);
    }
}

#[test]
fn quantize_and_dequantize_match_pytorch() {
    for case in cases("quantize") {
        let x = tensor(str_of(&case["tensor"]));
        let dt = dtype(str_of(&case["dtype"]));
        let scales: Vec<f32> = case["scales"]
            .as_array()
            .unwrap()
            .iter()
            .map(f32_of)
            .collect();
        let zps: Vec<i32> = case["zero_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(i32_of)
            .collect();
        let (scheme, params) = match case["axis"].as_u64() {
            None => (
                QScheme::per_tensor_affine(dt),
                QParams::per_tensor(scales[0], zps[0]).unwrap(),
            ),
            Some(a) => (
                QScheme::per_channel_affine(dt, a as usize),
                QParams::per_channel(scales, zps, a as usize).unwrap(),
            ),
        };
        let q = QTensor::quantize(&x, &scheme, &params).unwrap();
        let want_q: Vec<i32> = case["int_repr"]
            .as_array()
            .unwrap()
            .iter()
            .map(i32_of)
            .collect();
        let got_q = q.int_repr().as_slice();
        for (i, (&g, &w)) in got_q.iter().zip(&want_q).enumerate() {
            assert_eq!(
                g,
                w,
                "int value {i} (x = {:e}) in case {} {} {:?}",
                x.as_slice()[i],
                case["tensor"],
                case["dtype"],
                case["axis"]
            );
        }
        assert_eq!(got_q.len(), want_q.len());
        let want_x: Vec<f32> = case["dequant"]
            .as_array()
            .unwrap()
            .iter()
            .map(f32_of)
            .collect();
        assert_eq!(q.dequantize().to_vec(), want_x, "dequantized values");
    }
}
