//! Convolution (cross-correlation, as PyTorch) in 1-D and 2-D with stride,
//! padding, dilation and groups, plus its two adjoints: the gradient with
//! respect to the input (a transposed convolution) and with respect to the
//! weight (the correlation of input and output gradient).
//!
//! Layout: NCHW input, weight `[out, in/groups, kh, kw]`. Each image is
//! lowered with im2col into a per-thread scratch buffer (no allocation per
//! call once warm) and multiplied by the weight with GEMM; 1×1 stride-1
//! unpadded convolutions skip the lowering. Stride-1 `f32` convolutions on
//! AVX-512 CPUs skip it too, forward and input gradient alike: the kernel
//! reads the lowered rows straight from a zero-padded copy of the image
//! ([`direct`]), and their weight gradient is accumulated as outer products
//! of each pixel's output-gradient channels with the shifted input values
//! of every tap ([`weight_grad`]). Images are spread over threads.

#[cfg(target_arch = "x86_64")]
mod direct;
#[cfg(target_arch = "x86_64")]
mod weight_grad;

use rayon::prelude::*;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::matmul::{gemm_parallel, MatRef};
use crate::shape::checked_numel;
use crate::Tensor;

/// Stride, padding, dilation and groups of a 2-D convolution (`[h, w]` pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output positions.
    pub stride: [usize; 2],
    /// Zeros added on both sides of each spatial axis.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Number of channel groups; input and output channels must divide by it.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Parameters with the same stride and padding on both axes.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams {
            stride: [stride; 2],
            padding: [padding; 2],
            ..Default::default()
        }
    }

    /// Sets the dilation on both axes.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = [dilation; 2];
        self
    }

    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
}

/// Stride, padding, dilation and groups of a 1-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dParams {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on both sides.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Number of channel groups.
    pub groups: usize,
}

