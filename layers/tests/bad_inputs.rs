//! Bad-input sweep of the layers crate: every layer is built from valid and
//! invalid configurations (zero, huge, NaN, out-of-range values), then run
//! forward in inference and training mode and backward on inputs of every
//! rank, empty batches, wrong feature sizes and NaN/±∞ values; every loss
//! meets mismatched shapes, out-of-range targets and bad options; every
//! initialiser meets degenerate and overflowing shapes. Each call returns a
//! typed error naming its op or a result; none panics.

use anneal_autograd::Var;
use anneal_layers::init::{self, FanMode, Nonlinearity};
use anneal_layers::*;
use anneal_tensor::{Conv2dParams, Error, Pool2dParams, Tensor};
use rand::rngs::StdRng;
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

/// Whole numbers 0..7 (valid embedding indices for small tables).
fn iota(shape: &[usize]) -> Tensor<f32> {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| (i % 7) as f32).collect(), shape).unwrap()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Input shapes: every rank, empty batches, zero-sized features, and the
/// feature sizes the layers below expect (3 channels, 4 or 5 features).
const INPUTS: &[&[usize]] = &[
    &[],
    &[0],
    &[5],
    &[2, 5],
    &[0, 5],
    &[2, 0],
    &[2, 3, 5],
    &[2, 3, 4],
    &[2, 0, 4],
    &[0, 3, 4],
    &[2, 3, 4, 4],
    &[0, 3, 4, 4],
    &[2, 3, 1, 1],
    &[2, 3, 0, 4],
    &[1, 3, 8, 8],
    &[2, 3, 5, 5],
    &[1, 1, 1, 1, 1],
];

/// Layers built from valid configurations, by name.
fn layers() -> Vec<(String, Box<dyn Module<f32>>)> {
    let mut r = rng();
    let mut v: Vec<(String, Box<dyn Module<f32>>)> = vec![
        (
            "Linear".into(),
            Box::new(LinearConfig::new(5, 3).init(&mut r).unwrap()),
        ),
        (
            "Conv2d same".into(),
            Box::new(
                Conv2dConfig::new(3, 4, 3)
                    .with_same_padding()
                    .init(&mut r)
                    .unwrap(),
            ),
        ),
        (
            "Conv2d strided grouped".into(),
            Box::new(
                Conv2dConfig::new(3, 6, 2)
                    .with_stride(2)
                    .with_groups(3)
                    .with_dilation(2)
                    .init(&mut r)
                    .unwrap(),
            ),
        ),
        (
            "Conv1d".into(),
            Box::new(Conv1dConfig::new(3, 2, 2).init(&mut r).unwrap()),
        ),
        (
            "ConvTranspose2d".into(),
            Box::new({
                let mut c = ConvTranspose2dConfig::new(3, 2, 2);
                c.params = Conv2dParams::new(2, 0);
                c.output_padding = [1, 0];
                c.init(&mut r).unwrap()
            }),
        ),
        (
            "BatchNorm".into(),
            Box::new(BatchNormConfig::new(3).init().unwrap()),
        ),
        ("LayerNorm".into(), Box::new(LayerNorm::new(&[5]).unwrap())),
        (
            "LayerNorm2".into(),
            Box::new(LayerNorm::new(&[4, 4]).unwrap()),
        ),
        ("GroupNorm".into(), Box::new(GroupNorm::new(1, 3).unwrap())),
        ("RmsNorm".into(), Box::new(RmsNorm::new(&[5]).unwrap())),
        ("MaxPool2d".into(), Box::new(MaxPool2d::new(2))),
        ("AvgPool2d".into(), Box::new(AvgPool2d::new(3))),
        ("AdaptiveAvgPool2d".into(), Box::new(AdaptiveAvgPool2d)),
        ("Flatten".into(), Box::new(Flatten::default())),
        ("Flatten bad".into(), Box::new(Flatten { start: 3, end: 1 })),
        ("Dropout".into(), Box::new(Dropout::new(0.5, 1).unwrap())),
        ("Dropout1".into(), Box::new(Dropout::new(1.0, 1).unwrap())),
        ("Relu".into(), Box::new(Relu)),
        ("LeakyRelu".into(), Box::new(LeakyRelu { slope: f64::NAN })),
        ("Gelu".into(), Box::new(Gelu { approximate: true })),
        ("Silu".into(), Box::new(Silu)),
        ("Sigmoid".into(), Box::new(Sigmoid)),
        ("Tanh".into(), Box::new(Tanh)),
        ("Softmax".into(), Box::new(Softmax { axis: -1 })),
        ("LogSoftmax".into(), Box::new(LogSoftmax { axis: 7 })),
        (
            "Embedding".into(),
            Box::new(Embedding::new(7, 4, Some(2), &mut r).unwrap()),
        ),
        (
            "Sinusoidal".into(),
            Box::new(SinusoidalPositionalEncoding::new(5, 3).unwrap()),
        ),
        (
            "Learned".into(),
            Box::new(LearnedPositionalEncoding::new(3, 5, &mut r).unwrap()),
        ),
        (
            "Rnn".into(),
            Box::new(
                RnnConfig::new(5, 3)
                    .with_num_layers(2)
                    .with_dropout(0.5, 1)
                    .with_bidirectional(true)
                    .init(&mut r)
                    .unwrap(),
            ),
        ),
        (
            "Lstm".into(),
            Box::new(
                LstmConfig::new(5, 3)
                    .with_num_layers(2)
                    .init(&mut r)
                    .unwrap(),
            ),
        ),
        (
            "Gru".into(),
            Box::new(
                GruConfig::new(4, 3)
                    .with_bidirectional(true)
                    .init(&mut r)
                    .unwrap(),
            ),
        ),
        (
            "MultiHeadAttention".into(),
            Box::new(
                MultiHeadAttentionConfig::new(4, 2)
                    .with_dropout(0.5)
                    .init(&mut r)
                    .unwrap(),
            ),
        ),
        (
            "Sequential".into(),
            Box::new(
                Sequential::new()
                    .push(LinearConfig::new(5, 4).init(&mut r).unwrap())
                    .push(Relu)
                    .push(LayerNorm::new(&[4]).unwrap()),
            ),
        ),
        (
            "Sequential empty".into(),
            Box::new(Sequential::<f32>::new()),
        ),
    ];
    let cfg = TransformerLayerConfig::new(4, 2).with_dim_feedforward(8);
    let enc = cfg.init_encoder::<f32>(&mut r).unwrap();
    v.push(("TransformerEncoderLayer".into(), Box::new(enc.clone())));
    v.push((
        "TransformerEncoderLayer pre-norm".into(),
        Box::new(
            cfg.with_norm_first(true)
                .init_encoder::<f32>(&mut r)
                .unwrap(),
        ),
    ));
    v.push((
        "TransformerDecoderLayer".into(),
        Box::new(cfg.init_decoder::<f32>(&mut r).unwrap()),
    ));
    v.push((
        "TransformerEncoder".into(),
        Box::new(TransformerEncoder::new(&enc, 2, 3, Some(LayerNorm::new(&[4]).unwrap())).unwrap()),
    ));
    v
}

