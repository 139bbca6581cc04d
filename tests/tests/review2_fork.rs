//! Review-2 reproducer: the fork gate's counters are copied into a child.
//!
//! `before_fork` (the pthread_atfork prepare handler) increments the
//! process-wide `FORKING`, the parent and child handlers decrement it.
//! glibc runs prepare handlers without holding its atfork lock across the
//! whole fork, so two threads may fork at once: while thread C is inside
//! its fork (FORKING = 1), thread B's prepare makes it 2 and B's child is
//! copied with FORKING = 2. The child handler takes one off: the child
//! lives with FORKING = 1 for ever, and every `outside_fork` in it
//! (`LockFd::for_file` when it opens or creates any segment,
//! `LockFd::drop` when it drops an inherited handle) spins in
//! `while FORKING > 0 { yield }` for ever.
//!
//! The test forks from two threads at once; each child of the main thread
//! opens a segment and exits. A child that has not exited after 20 s is
//! hung (it is killed, by its pid, and the test fails).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::ShmName;

/// Waits for `pid` at most `limit`; false if it still runs (then it is
/// killed and reaped).
fn exits_within(pid: libc::pid_t, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return true;
        }
        if start.elapsed() > limit {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            eprintln!(
                "hung child {pid}: state and cpu ticks {:?}, wchan {wchan:?}",
                stat.rsplit_once(')').map(|(_, r)| r
                    .split_whitespace()
                    .enumerate()
                    .filter(|(i, _)| [0, 11, 12].contains(i))
                    .map(|(_, f)| f)
                    .collect::<Vec<_>>())
            );
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_child_forked_while_another_thread_forks_can_still_open_a_segment() {
    let name = ShmName::new("rv2-fork2");
    let _buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    // Installs the fork handler (the library does so at the first open).
    let _opened = SharedBuffer::open(name.as_str()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let forker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the child exits at once.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: async-signal-safe.
                    unsafe { libc::_exit(0) };
                }
                if pid > 0 {
                    // SAFETY: reap our own child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                }
            }
        })
    };
    let c_name = std::ffi::CString::new(name.as_str()).unwrap();
    let mut hung = vec![];
    let mut tried = 0;
    for _ in 0..200 {
        tried += 1;
        // SAFETY: the child opens a segment (glibc's malloc is fork-safe)
        // and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let n = c_name.to_str().unwrap();
            let code = match SharedBuffer::open(n) {
                Ok(b) => {
                    drop(b);
                    0
                }
                Err(_) => 7,
            };
            // SAFETY: async-signal-safe.
            unsafe { libc::_exit(code) };
        }
        if !exits_within(pid, Duration::from_secs(20)) {
            hung.push(pid);
            if !hung.is_empty() {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    forker.join().unwrap();
    assert!(
        hung.is_empty(),
        "{} of {tried} children forked while another thread forked hung in SharedBuffer::open \
         (spinning in outside_fork: FORKING copied as 2, left at 1): {hung:?}",
        hung.len()
    );
}
