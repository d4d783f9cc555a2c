//! Stride-1 `f32` convolution weight gradient as dot products along the
//! pixels (AVX-512 CPUs), without im2col.
//!
//! `dW[o][c][i][j] = Σ_n Σ_y Σ_x dY[n][o][y][x] · X'[n][c][y + i·d][x + j·d]`
//! with `X'` the zero-padded input. For stride 1 both factors are
//! contiguous along `x`, so each weight is a dot product of output-gradient
//! rows with shifted input rows: 16 pixels per vector, `R` output channels ×
//! up to [`TAPS`] taps of one input channel in registers (the `R` gradient
//! vectors are loaded once per 16 pixels and reused by every tap, each input
//! vector by every output channel), one horizontal sum per weight at the
//! end. The im2col route instead writes the `C·kH·kW × OH·OW` lowered
//! matrix and transposes it again while packing, which cost as much as the
//! multiply-adds.
//!
//! Images are summed in blocks sized from the geometry alone (a tile's
//! output-gradient rows for the block stay in L1 while every input
//! channel's padded planes pass over them); each weight of a block is one
//! register accumulation in a fixed order, and blocks are added in order,
//! so the result does not depend on the thread count.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::Geometry;
use crate::element::Element;
use crate::gemm_avx512::{available, lanes};
use crate::simd_math::{as_f32, as_f32_mut};

/// Bytes of output gradient one tile (three output channels) should keep
/// in L1 across a block of images: half the 48 KiB L1 of current cores,
/// leaving room for the padded planes streaming past.
const TILE_BYTES: usize = 24 << 10;

/// Most images per block (partial sums are added in block order).
const MAX_BLOCK: usize = 16;

/// The padded layout: plane width `W'`, plane size `H'·W'`, and the
/// distance between kernel rows `d_h·W'` (taps of a kernel row are
/// adjacent: dilation 1 along the width).
struct Padded {
    wp: usize,
    plane: usize,
    row_step: usize,
    /// Images per block: enough rows per tile that the final horizontal
    /// sums are a small part of the work, few enough to stay in L1.
    block: usize,
}

impl Padded {
    /// The plan for `g`, or `None` when this method does not apply (another
    /// stride, a width dilation, kernels under 4 taps or over 9 wide, no
    /// AVX-512) or its 16-pixel vectors would waste over a quarter of their
    /// lanes on a short output row.
    fn plan(g: &Geometry) -> Option<Padded> {
        if !available() || g.p.stride != [1, 1] || g.n == 0 || g.o == 0 || g.ow == 0 {
            return None;
        }
        // Fewer taps reuse the output-gradient vectors too little (a 1×1
        // convolution is a plain GEMM without im2col anyway); no input
        // channels leaves nothing to do.
        if g.kh * g.kw < 4 || g.kw > 9 || g.p.dilation[1] != 1 || g.cg() == 0 {
            return None;
        }
        if g.ow * 4 < g.ow.div_ceil(16) * 16 * 3 {
            return None;
        }
        let [ph, pw] = g.p.padding;
        // Geometry::new checked that the padded extents fit in isize.
        // Rows 16 values apart (64 bytes) from a 64-byte-aligned start, so
        // the first tap of every kernel row loads without crossing a cache
        // line (a split load costs two).
        let (hp, wp) = (g.h + 2 * ph, (g.w + 2 * pw).checked_next_multiple_of(16)?);
        let plane = hp.checked_mul(wp)?;
        let tile_bytes = g.oh.checked_mul(g.ow)?.checked_mul(3 * 4)?;
        let block = (TILE_BYTES / tile_bytes).clamp(1, MAX_BLOCK);
        g.cg().checked_mul(plane)?.checked_mul(block)?;
        Some(Padded {
            wp,
            plane,
            row_step: g.p.dilation[0] * wp,
            block,
        })
    }
}

