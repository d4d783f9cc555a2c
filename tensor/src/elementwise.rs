//! Element-wise operations with NumPy broadcasting, unary maps, scalar
//! variants, comparisons producing boolean masks, and `where`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::element::{c, Element, Scalar};
use crate::error::{Error, Result};
use crate::parallel::{map_slice, CHUNK, PARALLEL_THRESHOLD};
use crate::shape::{broadcast_shapes, broadcast_strides};
use crate::simd_math::{self, Func};
use crate::Tensor;

/// Merges adjacent axes that both operands traverse the same way, so the
/// innermost loop is as long as possible. Returns (shape, strides_a, strides_b).
fn coalesce(shape: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut dims: Vec<(usize, usize, usize)> = Vec::with_capacity(shape.len());
    for i in 0..shape.len() {
        if shape[i] == 1 {
            continue; // size-1 axes do not move any pointer
        }
        let cur = (shape[i], sa[i], sb[i]);
        if let Some(last) = dims.last_mut() {
            // Axis `i` continues `last` if stepping over it is the same as one
            // step of `last`, for both operands.
            if last.1 == cur.1 * cur.0 && last.2 == cur.2 * cur.0 {
                *last = (last.0 * cur.0, cur.1, cur.2);
                continue;
            }
        }
        dims.push(cur);
    }
    if dims.is_empty() {
        dims.push((1, 0, 0));
    }
    (
        dims.iter().map(|d| d.0).collect(),
        dims.iter().map(|d| d.1).collect(),
        dims.iter().map(|d| d.2).collect(),
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn inner_loop<A: Copy, B: Copy, C>(
    out: &mut [MaybeUninit<C>],
    a: &[A],
    oa: usize,
    ia: usize,
    b: &[B],
    ob: usize,
    ib: usize,
    f: &impl Fn(A, B) -> C,
) {
    let n = out.len();
    // Separate loops for each stride pattern so that LLVM vectorises them.
    match (ia, ib) {
        (1, 1) => {
            let (a, b) = (&a[oa..oa + n], &b[ob..ob + n]);
            for i in 0..n {
                out[i] = MaybeUninit::new(f(a[i], b[i]));
            }
        }
        (1, 0) => {
            let (a, bv) = (&a[oa..oa + n], b[ob]);
            for i in 0..n {
                out[i] = MaybeUninit::new(f(a[i], bv));
            }
        }
        (0, 1) => {
            let (av, b) = (a[oa], &b[ob..ob + n]);
            for i in 0..n {
                out[i] = MaybeUninit::new(f(av, b[i]));
            }
        }
        _ => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = MaybeUninit::new(f(a[oa + i * ia], b[ob + i * ib]));
            }
        }
    }
}

