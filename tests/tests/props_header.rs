//! Property tests of header validation: the `header` fuzz target's harness
//! (fuzz/common/header_harness.rs) on random inputs, as a proptest and as
//! a few seconds of plain random inputs.

#[path = "../../fuzz/common/header_harness.rs"]
mod header_harness;

use std::time::{Duration, Instant};

use ipc_tests::SplitMix;
use proptest::prelude::*;

proptest! {
    #[test]
    fn header_bytes_are_validated(data in prop::collection::vec(any::<u8>(), 0..700)) {
        header_harness::run(&data);
    }
}

/// The fuzz target's body, fed random inputs for two seconds.
#[test]
fn header_harness_runs_as_ordinary_code() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = SplitMix(seed);
    let mut runs = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        header_harness::run(&rng.bytes(700));
        runs += 1;
    }
    eprintln!("header harness: {runs} random inputs, seed {seed}");
}
