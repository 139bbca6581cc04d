//! Review 12: unbounded queues on the shared packed engine (commit
//! 3b76bd0): write-once laps, senders bypassing a turn that lasts, and
//! receivers reading in place after freeing the head ("holds" in the
//! attachment table).
//!
//! Real processes where a peer must hold, freeze or die (this test binary
//! re-executed as `review12_child_peer`, killed by its PID); the states a
//! SIGKILL leaves between two stores, and scribbles, are written into the
//! live segments through a second mapping of their files. Bounded waits
//! only (a hang fails the test); no timing assertions.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::mem::{offset_of, ManuallyDrop};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_core::layout::{Cursor, Header};
use ipc_core::mailbox::Mailbox;
use ipc_core::{Deadline, RecvError};
use ipc_tests::{wait_until, within, ChildGuard, Mapping, ShmName, TempDir};

mod unbounded_common;
use unbounded_common::*;

/// Long enough for a loaded 2-core machine; a call still blocked after it
/// is blocked for good.
const HANG: Duration = Duration::from_secs(20);

/// How long a receive may wait for a message that is there to be read
/// (the reaper runs every liveness period, far shorter).
const DELIVERY: Duration = Duration::from_secs(10);

/// Messages per chained block (`mailbox::UNBOUNDED_BLOCK`): a block of
/// small messages ends at this count.
const BLOCK: u64 = 1024;

// Packed-ring words (packed.rs): the reading mark, a lock's turn unit.
const READING: u64 = 1 << 63;
const TURN: u64 = 1 << 32;
/// Offset of `hold_block` / `hold_pos` in a `PeerEntry` (repr(C):
/// state u64, start_time u64, role u32 (+4 padding), hold_block u64,
/// hold_pos u64).
const HOLD_BLOCK: usize = 24;
const HOLD_POS: usize = 32;
const ENTRY: usize = 64;

fn cursor_word(m: &Mapping, cursor: usize, field: usize) -> &AtomicU64 {
    m.word(cursor + field)
}

fn head(m: &Mapping, field: usize) -> &AtomicU64 {
    cursor_word(m, offset_of!(Header, head), field)
}

fn tail(m: &Mapping, field: usize) -> &AtomicU64 {
    cursor_word(m, offset_of!(Header, tail), field)
}

/// A second mapping of chain block `k` of `name` (its file is not removed
/// by this handle: the queue's `ShmName` removes it).
fn map_block(name: &ShmName, k: u64) -> Mapping {
    let block = ManuallyDrop::new(ShmName(format!("{}.b{k}", name.as_str())));
    Mapping::new(&block)
}

