//! Error types, one per operation family.

use std::fmt;
use std::time::Duration;

/// Errors of [`Segment`](crate::segment::Segment) operations.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The name is not a plain segment name.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size of zero, or too large for this platform.
    #[error("invalid segment size {len}")]
    InvalidSize {
        /// The size asked for.
        len: usize,
    },
    /// `create` found the name taken.
    #[error("segment {0:?} already exists")]
    AlreadyExists(String),
    /// `open` or `unlink` found no such name.
    #[error("segment {0:?} does not exist")]
    NotFound(String),
    /// The segment belongs to someone else or its mode forbids us.
    #[error("permission denied for segment {0:?}")]
    PermissionDenied(String),
    /// /dev/shm cannot hold the segment.
    #[error(
        "not enough space in /dev/shm for segment {name:?}: asked for {requested} bytes, {} free",
        available.map_or_else(|| "unknown".to_owned(), |a| format!("{a} bytes"))
    )]
    NoSpace {
        /// The segment's name.
        name: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes free on /dev/shm when creation failed, if known.
        available: Option<u64>,
    },
    /// The name exists but is not a regular shared-memory file.
    #[error("{0:?} in /dev/shm is not a shared-memory segment")]
    NotASegment(String),
    /// The segment exists but has no bytes yet (its creator may still be
    /// sizing it).
    #[error("segment {0:?} is empty")]
    Empty(String),
    /// Any other operating-system error.
    #[error("{op} failed for segment {name:?}: {source}")]
    Os {
        /// The segment's name.
        name: String,
        /// The system call that failed.
        op: &'static str,
        /// The error number.
        source: nix::errno::Errno,
    },
}

/// Shared state that cannot be right: written by a buggy or hostile peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared state is corrupt: {0}")]
pub struct CorruptError(pub String);

/// Errors of creating a buffer or mailbox segment.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The requested geometry is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The segment could not be created.
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

/// Errors of opening an existing buffer or mailbox segment.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The segment could not be opened or mapped.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The bytes in the segment are not one of our headers.
    #[error("segment {name:?} is not an ipc-core segment ({reason})")]
    NotOurs {
        /// The segment's name.
        name: String,
        /// What gave it away.
        reason: String,
    },
    /// Ours, but a layout version this build does not speak.
    #[error("segment {name:?} has layout version {found}, this build expects {expected}")]
    VersionMismatch {
        /// The segment's name.
        name: String,
        /// Version found in the header.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The mapping is shorter than its header says.
    #[error(
        "segment {name:?} is truncated: header needs {expected} bytes, the segment has {actual}"
    )]
    Truncated {
        /// The segment's name.
        name: String,
        /// Bytes the geometry needs.
        expected: u64,
        /// Bytes actually mapped.
        actual: u64,
    },
    /// The creator did not publish the header in time.
    #[error("segment {name:?} was not initialized within {waited:?}")]
    NotInitialized {
        /// The segment's name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A segment of the other model (buffer vs mailbox).
    #[error("segment {name:?} is a {found}, not a {expected}")]
    WrongKind {
        /// The segment's name.
        name: String,
        /// What it is.
        found: &'static str,
        /// What the caller asked for.
        expected: &'static str,
    },
    /// `open_or_create` was given a configuration it cannot create.
    #[error("segment {name:?}: invalid configuration: {reason}")]
    InvalidConfig {
        /// The segment's name.
        name: String,
        /// What is out of range.
        reason: String,
    },
    /// The header's geometry is impossible or fails its checksum.
    #[error("segment {name:?}: {problem}")]
    Corrupt {
        /// The segment's name.
        name: String,
        /// What is wrong.
        problem: CorruptError,
    },
}

