//! Integer inference kernels: int8 GEMM with fused requantisation, dynamic
//! activation quantisation, a fused dynamic-int8 linear map, and weight-only
//! GGML-style block formats (Q4_0, Q8_0).
//!
//! # int8 GEMM
//!
//! `C[m, n] = Σ_k A[m, k] · W[n, k]` with `A` unsigned 8-bit activations
//! (row-major `M × K`), `W` signed 8-bit weights (`N × K`, PyTorch's Linear
//! layout) and `C` exact 32-bit sums. Weights are packed once
//! ([`PackedWeightsI8::pack`]) into the layout the kernels stream; the
//! per-row sums `Σ_k W[n, k]` are stored alongside so that the activation
//! zero point costs one multiply per output:
//!
//! ```text
//! Σ_k (A[m,k] − z_a)·W[n,k] = C[m,n] − z_a · rowsum[n]
//! ```
//!
//! Three code paths, chosen at run time ([`KernelPath::best`]) or forced
//! ([`gemm_u8i8_i32_with`]):
//!
//! | path | instruction | MACs per instruction |
//! |---|---|---|
//! | [`KernelPath::Vnni`] | `vpdpbusd zmm` (`_mm512_dpbusd_epi32`) | 64 |
//! | [`KernelPath::Avx2`] | `vpmovsxbw` + `vpmaddwd` (`_mm256_madd_epi16`) | 16 |
//! | [`KernelPath::Portable`] | scalar Rust | 1 |
//!
//! No path has a saturating intermediate (`vpmaddubsw` is not used), so the
//! three return bit-identical integers; the fused epilogues perform the same
//! f32 operations in the same order on every path, so the requantised
//! outputs are bit-identical too. Accumulation is exact as long as
//! `K ≤ 65 793` (= ⌊(2³¹−1) / (255·128)⌋), which [`PackedWeightsI8::pack`]
//! enforces.
//!
//! # Requantisation
//!
//! With activation parameters `(s_a, z_a)` ([`AffineU8`]), weight scales
//! `s_w` (one per output channel, or one for the tensor) and an optional f32
//! bias ([`Requant`]):
//!
//! ```text
//! y[m,n] = f32(C[m,n] − z_a·rowsum[n]) · (s_a · s_w[n]) + bias[n]      (f32 output)
//! q[m,n] = sat_u8(round_half_even(y[m,n] · (1/s_o)) + z_o)           (u8 output)
//! ```
//!
//! every product and sum rounded to f32 in exactly this order (no FMA).
//!
//! # Weight-only blocks
//!
//! [`Q4Matrix`] and [`Q8Matrix`] store each row in blocks of [`QK`] = 32
//! weights with one scale per block, as GGML's `Q4_0` and `Q8_0` do, and
//! [`matvec_q4_0`]/[`matmul_q4_0`] (and the Q8 twins) multiply by them with
//! the weights dequantised on the fly.
//!
//! # Example
//!
//! ```
//! use anneal_quant::kernels::*;
//! // A Linear layer 5 → 3 with per-channel int8 weights, packed once.
//! let (n, k) = (3, 5);
//! let w: Vec<f32> = (0..n * k).map(|i| (i as f32 - 7.0) / 10.0).collect();
//! let (packed, scales) = PackedWeightsI8::from_f32_per_channel(&w, n, k)?;
//! // A batch of 2: activations quantised per call, i32 GEMM, f32 out.
//! let x = [0.5f32, -1.0, 0.25, 2.0, 0.0, 1.0, 1.5, -0.5, 0.0, 0.75];
//! let mut y = [0.0f32; 2 * 3];
//! linear_dynamic_int8(&x, &packed, &scales, Some(&[0.1, 0.2, 0.3]), &mut y)?;
//! for (i, yi) in y.iter().enumerate() {
//!     let (m, j) = (i / n, i % n);
//!     let exact: f32 = (0..k).map(|p| x[m * k + p] * w[j * k + p]).sum::<f32>() + [0.1, 0.2, 0.3][j];
//!     assert!((yi - exact).abs() < 0.05);
//! }
//! // Weight-only Q4_0 at batch 1.
//! let q4 = Q4Matrix::quantize(&w, n, k)?;
//! let mut v = [0.0f32; 3];
//! matvec_q4_0(&x[..k], &q4, &mut v)?;
//! # Ok::<(), anneal_tensor::Error>(())
//! ```
//!
//! # Threads
//!
//! Large problems are split over rayon's current pool at boundaries fixed by
//! the shapes. Integer accumulation is exact and each output element is
//! computed by one kernel invocation, so results are bit-identical at any
//! thread count.

