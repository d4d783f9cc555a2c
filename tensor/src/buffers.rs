//! Recycling of large tensor buffers.
//!
//! A training step allocates and frees the same large activation and
//! gradient buffers every iteration. Freed blocks of that size go back to
//! the operating system (glibc trims the heap top and unmaps big chunks), so
//! every step pays a page fault per 4 KiB page touched again — measured at
//! about a fifth of a small CNN's training step on this machine. Like
//! PyTorch's caching allocators, tensors whose storage dies unshared hand
//! large buffers to a bounded process-wide cache, and kernels take their
//! output buffers from it.
//!
//! Only the memory is reused, never the contents: a recycled buffer comes
//! back as an empty `Vec` whose elements the caller writes before reading,
//! so results cannot depend on what the cache holds.

use std::alloc::{dealloc, Layout};
use std::mem::{align_of, size_of, ManuallyDrop};
use std::ptr::NonNull;
use std::sync::Mutex;

/// Buffers smaller than this are left to the system allocator, which
/// serves them from its free lists, usually still warm in cache.
const MIN_BYTES: usize = 2 << 20;

/// Default bound on the bytes the cache keeps alive.
const DEFAULT_LIMIT: usize = 256 << 20;

/// One cached allocation: made by a `Vec` of elements with this alignment,
/// `bytes` long.
struct Block {
    ptr: NonNull<u8>,
    bytes: usize,
    align: usize,
}

// SAFETY: a Block owns its allocation exclusively (it was taken from a Vec
// nobody else references) and holds no thread-bound data.
unsafe impl Send for Block {}

impl Block {
    /// Returns the memory to the system allocator.
    fn free(self) {
        // SAFETY: the block came from a Vec whose allocation had exactly
        // this size and alignment (see `recycle`).
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.bytes, self.align),
            )
        }
    }
}

struct Cache {
    blocks: Vec<Block>,
    bytes: usize,
    limit: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: Vec::new(),
    bytes: 0,
    limit: DEFAULT_LIMIT,
});

/// Hands a dead tensor's storage to the cache (or frees it when it is small
/// or the cache is full). Elements are plain data: nothing to drop.
pub(crate) fn recycle<T: Copy>(v: Vec<T>) {
    recycle_into(&CACHE, v)
}

fn recycle_into<T: Copy>(cache: &Mutex<Cache>, v: Vec<T>) {
    let bytes = v.capacity() * size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    let Ok(mut cache) = cache.lock() else {
        return;
    };
    if cache.bytes + bytes > cache.limit {
        return;
    }
    let mut v = ManuallyDrop::new(v);
    let Some(ptr) = NonNull::new(v.as_mut_ptr().cast::<u8>()) else {
        return;
    };
    cache.bytes += bytes;
    cache.blocks.push(Block {
        ptr,
        bytes,
        align: align_of::<T>(),
    });
}

/// An empty vector with room for at least `n` elements, reusing a cached
/// block of between `n` and `2n` elements when one exists; `None` when the
/// request is small or nothing fits (the caller then allocates normally).
pub(crate) fn take<T: Copy>(n: usize) -> Option<Vec<T>> {
    take_from(&CACHE, n)
}

fn take_from<T: Copy>(cache: &Mutex<Cache>, n: usize) -> Option<Vec<T>> {
    let size = size_of::<T>();
    let bytes = n.checked_mul(size)?;
    if bytes < MIN_BYTES {
        return None;
    }
    let mut cache = cache.lock().ok()?;
    // Smallest fitting block; among equals the most recently recycled one,
    // whose memory is likeliest still in cache.
    let best = cache
        .blocks
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| {
            b.align == align_of::<T>()
                && b.bytes >= bytes
                && b.bytes / 2 <= bytes
                && b.bytes % size == 0
        })
        .min_by_key(|(_, b)| b.bytes)
        .map(|(i, _)| i)?;
    let block = cache.blocks.swap_remove(best);
    cache.bytes -= block.bytes;
    // SAFETY: the block was allocated by a Vec of an element type with this
    // size-compatible capacity (`bytes % size == 0`) and the same alignment;
    // length 0 means no element is read before being written.
    Some(unsafe { Vec::from_raw_parts(block.ptr.as_ptr().cast::<T>(), 0, block.bytes / size) })
}

/// An empty vector with room for `n` values (a recycled block when one
/// fits), for kernels that write every value through
/// `spare_capacity_mut` and then `set_len(n)`: no fill pass first.
pub(crate) fn uninit<T: Copy>(n: usize) -> Vec<T> {
    let mut v = take(n).unwrap_or_default();
    v.reserve_exact(n);
    v
}

/// `n` copies of `value`, in a recycled buffer when one fits.
pub(crate) fn filled<T: Copy>(n: usize, value: T) -> Vec<T> {
    match take(n) {
        Some(mut v) => {
            v.resize(n, value);
            v
        }
        None => vec![value; n],
    }
}

/// Frees every cached buffer and sets the most bytes the cache may keep
/// (0 turns recycling off). Returns the bytes released.
pub fn set_buffer_cache_limit(limit: usize) -> usize {
    let Ok(mut cache) = CACHE.lock() else {
        return 0;
    };
    cache.limit = limit;
    let released = cache.bytes;
    cache.bytes = 0;
    for block in std::mem::take(&mut cache.blocks) {
        block.free();
    }
    released
}

/// Bytes currently held by the buffer cache.
pub fn buffer_cache_bytes() -> usize {
    CACHE.lock().map(|c| c.bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_memory_is_reused_for_a_fitting_request_only() {
        let cache = Mutex::new(Cache {
            blocks: Vec::new(),
            bytes: 0,
            limit: 1 << 30,
        });
        let n = MIN_BYTES; // f32 elements: 4·MIN_BYTES bytes
        let v: Vec<f32> = vec![1.5; n];
        let ptr = v.as_ptr() as usize;
        recycle_into(&cache, v);
        assert_eq!(cache.lock().unwrap().bytes, 4 * MIN_BYTES);
        // Too large, or so small the block would be mostly wasted: refused.
        assert!(take_from::<f32>(&cache, n + 1).is_none());
        assert!(take_from::<f32>(&cache, n / 4).is_none());
        // Different alignment (f64): refused.
        assert!(take_from::<f64>(&cache, n / 2).is_none());
        // A u32 request of the same size reuses it (same size and alignment).
        let w: Vec<u32> = take_from(&cache, n).expect("a fitting block is cached");
        assert_eq!((w.as_ptr() as usize, w.len(), w.capacity()), (ptr, 0, n));
        assert_eq!(cache.lock().unwrap().bytes, 0);
        // Small buffers are not cached; the limit is respected.
        recycle_into(&cache, vec![0f32; 16]);
        cache.lock().unwrap().limit = MIN_BYTES;
        recycle_into(&cache, w);
        assert_eq!(cache.lock().unwrap().blocks.len(), 0);
    }
}
