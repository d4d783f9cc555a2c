//! Multi-head attention, Transformer layers and positional encodings:
//! gradient checks in f64, forward values against an independent plain-loop
//! reference and against PyTorch 1.13 (the `mha_*` / `transformer_*` cases of
//! `tests/fixtures/`, made by `generate.py`), masking invariances, PyTorch
//! parameter names, errors.

use crate::common;

use std::collections::HashMap;

use anneal_autograd::{gradcheck, Var};
use anneal_layers::{
    causal_mask, load_safetensors_bytes, to_safetensors_bytes, AttentionMask, LayerNorm,
    LearnedPositionalEncoding, Module, ModuleExt, MultiHeadAttention, MultiHeadAttentionConfig,
    SinusoidalPositionalEncoding, TransformerActivation, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer, TransformerLayerConfig,
};
use anneal_tensor::{Result, Tensor};
use rand::SeedableRng;

// ───────────────────────────── helpers ─────────────────────────────

const B: usize = 2;
const L: usize = 3;
const E: usize = 4;
const H: usize = 2;
const FF: usize = 6;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn_seeded(shape, seed).unwrap()
}

fn mask(data: &[u8], shape: &[usize]) -> Tensor<bool> {
    Tensor::from_vec(data.iter().map(|&b| b != 0).collect(), shape).unwrap()
}

/// Replaces every parameter by N(0, 0.5²) values so that biases and norm
/// affines are non-trivial.
fn randomise<M: Module<f64>>(m: &mut M, seed: u64) {
    for (i, p) in m.parameters_mut().into_iter().enumerate() {
        let v = randn(p.shape(), seed * 1000 + i as u64).mul_scalar(0.5);
        p.set_value(v).unwrap();
    }
}

fn param_values<M: Module<f64>>(m: &M) -> Vec<Tensor<f64>> {
    m.named_parameters()
        .into_iter()
        .map(|(_, p)| p.value().clone())
        .collect()
}

fn param_map<M: Module<f64>>(m: &M) -> HashMap<String, Vec<f64>> {
    m.named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.value().to_vec()))
        .collect()
}

fn mha(seed: u64) -> MultiHeadAttention<f64> {
    let mut m = MultiHeadAttentionConfig::new(E, H)
        .init(&mut rng(seed))
        .unwrap();
    randomise(&mut m, seed);
    m
}

fn layer_config(norm_first: bool, act: TransformerActivation) -> TransformerLayerConfig {
    TransformerLayerConfig::new(E, H)
        .with_dim_feedforward(FF)
        .with_norm_first(norm_first)
        .with_activation(act)
}

fn encoder(
    norm_first: bool,
    act: TransformerActivation,
    seed: u64,
) -> TransformerEncoderLayer<f64> {
    let mut l = layer_config(norm_first, act)
        .init_encoder(&mut rng(seed))
        .unwrap();
    randomise(&mut l, seed);
    l
}

