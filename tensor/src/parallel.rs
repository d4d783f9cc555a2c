//! Work splitting. Element-wise work is spread over rayon's pool only when a
//! tensor is large enough to pay for it; chunk sizes are fixed (never derived
//! from the thread count) so results are bit-identical at any thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Below this many elements, element-wise kernels stay on the calling thread.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// Chunk length used when element-wise work is split.
pub const CHUNK: usize = 1 << 13;

/// Applies `f` to every element of `src`, in parallel when it pays.
pub(crate) fn map_slice<A: Copy + Sync, B: Send + Default + Copy>(
    src: &[A],
    f: impl Fn(A) -> B + Sync + Send,
) -> Vec<B> {
    let n = src.len();
    let mut out = crate::buffers::uninit(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
        spare
            .par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, s)| {
                o.iter_mut()
                    .zip(s)
                    .for_each(|(o, &x)| *o = MaybeUninit::new(f(x)))
            });
    } else {
        spare
            .iter_mut()
            .zip(src)
            .for_each(|(o, &x)| *o = MaybeUninit::new(f(x)));
    }
    // SAFETY: every one of the n values was written above.
    unsafe { out.set_len(n) };
    out
}
