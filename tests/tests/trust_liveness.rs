//! Peer liveness must not trust /proc: a live producer must never be judged
//! dead (and reaped, ending the stream early) because its thread-group
//! leader is a zombie, because it runs in another pid namespace, or because
//! `hidepid` hides it from the observer; a dead receiver must be noticed by
//! a slow sender within a few sends; a single-mode producer killed at any
//! instant must leave a ring its replacement can use.
//!
//! Guards defects 1 (zombie leader), 2 (pid namespace), 3 (hidepid),
//! 4 (single-mode producer killed between publishing a slot and moving the
//! write cursor) and 10 (receiver killed, slow sender) of issue 8.

mod trust_common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc_core::{BufferConfig, Deadline, RecvError, SharedBuffer};
use ipc_tests::{ChildGuard, ShmName};
use trust_common::{drain_sequence, is_root, Rng, HANG, PEER};

/// Messages of the slow producers: one per `INTERVAL_MS`, about 1.5 s.
const SLOW_COUNT: u64 = 75;
const INTERVAL_MS: u64 = 20;

fn slow_buffer(tag: &str, mode: u32) -> (ShmName, SharedBuffer) {
    let name = ShmName::new(tag);
    let buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            // Room for the whole stream: the producer never waits.
            capacity: 128,
            max_message: 64,
            mode,
            budget: 0,
        },
    )
    .unwrap();
    (name, buf)
}

/// Runs a consumer in this process against a slow producer child and
/// checks the whole stream arrives, with nothing counted lost.
fn expect_whole_stream(buf: &SharedBuffer, mut child: ChildGuard, what: &str) {
    let mut rx = buf.consumer().unwrap();
    let seen = drain_sequence(&mut rx, SLOW_COUNT);
    let st = child.wait_timeout(HANG);
    let status = buf.status();
    let mut stderr = String::new();
    if let Some(mut e) = child.0.as_mut().and_then(|c| c.stderr.take()) {
        let _ = e.read_to_string(&mut stderr);
    }
    let mut problems = vec![];
    if seen.received != SLOW_COUNT || seen.end.is_err() {
        problems.push(format!(
            "consumer got {} of {SLOW_COUNT} messages, then {:?} (end of stream came early: the live producer was reaped)",
            seen.received, seen.end
        ));
    }
    if !seen.in_order {
        problems.push("messages out of order".to_owned());
    }
    if status.lost_reads != 0 || status.abandoned_writes != 0 {
        problems.push(format!(
            "status reports lost_reads={} abandoned_writes={}",
            status.lost_reads, status.abandoned_writes
        ));
    }
    if st.is_none_or(|s| !s.success()) {
        problems.push(format!("producer exit {st:?}: {}", stderr.trim()));
    }
    assert!(problems.is_empty(), "{what}: {}", problems.join("; "));
}

