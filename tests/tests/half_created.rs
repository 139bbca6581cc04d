//! A segment whose creator died before publishing it (killed while
//! reserving its pages, say) no longer blocks its name: creating it again
//! replaces it (before: "already exists" for ever). A segment still being
//! made by a live creator (its lock held), or a published one, is never
//! replaced.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::Duration;

use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::CreateError;
use ipc_tests::ShmName;

fn config() -> BufferConfig {
    BufferConfig {
        capacity: 4,
        max_message: 64,
        ..Default::default()
    }
}

/// What a creator killed mid-creation leaves: a sized file, magic zero.
fn plant_unpublished(name: &ShmName) -> std::fs::File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(name.path())
        .unwrap();
    f.set_len(64 * 1024).unwrap();
    f
}

fn already_exists(r: Result<SharedBuffer, CreateError>) -> bool {
    matches!(
        r,
        Err(CreateError::Segment(ipc_core::SegmentError::AlreadyExists(
            _
        )))
    )
}

#[test]
fn creating_over_a_dead_creators_unpublished_segment_replaces_it() {
    let name = ShmName::new("half");
    drop(plant_unpublished(&name));
    // A live creator takes the lock microseconds after creating the file;
    // an unlocked file counts as abandoned once it is a second old.
    std::thread::sleep(Duration::from_millis(1100));
    let buf = SharedBuffer::create(name.as_str(), &config()).expect("replaced");
    let mut tx = buf.producer().unwrap();
    tx.send(b"works").unwrap();
    assert_eq!(buf.consumer().unwrap().recv().unwrap(), b"works");
}

#[test]
fn a_segment_being_made_by_a_live_creator_is_not_replaced() {
    let name = ShmName::new("half-live");
    let f = plant_unpublished(&name);
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(already_exists(SharedBuffer::create(
        name.as_str(),
        &config()
    )));
    drop(f);
}

#[test]
fn a_published_segment_is_never_replaced() {
    let name = ShmName::new("half-pub");
    let _buf = SharedBuffer::create(name.as_str(), &config()).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(already_exists(SharedBuffer::create(
        name.as_str(),
        &config()
    )));
}
