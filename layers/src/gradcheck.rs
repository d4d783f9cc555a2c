//! Finite-difference gradient checking of a whole module: its inputs and
//! every parameter, in `f64`.

use std::fmt;

use anneal_autograd::Var;
use anneal_tensor::{Error, Result, Tensor};
use rand::{Rng, SeedableRng};

use crate::module::{Entry, EntryMut, Module};

/// The worst disagreement found by [`gradcheck_module`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleGradcheckFailure {
    /// `input{i}` or the parameter's dotted name.
    pub name: String,
    /// Flat element index.
    pub index: usize,
    /// Gradient from `backward`.
    pub analytic: f64,
    /// Gradient from central differences.
    pub numeric: f64,
}

impl fmt::Display for ModuleGradcheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck of {} element {}: analytic {:.10e} vs numeric {:.10e}",
            self.name, self.index, self.analytic, self.numeric
        )
    }
}

fn nth_param_data(module: &mut dyn Module<f64>, n: usize, f: &mut dyn FnMut(&mut [f64])) {
    let mut i = 0;
    module.visit_mut("", &mut |_, e| {
        if let EntryMut::Param(p) = e {
            if i == n {
                f(p.value_mut().data_mut());
            }
            i += 1;
        }
    });
}

/// Checks the gradients of `forward(module, inputs)` with respect to the
/// inputs and every trainable parameter against central differences of the
/// output projected on a fixed random direction. An element passes when
/// `|analytic − numeric| ≤ tol·(1 + |numeric|)`. `forward` may use training
/// mode (e.g. BatchNorm with batch statistics).
///
/// Returns `Ok(Ok(()))` on success, `Ok(Err(worst))` otherwise, `Err` if the
/// forward itself fails.
pub fn gradcheck_module<M: Module<f64>>(
    module: &mut M,
    inputs: &[Tensor<f64>],
    mut forward: impl FnMut(&mut M, &[Var<f64>]) -> Result<Var<f64>>,
    eps: f64,
    tol: f64,
) -> Result<std::result::Result<(), ModuleGradcheckFailure>> {
    if !(eps > 0.0 && eps.is_finite() && tol >= 0.0) {
        return Err(Error::invalid(
            "gradcheck_module",
            format!("eps {eps} must be positive and tol {tol} non-negative"),
        ));
    }
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| Var::leaf(t.clone())).collect();
    let out = forward(module, &vars)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let r = Tensor::from_vec(
        (0..out.value().numel())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
        out.shape(),
    )?;
    let grads = out.backward_with(r.clone())?;
    let mut names = Vec::new();
    let mut analytic_params = Vec::new();
    module.visit("", &mut |name, e| {
        if let Entry::Param(p) = e {
            names.push((name.to_string(), p.requires_grad()));
            analytic_params.push(
                grads
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros_like(p.value())),
            );
        }
    });
    let mut project = |m: &mut M, xs: &[Tensor<f64>]| -> Result<f64> {
        let vs: Vec<Var<f64>> = xs.iter().map(|t| Var::constant(t.clone())).collect();
        let y = forward(m, &vs)?;
        Ok(y.value()
            .as_slice()
            .iter()
            .zip(r.as_slice())
            .map(|(a, b)| a * b)
            .sum())
    };
    let mut worst: Option<(f64, ModuleGradcheckFailure)> = None;
    let mut consider = |name: &str, index: usize, a: f64, numeric: f64| {
        let excess = (a - numeric).abs() - tol * (1.0 + numeric.abs());
        if excess > 0.0 || !a.is_finite() {
            let score = if a.is_finite() { excess } else { f64::INFINITY };
            if worst.as_ref().is_none_or(|(s, _)| score > *s) {
                worst = Some((
                    score,
                    ModuleGradcheckFailure {
                        name: name.to_string(),
                        index,
                        analytic: a,
                        numeric,
                    },
                ));
            }
        }
    };
    let mut xs = inputs.to_vec();
    for (i, v) in vars.iter().enumerate() {
        let analytic = grads
            .wrt(v)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros_like(v.value()));
        for k in 0..inputs[i].numel() {
            let orig = inputs[i].as_slice()[k];
            xs[i].data_mut()[k] = orig + eps;
            let plus = project(module, &xs)?;
            xs[i].data_mut()[k] = orig - eps;
            let minus = project(module, &xs)?;
            xs[i].data_mut()[k] = orig;
            consider(
                &format!("input{i}"),
                k,
                analytic.as_slice()[k],
                (plus - minus) / (2.0 * eps),
            );
        }
    }
    for (pi, ((name, trainable), analytic)) in names.iter().zip(&analytic_params).enumerate() {
        if !trainable {
            continue;
        }
        for k in 0..analytic.numel() {
            let mut orig = 0.0;
            nth_param_data(module, pi, &mut |d| {
                orig = d[k];
                d[k] = orig + eps;
            });
            let plus = project(module, &xs)?;
            nth_param_data(module, pi, &mut |d| d[k] = orig - eps);
            let minus = project(module, &xs)?;
            nth_param_data(module, pi, &mut |d| d[k] = orig);
            consider(
                name,
                k,
                analytic.as_slice()[k],
                (plus - minus) / (2.0 * eps),
            );
        }
    }
    Ok(match worst {
        Some((_, w)) => Err(w),
        None => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinearConfig, ModuleExt};

    #[test]
    fn linear_passes_and_a_wrong_forward_fails() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut lin = LinearConfig::new(3, 2).init::<f64>(&mut rng).unwrap();
        let x = Tensor::<f64>::randn_seeded(&[4, 3], 1).unwrap();
        let ok = gradcheck_module(
            &mut lin,
            std::slice::from_ref(&x),
            |m, v| m.forward(&v[0]),
            1e-6,
            1e-7,
        )
        .unwrap();
        assert!(ok.is_ok(), "{}", ok.unwrap_err());
        // Detaching the weight hides its gradient: the check must notice.
        let bad = gradcheck_module(
            &mut lin,
            &[x],
            |m, v| v[0].linear(&m.weight.var().detach(), None),
            1e-6,
            1e-7,
        )
        .unwrap();
        assert_eq!(bad.unwrap_err().name, "weight");
        assert_eq!(lin.num_parameters(), 8);
    }
}
