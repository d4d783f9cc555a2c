//! Error paths of every fallible public function: each test checks the
//! [`Error`] variant and that the message names the op and the shapes (or the
//! offending values). The last section checks that ops whose result is
//! legitimately empty succeed with the right shape instead.

use anneal_tensor::{
    broadcast_shapes, checked_numel, conv_output_size, normalize_axes, normalize_axis,
    Conv1dParams, Conv2dParams, Error, Pool2dParams, Result, Tensor,
};

/// The error of a call that must fail.
#[track_caller]
fn fails<T: std::fmt::Debug>(r: Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

/// Checks that `e` is reported by `op` and that its message starts with
/// `"{op}: "` and contains every fragment.
#[track_caller]
fn check(e: &Error, op: &str, fragments: &[&str]) {
    let msg = e.to_string();
    assert_eq!(e.op(), op, "wrong op in {msg:?}");
    assert!(msg.starts_with(&format!("{op}: ")), "{msg:?}");
    for f in fragments {
        assert!(msg.contains(f), "{msg:?} does not mention {f:?}");
    }
}

fn z(shape: &[usize]) -> Tensor<f32> {
    Tensor::zeros(shape).unwrap()
}

fn zd(shape: &[usize]) -> Tensor<f64> {
    Tensor::zeros(shape).unwrap()
}

fn idx(data: &[usize], shape: &[usize]) -> Tensor<usize> {
    Tensor::from_slice(data, shape).unwrap()
}

// ---------------------------------------------------------------------------
// Construction and element access
// ---------------------------------------------------------------------------

#[test]
fn from_vec_length_mismatch() {
    let e = fails(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[2, 2]));
    assert!(matches!(
        e,
        Error::DataLength {
            expected: 4,
            got: 3,
            ..
        }
    ));
    check(&e, "from_vec", &["[2, 2]", "4", "3"]);
}

#[test]
fn from_vec_zero_sized_dimension_with_data() {
    let e = fails(Tensor::from_vec(vec![1.0f32], &[0, 5]));
    assert!(matches!(
        e,
        Error::DataLength {
            expected: 0,
            got: 1,
            ..
        }
    ));
    check(&e, "from_vec", &["[0, 5]"]);
}

#[test]
fn from_slice_length_mismatch() {
    let e = fails(Tensor::from_slice(&[1.0f64; 5], &[2, 3]));
    assert!(matches!(
        e,
        Error::DataLength {
            expected: 6,
            got: 5,
            ..
        }
    ));
    assert!(e.to_string().contains("[2, 3]"), "{e}");
}

#[test]
fn from_vec_shape_overflow() {
    let e = fails(Tensor::<f32>::from_vec(vec![], &[usize::MAX, 2]));
    assert!(matches!(e, Error::TooLarge { .. }));
    check(&e, "from_vec", &[&format!("[{}, 2]", usize::MAX)]);
}

#[test]
fn full_and_zeros_too_large() {
    let e = fails(Tensor::full(&[1 << 40, 1 << 40], 1.0f32));
    assert!(matches!(e, Error::TooLarge { .. }));
    check(&e, "full", &["[1099511627776, 1099511627776]"]);
    for r in [
        Tensor::<f64>::zeros(&[usize::MAX, 3]),
        Tensor::ones(&[3, usize::MAX]),
    ] {
        let e = fails(r);
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains(&usize::MAX.to_string()), "{e}");
    }
}

#[test]
fn arange_zero_step() {
    let e = fails(Tensor::arange(0.0f32, 1.0, 0.0));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "arange", &["step 0"]);
}

#[test]
fn arange_non_finite_bounds() {
    for (s, t, st) in [
        (0.0f64, f64::INFINITY, 1.0),
        (f64::NAN, 1.0, 1.0),
        (0.0, 1.0, f64::NEG_INFINITY),
    ] {
        let e = fails(Tensor::arange(s, t, st));
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        check(&e, "arange", &["finite"]);
    }
}

#[test]
fn arange_too_many_elements() {
    let e = fails(Tensor::arange(0.0f64, 4.0e18, 1.0));
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    check(&e, "arange", &[]);
    let e = fails(Tensor::arange(0.0f64, 1e300, 1e-10));
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    check(&e, "arange", &[]);
}

#[test]
fn linspace_eye_too_large() {
    let e = fails(Tensor::<f32>::linspace(0.0, 1.0, usize::MAX));
    assert!(matches!(e, Error::TooLarge { .. }));
    check(&e, "linspace", &[&format!("[{}]", usize::MAX)]);
    let e = fails(Tensor::<f32>::eye(usize::MAX));
    assert!(matches!(e, Error::TooLarge { .. }));
    check(&e, "eye", &[]);
}

#[test]
fn random_tensors_too_large() {
    let e = fails(Tensor::<f32>::randn_seeded(&[usize::MAX, 2], 0));
    assert!(matches!(e, Error::TooLarge { .. }));
    check(&e, "randn", &[&format!("[{}, 2]", usize::MAX)]);
    let e = fails(Tensor::<f32>::rand_uniform_seeded(
        &[usize::MAX, 2],
        0.0,
        1.0,
        0,
    ));
    assert!(matches!(e, Error::TooLarge { .. }));
    check(&e, "rand_uniform", &[]);
}

#[test]
fn rand_uniform_bad_bounds() {
    let e = fails(Tensor::<f32>::rand_uniform_seeded(&[2], 1.0, -1.0, 0));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "rand_uniform", &["1", "-1"]);
    let e = fails(Tensor::<f64>::rand_uniform_seeded(&[2], f64::NAN, 1.0, 0));
    check(&e, "rand_uniform", &["NaN"]);
    let e = fails(Tensor::<f64>::rand_uniform_seeded(
        &[2],
        0.0,
        f64::INFINITY,
        0,
    ));
    check(&e, "rand_uniform", &["inf"]);
}

#[test]
fn get_and_set_index_out_of_range() {
    let mut t = z(&[2, 3]);
    let e = fails(t.get(&[1, 3]));
    assert_eq!(
        e,
        Error::IndexOutOfRange {
            op: "get",
            index: 3,
            size: 3,
            axis: 1
        }
    );
    check(&e, "get", &["index 3", "axis 1", "length 3"]);
    let e = fails(t.set(&[2, 0], 1.0));
    assert_eq!(
        e,
        Error::IndexOutOfRange {
            op: "set",
            index: 2,
            size: 2,
            axis: 0
        }
    );
    check(&e, "set", &["index 2"]);
}

#[test]
fn get_and_set_wrong_number_of_coordinates() {
    let mut t = z(&[2, 3]);
    let e = fails(t.get(&[1]));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "get", &["[2, 3]", "1 coordinates", "rank 2"]);
    let e = fails(t.set(&[0, 0, 0], 1.0));
    check(&e, "set", &["[2, 3]", "3 coordinates"]);
    // A rank-0 tensor is indexed by the empty multi-index only.
    let e = fails(Tensor::scalar(1.0f32).get(&[0]));
    check(&e, "get", &["[]"]);
}

#[test]
fn get_on_empty_tensor() {
    let e = fails(z(&[0, 3]).get(&[0, 0]));
    assert!(matches!(
        e,
        Error::IndexOutOfRange {
            index: 0,
            size: 0,
            axis: 0,
            ..
        }
    ));
    check(&e, "get", &["length 0"]);
}

#[test]
fn item_needs_one_element() {
    let e = fails(z(&[2, 3]).item());
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "item", &["[2, 3]", "6 elements"]);
    let e = fails(z(&[0]).item());
    check(&e, "item", &["[0]", "0 elements"]);
}

