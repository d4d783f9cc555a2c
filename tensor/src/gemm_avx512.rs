//! A single-precision GEMM for AVX-512 CPUs, in the BLIS layout: B is
//! packed in `KC × NR` micro-panels that stay in L1, A in `MR × KC`
//! micro-panels streamed from L2, and a 12×32 register-blocked kernel (24
//! zmm accumulators; 8- and 4-row variants for short last panels) does the
//! multiply-adds. Operands stored transposed are packed through 16×16
//! register transposes. Selected at run time; other CPUs (and strided
//! outputs) use matrixmultiply.
//!
//! Every output element is accumulated in the same order (equal k blocks of
//! at most `KC`, then k within the block) whatever the caller's split of the
//! output, so splitting rows or columns across threads gives bit-identical
//! results.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

mod transposed_b;

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

impl OutPtr {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

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
    if rsb == 1 && csb != 1 && m <= transposed_b::MAX_ROWS {
        // B stored transposed and A short (every Linear's x·Wᵀ): broadcast
        // Bᵀ from its rows instead of transposing it into panels.
        return transposed_b::run(m, k, n, alpha, a, rsa, csa, b, csb, beta, c, rsc);
    }
    // Equal k blocks of at most KC: 784 runs as 4 × 196 rather than
    // 3 × 256 + 16, whose last block pays a full pass over C for 16 steps.
    let kb = k_block(k);
    let mut pb = take_buffer(&PACK_B, NC.min(n).div_ceil(NR) * NR * kb);
    let (ap, bp, out) = (OutPtr(a as *mut f32), OutPtr(b as *mut f32), OutPtr(c));
    // Row blocks of whole MR panels, at most MC rows each; on the threaded
    // path their count is a multiple of the thread count and their sizes
    // differ by at most one panel, so no thread waits on a short last block.
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    let panels = m.div_ceil(MR);
    let blocks = (panels.div_ceil(MC / MR).div_ceil(threads) * threads).min(panels);
    let block_rows = |blk: usize| {
        let (p0, p1) = (panels * blk / blocks, panels * (blk + 1) / blocks);
        (p0 * MR, (p1 * MR).min(m))
    };
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(kb) {
            let kc = kb.min(k - pc);
            let src = |j: usize| bp.get().offset(pc as isize * rsb + (jc + j) as isize * csb);
            let b_panels = nc.div_ceil(NR);
            if threads > 1 && b_panels > 1 {
                // Each thread packs its share of B's micro-panels.
                let per = b_panels.div_ceil(threads);
                pb[..b_panels * NR * kc]
                    .par_chunks_mut(per * NR * kc)
                    .enumerate()
                    .for_each(|(i, chunk)| {
                        let j0 = i * per * NR;
                        // SAFETY: columns j0.. of this k block, into this chunk only.
                        unsafe { pack_b(kc, (nc - j0).min(per * NR), src(j0), rsb, csb, chunk) }
                    });
            } else {
                pack_b(kc, nc, src(0), rsb, csb, &mut pb);
            }
            let beta_here = if pc == 0 { beta } else { 1.0 };
            let pbr = &pb;
            let block = |blk: usize| {
                let (ap, out) = (ap, out);
                let (ic, end) = block_rows(blk);
                let mc = end - ic;
                let mut pa = take_buffer(&PACK_A, MC.min(m).div_ceil(MR) * MR * kb);
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
                            let tile = Dense::new(cp, rsc, alpha, beta_here, nr);
                            kernel_rows(
                                kc,
                                pa.as_ptr().add(ir * kc),
                                &Packed(bp),
                                &Zero,
                                &tile,
                                mr,
                            );
                        }
                    }
                }
                PACK_A.with(|p| *p.borrow_mut() = pa);
            };
            if threads > 1 {
                (0..blocks).into_par_iter().for_each(block);
            } else {
                (0..blocks).for_each(block);
            }
        }
    }
    PACK_B.with(|p| *p.borrow_mut() = pb);
}

/// The k block length: equal blocks of at most `KC`.
fn k_block(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC))
}

