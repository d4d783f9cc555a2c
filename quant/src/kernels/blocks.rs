//! Weight-only block quantisation as GGML's `Q4_0` and `Q8_0`: each row of
//! a weight matrix is cut into blocks of [`QK`] = 32 values sharing one
//! scale, and products with f32 activations dequantise the weights on the
//! fly, so a memory-bound matrix–vector product moves 5 (Q4_0) or 9 (Q8_0)
//! bits per weight instead of 32.
//!
//! Scales are stored as `f32` (GGML stores `f16`): 4.5 → 5 bits per weight
//! for Q4_0, in exchange for scales that need no conversion and no f16
//! rounding of `d`.

use anneal_tensor::{Error, Result};
use rayon::prelude::*;

use super::{holds, len_error, SendPtr};

/// Weights per block.
pub const QK: usize = 32;

/// Rows interleaved in the block storage (one register block of the
/// matrix–vector kernel).
pub(crate) const IL: usize = 8;

/// Weight rows per parallel task (fixed, so results do not depend on the
/// number of threads; a multiple of [`IL`]).
const TASK_ROWS: usize = 64;

/// The storage slot of block `b` of row `r` for `nb` blocks per row.
#[inline]
pub(crate) fn slot(r: usize, b: usize, nb: usize) -> usize {
    ((r / IL) * nb + b) * IL + r % IL
}

/// Below this many multiply-adds a product stays on the calling thread.
const PAR_WORK: usize = 1 << 20;

/// An implementation of the block kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockPath {
    /// AVX-512F: 32 weights dequantised into two zmm registers per block.
    Avx512,
    /// Plain Rust, on every target.
    Portable,
}

impl BlockPath {
    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            BlockPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            BlockPath::Avx512 => super::features().avx512,
            #[cfg(not(target_arch = "x86_64"))]
            BlockPath::Avx512 => false,
        }
    }

    /// The fastest available path.
    pub fn best() -> BlockPath {
        if BlockPath::Avx512.available() {
            BlockPath::Avx512
        } else {
            BlockPath::Portable
        }
    }

    fn check(self, op: &'static str) -> Result<Self> {
        if self.available() {
            Ok(self)
        } else {
            Err(Error::invalid(
                op,
                format!("kernel path {self:?} is not supported by this CPU"),
            ))
        }
    }
}

/// One Q4_0 block: 32 weights `w[j] ≈ (q[j] − 8) · d` with 4-bit codes
/// `q ∈ 0..=15`.
///
/// # Layout
/// As GGML's `block_q4_0`: byte `j` of `qs` holds `q[j]` in its low nibble
/// and `q[j + 16]` in its high nibble.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ4_0 {
    /// Scale `d`.
    pub d: f32,
    /// Packed codes.
    pub qs: [u8; QK / 2],
}

impl BlockQ4_0 {
    /// GGML's `quantize_row_q4_0_ref`: `m` = the value of largest magnitude
    /// (the first one on ties), `d = m / −8`, and
    /// `q = min(15, ⌊x/d + 8.5⌋)` (x/d computed as `x · (1/d)`), so `m`
    /// itself maps to code 0 and values of the opposite sign reach 15
    /// (clamped from 16 when `x = −m`). Error: `|x − (q−8)d| ≤ |d|/2`,
    /// except `≤ |d|` where `x/d > 7.5`.
    pub fn quantize(x: &[f32; QK]) -> Self {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = code(x[j]) | (code(x[j + QK / 2]) << 4);
        }
        BlockQ4_0 { d, qs }
    }

    /// The 32 weights `(q − 8) · d`.
    pub fn dequantize(&self) -> [f32; QK] {
        let mut out = [0f32; QK];
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = ((b & 15) as i32 - 8) as f32 * self.d;
            out[j + QK / 2] = ((b >> 4) as i32 - 8) as f32 * self.d;
        }
        out
    }
}

/// One Q8_0 block: 32 weights `w[j] ≈ q[j] · d`, `q ∈ −127..=127`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ8_0 {
    /// Scale `d`.
    pub d: f32,
    /// Codes.
    pub qs: [i8; QK],
}

impl BlockQ8_0 {
    /// GGML's `quantize_row_q8_0_ref`: `d = max|x| / 127`,
    /// `q = round_half_away(x · (1/d))`. Error `|x − q·d| ≤ d/2`.
    pub fn quantize(x: &[f32; QK]) -> Self {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        BlockQ8_0 { d, qs }
    }

    /// The 32 weights `q · d`.
    pub fn dequantize(&self) -> [f32; QK] {
        self.qs.map(|q| q as f32 * self.d)
    }
}

