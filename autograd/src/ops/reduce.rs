//! Reductions, logsumexp, softmax and log-softmax, forward and backward.

use anneal_tensor::{normalize_axes, normalize_axis, Dim, Element, Result};

use crate::Var;

/// The keepdim shape of reducing `axes` of `shape`.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect()
}

impl<T: Element> Var<T> {
    /// Sum over `axes`; `∂ = g` broadcast back.
    pub fn sum_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let ax = normalize_axes("sum", axes, self.rank())?;
        let y = self.value().sum_axes(&ax, keepdim)?;
        let (shape, keep) = (self.shape().to_vec(), kept_shape(self.shape(), &ax));
        Ok(Var::from_op("sum", y, &[self], move |g, _| {
            Ok(vec![Some(g.reshape(&keep)?.broadcast_to(&shape)?)])
        }))
    }

    /// Sum of every element, as a rank-0 value.
    pub fn sum_all(&self) -> Result<Self> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.sum_axes(&axes, false)
    }

    /// Mean over `axes`; `∂ = g/n` broadcast back.
    pub fn mean_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let ax = normalize_axes("mean", axes, self.rank())?;
        let n: usize = ax.iter().map(|&a| self.shape()[a]).product();
        let y = self.value().mean_axes(&ax, keepdim)?;
        let (shape, keep) = (self.shape().to_vec(), kept_shape(self.shape(), &ax));
        let inv = T::one() / T::from_usize(n).unwrap_or_else(T::zero);
        Ok(Var::from_op("mean", y, &[self], move |g, _| {
            Ok(vec![Some(
                g.reshape(&keep)?.mul_scalar(inv).broadcast_to(&shape)?,
            )])
        }))
    }

    /// Mean of every element, as a rank-0 value.
    pub fn mean_all(&self) -> Result<Self> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.mean_axes(&axes, false)
    }

    /// Variance over `axes` (biased or unbiased);
    /// `∂/∂xᵢ = g·2(xᵢ − mean)/(n − δ)`.
    pub fn var_axes<D: Dim>(&self, axes: &[D], unbiased: bool, keepdim: bool) -> Result<Self> {
        let ax = normalize_axes("var", axes, self.rank())?;
        let n: usize = ax.iter().map(|&a| self.shape()[a]).product();
        let y = self.value().var_axes(&ax, unbiased, keepdim)?;
        let x = self.value().clone();
        let keep = kept_shape(self.shape(), &ax);
        let scale = T::from_f64_lossy(2.0 / (n as f64 - if unbiased { 1.0 } else { 0.0 }));
        Ok(Var::from_op("var", y, &[self], move |g, _| {
            let mean = x.mean_axes(&ax, true)?;
            let centred = x.sub(&mean)?.mul_scalar(scale);
            Ok(vec![Some(centred.mul(&g.reshape(&keep)?)?)])
        }))
    }

    fn extremum(&self, op: &'static str, axes: &[usize], keepdim: bool) -> Result<Self> {
        let y = if op == "max" {
            self.value().max_axes(axes, keepdim)?
        } else {
            self.value().min_axes(axes, keepdim)?
        };
        let x = self.value().clone();
        let keep = kept_shape(self.shape(), axes);
        let yk = y.reshape(&keep)?;
        let axes = axes.to_vec();
        Ok(Var::from_op(op, y, &[self], move |g, _| {
            // The gradient is shared equally among tied extrema (torch.amax).
            let hit = x.zip_with(&yk, op, |x, m| if x == m { T::one() } else { T::zero() })?;
            let count = hit.sum_axes(&axes, true)?;
            let share = g.reshape(&keep)?.div(&count)?;
            Ok(vec![Some(hit.mul(&share)?)])
        }))
    }

    /// Maximum over `axes`; ties share the gradient equally (`torch.amax`).
    pub fn max_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let ax = normalize_axes("max", axes, self.rank())?;
        self.extremum("max", &ax, keepdim)
    }

    /// Minimum over `axes`; ties share the gradient equally (`torch.amin`).
    pub fn min_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let ax = normalize_axes("min", axes, self.rank())?;
        self.extremum("min", &ax, keepdim)
    }

    /// `log Σ exp(x)` over `axes`; `∂ = g·exp(x − y)` (the softmax).
    pub fn logsumexp_axes<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Self> {
        let ax = normalize_axes("logsumexp", axes, self.rank())?;
        let y = self.value().logsumexp_axes(&ax, keepdim)?;
        let x = self.value().clone();
        let keep = kept_shape(self.shape(), &ax);
        let yk = y.reshape(&keep)?;
        Ok(Var::from_op("logsumexp", y, &[self], move |g, _| {
            let p = x.zip_with(&yk, "logsumexp", |x, l| (x - l).exp())?;
            Ok(vec![Some(p.mul(&g.reshape(&keep)?)?)])
        }))
    }

    /// Softmax along `axis`; `∂ = y ⊙ (g − Σ g⊙y)`.
    pub fn softmax<D: Dim>(&self, axis: D) -> Result<Self> {
        let a = normalize_axis("softmax", axis, self.rank())?;
        let y = self.value().softmax(a)?;
        let yv = y.clone();
        Ok(Var::from_op("softmax", y, &[self], move |g, _| {
            let dot = g.mul(&yv)?.sum_axes(&[a], true)?;
            Ok(vec![Some(yv.mul(&g.sub(&dot)?)?)])
        }))
    }

    /// Log-softmax along `axis`; `∂ = g − exp(y)·Σ g`.
    pub fn log_softmax<D: Dim>(&self, axis: D) -> Result<Self> {
        let a = normalize_axis("log_softmax", axis, self.rank())?;
        let y = self.value().log_softmax(a)?;
        let yv = y.clone();
        Ok(Var::from_op("log_softmax", y, &[self], move |g, _| {
            let s = g.sum_axes(&[a], true)?;
            let p = yv.exp();
            Ok(vec![Some(g.sub(&p.mul(&s)?)?)])
        }))
    }
}