/// `dw ← ∂L/∂W` (`[O, C/g, kH, kW]`) from the output gradient `dy` and the
/// input `x` when the method applies; `false` leaves `dw` untouched.
pub(super) fn weight_grad<T: Element>(dy: &[T], x: &[T], g: &Geometry, dw: &mut [T]) -> bool {
    let (Some(dy), Some(x), Some(dw)) = (as_f32(dy), as_f32(x), as_f32_mut(dw)) else {
        return false;
    };
    let Some(pad) = Padded::plan(g) else {
        return false;
    };
    let wlen = dw.len();
    let blocks = g.n.div_ceil(pad.block);
    let threads = rayon::current_num_threads();
    if blocks == 1 {
        block(&pad, g, dy, x, 0, dw, threads > 1);
        return true;
    }
    let mut partial = vec![0.0f32; blocks * wlen];
    if threads > 1 {
        partial
            .par_chunks_mut(wlen)
            .enumerate()
            .for_each(|(bi, part)| block(&pad, g, dy, x, bi, part, false));
    } else {
        partial
            .chunks_mut(wlen)
            .enumerate()
            .for_each(|(bi, part)| block(&pad, g, dy, x, bi, part, false));
    }
    dw.copy_from_slice(&partial[..wlen]);
    for part in partial.chunks(wlen).skip(1) {
        for (a, &b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    true
}

/// A weight-gradient buffer shared by workers writing disjoint weights.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each worker writes only the weights of its own output channels.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Writes block `bi`'s contribution to every weight into `dw`, optionally
/// splitting the output channels over threads.
fn block(pad: &Padded, g: &Geometry, dy: &[f32], x: &[f32], bi: usize, dw: &mut [f32], par: bool) {
    let (cg, og, taps) = (g.cg(), g.og(), g.kh * g.kw);
    let (n0, n1) = (bi * pad.block, ((bi + 1) * pad.block).min(g.n));
    let images = n1 - n0;
    let (in_image, out_plane) = (g.c * g.h * g.w, g.oh * g.ow);
    let padded_image = cg * pad.plane;
    f32::with_scratch(images * padded_image + 16, |padded| {
        let skew = padded.as_ptr().align_offset(64).min(16);
        let padded = &mut padded[skew..skew + images * padded_image];
        for gi in 0..g.p.groups {
            padded.fill(0.0);
            for n in 0..images {
                let src = &x[(n0 + n) * in_image + gi * cg * g.h * g.w..];
                fill_padded(pad, g, src, &mut padded[n * padded_image..]);
            }
            let padded = &*padded;
            let out = Out(dw[gi * og * cg * taps..].as_mut_ptr());
            let dy_group = &dy[n0 * g.o * out_plane + gi * og * out_plane..];
            // Output channels in tiles of three, every input channel inside:
            // the tile's output-gradient rows stay in L1 while the padded
            // planes stream past (the other order re-read the whole
            // block's output gradient from L2 for every input channel).
            let tiles = og.div_ceil(3);
            let tile_rows = |t: usize| {
                let plan = Channel {
                    dy: dy_group.as_ptr(),
                    dy_row: out_plane,
                    dy_image: g.o * out_plane,
                    x: padded.as_ptr(),
                    x_image: padded_image,
                    plane: pad.plane,
                    images,
                    oh: g.oh,
                    ow: g.ow,
                    wp: pad.wp,
                };
                let (o, rows) = (3 * t, (og - 3 * t).min(3));
                // SAFETY: the pointers cover `images` images of this group
                // (dY rows og, padded planes cg), every read stays in its
                // plane's padded rows, and these output channels' weights
                // are written only here.
                unsafe { rows_grad(&plan, o, rows, cg, [g.kh, g.kw], pad.row_step, out.get()) };
            };
            if par && tiles > 1 {
                (0..tiles).into_par_iter().for_each(tile_rows);
            } else {
                (0..tiles).for_each(tile_rows);
            }
        }
    });
}

/// Copies one group of one image (`[C/g, H, W]`) into its zeroed padded planes.
fn fill_padded(pad: &Padded, g: &Geometry, x: &[f32], padded: &mut [f32]) {
    let [ph, pw] = g.p.padding;
    for c in 0..g.cg() {
        for r in 0..g.h {
            let dst = c * pad.plane + (r + ph) * pad.wp + pw;
            padded[dst..dst + g.w].copy_from_slice(&x[(c * g.h + r) * g.w..][..g.w]);
        }
    }
}

/// Where one input channel's dot products read: the group's output
/// gradient rows and the channel's padded plane, for every image of a block.
#[derive(Clone, Copy)]
struct Channel {
    /// `dY[n0][first output channel of the group]`.
    dy: *const f32,
    /// Distance between output channels (`OH·OW`).
    dy_row: usize,
    /// Distance between images in `dy`.
    dy_image: usize,
    /// The channel's padded plane of the block's first image.
    x: *const f32,
    /// Distance between images' padded planes.
    x_image: usize,
    /// Distance between channels' padded planes.
    plane: usize,
    images: usize,
    oh: usize,
    ow: usize,
    wp: usize,
}

/// Every weight `dW[o..o + rows][c][·][·]` for every input channel `c`
/// (`p.x` at channel 0), written to `dw` (`[og][cg][kh·kw]`).
///
/// # Safety
/// As [`tile`], for every input channel; `dw` writable for the group.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_grad(
    p: &Channel,
    o: usize,
    rows: usize,
    cg: usize,
    [kh, kw]: [usize; 2],
    row_step: usize,
    dw: *mut f32,
) {
    let taps = kh * kw;
    let stride = cg * taps;
    let k = Kernel { kh, row_step };
    for c in 0..cg {
        let p = &Channel {
            x: p.x.add(c * p.plane),
            ..*p
        };
        let dst = dw.add((o * cg + c) * taps);
        // Up to nine taps (KR kernel rows of KW) per pass: 3×9 accumulators.
        macro_rules! go {
            ($kw:literal, $kr:literal) => {
                match rows {
                    3 => tile::<3, $kw, $kr>(p, o, &k, dst, stride),
                    2 => tile::<2, $kw, $kr>(p, o, &k, dst, stride),
                    _ => tile::<1, $kw, $kr>(p, o, &k, dst, stride),
                }
            };
        }
        match kw {
            1 => go!(1, 9),
            2 => go!(2, 4),
            3 => go!(3, 3),
            4 => go!(4, 2),
            5 => go!(5, 1),
            6 => go!(6, 1),
            7 => go!(7, 1),
            8 => go!(8, 1),
            _ => go!(9, 1),
        }
    }
}

/// The kernel's height and the distance between its rows in a padded plane.
struct Kernel {
    kh: usize,
    row_step: usize,
}

/// The sum of the 16 lanes, by 512-bit shuffles only (a fixed order).
#[inline(always)]
unsafe fn horizontal_sum(v: __m512) -> f32 {
    let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b0100_1110>(v, v));
    let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b1011_0001>(v, v));
    let v = _mm512_add_ps(v, _mm512_permute_ps::<0b0100_1110>(v));
    let v = _mm512_add_ps(v, _mm512_permute_ps::<0b1011_0001>(v));
    _mm512_cvtss_f32(v)
}

