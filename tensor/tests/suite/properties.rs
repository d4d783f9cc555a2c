//! Property tests of the tensor kernels.
//!
//! Every kernel is checked against a naive reference written here from the
//! definition (NumPy's broadcasting rule, PyTorch's formulas for convolution,
//! pooling and reductions), plus algebraic laws, round trips, adjoint
//! identities and independence from the thread count. Values are `f64` so
//! that tolerances can be tight; tolerances are relative to the sum of the
//! absolute values of the terms, which bounds the rounding error.

use anneal_tensor::{Conv1dParams, Conv2dParams, Error, Pool2dParams, Tensor};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

type TestResult = Result<(), TestCaseError>;
type BinOp = fn(&Tensor<f64>, &Tensor<f64>) -> anneal_tensor::Result<Tensor<f64>>;
/// An op's name, the op, and the same op on one pair of elements.
type NamedBinOp = (&'static str, BinOp, fn(f64, f64) -> f64);
/// Batch shapes of both operands and `(m, k, n)`.
type MatmulCase = (&'static [usize], &'static [usize], (usize, usize, usize));

/// 64 cases per property, unless `PROPTEST_CASES` asks for another number.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        default.cases
    } else {
        64
    };
    ProptestConfig { cases, ..default }
}

// ---------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------

/// splitmix64: a small deterministic generator for tensor contents.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `n` values uniform in `[-1, 1)`.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut g = Gen(seed);
    (0..n).map(|_| g.unit()).collect()
}

/// `n` small integers in `-r..=r` (plenty of ties).
fn ints(n: usize, seed: u64, r: usize) -> Vec<f64> {
    let mut g = Gen(seed);
    (0..n)
        .map(|_| g.below(2 * r + 1) as f64 - r as f64)
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::from_vec(values(numel(shape), seed), shape).unwrap()
}

fn int_tensor(shape: &[usize], seed: u64, r: usize) -> Tensor<f64> {
    Tensor::from_vec(ints(numel(shape), seed, r), shape).unwrap()
}

/// Small integers with roughly one element in eight replaced by NaN.
fn tensor_with_nans(shape: &[usize], seed: u64) -> Tensor<f64> {
    let mut g = Gen(seed ^ 0x5555);
    let v = ints(numel(shape), seed, 3)
        .into_iter()
        .map(|x| if g.below(8) == 0 { f64::NAN } else { x })
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

// ---------------------------------------------------------------------------
// Index arithmetic
// ---------------------------------------------------------------------------

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major flat position of a multi-index.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Calls `f` with every multi-index of `shape`, in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The flat position in an operand of `shape` that broadcasting reads for the
/// output multi-index `idx` (trailing axes aligned, extent-1 axes repeated).
fn project(idx: &[usize], shape: &[usize]) -> usize {
    let off = idx.len() - shape.len();
    shape.iter().enumerate().fold(0, |acc, (k, &d)| {
        acc * d + if d == 1 { 0 } else { idx[off + k] }
    })
}

/// NumPy's broadcasting rule, written out independently of the crate.
fn numpy_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// A shape that broadcasts to `full`: drop `drop` leading axes and replace
/// the axes flagged in `ones` by 1.
fn derive(full: &[usize], drop: usize, ones: &[bool]) -> Vec<usize> {
    full[drop..]
        .iter()
        .zip(&ones[drop..])
        .map(|(&d, &one)| if one { 1 } else { d })
        .collect()
}

fn shape_strategy(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    vec(0..=max_dim, 0..=max_rank)
}

/// Shapes that broadcast together: each derived from one full shape.
fn broadcast_shapes(count: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    shape_strategy(4, 4)
        .prop_flat_map(move |full| {
            let r = full.len();
            (
                Just(full),
                vec((0..=r, vec(prop::bool::weighted(0.3), r)), count),
            )
        })
        .prop_map(|(full, parts)| {
            parts
                .iter()
                .map(|(drop, ones)| derive(&full, *drop, ones))
                .collect()
        })
}

/// Same as [`broadcast_shapes`] for batch axes (rank ≤ 3, extents ≤ 3).
fn batch_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape_strategy(3, 3)
        .prop_flat_map(|full| {
            let r = full.len();
            (
                Just(full),
                0..=r,
                0..=r,
                vec(prop::bool::weighted(0.3), r),
                vec(prop::bool::weighted(0.3), r),
            )
        })
        .prop_map(|(full, da, db, oa, ob)| (derive(&full, da, &oa), derive(&full, db, &ob)))
}

fn pair(r: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = [usize; 2]> {
    (r.clone(), r).prop_map(|(a, b)| [a, b])
}

/// An axis in `0..rank` written as given or counted from the back.
fn signed_axis(axis: usize, rank: usize, negative: bool) -> isize {
    if negative {
        axis as isize - rank as isize
    } else {
        axis as isize
    }
}

// ---------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------

/// Equal, or both NaN.
fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn check_same(what: &str, got: &[f64], want: &[f64]) -> TestResult {
    prop_assert_eq!(got.len(), want.len(), "{}: element count", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            same(g, w),
            "{}: element {} is {}, expected {}",
            what,
            i,
            g,
            w
        );
    }
    Ok(())
}

/// `|got − want| ≤ rel · scale` element by element (NaN matches NaN).
fn check_close(what: &str, got: &[f64], want: &[f64], scale: &[f64], rel: f64) -> TestResult {
    prop_assert_eq!(got.len(), want.len(), "{}: element count", what);
    for i in 0..got.len() {
        let tol = rel * scale[i];
        prop_assert!(
            same(got[i], want[i]) || (got[i] - want[i]).abs() <= tol,
            "{}: element {} is {}, expected {} (tolerance {})",
            what,
            i,
            got[i],
            want[i],
            tol
        );
    }
    Ok(())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn abs_dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum()
}

/// `⟨a, b⟩ = ⟨c, d⟩` up to `rel` times the larger sum of absolute terms.
fn check_adjoint(what: &str, lhs: (&[f64], &[f64]), rhs: (&[f64], &[f64]), rel: f64) -> TestResult {
    let (l, r) = (dot(lhs.0, lhs.1), dot(rhs.0, rhs.1));
    let scale = abs_dot(lhs.0, lhs.1).max(abs_dot(rhs.0, rhs.1));
    prop_assert!(
        (l - r).abs() <= rel * scale,
        "{}: ⟨·,·⟩ {} vs {} (scale {})",
        what,
        l,
        r,
        scale
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Naive references
// ---------------------------------------------------------------------------

/// `C = A·B` for row-major `A` (m×k) and `B` (k×n), with the sum of
/// `|a_ip·b_pj|` of every output as the error scale.
fn naive_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut c = vec![0.0; m * n];
    let mut s = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let t = a[i * k + p] * b[p * n + j];
                c[i * n + j] += t;
                s[i * n + j] += t.abs();
            }
        }
    }
    (c, s)
}

/// The explicit transpose of a row-major r×c matrix.
fn transposed(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0.0; a.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = a[i * c + j];
        }
    }
    t
}

/// Output extent of a convolution or pooling axis, or `None` if the
/// (dilated) window does not fit into the padded input.
fn out_extent(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d * (k - 1) + 1;
    let padded = len + 2 * p;
    (padded >= span).then(|| (padded - span) / s + 1)
}

#[derive(Clone, Copy, Debug)]
struct ConvGeo {
    n: usize,
    c: usize,
    hw: [usize; 2],
    o: usize,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    d: [usize; 2],
    groups: usize,
    out: [usize; 2],
}

/// PyTorch's conv2d: `out[n,o,y,x] = bias[o] + Σ_{c,i,j} in[n, g·Cg + c,
/// y·s − p + i·d, x·s − p + j·d] · w[o,c,i,j]` with `g = o / (O/groups)` and
/// zeros outside the input. Returns the values and the absolute-term scale.
fn naive_conv2d(x: &[f64], w: &[f64], bias: Option<&[f64]>, g: &ConvGeo) -> (Vec<f64>, Vec<f64>) {
    let (cg, og) = (g.c / g.groups, g.o / g.groups);
    let [h, wd] = g.hw;
    let [kh, kw] = g.k;
    let [oh, ow] = g.out;
    let mut out = vec![0.0; g.n * g.o * oh * ow];
    let mut scale = vec![0.0; out.len()];
    for n in 0..g.n {
        for o in 0..g.o {
            let grp = o / og;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[o]);
                    let mut sc = acc.abs();
                    for c in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let ih = (y * g.s[0] + i * g.d[0]) as isize - g.p[0] as isize;
                                let iw = (xo * g.s[1] + j * g.d[1]) as isize - g.p[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let xi =
                                    ((n * g.c + grp * cg + c) * h + ih as usize) * wd + iw as usize;
                                let t = x[xi] * w[((o * cg + c) * kh + i) * kw + j];
                                acc += t;
                                sc += t.abs();
                            }
                        }
                    }
                    let oi = ((n * g.o + o) * oh + y) * ow + xo;
                    out[oi] = acc;
                    scale[oi] = sc;
                }
            }
        }
    }
    (out, scale)
}

