//! Ring operations over a heap region whose stamps, lengths and cursors the
//! fuzzer controls: every call must return (a value or `CorruptError`),
//! never panic, loop forever or hand out a slice past the region.
#![no_main]

#[path = "../common/ring_harness.rs"]
mod ring_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ring_harness::run(data, false));
