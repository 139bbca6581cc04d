//! Reproducers found by the packed-ring fuzz harness
//! (fuzz/common/packed_harness.rs): a message count read from shared
//! memory is incremented without a check, so a scribbled count of
//! `u64::MAX` makes `count + 1` overflow. In a debug build (overflow
//! checks on: the tests, the fuzzer) that is a panic inside the library;
//! in a release build the count silently wraps to 0. Each test fails on
//! the code it was written against and passes once the count is checked
//! (a `CorruptError`, or a wrapping add the validation accepts).
//!
//! Every test plays a hostile peer that stores into the cursors or the
//! ring words, as any process that can open a single-mode segment may.

#[path = "../../fuzz/common/packed_harness.rs"]
mod packed_harness;

use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::layout::Cursor;
use ipc_core::ring::{HeadCache, PackedRing, ReadAttempt};

const COMMIT: u64 = 1 << 63;
const MARK: u64 = 1 << 63;
const SEQ_MASK: u64 = (1 << 30) - 1;
const SIZE: u64 = 256;

struct Heap {
    tail: Cursor,
    head: Cursor,
    freed: Cursor,
    _words: Box<[u64]>,
    base: *mut u64,
}

impl Heap {
    fn new() -> Heap {
        let mut words = vec![0u64; (SIZE / 8) as usize].into_boxed_slice();
        let base = words.as_mut_ptr();
        Heap {
            tail: Cursor::default(),
            head: Cursor::default(),
            freed: Cursor::default(),
            _words: words,
            base,
        }
    }

    fn ring(&self) -> PackedRing<'_> {
        // SAFETY: `base` holds SIZE zeroed, 8-aligned bytes alive as long
        // as `self`; header words are `data` read as u64-sized atomics;
        // 64 <= max_message_for(256); one thread.
        unsafe {
            PackedRing::new(
                (&self.tail, &self.head, &self.freed),
                self.base.cast(),
                self.base as *const AtomicU64,
                SIZE,
                8,
                64,
            )
        }
    }

    /// The ring word at byte `off`, as a scribbler writes it.
    fn poke(&self, off: u64, value: u64) {
        // SAFETY: inside the ring; single-threaded.
        unsafe { self.base.add((off / 8) as usize).write(value) };
    }
}

/// A committed record header of `len` bytes with the sequence `count`
/// is due at.
fn header(count: u64, len: u64) -> u64 {
    COMMIT | (count & SEQ_MASK) << 32 | len
}

/// Runs `f`; fails if it panics (a library panic on shared input).
fn no_panic(what: &str, f: impl FnOnce() + std::panic::UnwindSafe) {
    if let Err(e) = std::panic::catch_unwind(f) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{what} panicked on a scribbled count: {msg}");
    }
}

/// packed.rs `commit`: `self.tail.count.store(count + 1, ..)`.
#[test]
fn commit_with_a_scribbled_write_count_of_u64_max() {
    no_panic("commit", || {
        let heap = Heap::new();
        let ring = heap.ring();
        // Both counts at u64::MAX: nothing queued, so the claim is granted.
        for c in [&heap.tail, &heap.head, &heap.freed] {
            c.count.store(u64::MAX, Ordering::Relaxed);
        }
        let mut cache = HeadCache::default();
        if let Ok(Some(claim)) = ring.try_claim_write(0, 8, &mut cache, true) {
            let _ = ring.commit(claim, 8);
        }
    });
}

/// packed.rs `release`: `self.head.count.load(..) + 1`.
#[test]
fn release_with_a_scribbled_read_count_of_u64_max() {
    no_panic("release", || {
        let heap = Heap::new();
        let ring = heap.ring();
        heap.head.count.store(u64::MAX, Ordering::Relaxed);
        heap.poke(0, header(u64::MAX, 1));
        if let Ok(ReadAttempt::Claimed(c)) = ring.try_claim_read(1, 64) {
            let _ = ring.release(c);
        }
    });
}

/// packed.rs `recover_single_reader`: `(count + 1, 1)`.
#[test]
fn recover_single_reader_with_a_scribbled_read_count_of_u64_max() {
    no_panic("recover_single_reader", || {
        let heap = Heap::new();
        let ring = heap.ring();
        heap.head.pos.store(MARK, Ordering::Relaxed); // reading at 0
        heap.head.count.store(u64::MAX, Ordering::Relaxed);
        heap.poke(0, header(u64::MAX, 1));
        // SAFETY: no reader exists (the mark is a scribble).
        let _ = unsafe { ring.recover_single_reader() };
    });
}

/// packed.rs `recover_single_writer`: `count += 1`.
#[test]
fn recover_single_writer_with_a_scribbled_write_count_of_u64_max() {
    no_panic("recover_single_writer", || {
        let heap = Heap::new();
        let ring = heap.ring();
        heap.tail.count.store(u64::MAX, Ordering::Relaxed);
        heap.poke(0, header(u64::MAX, 1));
        // SAFETY: no writer exists.
        let _ = unsafe { ring.recover_single_writer() };
    });
}

/// The input `cargo fuzz run packed_ops` found (in about 34 000 runs):
/// fuzz/regressions/packed_ops-count-overflow-commit, replayed without
/// steering around the bug (it panics in `commit`). The harness's first
/// byte now chooses the mode: a 0 before it replays it in single mode, as
/// it was found.
#[test]
fn fuzz_regression_packed_ops_count_overflow_commit() {
    let found = include_bytes!("../../fuzz/regressions/packed_ops-count-overflow-commit");
    let input = [&[0u8][..], &found[..]].concat();
    no_panic("the packed_ops harness", || {
        packed_harness::run(&input, false)
    });
}
