//! Stride-1 `f32` convolution weight gradient as outer products over the
//! pixels (AVX-512 CPUs), without im2col.
//!
//! `dW[o][c][i][j] = Σ_n Σ_y Σ_x dY[n][o][y][x] · X'[n][c][y + i·d][x + j]`
//! with `X'` the zero-padded input. The output gradient is transposed once
//! per block of images into panels of [`OC`] output channels per pixel
//! (`[pixel][o]`, a 16×16 register transpose at a time); then for one input
//! channel the kernel keeps every tap `(i, j)` × [`OC`] output channels in
//! registers and, pixel by pixel, broadcasts the shifted input value of each
//! tap and multiply-adds it into the channel vectors: 9 broadcasts and 2
//! vector loads feed 18 multiply-adds for a 3×3 kernel, and no horizontal
//! sums are needed. (The im2col route wrote the `C·kH·kW × OH·OW` lowered
//! matrix and transposed it again while packing; a first direct version
//! vectorised along the pixels and was bound by unaligned loads of the
//! shifted rows.)
//!
//! Images are summed in blocks whose size depends on the geometry alone;
//! every weight of a block is one register accumulation in a fixed order
//! (images, rows, pixels), blocks are added in order into a fixed number of
//! partial sums, and those in order, so the result does not depend on the
//! thread count.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::direct::pad_planes;
use super::Geometry;
use crate::element::Element;
use crate::gemm_avx512::{available, lanes, transpose16};
use crate::simd_math::{as_f32, as_f32_mut};

/// Output channels per panel: two 16-lane vectors.
const OC: usize = 32;

/// Bytes of transposed output gradient one block should take (half the
/// 2 MiB L2 of current cores: every input channel's pass reads it again).
const BLOCK_BYTES: usize = 1 << 20;

/// Most images per block.
const MAX_BLOCK: usize = 16;

/// Partial sums kept at once: block `b` is added into partial `b mod LANES`
/// (blocks in order), then the partials are added in order. A fixed count,
/// never the thread count, so the bits do not depend on the threads, and
/// the memory stays `LANES` weight gradients however large the batch (one
/// partial per block grew with the batch).
const LANES: usize = 8;

/// The padded layout and the block size for one geometry.
struct Plan {
    /// Padded plane width `W'`.
    wp: usize,
    /// Padded plane size `H'·W'`.
    plane: usize,
    /// Distance between kernel rows in a plane (`d_h·W'`; the taps of a
    /// kernel row are adjacent: no dilation along the width).
    row_step: usize,
    /// Panels of [`OC`] output channels per group.
    panels: usize,
    /// Images per block.
    block: usize,
}

impl Plan {
    /// The plan for `g`, or `None` when this method does not apply (another
    /// stride, a width dilation, kernels under 4 taps or over 9 wide, no
    /// AVX-512).
    fn new(g: &Geometry) -> Option<Plan> {
        if !available() || g.p.stride != [1, 1] || g.n == 0 || g.o == 0 || g.cg() == 0 {
            return None;
        }
        // Fewer taps leave each loaded gradient vector too little work (a
        // 1×1 convolution is a plain GEMM without im2col anyway).
        if g.kh * g.kw < 4 || g.kw > 9 || g.p.dilation[1] != 1 || g.oh * g.ow == 0 {
            return None;
        }
        let [ph, pw] = g.p.padding;
        // Geometry::new checked that the padded extents fit in isize.
        let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
        let plane = hp.checked_mul(wp)?;
        let panels = g.og().div_ceil(OC);
        let per_image = g.oh.checked_mul(g.ow)?.checked_mul(panels * OC * 4)?;
        // Equal blocks, their count a multiple of 4 where the batch allows,
        // so two or four threads get the same share (7 blocks of 5 left one
        // of two threads idle for a seventh of the time). The count depends
        // on the geometry only, so the sums do not depend on the threads.
        let largest = (BLOCK_BYTES / per_image).clamp(1, MAX_BLOCK);
        let blocks = g.n.div_ceil(largest).next_multiple_of(4).min(g.n);
        let block = g.n.div_ceil(blocks);
        // The block's scratch: padded planes and transposed gradients.
        g.cg()
            .checked_mul(plane)?
            .checked_add(per_image / 4)?
            .checked_mul(block)?;
        Some(Plan {
            wp,
            plane,
            row_step: g.p.dilation[0] * wp,
            panels,
            block,
        })
    }
}