#[test]
fn every_layer_on_every_input_shape_and_special_values() {
    let mut s = Sweep::default();
    for (name, mut layer) in layers() {
        for shape in INPUTS {
            for (kind, values) in [("special", special(shape)), ("iota", iota(shape))] {
                let what = || format!("{name} on {shape:?} {kind}");
                let x = Var::leaf(values);
                if let Some(Ok(y)) = s.fallible(what, || layer.forward(&x)) {
                    let seed = Tensor::ones_like(y.value());
                    s.fallible(what, || y.backward_with(seed));
                }
                if let Some(Ok(y)) = s.fallible(what, || layer.forward_train(&x)) {
                    if let Some(Ok(g)) = s.fallible(what, || y.sum_all()?.backward()) {
                        for (pname, p) in layer.named_parameters() {
                            if let Some(t) = g.get(p) {
                                if t.shape() != p.shape() {
                                    s.bad_errors.push(format!(
                                        "{}: gradient of {pname} has shape {:?}",
                                        what(),
                                        t.shape()
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        s.run(|| format!("{name} reseed"), || layer.reseed(u64::MAX));
        s.run(
            || format!("{name} state_dict"),
            || state_dict(layer.as_ref()).len(),
        );
    }
    s.finish(2000);
}

#[test]
fn invalid_configurations_are_errors() {
    let mut s = Sweep::default();
    let mut r = rng();
    // Element counts past any address space (so that even an overcommitting
    // allocator refuses them) or past usize.
    let huge = [usize::MAX, usize::MAX / 2, 1 << 24];
    let sizes = [0, 1, 3, usize::MAX, 1 << 47];
    for &a in &sizes {
        for &b in &sizes {
            let w = || format!("{a} {b}");
            s.fallible(w, || {
                LinearConfig::new(a, b).init::<f32>(&mut r).map(|_| ())
            });
            s.fallible(w, || {
                Conv2dConfig::new(a, b, 3).init::<f32>(&mut r).map(|_| ())
            });
            s.fallible(w, || {
                Conv2dConfig::new(3, 3, a)
                    .with_stride(b)
                    .init::<f32>(&mut r)
                    .map(|_| ())
            });
            s.fallible(w, || {
                Conv2dConfig::new(4, 4, 3)
                    .with_groups(a)
                    .with_dilation(b)
                    .with_same_padding()
                    .init::<f32>(&mut r)
                    .map(|_| ())
            });
            s.fallible(w, || {
                Conv1dConfig::new(a, b, 2).init::<f32>(&mut r).map(|_| ())
            });
            s.fallible(w, || {
                ConvTranspose2dConfig::new(a, b, 2)
                    .init::<f32>(&mut r)
                    .map(|_| ())
            });
            s.fallible(w, || {
                Embedding::<f32>::new(a, b, Some(a), &mut r).map(|_| ())
            });
            s.fallible(w, || Embedding::<f32>::new(a, b, None, &mut r).map(|_| ()));
            s.fallible(w, || LayerNorm::<f32>::new(&[a, b]).map(|_| ()));
            s.fallible(w, || GroupNorm::<f32>::new(a, b).map(|_| ()));
            s.fallible(w, || RmsNorm::<f32>::new(&[a, b]).map(|_| ()));
            s.fallible(w, || {
                SinusoidalPositionalEncoding::<f32>::new(a, b).map(|_| ())
            });
            s.fallible(w, || {
                LearnedPositionalEncoding::<f32>::new(a, b, &mut r).map(|_| ())
            });
            s.fallible(w, || RnnConfig::new(a, b).init::<f32>(&mut r).map(|_| ()));
            s.fallible(w, || {
                LstmConfig::new(3, 3)
                    .with_num_layers(a)
                    .init::<f32>(&mut r)
                    .map(|_| ())
            });
            s.fallible(w, || GruConfig::new(a, b).init::<f32>(&mut r).map(|_| ()));
            s.fallible(w, || {
                MultiHeadAttentionConfig::new(a, b)
                    .init::<f32>(&mut r)
                    .map(|_| ())
            });
            s.fallible(w, || {
                TransformerLayerConfig::new(a, b)
                    .with_dim_feedforward(4)
                    .init_encoder::<f32>(&mut r)
                    .map(|_| ())
            });
            s.fallible(w, || {
                TransformerLayerConfig::new(4, 2)
                    .with_dim_feedforward(a)
                    .init_decoder::<f32>(&mut r)
                    .map(|_| ())
            });
            s.fallible(w, || BatchNormConfig::new(a).init::<f32>().map(|_| ()));
        }
    }
    for &h in &huge {
        s.fallible(|| format!("causal_mask {h}"), || causal_mask(h).map(|_| ()));
    }
    s.fallible(|| "causal_mask 0".into(), || causal_mask(0).map(|_| ()));
    for p in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let w = || format!("p {p}");
        let rejected = [
            s.fallible(w, || Dropout::new(p, 0).map(|_| ())),
            s.fallible(w, || {
                RnnConfig::new(3, 3)
                    .with_dropout(p, 0)
                    .with_num_layers(2)
                    .init::<f32>(&mut r)
                    .map(|_| ())
            }),
            s.fallible(w, || {
                MultiHeadAttentionConfig::new(4, 2)
                    .with_dropout(p)
                    .init::<f32>(&mut r)
                    .map(|_| ())
            }),
            s.fallible(w, || {
                TransformerLayerConfig::new(4, 2)
                    .with_dropout(p)
                    .init_encoder::<f32>(&mut r)
                    .map(|_| ())
            }),
            s.fallible(w, || {
                TransformerLayerConfig::new(4, 2)
                    .with_layer_norm_eps(p - 2.0)
                    .init_encoder::<f32>(&mut r)
                    .map(|_| ())
            }),
            s.fallible(w, || {
                LayerNorm::<f32>::with_options(&[3], p - 2.0, true).map(|_| ())
            }),
            s.fallible(w, || {
                BatchNormConfig {
                    momentum: Some(p),
                    ..BatchNormConfig::new(3)
                }
                .init::<f32>()
                .map(|_| ())
            }),
            s.fallible(w, || {
                BatchNormConfig {
                    eps: p - 2.0,
                    ..BatchNormConfig::new(3)
                }
                .init::<f32>()
                .map(|_| ())
            }),
            s.fallible(w, || {
                LearnedPositionalEncoding::<f32>::with_std(3, 4, p * f64::NAN, &mut r).map(|_| ())
            }),
        ];
        for (i, res) in rejected.into_iter().enumerate() {
            if let Some(Ok(())) = res {
                s.bad_errors
                    .push(format!("p {p}: configuration {i} accepted"));
            }
        }
    }
    s.finish(500);
}

#[test]
fn initialisers_on_degenerate_and_huge_shapes() {
    let mut s = Sweep::default();
    let mut r = rng();
    let shapes: &[&[usize]] = &[
        &[],
        &[3],
        &[0, 3],
        &[3, 0],
        &[2, 3, 0, 0],
        &[4, 3, 2, 2],
        &[usize::MAX, 2],
        &[2, usize::MAX, 2],
        &[1 << 40, 1 << 40],
        &[1 << 47, 1],
        &[1, 1 << 47],
    ];
    for shape in shapes {
        let w = || format!("{shape:?}");
        s.fallible(w, || init::fan_in_out(shape));
        for gain in [1.0, 0.0, f64::NAN, f64::INFINITY, -1.0] {
            let w = || format!("{shape:?} gain {gain}");
            s.fallible(w, || init::uniform::<f32>(shape, gain, &mut r).map(|_| ()));
            s.fallible(w, || init::normal::<f32>(shape, gain, &mut r).map(|_| ()));
            s.fallible(w, || {
                init::xavier_uniform::<f32>(shape, gain, &mut r).map(|_| ())
            });
            s.fallible(w, || {
                init::xavier_normal::<f32>(shape, gain, &mut r).map(|_| ())
            });
            s.fallible(w, || {
                init::orthogonal::<f32>(shape, gain, &mut r).map(|_| ())
            });
        }
        for nl in [
            Nonlinearity::Relu,
            Nonlinearity::LeakyRelu(f64::NAN),
            Nonlinearity::LeakyRelu(f64::INFINITY),
            Nonlinearity::Tanh,
        ] {
            for mode in [FanMode::FanIn, FanMode::FanOut] {
                let w = || format!("{shape:?} {nl:?} {mode:?}");
                s.fallible(w, || {
                    init::kaiming_uniform::<f32>(shape, mode, nl, &mut r).map(|_| ())
                });
                s.fallible(w, || {
                    init::kaiming_normal::<f32>(shape, mode, nl, &mut r).map(|_| ())
                });
            }
        }
        s.fallible(w, || init::default_weight::<f32>(shape, &mut r).map(|_| ()));
    }
    for (len, fan) in [(0, 0), (3, 0), (1 << 47, 3), (usize::MAX, usize::MAX)] {
        s.fallible(
            || format!("default_bias {len} {fan}"),
            || init::default_bias::<f32>(len, fan, &mut r).map(|_| ()),
        );
    }
    s.finish(300);
}

#[test]
fn losses_with_mismatched_shapes_targets_and_options() {
    let mut s = Sweep::default();
    let logit_shapes: &[&[usize]] = &[
        &[],
        &[0],
        &[4],
        &[3, 4],
        &[0, 4],
        &[3, 0],
        &[3, 4, 2],
        &[3, 4, 0],
    ];
    let target_shapes: &[&[usize]] = &[&[], &[0], &[3], &[4], &[3, 2], &[3, 0], &[2, 2]];
    let target_values = [0usize, 3, 4, usize::MAX];
    for ls in logit_shapes {
        let x = Var::leaf(special(ls));
        for ts in target_shapes {
            for &tv in &target_values {
                let n: usize = ts.iter().product();
                let t = Tensor::from_vec(vec![tv; n], ts).unwrap();
                for weight in [None, Some(special(&[4])), Some(special(&[3]))] {
                    for ignore in [None, Some(tv), Some(0)] {
                        for smoothing in [0.0, 0.1, 1.0, -0.1, 1.5, f64::NAN] {
                            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                                let opts = CrossEntropyOptions {
                                    weight: weight.clone(),
                                    ignore_index: ignore,
                                    reduction,
                                    label_smoothing: smoothing,
                                };
                                let w = || format!("{ls:?} targets {ts:?}={tv} {opts:?}");
                                // nll_loss has no label smoothing (as PyTorch's)
                                // and ignores the option.
                                for (i, r) in [
                                    s.fallible(w, || cross_entropy(&x, &t, &opts)),
                                    s.fallible(w, || nll_loss(&x, &t, &opts)),
                                ]
                                .into_iter()
                                .enumerate()
                                {
                                    let Some(Ok(r)) = r else { continue };
                                    if i == 0 && !(0.0..=1.0).contains(&smoothing) {
                                        s.bad_errors.push(format!("{}: accepted", w()));
                                    }
                                    let seed = Tensor::ones_like(r.value());
                                    s.fallible(w, || r.backward_with(seed));
                                }
                            }
                        }
                    }
                }
            }
        }
        for ts in logit_shapes {
            let y = special(ts);
            for reduction in [Reduction::Mean, Reduction::None] {
                for p in [1.0, 0.0, -1.0, f64::NAN, f64::INFINITY] {
                    let w = || format!("{ls:?} vs {ts:?} {p} {reduction:?}");
                    let outs = [
                        s.fallible(w, || mse_loss(&x, &y, reduction)),
                        s.fallible(w, || l1_loss(&x, &y, reduction)),
                        s.fallible(w, || huber_loss(&x, &y, p, reduction)),
                        s.fallible(w, || smooth_l1_loss(&x, &y, p, reduction)),
                        s.fallible(w, || bce_with_logits(&x, &y, None, reduction)),
                        s.fallible(w, || {
                            bce_with_logits(&x, &y, Some(&special(&[4])), reduction)
                        }),
                        s.fallible(w, || {
                            bce_with_logits(&x, &y, Some(&special(&[5])), reduction)
                        }),
                    ];
                    for r in outs.into_iter().flatten().flatten() {
                        let seed = Tensor::ones_like(r.value());
                        s.fallible(w, || r.backward_with(seed));
                    }
                }
            }
        }
    }
    s.finish(50_000);
}

#[test]
fn attention_transformer_and_rnn_with_bad_masks_states_and_parameters() {
    let mut s = Sweep::default();
    let mut r = rng();
    let mut mha = MultiHeadAttentionConfig::new(4, 2)
        .init::<f32>(&mut r)
        .unwrap();
    let cfg = TransformerLayerConfig::new(4, 2).with_dim_feedforward(8);
    let mut enc = cfg.init_encoder::<f32>(&mut r).unwrap();
    let dec = cfg.init_decoder::<f32>(&mut r).unwrap();
    let seq_shapes: &[&[usize]] = &[
        &[2, 3, 4],
        &[2, 5, 4],
        &[2, 3, 5],
        &[2, 0, 4],
        &[0, 3, 4],
        &[3, 4],
    ];
    let masks: Vec<Option<Tensor<bool>>> = vec![
        None,
        Some(Tensor::full(&[3, 3], true).unwrap()),
        Some(Tensor::full(&[3, 5], false).unwrap()),
        Some(Tensor::full(&[4, 3, 3], false).unwrap()),
        Some(Tensor::full(&[7], false).unwrap()),
        Some(Tensor::full(&[0, 0], false).unwrap()),
    ];
    let kpms: Vec<Option<Tensor<bool>>> = vec![
        None,
        Some(Tensor::full(&[2, 3], true).unwrap()),
        Some(Tensor::full(&[2, 5], false).unwrap()),
        Some(Tensor::full(&[3], false).unwrap()),
    ];
    for qs in seq_shapes {
        let q = Var::leaf(special(qs));
        for ks in seq_shapes {
            let k = Var::leaf(special(ks));
            for m in &masks {
                for kpm in &kpms {
                    for causal in [false, true] {
                        let mut opts = AttentionMask::none().with_causal(causal);
                        if let Some(m) = m {
                            opts = opts.with_attn_mask(m.clone());
                        }
                        if let Some(p) = kpm {
                            opts = opts.with_key_padding_mask(p.clone());
                        }
                        let opts = opts.with_average_attn_weights(!causal);
                        let w =
                            || format!("q {qs:?} k {ks:?} mask {m:?} kpm {kpm:?} causal {causal}");
                        if let Some(Ok((y, _))) = s.fallible(w, || mha.attend(&q, &k, &k, &opts)) {
                            s.fallible(w, || y.sum_all()?.backward());
                        }
                        s.fallible(w, || mha.attend_train(&q, &k, &q, &opts).map(|_| ()));
                        s.fallible(w, || {
                            enc.forward_masked(&q, m.as_ref(), kpm.as_ref()).map(|_| ())
                        });
                        s.fallible(w, || {
                            enc.forward_masked_train(&q, m.as_ref(), kpm.as_ref())
                                .map(|_| ())
                        });
                        s.fallible(w, || {
                            dec.forward_decoder(&q, &k, m.as_ref(), None, kpm.as_ref(), None)
                                .map(|_| ())
                        });
                    }
                }
            }
        }
        // Parameters given as graph nodes: too few, too many, wrong shapes.
        let params: Vec<Var<f32>> = mha
            .named_parameters()
            .iter()
            .map(|(_, p)| p.var())
            .collect();
        let opts = AttentionMask::none();
        for take in [0, 1, params.len() - 1, params.len()] {
            let w = || format!("attend_with_params {take} of {qs:?}");
            s.fallible(w, || {
                mha.attend_with_params(&params[..take], &q, &q, &q, &opts)
                    .map(|_| ())
            });
        }
        let mut extra = params.clone();
        extra.push(params[0].clone());
        let mut reshaped = params.clone();
        reshaped[0] = reshaped[0].reshape(&[reshaped[0].value().numel()]).unwrap();
        s.fallible(
            || "extra".into(),
            || {
                mha.attend_with_params(&extra, &q, &q, &q, &opts)
                    .map(|_| ())
            },
        );
        s.fallible(
            || "reshaped".into(),
            || {
                mha.attend_with_params(&reshaped, &q, &q, &q, &opts)
                    .map(|_| ())
            },
        );
        let eparams: Vec<Var<f32>> = enc
            .named_parameters()
            .iter()
            .map(|(_, p)| p.var())
            .collect();
        s.fallible(
            || "enc params".into(),
            || {
                enc.forward_with_params(&eparams[1..], &q, &opts)
                    .map(|_| ())
            },
        );
        s.fallible(
            || "enc params".into(),
            || enc.forward_with_params(&reshaped, &q, &opts).map(|_| ()),
        );
    }
    // RNN states of the wrong shape, and functional weights that do not fit.
    let lstm = LstmConfig::new(4, 3)
        .with_num_layers(2)
        .init::<f32>(&mut r)
        .unwrap();
    let gru = GruConfig::new(4, 3)
        .with_bidirectional(true)
        .init::<f32>(&mut r)
        .unwrap();
    let rnn = RnnConfig::new(4, 3).init::<f32>(&mut r).unwrap();
    let states: Vec<(&str, RnnState<f32>)> = vec![
        ("h ok", RnnState::new(Var::leaf(special(&[2, 2, 3])))),
        ("h wrong", RnnState::new(Var::leaf(special(&[1, 2, 3])))),
        ("h rank", RnnState::new(Var::leaf(special(&[2, 3])))),
        ("h empty", RnnState::new(Var::leaf(special(&[2, 0, 3])))),
        (
            "hc",
            RnnState::with_cell(
                Var::leaf(special(&[2, 2, 3])),
                Var::leaf(special(&[2, 2, 3])),
            ),
        ),
        (
            "hc wrong",
            RnnState::with_cell(
                Var::leaf(special(&[2, 2, 3])),
                Var::leaf(special(&[2, 2, 4])),
            ),
        ),
    ];
    for xs in seq_shapes
        .iter()
        .chain([&[2usize, 1, 4][..], &[2, 0, 4]].iter())
    {
        let x = Var::leaf(special(xs));
        for (sname, st) in &states {
            let w = || format!("rnn {xs:?} state {sname}");
            for y in [
                s.fallible(w, || lstm.forward_seq(&x, Some(st))),
                s.fallible(w, || gru.forward_seq(&x, Some(st))),
                s.fallible(w, || rnn.forward_seq(&x, Some(st))),
            ]
            .into_iter()
            .flatten()
            .flatten()
            {
                s.fallible(w, || y.0.sum_all()?.backward());
            }
        }
        let wl: Vec<RnnWeights<Var<f32>>> = lstm.weights().iter().map(|w| w.vars()).collect();
        let wg: Vec<RnnWeights<Var<f32>>> = gru.weights().iter().map(|w| w.vars()).collect();
        let w = || format!("forward_seq_with {xs:?}");
        s.fallible(w, || lstm.forward_seq_with(&wl[..1], &x, None).map(|_| ()));
        s.fallible(w, || lstm.forward_seq_with(&wg, &x, None).map(|_| ()));
        s.fallible(w, || gru.forward_seq_with(&wl, &x, None).map(|_| ()));
        s.fallible(w, || gru.forward_seq_with(&[], &x, None).map(|_| ()));
    }
    // Decoding positions past the table.
    let pe = SinusoidalPositionalEncoding::<f32>::new(4, 3).unwrap();
    let lpe = LearnedPositionalEncoding::<f32>::new(3, 4, &mut r).unwrap();
    for offset in [0, 1, 3, usize::MAX] {
        let x = Var::leaf(special(&[2, 2, 4]));
        let w = || format!("forward_at {offset}");
        s.fallible(w, || pe.forward_at(&x, offset).map(|_| ()));
        s.fallible(w, || lpe.forward_at(&x, offset).map(|_| ()));
    }
    // Embedding lookups past the table.
    let emb = Embedding::<f32>::new(5, 2, None, &mut r).unwrap();
    for idx in [vec![0usize, 4], vec![5], vec![usize::MAX], vec![]] {
        let n = idx.len();
        let t = Tensor::from_vec(idx, &[n]).unwrap();
        s.fallible(|| format!("lookup {t:?}"), || emb.lookup(&t).map(|_| ()));
    }
    s.finish(3000);
}

#[test]
fn gradcheck_module_rejects_bad_tolerances() {
    let mut r = rng();
    let mut lin = LinearConfig::new(2, 2).init::<f64>(&mut r).unwrap();
    let x = Tensor::<f64>::ones(&[1, 2]).unwrap();
    for (eps, tol) in [
        (0.0, 1e-6),
        (f64::NAN, 1e-6),
        (f64::INFINITY, 1e-6),
        (1e-6, f64::NAN),
        (1e-6, -1.0),
    ] {
        let e = gradcheck_module(
            &mut lin,
            std::slice::from_ref(&x),
            |m, v| m.forward(&v[0]),
            eps,
            tol,
        )
        .unwrap_err();
        assert_eq!(e.op(), "gradcheck_module", "eps {eps} tol {tol}");
    }
    // No inputs: only the parameters are checked.
    let c = Var::constant(x.clone());
    let ok = gradcheck_module(&mut lin, &[], |m, _| m.forward(&c), 1e-6, 1e-6).unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    // A forward that fails is reported as its error.
    let e = gradcheck_module(
        &mut lin,
        &[],
        |m, _| m.forward(&Var::constant(special(&[3]).cast::<f64>())),
        1e-6,
        1e-6,
    )
    .unwrap_err();
    assert_eq!(e.op(), "Linear", "{e}");
}

#[test]
fn pooling_layer_parameters_out_of_range() {
    let mut s = Sweep::default();
    let x = Var::leaf(special(&[1, 2, 4, 4]));
    for k in [0, 1, 5, usize::MAX] {
        for st in [0, 1, usize::MAX] {
            for pad in [0, 1, usize::MAX] {
                let params = Pool2dParams {
                    kernel: [k, 2],
                    stride: [st, 2],
                    padding: [pad, 0],
                };
                let w = || format!("{params:?}");
                s.fallible(w, || MaxPool2d { params }.forward(&x));
                s.fallible(w, || {
                    AvgPool2d {
                        params,
                        count_include_pad: false,
                    }
                    .forward(&x)
                });
            }
        }
    }
    s.finish(72);
}

/// The panics and aborts this sweep found, each now a typed error.
#[test]
fn configurations_too_large_for_memory_are_errors() {
    let mut r = rng();
    let too_large = |e: Error| matches!(e, Error::TooLarge { .. });
    // BatchNorm's affine parameters were built with `expect`.
    let e = BatchNormConfig::new(1 << 47).init::<f32>().unwrap_err();
    assert!(too_large(e.clone()), "{e}");
    // Allocations sized by the configuration abort no more.
    let e = SinusoidalPositionalEncoding::<f32>::new(1, 1 << 47).unwrap_err();
    assert_eq!(e.op(), "SinusoidalPositionalEncoding");
    assert!(too_large(e));
    let e = causal_mask(1 << 24).unwrap_err();
    assert_eq!(
        e.to_string(),
        "causal_mask: shape [16777216, 16777216] has more elements than fit in memory"
    );
    let e = init::orthogonal::<f32>(&[1 << 47, 1], 1.0, &mut r).unwrap_err();
    assert!(too_large(e));
    let e = LstmConfig::new(3, 3)
        .with_num_layers(1 << 47)
        .init::<f32>(&mut r)
        .unwrap_err();
    assert!(
        e.to_string().starts_with("LSTM: 140737488355328 layers"),
        "{e}"
    );
    let e = GruConfig::new(3, usize::MAX)
        .init::<f32>(&mut r)
        .unwrap_err();
    assert!(e.to_string().contains("do not fit in memory"), "{e}");
    // Fans that overflow usize.
    let e = init::fan_in_out(&[2, usize::MAX, 2]).unwrap_err();
    assert!(too_large(e));
    // Non-finite epsilons.
    for eps in [f64::INFINITY, f64::NAN] {
        assert!(LayerNorm::<f32>::with_options(&[4], eps, true).is_err());
        let bn = BatchNormConfig {
            eps,
            ..BatchNormConfig::new(3)
        };
        assert!(bn.init::<f32>().is_err());
    }
}

/// Parameters and settings are public (`Param::value_mut`, `pub` fields):
/// a layer whose parameter was replaced by a tensor of another shape, or
/// whose settings were edited, answers with an error, never a panic.
#[test]
fn layers_with_parameters_of_the_wrong_shape() {
    let mut s = Sweep::default();
    let replacements: &[&[usize]] = &[&[], &[0], &[7], &[2, 2], &[1, 1, 1], &[3, 0, 2, 1, 1]];
    for (name, layer) in layers() {
        let n_params = {
            let mut n = 0;
            layer.visit("", &mut |_, e| {
                if matches!(e, Entry::Param(_) | Entry::Buffer(_)) {
                    n += 1;
                }
            });
            n
        };
        drop(layer);
        for k in 0..n_params {
            for shape in replacements {
                // A fresh copy of the layer with entry k replaced.
                let (_, mut layer) = layers().into_iter().find(|(n, _)| *n == name).unwrap();
                let mut i = 0;
                let mut pname = String::new();
                layer.visit_mut("", &mut |pn, e| {
                    let t = match e {
                        EntryMut::Param(p) => Some(p.value_mut()),
                        EntryMut::Buffer(b) => Some(b),
                        EntryMut::Counter(_) => None,
                    };
                    if let Some(t) = t {
                        if i == k {
                            *t = special(shape);
                            pname = pn.to_string();
                        }
                        i += 1;
                    }
                });
                for xs in [&[2usize, 3, 5][..], &[2, 3, 4, 4], &[2, 5], &[2, 3, 4]] {
                    let w = || format!("{name} with {pname} {shape:?} on {xs:?}");
                    let x = Var::leaf(iota(xs));
                    s.fallible(w, || layer.forward(&x));
                    if let Some(Ok(y)) = s.fallible(w, || layer.forward_train(&x)) {
                        s.fallible(w, || y.sum_all()?.backward());
                    }
                }
            }
        }
    }
    // Edited settings.
    let mut r = rng();
    let x = Var::leaf(iota(&[2, 3, 4, 4]));
    let mut conv = Conv2dConfig::new(3, 4, 3).init::<f32>(&mut r).unwrap();
    for (stride, groups) in [(0, 1), (1, 0), (1, 2), (usize::MAX, 1)] {
        conv.config.stride = [stride, 1];
        conv.config.groups = groups;
        s.fallible(
            || format!("conv stride {stride} groups {groups}"),
            || conv.forward(&x),
        );
    }
    let mut ln = LayerNorm::<f32>::new(&[4]).unwrap();
    for (shape, eps) in [
        (vec![], 1e-5),
        (vec![0], 1e-5),
        (vec![5], 1e-5),
        (vec![4], -1.0),
        (vec![4], f64::NAN),
    ] {
        ln.normalized_shape = shape.clone();
        ln.eps = eps;
        s.fallible(|| format!("layer norm {shape:?} {eps}"), || ln.forward(&x));
    }
    let mut gn = GroupNorm::<f32>::new(1, 3).unwrap();
    for (g, c) in [(0, 3), (2, 3), (1, 4), (usize::MAX, 3)] {
        gn.num_groups = g;
        gn.num_channels = c;
        s.fallible(|| format!("group norm {g} {c}"), || gn.forward(&x));
    }
    let mut bn = BatchNormConfig::new(3).init::<f32>().unwrap();
    for (m, eps) in [(Some(2.0), 1e-5), (None, -1.0), (Some(f64::NAN), f64::NAN)] {
        bn.config.momentum = m;
        bn.config.eps = eps;
        s.fallible(
            || format!("batch norm {m:?} {eps}"),
            || bn.forward_train(&x),
        );
        s.fallible(|| format!("batch norm {m:?} {eps}"), || bn.forward(&x));
    }
    let mut emb = Embedding::<f32>::new(5, 2, None, &mut r).unwrap();
    emb.padding_idx = Some(99);
    s.fallible(
        || "embedding padding 99".into(),
        || emb.forward(&Var::leaf(iota(&[2, 2]))),
    );
    s.finish(1000);
}
