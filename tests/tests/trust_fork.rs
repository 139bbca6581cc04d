//! A handle inherited through `fork` must be inert in the child: the
//! child's sends and receives on it fail (they neither deliver nor take a
//! message), and dropping it detaches nothing of the parent's. Today the
//! child's drop clears the parent's attachment bits, so the parent's
//! receiver sees end of stream and its sender `Disconnected` while both
//! are alive.
//!
//! Guards defect 5 (fork) of issue 8. This file holds a single test, so
//! that the test process forks while no other test thread runs.

use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{RecvError, SendError};
use ipc_tests::ShmName;

const AFTER: u64 = 100;

#[test]
fn handles_inherited_through_fork_are_inert_in_the_child() {
    let name = ShmName::new("trust-fork");
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Bounded(8),
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    tx.send(b"before").unwrap();
    // Different start times for parent and child (10 ms clock ticks).
    std::thread::sleep(Duration::from_millis(30));

    // SAFETY: the child only uses the library and then `_exit`s; this file
    // runs one test, so no other test thread holds a lock across the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut code = 0;
        if tx.send(b"child").is_ok() {
            code |= 1;
        }
        if rx.try_recv().is_ok() {
            code |= 2;
        }
        drop(tx);
        drop(rx);
        drop(mb);
        // SAFETY: leave without running the parent's destructors or the
        // test harness in the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };

    let mut problems = vec![];
    if !libc::WIFEXITED(status) {
        problems.push(format!("child did not exit normally: status {status}"));
    } else {
        let code = libc::WEXITSTATUS(status);
        if code & 1 != 0 {
            problems.push("the child's send on its inherited sender succeeded".to_owned());
        }
        if code & 2 != 0 {
            problems
                .push("the child's try_recv on its inherited receiver took a message".to_owned());
        }
    }
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(m) if m == b"before" => {}
        other => problems.push(format!(
            "the parent's first message: {:?} (want \"before\")",
            other.map(|m| String::from_utf8_lossy(&m).into_owned())
        )),
    }
    // The parent goes on: nothing must look disconnected.
    let mut delivered = 0;
    for i in 0..AFTER {
        match tx.send(i.to_le_bytes()) {
            Ok(()) => {}
            Err(e) => {
                problems.push(format!(
                    "parent send {i} after the child left: {e:?} ({})",
                    match e {
                        SendError::Disconnected(_) =>
                            "the child's drop detached the parent's receiver",
                        _ => "unexpected",
                    }
                ));
                break;
            }
        }
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(m) if m == i.to_le_bytes() => delivered += 1,
            other => {
                problems.push(format!("parent recv {i}: {other:?}"));
                break;
            }
        }
    }
    // Nothing queued, the parent's sender alive: wait, not end of stream.
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(RecvError::Timeout) => {}
        other => problems.push(format!(
            "recv on an empty mailbox with the parent's sender alive gave {other:?} (want Timeout{})",
            if other == Err(RecvError::Disconnected) {
                ": the child's drop detached the parent's sender"
            } else {
                ""
            }
        )),
    }
    let status = mb.status();
    let live = status.peers.iter().filter(|p| p.alive).count();
    if live != 2 {
        problems.push(format!(
            "status lists {live} live attachments, want 2 (the parent's sender and receiver): {:?}",
            status.peers
        ));
    }
    drop(tx);
    match rx.recv_timeout(Duration::from_secs(10)) {
        Err(RecvError::Disconnected) => {}
        other => problems.push(format!("after the parent's sender left: {other:?}")),
    }
    assert!(
        problems.is_empty(),
        "{delivered}/{AFTER} delivered after the fork; {}",
        problems.join("; ")
    );
}