/// The two adjoints of [`naive_conv2d`] by scattering every term: `dx[n,
/// c, ih, iw] += w[o,c,i,j]·dy[n,o,y,x]` and `dw[o,c,i,j] += x[…]·dy[…]`,
/// with the sums of the terms' magnitudes as scales.
fn naive_conv2d_grads(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    g: &ConvGeo,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (cg, og) = (g.c / g.groups, g.o / g.groups);
    let [h, wd] = g.hw;
    let [kh, kw] = g.k;
    let [oh, ow] = g.out;
    let (mut dx, mut dxs) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut dw, mut dws) = (vec![0.0; w.len()], vec![0.0; w.len()]);
    for n in 0..g.n {
        for o in 0..g.o {
            for y in 0..oh {
                for xo in 0..ow {
                    let d = dy[((n * g.o + o) * oh + y) * ow + xo];
                    for c in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let ih = (y * g.s[0] + i * g.d[0]) as isize - g.p[0] as isize;
                                let iw = (xo * g.s[1] + j * g.d[1]) as isize - g.p[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let xi = ((n * g.c + o / og * cg + c) * h + ih as usize) * wd
                                    + iw as usize;
                                let wi = ((o * cg + c) * kh + i) * kw + j;
                                dx[xi] += w[wi] * d;
                                dxs[xi] += (w[wi] * d).abs();
                                dw[wi] += x[xi] * d;
                                dws[wi] += (x[xi] * d).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dxs, dw, dws)
}

/// PyTorch's conv1d: `out[n,o,t] = bias[o] + Σ_{c,j} in[n, g·Cg + c, t·s − p + j·d] · w[o,c,j]`.
#[allow(clippy::too_many_arguments)]
fn naive_conv1d(
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    (n, c, l): (usize, usize, usize),
    (o, k): (usize, usize),
    (s, p, d, groups): (usize, usize, usize, usize),
    lo: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (cg, og) = (c / groups, o / groups);
    let mut out = vec![0.0; n * o * lo];
    let mut scale = vec![0.0; out.len()];
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for t in 0..lo {
                let mut acc = bias.map_or(0.0, |bv| bv[oc]);
                let mut sc = acc.abs();
                for ci in 0..cg {
                    for j in 0..k {
                        let pos = (t * s + j * d) as isize - p as isize;
                        if pos < 0 || pos >= l as isize {
                            continue;
                        }
                        let v = x[(b * c + grp * cg + ci) * l + pos as usize]
                            * w[(oc * cg + ci) * k + j];
                        acc += v;
                        sc += v.abs();
                    }
                }
                out[(b * o + oc) * lo + t] = acc;
                scale[(b * o + oc) * lo + t] = sc;
            }
        }
    }
    (out, scale)
}

// ---------------------------------------------------------------------------
// Strategies for convolution and pooling geometry
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ConvCase {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    d: [usize; 2],
    hw: [usize; 2],
    bias: bool,
    seed: u64,
}

impl ConvCase {
    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.s,
            padding: self.p,
            dilation: self.d,
            groups: self.groups,
        }
    }

    /// The geometry, or `None` when the kernel does not fit.
    fn geo(&self, hw: [usize; 2]) -> Option<ConvGeo> {
        let oh = out_extent(hw[0], self.k[0], self.s[0], self.p[0], self.d[0])?;
        let ow = out_extent(hw[1], self.k[1], self.s[1], self.p[1], self.d[1])?;
        Some(ConvGeo {
            n: self.n,
            c: self.groups * self.cg,
            hw,
            o: self.groups * self.og,
            k: self.k,
            s: self.s,
            p: self.p,
            d: self.d,
            groups: self.groups,
            out: [oh, ow],
        })
    }

    /// The smallest spatial extents the kernel fits into, plus `hw − 1`.
    fn fitted_hw(&self) -> [usize; 2] {
        let f = |a: usize| {
            let span = self.d[a] * (self.k[a] - 1) + 1;
            span.saturating_sub(2 * self.p[a]).max(1) + self.hw[a] - 1
        };
        [f(0), f(1)]
    }
}

/// Convolution cases from strategies for `(n, groups, C/groups, O/groups)`
/// and for the `(kernel, stride, padding, dilation, extent)` pairs.
fn conv_cases(
    counts: impl Strategy<Value = (usize, usize, usize, usize)>,
    geometry: impl Strategy<Value = ([usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2])>,
) -> impl Strategy<Value = ConvCase> {
    (counts, geometry, (any::<bool>(), any::<u64>())).prop_map(
        |((n, groups, cg, og), (k, s, p, d, hw), (bias, seed))| ConvCase {
            n,
            groups,
            cg,
            og,
            k,
            s,
            p,
            d,
            hw,
            bias,
            seed,
        },
    )
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    conv_cases(
        (0usize..=2, 1usize..=3, 1usize..=3, 1usize..=3),
        (
            pair(1..=4),
            pair(1..=3),
            pair(0..=2),
            pair(1..=3),
            pair(1..=9),
        ),
    )
}

/// Convolutions for the f32 kernels: mostly stride 1 (the direct method),
/// up to 40 input and 40 output channels per group and 30×30 images.
fn conv_f32_case() -> impl Strategy<Value = ConvCase> {
    conv_cases(
        (1usize..=3, 1usize..=2, 1usize..=40, 1usize..=40),
        (
            pair(1..=5),
            prop_oneof![4 => Just([1, 1]), 1 => pair(1..=2)],
            pair(0..=3),
            pair(1..=2),
            pair(1..=30),
        ),
    )
}

/// The f32 convolution kernels on `case` against the f64 definition:
/// output, input gradient (scattered adjoint) and weight gradient, each
/// within 1e-5 of the sum of its terms' magnitudes.
fn check_conv2d_f32(case: &ConvCase) -> TestResult {
    let hw = case.fitted_hw();
    let g = case.geo(hw).expect("fitted extents");
    let x = tensor(&[g.n, g.c, hw[0], hw[1]], case.seed);
    let w = tensor(&[g.o, case.cg, g.k[0], g.k[1]], case.seed ^ 1);
    let b = tensor(&[g.o], case.seed ^ 2);
    let dy = tensor(&[g.n, g.o, g.out[0], g.out[1]], case.seed ^ 3);
    let bias = case.bias.then_some(&b);
    let p = case.params();
    let (x32, w32, b32, dy32) = (
        x.cast::<f32>(),
        w.cast::<f32>(),
        b.cast::<f32>(),
        dy.cast::<f32>(),
    );
    let widen = |t: Tensor<f32>| t.cast::<f64>().as_slice().to_vec();
    let (want, scale) = naive_conv2d(x.as_slice(), w.as_slice(), bias.map(|b| b.as_slice()), &g);
    let got = widen(x32.conv2d(&w32, case.bias.then_some(&b32), p)?);
    check_close("conv2d f32", &got, &want, &scale, 1e-5)?;
    let (dx, dx_scale, dw, dw_scale) =
        naive_conv2d_grads(x.as_slice(), w.as_slice(), dy.as_slice(), &g);
    let got = widen(dy32.conv2d_input_grad(&w32, x.shape(), p)?);
    check_close("conv2d_input_grad f32", &got, &dx, &dx_scale, 1e-5)?;
    let got = widen(dy32.conv2d_weight_grad(&x32, w.shape(), p)?);
    check_close("conv2d_weight_grad f32", &got, &dw, &dw_scale, 1e-5)?;
    Ok(())
}

/// f32 cases whose output rows are as wide as their input rows (3 or 5
/// wide, padding `d·(k − 1)/2`, stride 1): the direct method's masked
/// layout, which the general strategy reaches only now and then.
fn conv_same_width_case() -> impl Strategy<Value = ConvCase> {
    (
        conv_f32_case(),
        prop_oneof![Just(3usize), Just(5)],
        1usize..=2,
    )
        .prop_map(|(mut c, k, d)| {
            c.s = [1, 1];
            c.k[1] = k;
            c.d[1] = d;
            c.p[1] = d * (k - 1) / 2;
            c
        })
}

#[derive(Clone, Debug)]
struct PoolCase {
    n: usize,
    c: usize,
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    ties: bool,
    seed: u64,
}

impl PoolCase {
    fn params(&self) -> Pool2dParams {
        Pool2dParams {
            kernel: self.k,
            stride: self.s,
            padding: self.p,
        }
    }

    fn input(&self) -> Tensor<f64> {
        let shape = [self.n, self.c, self.hw[0], self.hw[1]];
        if self.ties {
            int_tensor(&shape, self.seed, 2)
        } else {
            tensor(&shape, self.seed)
        }
    }

    fn out(&self) -> Option<[usize; 2]> {
        Some([
            out_extent(self.hw[0], self.k[0], self.s[0], self.p[0], 1)?,
            out_extent(self.hw[1], self.k[1], self.s[1], self.p[1], 1)?,
        ])
    }

    /// The window of output `(y, x)`: rows `[h0, h0 + kh)`, columns `[w0, w0 + kw)`.
    fn window(&self, y: usize, x: usize) -> (isize, isize) {
        (
            (y * self.s[0]) as isize - self.p[0] as isize,
            (x * self.s[1]) as isize - self.p[1] as isize,
        )
    }
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        (0usize..=2, 1usize..=3, pair(1..=9)),
        (pair(1..=4), pair(1..=3), pair(0..=2)),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(|((n, c, hw), (k, s, p), (ties, seed))| PoolCase {
            n,
            c,
            hw,
            k,
            s,
            // PyTorch requires padding ≤ kernel / 2.
            p: [p[0].min(k[0] / 2), p[1].min(k[1] / 2)],
            ties,
            seed,
        })
}

/// A shape, a list of distinct axes to reduce (in random order, some written
/// negative), keepdim, and a seed.
fn reduce_case() -> impl Strategy<Value = (Vec<usize>, Vec<isize>, bool, u64)> {
    shape_strategy(4, 4)
        .prop_flat_map(|s| {
            let r = s.len();
            (
                Just(s),
                vec(any::<bool>(), r),
                vec(any::<bool>(), r),
                Just((0..r).collect::<Vec<usize>>()).prop_shuffle(),
                any::<bool>(),
                any::<u64>(),
            )
        })
        .prop_map(|(s, pick, neg, order, keepdim, seed)| {
            let r = s.len();
            let axes = order
                .into_iter()
                .filter(|&a| pick[a])
                .map(|a| signed_axis(a, r, neg[a]))
                .collect();
            (s, axes, keepdim, seed)
        })
}

/// Reduces the (normalised) `axes` of `x` with `fold` from `init`; returns the
/// values laid out in the keepdim shape.
fn naive_reduce(
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    init: impl Fn(usize) -> f64,
    mut fold: impl FnMut(f64, f64, usize) -> f64,
) -> (Vec<f64>, Vec<usize>) {
    let keep: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &e)| if axes.contains(&d) { 1 } else { e })
        .collect();
    let mut out: Vec<f64> = (0..numel(&keep)).map(init).collect();
    for_each_index(shape, |idx| {
        let o = keep.iter().enumerate().fold(0, |acc, (d, &e)| {
            acc * e + if axes.contains(&d) { 0 } else { idx[d] }
        });
        out[o] = fold(out[o], x[ravel(idx, shape)], o);
    });
    (out, keep)
}

