//! Bad-input sweep of the autograd crate: every differentiable op is called
//! on empty, zero-sized, mismatched, NaN/±∞ and out-of-range inputs, and its
//! backward pass is run whenever the forward succeeds. Each call returns a
//! typed error naming its op or a value (and gradients) of the right shape;
//! none panics. Graph misuse — a non-scalar `backward`, a wrongly shaped
//! seed, a custom op whose backward returns the wrong shapes, mismatched
//! gradient stores — is an error too.

use anneal_autograd::{gradcheck, no_grad, Gradients, Param, ParamId, Var};
use anneal_tensor::{Conv1dParams, Conv2dParams, Error, Pool2dParams, Result, Tensor};
use rand::SeedableRng;

#[path = "../../tensor/tests/support/sweep.rs"]
mod sweep;
use sweep::Sweep;

const SHAPES: &[&[usize]] = &[
    &[],
    &[0],
    &[1],
    &[3],
    &[2, 3],
    &[0, 3],
    &[3, 0],
    &[2, 1, 3],
    &[2, 3, 1, 2],
];

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

fn leaf(shape: &[usize]) -> Var<f32> {
    Var::leaf(special(shape))
}

const AXES: &[isize] = &[0, 1, -1, 3, -4, 4, isize::MAX, isize::MIN];
const SIZES: &[usize] = &[0, 1, 2, 3, usize::MAX / 2, usize::MAX];

/// Runs backward from `y` (seeded with ones) and checks that every
/// requested gradient has its leaf's shape.
fn backward_ok(s: &mut Sweep, what: &dyn Fn() -> String, y: &Var<f32>, leaves: &[&Var<f32>]) {
    let seed = Tensor::ones_like(y.value());
    if let Some(Ok(g)) = s.fallible(what, || y.backward_with(seed)) {
        for l in leaves {
            if let Some(t) = g.wrt(l) {
                if t.shape() != l.shape() {
                    s.bad_errors.push(format!(
                        "{}: gradient shape {:?} for a leaf of shape {:?}",
                        what(),
                        t.shape(),
                        l.shape()
                    ));
                }
            }
        }
    }
}

#[test]
fn unary_ops_and_their_gradients_over_special_values() {
    let mut s = Sweep::default();
    type Unary = fn(&Var<f32>) -> Result<Var<f32>>;
    let ops: &[(&str, Unary)] = &[
        ("neg", |v| Ok(v.neg())),
        ("abs", |v| Ok(v.abs())),
        ("exp", |v| Ok(v.exp())),
        ("ln", |v| Ok(v.ln())),
        ("sqrt", |v| Ok(v.sqrt())),
        ("square", |v| Ok(v.square())),
        ("recip", |v| Ok(v.recip())),
        ("tanh", |v| Ok(v.tanh())),
        ("sigmoid", |v| Ok(v.sigmoid())),
        ("relu", |v| Ok(v.relu())),
        ("leaky_relu", |v| Ok(v.leaky_relu(f32::NAN))),
        ("gelu", |v| Ok(v.gelu())),
        ("gelu_tanh", |v| Ok(v.gelu_tanh())),
        ("silu", |v| Ok(v.silu())),
        ("sin", |v| Ok(v.sin())),
        ("cos", |v| Ok(v.cos())),
        ("add_scalar", |v| Ok(v.add_scalar(f32::INFINITY))),
        ("mul_scalar", |v| Ok(v.mul_scalar(0.0))),
        ("div_scalar", |v| Ok(v.div_scalar(0.0))),
        ("powf", |v| Ok(v.powf(-1.5))),
        ("powf0", |v| Ok(v.powf(0.0))),
        ("clamp", |v| v.clamp(Some(-1.0), Some(1.0))),
        ("clamp_nan", |v| v.clamp(Some(f32::NAN), None)),
        ("clamp_inverted", |v| v.clamp(Some(1.0), Some(-1.0))),
        ("sum_all", |v| v.sum_all()),
        ("mean_all", |v| v.mean_all()),
        ("detach", |v| Ok(v.detach())),
    ];
    for shape in SHAPES {
        let x = leaf(shape);
        for (name, f) in ops {
            let what = || format!("{name} {shape:?}");
            if let Some(Ok(y)) = s.fallible(what, || f(&x)) {
                backward_ok(&mut s, &what, &y, &[&x]);
            }
        }
    }
    s.finish(400);
}

