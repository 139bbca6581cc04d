//! Review 13: unbounded queues on the packed engine after the slot
//! engine's removal (layout version 5): write-once laps, bypass, holds,
//! reaping of chained blocks, and the tools that look at them.
//!
//! Bounded waits only (a hang fails the test); no timing assertions.

use std::sync::mpsc;
use std::time::Duration;

use ipc_core::{Deadline, RecvError};
use ipc_tests::within;
use ipc_tests::ShmName;

mod unbounded_common;
use unbounded_common::*;

/// Long enough for a loaded 2-core machine.
const HANG: Duration = Duration::from_secs(20);

/// Messages per chained block (`mailbox::UNBOUNDED_BLOCK`).
const BLOCK: u64 = 1024;

/// Fills block 0 and starts block 1 (`BLOCK + extra` messages of `id`),
/// all received again: the chain's head and tail are block 1.
fn into_block_1(s: &mut ipc_core::Sender, rx: &mut ipc_core::Receiver, id: u32, extra: u64) {
    for i in 0..BLOCK + extra {
        s.send(msg(id, i)).unwrap();
    }
    for i in 0..BLOCK + extra {
        assert_eq!(parse(&rx.recv_timeout(HANG).unwrap()), (id, i));
    }
}

// ---------------------------------------------------------------------
// Failing tests (defects)
// ---------------------------------------------------------------------

/// Defect: `ipcctl list` and `ipcctl clean` (through `admin::list` →
/// `admin::inspect`, here called directly on the block file so that the
/// test touches no other test's segments) revoke a live sender's
/// zero-copy claim in a chained block. `inspect` opens the block as a
/// queue of its own and calls `Queue::status`, which reaps: `reap` runs
/// `free_stale_locks(self.ring())` on the *block's* ring against the
/// *block's* roster, which is always empty (endpoints attach to the main
/// segment only), so the writers' lock naming the live sender is taken
/// for a scribble, freed, and its claim repaired as abandoned: the
/// sender's commit then fails.
#[test]
fn inspecting_a_block_does_not_revoke_a_live_claim() {
    let name = ShmName::new("rv13-inspect");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    into_block_1(&mut s, &mut rx, 1, 2);
    let block = format!("{}.b1", name.as_str());
    let mut w = s.claim(Deadline::Never).unwrap();
    w.buf()[..12].copy_from_slice(&msg(7, 7));
    // What `ipcctl list` does for each file in /dev/shm.
    let seen = ipc_core::admin::inspect(&block).expect("inspect the block");
    assert_eq!(seen.block_index, 1);
    let committed = w.commit(12).map_err(|e| e.to_string());
    let st = mb.status();
    assert_eq!(
        (committed, st.abandoned_writes),
        (Ok(()), 0),
        "a live sender's claim in block 1 was taken away by inspecting {block}: {st:?}"
    );
    assert_eq!(parse(&rx.recv_timeout(HANG).unwrap()), (7, 7));
}

fn tiny_unbounded(name: &ShmName, per_block: u32) -> ipc_core::SharedBuffer {
    ipc_core::SharedBuffer::create_unbounded(
        name.as_str(),
        &ipc_core::BufferConfig {
            capacity: per_block,
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Stress: tiny blocks (recycled all the time), `senders` sender threads,
/// `receivers` receiver threads: every message arrives exactly once, in
/// each sender's order per receiver, nothing lost, and the idle queue
/// holds only its main segment.
fn stress(tag: &str, per_block: u32, senders: u32, receivers: u32, per: u64) {
    let name = ShmName::new(tag);
    let buf = tiny_unbounded(&name, per_block);
    let rxs: Vec<_> = (0..receivers).map(|_| buf.consumer().unwrap()).collect();
    let txs: Vec<_> = (0..senders).map(|_| buf.producer().unwrap()).collect();
    let sent: Vec<_> = txs
        .into_iter()
        .enumerate()
        .map(|(id, mut s)| {
            std::thread::spawn(move || {
                for i in 0..per {
                    s.send(msg(id as u32, i)).unwrap();
                }
            })
        })
        .collect();
    let got: Vec<_> = rxs
        .into_iter()
        .map(|mut r| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                loop {
                    match r.recv_timeout(HANG) {
                        Ok(m) => v.push(parse(&m)),
                        Err(RecvError::Disconnected) => return Ok(v),
                        Err(e) => return Err(format!("{e:?} after {} messages", v.len())),
                    }
                }
            })
        })
        .collect();
    for t in sent {
        t.join().unwrap();
    }
    let mut all = Vec::new();
    for t in got {
        let v = within(Duration::from_secs(120), "receivers", move || {
            t.join().unwrap()
        })
        .unwrap_or_else(|e| panic!("a receiver failed: {e}"));
        // Per receiver, each sender's messages in order.
        let mut last = std::collections::HashMap::new();
        for &(id, seq) in &v {
            if let Some(&p) = last.get(&id) {
                assert!(seq > p, "sender {id}: {seq} after {p}");
            }
            last.insert(id, seq);
        }
        all.extend(v);
    }
    all.sort();
    let want: Vec<_> = (0..senders)
        .flat_map(|id| (0..per).map(move |i| (id, i)))
        .collect();
    assert_eq!(all.len(), want.len(), "messages received");
    assert_eq!(all, want, "every message exactly once");
    let st = buf.status();
    assert_eq!(
        (st.lost_reads, st.abandoned_writes, st.revoked_claims),
        (0, 0, 0),
        "{st:?}"
    );
    assert_eq!(chain_files(&name), Vec::<String>::new());
}