/// The output shape of a reduction with or without keepdim.
fn reduced_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(d, &e)| match (axes.contains(&d), keepdim) {
            (false, _) => Some(e),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

fn normalise(axes: &[isize], rank: usize) -> Vec<usize> {
    axes.iter()
        .map(|&a| {
            if a < 0 {
                (a + rank as isize) as usize
            } else {
                a as usize
            }
        })
        .collect()
}

/// NaN-propagating max and min, as `torch.amax` / `torch.amin`.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

// ---------------------------------------------------------------------------
// Element-wise ops and broadcasting
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn broadcasting_matches_numpy(shapes in broadcast_shapes(2), seed in any::<u64>()) {
        let (sa, sb) = (&shapes[0], &shapes[1]);
        let a = tensor(sa, seed);
        let b = tensor(sb, seed ^ 1);
        let want_shape = numpy_broadcast(sa, sb).expect("shapes were built compatible");
        let ops: [NamedBinOp; 6] = [
            ("add", Tensor::add, |x, y| x + y),
            ("sub", Tensor::sub, |x, y| x - y),
            ("mul", Tensor::mul, |x, y| x * y),
            ("div", Tensor::div, |x, y| x / y),
            ("maximum", Tensor::maximum, f64::max),
            ("minimum", Tensor::minimum, f64::min),
        ];
        for (name, op, f) in ops {
            let got = op(&a, &b)?;
            prop_assert_eq!(got.shape(), want_shape.as_slice(), "{} shape", name);
            let mut want = Vec::with_capacity(numel(&want_shape));
            for_each_index(&want_shape, |idx| {
                want.push(f(a.as_slice()[project(idx, sa)], b.as_slice()[project(idx, sb)]));
            });
            check_same(name, got.as_slice(), &want)?;
        }
    }

    #[test]
    fn incompatible_shapes_do_not_broadcast(
        (sa, sb) in vec(2usize..=4, 1..=4)
            .prop_flat_map(|a| { let r = a.len(); (Just(a), 0..r, 0..r) })
            .prop_map(|(a, k, drop)| {
                let drop = drop.min(k);
                let mut b = a[drop..].to_vec();
                b[k - drop] += 1; // ≥ 3 and different from a's extent
                (a, b)
            }),
    ) {
        let a = Tensor::<f64>::zeros(&sa)?;
        let b = Tensor::<f64>::zeros(&sb)?;
        prop_assert!(numpy_broadcast(&sa, &sb).is_none());
        for (x, y, first, second) in [(&a, &b, &sa, &sb), (&b, &a, &sb, &sa)] {
            let e = x.add(y).unwrap_err();
            prop_assert!(matches!(e, Error::ShapeMismatch { op: "add", .. }), "{:?}", e);
            let msg = e.to_string();
            let both = format!("{first:?} × {second:?}");
            prop_assert!(msg.starts_with("add: ") && msg.contains(&both), "{}", msg);
        }
    }

    #[test]
    fn commutative_ops(shapes in broadcast_shapes(2), seed in any::<u64>()) {
        let a = tensor_with_nans(&shapes[0], seed);
        let b = tensor_with_nans(&shapes[1], seed ^ 1);
        let ops: [(&str, BinOp); 4] = [
            ("add", Tensor::add),
            ("mul", Tensor::mul),
            ("maximum", Tensor::maximum),
            ("minimum", Tensor::minimum),
        ];
        for (name, op) in ops {
            let ab = op(&a, &b)?;
            let ba = op(&b, &a)?;
            prop_assert_eq!(ab.shape(), ba.shape(), "{} shape", name);
            check_same(name, ab.as_slice(), ba.as_slice())?;
        }
    }

    #[test]
    fn associative_ops(shapes in broadcast_shapes(3), seed in any::<u64>(), ties in any::<bool>()) {
        let make = |s: &[usize], k: u64| if ties { tensor_with_nans(s, seed ^ k) } else { tensor(s, seed ^ k) };
        let (a, b, c) = (make(&shapes[0], 0), make(&shapes[1], 1), make(&shapes[2], 2));
        let left = a.add(&b)?.add(&c)?;
        let right = a.add(&b.add(&c)?)?;
        prop_assert_eq!(left.shape(), right.shape());
        let out = left.shape().to_vec();
        let mut scale = Vec::new();
        for_each_index(&out, |idx| {
            scale.push(
                a.as_slice()[project(idx, a.shape())].abs()
                    + b.as_slice()[project(idx, b.shape())].abs()
                    + c.as_slice()[project(idx, c.shape())].abs(),
            );
        });
        check_close("add", left.as_slice(), right.as_slice(), &scale, 1e-12)?;
        let left = a.maximum(&b)?.maximum(&c)?;
        let right = a.maximum(&b.maximum(&c)?)?;
        check_same("maximum", left.as_slice(), right.as_slice())?;
        let left = a.minimum(&b)?.minimum(&c)?;
        let right = a.minimum(&b.minimum(&c)?)?;
        check_same("minimum", left.as_slice(), right.as_slice())?;
    }
}

// ---------------------------------------------------------------------------
// Shape operations
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reshape_round_trip(
        (shape, shuffled) in shape_strategy(4, 4)
            .prop_flat_map(|s| (Just(s.clone()), Just(s).prop_shuffle())),
        ones in 0usize..=2,
        seed in any::<u64>(),
    ) {
        let x = tensor(&shape, seed);
        let mut target = shuffled;
        let mut g = Gen(seed);
        for _ in 0..ones {
            let at = g.below(target.len() + 1);
            target.insert(at, 1);
        }
        let r = x.reshape(&target)?;
        prop_assert_eq!(r.shape(), target.as_slice());
        prop_assert_eq!(r.as_slice(), x.as_slice());
        prop_assert!(r.reshape(&shape)? == x);
        let flat = x.reshape(&[x.numel()])?;
        prop_assert_eq!(flat.as_slice(), x.as_slice());
    }

    #[test]
    fn permute_maps_elements_and_inverts(
        (shape, perm) in shape_strategy(5, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), Just((0..r).collect::<Vec<usize>>()).prop_shuffle())
        }),
        seed in any::<u64>(),
    ) {
        let x = tensor(&shape, seed);
        let p = x.permute(&perm)?;
        let want_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        prop_assert_eq!(p.shape(), want_shape.as_slice());
        // Output index i reads input index j with j[perm[k]] = i[k].
        let mut src = vec![0usize; shape.len()];
        let mut want = Vec::with_capacity(x.numel());
        for_each_index(&want_shape, |i| {
            for (k, &a) in perm.iter().enumerate() {
                src[a] = i[k];
            }
            want.push(x.as_slice()[ravel(&src, &shape)]);
        });
        prop_assert_eq!(p.as_slice(), want.as_slice());
        let mut inverse = vec![0usize; perm.len()];
        for (k, &a) in perm.iter().enumerate() {
            inverse[a] = k;
        }
        prop_assert!(p.permute(&inverse)? == x);
    }

    #[test]
    fn transpose_twice_is_identity(
        (shape, a, b) in vec(0usize..=4, 1..=5).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, 0..r)
        }),
        (na, nb) in (any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let x = tensor(&shape, seed);
        let r = shape.len();
        let (sa, sb) = (signed_axis(a, r, na), signed_axis(b, r, nb));
        let t = x.transpose(sa, sb)?;
        let mut want = shape.clone();
        want.swap(a, b);
        prop_assert_eq!(t.shape(), want.as_slice());
        prop_assert!(t == x.transpose(sb, sa)?);
        prop_assert!(t.transpose(sa, sb)? == x);
    }
}

// ---------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------

/// Products write their outputs into uninitialised (recycled) memory with
/// beta = 0: a NaN-filled buffer of the output's size is dropped into the
/// buffer cache first, so a kernel path that read its output before
/// writing it would leave NaNs. Covers the row-vector path, the packed
/// AVX-512 path, the transposed-weight path (Linear), an empty inner
/// dimension, and f64 (matrixmultiply).
#[test]
fn products_write_every_value_of_a_recycled_output() {
    let check = |what: &str, got: &[f64], a: &Tensor<f64>, b: &Tensor<f64>, rel: f64| {
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        let (want, scale) = naive_matmul(a.as_slice(), b.as_slice(), m, k, n);
        assert_eq!(got.len(), want.len(), "{what}");
        for i in 0..got.len() {
            assert!(
                (got[i] - want[i]).abs() <= rel * scale[i] + 1e-30,
                "{what}: element {i}: {} vs {}",
                got[i],
                want[i]
            );
        }
    };
    let nan_buffer = |len: usize| drop(Tensor::<f32>::full(&[len], f32::NAN).unwrap());
    for (m, k, n) in [
        (1usize, 5usize, 600_000usize),
        (600, 20, 1000),
        (600, 0, 1000),
    ] {
        let (a, b) = (tensor(&[m, k], 1), tensor(&[k, n], 2));
        nan_buffer(m * n);
        let got = a.cast::<f32>().matmul(&b.cast::<f32>()).unwrap();
        check("f32 matmul", got.cast::<f64>().as_slice(), &a, &b, 1e-5);
    }
    // x·Wᵀ with a short x: the transposed-B kernel; with and without bias.
    let (x, w) = (tensor(&[256, 8], 3), tensor(&[2100, 8], 4));
    let wt = w.transpose(0, 1).unwrap();
    nan_buffer(256 * 2100);
    let got = x.cast::<f32>().linear(&w.cast::<f32>(), None).unwrap();
    check("f32 linear", got.cast::<f64>().as_slice(), &x, &wt, 1e-5);
    let zero_bias = Tensor::<f32>::zeros(&[2100]).unwrap();
    nan_buffer(256 * 2100);
    let got = x
        .cast::<f32>()
        .linear(&w.cast::<f32>(), Some(&zero_bias))
        .unwrap();
    check(
        "f32 linear + bias",
        got.cast::<f64>().as_slice(),
        &x,
        &wt,
        1e-5,
    );
    // f64 goes through matrixmultiply (its contract: C unread when beta = 0).
    let (a, b) = (tensor(&[300, 10], 5), tensor(&[10, 1000], 6));
    drop(Tensor::<f64>::full(&[300 * 1000], f64::NAN).unwrap());
    let got = a.matmul(&b).unwrap();
    check("f64 matmul", got.as_slice(), &a, &b, 1e-12);
}

