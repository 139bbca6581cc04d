//! Unbounded queues on the packed engine (issue 10): their blocks are
//! packed rings read as write-once laps, so memory is sized in bytes; a
//! sender frozen in its turn is passed by (the others start the next
//! block) instead of holding every sender up; a receiver reading in place
//! has freed the ring's head already, and its hold (in the attachment
//! table) makes a dead holder's message counted lost exactly once.

use std::mem::offset_of;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_core::layout::{Cursor, Geometry, Header};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_tests::{ChildGuard, Mapping, ShmName, PATIENCE};

/// Starts `trust-peer SUB NAME` holding a claim or a message.
fn peer_holding(sub: &str, name: &str) -> ChildGuard {
    ipc_tests::trust_peer_holding(sub, name).0
}

fn unbounded(name: &ShmName, max_message: u32) -> Mailbox {
    Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Unbounded,
            max_message,
            ..Default::default()
        },
    )
    .expect("create")
}

/// Files of the queue in /dev/shm (the main segment, blocks, spares).
fn files_of(name: &ShmName) -> Vec<(String, u64)> {
    let mut found: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let f = e.file_name().into_string().ok()?;
            let ours = f == name.as_str() || f.starts_with(&format!("{}.b", name.as_str()));
            ours.then(|| (f, e.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    found.sort();
    found
}

/// Before: every block held its message count in slots of the largest
/// size (16 slots of 1 MiB for 1 MiB messages, so 64 small messages took
/// four 16 MiB segments). Now a block is a ring of bytes: 64 messages of
/// 100 bytes take 7 KiB of the main segment's 4 MiB ring.
#[test]
fn an_unbounded_mailbox_for_1_mib_messages_costs_bytes_not_slots() {
    let name = ShmName::new("ub-memory");
    let mb = unbounded(&name, 1 << 20);
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    for i in 0..64u8 {
        tx.send([i; 100]).unwrap();
    }
    let status = mb.status();
    assert_eq!(status.len, 64);
    assert_eq!(status.chain_blocks, 0, "all in the main segment");
    assert_eq!(status.bytes_used, 64 * 112, "8-byte header + 104 each");
    let files = files_of(&name);
    assert_eq!(files.len(), 1, "one file: {files:?}");
    assert!(
        files[0].1 <= (4 << 20) + (64 << 10),
        "the main segment maps {} bytes",
        files[0].1
    );
    for i in 0..64u8 {
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), [i; 100]);
    }
}

/// A sender frozen (SIGSTOP) while it holds the senders' turn in the tail
/// block: the others do not wait for it (an unbounded queue's senders
/// never wait), but start the next block. Receivers, as before, take the
/// messages in the order of the blocks: those behind the frozen claim
/// wait for it (as they waited for a frozen writer's slot). Once the
/// frozen sender dies, its claim is counted abandoned, the block it held
/// up is sealed and passed, and the others' messages arrive in order.
#[test]
fn a_sender_frozen_in_its_turn_does_not_hold_up_the_others() {
    let name = ShmName::new("ub-frozen");
    let mb = unbounded(&name, 64);
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"first").unwrap();
    let holder = peer_holding("hold-claim", name.as_str());
    let pid = holder.pid() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let began = Instant::now();
    for i in 0..100 {
        tx.send(format!("m{i}")).unwrap();
    }
    // A hang would be the frozen sender's turn waited for: a bound, not a
    // timing (the bypass waits about 2 ms once).
    assert!(began.elapsed() < Duration::from_secs(20), "senders waited");
    assert_eq!(mb.status().chain_blocks, 1, "one block started past it");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"first");
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(ipc_core::RecvError::Timeout),
        "the frozen sender's claim comes first"
    );
    assert_eq!(
        mb.status().abandoned_writes,
        0,
        "a live holder's claim stays"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    drop(holder); // SIGKILL: its claim is repaired.
    for i in 0..100 {
        assert_eq!(
            rx.recv_timeout(PATIENCE).unwrap(),
            format!("m{i}").as_bytes()
        );
    }
    tx.send(b"last").unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"last");
    assert_eq!(mb.status().abandoned_writes, 1);
    drop(tx);
    assert_eq!(
        rx.recv_timeout(PATIENCE),
        Err(ipc_core::RecvError::Disconnected)
    );
    assert_eq!(files_of(&name).len(), 1, "{:?}", files_of(&name));
}

/// A receiver reading a message in place holds no turn: another takes the
/// next messages meanwhile.
#[test]
fn a_receiver_reading_in_place_does_not_hold_up_the_others() {
    let name = ShmName::new("ub-inplace");
    let mb = unbounded(&name, 64);
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    for i in 0..10 {
        tx.send(format!("m{i}")).unwrap();
    }
    let holder = peer_holding("hold-read", name.as_str());
    for i in 1..10 {
        assert_eq!(
            rx.recv_timeout(PATIENCE).unwrap(),
            format!("m{i}").as_bytes()
        );
    }
    drop(holder); // SIGKILL while it holds m0: counted lost, once.
    tx.send(b"after").unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"after");
    assert_eq!(mb.status().lost_reads, 1);
}

