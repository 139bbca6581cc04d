//! `Receiver::redeliver_if_killed`: a receiver killed (SIGKILL) while it
//! holds a message leaves that message queued, with the same index, for
//! the next receiver; without it the message is lost and counted in
//! `lost_reads`. This is what lets ipc-bridge's taking side, which copies
//! each message into its journal inside the receive callback, be killed
//! there without losing the message (its journal drops the repeat by the
//! index).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::Deadline;
use ipc_tests::{ChildGuard, ShmName, PATIENCE};

/// Set in a child run of this test binary: `NAME` and `redeliver` or `plain`.
const CHILD: &str = "IPC_TESTS_REDELIVER_CHILD";

/// The child: takes one message and holds it, in the callback, until killed.
fn child(spec: &str) {
    let (name, how) = spec.split_once(' ').expect("NAME MODE");
    let mb = Mailbox::open(name).expect("open");
    let mut rx = mb.receiver().expect("receiver");
    if how == "redeliver" {
        rx.redeliver_if_killed().expect("redelivery");
    }
    let _ = rx.recv_batch_indexed_until(Deadline::after(PATIENCE), 1, |index, msg| {
        println!("holding {index} {}", String::from_utf8_lossy(msg));
        std::thread::sleep(2 * PATIENCE);
    });
}

/// A child (this test binary running `test`) takes the next message of
/// `name`, receiving `how` (`redeliver` or `plain`), and is killed holding
/// it; returns the child's line ("holding INDEX MSG"), what the next
/// receiver gets first (index, message) and `lost_reads`; checks that the
/// status counts the message redelivered exactly when `how` asked for it.
fn kill_child_holding_next(
    mb: &Mailbox,
    name: &ShmName,
    test: &str,
    how: &str,
) -> (String, u64, Vec<u8>, u64) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{} {how}", name.as_str()))
        .stdout(Stdio::piped());
    let mut child = ChildGuard::new(c.spawn().expect("spawn the child"));
    let out = child.0.as_mut().unwrap().stdout.take().unwrap();
    let line = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        // (After libtest's "test NAME ... " on the same line.)
        .find_map(|l| l.find("holding ").map(|at| l[at..].to_owned()))
        .expect("the child took a message");
    child.kill();
    assert!(child.wait_timeout(PATIENCE).is_some(), "the child ends");
    // Once the dead child is repaired, the mailbox says whether its
    // message was put back, and which (the exporter of ipc-bridge asks so
    // after a restart).
    let held: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let settled = mb
        .settle_redeliveries(Deadline::after(PATIENCE))
        .expect("the dead child repaired");
    let put_back = (how == "redeliver").then_some(held);
    assert_eq!(
        (settled.count, settled.last_index),
        (u64::from(put_back.is_some()), put_back),
        "what the repair put back"
    );
    let mut rx = mb.receiver().unwrap();
    let mut first = None;
    rx.recv_batch_indexed_until(Deadline::after(PATIENCE), 1, |i, m| {
        first = Some((i, m.to_vec()))
    })
    .expect("a message");
    let (i, m) = first.unwrap();
    let st = mb.status();
    let expected = u64::from(how == "redeliver");
    assert_eq!(
        st.redelivered_reads, expected,
        "redelivered_reads in the status"
    );
    (line, i, m, st.lost_reads)
}

/// A mailbox of `capacity` for messages of up to 64 bytes, under a name
/// removed when the test ends.
fn mailbox(tag: &str, capacity: Capacity) -> (ShmName, Mailbox) {
    let name = ShmName::new(tag);
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity,
            max_message: 64,
            ..Default::default()
        },
    )
    .expect("create");
    (name, mb)
}

/// Sends m0, m1, m2; a child takes m0 and is killed holding it; returns
/// what the next receiver gets first (index, message) and `lost_reads`.
fn killed_holding(capacity: Capacity, tag: &str, test: &str, how: &str) -> (u64, Vec<u8>, u64) {
    let (name, mb) = mailbox(tag, capacity);
    let mut tx = mb.sender().unwrap();
    for m in [b"m0", b"m1", b"m2"] {
        tx.send(m).unwrap();
    }
    let (line, i, m, lost) = kill_child_holding_next(&mb, &name, test, how);
    assert_eq!(line, "holding 0 m0");
    drop((tx, mb));
    Mailbox::unlink(name.as_str()).unwrap();
    (i, m, lost)
}

#[test]
fn a_receiver_killed_holding_a_message_leaves_it_for_the_next_with_its_index() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let got = killed_holding(
        Capacity::Bounded(8),
        "redeliver",
        "a_receiver_killed_holding_a_message_leaves_it_for_the_next_with_its_index",
        "redeliver",
    );
    assert_eq!(got, (0, b"m0".to_vec(), 0));
}

#[test]
fn without_redelivery_the_message_a_killed_receiver_held_is_lost_and_counted() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let got = killed_holding(
        Capacity::Bounded(8),
        "no-redeliver",
        "without_redelivery_the_message_a_killed_receiver_held_is_lost_and_counted",
        "plain",
    );
    assert_eq!(got, (1, b"m1".to_vec(), 1));
}

