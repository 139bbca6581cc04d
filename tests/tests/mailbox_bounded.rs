//! Bounded mailboxes (`Capacity::Bounded(n)`) with the endpoints in
//! separate processes: the scenarios of crossbeam-channel's array-flavor
//! tests, ordered by handshakes with a `mailbox-peer` instead of sleeps.

#[path = "mailbox_common.rs"]
mod common;

use common::*;
use ipc_core::mailbox::Capacity;
use ipc_core::RecvError;

const B1: Capacity = Capacity::Bounded(1);

#[test]
fn smoke() {
    let (name, mb) = mailbox("smoke", B1);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    tx.send(b"7").unwrap();
    assert_eq!(p.call("try_recv"), "msg 7");
    tx.send(b"8").unwrap();
    assert_eq!(p.call("recv"), "msg 8");
    assert_eq!(p.call("try_recv"), "empty");
    assert_eq!(p.call("recv_timeout 1"), "timeout");
    // And the other way round.
    assert_eq!(p.call("drop-receiver"), "ok");
    assert_eq!(p.call("attach-sender"), "ok");
    let mut rx = mb.receiver().unwrap();
    assert_eq!(p.call("send 9"), "ok");
    assert_eq!(rx.try_recv().unwrap(), b"9");
    assert_eq!(rx.try_recv(), Err(RecvError::Empty));
    p.finish();
}

#[test]
fn capacity() {
    let mut p: Option<Peer> = None;
    for n in 1..10u32 {
        let (name, mb) = mailbox("cap", Capacity::Bounded(n));
        assert_eq!(mb.capacity(), Capacity::Bounded(n));
        assert_eq!(mb.sender().unwrap().capacity(), Some(n as usize));
        assert_eq!(mb.receiver().unwrap().capacity(), Some(n as usize));
        let p = p.get_or_insert_with(|| Peer::spawn(&["repl", name.as_str()]));
        assert_eq!(p.call(&format!("open {name}")), "ok");
        assert_eq!(p.call("attach-sender"), "ok");
        assert_eq!(
            p.call("len"),
            format!("len=0 empty=true full=false cap={n}")
        );
        assert_eq!(p.call("drop-sender"), "ok");
    }
    p.unwrap().finish();
}

#[test]
fn len_empty_full_seen_from_both_processes() {
    let (name, mb) = mailbox("lef", Capacity::Bounded(2));
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    let mine = |tx: &ipc_core::Sender| (tx.len(), tx.is_empty(), tx.is_full());
    assert_eq!(mine(&tx), (0, true, false));
    assert_eq!(p.call("len"), "len=0 empty=true full=false cap=2");
    tx.send(b"a").unwrap();
    assert_eq!(mine(&tx), (1, false, false));
    assert_eq!(p.call("len"), "len=1 empty=false full=false cap=2");
    tx.send(b"b").unwrap();
    assert_eq!(mine(&tx), (2, false, true));
    assert_eq!(p.call("len"), "len=2 empty=false full=true cap=2");
    assert_eq!(p.call("recv"), "msg a");
    assert_eq!(mine(&tx), (1, false, false));
    assert_eq!(p.call("len"), "len=1 empty=false full=false cap=2");
    p.finish();
}

#[test]
fn try_recv() {
    common::try_recv(B1);
}

#[test]
fn recv() {
    recv_blocks_until_send(B1);
}

#[test]
fn recv_timeout() {
    common::recv_timeout(B1);
}

#[test]
fn try_send() {
    let (name, mb) = mailbox("trysend", B1);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    tx.try_send(b"1").unwrap();
    let (kind, back) = split(tx.try_send(b"2".to_vec()).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("full", &b"2"[..]));
    assert_eq!(p.call("try_recv"), "msg 1");
    assert_eq!(p.call("try_recv"), "empty");
    tx.try_send(b"3").unwrap();
    assert_eq!(p.call("recv"), "msg 3");
    assert_eq!(p.call("drop-receiver"), "ok");
    let (kind, back) = split(tx.try_send(b"4".to_vec()).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("disconnected", &b"4"[..]));
    p.finish();
}

#[test]
fn send() {
    let (name, mb) = mailbox("send", B1);
    let mut rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    assert_eq!(p.call("send 7"), "ok");
    p.begin("send 8");
    p.wait_blocked(); // full: waits for the test to take 7
    assert_eq!(rx.recv().unwrap(), b"7");
    p.expect("ok");
    assert_eq!(rx.recv().unwrap(), b"8");
    assert_eq!(p.call("send 9"), "ok");
    assert_eq!(rx.recv().unwrap(), b"9");
    drop(rx);
    assert_eq!(p.call("send 10"), "disconnected 10");
    p.finish();
}

#[test]
fn send_timeout() {
    let (name, mb) = mailbox("sendto", Capacity::Bounded(2));
    let mut rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    assert_eq!(p.call("send_timeout 1000 1"), "ok");
    assert_eq!(p.call("send_timeout 1000 2"), "ok");
    assert_eq!(p.call("send_timeout 1 3"), "timeout 3");
    p.begin("send_timeout 30000 4");
    p.wait_blocked();
    assert_eq!(rx.recv().unwrap(), b"1");
    p.expect("ok");
    assert_eq!(rx.recv().unwrap(), b"2");
    assert_eq!(rx.recv().unwrap(), b"4");
    drop(rx);
    assert_eq!(p.call("send_timeout 30000 5"), "disconnected 5");
    p.finish();
}

#[test]
fn send_after_disconnect() {
    common::send_after_disconnect(Capacity::Bounded(100));
}

#[test]
fn recv_after_disconnect() {
    common::recv_after_disconnect(Capacity::Bounded(100));
}

#[test]
fn disconnect_wakes_sender() {
    common::disconnect_wakes_sender(B1);
}

#[test]
fn disconnect_wakes_receiver() {
    common::disconnect_wakes_receiver(B1);
}

#[test]
fn killed_receiver_disconnects_waiting_sender() {
    common::killed_receiver_disconnects_waiting_sender(Capacity::Bounded(2));
}

#[test]
fn killed_sender_disconnects_receiver() {
    common::killed_sender_disconnects_receiver(Capacity::Bounded(2));
}

/// The peer's receive variants (in place, into a buffer, the blocking
/// iterator) see the same stream.
#[test]
fn receive_variants_across_processes() {
    for op in ["with", "into", "iter", "timeout"] {
        let (name, mb) = mailbox("rxops", Capacity::Bounded(4));
        let rx_peer = spawn_bg(&["recv", name.as_str(), "--op", op, "--timeout-ms", "30000"]);
        let mut tx = mb.sender().unwrap();
        for seq in 0..200 {
            tx.send(encode(0, seq, 48)).unwrap();
        }
        drop(tx);
        let r = finish_bg(rx_peer);
        let end = if op == "iter" {
            "stopped"
        } else {
            "disconnected"
        };
        check(
            &r,
            &[
                ("received", "200"),
                ("bad", "0"),
                ("gaps", "0"),
                ("end", end),
                ("ids", "0:200:0:199"),
            ],
        );
        drop(name);
    }
}
