//! Packed-ring operations (the engine of bounded and rendezvous queues, in
//! single mode or shared under lock words) over a heap region whose record
//! headers, payload bytes, cursors and lock words the fuzzer controls:
//! every call must return (a value or `CorruptError`), never panic, loop
//! forever or hand out a slice outside the ring.
//!
//! `IPC_FUZZ_AVOID_KNOWN_BUGS=1` keeps the garbage clear of the shapes that
//! known, reported bugs turn into a panic (see RELIABILITY.md), so that
//! fuzzing can look further.
#![no_main]

#[path = "../common/packed_harness.rs"]
mod packed_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static AVOID: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let avoid = *AVOID.get_or_init(|| std::env::var_os("IPC_FUZZ_AVOID_KNOWN_BUGS").is_some());
    packed_harness::run(data, avoid)
});