/// This thread's packing buffer from `cell`, at least `need` long (put it
/// back when done). Sized for the product at hand, not the largest block:
/// the buffers persist, so they should not outgrow what the GEMMs need;
/// a fresh exact-size allocation, because `resize` would copy the old
/// contents and could double the capacity.
fn take_buffer(cell: &'static std::thread::LocalKey<RefCell<Vec<f32>>>, need: usize) -> Vec<f32> {
    let mut buf = cell.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if buf.len() < need {
        drop(std::mem::take(&mut buf));
        buf = vec![0.0; need];
    }
    buf
}

/// Rows of A per parallel block: the threaded path needs at least two.
pub(crate) const ROW_BLOCK: usize = MC;

unsafe fn scale_c(m: usize, n: usize, beta: f32, c: *mut f32, rsc: isize) {
    for i in 0..m {
        let row = c.offset(i as isize * rsc);
        if beta == 0.0 {
            // C may be uninitialised when beta is zero: write, never read.
            std::ptr::write_bytes(row, 0, n);
        } else {
            std::slice::from_raw_parts_mut(row, n)
                .iter_mut()
                .for_each(|v| *v *= beta);
        }
    }
}

/// Packs `A[0..mc, 0..kc]` into `MR`-row micro-panels: panel `r`, step `p`
/// holds rows `r·MR..r·MR+MR` of column `p`, zero-padded.
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, rsa: isize, csa: isize, out: &mut [f32]) {
    if csa == 1 && rsa != 1 {
        // Row-major A: each panel is a transpose of `MR` contiguous rows.
        return pack_a_rows(mc, kc, a, rsa, out);
    }
    if rsa == 1 {
        // Column-major A (a transposed operand, as dYᵀ in a weight
        // gradient): each step of a panel is MR contiguous values.
        return pack_a_columns(mc, kc, a, csa, out);
    }
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

/// [`pack_a`] for a column-major A (`rsa == 1`): one masked 12-lane move
/// per step, zeros past the last row.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_columns(mc: usize, kc: usize, a: *const f32, csa: isize, out: &mut [f32]) {
    const KEEP: __mmask16 = (1 << MR) - 1;
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let rows = lanes(MR.min(mc - i0));
        let dst = out[panel * MR * kc..(panel + 1) * MR * kc].as_mut_ptr();
        for p in 0..kc {
            let v = _mm512_maskz_loadu_ps(rows, a.offset(p as isize * csa).add(i0));
            _mm512_mask_storeu_ps(dst.add(p * MR), KEEP, v);
        }
    }
}

/// [`pack_a`] for a row-major A (`csa == 1`): 16 columns of up to `MR` rows
/// at a time go through a 16×16 register transpose.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_rows(mc: usize, kc: usize, a: *const f32, rsa: isize, out: &mut [f32]) {
    const KEEP: __mmask16 = (1 << MR) - 1;
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let rows = MR.min(mc - i0);
        let dst = out[panel * MR * kc..(panel + 1) * MR * kc].as_mut_ptr();
        for p0 in (0..kc).step_by(16) {
            let len = 16.min(kc - p0);
            let valid = lanes(len);
            let mut v = [_mm512_setzero_ps(); 16];
            for (i, vi) in v.iter_mut().enumerate().take(rows) {
                *vi = _mm512_maskz_loadu_ps(valid, a.offset((i0 + i) as isize * rsa).add(p0));
            }
            transpose16(&mut v);
            for (pp, vp) in v.iter().enumerate().take(len) {
                _mm512_mask_storeu_ps(dst.add((p0 + pp) * MR), KEEP, *vp);
            }
        }
    }
}