/// Shared checks and block iteration of a row-major f32 matrix: calls
/// `f(slot, block)` for every block of every row.
fn for_each_block(
    op: &'static str,
    w: &[f32],
    rows: usize,
    cols: usize,
    mut f: impl FnMut(usize, &[f32; QK]),
) -> Result<()> {
    check_blocks(op, w, rows, cols)?;
    let nb = cols.div_ceil(QK);
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for (b, chunk) in row.chunks(QK).enumerate() {
            let mut blk = [0f32; QK];
            blk[..chunk.len()].copy_from_slice(chunk);
            f(slot(r, b, nb), &blk);
        }
    }
    Ok(())
}

/// Validates a weight matrix before anything is sized from its shape: the
/// shape is non-empty, `w` holds `rows × cols` values, all finite.
fn check_blocks(op: &'static str, w: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::invalid(
            op,
            format!("weight shape [{rows}, {cols}] must be non-empty"),
        ));
    }
    if !holds(w.len(), rows, cols) {
        return Err(len_error(op, "w", &[rows, cols], w.len()));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            op,
            format!("weight {i} is {}, not finite", w[i]),
        ));
    }
    Ok(())
}

/// A weight matrix `W [rows, cols]` in Q4_0 blocks.
///
/// # Layout
/// Row `r` has `nb = ⌈cols/32⌉` blocks (the last zero-padded). Rows are
/// interleaved in groups of 8 so that the kernels read one stream:
/// block `b` of row `r` is slot `s = ((r/8)·nb + b)·8 + r%8`, with scale
/// `d[s]` and codes `qs[16s..16s+16]` in [`BlockQ4_0`]'s nibble order.
/// `rows` is padded to a multiple of 8 with all-zero rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Q4Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    qs: Vec<u8>,
}

impl Q4Matrix {
    /// Quantises row-major `w` block by block ([`BlockQ4_0::quantize`]).
    ///
    /// # Errors
    /// On a length mismatch, an empty shape or a non-finite weight.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_blocks("Q4Matrix::quantize", w, rows, cols)?;
        let slots = rows.div_ceil(IL) * IL * cols.div_ceil(QK);
        let mut d = vec![0f32; slots];
        let mut qs = vec![0x88u8; slots * QK / 2];
        for_each_block("Q4Matrix::quantize", w, rows, cols, |s, blk| {
            let q = BlockQ4_0::quantize(blk);
            d[s] = q.d;
            qs[s * QK / 2..(s + 1) * QK / 2].copy_from_slice(&q.qs);
        })?;
        Ok(Q4Matrix { rows, cols, d, qs })
    }

    /// Output rows (`N`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns (`K`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks per row, `⌈cols/32⌉`.
    pub fn blocks_per_row(&self) -> usize {
        self.cols.div_ceil(QK)
    }

    /// Block `b` of row `r`, if it exists.
    pub fn block(&self, r: usize, b: usize) -> Option<BlockQ4_0> {
        let nb = self.blocks_per_row();
        if r >= self.rows || b >= nb {
            return None;
        }
        let i = slot(r, b, nb);
        let mut qs = [0u8; QK / 2];
        qs.copy_from_slice(&self.qs[i * QK / 2..(i + 1) * QK / 2]);
        Some(BlockQ4_0 { d: self.d[i], qs })
    }

    /// Bytes of storage (codes and scales, padding rows included).
    pub fn size_bytes(&self) -> usize {
        self.qs.len() + 4 * self.d.len()
    }

    /// The dequantised matrix, row-major `rows × cols`.
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.blocks_per_row();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let start = out.len();
            for b in 0..nb {
                out.extend_from_slice(
                    &self
                        .block(r, b)
                        .map(|q| q.dequantize())
                        .unwrap_or([0.0; QK]),
                );
            }
            out.truncate(start + self.cols);
        }
        out
    }

    pub(crate) fn scales(&self) -> &[f32] {
        &self.d
    }

    pub(crate) fn codes(&self) -> &[u8] {
        &self.qs
    }
}

/// A weight matrix `W [rows, cols]` in Q8_0 blocks.
///
/// # Layout
/// As [`Q4Matrix`] (rows interleaved by 8), with codes `qs[32s..32s+32]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    qs: Vec<i8>,
}