/// Checks `lhs.matmul_t(rhs, tl, tr)` for logical batches of matrices
/// `A` (`ba ++ [m, k]`) and `B` (`bb ++ [k, n]`), stored transposed when asked.
#[allow(clippy::too_many_arguments)]
fn check_batched_matmul(
    ba: &[usize],
    bb: &[usize],
    (m, k, n): (usize, usize, usize),
    tl: bool,
    tr: bool,
    seed: u64,
    rel: f64,
) -> TestResult {
    let (na, nb) = (numel(ba), numel(bb));
    let a = values(na * m * k, seed);
    let b = values(nb * k * n, seed ^ 1);
    let stored = |v: &[f64], batches: usize, r: usize, c: usize, t: bool| -> Vec<f64> {
        if !t {
            return v.to_vec();
        }
        (0..batches)
            .flat_map(|i| transposed(&v[i * r * c..(i + 1) * r * c], r, c))
            .collect()
    };
    let shape = |batch: &[usize], r: usize, c: usize, t: bool| -> Vec<usize> {
        let mut s = batch.to_vec();
        s.extend(if t { [c, r] } else { [r, c] });
        s
    };
    let lhs = Tensor::from_vec(stored(&a, na, m, k, tl), &shape(ba, m, k, tl))?;
    let rhs = Tensor::from_vec(stored(&b, nb, k, n, tr), &shape(bb, k, n, tr))?;
    let got = lhs.matmul_t(&rhs, tl, tr)?;
    let batch = numpy_broadcast(ba, bb).expect("batch shapes broadcast");
    let mut want_shape = batch.clone();
    want_shape.extend([m, n]);
    prop_assert_eq!(got.shape(), want_shape.as_slice());
    let (mut want, mut scale) = (Vec::new(), Vec::new());
    let each = |idx: &[usize]| {
        let (ia, ib) = (project(idx, ba), project(idx, bb));
        let (c, s) = naive_matmul(
            &a[ia * m * k..(ia + 1) * m * k],
            &b[ib * k * n..(ib + 1) * k * n],
            m,
            k,
            n,
        );
        want.extend(c);
        scale.extend(s);
    };
    for_each_index(&batch, each);
    check_close("matmul", got.as_slice(), &want, &scale, rel)?;
    if !tl && !tr {
        prop_assert!(lhs.matmul(&rhs)? == got);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn matmul_2d_matches_triple_loop(
        m in 0usize..=17,
        k in 0usize..=17,
        n in 0usize..=17,
        tl in any::<bool>(),
        tr in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_batched_matmul(&[], &[], (m, k, n), tl, tr, seed, 1e-10)?;
    }

    /// The f32 GEMM kernels (AVX-512: packed panels, or `Bᵀ` broadcast
    /// from its rows when B is stored transposed and A is short) against
    /// the f64 definition, across k blocks, partial tiles and both storage
    /// orders of each operand.
    #[test]
    fn matmul_f32_matches_the_definition(
        m in 1usize..=70,
        k in 1usize..=600,
        n in 1usize..=70,
        tl in any::<bool>(),
        tr in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (a, b) = (values(m * k, seed), values(k * n, seed ^ 1));
        let lhs = if tl { Tensor::from_vec(transposed(&a, m, k), &[k, m])? } else { Tensor::from_vec(a.clone(), &[m, k])? };
        let rhs = if tr { Tensor::from_vec(transposed(&b, k, n), &[n, k])? } else { Tensor::from_vec(b.clone(), &[k, n])? };
        let got = lhs.cast::<f32>().matmul_t(&rhs.cast::<f32>(), tl, tr)?;
        prop_assert_eq!(got.shape(), &[m, n]);
        let (want, scale) = naive_matmul(&a, &b, m, k, n);
        check_close("matmul f32", got.cast::<f64>().as_slice(), &want, &scale, 1e-5)?;
    }

    #[test]
    fn matmul_batched_broadcasts_batch_axes(
        (ba, bb) in batch_pair(),
        (m, k, n) in (0usize..=6, 0usize..=6, 0usize..=6),
        tl in any::<bool>(),
        tr in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_batched_matmul(&ba, &bb, (m, k, n), tl, tr, seed, 1e-10)?;
    }

    #[test]
    fn matmul_vector_operands(
        batch in vec(1usize..=3, 0..=2),
        (m, k, n) in (0usize..=6, 0usize..=6, 0usize..=6),
        seed in any::<u64>(),
    ) {
        let nb = numel(&batch);
        let v = values(k, seed);
        let mats = values(nb * k * n.max(m), seed ^ 1);
        let with = |r: usize, c: usize| { let mut s = batch.clone(); s.extend([r, c]); s };
        // [k]·[k] is a dot product of rank 0.
        let vt = Tensor::from_vec(v.clone(), &[k])?;
        let d = vt.matmul(&vt)?;
        prop_assert_eq!(d.shape(), &[] as &[usize]);
        let (want, scale) = naive_matmul(&v, &v, 1, k, 1);
        check_close("dot", d.as_slice(), &want, &scale, 1e-10)?;
        // [k] × [.., k, n] → [.., n]: the vector is a 1×k row.
        let b = Tensor::from_vec(mats[..nb * k * n].to_vec(), &with(k, n))?;
        let got = vt.matmul(&b)?;
        let mut shape = batch.clone();
        shape.push(n);
        prop_assert_eq!(got.shape(), shape.as_slice());
        let (mut want, mut scale) = (Vec::new(), Vec::new());
        for i in 0..nb {
            let (c, s) = naive_matmul(&v, &mats[i * k * n..(i + 1) * k * n], 1, k, n);
            want.extend(c);
            scale.extend(s);
        }
        check_close("vector × matrix", got.as_slice(), &want, &scale, 1e-10)?;
        // [.., m, k] × [k] → [.., m]: the vector is a k×1 column.
        let a = Tensor::from_vec(mats[..nb * m * k].to_vec(), &with(m, k))?;
        let got = a.matmul(&vt)?;
        let mut shape = batch.clone();
        shape.push(m);
        prop_assert_eq!(got.shape(), shape.as_slice());
        let (mut want, mut scale) = (Vec::new(), Vec::new());
        for i in 0..nb {
            let (c, s) = naive_matmul(&mats[i * m * k..(i + 1) * m * k], &v, m, k, 1);
            want.extend(c);
            scale.extend(s);
        }
        check_close("matrix × vector", got.as_slice(), &want, &scale, 1e-10)?;
    }

    #[test]
    fn linear_is_matmul_with_transposed_weight_plus_bias(
        batch in vec(0usize..=3, 0..=2),
        (fin, fout) in (0usize..=9, 0usize..=9),
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut xs = batch.clone();
        xs.push(fin);
        let x = tensor(&xs, seed);
        let w = tensor(&[fout, fin], seed ^ 1);
        let b = tensor(&[fout], seed ^ 2);
        let got = x.linear(&w, with_bias.then_some(&b))?;
        let mut shape = batch.clone();
        shape.push(fout);
        prop_assert_eq!(got.shape(), shape.as_slice());
        let rows = numel(&batch);
        let wt = transposed(w.as_slice(), fout, fin);
        let (mut want, mut scale) = naive_matmul(x.as_slice(), &wt, rows, fin, fout);
        if with_bias {
            for (i, (v, s)) in want.iter_mut().zip(&mut scale).enumerate() {
                *v += b.as_slice()[i % fout];
                *s += b.as_slice()[i % fout].abs();
            }
        }
        check_close("linear", got.as_slice(), &want, &scale, 1e-10)?;
    }
}

/// Sizes that leave ragged edges in every register tile, and products large
/// enough to be split over threads (by columns, by rows and by batch).
#[test]
fn matmul_large_and_ragged_sizes() {
    let cases: &[MatmulCase] = &[
        (&[], &[], (33, 65, 17)),
        (&[], &[], (65, 33, 17)),
        (&[], &[], (17, 1, 33)),
        (&[], &[], (1, 300, 1)),
        (&[], &[], (70, 80, 50)),
        (&[], &[], (130, 33, 70)),
        (&[], &[], (3, 200, 500)),
        (&[], &[], (500, 200, 3)),
        (&[4], &[4], (40, 50, 40)),
        (&[3, 1], &[5], (20, 30, 20)),
        (&[2], &[], (129, 17, 129)),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for &(ba, bb, mkn) in cases {
        for (tl, tr) in [(false, false), (true, false), (false, true), (true, true)] {
            let seed = (mkn.0 * 31 + mkn.1) as u64;
            let run = || check_batched_matmul(ba, bb, mkn, tl, tr, seed, 1e-10);
            run().unwrap_or_else(|e| panic!("{ba:?} {bb:?} {mkn:?} {tl} {tr}: {e}"));
            pool.install(run)
                .unwrap_or_else(|e| panic!("3 threads: {ba:?} {bb:?} {mkn:?} {tl} {tr}: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn conv2d_matches_direct_convolution(case in conv_case()) {
        let (c, o) = (case.groups * case.cg, case.groups * case.og);
        let x = tensor(&[case.n, c, case.hw[0], case.hw[1]], case.seed);
        let w = tensor(&[o, case.cg, case.k[0], case.k[1]], case.seed ^ 1);
        let b = tensor(&[o], case.seed ^ 2);
        let bias = case.bias.then_some(&b);
        match case.geo(case.hw) {
            Some(g) => {
                let got = x.conv2d(&w, bias, case.params())?;
                prop_assert_eq!(got.shape(), &[g.n, g.o, g.out[0], g.out[1]]);
                let (want, scale) =
                    naive_conv2d(x.as_slice(), w.as_slice(), bias.map(|b| b.as_slice()), &g);
                check_close("conv2d", got.as_slice(), &want, &scale, 1e-10)?;
            }
            None => {
                let e = x.conv2d(&w, bias, case.params()).unwrap_err();
                prop_assert!(matches!(e, Error::ShapeMismatch { op: "conv2d", .. }), "{:?}", e);
            }
        }
    }

    /// The f32 kernels (the direct stride-1 method and im2col + GEMM) on
    /// channel counts that span several register panels, against the f64
    /// definition: output, input gradient (scattered adjoint) and weight
    /// gradient, each within 1e-5 of the sum of its terms' magnitudes.
    #[test]
    fn conv2d_f32_matches_the_definition(case in conv_f32_case()) {
        check_conv2d_f32(&case)?;
    }

    /// The same check on "same"-width convolutions only (rows read
    /// unpadded, the left and right padding masked).
    #[test]
    fn conv2d_same_width_f32_matches_the_definition(case in conv_same_width_case()) {
        let hw = case.fitted_hw();
        prop_assert_eq!(case.geo(hw).expect("fitted extents").out[1], hw[1]);
        check_conv2d_f32(&case)?;
    }

    #[test]
    fn conv2d_adjoints(case in conv_case()) {
        let hw = case.fitted_hw();
        let g = case.geo(hw).expect("fitted extents");
        let x = tensor(&[g.n, g.c, hw[0], hw[1]], case.seed);
        let w = tensor(&[g.o, case.cg, g.k[0], g.k[1]], case.seed ^ 1);
        let y = tensor(&[g.n, g.o, g.out[0], g.out[1]], case.seed ^ 3);
        let p = case.params();
        let out = x.conv2d(&w, None, p)?;
        let dx = y.conv2d_input_grad(&w, x.shape(), p)?;
        let dw = y.conv2d_weight_grad(&x, w.shape(), p)?;
        prop_assert_eq!(dx.shape(), x.shape());
        prop_assert_eq!(dw.shape(), w.shape());
        // The scale: Σ |y|·Σ|x·w| bounds every term of both inner products.
        let (_, terms) = naive_conv2d(x.as_slice(), w.as_slice(), None, &g);
        let scale = abs_dot(&terms, y.as_slice());
        let lhs = dot(out.as_slice(), y.as_slice());
        let via_x = dot(x.as_slice(), dx.as_slice());
        let via_w = dot(w.as_slice(), dw.as_slice());
        prop_assert!((lhs - via_x).abs() <= 1e-9 * scale, "input grad: {} vs {} (scale {})", lhs, via_x, scale);
        prop_assert!((lhs - via_w).abs() <= 1e-9 * scale, "weight grad: {} vs {} (scale {})", lhs, via_w, scale);
    }

    #[test]
    fn conv1d_matches_direct_convolution_and_adjoints(case in conv_case()) {
        // Reuse the width axis of the 2-D case.
        let (k, s, p, d, l) = (case.k[1], case.s[1], case.p[1], case.d[1], case.hw[1]);
        let (c, o) = (case.groups * case.cg, case.groups * case.og);
        let params = Conv1dParams { stride: s, padding: p, dilation: d, groups: case.groups };
        let x = tensor(&[case.n, c, l], case.seed);
        let w = tensor(&[o, case.cg, k], case.seed ^ 1);
        let b = tensor(&[o], case.seed ^ 2);
        let bias = case.bias.then_some(&b);
        let Some(lo) = out_extent(l, k, s, p, d) else {
            prop_assert!(x.conv1d(&w, bias, params).is_err());
            return Ok(());
        };
        let got = x.conv1d(&w, bias, params)?;
        prop_assert_eq!(got.shape(), &[case.n, o, lo]);
        let geo = ((case.n, c, l), (o, k), (s, p, d, case.groups));
        let (want, scale) = naive_conv1d(
            x.as_slice(), w.as_slice(), bias.map(|b| b.as_slice()), geo.0, geo.1, geo.2, lo,
        );
        check_close("conv1d", got.as_slice(), &want, &scale, 1e-10)?;
        // Adjoints.
        let y = tensor(&[case.n, o, lo], case.seed ^ 3);
        let out = x.conv1d(&w, None, params)?;
        let dx = y.conv1d_input_grad(&w, x.shape(), params)?;
        let dw = y.conv1d_weight_grad(&x, w.shape(), params)?;
        prop_assert_eq!(dx.shape(), x.shape());
        prop_assert_eq!(dw.shape(), w.shape());
        let (_, terms) = naive_conv1d(x.as_slice(), w.as_slice(), None, geo.0, geo.1, geo.2, lo);
        let scale = abs_dot(&terms, y.as_slice());
        let lhs = dot(out.as_slice(), y.as_slice());
        prop_assert!((lhs - dot(x.as_slice(), dx.as_slice())).abs() <= 1e-9 * scale);
        prop_assert!((lhs - dot(w.as_slice(), dw.as_slice())).abs() <= 1e-9 * scale);
    }
}

// ---------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn max_pool2d_matches_window_max(case in pool_case()) {
        let x = case.input();
        let Some([oh, ow]) = case.out() else {
            let e = x.max_pool2d(case.params()).unwrap_err();
            prop_assert!(matches!(e, Error::ShapeMismatch { op: "max_pool2d", .. }), "{:?}", e);
            return Ok(());
        };
        let (vals, idx) = x.max_pool2d(case.params())?;
        let shape = [case.n, case.c, oh, ow];
        prop_assert_eq!(vals.shape(), &shape);
        prop_assert_eq!(idx.shape(), &shape);
        let [h, w] = case.hw;
        for plane in 0..case.n * case.c {
            let xp = &x.as_slice()[plane * h * w..(plane + 1) * h * w];
            for y in 0..oh {
                for xo in 0..ow {
                    let (h0, w0) = case.window(y, xo);
                    let mut best = f64::NEG_INFINITY; // padding acts as −∞
                    for i in h0..h0 + case.k[0] as isize {
                        for j in w0..w0 + case.k[1] as isize {
                            if i >= 0 && j >= 0 && i < h as isize && j < w as isize {
                                best = best.max(xp[i as usize * w + j as usize]);
                            }
                        }
                    }
                    let o = (plane * oh + y) * ow + xo;
                    prop_assert_eq!(vals.as_slice()[o], best);
                    let at = idx.as_slice()[o];
                    prop_assert!(at < h * w, "index {} outside the plane", at);
                    let (ih, iw) = ((at / w) as isize, (at % w) as isize);
                    prop_assert!(
                        (h0..h0 + case.k[0] as isize).contains(&ih)
                            && (w0..w0 + case.k[1] as isize).contains(&iw),
                        "index {} outside window ({}, {})", at, y, xo
                    );
                    prop_assert_eq!(xp[at], best);
                }
            }
        }
    }

    /// The `f32` 2×2 pooling (a vectorised kernel on AVX-512 CPUs) against
    /// the definition: the first maximum in row-major window order, the
    /// first NaN over any number; ties and NaNs on purpose, rows wider
    /// than one 16-lane step and odd extents.
    #[test]
    fn max_pool2d_2x2_f32_matches_the_definition(
        n in 1usize..=2,
        c in 1usize..=3,
        h in 2usize..=12,
        w in 2usize..=70,
        nans in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let shape = [n, c, h, w];
        let x = if nans { tensor_with_nans(&shape, seed) } else { int_tensor(&shape, seed, 3) };
        let x = x.cast::<f32>();
        let (vals, idx) = x.max_pool2d(Pool2dParams::new(2))?;
        let (oh, ow) = (h / 2, w / 2);
        prop_assert_eq!(vals.shape(), &[n, c, oh, ow]);
        for plane in 0..n * c {
            let xp = &x.as_slice()[plane * h * w..(plane + 1) * h * w];
            for y in 0..oh {
                for xo in 0..ow {
                    let mut at = 2 * y * w + 2 * xo;
                    for k in [2 * y * w + 2 * xo + 1, (2 * y + 1) * w + 2 * xo, (2 * y + 1) * w + 2 * xo + 1] {
                        if xp[k] > xp[at] || (xp[k].is_nan() && !xp[at].is_nan()) {
                            at = k;
                        }
                    }
                    let o = (plane * oh + y) * ow + xo;
                    prop_assert_eq!(idx.as_slice()[o], at, "plane {} ({}, {})", plane, y, xo);
                    prop_assert_eq!(vals.as_slice()[o].to_bits(), xp[at].to_bits());
                }
            }
        }
    }

    #[test]
    fn avg_pool2d_matches_window_mean(case in pool_case(), include_pad in any::<bool>()) {
        let x = case.input();
        let Some([oh, ow]) = case.out() else {
            let e = x.avg_pool2d(case.params(), include_pad).unwrap_err();
            prop_assert!(matches!(e, Error::ShapeMismatch { op: "avg_pool2d", .. }), "{:?}", e);
            return Ok(());
        };
        let got = x.avg_pool2d(case.params(), include_pad)?;
        prop_assert_eq!(got.shape(), &[case.n, case.c, oh, ow]);
        let [h, w] = case.hw;
        let (mut want, mut scale) = (Vec::new(), Vec::new());
        for plane in 0..case.n * case.c {
            let xp = &x.as_slice()[plane * h * w..(plane + 1) * h * w];
            for y in 0..oh {
                for xo in 0..ow {
                    let (h0, w0) = case.window(y, xo);
                    let (mut sum, mut abs, mut inside) = (0.0, 0.0, 0usize);
                    for i in h0..h0 + case.k[0] as isize {
                        for j in w0..w0 + case.k[1] as isize {
                            if i >= 0 && j >= 0 && i < h as isize && j < w as isize {
                                let v = xp[i as usize * w + j as usize];
                                sum += v;
                                abs += v.abs();
                                inside += 1;
                            }
                        }
                    }
                    // Without ceil_mode every window ends inside the padded
                    // input, so counting the padding divides by kh·kw.
                    let div = if include_pad { case.k[0] * case.k[1] } else { inside } as f64;
                    want.push(sum / div);
                    scale.push(abs / div);
                }
            }
        }
        check_close("avg_pool2d", got.as_slice(), &want, &scale, 1e-12)?;
    }

    #[test]
    fn pooling_adjoints(case in pool_case(), include_pad in any::<bool>()) {
        let x = case.input();
        let Some([oh, ow]) = case.out() else { return Ok(()) };
        let shape = [case.n, case.c, oh, ow];
        let y = tensor(&shape, case.seed ^ 7);
        let avg = x.avg_pool2d(case.params(), include_pad)?;
        let back = y.avg_pool2d_backward(x.shape(), case.params(), include_pad)?;
        prop_assert_eq!(back.shape(), x.shape());
        check_adjoint(
            "avg_pool2d",
            (avg.as_slice(), y.as_slice()),
            (x.as_slice(), back.as_slice()),
            1e-12,
        )?;
        let (mx, idx) = x.max_pool2d(case.params())?;
        let back = y.max_pool2d_backward(&idx, x.shape())?;
        prop_assert_eq!(back.shape(), x.shape());
        check_adjoint(
            "max_pool2d",
            (mx.as_slice(), y.as_slice()),
            (x.as_slice(), back.as_slice()),
            1e-12,
        )?;
    }
}

// ---------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sum_mean_var_match_naive_loops(
        (shape, axes, keepdim, seed) in reduce_case(),
        unbiased in any::<bool>(),
    ) {
        let x = tensor(&shape, seed);
        let xs = x.as_slice();
        let ax = normalise(&axes, shape.len());
        let count: usize = ax.iter().map(|&a| shape[a]).product();
        let out_shape = reduced_shape(&shape, &ax, keepdim);
        // Sums over an extent-0 axis with a non-empty result are left out:
        // they currently panic inside the crate (`chunks(0)` in reduce_pass).
        if count == 0 && numel(&out_shape) > 0 {
            return Ok(());
        }
        let (sum, _) = naive_reduce(xs, &shape, &ax, |_| 0.0, |a, v, _| a + v);
        let (abs, _) = naive_reduce(xs, &shape, &ax, |_| 0.0, |a, v, _| a + v.abs());
        let got = x.sum_axes(&axes, keepdim)?;
        prop_assert_eq!(got.shape(), out_shape.as_slice());
        check_close("sum", got.as_slice(), &sum, &abs, 1e-12)?;

        let n = count as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let got = x.mean_axes(&axes, keepdim)?;
        prop_assert_eq!(got.shape(), out_shape.as_slice());
        let mscale: Vec<f64> = abs.iter().map(|s| s / n).collect();
        check_close("mean", got.as_slice(), &mean, &mscale, 1e-12)?;

        // ATen: Σ(x − mean)² / max(n − correction, 0).
        let (m2, _) = naive_reduce(xs, &shape, &ax, |_| 0.0, |a, v, o| a + (v - mean[o]).powi(2));
        let (sq, _) = naive_reduce(xs, &shape, &ax, |_| 0.0, |a, v, _| a + v * v);
        let div = (n - if unbiased { 1.0 } else { 0.0 }).max(0.0);
        let var: Vec<f64> = m2.iter().map(|s| s / div).collect();
        let vscale: Vec<f64> = sq.iter().map(|s| s / div).collect();
        let got = x.var_axes(&axes, unbiased, keepdim)?;
        prop_assert_eq!(got.shape(), out_shape.as_slice());
        check_close("var", got.as_slice(), &var, &vscale, 1e-10)?;
        let got = x.std_axes(&axes, unbiased, keepdim)?;
        let sd: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
        let sscale: Vec<f64> = vscale.iter().map(|v| v.sqrt()).collect();
        check_close("std", got.as_slice(), &sd, &sscale, 1e-6)?;
    }

    #[test]
    fn max_min_logsumexp_match_naive_loops(
        (shape, axes, keepdim, seed) in reduce_case(),
        nans in any::<bool>(),
    ) {
        let x = if nans { tensor_with_nans(&shape, seed) } else { int_tensor(&shape, seed, 3) };
        let xs = x.as_slice();
        let ax = normalise(&axes, shape.len());
        let out_shape = reduced_shape(&shape, &ax, keepdim);
        if ax.iter().any(|&a| shape[a] == 0) {
            // No identity for an empty max (torch.amax raises).
            for e in [
                x.max_axes(&axes, keepdim).unwrap_err(),
                x.min_axes(&axes, keepdim).unwrap_err(),
                x.logsumexp_axes(&axes, keepdim).unwrap_err(),
            ] {
                prop_assert!(matches!(e, Error::InvalidArgument { .. }), "{:?}", e);
            }
            return Ok(());
        }
        let (max, _) = naive_reduce(xs, &shape, &ax, |_| f64::NEG_INFINITY, |a, v, _| nan_max(a, v));
        let (min, _) = naive_reduce(xs, &shape, &ax, |_| f64::INFINITY, |a, v, _| nan_min(a, v));
        let got = x.max_axes(&axes, keepdim)?;
        prop_assert_eq!(got.shape(), out_shape.as_slice());
        check_same("max", got.as_slice(), &max)?;
        let got = x.min_axes(&axes, keepdim)?;
        prop_assert_eq!(got.shape(), out_shape.as_slice());
        check_same("min", got.as_slice(), &min)?;
        if !nans {
            let x = tensor(&shape, seed).mul_scalar(30.0);
            let xs = x.as_slice();
            let (m, _) = naive_reduce(xs, &shape, &ax, |_| f64::NEG_INFINITY, |a, v, _| a.max(v));
            let (s, _) = naive_reduce(xs, &shape, &ax, |_| 0.0, |a, v, o| a + (v - m[o]).exp());
            let want: Vec<f64> = m.iter().zip(&s).map(|(m, s)| m + s.ln()).collect();
            let scale: Vec<f64> = want.iter().map(|v| 1.0 + v.abs()).collect();
            let got = x.logsumexp_axes(&axes, keepdim)?;
            prop_assert_eq!(got.shape(), out_shape.as_slice());
            check_close("logsumexp", got.as_slice(), &want, &scale, 1e-12)?;
        }
    }

    #[test]
    fn argmax_argmin_pick_the_first_extreme(
        (shape, axis) in vec(0usize..=4, 1..=4).prop_flat_map(|s| { let r = s.len(); (Just(s), 0..r) }),
        negative in any::<bool>(),
        keepdim in any::<bool>(),
        nans in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let x = if nans { tensor_with_nans(&shape, seed) } else { int_tensor(&shape, seed, 2) };
        let a = signed_axis(axis, shape.len(), negative);
        if shape[axis] == 0 {
            let (e1, e2) = (x.argmax(a, keepdim), x.argmin(a, keepdim));
            prop_assert!(matches!(e1, Err(Error::InvalidArgument { .. })), "{:?}", e1);
            prop_assert!(matches!(e2, Err(Error::InvalidArgument { .. })), "{:?}", e2);
            return Ok(());
        }
        let out_shape = reduced_shape(&shape, &[axis], keepdim);
        for (name, better) in [
            ("argmax", (|v: f64, b: f64| v > b) as fn(f64, f64) -> bool),
            ("argmin", |v: f64, b: f64| v < b),
        ] {
            let got = if name == "argmax" { x.argmax(a, keepdim)? } else { x.argmin(a, keepdim)? };
            prop_assert_eq!(got.shape(), out_shape.as_slice());
            // First extreme along the axis; the first NaN wins (torch.argmax).
            let mut want = vec![(f64::NAN, usize::MAX); numel(&out_shape)];
            let keep = reduced_shape(&shape, &[axis], true);
            for_each_index(&shape, |idx| {
                let mut o = idx.to_vec();
                o[axis] = 0;
                let slot = &mut want[ravel(&o, &keep)];
                let v = x.as_slice()[ravel(idx, &shape)];
                let take = slot.1 == usize::MAX
                    || (!slot.0.is_nan() && (v.is_nan() || better(v, slot.0)));
                if take {
                    *slot = (v, idx[axis]);
                }
            });
            let want: Vec<usize> = want.iter().map(|w| w.1).collect();
            prop_assert_eq!(got.as_slice(), want.as_slice(), "{}", name);
        }
    }

    #[test]
    fn sum_to_shape_is_adjoint_of_broadcast_to(shapes in broadcast_shapes(1), seed in any::<u64>()) {
        // `shapes[0]` broadcasts to the full shape it was derived from; rebuild
        // a full shape by giving every extent-1 axis a random extent.
        let small = &shapes[0];
        let mut g = Gen(seed);
        let lead = g.below(3);
        // Summing an extent-0 axis into a non-empty shape currently panics
        // inside the crate (`chunks(0)` in reduce_pass), so broadcast axes
        // get extent 0 only when the small shape is empty already.
        let lo = usize::from(numel(small) > 0);
        let mut extent = || lo + g.below(4 - lo);
        let mut full: Vec<usize> = (0..lead).map(|_| extent()).collect();
        full.extend(small.iter().map(|&d| if d == 1 { extent() } else { d }));
        let x = tensor(small, seed);
        let y = tensor(&full, seed ^ 1);
        let bx = x.broadcast_to(&full)?;
        prop_assert_eq!(bx.shape(), full.as_slice());
        let back = y.sum_to_shape(small)?;
        prop_assert_eq!(back.shape(), small.as_slice());
        check_adjoint("sum_to_shape", (bx.as_slice(), y.as_slice()), (x.as_slice(), back.as_slice()), 1e-12)?;
    }
}

// ---------------------------------------------------------------------------
// Softmax
// ---------------------------------------------------------------------------

/// Multiples of 1/1024 up to ±`scale`: exact in f64, and still exact after
/// adding another such multiple, so shifting a row changes no rounding.
fn logits(shape: &[usize], scale: f64, seed: u64) -> Tensor<f64> {
    let r = (scale * 1024.0) as usize;
    Tensor::from_vec(
        ints(numel(shape), seed, r)
            .iter()
            .map(|v| v / 1024.0)
            .collect(),
        shape,
    )
    .unwrap()
}

/// Calls `f` with the flat positions of every 1-D slice along `axis`.
fn for_each_row(shape: &[usize], axis: usize, mut f: impl FnMut(&[usize])) {
    let mut keep = shape.to_vec();
    keep[axis] = 1;
    let stride: usize = shape[axis + 1..].iter().product();
    for_each_index(&keep, |idx| {
        let base = ravel(idx, shape);
        let row: Vec<usize> = (0..shape[axis]).map(|i| base + i * stride).collect();
        f(&row);
    });
}

fn softmax_case() -> impl Strategy<Value = (Vec<usize>, usize, bool, f64, u64)> {
    (
        vec(1usize..=5, 1..=3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        }),
        any::<bool>(),
        prop::sample::select(vec![1.0, 10.0, 100.0, 1e3, 1e4]),
        any::<u64>(),
    )
        .prop_map(|((s, a), neg, scale, seed)| (s, a, neg, scale, seed))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn softmax_rows_are_distributions((shape, axis, neg, scale, seed) in softmax_case()) {
        let a = signed_axis(axis, shape.len(), neg);
        let x = logits(&shape, scale, seed);
        let s = x.softmax(a)?;
        prop_assert_eq!(s.shape(), x.shape());
        let sv = s.as_slice();
        let mut rows = Vec::new();
        for_each_row(&shape, axis, |row| rows.push(row.to_vec()));
        for row in &rows {
            let total: f64 = row.iter().map(|&i| sv[i]).sum();
            prop_assert!((total - 1.0).abs() <= 1e-12, "row sums to {}", total);
            prop_assert!(row.iter().all(|&i| (0.0..=1.0).contains(&sv[i])));
        }
        let xf: Tensor<f32> = x.cast();
        let sf = xf.softmax(a)?;
        for row in &rows {
            let total: f64 = row.iter().map(|&i| sf.as_slice()[i] as f64).sum();
            prop_assert!((total - 1.0).abs() <= 1e-5, "f32 row sums to {}", total);
            prop_assert!(row.iter().all(|&i| (0.0..=1.0).contains(&sf.as_slice()[i])));
        }
    }

    #[test]
    fn log_softmax_is_log_of_softmax((shape, axis, neg, scale, seed) in softmax_case()) {
        let a = signed_axis(axis, shape.len(), neg);
        let x = logits(&shape, scale, seed);
        let s = x.softmax(a)?;
        let l = x.log_softmax(a)?;
        prop_assert_eq!(l.shape(), x.shape());
        // log_softmax = x − lse rounds at the magnitude of the logits.
        let tol = 1e-14 * (1.0 + scale);
        for (i, (&lv, &sv)) in l.as_slice().iter().zip(s.as_slice()).enumerate() {
            prop_assert!(lv <= 0.0 && lv.is_finite(), "log_softmax {} at {}", lv, i);
            if sv > 1e-300 {
                prop_assert!((lv - sv.ln()).abs() <= tol, "{}: {} vs ln {}", i, lv, sv.ln());
            }
        }
    }

    #[test]
    fn softmax_ignores_a_constant_per_row(
        (shape, axis, neg, scale, seed) in softmax_case(),
        shift_seed in any::<u64>(),
    ) {
        let a = signed_axis(axis, shape.len(), neg);
        let x = logits(&shape, scale, seed);
        let mut row_shape = shape.clone();
        row_shape[axis] = 1;
        let c = logits(&row_shape, 100.0, shift_seed);
        let mut shifted = x.to_vec();
        let mut r = 0;
        for_each_row(&shape, axis, |row| {
            for &i in row {
                shifted[i] += c.as_slice()[r];
            }
            r += 1;
        });
        let xs = Tensor::from_vec(shifted, &shape)?;
        let want = x.softmax(a)?;
        let got = xs.softmax(a)?;
        let ones = vec![1.0; want.numel()];
        check_close("softmax", got.as_slice(), want.as_slice(), &ones, 1e-14)?;
        let want = x.log_softmax(a)?;
        let got = xs.log_softmax(a)?;
        // x − lse rounds at the magnitude of the shifted logits.
        let scale_v = vec![1.0 + scale + 100.0; want.numel()];
        check_close("log_softmax", got.as_slice(), want.as_slice(), &scale_v, 1e-14)?;
    }
}

