//! The message-passing model: named mailboxes (indirect addressing) that
//! any number of processes open as senders or receivers, with a capacity
//! chosen at creation. Direct addressing (process ports) is in
//! [`crate::ports`].
//!
//! | capacity              | `send` waits                          |
//! |-----------------------|---------------------------------------|
//! | `Capacity::Zero`      | until a receiver has taken the message |
//! | `Capacity::Bounded(n)`| while `n` messages wait                |
//! | `Capacity::Unbounded` | never (storage grows by segments)      |
//!
//! Bounded and rendezvous mailboxes pack their messages in a ring of bytes
//! (`MailboxConfig::budget`): a small message costs its length, not the
//! largest message's. Senders take turns to claim room, receivers to take
//! messages (see [`crate::packed`]).
//!
//! A rendezvous `send` returns once a receiver has taken the message out of
//! the ring. If that receiver then dies before using it, the message
//! is lost like any message a dying receiver held, and counted in the
//! status's `lost_reads`; the sender is not told.
//!
//! # Where mailboxes differ from crossbeam-channel, on purpose
//!
//! * **A named mailbox outlives its endpoints.** It is a file in /dev/shm:
//!   when every receiver has gone, senders get `Disconnected`, but a new
//!   receiver that attaches later gets the messages still queued, and
//!   senders can succeed again. Disconnection is a state, not an end.
//! * **A rendezvous `try_send` has a grace.** It succeeds only if a
//!   receiver is waiting now; it then waits up to 50 ms for that receiver to
//!   take the message (another process has to be scheduled to do it), and
//!   withdraws it if none did.
//! * **`try_recv` waits for a write in progress, boundedly.** Like
//!   crossbeam, it reports `Empty` only when nothing is queued: if the
//!   message at the head is being written, it waits for it, but at most
//!   100 ms (the writer may be frozen, or dead until reaped).
//! * **Receivers take turns, senders too.** A receiver reading a message
//!   in place (`recv_with`) holds the receivers' turn until its callback
//!   returns, and a sender holding a zero-copy claim the senders' turn:
//!   meanwhile another receiver's `try_recv` (another sender's `try_send`)
//!   waits for it, at most 100 ms, then says `Empty` (`Full`). A
//!   rendezvous mailbox holds one offer at a time; its `send` returns once
//!   the receiver let go of the message (an in-place callback returned).
//! * **A dead peer is noticed within a liveness period** (100 ms), not at
//!   once: a killed receiver cannot detach, so senders see `Disconnected`
//!   once a survivor has found it dead.
//!
//! ```
//! use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
//! # let name = format!("doc-mailbox-{}", std::process::id());
//! let mb = Mailbox::create(&name, &MailboxConfig { capacity: Capacity::Bounded(2), ..Default::default() })?;
//! let mut tx = mb.sender()?;
//! let mut rx = mb.receiver()?;
//! tx.send(b"one")?;
//! tx.send_pod(42u64)?;
//! assert!(matches!(tx.try_send(b"three"), Err(ipc_core::SendError::Full(_))));
//! assert_eq!(rx.recv()?, b"one");
//! assert_eq!(rx.recv_pod::<u64>()?, 42);
//! drop(rx); // every receiver gone: sends fail at once, handing the message back
//! assert_eq!(tx.send(b"x").unwrap_err().into_inner(), b"x");
//! Mailbox::unlink(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::{Receiver, Sender};
use crate::error::{AttachError, CreateError, OpenError, SegmentError};
use crate::layout::{Flavor, Geometry, Kind};
use crate::queue::{Queue, Redeliveries, Status, INIT_TIMEOUT};
use crate::segment::DEFAULT_MODE;
use crate::sync::Deadline;

/// Most messages per segment of an unbounded queue's chain.
pub const UNBOUNDED_BLOCK: u32 = 1024;