/// Child roles, run by re-executing this test binary.
///
/// * `hold-in-place NAME DIR`: a receiver that takes one message in place
///   (`recv_with`), writes it (hex) to `DIR/took`, and holds it until
///   `DIR/go` exists (at most a minute); then writes what its callback
///   still reads to `DIR/after` and exits.
/// * `hold-claim NAME`: a sender that claims room (zero copy), writes part
///   of a message, prints `holding`, and sleeps for ever (holding the
///   writers' lock of the tail block).
/// * `attach-producer NAME`: a sender that attaches, prints `holding`, and
///   sleeps for ever.
#[test]
fn review12_child_peer() {
    let Ok(role) = std::env::var("REVIEW12_ROLE") else {
        return;
    };
    // SAFETY: prctl with constant arguments: die with the parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let name = std::env::var("REVIEW12_NAME").unwrap();
    let dir = std::env::var("REVIEW12_DIR").unwrap_or_default();
    let mb = Mailbox::open(&name).unwrap();
    match role.as_str() {
        "hold-in-place" => {
            let mut rx = mb.receiver().unwrap();
            println!("holding");
            std::io::stdout().flush().unwrap();
            let dir = std::path::PathBuf::from(dir);
            rx.recv_with_until(Deadline::after(Duration::from_secs(60)), |b| {
                std::fs::write(dir.join("took.tmp"), hex(b)).unwrap();
                std::fs::rename(dir.join("took.tmp"), dir.join("took")).unwrap();
                let start = Instant::now();
                while !dir.join("go").exists() && start.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::fs::write(dir.join("after.tmp"), hex(b)).unwrap();
                std::fs::rename(dir.join("after.tmp"), dir.join("after")).unwrap();
            })
            .unwrap();
        }
        "hold-claim" => {
            let mut s = mb.sender().unwrap();
            let mut w = s.claim(Deadline::Never).unwrap();
            w.buf()[..4].copy_from_slice(b"half");
            println!("holding");
            std::io::stdout().flush().unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "attach-producer" => {
            let _s = mb.sender().unwrap();
            println!("holding");
            std::io::stdout().flush().unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The test binary re-executed as `review12_child_peer` in `role`;
/// returns once it printed `holding` (attached).
fn child(role: &str, name: &ShmName, dir: Option<&TempDir>) -> ChildGuard {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "review12_child_peer",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("REVIEW12_ROLE", role)
    .env("REVIEW12_NAME", name.as_str())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(d) = dir {
        c.env("REVIEW12_DIR", d.path());
    }
    let mut c = c.spawn().unwrap();
    let out = BufReader::new(c.stdout.take().unwrap());
    let guard = ChildGuard::new(c);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut said = false;
        for line in out.lines() {
            let Ok(line) = line else { break };
            if !said && line.trim_end().ends_with("holding") {
                said = true;
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(HANG).expect("the child peer got ready");
    guard
}

/// The attachment index of process `pid` in `mb`'s table.
fn index_of(mb: &Mailbox, pid: u32) -> usize {
    mb.status()
        .peers
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not attached"))
        .index as usize
}

fn sigstop(c: &ChildGuard) {
    // SAFETY: kill(2) on the pid of our own child.
    assert_eq!(unsafe { libc::kill(c.pid() as i32, libc::SIGSTOP) }, 0);
}

fn sigcont(c: &ChildGuard) {
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(c.pid() as i32, libc::SIGCONT) }, 0);
}

/// Fills block 0 and starts block 1: `BLOCK + extra` messages of sender
/// id `id`, seq `0..`, all received again by `rx` (so the chain's head is
/// block 1, drained to its tail).
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

/// Defect: a receiver SIGKILLed inside `release_detached`, between its two
/// stores (the head's count stored, its position not yet), loses the
/// message without it being counted anywhere.
///
/// On an unbounded queue the head is freed *before* the callback runs
/// (`channel.rs` `deliver_then`: `set_hold`, then `release_detached` →
/// `PackedRing::free_read`, which stores `head.count + 1`, then
/// `head.pos = next`). Killed between those two stores, the reaper
/// (`queue.rs` `Queue::repair`) sees the head still `READING` at the held
/// position and leaves the count to "the normal repair of its read
/// claim"; that repair (`packed.rs` `repair_reader`) finds the count
/// already moved and takes the message as *released*, i.e. delivered
/// (true for a bounded queue, whose release follows the callback; false
/// here, the callback never ran). `lost_reads` stays 0: a message lost
/// silently.
#[test]
fn a_receiver_killed_inside_release_detached_has_its_loss_counted() {
    let name = ShmName::new("rv12-rel-det");
    let dir = TempDir::new("rv12-rel-det");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    s.send(msg(1, 0)).unwrap();
    s.send(msg(1, 1)).unwrap();
    let mut holder = child("hold-in-place", &name, Some(&dir));
    wait_until("the child holds 1/0 in place", || dir.file("took").exists());
    let idx = index_of(&mb, holder.pid());
    let m = Mapping::new(&name);
    let peers = mb.status().geometry.peers_offset as usize;
    let hold_block = m
        .word(peers + idx * ENTRY + HOLD_BLOCK)
        .load(Ordering::SeqCst);
    let hold_pos = m
        .word(peers + idx * ENTRY + HOLD_POS)
        .load(Ordering::SeqCst);
    assert_eq!(hold_block, 1, "the child's hold names block 0");
    // As the child's stores leave it: claim taken (`READING`, its read
    // lock), hold announced, count stored, position not yet.
    let pos = head(&m, offset_of!(Cursor, pos)).load(Ordering::SeqCst);
    let count = head(&m, offset_of!(Cursor, count)).load(Ordering::SeqCst);
    let lock = head(&m, offset_of!(Cursor, lock)).load(Ordering::SeqCst);
    assert_eq!(
        (count, pos & READING, lock & 0xFFFF),
        (1, 0, 0),
        "head freed past 1/0"
    );
    assert!(pos > hold_pos);
    head(&m, offset_of!(Cursor, pos)).store(hold_pos | READING, Ordering::SeqCst);
    head(&m, offset_of!(Cursor, lock))
        .store((lock & !0xFFFF) + TURN + idx as u64 + 1, Ordering::SeqCst);
    holder.kill();
    wait_until("the dead receiver is reaped", || {
        mb.status().dead_consumers == 1
    });
    let mut rx = mb.receiver().unwrap();
    assert_eq!(
        parse(&rx.recv_timeout(HANG).unwrap()),
        (1, 1),
        "1/0 is not delivered twice"
    );
    let st = mb.status();
    assert_eq!(
        st.lost_reads, 1,
        "1/0 was never handed to a callback, yet not counted lost: {st:?}"
    );
}

/// Defect: a scribbled writers' lock word on a *chained* block wedges
/// every receiver for ever. Senders pass the block by (after the 2 ms
/// bypass grace, `Tx::claim_unbounded` → `grow`), but receivers may leave
/// a block the chain moved past only once they seal it
/// (`channel.rs` `read_chain` → `PackedRing::close`, which takes the
/// writers' lock): the lock names attachment 50, which nobody holds, so
/// `close` answers "a writer is in it" for ever. Stale locks are freed
/// only on the main segment's ring (`queue.rs` `Queue::free_stale_locks`
/// looks at `self.ring()` alone; the reaper never looks at chained
/// blocks' lock words), so the message sent after the scribble is never
/// received (nor is anything reported).
#[test]
fn a_scribbled_writers_lock_on_a_chained_block_does_not_wedge_receivers() {
    let name = ShmName::new("rv12-wlock");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    into_block_1(&mut s, &mut rx, 1, 3);
    assert_eq!(mb.status().chain_blocks, 1);
    let b1 = map_block(&name, 1);
    let lock = tail(&b1, offset_of!(Cursor, lock));
    let w = lock.load(Ordering::SeqCst);
    assert_eq!(w & 0xFFFF, 0, "block 1's writers' lock is free");
    // Attachment 50: nobody (this test attached 0 and 1).
    lock.store((w & !0xFFFF) + TURN + 51, Ordering::SeqCst);
    let sent = within(HANG, "a send past the scribbled lock", move || {
        let r = s.send(msg(1, 9999)).map_err(|e| e.to_string());
        (s, r)
    });
    let (_s, r) = sent;
    assert_eq!(r, Ok(()), "the sender passed the block by");
    let got = within(HANG, "recv_timeout", move || rx.recv_timeout(DELIVERY));
    match got {
        Ok(m) => assert_eq!(parse(&m), (1, 9999)),
        Err(RecvError::Corrupt(_)) => {}
        Err(e) => panic!(
            "a message sent after a scribbled lock of block 1 is never received \
             (nor any corruption reported): {e:?}"
        ),
    }
}

/// Defect: a scribbled readers' lock word on a chained block wedges every
/// receiver for ever (same root cause as above: `Queue::free_stale_locks`
/// frees a lock naming no possible holder on the main segment's ring
/// only; on block 1 every `try_claim_read` finds the lock "busy" and
/// `attempt_read` waits). The main segment's ring recovers from exactly
/// this scribble (see `hostile.rs`); a chained block does not.
#[test]
fn a_scribbled_readers_lock_on_a_chained_block_does_not_wedge_receivers() {
    let name = ShmName::new("rv12-rlock");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    into_block_1(&mut s, &mut rx, 1, 3);
    let b1 = map_block(&name, 1);
    let lock = head(&b1, offset_of!(Cursor, lock));
    let w = lock.load(Ordering::SeqCst);
    assert_eq!(w & 0xFFFF, 0, "block 1's readers' lock is free");
    lock.store((w & !0xFFFF) + TURN + 51, Ordering::SeqCst);
    s.send(msg(1, 7777)).unwrap();
    let got = within(HANG, "recv_timeout", move || rx.recv_timeout(DELIVERY));
    match got {
        Ok(m) => assert_eq!(parse(&m), (1, 7777)),
        Err(RecvError::Corrupt(_)) => {}
        Err(e) => panic!(
            "a message queued in block 1 behind a scribbled readers' lock is never \
             received (nor any corruption reported): {e:?}"
        ),
    }
}

/// Defect: a hold word in an attachment-table entry that nobody holds (a
/// scribble, or a stale word) pins a chained block in /dev/shm for ever:
/// `queue.rs` `Queue::retire` skips a block while
/// `PeerTable::holds_in` finds any entry naming it, and `holds_in` reads
/// every entry's `hold_block`/`hold_pos` whether or not a consumer is
/// attached there (nor does the reaper ever clear a hold of an entry
/// that is not attached). The block is left behind the head under its
/// name after the stream ends and the queue is idle, although "an idle
/// queue holds only its main segment" (`retire_tail_block`).
#[test]
fn a_hold_in_a_free_entry_does_not_pin_a_block_for_ever() {
    let name = ShmName::new("rv12-stale-hold");
    let mb = unbounded(&name);
    let peers = mb.status().geometry.peers_offset as usize;
    let mut s = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    into_block_1(&mut s, &mut rx, 1, 3);
    // Entry 50: free. Its hold names block 1 (index + 1), position 16.
    let m = Mapping::new(&name);
    m.word(peers + 50 * ENTRY + HOLD_POS)
        .store(16, Ordering::SeqCst);
    m.word(peers + 50 * ENTRY + HOLD_BLOCK)
        .store(2, Ordering::SeqCst);
    // Through block 1 into block 2, all received, then the end of stream.
    for i in 0..BLOCK + 10 {
        s.send(msg(2, i)).unwrap();
    }
    for i in 0..BLOCK + 10 {
        assert_eq!(parse(&rx.recv_timeout(HANG).unwrap()), (2, i));
    }
    drop(s);
    let end = within(HANG, "recv at end of stream", move || {
        let r = rx.recv_timeout(HANG);
        (rx, r)
    });
    assert!(matches!(end.1, Err(RecvError::Disconnected)), "{:?}", end.1);
    let _ = mb.status();
    assert_eq!(
        chain_files(&name),
        Vec::<String>::new(),
        "the drained, idle queue keeps a chained block that no attached receiver holds"
    );
}

// ---------------------------------------------------------------------
// Passing checks (guarantees that hold today)
// ---------------------------------------------------------------------

/// Passing check: a receiver SIGKILLed in its callback, after freeing the
/// head past the message (the hold announced), has that one message
/// counted lost exactly once, and the next is delivered.
#[test]
fn a_receiver_killed_holding_in_place_loses_exactly_one_counted() {
    let name = ShmName::new("rv12-kill-hold");
    let dir = TempDir::new("rv12-kill-hold");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    s.send(msg(1, 0)).unwrap();
    s.send(msg(1, 1)).unwrap();
    let mut holder = child("hold-in-place", &name, Some(&dir));
    wait_until("the child holds 1/0 in place", || dir.file("took").exists());
    // Another receiver goes on meanwhile (the head was freed).
    let mut rx = mb.receiver().unwrap();
    assert_eq!(parse(&rx.recv_timeout(HANG).unwrap()), (1, 1));
    holder.kill();
    wait_until("the dead receiver is reaped", || {
        mb.status().dead_consumers == 1
    });
    let st = mb.status();
    assert_eq!((st.lost_reads, st.reading, st.len), (1, 0, 0), "{st:?}");
    drop(s);
    assert!(matches!(
        rx.recv_timeout(HANG),
        Err(RecvError::Disconnected)
    ));
}

/// Passing check: a receiver holding a message of block 1 in place (its
/// callback suspended) while the chain goes through ten more blocks and
/// recycles its spares: its bytes are never rewritten, /dev/shm stays
/// bounded (the held block, a few spares, the blocks in use), and once
/// it lets go the held block is given back; an idle queue holds only its
/// main segment.
#[test]
fn a_held_block_survives_recycling_and_is_given_back() {
    let name = ShmName::new("rv12-held-recycle");
    let dir = TempDir::new("rv12-held-recycle");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    into_block_1(&mut s, &mut rx, 1, 0);
    // Block 1 has the first message of id 1's second run.
    s.send(msg(3, 0)).unwrap();
    let mut holder = child("hold-in-place", &name, Some(&dir));
    wait_until("the child holds 3/0 in place", || dir.file("took").exists());
    let took = std::fs::read_to_string(dir.file("took")).unwrap();
    assert_eq!(took, hex(&msg(3, 0)));
    sigstop(&holder);
    let mut most = 0;
    for round in 0..10u64 {
        for i in 0..BLOCK {
            s.send(msg(4, round * BLOCK + i)).unwrap();
        }
        for i in 0..BLOCK {
            assert_eq!(
                parse(&rx.recv_timeout(HANG).unwrap()),
                (4, round * BLOCK + i)
            );
        }
        most = most.max(chain_files(&name).len());
    }
    assert!(
        most <= 8,
        "{most} chain files at once while one block is held"
    );
    assert!(
        chain_files(&name).contains(&format!("{}.b1", name.as_str())),
        "the held block keeps its name: {:?}",
        chain_files(&name)
    );
    sigcont(&holder);
    std::fs::write(dir.file("go"), b"").unwrap();
    wait_until("the child let go", || dir.file("after").exists());
    assert_eq!(
        std::fs::read_to_string(dir.file("after")).unwrap(),
        hex(&msg(3, 0)),
        "the held bytes were rewritten while held"
    );
    assert!(holder.wait_timeout(HANG).is_some_and(|st| st.success()));
    drop(holder);
    assert!(
        !chain_files(&name).contains(&format!("{}.b1", name.as_str())),
        "the held block was not given back: {:?}",
        chain_files(&name)
    );
    drop(s);
    assert!(matches!(
        rx.recv_timeout(HANG),
        Err(RecvError::Disconnected)
    ));
    let _ = mb.status();
    assert_eq!(chain_files(&name), Vec::<String>::new());
    assert_eq!(mb.status().lost_reads, 0);
}

/// Passing check: a sender frozen holding a claim in the tail block does
/// not hold up other senders (each send returns: they start the next
/// block), and once it is killed every other message is delivered
/// exactly once, in each sender's order; the frozen claim is counted
/// abandoned, and the end of stream comes with the chain removed.
#[test]
fn senders_bypass_a_frozen_claim_and_order_survives_its_death() {
    let name = ShmName::new("rv12-bypass");
    let mb = unbounded(&name);
    let mut rx = mb.receiver().unwrap();
    let mut first = mb.sender().unwrap();
    for i in 0..5 {
        first.send(msg(9, i)).unwrap();
    }
    let mut holder = child("hold-claim", &name, None);
    sigstop(&holder);
    let per = 3000u64;
    let senders: Vec<_> = (0..3u32)
        .map(|id| {
            let mut s = mb.sender().unwrap();
            std::thread::spawn(move || {
                for i in 0..per {
                    s.send(msg(id, i)).unwrap();
                }
            })
        })
        .collect();
    for t in senders {
        within(HANG, "senders past a frozen claim", move || {
            t.join().unwrap()
        });
    }
    for i in 5..10 {
        first.send(msg(9, i)).unwrap();
    }
    drop(first);
    assert!(mb.status().chain_blocks >= 1, "the senders moved on");
    holder.kill();
    let mut next: HashMap<u32, u64> = HashMap::new();
    let mut got = 0;
    let end = loop {
        match rx.recv_timeout(HANG) {
            Ok(m) => {
                let (id, seq) = parse(&m);
                let want = next.entry(id).or_insert(0);
                assert_eq!(seq, *want, "sender {id} out of order");
                *want += 1;
                got += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(end, RecvError::Disconnected), "{end:?}");
    assert_eq!(got, 3 * per + 10);
    let st = mb.status();
    assert_eq!((st.abandoned_writes, st.lost_reads), (1, 0), "{st:?}");
    assert_eq!(chain_files(&name), Vec::<String>::new());
}

/// Passing check: a sender killed between the two stores of sealing a lap
/// (`seal_at`: the padding record to the lap's end stored, the write
/// cursor not yet) is repaired: later sends go on, every message is
/// received once, nothing counted lost or abandoned.
#[test]
fn a_sender_killed_inside_seal_at_is_repaired() {
    let name = ShmName::new("rv12-seal");
    let mb = unbounded(&name);
    let mut s = mb.sender().unwrap();
    for i in 0..3 {
        s.send(msg(1, i)).unwrap();
    }
    let mut dead = child("attach-producer", &name, None);
    let idx = index_of(&mb, dead.pid()) as u64;
    let m = Mapping::new(&name);
    let ring = mb.status().geometry.ring_bytes;
    let data = mb.status().geometry.slots_offset as usize;
    let pos = tail(&m, offset_of!(Cursor, pos)).load(Ordering::SeqCst);
    let count = tail(&m, offset_of!(Cursor, count)).load(Ordering::SeqCst);
    let lock = tail(&m, offset_of!(Cursor, lock)).load(Ordering::SeqCst);
    assert_eq!((pos, count, lock & 0xFFFF), (72, 3, 0));
    // Its lock taken, the padding header written, then SIGKILL.
    tail(&m, offset_of!(Cursor, lock)).store((lock & !0xFFFF) + TURN + idx + 1, Ordering::SeqCst);
    let pad = (1u64 << 63) | (1 << 62) | (count << 32) | (ring - pos);
    m.word(data + pos as usize).store(pad, Ordering::SeqCst);
    dead.kill();
    for i in 3..10 {
        s.send(msg(1, i)).unwrap();
    }
    drop(s);
    let mut rx = mb.receiver().unwrap();
    for i in 0..10 {
        assert_eq!(parse(&rx.recv_timeout(HANG).unwrap()), (1, i));
    }
    assert!(matches!(
        rx.recv_timeout(HANG),
        Err(RecvError::Disconnected)
    ));
    let st = mb.status();
    assert_eq!(
        (st.abandoned_writes, st.lost_reads, st.dead_producers),
        (0, 0, 1),
        "{st:?}"
    );
    assert_eq!(chain_files(&name), Vec::<String>::new());
}
