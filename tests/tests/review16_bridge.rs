//! Review 16 of `ipc-bridge`: tests that show defects (each fails on the
//! code reviewed, fc39d3d). Two bridges on loopback, as in
//! `bridge_loopback.rs`: one exports a far mailbox, the other offers a
//! proxy of it under another local name.

mod bridge_common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bridge_common::*;
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{RecvError, SendError};
use ipc_tests::{ShmName, PATIENCE};

/// How long a test waits for something that should happen within a few
/// seconds (a second or two of resending, a lease, a disconnect-after).
const SOON: Duration = Duration::from_secs(20);

fn exporter(far: &ShmName, port: u16, extra: &[&str]) -> Bridge {
    let listen = format!("tcp/127.0.0.1:{port}");
    let mut args = vec!["--name", "A", "--listen", &listen, "--export", far.as_str()];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

fn importer_as(name: &str, far: &str, near: &str, port: u16, extra: &[&str]) -> Bridge {
    let connect = format!("tcp/127.0.0.1:{port}");
    let import = format!("{far}={near}");
    let mut args = vec!["--name", name, "--connect", &connect, "--import", &import];
    args.extend_from_slice(extra);
    Bridge::start(&args)
}

fn importer(far: &ShmName, near: &ShmName, port: u16, extra: &[&str]) -> Bridge {
    importer_as("B", far.as_str(), near.as_str(), port, extra)
}

fn create(name: &ShmName, capacity: Capacity, max_message: u32) {
    Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity,
            max_message,
            ..Default::default()
        },
    )
    .expect("create a mailbox");
}

fn sigterm(b: &Bridge) {
    // SAFETY: kill(2) of a child we started and have not reaped.
    unsafe { libc::kill(b.child.pid() as i32, libc::SIGTERM) };
}

