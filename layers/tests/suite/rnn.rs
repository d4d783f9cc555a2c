//! RNN, LSTM and GRU: gradients (finite differences through the whole
//! stack), values against a plain-loop reference of PyTorch's documented
//! equations, PyTorch's parameter names and shapes, dropout, state
//! continuation and error cases.

use anneal_autograd::{gradcheck, Param, Var};
use anneal_layers::{
    GruConfig, LstmConfig, Module, ModuleExt, RnnConfig, RnnNonlinearity, RnnState, RnnWeights,
};
use anneal_tensor::{Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn_seeded(shape, seed).unwrap()
}

fn flat(v: &Var<f64>) -> Result<Var<f64>> {
    v.reshape(&[v.value().numel()])
}

/// The three recurrences under test, built with one shape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rnn(RnnNonlinearity),
    Lstm,
    Gru,
}

/// A layer of any kind behind one interface, for table-driven tests.
enum AnyLayer {
    Rnn(anneal_layers::Rnn<f64>),
    Lstm(anneal_layers::Lstm<f64>),
    Gru(anneal_layers::Gru<f64>),
}

struct Shape {
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    bias: bool,
}

impl AnyLayer {
    fn new(kind: Kind, s: &Shape, seed: u64) -> AnyLayer {
        let r = &mut rng(seed);
        match kind {
            Kind::Rnn(nl) => AnyLayer::Rnn(
                RnnConfig::new(s.input, s.hidden)
                    .with_nonlinearity(nl)
                    .with_num_layers(s.layers)
                    .with_bidirectional(s.bidirectional)
                    .with_bias(s.bias)
                    .init(r)
                    .unwrap(),
            ),
            Kind::Lstm => AnyLayer::Lstm(
                LstmConfig::new(s.input, s.hidden)
                    .with_num_layers(s.layers)
                    .with_bidirectional(s.bidirectional)
                    .with_bias(s.bias)
                    .init(r)
                    .unwrap(),
            ),
            Kind::Gru => AnyLayer::Gru(
                GruConfig::new(s.input, s.hidden)
                    .with_num_layers(s.layers)
                    .with_bidirectional(s.bidirectional)
                    .with_bias(s.bias)
                    .init(r)
                    .unwrap(),
            ),
        }
    }

    fn weights(&self) -> &[RnnWeights<Param<f64>>] {
        match self {
            AnyLayer::Rnn(l) => l.weights(),
            AnyLayer::Lstm(l) => l.weights(),
            AnyLayer::Gru(l) => l.weights(),
        }
    }

    fn forward_seq(
        &self,
        x: &Var<f64>,
        s: Option<&RnnState<f64>>,
    ) -> Result<(Var<f64>, RnnState<f64>)> {
        match self {
            AnyLayer::Rnn(l) => l.forward_seq(x, s),
            AnyLayer::Lstm(l) => l.forward_seq(x, s),
            AnyLayer::Gru(l) => l.forward_seq(x, s),
        }
    }

    fn forward_seq_with(
        &self,
        w: &[RnnWeights<Var<f64>>],
        x: &Var<f64>,
        s: Option<&RnnState<f64>>,
    ) -> Result<(Var<f64>, RnnState<f64>)> {
        match self {
            AnyLayer::Rnn(l) => l.forward_seq_with(w, x, s),
            AnyLayer::Lstm(l) => l.forward_seq_with(w, x, s),
            AnyLayer::Gru(l) => l.forward_seq_with(w, x, s),
        }
    }
}

// ---------------------------------------------------------------------------
// Gradient checks
// ---------------------------------------------------------------------------

