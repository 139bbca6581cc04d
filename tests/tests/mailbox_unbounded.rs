//! Unbounded mailboxes (`Capacity::Unbounded`: a chain of segments
//! `NAME.b1`, `NAME.b2`, ...) with the endpoints in separate processes: the
//! scenarios of crossbeam-channel's list-flavor tests, a million messages
//! queued with nobody receiving, and the chain's segments freed after
//! drain.

#[path = "mailbox_common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig, UNBOUNDED_BLOCK};
use ipc_tests::ShmName;

const U: Capacity = Capacity::Unbounded;

#[test]
fn smoke() {
    let (name, mb) = mailbox("usmoke", U);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    tx.send(b"7").unwrap();
    assert_eq!(p.call("try_recv"), "msg 7");
    tx.send(b"8").unwrap();
    assert_eq!(p.call("recv"), "msg 8");
    assert_eq!(p.call("try_recv"), "empty");
    assert_eq!(p.call("recv_timeout 1"), "timeout");
    p.finish();
}

#[test]
fn capacity() {
    let (name, mb) = mailbox("ucap", U);
    assert_eq!(mb.capacity(), U);
    assert_eq!(mb.sender().unwrap().capacity(), None);
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    assert_eq!(p.call("len"), "len=0 empty=true full=false cap=none");
    p.finish();
}

/// Never full, whatever is queued (here across several chain blocks).
#[test]
fn len_empty_full() {
    let (name, mb) = mailbox("ulef", U);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    assert_eq!(p.call("len"), "len=0 empty=true full=false cap=none");
    let n = 3 * UNBOUNDED_BLOCK as usize + 5;
    for i in 0..n {
        tx.send(i.to_string()).unwrap();
        assert!(!tx.is_full());
    }
    assert_eq!(tx.len(), n);
    assert_eq!(
        p.call("len"),
        format!("len={n} empty=false full=false cap=none")
    );
    assert_eq!(p.call("recv"), "msg 0");
    assert_eq!(tx.len(), n - 1);
    p.finish();
}

#[test]
fn try_recv() {
    common::try_recv(U);
}

#[test]
fn recv() {
    recv_blocks_until_send(U);
}

#[test]
fn recv_timeout() {
    common::recv_timeout(U);
}

/// `try_send`, `send` and `send_timeout` never wait and never report
/// `Full` or `Timeout`, with nobody receiving; `Disconnected` once the
/// receiver has gone.
#[test]
fn send_variants_never_wait() {
    let (name, mb) = mailbox("usend", U);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    let per = 2 * UNBOUNDED_BLOCK as u64;
    for seq in 0..per {
        tx.try_send(encode(0, seq, 16)).unwrap();
    }
    for seq in per..2 * per {
        tx.send_timeout(encode(0, seq, 16), Duration::from_millis(1))
            .unwrap();
    }
    for seq in 2 * per..3 * per {
        tx.send(encode(0, seq, 16)).unwrap();
    }
    assert_eq!(tx.len(), 3 * per as usize);
    assert_eq!(p.call("drop-receiver"), "ok");
    for r in [
        tx.try_send(b"x".to_vec()),
        tx.send(b"x".to_vec()),
        tx.send_timeout(b"x".to_vec(), PATIENCE),
    ] {
        let (kind, back) = split(r.unwrap_err());
        assert_eq!((kind, back.as_slice()), ("disconnected", &b"x"[..]));
    }
    p.finish();
}

#[test]
fn send_after_disconnect() {
    common::send_after_disconnect(U);
}

#[test]
fn recv_after_disconnect() {
    common::recv_after_disconnect(U);
}

#[test]
fn disconnect_wakes_receiver() {
    common::disconnect_wakes_receiver(U);
}

#[test]
fn killed_sender_disconnects_receiver() {
    common::killed_sender_disconnects_receiver(U);
}