fn decoder(
    norm_first: bool,
    act: TransformerActivation,
    seed: u64,
) -> TransformerDecoderLayer<f64> {
    let mut l = layer_config(norm_first, act)
        .init_decoder(&mut rng(seed))
        .unwrap();
    randomise(&mut l, seed);
    l
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

fn check(what: &str, f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>, inputs: &[Tensor<f64>]) {
    match gradcheck(f, inputs, 1e-6, 1e-6).unwrap() {
        Ok(()) => {}
        Err(fail) => panic!("{what}: {fail}"),
    }
}

// ───────────────────── independent plain-f64 reference ─────────────────────

/// `y[r, o] = Σ_i x[r, i]·w[o, i] + b[o]`.
fn ref_linear(x: &[f64], w: &[f64], b: &[f64], inf: usize) -> Vec<f64> {
    let outf = b.len();
    let rows = x.len() / inf;
    let mut y = vec![0.0; rows * outf];
    for r in 0..rows {
        for o in 0..outf {
            let mut s = b[o];
            for i in 0..inf {
                s += x[r * inf + i] * w[o * inf + i];
            }
            y[r * outf + o] = s;
        }
    }
    y
}

/// Multi-head attention by explicit loops over batch, head, query and key.
/// `forbidden(b, h, i, j)` says whether query i may not see key j.
/// Returns the output `[B, Lq, E]` and the head-averaged weights `[B, Lq, Lk]`.
#[allow(clippy::too_many_arguments)]
fn ref_mha(
    p: &HashMap<String, Vec<f64>>,
    prefix: &str,
    q: &[f64],
    kv: &[f64],
    b: usize,
    lq: usize,
    lk: usize,
    forbidden: &dyn Fn(usize, usize, usize, usize) -> bool,
) -> (Vec<f64>, Vec<f64>) {
    let (e, h) = (E, H);
    let d = e / h;
    let w = &p[&format!("{prefix}in_proj_weight")];
    let bi = &p[&format!("{prefix}in_proj_bias")];
    let wo = &p[&format!("{prefix}out_proj.weight")];
    let bo = &p[&format!("{prefix}out_proj.bias")];
    // Full projections q·W_qᵀ + b_q etc. with the row blocks of in_proj.
    let qp = ref_linear(q, &w[..e * e], &bi[..e], e);
    let kp = ref_linear(kv, &w[e * e..2 * e * e], &bi[e..2 * e], e);
    let vp = ref_linear(kv, &w[2 * e * e..], &bi[2 * e..], e);
    let mut ctx = vec![0.0; b * lq * e];
    let mut avg = vec![0.0; b * lq * lk];
    for bb in 0..b {
        for hh in 0..h {
            for i in 0..lq {
                let mut s = vec![f64::NEG_INFINITY; lk];
                for (j, sj) in s.iter_mut().enumerate() {
                    if forbidden(bb, hh, i, j) {
                        continue;
                    }
                    let mut dot = 0.0;
                    for c in 0..d {
                        dot +=
                            qp[(bb * lq + i) * e + hh * d + c] * kp[(bb * lk + j) * e + hh * d + c];
                    }
                    *sj = dot / (d as f64).sqrt();
                }
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let ex: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = ex.iter().sum();
                for j in 0..lk {
                    let a = ex[j] / z;
                    avg[(bb * lq + i) * lk + j] += a / h as f64;
                    for c in 0..d {
                        ctx[(bb * lq + i) * e + hh * d + c] +=
                            a * vp[(bb * lk + j) * e + hh * d + c];
                    }
                }
            }
        }
    }
    (ref_linear(&ctx, wo, bo, e), avg)
}

fn ref_layer_norm(x: &[f64], g: &[f64], b: &[f64]) -> Vec<f64> {
    let n = g.len();
    let mut y = vec![0.0; x.len()];
    for r in 0..x.len() / n {
        let row = &x[r * n..(r + 1) * n];
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        for c in 0..n {
            y[r * n + c] = (row[c] - mean) / (var + 1e-5).sqrt() * g[c] + b[c];
        }
    }
    y
}

/// erf by its Maclaurin series (accurate to ~1e-13 for |x| ≤ 3, plenty here).
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// One encoder layer written out by hand.
fn ref_encoder(
    p: &HashMap<String, Vec<f64>>,
    norm_first: bool,
    gelu: bool,
    x: &[f64],
    forbidden: &dyn Fn(usize, usize, usize, usize) -> bool,
) -> Vec<f64> {
    let sa = |h: &[f64]| ref_mha(p, "self_attn.", h, h, B, L, L, forbidden).0;
    let ff = |h: &[f64]| {
        let mut a = ref_linear(h, &p["linear1.weight"], &p["linear1.bias"], E);
        for v in a.iter_mut() {
            *v = if gelu {
                0.5 * *v * (1.0 + erf(*v / 2f64.sqrt()))
            } else {
                v.max(0.0)
            };
        }
        ref_linear(&a, &p["linear2.weight"], &p["linear2.bias"], FF)
    };
    let ln = |k: &str, h: &[f64]| {
        ref_layer_norm(h, &p[&format!("{k}.weight")], &p[&format!("{k}.bias")])
    };
    if norm_first {
        let x = add(x, &sa(&ln("norm1", x)));
        add(&x, &ff(&ln("norm2", &x)))
    } else {
        let x = ln("norm1", &add(x, &sa(x)));
        ln("norm2", &add(&x, &ff(&x)))
    }
}

// ───────────────────────────── gradient checks ─────────────────────────────

#[test]
fn gradcheck_mha_self_attention_causal() {
    let m = mha(1);
    let mut inputs = vec![randn(&[B, L, E], 2)];
    inputs.extend(param_values(&m));
    // is_causal flag, and the same mask passed explicitly.
    check(
        "MHA self-attention, is_causal",
        |v| {
            Ok(
                m.attend_with_params(&v[1..], &v[0], &v[0], &v[0], &AttentionMask::causal())?
                    .0,
            )
        },
        &inputs,
    );
    let explicit = AttentionMask::none().with_attn_mask(causal_mask(L).unwrap());
    check(
        "MHA self-attention, causal attn_mask",
        |v| {
            Ok(
                m.attend_with_params(&v[1..], &v[0], &v[0], &v[0], &explicit)?
                    .0,
            )
        },
        &inputs,
    );
}

#[test]
fn gradcheck_mha_cross_attention_key_padding() {
    let m = mha(3);
    let lk = 4;
    let kpm = mask(&[0, 0, 1, 0, 0, 1, 1, 0], &[B, lk]);
    let opts = AttentionMask::none().with_key_padding_mask(kpm.clone());
    // key = value (one fused K/V projection).
    let mut inputs = vec![randn(&[B, L, E], 4), randn(&[B, lk, E], 5)];
    inputs.extend(param_values(&m));
    check(
        "MHA cross-attention, key padding",
        |v| Ok(m.attend_with_params(&v[2..], &v[0], &v[1], &v[1], &opts)?.0),
        &inputs,
    );
    // Distinct key and value, per-(batch, head) attn_mask plus padding.
    let per_head = mask(
        &[
            0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, //
            1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, //
            0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0,
        ],
        &[B * H, L, lk],
    );
    let opts = opts.with_attn_mask(per_head);
    let mut inputs = vec![
        randn(&[B, L, E], 6),
        randn(&[B, lk, E], 7),
        randn(&[B, lk, E], 8),
    ];
    inputs.extend(param_values(&m));
    check(
        "MHA separate q/k/v, attn_mask [B·H, Lq, Lk] + key padding",
        |v| Ok(m.attend_with_params(&v[3..], &v[0], &v[1], &v[2], &opts)?.0),
        &inputs,
    );
}

#[test]
fn gradcheck_encoder_layers() {
    let kpm = mask(&[0, 0, 1, 0, 0, 0], &[B, L]);
    let opts = AttentionMask::causal().with_key_padding_mask(kpm);
    for (k, (norm_first, act)) in [
        (false, TransformerActivation::Relu),
        (true, TransformerActivation::Relu),
        (false, TransformerActivation::Gelu),
        (true, TransformerActivation::Gelu),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = encoder(norm_first, act, 10 + k as u64);
        let mut inputs = vec![randn(&[B, L, E], 20 + k as u64)];
        inputs.extend(param_values(&layer));
        check(
            &format!("encoder layer norm_first={norm_first} {act:?}"),
            |v| layer.forward_with_params(&v[1..], &v[0], &opts),
            &inputs,
        );
    }
}

#[test]
fn gradcheck_decoder_layers() {
    let s = 4;
    let mem_kpm = mask(&[0, 0, 0, 1, 0, 1, 0, 0], &[B, s]);
    let tgt = AttentionMask::causal();
    let mem = AttentionMask::none().with_key_padding_mask(mem_kpm);
    for (k, (norm_first, act)) in [
        (false, TransformerActivation::Relu),
        (true, TransformerActivation::Gelu),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = decoder(norm_first, act, 30 + k as u64);
        let mut inputs = vec![
            randn(&[B, L, E], 40 + k as u64),
            randn(&[B, s, E], 50 + k as u64),
        ];
        inputs.extend(param_values(&layer));
        check(
            &format!("decoder layer norm_first={norm_first} {act:?}"),
            |v| layer.forward_decoder_with_params(&v[2..], &v[0], &v[1], &tgt, &mem),
            &inputs,
        );
    }
}

#[test]
fn gradcheck_encoder_stack_with_final_norm() {
    let mut rngs = rng(60);
    let layers = (0..2)
        .map(|i| {
            let mut l = layer_config(i == 1, TransformerActivation::Gelu)
                .init_encoder(&mut rngs)
                .unwrap();
            randomise(&mut l, 61 + i);
            l
        })
        .collect();
    let mut norm = LayerNorm::new(&[E]).unwrap();
    randomise(&mut norm, 63);
    let stack = TransformerEncoder::from_layers(layers, Some(norm)).unwrap();
    let mut inputs = vec![randn(&[B, L, E], 64)];
    inputs.extend(param_values(&stack));
    let opts = AttentionMask::causal();
    check(
        "TransformerEncoder (2 layers + norm)",
        |v| stack.forward_with_params(&v[1..], &v[0], &opts),
        &inputs,
    );
    // The functional path and the ordinary one agree.
    let x = Var::constant(inputs[0].clone());
    let a = stack
        .forward_masked(&x, Some(&causal_mask(L).unwrap()), None)
        .unwrap();
    let vars: Vec<Var<f64>> = inputs[1..].iter().cloned().map(Var::constant).collect();
    let b = stack.forward_with_params(&vars, &x, &opts).unwrap();
    assert_eq!(a.value().to_vec(), b.value().to_vec());
}

// ───────────────────────── forward values vs reference ─────────────────────────

#[test]
fn mha_matches_reference_with_masks() {
    let m = mha(70);
    let p = param_map(&m);
    // Self-attention, shared attn_mask + key padding.
    let am = mask(&[0, 1, 0, 0, 0, 1, 1, 0, 0], &[L, L]);
    let kpm = mask(&[0, 0, 1, 1, 0, 0], &[B, L]);
    let x = randn(&[B, L, E], 71);
    let xv = Var::constant(x.clone());
    let opts = AttentionMask::none()
        .with_attn_mask(am.clone())
        .with_key_padding_mask(kpm.clone());
    let (y, w) = m.attend(&xv, &xv, &xv, &opts).unwrap();
    let forbid = |b: usize, _h: usize, i: usize, j: usize| {
        am.get(&[i, j]).unwrap() || kpm.get(&[b, j]).unwrap()
    };
    let (ry, rw) = ref_mha(&p, "", x.as_slice(), x.as_slice(), B, L, L, &forbid);
    assert_close(&y.value().to_vec(), &ry, 1e-12, "MHA output");
    let w = w.unwrap();
    assert_eq!(w.shape(), &[B, L, L]);
    assert_close(&w.to_vec(), &rw, 1e-12, "MHA averaged weights");

    // Cross-attention Lq = 3, Lk = 5, per-head mask + causal flag.
    let lk = 5;
    let q = randn(&[B, L, E], 72);
    let kv = randn(&[B, lk, E], 73);
    // Never masks key 0, so that no query row is fully masked.
    let ph: Vec<u8> = (0..B * H * L * lk)
        .map(|i| u8::from(i % 7 == 3 && i % lk != 0))
        .collect();
    let ph = mask(&ph, &[B * H, L, lk]);
    let opts = AttentionMask::causal()
        .with_attn_mask(ph.clone())
        .with_average_attn_weights(false);
    let (y, w) = m
        .attend(
            &Var::constant(q.clone()),
            &Var::constant(kv.clone()),
            &Var::constant(kv.clone()),
            &opts,
        )
        .unwrap();
    let forbid =
        |b: usize, h: usize, i: usize, j: usize| j > i || ph.get(&[b * H + h, i, j]).unwrap();
    let (ry, _) = ref_mha(&p, "", q.as_slice(), kv.as_slice(), B, L, lk, &forbid);
    assert_close(&y.value().to_vec(), &ry, 1e-12, "MHA cross output");
    let w = w.unwrap();
    assert_eq!(w.shape(), &[B, H, L, lk]);
    for (b, h) in (0..B).flat_map(|b| (0..H).map(move |h| (b, h))) {
        for qi in 0..L {
            let row: Vec<f64> = (0..lk).map(|j| w.get(&[b, h, qi, j]).unwrap()).collect();
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for (j, a) in row.iter().enumerate() {
                if forbid(b, h, qi, j) {
                    assert_eq!(*a, 0.0);
                }
            }
        }
    }
}

#[test]
fn encoder_layer_matches_reference() {
    let kpm = mask(&[0, 0, 0, 0, 1, 0], &[B, L]);
    let am = mask(&[0, 0, 1, 1, 0, 0, 0, 0, 0], &[L, L]);
    for (norm_first, act) in [
        (false, TransformerActivation::Relu),
        (true, TransformerActivation::Gelu),
    ] {
        let layer = encoder(norm_first, act, 80);
        let p = param_map(&layer);
        let x = randn(&[B, L, E], 81);
        let y = layer
            .forward_masked(&Var::constant(x.clone()), Some(&am), Some(&kpm))
            .unwrap();
        let forbid = |b: usize, _h: usize, i: usize, j: usize| {
            am.get(&[i, j]).unwrap() || kpm.get(&[b, j]).unwrap()
        };
        let want = ref_encoder(
            &p,
            norm_first,
            act == TransformerActivation::Gelu,
            x.as_slice(),
            &forbid,
        );
        assert_close(
            &y.value().to_vec(),
            &want,
            1e-11,
            &format!("encoder {norm_first} {act:?}"),
        );
        // Module::forward is the unmasked case.
        let y0 = layer.forward(&Var::constant(x.clone())).unwrap();
        let want0 = ref_encoder(
            &p,
            norm_first,
            act == TransformerActivation::Gelu,
            x.as_slice(),
            &|_, _, _, _| false,
        );
        assert_close(&y0.value().to_vec(), &want0, 1e-11, "encoder unmasked");
    }
}

// ───────────────────────────── against PyTorch 1.13 ─────────────────────────────

/// f32 against f32, as `pytorch_reference.rs`.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;

fn close32(fx: &common::Fixture, what: &str, got: &Tensor<f32>) -> f64 {
    common::assert_close(
        &format!("{}: {what}", fx.name),
        got,
        &fx.tensor(what),
        RTOL,
        ATOL,
    )
}

/// Back-propagates the fixture's `grad_output` and compares the gradients of
/// the inputs (`grad.input`, `grad.input2`, …) and of every parameter.
fn check_backward<M: Module<f32>>(
    fx: &common::Fixture,
    m: &M,
    y: &Var<f32>,
    inputs: &[(&str, &Var<f32>)],
) -> f64 {
    let g = y.backward_with(fx.tensor("grad_output")).unwrap();
    let mut worst = fx.check_param_grads(m, &g, "", RTOL, ATOL);
    for (name, x) in inputs {
        worst = worst.max(close32(fx, &format!("grad.{name}"), g.wrt(x).unwrap()));
    }
    worst
}

fn torch_config(fx: &common::Fixture) -> TransformerLayerConfig {
    TransformerLayerConfig::new(fx.opt_usize("d_model"), fx.opt_usize("nhead"))
        .with_dim_feedforward(fx.opt_usize("dim_feedforward"))
        .with_dropout(fx.opt_f64("dropout"))
        .with_layer_norm_eps(fx.opt_f64("layer_norm_eps"))
        .with_norm_first(fx.opt_bool("norm_first"))
        .with_activation(match fx.opt_str("activation") {
            Some("gelu") => TransformerActivation::Gelu,
            _ => TransformerActivation::Relu,
        })
}

#[test]
fn mha_matches_pytorch_fixtures() {
    let mut worst = 0.0f64;
    for case in ["mha_self_causal", "mha_cross_kpm"] {
        let fx = common::load(case);
        let mut m =
            MultiHeadAttentionConfig::new(fx.opt_usize("embed_dim"), fx.opt_usize("num_heads"))
                .init::<f32>(&mut rng(200))
                .unwrap();
        fx.load_params(&mut m);
        let q = Var::leaf(fx.tensor("input"));
        let (k, v) = if fx.has("input2") {
            (
                Var::leaf(fx.tensor("input2")),
                Var::leaf(fx.tensor("input3")),
            )
        } else {
            (q.clone(), q.clone())
        };
        let mut opts = AttentionMask::none();
        if fx.has("mask.attn") {
            opts = opts.with_attn_mask(fx.mask("mask.attn"));
        }
        if fx.has("mask.key_padding") {
            opts = opts.with_key_padding_mask(fx.mask("mask.key_padding"));
        }
        let (y, w) = m.attend(&q, &k, &v, &opts).unwrap();
        worst = worst.max(close32(&fx, "output", y.value()));
        worst = worst.max(close32(&fx, "output2", &w.unwrap()));
        let inputs: Vec<(&str, &Var<f32>)> = if fx.has("input2") {
            vec![("input", &q), ("input2", &k), ("input3", &v)]
        } else {
            vec![("input", &q)]
        };
        worst = worst.max(check_backward(&fx, &m, &y, &inputs));
    }
    println!("MultiheadAttention vs PyTorch: worst relative error {worst:.3e}");
}

#[test]
fn transformer_layers_match_pytorch_fixtures() {
    let mut worst = 0.0f64;
    for case in [
        "transformer_encoder_post_relu",
        "transformer_encoder_pre_gelu",
        "transformer_encoder_post_relu_kpm",
    ] {
        let fx = common::load(case);
        let mut layer = torch_config(&fx)
            .init_encoder::<f32>(&mut rng(201))
            .unwrap();
        fx.load_params(&mut layer);
        let x = Var::leaf(fx.tensor("input"));
        let kpm = fx
            .has("mask.src_key_padding")
            .then(|| fx.mask("mask.src_key_padding"));
        let y = layer.forward_masked(&x, None, kpm.as_ref()).unwrap();
        worst = worst.max(close32(&fx, "output", y.value()));
        worst = worst.max(check_backward(&fx, &layer, &y, &[("input", &x)]));
    }
    let fx = common::load("transformer_decoder_causal");
    let mut dec = torch_config(&fx)
        .init_decoder::<f32>(&mut rng(202))
        .unwrap();
    fx.load_params(&mut dec);
    let (tgt, mem) = (
        Var::leaf(fx.tensor("input")),
        Var::leaf(fx.tensor("input2")),
    );
    let y = dec
        .forward_decoder(&tgt, &mem, Some(&fx.mask("mask.tgt")), None, None, None)
        .unwrap();
    worst = worst.max(close32(&fx, "output", y.value()));
    worst = worst.max(check_backward(
        &fx,
        &dec,
        &y,
        &[("input", &tgt), ("input2", &mem)],
    ));
    println!("Transformer layers vs PyTorch: worst relative error {worst:.3e}");
}

// ───────────────────────────── masking invariances ─────────────────────────────

/// Overwrites positions `t + 1..` of every batch element with new values.
fn change_after(x: &Tensor<f64>, t: usize, seed: u64) -> Tensor<f64> {
    let (b, l, e) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let noise = randn(&[b, l, e], seed);
    let mut y = x.clone();
    for bb in 0..b {
        for p in t + 1..l {
            for c in 0..e {
                let v = noise.get(&[bb, p, c]).unwrap() * 3.0;
                y.set(&[bb, p, c], v).unwrap();
            }
        }
    }
    y
}

fn prefix(y: &Var<f64>, t: usize) -> Vec<f64> {
    y.value().narrow(1, 0, t + 1).unwrap().to_vec()
}

#[test]
fn causal_outputs_ignore_the_future() {
    let l = 5;
    let m = mha(90);
    let enc = encoder(false, TransformerActivation::Gelu, 91);
    let dec = decoder(true, TransformerActivation::Relu, 92);
    let x = randn(&[B, l, E], 93);
    let mem = Var::constant(randn(&[B, 4, E], 94));
    let cm = causal_mask(l).unwrap();
    let run = |x: &Tensor<f64>| {
        let v = Var::constant(x.clone());
        (
            m.attend(&v, &v, &v, &AttentionMask::causal()).unwrap().0,
            enc.forward_masked(&v, Some(&cm), None).unwrap(),
            dec.forward_decoder(&v, &mem, Some(&cm), None, None, None)
                .unwrap(),
        )
    };
    let base = run(&x);
    for t in 0..l - 1 {
        let changed = run(&change_after(&x, t, 95 + t as u64));
        for (a, b, what) in [
            (&base.0, &changed.0, "MHA"),
            (&base.1, &changed.1, "encoder"),
            (&base.2, &changed.2, "decoder"),
        ] {
            assert_close(
                &prefix(b, t),
                &prefix(a, t),
                1e-13,
                &format!("{what} up to t={t}"),
            );
            // …while later positions do change.
            assert_ne!(b.value().to_vec(), a.value().to_vec(), "{what} t={t}");
        }
    }
}

#[test]
fn padded_keys_do_not_matter() {
    let m = mha(100);
    let dec = decoder(false, TransformerActivation::Gelu, 101);
    let enc = encoder(true, TransformerActivation::Relu, 102);
    let lk = 4;
    // Batch 0 pads its last key, batch 1 its last two.
    let kpm = mask(&[0, 0, 0, 1, 0, 0, 1, 1], &[B, lk]);
    let q = Var::constant(randn(&[B, L, E], 103));
    let kv = randn(&[B, lk, E], 104);
    let mut kv2 = kv.clone();
    for (b, j) in [(0, 3), (1, 2), (1, 3)] {
        for c in 0..E {
            kv2.set(&[b, j, c], 100.0 + c as f64).unwrap();
        }
    }
    let opts = AttentionMask::none().with_key_padding_mask(kpm.clone());
    let a = m
        .attend(
            &q,
            &Var::constant(kv.clone()),
            &Var::constant(kv.clone()),
            &opts,
        )
        .unwrap();
    let b = m
        .attend(
            &q,
            &Var::constant(kv2.clone()),
            &Var::constant(kv2.clone()),
            &opts,
        )
        .unwrap();
    assert_close(&b.0.value().to_vec(), &a.0.value().to_vec(), 1e-13, "MHA");
    // The weights on padded keys are exactly zero.
    let w = a.1.unwrap();
    for (b, j) in [(0, 3), (1, 2), (1, 3)] {
        for i in 0..L {
            assert_eq!(w.get(&[b, i, j]).unwrap(), 0.0);
        }
    }
    // Decoder memory padding.
    let da = dec
        .forward_decoder(&q, &Var::constant(kv.clone()), None, None, None, Some(&kpm))
        .unwrap();
    let db = dec
        .forward_decoder(
            &q,
            &Var::constant(kv2.clone()),
            None,
            None,
            None,
            Some(&kpm),
        )
        .unwrap();
    assert_close(
        &db.value().to_vec(),
        &da.value().to_vec(),
        1e-13,
        "decoder memory padding",
    );
    // Encoder self-attention: unpadded positions ignore the padded ones.
    let ea = enc
        .forward_masked(&Var::constant(kv.clone()), None, Some(&kpm))
        .unwrap();
    let eb = enc
        .forward_masked(&Var::constant(kv2.clone()), None, Some(&kpm))
        .unwrap();
    for (b, keep) in [(0, 3), (1, 2)] {
        let pa = ea
            .value()
            .narrow(0, b, 1)
            .unwrap()
            .narrow(1, 0, keep)
            .unwrap()
            .to_vec();
        let pb = eb
            .value()
            .narrow(0, b, 1)
            .unwrap()
            .narrow(1, 0, keep)
            .unwrap()
            .to_vec();
        assert_close(&pb, &pa, 1e-13, "encoder key padding");
    }
}

#[test]
fn fully_masked_row_is_nan_as_in_pytorch() {
    let m = mha(110);
    let x = Var::constant(randn(&[B, L, E], 111));
    // Every key of batch element 1 is padding.
    let kpm = mask(&[0, 0, 0, 1, 1, 1], &[B, L]);
    let (y, w) = m
        .attend(
            &x,
            &x,
            &x,
            &AttentionMask::none().with_key_padding_mask(kpm),
        )
        .unwrap();
    let y = y.value();
    assert!(y.narrow(0, 0, 1).unwrap().all_finite());
    assert!(y
        .narrow(0, 1, 1)
        .unwrap()
        .as_slice()
        .iter()
        .all(|v| v.is_nan()));
    assert!(w
        .unwrap()
        .narrow(0, 1, 1)
        .unwrap()
        .as_slice()
        .iter()
        .all(|v| v.is_nan()));
}

// ───────────────────────────── dropout ─────────────────────────────

#[test]
fn dropout_acts_in_training_only_and_is_seeded() {
    let cfg = MultiHeadAttentionConfig::new(E, H)
        .with_dropout(0.5)
        .with_seed(7);
    let mut m: MultiHeadAttention<f64> = cfg.init(&mut rng(120)).unwrap();
    let x = Var::constant(randn(&[B, L, E], 121));
    let opts = AttentionMask::none().with_average_attn_weights(false);
    let (ye, we) = m.attend(&x, &x, &x, &opts).unwrap();
    let (yt, wt) = m.attend_train(&x, &x, &x, &opts).unwrap();
    assert_ne!(ye.value().to_vec(), yt.value().to_vec());
    // Every dropped-out weight is 0 or 2× the inference weight.
    for (t, e) in wt.unwrap().as_slice().iter().zip(we.unwrap().as_slice()) {
        assert!(*t == 0.0 || (t - 2.0 * e).abs() < 1e-15);
    }
    // Same seed, same masks.
    let mut m2: MultiHeadAttention<f64> = cfg.init(&mut rng(120)).unwrap();
    let (yt2, _) = m2.attend_train(&x, &x, &x, &opts).unwrap();
    assert_eq!(yt.value().to_vec(), yt2.value().to_vec());

    // Transformer layers: p = 0 trains exactly like inference; p > 0 differs
    // and is reproducible from the seed.
    let mut plain = layer_config(false, TransformerActivation::Relu)
        .with_dropout(0.0)
        .init_encoder::<f64>(&mut rng(122))
        .unwrap();
    let a = plain.forward(&x).unwrap();
    let b = plain.forward_train(&x).unwrap();
    assert_eq!(a.value().to_vec(), b.value().to_vec());
    let cfg = layer_config(true, TransformerActivation::Gelu)
        .with_dropout(0.3)
        .with_seed(5);
    let mut d1 = cfg.init_decoder::<f64>(&mut rng(123)).unwrap();
    let mut d2 = cfg.init_decoder::<f64>(&mut rng(123)).unwrap();
    let mem = Var::constant(randn(&[B, 4, E], 124));
    let t1 = d1
        .forward_decoder_train(&x, &mem, None, None, None, None)
        .unwrap();
    let t2 = d2
        .forward_decoder_train(&x, &mem, None, None, None, None)
        .unwrap();
    let ev = d1
        .forward_decoder(&x, &mem, None, None, None, None)
        .unwrap();
    assert_eq!(t1.value().to_vec(), t2.value().to_vec());
    assert_ne!(t1.value().to_vec(), ev.value().to_vec());
    // Gradients flow through the training path.
    let mut enc = cfg.init_encoder::<f64>(&mut rng(125)).unwrap();
    let g = enc
        .forward_train(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&enc.linear1.weight).is_some());
}

