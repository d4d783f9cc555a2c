//! Fake quantisation as a differentiable op: the forward quantises and
//! dequantises, the backward is the straight-through estimator (Bengio et
//! al. 2013) clipped to the representable range, as PyTorch's
//! `fake_quantize_per_tensor_affine` / `_per_channel_affine`.

use anneal_autograd::Var;
use anneal_tensor::{Error, Result, Tensor};

/// `y = (clamp(round_half_even(x/s) + z, qmin, qmax) − z)·s`, per tensor
/// (`scales.len() == 1`) or per channel along axis 0. The gradient passes
/// where `qmin ≤ round(x/s) + z ≤ qmax` and is zero elsewhere.
pub fn fake_quantize_ste(
    x: &Var<f32>,
    scales: &[f32],
    zero_points: &[i32],
    qmin: i32,
    qmax: i32,
) -> Result<Var<f32>> {
    let op = "fake_quantize";
    let channels = if scales.len() == 1 {
        1
    } else {
        x.shape().first().copied().unwrap_or(0)
    };
    if scales.len() != zero_points.len() || (scales.len() != 1 && scales.len() != channels) {
        return Err(Error::invalid(
            op,
            format!(
                "{} scales and {} zero points for input {:?}",
                scales.len(),
                zero_points.len(),
                x.shape()
            ),
        ));
    }
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) || qmin > qmax {
        return Err(Error::invalid(
            op,
            format!("scales must be finite and positive and qmin {qmin} ≤ qmax {qmax}"),
        ));
    }
    let per = x.value().numel() / channels.max(1);
    let xs = x.value().as_slice();
    let mut y = vec![0f32; xs.len()];
    let mut pass = vec![false; xs.len()];
    for (i, (&v, (yo, po))) in xs.iter().zip(y.iter_mut().zip(pass.iter_mut())).enumerate() {
        let c = if scales.len() == 1 { 0 } else { i / per.max(1) };
        let (s, z) = (scales[c], zero_points[c]);
        let r = (v / s).round_ties_even() as f64 + z as f64;
        *po = r >= qmin as f64 && r <= qmax as f64;
        let q = r.clamp(qmin as f64, qmax as f64);
        *yo = ((q - z as f64) as f32) * s;
    }
    let value = Tensor::from_vec(y, x.shape())?;
    let mask = Tensor::from_vec(pass, x.shape())?;
    Ok(Var::custom(op, value, &[x], move |g, _| {
        Ok(vec![Some(g.zip_with(&mask, "fake_quantize", |g, m| {
            if m {
                g
            } else {
                0.0
            }
        })?)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_straight_through_gradient() {
        // s = 0.5, z = 0, range [−2, 2] (codes −4..4): 0.3 → 0.5 (passes), 3.0 → 2.0 (clipped).
        let x = Var::leaf(Tensor::from_vec(vec![0.3f32, 3.0, -0.74], &[3]).unwrap());
        let y = fake_quantize_ste(&x, &[0.5], &[0], -4, 4).unwrap();
        assert_eq!(y.value().to_vec(), vec![0.5, 2.0, -0.5]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.wrt(&x).unwrap().to_vec(), vec![1.0, 0.0, 1.0]);
        assert!(fake_quantize_ste(&x, &[0.0], &[0], -4, 4).is_err());
    }
}
