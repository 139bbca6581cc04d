//! Review-2 reproducers for the command-line tools.
//!
//! * The consumer's "stream may be incomplete" check compares the
//!   segment's `dead_producers` counter at attach and at end of stream,
//!   but its first snapshot (`rx.status()`) reaps first. A producer that
//!   died before the consumer attached (the named-pipe use the README
//!   describes: "a producer fills the buffer and waits for a consumer") is
//!   counted inside the snapshot, so the consumer drains its partial
//!   stream and exits 0 without a warning.
//! * A failed write to stdout or stderr makes `println!`/`eprintln!` panic:
//!   exit code 101, which README does not know (0/1/2/3/130).
//! * `ipcctl create` interrupted by SIGINT finishes creating the segment,
//!   keeps it, and exits 130 ("interrupted"): a script that cleans up on
//!   failure leaves a reserved segment behind, one that retries finds
//!   "already exists".

use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_tests::{cmd, run, ChildGuard, ShmName, PATIENCE};

fn ipcctl(args: &[&str]) -> std::process::Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

#[test]
fn a_consumer_reading_what_a_killed_producer_left_warns_and_exits_1() {
    let name = ShmName::new("rv2-late");
    let out = ipcctl(&[
        "create",
        name.as_str(),
        "--capacity",
        "4",
        "--max-message",
        "64",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut producer = ChildGuard::new(
        cmd("producer")
            .args(["--segment", name.as_str(), "--count", "100", "--size", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait (bounded) until the producer has filled the buffer and blocks.
    let start = Instant::now();
    loop {
        let st = ipc_core::admin::inspect(name.as_str()).unwrap();
        if st.len == 4 && st.live(ipc_core::Role::Producer) == 1 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the producer never filled the buffer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    producer.kill(); // SIGKILL by its pid, reaped
    let mut c = cmd("consumer");
    c.args(["--segment", name.as_str(), "--verify"]);
    let out = run(c, PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && stderr.contains("incomplete"),
        "4 of 100 messages arrived from a producer killed mid-stream, yet: exit {:?}, stderr:\n{stderr}",
        out.status.code()
    );
}

#[test]
fn ipcctl_list_with_stdout_on_a_full_device_exits_1_not_101() {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut c = cmd("ipcctl");
    c.arg("list").stdout(f);
    let out = c.stderr(Stdio::piped()).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(1)),
        "ipcctl list > /dev/full: exit {:?} (documented: 0, 1, 2, 3, 130), stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

#[test]
fn producer_with_stderr_on_a_full_device_exits_0_or_1_not_101() {
    let name = ShmName::new("rv2-full");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let st = cmd("producer")
        .args([
            "--segment",
            name.as_str(),
            "--create",
            "--capacity",
            "4",
            "--max-message",
            "64",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .status()
        .unwrap();
    assert!(
        matches!(st.code(), Some(0) | Some(1)),
        "producer < /dev/null 2> /dev/full: exit {:?} (a panic in the summary line)",
        st.code()
    );
}

#[test]
fn ipcctl_create_interrupted_either_removes_the_segment_or_reports_success() {
    let name = ShmName::new("rv2-intr");
    // 16384 slots of 64 KiB: 1 GiB to reserve, long enough to interrupt.
    let mut child = ChildGuard::new(
        cmd("ipcctl")
            .args([
                "create",
                name.as_str(),
                "--capacity",
                "16384",
                "--max-message",
                "64K",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !name.path().exists() {
        assert!(start.elapsed() < PATIENCE, "create never started");
        std::thread::yield_now();
    }
    // SAFETY: kill(2) on the pid of our own, unreaped child.
    unsafe { libc::kill(child.pid() as i32, libc::SIGINT) };
    let st = child
        .wait_timeout(PATIENCE)
        .expect("ipcctl create did not end");
    let exists = name.path().exists();
    assert!(
        !(st.code() == Some(130) && exists),
        "ipcctl create exited 130 (interrupted) but left the 1 GiB segment {name} in /dev/shm"
    );
}