/// Errors of attaching a producer or consumer.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Every slot of the attachment table is taken by a live process.
    #[error("segment {name:?} already has {max} attached processes")]
    TooManyPeers {
        /// The segment's name.
        name: String,
        /// Size of the attachment table.
        max: usize,
    },
    /// A single-producer/single-consumer segment already has a live
    /// process in that role.
    #[error("segment {name:?} takes one {role} at a time and has one")]
    RoleTaken {
        /// The segment's name.
        name: String,
        /// "producer" or "consumer".
        role: &'static str,
    },
    /// The handle was inherited through `fork`: open the segment anew in
    /// this process to take part.
    #[error("segment {name:?}: this handle was inherited through fork; open the segment again in the child")]
    Inherited {
        /// The segment's name.
        name: String,
    },
    /// The liveness lock of the attachment could not be taken.
    #[error("segment {name:?}: cannot take the liveness lock: {source}")]
    Lock {
        /// The segment's name.
        name: String,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// Why a send failed. The message is handed back in every case.
///
/// `send` returns `Disconnected`, `TooLarge`, `NoSpace` (unbounded only) or
/// `Corrupt`; `try_send` also `Full`; `send_timeout` also `Timeout`.
pub enum SendError<M> {
    /// The buffer is full right now (`try_send` only).
    Full(M),
    /// The deadline passed while the buffer stayed full.
    Timeout(M),
    /// Every consumer that attached has gone: nobody will ever read it.
    Disconnected(M),
    /// The message exceeds the segment's maximum message size.
    TooLarge {
        /// The message.
        msg: M,
        /// Its length.
        len: usize,
        /// The segment's maximum.
        max: usize,
    },
    /// An unbounded queue could not grow: the system refused more shared
    /// memory. Nothing already queued is lost.
    NoSpace(M, String),
    /// The shared state is corrupt.
    Corrupt(M, CorruptError),
    /// The sender was inherited through `fork`; it belongs to the parent.
    /// Attach anew in this process.
    Inherited(M),
    /// The destination exists but cannot be reached (a port's mailbox
    /// that refuses another attachment, or cannot be opened): the cause.
    Unreachable(M, String),
    /// This queue does not offer what was asked of it: why.
    Unsupported(M, &'static str),
}

impl<M> SendError<M> {
    /// The same error carrying `f(message)`.
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> SendError<N> {
        match self {
            SendError::Full(m) => SendError::Full(f(m)),
            SendError::Timeout(m) => SendError::Timeout(f(m)),
            SendError::Disconnected(m) => SendError::Disconnected(f(m)),
            SendError::TooLarge { msg, len, max } => SendError::TooLarge {
                msg: f(msg),
                len,
                max,
            },
            SendError::NoSpace(m, why) => SendError::NoSpace(f(m), why),
            SendError::Corrupt(m, e) => SendError::Corrupt(f(m), e),
            SendError::Inherited(m) => SendError::Inherited(f(m)),
            SendError::Unreachable(m, why) => SendError::Unreachable(f(m), why),
            SendError::Unsupported(m, why) => SendError::Unsupported(f(m), why),
        }
    }

    /// Takes the message back.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m)
            | SendError::Timeout(m)
            | SendError::Disconnected(m)
            | SendError::TooLarge { msg: m, .. }
            | SendError::NoSpace(m, _)
            | SendError::Corrupt(m, _)
            | SendError::Inherited(m)
            | SendError::Unreachable(m, _)
            | SendError::Unsupported(m, _) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
            SendError::Disconnected(_) => f.write_str("Disconnected(..)"),
            SendError::TooLarge { len, max, .. } => {
                write!(f, "TooLarge {{ len: {len}, max: {max}, .. }}")
            }
            SendError::NoSpace(_, why) => write!(f, "NoSpace(.., {why:?})"),
            SendError::Corrupt(_, e) => write!(f, "Corrupt(.., {e:?})"),
            SendError::Inherited(_) => f.write_str("Inherited(..)"),
            SendError::Unreachable(_, why) => write!(f, "Unreachable(.., {why:?})"),
            SendError::Unsupported(_, why) => write!(f, "Unsupported(.., {why:?})"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("the buffer is full"),
            SendError::Timeout(_) => f.write_str("timed out waiting for space in the buffer"),
            SendError::Disconnected(_) => f.write_str("every consumer has gone"),
            SendError::TooLarge { len, max, .. } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            SendError::NoSpace(_, why) => write!(f, "the queue cannot grow: {why}"),
            SendError::Corrupt(_, e) => e.fmt(f),
            SendError::Inherited(_) => {
                f.write_str("this sender was inherited through fork; attach anew in this process")
            }
            SendError::Unreachable(_, why) => write!(f, "cannot reach the destination: {why}"),
            SendError::Unsupported(_, why) => write!(f, "not supported here: {why}"),
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A batch send that stopped early: how many messages went, and why the
/// next one did not (it carries that message back).
pub struct BatchSendError<M> {
    /// Messages sent before the failure.
    pub sent: usize,
    /// Why the next message was not sent.
    pub error: SendError<M>,
}

impl<M> fmt::Debug for BatchSendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BatchSendError {{ sent: {}, error: {:?} }}",
            self.sent, self.error
        )
    }
}

impl<M> fmt::Display for BatchSendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} message(s) sent, then: {}", self.sent, self.error)
    }
}

impl<M> std::error::Error for BatchSendError<M> {}

/// Why a receive failed.
///
/// `recv` returns `Disconnected` or `Corrupt`; `try_recv` also `Empty`;
/// `recv_timeout` also `Timeout`; `recv_into` also `BufferTooSmall`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing to receive right now (`try_recv` only).
    #[error("the buffer is empty")]
    Empty,
    /// The deadline passed with nothing to receive.
    #[error("timed out waiting for a message")]
    Timeout,
    /// End of stream: every producer has gone and the buffer is drained.
    #[error("end of stream: every producer has gone and the buffer is drained")]
    Disconnected,
    /// The operation does not apply to this queue (the reason).
    #[error("not supported here: {0}")]
    Unsupported(&'static str),
    /// The caller's buffer cannot hold the next message, which stays queued.
    #[error("the next message has {needed} bytes, the buffer given holds {available}")]
    BufferTooSmall {
        /// Length of the next message.
        needed: usize,
        /// Length of the caller's buffer.
        available: usize,
    },
    /// A typed receive found a message of another size (it is consumed).
    #[error("expected a message of {expected} bytes, got {found}")]
    WrongSize {
        /// Size of the type asked for.
        expected: usize,
        /// Size of the message.
        found: usize,
    },
    /// The shared state is corrupt.
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
    /// The receiver was inherited through `fork`; it belongs to the
    /// parent. Attach anew in this process.
    #[error("this receiver was inherited through fork; attach anew in this process")]
    Inherited,
    /// A segment of the queue (a chained block) cannot be opened: the
    /// cause (permission denied, say). Not corruption.
    #[error("cannot reach a segment of the queue: {0}")]
    Unreachable(String),
}
