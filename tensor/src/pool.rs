//! 2-D max and average pooling over NCHW batches, with the argmax indices
//! and adjoints that backward passes need.

#[cfg(target_arch = "x86_64")]
mod max2x2_avx512;

use rayon::prelude::*;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::parallel::PARALLEL_THRESHOLD;
use crate::shape::checked_numel;
#[cfg(target_arch = "x86_64")]
use crate::simd_math::{as_f32, as_f32_mut};
use crate::Tensor;

/// Window, stride and padding of a 2-D pooling (`[h, w]` pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window extent.
    pub kernel: [usize; 2],
    /// Step between windows (PyTorch defaults it to the kernel).
    pub stride: [usize; 2],
    /// Implicit padding on both sides (at most half the kernel).
    pub padding: [usize; 2],
}

impl Pool2dParams {
    /// A square window with stride equal to the window and no padding.
    pub fn new(kernel: usize) -> Self {
        Pool2dParams {
            kernel: [kernel; 2],
            stride: [kernel; 2],
            padding: [0; 2],
        }
    }

    /// Sets the stride on both axes.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = [stride; 2];
        self
    }

    /// Sets the padding on both axes.
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = [padding; 2];
        self
    }
}

struct PoolGeom {
    nc: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    p: Pool2dParams,
}

fn geometry(op: &'static str, shape: &[usize], p: Pool2dParams) -> Result<PoolGeom> {
    if shape.len() != 4 {
        return Err(Error::shape(op, &[shape], "expected input [N, C, H, W]"));
    }
    if p.kernel.contains(&0) || p.stride.contains(&0) {
        return Err(Error::invalid(
            op,
            format!(
                "kernel {:?} and stride {:?} must be positive",
                p.kernel, p.stride
            ),
        ));
    }
    if p.padding[0] > p.kernel[0] / 2 || p.padding[1] > p.kernel[1] / 2 {
        return Err(Error::invalid(
            op,
            format!(
                "padding {:?} must be at most half the kernel {:?}",
                p.padding, p.kernel
            ),
        ));
    }
    let (h, w) = (shape[2], shape[3]);
    if h == 0 || w == 0 {
        return Err(Error::shape(
            op,
            &[shape],
            "spatial extents must be positive",
        ));
    }
    // Padding is at most half the kernel, so `2·pad` cannot overflow; the
    // padded extent can (for a caller-given input shape).
    let padded = |x: usize, pad: usize| {
        x.checked_add(2 * pad).ok_or_else(|| {
            Error::shape(
                op,
                &[shape],
                format!("padded extent {x} + 2·{pad} overflows"),
            )
        })
    };
    let (ph, pw) = (padded(h, p.padding[0])?, padded(w, p.padding[1])?);
    let out = |x: usize, k: usize, s: usize| x.checked_sub(k).map(|v| v / s + 1);
    let (Some(oh), Some(ow)) = (
        out(ph, p.kernel[0], p.stride[0]),
        out(pw, p.kernel[1], p.stride[1]),
    ) else {
        return Err(Error::shape(
            op,
            &[shape],
            format!("window {:?} is larger than the padded input", p.kernel),
        ));
    };
    checked_numel(op, &[shape[0], shape[1], oh, ow])?;
    Ok(PoolGeom {
        nc: shape[0] * shape[1],
        h,
        w,
        oh,
        ow,
        p,
    })
}

/// Runs `f(plane_index, out_plane)` over every N·C plane, in parallel when large.
fn per_plane<T: Send>(
    out: &mut [T],
    plane: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if plane == 0 {
        return;
    }
    if work >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    } else {
        out.chunks_mut(plane).enumerate().for_each(|(i, o)| f(i, o));
    }
}

