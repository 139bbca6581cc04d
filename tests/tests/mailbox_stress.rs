//! Volume and contention across processes, for every capacity flavor:
//! single-producer single-consumer order, 4 senders x 4 receivers with
//! every message delivered exactly once, timeouts with stalls on both
//! sides, and many short-lived mailboxes.

#[path = "mailbox_common.rs"]
mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::*;
use ipc_core::mailbox::{Capacity, Mailbox, UNBOUNDED_BLOCK};
use ipc_core::RecvError;

fn tag(c: Capacity) -> &'static str {
    match c {
        Capacity::Zero | Capacity::Bounded(0) => "zero",
        Capacity::Bounded(_) => "bounded",
        Capacity::Unbounded => "unbounded",
    }
}

const SPSC: u64 = 100_000;

/// 100,000 messages from a peer to the test process, in order, each
/// intact. The peer uses a different send path per flavor.
fn spsc(capacity: Capacity, send_op: &str) {
    let start = Instant::now();
    let (name, mb) = mailbox("spsc", capacity);
    let mut rx = mb.receiver().unwrap();
    let count = SPSC.to_string();
    let peer = spawn_bg(&[
        "send",
        name.as_str(),
        "--count",
        &count,
        "--size",
        "24",
        "--op",
        send_op,
    ]);
    let mut buf = [0u8; 64];
    for seq in 0..SPSC {
        let n = rx
            .recv_into(&mut buf, ipc_core::Deadline::after(PATIENCE))
            .unwrap();
        assert_eq!(decode(&buf[..n]), Some((0, seq)), "message {seq}");
    }
    check(&finish_bg(peer), &[("sent", &count), ("end", "done")]);
    assert_eq!(rx.recv_timeout(PATIENCE), Err(RecvError::Disconnected));
    eprintln!("spsc {}: {:?}", tag(capacity), start.elapsed());
}

#[test]
fn spsc_bounded() {
    spsc(Capacity::Bounded(3), "send");
}

#[test]
fn spsc_zero() {
    spsc(Capacity::Zero, "send");
}

#[test]
fn spsc_unbounded_zero_copy() {
    spsc(Capacity::Unbounded, "claim");
}

const MPMC_PEERS: u32 = 4;
const MPMC_EACH: u64 = 10_000;