impl<T: Scalar> Tensor<T> {
    /// Combines `self` and `other` element by element after broadcasting them
    /// to a common shape (NumPy's rule). `op` names the operation in errors.
    pub fn zip_with<U: Scalar, V: Scalar>(
        &self,
        other: &Tensor<U>,
        op: &'static str,
        f: impl Fn(T, U) -> V + Sync + Send,
    ) -> Result<Tensor<V>> {
        if self.shape() == other.shape() {
            let (a, b) = (self.as_slice(), other.as_slice());
            let n = a.len();
            let mut out = crate::buffers::uninit(n);
            let spare = &mut out.spare_capacity_mut()[..n];
            if n >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
                spare.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
                    let s = ci * CHUNK;
                    inner_loop(o, a, s, 1, b, s, 1, &f);
                });
            } else {
                inner_loop(spare, a, 0, 1, b, 0, 1, &f);
            }
            // SAFETY: inner_loop wrote all n values.
            unsafe { out.set_len(n) };
            return Ok(Tensor::from_parts(out, self.shape().to_vec()));
        }
        let out_shape = broadcast_shapes(op, self.shape(), other.shape())?;
        let n = crate::shape::checked_numel(op, &out_shape)?;
        let sa = broadcast_strides(self.shape(), &out_shape);
        let sb = broadcast_strides(other.shape(), &out_shape);
        let (shape, sa, sb) = coalesce(&out_shape, &sa, &sb);
        if n == 0 {
            return Ok(Tensor::from_parts(Vec::new(), out_shape));
        }
        let mut out = crate::buffers::uninit(n);
        let spare = &mut out.spare_capacity_mut()[..n];
        let rank = shape.len();
        let inner = shape[rank - 1];
        let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
        let (a, b) = (self.as_slice(), other.as_slice());
        // Offsets of the first element of outer row `r` in each operand.
        let offsets = |mut r: usize| {
            let (mut oa, mut ob) = (0, 0);
            for d in (0..rank - 1).rev() {
                let i = r % shape[d];
                r /= shape[d];
                oa += i * sa[d];
                ob += i * sb[d];
            }
            (oa, ob)
        };
        let rows_per_chunk = (CHUNK / inner).max(1);
        let run = |ci: usize, o: &mut [MaybeUninit<V>]| {
            for (j, row) in o.chunks_mut(inner).enumerate() {
                let (oa, ob) = offsets(ci * rows_per_chunk + j);
                inner_loop(row, a, oa, ia, b, ob, ib, &f);
            }
        };
        if n >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
            spare
                .par_chunks_mut(rows_per_chunk * inner)
                .enumerate()
                .for_each(|(ci, o)| run(ci, o));
        } else {
            spare
                .chunks_mut(rows_per_chunk * inner)
                .enumerate()
                .for_each(|(ci, o)| run(ci, o));
        }
        // SAFETY: the chunks cover all n values (whole rows of `inner`), and
        // inner_loop wrote each.
        unsafe { out.set_len(n) };
        Ok(Tensor::from_parts(out, out_shape))
    }

    /// Picks from `on_true` where `mask` is true and from `on_false`
    /// elsewhere; all three broadcast together (`torch.where`).
    pub fn where_cond(mask: &Tensor<bool>, on_true: &Self, on_false: &Self) -> Result<Self> {
        let shape = broadcast_shapes("where", on_true.shape(), on_false.shape())?;
        let shape = broadcast_shapes("where", mask.shape(), &shape)?;
        let m = mask.broadcast_to(&shape)?;
        let t = on_true.broadcast_to(&shape)?;
        let f = on_false.broadcast_to(&shape)?;
        let data = m
            .as_slice()
            .iter()
            .zip(t.as_slice().iter().zip(f.as_slice()))
            .map(|(&m, (&t, &f))| if m { t } else { f })
            .collect();
        Ok(Tensor::from_parts(data, shape))
    }

    /// Replaces elements where `mask` (broadcast to `self`'s shape) is true.
    pub fn masked_fill(&self, mask: &Tensor<bool>, value: T) -> Result<Self> {
        crate::shape::check_broadcast_to("masked_fill", mask.shape(), self.shape())?;
        self.zip_with(mask, "masked_fill", |x, m| if m { value } else { x })
    }
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => |$a:ident, $b:ident| $body:expr;)*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self, other: &Self) -> Result<Self> {
                    self.zip_with(other, stringify!($name), |$a: T, $b: T| $body)
                }
            )*
        }
    };
}

binary_ops! {
    /// `self + other`, broadcasting.
    add => |a, b| a + b;
    /// `self - other`, broadcasting.
    sub => |a, b| a - b;
    /// `self * other` element-wise, broadcasting.
    mul => |a, b| a * b;
    /// `self / other` element-wise, broadcasting.
    div => |a, b| a / b;
    /// Element-wise maximum, broadcasting; NaN propagates (`torch.maximum`).
    maximum => |a, b| if a >= b || a.is_nan() { a } else { b };
    /// Element-wise minimum, broadcasting; NaN propagates (`torch.minimum`).
    minimum => |a, b| if a <= b || a.is_nan() { a } else { b };
    /// `self ^ other` element-wise, broadcasting.
    pow => |a, b| a.powf(b);
}

macro_rules! compare_ops {
    ($($(#[$doc:meta])* $name:ident, $sname:ident => $op:tt;)*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self, other: &Self) -> Result<Tensor<bool>> {
                    self.zip_with(other, stringify!($name), |a: T, b: T| a $op b)
                }
                #[doc = concat!("Compares every element with a scalar (`", stringify!($op), "`).")]
                pub fn $sname(&self, value: T) -> Tensor<bool> {
                    self.map(move |a| a $op value)
                }
            )*
        }
    };
}

compare_ops! {
    /// Mask of `self == other`, broadcasting.
    eq, eq_scalar => ==;
    /// Mask of `self != other`, broadcasting.
    ne, ne_scalar => !=;
    /// Mask of `self < other`, broadcasting.
    lt, lt_scalar => <;
    /// Mask of `self <= other`, broadcasting.
    le, le_scalar => <=;
    /// Mask of `self > other`, broadcasting.
    gt, gt_scalar => >;
    /// Mask of `self >= other`, broadcasting.
    ge, ge_scalar => >=;
}

macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => |$x:ident| $body:expr;)*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Self {
                    self.map(|$x: T| $body)
                }
            )*
        }
    };
}

