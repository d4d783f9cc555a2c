//! Normalisation layers: BatchNorm (1-D and 2-D), LayerNorm, GroupNorm, RMSNorm.

use anneal_autograd::{no_grad, Param, Var};
use anneal_tensor::{Element, Error, Result, Tensor};

use crate::module::{join, Entry, EntryMut, Module};

/// Configuration of a batch normalisation layer (`torch.nn.BatchNorm1d/2d`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Channels `C`.
    pub num_features: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Running-statistics momentum; `None` is a cumulative average.
    pub momentum: Option<f64>,
    /// Learnable per-channel scale and shift.
    pub affine: bool,
    /// Keep running statistics for evaluation.
    pub track_running_stats: bool,
}

impl BatchNormConfig {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1, affine, tracking.
    pub fn new(num_features: usize) -> Self {
        BatchNormConfig {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }

    /// Builds the layer: weight 1, bias 0, running mean 0, running var 1.
    pub fn init<T: Element>(&self) -> Result<BatchNorm<T>> {
        if self.num_features == 0
            || !self.eps.is_finite()
            || self.eps < 0.0
            || self.momentum.is_some_and(|m| !(0.0..=1.0).contains(&m))
        {
            return Err(Error::invalid(
                "BatchNorm",
                format!(
                    "num_features {} must be positive, eps {} finite and ≥ 0 and momentum {:?} in [0, 1]",
                    self.num_features, self.eps, self.momentum
                ),
            ));
        }
        let c = self.num_features;
        let (weight, bias) = if self.affine {
            (
                Some(Param::new(Tensor::ones(&[c])?)),
                Some(Param::new(Tensor::zeros(&[c])?)),
            )
        } else {
            (None, None)
        };
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: Tensor::zeros(&[c])?,
            running_var: Tensor::ones(&[c])?,
            num_batches_tracked: 0,
            config: *self,
        })
    }
}

/// Batch normalisation over the channel axis 1 of `[N, C]`, `[N, C, L]`
/// (BatchNorm1d) or `[N, C, H, W]` (BatchNorm2d):
/// `y = (x − μ)/√(σ² + ε)·γ + β` (Ioffe & Szegedy 2015).
///
/// Training normalises with the biased batch variance and updates
/// `running = (1 − m)·running + m·batch` with the unbiased variance;
/// evaluation uses the running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm<T: Element = f32> {
    /// Scale γ `[C]`.
    pub weight: Option<Param<T>>,
    /// Shift β `[C]`.
    pub bias: Option<Param<T>>,
    /// Running mean `[C]`.
    pub running_mean: Tensor<T>,
    /// Running (unbiased) variance `[C]`.
    pub running_var: Tensor<T>,
    /// Batches seen in training.
    pub num_batches_tracked: i64,
    /// The configuration it was built from.
    pub config: BatchNormConfig,
}

impl<T: Element> BatchNorm<T> {
    fn check(&self, x: &Var<T>) -> Result<(Vec<usize>, Vec<usize>)> {
        if !(2..=5).contains(&x.rank()) || x.shape()[1] != self.config.num_features {
            return Err(Error::shape(
                "BatchNorm",
                &[x.shape()],
                format!(
                    "expected input [N, {}, ...] of rank 2 to 5",
                    self.config.num_features
                ),
            ));
        }
        let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
        let mut bshape = vec![1; x.rank()];
        bshape[1] = self.config.num_features;
        Ok((axes, bshape))
    }

    fn normalise(
        &self,
        x: &Var<T>,
        mean: &Var<T>,
        var: &Var<T>,
        bshape: &[usize],
    ) -> Result<Var<T>> {
        let eps = T::from_f64_lossy(self.config.eps);
        let inv = var.add_scalar(eps).sqrt().recip().reshape(bshape)?;
        let mut y = x.sub(&mean.reshape(bshape)?)?.mul(&inv)?;
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            y = y
                .mul(&w.var().reshape(bshape)?)?
                .add(&b.var().reshape(bshape)?)?;
        }
        Ok(y)
    }
}

