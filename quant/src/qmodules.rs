//! Quantised execution of Linear and Conv2d layers, installed as
//! [`InferenceKernel`]s: int8 weights (per tensor or per output channel)
//! with static (calibrated) or dynamic (per batch) u8 activations, and
//! weight-only 4-bit blocks (GGML's Q4_0). Weights are quantised and packed
//! once, at conversion.

use anneal_autograd::Param;
use anneal_layers::{Conv2d, InferenceKernel, Linear, Padding};
use anneal_tensor::{Error, Result, Tensor};
use rayon::prelude::*;

use crate::kernels::{
    choose_qparams_u8, gemm_u8i8_f32, linear_dynamic_int8, matmul_q4_0, matmul_q8_0,
    quantize_weights_i8_per_channel, AffineU8, PackedWeightsI8, Q4Matrix, Q8Matrix, Requant,
};

/// How a quantised layer gets its activation quantisation parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActivationQuant {
    /// Fixed parameters from calibration (static quantisation).
    Static(AffineU8),
    /// Parameters from each batch's own min/max (dynamic quantisation).
    Dynamic,
}

/// Symmetric int8 weights `[n, k]`: per output channel, or one scale for the
/// whole tensor (`s = max|w|/127`, codes in −127..127).
fn quantize_weights(
    w: &[f32],
    n: usize,
    k: usize,
    per_channel: bool,
) -> Result<(Vec<i8>, Vec<f32>)> {
    if per_channel {
        return quantize_weights_i8_per_channel(w, n, k);
    }
    if let Some((i, v)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            "quantize_weights",
            format!("weight {i} is {v}"),
        ));
    }
    let m = w.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let s = if m > 0.0 {
        (m / 127.0).max(f32::EPSILON)
    } else {
        1.0
    };
    let q = w
        .iter()
        .map(|&v| (v / s).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    Ok((q, vec![s]))
}

fn quantize_u8(x: &[f32], p: AffineU8, out: &mut [u8]) {
    let inv = 1.0 / p.scale;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = ((v * inv).round_ties_even() + p.zero_point as f32).clamp(0.0, 255.0) as u8;
    }
}

fn activation_params(act: ActivationQuant, x: &[f32]) -> Result<AffineU8> {
    match act {
        ActivationQuant::Static(p) => Ok(p),
        ActivationQuant::Dynamic => {
            let (lo, hi) = x
                .iter()
                .fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            choose_qparams_u8(lo, hi)
        }
    }
}

/// Int8 execution of a Linear layer.
pub struct QLinearKernel {
    packed: PackedWeightsI8,
    w_scales: Vec<f32>,
    bias: Option<Vec<f32>>,
    act: ActivationQuant,
    n: usize,
    k: usize,
    per_channel: bool,
}

impl QLinearKernel {
    /// Quantises and packs `layer`'s weight.
    pub fn new(layer: &Linear<f32>, per_channel: bool, act: ActivationQuant) -> Result<Self> {
        let (n, k) = linear_dims(layer)?;
        let (q, w_scales) = quantize_weights(layer.weight.value().as_slice(), n, k, per_channel)?;
        Ok(QLinearKernel {
            packed: PackedWeightsI8::pack(&q, n, k)?,
            w_scales,
            bias: checked_bias(layer.bias.as_ref(), n)?,
            act,
            n,
            k,
            per_channel,
        })
    }
}