#[test]
fn stress_one_message_blocks() {
    stress("rv13-st1", 1, 4, 3, 5000);
}

#[test]
fn stress_small_blocks() {
    stress("rv13-st4", 4, 4, 4, 20000);
}

/// Defect: a receiver that lets go of a message read in place after the
/// stream ended leaves its block behind as a spare in /dev/shm for good.
/// The head moved past the held block (its retire skipped it: held); the
/// other receiver then saw the end of stream (`channel.rs`
/// `retire_tail_block`: tail block removed, `drop_spares`). When the
/// holder lets go, `release_behind_head` → `Queue::retire` keeps the
/// drained block as a spare (`NAME.b00`); the holder's next receive sees
/// the end of stream too, but `retire_tail_block` returns early (its
/// stale head block is not the tail) without dropping spares, so the
/// idle queue keeps a block's memory ("an idle queue holds only its main
/// segment").
#[test]
fn a_hold_let_go_after_the_end_of_stream_leaves_no_spare_behind() {
    let name = ShmName::new("rv13-late-hold");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    let mut r2 = mb.receiver().unwrap();
    let mut r1 = mb.receiver().unwrap();
    for i in 0..=BLOCK {
        s.send(msg(1, i)).unwrap();
    }
    for i in 0..BLOCK {
        assert_eq!(parse(&r2.recv_timeout(HANG).unwrap()), (1, i));
    }
    // r1 takes 1/BLOCK (block 1's first message) and holds it in place.
    let (took_tx, took_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let got = r1
            .recv_with_until(Deadline::after(HANG), |b| {
                took_tx.send(parse(b)).unwrap();
                let _ = go_rx.recv_timeout(Duration::from_secs(60));
                parse(b)
            })
            .unwrap();
        let end = r1.recv_timeout(HANG);
        (got, end)
    });
    assert_eq!(took_rx.recv_timeout(HANG).unwrap(), (1, BLOCK));
    // Block 1 fills, block 2 starts; r2 drains both: the head passes 1.
    for i in BLOCK + 1..2 * BLOCK + 2 {
        s.send(msg(1, i)).unwrap();
    }
    for i in BLOCK + 1..2 * BLOCK + 2 {
        assert_eq!(parse(&r2.recv_timeout(HANG).unwrap()), (1, i));
    }
    drop(s);
    assert_eq!(r2.recv_timeout(HANG), Err(RecvError::Disconnected));
    go_tx.send(()).unwrap();
    let (got, end) = within(HANG, "the holder", move || holder.join().unwrap());
    assert_eq!(got, (1, BLOCK));
    assert_eq!(end, Err(RecvError::Disconnected));
    drop(r2);
    let st = mb.status();
    assert_eq!((st.lost_reads, st.len), (0, 0), "{st:?}");
    assert_eq!(
        chain_files(&name),
        Vec::<String>::new(),
        "the ended, idle queue keeps a block file"
    );
}

/// Defect (API contract): `BufferConfig::budget` says "Unbounded buffers
/// chain blocks of `capacity` slots of `max_message` bytes and ignore
/// it", but `SharedBuffer::create_unbounded` → `create_flavor` passes the
/// budget to `Geometry::packed`: a budget below what two largest
/// messages need refuses to create the unbounded buffer at all, and any
/// other budget resizes its blocks.
#[test]
fn create_unbounded_ignores_the_budget_as_documented() {
    let cfg = ipc_core::BufferConfig {
        capacity: 64,
        max_message: 1024,
        budget: 1024,
        ..Default::default()
    };
    let name = ShmName::new("rv13-budget");
    let made = ipc_core::SharedBuffer::create_unbounded(name.as_str(), &cfg)
        .map(|b| b.geometry().ring_bytes)
        .map_err(|e| e.to_string());
    let plain = ShmName::new("rv13-budget0");
    let want = ipc_core::SharedBuffer::create_unbounded(
        plain.as_str(),
        &ipc_core::BufferConfig { budget: 0, ..cfg },
    )
    .unwrap()
    .geometry()
    .ring_bytes;
    assert_eq!(
        made,
        Ok(want),
        "the budget of an unbounded buffer was not ignored"
    );
}

