//! `ipc-bridge` between two bridges on loopback (runs everywhere): one
//! exports a mailbox, the other offers a proxy of it under another name
//! (both share this machine's /dev/shm, so the names differ).

mod bridge_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_common::*;
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{RecvError, SendError};
use ipc_tests::{run, within, ShmName, PATIENCE};

/// Fields drop in this order: the bridges (killed) before their state
/// files are removed, so none writes one again afterwards.
struct Pair {
    exporter: Bridge,
    importer: Bridge,
    far: ShmName,
    near: ShmName,
    port: u16,
    _state: StateFiles,
}

fn exporter(far: &ShmName, port: u16, extra: &[&str]) -> Bridge {
    let listen = format!("tcp/127.0.0.1:{port}");
    let mut args = vec!["--name", "A", "--listen", &listen, "--export", far.as_str()];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

fn importer(far: &ShmName, near: &ShmName, port: u16, extra: &[&str]) -> Bridge {
    let connect = format!("tcp/127.0.0.1:{port}");
    let import = format!("{far}={near}");
    let mut args = vec!["--name", "B", "--connect", &connect, "--import", &import];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

/// A far mailbox made with `capacity`, exported, and its proxy, connected.
fn pair(tag: &str, capacity: Capacity, max_message: u32, extra: &[&str]) -> Pair {
    let far = ShmName::new(&format!("{tag}-far"));
    let near = ShmName::new(&format!("{tag}-near"));
    let state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    Mailbox::create(
        far.as_str(),
        &MailboxConfig {
            capacity,
            max_message,
            ..Default::default()
        },
    )
    .expect("create the far mailbox");
    let port = free_port();
    let exporter = exporter(&far, port, extra);
    let importer = importer(&far, &near, port, extra);
    wait_status(near.as_str(), "link:           connected");
    Pair {
        far,
        near,
        port,
        _state: state,
        exporter,
        importer,
    }
}

/// Receives until end of stream (bounded), returning the messages.
fn drain(rx: &mut ipc_core::Receiver) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => got.push(m),
            Err(RecvError::Timeout) => {}
            Err(RecvError::Disconnected) => return got,
            Err(e) => panic!("recv: {e}"),
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no end of stream; {} received",
            got.len()
        );
    }
}