/// Receives for at most `d` (taking a new sender of the far mailbox after
/// a bridge restart as the same stream), returning what came.
fn receive_for(rx: &mut ipc_core::Receiver, want: usize, d: Duration) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < want && start.elapsed() < d {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => got.push(m),
            Err(RecvError::Timeout | RecvError::Disconnected) => rx.expect_new_senders(),
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

/// Sends `n` tagged messages with `send_timeout`, bounded in time; returns
/// how many were sent Ok (a prefix).
fn send_n(tx: &mut ipc_core::Sender, s: u32, from: u32, n: u32, d: Duration) -> u32 {
    let start = Instant::now();
    let mut i = from;
    while i < from + n && start.elapsed() < d {
        match tx.send_timeout(tagged(s, i, 32), Duration::from_millis(100)) {
            Ok(()) => i += 1,
            Err(SendError::Timeout(_) | SendError::Disconnected(_)) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("send: {e:?}"),
        }
    }
    i - from
}

/// The far host lost its bridge state (a reboot empties /dev/shm, or the
/// file was removed while the bridge was stopped): the far mailbox is
/// made again, the exporter starts with an empty table of delivered
/// messages. The near side's journal, whose origin has acknowledgements up
/// to N, sends from N+1; the exporter expects 1 for an origin it does not
/// know, takes N+1 for a gap, drops it, and the origin resends N+1 for
/// ever: nothing is delivered again, local senders block for ever.
#[test]
fn a_far_host_that_lost_its_delivered_table_never_takes_another_message() {
    let far = ShmName::new("r16-lost-far");
    let near = ShmName::new("r16-lost-near");
    let _state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    create(&far, Capacity::Bounded(8), 64);
    let port = free_port();
    let mut exp = exporter(&far, port, &[]);
    let _imp = importer(&far, &near, port, &[]);
    wait_status(near.as_str(), "link:           connected");
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    {
        let mut rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
        assert_eq!(send_n(&mut tx, 0, 0, 5, PATIENCE), 5);
        let got = receive_for(&mut rx, 5, PATIENCE);
        check_exactly_once(&got, &[(0, 5)]).unwrap();
    }
    wait_status(near.as_str(), "last ack:       up to message 5,");
    // The far host "reboots": bridge gone, /dev/shm emptied, mailbox made
    // again, bridge started again.
    exp.kill();
    let _ = std::fs::remove_file(state_dir().join(format!("{far}.delivered")));
    let _ = std::fs::remove_file(far.path());
    create(&far, Capacity::Bounded(8), 64);
    let mut rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    let _exp = exporter(&far, port, &[]);
    // Three more messages, sent Ok into the proxy (it has room for 8).
    tx.expect_new_receivers();
    assert_eq!(
        send_n(&mut tx, 0, 5, 3, PATIENCE),
        3,
        "sends into the proxy"
    );
    let got = receive_for(&mut rx, 3, SOON);
    assert_eq!(
        got.len(),
        3,
        "{} of 3 messages sent Ok reached the far mailbox within {SOON:?}; near status:\n{}\nfar status:\n{}",
        got.len(),
        status_of(near.as_str()),
        status_of(far.as_str())
    );
}

/// Two hosts import the same far mailbox (here: two bridges, two proxies
/// under different local names). The exporter gives each origin the whole
/// free room as credit, so together they may send twice the room: the
/// exporter buffers messages beyond the far mailbox's capacity, and local
/// senders see more than capacity end to end (far + their own proxy).
#[test]
fn two_importers_of_one_far_mailbox_are_together_granted_more_than_its_room() {
    let far = ShmName::new("r16-twoimp-far");
    let n1 = ShmName::new("r16-twoimp-n1");
    let n2 = ShmName::new("r16-twoimp-n2");
    let _state = StateFiles(vec![far.0.clone(), n1.0.clone(), n2.0.clone()]);
    const CAP: u32 = 4;
    create(&far, Capacity::Bounded(CAP), 64);
    let port = free_port();
    let _exp = exporter(&far, port, &[]);
    let _i1 = importer_as("B1", far.as_str(), n1.as_str(), port, &[]);
    let _i2 = importer_as("B2", far.as_str(), n2.as_str(), port, &[]);
    wait_status(n1.as_str(), "link:           connected");
    wait_status(n2.as_str(), "link:           connected");
    // A far receiver exists (so the proxies are open) but takes nothing.
    let _rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    // (The review's version waited here for both proxies to show CAP
    // credits: that was the defect itself. Credits are now shared.)
    let mut t1 = Mailbox::open(n1.as_str()).unwrap().sender().unwrap();
    let mut t2 = Mailbox::open(n2.as_str()).unwrap().sender().unwrap();
    let mut sent = [0u32; 2];
    let start = Instant::now();
    let mut full_since: Option<Instant> = None;
    while full_since.is_none_or(|t| t.elapsed() < Duration::from_millis(2000)) {
        let mut progress = false;
        for (k, tx) in [&mut t1, &mut t2].into_iter().enumerate() {
            match tx.try_send(tagged(k as u32, sent[k], 20)) {
                Ok(()) => {
                    sent[k] += 1;
                    progress = true;
                }
                Err(SendError::Full(_)) => {}
                Err(e) => panic!("try_send: {e:?}"),
            }
        }
        if progress {
            full_since = None;
        } else {
            full_since.get_or_insert_with(Instant::now);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(start.elapsed() < PATIENCE && sent[0] + sent[1] <= 8 * CAP);
    }
    let total = sent[0] + sent[1];
    assert!(
        total <= 3 * CAP,
        "{total} messages sent Ok ({sent:?}) while the far mailbox holds {CAP} and each proxy {CAP}: \
         the exporter buffers {} beyond the far mailbox's room; far status:\n{}",
        total - 3 * CAP,
        status_of(far.as_str())
    );
}

/// A rendezvous send through a proxy waits for a far receiver; when the
/// far mailbox's receivers all leave, remote senders are promised
/// `Disconnected`. The proxy's loop waits inside the rendezvous hand-off
/// until the far side acknowledges, so the local sender blocks for ever.
#[test]

fn a_blocked_rendezvous_sender_gets_disconnected_when_the_far_receivers_leave() {
    let far = ShmName::new("r16-rvgone-far");
    let near = ShmName::new("r16-rvgone-near");
    let _state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    create(&far, Capacity::Zero, 64);
    let port = free_port();
    let _exp = exporter(&far, port, &[]);
    let _imp = importer(&far, &near, port, &["--disconnect-after", "1"]);
    wait_status(near.as_str(), "link:           connected");
    let rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let r = tx.send(tagged(0, 0, 10));
        let _ = done_tx.send(r.map_err(|e| format!("{e:?}")));
    });
    // The send is on its way (the proxy journaled it; the far bridge offers
    // it to a receiver that does not take it) when the receiver leaves.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        done.try_recv().is_err(),
        "the send returned before a far receiver took it"
    );
    drop(rx);
    match done.recv_timeout(SOON) {
        Ok(Err(e)) => assert!(e.contains("Disconnected"), "{e}"),
        Ok(Ok(())) => panic!("the rendezvous send returned Ok with no far receiver"),
        Err(_) => panic!(
            "the rendezvous sender is still blocked {SOON:?} after the far receivers left; near status:\n{}",
            status_of(near.as_str())
        ),
    }
}