/// Logistic function, computed without overflow for any input.
#[inline(always)]
pub fn sigmoid_scalar<T: Element>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// GELU with the exact Gaussian CDF: `x·Φ(x) = x/2·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_scalar<T: Element>(x: T) -> T {
    c::<T>(0.5) * x * (T::one() + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

/// GELU's tanh approximation (Hendrycks & Gimpel 2016):
/// `x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
#[inline(always)]
pub fn gelu_tanh_scalar<T: Element>(x: T) -> T {
    let k: T = c(0.797_884_560_802_865_4); // √(2/π)
    c::<T>(0.5) * x * (T::one() + (k * (x + c::<T>(0.044715) * x * x * x)).tanh())
}

unary_ops! {
    /// `-x`.
    neg => |x| -x;
    /// `|x|`.
    abs => |x| x.abs();
    /// Natural logarithm.
    ln => |x| x.ln();
    /// Square root.
    sqrt => |x| x.sqrt();
    /// `1/√x`.
    rsqrt => |x| x.sqrt().recip();
    /// `1/x`.
    recip => |x| x.recip();
    /// `x²`.
    square => |x| x * x;
    /// `max(x, 0)`; NaN propagates.
    relu => |x| if x < T::zero() { T::zero() } else { x };
    /// GELU, exact form `x·Φ(x)`.
    gelu => |x| gelu_scalar(x);
    /// GELU, tanh approximation.
    gelu_tanh => |x| gelu_tanh_scalar(x);
    /// SiLU / swish `x·σ(x)`.
    silu => |x| x * sigmoid_scalar(x);
    /// Sine.
    sin => |x| x.sin();
    /// Cosine.
    cos => |x| x.cos();
    /// Sign: −1, 0 or 1 (NaN stays NaN).
    sign => |x| if x > T::zero() { T::one() } else if x < T::zero() { -T::one() } else { x };
    /// Rounds half to even (as `torch.round`).
    round_half_even => |x| {
        let r = x.round();
        if (x - x.trunc()).abs() == c(0.5) { (x / c(2.0)).round() * c(2.0) } else { r }
    };
    /// Largest integer ≤ x.
    floor => |x| x.floor();
    /// Smallest integer ≥ x.
    ceil => |x| x.ceil();
}

impl<T: Element> Tensor<T> {
    /// `eˣ` (vectorised for `f32`, within 1.5 ulp of the exact value).
    pub fn exp(&self) -> Self {
        Tensor::from_parts(
            simd_math::map(Func::Exp, self.as_slice()),
            self.shape().to_vec(),
        )
    }

    /// Hyperbolic tangent (vectorised for `f32`, within 1.5 ulp).
    pub fn tanh(&self) -> Self {
        Tensor::from_parts(
            simd_math::map(Func::Tanh, self.as_slice()),
            self.shape().to_vec(),
        )
    }

    /// Logistic sigmoid `1/(1+e⁻ˣ)`, stable for large `|x|` (vectorised for
    /// `f32`, within 2.5 ulp).
    pub fn sigmoid(&self) -> Self {
        Tensor::from_parts(
            simd_math::map(Func::Sigmoid, self.as_slice()),
            self.shape().to_vec(),
        )
    }

    /// `x + value` for every element.
    pub fn add_scalar(&self, value: T) -> Self {
        self.map(move |x| x + value)
    }

    /// `x - value` for every element.
    pub fn sub_scalar(&self, value: T) -> Self {
        self.map(move |x| x - value)
    }

    /// `x · value` for every element.
    pub fn mul_scalar(&self, value: T) -> Self {
        self.map(move |x| x * value)
    }

    /// `x / value` for every element.
    pub fn div_scalar(&self, value: T) -> Self {
        self.map(move |x| x / value)
    }

    /// `xᵖ` for every element.
    pub fn powf(&self, p: T) -> Self {
        if p == c(2.0) {
            return self.square();
        }
        self.map(move |x| x.powf(p))
    }

    /// `x` if `x > 0`, else `slope·x` (`torch.nn.functional.leaky_relu`).
    pub fn leaky_relu(&self, slope: T) -> Self {
        self.map(move |x| if x < T::zero() { slope * x } else { x })
    }

    /// Limits every element to `[min, max]`; either bound may be absent.
    /// Errors if `min > max` or a bound is NaN.
    pub fn clamp(&self, min: Option<T>, max: Option<T>) -> Result<Self> {
        if min.is_some_and(|m| m.is_nan()) || max.is_some_and(|m| m.is_nan()) {
            return Err(Error::invalid("clamp", "bounds must not be NaN"));
        }
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                return Err(Error::invalid(
                    "clamp",
                    format!("min {lo} is greater than max {hi}"),
                ));
            }
        }
        let lo = min.unwrap_or_else(T::neg_infinity);
        let hi = max.unwrap_or_else(T::infinity);
        Ok(self.map(move |x| {
            if x < lo {
                lo
            } else if x > hi {
                hi
            } else {
                x
            }
        }))
    }

    /// Element-wise `f`, in parallel for large tensors (alias of [`Tensor::map`]
    /// kept for symmetry with [`Tensor::zip_with`]).
    pub fn apply(&self, f: impl Fn(T) -> T + Sync + Send) -> Self {
        Tensor::from_parts(map_slice(self.as_slice(), f), self.shape().to_vec())
    }
}

