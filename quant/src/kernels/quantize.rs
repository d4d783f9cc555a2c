//! Dynamic (per-batch) u8 quantisation of activations, as PyTorch's
//! `quantize_dynamic` does for the input of a dynamically quantised Linear.

use anneal_tensor::{Error, Result};

use super::requant::{quant_one_u8, AffineU8};

/// Quantisation parameters PyTorch's `ChooseQuantizationParams` picks for
/// an observed range `[min, max]` and codes `0..=255`:
///
/// ```text
/// min ← min(min, 0),  max ← max(max, 0)          (0 must be exact)
/// s   = (max − min) / 255                         (in f64; 0.1 if f32(s) = 0
///                                                   or 1/f32(s) = ∞)
/// z   = round_half_even(−min/s)  if |min/s| < 255 + |max/s|
///       round_half_even(255 − max/s)  otherwise,  clamped to 0..=255
/// ```
///
/// The scale is returned rounded to f32. (PyTorch ≥ 1.10 also raises
/// scales below 6.1·10⁻⁵ for fp16 safety; that is not done here.)
///
/// # Errors
/// If `min` or `max` is not finite.
pub fn choose_qparams_u8(min: f32, max: f32) -> Result<AffineU8> {
    if !min.is_finite() || !max.is_finite() {
        return Err(Error::invalid(
            "choose_qparams_u8",
            format!("range [{min}, {max}] is not finite"),
        ));
    }
    let (lo, hi) = (min.min(0.0) as f64, max.max(0.0) as f64);
    let mut scale = (hi - lo) / 255.0;
    if scale as f32 == 0.0 || (1.0 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    let from_min = -lo / scale;
    let from_max = 255.0 - hi / scale;
    let err_min = (lo / scale).abs();
    let err_max = 255.0 + (hi / scale).abs();
    let z = if err_min < err_max {
        from_min
    } else {
        from_max
    };
    let z = z.round_ties_even().clamp(0.0, 255.0) as u8;
    Ok(AffineU8 {
        scale: scale as f32,
        zero_point: z,
    })
}

/// Dynamic per-tensor quantisation: parameters from the range of `x`
/// (with 0 included, [`choose_qparams_u8`]), then
/// `q = sat_u8(round_half_even(x · (1/s)) + z)`.
///
/// # Errors
/// If `x` contains a NaN or an infinity.
pub fn quantize_activations_u8(x: &[f32]) -> Result<(Vec<u8>, AffineU8)> {
    let mut q = vec![0u8; x.len()];
    let p = quantize_activations_u8_into(x, &mut q)?;
    Ok((q, p))
}

/// [`quantize_activations_u8`] into a caller's buffer (no allocation).
///
/// # Errors
/// If `out.len() != x.len()` or `x` is not all finite.
pub fn quantize_activations_u8_into(x: &[f32], out: &mut [u8]) -> Result<AffineU8> {
    let op = "quantize_activations_u8";
    if out.len() != x.len() {
        return Err(Error::invalid(
            op,
            format!("out has {} elements but x has {}", out.len(), x.len()),
        ));
    }
    let p = tensor_qparams(op, x)?;
    quantize_with(x, out, p);
    Ok(p)
}

/// `out[i] = sat_u8(round_half_even(x[i] · (1/s)) + z)` for given `p`.
pub(crate) fn quantize_with(x: &[f32], out: &mut [u8], p: AffineU8) {
    debug_assert_eq!(x.len(), out.len());
    let (inv, zp) = (1.0 / p.scale, p.zero_point as i32);
    #[cfg(target_arch = "x86_64")]
    if super::features().avx512bw {
        // SAFETY: AVX-512F and BW are available; the lengths are equal.
        unsafe { avx512::quantize(x, out, inv, zp) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quant_one_u8(v, inv, zp);
    }
}

/// Range of `x` and the parameters for it; errors on non-finite input.
pub(crate) fn tensor_qparams(op: &'static str, x: &[f32]) -> Result<AffineU8> {
    let (min, max, finite) = min_max(x);
    if !finite {
        let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::invalid(
            op,
            format!(
                "input element {i} is {}; dynamic quantisation needs finite values",
                x.get(i).copied().unwrap_or(f32::NAN)
            ),
        ));
    }
    choose_qparams_u8(min, max).map_err(|_| Error::invalid(op, "input range is not finite"))
}

/// `(min(x ∪ {0}), max(x ∪ {0}), all finite)`.
fn min_max(x: &[f32]) -> (f32, f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if super::features().avx512 {
        // SAFETY: AVX-512F is present.
        return unsafe { avx512::min_max(x) };
    }
    let (mut lo, mut hi, mut nan) = (0f32, 0f32, false);
    for &v in x {
        nan |= v.is_nan();
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi, !nan && lo.is_finite() && hi.is_finite())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    #![allow(unsafe_op_in_unsafe_fn)]

    use std::arch::x86_64::*;

    use crate::kernels::requant::QCLAMP;

    /// `(min, max, all finite)` of `x ∪ {0}`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn min_max(x: &[f32]) -> (f32, f32, bool) {
        let zero = _mm512_setzero_ps();
        let mut lo = [zero; 4];
        let mut hi = [zero; 4];
        let mut unord: __mmask16 = 0;
        let p = x.as_ptr();
        let n = x.len();
        let mut i = 0;
        while i + 64 <= n {
            let v: [__m512; 4] = std::array::from_fn(|j| _mm512_loadu_ps(p.add(i + 16 * j)));
            unord |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[0], v[1])
                | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[2], v[3]);
            for j in 0..4 {
                lo[j] = _mm512_min_ps(lo[j], v[j]);
                hi[j] = _mm512_max_ps(hi[j], v[j]);
            }
            i += 64;
        }
        while i < n {
            let rem = (n - i).min(16);
            let mask = (((1u32 << rem) - 1) & 0xffff) as __mmask16;
            // Masked-off lanes read as 0, which the range includes anyway.
            let a = _mm512_maskz_loadu_ps(mask, p.add(i));
            unord |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a);
            lo[0] = _mm512_min_ps(lo[0], a);
            hi[0] = _mm512_max_ps(hi[0], a);
            i += rem;
        }
        let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
        let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
        let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        (lo, hi, unord == 0 && lo.is_finite() && hi.is_finite())
    }

    /// 16 values `round_half_even(min(v·inv, 512)) + zp` as i32, which the
    /// saturating packs then clamp to 0..=255. `min(512, NaN)` is NaN (the
    /// second operand) and converts to `i32::MIN`, which saturates to 0, as
    /// the scalar rule maps NaN to −512 and then 0; values below −2³¹ do the
    /// same.
    #[inline(always)]
    unsafe fn codes32(v: __m512, inv: __m512, zp: __m512i) -> __m512i {
        let t = _mm512_min_ps(_mm512_set1_ps(QCLAMP), _mm512_mul_ps(v, inv));
        // Round to nearest even: the default MXCSR mode, as `round_ties_even`.
        _mm512_add_epi32(_mm512_cvtps_epi32(t), zp)
    }

    /// Quantises `x` into `out` (same length): 64 values per step, packed
    /// i32 → u16 → u8 with unsigned saturation, then put back in order.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize(x: &[f32], out: &mut [u8], inv: f32, zp: i32) {
        let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zp));
        let n = x.len();
        let (p, o) = (x.as_ptr(), out.as_mut_ptr());
        // After the two in-lane packs, 128-bit lane l holds 4 dwords: the
        // l-th 4 values of each input vector. This permutation restores
        // the order.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let mut i = 0;
        while i + 64 <= n {
            let q: [__m512i; 4] =
                std::array::from_fn(|j| codes32(_mm512_loadu_ps(p.add(i + 16 * j)), vinv, vzp));
            let w01 = _mm512_packus_epi32(q[0], q[1]);
            let w23 = _mm512_packus_epi32(q[2], q[3]);
            let b = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(w01, w23));
            _mm512_storeu_si512(o.add(i) as *mut _, b);
            i += 64;
        }
        while i < n {
            let rem = (n - i).min(16);
            let mask = (((1u32 << rem) - 1) & 0xffff) as __mmask16;
            let q = codes32(_mm512_maskz_loadu_ps(mask, p.add(i)), vinv, vzp);
            let q = _mm512_max_epi32(
                _mm512_min_epi32(q, _mm512_set1_epi32(255)),
                _mm512_setzero_si512(),
            );
            _mm512_mask_cvtepi32_storeu_epi8(o.add(i) as *mut _, mask, q);
            i += rem;
        }
    }
}