/// Most messages one chained segment of an unbounded queue takes for
/// messages of up to `max_message` bytes: [`UNBOUNDED_BLOCK`], whatever the
/// size. A segment's ring is sized in bytes as a bounded queue's is (room
/// for that many of the largest, at most 4 MiB, or two of the largest,
/// as any ring needs: 256 MiB for 64 MiB messages), and a segment ends at
/// whichever fills first: small
/// messages cost their length, not the largest size.
pub fn unbounded_block_for(_max_message: u32) -> u32 {
    UNBOUNDED_BLOCK
}

/// How many messages a mailbox buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// Rendezvous: `send` returns once a receiver has taken the message.
    Zero,
    /// At most `n` messages wait; `Bounded(0)` is `Zero`.
    Bounded(u32),
    /// Senders never wait.
    Unbounded,
}

impl Capacity {
    fn flavor_and_slots(self, max_message: u32) -> (Flavor, u32) {
        match self {
            // One offer at a time: a sender's message is at the head (or
            // behind the padding at the wrap), so withdrawing it waits only
            // for a receiver in the middle of taking it.
            Capacity::Zero | Capacity::Bounded(0) => (Flavor::Zero, 1),
            Capacity::Bounded(n) => (Flavor::Bounded, n),
            Capacity::Unbounded => (Flavor::Unbounded, unbounded_block_for(max_message)),
        }
    }
}

impl std::str::FromStr for Capacity {
    type Err = String;

    /// `0` (rendezvous), a number, or `unbounded`.
    fn from_str(s: &str) -> Result<Capacity, String> {
        match s {
            "unbounded" => Ok(Capacity::Unbounded),
            "0" | "zero" => Ok(Capacity::Zero),
            n => n.parse().map(Capacity::Bounded).map_err(|_| {
                format!("capacity {n:?} is not 0, a number of messages, or 'unbounded'")
            }),
        }
    }
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capacity::Zero | Capacity::Bounded(0) => f.write_str("0 (rendezvous)"),
            Capacity::Bounded(n) => write!(f, "{n}"),
            Capacity::Unbounded => f.write_str("unbounded"),
        }
    }
}

/// How to create a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Buffering.
    pub capacity: Capacity,
    /// Largest message, bytes (1 to 64 MiB).
    pub max_message: u32,
    /// Permission bits (default 0600, owner only).
    pub mode: u32,
    /// Bytes of the ring that bounded and rendezvous mailboxes pack their
    /// messages in (each takes its length rounded up to 8, plus an 8-byte
    /// header), rounded down to a power of two; 0 picks room for
    /// `capacity` messages of the largest size, at most 4 MiB. Memory used
    /// is this, whatever the largest message (unbounded mailboxes grow by
    /// blocks instead, and ignore it).
    pub budget: u64,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            capacity: Capacity::Bounded(64),
            max_message: 4096,
            mode: DEFAULT_MODE,
            budget: 0,
        }
    }
}

/// A handle to a named mailbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailbox {
    q: Arc<Queue>,
}

impl Mailbox {
    /// Creates a mailbox (fails if the name exists).
    pub fn create(name: &str, config: &MailboxConfig) -> Result<Mailbox, CreateError> {
        let (flavor, slots) = config.capacity.flavor_and_slots(config.max_message);
        // An unbounded mailbox's blocks take the default size (`budget` is
        // for bounded and rendezvous ones, as documented).
        let budget = if flavor == Flavor::Unbounded {
            0
        } else {
            config.budget
        };
        let geo = Geometry::packed(Kind::Mailbox, slots, config.max_message, budget)
            .map_err(CreateError::InvalidConfig)?;
        Ok(Mailbox {
            q: Arc::new(Queue::create(
                name,
                geo,
                config.mode,
                flavor,
                0,
                false,
                None,
            )?),
        })
    }

    /// Opens an existing mailbox.
    pub fn open(name: &str) -> Result<Mailbox, OpenError> {
        Self::open_timeout(name, INIT_TIMEOUT)
    }