/// `dw ← ∂L/∂W` (`[O, C/g, kH, kW]`, passed in zeroed) from the output
/// gradient `dy` and the input `x` when the method applies; `false` leaves
/// `dw` untouched.
pub(super) fn weight_grad<T: Element>(dy: &[T], x: &[T], g: &Geometry, dw: &mut [T]) -> bool {
    let (Some(dy), Some(x), Some(dw)) = (as_f32(dy), as_f32(x), as_f32_mut(dw)) else {
        return false;
    };
    let Some(plan) = Plan::new(g) else {
        return false;
    };
    let wlen = dw.len();
    let blocks = g.n.div_ceil(plan.block);
    let threads = rayon::current_num_threads();
    // `dw` arrives zeroed; each block adds its sums into it or a partial.
    if blocks == 1 {
        block(&plan, g, dy, x, 0, dw, threads > 1);
        return true;
    }
    let lanes = blocks.min(LANES);
    let mut partial = vec![0.0f32; lanes * wlen];
    let lane = |(l, part): (usize, &mut [f32])| {
        for bi in (l..blocks).step_by(lanes) {
            block(&plan, g, dy, x, bi, part, false);
        }
    };
    if threads > 1 {
        partial.par_chunks_mut(wlen).enumerate().for_each(lane);
    } else {
        partial.chunks_mut(wlen).enumerate().for_each(lane);
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
// SAFETY: each worker writes only the weights of its own input channels.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Adds block `bi`'s contribution to every weight into `dw`, optionally
/// splitting the input channels over threads.
fn block(plan: &Plan, g: &Geometry, dy: &[f32], x: &[f32], bi: usize, dw: &mut [f32], par: bool) {
    let (cg, og, taps) = (g.cg(), g.og(), g.kh * g.kw);
    let (n0, n1) = (bi * plan.block, ((bi + 1) * plan.block).min(g.n));
    let images = n1 - n0;
    let (in_image, ohw) = (g.c * g.h * g.w, g.oh * g.ow);
    let padded_image = cg * plan.plane;
    let packed_image = plan.panels * ohw * OC;
    let padded_len = images * padded_image;
    f32::with_scratch(padded_len + images * packed_image, |scratch| {
        let (padded, packed) = scratch.split_at_mut(padded_len);
        for gi in 0..g.p.groups {
            for n in 0..images {
                let src = &x[(n0 + n) * in_image + gi * cg * g.h * g.w..];
                // SAFETY: available() was checked (Plan::new).
                unsafe {
                    pad_planes(
                        g,
                        plan.wp,
                        plan.plane,
                        src,
                        &mut padded[n * padded_image..][..padded_image],
                    )
                };
                let rows = &dy[((n0 + n) * g.o + gi * og) * ohw..][..og * ohw];
                // SAFETY: og rows of ohw values into panels·ohw·OC values.
                unsafe {
                    pack_gradient(
                        rows,
                        og,
                        ohw,
                        &mut packed[n * packed_image..][..packed_image],
                    )
                };
            }
            let (padded, packed) = (&*padded, &*packed);
            let out = Out(dw[gi * og * cg * taps..].as_mut_ptr());
            let channel = |c: usize| {
                for panel in 0..plan.panels {
                    let args = Args {
                        x: padded[c * plan.plane..].as_ptr(),
                        x_image: padded_image,
                        b: packed[panel * ohw * OC..].as_ptr(),
                        b_image: packed_image,
                        images,
                        oh: g.oh,
                        ow: g.ow,
                        wp: plan.wp,
                    };
                    let o0 = panel * OC;
                    let dst = Dest {
                        dw: out.get(),
                        o0,
                        channels: (og - o0).min(OC),
                        c,
                        cg,
                        kh: g.kh,
                        kw: g.kw,
                    };
                    // SAFETY: the planes and panels cover `images` images of
                    // this group, every read stays inside its padded plane,
                    // and channel c's weights are written only here.
                    unsafe { channel_grad(&args, plan.row_step, &dst) };
                }
            };
            if par && cg > 1 {
                (0..cg).into_par_iter().for_each(channel);
            } else {
                (0..cg).for_each(channel);
            }
        }
    });
}

/// Transposes `og` output-gradient rows of `ohw` pixels into panels of
/// [`OC`] channels per pixel (`out[panel][pixel][lane]`, zero past `og`).
///
/// # Safety
/// `out` holds `⌈og/OC⌉·ohw·OC` values; [`available`] is true.
#[target_feature(enable = "avx512f")]
unsafe fn pack_gradient(rows: &[f32], og: usize, ohw: usize, out: &mut [f32]) {
    let src = rows.as_ptr();
    let dst = out.as_mut_ptr();
    for o0 in (0..og.div_ceil(16) * 16).step_by(16) {
        let (panel, half) = (o0 / OC, o0 % OC);
        let channels = (og - o0).min(16);
        for q0 in (0..ohw).step_by(16) {
            let m = lanes(ohw - q0);
            let mut v = [_mm512_setzero_ps(); 16];
            for (r, row) in v.iter_mut().enumerate().take(channels) {
                *row = _mm512_maskz_loadu_ps(m, src.add((o0 + r) * ohw + q0));
            }
            transpose16(&mut v);
            for (k, col) in v.iter().enumerate().take(ohw - q0) {
                _mm512_storeu_ps(dst.add((panel * ohw + q0 + k) * OC + half), *col);
            }
        }
    }
    if !og.is_multiple_of(OC) && og % OC <= 16 {
        // The last panel's second half has no channels: zeros.
        let panel = og / OC;
        for q in 0..ohw {
            _mm512_storeu_ps(dst.add((panel * ohw + q) * OC + 16), _mm512_setzero_ps());
        }
    }
}

/// Where one input channel's products read: its padded plane and one panel
/// of transposed output gradient, for every image of the block.
struct Args {
    /// The channel's padded plane in the block's first image.
    x: *const f32,
    /// Distance between images' padded planes.
    x_image: usize,
    /// The panel in the block's first image (`[pixel][OC]`).
    b: *const f32,
    /// Distance between images' panels.
    b_image: usize,
    images: usize,
    oh: usize,
    ow: usize,
    wp: usize,
}

/// Where one tile's sums go: `dw[(o0 + l)·cg·taps + c·taps + tap]` for the
/// first `channels` lanes.
struct Dest {
    dw: *mut f32,
    o0: usize,
    channels: usize,
    c: usize,
    cg: usize,
    kh: usize,
    kw: usize,
}

/// Every tap of input channel `c` for one panel of output channels, in
/// passes of `KR` kernel rows.
///
/// # Safety
/// As [`tile`]; `d.dw` writable for the group's weights.
#[target_feature(enable = "avx512f")]
unsafe fn channel_grad(a: &Args, row_step: usize, d: &Dest) {
    macro_rules! go {
        ($kw:literal, $kr:literal) => {{
            for i0 in (0..d.kh).step_by($kr) {
                let used = (d.kh - i0).min($kr);
                // A last pass with fewer kernel rows repeats its last row's
                // reads (those sums are not stored): no reads past the plane.
                let mut rows = [0; $kr];
                for (i, r) in rows.iter_mut().enumerate() {
                    *r = (i0 + i.min(used - 1)) * row_step;
                }
                let mut sums = [[[0.0f32; OC]; $kw]; $kr];
                tile::<$kw, $kr>(a, &rows, &mut sums);
                store(d, i0, &sums[..used]);
            }
        }};
    }
    match d.kw {
        1 => go!(1, 12),
        2 => go!(2, 6),
        3 => go!(3, 3),
        4 => go!(4, 3),
        5 => go!(5, 2),
        6 => go!(6, 2),
        7 => go!(7, 1),
        8 => go!(8, 1),
        _ => go!(9, 1),
    }
}

/// Adds the tile's sums for kernel rows `i0..` to their weights.
fn store<const KW: usize>(d: &Dest, i0: usize, sums: &[[[f32; OC]; KW]]) {
    let taps = d.kh * d.kw;
    for (i, row) in sums.iter().enumerate() {
        for (j, lanes) in row.iter().enumerate() {
            let tap = (i0 + i) * d.kw + j;
            for (l, &v) in lanes.iter().enumerate().take(d.channels) {
                // SAFETY: (o0 + l < og, c < cg, tap < taps) inside the group.
                unsafe { *d.dw.add(((d.o0 + l) * d.cg + d.c) * taps + tap) += v };
            }
        }
    }
}

/// `sums[i][j][l] = Σ_n Σ_y Σ_x X'[n][y·W' + rows[i] + j + x] · B[n][y·OW + x][l]`
/// for `KR` kernel rows of `KW` taps and the panel's [`OC`] channels.
///
/// # Safety
/// `a` describes readable planes and panels for `a.images` images, each
/// `rows[i] + j + (OH − 1)·W' + OW − 1` inside its plane; [`available`].
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // constant indices keep `acc` in registers
unsafe fn tile<const KW: usize, const KR: usize>(
    a: &Args,
    rows: &[usize; KR],
    sums: &mut [[[f32; OC]; KW]; KR],
) {
    let mut acc = [[[_mm512_setzero_ps(); 2]; KW]; KR];
    for n in 0..a.images {
        let mut xr = a.x.add(n * a.x_image);
        let mut b = a.b.add(n * a.b_image);
        for _ in 0..a.oh {
            for x in 0..a.ow {
                // The panel streams from L2 (128 bytes a pixel, 9 cycles of
                // work): fetch 16 pixels ahead, or the loads stall the loop.
                let ahead = b.wrapping_add(16 * OC) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for i in 0..KR {
                    for j in 0..KW {
                        let v = _mm512_set1_ps(*xr.add(rows[i] + j + x));
                        acc[i][j][0] = _mm512_fmadd_ps(v, b0, acc[i][j][0]);
                        acc[i][j][1] = _mm512_fmadd_ps(v, b1, acc[i][j][1]);
                    }
                }
                b = b.add(OC);
            }
            xr = xr.add(a.wp);
        }
    }
    for i in 0..KR {
        for j in 0..KW {
            _mm512_storeu_ps(sums[i][j].as_mut_ptr(), acc[i][j][0]);
            _mm512_storeu_ps(sums[i][j].as_mut_ptr().add(16), acc[i][j][1]);
        }
    }
}
