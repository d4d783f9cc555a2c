//! Element traits: [`Scalar`] for anything a tensor can hold (shape ops work on
//! every `Scalar`), [`Element`] for the floating-point types that arithmetic,
//! reductions and the GEMM-based kernels need (`f32`, `f64`).

use std::cell::RefCell;
use std::fmt::{Debug, Display};
use std::iter::Sum;

use num_traits::{Float, FromPrimitive, NumAssign};

/// The element types a tensor can hold, as a runtime tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Boolean (masks).
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 64-bit integer.
    I64,
    /// Platform index type (indices returned by argmax, used by gather).
    Usize,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::Usize => std::mem::size_of::<usize>(),
        }
    }
}

/// Anything a [`Tensor`](crate::Tensor) can store. Shape operations (reshape,
/// permute, concat, gather, …) are available for every `Scalar`.
pub trait Scalar: Copy + Send + Sync + Debug + Display + PartialEq + Default + 'static {
    /// The runtime tag of this type.
    const DTYPE: DType;
}

macro_rules! impl_scalar {
    ($($t:ty => $d:ident),*) => { $(impl Scalar for $t { const DTYPE: DType = DType::$d; })* };
}
impl_scalar!(f32 => F32, f64 => F64, bool => Bool, u8 => U8, i8 => I8, i32 => I32,
    u32 => U32, i64 => I64, usize => Usize);

/// Floating-point element types: arithmetic, reductions, matmul and convolution.
///
/// Implemented for `f32` (the default) and `f64` (for tight gradient checks).
pub trait Element: Scalar + Float + FromPrimitive + NumAssign + Sum + PartialOrd {
    /// Converts an `f64` constant (rounding to nearest for `f32`).
    fn from_f64_lossy(x: f64) -> Self;

    /// Converts to `f64` exactly.
    fn to_f64_exact(self) -> f64;

    /// The error function `erf(x)`, to full precision of the type.
    fn erf(self) -> Self;

    /// General matrix multiply on raw strided buffers:
    /// `C ← alpha·A·B + beta·C`, with `A` `m×k`, `B` `k×n`, `C` `m×n`.
    ///
    /// # Safety
    /// Every index reachable through the given strides and sizes must lie
    /// inside the buffers behind the pointers, and `c` must not alias `a` or
    /// `b`. When `beta` is zero, `C` is not read (it may hold anything).
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// A multi-threaded GEMM over rayon's pool for large products with a
    /// row-major output (`C[i, j]` at `c + i·rsc + j`); returns `false` when
    /// the type has none, so the caller splits the work itself.
    ///
    /// # Safety
    /// As [`Element::gemm_raw`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_threaded(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
    ) -> bool {
        let _ = (m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc);
        false
    }

    /// Runs `f` with a per-thread scratch buffer of at least `len` elements
    /// whose contents are unspecified. The buffer is reused across calls so
    /// that kernels such as im2col do not allocate on every call.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

fn scratch<T: Copy + Default, R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    // A re-entrant call (a kernel inside a kernel on the same thread) gets a
    // fresh buffer instead of a borrow panic.
    let mut f = Some(f);
    let reused = cell.with(|c| {
        if let Ok(mut buf) = c.try_borrow_mut() {
            if buf.len() < len {
                // Exact size, old contents dropped first (never needed).
                *buf = Vec::new();
                *buf = vec![T::default(); len];
            }
            let f = f.take().expect("scratch closure used once");
            Some(f(&mut buf[..len]))
        } else {
            None
        }
    });
    match reused {
        Some(r) => r,
        None => {
            let mut v = vec![T::default(); len];
            (f.take().expect("scratch closure used once"))(&mut v)
        }
    }
}

thread_local! {
    static SCRATCH_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl Element for f32 {
    fn from_f64_lossy(x: f64) -> Self {
        x as f32
    }
    fn to_f64_exact(self) -> f64 {
        self as f64
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        if m == 1 && csc == 1 && beta == 0.0 {
            // A row vector times a matrix: packing would cost more than the product.
            // SAFETY: forwarded contract.
            unsafe { crate::matmul::gemv_row(k, n, alpha, a, csa, b, rsb, csb, c) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if csc == 1 && crate::gemm_avx512::available() {
            // SAFETY: forwarded contract; the CPU supports AVX-512F.
            unsafe {
                crate::gemm_avx512::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc)
            };
            return;
        }
        // SAFETY: forwarded contract, see the trait documentation.
        unsafe {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
    unsafe fn gemm_threaded(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if crate::gemm_avx512::available() && m >= 2 * crate::gemm_avx512::ROW_BLOCK {
            // SAFETY: forwarded contract; the CPU supports AVX-512F.
            unsafe {
                crate::gemm_avx512::sgemm_threaded(
                    m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc,
                )
            };
            return true;
        }
        let _ = (m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc);
        false
    }
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        scratch(&SCRATCH_F32, len, f)
    }
}

impl Element for f64 {
    fn from_f64_lossy(x: f64) -> Self {
        x
    }
    fn to_f64_exact(self) -> f64 {
        self
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded contract, see the trait documentation.
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        scratch(&SCRATCH_F64, len, f)
    }
}

/// Shorthand for an `Element` constant from an `f64` literal.
#[inline(always)]
pub(crate) fn c<T: Element>(x: f64) -> T {
    T::from_f64_lossy(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        // Abramowitz & Stegun table 7.1.
        assert!((Element::erf(0.5f64) - 0.520_499_877_813_046_5).abs() < 1e-15);
        assert!((Element::erf(1.0f64) - 0.842_700_792_949_714_9).abs() < 1e-15);
        assert_eq!(Element::erf(0.0f32), 0.0);
    }

    #[test]
    fn nested_scratch_does_not_panic() {
        let s = f32::with_scratch(4, |a| {
            a.fill(1.0);
            f32::with_scratch(3, |b| {
                b.fill(2.0);
                b.iter().sum::<f32>()
            }) + a.iter().sum::<f32>()
        });
        assert_eq!(s, 10.0);
    }
}
