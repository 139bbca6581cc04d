//! Review 15: unbounded mailboxes under bypass storms (turns held past
//! the 2 ms grace, so senders grow the chain without sealing), a receiver
//! stuck behind a frozen claim in a chained block, the reaper meeting a
//! chain end it cannot open, and non-blocking sends past a held turn.
//!
//! Bounded waits only (a hang fails the test); no timing assertions
//! beyond generous hang bounds.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_core::mailbox::Mailbox;
use ipc_core::{Deadline, RecvError};
use ipc_tests::{trust_peer_holding, wait_until, within, ShmName};

mod unbounded_common;
use unbounded_common::*;

const HANG: Duration = Duration::from_secs(30);

/// (files, bytes) of `name`'s chain (blocks and spares) in /dev/shm.
fn chain_usage(name: &ShmName) -> (usize, u64) {
    let prefix = format!("{}.b", name.as_str());
    let mut n = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            n += 1;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (n, bytes)
}

/// Receives until end of stream, checking each sender's order; returns
/// counts per sender.
fn drain_in_order(rx: &mut ipc_core::Receiver) -> HashMap<u32, u64> {
    let mut next: HashMap<u32, u64> = HashMap::new();
    loop {
        match rx.recv_timeout(HANG) {
            Ok(m) => {
                let (id, seq) = parse(&m);
                let want = next.entry(id).or_insert(0);
                assert_eq!(seq, *want, "sender {id} out of order (or duplicate)");
                *want += 1;
            }
            Err(RecvError::Disconnected) => return next,
            Err(e) => panic!("receive failed: {e:?}"),
        }
    }
}

/// Area 1. Four senders stream small messages while a fifth repeatedly
/// holds a zero-copy claim for 5 ms (past the 2 ms grace, so each hold
/// makes the others start a new block without sealing the old one); the
/// receiver keeps up. The chain in /dev/shm must stay bounded (drained
/// bypassed blocks are retired), every message arrives once in order,
/// and at the end only the main segment is left.
#[test]
fn bypass_storm_of_long_claims_keeps_the_chain_bounded_and_cleans_up() {
    let name = ShmName::new("rv15-storm");
    let mb = unbounded(&name);
    let mut rx = mb.receiver().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let max_files = Arc::new(AtomicUsize::new(0));
    let max_bytes = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (done, mf, mbts, name) = (
            done.clone(),
            max_files.clone(),
            max_bytes.clone(),
            ShmName(name.0.clone()),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let (n, b) = chain_usage(&name);
                mf.fetch_max(n, Ordering::Relaxed);
                mbts.fetch_max(b as usize, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            std::mem::forget(name); // the test owns the name's cleanup
        })
    };
    let per = 4000u64;
    let holds = 150u64;
    let mut threads: Vec<_> = (0..4u32)
        .map(|id| {
            let mut s = mb.sender().unwrap();
            std::thread::spawn(move || {
                for i in 0..per {
                    s.send(msg(id, i)).unwrap();
                }
            })
        })
        .collect();
    {
        let mut s = mb.sender().unwrap();
        threads.push(std::thread::spawn(move || {
            for i in 0..holds {
                let mut w = s.claim(Deadline::Never).unwrap();
                w.buf()[..12].copy_from_slice(&msg(99, i));
                std::thread::sleep(Duration::from_millis(5));
                w.commit(12).unwrap();
            }
        }));
    }
    let counts = within(
        Duration::from_secs(120),
        "receiver of the storm",
        move || {
            let c = drain_in_order(&mut rx);
            (c, rx)
        },
    );
    for t in threads {
        within(HANG, "storm senders", move || t.join().unwrap());
    }
    done.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    let (counts, rx) = counts;
    for id in 0..4 {
        assert_eq!(counts.get(&id), Some(&per), "sender {id}");
    }
    assert_eq!(counts.get(&99), Some(&holds), "claim holder");
    let geo = mb.status().geometry;
    let (mf, mbytes) = (
        max_files.load(Ordering::Relaxed),
        max_bytes.load(Ordering::Relaxed),
    );
    eprintln!("peak chain files {mf}, peak chain bytes {mbytes}, block {geo:?}");
    // One block per hold in flight, a few more being drained, 4 spares.
    assert!(
        mf <= 16,
        "chain grew to {mf} files ({mbytes} bytes) while the receiver kept up"
    );
    drop(rx);
    assert_eq!(
        files_of(&name),
        vec![name.0.clone()],
        "only the main segment is left"
    );
}

