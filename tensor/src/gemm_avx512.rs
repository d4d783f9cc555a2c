//! A single-precision GEMM for AVX-512 CPUs, in the BLIS layout: B is
//! packed in `KC × NR` micro-panels that stay in L1, A in `MR × KC`
//! micro-panels streamed from L2, and a 12×32 register-blocked kernel (24
//! zmm accumulators) does the multiply-adds. Selected at run time; other
//! CPUs (and strided outputs) use matrixmultiply.
//!
//! Every output element is accumulated in the same order (k blocks of `KC`,
//! then k within the block) whatever the caller's split of the output, so
//! splitting rows or columns across threads gives bit-identical results.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

const MR: usize = 12;
const NR: usize = 32;
const KC: usize = 256;
const MC: usize = 144;
const NC: usize = 3072;

thread_local! {
    static PACK_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU runs the AVX-512 kernel.
pub(crate) fn available() -> bool {
    use std::sync::OnceLock;
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// `C ← alpha·A·B + beta·C` with `C` row-major-ish (`csc == 1`).
///
/// # Safety
/// The strided matrices must be valid for the given sizes, `c` must not
/// alias `a` or `b`, and [`available`] must be true.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    drive(
        m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, false,
    );
}

/// A raw output pointer handed to workers that write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each worker writes only the rows of its own `MC` block.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// [`sgemm`] on rayon's pool: each `KC × NC` panel of B is packed once and
/// shared, and the `MC`-row blocks of A and C are spread over the threads.
/// Every element is accumulated in the same order as in [`sgemm`], so the
/// result is bit-identical to it.
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_threaded(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    drive(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, true);
}

/// The blocked GEMM shared by [`sgemm`] and [`sgemm_threaded`]: each
/// `KC × NC` panel of B is packed once; the `MC`-row blocks of A and C run in
/// order, or over rayon's pool when `parallel` (same arithmetic either way).
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn drive(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale_c(m, n, beta, c, rsc);
        return;
    }
    let mut pb = PACK_B.with(|p| std::mem::take(&mut *p.borrow_mut()));
    // Sized for this product, not the largest block: per-thread buffers
    // persist, so they should not outgrow what the GEMMs actually need.
    let need_b = NC.min(n).div_ceil(NR) * NR * KC.min(k);
    if pb.len() < need_b {
        pb.resize(need_b, 0.0);
    }
    let (ap, out) = (OutPtr(a as *mut f32), OutPtr(c));
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(
                kc,
                nc,
                b.offset(pc as isize * rsb + jc as isize * csb),
                rsb,
                csb,
                &mut pb,
            );
            let beta_here = if pc == 0 { beta } else { 1.0 };
            let pbr = &pb;
            let block = |blk: usize| {
                let (ap, out) = (ap, out);
                let ic = blk * MC;
                let mc = MC.min(m - ic);
                let mut pa = PACK_A.with(|p| std::mem::take(&mut *p.borrow_mut()));
                let need_a = MC.min(m).div_ceil(MR) * MR * KC.min(k);
                if pa.len() < need_a {
                    pa.resize(need_a, 0.0);
                }
                // SAFETY: rows ic..ic+mc of A and C belong to this block only.
                unsafe {
                    pack_a(
                        mc,
                        kc,
                        (ap.0 as *const f32).offset(ic as isize * rsa + pc as isize * csa),
                        rsa,
                        csa,
                        &mut pa,
                    );
                    for jr in (0..nc).step_by(NR) {
                        let nr = NR.min(nc - jr);
                        let bp = pbr.as_ptr().add(jr * kc);
                        for ir in (0..mc).step_by(MR) {
                            let mr = MR.min(mc - ir);
                            let cp = out.0.offset((ic + ir) as isize * rsc + (jc + jr) as isize);
                            kernel_12x32(
                                kc,
                                pa.as_ptr().add(ir * kc),
                                bp,
                                cp,
                                rsc,
                                alpha,
                                beta_here,
                                mr,
                                nr,
                            );
                        }
                    }
                }
                PACK_A.with(|p| *p.borrow_mut() = pa);
            };
            if parallel {
                (0..m.div_ceil(MC)).into_par_iter().for_each(block);
            } else {
                (0..m.div_ceil(MC)).for_each(block);
            }
        }
    }
    PACK_B.with(|p| *p.borrow_mut() = pb);
}

/// Rows of A per parallel block: the threaded path needs at least two.
pub(crate) const ROW_BLOCK: usize = MC;

unsafe fn scale_c(m: usize, n: usize, beta: f32, c: *mut f32, rsc: isize) {
    for i in 0..m {
        let row = std::slice::from_raw_parts_mut(c.offset(i as isize * rsc), n);
        if beta == 0.0 {
            row.fill(0.0);
        } else {
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
}

/// Packs `A[0..mc, 0..kc]` into `MR`-row micro-panels: panel `r`, step `p`
/// holds rows `r·MR..r·MR+MR` of column `p`, zero-padded.
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, rsa: isize, csa: isize, out: &mut [f32]) {
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let rows = MR.min(mc - i0);
        let dst = &mut out[panel * MR * kc..(panel + 1) * MR * kc];
        for p in 0..kc {
            let d = &mut dst[p * MR..(p + 1) * MR];
            for (i, v) in d.iter_mut().enumerate() {
                *v = if i < rows {
                    *a.offset((i0 + i) as isize * rsa + p as isize * csa)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Packs `B[0..kc, 0..nc]` into `NR`-column micro-panels, zero-padded.
unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, rsb: isize, csb: isize, out: &mut [f32]) {
    for (panel, j0) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - j0);
        let dst = &mut out[panel * NR * kc..(panel + 1) * NR * kc];
        for p in 0..kc {
            let d = &mut dst[p * NR..(p + 1) * NR];
            let src = b.offset(p as isize * rsb + j0 as isize * csb);
            if csb == 1 && cols == NR {
                std::ptr::copy_nonoverlapping(src, d.as_mut_ptr(), NR);
            } else {
                for (j, v) in d.iter_mut().enumerate() {
                    *v = if j < cols {
                        *src.offset(j as isize * csb)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// `C[0..mr, 0..nr] ← alpha·Ã·B̃ + beta·C` for one `MR × NR` tile.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_12x32(
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: isize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    for p in 0..k {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        let ap = a.add(p * MR);
        for i in 0..MR {
            let av = _mm512_set1_ps(*ap.add(i));
            acc[2 * i] = _mm512_fmadd_ps(av, b0, acc[2 * i]);
            acc[2 * i + 1] = _mm512_fmadd_ps(av, b1, acc[2 * i + 1]);
        }
    }
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    // Lane masks for a partial tile's two column halves.
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
    for i in 0..mr {
        let row = c.offset(i as isize * rsc);
        let mut r0 = _mm512_mul_ps(acc[2 * i], va);
        let mut r1 = _mm512_mul_ps(acc[2 * i + 1], va);
        if beta != 0.0 {
            r0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, row), vb, r0);
            r1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), vb, r1);
        }
        _mm512_mask_storeu_ps(row, m0, r0);
        _mm512_mask_storeu_ps(row.add(16), m1, r1);
    }
}
