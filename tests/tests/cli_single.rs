//! The single-producer/single-consumer fast path through the real binaries:
//! a second producer or consumer is refused while the first lives, a
//! replacement gets in once the first died, and a stream arrives intact.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_tests::{cmd, run, ChildGuard, ShmName, PATIENCE};

fn tool(name: &str, args: &[&str]) -> std::process::Output {
    let mut c = cmd(name);
    c.args(args);
    run(c, PATIENCE)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create_single(name: &ShmName, capacity: &str) {
    let out = tool(
        "ipcctl",
        &[
            "create",
            name.as_str(),
            "--single",
            "--capacity",
            capacity,
            "--max-message",
            "256",
        ],
    );
    assert!(out.status.success(), "ipcctl create: {}", stderr(&out));
}

/// Waits until `ipcctl status` shows `needle`.
fn wait_for_status(name: &ShmName, needle: &str) {
    let start = Instant::now();
    loop {
        let out = tool("ipcctl", &["status", name.as_str()]);
        if String::from_utf8_lossy(&out.stdout).contains(needle) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "status never showed {needle:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn second_producer_is_refused_and_a_replacement_gets_in_after_a_kill() {
    let name = ShmName::new("single-roles");
    let n = name.as_str();
    create_single(&name, "2");
    // The first producer fills the ring and blocks, holding the role.
    let mut first = ChildGuard::new(
        cmd("producer")
            .args([
                "--segment",
                n,
                "--count",
                "100",
                "--size",
                "32",
                "--id",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn producer"),
    );
    wait_for_status(&name, "queued:         2");
    let out = tool(
        "producer",
        &["--segment", n, "--count", "1", "--size", "32"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("one producer at a time"),
        "{}",
        stderr(&out)
    );
    // Killed without detaching: its place is reaped and a replacement
    // attaches; the consumer gets what the first sent plus the
    // replacement's messages, and a second consumer is refused meanwhile.
    first.kill();
    let consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", n, "--verify", "--producers", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    );
    wait_for_status(&name, "consumer  alive");
    let out = tool("consumer", &["--segment", n, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("one consumer at a time"),
        "{}",
        stderr(&out)
    );
    let out = tool(
        "producer",
        &["--segment", n, "--count", "5", "--size", "32", "--id", "2"],
    );
    assert!(
        out.status.success(),
        "replacement producer: {}",
        stderr(&out)
    );
    let out = consumer.output_timeout(PATIENCE);
    let err = stderr(&out);
    assert!(out.status.success(), "consumer: {err}");
    // The first producer's messages that were queued when it died (at
    // least the 2 that filled the ring), then all 5 of the replacement's.
    let received: u64 = err
        .split("received=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {err}"));
    assert!(received >= 7, "{err}");
    assert!(
        err.contains("corrupt=0 out_of_order=0 duplicate=0 producers=2"),
        "{err}"
    );
}

#[test]
fn stream_through_a_single_buffer_arrives_intact() {
    let name = ShmName::new("single-stream");
    let n = name.as_str();
    create_single(&name, "64");
    let consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", n, "--verify"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    );
    let out = tool(
        "producer",
        &[
            "--segment",
            n,
            "--count",
            "100000",
            "--size",
            "64",
            "--id",
            "7",
        ],
    );
    assert!(out.status.success(), "producer: {}", stderr(&out));
    let out = consumer.output_timeout(PATIENCE);
    let err = stderr(&out);
    assert!(out.status.success(), "consumer: {err}");
    assert!(
        err.contains("received=100000 corrupt=0 out_of_order=0 duplicate=0 producers=1"),
        "{err}"
    );
}
