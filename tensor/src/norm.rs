//! Layer normalisation over trailing elements as one pass per row, with its
//! hand-written backward pass.
//!
//! Each row of `n` trailing elements is normalised with its own mean and
//! biased variance, `x̂ = (x − μ)/√(σ² + ε)`, then scaled and shifted,
//! `y = x̂⊙γ + β`. The backward pass reuses `x̂` and `1/√(σ² + ε)`:
//! `dx = (ĝ − mean(ĝ) − x̂⊙mean(ĝ⊙x̂))/√(σ² + ε)` with `ĝ = g⊙γ`,
//! `dγ = Σ_rows g⊙x̂`, `dβ = Σ_rows g`.
//!
//! Rows are split over threads in fixed blocks and the parameter gradients
//! are summed over rows in one fixed order, so results do not depend on the
//! thread count.

use rayon::prelude::*;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::parallel::PARALLEL_THRESHOLD;
use crate::simd_math;
use crate::Tensor;

/// Rows per parallel task.
const ROW_BLOCK: usize = 32;

/// The result of [`Tensor::layer_norm`], with what its
/// [`backward`](Self::backward) pass reuses.
#[derive(Debug, Clone)]
pub struct LayerNormOutput<T: Element> {
    output: Tensor<T>,
    /// Elements per row.
    n: usize,
    /// `x̂`, row-major `[rows, n]`.
    x_hat: Vec<T>,
    /// `1/√(σ² + ε)` per row.
    rstd: Vec<T>,
    weight: Option<Tensor<T>>,
}

/// Gradients from [`LayerNormOutput::backward`].
#[derive(Debug, Clone)]
pub struct LayerNormGrads<T: Element> {
    /// Gradient of the input (its shape).
    pub input: Tensor<T>,
    /// Gradient of the weight `γ`, when there is one.
    pub weight: Option<Tensor<T>>,
    /// Gradient of the bias `β`, when there is one.
    pub bias: Option<Tensor<T>>,
}

/// Runs `f(row_index, rows of a, rows of b)` over blocks of `ROW_BLOCK` rows
/// of two row-major buffers (`n` and `1` elements per row), in parallel
/// when the work is large.
fn for_row_blocks<A: Send, B: Send>(
    a: &mut [A],
    b: &mut [B],
    n: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    if n == 0 {
        return;
    }
    let parallel = a.len() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1;
    if parallel {
        a.par_chunks_mut(ROW_BLOCK * n)
            .zip(b.par_chunks_mut(ROW_BLOCK))
            .enumerate()
            .for_each(|(i, (a, b))| f(i * ROW_BLOCK, a, b));
    } else {
        a.chunks_mut(ROW_BLOCK * n)
            .zip(b.chunks_mut(ROW_BLOCK))
            .enumerate()
            .for_each(|(i, (a, b))| f(i * ROW_BLOCK, a, b));
    }
}

