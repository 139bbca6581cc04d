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
//! `sys` (futex, liveness locks) → [`segment`] (named mappings) →
//! `layout`, [`sync`], `peers`, `claim` → `slots`, `packed` → `ring` (what
//! lives in shared memory) →
//! `queue` (open/attach/block/reap) → [`buffer`], [`mailbox`], [`ports`],
//! [`admin`].
//!
//! The public API is sound in safe code. The building blocks that safe
//! code could misuse (the ring, the attachment table, the raw layout, the
//! system calls) are private; the `internals` feature exposes them, hidden,
//! for this project's own tests, fuzzers and model checks only.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

/// Declares a module private, or public but hidden with the `internals`
/// feature (for the project's own tests and fuzzers).
macro_rules! internal_mod {
    ($name:ident) => {
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unreachable_pub)]
        pub(crate) mod $name;
    };
}

pub mod admin;
mod atomic;
pub mod buffer;
mod channel;
internal_mod!(claim);
pub mod endpoint;
pub mod error;
internal_mod!(layout);
pub mod mailbox;
internal_mod!(peers);
pub mod ports;
mod queue;
internal_mod!(packed);
internal_mod!(pause);
internal_mod!(ring);
pub mod segment;
pub mod sync;
pub mod synthetic;
internal_mod!(sys);

pub use buffer::{BufferConfig, Consumer, Producer, SharedBuffer};
pub use endpoint::{Receiver, Sender, SlotWriter};
pub use error::{
    AttachError, BatchSendError, CorruptError, CreateError, OpenError, RecvError, SegmentError,
    SendError,
};
pub use layout::{Flavor, Geometry, Kind, MAX_CAPACITY, MAX_MESSAGE, MAX_SEGMENT, PEER_SLOTS};
pub use peers::{PeerInfo, Role};
/// The bound on an unbounded chain's span for blocks of a given size (for
/// this project's own tests).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use queue::max_chain_for;
pub use queue::{Redeliveries, Status};
pub use sync::Deadline;