/// The same, with the far bridge gone instead: `--disconnect-after 1`, yet
/// the blocked rendezvous sender never hears of it.
#[test]

fn a_blocked_rendezvous_sender_gets_disconnected_when_the_far_bridge_is_gone() {
    let far = ShmName::new("r16-rvdead-far");
    let near = ShmName::new("r16-rvdead-near");
    let _state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    create(&far, Capacity::Zero, 64);
    let port = free_port();
    let mut exp = exporter(&far, port, &[]);
    let _imp = importer(&far, &near, port, &["--disconnect-after", "1"]);
    wait_status(near.as_str(), "link:           connected");
    let _rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let r = tx.send(tagged(0, 0, 10));
        let _ = done_tx.send(r.map_err(|e| format!("{e:?}")));
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        done.try_recv().is_err(),
        "the send returned before a far receiver took it"
    );
    exp.kill();
    match done.recv_timeout(SOON) {
        Ok(Err(e)) => assert!(e.contains("Disconnected"), "{e}"),
        Ok(Ok(())) => panic!("the rendezvous send returned Ok with the far bridge dead"),
        Err(_) => panic!(
            "the rendezvous sender is still blocked {SOON:?} after the far bridge died \
             (--disconnect-after 1); near status:\n{}",
            status_of(near.as_str())
        ),
    }
}

/// A rendezvous send returns only once a far receiver took the message:
/// not when the importing bridge is asked to stop (SIGTERM) while it waits.
#[test]

fn a_rendezvous_send_does_not_return_ok_when_the_importing_bridge_stops() {
    let far = ShmName::new("r16-rvterm-far");
    let near = ShmName::new("r16-rvterm-near");
    let _state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    create(&far, Capacity::Zero, 64);
    let port = free_port();
    let _exp = exporter(&far, port, &[]);
    let mut imp = importer(&far, &near, port, &[]);
    wait_status(near.as_str(), "link:           connected");
    let _rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let r = tx.send(tagged(0, 0, 10));
        let _ = done_tx.send(r.map_err(|e| format!("{e:?}")));
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        done.try_recv().is_err(),
        "the send returned before a far receiver took it"
    );
    sigterm(&imp);
    let code = imp.child.wait_timeout(PATIENCE).map(|s| s.code());
    assert_eq!(code, Some(Some(130)), "the importer on SIGTERM");
    // Nobody on the far host took the message.
    if let Ok(Ok(())) = done.recv_timeout(Duration::from_secs(2)) {
        panic!("the rendezvous send returned Ok although no far receiver took the message");
    }
}

