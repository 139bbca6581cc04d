//! One sending and one receiving end over the three capacity flavors, in
//! the manner of crossbeam-channel: the same methods whatever the flavor.
//!
//! * **Bounded**: the ring of the segment; senders wait while it is full.
//! * **Zero** (rendezvous): the sender puts its message in a slot of its
//!   own and waits until a receiver has taken it out; on timeout or
//!   disconnection it retracts the message if no receiver claimed it yet.
//! * **Unbounded**: a chain of write-once blocks. Block 0 is the segment
//!   itself; block `k` is the segment `NAME.b<k>`. A sender that finds its
//!   block sealed creates (or opens) the next one and moves the shared
//!   tail-block index on; receivers that drain a sealed block move the
//!   head-block index on, and the one that moves it gives the block back.
//!
//! **Recycling.** Making a block (shm_open, ftruncate, fallocate, mmap,
//! then a page fault per page in each process) costs far more than the
//! messages it carries, so a drained block is kept, up to a few, as a
//! *spare* (`NAME.b00`, `NAME.b01`, ...: renamed there, atomically, by the
//! receiver that moved the head past it) and a sender that needs block
//! `k+1` first renames a spare to `NAME.b<k+1>`. Nothing is rewritten: a
//! block's ring simply goes on to its next lap. Its header's identity
//! word says which index it serves and in which lap; lap `L` owns ring
//! positions `L·slots .. (L+1)·slots`, and each process's view of a block
//! is bounded to the lap it opened it in. So a process that slept through
//! a block's whole life, holding a view of an earlier lap, finds that view
//! sealed and drained: it can neither write into nor read from the new
//! lap, and goes to look at the chain again. The first opener of a renamed
//! spare moves its identity on (a compare-and-swap to the index its name
//! says, one lap on); whoever does it computes the same word, so a sender
//! killed between the rename and that step leaves nothing to repair. Each
//! process keeps its mappings of blocks (keyed by inode), so a recycled
//! block costs no new mapping and no page faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{CorruptError, CreateError, OpenError, RecvError, SegmentError, SendError};
use crate::layout::Flavor;
use crate::peers::Role;
use crate::queue::{chain_message_index, BlockView, Endpoint, Queue, Step, Stop, LIVENESS_PERIOD};
use crate::ring::{HeadCache, ReadAttempt, ReadClaim, Ring, Side, WriteAttempt, WriteClaim};
use crate::segment::Segment;
use crate::sync::Deadline;

/// How long a rendezvous `try_send` waits for the receiver it saw waiting.
const RENDEZVOUS_GRACE: Duration = Duration::from_millis(50);

/// How long a `try_recv` that finds the message at the head being written
/// waits for its writer to commit (crossbeam waits without bound; our
/// writer may be frozen, or dead until reaped).
const WRITE_GRACE: Duration = Duration::from_millis(100);

/// A rendezvous sender withdrawing its message waits for the receivers'
/// lock: yielding this many times, then napping.
const RETRACT_YIELDS: u32 = 64;
const RETRACT_NAP: Duration = Duration::from_micros(200);

/// How long a sender of an unbounded queue waits for another sender's turn
/// in the tail block before it starts the next block instead: far longer
/// than a turn (one copy) lasts, so that only a sender frozen or
/// descheduled in its turn is passed by.
const BYPASS_GRACE: Duration = Duration::from_millis(2);

/// Polls of a ring's head by a receive into a buffer that found it empty,
/// before it takes the general path (which spins, then sleeps, as its
/// policy says): a pause each, about a microsecond in all here.
const FAST_POLLS: u32 = 32;

/// How often a slow process may find the chain moved under it before the
/// chain is called corrupt.
const CHASE_LIMIT: u32 = 1000;

/// A block of an unbounded chain, mapped in this process: the chain index
/// it was opened as and the view of the lap it serves that index in.
#[derive(Debug, Clone)]
struct Block {
    index: u64,
    view: BlockView,
}

impl Block {
    /// Block 0: the main segment itself (never recycled).
    fn main(main: &Arc<Queue>) -> Block {
        Block {
            index: 0,
            view: BlockView {
                q: main.clone(),
                end: main.geometry().lap_span(),
            },
        }
    }

    fn q(&self) -> &Arc<Queue> {
        &self.view.q
    }

    fn ring(&self) -> Ring<'_> {
        self.view.ring()
    }
}

/// Why a write claim failed.
pub(crate) enum ClaimFail {
    Disconnected,
    NoSpace(String),
    Corrupt(CorruptError),
    Inherited,
    Unreachable(String),
}

impl ClaimFail {
    fn into_send_error<M>(self, msg: M) -> SendError<M> {
        match self {
            ClaimFail::Disconnected => SendError::Disconnected(msg),
            ClaimFail::NoSpace(why) => SendError::NoSpace(msg, why),
            ClaimFail::Corrupt(e) => SendError::Corrupt(msg, e),
            ClaimFail::Inherited => SendError::Inherited(msg),
            ClaimFail::Unreachable(why) => SendError::Unreachable(msg, why),
        }
    }
}

pub(crate) fn stop_to_send<M>(stop: Stop<ClaimFail>, deadline: Deadline, msg: M) -> SendError<M> {
    match stop {
        Stop::Timeout if deadline == Deadline::Now => SendError::Full(msg),
        Stop::Timeout => SendError::Timeout(msg),
        Stop::Fail(f) => f.into_send_error(msg),
    }
}

/// A slot claimed for writing: in the sender's own segment, or in a block
/// of an unbounded chain (kept mapped while the claim lives).
#[derive(Debug)]
pub(crate) struct Claimed {
    /// In an unbounded chain: the block the claim is in.
    block: Option<Block>,
    /// Borrows the memory of `block`, or of the sender's own queue, both
    /// of which outlive it (see `Claimed::new`).
    claim: WriteClaim<'static>,
}

impl Claimed {
    /// # Safety
    /// `claim` must be a claim on `block`'s ring, or (`None`) on the ring of
    /// the queue of the sender that keeps this `Claimed`: that queue lives
    /// as long as the sender, which outlives the claim (a `SlotWriter`
    /// borrows it).
    unsafe fn new(block: Option<Block>, claim: WriteClaim<'_>) -> Claimed {
        Claimed {
            block,
            // SAFETY: the caller keeps the claim's memory alive (above).
            claim: unsafe { claim.extend() },
        }
    }

    /// The segment the claim is in; `main` is the sender's own.
    fn segment<'a>(block: &'a Option<Block>, main: &'a Queue) -> &'a Queue {
        block.as_ref().map_or(main, |b| b.q())
    }

    /// The slot's payload area; `main` is the sender's own segment.
    pub(crate) fn buf<'a>(&'a mut self, main: &'a Queue) -> &'a mut [u8] {
        Claimed::segment(&self.block, main)
            .ring()
            .payload_mut(&mut self.claim)
    }
}

/// The sending end.
#[derive(Debug)]
pub(crate) struct Tx {
    pub(crate) ep: Endpoint,
    cached_head: HeadCache,
    tail: Option<Block>,
    /// Fail every send at once when all receivers have gone (mailbox
    /// semantics); otherwise only when the send would have to wait.
    strict_disconnect: bool,
    /// When we last looked for dead receivers (coarse clock, ms).
    last_reap_ms: u64,
}

impl Tx {
    pub(crate) fn new(ep: Endpoint, strict_disconnect: bool) -> Tx {
        // An unbounded queue never makes a sender wait, so waiting cannot
        // be where it notices that nobody reads any more.
        let strict_disconnect = strict_disconnect || ep.q.flavor() == Flavor::Unbounded;
        Tx {
            ep,
            cached_head: HeadCache::default(),
            tail: None,
            strict_disconnect,
            last_reap_ms: crate::sys::coarse_clock_ms(),
        }
    }