impl Q8Matrix {
    /// Quantises row-major `w` block by block ([`BlockQ8_0::quantize`]).
    ///
    /// # Errors
    /// On a length mismatch, an empty shape or a non-finite weight.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_blocks("Q8Matrix::quantize", w, rows, cols)?;
        let slots = rows.div_ceil(IL) * IL * cols.div_ceil(QK);
        let mut d = vec![0f32; slots];
        let mut qs = vec![0i8; slots * QK];
        for_each_block("Q8Matrix::quantize", w, rows, cols, |s, blk| {
            let q = BlockQ8_0::quantize(blk);
            d[s] = q.d;
            qs[s * QK..(s + 1) * QK].copy_from_slice(&q.qs);
        })?;
        Ok(Q8Matrix { rows, cols, d, qs })
    }

    /// Output rows (`N`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns (`K`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks per row, `⌈cols/32⌉`.
    pub fn blocks_per_row(&self) -> usize {
        self.cols.div_ceil(QK)
    }

    /// Block `b` of row `r`, if it exists.
    pub fn block(&self, r: usize, b: usize) -> Option<BlockQ8_0> {
        let nb = self.blocks_per_row();
        if r >= self.rows || b >= nb {
            return None;
        }
        let i = slot(r, b, nb);
        let mut qs = [0i8; QK];
        qs.copy_from_slice(&self.qs[i * QK..(i + 1) * QK]);
        Some(BlockQ8_0 { d: self.d[i], qs })
    }

    /// Bytes of storage (codes and scales, padding rows included).
    pub fn size_bytes(&self) -> usize {
        self.qs.len() + 4 * self.d.len()
    }

    /// The dequantised matrix, row-major `rows × cols`.
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.blocks_per_row();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let start = out.len();
            for b in 0..nb {
                out.extend_from_slice(
                    &self
                        .block(r, b)
                        .map(|q| q.dequantize())
                        .unwrap_or([0.0; QK]),
                );
            }
            out.truncate(start + self.cols);
        }
        out
    }

    pub(crate) fn scales(&self) -> &[f32] {
        &self.d
    }

    pub(crate) fn codes(&self) -> &[i8] {
        &self.qs
    }
}

/// Which block format a kernel call reads.
#[derive(Clone, Copy)]
pub(crate) enum BlockMat<'a> {
    Q4(&'a Q4Matrix),
    Q8(&'a Q8Matrix),
}

impl BlockMat<'_> {
    fn rows(&self) -> usize {
        match self {
            BlockMat::Q4(w) => w.rows,
            BlockMat::Q8(w) => w.rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            BlockMat::Q4(w) => w.cols,
            BlockMat::Q8(w) => w.cols,
        }
    }

    /// Block `b` of row `r` dequantised (portable path).
    #[inline]
    fn dequant(&self, r: usize, b: usize) -> [f32; QK] {
        match self {
            BlockMat::Q4(w) => w.block(r, b).map_or([0.0; QK], |q| q.dequantize()),
            BlockMat::Q8(w) => w.block(r, b).map_or([0.0; QK], |q| q.dequantize()),
        }
    }
}

/// `y = W·x`: `out[n] = Σ_k W[n,k] · x[k]` with the Q4_0 weights
/// dequantised on the fly (each weight exactly `(q − 8)·d` in f32).
///
/// # Shapes
/// `x [K]`, `w [N, K]`, `out [N]`.
///
/// # Errors
/// If `x.len() != K` or `out.len() != N`.
pub fn matvec_q4_0(x: &[f32], w: &Q4Matrix, out: &mut [f32]) -> Result<()> {
    matvec_q4_0_with(BlockPath::best(), x, w, out)
}

/// [`matvec_q4_0`] on a chosen path.
///
/// # Errors
/// As [`matvec_q4_0`], or if this CPU lacks the path.
pub fn matvec_q4_0_with(path: BlockPath, x: &[f32], w: &Q4Matrix, out: &mut [f32]) -> Result<()> {
    product(path, "matvec_q4_0", x, 1, BlockMat::Q4(w), out)
}

/// `Y = X·Wᵀ` for a batch: `out[m,n] = Σ_k x[m,k] · W[n,k]`, Q4_0 weights
/// dequantised once per block and reused for up to 4 rows of `x`.
///
/// # Shapes
/// `x [M, K]`, `w [N, K]`, `out [M, N]`.
///
/// # Errors
/// If `x.len()` is not a multiple of `K` or `out.len() != M·N`.
pub fn matmul_q4_0(x: &[f32], w: &Q4Matrix, out: &mut [f32]) -> Result<()> {
    matmul_q4_0_with(BlockPath::best(), x, w, out)
}

/// [`matmul_q4_0`] on a chosen path.
///
/// # Errors
/// As [`matmul_q4_0`], or if this CPU lacks the path.
pub fn matmul_q4_0_with(path: BlockPath, x: &[f32], w: &Q4Matrix, out: &mut [f32]) -> Result<()> {
    let m = batch_rows("matmul_q4_0", x.len(), w.cols)?;
    product(path, "matmul_q4_0", x, m, BlockMat::Q4(w), out)
}