// ───────────────────────────── names and shapes ─────────────────────────────

#[test]
fn encoder_layer_parameters_match_pytorch() {
    // `[(n, tuple(p.shape)) for n, p in nn.TransformerEncoderLayer(8, 2, 16).named_parameters()]`
    // as documented by PyTorch (nn.MultiheadAttention, nn.Linear, nn.LayerNorm).
    let want: [(&str, &[usize]); 12] = [
        ("self_attn.in_proj_weight", &[24, 8]),
        ("self_attn.in_proj_bias", &[24]),
        ("self_attn.out_proj.weight", &[8, 8]),
        ("self_attn.out_proj.bias", &[8]),
        ("linear1.weight", &[16, 8]),
        ("linear1.bias", &[16]),
        ("linear2.weight", &[8, 16]),
        ("linear2.bias", &[8]),
        ("norm1.weight", &[8]),
        ("norm1.bias", &[8]),
        ("norm2.weight", &[8]),
        ("norm2.bias", &[8]),
    ];
    let layer = TransformerLayerConfig::new(8, 2)
        .with_dim_feedforward(16)
        .init_encoder::<f32>(&mut rng(130))
        .unwrap();
    let got: Vec<(String, Vec<usize>)> = layer
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.shape().to_vec()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        layer.num_parameters(),
        24 * 8 + 24 + 64 + 8 + 128 + 16 + 128 + 8 + 32
    );
    // PyTorch's init: zero attention biases, unit/zero norms.
    let p: HashMap<String, Vec<f32>> = layer
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.value().to_vec()))
        .collect();
    assert!(p["self_attn.in_proj_bias"].iter().all(|&v| v == 0.0));
    assert!(p["self_attn.out_proj.bias"].iter().all(|&v| v == 0.0));
    assert!(p["norm1.weight"].iter().all(|&v| v == 1.0));
    let mha = MultiHeadAttentionConfig::new(8, 2)
        .init::<f32>(&mut rng(131))
        .unwrap();
    let names: Vec<String> = mha.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "in_proj_weight",
            "in_proj_bias",
            "out_proj.weight",
            "out_proj.bias"
        ]
    );
    // Positional encodings: sinusoidal has nothing, learned has `weight`.
    let s = SinusoidalPositionalEncoding::<f32>::new(8, 16).unwrap();
    assert!(s.named_parameters().is_empty());
    let lp = LearnedPositionalEncoding::<f32>::new(16, 8, &mut rng(132)).unwrap();
    let lnames: Vec<(String, Vec<usize>)> = lp
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.shape().to_vec()))
        .collect();
    assert_eq!(lnames, [("weight".to_string(), vec![16, 8])]);
}