impl Default for Conv1dParams {
    fn default() -> Self {
        Conv1dParams {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv1dParams {
    fn to_2d(self) -> Conv2dParams {
        Conv2dParams {
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// Output extent of one spatial axis, or `None` if the kernel does not fit.
pub fn conv_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let padded = input.checked_add(padding.checked_mul(2)?)?;
    if stride == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Validated geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: Conv2dParams,
}

impl Geometry {
    fn new(op: &'static str, input: &[usize], weight: &[usize], p: Conv2dParams) -> Result<Self> {
        if input.len() != 4 || weight.len() != 4 {
            return Err(Error::shape(
                op,
                &[input, weight],
                "expected input [N, C, H, W] and weight [O, C/groups, kH, kW]",
            ));
        }
        if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
            return Err(Error::invalid(
                op,
                format!(
                    "stride {:?}, dilation {:?} and groups {} must be positive",
                    p.stride, p.dilation, p.groups
                ),
            ));
        }
        let (n, c, h, w) = (input[0], input[1], input[2], input[3]);
        let (o, cg, kh, kw) = (weight[0], weight[1], weight[2], weight[3]);
        if c % p.groups != 0 || o % p.groups != 0 {
            return Err(Error::shape(
                op,
                &[input, weight],
                format!(
                    "{c} input and {o} output channels must both divide by groups = {}",
                    p.groups
                ),
            ));
        }
        match cg.checked_mul(p.groups) {
            Some(expected) if expected == c => {}
            expected => {
                return Err(Error::shape(
                    op,
                    &[input, weight],
                    match expected {
                        Some(e) => format!("weight expects {e} input channels, input has {c}"),
                        None => format!(
                            "weight expects {cg} × {} input channels (overflows), input has {c}",
                            p.groups
                        ),
                    },
                ));
            }
        }
        if kh == 0 || kw == 0 {
            return Err(Error::shape(
                op,
                &[input, weight],
                "kernel extents must be positive",
            ));
        }
        let oh = conv_output_size(h, kh, p.stride[0], p.padding[0], p.dilation[0]);
        let ow = conv_output_size(w, kw, p.stride[1], p.padding[1], p.dilation[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(Error::shape(op, &[input, weight], format!("kernel (dilated) is larger than the padded input (padding {:?}, dilation {:?})", p.padding, p.dilation)));
        };
        // Index arithmetic in the kernels runs in `isize` over the padded
        // extent (`y·s + i·d − p`), so both padded extents and both strides
        // must fit; every product the kernels form is checked here.
        let too_large = || Error::TooLarge {
            op,
            shape: input.to_vec(),
        };
        for (extent, pad, stride) in [
            (h, p.padding[0], p.stride[0]),
            (w, p.padding[1], p.stride[1]),
        ] {
            let padded = pad.checked_mul(2).and_then(|p2| extent.checked_add(p2));
            if padded.is_none_or(|v| v > isize::MAX as usize) || stride > isize::MAX as usize {
                return Err(too_large());
            }
        }
        checked_numel(op, &[n, o, oh, ow])?;
        checked_numel(op, &[n, c, h, w])?;
        checked_numel(op, &[cg, kh, kw, oh, ow])?;
        checked_numel(op, &[o, cg, kh, kw])?;
        Ok(Geometry {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            p,
        })
    }

    fn cg(&self) -> usize {
        self.c / self.p.groups
    }
    fn og(&self) -> usize {
        self.o / self.p.groups
    }
    /// Rows of the lowered matrix of one group: `C/g · kh · kw`.
    fn kdim(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1×1 stride-1 unpadded convolution: the input already is the lowered matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == [1, 1] && self.p.padding == [0, 0]
    }
}

/// For kernel tap offset `off = j·d − p` and stride `s`, the range of output
/// columns `[x0, x1)` whose input column `x·s + off` lies in `[0, w)`.
#[inline]
fn valid_range(off: isize, s: usize, w: usize, ow: usize) -> (usize, usize) {
    let s = s as isize;
    let x0 = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
    let x1 = if (w as isize) - off <= 0 {
        0
    } else {
        (((w as isize) - off) + s - 1) / s
    };
    let x0 = (x0 as usize).min(ow);
    (x0, (x1 as usize).clamp(x0, ow))
}

/// Lowers one group of one image (`x`: `[C/g, H, W]`) into `col`:
/// `[C/g·kh·kw, OH·OW]`, row `(c·kh + i)·kw + j`.
fn im2col<T: Element>(x: &[T], g: &Geometry, col: &mut [T]) {
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    let [sh, sw] = g.p.stride;
    let [ph, pw] = g.p.padding;
    let [dh, dw] = g.p.dilation;
    let ohw = oh * ow;
    for c in 0..g.cg() {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = ((c * g.kh + i) * g.kw + j) * ohw;
                let dst = &mut col[row..row + ohw];
                let offw = (j * dw) as isize - pw as isize;
                let (x0, x1) = valid_range(offw, sw, w, ow);
                for y in 0..oh {
                    let ih = (y * sh + i * dh) as isize - ph as isize;
                    let d = &mut dst[y * ow..(y + 1) * ow];
                    if ih < 0 || ih >= h as isize {
                        d.fill(T::zero());
                        continue;
                    }
                    let src = &plane[ih as usize * w..(ih as usize + 1) * w];
                    d[..x0].fill(T::zero());
                    d[x1..].fill(T::zero());
                    if x1 <= x0 {
                        // No tap of this row lands inside the input.
                    } else if sw == 1 {
                        let s0 = (x0 as isize + offw) as usize;
                        d[x0..x1].copy_from_slice(&src[s0..s0 + (x1 - x0)]);
                    } else {
                        for (xo, v) in d[x0..x1].iter_mut().enumerate() {
                            *v = src[(((x0 + xo) * sw) as isize + offw) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the lowered gradient `col` back into one group of one image `dx`
/// (`[C/g, H, W]`): the adjoint of [`im2col`].
fn col2im<T: Element>(col: &[T], g: &Geometry, dx: &mut [T]) {
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    let [sh, sw] = g.p.stride;
    let [ph, pw] = g.p.padding;
    let [dh, dw] = g.p.dilation;
    let ohw = oh * ow;
    for c in 0..g.cg() {
        let plane = &mut dx[c * h * w..(c + 1) * h * w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = ((c * g.kh + i) * g.kw + j) * ohw;
                let src = &col[row..row + ohw];
                let offw = (j * dw) as isize - pw as isize;
                let (x0, x1) = valid_range(offw, sw, w, ow);
                for y in 0..oh {
                    let ih = (y * sh + i * dh) as isize - ph as isize;
                    if ih < 0 || ih >= h as isize {
                        continue;
                    }
                    let d = &mut plane[ih as usize * w..(ih as usize + 1) * w];
                    let s = &src[y * ow..(y + 1) * ow];
                    if x1 <= x0 {
                        continue;
                    }
                    if sw == 1 {
                        let d0 = (x0 as isize + offw) as usize;
                        for (dv, &sv) in d[d0..d0 + (x1 - x0)].iter_mut().zip(&s[x0..x1]) {
                            *dv += sv;
                        }
                    } else {
                        for (xo, &sv) in s.iter().enumerate().take(x1).skip(x0) {
                            let iw = ((xo * sw) as isize + offw) as usize;
                            d[iw] += sv;
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f(image_index, out_image)` for every image, over threads when
/// there are several images; `f` gets `true` when it may itself thread.
fn for_each_image<T: Element>(
    out: &mut [T],
    per_image: usize,
    n: usize,
    f: impl Fn(usize, &mut [T], bool) + Sync + Send,
) {
    if per_image == 0 {
        return;
    }
    if n > 1 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(per_image)
            .enumerate()
            .for_each(|(i, o)| f(i, o, false));
    } else {
        out.chunks_mut(per_image)
            .enumerate()
            .for_each(|(i, o)| f(i, o, true));
    }
}

/// `C[m×n] (+)= A·B` on one thread or, when allowed, several.
///
/// # Safety
/// As [`gemm_parallel`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<T: Element>(
    threaded: bool,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    beta: T,
    c: &mut [T],
) {
    if threaded {
        // SAFETY: forwarded.
        unsafe { gemm_parallel(m, k, n, T::one(), a, b, beta, c) }
    } else {
        // SAFETY: forwarded; c is m×n row-major.
        unsafe {
            T::gemm_raw(
                m,
                k,
                n,
                T::one(),
                a.ptr,
                a.rs,
                a.cs,
                b.ptr,
                b.rs,
                b.cs,
                beta,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    }
}

impl<T: Element> Tensor<T> {
    /// 2-D convolution (cross-correlation) of an NCHW batch, with an optional
    /// per-output-channel bias fused into the GEMM (`torch.nn.functional.conv2d`).
    ///
    /// # Shapes
    /// input `[N, C, H, W]`, weight `[O, C/groups, kH, kW]`, bias `[O]` →
    /// `[N, O, OH, OW]` with `OH = ⌊(H + 2p − d·(kH − 1) − 1)/s⌋ + 1`.
    pub fn conv2d(&self, weight: &Self, bias: Option<&Self>, params: Conv2dParams) -> Result<Self> {
        let g = Geometry::new("conv2d", self.shape(), weight.shape(), params)?;
        if let Some(b) = bias {
            if b.shape() != [g.o] {
                return Err(Error::shape(
                    "conv2d",
                    &[weight.shape(), b.shape()],
                    format!("bias must have shape [{}]", g.o),
                ));
            }
        }
        let (ohw, kdim, og, cg) = (g.ohw(), g.kdim(), g.og(), g.cg());
        let x = self.as_slice();
        let wt = weight.as_slice();
        let len = g.n * g.o * ohw;
        #[cfg(target_arch = "x86_64")]
        {
            // The direct method writes every output value: no zero fill.
            let mut out = crate::buffers::uninit::<T>(len);
            let bias = bias.map(|b| b.as_slice());
            if direct::forward(x, &g, wt, bias, &mut out.spare_capacity_mut()[..len]) {
                // SAFETY: forward wrote all `len` values.
                unsafe { out.set_len(len) };
                return Ok(Tensor::from_parts(out, vec![g.n, g.o, g.oh, g.ow]));
            }
            crate::buffers::recycle(out);
        }
        let mut out = crate::buffers::filled(len, T::zero());
        let in_image = g.c * g.h * g.w;
        for_each_image(&mut out, g.o * ohw, g.n, |ni, y, threaded| {
            let beta = match bias {
                Some(b) => {
                    for (oc, row) in y.chunks_mut(ohw).enumerate() {
                        row.fill(b.as_slice()[oc]);
                    }
                    T::one()
                }
                None => T::zero(),
            };
            let xi = &x[ni * in_image..(ni + 1) * in_image];
            for gi in 0..g.p.groups {
                let xg = &xi[gi * cg * g.h * g.w..(gi + 1) * cg * g.h * g.w];
                let yg = &mut y[gi * og * ohw..(gi + 1) * og * ohw];
                let a = MatRef {
                    ptr: wt[gi * og * kdim..].as_ptr(),
                    rs: kdim as isize,
                    cs: 1,
                };
                if g.pointwise() {
                    let b = MatRef {
                        ptr: xg.as_ptr(),
                        rs: ohw as isize,
                        cs: 1,
                    };
                    // SAFETY: weight group og×kdim, input group kdim×ohw.
                    unsafe { gemm(threaded, og, kdim, ohw, a, b, beta, yg) };
                } else {
                    T::with_scratch(kdim * ohw, |col| {
                        im2col(xg, &g, col);
                        let b = MatRef {
                            ptr: col.as_ptr(),
                            rs: ohw as isize,
                            cs: 1,
                        };
                        // SAFETY: weight group og×kdim, col kdim×ohw.
                        unsafe { gemm(threaded, og, kdim, ohw, a, b, beta, yg) };
                    });
                }
            }
        });
        Ok(Tensor::from_parts(out, vec![g.n, g.o, g.oh, g.ow]))
    }

    /// Gradient of [`Tensor::conv2d`] with respect to its input, given the
    /// output gradient `self` (`[N, O, OH, OW]`): a transposed convolution.
    pub fn conv2d_input_grad(
        &self,
        weight: &Self,
        input_shape: &[usize],
        params: Conv2dParams,
    ) -> Result<Self> {
        let g = Geometry::new("conv2d_input_grad", input_shape, weight.shape(), params)?;
        if self.shape() != [g.n, g.o, g.oh, g.ow] {
            return Err(Error::shape(
                "conv2d_input_grad",
                &[self.shape(), input_shape, weight.shape()],
                format!(
                    "output gradient must have shape [{}, {}, {}, {}]",
                    g.n, g.o, g.oh, g.ow
                ),
            ));
        }
        let (ohw, kdim, og, cg) = (g.ohw(), g.kdim(), g.og(), g.cg());
        let in_image = g.c * g.h * g.w;
        let dy = self.as_slice();
        let wt = weight.as_slice();
        let len = g.n * in_image;
        #[cfg(target_arch = "x86_64")]
        {
            // The direct method writes every input-gradient value.
            let mut dx = crate::buffers::uninit::<T>(len);
            if direct::input_grad(dy, &g, wt, &mut dx.spare_capacity_mut()[..len]) {
                // SAFETY: input_grad wrote all `len` values.
                unsafe { dx.set_len(len) };
                return Ok(Tensor::from_parts(dx, input_shape.to_vec()));
            }
            crate::buffers::recycle(dx);
        }
        let mut dx = crate::buffers::filled(len, T::zero());
        for_each_image(&mut dx, in_image, g.n, |ni, dxi, threaded| {
            let dyi = &dy[ni * g.o * ohw..(ni + 1) * g.o * ohw];
            for gi in 0..g.p.groups {
                let dyg = MatRef {
                    ptr: dyi[gi * og * ohw..].as_ptr(),
                    rs: ohw as isize,
                    cs: 1,
                };
                // Wᵀ: kdim × og.
                let wtg = MatRef {
                    ptr: wt[gi * og * kdim..].as_ptr(),
                    rs: 1,
                    cs: kdim as isize,
                };
                let dxg = &mut dxi[gi * cg * g.h * g.w..(gi + 1) * cg * g.h * g.w];
                if g.pointwise() {
                    // SAFETY: Wᵀ kdim×og times dY og×ohw into dx kdim×ohw.
                    unsafe { gemm(threaded, kdim, og, ohw, wtg, dyg, T::zero(), dxg) };
                } else {
                    T::with_scratch(kdim * ohw, |col| {
                        // SAFETY: as above, into the lowered buffer.
                        unsafe { gemm(threaded, kdim, og, ohw, wtg, dyg, T::zero(), col) };
                        col2im(col, &g, dxg);
                    });
                }
            }
        });
        Ok(Tensor::from_parts(dx, input_shape.to_vec()))
    }

    /// Gradient of [`Tensor::conv2d`] with respect to its weight, given the
    /// output gradient `self` and the forward `input`.
    ///
    /// Images are summed in fixed blocks whose partial sums are added in
    /// order, so the result does not depend on the thread count.
    pub fn conv2d_weight_grad(
        &self,
        input: &Self,
        weight_shape: &[usize],
        params: Conv2dParams,
    ) -> Result<Self> {
        let g = Geometry::new("conv2d_weight_grad", input.shape(), weight_shape, params)?;
        if self.shape() != [g.n, g.o, g.oh, g.ow] {
            return Err(Error::shape(
                "conv2d_weight_grad",
                &[self.shape(), input.shape(), weight_shape],
                format!(
                    "output gradient must have shape [{}, {}, {}, {}]",
                    g.n, g.o, g.oh, g.ow
                ),
            ));
        }
        let (ohw, kdim, og, cg) = (g.ohw(), g.kdim(), g.og(), g.cg());
        let wlen = g.o * kdim;
        let in_image = g.c * g.h * g.w;
        let x = input.as_slice();
        let dy = self.as_slice();
        #[cfg(target_arch = "x86_64")]
        {
            let mut direct = vec![T::zero(); wlen];
            if weight_grad::weight_grad(dy, x, &g, &mut direct) {
                return Ok(Tensor::from_parts(direct, weight_shape.to_vec()));
            }
        }
        // Images per partial sum, as in the direct method.
        const BLOCK: usize = 4;
        let blocks = g.n.div_ceil(BLOCK).max(1);
        let mut partial = vec![T::zero(); blocks * wlen];
        let threaded_single = blocks == 1;
        let work = |bi: usize, dw: &mut [T]| {
            for ni in bi * BLOCK..((bi + 1) * BLOCK).min(g.n) {
                let xi = &x[ni * in_image..(ni + 1) * in_image];
                let dyi = &dy[ni * g.o * ohw..(ni + 1) * g.o * ohw];
                for gi in 0..g.p.groups {
                    let dyg = MatRef {
                        ptr: dyi[gi * og * ohw..].as_ptr(),
                        rs: ohw as isize,
                        cs: 1,
                    };
                    let dwg = &mut dw[gi * og * kdim..(gi + 1) * og * kdim];
                    let xg = &xi[gi * cg * g.h * g.w..(gi + 1) * cg * g.h * g.w];
                    if g.pointwise() {
                        let colt = MatRef {
                            ptr: xg.as_ptr(),
                            rs: 1,
                            cs: ohw as isize,
                        };
                        // SAFETY: dY og×ohw times colᵀ ohw×kdim.
                        unsafe { gemm(threaded_single, og, ohw, kdim, dyg, colt, T::one(), dwg) };
                    } else {
                        T::with_scratch(kdim * ohw, |col| {
                            im2col(xg, &g, col);
                            let colt = MatRef {
                                ptr: col.as_ptr(),
                                rs: 1,
                                cs: ohw as isize,
                            };
                            // SAFETY: dY og×ohw times colᵀ ohw×kdim.
                            unsafe {
                                gemm(threaded_single, og, ohw, kdim, dyg, colt, T::one(), dwg)
                            };
                        });
                    }
                }
            }
        };
        if wlen > 0 {
            if blocks > 1 && rayon::current_num_threads() > 1 {
                partial
                    .par_chunks_mut(wlen)
                    .enumerate()
                    .for_each(|(bi, dw)| work(bi, dw));
            } else {
                partial
                    .chunks_mut(wlen)
                    .enumerate()
                    .for_each(|(bi, dw)| work(bi, dw));
            }
        }
        let mut dw = partial[..wlen].to_vec();
        for p in partial.chunks(wlen.max(1)).skip(1) {
            for (a, &b) in dw.iter_mut().zip(p) {
                *a += b;
            }
        }
        Ok(Tensor::from_parts(dw, weight_shape.to_vec()))
    }

    fn conv1d_as_2d(&self, op: &'static str) -> Result<Self> {
        if self.rank() != 3 {
            return Err(Error::shape(
                op,
                &[self.shape()],
                "expected rank 3 ([N, C, L] or [O, C/groups, k])",
            ));
        }
        let s = self.shape();
        self.reshape(&[s[0], s[1], 1, s[2]])
    }

    fn squeeze_h(self) -> Result<Self> {
        let s = self.shape().to_vec();
        self.reshape(&[s[0], s[1], s[3]])
    }

    /// Re-labels an error of the 2-D kernel as the 1-D op with its 3-D shapes.
    fn as_conv1d_error(e: Error, op: &'static str, shapes: &[&[usize]]) -> Error {
        match e {
            Error::ShapeMismatch { reason, .. } => Error::shape(op, shapes, reason),
            Error::InvalidArgument { message, .. } => Error::invalid(op, message),
            other => other,
        }
    }

    /// 1-D convolution of an NCL batch (`torch.nn.functional.conv1d`).
    ///
    /// # Shapes
    /// input `[N, C, L]`, weight `[O, C/groups, k]`, bias `[O]` → `[N, O, L_out]`.
    pub fn conv1d(&self, weight: &Self, bias: Option<&Self>, params: Conv1dParams) -> Result<Self> {
        let x = self.conv1d_as_2d("conv1d")?;
        let w = weight.conv1d_as_2d("conv1d")?;
        x.conv2d(&w, bias, params.to_2d())
            .map_err(|e| Self::as_conv1d_error(e, "conv1d", &[self.shape(), weight.shape()]))?
            .squeeze_h()
    }

    /// Gradient of [`Tensor::conv1d`] with respect to its input.
    pub fn conv1d_input_grad(
        &self,
        weight: &Self,
        input_shape: &[usize],
        params: Conv1dParams,
    ) -> Result<Self> {
        if input_shape.len() != 3 {
            return Err(Error::shape(
                "conv1d_input_grad",
                &[input_shape],
                "expected input shape [N, C, L]",
            ));
        }
        let dy = self.conv1d_as_2d("conv1d_input_grad")?;
        let w = weight.conv1d_as_2d("conv1d_input_grad")?;
        let shape4 = [input_shape[0], input_shape[1], 1, input_shape[2]];
        dy.conv2d_input_grad(&w, &shape4, params.to_2d())
            .map_err(|e| {
                Self::as_conv1d_error(
                    e,
                    "conv1d_input_grad",
                    &[self.shape(), input_shape, weight.shape()],
                )
            })?
            .squeeze_h()
    }

    /// Gradient of [`Tensor::conv1d`] with respect to its weight.
    pub fn conv1d_weight_grad(
        &self,
        input: &Self,
        weight_shape: &[usize],
        params: Conv1dParams,
    ) -> Result<Self> {
        if weight_shape.len() != 3 {
            return Err(Error::shape(
                "conv1d_weight_grad",
                &[weight_shape],
                "expected weight shape [O, C/groups, k]",
            ));
        }
        let dy = self.conv1d_as_2d("conv1d_weight_grad")?;
        let x = input.conv1d_as_2d("conv1d_weight_grad")?;
        let shape4 = [weight_shape[0], weight_shape[1], 1, weight_shape[2]];
        dy.conv2d_weight_grad(&x, &shape4, params.to_2d())
            .map_err(|e| {
                Self::as_conv1d_error(
                    e,
                    "conv1d_weight_grad",
                    &[self.shape(), input.shape(), weight_shape],
                )
            })?
            .squeeze_h()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv2d_small_known_value() {
        // 3×3 input 1..9, 2×2 kernel of ones: each output sums a 2×2 window.
        let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3]).unwrap();
        let w = Tensor::<f32>::ones(&[1, 1, 2, 2]).unwrap();
        let y = x.conv2d(&w, None, Conv2dParams::default()).unwrap();
        assert_eq!(y.to_vec(), vec![12., 16., 24., 28.]);
        let b = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
        let yp = x.conv2d(&w, Some(&b), Conv2dParams::new(2, 1)).unwrap();
        // Padded 5×5, stride 2 → 2×2 windows at (0,0),(0,2),(2,0),(2,2) of the padded grid.
        assert_eq!(yp.to_vec(), vec![2., 6., 12., 29.]);
    }

    #[test]
    fn conv_errors() {
        let x = Tensor::<f32>::zeros(&[1, 4, 5, 5]).unwrap();
        let w = Tensor::<f32>::zeros(&[2, 3, 3, 3]).unwrap();
        let e = x.conv2d(&w, None, Conv2dParams::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("conv2d: [1, 4, 5, 5] × [2, 3, 3, 3]"),
            "{e}"
        );
        let w = Tensor::<f32>::zeros(&[2, 4, 7, 7]).unwrap();
        assert!(x.conv2d(&w, None, Conv2dParams::default()).is_err());
        let w = Tensor::<f32>::zeros(&[3, 2, 3, 3]).unwrap();
        assert!(x
            .conv2d(&w, None, Conv2dParams::default().with_groups(2))
            .is_err());
        let w = Tensor::<f32>::zeros(&[2, 4, 3, 3]).unwrap();
        assert!(x.conv2d(&w, None, Conv2dParams::new(0, 0)).is_err());
        assert!(x
            .conv2d(
                &w,
                Some(&Tensor::zeros(&[3]).unwrap()),
                Conv2dParams::default()
            )
            .is_err());
        assert!(x
            .reshape(&[4, 5, 5])
            .unwrap()
            .conv2d(&w, None, Conv2dParams::default())
            .is_err());
        let empty = Tensor::<f32>::zeros(&[0, 4, 5, 5]).unwrap();
        assert_eq!(
            empty
                .conv2d(&w, None, Conv2dParams::default())
                .unwrap()
                .shape(),
            &[0, 2, 3, 3]
        );
    }

    #[test]
    fn output_narrower_than_padding() {
        // x = 0.5 (1×1), w = [1, 2, 3, 4, 5] (1×5), width padding 2: only tap 2 sees x.
        let x = Tensor::from_vec(vec![0.5f64], &[1, 1, 1, 1]).unwrap();
        let w = Tensor::from_vec(vec![1.0f64, 2., 3., 4., 5.], &[1, 1, 1, 5]).unwrap();
        let p = Conv2dParams {
            stride: [1, 1],
            padding: [0, 2],
            dilation: [1, 1],
            groups: 1,
        };
        let y = x.conv2d(&w, None, p).unwrap();
        assert_eq!(y.to_vec(), vec![1.5]);
        let g = Tensor::from_vec(vec![1.0f64], &[1, 1, 1, 1]).unwrap();
        assert_eq!(
            g.conv2d_input_grad(&w, x.shape(), p).unwrap().to_vec(),
            vec![3.0]
        );
        assert_eq!(
            g.conv2d_weight_grad(&x, w.shape(), p).unwrap().to_vec(),
            vec![0., 0., 0.5, 0., 0.]
        );
    }

    #[test]
    fn conv1d_matches_definition() {
        let x = Tensor::from_vec(vec![1.0f64, 2., 3., 4., 5.], &[1, 1, 5]).unwrap();
        let w = Tensor::from_vec(vec![1.0f64, 0., -1.], &[1, 1, 3]).unwrap();
        let y = x
            .conv1d(
                &w,
                None,
                Conv1dParams {
                    padding: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(y.to_vec(), vec![-2., -2., -2., -2., 4.]);
    }
}
