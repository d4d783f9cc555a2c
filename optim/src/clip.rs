//! Gradient clipping by global norm and by value
//! (`torch.nn.utils.clip_grad_norm_`, `clip_grad_value_`).

use std::collections::HashMap;

use anneal_autograd::{Gradients, ParamId};
use anneal_tensor::{Element, Error, Result};

/// Scales the gradients of `ids` together so that their total `norm_type`
/// norm is at most `max_norm`, and returns the total norm before clipping
/// (PyTorch's `clip_grad_norm_(…, error_if_nonfinite=True)`).
///
/// ```text
/// total = (Σ_params Σ_elements |g|ᵖ)^(1/p)        (max |g| for p = ∞)
/// coef  = max_norm / (total + 1e-6)
/// g ← g·coef   if coef < 1
/// ```
///
/// Ids without a gradient are skipped. `norm_type` is any `p > 0` or
/// `f64::INFINITY`. The norm is accumulated in `f64` (PyTorch accumulates in
/// the gradient's type), so for `f32` gradients it can differ from PyTorch's
/// in the last bits. Errors, changing nothing, if the norm is NaN or
/// infinite, naming the first parameter whose gradient holds a non-finite
/// value.
pub fn clip_grad_norm<T: Element>(
    grads: &mut Gradients<T>,
    ids: &[ParamId],
    max_norm: f64,
    norm_type: f64,
) -> Result<f64> {
    let op = "clip_grad_norm";
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::invalid(
            op,
            format!("max_norm must be >= 0, got {max_norm}"),
        ));
    }
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(Error::invalid(
            op,
            format!("norm_type must be > 0 or infinity, got {norm_type}"),
        ));
    }
    let present: Vec<(ParamId, &[T])> = ids
        .iter()
        .filter_map(|&id| Some((id, grads.get_by_id(id)?.as_slice())))
        .collect();
    let total = if norm_type == f64::INFINITY {
        present.iter().flat_map(|&(_, g)| g).fold(0.0f64, |m, &x| {
            let a = x.to_f64_exact().abs();
            if a > m || a.is_nan() {
                a
            } else {
                m
            }
        })
    } else {
        let mut sum = 0.0f64;
        for &(_, g) in &present {
            sum += if norm_type == 2.0 {
                g.iter()
                    .map(|&x| {
                        let x = x.to_f64_exact();
                        x * x
                    })
                    .sum::<f64>()
            } else if norm_type == 1.0 {
                g.iter().map(|&x| x.to_f64_exact().abs()).sum::<f64>()
            } else {
                g.iter()
                    .map(|&x| x.to_f64_exact().abs().powf(norm_type))
                    .sum::<f64>()
            };
        }
        if norm_type == 2.0 {
            sum.sqrt()
        } else if norm_type == 1.0 {
            sum
        } else {
            sum.powf(1.0 / norm_type)
        }
    };
    if !total.is_finite() {
        let culprit = present
            .iter()
            .enumerate()
            .find(|(_, (_, g))| !g.iter().all(|x| x.is_finite()));
        let who = match culprit {
            Some((pos, (id, _))) => format!(
                "the gradient of parameter {} (entry {pos} of the list) holds a non-finite value",
                id.as_u64()
            ),
            None => "every gradient is finite: the norm overflowed".to_string(),
        };
        return Err(Error::invalid(
            op,
            format!("the total {norm_type}-norm of the gradients is {total}: {who}"),
        ));
    }
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        let coef = T::from_f64_lossy(coef);
        let wanted: HashMap<ParamId, ()> = present.iter().map(|&(id, _)| (id, ())).collect();
        for (id, g) in grads.iter_mut() {
            if wanted.contains_key(&id) {
                for x in g.data_mut() {
                    *x *= coef;
                }
            }
        }
    }
    Ok(total)
}

/// [`clip_grad_norm`] over every gradient in `grads` (summed in `ParamId`
/// order, so the result does not depend on the store's iteration order).
pub fn clip_grad_norm_all<T: Element>(
    grads: &mut Gradients<T>,
    max_norm: f64,
    norm_type: f64,
) -> Result<f64> {
    let mut ids: Vec<ParamId> = grads.iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    clip_grad_norm(grads, &ids, max_norm, norm_type)
}

