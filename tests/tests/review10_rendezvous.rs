//! Review 10 reproducers for rendezvous mailboxes on the shared packed
//! ring (commit f2184a6): one offer at a time, a send returns once its
//! receiver let go of the message, a withdrawn offer is passed over at
//! the head.
//!
//! Real processes where a peer must die (the `mailbox-peer` binary,
//! killed by its PID). Bounded waits only (a hang fails the test); no
//! timing assertions.

use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{RecvError, SendError};
use ipc_tests::{wait_until, ChildGuard, ShmName, TempDir};

const PEER: &str = env!("CARGO_BIN_EXE_mailbox-peer");

/// Long enough for a loaded 2-core machine; a call still blocked after it
/// is blocked for good.
const HANG: Duration = Duration::from_secs(20);

/// Largest message of the mailboxes below: their ring is 256 bytes (the
/// least for 64-byte messages), a 64-byte message's record 72 bytes, so
/// the fourth record of a lap does not fit before the end (216 + 72 >
/// 256): the writer puts a padding record at 216 and the offer at 256.
const MAX: u32 = 64;

fn rendezvous(name: &ShmName) -> Mailbox {
    Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Zero,
            max_message: MAX,
            ..Default::default()
        },
    )
    .unwrap()
}

/// `n` rendezvous of `MAX`-byte messages between a sender thread and the
/// calling thread, so that the cursors stand `n` records on.
fn meet(mb: &Mailbox, n: u8) {
    let mut s = mb.sender().unwrap();
    let mut r = mb.receiver().unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..n {
            s.send_timeout([i; MAX as usize], HANG).unwrap();
        }
    });
    for i in 0..n {
        assert_eq!(r.recv_timeout(HANG).unwrap(), [i; MAX as usize]);
    }
    t.join().unwrap();
}

/// Defect: an offer withdrawn right after the ring's wrap is still
/// counted as queued: `status().len` says 1 although nothing can be
/// received (`try_recv` says Empty). Review 7's fix (pass over a
/// withdrawn record at the head at once) assumes "an offer is always at
/// the head" (README, RELIABILITY.md); it is not when the writer had to
/// put a padding record before it to wrap: the head stands at the
/// padding, and the record is only marked `WITHDRAWN`, counted written
/// and not read until some receiver walks over it.
///
/// Root cause: packed.rs `PackedRing::try_retract` passes over only if
/// `head == pos`; with `head < pos` (a padding record in between, which
/// only `claim_read` passes) it takes the second branch.
#[test]
fn an_offer_withdrawn_after_the_wrap_is_not_reported_as_queued() {
    let name = ShmName::new("rv10-wrap-status");
    let mb = rendezvous(&name);
    meet(&mb, 3);
    let mut s = mb.sender().unwrap();
    let _r = mb.receiver().unwrap();
    assert!(matches!(
        s.send_timeout([9u8; MAX as usize], Duration::from_millis(20)),
        Err(SendError::Timeout(_))
    ));
    let queued = mb.status().len;
    let mut rx = mb.receiver().unwrap();
    assert!(matches!(rx.try_recv(), Err(RecvError::Empty)));
    assert_eq!(
        queued, 0,
        "status counts {queued} queued message(s) on a rendezvous mailbox whose only offer \
         (after the wrap) was withdrawn"
    );
}

/// Defect: the same, seen by a receiver expecting new senders: with no
/// sender attached and nothing to read, it gets `Disconnected` at once
/// instead of waiting (review 7's
/// `a_receiver_expecting_new_senders_waits_after_a_withdrawn_offer`, which
/// passes only because its offer is the ring's first record).
///
/// Root cause: as above (packed.rs `try_retract` leaves the record
/// counted), read by `Endpoint::expect_new_peers` as "messages queued".
#[test]
fn a_receiver_expecting_new_senders_waits_after_an_offer_withdrawn_after_the_wrap() {
    let name = ShmName::new("rv10-wrap-pipe");
    let mb = rendezvous(&name);
    meet(&mb, 3);
    let mut s = mb.sender().unwrap();
    let keep = mb.receiver().unwrap();
    assert!(matches!(
        s.send_timeout([9u8; MAX as usize], Duration::from_millis(20)),
        Err(SendError::Timeout(_))
    ));
    drop(s);
    drop(keep);
    let mut rx = mb.receiver().unwrap();
    rx.expect_new_senders();
    let got = rx.recv_timeout(Duration::from_millis(300));
    assert!(
        matches!(got, Err(RecvError::Timeout)),
        "a receiver expecting new senders, with no sender attached and nothing to read, \
         got {got:?} (want Timeout: it waits for a new sender)"
    );
}

/// A `mailbox-peer` test message of 32 bytes: `[id u32][seq u64]` and
/// its pattern (only the header is looked at here).
fn id_seq(m: &[u8]) -> (u32, u64) {
    (
        u32::from_le_bytes(m[..4].try_into().unwrap()),
        u64::from_le_bytes(m[4..12].try_into().unwrap()),
    )
}

