//! Rendezvous mailboxes (`Capacity::Zero`) with the endpoints in separate
//! processes: the scenarios of crossbeam-channel's zero-flavor tests, plus
//! an ordering proof that a send never returns before a receiver has the
//! message.

#[path = "mailbox_common.rs"]
mod common;

use std::fs::File;
use std::time::{Duration, Instant};

use common::*;
use ipc_core::mailbox::Capacity;
use ipc_core::RecvError;

const Z: Capacity = Capacity::Zero;

#[test]
fn smoke() {
    let (name, mb) = mailbox("zsmoke", Z);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    // The peer is attached but not receiving: nobody to hand it to.
    let (kind, back) = split(tx.try_send(b"7".to_vec()).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("full", &b"7"[..]));
    assert_eq!(p.call("try_recv"), "empty");
    assert_eq!(tx.capacity(), Some(0));
    assert_eq!(tx.len(), 0);
    assert_eq!(p.call("len"), "len=0 empty=true full=true cap=0");
    p.finish();
}

#[test]
fn capacity() {
    for cap in [Capacity::Zero, Capacity::Bounded(0)] {
        let (name, mb) = mailbox("zcap", cap);
        assert_eq!(mb.capacity(), Capacity::Zero);
        let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
        assert_eq!(p.call("len"), "len=0 empty=true full=true cap=0");
        assert_eq!(mb.receiver().unwrap().capacity(), Some(0));
        p.finish();
    }
}

#[test]
fn len_empty_full() {
    let (name, mb) = mailbox("zlef", Z);
    let rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    assert_eq!((rx.len(), rx.is_empty(), rx.is_full()), (0, true, true));
    // Even with an offer pending, nothing is "queued".
    p.begin("send pending");
    p.wait_blocked();
    assert_eq!((rx.len(), rx.is_empty(), rx.is_full()), (0, true, true));
    drop(rx);
    p.expect("disconnected pending");
    p.finish();
}

#[test]
fn try_recv() {
    common::try_recv(Z);
}

#[test]
fn recv() {
    recv_blocks_until_send(Z);
}

#[test]
fn recv_timeout() {
    common::recv_timeout(Z);
}

/// `try_send` succeeds only when a receiver is waiting: `Full` while the
/// peer merely holds a receiver, success once the peer is blocked in
/// `recv`, and the peer then has exactly that one message (attempts that
/// were retracted are never delivered).
#[test]
fn try_send() {
    let (name, mb) = mailbox("ztrysend", Z);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    let (kind, back) = split(tx.try_send(b"7".to_vec()).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("full", &b"7"[..]));
    p.begin("recv");
    p.wait_blocked();
    // The receiver is waiting now. A try_send waits only a short grace for
    // it to take the offer, which a loaded machine can miss: then the offer
    // is retracted (Full) and we try again; what must hold is the outcome.
    let start = Instant::now();
    let mut msg = b"8".to_vec();
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(e) => {
                let (kind, back) = split(e);
                assert_eq!((kind, back.as_slice()), ("full", &b"8"[..]));
                assert!(
                    start.elapsed() < PATIENCE,
                    "try_send never met the receiver"
                );
                msg = back;
            }
        }
    }
    p.expect("msg 8");
    assert_eq!(p.call("try_recv"), "empty");
    assert_eq!(p.call("drop-receiver"), "ok");
    let (kind, back) = split(tx.try_send(b"9".to_vec()).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("disconnected", &b"9"[..]));
    p.finish();
}

#[test]
fn send() {
    let (name, mb) = mailbox("zsend", Z);
    let mut rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    for m in ["7", "8"] {
        p.begin(&format!("send {m}"));
        p.wait_blocked(); // no buffer: waits for the test to take it
        assert_eq!(rx.recv().unwrap(), m.as_bytes());
        p.expect("ok");
    }
    drop(rx);
    assert_eq!(p.call("send 9"), "disconnected 9");
    p.finish();
}