/// The common 2×2, stride 2, unpadded max pooling of one plane, without
/// window clipping; same tie and NaN rules as the general loop.
fn max_pool_2x2<T: Element>(
    plane: &[T],
    w: usize,
    oh: usize,
    ow: usize,
    vals: &mut [T],
    args: &mut [usize],
) {
    /// Select-based step of the running maximum (no branch to mispredict on
    /// random activations): takes `v` if it is larger, or the first NaN.
    #[inline(always)]
    fn pick<T: Element>(best: T, code: usize, v: T, v_code: usize) -> (T, usize) {
        let take = (v > best) | (v.is_nan() & !best.is_nan());
        (
            if take { v } else { best },
            if take { v_code } else { code },
        )
    }
    for y in 0..oh {
        let (r0, r1) = (2 * y * w, (2 * y + 1) * w);
        let top = &plane[r0..r0 + 2 * ow];
        let bottom = &plane[r1..r1 + 2 * ow];
        let (v, a) = (
            &mut vals[y * ow..(y + 1) * ow],
            &mut args[y * ow..(y + 1) * ow],
        );
        for (xo, (v, a)) in v.iter_mut().zip(a.iter_mut()).enumerate() {
            let c = 2 * xo;
            // Window codes 0..4 in row-major order; turned into a flat
            // index once at the end.
            let (m, k) = pick(top[c], 0, top[c + 1], 1);
            let (m, k) = pick(m, k, bottom[c], 2);
            let (m, k) = pick(m, k, bottom[c + 1], 3);
            *v = m;
            *a = r0 + c + (k & 1) + (k >> 1) * w;
        }
    }
}

