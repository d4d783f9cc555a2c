//! L1, L2 and elastic-net penalties as differentiable loss terms.
//!
//! Each function takes a module's named parameters (the names PyTorch's
//! `named_parameters()` would give, e.g. `features.0.weight`) and a
//! [`ParamFilter`], and returns a scalar [`Var`] to add to the loss, so
//! autograd differentiates it with everything else:
//!
//! ```
//! use anneal_autograd::Param;
//! use anneal_optim::{l2_penalty, ParamFilter};
//! use anneal_tensor::Tensor;
//!
//! let w = Param::new(Tensor::from_vec(vec![1.0f64, -2.0], &[2])?);
//! let b = Param::new(Tensor::from_vec(vec![5.0f64], &[1])?);
//! let named = [("fc.weight", &w), ("fc.bias", &b)];
//! let pen = l2_penalty(named, 0.1, &ParamFilter::no_bias_or_norm())?;
//! assert!((pen.value().item()? - 0.5 * 0.1 * 5.0).abs() < 1e-15);   // the bias is excluded
//! let grads = pen.backward()?;
//! assert_eq!(grads.get(&w).unwrap().to_vec(), vec![0.1, -0.2]);     // λ·w
//! assert!(grads.get(&b).is_none());
//! # Ok::<(), anneal_tensor::Error>(())
//! ```
//!
//! Conventions: the L2 penalty is `½·λ·Σw²`, whose gradient `λ·w` is exactly
//! what `weight_decay = λ` adds to the gradient in PyTorch's SGD, Adam,
//! RMSprop, Adagrad and Adadelta; the L1 penalty is `λ·Σ|w|` (gradient
//! `λ·sign(w)`, 0 at 0); elastic net is their sum with separate coefficients.

use std::fmt;
use std::sync::Arc;

use anneal_autograd::{Param, Var};
use anneal_tensor::{Element, Error, Result, Tensor};

/// Which named parameters a penalty (or anything else) applies to.
#[derive(Clone, Default)]
pub struct ParamFilter {
    rule: Rule,
}

#[derive(Clone, Default)]
enum Rule {
    #[default]
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
    NoBiasOrNorm,
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl fmt::Debug for ParamFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Rule::All => write!(f, "ParamFilter::all()"),
            Rule::Include(v) => write!(f, "ParamFilter::include({v:?})"),
            Rule::Exclude(v) => write!(f, "ParamFilter::exclude({v:?})"),
            Rule::NoBiasOrNorm => write!(f, "ParamFilter::no_bias_or_norm()"),
            Rule::Predicate(_) => write!(f, "ParamFilter::predicate(..)"),
        }
    }
}

/// True for a dotted-name segment that names a normalisation layer:
/// it contains `norm` (any case: `norm1`, `LayerNorm`, `batch_norm`) or is
/// `bn`/`ln` alone or followed by a digit or `_` (`bn1`, `ln_f`).
fn is_norm_segment(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    if lower.contains("norm") {
        return true;
    }
    ["bn", "ln"].iter().any(|p| {
        lower.strip_prefix(p).is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit() || c == '_')
        })
    })
}

impl ParamFilter {
    /// Every parameter.
    pub fn all() -> Self {
        ParamFilter { rule: Rule::All }
    }

    /// Parameters whose name contains at least one of `substrings`.
    pub fn include<S: Into<String>>(substrings: impl IntoIterator<Item = S>) -> Self {
        ParamFilter {
            rule: Rule::Include(substrings.into_iter().map(Into::into).collect()),
        }
    }

    /// Parameters whose name contains none of `substrings`.
    pub fn exclude<S: Into<String>>(substrings: impl IntoIterator<Item = S>) -> Self {
        ParamFilter {
            rule: Rule::Exclude(substrings.into_iter().map(Into::into).collect()),
        }
    }

    /// Parameters for which `f(name)` is true.
    pub fn predicate(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        ParamFilter {
            rule: Rule::Predicate(Arc::new(f)),
        }
    }

    /// The usual "no decay on biases and norms" rule: excludes names ending
    /// in `bias` (`fc.bias`, `attn.in_proj_bias`) and names with a dotted
    /// segment that names a normalisation layer — one containing `norm` in
    /// any case (`norm1`, `LayerNorm`, `batch_norm`) or `bn`/`ln` alone or
    /// followed by a digit or `_` (`bn1.weight`, `ln_f.weight`).
    pub fn no_bias_or_norm() -> Self {
        ParamFilter {
            rule: Rule::NoBiasOrNorm,
        }
    }

    /// Whether the parameter called `name` passes the filter.
    pub fn matches(&self, name: &str) -> bool {
        match &self.rule {
            Rule::All => true,
            Rule::Include(v) => v.iter().any(|s| name.contains(s.as_str())),
            Rule::Exclude(v) => !v.iter().any(|s| name.contains(s.as_str())),
            Rule::NoBiasOrNorm => !(name.ends_with("bias") || name.split('.').any(is_norm_segment)),
            Rule::Predicate(f) => f(name),
        }
    }
}

fn check_coefficient(op: &'static str, what: &str, x: f64) -> Result<()> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("{what} must be finite and >= 0, got {x}"),
        ))
    }
}

