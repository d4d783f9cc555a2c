//! AVX-512 kernels for the Q4_0 / Q8_0 products.
//!
//! A Q4_0 block's 16 code bytes are zero-extended to 16 i32 lanes
//! (`vpmovzxbd`); the low nibbles are weights 0..16 and the high nibbles
//! (`>> 4`) weights 16..32. A 16-entry table `(q − 8)·d` (one multiply,
//! rounded as the scalar `(q − 8)·d`) is indexed by them with `vpermps`,
//! which reads only the low 4 bits of each index lane, so the weights are
//! bit-identical to [`super::BlockQ4_0::dequantize`]. Q8_0 codes are
//! sign-extended (`vpmovsxbd`), converted and scaled by `d`.
//!
//! Weight rows are stored interleaved by 8, so the kernels stream one
//! pointer. The register block is `R` rows of `x` × `C` weight rows (1 × 8
//! for a matrix–vector product, 4 × 4 for a batch): a dequantised block is
//! reused for `R` rows and an `x` block for `C` weight rows, with one
//! 16-lane accumulator per pair, reduced at the end of each chunk of 2048
//! columns of `K` and added to the output. For a batch the loops run chunk
//! → 4 rows of `x` → weight rows, so the `x` chunk stays in L1 while the
//! compressed weights stream. Each accumulator sees the same sequence of
//! operations whatever `R` and `C`, so a batched product equals row-by-row
//! matrix–vector products bit for bit. A ragged last block loads `x` with
//! a lane mask (zeros past `K`).

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::ops::Range;

use super::blocks::{BlockMat, IL, QK};

/// `out[·, rows]` of `x·Wᵀ` for `x [m, K]`, `out [m, N]`.
///
/// # Safety
/// AVX-512F must be available; `x` holds `m × K` floats and `out` points to
/// `m × N`, of which columns `rows` belong to this call; `rows.start` is a
/// multiple of [`IL`].
pub(crate) unsafe fn product(
    x: &[f32],
    m: usize,
    w: BlockMat<'_>,
    rows: Range<usize>,
    out: *mut f32,
) {
    let (n, k, d, qs, q4) = match w {
        BlockMat::Q4(w) => (
            w.rows(),
            w.cols(),
            w.scales().as_ptr(),
            w.codes().as_ptr(),
            true,
        ),
        BlockMat::Q8(w) => (
            w.rows(),
            w.cols(),
            w.scales().as_ptr(),
            w.codes().as_ptr() as *const u8,
            false,
        ),
    };
    debug_assert_eq!(rows.start % IL, 0);
    let g = Geom {
        x: x.as_ptr(),
        k,
        nb: k.div_ceil(QK),
        d,
        qs,
        out,
        n,
    };
    let groups = rows.start / IL..rows.end.div_ceil(IL);
    let valid = |grp: usize| (rows.end - grp * IL).min(IL);
    // K in chunks of KCB blocks: the chunk of R rows of `x` (32 KiB for
    // R = 4) stays in L1 while every weight row of the task passes by.
    for b0 in (0..g.nb).step_by(KCB) {
        let kb = b0..(b0 + KCB).min(g.nb);
        let add = b0 > 0;
        if m == 1 {
            for grp in groups.clone() {
                let kb = kb.clone();
                if q4 {
                    kernel::<true, 1, IL>(&g, grp, 0, 0, valid(grp), kb, add);
                } else {
                    kernel::<false, 1, IL>(&g, grp, 0, 0, valid(grp), kb, add);
                }
            }
            continue;
        }
        let mut i = 0;
        while i < m {
            let rr = (m - i).min(4);
            for grp in groups.clone() {
                for coff in (0..valid(grp)).step_by(4) {
                    let vc = (valid(grp) - coff).min(4);
                    let kb = kb.clone();
                    macro_rules! mm {
                        ($($r:literal),*) => {
                            match (q4, rr) {
                                $( (true, $r) => kernel::<true, $r, 4>(&g, grp, coff, i, vc, kb, add),
                                   (false, $r) => kernel::<false, $r, 4>(&g, grp, coff, i, vc, kb, add), )*
                                _ => unreachable!(),
                            }
                        };
                    }
                    mm!(1, 2, 3, 4);
                }
            }
            i += rr;
        }
    }
}

/// Blocks of `K` per chunk (2048 columns).
const KCB: usize = 64;

/// Pointers and sizes shared by every kernel call of a product.
struct Geom {
    x: *const f32,
    k: usize,
    nb: usize,
    d: *const f32,
    qs: *const u8,
    out: *mut f32,
    n: usize,
}

/// The 32 dequantised weights of storage slot `s`.
///
/// Q4_0: a 16-entry table `(q − 8)·d` (one multiply) indexed by the low and
/// high nibbles with `vpermps`, which reads only the low 4 bits of each
/// index lane.
#[inline(always)]
unsafe fn weights<const Q4: bool>(g: &Geom, s: usize) -> (__m512, __m512) {
    let d = _mm512_set1_ps(*g.d.add(s));
    if Q4 {
        let lut = _mm512_setr_ps(
            -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
        );
        let table = _mm512_mul_ps(lut, d);
        let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(g.qs.add(s * (QK / 2)) as *const _));
        (
            _mm512_permutexvar_ps(q, table),
            _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), table),
        )
    } else {
        let p = g.qs.add(s * QK);
        let q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const _));
        let q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(16) as *const _));
        (
            _mm512_mul_ps(_mm512_cvtepi32_ps(q0), d),
            _mm512_mul_ps(_mm512_cvtepi32_ps(q1), d),
        )
    }
}

/// `out[x0 + i, 8·grp + coff + c]` (`i < R`, `c < valid ≤ C`) over the
/// blocks `kb`: weight rows `coff..coff + C` of interleaved group `grp`.
/// The chunk's sums are stored, or added to the stored value if `add`.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const Q4: bool, const R: usize, const C: usize>(
    g: &Geom,
    grp: usize,
    coff: usize,
    x0: usize,
    valid: usize,
    kb: Range<usize>,
    add: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let tail = g.k % QK;
    let full = g.k / QK;
    let tm0 = ((1u32 << tail.min(16)) - 1) as __mmask16;
    let tm1 = ((1u32 << tail.saturating_sub(16)) - 1) as __mmask16;
    let base = grp * g.nb * IL + coff;
    for b in kb {
        let (m0, m1) = if b < full { (!0, !0) } else { (tm0, tm1) };
        let mut xv = [[_mm512_setzero_ps(); 2]; R];
        for (i, v) in xv.iter_mut().enumerate() {
            let p = g.x.add((x0 + i) * g.k + b * QK);
            v[0] = _mm512_maskz_loadu_ps(m0, p);
            v[1] = _mm512_maskz_loadu_ps(m1, p.add(16));
        }
        for c in 0..C {
            let (wa, wb) = weights::<Q4>(g, base + b * IL + c);
            for (a, v) in acc.iter_mut().zip(&xv) {
                a[c] = _mm512_fmadd_ps(wb, v[1], _mm512_fmadd_ps(wa, v[0], a[c]));
            }
        }
    }
    let col = grp * IL + coff;
    for (i, a) in acc.iter().enumerate() {
        for (c, s) in a.iter().enumerate().take(valid) {
            let o = g.out.add((x0 + i) * g.n + col + c);
            let v = _mm512_reduce_add_ps(*s);
            *o = if add { *o + v } else { v };
        }
    }
}
