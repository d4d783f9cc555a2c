//! Reductions over any set of axes (sum, mean, var, max, min, logsumexp),
//! arg-reductions, softmax and log-softmax.
//!
//! A reduction over several axes runs as a sequence of `[A, R, B] → [A, B]`
//! passes, one per run of adjacent reduced axes, so every pass walks memory
//! contiguously. Accumulation order is fixed by the shape alone, so results
//! do not depend on the thread count.

use rayon::prelude::*;

use crate::element::{c, Element};
use crate::error::{fmt_shape, Error, Result};
use crate::parallel::PARALLEL_THRESHOLD;
use crate::shape::{checked_numel, normalize_axes, normalize_axis, Dim};
use crate::Tensor;

/// How a reduction folds values: `init` is the identity, `fold(acc, x)`.
#[derive(Clone, Copy)]
enum Fold {
    Sum,
    Max,
    Min,
}

impl Fold {
    #[inline(always)]
    fn init<T: Element>(self) -> T {
        match self {
            Fold::Sum => T::zero(),
            Fold::Max => T::neg_infinity(),
            Fold::Min => T::infinity(),
        }
    }

    #[inline(always)]
    fn apply<T: Element>(self, acc: T, x: T) -> T {
        match self {
            Fold::Sum => acc + x,
            // NaN propagates, as in PyTorch.
            Fold::Max => {
                if x > acc || x.is_nan() {
                    x
                } else {
                    acc
                }
            }
            Fold::Min => {
                if x < acc || x.is_nan() {
                    x
                } else {
                    acc
                }
            }
        }
    }
}

/// Folds a contiguous run with 8 interleaved accumulators: vectorisable, and
/// more accurate than one running sum for long runs.
#[inline]
fn fold_contiguous<T: Element>(x: &[T], fold: Fold) -> T {
    let [acc] = lane_folds([x], fold);
    finish_lanes(acc, x, fold)
}

/// [`fold_contiguous`] of four runs of equal length at once, bit for bit:
/// each run still has its own 8 accumulators in the same order, but four
/// independent chains keep the adder busy where one chain waits on each
/// add's latency (~4× the throughput on long runs).
fn fold_contiguous4<T: Element>(runs: [&[T]; 4], fold: Fold) -> [T; 4] {
    let accs = lane_folds(runs, fold);
    std::array::from_fn(|i| finish_lanes(accs[i], runs[i], fold))
}

/// The 8 lane accumulators of each run's whole chunks of 8 (lane `i` folds
/// elements `8j + i` in order); the runs must have equal lengths. `fold`
/// is matched once, outside the loop, so each body vectorises.
#[inline(always)]
fn lane_folds<T: Element, const R: usize>(runs: [&[T]; R], fold: Fold) -> [[T; 8]; R] {
    match fold {
        Fold::Sum => lane_folds_with(runs, T::zero(), |a, x| a + x),
        Fold::Max => lane_folds_with(runs, T::neg_infinity(), |a, x| Fold::Max.apply(a, x)),
        Fold::Min => lane_folds_with(runs, T::infinity(), |a, x| Fold::Min.apply(a, x)),
    }
}

#[inline(always)]
fn lane_folds_with<T: Copy, const R: usize>(
    runs: [&[T]; R],
    init: T,
    f: impl Fn(T, T) -> T,
) -> [[T; 8]; R] {
    let chunks = runs[0].len() / 8;
    let runs = runs.map(|r| &r[..chunks * 8]);
    let mut acc = [[init; 8]; R];
    for j in 0..chunks {
        for (acc, run) in acc.iter_mut().zip(runs) {
            let ch: &[T; 8] = run[j * 8..j * 8 + 8].try_into().expect("a chunk of 8");
            for i in 0..8 {
                acc[i] = f(acc[i], ch[i]);
            }
        }
    }
    acc
}

/// Folds the tail past `x`'s whole chunks of 8 and combines it with the
/// lane accumulators in a fixed pairwise order.
#[inline(always)]
fn finish_lanes<T: Element>(acc: [T; 8], x: &[T], fold: Fold) -> T {
    let mut r = fold.init::<T>();
    for &x in &x[x.len() / 8 * 8..] {
        r = fold.apply(r, x);
    }
    let a = fold.apply(fold.apply(acc[0], acc[4]), fold.apply(acc[2], acc[6]));
    let b = fold.apply(fold.apply(acc[1], acc[5]), fold.apply(acc[3], acc[7]));
    fold.apply(fold.apply(a, b), r)
}