/// End of stream carries over: once every local sender is gone, the far
/// mailbox's receivers drain and see the end. Here the last sender leaves
/// while the far mailbox has no receiver (the proxy is closed); the proxy
/// reopens with `expect_new_senders` when a far receiver comes, which
/// finds no sender and nothing queued and so waits for a new sender: the
/// bridge never learns that its senders have gone, the far receiver never
/// sees the end.
#[test]
fn a_far_receiver_that_comes_after_the_remote_senders_left_sees_the_end_of_the_stream() {
    let far = ShmName::new("r16-eos-far");
    let near = ShmName::new("r16-eos-near");
    let _state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    create(&far, Capacity::Bounded(8), 64);
    let port = free_port();
    let _exp = exporter(&far, port, &[]);
    let _imp = importer(&far, &near, port, &[]);
    wait_status(near.as_str(), "link:           connected");
    let farbox = Mailbox::open(far.as_str()).unwrap();
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    {
        let mut rx = farbox.receiver().unwrap();
        assert_eq!(send_n(&mut tx, 0, 0, 3, PATIENCE), 3);
        let got = receive_for(&mut rx, 3, PATIENCE);
        check_exactly_once(&got, &[(0, 3)]).unwrap();
        wait_status(near.as_str(), "last ack:       up to message 3,");
    }
    // No far receiver now: the proxy closes.
    wait_status(near.as_str(), "no receivers");
    drop(tx);
    std::thread::sleep(Duration::from_millis(500));
    // A new far receiver: every sender is gone, nothing is left.
    let mut rx = farbox.receiver().unwrap();
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Err(RecvError::Disconnected) => break,
            Err(RecvError::Timeout) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            start.elapsed() < SOON,
            "no end of stream {SOON:?} after the last remote sender left; near status:\n{}\nfar status:\n{}",
            status_of(near.as_str()),
            status_of(far.as_str())
        );
    }
}

