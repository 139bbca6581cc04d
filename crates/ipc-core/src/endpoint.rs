//! The endpoints shared by both models: [`Sender`] and [`Receiver`], with
//! blocking, non-blocking and timed operations, zero-copy claims and
//! in-place reads, and plain-old-data conveniences. A buffer's producer and
//! consumer are the same types (`buffer::Producer`, `buffer::Consumer`).

use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use crate::channel::{stop_to_send, Claimed, Rx, Tx};
use crate::error::{AttachError, BatchSendError, RecvError, SendError};
use crate::layout::Flavor;
use crate::peers::Role;
use crate::queue::{Endpoint, Queue};
use crate::sync::{Deadline, SpinPolicy};

fn queued(q: &Queue) -> usize {
    match q.flavor() {
        Flavor::Zero => 0,
        _ => q.queued() as usize,
    }
}

fn capacity(q: &Queue) -> Option<usize> {
    match q.flavor() {
        Flavor::Zero => Some(0),
        Flavor::Bounded => Some(q.geometry().capacity as usize),
        Flavor::Unbounded => None,
    }
}

fn is_full(q: &Queue) -> bool {
    match q.flavor() {
        Flavor::Zero => true,
        Flavor::Bounded => {
            q.queued() >= q.geometry().capacity as u64 || q.ring().is_full_by_bytes()
        }
        Flavor::Unbounded => false,
    }
}

/// The sending end of a buffer or mailbox. Detaches on drop; once every
/// sender has detached and the queue is drained, receivers see
/// `Disconnected` (end of stream).
#[derive(Debug)]
pub struct Sender {
    tx: Tx,
}

/// A slot claimed for writing in place (zero copy). Commit it with
/// [`SlotWriter::commit`]; dropping it unused leaves a skipped slot.
#[derive(Debug)]
pub struct SlotWriter<'a> {
    tx: &'a mut Tx,
    claimed: Option<Claimed>,
    /// In a child forked while the claim was held: private bytes handed
    /// out instead of the parent's (its commit then fails `Inherited`).
    scratch: Vec<u8>,
}

impl SlotWriter<'_> {
    /// The claim's payload area: as long as the claim asked for
    /// (`max_message` bytes from [`Sender::claim`]).
    pub fn buf(&mut self) -> &mut [u8] {
        let shared = self
            .claimed
            .as_mut()
            .expect("claim held until commit")
            .buf(&self.tx.ep.q);
        if self.tx.ep.inherited() {
            let len = shared.len();
            self.scratch.resize(len, 0);
            return &mut self.scratch;
        }
        shared
    }

    /// Publishes the first `len` bytes of [`SlotWriter::buf`] as a message.
    /// Only a rendezvous queue can fail here: with `Disconnected` when
    /// every receiver left before taking it (the message is withdrawn). On
    /// a rendezvous queue this waits, without a deadline, until a receiver
    /// has taken the message; use `send_until` for a bounded wait.
    ///
    /// # Panics
    /// If `len` exceeds the claim's length.
    pub fn commit(mut self, len: usize) -> Result<(), SendError<()>> {
        let mut claimed = self.claimed.take().expect("claim held until commit");
        let max = claimed.buf(&self.tx.ep.q).len();
        if len > max {
            self.tx.abandon(claimed);
            panic!("message of {len} bytes exceeds the claim of {max}");
        }
        self.tx
            .commit(claimed, len, Deadline::Never)
            .map_err(|stop| stop_to_send(stop, Deadline::Never, ()))
    }
}

impl Drop for SlotWriter<'_> {
    fn drop(&mut self) {
        if let Some(claimed) = self.claimed.take() {
            self.tx.abandon(claimed);
        }
    }
}

impl Sender {
    pub(crate) fn attach(q: Arc<Queue>, strict_disconnect: bool) -> Result<Sender, AttachError> {
        let ep = Endpoint::attach(q, Role::Producer)?;
        Ok(Sender {
            tx: Tx::new(ep, strict_disconnect),
        })
    }

