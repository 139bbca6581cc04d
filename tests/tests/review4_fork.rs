//! Review 4 reproducer: a claim (`SlotWriter`) inherited through `fork` is
//! not inert in the child. `Tx::claim` and `Rx::recv_with` check
//! `Endpoint::inherited`, but `SlotWriter::commit` (→ `Tx::commit` →
//! `Ring::commit`) and `SlotWriter`'s drop (→ `Tx::abandon`) do not, and
//! the ring's ownership check cannot tell parent from child (same owner
//! index, same claim position). So a child that commits its copy publishes
//! a message in the parent's claim, and a child that merely drops its
//! copy (any scope end, `drop`, unwinding) withdraws the parent's claim:
//! either way the parent's own `commit` then fails with Corrupt ("taken
//! from its holder") and its message is lost.
//!
//! One test in this file, so that the process forks while no other test
//! thread runs.

use std::time::Duration;

use ipc_core::sync::Deadline;
use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::ShmName;

fn fork_and(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only uses the library and `_exit`s; this file
    // runs a single test, so no other thread holds a lock across the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child();
        // SAFETY: leave without the parent's destructors or the harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child status {status}");
    libc::WEXITSTATUS(status)
}

#[test]
fn a_claim_inherited_through_fork_is_inert_in_the_child() {
    let name = ShmName::new("rv4-fork-claim");
    let buf = SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity: 8,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    let mut problems = vec![];

    // 1. The child commits its copy of the parent's claim.
    let mut slot = tx.claim_len(16, Deadline::Never).unwrap();
    slot.buf()[..6].copy_from_slice(b"parent");
    let child_committed = fork_and(|| {
        // The child does not touch the bytes, it only commits (0 bytes).
        // SAFETY: the child's own copy of its memory; the original is
        // never used or dropped in the child (it `_exit`s).
        let slot = unsafe { std::ptr::read(&slot) };
        i32::from(slot.commit(0).is_ok())
    });
    if child_committed != 0 {
        problems.push("the child's commit of an inherited claim succeeded".to_owned());
    }
    if let Err(e) = slot.commit(6) {
        problems.push(format!("the parent's commit after the child's: {e:?}"));
    }
    let got: Vec<_> = std::iter::from_fn(|| rx.recv_timeout(Duration::from_millis(200)).ok())
        .take(4)
        .collect();
    if got != [b"parent".to_vec()] {
        problems.push(format!("received {got:?}, want exactly [\"parent\"]"));
    }

    // 2. The child only drops its copy (as at the end of any scope).
    let mut slot = tx.claim_len(16, Deadline::Never).unwrap();
    slot.buf()[..7].copy_from_slice(b"parent2");
    fork_and(|| {
        // SAFETY: as above.
        let slot = unsafe { std::ptr::read(&slot) };
        drop(slot);
        0
    });
    if let Err(e) = slot.commit(7) {
        problems.push(format!(
            "the parent's commit after the child dropped its copy: {e:?}"
        ));
    }
    match rx.recv_timeout(Duration::from_millis(500)) {
        Ok(m) if m == b"parent2" => {}
        other => problems.push(format!("second message: {other:?}, want \"parent2\"")),
    }
    let st = buf.status();
    if st.revoked_claims != 0 || st.abandoned_writes != 0 {
        problems.push(format!(
            "status counts {} revoked claim(s) and {} abandoned write(s), want none",
            st.revoked_claims, st.abandoned_writes
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}