/// In-register transpose of a 16×16 block: `v[i]` lane `j` ↔ `v[j]` lane `i`
/// (unpack within 128-bit lanes, then two rounds of 128-bit lane shuffles).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16(v: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in (0..16).step_by(2) {
        t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
    for q in (0..16).step_by(4) {
        let (a0, a1, a2, a3) = (
            _mm512_castps_pd(t[q]),
            _mm512_castps_pd(t[q + 1]),
            _mm512_castps_pd(t[q + 2]),
            _mm512_castps_pd(t[q + 3]),
        );
        v[q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        v[q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        v[q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        v[q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    for h in [0, 8] {
        for j in 0..4 {
            t[h + j] = _mm512_shuffle_f32x4::<0x88>(v[h + j], v[h + j + 4]);
            t[h + j + 4] = _mm512_shuffle_f32x4::<0xdd>(v[h + j], v[h + j + 4]);
        }
    }
    for j in 0..8 {
        v[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[j + 8]);
        v[j + 8] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[j + 8]);
    }
}

/// Packs `B[0..kc, 0..nc]` into `NR`-column micro-panels, zero-padded.
unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, rsb: isize, csb: isize, out: &mut [f32]) {
    if rsb == 1 && csb != 1 {
        // Column-major B (a transposed operand): transpose 16×16 blocks.
        return pack_b_columns(kc, nc, b, csb, out);
    }
    if csb == 1 {
        return pack_b_rows(kc, nc, b, rsb, out);
    }
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

/// [`pack_b`] for a row-major B (`csb == 1`): row by row, each row's `nc`
/// values read once, in order, and dealt out to the panels (reading one
/// panel's `kc` rows after another touches a new page per row; 4.0 → 3.0 %
/// of a 1024³ product's profile).
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_rows(kc: usize, nc: usize, b: *const f32, rsb: isize, out: &mut [f32]) {
    let dst = out.as_mut_ptr();
    for p in 0..kc {
        let src = b.offset(p as isize * rsb);
        for (panel, j0) in (0..nc).step_by(NR).enumerate() {
            let (lo, hi) = (lanes(nc - j0), lanes((nc - j0).saturating_sub(16)));
            let d = dst.add((panel * kc + p) * NR);
            _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(lo, src.add(j0)));
            _mm512_storeu_ps(d.add(16), _mm512_maskz_loadu_ps(hi, src.add(j0 + 16)));
        }
    }
}

/// [`pack_b`] for a column-major B (`rsb == 1`): 16 rows of 16 columns at
/// a time go through a 16×16 register transpose.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_columns(kc: usize, nc: usize, b: *const f32, csb: isize, out: &mut [f32]) {
    for (panel, j0) in (0..nc).step_by(NR).enumerate() {
        let dst = out[panel * NR * kc..(panel + 1) * NR * kc].as_mut_ptr();
        for half in (0..NR).step_by(16) {
            let cols = 16.min(nc.saturating_sub(j0 + half));
            for p0 in (0..kc).step_by(16) {
                let len = 16.min(kc - p0);
                let valid = lanes(len);
                let mut v = [_mm512_setzero_ps(); 16];
                for (j, vj) in v.iter_mut().enumerate().take(cols) {
                    *vj = _mm512_maskz_loadu_ps(
                        valid,
                        b.offset((j0 + half + j) as isize * csb).add(p0),
                    );
                }
                transpose16(&mut v);
                for (pp, vp) in v.iter().enumerate().take(len) {
                    _mm512_storeu_ps(dst.add((p0 + pp) * NR + half), *vp);
                }
            }
        }
    }
}

/// Where the micro-kernel finds row `p` of its `k × NR` slice of B.
trait BRows {
    /// The kernel's k loop is unrolled by this (which must divide `k`), so
    /// [`BRows::load`] learns `p mod UNROLL` as a constant.
    const UNROLL: usize = 1;

    /// The two 16-lane halves of row `p`, with `u = p mod UNROLL`.
    unsafe fn load(&self, p: usize, u: usize) -> (__m512, __m512);
}

/// A packed `KC × NR` micro-panel: rows `NR` apart.
struct Packed(*const f32);

impl BRows for Packed {
    #[inline(always)]
    unsafe fn load(&self, p: usize, _u: usize) -> (__m512, __m512) {
        let row = self.0.add(p * NR);
        (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)))
    }
}

/// Rows read in place at `base + offsets[p]` (the flat-image convolution).
struct Offsets<'a> {
    base: *const f32,
    offsets: &'a [usize],
}

impl BRows for Offsets<'_> {
    #[inline(always)]
    unsafe fn load(&self, p: usize, _u: usize) -> (__m512, __m512) {
        let row = self.base.add(*self.offsets.get_unchecked(p));
        (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)))
    }
}

