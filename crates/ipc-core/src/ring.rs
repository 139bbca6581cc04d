//! The ring a queue holds: packed records in a ring of bytes
//! ([`PackedRing`]), in single mode, shared by many, or as the write-once
//! laps of an unbounded chain's blocks. The layers above use this one
//! type, the seam where another engine (the fixed-size slots it replaced,
//! or a broadcast ring) plugs in.

pub use crate::claim::{
    Census, HeadCache, ReadAttempt, ReadClaim, Recovered, WriteClaim, MAX_OWNER,
};
pub use crate::packed::{PackedRing, Side, WriteAttempt};

use crate::error::CorruptError;
#[cfg(any(test, loom, feature = "internals"))]
use crate::layout::Cursor;

/// A view of a queue's ring.
#[derive(Debug, Clone, Copy)]
pub enum Ring<'a> {
    /// Packed records.
    Packed(PackedRing<'a>),
}

macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            Ring::Packed($r) => $e,
        }
    };
}

impl<'a> Ring<'a> {
    /// True for one writer and one reader at a time.
    pub fn is_single(&self) -> bool {
        matches!(self, Ring::Packed(r) if !r.is_shared())
    }

    /// The same ring as a write-once view of the lap ending at `end` (a
    /// block of an unbounded chain: see [`PackedRing::with_end`]).
    pub fn with_end(self, end: u64) -> Self {
        match self {
            Ring::Packed(r) => Ring::Packed(r.with_end(end)),
        }
    }

    /// True once a write-once ring reached its end.
    pub fn sealed(&self) -> bool {
        each!(self, r => r.sealed())
    }

    /// The first header of the lap after a write-once packed view's (see
    /// [`PackedRing::clear_next_lap`]).
    pub fn next_lap_header(&self) -> u64 {
        match self {
            Ring::Packed(r) => r.next_lap_header(),
        }
    }

    /// See [`PackedRing::clear_next_lap`].
    pub fn clear_next_lap(&self, seen: u64) {
        let Ring::Packed(r) = self;
        r.clear_next_lap(seen);
    }

    /// Position of the next read.
    pub fn head_pos(&self) -> u64 {
        each!(self, r => r.head_pos())
    }

    /// Position of the next write.
    pub fn tail_pos(&self) -> u64 {
        each!(self, r => r.tail_pos())
    }

    /// Most messages queued at once.
    pub fn limit(&self) -> u64 {
        each!(self, r => r.limit())
    }

    /// Largest payload.
    pub fn max_message(&self) -> usize {
        each!(self, r => r.max_message())
    }

    /// Messages queued or in flight.
    pub fn len(&self) -> u64 {
        each!(self, r => r.len())
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        each!(self, r => r.is_empty())
    }

    /// What the ring really holds (a slow path, for status displays).
    pub fn census(&self) -> Census {
        each!(self, r => r.census())
    }

    /// Bytes of messages held, and the ring's size.
    pub fn bytes(&self) -> (u64, u64) {
        each!(self, r => (r.bytes_used(), r.size()))
    }

    /// A send in one step, if nothing but a plain record is due (see
    /// [`PackedRing::try_send_now`]); false: nothing done.
    #[inline]
    pub fn try_send_now(
        &self,
        owner: u32,
        msg: &[u8],
        cache: &mut HeadCache,
    ) -> Result<bool, CorruptError> {
        each!(self, r => r.try_send_now(owner, msg, cache))
    }

    /// True if something committed waits at the head (see
    /// [`PackedRing::head_committed`]).
    #[inline]
    pub fn head_committed(&self) -> bool {
        each!(self, r => r.head_committed())
    }

    /// A receive in one step, if a plain message that fits `out` is at the
    /// head (see [`PackedRing::try_recv_now`]): its length and index.
    #[inline]
    pub fn try_recv_now(
        &self,
        owner: u32,
        out: &mut [u8],
        redeliver: bool,
    ) -> Result<Option<(usize, u64)>, CorruptError> {
        each!(self, r => r.try_recv_now(owner, out, redeliver))
    }

