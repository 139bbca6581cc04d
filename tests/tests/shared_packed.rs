//! Mailboxes and buffers on the shared packed ring (many senders and
//! receivers taking turns under each side's lock word), with real
//! processes: memory sized in bytes, a sender or receiver SIGKILLed in its
//! turn (holding a zero-copy claim, or a message read in place) repaired
//! by the survivors, and a frozen holder waited for, not repaired.

use std::process::Stdio;
use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::SendError;
use ipc_tests::trust_peer_holding as peer_holding;
use ipc_tests::{cmd, run, ChildGuard, ShmName, PATIENCE};

fn mailbox(name: &ShmName, capacity: u32, max_message: u32) -> Mailbox {
    Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Bounded(capacity),
            max_message,
            ..Default::default()
        },
    )
    .expect("create")
}

#[test]
fn a_mailbox_for_1_mib_messages_costs_its_budget_not_capacity_slots() {
    let name = ShmName::new("sp-memory");
    let mb = mailbox(&name, 64, 1 << 20);
    let file = std::fs::metadata(name.path()).unwrap().len();
    let status = mb.status();
    assert_eq!(status.budget, 4 << 20, "the default budget: 4 MiB");
    assert!(
        file <= status.budget + (64 << 10),
        "the file in /dev/shm is {file} bytes, for a budget of {}",
        status.budget
    );
    // 64 slots of 1 MiB would have been 64 MiB.
    assert!(file < 64 << 20);
    let mut tx = mb.sender().unwrap();
    let _rx = mb.receiver().unwrap();
    for i in 0..64u8 {
        tx.try_send([i; 100]).expect("64 small messages fit");
    }
    assert!(matches!(tx.try_send([0; 100]), Err(SendError::Full(_))));
    let status = mb.status();
    assert_eq!(status.len, 64);
    assert_eq!(
        status.bytes_used,
        64 * 112,
        "8-byte header + 104 per message"
    );
    let out = run(
        {
            let mut c = cmd("ipcctl");
            c.args(["status", name.as_str()]);
            c
        },
        PATIENCE,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("7168 of 4194304 bytes used"),
        "ipcctl status shows bytes used and the budget:\n{text}"
    );
}

#[test]
fn a_sender_killed_in_its_turn_is_repaired_and_the_others_go_on() {
    let name = ShmName::new("sp-kill-w");
    let mb = mailbox(&name, 8, 64);
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    tx.send(b"before").unwrap();
    let (mut holder, _) = peer_holding("hold-claim", name.as_str());
    // The holder has the senders' turn: a send waits for it.
    assert!(matches!(
        tx.send_timeout(b"blocked", Duration::from_millis(50)),
        Err(SendError::Timeout(_))
    ));
    holder.kill();
    // Reaping (by the waiting sender) repairs the claim and frees the turn.
    tx.send_timeout(b"after", PATIENCE)
        .expect("send after the holder died");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"before");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"after");
    assert!(rx.try_recv().is_err(), "the dead claim left no message");
    assert_eq!(mb.status().abandoned_writes, 1);
}

#[test]
fn a_receiver_killed_holding_a_message_loses_it_counted_and_the_rest_flow() {
    let name = ShmName::new("sp-kill-r");
    let mb = mailbox(&name, 8, 64);
    let mut tx = mb.sender().unwrap();
    for m in [&b"one"[..], b"two", b"three"] {
        tx.send(m).unwrap();
    }
    let (mut holder, line) = peer_holding("hold-read", name.as_str());
    assert_eq!(line, "held one");
    let mut rx = mb.receiver().unwrap();
    // The holder has the receivers' turn: a receive waits for it.
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    holder.kill();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"two");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"three");
    let status = mb.status();
    assert_eq!((status.lost_reads, status.len), (1, 0));
}

#[test]
fn a_frozen_holder_is_waited_for_not_repaired() {
    let name = ShmName::new("sp-frozen");
    let mb = mailbox(&name, 8, 64);
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    let (holder, _) = peer_holding("hold-claim", name.as_str());
    let pid = holder.pid() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // Several liveness periods: a stopped process is alive.
    for _ in 0..3 {
        assert!(matches!(
            tx.send_timeout(b"x", Duration::from_millis(150)),
            Err(SendError::Timeout(_))
        ));
    }
    assert_eq!(
        mb.status().abandoned_writes,
        0,
        "not taken from a live holder"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    drop(holder); // SIGKILL: now it is dead, and repaired
    tx.send_timeout(b"y", PATIENCE).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"y");
}

#[test]
fn rendezvous_between_processes_on_the_packed_ring() {
    let name = ShmName::new("sp-zero");
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Zero,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(mb.status().geometry.is_packed());
    let mut tx = mb.sender().unwrap();
    // Nobody waits: try_send fails at once, a timed send times out and
    // leaves nothing behind (withdrawn).
    assert!(matches!(tx.try_send(b"a"), Err(SendError::Full(_))));
    assert!(matches!(
        tx.send_timeout(b"b", Duration::from_millis(30)),
        Err(SendError::Timeout(_))
    ));
    assert_eq!(mb.status().len, 0, "the withdrawn message is not queued");
    // A receiver process takes what is sent next, and only that.
    let consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--mailbox", name.as_str(), "--count", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    tx.send_timeout(b"c\n", PATIENCE).expect("rendezvous");
    let out = consumer.output_timeout(PATIENCE);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "c\n");
}