#[test]
fn binary_ops_over_every_shape_pair() {
    let mut s = Sweep::default();
    type Binary = fn(&Var<f32>, &Var<f32>) -> Result<Var<f32>>;
    let ops: &[(&str, Binary)] = &[
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
        ("pow", |a, b| a.pow(b)),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
        ("matmul", |a, b| a.matmul(b)),
        ("matmul_tt", |a, b| a.matmul_t(b, true, true)),
        ("linear", |a, b| a.linear(b, None)),
        ("linear_bias", |a, b| a.linear(b, Some(b))),
        ("concat0", |a, b| Var::concat(&[a, b], 0)),
        ("concat-1", |a, b| Var::concat(&[a, b], -1)),
        ("stack", |a, b| Var::stack(&[a, b], 1)),
        ("where", |a, b| {
            Var::where_cond(&a.value().gt_scalar(0.0), a, b)
        }),
        ("masked_fill", |a, b| {
            a.masked_fill(&b.value().lt_scalar(0.0), 2.0)
        }),
        ("mul_mask", |a, b| a.mul_mask(b.value())),
    ];
    for sa in SHAPES {
        for sb in SHAPES {
            let (a, b) = (leaf(sa), leaf(sb));
            for (name, f) in ops {
                let what = || format!("{name} {sa:?} {sb:?}");
                if let Some(Ok(y)) = s.fallible(what, || f(&a, &b)) {
                    backward_ok(&mut s, &what, &y, &[&a, &b]);
                }
            }
        }
    }
    s.finish(1900);
}