impl<T: Element> Module<T> for BatchNorm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let (axes, bshape) = self.check(x)?;
        if self.config.track_running_stats {
            let mean = Var::constant(self.running_mean.clone());
            let var = Var::constant(self.running_var.clone());
            self.normalise(x, &mean, &var, &bshape)
        } else {
            let mean = x.mean_axes(&axes, false)?;
            let var = x.var_axes(&axes, false, false)?;
            self.normalise(x, &mean, &var, &bshape)
        }
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let (axes, bshape) = self.check(x)?;
        let n: usize = axes.iter().map(|&a| x.shape()[a]).product();
        if n <= 1 {
            return Err(Error::shape(
                "BatchNorm",
                &[x.shape()],
                "training needs more than one value per channel",
            ));
        }
        let mean = x.mean_axes(&axes, false)?;
        let var = x.var_axes(&axes, false, false)?;
        if self.config.track_running_stats {
            self.num_batches_tracked += 1;
            let m = self
                .config
                .momentum
                .unwrap_or(1.0 / self.num_batches_tracked as f64);
            let (m, keep) = (T::from_f64_lossy(m), T::from_f64_lossy(1.0 - m));
            let unbias = T::from_f64_lossy(n as f64 / (n as f64 - 1.0));
            no_grad(|| -> Result<()> {
                let rm = self
                    .running_mean
                    .mul_scalar(keep)
                    .add(&mean.value().mul_scalar(m))?;
                let rv = self
                    .running_var
                    .mul_scalar(keep)
                    .add(&var.value().mul_scalar(m * unbias))?;
                self.running_mean = rm;
                self.running_var = rv;
                Ok(())
            })?;
        }
        self.normalise(x, &mean, &var, &bshape)
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            f(&join(prefix, "weight"), Entry::Param(w));
            f(&join(prefix, "bias"), Entry::Param(b));
        }
        if self.config.track_running_stats {
            f(
                &join(prefix, "running_mean"),
                Entry::Buffer(&self.running_mean),
            );
            f(
                &join(prefix, "running_var"),
                Entry::Buffer(&self.running_var),
            );
            f(
                &join(prefix, "num_batches_tracked"),
                Entry::Counter(&self.num_batches_tracked),
            );
        }
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        if let (Some(w), Some(b)) = (&mut self.weight, &mut self.bias) {
            f(&join(prefix, "weight"), EntryMut::Param(w));
            f(&join(prefix, "bias"), EntryMut::Param(b));
        }
        if self.config.track_running_stats {
            f(
                &join(prefix, "running_mean"),
                EntryMut::Buffer(&mut self.running_mean),
            );
            f(
                &join(prefix, "running_var"),
                EntryMut::Buffer(&mut self.running_var),
            );
            f(
                &join(prefix, "num_batches_tracked"),
                EntryMut::Counter(&mut self.num_batches_tracked),
            );
        }
    }
}

/// Layer normalisation over the trailing `normalized_shape` axes
/// (`torch.nn.LayerNorm`, Ba et al. 2016), biased variance, ε = 1e-5.
#[derive(Debug, Clone)]
pub struct LayerNorm<T: Element = f32> {
    /// Scale γ, shaped `normalized_shape`.
    pub weight: Option<Param<T>>,
    /// Shift β, shaped `normalized_shape`.
    pub bias: Option<Param<T>>,
    /// The trailing shape normalised over.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
}

impl<T: Element> LayerNorm<T> {
    /// PyTorch's defaults: eps 1e-5, elementwise affine with γ = 1, β = 0.
    pub fn new(normalized_shape: &[usize]) -> Result<Self> {
        Self::with_options(normalized_shape, 1e-5, true)
    }

