//! Review-2 reproducer: a sender that needs the next block of an
//! unbounded chain while another live sender is still creating it (its
//! creator lock held: a 1 GiB block for 64 MiB messages, a loaded
//! machine, a SIGSTOP) waits INIT_TIMEOUT (2 s) in `open_block`, gets
//! `NotInitialized`, and `grow` turns that into `SendError::NoSpace`
//! ("cannot add block 1 to the chain") although /dev/shm has room and the
//! block is on its way. The test plays the slow creator: it makes
//! `NAME.b1` empty and holds its flock, as `Segment::create` does between
//! shm_open and publishing.

use std::os::fd::AsRawFd;
use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::SendError;
use ipc_tests::ShmName;

#[test]
fn a_block_still_being_created_by_a_live_sender_is_not_no_space() {
    let name = ShmName::new("rv2-slowblk");
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Unbounded,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let _rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    for i in 0..1024u32 {
        tx.send(i.to_le_bytes()).unwrap();
    }
    // The other sender, alive and still setting block 1 up.
    let block = std::fs::File::create(format!("/dev/shm/{}.b1", name.as_str())).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(block.as_raw_fd(), libc::LOCK_EX) }, 0);
    let releaser = std::thread::spawn(move || {
        // Hang limit / scenario length, not a timing assertion: the
        // "creator" gives up after 5 s (the file stays empty, unlocked).
        std::thread::sleep(Duration::from_secs(5));
        drop(block);
    });
    let r = tx.send(1024u32.to_le_bytes());
    releaser.join().unwrap();
    assert!(
        !matches!(r, Err(SendError::NoSpace(..))),
        "send while another sender creates the next block: {r:?}"
    );
}