/// Rows read in place from an image padded only above and below (rows
/// exactly `W` long, see [`conv_same`]): a tile's columns are consecutive
/// pixels, and the lanes whose tap column falls in the left or right
/// padding are masked to zero. Taps are ordered `(c, i, j)`, so row `p`'s
/// tap column is `p mod KW`, a constant of the unrolled loop.
struct SameRows<'a, const KW: usize> {
    base: *const f32,
    offsets: &'a [usize],
    masks: [[__mmask16; 2]; KW],
}

impl<const KW: usize> BRows for SameRows<'_, KW> {
    const UNROLL: usize = KW;

    #[inline(always)]
    unsafe fn load(&self, p: usize, u: usize) -> (__m512, __m512) {
        // Masked-off lanes are never read (and never fault).
        let row = self.base.wrapping_add(*self.offsets.get_unchecked(p));
        let [lo, hi] = self.masks[u];
        (
            _mm512_maskz_loadu_ps(lo, row),
            _mm512_maskz_loadu_ps(hi, row.wrapping_add(16)),
        )
    }
}

/// Where the micro-kernel puts row `i` of its finished `R × NR` tile.
trait Tile {
    /// Stores the two 16-lane halves of row `i`.
    unsafe fn store(&self, i: usize, lo: __m512, hi: __m512);

    /// Starts fetching the first `rows` rows' destination into L1, so that
    /// [`Tile::store`] after the k loop does not wait on memory.
    #[inline(always)]
    unsafe fn prefetch(&self, _rows: usize) {}
}

/// A block of a row-major C: `C ← alpha·acc + beta·C` on the first `nr`
/// columns.
struct Dense {
    c: *mut f32,
    rsc: isize,
    alpha: __m512,
    beta: __m512,
    beta_is_zero: bool,
    lo: __mmask16,
    hi: __mmask16,
}

impl Dense {
    #[inline(always)]
    unsafe fn new(c: *mut f32, rsc: isize, alpha: f32, beta: f32, nr: usize) -> Dense {
        Dense {
            c,
            rsc,
            alpha: _mm512_set1_ps(alpha),
            beta: _mm512_set1_ps(beta),
            beta_is_zero: beta == 0.0,
            lo: lanes(nr),
            hi: lanes(nr.saturating_sub(16)),
        }
    }
}

/// The mask of the first `n` (capped at 16) lanes.
#[inline(always)]
pub(crate) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

impl Tile for Dense {
    #[inline(always)]
    unsafe fn prefetch(&self, rows: usize) {
        // C is read (beta ≠ 0) or written once per k block; a miss per row
        // after the loop costs ~10 % of a 1024³ product, a prefetch before
        // it costs nothing (the loop runs for thousands of cycles).
        for i in 0..rows {
            let row = self.c.offset(i as isize * self.rsc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.add(64));
            _mm_prefetch::<_MM_HINT_T0>(row.add(127));
        }
    }

    #[inline(always)]
    unsafe fn store(&self, i: usize, lo: __m512, hi: __m512) {
        let row = self.c.offset(i as isize * self.rsc);
        let mut r0 = _mm512_mul_ps(lo, self.alpha);
        let mut r1 = _mm512_mul_ps(hi, self.alpha);
        if !self.beta_is_zero {
            r0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(self.lo, row), self.beta, r0);
            r1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(self.hi, row.add(16)), self.beta, r1);
        }
        _mm512_mask_storeu_ps(row, self.lo, r0);
        _mm512_mask_storeu_ps(row.add(16), self.hi, r1);
    }
}

/// Flat-convolution output (see [`conv_flat`]): of the tile's `NR` flat
/// columns only those with `x < OW` are pixels; they are packed together
/// (`vcompressps`) and stored contiguously from `start` in each channel's
/// `[OH·OW]` plane, plus the channel's bias.
struct Compact {
    out: *mut f32,
    plane: usize,
    start: usize,
    lo: __mmask16,
    hi: __mmask16,
    lo_count: usize,
    lo_store: __mmask16,
    hi_store: __mmask16,
    bias: Option<*const f32>,
}

