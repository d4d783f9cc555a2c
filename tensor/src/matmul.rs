//! Matrix products: 2-D, batched with broadcast batch axes, vector cases as
//! `torch.matmul`, optional transposition of either operand without a copy,
//! and the fused affine map `x·Wᵀ + b` of a linear layer.
//!
//! GEMM runs through matrixmultiply's packed kernels. Threads split the
//! batch, or for a single large product the columns (or rows) of the output;
//! every output element is computed by the same kernel over the same `k`
//! order whatever the split, so results are bit-identical at any thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::shape::{broadcast_shapes, broadcast_strides, checked_numel};
use crate::Tensor;

/// Products smaller than this many multiply-adds run on one thread.
const GEMM_PARALLEL_WORK: usize = 1 << 18;

/// A strided read-only matrix operand.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: MatRef is only a view into a buffer that outlives the parallel
// section using it; it is never written through.
unsafe impl<T: Sync> Send for MatRef<T> {}
unsafe impl<T: Sync> Sync for MatRef<T> {}

/// `C[m×n] ← alpha·A·B + beta·C` for row-major contiguous `c`, splitting
/// the work over threads when it is large.
///
/// # Safety
/// `a` and `b` must describe valid `m×k` and `k×n` matrices.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_parallel<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: MatRef<T>,
    b: MatRef<T>,
    beta: T,
    c: &mut [T],
) {
    assert_eq!(c.len(), m * n, "gemm_parallel: C holds m·n values");
    // SAFETY: forwarded; `c` is m×n row-major.
    unsafe { gemm_parallel_raw(m, k, n, alpha, a, b, beta, c.as_mut_ptr()) }
}

/// [`gemm_parallel`] with `beta = 0` into uninitialised memory: every value
/// of `c` is written (never read) by every kernel path — ours, and
/// matrixmultiply's, whose contract says C need not be initialised when
/// beta is zero — so the output needs no zero fill first.
///
/// # Safety
/// As [`gemm_parallel`]; afterwards all of `c` is initialised.
pub(crate) unsafe fn gemm_parallel_uninit<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: MatRef<T>,
    b: MatRef<T>,
    c: &mut [MaybeUninit<T>],
) {
    assert_eq!(c.len(), m * n, "gemm_parallel_uninit: C holds m·n values");
    if k == 0 {
        // Empty inner dimension: the product is all zeros.
        c.iter_mut().for_each(|v| {
            v.write(T::zero());
        });
        return;
    }
    // SAFETY: forwarded; `c` is m×n row-major, written before it is read.
    unsafe { gemm_parallel_raw(m, k, n, alpha, a, b, T::zero(), c.as_mut_ptr().cast()) }
}

/// The body of [`gemm_parallel`] on a raw output.
///
/// # Safety
/// As [`gemm_parallel`], with `c` valid for m·n values.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_parallel_raw<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: MatRef<T>,
    b: MatRef<T>,
    beta: T,
    c: *mut T,
) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let work = m.saturating_mul(n).saturating_mul(k);
    if threads <= 1 || work < GEMM_PARALLEL_WORK {
        // SAFETY: caller guarantees `a`, `b`; `c` is m×n row-major.
        unsafe {
            T::gemm_raw(
                m, k, n, alpha, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, beta, c, n as isize, 1,
            )
        };
        return;
    }
    // SAFETY: forwarded; `c` is m×n row-major.
    if unsafe {
        T::gemm_threaded(
            m, k, n, alpha, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, beta, c, n as isize,
        )
    } {
        return;
    }
    if n >= m {
        // Split the columns of C into one block per thread (a multiple of 16).
        let nb = n.div_ceil(threads).next_multiple_of(16);
        let cptr = SendPtr(c);
        (0..n.div_ceil(nb)).into_par_iter().for_each(|blk| {
            let j0 = blk * nb;
            let w = nb.min(n - j0);
            let (cp, a, b) = (cptr, a, b);
            // SAFETY: each block writes a disjoint set of columns of C.
            unsafe {
                T::gemm_raw(
                    m,
                    k,
                    w,
                    alpha,
                    a.ptr,
                    a.rs,
                    a.cs,
                    b.ptr.offset(j0 as isize * b.cs),
                    b.rs,
                    b.cs,
                    beta,
                    cp.0.add(j0),
                    n as isize,
                    1,
                )
            };
        });
    } else {
        let mb = m.div_ceil(threads).next_multiple_of(16);
        let cptr = SendPtr(c);
        (0..m.div_ceil(mb)).into_par_iter().for_each(|blk| {
            let (a, b, cp) = (a, b, cptr);
            let i0 = blk * mb;
            let h = mb.min(m - i0);
            // SAFETY: rows i0..i0+h of A and of C.
            unsafe {
                T::gemm_raw(
                    h,
                    k,
                    n,
                    alpha,
                    a.ptr.offset(i0 as isize * a.rs),
                    a.rs,
                    a.cs,
                    b.ptr,
                    b.rs,
                    b.cs,
                    beta,
                    cp.0.add(i0 * n),
                    n as isize,
                    1,
                )
            };
        });
    }
}