    /// Claims room for a message of up to `want` bytes for `owner`, or
    /// `None` if the ring is full; `cache` is the writer's private copy of
    /// the reader's progress.
    #[inline]
    pub fn try_claim_write(
        &self,
        owner: u32,
        want: usize,
        cache: &mut HeadCache,
    ) -> Result<Option<WriteClaim<'a>>, CorruptError> {
        self.try_claim_write_with(owner, want, cache, true)
    }

    /// [`Ring::try_claim_write`]; with `exact` false, a packed ring counts
    /// only the room its reader published lazily (for waiting writers:
    /// see [`PackedRing::try_claim_write`]).
    #[inline]
    pub fn try_claim_write_with(
        &self,
        owner: u32,
        want: usize,
        cache: &mut HeadCache,
        exact: bool,
    ) -> Result<Option<WriteClaim<'a>>, CorruptError> {
        Ok(self.try_write(owner, want, cache, exact)?.claimed())
    }

    /// [`Ring::try_claim_write_with`], telling a full ring from another
    /// writer's turn on a shared packed ring.
    #[inline]
    pub fn try_write(
        &self,
        owner: u32,
        want: usize,
        cache: &mut HeadCache,
        exact: bool,
    ) -> Result<WriteAttempt<'a>, CorruptError> {
        match self {
            Ring::Packed(r) => r.try_write(owner, want, cache, exact),
        }
    }

    /// The writable payload of a claim.
    ///
    /// # Panics
    /// If the claim was not made on this ring.
    #[inline]
    pub fn payload_mut<'c>(&self, claim: &'c mut WriteClaim<'_>) -> &'c mut [u8] {
        each!(self, r => r.payload_mut(claim))
    }

    /// Publishes a claim holding `len` bytes; a non-zero `tag` becomes the
    /// ring's last tag in the same step (see [`PackedRing::commit_tagged`]).
    #[inline]
    pub fn commit(&self, claim: WriteClaim<'_>, len: usize, tag: u64) -> Result<(), CorruptError> {
        each!(self, r => r.commit_tagged(claim, len, tag))
    }

    /// The tag of the last tagged message committed (see
    /// [`PackedRing::last_tag`]); `None` while another holds the lock.
    pub fn last_tag(&self, owner: u32) -> Result<Option<u64>, CorruptError> {
        each!(self, r => r.last_tag(owner))
    }

    /// The last tag and 1 + its record's position (see
    /// [`PackedRing::last_tag_at`]).
    pub fn last_tag_at(&self, owner: u32) -> Result<Option<(u64, u64)>, CorruptError> {
        each!(self, r => r.last_tag_at(owner))
    }

    /// The tag of the last tagged rendezvous offer a receiver took,
    /// withdrawing a dead sender's offer still waiting (see
    /// [`PackedRing::last_offer_tag`]); `None` while a lock it needs is
    /// held.
    pub fn last_offer_tag(
        &self,
        owner: u32,
        gone: impl Fn(u32, u64) -> bool,
    ) -> Result<Option<(u64, bool)>, CorruptError> {
        each!(self, r => r.last_offer_tag(owner, gone))
    }

    /// Names the sender of the tagged offer about to be committed (see
    /// [`PackedRing::set_offer_owner`]).
    pub fn set_offer_owner(&self, index: u32, word: u64) {
        each!(self, r => r.set_offer_owner(index, word))
    }

    /// Gives a claim up without a message.
    pub fn abandon(&self, claim: WriteClaim<'_>) -> Result<(), CorruptError> {
        each!(self, r => r.abandon(claim))
    }

    /// Seals a write-once ring, for `owner` (see [`PackedRing::close`]):
    /// true if not sealed (a writer in it, or a message unread).
    pub fn close(&self, owner: u32) -> Result<bool, CorruptError> {
        match self {
            Ring::Packed(r) => r.close(owner),
        }
    }

    /// Withdraws a committed message no reader has claimed (rendezvous):
    /// `Some(true)` if withdrawn, `Some(false)` if a reader took it,
    /// `None` if the readers' lock is busy (look again).
    pub fn try_retract(&self, pos: u64, owner: u32) -> Result<Option<bool>, CorruptError> {
        match self {
            Ring::Packed(r) => r.try_retract(pos, owner),
        }
    }

    /// True if the message at the head is being written now.
    pub fn writing_at_head(&self) -> bool {
        each!(self, r => r.writing_at_head())
    }

    /// Whether a message of the largest size would not fit now (its bytes
    /// may fill before its count).
    pub fn is_full_by_bytes(&self) -> bool {
        each!(self, r => r.is_full_for(r.max_message()))
    }

    /// True once the message committed at `pos` was taken by a reader
    /// (rendezvous).
    pub fn was_taken(&self, pos: u64) -> bool {
        each!(self, r => r.was_taken(pos))
    }

    /// True while another process holds `side`'s lock of a shared packed
    /// ring: a claim of that side is being made or used now.
    pub fn locked(&self, side: Side) -> bool {
        matches!(self, Ring::Packed(r) if r.locked(side))
    }

    /// The attachment index holding `side`'s lock of a shared packed ring,
    /// and the lock word.
    pub fn lock_holder(&self, side: Side) -> Option<(u32, u64)> {
        match self {
            Ring::Packed(r) => r.lock_holder(side),
        }
    }

    /// Claims the next message for `owner`.
    #[inline]
    pub fn try_claim_read(
        &self,
        owner: u32,
        max_len: usize,
    ) -> Result<ReadAttempt<'a>, CorruptError> {
        self.try_claim_read_with(owner, max_len, false)
    }

    /// As [`PackedRing::try_claim_read_with`].
    #[inline]
    pub fn try_claim_read_with(
        &self,
        owner: u32,
        max_len: usize,
        redeliver: bool,
    ) -> Result<ReadAttempt<'a>, CorruptError> {
        each!(self, r => r.try_claim_read_with(owner, max_len, redeliver))
    }

    /// The payload of a held message.
    ///
    /// # Panics
    /// If the claim was not made on this ring.
    #[inline]
    pub fn payload_of<'c>(&self, claim: &'c ReadClaim<'_>) -> &'c [u8] {
        each!(self, r => r.payload_of(claim))
    }

    /// Frees a held message; true if another reader waited for the turn.
    #[inline]
    pub fn release(&self, claim: ReadClaim<'_>) -> Result<bool, CorruptError> {
        each!(self, r => r.release(claim))
    }

    /// See [`PackedRing::put_back`]: true if another reader waited for
    /// the readers' turn.
    pub fn put_back(&self, claim: ReadClaim<'_>) -> Result<bool, CorruptError> {
        match self {
            Ring::Packed(r) => r.put_back(claim),
        }
    }

    /// See [`PackedRing::release_detached`] (write-once views only): true
    /// if another reader waited for the readers' turn.
    pub fn release_detached(&self, claim: &ReadClaim<'_>) -> Result<bool, CorruptError> {
        match self {
            Ring::Packed(r) => r.release_detached(claim),
        }
    }

    /// True while a reader's claim holds the head at `pos` (packed rings).
    pub fn reading_at(&self, pos: u64) -> bool {
        matches!(self, Ring::Packed(r) if r.reading_at(pos))
    }

    /// In single mode (a packed ring), ends the read a dead reader left
    /// marked.
    ///
    /// # Safety
    /// As [`PackedRing::recover_single_reader`].
    pub unsafe fn recover_single_reader(&self) -> Recovered {
        match self {
            // SAFETY: the caller's promise, passed on.
            Ring::Packed(r) => unsafe { r.recover_single_reader() },
        }
    }

    /// In single mode (a packed ring), repairs what a dead writer left.
    ///
    /// # Safety
    /// As [`PackedRing::recover_single_writer`].
    pub unsafe fn recover_single_writer(&self) -> Recovered {
        match self {
            // SAFETY: the caller's promise, passed on.
            Ring::Packed(r) => unsafe { r.recover_single_writer() },
        }
    }

    /// Repairs the claim `owner` left under a shared ring's lock (a
    /// single-mode ring marks claims in its cursors, repaired by the
    /// single-mode calls).
    ///
    /// # Safety
    /// As [`PackedRing::recover_owner`].
    pub unsafe fn recover_owner(&self, owner: u32) -> Recovered {
        // SAFETY: the caller's promise, passed on.
        each!(self, r => unsafe { r.recover_owner(owner) })
    }

    /// See [`PackedRing::recover_owner_counting`].
    ///
    /// # Safety
    /// As [`PackedRing::recover_owner`].
    pub unsafe fn recover_owner_counting(&self, owner: u32, count: impl FnMut(Recovered)) {
        match self {
            // SAFETY: the caller's promise, passed on.
            Ring::Packed(r) => unsafe { r.recover_owner_counting(owner, count) },
        }
    }

    /// Frees a shared packed ring's lock still holding `word` after
    /// repairing its holder's claim (see [`PackedRing::release_stale_lock`]).
    ///
    /// # Safety
    /// As [`PackedRing::release_stale_lock`].
    pub unsafe fn release_stale_lock(&self, side: Side, word: u64, count: impl FnOnce(Recovered)) {
        match self {
            // SAFETY: the caller's promise, passed on.
            Ring::Packed(r) => unsafe { r.release_stale_lock(side, word, count) },
        }
    }
}
#[cfg(any(test, loom, feature = "internals"))]
/// A packed ring on the heap of one process, for tests, fuzzing, Miri
/// and model checking (under loom, its header words are loom's atomics in
/// an array beside the bytes).
///
/// ```
/// use ipc_core::ring::{HeapPackedRing, ReadAttempt};
/// let heap = HeapPackedRing::new(256, 8, 64);
/// let ring = heap.ring();
/// let mut claim = ring.try_claim_write(0, 64, &mut Default::default())?.expect("room");
/// ring.payload_mut(&mut claim)[..2].copy_from_slice(b"hi");
/// ring.commit(claim, 2, 0)?;
/// let ReadAttempt::Claimed(read) = ring.try_claim_read(1, 64)? else { panic!() };
/// assert_eq!(ring.payload_of(&read), b"hi");
/// ring.release(read)?;
/// # Ok::<(), ipc_core::CorruptError>(())
/// ```
#[derive(Debug)]
pub struct HeapPackedRing {
    tail: Cursor,
    head: Cursor,
    freed: Cursor,
    /// The ring's bytes, interior-mutable (written through pointers while
    /// other threads hold `&self`), 8-aligned.
    data: Box<[std::cell::UnsafeCell<u64>]>,
    #[cfg(loom)]
    words: Box<[crate::atomic::AtomicU64]>,
    limit: u32,
    max_message: usize,
}