#[test]
fn reductions_softmax_and_shape_ops_with_bad_axes() {
    let mut s = Sweep::default();
    for shape in SHAPES {
        let x = leaf(shape);
        let mut sets: Vec<Vec<isize>> = vec![vec![], vec![0, 0], vec![0, -1]];
        sets.extend(AXES.iter().map(|&a| vec![a]));
        for set in &sets {
            for keep in [false, true] {
                let what = || format!("{shape:?} axes {set:?} keepdim {keep}");
                type Red = fn(&Var<f32>, &[isize], bool) -> Result<Var<f32>>;
                let reds: &[Red] = &[
                    |v, a, k| v.sum_axes(a, k),
                    |v, a, k| v.mean_axes(a, k),
                    |v, a, k| v.var_axes(a, true, k),
                    |v, a, k| v.max_axes(a, k),
                    |v, a, k| v.min_axes(a, k),
                    |v, a, k| v.logsumexp_axes(a, k),
                ];
                for f in reds {
                    if let Some(Ok(y)) = s.fallible(what, || f(&x, set, keep)) {
                        backward_ok(&mut s, &what, &y, &[&x]);
                    }
                }
            }
        }
        for &a in AXES {
            let what = || format!("{shape:?} axis {a}");
            let mut outs = vec![
                s.fallible(what, || x.softmax(a)),
                s.fallible(what, || x.log_softmax(a)),
                s.fallible(what, || x.squeeze(a)),
                s.fallible(what, || x.unsqueeze(a)),
                s.fallible(what, || x.transpose(a, 0)),
                s.fallible(what, || x.flatten(0, a)),
            ];
            for &p in SIZES {
                for &q in SIZES {
                    let what = || format!("{shape:?} axis {a} {p} {q}");
                    outs.push(s.fallible(what, || x.narrow(a, p, q)));
                    outs.push(s.fallible(what, || x.slice(a, p, q, 1)));
                    outs.push(s.fallible(what, || x.slice(a, 0, p, q)));
                    outs.push(s.fallible(what, || x.index_select(a, &[p, q])));
                    outs.push(s.fallible(what, || {
                        x.split_sizes(a, &[p, q])
                            .map(|v| v.into_iter().next().unwrap_or(x.clone()))
                    }));
                }
                outs.push(s.fallible(what, || {
                    x.chunk(p, a)
                        .map(|v| v.into_iter().last().unwrap_or(x.clone()))
                }));
                let idx = Tensor::from_vec(vec![p; x.value().numel()], x.shape()).unwrap();
                outs.push(s.fallible(what, || x.gather(a, &idx)));
            }
            for y in outs.into_iter().flatten().flatten() {
                backward_ok(&mut s, &what, &y, &[&x]);
            }
        }
        for target in SHAPES {
            let what = || format!("{shape:?} -> {target:?}");
            for y in [
                s.fallible(what, || x.reshape(target)),
                s.fallible(what, || x.broadcast_to(target)),
            ]
            .into_iter()
            .flatten()
            .flatten()
            {
                backward_ok(&mut s, &what, &y, &[&x]);
            }
        }
        for perm in [vec![], vec![0], vec![1, 0], vec![0, 0], vec![usize::MAX]] {
            let what = || format!("permute {shape:?} {perm:?}");
            if let Some(Ok(y)) = s.fallible(what, || x.permute(&perm)) {
                backward_ok(&mut s, &what, &y, &[&x]);
            }
        }
        for &p in SIZES {
            let pads = vec![(p, 1); shape.len()];
            let what = || format!("pad {shape:?} {p}");
            if let Some(Ok(y)) = s.fallible(what, || x.pad(&pads, f32::NAN)) {
                backward_ok(&mut s, &what, &y, &[&x]);
            }
        }
        s.fallible(|| "concat of nothing".into(), || Var::<f32>::concat(&[], 0));
        s.fallible(|| "stack of nothing".into(), || Var::<f32>::stack(&[], 0));
    }
    s.finish(5000);
}

