//! Review reproducer: `Endpoint::drop` gives back claims leaked with
//! `mem::forget` (safe code) only in the queue's own segment, not in the
//! blocks of an unbounded chain. A forgotten `SlotWriter` in block 1
//! stays WRITING forever: readers stop at it ("write in progress") and
//! never reach the messages behind it, though its owner detached.

use std::time::Duration;

use ipc_core::sync::Deadline;
use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::ShmName;

#[test]
fn a_claim_forgotten_in_a_chain_block_blocks_readers_forever() {
    let name = ShmName::new("rv-forgotten-claim");
    let buf = SharedBuffer::create_unbounded(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rx = buf.consumer().unwrap();
    // Messages a block takes (its count bound, well within its bytes).
    let slots = buf.geometry().capacity as usize;
    let mut p = buf.producer().unwrap();
    for i in 0..slots {
        p.send(format!("m{i}")).unwrap();
    }
    // The main segment is full (write-once): this claim is in block 1.
    let w = p.claim(Deadline::Never).unwrap();
    std::mem::forget(w);
    drop(p);
    let mut p2 = buf.producer().unwrap();
    p2.send(b"after").unwrap();
    for i in 0..slots {
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            format!("m{i}").as_bytes()
        );
    }
    let got = rx.recv_timeout(Duration::from_secs(3));
    assert_eq!(
        got.as_deref().map_err(|e| e.to_string()),
        Ok(&b"after"[..]),
        "the message behind a forgotten claim of a detached producer"
    );
}
