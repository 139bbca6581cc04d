//! Review 7 reproducers for the shared packed ring (commit be4323b):
//! bounded and rendezvous queues shared by many senders and receivers,
//! each side's claims taken in turn under a lock word on its cursor.
//!
//! Real processes where a peer must die or hold a lock (the
//! `mailbox-peer` binary, killed by its PID); the crash states a SIGKILL
//! leaves between two stores are written into the live segment through a
//! second mapping of its file, exactly as the killed peer's stores would
//! have left them. Bounded waits only (a hang fails the test); no timing
//! assertions.

use std::io::{BufRead, BufReader, Write};
use std::mem::offset_of;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ipc_core::layout::{Cursor, Header};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{BufferConfig, RecvError, SendError, SharedBuffer};
use ipc_tests::{wait_until, ChildGuard, Mapping, ShmName, TempDir};

const PEER: &str = env!("CARGO_BIN_EXE_mailbox-peer");

/// Long enough for a loaded 2-core machine; a call still blocked after it
/// is blocked for good (its own timeout is a few milliseconds).
const HANG: Duration = Duration::from_secs(20);

fn head_word(m: &Mapping, field: usize) -> &AtomicU64 {
    m.word(offset_of!(Header, head) + field)
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

/// A `mailbox-peer` test message: `[id u32][seq u64]`.
fn msg(id: u32, seq: u64) -> Vec<u8> {
    [&id.to_le_bytes()[..], &seq.to_le_bytes()[..]].concat()
}

/// A `mailbox-peer` child started with `--ready`: attached, waiting for a
/// line on stdin before it starts. Returns the guard and its stdin.
fn peer_ready(args: &[&str]) -> (ChildGuard, std::process::ChildStdin) {
    let mut child = Command::new(PEER)
        .args(args)
        .arg("--ready")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mailbox-peer");
    let stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let guard = ChildGuard::new(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the peer did not attach");
    // Keep reading its stdout so that it never blocks writing.
    std::thread::spawn(move || for _ in out.lines() {});
    (guard, stdin)
}

/// A child receiver that takes one message in place (`recv_with`) and
/// holds it (and so the readers' lock) for ten minutes, after creating
/// its marker `took-ID-SEQ` in `dir`.
fn holder_in_place(name: &ShmName, dir: &TempDir) -> ChildGuard {
    let (child, mut stdin) = peer_ready(&[
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
    ]);
    writeln!(stdin).unwrap();
    // Leaked on purpose: closing it is harmless, but the child no longer
    // reads it.
    std::mem::forget(stdin);
    child
}

/// Defect: a rendezvous `send_timeout` does not return while *another*
/// receiver reads a message in place (`recv_with`). Its timeout expires,
/// and withdrawing its offer (`Tx::retract`) needs the readers' lock,
/// which the in-place reader holds until its callback returns: `retract`
/// loops without any bound (`for turn in 0u32..`, yield / 200 µs naps),
/// only reaping dead holders. A receiver that holds a message for an hour
/// (or is SIGSTOPped in its callback) blocks every rendezvous sender whose
/// offer it did not take, far past their deadlines.
///
/// Root cause: channel.rs `Tx::commit` → `Tx::retract`, packed.rs
/// `PackedRing::try_retract` (takes `Side::Read`'s lock; `None` while a
/// live reader holds it, for as long as it holds it).
#[test]
fn a_rendezvous_send_timeout_returns_while_another_receiver_reads_in_place() {
    let name = ShmName::new("rv7-rdv-timeout");
    let dir = TempDir::new("rv7-rdv-timeout");
    let mb = mailbox(&name, Capacity::Zero, 64);
    let mut holder = holder_in_place(&name, &dir);
    // Sender 1's offer is taken, in place, by the child: it returns.
    let mut s1 = mb.sender().unwrap();
    // (A rendezvous send returns once its receiver let go of the message;
    // this one holds it: the send's timeout passes, and it returns `Ok`,
    // the message being held.)
    s1.send_timeout(msg(1, 0), Duration::from_secs(1))
        .expect("the child receiver takes the first offer");
    wait_until("the child holds message 1/0", || {
        dir.file("took-1-0").exists()
    });
    // Sender 2 offers with a 50 ms timeout: nobody else receives.
    let mut s2 = mb.sender().unwrap();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let r = s2
            .send_timeout(msg(2, 0), Duration::from_millis(50))
            .map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    let got = rx.recv_timeout(HANG);
    // Unblock it either way: the reaper frees the dead child's lock.
    holder.kill();
    t.join().unwrap();
    match got {
        Ok(r) => assert!(
            r.is_err(),
            "nobody took offer 2/0, yet its send returned {r:?}"
        ),
        Err(_) => panic!(
            "send_timeout(50 ms) on a rendezvous mailbox still blocked after {HANG:?}, \
             while another receiver held an earlier message in place"
        ),
    }
}

/// Defect: the same with `try_send`, which must not block: once a
/// receiver waits (so that `try_send` offers), an in-place reader holding
/// another message keeps the waiting receiver from taking the offer, and
/// the offer's withdrawal (after `RENDEZVOUS_GRACE`) from completing.
/// `try_send` blocks for as long as the in-place reader holds its message.
///
/// Root cause: as above (`Tx::commit` with `Deadline::Now` waits the
/// grace, then `Tx::retract` waits, unbounded, for the readers' lock).
#[test]
fn a_rendezvous_try_send_does_not_block_while_another_receiver_reads_in_place() {
    let name = ShmName::new("rv7-rdv-try");
    let dir = TempDir::new("rv7-rdv-try");
    let mb = mailbox(&name, Capacity::Zero, 64);
    let mut holder = holder_in_place(&name, &dir);
    let mut s1 = mb.sender().unwrap();
    // (A rendezvous send returns once its receiver let go of the message;
    // this one holds it: the send's timeout passes, and it returns `Ok`,
    // the message being held.)
    s1.send_timeout(msg(1, 0), Duration::from_secs(1))
        .expect("the child receiver takes the first offer");
    wait_until("the child holds message 1/0", || {
        dir.file("took-1-0").exists()
    });
    // A second receiver waits (blocked: the readers' lock is the child's).
    let mut r2 = mb.receiver().unwrap();
    let waiter = std::thread::spawn(move || {
        r2.recv_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())
    });
    let mut s2 = mb.sender().unwrap();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        // Until the waiting receiver is seen, try_send says Full at once;
        // each attempt reports back.
        for i in 0..100u64 {
            let r = s2.try_send(msg(2, i));
            let done = !matches!(r, Err(SendError::Full(_)));
            let _ = tx.send(r.map_err(|e| e.to_string()));
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut blocked = false;
    loop {
        match rx.recv_timeout(HANG) {
            Ok(Ok(())) | Ok(Err(_)) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                blocked = true;
                break;
            }
        }
    }
    holder.kill();
    t.join().unwrap();
    let _ = waiter.join().unwrap();
    assert!(
        !blocked,
        "try_send on a rendezvous mailbox blocked for {HANG:?} while another receiver \
         held an earlier message in place"
    );
}

/// Defect: a receiver SIGKILLed while it passes over a withdrawn
/// rendezvous offer, between its two stores (`head.count` += 1, then
/// `head.pos` past the record), leaves the queue unreadable for good:
/// every later receive reports the withdrawn record's header as corrupt
/// ("sequence N where N+1 was due"), though no process scribbled.
///
/// Root cause: packed.rs `claim_read` stores the count first "as
/// `release` does", but `release` is repairable because the read is
/// marked (`READING` in `head.pos`) and `repair_reader` then tells from
/// the sequence that the count was already stored. Passing a withdrawn
/// record sets no mark, so `repair_reader` (via `recover_owner`, when the
/// dead holder's read lock is freed) returns at once (`raw & READING ==
/// 0`) and leaves the count one ahead of the position.
///
/// The crash state is written as the killed reader's stores leave it:
/// the read lock taken by the child's attachment index (turn moved on),
/// `head.count` advanced over the withdrawn record, `head.pos` not.
#[test]
fn a_reader_killed_passing_a_withdrawn_offer_leaves_the_queue_readable() {
    let name = ShmName::new("rv7-withdrawn-kill");
    let mb = mailbox(&name, Capacity::Zero, 64);
    let mut s = mb.sender().unwrap();
    // An offer nobody takes: withdrawn when its timeout expires.
    assert!(matches!(
        s.send_timeout(b"withdrawn", Duration::from_millis(20)),
        Err(SendError::Timeout(_))
    ));
    let (mut child, _stdin) = peer_ready(&["recv", name.as_str(), "--count", "1"]);
    let pid = child.pid();
    let index = mb
        .status()
        .peers
        .iter()
        .find(|p| p.pid == pid)
        .expect("the child receiver is attached")
        .index;
    let m = Mapping::new(&name);
    let lock = head_word(&m, offset_of!(Cursor, lock));
    let count = head_word(&m, offset_of!(Cursor, count));
    let pos = head_word(&m, offset_of!(Cursor, pos));
    // (After the fix, the withdrawing sender passes over its record at
    // the head at once, marking it held first: position 24, count 1.)
    assert_eq!(
        (pos.load(Ordering::Relaxed), count.load(Ordering::Relaxed)),
        (24, 1)
    );
    // The child takes the read lock, finds the withdrawn record at 0,
    // marks it held, counts it as read... and is killed before moving
    // its position on.
    let w = lock.load(Ordering::Relaxed);
    assert_eq!(w & 0xFFFF, 0, "the read lock is free");
    lock.store(
        w.wrapping_add(1 << 32) | (index as u64 + 1),
        Ordering::Relaxed,
    );
    pos.store(1 << 63, Ordering::Relaxed);
    child.kill();
    // A new offer and a receiver: the dead reader is reaped, its lock
    // freed, and the offer should arrive.
    let mut rx = mb.receiver().unwrap();
    let t = std::thread::spawn(move || s.send_timeout(b"after", HANG).map_err(|e| e.to_string()));
    let got = rx.recv_timeout(HANG);
    drop(rx);
    let sent = t.join().unwrap();
    assert_eq!(
        got.as_deref().map_err(|e| e.to_string()),
        Ok(&b"after"[..]),
        "receive after a reader died passing a withdrawn offer (send: {sent:?}; status: \
         lost_reads={} dead_consumers={})",
        mb.status().lost_reads,
        mb.status().dead_consumers,
    );
}

/// Defect: `status()` (and `ipcctl status`) counts a withdrawn rendezvous
/// offer as a queued message until some receiver passes over it: after a
/// `send_timeout` that timed out, status reports `len == 1` although
/// nothing can be received (`try_recv` says Empty).
///
/// Root cause: packed.rs `census`/`len` count `tail.count - head.count`;
/// a withdrawn record stays counted as written and is counted as read
/// only when a reader walks over it (`claim_read`).
#[test]
fn a_withdrawn_offer_is_not_reported_as_queued() {
    let name = ShmName::new("rv7-withdrawn-status");
    let mb = mailbox(&name, Capacity::Zero, 64);
    let mut s = mb.sender().unwrap();
    assert!(matches!(
        s.send_timeout(b"nobody", Duration::from_millis(20)),
        Err(SendError::Timeout(_))
    ));
    let queued = mb.status().len;
    let mut rx = mb.receiver().unwrap();
    assert!(matches!(rx.try_recv(), Err(RecvError::Empty)));
    assert_eq!(
        queued, 0,
        "status counts {queued} queued message(s) on a rendezvous mailbox whose only offer \
         was withdrawn"
    );
}

/// Passing check: several receivers draining a shared bounded mailbox
/// after its only sender left each end with `Disconnected` (never a
/// Corrupt "counted as queued" error from the end-of-stream check, which
/// looks at the readers' lock), and together get every message once.
#[test]
fn several_receivers_drain_then_all_see_end_of_stream() {
    for round in 0..40u32 {
        let name = ShmName::new("rv7-drain");
        let mb = mailbox(&name, Capacity::Bounded(16), 32);
        let mut s = mb.sender().unwrap();
        let receivers: Vec<_> = (0..3).map(|_| mb.receiver().unwrap()).collect();
        let per = 200u64;
        let sender = std::thread::spawn(move || {
            for i in 0..per {
                s.send_timeout(i.to_le_bytes(), HANG).unwrap();
            }
        });
        let handles: Vec<_> = receivers
            .into_iter()
            .map(|mut r| {
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        match r.recv_timeout(HANG) {
                            Ok(m) => got.push(u64::from_le_bytes(m[..8].try_into().unwrap())),
                            Err(e) => return (got, e.to_string()),
                        }
                    }
                })
            })
            .collect();
        sender.join().unwrap();
        let mut all = Vec::new();
        for h in handles {
            let (got, end) = h.join().unwrap();
            assert_eq!(
                end,
                RecvError::Disconnected.to_string(),
                "round {round}: a receiver ended with {end}"
            );
            all.extend(got);
        }
        all.sort_unstable();
        assert_eq!(all, (0..per).collect::<Vec<_>>(), "round {round}");
    }
}