fn spawn(args: &[&str]) -> ChildGuard {
    ChildGuard::new(
        Command::new(PEER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mailbox-peer"),
    )
}

/// Passing check: a sender SIGKILLed while its rendezvous offer is
/// queued (committed, waiting for a receiver) does not wedge the
/// one-offer ring: its offer is delivered once (a committed record), the
/// other senders' offers follow, and receivers see end of stream once
/// the survivors leave.
#[test]
fn a_sender_killed_with_its_offer_queued_does_not_wedge_the_others() {
    let name = ShmName::new("rv10-kill-offer");
    let mb = rendezvous(&name);
    let mut r = mb.receiver().unwrap();
    let mut dead = spawn(&[
        "send",
        name.as_str(),
        "--count",
        "1",
        "--id",
        "7",
        "--size",
        "32",
    ]);
    wait_until("the child's offer is queued", || mb.status().len == 1);
    dead.kill();
    let senders: Vec<_> = (1..=2u32)
        .map(|id| {
            let mut s = mb.sender().unwrap();
            std::thread::spawn(move || {
                for seq in 0..20u64 {
                    let mut m = [0u8; 32];
                    m[..4].copy_from_slice(&id.to_le_bytes());
                    m[4..12].copy_from_slice(&seq.to_le_bytes());
                    s.send_timeout(m, HANG).map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let mut got = Vec::new();
    loop {
        match r.recv_timeout(HANG) {
            Ok(m) => got.push(id_seq(&m)),
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("receive after {} messages: {e}", got.len()),
        }
        assert!(got.len() <= 41, "more messages than were sent: {got:?}");
    }
    for t in senders {
        assert_eq!(t.join().unwrap(), Ok(()));
    }
    let dead_offer = got.iter().filter(|&&(id, _)| id == 7).count();
    assert_eq!(dead_offer, 1, "the dead sender's committed offer: {got:?}");
    for id in 1..=2u32 {
        let seqs: Vec<u64> = got.iter().filter(|m| m.0 == id).map(|m| m.1).collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "sender {id}");
    }
    assert_eq!(mb.status().dead_producers, 1);
}

/// Passing check: the only receiver SIGKILLed inside its in-place
/// callback of a rendezvous offer: the sender's `send` returns Ok (the
/// receiver took the message, as documented), the loss is counted once in
/// `lost_reads`, and the next offer reaches a new receiver.
#[test]
fn a_receiver_killed_in_its_callback_completes_the_send_and_counts_the_loss() {
    let name = ShmName::new("rv10-kill-callback");
    let dir = TempDir::new("rv10-kill-callback");
    let mb = rendezvous(&name);
    let mut holder = spawn(&[
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
    wait_until("the child receiver is attached", || {
        mb.status().peers.len() == 1
    });
    let mut s = mb.sender().unwrap();
    let t = std::thread::spawn(move || {
        // `[id 3][seq 0]`: a well-formed test message of the header only.
        let mut m = [0u8; 12];
        m[..4].copy_from_slice(&3u32.to_le_bytes());
        let first = s.send_timeout(m, HANG).map_err(|e| e.to_string());
        (s, first)
    });
    wait_until("the child holds the offer", || {
        dir.file("took-3-0").exists()
    });
    let mut r = mb.receiver().unwrap();
    holder.kill();
    let (mut s, first) = t.join().unwrap();
    assert_eq!(
        first,
        Ok(()),
        "the send whose receiver died in its callback"
    );
    let t = std::thread::spawn(move || s.send_timeout(b"second", HANG).map_err(|e| e.to_string()));
    assert_eq!(r.recv_timeout(HANG).unwrap(), b"second");
    assert_eq!(t.join().unwrap(), Ok(()));
    let st = mb.status();
    assert_eq!(
        (st.lost_reads, st.dead_consumers, st.reading, st.len),
        (1, 1, 0, 0),
        "{st:?}"
    );
}

/// Passing check: every receiver leaving while an offer is queued (at
/// each position of the lap, the wrap included) gives its sender
/// `Disconnected` with the message back, and the withdrawn message is
/// never delivered to a receiver attaching later.
#[test]
fn an_offer_queued_when_the_receivers_leave_is_handed_back_not_delivered() {
    for before in 0..6u8 {
        let name = ShmName::new("rv10-disc");
        let mb = rendezvous(&name);
        meet(&mb, before);
        let r = mb.receiver().unwrap();
        let mut s = mb.sender().unwrap();
        let t = std::thread::spawn(move || match s.send([0xAB; MAX as usize]) {
            Err(SendError::Disconnected(m)) => Ok(m == [0xAB; MAX as usize]),
            other => Err(format!("{other:?}")),
        });
        wait_until("the offer is queued", || mb.status().len == 1);
        drop(r);
        assert_eq!(t.join().unwrap(), Ok(true), "after {before} rendezvous");
        let mut late = mb.receiver().unwrap();
        let got = late.try_recv();
        // (The sender has gone with its thread: end of stream is right too.)
        assert!(
            matches!(got, Err(RecvError::Empty | RecvError::Disconnected)),
            "after {before}: {got:?}"
        );
    }
}

/// Passing check: `try_send` racing from several senders at a receiver
/// that waits, many rounds: every message whose `try_send` returned Ok
/// was received exactly once, and no other message was.
#[test]
fn racing_try_sends_deliver_exactly_the_ones_that_succeeded() {
    let name = ShmName::new("rv10-try-race");
    let mb = rendezvous(&name);
    let mut r = mb.receiver().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..3u32)
        .map(|id| {
            let mut s = mb.sender().unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for seq in 0..200_000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || ok.len() >= 60 {
                        break;
                    }
                    let mut m = [0u8; 16];
                    m[..4].copy_from_slice(&id.to_le_bytes());
                    m[4..12].copy_from_slice(&seq.to_le_bytes());
                    match s.try_send(m) {
                        Ok(()) => ok.push((id, seq)),
                        Err(SendError::Full(_)) => std::thread::yield_now(),
                        Err(e) => panic!("try_send: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    let mut got = Vec::new();
    loop {
        match r.recv_timeout(Duration::from_millis(500)) {
            Ok(m) => got.push(id_seq(&m)),
            Err(RecvError::Disconnected) => break,
            Err(RecvError::Timeout) if senders.iter().all(|t| t.is_finished()) => break,
            Err(RecvError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(got.len() <= 180, "more received than can have been sent");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ok: Vec<_> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(!ok.is_empty(), "no try_send met the waiting receiver");
    ok.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, ok, "received vs. try_send returned Ok");
}

/// Passing check: senders SIGKILLed at arbitrary points of their
/// rendezvous (`send_timeout` of 3 ms, retried) while receivers read in
/// place: no message is received twice, each sender's are in order, the
/// survivors' all arrive, and every receiver sees end of stream.
#[test]
fn senders_killed_mid_rendezvous_leave_exactly_once_delivery() {
    for round in 0..3u32 {
        let name = ShmName::new("rv10-kill-stress");
        let dir = TempDir::new("rv10-kill-stress");
        let _mb = rendezvous(&name);
        let d = dir.path().to_str().unwrap().to_owned();
        let per = 80u64;
        let receivers: Vec<_> = (0..2)
            .map(|k| {
                let out = format!("{d}/out-{k}");
                spawn(&[
                    "recv",
                    name.as_str(),
                    "--op",
                    "with",
                    "--hold-ms",
                    "1",
                    "--min-senders",
                    "4",
                    "--out",
                    &out,
                ])
            })
            .collect();
        let mut senders: Vec<_> = (1..=4u32)
            .map(|id| {
                let id = id.to_string();
                spawn(&[
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
                    &id,
                    "--size",
                    "32",
                    "--patience-ms",
                    "120000",
                ])
            })
            .collect();
        // Kill two senders after a few of their messages went.
        std::thread::sleep(Duration::from_millis(30 + 20 * round as u64));
        senders[0].kill();
        std::thread::sleep(Duration::from_millis(15));
        senders[1].kill();
        let text = |g: ChildGuard| {
            let o = g.output_timeout(Duration::from_secs(120));
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        };
        let survivors: Vec<String> = senders.drain(2..).map(text).collect();
        drop(senders);
        let got: Vec<String> = receivers.into_iter().map(text).collect();
        for s in &survivors {
            assert!(
                s.contains(&format!("sent={per} ")),
                "round {round}: sender {s}"
            );
        }
        for g in &got {
            assert!(
                g.contains("bad=0") && g.contains("end=disconnected"),
                "round {round}: receiver {g}"
            );
        }
        let mut all = Vec::new();
        for k in 0..2 {
            let bytes = std::fs::read(dir.file(&format!("out-{k}"))).unwrap();
            all.extend(bytes.chunks(12).map(id_seq));
        }
        let mut sorted = all.clone();
        sorted.sort_unstable();
        let before = sorted.len();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            before,
            "round {round}: a message received twice"
        );
        for id in 1..=4u32 {
            let seqs: Vec<u64> = sorted.iter().filter(|m| m.0 == id).map(|m| m.1).collect();
            if id >= 3 {
                assert_eq!(
                    seqs,
                    (0..per).collect::<Vec<_>>(),
                    "round {round}: sender {id}"
                );
            } else {
                let n = seqs.len() as u64;
                assert_eq!(
                    seqs,
                    (0..n).collect::<Vec<_>>(),
                    "round {round}: killed {id}"
                );
            }
        }
    }
}