#[test]
fn dim_axis_out_of_range() {
    let t = z(&[2, 3]);
    assert_eq!(
        fails(t.dim(2)),
        Error::AxisOutOfRange {
            op: "dim",
            axis: 2,
            rank: 2
        }
    );
    let e = fails(t.dim(-3));
    assert_eq!(
        e,
        Error::AxisOutOfRange {
            op: "dim",
            axis: -3,
            rank: 2
        }
    );
    check(&e, "dim", &["axis -3", "rank 2"]);
}

// ---------------------------------------------------------------------------
// Shape helpers
// ---------------------------------------------------------------------------

#[test]
fn normalize_axis_out_of_range() {
    let e = fails(normalize_axis("myop", 3, 3));
    check(&e, "myop", &["axis 3", "rank 3"]);
    let e = fails(normalize_axis("myop", -4, 3));
    assert_eq!(
        e,
        Error::AxisOutOfRange {
            op: "myop",
            axis: -4,
            rank: 3
        }
    );
    assert!(normalize_axis("myop", 0, 0).is_err());
}

#[test]
fn normalize_axes_duplicates() {
    // 1 and −2 name the same axis of a rank-3 tensor.
    let e = fails(normalize_axes("myop", &[1, -2], 3));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "myop", &["axis 1", "more than once"]);
}

#[test]
fn broadcast_shapes_incompatible() {
    let e = fails(broadcast_shapes("myop", &[2, 3], &[4, 3]));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "myop", &["[2, 3] × [4, 3]", "axis -2", "2 and 4"]);
}

#[test]
fn checked_numel_overflow() {
    let e = fails(checked_numel("myop", &[1 << 32, 1 << 32, 2]));
    assert!(matches!(e, Error::TooLarge { .. }));
    check(&e, "myop", &["[4294967296, 4294967296, 2]"]);
}

// ---------------------------------------------------------------------------
// Element-wise ops
// ---------------------------------------------------------------------------

type BinOp = fn(&Tensor<f32>, &Tensor<f32>) -> Result<Tensor<f32>>;
type CmpOp = fn(&Tensor<f32>, &Tensor<f32>) -> Result<Tensor<bool>>;

#[test]
fn binary_ops_broadcast_mismatch() {
    let (a, b) = (z(&[2, 3]), z(&[2]));
    let ops: [(&str, BinOp); 7] = [
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("div", Tensor::div),
        ("maximum", Tensor::maximum),
        ("minimum", Tensor::minimum),
        ("pow", Tensor::pow),
    ];
    for (name, op) in ops {
        let e = fails(op(&a, &b));
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        check(&e, name, &["[2, 3] × [2]", "axis -1", "3 and 2"]);
    }
}

#[test]
fn comparisons_broadcast_mismatch() {
    let (a, b) = (z(&[4, 1, 3]), z(&[2, 4]));
    let ops: [(&str, CmpOp); 6] = [
        ("eq", Tensor::eq),
        ("ne", Tensor::ne),
        ("lt", Tensor::lt),
        ("le", Tensor::le),
        ("gt", Tensor::gt),
        ("ge", Tensor::ge),
    ];
    for (name, op) in ops {
        let e = fails(op(&a, &b));
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        check(&e, name, &["[4, 1, 3] × [2, 4]"]);
    }
}

#[test]
fn broadcast_mismatch_with_zero_sized_dimension() {
    // 0 and 3 differ and neither is 1.
    let e = fails(z(&[0, 2]).add(&z(&[3, 2])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "add", &["[0, 2] × [3, 2]", "0 and 3"]);
}

#[test]
fn zip_with_names_the_callers_op() {
    let e = fails(z(&[3]).zip_with(&z(&[4]), "my_op", |a, b| a + b));
    check(&e, "my_op", &["[3] × [4]"]);
}

#[test]
fn logical_ops_broadcast_mismatch() {
    let a = Tensor::from_vec(vec![true; 6], &[2, 3]).unwrap();
    let b = Tensor::from_vec(vec![false; 2], &[2]).unwrap();
    check(&fails(a.and(&b)), "and", &["[2, 3] × [2]"]);
    check(&fails(a.or(&b)), "or", &["[2, 3] × [2]"]);
}

#[test]
fn where_cond_mismatch() {
    let mask = Tensor::from_vec(vec![true; 4], &[4]).unwrap();
    let e = fails(Tensor::where_cond(&mask, &z(&[2, 3]), &z(&[3])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "where", &["[4]", "[2, 3]"]);
    let mask = Tensor::from_vec(vec![true; 3], &[3]).unwrap();
    let e = fails(Tensor::where_cond(&mask, &z(&[2, 3]), &z(&[2, 2])));
    check(&e, "where", &["[2, 3] × [2, 2]"]);
}

#[test]
fn masked_fill_mask_must_broadcast_to_self() {
    // [2, 3] would broadcast with [3], but the result may not grow.
    let mask = Tensor::from_vec(vec![true; 6], &[2, 3]).unwrap();
    let e = fails(z(&[3]).masked_fill(&mask, 1.0));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "masked_fill", &["[2, 3]", "[3]"]);
}

#[test]
fn clamp_min_above_max() {
    let e = fails(z(&[2]).clamp(Some(1.0), Some(-1.0)));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "clamp", &["min 1", "max -1"]);
}

#[test]
fn clamp_nan_bound() {
    let e = fails(z(&[2]).clamp(None, Some(f32::NAN)));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "clamp", &["NaN"]);
}

// ---------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------

#[test]
fn matmul_rank_zero() {
    let s = Tensor::scalar(2.0f32);
    let e = fails(s.matmul(&z(&[3])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "matmul", &["[] × [3]", "rank"]);
    let e = fails(z(&[3, 2]).matmul(&s));
    check(&e, "matmul", &["[3, 2] × []"]);
}

#[test]
fn matmul_inner_dimensions_differ() {
    let e = fails(z(&[2, 3]).matmul(&z(&[4, 5])));
    assert_eq!(
        e.to_string(),
        "matmul: [2, 3] × [4, 5]: inner dimensions 3 and 4 differ"
    );
    let e = fails(z(&[3]).matmul(&z(&[4])));
    check(&e, "matmul", &["[3] × [4]", "3 and 4"]);
    let e = fails(z(&[2, 3]).matmul(&z(&[2])));
    check(&e, "matmul", &["[2, 3] × [2]"]);
    let e = fails(z(&[0, 3]).matmul(&z(&[0, 3])));
    check(&e, "matmul", &["[0, 3] × [0, 3]", "3 and 0"]);
}

#[test]
fn matmul_t_inner_dimensions_differ() {
    // lhs [2, 3] transposed is 3×2; rhs [3, 4] has 3 rows.
    let e = fails(z(&[2, 3]).matmul_t(&z(&[3, 4]), true, false));
    check(&e, "matmul", &["[2, 3] × [3, 4]", "2 and 3"]);
    let e = fails(z(&[2, 3]).matmul_t(&z(&[3, 4]), false, true));
    check(&e, "matmul", &["[2, 3] × [3, 4]", "3 and 4"]);
}

#[test]
fn matmul_batch_axes_do_not_broadcast() {
    let e = fails(z(&[2, 3, 4]).matmul(&z(&[3, 4, 5])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "matmul", &["cannot broadcast", "2 and 3"]);
}

#[test]
fn linear_weight_not_a_matrix() {
    let e = fails(z(&[4, 3]).linear(&z(&[5, 3, 1]), None));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "linear", &["[4, 3] × [5, 3, 1]"]);
}

#[test]
fn linear_input_rank_zero() {
    let e = fails(Tensor::scalar(1.0f32).linear(&z(&[5, 1]), None));
    check(&e, "linear", &["[] × [5, 1]"]);
}

#[test]
fn linear_in_features_differ() {
    let e = fails(z(&[4, 3]).linear(&z(&[5, 2]), None));
    check(&e, "linear", &["[4, 3] × [5, 2]"]);
}

#[test]
fn linear_wrong_bias() {
    let e = fails(z(&[4, 3]).linear(&z(&[5, 3]), Some(&z(&[4]))));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "linear", &["[5, 3] × [4]", "[5]"]);
    let e = fails(z(&[4, 3]).linear(&z(&[5, 3]), Some(&z(&[1, 5]))));
    check(&e, "linear", &["[1, 5]"]);
}