impl Compact {
    /// The tile of [`FlatOutput`] rows from `i0` whose valid lanes (bit `l`
    /// of `valid`) go, packed together, to each plane from pixel `start`.
    #[inline(always)]
    unsafe fn new(out: &FlatOutput, i0: usize, start: usize, valid: u32) -> Compact {
        let (lo, hi) = (valid as __mmask16, (valid >> 16) as __mmask16);
        let (lo_count, hi_count) = (lo.count_ones() as usize, hi.count_ones() as usize);
        Compact {
            out: out.out.add(i0 * out.plane),
            plane: out.plane,
            start,
            lo,
            hi,
            lo_count,
            lo_store: lanes(lo_count),
            hi_store: lanes(hi_count),
            bias: out.bias.map(|b| b.add(i0)),
        }
    }
}

impl Tile for Compact {
    #[inline(always)]
    unsafe fn store(&self, i: usize, lo: __m512, hi: __m512) {
        let (lo, hi) = match self.bias {
            Some(b) => {
                let b = _mm512_set1_ps(*b.add(i));
                (_mm512_add_ps(lo, b), _mm512_add_ps(hi, b))
            }
            None => (lo, hi),
        };
        let dst = self.out.add(i * self.plane + self.start);
        _mm512_mask_storeu_ps(dst, self.lo_store, _mm512_maskz_compress_ps(self.lo, lo));
        _mm512_mask_storeu_ps(
            dst.add(self.lo_count),
            self.hi_store,
            _mm512_maskz_compress_ps(self.hi, hi),
        );
    }
}

/// What a tile's accumulators start from.
trait Start {
    /// The two 16-lane halves of row `i`'s starting sums.
    unsafe fn row(&self, i: usize) -> (__m512, __m512);
}

/// Sums start at zero.
struct Zero;

impl Start for Zero {
    #[inline(always)]
    unsafe fn row(&self, _i: usize) -> (__m512, __m512) {
        (_mm512_setzero_ps(), _mm512_setzero_ps())
    }
}

/// Sums continue from an earlier k block's, stored by [`Raw`] (`NR` values
/// per row): the same additions in the same order as one longer loop.
struct Resume(*const f32);

impl Start for Resume {
    #[inline(always)]
    unsafe fn row(&self, i: usize) -> (__m512, __m512) {
        let row = self.0.add(i * NR);
        (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)))
    }
}

/// A tile's unfinished sums, `NR` values per row, for [`Resume`].
struct Raw(*mut f32);

impl Tile for Raw {
    #[inline(always)]
    unsafe fn store(&self, i: usize, lo: __m512, hi: __m512) {
        let row = self.0.add(i * NR);
        _mm512_storeu_ps(row, lo);
        _mm512_storeu_ps(row.add(16), hi);
    }
}

/// Runs the smallest of the 4-, 8- and 12-row kernels that covers `mr`
/// rows, so a short last panel (64 = 5·12 + 4) does not pay for 12.
#[inline(always)]
unsafe fn kernel_rows<B: BRows, S: Start, C: Tile>(
    k: usize,
    a: *const f32,
    b: &B,
    start: &S,
    c: &C,
    mr: usize,
) {
    match mr {
        0..=4 => kernel::<4, B, S, C>(k, a, b, start, c, mr),
        5..=8 => kernel::<8, B, S, C>(k, a, b, start, c, mr),
        _ => kernel::<MR, B, S, C>(k, a, b, start, c, mr),
    }
}

