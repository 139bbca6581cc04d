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
use std::time::Duration;

use crate::error::{AttachError, CreateError, OpenError, RecvError, SegmentError, SendError};
use crate::layout::{Geometry, Kind};
use crate::peers::Role;
use crate::queue::{ClaimFail, Endpoint, Queue, Status, Stop, INIT_TIMEOUT};
use crate::ring::WriteClaim;
use crate::segment::{Segment, DEFAULT_MODE};
use crate::sync::{Deadline, SpinPolicy};

/// How to create a buffer.
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
    /// Creates a new buffer segment (fails if the name exists).
    pub fn create(name: &str, config: &BufferConfig) -> Result<SharedBuffer, CreateError> {
        let geo = Geometry::new(Kind::Buffer, config.capacity, config.max_message)
            .map_err(CreateError::InvalidConfig)?;
        Ok(SharedBuffer {
            q: Arc::new(Queue::create(name, geo, config.mode, 0, 0)?),
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

    /// Removes the segment's name; attached processes keep working.
    pub fn unlink(name: &str) -> Result<(), SegmentError> {
        Segment::unlink(name)
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.q.name()
    }

    /// The validated geometry.
    pub fn geometry(&self) -> Geometry {
        *self.q.geometry()
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.q.ring().len() as usize
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
        Ok(Producer {
            ep: Endpoint::attach(self.q.clone(), Role::Producer)?,
        })
    }

    /// Attaches a consumer.
    pub fn consumer(&self) -> Result<Consumer, AttachError> {
        Ok(Consumer {
            ep: Endpoint::attach(self.q.clone(), Role::Consumer)?,
            min_producers: 1,
        })
    }
}

/// The writing end. Detaches on drop; once every producer has detached and
/// the buffer is drained, consumers see end of stream.
#[derive(Debug)]
pub struct Producer {
    ep: Endpoint,
}

/// A slot claimed for writing in place (zero copy). Commit it with
/// [`SlotWriter::commit`]; dropping it unused leaves a skipped slot.
#[derive(Debug)]
pub struct SlotWriter<'a> {
    producer: &'a mut Producer,
    claim: Option<WriteClaim>,
}

impl SlotWriter<'_> {
    /// The slot's payload area, `max_message` bytes long.
    pub fn buf(&mut self) -> &mut [u8] {
        let claim = self.claim.as_mut().expect("claim held until commit");
        self.producer.ep.q.ring().payload_mut(claim)
    }

    /// Publishes the first `len` bytes of [`SlotWriter::buf`] as a message.
    ///
    /// # Panics
    /// If `len` exceeds the maximum message size.
    pub fn commit(mut self, len: usize) {
        let max = self.producer.ep.q.geometry().max_message as usize;
        assert!(
            len <= max,
            "message of {len} bytes exceeds the maximum {max}"
        );
        let claim = self.claim.take().expect("claim held until commit");
        let ring = self.producer.ep.q.ring();
        self.producer.ep.commit(&ring, claim, len, 0);
    }
}

impl Drop for SlotWriter<'_> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.producer.ep.q.ring().abandon(claim);
            self.producer.ep.q.header().data_ready.notify();
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
        let bytes = msg.as_ref();
        let max = self.ep.q.geometry().max_message as usize;
        if bytes.len() > max {
            let len = bytes.len();
            return Err(SendError::TooLarge { msg, len, max });
        }
        let q = self.ep.q.clone();
        let ring = q.ring();
        match self.ep.claim(&ring, deadline) {
            Ok(mut claim) => {
                ring.payload_mut(&mut claim)[..bytes.len()].copy_from_slice(bytes);
                self.ep.commit(&ring, claim, bytes.len(), 0);
                Ok(())
            }
            Err(stop) => Err(send_error(stop, deadline, msg)),
        }
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
        let q = self.ep.q.clone();
        let ring = q.ring();
        match self.ep.claim(&ring, deadline) {
            Ok(claim) => Ok(SlotWriter {
                producer: self,
                claim: Some(claim),
            }),
            Err(stop) => Err(send_error(stop, deadline, ())),
        }
    }

    /// How the producer waits: spin, yield, then sleep.
    pub fn set_spin_policy(&mut self, policy: SpinPolicy) {
        self.ep.policy = policy;
    }

    /// Largest message accepted.
    pub fn max_message(&self) -> usize {
        self.ep.q.geometry().max_message as usize
    }
}

fn send_error<M>(stop: Stop<ClaimFail>, deadline: Deadline, msg: M) -> SendError<M> {
    match stop {
        Stop::Timeout if deadline == Deadline::Now => SendError::Full(msg),
        Stop::Timeout => SendError::Timeout(msg),
        Stop::Fail(ClaimFail::Disconnected) => SendError::Disconnected(msg),
        Stop::Fail(ClaimFail::Corrupt(e)) => SendError::Corrupt(msg, e),
    }
}

/// The reading end. Each message goes to exactly one consumer.
#[derive(Debug)]
pub struct Consumer {
    ep: Endpoint,
    min_producers: u32,
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
        let ring = self.ep.q.ring();
        self.ep.recv_with(
            &ring,
            deadline,
            buf.len(),
            self.min_producers,
            |bytes, _| {
                buf[..bytes.len()].copy_from_slice(bytes);
                bytes.len()
            },
        )
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
        let ring = self.ep.q.ring();
        self.ep
            .recv_with(&ring, deadline, usize::MAX, self.min_producers, |b, _| f(b))
    }

    /// Reports end of stream only after at least `n` producers have
    /// attached (default 1): lets a consumer started first wait for a whole
    /// pipeline of producers.
    pub fn set_min_producers(&mut self, n: u32) {
        self.min_producers = n.max(1);
    }

    /// How the consumer waits: spin, yield, then sleep.
    pub fn set_spin_policy(&mut self, policy: SpinPolicy) {
        self.ep.policy = policy;
    }

    /// Largest message the buffer carries.
    pub fn max_message(&self) -> usize {
        self.ep.q.geometry().max_message as usize
    }
}

impl Iterator for Consumer {
    type Item = Vec<u8>;

    /// The next message; `None` at end of stream (or on corruption).
    fn next(&mut self) -> Option<Vec<u8>> {
        self.recv().ok()
    }
}
