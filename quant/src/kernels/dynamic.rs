//! Dynamic int8 linear map: quantise the activations per call, multiply by
//! pre-packed int8 weights, requantise to f32 with the bias, in one pass.

use anneal_tensor::{Error, Result};

use super::gemm::{run, Epi, Sink, SinkKind, SCRATCH_A};
use super::pack::PackedWeightsI8;
use super::quantize::{quantize_with, tensor_qparams};
use super::requant::Requant;
use super::{holds, len_error, KernelPath, SendPtr};

/// `out = x·Wᵀ + bias` with int8 arithmetic, as PyTorch's dynamically
/// quantised `Linear` (`torch.ao.nn.quantized.dynamic.Linear`):
///
/// 1. `(s_a, z_a)` from the range of the whole of `x`
///    ([`super::choose_qparams_u8`]), `A = quantize(x)` (u8);
/// 2. `C = A·Wᵀ` exactly in i32 ([`super::gemm_u8i8_i32`]);
/// 3. `out[m,n] = f32(C[m,n] − z_a·rowsum[n]) · (s_a·s_w[n]) + bias[n]`.
///
/// Steps 2–3 are fused (step 3 runs on the accumulators in registers), and
/// step 1 writes to a per-thread buffer that is reused, so calls do not
/// allocate once it has grown to the largest `M × K` seen.
///
/// # Error bound
/// With `W[n,k] = s_w[n]·q[n,k] + δw`, `|δw| ≤ s_w/2`, and
/// `x = s_a·(A − z_a) + δa`, `|δa| ≤ s_a/2`, the integer part is exact,
/// `x·W − s_a·s_w·Σ_k (A − z_a)·q = Σ_k (x·δw + δa·W − δa·δw)`, and so
/// ```text
/// |out − (x·Wᵀ + b)| ≤ Σ_k (|W[n,k]|·s_a/2 + |x[m,k]|·s_w[n]/2 + s_a·s_w[n]/4)
///                      + f32 rounding of step 3 (≈ 2⁻²³·|out − b| + ulp(out))
/// ```
///
/// # Shapes
/// `x [M, K]` row-major, `packed` holds `W [N, K]`, `w_scales [N]` or `[1]`,
/// `bias [N]`, `out [M, N]`.
///
/// # Errors
/// On inconsistent lengths, or a non-finite element in `x`.
pub fn linear_dynamic_int8(
    x: &[f32],
    packed: &PackedWeightsI8,
    w_scales: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    linear_dynamic_int8_with(KernelPath::best(), x, packed, w_scales, bias, out)
}

/// [`linear_dynamic_int8`] on a chosen GEMM path (same bits on every path).
///
/// # Errors
/// As [`linear_dynamic_int8`], or if this CPU lacks the path.
pub fn linear_dynamic_int8_with(
    path: KernelPath,
    x: &[f32],
    packed: &PackedWeightsI8,
    w_scales: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let op = "linear_dynamic_int8";
    let path = path.check(op)?;
    let (n, k) = (packed.n(), packed.k());
    if !x.len().is_multiple_of(k) {
        return Err(Error::invalid(
            op,
            format!("x has {} elements, not a multiple of k = {k}", x.len()),
        ));
    }
    let m = x.len() / k;
    if !holds(out.len(), m, n) {
        return Err(len_error(op, "out", &[m, n], out.len()));
    }
    let input = tensor_qparams(op, x)?;
    let rq = Requant {
        input,
        w_scales,
        bias,
    };
    rq.check(op, n)?;
    if m == 0 {
        return Ok(());
    }
    let sink = Sink {
        n,
        kind: SinkKind::F32(SendPtr(out.as_mut_ptr()), Epi::new(&rq, packed)),
    };
    let mut buf = SCRATCH_A.with(|s| std::mem::take(&mut *s.borrow_mut()));
    buf.resize(x.len(), 0);
    quantize_with(x, &mut buf, input);
    // SAFETY: the path was checked, `buf` is m×K, `out` m×N (validated),
    // `rq` was validated against N, and `out` is borrowed mutably.
    unsafe { run(path, &buf, m, packed, sink) };
    SCRATCH_A.with(|s| *s.borrow_mut() = buf);
    Ok(())
}