/// Clamps every element of the gradients of `ids` to `[−clip_value,
/// clip_value]` (PyTorch's `clip_grad_value_`; NaN stays NaN).
pub fn clip_grad_value<T: Element>(
    grads: &mut Gradients<T>,
    ids: &[ParamId],
    clip_value: f64,
) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::invalid(
            "clip_grad_value",
            format!("clip_value must be >= 0, got {clip_value}"),
        ));
    }
    let (hi, lo) = (
        T::from_f64_lossy(clip_value),
        T::from_f64_lossy(-clip_value),
    );
    let wanted: HashMap<ParamId, ()> = ids.iter().map(|&id| (id, ())).collect();
    for (id, g) in grads.iter_mut() {
        if wanted.contains_key(&id) {
            for x in g.data_mut() {
                if *x > hi {
                    *x = hi;
                } else if *x < lo {
                    *x = lo;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anneal_tensor::Tensor;

    fn store(vals: &[&[f64]]) -> (Gradients<f64>, Vec<ParamId>) {
        let mut g = Gradients::new();
        let ids: Vec<ParamId> = vals.iter().map(|_| ParamId::fresh()).collect();
        for (id, v) in ids.iter().zip(vals) {
            g.insert(*id, Tensor::from_slice(v, &[v.len()]).unwrap());
        }
        (g, ids)
    }

    #[test]
    fn scales_to_max_norm_like_torch() {
        let (mut g, ids) = store(&[&[3.0, 0.0], &[4.0]]);
        let n = clip_grad_norm(&mut g, &ids, 1.0, 2.0).unwrap();
        assert_eq!(n, 5.0);
        let coef = 1.0 / (5.0 + 1e-6);
        assert_eq!(g.get_by_id(ids[0]).unwrap().to_vec(), vec![3.0 * coef, 0.0]);
        assert_eq!(g.get_by_id(ids[1]).unwrap().to_vec(), vec![4.0 * coef]);
    }

    #[test]
    fn below_max_norm_is_untouched() {
        let (mut g, ids) = store(&[&[3.0, -4.0]]);
        assert_eq!(clip_grad_norm(&mut g, &ids, 10.0, 2.0).unwrap(), 5.0);
        assert_eq!(g.get_by_id(ids[0]).unwrap().to_vec(), vec![3.0, -4.0]);
        assert_eq!(
            clip_grad_norm(&mut g, &ids, 10.0, f64::INFINITY).unwrap(),
            4.0
        );
        assert_eq!(clip_grad_norm(&mut g, &ids, 10.0, 1.0).unwrap(), 7.0);
        let n3 = clip_grad_norm(&mut g, &ids, 10.0, 3.0).unwrap();
        assert!((n3 - (27.0f64 + 64.0).powf(1.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn non_finite_norm_is_an_error_naming_the_parameter() {
        let (mut g, ids) = store(&[&[1.0], &[f64::NAN, 2.0]]);
        let e = clip_grad_norm(&mut g, &ids, 1.0, 2.0).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("parameter {}", ids[1].as_u64())),
            "{msg}"
        );
        assert!(msg.contains("entry 1"), "{msg}");
        assert_eq!(g.get_by_id(ids[0]).unwrap().to_vec(), vec![1.0]);
        let (mut g, ids) = store(&[&[f64::INFINITY]]);
        assert!(clip_grad_norm(&mut g, &ids, 1.0, f64::INFINITY).is_err());
    }

    #[test]
    fn clip_by_value() {
        let (mut g, ids) = store(&[&[-3.0, 0.5, 2.0, f64::NAN]]);
        clip_grad_value(&mut g, &ids, 1.0).unwrap();
        let v = g.get_by_id(ids[0]).unwrap().to_vec();
        assert_eq!(&v[..3], &[-1.0, 0.5, 1.0]);
        assert!(v[3].is_nan());
        assert!(clip_grad_value(&mut g, &ids, -1.0).is_err());
    }
}
