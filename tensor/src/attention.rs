//! Multi-head scaled dot-product self-attention as one kernel, read straight
//! from the packed input projection, with its hand-written backward pass.
//!
//! With `qkv` `[B, L, 3E]` (queries, keys and values side by side, each split
//! into `H` heads of `d = E/H` features), head `h` of batch entry `b` is
//! `softmax(Q·Kᵀ/√d + M)·V` where `Q`, `K`, `V` are strided views of `qkv`:
//! no head is copied out, the scale is folded into the GEMM, masking and
//! softmax are one pass over each row of scores, and the result is written
//! in place into the merged `[B, L, E]` layout. The backward pass writes the
//! gradients of `Q`, `K` and `V` straight into one `[B, L, 3E]` buffer.
//!
//! Each `(b, h)` pair is independent and computed the same way whichever
//! thread runs it, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::simd_math::{self, map_in_place, Func};
use crate::small_gemm::small_gemm;
use crate::Tensor;

const OP: &str = "self_attention";

/// Pairs whose total multiply-adds are below this stay on one thread.
const PARALLEL_WORK: usize = 1 << 18;

/// The result of [`Tensor::self_attention`]: the merged heads and the
/// attention weights, kept for [`backward`](Self::backward).
#[derive(Debug, Clone)]
pub struct SelfAttention<T: Element> {
    output: Tensor<T>,
    probs: Tensor<T>,
    qkv: Tensor<T>,
    /// The mask broadcast to `[B, H, L, L]`.
    mask: Option<Tensor<bool>>,
    heads: usize,
}

/// A raw base pointer shared by tasks that touch disjoint elements.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: used only to address disjoint (b, h) blocks from different tasks.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

/// Geometry of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    l: usize,
    e: usize,
    heads: usize,
    d: usize,
}

impl Dims {
    /// Offset of head `h` of batch entry `b` inside `qkv`, for part `part`
    /// (0 = Q, 1 = K, 2 = V); rows are `3E` apart.
    fn qkv_offset(&self, b: usize, h: usize, part: usize) -> usize {
        b * self.l * 3 * self.e + part * self.e + h * self.d
    }

    /// Offset of head `h` of batch entry `b` inside an `[B, L, E]` tensor.
    fn merged_offset(&self, b: usize, h: usize) -> usize {
        b * self.l * self.e + h * self.d
    }

    fn parallel(&self) -> bool {
        let work = self.b * self.heads * self.l * self.l * self.d * 2;
        self.b * self.heads > 1 && work >= PARALLEL_WORK && rayon::current_num_threads() > 1
    }
}

/// `C ← alpha·A·B`, each operand `(pointer, row stride, column stride)`.
///
/// # Safety
/// As [`small_gemm`].
#[inline]
unsafe fn gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: (*const T, usize, usize),
    b: (*const T, usize, usize),
    c: (*mut T, usize),
) {
    // SAFETY: forwarded.
    unsafe { small_gemm(m, k, n, alpha, a, b, c, false) }
}

/// Runs `f(pair, block)` over the `[L, L]` blocks of `buf`, one per
/// `(b, h)` pair, in parallel when it pays.
fn for_each_pair<T: Element>(dims: Dims, buf: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let ll = dims.l * dims.l;
    if ll == 0 {
        return;
    }
    if dims.parallel() {
        buf.par_chunks_mut(ll)
            .enumerate()
            .for_each(|(p, blk)| f(p, blk));
    } else {
        buf.chunks_mut(ll)
            .enumerate()
            .for_each(|(p, blk)| f(p, blk));
    }
}