#[test]
fn state_dict_round_trip_reproduces_outputs() {
    let src = encoder(true, TransformerActivation::Gelu, 140);
    let bytes = to_safetensors_bytes(&src).unwrap();
    let mut dst = layer_config(true, TransformerActivation::Gelu)
        .init_encoder::<f64>(&mut rng(141))
        .unwrap();
    load_safetensors_bytes(&mut dst, &bytes, true, "memory").unwrap();
    let x = Var::constant(randn(&[B, L, E], 142));
    assert_eq!(
        src.forward(&x).unwrap().value().to_vec(),
        dst.forward(&x).unwrap().value().to_vec()
    );
}

// ───────────────────────────── errors ─────────────────────────────

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn errors_name_the_layer_and_shapes() {
    // E not divisible by heads.
    let e = err_text(MultiHeadAttentionConfig::new(6, 4).init::<f32>(&mut rng(150)));
    assert!(
        e.contains("MultiHeadAttention") && e.contains('6') && e.contains('4'),
        "{e}"
    );

    let m = mha(151);
    let x = Var::constant(randn(&[B, L, E], 152));
    // Wrong feature size.
    let bad = Var::constant(randn(&[B, L, 5], 153));
    let e = err_text(m.attend(&bad, &bad, &bad, &AttentionMask::none()));
    assert!(e.starts_with("MultiHeadAttention: [2, 3, 5]"), "{e}");
    // Key/value batch or length mismatch.
    let kv = Var::constant(randn(&[B + 1, L, E], 154));
    assert!(err_text(m.attend(&x, &kv, &kv, &AttentionMask::none())).contains("MultiHeadAttention"));
    // Wrong attn_mask shape.
    let opts = AttentionMask::none().with_attn_mask(mask(&[0; 12], &[3, 4]));
    let e = err_text(m.attend(&x, &x, &x, &opts));
    assert!(
        e.contains("MultiHeadAttention: [3, 4] × [2, 3, 4]") && e.contains("attn_mask"),
        "{e}"
    );
    let opts = AttentionMask::none().with_attn_mask(mask(&[0; 27], &[3, 3, 3]));
    assert!(err_text(m.attend(&x, &x, &x, &opts)).contains("[B·H, Lq, Lk] = [4, 3, 3]"));
    // Wrong key_padding_mask shape.
    let opts = AttentionMask::none().with_key_padding_mask(mask(&[0; 8], &[2, 4]));
    let e = err_text(m.attend(&x, &x, &x, &opts));
    assert!(
        e.contains("key_padding_mask must be [B, Lk] = [2, 3]") && e.contains("[2, 4]"),
        "{e}"
    );
    // Wrong parameter list.
    let params: Vec<Var<f64>> = param_values(&m).into_iter().map(Var::constant).collect();
    assert!(
        err_text(m.attend_with_params(&params[..3], &x, &x, &x, &AttentionMask::none()))
            .contains("out_proj.bias")
    );
    let mut swapped = params.clone();
    swapped.swap(0, 2);
    assert!(
        err_text(m.attend_with_params(&swapped, &x, &x, &x, &AttentionMask::none()))
            .contains("in_proj_weight")
    );

    // Transformer layers name themselves and their mask arguments.
    let enc = encoder(false, TransformerActivation::Relu, 155);
    let e = err_text(enc.forward(&bad));
    assert!(e.starts_with("TransformerEncoderLayer: [2, 3, 5]"), "{e}");
    let e = err_text(enc.forward_masked(&x, Some(&mask(&[0; 4], &[2, 2])), None));
    assert!(
        e.starts_with("TransformerEncoderLayer: [2, 2]") && e.contains("src_mask"),
        "{e}"
    );
    let e = err_text(enc.forward_masked(&x, None, Some(&mask(&[0; 3], &[1, 3]))));
    assert!(e.contains("src_key_padding_mask"), "{e}");
    let e = err_text(TransformerLayerConfig::new(6, 4).init_encoder::<f32>(&mut rng(156)));
    assert!(
        e.starts_with("TransformerEncoderLayer:") && e.contains("d_model 6"),
        "{e}"
    );

    let dec = decoder(true, TransformerActivation::Relu, 157);
    let mem = Var::constant(randn(&[B, 4, E], 158));
    let e =
        err_text(dec.forward_decoder(&x, &mem, None, Some(&mask(&[0; 9], &[3, 3])), None, None));
    assert!(
        e.starts_with("TransformerDecoderLayer: [3, 3] × [2, 3, 4] × [2, 4, 4]")
            && e.contains("memory_mask"),
        "{e}"
    );
    let e =
        err_text(dec.forward_decoder(&x, &mem, None, None, None, Some(&mask(&[0; 6], &[2, 3]))));
    assert!(
        e.contains("memory_key_padding_mask must be [B, Lk] = [2, 4]"),
        "{e}"
    );
    let mem3 = Var::constant(randn(&[3, 4, E], 159));
    let e = err_text(dec.forward_decoder(&x, &mem3, None, None, None, None));
    assert!(
        e.starts_with("TransformerDecoderLayer: [2, 3, 4] × [3, 4, 4]"),
        "{e}"
    );

    // Positional encodings.
    let pe = SinusoidalPositionalEncoding::<f64>::new(E, 2).unwrap();
    let e = err_text(pe.forward(&x));
    assert!(
        e.contains("SinusoidalPositionalEncoding") && e.contains("max_len 2"),
        "{e}"
    );
}

