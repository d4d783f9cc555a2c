//! Selection by mask (`where`, `masked_fill`) and the dropout-mask multiply.

use anneal_tensor::{Element, Result, Tensor};
use rand::Rng;

use crate::Var;

impl<T: Element> Var<T> {
    /// `torch.where(mask, self, other)` with broadcasting; `∂` routes `g` to
    /// the branch each element came from.
    pub fn where_cond(mask: &Tensor<bool>, on_true: &Self, on_false: &Self) -> Result<Self> {
        let y = Tensor::where_cond(mask, on_true.value(), on_false.value())?;
        let (m, st, sf) = (
            mask.clone(),
            on_true.shape().to_vec(),
            on_false.shape().to_vec(),
        );
        Ok(Var::from_op(
            "where",
            y,
            &[on_true, on_false],
            move |g, need| {
                let zero = Tensor::zeros(&[])?;
                let gt = if need[0] {
                    Some(Tensor::where_cond(&m, g, &zero)?.sum_to_shape(&st)?)
                } else {
                    None
                };
                let gf = if need[1] {
                    Some(Tensor::where_cond(&m, &zero, g)?.sum_to_shape(&sf)?)
                } else {
                    None
                };
                Ok(vec![gt, gf])
            },
        ))
    }

    /// Sets elements where `mask` is true to `value`; they get no gradient.
    pub fn masked_fill(&self, mask: &Tensor<bool>, value: T) -> Result<Self> {
        let y = self.value().masked_fill(mask, value)?;
        let m = mask.clone();
        Ok(Var::from_op("masked_fill", y, &[self], move |g, _| {
            Ok(vec![Some(g.masked_fill(&m, T::zero())?)])
        }))
    }

    /// Multiplies by a fixed mask (`∂ = g ⊙ mask`), e.g. a dropout mask that
    /// already holds `0` or `1/(1 − p)`.
    pub fn mul_mask(&self, mask: &Tensor<T>) -> Result<Self> {
        let y = self.value().mul(mask)?;
        let (m, s) = (mask.clone(), self.shape().to_vec());
        Ok(Var::from_op("mul_mask", y, &[self], move |g, _| {
            Ok(vec![Some(g.mul(&m)?.sum_to_shape(&s)?)])
        }))
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales
    /// the rest by `1/(1 − p)`, drawing the mask from `rng`.
    pub fn dropout(&self, p: f64, rng: &mut impl Rng) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(anneal_tensor::Error::invalid(
                "dropout",
                format!("probability {p} is outside [0, 1]"),
            ));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let keep = T::from_f64_lossy(if p == 1.0 { 0.0 } else { 1.0 / (1.0 - p) });
        let mask: Vec<T> = (0..self.value().numel())
            .map(|_| {
                if rng.random::<f64>() < p {
                    T::zero()
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, self.shape())?;
        self.mul_mask(&mask)
    }
}