/// `c[0..n] = alpha · a·B` for one row `a` (length `k`, stride `csa`) and
/// `B` `k×n`: dot products when B's columns are contiguous (`rsb == 1`, as
/// for `x·Wᵀ`), otherwise row-wise `axpy`s. Fixed summation order.
///
/// # Safety
/// The strided buffers must be valid for the given sizes; `c` holds `n`
/// writable (possibly uninitialised) elements and does not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemv_row<T: Element>(
    k: usize,
    n: usize,
    alpha: T,
    a: *const T,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    c: *mut T,
) {
    // SAFETY: the caller guarantees the extents; `c` may be uninitialised
    // (beta = 0), so it is zeroed before it is viewed as a slice.
    unsafe {
        std::ptr::write_bytes(c, 0, n);
        let out = std::slice::from_raw_parts_mut(c, n);
        let av: Vec<T> = (0..k).map(|p| *a.offset(p as isize * csa)).collect();
        if rsb == 1 {
            for (j, o) in out.iter_mut().enumerate() {
                let col = std::slice::from_raw_parts(b.offset(j as isize * csb), k);
                // Eight partial sums: vectorisable and in a fixed order.
                let mut acc = [T::zero(); 8];
                let chunks = col.chunks_exact(8);
                let rest = chunks.remainder();
                for (cb, ab) in chunks.zip(av.chunks_exact(8)) {
                    for i in 0..8 {
                        acc[i] += cb[i] * ab[i];
                    }
                }
                let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6]))
                    + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
                for (x, y) in rest.iter().zip(&av[k - rest.len()..]) {
                    s += *x * *y;
                }
                *o = alpha * s;
            }
        } else {
            out.fill(T::zero());
            for (p, &ap) in av.iter().enumerate() {
                let row = b.offset(p as isize * rsb);
                if csb == 1 {
                    let r = std::slice::from_raw_parts(row, n);
                    for (o, &x) in out.iter_mut().zip(r) {
                        *o += ap * x;
                    }
                } else {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o += ap * *row.offset(j as isize * csb);
                    }
                }
            }
            if alpha != T::one() {
                out.iter_mut().for_each(|o| *o *= alpha);
            }
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint regions of one buffer to worker threads.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T: Element> Tensor<T> {
    /// Matrix product with `torch.matmul`'s rules: 1-D·1-D is a dot
    /// product, a 1-D operand is a vector on that side, and operands of rank
    /// ≥ 2 are stacks of matrices whose batch axes broadcast.
    ///
    /// # Shapes
    /// `[…, m, k] × […, k, n] → [broadcast(…), m, n]`.
    pub fn matmul(&self, rhs: &Self) -> Result<Self> {
        self.matmul_t(rhs, false, false)
    }

    /// [`Tensor::matmul`] with either operand's last two axes transposed
    /// first (`self.mT @ rhs`, `self @ rhs.mT`, …) without copying it.
    pub fn matmul_t(&self, rhs: &Self, transpose_lhs: bool, transpose_rhs: bool) -> Result<Self> {
        let op = "matmul";
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::shape(
                op,
                &[self.shape(), rhs.shape()],
                "operands must have rank ≥ 1",
            ));
        }
        // Promote vectors to matrices, remembering which axes to drop.
        let lhs_vec = self.rank() == 1;
        let rhs_vec = rhs.rank() == 1;
        let ls: Vec<usize> = if lhs_vec {
            vec![1, self.shape()[0]]
        } else {
            self.shape().to_vec()
        };
        let rs: Vec<usize> = if rhs_vec {
            vec![rhs.shape()[0], 1]
        } else {
            rhs.shape().to_vec()
        };
        let (lb, lm) = ls.split_at(ls.len() - 2);
        let (rb, rm) = rs.split_at(rs.len() - 2);
        let (m, k1) = if transpose_lhs && !lhs_vec {
            (lm[1], lm[0])
        } else {
            (lm[0], lm[1])
        };
        let (k2, n) = if transpose_rhs && !rhs_vec {
            (rm[1], rm[0])
        } else {
            (rm[0], rm[1])
        };
        if k1 != k2 {
            return Err(Error::shape(
                op,
                &[self.shape(), rhs.shape()],
                format!("inner dimensions {k1} and {k2} differ"),
            ));
        }
        let k = k1;
        let batch = broadcast_shapes(op, lb, rb).map_err(|e| {
            let why = match e {
                Error::ShapeMismatch { reason, .. } => reason,
                other => other.to_string(),
            };
            Error::shape(
                op,
                &[self.shape(), rhs.shape()],
                format!("batch dimensions {lb:?} and {rb:?}: {why}"),
            )
        })?;
        let nb: usize = batch.iter().product();
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let total = checked_numel(op, &out_shape)?;
        // Every value is written below (the GEMMs run with beta = 0).
        let mut out = crate::buffers::uninit::<T>(total);
        let spare = &mut out.spare_capacity_mut()[..total];

        // Strides of each operand's batch axes (0 where broadcast) and matrix.
        let lbs = broadcast_strides(lb, &batch);
        let rbs = broadcast_strides(rb, &batch);
        let (lr, lc) = (lm[1], 1usize);
        let (a_rs, a_cs) = if transpose_lhs && !lhs_vec {
            (lc, lr)
        } else {
            (lr, lc)
        };
        let (rr, rc) = (rm[1], 1usize);
        let (b_rs, b_cs) = if transpose_rhs && !rhs_vec {
            (rc, rr)
        } else {
            (rr, rc)
        };
        let lmat = lm[0] * lm[1];
        let rmat = rm[0] * rm[1];
        let batch_offsets = |mut bi: usize| {
            let (mut oa, mut ob) = (0usize, 0usize);
            for d in (0..batch.len()).rev() {
                let i = bi % batch[d];
                bi /= batch[d];
                oa += i * lbs[d] * lmat;
                ob += i * rbs[d] * rmat;
            }
            (oa, ob)
        };
        let (a, b) = (self.as_slice(), rhs.as_slice());
        let mat = |oa: usize, ob: usize| {
            (
                MatRef {
                    ptr: a[oa..].as_ptr(),
                    rs: a_rs as isize,
                    cs: a_cs as isize,
                },
                MatRef {
                    ptr: b[ob..].as_ptr(),
                    rs: b_rs as isize,
                    cs: b_cs as isize,
                },
            )
        };
        if total > 0 {
            let per = m * n * k;
            if k == 0 {
                // Empty inner dimension: the product is all zeros.
                spare.iter_mut().for_each(|v| {
                    v.write(T::zero());
                });
            } else if nb > 1
                && rayon::current_num_threads() > 1
                && per.saturating_mul(nb) >= GEMM_PARALLEL_WORK
            {
                spare.par_chunks_mut(m * n).enumerate().for_each(|(bi, c)| {
                    let (oa, ob) = batch_offsets(bi);
                    let (am, bm) = mat(oa, ob);
                    // SAFETY: offsets and strides stay inside `a` and `b`;
                    // with beta = 0 the kernels write `c` without reading it.
                    unsafe {
                        T::gemm_raw(
                            m,
                            k,
                            n,
                            T::one(),
                            am.ptr,
                            am.rs,
                            am.cs,
                            bm.ptr,
                            bm.rs,
                            bm.cs,
                            T::zero(),
                            c.as_mut_ptr().cast(),
                            n as isize,
                            1,
                        )
                    };
                });
            } else {
                for (bi, c) in spare.chunks_mut(m * n).enumerate() {
                    let (oa, ob) = batch_offsets(bi);
                    let (am, bm) = mat(oa, ob);
                    // SAFETY: offsets and strides stay inside `a` and `b`.
                    unsafe { gemm_parallel_uninit(m, k, n, T::one(), am, bm, c) };
                }
            }
        }
        // SAFETY: every one of the `total` values was written above.
        unsafe { out.set_len(total) };
        if rhs_vec {
            out_shape.pop();
        }
        if lhs_vec {
            out_shape.remove(out_shape.len() - if rhs_vec { 1 } else { 2 });
        }
        Ok(Tensor::from_parts(out, out_shape))
    }

    /// The affine map of a linear layer, `self·weightᵀ + bias`, with the
    /// bias folded into the GEMM (`torch.nn.functional.linear`).
    ///
    /// # Shapes
    /// `self [.., in]`, `weight [out, in]`, `bias [out]` → `[.., out]`.
    pub fn linear(&self, weight: &Self, bias: Option<&Self>) -> Result<Self> {
        let op = "linear";
        if weight.rank() != 2
            || self.rank() == 0
            || self.shape()[self.rank() - 1] != weight.shape()[1]
        {
            return Err(Error::shape(
                op,
                &[self.shape(), weight.shape()],
                "expected input [.., in] and weight [out, in]",
            ));
        }
        let (out_f, in_f) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = bias {
            if b.shape() != [out_f] {
                return Err(Error::shape(
                    op,
                    &[weight.shape(), b.shape()],
                    format!("bias must have shape [{out_f}]"),
                ));
            }
        }
        let rows = self.numel() / in_f.max(1);
        let rows = if in_f == 0 {
            self.shape()[..self.rank() - 1].iter().product()
        } else {
            rows
        };
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = out_f;
        let total = checked_numel(op, &shape)?;
        let a = MatRef {
            ptr: self.as_slice().as_ptr(),
            rs: in_f as isize,
            cs: 1,
        };
        let w = MatRef {
            ptr: weight.as_slice().as_ptr(),
            rs: 1,
            cs: in_f as isize,
        };
        let out = match bias {
            Some(b) => {
                // The bias in every row, then the product added (beta = 1).
                let mut out = crate::buffers::uninit::<T>(total);
                for row in out.spare_capacity_mut()[..total].chunks_mut(out_f.max(1)) {
                    // SAFETY: `row` holds out_f ≤ b.len() values; a plain
                    // copy (writing element by element did not vectorise).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            b.as_slice().as_ptr(),
                            row.as_mut_ptr().cast::<T>(),
                            row.len(),
                        )
                    };
                }
                // SAFETY: every value was just written.
                unsafe { out.set_len(total) };
                if total > 0 && in_f > 0 {
                    // SAFETY: `a` is rows×in, `w` (transposed view) is in×out.
                    unsafe { gemm_parallel(rows, in_f, out_f, T::one(), a, w, T::one(), &mut out) };
                }
                out
            }
            None => {
                let mut out = crate::buffers::uninit::<T>(total);
                // SAFETY: as above; with beta = 0 (or k = 0, zeros) every
                // value is written.
                unsafe {
                    gemm_parallel_uninit(
                        rows,
                        in_f,
                        out_f,
                        T::one(),
                        a,
                        w,
                        &mut out.spare_capacity_mut()[..total],
                    );
                    out.set_len(total);
                }
                out
            }
        };
        Ok(Tensor::from_parts(out, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn matmul_2d_and_vectors() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let b = t(&[7., 8., 9., 10., 11., 12.], &[3, 2]);
        assert_eq!(a.matmul(&b).unwrap().to_vec(), vec![58., 64., 139., 154.]);
        let v = t(&[1., 1., 1.], &[3]);
        assert_eq!(a.matmul(&v).unwrap().to_vec(), vec![6., 15.]);
        assert_eq!(a.matmul(&v).unwrap().shape(), &[2]);
        let w = t(&[1., 1.], &[2]);
        assert_eq!(w.matmul(&a).unwrap().to_vec(), vec![5., 7., 9.]);
        assert_eq!(v.matmul(&v).unwrap().shape(), &[] as &[usize]);
        let e = a.matmul(&a).unwrap_err();
        assert_eq!(
            e.to_string(),
            "matmul: [2, 3] × [2, 3]: inner dimensions 3 and 2 differ"
        );
    }

    #[test]
    fn transposed_operands() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let at = a.transpose(0, 1).unwrap();
        assert_eq!(a.matmul_t(&a, false, true).unwrap(), a.matmul(&at).unwrap());
        assert_eq!(a.matmul_t(&a, true, false).unwrap(), at.matmul(&a).unwrap());
        assert_eq!(at.matmul_t(&a, true, true).unwrap(), a.matmul(&at).unwrap());
    }

    #[test]
    fn batched_broadcast() {
        let a = Tensor::<f64>::randn_seeded(&[2, 1, 3, 4], 1).unwrap();
        let b = Tensor::<f64>::randn_seeded(&[5, 4, 2], 2).unwrap();
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[2, 5, 3, 2]);
        let a1 = a.narrow(0, 1, 1).unwrap().reshape(&[3, 4]).unwrap();
        let b3 = b.narrow(0, 3, 1).unwrap().reshape(&[4, 2]).unwrap();
        let want = a1.matmul(&b3).unwrap();
        let got = c
            .narrow(0, 1, 1)
            .unwrap()
            .narrow(1, 3, 1)
            .unwrap()
            .reshape(&[3, 2])
            .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn empty_inner_is_zero() {
        let a = Tensor::<f32>::zeros(&[2, 0]).unwrap();
        let b = Tensor::<f32>::zeros(&[0, 3]).unwrap();
        assert_eq!(a.matmul(&b).unwrap().to_vec(), vec![0.0; 6]);
    }

    #[test]
    fn linear_matches_matmul() {
        let x = Tensor::<f64>::randn_seeded(&[4, 3], 3).unwrap();
        let w = Tensor::<f64>::randn_seeded(&[5, 3], 4).unwrap();
        let b = Tensor::<f64>::randn_seeded(&[5], 5).unwrap();
        let want = x.matmul_t(&w, false, true).unwrap().add(&b).unwrap();
        let got = x.linear(&w, Some(&b)).unwrap();
        for (g, w) in got.to_vec().iter().zip(want.to_vec()) {
            assert!((g - w).abs() < 1e-12);
        }
        assert!(x.linear(&b, None).is_err());
        assert!(x.linear(&w, Some(&x)).is_err());
    }
}
