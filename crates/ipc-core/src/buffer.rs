//! The shared-memory model: a named bounded buffer that producers and
//! consumers in any processes attach to.
//!
//! ```
//! use ipc_core::buffer::{BufferConfig, SharedBuffer};
//! # let name = format!("doc-buffer-{}", std::process::id());
//! let buf = SharedBuffer::create(&name, &BufferConfig { capacity: 4, max_message: 64, ..Default::default() })?;
//! let mut tx = buf.producer()?;
//! let mut rx = SharedBuffer::open(&name)?.consumer()?;
//! tx.send(b"hello")?;
//! assert_eq!(rx.recv()?, b"hello");
//! drop(tx); // the only producer leaves: end of stream once drained
//! assert_eq!(rx.recv(), Err(ipc_core::RecvError::Disconnected));
//! SharedBuffer::unlink(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

pub use crate::endpoint::{Receiver, Sender, SlotWriter};
use crate::error::{AttachError, CreateError, OpenError, SegmentError};
use crate::layout::{Flavor, Geometry, Kind};
use crate::queue::{Queue, Status, INIT_TIMEOUT};
use crate::segment::DEFAULT_MODE;
use std::time::Duration;

/// How to create a buffer.
///
/// For an unbounded buffer ([`SharedBuffer::create_unbounded`]),
/// `capacity` is the number of messages per chained segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// Most messages queued at once (1 to 2^20).
    pub capacity: u32,
    /// Largest message, bytes (1 to 64 MiB).
    pub max_message: u32,
    /// Permission bits of the segment (default 0600, owner only).
    pub mode: u32,
    /// Bounded buffers (single mode or shared) pack messages in a ring of
    /// this many bytes, rounded down to a power of two; it must hold two of
    /// the largest messages plus 24 bytes. 0 (the default) picks room for
    /// `capacity` largest messages wherever the ring's wrap falls, up to
    /// 4 MiB. Unbounded buffers chain blocks of `capacity` slots of
    /// `max_message` bytes and ignore it.
    pub budget: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            capacity: 64,
            max_message: 4096,
            mode: DEFAULT_MODE,
            budget: 0,
        }
    }
}

/// A handle to a mapped buffer segment. Cheap to clone; hands out
/// [`Producer`]s and [`Consumer`]s.
#[derive(Debug, Clone)]
pub struct SharedBuffer {
    q: Arc<Queue>,
}

impl SharedBuffer {
    /// Creates a new bounded buffer segment (fails if the name exists):
    /// producers wait while `capacity` messages are queued.
    pub fn create(name: &str, config: &BufferConfig) -> Result<SharedBuffer, CreateError> {
        Self::create_flavor(name, config, Flavor::Bounded, false)
    }

