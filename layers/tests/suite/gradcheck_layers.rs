//! Finite-difference gradient checks (f64) of every layer with parameters
//! and of every loss, through `anneal_layers::gradcheck_module`: the inputs
//! and every trainable parameter, `eps = 1e-6`, tolerance `1e-5·(1 + |g|)`.
//!
//! Kinks are avoided by construction: ReLU inputs and max-pool windows are
//! checked to sit at least `MARGIN` away from 0 and from ties, L1 / Huber /
//! smooth-L1 differences away from 0 and from their switch points.

use anneal_autograd::Var;
use anneal_layers::{
    bce_with_logits, cross_entropy, gradcheck_module, huber_loss, l1_loss, mse_loss, nll_loss,
    smooth_l1_loss, BatchNorm, BatchNormConfig, Conv1dConfig, Conv2dConfig, ConvTranspose2dConfig,
    CrossEntropyOptions, Embedding, EntryMut, Flatten, GroupNorm, LayerNorm, LinearConfig,
    MaxPool2d, Module, ModuleExt, Padding, Reduction, Relu, RmsNorm, Sequential,
};
use anneal_tensor::{Conv1dParams, Conv2dParams, Pool2dParams, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-5;
/// Minimum distance of a ReLU input from 0 and between the two largest
/// values of a max-pool window: far larger than any finite-difference step
/// moves them.
const MARGIN: f64 = 1e-4;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn_seeded(shape, seed).unwrap()
}

fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform_seeded(shape, lo, hi, seed).unwrap()
}

/// Adds U(−0.3, 0.3) to every parameter so that constant initial values
/// (norm scales of one, zero shifts) exercise the general path.
fn perturb<M: Module<f64>>(m: &mut M, seed: u64) {
    let mut r = rng(seed);
    m.visit_mut("", &mut |_, e| {
        if let EntryMut::Param(p) = e {
            for v in p.value_mut().data_mut() {
                *v += r.random_range(-0.3..0.3);
            }
        }
    });
}

/// Runs `gradcheck_module` and panics with the worst element on failure.
fn check<M: Module<f64>>(
    what: &str,
    m: &mut M,
    inputs: &[Tensor<f64>],
    f: impl FnMut(&mut M, &[Var<f64>]) -> Result<Var<f64>>,
) {
    assert!(
        m.num_parameters() > 0 || !inputs.is_empty(),
        "{what}: nothing to check"
    );
    match gradcheck_module(m, inputs, f, EPS, TOL) {
        Ok(Ok(())) => {}
        Ok(Err(worst)) => panic!("{what}: {worst}"),
        Err(e) => panic!("{what}: forward failed: {e}"),
    }
}

fn eval<M: Module<f64>>(m: &mut M, v: &[Var<f64>]) -> Result<Var<f64>> {
    m.forward(&v[0])
}

fn train<M: Module<f64>>(m: &mut M, v: &[Var<f64>]) -> Result<Var<f64>> {
    m.forward_train(&v[0])
}

// ------------------------------------------------------------------ Linear

#[test]
fn linear_2d_and_3d_input() {
    for (shape, bias) in [
        (&[4usize, 5][..], true),
        (&[2, 3, 5][..], true),
        (&[3, 5][..], false),
    ] {
        let mut lin = LinearConfig::new(5, 3)
            .with_bias(bias)
            .init::<f64>(&mut rng(1))
            .unwrap();
        check(
            &format!("Linear {shape:?} bias={bias}"),
            &mut lin,
            &[randn(shape, 2)],
            eval,
        );
    }
}

// ------------------------------------------------------------- convolutions

#[test]
fn conv2d_stride_padding_dilation_groups_same() {
    let base = |cin, cout, k| Conv2dConfig::new(cin, cout, k);
    let cases: Vec<(&str, Conv2dConfig, [usize; 4])> = vec![
        (
            "stride 2, padding 1",
            base(3, 4, 3).with_stride(2).with_padding(1),
            [2, 3, 7, 7],
        ),
        (
            "kernel [3,2], stride [2,1], padding [1,0], dilation [2,1]",
            Conv2dConfig {
                kernel: [3, 2],
                stride: [2, 1],
                padding: Padding::Explicit(1, 0),
                dilation: [2, 1],
                ..base(2, 3, 3)
            },
            [2, 2, 8, 6],
        ),
        (
            "dilation 2, padding 2",
            base(2, 3, 3).with_dilation(2).with_padding(2),
            [1, 2, 6, 6],
        ),
        (
            "groups 2, no bias",
            base(4, 6, 3).with_groups(2).with_bias(false),
            [2, 4, 5, 5],
        ),
        (
            "depthwise (groups 3)",
            base(3, 3, 3).with_groups(3).with_padding(1),
            [2, 3, 5, 5],
        ),
        (
            "same, odd kernel 3",
            base(2, 3, 3).with_same_padding(),
            [1, 2, 5, 6],
        ),
        (
            "same, even kernel 4 (pads 1 before, 2 after)",
            base(2, 3, 4).with_same_padding(),
            [1, 2, 5, 5],
        ),
        (
            "same, kernel 3, dilation 2",
            base(2, 2, 3).with_same_padding().with_dilation(2),
            [1, 2, 6, 5],
        ),
    ];
    for (i, (what, cfg, shape)) in cases.into_iter().enumerate() {
        let mut conv = cfg.init::<f64>(&mut rng(10 + i as u64)).unwrap();
        check(
            &format!("Conv2d {what}"),
            &mut conv,
            &[randn(&shape, 20 + i as u64)],
            eval,
        );
    }
}

