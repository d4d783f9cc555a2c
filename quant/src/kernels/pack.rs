//! Packing int8 weights, once at conversion time, into the layout the GEMM
//! kernels stream.

use anneal_tensor::{Error, Result};

use super::{holds, len_error};

/// Output channels per packed block: one 512-bit register of i32 sums.
pub(crate) const NB: usize = 16;

/// Bytes of `k` consumed by one `vpdpbusd` lane.
pub(crate) const KG: usize = 4;

/// The largest inner dimension whose sums cannot overflow `i32`:
/// `⌊(2³¹ − 1) / (255 · 128)⌋ = 65 793`.
pub const MAX_K: usize = (i32::MAX as usize) / (255 * 128);

/// Signed 8-bit weights `W [N, K]` packed once for [`super::gemm_u8i8_i32`].
///
/// # Layout
/// Output channels are grouped in blocks of 16 and `k` in groups of 4 bytes
/// (the 4 products one `vpdpbusd` lane sums). Block `b`, group `g` is a
/// 64-byte tile holding `W[16b + c, 4g + t]` at byte `4c + t`:
///
/// ```text
/// data[((b · G + g) · 16 + c) · 4 + t] = W[16b + c, 4g + t]   G = ⌈K/4⌉
/// ```
///
/// Channels past `N` and `k` past `K` are zero, so padding never changes a
/// sum. `row_sums[n] = Σ_k W[n, k]` corrects for the activation zero point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedWeightsI8 {
    n: usize,
    k: usize,
    data: Vec<i8>,
    /// `Σ_k W[n, k]`, zero-padded to a whole number of blocks.
    row_sums: Vec<i32>,
}

impl PackedWeightsI8 {
    /// Packs row-major `w` (`n × k`, PyTorch's Linear layout `[out, in]`).
    ///
    /// # Errors
    /// If `w.len() != n·k`, `n` or `k` is zero, or `k > `[`MAX_K`].
    pub fn pack(w: &[i8], n: usize, k: usize) -> Result<Self> {
        let op = "PackedWeightsI8::pack";
        check_nk(op, n, k)?;
        if !holds(w.len(), n, k) {
            return Err(len_error(op, "w", &[n, k], w.len()));
        }
        let groups = k.div_ceil(KG);
        let blocks = n.div_ceil(NB);
        let mut data = vec![0i8; blocks * groups * NB * KG];
        let mut row_sums = vec![0i32; blocks * NB];
        for (r, row) in w.chunks_exact(k).enumerate() {
            let (b, c) = (r / NB, r % NB);
            let base = b * groups * NB * KG + c * KG;
            for (g, quad) in row.chunks(KG).enumerate() {
                let dst = base + g * NB * KG;
                data[dst..dst + quad.len()].copy_from_slice(quad);
            }
            row_sums[r] = row.iter().map(|&v| v as i32).sum();
        }
        Ok(Self {
            n,
            k,
            data,
            row_sums,
        })
    }

    /// Quantises f32 weights per output channel (symmetric, see
    /// [`quantize_weights_i8_per_channel`]) and packs them; returns the
    /// packed weights and the scales `s_w[n]`.
    pub fn from_f32_per_channel(w: &[f32], n: usize, k: usize) -> Result<(Self, Vec<f32>)> {
        let (q, scales) = quantize_weights_i8_per_channel(w, n, k)?;
        Ok((Self::pack(&q, n, k)?, scales))
    }

    /// Output channels `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner dimension `K` (before padding to a multiple of 4).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `Σ_k W[n, k]` for each output channel (length `N`).
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums[..self.n]
    }

    /// Bytes of packed weights, padding included.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + self.row_sums.len() * 4
    }

    /// The weights back in row-major `N × K` order.
    pub fn unpack(&self) -> Vec<i8> {
        let groups = self.groups();
        let mut w = vec![0i8; self.n * self.k];
        for (r, row) in w.chunks_exact_mut(self.k).enumerate() {
            let (b, c) = (r / NB, r % NB);
            for (kk, v) in row.iter_mut().enumerate() {
                *v = self.data[((b * groups + kk / KG) * NB + c) * KG + kk % KG];
            }
        }
        w
    }

    /// Groups of 4 along `k`: `⌈K/4⌉`.
    pub(crate) fn groups(&self) -> usize {
        self.k.div_ceil(KG)
    }

    /// Blocks of 16 output channels: `⌈N/16⌉`.
    pub(crate) fn blocks(&self) -> usize {
        self.n.div_ceil(NB)
    }

    /// The packed bytes (see the type's layout).
    pub(crate) fn data(&self) -> &[i8] {
        &self.data
    }

    /// Row sums padded with zeros to `16·blocks`.
    pub(crate) fn row_sums_padded(&self) -> &[i32] {
        &self.row_sums
    }
}

/// Rejects empty or too-deep weight shapes.
pub(crate) fn check_nk(op: &'static str, n: usize, k: usize) -> Result<()> {
    if n == 0 || k == 0 {
        return Err(Error::invalid(
            op,
            format!("weight shape [{n}, {k}] must have n ≥ 1 and k ≥ 1"),
        ));
    }
    if k > MAX_K {
        return Err(Error::invalid(
            op,
            format!("k = {k} exceeds {MAX_K}, beyond which i32 sums can overflow"),
        ));
    }
    Ok(())
}

/// Symmetric per-output-channel int8 quantisation of `w [n, k]`:
/// `s[n] = max_k |w[n,k]| / 127` (1 for an all-zero row) and
/// `q[n,k] = clamp(round_half_even(w[n,k] / s[n]), −127, 127)`.
///
/// # Errors
/// On a length mismatch, an empty shape, or a non-finite weight.
pub fn quantize_weights_i8_per_channel(
    w: &[f32],
    n: usize,
    k: usize,
) -> Result<(Vec<i8>, Vec<f32>)> {
    let op = "quantize_weights_i8_per_channel";
    if n == 0 || k == 0 {
        return Err(Error::invalid(
            op,
            format!("weight shape [{n}, {k}] must have n ≥ 1 and k ≥ 1"),
        ));
    }
    if !holds(w.len(), n, k) {
        return Err(len_error(op, "w", &[n, k], w.len()));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            op,
            format!("weight {i} is {}, not finite", w[i]),
        ));
    }
    let mut q = vec![0i8; n * k];
    let mut scales = Vec::with_capacity(n);
    for (row, qrow) in w.chunks_exact(k).zip(q.chunks_exact_mut(k)) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        for (d, &v) in qrow.iter_mut().zip(row) {
            *d = (v / s).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        scales.push(s);
    }
    Ok((q, scales))
}
