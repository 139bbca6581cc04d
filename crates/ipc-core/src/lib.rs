//! Shared-memory inter-process communication for Linux.
//!
//! Two models, on the same machinery:
//!
//! * the **shared-memory model**: a named segment holding a bounded buffer
//!   that producers and consumers in different processes attach to
//!   ([`buffer`]);
//! * the **message-passing model**: mailboxes and process ports
//!   ([`mailbox`]).
//!
//! Layers, each importing only those below it:
//! [`sys`] (futex, liveness) → [`segment`] (named mappings) →
//! [`layout`], [`sync`], [`peers`], [`ring`] (what lives in shared memory) →
//! `queue` (open/attach/block/reap) → [`buffer`], [`mailbox`].
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod admin;
mod atomic;
pub mod buffer;
mod channel;
pub mod endpoint;
pub mod error;
pub mod layout;
pub mod mailbox;
pub mod peers;
pub mod ports;
mod queue;
pub mod ring;
pub mod segment;
pub mod sync;
pub mod synthetic;
pub mod sys;

pub use buffer::{BufferConfig, Consumer, Producer, SharedBuffer};
pub use endpoint::{Receiver, Sender, SlotWriter};
pub use error::{
    AttachError, CorruptError, CreateError, OpenError, RecvError, SegmentError, SendError,
};
pub use queue::Status;
pub use sync::Deadline;
