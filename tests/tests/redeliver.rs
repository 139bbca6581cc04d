//! `Receiver::redeliver_if_killed`: a receiver killed (SIGKILL) while it
//! holds a message leaves that message queued, with the same index, for
//! the next receiver; without it the message is lost and counted in
//! `lost_reads`. This is what lets ipc-bridge's taking side, which copies
//! each message into its journal inside the receive callback, be killed
//! there without losing the message (its journal drops the repeat by the
//! index).

use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::Deadline;
use ipc_tests::{pause_gate, ShmName, PATIENCE};

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
    println!("attachment {}", rx.attachment_id());
    let _ = rx.recv_batch_indexed_until(Deadline::after(PATIENCE), 1, |index, msg| {
        println!("holding {index} {}", String::from_utf8_lossy(msg));
        std::thread::sleep(2 * PATIENCE);
    });
}

/// A child (this test binary running `test`) takes the next message of
/// `name`, receiving `how` (`redeliver` or `plain`), and is killed holding
/// it; returns the child's line ("holding INDEX MSG") and its receiver's
/// attachment identity.
fn killed_holding_next(name: &ShmName, test: &str, how: &str) -> (String, u64) {
    let spec = format!("{} {how}", name.as_str());
    let (mut child, lines) = ipc_tests::rerun_as_child(test, CHILD, &spec);
    let mut lines = lines.map_while(Result::ok);
    // (After libtest's "test NAME ... " on the same line.)
    let mut after = |word: &str| {
        lines
            .find_map(|l| l.find(word).map(|at| l[at + word.len()..].to_owned()))
            .unwrap_or_else(|| panic!("the child said no {word:?}"))
    };
    let id = after("attachment ").parse().expect("an identity");
    let line = format!("holding {}", after("holding "));
    child.kill();
    assert!(child.wait_timeout(PATIENCE).is_some(), "the child ends");
    (line, id)
}

/// A mailbox (`tag`) holding `msgs`, and a child (this test binary
/// running `test`) killed holding the first, having asked for
/// redelivery; returns the mailbox, its sender and the child's
/// attachment identity.
fn first_held_by_a_killed_child(
    tag: &str,
    test: &str,
    msgs: &[&[u8]],
) -> (ShmName, Mailbox, ipc_core::Sender, u64) {
    let (name, mb) = mailbox(tag, Capacity::Bounded(8));
    let mut tx = mb.sender().unwrap();
    for m in msgs {
        tx.send(m).unwrap();
    }
    let (line, child) = killed_holding_next(&name, test, "redeliver");
    assert_eq!(line, "holding 0 m0");
    (name, mb, tx, child)
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
    let (line, child) = killed_holding_next(name, test, how);
    // Once the dead child is repaired, the mailbox says whether its
    // message was put back, and which (the exporter of ipc-bridge asks so
    // after a restart).
    let held: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let settled = mb
        .settle_redeliveries(&[child], Deadline::after(PATIENCE))
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

/// Review of f7924bb: the repair of a receiver killed holding a message
/// for redelivery gave the readers' turn back before it counted the
/// message put back (`Mailbox::redeliveries`), so a receiver waiting for
/// that turn could take the message and read the count without it; an
/// exporter journaling that count would, after a restart, take the
/// message for one put back again and drop its entry although it had
/// sent it (a loss). The pause point holds the repair (in this thread)
/// right after the ring's recovery while another receiver takes it.
#[test]
fn a_message_put_back_is_counted_before_another_receiver_can_take_it() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let test = "a_message_put_back_is_counted_before_another_receiver_can_take_it";
    let (name, mb, tx, child) =
        first_held_by_a_killed_child("redeliver-counted", test, &[b"m0", b"m1"]);
    // The other receiver takes m0 while the repair (in this thread) stands
    // at the point, and lets the repair go on once it has: bounded, since
    // the message is free to take by then (after the fix, too).
    let (arm, gate) = pause_gate("repair: claims recovered");
    let mb2 = Mailbox::open(name.as_str()).unwrap();
    let mut rx = mb2.receiver().unwrap();
    rx.redeliver_if_killed().unwrap();
    let other = std::thread::spawn(move || {
        gate.reached("the repair of the dead child");
        let mut taken = None;
        rx.recv_batch_indexed_until(Deadline::after(PATIENCE), 1, |i, m| {
            taken = Some((i, m.to_vec(), mb2.redeliveries().count));
        })
        .expect("a message");
        gate.open();
        taken
    });
    arm.arm();
    let settled = mb
        .settle_redeliveries(&[child], Deadline::after(PATIENCE))
        .unwrap();
    ipc_core::pause::clear();
    let taken = other.join().unwrap();
    let (i, m, count_in_callback) = taken.expect("the other receiver took m0");
    assert_eq!((i, m.as_slice()), (0, &b"m0"[..]), "the message put back");
    assert_eq!(
        (settled.count, settled.last_index),
        (1, Some(0)),
        "what the repair put back"
    );
    assert_eq!(
        count_in_callback, 1,
        "the count its taker read already told of the put-back"
    );
    drop((tx, mb));
    Mailbox::unlink(name.as_str()).unwrap();
}

/// Review of f7924bb: `settle_redeliveries` took "every attachment listed
/// alive" for "every dead one repaired", but a reaper that has taken a
/// dead entry's lock and not yet marked it `REAPING` lists it alive: the
/// settle could answer before the repair counted the message put back (an
/// exporter would then send an entry whose message went back, a repeat).
/// It now waits for the dead receiver's own attachment to be freed. The
/// pause point holds another thread's reaper right after it took the lock.
#[test]
fn settling_waits_for_a_repair_another_reaper_has_begun() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let test = "settling_waits_for_a_repair_another_reaper_has_begun";
    let (name, mb, tx, child) = first_held_by_a_killed_child("redeliver-settle", test, &[b"m0"]);
    let (arm, gate) = pause_gate("reap: entry taken");
    let mb2 = Mailbox::open(name.as_str()).unwrap();
    let reaper = std::thread::spawn(move || {
        arm.arm();
        let r = mb2.settle_redeliveries(&[], Deadline::Now);
        ipc_core::pause::clear();
        r
    });
    gate.reached("the other reaper took the dead child's entry");
    let meanwhile = mb.settle_redeliveries(&[child], Deadline::after(Duration::from_millis(300)));
    gate.open();
    reaper.join().unwrap();
    assert_eq!(meanwhile, None, "answered while the repair had not run");
    let settled = mb
        .settle_redeliveries(&[child], Deadline::after(PATIENCE))
        .expect("repaired by the other reaper");
    assert_eq!((settled.count, settled.last_index), (1, Some(0)));
    drop((tx, mb));
    Mailbox::unlink(name.as_str()).unwrap();
}