/// [`fold_contiguous`] of each `len`-long run of `x` in order (the last may
/// be shorter), four runs at a time.
fn fold_runs<T: Element>(x: &[T], len: usize, fold: Fold, out: &mut [T]) {
    for (o, group) in out.chunks_mut(4).zip(x.chunks(4 * len)) {
        if o.len() == 4 && group.len() == 4 * len {
            let (a, rest) = group.split_at(len);
            let (b, rest) = rest.split_at(len);
            let (c, d) = rest.split_at(len);
            o.copy_from_slice(&fold_contiguous4([a, b, c, d], fold));
        } else {
            for (o, run) in o.iter_mut().zip(group.chunks(len)) {
                *o = fold_contiguous(run, fold);
            }
        }
    }
}

/// One `[a, r, b] → [a, b]` pass.
fn reduce_pass<T: Element>(x: &[T], a: usize, r: usize, b: usize, fold: Fold) -> Vec<T> {
    let mut out = vec![fold.init::<T>(); a * b];
    if a * b == 0 || r == 0 {
        // Nothing to fold: the identity (0 for sums; max/min reject empty axes earlier).
        return out;
    }
    let parallel = x.len() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1;
    if b == 1 {
        if a == 1 && x.len() >= PARALLEL_THRESHOLD {
            // One long run: fixed-size blocks folded (in parallel when there
            // are threads), then combined in order. The blocking depends on
            // the length alone, so every thread count gives the same bits.
            const BLOCK: usize = 1 << 14;
            let mut partials = vec![fold.init::<T>(); x.len().div_ceil(BLOCK)];
            if parallel {
                partials
                    .par_chunks_mut(4)
                    .zip(x.par_chunks(4 * BLOCK))
                    .for_each(|(o, xs)| fold_runs(xs, BLOCK, fold, o));
            } else {
                fold_runs(x, BLOCK, fold, &mut partials);
            }
            out[0] = fold_contiguous(&partials, fold);
        } else if parallel {
            out.par_chunks_mut(4)
                .zip(x.par_chunks(4 * r))
                .for_each(|(o, rows)| fold_runs(rows, r, fold, o));
        } else {
            fold_runs(x, r, fold, &mut out);
        }
        return out;
    }
    let block = |(o, xs): (&mut [T], &[T])| {
        for row in xs.chunks_exact(b) {
            for (acc, &v) in o.iter_mut().zip(row) {
                *acc = fold.apply(*acc, v);
            }
        }
    };
    if parallel && a > 1 {
        out.par_chunks_mut(b)
            .zip(x.par_chunks(r * b))
            .for_each(block);
    } else {
        out.chunks_mut(b).zip(x.chunks(r * b)).for_each(block);
    }
    out
}

