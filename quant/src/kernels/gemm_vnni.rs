//! The AVX-512 VNNI int8 GEMM kernel.
//!
//! Register blocking: `MR = 8` activation rows × `NV = 2` blocks of 16
//! output channels (more blocks for fewer rows, up to 8 × 16 channels for
//! a single row), one zmm accumulator of 16 i32 sums per row and block.
//! One step consumes one 4-byte group of `k`: `NV` 64-byte weight tiles are
//! loaded, and for each row the 4 activation bytes are broadcast
//! (`vpbroadcastd`) and multiplied into all `NV` accumulators with
//! `vpdpbusd`, which adds the 4 u8×i8 products of each lane to its i32 sum
//! exactly (no saturation). Activations are read in place (row-major); a
//! `K` that is not a multiple of 4 ends with one group assembled from the
//! 1–3 remaining bytes (the packed weights past `K` are zero).
//!
//! Loop order: a panel of `NV` weight blocks (`NV·16·K` bytes, 32 KiB at
//! K = 1024) is swept by every row block of the tile before the next panel,
//! so weights come from L1 and only the small activation rows stream.
//!
//! The epilogue runs on the accumulators in registers: zero-point
//! correction, scaling and bias in f32 (the same operations, in the same
//! order, as the scalar reference), or quantisation to u8; the last block
//! of a ragged `N` uses masked loads and stores.
//!
//! Safety: every function here is `unsafe` and documents its contract; the
//! raw-pointer arithmetic stays inside the buffers those contracts describe.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::ops::Range;

use super::gemm::{Epi, Sink, SinkKind};
use super::pack::{PackedWeightsI8, KG, NB};
use super::requant::QCLAMP;

/// Rows per register block.
const MR: usize = 8;

/// Largest `NV` for a block of `mr` rows (at most 16 accumulators for 8
/// rows, 32 zmm registers in all).
#[inline]
fn nv_max(mr: usize) -> usize {
    match mr {
        1 | 2 => 8,
        3..=6 => 4,
        _ => 2,
    }
}

/// Computes output tile `rows × blocks` (16-channel blocks).
///
/// # Safety
/// AVX-512F/BW/VNNI must be available; `a` must hold `M × K` bytes with
/// `rows.end ≤ M`; the sink's buffers must cover `M × N` and no other thread
/// may write this tile.
pub(crate) unsafe fn tiles(
    a: &[u8],
    packed: &PackedWeightsI8,
    sink: &Sink,
    rows: Range<usize>,
    blocks: Range<usize>,
) {
    let k = packed.k();
    let steps = Steps {
        full: k / KG,
        tail: k % KG,
        lda: k,
        bstride: packed.groups() * NB * KG,
    };
    let w = packed.data().as_ptr();
    // Column panels outer, row blocks inner: a panel of `width` weight
    // blocks (32 KiB for K = 1024) stays in L1 while the row blocks stream
    // past it. Every row block has at most min(MR, rows) rows, so `width`
    // never exceeds its `nv_max`.
    let width = nv_max(MR.min(rows.len()));
    let mut b = blocks.start;
    while b < blocks.end {
        let nv = width.min(blocks.end - b);
        let bp = w.add(b * steps.bstride);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let mr = MR.min(rows.end - r0);
            dispatch(mr, nv, &steps, a.as_ptr().add(r0 * k), bp, sink, r0, b);
            r0 += mr;
        }
        b += nv;
    }
}

/// Loop geometry shared by every tile of a call.
struct Steps {
    /// Whole 4-byte groups in `K`.
    full: usize,
    /// Bytes of `K` after them (0..=3).
    tail: usize,
    /// Row stride of the activations (`K`).
    lda: usize,
    /// Bytes between consecutive 16-channel weight blocks.
    bstride: usize,
}

/// Calls the `(mr, nv)` instance of [`kernel`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn dispatch(
    mr: usize,
    nv: usize,
    st: &Steps,
    a: *const u8,
    b: *const i8,
    sink: &Sink,
    row0: usize,
    blk0: usize,
) {
    macro_rules! go {
        ($($mr:literal => [$($nv:literal),*]),* $(,)?) => {
            match (mr, nv) {
                $($( ($mr, $nv) => kernel::<$mr, $nv>(st, a, b, sink, row0, blk0), )*)*
                _ => unreachable!("no VNNI kernel for {mr}×{nv}"),
            }
        };
    }
    go!(
        1 => [1, 2, 3, 4, 5, 6, 7, 8],
        2 => [1, 2, 3, 4, 5, 6, 7, 8],
        3 => [1, 2, 3, 4],
        4 => [1, 2, 3, 4],
        5 => [1, 2, 3, 4],
        6 => [1, 2, 3, 4],
        7 => [1, 2],
        8 => [1, 2],
    );
}

/// The last 1–3 bytes of a row as a little-endian group, zero-filled.
#[inline(always)]
unsafe fn tail_group(p: *const u8, tail: usize) -> i32 {
    let mut v = 0u32;
    for t in 0..tail {
        v |= (*p.add(t) as u32) << (8 * t);
    }
    v as i32
}