impl InferenceKernel<f32> for QLinearKernel {
    fn forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        if x.rank() == 0 || x.shape()[x.rank() - 1] != self.k {
            return Err(Error::shape(
                "QLinear",
                &[x.shape()],
                format!("expected input [.., {}]", self.k),
            ));
        }
        let rows = x.numel() / self.k;
        let mut out = vec![0f32; rows * self.n];
        match self.act {
            ActivationQuant::Dynamic => linear_dynamic_int8(
                x.as_slice(),
                &self.packed,
                &self.w_scales,
                self.bias.as_deref(),
                &mut out,
            )?,
            ActivationQuant::Static(p) => {
                let mut a = vec![0u8; x.numel()];
                quantize_u8(x.as_slice(), p, &mut a);
                gemm_u8i8_f32(
                    &a,
                    &self.packed,
                    &Requant {
                        input: p,
                        w_scales: &self.w_scales,
                        bias: self.bias.as_deref(),
                    },
                    &mut out,
                )?;
            }
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = self.n;
        Tensor::from_vec(out, &shape)
    }

    fn describe(&self) -> String {
        format!(
            "int8 {} weights, {} activations",
            if self.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            },
            if matches!(self.act, ActivationQuant::Dynamic) {
                "dynamic"
            } else {
                "static"
            }
        )
    }

    fn weight_bytes(&self) -> usize {
        self.n * self.k
            + 4 * self.w_scales.len()
            + 4 * self.bias.as_ref().map_or(0, |b| b.len())
            + 8
    }
}

/// A layer's bias as a vector of `n` values (the field is public, so its
/// length is checked).
fn checked_bias(bias: Option<&Param<f32>>, n: usize) -> Result<Option<Vec<f32>>> {
    match bias {
        Some(b) if b.value().numel() != n => Err(Error::shape(
            "quantised layer",
            &[b.shape(), &[n]],
            format!("the bias must hold {n} values"),
        )),
        b => Ok(b.map(|b| b.value().to_vec())),
    }
}

/// `[out, in]` of a Linear layer's weight (public, so of any shape).
fn linear_dims(layer: &Linear<f32>) -> Result<(usize, usize)> {
    match *layer.weight.shape() {
        [n, k] => Ok((n, k)),
        _ => Err(Error::shape(
            "QLinear",
            &[layer.weight.shape()],
            "the weight must be [out_features, in_features]",
        )),
    }
}

/// Geometry of a convolution as the kernels need it.
#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    /// top, left, bottom, right
    pads: [usize; 4],
}

/// The geometry of `c`, checked: its configuration and weight are public,
/// so they may disagree or hold values no convolution accepts.
fn conv_geom(c: &Conv2d<f32>) -> Result<ConvGeom> {
    let op = "QConv2d";
    let cfg = &c.config;
    let valid = cfg.groups > 0
        && !cfg.kernel.contains(&0)
        && !cfg.stride.contains(&0)
        && !cfg.dilation.contains(&0)
        && cfg.in_channels.is_multiple_of(cfg.groups)
        && cfg.out_channels.is_multiple_of(cfg.groups);
    if !valid {
        return Err(Error::invalid(
            op,
            format!("{cfg:?} is not a valid convolution"),
        ));
    }
    let want = [
        cfg.out_channels,
        cfg.in_channels / cfg.groups,
        cfg.kernel[0],
        cfg.kernel[1],
    ];
    if c.weight.shape() != want {
        return Err(Error::shape(
            op,
            &[c.weight.shape(), &want],
            "the weight does not fit the configuration",
        ));
    }
    let span = |d: usize, k: usize| {
        d.checked_mul(k - 1)
            .ok_or_else(|| Error::invalid(op, format!("dilation {d} overflows")))
    };
    let pads = match cfg.padding {
        Padding::Explicit(ph, pw) => [ph, pw, ph, pw],
        Padding::Same => {
            let th = span(cfg.dilation[0], cfg.kernel[0])?;
            let tw = span(cfg.dilation[1], cfg.kernel[1])?;
            [th / 2, tw / 2, th - th / 2, tw - tw / 2]
        }
    };
    Ok(ConvGeom {
        cin: cfg.in_channels,
        cout: cfg.out_channels,
        kh: cfg.kernel[0],
        kw: cfg.kernel[1],
        stride: cfg.stride,
        dilation: cfg.dilation,
        groups: cfg.groups,
        pads,
    })
}

