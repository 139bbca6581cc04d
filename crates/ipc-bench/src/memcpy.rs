//! Single-core `memcpy` bandwidth: the ceiling for large messages, which
//! every contender here copies at least once in and once out.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::harness::default_ring_messages;

/// `memcpy` bandwidth at one size.
#[derive(Debug, Clone, Copy)]
pub struct Memcpy {
    /// Bytes per copy.
    pub size: usize,
    /// Bytes/s copying one buffer to another again and again (cache hot).
    pub hot: f64,
    /// Bytes/s copying one source buffer into as many destination buffers
    /// as the benchmark's ipc-core ring of that message size holds
    /// (`default_ring_messages`), round robin: what a producer's copy into
    /// the ring costs.
    pub ring: f64,
}

fn copy_rate(size: usize, buffers: usize, time: Duration) -> f64 {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size * buffers];
    let per_check = ((1 << 20) / size).max(1);
    let start = Instant::now();
    let mut copies = 0u64;
    let mut i = 0;
    while start.elapsed() < time {
        for _ in 0..per_check {
            let at = i * size;
            dst[at..at + size].copy_from_slice(black_box(&src[..]));
            i = (i + 1) % buffers;
            copies += 1;
        }
        black_box(&mut dst);
    }
    copies as f64 * size as f64 / start.elapsed().as_secs_f64()
}

/// Measures both figures at `size`, spending about `time` on each.
pub fn measure(size: usize, time: Duration) -> Memcpy {
    // Touch everything once before timing.
    copy_rate(size, default_ring_messages(size), time / 10);
    Memcpy {
        size,
        hot: copy_rate(size, 1, time),
        ring: copy_rate(size, default_ring_messages(size), time),
    }
}