    /// Sends a plain-old-data value as its bytes.
    pub fn send_pod<T: Pod>(&mut self, value: T) -> Result<(), SendError<T>> {
        self.send(bytemuck::bytes_of(&value))
            .map_err(|e| e.map(|_| value))
    }

    /// Messages queued now (always 0 for a rendezvous queue).
    pub fn len(&self) -> usize {
        queued(&self.tx.ep.q)
    }

    /// True if no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if a send would wait now (always for a rendezvous queue, never
    /// for an unbounded one). On a single-mode buffer, whose bytes may
    /// fill before its count: true if a message of the largest size would.
    pub fn is_full(&self) -> bool {
        is_full(&self.tx.ep.q)
    }

    /// Most messages queued at once: `Some(0)` for a rendezvous queue,
    /// `None` for an unbounded one.
    pub fn capacity(&self) -> Option<usize> {
        capacity(&self.tx.ep.q)
    }

    /// Sends `msg`, waiting while the queue is full (for a rendezvous
    /// queue: until a receiver has taken it). `Disconnected` when every
    /// receiver has gone (for a buffer's producer: only if it would wait),
    /// `TooLarge` if `msg` exceeds the maximum size.
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
        self.tx.send(msg, deadline)
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
    /// slot.commit(3)?;
    /// let mut rx = buf.consumer()?;
    /// assert_eq!(rx.recv_with(|bytes| bytes.len())?, 3);
    /// # SharedBuffer::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(&mut self, deadline: Deadline) -> Result<SlotWriter<'_>, SendError<()>> {
        let max = self.tx.max_message();
        self.claim_len(max, deadline)
    }

    /// As [`Sender::claim`], for a message of at most `len` bytes: the
    /// buffer is `len` long. On a single-mode buffer, whose records take
    /// only the bytes they use, this needs room for `len` bytes rather
    /// than for the largest message; commit may still shrink it.
    ///
    /// Fails with `TooLarge` if `len` exceeds the maximum message size.
    pub fn claim_len(
        &mut self,
        len: usize,
        deadline: Deadline,
    ) -> Result<SlotWriter<'_>, SendError<()>> {
        let max = self.tx.max_message();
        if len > max {
            return Err(SendError::TooLarge { msg: (), len, max });
        }
        match self.tx.claim(len, deadline) {
            Ok(claimed) => Ok(SlotWriter {
                tx: &mut self.tx,
                claimed: Some(claimed),
                scratch: Vec::new(),
            }),
            Err(stop) => Err(stop_to_send(stop, deadline, ())),
        }
    }

    /// Sends every message of `msgs`, in order, waiting for room as
    /// `send` does, and wakes receivers once at the end (and whenever it
    /// must wait) instead of once per message. Returns how many were
    /// sent; on failure, how many went before, and the error with the
    /// message that failed (the rest of `msgs` is not consumed further).
    /// `msgs` is advanced lazily: each message is published (a receiver
    /// can take it, and it stays if this process dies) before the next is
    /// asked for, so an iterator can record what went in as it goes.
    ///
    /// ```
    /// use ipc_core::{BufferConfig, SharedBuffer};
    /// # let name = format!("doc-batch-{}", std::process::id());
    /// let buf = SharedBuffer::create_single(&name, &BufferConfig::default())?;
    /// let mut tx = buf.producer()?;
    /// assert_eq!(tx.send_batch([&b"a"[..], b"bc", b"def"])?, 3);
    /// let mut rx = buf.consumer()?;
    /// let mut lens = Vec::new();
    /// assert_eq!(rx.recv_batch(16, |m| lens.push(m.len()))?, 3);
    /// assert_eq!(lens, [1, 2, 3]);
    /// # SharedBuffer::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_batch<M: AsRef<[u8]>>(
        &mut self,
        msgs: impl IntoIterator<Item = M>,
    ) -> Result<usize, BatchSendError<M>> {
        self.send_batch_until(msgs, Deadline::Never)
    }

    /// [`Sender::send_batch`], waiting for room only until `deadline`
    /// (`Deadline::Now`: what fits now; the first message that does not
    /// fails with `Full`).
    pub fn send_batch_until<M: AsRef<[u8]>>(
        &mut self,
        msgs: impl IntoIterator<Item = M>,
        deadline: Deadline,
    ) -> Result<usize, BatchSendError<M>> {
        self.tx
            .send_batch(msgs, deadline)
            .map_err(|(sent, error)| BatchSendError { sent, error })
    }

    /// [`Sender::send_batch_until`] of `(tag, message)` pairs: each
    /// message's tag (non-zero; 0 sends it untagged) is stored with its
    /// commit, in one step with it, as the queue's last tag, which
    /// [`Sender::last_tag`] reads. For a sender that keeps its own record
    /// of what it sent and may be killed between a send and that record,
    /// as `ipc-bridge`'s delivering side is: after a restart, the last tag
    /// says whether the message it was sending went in (repairing a
    /// writer killed in its commit moves the tag exactly when it keeps the
    /// message). One tag per queue: meant for a queue's only tagging
    /// sender (not enforced: another's tags would overwrite it; an
    /// exported mailbox's is ipc-bridge's). Make tags hard to guess (keyed
    /// by a secret) if others choose what you tag. On a rendezvous queue
    /// each message waits for its receiver, and an offer withdrawn (timed
    /// out, or disconnected) takes its tag with it: the last tag is that
    /// of the last tagged offer if a receiver took it, and 0 once it was
    /// withdrawn. On an unbounded queue the last tag is kept in its main
    /// segment, whichever block the message went into, and a tagged
    /// commit a sender was killed in is settled (as by
    /// [`Sender::last_tag`]) before the next tagged message goes: until
    /// `deadline`, while the dead sender is not yet repaired (`Full` for
    /// `Deadline::Now`).
    pub fn send_tagged_batch_until<M: AsRef<[u8]>>(
        &mut self,
        msgs: impl IntoIterator<Item = (u64, M)>,
        deadline: Deadline,
    ) -> Result<usize, BatchSendError<M>> {
        self.tx
            .send_tagged_batch(msgs, deadline)
            .map_err(|(sent, error)| BatchSendError { sent, error })
    }

    /// The tag of the last tagged message committed to this queue (0:
    /// none; see [`Sender::send_tagged_batch_until`]), once no sender's
    /// claim is under way: waits for the write lock until `deadline`,
    /// settling the claim of a sender killed in its commit (found dead
    /// within the liveness period). On a rendezvous queue: of the last
    /// tagged offer if a receiver took it (0 if it was withdrawn); a
    /// tagged offer still waiting for a receiver whose sender is no
    /// longer attached (this sender's killed predecessor, once reaped) is
    /// withdrawn now (it did not go in, and now will not), and a
    /// withdrawal killed half way is finished first. `Timeout` if a live
    /// sender kept its claim or its waiting offer (or a receiver the
    /// readers' lock) all that time. On an unbounded queue, a tagged
    /// commit its sender was killed in is settled from the marks of its
    /// block (which keeps its name until then).
    pub fn last_tag(&mut self, deadline: Deadline) -> Result<u64, SendError<()>> {
        self.tx
            .last_tag(deadline)
            .map_err(|stop| stop_to_send(stop, deadline, ()))
    }

    /// How the sender waits: spin, yield, then sleep.
    pub fn set_spin_policy(&mut self, policy: SpinPolicy) {
        self.tx.ep.policy = policy;
    }

    /// Behave like the writer of a named pipe on a reused segment: from
    /// now on, `send` fails with `Disconnected` only once a receiver that
    /// is attached now, or attaches later, has gone; a sender that comes
    /// after every receiver left waits (bounded: unbounded queues just
    /// queue) for a new one instead of failing. The default counts every
    /// receiver that ever attached.
    pub fn expect_new_receivers(&mut self) {
        self.tx.ep.expect_new_peers();
    }

    pub(crate) fn tx_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// Largest message accepted.
    pub fn max_message(&self) -> usize {
        self.tx.max_message()
    }
}