impl<T: Element> Tensor<T> {
    /// Max pooling (`torch.nn.functional.max_pool2d` with
    /// `return_indices=True`); padding acts as −∞. Indices are flat
    /// positions `h·W + w` inside each input plane, as PyTorch's.
    pub fn max_pool2d(&self, params: Pool2dParams) -> Result<(Self, Tensor<usize>)> {
        let g = geometry("max_pool2d", self.shape(), params)?;
        let (ohw, hw) = (g.oh * g.ow, g.h * g.w);
        let x = self.as_slice();
        let (oh, ow, w) = (g.oh, g.ow, g.w);
        let [kh, kw] = g.p.kernel;
        let [sh, sw] = g.p.stride;
        let [ph, pw] = g.p.padding;
        // Window `[start, end)` along one axis, clipped to the input; never
        // empty because padding is at most half the kernel.
        let clip = |o: usize, s: usize, p: usize, k: usize, n: usize| {
            let start = (o * s).saturating_sub(p);
            (start, (o * s + k).saturating_sub(p).min(n))
        };
        let plane_kernel = |pi: usize, vals: &mut [T], args: &mut [usize]| {
            let plane = &x[pi * hw..(pi + 1) * hw];
            if g.p == Pool2dParams::new(2) {
                #[cfg(target_arch = "x86_64")]
                if let (Some(p), Some(v)) = (as_f32(plane), as_f32_mut(vals)) {
                    if crate::gemm_avx512::available() && size_of::<usize>() == 8 {
                        // SAFETY: 2·oh rows of w ≥ 2·ow values; AVX-512F
                        // checked; usize is 64 bits.
                        return unsafe { max2x2_avx512::max_pool_2x2(p, w, oh, ow, v, args) };
                    }
                }
                return max_pool_2x2(plane, w, oh, ow, vals, args);
            }
            for y in 0..oh {
                let (hs, he) = clip(y, sh, ph, kh, g.h);
                for xo in 0..ow {
                    let (ws, we) = clip(xo, sw, pw, kw, w);
                    let mut arg = hs * w + ws;
                    let mut best = plane[arg];
                    for ih in hs..he {
                        let row = &plane[ih * w..ih * w + we];
                        for (iw, &v) in row.iter().enumerate().skip(ws) {
                            // The first NaN wins, as in PyTorch; otherwise
                            // the first maximum in row-major window order.
                            if v > best || (v.is_nan() && !best.is_nan()) {
                                best = v;
                                arg = ih * w + iw;
                            }
                        }
                    }
                    vals[y * ow + xo] = best;
                    args[y * ow + xo] = arg;
                }
            }
        };
        let mut vals = crate::buffers::filled(g.nc * ohw, T::zero());
        let mut args = crate::buffers::filled(g.nc * ohw, 0usize);
        if ohw > 0 {
            if self.numel() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
                vals.par_chunks_mut(ohw)
                    .zip(args.par_chunks_mut(ohw))
                    .enumerate()
                    .for_each(|(pi, (v, a))| plane_kernel(pi, v, a));
            } else {
                vals.chunks_mut(ohw)
                    .zip(args.chunks_mut(ohw))
                    .enumerate()
                    .for_each(|(pi, (v, a))| plane_kernel(pi, v, a));
            }
        }
        let shape = vec![self.shape()[0], self.shape()[1], oh, ow];
        Ok((
            Tensor::from_parts(vals, shape.clone()),
            Tensor::from_parts(args, shape),
        ))
    }

    /// Adjoint of [`Tensor::max_pool2d`]: routes each output gradient (`self`)
    /// to the input position its window picked.
    pub fn max_pool2d_backward(
        &self,
        indices: &Tensor<usize>,
        input_shape: &[usize],
    ) -> Result<Self> {
        let op = "max_pool2d_backward";
        if input_shape.len() != 4
            || self.shape() != indices.shape()
            || self.rank() != 4
            || self.shape()[..2] != input_shape[..2]
        {
            return Err(Error::shape(
                op,
                &[self.shape(), indices.shape(), input_shape],
                "gradient and indices must be [N, C, OH, OW] matching the input's N and C",
            ));
        }
        let n = checked_numel(op, input_shape)?;
        // Either N·C > 0 and both planes fit in their tensors' element counts,
        // or there are no planes and the plane sizes are never used.
        let hw = input_shape[2].saturating_mul(input_shape[3]);
        let ohw = self.shape()[2].saturating_mul(self.shape()[3]);
        if let Some(&bad) = indices.as_slice().iter().find(|&&i| i >= hw) {
            return Err(Error::IndexOutOfRange {
                op,
                index: bad,
                size: hw,
                axis: 2,
            });
        }
        let mut dx = crate::buffers::filled(n, T::zero());
        let (dy, idx) = (self.as_slice(), indices.as_slice());
        per_plane(&mut dx, hw, n, |pi, d| {
            for k in pi * ohw..(pi + 1) * ohw {
                d[idx[k]] += dy[k];
            }
        });
        Ok(Tensor::from_parts(dx, input_shape.to_vec()))
    }

    /// Average pooling (`torch.nn.functional.avg_pool2d`); with
    /// `count_include_pad` the divisor is the full window, otherwise only the
    /// positions inside the input.
    pub fn avg_pool2d(&self, params: Pool2dParams, count_include_pad: bool) -> Result<Self> {
        let g = geometry("avg_pool2d", self.shape(), params)?;
        let (ohw, hw) = (g.oh * g.ow, g.h * g.w);
        let x = self.as_slice();
        let mut out = crate::buffers::filled(g.nc * ohw, T::zero());
        per_plane(&mut out, ohw, self.numel(), |pi, o| {
            let plane = &x[pi * hw..(pi + 1) * hw];
            for y in 0..g.oh {
                for xo in 0..g.ow {
                    let (hs, he, ws, we, div) = window(&g, y, xo, count_include_pad);
                    let mut s = T::zero();
                    for ih in hs..he {
                        for iw in ws..we {
                            s += plane[ih * g.w + iw];
                        }
                    }
                    o[y * g.ow + xo] = s / T::from_usize(div).unwrap_or_else(T::one);
                }
            }
        });
        Ok(Tensor::from_parts(
            out,
            vec![self.shape()[0], self.shape()[1], g.oh, g.ow],
        ))
    }

    /// Adjoint of [`Tensor::avg_pool2d`] given the output gradient `self`.
    pub fn avg_pool2d_backward(
        &self,
        input_shape: &[usize],
        params: Pool2dParams,
        count_include_pad: bool,
    ) -> Result<Self> {
        let op = "avg_pool2d_backward";
        let g = geometry(op, input_shape, params)?;
        if self.shape() != [input_shape[0], input_shape[1], g.oh, g.ow] {
            return Err(Error::shape(
                op,
                &[self.shape(), input_shape],
                format!(
                    "gradient must have shape [{}, {}, {}, {}]",
                    input_shape[0], input_shape[1], g.oh, g.ow
                ),
            ));
        }
        let (ohw, hw) = (g.oh * g.ow, g.h * g.w);
        let dy = self.as_slice();
        let mut dx = crate::buffers::filled(g.nc * hw, T::zero());
        per_plane(&mut dx, hw, g.nc * hw, |pi, d| {
            for y in 0..g.oh {
                for xo in 0..g.ow {
                    let (hs, he, ws, we, div) = window(&g, y, xo, count_include_pad);
                    let v =
                        dy[pi * ohw + y * g.ow + xo] / T::from_usize(div).unwrap_or_else(T::one);
                    for ih in hs..he {
                        for iw in ws..we {
                            d[ih * g.w + iw] += v;
                        }
                    }
                }
            }
        });
        Ok(Tensor::from_parts(dx, input_shape.to_vec()))
    }
}

