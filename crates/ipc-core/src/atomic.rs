//! The atomics that the ring and the synchronization primitives use: std's,
//! or loom's when built with `--cfg loom` so that `tests/loom.rs` can check
//! every interleaving of the ring and semaphore code on an in-process
//! backend. Nothing else in the crate goes through loom.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// A pause inside a spin loop (loom must be told to switch threads).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