impl<T: Element> Tensor<T> {
    /// Reduces the given (normalised, sorted) axes with `fold`, keeping them
    /// as extent-1 axes. Returns the reduced values and the keepdim shape.
    fn fold_axes(&self, axes: &[usize], fold: Fold) -> (Vec<T>, Vec<usize>) {
        let mut shape = self.shape().to_vec();
        let mut data: Option<Vec<T>> = None;
        // Runs of adjacent axes, processed from the innermost.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &ax in axes {
            match runs.last_mut() {
                Some(run) if run.1 == ax => run.1 = ax + 1,
                _ => runs.push((ax, ax + 1)),
            }
        }
        for &(s, e) in runs.iter().rev() {
            let a: usize = shape[..s].iter().product();
            let r: usize = shape[s..e].iter().product();
            let b: usize = shape[e..].iter().product();
            let src = data.as_deref().unwrap_or(self.as_slice());
            let next = reduce_pass(src, a, r, b, fold);
            data = Some(next);
            for d in &mut shape[s..e] {
                *d = 1;
            }
        }
        (data.unwrap_or_else(|| self.to_vec()), shape)
    }

    fn finish(data: Vec<T>, keep_shape: Vec<usize>, axes: &[usize], keepdim: bool) -> Self {
        let shape = if keepdim {
            keep_shape
        } else {
            keep_shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        };
        Tensor::from_parts(data, shape)
    }

    fn reduce_nonempty(&self, op: &'static str, axes: &[usize]) -> Result<()> {
        if let Some(&a) = axes.iter().find(|&&a| self.shape()[a] == 0) {
            return Err(Error::invalid(
                op,
                format!(
                    "cannot reduce axis {a} of extent 0 in {} (no identity)",
                    fmt_shape(self.shape())
                ),
            ));
        }
        Ok(())
    }

    /// Sum over `axes` (an empty list reduces nothing, as NumPy's `axis=()`).
    pub fn sum_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let axes = normalize_axes("sum", axes, self.rank())?;
        let (d, s) = self.fold_axes(&axes, Fold::Sum);
        Ok(Self::finish(d, s, &axes, keepdim))
    }

    /// Mean over `axes`; the mean over an empty axis is NaN, as in PyTorch.
    pub fn mean_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let axes = normalize_axes("mean", axes, self.rank())?;
        let count: usize = axes.iter().map(|&a| self.shape()[a]).product();
        let (mut d, s) = self.fold_axes(&axes, Fold::Sum);
        let inv = T::one() / T::from_usize(count).unwrap_or_else(T::zero);
        d.iter_mut().for_each(|x| *x *= inv);
        Ok(Self::finish(d, s, &axes, keepdim))
    }

    /// Variance over `axes`, biased (divide by `n`) or unbiased (`n − 1`,
    /// Bessel's correction). Two-pass: `Σ(x − mean)² / (n − δ)`. With `n − δ ≤ 0`
    /// the result is NaN or ∞, as in PyTorch.
    pub fn var_axes<D: Dim>(&self, axes: &[D], unbiased: bool, keepdim: bool) -> Result<Self> {
        let axes = normalize_axes("var", axes, self.rank())?;
        let count: usize = axes.iter().map(|&a| self.shape()[a]).product();
        let mean = self.mean_axes(&axes, true)?;
        let dev = self.zip_with(&mean, "var", |x, m| (x - m) * (x - m))?;
        let (mut d, s) = dev.fold_axes(&axes, Fold::Sum);
        // PyTorch divides by max(n − δ, 0): NaN (0/0) or ∞ when it is 0.
        let denom = (count as f64 - if unbiased { 1.0 } else { 0.0 }).max(0.0);
        let inv: T = c(1.0 / denom);
        d.iter_mut().for_each(|x| *x *= inv);
        Ok(Self::finish(d, s, &axes, keepdim))
    }

    /// Standard deviation over `axes` (square root of [`Tensor::var_axes`]).
    pub fn std_axes<D: Dim>(&self, axes: &[D], unbiased: bool, keepdim: bool) -> Result<Self> {
        Ok(self.var_axes(axes, unbiased, keepdim)?.sqrt())
    }

    /// Maximum over `axes`; NaN propagates. Errors on an empty axis.
    pub fn max_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let axes = normalize_axes("max", axes, self.rank())?;
        self.reduce_nonempty("max", &axes)?;
        let (d, s) = self.fold_axes(&axes, Fold::Max);
        Ok(Self::finish(d, s, &axes, keepdim))
    }

    /// Minimum over `axes`; NaN propagates. Errors on an empty axis.
    pub fn min_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let axes = normalize_axes("min", axes, self.rank())?;
        self.reduce_nonempty("min", &axes)?;
        let (d, s) = self.fold_axes(&axes, Fold::Min);
        Ok(Self::finish(d, s, &axes, keepdim))
    }

    /// `log Σ exp(x)` over `axes`, computed as `m + log Σ exp(x − m)` with
    /// `m` the maximum, so it stays finite for large inputs.
    pub fn logsumexp_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let axes = normalize_axes("logsumexp", axes, self.rank())?;
        self.reduce_nonempty("logsumexp", &axes)?;
        let (m, keep_shape) = self.fold_axes(&axes, Fold::Max);
        // An all −∞ (or +∞) slice would give inf − inf; shift by 0 there.
        let shift = Tensor::from_parts(
            m.iter()
                .map(|&v| if v.is_finite() { v } else { T::zero() })
                .collect(),
            keep_shape.clone(),
        );
        let e = self.zip_with(&shift, "logsumexp", |x, s| (x - s).exp())?;
        let (sum, _) = e.fold_axes(&axes, Fold::Sum);
        let d = sum
            .iter()
            .zip(shift.as_slice())
            .map(|(&s, &m)| s.ln() + m)
            .collect();
        Ok(Self::finish(d, keep_shape, &axes, keepdim))
    }

    /// Sum of all elements.
    pub fn sum_all(&self) -> T {
        reduce_pass(self.as_slice(), 1, self.numel(), 1, Fold::Sum)[0]
    }

    /// Mean of all elements (NaN for an empty tensor).
    pub fn mean_all(&self) -> T {
        self.sum_all() / T::from_usize(self.numel()).unwrap_or_else(T::zero)
    }

    /// Maximum of all elements; errors on an empty tensor.
    pub fn max_all(&self) -> Result<T> {
        if self.is_empty() {
            return Err(Error::invalid("max_all", "tensor is empty"));
        }
        Ok(reduce_pass(self.as_slice(), 1, self.numel(), 1, Fold::Max)[0])
    }

    /// Minimum of all elements; errors on an empty tensor.
    pub fn min_all(&self) -> Result<T> {
        if self.is_empty() {
            return Err(Error::invalid("min_all", "tensor is empty"));
        }
        Ok(reduce_pass(self.as_slice(), 1, self.numel(), 1, Fold::Min)[0])
    }

    /// Sums broadcast axes away so the result has `shape`; the adjoint of
    /// broadcasting `shape` up to `self.shape()` (used by autograd).
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Self> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        crate::shape::check_broadcast_to("sum_to_shape", shape, self.shape())?;
        let offset = self.rank() - shape.len();
        let axes: Vec<usize> = (0..self.rank())
            .filter(|&i| i < offset || (shape[i - offset] == 1 && self.shape()[i] != 1))
            .collect();
        let (d, _) = self.fold_axes(&axes, Fold::Sum);
        Ok(Tensor::from_parts(d, shape.to_vec()))
    }

    fn arg_reduce<D: Dim>(
        &self,
        op: &'static str,
        axis: D,
        keepdim: bool,
        better: impl Fn(T, T) -> bool,
    ) -> Result<Tensor<usize>> {
        let a = normalize_axis(op, axis, self.rank())?;
        self.reduce_nonempty(op, &[a])?;
        let outer: usize = self.shape()[..a].iter().product();
        let r = self.shape()[a];
        let inner: usize = self.shape()[a + 1..].iter().product();
        let x = self.as_slice();
        let mut out = vec![0usize; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let base = o * r * inner + i;
                let mut best = 0;
                let mut bv = x[base];
                for k in 1..r {
                    let v = x[base + k * inner];
                    if bv.is_nan() {
                        break; // first NaN wins, as in PyTorch
                    }
                    if better(v, bv) || v.is_nan() {
                        best = k;
                        bv = v;
                    }
                }
                out[o * inner + i] = best;
            }
        }
        let mut shape = self.shape().to_vec();
        if keepdim {
            shape[a] = 1;
        } else {
            shape.remove(a);
        }
        Ok(Tensor::from_parts(out, shape))
    }

    /// Index of the maximum along `axis` (first one on ties; a NaN wins).
    pub fn argmax<D: Dim>(&self, axis: D, keepdim: bool) -> Result<Tensor<usize>> {
        self.arg_reduce("argmax", axis, keepdim, |v, best| v > best)
    }

    /// Index of the minimum along `axis` (first one on ties; a NaN wins).
    pub fn argmin<D: Dim>(&self, axis: D, keepdim: bool) -> Result<Tensor<usize>> {
        self.arg_reduce("argmin", axis, keepdim, |v, best| v < best)
    }

    /// Applies `row(values)` to each 1-D slice along `axis`, in place.
    fn along_axis(&self, op: &'static str, axis: usize, row: impl Fn(&mut [T]) + Sync) -> Self {
        let r = self.shape()[axis];
        let inner: usize = self.shape()[axis + 1..].iter().product();
        let _ = op;
        if inner == 1 {
            let mut out = self.to_vec();
            if r > 0 {
                if out.len() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
                    out.par_chunks_mut(r).for_each(&row);
                } else {
                    out.chunks_mut(r).for_each(&row);
                }
            }
            return Tensor::from_parts(out, self.shape().to_vec());
        }
        // Move the axis last, work on contiguous rows, move it back.
        let last = self.rank() - 1;
        let moved = self.transpose(axis, last).expect("axes are valid");
        let done = moved.along_axis(op, last, row);
        done.transpose(axis, last).expect("axes are valid")
    }

    /// Softmax along `axis`: `exp(x − max) / Σ exp(x − max)`; finite for any
    /// finite input.
    pub fn softmax<D: Dim>(&self, axis: D) -> Result<Self> {
        let a = normalize_axis("softmax", axis, self.rank())?;
        checked_numel("softmax", self.shape())?;
        Ok(self.along_axis("softmax", a, |row| {
            let m = fold_contiguous(row, Fold::Max);
            let m = if m.is_finite() { m } else { T::zero() };
            for v in row.iter_mut() {
                *v -= m;
            }
            crate::simd_math::map_in_place(crate::simd_math::Func::Exp, row);
            let inv = T::one() / fold_contiguous(row, Fold::Sum);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }))
    }

    /// Log-softmax along `axis`: `x − max − log Σ exp(x − max)`.
    pub fn log_softmax<D: Dim>(&self, axis: D) -> Result<Self> {
        let a = normalize_axis("log_softmax", axis, self.rank())?;
        Ok(self.along_axis("log_softmax", a, |row| {
            let m = fold_contiguous(row, Fold::Max);
            let m = if m.is_finite() { m } else { T::zero() };
            let mut s = T::zero();
            for &v in row.iter() {
                s += (v - m).exp();
            }
            // Subtract the maximum first: `x − m` is exact near the maximum,
            // whereas `x − (m + ln s)` loses the low bits of `ln s` to the
            // rounding of `m + ln s` when |m| is large.
            let ln_s = s.ln();
            for v in row.iter_mut() {
                *v = (*v - m) - ln_s;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor<f64> {
        let n = shape.iter().product::<usize>();
        Tensor::from_vec((0..n).map(|i| i as f64).collect(), shape).unwrap()
    }

    #[test]
    fn sums() {
        let a = iota(&[2, 3, 4]);
        let s = a.sum_axes(&[0, 2], false).unwrap();
        // axis-1 index j: Σ_i Σ_k (12i + 4j + k) = 2·(4·4j + 6) + 4·12 = 32j + 60.
        assert_eq!(s.to_vec(), vec![60., 92., 124.]);
        assert_eq!(a.sum_axes(&[0, 2], true).unwrap().shape(), &[1, 3, 1]);
        assert_eq!(a.sum_axes::<i32>(&[], false).unwrap(), a);
        assert_eq!(a.sum_all(), 276.0);
        assert!(a.sum_axes(&[3], false).is_err());
        assert!(a.sum_axes(&[1, 1], false).is_err());
    }

    #[test]
    fn var_mean() {
        let a = Tensor::from_vec(vec![1.0f64, 2., 3., 4.], &[4]).unwrap();
        assert_eq!(a.mean_axes(&[0], false).unwrap().item().unwrap(), 2.5);
        assert_eq!(
            a.var_axes(&[0], false, false).unwrap().item().unwrap(),
            1.25
        );
        assert!((a.var_axes(&[0], true, false).unwrap().item().unwrap() - 5.0 / 3.0).abs() < 1e-15);
        let one = Tensor::from_vec(vec![1.0f64], &[1]).unwrap();
        assert!(one
            .var_axes(&[0], true, false)
            .unwrap()
            .item()
            .unwrap()
            .is_nan());
    }

    #[test]
    fn max_min_arg() {
        let a = Tensor::from_vec(vec![1.0f32, 5., 5., -2., 0., 9.], &[2, 3]).unwrap();
        assert_eq!(a.max_axes(&[1], false).unwrap().to_vec(), vec![5., 9.]);
        assert_eq!(a.min_axes(&[0], false).unwrap().to_vec(), vec![-2., 0., 5.]);
        assert_eq!(a.argmax(1, false).unwrap().to_vec(), vec![1, 2]);
        assert_eq!(a.argmin(0, true).unwrap().shape(), &[1, 3]);
        let e = Tensor::<f32>::zeros(&[0, 3]).unwrap();
        assert!(e.max_axes(&[0], false).is_err());
        assert_eq!(e.max_axes(&[1], false).unwrap().shape(), &[0]);
        assert!(e.argmax(0, false).is_err());
    }

    #[test]
    fn softmax_extremes() {
        let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0, 1e4], &[2, 2]).unwrap();
        let s = x.softmax(-1).unwrap().to_vec();
        assert_eq!(s, vec![1.0, 0.0, 0.0, 1.0]);
        let l = x.log_softmax(-1).unwrap().to_vec();
        assert!(l.iter().all(|v| v.is_finite()));
        assert_eq!(l[0], 0.0);
        let lse = x.logsumexp_axes(&[1], false).unwrap().to_vec();
        assert_eq!(lse, vec![1e4, 1e4]);
        let col = x.softmax(0).unwrap().to_vec();
        assert_eq!(col, vec![1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn sum_to_shape_reverses_broadcast() {
        let g = Tensor::<f64>::ones(&[2, 3, 4]).unwrap();
        assert_eq!(g.sum_to_shape(&[3, 1]).unwrap().to_vec(), vec![8., 8., 8.]);
        assert_eq!(g.sum_to_shape(&[]).unwrap().to_vec(), vec![24.]);
        assert!(g.sum_to_shape(&[5]).is_err());
    }

    /// The four-run fold gives each run exactly what the one-run fold gives
    /// (so grouping runs changes no bits), and that is the 8-lane
    /// definition: lane `i` folds elements `8j + i` in order, the tail
    /// separately, then the fixed pairwise combination.
    #[test]
    fn four_run_fold_equals_the_one_run_fold_and_its_definition() {
        let value = |i: usize| {
            let v = ((i * 7919) % 1013) as f32 * 0.37 - 150.0;
            if i % 97 == 5 {
                f32::NAN
            } else {
                v * (1.0 + i as f32 * 1e-3)
            }
        };
        for fold in [Fold::Sum, Fold::Max, Fold::Min] {
            for len in [0usize, 1, 7, 8, 9, 23, 64, 100] {
                let xs: Vec<f32> = (0..4 * len).map(value).collect();
                let runs: Vec<&[f32]> = xs.chunks(len.max(1)).collect();
                let runs: [&[f32]; 4] = if len == 0 {
                    [&[]; 4]
                } else {
                    [runs[0], runs[1], runs[2], runs[3]]
                };
                let four = fold_contiguous4(runs, fold);
                for (r, run) in runs.iter().enumerate() {
                    let one = fold_contiguous(run, fold);
                    let mut lanes = [fold.init::<f32>(); 8];
                    let whole = run.len() / 8 * 8;
                    for (j, &v) in run[..whole].iter().enumerate() {
                        lanes[j % 8] = fold.apply(lanes[j % 8], v);
                    }
                    let tail = run[whole..]
                        .iter()
                        .fold(fold.init::<f32>(), |a, &v| fold.apply(a, v));
                    let l = lanes;
                    let a = fold.apply(fold.apply(l[0], l[4]), fold.apply(l[2], l[6]));
                    let b = fold.apply(fold.apply(l[1], l[5]), fold.apply(l[3], l[7]));
                    let want = fold.apply(fold.apply(a, b), tail);
                    assert_eq!(four[r].to_bits(), one.to_bits(), "len {len} run {r}");
                    assert_eq!(one.to_bits(), want.to_bits(), "len {len} run {r}");
                }
                // Grouped runs with a short last one, as reduce_pass uses them.
                if len > 0 {
                    let xs: Vec<f32> = (0..9 * len + 3).map(value).collect();
                    let mut out = vec![0.0f32; xs.len().div_ceil(len)];
                    fold_runs(&xs, len, fold, &mut out);
                    for (o, run) in out.iter().zip(xs.chunks(len)) {
                        assert_eq!(o.to_bits(), fold_contiguous(run, fold).to_bits());
                    }
                }
            }
        }
    }
}