// ---------------------------------------------------------------------------
// Joining, splitting, padding, indexing
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn concat_then_split_round_trips(
        (shape, axis) in vec(0usize..=3, 1..=3).prop_flat_map(|s| { let r = s.len(); (Just(s), 0..r) }),
        sizes in vec(0usize..=3, 1..=4),
        negative in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let parts: Vec<Tensor<f64>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &e)| { let mut s = shape.clone(); s[axis] = e; tensor(&s, seed ^ i as u64) })
            .collect();
        let refs: Vec<&Tensor<f64>> = parts.iter().collect();
        let a = signed_axis(axis, shape.len(), negative);
        let cat = Tensor::concat(&refs, a)?;
        let mut want_shape = shape.clone();
        want_shape[axis] = sizes.iter().sum();
        prop_assert_eq!(cat.shape(), want_shape.as_slice());
        // Position j along the axis comes from the part holding it.
        let mut ok = true;
        for_each_index(&want_shape, |idx| {
            let (mut part, mut j) = (0, idx[axis]);
            while j >= sizes[part] { j -= sizes[part]; part += 1; }
            let mut src = idx.to_vec();
            src[axis] = j;
            ok &= cat.as_slice()[ravel(idx, &want_shape)] == parts[part].as_slice()[ravel(&src, parts[part].shape())];
        });
        prop_assert!(ok, "concat element mapping");
        let back = cat.split_sizes(a, &sizes)?;
        prop_assert_eq!(back.len(), parts.len());
        for (b, p) in back.iter().zip(&parts) {
            prop_assert!(b == p);
        }
    }

    #[test]
    fn stack_then_narrow_recovers_each_tensor(
        (shape, axis) in shape_strategy(3, 3).prop_flat_map(|s| { let r = s.len(); (Just(s), 0..=r) }),
        count in 1usize..=4,
        negative in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let parts: Vec<Tensor<f64>> = (0..count).map(|i| tensor(&shape, seed ^ i as u64)).collect();
        let refs: Vec<&Tensor<f64>> = parts.iter().collect();
        let a = signed_axis(axis, shape.len() + 1, negative);
        let st = Tensor::stack(&refs, a)?;
        let mut want_shape = shape.clone();
        want_shape.insert(axis, count);
        prop_assert_eq!(st.shape(), want_shape.as_slice());
        for (i, p) in parts.iter().enumerate() {
            prop_assert!(&st.narrow(axis, i, 1)?.squeeze(axis)? == p);
            prop_assert!(&st.index_select(axis, &[i])?.reshape(&shape)? == p);
        }
    }

    #[test]
    fn pad_then_narrow_round_trips(
        (shape, pads) in shape_strategy(3, 3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), vec((0usize..=2, 0usize..=2), r))
        }),
        value in -5.0f64..5.0,
        seed in any::<u64>(),
    ) {
        let x = tensor(&shape, seed);
        let p = x.pad(&pads, value)?;
        let want_shape: Vec<usize> = shape.iter().zip(&pads).map(|(&d, &(b, e))| b + d + e).collect();
        prop_assert_eq!(p.shape(), want_shape.as_slice());
        let mut want = Vec::new();
        for_each_index(&want_shape, |idx| {
            let inside = idx.iter().zip(&pads).zip(&shape).all(|((&i, &(b, _)), &d)| i >= b && i < b + d);
            want.push(if inside {
                let src: Vec<usize> = idx.iter().zip(&pads).map(|(&i, &(b, _))| i - b).collect();
                x.as_slice()[ravel(&src, &shape)]
            } else {
                value
            });
        });
        prop_assert_eq!(p.as_slice(), want.as_slice());
        let mut back = p.clone();
        for (d, (&(b, _), &e)) in pads.iter().zip(&shape).enumerate() {
            back = back.narrow(d, b, e)?;
        }
        prop_assert!(back == x);
    }

    #[test]
    fn gather_matches_definition_and_scatter_add_is_its_adjoint(
        (shape, axis, idx_shape) in vec(1usize..=4, 1..=3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        }).prop_flat_map(|(s, a)| {
            let dims: Vec<_> = s.iter().enumerate()
                .map(|(d, &e)| if d == a { 0usize..=4 } else { 0usize..=e })
                .collect();
            (Just(s), Just(a), dims)
        }),
        negative in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let x = tensor(&shape, seed);
        let mut g = Gen(seed ^ 9);
        let index = Tensor::from_vec(
            (0..numel(&idx_shape)).map(|_| g.below(shape[axis])).collect(),
            &idx_shape,
        )?;
        let a = signed_axis(axis, shape.len(), negative);
        let got = x.gather(a, &index)?;
        prop_assert_eq!(got.shape(), idx_shape.as_slice());
        // torch.gather: out[i] = x[i with axis coordinate replaced by index[i]].
        let mut want = Vec::new();
        for_each_index(&idx_shape, |i| {
            let mut src = i.to_vec();
            src[axis] = index.as_slice()[ravel(i, &idx_shape)];
            want.push(x.as_slice()[ravel(&src, &shape)]);
        });
        prop_assert_eq!(got.as_slice(), want.as_slice());
        let y = tensor(&idx_shape, seed ^ 1);
        let scattered = Tensor::<f64>::zeros(&shape)?.scatter_add(a, &index, &y)?;
        prop_assert_eq!(scattered.shape(), shape.as_slice());
        check_adjoint("gather", (got.as_slice(), y.as_slice()), (x.as_slice(), scattered.as_slice()), 1e-12)?;
    }

    #[test]
    fn index_select_matches_definition_and_index_add_is_its_adjoint(
        (shape, axis) in vec(1usize..=4, 1..=3).prop_flat_map(|s| { let r = s.len(); (Just(s), 0..r) }),
        count in 0usize..=6,
        negative in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let x = tensor(&shape, seed);
        let mut g = Gen(seed ^ 5);
        let ids: Vec<usize> = (0..count).map(|_| g.below(shape[axis])).collect();
        let a = signed_axis(axis, shape.len(), negative);
        let got = x.index_select(a, &ids)?;
        let mut out_shape = shape.clone();
        out_shape[axis] = count;
        prop_assert_eq!(got.shape(), out_shape.as_slice());
        let mut want = Vec::new();
        for_each_index(&out_shape, |i| {
            let mut src = i.to_vec();
            src[axis] = ids[i[axis]];
            want.push(x.as_slice()[ravel(&src, &shape)]);
        });
        prop_assert_eq!(got.as_slice(), want.as_slice());
        let y = tensor(&out_shape, seed ^ 1);
        let added = Tensor::<f64>::zeros(&shape)?.index_add(a, &ids, &y)?;
        prop_assert_eq!(added.shape(), shape.as_slice());
        check_adjoint("index_select", (got.as_slice(), y.as_slice()), (x.as_slice(), added.as_slice()), 1e-12)?;
    }
}

