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

use crate::channel::{stop_to_send, Claimed, Rx, Tx};
use crate::error::{AttachError, CreateError, OpenError, RecvError, SegmentError, SendError};
use crate::layout::{Flavor, Geometry, Kind};
use crate::peers::Role;
use crate::queue::{Endpoint, Queue, Status, INIT_TIMEOUT};
use crate::segment::DEFAULT_MODE;
use crate::sync::{Deadline, SpinPolicy};
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
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            capacity: 64,
            max_message: 4096,
            mode: DEFAULT_MODE,
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
        Self::create_flavor(name, config, Flavor::Bounded)
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
        Self::create_flavor(name, config, Flavor::Unbounded)
    }

    fn create_flavor(
        name: &str,
        config: &BufferConfig,
        flavor: Flavor,
    ) -> Result<SharedBuffer, CreateError> {
        let geo = Geometry::new(Kind::Buffer, config.capacity, config.max_message)
            .map_err(CreateError::InvalidConfig)?;
        Ok(SharedBuffer {
            q: Arc::new(Queue::create(name, geo, config.mode, flavor, 0)?),
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

    /// Attaches a producer.
    pub fn producer(&self) -> Result<Producer, AttachError> {
        let ep = Endpoint::attach(self.q.clone(), Role::Producer)?;
        Ok(Producer {
            tx: Tx::new(ep, false),
        })
    }

    /// Attaches a consumer.
    pub fn consumer(&self) -> Result<Consumer, AttachError> {
        let ep = Endpoint::attach(self.q.clone(), Role::Consumer)?;
        Ok(Consumer { rx: Rx::new(ep) })
    }
}

/// The writing end. Detaches on drop; once every producer has detached and
/// the buffer is drained, consumers see end of stream.
#[derive(Debug)]
pub struct Producer {
    tx: Tx,
}

/// A slot claimed for writing in place (zero copy). Commit it with
/// [`SlotWriter::commit`]; dropping it unused leaves a skipped slot.
#[derive(Debug)]
pub struct SlotWriter<'a> {
    tx: &'a mut Tx,
    claimed: Option<Claimed>,
}

impl SlotWriter<'_> {
    /// The slot's payload area, `max_message` bytes long.
    pub fn buf(&mut self) -> &mut [u8] {
        self.claimed
            .as_mut()
            .expect("claim held until commit")
            .buf()
    }

    /// Publishes the first `len` bytes of [`SlotWriter::buf`] as a message.
    ///
    /// # Panics
    /// If `len` exceeds the maximum message size.
    pub fn commit(mut self, len: usize) {
        let max = self.tx.max_message();
        assert!(
            len <= max,
            "message of {len} bytes exceeds the maximum {max}"
        );
        let claimed = self.claimed.take().expect("claim held until commit");
        // Bounded and unbounded flavors never fail at commit.
        let _ = self.tx.commit(claimed, len, 0, Deadline::Never);
    }
}

impl Drop for SlotWriter<'_> {
    fn drop(&mut self) {
        if let Some(claimed) = self.claimed.take() {
            self.tx.abandon(claimed);
        }
    }
}

