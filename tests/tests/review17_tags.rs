//! From the review of 1e6b3f4 (rendezvous tags): `Sender::last_tag` on a
//! rendezvous mailbox must not withdraw the offer a live sender waits
//! with.

use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::Deadline;
use ipc_tests::{wait_until, ShmName, PATIENCE};

/// `last_tag` withdrew any tagged offer still waiting, without asking
/// whether its sender was gone: a live sender's offer was withdrawn, and
/// that sender, which reads the head passing its record as "taken",
/// returned Ok for a message that no receiver ever got.
#[test]
fn last_tag_never_withdraws_the_offer_a_live_sender_waits_with() {
    let name = ShmName::new("r17-live-offer");
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
    let mut looker = mb.sender().unwrap();
    let mut offering = mb.sender().unwrap();
    let t = std::thread::spawn(move || {
        offering
            .send_tagged_batch_until([(5u64, &b"live"[..])], Deadline::after(PATIENCE))
            .map(|_| ())
            .map_err(|e| e.error.to_string())
    });
    wait_until("the offer is in", || mb.status().len == 1);
    // The live sender's offer is not this look's to settle: it times out.
    let tag = looker.last_tag(Deadline::after(Duration::from_millis(300)));
    let got = rx.recv_timeout(Duration::from_secs(2));
    let sent = t.join().unwrap();
    drop((rx, looker, mb));
    Mailbox::unlink(name.as_str()).unwrap();
    assert!(
        sent.is_err() || matches!(&got, Ok(m) if m == b"live"),
        "the live sender's send returned {sent:?}, the receiver got {got:?} (last_tag said {tag:?})"
    );
    assert!(sent.is_ok(), "the receiver took it: {sent:?}");
}