/// Child roles (this test binary re-executed, killed by its PID).
///
/// * `claim-sender NAME ID N`: a producer of the unbounded buffer NAME
///   that sends `msg(ID, 0..N)` by zero-copy claims, printing `ready`
///   first; exits 0 once all were committed, 3 on an error.
#[test]
fn review13_child_peer() {
    let Ok(role) = std::env::var("REVIEW13_ROLE") else {
        return;
    };
    // SAFETY: prctl with constant arguments: die with the parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let name = std::env::var("REVIEW13_NAME").unwrap();
    let id: u32 = std::env::var("REVIEW13_ID").unwrap().parse().unwrap();
    let n: u64 = std::env::var("REVIEW13_N").unwrap().parse().unwrap();
    let buf = ipc_core::SharedBuffer::open(&name).unwrap();
    match role.as_str() {
        "claim-sender" => {
            let mut s = buf.producer().unwrap();
            println!("ready");
            for i in 0..n {
                let mut w = s.claim(Deadline::Never).unwrap_or_else(|e| {
                    eprintln!("claim {i}: {e}");
                    std::process::exit(3)
                });
                w.buf()[..12].copy_from_slice(&msg(id, i));
                if let Err(e) = w.commit(12) {
                    eprintln!("commit {i}: {e}");
                    std::process::exit(3);
                }
            }
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

fn claim_sender(name: &ShmName, id: u32, n: u64) -> ipc_tests::ChildGuard {
    use std::io::BufRead;
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([
        "review13_child_peer",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("REVIEW13_ROLE", "claim-sender")
    .env("REVIEW13_NAME", name.as_str())
    .env("REVIEW13_ID", id.to_string())
    .env("REVIEW13_N", n.to_string())
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit());
    let mut c = c.spawn().unwrap();
    let out = std::io::BufReader::new(c.stdout.take().unwrap());
    let guard = ipc_tests::ChildGuard::new(c);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut said = false;
        for line in out.lines() {
            let Ok(line) = line else { break };
            if !said && line.trim_end().ends_with("ready") {
                said = true;
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(HANG).expect("the child got ready");
    guard
}

/// Passing check: a zero-copy sender SIGSTOPped and SIGCONTed hundreds of
/// times (often while it holds a claim) on a queue of 4-message blocks,
/// with two in-process senders bypassing it and blocks recycled all the
/// while: every message arrives exactly once and in each sender's order,
/// nothing counted lost or abandoned, and the ended queue holds only its
/// main segment.
#[test]
fn a_zero_copy_sender_frozen_again_and_again_keeps_order_and_exactly_once() {
    let name = ShmName::new("rv13-freeze");
    let buf = tiny_unbounded(&name, 4);
    let mut rx = buf.consumer().unwrap();
    let per = 20_000u64;
    let mut child = claim_sender(&name, 9, per);
    let pid = child.pid() as i32;
    let senders: Vec<_> = (0..2u32)
        .map(|id| {
            let mut s = buf.producer().unwrap();
            std::thread::spawn(move || {
                for i in 0..per {
                    s.send(msg(id, i)).unwrap();
                }
            })
        })
        .collect();
    let reader = std::thread::spawn(move || {
        let mut next = std::collections::HashMap::new();
        let mut got = 0u64;
        loop {
            match rx.recv_timeout(HANG) {
                Ok(m) => {
                    let (id, seq) = parse(&m);
                    let want = next.entry(id).or_insert(0u64);
                    if seq != *want {
                        return Err(format!("sender {id}: {seq} where {want} was due"));
                    }
                    *want += 1;
                    got += 1;
                }
                Err(RecvError::Disconnected) => return Ok(got),
                Err(e) => return Err(format!("{e:?} after {got}")),
            }
        }
    });
    let mut rng = ipc_tests::SplitMix(0x5eed_1313);
    let mut freezes = 0;
    let status = loop {
        if let Some(st) = child.wait_timeout(Duration::from_micros(200 + rng.below(3000))) {
            break st;
        }
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        freezes += 1;
        std::thread::sleep(Duration::from_micros(1000 + rng.below(4000)));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        assert!(freezes < 100_000, "the child never finished");
    };
    assert!(status.success(), "the claim sender failed: {status:?}");
    for t in senders {
        within(Duration::from_secs(120), "senders", move || {
            t.join().unwrap()
        });
    }
    drop(child);
    let got = within(Duration::from_secs(120), "the reader", move || {
        reader.join().unwrap()
    });
    assert_eq!(got, Ok(3 * per), "after {freezes} freezes");
    let st = buf.status();
    assert_eq!(
        (st.lost_reads, st.abandoned_writes, st.revoked_claims),
        (0, 0, 0),
        "{st:?}"
    );
    assert_eq!(chain_files(&name), Vec::<String>::new());
}