impl Producer {
    /// Sends `msg`, waiting while the buffer is full.
    /// Fails with `Disconnected` if it would wait and every consumer that
    /// attached has gone, `TooLarge` if `msg` exceeds the maximum size.
    pub fn send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        self.send_until(msg, Deadline::Never)
    }

    /// Sends `msg` if there is room now; `Full` otherwise.
    pub fn try_send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        self.send_until(msg, Deadline::Now)
    }

    /// Sends `msg`, waiting at most `timeout` for room; `Timeout` otherwise.
    pub fn send_timeout<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        timeout: Duration,
    ) -> Result<(), SendError<M>> {
        self.send_until(msg, Deadline::after(timeout))
    }

    /// Sends `msg` before `deadline`.
    pub fn send_until<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        deadline: Deadline,
    ) -> Result<(), SendError<M>> {
        self.tx.send(msg, deadline, 0)
    }

    /// Claims a slot to build a message in place, waiting for room until
    /// `deadline`. The error carries no message (`()`).
    ///
    /// ```
    /// # use ipc_core::buffer::{BufferConfig, SharedBuffer};
    /// # use ipc_core::sync::Deadline;
    /// # let name = format!("doc-claim-{}", std::process::id());
    /// # let buf = SharedBuffer::create(&name, &BufferConfig::default())?;
    /// let mut tx = buf.producer()?;
    /// let mut slot = tx.claim(Deadline::Never)?;
    /// slot.buf()[..3].copy_from_slice(b"abc");
    /// slot.commit(3);
    /// let mut rx = buf.consumer()?;
    /// assert_eq!(rx.recv_with(|bytes| bytes.len())?, 3);
    /// # SharedBuffer::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(&mut self, deadline: Deadline) -> Result<SlotWriter<'_>, SendError<()>> {
        match self.tx.claim(deadline) {
            Ok(claimed) => Ok(SlotWriter {
                tx: &mut self.tx,
                claimed: Some(claimed),
            }),
            Err(stop) => Err(stop_to_send(stop, deadline, ())),
        }
    }

    /// How the producer waits: spin, yield, then sleep.
    pub fn set_spin_policy(&mut self, policy: SpinPolicy) {
        self.tx.ep.policy = policy;
    }

    /// Largest message accepted.
    pub fn max_message(&self) -> usize {
        self.tx.max_message()
    }
}

/// The reading end. Each message goes to exactly one consumer.
#[derive(Debug)]
pub struct Consumer {
    rx: Rx,
}

impl Consumer {
    /// Receives the next message, waiting while the buffer is empty.
    /// `Disconnected` is end of stream: every producer has gone, drained.
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_until(Deadline::Never)
    }

    /// Receives a message if one is queued now; `Empty` otherwise.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_until(Deadline::Now)
    }

    /// Receives, waiting at most `timeout`; `Timeout` otherwise.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_until(Deadline::after(timeout))
    }

    /// Receives before `deadline`.
    pub fn recv_until(&mut self, deadline: Deadline) -> Result<Vec<u8>, RecvError> {
        self.recv_with_until(deadline, |b| b.to_vec())
    }

    /// Receives into `buf` without allocating; returns the length.
    /// `BufferTooSmall` leaves the message queued.
    pub fn recv_into(&mut self, buf: &mut [u8], deadline: Deadline) -> Result<usize, RecvError> {
        let max_len = buf.len();
        self.rx.recv_with(deadline, max_len, |bytes, _| {
            buf[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        })
    }

    /// Receives the next message and hands it to `f` in place, in the
    /// shared slot (zero copy); the slot is released when `f` returns.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        self.recv_with_until(Deadline::Never, f)
    }

    /// [`Consumer::recv_with`] with a deadline.
    pub fn recv_with_until<R>(
        &mut self,
        deadline: Deadline,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, RecvError> {
        self.rx.recv_with(deadline, usize::MAX, |b, _| f(b))
    }

    /// Reports end of stream only after at least `n` producers have
    /// attached (default 1): lets a consumer started first wait for a whole
    /// pipeline of producers.
    pub fn set_min_producers(&mut self, n: u32) {
        self.rx.min_producers = n.max(1);
    }

    /// How the consumer waits: spin, yield, then sleep.
    pub fn set_spin_policy(&mut self, policy: SpinPolicy) {
        self.rx.ep.policy = policy;
    }

    /// Largest message the buffer carries.
    pub fn max_message(&self) -> usize {
        self.rx.ep.q.geometry().max_message as usize
    }
}

impl Iterator for Consumer {
    type Item = Vec<u8>;

    /// The next message; `None` at end of stream (or on corruption).
    fn next(&mut self) -> Option<Vec<u8>> {
        self.recv().ok()
    }
}