/// Offsets of a peer table entry's words (see `PeerEntry`): state, start
/// time, role, hold block + 1, hold position.
const ENTRY_ROLE: usize = 16;
const ENTRY_HOLD_BLOCK: usize = 24;
const ENTRY_HOLD_POS: usize = 32;

/// Writes entry `i` as ALIVE with a pid that has exited, role consumer.
fn plant_dead_consumer(map: &Mapping, geo: &Geometry, i: usize) {
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = u64::from(gone.id());
    gone.wait().unwrap();
    let entry = geo.peers_offset as usize + i * 64;
    map.word(entry).store((2 << 62) | pid, Ordering::SeqCst);
    map.word(entry + ENTRY_ROLE).store(2, Ordering::SeqCst);
}

/// An unbounded mailbox holding `m0` and `m1` (its sender gone), and its
/// receiver.
fn two_messages(tag: &str) -> (ShmName, Mailbox, ipc_core::Receiver) {
    let name = ShmName::new(tag);
    let mb = unbounded(&name, 64);
    let rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"m0").unwrap();
    tx.send(b"m1").unwrap();
    (name, mb, rx)
}

/// A receiver killed after freeing the head past the message it reads in
/// place: only its hold tells what it held. Counted lost once.
#[test]
fn a_receiver_dead_holding_a_freed_message_is_counted_lost_once() {
    let (name, mb, mut rx) = two_messages("ub-hold-dead");
    let geo = mb.status().geometry;
    // m0 is read, its head freed: as a receiver killed in its callback
    // leaves it, with its hold naming m0 (block 0, position 0).
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"m0");
    let map = Mapping::new(&name);
    plant_dead_consumer(&map, &geo, 5);
    let entry = geo.peers_offset as usize + 5 * 64;
    map.word(entry + ENTRY_HOLD_POS).store(0, Ordering::SeqCst);
    map.word(entry + ENTRY_HOLD_BLOCK)
        .store(1, Ordering::SeqCst);
    let status = mb.status(); // reaps
    assert_eq!(status.lost_reads, 1, "{status:?}");
    assert_eq!(mb.status().lost_reads, 1, "not counted again");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"m1");
}

/// A receiver killed between announcing its hold and freeing the head:
/// its read claim is repaired as any (the message counted lost), and the
/// hold adds nothing.
#[test]
fn a_receiver_dead_before_freeing_the_head_is_counted_lost_once() {
    let (name, mb, mut rx) = two_messages("ub-hold-claimed");
    let geo = mb.status().geometry;
    let map = Mapping::new(&name);
    plant_dead_consumer(&map, &geo, 5);
    let entry = geo.peers_offset as usize + 5 * 64;
    // Its read claim of m0 (the read lock, index 5 + 1, and the head
    // marked held), then its hold on it.
    let head = offset_of!(Header, head);
    map.word(head + offset_of!(Cursor, lock))
        .store(6 | 1 << 32, Ordering::SeqCst);
    map.word(head).store(1 << 63, Ordering::SeqCst);
    map.word(entry + ENTRY_HOLD_POS).store(0, Ordering::SeqCst);
    map.word(entry + ENTRY_HOLD_BLOCK)
        .store(1, Ordering::SeqCst);
    let status = mb.status();
    assert_eq!(status.lost_reads, 1, "{status:?}");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"m1");
    assert_eq!(mb.status().lost_reads, 1);
}

/// Once every sender has gone, a receiver that finds another receiver's
/// turn taken in the chain's head block waits for it: the messages there
/// are not "counted as queued, none to read" (a check of the main ring's
/// turn, which said so of an unbounded queue: two receivers draining a
/// chain under load got `Corrupt`).
#[test]
fn a_receiver_waits_out_another_receivers_turn_in_a_block_after_the_senders_left() {
    let name = ShmName::new("ub-turn-eos");
    let mb = unbounded(&name, 64);
    let mut rx = mb.receiver().unwrap();
    let _other = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    for i in 0..1030u32 {
        tx.send(i.to_le_bytes()).unwrap();
    }
    for i in 0..1025u32 {
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), i.to_le_bytes());
    }
    drop(tx);
    assert_eq!(mb.status().chain_blocks, 1);
    // The other receiver's turn in block 1 (as while it claims a message).
    let other = mb
        .status()
        .peers
        .iter()
        .filter(|p| p.role == Some(ipc_core::Role::Consumer))
        .map(|p| p.index)
        .max()
        .unwrap();
    let block = std::mem::ManuallyDrop::new(ShmName(format!("{}.b1", name.as_str())));
    let map = Mapping::new(&block);
    let lock = map.word(offset_of!(Header, head) + offset_of!(Cursor, lock));
    let free = lock.load(Ordering::SeqCst);
    assert_eq!(free & 0xFFFF, 0);
    lock.store(
        (free & !0xFFFF) + (1 << 32) + u64::from(other) + 1,
        Ordering::SeqCst,
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(ipc_core::RecvError::Timeout),
        "the other receiver's turn is waited for"
    );
    // Its turn given back.
    lock.store((free & !0xFFFF) + (2 << 32), Ordering::SeqCst);
    for i in 1025..1030u32 {
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), i.to_le_bytes());
    }
    assert_eq!(
        rx.recv_timeout(PATIENCE),
        Err(ipc_core::RecvError::Disconnected)
    );
}