#[test]
fn conv1d_stride_padding_dilation_groups() {
    for (i, (params, cin, cout, k)) in [
        (
            Conv1dParams {
                stride: 2,
                padding: 1,
                dilation: 1,
                groups: 1,
            },
            3,
            5,
            3,
        ),
        (
            Conv1dParams {
                stride: 1,
                padding: 2,
                dilation: 2,
                groups: 2,
            },
            4,
            6,
            3,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut conv = Conv1dConfig {
            params,
            ..Conv1dConfig::new(cin, cout, k)
        }
        .init::<f64>(&mut rng(30 + i as u64))
        .unwrap();
        check(
            &format!("Conv1d {params:?}"),
            &mut conv,
            &[randn(&[2, cin, 9], 40 + i as u64)],
            eval,
        );
    }
}

#[test]
fn conv_transpose2d_stride2_output_padding_groups() {
    for (i, (params, output_padding, k)) in [
        (
            Conv2dParams {
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
                groups: 2,
            },
            [1, 1],
            3,
        ),
        (
            Conv2dParams {
                stride: [2, 1],
                padding: [0, 1],
                dilation: [1, 2],
                groups: 1,
            },
            [1, 0],
            2,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut conv = ConvTranspose2dConfig {
            params,
            output_padding,
            ..ConvTranspose2dConfig::new(4, 6, k)
        }
        .init::<f64>(&mut rng(50 + i as u64))
        .unwrap();
        check(
            &format!("ConvTranspose2d {params:?} output_padding {output_padding:?}"),
            &mut conv,
            &[randn(&[2, 4, 3, 4], 60 + i as u64)],
            eval,
        );
    }
}

// ------------------------------------------------------------------- norms

fn batchnorm(c: usize, seed: u64) -> BatchNorm<f64> {
    let mut bn = BatchNormConfig::new(c).init::<f64>().unwrap();
    perturb(&mut bn, seed);
    bn
}

#[test]
fn batchnorm_train_mode() {
    for (i, shape) in [&[6usize, 4][..], &[3, 4, 5][..], &[4, 3, 3, 3][..]]
        .into_iter()
        .enumerate()
    {
        let mut bn = batchnorm(shape[1], 70 + i as u64);
        check(
            &format!("BatchNorm train {shape:?}"),
            &mut bn,
            &[randn(shape, 80 + i as u64)],
            train,
        );
        assert!(bn.num_batches_tracked > 0);
    }
}

#[test]
fn batchnorm_eval_mode() {
    for (i, shape) in [&[5usize, 4][..], &[2, 3, 4, 4][..]]
        .into_iter()
        .enumerate()
    {
        let c = shape[1];
        let mut bn = batchnorm(c, 90 + i as u64);
        bn.running_mean = randn(&[c], 91);
        bn.running_var = uniform(&[c], 0.5, 2.0, 92);
        check(
            &format!("BatchNorm eval {shape:?}"),
            &mut bn,
            &[randn(shape, 93 + i as u64)],
            eval,
        );
    }
}

#[test]
fn layernorm_last_one_and_two_axes() {
    for (i, normalized) in [&[6usize][..], &[3, 6][..]].into_iter().enumerate() {
        let mut ln = LayerNorm::<f64>::new(normalized).unwrap();
        perturb(&mut ln, 100 + i as u64);
        check(
            &format!("LayerNorm {normalized:?}"),
            &mut ln,
            &[randn(&[2, 3, 6], 110 + i as u64)],
            eval,
        );
    }
}

#[test]
fn groupnorm() {
    for (i, (groups, shape)) in [(2, &[2usize, 4, 3, 3][..]), (3, &[2, 6, 5][..])]
        .into_iter()
        .enumerate()
    {
        let mut gn = GroupNorm::<f64>::new(groups, shape[1]).unwrap();
        perturb(&mut gn, 120 + i as u64);
        check(
            &format!("GroupNorm {groups} groups {shape:?}"),
            &mut gn,
            &[randn(shape, 130 + i as u64)],
            eval,
        );
    }
}

#[test]
fn rmsnorm() {
    for (i, normalized) in [&[6usize][..], &[3, 6][..]].into_iter().enumerate() {
        let mut rms = RmsNorm::<f64>::new(normalized).unwrap();
        perturb(&mut rms, 140 + i as u64);
        check(
            &format!("RmsNorm {normalized:?}"),
            &mut rms,
            &[randn(&[2, 3, 6], 150 + i as u64)],
            eval,
        );
    }
}

// --------------------------------------------------------------- embedding

#[test]
fn embedding_table() {
    // Repeated indices: their rows' gradients add up.
    let mut emb = Embedding::<f64>::new(7, 3, None, &mut rng(160)).unwrap();
    let idx = Tensor::from_vec(vec![1usize, 4, 4, 0, 6, 1, 1, 3], &[2, 4]).unwrap();
    check("Embedding", &mut emb, &[], |m, _| m.lookup(&idx));
}

#[test]
fn embedding_padding_row_gets_no_gradient_and_others_are_unchanged() {
    // With padding_idx the padding row is deliberately not differentiated
    // (PyTorch's semantics), so it cannot go through a finite-difference
    // check; the other rows must get exactly the gradient they get without it.
    let mut r = rng(161);
    let plain = Embedding::<f64>::new(6, 3, None, &mut r).unwrap();
    let mut padded = Embedding::<f64>::new(6, 3, Some(2), &mut r).unwrap();
    padded
        .weight
        .set_value(plain.weight.value().clone())
        .unwrap();
    let idx = Tensor::from_vec(vec![2usize, 0, 2, 5, 1, 2], &[3, 2]).unwrap();
    let g_out = randn(&[3, 2, 3], 162);
    let gp = plain
        .lookup(&idx)
        .unwrap()
        .backward_with(g_out.clone())
        .unwrap();
    let gq = padded.lookup(&idx).unwrap().backward_with(g_out).unwrap();
    let (gp, gq) = (
        gp.get(&plain.weight).unwrap(),
        gq.get(&padded.weight).unwrap(),
    );
    for row in 0..6 {
        let (a, b) = (
            &gp.as_slice()[row * 3..row * 3 + 3],
            &gq.as_slice()[row * 3..row * 3 + 3],
        );
        if row == 2 {
            assert_eq!(b, [0.0; 3], "padding row");
            assert!(a.iter().any(|&v| v != 0.0));
        } else {
            assert_eq!(a, b, "row {row}");
        }
    }
}

// --------------------------------------------------------------- sequential

/// Smallest distance of any value from 0.
fn min_abs(t: &Tensor<f64>) -> f64 {
    t.as_slice()
        .iter()
        .fold(f64::INFINITY, |m, v| m.min(v.abs()))
}

/// Smallest gap between the largest and the second-largest value of any
/// non-overlapping `k×k` window whose maximum is positive (an all-zero
/// window after ReLU is flat, not a kink).
fn min_pool_gap(t: &Tensor<f64>, k: usize) -> f64 {
    let s = t.shape();
    let (h, w) = (s[2], s[3]);
    let mut gap = f64::INFINITY;
    for plane in t.as_slice().chunks(h * w) {
        for oy in 0..h / k {
            for ox in 0..w / k {
                let mut vals: Vec<f64> = (0..k * k)
                    .map(|j| plane[(oy * k + j / k) * w + ox * k + j % k])
                    .collect();
                vals.sort_by(|a, b| b.total_cmp(a));
                if vals[0] > 0.0 {
                    gap = gap.min(vals[0] - vals[1]);
                }
            }
        }
    }
    gap
}

/// Conv → BatchNorm (random running statistics) → ReLU → MaxPool(2) →
/// Flatten → Linear, and an input for it.
fn sequential_parts(
    seed: u64,
) -> (
    Tensor<f64>,
    anneal_layers::Conv2d<f64>,
    BatchNorm<f64>,
    anneal_layers::Linear<f64>,
) {
    let x = randn(&[2, 2, 6, 6], seed);
    let conv = Conv2dConfig::new(2, 4, 3)
        .with_padding(1)
        .init::<f64>(&mut rng(seed + 1))
        .unwrap();
    let mut bn = batchnorm(4, seed + 2);
    bn.running_mean = randn(&[4], seed + 3).mul_scalar(0.2);
    bn.running_var = uniform(&[4], 0.5, 1.5, seed + 4);
    let lin = LinearConfig::new(4 * 3 * 3, 3)
        .init::<f64>(&mut rng(seed + 5))
        .unwrap();
    (x, conv, bn, lin)
}

/// True when no ReLU input is within `MARGIN` of 0 and no max-pool window
/// has a near tie, in train and in eval mode.
fn far_from_kinks(x: &Tensor<f64>, conv: &anneal_layers::Conv2d<f64>, bn: &BatchNorm<f64>) -> bool {
    let pre = conv.forward(&Var::constant(x.clone())).unwrap();
    [
        bn.clone().forward_train(&pre).unwrap(),
        bn.forward(&pre).unwrap(),
    ]
    .iter()
    .all(|b| min_abs(b.value()) > MARGIN && min_pool_gap(b.relu().value(), 2) > MARGIN)
}

#[test]
fn sequential_conv_bn_relu_maxpool_flatten_linear() {
    // The first seed whose point is far from every kink (deterministic).
    let seed = (0..50u64)
        .map(|i| 170 + 10 * i)
        .find(|&s| {
            let (x, conv, bn, _) = sequential_parts(s);
            far_from_kinks(&x, &conv, &bn)
        })
        .expect("a point away from the kinks");
    let net = || {
        let (x, conv, bn, lin) = sequential_parts(seed);
        let net = Sequential::<f64>::new()
            .push(conv)
            .push(bn)
            .push(Relu)
            .push(MaxPool2d {
                params: Pool2dParams::new(2),
            })
            .push(Flatten::default())
            .push(lin);
        (x, net)
    };
    let (x, mut net_train) = net();
    assert_eq!(
        net_train
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
    );
    check("Sequential train mode", &mut net_train, &[x], train);
    // A fresh copy: the train-mode check has moved the running statistics.
    let (x, mut net_eval) = net();
    check("Sequential eval mode", &mut net_eval, &[x], eval);
}

// ------------------------------------------------------------------- losses

/// Losses have no parameters: check them w.r.t. their input through an
/// empty module.
fn check_loss(what: &str, input: Tensor<f64>, f: impl Fn(&Var<f64>) -> Result<Var<f64>>) {
    let mut none = Sequential::<f64>::new();
    check(what, &mut none, &[input], |_, v| f(&v[0]));
}

const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::Sum, Reduction::None];

#[test]
fn cross_entropy_weights_label_smoothing_ignore_index() {
    let logits = randn(&[6, 5], 180).mul_scalar(1.5);
    let targets = Tensor::from_vec(vec![2usize, 0, 2, 4, 1, 3], &[6]).unwrap();
    let weight = uniform(&[5], 0.3, 2.0, 181);
    for reduction in REDUCTIONS {
        for (ls, ignore, w) in [
            (0.0, None, None),
            (0.0, Some(2), Some(weight.clone())),
            (0.15, None, None),
            (0.15, Some(2), Some(weight.clone())),
        ] {
            let opts = CrossEntropyOptions {
                weight: w.clone(),
                ignore_index: ignore,
                reduction,
                label_smoothing: ls,
            };
            check_loss(
                &format!(
                    "cross_entropy {reduction:?} ε={ls} ignore={ignore:?} weighted={}",
                    w.is_some()
                ),
                logits.clone(),
                |x| cross_entropy(x, &targets, &opts),
            );
        }
    }
    // K-dimensional: logits [N, C, H, W], targets [N, H, W].
    let targets = Tensor::from_vec(
        (0..18).map(|i| (i * 7 + 3) % 5).collect::<Vec<usize>>(),
        &[2, 3, 3],
    )
    .unwrap();
    let opts = CrossEntropyOptions {
        weight: Some(weight),
        ignore_index: Some(1),
        reduction: Reduction::Mean,
        label_smoothing: 0.1,
    };
    check_loss("cross_entropy K-dim", randn(&[2, 5, 3, 3], 182), |x| {
        cross_entropy(x, &targets, &opts)
    });
}

#[test]
fn nll_loss_weights_ignore_index() {
    let logp = randn(&[6, 5], 190).log_softmax(1).unwrap();
    let targets = Tensor::from_vec(vec![2usize, 0, 2, 4, 1, 3], &[6]).unwrap();
    for reduction in REDUCTIONS {
        let opts = CrossEntropyOptions {
            weight: Some(uniform(&[5], 0.3, 2.0, 191)),
            ignore_index: Some(4),
            reduction,
            label_smoothing: 0.0,
        };
        check_loss(&format!("nll_loss {reduction:?}"), logp.clone(), |x| {
            nll_loss(x, &targets, &opts)
        });
    }
}

/// An input and a target whose differences `d` all satisfy
/// `| |d| − s | ≥ 0.1` for every switch point `s` in `kinks` (0 included).
fn away_from(kinks: &[f64], seed: u64) -> (Tensor<f64>, Tensor<f64>) {
    let x = randn(&[4, 5], seed);
    let mut r = rng(seed + 1);
    let d: Vec<f64> = (0..20)
        .map(|_| loop {
            let d: f64 = r.random_range(-2.0..2.0);
            if kinks.iter().all(|s| (d.abs() - s).abs() >= 0.1) {
                break d;
            }
        })
        .collect();
    let d = Tensor::from_vec(d, &[4, 5]).unwrap();
    let t = x.sub(&d).unwrap();
    (x, t)
}

#[test]
fn regression_losses_away_from_kinks() {
    let (x, t) = away_from(&[], 200);
    for r in REDUCTIONS {
        check_loss(&format!("mse_loss {r:?}"), x.clone(), |v| {
            mse_loss(v, &t, r)
        });
    }
    let (x, t) = away_from(&[0.0], 202);
    for r in REDUCTIONS {
        check_loss(&format!("l1_loss {r:?}"), x.clone(), |v| l1_loss(v, &t, r));
    }
    let (x, t) = away_from(&[0.0, 0.7], 204);
    for r in REDUCTIONS {
        check_loss(&format!("huber_loss δ=0.7 {r:?}"), x.clone(), |v| {
            huber_loss(v, &t, 0.7, r)
        });
    }
    let (x, t) = away_from(&[0.0, 0.5], 206);
    for r in REDUCTIONS {
        check_loss(&format!("smooth_l1_loss β=0.5 {r:?}"), x.clone(), |v| {
            smooth_l1_loss(v, &t, 0.5, r)
        });
    }
    check_loss("smooth_l1_loss β=0 (L1)", x.clone(), |v| {
        smooth_l1_loss(v, &t, 0.0, Reduction::Mean)
    });
}

#[test]
fn bce_with_logits_with_pos_weight() {
    // Logits are kept away from exactly 0: there the stable form's |z| and
    // max(−z, 0) both have kinks, and the gradient is only right if their
    // one-sided derivatives are chosen to cancel.
    let z = randn(&[4, 3], 210)
        .mul_scalar(2.0)
        .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v });
    let y = uniform(&[4, 3], 0.0, 1.0, 211);
    let pw = uniform(&[3], 0.5, 3.0, 212);
    for r in REDUCTIONS {
        check_loss(&format!("bce_with_logits {r:?}"), z.clone(), |v| {
            bce_with_logits(v, &y, None, r)
        });
        check_loss(
            &format!("bce_with_logits pos_weight {r:?}"),
            z.clone(),
            |v| bce_with_logits(v, &y, Some(&pw), r),
        );
    }
}

