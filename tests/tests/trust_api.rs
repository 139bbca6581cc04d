//! Errors must name their real cause, and iteration must not hide one: an
//! invalid mailbox configuration is reported as invalid (not as corrupt
//! shared state); a port whose mailbox has every attachment taken is
//! reported as full of peers (not as `Disconnected`); `Receiver::iter()`
//! and `Receiver::next()` on a corrupt ring do not end as if the stream
//! had ended.
//!
//! Guards defects 11 (error causes) and 12 (`iter()` turning `Corrupt`
//! into a silent end) of issue 8.

mod trust_common;

use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::ports::{Port, PortSender};
use ipc_core::{BufferConfig, SendError, SharedBuffer};
use ipc_tests::ShmName;
use trust_common::{find_record, record_header, Mapped, HANG};

#[test]
fn open_or_create_with_an_invalid_config_says_invalid_not_corrupt() {
    let configs = [
        MailboxConfig {
            capacity: Capacity::Bounded(4),
            max_message: 0,
            ..Default::default()
        },
        MailboxConfig {
            capacity: Capacity::Bounded(1 << 30),
            max_message: 16,
            ..Default::default()
        },
    ];
    let mut problems = vec![];
    for cfg in configs {
        let name = ShmName::new("badcfg");
        match Mailbox::open_or_create(name.as_str(), &cfg) {
            Ok(_) => problems.push(format!("{cfg:?} was accepted")),
            Err(e) => {
                let text = e.to_string();
                let lower = text.to_lowercase();
                if !lower.contains("invalid") || lower.contains("corrupt") {
                    problems.push(format!(
                        "{cfg:?}: error {text:?} (debug {e:?}) should say the configuration is invalid, not that shared state is corrupt"
                    ));
                }
            }
        }
        if name.path().exists() {
            problems.push(format!("{cfg:?} left {} behind", name.path().display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

#[test]
fn port_send_to_a_mailbox_with_every_attachment_taken_says_too_many_peers() {
    let base = ShmName::new("portfull");
    // The mailbox behind port NAME is `port.NAME` (ports.rs PORT_PREFIX).
    let _mailbox_name = ShmName(format!("port.{}", base.as_str()));
    let port = Port::register(base.as_str(), &MailboxConfig::default()).unwrap();
    let mb = Mailbox::open(&format!("port.{}", base.as_str())).unwrap();
    // The port's own receiver holds one of the 64 entries: take the rest.
    let mut held = vec![];
    while let Ok(s) = mb.sender() {
        held.push(s);
        assert!(held.len() <= 64, "more than 64 attachments accepted");
    }
    assert_eq!(
        held.len(),
        63,
        "64 attachments, the port's receiver among them"
    );
    let mut client = PortSender::new("trust-client").unwrap();
    let err = client
        .send_to(base.as_str(), b"hello")
        .expect_err("no attachment left for the client");
    let text = err.to_string();
    let lower = text.to_lowercase();
    drop(held);
    drop(port);
    assert!(
        !matches!(err, SendError::Disconnected(_))
            && (lower.contains("peer") || lower.contains("attach") || lower.contains("too many")),
        "send_to a live port whose mailbox has 64 attached processes gave {err:?}: {text:?}; want an error saying too many peers"
    );
}

/// What the first item of an iterator looks like, whatever the item type
/// (`Vec<u8>` today; perhaps `Result<Vec<u8>, RecvError>` after the fix).
fn describe<T: Debug>(item: Option<T>) -> String {
    format!("{item:?}")
}

/// Scribbles the header of the record at the head of a buffer's ring into
/// a value that fits no state (not committed, yet not zero), so that
/// receiving reports `Corrupt`.
fn corrupt_head(tag: &str) -> (ShmName, SharedBuffer, ipc_core::Sender, ipc_core::Receiver) {
    let name = ShmName::new(tag);
    let buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 32,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    tx.send(b"trust-iter-marker").unwrap();
    let at = find_record(&name.path(), b"trust-iter-marker").expect("marker in the file");
    let map = Mapped::new(&name.path());
    // Message 0, 17 bytes (packed.rs record header).
    assert_eq!(
        map.u64_at(at).load(Ordering::Relaxed),
        record_header(0, 17),
        "header found"
    );
    map.u64_at(at)
        .store(0x000f_ffff_0000_0000, Ordering::Relaxed);
    // Sanity: a plain receive reports the corruption.
    let r = rx.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(r, Err(ipc_core::RecvError::Corrupt(_))),
        "recv on the scribbled ring: {r:?}"
    );
    (name, buf, tx, rx)
}

/// Runs `f` on a thread, failing the test if it hangs.
fn bounded<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .expect("iteration hung (or panicked: see above)")
}

/// Expected behaviour, for either API: the first item of `iter()` (and of
/// the receiver used as an iterator) on a corrupt ring is the error
/// (`Some(Err(Corrupt(..)))` if the item type becomes a `Result`), not
/// `None`, which means end of stream. Written against today's API
/// (`Item = Vec<u8>`); it compiles unchanged if the item becomes a
/// `Result`, because it only formats the item.
#[test]
fn iter_on_a_corrupt_ring_does_not_end_silently() {
    let (_name, _buf, tx, rx) = corrupt_head("iter");
    let (via_iter, via_next, rx) = bounded(move || {
        let mut rx = rx;
        let a = describe(rx.iter().next());
        let b = describe(rx.next());
        (a, b, rx)
    });
    drop((tx, rx));
    let mut problems = vec![];
    for (what, got) in [("iter().next()", via_iter), ("Receiver::next()", via_next)] {
        if !got.contains("Corrupt") {
            problems.push(format!(
                "{what} on a corrupt ring (a live producer attached) gave {got}: the corruption reads as end of stream"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}
