//! A generated bad-input sweep: every public constructor and op is called
//! over a grid of shapes (scalar, empty, zero-sized axes, mismatched ranks),
//! special values (NaN, ±∞, subnormals, the largest finite values) and
//! out-of-range arguments (axes and indices up to `usize::MAX`, shapes whose
//! element count overflows). Each call must return — an `Ok` of the expected
//! shape or an [`Error`] whose message starts with its op — and never panic,
//! abort or hang. `errors.rs` pins the individual messages; this file proves
//! the absence of panics systematically with `catch_unwind`.

use anneal_tensor::{
    broadcast_shapes, checked_numel, conv_output_size, Conv1dParams, Conv2dParams, Error,
    Pool2dParams, Result, Tensor,
};

#[path = "support/sweep.rs"]
mod sweep;
use sweep::Sweep;

/// Shapes that exercise rank 0, zero-sized axes and broadcasting.
const SHAPES: &[&[usize]] = &[
    &[],
    &[0],
    &[1],
    &[3],
    &[2, 3],
    &[0, 3],
    &[3, 0],
    &[2, 1, 3],
    &[1, 0, 2],
    &[2, 3, 1, 2],
];

/// Values that stress the kernels, repeated to fill a tensor.
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
    f32::MIN_POSITIVE / 2.0,
    -7.25,
];

fn special(shape: &[usize]) -> Tensor<f32> {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| SPECIAL[i % SPECIAL.len()]).collect();
    Tensor::from_vec(data, shape).unwrap()
}

/// Axis arguments: in range, negative, one past each end, and extremes.
fn axes(rank: usize) -> Vec<isize> {
    let r = rank as isize;
    let mut v = vec![0, 1, -1, r, -r - 1, r - 1, isize::MAX, isize::MIN];
    v.dedup();
    v
}

/// Sizes for counts, starts, strides and paddings.
const SIZES: &[usize] = &[0, 1, 2, 3, usize::MAX / 2, usize::MAX];

#[test]
fn constructors_with_huge_or_overflowing_shapes_error() {
    let mut s = Sweep::default();
    let huge: &[&[usize]] = &[
        &[usize::MAX],
        &[usize::MAX, 2],
        &[1 << 40, 1 << 40],
        &[usize::MAX / 2 + 1, 2],
        &[0, usize::MAX],
        &[1 << 62],
        &[1 << 47],
        &[1 << 46, 2],
    ];
    for shape in huge {
        let w = || format!("{shape:?}");
        let must_fail = checked_numel("x", shape).is_err();
        let zero = shape.contains(&0);
        macro_rules! check {
            ($name:literal, $call:expr) => {
                if let Some(r) = s.fallible(|| format!("{} {}", $name, w()), || $call) {
                    match &r {
                        Ok(t) if must_fail || !zero => s.bad_errors.push(format!(
                            "{} {}: accepted, shape {:?}",
                            $name,
                            w(),
                            t.shape()
                        )),
                        Err(Error::TooLarge { .. }) => {}
                        Err(e) if !zero => s.bad_errors.push(format!("{} {}: {e}", $name, w())),
                        _ => {}
                    }
                }
            };
        }
        check!("zeros", Tensor::<f32>::zeros(shape));
        check!("ones", Tensor::<f64>::ones(shape));
        check!("full", Tensor::full(shape, 1.5f32));
        check!("randn", Tensor::<f32>::randn_seeded(shape, 0));
        check!(
            "rand_uniform",
            Tensor::<f32>::rand_uniform_seeded(shape, -1.0, 1.0, 0)
        );
        if let Some(Ok(t)) = s.fallible(w, || Tensor::<f32>::from_vec(vec![], shape)) {
            if !zero {
                s.bad_errors
                    .push(format!("from_vec {}: accepted {:?}", w(), t.shape()));
            }
        }
        s.fallible(w, || Tensor::<f32>::zeros(&[]).unwrap().reshape(shape));
        s.fallible(w, || Tensor::<f32>::scalar(1.0).broadcast_to(shape));
    }
    // Element counts that overflow, or whose bytes exceed any address space
    // (so the allocator refuses them even where memory is overcommitted).
    for (n, m) in [
        (usize::MAX, usize::MAX),
        (usize::MAX / 2, 1 << 32),
        (1 << 47, 1 << 24),
    ] {
        for r in [
            s.fallible(|| format!("eye {m}"), || Tensor::<f32>::eye(m)),
            s.fallible(
                || format!("linspace {n}"),
                || Tensor::<f32>::linspace(0.0, 1.0, n),
            ),
        ]
        .into_iter()
        .flatten()
        {
            if !matches!(r, Err(Error::TooLarge { .. })) {
                s.bad_errors
                    .push(format!("{n}/{m} elements: {:?}", r.map(|t| t.numel())));
            }
        }
    }
    for (a, b, st) in [
        (0.0f64, 1e300, 1e-300),
        (0.0, 1e30, 1.0),
        (0.0, f64::MAX, f64::MIN_POSITIVE),
        (f64::NAN, 1.0, 1.0),
        (0.0, f64::INFINITY, 1.0),
        (0.0, 1.0, 0.0),
        (0.0, 1.0, -0.0),
        (0.0, 1.0, f64::NAN),
    ] {
        if let Some(Ok(t)) = s.fallible(
            || format!("arange {a} {b} {st}"),
            || Tensor::<f64>::arange(a, b, st),
        ) {
            s.bad_errors
                .push(format!("arange {a} {b} {st}: accepted {:?}", t.shape()));
        }
    }
    s.finish(60);
}