#[test]
fn an_unbounded_queues_receiver_killed_holding_a_message_leaves_it_for_the_next() {
    // Before, an unbounded queue refused redelivery (its head moves on
    // before the callback runs): ipc-bridge's unbounded proxies lost the
    // message their bridge was killed journaling.
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let got = killed_holding(
        Capacity::Unbounded,
        "redeliver-unb",
        "an_unbounded_queues_receiver_killed_holding_a_message_leaves_it_for_the_next",
        "redeliver",
    );
    assert_eq!(got, (0, b"m0".to_vec(), 0));
}

#[test]
fn without_redelivery_an_unbounded_queue_loses_the_message_and_counts_it() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let got = killed_holding(
        Capacity::Unbounded,
        "no-redeliver-unb",
        "without_redelivery_an_unbounded_queue_loses_the_message_and_counts_it",
        "plain",
    );
    assert_eq!(got, (1, b"m1".to_vec(), 1));
}

#[test]
fn a_rendezvous_offer_its_receiver_was_killed_holding_stays_taken_and_comes_again() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    // The sender may no longer withdraw it (its dead receiver may have
    // used it), so its send returns Ok, never Disconnected or Timeout,
    // though the next receiver is the one that takes it.
    let (name, mb) = mailbox("redeliver-zero", Capacity::Zero);
    let mut tx = mb.sender().unwrap();
    let sender = std::thread::spawn(move || tx.send_timeout(b"m0".to_vec(), PATIENCE));
    let (line, i, m, lost) = kill_child_holding_next(
        &mb,
        &name,
        "a_rendezvous_offer_its_receiver_was_killed_holding_stays_taken_and_comes_again",
        "redeliver",
    );
    assert_eq!(
        line,
        format!("holding {i} m0"),
        "the same message, same index"
    );
    assert_eq!((m, lost), (b"m0".to_vec(), 0));
    assert!(sender.join().unwrap().is_ok(), "the send returned Ok");
    drop(mb);
    Mailbox::unlink(name.as_str()).unwrap();
}

/// Past the main segment (from the review of d98fad7): a chained block,
/// and a recycled one, whose ring counts on from its earlier laps.
const LOW: u64 = (1 << 40) - 1;

#[test]
fn redelivered_in_a_chained_block_with_its_index() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let (name, mb) = mailbox("r2x-chain", Capacity::Unbounded);
    let mut tx = mb.sender().unwrap();
    for i in 0..1100u32 {
        tx.send(format!("m{i}")).unwrap();
    }
    let mut rx = mb.receiver().unwrap();
    for _ in 0..1030 {
        rx.recv().unwrap();
    }
    drop(rx);
    let (line, i, m, lost) = kill_child_holding_next(
        &mb,
        &name,
        "redelivered_in_a_chained_block_with_its_index",
        "redeliver",
    );
    assert!(i >> 40 >= 1, "in a chained block: index {i:#x}");
    assert_eq!(line, format!("holding {i} {}", String::from_utf8_lossy(&m)));
    assert_eq!(m, b"m1030".to_vec());
    assert_eq!(lost, 0);
    drop((tx, mb));
}

#[test]
fn redelivered_in_a_recycled_block_with_its_index() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let (name, mb) = mailbox("r2x-recycled", Capacity::Unbounded);
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    let mut next = 0u32;
    let mut last_index = 0u64;
    // Send and drain block by block, the sender attached: drained blocks
    // become spares, and later blocks are those files again.
    let mut idx = Vec::new();
    for _ in 0..6 {
        for _ in 0..1024 {
            tx.send(format!("m{next}")).unwrap();
            next += 1;
        }
        let n = rx
            .recv_batch_indexed_until(Deadline::after(PATIENCE), 1024, |i, _| idx.push(i))
            .unwrap();
        let _ = n;
        while idx.len() % 1024 != 0 {
            rx.recv_batch_indexed_until(Deadline::after(PATIENCE), 1024, |i, _| idx.push(i))
                .unwrap();
        }
    }
    for w in idx.windows(2) {
        assert!(
            w[0] < w[1],
            "indexes increase: {:#x} then {:#x}",
            w[0],
            w[1]
        );
        last_index = w[1];
    }
    let recycled = idx.iter().any(|i| i >> 40 >= 2 && i & LOW >= 1024);
    assert!(
        recycled,
        "some block was a recycled file (count runs on); last {last_index:#x}"
    );
    for _ in 0..10 {
        tx.send(format!("m{next}")).unwrap();
        next += 1;
    }
    rx.recv().unwrap();
    drop(rx);
    let (line, i, m, lost) = kill_child_holding_next(
        &mb,
        &name,
        "redelivered_in_a_recycled_block_with_its_index",
        "redeliver",
    );
    eprintln!(
        "redelivered index {i:#x} block {} within {}",
        i >> 40,
        i & LOW
    );
    assert_eq!(line, format!("holding {i} {}", String::from_utf8_lossy(&m)));
    assert_eq!(m, format!("m{}", 6 * 1024 + 1).into_bytes());
    assert_eq!(lost, 0);
    drop((tx, mb));
}
