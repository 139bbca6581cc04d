//! Review 9 reproducers for the shared packed ring: scribbled lock words
//! that nobody frees, the CLI tools on shared segments with a consumer
//! killed mid-stream, ports, and counting after crashes.
//!
//! Bounded waits only (a hang fails the test); no timing assertions. Lock
//! words are scribbled through a second mapping of the segment's file, as
//! a hostile peer would.

use std::collections::HashSet;
use std::io::Read;
use std::mem::offset_of;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ipc_core::layout::{Cursor, Header};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::Role;

use ipc_tests::{cmd, run, wait_until, ChildGuard, Mapping, ShmName, PATIENCE};

/// Long enough for a loaded 2-core machine; a call still blocked after it
/// is blocked for good (the reaper looks every 100 ms).
const HANG: Duration = Duration::from_secs(20);

fn write_lock(m: &Mapping) -> &AtomicU64 {
    m.word(offset_of!(Header, tail) + offset_of!(Cursor, lock))
}

fn read_lock(m: &Mapping) -> &AtomicU64 {
    m.word(offset_of!(Header, head) + offset_of!(Cursor, lock))
}

fn mailbox(name: &ShmName, capacity: Capacity, max_message: u32) -> Mailbox {
    Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity,
            max_message,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The attachment index of the (only) attached peer of `role`.
fn index_of(mb: &Mailbox, role: Role) -> u32 {
    let peers: Vec<_> = mb
        .status()
        .peers
        .into_iter()
        .filter(|p| p.role == Some(role))
        .collect();
    assert_eq!(peers.len(), 1, "{peers:?}");
    peers[0].index
}

/// A lock word naming attachment `index` as holder (turn count 5).
fn lock_word(index: u32) -> u64 {
    (5u64 << 32) | (index as u64 + 1)
}

/// Runs `f` on a thread; `None` if it has not returned after [`HANG`]
/// (the thread is left blocked: the test fails anyway).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG).ok()
}

// ---------------------------------------------------------------------
// Scribbled lock words that the reaper never frees.
// ---------------------------------------------------------------------

/// FAILS: the writers' lock scribbled to name attachment index 64 + k,
/// where k is an attached peer's index. No attachment has an index above
/// 63 (the table has 64 entries), so the lock is stale and
/// `Queue::free_stale_locks` must free it; but `Roster::has` tests bit
/// `index % 64`, finds k attached and leaves the lock alone: every sender
/// waits for good (a `send()` without deadline never returns).
#[test]
fn a_write_lock_naming_index_64_plus_an_attached_one_is_freed() {
    let name = ShmName::new("rv9-alias-w");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut s = mb.sender().unwrap();
    let mut r = mb.receiver().unwrap();
    let k = index_of(&mb, Role::Producer);
    let map = Mapping::new(&name);
    write_lock(&map).store(lock_word(64 + k), Ordering::SeqCst);
    let sent = s.send_timeout(b"after the scribble", HANG);
    assert!(
        sent.is_ok(),
        "a send on an empty mailbox whose writers' lock names unattached index {} \
         (an alias of attached index {k}) never got the lock: {sent:?} (lock word now {:#x})",
        64 + k,
        write_lock(&map).load(Ordering::SeqCst)
    );
    assert_eq!(r.recv_timeout(HANG).unwrap(), b"after the scribble");
}

/// FAILS: the same with the readers' lock: a receiver never gets a queued
/// message.
#[test]
fn a_read_lock_naming_index_64_plus_an_attached_one_is_freed() {
    let name = ShmName::new("rv9-alias-r");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut s = mb.sender().unwrap();
    let mut r = mb.receiver().unwrap();
    let k = index_of(&mb, Role::Consumer);
    s.send(b"queued").unwrap();
    let map = Mapping::new(&name);
    read_lock(&map).store(lock_word(64 + k), Ordering::SeqCst);
    let got = r.recv_timeout(HANG);
    assert!(
        got.is_ok(),
        "a receiver never got the queued message behind a readers' lock naming \
         unattached index {}: {got:?}",
        64 + k
    );
}

