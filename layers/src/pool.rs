//! Pooling and reshaping layers: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
//! (to 1×1, global average pooling) and Flatten.

use anneal_autograd::Var;
use anneal_tensor::{Element, Pool2dParams, Result};

use crate::activation::parameterless;
use crate::module::{expect_rank, Entry, EntryMut, Module};

/// Max pooling (`torch.nn.MaxPool2d`).
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d {
    /// Window, stride and padding.
    pub params: Pool2dParams,
}
impl MaxPool2d {
    /// A `k×k` window with stride `k`.
    pub fn new(kernel: usize) -> Self {
        MaxPool2d {
            params: Pool2dParams::new(kernel),
        }
    }
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        expect_rank("MaxPool2d", x, &[4], "[N, C, H, W]")?;
        x.max_pool2d(self.params)
    }
}
parameterless!(MaxPool2d);

/// Average pooling (`torch.nn.AvgPool2d`).
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2d {
    /// Window, stride and padding.
    pub params: Pool2dParams,
    /// Count padded zeros in the divisor (PyTorch's default: true).
    pub count_include_pad: bool,
}
impl AvgPool2d {
    /// A `k×k` window with stride `k`.
    pub fn new(kernel: usize) -> Self {
        AvgPool2d {
            params: Pool2dParams::new(kernel),
            count_include_pad: true,
        }
    }
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        expect_rank("AvgPool2d", x, &[4], "[N, C, H, W]")?;
        x.avg_pool2d(self.params, self.count_include_pad)
    }
}
parameterless!(AvgPool2d);

/// Global average pooling, `torch.nn.AdaptiveAvgPool2d(1)`:
/// `[N, C, H, W] → [N, C, 1, 1]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdaptiveAvgPool2d;
impl AdaptiveAvgPool2d {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        expect_rank("AdaptiveAvgPool2d", x, &[4], "[N, C, H, W]")?;
        x.mean_axes(&[2, 3], true)
    }
}
parameterless!(AdaptiveAvgPool2d);

/// Flattens axes `start..=end` (`torch.nn.Flatten`, default `1..=-1`).
#[derive(Debug, Clone, Copy)]
pub struct Flatten {
    /// First axis merged.
    pub start: isize,
    /// Last axis merged.
    pub end: isize,
}
impl Default for Flatten {
    fn default() -> Self {
        Flatten { start: 1, end: -1 }
    }
}
impl Flatten {
    fn apply<T: Element>(&self, x: &Var<T>) -> Result<Var<T>> {
        x.flatten(self.start, self.end)
    }
}
parameterless!(Flatten);