/// Passing check: a mailbox or buffer for 1 MiB messages costs its byte
/// budget (a few MiB), not capacity x max_message, and so does a
/// rendezvous mailbox (64 offer slots).
#[test]
fn a_mailbox_for_1_mib_messages_costs_its_budget() {
    const MIB: u64 = 1 << 20;
    for capacity in [
        Capacity::Bounded(64),
        Capacity::Zero,
        Capacity::Bounded(1000),
    ] {
        let name = ShmName::new("rv7-size");
        let mb = mailbox(&name, capacity, MIB as u32);
        let size = std::fs::metadata(name.path()).unwrap().len();
        assert!(
            size <= 4 * MIB + 256 * 1024,
            "{capacity:?}: {size} bytes in /dev/shm"
        );
        // And it works at the maximum size, many senders and receivers.
        let mut s = mb.sender().unwrap();
        let mut r = mb.receiver().unwrap();
        let big = vec![7u8; MIB as usize];
        if capacity != Capacity::Zero {
            s.send(&big[..]).unwrap();
            assert_eq!(r.recv().unwrap().len(), MIB as usize);
        }
        drop(mb);
    }
    let name = ShmName::new("rv7-size-buf");
    let _buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 256,
            max_message: MIB as u32,
            ..Default::default()
        },
    )
    .unwrap();
    let size = std::fs::metadata(name.path()).unwrap().len();
    assert!(
        size <= 4 * MIB + 256 * 1024,
        "SharedBuffer: {size} bytes in /dev/shm"
    );
}