/// Area 2. A peer frozen holding a claim in chained block k (not the main
/// segment) while others send enough to grow the chain well past k: once
/// it is killed, every Ok send is delivered exactly once in order, and
/// the chain is removed at end of stream.
#[test]
fn receiver_stuck_behind_a_frozen_claim_in_a_chained_block_delivers_after_death() {
    let name = ShmName::new("rv15-stuck");
    let mb = unbounded(&name);
    let mut rx = mb.receiver().unwrap();
    // Move the chain off the main segment first: a held turn there makes
    // this sender grow block 1.
    let (mut first_holder, _) = trust_peer_holding("hold-claim", name.as_str());
    let mut s = mb.sender().unwrap();
    for i in 0..100 {
        s.send(msg(1, i)).unwrap();
    }
    let (_, tail) = (0, mb.status().chain_blocks);
    assert!(tail >= 1, "the sender moved on to a block");
    // Now a frozen claim in the chained tail block.
    let (mut holder, _) = trust_peer_holding("hold-claim", name.as_str());
    let mut sent = 100u64;
    let mut peak = 0;
    for _ in 0..20_000 {
        s.send(msg(1, sent)).unwrap();
        sent += 1;
        peak = peak.max(chain_usage(&name).0);
    }
    let blocks = mb.status().chain_blocks;
    eprintln!("chain blocks while stuck: {blocks}, peak files {peak}");
    assert!(
        blocks >= 3,
        "the chain grew past the frozen block ({blocks})"
    );
    first_holder.kill();
    holder.kill();
    drop(s);
    let counts = within(
        Duration::from_secs(90),
        "receiver after the deaths",
        move || drain_in_order(&mut rx),
    );
    assert_eq!(counts.get(&1), Some(&sent), "every Ok send once");
    let st = mb.status();
    assert_eq!((st.abandoned_writes, st.lost_reads), (2, 0), "{st:?}");
    assert_eq!(files_of(&name), vec![name.0.clone()]);
}

/// Area 3. The chain's tail block replaced (by another process, here the
/// test) with a page-sized zero file whose creator still holds its lock
/// (what a segment being created looks like). The reaper, which unbounded
/// senders run about every 100 ms from inside `try_send`, opens the tail
/// block with `open_block_cached` → `Queue::open(.., INIT_TIMEOUT)` and so
/// waits 2 s for it each time: a stream of `try_send`s, none of which
/// should block, stalls ~2 s per 100 ms.
#[test]
fn reaper_does_not_stall_try_send_on_a_tail_block_being_created() {
    let name = ShmName::new("rv15-reapstall");
    let mb = unbounded(&name);
    let (mut holder, _) = trust_peer_holding("hold-claim", name.as_str());
    let mut s = mb.sender().unwrap();
    s.try_send(msg(1, 0)).unwrap();
    assert!(mb.status().chain_blocks >= 1, "moved on to block 1");
    let b1 = format!("/dev/shm/{}.b1", name.as_str());
    let len = std::fs::metadata(&b1).unwrap().len();
    std::fs::remove_file(&b1).unwrap();
    let f = std::fs::File::create(&b1).unwrap();
    f.set_len(len).unwrap();
    // SAFETY: flock on our own descriptor.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    let n = 8;
    let took = within(Duration::from_secs(120), "try_sends", move || {
        let start = Instant::now();
        for i in 1..=n {
            std::thread::sleep(Duration::from_millis(110));
            let _ = s.try_send(msg(1, i));
        }
        start.elapsed()
    });
    drop(f);
    holder.kill();
    // 8 × 110 ms of sleeps ≈ 0.9 s; each try_send should be microseconds.
    assert!(
        took < Duration::from_secs(12),
        "{n} non-blocking try_sends (0.9 s of sleeps) took {took:?}: the reaper waits INIT_TIMEOUT on the tail block each period"
    );
}