/// Gradchecks output, h_n (and c_n) of a 2-layer bidirectional layer with
/// respect to the input, every parameter and (when `with_state`) h_0/c_0.
fn gradcheck_layer(kind: Kind, with_state: bool) {
    let (b, t, hidden) = (2, 3, 2);
    let shape = Shape {
        input: 3,
        hidden,
        layers: 2,
        bidirectional: true,
        bias: true,
    };
    let layer = AnyLayer::new(kind, &shape, 1);
    let cells = layer.weights().len();
    assert_eq!(cells, 4);
    let mut inputs = vec![randn(&[b, t, 3], 2)];
    for w in layer.weights() {
        for p in [
            &w.weight_ih,
            &w.weight_hh,
            w.bias_ih.as_ref().unwrap(),
            w.bias_hh.as_ref().unwrap(),
        ] {
            inputs.push(p.value().clone());
        }
    }
    let n_params = inputs.len() - 1;
    let lstm = kind == Kind::Lstm;
    if with_state {
        inputs.push(randn(&[cells, b, hidden], 3).mul_scalar(0.5));
        if lstm {
            inputs.push(randn(&[cells, b, hidden], 4).mul_scalar(0.5));
        }
    }
    let f = |v: &[Var<f64>]| -> Result<Var<f64>> {
        let weights: Vec<RnnWeights<Var<f64>>> = v[1..1 + n_params]
            .chunks(4)
            .map(|c| RnnWeights {
                weight_ih: c[0].clone(),
                weight_hh: c[1].clone(),
                bias_ih: Some(c[2].clone()),
                bias_hh: Some(c[3].clone()),
            })
            .collect();
        let state = with_state.then(|| RnnState {
            h: v[1 + n_params].clone(),
            c: lstm.then(|| v[2 + n_params].clone()),
        });
        let (y, s) = layer.forward_seq_with(&weights, &v[0], state.as_ref())?;
        assert_eq!(y.shape(), &[b, t, 2 * hidden]);
        let mut parts = vec![flat(&y)?, flat(&s.h)?];
        if let Some(c) = &s.c {
            parts.push(flat(c)?);
        }
        let refs: Vec<&Var<f64>> = parts.iter().collect();
        Var::concat(&refs, 0)
    };
    let r = gradcheck(f, &inputs, EPS, TOL).unwrap();
    assert!(
        r.is_ok(),
        "{kind:?} (state {with_state}): {}",
        r.unwrap_err()
    );
}

#[test]
fn gradcheck_rnn_tanh() {
    gradcheck_layer(Kind::Rnn(RnnNonlinearity::Tanh), false);
    gradcheck_layer(Kind::Rnn(RnnNonlinearity::Tanh), true);
}

#[test]
fn gradcheck_rnn_relu() {
    gradcheck_layer(Kind::Rnn(RnnNonlinearity::Relu), false);
    gradcheck_layer(Kind::Rnn(RnnNonlinearity::Relu), true);
}

#[test]
fn gradcheck_lstm() {
    gradcheck_layer(Kind::Lstm, false);
    gradcheck_layer(Kind::Lstm, true);
}

#[test]
fn gradcheck_gru() {
    gradcheck_layer(Kind::Gru, false);
    gradcheck_layer(Kind::Gru, true);
}