impl<T: Element> Tensor<T> {
    /// Multi-head self-attention on a packed projection `self` = `qkv`
    /// `[B, L, 3E]` (`[Q | K | V]` on the last axis, each `heads` heads of
    /// `d = E/heads` features): per head `softmax(Q·Kᵀ/√d + M)·V`, heads
    /// merged back to `[B, L, E]`. `mask` (broadcastable to
    /// `[B, heads, L, L]`) is true where a query may not attend to a key; a
    /// row with every key masked gives NaN, as in PyTorch.
    ///
    /// # Errors
    /// When `self` is not `[B, L, 3E]` with `E` a positive multiple of
    /// `heads`, or the mask does not broadcast to `[B, heads, L, L]`.
    pub fn self_attention(
        &self,
        heads: usize,
        mask: Option<&Tensor<bool>>,
    ) -> Result<SelfAttention<T>> {
        let s = self.shape();
        if s.len() != 3 || heads == 0 || s[2] == 0 || !s[2].is_multiple_of(3 * heads) {
            return Err(Error::shape(
                OP,
                &[s],
                format!("expected [B, L, 3E] with E a positive multiple of {heads} heads"),
            ));
        }
        let (b, l, e) = (s[0], s[1], s[2] / 3);
        let dims = Dims {
            b,
            l,
            e,
            heads,
            d: e / heads,
        };
        let mask = match mask {
            Some(m) => Some(m.broadcast_to(&[b, heads, l, l]).map_err(|_| {
                Error::shape(
                    OP,
                    &[m.shape(), s],
                    format!("the mask must broadcast to [B, H, L, L] = [{b}, {heads}, {l}, {l}]"),
                )
            })?),
            None => None,
        };
        let scale = T::from_f64_lossy(1.0 / (dims.d as f64).sqrt());
        let mut probs = vec![T::zero(); b * heads * l * l];
        let mut out = vec![T::zero(); b * l * e];
        let (q_all, out_ptr) = (
            Shared(self.as_slice().as_ptr() as *mut T),
            Shared(out.as_mut_ptr()),
        );
        let mask_all = mask.as_ref().map(|m| m.as_slice());
        for_each_pair(dims, &mut probs, |pair, p| {
            let (bi, h) = (pair / heads, pair % heads);
            let (qkv, out) = (q_all, out_ptr);
            let (row3, ll) = (3 * e, l * l);
            // SAFETY: Q and K of this pair are L×d views of qkv at row stride
            // 3E; `p` is this pair's own L×L block; the output columns
            // h·d..h·d+d of batch entry bi belong to this pair alone.
            unsafe {
                let q = qkv.0.add(dims.qkv_offset(bi, h, 0)) as *const T;
                let k = qkv.0.add(dims.qkv_offset(bi, h, 1)) as *const T;
                let v = qkv.0.add(dims.qkv_offset(bi, h, 2)) as *const T;
                gemm(
                    l,
                    dims.d,
                    l,
                    scale,
                    (q, row3, 1),
                    (k, 1, row3),
                    (p.as_mut_ptr(), l),
                );
                if let Some(m) = mask_all {
                    for (x, &masked) in p.iter_mut().zip(&m[pair * ll..(pair + 1) * ll]) {
                        if masked {
                            *x = T::neg_infinity();
                        }
                    }
                }
                for row in p.chunks_exact_mut(l) {
                    softmax_row(row);
                }
                let o = out.0.add(dims.merged_offset(bi, h));
                gemm(
                    l,
                    l,
                    dims.d,
                    T::one(),
                    (p.as_ptr(), l, 1),
                    (v, row3, 1),
                    (o, e),
                );
            }
        });
        Ok(SelfAttention {
            output: Tensor::from_parts(out, vec![b, l, e]),
            probs: Tensor::from_parts(probs, vec![b, heads, l, l]),
            qkv: self.clone(),
            mask,
            heads,
        })
    }
}