/// Sums `term(w)` over the parameters that pass `filter`; 0 if none does.
fn sum_over<'a, T, S, I>(
    params: I,
    filter: &ParamFilter,
    term: impl Fn(&Var<T>) -> Result<Var<T>>,
) -> Result<Option<Var<T>>>
where
    T: Element,
    S: AsRef<str>,
    I: IntoIterator<Item = (S, &'a Param<T>)>,
{
    let mut total: Option<Var<T>> = None;
    for (name, p) in params {
        if !filter.matches(name.as_ref()) {
            continue;
        }
        let t = term(&p.var())?;
        total = Some(match total {
            Some(acc) => acc.add(&t)?,
            None => t,
        });
    }
    Ok(total)
}

fn zero<T: Element>() -> Var<T> {
    Var::constant(Tensor::scalar(T::zero()))
}

/// `λ·Σ|w|` over the parameters that pass `filter` (a rank-0 `Var`).
/// Gradient `λ·sign(w)`, with `sign(0) = 0`.
pub fn l1_penalty<'a, T, S, I>(params: I, lambda: f64, filter: &ParamFilter) -> Result<Var<T>>
where
    T: Element,
    S: AsRef<str>,
    I: IntoIterator<Item = (S, &'a Param<T>)>,
{
    check_coefficient("l1_penalty", "lambda", lambda)?;
    let s = sum_over(params, filter, |w| w.abs().sum_all())?;
    Ok(s.map_or_else(zero, |s| s.mul_scalar(T::from_f64_lossy(lambda))))
}

/// `½·λ·Σw²` over the parameters that pass `filter` (a rank-0 `Var`).
/// Gradient `λ·w`: the same as `weight_decay = λ` in PyTorch's SGD/Adam.
pub fn l2_penalty<'a, T, S, I>(params: I, lambda: f64, filter: &ParamFilter) -> Result<Var<T>>
where
    T: Element,
    S: AsRef<str>,
    I: IntoIterator<Item = (S, &'a Param<T>)>,
{
    check_coefficient("l2_penalty", "lambda", lambda)?;
    let s = sum_over(params, filter, |w| w.square().sum_all())?;
    Ok(s.map_or_else(zero, |s| s.mul_scalar(T::from_f64_lossy(0.5 * lambda))))
}

/// Elastic net, `λ₁·Σ|w| + ½·λ₂·Σw²`, over the parameters that pass `filter`.
pub fn elastic_net_penalty<'a, T, S, I>(
    params: I,
    l1: f64,
    l2: f64,
    filter: &ParamFilter,
) -> Result<Var<T>>
where
    T: Element,
    S: AsRef<str>,
    I: IntoIterator<Item = (S, &'a Param<T>)>,
{
    check_coefficient("elastic_net_penalty", "l1", l1)?;
    check_coefficient("elastic_net_penalty", "l2", l2)?;
    let (c1, c2) = (T::from_f64_lossy(l1), T::from_f64_lossy(0.5 * l2));
    let s = sum_over(params, filter, |w| {
        w.abs()
            .sum_all()?
            .mul_scalar(c1)
            .add(&w.square().sum_all()?.mul_scalar(c2))
    })?;
    Ok(s.unwrap_or_else(zero))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bias_or_norm_names() {
        let f = ParamFilter::no_bias_or_norm();
        for kept in [
            "fc.weight",
            "features.0.weight",
            "lstm.weight_ih_l0",
            "attn.in_proj_weight",
            "embedding.weight",
            "lnear.weight",
        ] {
            assert!(f.matches(kept), "{kept}");
        }
        for dropped in [
            "fc.bias",
            "attn.in_proj_bias",
            "bn1.weight",
            "layer1.0.bn2.weight",
            "norm.weight",
            "encoder.layers.0.norm1.weight",
            "embeddings.LayerNorm.weight",
            "ln_f.weight",
            "bn.running_mean",
        ] {
            assert!(!f.matches(dropped), "{dropped}");
        }
    }

    #[test]
    fn include_exclude_predicate() {
        assert!(ParamFilter::include(["conv"]).matches("conv1.weight"));
        assert!(!ParamFilter::include(["conv"]).matches("fc.weight"));
        assert!(!ParamFilter::exclude(["fc", "head"]).matches("head.weight"));
        assert!(ParamFilter::predicate(|n| n.len() < 5).matches("w"));
        assert!(ParamFilter::all().matches("anything"));
    }

    #[test]
    fn penalties_values_and_gradients() {
        let w = Param::new(Tensor::from_vec(vec![1.5f64, -2.0, 0.0], &[3]).unwrap());
        let named = [("w", &w)];
        let all = ParamFilter::all();
        let l1 = l1_penalty(named, 0.3, &all).unwrap();
        assert!((l1.value().item().unwrap() - 0.3 * 3.5).abs() < 1e-15);
        let g = l1.backward().unwrap();
        assert_eq!(g.get(&w).unwrap().to_vec(), vec![0.3, -0.3, 0.0]);

        let l2 = l2_penalty(named, 0.3, &all).unwrap();
        assert!((l2.value().item().unwrap() - 0.5 * 0.3 * 6.25).abs() < 1e-15);
        let g = l2.backward().unwrap();
        assert_eq!(
            g.get(&w).unwrap().to_vec(),
            vec![0.3 * 1.5, 0.3 * -2.0, 0.0]
        );

        let en = elastic_net_penalty(named, 0.3, 0.2, &all).unwrap();
        assert!((en.value().item().unwrap() - (0.3 * 3.5 + 0.1 * 6.25)).abs() < 1e-15);
        let g = en.backward().unwrap().get(&w).unwrap().to_vec();
        assert!((g[0] - (0.3 + 0.2 * 1.5)).abs() < 1e-15);

        let none = l2_penalty(named, 0.3, &ParamFilter::include(["x"])).unwrap();
        assert_eq!(none.value().item().unwrap(), 0.0);
        assert!(l1_penalty(named, -1.0, &all).is_err());
        assert!(elastic_net_penalty(named, 0.1, f64::NAN, &all).is_err());
    }
}