    /// Creates a bounded buffer for one producer and one consumer at a
    /// time (a second one of either is refused with `RoleTaken` while the
    /// first lives): the fastest path, without compare-and-swaps, its
    /// messages packed in a ring of `config.budget` bytes (each takes its
    /// length rounded up to 8, plus 8). At most `capacity` messages wait,
    /// and fewer if their bytes fill the ring first. A replacement may
    /// attach once the first has gone or died.
    ///
    /// ```
    /// use ipc_core::buffer::{BufferConfig, SharedBuffer};
    /// # let name = format!("doc-single-{}", std::process::id());
    /// let buf = SharedBuffer::create_single(&name, &BufferConfig::default())?;
    /// let mut tx = buf.producer()?;
    /// assert!(buf.producer().is_err()); // one at a time
    /// tx.send(b"fast")?;
    /// assert_eq!(buf.consumer()?.recv()?, b"fast");
    /// # SharedBuffer::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_single(name: &str, config: &BufferConfig) -> Result<SharedBuffer, CreateError> {
        Self::create_flavor(name, config, Flavor::Bounded, true)
    }

    /// Creates a new unbounded buffer: producers never wait. Storage grows
    /// by chaining segments of `config.capacity` messages (`NAME.b1`,
    /// `NAME.b2`, ...) created on demand and unlinked once drained.
    ///
    /// ```
    /// use ipc_core::buffer::{BufferConfig, SharedBuffer};
    /// # let name = format!("doc-unbounded-{}", std::process::id());
    /// let cfg = BufferConfig { capacity: 4, max_message: 16, ..Default::default() };
    /// let buf = SharedBuffer::create_unbounded(&name, &cfg)?;
    /// let mut tx = buf.producer()?;
    /// for i in 0..10u8 {
    ///     tx.try_send([i])?; // never full
    /// }
    /// let mut rx = buf.consumer()?;
    /// drop(tx);
    /// assert_eq!(rx.by_ref().count(), 10);
    /// SharedBuffer::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_unbounded(
        name: &str,
        config: &BufferConfig,
    ) -> Result<SharedBuffer, CreateError> {
        Self::create_flavor(name, config, Flavor::Unbounded, false)
    }

    fn create_flavor(
        name: &str,
        config: &BufferConfig,
        flavor: Flavor,
        single: bool,
    ) -> Result<SharedBuffer, CreateError> {
        // An unbounded queue's blocks take the default size (`budget` is
        // for bounded queues, as documented).
        let budget = if flavor == Flavor::Unbounded {
            0
        } else {
            config.budget
        };
        let geo = Geometry::packed(Kind::Buffer, config.capacity, config.max_message, budget)
            .map_err(CreateError::InvalidConfig)?;
        Ok(SharedBuffer {
            q: Arc::new(Queue::create(
                name,
                geo,
                config.mode,
                flavor,
                0,
                single,
                None,
            )?),
        })
    }

    /// Opens an existing buffer, validating its header.
    pub fn open(name: &str) -> Result<SharedBuffer, OpenError> {
        Self::open_timeout(name, INIT_TIMEOUT)
    }

    /// Opens an existing buffer, waiting up to `timeout` for its creator to
    /// finish initializing it.
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<SharedBuffer, OpenError> {
        Ok(SharedBuffer {
            q: Arc::new(Queue::open(name, Some(Kind::Buffer), timeout)?),
        })
    }

    /// Removes the segment's name (and the names of an unbounded buffer's
    /// chained blocks); attached processes keep working.
    pub fn unlink(name: &str) -> Result<(), SegmentError> {
        crate::admin::unlink_with_chain(name)
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.q.name()
    }

    /// The validated geometry.
    pub fn geometry(&self) -> Geometry {
        *self.q.geometry()
    }

    /// True for a buffer made by [`SharedBuffer::create_single`].
    pub fn is_single(&self) -> bool {
        self.q.is_single()
    }

    /// True for an unbounded buffer.
    pub fn is_unbounded(&self) -> bool {
        self.q.flavor() == Flavor::Unbounded
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.q.queued() as usize
    }

    /// True if no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Geometry, fill level, attached processes and their liveness, counters.
    /// Reaps dead peers first.
    pub fn status(&self) -> Status {
        self.q.status()
    }

    /// Attaches a producer. A producer's sends fail with `Disconnected`
    /// only when they would have to wait and every consumer has gone, so
    /// a replacement consumer can pick up what was written meanwhile. An
    /// unbounded buffer's producer never waits, so it fails as soon as
    /// every consumer that attached has gone (rather than grow for nobody).
    pub fn producer(&self) -> Result<Producer, AttachError> {
        Sender::attach(self.q.clone(), false)
    }

    /// Attaches a consumer.
    pub fn consumer(&self) -> Result<Consumer, AttachError> {
        Receiver::attach(self.q.clone())
    }
}

/// The writing end of a buffer: a [`Sender`] attached as a producer.
/// Detaches on drop; once every producer has detached and the buffer is
/// drained, consumers see end of stream.
pub type Producer = Sender;

/// The reading end of a buffer: a [`Receiver`] attached as a consumer.
/// Each message goes to exactly one consumer.
pub type Consumer = Receiver;