impl Tensor<bool> {
    /// Logical not.
    pub fn not(&self) -> Self {
        self.map(|x| !x)
    }

    /// Logical and, broadcasting.
    pub fn and(&self, other: &Self) -> Result<Self> {
        self.zip_with(other, "and", |a, b| a && b)
    }

    /// Logical or, broadcasting.
    pub fn or(&self, other: &Self) -> Result<Self> {
        self.zip_with(other, "or", |a, b| a || b)
    }

    /// The mask as 0/1 floats.
    pub fn to_float<T: Element>(&self) -> Tensor<T> {
        self.map(|m| if m { T::one() } else { T::zero() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32], shape: &[usize]) -> Tensor<f32> {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn broadcast_add() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let b = t(&[10., 20., 30.], &[3]);
        assert_eq!(
            a.add(&b).unwrap().to_vec(),
            vec![11., 22., 33., 14., 25., 36.]
        );
        let col = t(&[100., 200.], &[2, 1]);
        assert_eq!(
            a.add(&col).unwrap().to_vec(),
            vec![101., 102., 103., 204., 205., 206.]
        );
        let e = a.add(&t(&[1., 2.], &[2])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add: [2, 3] × [2]: cannot broadcast: axis -1 has sizes 3 and 2"
        );
    }

    #[test]
    fn empty_broadcast() {
        let a = Tensor::<f32>::zeros(&[0, 3]).unwrap();
        let b = t(&[1., 2., 3.], &[3]);
        assert_eq!(a.add(&b).unwrap().shape(), &[0, 3]);
    }

    #[test]
    fn unary_values() {
        let x = t(&[-1e4, -1.0, 0.0, 1.0, 1e4], &[5]);
        let s = x.sigmoid().to_vec();
        assert_eq!(s[0], 0.0);
        assert_eq!(s[2], 0.5);
        assert_eq!(s[4], 1.0);
        assert_eq!(x.relu().to_vec(), vec![0., 0., 0., 1., 1e4]);
        assert!(t(&[f32::NAN], &[1]).relu().to_vec()[0].is_nan());
        // GELU(1) = Φ(1) = 0.8413447460685429.
        assert!(
            (Tensor::scalar(1.0f64).gelu().item().unwrap() - 0.841_344_746_068_542_9).abs() < 1e-15
        );
        assert_eq!(
            t(&[0.5, 1.5, 2.5, -0.5, -2.5, 2.4], &[6])
                .round_half_even()
                .to_vec(),
            vec![0., 2., 2., -0., -2., 2.]
        );
    }

    #[test]
    fn compare_and_where() {
        let a = t(&[1., 5., 3.], &[3]);
        let b = t(&[2., 2., 3.], &[3]);
        let m = a.gt(&b).unwrap();
        assert_eq!(m.to_vec(), vec![false, true, false]);
        let w = Tensor::where_cond(&m, &a, &t(&[0.], &[1])).unwrap();
        assert_eq!(w.to_vec(), vec![0., 5., 0.]);
        assert_eq!(a.masked_fill(&m, -1.0).unwrap().to_vec(), vec![1., -1., 3.]);
        assert!(a
            .masked_fill(&Tensor::from_vec(vec![true; 6], &[2, 3]).unwrap(), 0.0)
            .is_err());
    }

    #[test]
    fn clamp_checks_bounds() {
        let a = t(&[-2., 0., 2.], &[3]);
        assert_eq!(
            a.clamp(Some(-1.), Some(1.)).unwrap().to_vec(),
            vec![-1., 0., 1.]
        );
        assert_eq!(a.clamp(None, Some(1.)).unwrap().to_vec(), vec![-2., 0., 1.]);
        assert!(a.clamp(Some(1.), Some(-1.)).is_err());
        assert!(a.clamp(Some(f32::NAN), None).is_err());
    }
}
