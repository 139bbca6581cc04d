//! Times `synthetic::encode` + `Verifier::check`: `cargo run --release
//! -p ipc-core --example synthetic_bench [COUNT [SIZE]]` (10 M messages of
//! 64 bytes by default). Prints ns per message.

use ipc_core::synthetic::{encode, Verifier};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(10_000_000, |a| a.parse().unwrap());
    let size: usize = args.next().map_or(64, |a| a.parse().unwrap());
    let mut buf = vec![0u8; size];
    let mut v = Verifier::default();
    let t = Instant::now();
    for seq in 0..count {
        encode(&mut buf, 7, seq);
        v.check(std::hint::black_box(&buf));
    }
    let both = t.elapsed();
    let t = Instant::now();
    for seq in 0..count {
        encode(std::hint::black_box(&mut buf), 7, seq);
    }
    let enc = t.elapsed();
    let t = Instant::now();
    let mut ok = 0u64;
    for _ in 0..count {
        ok += ipc_core::synthetic::decode(std::hint::black_box(&buf)).is_some() as u64;
    }
    let dec = t.elapsed();
    assert_eq!(ok, count);
    assert!(v.is_clean() && v.received == count, "{}", v.summary());
    let per = |d: std::time::Duration| d.as_nanos() as f64 / count as f64;
    println!(
        "{count} messages of {size} B: encode+check {:.1} ns/msg, encode alone {:.1} ns/msg, decode alone {:.1} ns/msg",
        per(both),
        per(enc),
        per(dec)
    );
}
