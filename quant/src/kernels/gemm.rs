//! The int8 GEMM `C = A·Wᵀ` (u8 × i8 → i32): run-time dispatch, the
//! portable kernel, work splitting, and the fused requantising epilogues.

use std::cell::RefCell;

use anneal_tensor::{Error, Result};
use rayon::prelude::*;

use super::pack::{PackedWeightsI8, KG, NB};
use super::requant::{quant_one_u8, requant_one_f32, AffineU8, Requant};
use super::{holds, len_error, KernelPath, SendPtr};

/// Problems with fewer multiply-adds than this run on the calling thread.
const PAR_WORK: usize = 1 << 21;

/// Output channels per parallel task: a multiple of every `NV·16`.
pub(crate) const TASK_BLOCKS: usize = 8;

/// Rows per parallel task.
pub(crate) const TASK_ROWS: usize = 64;

thread_local! {
    /// Per-thread scratch for quantised activations, reused across calls.
    pub(crate) static SCRATCH_A: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where the sums of a GEMM go, and how they are transformed on the way.
#[derive(Clone, Copy)]
pub(crate) struct Sink {
    /// Row stride of the output (= `N`).
    pub n: usize,
    /// What to write.
    pub kind: SinkKind,
}

/// The three epilogues.
#[derive(Clone, Copy)]
pub(crate) enum SinkKind {
    /// Raw i32 sums.
    I32(SendPtr<i32>),
    /// `f32(acc − z_a·rowsum) · (s_a·s_w) + bias`.
    F32(SendPtr<f32>, Epi),
    /// The f32 value quantised with `1/s_o` and `z_o`.
    U8(SendPtr<u8>, Epi, f32, i32),
}

/// Requantisation parameters in raw form for the kernels.
#[derive(Clone, Copy)]
pub(crate) struct Epi {
    /// `s_a`.
    pub a_scale: f32,
    /// `z_a`.
    pub za: i32,
    /// `s_w`: `N` values, or 1 when `!per_channel`.
    pub w_scales: *const f32,
    /// Whether `w_scales` has one value per channel.
    pub per_channel: bool,
    /// Bias (`N` values) or null.
    pub bias: *const f32,
    /// Row sums, zero-padded to whole 16-channel blocks.
    pub row_sums: *const i32,
}

impl Epi {
    /// Raw view of validated requantisation parameters.
    pub(crate) fn new(rq: &Requant<'_>, packed: &PackedWeightsI8) -> Self {
        Epi {
            a_scale: rq.input.scale,
            za: rq.input.zero_point as i32,
            w_scales: rq.w_scales.as_ptr(),
            per_channel: rq.w_scales.len() != 1,
            bias: rq.bias.map_or(std::ptr::null(), |b| b.as_ptr()),
            row_sums: packed.row_sums_padded().as_ptr(),
        }
    }

    /// The f32 output for channel `j` and sum `acc`.
    ///
    /// # Safety
    /// `j < N` for the buffers this was built from.
    #[inline(always)]
    pub unsafe fn f32_at(&self, j: usize, acc: i32) -> f32 {
        // SAFETY: `j < N` (caller); `w_scales` holds N values or 1 (then
        // only index 0 is read), `bias` N values when non-null, `row_sums`
        // at least N.
        let (ws, bias, rs) = unsafe {
            let ws = if self.per_channel {
                *self.w_scales.add(j)
            } else {
                *self.w_scales
            };
            let bias = (!self.bias.is_null()).then(|| *self.bias.add(j));
            (ws, bias, *self.row_sums.add(j))
        };
        requant_one_f32(acc, self.za.wrapping_mul(rs), self.a_scale * ws, bias)
    }
}

// SAFETY: an Epi only reads buffers that outlive the GEMM call using it.
unsafe impl Send for Epi {}
// SAFETY: as above; never written through.
unsafe impl Sync for Epi {}

impl Sink {
    /// Writes `vals[c]` (sums for channels `col0 + c`) of output row `row`.
    ///
    /// # Safety
    /// `row < M`, `col0 + vals.len() ≤ N` for the output behind the sink.
    #[inline]
    pub(crate) unsafe fn write_scalar(&self, row: usize, col0: usize, vals: &[i32]) {
        let off = row * self.n + col0;
        // SAFETY: `off + c < M·N` and `col0 + c < N` for every `c` (caller).
        unsafe {
            match self.kind {
                SinkKind::I32(p) => {
                    for (c, &v) in vals.iter().enumerate() {
                        *p.0.add(off + c) = v;
                    }
                }
                SinkKind::F32(p, ep) => {
                    for (c, &v) in vals.iter().enumerate() {
                        *p.0.add(off + c) = ep.f32_at(col0 + c, v);
                    }
                }
                SinkKind::U8(p, ep, inv, zo) => {
                    for (c, &v) in vals.iter().enumerate() {
                        *p.0.add(off + c) = quant_one_u8(ep.f32_at(col0 + c, v), inv, zo);
                    }
                }
            }
        }
    }
}

/// Validates `a`, `out` against `packed`; returns `M`.
fn check_shapes(op: &'static str, a: usize, out: usize, packed: &PackedWeightsI8) -> Result<usize> {
    let (n, k) = (packed.n(), packed.k());
    if !a.is_multiple_of(k) {
        return Err(Error::invalid(
            op,
            format!("a has {a} elements, not a multiple of k = {k}"),
        ));
    }
    let m = a / k;
    if !holds(out, m, n) {
        return Err(len_error(op, "out", &[m, n], out));
    }
    Ok(m)
}

/// `out[m, n] = Σ_k a[m, k] · W[n, k]` exactly in i32, on the fastest path.
///
/// # Shapes
/// `a [M, K]` u8 row-major, `packed` holds `W [N, K]`, `out [M, N]`.
///
/// # Errors
/// If `a.len()` is not a multiple of `K` or `out.len() != M·N`.
pub fn gemm_u8i8_i32(a: &[u8], packed: &PackedWeightsI8, out: &mut [i32]) -> Result<()> {
    gemm_u8i8_i32_with(KernelPath::best(), a, packed, out)
}

/// [`gemm_u8i8_i32`] on a chosen path (every path returns the same bits).
///
/// # Errors
/// As [`gemm_u8i8_i32`], or if this CPU lacks the path.
pub fn gemm_u8i8_i32_with(
    path: KernelPath,
    a: &[u8],
    packed: &PackedWeightsI8,
    out: &mut [i32],
) -> Result<()> {
    let op = "gemm_u8i8_i32";
    let path = path.check(op)?;
    let m = check_shapes(op, a.len(), out.len(), packed)?;
    let sink = Sink {
        n: packed.n(),
        kind: SinkKind::I32(SendPtr(out.as_mut_ptr())),
    };
    // SAFETY: the path was checked, `a` is m×K and `out` m×N (validated),
    // `rq` was validated against N, and `out` is borrowed mutably.
    unsafe { run(path, a, m, packed, sink) };
    Ok(())
}

/// GEMM with the f32 requantisation fused into the epilogue:
/// `out[m,n] = f32(C[m,n] − z_a·rowsum[n]) · (s_a·s_w[n]) + bias[n]`,
/// bit-identical to [`gemm_u8i8_i32`] followed by [`super::requantize_f32`].
///
/// # Shapes
/// `a [M, K]`, `W [N, K]`, `w_scales [N]` or `[1]`, `bias [N]`, `out [M, N]`.
///
/// # Errors
/// On inconsistent lengths or a non-positive activation scale.
pub fn gemm_u8i8_f32(
    a: &[u8],
    packed: &PackedWeightsI8,
    rq: &Requant<'_>,
    out: &mut [f32],
) -> Result<()> {
    gemm_u8i8_f32_with(KernelPath::best(), a, packed, rq, out)
}

/// [`gemm_u8i8_f32`] on a chosen path.
///
/// # Errors
/// As [`gemm_u8i8_f32`], or if this CPU lacks the path.
pub fn gemm_u8i8_f32_with(
    path: KernelPath,
    a: &[u8],
    packed: &PackedWeightsI8,
    rq: &Requant<'_>,
    out: &mut [f32],
) -> Result<()> {
    let op = "gemm_u8i8_f32";
    let path = path.check(op)?;
    let m = check_shapes(op, a.len(), out.len(), packed)?;
    rq.check(op, packed.n())?;
    let sink = Sink {
        n: packed.n(),
        kind: SinkKind::F32(SendPtr(out.as_mut_ptr()), Epi::new(rq, packed)),
    };
    // SAFETY: the path was checked, `a` is m×K and `out` m×N (validated),
    // `rq` was validated against N, and `out` is borrowed mutably.
    unsafe { run(path, a, m, packed, sink) };
    Ok(())
}

/// GEMM with requantisation to u8 fused into the epilogue:
/// `out[m,n] = sat_u8(round_half_even(y[m,n] · (1/s_o)) + z_o)` with `y` as
/// in [`gemm_u8i8_f32`]; bit-identical to [`super::requantize_u8`].
///
/// # Errors
/// On inconsistent lengths or a non-positive scale.
pub fn gemm_u8i8_u8(
    a: &[u8],
    packed: &PackedWeightsI8,
    rq: &Requant<'_>,
    output: AffineU8,
    out: &mut [u8],
) -> Result<()> {
    gemm_u8i8_u8_with(KernelPath::best(), a, packed, rq, output, out)
}

/// [`gemm_u8i8_u8`] on a chosen path.
///
/// # Errors
/// As [`gemm_u8i8_u8`], or if this CPU lacks the path.
pub fn gemm_u8i8_u8_with(
    path: KernelPath,
    a: &[u8],
    packed: &PackedWeightsI8,
    rq: &Requant<'_>,
    output: AffineU8,
    out: &mut [u8],
) -> Result<()> {
    let op = "gemm_u8i8_u8";
    let path = path.check(op)?;
    let m = check_shapes(op, a.len(), out.len(), packed)?;
    rq.check(op, packed.n())?;
    output.check(op, "output")?;
    let sink = Sink {
        n: packed.n(),
        kind: SinkKind::U8(
            SendPtr(out.as_mut_ptr()),
            Epi::new(rq, packed),
            1.0 / output.scale,
            output.zero_point as i32,
        ),
    };
    // SAFETY: the path was checked, `a` is m×K and `out` m×N (validated),
    // `rq` was validated against N, and `out` is borrowed mutably.
    unsafe { run(path, a, m, packed, sink) };
    Ok(())
}

/// Runs the GEMM on `path` (`a` is `m × K` row-major), writing through
/// `sink`.
///
/// # Safety
/// `path` must be available, `a.len() = m·K`, and the sink's buffers must
/// be valid for `m × N` outputs (and its `Epi` pointers for `N` channels)
/// and not aliased during the call.
pub(crate) unsafe fn run(
    path: KernelPath,
    a: &[u8],
    m: usize,
    packed: &PackedWeightsI8,
    sink: Sink,
) {
    debug_assert_eq!(a.len(), m * packed.k());
    if m == 0 {
        return;
    }
    let sink = &sink;
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Vnni => split(m, packed, |rows, blocks| {
            // SAFETY: VNNI was checked by `KernelPath::check`; `a` is m×K,
            // the sink's buffers were validated against m×N, and tasks
            // write disjoint tiles.
            unsafe { super::gemm_vnni::tiles(a, packed, sink, rows, blocks) }
        }),
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => split(m, packed, |rows, blocks| {
            // SAFETY: as for VNNI, with AVX2 checked.
            unsafe { super::gemm_avx2::tiles(a, packed, sink, rows, blocks) }
        }),
        // SAFETY: the sink covers m×N (caller) and tasks write disjoint
        // tiles.
        _ => split(m, packed, |rows, blocks| unsafe {
            portable_tile(a, packed, sink, rows, blocks)
        }),
    }
}

