//! Arbitrary bytes as a segment header: `Geometry::read_from` and
//! `magic_state` must return, never panic, and any geometry they accept
//! must fit in the mapping it was checked against.
#![no_main]

#[path = "../common/header_harness.rs"]
mod header_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| header_harness::run(data));