/// The receiving end of a buffer or mailbox. Each message goes to exactly
/// one receiver.
#[derive(Debug)]
pub struct Receiver {
    rx: Rx,
}

impl Receiver {
    pub(crate) fn attach(q: Arc<Queue>) -> Result<Receiver, AttachError> {
        let ep = Endpoint::attach(q, Role::Consumer)?;
        Ok(Receiver { rx: Rx::new(ep) })
    }

    /// Receives a plain-old-data value; `WrongSize` (message dropped) if
    /// the message is not exactly `size_of::<T>()` bytes.
    pub fn recv_pod<T: Pod>(&mut self) -> Result<T, RecvError> {
        self.recv_pod_until(Deadline::Never)
    }

    /// [`Receiver::recv_pod`] with a deadline.
    pub fn recv_pod_until<T: Pod>(&mut self, deadline: Deadline) -> Result<T, RecvError> {
        self.recv_with_until(deadline, |b| {
            bytemuck::try_pod_read_unaligned(b).map_err(|_| RecvError::WrongSize {
                expected: std::mem::size_of::<T>(),
                found: b.len(),
            })
        })?
    }

    /// A blocking iterator: yields messages until end of stream. Any other
    /// failure (a corrupt segment, say) is yielded as an error, once, and
    /// ends the iteration: it never passes for the end of the stream.
    pub fn iter(&mut self) -> impl Iterator<Item = Result<Vec<u8>, RecvError>> + '_ {
        let mut failed = false;
        std::iter::from_fn(move || next_of(&mut failed, self.recv()))
    }

    /// A non-blocking iterator: yields the messages queued now (ending at
    /// `Empty` or end of stream; other failures are yielded once).
    pub fn try_iter(&mut self) -> impl Iterator<Item = Result<Vec<u8>, RecvError>> + '_ {
        let mut failed = false;
        std::iter::from_fn(move || match self.try_recv() {
            Err(RecvError::Empty) => None,
            other => next_of(&mut failed, other),
        })
    }

    /// Messages queued now (always 0 for a rendezvous queue).
    pub fn len(&self) -> usize {
        queued(&self.rx.ep.q)
    }

    /// True if no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if a send would wait now.
    pub fn is_full(&self) -> bool {
        is_full(&self.rx.ep.q)
    }

    /// Most messages queued at once: `Some(0)` for a rendezvous queue,
    /// `None` for an unbounded one.
    pub fn capacity(&self) -> Option<usize> {
        capacity(&self.rx.ep.q)
    }

    /// Receives the next message, waiting while the queue is empty.
    /// `Disconnected` is end of stream: every sender has gone, drained.
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
    #[inline]
    pub fn recv_into(&mut self, buf: &mut [u8], deadline: Deadline) -> Result<usize, RecvError> {
        self.rx.recv_into(buf, deadline)
    }

    /// Waits for a message, then takes every message queued, up to `max`,
    /// handing each to `f` in place (zero copy) and waking senders once
    /// for the whole batch. Returns how many were taken (`max` 0: none,
    /// without waiting); `Disconnected` only at end of stream with nothing
    /// taken. An error after some messages went to `f` is returned (`f`
    /// has seen those). If `f` panics, the message it held counts as lost
    /// (as in `recv_with`).
    pub fn recv_batch(&mut self, max: usize, f: impl FnMut(&[u8])) -> Result<usize, RecvError> {
        self.recv_batch_until(Deadline::Never, max, f)
    }

    /// [`Receiver::recv_batch`] of what is queued now: `Empty` if nothing.
    pub fn try_recv_batch(&mut self, max: usize, f: impl FnMut(&[u8])) -> Result<usize, RecvError> {
        self.recv_batch_until(Deadline::Now, max, f)
    }

    /// [`Receiver::recv_batch`], waiting for the first message only until
    /// `deadline`.
    pub fn recv_batch_until(
        &mut self,
        deadline: Deadline,
        max: usize,
        f: impl FnMut(&[u8]),
    ) -> Result<usize, RecvError> {
        self.rx.recv_batch(deadline, max, f)
    }

    /// [`Receiver::recv_batch_until`], telling `f` each message's index as
    /// well: how many messages the queue released before it. A message
    /// redelivered after its reader died (see
    /// [`Receiver::redeliver_if_killed`]) comes again with the same index,
    /// so a receiver that records the index of what it took knows a
    /// repeat. On an unbounded queue the index is its block's place in the
    /// chain (low 24 bits of it, in the high 24) and the message's index
    /// within the block (low 40): not a count, and unique only until the
    /// chain has passed 2^24 blocks (it wraps then), enough to tell a
    /// message from the one before and after it.
    pub fn recv_batch_indexed_until(
        &mut self,
        deadline: Deadline,
        max: usize,
        mut f: impl FnMut(u64, &[u8]),
    ) -> Result<usize, RecvError> {
        let index = self.index_cell();
        self.rx.recv_batch(deadline, max, |msg| {
            f(index.load(std::sync::atomic::Ordering::Relaxed), msg)
        })
    }

    /// This receiver's identity in its queue's attachment table (entry and
    /// generation, unique for the queue's life as far as a successor needs
    /// it): what [`Mailbox::settle_redeliveries`](crate::mailbox::Mailbox::settle_redeliveries)
    /// waits for.
    pub fn attachment_id(&self) -> u64 {
        self.rx.ep.attachment.id()
    }

    /// From now on, if this process dies (is killed) while it holds a
    /// message (inside a receive's callback, before it returns), the
    /// message stays queued for the next receiver instead of being lost
    /// and counted in `lost_reads`: at least once instead of at most
    /// once. For a receiver that keeps its own record of what it took, and
    /// drops the repeat by the index that
    /// [`Receiver::recv_batch_indexed_until`] gives, as `ipc-bridge`'s
    /// journal does. A callback that dies on every message would then
    /// stop the queue: use it where deaths come from outside; a callback
    /// that panics still loses its message (counted). On a queue with
    /// other receivers, another may take the redelivered message that the
    /// dead one had already recorded: its successor then learns from
    /// [`Mailbox::settle_redeliveries`](crate::mailbox::Mailbox::settle_redeliveries)
    /// whether its last record's message was put back. On an
    /// unbounded queue such a receiver holds its block's turn while the
    /// callback runs (others would wait; without redelivery the head moves
    /// on first), so a callback must not receive from the same queue
    /// through another receiver: it would wait for itself. On a
    /// rendezvous queue the message a dead receiver held counts as taken:
    /// its sender goes on waiting for the next receiver to let go of it,
    /// but can no longer withdraw it, so its send returns `Ok` (never
    /// `Disconnected` or `Timeout` for a message that may have been used)
    /// at the latest at its deadline.
    pub fn redeliver_if_killed(&mut self) -> Result<(), RecvError> {
        self.rx.mode.redeliver = true;
        Ok(())
    }

    /// Receives the next message and hands it to `f` in place, in the
    /// shared slot (zero copy); the slot is released when `f` returns.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        self.recv_with_until(Deadline::Never, f)
    }

    /// [`Receiver::recv_with`] with a deadline.
    pub fn recv_with_until<R>(
        &mut self,
        deadline: Deadline,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, RecvError> {
        self.rx.recv_with(deadline, usize::MAX, f)
    }

    /// Like [`Receiver::recv_with_until`], but the message is taken only
    /// if `f` returns `Some`: on `None` it stays at the head of the queue,
    /// for the next receive (by this receiver or another), and a
    /// rendezvous sender goes on waiting (its timeout or a disconnection
    /// can still withdraw it), unless its deadline came while `f` held
    /// the message: its send has returned `Ok` then (a receiver had it),
    /// and the offer, no longer withdrawable, waits for the next
    /// receiver. For bounded and rendezvous mailboxes and buffers; an unbounded one frees its head before `f` runs (unless
    /// the receiver asked for redelivery), so it returns
    /// [`RecvError::Unsupported`] without receiving.
    pub fn recv_if_until<R>(
        &mut self,
        deadline: Deadline,
        f: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Result<Option<R>, RecvError> {
        if self.capacity().is_none() {
            return Err(RecvError::Unsupported(
                "an unbounded queue's receivers cannot leave a message at the head",
            ));
        }
        self.rx
            .recv_with_keep(deadline, usize::MAX, f, &|r: &Option<R>| r.is_none())
    }

    /// [`Receiver::recv_if_until`], telling `f` the message's index as
    /// well (see [`Receiver::recv_batch_indexed_until`]).
    pub fn recv_if_indexed_until<R>(
        &mut self,
        deadline: Deadline,
        f: impl FnOnce(u64, &[u8]) -> Option<R>,
    ) -> Result<Option<R>, RecvError> {
        let index = self.index_cell();
        self.recv_if_until(deadline, |msg| {
            f(index.load(std::sync::atomic::Ordering::Relaxed), msg)
        })
    }

    /// Where the index of each message claimed is told from now on.
    fn index_cell(&mut self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.rx.mode.index.get_or_insert_default().clone()
    }

    /// Reports end of stream only after at least `n` senders have attached
    /// (default 1): lets a receiver started first wait for a whole pipeline
    /// of senders.
    pub fn set_min_producers(&mut self, n: u32) {
        self.rx.min_producers = n.max(1);
    }

    /// How the receiver waits: spin, yield, then sleep.
    pub fn set_spin_policy(&mut self, policy: SpinPolicy) {
        self.rx.ep.policy = policy;
    }

    /// Behave like the reader of a named pipe on a reused segment: from
    /// now on, end of stream comes only once a sender that is attached
    /// now, or attaches later, has gone (or, if messages are queued now,
    /// once they are drained and no sender is attached). A receiver that
    /// comes after every sender left and finds nothing waits for a new
    /// sender instead of ending at once. The default counts every sender
    /// that ever attached.
    pub fn expect_new_senders(&mut self) {
        self.rx.ep.expect_new_peers();
    }

    /// Largest message the buffer carries.
    pub fn max_message(&self) -> usize {
        self.rx.ep.q.geometry().max_message as usize
    }

    /// The status of the buffer or mailbox this receiver reads (a slow
    /// call: it looks for dead peers first).
    pub fn status(&self) -> crate::Status {
        self.rx.ep.q.status()
    }

    /// How many streams had ended incomplete (a producer died) when this
    /// receiver attached: compare with [`crate::Status::incomplete_streams`]
    /// to learn of a death in any stream it read. Does not look for dead
    /// peers.
    pub fn incomplete_streams_at_attach(&self) -> u32 {
        self.rx.incomplete_at_attach
    }
}

/// One step of a receiving iterator: end at end of stream; yield any
/// other failure once, then end.
fn next_of(failed: &mut bool, r: Result<Vec<u8>, RecvError>) -> Option<Result<Vec<u8>, RecvError>> {
    match r {
        _ if *failed => None,
        Err(RecvError::Disconnected) => None,
        Err(e) => {
            *failed = true;
            Some(Err(e))
        }
        ok => Some(ok),
    }
}

impl Iterator for Receiver {
    type Item = Result<Vec<u8>, RecvError>;

    /// The next message; `None` at end of stream. Other failures come as
    /// `Some(Err(..))` (and repeat on the next call if they persist).
    fn next(&mut self) -> Option<Self::Item> {
        match self.recv() {
            Err(RecvError::Disconnected) => None,
            other => Some(other),
        }
    }
}