/// `acc ← start + Ã·B` for one `R × NR` tile (`Ã` a packed `MR`-row panel
/// whose first `R` rows are used), then its first `mr ≤ R` rows go to `c`.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, B: BRows, S: Start, C: Tile>(
    k: usize,
    a: *const f32,
    b: &B,
    start: &S,
    c: &C,
    mr: usize,
) {
    c.prefetch(mr);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for (i, row) in acc.iter_mut().enumerate() {
        (row[0], row[1]) = start.row(i);
    }
    for p0 in (0..k).step_by(B::UNROLL) {
        for u in 0..B::UNROLL {
            let p = p0 + u;
            let (b0, b1) = b.load(p, u);
            let ap = a.add(p * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(i));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(mr) {
        c.store(i, row[0], row[1]);
    }
}

/// Most taps per k block of [`conv_flat`]: 36 KiB of a tile's B rows.
const CONV_KC: usize = 288;

/// Columns of output one flat-convolution tile computes.
pub(crate) const FLAT_TILE: usize = NR;

/// Packs a row-major `m × k` matrix (row stride `rsa`) into the `MR`-row
/// panels [`conv_flat`] takes as its weights.
///
/// # Safety
/// `a` must be valid for `m` rows of `k` values `rsa` apart, and
/// [`available`] must be true.
pub(crate) unsafe fn pack_weights(m: usize, k: usize, a: *const f32, rsa: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.div_ceil(MR) * MR * k];
    pack_a(m, k, a, rsa as isize, 1, &mut out);
    out
}

/// The output of [`conv_flat`]: `m` channel planes of `rows × ow` pixels,
/// `plane` values apart, and an optional bias per channel.
#[derive(Clone, Copy)]
pub(crate) struct FlatOutput {
    /// First value of the first plane.
    pub out: *mut f32,
    /// Distance between channel planes.
    pub plane: usize,
    /// Pixels per output row.
    pub ow: usize,
    /// Flat columns per output row (the padded input width `W'`).
    pub wp: usize,
    /// `m` biases, added to every pixel of their channel.
    pub bias: Option<*const f32>,
}

/// A stride-1 convolution as a GEMM whose B is never materialised: `W·B`
/// with `B[p][j] = base[offsets[p] + j]`. For a zero-padded image stored
/// flat (`[C][H'][W']`) and `offsets[(c, i, j)] = c·H'W' + i·d·W' + j·d`,
/// flat column `j = y·W' + x` is output pixel `(y, x)` when `x < OW`; the
/// other columns wrap into the next row and are dropped as the tile is
/// stored. Tiles `tiles` of [`FLAT_TILE`] of the `n = OH·W'` flat columns
/// are computed; every output is accumulated in tap order, so any split of
/// the tiles gives the same bits. With `same`, the image is laid out and
/// read as [`conv_same`] describes instead.
///
/// # Safety
/// `weights` from [`pack_weights`] with `m` rows and `k = offsets.len()`
/// columns; `base` readable up to `max(offsets) + ⌈n/FLAT_TILE⌉·FLAT_TILE`
/// (with `same`: as [`conv_same`]); `out.out` writable for `m` planes of
/// `OH·OW` pixels; [`available`] true.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv_flat(
    m: usize,
    n: usize,
    tiles: std::ops::Range<usize>,
    weights: &[f32],
    base: *const f32,
    offsets: &[usize],
    same: Option<SameWidth>,
    out: FlatOutput,
) {
    if let Some(geo) = same {
        return conv_same(m, n, tiles, weights, base, offsets, geo, out);
    }
    let k = offsets.len();
    let kb = conv_k_block(k, 1);
    let mut partial = partial_sums(m, k, kb);
    for t in tiles {
        let n0 = t * NR;
        let mut valid = 0u32;
        for l in 0..NR.min(n - n0) {
            if (n0 + l) % out.wp < out.ow {
                valid |= 1 << l;
            }
        }
        let start = n0 / out.wp * out.ow + (n0 % out.wp).min(out.ow);
        let rows = |k0: usize, k1: usize| Offsets {
            base: base.add(n0),
            offsets: &offsets[k0..k1],
        };
        let tile = |i0| Compact::new(&out, i0, start, valid);
        tile_panels(m, k, kb, weights, &mut partial, rows, tile);
    }
}

/// The k block length of a flat convolution: equal blocks of whole `unit`s
/// (kernel rows for [`conv_same`]), at most about `CONV_KC` taps. B is read
/// in place, so a tile's rows for one block (`CONV_KC` × 128 bytes) must
/// stay in L1 while every panel of A passes over them.
fn conv_k_block(k: usize, unit: usize) -> usize {
    (k / unit).div_ceil(k.div_ceil(CONV_KC).max(1)) * unit
}

/// Room for every panel's unfinished sums of one tile between k blocks
/// (none when there is one block).
fn partial_sums(m: usize, k: usize, kb: usize) -> Vec<f32> {
    if kb < k {
        vec![0.0; m.div_ceil(MR) * MR * NR]
    } else {
        Vec::new()
    }
}

