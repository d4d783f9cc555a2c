//! Finite-difference gradient checking in `f64`.

use std::fmt;

use anneal_tensor::{Error, Result, Tensor};
use rand::{Rng, SeedableRng};

use crate::Var;

/// The worst disagreement found by [`gradcheck`].
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckFailure {
    /// The op that produced the checked output.
    pub op: &'static str,
    /// Which input (position in the `inputs` slice).
    pub input: usize,
    /// The flat element index inside that input.
    pub index: usize,
    /// Gradient from `backward`.
    pub analytic: f64,
    /// Gradient from central differences.
    pub numeric: f64,
}

impl fmt::Display for GradcheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck of {}: input {} element {}: analytic {:.10e} vs numeric {:.10e} (difference {:.3e})",
            self.op,
            self.input,
            self.index,
            self.analytic,
            self.numeric,
            (self.analytic - self.numeric).abs()
        )
    }
}

/// Checks the gradients of `f` at `inputs` against central finite
/// differences: `(F(x + eps) − F(x − eps)) / 2eps`, where
/// `F(x) = ⟨r, f(x)⟩` projects the output on a fixed random direction `r`
/// (so non-scalar outputs are checked too). An element passes when
/// `|analytic − numeric| ≤ tol·(1 + |numeric|)`.
///
/// Returns `Ok(Ok(()))` when every element passes, `Ok(Err(worst))` with the
/// worst element otherwise, and `Err` when `f` itself fails.
pub fn gradcheck(
    f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>,
    inputs: &[Tensor<f64>],
    eps: f64,
    tol: f64,
) -> Result<std::result::Result<(), GradcheckFailure>> {
    if !(eps > 0.0 && eps.is_finite() && tol >= 0.0) {
        return Err(Error::invalid(
            "gradcheck",
            format!("eps {eps} must be positive and tol {tol} non-negative"),
        ));
    }
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| Var::leaf(t.clone())).collect();
    let out = f(&vars)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let r: Vec<f64> = (0..out.value().numel())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let r = Tensor::from_vec(r, out.shape())?;
    let op = out.op_name();
    let grads = out.backward_with(r.clone())?;
    let project = |xs: &[Tensor<f64>]| -> Result<f64> {
        let vs: Vec<Var<f64>> = xs.iter().map(|t| Var::constant(t.clone())).collect();
        let y = f(&vs)?;
        Ok(y.value()
            .as_slice()
            .iter()
            .zip(r.as_slice())
            .map(|(a, b)| a * b)
            .sum())
    };
    let mut worst: Option<(f64, GradcheckFailure)> = None;
    for (i, v) in vars.iter().enumerate() {
        let analytic = grads
            .wrt(v)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros_like(v.value()));
        let mut xs: Vec<Tensor<f64>> = inputs.to_vec();
        for k in 0..inputs[i].numel() {
            let orig = inputs[i].as_slice()[k];
            xs[i].data_mut()[k] = orig + eps;
            let plus = project(&xs)?;
            xs[i].data_mut()[k] = orig - eps;
            let minus = project(&xs)?;
            xs[i].data_mut()[k] = orig;
            let numeric = (plus - minus) / (2.0 * eps);
            let a = analytic.as_slice()[k];
            let excess = (a - numeric).abs() - tol * (1.0 + numeric.abs());
            if excess > 0.0 || !a.is_finite() {
                let failure = GradcheckFailure {
                    op,
                    input: i,
                    index: k,
                    analytic: a,
                    numeric,
                };
                let score = if a.is_finite() { excess } else { f64::INFINITY };
                if worst.as_ref().is_none_or(|(s, _)| score > *s) {
                    worst = Some((score, failure));
                }
            }
        }
    }
    Ok(match worst {
        Some((_, w)) => Err(w),
        None => Ok(()),
    })
}
