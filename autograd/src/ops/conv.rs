//! Convolution and pooling, forward and backward. The adjoints come from
//! `anneal-tensor`: `conv2d_input_grad` (a transposed convolution),
//! `conv2d_weight_grad` (input ⋆ output gradient), and the pooling scatters.

use anneal_tensor::{Conv1dParams, Conv2dParams, Element, Error, Pool2dParams, Result};

use crate::Var;

impl<T: Element> Var<T> {
    /// 2-D convolution with optional bias (`torch.nn.functional.conv2d`).
    ///
    /// # Shapes
    /// `[N, C, H, W]` ⋆ `[O, C/groups, kH, kW]` (+ `[O]`) → `[N, O, OH, OW]`.
    pub fn conv2d(&self, weight: &Self, bias: Option<&Self>, params: Conv2dParams) -> Result<Self> {
        let y = self
            .value()
            .conv2d(weight.value(), bias.map(|b| b.value()), params)?;
        let (x, w) = (self.value().clone(), weight.value().clone());
        let mut parents = vec![self, weight];
        if let Some(b) = bias {
            parents.push(b);
        }
        Ok(Var::from_op("conv2d", y, &parents, move |g, need| {
            let gx = if need[0] {
                Some(g.conv2d_input_grad(&w, x.shape(), params)?)
            } else {
                None
            };
            let gw = if need[1] {
                Some(g.conv2d_weight_grad(&x, w.shape(), params)?)
            } else {
                None
            };
            let mut out = vec![gx, gw];
            if need.len() == 3 {
                out.push(if need[2] {
                    Some(g.sum_axes(&[0, 2, 3], false)?)
                } else {
                    None
                });
            }
            Ok(out)
        }))
    }

    /// 1-D convolution with optional bias (`torch.nn.functional.conv1d`).
    ///
    /// # Shapes
    /// `[N, C, L]` ⋆ `[O, C/groups, k]` (+ `[O]`) → `[N, O, L_out]`.
    pub fn conv1d(&self, weight: &Self, bias: Option<&Self>, params: Conv1dParams) -> Result<Self> {
        let y = self
            .value()
            .conv1d(weight.value(), bias.map(|b| b.value()), params)?;
        let (x, w) = (self.value().clone(), weight.value().clone());
        let mut parents = vec![self, weight];
        if let Some(b) = bias {
            parents.push(b);
        }
        Ok(Var::from_op("conv1d", y, &parents, move |g, need| {
            let gx = if need[0] {
                Some(g.conv1d_input_grad(&w, x.shape(), params)?)
            } else {
                None
            };
            let gw = if need[1] {
                Some(g.conv1d_weight_grad(&x, w.shape(), params)?)
            } else {
                None
            };
            let mut out = vec![gx, gw];
            if need.len() == 3 {
                out.push(if need[2] {
                    Some(g.sum_axes(&[0, 2], false)?)
                } else {
                    None
                });
            }
            Ok(out)
        }))
    }

