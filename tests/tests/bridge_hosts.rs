//! `ipc-bridge` between "hosts": network namespaces on a private switch,
//! each with its own IPC namespace and /dev/shm (`ipc_tests::hosts`), so
//! messages can only cross through the bridges. Needs root; elsewhere each
//! test prints `skipped: <reason>` and passes.
//!
//! Host 0 (192.0.2.1) has the mailbox and exports it; the other hosts
//! import it under the same name and run senders on it.

mod bridge_common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_common::Bridge;
use ipc_tests::hosts::{or_skip, Hosts};
use ipc_tests::{bin, run, ChildGuard, ShmName, PATIENCE};

const PORT: u16 = 7447;

fn endpoint(hosts: &Hosts) -> String {
    format!("tcp/{}:{PORT}", hosts.addr(0))
}

fn exporter(hosts: &Hosts, mailbox: &str) -> Bridge {
    let listen = endpoint(hosts);
    Bridge::start_with(
        hosts.command(0, bin("ipc-bridge")),
        &["--name", "h0", "--listen", &listen, "--export", mailbox],
    )
}

fn importer(hosts: &Hosts, i: usize, mailbox: &str) -> Bridge {
    let connect = endpoint(hosts);
    let name = format!("h{i}");
    Bridge::start_with(
        hosts.command(i, bin("ipc-bridge")),
        &["--name", &name, "--connect", &connect, "--import", mailbox],
    )
}

fn status_path(hosts: &Hosts, i: usize, mailbox: &str) -> PathBuf {
    hosts
        .shm_dir(i)
        .join("ipc-bridge")
        .join(format!("{mailbox}.status"))
}