// ---------------------------------------------------------------------------
// Large inputs: the parallel code paths against the same naive references
// ---------------------------------------------------------------------------

#[test]
fn large_inputs_match_naive_references_on_three_threads() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| -> TestResult {
        // Broadcasting over ~1M elements, with a non-trivial stride pattern.
        let (sa, sb) = ([40, 1, 900], [30, 1]);
        let (a, b) = (tensor(&sa, 1), tensor(&sb, 2));
        let got = a.add(&b)?;
        let out = [40, 30, 900];
        prop_assert_eq!(got.shape(), &out);
        let mut want = Vec::with_capacity(numel(&out));
        for_each_index(&out, |i| {
            want.push(a.as_slice()[project(i, &sa)] + b.as_slice()[project(i, &sb)]);
        });
        check_same("large add", got.as_slice(), &want)?;

        // Reductions over 300k elements, including the full reduction.
        let shape = [60, 50, 100];
        let x = tensor(&shape, 3);
        for axes in [vec![0usize], vec![1], vec![2], vec![0, 2], vec![0, 1, 2]] {
            let (want, _) = naive_reduce(x.as_slice(), &shape, &axes, |_| 0.0, |a, v, _| a + v);
            let (scale, _) =
                naive_reduce(x.as_slice(), &shape, &axes, |_| 0.0, |a, v, _| a + v.abs());
            let got = x.sum_axes(&axes, false)?;
            check_close("large sum", got.as_slice(), &want, &scale, 1e-12)?;
            let (want, _) = naive_reduce(
                x.as_slice(),
                &shape,
                &axes,
                |_| f64::NEG_INFINITY,
                |a, v, _| a.max(v),
            );
            check_same("large max", x.max_axes(&axes, false)?.as_slice(), &want)?;
        }

        // Softmax along a non-last axis of 300k elements.
        let s = x.softmax(1)?;
        let mut ok = true;
        for_each_row(&shape, 1, |row| {
            let m = row
                .iter()
                .map(|&i| x.as_slice()[i])
                .fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|&i| (x.as_slice()[i] - m).exp()).sum();
            for &i in row {
                let want = (x.as_slice()[i] - m).exp() / z;
                ok &= (s.as_slice()[i] - want).abs() <= 1e-15;
            }
        });
        prop_assert!(ok, "large softmax");

        // Batched tiled transpose and a general permutation.
        let t = x.transpose(1, 2)?;
        let p = x.permute(&[2, 0, 1])?;
        let (mut wt, mut wp) = (Vec::new(), Vec::new());
        for_each_index(&[60, 100, 50], |i| {
            wt.push(x.as_slice()[ravel(&[i[0], i[2], i[1]], &shape)])
        });
        for_each_index(&[100, 60, 50], |i| {
            wp.push(x.as_slice()[ravel(&[i[1], i[2], i[0]], &shape)])
        });
        prop_assert_eq!(t.as_slice(), wt.as_slice());
        prop_assert_eq!(p.as_slice(), wp.as_slice());

        // Pooling over 64 planes of 64×64.
        let img = tensor(&[4, 16, 64, 64], 4);
        let (m, _) = img.max_pool2d(Pool2dParams::new(2))?;
        let mut want = Vec::new();
        for_each_index(&[4, 16, 32, 32], |i| {
            let at = |dy: usize, dx: usize| {
                img.as_slice()[ravel(&[i[0], i[1], 2 * i[2] + dy, 2 * i[3] + dx], img.shape())]
            };
            want.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
        });
        check_same("large max_pool2d", m.as_slice(), &want)?;
        Ok(())
    })
    .unwrap();
}

