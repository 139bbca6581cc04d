//! `Receiver::recv_if_until`: a receiver that declines a message leaves it
//! at the head (bounded), and a rendezvous sender whose offer was declined
//! can still time out or be told `Disconnected` (what `ipc-bridge` needs to
//! give a remote rendezvous sender the far side's answer).

use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{Deadline, RecvError, SendError};
use ipc_tests::{ShmName, PATIENCE};

fn mailbox(tag: &str, capacity: Capacity) -> (ShmName, Mailbox) {
    let name = ShmName::new(tag);
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    (name, mb)
}

#[test]
fn a_declined_message_stays_at_the_head_for_the_next_receive() {
    let (_n, mb) = mailbox("rif-bounded", Capacity::Bounded(4));
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    tx.send(b"a").unwrap();
    tx.send(b"b").unwrap();
    let got = rx.recv_if_until(Deadline::after(PATIENCE), |m| {
        assert_eq!(m, b"a");
        None::<()>
    });
    assert!(matches!(got, Ok(None)));
    assert_eq!(mb.status().len, 2);
    // Another receiver gets it.
    let mut other = mb.receiver().unwrap();
    assert_eq!(other.recv_timeout(PATIENCE).unwrap(), b"a");
    let got = rx.recv_if_until(Deadline::after(PATIENCE), |m| Some(m.to_vec()));
    assert_eq!(got.unwrap(), Some(b"b".to_vec()));
    assert_eq!(mb.status().lost_reads, 0);
}

#[test]
fn a_declined_rendezvous_offer_can_time_out_or_be_disconnected() {
    let (_n, mb) = mailbox("rif-zero", Capacity::Zero);
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    let t = std::thread::spawn(move || {
        let r = tx.send_timeout(b"x".to_vec(), Duration::from_millis(500));
        (tx, r)
    });
    let got = rx.recv_if_until(Deadline::after(PATIENCE), |m| {
        assert_eq!(m, b"x");
        None::<()>
    });
    assert!(matches!(got, Ok(None)));
    let (mut tx, r) = t.join().unwrap();
    match r {
        Err(SendError::Timeout(m)) => assert_eq!(m, b"x"),
        other => panic!("a declined offer: {other:?}"),
    }
    // Declined, then the only receiver leaves: the blocked sender is told.
    let t = std::thread::spawn(move || tx.send_timeout(b"y".to_vec(), PATIENCE));
    let got = rx.recv_if_until(Deadline::after(PATIENCE), |_| None::<()>);
    assert!(matches!(got, Ok(None)));
    drop(rx);
    match t.join().unwrap() {
        Err(SendError::Disconnected(m)) => assert_eq!(m, b"y"),
        other => panic!("declined, receiver gone: {other:?}"),
    }
    assert_eq!(mb.status().lost_reads, 0);
}

#[test]
fn an_unbounded_queue_refuses_to_leave_a_message_at_the_head() {
    let (_n, mb) = mailbox("rif-unb", Capacity::Unbounded);
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    tx.send(b"a").unwrap();
    assert!(matches!(
        rx.recv_if_until(Deadline::after(PATIENCE), |_| None::<()>),
        Err(RecvError::Unsupported(_))
    ));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"a");
}