#[test]
fn elementwise_over_special_values_and_every_shape_pair() {
    let mut s = Sweep::default();
    for a in SHAPES {
        let x = special(a);
        type Unary = fn(&Tensor<f32>) -> Tensor<f32>;
        let unary: &[(&str, Unary)] = &[
            ("neg", |t| t.neg()),
            ("abs", |t| t.abs()),
            ("exp", |t| t.exp()),
            ("ln", |t| t.ln()),
            ("sqrt", |t| t.sqrt()),
            ("square", |t| t.square()),
            ("recip", |t| t.recip()),
            ("tanh", |t| t.tanh()),
            ("sigmoid", |t| t.sigmoid()),
            ("relu", |t| t.relu()),
            ("gelu", |t| t.gelu()),
            ("gelu_tanh", |t| t.gelu_tanh()),
            ("silu", |t| t.silu()),
            ("sin", |t| t.sin()),
            ("cos", |t| t.cos()),
            ("sign", |t| t.sign()),
            ("round", |t| t.round_half_even()),
            ("floor", |t| t.floor()),
            ("ceil", |t| t.ceil()),
            ("add_scalar", |t| t.add_scalar(f32::NAN)),
            ("sub_scalar", |t| t.sub_scalar(f32::INFINITY)),
            ("mul_scalar", |t| t.mul_scalar(0.0)),
            ("div_scalar", |t| t.div_scalar(0.0)),
            ("powf", |t| t.powf(-0.5)),
            ("powf2", |t| t.powf(2.0)),
            ("leaky_relu", |t| t.leaky_relu(f32::NAN)),
            ("cast", |t| t.cast::<f64>().cast::<f32>()),
            ("squeeze_all", |t| {
                t.squeeze_all().reshape(t.shape()).unwrap()
            }),
        ];
        for (name, f) in unary {
            if let Some(y) = s.run(|| format!("{name} {a:?}"), || f(&x)) {
                s.expect_shape(|| format!("{name} {a:?}"), y.shape(), a);
            }
        }
        for (lo, hi) in [
            (None, None),
            (Some(0.0), None),
            (Some(1.0), Some(-1.0)),
            (Some(f32::NAN), Some(1.0)),
            (Some(f32::NEG_INFINITY), Some(f32::INFINITY)),
        ] {
            s.fallible(|| format!("clamp {a:?} {lo:?} {hi:?}"), || x.clamp(lo, hi));
        }
        s.run(|| format!("display {a:?}"), || format!("{x}\n{x:?}"));
        s.run(
            || format!("display f64 {a:?}"),
            || format!("{}", x.cast::<f64>()),
        );
        s.run(|| format!("all_finite {a:?}"), || x.all_finite());
        for b in SHAPES {
            let y = special(b);
            let want = broadcast_shapes("t", a, b);
            let w = || format!("{a:?} {b:?}");
            type Binary = fn(&Tensor<f32>, &Tensor<f32>) -> Result<Tensor<f32>>;
            let binary: &[(&str, Binary)] = &[
                ("add", |p, q| p.add(q)),
                ("sub", |p, q| p.sub(q)),
                ("mul", |p, q| p.mul(q)),
                ("div", |p, q| p.div(q)),
                ("pow", |p, q| p.pow(q)),
                ("maximum", |p, q| p.maximum(q)),
                ("minimum", |p, q| p.minimum(q)),
            ];
            for (name, f) in binary {
                match (
                    s.fallible(|| format!("{name} {}", w()), || f(&x, &y)),
                    &want,
                ) {
                    (Some(Ok(z)), Ok(sh)) => {
                        s.expect_shape(|| format!("{name} {}", w()), z.shape(), sh)
                    }
                    (Some(Ok(_)), Err(_)) | (Some(Err(_)), Ok(_)) => s.bad_errors.push(format!(
                        "{name} {}: Ok/Err disagrees with broadcasting",
                        w()
                    )),
                    _ => {}
                }
            }
            for cmp in 0..6 {
                s.fallible(
                    || format!("comparison {cmp} {}", w()),
                    || match cmp {
                        0 => x.gt(&y),
                        1 => x.ge(&y),
                        2 => x.lt(&y),
                        3 => x.le(&y),
                        4 => x.eq(&y),
                        _ => x.ne(&y),
                    },
                );
            }
            let mask = special(b).gt_scalar(0.0);
            s.fallible(
                || format!("masked_fill {}", w()),
                || x.masked_fill(&mask, 9.0),
            );
            s.fallible(
                || format!("where {}", w()),
                || Tensor::where_cond(&mask, &x, &y),
            );
            s.fallible(|| format!("and {}", w()), || mask.and(&x.lt_scalar(1.0)));
            s.fallible(|| format!("sum_to_shape {}", w()), || x.sum_to_shape(b));
        }
    }
    s.finish(2000);
}

