//! Matrix products and the linear map, forward and backward.
//!
//! For `C = op(A)·op(B)` with `op` an optional transpose, the adjoints are
//! `dA = dC·op(B)ᵀ` and `dB = op(A)ᵀ·dC` (transposed back when `A` or `B`
//! entered transposed), summed over broadcast batch axes.

use anneal_tensor::{Element, Error, Result};

use crate::Var;

impl<T: Element> Var<T> {
    /// Matrix product with `torch.matmul`'s rules (vectors, batches,
    /// broadcast batch axes).
    pub fn matmul(&self, rhs: &Self) -> Result<Self> {
        self.matmul_t(rhs, false, false)
    }

    /// [`Var::matmul`] with either operand's last two axes transposed.
    pub fn matmul_t(&self, rhs: &Self, ta: bool, tb: bool) -> Result<Self> {
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::shape(
                "matmul",
                &[self.shape(), rhs.shape()],
                "operands must have rank ≥ 1",
            ));
        }
        // Vectors become matrices through differentiable reshapes.
        if self.rank() == 1 && rhs.rank() == 1 {
            let a = self.unsqueeze(0)?;
            let b = rhs.unsqueeze(1)?;
            return a.matmul_t(&b, false, false)?.reshape(&[]);
        }
        if self.rank() == 1 {
            let a = self.unsqueeze(0)?;
            return a.matmul_t(rhs, false, tb)?.squeeze(-2);
        }
        if rhs.rank() == 1 {
            let b = rhs.unsqueeze(1)?;
            return self.matmul_t(&b, ta, false)?.squeeze(-1);
        }
        let y = self.value().matmul_t(rhs.value(), ta, tb)?;
        let (a, b) = (self.value().clone(), rhs.value().clone());
        Ok(Var::from_op("matmul", y, &[self, rhs], move |g, need| {
            let ga = if need[0] {
                let d = match (ta, tb) {
                    (false, false) => g.matmul_t(&b, false, true)?,
                    (false, true) => g.matmul_t(&b, false, false)?,
                    (true, false) => b.matmul_t(g, false, true)?,
                    (true, true) => b.matmul_t(g, true, true)?,
                };
                Some(d.sum_to_shape(a.shape())?)
            } else {
                None
            };
            let gb = if need[1] {
                let d = match (ta, tb) {
                    (false, false) => a.matmul_t(g, true, false)?,
                    (false, true) => g.matmul_t(&a, true, false)?,
                    (true, false) => a.matmul_t(g, false, false)?,
                    (true, true) => g.matmul_t(&a, true, true)?,
                };
                Some(d.sum_to_shape(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }

    /// `self·weightᵀ + bias` (`torch.nn.functional.linear`), bias fused
    /// into the GEMM.
    ///
    /// # Shapes
    /// `self [.., in]`, `weight [out, in]`, `bias [out]` → `[.., out]`.
    pub fn linear(&self, weight: &Self, bias: Option<&Self>) -> Result<Self> {
        let y = self
            .value()
            .linear(weight.value(), bias.map(|b| b.value()))?;
        let (x, w) = (self.value().clone(), weight.value().clone());
        let mut parents = vec![self, weight];
        if let Some(b) = bias {
            parents.push(b);
        }
        Ok(Var::from_op("linear", y, &parents, move |g, need| {
            let (out_f, in_f) = (w.shape()[0], w.shape()[1]);
            let rows = g.numel() / out_f.max(1);
            let g2 = g.reshape(&[rows, out_f])?;
            let gx = if need[0] { Some(g.matmul(&w)?) } else { None };
            let gw = if need[1] {
                let x2 = x.reshape(&[rows, in_f])?;
                Some(g2.matmul_t(&x2, true, false)?)
            } else {
                None
            };
            let mut out = vec![gx, gw];
            if need.len() == 3 {
                out.push(if need[2] {
                    Some(g2.sum_axes(&[0], false)?)
                } else {
                    None
                });
            }
            Ok(out)
        }))
    }
}