/// Calls `f(rows, blocks)` over a grid of output tiles, in parallel when
/// the problem is large. Tile boundaries depend only on the shapes.
fn split<F>(m: usize, packed: &PackedWeightsI8, f: F)
where
    F: Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync,
{
    let blocks = packed.blocks();
    let work = m.saturating_mul(packed.n()).saturating_mul(packed.k());
    if work < PAR_WORK || rayon::current_num_threads() <= 1 {
        f(0..m, 0..blocks);
        return;
    }
    let (rt, ct) = (m.div_ceil(TASK_ROWS), blocks.div_ceil(TASK_BLOCKS));
    (0..rt * ct).into_par_iter().for_each(|t| {
        let (r, c) = (t / ct, t % ct);
        let rows = r * TASK_ROWS..((r + 1) * TASK_ROWS).min(m);
        let bl = c * TASK_BLOCKS..((c + 1) * TASK_BLOCKS).min(blocks);
        f(rows, bl);
    });
}

/// Portable kernel on row-major activations: for each row and 16-channel
/// block, sums the 4-byte groups of the packed weights.
///
/// # Safety
/// The sink must cover `M × N` with `rows.end ≤ M`, and no other thread may
/// write this tile.
unsafe fn portable_tile(
    a: &[u8],
    packed: &PackedWeightsI8,
    sink: &Sink,
    rows: std::ops::Range<usize>,
    blocks: std::ops::Range<usize>,
) {
    let k = packed.k();
    for r in rows {
        let arow = &a[r * k..(r + 1) * k];
        for b in blocks.clone() {
            let acc = portable_block(packed, b, |g, t| arow.get(g * KG + t).copied().unwrap_or(0));
            // SAFETY: `r < rows.end ≤ M` and `b < ⌈N/16⌉` (caller).
            unsafe { write_block(sink, packed, r, b, &acc) };
        }
    }
}

