//! Stride-1 `f32` convolution without im2col (AVX-512 CPUs).
//!
//! Each image is zero-padded once into a flat `[C][H'][W']` buffer. For
//! stride 1 the lowered matrix's row for tap `(c, i, j)` is then just that
//! buffer read from offset `c·H'W' + i·d·W' + j·d`, so the GEMM kernel reads
//! B in place ([`conv_flat`]) instead of from an im2col copy packed a second
//! time. Output column `y·W' + x` is pixel `(y, x)`; the `W' − OW` columns of
//! each row that wrap into the next are computed and dropped. "Same"-width
//! convolutions (3 or 5 wide, output rows as wide as input rows — every
//! padded 3×3 layer) waste nothing instead: their planes are padded only
//! above and below, rows stay `W` long and contiguous, a tile is 32
//! consecutive pixels, and the lanes whose tap column falls in the left or
//! right padding are masked to zero as the rows are loaded
//! ([`conv_flat`] with a [`SameWidth`]; 7 % of a 28×28 layer's work at `W' = 30`). The input
//! gradient of a stride-1 convolution is itself one (the output gradient
//! correlated with the flipped, transposed weight), so it takes this path too.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{Conv2dParams, Geometry};
use crate::element::Element;
use crate::gemm_avx512::{
    available, conv_flat, lanes, pack_weights, same_width_supported, FlatOutput, SameWidth,
    FLAT_TILE,
};
use crate::simd_math::{as_f32, as_f32_uninit};

/// The padded layout of one group of one image and its tap offsets.
struct Flat {
    /// Padded plane width `W'` (`W` for a [`SameWidth`] layout).
    wp: usize,
    /// Output rows as wide as input rows: the planes are padded only above
    /// and below and start `front` values into the buffer ([`SameWidth`]).
    same: Option<SameWidth>,
    /// Values before the first plane.
    front: usize,
    /// Padded plane size `H'·W'`.
    plane: usize,
    /// Flat output columns `OH·W'`.
    cols: usize,
    /// Elements of the padded buffer, with slack for the last tile's reads.
    padded_len: usize,
    /// Offset of each tap `(c, i, j)` in the padded buffer.
    offsets: Vec<usize>,
}

impl Flat {
    /// The plan for `g`, or `None` when the method does not apply (another
    /// stride, 1×1 unpadded, no AVX-512) or would waste over a quarter of
    /// its work on wrapped columns.
    fn plan(g: &Geometry) -> Option<Flat> {
        if !available() || g.p.stride != [1, 1] || g.pointwise() || g.n == 0 || g.o == 0 {
            return None;
        }
        let [ph, pw] = g.p.padding;
        let [dh, dw] = g.p.dilation;
        // Geometry::new checked that the padded extents fit in isize.
        let hp = g.h + 2 * ph;
        let same = (g.ow == g.w && 2 * pw == dw * (g.kw - 1) && same_width_supported(g.kw))
            .then_some(SameWidth {
                w: g.w,
                kw: g.kw,
                pad: pw,
                dilation: dw,
            });
        // Rows `W` long with the horizontal padding masked (no wasted
        // columns), or `W'` long with the wrapped columns computed.
        let (wp, front, slack) = match same {
            Some(_) => (g.w, pw, 0),
            None => (g.w + 2 * pw, 0, (g.kw - 1) * dw + FLAT_TILE),
        };
        if same.is_none() && g.ow * 4 < wp * 3 {
            return None;
        }
        let plane = hp.checked_mul(wp)?;
        let cols = g.oh.checked_mul(if same.is_some() { g.ow } else { wp })?;
        let padded_len = g
            .cg()
            .checked_mul(plane)?
            .checked_add(slack)?
            .checked_add(front)?;
        let mut offsets = Vec::with_capacity(g.kdim());
        for c in 0..g.cg() {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    offsets.push(c * plane + i * dh * wp + j * dw);
                }
            }
        }
        Some(Flat {
            wp,
            same,
            front,
            plane,
            cols,
            padded_len,
            offsets,
        })
    }
}

/// The output of one group, shared by workers writing disjoint tiles.
#[derive(Clone, Copy)]
struct Shared(FlatOutput);
// SAFETY: each worker writes only the pixels of its own tiles; the bias is
// only read.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The output (a method, so closures capture the `Send` wrapper).
    fn get(self) -> FlatOutput {
        self.0
    }
}

