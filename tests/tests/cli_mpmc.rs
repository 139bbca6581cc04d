//! Three synthetic producers and two consumers, all separate processes:
//! every message is delivered exactly once across the consumers and each
//! producer's messages stay in order within each consumer.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

use ipc_core::synthetic;
use ipc_tests::{cmd, run, wait_until, ChildGuard, ShmName, PATIENCE};

const PRODUCERS: u32 = 3;
const PER_PRODUCER: u64 = 20_000;
const SIZE: usize = 64;

fn ipcctl(args: &[&str]) -> Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

fn live_consumers(name: &ShmName) -> usize {
    let out = ipcctl(&["status", name.as_str()]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("consumer") && l.trim_end().ends_with("alive"))
        .count()
}

/// A child whose stdout and stderr are drained by threads while it runs
/// (so that a full pipe never blocks it); the guard stays with the test so
/// the child is killed if the test fails.
struct Drained {
    guard: ChildGuard,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

fn spawn_drained(mut command: Command) -> Drained {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).expect("read child output");
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    Drained {
        guard: ChildGuard::new(child),
        stdout,
        stderr,
    }
}

impl Drained {
    /// Waits for exit (at most [`PATIENCE`]) and returns the status code
    /// with everything the child wrote.
    fn finish(mut self, what: &str) -> (Option<i32>, Vec<u8>, String) {
        let status = self
            .guard
            .wait_timeout(PATIENCE)
            .unwrap_or_else(|| panic!("{what} did not finish within {PATIENCE:?}"));
        let out = self.stdout.join().expect("stdout thread");
        let err = String::from_utf8_lossy(&self.stderr.join().expect("stderr thread")).into_owned();
        (status.code(), out, err)
    }
}

/// Creates the segment, starts two consumers (waiting until both are
/// attached), then three producers; returns each consumer's (code, stdout,
/// stderr) after checking that every producer succeeded.
fn run_pipeline(name: &ShmName, consumer_args: &[&str]) -> Vec<(Option<i32>, Vec<u8>, String)> {
    let created = ipcctl(&[
        "create",
        name.as_str(),
        "--capacity",
        "8",
        "--max-message",
        "1K",
    ]);
    assert!(created.status.success(), "{created:?}");
    let producers = PRODUCERS.to_string();
    let consumers: Vec<Drained> = (0..2)
        .map(|_| {
            let mut c = cmd("consumer");
            c.args(["--segment", name.as_str(), "--producers", &producers])
                .args(consumer_args);
            spawn_drained(c)
        })
        .collect();
    // Both consumers attached before any message is sent, so that both
    // take part.
    wait_until("two live consumers", || live_consumers(name) == 2);
    let producers: Vec<Drained> = (1..=PRODUCERS)
        .map(|id| {
            let mut c = cmd("producer");
            c.args(["--segment", name.as_str()])
                .args(["--count", &PER_PRODUCER.to_string()])
                .args(["--size", &SIZE.to_string(), "--id", &id.to_string()]);
            spawn_drained(c)
        })
        .collect();
    for (i, p) in producers.into_iter().enumerate() {
        let (code, _, err) = p.finish("producer");
        assert_eq!(code, Some(0), "producer {} failed:\n{err}", i + 1);
    }
    consumers
        .into_iter()
        .map(|c| c.finish("consumer"))
        .collect()
}

/// `key=value` from a verify summary line.
fn summary_value(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {summary:?}"))
}

#[test]
fn three_producers_two_consumers_verified() {
    let name = ShmName::new("mpmc-verify");
    let results = run_pipeline(&name, &["--verify"]);
    let mut total = 0;
    for (i, (code, _, err)) in results.iter().enumerate() {
        assert_eq!(*code, Some(0), "consumer {i} failed:\n{err}");
        let summary = err
            .lines()
            .find_map(|l| l.split_once("verify: ").map(|(_, s)| s))
            .unwrap_or_else(|| panic!("consumer {i} printed no verify summary:\n{err}"));
        for key in ["corrupt", "out_of_order", "duplicate"] {
            assert_eq!(summary_value(summary, key), 0, "consumer {i}: {summary}");
        }
        total += summary_value(summary, "received");
    }
    assert_eq!(
        total,
        u64::from(PRODUCERS) * PER_PRODUCER,
        "both consumers together must receive every message once"
    );
}

/// Stronger than summing counts: the consumers write the raw messages to
/// stdout, and the test decodes them to check that no message was delivered
/// to both consumers and none was lost.
#[test]
fn three_producers_two_consumers_exactly_once_across_consumers() {
    let name = ShmName::new("mpmc-raw");
    let results = run_pipeline(&name, &[]);
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    for (i, (code, out, err)) in results.iter().enumerate() {
        assert_eq!(*code, Some(0), "consumer {i} failed:\n{err}");
        assert_eq!(out.len() % SIZE, 0, "consumer {i}: torn output");
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for msg in out.chunks(SIZE) {
            let (id, seq) = synthetic::decode(msg)
                .unwrap_or_else(|| panic!("consumer {i}: corrupt message {msg:?}"));
            assert!(
                (1..=PRODUCERS).contains(&id) && seq < PER_PRODUCER,
                "consumer {i}: unexpected message ({id}, {seq})"
            );
            if let Some(prev) = last.insert(id, seq) {
                assert!(
                    seq > prev,
                    "consumer {i}: producer {id}'s message {seq} came after {prev}"
                );
            }
            assert!(
                seen.insert((id, seq)),
                "message ({id}, {seq}) was delivered twice"
            );
        }
    }
    assert_eq!(
        seen.len() as u64,
        u64::from(PRODUCERS) * PER_PRODUCER,
        "messages were lost"
    );
}
