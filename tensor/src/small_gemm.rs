//! Matrix products too small for the blocked GEMM's packing to pay: the
//! per-step products of a recurrence and the per-head products of
//! attention (tens of rows and columns).
//!
//! For `f32` on AVX-512 CPUs an 8×32 register-blocked kernel reads `A`
//! through its strides (one broadcast per element) and `B` row by row,
//! either row-major in place or from 32-column panels packed once
//! ([`StepGemm`], for a `B` that every time step reuses); only a `B` whose
//! columns are not contiguous is copied, transposed, first. Elsewhere the
//! products go to [`Element::gemm_raw`]. Each output element is one
//! multiply-add chain over `p = 0..k`, scaled by `alpha` and then added to
//! `C` when accumulating, whatever the caller's split of the rows.

use crate::element::Element;

#[cfg(target_arch = "x86_64")]
use std::cell::RefCell;

/// Whether `T` is `f32` on a CPU with AVX-512F.
#[inline]
fn fast_path<T: 'static>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
            && *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Transposed copies of `B` (a few KiB per call).
    static TRANSPOSED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `C ← alpha·A·B` (`accumulate` false) or `C ← C + alpha·A·B`, with `A`
/// `m × k` at strides `(rsa, csa)`, `B` `k × n` at `(rsb, csb)` and `C`
/// `m × n` at row stride `rsc`, unit column stride.
///
/// # Safety
/// Every element reachable through the sizes and strides must lie inside
/// its buffer, and `c` must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn small_gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: (*const T, usize, usize),
    b: (*const T, usize, usize),
    c: (*mut T, usize),
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fast_path::<T>() {
        let alpha = alpha.to_f64_exact() as f32;
        let (af, cf) = ((a.0 as *const f32, a.1, a.2), (c.0 as *mut f32, c.1));
        let bf = b.0 as *const f32;
        if b.2 == 1 {
            // SAFETY: T is f32 and AVX-512F is present; B rows are contiguous.
            unsafe {
                kernel::gemm(
                    m,
                    k,
                    n,
                    alpha,
                    af,
                    (bf, kernel::Panels::RowMajor(b.1)),
                    cf,
                    accumulate,
                )
            };
        } else {
            TRANSPOSED.with(|t| {
                let mut t = t.borrow_mut();
                if t.len() < k * n {
                    t.resize(k * n, 0.0);
                }
                let (rsb, csb) = (b.1, b.2);
                for (p, row) in t[..k * n].chunks_exact_mut(n).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        // SAFETY: B's elements are in bounds (caller's contract).
                        *v = unsafe { *bf.add(p * rsb + j * csb) };
                    }
                }
                let panels = (t.as_ptr(), kernel::Panels::RowMajor(n));
                // SAFETY: as above, with B now row-major k×n in `t`.
                unsafe { kernel::gemm(m, k, n, alpha, af, panels, cf, accumulate) };
            });
        }
        return;
    }
    let beta = if accumulate { T::one() } else { T::zero() };
    // SAFETY: forwarded contract.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.0,
            a.1 as isize,
            a.2 as isize,
            b.0,
            b.1 as isize,
            b.2 as isize,
            beta,
            c.0,
            c.1 as isize,
            1,
        )
    };
}

/// A `k × n` matrix `B` that many products reuse (the recurrent weights of
/// every time step): packed once into 32-column panels for the `f32`
/// AVX-512 kernel, kept row-major for [`Element::gemm_raw`] elsewhere.
pub(crate) struct StepGemm<T> {
    k: usize,
    n: usize,
    /// `B` row-major (empty when `packed` is used).
    plain: Vec<T>,
    /// `B` in panels: panel `q`, row `p` holds `B[p, 32q..32q + 32]`, zero-padded.
    #[cfg(target_arch = "x86_64")]
    packed: Option<Vec<f32>>,
}