/// `out ← conv2d(x, w) + bias` (`out` `[N, O, OH, OW]`, zero-filled or
/// not) when the direct method applies; `false` leaves `out` untouched.
pub(super) fn forward<T: Element>(
    x: &[T],
    g: &Geometry,
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [MaybeUninit<T>],
) -> bool {
    let (Some(x), Some(w), Some(out)) = (as_f32(x), as_f32(w), as_f32_uninit(out)) else {
        return false;
    };
    let bias = match bias.map(as_f32) {
        Some(None) => return false,
        Some(Some(b)) => Some(b),
        None => None,
    };
    let Some(flat) = Flat::plan(g) else {
        return false;
    };
    run(&flat, g, x, w, bias, out);
    true
}

/// The input gradient of a stride-1 convolution with geometry `g`, given
/// the output gradient `dy`, as the direct convolution of `dy` with the
/// flipped weight `W'[g·C/g + c][o][i][j] = W[g·O/g + o][c][kh−1−i][kw−1−j]`
/// and padding `d·(k − 1) − p`; `false` when that does not apply.
pub(super) fn input_grad<T: Element>(
    dy: &[T],
    g: &Geometry,
    w: &[T],
    dx: &mut [MaybeUninit<T>],
) -> bool {
    let (Some(dy), Some(w), Some(dx)) = (as_f32(dy), as_f32(w), as_f32_uninit(dx)) else {
        return false;
    };
    if g.p.stride != [1, 1] {
        return false;
    }
    let (Some(ph), Some(pw)) = (
        (g.p.dilation[0] * (g.kh - 1)).checked_sub(g.p.padding[0]),
        (g.p.dilation[1] * (g.kw - 1)).checked_sub(g.p.padding[1]),
    ) else {
        return false;
    };
    let (og, cg, taps) = (g.og(), g.cg(), g.kh * g.kw);
    let params = Conv2dParams {
        stride: [1, 1],
        padding: [ph, pw],
        dilation: g.p.dilation,
        groups: g.p.groups,
    };
    let Ok(t) = Geometry::new(
        "conv2d_input_grad",
        &[g.n, g.o, g.oh, g.ow],
        &[g.c, og, g.kh, g.kw],
        params,
    ) else {
        return false;
    };
    if (t.oh, t.ow) != (g.h, g.w) {
        return false;
    }
    let Some(flat) = Flat::plan(&t) else {
        return false;
    };
    let mut flipped = vec![0.0f32; w.len()];
    for gi in 0..g.p.groups {
        for o in 0..og {
            for c in 0..cg {
                let src = &w[((gi * og + o) * cg + c) * taps..][..taps];
                let dst = &mut flipped[((gi * cg + c) * og + o) * taps..][..taps];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
    run(&flat, &t, dy, &flipped, None, dx);
    true
}

/// Runs the direct method image by image (over threads when there are
/// several images, else over column tiles). Every value of `out` is
/// written (each tile stores all its valid pixels for every channel), so
/// it may start uninitialised.
fn run(
    flat: &Flat,
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    let (og, kdim) = (g.og(), g.kdim());
    // SAFETY: the weight holds O rows of kdim values; available() was checked.
    let packed: Vec<Vec<f32>> = (0..g.p.groups)
        .map(|gi| unsafe { pack_weights(og, kdim, w[gi * og * kdim..].as_ptr(), kdim) })
        .collect();
    let in_image = g.c * g.h * g.w;
    let out_image = g.o * g.oh * g.ow;
    let image = |ni: usize, y: &mut [MaybeUninit<f32>], tiles_over_threads: bool| {
        let xi = &x[ni * in_image..(ni + 1) * in_image];
        f32::with_scratch(flat.padded_len, |padded| {
            for (gi, weights) in packed.iter().enumerate() {
                // SAFETY: available() was checked (Flat::plan).
                unsafe { pad(flat, g, &xi[gi * g.cg() * g.h * g.w..], padded) };
                let planes = &mut y[gi * og * g.oh * g.ow..(gi + 1) * og * g.oh * g.ow];
                let out = FlatOutput {
                    out: planes.as_mut_ptr().cast(),
                    plane: g.oh * g.ow,
                    ow: g.ow,
                    wp: flat.wp,
                    bias: bias.map(|b| b[gi * og..].as_ptr()),
                };
                multiply(flat, og, weights, padded, out, tiles_over_threads);
            }
        });
    };
    if g.n > 1 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(out_image)
            .enumerate()
            .for_each(|(ni, y)| image(ni, y, false));
    } else {
        let threads = rayon::current_num_threads() > 1;
        out.chunks_mut(out_image)
            .enumerate()
            .for_each(|(ni, y)| image(ni, y, threads));
    }
}

/// Copies one group of one image (`[C/g, H, W]`) into the padded buffer,
/// writing every value once: the padded planes, then zeros in the slack
/// (no separate zero fill first).
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn pad(flat: &Flat, g: &Geometry, x: &[f32], padded: &mut [f32]) {
    let planes = g.cg() * flat.plane;
    let (front, rest) = padded[..flat.padded_len].split_at_mut(flat.front);
    front.fill(0.0);
    let (planes_part, slack) = rest.split_at_mut(planes);
    if flat.same.is_some() {
        // Rows W long: each plane is zero rows, the image's rows as they
        // are (one contiguous copy), zero rows.
        let ph = g.p.padding[0];
        let image = g.h * g.w;
        for (c, p) in planes_part.chunks_exact_mut(flat.plane).enumerate() {
            let (top, rest) = p.split_at_mut(ph * g.w);
            let (body, bottom) = rest.split_at_mut(image);
            top.fill(0.0);
            body.copy_from_slice(&x[c * image..(c + 1) * image]);
            bottom.fill(0.0);
        }
    } else {
        pad_planes(g, flat.wp, flat.plane, x, planes_part);
    }
    slack.fill(0.0);
}

/// Writes the `C/g` zero-padded planes (`plane` values each, rows `wp`
/// apart) of one group of one image (`[C/g, H, W]`): zero rows above and
/// below, each image row with its zero margins, every value once. Shared
/// with the weight gradient, whose padded planes have the same layout.
///
/// # Safety
/// The CPU supports AVX-512F (so the row copy inlines here).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pad_planes(
    g: &Geometry,
    wp: usize,
    plane: usize,
    x: &[f32],
    padded: &mut [f32],
) {
    let [ph, pw] = g.p.padding;
    for c in 0..g.cg() {
        let p = &mut padded[c * plane..(c + 1) * plane];
        p[..ph * wp].fill(0.0);
        p[(ph + g.h) * wp..].fill(0.0);
        for r in 0..g.h {
            let row = &mut p[(r + ph) * wp..(r + ph + 1) * wp];
            copy_row_padded(row, &x[(c * g.h + r) * g.w..][..g.w], pw);
        }
    }
}

/// The convolution of one padded group into `out`, optionally with its
/// column tiles split over threads.
fn multiply(
    flat: &Flat,
    og: usize,
    weights: &[f32],
    padded: &[f32],
    out: FlatOutput,
    threads: bool,
) {
    let tiles = flat.cols.div_ceil(FLAT_TILE);
    let out = Shared(out);
    // SAFETY: `padded` has slack for the last tile's reads past the last
    // offset (Flat::plan), `out` holds og planes of OH·OW pixels (the
    // caller's output group), and tiles write disjoint pixels.
    // (With a same-width layout, unmasked lanes read inside the planes,
    // which start `front = pad` values into `padded`.)
    let go = |range: std::ops::Range<usize>| unsafe {
        conv_flat(
            og,
            flat.cols,
            range,
            weights,
            padded.as_ptr(),
            &flat.offsets,
            flat.same,
            out.get(),
        )
    };
    if threads && tiles > 1 {
        let per = tiles.div_ceil(rayon::current_num_threads());
        (0..tiles)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|t0| go(t0..(t0 + per).min(tiles)));
    } else {
        go(0..tiles);
    }
}

/// `dst ← [0; pad] ++ src ++ [0; …]` with masked 16-lane moves: the rows
/// here are a few dozen values, where `memcpy` and `memset` calls cost
/// more than the copy itself.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn copy_row_padded(dst: &mut [f32], src: &[f32], pad: usize) {
    use std::arch::x86_64::*;
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let end = pad + src.len();
    for i in (0..dst.len()).step_by(16) {
        // Lanes l with pad ≤ i + l < pad + len read src[i + l − pad]; the
        // others are masked off (never touched, so the pointer may point
        // outside `src`) and zero.
        let (lo, hi) = (pad.saturating_sub(i).min(16), end.saturating_sub(i).min(16));
        let read = if hi > lo { lanes(hi) & !lanes(lo) } else { 0 };
        let v = _mm512_maskz_loadu_ps(read, s.wrapping_add(i).wrapping_sub(pad));
        _mm512_mask_storeu_ps(d.add(i), lanes(dst.len() - i), v);
    }
}