impl<T: Element> Tensor<T> {
    /// Layer normalisation over the last `n` elements of every row
    /// (`F.layer_norm` with `normalized_shape` of `n` elements in total):
    /// `(x − mean)/√(var + eps)·weight + bias`, biased variance. `weight`
    /// and `bias` hold `n` elements each (any shape).
    ///
    /// # Errors
    /// When `n` is 0 or does not divide the element count, or a parameter
    /// does not hold `n` elements.
    pub fn layer_norm(
        &self,
        n: usize,
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: f64,
    ) -> Result<LayerNormOutput<T>> {
        let op = "layer_norm";
        if n == 0 || !self.numel().is_multiple_of(n) {
            return Err(Error::invalid(
                op,
                format!(
                    "cannot normalise groups of {n} trailing elements of {}",
                    crate::shape::shape_to_string(self.shape())
                ),
            ));
        }
        for (name, p) in [("weight", weight), ("bias", bias)] {
            if let Some(p) = p {
                if p.numel() != n {
                    return Err(Error::shape(
                        op,
                        &[p.shape(), self.shape()],
                        format!("{name} must hold the {n} normalised elements"),
                    ));
                }
            }
        }
        let rows = self.numel() / n;
        let x = self.as_slice();
        let mut out = vec![T::zero(); rows * n];
        let mut x_hat = vec![T::zero(); rows * n];
        let mut rstd = vec![T::zero(); rows];
        let eps = T::from_f64_lossy(eps);
        let inv_n = T::one() / T::from_f64_lossy(n as f64);
        let (w, b) = (weight.map(Tensor::as_slice), bias.map(Tensor::as_slice));
        let mut stats = x_hat.chunks_mut(n).zip(rstd.iter_mut()).collect::<Vec<_>>();
        for_row_blocks(&mut out, &mut stats, n, |r0, ys, stats| {
            for (j, (y, (xh, rs))) in ys.chunks_exact_mut(n).zip(stats.iter_mut()).enumerate() {
                let row = &x[(r0 + j) * n..][..n];
                let mean = simd_math::sum(row) * inv_n;
                for (h, &v) in xh.iter_mut().zip(row) {
                    *h = v - mean;
                }
                let r = T::one() / (simd_math::dot(xh, xh) * inv_n + eps).sqrt();
                for h in xh.iter_mut() {
                    *h *= r;
                }
                **rs = r;
                match (w, b) {
                    (Some(w), Some(b)) => {
                        for (((y, &h), &w), &b) in y.iter_mut().zip(xh.iter()).zip(w).zip(b) {
                            *y = h * w + b;
                        }
                    }
                    (Some(w), None) => {
                        for ((y, &h), &w) in y.iter_mut().zip(xh.iter()).zip(w) {
                            *y = h * w;
                        }
                    }
                    (None, Some(b)) => {
                        for ((y, &h), &b) in y.iter_mut().zip(xh.iter()).zip(b) {
                            *y = h + b;
                        }
                    }
                    (None, None) => y.copy_from_slice(xh),
                }
            }
        });
        drop(stats);
        Ok(LayerNormOutput {
            output: Tensor::from_parts(out, self.shape().to_vec()),
            n,
            x_hat,
            rstd,
            weight: weight.cloned(),
        })
    }
}

impl<T: Element> LayerNormOutput<T> {
    /// The normalised (scaled and shifted) values, the input's shape.
    pub fn output(&self) -> &Tensor<T> {
        &self.output
    }