    /// Explicit eps and affine flag.
    pub fn with_options(normalized_shape: &[usize], eps: f64, affine: bool) -> Result<Self> {
        if normalized_shape.is_empty()
            || normalized_shape.contains(&0)
            || !eps.is_finite()
            || eps < 0.0
        {
            return Err(Error::invalid("LayerNorm", format!("normalized_shape {normalized_shape:?} must be non-empty and positive, eps {eps} finite and ≥ 0")));
        }
        Ok(LayerNorm {
            weight: if affine {
                Some(Param::new(Tensor::ones(normalized_shape)?))
            } else {
                None
            },
            bias: if affine {
                Some(Param::new(Tensor::zeros(normalized_shape)?))
            } else {
                None
            },
            normalized_shape: normalized_shape.to_vec(),
            eps,
        })
    }
}

/// `(x − mean)/√(var + eps)⊙weight + bias` over the trailing
/// `normalized_shape` of `x` (biased variance), as one graph node with a
/// hand-written backward ([`Tensor::layer_norm`]). `layer` names the caller
/// in errors.
pub(crate) fn layer_norm<T: Element>(
    layer: &'static str,
    x: &Var<T>,
    normalized_shape: &[usize],
    weight: Option<&Var<T>>,
    bias: Option<&Var<T>>,
    eps: f64,
) -> Result<Var<T>> {
    let k = normalized_shape.len();
    if x.rank() < k || x.shape()[x.rank() - k..] != normalized_shape[..] {
        return Err(Error::shape(
            layer,
            &[x.shape(), normalized_shape],
            "input must end with normalized_shape",
        ));
    }
    let n = normalized_shape.iter().product();
    let ln = x
        .value()
        .layer_norm(n, weight.map(Var::value), bias.map(Var::value), eps)?;
    let mut parents = vec![x];
    parents.extend(weight);
    parents.extend(bias);
    let shapes: Vec<Vec<usize>> = parents[1..].iter().map(|p| p.shape().to_vec()).collect();
    let has_weight = weight.is_some();
    Ok(Var::custom(
        "layer_norm",
        ln.output().clone(),
        &parents,
        move |g, needs| {
            let d = ln.backward(g, needs[1..].iter().any(|&n| n))?;
            let mut grads = vec![needs[0].then_some(d.input)];
            let params = [d.weight, d.bias]
                .into_iter()
                .skip(usize::from(!has_weight));
            for ((grad, shape), &need) in params.zip(&shapes).zip(&needs[1..]) {
                grads.push(match grad {
                    Some(t) if need => Some(t.reshape(shape)?),
                    _ => None,
                });
            }
            Ok(grads)
        },
    ))
}

impl<T: Element> Module<T> for LayerNorm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let (w, b) = (
            self.weight.as_ref().map(Param::var),
            self.bias.as_ref().map(Param::var),
        );
        layer_norm(
            "LayerNorm",
            x,
            &self.normalized_shape,
            w.as_ref(),
            b.as_ref(),
            self.eps,
        )
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            f(&join(prefix, "weight"), Entry::Param(w));
            f(&join(prefix, "bias"), Entry::Param(b));
        }
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        if let (Some(w), Some(b)) = (&mut self.weight, &mut self.bias) {
            f(&join(prefix, "weight"), EntryMut::Param(w));
            f(&join(prefix, "bias"), EntryMut::Param(b));
        }
    }
}

/// Group normalisation (`torch.nn.GroupNorm`, Wu & He 2018): channels split
/// into groups, each normalised over its channels and spatial positions.
#[derive(Debug, Clone)]
pub struct GroupNorm<T: Element = f32> {
    /// Per-channel scale `[C]`.
    pub weight: Option<Param<T>>,
    /// Per-channel shift `[C]`.
    pub bias: Option<Param<T>>,
    /// Number of groups.
    pub num_groups: usize,
    /// Number of channels.
    pub num_channels: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl<T: Element> GroupNorm<T> {
    /// `num_groups` groups over `num_channels`, eps 1e-5, affine.
    pub fn new(num_groups: usize, num_channels: usize) -> Result<Self> {
        if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
            return Err(Error::invalid(
                "GroupNorm",
                format!("{num_channels} channels must divide into {num_groups} groups"),
            ));
        }
        Ok(GroupNorm {
            weight: Some(Param::new(Tensor::ones(&[num_channels])?)),
            bias: Some(Param::new(Tensor::zeros(&[num_channels])?)),
            num_groups,
            num_channels,
            eps: 1e-5,
        })
    }
}