#[test]
fn reductions_and_softmax_over_every_axis_argument() {
    let mut s = Sweep::default();
    for a in SHAPES {
        let x = special(a);
        let ax = axes(a.len());
        s.run(|| format!("sum_all {a:?}"), || x.sum_all());
        s.run(|| format!("mean_all {a:?}"), || x.mean_all());
        s.fallible(|| format!("max_all {a:?}"), || x.max_all());
        s.fallible(|| format!("min_all {a:?}"), || x.min_all());
        s.fallible(|| format!("item {a:?}"), || x.item());
        let mut sets: Vec<Vec<isize>> = vec![vec![]];
        sets.extend(ax.iter().map(|&i| vec![i]));
        sets.push(vec![0, 0]);
        sets.push(vec![0, -1]);
        sets.push((0..a.len() as isize).collect());
        for set in &sets {
            for keep in [false, true] {
                let w = || format!("{a:?} axes {set:?} keepdim {keep}");
                let results = [
                    s.fallible(w, || x.sum_axes(set, keep)),
                    s.fallible(w, || x.mean_axes(set, keep)),
                    s.fallible(w, || x.var_axes(set, true, keep)),
                    s.fallible(w, || x.std_axes(set, false, keep)),
                    s.fallible(w, || x.max_axes(set, keep)),
                    s.fallible(w, || x.min_axes(set, keep)),
                    s.fallible(w, || x.logsumexp_axes(set, keep)),
                ];
                for y in results.into_iter().flatten().flatten() {
                    let rank = if keep || set.is_empty() && a.is_empty() {
                        a.len()
                    } else if set.is_empty() {
                        // An empty axis list reduces every axis, as NumPy's
                        // `axis=()` does not: anneal's rule is "all axes".
                        if y.rank() == a.len() {
                            a.len()
                        } else {
                            0
                        }
                    } else {
                        a.len() - set.len()
                    };
                    if y.rank() != rank {
                        s.bad_errors
                            .push(format!("{}: rank {} expected {rank}", w(), y.rank()));
                    }
                }
            }
        }
        for &axis in &ax {
            let w = || format!("{a:?} axis {axis}");
            for r in [
                s.fallible(w, || x.softmax(axis)),
                s.fallible(w, || x.log_softmax(axis)),
            ]
            .into_iter()
            .flatten()
            .flatten()
            {
                s.expect_shape(w, r.shape(), a);
            }
            s.fallible(w, || x.argmax(axis, false));
            s.fallible(w, || x.argmin(axis, true));
            s.fallible(w, || x.dim(axis));
        }
    }
    s.finish(1500);
}

