//! Weight initialisers (`torch.nn.init`): Xavier/Glorot, Kaiming/He,
//! orthogonal, constants, and PyTorch's layer defaults.

use anneal_tensor::{Element, Error, Result, Tensor};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Which fan Kaiming initialisation preserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    /// Preserve the variance of activations in the forward pass.
    FanIn,
    /// Preserve the variance of gradients in the backward pass.
    FanOut,
}

/// The non-linearity a gain is computed for (`torch.nn.init.calculate_gain`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Nonlinearity {
    /// Linear / identity / convolutions / sigmoid: gain 1.
    Linear,
    /// tanh: gain 5/3.
    Tanh,
    /// ReLU: gain √2.
    Relu,
    /// Leaky ReLU with the given negative slope: gain √(2/(1 + a²)).
    LeakyRelu(f64),
    /// SELU: gain 3/4.
    Selu,
}

/// `torch.nn.init.calculate_gain`.
pub fn calculate_gain(nl: Nonlinearity) -> f64 {
    match nl {
        Nonlinearity::Linear => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu(a) => (2.0 / (1.0 + a * a)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// `(fan_in, fan_out)` of a weight shape as PyTorch computes them:
/// `fan_in = shape[1]·receptive`, `fan_out = shape[0]·receptive`.
pub fn fan_in_out(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::shape(
            "init",
            &[shape],
            "fan in and fan out need a tensor of rank ≥ 2",
        ));
    }
    let too_large = || Error::TooLarge {
        op: "init",
        shape: shape.to_vec(),
    };
    let receptive = shape[2..]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_large)?;
    let fan_in = shape[1].checked_mul(receptive).ok_or_else(too_large)?;
    let fan_out = shape[0].checked_mul(receptive).ok_or_else(too_large)?;
    Ok((fan_in, fan_out))
}

/// Uniform samples in `[-bound, bound)`.
pub fn uniform<T: Element>(shape: &[usize], bound: f64, rng: &mut impl Rng) -> Result<Tensor<T>> {
    let b = T::from_f64_lossy(bound);
    Tensor::rand_uniform(shape, -b, b, rng)
}

/// Normal samples with mean 0 and standard deviation `std`.
pub fn normal<T: Element>(shape: &[usize], std: f64, rng: &mut impl Rng) -> Result<Tensor<T>> {
    Ok(Tensor::<T>::randn(shape, rng)?.mul_scalar(T::from_f64_lossy(std)))
}

/// Xavier/Glorot uniform: `U(−a, a)`, `a = gain·√(6/(fan_in + fan_out))`.
pub fn xavier_uniform<T: Element>(
    shape: &[usize],
    gain: f64,
    rng: &mut impl Rng,
) -> Result<Tensor<T>> {
    let (fi, fo) = fan_in_out(shape)?;
    uniform(shape, gain * (6.0 / (fi as f64 + fo as f64)).sqrt(), rng)
}

/// Xavier/Glorot normal: `N(0, σ²)`, `σ = gain·√(2/(fan_in + fan_out))`.
pub fn xavier_normal<T: Element>(
    shape: &[usize],
    gain: f64,
    rng: &mut impl Rng,
) -> Result<Tensor<T>> {
    let (fi, fo) = fan_in_out(shape)?;
    normal(shape, gain * (2.0 / (fi as f64 + fo as f64)).sqrt(), rng)
}

fn kaiming_std(shape: &[usize], mode: FanMode, nl: Nonlinearity) -> Result<f64> {
    let (fi, fo) = fan_in_out(shape)?;
    let fan = match mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    };
    if fan == 0 {
        return Err(Error::shape("kaiming init", &[shape], "fan is zero"));
    }
    Ok(calculate_gain(nl) / (fan as f64).sqrt())
}

/// Kaiming/He uniform: `U(−b, b)`, `b = gain·√(3/fan)`.
pub fn kaiming_uniform<T: Element>(
    shape: &[usize],
    mode: FanMode,
    nl: Nonlinearity,
    rng: &mut impl Rng,
) -> Result<Tensor<T>> {
    let std = kaiming_std(shape, mode, nl)?;
    uniform(shape, 3f64.sqrt() * std, rng)
}

/// Kaiming/He normal: `N(0, σ²)`, `σ = gain/√fan`.
pub fn kaiming_normal<T: Element>(
    shape: &[usize],
    mode: FanMode,
    nl: Nonlinearity,
    rng: &mut impl Rng,
) -> Result<Tensor<T>> {
    normal(shape, kaiming_std(shape, mode, nl)?, rng)
}

