//! The 2×2, stride-2 max pooling of one `f32` plane with AVX-512: 16
//! outputs per step, the even and odd columns of each input row pair split
//! with one permute each, and the argmax tracked as two lane masks (right
//! column, bottom row) instead of a branch per window.

use std::arch::x86_64::*;

use crate::gemm_avx512::lanes;

/// `vals[y·ow + x] = max` of the window at `(2y, 2x)` and `args` its flat
/// index in the plane (row width `w`); the first maximum in row-major window
/// order wins, and the first NaN beats any number, as in the scalar loop.
///
/// # Safety
/// `plane` holds `2·oh` rows of `w ≥ 2·ow` values; `vals` and `args` hold
/// `oh·ow`; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn max_pool_2x2(
    plane: &[f32],
    w: usize,
    oh: usize,
    ow: usize,
    vals: &mut [f32],
    args: &mut [usize],
) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let steps = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    let (one, width) = (_mm512_set1_epi64(1), _mm512_set1_epi64(w as i64));
    let p = plane.as_ptr();
    // take v ⇔ v > best, or v is NaN and best is not.
    let take = |best: __m512, v: __m512| {
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
        let v_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let best_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
        gt | (v_nan & !best_nan)
    };
    for y in 0..oh {
        let (r0, r1) = (2 * y * w, (2 * y + 1) * w);
        for x0 in (0..ow).step_by(16) {
            let n = (ow - x0).min(16);
            let (m0, m1) = (lanes(2 * n), lanes((2 * n).saturating_sub(16)));
            // Masked-off lanes are never read, so the second load's address
            // may lie past the plane (hence wrapping arithmetic).
            let split = |row: usize| {
                let lo = _mm512_maskz_loadu_ps(m0, p.wrapping_add(row + 2 * x0));
                let hi = _mm512_maskz_loadu_ps(m1, p.wrapping_add(row + 2 * x0 + 16));
                (
                    _mm512_permutex2var_ps(lo, even, hi),
                    _mm512_permutex2var_ps(lo, odd, hi),
                )
            };
            let (a, b) = split(r0);
            let (c, d) = split(r1);
            let t = take(a, b);
            let (best, right, bottom) = (_mm512_mask_blend_ps(t, a, b), t, 0);
            let t = take(best, c);
            let (best, right, bottom) = (_mm512_mask_blend_ps(t, best, c), right & !t, bottom | t);
            let t = take(best, d);
            let (best, right, bottom) = (_mm512_mask_blend_ps(t, best, d), right | t, bottom | t);
            let out = lanes(n);
            _mm512_mask_storeu_ps(vals.as_mut_ptr().add(y * ow + x0), out, best);
            for shift in [0, 8] {
                let base =
                    _mm512_add_epi64(_mm512_set1_epi64((r0 + 2 * (x0 + shift)) as i64), steps);
                let (r, b) = ((right >> shift) as __mmask8, (bottom >> shift) as __mmask8);
                let idx = _mm512_mask_add_epi64(base, r, base, one);
                let idx = _mm512_mask_add_epi64(idx, b, idx, width);
                let dst = args.as_mut_ptr().wrapping_add(y * ow + x0 + shift) as *mut i64;
                _mm512_mask_storeu_epi64(dst, (out >> shift) as __mmask8, idx);
            }
        }
    }
}