/// At z = 0 the BCE-with-logits gradient is σ(0) − y = 0.5 − y (times the
/// positive weight on the y term): the loss is smooth there.
#[test]
fn bce_with_logits_gradient_at_zero_logit() {
    for (y, pw, want) in [
        (1.0f64, None, -0.5),
        (0.0, None, 0.5),
        (1.0, Some(2.0), -1.0),
    ] {
        let z = Var::leaf(Tensor::from_vec(vec![0.0f64], &[1]).unwrap());
        let t = Tensor::from_vec(vec![y], &[1]).unwrap();
        let pwt = pw.map(|p| Tensor::from_vec(vec![p], &[1]).unwrap());
        let l = anneal_layers::bce_with_logits(&z, &t, pwt.as_ref(), anneal_layers::Reduction::Sum)
            .unwrap();
        let g = l.backward().unwrap();
        let got = g.wrt(&z).unwrap().to_vec()[0];
        assert!(
            (got - want).abs() < 1e-12,
            "y {y} pos_weight {pw:?}: {got} vs {want}"
        );
    }
}

/// A ConvTranspose2d whose output_padding the forward cannot honour is
/// refused at `init`, not at the first forward.
#[test]
fn conv_transpose_output_padding_checked_at_init() {
    let mut cfg = anneal_layers::ConvTranspose2dConfig::new(2, 2, 2);
    cfg.params.stride = [2, 1];
    cfg.params.dilation = [1, 2];
    cfg.output_padding = [1, 1];
    assert!(cfg.init::<f64>(&mut StdRng::seed_from_u64(0)).is_err());
}