impl ConvGeom {
    fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let ext = |x: usize, p0: usize, p1: usize, k: usize, s: usize, d: usize| {
            x.checked_add(p0)?
                .checked_add(p1)?
                .checked_sub(d.checked_mul(k - 1)?.checked_add(1)?)
                .map(|v| v / s + 1)
        };
        match (
            ext(
                h,
                self.pads[0],
                self.pads[2],
                self.kh,
                self.stride[0],
                self.dilation[0],
            ),
            ext(
                w,
                self.pads[1],
                self.pads[3],
                self.kw,
                self.stride[1],
                self.dilation[1],
            ),
        ) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::shape(
                "QConv2d",
                &[&[h, w]],
                "kernel larger than the padded input",
            )),
        }
    }

    fn check(&self, x: &Tensor<f32>) -> Result<(usize, usize, usize)> {
        if x.rank() != 4 || x.shape()[1] != self.cin {
            return Err(Error::shape(
                "QConv2d",
                &[x.shape()],
                format!("expected input [N, {}, H, W]", self.cin),
            ));
        }
        Ok((x.shape()[0], x.shape()[2], x.shape()[3]))
    }
}

/// Int8 execution of a Conv2d layer: u8 im2col (padding holds the zero
/// point) and one int8 GEMM per image and group.
pub struct QConv2dKernel {
    geom: ConvGeom,
    packed: Vec<PackedWeightsI8>,
    w_scales: Vec<Vec<f32>>,
    bias: Option<Vec<f32>>,
    act: ActivationQuant,
    per_channel: bool,
}

impl QConv2dKernel {
    /// Quantises and packs `layer`'s weight, one packed matrix per group.
    pub fn new(layer: &Conv2d<f32>, per_channel: bool, act: ActivationQuant) -> Result<Self> {
        let geom = conv_geom(layer)?;
        let og = geom.cout / geom.groups;
        let kdim = geom.cin / geom.groups * geom.kh * geom.kw;
        let w = layer.weight.value().as_slice();
        // Per-tensor: one scale over all groups, so compute it globally first.
        let (q_all, s_all) = quantize_weights(w, geom.cout, kdim, per_channel)?;
        let mut packed = Vec::new();
        let mut w_scales = Vec::new();
        for g in 0..geom.groups {
            packed.push(PackedWeightsI8::pack(
                &q_all[g * og * kdim..(g + 1) * og * kdim],
                og,
                kdim,
            )?);
            w_scales.push(if per_channel {
                s_all[g * og..(g + 1) * og].to_vec()
            } else {
                s_all.clone()
            });
        }
        Ok(QConv2dKernel {
            geom,
            packed,
            w_scales,
            bias: checked_bias(layer.bias.as_ref(), geom.cout)?,
            act,
            per_channel,
        })
    }
}