    fn main(&self) -> &Arc<Queue> {
        &self.ep.q
    }

    pub(crate) fn max_message(&self) -> usize {
        self.main().geometry().max_message as usize
    }

    /// Sends `msg` before `deadline`.
    pub(crate) fn send<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        deadline: Deadline,
    ) -> Result<(), SendError<M>> {
        self.send_tagged(0, msg, deadline)
    }

    /// [`Tx::send`], with a commit tag (0: none; see
    /// [`Tx::send_tagged_batch`]).
    #[inline]
    fn send_tagged<M: AsRef<[u8]>>(
        &mut self,
        tag: u64,
        msg: M,
        deadline: Deadline,
    ) -> Result<(), SendError<M>> {
        // A send with room at once goes in here; claiming, waiting and the
        // rest are out of line, so that this path stays short.
        let (msg, _) = self.fits(msg)?;
        match self.send_now(tag, msg.as_ref()) {
            Ok(true) => {
                self.main().wake_receivers();
                Ok(())
            }
            Ok(false) => self.send_tagged_slow(tag, msg, deadline),
            Err(fail) => Err(fail.into_send_error(msg)),
        }
    }

    /// [`Tx::send_tagged`] of `msg` (checked against the maximum) that the
    /// one-step send could not take.
    #[inline(never)]
    fn send_tagged_slow<M: AsRef<[u8]>>(
        &mut self,
        tag: u64,
        msg: M,
        deadline: Deadline,
    ) -> Result<(), SendError<M>> {
        let len = msg.as_ref().len();
        if let Err(stop) = self.settle_mark_before_tagging(tag, deadline) {
            return Err(stop_to_send(stop, deadline, msg));
        }
        let mut claimed = match self.claim(len, deadline) {
            Ok(c) => c,
            Err(stop) => return Err(stop_to_send(stop, deadline, msg)),
        };
        claimed.buf(&self.ep.q)[..len].copy_from_slice(msg.as_ref());
        self.commit_tagged(claimed, len, tag, deadline)
            .map_err(|stop| stop_to_send(stop, deadline, msg))
    }

    /// A bounded queue's send of `msg` in one step (see
    /// [`PackedRing::try_send_now`](crate::ring::PackedRing::try_send_now)),
    /// waking nobody: false if it did not apply (nothing done; the caller
    /// claims and commits), as for a tagged message (`tag` non-zero).
    #[inline]
    fn send_now(&mut self, tag: u64, msg: &[u8]) -> Result<bool, ClaimFail> {
        if tag != 0 || self.main().flavor() != Flavor::Bounded || self.ep.inherited() {
            return Ok(false);
        }
        self.check_receivers()?;
        let me = self.ep.me;
        let ring = self.ep.q.ring();
        ring.try_send_now(me, msg, &mut self.cached_head)
            .map_err(|e| {
                self.ep.q.count_revoked();
                ClaimFail::Corrupt(e)
            })
    }

    /// `msg` and its length, or `TooLarge`.
    fn fits<M: AsRef<[u8]>>(&self, msg: M) -> Result<(M, usize), SendError<M>> {
        let len = msg.as_ref().len();
        let max = self.max_message();
        if len > max {
            return Err(SendError::TooLarge { msg, len, max });
        }
        Ok((msg, len))
    }

    /// Publishes a claimed message (in the block that holds it), waking
    /// nobody; returns its position. A claim taken away meanwhile is
    /// counted as revoked; one inherited through fork is the parent's.
    fn publish(&self, claimed: Claimed, len: usize, tag: u64) -> Result<u64, ClaimFail> {
        if self.ep.inherited() {
            return Err(ClaimFail::Inherited);
        }
        let Claimed { block, claim } = claimed;
        let pos = claim.pos();
        // An unbounded chain's last tag is kept in its main segment, so
        // that it outlives the block: marked there first, with where the
        // claim is, and settled after the block's own tagged commit (or,
        // if we are killed in between, by `settle_chain_tag`, from the
        // block's marks).
        let chained = block.as_ref().filter(|_| tag != 0);
        let chain = &self.main().header().chain;
        // (A mark left by a tagger killed in its commit was settled
        // before we claimed: `settle_mark_before_tagging`.)
        if let Some(b) = chained {
            chain.tag_pending.store(tag, Ordering::Relaxed);
            chain.tag_block.store(b.index, Ordering::Relaxed);
            chain.tag_pos.store(pos + 1, Ordering::Release);
            crate::pause::at("chain tag: marked");
        }
        let q = Claimed::segment(&block, &self.ep.q);
        q.ring().commit(claim, len, tag).map_err(|e| {
            self.main().count_revoked();
            ClaimFail::Corrupt(e)
        })?;
        if let Some(b) = chained {
            crate::pause::at("chain tag: committed");
            chain.tag.store(tag, Ordering::Release);
            chain.tag_pos.store(0, Ordering::Release);
            // The receivers may have passed the block meanwhile, and left
            // it because of the mark (`Queue::retire`).
            self.main()
                .release_behind_head((b.index, b.view.end), b.q());
        }
        Ok(pos)
    }

    /// Sends each message of `msgs` in order before `deadline`, waking
    /// receivers once, at the end (and before waiting for room, so that
    /// they can make it). Returns how many were sent; on failure, also how
    /// many went before the message that failed.
    pub(crate) fn send_batch<M: AsRef<[u8]>>(
        &mut self,
        msgs: impl IntoIterator<Item = M>,
        deadline: Deadline,
    ) -> Result<usize, (usize, SendError<M>)> {
        // (Each rendezvous waits for its receiver: nothing to batch.)
        self.send_tagged_batch(msgs.into_iter().map(|m| (0, m)), deadline)
    }

    /// [`Tx::send_batch`] of `(tag, message)` pairs: each message's
    /// non-zero tag is made the ring's last tag with its commit (0: none).
    /// A rendezvous queue's go one by one, each waiting for its receiver;
    /// an unbounded one's last tag is kept in its main segment (see
    /// [`Tx::publish`]).
    pub(crate) fn send_tagged_batch<M: AsRef<[u8]>>(
        &mut self,
        msgs: impl IntoIterator<Item = (u64, M)>,
        deadline: Deadline,
    ) -> Result<usize, (usize, SendError<M>)> {
        let mut sent = 0;
        if self.main().flavor() == Flavor::Zero {
            for (tag, msg) in msgs {
                self.send_tagged(tag, msg, deadline)
                    .map_err(|e| (sent, e))?;
                sent += 1;
            }
            return Ok(sent);
        }
        let mut unannounced = false;
        let mut failed = None;
        for (tag, msg) in msgs {
            let (msg, len) = match self.fits(msg) {
                Ok(fits) => fits,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            match self.send_now(tag, msg.as_ref()) {
                Ok(true) => {
                    sent += 1;
                    unannounced = true;
                    continue;
                }
                Ok(false) => {}
                Err(fail) => {
                    failed = Some(fail.into_send_error(msg));
                    break;
                }
            }
            if let Err(stop) = self.settle_mark_before_tagging(tag, deadline) {
                failed = Some(stop_to_send(stop, deadline, msg));
                break;
            }
            let claimed = match self.claim(len, Deadline::Now) {
                Ok(c) => Ok(c),
                Err(Stop::Timeout) if deadline != Deadline::Now => {
                    if std::mem::take(&mut unannounced) {
                        self.main().wake_receivers();
                    }
                    self.claim(len, deadline)
                }
                Err(stop) => Err(stop),
            };
            let mut claimed = match claimed {
                Ok(c) => c,
                Err(stop) => {
                    failed = Some(stop_to_send(stop, deadline, msg));
                    break;
                }
            };
            claimed.buf(&self.ep.q)[..len].copy_from_slice(msg.as_ref());
            if let Err(e) = self.publish(claimed, len, tag) {
                failed = Some(e.into_send_error(msg));
                break;
            }
            sent += 1;
            unannounced = true;
        }
        if unannounced {
            self.main().wake_receivers();
        }
        match failed {
            None => Ok(sent),
            Some(e) => Err((sent, e)),
        }
    }

    /// An unbounded chain's last tag, settling first a mark left by a
    /// tagger killed in its commit (`settle_chain_tag`): waits for the
    /// marked block's write lock until `deadline`.
    fn settle_chain_mark(&self, deadline: Deadline) -> Result<u64, Stop<ClaimFail>> {
        let me = self.ep.me;
        self.ep.block_on(
            |h| &h.space_ready,
            deadline,
            |_| match settle_chain_tag(self.main(), me) {
                Ok(Some(tag)) => Step::Ready(tag),
                Ok(None) => Step::Wait,
                Err(e) => Step::Fail(ClaimFail::Corrupt(e)),
            },
        )
    }

    /// Before a tagged message (`tag` non-zero) is claimed in an unbounded
    /// chain: a mark a killed tagger left is settled first, until
    /// `deadline`, since ours will replace it (review of 4bc3219: a
    /// replaced mark lost the tag of a message that had gone in, and the
    /// next `last_tag` went back to an older one). One load otherwise.
    fn settle_mark_before_tagging(
        &self,
        tag: u64,
        deadline: Deadline,
    ) -> Result<(), Stop<ClaimFail>> {
        if tag == 0
            || self.main().flavor() != Flavor::Unbounded
            || self.main().header().chain.tag_pos.load(Ordering::Acquire) == 0
        {
            return Ok(());
        }
        self.settle_chain_mark(deadline).map(drop)
    }

    /// The tag of the last tagged message committed to the queue (0:
    /// none), once no writer's claim is under way: waits (until
    /// `deadline`) for the write lock, reaping a dead holder, whose tagged
    /// commit is then settled. On a rendezvous queue, of the last tagged
    /// offer if a receiver took it (0 if withdrawn): one still waiting
    /// whose sender is no longer attached is withdrawn, and a withdrawal
    /// killed half way is finished first (by reaping). On an unbounded
    /// queue, see `settle_chain_tag`.
    pub(crate) fn last_tag(&mut self, deadline: Deadline) -> Result<u64, Stop<ClaimFail>> {
        if self.ep.inherited() {
            return Err(Stop::Fail(ClaimFail::Inherited));
        }
        let me = self.ep.me;
        if self.main().flavor() == Flavor::Unbounded {
            return self.settle_chain_mark(deadline);
        }
        let ring = self.ep.q.ring();
        let offers = self.main().flavor() == Flavor::Zero;
        let (tag, withdrew) = self.ep.block_on(
            |h| &h.space_ready,
            deadline,
            |_| {
                let found = if offers {
                    let peers = self.ep.q.peers();
                    ring.last_offer_tag(me, |index, word| !peers.still_attached(index, word))
                } else {
                    ring.last_tag(me).map(|t| t.map(|tag| (tag, false)))
                };
                match found {
                    Ok(Some(found)) => Step::Ready(found),
                    Ok(None) => Step::Wait,
                    Err(e) => Step::Fail(ClaimFail::Corrupt(e)),
                }
            },
        )?;
        if withdrew {
            // Its room is free again, and receivers may see the end.
            self.main().wake_senders();
            self.main().wake_receivers();
        }
        Ok(tag)
    }

    /// Claims room for a message of up to `want` bytes (at most the
    /// maximum) to build in place, waiting for room (bounded and zero
    /// flavors) until `deadline`.
    pub(crate) fn claim(
        &mut self,
        want: usize,
        deadline: Deadline,
    ) -> Result<Claimed, Stop<ClaimFail>> {
        debug_assert!(want <= self.max_message());
        if self.ep.inherited() {
            return Err(Stop::Fail(ClaimFail::Inherited));
        }
        self.check_receivers().map_err(Stop::Fail)?;
        match self.main().flavor() {
            Flavor::Bounded => self.claim_bounded(want, deadline),
            Flavor::Zero => {
                let waiting = self.main().header().roster.any_waiting();
                if deadline == Deadline::Now && !waiting {
                    return Err(Stop::Timeout);
                }
                self.claim_bounded(want, deadline)
            }
            Flavor::Unbounded => self.claim_unbounded(want).map_err(Stop::Fail),
        }
    }

    /// Mailbox semantics (`strict_disconnect`): fails once every receiver
    /// has gone, whether or not the send would wait.
    #[inline]
    fn check_receivers(&mut self) -> Result<(), ClaimFail> {
        if self.strict_disconnect {
            // A receiver killed without detaching is found by reaping,
            // which blocked callers do; a sender that never blocks looks
            // once per period, by a coarse clock (a few nanoseconds, no
            // system call), however few or many its sends.
            let now = crate::sys::coarse_clock_ms();
            if now.wrapping_sub(self.last_reap_ms) >= LIVENESS_PERIOD.as_millis() as u64 {
                self.last_reap_ms = now;
                self.ep.q.reap();
            }
            if self.ep.all_gone(Role::Consumer, 1) {
                return Err(ClaimFail::Disconnected);
            }
        }
        Ok(())
    }

    fn claim_bounded(
        &mut self,
        want: usize,
        deadline: Deadline,
    ) -> Result<Claimed, Stop<ClaimFail>> {
        let ring = self.ep.q.ring();
        let me = self.ep.me;
        // The fast path: room now, no waiting machinery. A caller that
        // will not wait (`try_send`) still waits out another sender's
        // turn, boundedly: full only from what the ring holds.
        let grace = (deadline == Deadline::Now).then_some(WRITE_GRACE);
        match yield_to_turns(grace, || {
            ring.try_write(me, want, &mut self.cached_head, true)
        }) {
            // SAFETY: a claim on our own queue's ring.
            Ok(WriteAttempt::Claimed(claim)) => return Ok(unsafe { Claimed::new(None, claim) }),
            Ok(WriteAttempt::Full | WriteAttempt::Busy) => {}
            Err(e) => return Err(Stop::Fail(ClaimFail::Corrupt(e))),
        }
        let mut cached_head = self.cached_head;
        let r = self.ep.block_on(
            |h| &h.space_ready,
            deadline,
            // Spinning, only the room the reader published counts (see
            // `PackedRing::try_claim_write`); the checks before sleeping
            // are exact.
            |thorough| match yield_to_turns(None, || {
                ring.try_write(me, want, &mut cached_head, thorough)
            }) {
                Ok(WriteAttempt::Claimed(c)) => Step::Ready(c),
                Ok(_) if thorough && self.ep.all_gone(Role::Consumer, 1) => {
                    Step::Fail(ClaimFail::Disconnected)
                }
                Ok(_) => Step::Wait,
                Err(e) => Step::Fail(ClaimFail::Corrupt(e)),
            },
        );
        self.cached_head = cached_head;
        // SAFETY: a claim on our own queue's ring.
        r.map(|claim| unsafe { Claimed::new(None, claim) })
    }

    /// Claims a slot at the tail of an unbounded chain, growing it when
    /// the tail block is sealed. Iterative and bounded: a chain that keeps
    /// moving under us for [`CHASE_LIMIT`] rounds is called corrupt, and
    /// so are chain indices that fit no state.
    fn claim_unbounded(&mut self, want: usize) -> Result<Claimed, ClaimFail> {
        let me = self.ep.me;
        for _ in 0..CHASE_LIMIT {
            let (_, tail) = self.main().chain_indices().map_err(ClaimFail::Corrupt)?;
            if self.tail.as_ref().is_none_or(|b| b.index < tail) {
                crate::pause::at("send: tail index read");
                self.cached_head = HeadCache::default();
                self.tail = self.open_tail_block(tail)?;
            }
            let Some(block) = self.tail.as_ref() else {
                continue;
            };
            let ring = block.ring();
            let cache = &mut self.cached_head;
            match yield_to_turns(Some(BYPASS_GRACE), || ring.try_write(me, want, cache, true)) {
                Ok(WriteAttempt::Claimed(claim)) => {
                    // SAFETY: a claim on this block's ring; the Arc keeps it.
                    return Ok(unsafe { Claimed::new(Some(block.clone()), claim) });
                }
                // Sealed (full), or another sender's turn has lasted
                // longer than a turn does (it is frozen, or descheduled):
                // an unbounded queue's sender does not wait for it, but
                // starts the next block. Receivers end this one once its
                // last writer is out (`read_chain`).
                Ok(WriteAttempt::Full) if !ring.sealed() => {
                    return Err(ClaimFail::Corrupt(CorruptError(
                        "a write-once block looks full before its end".to_owned(),
                    )))
                }
                Ok(WriteAttempt::Full | WriteAttempt::Busy) => {
                    let k = block.index;
                    self.cached_head = HeadCache::default();
                    self.tail = self.grow(k)?;
                }
                Err(e) => return Err(ClaimFail::Corrupt(e)),
            }
        }
        Err(ClaimFail::Corrupt(CorruptError(format!(
            "{}: the chain moved {CHASE_LIMIT} times during one send",
            self.main().name()
        ))))
    }

    /// Maps tail block `k`. `None`: it was drained and removed already
    /// (then the chain has moved on, or we grow it past `k`): look again.
    fn open_tail_block(&self, k: u64) -> Result<Option<Block>, ClaimFail> {
        let main = self.main();
        if k == 0 {
            return Ok(Some(Block::main(main)));
        }
        match main.open_block_cached(k) {
            // The receivers passed `k` since we read the tail index: what
            // has `k`'s name now is no block of the chain (a sender late in
            // `grow` made it again, and removes it), and a message written
            // there would never be read. Looked at after the open: a name
            // behind the head is made again only once the head passed it.
            Ok(_) if main.header().chain.head_block.load(Ordering::Acquire) > k => Ok(None),
            Ok(view) => Ok(Some(Block { index: k, view })),
            // Closed and removed by a receiver at end of stream: the chain
            // goes on with a new block.
            Err(OpenError::Segment(SegmentError::NotFound(_)))
                if main.header().chain.tail_block.load(Ordering::Acquire) == k =>
            {
                self.grow(k)
            }
            Err(OpenError::Segment(SegmentError::NotFound(_))) => Ok(None),
            Err(OpenError::Segment(e @ SegmentError::PermissionDenied(_))) => {
                Err(ClaimFail::Unreachable(e.to_string()))
            }
            Err(e) => Err(ClaimFail::Corrupt(CorruptError(format!(
                "cannot reach tail block {k}: {e}"
            )))),
        }
    }

    /// Moves on from block `k` (sealed, or held up by a sender frozen in
    /// its turn): makes block `k+1` from a spare, or
    /// creates it (or opens it if another sender was first), and publishes
    /// it as the tail. `None`: the chain moved meanwhile; look again.
    fn grow(&self, k: u64) -> Result<Option<Block>, ClaimFail> {
        let main = self.main();
        let chain = &main.header().chain;
        if chain.tail_block.load(Ordering::Acquire) > k {
            return Ok(None);
        }
        crate::pause::at("grow: tail checked");
        // A spare moved to k+1's name is ours to publish, as a block we
        // created would be; if it vanished before we opened it (removed
        // with the queue), make one as before. One we cannot use is ours
        // to remove (we renamed it; spares are disposable): a file that is
        // not a block of this queue is replaced by a fresh block, a
        // scribbled one is reported, and neither stays to wedge the chain.
        let took = match main.take_spare(k + 1) {
            Some(spare) => match main.open_block_cached(k + 1) {
                Ok(view) => Some(view),
                Err(e @ OpenError::Corrupt { .. }) => {
                    Segment::unlink_if_same(&main.block_name(k + 1), spare);
                    return Err(ClaimFail::Corrupt(CorruptError(e.to_string())));
                }
                // The spare we moved here last served an index beyond k+1:
                // the chain has passed k+1 while we slept. It is ours to
                // remove (nobody else uses a name behind the head).
                Err(OpenError::Segment(SegmentError::NotFound(_))) => {
                    Segment::unlink_if_same(&main.block_name(k + 1), spare);
                    return Ok(None);
                }
                Err(e) if unusable_spare(&e) => {
                    if Segment::unlink_if_same(&main.block_name(k + 1), spare) {
                        log::info!("{}: removed an unusable spare: {e}", main.name());
                    }
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let made = match took {
            Some(view) => Ok((view, true)),
            None => main.create_block(k + 1, main.mode()),
        };
        let (view, created) = match made {
            Ok(r) => r,
            Err(CreateError::Segment(e @ SegmentError::NoSpace { .. })) => {
                return Err(ClaimFail::NoSpace(e.to_string()))
            }
            // Created by another sender, then drained and unlinked before
            // we could open it: the tail has moved on.
            Err(_) if chain.tail_block.load(Ordering::Acquire) > k => return Ok(None),
            Err(e) => {
                return Err(ClaimFail::NoSpace(format!(
                    "cannot add block {} to the chain: {e}",
                    k + 1
                )))
            }
        };
        crate::pause::at("grow: block made");
        if chain.head_block.load(Ordering::Acquire) > k + 1 {
            // We slept through the life of block k+1: this one is stale
            // (and, if we made it, ours to remove).
            if created {
                let _ = Segment::unlink(&main.block_name(k + 1));
            }
            return Ok(None);
        }
        let _ = chain
            .tail_block
            .compare_exchange(k, k + 1, Ordering::AcqRel, Ordering::Acquire);
        Ok(Some(Block { index: k + 1, view }))
    }

    /// Publishes a claimed slot; for the zero flavor, waits until a
    /// receiver took the message (retracting it on timeout/disconnect).
    pub(crate) fn commit(
        &mut self,
        claimed: Claimed,
        len: usize,
        deadline: Deadline,
    ) -> Result<(), Stop<ClaimFail>> {
        self.commit_tagged(claimed, len, 0, deadline)
    }

    /// [`Tx::commit`] with a commit tag (0: none). A rendezvous offer
    /// withdrawn takes its tag with it (`PackedRing::try_retract`).
    fn commit_tagged(
        &mut self,
        claimed: Claimed,
        len: usize,
        tag: u64,
        deadline: Deadline,
    ) -> Result<(), Stop<ClaimFail>> {
        let offer = self.main().flavor() == Flavor::Zero;
        if offer && tag != 0 {
            // Before the commit, while we hold the claim: a look at the
            // last tag withdraws this offer only once we are gone.
            let word = self.ep.attachment.word();
            self.ep.q.ring().set_offer_owner(self.ep.me, word);
        }
        let pos = self.publish(claimed, len, tag).map_err(Stop::Fail)?;
        self.main().wake_receivers();
        if !offer {
            return Ok(());
        }
        // A rendezvous queue has no chained blocks: the claim was ours.
        let ring = self.ep.q.ring();
        let wait_until = match deadline {
            Deadline::Now => Deadline::after(RENDEZVOUS_GRACE),
            d => d,
        };
        let outcome = self.ep.block_on(
            |h| &h.space_ready,
            wait_until,
            |thorough| {
                if ring.was_taken(pos) {
                    Step::Ready(())
                } else if thorough && self.ep.all_gone(Role::Consumer, 1) {
                    Step::Fail(ClaimFail::Disconnected)
                } else {
                    Step::Wait
                }
            },
        );
        match outcome {
            Ok(()) => Ok(()),
            Err(stop) => match self.retract(pos) {
                // A receiver claimed it meanwhile: it has the message.
                Ok(false) => Ok(()),
                Ok(true) => {
                    // Its room is free again, and receivers may see the end.
                    self.main().wake_senders();
                    self.main().wake_receivers();
                    Err(stop)
                }
                Err(e) => Err(Stop::Fail(ClaimFail::Corrupt(e))),
            },
        }
    }

    /// Withdraws our rendezvous message at `pos` unless a receiver took
    /// it: true if withdrawn. Waits for the receivers' lock of a shared
    /// ring, which a receiver holds while it takes a message (and, reading
    /// in place, until it releases it); a dead holder's is freed by
    /// reaping, which this wait does.
    fn retract(&self, pos: u64) -> Result<bool, CorruptError> {
        let q = &self.ep.q;
        for turn in 0u32.. {
            if let Some(withdrawn) = q.ring().try_retract(pos, self.ep.me)? {
                return Ok(withdrawn);
            }
            if turn < RETRACT_YIELDS {
                std::thread::yield_now();
            } else {
                q.reap_if_due();
                std::thread::sleep(RETRACT_NAP);
            }
        }
        unreachable!("the loop above returns")
    }

    /// Abandons a claimed slot: receivers skip it.
    pub(crate) fn abandon(&self, claimed: Claimed) {
        if self.ep.inherited() {
            // The parent's claim, copied by fork: the parent still holds it.
            return;
        }
        let Claimed { block, claim } = claimed;
        if let Err(e) = Claimed::segment(&block, &self.ep.q).ring().abandon(claim) {
            self.main().count_revoked();
            log::warn!("{}: {e}", self.main().name());
        }
        self.main().wake_receivers();
    }
}

/// The receiving end.
#[derive(Debug)]
pub(crate) struct Rx {
    pub(crate) ep: Endpoint,
    /// Redelivery if this process dies holding a message, and where the
    /// index of the message held is told.
    pub(crate) mode: ReadMode,
    head: Option<Block>,
    pub(crate) min_producers: u32,
    /// `Counters::incomplete_streams` when this receiver attached.
    pub(crate) incomplete_at_attach: u32,
}

/// How a receiver reads (see [`crate::Receiver::redeliver_if_killed`]).
#[derive(Debug, Default)]
pub(crate) struct ReadMode {
    /// A message this process holds when it dies stays queued.
    pub(crate) redeliver: bool,
    /// The index of the message last claimed, told only once
    /// [`crate::Receiver::recv_batch_indexed_until`] asked for it (shared
    /// with its callback; not in shared memory: a plain atomic, under
    /// loom too). Other receivers pay nothing per message.
    pub(crate) index: Option<Arc<AtomicU64>>,
}

/// Marks a receiver as waiting (for rendezvous `try_send`) while alive.
struct WaitingGuard<'a>(&'a Queue, u32);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.header().roster.set_waiting(self.1, false);
    }
}

