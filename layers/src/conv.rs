//! Convolution layers: Conv1d, Conv2d (with "same" padding) and ConvTranspose2d.

use anneal_autograd::{Param, Var};
use anneal_tensor::{Conv1dParams, Conv2dParams, Element, Error, Result};
use rand::Rng;

use crate::hooks::{HookableLayer, LayerHooks};
use crate::init;
use crate::module::{
    expect_rank, visit_weight_bias, visit_weight_bias_mut, Entry, EntryMut, Module,
};

/// Padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// The same number of zeros on both sides of each spatial axis.
    Explicit(usize, usize),
    /// PyTorch's `padding="same"` (stride 1 only): output size equals input
    /// size; an odd total padding puts the extra zero on the right/bottom.
    Same,
}

/// Configuration of a [`Conv2d`] layer (`torch.nn.Conv2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// Whether to add a bias.
    pub bias: bool,
}

impl Conv2dConfig {
    /// A square `kernel` convolution with stride 1, no padding, one group and a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel: [kernel; 2],
            stride: [1; 2],
            padding: Padding::Explicit(0, 0),
            dilation: [1; 2],
            groups: 1,
            bias: true,
        }
    }
    /// Sets the stride on both axes.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = [s; 2];
        self
    }
    /// Sets symmetric padding on both axes.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = Padding::Explicit(p, p);
        self
    }
    /// Uses `padding="same"`.
    pub fn with_same_padding(mut self) -> Self {
        self.padding = Padding::Same;
        self
    }
    /// Sets the dilation on both axes.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = [d; 2];
        self
    }
    /// Sets the number of groups.
    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Sets whether the layer has a bias.
    pub fn with_bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }

    fn validate(&self, layer: &'static str) -> Result<()> {
        if self.groups == 0
            || !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return Err(Error::invalid(
                layer,
                format!(
                    "{} input and {} output channels must divide by groups = {}",
                    self.in_channels, self.out_channels, self.groups
                ),
            ));
        }
        if self.kernel.contains(&0) || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err(Error::invalid(
                layer,
                format!(
                    "kernel {:?}, stride {:?} and dilation {:?} must be positive",
                    self.kernel, self.stride, self.dilation
                ),
            ));
        }
        if self.padding == Padding::Same && self.stride != [1, 1] {
            return Err(Error::invalid(layer, "padding=\"same\" needs stride 1"));
        }
        Ok(())
    }

    /// Builds the layer with PyTorch's default initialisation.
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<Conv2d<T>> {
        self.validate("Conv2d")?;
        let shape = [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel[0],
            self.kernel[1],
        ];
        let weight = Param::new(init::default_weight(&shape, rng)?);
        let fan_in = shape[1] * shape[2] * shape[3];
        let bias = if self.bias {
            Some(Param::new(init::default_bias(
                self.out_channels,
                fan_in,
                rng,
            )?))
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            config: *self,
            hooks: LayerHooks::default(),
        })
    }
}

/// 2-D convolution over NCHW input; weight `[out, in/groups, kh, kw]`.
#[derive(Debug, Clone)]
pub struct Conv2d<T: Element = f32> {
    /// Weight `[out, in/groups, kh, kw]`.
    pub weight: Param<T>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<T>>,
    /// The configuration it was built from.
    pub config: Conv2dConfig,
    /// Quantisation hooks (none by default).
    pub hooks: LayerHooks<T>,
}

/// `(before, after)` zeros for "same" padding of one axis.
fn same_pad(kernel: usize, dilation: usize) -> (usize, usize) {
    let total = dilation * (kernel - 1);
    (total / 2, total - total / 2)
}

impl<T: Element> Conv2d<T> {
    fn check_input(&self, x: &Var<T>) -> Result<()> {
        expect_rank("Conv2d", x, &[4], "[N, C, H, W]")?;
        if x.shape()[1] != self.config.in_channels {
            return Err(Error::shape(
                "Conv2d",
                &[x.shape(), self.weight.shape()],
                format!(
                    "expected {} input channels, got {}",
                    self.config.in_channels,
                    x.shape()[1]
                ),
            ));
        }
        Ok(())
    }

    /// The convolution in floating point (with observers and fake quantisation).
    fn float_forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.check_input(x)?;
        let c = &self.config;
        let (x, padding) = match c.padding {
            Padding::Explicit(ph, pw) => (x.clone(), [ph, pw]),
            Padding::Same => {
                let (h0, h1) = same_pad(c.kernel[0], c.dilation[0]);
                let (w0, w1) = same_pad(c.kernel[1], c.dilation[1]);
                if h0 == h1 && w0 == w1 {
                    (x.clone(), [h0, w0])
                } else {
                    (
                        x.pad(&[(0, 0), (0, 0), (h0, h1), (w0, w1)], T::zero())?,
                        [0, 0],
                    )
                }
            }
        };
        let p = Conv2dParams {
            stride: c.stride,
            padding,
            dilation: c.dilation,
            groups: c.groups,
        };
        let (x, w) = self.hooks.enter(&x, self.weight.var())?;
        let b = self.bias.as_ref().map(|b| b.var());
        x.conv2d(&w, b.as_ref(), p)
    }
}

impl<T: Element> Module<T> for Conv2d<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        if let Some(k) = &self.hooks.kernel {
            self.check_input(x)?;
            return Ok(Var::constant(k.forward(x.value())?));
        }
        self.float_forward(x)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        self.float_forward(x)
    }

    fn visit_layers_mut<'a>(
        &'a mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, HookableLayer<'a, T>),
    ) {
        f(prefix, HookableLayer::Conv2d(self));
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        visit_weight_bias_mut(prefix, &mut self.weight, self.bias.as_mut(), f);
    }
}