impl InferenceKernel<f32> for QConv2dKernel {
    fn forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        let g = self.geom;
        let (n, h, w) = g.check(x)?;
        let (oh, ow) = g.out_hw(h, w)?;
        let p = activation_params(self.act, x.as_slice())?;
        let mut xq = vec![0u8; x.numel()];
        quantize_u8(x.as_slice(), p, &mut xq);
        let (cg, og) = (g.cin / g.groups, g.cout / g.groups);
        let kdim = cg * g.kh * g.kw;
        let ohw = oh * ow;
        let mut y = vec![0f32; n * g.cout * ohw];
        let image = g.cin * h * w;
        y.par_chunks_mut((g.cout * ohw).max(1))
            .enumerate()
            .try_for_each(|(ni, yi)| -> Result<()> {
                let mut col = vec![p.zero_point; ohw * kdim];
                let mut tmp = vec![0f32; ohw * og];
                for gi in 0..g.groups {
                    let xg = &xq[ni * image + gi * cg * h * w..ni * image + (gi + 1) * cg * h * w];
                    // Row per output pixel: col[pix, (c·kh + i)·kw + j].
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let row = &mut col[(oy * ow + ox) * kdim..(oy * ow + ox + 1) * kdim];
                            for c in 0..cg {
                                for i in 0..g.kh {
                                    let iy = (oy * g.stride[0] + i * g.dilation[0]) as isize
                                        - g.pads[0] as isize;
                                    for j in 0..g.kw {
                                        let ix = (ox * g.stride[1] + j * g.dilation[1]) as isize
                                            - g.pads[1] as isize;
                                        row[(c * g.kh + i) * g.kw + j] = if iy >= 0
                                            && (iy as usize) < h
                                            && ix >= 0
                                            && (ix as usize) < w
                                        {
                                            xg[c * h * w + iy as usize * w + ix as usize]
                                        } else {
                                            p.zero_point
                                        };
                                    }
                                }
                            }
                        }
                    }
                    let bias = self.bias.as_ref().map(|b| &b[gi * og..(gi + 1) * og]);
                    gemm_u8i8_f32(
                        &col,
                        &self.packed[gi],
                        &Requant {
                            input: p,
                            w_scales: &self.w_scales[gi],
                            bias,
                        },
                        &mut tmp,
                    )?;
                    for pix in 0..ohw {
                        for o in 0..og {
                            yi[(gi * og + o) * ohw + pix] = tmp[pix * og + o];
                        }
                    }
                }
                Ok(())
            })?;
        Tensor::from_vec(y, &[n, g.cout, oh, ow])
    }

    fn describe(&self) -> String {
        format!(
            "int8 {} weights, {} activations",
            if self.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            },
            if matches!(self.act, ActivationQuant::Dynamic) {
                "dynamic"
            } else {
                "static"
            }
        )
    }

    fn weight_bytes(&self) -> usize {
        let g = self.geom;
        g.cout * (g.cin / g.groups) * g.kh * g.kw
            + 4 * self.w_scales.iter().map(|s| s.len()).sum::<usize>()
            + 4 * self.bias.as_ref().map_or(0, |b| b.len())
            + 8
    }
}

/// Block-quantised weights as GGML stores them.
enum BlockWeights {
    /// 4-bit codes in blocks of 32, one f32 scale per block.
    Q4(Q4Matrix),
    /// 8-bit codes in blocks of 32, one f32 scale per block.
    Q8(Q8Matrix),
}

impl BlockWeights {
    fn dequantize(&self) -> Vec<f32> {
        match self {
            BlockWeights::Q4(w) => w.dequantize(),
            BlockWeights::Q8(w) => w.dequantize(),
        }
    }

    fn size_bytes(&self) -> usize {
        match self {
            BlockWeights::Q4(w) => w.size_bytes(),
            BlockWeights::Q8(w) => w.size_bytes(),
        }
    }

    fn matmul(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        match self {
            BlockWeights::Q4(w) => matmul_q4_0(x, w, out),
            BlockWeights::Q8(w) => matmul_q8_0(x, w, out),
        }
    }
}

/// Weight-only block quantisation (GGML's Q4_0 or Q8_0: blocks of 32 with
/// one f32 scale each), f32 activations: Linear runs the block matmul
/// kernel directly; Conv2d dequantises its weight and convolves in f32.
pub struct BlockKernel {
    w: BlockWeights,
    bias: Option<Vec<f32>>,
    conv: Option<(ConvGeom, Vec<usize>)>,
    n: usize,
    k: usize,
}

/// The 4-bit weight-only kernel (Q4_0).
pub type Int4Kernel = BlockKernel;

impl BlockKernel {
    fn quantize(w: &[f32], n: usize, k: usize, bits: u32) -> Result<BlockWeights> {
        match bits {
            4 => Ok(BlockWeights::Q4(Q4Matrix::quantize(w, n, k)?)),
            8 => Ok(BlockWeights::Q8(Q8Matrix::quantize(w, n, k)?)),
            b => Err(Error::invalid(
                "BlockKernel",
                format!("{b}-bit blocks are not supported (4 or 8)"),
            )),
        }
    }