/// FAILS (a hang despite a timeout): on a rendezvous mailbox whose
/// readers' lock names index 64 + k (k attached), `send_timeout` of 50 ms
/// never returns: after its wait it withdraws its offer under the readers'
/// lock, and `Tx::retract` loops without bound (`for turn in 0u32..`)
/// waiting for a lock that reaping never frees.
#[test]
fn a_rendezvous_send_timeout_returns_although_the_read_lock_is_scribbled() {
    let name = ShmName::new("rv9-alias-rv");
    let mb = mailbox(&name, Capacity::Zero, 64);
    let mut s = mb.sender().unwrap();
    let _r = mb.receiver().unwrap();
    let k = index_of(&mb, Role::Consumer);
    let map = Mapping::new(&name);
    read_lock(&map).store(lock_word(64 + k), Ordering::SeqCst);
    let done = bounded(move || {
        let r = s.send_timeout(b"offer", Duration::from_millis(50));
        format!("{r:?}")
    });
    assert!(
        done.is_some(),
        "a rendezvous send_timeout(50 ms) had not returned after {HANG:?}: Tx::retract \
         waits without bound for a readers' lock nobody will free"
    );
}

/// FAILS: the writers' lock scribbled to name a live, attached receiver.
/// Receivers never take the writers' lock, so it is never given back;
/// `free_stale_locks` frees only locks naming unattached indices, and the
/// reaper only dead ones: senders wait for good on an empty mailbox.
#[test]
fn a_write_lock_naming_a_live_receiver_is_freed() {
    let name = ShmName::new("rv9-other-w");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut s = mb.sender().unwrap();
    let mut r = mb.receiver().unwrap();
    let k = index_of(&mb, Role::Consumer);
    let map = Mapping::new(&name);
    write_lock(&map).store(lock_word(k), Ordering::SeqCst);
    let sent = s.send_timeout(b"m", HANG);
    assert!(
        sent.is_ok(),
        "a send on an empty mailbox never got the writers' lock, which names live receiver \
         {k} (receivers never take it): {sent:?}"
    );
    assert_eq!(r.recv_timeout(HANG).unwrap(), b"m");
}

/// FAILS: on a bounded mailbox (where senders never take the readers'
/// lock: only rendezvous senders do, to withdraw), the readers' lock
/// scribbled to name a live sender: receivers never get the message.
#[test]
fn a_read_lock_naming_a_live_sender_of_a_bounded_mailbox_is_freed() {
    let name = ShmName::new("rv9-other-r");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut s = mb.sender().unwrap();
    let mut r = mb.receiver().unwrap();
    let k = index_of(&mb, Role::Producer);
    s.send(b"queued").unwrap();
    let map = Mapping::new(&name);
    read_lock(&map).store(lock_word(k), Ordering::SeqCst);
    let got = r.recv_timeout(HANG);
    assert!(
        got.is_ok(),
        "a receiver never got the queued message behind a readers' lock naming live \
         sender {k} of a bounded mailbox: {got:?}"
    );
}

// ---------------------------------------------------------------------
// The CLI tools on a shared mailbox / buffer, one consumer killed.
// ---------------------------------------------------------------------

const SIZE: usize = 64;

/// A child whose stdout is drained by a thread (bytes counted as they
/// come) and whose stderr is collected.
struct Drained {
    guard: ChildGuard,
    got: std::sync::Arc<AtomicU64>,
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
    let got = std::sync::Arc::new(AtomicU64::new(0));
    let mut out = child.stdout.take().unwrap();
    let counter = got.clone();
    let stdout = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => return v,
                Ok(n) => {
                    v.extend_from_slice(&buf[..n]);
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
    });
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    Drained {
        guard: ChildGuard::new(child),
        got,
        stdout,
        stderr,
    }
}

impl Drained {
    fn finish(mut self, what: &str) -> (Option<i32>, Vec<u8>, String) {
        let status = self
            .guard
            .wait_timeout(PATIENCE)
            .unwrap_or_else(|| panic!("{what} did not finish within {PATIENCE:?}"));
        let out = self.stdout.join().unwrap();
        let err = String::from_utf8_lossy(&self.stderr.join().unwrap()).into_owned();
        (status.code(), out, err)
    }