/// 16 values from `p`, those outside `m` zero when `MASKED` (a full
/// vector is loaded plainly: masked loads issue at half the rate).
#[inline(always)]
unsafe fn load<const MASKED: bool>(m: __mmask16, p: *const f32) -> __m512 {
    if MASKED {
        _mm512_maskz_loadu_ps(m, p)
    } else {
        _mm512_loadu_ps(p)
    }
}

/// One 16-pixel step: `acc[r][i][j] += dY[r][·] ⊙ X'[· + rows[i] + j]`
/// on the lanes of `m` (the others read as zero).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // constant indices keep `acc` in registers
unsafe fn step<const R: usize, const KW: usize, const KR: usize, const MASKED: bool>(
    acc: &mut [[[__m512; KW]; KR]; R],
    dy: *const f32,
    dy_row: usize,
    x: *const f32,
    rows: &[usize; KR],
    m: __mmask16,
) {
    let mut g = [_mm512_setzero_ps(); R];
    for (r, v) in g.iter_mut().enumerate() {
        *v = load::<MASKED>(m, dy.add(r * dy_row));
    }
    for i in 0..KR {
        for j in 0..KW {
            let xv = load::<MASKED>(m, x.add(rows[i] + j));
            for r in 0..R {
                acc[r][i][j] = _mm512_fmadd_ps(g[r], xv, acc[r][i][j]);
            }
        }
    }
}

