//! Review 11: the CLI on shared segments with dead lock holders, forgotten
//! zero-copy claims on a shared ring, and batch receives racing a killed
//! receiver. Bounded waits only; no timing assertions.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{Deadline, SendError};
use ipc_tests::{cmd, run, wait_until, ChildGuard, ShmName, TempDir, PATIENCE};

const PEER: &str = env!("CARGO_BIN_EXE_mailbox-peer");
const HANG: Duration = Duration::from_secs(20);

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

fn msg(id: u32, seq: u64) -> Vec<u8> {
    let mut m = id.to_le_bytes().to_vec();
    m.extend_from_slice(&seq.to_le_bytes());
    m
}

fn ipcctl(args: &[&str]) -> Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn status_value(name: &ShmName, key: &str) -> u64 {
    let out = ipcctl(&["status", name.as_str()]);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    t.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}: in ipcctl status:\n{}", text(&out)))
}

fn status_text(name: &ShmName) -> String {
    let out = ipcctl(&["status", name.as_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mailbox-peer receiver holding one message in place (`recv_with`) for
/// ten minutes; returns once its marker exists.
fn holder_in_place(name: &ShmName, dir: &TempDir) -> ChildGuard {
    let mut child = Command::new(PEER)
        .args([
            "recv",
            name.as_str(),
            "--op",
            "with",
            "--count",
            "1",
            "--hold-ms",
            "600000",
            "--marker-dir",
            dir.path().to_str().unwrap(),
            "--ready",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let guard = ChildGuard::new(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the peer did not attach");
    std::thread::spawn(move || for _ in out.lines() {});
    writeln!(stdin).unwrap();
    std::mem::forget(stdin);
    wait_until("the child holds a message in place", || {
        std::fs::read_dir(dir.path())
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("took-"))
            })
            .unwrap_or(false)
    });
    guard
}

/// Child roles, run by re-executing this test binary.
///
/// * `hold-claim NAME`: a sender (mailbox or buffer) that commits
///   `REVIEW11_COMMIT` messages, then claims room, prints `holding` and
///   sleeps for ever holding the writers' lock.
#[test]
fn review11_child_peer() {
    let Ok(role) = std::env::var("REVIEW11_ROLE") else {
        return;
    };
    // SAFETY: prctl with constant arguments: die with the parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let name = std::env::var("REVIEW11_NAME").unwrap();
    let commit: u64 = std::env::var("REVIEW11_COMMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut s = match role.as_str() {
        "hold-claim" => Mailbox::open(&name).unwrap().sender().unwrap(),
        "hold-claim-buffer" => SharedBuffer::open(&name).unwrap().producer().unwrap(),
        other => panic!("unknown role {other}"),
    };
    for seq in 0..commit {
        s.send(msg(9, seq)).unwrap();
    }
    let mut w = s.claim(Deadline::Never).unwrap();
    w.buf()[..4].copy_from_slice(b"half");
    println!("holding");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn child(role: &str, name: &ShmName, commit: u64) -> ChildGuard {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([
            "review11_child_peer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REVIEW11_ROLE", role)
        .env("REVIEW11_NAME", name.as_str())
        .env("REVIEW11_COMMIT", commit.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(c.stdout.take().unwrap());
    let guard = ChildGuard::new(c);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut said = false;
        for line in out.lines() {
            let Ok(line) = line else { break };
            if !said && line.trim_end().ends_with("holding") {
                said = true;
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(PATIENCE).expect("the child did not claim");
    guard
}

/// `ipcctl clean` on an orphaned shared mailbox whose receiver died
/// holding a message in place (the readers' lock): the two messages
/// behind it are undelivered, so the segment must be kept (exit 0), and
/// status must count the lost one and the two queued.
#[test]
fn clean_keeps_an_orphan_whose_dead_reader_held_the_lock_with_messages_behind() {
    let name = ShmName::new("rv11-clean-reader");
    let dir = TempDir::new("rv11-clean-reader");
    {
        let mb = mailbox(&name, Capacity::Bounded(8), 64);
        let mut s = mb.sender().unwrap();
        for seq in 0..3 {
            s.send(msg(1, seq)).unwrap();
        }
        drop(s);
        let mut h = holder_in_place(&name, &dir);
        h.kill();
    }
    let st = status_text(&name);
    assert!(st.contains("state:          orphaned"), "{st}");
    assert_eq!(status_value(&name, "queued"), 2, "{st}");
    assert_eq!(status_value(&name, "lost"), 1, "{st}");
    let out = ipcctl(&["clean", "--prefix", name.as_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        name.path().exists(),
        "clean removed an orphan with undelivered messages: {}",
        text(&out)
    );
    let list = ipcctl(&["list"]);
    let line = String::from_utf8_lossy(&list.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("not listed: {}", text(&list)));
    let cols: Vec<_> = line.split_whitespace().collect();
    assert_eq!(cols[2], "orphaned", "{line}");
    assert_eq!(cols[3], "2", "{line}");
    // The survivors are delivered to a new receiver.
    let mb = Mailbox::open(name.as_str()).unwrap();
    let mut r = mb.receiver().unwrap();
    assert_eq!(r.try_recv().unwrap(), msg(1, 1));
    assert_eq!(r.try_recv().unwrap(), msg(1, 2));
}

/// Same for a sender killed holding the writers' lock (a zero-copy claim)
/// after committing messages, on a mailbox and on a `SharedBuffer::create`
/// buffer: status counts one abandoned write and the committed ones
/// queued, and `clean` keeps the segment.
fn clean_with_dead_writer(buffer: bool) {
    let name = ShmName::new(if buffer {
        "rv11-clean-wbuf"
    } else {
        "rv11-clean-wmb"
    });
    if buffer {
        SharedBuffer::create(
            name.as_str(),
            &BufferConfig {
                capacity: 8,
                max_message: 64,
                ..Default::default()
            },
        )
        .unwrap();
    } else {
        mailbox(&name, Capacity::Bounded(8), 64);
    }
    let mut c = child(
        if buffer {
            "hold-claim-buffer"
        } else {
            "hold-claim"
        },
        &name,
        3,
    );
    let st = status_text(&name);
    assert!(st.contains("state:          live"), "{st}");
    // `remove` refuses while the holder lives.
    let out = ipcctl(&["remove", name.as_str()]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    c.kill();
    let st = status_text(&name);
    assert!(st.contains("state:          orphaned"), "{st}");
    assert_eq!(status_value(&name, "queued"), 3, "{st}");
    assert_eq!(status_value(&name, "abandoned"), 1, "{st}");
    assert!(!st.contains("in flight"), "{st}");
    let out = ipcctl(&["clean", "--prefix", name.as_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        name.path().exists(),
        "clean removed undelivered messages: {}",
        text(&out)
    );
    let out = ipcctl(&["clean", "--discard", "--prefix", name.as_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !name.path().exists(),
        "clean --discard kept it: {}",
        text(&out)
    );
}

#[test]
fn clean_keeps_a_mailbox_whose_dead_sender_held_the_write_lock() {
    clean_with_dead_writer(false);
}

#[test]
fn clean_keeps_a_shared_buffer_whose_dead_sender_held_the_write_lock() {
    clean_with_dead_writer(true);
}

/// A zero-copy claim leaked with `mem::forget` blocks the other senders
/// (same process, other endpoint) only until its sender is dropped: then
/// the lock is freed, the claim counted abandoned, and the others go on.
#[test]
fn a_forgotten_claim_is_freed_when_its_sender_drops() {
    let name = ShmName::new("rv11-forget-drop");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut r = mb.receiver().unwrap();
    let mut a = mb.sender().unwrap();
    let mut b = mb.sender().unwrap();
    a.send(msg(1, 0)).unwrap();
    let mut w = a.claim(Deadline::Never).unwrap();
    w.buf()[..4].copy_from_slice(b"leak");
    std::mem::forget(w);
    // B cannot take its turn while A's claim is held (Full or Timeout,
    // message handed back).
    if let Err(e) = b.try_send(msg(2, 0)) {
        assert_eq!(e.into_inner(), msg(2, 0));
    }
    drop(a);
    let mut sent_b = false;
    for _ in 0..50 {
        match b.try_send(msg(2, 1)) {
            Ok(()) => {
                sent_b = true;
                break;
            }
            Err(SendError::Full(_)) | Err(SendError::Timeout(_)) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(sent_b, "B never got its turn after A dropped");
    let mut got = Vec::new();
    while let Ok(m) = r.try_recv() {
        got.push(m);
        assert!(got.len() < 10);
    }
    assert_eq!(got.first(), Some(&msg(1, 0)), "{got:?}");
    assert_eq!(got.last(), Some(&msg(2, 1)), "{got:?}");
    assert!(got.iter().all(|m| !m.starts_with(b"leak")), "{got:?}");
    assert_eq!(mb.status().abandoned_writes, 1);
    assert_eq!(mb.status().writing, 0);
}

/// Defect: a sender that forgot (`mem::forget`) its zero-copy claim on a
/// shared ring and sends again gets its turn back, but the forgotten
/// claim is withdrawn without being counted: `abandoned_writes` stays 0
/// (`ipcctl status` shows "abandoned: 0"), while the same claim repaired
/// by `Endpoint::drop` or by the reaper counts 1.
///
/// Root cause: packed.rs `PackedRing::take`, `Locked::Ours` arm: the
/// `Recovered` returned by `self.repair(side)` is dropped (`unsafe {
/// self.repair(side) };`) instead of reaching `Queue::count`; nothing on
/// the `try_claim_write`/`try_claim_read`/`try_retract` path reports it.
#[test]
fn a_sender_sends_again_after_forgetting_its_claim() {
    let name = ShmName::new("rv11-forget-again");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut r = mb.receiver().unwrap();
    let mut a = mb.sender().unwrap();
    let _b = mb.sender().unwrap();
    let w = a.claim(Deadline::Never).unwrap();
    std::mem::forget(w);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let res = a.send_timeout(msg(1, 1), Duration::from_secs(5));
        let _ = tx.send(res.is_ok());
        drop(a);
    });
    assert_eq!(
        rx.recv_timeout(HANG),
        Ok(true),
        "send after forget failed or hung"
    );
    assert_eq!(r.try_recv().unwrap(), msg(1, 1));
    assert_eq!(mb.status().abandoned_writes, 1);
}

/// `recv_batch` on a shared ring while another receiver process holds a
/// message in place and is then killed: the batch receiver gets every
/// other message exactly once, and one loss is counted.
#[test]
fn recv_batch_proceeds_after_the_other_receiver_is_killed_holding_the_lock() {
    let name = ShmName::new("rv11-batch-kill");
    let dir = TempDir::new("rv11-batch-kill");
    let mb = mailbox(&name, Capacity::Bounded(16), 64);
    let mut s = mb.sender().unwrap();
    for seq in 0..10 {
        s.send(msg(1, seq)).unwrap();
    }
    let mut holder = holder_in_place(&name, &dir);
    let mut r = mb.receiver().unwrap();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..20 {
            let res = r.recv_batch(4, |m| got.push(m.to_vec()));
            match res {
                Ok(_) if got.len() >= 9 => break,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:?} after {}", got.len())));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(got));
    });
    std::thread::sleep(Duration::from_millis(50));
    holder.kill();
    let got = rx.recv_timeout(HANG).expect("recv_batch hung").unwrap();
    t.join().unwrap();
    drop(s);
    let took: Vec<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("took-1-")
                .and_then(|v| v.parse().ok())
        })
        .collect();
    assert_eq!(took.len(), 1);
    let expect: Vec<Vec<u8>> = (0..10)
        .filter(|s| *s != took[0])
        .map(|s| msg(1, s))
        .collect();
    assert_eq!(got, expect);
    assert_eq!(mb.status().lost_reads, 1);
}

/// A `try_recv` right after the other receiver died holding the readers'
/// lock says what the ring holds (a message), not `Empty`: the dead
/// holder's turn is reaped within the call.
#[test]
fn try_recv_after_the_lock_holder_died_takes_a_message() {
    let name = ShmName::new("rv11-tryrecv-dead");
    let dir = TempDir::new("rv11-tryrecv-dead");
    let mb = mailbox(&name, Capacity::Bounded(16), 64);
    let mut s = mb.sender().unwrap();
    for seq in 0..4 {
        s.send(msg(1, seq)).unwrap();
    }
    let mut r = mb.receiver().unwrap();
    let mut holder = holder_in_place(&name, &dir);
    // A reap just happened on our mapping (status reaps).
    let _ = mb.status();
    holder.kill();
    let got = r.try_recv();
    assert!(
        got.is_ok(),
        "try_recv with 3 messages queued and a dead holder: {got:?}"
    );
}

/// Same for `try_send` with a sender that died holding the writers' lock.
#[test]
fn try_send_after_the_lock_holder_died_sends() {
    let name = ShmName::new("rv11-trysend-dead");
    let mb = mailbox(&name, Capacity::Bounded(16), 64);
    let mut r = mb.receiver().unwrap();
    let mut s = mb.sender().unwrap();
    let mut c = child("hold-claim", &name, 1);
    let _ = mb.status();
    c.kill();
    let res = s.try_send(msg(2, 0));
    assert!(res.is_ok(), "try_send with room and a dead holder: {res:?}");
    assert_eq!(r.try_recv().unwrap(), msg(9, 0));
    assert_eq!(r.try_recv().unwrap(), msg(2, 0));
}

/// Several sender processes to one port: every message arrives once,
/// signed by its sender, in each sender's order.
#[test]
fn a_port_receives_from_several_sender_processes() {
    let me = ShmName::new("rv11-port");
    let port_name = format!("{}-own", me.as_str());
    let _guard = ShmName(ipc_core::ports::mailbox_name(&port_name));
    let mut port = ipc_core::ports::Port::register(&port_name, &MailboxConfig::default()).unwrap();
    // End of stream only once all three came and went (one may finish
    // before the next attaches).
    port.set_min_senders(3);
    let senders: Vec<String> = (0..3).map(|i| format!("{}-s{i}", me.as_str())).collect();
    let mut kids: Vec<ChildGuard> = senders
        .iter()
        .map(|s| {
            ChildGuard::new(
                Command::new(PEER)
                    .args(["port-send", s, &port_name, "--count", "20"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut next = vec![0u32; 3];
    for _ in 0..60 {
        let m = port.recv_timeout(HANG).expect("a port message");
        let i = senders
            .iter()
            .position(|s| *s == m.from)
            .unwrap_or_else(|| panic!("from {}", m.from));
        assert_eq!(m.payload, format!("{}-{}", m.from, next[i]).into_bytes());
        next[i] += 1;
    }
    assert_eq!(next, vec![20, 20, 20]);
    for k in &mut kids {
        assert!(k.wait_timeout(HANG).is_some_and(|s| s.success()));
    }
}

/// A sender blocked (no deadline) behind a forgotten claim of another
/// sender of the same process is woken when that sender drops; on a
/// bounded and on a rendezvous mailbox.
fn blocked_sender_woken_by_drop(capacity: Capacity) {
    let name = ShmName::new("rv11-forget-wake");
    let mb = mailbox(&name, capacity, 64);
    let mut r = mb.receiver().unwrap();
    let mut a = mb.sender().unwrap();
    let mut b = mb.sender().unwrap();
    let w = a.claim(Deadline::Never).unwrap();
    std::mem::forget(w);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let res = b.send(msg(2, 0));
        let _ = tx.send(res.is_ok());
        drop(b);
    });
    // Let B block on the turn.
    std::thread::sleep(Duration::from_millis(100));
    drop(a);
    if capacity == Capacity::Zero {
        let m = std::thread::spawn(move || {
            let m = r.recv_timeout(HANG);
            (m, r)
        });
        let (m, _r) = m.join().unwrap();
        assert_eq!(m.unwrap(), msg(2, 0));
        assert_eq!(rx.recv_timeout(HANG), Ok(true), "B never finished");
    } else {
        assert_eq!(
            rx.recv_timeout(HANG),
            Ok(true),
            "B stayed blocked after A dropped"
        );
        assert_eq!(r.try_recv().unwrap(), msg(2, 0));
    }
}

#[test]
fn a_bounded_sender_blocked_behind_a_forgotten_claim_is_woken_by_its_drop() {
    blocked_sender_woken_by_drop(Capacity::Bounded(8));
}

#[test]
fn a_rendezvous_sender_blocked_behind_a_forgotten_claim_is_woken_by_its_drop() {
    blocked_sender_woken_by_drop(Capacity::Zero);
}

/// A `recv_with` callback that panics on a shared ring gives the readers'
/// lock back (another receiver of the same process goes on) and counts
/// one lost read.
#[test]
fn a_panicking_in_place_reader_frees_the_read_lock() {
    let name = ShmName::new("rv11-panic-read");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut s = mb.sender().unwrap();
    for seq in 0..3 {
        s.send(msg(1, seq)).unwrap();
    }
    let mut r1 = mb.receiver().unwrap();
    let mut r2 = mb.receiver().unwrap();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = r1.recv_with(|_| panic!("boom"));
    }));
    assert!(res.is_err());
    assert_eq!(r2.try_recv().unwrap(), msg(1, 1));
    assert_eq!(r1.try_recv().unwrap(), msg(1, 2));
    assert_eq!(mb.status().lost_reads, 1);
    assert_eq!(mb.status().reading, 0);
}