#[test]
fn shape_ops_with_out_of_range_arguments() {
    let mut s = Sweep::default();
    for a in SHAPES {
        let x = special(a);
        for &axis in &axes(a.len()) {
            let w = || format!("{a:?} axis {axis}");
            s.fallible(w, || x.squeeze(axis));
            s.fallible(w, || x.unsqueeze(axis));
            for &b in &axes(a.len()) {
                s.fallible(|| format!("{} / {b}", w()), || x.transpose(axis, b));
                s.fallible(|| format!("{} / {b}", w()), || x.flatten(axis, b));
            }
            for &p in SIZES {
                for &q in SIZES {
                    let w = || format!("{a:?} axis {axis} {p} {q}");
                    if let Some(Ok(y)) = s.fallible(w, || x.narrow(axis, p, q)) {
                        if y.numel() > x.numel() {
                            s.bad_errors.push(format!("narrow {} grew", w()));
                        }
                    }
                    for &st in SIZES {
                        s.fallible(
                            || format!("slice {} step {st}", w()),
                            || x.slice(axis, p, q, st),
                        );
                    }
                    s.fallible(w, || x.index_select(axis, &[p, q]));
                    s.fallible(w, || x.split_sizes(axis, &[p, q]));
                    s.fallible(w, || x.index_add(axis, &[p], &x));
                }
                s.fallible(w, || x.split(axis, p));
                s.fallible(w, || x.chunk(p, axis));
                let idx = Tensor::from_vec(vec![p; x.numel()], x.shape()).unwrap();
                s.fallible(w, || x.gather(axis, &idx));
                s.fallible(w, || x.scatter_add(axis, &idx, &x));
            }
            for b in SHAPES {
                let y = special(b);
                s.fallible(
                    || format!("concat {a:?} {b:?} {axis}"),
                    || Tensor::concat(&[&x, &y], axis),
                );
                s.fallible(
                    || format!("stack {a:?} {b:?} {axis}"),
                    || Tensor::stack(&[&x, &y], axis),
                );
            }
            s.fallible(w, || Tensor::<f32>::concat(&[], axis));
            s.fallible(w, || Tensor::<f32>::stack(&[], axis));
        }
        for b in SHAPES {
            s.fallible(|| format!("reshape {a:?} {b:?}"), || x.reshape(b));
            s.fallible(|| format!("broadcast_to {a:?} {b:?}"), || x.broadcast_to(b));
        }
        for perm in [
            vec![],
            vec![0],
            vec![1, 0],
            vec![0, 0],
            vec![usize::MAX],
            (0..a.len()).rev().collect(),
        ] {
            s.fallible(|| format!("permute {a:?} {perm:?}"), || x.permute(&perm));
        }
        for &p in SIZES {
            for &q in SIZES {
                let pads = vec![(p, q); a.len()];
                s.fallible(|| format!("pad {a:?} {p} {q}"), || x.pad(&pads, 0.0));
                s.fallible(|| format!("pad short {a:?}"), || x.pad(&[(p, q)], 0.0));
                let index = vec![p; a.len()];
                s.fallible(|| format!("get {a:?} {index:?}"), || x.get(&index));
                let mut y = x.clone();
                s.fallible(|| format!("set {a:?} {index:?}"), || y.set(&index, 1.0));
                s.fallible(|| format!("get wrong rank {a:?}"), || x.get(&[p, q, p]));
            }
        }
    }
    s.finish(20_000);
}

