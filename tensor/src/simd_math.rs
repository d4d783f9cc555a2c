//! Vectorised `exp`, `tanh` and logistic sigmoid for `f32` slices.
//!
//! On CPUs with AVX-512F (detected at run time) sixteen lanes at a time:
//! Cody–Waite range reduction `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, Cephes'
//! degree-6 polynomial for `eʳ` and an exact two-step scaling by `2ⁿ`, so
//! subnormal results are rounded once. `tanh` uses Cephes' odd polynomial
//! below `|x| = 0.625` and `1 − 2/(e^{2|x|} + 1)` above; the sigmoid is
//! `1/(1 + e^{−x})` for `x ≥ 0` and `eˣ/(1 + eˣ)` below, from one `exp`.
//! Over the whole range `exp` and `tanh` stay within 1.5 ulp of the exact
//! value and the sigmoid within 2.5 (a test sweeps it against `f64` libm) and pass NaN and ±∞
//! through as libm does.
//!
//! A partial last vector is loaded and stored with a lane mask, so every
//! element takes the same arithmetic wherever it sits in the slice: results
//! do not depend on how a caller splits the work between threads. Other
//! CPUs, and `f64`, use the standard library's scalar functions.

use std::any::TypeId;

use rayon::prelude::*;

use crate::element::Element;
use crate::parallel::{CHUNK, PARALLEL_THRESHOLD};

/// Which function to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    /// `eˣ`.
    Exp,
    /// `tanh x`.
    Tanh,
    /// `1/(1 + e⁻ˣ)`.
    Sigmoid,
}

impl Func {
    /// The scalar reference, used where there is no vector path.
    #[inline(always)]
    fn scalar<T: Element>(self, x: T) -> T {
        match self {
            Func::Exp => x.exp(),
            Func::Tanh => x.tanh(),
            Func::Sigmoid => crate::elementwise::sigmoid_scalar(x),
        }
    }
}

/// `x` viewed as `f32` when `T` is `f32`.
#[inline(always)]
pub(crate) fn as_f32<T: 'static>(x: &[T]) -> Option<&[f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: `T` is `f32`, so the layouts are identical.
        Some(unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) })
    } else {
        None
    }
}

/// `x` viewed mutably as `f32` when `T` is `f32`.
#[inline(always)]
pub(crate) fn as_f32_mut<T: 'static>(x: &mut [T]) -> Option<&mut [f32]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: `T` is `f32`, so the layouts are identical.
        Some(unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) })
    } else {
        None
    }
}

/// `x` viewed as (possibly uninitialised) `f32` storage when `T` is `f32`.
pub(crate) fn as_f32_uninit<T: 'static>(
    x: &mut [std::mem::MaybeUninit<T>],
) -> Option<&mut [std::mem::MaybeUninit<f32>]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: `T` is `f32`, so the layouts are identical.
        Some(unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
    } else {
        None
    }
}