// ---------------------------------------------------------------------------
// Thread independence
// ---------------------------------------------------------------------------

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Runs `f` on one thread and on two and checks the bits agree.
fn same_bits_at_any_thread_count<T: anneal_tensor::Element>(
    what: &str,
    f: impl Fn() -> Tensor<T> + Send + Sync,
) {
    let one = in_pool(1, &f);
    let two = in_pool(2, &f);
    assert_eq!(one.shape(), two.shape(), "{what}: shape");
    let differ = one
        .as_slice()
        .iter()
        .zip(two.as_slice())
        .filter(|(a, b)| a.to_f64_exact().to_bits() != b.to_f64_exact().to_bits())
        .count();
    assert_eq!(
        differ, 0,
        "{what}: {differ} elements differ between 1 and 2 threads"
    );
}

/// The weight gradient is a sum over images: the whole batch (12 image
/// blocks sharing 8 partial sums) equals its two halves added, up to f32
/// rounding of sums of ~38k products.
#[test]
fn conv_weight_gradient_is_additive_over_the_batch() {
    let x = Tensor::<f32>::randn_seeded(&[48, 8, 28, 28], 19).unwrap();
    let dy = Tensor::<f32>::randn_seeded(&[48, 64, 28, 28], 20).unwrap();
    let p = Conv2dParams::new(1, 1);
    let whole = dy.conv2d_weight_grad(&x, &[64, 8, 3, 3], p).unwrap();
    let half = |i: usize| {
        let (x, dy) = (
            x.narrow(0, 24 * i, 24).unwrap(),
            dy.narrow(0, 24 * i, 24).unwrap(),
        );
        dy.conv2d_weight_grad(&x, &[64, 8, 3, 3], p).unwrap()
    };
    let (a, b) = (half(0), half(1));
    for ((w, a), b) in whole.as_slice().iter().zip(a.as_slice()).zip(b.as_slice()) {
        // Each sum has 48·784 terms of size ~1: f32 rounding stays far
        // below 0.05, while a missing or doubled block would be off by ~50.
        assert!((w - (a + b)).abs() < 0.05, "{w} vs {a} + {b}");
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let a = Tensor::<f32>::randn_seeded(&[300, 200], 1).unwrap();
    let b = Tensor::<f32>::randn_seeded(&[200, 250], 2).unwrap();
    same_bits_at_any_thread_count("matmul f32 300×200×250", || a.matmul(&b).unwrap());
    let bt = b.transpose(0, 1).unwrap();
    same_bits_at_any_thread_count("matmul_t", || a.matmul_t(&bt, false, true).unwrap());
    let (ad, bd) = (a.cast::<f64>(), b.cast::<f64>());
    same_bits_at_any_thread_count("matmul f64 300×200×250", || ad.matmul(&bd).unwrap());
    let ab = Tensor::<f32>::randn_seeded(&[6, 60, 70], 3).unwrap();
    let bb = Tensor::<f32>::randn_seeded(&[70, 80], 4).unwrap();
    same_bits_at_any_thread_count("batched matmul", || ab.matmul(&bb).unwrap());
    let w = Tensor::<f32>::randn_seeded(&[250, 200], 5).unwrap();
    let bias = Tensor::<f32>::randn_seeded(&[250], 6).unwrap();
    same_bits_at_any_thread_count("linear", || a.linear(&w, Some(&bias)).unwrap());
    // A short batch: x·Wᵀ with Wᵀ broadcast from its rows.
    let a64 = a.narrow(0, 0, 64).unwrap();
    same_bits_at_any_thread_count("linear batch 64", || a64.linear(&w, Some(&bias)).unwrap());

    let x = Tensor::<f32>::randn_seeded(&[8, 8, 20, 20], 7).unwrap();
    let k = Tensor::<f32>::randn_seeded(&[16, 8, 3, 3], 8).unwrap();
    let kb = Tensor::<f32>::randn_seeded(&[16], 9).unwrap();
    let p = Conv2dParams::new(1, 1);
    same_bits_at_any_thread_count("conv2d", || x.conv2d(&k, Some(&kb), p).unwrap());
    let x1 = x.narrow(0, 0, 1).unwrap();
    same_bits_at_any_thread_count("conv2d N=1", || x1.conv2d(&k, None, p).unwrap());
    let dy = Tensor::<f32>::randn_seeded(&[8, 16, 20, 20], 10).unwrap();
    same_bits_at_any_thread_count("conv2d_input_grad", || {
        dy.conv2d_input_grad(&k, x.shape(), p).unwrap()
    });
    same_bits_at_any_thread_count("conv2d_weight_grad", || {
        dy.conv2d_weight_grad(&x, k.shape(), p).unwrap()
    });
    let (x3, dy3) = (x.narrow(0, 0, 3).unwrap(), dy.narrow(0, 0, 3).unwrap());
    same_bits_at_any_thread_count("conv2d_weight_grad N=3", || {
        dy3.conv2d_weight_grad(&x3, k.shape(), p).unwrap()
    });
    // 16-pixel rows: the direct (dot-product) weight gradient.
    let x16 = Tensor::<f32>::randn_seeded(&[9, 8, 16, 16], 15).unwrap();
    let dy16 = Tensor::<f32>::randn_seeded(&[9, 16, 16, 16], 16).unwrap();
    same_bits_at_any_thread_count("conv2d_weight_grad 16×16", || {
        dy16.conv2d_weight_grad(&x16, k.shape(), p).unwrap()
    });
    // More image blocks (12) than partial sums (8): blocks share partials.
    let x48 = Tensor::<f32>::randn_seeded(&[48, 8, 28, 28], 17).unwrap();
    let dy48 = Tensor::<f32>::randn_seeded(&[48, 64, 28, 28], 18).unwrap();
    same_bits_at_any_thread_count("conv2d_weight_grad 12 blocks", || {
        dy48.conv2d_weight_grad(&x48, &[64, 8, 3, 3], p).unwrap()
    });
    let (x16, dy16) = (x16.narrow(0, 0, 3).unwrap(), dy16.narrow(0, 0, 3).unwrap());
    same_bits_at_any_thread_count("conv2d_weight_grad 16×16 N=3", || {
        dy16.conv2d_weight_grad(&x16, k.shape(), p).unwrap()
    });
    let pp = Pool2dParams::new(2);
    same_bits_at_any_thread_count("max_pool2d", || x.max_pool2d(pp).unwrap().0);
    same_bits_at_any_thread_count("avg_pool2d", || x.avg_pool2d(pp, true).unwrap());

    let big = Tensor::<f32>::randn_seeded(&[600, 500], 11).unwrap();
    same_bits_at_any_thread_count("sum over axis 1 of 300k", || {
        big.sum_axes(&[1], false).unwrap()
    });
    same_bits_at_any_thread_count("sum over axis 0 of 300k", || {
        big.sum_axes(&[0], false).unwrap()
    });
    let big3 = big.reshape(&[30, 100, 100]).unwrap();
    same_bits_at_any_thread_count("sum over axes 0, 2 of 300k", || {
        big3.sum_axes(&[0, 2], true).unwrap()
    });
    same_bits_at_any_thread_count("var over axis -1 of 300k", || {
        big3.var_axes(&[-1], true, false).unwrap()
    });
    same_bits_at_any_thread_count("max over axes 1, 2 of 300k", || {
        big3.max_axes(&[1, 2], false).unwrap()
    });

    let m = Tensor::<f32>::randn_seeded(&[400, 500], 12).unwrap();
    let row = Tensor::<f32>::randn_seeded(&[500], 13).unwrap();
    let col = Tensor::<f32>::randn_seeded(&[400, 1], 14).unwrap();
    same_bits_at_any_thread_count("add broadcast row, 200k", || m.add(&row).unwrap());
    same_bits_at_any_thread_count("mul broadcast column, 200k", || m.mul(&col).unwrap());
    same_bits_at_any_thread_count("add same shape, 200k", || m.add(&m).unwrap());
    same_bits_at_any_thread_count("exp, 200k", || m.exp());

    same_bits_at_any_thread_count("softmax last axis", || big.softmax(-1).unwrap());
    same_bits_at_any_thread_count("softmax axis 0", || big.softmax(0).unwrap());
    same_bits_at_any_thread_count("log_softmax", || big.log_softmax(1).unwrap());
    same_bits_at_any_thread_count("transpose", || big3.permute(&[2, 0, 1]).unwrap());
}

/// Regression: a full reduction of a large tensor gives the same bits on 1
/// and 2 threads (the blocking depends on the length alone).
#[test]
fn full_reductions_do_not_depend_on_thread_count() {
    let x = Tensor::<f32>::randn_seeded(&[600, 500], 1).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            (
                x.sum_all().to_bits(),
                x.sum_axes(&[0, 1], false)
                    .unwrap()
                    .item()
                    .unwrap()
                    .to_bits(),
                x.mean_all().to_bits(),
            )
        })
    };
    assert_eq!(run(1), run(2));
}
