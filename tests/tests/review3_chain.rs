//! Review-3 reproducer: "no absolute limit on block indices" (review-2
//! fixes) is not so. Chain indices are u64 and only ever grow (every
//! block is written once), but `Queue::create_block` still turns the index
//! into a `u32` (`Header::block_index`): the 2^32nd block cannot be made,
//! and from then on every send fails ("chain block 4294967296 out of
//! range"): the queue is dead for good. With capacity 1 (allowed by the
//! API) that is 2^32 messages over the queue's life; with the CLI's 16-slot
//! minimum, 6.9e10. The test starts from the state such a queue reaches
//! (head = tail = 2^32 - 1, that block drained and retired), as
//! review2_chain.rs does for 2^24; the control at block 5 is there.

use std::fs::OpenOptions;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ipc_core::layout::{Chain, Header};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_tests::ShmName;

fn write_u64(name: &ShmName, offset: usize, value: u64) {
    let file = OpenOptions::new().write(true).open(name.path()).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset as u64)
        .unwrap();
}

#[test]
fn an_unbounded_queue_keeps_working_after_its_2_pow_32nd_block() {
    let name = ShmName::new("rv3-chain32");
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Unbounded,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let k = u64::from(u32::MAX);
    write_u64(
        &name,
        offset_of!(Header, chain) + offset_of!(Chain, head_block),
        k,
    );
    write_u64(
        &name,
        offset_of!(Header, chain) + offset_of!(Chain, tail_block),
        k,
    );
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    for i in 0..3000u32 {
        tx.send(i.to_le_bytes())
            .unwrap_or_else(|e| panic!("send {i} at chain block 2^32 - 1: {e}"));
        let got = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(got, i.to_le_bytes());
    }
}