impl Rx {
    pub(crate) fn new(ep: Endpoint) -> Rx {
        let incomplete_at_attach =
            ep.q.header()
                .counters
                .incomplete_streams
                .load(Ordering::Acquire);
        Rx {
            ep,
            mode: ReadMode::default(),
            head: None,
            min_producers: 1,
            incomplete_at_attach,
        }
    }

    /// Receives one message into `out` before `deadline`; its length.
    /// A bounded ring's plain message that fits is taken in one step.
    #[inline]
    pub(crate) fn recv_into(
        &mut self,
        out: &mut [u8],
        deadline: Deadline,
    ) -> Result<usize, RecvError> {
        // The message a receiver that keeps up finds waiting is taken
        // here; polling, waiting and the general path are out of line, so
        // that this path stays a few instructions long.
        if self.one_step() {
            if let Some(len) = self.take_now(out)? {
                return Ok(len);
            }
        }
        self.recv_into_slow(out, deadline)
    }

    /// True if this receiver may take a bounded ring's messages in one
    /// step ([`Rx::take_now`]).
    #[inline(always)]
    fn one_step(&self) -> bool {
        self.ep.q.flavor() == Flavor::Bounded && !self.ep.inherited()
    }

    /// The plain message at the head, taken in one step into `out` (see
    /// [`PackedRing::try_recv_now`](crate::ring::PackedRing::try_recv_now)):
    /// its length, or `None` having done nothing.
    #[inline(always)]
    fn take_now(&self, out: &mut [u8]) -> Result<Option<usize>, RecvError> {
        let q = &self.ep.q;
        match q.ring().try_recv_now(self.ep.me, out, self.mode.redeliver) {
            Ok(Some((len, index))) => {
                if let Some(cell) = &self.mode.index {
                    cell.store(index, Ordering::Relaxed);
                }
                q.wake_senders();
                Ok(Some(len))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                q.count_revoked();
                Err(RecvError::Corrupt(e))
            }
        }
    }

