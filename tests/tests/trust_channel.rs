//! Channel semantics that must hold whatever the callers and peers do: a
//! panicking `recv_with` callback loses its message once (counted) and
//! leaks no slot; a peer flipping a slot's length field cannot make a
//! receiver panic; a receiver and a sender attaching to a fresh mailbox at
//! the same time never see `Disconnected`; `try_recv` does not say `Empty`
//! while a completed send is queued.
//!
//! Guards defects 6 (panic in `recv_with`), 7 (hostile length flip),
//! 8 (first-attach race) and 9 (`try_recv` Empty with a message queued) of
//! issue 8.

mod trust_common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{BufferConfig, SendError, SharedBuffer};
use ipc_tests::{ChildGuard, ShmName};
use trust_common::{find_record, record_header, Mapped, HANG, PEER};

fn quiet_panic<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    catch_unwind(AssertUnwindSafe(f))
}

#[test]
fn panic_in_recv_with_single_mode_does_not_redeliver() {
    let name = ShmName::new("panic-single");
    let buf = SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    tx.send(b"first").unwrap();
    tx.send(b"second").unwrap();
    let r = quiet_panic(|| rx.recv_with(|_| -> () { panic!("callback panics (on purpose)") }));
    assert!(r.is_err(), "the callback's panic propagates");
    let next = rx.recv_timeout(Duration::from_secs(5));
    let lost = buf.status().lost_reads;
    let mut problems = vec![];
    if next.as_deref() != Ok(&b"second"[..]) {
        problems.push(format!(
            "after the panic, recv gave {:?} (want \"second\": the message whose callback panicked is delivered again)",
            next.map(|m| String::from_utf8_lossy(&m).into_owned())
        ));
    }
    if lost < 1 {
        problems.push(format!("status lost_reads = {lost}, want >= 1"));
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

#[test]
fn panic_in_recv_with_mpmc_leaks_no_slot() {
    let name = ShmName::new("panic-mpmc");
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Bounded(2),
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    tx.send(b"a").unwrap();
    tx.send(b"b").unwrap();
    let r = quiet_panic(|| rx.recv_with(|_| -> () { panic!("callback panics (on purpose)") }));
    assert!(r.is_err(), "the callback's panic propagates");
    let mut problems = vec![];
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(m) if m == b"b" => {}
        other => problems.push(format!("next recv gave {other:?}, want \"b\"")),
    }
    // Drained: both slots must be free again. A few tries, in case a fix
    // releases lazily.
    let mut ok = 0;
    let mut last = String::new();
    for i in 0..20u8 {
        match tx.try_send([i]) {
            Ok(()) => {
                ok += 1;
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(_) => {}
                    Err(e) => last = format!("recv: {e}"),
                }
            }
            Err(e) => {
                last = format!("{e:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    if ok < 19 {
        problems.push(format!(
            "after the panic and draining, only {ok} of 20 try_sends succeeded (last: {last}): the slot the callback held stays taken, the mailbox is full forever"
        ));
    }
    let lost = mb.status().lost_reads;
    if lost < 1 {
        problems.push(format!("status lost_reads = {lost}, want >= 1"));
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

/// Maximum message of the flip test's buffer; the consumer's buffer is 8.
const FLIP_MAX: u32 = 64;
const FLIP_SLOTS: u64 = 4;
const FLIP_RING: u64 = 512;

#[test]
fn flipping_a_record_length_never_makes_a_receiver_panic() {
    let name = ShmName::new("flip");
    let buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: FLIP_SLOTS as u32,
            max_message: FLIP_MAX,
            budget: FLIP_RING,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = buf.producer().unwrap();
    // Every message is 4 bytes: a record of 16, so the headers sit at
    // every 16th byte of the ring, wherever it wraps.
    tx.send(b"abcd").unwrap();
    let first = find_record(&name.path(), b"abcd").expect("record in the file");
    let map = Arc::new(Mapped::new(&name.path()));
    assert_eq!(
        map.u64_at(first).load(Ordering::Relaxed),
        record_header(0, 4),
        "record header where packed.rs puts it"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let scribbler = {
        let (map, stop) = (map.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..FLIP_RING / 16 {
                    // Small enough for the receiver's 8 bytes, then too
                    // long for it (but below the maximum): the length
                    // half of the header word.
                    let len = if n.is_multiple_of(2) { 4 } else { FLIP_MAX - 4 };
                    map.u32_at(first + i * 16).store(len, Ordering::Relaxed);
                }
                n += 1;
            }
        })
    };
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = tx.send_timeout(b"abcd", Duration::from_millis(10));
            }
        })
    };
    // Whether the flips land inside a receive depends on how the threads
    // and the consumer share the 2 cores: several rounds, stop at the first
    // death.
    let mut death = None;
    for round in 0..FLIP_ROUNDS {
        let consumer = ChildGuard::new(
            Command::new(PEER)
                .args(["flip-consume", name.as_str(), "1500"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let out = consumer.output_timeout(HANG);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            death = Some(format!(
                "round {round}: the receiver died ({}) while a peer flipped record lengths; stderr: {}",
                out.status,
                stderr.lines().take(3).collect::<Vec<_>>().join(" | ")
            ));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    scribbler.join().unwrap();
    producer.join().unwrap();
    if let Some(d) = death {
        panic!("{d}");
    }
}

/// Consumer processes run in turn, 1.5 s each.
const FLIP_ROUNDS: usize = 4;

const ATTACH_TRIALS: usize = 2000;

#[test]
fn first_attach_race_never_reports_disconnected() {
    let cfg = MailboxConfig {
        capacity: Capacity::Bounded(4),
        max_message: 16,
        ..Default::default()
    };
    let mut problems: Vec<String> = vec![];
    for trial in 0..ATTACH_TRIALS {
        if problems.len() >= 3 {
            break;
        }
        // A receiver and a sender attach at once; the sender sends one
        // message and leaves.
        {
            let name = ShmName::new("attach-rx");
            let mb = Mailbox::create(name.as_str(), &cfg).unwrap();
            let go = Barrier::new(2);
            let got = std::thread::scope(|s| {
                let rx = s.spawn(|| {
                    go.wait();
                    let mut rx = mb.receiver().unwrap();
                    rx.recv_timeout(Duration::from_secs(10))
                });
                s.spawn(|| {
                    go.wait();
                    let mut tx = mb.sender().unwrap();
                    tx.send(b"one").unwrap();
                });
                rx.join().unwrap()
            });
            if got.as_deref() != Ok(&b"one"[..]) {
                problems.push(format!(
                    "trial {trial}: receiver got {got:?} before the message"
                ));
            }
        }
        // A sender polls try_send on a full fresh mailbox while the first
        // receiver attaches.
        {
            let name = ShmName::new("attach-tx");
            let mb = Mailbox::create(name.as_str(), &cfg).unwrap();
            let mut tx = mb.sender().unwrap();
            for i in 0..4u8 {
                tx.try_send([i]).unwrap();
            }
            let go = Barrier::new(2);
            let done = AtomicBool::new(false);
            let outcome = std::thread::scope(|s| {
                s.spawn(|| {
                    go.wait();
                    let mut rx = mb.receiver().unwrap();
                    let _ = rx.recv_timeout(Duration::from_secs(10));
                    // Stay attached until the poller is done.
                    while !done.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                });
                go.wait();
                let mut outcome = None;
                for _ in 0..1_000_000 {
                    match tx.try_send([9]) {
                        Ok(()) => break,
                        Err(SendError::Full(_)) => {}
                        Err(e) => {
                            outcome = Some(format!("{e:?}"));
                            break;
                        }
                    }
                }
                done.store(true, Ordering::Release);
                outcome
            });
            if let Some(e) = outcome {
                problems.push(format!(
                    "trial {trial}: try_send on a full fresh mailbox gave {e} while the first receiver attached"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

const SEND_TRY_PROCS: usize = 4;
const SEND_TRY_ROUNDS: u64 = 25_000;

#[test]
fn try_recv_is_not_empty_while_a_completed_send_is_queued() {
    let name = ShmName::new("trysend");
    let _mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Bounded(4),
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let children: Vec<ChildGuard> = (0..SEND_TRY_PROCS)
        .map(|_| {
            ChildGuard::new(
                Command::new(PEER)
                    .args(["send-try-recv", name.as_str()])
                    .arg(SEND_TRY_ROUNDS.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut empty = 0u64;
    let mut problems = vec![];
    for c in children {
        let out = c.output_timeout(HANG);
        let text = String::from_utf8_lossy(&out.stdout);
        match text
            .trim()
            .strip_prefix("empty=")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) if out.status.success() => empty += n,
            _ => problems.push(format!(
                "peer {}: {text:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
    assert_eq!(
        empty,
        0,
        "{empty} of {} try_recv calls returned Empty right after the caller's own send completed",
        SEND_TRY_PROCS as u64 * SEND_TRY_ROUNDS
    );
}
