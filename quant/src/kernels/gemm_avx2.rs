//! The AVX2 int8 GEMM kernel, exact by construction.
//!
//! `vpmaddubsw` would add two u8×i8 products into a saturating i16 (255·127·2
//! overflows it), so it is not used. Instead each 16-byte quarter of a
//! packed weight tile (4 channels × 4 bytes of `k`) is sign-extended to 16
//! i16 (`vpmovsxbw`), the 4 activation bytes are zero-extended to i16 and
//! repeated, and `vpmaddwd` forms exact i32 sums of adjacent pairs. Each
//! channel thus gets two partial sums (`k ≡ 0,1` and `k ≡ 2,3 mod 4`), which
//! the end of the tile adds (`vphaddd`). Integer addition is associative, so
//! the totals equal the VNNI and portable paths' bit for bit. The epilogue
//! is the shared scalar one.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::ops::Range;

use super::gemm::{write_block, Sink};
use super::pack::{PackedWeightsI8, KG, NB};

/// Rows per register block (2 × 4 accumulators + 4 weight registers).
const MR: usize = 2;

/// Computes output tile `rows × blocks`.
///
/// # Safety
/// AVX2 must be available; `a` must hold `M × K` bytes with `rows.end ≤ M`;
/// the sink's buffers must cover `M × N`, and no other thread may write
/// this tile.
pub(crate) unsafe fn tiles(
    a: &[u8],
    packed: &PackedWeightsI8,
    sink: &Sink,
    rows: Range<usize>,
    blocks: Range<usize>,
) {
    let k = packed.k();
    let bstride = packed.groups() * NB * KG;
    let w = packed.data().as_ptr();
    let mut r0 = rows.start;
    while r0 < rows.end {
        let mr = MR.min(rows.end - r0);
        let ap = a.as_ptr().add(r0 * k);
        for b in blocks.clone() {
            let bp = w.add(b * bstride);
            let acc = if mr == 2 {
                kernel::<2>(k, ap, bp)
            } else {
                let [r] = kernel::<1>(k, ap, bp);
                [r, [0; NB]]
            };
            for (i, row) in acc.iter().enumerate().take(mr) {
                write_block(sink, packed, r0 + i, b, row);
            }
        }
        r0 += mr;
    }
}

/// Four u8 activations (`x`, little-endian) zero-extended to i16 and
/// repeated 4× across a ymm.
#[inline(always)]
unsafe fn broadcast4(x: u32) -> __m256i {
    let x = x as u64;
    let spread =
        (x & 0xff) | ((x & 0xff00) << 8) | ((x & 0xff_0000) << 16) | ((x & 0xff00_0000) << 24);
    _mm256_set1_epi64x(spread as i64)
}

/// Exact sums of `R` rows (row-major, stride `k`) × 16 channels.
#[target_feature(enable = "avx2")]
unsafe fn kernel<const R: usize>(k: usize, a: *const u8, b: *const i8) -> [[i32; NB]; R] {
    let mut acc = [[_mm256_setzero_si256(); 4]; R];
    let mut bp = b;
    for g in 0..k.div_ceil(KG) {
        let mut wv = [_mm256_setzero_si256(); 4];
        for (q, v) in wv.iter_mut().enumerate() {
            *v = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(16 * q) as *const _));
        }
        let (off, len) = (g * KG, KG.min(k - g * KG));
        for (i, row) in acc.iter_mut().enumerate() {
            let p = a.add(i * k + off);
            let x = if len == KG {
                (p as *const u32).read_unaligned()
            } else {
                (0..len).fold(0u32, |v, t| v | (*p.add(t) as u32) << (8 * t))
            };
            let av = broadcast4(x);
            for (s, v) in row.iter_mut().zip(&wv) {
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(av, *v));
            }
        }
        bp = bp.add(NB * KG);
    }
    let mut out = [[0i32; NB]; R];
    for (row, o) in acc.iter().zip(out.iter_mut()) {
        // Lanes of row[q]: channel 4q + c/2, pair c % 2. After vphaddd the
        // 128-bit halves hold channels (0,1,4,5 | 2,3,6,7) of each pair of
        // registers; vpermq puts them in order.
        let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(row[0], row[1]));
        let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(row[2], row[3]));
        _mm256_storeu_si256(o.as_mut_ptr() as *mut _, lo);
        _mm256_storeu_si256(o.as_mut_ptr().add(8) as *mut _, hi);
    }
    out
}
