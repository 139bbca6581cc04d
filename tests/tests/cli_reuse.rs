//! A segment used again for a second stream, and a stream whose producer
//! died, through the real binaries.
//!
//! * Like a named pipe: a consumer that comes after every producer left and
//!   finds nothing waits for a new producer (before: it ended at once with
//!   0 messages), and a producer that comes after every consumer left waits
//!   for a new consumer when the buffer is full (before: it failed "every
//!   consumer has gone").
//! * A producer killed mid-stream makes the consumer's end of stream say so:
//!   a warning naming the producer and exit 1 (before: exit 0), unless
//!   `--accept-incomplete`.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use ipc_tests::{cmd, run, wait_until, ChildGuard, ShmName, PATIENCE};

fn create(name: &ShmName, capacity: &str) {
    let out = run(
        {
            let mut c = cmd("ipcctl");
            c.args([
                "create",
                name.as_str(),
                "--capacity",
                capacity,
                "--max-message",
                "64",
            ]);
            c
        },
        PATIENCE,
    );
    assert!(out.status.success(), "ipcctl create: {out:?}");
}

fn produce(name: &ShmName, input: &[u8]) -> std::process::Output {
    let mut child = cmd("producer")
        .args(["--segment", name.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    ChildGuard::new(child).output_timeout(PATIENCE)
}

#[test]
fn a_second_stream_through_the_same_segment_waits_for_its_producer() {
    let name = ShmName::new("reuse-c");
    create(&name, "8");
    assert!(produce(&name, b"first").status.success());
    let first = run(
        {
            let mut c = cmd("consumer");
            c.args(["--segment", name.as_str()]);
            c
        },
        PATIENCE,
    );
    assert_eq!(first.stdout, b"first", "{first:?}");
    // The stream has ended and the buffer is empty: a new consumer waits.
    let mut second = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", name.as_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until("the second consumer to attach", || {
        ipc_core::admin::inspect(name.as_str()).is_ok_and(|s| s.live(ipc_core::Role::Consumer) == 1)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        second.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the second consumer ended before any producer of its stream came"
    );
    assert!(produce(&name, b"second").status.success());
    let out = second.output_timeout(PATIENCE);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"second");
}

#[test]
fn a_producer_after_every_consumer_left_waits_for_a_new_one() {
    let name = ShmName::new("reuse-p");
    create(&name, "1");
    // A consumer comes and goes.
    let gone = run(
        {
            let mut c = cmd("consumer");
            c.args(["--segment", name.as_str(), "--timeout", "0.2"]);
            c
        },
        PATIENCE,
    );
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    // Two messages into one slot: the producer must wait for a consumer,
    // not fail because the earlier one left.
    let mut producer = cmd("producer")
        .args(["--segment", name.as_str(), "--count", "2", "--size", "32"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let producer_pid = producer.id();
    let _stdin = producer.stdin.take();
    let mut producer = ChildGuard::new(producer);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        producer.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "producer {producer_pid} gave up although no consumer of its stream had come"
    );
    let out = run(
        {
            let mut c = cmd("consumer");
            c.args(["--segment", name.as_str(), "--verify"]);
            c
        },
        PATIENCE,
    );
    assert!(out.status.success(), "{out:?}");
    let p = producer.output_timeout(PATIENCE);
    assert!(p.status.success(), "{p:?}");
}

#[test]
fn a_stream_whose_producer_died_ends_with_a_warning_and_exit_1() {
    for accept in [false, true] {
        let name = ShmName::new("died");
        create(&name, "4");
        let mut consumer = cmd("consumer");
        consumer
            .args(["--segment", name.as_str(), "--verify"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if accept {
            consumer.arg("--accept-incomplete");
        }
        let consumer = ChildGuard::new(consumer.spawn().unwrap());
        let mut producer = ChildGuard::new(
            cmd("producer")
                .args([
                    "--segment",
                    name.as_str(),
                    "--count",
                    "1000000000",
                    "--size",
                    "32",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = producer.pid();
        wait_until("some messages to flow", || {
            ipc_core::admin::inspect(name.as_str()).is_ok_and(|s| s.len > 0)
        });
        producer.kill();
        let out = consumer.output_timeout(PATIENCE);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("may be incomplete") && err.contains(&format!("pid {pid}")),
            "accept={accept}: {err}"
        );
        assert_eq!(out.status.code(), Some(if accept { 0 } else { 1 }), "{err}");
    }
}