/// Area 3, passing checks: the reaper with a chain end unreadable
/// (chmod 000; root may open it anyway), removed, or replaced by a
/// directory or a short foreign file: no panic, no hang, nothing freed
/// or counted falsely.
#[test]
fn reaper_survives_a_chain_end_that_is_unreadable_removed_or_foreign() {
    let name = ShmName::new("rv15-reapodd");
    let mb = unbounded(&name);
    let (mut holder, _) = trust_peer_holding("hold-claim", name.as_str());
    let mut s = mb.sender().unwrap();
    for i in 0..10 {
        s.send(msg(1, i)).unwrap();
    }
    let b1 = format!("/dev/shm/{}.b1", name.as_str());
    assert!(std::path::Path::new(&b1).exists());
    let reap = |mb: &Mailbox| {
        let st = mb.status();
        (st.abandoned_writes, st.lost_reads, st.dead_producers)
    };
    let before = reap(&mb);
    use std::os::unix::fs::PermissionsExt;
    let perm = std::fs::metadata(&b1).unwrap().permissions();
    std::fs::set_permissions(&b1, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut s = within(HANG, "sends with an unreadable tail", move || {
        for i in 10..20 {
            std::thread::sleep(Duration::from_millis(30));
            let _ = s.try_send(msg(1, i));
        }
        s
    });
    std::fs::set_permissions(&b1, perm).unwrap();
    assert_eq!(reap(&mb), before, "nothing counted");
    let saved = std::fs::read(&b1).unwrap();
    std::fs::remove_file(&b1).unwrap();
    std::fs::create_dir(&b1).unwrap();
    let mut s = within(HANG, "sends with a directory as tail", move || {
        for i in 20..25 {
            std::thread::sleep(Duration::from_millis(110));
            let _ = s.try_send(msg(1, i));
        }
        s
    });
    std::fs::remove_dir(&b1).unwrap();
    std::fs::write(&b1, b"not a segment").unwrap();
    let s = within(HANG, "sends with a foreign tail", move || {
        for i in 25..30 {
            std::thread::sleep(Duration::from_millis(110));
            let _ = s.try_send(msg(1, i));
        }
        s
    });
    assert_eq!(reap(&mb), before, "nothing counted");
    drop(saved);
    drop(s);
    holder.kill();
    let _ = std::fs::remove_file(&b1);
    let _ = Mailbox::unlink(name.as_str());
    for f in files_of(&name) {
        let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
    }
}

/// Area 4, passing check: while a peer holds the senders' turn (a
/// zero-copy claim), `try_send` and `send_timeout` on an unbounded queue
/// never report Full or Timeout: they bypass.
#[test]
fn try_send_and_send_timeout_bypass_a_held_turn() {
    let name = ShmName::new("rv15-trysend");
    let mb = unbounded(&name);
    let mut rx = mb.receiver().unwrap();
    let (mut holder, _) = trust_peer_holding("hold-claim", name.as_str());
    let mut s = mb.sender().unwrap();
    let s = within(HANG, "non-blocking sends", move || {
        for i in 0..2000u64 {
            if i % 2 == 0 {
                s.try_send(msg(1, i))
                    .unwrap_or_else(|e| panic!("try_send {i}: {e:?}"));
            } else {
                s.send_timeout(msg(1, i), Duration::from_millis(1))
                    .unwrap_or_else(|e| panic!("send_timeout {i}: {e:?}"));
            }
        }
        s
    });
    drop(s);
    holder.kill();
    let counts = within(HANG, "drain", move || drain_in_order(&mut rx));
    assert_eq!(counts.get(&1), Some(&2000));
    wait_until("chain removed", || files_of(&name) == vec![name.0.clone()]);
}
