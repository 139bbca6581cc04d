//! Review reproducer: the fork handler renews the liveness *descriptor*,
//! but a forked child also inherits the parent's *mapping* of the segment,
//! and a shared mapping holds a reference to the open file description it
//! was made from (vma->vm_file). OFD locks are dropped only when the last
//! reference to the description goes, so every forked child that keeps
//! the inherited mapping keeps the parent's liveness locks: a parent
//! killed with SIGKILL stays "alive" for as long as such a child lives.
//! (The control case: a child that drops its inherited handles, and with
//! them the mapping, does not keep the parent alive.)

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_core::{BufferConfig, RecvError, Role, SharedBuffer};
use ipc_tests::{ChildGuard, ShmName};

/// Returns (live producers after the peer was killed, the consumer's
/// verdict on an empty buffer) with the peer's forked child still alive.
fn killed_parent_with_child(mode: &str) -> (usize, Result<Vec<u8>, RecvError>) {
    let name = ShmName::new(&format!("rv-fork-map-{mode}"));
    let buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rx = buf.consumer().unwrap();
    let mut peer = ChildGuard::new(
        Command::new(ipc_tests::bin("review-peer"))
            .args(["fork-hold", name.as_str(), mode])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = peer.0.as_mut().unwrap().stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let child: i32 = lines
        .next()
        .unwrap()
        .unwrap()
        .trim_start_matches("child=")
        .parse()
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    assert_eq!(buf.status().live(Role::Producer), 1);
    peer.kill(); // SIGKILL and reap: the producer process is gone
                 // The child renews its inherited descriptors in its fork handler, which
                 // may run a moment after the parent printed "ready": look for a while
                 // (bounded) before calling the producer alive.
    let mut live = buf.status().live(Role::Producer);
    for _ in 0..300 {
        if live == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        live = buf.status().live(Role::Producer);
    }
    // Generous: a dead producer must be noticed within ~100 ms.
    let verdict = rx.recv_timeout(Duration::from_secs(3));
    // SAFETY: the peer we started forked it; it only pauses.
    unsafe { libc::kill(child, libc::SIGKILL) };
    (live, verdict)
}

#[test]
fn a_killed_producer_stays_alive_while_its_forked_child_keeps_the_mapping() {
    let (live, verdict) = killed_parent_with_child("keep");
    assert!(
        live == 0 && verdict == Err(RecvError::Disconnected),
        "producer process SIGKILLed, its forked child alive: {live} live producer(s), \
         consumer got {verdict:?} instead of Disconnected"
    );
}

#[test]
fn control_a_child_that_dropped_its_inherited_handles_does_not_keep_the_parent() {
    let (live, verdict) = killed_parent_with_child("drop");
    assert_eq!(live, 0);
    assert_eq!(verdict, Err(RecvError::Disconnected));
}