/// `y = W·x` with Q8_0 weights (each weight exactly `q·d` in f32).
///
/// # Shapes
/// `x [K]`, `w [N, K]`, `out [N]`.
///
/// # Errors
/// If `x.len() != K` or `out.len() != N`.
pub fn matvec_q8_0(x: &[f32], w: &Q8Matrix, out: &mut [f32]) -> Result<()> {
    matvec_q8_0_with(BlockPath::best(), x, w, out)
}

/// [`matvec_q8_0`] on a chosen path.
///
/// # Errors
/// As [`matvec_q8_0`], or if this CPU lacks the path.
pub fn matvec_q8_0_with(path: BlockPath, x: &[f32], w: &Q8Matrix, out: &mut [f32]) -> Result<()> {
    product(path, "matvec_q8_0", x, 1, BlockMat::Q8(w), out)
}

/// `Y = X·Wᵀ` with Q8_0 weights.
///
/// # Shapes
/// `x [M, K]`, `w [N, K]`, `out [M, N]`.
///
/// # Errors
/// If `x.len()` is not a multiple of `K` or `out.len() != M·N`.
pub fn matmul_q8_0(x: &[f32], w: &Q8Matrix, out: &mut [f32]) -> Result<()> {
    matmul_q8_0_with(BlockPath::best(), x, w, out)
}

/// [`matmul_q8_0`] on a chosen path.
///
/// # Errors
/// As [`matmul_q8_0`], or if this CPU lacks the path.
pub fn matmul_q8_0_with(path: BlockPath, x: &[f32], w: &Q8Matrix, out: &mut [f32]) -> Result<()> {
    let m = batch_rows("matmul_q8_0", x.len(), w.cols)?;
    product(path, "matmul_q8_0", x, m, BlockMat::Q8(w), out)
}

fn batch_rows(op: &'static str, xlen: usize, k: usize) -> Result<usize> {
    if !xlen.is_multiple_of(k) {
        return Err(Error::invalid(
            op,
            format!("x has {xlen} elements, not a multiple of k = {k}"),
        ));
    }
    Ok(xlen / k)
}

/// Validates and runs `out[m, n] = Σ_k x[m,k]·W[n,k]`.
fn product(
    path: BlockPath,
    op: &'static str,
    x: &[f32],
    m: usize,
    w: BlockMat<'_>,
    out: &mut [f32],
) -> Result<()> {
    let path = path.check(op)?;
    let (n, k) = (w.rows(), w.cols());
    if !holds(x.len(), m, k) {
        return Err(len_error(op, "x", &[m, k], x.len()));
    }
    if !holds(out.len(), m, n) {
        return Err(len_error(op, "out", &[m, n], out.len()));
    }
    if m == 0 {
        return Ok(());
    }
    let optr = SendPtr(out.as_mut_ptr());
    let task = |rows: std::ops::Range<usize>| {
        let o = optr;
        match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F checked; `x` is m×k and `out` m×n (validated);
            // each task writes only columns `rows` of `out`, and `rows`
            // starts at a multiple of TASK_ROWS, itself a multiple of IL.
            BlockPath::Avx512 => unsafe { super::blocks_avx512::product(x, m, w, rows, o.0) },
            // SAFETY: as above, for the portable kernel.
            _ => unsafe { portable(x, m, w, rows, o.0) },
        }
    };
    if m.saturating_mul(n).saturating_mul(k) < PAR_WORK || rayon::current_num_threads() <= 1 {
        task(0..n);
    } else {
        (0..n.div_ceil(TASK_ROWS)).into_par_iter().for_each(|t| {
            task(t * TASK_ROWS..((t + 1) * TASK_ROWS).min(n));
        });
    }
    Ok(())
}

/// Portable kernel: each block dequantised, then dotted with each `x` row.
///
/// # Safety
/// `x` is `m × K`; `out` points to `m × N` floats of which columns `rows`
/// belong to this call.
unsafe fn portable(
    x: &[f32],
    m: usize,
    w: BlockMat<'_>,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    let (n, k) = (w.rows(), w.cols());
    let nb = k.div_ceil(QK);
    let mut acc = vec![0f32; m];
    for r in rows {
        acc.fill(0.0);
        for b in 0..nb {
            let wd = w.dequant(r, b);
            let len = QK.min(k - b * QK);
            for (i, a) in acc.iter_mut().enumerate() {
                let xs = &x[i * k + b * QK..][..len];
                let mut s = 0f32;
                for (wv, xv) in wd.iter().zip(xs) {
                    s += wv * xv;
                }
                *a += s;
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: `i < m`, `r < N`, and column `r` belongs to this call.
            unsafe { *out.add(i * n + r) = *a };
        }
    }
}