impl<T: Element> Module<T> for GroupNorm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        if self.num_groups == 0 || !self.num_channels.is_multiple_of(self.num_groups) {
            return Err(Error::invalid(
                "GroupNorm",
                format!(
                    "{} channels must divide into {} groups",
                    self.num_channels, self.num_groups
                ),
            ));
        }
        if x.rank() < 2 || x.shape()[1] != self.num_channels {
            return Err(Error::shape(
                "GroupNorm",
                &[x.shape()],
                format!("expected input [N, {}, ...]", self.num_channels),
            ));
        }
        let shape = x.shape().to_vec();
        let n = shape[0];
        let per_group = x.value().numel() / (n * self.num_groups).max(1);
        let g = x.reshape(&[n, self.num_groups, per_group])?;
        let mean = g.mean_axes(&[2], true)?;
        let centred = g.sub(&mean)?;
        let var = centred.square().mean_axes(&[2], true)?;
        let mut y = centred
            .mul(&var.add_scalar(T::from_f64_lossy(self.eps)).sqrt().recip())?
            .reshape(&shape)?;
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            let mut bshape = vec![1; shape.len()];
            bshape[1] = self.num_channels;
            y = y
                .mul(&w.var().reshape(&bshape)?)?
                .add(&b.var().reshape(&bshape)?)?;
        }
        Ok(y)
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            f(&join(prefix, "weight"), Entry::Param(w));
            f(&join(prefix, "bias"), Entry::Param(b));
        }
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        if let (Some(w), Some(b)) = (&mut self.weight, &mut self.bias) {
            f(&join(prefix, "weight"), EntryMut::Param(w));
            f(&join(prefix, "bias"), EntryMut::Param(b));
        }
    }
}

/// Root-mean-square normalisation (`torch.nn.RMSNorm`, Zhang & Sennrich
/// 2019): `y = x/√(mean(x²) + ε)·γ` over the trailing axes.
#[derive(Debug, Clone)]
pub struct RmsNorm<T: Element = f32> {
    /// Scale γ, shaped `normalized_shape`.
    pub weight: Param<T>,
    /// The trailing shape normalised over.
    pub normalized_shape: Vec<usize>,
    /// Added to the mean square; PyTorch's default is the dtype's machine epsilon.
    pub eps: f64,
}

impl<T: Element> RmsNorm<T> {
    /// γ = 1 and ε = machine epsilon of `T` (PyTorch's `eps=None`).
    pub fn new(normalized_shape: &[usize]) -> Result<Self> {
        if normalized_shape.is_empty() || normalized_shape.contains(&0) {
            return Err(Error::invalid(
                "RMSNorm",
                format!("normalized_shape {normalized_shape:?} must be non-empty and positive"),
            ));
        }
        Ok(RmsNorm {
            weight: Param::new(Tensor::ones(normalized_shape)?),
            normalized_shape: normalized_shape.to_vec(),
            eps: T::epsilon().to_f64_exact(),
        })
    }
}

impl<T: Element> Module<T> for RmsNorm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let k = self.normalized_shape.len();
        if x.rank() < k || x.shape()[x.rank() - k..] != self.normalized_shape[..] {
            return Err(Error::shape(
                "RMSNorm",
                &[x.shape(), &self.normalized_shape],
                "input must end with normalized_shape",
            ));
        }
        let axes: Vec<usize> = (x.rank() - k..x.rank()).collect();
        let ms = x.square().mean_axes(&axes, true)?;
        x.mul(&ms.add_scalar(T::from_f64_lossy(self.eps)).sqrt().recip())?
            .mul(&self.weight.var())
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        f(&join(prefix, "weight"), Entry::Param(&self.weight));
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        f(&join(prefix, "weight"), EntryMut::Param(&mut self.weight));
    }
}