/// 4 sender processes x 4 receiver processes; every `(sender, seq)`
/// arrives exactly once, and each receiver sees each sender's messages in
/// increasing order.
fn mpmc(capacity: Capacity) {
    let start = Instant::now();
    let (name, _mb) = mailbox("mpmc", capacity);
    let dir = TempDir::new("mpmc");
    let each = MPMC_EACH.to_string();
    let peers = MPMC_PEERS.to_string();
    let outs: Vec<String> = (0..MPMC_PEERS)
        .map(|r| dir.file(&format!("rx{r}")).to_str().unwrap().to_owned())
        .collect();
    let receivers: Vec<_> = outs
        .iter()
        .map(|out| spawn_bg(&["recv", name.as_str(), "--min-senders", &peers, "--out", out]))
        .collect();
    let senders: Vec<_> = (0..MPMC_PEERS)
        .map(|id| {
            spawn_bg(&[
                "send",
                name.as_str(),
                "--id",
                &id.to_string(),
                "--count",
                &each,
                "--size",
                "20",
            ])
        })
        .collect();
    for s in senders {
        check(&finish_bg(s), &[("sent", &each), ("end", "done")]);
    }
    let mut total = 0u64;
    for r in receivers {
        let r = finish_bg(r);
        check(
            &r,
            &[("bad", "0"), ("disorder", "0"), ("end", "disconnected")],
        );
        total += r["received"].parse::<u64>().unwrap();
    }
    assert_eq!(total, MPMC_PEERS as u64 * MPMC_EACH);
    let mut seen: HashMap<u32, Vec<u8>> = (0..MPMC_PEERS)
        .map(|id| (id, vec![0u8; MPMC_EACH as usize]))
        .collect();
    for out in &outs {
        let bytes = std::fs::read(out).unwrap();
        for rec in bytes.chunks_exact(HEADER) {
            let id = u32::from_le_bytes(rec[..4].try_into().unwrap());
            let seq = u64::from_le_bytes(rec[4..].try_into().unwrap());
            let slot = &mut seen.get_mut(&id).expect("known sender")[seq as usize];
            *slot += 1;
        }
    }
    for (id, counts) in &seen {
        let wrong: Vec<usize> = (0..counts.len()).filter(|&s| counts[s] != 1).collect();
        assert!(
            wrong.is_empty(),
            "sender {id}: {} messages not received exactly once, first {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }
    eprintln!("mpmc {}: {:?}", tag(capacity), start.elapsed());
}

#[test]
fn mpmc_bounded() {
    mpmc(Capacity::Bounded(3));
}

#[test]
fn mpmc_zero() {
    mpmc(Capacity::Zero);
}

#[test]
fn mpmc_unbounded() {
    mpmc(Capacity::Unbounded);
}

const STALL_COUNT: u64 = 100;

/// Short timeouts while the other side stalls now and then (crossbeam's
/// `stress_timeout_two_threads`), with `send_timeout`/`recv_timeout` and
/// with `try_send`/`try_recv`: failed attempts are retried with the
/// message the error handed back. The only failures either side may see
/// are the ones its operation can time out with, every handed-back message
/// is the one sent, and every message arrives once, in order.
#[test]
fn timeouts_with_stalls() {
    for capacity in [Capacity::Bounded(2), Capacity::Zero, Capacity::Unbounded] {
        // A rendezvous needs one side to wait: `try_send` meets only a
        // receiver blocked in a receive, so `try`/`try` never meets.
        let pairs: &[(&str, &str)] = if capacity == Capacity::Zero {
            &[
                ("timeout", "timeout"),
                ("try", "timeout"),
                ("timeout", "try"),
            ]
        } else {
            &[("timeout", "timeout"), ("try", "try")]
        };
        for &(send_op, recv_op) in pairs {
            let start = Instant::now();
            let (name, _mb) = mailbox("stall", capacity);
            let count = STALL_COUNT.to_string();
            let rx = spawn_bg(&[
                "recv",
                name.as_str(),
                "--op",
                recv_op,
                "--timeout-ms",
                "3",
                "--retry",
                "--stall-every",
                "3",
                "--stall-ms",
                "10",
            ]);
            let tx = spawn_bg(&[
                "send",
                name.as_str(),
                "--count",
                &count,
                "--op",
                send_op,
                "--timeout-ms",
                "3",
                "--retry",
                "--stall-every",
                "2",
                "--stall-ms",
                "10",
            ]);
            let s = finish_bg(tx);
            let r = finish_bg(rx);
            let what = format!("{} {send_op}/{recv_op}", tag(capacity));
            check(&s, &[("sent", &count), ("end", "done")]);
            let retried = s["retries"] != "0";
            assert_eq!(
                s["handback"],
                if retried { "same" } else { "none" },
                "{what}: {s:?}"
            );
            if capacity == Capacity::Unbounded {
                assert_eq!(s["retries"], "0", "{what}: an unbounded send failed");
            }
            check(
                &r,
                &[
                    ("received", &count),
                    ("bad", "0"),
                    ("disorder", "0"),
                    ("gaps", "0"),
                    ("end", "disconnected"),
                ],
            );
            eprintln!(
                "{what}: send retries {}, recv retries {}, {:?}",
                s["retries"],
                r["retries"],
                start.elapsed()
            );
        }
    }
}

const CYCLES: u32 = 200;

/// 200 mailboxes created, used from another process in both directions,
/// and unlinked, one after another; the peer opens each one in turn. No
/// name, chain segment, descriptor or mapping is left behind.
#[test]
fn many_short_lived_mailboxes() {
    let start = Instant::now();
    let kinds = [
        Capacity::Bounded(1),
        Capacity::Zero,
        Capacity::Bounded(4),
        Capacity::Unbounded,
    ];
    let mut p: Option<Peer> = None;
    let mut baseline = None;
    for i in 0..CYCLES {
        let capacity = kinds[i as usize % kinds.len()];
        let (name, mb) = mailbox("churn", capacity);
        let p = p.get_or_insert_with(|| Peer::spawn(&["repl", name.as_str()]));
        assert_eq!(p.call(&format!("open {name}")), "ok");
        if i == kinds.len() as u32 {
            // After one cycle of each kind: the peer's steady state.
            baseline = Some(p.call("fds"));
        }
        assert_eq!(p.call("attach-sender"), "ok");
        assert_eq!(p.call("attach-receiver"), "ok");
        let mut rx = mb.receiver().unwrap();
        let mut tx = mb.sender().unwrap();
        // Peer → test.
        p.begin(&format!("send to-test-{i}"));
        assert_eq!(rx.recv().unwrap(), format!("to-test-{i}").as_bytes());
        p.expect("ok");
        // Test → peer: one message, or, for some unbounded cycles, enough
        // to cross into a second chain segment.
        let n = if capacity == Capacity::Unbounded && i % 8 == 3 {
            UNBOUNDED_BLOCK + 3
        } else {
            1
        };
        if capacity == Capacity::Zero {
            p.begin("recv_n 1");
            tx.send(format!("to-peer-{i}")).unwrap();
        } else {
            for k in 0..n {
                tx.send(format!("to-peer-{i}-{k}")).unwrap();
            }
            p.begin(&format!("recv_n {n}"));
        }
        let last = if capacity == Capacity::Zero {
            format!("to-peer-{i}")
        } else {
            format!("to-peer-{i}-{}", n - 1)
        };
        assert_eq!(p.line(), format!("got={n} last={last}"));
        assert_eq!(p.call("drop-sender"), "ok");
        drop(tx);
        assert_eq!(rx.recv_timeout(PATIENCE), Err(RecvError::Disconnected));
        drop(rx);
        drop(mb);
        Mailbox::unlink(name.as_str()).unwrap();
        assert!(!name.path().exists(), "cycle {i}: {name} left");
        assert!(
            chain_segments(name.as_str()).is_empty(),
            "cycle {i}: chain of {name} left"
        );
    }
    let mut p = p.unwrap();
    // The peer still has the last mailbox open; compare like with like.
    assert_eq!(p.call("drop-receiver"), "ok");
    let end = p.call("fds");
    assert_eq!(
        Some(end),
        baseline,
        "the peer leaks descriptors or mappings"
    );
    p.finish();
    eprintln!("{CYCLES} mailboxes: {:?}", start.elapsed());
}