/// A (semi-)orthogonal matrix scaled by `gain` (`torch.nn.init.orthogonal_`):
/// the Q factor of a Gaussian matrix, sign-corrected by `diag(R)`, computed
/// with modified Gram–Schmidt in f64. Trailing axes are flattened.
pub fn orthogonal<T: Element>(shape: &[usize], gain: f64, rng: &mut impl Rng) -> Result<Tensor<T>> {
    if shape.len() < 2 {
        return Err(Error::shape(
            "orthogonal init",
            &[shape],
            "needs a tensor of rank ≥ 2",
        ));
    }
    let op = "orthogonal init";
    let numel = anneal_tensor::checked_numel(op, shape)?;
    // Both buffers are reserved up front, so a shape the allocator cannot
    // hold is an error rather than an abort.
    let mut out = Tensor::<T>::zeros(shape)?;
    let rows = shape[0];
    let cols = numel.checked_div(rows).unwrap_or(0);
    // Orthonormalise the columns of a tall (n × k) Gaussian matrix, k ≤ n,
    // stored column after column: column j is q[j·n..(j + 1)·n].
    let (n, k) = if rows < cols {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut q: Vec<f64> = Vec::new();
    q.try_reserve_exact(n * k).map_err(|_| Error::TooLarge {
        op,
        shape: shape.to_vec(),
    })?;
    q.extend((0..n * k).map(|_| -> f64 { StandardNormal.sample(rng) }));
    for j in 0..k {
        let (done, rest) = q.split_at_mut(j * n);
        let qj = &mut rest[..n];
        for qi in done.chunks_exact(n) {
            let dot: f64 = qi.iter().zip(qj.iter()).map(|(a, b)| a * b).sum();
            for (b, a) in qj.iter_mut().zip(qi) {
                *b -= dot * a;
            }
        }
        let norm = qj.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(Error::invalid(op, "degenerate random matrix"));
        }
        qj.iter_mut().for_each(|v| *v /= norm);
    }
    let data = out.data_mut();
    for r in 0..rows {
        for c in 0..cols {
            // Q is n × k with orthonormal columns; transpose when rows < cols.
            let v = if rows < cols {
                q[r * n + c]
            } else {
                q[c * n + r]
            };
            data[r * cols + c] = T::from_f64_lossy(gain * v);
        }
    }
    Ok(out)
}

/// PyTorch's default for Linear/Conv weights: `kaiming_uniform_(a=√5)`,
/// i.e. `U(−1/√fan_in, 1/√fan_in)`.
pub fn default_weight<T: Element>(shape: &[usize], rng: &mut impl Rng) -> Result<Tensor<T>> {
    kaiming_uniform(
        shape,
        FanMode::FanIn,
        Nonlinearity::LeakyRelu(5f64.sqrt()),
        rng,
    )
}

/// PyTorch's default bias: `U(−1/√fan_in, 1/√fan_in)`.
pub fn default_bias<T: Element>(
    len: usize,
    fan_in: usize,
    rng: &mut impl Rng,
) -> Result<Tensor<T>> {
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    };
    uniform(&[len], bound, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gains_and_fans() {
        assert_eq!(calculate_gain(Nonlinearity::Relu), 2f64.sqrt());
        assert!(
            (calculate_gain(Nonlinearity::LeakyRelu(5f64.sqrt())) - (1.0f64 / 3.0).sqrt()).abs()
                < 1e-15
        );
        assert_eq!(fan_in_out(&[64, 32, 3, 3]).unwrap(), (288, 576));
        assert!(fan_in_out(&[3]).is_err());
    }

    #[test]
    fn default_bound_is_one_over_sqrt_fan_in() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let w = default_weight::<f64>(&[200, 100], &mut rng).unwrap();
        let m = w.abs().max_all().unwrap();
        assert!(m <= 0.1 && m > 0.099, "{m}");
    }

    #[test]
    fn orthogonal_rows_are_orthonormal() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for shape in [[4usize, 6], [6, 4]] {
            let q = orthogonal::<f64>(&shape, 1.0, &mut rng).unwrap();
            let g = if shape[0] < shape[1] {
                q.matmul_t(&q, false, true).unwrap()
            } else {
                q.matmul_t(&q, true, false).unwrap()
            };
            let eye = Tensor::<f64>::eye(4).unwrap();
            for (a, b) in g.to_vec().iter().zip(eye.to_vec()) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }
}