/// Whether the AVX-512 path runs on this CPU.
#[inline]
fn vector_path() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[i] = f(src[i])` on the calling thread; `src` and `dst` have the
/// same length.
fn map_f32(f: Func, src: &[f32], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if vector_path() {
        // SAFETY: AVX-512F is present; both pointers cover `src.len()` elements.
        unsafe { avx512::map(f, src.as_ptr(), dst.as_mut_ptr(), src.len()) };
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f.scalar(s);
    }
}

/// `x[i] = f(x[i])` on the calling thread.
fn map_f32_in_place(f: Func, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if vector_path() {
        let p = x.as_mut_ptr();
        // SAFETY: AVX-512F is present; each vector is loaded before the same
        // lanes are stored, so reading and writing one buffer is fine.
        unsafe { avx512::map(f, p, p, x.len()) };
        return;
    }
    for v in x.iter_mut() {
        *v = f.scalar(*v);
    }
}

/// `out[i] = f(src[i])` for any element type, the vector path for `f32`;
/// large slices are split over rayon's pool in fixed chunks.
pub(crate) fn map<T: Element>(f: Func, src: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); src.len()];
    let parallel = src.len() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1;
    let run = |s: &[T], o: &mut [T]| match (as_f32(s), as_f32_mut(o)) {
        (Some(s), Some(o)) => map_f32(f, s, o),
        _ => o.iter_mut().zip(s).for_each(|(o, &x)| *o = f.scalar(x)),
    };
    if parallel {
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, s)| run(s, o));
    } else {
        run(src, &mut out);
    }
    out
}

/// `x[i] = f(x[i])` on the calling thread, the vector path for `f32`.
pub(crate) fn map_in_place<T: Element>(f: Func, x: &mut [T]) {
    match as_f32_mut(x) {
        Some(x) => map_f32_in_place(f, x),
        None => x.iter_mut().for_each(|v| *v = f.scalar(*v)),
    }
}

/// Lanes of the partial sums in [`sum`] and [`dot`]: enough for LLVM to
/// keep them in vector registers.
const LANES: usize = 16;

/// `Σ x` with [`LANES`] interleaved partial sums combined in a fixed order
/// (vectorisable; the order depends only on the length).
#[inline]
pub(crate) fn sum<T: Element>(x: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a += v;
    }
    fold_lanes(acc, |a, b| a + b)
}

/// `Σ x⊙y` over the shorter length, ordered as [`sum`].
#[inline]
pub(crate) fn dot<T: Element>(x: &[T], y: &[T]) -> T {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [T::zero(); LANES];
    for (cx, cy) in x.chunks_exact(LANES).zip(y.chunks_exact(LANES)) {
        for ((a, &u), &v) in acc.iter_mut().zip(cx).zip(cy) {
            *a += u * v;
        }
    }
    let tail = n - n % LANES;
    for ((a, &u), &v) in acc.iter_mut().zip(&x[tail..]).zip(&y[tail..]) {
        *a += u * v;
    }
    fold_lanes(acc, |a, b| a + b)
}

/// The largest element (NaN if any is NaN, −∞ for an empty slice).
#[inline]
pub(crate) fn max<T: Element>(x: &[T]) -> T {
    // Branch-free lanes (vectorisable); NaN is tracked on the side.
    let mut acc = [T::neg_infinity(); LANES];
    let mut nan = [false; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for ((a, n), &v) in acc.iter_mut().zip(nan.iter_mut()).zip(ch) {
            *a = if v > *a { v } else { *a };
            *n |= v.is_nan();
        }
    }
    for ((a, n), &v) in acc.iter_mut().zip(nan.iter_mut()).zip(rest) {
        *a = if v > *a { v } else { *a };
        *n |= v.is_nan();
    }
    if nan.iter().any(|&n| n) {
        return T::nan();
    }
    fold_lanes(acc, |a, b| if b > a { b } else { a })
}

/// Pairwise combination of the lanes, always in the same tree.
#[inline(always)]
fn fold_lanes<T: Copy>(mut acc: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] = f(acc[i], acc[i + width]);
        }
    }
    acc[0]
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    #![allow(unsafe_op_in_unsafe_fn)]

    use std::arch::x86_64::*;

    use super::Func;

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2⁹ (Cephes C1, C2).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Cephes expf: eʳ ≈ 1 + r + r²·P(r) on |r| ≤ ln 2 / 2.
    const EXP_P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    // Cephes tanhf: tanh x ≈ x + x³·Q(x²) on |x| < 0.625.
    const TANH_Q: [f32; 5] = [
        -5.704_988_7e-3,
        2.063_908_8e-2,
        -5.373_971_6e-2,
        1.333_144_2e-1,
        -3.333_328e-1,
    ];

    /// `eˣ` for 16 lanes. NaN stays NaN, +∞ → +∞, −∞ → 0; results that are
    /// subnormal are rounded once.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        // Beyond these bounds the result is ∞ or 0 in f32 anyway; clamping
        // keeps n within what the two-step scaling can represent.
        let xc = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
            _mm512_set1_ps(89.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        // 2ⁿ = 2^{n₁}·2^{n₂} with n₁ = ⌊n/2⌋: both factors are normal for
        // n ∈ [−150, 129], and p·2^{n₁} is exact, so only the last product rounds.
        let ni = _mm512_cvtps_epi32(n);
        let n1 = _mm512_srai_epi32::<1>(ni);
        let n2 = _mm512_sub_epi32(ni, n1);
        let bias = _mm512_set1_epi32(127);
        let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
        let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
        let y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
        // NaN in, NaN out (the clamp would have replaced it).
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_mov_ps(y, nan, x)
    }

    /// `tanh x` for 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tanh16(x: __m512) -> __m512 {
        let sign = _mm512_set1_epi32(i32::MIN);
        let xi = _mm512_castps_si512(x);
        let ax = _mm512_castsi512_ps(_mm512_andnot_si512(sign, xi));
        // Small |x|: |x| + |x|·z·Q(z), z = x².
        let z = _mm512_mul_ps(x, x);
        let mut q = _mm512_set1_ps(TANH_Q[0]);
        for &c in &TANH_Q[1..] {
            q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(c));
        }
        let small = _mm512_fmadd_ps(_mm512_mul_ps(q, z), ax, ax);
        // Large |x|: 1 − 2/(e^{2|x|} + 1).
        let e = exp16(_mm512_add_ps(ax, ax));
        let large = _mm512_sub_ps(
            _mm512_set1_ps(1.0),
            _mm512_div_ps(_mm512_set1_ps(2.0), _mm512_add_ps(e, _mm512_set1_ps(1.0))),
        );
        let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(ax, _mm512_set1_ps(0.625));
        let t = _mm512_mask_mov_ps(large, is_small, small);
        // tanh is odd: x's sign (−0 stays −0).
        _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(t),
            _mm512_and_si512(xi, sign),
        ))
    }

    /// `1/(1 + e⁻ˣ)` for 16 lanes, from `e = e^{−|x|}`: `1/(1 + e)` for
    /// `x ≥ 0`, `e/(1 + e)` below (no overflow, full accuracy at both ends).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sigmoid16(x: __m512) -> __m512 {
        let sign = _mm512_set1_epi32(i32::MIN);
        let neg_ax = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(x), sign));
        let e = exp16(neg_ax);
        let one = _mm512_set1_ps(1.0);
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
        let num = _mm512_mask_mov_ps(one, negative, e);
        _mm512_div_ps(num, _mm512_add_ps(one, e))
    }

    #[cfg(test)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn apply(f: Func, x: __m512) -> __m512 {
        match f {
            Func::Exp => exp16(x),
            Func::Tanh => tanh16(x),
            Func::Sigmoid => sigmoid16(x),
        }
    }

    /// `dst[i] = f(src[i])` for `i < n`, sixteen at a time; a partial last
    /// vector goes through the same lanes, masked (identical bits).
    macro_rules! lanes {
        ($g:ident, $src:expr, $dst:expr, $n:expr) => {{
            let (src, dst, n) = ($src, $dst, $n);
            let mut i = 0;
            while i + 16 <= n {
                _mm512_storeu_ps(dst.add(i), $g(_mm512_loadu_ps(src.add(i))));
                i += 16;
            }
            if i < n {
                let m: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
                let v = _mm512_maskz_loadu_ps(m, src.add(i));
                _mm512_mask_storeu_ps(dst.add(i), m, $g(v));
            }
        }};
    }

    /// `dst[i] = f(src[i])` for `i < n`; `dst` may equal `src`.
    ///
    /// # Safety
    /// AVX-512F must be available and both pointers valid for `n` elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn map(f: Func, src: *const f32, dst: *mut f32, n: usize) {
        match f {
            Func::Exp => lanes!(exp16, src, dst, n),
            Func::Tanh => lanes!(tanh16, src, dst, n),
            Func::Sigmoid => lanes!(sigmoid16, src, dst, n),
        }
    }

    /// One lane's result through the vector code (for tests).
    #[cfg(test)]
    pub(super) fn one(f: Func, x: f32) -> f32 {
        let mut out = [0.0f32; 16];
        // SAFETY: only called after the CPU check; `out` holds 16 lanes.
        unsafe {
            let v = apply(f, _mm512_set1_ps(x));
            _mm512_storeu_ps(out.as_mut_ptr(), v);
        }
        out[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units of the last place between an `f32` result and the
    /// exact value `want` (`f64`), rounding `want` to `f32` first; subnormal
    /// results count the subnormal spacing.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        if got == w || (got.is_nan() && w.is_nan()) {
            return 0.0;
        }
        if !got.is_finite() || !w.is_finite() {
            return f64::INFINITY;
        }
        let spacing = |v: f32| {
            let a = v.abs();
            if a < f32::MIN_POSITIVE {
                f32::from_bits(1) as f64
            } else {
                (f32::from_bits(a.to_bits() + 1) - a) as f64
            }
        };
        (got as f64 - want).abs() / spacing(w).max(spacing(got))
    }

    fn reference(f: Func, x: f32) -> f64 {
        let x = x as f64;
        match f {
            Func::Exp => x.exp(),
            Func::Tanh => x.tanh(),
            Func::Sigmoid => {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    x.exp() / (1.0 + x.exp())
                }
            }
        }
    }

    /// Every 997th f32 bit pattern (both signs, every binade), a dense grid
    /// over [−110, 110] where the results are neither 0, ±1 nor ∞, and
    /// hand-picked edges.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (0..u32::MAX / 997)
            .map(|i| f32::from_bits(i * 997))
            .collect();
        xs.extend((0..2_200_000).map(|i| -110.0 + i as f32 * 1e-4));
        xs.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            88.72,
            88.73,
            -87.33,
            -103.9,
            -104.5,
            0.625,
            -0.625,
            0.624_999_9,
            9.1,
            -9.1,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        xs
    }

    #[test]
    fn within_a_few_ulp_of_libm_everywhere() {
        let xs = sweep();
        for (f, bound) in [(Func::Exp, 1.5), (Func::Tanh, 1.5), (Func::Sigmoid, 2.5)] {
            let got = map(f, &xs);
            let mut worst = (0.0f64, 0.0f32);
            for (&x, &y) in xs.iter().zip(&got) {
                let want = reference(f, x);
                if want.is_nan() {
                    assert!(y.is_nan(), "{f:?}({x:e}) = {y:e}, want NaN");
                    continue;
                }
                let e = ulps(y, want);
                if e > worst.0 {
                    worst = (e, x);
                }
            }
            assert!(
                worst.0 <= bound,
                "{f:?}: {} ulp at x = {:e}",
                worst.0,
                worst.1
            );
        }
    }

    #[test]
    fn special_values() {
        let xs = [f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 200.0, -200.0];
        let e = map(Func::Exp, &xs);
        assert_eq!(e[..4], [f32::INFINITY, 0.0, 1.0, 1.0]);
        assert_eq!(e[4], f32::INFINITY);
        assert_eq!(e[5], 0.0);
        let t = map(Func::Tanh, &xs);
        assert_eq!(t[..3], [1.0, -1.0, 0.0]);
        assert!(t[3] == 0.0 && t[3].is_sign_negative());
        assert_eq!(t[4..], [1.0, -1.0]);
        let s = map(Func::Sigmoid, &xs);
        assert_eq!(s, vec![1.0, 0.0, 0.5, 0.5, 1.0, 0.0]);
        // The smallest subnormal results of exp are reached, not flushed.
        assert!(map(Func::Exp, &[-103.0])[0] > 0.0);
        assert!(map(Func::Exp, &[-88.0])[0] < f32::MIN_POSITIVE);
    }

    #[test]
    fn position_in_the_slice_does_not_change_bits() {
        // Every offset and length: the masked tail must equal the full lanes.
        let xs: Vec<f32> = (0..53).map(|i| (i as f32 - 26.0) * 0.37).collect();
        for f in [Func::Exp, Func::Tanh, Func::Sigmoid] {
            let whole = map(f, &xs);
            for start in 0..20 {
                for len in 0..(xs.len() - start) {
                    let mut part = xs[start..start + len].to_vec();
                    map_in_place(f, &mut part);
                    assert_eq!(part, whole[start..start + len].to_vec());
                }
            }
            #[cfg(target_arch = "x86_64")]
            if vector_path() {
                for (&x, &y) in xs.iter().zip(&whole) {
                    assert_eq!(avx512::one(f, x).to_bits(), y.to_bits());
                }
            }
        }
    }

    #[test]
    fn lane_reductions() {
        let x: Vec<f64> = (0..37).map(|i| (i as f64 - 18.0) * 0.5).collect();
        let y: Vec<f64> = (0..37).map(|i| (i % 5) as f64).collect();
        assert_eq!(sum(&x), x.iter().sum::<f64>());
        assert_eq!(
            dot(&x, &y),
            x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>()
        );
        assert_eq!(max(&x), 9.0);
        assert_eq!(max::<f64>(&[]), f64::NEG_INFINITY);
        assert_eq!(sum::<f32>(&[]), 0.0);
        let mut z = x.clone();
        z[30] = f64::NAN;
        assert!(max(&z).is_nan());
        z[30] = 1.0;
        z[3] = f64::NAN;
        assert!(max(&z).is_nan());
    }

    #[test]
    fn f64_uses_the_scalar_functions() {
        let xs = [-3.0f64, -0.5, 0.0, 0.7, 20.0];
        assert_eq!(map(Func::Exp, &xs), xs.map(f64::exp).to_vec());
        assert_eq!(map(Func::Tanh, &xs), xs.map(f64::tanh).to_vec());
        let mut s = xs;
        map_in_place(Func::Sigmoid, &mut s);
        assert_eq!(s[2], 0.5);
    }
}