/// One tile of a flat convolution: every `MR`-row panel of the packed
/// weights over the k blocks (`kb` long) of the rows `rows(k0, k1)`, the
/// finished panel at row `i0` stored through `tile(i0)`; between blocks the
/// sums wait in `partial` ([`partial_sums`]). The same additions in the
/// same order as one unblocked loop.
///
/// # Safety
/// As [`conv_flat`] for the rows and tiles given.
#[inline(always)]
unsafe fn tile_panels<B: BRows>(
    m: usize,
    k: usize,
    kb: usize,
    weights: &[f32],
    partial: &mut [f32],
    rows: impl Fn(usize, usize) -> B,
    tile: impl Fn(usize) -> Compact,
) {
    for k0 in (0..k).step_by(kb) {
        let k1 = (k0 + kb).min(k);
        let b = rows(k0, k1);
        for (panel, i0) in (0..m).step_by(MR).enumerate() {
            let w = weights.as_ptr().add(panel * MR * k + k0 * MR);
            // Only dereferenced when there are several blocks (then
            // `partial` holds every panel).
            let sums = partial.as_mut_ptr().wrapping_add(panel * MR * NR);
            let mr = MR.min(m - i0);
            match (k0 == 0, k1 == k) {
                (true, true) => kernel_rows(k1 - k0, w, &b, &Zero, &tile(i0), mr),
                (true, false) => kernel_rows(k1 - k0, w, &b, &Zero, &Raw(sums), mr),
                (false, false) => kernel_rows(k1 - k0, w, &b, &Resume(sums), &Raw(sums), mr),
                (false, true) => kernel_rows(k1 - k0, w, &b, &Resume(sums), &tile(i0), mr),
            }
        }
    }
}

/// The horizontal geometry of [`conv_same`]: output rows as wide as the
/// input rows (`2·pad = dilation·(kw − 1)`).
#[derive(Clone, Copy)]
pub(crate) struct SameWidth {
    /// Pixels per row (input and output).
    pub w: usize,
    /// Kernel width.
    pub kw: usize,
    /// Left padding.
    pub pad: usize,
    /// Horizontal dilation.
    pub dilation: usize,
}

/// Kernel widths [`conv_same`] supports (the tap column is a constant of
/// its unrolled loop).
pub(crate) fn same_width_supported(kw: usize) -> bool {
    matches!(kw, 3 | 5)
}