impl<T: Element> StepGemm<T> {
    /// `B[p, j] = get(p, j)`.
    pub(crate) fn new(k: usize, n: usize, get: impl Fn(usize, usize) -> T) -> Self {
        #[cfg(target_arch = "x86_64")]
        if fast_path::<T>() {
            let nr = kernel::NR;
            let mut packed = vec![0.0f32; n.div_ceil(nr) * k * nr];
            for (q, panel) in packed.chunks_exact_mut(k * nr).enumerate() {
                for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
                    for (col, v) in row.iter_mut().enumerate() {
                        let j = q * nr + col;
                        if j < n {
                            *v = get(p, j).to_f64_exact() as f32;
                        }
                    }
                }
            }
            return StepGemm {
                k,
                n,
                plain: Vec::new(),
                packed: Some(packed),
            };
        }
        let mut plain = Vec::with_capacity(k * n);
        for p in 0..k {
            plain.extend((0..n).map(|j| get(p, j)));
        }
        StepGemm {
            k,
            n,
            plain,
            #[cfg(target_arch = "x86_64")]
            packed: None,
        }
    }

    /// `C[m × n] ← A·B` (`accumulate` false) or `C + A·B`, with `A` `m × k`
    /// at row stride `rsa` (unit column stride) and `C` at row stride `rsc`.
    ///
    /// # Safety
    /// `a` and `c` must address `m` rows of `k` and `n` elements at their
    /// strides, and `c` must not overlap `a`.
    pub(crate) unsafe fn run(
        &self,
        m: usize,
        a: *const T,
        rsa: usize,
        c: *mut T,
        rsc: usize,
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.packed {
            // SAFETY: `packed` exists only when T is f32 and AVX-512F is present.
            unsafe {
                kernel::gemm(
                    m,
                    self.k,
                    self.n,
                    1.0,
                    (a as *const f32, rsa, 1),
                    (packed.as_ptr(), kernel::Panels::Packed),
                    (c as *mut f32, rsc),
                    accumulate,
                )
            };
            return;
        }
        // SAFETY: forwarded; `plain` is k×n row-major.
        unsafe {
            small_gemm(
                m,
                self.k,
                self.n,
                T::one(),
                (a, rsa, 1),
                (self.plain.as_ptr(), self.n, 1),
                (c, rsc),
                accumulate,
            )
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    #![allow(unsafe_op_in_unsafe_fn)]

    use std::arch::x86_64::*;

    /// Columns per panel (two zmm registers).
    pub(super) const NR: usize = 32;

    /// Where the kernel finds `B`.
    #[derive(Clone, Copy)]
    pub(super) enum Panels {
        /// Panels of `k × 32`, contiguous one after the other.
        Packed,
        /// Row-major with this row stride (unit column stride).
        RowMajor(usize),
    }

    /// `C ← alpha·A·B (+ C)`, see [`small_gemm`](super::small_gemm).
    ///
    /// # Safety
    /// AVX-512F must be available; pointers as for `small_gemm`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: (*const f32, usize, usize),
        b: (*const f32, Panels),
        c: (*mut f32, usize),
        accumulate: bool,
    ) {
        let (a, rsa, csa) = a;
        let (c, rsc) = c;
        // Panel-major, so each panel of B stays in L1 across the row blocks.
        for (q, j0) in (0..n).step_by(NR).enumerate() {
            let nr = NR.min(n - j0);
            let (bp, ldb) = match b.1 {
                Panels::Packed => (b.0.add(q * k * NR), NR),
                Panels::RowMajor(ldb) => (b.0.add(j0), ldb),
            };
            let (bp, cp) = ((bp, ldb), c.add(j0));
            let mut i = 0;
            while i + 8 <= m {
                let ai = (a.add(i * rsa), rsa, csa);
                tile::<8>(k, ai, bp, (cp.add(i * rsc), rsc), alpha, accumulate, nr);
                i += 8;
            }
            if m - i >= 4 {
                let ai = (a.add(i * rsa), rsa, csa);
                tile::<4>(k, ai, bp, (cp.add(i * rsc), rsc), alpha, accumulate, nr);
                i += 4;
            }
            if m - i >= 2 {
                let ai = (a.add(i * rsa), rsa, csa);
                tile::<2>(k, ai, bp, (cp.add(i * rsc), rsc), alpha, accumulate, nr);
                i += 2;
            }
            if m - i >= 1 {
                let ai = (a.add(i * rsa), rsa, csa);
                tile::<1>(k, ai, bp, (cp.add(i * rsc), rsc), alpha, accumulate, nr);
            }
        }
    }

    /// `MR` rows × one panel of `nr ≤ 32` valid columns. `B` rows are read
    /// with lane masks, so nothing past column `nr` is touched.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const MR: usize>(
        k: usize,
        a: (*const f32, usize, usize),
        b: (*const f32, usize),
        c: (*mut f32, usize),
        alpha: f32,
        accumulate: bool,
        nr: usize,
    ) {
        let (a, rsa, csa) = a;
        let (b, ldb) = b;
        let (c, rsc) = c;
        let m0: __mmask16 = if nr >= 16 {
            0xffff
        } else {
            ((1u32 << nr) - 1) as u16
        };
        let m1: __mmask16 = if nr >= NR {
            0xffff
        } else if nr > 16 {
            ((1u32 << (nr - 16)) - 1) as u16
        } else {
            0
        };
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..k {
            let row = b.add(p * ldb);
            let b0 = _mm512_maskz_loadu_ps(m0, row);
            let b1 = _mm512_maskz_loadu_ps(m1, row.add(16));
            let ap = a.add(p * csa);
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(i * rsa));
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
        }
        let va = _mm512_set1_ps(alpha);
        for (i, acc) in acc.iter().enumerate() {
            let row = c.add(i * rsc);
            let (mut r0, mut r1) = (acc[0], acc[1]);
            if alpha != 1.0 {
                r0 = _mm512_mul_ps(r0, va);
                r1 = _mm512_mul_ps(r1, va);
            }
            if accumulate {
                r0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), r0);
                r1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), r1);
            }
            _mm512_mask_storeu_ps(row, m0, r0);
            _mm512_mask_storeu_ps(row.add(16), m1, r1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `alpha·A·B (+ C)` in f64 from strided views.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: (&[f32], usize, usize),
        b: (&[f32], usize, usize),
        c: &[f32],
        rsc: usize,
        accumulate: bool,
    ) -> Vec<f64> {
        let mut out = Vec::new();
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a.0[i * a.1 + p * a.2] as f64 * b.0[p * b.1 + j * b.2] as f64)
                    .sum();
                let base = if accumulate {
                    c[i * rsc + j] as f64
                } else {
                    0.0
                };
                out.push(base + alpha * s);
            }
        }
        out
    }

    #[test]
    fn matches_a_naive_product_for_ragged_sizes_and_strides() {
        let data: Vec<f32> = (0..40_000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (8, 32, 32),
            (13, 17, 45),
            (17, 64, 70),
            (64, 32, 64),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (alpha, accumulate) in [(1.0f32, false), (0.37, true)] {
                    // A m×k, B k×n, each with padded rows (or transposed).
                    let a = if ta {
                        (&data[..], 1, m + 3)
                    } else {
                        (&data[..], k + 2, 1)
                    };
                    let b = if tb {
                        (&data[7..], 1, k + 1)
                    } else {
                        (&data[7..], n + 5, 1)
                    };
                    let rsc = n + 4;
                    let mut c: Vec<f32> = data[100..100 + m * rsc].to_vec();
                    let want = naive(m, k, n, alpha as f64, a, b, &c, rsc, accumulate);
                    // SAFETY: the strided views stay inside `data` and `c`.
                    unsafe {
                        small_gemm(
                            m,
                            k,
                            n,
                            alpha,
                            (a.0.as_ptr(), a.1, a.2),
                            (b.0.as_ptr(), b.1, b.2),
                            (c.as_mut_ptr(), rsc),
                            accumulate,
                        )
                    };
                    for i in 0..m {
                        for j in 0..n {
                            let (got, w) = (c[i * rsc + j] as f64, want[i * n + j]);
                            assert!(
                                (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "{m}×{k}×{n} ta {ta} tb {tb}: [{i}, {j}] {got} vs {w}"
                            );
                        }
                        // Padding columns untouched.
                        for j in n..rsc.min(n + 4) {
                            if i * rsc + j < c.len() {
                                assert_eq!(c[i * rsc + j], data[100 + i * rsc + j]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn step_gemm_matches_small_gemm() {
        let (m, k, n) = (11, 20, 40);
        let w: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.25 - 1.5).collect();
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
        let sg = StepGemm::new(k, n, |p, j| w[p * n + j]);
        let mut c1 = vec![1.0f32; m * n];
        let mut c2 = c1.clone();
        // SAFETY: all buffers have the stated sizes.
        unsafe {
            sg.run(m, a.as_ptr(), k, c1.as_mut_ptr(), n, true);
            small_gemm(
                m,
                k,
                n,
                1.0,
                (a.as_ptr(), k, 1),
                (w.as_ptr(), n, 1),
                (c2.as_mut_ptr(), n),
                true,
            );
        }
        assert_eq!(c1, c2);
    }
}