/// A sender of an unbounded mailbox never waits, so it never runs the
/// waiters' liveness check: does it ever learn that its only receiver was
/// SIGKILLed, or does it fill /dev/shm for ever?
#[test]
fn killed_receiver_disconnects_sender() {
    let (name, mb) = mailbox("ukillrx", U);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    assert!(p.call("len").starts_with("len=0"));
    p.kill();
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        match tx.send(b"into the void".to_vec()) {
            Ok(()) => sent += 1,
            Err(e) => {
                let (kind, back) = split(e);
                assert_eq!(
                    (kind, back.as_slice()),
                    ("disconnected", &b"into the void"[..])
                );
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{sent} sends succeeded after the only receiver was killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

const MILLION: u64 = 1_000_000;

/// A million messages sent with nobody receiving (never blocks), then
/// drained in order by another process; every drained chain segment is
/// then gone from /dev/shm.
#[test]
fn million_queued_then_drained_and_chain_freed() {
    let (name, mb) = mailbox("umillion", U);
    let mut tx = mb.sender().unwrap();
    let mut msg = encode(0, 0, 16);
    for seq in 0..MILLION {
        msg[4..12].copy_from_slice(&seq.to_le_bytes());
        msg[12..].copy_from_slice(&encode(0, seq, 16)[12..]);
        tx.send(&msg[..]).unwrap();
    }
    assert_eq!(tx.len(), MILLION as usize);
    let blocks = MILLION.div_ceil(UNBOUNDED_BLOCK as u64) - 1;
    assert_eq!(chain_segments(name.as_str()).len() as u64, blocks);
    drop(tx);
    let r = run_peer(&["recv", name.as_str()]);
    check(
        &r,
        &[
            ("received", &MILLION.to_string()),
            ("bad", "0"),
            ("disorder", "0"),
            ("gaps", "0"),
            ("end", "disconnected"),
            ("ids", &format!("0:{MILLION}:0:{}", MILLION - 1)),
        ],
    );
    // Every drained block is gone, the last one included: at end of
    // stream the receiver seals and removes it.
    let left = chain_segments(name.as_str());
    assert!(
        left.is_empty(),
        "chain segments left after the drain: {left:?}"
    );
    assert!(name.path().exists());
    Mailbox::unlink(name.as_str()).unwrap();
    assert!(!name.path().exists());
    assert!(chain_segments(name.as_str()).is_empty());
}

/// The stricter expectation: once every sender has gone and everything is
/// drained, no chain segment is left, only the main one.
#[test]
fn drained_chain_leaves_only_the_main_segment() {
    let (name, mb) = mailbox("udrained", U);
    let mut tx = mb.sender().unwrap();
    let n = 2 * UNBOUNDED_BLOCK as u64 + 5;
    for seq in 0..n {
        tx.send(encode(0, seq, 16)).unwrap();
    }
    drop(tx);
    let r = run_peer(&["recv", name.as_str()]);
    check(&r, &[("received", &n.to_string()), ("end", "disconnected")]);
    assert_eq!(chain_segments(name.as_str()), Vec::<String>::new());
}

/// After end of stream retired the last chained block, a sender that comes
/// later starts a new block and a receiver gets its messages in order.
#[test]
fn chain_grows_again_after_the_tail_block_was_retired() {
    let name = ShmName::new("uregrow");
    let config = MailboxConfig {
        capacity: U,
        max_message: 256 << 10, // 16 messages per chained block
        ..Default::default()
    };
    let mb = Mailbox::create(name.as_str(), &config).unwrap();
    let mut rx = mb.receiver().unwrap();
    for round in 0..3u8 {
        let mut tx = mb.sender().unwrap();
        for i in 0..40u8 {
            tx.send([round, i]).unwrap();
        }
        drop(tx);
        for i in 0..40u8 {
            assert_eq!(rx.recv().unwrap(), [round, i], "round {round}");
        }
        assert_eq!(rx.recv(), Err(ipc_core::RecvError::Disconnected));
        assert!(
            chain_segments(name.as_str()).is_empty(),
            "round {round}: blocks left"
        );
    }
}

/// A chained block left unfinished by a creator that died (no magic, no
/// initialization lock) does not wedge the chain: the next sender that
/// needs it removes and recreates it.
#[test]
fn a_block_left_unpublished_by_a_dead_creator_is_recreated() {
    let name = ShmName::new("uwedge");
    let config = MailboxConfig {
        capacity: U,
        max_message: 256 << 10, // 16 messages per chained block
        ..Default::default()
    };
    let mb = Mailbox::create(name.as_str(), &config).unwrap();
    // What a creator killed between shm_open and publishing leaves behind.
    let planted = std::path::Path::new("/dev/shm").join(format!("{name}.b1"));
    std::fs::File::create(&planted)
        .unwrap()
        .set_len(4096)
        .unwrap();
    // It counts as abandoned only once it is a second old (a live creator
    // locks it microseconds after creating it).
    std::thread::sleep(Duration::from_millis(1100));
    let mut tx = mb.sender().unwrap();
    for i in 0..40u8 {
        tx.send([i]).unwrap();
    }
    drop(tx);
    let mut rx = mb.receiver().unwrap();
    for i in 0..40u8 {
        assert_eq!(rx.recv().unwrap(), [i]);
    }
}

/// A zero-copy claim leaked with `mem::forget` does not block the queue
/// for ever: the producer's drop gives the slot back.
#[test]
fn a_leaked_claim_is_given_back_when_its_producer_goes() {
    let name = ShmName::new("uleak");
    let buf = ipc_core::SharedBuffer::create(
        name.as_str(),
        &ipc_core::BufferConfig {
            capacity: 4,
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = buf.producer().unwrap();
    let slot = tx.claim(ipc_core::Deadline::Never).unwrap();
    std::mem::forget(slot);
    drop(tx);
    let mut later = buf.producer().unwrap();
    later.send(b"later").unwrap();
    drop(later);
    let mut rx = buf.consumer().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), b"later");
    assert_eq!(rx.recv(), Err(ipc_core::RecvError::Disconnected));
}