/// The encoder layer (fused self-attention and layer norms, causal mask)
/// gives the same bits forward and backward on 1, 2 and 3 threads; the sizes
/// reach the threaded paths of attention, layer norm and the GEMMs.
#[test]
fn encoder_layer_does_not_depend_on_thread_count() {
    let layer = TransformerLayerConfig::new(64, 4)
        .with_dim_feedforward(128)
        .with_dropout(0.0)
        .init_encoder::<f32>(&mut rng(101))
        .unwrap();
    let x = Tensor::<f32>::randn_seeded(&[8, 64, 64], 102).unwrap();
    let w = Tensor::<f32>::randn_seeded(&[8, 64, 64], 103).unwrap();
    let causal = causal_mask(64).unwrap();
    let run = |threads: usize| -> Vec<Vec<u32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let xv = Var::leaf(x.clone());
            let y = layer.forward_masked(&xv, Some(&causal), None).unwrap();
            let loss = y.mul(&Var::constant(w.clone())).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            let mut out = vec![y.value().clone(), g.wrt(&xv).unwrap().clone()];
            for (_, p) in layer.named_parameters() {
                out.push(g.get(p).unwrap().clone());
            }
            out.iter()
                .map(|t| t.as_slice().iter().map(|v| v.to_bits()).collect())
                .collect()
        })
    };
    let one = run(1);
    assert_eq!(one.len(), 2 + 12);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}