/// `acc[c] = Σ_g Σ_t a(g, t) · W[16b + c, 4g + t]` for one block.
#[inline(always)]
fn portable_block(packed: &PackedWeightsI8, b: usize, a: impl Fn(usize, usize) -> u8) -> [i32; NB] {
    let groups = packed.groups();
    let wb = &packed.data()[b * groups * NB * KG..(b + 1) * groups * NB * KG];
    let mut acc = [0i32; NB];
    for (g, tile) in wb.chunks_exact(NB * KG).enumerate() {
        let av = [a(g, 0), a(g, 1), a(g, 2), a(g, 3)].map(|v| v as i32);
        for (c, w) in acc.iter_mut().zip(tile.chunks_exact(KG)) {
            *c += av[0] * w[0] as i32
                + av[1] * w[1] as i32
                + av[2] * w[2] as i32
                + av[3] * w[3] as i32;
        }
    }
    acc
}

/// Writes one row of a block's sums through the sink (clipped at `N`).
///
/// # Safety
/// The sink must cover `M × N` outputs with `r < M`, `b < ⌈N/16⌉`.
#[inline]
pub(crate) unsafe fn write_block(
    sink: &Sink,
    packed: &PackedWeightsI8,
    r: usize,
    b: usize,
    acc: &[i32; NB],
) {
    let col0 = b * NB;
    let cols = NB.min(packed.n() - col0);
    // SAFETY: `r < M` and `col0 + cols ≤ N` (caller).
    unsafe { sink.write_scalar(r, col0, &acc[..cols]) };
}