/// A stride-1 convolution whose output rows are as wide as its input rows,
/// without wasted columns: the image is padded only above and below, so
/// its rows are `W` long and contiguous, output pixel `q = y·W + x` of tap
/// `(c, i, j)` reads `base[offsets[(c, i, j)] + q]` with `offsets = c·H'W +
/// i·d_h·W + j·d_w` and `base` pointing `pad` values before the first
/// padded row, and the lanes whose column `x + j·d_w − pad` falls outside
/// `0..W` are masked to zero (the left and right padding). A tile's
/// [`FLAT_TILE`] columns are consecutive pixels of `n = OH·W`, stored
/// contiguously. k runs in equal blocks of whole kernel rows (as
/// [`conv_flat`]); every output is accumulated in tap order, so any split
/// of the tiles gives the same bits.
///
/// # Safety
/// `weights` from [`pack_weights`] with `m` rows and `k = offsets.len()`
/// (a multiple of `geo.kw`) columns; `base` readable at every unmasked
/// lane; `out.out` writable for `m` planes of `n` pixels; [`available`];
/// [`same_width_supported`]`(geo.kw)`.
#[allow(clippy::too_many_arguments)]
unsafe fn conv_same(
    m: usize,
    n: usize,
    tiles: std::ops::Range<usize>,
    weights: &[f32],
    base: *const f32,
    offsets: &[usize],
    geo: SameWidth,
    out: FlatOutput,
) {
    match geo.kw {
        3 => conv_same_kw::<3>(m, n, tiles, weights, base, offsets, geo, out),
        _ => conv_same_kw::<5>(m, n, tiles, weights, base, offsets, geo, out),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn conv_same_kw<const KW: usize>(
    m: usize,
    n: usize,
    tiles: std::ops::Range<usize>,
    weights: &[f32],
    base: *const f32,
    offsets: &[usize],
    geo: SameWidth,
    out: FlatOutput,
) {
    let k = offsets.len();
    let kb = conv_k_block(k, KW);
    let mut partial = partial_sums(m, k, kb);
    for t in tiles {
        let n0 = t * NR;
        let count = NR.min(n - n0);
        // Lane l is pixel n0 + l; tap column j reads x + j·d − pad.
        let mut bits = [0u32; KW];
        let mut x = n0 % geo.w;
        for l in 0..count {
            for (j, b) in bits.iter_mut().enumerate() {
                if (x + j * geo.dilation).wrapping_sub(geo.pad) < geo.w {
                    *b |= 1 << l;
                }
            }
            x = if x + 1 == geo.w { 0 } else { x + 1 };
        }
        let masks = bits.map(|b| [b as __mmask16, (b >> 16) as __mmask16]);
        let rows = |k0: usize, k1: usize| SameRows::<KW> {
            base: base.wrapping_add(n0),
            offsets: &offsets[k0..k1],
            masks,
        };
        let valid = ((1u64 << count) - 1) as u32;
        let tile = |i0| Compact::new(&out, i0, n0, valid);
        tile_panels(m, k, kb, weights, &mut partial, rows, tile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed-panel definition: `n` rows (A's rows, B's columns) in
    /// panels of `width`, each panel `depth` steps of `width` values,
    /// element `(r, p)` at `x[r·stride_r + p·stride_p]`, zero-padded.
    fn scalar_pack(
        width: usize,
        n: usize,
        depth: usize,
        x: &[f32],
        stride_r: usize,
        stride_p: usize,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; n.div_ceil(width) * width * depth];
        for (panel, r0) in (0..n).step_by(width).enumerate() {
            for p in 0..depth {
                for r in 0..width {
                    out[(panel * depth + p) * width + r] = if r0 + r < n {
                        x[(r0 + r) * stride_r + p * stride_p]
                    } else {
                        0.0
                    };
                }
            }
        }
        out
    }

    /// The vector packers equal the element-by-element definition on every
    /// remainder of rows, columns and depth.
    #[test]
    fn packers_match_the_definition() {
        if !available() {
            return;
        }
        for (rows, depth) in [
            (1usize, 1usize),
            (5, 3),
            (12, 16),
            (13, 17),
            (24, 40),
            (37, 33),
            (64, 288),
        ] {
            let lead = depth + 3;
            let a: Vec<f32> = (0..rows * lead).map(|v| v as f32 * 0.5 - 7.0).collect();
            let mut got = vec![f32::NAN; rows.div_ceil(MR) * MR * depth];
            unsafe { pack_a(rows, depth, a.as_ptr(), lead as isize, 1, &mut got) };
            assert_eq!(
                got,
                scalar_pack(MR, rows, depth, &a, lead, 1),
                "A {rows}×{depth}"
            );
            let mut got = vec![f32::NAN; rows.div_ceil(NR) * NR * depth];
            unsafe { pack_b(depth, rows, a.as_ptr(), 1, lead as isize, &mut got) };
            assert_eq!(
                got,
                scalar_pack(NR, rows, depth, &a, lead, 1),
                "B {depth}×{rows}"
            );
            // Row-major B: `depth` rows of `rows` columns, `rows + 5` apart.
            let ldb = rows + 5;
            let mut got = vec![f32::NAN; rows.div_ceil(NR) * NR * depth];
            let b: Vec<f32> = (0..depth * ldb).map(|v| v as f32 * 0.5 - 7.0).collect();
            unsafe { pack_b(depth, rows, b.as_ptr(), ldb as isize, 1, &mut got) };
            assert_eq!(
                got,
                scalar_pack(NR, rows, depth, &b, 1, ldb),
                "row-major B {depth}×{rows}"
            );
            // Column-major A: rows contiguous, columns `rows + 3` apart.
            let lead = rows + 3;
            let a: Vec<f32> = (0..depth * lead).map(|v| v as f32 * 0.25 - 3.0).collect();
            let mut got = vec![f32::NAN; rows.div_ceil(MR) * MR * depth];
            unsafe { pack_a(rows, depth, a.as_ptr(), 1, lead as isize, &mut got) };
            assert_eq!(
                got,
                scalar_pack(MR, rows, depth, &a, 1, lead),
                "column-major A {rows}×{depth}"
            );
        }
    }
}