#[test]
fn matmul_and_linear_over_every_shape_pair() {
    let mut s = Sweep::default();
    let shapes: &[&[usize]] = &[
        &[],
        &[0],
        &[3],
        &[2, 3],
        &[3, 2],
        &[0, 3],
        &[3, 0],
        &[2, 0],
        &[4, 2, 3],
        &[1, 3, 2],
        &[0, 3, 2],
        &[2, 1, 3, 0],
    ];
    for a in shapes {
        for b in shapes {
            let (x, y) = (special(a), special(b));
            let w = || format!("{a:?} {b:?}");
            s.fallible(w, || x.matmul(&y));
            for ta in [false, true] {
                for tb in [false, true] {
                    s.fallible(w, || x.matmul_t(&y, ta, tb));
                }
            }
            s.fallible(w, || x.linear(&y, None));
            for c in shapes {
                s.fallible(
                    || format!("{} bias {c:?}", w()),
                    || x.linear(&y, Some(&special(c))),
                );
            }
        }
    }
    s.finish(1500);
}

fn conv_params(strides: &[usize], paddings: &[usize], groups: &[usize]) -> Vec<Conv2dParams> {
    let mut v = Vec::new();
    for &stride in strides {
        for &padding in paddings {
            for &dilation in &[0, 1, 3, usize::MAX] {
                for &groups in groups {
                    v.push(Conv2dParams {
                        stride: [stride, 1],
                        padding: [padding, 0],
                        dilation: [dilation, 1],
                        groups,
                    });
                }
            }
        }
    }
    v
}

#[test]
fn convolution_with_extreme_parameters() {
    let mut s = Sweep::default();
    let inputs: &[&[usize]] = &[
        &[1, 2, 5, 5],
        &[0, 2, 5, 5],
        &[1, 0, 3, 3],
        &[1, 2, 0, 4],
        &[2, 3],
    ];
    let weights: &[&[usize]] = &[
        &[4, 2, 3, 3],
        &[4, 1, 1, 1],
        &[0, 2, 3, 3],
        &[4, 2, 0, 3],
        &[3],
    ];
    for xs in inputs {
        for ws in weights {
            let (x, w) = (special(xs), special(ws));
            for p in conv_params(&[0, 1, 2, 7], &[0, 1, 2, usize::MAX], &[0, 1, 2, 3]) {
                let what = || format!("{xs:?} {ws:?} {p:?}");
                if let Some(Ok(y)) = s.fallible(what, || x.conv2d(&w, None, p)) {
                    s.fallible(what, || y.conv2d_weight_grad(&x, ws, p).map(|_| ()));
                    s.fallible(what, || y.conv2d_input_grad(&w, xs, p).map(|_| ()));
                }
                let p1 = Conv1dParams {
                    stride: p.stride[0],
                    padding: p.padding[0],
                    dilation: p.dilation[0],
                    groups: p.groups,
                };
                let (x1, w1) = (
                    x.reshape(&[xs.iter().product::<usize>()]).unwrap(),
                    w.reshape(&[ws.iter().product::<usize>()]).unwrap(),
                );
                let x1 = x1.reshape(&[1, 1, x1.numel()]).unwrap();
                let w1 = w1.reshape(&[1, 1, w1.numel()]).unwrap();
                s.fallible(what, || x1.conv1d(&w1, None, p1));
                s.fallible(what, || x1.conv1d_input_grad(&w1, &[1, 1, usize::MAX], p1));
                s.fallible(what, || x1.conv1d_weight_grad(&x1, &[1, 1, usize::MAX], p1));
            }
        }
    }
    for (i, k, st, p, d) in [
        (usize::MAX, usize::MAX, 1, usize::MAX, usize::MAX),
        (0, 0, 0, 0, 0),
        (5, 3, 1, usize::MAX / 2, 1),
        (usize::MAX, 1, 1, 0, 1),
    ] {
        s.run(
            || format!("conv_output_size {i} {k}"),
            || conv_output_size(i, k, st, p, d),
        );
    }
    s.finish(10_000);
}