#[test]
fn messages_from_two_senders_cross_exactly_once_in_order_and_the_stream_ends() {
    let p = pair("two", Capacity::Bounded(16), 256, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let mut rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    const N: u32 = 3000;
    let senders: Vec<_> = (0..2u32)
        .map(|s| {
            let mut tx = near.sender().unwrap();
            std::thread::spawn(move || {
                for i in 0..N {
                    tx.send_timeout(tagged(s, i, 40 + (i as usize % 100)), PATIENCE)
                        .expect("send");
                }
            })
        })
        .collect();
    let got = within(PATIENCE, "draining the far mailbox", move || drain(&mut rx));
    for s in senders {
        s.join().unwrap();
    }
    check_exactly_once(&got, &[(0, N), (1, N)]).unwrap();
    assert_eq!(got.len(), 2 * N as usize);
    // Both sides show the bridge in `ipcctl status`.
    let out = run(
        {
            let mut c = ipc_tests::cmd("ipcctl");
            c.args(["status", p.near.as_str()]);
            c
        },
        PATIENCE,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("proxy of mailbox") && text.contains("on bridge A"),
        "{text}"
    );
    assert!(text.contains("last ack:"), "{text}");
    let out = run(
        {
            let mut c = ipc_tests::cmd("ipcctl");
            c.args(["status", p.far.as_str()]);
            c
        },
        PATIENCE,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exported by bridge A"), "{text}");
    drop(p);
}

#[test]
fn a_remote_sender_blocks_while_the_far_mailbox_is_full_and_resumes_when_drained() {
    let p = pair("full", Capacity::Bounded(4), 64, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let mut rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    let mut tx = near.sender().unwrap();
    // Far mailbox (4) plus the proxy (4): then Full, and it stays Full.
    let mut sent = 0u32;
    let start = Instant::now();
    let mut full_since: Option<Instant> = None;
    while full_since.is_none_or(|t| t.elapsed() < Duration::from_millis(1500)) {
        match tx.try_send(tagged(0, sent, 20)) {
            Ok(()) => {
                sent += 1;
                full_since = None;
            }
            Err(SendError::Full(_)) => {
                full_since.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("try_send: {e:?}"),
        }
        assert!(start.elapsed() < PATIENCE && sent <= 8, "sent {sent}");
    }
    assert_eq!(sent, 8, "4 in the far mailbox and 4 in the proxy");
    assert_eq!(far.status().len, 4);
    // A blocking send waits; draining the far side lets it through.
    let blocked = Arc::new(AtomicBool::new(true));
    let b = blocked.clone();
    let t = std::thread::spawn(move || {
        tx.send_timeout(tagged(0, 8, 20), PATIENCE).expect("send");
        b.store(false, Ordering::SeqCst);
        tx
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        blocked.load(Ordering::SeqCst),
        "send returned while everything was full"
    );
    let mut got = Vec::new();
    for _ in 0..9 {
        got.push(rx.recv_timeout(PATIENCE).expect("recv"));
    }
    let tx = t.join().unwrap();
    assert!(!blocked.load(Ordering::SeqCst));
    drop(tx);
    got.extend(within(PATIENCE, "end of stream", move || drain(&mut rx)));
    check_exactly_once(&got, &[(0, 9)]).unwrap();
}

#[test]
fn a_rendezvous_send_returns_only_once_a_far_receiver_took_the_message() {
    let p = pair("zero", Capacity::Zero, 64, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let mut rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    let mut tx = near.sender().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let t = std::thread::spawn(move || {
        for i in 0..3 {
            tx.send_timeout(tagged(0, i, 10), PATIENCE).expect("send");
        }
        d.store(true, Ordering::SeqCst);
    });
    for i in 0..3u32 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !done.load(Ordering::SeqCst),
            "send {i} returned before a receiver took it"
        );
        assert_eq!(untag(&rx.recv_timeout(PATIENCE).expect("recv")), (0, i));
    }
    t.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
}

/// Sends (bounded in time) until a send says `Disconnected`.
fn send_until_disconnected(tx: &mut ipc_core::Sender) {
    let start = Instant::now();
    let mut i = 1;
    loop {
        match tx.send_timeout(tagged(0, i, 10), Duration::from_millis(100)) {
            Ok(()) => i += 1,
            Err(SendError::Disconnected(_)) => return,
            Err(SendError::Timeout(_)) => {}
            Err(e) => panic!("send: {e:?}"),
        }
        assert!(start.elapsed() < PATIENCE, "never Disconnected");
    }
}

#[test]
fn remote_senders_get_disconnected_when_the_far_receivers_have_gone() {
    let p = pair("gone", Capacity::Bounded(8), 64, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let mut rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    let mut tx = near.sender().unwrap();
    tx.send_timeout(tagged(0, 0, 10), PATIENCE).unwrap();
    assert_eq!(untag(&rx.recv_timeout(PATIENCE).unwrap()), (0, 0));
    drop(rx);
    send_until_disconnected(&mut tx);
    wait_status(p.near.as_str(), "no receivers");
}

#[test]
fn remote_senders_get_disconnected_once_the_far_bridge_is_gone_for_the_timeout() {
    let mut p = pair(
        "dead",
        Capacity::Bounded(8),
        64,
        &["--disconnect-after", "1"],
    );
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let _rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    let mut tx = near.sender().unwrap();
    tx.send_timeout(tagged(0, 0, 10), PATIENCE).unwrap();
    p.exporter.kill();
    send_until_disconnected(&mut tx);
    assert!(status_of(p.near.as_str()).contains("unreachable"));
}

#[test]
fn a_message_above_the_far_maximum_is_refused_at_the_sending_host() {
    let p = pair("big", Capacity::Bounded(8), 100, &[]);
    let near = Mailbox::open(p.near.as_str()).unwrap();
    assert_eq!(near.max_message(), 100);
    let mut tx = near.sender().unwrap();
    match tx.send(vec![0u8; 101]) {
        Err(SendError::TooLarge {
            len: 101, max: 100, ..
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// A receiver thread that rides over bridge restarts (it waits for a new
/// sender after an end of stream) until `n` messages came and half a
/// second more passed (a duplicate after the last would show).
struct Collecting {
    count: Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl Collecting {
    fn start(rx: ipc_core::Receiver, n: usize) -> Collecting {
        Collecting::pausing(rx, n, usize::MAX, Duration::ZERO)
    }

    /// [`Collecting::start`], pausing for `pause` once it has `after`
    /// messages (so that what the bridge offers next waits for it).
    fn pausing(rx: ipc_core::Receiver, n: usize, after: usize, pause: Duration) -> Collecting {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Collecting::counting(rx, n, (after, pause), Duration::ZERO, count)
    }

    /// [`Collecting::start`] of a receiver competing with `other`'s, taking
    /// `each` per message: both run until `n` came between them.
    fn beside(other: &Collecting, rx: ipc_core::Receiver, n: usize, each: Duration) -> Collecting {
        let count = other.count.clone();
        Collecting::counting(rx, n, (usize::MAX, Duration::ZERO), each, count)
    }

    /// [`Collecting::pausing`] (`(after, pause)`), taking `each` per
    /// message, counting in `count` (maybe shared).
    fn counting(
        mut rx: ipc_core::Receiver,
        n: usize,
        (after, pause): (usize, Duration),
        each: Duration,
        count: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Collecting {
        let c = count.clone();
        let thread = std::thread::spawn(move || {
            let mut got: Vec<Vec<u8>> = Vec::new();
            let start = Instant::now();
            let mut quiet_since: Option<Instant> = None;
            while quiet_since.is_none_or(|t| t.elapsed() < Duration::from_millis(500)) {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(m) => {
                        got.push(m);
                        c.fetch_add(1, Ordering::SeqCst);
                        if got.len() == after {
                            std::thread::sleep(pause);
                        }
                        std::thread::sleep(each);
                    }
                    // The bridge's sender died with it: wait for the next.
                    Err(RecvError::Timeout | RecvError::Disconnected) => rx.expect_new_senders(),
                    Err(e) => panic!("recv: {e}"),
                }
                if c.load(Ordering::SeqCst) >= n {
                    quiet_since.get_or_insert_with(Instant::now);
                }
                if start.elapsed() > 3 * PATIENCE {
                    break;
                }
            }
            got
        });
        Collecting { count, thread }
    }

    /// Waits (bounded) until `n` messages came.
    fn reach(&self, n: usize) {
        let start = Instant::now();
        while self.count.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < 3 * PATIENCE,
                "stuck at {} of {n}",
                self.count.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> Vec<Vec<u8>> {
        self.thread.join().unwrap()
    }
}

/// A sender that rides over a bridge restart: it waits for a new receiver
/// instead of failing, and on `Disconnected` tries the same message again;
/// returns how many messages were sent Ok (always a prefix).
fn patient_sender(mut tx: ipc_core::Sender, s: u32, n: u32) -> u32 {
    tx.expect_new_receivers();
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        match tx.send_timeout(tagged(s, i, 64), Duration::from_millis(200)) {
            Ok(()) => i += 1,
            Err(SendError::Disconnected(_) | SendError::Timeout(_)) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("send: {e:?}"),
        }
        assert!(start.elapsed() < 3 * PATIENCE, "sender {s} stuck at {i}");
    }
    i
}

#[test]
fn killing_and_restarting_each_bridge_mid_stream_loses_and_duplicates_nothing() {
    let mut p = pair("kill", Capacity::Bounded(64), 128, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    const N: u32 = 20_000;
    let tx = near.sender().unwrap();
    let sender = std::thread::spawn(move || patient_sender(tx, 0, N));
    let receiver = Collecting::start(rx, N as usize);
    let reach = |n: usize| receiver.reach(n);
    reach(4000);
    p.importer.kill();
    p.importer = importer(&p.far, &p.near, p.port, &[]);
    reach(9000);
    p.exporter.kill();
    p.exporter = exporter(&p.far, p.port, &[]);
    reach(14000);
    p.importer.kill();
    p.exporter.kill();
    p.exporter = exporter(&p.far, p.port, &[]);
    p.importer = importer(&p.far, &p.near, p.port, &[]);
    let sent = sender.join().unwrap();
    assert_eq!(sent, N);
    let got = receiver.finish();
    check_exactly_once(&got, &[(0, N)]).unwrap();
    assert_eq!(got.len(), N as usize, "a duplicate after the last message");
}

#[test]
fn an_exporter_killed_between_putting_a_message_in_and_recording_it_delivers_it_once() {
    // The delivering side's window, hit every time: the exporter kills
    // itself right after its 2500th publication into the far mailbox,
    // before its delivered table records it. Restarted, it must not take
    // the importer's resend of that message for a new one (it did, before
    // commit tags: one message twice).
    let kill = Kill {
        hook: "IPC_BRIDGE_TEST_KILL_AFTER_DELIVERING",
        at: 2500,
        n: 6000,
    };
    exporter_killed_at("kill-window", Capacity::Bounded(64), kill, None);
}

#[test]
fn an_unbounded_exporter_killed_between_putting_a_message_in_and_recording_it_delivers_it_once() {
    // The same window on an unbounded mailbox, whose deliveries carry no
    // commit tag yet (RELIABILITY.md, "Kill windows"): on a428db3 the
    // restarted exporter takes the resend of message 2500 for a new one.
    let kill = Kill {
        hook: "IPC_BRIDGE_TEST_KILL_AFTER_DELIVERING",
        at: 2500,
        n: 6000,
    };
    exporter_killed_at("kill-window-unbounded", Capacity::Unbounded, kill, None);
}

#[test]
fn a_rendezvous_exporter_killed_between_its_offer_taken_and_recording_it_delivers_it_once() {
    // The same window on a rendezvous mailbox: the offer was taken, the
    // send returned, the table does not say so yet.
    let kill = Kill {
        hook: "IPC_BRIDGE_TEST_KILL_AFTER_DELIVERING",
        at: 100,
        n: 300,
    };
    exporter_killed_at("kill-window-zero", Capacity::Zero, kill, None);
}

#[test]
fn a_rendezvous_exporter_killed_while_its_offer_waits_for_a_receiver_delivers_it_once() {
    // The rendezvous window of the delivering side: the exporter's offer
    // of message 100 sits in the far mailbox (its receiver pauses after
    // 99) when the exporter is killed. A receiver may take it later; the
    // restarted exporter must not offer it again as well (it did: the
    // offer was no record of the table).
    let kill = Kill {
        hook: "IPC_BRIDGE_TEST_KILL_WHILE_OFFERING",
        at: 100,
        n: 300,
    };
    let pause = (99, Duration::from_millis(1500));
    exporter_killed_at("offer-kill-zero", Capacity::Zero, kill, Some(pause));
}

/// Where a bridge kills itself (the test hook and its count) in a stream
/// of `n` messages.
struct Kill {
    hook: &'static str,
    at: u32,
    n: u32,
}

/// A stream of `kill.n` messages through an exporter that kills itself at
/// `kill` and is started again: each must arrive exactly once. `pause`:
/// the far receiver pauses this long after this many messages.
fn exporter_killed_at(tag: &str, capacity: Capacity, kill: Kill, pause: Option<(usize, Duration)>) {
    let mut p = pair(tag, capacity, 128, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    p.exporter.kill();
    p.exporter = doomed_exporter(&p, kill.hook, kill.at);
    let n = kill.n;
    let tx = near.sender().unwrap();
    let sender = std::thread::spawn(move || patient_sender(tx, 0, n));
    let (after, pause) = pause.unwrap_or((usize::MAX, Duration::ZERO));
    let receiver = Collecting::pausing(rx, n as usize, after, pause);
    restart_the_doomed_exporter(&mut p);
    assert_eq!(sender.join().unwrap(), n);
    let got = receiver.finish();
    check_exactly_once(&got, &[(0, n)]).unwrap();
    assert_eq!(got.len(), n as usize, "a duplicate after the last message");
}

/// `p`'s exporter, started again with the test hook `hook` set to `at`
/// (it kills itself there).
fn doomed_exporter(p: &Pair, hook: &str, at: u32) -> Bridge {
    let mut doomed = ipc_tests::cmd("ipc-bridge");
    doomed.env(hook, at.to_string());
    let listen = format!("tcp/127.0.0.1:{}", p.port);
    Bridge::start_with(
        doomed,
        &[
            "--name",
            "A",
            "--listen",
            &listen,
            "--export",
            p.far.as_str(),
        ],
    )
}

/// Waits for `p`'s doomed exporter to kill itself at its hook, and starts
/// it again without one.
fn restart_the_doomed_exporter(p: &mut Pair) {
    let died = p.exporter.child.wait_timeout(3 * PATIENCE);
    assert!(died.is_some(), "the exporter did not kill itself");
    assert!(
        p.exporter.log().contains("killing this bridge"),
        "the exporter died of something else:\n{}",
        p.exporter.log()
    );
    p.exporter = exporter(&p.far, p.port, &[]);
}

/// The taking side's window, hit every time: the importer kills itself
/// inside the receive callback of the 1500th message it takes from the
/// proxy, before journaling it; restarted, it must send that message on
/// once (a proxy that cannot redeliver lost it: unbounded ones did).
fn importer_killed_while_journaling_loses_nothing(tag: &str, capacity: Capacity) {
    importer_killed_at(tag, capacity, "IPC_BRIDGE_TEST_KILL_WHILE_JOURNALING")
}

#[test]
fn an_importer_killed_while_journaling_from_a_rendezvous_proxy_loses_nothing() {
    // The proxy's sender is still waiting for its offer to be taken on
    // the far host: the message must stay for the restarted importer (it
    // was lost, counted, and the send returned Ok).
    importer_killed_while_journaling_loses_nothing("journal-kill-zero", Capacity::Zero);
}

#[test]
fn an_importer_killed_after_journaling_from_a_rendezvous_proxy_delivers_once() {
    importer_killed_at(
        "journaled-kill-zero",
        Capacity::Zero,
        "IPC_BRIDGE_TEST_KILL_AFTER_JOURNALING",
    );
}

/// The same, killed right after journaling the message, before the proxy
/// let go of it: the proxy redelivers it, and the restarted bridge must
/// drop the repeat by its index (from the review of d98fad7).
#[test]
fn an_importer_killed_after_journaling_from_an_unbounded_proxy_delivers_once() {
    importer_killed_at(
        "journaled-kill-unb",
        Capacity::Unbounded,
        "IPC_BRIDGE_TEST_KILL_AFTER_JOURNALING",
    );
}

#[test]
fn an_importer_killed_after_journaling_from_a_bounded_proxy_delivers_once() {
    importer_killed_at(
        "journaled-kill",
        Capacity::Bounded(64),
        "IPC_BRIDGE_TEST_KILL_AFTER_JOURNALING",
    );
}

/// `p`'s importer, started again with the test hook `hook` set to `at`
/// (it kills itself there).
fn doomed_importer(p: &Pair, hook: &str, at: u32) -> Bridge {
    let mut doomed = ipc_tests::cmd("ipc-bridge");
    doomed.env(hook, at.to_string());
    let connect = format!("tcp/127.0.0.1:{}", p.port);
    let import = format!("{}={}", p.far, p.near);
    Bridge::start_with(
        doomed,
        &["--name", "B", "--connect", &connect, "--import", &import],
    )
}

fn importer_killed_at(tag: &str, capacity: Capacity, hook: &str) {
    let mut p = pair(tag, capacity, 128, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    p.importer.kill();
    // A rendezvous takes a round trip across the bridges per message.
    let (at, n) = match capacity {
        Capacity::Zero => (100, 300),
        _ => (1500, 4000),
    };
    p.importer = doomed_importer(&p, hook, at);
    let tx = near.sender().unwrap();
    let sender = std::thread::spawn(move || patient_sender(tx, 0, n));
    let receiver = Collecting::start(rx, n as usize);
    assert!(
        p.importer.child.wait_timeout(3 * PATIENCE).is_some(),
        "the importer did not kill itself"
    );
    assert!(
        p.importer.log().contains("killing this bridge"),
        "the importer died of something else:\n{}",
        p.importer.log()
    );
    p.importer = importer(&p.far, &p.near, p.port, &[]);
    assert_eq!(sender.join().unwrap(), n);
    let got = receiver.finish();
    check_exactly_once(&got, &[(0, n)]).unwrap();
    assert_eq!(
        Mailbox::open(p.near.as_str()).unwrap().status().lost_reads,
        0,
        "the proxy counted a message lost"
    );
}

#[test]
fn an_importer_killed_while_journaling_from_a_bounded_proxy_loses_nothing() {
    importer_killed_while_journaling_loses_nothing("journal-kill", Capacity::Bounded(64));
}

#[test]
fn an_importer_killed_while_journaling_from_an_unbounded_proxy_loses_nothing() {
    importer_killed_while_journaling_loses_nothing("journal-kill-unb", Capacity::Unbounded);
}

/// From the review of 1e6b3f4: a rendezvous offer the proxy keeps (its
/// receiver, the importer, was killed holding it: its sender can no
/// longer withdraw it, and its send returns Ok) must reach the far
/// mailbox, even if a later run had it withdrawn at the far side (the far
/// receivers had gone) and was then killed in its turn. The far side's
/// confirmation of the withdrawal lived in that run's memory only, while
/// the journal said acknowledged: the next run could take the repeat for
/// taken there and let go of it (a timing: this run's first
/// acknowledgement, which repeats the withdrawal, usually came first).
#[test]
fn a_kept_rendezvous_offer_withdrawn_at_the_far_side_reaches_it_after_an_importer_restart() {
    // The exporter forgets an origin silent for a second: its periodic
    // acknowledgements (which repeat the withdrawal) stop.
    let mut p = pair(
        "kept-cancel",
        Capacity::Zero,
        128,
        &["--disconnect-after", "1"],
    );
    let far = Mailbox::open(p.far.as_str()).unwrap();
    // A far receiver that does not receive: offers wait there.
    let idle = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    // Run 1 of the importer: killed right after journaling the offer,
    // holding it.
    p.importer.kill();
    p.importer = doomed_importer(&p, "IPC_BRIDGE_TEST_KILL_AFTER_JOURNALING", 1);
    let mut tx = near.sender().unwrap();
    let sender = std::thread::spawn(move || {
        tx.expect_new_receivers();
        let start = Instant::now();
        loop {
            match tx.send_timeout(tagged(0, 0, 64), Duration::from_millis(200)) {
                Ok(()) => return,
                Err(SendError::Disconnected(_) | SendError::Timeout(_)) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("send: {e:?}"),
            }
            assert!(start.elapsed() < 3 * PATIENCE, "never sent");
        }
    });
    assert!(
        p.importer.child.wait_timeout(3 * PATIENCE).is_some(),
        "the importer did not kill itself"
    );
    assert!(
        p.importer.log().contains("killing this bridge"),
        "{}",
        p.importer.log()
    );
    // Run 2: offers the kept message again; the far receivers go, so it is
    // withdrawn there (confirmed) and declined here, and run 2 is killed
    // while it waits for the far side to open again.
    p.importer = importer(&p.far, &p.near, p.port, &[]);
    let log_says = |b: &Bridge, what: &str| {
        let start = Instant::now();
        while !b.log().contains(what) {
            assert!(
                start.elapsed() < PATIENCE,
                "never logged {what:?}:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    log_says(&p.importer, "offered again");
    std::thread::sleep(Duration::from_millis(300));
    drop(idle);
    log_says(&p.importer, "a rendezvous offer withdrawn");
    sender.join().unwrap();
    p.importer.kill();
    std::thread::sleep(Duration::from_millis(2500));
    // Run 3, with a far receiver back: the message must arrive.
    let mut rx = far.receiver().unwrap();
    p.importer = importer(&p.far, &p.near, p.port, &[]);
    rx.expect_new_senders();
    let start = Instant::now();
    let got = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => break Ok(untag(&m)),
            Err(RecvError::Timeout | RecvError::Disconnected)
                if start.elapsed() < Duration::from_secs(15) =>
            {
                rx.expect_new_senders()
            }
            Err(e) => break Err(e),
        }
    };
    let log = p.importer.log();
    assert!(
        matches!(got, Ok((0, 0))),
        "the kept message never reached the far mailbox ({got:?}); run 3:\n{log}"
    );
}

#[test]
fn an_unbounded_far_mailbox_loses_nothing_across_importer_restarts() {
    // An unbounded proxy could not redeliver then: its uplink must not
    // take its first message after a restart for a repeat (review of
    // 1fe95f9: it did, by a stale index 0, and dropped it).
    let mut p = pair("unb-restart", Capacity::Unbounded, 128, &[]);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let rx = far.receiver().unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    const N: u32 = 3000;
    let tx = near.sender().unwrap();
    let sender = std::thread::spawn(move || patient_sender(tx, 0, N));
    let receiver = Collecting::start(rx, N as usize);
    receiver.reach(1000);
    p.importer.kill();
    p.importer = importer(&p.far, &p.near, p.port, &[]);
    receiver.reach(2000);
    p.importer.kill();
    p.importer = importer(&p.far, &p.near, p.port, &[]);
    assert_eq!(sender.join().unwrap(), N);
    let got = receiver.finish();
    check_exactly_once(&got, &[(0, N)]).unwrap();
}

#[test]
fn the_command_line_says_what_is_wrong() {
    let bad = |args: &[&str], code: i32, needle: &str| {
        let out = run(
            {
                let mut c = ipc_tests::cmd("ipc-bridge");
                c.args(args);
                c
            },
            PATIENCE,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    bad(&["--export", "x"], 2, "--listen or --connect");
    bad(&["--listen", "tcp/127.0.0.1:1"], 2, "nothing to bridge");
    bad(
        &["--listen", "udp/127.0.0.1:9", "--export", "x"],
        2,
        "only tcp and tls",
    );
    bad(&["--listen", "tcp/127.0.0.1", "--export", "x"], 2, "port");
    bad(
        &["--listen", "tls/127.0.0.1:9", "--export", "x"],
        2,
        "--tls-ca",
    );
    bad(
        &["--listen", "tcp/127.0.0.1:9", "--export", "../x"],
        2,
        "../x",
    );
    bad(
        &[
            "--listen",
            "tcp/127.0.0.1:9",
            "--export",
            "a",
            "--import",
            "a",
        ],
        2,
        "twice",
    );
    let missing = ShmName::new("missing");
    let port = free_port().to_string();
    bad(
        &[
            "--listen",
            &format!("tcp/127.0.0.1:{port}"),
            "--export",
            missing.as_str(),
        ],
        1,
        "must exist",
    );
    let out = run(
        {
            let mut c = ipc_tests::cmd("ipc-bridge");
            c.arg("--help");
            c
        },
        PATIENCE,
    );
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("Two hosts, four commands") && help.contains("unauthenticated"),
        "{help}"
    );
}

fn puller(far: &ShmName, near: &ShmName, port: u16) -> Bridge {
    let connect = format!("tcp/127.0.0.1:{port}");
    let pull = format!("{far}={near}");
    Bridge::start(&["--name", "C", "--connect", &connect, "--pull", &pull])
}

/// A far mailbox exported, and a puller of it under another name.
fn pulled(tag: &str, capacity: Capacity) -> Pair {
    let far = ShmName::new(&format!("{tag}-far"));
    let near = ShmName::new(&format!("{tag}-near"));
    let state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    Mailbox::create(
        far.as_str(),
        &MailboxConfig {
            capacity,
            max_message: 128,
            ..Default::default()
        },
    )
    .unwrap();
    let port = free_port();
    let exporter = exporter(&far, port, &[]);
    let importer = puller(&far, &near, port);
    wait_status(near.as_str(), "pulls from mailbox");
    Pair {
        far,
        near,
        port,
        _state: state,
        exporter,
        importer,
    }
}

#[test]
fn a_puller_takes_only_what_its_local_mailbox_has_room_for() {
    let p = pulled("hoard", Capacity::Bounded(128));
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let mut tx = far.sender().unwrap();
    for i in 0..100 {
        tx.send_timeout(tagged(0, i, 32), PATIENCE).unwrap();
    }
    let near = Mailbox::open(p.near.as_str()).unwrap();
    assert_eq!(near.capacity(), Capacity::Bounded(16));
    ipc_tests::wait_until("the puller to fill its mailbox", || near.status().len == 16);
    // Nothing more leaves the far mailbox while nobody takes from it.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(near.status().len, 16);
    assert_eq!(far.status().len, 84);
    let mut rx = near.receiver().unwrap();
    drop(tx);
    let got = within(PATIENCE, "draining the pulled mailbox", move || {
        drain(&mut rx)
    });
    check_exactly_once(&got, &[(0, 100)]).unwrap();
}

#[test]
fn killing_and_restarting_each_bridge_while_pulling_loses_and_duplicates_nothing() {
    let mut p = pulled("pullkill", Capacity::Bounded(64));
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    let rx = near.receiver().unwrap();
    const N: u32 = 12_000;
    let tx = far.sender().unwrap();
    let sender = std::thread::spawn(move || patient_sender(tx, 0, N));
    let receiver = Collecting::start(rx, N as usize);
    let reach = |n: usize| receiver.reach(n);
    reach(3000);
    p.importer.kill();
    p.importer = puller(&p.far, &p.near, p.port);
    reach(6000);
    p.exporter.kill();
    p.exporter = exporter(&p.far, p.port, &[]);
    reach(9000);
    p.exporter.kill();
    p.importer.kill();
    p.importer = puller(&p.far, &p.near, p.port);
    p.exporter = exporter(&p.far, p.port, &[]);
    assert_eq!(sender.join().unwrap(), N);
    let got = receiver.finish();
    check_exactly_once(&got, &[(0, N)]).unwrap();
    assert_eq!(got.len(), N as usize, "a duplicate after the last message");
}

/// The exporter's taking side, serving a puller, hit every time: the
/// exporter kills itself at `hook` of the 100th message it takes for the
/// puller (inside the receive callback: before journaling it, or after),
/// and is started again, while a sender on the exporter's host streams
/// into the mailbox (and, if `local`, a receiver there competes with the
/// puller). Every message must arrive exactly once, on one host or the
/// other, and none be counted lost. Before 2026-12-03 the exporter did not
/// ask for redelivery (the mailbox has other receivers, which could take
/// a message its journal held): killed while journaling, it lost the
/// message (counted in `lost_reads`); the hook after journaling did not
/// exist for it.
fn exporter_serving_a_puller_killed_at(tag: &str, capacity: Capacity, hook: &str, local: bool) {
    let mut p = pulled(tag, capacity);
    let far = Mailbox::open(p.far.as_str()).unwrap();
    let near = Mailbox::open(p.near.as_str()).unwrap();
    p.exporter.kill();
    p.exporter = doomed_exporter(&p, hook, 100);
    const N: u32 = 3000;
    let pulling = Collecting::start(near.receiver().unwrap(), N as usize);
    // (Slow, so that the puller's share reaches the kill.)
    let slow = Duration::from_millis(2);
    let competing =
        local.then(|| Collecting::beside(&pulling, far.receiver().unwrap(), N as usize, slow));
    let tx = far.sender().unwrap();
    let sender = std::thread::spawn(move || patient_sender(tx, 0, N));
    restart_the_doomed_exporter(&mut p);
    assert_eq!(sender.join().unwrap(), N);
    // Both receivers run on for half a second after the last message
    // came (a repeat would show).
    let mut got = pulling.finish();
    let on_near = got.len();
    if let Some(c) = competing {
        got.extend(c.finish());
    }
    got.sort_by_key(|m| untag(m));
    check_exactly_once(&got, &[(0, N)]).unwrap_or_else(|e| {
        panic!(
            "{e} ({on_near} pulled, {} in all)\n{}",
            got.len(),
            p.exporter.log()
        )
    });
    assert_eq!(got.len(), N as usize, "a message arrived twice");
    let lost = Mailbox::open(p.far.as_str()).unwrap().status().lost_reads;
    assert_eq!(lost, 0, "the far mailbox counted a message lost");
    if hook.ends_with("AFTER_JOURNALING") {
        // Killed holding a message it had journaled: the mailbox put it
        // back, so the next run must not send its entry.
        assert!(
            p.exporter.log().contains("was put back there: not sent"),
            "the restarted exporter did not drop the entry:\n{}",
            p.exporter.log()
        );
    }
}

#[test]
fn an_exporter_serving_a_puller_killed_while_journaling_loses_nothing() {
    exporter_serving_a_puller_killed_at(
        "pull-journal-kill",
        Capacity::Bounded(64),
        "IPC_BRIDGE_TEST_KILL_WHILE_JOURNALING",
        false,
    );
}

#[test]
fn an_exporter_serving_a_puller_killed_after_journaling_delivers_once_beside_a_local_receiver() {
    exporter_serving_a_puller_killed_at(
        "pull-journaled-kill",
        Capacity::Bounded(64),
        "IPC_BRIDGE_TEST_KILL_AFTER_JOURNALING",
        true,
    );
}

#[test]
fn an_unbounded_exporter_serving_a_puller_killed_while_journaling_loses_nothing() {
    exporter_serving_a_puller_killed_at(
        "pull-journal-kill-unb",
        Capacity::Unbounded,
        "IPC_BRIDGE_TEST_KILL_WHILE_JOURNALING",
        true,
    );
}

#[test]
fn an_unbounded_exporter_serving_a_puller_killed_after_journaling_delivers_once() {
    exporter_serving_a_puller_killed_at(
        "pull-journaled-kill-unb",
        Capacity::Unbounded,
        "IPC_BRIDGE_TEST_KILL_AFTER_JOURNALING",
        false,
    );
}

fn tls_file(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tls");
    dir.join(name).display().to_string()
}

/// An exporter listening on tls/, with the test certificate.
fn tls_exporter(far: &ShmName, port: u16, extra: &[&str]) -> Bridge {
    let listen = format!("tls/127.0.0.1:{port}");
    let (ca, cert, key) = (
        tls_file("ca.pem"),
        tls_file("bridge.pem"),
        tls_file("bridge.key"),
    );
    let mut args = vec![
        "--name",
        "A",
        "--listen",
        &listen,
        "--export",
        far.as_str(),
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

fn tls_importer(far: &ShmName, near: &ShmName, port: u16, extra: &[&str]) -> Bridge {
    let connect = format!("tls/127.0.0.1:{port}");
    let import = format!("{far}={near}");
    let mut args = vec!["--name", "B", "--connect", &connect, "--import", &import];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

fn far_mailbox(tag: &str) -> (ShmName, ShmName, StateFiles) {
    let far = ShmName::new(&format!("{tag}-far"));
    let near = ShmName::new(&format!("{tag}-near"));
    let state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    Mailbox::create(far.as_str(), &MailboxConfig::default()).unwrap();
    (far, near, state)
}

/// Sends `n` messages through `near` and checks they reach `far`.
fn carries(far: &ShmName, near: &ShmName, n: u32) {
    let mut rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    let receiver = std::thread::spawn(move || drain(&mut rx));
    for i in 0..n {
        tx.send_timeout(tagged(0, i, 50), PATIENCE).unwrap();
    }
    drop(tx);
    let got = receiver.join().unwrap();
    check_exactly_once(&got, &[(0, n)]).unwrap();
}

#[test]
fn a_tls_link_carries_messages_and_mutual_tls_too() {
    let (far, near, _state) = far_mailbox("tls");
    let port = free_port();
    let _a = tls_exporter(&far, port, &[]);
    let ca = tls_file("ca.pem");
    let _b = tls_importer(&far, &near, port, &["--tls-ca", &ca]);
    wait_status(near.as_str(), "link:           connected");
    carries(&far, &near, 1000);

    let (far, near, _state) = far_mailbox("mtls");
    let port = free_port();
    let _a = tls_exporter(&far, port, &["--tls-mutual"]);
    let (cert, key) = (tls_file("bridge.pem"), tls_file("bridge.key"));
    let _b = tls_importer(
        &far,
        &near,
        port,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-mutual",
        ],
    );
    wait_status(near.as_str(), "link:           connected");
    carries(&far, &near, 1000);
}

#[test]
fn tls_refuses_a_peer_without_a_certificate_or_trusting_another_authority() {
    let (far, near, _state) = far_mailbox("tlsno");
    let port = free_port();
    let _a = tls_exporter(&far, port, &["--tls-mutual"]);
    let (ca, other) = (tls_file("ca.pem"), tls_file("other-ca.pem"));
    // No client certificate for a mutual-TLS exporter; then a client that
    // trusts another authority. Neither ever learns of the far mailbox, so
    // neither makes its proxy (bounded look, 3 s each).
    for args in [vec!["--tls-ca", &ca], vec!["--tls-ca", &other]] {
        let b = tls_importer(&far, &near, port, &args);
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            Mailbox::open(near.as_str()).is_err(),
            "{args:?}: the proxy was made"
        );
        assert!(
            b.log().contains("waiting for a bridge that exports"),
            "{}",
            b.log()
        );
        drop(b);
    }
    // A plain TCP client cannot talk to a TLS listener either.
    let connect = format!("tcp/127.0.0.1:{port}");
    let import = format!("{far}={near}");
    let b = Bridge::start(&["--connect", &connect, "--import", &import]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        Mailbox::open(near.as_str()).is_err(),
        "a tcp peer reached a tls listener"
    );
    drop(b);
}

#[test]
fn a_port_is_reachable_through_the_bridges_and_keeps_the_senders_name() {
    use ipc_core::ports::{mailbox_name, Port, PortSender};
    let id = std::process::id();
    let (far_port, near_port, me) = (format!("w{id}"), format!("v{id}"), format!("boss{id}"));
    let _state = StateFiles(vec![mailbox_name(&far_port), mailbox_name(&near_port)]);
    let mut port = Port::register(&far_port, &MailboxConfig::default()).unwrap();
    let port_file = ShmName(mailbox_name(&far_port));
    let near_file = ShmName(mailbox_name(&near_port));
    let p = free_port();
    let listen = format!("tcp/127.0.0.1:{p}");
    let export = format!("port:{far_port}");
    let _a = Bridge::start(&["--name", "A", "--listen", &listen, "--export", &export]);
    let import = format!("port:{far_port}=port:{near_port}");
    let _b = Bridge::start(&["--name", "B", "--connect", &listen, "--import", &import]);
    wait_status(near_file.as_str(), "link:           connected");
    let mut tx = PortSender::new(&me).unwrap();
    for i in 0..50u32 {
        tx.send_to(&near_port, tagged(0, i, 30)).unwrap();
    }
    for i in 0..50u32 {
        let m = port.recv_timeout(PATIENCE).unwrap();
        assert_eq!(m.from, me);
        assert_eq!(untag(&m.payload), (0, i));
    }
    drop((port_file, near_file));
}
