//! Review reproducer: the fork handler renews only descriptors already
//! registered in `LOCK_FDS`. A segment's descriptor is opened by
//! `shm_open` in `Segment::open` but registered only at the end of
//! `Queue::assemble` (`LockFd::new`). A fork from another thread in that
//! window gives the child the parent's very open file description,
//! unrenewed, and owned by nobody in the child (the Segment being built
//! lives on a thread the child does not have). The parent then takes its
//! liveness locks on that description; if the parent dies, the child keeps
//! them held, and the parent's attachments look alive forever.
//!
//! Evidence: kcmp(KCMP_FILE) says a child's descriptor and one of the
//! parent's liveness descriptors are the same open file description.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::ShmName;

const KCMP_FILE: libc::c_int = 0;

fn shm_fds(pid: u32, name: &str) -> Vec<i32> {
    let dir = format!("/proc/{pid}/fd");
    let want = format!("/dev/shm/{name}");
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if let Ok(link) = std::fs::read_link(e.path()) {
                if link.to_string_lossy() == want {
                    if let Ok(n) = e.file_name().to_string_lossy().parse() {
                        out.push(n);
                    }
                }
            }
        }
    }
    out
}

fn same_description(a: u32, fa: i32, b: u32, fb: i32) -> bool {
    // SAFETY: kcmp takes no pointers for KCMP_FILE.
    unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::pid_t,
            b as libc::pid_t,
            KCMP_FILE,
            fa,
            fb,
        ) == 0
    }
}

#[test]
fn a_fork_while_another_thread_opens_a_segment_shares_the_parents_liveness_description() {
    let name = ShmName::new("rv-fork-race");
    let _buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let me = std::process::id();
    let stop = Arc::new(AtomicBool::new(false));
    let opener = {
        let stop = stop.clone();
        let n = name.as_str().to_owned();
        std::thread::spawn(move || {
            let mut kept = vec![];
            while !stop.load(Ordering::Relaxed) && kept.len() < 600 {
                kept.push(SharedBuffer::open(&n).unwrap());
            }
            kept
        })
    };
    // Each child says, by a byte on this pipe, that `fork` has returned in
    // it: its fork handler has renewed every descriptor it will renew.
    // Looked at earlier, a child still renewing (descheduled part-way on a
    // loaded machine) shows the descriptors it has not reached yet.
    let mut ready = [0; 2];
    // SAFETY: pipe fills the two-element array.
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    let mut children = vec![];
    for _ in 0..100 {
        // SAFETY: the child only calls async-signal-safe functions.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: async-signal-safe in the child of a threaded parent;
            // one byte from a live buffer.
            unsafe {
                libc::write(ready[1], [1u8].as_ptr().cast(), 1);
                libc::pause();
                libc::_exit(0);
            }
        }
        children.push(pid as u32);
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    let kept = opener.join().unwrap();
    let mut told = 0;
    while told < children.len() {
        let mut p = libc::pollfd {
            fd: ready[0],
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; then a read into a live buffer.
        let n = unsafe {
            assert!(
                libc::poll(&mut p, 1, 30_000) > 0,
                "children never said ready"
            );
            let mut buf = [0u8; 128];
            libc::read(ready[0], buf.as_mut_ptr().cast(), buf.len())
        };
        assert!(n > 0, "reading the children's bytes");
        told += n as usize;
    }
    let parent_fds = shm_fds(me, name.as_str());
    let mut shared = vec![];
    for &c in &children {
        // An unrenewed descriptor keeps its number in the child.
        for cf in shm_fds(c, name.as_str()) {
            if parent_fds.contains(&cf) && same_description(me, cf, c, cf) {
                shared.push((c, cf, cf));
            }
        }
    }
    for &c in &children {
        // SAFETY: kill and reap children this test forked.
        unsafe {
            libc::kill(c as i32, libc::SIGKILL);
            libc::waitpid(c as i32, std::ptr::null_mut(), 0);
        }
    }
    drop(kept);
    // SAFETY: closing the pipe this test made.
    unsafe {
        libc::close(ready[0]);
        libc::close(ready[1]);
    }
    assert!(
        shared.is_empty(),
        "{} descriptors of {} forked children are one of the parent's liveness \
         descriptions (child pid, child fd, parent fd): {:?}",
        shared.len(),
        children.len(),
        &shared[..shared.len().min(5)]
    );
}
