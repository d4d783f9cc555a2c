//! Stride-1 `f32` convolution without im2col (AVX-512 CPUs).
//!
//! Each image is zero-padded once into a flat `[C][H'][W']` buffer. For
//! stride 1 the lowered matrix's row for tap `(c, i, j)` is then just that
//! buffer read from offset `c·H'W' + i·d·W' + j·d`, so the GEMM kernel reads
//! B in place ([`conv_flat`]) instead of from an im2col copy packed a second
//! time. Output column `y·W' + x` is pixel `(y, x)`; the `W' − OW` columns of
//! each row that wrap into the next are computed and dropped. The input
//! gradient of a stride-1 convolution is itself one (the output gradient
//! correlated with the flipped, transposed weight), so it takes this path too.

use std::any::TypeId;

use rayon::prelude::*;

use super::{Conv2dParams, Geometry};
use crate::element::Element;
use crate::gemm_avx512::{available, conv_flat, pack_weights, FLAT_TILE};

/// The padded layout of one group of one image and its tap offsets.
struct Flat {
    /// Padded plane width `W'`.
    wp: usize,
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
        let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
        if g.ow * 4 < wp * 3 {
            return None;
        }
        let plane = hp.checked_mul(wp)?;
        let cols = g.oh.checked_mul(wp)?;
        let slack = (g.kw - 1) * dw + FLAT_TILE;
        let padded_len = g.cg().checked_mul(plane)?.checked_add(slack)?;
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
            plane,
            cols,
            padded_len,
            offsets,
        })
    }
}

/// A raw output pointer shared by workers writing disjoint column tiles.
#[derive(Clone, Copy)]
struct Columns(*mut f32);
// SAFETY: each worker writes only the columns of its own tiles.
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

impl Columns {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

fn as_f32<T: Element>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32, checked by TypeId.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

fn as_f32_mut<T: Element>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32, checked by TypeId.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}

/// `out ← conv2d(x, w) + bias` (`out` `[N, O, OH, OW]`, zero-filled or
/// not) when the direct method applies; `false` leaves `out` untouched.
pub(super) fn forward<T: Element>(
    x: &[T],
    g: &Geometry,
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) -> bool {
    let (Some(x), Some(w), Some(out)) = (as_f32(x), as_f32(w), as_f32_mut(out)) else {
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
pub(super) fn input_grad<T: Element>(dy: &[T], g: &Geometry, w: &[T], dx: &mut [T]) -> bool {
    let (Some(dy), Some(w), Some(dx)) = (as_f32(dy), as_f32(w), as_f32_mut(dx)) else {
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
/// several images, else over column tiles).
fn run(flat: &Flat, g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (og, kdim) = (g.og(), g.kdim());
    // SAFETY: the weight holds O rows of kdim values; available() was checked.
    let packed: Vec<Vec<f32>> = (0..g.p.groups)
        .map(|gi| unsafe { pack_weights(og, kdim, w[gi * og * kdim..].as_ptr(), kdim) })
        .collect();
    let in_image = g.c * g.h * g.w;
    let out_image = g.o * g.oh * g.ow;
    let image = |ni: usize, y: &mut [f32], tiles_over_threads: bool| {
        let xi = &x[ni * in_image..(ni + 1) * in_image];
        f32::with_scratch(flat.padded_len + og * flat.cols, |buf| {
            let (padded, cols) = buf.split_at_mut(flat.padded_len);
            for (gi, weights) in packed.iter().enumerate() {
                pad(flat, g, &xi[gi * g.cg() * g.h * g.w..], padded);
                multiply(flat, og, weights, padded, cols, tiles_over_threads);
                for o in 0..og {
                    let b = bias.map(|b| b[gi * og + o]);
                    let rows = &mut y[(gi * og + o) * g.oh * g.ow..][..g.oh * g.ow];
                    for (r, dst) in rows.chunks_mut(g.ow).enumerate() {
                        let src = &cols[o * flat.cols + r * flat.wp..][..g.ow];
                        match b {
                            Some(b) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = s + b),
                            None => dst.copy_from_slice(src),
                        }
                    }
                }
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

/// Copies one group of one image (`[C/g, H, W]`) into the zeroed padded buffer.
fn pad(flat: &Flat, g: &Geometry, x: &[f32], padded: &mut [f32]) {
    let [ph, pw] = g.p.padding;
    padded.fill(0.0);
    for c in 0..g.cg() {
        for r in 0..g.h {
            let dst = c * flat.plane + (r + ph) * flat.wp + pw;
            padded[dst..dst + g.w].copy_from_slice(&x[(c * g.h + r) * g.w..][..g.w]);
        }
    }
}

/// `cols ← W·B` over the flat output columns, optionally split over threads.
fn multiply(
    flat: &Flat,
    og: usize,
    weights: &[f32],
    padded: &[f32],
    cols: &mut [f32],
    threads: bool,
) {
    let tiles = flat.cols.div_ceil(FLAT_TILE);
    let out = Columns(cols.as_mut_ptr());
    // SAFETY: `padded` has slack for the last tile's reads past the last
    // offset (Flat::plan), `cols` holds og rows of flat.cols values, and
    // tiles write disjoint columns.
    let go = |range: std::ops::Range<usize>| unsafe {
        conv_flat(
            og,
            flat.cols,
            range,
            weights,
            padded.as_ptr(),
            &flat.offsets,
            out.get(),
            flat.cols,
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