#[test]
fn convolution_pooling_and_dropout_with_bad_arguments() {
    let mut s = Sweep::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let inputs: &[&[usize]] = &[&[1, 2, 5, 5], &[0, 2, 5, 5], &[1, 2, 1, 1], &[2, 5], &[]];
    let weights: &[&[usize]] = &[
        &[3, 2, 3, 3],
        &[2, 3, 3, 3],
        &[3, 1, 1, 1],
        &[3, 2, 0, 3],
        &[3],
    ];
    let params = [
        Conv2dParams::new(1, 0),
        Conv2dParams::new(0, 0),
        Conv2dParams::new(2, 1).with_dilation(0),
        Conv2dParams::new(1, 7).with_groups(0),
        Conv2dParams::new(3, 2).with_groups(2),
        Conv2dParams::new(1, usize::MAX),
        Conv2dParams::new(usize::MAX, 0),
        Conv2dParams::new(1, 0).with_dilation(usize::MAX),
        Conv2dParams::new(1, 0).with_groups(usize::MAX),
    ];
    for xs in inputs {
        let x = leaf(xs);
        for ws in weights {
            let w = leaf(ws);
            for bs in [&[3usize][..], &[4], &[]] {
                let b = leaf(bs);
                for p in params {
                    let what = || format!("{xs:?} {ws:?} {bs:?} {p:?}");
                    for op in [0, 1] {
                        for out_pad in [[0, 0], [1, 0], [usize::MAX, 0]] {
                            let r = s.fallible(what, || match op {
                                0 => x.conv2d(&w, Some(&b), p),
                                _ => x.conv_transpose2d(&w, Some(&b), p, out_pad),
                            });
                            if let Some(Ok(y)) = r {
                                backward_ok(&mut s, &what, &y, &[&x, &w, &b]);
                            }
                        }
                    }
                    let p1 = Conv1dParams {
                        stride: p.stride[0],
                        padding: p.padding[0],
                        dilation: p.dilation[0],
                        groups: p.groups,
                    };
                    let (x1, w1) = (
                        leaf(&[1, 2, xs.iter().product::<usize>().min(9)]),
                        leaf(&[3, 2, ws.iter().product::<usize>().min(4)]),
                    );
                    if let Some(Ok(y)) = s.fallible(what, || x1.conv1d(&w1, Some(&b), p1)) {
                        backward_ok(&mut s, &what, &y, &[&x1, &w1, &b]);
                    }
                }
            }
        }
        for k in [0, 1, 2, 9, usize::MAX] {
            for pad in [0, 1, usize::MAX] {
                let p = Pool2dParams::new(k).with_padding(pad);
                let what = || format!("pool {xs:?} {p:?}");
                for r in [
                    s.fallible(what, || x.max_pool2d(p)),
                    s.fallible(what, || x.avg_pool2d(p, true)),
                    s.fallible(what, || x.avg_pool2d(p, false)),
                ]
                .into_iter()
                .flatten()
                .flatten()
                {
                    backward_ok(&mut s, &what, &r, &[&x]);
                }
            }
        }
        for p in [0.0, 0.5, 1.0, -0.1, 1.1, f64::NAN, f64::INFINITY] {
            let what = || format!("dropout {xs:?} {p}");
            match s.fallible(what, || x.dropout(p, &mut rng)) {
                Some(Ok(y)) => {
                    if !(0.0..=1.0).contains(&p) {
                        s.bad_errors.push(format!("{}: accepted", what()));
                    }
                    backward_ok(&mut s, &what, &y, &[&x]);
                }
                Some(Err(_)) if (0.0..=1.0).contains(&p) => {
                    s.bad_errors.push(format!("{}: rejected", what()))
                }
                _ => {}
            }
        }
    }
    s.finish(2000);
}

#[test]
fn graph_misuse_is_an_error() {
    // A non-scalar output needs an explicit seed; a seed of the wrong shape
    // is refused; a constant has no gradients.
    let x = leaf(&[2, 3]);
    let y = x.mul_scalar(2.0);
    let e = y.backward().unwrap_err();
    assert_eq!(e.op(), "backward");
    assert!(e.to_string().contains("[2, 3]"), "{e}");
    let e = y.backward_with(Tensor::ones(&[3, 2]).unwrap()).unwrap_err();
    assert!(e.to_string().contains("[2, 3] × [3, 2]"), "{e}");
    assert!(Var::constant(special(&[])).backward().unwrap().is_empty());
    let e = leaf(&[0]).sum_all().unwrap().backward().unwrap();
    assert_eq!(e.wrt(&leaf(&[0])), None);

    // A custom op whose backward returns a wrong shape, an error, too few or
    // too many gradients.
    let a = leaf(&[3]);
    let bad_shape = Var::custom("bad_shape", special(&[3]), &[&a], |_, _| {
        Ok(vec![Some(Tensor::zeros(&[4])?)])
    });
    let e = bad_shape
        .backward_with(Tensor::ones(&[3]).unwrap())
        .unwrap_err();
    assert_eq!(e.op(), "bad_shape");
    assert!(e.to_string().contains("[3] × [4]"), "{e}");
    let failing = Var::custom("failing", special(&[3]), &[&a], |g, _| {
        Err(Error::invalid(
            "failing",
            format!("cannot differentiate {:?}", g.shape()),
        ))
    });
    let e = failing.sum_all().unwrap().backward().unwrap_err();
    assert_eq!(e.to_string(), "failing: cannot differentiate [3]");
    let few = Var::custom("few", special(&[3]), &[&a, &a], |_, _| Ok(vec![]));
    assert!(few.sum_all().unwrap().backward().unwrap().wrt(&a).is_none());
    let many = Var::custom("many", special(&[3]), &[&a], |g, _| {
        Ok(vec![Some(g.clone()), Some(g.clone()), None])
    });
    let g = many.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.wrt(&a).unwrap().shape(), &[3]);

    // Gradient stores with mismatched shapes do not merge.
    let id = ParamId::fresh();
    let mut g1 = Gradients::<f32>::new();
    g1.insert(id, Tensor::zeros(&[2]).unwrap());
    let mut g2 = Gradients::<f32>::new();
    g2.insert(id, Tensor::zeros(&[3]).unwrap());
    let e = g1.accumulate(&g2).unwrap_err();
    assert_eq!(e.op(), "add");
    assert_eq!(g1.get_by_id(id).unwrap().shape(), &[2]);

    // A parameter keeps its shape.
    let mut p = Param::new(special(&[2, 2]));
    let e = p.set_value(Tensor::zeros(&[4]).unwrap()).unwrap_err();
    assert_eq!(e.op(), "Param::set_value");
    assert_eq!(p.shape(), &[2, 2]);

    // A panic inside no_grad leaves recording on afterwards.
    let r = std::panic::catch_unwind(|| no_grad(|| panic!("inside no_grad")));
    assert!(r.is_err());
    assert!(leaf(&[1]).exp().requires_grad());
}