    fn kill(mut self) -> Vec<u8> {
        self.guard.kill();
        self.stdout.join().unwrap()
    }
}

fn ipcctl(args: &[&str]) -> Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

/// `ipcctl status NAME`'s value on the line starting with `key:`.
fn status_value(name: &ShmName, key: &str) -> u64 {
    let out = ipcctl(&["status", name.as_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}: in ipcctl status:\n{text}"))
}

fn live_consumers(name: &ShmName) -> usize {
    let out = ipcctl(&["status", name.as_str()]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("consumer") && l.trim_end().ends_with("alive"))
        .count()
}

/// Decodes a consumer's raw output into (producer id, seq) pairs, adding
/// them to `seen`; a message seen twice fails.
fn collect(out: &[u8], who: &str, seen: &mut HashSet<(u32, u64)>) {
    assert_eq!(out.len() % SIZE, 0, "{who}: torn output");
    for m in out.chunks(SIZE) {
        let (id, seq) = ipc_core::synthetic::decode(m)
            .unwrap_or_else(|| panic!("{who}: corrupt message {m:?}"));
        assert!(
            seen.insert((id, seq)),
            "{who}: message ({id}, {seq}) delivered twice"
        );
    }
}

/// Two producers, three consumers (separate processes) on one shared
/// queue; one consumer killed (SIGKILL) mid-stream. Every message is
/// delivered exactly once or counted lost by `ipcctl status`.
fn kill_one_of_three_consumers(segment: bool, round: u32) {
    let name = ShmName::new(if segment { "rv9-cli-seg" } else { "rv9-cli-mb" });
    let _mb = if segment {
        let created = ipcctl(&[
            "create",
            name.as_str(),
            "--capacity",
            "8",
            "--max-message",
            "1K",
        ]);
        assert!(created.status.success(), "{created:?}");
        None
    } else {
        Some(mailbox(&name, Capacity::Bounded(8), 1024))
    };
    let flag = if segment { "--segment" } else { "--mailbox" };
    let per: u64 = 4000;
    let consumers: Vec<Drained> = (0..3)
        .map(|_| {
            let mut c = cmd("consumer");
            c.args([flag, name.as_str(), "--producers", "2"]);
            spawn_drained(c)
        })
        .collect();
    wait_until("three live consumers", || live_consumers(&name) == 3);
    let producers: Vec<Drained> = (1..=2u32)
        .map(|id| {
            let mut c = cmd("producer");
            c.args([flag, name.as_str(), "--count", &per.to_string()])
                .args(["--size", &SIZE.to_string(), "--id", &id.to_string()]);
            spawn_drained(c)
        })
        .collect();
    // Mid-stream: after the victim took some messages (more after each
    // round), or once half the stream went by (the others may take
    // nearly all of it on a loaded machine).
    let at = (50 + 300 * round as u64) * SIZE as u64;
    let half = per * SIZE as u64;
    wait_until("the victim's first messages, or half the stream", || {
        consumers[0].got.load(Ordering::SeqCst) >= at
            || consumers
                .iter()
                .map(|c| c.got.load(Ordering::SeqCst))
                .sum::<u64>()
                >= half
    });
    let mut consumers = consumers.into_iter();
    let victim = consumers.next().unwrap();
    let victim_out = victim.kill();
    for (i, p) in producers.into_iter().enumerate() {
        let (code, _, err) = p.finish("producer");
        assert_eq!(code, Some(0), "round {round}: producer {i} failed:\n{err}");
    }
    let mut seen = HashSet::new();
    let usable = victim_out.len() / SIZE * SIZE;
    collect(&victim_out[..usable], "the killed consumer", &mut seen);
    for (i, c) in consumers.enumerate() {
        let (code, out, err) = c.finish("consumer");
        assert_eq!(
            code,
            Some(0),
            "round {round}: surviving consumer {i} failed:\n{err}"
        );
        collect(&out, &format!("consumer {i}"), &mut seen);
    }
    let total = 2 * per;
    let missing = total - seen.len() as u64;
    let lost = status_value(&name, "lost");
    let queued = status_value(&name, "queued");
    assert_eq!(
        queued, 0,
        "round {round}: messages left queued after every consumer ended"
    );
    assert!(
        missing <= lost && lost <= 1,
        "round {round}: {missing} message(s) never delivered, ipcctl status counts {lost} lost \
         (one consumer was killed)"
    );
}

/// Passing check (if it passes): see `kill_one_of_three_consumers`, on a
/// mailbox (made by the test).
#[test]
fn cli_mailbox_one_of_three_consumers_killed_loses_at_most_what_is_counted() {
    for round in 0..3 {
        kill_one_of_three_consumers(false, round);
    }
}

/// Passing check (if it passes): the same on a shared buffer made by
/// `ipcctl create`.
#[test]
fn cli_segment_one_of_three_consumers_killed_loses_at_most_what_is_counted() {
    for round in 0..3 {
        kill_one_of_three_consumers(true, round);
    }
}

// ---------------------------------------------------------------------
// Ports: a killed owner, the name registered again.
// ---------------------------------------------------------------------

/// Passing check: senders (paced, so the old mailbox never fills) keep
/// sending to port P while its owner (a `consumer --port P` process) is
/// killed and the test registers P again. Every `send_to` that starts
/// after the new `Port::register` returned and returns `Ok` reaches the
/// new owner (registering reaps the old mailbox, so cached links see the
/// owner gone and reopen), and no send hangs.
#[test]
fn a_send_to_a_re_registered_port_that_returns_ok_reaches_the_new_owner() {
    use ipc_core::ports::{mailbox_name, Port, PortSender};
    use ipc_core::Deadline;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let base = ShmName::new("rv9-port");
    let port = base.as_str().to_owned();
    let _guard = ShmName(mailbox_name(&port));
    let mut owner = {
        let mut c = cmd("consumer");
        c.args(["--port", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildGuard::new(c.spawn().unwrap())
    };
    wait_until("the owner registered", || {
        Mailbox::open(&mailbox_name(&port))
            .map(|mb| {
                mb.status()
                    .peers
                    .iter()
                    .any(|p| p.alive && p.role == Some(Role::Consumer))
            })
            .unwrap_or(false)
    });
    let registered = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..3u32)
        .map(|id| {
            let (port, registered, stop) = (port.clone(), registered.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut out = PortSender::new(&format!("s{id}")).unwrap();
                // (seq, started after the new registration) of each Ok.
                let mut ok_after = Vec::new();
                let mut after_sends = 0u32;
                for seq in 0u64.. {
                    let after = registered.load(Ordering::SeqCst);
                    if stop.load(Ordering::SeqCst) || after_sends >= 300 {
                        break;
                    }
                    let r = out.send_to_until(&port, seq.to_le_bytes(), Deadline::after(HANG));
                    if after {
                        after_sends += 1;
                        if r.is_ok() {
                            ok_after.push(seq);
                        }
                    }
                    // Paced, so that the old mailbox does not fill up
                    // (a sender blocked on a full one reaps at once).
                    std::thread::sleep(Duration::from_millis(1));
                }
                ok_after
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    owner.kill();
    let mut new_owner = loop {
        match Port::register(&port, &MailboxConfig::default()) {
            Ok(p) => break p,
            Err(ipc_core::ports::PortError::NameTaken { .. }) => std::thread::yield_now(),
            Err(e) => panic!("register: {e}"),
        }
    };
    registered.store(true, Ordering::SeqCst);
    let mut expected = HashSet::new();
    let receiver = std::thread::spawn(move || {
        let mut got = HashSet::new();
        while let Ok(m) = new_owner.recv_timeout(Duration::from_secs(3)) {
            let seq = u64::from_le_bytes(m.payload[..8].try_into().unwrap());
            got.insert((m.from, seq));
        }
        got
    });
    for (id, h) in senders.into_iter().enumerate() {
        for seq in h.join().unwrap() {
            expected.insert((format!("s{id}"), seq));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let got = receiver.join().unwrap();
    let mut missing: Vec<_> = expected.difference(&got).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {} sends that began after the port was registered again returned Ok but never \
         reached the new owner (first: {:?})",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
}