    /// The gradients of the input, weight and bias given that of the
    /// output; `want_params` false skips the weight and bias sums.
    ///
    /// # Errors
    /// When `grad` does not have the output's shape.
    pub fn backward(&self, grad: &Tensor<T>, want_params: bool) -> Result<LayerNormGrads<T>> {
        if grad.shape() != self.output.shape() {
            return Err(Error::shape(
                "layer_norm backward",
                &[grad.shape(), self.output.shape()],
                "the output gradient must have the output's shape",
            ));
        }
        let (rows, n) = (self.rstd.len(), self.n);
        let g = grad.as_slice();
        let w = self.weight.as_ref().map(Tensor::as_slice);
        let inv_n = T::one() / T::from_f64_lossy(n as f64);
        let mut dx = vec![T::zero(); rows * n];
        let mut unused = vec![(); rows];
        for_row_blocks(&mut dx, &mut unused, n, |r0, dxs, _| {
            for (j, d) in dxs.chunks_exact_mut(n).enumerate() {
                let r = r0 + j;
                let (gr, xh) = (&g[r * n..][..n], &self.x_hat[r * n..][..n]);
                // d holds ĝ = g⊙γ first.
                match w {
                    Some(w) => d
                        .iter_mut()
                        .zip(gr)
                        .zip(w)
                        .for_each(|((d, &g), &w)| *d = g * w),
                    None => d.copy_from_slice(gr),
                }
                let a = simd_math::sum(d) * inv_n;
                let (c, rs) = (simd_math::dot(d, xh) * inv_n, self.rstd[r]);
                for (dv, &h) in d.iter_mut().zip(xh) {
                    *dv = (*dv - a - h * c) * rs;
                }
            }
        });
        let (mut dw, mut db) = (None, None);
        if want_params {
            let mut sw = vec![T::zero(); n];
            let mut sb = vec![T::zero(); n];
            for (gr, xh) in g.chunks_exact(n).zip(self.x_hat.chunks_exact(n)) {
                for (((sw, sb), &gv), &h) in sw.iter_mut().zip(sb.iter_mut()).zip(gr).zip(xh) {
                    *sw += gv * h;
                    *sb += gv;
                }
            }
            dw = Some(sw);
            db = Some(sb);
        }
        let param_shape = |v: Vec<T>| Tensor::from_parts(v, vec![n]);
        Ok(LayerNormGrads {
            input: Tensor::from_parts(dx, self.output.shape().to_vec()),
            weight: dw.map(param_shape),
            bias: db.map(param_shape),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composed(x: &Tensor<f64>, n: usize, w: &Tensor<f64>, b: &Tensor<f64>) -> Tensor<f64> {
        let rows = x.numel() / n;
        let x = x.reshape(&[rows, n]).unwrap();
        let mean = x.mean_axes(&[1], true).unwrap();
        let c = x.sub(&mean).unwrap();
        let var = c.square().mean_axes(&[1], true).unwrap();
        c.div(&var.add_scalar(1e-5).sqrt())
            .unwrap()
            .mul(w)
            .unwrap()
            .add(b)
            .unwrap()
    }

    #[test]
    fn forward_matches_the_formula() {
        let x = Tensor::<f64>::randn_seeded(&[3, 4, 6], 1).unwrap();
        let w = Tensor::<f64>::randn_seeded(&[6], 2).unwrap();
        let b = Tensor::<f64>::randn_seeded(&[6], 3).unwrap();
        let y = x.layer_norm(6, Some(&w), Some(&b), 1e-5).unwrap();
        assert_eq!(y.output().shape(), &[3, 4, 6]);
        let want = composed(&x, 6, &w, &b);
        for (a, b) in y.output().as_slice().iter().zip(want.as_slice()) {
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
        }
        // Without parameters: zero mean, unit (biased) variance per row.
        let y = x.layer_norm(24, None, None, 0.0).unwrap();
        for row in y.output().as_slice().chunks(24) {
            let m: f64 = row.iter().sum::<f64>() / 24.0;
            let v: f64 = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / 24.0;
            assert!(m.abs() < 1e-15 && (v - 1.0).abs() < 1e-14);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let x = Tensor::<f64>::randn_seeded(&[5, 4], 4).unwrap();
        let w = Tensor::<f64>::randn_seeded(&[4], 5).unwrap();
        let b = Tensor::<f64>::randn_seeded(&[4], 6).unwrap();
        let u = Tensor::<f64>::randn_seeded(&[5, 4], 7).unwrap();
        let loss = |x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>| -> f64 {
            let y = x.layer_norm(4, Some(w), Some(b), 1e-5).unwrap();
            y.output()
                .as_slice()
                .iter()
                .zip(u.as_slice())
                .map(|(a, b)| a * b)
                .sum()
        };
        let g = x
            .layer_norm(4, Some(&w), Some(&b), 1e-5)
            .unwrap()
            .backward(&u, true)
            .unwrap();
        let eps = 1e-6;
        let numeric = |which: usize, i: usize| {
            let mut args = [x.clone(), w.clone(), b.clone()];
            args[which].data_mut()[i] += eps;
            let hi = loss(&args[0], &args[1], &args[2]);
            args[which].data_mut()[i] -= 2.0 * eps;
            let lo = loss(&args[0], &args[1], &args[2]);
            (hi - lo) / (2.0 * eps)
        };
        let grads = [
            &g.input,
            g.weight.as_ref().unwrap(),
            g.bias.as_ref().unwrap(),
        ];
        for (which, analytic) in grads.iter().enumerate() {
            for (i, &a) in analytic.as_slice().iter().enumerate() {
                let n = numeric(which, i);
                assert!(
                    (a - n).abs() < 1e-7,
                    "input {which} element {i}: {a} vs {n}"
                );
            }
        }
        // Skipping the parameter sums leaves the input gradient unchanged.
        let h = x
            .layer_norm(4, Some(&w), Some(&b), 1e-5)
            .unwrap()
            .backward(&u, false)
            .unwrap();
        assert_eq!(h.input, g.input);
        assert!(h.weight.is_none() && h.bias.is_none());
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::<f32>::zeros(&[2, 6]).unwrap();
        let e = x.layer_norm(5, None, None, 1e-5).unwrap_err().to_string();
        assert!(e.starts_with("layer_norm: ") && e.contains("[2, 6]"), "{e}");
        assert!(x.layer_norm(0, None, None, 1e-5).is_err());
        let w = Tensor::<f32>::zeros(&[5]).unwrap();
        assert!(x.layer_norm(6, Some(&w), None, 1e-5).is_err());
        let y = x.layer_norm(6, None, None, 1e-5).unwrap();
        assert!(y.backward(&w, true).is_err());
        // An empty input is fine.
        let e = Tensor::<f32>::zeros(&[0, 6]).unwrap();
        let y = e.layer_norm(6, None, None, 1e-5).unwrap();
        let g = y.backward(y.output(), true).unwrap();
        assert_eq!(g.input.shape(), &[0, 6]);
        assert_eq!(g.bias.unwrap().to_vec(), vec![0.0; 6]);
    }
}