    /// [`Rx::recv_into`] once its first look found nothing to take in one
    /// step.
    #[inline(never)]
    fn recv_into_slow(&mut self, out: &mut [u8], deadline: Deadline) -> Result<usize, RecvError> {
        if self.one_step() && deadline != Deadline::Now && !self.ep.policy.spin.is_zero() {
            // A receiver that keeps up finds the next message a moment
            // away: a few more polls meet it on the one-step path (the
            // general one's delivery costs several times more). Only an
            // empty head is worth polling again: what is there but not
            // for this path (padding, a message too long, a withdrawn
            // one) is the general path's.
            for _ in 1..FAST_POLLS {
                if self.ep.q.ring().head_committed() {
                    break;
                }
                crate::atomic::spin_hint();
                if let Some(len) = self.take_now(out)? {
                    return Ok(len);
                }
            }
        }
        let max_len = out.len();
        self.recv_with(deadline, max_len, |bytes| {
            out[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        })
    }

    /// Receives one message into `f(payload)` before `deadline`.
    /// End of stream (`Disconnected`) once at least `min_producers`
    /// senders attached, all have gone, and everything is drained.
    pub(crate) fn recv_with<R>(
        &mut self,
        deadline: Deadline,
        max_len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, RecvError> {
        self.recv_with_keep(deadline, max_len, f, &|_| false)
    }

    /// [`Rx::recv_with`], except that when `keep(&f(payload))` holds the
    /// message is not taken: it stays at the head, for the next receive
    /// (bounded and rendezvous queues; an unbounded one frees its head
    /// before `f` runs unless its receiver asked for redelivery, and is
    /// refused).
    pub(crate) fn recv_with_keep<R>(
        &mut self,
        deadline: Deadline,
        max_len: usize,
        f: impl FnOnce(&[u8]) -> R,
        keep: &dyn Fn(&R) -> bool,
    ) -> Result<R, RecvError> {
        if self.ep.inherited() {
            return Err(RecvError::Inherited);
        }
        // The fast path: a message is there now. A caller that will not
        // wait (`try_recv`) still waits out another receiver's turn,
        // boundedly: empty only from what the ring holds.
        let q = &self.ep.q;
        if q.flavor() != Flavor::Unbounded {
            let grace = (deadline == Deadline::Now).then_some(WRITE_GRACE);
            match attempt_read(q.ring(), self.ep.me, max_len, grace, Some(&self.mode)) {
                Step::Ready(claim) => {
                    return deliver_then(q, q, (0, 0), claim, f, true, None, keep)
                }
                Step::Fail(e) => return Err(e),
                Step::Wait => {}
            }
        }
        if deadline == Deadline::Now && self.writing_at_head() {
            // Like crossbeam: "empty" only when nothing is queued; a
            // message being written now is waited for (boundedly).
            return match self.recv_slow(Deadline::after(WRITE_GRACE), max_len, f, keep) {
                Err(RecvError::Timeout) => Err(RecvError::Empty),
                other => other,
            };
        }
        self.recv_slow(deadline, max_len, f, keep)
    }

    /// True if the message at the head of the queue is being written now.
    fn writing_at_head(&self) -> bool {
        match self.ep.q.flavor() {
            Flavor::Unbounded => self
                .head
                .as_ref()
                .is_some_and(|b| b.ring().writing_at_head()),
            _ => self.ep.q.ring().writing_at_head(),
        }
    }

    /// Receiving when nothing is ready: wait, follow the chain, detect the
    /// end of the stream.
    fn recv_slow<R>(
        &mut self,
        deadline: Deadline,
        max_len: usize,
        f: impl FnOnce(&[u8]) -> R,
        keep: &dyn Fn(&R) -> bool,
    ) -> Result<R, RecvError> {
        let main = self.ep.q.clone();
        let me = self.ep.me;
        let _waiting = (main.flavor() == Flavor::Zero && deadline != Deadline::Now).then(|| {
            main.header().roster.set_waiting(me, true);
            // A sender may be waiting to see us before it offers.
            main.wake_senders();
            WaitingGuard(&main, me)
        });
        let Rx {
            ep,
            head,
            min_producers,
            mode,
            ..
        } = self;
        let attempt = |thorough: bool| -> Step<Taken, RecvError> {
            let try_once = |head: &mut Option<Block>| match main.flavor() {
                Flavor::Unbounded => read_chain(&main, head, me, max_len, mode),
                // SAFETY: a claim on `main`'s ring, kept with its Arc.
                _ => attempt_read(main.ring(), me, max_len, None, Some(mode))
                    .map(|c| (main.clone(), unsafe { c.extend() }, (0, 0))),
            };
            // Only a thorough look (about to sleep) may end the stream:
            // only it needs the attach count from before it looked.
            let producers_seen = thorough.then(|| producers_total(&main));
            match try_once(head) {
                Step::Wait if thorough && ep.all_gone(Role::Producer, *min_producers) => {
                    // A sender may have committed just before leaving: look
                    // once more now that we saw it gone.
                    match try_once(head) {
                        Step::Wait if main.queued() == 0 && retire_tail_block(&main, head, me) => {
                            Step::Fail(RecvError::Disconnected)
                        }
                        // (Not for an unbounded queue: its count spans the
                        // chain, and another receiver's turn in a block is
                        // not the main segment's lock.)
                        Step::Wait
                            if main.flavor() != Flavor::Unbounded
                                && main.queued() > 0
                                && !main.ring().locked(Side::Read) =>
                        {
                            // Counted as queued, yet no record where the
                            // reader stands: if no producer attached all
                            // along (the attach count did not move), none
                            // is coming and the counts were scribbled.
                            // Said, not waited on. (Counts are stored after
                            // their records: look once more after them.)
                            let queued = main.queued();
                            match try_once(head) {
                                Step::Wait
                                    if ep.all_gone(Role::Producer, *min_producers)
                                        && producers_seen == Some(producers_total(&main))
                                        && !main.ring().locked(Side::Read)
                                        && main.queued() == queued =>
                                {
                                    Step::Fail(stranded_counts(&main, queued))
                                }
                                other => other,
                            }
                        }
                        other => other,
                    }
                }
                other => other,
            }
        };
        let (q, claim, at) = ep
            .block_on(|h| &h.data_ready, deadline, attempt)
            .map_err(|stop| match stop {
                Stop::Timeout if deadline == Deadline::Now => RecvError::Empty,
                Stop::Timeout => RecvError::Timeout,
                Stop::Fail(e) => e,
            })?;
        // A chain's message is read detached (the head moves on before `f`
        // runs, so other receivers go on), unless this receiver asked for
        // redelivery: then it holds the block's turn until `f` returns, and
        // the repair of its death finds the message still at the head.
        let hold = (main.flavor() == Flavor::Unbounded && !mode.redeliver).then_some(me);
        deliver_then(&main, &q, at, claim, f, true, hold, keep)
    }
}

impl Rx {
    /// Waits until `deadline` for a message, then takes every message
    /// queued, up to `max`, handing each to `f` in place; wakes senders
    /// once per batch. Returns how many were taken (`max` 0: none, at
    /// once). An error after some messages went to `f` is returned (`f`
    /// saw those); running out of messages ends the batch.
    pub(crate) fn recv_batch(
        &mut self,
        deadline: Deadline,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        self.recv_with(deadline, usize::MAX, &mut f)?;
        let mut taken = 1;
        let q = self.ep.q.clone();
        if q.flavor() == Flavor::Unbounded {
            while taken < max {
                match self.recv_with(Deadline::Now, usize::MAX, &mut f) {
                    Ok(()) => taken += 1,
                    Err(RecvError::Empty | RecvError::Disconnected) => break,
                    Err(e) => return Err(e),
                }
            }
            return Ok(taken);
        }
        let mut unannounced = false;
        let mut failed = None;
        while taken < max {
            let claim = match attempt_read(q.ring(), self.ep.me, usize::MAX, None, Some(&self.mode))
            {
                Step::Ready(claim) => claim,
                Step::Wait => break,
                Step::Fail(e) => {
                    failed = Some(e);
                    break;
                }
            };
            unannounced = true;
            match deliver_quietly(&q, &q, claim, &mut f) {
                Ok(()) => taken += 1,
                // A child forked inside `f`: not ours to announce.
                Err(RecvError::Inherited) => return Err(RecvError::Inherited),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if unannounced {
            q.wake_senders();
        }
        match failed {
            None => Ok(taken),
            Some(e) => Err(e),
        }
    }
}

/// Hands a claimed message to `f` in place and frees its slot, without
/// waking senders (the batch wakes them once); see [`deliver_then`].
fn deliver_quietly<R>(
    main: &Queue,
    q: &Queue,
    claim: ReadClaim<'_>,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, RecvError> {
    deliver_then(main, q, (0, 0), claim, f, false, None, &|_| false)
}

/// Hands a claimed message to `f` in place, frees its slot (in `q`, the
/// block that holds it: chain block `at.0`, 0 for the main segment, read
/// through a view of the lap ending at `at.1`), and wakes senders waiting
/// for room in `main` if `wake`. If `f` panics, the slot is freed all the
/// same and the message counted lost. After letting go of a message of a
/// block the head has passed, the receiver removes the block if nobody
/// reads in it any more (see [`Queue::release_behind_head`]).
///
/// With `hold` (the receiver's attachment index: an unbounded queue, whose
/// laps are write-once), the ring's head is freed before `f` runs, so that
/// other receivers go on while this one reads in place; the attachment
/// table says which message it holds meanwhile (see
/// [`crate::peers::PeerTable::set_hold`]).
///
/// If `keep(&f(..))` holds (and there is no `hold`), the message is put
/// back: not taken, it stays at the head for the next receive.
#[allow(clippy::too_many_arguments)]
fn deliver_then<R>(
    main: &Queue,
    q: &Queue,
    at: (u64, u64),
    claim: ReadClaim<'_>,
    f: impl FnOnce(&[u8]) -> R,
    wake: bool,
    hold: Option<u32>,
    keep: &dyn Fn(&R) -> bool,
) -> Result<R, RecvError> {
    struct Unwinding<'a, 'q> {
        main: &'a Queue,
        q: &'a Queue,
        at: (u64, u64),
        ring: &'a Ring<'q>,
        claim: Option<ReadClaim<'q>>,
        hold: Option<u32>,
        generation: u64,
    }
    impl Drop for Unwinding<'_, '_> {
        fn drop(&mut self) {
            if crate::sys::fork_generation() != self.generation {
                // Unwinding in a child forked inside `f`: the claim is
                // the parent's.
                return;
            }
            if let Some(claim) = self.claim.take() {
                match self.hold {
                    Some(me) => self.main.peers().clear_hold(me),
                    None => {
                        let _ = release_waking(self.main, self.ring, claim);
                    }
                }
                self.main.count(crate::ring::Recovered {
                    lost_reads: 1,
                    ..Default::default()
                });
                self.main.release_behind_head(self.at, self.q);
                self.main.wake_senders();
            }
        }
    }
    let ring = q.ring();
    if let Some(me) = hold {
        // The hold first: from its release on, the head no longer keeps
        // the block from being recycled, and a reaper finding us dead
        // counts the message lost by it (`Queue::repair`).
        main.peers().set_hold(me, at.0, claim.pos);
        match ring.release_detached(&claim) {
            // Another receiver waited for the turn: it sleeps on the
            // queue's wake-up word, which a chained block's ring does not
            // know, so it is woken here.
            Ok(true) => main.wake_receivers(),
            Ok(false) => {}
            Err(e) => {
                main.peers().clear_hold(me);
                main.count_revoked();
                return Err(RecvError::Corrupt(e));
            }
        }
    }
    let mut guard = Unwinding {
        main,
        q,
        at,
        ring,
        claim: Some(claim),
        hold,
        generation: crate::sys::fork_generation(),
    };
    let out = f(ring.payload_of(guard.claim.as_ref().expect("held until released")));
    if crate::sys::fork_generation() != guard.generation {
        // `f` forked and this is the child: the claim is the parent's,
        // who releases it when its own `f` returns.
        let _ = guard.claim.take();
        return Err(RecvError::Inherited);
    }
    let claim = guard.claim.take().expect("held until released");
    if hold.is_none() && keep(&out) {
        return match ring.put_back(claim) {
            // A receiver waited for the turn: the message is its now.
            Ok(true) => {
                main.wake_receivers();
                Ok(out)
            }
            Ok(false) => Ok(out),
            Err(e) => {
                main.count_revoked();
                Err(RecvError::Corrupt(e))
            }
        };
    }
    let released = match hold {
        Some(me) => {
            main.peers().clear_hold(me);
            Ok(())
        }
        None => release_waking(main, ring, claim),
    };
    main.release_behind_head(at, q);
    if wake {
        main.wake_senders();
    }
    match released {
        Ok(()) => Ok(out),
        Err(e) => {
            main.count_revoked();
            Err(RecvError::Corrupt(e))
        }
    }
}

/// Releases `claim` (in `main`'s ring or a block of its chain). A receiver
/// that waited for the turn sleeps on the queue's wake-up word, which a
/// chained block's ring does not know (its release wakes nobody): woken
/// here (review of d98fad7: it slept out its 100 ms slice).
fn release_waking(main: &Queue, ring: &Ring<'_>, claim: ReadClaim<'_>) -> Result<(), CorruptError> {
    if ring.release(claim)? && main.flavor() == Flavor::Unbounded {
        main.wake_receivers();
    }
    Ok(())
}

/// Producers that ever attached to `q`.
fn producers_total(q: &Queue) -> u32 {
    q.header().counters.producers_total.load(Ordering::Acquire)
}

/// `queued` messages counted, none to read, no producer left: scribbled.
fn stranded_counts(q: &Queue, queued: u64) -> RecvError {
    RecvError::Corrupt(CorruptError(format!(
        "{}: {queued} messages counted as queued, none to read, and no producer left",
        q.name()
    )))
}

/// At end of stream, gives the memory of a drained unbounded queue back:
/// seals its last chained block and removes it. A sender that comes later
/// starts a new block.
fn retire_tail_block(main: &Queue, head: &mut Option<Block>, me: u32) -> bool {
    crate::pause::at("end of stream: drained");
    let chain = &main.header().chain;
    let Some(block) = head.as_ref().filter(|b| b.index > 0) else {
        return true;
    };
    if chain.tail_block.load(Ordering::Acquire) != block.index {
        return true;
    }
    // Sealed first, even if marked: a sender that attached meanwhile may
    // hold a slot in it.
    match block.ring().close(me) {
        Ok(false) => {
            // A tagged commit's writer was killed in it: the block's marks
            // say whether its message went in, until the last tag is read
            // (`settle_chain_tag`, which gives it back once the head has
            // passed it). It keeps its name until then.
            if !main.tag_marks(block.index) {
                let _ = Segment::unlink(&main.block_name(block.index));
            }
            // Nor the mapping of it: the next receive looks at the chain
            // afresh (the block is gone, so it waits for a new one).
            *head = None;
            // A receiver found dead now has its lost message counted and
            // the block it held behind the head removed.
            main.reap();
            // Spares too, and the mappings this process kept for reuse:
            // an idle queue holds only its main segment.
            main.drop_spares();
            true
        }
        // A sender that attached meanwhile holds a slot here: its message
        // is still to be read, so neither remove the block nor end.
        Ok(true) => false,
        Err(_) => true,
    }
}

/// The last tag of unbounded chain `main` (see [`Tx::last_tag`]),
/// settling first a tagged commit its writer did not finish (it was
/// killed): the message went in exactly if its block's own tag marks,
/// settled by the repair of that writer, name its record. `None` while
/// that block's write lock is held (by a writer not yet found dead and
/// repaired). The block kept its name meanwhile (see `Queue::retire`);
/// it is given back here once the head has passed it.
fn settle_chain_tag(main: &Arc<Queue>, me: u32) -> Result<Option<u64>, CorruptError> {
    let chain = &main.header().chain;
    let at = chain.tag_pos.load(Ordering::Acquire);
    if at != 0 {
        let k = chain.tag_block.load(Ordering::Relaxed);
        let pending = chain.tag_pending.load(Ordering::Relaxed);
        let block = match k {
            0 => Some(Block::main(main).view),
            k => match main.open_block_cached(k) {
                Ok(view) => Some(view),
                // Only a scribbled mark names a block that is gone (a
                // marked block keeps its name): nothing says its message
                // went in.
                Err(OpenError::Segment(SegmentError::NotFound(_))) => None,
                Err(e) => return Err(CorruptError(format!("cannot reach block {k}: {e}"))),
            },
        };
        if let Some(view) = &block {
            let Some((tag, tag_at)) = view.ring().last_tag_at(me)? else {
                return Ok(None);
            };
            if tag_at == at && tag == pending {
                chain.tag.store(pending, Ordering::Relaxed);
            }
        }
        chain.tag_pos.store(0, Ordering::Release);
        if let Some(view) = &block {
            main.release_behind_head((k, view.end), &view.q);
            remove_sealed_tail(main, k, view);
        }
    }
    Ok(Some(chain.tag.load(Ordering::Acquire)))
}

/// After the tag mark naming block `k` (mapped as `view`) was settled: if
/// the end of stream sealed that block as the chain's drained tail and
/// left it for the mark (`retire_tail_block`), it goes now, as it would
/// have then (review of 4bc3219: it stayed while the queue was idle).
fn remove_sealed_tail(main: &Queue, k: u64, view: &BlockView) {
    if k > 0
        && main.header().chain.tail_block.load(Ordering::Acquire) == k
        && view.ring().sealed()
        && main.queued() == 0
    {
        let _ = Segment::unlink(&main.block_name(k));
    }
}

/// True if `e`, met opening a spare we renamed, says the file can never
/// be a block of this queue (another geometry or kind, truncated, not our
/// layout, never published): a transient failure (out of descriptors,
/// permissions) is not one.
fn unusable_spare(e: &OpenError) -> bool {
    matches!(
        e,
        OpenError::NotOurs { .. }
            | OpenError::Truncated { .. }
            | OpenError::VersionMismatch { .. }
            | OpenError::WrongKind { .. }
            | OpenError::NotInitialized { .. }
            | OpenError::Segment(
                SegmentError::NotASegment(_)
                    | SegmentError::Empty(_)
                    | SegmentError::InvalidSize { .. }
            )
    )
}

/// A message claimed for reading: the segment that holds it, the claim,
/// and (chain index, end of the lap it was read in) of its block ((0, 0):
/// the main segment).
type Taken = (Arc<Queue>, ReadClaim<'static>, (u64, u64));

/// Times a waiting sender or receiver yields to a peer whose turn it is
/// (on a shared ring) before it waits as for room or data: a turn lasts a
/// copy, and the holder may need this core to finish it (sleeping instead
/// would cost a wake-up per turn).
const TURN_YIELDS: u32 = 16;

/// Runs `attempt` again, yielding the processor, while it finds another
/// peer's turn in its way: at most [`TURN_YIELDS`] times, or, given a
/// `grace`, for as long as that lasts.
fn yield_to_turns<T: TurnTaken>(grace: Option<Duration>, mut attempt: impl FnMut() -> T) -> T {
    let mut got = attempt();
    let mut end = None;
    let mut turns = 0;
    while got.turn_taken() {
        turns += 1;
        let more = match grace {
            None => turns <= TURN_YIELDS,
            Some(g) => {
                std::time::Instant::now()
                    < *end.get_or_insert_with(|| std::time::Instant::now() + g)
            }
        };
        if !more {
            break;
        }
        std::thread::yield_now();
        got = attempt();
    }
    got
}

/// An attempt that can find another peer's turn in its way.
trait TurnTaken {
    fn turn_taken(&self) -> bool;
}

impl TurnTaken for Result<WriteAttempt<'_>, CorruptError> {
    fn turn_taken(&self) -> bool {
        matches!(self, Ok(WriteAttempt::Busy))
    }
}

impl TurnTaken for Result<ReadAttempt<'_>, CorruptError> {
    fn turn_taken(&self) -> bool {
        matches!(self, Ok(ReadAttempt::Busy))
    }
}

/// One non-blocking read claim on `ring`, as a waiting step (yielding to
/// another receiver's turn first: see [`yield_to_turns`]).
fn attempt_read<'q>(
    ring: &Ring<'q>,
    me: u32,
    max_len: usize,
    grace: Option<Duration>,
    mode: Option<&ReadMode>,
) -> Step<ReadClaim<'q>, RecvError> {
    let redeliver = mode.is_some_and(|m| m.redeliver);
    match yield_to_turns(grace, || ring.try_claim_read_with(me, max_len, redeliver)) {
        Ok(ReadAttempt::Claimed(c)) => {
            if let Some(index) = mode.and_then(|m| m.index.as_ref()) {
                index.store(c.index(), Ordering::Relaxed);
            }
            Step::Ready(c)
        }
        Ok(ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy) => Step::Wait,
        Ok(ReadAttempt::TooLong(needed)) => Step::Fail(RecvError::BufferTooSmall {
            needed,
            available: max_len,
        }),
        Err(e) => Step::Fail(RecvError::Corrupt(e)),
    }
}

/// One read attempt along an unbounded chain: read the head block, and
/// move on (unlinking the drained block) when it is sealed and drained.
/// A message comes with the block that holds it and its chain index.
fn read_chain(
    main: &Arc<Queue>,
    head: &mut Option<Block>,
    me: u32,
    max_len: usize,
    mode: &ReadMode,
) -> Step<Taken, RecvError> {
    let chain = &main.header().chain;
    let mut chased = 0;
    loop {
        let shared_head = match main.chain_indices() {
            Ok((head, _)) => head,
            Err(e) => return Step::Fail(RecvError::Corrupt(e)),
        };
        if head.as_ref().is_none_or(|b| b.index < shared_head) {
            let block = match shared_head {
                0 => Block::main(main),
                k => match main.open_block_cached(k) {
                    Ok(view) => Block { index: k, view },
                    // Closed at end of stream and removed: empty until a
                    // sender starts the next block...
                    Err(OpenError::Segment(SegmentError::NotFound(_)))
                        if chain.tail_block.load(Ordering::Acquire) == k =>
                    {
                        return Step::Wait
                    }
                    // ...and skipped once it has. (A block goes away only
                    // once drained.) Any other failure is reported, never
                    // taken for a drained block.
                    Err(OpenError::Segment(SegmentError::NotFound(_))) if chased < CHASE_LIMIT => {
                        chased += 1;
                        let _ = chain.head_block.compare_exchange(
                            k,
                            k + 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        continue;
                    }
                    Err(OpenError::Segment(e @ SegmentError::PermissionDenied(_))) => {
                        return Step::Fail(RecvError::Unreachable(e.to_string()))
                    }
                    Err(e) => return Step::Fail(RecvError::Corrupt(CorruptError(e.to_string()))),
                },
            };
            *head = Some(block);
        }
        let block = head.as_ref().expect("just set");
        let ring = block.ring();
        // The redelivery request as asked; the index in the chain's terms,
        // told below (not the block's, which `attempt_read` would tell).
        let block_mode = ReadMode {
            redeliver: mode.redeliver,
            index: None,
        };
        match attempt_read(&ring, me, max_len, None, Some(&block_mode)) {
            Step::Wait => {}
            other => {
                if let (Step::Ready(c), Some(index)) = (&other, &mode.index) {
                    index.store(
                        chain_message_index(block.index, c.index()),
                        Ordering::Relaxed,
                    );
                }
                let at = (block.index, block.view.end);
                // SAFETY: a claim on this block's ring, kept with its Arc.
                return other.map(|c| (block.q().clone(), unsafe { c.extend() }, at));
            }
        }
        let k = block.index;
        if chain.tail_block.load(Ordering::Acquire) <= k {
            return Step::Wait;
        }
        if !ring.sealed() {
            // Senders moved on past a block they did not seal (one was
            // frozen in its turn): once no sender is in it, it ends here,
            // sealed by us; read what it holds first.
            if ring.head_pos() < ring.tail_pos() || ring.writing_at_head() {
                return Step::Wait;
            }
            match ring.close(me) {
                Ok(false) if chased < CHASE_LIMIT => {
                    chased += 1;
                    continue;
                }
                Ok(_) => return Step::Wait,
                Err(e) => return Step::Fail(RecvError::Corrupt(e)),
            }
        }
        if ring.head_pos() < block.view.end {
            return Step::Wait;
        }
        if chain
            .head_block
            .compare_exchange(k, k + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && k > 0
        {
            // Kept as a spare, or removed (readers still holding a slot
            // keep their mapping; see `Queue::retire_block`).
            main.retire_block(k, &block.view);
        }
    }
}
