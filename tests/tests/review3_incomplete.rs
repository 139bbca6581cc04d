//! Review-3 reproducers: the consumer's "stream may be incomplete" verdict
//! (`Counters::stream_incomplete`, set when a producer is found dead,
//! cleared when a producer attaches alone to an empty queue).
//!
//! 1. False negative, deterministic: `consumer --producers 2`. Producer 1
//!    sends "a" (received) and is SIGKILLed; it is found dead (flag set);
//!    the queue is empty, so producer 2 attaching alone clears the flag;
//!    producer 2 sends "b" and detaches. The consumer ends its stream
//!    ("a", "b": producer 1's part may be incomplete) with exit 0 and no
//!    warning. The flag is a segment-wide "current stream" bit, but the
//!    consumer's stream began before the clear.
//! 2. False negative: `consumer --count N` never checks at all: a stream
//!    holding a killed producer's partial output ends with exit 0.
//! 3. Verdict depends on who happened to reap: after a producer is killed
//!    with nothing queued, a clean rerun (new producer sends everything,
//!    then a consumer drains it) exits 1 "may be incomplete" unless someone
//!    (e.g. `ipcctl status`) reaped the dead producer before the new one
//!    attached; then the very same history exits 0. The attach-time clear
//!    counts the dead producer's roster bit as a live producer.

use std::io::{Read, Write};
use std::process::{Child, Stdio};

use ipc_core::buffer::SharedBuffer;
use ipc_core::Role;
use ipc_tests::{cmd, run, wait_until, ChildGuard, ShmName, PATIENCE};

fn ipcctl(args: &[&str]) -> std::process::Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

fn create(name: &ShmName) {
    let out = ipcctl(&[
        "create",
        name.as_str(),
        "--capacity",
        "8",
        "--max-message",
        "64",
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// A producer reading its stdin (a pipe we hold).
fn stdin_producer(name: &ShmName) -> ChildGuard {
    ChildGuard::new(
        cmd("producer")
            .args(["--segment", name.as_str()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn child(g: &mut ChildGuard) -> &mut Child {
    g.0.as_mut().unwrap()
}

/// Runs a producer that sends `data` (one read, one message) and detaches.
fn producer_sends(name: &ShmName, data: &[u8]) {
    let mut p = ChildGuard::new(
        cmd("producer")
            .args(["--segment", name.as_str()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    {
        let mut stdin = child(&mut p).stdin.take().unwrap();
        stdin.write_all(data).unwrap();
    }
    let out = p.output_timeout(PATIENCE);
    assert!(out.status.success(), "producer: {out:?}");
}

/// Reads the consumer's stdout until `want` bytes in total arrived.
fn read_until(out: &mut impl Read, got: &mut Vec<u8>, want: usize) {
    let mut buf = [0u8; 64];
    while got.len() < want {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "consumer stdout closed early: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Kills the producer, then waits until the segment has found it dead
/// (SharedBuffer::status reaps) and flagged the stream.
fn kill_and_reap(name: &ShmName, p: &mut ChildGuard) {
    p.kill();
    let buf = SharedBuffer::open(name.as_str()).unwrap();
    wait_until("the killed producer is reaped", || {
        buf.status().dead_producers == 1
    });
    assert!(buf.status().stream_incomplete, "sanity: the flag is set");
}

#[test]
fn a_consumer_waiting_for_two_producers_reports_the_first_ones_death() {
    let name = ShmName::new("rv3-twoprod");
    create(&name);
    let mut consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", name.as_str(), "--producers", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut cout = child(&mut consumer).stdout.take().unwrap();
    let mut got = Vec::new();

    let mut p1 = stdin_producer(&name);
    child(&mut p1)
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"a")
        .unwrap();
    read_until(&mut cout, &mut got, 1);
    // Producer 1 dies mid-stream (it had more to say).
    kill_and_reap(&name, &mut p1);

    // Producer 2 attaches alone to the (drained) queue, sends, detaches.
    producer_sends(&name, b"b");
    read_until(&mut cout, &mut got, 2);
    let out = consumer.output_timeout(PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(got, b"ab");
    assert!(
        out.status.code() == Some(1) && stderr.contains("may be incomplete"),
        "a consumer whose stream held a SIGKILLed producer's output ends with {:?} and no \
         warning (producer 2 attaching alone to the drained queue cleared the flag):\n{stderr}",
        out.status
    );
}

#[test]
fn a_consumer_with_count_reports_a_killed_producer() {
    let name = ShmName::new("rv3-count");
    create(&name);
    let mut consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", name.as_str(), "--count", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut cout = child(&mut consumer).stdout.take().unwrap();
    let mut got = Vec::new();
    let mut p1 = stdin_producer(&name);
    // A second, live producer keeps the consumer's stream open.
    let mut p2 = stdin_producer(&name);
    let buf = SharedBuffer::open(name.as_str()).unwrap();
    wait_until("both producers attached", || {
        buf.status().live(Role::Producer) == 2
    });
    child(&mut p1)
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"a")
        .unwrap();
    read_until(&mut cout, &mut got, 1);
    kill_and_reap(&name, &mut p1);
    child(&mut p2)
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"b")
        .unwrap();
    read_until(&mut cout, &mut got, 2);
    drop(child(&mut p2).stdin.take());
    let out = consumer.output_timeout(PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may be incomplete"),
        "consumer --count 2 received a SIGKILLed producer's partial output and says nothing \
         ({:?}):\n{stderr}",
        out.status
    );
}

/// A producer attaches and is SIGKILLed with nothing sent; `reap_between`
/// says whether anyone looks at the segment (and so reaps it) before the
/// rerun; then a new producer sends "x" and detaches, and a consumer
/// drains it. Returns the consumer's exit code and stderr.
fn rerun_after_a_kill(tag: &str, reap_between: bool) -> (Option<i32>, String) {
    let name = ShmName::new(tag);
    create(&name);
    let mut p0 = stdin_producer(&name);
    {
        let buf = SharedBuffer::open(name.as_str()).unwrap();
        wait_until("producer 0 attached", || {
            buf.status().live(Role::Producer) == 1
        });
    }
    p0.kill();
    if reap_between {
        let out = ipcctl(&["status", name.as_str()]);
        assert!(out.status.success(), "{out:?}");
    }
    producer_sends(&name, b"x");
    let mut c = cmd("consumer");
    c.args(["--segment", name.as_str()]);
    let out = run(c, PATIENCE);
    assert_eq!(out.stdout, b"x");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_verdict_on_a_clean_rerun_does_not_depend_on_who_reaped() {
    let (reaped, _) = rerun_after_a_kill("rv3-rerun-a", true);
    let (unreaped, stderr) = rerun_after_a_kill("rv3-rerun-b", false);
    assert_eq!(
        reaped, unreaped,
        "same history (producer killed with nothing queued, then a complete stream): exit \
         {reaped:?} if `ipcctl status` ran in between, {unreaped:?} if not:\n{stderr}"
    );
}
