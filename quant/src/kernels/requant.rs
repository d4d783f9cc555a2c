//! Requantisation of exact i32 GEMM sums to f32 (with bias) or to u8, the
//! scalar definition every fused epilogue reproduces bit for bit.

use anneal_tensor::{Error, Result};

use super::len_error;

/// Affine u8 quantisation parameters: `x ≈ scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineU8 {
    /// Step between adjacent codes (finite, > 0).
    pub scale: f32,
    /// The code that represents 0.0.
    pub zero_point: u8,
}

impl AffineU8 {
    /// Checks that the scale is finite and positive.
    pub(crate) fn check(&self, op: &'static str, what: &str) -> Result<()> {
        if self.scale.is_finite() && self.scale > 0.0 {
            Ok(())
        } else {
            Err(Error::invalid(
                op,
                format!("{what} scale must be finite and > 0, got {}", self.scale),
            ))
        }
    }

    /// `q = sat_u8(round_half_even(x · (1/scale)) + zero_point)`.
    pub fn quantize(&self, x: f32) -> u8 {
        quant_one_u8(x, 1.0 / self.scale, self.zero_point as i32)
    }

    /// `x = scale · (q − zero_point)`.
    pub fn dequantize(&self, q: u8) -> f32 {
        self.scale * (q as i32 - self.zero_point as i32) as f32
    }
}

/// How to turn `C = A·Wᵀ` (u8 × i8 sums) into real values.
///
/// `y[m,n] = f32(C[m,n] − z_a·rowsum[n]) · (s_a · s_w[n]) + bias[n]`.
#[derive(Debug, Clone, Copy)]
pub struct Requant<'a> {
    /// Quantisation of the activations `A` (`s_a`, `z_a`).
    pub input: AffineU8,
    /// Weight scales: one per output channel (length `N`) or one for the
    /// whole tensor (length 1).
    pub w_scales: &'a [f32],
    /// Optional bias, length `N`.
    pub bias: Option<&'a [f32]>,
}

impl Requant<'_> {
    /// Validates the parameters against `n` output channels.
    pub(crate) fn check(&self, op: &'static str, n: usize) -> Result<()> {
        self.input.check(op, "activation")?;
        let ws = self.w_scales.len();
        if ws != 1 && ws != n {
            return Err(Error::invalid(
                op,
                format!("w_scales has {ws} elements; expected 1 or n = {n}"),
            ));
        }
        if let Some(b) = self.bias {
            if b.len() != n {
                return Err(len_error(op, "bias", &[n], b.len()));
            }
        }
        Ok(())
    }

    /// `s_w` of channel `j`.
    #[inline]
    pub(crate) fn w_scale(&self, j: usize) -> f32 {
        if self.w_scales.len() == 1 {
            self.w_scales[0]
        } else {
            self.w_scales[j]
        }
    }
}

/// One f32 output: `f32(acc − za_rs) · scale + bias`, `za_rs = z_a·rowsum`
/// and `scale = s_a·s_w` already rounded to i32 / f32.
#[inline(always)]
pub(crate) fn requant_one_f32(acc: i32, za_rs: i32, scale: f32, bias: Option<f32>) -> f32 {
    let v = acc.wrapping_sub(za_rs) as f32 * scale;
    match bias {
        Some(b) => v + b,
        None => v,
    }
}

/// Bound applied before rounding; any value beyond it saturates anyway.
pub(crate) const QCLAMP: f32 = 512.0;

/// `sat_u8(round_half_even(y · inv) + zp)`. A NaN becomes −512 before
/// rounding (as `vmaxps(NaN, −512)` does in the SIMD code), so it saturates.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` would keep a NaN; max/min drop it
pub(crate) fn quant_one_u8(y: f32, inv: f32, zp: i32) -> u8 {
    let t = (y * inv).max(-QCLAMP).min(QCLAMP);
    (t.round_ties_even() as i32 + zp).clamp(0, 255) as u8
}

/// Checks `acc`/`out` against `row_sums` and returns `(m, n)`.
fn check_acc(op: &'static str, acc: usize, out: usize, n: usize) -> Result<usize> {
    if n == 0 || !acc.is_multiple_of(n) {
        return Err(Error::invalid(
            op,
            format!("acc has {acc} elements, not a multiple of n = {n} (row_sums length)"),
        ));
    }
    let m = acc / n;
    if out != acc {
        return Err(len_error(op, "out", &[m, n], out));
    }
    Ok(m)
}

/// Requantises i32 sums `acc [M, N]` to f32:
/// `out[m,n] = f32(acc[m,n] − z_a·row_sums[n]) · (s_a · s_w[n]) + bias[n]`
/// (f32 arithmetic in this order, no FMA; `z_a·row_sums` in i32).
///
/// This is the reference the fused [`super::gemm_u8i8_f32`] epilogue
/// matches bit for bit.
///
/// # Errors
/// On inconsistent lengths or a non-positive activation scale.
pub fn requantize_f32(
    acc: &[i32],
    row_sums: &[i32],
    rq: &Requant<'_>,
    out: &mut [f32],
) -> Result<()> {
    let op = "requantize_f32";
    let n = row_sums.len();
    check_acc(op, acc.len(), out.len(), n)?;
    rq.check(op, n)?;
    let za = rq.input.zero_point as i32;
    for (arow, orow) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for j in 0..n {
            let scale = rq.input.scale * rq.w_scale(j);
            orow[j] = requant_one_f32(
                arow[j],
                za.wrapping_mul(row_sums[j]),
                scale,
                rq.bias.map(|b| b[j]),
            );
        }
    }
    Ok(())
}

/// Requantises i32 sums `acc [M, N]` to u8 with output parameters `output`:
/// `out[m,n] = sat_u8(round_half_even(y[m,n] · (1/s_o)) + z_o)`, `y` as in
/// [`requantize_f32`] and `1/s_o` rounded to f32.
///
/// # Errors
/// On inconsistent lengths or a non-positive scale.
pub fn requantize_u8(
    acc: &[i32],
    row_sums: &[i32],
    rq: &Requant<'_>,
    output: AffineU8,
    out: &mut [u8],
) -> Result<()> {
    let op = "requantize_u8";
    let n = row_sums.len();
    check_acc(op, acc.len(), out.len(), n)?;
    rq.check(op, n)?;
    output.check(op, "output")?;
    let za = rq.input.zero_point as i32;
    let inv = 1.0 / output.scale;
    let zo = output.zero_point as i32;
    for (arow, orow) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for j in 0..n {
            let scale = rq.input.scale * rq.w_scale(j);
            let y = requant_one_f32(
                arow[j],
                za.wrapping_mul(row_sums[j]),
                scale,
                rq.bias.map(|b| b[j]),
            );
            orow[j] = quant_one_u8(y, inv, zo);
        }
    }
    Ok(())
}