/// Softmax of one row in place (the same formula as [`Tensor::softmax`]).
fn softmax_row<T: Element>(row: &mut [T]) {
    let m = simd_math::max(row);
    let m = if m.is_finite() { m } else { T::zero() };
    for x in row.iter_mut() {
        *x -= m;
    }
    map_in_place(Func::Exp, row);
    let inv = T::one() / simd_math::sum(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

impl<T: Element> SelfAttention<T> {
    /// The merged heads `[B, L, E]`.
    pub fn output(&self) -> &Tensor<T> {
        &self.output
    }

    /// The attention weights `[B, H, L, L]` (each row sums to 1).
    pub fn probs(&self) -> &Tensor<T> {
        &self.probs
    }

    /// The gradient of `qkv` `[B, L, 3E]` given that of the output
    /// `[B, L, E]`: `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P⊙(dP − Σ dP⊙P)`
    /// (zero where masked), `dQ = dS·K/√d`, `dK = dSᵀ·Q/√d`.
    ///
    /// # Errors
    /// When `d_output` does not have the output's shape.
    pub fn backward(&self, d_output: &Tensor<T>) -> Result<Tensor<T>> {
        if d_output.shape() != self.output.shape() {
            return Err(Error::shape(
                "self_attention backward",
                &[d_output.shape(), self.output.shape()],
                "the output gradient must have the output's shape",
            ));
        }
        let s = self.qkv.shape();
        let (b, l, e, heads) = (s[0], s[1], s[2] / 3, self.heads);
        let dims = Dims {
            b,
            l,
            e,
            heads,
            d: e / heads,
        };
        let scale = T::from_f64_lossy(1.0 / (dims.d as f64).sqrt());
        let mut dqkv = vec![T::zero(); b * l * 3 * e];
        // dP, then dS, one L×L block per pair.
        let mut ds = vec![T::zero(); b * heads * l * l];
        let qkv = Shared(self.qkv.as_slice().as_ptr() as *mut T);
        let dq_all = Shared(dqkv.as_mut_ptr());
        let d_out = Shared(d_output.as_slice().as_ptr() as *mut T);
        let (probs, mask) = (
            self.probs.as_slice(),
            self.mask.as_ref().map(|m| m.as_slice()),
        );
        for_each_pair(dims, &mut ds, |pair, dsb| {
            let (bi, h) = (pair / heads, pair % heads);
            let (qkv, dq_all, d_out) = (qkv, dq_all, d_out);
            let (row3, ll) = (3 * e, l * l);
            let p = &probs[pair * ll..(pair + 1) * ll];
            // SAFETY: as in the forward pass; the dQ, dK and dV columns of
            // this pair in dqkv are written by this pair alone.
            unsafe {
                let q = qkv.0.add(dims.qkv_offset(bi, h, 0)) as *const T;
                let k = qkv.0.add(dims.qkv_offset(bi, h, 1)) as *const T;
                let v = qkv.0.add(dims.qkv_offset(bi, h, 2)) as *const T;
                let go = d_out.0.add(dims.merged_offset(bi, h)) as *const T;
                // dV = Pᵀ·dO.
                let dv = dq_all.0.add(dims.qkv_offset(bi, h, 2));
                gemm(
                    l,
                    l,
                    dims.d,
                    T::one(),
                    (p.as_ptr(), 1, l),
                    (go, e, 1),
                    (dv, row3),
                );
                // dP = dO·Vᵀ.
                gemm(
                    l,
                    dims.d,
                    l,
                    T::one(),
                    (go, e, 1),
                    (v, 1, row3),
                    (dsb.as_mut_ptr(), l),
                );
                for (dr, pr) in dsb.chunks_exact_mut(l).zip(p.chunks_exact(l)) {
                    let dot = simd_math::dot(dr, pr);
                    for (g, &pv) in dr.iter_mut().zip(pr) {
                        *g = pv * (*g - dot);
                    }
                }
                if let Some(m) = mask {
                    for (g, &masked) in dsb.iter_mut().zip(&m[pair * ll..(pair + 1) * ll]) {
                        if masked {
                            *g = T::zero();
                        }
                    }
                }
                // dQ = dS·K/√d, dK = dSᵀ·Q/√d.
                let dq = dq_all.0.add(dims.qkv_offset(bi, h, 0));
                gemm(
                    l,
                    l,
                    dims.d,
                    scale,
                    (dsb.as_ptr(), l, 1),
                    (k, row3, 1),
                    (dq, row3),
                );
                let dk = dq_all.0.add(dims.qkv_offset(bi, h, 1));
                gemm(
                    l,
                    l,
                    dims.d,
                    scale,
                    (dsb.as_ptr(), 1, l),
                    (q, row3, 1),
                    (dk, row3),
                );
            }
        });
        Ok(Tensor::from_parts(dqkv, vec![b, l, 3 * e]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-head reference through the public tensor ops.
    fn reference(qkv: &Tensor<f64>, heads: usize, mask: Option<&Tensor<bool>>) -> Tensor<f64> {
        let (b, l, e) = (qkv.shape()[0], qkv.shape()[1], qkv.shape()[2] / 3);
        let d = e / heads;
        let part = |i: usize| {
            qkv.narrow(2, i * e, e)
                .unwrap()
                .reshape(&[b, l, heads, d])
                .unwrap()
                .permute(&[0, 2, 1, 3])
                .unwrap()
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let mut s = q
            .matmul_t(&k, false, true)
            .unwrap()
            .mul_scalar(1.0 / (d as f64).sqrt());
        if let Some(m) = mask {
            s = s.masked_fill(m, f64::NEG_INFINITY).unwrap();
        }
        s.softmax(-1)
            .unwrap()
            .matmul(&v)
            .unwrap()
            .permute(&[0, 2, 1, 3])
            .unwrap()
            .reshape(&[b, l, e])
            .unwrap()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn forward_matches_separate_ops_with_and_without_mask() {
        let qkv = Tensor::<f64>::randn_seeded(&[2, 5, 12], 1).unwrap();
        let causal = Tensor::from_vec(
            (0..25).map(|i| i % 5 > i / 5).collect::<Vec<bool>>(),
            &[5, 5],
        )
        .unwrap();
        for mask in [None, Some(&causal)] {
            let a = qkv.self_attention(2, mask).unwrap();
            let r = reference(&qkv, 2, mask);
            assert!(close(a.output().as_slice(), r.as_slice(), 1e-14));
            let sums = a.probs().sum_axes(&[-1], false).unwrap();
            assert!(sums.as_slice().iter().all(|s| (s - 1.0).abs() < 1e-14));
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let qkv = Tensor::<f64>::randn_seeded(&[2, 4, 12], 2).unwrap();
        let w = Tensor::<f64>::randn_seeded(&[2, 4, 4], 3).unwrap();
        let mask = Tensor::from_vec(vec![false, false, true, false], &[1, 1, 1, 4]).unwrap();
        for mask in [None, Some(&mask)] {
            let loss = |x: &Tensor<f64>| -> f64 {
                let o = x.self_attention(2, mask).unwrap();
                o.output()
                    .as_slice()
                    .iter()
                    .zip(w.as_slice())
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let g = qkv.self_attention(2, mask).unwrap().backward(&w).unwrap();
            let eps = 1e-6;
            for i in 0..qkv.numel() {
                let mut hi = qkv.clone();
                hi.data_mut()[i] += eps;
                let mut lo = qkv.clone();
                lo.data_mut()[i] -= eps;
                let numeric = (loss(&hi) - loss(&lo)) / (2.0 * eps);
                let a = g.as_slice()[i];
                assert!((numeric - a).abs() < 1e-8, "element {i}: {a} vs {numeric}");
            }
        }
    }

    #[test]
    fn fully_masked_rows_are_nan_and_cut_from_q_and_k_gradients() {
        let qkv = Tensor::<f64>::randn_seeded(&[1, 3, 6], 4).unwrap();
        let mask = Tensor::from_vec(
            vec![true, true, true, false, false, false, false, false, false],
            &[3, 3],
        )
        .unwrap();
        let a = qkv.self_attention(1, Some(&mask)).unwrap();
        assert!(a.output().as_slice()[..2].iter().all(|v| v.is_nan()));
        assert!(a.output().as_slice()[2..].iter().all(|v| v.is_finite()));
        // Row 0's weights are NaN: its dS is cut (every key masked), so the
        // gradients of Q and K stay finite, while dV = Pᵀ·dO carries the NaN
        // (as the separate ops give).
        let mut go = vec![0.0; 6];
        go[2..].iter_mut().for_each(|v| *v = 1.0);
        let g = a
            .backward(&Tensor::from_vec(go, &[1, 3, 2]).unwrap())
            .unwrap();
        for row in g.as_slice().chunks(6) {
            assert!(row[..4].iter().all(|v| v.is_finite()), "{row:?}");
            assert!(row[4..].iter().all(|v| v.is_nan()), "{row:?}");
        }
    }

    #[test]
    fn errors_name_the_op_and_shapes() {
        let x = Tensor::<f32>::zeros(&[2, 3, 10]).unwrap();
        let e = x.self_attention(2, None).unwrap_err().to_string();
        assert!(e.starts_with("self_attention: [2, 3, 10]"), "{e}");
        let x = Tensor::<f32>::zeros(&[2, 3, 12]).unwrap();
        let bad = Tensor::from_vec(vec![false; 4], &[4]).unwrap();
        let e = x.self_attention(2, Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("[2, 2, 3, 3]"), "{e}");
        let a = x.self_attention(2, None).unwrap();
        assert!(a.backward(&x).is_err());
    }
}
