//! A process that forks after using the library: the child is a new
//! process, with its own pid and start time and a new address space (not
//! registered for membarrier), whatever the parent had cached. Before the
//! fix, a forked producer judged its own attachment dead (its parent's
//! start time was cached) and reaped itself, so the consumer saw end of
//! stream early.
//!
//! This file holds a single test, so that the test process forks while no
//! other test thread runs.

use std::time::Duration;

use ipc_core::{BufferConfig, RecvError, SharedBuffer};
use ipc_tests::ShmName;

const MESSAGES: u64 = 300;

#[test]
fn a_forked_producer_is_its_own_process() {
    let name = ShmName::new("fork");
    let buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rx = buf.consumer().unwrap();
    rx.set_min_producers(1);
    // Fill the parent's caches: status reaps, which checks our own entry.
    assert_eq!(buf.status().peers.len(), 1);
    // Start times count clock ticks (10 ms): fork a few ticks after this
    // process started, so that the child's start time differs.
    std::thread::sleep(Duration::from_millis(50));

    // SAFETY: the child only uses the library and then `_exit`s; this file
    // runs one test, so no other test thread holds a lock across the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = (|| {
            let mut tx = buf.producer().ok()?;
            for i in 0..MESSAGES {
                // The ring holds 4: the child blocks, and while blocked it
                // looks for dead peers, itself among the attached.
                tx.send_timeout(i.to_le_bytes(), Duration::from_secs(20))
                    .ok()?;
                if i == MESSAGES / 2 {
                    // Pause with the ring drained: the consumer must keep
                    // waiting for a producer that is alive.
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            Some(())
        })()
        .map_or(1, |()| 0);
        // SAFETY: leave without running the parent's destructors or the
        // test harness in the child.
        unsafe { libc::_exit(code) };
    }

    // Let the child block on the full ring for several liveness periods.
    std::thread::sleep(Duration::from_millis(350));
    let mut got = 0u64;
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(m) => {
                assert_eq!(m, got.to_le_bytes(), "in order, none missing");
                got += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("after {got} messages: {e}"),
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(got, MESSAGES, "end of stream came early");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
}