/// Defect: a receiver that `expect_new_senders` (named-pipe behaviour:
/// "a receiver that comes after every sender left and finds nothing waits
/// for a new sender instead of ending at once") ends at once with
/// `Disconnected` on a rendezvous mailbox whose last sender's offer timed
/// out and was withdrawn: the withdrawn record is counted as a queued
/// message, so the receiver believes it came while messages were queued.
///
/// Root cause: endpoint/queue.rs `Endpoint::expect_new_peers` takes
/// `q.queued() > 0` as "messages were queued"; packed.rs `len` counts a
/// withdrawn record (`WITHDRAWN`) until a reader walks over it.
#[test]
fn a_receiver_expecting_new_senders_waits_after_a_withdrawn_offer() {
    let name = ShmName::new("rv7-withdrawn-pipe");
    let mb = mailbox(&name, Capacity::Zero, 64);
    let mut s = mb.sender().unwrap();
    assert!(matches!(
        s.send_timeout(b"nobody", Duration::from_millis(20)),
        Err(SendError::Timeout(_))
    ));
    drop(s);
    let mut rx = mb.receiver().unwrap();
    rx.expect_new_senders();
    let got = rx.recv_timeout(Duration::from_millis(300));
    assert!(
        matches!(got, Err(RecvError::Timeout)),
        "a receiver expecting new senders, with no sender attached and nothing to read, \
         got {got:?} (want Timeout: it waits for a new sender)"
    );
}

