//! The no-panic sweep harness shared by every crate's `tests/bad_inputs.rs`
//! (included with `#[path]`): runs calls under `catch_unwind` with a quiet
//! panic hook, groups panics by location, and checks each error with its
//! type's [`SweepError::fault`]: an `anneal_tensor::Error` must name its op
//! (the default); the zoo implements the trait for `anneal_zoo::Error`
//! (one non-empty line) and sweeps with `Sweep<anneal_zoo::Error>`.

#![allow(dead_code)] // each sweep uses the parts it needs

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

/// What a sweep requires of an error beyond being returned instead of a
/// panic.
pub trait SweepError: Display {
    /// What is wrong with this error as a user would read it, or `None`.
    fn fault(&self) -> Option<String>;
}

/// Tensor, autograd, layer, optimiser and quantisation errors name their op
/// first: `op: …`.
impl SweepError for anneal_tensor::Error {
    fn fault(&self) -> Option<String> {
        let msg = self.to_string();
        if self.op().is_empty() || !msg.starts_with(&format!("{}: ", self.op())) {
            Some(format!("error does not name its op: {msg}"))
        } else {
            None
        }
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Installs (once) a panic hook that, inside a sweep, records the panic's
/// location and message instead of printing a backtrace per call.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let loc = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let msg = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                LAST_PANIC.with(|l| *l.borrow_mut() = format!("{loc}: {msg}"));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs calls under `catch_unwind` and collects the ones that panicked,
/// grouped by where they panicked, and the errors of type `E` that fail
/// [`SweepError::fault`].
pub struct Sweep<E: SweepError = anneal_tensor::Error> {
    pub calls: usize,
    pub panics: BTreeMap<String, (usize, String)>,
    pub bad_errors: Vec<String>,
    error: PhantomData<fn() -> E>,
}

/// Only for the default error type, so that `Sweep::default()` needs no
/// annotation; other error types use [`Sweep::new`].
impl Default for Sweep {
    fn default() -> Self {
        Sweep::new()
    }
}

impl<E: SweepError> Sweep<E> {
    /// An empty sweep.
    pub fn new() -> Self {
        Sweep {
            calls: 0,
            panics: BTreeMap::new(),
            bad_errors: Vec::new(),
            error: PhantomData,
        }
    }

    /// Runs `f`, recording a panic under `what`.
    pub fn run<R>(&mut self, what: impl FnOnce() -> String, f: impl FnOnce() -> R) -> Option<R> {
        install_hook();
        self.calls += 1;
        QUIET.with(|q| q.set(true));
        let r = catch_unwind(AssertUnwindSafe(f));
        QUIET.with(|q| q.set(false));
        match r {
            Ok(r) => Some(r),
            Err(_) => {
                let at = LAST_PANIC.with(|l| l.borrow().clone());
                let e = self.panics.entry(at).or_insert((0, what()));
                e.0 += 1;
                None
            }
        }
    }
    /// Runs a fallible call: no panic, and an error passes
    /// [`SweepError::fault`].
    pub fn fallible<R>(
        &mut self,
        what: impl Fn() -> String,
        f: impl FnOnce() -> Result<R, E>,
    ) -> Option<Result<R, E>> {
        let r = self.run(&what, f)?;
        if let Err(e) = &r {
            if let Some(fault) = e.fault() {
                self.bad_errors.push(format!("{}: {fault}", what()));
            }
        }
        Some(r)
    }

    /// Checks an `Ok` result's shape.
    pub fn expect_shape(&mut self, what: impl Fn() -> String, got: &[usize], want: &[usize]) {
        if got != want {
            self.bad_errors
                .push(format!("{}: shape {got:?}, expected {want:?}", what()));
        }
    }

    #[track_caller]
    pub fn finish(self, min_calls: usize) {
        let panics: Vec<String> = self
            .panics
            .iter()
            .map(|(at, (n, first))| format!("{n} calls panicked at {at}; first: {first}"))
            .collect();
        assert!(
            panics.is_empty() && self.bad_errors.is_empty(),
            "of {} calls:\n{}\nbad results:\n{}",
            self.calls,
            panics.join("\n"),
            self.bad_errors.join("\n")
        );
        assert!(
            self.calls >= min_calls,
            "only {} calls were made",
            self.calls
        );
    }
}