    /// Opens an existing mailbox, waiting up to `timeout` for its creator.
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<Mailbox, OpenError> {
        Ok(Mailbox {
            q: Arc::new(Queue::open(name, Some(Kind::Mailbox), timeout)?),
        })
    }

    /// Opens the mailbox, creating it with `config` if it does not exist.
    pub fn open_or_create(name: &str, config: &MailboxConfig) -> Result<Mailbox, OpenError> {
        loop {
            match Self::open(name) {
                Err(OpenError::Segment(SegmentError::NotFound(_))) => {}
                other => return other,
            }
            match Self::create(name, config) {
                Ok(mb) => return Ok(mb),
                Err(CreateError::Segment(SegmentError::AlreadyExists(_))) => continue,
                Err(CreateError::Segment(e)) => return Err(e.into()),
                Err(CreateError::InvalidConfig(reason)) => {
                    return Err(OpenError::InvalidConfig {
                        name: name.to_owned(),
                        reason,
                    })
                }
            }
        }
    }

    /// Removes the name (and any chained segments); open handles keep
    /// working.
    pub fn unlink(name: &str) -> Result<(), SegmentError> {
        crate::admin::unlink_with_chain(name)
    }

    /// The mailbox's name.
    pub fn name(&self) -> &str {
        self.q.name()
    }

    /// The capacity it was created with.
    pub fn capacity(&self) -> Capacity {
        match self.q.flavor() {
            Flavor::Zero => Capacity::Zero,
            Flavor::Bounded => Capacity::Bounded(self.q.geometry().capacity),
            Flavor::Unbounded => Capacity::Unbounded,
        }
    }

    /// Largest message.
    pub fn max_message(&self) -> usize {
        self.q.geometry().max_message as usize
    }

    /// Status: geometry, queued messages, attached processes.
    pub fn status(&self) -> Status {
        self.q.status()
    }

    /// What the repairs of receivers that died holding a message have put
    /// back for redelivery so far (two loads; see
    /// [`Mailbox::settle_redeliveries`]).
    pub fn redeliveries(&self) -> Redeliveries {
        self.q.redeliveries()
    }

    /// Repairs what dead processes left on this mailbox now, waits until
    /// `deadline` until each receiver of `gone` (identities from
    /// [`Receiver::attachment_id`]) has gone and been repaired (by us or
    /// by another process), then says what repairs have put back for
    /// redelivery so far (`None`: one was still there at the deadline).
    ///
    /// For a receiver that asks for redelivery
    /// ([`Receiver::redeliver_if_killed`]) and records each message it
    /// takes inside the receive callback, on a mailbox with other
    /// receivers, as `ipc-bridge` does when it serves pullers: at most one
    /// message is held at a time, so if the record notes the message's
    /// index and [`Mailbox::redeliveries`]' count (read inside the
    /// callback), its successor knows the message was put back, and so
    /// goes to whichever receiver takes it next, exactly when the count
    /// has since moved by one and the last index is that message's, once
    /// the dead receiver (`gone`: its identity, recorded too) is
    /// repaired. (Moved by more: another redelivering receiver died too,
    /// and nothing says which.)
    pub fn settle_redeliveries(&self, gone: &[u64], deadline: Deadline) -> Option<Redeliveries> {
        self.q.settle_redeliveries(gone, deadline)
    }

    /// Attaches a sender. Once every receiver has gone, its sends fail
    /// with `Disconnected`, handing the message back.
    pub fn sender(&self) -> Result<Sender, AttachError> {
        Sender::attach(self.q.clone(), true)
    }

    /// Attaches a receiver. Once every sender has gone and the mailbox is
    /// drained, its receives return `Disconnected`.
    pub fn receiver(&self) -> Result<Receiver, AttachError> {
        Receiver::attach(self.q.clone())
    }
}