fn wait_status(hosts: &Hosts, i: usize, mailbox: &str, needle: &str) {
    let start = Instant::now();
    loop {
        let s = std::fs::read_to_string(status_path(hosts, i, mailbox)).unwrap_or_default();
        if s.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "host {i}: status of {mailbox} never said {needle:?}; last:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn peer(hosts: &Hosts, i: usize, args: &[&str]) -> std::process::Command {
    let mut c = hosts.command(i, bin("bridge-peer"));
    c.args(args);
    c
}

/// A receiver on host `i` whose output lines are collected as they come.
struct Collector {
    child: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(hosts: &Hosts, i: usize, mailbox: &str, count: u32) -> Collector {
        let n = count.to_string();
        Self::start_args(hosts, i, &["recv", mailbox, &n])
    }

    /// A receiver on host `i` that takes messages until end of stream.
    fn drain(hosts: &Hosts, i: usize, mailbox: &str) -> Collector {
        Self::start_args(hosts, i, &["drain", mailbox])
    }

    fn start_args(hosts: &Hosts, i: usize, args: &[&str]) -> Collector {
        let mut c = peer(hosts, i, args);
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = hosts.spawn(i, &mut c);
        let out = child
            .0
            .as_mut()
            .expect("child")
            .stdout
            .take()
            .expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Collector {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits (bounded) until `n` messages came.
    fn reach(&self, n: usize) {
        let start = Instant::now();
        while self.count() < n {
            assert!(
                start.elapsed() < 3 * PATIENCE,
                "stuck at {} of {n} messages",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the receiver to finish; its lines, without the final "end".
    fn finish(mut self) -> Vec<String> {
        let status = self
            .child
            .wait_timeout(3 * PATIENCE)
            .expect("receiver ends");
        assert!(status.success(), "receiver failed: {status}");
        self.reader.take().unwrap().join().unwrap();
        let mut lines = std::mem::take(&mut *self.lines.lock().unwrap());
        assert_eq!(lines.pop().as_deref(), Some("end"), "receiver output");
        lines
    }
}

fn untag(l: &str) -> (u32, u32) {
    let (s, i) = l[1..].split_once('-').expect("tag");
    (s.parse().unwrap(), i.parse().unwrap())
}

/// Each sender's tags `s<S>-000000..` exactly once and in order, `n` each.
fn check_exactly_once(lines: &[String], senders: &[u32], n: u32) {
    use std::collections::HashMap;
    let mut next: HashMap<u32, u32> = HashMap::new();
    for l in lines {
        let (s, i) = untag(l);
        let e = next.entry(s).or_insert(0);
        assert_eq!(i, *e, "sender {s}: got {i}, expected {}", *e);
        *e += 1;
    }
    for s in senders {
        assert_eq!(next.get(s).copied().unwrap_or(0), n, "sender {s}");
    }
    assert_eq!(lines.len(), senders.len() * n as usize);
}

fn sender(hosts: &Hosts, i: usize, mailbox: &str, s: u32, n: u32, len: usize) -> ChildGuard {
    let (s, n, len) = (s.to_string(), n.to_string(), len.to_string());
    let mut c = peer(hosts, i, &["send", mailbox, &s, &n, &len]);
    c.stdout(Stdio::piped());
    hosts.spawn(i, &mut c)
}

fn sent_all(child: ChildGuard, n: u32) {
    let out = child.output_timeout(3 * PATIENCE);
    assert!(
        out.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sent {n}")
    );
}

/// Hosts, the far mailbox on host 0 exported, and proxies on the others.
fn setup(n: usize, tag: &str, capacity: &str) -> Option<(Hosts, String, Vec<Bridge>)> {
    let hosts = or_skip(Hosts::new(n))?;
    // Each host has its own /dev/shm: the name only has to be unique to
    // this test (ShmName's file is never made on the machine).
    let name = ShmName::new(tag).0.clone();
    let out = run(
        peer(&hosts, 0, &["create", &name, capacity, "256"]),
        PATIENCE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bridges = vec![exporter(&hosts, &name)];
    for i in 1..n {
        bridges.push(importer(&hosts, i, &name));
    }
    for i in 1..n {
        wait_status(&hosts, i, &name, "link:           connected");
    }
    Some((hosts, name, bridges))
}

#[test]
fn two_senders_on_two_hosts_reach_one_mailbox_exactly_once_in_order() {
    let Some((hosts, name, _bridges)) = setup(3, "hosts-two", "64") else {
        return;
    };
    const N: u32 = 5000;
    let rx = Collector::start(&hosts, 0, &name, 2 * N);
    let a = sender(&hosts, 1, &name, 1, N, 64);
    let b = sender(&hosts, 2, &name, 2, N, 100);
    sent_all(a, N);
    sent_all(b, N);
    check_exactly_once(&rx.finish(), &[1, 2], N);
}

#[test]
fn five_percent_packet_loss_delivers_every_message_exactly_once_in_order() {
    let Some((hosts, name, _bridges)) = setup(2, "hosts-loss", "64") else {
        return;
    };
    for i in 0..2 {
        if let Err(skip) = hosts.loss(i, 0.05) {
            skip.print();
            return;
        }
    }
    const N: u32 = 20_000;
    let rx = Collector::start(&hosts, 0, &name, N);
    let tx = sender(&hosts, 1, &name, 1, N, 200);
    sent_all(tx, N);
    let lines = rx.finish();
    let dropped = hosts.dropped(0) + hosts.dropped(1);
    eprintln!("packets dropped: {dropped}");
    assert!(dropped > 0, "the loss rules dropped nothing");
    check_exactly_once(&lines, &[1], N);
}

#[test]
fn a_cable_pulled_for_5_s_then_plugged_back_resumes_by_itself() {
    let Some((hosts, name, _bridges)) = setup(2, "hosts-cable", "64") else {
        return;
    };
    const N: u32 = 20_000;
    let rx = Collector::start(&hosts, 0, &name, N);
    let tx = sender(&hosts, 1, &name, 1, N, 64);
    rx.reach(5000);
    hosts.link(1, false);
    std::thread::sleep(Duration::from_secs(5));
    hosts.link(1, true);
    sent_all(tx, N);
    check_exactly_once(&rx.finish(), &[1], N);
}

#[test]
fn killing_and_restarting_each_bridge_mid_stream_across_hosts_loses_nothing() {
    let Some((hosts, name, mut bridges)) = setup(2, "hosts-kill", "64") else {
        return;
    };
    const N: u32 = 20_000;
    let rx = Collector::start(&hosts, 0, &name, N);
    let tx = sender(&hosts, 1, &name, 1, N, 64);
    rx.reach(4000);
    bridges[1].kill();
    bridges[1] = importer(&hosts, 1, &name);
    rx.reach(9000);
    bridges[0].kill();
    bridges[0] = exporter(&hosts, &name);
    rx.reach(14000);
    bridges[0].kill();
    bridges[1].kill();
    bridges[1] = importer(&hosts, 1, &name);
    bridges[0] = exporter(&hosts, &name);
    sent_all(tx, N);
    check_exactly_once(&rx.finish(), &[1], N);
}

#[test]
fn receivers_on_two_hosts_share_one_mailbox_each_message_to_exactly_one() {
    let Some(hosts) = or_skip(Hosts::new(3)) else {
        return;
    };
    let name = ShmName::new("hosts-pull").0.clone();
    let out = run(peer(&hosts, 0, &["create", &name, "64", "256"]), PATIENCE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _exporter = exporter(&hosts, &name);
    let connect = endpoint(&hosts);
    let pullers: Vec<Bridge> = (1..3)
        .map(|i| {
            let n = format!("h{i}");
            Bridge::start_with(
                hosts.command(i, bin("ipc-bridge")),
                &["--name", &n, "--connect", &connect, "--pull", &name],
            )
        })
        .collect();
    for i in 1..3 {
        wait_status(&hosts, i, &name, "pulls from mailbox");
    }
    let receivers: Vec<Collector> = (1..3).map(|i| Collector::drain(&hosts, i, &name)).collect();
    const N: u32 = 6000;
    let tx = sender(&hosts, 0, &name, 0, N, 64);
    sent_all(tx, N);
    let mut all = Vec::new();
    for (i, rx) in receivers.into_iter().enumerate() {
        let got = rx.finish();
        // Each receiver sees the sender's messages in order.
        let idx: Vec<u32> = got.iter().map(|l| untag(l).1).collect();
        assert!(
            idx.windows(2).all(|w| w[0] < w[1]),
            "host {}: out of order",
            i + 1
        );
        eprintln!("host {}: {} messages", i + 1, got.len());
        all.extend(got);
    }
    all.sort_by_key(|l| untag(l).1);
    check_exactly_once(&all, &[0], N);
    drop(pullers);
}