/// Configuration of a [`Conv1d`] layer (`torch.nn.Conv1d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel length.
    pub kernel: usize,
    /// Stride, padding (both sides), dilation and groups.
    pub params: Conv1dParams,
    /// Whether to add a bias.
    pub bias: bool,
}

impl Conv1dConfig {
    /// A stride-1 unpadded convolution with a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv1dConfig {
            in_channels,
            out_channels,
            kernel,
            params: Conv1dParams::default(),
            bias: true,
        }
    }

    /// Builds the layer with PyTorch's default initialisation.
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<Conv1d<T>> {
        let g = self.params.groups;
        if g == 0
            || !self.in_channels.is_multiple_of(g)
            || !self.out_channels.is_multiple_of(g)
            || self.kernel == 0
        {
            return Err(Error::invalid(
                "Conv1d",
                format!(
                    "channels {}→{} must divide by groups = {g} and the kernel must be positive",
                    self.in_channels, self.out_channels
                ),
            ));
        }
        let shape = [self.out_channels, self.in_channels / g, self.kernel];
        let weight = Param::new(init::default_weight(&shape, rng)?);
        let bias = if self.bias {
            Some(Param::new(init::default_bias(
                self.out_channels,
                shape[1] * shape[2],
                rng,
            )?))
        } else {
            None
        };
        Ok(Conv1d {
            weight,
            bias,
            config: *self,
        })
    }
}

/// 1-D convolution over NCL input; weight `[out, in/groups, k]`.
#[derive(Debug, Clone)]
pub struct Conv1d<T: Element = f32> {
    /// Weight `[out, in/groups, k]`.
    pub weight: Param<T>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<T>>,
    /// The configuration it was built from.
    pub config: Conv1dConfig,
}

impl<T: Element> Module<T> for Conv1d<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        expect_rank("Conv1d", x, &[3], "[N, C, L]")?;
        if x.shape()[1] != self.config.in_channels {
            return Err(Error::shape(
                "Conv1d",
                &[x.shape(), self.weight.shape()],
                format!(
                    "expected {} input channels, got {}",
                    self.config.in_channels,
                    x.shape()[1]
                ),
            ));
        }
        let b = self.bias.as_ref().map(|b| b.var());
        x.conv1d(&self.weight.var(), b.as_ref(), self.config.params)
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        visit_weight_bias_mut(prefix, &mut self.weight, self.bias.as_mut(), f);
    }
}

/// Configuration of a [`ConvTranspose2d`] layer (`torch.nn.ConvTranspose2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride, padding, dilation, groups (as the convolution it transposes).
    pub params: Conv2dParams,
    /// Extra rows/columns on the bottom/right of the output (< stride).
    pub output_padding: [usize; 2],
    /// Whether to add a bias.
    pub bias: bool,
}

impl ConvTranspose2dConfig {
    /// A square-kernel transposed convolution with stride 1, no padding, a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        ConvTranspose2dConfig {
            in_channels,
            out_channels,
            kernel: [kernel; 2],
            params: Conv2dParams::default(),
            output_padding: [0; 2],
            bias: true,
        }
    }

    /// Builds the layer with PyTorch's default initialisation (fan-in of the
    /// weight `[in, out/groups, kh, kw]` is `out/groups·kh·kw`, as PyTorch computes it).
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<ConvTranspose2d<T>> {
        let g = self.params.groups;
        if g == 0 || !self.in_channels.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            return Err(Error::invalid(
                "ConvTranspose2d",
                format!(
                    "channels {}→{} must divide by groups = {g}",
                    self.in_channels, self.out_channels
                ),
            ));
        }
        for a in 0..2 {
            // PyTorch also allows output_padding < dilation; anneal requires
            // output_padding < stride (the common case), checked here so that
            // `init` never builds a layer whose forward would fail.
            if self.output_padding[a] >= self.params.stride[a] {
                return Err(Error::invalid(
                    "ConvTranspose2d",
                    format!(
                        "output_padding {:?} must be smaller than stride {:?}",
                        self.output_padding, self.params.stride
                    ),
                ));
            }
        }
        let shape = [
            self.in_channels,
            self.out_channels / g,
            self.kernel[0],
            self.kernel[1],
        ];
        let weight = Param::new(init::default_weight(&shape, rng)?);
        let bias = if self.bias {
            Some(Param::new(init::default_bias(
                self.out_channels,
                shape[1] * shape[2] * shape[3],
                rng,
            )?))
        } else {
            None
        };
        Ok(ConvTranspose2d {
            weight,
            bias,
            config: *self,
        })
    }
}

/// Transposed 2-D convolution (the adjoint of Conv2d with respect to its
/// input); weight `[in, out/groups, kh, kw]`. Output extent
/// `(H − 1)·s − 2p + d·(k − 1) + output_padding + 1`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d<T: Element = f32> {
    /// Weight `[in, out/groups, kh, kw]`.
    pub weight: Param<T>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<T>>,
    /// The configuration it was built from.
    pub config: ConvTranspose2dConfig,
}

impl<T: Element> Module<T> for ConvTranspose2d<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        expect_rank("ConvTranspose2d", x, &[4], "[N, C, H, W]")?;
        if x.shape()[1] != self.config.in_channels {
            return Err(Error::shape(
                "ConvTranspose2d",
                &[x.shape(), self.weight.shape()],
                format!(
                    "expected {} input channels, got {}",
                    self.config.in_channels,
                    x.shape()[1]
                ),
            ));
        }
        let b = self.bias.as_ref().map(|b| b.var());
        x.conv_transpose2d(
            &self.weight.var(),
            b.as_ref(),
            self.config.params,
            self.config.output_padding,
        )
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        visit_weight_bias_mut(prefix, &mut self.weight, self.bias.as_mut(), f);
    }
}