/// Defect (documented contract): `try_recv` "receives a message if one
/// is queued now; Empty otherwise". On a shared bounded mailbox, while
/// one receiver reads a message in place (`recv_with`), another
/// receiver's `try_recv` says `Empty` although a second message is queued
/// (`len()` says so): the readers' lock is held for the whole callback,
/// and `while_busy` gives up after 100 ms. The same holds for
/// `recv_timeout` of any length shorter than the callback.
///
/// Root cause: packed.rs shared rings take every read claim under the
/// readers' lock and `try_claim_read` holds it until `release`
/// (channel.rs `deliver_then` releases after the callback); channel.rs
/// `Rx::recv_with` with `Deadline::Now` ends in `Empty` once
/// `while_busy` runs out.
#[test]
#[ignore = "known limitation, documented in README and mailbox.rs: a shared ring's receivers take turns, and an in-place read (recv_with) holds the turn for its callback"]
fn try_recv_takes_a_queued_message_while_another_receiver_reads_in_place() {
    let name = ShmName::new("rv7-try-recv-busy");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut s = mb.sender().unwrap();
    s.send(b"first").unwrap();
    s.send(b"second").unwrap();
    let mut r1 = mb.receiver().unwrap();
    let mut r2 = mb.receiver().unwrap();
    let (first, (queued, second)) = r1
        .recv_with(|m| {
            (
                m.to_vec(),
                (r2.len(), r2.try_recv().map_err(|e| e.to_string())),
            )
        })
        .unwrap();
    assert_eq!(first, b"first");
    assert!(queued >= 1, "len() says {queued}");
    assert_eq!(
        second.as_deref(),
        Ok(&b"second"[..]),
        "try_recv with {queued} message(s) queued, while another receiver reads in place"
    );
}