#[test]
fn gradcheck_rejects_bad_tolerances_and_reports_failing_functions() {
    let x = Tensor::<f64>::from_vec(vec![0.5, -1.0], &[2]).unwrap();
    for (eps, tol) in [
        (0.0, 1e-6),
        (-1e-6, 1e-6),
        (f64::NAN, 1e-6),
        (f64::INFINITY, 1e-6),
        (1e-6, -1.0),
        (1e-6, f64::NAN),
    ] {
        let e = gradcheck(|v| Ok(v[0].exp()), std::slice::from_ref(&x), eps, tol).unwrap_err();
        assert_eq!(e.op(), "gradcheck", "eps {eps} tol {tol}");
    }
    // No inputs, empty inputs and a function that fails all answer.
    assert!(
        gradcheck(|_| Ok(Var::constant(Tensor::scalar(1.0))), &[], 1e-6, 1e-6)
            .unwrap()
            .is_ok()
    );
    let empty = Tensor::<f64>::zeros(&[0, 3]).unwrap();
    assert!(gradcheck(|v| v[0].sum_all(), &[empty], 1e-6, 1e-6)
        .unwrap()
        .is_ok());
    let e = gradcheck(
        |v| v[0].reshape(&[2, 1])?.matmul(&v[0].reshape(&[2, 1])?),
        std::slice::from_ref(&x),
        1e-6,
        1e-6,
    )
    .unwrap_err();
    assert_eq!(e.op(), "matmul");
    // A non-finite analytic gradient is reported as a failure, not a pass.
    let zero = Tensor::<f64>::zeros(&[1]).unwrap();
    let r = gradcheck(|v| Ok(v[0].sqrt()), &[zero], 1e-6, 1e-6).unwrap();
    assert!(r.is_err(), "sqrt at 0 has an infinite gradient");
}

#[test]
fn conv_transpose2d_with_overflowing_parameters() {
    let (x, w) = (leaf(&[1, 2, 3, 3]), leaf(&[2, 3, 3, 3]));
    for p in [
        Conv2dParams::new(1, 0).with_dilation(usize::MAX),
        Conv2dParams::new(1, 0).with_groups(usize::MAX),
        Conv2dParams::new(usize::MAX, 0),
    ] {
        let e = x.conv_transpose2d(&w, None, p, [0, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conv_transpose2d: [1, 2, 3, 3] × [2, 3, 3, 3]: the output shape overflows usize",
            "{p:?}"
        );
    }
    let e = x
        .conv_transpose2d(&w, None, Conv2dParams::new(1, usize::MAX / 2), [0, 0])
        .unwrap_err();
    assert!(e.to_string().contains("is not positive"), "{e}");
}