// ---------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------

#[test]
fn conv2d_wrong_rank() {
    let e = fails(z(&[4, 5, 5]).conv2d(&z(&[2, 4, 3, 3]), None, Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "conv2d", &["[4, 5, 5] × [2, 4, 3, 3]"]);
    let e = fails(z(&[1, 4, 5, 5]).conv2d(&z(&[2, 4, 3]), None, Conv2dParams::default()));
    check(&e, "conv2d", &["[1, 4, 5, 5] × [2, 4, 3]"]);
}

#[test]
fn conv2d_zero_stride_dilation_or_groups() {
    let (x, w) = (z(&[1, 4, 5, 5]), z(&[2, 4, 3, 3]));
    for (p, what) in [
        (Conv2dParams::new(0, 0), "stride [0, 0]"),
        (Conv2dParams::default().with_dilation(0), "dilation [0, 0]"),
        (Conv2dParams::default().with_groups(0), "groups 0"),
        (
            Conv2dParams {
                stride: [1, 0],
                ..Default::default()
            },
            "stride [1, 0]",
        ),
    ] {
        let e = fails(x.conv2d(&w, None, p));
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        check(&e, "conv2d", &[what]);
    }
}

#[test]
fn conv2d_groups_must_divide_channels() {
    // 3 output channels do not divide into 2 groups.
    let e = fails(z(&[1, 4, 5, 5]).conv2d(
        &z(&[3, 2, 3, 3]),
        None,
        Conv2dParams::default().with_groups(2),
    ));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "conv2d", &["[1, 4, 5, 5] × [3, 2, 3, 3]", "groups = 2"]);
    // 3 input channels do not divide into 2 groups.
    let e = fails(z(&[1, 3, 5, 5]).conv2d(
        &z(&[2, 2, 3, 3]),
        None,
        Conv2dParams::default().with_groups(2),
    ));
    check(&e, "conv2d", &["[1, 3, 5, 5] × [2, 2, 3, 3]", "groups = 2"]);
}

