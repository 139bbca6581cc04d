//! The one-step send and receive (`Sender::send`, `Receiver::recv_into` on
//! a bounded ring) against the general path, where shared memory was
//! scribbled: the same errors, and the same counters.

use std::fs::OpenOptions;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;

use ipc_core::layout::{Cursor, Header};
use ipc_core::{BufferConfig, Deadline, RecvError, SendError, SharedBuffer};
use ipc_tests::ShmName;

/// A bit no lock word has.
const NO_LOCK: u64 = 1 << 20;

fn poke(name: &ShmName, off: usize, v: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    f.write_all_at(&v.to_le_bytes(), off as u64).unwrap();
}

/// Review of 55d93ac: a lock word scribbled into no lock made each
/// one-step send and receive count a revoked claim (the general path
/// reports the same error and counts nothing: no claim was taken away).
#[test]
fn a_scribbled_lock_word_is_not_counted_as_a_revoked_claim() {
    let name = ShmName::new("one-step-lock");
    let buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 16,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!buf.is_single());
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    let write_lock = offset_of!(Header, tail) + offset_of!(Cursor, lock);
    let read_lock = offset_of!(Header, head) + offset_of!(Cursor, lock);

    poke(&name, write_lock, NO_LOCK);
    // Tagged: the general path.
    let general = tx.send_tagged_batch_until([(7u64, &b"x"[..])], Deadline::Now);
    assert!(
        matches!(general, Err(ref e) if matches!(e.error, SendError::Corrupt(..))),
        "{general:?}"
    );
    let after_general = buf.status().revoked_claims;
    let fast = tx.try_send(&b"x"[..]);
    assert!(matches!(fast, Err(SendError::Corrupt(..))), "{fast:?}");
    let after_fast = buf.status().revoked_claims;
    poke(&name, write_lock, 0);
    tx.try_send(&b"queued"[..]).unwrap();

    poke(&name, read_lock, NO_LOCK);
    let general = rx.recv_with_until(Deadline::Now, |b| b.len());
    assert!(matches!(general, Err(RecvError::Corrupt(_))), "{general:?}");
    let after_general_recv = buf.status().revoked_claims;
    let mut out = [0u8; 64];
    let fast = rx.recv_into(&mut out, Deadline::Now);
    assert!(matches!(fast, Err(RecvError::Corrupt(_))), "{fast:?}");
    let after_fast_recv = buf.status().revoked_claims;
    poke(&name, read_lock, 0);
    assert_eq!(
        (
            after_general,
            after_fast,
            after_general_recv,
            after_fast_recv
        ),
        (0, 0, 0, 0),
        "no claim was revoked: the lock word was scribbled"
    );
    assert_eq!(rx.recv_into(&mut out, Deadline::Now).unwrap(), 6);
    drop((tx, rx));
    let _ = SharedBuffer::unlink(name.as_str());
}