mod blocks;
#[cfg(target_arch = "x86_64")]
mod blocks_avx512;
mod dynamic;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_avx2;
#[cfg(target_arch = "x86_64")]
mod gemm_vnni;
mod pack;
mod quantize;
mod requant;

pub use blocks::{
    matmul_q4_0, matmul_q4_0_with, matmul_q8_0, matmul_q8_0_with, matvec_q4_0, matvec_q4_0_with,
    matvec_q8_0, matvec_q8_0_with, BlockPath, BlockQ4_0, BlockQ8_0, Q4Matrix, Q8Matrix, QK,
};
pub use dynamic::{linear_dynamic_int8, linear_dynamic_int8_with};
pub use gemm::{
    gemm_u8i8_f32, gemm_u8i8_f32_with, gemm_u8i8_i32, gemm_u8i8_i32_with, gemm_u8i8_u8,
    gemm_u8i8_u8_with,
};
pub use pack::{quantize_weights_i8_per_channel, PackedWeightsI8, MAX_K};
pub use quantize::{choose_qparams_u8, quantize_activations_u8, quantize_activations_u8_into};
pub use requant::{requantize_f32, requantize_u8, AffineU8, Requant};

use anneal_tensor::{Error, Result};

/// An implementation of the int8 GEMM; every path returns the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// AVX-512 VNNI: `vpdpbusd` on 512-bit registers (needs AVX-512F, BW
    /// and VNNI).
    Vnni,
    /// AVX2: bytes widened to 16 bits and multiplied with `vpmaddwd`, which
    /// cannot saturate (needs AVX2).
    Avx2,
    /// Plain Rust, on every target.
    Portable,
}

impl KernelPath {
    /// Every path, fastest first.
    pub const ALL: [KernelPath; 3] = [KernelPath::Vnni, KernelPath::Avx2, KernelPath::Portable];

    /// Whether this CPU can run the path (detected once, then cached).
    pub fn available(self) -> bool {
        match self {
            KernelPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Vnni => features().vnni,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => features().avx2,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest path this CPU supports.
    pub fn best() -> KernelPath {
        Self::ALL
            .into_iter()
            .find(|p| p.available())
            .unwrap_or(KernelPath::Portable)
    }

    /// Every path this CPU supports, fastest first.
    pub fn all_available() -> Vec<KernelPath> {
        Self::ALL.into_iter().filter(|p| p.available()).collect()
    }

    /// `Ok(self)` if available, else an error naming `op` and the path.
    pub(crate) fn check(self, op: &'static str) -> Result<Self> {
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

/// CPU features the kernels dispatch on.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Features {
    /// AVX-512 F + BW + VL + VNNI.
    pub vnni: bool,
    /// AVX-512 F (the block kernels and the activation range).
    pub avx512: bool,
    /// AVX-512 BW (the activation quantiser's byte packs).
    pub avx512bw: bool,
    /// AVX2.
    pub avx2: bool,
}

/// The detected features, cached after the first call.
#[cfg(target_arch = "x86_64")]
pub(crate) fn features() -> Features {
    use std::sync::OnceLock;
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(|| {
        let avx512 = is_x86_feature_detected!("avx512f");
        let avx512bw = avx512 && is_x86_feature_detected!("avx512bw");
        Features {
            vnni: avx512bw
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni"),
            avx512,
            avx512bw,
            avx2: is_x86_feature_detected!("avx2"),
        }
    })
}

/// Whether a buffer of `len` elements holds exactly `a × b` (no overflow).
pub(crate) fn holds(len: usize, a: usize, b: usize) -> bool {
    a.checked_mul(b) == Some(len)
}

/// An error for a buffer whose length does not match its shape.
pub(crate) fn len_error(op: &'static str, what: &str, shape: &[usize], got: usize) -> Error {
    let expected = shape
        .iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .map_or_else(|| "more than usize::MAX".to_string(), |e| e.to_string());
    Error::invalid(
        op,
        format!(
            "{what} has {got} elements but shape {} needs {expected}",
            anneal_tensor::shape_to_string(shape)
        ),
    )
}

/// A raw pointer that may cross to rayon workers, each of which writes a
/// disjoint region of the buffer behind it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: only used to hand disjoint regions of one live buffer to workers.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above; the pointer itself is never used to create aliasing
// mutable references to the same element.
unsafe impl<T> Sync for SendPtr<T> {}