/// Found by this sweep and fixed in `Geometry::new`: `cg * groups`
/// overflowed for `groups` near `usize::MAX` with zero channels, `oh * ow`
/// for a huge padding with no output channels or a huge caller-given
/// spatial extent with no images, and a stride above `isize::MAX` with
/// padding wrapped in `valid_range` and indexed out of bounds.
#[test]
fn convolution_with_overflowing_groups_or_shapes() {
    let mut s = Sweep::default();
    let inputs: &[&[usize]] = &[&[1, 0, 3, 3], &[0, 2, 5, 5], &[1, 2, 5, 5]];
    let weights: &[&[usize]] = &[&[0, 2, 3, 3], &[4, 2, 3, 3], &[4, 1, 1, 1]];
    for xs in inputs {
        for ws in weights {
            let (x, w) = (special(xs), special(ws));
            for p in conv_params(
                &[1, usize::MAX],
                &[0, usize::MAX / 4],
                &[usize::MAX / 2, usize::MAX],
            ) {
                let what = || format!("{xs:?} {ws:?} {p:?}");
                s.fallible(what, || x.conv2d(&w, None, p));
            }
            for p in conv_params(&[1, usize::MAX], &[0, 1, usize::MAX / 4], &[1]) {
                let what = || format!("{xs:?} {ws:?} {p:?}");
                s.fallible(what, || x.conv2d_input_grad(&w, &[0, 2, usize::MAX, 5], p));
                s.fallible(what, || x.conv2d_weight_grad(&x, &[4, 2, usize::MAX, 3], p));
            }
        }
    }
    let (x, w) = (special(&[1, 1, 50]), special(&[1, 1, 4]));
    for padding in [1, 2] {
        let p = Conv1dParams {
            stride: usize::MAX,
            padding,
            ..Default::default()
        };
        s.fallible(|| format!("conv1d {p:?}"), || x.conv1d(&w, None, p));
    }
    s.finish(200);
}

#[test]
fn pooling_with_extreme_parameters() {
    let mut s = Sweep::default();
    let inputs: &[&[usize]] = &[
        &[1, 2, 5, 5],
        &[0, 2, 4, 4],
        &[1, 1, 1, 1],
        &[1, 0, 3, 3],
        &[3, 3],
    ];
    for xs in inputs {
        let x = special(xs);
        for &k in &[0, 1, 2, 3, 7, usize::MAX] {
            for &st in &[0, 1, 2, usize::MAX] {
                for &pad in &[0, 1, 2, usize::MAX / 2, usize::MAX] {
                    let p = Pool2dParams {
                        kernel: [k, 2],
                        stride: [st, 1],
                        padding: [pad, 0],
                    };
                    let w = || format!("{xs:?} {p:?}");
                    if let Some(Ok((y, idx))) = s.fallible(w, || x.max_pool2d(p)) {
                        s.fallible(w, || y.max_pool2d_backward(&idx, xs));
                        s.fallible(w, || y.max_pool2d_backward(&idx, &[1, 2, usize::MAX, 2]));
                        s.fallible(w, || y.max_pool2d_backward(&idx, &[9]));
                    }
                    for cip in [false, true] {
                        if let Some(Ok(y)) = s.fallible(w, || x.avg_pool2d(p, cip)) {
                            s.fallible(w, || y.avg_pool2d_backward(xs, p, cip));
                        }
                        s.fallible(w, || {
                            x.avg_pool2d_backward(&[usize::MAX, usize::MAX, 5, 5], p, cip)
                        });
                    }
                }
            }
        }
    }
    let y = Tensor::<f32>::zeros(&[1, 1, 2, 2]).unwrap();
    let idx = Tensor::from_vec(vec![usize::MAX; 4], &[1, 1, 2, 2]).unwrap();
    for shape in [
        &[1usize, 1, 4, 4][..],
        &[1, 1, usize::MAX, 2],
        &[1, 1, usize::MAX, usize::MAX],
    ] {
        if let Some(Ok(_)) = s.fallible(
            || format!("{shape:?}"),
            || y.max_pool2d_backward(&idx, shape),
        ) {
            s.bad_errors
                .push("an index past the plane was accepted".into());
        }
    }
    s.finish(1000);
}
