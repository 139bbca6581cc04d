//! Every send error hands the message back, byte for byte, whatever the
//! message type: `Full`, `Timeout`, `Disconnected`, `TooLarge`, for each
//! capacity flavor, with the other endpoint in a `mailbox-peer` process.

#[path = "mailbox_common.rs"]
mod common;

use std::time::Duration;

use common::*;
use ipc_core::mailbox::Capacity;
use ipc_core::ports::PortSender;
use ipc_core::{Deadline, RecvError, SendError};

/// A message whose every byte matters.
fn distinctive(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

const SHORT: Duration = Duration::from_millis(5);

/// `Full` and `Timeout` while the peer's receiver takes nothing: the
/// bounded buffer is full, or (rendezvous) nobody waits in a receive.
#[test]
fn full_and_timeout_hand_the_message_back() {
    for capacity in [Capacity::Bounded(1), Capacity::Zero] {
        let (name, mb) = mailbox("errfull", capacity);
        let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
        assert!(p.call("len").starts_with("len=0"));
        let mut tx = mb.sender().unwrap();
        if capacity == Capacity::Bounded(1) {
            tx.send(b"filler").unwrap();
        }
        let msg = distinctive(64);
        // Owned bytes.
        let e = tx.try_send(msg.clone()).unwrap_err();
        assert!(matches!(&e, SendError::Full(m) if *m == msg), "{e:?}");
        let e = tx.send_timeout(msg.clone(), SHORT).unwrap_err();
        assert!(matches!(&e, SendError::Timeout(m) if *m == msg), "{e:?}");
        let e = tx
            .send_until(msg.clone(), Deadline::after(SHORT))
            .unwrap_err();
        assert!(matches!(&e, SendError::Timeout(m) if *m == msg), "{e:?}");
        // A borrowed slice comes back as the very same slice.
        let e = tx.try_send(&msg[..]).unwrap_err();
        assert!(std::ptr::eq(e.into_inner(), &msg[..]));
        // A string and an array.
        let e = tx.send_timeout(String::from("hello"), SHORT).unwrap_err();
        assert!(matches!(&e, SendError::Timeout(s) if s == "hello"), "{e:?}");
        let e = tx.try_send([9u8; 16]).unwrap_err();
        assert!(matches!(e, SendError::Full(a) if a == [9u8; 16]), "{e:?}");
        // A zero-copy claim has no message to give back, but the same kinds.
        assert!(matches!(tx.claim(Deadline::Now), Err(SendError::Full(()))));
        if capacity != Capacity::Zero {
            // (A rendezvous claim only reserves the sender's own slot: it
            // waits at commit, not at claim.)
            assert!(matches!(
                tx.claim(Deadline::after(SHORT)),
                Err(SendError::Timeout(()))
            ));
        }
        // Nothing that failed was delivered.
        if capacity == Capacity::Bounded(1) {
            assert_eq!(p.call("try_recv"), "msg filler");
        }
        assert_eq!(p.call("try_recv"), "empty");
        p.finish();
    }
}

/// `Disconnected` once the peer's receiver has gone, for every flavor and
/// every send variant, including plain-old-data values.
#[test]
fn disconnected_hands_the_message_back() {
    for capacity in [Capacity::Bounded(4), Capacity::Zero, Capacity::Unbounded] {
        let (name, mb) = mailbox("errdisc", capacity);
        let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
        assert!(p.call("len").starts_with("len=0"));
        assert_eq!(p.call("drop-receiver"), "ok");
        let mut tx = mb.sender().unwrap();
        let msg = distinctive(64);
        for r in [
            tx.send(msg.clone()),
            tx.try_send(msg.clone()),
            tx.send_timeout(msg.clone(), SHORT),
            tx.send_until(msg.clone(), Deadline::Never),
        ] {
            let e = r.unwrap_err();
            assert!(
                matches!(&e, SendError::Disconnected(m) if *m == msg),
                "{e:?}"
            );
        }
        let e = tx.send_pod(0xDEAD_BEEF_u64).unwrap_err();
        assert!(
            matches!(e, SendError::Disconnected(0xDEAD_BEEF_u64)),
            "{e:?}"
        );
        assert!(matches!(
            tx.claim(Deadline::Never),
            Err(SendError::Disconnected(()))
        ));
        p.finish();
    }
}

/// A message larger than the mailbox's maximum comes back with its length
/// and the maximum; nothing is sent.
#[test]
fn too_large_hands_the_message_back() {
    for capacity in [Capacity::Bounded(4), Capacity::Zero, Capacity::Unbounded] {
        let (name, mb) = mailbox("errlarge", capacity);
        let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
        assert!(p.call("len").starts_with("len=0"));
        let mut tx = mb.sender().unwrap();
        let max = tx.max_message();
        let msg = distinctive(max + 1);
        for r in [
            tx.send(msg.clone()),
            tx.try_send(msg.clone()),
            tx.send_timeout(msg.clone(), SHORT),
        ] {
            match r.unwrap_err() {
                SendError::TooLarge {
                    msg: m,
                    len,
                    max: mx,
                } => {
                    assert_eq!((m, len, mx), (msg.clone(), max + 1, max));
                }
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(p.call("try_recv"), "empty");
        // The largest allowed message goes through intact.
        // (Printable: the peer prints it on one line.)
        let exact: Vec<u8> = (0..max).map(|i| b'a' + (i % 26) as u8).collect();
        let expected = String::from_utf8(exact.clone()).unwrap();
        p.begin("recv");
        tx.send(exact).unwrap();
        assert_eq!(p.line(), format!("msg {expected}"));
        p.finish();
    }
}

/// The peer's sends hand messages back too (it prints the bytes the error
/// returned).
#[test]
fn peer_side_errors_hand_the_message_back() {
    let (name, mb) = mailbox("errpeer", Capacity::Bounded(1));
    let mut rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    assert_eq!(p.call("send first"), "ok");
    assert_eq!(p.call("try_send second"), "full second");
    assert_eq!(p.call("send_timeout 5 third"), "timeout third");
    assert_eq!(rx.recv().unwrap(), b"first");
    drop(rx);
    assert_eq!(p.call("send fourth"), "disconnected fourth");
    p.finish();
}

/// Sending to a port nobody registered hands the message back.
#[test]
fn port_send_to_nobody_hands_the_message_back() {
    let nobody = ipc_tests::ShmName::new("noport");
    let mut out = PortSender::new("lonely").unwrap();
    let msg = distinctive(32);
    let e = out.send_to(nobody.as_str(), msg.clone()).unwrap_err();
    assert!(
        matches!(&e, SendError::Disconnected(m) if *m == msg),
        "{e:?}"
    );
    let e = out.try_send_to(nobody.as_str(), &msg[..]).unwrap_err();
    assert!(std::ptr::eq(e.into_inner(), &msg[..]));
    // Receive errors carry no message; a failed typed receive says why.
    let (_name, mb) = mailbox("errpod", Capacity::Bounded(2));
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    tx.send(b"abc").unwrap();
    assert_eq!(
        rx.recv_pod::<u64>(),
        Err(RecvError::WrongSize {
            expected: 8,
            found: 3
        })
    );
}