#[test]
fn every_parameter_gets_a_gradient_through_the_layer() {
    for kind in [Kind::Rnn(RnnNonlinearity::Tanh), Kind::Lstm, Kind::Gru] {
        let shape = Shape {
            input: 3,
            hidden: 4,
            layers: 2,
            bidirectional: true,
            bias: true,
        };
        let layer = AnyLayer::new(kind, &shape, 5);
        let x = Var::constant(randn(&[2, 5, 3], 6));
        let (y, s) = layer.forward_seq(&x, None).unwrap();
        let loss = y
            .square()
            .sum_all()
            .unwrap()
            .add(&s.h.sum_all().unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        for w in layer.weights() {
            for p in [&w.weight_ih, &w.weight_hh] {
                let g = grads.get(p).expect("gradient");
                assert_eq!(g.shape(), p.shape());
                assert!(g.abs().max_all().unwrap() > 0.0, "{kind:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Values against a plain-loop reference of PyTorch's equations
// ---------------------------------------------------------------------------

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Reference forward in plain f64 loops. `x` `[b, t, in]` row-major,
/// weights in the layer's order; returns (output, h_n, c_n) flattened.
#[allow(clippy::too_many_arguments)]
fn reference(
    kind: Kind,
    weights: &[RnnWeights<Param<f64>>],
    x: &[f64],
    (b, t, input): (usize, usize, usize),
    hidden: usize,
    layers: usize,
    dirs: usize,
    h0: Option<&[f64]>,
    c0: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let gates = match kind {
        Kind::Rnn(_) => 1,
        Kind::Lstm => 4,
        Kind::Gru => 3,
    };
    let gh = gates * hidden;
    let state_at = |s: Option<&[f64]>, k: usize, bi: usize, j: usize| {
        s.map_or(0.0, |s| s[(k * b + bi) * hidden + j])
    };
    let mut inp: Vec<f64> = x.to_vec(); // [b, t, f]
    let mut f_in = input;
    let mut h_n = vec![0.0; layers * dirs * b * hidden];
    let mut c_n = vec![0.0; layers * dirs * b * hidden];
    for l in 0..layers {
        let f_out = dirs * hidden;
        let mut out = vec![0.0; b * t * f_out];
        for d in 0..dirs {
            let k = l * dirs + d;
            let w = &weights[k];
            let wih = w.weight_ih.value().to_vec();
            let whh = w.weight_hh.value().to_vec();
            let bih = w
                .bias_ih
                .as_ref()
                .map_or(vec![0.0; gh], |p| p.value().to_vec());
            let bhh = w
                .bias_hh
                .as_ref()
                .map_or(vec![0.0; gh], |p| p.value().to_vec());
            for bi in 0..b {
                let mut h: Vec<f64> = (0..hidden).map(|j| state_at(h0, k, bi, j)).collect();
                let mut c: Vec<f64> = (0..hidden).map(|j| state_at(c0, k, bi, j)).collect();
                let times: Vec<usize> = if d == 0 {
                    (0..t).collect()
                } else {
                    (0..t).rev().collect()
                };
                for &ti in &times {
                    let xt = &inp[(bi * t + ti) * f_in..(bi * t + ti + 1) * f_in];
                    let gi: Vec<f64> = (0..gh)
                        .map(|g| bih[g] + (0..f_in).map(|m| wih[g * f_in + m] * xt[m]).sum::<f64>())
                        .collect();
                    let ghv: Vec<f64> = (0..gh)
                        .map(|g| {
                            bhh[g] + (0..hidden).map(|m| whh[g * hidden + m] * h[m]).sum::<f64>()
                        })
                        .collect();
                    let mut hn = vec![0.0; hidden];
                    for j in 0..hidden {
                        match kind {
                            Kind::Rnn(nl) => {
                                let pre = gi[j] + ghv[j];
                                hn[j] = match nl {
                                    RnnNonlinearity::Tanh => pre.tanh(),
                                    RnnNonlinearity::Relu => pre.max(0.0),
                                };
                            }
                            Kind::Lstm => {
                                let ig = sigmoid(gi[j] + ghv[j]);
                                let fg = sigmoid(gi[hidden + j] + ghv[hidden + j]);
                                let gg = (gi[2 * hidden + j] + ghv[2 * hidden + j]).tanh();
                                let og = sigmoid(gi[3 * hidden + j] + ghv[3 * hidden + j]);
                                c[j] = fg * c[j] + ig * gg;
                                hn[j] = og * c[j].tanh();
                            }
                            Kind::Gru => {
                                let r = sigmoid(gi[j] + ghv[j]);
                                let z = sigmoid(gi[hidden + j] + ghv[hidden + j]);
                                let n = (gi[2 * hidden + j] + r * ghv[2 * hidden + j]).tanh();
                                hn[j] = (1.0 - z) * n + z * h[j];
                            }
                        }
                    }
                    h = hn;
                    for j in 0..hidden {
                        out[(bi * t + ti) * f_out + d * hidden + j] = h[j];
                    }
                }
                for j in 0..hidden {
                    h_n[(k * b + bi) * hidden + j] = h[j];
                    c_n[(k * b + bi) * hidden + j] = c[j];
                }
            }
        }
        inp = out;
        f_in = f_out;
    }
    (inp, h_n, c_n)
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-12, "{what}[{i}]: {g} vs {w}");
    }
}

fn check_against_reference(kind: Kind, shape: &Shape, with_state: bool) {
    let (b, t) = (3, 5);
    let layer = AnyLayer::new(kind, shape, 11);
    let dirs = if shape.bidirectional { 2 } else { 1 };
    let cells = shape.layers * dirs;
    let x = randn(&[b, t, shape.input], 12);
    let lstm = kind == Kind::Lstm;
    let h0 = randn(&[cells, b, shape.hidden], 13);
    let c0 = randn(&[cells, b, shape.hidden], 14);
    let state = with_state.then(|| RnnState {
        h: Var::constant(h0.clone()),
        c: lstm.then(|| Var::constant(c0.clone())),
    });
    let (y, s) = layer
        .forward_seq(&Var::constant(x.clone()), state.as_ref())
        .unwrap();
    let (ry, rh, rc) = reference(
        kind,
        layer.weights(),
        x.as_slice(),
        (b, t, shape.input),
        shape.hidden,
        shape.layers,
        dirs,
        with_state.then(|| h0.as_slice()),
        (with_state && lstm).then(|| c0.as_slice()),
    );
    let what = format!("{kind:?} state {with_state}");
    assert_eq!(y.shape(), &[b, t, dirs * shape.hidden]);
    assert_eq!(s.h.shape(), &[cells, b, shape.hidden]);
    assert_close(&y.value().to_vec(), &ry, &format!("{what} output"));
    assert_close(&s.h.value().to_vec(), &rh, &format!("{what} h_n"));
    match &s.c {
        Some(c) => {
            assert!(lstm);
            assert_eq!(c.shape(), &[cells, b, shape.hidden]);
            assert_close(&c.value().to_vec(), &rc, &format!("{what} c_n"));
        }
        None => assert!(!lstm),
    }
}

const BIDI2: Shape = Shape {
    input: 4,
    hidden: 3,
    layers: 2,
    bidirectional: true,
    bias: true,
};

const UNI3_NOBIAS: Shape = Shape {
    input: 2,
    hidden: 5,
    layers: 3,
    bidirectional: false,
    bias: false,
};

#[test]
fn lstm_matches_reference() {
    for with_state in [false, true] {
        check_against_reference(Kind::Lstm, &BIDI2, with_state);
        check_against_reference(Kind::Lstm, &UNI3_NOBIAS, with_state);
    }
}

#[test]
fn gru_matches_reference() {
    for with_state in [false, true] {
        check_against_reference(Kind::Gru, &BIDI2, with_state);
        check_against_reference(Kind::Gru, &UNI3_NOBIAS, with_state);
    }
}

#[test]
fn rnn_matches_reference() {
    for nl in [RnnNonlinearity::Tanh, RnnNonlinearity::Relu] {
        for with_state in [false, true] {
            check_against_reference(Kind::Rnn(nl), &BIDI2, with_state);
            check_against_reference(Kind::Rnn(nl), &UNI3_NOBIAS, with_state);
        }
    }
}

/// Running a sequence in two pieces, passing the state on, equals running
/// it whole (unidirectional layers only).
#[test]
fn state_carries_over_between_chunks() {
    for kind in [Kind::Rnn(RnnNonlinearity::Tanh), Kind::Lstm, Kind::Gru] {
        let shape = Shape {
            input: 3,
            hidden: 4,
            layers: 2,
            bidirectional: false,
            bias: true,
        };
        let layer = AnyLayer::new(kind, &shape, 21);
        let x = Var::constant(randn(&[2, 7, 3], 22));
        let (y, s) = layer.forward_seq(&x, None).unwrap();
        let (y1, s1) = layer
            .forward_seq(&x.narrow(1, 0, 3).unwrap(), None)
            .unwrap();
        let (y2, s2) = layer
            .forward_seq(&x.narrow(1, 3, 4).unwrap(), Some(&s1))
            .unwrap();
        let joined = Var::concat(&[&y1, &y2], 1).unwrap();
        assert_close(&joined.value().to_vec(), &y.value().to_vec(), "output");
        assert_close(&s2.h.value().to_vec(), &s.h.value().to_vec(), "h_n");
        if let (Some(a), Some(b)) = (&s2.c, &s.c) {
            assert_close(&a.value().to_vec(), &b.value().to_vec(), "c_n");
        }
    }
}

/// The last time step of the forward half of the output is h_n of the
/// forward direction; the first time step of the backward half is h_n of
/// the backward direction (PyTorch's layout).
#[test]
fn bidirectional_layout_matches_h_n() {
    let layer = GruConfig::new(3, 4)
        .with_bidirectional(true)
        .init::<f64>(&mut rng(31))
        .unwrap();
    let x = Var::constant(randn(&[2, 5, 3], 32));
    let (y, s) = layer.forward_seq(&x, None).unwrap();
    let last_fwd = y.narrow(1, 4, 1).unwrap().narrow(2, 0, 4).unwrap();
    let first_bwd = y.narrow(1, 0, 1).unwrap().narrow(2, 4, 4).unwrap();
    let h_fwd = s.h.narrow(0, 0, 1).unwrap();
    let h_bwd = s.h.narrow(0, 1, 1).unwrap();
    assert_eq!(last_fwd.value().to_vec(), h_fwd.value().to_vec());
    assert_eq!(first_bwd.value().to_vec(), h_bwd.value().to_vec());
}

// ---------------------------------------------------------------------------
// Names, shapes, initialisation, Module
// ---------------------------------------------------------------------------

fn names_and_shapes<M: Module<f32>>(m: &M) -> Vec<(String, Vec<usize>)> {
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.shape().to_vec()))
        .collect()
}

/// `nn.LSTM(10, 20, num_layers=2, bidirectional=True)`'s
/// `named_parameters()`, from PyTorch's documentation of the attributes
/// (`weight_ih_l[k]`: `(4·hidden_size, input_size)` for k = 0, otherwise
/// `(4·hidden_size, num_directions·hidden_size)`, …).
#[test]
fn lstm_parameter_names_and_shapes_match_pytorch() {
    let lstm = LstmConfig::new(10, 20)
        .with_num_layers(2)
        .with_bidirectional(true)
        .init::<f32>(&mut rng(0))
        .unwrap();
    let expected: Vec<(String, Vec<usize>)> = [
        ("weight_ih_l0", vec![80, 10]),
        ("weight_hh_l0", vec![80, 20]),
        ("bias_ih_l0", vec![80]),
        ("bias_hh_l0", vec![80]),
        ("weight_ih_l0_reverse", vec![80, 10]),
        ("weight_hh_l0_reverse", vec![80, 20]),
        ("bias_ih_l0_reverse", vec![80]),
        ("bias_hh_l0_reverse", vec![80]),
        ("weight_ih_l1", vec![80, 40]),
        ("weight_hh_l1", vec![80, 20]),
        ("bias_ih_l1", vec![80]),
        ("bias_hh_l1", vec![80]),
        ("weight_ih_l1_reverse", vec![80, 40]),
        ("weight_hh_l1_reverse", vec![80, 20]),
        ("bias_ih_l1_reverse", vec![80]),
        ("bias_hh_l1_reverse", vec![80]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names_and_shapes(&lstm), expected);
    // 2·(80·10 + 80·20 + 160) + 2·(80·40 + 80·20 + 160) = 5120 + 9920
    assert_eq!(lstm.num_parameters(), 15_040);

    // Prefixed names inside a parent, as state_dict() gives them.
    let mut names = Vec::new();
    lstm.visit("encoder.lstm", &mut |n, _| names.push(n.to_string()));
    assert_eq!(names[0], "encoder.lstm.weight_ih_l0");
    assert_eq!(names[15], "encoder.lstm.bias_hh_l1_reverse");
}

#[test]
fn gru_and_rnn_shapes_and_bias_free_names() {
    let gru = GruConfig::new(10, 20)
        .with_num_layers(2)
        .with_bidirectional(true)
        .init::<f32>(&mut rng(0))
        .unwrap();
    let s = names_and_shapes(&gru);
    assert_eq!(s[0], ("weight_ih_l0".to_string(), vec![60, 10]));
    assert_eq!(s[9], ("weight_hh_l1".to_string(), vec![60, 20]));
    assert_eq!(s[12], ("weight_ih_l1_reverse".to_string(), vec![60, 40]));
    let rnn = RnnConfig::new(10, 20)
        .with_num_layers(2)
        .with_bias(false)
        .init::<f32>(&mut rng(0))
        .unwrap();
    assert_eq!(
        names_and_shapes(&rnn),
        vec![
            ("weight_ih_l0".to_string(), vec![20, 10]),
            ("weight_hh_l0".to_string(), vec![20, 20]),
            ("weight_ih_l1".to_string(), vec![20, 20]),
            ("weight_hh_l1".to_string(), vec![20, 20]),
        ]
    );
}

#[test]
fn default_init_is_uniform_one_over_sqrt_hidden() {
    let lstm = LstmConfig::new(30, 64)
        .with_num_layers(2)
        .init::<f64>(&mut rng(3))
        .unwrap();
    let bound = 1.0 / 8.0;
    for (name, p) in lstm.named_parameters() {
        let m = p.value().abs().max_all().unwrap();
        assert!(m <= bound && m > 0.9 * bound, "{name}: max |w| {m}");
        let mean = p.value().to_vec().iter().sum::<f64>() / p.value().numel() as f64;
        assert!(mean.abs() < 0.02, "{name}: mean {mean}");
    }
    // Same seed, same bits; other seed, other values.
    let again = LstmConfig::new(30, 64)
        .with_num_layers(2)
        .init::<f64>(&mut rng(3))
        .unwrap();
    assert_eq!(
        lstm.weights()[1].weight_hh.value().to_vec(),
        again.weights()[1].weight_hh.value().to_vec()
    );
}

#[test]
fn module_forward_is_the_output_sequence() {
    let mut gru = GruConfig::new(3, 4)
        .with_num_layers(2)
        .init::<f64>(&mut rng(41))
        .unwrap();
    let x = Var::constant(randn(&[2, 5, 3], 42));
    let y = gru.forward(&x).unwrap();
    assert_eq!(y.value(), gru.forward_seq(&x, None).unwrap().0.value());
    // No dropout configured: training equals inference.
    assert_eq!(y.value(), gru.forward_train(&x).unwrap().value());
    fn send_sync<S: Send + Sync>(_: &S) {}
    send_sync(&gru);
}

#[test]
fn dropout_acts_between_layers_in_training_only() {
    let cfg = LstmConfig::new(3, 16)
        .with_num_layers(2)
        .with_dropout(0.5, 9);
    let x = Var::constant(randn(&[4, 6, 3], 51));
    let mut a = cfg.init::<f64>(&mut rng(52)).unwrap();
    let mut b = cfg.init::<f64>(&mut rng(52)).unwrap();
    let eval = a.forward_seq(&x, None).unwrap().0;
    let train_a = a.forward_seq_train(&x, None).unwrap().0;
    let train_b = b.forward_seq_train(&x, None).unwrap().0;
    assert_ne!(eval.value(), train_a.value());
    // Seeded: same config, same masks.
    assert_eq!(train_a.value(), train_b.value());
    // The generator advances: the next mask differs.
    assert_ne!(
        train_a.value(),
        a.forward_seq_train(&x, None).unwrap().0.value()
    );
    // Inference is unaffected by training calls.
    assert_eq!(eval.value(), a.forward_seq(&x, None).unwrap().0.value());

    // One layer: there is no layer boundary, so dropout never applies.
    let mut one = LstmConfig::new(3, 16)
        .with_dropout(0.5, 9)
        .init::<f64>(&mut rng(53))
        .unwrap();
    assert_eq!(
        one.forward_seq(&x, None).unwrap().0.value(),
        one.forward_seq_train(&x, None).unwrap().0.value()
    );
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

fn err_text<V: std::fmt::Debug>(r: Result<V>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn bad_inputs_are_errors_naming_the_layer_and_shapes() {
    let lstm = LstmConfig::new(4, 3)
        .with_num_layers(2)
        .init::<f64>(&mut rng(61))
        .unwrap();
    let x = |s: &[usize]| Var::constant(Tensor::<f64>::zeros(s).unwrap());

    // Rank 2 (unbatched) and rank 4.
    let e = err_text(lstm.forward_seq(&x(&[5, 4]), None));
    assert!(e.starts_with("LSTM: ") && e.contains("[5, 4]"), "{e}");
    assert!(lstm.forward(&x(&[1, 2, 5, 4])).is_err());
    // Wrong feature size.
    let e = err_text(lstm.forward_seq(&x(&[2, 5, 3]), None));
    assert!(
        e.contains("LSTM") && e.contains("[2, 5, 3]") && e.contains("4"),
        "{e}"
    );
    // No time steps.
    let e = err_text(lstm.forward_seq(&x(&[2, 0, 4]), None));
    assert!(e.contains("LSTM") && e.contains("[2, 0, 4]"), "{e}");

    // Initial state of the wrong shape: batch, layers, batch-first by mistake.
    let good = x(&[2, 2, 3]);
    for bad in [&[2, 3, 3][..], &[1, 2, 3], &[2, 2, 4], &[2, 3]] {
        let s = RnnState::with_cell(x(bad), good.clone());
        let e = err_text(lstm.forward_seq(&x(&[2, 5, 4]), Some(&s)));
        assert!(e.contains("LSTM") && e.contains("[2, 2, 3]"), "{e}");
        let s = RnnState::with_cell(good.clone(), x(bad));
        let e = err_text(lstm.forward_seq(&x(&[2, 5, 4]), Some(&s)));
        assert!(e.contains("LSTM") && e.contains("initial c"), "{e}");
    }
    // LSTM without c; GRU with c.
    let e = err_text(lstm.forward_seq(&x(&[2, 5, 4]), Some(&RnnState::new(good.clone()))));
    assert!(e.contains("LSTM") && e.contains("cell state"), "{e}");
    let gru = GruConfig::new(4, 3)
        .with_num_layers(2)
        .init::<f64>(&mut rng(62))
        .unwrap();
    let s = RnnState::with_cell(good.clone(), good.clone());
    let e = err_text(gru.forward_seq(&x(&[2, 5, 4]), Some(&s)));
    assert!(e.contains("GRU") && e.contains("cell state"), "{e}");
    assert!(gru
        .forward_seq(&x(&[2, 5, 4]), Some(&RnnState::new(good)))
        .is_ok());
    let rnn = RnnConfig::new(4, 3).init::<f64>(&mut rng(63)).unwrap();
    let e = err_text(rnn.forward_seq(&x(&[2, 5, 7]), None));
    assert!(e.starts_with("RNN: "), "{e}");
}

#[test]
fn bad_weights_and_configs_are_errors() {
    let mut lstm = LstmConfig::new(4, 3)
        .with_bidirectional(true)
        .init::<f64>(&mut rng(71))
        .unwrap();
    let x = Var::constant(Tensor::<f64>::zeros(&[2, 5, 4]).unwrap());
    let mut w: Vec<RnnWeights<Var<f64>>> = lstm.weights().iter().map(|w| w.vars()).collect();
    assert!(lstm.forward_seq_with(&w, &x, None).is_ok());
    let e = err_text(lstm.forward_seq_with(&w[..1], &x, None));
    assert!(e.contains("LSTM") && e.contains("1 sets of weights"), "{e}");
    w[1].weight_hh = Var::constant(Tensor::zeros(&[12, 4]).unwrap());
    let e = err_text(lstm.forward_seq_with(&w, &x, None));
    assert!(
        e.contains("LSTM") && e.contains("weight_hh_l0_reverse") && e.contains("[12, 4]"),
        "{e}"
    );
    // A parameter replaced through weights_mut with a wrong shape.
    *lstm.weights_mut()[0].bias_ih.as_mut().unwrap() = Param::new(Tensor::zeros(&[3]).unwrap());
    let e = err_text(lstm.forward_seq(&x, None));
    assert!(e.contains("bias_ih_l0") && e.contains("[3]"), "{e}");

    let r = &mut rng(0);
    assert!(LstmConfig::new(4, 0).init::<f32>(r).is_err());
    assert!(GruConfig::new(4, 3)
        .with_num_layers(0)
        .init::<f32>(r)
        .is_err());
    let e = err_text(RnnConfig::new(4, 3).with_dropout(1.5, 0).init::<f32>(r));
    assert!(e.contains("RNN") && e.contains("1.5"), "{e}");
    assert!(RnnConfig::new(4, 3)
        .with_dropout(-0.1, 0)
        .init::<f32>(r)
        .is_err());
}

// ---------------------------------------------------------------------------
// PyTorch fixtures (tests/fixtures/generate.py, torch 1.13, float32):
// outputs, h_n, c_n and the gradients of Σ_k <output_k, grad_output_k>
// with respect to the input, the initial state and every parameter.
// ---------------------------------------------------------------------------

/// Every tensor of a fixture file, as f32 tensors.
fn read_fixture(case: &str) -> std::collections::HashMap<String, Tensor<f32>> {
    let path = format!(
        "{}/tests/fixtures/{case}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            let data: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, Tensor::from_vec(data, v.shape()).unwrap())
        })
        .collect()
}

fn assert_close_f32(got: &Tensor<f32>, want: &Tensor<f32>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.as_slice().iter().zip(want.as_slice()).enumerate() {
        assert!(
            (g - w).abs() <= 2e-5 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs PyTorch {w}"
        );
    }
}

/// Loads the fixture's parameters into `m` by name, runs it from the
/// fixture's input (and initial state) and compares values and gradients.
fn check_fixture<M: Module<f32>>(
    case: &str,
    mut m: M,
    lstm: bool,
    run: impl Fn(&M, &Var<f32>, Option<&RnnState<f32>>) -> Result<(Var<f32>, RnnState<f32>)>,
) {
    let fx = read_fixture(case);
    let mut loaded = 0;
    m.visit_mut("", &mut |name, e| {
        if let anneal_layers::EntryMut::Param(p) = e {
            p.set_value(fx[&format!("param.{name}")].clone()).unwrap();
            loaded += 1;
        }
    });
    let n_params = fx.keys().filter(|k| k.starts_with("param.")).count();
    assert_eq!(
        loaded, n_params,
        "{case}: every fixture parameter has a twin"
    );
    let x = Var::leaf(fx["input"].clone());
    let h0 = fx.get("input2").map(|t| Var::leaf(t.clone()));
    let c0 = fx.get("input3").map(|t| Var::leaf(t.clone()));
    let state = h0.as_ref().map(|h| RnnState {
        h: h.clone(),
        c: c0.clone(),
    });
    let (y, s) = run(&m, &x, state.as_ref()).unwrap();
    let mut outputs = vec![("output", y), ("output2", s.h)];
    if lstm {
        outputs.push(("output3", s.c.expect("LSTM returns c_n")));
    }
    let mut loss: Option<Var<f32>> = None;
    for (name, v) in &outputs {
        assert_close_f32(v.value(), &fx[*name], &format!("{case} {name}"));
        let go = Var::constant(fx[&name.replace("output", "grad_output")].clone());
        let term = v.mul(&go).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => l.add(&term).unwrap(),
            None => term,
        });
    }
    let grads = loss.unwrap().backward().unwrap();
    assert_close_f32(
        grads.wrt(&x).unwrap(),
        &fx["grad.input"],
        &format!("{case} grad.input"),
    );
    for (key, v) in [("grad.input2", &h0), ("grad.input3", &c0)] {
        if let Some(v) = v {
            assert_close_f32(grads.wrt(v).unwrap(), &fx[key], &format!("{case} {key}"));
        }
    }
    for (name, p) in m.named_parameters() {
        let key = format!("grad.param.{name}");
        assert_close_f32(grads.get(p).unwrap(), &fx[&key], &format!("{case} {key}"));
    }
}

#[test]
fn lstm_matches_pytorch_fixtures() {
    for case in ["lstm_bi2", "lstm_bi2_h0"] {
        let m = LstmConfig::new(3, 4)
            .with_num_layers(2)
            .with_bidirectional(true)
            .init::<f32>(&mut rng(0))
            .unwrap();
        check_fixture(case, m, true, |m, x, s| m.forward_seq(x, s));
    }
}

#[test]
fn gru_matches_pytorch_fixtures() {
    for case in ["gru_bi2", "gru_bi2_h0"] {
        let m = GruConfig::new(3, 4)
            .with_num_layers(2)
            .with_bidirectional(true)
            .init::<f32>(&mut rng(0))
            .unwrap();
        check_fixture(case, m, false, |m, x, s| m.forward_seq(x, s));
    }
}

#[test]
fn rnn_matches_pytorch_fixtures() {
    for case in ["rnn_tanh", "rnn_tanh_h0"] {
        let m = RnnConfig::new(3, 4).init::<f32>(&mut rng(0)).unwrap();
        check_fixture(case, m, false, |m, x, s| m.forward_seq(x, s));
    }
}

/// An empty batch runs (as in PyTorch) and gives empty outputs.
#[test]
fn empty_batch_gives_empty_outputs() {
    let lstm = LstmConfig::new(3, 4)
        .with_num_layers(2)
        .with_bidirectional(true)
        .init::<f64>(&mut rng(81))
        .unwrap();
    let x = Var::leaf(Tensor::<f64>::zeros(&[0, 5, 3]).unwrap());
    let (y, s) = lstm.forward_seq(&x, None).unwrap();
    assert_eq!(y.shape(), &[0, 5, 8]);
    assert_eq!(s.h.shape(), &[4, 0, 4]);
    assert_eq!(s.c.unwrap().shape(), &[4, 0, 4]);
}

/// The fused LSTM (2 layers, bidirectional, with an initial state), forward
/// and backward, gives the same bits on 1, 2 and 3 threads. The sizes are
/// large enough for the threaded GEMM paths (input projections, dW_hh).
#[test]
fn lstm_forward_and_backward_do_not_depend_on_thread_count() {
    let lstm = LstmConfig::new(16, 32)
        .with_num_layers(2)
        .with_bidirectional(true)
        .init::<f32>(&mut rng(91))
        .unwrap();
    let x = Tensor::<f32>::randn_seeded(&[8, 40, 16], 92).unwrap();
    let h0 = Tensor::<f32>::randn_seeded(&[4, 8, 32], 93).unwrap();
    let c0 = Tensor::<f32>::randn_seeded(&[4, 8, 32], 94).unwrap();
    let run = |threads: usize| -> Vec<Vec<u32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let xv = Var::leaf(x.clone());
            let (h, c) = (Var::leaf(h0.clone()), Var::leaf(c0.clone()));
            let (y, s) = lstm
                .forward_seq(&xv, Some(&RnnState::with_cell(h.clone(), c.clone())))
                .unwrap();
            let w = Var::constant(Tensor::randn_seeded(y.shape(), 95).unwrap());
            let loss = y
                .mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
                .add(&s.c.as_ref().unwrap().sum_all().unwrap())
                .unwrap();
            let g = loss.backward().unwrap();
            let mut out = vec![y.value().clone(), s.h.value().clone()];
            out.extend([&xv, &h, &c].map(|v| g.wrt(v).unwrap().clone()));
            for (_, p) in lstm.named_parameters() {
                out.push(g.get(p).unwrap().clone());
            }
            out.iter()
                .map(|t| t.as_slice().iter().map(|v| v.to_bits()).collect())
                .collect()
        })
    };
    let one = run(1);
    assert_eq!(one.len(), 5 + 16);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}