#[cfg(any(test, loom, feature = "internals"))]
impl HeapPackedRing {
    /// A ring of `size` bytes (a power of two, at least 256) holding at
    /// most `limit` messages of up to `max_message` bytes.
    ///
    /// # Panics
    /// If the sizes are out of range.
    pub fn new(size: u64, limit: u32, max_message: usize) -> HeapPackedRing {
        assert!(
            size.is_power_of_two() && size >= crate::packed::MIN_RING,
            "size must be a power of two >= {}",
            crate::packed::MIN_RING
        );
        assert!(
            max_message as u64 <= crate::packed::max_message_for(size),
            "max_message too large for the ring"
        );
        assert!(limit >= 1, "limit must be at least 1");
        let words = (size / 8) as usize;
        HeapPackedRing {
            tail: Cursor::default(),
            head: Cursor::default(),
            freed: Cursor::default(),
            data: (0..words).map(|_| std::cell::UnsafeCell::new(0)).collect(),
            #[cfg(loom)]
            words: (0..words).map(|_| crate::atomic::AtomicU64::new(0)).collect(),
            limit,
            max_message,
        }
    }

    /// The ring view over this memory, shared by many writers and readers
    /// taking turns under its lock words (nobody is woken: waiters poll).
    pub fn shared_ring(&self) -> Ring<'_> {
        let Ring::Packed(r) = self.ring();
        Ring::Packed(r.shared(None, None))
    }

    /// The ring view over this memory.
    pub fn ring(&self) -> Ring<'_> {
        let data = self.data.as_ptr() as *mut u8;
        #[cfg(not(loom))]
        let words = data as *const crate::atomic::AtomicU64;
        #[cfg(loom)]
        let words = self.words.as_ptr();
        // SAFETY: `data` holds `size` zeroed, 8-aligned, interior-mutable
        // bytes alive as long as `self` (the header words are read as
        // atomics of the same size and alignment as u64, or, under loom,
        // live in `words`); the cursors too; sizes checked in `new`.
        Ring::Packed(unsafe {
            PackedRing::new(
                (&self.tail, &self.head, &self.freed),
                data,
                words,
                self.data.len() as u64 * 8,
                self.limit,
                self.max_message,
            )
        })
    }
}