    /// For a Linear layer, with 4- or 8-bit blocks.
    pub fn linear_bits(layer: &Linear<f32>, bits: u32) -> Result<Self> {
        let (n, k) = linear_dims(layer)?;
        Ok(BlockKernel {
            w: Self::quantize(layer.weight.value().as_slice(), n, k, bits)?,
            bias: checked_bias(layer.bias.as_ref(), n)?,
            conv: None,
            n,
            k,
        })
    }

    /// For a Conv2d layer (weight rows `[out, in/groups·kh·kw]`), with 4- or 8-bit blocks.
    pub fn conv2d_bits(layer: &Conv2d<f32>, bits: u32) -> Result<Self> {
        let geom = conv_geom(layer)?;
        let s = layer.weight.shape().to_vec();
        let (n, k) = (s[0], s[1] * s[2] * s[3]);
        Ok(BlockKernel {
            w: Self::quantize(layer.weight.value().as_slice(), n, k, bits)?,
            bias: checked_bias(layer.bias.as_ref(), n)?,
            conv: Some((geom, s)),
            n,
            k,
        })
    }

    /// Q4_0 for a Linear layer.
    pub fn linear(layer: &Linear<f32>) -> Result<Self> {
        Self::linear_bits(layer, 4)
    }

    /// Q4_0 for a Conv2d layer.
    pub fn conv2d(layer: &Conv2d<f32>) -> Result<Self> {
        Self::conv2d_bits(layer, 4)
    }
}

impl InferenceKernel<f32> for BlockKernel {
    fn forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        match &self.conv {
            None => {
                if x.rank() == 0 || x.shape()[x.rank() - 1] != self.k {
                    return Err(Error::shape(
                        "BlockLinear",
                        &[x.shape()],
                        format!("expected input [.., {}]", self.k),
                    ));
                }
                let rows = x.numel() / self.k;
                let mut out = vec![0f32; rows * self.n];
                self.w.matmul(x.as_slice(), &mut out)?;
                if let Some(b) = &self.bias {
                    for row in out.chunks_mut(self.n) {
                        row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                    }
                }
                let mut shape = x.shape().to_vec();
                *shape.last_mut().expect("rank ≥ 1") = self.n;
                Tensor::from_vec(out, &shape)
            }
            Some((g, wshape)) => {
                g.check(x)?;
                let w = Tensor::from_vec(self.w.dequantize()[..self.n * self.k].to_vec(), wshape)?;
                let b = match &self.bias {
                    Some(b) => Some(Tensor::from_slice(b, &[b.len()])?),
                    None => None,
                };
                let asym = g.pads[0] != g.pads[2] || g.pads[1] != g.pads[3];
                let xp = if asym {
                    x.pad(
                        &[
                            (0, 0),
                            (0, 0),
                            (g.pads[0], g.pads[2]),
                            (g.pads[1], g.pads[3]),
                        ],
                        0.0,
                    )?
                } else {
                    x.clone()
                };
                let sym = if asym { [0, 0] } else { [g.pads[0], g.pads[1]] };
                xp.conv2d(
                    &w,
                    b.as_ref(),
                    anneal_tensor::Conv2dParams {
                        stride: g.stride,
                        padding: sym,
                        dilation: g.dilation,
                        groups: g.groups,
                    },
                )
            }
        }
    }

    fn describe(&self) -> String {
        match self.w {
            BlockWeights::Q4(_) => "int4 weight-only (Q4_0 blocks of 32)".into(),
            BlockWeights::Q8(_) => "int8 weight-only (Q8_0 blocks of 32)".into(),
        }
    }

    fn weight_bytes(&self) -> usize {
        self.w.size_bytes() + 4 * self.bias.as_ref().map_or(0, |b| b.len())
    }
}