    /// Transposed 2-D convolution (`torch.nn.functional.conv_transpose2d`):
    /// the adjoint of [`Var::conv2d`] with respect to its input.
    ///
    /// # Shapes
    /// input `[N, Cin, H, W]`, weight `[Cin, Cout/groups, kH, kW]`, bias
    /// `[Cout]` → `[N, Cout, (H − 1)·s − 2p + d·(kH − 1) + output_padding + 1, …]`.
    /// `output_padding` must be smaller than the stride.
    pub fn conv_transpose2d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        params: Conv2dParams,
        output_padding: [usize; 2],
    ) -> Result<Self> {
        let op = "conv_transpose2d";
        let (xs, ws) = (self.shape(), weight.shape());
        if xs.len() != 4 || ws.len() != 4 || xs[1] != ws[0] {
            return Err(Error::shape(
                op,
                &[xs, ws],
                "expected input [N, Cin, H, W] and weight [Cin, Cout/groups, kH, kW]",
            ));
        }
        let too_large = || Error::shape(op, &[xs, ws], "the output shape overflows usize");
        let cout = ws[1]
            .checked_mul(params.groups.max(1))
            .ok_or_else(too_large)?;
        let mut out_shape = vec![xs[0], cout];
        for a in 0..2 {
            if output_padding[a] >= params.stride[a] {
                return Err(Error::invalid(
                    op,
                    format!(
                        "output_padding {output_padding:?} must be smaller than stride {:?}",
                        params.stride
                    ),
                ));
            }
            // (H − 1)·s + d·(kH − 1) + output_padding + 1 − 2p, in i128 with
            // checked steps so that no stride, dilation or padding overflows.
            let [x, s, d, k, o, p] = [
                xs[2 + a],
                params.stride[a],
                params.dilation[a],
                ws[2 + a].max(1),
                output_padding[a],
                params.padding[a],
            ]
            .map(|v| v as i128);
            let extent = (x - 1)
                .checked_mul(s)
                .and_then(|v| v.checked_add(d.checked_mul(k - 1)?))
                .and_then(|v| v.checked_add(o + 1))
                .and_then(|v| v.checked_sub(2 * p))
                .ok_or_else(too_large)?;
            if x == 0 || extent <= 0 {
                return Err(Error::shape(
                    op,
                    &[xs, ws],
                    format!("output extent {extent} on spatial axis {a} is not positive"),
                ));
            }
            out_shape.push(usize::try_from(extent).map_err(|_| too_large())?);
        }
        let y = self
            .value()
            .conv2d_input_grad(weight.value(), &out_shape, params)?;
        let (x, w) = (self.value().clone(), weight.value().clone());
        let out = Var::from_op(op, y, &[self, weight], move |g, need| {
            let gx = if need[0] {
                Some(g.conv2d(&w, None, params)?)
            } else {
                None
            };
            let gw = if need[1] {
                Some(x.conv2d_weight_grad(g, w.shape(), params)?)
            } else {
                None
            };
            Ok(vec![gx, gw])
        });
        match bias {
            Some(b) => out.add(&b.reshape(&[1, out_shape[1], 1, 1])?),
            None => Ok(out),
        }
    }

    /// Max pooling; the gradient goes to the position each window picked.
    pub fn max_pool2d(&self, params: Pool2dParams) -> Result<Self> {
        let (y, idx) = self.value().max_pool2d(params)?;
        let s = self.shape().to_vec();
        Ok(Var::from_op("max_pool2d", y, &[self], move |g, _| {
            Ok(vec![Some(g.max_pool2d_backward(&idx, &s)?)])
        }))
    }

    /// Average pooling; the gradient is spread evenly over each window.
    pub fn avg_pool2d(&self, params: Pool2dParams, count_include_pad: bool) -> Result<Self> {
        let y = self.value().avg_pool2d(params, count_include_pad)?;
        let s = self.shape().to_vec();
        Ok(Var::from_op("avg_pool2d", y, &[self], move |g, _| {
            Ok(vec![Some(g.avg_pool2d_backward(
                &s,
                params,
                count_include_pad,
            )?)])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anneal_tensor::Tensor;

    #[test]
    fn conv_bias_gradient_is_output_sum() {
        let x = Var::leaf(Tensor::<f64>::randn_seeded(&[2, 3, 5, 5], 1).unwrap());
        let w = Var::leaf(Tensor::<f64>::randn_seeded(&[4, 3, 3, 3], 2).unwrap());
        let b = Var::leaf(Tensor::<f64>::zeros(&[4]).unwrap());
        let y = x.conv2d(&w, Some(&b), Conv2dParams::new(1, 1)).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        // ∂(Σy)/∂b_o = N·OH·OW = 2·5·5.
        assert_eq!(grads.wrt(&b).unwrap().to_vec(), vec![50.0; 4]);
    }
}
