//! Review 6: reproducers for defects of the batch APIs and of
//! `Sender::claim_len`. Each test fails on the code it was written against.

use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::sync::Deadline;
use ipc_core::{Receiver, Sender};
use ipc_tests::ShmName;

fn cfg(capacity: u32) -> BufferConfig {
    BufferConfig {
        capacity,
        max_message: 64,
        ..Default::default()
    }
}

/// Every flavor with a slot ring or a packed ring: (what, sender, receiver, keep-alive).
fn all_flavors(tag: &str, capacity: u32) -> Vec<(String, Sender, Receiver, ShmName)> {
    let mut out = Vec::new();
    let n = ShmName::new(&format!("{tag}-b"));
    let b = SharedBuffer::create(n.as_str(), &cfg(capacity)).unwrap();
    out.push((
        "buffer(create)".into(),
        b.producer().unwrap(),
        b.consumer().unwrap(),
        n,
    ));
    let n = ShmName::new(&format!("{tag}-s"));
    let b = SharedBuffer::create_single(n.as_str(), &cfg(capacity)).unwrap();
    out.push((
        "buffer(create_single)".into(),
        b.producer().unwrap(),
        b.consumer().unwrap(),
        n,
    ));
    let n = ShmName::new(&format!("{tag}-u"));
    let b = SharedBuffer::create_unbounded(n.as_str(), &cfg(capacity)).unwrap();
    out.push((
        "buffer(create_unbounded)".into(),
        b.producer().unwrap(),
        b.consumer().unwrap(),
        n,
    ));
    for (what, c) in [
        ("mailbox(Bounded)", Capacity::Bounded(capacity)),
        ("mailbox(Unbounded)", Capacity::Unbounded),
    ] {
        let n = ShmName::new(&format!("{tag}-m"));
        let m = Mailbox::create(
            n.as_str(),
            &MailboxConfig {
                capacity: c,
                max_message: 64,
                ..Default::default()
            },
        )
        .unwrap();
        out.push((what.into(), m.sender().unwrap(), m.receiver().unwrap(), n));
    }
    out
}

/// `claim_len` says "the buffer is `len` long" and `SlotWriter::buf` says
/// "as long as the claim asked for"; on slot rings it is `max_message`.
#[test]
fn claim_len_buf_is_len_long_on_every_flavor() {
    let mut bad = Vec::new();
    for (what, mut tx, _rx, _n) in all_flavors("r6-claimlen", 4) {
        let mut slot = tx.claim_len(5, Deadline::Never).unwrap();
        let got = slot.buf().len();
        if got != 5 {
            bad.push(format!("{what}: claim_len(5).buf().len() == {got}"));
        }
        drop(slot);
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// `SlotWriter::commit` documents a panic if `len` exceeds the claim's
/// length; on slot rings a commit of 40 bytes on a claim of 5 is accepted
/// and 40 bytes are delivered.
#[test]
fn commit_longer_than_claim_len_panics_on_every_flavor() {
    let mut bad = Vec::new();
    for (what, mut tx, mut rx, _n) in all_flavors("r6-overcommit", 4) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let slot = tx.claim_len(5, Deadline::Never).unwrap();
            slot.commit(40)
        }));
        if r.is_ok() {
            let got = rx.try_recv().map(|m| m.len());
            bad.push(format!(
                "{what}: commit(40) of a claim_len(5) did not panic; receiver got {got:?}"
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// `recv_batch(max, ..)` "takes every message queued, up to `max`": with
/// `max` 0 it takes (and consumes) one message.
#[test]
fn recv_batch_with_max_zero_takes_no_message() {
    let mut bad = Vec::new();
    for (what, mut tx, mut rx, _n) in all_flavors("r6-max0", 4) {
        tx.send(b"only").unwrap();
        let mut seen = Vec::new();
        let r = rx.try_recv_batch(0, |m| seen.push(m.to_vec()));
        if matches!(r, Ok(n) if n > 0) || !seen.is_empty() {
            let left = rx.len();
            bad.push(format!(
                "{what}: try_recv_batch(0) returned {r:?}, handed {} message(s) to f, {left} left queued",
                seen.len()
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