#[test]
fn conv2d_weight_channels_differ() {
    let e = fails(z(&[1, 4, 5, 5]).conv2d(&z(&[2, 3, 3, 3]), None, Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(
        &e,
        "conv2d",
        &["[1, 4, 5, 5] × [2, 3, 3, 3]", "3 input channels", "has 4"],
    );
}

#[test]
fn conv2d_kernel_larger_than_padded_input() {
    let x = z(&[1, 4, 5, 5]);
    let e = fails(x.conv2d(&z(&[2, 4, 7, 7]), None, Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "conv2d", &["[1, 4, 5, 5] × [2, 4, 7, 7]", "larger"]);
    // With padding 1 the padded input is 7×7 and the kernel fits ...
    assert!(x
        .conv2d(&z(&[2, 4, 7, 7]), None, Conv2dParams::new(1, 1))
        .is_ok());
    // ... but a 3×3 kernel dilated by 3 spans 7 and does not fit 5×5.
    let e = fails(x.conv2d(
        &z(&[2, 4, 3, 3]),
        None,
        Conv2dParams::default().with_dilation(3),
    ));
    check(
        &e,
        "conv2d",
        &["[1, 4, 5, 5] × [2, 4, 3, 3]", "dilation [3, 3]"],
    );
}

#[test]
fn conv2d_zero_sized_spatial_input() {
    let e = fails(z(&[1, 4, 0, 5]).conv2d(&z(&[2, 4, 1, 1]), None, Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "conv2d", &["[1, 4, 0, 5] × [2, 4, 1, 1]"]);
}

#[test]
fn conv2d_zero_sized_kernel() {
    let e = fails(z(&[1, 4, 5, 5]).conv2d(&z(&[2, 4, 0, 3]), None, Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "conv2d", &["[1, 4, 5, 5] × [2, 4, 0, 3]", "kernel"]);
}

#[test]
fn conv2d_wrong_bias() {
    let e =
        fails(z(&[1, 4, 5, 5]).conv2d(&z(&[2, 4, 3, 3]), Some(&z(&[3])), Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "conv2d", &["[2, 4, 3, 3] × [3]", "[2]"]);
}

#[test]
fn conv2d_input_grad_wrong_output_gradient() {
    let w = z(&[2, 4, 3, 3]);
    let e = fails(z(&[1, 2, 4, 4]).conv2d_input_grad(&w, &[1, 4, 5, 5], Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(
        &e,
        "conv2d_input_grad",
        &[
            "[1, 2, 4, 4]",
            "[1, 4, 5, 5]",
            "[2, 4, 3, 3]",
            "[1, 2, 3, 3]",
        ],
    );
}

#[test]
fn conv2d_input_grad_bad_geometry() {
    let w = z(&[2, 3, 3, 3]);
    let e = fails(z(&[1, 2, 3, 3]).conv2d_input_grad(&w, &[1, 4, 5, 5], Conv2dParams::default()));
    check(&e, "conv2d_input_grad", &["[1, 4, 5, 5] × [2, 3, 3, 3]"]);
    let e = fails(z(&[1, 2, 3, 3]).conv2d_input_grad(&w, &[4, 5, 5], Conv2dParams::default()));
    check(&e, "conv2d_input_grad", &["[4, 5, 5]"]);
}

#[test]
fn conv2d_weight_grad_wrong_output_gradient() {
    let x = z(&[1, 4, 5, 5]);
    let e = fails(z(&[1, 2, 3, 4]).conv2d_weight_grad(&x, &[2, 4, 3, 3], Conv2dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(
        &e,
        "conv2d_weight_grad",
        &[
            "[1, 2, 3, 4]",
            "[1, 4, 5, 5]",
            "[2, 4, 3, 3]",
            "[1, 2, 3, 3]",
        ],
    );
}

#[test]
fn conv2d_weight_grad_bad_geometry() {
    let x = z(&[1, 4, 5, 5]);
    let e = fails(z(&[1, 2, 3, 3]).conv2d_weight_grad(
        &x,
        &[2, 4, 3, 3],
        Conv2dParams::default().with_groups(3),
    ));
    check(
        &e,
        "conv2d_weight_grad",
        &["[1, 4, 5, 5] × [2, 4, 3, 3]", "groups = 3"],
    );
}

#[test]
fn conv1d_wrong_rank() {
    let e = fails(z(&[4, 5]).conv1d(&z(&[2, 4, 3]), None, Conv1dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "conv1d", &["[4, 5]"]);
    let e = fails(z(&[1, 4, 5]).conv1d(&z(&[2, 4, 3, 3]), None, Conv1dParams::default()));
    check(&e, "conv1d", &["[2, 4, 3, 3]"]);
}

#[test]
fn conv1d_channels_and_length() {
    // Reported through the 2-D kernel it delegates to; the variant and the
    // reason are what matter here.
    let e = fails(z(&[1, 4, 5]).conv1d(&z(&[2, 3, 3]), None, Conv1dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("3 input channels"), "{e}");
    let e = fails(z(&[1, 4, 5]).conv1d(&z(&[2, 4, 6]), None, Conv1dParams::default()));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let p = Conv1dParams {
        stride: 0,
        ..Default::default()
    };
    let e = fails(z(&[1, 4, 5]).conv1d(&z(&[2, 4, 3]), None, p));
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn conv1d_grads_wrong_rank() {
    let (dy, w, x) = (z(&[1, 2, 3]), z(&[2, 4, 3]), z(&[1, 4, 5]));
    let e = fails(dy.conv1d_input_grad(&w, &[1, 4, 5, 1], Conv1dParams::default()));
    check(&e, "conv1d_input_grad", &["[1, 4, 5, 1]"]);
    let e = fails(z(&[1, 2]).conv1d_input_grad(&w, &[1, 4, 5], Conv1dParams::default()));
    check(&e, "conv1d_input_grad", &["[1, 2]"]);
    let e = fails(dy.conv1d_weight_grad(&x, &[2, 4], Conv1dParams::default()));
    check(&e, "conv1d_weight_grad", &["[2, 4]"]);
    let e = fails(dy.conv1d_weight_grad(&z(&[4, 5]), &[2, 4, 3], Conv1dParams::default()));
    check(&e, "conv1d_weight_grad", &["[4, 5]"]);
}

#[test]
fn conv_output_size_rejects_what_does_not_fit() {
    assert_eq!(conv_output_size(5, 3, 1, 0, 1), Some(3));
    assert_eq!(conv_output_size(5, 3, 0, 0, 1), None);
    assert_eq!(conv_output_size(5, 0, 1, 0, 1), None);
    assert_eq!(conv_output_size(5, 7, 1, 0, 1), None);
    assert_eq!(conv_output_size(5, 7, 1, 1, 1), Some(1));
    assert_eq!(conv_output_size(usize::MAX, 1, 1, 1, 1), None);
}

// ---------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------

#[test]
fn pool_wrong_rank() {
    let x = z(&[2, 4, 4]);
    let e = fails(x.max_pool2d(Pool2dParams::new(2)));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "max_pool2d", &["[2, 4, 4]"]);
    let e = fails(x.avg_pool2d(Pool2dParams::new(2), true));
    check(&e, "avg_pool2d", &["[2, 4, 4]"]);
}

#[test]
fn pool_zero_kernel_or_stride() {
    let x = z(&[1, 1, 4, 4]);
    for p in [Pool2dParams::new(0), Pool2dParams::new(2).with_stride(0)] {
        let e = fails(x.max_pool2d(p));
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        check(&e, "max_pool2d", &["kernel", "stride"]);
        let e = fails(x.avg_pool2d(p, false));
        check(&e, "avg_pool2d", &["kernel", "stride"]);
    }
}

#[test]
fn pool_padding_above_half_kernel() {
    let x = z(&[1, 1, 4, 4]);
    let p = Pool2dParams::new(3).with_padding(2);
    let e = fails(x.max_pool2d(p));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "max_pool2d", &["padding [2, 2]", "kernel [3, 3]"]);
    let e = fails(x.avg_pool2d(p, true));
    check(&e, "avg_pool2d", &["padding [2, 2]"]);
}

#[test]
fn pool_window_larger_than_input() {
    let x = z(&[1, 1, 2, 5]);
    let e = fails(x.max_pool2d(Pool2dParams::new(3)));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "max_pool2d", &["[1, 1, 2, 5]", "[3, 3]"]);
    let e = fails(x.avg_pool2d(Pool2dParams::new(3), true));
    check(&e, "avg_pool2d", &["[1, 1, 2, 5]"]);
    // Zero-sized spatial axis, no padding.
    let e = fails(z(&[1, 1, 0, 5]).max_pool2d(Pool2dParams::new(1)));
    check(&e, "max_pool2d", &["[1, 1, 0, 5]"]);
}

#[test]
fn max_pool2d_backward_shape_mismatch() {
    let x = z(&[1, 2, 4, 4]);
    let (y, i) = x.max_pool2d(Pool2dParams::new(2)).unwrap();
    // Gradient and indices disagree.
    let e = fails(z(&[1, 2, 2, 1]).max_pool2d_backward(&i, x.shape()));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(
        &e,
        "max_pool2d_backward",
        &["[1, 2, 2, 1]", "[1, 2, 2, 2]", "[1, 2, 4, 4]"],
    );
    // N and C disagree with the input.
    let e = fails(y.max_pool2d_backward(&i, &[1, 3, 4, 4]));
    check(&e, "max_pool2d_backward", &["[1, 3, 4, 4]"]);
    // Input shape of the wrong rank.
    let e = fails(y.max_pool2d_backward(&i, &[2, 4, 4]));
    check(&e, "max_pool2d_backward", &["[2, 4, 4]"]);
}

#[test]
fn max_pool2d_backward_index_out_of_range() {
    let y = z(&[1, 1, 2, 2]);
    let i = idx(&[0, 1, 2, 16], &[1, 1, 2, 2]);
    let e = fails(y.max_pool2d_backward(&i, &[1, 1, 4, 4]));
    assert!(matches!(
        e,
        Error::IndexOutOfRange {
            index: 16,
            size: 16,
            ..
        }
    ));
    check(&e, "max_pool2d_backward", &["index 16", "length 16"]);
}

#[test]
fn avg_pool2d_backward_wrong_gradient() {
    let p = Pool2dParams::new(2);
    let e = fails(z(&[1, 2, 3, 2]).avg_pool2d_backward(&[1, 2, 4, 4], p, true));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(
        &e,
        "avg_pool2d_backward",
        &["[1, 2, 3, 2] × [1, 2, 4, 4]", "[1, 2, 2, 2]"],
    );
    let e = fails(z(&[1, 2, 2, 2]).avg_pool2d_backward(&[1, 2, 1, 4], p, true));
    check(&e, "avg_pool2d_backward", &["[1, 2, 1, 4]"]);
}

// ---------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------

#[test]
fn reductions_axis_out_of_range() {
    let t = z(&[2, 3, 4]);
    for (axis, rank) in [(3isize, 3usize), (-4, 3)] {
        let errs = [
            ("sum", fails(t.sum_axes(&[axis], false))),
            ("mean", fails(t.mean_axes(&[0, axis], true))),
            ("var", fails(t.var_axes(&[axis], true, false))),
            ("max", fails(t.max_axes(&[axis], false))),
            ("min", fails(t.min_axes(&[axis], false))),
            ("logsumexp", fails(t.logsumexp_axes(&[axis], false))),
            ("argmax", fails(t.argmax(axis, false))),
            ("argmin", fails(t.argmin(axis, false))),
            ("softmax", fails(t.softmax(axis))),
            ("log_softmax", fails(t.log_softmax(axis))),
        ];
        for (op, e) in errs {
            assert_eq!(e, Error::AxisOutOfRange { op, axis, rank }, "{e}");
            check(&e, op, &[&format!("axis {axis}"), "rank 3"]);
        }
    }
}

#[test]
fn std_axis_out_of_range() {
    let e = fails(z(&[2, 3]).std_axes(&[2], false, false));
    assert!(
        matches!(
            e,
            Error::AxisOutOfRange {
                axis: 2,
                rank: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("axis 2"), "{e}");
}

#[test]
fn reductions_duplicate_axes() {
    let t = z(&[2, 3, 4]);
    for (op, e) in [
        ("sum", fails(t.sum_axes(&[1, -2], false))),
        ("mean", fails(t.mean_axes(&[2, 2], false))),
        ("max", fails(t.max_axes(&[0, -3], false))),
    ] {
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        check(&e, op, &["more than once"]);
    }
}

#[test]
fn reductions_of_rank_zero_need_no_axes() {
    let s = Tensor::scalar(1.0f32);
    let e = fails(s.sum_axes(&[0], false));
    assert_eq!(
        e,
        Error::AxisOutOfRange {
            op: "sum",
            axis: 0,
            rank: 0
        }
    );
    assert_eq!(s.sum_axes::<i32>(&[], false).unwrap(), s);
}

#[test]
fn max_min_logsumexp_of_empty_axis() {
    let t = z(&[0, 3]);
    for (op, e) in [
        ("max", fails(t.max_axes(&[0], false))),
        ("min", fails(t.min_axes(&[-2], true))),
        ("logsumexp", fails(t.logsumexp_axes(&[0, 1], false))),
    ] {
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        check(&e, op, &["[0, 3]", "extent 0"]);
    }
}

#[test]
fn argmax_argmin_of_empty_axis() {
    let t = z(&[3, 0]);
    let e = fails(t.argmax(1, false));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "argmax", &["[3, 0]"]);
    let e = fails(t.argmin(-1, true));
    check(&e, "argmin", &["[3, 0]"]);
}

#[test]
fn max_all_min_all_of_empty_tensor() {
    let t = z(&[2, 0]);
    let e = fails(t.max_all());
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "max_all", &["empty"]);
    check(&fails(t.min_all()), "min_all", &["empty"]);
}

#[test]
fn sum_to_shape_not_a_broadcast_source() {
    let g = z(&[2, 3, 4]);
    let e = fails(g.sum_to_shape(&[5]));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "sum_to_shape", &["[5] × [2, 3, 4]"]);
    // More axes than the gradient has.
    let e = fails(g.sum_to_shape(&[1, 2, 3, 4]));
    check(&e, "sum_to_shape", &["[1, 2, 3, 4] × [2, 3, 4]"]);
}

#[test]
fn softmax_of_rank_zero() {
    let e = fails(Tensor::scalar(1.0f32).softmax(-1));
    assert_eq!(
        e,
        Error::AxisOutOfRange {
            op: "softmax",
            axis: -1,
            rank: 0
        }
    );
}

// ---------------------------------------------------------------------------
// Shape operations
// ---------------------------------------------------------------------------

#[test]
fn reshape_element_count_differs() {
    let e = fails(z(&[2, 3]).reshape(&[4]));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "reshape", &["[2, 3] × [4]", "6", "4"]);
    let e = fails(z(&[0, 3]).reshape(&[1]));
    check(&e, "reshape", &["[0, 3] × [1]"]);
}

#[test]
fn reshape_too_large() {
    let e = fails(z(&[0]).reshape(&[usize::MAX, 2]));
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    check(&e, "reshape", &[]);
}

#[test]
fn flatten_bad_axes() {
    let t = z(&[2, 3, 4]);
    assert_eq!(
        fails(t.flatten(0, 3)),
        Error::AxisOutOfRange {
            op: "flatten",
            axis: 3,
            rank: 3
        }
    );
    assert_eq!(
        fails(t.flatten(-4, 1)),
        Error::AxisOutOfRange {
            op: "flatten",
            axis: -4,
            rank: 3
        }
    );
    let e = fails(t.flatten(2, 1));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "flatten", &["2", "1"]);
}

#[test]
fn permute_not_a_permutation() {
    let t = z(&[2, 3, 4]);
    for perm in [&[0, 0, 1][..], &[0, 1], &[0, 1, 3], &[0, 1, 2, 3]] {
        let e = fails(t.permute(perm));
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        check(&e, "permute", &[&format!("{perm:?}"), "[2, 3, 4]"]);
    }
}

#[test]
fn transpose_axis_out_of_range() {
    let t = z(&[2, 3]);
    assert_eq!(
        fails(t.transpose(0, 2)),
        Error::AxisOutOfRange {
            op: "transpose",
            axis: 2,
            rank: 2
        }
    );
    assert_eq!(
        fails(t.transpose(-3, 0)),
        Error::AxisOutOfRange {
            op: "transpose",
            axis: -3,
            rank: 2
        }
    );
}

#[test]
fn squeeze_needs_extent_one() {
    let t = z(&[1, 3]);
    let e = fails(t.squeeze(1));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "squeeze", &["[1, 3]", "extent 3"]);
    assert_eq!(
        fails(t.squeeze(-3)),
        Error::AxisOutOfRange {
            op: "squeeze",
            axis: -3,
            rank: 2
        }
    );
    let e = fails(z(&[0, 1]).squeeze(0));
    check(&e, "squeeze", &["[0, 1]", "extent 0"]);
}

#[test]
fn unsqueeze_axis_out_of_range() {
    let t = z(&[2, 3]);
    // Valid axes are −3..=2 (one more than the rank).
    assert_eq!(t.unsqueeze(2).unwrap().shape(), &[2, 3, 1]);
    assert_eq!(t.unsqueeze(-3).unwrap().shape(), &[1, 2, 3]);
    assert_eq!(
        fails(t.unsqueeze(3)),
        Error::AxisOutOfRange {
            op: "unsqueeze",
            axis: 3,
            rank: 3
        }
    );
    assert_eq!(
        fails(t.unsqueeze(-4)),
        Error::AxisOutOfRange {
            op: "unsqueeze",
            axis: -4,
            rank: 3
        }
    );
}

#[test]
fn broadcast_to_incompatible() {
    let t = z(&[2, 1]);
    let e = fails(t.broadcast_to(&[3, 3]));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "broadcast_to", &["[2, 1] × [3, 3]"]);
    let e = fails(t.broadcast_to(&[3]));
    check(&e, "broadcast_to", &["[2, 1] × [3]", "rank"]);
    let e = fails(z(&[0]).broadcast_to(&[2, 3]));
    check(&e, "broadcast_to", &["[0] × [2, 3]"]);
}

#[test]
fn broadcast_to_too_large() {
    let e = fails(z(&[1, 1]).broadcast_to(&[usize::MAX, 2]));
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    check(&e, "broadcast_to", &[]);
}

#[test]
fn narrow_out_of_range() {
    let t = z(&[3, 4]);
    let e = fails(t.narrow(1, 3, 2));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    // Reported by the slice it delegates to.
    assert!(e.to_string().contains("[3, 4]"), "{e}");
    assert!(e.to_string().contains("3..5"), "{e}");
    let e = fails(t.narrow(0, usize::MAX, 2));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    assert!(matches!(
        fails(t.narrow(2, 0, 1)),
        Error::AxisOutOfRange {
            axis: 2,
            rank: 2,
            ..
        }
    ));
}

#[test]
fn slice_zero_step() {
    let e = fails(z(&[3, 4]).slice(1, 0, 4, 0));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "slice", &["step 0", "[3, 4]"]);
}

#[test]
fn slice_bad_range() {
    let t = z(&[3, 4]);
    let e = fails(t.slice(1, 3, 2, 1));
    check(&e, "slice", &["3..2", "[3, 4]"]);
    let e = fails(t.slice(-1, 0, 5, 2));
    check(&e, "slice", &["0..5", "extent 4", "[3, 4]"]);
    let e = fails(z(&[0, 4]).slice(0, 0, 1, 1));
    check(&e, "slice", &["extent 0", "[0, 4]"]);
}

#[test]
fn index_select_out_of_range() {
    let t = z(&[3, 2]);
    let e = fails(t.index_select(0, &[0, 3]));
    assert_eq!(
        e,
        Error::IndexOutOfRange {
            op: "index_select",
            index: 3,
            size: 3,
            axis: 0
        }
    );
    check(&e, "index_select", &["index 3", "length 3"]);
    assert_eq!(
        fails(t.index_select(-3, &[0])),
        Error::AxisOutOfRange {
            op: "index_select",
            axis: -3,
            rank: 2
        }
    );
    let e = fails(z(&[0, 2]).index_select(0, &[0]));
    assert!(matches!(e, Error::IndexOutOfRange { size: 0, .. }));
}

#[test]
fn gather_index_rank_differs() {
    let e = fails(z(&[2, 3]).gather(1, &idx(&[0, 1], &[2])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "gather", &["[2, 3] × [2]", "rank"]);
}

#[test]
fn gather_index_extent_exceeds_input() {
    // Off the gather axis, the index may not be larger than the input.
    let e = fails(z(&[2, 3]).gather(1, &idx(&[0; 3], &[3, 1])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "gather", &["[2, 3] × [3, 1]", "axis 0"]);
}

#[test]
fn gather_index_out_of_range() {
    let e = fails(z(&[2, 3]).gather(1, &idx(&[0, 3], &[2, 1])));
    assert_eq!(
        e,
        Error::IndexOutOfRange {
            op: "gather",
            index: 3,
            size: 3,
            axis: 1
        }
    );
    assert_eq!(
        fails(z(&[2, 3]).gather(2, &idx(&[0, 0], &[2, 1]))),
        Error::AxisOutOfRange {
            op: "gather",
            axis: 2,
            rank: 2
        }
    );
}

#[test]
fn scatter_add_src_shape_differs() {
    let i = idx(&[0, 1], &[2, 1]);
    let e = fails(z(&[2, 3]).scatter_add(1, &i, &z(&[2, 2])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "scatter_add", &["[2, 1] × [2, 2]"]);
}

#[test]
fn scatter_add_index_out_of_range() {
    let i = idx(&[0, 5], &[2, 1]);
    let e = fails(z(&[2, 3]).scatter_add(1, &i, &z(&[2, 1])));
    assert_eq!(
        e,
        Error::IndexOutOfRange {
            op: "scatter_add",
            index: 5,
            size: 3,
            axis: 1
        }
    );
    let e = fails(z(&[2, 3]).scatter_add(-1, &idx(&[0], &[1]), &z(&[1])));
    check(&e, "scatter_add", &["[2, 3] × [1]"]);
}

#[test]
fn index_add_src_shape_differs() {
    let e = fails(z(&[3, 2]).index_add(0, &[0, 2], &z(&[3, 2])));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "index_add", &["[3, 2] × [3, 2]", "[2, 2]"]);
}

#[test]
fn index_add_index_out_of_range() {
    let e = fails(z(&[3, 2]).index_add(1, &[2], &z(&[3, 1])));
    assert_eq!(
        e,
        Error::IndexOutOfRange {
            op: "index_add",
            index: 2,
            size: 2,
            axis: 1
        }
    );
    assert_eq!(
        fails(z(&[3, 2]).index_add(2, &[0], &z(&[3, 2]))),
        Error::AxisOutOfRange {
            op: "index_add",
            axis: 2,
            rank: 2
        }
    );
}

#[test]
fn split_sizes_do_not_add_up() {
    let t = z(&[2, 3]);
    let e = fails(t.split_sizes(1, &[1, 1]));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(
        &e,
        "split",
        &["[1, 1]", "add up to 2", "[2, 3]", "extent 3"],
    );
    let e = fails(t.split_sizes(0, &[1, 1, 1]));
    check(&e, "split", &["add up to 3", "extent 2"]);
    assert_eq!(
        fails(t.split_sizes(-3, &[2])),
        Error::AxisOutOfRange {
            op: "split",
            axis: -3,
            rank: 2
        }
    );
}

#[test]
fn split_and_chunk_zero_sizes() {
    let t = z(&[2, 3]);
    let e = fails(t.split(1, 0));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "split", &["size"]);
    let e = fails(t.chunk(0, 1));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "chunk", &["chunks"]);
    assert_eq!(
        fails(t.chunk(2, 2)),
        Error::AxisOutOfRange {
            op: "chunk",
            axis: 2,
            rank: 2
        }
    );
}

#[test]
fn concat_of_nothing() {
    let e = fails(Tensor::<f32>::concat(&[], 0));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "concat", &["no tensors"]);
}

#[test]
fn concat_mismatched_shapes() {
    let (a, b) = (z(&[2, 2]), z(&[2, 1]));
    let e = fails(Tensor::concat(&[&a, &b], 0));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "concat", &["[2, 2] × [2, 1]", "axis 0"]);
    let e = fails(Tensor::concat(&[&a, &z(&[2, 2, 1])], 1));
    check(&e, "concat", &["[2, 2] × [2, 2, 1]"]);
    assert_eq!(
        fails(Tensor::concat(&[&a, &b], -3)),
        Error::AxisOutOfRange {
            op: "concat",
            axis: -3,
            rank: 2
        }
    );
    // Rank-0 tensors have no axis to join along.
    let s = Tensor::scalar(1.0f32);
    assert!(matches!(
        fails(Tensor::concat(&[&s, &s], 0)),
        Error::AxisOutOfRange { op: "concat", .. }
    ));
}

#[test]
fn stack_of_nothing_or_mismatched() {
    let e = fails(Tensor::<f32>::stack(&[], 0));
    check(&e, "stack", &["no tensors"]);
    let e = fails(Tensor::stack(&[&z(&[2, 3]), &z(&[3, 2])], 0));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    check(&e, "stack", &["[2, 3] × [3, 2]"]);
    assert_eq!(
        fails(Tensor::stack(&[&z(&[2, 3])], 3)),
        Error::AxisOutOfRange {
            op: "stack",
            axis: 3,
            rank: 3
        }
    );
}

#[test]
fn pad_wrong_number_of_pairs() {
    let t = z(&[1, 2]);
    let e = fails(t.pad(&[(1, 1)], 0.0));
    assert!(matches!(e, Error::InvalidArgument { .. }));
    check(&e, "pad", &["1 (before, after) pairs", "rank 2", "[1, 2]"]);
    let e = fails(t.pad(&[(0, 0); 3], 0.0));
    check(&e, "pad", &["3 (before, after)"]);
}

#[test]
fn pad_overflow() {
    let e = fails(z(&[1, 2]).pad(&[(0, 0), (usize::MAX, 1)], 0.0));
    assert!(matches!(
        e,
        Error::InvalidArgument { .. } | Error::TooLarge { .. }
    ));
    check(&e, "pad", &[]);
    let e = fails(z(&[2, 2]).pad(&[(1 << 40, 0), (1 << 40, 0)], 0.0));
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

// ---------------------------------------------------------------------------
// Legitimately empty results
// ---------------------------------------------------------------------------

#[test]
fn empty_broadcasts() {
    let row = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
    assert_eq!(z(&[0, 3]).add(&row).unwrap().shape(), &[0, 3]);
    assert_eq!(row.mul(&z(&[0, 3])).unwrap().shape(), &[0, 3]);
    assert_eq!(z(&[2, 0]).add(&z(&[2, 1])).unwrap().shape(), &[2, 0]);
    assert_eq!(z(&[0, 1, 4]).sub(&z(&[5, 1])).unwrap().shape(), &[0, 5, 4]);
    assert_eq!(Tensor::scalar(1.0f32).add(&z(&[0])).unwrap().shape(), &[0]);
    let mask = Tensor::<bool>::from_vec(vec![], &[0, 3]).unwrap();
    assert_eq!(
        Tensor::where_cond(&mask, &row, &row).unwrap().shape(),
        &[0, 3]
    );
    assert_eq!(z(&[0, 3]).exp().shape(), &[0, 3]);
    assert_eq!(
        z(&[0, 3]).clamp(Some(0.0), Some(1.0)).unwrap().shape(),
        &[0, 3]
    );
}

#[test]
fn empty_matmuls() {
    // An empty inner dimension sums nothing: zeros.
    let c = zd(&[2, 0]).matmul(&zd(&[0, 3])).unwrap();
    assert_eq!(c.shape(), &[2, 3]);
    assert_eq!(c.to_vec(), vec![0.0; 6]);
    let ones = Tensor::<f64>::ones(&[3, 0]).unwrap();
    let c = ones.matmul_t(&ones, true, false).unwrap(); // [0, 3] × [3, 0]
    assert_eq!(c.shape(), &[0, 0]);
    let c = ones.matmul_t(&ones, false, true).unwrap(); // [3, 0] × [0, 3]
    assert_eq!(c.to_vec(), vec![0.0; 9]);
    assert_eq!(zd(&[0, 3]).matmul(&zd(&[3, 4])).unwrap().shape(), &[0, 4]);
    assert_eq!(zd(&[2, 3]).matmul(&zd(&[3, 0])).unwrap().shape(), &[2, 0]);
    assert_eq!(
        zd(&[0, 2, 3]).matmul(&zd(&[3, 4])).unwrap().shape(),
        &[0, 2, 4]
    );
    assert_eq!(
        zd(&[5, 1, 2, 3]).matmul(&zd(&[0, 3, 4])).unwrap().shape(),
        &[5, 0, 2, 4]
    );
    let d = zd(&[0]).matmul(&zd(&[0])).unwrap();
    assert_eq!(d.shape(), &[] as &[usize]);
    assert_eq!(d.item().unwrap(), 0.0);
}

#[test]
fn empty_linear() {
    let w = Tensor::<f64>::ones(&[5, 3]).unwrap();
    assert_eq!(zd(&[0, 3]).linear(&w, None).unwrap().shape(), &[0, 5]);
    // No input features: the output is the bias on every row.
    let b = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap();
    let y = zd(&[3, 0]).linear(&zd(&[2, 0]), Some(&b)).unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    assert_eq!(y.to_vec(), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    assert_eq!(
        zd(&[3, 3]).linear(&zd(&[0, 3]), None).unwrap().shape(),
        &[3, 0]
    );
}

#[test]
fn empty_reductions_over_non_empty_axes() {
    let t = zd(&[0, 3]);
    assert_eq!(t.sum_axes(&[1], false).unwrap().shape(), &[0]);
    assert_eq!(t.sum_axes(&[1], true).unwrap().shape(), &[0, 1]);
    assert_eq!(t.mean_axes(&[-1], false).unwrap().shape(), &[0]);
    assert_eq!(t.var_axes(&[1], true, false).unwrap().shape(), &[0]);
    assert_eq!(t.max_axes(&[1], false).unwrap().shape(), &[0]);
    assert_eq!(t.min_axes(&[1], true).unwrap().shape(), &[0, 1]);
    assert_eq!(t.logsumexp_axes(&[1], false).unwrap().shape(), &[0]);
    assert_eq!(t.argmax(1, false).unwrap().shape(), &[0]);
    assert_eq!(t.argmin(1, true).unwrap().shape(), &[0, 1]);
    assert_eq!(t.sum_axes::<i32>(&[], false).unwrap().shape(), &[0, 3]);
    assert_eq!(t.sum_to_shape(&[0, 1]).unwrap().shape(), &[0, 1]);
}

#[test]
fn empty_softmax() {
    assert_eq!(zd(&[0, 3]).softmax(-1).unwrap().shape(), &[0, 3]);
    assert_eq!(zd(&[3, 0]).softmax(-1).unwrap().shape(), &[3, 0]);
    assert_eq!(zd(&[3, 0]).log_softmax(0).unwrap().shape(), &[3, 0]);
    assert_eq!(zd(&[2, 0, 3]).softmax(1).unwrap().shape(), &[2, 0, 3]);
}

#[test]
fn empty_batch_convolution() {
    let p = Conv2dParams::new(1, 1);
    let x = zd(&[0, 4, 5, 5]);
    let w = Tensor::<f64>::ones(&[2, 4, 3, 3]).unwrap();
    let b = Tensor::<f64>::ones(&[2]).unwrap();
    let y = x.conv2d(&w, Some(&b), p).unwrap();
    assert_eq!(y.shape(), &[0, 2, 5, 5]);
    let dx = y.conv2d_input_grad(&w, x.shape(), p).unwrap();
    assert_eq!(dx.shape(), &[0, 4, 5, 5]);
    // The weight gradient sums over an empty batch: zeros.
    let dw = y.conv2d_weight_grad(&x, w.shape(), p).unwrap();
    assert_eq!(dw.shape(), w.shape());
    assert_eq!(dw.to_vec(), vec![0.0; 72]);
    let y1 = zd(&[0, 4, 5])
        .conv1d(&zd(&[2, 4, 3]), None, Conv1dParams::default())
        .unwrap();
    assert_eq!(y1.shape(), &[0, 2, 3]);
}

#[test]
fn convolution_without_output_channels() {
    let x = Tensor::<f64>::ones(&[1, 4, 5, 5]).unwrap();
    let w = zd(&[0, 4, 3, 3]);
    let y = x.conv2d(&w, None, Conv2dParams::default()).unwrap();
    assert_eq!(y.shape(), &[1, 0, 3, 3]);
    // Nothing flows back from no outputs.
    let dx = y
        .conv2d_input_grad(&w, x.shape(), Conv2dParams::default())
        .unwrap();
    assert_eq!(dx.to_vec(), vec![0.0; 100]);
}

#[test]
fn empty_batch_pooling() {
    let x = zd(&[0, 3, 4, 4]);
    let p = Pool2dParams::new(2);
    let (y, i) = x.max_pool2d(p).unwrap();
    assert_eq!(y.shape(), &[0, 3, 2, 2]);
    assert_eq!(i.shape(), &[0, 3, 2, 2]);
    assert_eq!(
        y.max_pool2d_backward(&i, x.shape()).unwrap().shape(),
        x.shape()
    );
    let a = x.avg_pool2d(p, false).unwrap();
    assert_eq!(a.shape(), &[0, 3, 2, 2]);
    assert_eq!(
        a.avg_pool2d_backward(x.shape(), p, false).unwrap().shape(),
        x.shape()
    );
}

#[test]
fn empty_shape_ops() {
    let t = zd(&[0, 3]);
    assert_eq!(t.reshape(&[3, 0, 2]).unwrap().shape(), &[3, 0, 2]);
    assert_eq!(t.transpose(0, 1).unwrap().shape(), &[3, 0]);
    assert_eq!(
        zd(&[2, 0, 3]).permute(&[2, 0, 1]).unwrap().shape(),
        &[3, 2, 0]
    );
    assert_eq!(t.flatten(0, 1).unwrap().shape(), &[0]);
    assert_eq!(t.unsqueeze(1).unwrap().shape(), &[0, 1, 3]);
    assert_eq!(zd(&[1, 3]).broadcast_to(&[0, 3]).unwrap().shape(), &[0, 3]);
    assert_eq!(t.narrow(1, 1, 2).unwrap().shape(), &[0, 2]);
    assert_eq!(zd(&[3, 4]).slice(1, 2, 2, 1).unwrap().shape(), &[3, 0]);
    assert_eq!(zd(&[3, 4]).index_select(0, &[]).unwrap().shape(), &[0, 4]);
    let g = zd(&[3, 4]).gather(1, &idx(&[], &[3, 0])).unwrap();
    assert_eq!(g.shape(), &[3, 0]);
    let s = zd(&[3, 4])
        .scatter_add(1, &idx(&[], &[3, 0]), &zd(&[3, 0]))
        .unwrap();
    assert_eq!(s.to_vec(), vec![0.0; 12]);
    // Padding an empty tensor yields only padding.
    let p = t.pad(&[(1, 0), (0, 1)], 7.0).unwrap();
    assert_eq!(p.shape(), &[1, 4]);
    assert_eq!(p.to_vec(), vec![7.0; 4]);
}

#[test]
fn empty_joins_and_splits() {
    let a = Tensor::<f64>::ones(&[2, 3]).unwrap();
    let e = zd(&[2, 0]);
    let c = Tensor::concat(&[&a, &e, &a], 1).unwrap();
    assert_eq!(c.shape(), &[2, 6]);
    assert_eq!(Tensor::concat(&[&e, &e], 1).unwrap().shape(), &[2, 0]);
    let parts = c.split_sizes(1, &[3, 0, 3]).unwrap();
    assert_eq!(parts[1].shape(), &[2, 0]);
    assert_eq!(Tensor::stack(&[&e, &e, &e], 0).unwrap().shape(), &[3, 2, 0]);
}

#[test]
fn empty_creation() {
    assert_eq!(Tensor::arange(1.0f32, 0.0, 1.0).unwrap().shape(), &[0]);
    assert_eq!(Tensor::arange(0.0f32, 0.0, 1.0).unwrap().shape(), &[0]);
    assert_eq!(Tensor::<f32>::linspace(0.0, 1.0, 0).unwrap().shape(), &[0]);
    assert_eq!(Tensor::<f32>::eye(0).unwrap().shape(), &[0, 0]);
    assert_eq!(
        Tensor::<f32>::randn_seeded(&[0, 4], 1).unwrap().shape(),
        &[0, 4]
    );
    assert!(Tensor::<f32>::from_vec(vec![], &[3, 0]).unwrap().is_empty());
}

/// Regressions: reductions over an empty axis give the identity (sum 0,
/// mean NaN, unbiased variance NaN) instead of panicking.
#[test]
fn reductions_over_empty_axes() {
    let e = Tensor::<f64>::zeros(&[0, 3]).unwrap();
    assert_eq!(e.sum_axes(&[0], false).unwrap().to_vec(), vec![0.0; 3]);
    assert!(e
        .mean_axes(&[0], false)
        .unwrap()
        .to_vec()
        .iter()
        .all(|v| v.is_nan()));
    assert!(e
        .var_axes(&[0], true, false)
        .unwrap()
        .to_vec()
        .iter()
        .all(|v| v.is_nan()));
    assert_eq!(e.sum_all(), 0.0);
    assert!(e.mean_all().is_nan());
    assert_eq!(e.sum_to_shape(&[3]).unwrap().to_vec(), vec![0.0; 3]);
}

/// Regressions: pooling a zero-height input is an error; flatten of a scalar
/// checks its axes.
#[test]
fn pooling_empty_planes_and_scalar_flatten() {
    let x = Tensor::<f32>::zeros(&[1, 1, 0, 4]).unwrap();
    let e = x
        .max_pool2d(Pool2dParams::new(2).with_padding(1))
        .unwrap_err();
    assert!(
        e.to_string().contains("max_pool2d") && e.to_string().contains("[1, 1, 0, 4]"),
        "{e}"
    );
    assert!(x.avg_pool2d(Pool2dParams::new(2), true).is_err());
    assert!(Tensor::scalar(1.0f32).flatten(5, 7).is_err());
    assert_eq!(Tensor::scalar(1.0f32).flatten(0, -1).unwrap().shape(), &[1]);
}

/// conv1d errors name conv1d and the 3-D shapes.
#[test]
fn conv1d_errors_name_conv1d() {
    let x = Tensor::<f32>::zeros(&[1, 4, 5]).unwrap();
    let w = Tensor::<f32>::zeros(&[2, 3, 3]).unwrap();
    let e = x.conv1d(&w, None, Conv1dParams::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("conv1d: [1, 4, 5] × [2, 3, 3]"),
        "{e}"
    );
}

// --- Found by the bad-input sweep (`bad_inputs.rs`) --------------------------

#[test]
fn allocation_refused_is_too_large_not_an_abort() {
    // 2^47 f32 elements are 512 TiB: more than any address space, so the
    // allocator refuses them even where memory is overcommitted.
    let e = fails(Tensor::<f32>::zeros(&[1 << 47]));
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    check(&e, "full", &["[140737488355328]"]);
    check(
        &fails(Tensor::<f32>::randn_seeded(&[1 << 46, 2], 0)),
        "randn",
        &[],
    );
    check(&fails(Tensor::<f32>::eye(1 << 24)), "eye", &[]);
    check(
        &fails(Tensor::<f32>::linspace(0.0, 1.0, 1 << 47)),
        "linspace",
        &[],
    );
    check(
        &fails(Tensor::<f32>::scalar(1.0).broadcast_to(&[1 << 47])),
        "broadcast_to",
        &["more elements than fit in memory"],
    );
    check(
        &fails(z(&[1]).pad(&[(1 << 47, 0)], 0.0)),
        "pad",
        &["more elements than fit in memory"],
    );
}

#[test]
fn slice_with_a_step_past_the_range_picks_start() {
    let t = Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[2, 3]).unwrap();
    for step in [3, usize::MAX / 2, usize::MAX] {
        let s = t.slice(1, 1, 3, step).unwrap();
        assert_eq!(s.shape(), &[2, 1]);
        assert_eq!(s.to_vec(), vec![1.0, 4.0]);
    }
    assert_eq!(t.slice(0, 1, 1, usize::MAX).unwrap().shape(), &[0, 3]);
}

#[test]
fn split_sizes_whose_sum_overflows() {
    let e = fails(z(&[3]).split_sizes(0, &[1, usize::MAX]));
    check(&e, "split", &["more than usize::MAX", "extent 3"]);
}

#[test]
fn pooling_padding_or_shape_near_usize_max() {
    let p = Pool2dParams::new(2).with_padding(usize::MAX);
    check(
        &fails(z(&[1, 1, 4, 4]).max_pool2d(p)),
        "max_pool2d",
        &["padding"],
    );
    let p = Pool2dParams {
        kernel: [usize::MAX, 2],
        stride: [1, 1],
        padding: [usize::MAX / 2, 0],
    };
    check(
        &fails(z(&[1, 1, 4, 4]).avg_pool2d(p, true)),
        "avg_pool2d",
        &["padded extent 4", "overflows"],
    );
    let g = z(&[1, 1, 2, 2]);
    let e = fails(g.avg_pool2d_backward(
        &[1, 1, usize::MAX, 4],
        Pool2dParams::new(2).with_padding(1),
        true,
    ));
    check(
        &e,
        "avg_pool2d_backward",
        &["18446744073709551615", "overflows"],
    );
    let idx = Tensor::from_vec(vec![0usize; 4], &[1, 1, 2, 2]).unwrap();
    check(
        &fails(g.max_pool2d_backward(&idx, &[1, 1, usize::MAX, usize::MAX])),
        "max_pool2d_backward",
        &[],
    );
}