/// The clipped window `[hs, he) × [ws, we)` of output `(y, x)` and its divisor.
fn window(
    g: &PoolGeom,
    y: usize,
    x: usize,
    count_include_pad: bool,
) -> (usize, usize, usize, usize, usize) {
    let hs = (y * g.p.stride[0]) as isize - g.p.padding[0] as isize;
    let ws = (x * g.p.stride[1]) as isize - g.p.padding[1] as isize;
    let he = (hs + g.p.kernel[0] as isize).min((g.h + g.p.padding[0]) as isize);
    let we = (ws + g.p.kernel[1] as isize).min((g.w + g.p.padding[1]) as isize);
    let padded = ((he - hs) * (we - ws)) as usize;
    let (hs, ws) = (hs.max(0) as usize, ws.max(0) as usize);
    let (he, we) = ((he as usize).min(g.h), (we as usize).min(g.w));
    let inside = he.saturating_sub(hs) * we.saturating_sub(ws);
    (
        hs,
        he.max(hs),
        ws,
        we.max(ws),
        if count_include_pad {
            padded
        } else {
            inside.max(1)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_values_and_indices() {
        let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
        let (y, i) = x.max_pool2d(Pool2dParams::new(2)).unwrap();
        assert_eq!(y.to_vec(), vec![5., 7., 13., 15.]);
        assert_eq!(i.to_vec(), vec![5, 7, 13, 15]);
        let g = Tensor::<f32>::ones(&[1, 1, 2, 2]).unwrap();
        let dx = g.max_pool2d_backward(&i, &[1, 1, 4, 4]).unwrap();
        assert_eq!(dx.as_slice().iter().sum::<f32>(), 4.0);
        assert_eq!(dx.get(&[0, 0, 1, 1]).unwrap(), 1.0);
    }

    #[test]
    fn avg_pool_padding_divisor() {
        let x = Tensor::<f32>::ones(&[1, 1, 2, 2]).unwrap();
        let p = Pool2dParams::new(2).with_padding(1);
        // Each 2×2 window touches exactly one real element.
        assert_eq!(x.avg_pool2d(p, true).unwrap().to_vec(), vec![0.25; 4]);
        assert_eq!(x.avg_pool2d(p, false).unwrap().to_vec(), vec![1.0; 4]);
    }

    #[test]
    fn pool_errors() {
        let x = Tensor::<f32>::ones(&[1, 1, 2, 2]).unwrap();
        assert!(x.max_pool2d(Pool2dParams::new(3)).is_err());
        assert!(x.max_pool2d(Pool2dParams::new(2).with_padding(2)).is_err());
        assert!(x.max_pool2d(Pool2dParams::new(0)).is_err());
        assert!(x
            .reshape(&[2, 2])
            .unwrap()
            .avg_pool2d(Pool2dParams::new(1), true)
            .is_err());
    }
}