/// Two `ipc-bridge` processes on one host import the same far mailbox
/// under the same local name (the bridge started twice by mistake): both
/// open the same journal (same origin) with no lock and write entries
/// over each other's, the far side takes one of each pair of messages
/// with the same sequence number and drops the other as a repeat. Either
/// the second bridge refuses to start, or nothing may be lost.
#[test]
fn a_second_bridge_importing_the_same_proxy_is_refused_or_loses_nothing() {
    let far = ShmName::new("r16-twice-far");
    let near = ShmName::new("r16-twice-near");
    let _state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    create(&far, Capacity::Bounded(64), 64);
    let port = free_port();
    let _exp = exporter(&far, port, &[]);
    let _i1 = importer(&far, &near, port, &[]);
    wait_status(near.as_str(), "link:           connected");
    let mut i2 = importer(&far, &near, port, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(status) = i2.child.wait_timeout(Duration::from_millis(1)) {
        assert_ne!(status.code(), Some(0), "refused, but with exit code 0");
        return; // refused: fine
    }
    let mut rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    const N: u32 = 500;
    let sent = std::thread::spawn(move || send_n(&mut tx, 0, 0, N, PATIENCE));
    let got = receive_for(&mut rx, N as usize, PATIENCE);
    let sent = sent.join().unwrap();
    // A little more time for a duplicate to show.
    let mut got = got;
    got.extend(receive_for(&mut rx, 1, Duration::from_millis(500)));
    check_exactly_once(&got, &[(0, sent)]).unwrap_or_else(|e| {
        panic!(
            "{e} ({} received of {sent} sent Ok); second importer's log:\n{}",
            got.len(),
            i2.log()
        )
    });
}

/// A proxy (its local name, its journal) reused for another far mailbox:
/// the journal does not say which mailbox its messages were for, so what
/// local senders sent to the first far mailbox, still journaled because
/// its bridge was unreachable, is delivered to the second one.
#[test]
fn messages_journaled_for_one_far_mailbox_are_not_delivered_to_another() {
    let far1 = ShmName::new("r16-reuse-far1");
    let far2 = ShmName::new("r16-reuse-far2");
    let near = ShmName::new("r16-reuse-near");
    let _state = StateFiles(vec![far1.0.clone(), far2.0.clone(), near.0.clone()]);
    create(&far1, Capacity::Bounded(8), 64);
    create(&far2, Capacity::Bounded(8), 64);
    let port = free_port();
    let mut exp1 = exporter(&far1, port, &[]);
    let mut imp = importer(&far1, &near, port, &[]);
    wait_status(near.as_str(), "link:           connected");
    let _rx1 = Mailbox::open(far1.as_str()).unwrap().receiver().unwrap();
    wait_status(near.as_str(), "credits:        8 more");
    // far1's bridge goes; within --disconnect-after (10 s) local senders
    // still send, the proxy journals within the credits it had.
    exp1.kill();
    wait_status(near.as_str(), "unreachable");
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    for i in 0..3 {
        tx.send(tagged(0, i, 20))
            .expect("send while far1 is briefly unreachable");
    }
    wait_status(near.as_str(), "in flight:      3 message(s)");
    drop(tx);
    sigterm(&imp);
    let _ = imp.child.wait_timeout(PATIENCE);
    // The same proxy name now imports far2 (same shape), exported by a bridge
    // on the same endpoint.
    let mut rx2 = Mailbox::open(far2.as_str()).unwrap().receiver().unwrap();
    let _exp2 = exporter(&far2, port, &[]);
    let mut imp2 = importer(&far2, &near, port, &[]);
    // Refused, saying why, is fine (the proxy still holds far1's stream).
    let start = Instant::now();
    while !status_of(near.as_str()).contains("link:           connected") {
        if let Some(status) = imp2.child.wait_timeout(Duration::from_millis(20)) {
            assert_ne!(status.code(), Some(0));
            assert!(
                imp2.log().contains("is the proxy of the far mailbox"),
                "{}",
                imp2.log()
            );
            return;
        }
        assert!(start.elapsed() < PATIENCE, "neither connected nor refused");
    }
    let got = receive_for(&mut rx2, 1, Duration::from_secs(5));
    assert!(
        got.is_empty(),
        "far2 received {} message(s) sent to far1 (first: {:?})",
        got.len(),
        String::from_utf8_lossy(&got[0])
    );
}

/// A journal left by a killed bridge with everything acknowledged (start
/// = end) whose `acked` word was scribbled: recovery checks `acked`
/// against the entries only, and there are none, so any value is taken.
/// The far side then refuses the sequence numbers (repeats or a gap) and
/// the proxy ignores every acknowledgement ("beyond what was journaled"):
/// no clear error, and nothing sent Ok ever arrives.
#[test]
fn a_scribbled_acked_word_in_an_empty_journal_is_refused_or_harmless() {
    let far = ShmName::new("r16-scrib-far");
    let near = ShmName::new("r16-scrib-near");
    let _state = StateFiles(vec![far.0.clone(), near.0.clone()]);
    create(&far, Capacity::Bounded(8), 64);
    let port = free_port();
    let _exp = exporter(&far, port, &[]);
    let mut imp = importer(&far, &near, port, &[]);
    wait_status(near.as_str(), "link:           connected");
    let mut rx = Mailbox::open(far.as_str()).unwrap().receiver().unwrap();
    {
        let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
        assert_eq!(send_n(&mut tx, 0, 0, 5, PATIENCE), 5);
        let got = receive_for(&mut rx, 5, PATIENCE);
        check_exactly_once(&got, &[(0, 5)]).unwrap();
        wait_status(near.as_str(), "last ack:       up to message 5,");
        imp.kill();
    }
    // The journal's `acked` word (offset 32 of the header) scribbled to 0.
    let journal = state_dir().join(format!("{near}.to-{far}.journal"));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .expect("the killed bridge's journal");
        f.seek(SeekFrom::Start(32)).unwrap();
        f.write_all(&0u64.to_le_bytes()).unwrap();
    }
    let mut imp = importer(&far, &near, port, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(status) = imp.child.wait_timeout(Duration::from_millis(1)) {
        // Refused: fine if it says so.
        assert_ne!(status.code(), Some(0));
        assert!(imp.log().contains("journal"), "{}", imp.log());
        return;
    }
    let mut tx = Mailbox::open(near.as_str()).unwrap().sender().unwrap();
    assert_eq!(
        send_n(&mut tx, 1, 0, 3, PATIENCE),
        3,
        "sends into the proxy"
    );
    let got = receive_for(&mut rx, 3, SOON);
    assert_eq!(
        got.len(),
        3,
        "{} of 3 messages sent Ok arrived within {SOON:?}; near status:\n{}\nlog:\n{}",
        got.len(),
        status_of(near.as_str()),
        imp.log()
    );
    check_exactly_once(&got, &[(1, 3)]).unwrap();
}