/// One group of `k`: `NV` weight tiles, `MR` broadcasts, `MR·NV` dot
/// products.
#[inline(always)]
unsafe fn step<const MR: usize, const NV: usize>(
    acc: &mut [[__m512i; NV]; MR],
    bp: *const i8,
    bstride: usize,
    av: [i32; MR],
) {
    let mut bv = [_mm512_setzero_si512(); NV];
    for (j, v) in bv.iter_mut().enumerate() {
        *v = _mm512_loadu_si512(bp.add(j * bstride) as *const _);
    }
    for (row, &a) in acc.iter_mut().zip(&av) {
        let a = _mm512_set1_epi32(a);
        for (s, v) in row.iter_mut().zip(&bv) {
            *s = _mm512_dpbusd_epi32(*s, a, *v);
        }
    }
}

/// `MR × 16·NV` tile over all of `K`, then the epilogue.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel<const MR: usize, const NV: usize>(
    st: &Steps,
    a: *const u8,
    b: *const i8,
    sink: &Sink,
    row0: usize,
    blk0: usize,
) {
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    let rows: [*const u8; MR] = std::array::from_fn(|i| a.add(i * st.lda));
    let load = |off: usize| rows.map(|r| (r.add(off) as *const i32).read_unaligned());
    let mut bp = b;
    let mut off = 0;
    // Two groups per iteration halve the address arithmetic per group.
    for _ in 0..st.full / 2 {
        step(&mut acc, bp, st.bstride, load(off));
        step(&mut acc, bp.add(NB * KG), st.bstride, load(off + KG));
        off += 2 * KG;
        bp = bp.add(2 * NB * KG);
    }
    if st.full % 2 == 1 {
        step(&mut acc, bp, st.bstride, load(off));
        off += KG;
        bp = bp.add(NB * KG);
    }
    if st.tail > 0 {
        step(
            &mut acc,
            bp,
            st.bstride,
            rows.map(|r| tail_group(r.add(off), st.tail)),
        );
    }
    epilogue::<MR, NV>(&acc, sink, row0, blk0);
}

/// Lane mask for the 16 channels of block `blk` of an `n`-channel output.
#[inline(always)]
fn block_mask(n: usize, blk: usize) -> __mmask16 {
    let cols = n.saturating_sub(blk * NB).min(NB);
    ((1u32 << cols) - 1) as __mmask16
}

/// Per-block requantisation constants: `z_a·rowsum`, `s_a·s_w`, bias.
#[inline(always)]
unsafe fn block_consts(ep: &Epi, col: usize, mask: __mmask16) -> (__m512i, __m512, __m512) {
    let rs = _mm512_loadu_si512(ep.row_sums.add(col) as *const _);
    let zr = _mm512_mullo_epi32(_mm512_set1_epi32(ep.za), rs);
    let ws = if ep.per_channel {
        _mm512_maskz_loadu_ps(mask, ep.w_scales.add(col))
    } else {
        _mm512_set1_ps(*ep.w_scales)
    };
    let sc = _mm512_mul_ps(_mm512_set1_ps(ep.a_scale), ws);
    let bias = if ep.bias.is_null() {
        _mm512_setzero_ps()
    } else {
        _mm512_maskz_loadu_ps(mask, ep.bias.add(col))
    };
    (zr, sc, bias)
}

/// `f32(acc − zr) · sc (+ bias)`, as [`super::requant::requant_one_f32`].
#[inline(always)]
unsafe fn to_f32(acc: __m512i, zr: __m512i, sc: __m512, bias: __m512, has_bias: bool) -> __m512 {
    let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, zr)), sc);
    if has_bias {
        _mm512_add_ps(v, bias)
    } else {
        v
    }
}

/// Writes the accumulators through the sink.
#[inline(always)]
unsafe fn epilogue<const MR: usize, const NV: usize>(
    acc: &[[__m512i; NV]; MR],
    sink: &Sink,
    row0: usize,
    blk0: usize,
) {
    let n = sink.n;
    for j in 0..NV {
        let blk = blk0 + j;
        let col = blk * NB;
        let mask = block_mask(n, blk);
        match sink.kind {
            SinkKind::I32(p) => {
                for (i, row) in acc.iter().enumerate() {
                    let dst = p.0.add((row0 + i) * n + col);
                    _mm512_mask_storeu_epi32(dst as *mut _, mask, row[j]);
                }
            }
            SinkKind::F32(p, ep) => {
                let (zr, sc, bias) = block_consts(&ep, col, mask);
                let hb = !ep.bias.is_null();
                for (i, row) in acc.iter().enumerate() {
                    let y = to_f32(row[j], zr, sc, bias, hb);
                    _mm512_mask_storeu_ps(p.0.add((row0 + i) * n + col), mask, y);
                }
            }
            SinkKind::U8(p, ep, inv, zo) => {
                let (zr, sc, bias) = block_consts(&ep, col, mask);
                let hb = !ep.bias.is_null();
                let (vinv, vzo) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zo));
                let (lo, hi) = (_mm512_set1_ps(-QCLAMP), _mm512_set1_ps(QCLAMP));
                for (i, row) in acc.iter().enumerate() {
                    let y = to_f32(row[j], zr, sc, bias, hb);
                    let t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y, vinv), lo), hi);
                    let q = _mm512_add_epi32(_mm512_cvtps_epi32(t), vzo);
                    let q = _mm512_max_epi32(
                        _mm512_min_epi32(q, _mm512_set1_epi32(255)),
                        _mm512_setzero_si512(),
                    );
                    let dst = p.0.add((row0 + i) * n + col);
                    _mm512_mask_cvtepi32_storeu_epi8(dst as *mut _, mask, q);
                }
            }
        }
    }
}