/// `dst[r·stride + i·KW + j] ← Σ dY[o + r] · X'[shifted by tap (i, j)]`
/// for `R` output channels and every tap of a kernel `KW` wide (in passes
/// of `KR` kernel rows), summed over the block's images, rows and pixels.
///
/// # Safety
/// `p` describes readable output-gradient rows `o..o + R` and padded planes
/// for `p.images` images, the kernel fitting the planes' valid window;
/// `dst` writable at `r·stride + t` for every tap `t`.
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // constant indices keep `acc` in registers
unsafe fn tile<const R: usize, const KW: usize, const KR: usize>(
    p: &Channel,
    o: usize,
    k: &Kernel,
    dst: *mut f32,
    stride: usize,
) {
    for i0 in (0..k.kh).step_by(KR) {
        let used = (k.kh - i0).min(KR);
        // A last pass with fewer kernel rows repeats its last row's reads
        // (those sums are not stored): same shape, no out-of-plane reads.
        let mut rows = [0; KR];
        for (i, r) in rows.iter_mut().enumerate() {
            *r = i.min(used - 1) * k.row_step;
        }
        let mut acc = [[[_mm512_setzero_ps(); KW]; KR]; R];
        // Chunks of 16 pixels outside, every (image, row) inside: the inner
        // loop is one straight step, which keeps the accumulators in
        // registers (a chunk loop inside the row loop made the compiler
        // spill them).
        for x0 in (0..p.ow).step_by(16) {
            let m = lanes(p.ow - x0);
            let mut dy = p.dy.add(o * p.dy_row + x0);
            let mut x = p.x.add(i0 * k.row_step + x0);
            for _ in 0..p.images {
                for _ in 0..p.oh {
                    if m == 0xffff {
                        step::<R, KW, KR, false>(&mut acc, dy, p.dy_row, x, &rows, m);
                    } else {
                        step::<R, KW, KR, true>(&mut acc, dy, p.dy_row, x, &rows, m);
                    }
                    dy = dy.add(p.ow);
                    x = x.add(p.wp);
                }
                dy = dy.add(p.dy_image - p.oh * p.ow);
                x = x.add(p.x_image - p.oh * p.wp);
            }
        }
        // Every accumulator is read with a constant index (a loop bounded by
        // `used` would keep `acc` in memory instead of registers), and only
        // by 512-bit (EVEX) instructions: `_mm512_reduce_add_ps` starts with
        // 256-bit VEX ones, which reach only registers 0–15, and that one
        // use confined all the accumulators there (spilling the rest).
        let mut sums = [[[0.0f32; KW]; KR]; R];
        for r in 0..R {
            for i in 0..KR {
                for j in 0..KW {
                    sums[r][i][j] = horizontal_sum(acc[r][i][j]);
                }
            }
        }
        for (r, rows) in sums.iter().enumerate() {
            for (i, row) in rows.iter().enumerate().take(used) {
                let at = dst.add(r * stride + (i0 + i) * KW);
                std::ptr::copy_nonoverlapping(row.as_ptr(), at, KW);
            }
        }
    }
}
