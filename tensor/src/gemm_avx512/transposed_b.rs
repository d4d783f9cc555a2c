//! `C = alpha·A·B + beta·C` for a B stored transposed (`Bᵀ` row-major, as
//! the weight of every Linear: `x·Wᵀ`) and a short A, computed as
//! `Cᵀ = Bᵀ·Aᵀ`: the micro-kernel broadcasts `Bᵀ` straight from its rows
//! (no transposing pack of the large operand; 12 rows through 4 base
//! pointers and one stride, so each broadcast is a single addressed load),
//! multiplies by the packed `Aᵀ` (the short operand, transposed once per k
//! block), and transposes each finished 12×32 tile in registers as it is
//! stored into row-major C. Same summation order as the packed path (equal
//! k blocks, k in order within a block), so any split of C's columns gives
//! the same bits.

use std::arch::x86_64::*;

use super::{k_block, pack_b, take_buffer, transpose16, Dense, Tile, KC, MR, NR, PACK_B};

/// Use this path for at most this many rows of A: `Aᵀ`'s packed panels stay
/// small and `Bᵀ` is streamed once per panel.
pub(super) const MAX_ROWS: usize = 256;

/// `C[m×n] ← alpha·A·B + beta·C` with `B[p][j] = bt[j·ldb + p]`.
///
/// # Safety
/// `a` valid for `m × k` at strides `(rsa, csa)`, `bt` for `n` rows of `k`
/// values `ldb` apart, `c` for `m` rows of `n` values `rsc` apart and not
/// aliasing the others; AVX-512F available.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    bt: *const f32,
    ldb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    let kb = k_block(k);
    let mut pa = take_buffer(&PACK_B, m.div_ceil(NR) * NR * kb);
    // The last, short group of Bᵀ rows is copied here (zero rows after it)
    // so that the kernel never reads past Bᵀ.
    let mut tail = [0.0f32; MR * KC];
    for pc in (0..k).step_by(kb) {
        let kc = kb.min(k - pc);
        // Aᵀ[p][i] = A[i][pc + p]: a kc × m matrix with rows csa apart.
        pack_b(kc, m, a.offset(pc as isize * csa), csa, rsa, &mut pa);
        let beta_here = if pc == 0 { beta } else { 1.0 };
        for j0 in (0..n).step_by(MR) {
            let nr = MR.min(n - j0);
            let (rows, stride) = if nr == MR {
                (bt.offset(j0 as isize * ldb + pc as isize), ldb)
            } else {
                tail[..MR * kc].fill(0.0);
                for r in 0..nr {
                    let src = bt.offset((j0 + r) as isize * ldb + pc as isize);
                    std::ptr::copy_nonoverlapping(src, tail.as_mut_ptr().add(r * kc), kc);
                }
                (tail.as_ptr(), kc as isize)
            };
            for (panel, i0) in (0..m).step_by(NR).enumerate() {
                let out = Out {
                    c: c.offset(i0 as isize * rsc + j0 as isize),
                    rsc,
                    rows: NR.min(m - i0),
                    cols: nr,
                    alpha,
                    beta: beta_here,
                };
                let pap = pa.as_ptr().add(panel * NR * kc);
                match nr {
                    0..=3 => kernel::<3>(kc, rows, stride, pap, &out),
                    4..=6 => kernel::<6>(kc, rows, stride, pap, &out),
                    7..=9 => kernel::<9>(kc, rows, stride, pap, &out),
                    _ => kernel::<12>(kc, rows, stride, pap, &out),
                }
            }
        }
    }
    PACK_B.with(|p| *p.borrow_mut() = pa);
}

/// Where a finished tile goes: the `rows × cols` block of row-major C at
/// `c` (`rows` of A, `cols` rows of `Bᵀ`).
struct Out {
    c: *mut f32,
    rsc: isize,
    rows: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
}

/// `acc[i] = Σ_p Bᵀ[i][p] · Aᵀ[p][0..32]` for `R` (a multiple of 3, at most
/// 12) rows of `Bᵀ` at `rows + i·stride`, then stored transposed.
///
/// # Safety
/// `R` rows of `k` values readable at `rows`, `stride` apart; `pa` a packed
/// `k × NR` panel; `out` writable.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(
    k: usize,
    rows: *const f32,
    stride: isize,
    pa: *const f32,
    out: &Out,
) {
    // Rows 3g, 3g + 1, 3g + 2 at base[g], base[g] + stride, base[g] + 2·stride:
    // one base register per three rows, all advanced one value per step.
    let mut base = [rows; 4];
    for (g, b) in base.iter_mut().enumerate().take(R / 3) {
        *b = rows.offset(3 * g as isize * stride);
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for p in 0..k {
        let v0 = _mm512_loadu_ps(pa.add(p * NR));
        let v1 = _mm512_loadu_ps(pa.add(p * NR + 16));
        for (i, row) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*base[i / 3].offset((i % 3) as isize * stride));
            row[0] = _mm512_fmadd_ps(x, v0, row[0]);
            row[1] = _mm512_fmadd_ps(x, v1, row[1]);
        }
        for b in base.iter_mut().take(R / 3) {
            *b = b.add(1);
        }
    }
    // acc[i][h] holds C[16h + l][i] in lane l: a 16×16 transpose per half
    // turns it into rows of C, stored through the packed path's tile (its
    // second half masked off: a row here has at most MR ≤ 16 columns).
    let zero = _mm512_setzero_ps();
    for h in 0..2 {
        let mut v = [zero; 16];
        for (vi, row) in v.iter_mut().zip(&acc) {
            *vi = row[h];
        }
        transpose16(&mut v);
        let tile = Dense::new(
            out.c.wrapping_offset(16 * h as isize * out.rsc),
            out.rsc,
            out.alpha,
            out.beta,
            out.cols,
        );
        for (l, row) in v.iter().enumerate().take(out.rows.saturating_sub(16 * h)) {
            tile.store(l, *row, zero);
        }
    }
}
