//! `no_grad`: evaluation that records no graph.

use std::cell::Cell;

thread_local! {
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether operations on this thread currently record a graph.
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Runs `f` without recording a graph (PyTorch's `torch.no_grad()`): every
/// `Var` produced inside is a constant, and no backward closure or parent
/// list is built. The previous mode is restored when `f` returns or unwinds,
/// so there is nothing for the caller to reset.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
    let _restore = Restore;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_and_restores() {
        assert!(is_grad_enabled());
        no_grad(|| {
            assert!(!is_grad_enabled());
            no_grad(|| assert!(!is_grad_enabled()));
            assert!(!is_grad_enabled());
        });
        assert!(is_grad_enabled());
        let r = std::panic::catch_unwind(|| no_grad(|| panic!("boom")));
        assert!(r.is_err());
        assert!(is_grad_enabled());
    }
}
