//! Commit tags on a rendezvous mailbox (`Sender::send_tagged_batch_until`,
//! `Sender::last_tag`) across a real kill: the last tag is that of the
//! last tagged offer a receiver took. An offer that a killed sender left
//! waiting is withdrawn by the next sender's `last_tag` (so it neither
//! goes in later nor passes for delivered); one a receiver took after the
//! kill keeps its tag. This is what lets ipc-bridge's delivering side be
//! killed while its offer waits without the message arriving twice.

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{Deadline, RecvError};
use ipc_tests::{wait_until, ShmName, PATIENCE};

/// Set in a child run of this test binary: `NAME TAG MESSAGE`.
const CHILD: &str = "IPC_TESTS_TAGS_CHILD";

/// The child: offers MESSAGE tagged TAG, and waits (until killed).
fn child(spec: &str) {
    let mut parts = spec.split(' ');
    let (name, tag, msg) = (
        parts.next().expect("NAME"),
        parts.next().expect("TAG").parse::<u64>().expect("a number"),
        parts.next().expect("MESSAGE"),
    );
    let mb = Mailbox::open(name).expect("open");
    let mut tx = mb.sender().expect("sender");
    println!("offering");
    let _ = tx.send_tagged_batch_until([(tag, msg.as_bytes())], Deadline::after(2 * PATIENCE));
}

/// A child offers `msg` tagged `tag` on `mb` and is killed while the
/// offer waits (the mailbox holds it).
fn kill_child_offering(mb: &Mailbox, name: &ShmName, tag: u64, msg: &str) {
    let test = "tagged_offers_left_by_a_killed_sender_are_withdrawn_unless_a_receiver_took_them";
    let (mut child, lines) =
        ipc_tests::rerun_as_child(test, CHILD, &format!("{} {tag} {msg}", name.as_str()));
    lines
        .map_while(Result::ok)
        .find(|l| l.contains("offering"))
        .expect("the child offers");
    wait_until("the offer is in", || mb.status().len == 1);
    child.kill();
    assert!(child.wait_timeout(PATIENCE).is_some(), "the child ends");
}

#[test]
fn tagged_offers_left_by_a_killed_sender_are_withdrawn_unless_a_receiver_took_them() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let name = ShmName::new("tags-zero");
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Zero,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    assert_eq!(tx.last_tag(Deadline::Now).unwrap(), 0, "no tag yet");

    // Taken by a receiver while its sender waits: the tag is the last.
    let mut offering = mb.sender().unwrap();
    let t = std::thread::spawn(move || {
        offering
            .send_tagged_batch_until([(5u64, &b"one"[..])], Deadline::after(PATIENCE))
            .map(|_| ())
            .map_err(|e| e.error.to_string())
    });
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"one");
    t.join().unwrap().expect("the offer was taken");
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 5);

    // Left waiting by a sender killed: withdrawn by the next look at the
    // last tag, which does not name it.
    kill_child_offering(&mb, &name, 9, "two");
    assert_eq!(
        tx.last_tag(Deadline::after(PATIENCE)).unwrap(),
        0,
        "withdrawn"
    );
    assert_eq!(mb.status().len, 0, "nothing queued");
    assert!(
        matches!(rx.try_recv(), Err(RecvError::Empty)),
        "two never comes"
    );

    // Taken by a receiver after its sender was killed: its tag stays.
    kill_child_offering(&mb, &name, 11, "three");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"three");
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 11);

    // Timed out (withdrawn by its own sender): the tag goes with it, and
    // names nothing any more.
    let soon = Deadline::after(std::time::Duration::from_millis(50));
    let withdrawn = tx.send_tagged_batch_until([(13u64, &b"four"[..])], soon);
    assert!(withdrawn.is_err(), "nobody takes it: the offer times out");
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 0);
    drop((rx, tx, mb));
    Mailbox::unlink(name.as_str()).unwrap();
}
