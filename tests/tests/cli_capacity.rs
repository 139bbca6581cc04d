//! Bounded capacity through the real binaries: with no consumer a producer
//! puts exactly `capacity` messages and then blocks; it completes once a
//! consumer starts.

use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_tests::{cmd, run, wait_until, ChildGuard, ShmName, PATIENCE};

fn ipcctl(args: &[&str]) -> std::process::Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

fn create(name: &ShmName, capacity: u32) {
    let out = ipcctl(&["create", name.as_str(), "--capacity", &capacity.to_string()]);
    assert!(
        out.status.success(),
        "ipcctl create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of `key:` in `ipcctl status NAME`.
fn status_field(name: &ShmName, key: &str) -> String {
    let out = ipcctl(&["status", name.as_str()]);
    assert!(
        out.status.success(),
        "ipcctl status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key:?} in status:\n{text}"))
        .trim()
        .to_owned()
}

fn synthetic_producer(name: &ShmName, count: u32, extra: &[&str]) -> Command {
    let mut c = cmd("producer");
    c.args(["--segment", name.as_str(), "--count", &count.to_string()])
        .args(["--size", "32", "--id", "1"])
        .args(extra);
    c
}

/// Review of 18bc2f5 (synthetic messages sent in batches): the summary a
/// producer prints after a failure counts the messages of the batch that
/// went in before it (it said 0 where 10 were queued).
#[test]
fn a_producer_that_times_out_counts_what_went_in() {
    let name = ShmName::new("partial");
    create(&name, 10);
    let out = run(
        synthetic_producer(&name, 100, &["--timeout", "0.3"]),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a full buffer must end it:\n{stderr}"
    );
    assert_eq!(status_field(&name, "queued"), "10");
    assert!(
        stderr.contains("producer: 10 messages, 320 bytes"),
        "10 messages went in, and the summary must say so:\n{stderr}"
    );
}

#[test]
fn producer_without_consumer_fills_capacity_then_times_out() {
    // 4 is a power of two (4 slots); 5 and 1 are not ring sizes (8 and 2
    // slots), so they check the logical capacity, not the ring's.
    for capacity in [4u32, 5, 1] {
        let name = ShmName::new("full");
        create(&name, capacity);
        let out = run(synthetic_producer(&name, 10, &["--timeout", "1"]), PATIENCE);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "capacity {capacity}: a producer facing a full buffer must exit 1:\n{stderr}"
        );
        assert!(
            stderr.contains("full") && stderr.contains(name.as_str()),
            "capacity {capacity}: the error must name the segment and say it is full:\n{stderr}"
        );
        assert_eq!(
            status_field(&name, "queued"),
            capacity.to_string(),
            "capacity {capacity}: exactly that many messages must be queued"
        );
    }
}

#[test]
fn blocked_producer_completes_once_a_consumer_starts() {
    let name = ShmName::new("blocked");
    create(&name, 4);
    let mut producer = ChildGuard::new(
        synthetic_producer(&name, 10, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    );
    wait_until("4 queued messages", || status_field(&name, "queued") == "4");
    // 6 messages are left and nobody reads: the producer cannot be done.
    assert!(
        producer.wait_timeout(Duration::ZERO).is_none(),
        "the producer ended although the buffer is full and no consumer ran"
    );
    assert!(
        status_field(&name, "producers").starts_with("1 live"),
        "the blocked producer should show as live"
    );

    let mut consumer = cmd("consumer");
    consumer.args(["--segment", name.as_str(), "--verify"]);
    let out = run(consumer, PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "consumer failed: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("verify: received=10 corrupt=0 out_of_order=0 duplicate=0 producers=1"),
        "the consumer must receive all 10 messages, clean:\n{stderr}"
    );

    let prod = producer.output_timeout(PATIENCE);
    assert!(
        prod.status.success(),
        "the producer must complete once a consumer drained the buffer: {:?}\n{}",
        prod.status,
        String::from_utf8_lossy(&prod.stderr)
    );
    assert_eq!(status_field(&name, "queued"), "0");
}