#[test]
fn zombie_leader_producer_is_alive_while_its_thread_sends() {
    let (name, buf) = slow_buffer("zombie", 0o600);
    let child = ChildGuard::new(
        Command::new(PEER)
            .args(["zombie-produce", name.as_str()])
            .args([SLOW_COUNT.to_string(), INTERVAL_MS.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    expect_whole_stream(&buf, child, "producer whose main thread exited");
}

/// Why `unshare` cannot make namespaces here, if it cannot.
fn unshare_unavailable(args: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("not root".to_owned());
    }
    match Command::new("unshare").args(args).arg("true").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unshare {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

/// A pid that no process of this (the parent) namespace has now.
fn pid_unused_here() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let mut rng = Rng::seeded();
    for _ in 0..1000 {
        let p = (max / 2 + rng.below(max as u64 / 2 - 10) as u32).max(300);
        if !std::path::Path::new(&format!("/proc/{p}")).exists() {
            return p;
        }
    }
    panic!("no free pid found");
}

#[test]
fn producer_in_another_pid_namespace_is_not_reaped() {
    if let Some(why) = unshare_unavailable(&["--pid", "--fork"]) {
        eprintln!("skipped: {why}");
        return;
    }
    // No --mount-proc: the producer sees the parent's /proc; its recorded
    // pid (chosen to be free here) means nothing in this namespace.
    let pid = pid_unused_here();
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--", PEER, "ns-exec"])
        .arg(pid.to_string())
        .arg("true")
        .output()
        .unwrap();
    if !probe.status.success() {
        eprintln!(
            "skipped: cannot choose the pid in a child namespace (ns_last_pid): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let (name, buf) = slow_buffer("pidns", 0o600);
    let child = ChildGuard::new(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--", PEER, "ns-exec"])
            .arg(pid.to_string())
            .args([PEER, "produce-slow", name.as_str()])
            .args([SLOW_COUNT.to_string(), INTERVAL_MS.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    expect_whole_stream(
        &buf,
        child,
        &format!("producer with pid {pid} in a child pid namespace (no --mount-proc)"),
    );
}

#[test]
fn producer_in_another_pid_namespace_with_its_own_proc_is_not_reaped() {
    if let Some(why) = unshare_unavailable(&["--pid", "--fork", "--mount-proc"]) {
        eprintln!("skipped: {why}");
        return;
    }
    let (name, buf) = slow_buffer("pidnsproc", 0o600);
    // With --mount-proc the producer is pid 1 there, with its own start
    // time; pid 1 here is another process.
    let child = ChildGuard::new(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
            .args([PEER, "produce-slow", name.as_str()])
            .args([SLOW_COUNT.to_string(), INTERVAL_MS.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    expect_whole_stream(
        &buf,
        child,
        "producer as pid 1 of a child pid namespace (--mount-proc)",
    );
}

/// The shell run in a private mount namespace: /proc remounted with
/// hidepid=2, then the command as user nobody.
const HIDEPID_SH: &str = "mount -t proc -o hidepid=2 proc /proc && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- \"$@\"";

#[test]
fn consumer_under_hidepid_does_not_reap_a_live_producer() {
    if let Some(why) = unshare_unavailable(&["--mount", "--propagation", "private"]) {
        eprintln!("skipped: {why}");
        return;
    }
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(HIDEPID_SH)
        .args(["sh", PEER, "no-such-subcommand"])
        .output()
        .unwrap();
    if probe.status.code() != Some(2) {
        eprintln!(
            "skipped: cannot run a helper as nobody under hidepid=2: {:?} {}",
            probe.status,
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    // 0666: user nobody may attach.
    let (name, buf) = slow_buffer("hidepid", 0o666);
    let mut producer = ChildGuard::new(
        Command::new(PEER)
            .args(["produce-slow", name.as_str()])
            .args([SLOW_COUNT.to_string(), INTERVAL_MS.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let producer_pid = producer.pid();
    let consumer = ChildGuard::new(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(HIDEPID_SH)
            .args(["sh", PEER, "consume", name.as_str()])
            .args([SLOW_COUNT.to_string(), "60".to_owned()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Halfway through, after several liveness periods of the consumer
    // waiting (and looking for dead peers): the owner, who sees /proc
    // whole, must still find the producer attached.
    std::thread::sleep(Duration::from_millis(SLOW_COUNT * INTERVAL_MS / 2));
    let mid = buf.status();
    let attached_mid = mid.peers.iter().any(|p| p.pid == producer_pid && p.alive);
    let out = consumer.output_timeout(HANG);
    let pst = producer.wait_timeout(HANG);
    let status = buf.status();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected = format!("received={SLOW_COUNT} end=disconnected in_order=true");
    let mut problems = vec![];
    if !attached_mid {
        problems.push(format!(
            "halfway, status from the owner no longer lists live producer {producer_pid} (peers: {:?}): the consumer reaped it",
            mid.peers
        ));
    }
    if stdout != expected {
        problems.push(format!(
            "consumer as nobody under hidepid=2 said {stdout:?} (want {expected:?}), stderr {:?}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if status.lost_reads != 0 || status.abandoned_writes != 0 {
        problems.push(format!(
            "status reports lost_reads={} abandoned_writes={}",
            status.lost_reads, status.abandoned_writes
        ));
    }
    if pst.is_none_or(|s| !s.success()) {
        problems.push(format!("producer exit {pst:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

/// Most producer incarnations killed, and the time allowed for them.
const KILLS: u32 = 3000;
const KILL_BUDGET: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Incarnations {
    problems: Vec<String>,
}

#[test]
fn single_mode_producer_killed_at_any_instant_leaves_a_usable_ring() {
    let name = ShmName::new("single-kill");
    let buf = SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity: 16,
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let latest = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Incarnations::default()));
    let consumer = {
        let (buf, latest, stop, seen) = (buf.clone(), latest.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut rx = buf.consumer().unwrap();
            // Incarnations follow one another (each is dead before the
            // next starts), so the stream is: 1/0, 1/1, ..., 2/0, 2/1, ...
            let (mut cur, mut next) = (0u32, 0u64);
            let mut problems = vec![];
            let mut m = [0u8; 16];
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_into(&mut m, Deadline::after(Duration::from_millis(100))) {
                    Ok(12) => {
                        let inc = u32::from_le_bytes(m[..4].try_into().unwrap());
                        let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
                        if inc < cur {
                            problems.push(format!(
                                "message {seq} of incarnation {inc} after incarnation {cur}'s"
                            ));
                        } else if inc > cur {
                            (cur, next) = (inc, 0);
                        }
                        if seq != next {
                            problems.push(format!(
                                "incarnation {inc}: got message {seq}, expected {next} (a message lost or delivered twice)"
                            ));
                        }
                        next = seq + 1;
                        latest.fetch_max(inc, Ordering::AcqRel);
                    }
                    Ok(n) => problems.push(format!("message of {n} bytes")),
                    // Between incarnations: no producer attached.
                    Err(RecvError::Disconnected | RecvError::Timeout) => {
                        std::thread::sleep(Duration::from_micros(100))
                    }
                    Err(e) => {
                        problems.push(format!("consumer: {e}"));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            seen.lock().unwrap().problems = problems;
        })
    };
    let mut rng = Rng::seeded();
    let start = Instant::now();
    let mut kills = 0;
    let mut failure: Option<String> = None;
    for inc in 1..=KILLS {
        if start.elapsed() > KILL_BUDGET {
            break;
        }
        let mut child = ChildGuard::new(
            Command::new(PEER)
                .args(["single-produce", name.as_str(), &inc.to_string()])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Until its first message arrives (or it fails).
        let wait_start = Instant::now();
        let mut exited = None;
        while latest.load(Ordering::Acquire) < inc && wait_start.elapsed() < Duration::from_secs(10)
        {
            if let Some(st) = child.0.as_mut().unwrap().try_wait().unwrap() {
                exited = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if exited.is_none() && latest.load(Ordering::Acquire) >= inc {
            // Kill it at a random instant of its tight send loop.
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
        }
        let c = child.0.as_mut().unwrap();
        let _ = c.kill();
        let st = c.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = c.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if st.code().is_some() {
            failure = Some(format!(
                "after {kills} kills, replacement producer {inc} failed ({st}): {}",
                err.trim()
            ));
            break;
        }
        if latest.load(Ordering::Acquire) < inc {
            failure = Some(format!(
                "after {kills} kills, replacement producer {inc} sent nothing the consumer received within 10 s"
            ));
            break;
        }
        kills += 1;
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    consumer.join().unwrap();
    let status = buf.status();
    let s = seen.lock().unwrap();
    eprintln!(
        "{kills} kills in {:?}; lost_reads={} abandoned_writes={}",
        start.elapsed(),
        status.lost_reads,
        status.abandoned_writes
    );
    let mut problems: Vec<String> = failure.into_iter().collect();
    problems.extend(s.problems.iter().take(5).cloned());
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

/// Runs `trust-peer receiver-killed NAME` and returns its verdict line.
/// As root it runs in a private mount namespace with its own /dev/shm, so
/// that no other process on the machine (an `ipcctl list` or `status` of
/// someone else's tests, which reaps every segment it inspects) finds the
/// dead receiver before the sender does.
fn receiver_killed_scenario(name: &ShmName) -> (String, bool) {
    let isolated = unshare_unavailable(&["--mount", "--propagation", "private"]).is_none();
    let mut cmd = if isolated {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o size=64m tmpfs /dev/shm && exec \"$@\"")
            .args(["sh", PEER]);
        c
    } else {
        Command::new(PEER)
    };
    cmd.args(["receiver-killed", name.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = ChildGuard::new(cmd.spawn().unwrap()).output_timeout(HANG);
    assert!(
        out.status.success(),
        "receiver-killed scenario: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        isolated,
    )
}

#[test]
fn slow_sender_notices_a_killed_receiver_within_a_few_sends() {
    let name = ShmName::new("rxkill");
    let (verdict, isolated) = receiver_killed_scenario(&name);
    if !isolated {
        eprintln!(
            "note: not isolated (no private /dev/shm): another process inspecting /dev/shm may reap the dead receiver first"
        );
    }
    let fields: std::collections::HashMap<&str, &str> = verdict
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let late: u32 = fields
        .get("late")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX);
    match fields.get("disconnected_at") {
        Some(&"never") => panic!(
            "send kept returning Ok for 120 sends, one per 30 ms ({late} of them 300 ms or more after the only receiver was SIGKILLed): never Disconnected"
        ),
        Some(at) => assert!(
            late < 5,
            "Disconnected only at send {at}: {late} sends succeeded 300 ms or more after the only receiver was SIGKILLed"
        ),
        None => panic!("unexpected verdict {verdict:?}"),
    }
}
