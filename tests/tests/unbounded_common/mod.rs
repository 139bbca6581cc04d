//! Helpers shared by the review tests of unbounded queues: a mailbox,
//! tagged messages, and the queue's files in /dev/shm.

#![allow(dead_code)] // each test file uses some of them

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_tests::ShmName;

/// An unbounded mailbox for messages of up to 64 bytes.
pub fn unbounded(name: &ShmName) -> Mailbox {
    unbounded_for(name, 64)
}

/// An unbounded mailbox for messages of up to `max_message` bytes.
pub fn unbounded_for(name: &ShmName, max_message: u32) -> Mailbox {
    Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Unbounded,
            max_message,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Ends the stream: `tx` dropped, `rx` finds it ended (after `patience`
/// at most), and only the main segment of `name` is left in /dev/shm.
pub fn end_stream(
    name: &ShmName,
    tx: ipc_core::Sender,
    mut rx: ipc_core::Receiver,
    patience: std::time::Duration,
) {
    drop(tx);
    assert!(matches!(
        rx.recv_timeout(patience),
        Err(ipc_core::RecvError::Disconnected)
    ));
    drop(rx);
    assert_eq!(files_of(name), vec![name.as_str().to_owned()]);
}

/// `[id u32][seq u64]`.
pub fn msg(id: u32, seq: u64) -> Vec<u8> {
    [&id.to_le_bytes()[..], &seq.to_le_bytes()[..]].concat()
}

/// The (id, seq) of a [`msg`].
pub fn parse(m: &[u8]) -> (u32, u64) {
    assert_eq!(m.len(), 12, "not a test message: {m:?}");
    (
        u32::from_le_bytes(m[..4].try_into().unwrap()),
        u64::from_le_bytes(m[4..].try_into().unwrap()),
    )
}

/// Files of `name` in /dev/shm whose names start with `prefix` after it
/// (or `name` itself, with `with_main`), sorted.
fn shm_files(name: &ShmName, suffix: &str, with_main: bool) -> Vec<String> {
    let prefix = format!("{}{suffix}", name.as_str());
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| (with_main && n == name.as_str()) || n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

/// Files of `name`'s chain (`NAME.b*`) now in /dev/shm.
pub fn chain_files(name: &ShmName) -> Vec<String> {
    shm_files(name, ".b", false)
}

/// Files of `name` (`NAME` and `NAME.*`) now in /dev/shm.
pub fn files_of(name: &ShmName) -> Vec<String> {
    shm_files(name, ".", true)
}