/// Runs as a child peer when `REVIEW7_ROLE` is set (the test binary
/// re-executed by the tests below); otherwise does nothing.
///
/// * `hold-claim NAME`: a mailbox sender that claims room (zero copy),
///   writes part of a message, prints `holding`, and sleeps for ever
///   (holding the writers' lock).
#[test]
fn review7_child_peer() {
    let Ok(role) = std::env::var("REVIEW7_ROLE") else {
        return;
    };
    // SAFETY: prctl with constant arguments: die with the parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let name = std::env::var("REVIEW7_NAME").unwrap();
    match role.as_str() {
        "hold-claim" => {
            let mb = Mailbox::open(&name).unwrap();
            let mut s = mb.sender().unwrap();
            let mut w = s.claim(ipc_core::Deadline::Never).unwrap();
            w.buf()[..4].copy_from_slice(b"half");
            println!("holding");
            std::io::stdout().flush().unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// The test binary re-executed as `review7_child_peer` in `role`; returns
/// once it printed `holding`.
fn child(role: &str, name: &ShmName) -> ChildGuard {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([
            "review7_child_peer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REVIEW7_ROLE", role)
        .env("REVIEW7_NAME", name.as_str())
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
    rx.recv_timeout(HANG).expect("the child peer got ready");
    guard
}

/// Passing check: a sender SIGKILLed holding a claim (the writers' lock,
/// mid-copy) is reaped: its lock is freed, a blocked sender goes on, the
/// half-written message is never delivered, and it is counted once as
/// abandoned.
#[test]
fn a_sender_killed_holding_its_claim_is_repaired_and_counted() {
    let name = ShmName::new("rv7-kill-claim");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut rx = mb.receiver().unwrap();
    let mut holder = child("hold-claim", &name);
    assert_eq!(mb.status().writing, 1);
    let mut s = mb.sender().unwrap();
    // Blocked behind the live holder's turn until the holder is reaped.
    let t = std::thread::spawn(move || {
        let r = s.send_timeout(b"after", HANG).map_err(|e| e.to_string());
        (s, r)
    });
    std::thread::sleep(Duration::from_millis(100));
    holder.kill();
    let (_s, r) = t.join().unwrap();
    assert_eq!(r, Ok(()));
    assert_eq!(rx.recv_timeout(HANG).unwrap(), b"after");
    let rest = rx.try_recv();
    assert!(matches!(rest, Err(RecvError::Empty)), "{rest:?}");
    let st = mb.status();
    assert_eq!(
        (
            st.abandoned_writes,
            st.dead_producers,
            st.lost_reads,
            st.writing
        ),
        (1, 1, 0, 0),
        "{st:?}"
    );
}

/// Passing check: a sender frozen (SIGSTOP) holding the writers' lock
/// bounds every other call: `send_timeout` times out, `try_send` says
/// Full, `recv_timeout` times out, `status` answers (the frozen peer is
/// alive, nothing repaired); once it is killed, all goes on.
#[test]
fn a_frozen_claim_holder_bounds_every_timeout() {
    let name = ShmName::new("rv7-stop-claim");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut rx = mb.receiver().unwrap();
    let mut holder = child("hold-claim", &name);
    // SAFETY: kill(2) on the pid of our own child.
    assert_eq!(unsafe { libc::kill(holder.pid() as i32, libc::SIGSTOP) }, 0);
    let mut s = mb.sender().unwrap();
    let (tx, rx_done) = mpsc::channel();
    let mut s2 = mb.sender().unwrap();
    let t = std::thread::spawn(move || {
        let a = s2
            .send_timeout(b"x", Duration::from_millis(50))
            .map_err(|e| e.to_string());
        let b = s2.try_send(b"y").map_err(|e| e.to_string());
        let _ = tx.send((a, b));
    });
    let got = rx_done.recv_timeout(HANG);
    let r = rx.recv_timeout(Duration::from_millis(50));
    let st = mb.status();
    // SAFETY: as above.
    unsafe { libc::kill(holder.pid() as i32, libc::SIGCONT) };
    holder.kill();
    t.join().unwrap();
    let (a, b) = got.expect("send_timeout and try_send returned while a writer was frozen");
    assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
    assert!(matches!(r, Err(RecvError::Timeout)), "{r:?}");
    assert_eq!((st.writing, st.abandoned_writes), (1, 0), "{st:?}");
    s.send_timeout(b"after", HANG).unwrap();
    assert_eq!(rx.recv_timeout(HANG).unwrap(), b"after");
    assert_eq!(mb.status().abandoned_writes, 1);
}

/// Passing check: a receiver SIGKILLed while it reads a message in place
/// (holding the readers' lock) is reaped: that one message is counted
/// lost, the next is delivered to another receiver.
#[test]
fn a_receiver_killed_reading_in_place_loses_one_message_counted() {
    let name = ShmName::new("rv7-kill-reader");
    let dir = TempDir::new("rv7-kill-reader");
    let mb = mailbox(&name, Capacity::Bounded(8), 64);
    let mut s = mb.sender().unwrap();
    s.send(msg(1, 0)).unwrap();
    s.send(msg(1, 1)).unwrap();
    let mut holder = holder_in_place(&name, &dir);
    wait_until("the child holds message 1/0", || {
        dir.file("took-1-0").exists()
    });
    let mut rx = mb.receiver().unwrap();
    holder.kill();
    assert_eq!(rx.recv_timeout(HANG).unwrap(), msg(1, 1));
    let st = mb.status();
    assert_eq!(
        (st.lost_reads, st.dead_consumers, st.reading),
        (1, 1, 0),
        "{st:?}"
    );
}

/// Passing check: rendezvous with short timeouts while other receivers
/// read in place, across processes: three senders (`send_timeout` of
/// 3 ms, retried with the message handed back) and three receivers
/// (`recv_with`, holding each message 1 ms). Every message is received
/// exactly once (a send that timed out was withdrawn, never delivered as
/// well), and every receiver sees end of stream.
#[test]
fn rendezvous_timeouts_with_in_place_readers_deliver_exactly_once() {
    let name = ShmName::new("rv7-rdv-stress");
    let dir = TempDir::new("rv7-rdv-stress");
    let _mb = mailbox(&name, Capacity::Zero, 64);
    let per = 150u64;
    let spawn = |args: Vec<String>| {
        ChildGuard::new(
            Command::new(PEER)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    };
    let d = dir.path().to_str().unwrap().to_owned();
    let receivers: Vec<_> = (0..3)
        .map(|k| {
            spawn(
                [
                    "recv",
                    name.as_str(),
                    "--op",
                    "with",
                    "--hold-ms",
                    "1",
                    "--marker-dir",
                    &d,
                    "--min-senders",
                    "3",
                    "--out",
                    &format!("{d}/out-{k}"),
                ]
                .map(str::to_owned)
                .to_vec(),
            )
        })
        .collect();
    let senders: Vec<_> = (1..=3)
        .map(|id| {
            spawn(
                [
                    "send",
                    name.as_str(),
                    "--op",
                    "timeout",
                    "--timeout-ms",
                    "3",
                    "--retry",
                    "--count",
                    &per.to_string(),
                    "--id",
                    &id.to_string(),
                    "--marker-dir",
                    &d,
                    "--patience-ms",
                    "120000",
                ]
                .map(str::to_owned)
                .to_vec(),
            )
        })
        .collect();
    let text = |g: ChildGuard| {
        let o = g.output_timeout(Duration::from_secs(180));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let sent: Vec<String> = senders.into_iter().map(text).collect();
    let got: Vec<String> = receivers.into_iter().map(text).collect();
    for s in &sent {
        // (`early` may be non-zero: a message counts as taken once a
        // receiver claims it, a moment before its callback makes the
        // marker.)
        assert!(s.contains(&format!("sent={per} ")), "sender: {s}");
    }
    for g in &got {
        assert!(
            g.contains("bad=0") && g.contains("end=disconnected"),
            "receiver: {g}"
        );
    }
    let mut all = Vec::new();
    for k in 0..3 {
        let bytes = std::fs::read(dir.file(&format!("out-{k}"))).unwrap();
        for rec in bytes.chunks(12) {
            let id = u32::from_le_bytes(rec[..4].try_into().unwrap());
            let seq = u64::from_le_bytes(rec[4..12].try_into().unwrap());
            all.push((id, seq));
        }
    }
    all.sort_unstable();
    let want: Vec<_> = (1..=3u32)
        .flat_map(|id| (0..per).map(move |s| (id, s)))
        .collect();
    assert_eq!(all.len(), want.len(), "senders {sent:?} receivers {got:?}");
    assert_eq!(all, want, "each message exactly once");
}

/// Passing check (a stress of the end-of-stream check, which reads the
/// queued count, then the readers' lock): many receivers racing for the
/// last message of a stream each end with `Disconnected`, never with a
/// Corrupt "counted as queued, none to read" error, and exactly one gets
/// the message.
#[test]
fn receivers_racing_for_the_last_message_all_end_cleanly() {
    for round in 0..300u32 {
        let name = ShmName::new("rv7-last");
        let mb = mailbox(&name, Capacity::Bounded(4), 16);
        let mut s = mb.sender().unwrap();
        let receivers: Vec<_> = (0..6).map(|_| mb.receiver().unwrap()).collect();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(7));
        let handles: Vec<_> = receivers
            .into_iter()
            .map(|mut r| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                    let mut n = 0;
                    loop {
                        match r.try_recv() {
                            Ok(_) => n += 1,
                            Err(RecvError::Empty) => std::thread::yield_now(),
                            Err(e) => return (n, e.to_string()),
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        s.send(b"last").unwrap();
        drop(s);
        let mut total = 0;
        for h in handles {
            let (n, end) = h.join().unwrap();
            assert_eq!(end, RecvError::Disconnected.to_string(), "round {round}");
            total += n;
        }
        assert_eq!(total, 1, "round {round}");
    }
}