/// A timed-out offer is retracted: never delivered later.
#[test]
fn send_timeout() {
    let (name, mb) = mailbox("zsendto", Z);
    let mut rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    assert_eq!(p.call("send_timeout 1 7"), "timeout 7");
    assert_eq!(rx.try_recv(), Err(RecvError::Empty));
    p.begin("send_timeout 30000 8");
    p.wait_blocked();
    assert_eq!(rx.recv().unwrap(), b"8");
    p.expect("ok");
    assert_eq!(rx.try_recv(), Err(RecvError::Empty));
    drop(rx);
    assert_eq!(p.call("send_timeout 30000 9"), "disconnected 9");
    p.finish();
}

#[test]
fn send_after_disconnect() {
    common::send_after_disconnect(Z);
}

/// Nothing is buffered: once the sender has gone, receives report
/// `Disconnected` at once.
#[test]
fn recv_after_disconnect() {
    let (name, mb) = mailbox("zrecvafter", Z);
    let mut rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    assert_eq!(p.call("send_timeout 1 lost"), "timeout lost");
    p.finish();
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.recv_timeout(PATIENCE), Err(RecvError::Disconnected));
}

#[test]
fn disconnect_wakes_sender() {
    common::disconnect_wakes_sender(Z);
}

#[test]
fn disconnect_wakes_receiver() {
    common::disconnect_wakes_receiver(Z);
}

#[test]
fn killed_receiver_disconnects_waiting_sender() {
    common::killed_receiver_disconnects_waiting_sender(Z);
}

#[test]
fn killed_sender_disconnects_receiver() {
    common::killed_sender_disconnects_receiver(Z);
}

const PROOF_MESSAGES: u64 = 20;

/// Rendezvous proof, the test sending: the peer sleeps before each
/// receive (so a send that returned at commit would find no marker), then,
/// inside the receive callback, while it holds the slot, creates the marker
/// `took-0-SEQ` and holds a little longer. Every send must find its marker
/// already there the moment it returns: the marker is created before the
/// slot is released, and a send may return only after that.
#[test]
fn rendezvous_send_returns_after_the_receiver_took_it() {
    let (name, mb) = mailbox("zproof", Z);
    let dir = TempDir::new("zproof");
    let count = PROOF_MESSAGES.to_string();
    let d = dir.path().to_str().unwrap();
    let peer = spawn_bg(&[
        "recv",
        name.as_str(),
        "--op",
        "with",
        "--count",
        &count,
        "--marker-dir",
        d,
        "--pre-delay-ms",
        "10",
        "--hold-ms",
        "5",
    ]);
    let mut tx = mb.sender().unwrap();
    let mut early = Vec::new();
    for seq in 0..PROOF_MESSAGES {
        tx.send(encode(0, seq, 32)).unwrap();
        if !dir.file(&format!("took-0-{seq}")).exists() {
            early.push(seq);
        }
    }
    assert!(
        early.is_empty(),
        "sends returned before the receiver took: {early:?}"
    );
    let r = finish_bg(peer);
    check(
        &r,
        &[
            ("received", &count),
            ("bad", "0"),
            ("gaps", "0"),
            ("end", "count"),
        ],
    );
}

/// The same proof with the peer sending (it checks the markers itself and
/// reports `early=`) and the test receiving.
#[test]
fn rendezvous_peer_send_returns_after_the_test_took_it() {
    let (name, mb) = mailbox("zproof2", Z);
    let dir = TempDir::new("zproof2");
    let mut rx = mb.receiver().unwrap();
    let count = PROOF_MESSAGES.to_string();
    let d = dir.path().to_str().unwrap().to_owned();
    let peer = spawn_bg(&[
        "send",
        name.as_str(),
        "--count",
        &count,
        "--size",
        "32",
        "--marker-dir",
        &d,
    ]);
    for seq in 0..PROOF_MESSAGES {
        std::thread::sleep(Duration::from_millis(10));
        let got = rx
            .recv_with(|b| {
                let got = decode(b);
                if let Some((id, s)) = got {
                    File::create(dir.file(&format!("took-{id}-{s}"))).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
                got
            })
            .unwrap();
        assert_eq!(got, Some((0, seq)));
    }
    let r = finish_bg(peer);
    check(&r, &[("sent", &count), ("end", "done"), ("early", "0")]);
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}
