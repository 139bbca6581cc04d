//! A ring of bytes holding packed, variable-length records: the engine of
//! bounded and rendezvous buffers and mailboxes. One writer and one reader
//! at a time use it directly (single mode); shared by many, each side's
//! claims are taken one at a time under that side's lock word (see
//! "Shared rings" below).
//!
//! A message takes an 8-byte header plus its length rounded up to 8, so
//! several small messages share a cache line, and a buffer costs its byte
//! budget, not `capacity × max_message`. The reader learns that a record
//! is committed from the record's own header (stored with Release after
//! the payload), never from a cursor on the writer's cache line; the writer
//! re-reads the reader's position only when its private copy says the ring
//! is full.
//!
//! ```text
//! record at position p:  [ header u64 | payload, len bytes | pad to 8 ]
//! header:                COMMIT | PAD? | seq (30 bits) << 32 | len
//! ```
//!
//! * Before committing a record at `p` of `r` bytes, the writer zeroes the
//!   header at `p + r`: the header at the end of the committed records is
//!   always zero, so the reader never mistakes stale bytes of an earlier
//!   lap for a record.
//! * A record never straddles the end of the ring: the writer fills the
//!   rest with a padding record (`PAD`) and starts again at offset 0.
//! * `seq` is the message's index (mod 2^30); a padding record carries the
//!   index of the message after it. The reader checks it against its own
//!   count, and survivors use it to repair a dead peer's cursor exactly.
//!
//! Cursors (each on cache lines of its own):
//!
//! | cursor  | written by | `pos`                                   | `count`              |
//! |---------|------------|-----------------------------------------|----------------------|
//! | `tail`  | writer     | next record, `WRITING` while claimed    | messages committed   |
//! | `head`  | reader     | next record, or the held one │ `READING`| messages released    |
//! | `freed` | reader     | a recent `head.pos` (published lazily)  | a recent `head.count`|
//!
//! The writer checks room against its private copy, then `freed` (a line
//! the reader writes once per quarter of the ring), and only then the
//! exact `head`, so a full ring is still reported exactly (crossbeam's
//! `try_send` succeeds right after a `recv`).
//!
//! Room for broadcast (publish/subscribe): records describe themselves
//! (length, sequence, padding) and readers never write into them, so
//! several subscribers can each keep a `head` over the same records; the
//! writer's room is then the slowest subscriber's position (the minimum
//! of their `freed` copies), and each subscriber's death is repaired on
//! its own cursor alone. Nothing in the record layout needs to change.
//!
//! Crash repair: a writer killed anywhere leaves committed records that
//! its cursor may not count yet; [`PackedRing::recover_single_writer`]
//! walks them (bounded by the ring size) and moves the cursor on. A reader
//! killed holding a record (its position marked `READING`) loses that one
//! message, counted ([`PackedRing::recover_single_reader`]). Every header,
//! length and position read from shared memory is validated once, and only
//! the validated copy is used.
//!
//! Shared rings (many writers, many readers): each side's cursor carries a
//! lock word naming the holder (its attachment index, plus a turn count so
//! that an old holder's token never matches a new one). A writer takes the
//! write lock with one compare-and-swap, claims, fills and commits exactly
//! as a single writer does, and gives the lock back; readers likewise with
//! the read lock. So every single-mode invariant and repair holds as it is:
//! a dead holder's claim is repaired by the reaper exactly as a dead single
//! writer's or reader's, then its lock is freed. A waiter that finds the
//! lock taken marks it `WAITED`, and the holder's release wakes that side.
//! The price: one side's copies are serialized (the other side's run in
//! parallel), and a claim held long (zero copy) holds that side up.
//! A rendezvous sender that gives up withdraws its record under the read
//! lock (`WITHDRAWN`); readers pass over it, counting it.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use crate::atomic::AtomicU64;
use crate::claim::{
    revoked, Census, HeadCache, ReadAttempt, ReadClaim, Recovered, WriteClaim,
};
use crate::error::CorruptError;
use crate::layout::{Counters, Cursor};
use crate::sync::EventCount;

/// Bytes of a record header.
pub const RECORD_HEADER: u64 = 8;

const COMMIT: u64 = 1 << 63;
const PAD: u64 = 1 << 62;
const SEQ_SHIFT: u32 = 32;
const SEQ_BITS: u32 = 30;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// A record a rendezvous sender withdrew (shared rings): readers skip it.
const WITHDRAWN: u64 = 1 << 31;
const LEN_MASK: u64 = (1 << 31) - 1;

/// Lock word (shared rings): the holder's attachment index + 1 (0: free)
/// in the low 16 bits, `WAITED` if someone waits for it, and a turn count
/// from bit 32, bumped by every acquisition.
const HOLDER: u64 = 0xFFFF;
const WAITED: u64 = 1 << 16;
const TURN: u64 = 1 << 32;
/// Exchanges tried on a lock word that keeps moving.
const LOCK_RETRIES: u32 = 1000;

/// Set in `tail.pos` while the writer holds a claim at that position.
const WRITING: u64 = 1 << 63;
/// Set in `head.pos` while the reader holds the record at that position.
const READING: u64 = 1 << 63;

/// Positions stay below this: 2^62 bytes (about three years at 50 GB/s).
/// A larger value can only come from a scribbling peer.
const POS_LIMIT: u64 = 1 << 62;

/// Message counts stay below this (as positions do): a larger one can
/// only come from a scribbling peer, and would overflow.
const COUNT_LIMIT: u64 = 1 << 62;

fn count_out_of_range(which: &str, count: u64) -> CorruptError {
    CorruptError(format!("{which} message count {count:#x} out of range"))
}

/// Smallest ring.
pub const MIN_RING: u64 = 256;

/// The end of a ring that is not write-once (see [`PackedRing::with_end`]).
const NO_END: u64 = u64::MAX;

/// Bytes a record of `len` payload bytes takes.
#[inline]
pub fn record_size(len: usize) -> u64 {
    RECORD_HEADER + (len as u64).div_ceil(8) * 8
}

/// The smallest ring that always has room for one record of `max_message`
/// bytes, wherever the writer stands: the record, a padding record
/// shorter than it, and the header zeroed after it.
pub fn min_ring_for(max_message: u32) -> u64 {
    (2 * record_size(max_message as usize) + RECORD_HEADER)
        .next_power_of_two()
        .max(MIN_RING)
}

/// The largest message a ring of `size` bytes takes (see [`min_ring_for`]).
pub fn max_message_for(size: u64) -> u64 {
    ((size - RECORD_HEADER) / 2).saturating_sub(RECORD_HEADER) / 8 * 8
}

fn header(seq: u64, len: u64, pad: bool) -> u64 {
    COMMIT | if pad { PAD } else { 0 } | (seq & SEQ_MASK) << SEQ_SHIFT | len
}

fn seq_of(h: u64) -> u64 {
    (h >> SEQ_SHIFT) & SEQ_MASK
}

/// A view of a packed ring inside a mapping (or on the heap).
#[derive(Debug, Clone, Copy)]
pub struct PackedRing<'a> {
    tail: &'a Cursor,
    head: &'a Cursor,
    freed: &'a Cursor,
    data: *mut u8,
    /// The header words: `data` itself, read as 8-byte atomics, except
    /// under loom (whose atomics are not plain memory: a parallel array).
    words: *const AtomicU64,
    size: u64,
    limit: u64,
    max_message: usize,
    /// A write-once view (a block of an unbounded chain) holds positions
    /// below this only, one lap of the ring ending here; [`NO_END`] for a
    /// ring that laps on.
    end: u64,
    /// Many writers and readers, taking turns under the lock words.
    shared: bool,
    /// Shared rings: the events to notify when a lock that someone waits
    /// for is given back (writers', readers').
    wake: Option<(&'a EventCount, &'a EventCount)>,
    /// Shared rings: the queue's loss counters, for what taking back a
    /// leaked claim repairs.
    counters: Option<&'a Counters>,
    _memory: PhantomData<&'a ()>,
}

/// What a writer found.
#[derive(Debug)]
pub enum WriteAttempt<'a> {
    /// Room, claimed.
    Claimed(WriteClaim<'a>),
    /// No room.
    Full,
    /// Another writer of a shared ring is making its claim now.
    Busy,
}

impl<'a> WriteAttempt<'a> {
    /// The claim, if one was made.
    pub fn claimed(self) -> Option<WriteClaim<'a>> {
        match self {
            WriteAttempt::Claimed(c) => Some(c),
            WriteAttempt::Full | WriteAttempt::Busy => None,
        }
    }
}

impl<'a> From<Option<WriteClaim<'a>>> for WriteAttempt<'a> {
    fn from(c: Option<WriteClaim<'a>>) -> Self {
        c.map_or(WriteAttempt::Full, WriteAttempt::Claimed)
    }
}

/// What taking a lock found.
enum Locked {
    /// Taken: the token to give it back with.
    Got(u64),
    /// Another holds it (we are announced as waiting).
    Busy,
    /// We hold it already: a claim of ours was leaked (`mem::forget`).
    Ours(u64),
}

/// Which side of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The writers' (tail).
    Write,
    /// The readers' (head).
    Read,
}

// SAFETY: the ring memory is shared between processes by design; header
// words are accessed only as atomics, payload bytes only by the holder of
// the claim that covers them (ordered by the headers and cursors).
unsafe impl Send for PackedRing<'_> {}
// SAFETY: as above.
unsafe impl Sync for PackedRing<'_> {}

impl<'a> PackedRing<'a> {
    /// A view over a ring of `size` bytes at `data`, zero-filled when it
    /// was created.
    ///
    /// # Safety
    /// `data` must point to `size` bytes (a power of two, at least
    /// [`MIN_RING`]), 8-aligned, mapped for `'a`, that only packed views
    /// with the same geometry use; `words` must be `data` (or, under loom,
    /// `size / 8` atomics); the cursors live as long. At most `limit`
    /// messages are queued at once; `max_message` is at most
    /// [`max_message_for`]`(size)`. Only one writer and one reader use it
    /// at a time.
    pub unsafe fn new(
        cursors: (&'a Cursor, &'a Cursor, &'a Cursor),
        data: *mut u8,
        words: *const AtomicU64,
        size: u64,
        limit: u32,
        max_message: usize,
    ) -> Self {
        debug_assert!(size.is_power_of_two() && size >= MIN_RING);
        debug_assert!(max_message as u64 <= max_message_for(size));
        PackedRing {
            tail: cursors.0,
            head: cursors.1,
            freed: cursors.2,
            data,
            words,
            size,
            limit: limit.max(1) as u64,
            max_message,
            end: NO_END,
            shared: false,
            wake: None,
            counters: None,
            _memory: PhantomData,
        }
    }

    /// The same ring, used by many writers and readers taking turns under
    /// the lock words; `wake` gives the events that waiters for the
    /// writers' and the readers' lock sleep on, `counters` the queue's
    /// loss counters (a leaked claim taken back is counted there).
    pub fn shared(
        mut self,
        wake: Option<(&'a EventCount, &'a EventCount)>,
        counters: Option<&'a Counters>,
    ) -> Self {
        self.shared = true;
        self.wake = wake;
        self.counters = counters;
        self
    }

    /// True if many writers and readers share the ring.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The same ring as a write-once view of the lap that ends at `end` (a
    /// multiple of the ring's size): a block of an unbounded chain. Its
    /// writers never wrap: a record that does not fit before `end`, or
    /// finds the ring full by count, seals the lap instead (a padding
    /// record to `end`), and the writer moves on to the next block. Its
    /// readers read nothing at or beyond `end` (the next lap belongs to
    /// views that know it).
    ///
    /// # Panics
    /// If `end` is not a multiple of the ring's size.
    pub fn with_end(mut self, end: u64) -> Self {
        assert!(end.is_multiple_of(self.size) && end > 0, "a lap ends at a multiple of the ring's size");
        self.end = end;
        self
    }

    /// True once a write-once view's lap is sealed (never for a ring that
    /// laps on).
    pub fn sealed(&self) -> bool {
        self.end != NO_END && self.tail_pos() >= self.end
    }

    /// Messages written in a write-once view's lap, the writer having
    /// written `count` in all: told by the sequence number of the lap's
    /// first record (none yet if its header is still zero). Only the
    /// decision to seal uses it: a scribbled header seals early or late,
    /// never past what the ring's count and bytes bound.
    fn written_in_lap(&self, count: u64) -> u64 {
        let first = self.word(self.end - self.size).load(Ordering::Acquire);
        if first & COMMIT == 0 {
            return 0;
        }
        count.wrapping_sub(seq_of(first)) & SEQ_MASK
    }

    /// True if `pos` (the read cursor, after `count` messages) is the start
    /// of a write-once lap that was sealed without a message, yet its first
    /// header reads zero. Two laps of one block sealed empty in a row start
    /// with the same padding header, so a recycler that slept between
    /// reading the older and clearing it (`clear_next_lap`) may clear the
    /// newer: the lap is then still over and empty (the writer's cursor
    /// at its end, no message counted in it), and is read as such.
    fn empty_lap_sealed(&self, pos: u64, count: u64) -> bool {
        self.end != NO_END
            && pos == self.end - self.size
            && self.tail.pos.load(Ordering::Acquire) == self.end
            && self.tail.count.load(Ordering::Acquire) == count
    }

    /// Seals the lap at `pos` (the write cursor, after `count` messages)
    /// with a padding record to its end: no claim in it then. By the
    /// writer of the moment, whose `cache` (single mode) learns where it
    /// left the cursor.
    fn seal_at(&self, pos: u64, count: u64, cache: &mut HeadCache) {
        self.word(pos)
            .store(header(count, self.end - pos, true), Ordering::Release);
        self.tail.pos.store(self.end, Ordering::Release);
        if !self.shared {
            cache.own = Some((self.end, count));
        }
    }

    /// Seals a write-once view's lap unless a writer is in it now or a
    /// message in it is still unread, taking the writers' lock for `owner`
    /// (a receiver ending a block the chain has moved past, or the end of
    /// the stream): `Ok(true)` if not sealed for that reason, `Ok(false)`
    /// once sealed. (A message committed after the caller found the lap
    /// empty is read, not sealed behind.)
    pub fn close(&self, owner: u32) -> Result<bool, CorruptError> {
        if self.end == NO_END || self.sealed() {
            return Ok(false);
        }
        if !self.shared {
            return Err(CorruptError(
                "a single-mode ring's lap is sealed by its writer only".to_owned(),
            ));
        }
        let Some(token) = self.take(Side::Write, owner)? else {
            return Ok(true);
        };
        let raw = self.tail.pos.load(Ordering::Relaxed);
        let count = self.tail.count.load(Ordering::Relaxed);
        let result = if raw & WRITING != 0 || self.head_pos() != raw {
            Ok(true)
        } else if raw >= POS_LIMIT || count >= COUNT_LIMIT {
            Err(CorruptError(format!("write cursor {raw:#x} after {count} messages out of range")))
        } else {
            if raw < self.end {
                // Shared: writers take the cursor as they find it.
                self.seal_at(raw, count, &mut HeadCache::default());
            }
            Ok(false)
        };
        self.give_back(Side::Write, token);
        result
    }

    /// The first header word of the lap after a write-once view's: what a
    /// drained block's next lap starts from (see
    /// [`PackedRing::clear_next_lap`]).
    pub fn next_lap_header(&self) -> u64 {
        self.word(self.end).load(Ordering::Acquire)
    }

    /// Zeroes the first header of the lap after this view's, if it still is
    /// `seen` (this lap's first record, long read): a block recycled for
    /// its next lap must not show it as a new message. A record committed
    /// there meanwhile (the next lap began) differs from `seen` in its
    /// sequence number and is left alone.
    pub fn clear_next_lap(&self, seen: u64) {
        if self.end != NO_END && seen != 0 {
            let _ = self.word(self.end).compare_exchange(
                seen,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn cursor(&self, side: Side) -> &'a Cursor {
        match side {
            Side::Write => self.tail,
            Side::Read => self.head,
        }
    }

    fn event(&self, side: Side) -> Option<&'a EventCount> {
        self.wake.map(|(w, r)| match side {
            Side::Write => w,
            Side::Read => r,
        })
    }

    /// Takes `side`'s lock for `owner`, or announces `owner` as waiting.
    fn lock(&self, side: Side, owner: u32) -> Result<Locked, CorruptError> {
        let lock = &self.cursor(side).lock;
        let me = owner as u64 + 1;
        let mut w = lock.load(Ordering::Relaxed);
        // A failed exchange means the word moved (someone took, gave back or
        // marked the lock): retry until we hold it or are marked waiting,
        // so that a waiter going to sleep is always woken by the release.
        // Bounded, against a scribbler flipping the word: then busy (the
        // caller looks again within a liveness period).
        for _ in 0..LOCK_RETRIES {
            let holder = w & HOLDER;
            if w & (TURN - 1) & !(HOLDER | WAITED) != 0 {
                return Err(CorruptError(format!("lock word {w:#x} is no lock")));
            }
            // (A holder no process can be, above the attachment table, is
            // waited for like any other: the reaper frees it.)
            if holder == me {
                return Ok(Locked::Ours(w & !WAITED));
            }
            let next = match holder {
                // The turn count moves on; a waiter's mark stays, so that
                // our release wakes it.
                0 => w.wrapping_add(TURN) | me,
                _ if w & WAITED != 0 => return Ok(Locked::Busy),
                _ => w | WAITED,
            };
            // Strong: a failure means the word moved (a weak one may fail
            // spuriously, which would count against the retries).
            match lock.compare_exchange(w, next, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) if holder == 0 => return Ok(Locked::Got(next & !WAITED)),
                Ok(_) => return Ok(Locked::Busy),
                Err(now) => w = now,
            }
        }
        Ok(Locked::Busy)
    }

    /// Gives `side`'s lock back if `token` still holds it, waking those
    /// who wait for it; true if someone was marked waiting (and woken
    /// through this ring's event, if it has one).
    #[inline(always)]
    fn unlock(&self, side: Side, token: u64) -> bool {
        // Nobody marked waiting, the common case: one exchange.
        let lock = &self.cursor(side).lock;
        if lock
            .compare_exchange(token, token & !HOLDER, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return false;
        }
        self.unlock_marked(side, token)
    }

    /// [`PackedRing::unlock`] once the word was not exactly `token`: a
    /// waiter's mark on it, or no longer ours.
    #[inline(never)]
    fn unlock_marked(&self, side: Side, token: u64) -> bool {
        let lock = &self.cursor(side).lock;
        let mut w = lock.load(Ordering::Relaxed);
        loop {
            if w & !WAITED != token {
                return false;
            }
            match lock.compare_exchange_weak(w, token & !HOLDER, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    let waited = w & WAITED != 0;
                    if waited {
                        if let Some(ev) = self.event(side) {
                            ev.notify();
                        }
                    }
                    return waited;
                }
                Err(now) => w = now,
            }
        }
    }

    /// Takes `side`'s lock (shared rings), taking back one we leaked: a
    /// claim of ours forgotten without commit or release is repaired as a
    /// dead holder's would be. `Ok(None)`: another holds it.
    #[inline(always)]
    fn take(&self, side: Side, owner: u32) -> Result<Option<u64>, CorruptError> {
        // A free lock, nobody marked waiting, the common case: one
        // exchange, as `lock` would make it. (Owners are attachment
        // indices, far below the holder field's width.)
        debug_assert!(owner < HOLDER as u32);
        let lock = &self.cursor(side).lock;
        let w = lock.load(Ordering::Relaxed);
        if w & (TURN - 1) == 0 {
            let next = w.wrapping_add(TURN) | (owner as u64 + 1);
            if lock
                .compare_exchange(w, next, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Some(next));
            }
        }
        self.take_contended(side, owner)
    }

    /// [`PackedRing::take`] once the lock was not simply free.
    #[inline(never)]
    fn take_contended(&self, side: Side, owner: u32) -> Result<Option<u64>, CorruptError> {
        match self.lock(side, owner)? {
            Locked::Got(token) => Ok(Some(token)),
            Locked::Busy => Ok(None),
            Locked::Ours(token) => {
                // SAFETY: we hold the lock, and the claim it was taken for
                // can no longer be used (claims borrow their endpoint,
                // which is calling us now).
                let r = unsafe { self.repair(side) };
                if let Some(c) = self.counters {
                    // (Our own message, if one was put back: no successor
                    // asks which; the index would be the block's.)
                    r.add_to(c, None);
                }
                self.unlock(side, token);
                match self.lock(side, owner)? {
                    Locked::Got(token) => Ok(Some(token)),
                    _ => Ok(None),
                }
            }
        }
    }

    /// True while another process holds `side`'s lock (shared rings).
    pub fn locked(&self, side: Side) -> bool {
        self.shared && self.cursor(side).lock.load(Ordering::Relaxed) & HOLDER != 0
    }

    /// The attachment index holding `side`'s lock and the lock word, if
    /// any (shared rings).
    pub fn lock_holder(&self, side: Side) -> Option<(u32, u64)> {
        if !self.shared {
            return None;
        }
        let w = self.cursor(side).lock.load(Ordering::Acquire);
        let holder = w & HOLDER;
        (holder != 0).then(|| ((holder - 1) as u32, w))
    }

    /// Frees `side`'s lock, if it still is `word`, after repairing what its
    /// holder left: for a lock whose holder cannot be repaired by reaping
    /// (no process that takes this lock is attached at its index: the word
    /// was scribbled).
    ///
    /// # Safety
    /// No process attached at the holder's index may use a claim of this
    /// side (none is, or it is in a role that never takes this lock).
    pub unsafe fn release_stale_lock(
        &self,
        side: Side,
        word: u64,
        count: impl FnOnce(Recovered),
    ) {
        let lock = &self.cursor(side).lock;
        let ours = word.wrapping_add(TURN) & !WAITED;
        if lock
            .compare_exchange(word, ours | (word & WAITED), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        // SAFETY: we hold the lock; nobody holds a claim under it (the
        // caller's promise). Counted before the lock goes (see
        // `recover_owner_counting`).
        count(unsafe { self.repair(side) });
        self.unlock(side, ours);
    }

    /// Repairs what `side`'s claim holder left (see `recover_single_*`).
    ///
    /// # Safety
    /// Nobody may use a claim of that side meanwhile.
    unsafe fn repair(&self, side: Side) -> Recovered {
        // SAFETY: the caller's promise.
        unsafe {
            match side {
                Side::Write => self.repair_writer(),
                Side::Read => {
                    self.finish_withdrawal();
                    self.repair_reader()
                }
            }
        }
    }

    #[inline]
    fn offset(&self, pos: u64) -> usize {
        (pos & (self.size - 1)) as usize
    }

    /// The header word at `pos` (8-aligned).
    #[inline]
    fn word(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: the offset is masked below `size` and 8-aligned (every
        // position is), so the word lies inside the ring (see `new`).
        unsafe { &*self.words.add(self.offset(pos) / 8) }
    }

    #[inline]
    fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: inside the ring: a record's payload follows its header
        // and never passes the end (checked where records are made).
        unsafe { self.data.add(self.offset(pos) + RECORD_HEADER as usize) }
    }

    /// Ring bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Most messages queued at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Largest payload.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    fn tail_raw(&self) -> (u64, u64) {
        (
            self.tail.pos.load(Ordering::Acquire),
            self.tail.count.load(Ordering::Acquire),
        )
    }

    fn head_raw(&self) -> (u64, u64) {
        (
            self.head.pos.load(Ordering::Acquire),
            self.head.count.load(Ordering::Acquire),
        )
    }

    /// Messages queued or being read, for status (clamped to the limit).
    pub fn len(&self) -> u64 {
        let (_, written) = self.tail_raw();
        let (_, read) = self.head_raw();
        written.saturating_sub(read).min(self.limit)
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes between the reader's and the writer's positions (records,
    /// padding and a claim in progress not counted), clamped to the size.
    pub fn bytes_used(&self) -> u64 {
        let (t, _) = self.tail_raw();
        let (h, _) = self.head_raw();
        (t & !WRITING).saturating_sub(h & !READING).min(self.size)
    }

    /// What the ring holds, for status displays.
    pub fn census(&self) -> Census {
        let (t, written) = self.tail_raw();
        let (h, read) = self.head_raw();
        let reading = u64::from(h & READING != 0);
        Census {
            queued: written.saturating_sub(read).saturating_sub(reading),
            writing: u64::from(t & WRITING != 0),
            reading,
        }
    }

    /// True if a message of `want` bytes would not fit now (by count or
    /// by bytes, from the exact positions).
    pub fn is_full_for(&self, want: usize) -> bool {
        let (t, written) = self.tail_raw();
        let (h, read) = self.head_raw();
        let (t, h) = (t & !WRITING, h & !READING);
        let (_, need) = self.need_at(t, want.min(self.max_message));
        written.saturating_sub(read) >= self.limit || (t + need).saturating_sub(h) > self.size
    }

    /// True if the writer holds a claim at the reader's position: a
    /// message is being written where the reader waits.
    pub fn writing_at_head(&self) -> bool {
        let t = self.tail.pos.load(Ordering::Acquire);
        t & WRITING != 0 && t & !WRITING == self.head_pos()
    }

    /// Position of the next write.
    pub fn tail_pos(&self) -> u64 {
        self.tail.pos.load(Ordering::Acquire) & !WRITING
    }

    /// Position of the next read.
    pub fn head_pos(&self) -> u64 {
        self.head.pos.load(Ordering::Acquire) & !READING
    }

    /// The padding a record of `want` bytes at `pos` needs before it (0,
    /// or the rest of the ring), and the bytes it needs in all: padding,
    /// record, and the header zeroed after it.
    #[inline]
    fn need_at(&self, pos: u64, want: usize) -> (u64, u64) {
        let rec = record_size(want);
        let off = self.offset(pos) as u64;
        let pad = if off + rec > self.size { self.size - off } else { 0 };
        (pad, pad + rec + RECORD_HEADER)
    }

    fn fits(&self, pos: u64, need: u64, count: u64, freed: &HeadCache) -> bool {
        (pos + need).saturating_sub(freed.pos) <= self.size
            && count.saturating_sub(freed.count) < self.limit
    }

    /// Where the writer stands: the write cursor and count, checked
    /// against what the writer's last claim (`own`) can have left there:
    /// the claim's position (abandoned, or a claim leaked with
    /// `mem::forget`, still marked) or the record it committed. The first
    /// claim of a new writer takes the cursor as it finds it (repaired if
    /// its predecessor died).
    #[inline]
    fn writer_position(&self, own: Option<(u64, u64)>) -> Result<(u64, u64), CorruptError> {
        let raw = self.tail.pos.load(Ordering::Relaxed);
        let count = self.tail.count.load(Ordering::Relaxed);
        let Some((p, c)) = own else {
            if raw & WRITING != 0 {
                return Err(CorruptError(format!(
                    "a write claim of position {} is held already",
                    raw & !WRITING
                )));
            }
            if raw >= POS_LIMIT {
                return Err(CorruptError(format!("write cursor {raw:#x} out of range")));
            }
            if count >= COUNT_LIMIT {
                return Err(count_out_of_range("write", count));
            }
            return Ok((raw, count));
        };
        if (raw == p || raw == p | WRITING) && count == c {
            return Ok((p, c));
        }
        let h = self.word(p).load(Ordering::Relaxed);
        let committed = h & (COMMIT | PAD) == COMMIT
            && seq_of(h) == c & SEQ_MASK
            && raw == p + record_size((h & LEN_MASK) as usize)
            && Some(count) == c.checked_add(1);
        if committed {
            return Ok((raw, count));
        }
        Err(CorruptError(format!(
            "the write cursor moved under its writer: {raw:#x} after {count} messages, where the last claim was {p} after {c}"
        )))
    }

    /// Checks what the reader published against the writer's own cursor
    /// (`lazy`: the published copy, which may lag any distance behind).
    fn checked_freed(
        &self,
        pos: u64,
        count: u64,
        seen: HeadCache,
        lazy: bool,
    ) -> Result<HeadCache, CorruptError> {
        // Every message takes at least 8 bytes: more messages between the
        // cursors than that fits no state.
        let crowded = !lazy && (count - seen.count.min(count)) > (pos - seen.pos.min(pos)) / 8;
        if seen.pos > pos
            || (!lazy && pos - seen.pos > self.size)
            || seen.count > count
            || crowded
        {
            return Err(CorruptError(format!(
                "cursors impossible: read {}/{} messages, write {pos}/{count}",
                seen.pos, seen.count
            )));
        }
        Ok(seen)
    }

    /// Claims room for a message of up to `want` bytes, or `None` if the
    /// ring is full. `cache` is the writer's private copy of the reader's
    /// progress: shared memory is read only when it says full. With
    /// `exact` false, only what the reader published lazily counts: a
    /// writer waiting for room then resumes once a quarter of the ring is
    /// free, not as each message goes (which would pull the reader's hot
    /// line once per message); waiters check exactly before they sleep.
    pub fn try_claim_write(
        &self,
        owner: u32,
        want: usize,
        cache: &mut HeadCache,
        exact: bool,
    ) -> Result<Option<WriteClaim<'a>>, CorruptError> {
        Ok(self.try_write(owner, want, cache, exact)?.claimed())
    }

    /// [`PackedRing::try_claim_write`], telling a full ring from another
    /// writer's turn (shared rings).
    #[inline]
    pub fn try_write(
        &self,
        owner: u32,
        want: usize,
        cache: &mut HeadCache,
        exact: bool,
    ) -> Result<WriteAttempt<'a>, CorruptError> {
        if want > self.max_message {
            return Err(CorruptError(format!(
                "a claim of {want} bytes, above the maximum {}",
                self.max_message
            )));
        }
        if !self.shared {
            return self.claim_write(owner, want, cache, exact, 0).map(WriteAttempt::from);
        }
        // Writers spinning on a full ring leave the lock alone.
        if !exact && !self.room_seen(want, cache) {
            return Ok(WriteAttempt::Full);
        }
        let Some(token) = self.take(Side::Write, owner)? else {
            return Ok(WriteAttempt::Busy);
        };
        let claimed = self.claim_write(owner, want, cache, exact, token);
        if !matches!(claimed, Ok(Some(_))) {
            self.unlock(Side::Write, token);
        }
        claimed.map(WriteAttempt::from)
    }

    /// A look without the lock (shared rings): true if the write cursor is
    /// free and the room a writer last knew of, or the reader published,
    /// may take a record of `want` bytes.
    fn room_seen(&self, want: usize, cache: &mut HeadCache) -> bool {
        let (pos, count) = self.tail_raw();
        if pos & WRITING != 0 || pos >= POS_LIMIT {
            return false;
        }
        let (_, need) = self.need_at(pos, want);
        self.fits_or_freed(pos, need, count, cache)
    }

    /// True if `need` bytes at `pos` (after `count` messages) fit by the
    /// writer's copy `cache`, or else once it learns what the reader
    /// published in `freed`. A published position the writer cannot have
    /// reached is ignored: the general path reports it.
    #[inline]
    fn fits_or_freed(&self, pos: u64, need: u64, count: u64, cache: &mut HeadCache) -> bool {
        if self.fits(pos, need, count, cache) {
            return true;
        }
        let freed = (
            self.freed.pos.load(Ordering::Acquire),
            self.freed.count.load(Ordering::Acquire),
        );
        if freed.0 <= pos && freed.1 <= count {
            cache.pos = cache.pos.max(freed.0);
            cache.count = cache.count.max(freed.1);
        }
        self.fits(pos, need, count, cache)
    }

    /// [`PackedRing::try_claim_write`] by the writer of the moment (the
    /// only one, or the holder of the write lock's `token`).
    fn claim_write(
        &self,
        owner: u32,
        want: usize,
        cache: &mut HeadCache,
        exact: bool,
        token: u64,
    ) -> Result<Option<WriteClaim<'a>>, CorruptError> {
        // Shared, other writers move the cursor between our claims: it is
        // taken as found (and checked) under the lock.
        let own = if self.shared { None } else { cache.own };
        let (mut pos, count) = self.writer_position(own)?;
        let write_once = self.end != NO_END;
        if write_once && pos >= self.end {
            return Ok(None);
        }
        let (pad, need) = self.need_at(pos, want);
        if write_once && (pad > 0 || self.written_in_lap(count) >= self.limit) {
            // Write-once: no wrap, and at most `limit` messages a lap. The
            // lap ends here.
            self.seal_at(pos, count, cache);
            return Ok(None);
        }
        if !self.fits(pos, need, count, cache) {
            let lazy = HeadCache {
                pos: self.freed.pos.load(Ordering::Acquire),
                count: self.freed.count.load(Ordering::Acquire),
                own: None,
            };
            let lazy = self.checked_freed(pos, count, lazy, true)?;
            cache.pos = cache.pos.max(lazy.pos);
            cache.count = cache.count.max(lazy.count);
            if !self.fits(pos, need, count, cache) {
                if !exact {
                    return Ok(None);
                }
                // The exact position: a held record is not free yet.
                let (h, c) = self.head_raw();
                let exact = HeadCache {
                    pos: h & !READING,
                    count: c,
                    own: None,
                };
                let exact = self.checked_freed(pos, count, exact, false)?;
                (cache.pos, cache.count) = (exact.pos, exact.count);
                if !self.fits(pos, need, count, cache) {
                    if write_once {
                        // Full by count (a write-once lap never laps its
                        // reader): the lap ends here.
                        self.seal_at(pos, count, cache);
                    }
                    return Ok(None);
                }
            }
        }
        if pad > 0 {
            // Zero the first header of the next lap, then publish the pad.
            self.word(pos + pad).store(0, Ordering::Relaxed);
            self.word(pos)
                .store(header(count, pad, true), Ordering::Release);
            pos += pad;
            self.tail.pos.store(pos, Ordering::Release);
        }
        // The mark lives on the writer's own line: no extra sharing.
        self.tail.pos.store(pos | WRITING, Ordering::Relaxed);
        if !self.shared {
            cache.own = Some((pos, count));
        }
        Ok(Some(WriteClaim {
            pos,
            owner,
            slot: self.payload(pos),
            cap: want,
            token,
            _memory: PhantomData,
        }))
    }

    /// Gives back the lock a claim of `side` was made under (shared
    /// rings); true if a peer of that side waited for it.
    #[inline]
    fn give_back(&self, side: Side, token: u64) -> bool {
        self.shared && self.unlock(side, token)
    }

    /// True if `token` still holds `side`'s lock (always, unshared).
    #[inline]
    fn holds(&self, side: Side, token: u64) -> bool {
        !self.shared || self.cursor(side).lock.load(Ordering::Relaxed) & !WAITED == token
    }

    fn check_claim(&self, pos: u64, slot: *mut u8) {
        assert!(
            std::ptr::eq(slot, self.payload(pos)),
            "a ring claim used on a ring that did not make it"
        );
    }

    /// The writable payload of a claim (the bytes it asked for).
    ///
    /// # Panics
    /// If the claim was not made on this ring.
    pub fn payload_mut<'c>(&self, claim: &'c mut WriteClaim<'_>) -> &'c mut [u8] {
        self.check_claim(claim.pos, claim.slot);
        // SAFETY: the claim belongs to this ring (checked above) and is the
        // writer's (marked in the write cursor): the reader does not look
        // past the uncommitted header, and the room was checked free, so
        // nobody else touches these bytes until we commit.
        unsafe { std::slice::from_raw_parts_mut(claim.slot, claim.cap) }
    }

    /// Publishes a claim holding `len` bytes (at most what it asked for):
    /// the record shrinks to fit. Fails, publishing nothing, if the claim
    /// is no longer the caller's (repaired, or scribbled over).
    pub fn commit(&self, claim: WriteClaim<'_>, len: usize) -> Result<(), CorruptError> {
        self.commit_tagged(claim, len, 0)
    }

    /// [`PackedRing::commit`], and (`tag` non-zero) makes `tag` the ring's
    /// last tag ([`PackedRing::last_tag`]) in the same step: if the writer
    /// is killed anywhere in here, the repair moves the tag exactly when
    /// it keeps the record, so the tag says whether the message went in.
    pub fn commit_tagged(
        &self,
        claim: WriteClaim<'_>,
        len: usize,
        tag: u64,
    ) -> Result<(), CorruptError> {
        self.check_claim(claim.pos, claim.slot);
        self.commit_at(claim.pos, claim.token, len.min(claim.cap), tag)
    }

    /// [`PackedRing::commit_tagged`] of the claim at `pos`, taken under
    /// `token` (shared rings; 0 unshared), holding `len` bytes.
    #[inline]
    fn commit_at(&self, pos: u64, token: u64, len: usize, tag: u64) -> Result<(), CorruptError> {
        if self.tail.pos.load(Ordering::Relaxed) != pos | WRITING || !self.holds(Side::Write, token)
        {
            return Err(revoked("write", pos));
        }
        let count = self.tail.count.load(Ordering::Relaxed);
        if count >= COUNT_LIMIT {
            return Err(count_out_of_range("write", count));
        }
        if tag != 0 {
            // Before the header: whoever sees the record committed (the
            // repair, by Acquire) sees which tag goes with it.
            self.tail.tag_pending.store(tag, Ordering::Relaxed);
            self.tail.tag_pos.store(pos + 1, Ordering::Release);
        }
        let next = pos + record_size(len);
        self.word(next).store(0, Ordering::Relaxed);
        self.word(pos)
            .store(header(count, len as u64, false), Ordering::Release);
        if tag != 0 {
            // Release: never before the header, even as the compiler
            // emits it (stored first, the tag would name a message that a
            // kill before the header leaves withdrawn).
            self.tail.tag.store(tag, Ordering::Release);
            self.tail.tag_at.store(pos + 1, Ordering::Release);
            self.tail.tag_pos.store(0, Ordering::Release);
        }
        // Release: whoever sees the count sees the record it counts.
        self.tail.count.store(count + 1, Ordering::Release);
        self.tail.pos.store(next, Ordering::Release);
        self.give_back(Side::Write, token);
        Ok(())
    }

    /// A whole send of `msg` in one step (claim, copy, commit: the same
    /// stores, in the same order, as [`PackedRing::try_write`] then
    /// [`PackedRing::commit`]), when nothing but a plain record is due:
    /// the ring laps on, the room is known from `cache` (and, shared, what
    /// the reader published), no padding is needed, the write cursor is
    /// where this writer's last record left it (single mode), and no other
    /// writer has the turn (shared). Otherwise it does nothing and returns
    /// false: the general path handles the rest. Fails, publishing
    /// nothing, if the claim was taken away meanwhile, as `commit` does.
    #[inline]
    pub fn try_send_now(
        &self,
        owner: u32,
        msg: &[u8],
        cache: &mut HeadCache,
    ) -> Result<bool, CorruptError> {
        let len = msg.len();
        // A single-mode writer's first send goes the general way: the
        // cursor has no claim of ours to be checked against yet.
        if self.end != NO_END || len > self.max_message || (!self.shared && cache.own.is_none()) {
            return Ok(false);
        }
        if self.shared && !self.room_seen(len, cache) {
            return Ok(false);
        }
        let token = if self.shared {
            // A lock word that is no lock is the general path's to report
            // (a scribble, not a claim taken away).
            let Ok(Some(token)) = self.take(Side::Write, owner) else {
                return Ok(false);
            };
            token
        } else {
            0
        };
        // Where the writer stands, checked as `claim_write` checks it;
        // anything wrong with it is the general path's to report.
        let own = if self.shared { None } else { cache.own };
        let sent = match self.writer_position(own) {
            Ok((pos, count)) => self.put_record(pos, count, msg, cache, token),
            Err(_) => Ok(false),
        };
        if matches!(sent, Ok(false)) {
            self.give_back(Side::Write, token);
        }
        sent
    }

    /// [`PackedRing::try_send_now`]'s record at `pos` (after `count`
    /// messages), by the writer of the moment (the only one, or the holder
    /// of the write lock's `token`, which `commit_at` gives back).
    #[inline]
    fn put_record(
        &self,
        pos: u64,
        count: u64,
        msg: &[u8],
        cache: &mut HeadCache,
        token: u64,
    ) -> Result<bool, CorruptError> {
        let len = msg.len();
        let rec = record_size(len);
        // A count at its limit is the general path's to report. Room the
        // writer's copy does not show is looked for in `freed` here, as the
        // general path would first: with a small count bound that is every
        // few messages.
        if count >= COUNT_LIMIT
            || self.offset(pos) as u64 + rec > self.size
            || !self.fits_or_freed(pos, rec + RECORD_HEADER, count, cache)
        {
            return Ok(false);
        }
        self.tail.pos.store(pos | WRITING, Ordering::Relaxed);
        // SAFETY: the room is free (checked above against what the reader
        // freed), the claim is marked ours in the write cursor, and readers
        // look no further than the uncommitted header: nobody else touches
        // these `len` bytes, which lie inside the ring (the record does not
        // pass its end, checked above).
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.payload(pos), len) };
        self.commit_at(pos, token, len, 0)?;
        if !self.shared {
            cache.own = Some((pos + rec, count + 1));
        }
        Ok(true)
    }

    /// A whole receive into `out` in one step (claim, copy, release: the
    /// stores of [`PackedRing::try_claim_read_with`] then
    /// [`PackedRing::release`]), when a plain message that fits `out` is
    /// at the head of a ring that laps on and (shared) no other reader has
    /// the turn. Returns its length and index, or `None` having done
    /// nothing (empty, padding, withdrawn, too long, busy: the general
    /// path handles those, and reports a header that does not validate).
    /// Fails like `release`.
    #[inline]
    pub fn try_recv_now(
        &self,
        owner: u32,
        out: &mut [u8],
        redeliver: bool,
    ) -> Result<Option<(usize, u64)>, CorruptError> {
        // Shared, a look without the lock first: pollers of an empty ring
        // leave the readers' lock line alone.
        if self.end != NO_END || (self.shared && !self.head_committed()) {
            return Ok(None);
        }
        let token = if self.shared {
            let Ok(Some(token)) = self.take(Side::Read, owner) else {
                return Ok(None);
            };
            token
        } else {
            0
        };
        let got = self.take_record(out, redeliver, token);
        if matches!(got, Ok(None)) {
            self.give_back(Side::Read, token);
        }
        got
    }

    /// True if the header at the read cursor is committed: a message (or
    /// padding) is there, whether or not [`PackedRing::try_recv_now`]
    /// takes it. A look without the lock.
    pub fn head_committed(&self) -> bool {
        let pos = self.head.pos.load(Ordering::Relaxed) & !READING;
        pos < POS_LIMIT && self.word(pos).load(Ordering::Relaxed) & COMMIT != 0
    }

    /// [`PackedRing::try_recv_now`]'s message at the head, by the reader
    /// of the moment (the only one, or the holder of the read lock's
    /// `token`, which this gives back once it took one).
    #[inline(always)]
    fn take_record(
        &self,
        out: &mut [u8],
        redeliver: bool,
        token: u64,
    ) -> Result<Option<(usize, u64)>, CorruptError> {
        let pos = self.head.pos.load(Ordering::Relaxed);
        let count = self.head.count.load(Ordering::Relaxed);
        if pos & READING != 0 || pos >= POS_LIMIT || count >= COUNT_LIMIT {
            return Ok(None);
        }
        // Read once, after the Acquire load, and validated: only this copy
        // is used. Anything but a valid plain message (padding, withdrawn,
        // uncommitted, or a header that does not validate) is the general
        // path's to handle or report.
        let h = self.word(pos).load(Ordering::Acquire);
        let Some(len) = self.plain_len(pos, h, count) else {
            return Ok(None);
        };
        if len > out.len() {
            return Ok(None);
        }
        self.mark_reading(pos, count, redeliver);
        // SAFETY: the header at `pos` is committed (Acquire) and valid, so
        // its `len` payload bytes lie inside the ring and were written
        // before it; no writer touches them until the head passes them,
        // no other reader while the head is marked ours, and `out` holds
        // `len` bytes (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.payload(pos), out.as_mut_ptr(), len) };
        self.release_at(pos, token, len)?;
        Ok(Some((len, count)))
    }

    /// Gives a claim up without a message.
    pub fn abandon(&self, claim: WriteClaim<'_>) -> Result<(), CorruptError> {
        self.check_claim(claim.pos, claim.slot);
        let pos = claim.pos;
        if self.tail.pos.load(Ordering::Relaxed) != pos | WRITING
            || !self.holds(Side::Write, claim.token)
        {
            return Err(revoked("write", pos));
        }
        self.tail.pos.store(pos, Ordering::Release);
        self.give_back(Side::Write, claim.token);
        Ok(())
    }

    /// Claims the next message for `owner`, passing padding on the way.
    pub fn try_claim_read(
        &self,
        owner: u32,
        max_len: usize,
    ) -> Result<ReadAttempt<'a>, CorruptError> {
        self.try_claim_read_with(owner, max_len, false)
    }

    /// [`PackedRing::try_claim_read`]; with `redeliver`, a reader that dies
    /// holding the message leaves it at the head for the next reader (with
    /// the same [`ReadClaim::index`]) instead of losing it: at least once.
    pub fn try_claim_read_with(
        &self,
        owner: u32,
        max_len: usize,
        redeliver: bool,
    ) -> Result<ReadAttempt<'a>, CorruptError> {
        if !self.shared {
            return self.claim_read(owner, max_len, 0, redeliver);
        }
        let Some(token) = self.take(Side::Read, owner)? else {
            return Ok(ReadAttempt::Busy);
        };
        let attempt = self.claim_read(owner, max_len, token, redeliver);
        if !matches!(attempt, Ok(ReadAttempt::Claimed(_))) {
            self.unlock(Side::Read, token);
        }
        attempt
    }

    /// [`PackedRing::try_claim_read`] by the reader of the moment (the
    /// only one, or the holder of the read lock's `token`).
    fn claim_read(
        &self,
        owner: u32,
        max_len: usize,
        token: u64,
        redeliver: bool,
    ) -> Result<ReadAttempt<'a>, CorruptError> {
        let count = self.head.count.load(Ordering::Relaxed);
        if count >= COUNT_LIMIT {
            return Err(count_out_of_range("read", count));
        }
        let pos = self.head.pos.load(Ordering::Relaxed);
        if pos & READING != 0 {
            return Err(CorruptError(format!(
                "a read claim of position {} is held already",
                pos & !READING
            )));
        }
        let (pos, count, next) = self.pass_dead(pos, count)?;
        let Some(h) = next else {
            self.publish_if_caught_up(pos, count);
            return Ok(ReadAttempt::Empty);
        };
        let len = (h & LEN_MASK) as usize;
        if len > max_len {
            return Ok(ReadAttempt::TooLong(len));
        }
        self.mark_reading(pos, count, redeliver);
        // The length was read once, after the Acquire load of the
        // committed header, and validated: only that copy is used.
        Ok(ReadAttempt::Claimed(ReadClaim {
            pos,
            owner,
            slot: self.payload(pos),
            len,
            token,
            index: count,
            _memory: PhantomData,
        }))
    }

    /// Moves the read cursor from `pos` (after `count` messages) over the
    /// padding and withdrawn records there, as the reader of the moment:
    /// at most one padding record in a row, and no more records than one
    /// lap holds (scribbled headers cannot keep it going). Returns where
    /// it stopped and the validated header of the message there (`None`:
    /// nothing committed yet).
    fn pass_dead(&self, mut pos: u64, mut count: u64) -> Result<(u64, u64, Option<u64>), CorruptError> {
        let mut pads = 0;
        for _ in 0..(self.limit + 2).min(self.size / RECORD_HEADER) {
            if pos >= self.end {
                // A write-once lap read to its end.
                return Ok((pos, count, None));
            }
            if pos >= POS_LIMIT {
                return Err(CorruptError(format!("read cursor {pos:#x} out of range")));
            }
            let h = self.word(pos).load(Ordering::Acquire);
            if h == 0 {
                if self.empty_lap_sealed(pos, count) {
                    // Its padding record was cleared (see below): the
                    // lap, which holds nothing, is passed to its end.
                    self.head.pos.store(self.end, Ordering::Release);
                    return Ok((self.end, count, None));
                }
                return Ok((pos, count, None));
            }
            let rec = self.validate(pos, h, count)?;
            if h & PAD != 0 {
                pads += 1;
                if pads > 1 {
                    break;
                }
                pos += rec;
                self.head.pos.store(pos, Ordering::Release);
            } else if h & WITHDRAWN != 0 {
                pads = 0;
                pos = self.pass_over(pos, count, rec);
                count += 1;
            } else {
                return Ok((pos, count, Some(h)));
            }
        }
        Err(CorruptError(format!(
            "two padding records in a row, or more withdrawn records than the ring holds, at position {pos}"
        )))
    }

    /// Checks a committed-looking header `h` at `pos`, the reader having
    /// released `count` messages; returns the record's size.
    fn validate(&self, pos: u64, h: u64, count: u64) -> Result<u64, CorruptError> {
        let off = self.offset(pos) as u64;
        let len = h & LEN_MASK;
        let bad = |why: &str| CorruptError(format!("record header {h:#x} at {pos}: {why}"));
        if h & COMMIT == 0 {
            return Err(bad("not a header"));
        }
        if seq_of(h) != count & SEQ_MASK {
            return Err(bad(&format!("sequence {} where {} was due", seq_of(h), count & SEQ_MASK)));
        }
        if h & WITHDRAWN != 0 && (h & PAD != 0 || !self.shared) {
            return Err(bad("withdrawn, which only a shared ring's messages can be"));
        }
        if h & PAD != 0 {
            if len != self.size - off || len < RECORD_HEADER {
                return Err(bad("padding that does not end the ring"));
            }
            return Ok(len);
        }
        if len > self.max_message as u64 {
            return Err(bad(&format!("length above the maximum {}", self.max_message)));
        }
        let rec = record_size(len as usize);
        if off + rec > self.size {
            return Err(bad("record past the end of the ring"));
        }
        Ok(rec)
    }

    /// The payload length of `h`, read at `pos` with `count` messages
    /// released, if it is a committed plain message's header (neither
    /// padding nor withdrawn) that [`PackedRing::validate`] accepts;
    /// `None` otherwise. The same checks, without building the error that
    /// the one-step receive would only drop.
    #[inline(always)]
    fn plain_len(&self, pos: u64, h: u64, count: u64) -> Option<usize> {
        let len = h & LEN_MASK;
        let valid = h & (COMMIT | PAD | WITHDRAWN) == COMMIT
            && seq_of(h) == count & SEQ_MASK
            && len <= self.max_message as u64
            && self.offset(pos) as u64 + record_size(len as usize) <= self.size;
        valid.then_some(len as usize)
    }

    /// The payload of a held message.
    ///
    /// # Panics
    /// If the claim was not made on this ring.
    pub fn payload_of<'c>(&self, claim: &'c ReadClaim<'_>) -> &'c [u8] {
        self.check_claim(claim.pos, claim.slot);
        // SAFETY: the claim belongs to this ring (checked) and is held by
        // us: its writer committed it (Acquire on its header), and the
        // writer does not reuse its bytes until we release it; `len` was
        // validated to fit inside the ring.
        unsafe { std::slice::from_raw_parts(claim.slot, claim.len.min(self.max_message)) }
    }

    /// Frees a held message's bytes for the writer; true if another
    /// reader waited for the readers' turn (woken through this ring's
    /// event, if it has one: a chained block's has none). Fails if the
    /// claim is no longer the caller's (repaired, or scribbled over).
    pub fn release(&self, claim: ReadClaim<'_>) -> Result<bool, CorruptError> {
        self.free_read(&claim)
    }

    /// Lets go of a held message without taking it: the head stays at it,
    /// unmarked, so the next reader gets the same message (its count is
    /// unchanged). True if another reader waited for the readers' turn.
    /// Fails like `release`.
    pub fn put_back(&self, claim: ReadClaim<'_>) -> Result<bool, CorruptError> {
        self.check_claim(claim.pos, claim.slot);
        let pos = claim.pos;
        if self.head.pos.load(Ordering::Relaxed) != pos | READING
            || !self.holds(Side::Read, claim.token)
        {
            return Err(revoked("read", pos));
        }
        // One store: a reader killed before it still holds the message
        // (repair counts it lost, as for any held message); after it,
        // holds nothing.
        self.head.pos.store(pos, Ordering::Release);
        self.forget_redelivery();
        Ok(self.give_back(Side::Read, claim.token))
    }

    /// Drops the redelivery request of a message that went back to the
    /// head unreleased, so that it does not pass for the request of its
    /// next reader, who may not ask for one. (Killed just before this, the
    /// request stays: were the next reader one that did not ask, and
    /// killed holding that same message, the message would stay queued
    /// rather than be lost.)
    fn forget_redelivery(&self) {
        if self.head.redeliver.load(Ordering::Relaxed) != 0 {
            self.head.redeliver.store(0, Ordering::Relaxed);
        }
    }

    /// Write-once views (see [`PackedRing::with_end`]): frees the ring's
    /// head past a held message while its reader goes on using the bytes,
    /// so that other readers go on meanwhile. The lap is never rewritten,
    /// so the bytes stay the message's as long as the block is not
    /// recycled: the caller keeps it from that (a hold in the attachment
    /// table, announced before this call) until it is done with
    /// [`PackedRing::payload_of`]. Fails like `release`, and for a ring
    /// that laps on. True if another reader waited for the readers' turn
    /// (a chained block's ring wakes no one itself: the caller wakes the
    /// queue's receivers).
    pub fn release_detached(&self, claim: &ReadClaim<'_>) -> Result<bool, CorruptError> {
        if self.end == NO_END {
            return Err(CorruptError(
                "only a write-once lap's messages can be read after their release".to_owned(),
            ));
        }
        self.free_read(claim)
    }

    /// True while a reader's claim holds the head at `pos` and has not
    /// counted the message released yet: the repair of that claim counts
    /// it lost. (A reader killed between the release's two stores left it
    /// counted released, which the repair takes as delivered.)
    pub fn reading_at(&self, pos: u64) -> bool {
        let (raw, count) = self.head_raw();
        raw == pos | READING
            && count < COUNT_LIMIT
            && pos < POS_LIMIT
            && self
                .validate(pos, self.word(pos).load(Ordering::Acquire), count)
                .is_ok()
    }

    /// [`PackedRing::release`] of `claim`, which the caller may keep; true
    /// if another reader waited for the turn.
    fn free_read(&self, claim: &ReadClaim<'_>) -> Result<bool, CorruptError> {
        self.check_claim(claim.pos, claim.slot);
        self.release_at(claim.pos, claim.token, claim.len)
    }

    /// Marks the message at `pos` (after `count` released) held by the
    /// reader of the moment, asking for its redelivery first if
    /// `redeliver`.
    #[inline]
    fn mark_reading(&self, pos: u64, count: u64, redeliver: bool) {
        // Said before the mark is set (the Release below orders it), so a
        // repair that sees the mark sees what to do with the message. A
        // request left behind names a message released since (a lower
        // count), unless that message went back unreleased: `put_back`
        // and the repair clear it then.
        if redeliver {
            self.head.redeliver.store(count + 1, Ordering::Relaxed);
        }
        self.head.pos.store(pos | READING, Ordering::Release);
    }

    /// Releases the message of `len` bytes held at `pos` under `token`
    /// (shared rings; 0 unshared): the read cursor moves past it, and the
    /// writer is told lazily (a quarter of the ring at a time). True if
    /// another reader waited for the readers' turn.
    #[inline(always)]
    fn release_at(&self, pos: u64, token: u64, len: usize) -> Result<bool, CorruptError> {
        if self.head.pos.load(Ordering::Relaxed) != pos | READING || !self.holds(Side::Read, token) {
            return Err(revoked("read", pos));
        }
        let count = self.head.count.load(Ordering::Relaxed);
        if count >= COUNT_LIMIT {
            return Err(count_out_of_range("read", count));
        }
        let (next, count) = (pos + record_size(len), count + 1);
        // The count first: a reader killed between the two stores left
        // the message released, and repair tells so by its sequence.
        self.head.count.store(count, Ordering::Relaxed);
        self.head.pos.store(next, Ordering::Release);
        let published = self.freed.pos.load(Ordering::Relaxed);
        let published_count = self.freed.count.load(Ordering::Relaxed);
        if next.wrapping_sub(published) >= self.size / 4
            || count.wrapping_sub(published_count) >= (self.limit / 4).max(1)
        {
            self.publish(next, count);
        }
        Ok(self.give_back(Side::Read, token))
    }

    /// [`PackedRing::pass_dead`] from the head, by the holder of the read
    /// lock on another errand (withdrawing an offer); anything invalid is
    /// left for a reader to report.
    fn pass_dead_records(&self) {
        let pos = self.head.pos.load(Ordering::Relaxed);
        let count = self.head.count.load(Ordering::Relaxed);
        if pos & READING != 0 || count >= COUNT_LIMIT {
            return;
        }
        if let Ok((next, count, _)) = self.pass_dead(pos, count) {
            if next != pos {
                self.publish(next, count);
            }
        }
    }

    /// Moves the read cursor over the withdrawn record of `rec` bytes at
    /// `pos` (the head, after `count` messages), counting it as read: held
    /// first (marked), so that a reader killed between the stores leaves
    /// what repair finishes, as in `release`. Returns the next position.
    fn pass_over(&self, pos: u64, count: u64, rec: u64) -> u64 {
        self.head.pos.store(pos | READING, Ordering::Release);
        self.head.count.store(count + 1, Ordering::Release);
        self.head.pos.store(pos + rec, Ordering::Release);
        pos + rec
    }

    /// True once a reader has taken the message committed at `pos` and
    /// let it go (its callback, if it read in place, has returned).
    pub fn was_taken(&self, pos: u64) -> bool {
        self.head.pos.load(Ordering::Acquire) & !READING > pos
    }

    /// True if a reader holds the message committed at `pos`, or has let
    /// it go: it can no longer be withdrawn.
    fn taken_or_held(&self, pos: u64) -> bool {
        let h = self.head.pos.load(Ordering::Acquire);
        h & !READING > pos || h == pos | READING
    }

    /// Withdraws the message committed at `pos` if no reader took it yet
    /// (a rendezvous sender giving up): `Some(true)` if withdrawn,
    /// `Some(false)` if a reader has it, `None` if the readers' lock is
    /// busy (try again). Shared rings only (`Some(false)` otherwise).
    pub fn try_retract(&self, pos: u64, owner: u32) -> Result<Option<bool>, CorruptError> {
        if !self.shared {
            return Ok(Some(false));
        }
        let head = self.head.pos.load(Ordering::Acquire);
        if head & !READING > pos {
            return Ok(Some(false));
        }
        if head == pos | READING {
            // Held: our send returns Ok. A receiver that puts it back
            // (declining it) leaves it waiting at the head again, and a
            // look at the last tag (`settle_offer`) must not withdraw a
            // message whose send returned Ok: it is kept, as a dead
            // redelivering reader's is. Stored before we return; as a
            // maximum, since we hold no lock: a late store for an older
            // offer must not unkeep a newer one (positions only grow).
            self.head.kept_at.fetch_max(pos + 1, Ordering::AcqRel);
            return Ok(Some(false));
        }
        let Some(token) = self.take(Side::Read, owner)? else {
            return Ok(None);
        };
        let withdrawn = self.withdraw(pos);
        self.unlock(Side::Read, token);
        withdrawn.map(Some)
    }

    /// [`PackedRing::try_retract`] under the read lock: withdraws the
    /// record at `pos` unless a reader took it (false). Its position is
    /// stored first, so that if we are killed before the end, the repair
    /// of our lock finishes the withdrawal (`finish_withdrawal`); a record
    /// that a dead reader held for redelivery (`kept_at`) counts as taken.
    fn withdraw(&self, pos: u64) -> Result<bool, CorruptError> {
        if self.taken(pos) {
            return Ok(false);
        }
        let h = self.word(pos).load(Ordering::Acquire);
        if h & (COMMIT | PAD | WITHDRAWN) != COMMIT {
            return Err(CorruptError(format!(
                "record header {h:#x} at {pos}: not the message committed there"
            )));
        }
        self.head.withdrawn_at.store(pos + 1, Ordering::Release);
        self.mark_withdrawn(pos, h);
        Ok(true)
    }

    /// True if a reader took, holds, or (dead, redelivering) kept the
    /// record at `pos`: it can no longer be withdrawn.
    fn taken(&self, pos: u64) -> bool {
        self.taken_or_held(pos) || self.head.kept_at.load(Ordering::Acquire) == pos + 1
    }

    /// The end of every withdrawal, under the read lock (`h`: the
    /// record's header): marked (readers look at headers only under that
    /// lock), untagged, then passed over if nothing but padding is before
    /// it, as a reader would, so that nothing counts it queued.
    fn mark_withdrawn(&self, pos: u64, h: u64) {
        if h & WITHDRAWN == 0 {
            self.word(pos).store(h | WITHDRAWN, Ordering::Release);
        }
        self.untag(pos);
        self.pass_dead_records();
    }

    /// True if a valid message record starts at `pos` and nothing but
    /// padding and withdrawn records lies before it, as the reader of the
    /// moment (under the read lock) would find.
    fn is_next_record(&self, pos: u64) -> bool {
        let mut at = self.head.pos.load(Ordering::Relaxed);
        let mut count = self.head.count.load(Ordering::Relaxed);
        if at & READING != 0 || count >= COUNT_LIMIT {
            return false;
        }
        for _ in 0..(self.limit + 2).min(self.size / RECORD_HEADER) {
            if at > pos || at >= POS_LIMIT {
                return false;
            }
            let h = self.word(at).load(Ordering::Acquire);
            let Ok(rec) = self.validate(at, h, count) else {
                return false;
            };
            if at == pos {
                return h & PAD == 0;
            }
            if h & PAD != 0 {
                at += rec;
            } else if h & WITHDRAWN != 0 {
                at += rec;
                count += 1;
            } else {
                return false;
            }
        }
        false
    }

    /// The record at `pos` was withdrawn: if it carried the last tag, the
    /// tag no longer names a message that went in.
    fn untag(&self, pos: u64) {
        if self.tail.tag_at.load(Ordering::Acquire) == pos + 1 {
            self.tail.tag_at.store(0, Ordering::Release);
        }
    }

    /// Finishes the withdrawal a dead holder of the read lock began (see
    /// `withdraw`): the record it named, still at or after the head, is
    /// marked withdrawn and untagged. A name behind the head is a
    /// withdrawal that finished (readers pass a record only once it is
    /// marked); one beyond what was committed is no record of ours.
    fn finish_withdrawal(&self) {
        let at = self.head.withdrawn_at.load(Ordering::Acquire);
        let raw = self.head.pos.load(Ordering::Acquire);
        let Some(pos) = at.checked_sub(1) else {
            return;
        };
        // Killed passing the record over (the head marked at it): marked
        // and untagged already, `repair_reader` finishes the pass. A kept
        // record, or one that is not the next to read, is no withdrawal
        // of ours to finish (a scribbled word must not take a message).
        if raw & READING != 0
            || pos < raw
            || self.head.kept_at.load(Ordering::Acquire) == at
            || !self.is_next_record(pos)
        {
            return;
        }
        // (A message record: `is_next_record` validated it.)
        self.mark_withdrawn(pos, self.word(pos).load(Ordering::Acquire));
    }

    /// Says who sends the tagged offer about to be committed (a
    /// rendezvous sender holding its claim): the attachment `index` and
    /// its `word` (see [`PackedRing::last_offer_tag`]).
    pub fn set_offer_owner(&self, index: u32, word: u64) {
        self.tail.tag_owner_index.store(u64::from(index) + 1, Ordering::Relaxed);
        self.tail.tag_owner.store(word, Ordering::Release);
    }

    /// For a rendezvous ring: the tag of the last tagged offer that a
    /// receiver took (0: none, or it was withdrawn), once no claim and no
    /// withdrawal is under way, like [`PackedRing::last_tag`]. An offer
    /// still waiting whose sender is gone (`gone(index, word)` of the
    /// owner [`PackedRing::set_offer_owner`] named: the caller's
    /// predecessor, killed) is withdrawn here, untagged: it did not go
    /// in, and will not. `Ok(None)` while another holds a lock this needs,
    /// or while the offer's sender is still attached (it waits for a
    /// receiver, or is dead but not reaped yet). Returns also whether it
    /// withdrew one (its room is free: wake the senders).
    pub fn last_offer_tag(
        &self,
        owner: u32,
        gone: impl Fn(u32, u64) -> bool,
    ) -> Result<Option<(u64, bool)>, CorruptError> {
        if !self.shared {
            return Ok(Some((self.tail.tag.load(Ordering::Acquire), false)));
        }
        let Some(write) = self.take(Side::Write, owner)? else {
            return Ok(None);
        };
        let found = self.settle_offer(owner, gone);
        self.unlock(Side::Write, write);
        found
    }

    /// [`PackedRing::last_offer_tag`] under the write lock.
    fn settle_offer(
        &self,
        owner: u32,
        gone: impl Fn(u32, u64) -> bool,
    ) -> Result<Option<(u64, bool)>, CorruptError> {
        let tag = self.tail.tag.load(Ordering::Acquire);
        let Some(pos) = self.tail.tag_at.load(Ordering::Acquire).checked_sub(1) else {
            return Ok(Some((0, false)));
        };
        // The head also passes a record withdrawn: only while `tag_at`
        // still names it was it a receiver's doing (a withdrawal untags
        // before its record is passed over; Acquire on the head in
        // `taken_or_held` orders the load of `tag_at` after it).
        let taken = || self.taken(pos) && self.tail.tag_at.load(Ordering::Acquire) == pos + 1;
        if taken() {
            return Ok(Some((tag, false)));
        }
        let sender = self.tail.tag_owner_index.load(Ordering::Relaxed);
        let word = self.tail.tag_owner.load(Ordering::Acquire);
        let index = u32::try_from(sender.wrapping_sub(1)).unwrap_or(u32::MAX);
        if !gone(index, word) {
            // A live sender's offer is its own to withdraw or see taken.
            return Ok(None);
        }
        // Waiting, or being withdrawn: under the read lock (a dead
        // withdrawer's is freed by reaping, which finishes its work).
        let Some(read) = self.take(Side::Read, owner)? else {
            return Ok(None);
        };
        let found = if taken() {
            // A receiver took it before we had the lock.
            Ok((tag, false))
        } else if !self.is_next_record(pos) {
            // Not the record to read next (a rendezvous ring holds one
            // offer): a scribbled word, not to act on. It names nothing.
            self.tail.tag_at.store(0, Ordering::Release);
            Ok((0, false))
        } else {
            let h = self.word(pos).load(Ordering::Acquire);
            if h & WITHDRAWN != 0 {
                // Marked, not yet untagged (its withdrawer was killed, and
                // the repair that finishes it has not come): finished here.
                self.mark_withdrawn(pos, h);
                Ok((0, false))
            } else {
                // Withdrawn now (true), or a reader took it meanwhile.
                self.withdraw(pos)
                    .map(|withdrawn| if withdrawn { (0, true) } else { (tag, false) })
            }
        };
        self.unlock(Side::Read, read);
        found.map(Some)
    }

    fn publish(&self, pos: u64, count: u64) {
        self.freed.count.store(count, Ordering::Relaxed);
        self.freed.pos.store(pos, Ordering::Release);
    }

    /// The reader found nothing: tell the writer everything it freed (it
    /// costs a store only when there is news).
    fn publish_if_caught_up(&self, pos: u64, count: u64) {
        if self.freed.pos.load(Ordering::Relaxed) != pos {
            self.publish(pos, count);
        }
    }

    /// Ends the read a dead reader left marked: the message is lost (it
    /// may have been half used) and counted, unless the reader had already
    /// counted it released when it died.
    ///
    /// # Safety
    /// The reader must be dead and no replacement started (its attachment
    /// is still reserved by the caller).
    pub unsafe fn recover_single_reader(&self) -> Recovered {
        if self.shared {
            return Recovered::default();
        }
        // SAFETY: the caller's promise.
        unsafe { self.repair_reader() }
    }

    /// The repair of [`PackedRing::recover_single_reader`], for the reader
    /// of the moment.
    ///
    /// # Safety
    /// That reader is dead (or its claim unusable), and no other reads.
    unsafe fn repair_reader(&self) -> Recovered {
        let (raw, count) = self.head_raw();
        if raw & READING == 0 {
            return Recovered::default();
        }
        let pos = raw & !READING;
        if pos >= POS_LIMIT || count >= COUNT_LIMIT {
            return Recovered::default();
        }
        let h = self.word(pos).load(Ordering::Acquire);
        // Released already (count stored, position not yet)? A withdrawn
        // record being passed over was no message to lose.
        let lost = u64::from(h & WITHDRAWN == 0);
        let (due, lost) = match self.validate(pos, h, count) {
            Ok(_) if lost == 1 && self.head.redeliver.load(Ordering::Acquire) == count + 1 => {
                // Its reader asked for redelivery: the message stays at
                // the head, unreleased (one store, as `put_back`). It was
                // taken: a rendezvous sender may no longer withdraw it.
                self.head.kept_at.fetch_max(pos + 1, Ordering::AcqRel);
                self.head.pos.store(pos, Ordering::Release);
                self.forget_redelivery();
                return Recovered {
                    redelivered_reads: 1,
                    put_back: Some(count),
                    ..Recovered::default()
                };
            }
            Ok(_) => (count + 1, lost),
            Err(_) if count > 0 && self.validate(pos, h, count - 1).is_ok() => (count, 0),
            // Not a record we can account for: a scribble, not ours to fix.
            Err(_) => return Recovered::default(),
        };
        let next = pos + record_size((h & LEN_MASK) as usize);
        self.head.count.store(due, Ordering::Relaxed);
        self.head.pos.store(next, Ordering::Release);
        self.publish(next, due);
        Recovered {
            lost_reads: lost,
            ..Recovered::default()
        }
    }

    /// Shared rings: repairs what `owner` left holding either lock (its
    /// claim, as a dead single writer's or reader's) and frees the lock.
    ///
    /// # Safety
    /// `owner` must be dead, or hold no claim it will still use; its
    /// attachment index stays reserved meanwhile.
    pub unsafe fn recover_owner(&self, owner: u32) -> Recovered {
        let mut found = Recovered::default();
        // SAFETY: the caller's promise, passed on.
        unsafe { self.recover_owner_counting(owner, |r| found.merge(r)) };
        found
    }

    /// [`PackedRing::recover_owner`], handing what each side's repair
    /// found to `count` before that side's lock is given back: a message
    /// put back for redelivery is counted (its index recorded) before
    /// another reader can take it, who may read the count (review of
    /// f7924bb: the count came after, and an exporter that journaled it
    /// one short took a message it had sent for one put back).
    ///
    /// # Safety
    /// As [`PackedRing::recover_owner`].
    pub unsafe fn recover_owner_counting(&self, owner: u32, mut count: impl FnMut(Recovered)) {
        for side in [Side::Write, Side::Read] {
            match self.lock_holder(side) {
                Some((holder, word)) if holder == owner => {
                    // SAFETY: the lock is `owner`'s, who uses no claim
                    // any more (the caller's promise): nobody else uses
                    // one of this side.
                    count(unsafe { self.repair(side) });
                    self.unlock(side, word & !WAITED);
                }
                _ => {}
            }
        }
    }

    /// Finishes what a dead writer's tagged commit left (see
    /// [`PackedRing::commit_tagged`]): its tag becomes the last one if its
    /// record at `start` was committed (`kept`), and is dropped otherwise.
    /// The mark is the only trace, and names its claim's position, so a
    /// stale mark (not at `start`) is dropped too.
    fn settle_tag(&self, start: u64, kept: bool) {
        let at = self.tail.tag_pos.load(Ordering::Acquire);
        if at == 0 {
            return;
        }
        if kept && at == start + 1 {
            let tag = self.tail.tag_pending.load(Ordering::Relaxed);
            self.tail.tag.store(tag, Ordering::Relaxed);
            self.tail.tag_at.store(at, Ordering::Relaxed);
        }
        self.tail.tag_pos.store(0, Ordering::Release);
    }

    /// The tag of the last tagged message committed (0: none), under the
    /// write lock (shared rings), so that no claim of a dead writer is
    /// still unsettled: `Ok(None)` while another holds the lock (a dead
    /// holder's claim is settled when the reaper repairs it).
    pub fn last_tag(&self, owner: u32) -> Result<Option<u64>, CorruptError> {
        Ok(self.last_tag_at(owner)?.map(|(tag, _)| tag))
    }

    /// [`PackedRing::last_tag`] with where its record is: 1 + the
    /// position of the last tagged record committed (0: none).
    pub fn last_tag_at(&self, owner: u32) -> Result<Option<(u64, u64)>, CorruptError> {
        let read = || {
            let tag = self.tail.tag.load(Ordering::Acquire);
            (tag, self.tail.tag_at.load(Ordering::Acquire))
        };
        if !self.shared {
            // The caller is the only writer: nothing can be under way.
            return Ok(Some(read()));
        }
        let Some(token) = self.take(Side::Write, owner)? else {
            return Ok(None);
        };
        let found = read();
        self.unlock(Side::Write, token);
        Ok(Some(found))
    }

    /// Repairs what a dead writer left: committed records its cursor does
    /// not cover yet are counted in, a claim it held is withdrawn (counted
    /// as abandoned).
    ///
    /// # Safety
    /// The writer must be dead and no replacement started (its attachment
    /// is still reserved by the caller).
    pub unsafe fn recover_single_writer(&self) -> Recovered {
        if self.shared {
            return Recovered::default();
        }
        // SAFETY: the caller's promise.
        unsafe { self.repair_writer() }
    }

    /// Repairs what the writer of the moment left (see
    /// [`PackedRing::recover_single_writer`]).
    ///
    /// # Safety
    /// That writer is dead (or its claim unusable), and no other writes.
    unsafe fn repair_writer(&self) -> Recovered {
        let (raw, mut count) = self.tail_raw();
        let claimed = raw & WRITING != 0;
        let start = raw & !WRITING;
        if start >= POS_LIMIT || count >= COUNT_LIMIT {
            return Recovered::default();
        }
        let mut pos = start;
        let mut committed_claim = false;
        // At most one record per 8 bytes of one lap.
        for _ in 0..self.size / RECORD_HEADER {
            if pos >= self.end {
                break;
            }
            let h = self.word(pos).load(Ordering::Acquire);
            if h & COMMIT == 0 {
                break;
            }
            // The count may already include the first record (killed
            // between storing the count and the position).
            let rec = match self.validate(pos, h, count) {
                Ok(rec) => {
                    if h & PAD == 0 {
                        count += 1;
                    }
                    rec
                }
                Err(_) if pos == start && count > 0 && h & PAD == 0 => {
                    match self.validate(pos, h, count - 1) {
                        Ok(rec) => rec,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            committed_claim |= h & PAD == 0;
            pos += rec;
        }
        self.settle_tag(start, claimed && committed_claim);
        if pos == start && !claimed {
            return Recovered::default();
        }
        self.tail.count.store(count, Ordering::Relaxed);
        self.tail.pos.store(pos, Ordering::Release);
        Recovered {
            abandoned_writes: u64::from(claimed && !committed_claim),
            ..Recovered::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{HeapPackedRing, Ring};

    fn put(r: &Ring<'_>, cache: &mut HeadCache, msg: &[u8]) -> bool {
        match r.try_claim_write(0, msg.len(), cache).unwrap() {
            Some(mut c) => {
                r.payload_mut(&mut c).copy_from_slice(msg);
                r.commit(c, msg.len(), 0).unwrap();
                true
            }
            None => false,
        }
    }

    fn take(r: &Ring<'_>) -> Option<Vec<u8>> {
        match r.try_claim_read(1, usize::MAX).unwrap() {
            ReadAttempt::Claimed(c) => {
                let v = r.payload_of(&c).to_vec();
                r.release(c).unwrap();
                Some(v)
            }
            ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy => None,
            ReadAttempt::TooLong(_) => panic!("too long"),
        }
    }

    fn packed<'a>(r: &'a Ring<'a>) -> &'a PackedRing<'a> {
        let Ring::Packed(p) = r;
        p
    }

    #[test]
    fn variable_sizes_wrap_many_laps_in_order() {
        let heap = HeapPackedRing::new(512, 1000, 100);
        let r = heap.ring();
        let mut cache = HeadCache::default();
        let mut rng = 7u64;
        let (mut sent, mut got) = (0u64, 0u64);
        // Fewer under Miri, which is slow: still tens of laps.
        let want = if cfg!(miri) { 400 } else { 5000 };
        while got < want {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (rng >> 33) as usize % 101;
            let msg: Vec<u8> = (0..len).map(|i| (sent as usize + i) as u8).collect();
            if (rng >> 20) & 1 == 0 && put(&r, &mut cache, &msg) {
                sent += 1;
            } else if let Some(m) = take(&r) {
                assert!(m.iter().enumerate().all(|(i, &b)| b == (got as usize + i) as u8));
                got += 1;
            }
            assert!(sent >= got && r.len() == sent - got);
            assert!(r.bytes().0 <= 512);
        }
        assert!(packed(&r).tail_pos() > want * 10, "went round many times");
    }

    #[test]
    fn the_one_step_header_check_accepts_exactly_what_validate_accepts_of_plain_records() {
        // Hostile header words (random, and near the limits of each field)
        // at every offset of two rings, shared and not: the one-step
        // receive takes a record only if the general path's check would,
        // with the same length, and takes every valid plain one.
        let mut rng = 11u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            rng
        };
        for shared in [false, true] {
            let heap = HeapPackedRing::new(512, 100, 100);
            let ring = heap.ring();
            let r = packed(&ring);
            let r = if shared { r.shared(None, None) } else { *r };
            let rounds = if cfg!(miri) { 200 } else { 20_000 };
            for i in 0..rounds {
                let count = next() % 5;
                let pos = (next() % 64) * 8;
                let len = match i % 4 {
                    0 => next() & LEN_MASK,
                    1 => next() % 130,
                    2 => 100,
                    _ => r.size() - r.offset(pos) as u64 - RECORD_HEADER,
                };
                let seq = if next() % 4 == 0 { next() } else { count };
                let flags = next() & (COMMIT | PAD | WITHDRAWN);
                let h = flags | (seq & SEQ_MASK) << SEQ_SHIFT | (len & LEN_MASK);
                let general = r.validate(pos, h, count);
                let plain = h & (PAD | WITHDRAWN) == 0;
                match r.plain_len(pos, h, count) {
                    Some(n) => {
                        assert!(plain, "{h:#x}: taken but not a plain record");
                        assert_eq!(general.unwrap(), record_size(n), "{h:#x} at {pos}");
                    }
                    None => assert!(!plain || general.is_err(), "{h:#x} at {pos}: left valid"),
                }
            }
        }
    }

    #[test]
    fn count_and_bytes_bound_exactly() {
        let heap = HeapPackedRing::new(256, 3, 56);
        let r = heap.ring();
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"a") && put(&r, &mut cache, b"b") && put(&r, &mut cache, b"c"));
        assert!(!put(&r, &mut cache, b"d"), "three messages at most");
        assert_eq!(take(&r).unwrap(), b"a");
        assert!(put(&r, &mut cache, b"d"), "room again right after a receive");
        while take(&r).is_some() {}
        // Bytes: 56-byte messages take 64; 256 bytes hold three (and the
        // header zeroed after the last).
        let heap = HeapPackedRing::new(256, 100, 56);
        let r = heap.ring();
        let big = [9u8; 56];
        let n = (0..10).take_while(|_| put(&r, &mut cache_new(), &big)).count();
        assert_eq!(n, 3);
        assert_eq!(take(&r).unwrap(), big);
        assert!(put(&r, &mut cache_new(), &big));
    }

    fn cache_new() -> HeadCache {
        HeadCache::default()
    }

    #[test]
    fn a_message_put_back_is_read_again_and_counts_once() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring();
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"one") && put(&r, &mut cache, b"two"));
        for _ in 0..3 {
            let ReadAttempt::Claimed(c) = r.try_claim_read(1, usize::MAX).unwrap() else {
                panic!("a message is there");
            };
            assert_eq!(r.payload_of(&c), b"one");
            let pos = c.pos;
            assert!(!r.put_back(c).unwrap(), "nobody waited");
            assert!(!packed(&r).was_taken(pos));
            assert_eq!(r.len(), 2, "still queued");
        }
        assert_eq!(take(&r).unwrap(), b"one");
        assert_eq!(take(&r).unwrap(), b"two");
        assert!(take(&r).is_none() && r.is_empty());
    }

    #[test]
    fn commit_shrinks_a_claim() {
        let heap = HeapPackedRing::new(256, 100, 100);
        let r = heap.ring();
        let mut cache = HeadCache::default();
        let mut c = r.try_claim_write(0, 100, &mut cache).unwrap().unwrap();
        assert_eq!(r.payload_mut(&mut c).len(), 100);
        r.payload_mut(&mut c)[..3].copy_from_slice(b"abc");
        r.commit(c, 3, 0).unwrap();
        assert_eq!(r.bytes().0, 16);
        assert_eq!(take(&r).unwrap(), b"abc");
    }

    #[test]
    fn a_dead_writers_claim_and_unpublished_commit_are_repaired() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring();
        let p = *packed(&r);
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"one"));
        // Killed holding a claim: withdrawn, counted.
        let c = r.try_claim_write(0, 10, &mut cache).unwrap().unwrap();
        let _never_released = c; // as if its holder died
        // SAFETY: the "writer" holds no claim it will still use.
        let rec = unsafe { r.recover_single_writer() };
        assert_eq!(rec.abandoned_writes, 1);
        assert!(put(&r, &mut cache, b"two"));
        // Killed between the header store and the cursor stores.
        let (pos, count) = (p.tail.pos.load(Ordering::Relaxed), p.tail.count.load(Ordering::Relaxed));
        assert!(put(&r, &mut cache, b"three"));
        p.tail.pos.store(pos | WRITING, Ordering::Relaxed);
        p.tail.count.store(count, Ordering::Relaxed);
        // SAFETY: as above.
        let rec = unsafe { r.recover_single_writer() };
        assert_eq!(rec.abandoned_writes, 0, "it was committed");
        // Killed between the count and the position stores.
        let pos = p.tail.pos.load(Ordering::Relaxed);
        assert!(put(&r, &mut cache, b"four"));
        p.tail.pos.store(pos | WRITING, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { r.recover_single_writer() };
        assert!(put(&r, &mut cache, b"five"));
        let got: Vec<_> = std::iter::from_fn(|| take(&r)).collect();
        assert_eq!(got, [&b"one"[..], b"two", b"three", b"four", b"five"]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_tag_moves_exactly_when_its_message_goes_in_even_if_its_writer_dies() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let p = *packed(&r);
        let mut cache = HeadCache::default();
        let put_tagged = |msg: &[u8], tag: u64, cache: &mut HeadCache| {
            let mut c = r.try_claim_write(0, msg.len(), cache).unwrap().unwrap();
            r.payload_mut(&mut c)[..msg.len()].copy_from_slice(msg);
            r.commit(c, msg.len(), tag).unwrap();
        };
        assert_eq!(r.last_tag(1).unwrap(), Some(0), "no tag yet");
        put_tagged(b"one", 7, &mut cache);
        assert!(put(&r, &mut cache, b"two"));
        assert_eq!(r.last_tag(1).unwrap(), Some(7), "an untagged commit keeps it");
        // Killed between the header store and the tag store (the count and
        // position not stored either, the lock still held): the repair
        // keeps the message, so the tag must move with it.
        let (pos, count) = (p.tail.pos.load(Ordering::Relaxed), p.tail.count.load(Ordering::Relaxed));
        let lock = p.tail.lock.load(Ordering::Relaxed);
        put_tagged(b"three", 9, &mut cache);
        p.tail.pos.store(pos | WRITING, Ordering::Relaxed);
        p.tail.count.store(count, Ordering::Relaxed);
        p.tail.tag.store(7, Ordering::Relaxed);
        p.tail.tag_pos.store(pos + 1, Ordering::Relaxed);
        p.tail.lock.store(lock.wrapping_add(TURN) | 1, Ordering::Relaxed);
        assert_eq!(r.last_tag(1).unwrap(), None, "the dead writer's claim is not settled yet");
        // SAFETY: the "writer" (attachment 0) holds no claim it will use.
        let rec = unsafe { r.recover_owner(0) };
        assert_eq!(rec.abandoned_writes, 0, "it was committed");
        assert_eq!(r.last_tag(1).unwrap(), Some(9));
        // Killed after marking its tag, before the header: the message is
        // withdrawn, and the tag stays the last one that went in.
        let c = r.try_claim_write(0, 8, &mut cache).unwrap().unwrap();
        p.tail.tag_pending.store(11, Ordering::Relaxed);
        p.tail.tag_pos.store(c.pos() + 1, Ordering::Relaxed);
        let _never_committed = c; // as if its holder died
        // SAFETY: as above.
        let rec = unsafe { r.recover_owner(0) };
        assert_eq!(rec.abandoned_writes, 1);
        assert_eq!(r.last_tag(1).unwrap(), Some(9));
        assert_eq!(p.tail.tag_pos.load(Ordering::Relaxed), 0, "the mark is dropped");
        put_tagged(b"four", 13, &mut cache);
        assert_eq!(r.last_tag(1).unwrap(), Some(13));
        let got: Vec<_> = std::iter::from_fn(|| take(&r)).collect();
        assert_eq!(got, [&b"one"[..], b"two", b"three", b"four"]);
    }

    #[test]
    fn a_dead_readers_message_is_lost_once_and_counted() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring();
        let p = *packed(&r);
        let mut cache = HeadCache::default();
        for m in [b"a", b"b", b"c"] {
            assert!(put(&r, &mut cache, m));
        }
        let ReadAttempt::Claimed(c) = r.try_claim_read(1, 64).unwrap() else {
            panic!()
        };
        let _never_released = c; // as if its holder died
        // SAFETY: the "reader" holds no claim it will still use.
        assert_eq!(unsafe { r.recover_single_reader() }.lost_reads, 1);
        // Killed inside release, between its two stores: not lost.
        let ReadAttempt::Claimed(c) = r.try_claim_read(1, 64).unwrap() else {
            panic!()
        };
        assert_eq!(r.payload_of(&c), b"b");
        let _never_released = c; // as if its holder died
        p.head.count.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        assert_eq!(unsafe { r.recover_single_reader() }.lost_reads, 0);
        assert_eq!(take(&r).unwrap(), b"c");
        assert!(take(&r).is_none());
        assert!(put(&r, &mut cache, b"d"));
        assert_eq!(take(&r).unwrap(), b"d");
    }

    #[test]
    fn a_dead_reader_that_asked_for_redelivery_leaves_its_message_queued() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring();
        let mut cache = HeadCache::default();
        for m in [b"a", b"b", b"c"] {
            assert!(put(&r, &mut cache, m));
        }
        assert_eq!(take(&r).unwrap(), b"a");
        let ReadAttempt::Claimed(c) = r.try_claim_read_with(1, 64, true).unwrap() else {
            panic!()
        };
        assert_eq!((r.payload_of(&c), c.index()), (&b"b"[..], 1));
        let _never_released = c; // as if its holder died
        // SAFETY: the "reader" holds no claim it will still use.
        let rec = unsafe { r.recover_single_reader() };
        assert_eq!((rec.lost_reads, rec.redelivered_reads), (0, 1));
        assert_eq!(rec.put_back, Some(1), "which message went back: b's index");
        assert_eq!(r.len(), 2, "b is still queued");
        // The next reader gets it, with the same index; a reader that did
        // not ask for redelivery loses its message as before.
        let ReadAttempt::Claimed(c) = r.try_claim_read(1, 64).unwrap() else {
            panic!()
        };
        assert_eq!((r.payload_of(&c), c.index()), (&b"b"[..], 1));
        let _never_released = c;
        // SAFETY: as above.
        let rec = unsafe { r.recover_single_reader() };
        assert_eq!((rec.lost_reads, rec.redelivered_reads), (1, 0));
        assert_eq!(rec.put_back, None);
        assert_eq!(take(&r).unwrap(), b"c");
        assert!(take(&r).is_none());
    }

    #[test]
    fn scribbled_headers_are_reported_not_followed() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring();
        let p = *packed(&r);
        let mut cache = HeadCache::default();
        for bad in [
            1,                                  // not committed, not zero
            header(5, 3, false),                // wrong sequence
            header(0, 41, false),               // above the maximum
            header(0, 16, true),                // padding not to the end
            COMMIT | 1 << 61 | 3, // a sequence far from due
        ] {
            p.word(0).store(bad, Ordering::Relaxed);
            assert!(r.try_claim_read(1, 64).is_err(), "{bad:#x}");
        }
        p.word(0).store(0, Ordering::Relaxed);
        assert!(put(&r, &mut cache, b"ok"));
        assert_eq!(take(&r).unwrap(), b"ok");
        // A reader cursor out of range, and a lazy cursor ahead of the
        // writer, are reported.
        p.freed.pos.store(1 << 40, Ordering::Relaxed);
        let mut found = false;
        for _ in 0..10 {
            match r.try_claim_write(0, 40, &mut cache) {
                Ok(Some(c)) => r.commit(c, 40, 0).unwrap(),
                Ok(None) => panic!("full without looking at the reader's cursors"),
                Err(_) => {
                    found = true;
                    break;
                }
            }
        }
        assert!(found, "a freed cursor ahead of the writer is impossible");
    }

    #[test]
    fn shared_sides_take_turns_and_tell_busy_from_full() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let (mut a, mut b) = (HeadCache::default(), HeadCache::default());
        let ca = r.try_claim_write(0, 8, &mut a).unwrap().unwrap();
        assert!(r.locked(Side::Write));
        assert!(matches!(r.try_write(1, 8, &mut b, true).unwrap(), WriteAttempt::Busy));
        r.commit(ca, 1, 0).unwrap();
        assert!(!r.locked(Side::Write));
        assert!(put(&r, &mut b, b"second"));
        // Readers likewise: one holds a message, the other waits its turn.
        let ReadAttempt::Claimed(ra) = r.try_claim_read(2, 64).unwrap() else {
            panic!()
        };
        assert!(matches!(r.try_claim_read(3, 64).unwrap(), ReadAttempt::Busy));
        r.release(ra).unwrap();
        let ReadAttempt::Claimed(rb) = r.try_claim_read(3, 64).unwrap() else {
            panic!()
        };
        assert_eq!(r.payload_of(&rb), b"second");
        r.release(rb).unwrap();
        // Fill by bytes: Full, not Busy, once nobody holds the lock.
        while put(&r, &mut a, &[7; 40]) {}
        assert!(matches!(r.try_write(1, 40, &mut b, true).unwrap(), WriteAttempt::Full));
        assert!(!r.locked(Side::Write) && !r.locked(Side::Read));
    }

    #[test]
    fn a_write_once_lap_seals_instead_of_wrapping() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring().with_end(256);
        let mut cache = HeadCache::default();
        let mut sent = 0u8;
        while put(&r, &mut cache, &[sent; 40]) {
            sent += 1;
        }
        // 48-byte records: five fit before the end (with the header zeroed
        // after them), the sixth would wrap, and seals instead.
        assert_eq!(sent, 5);
        assert!(r.sealed());
        assert_eq!(r.tail_pos(), 256, "sealed to the end of the lap");
        assert!(!put(&r, &mut cache, b"x"), "nothing more in a sealed lap");
        for i in 0..sent {
            assert_eq!(take(&r), Some(vec![i; 40]));
        }
        assert_eq!(take(&r), None);
        assert_eq!(r.head_pos(), 256, "the padding passed, the lap read");
    }

    #[test]
    fn a_write_once_lap_takes_at_most_its_limit_of_messages() {
        let heap = HeapPackedRing::new(256, 3, 40);
        let r = heap.ring().with_end(256);
        let mut cache = HeadCache::default();
        for i in 0..3u8 {
            assert!(put(&r, &mut cache, &[i]));
            // Read at once: the count bound is per lap, not per queue.
            assert_eq!(take(&r), Some(vec![i]));
        }
        assert!(!put(&r, &mut cache, b"4th"));
        assert!(r.sealed());
        assert_eq!(take(&r), None);
        assert_eq!(r.head_pos(), 256);
    }

    #[test]
    fn close_seals_a_lap_unless_a_writer_is_in_it() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring().with_end(256);
        let mut cache = HeadCache::default();
        let c = r.try_claim_write(0, 8, &mut cache).unwrap().unwrap();
        assert!(r.close(5).unwrap(), "a writer holds the writers' turn");
        assert!(!r.sealed());
        r.commit(c, 2, 0).unwrap();
        // Not behind a message still unread either (the end of a stream
        // would remove the block with it).
        assert!(r.close(5).unwrap(), "a message is unread");
        assert_eq!(take(&r).as_deref(), Some(&[0u8; 2][..]));
        assert!(!r.close(5).unwrap());
        assert!(r.sealed() && !r.locked(Side::Write));
        assert!(!put(&r, &mut cache, b"late"));
        assert_eq!(take(&r), None);
        assert_eq!(r.head_pos(), 256);
        assert!(!r.close(5).unwrap(), "sealed already");
    }

    #[test]
    fn a_detached_read_frees_the_head_and_keeps_its_bytes() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring().with_end(256);
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"m0"));
        assert!(put(&r, &mut cache, b"m1"));
        let ReadAttempt::Claimed(c0) = r.try_claim_read(2, 64).unwrap() else {
            panic!()
        };
        assert!(r.reading_at(c0.pos));
        r.release_detached(&c0).unwrap();
        assert!(!r.locked(Side::Read) && !r.reading_at(c0.pos));
        // Another reader takes the next message meanwhile.
        assert_eq!(take(&r).as_deref(), Some(&b"m1"[..]));
        assert_eq!(r.payload_of(&c0), b"m0", "a write-once lap keeps it");
        // A ring that laps on reuses freed bytes: no detached reads there.
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        assert!(put(&r, &mut cache_new(), b"m0"));
        let ReadAttempt::Claimed(c) = r.try_claim_read(2, 64).unwrap() else {
            panic!()
        };
        assert!(r.release_detached(&c).is_err());
        r.release(c).unwrap();
    }

    #[test]
    fn a_recycled_blocks_next_lap_starts_from_a_cleared_header() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let lap0 = heap.shared_ring().with_end(256);
        let mut cache = HeadCache::default();
        while put(&lap0, &mut cache, &[1; 40]) {}
        while take(&lap0).is_some() {}
        assert!(lap0.sealed() && lap0.head_pos() == 256);
        // Uncleared, the first record of lap 0 would be read as lap 1's:
        // refused (its sequence is stale), never delivered.
        let lap1 = heap.shared_ring().with_end(512);
        assert!(lap1.try_claim_read(2, 64).is_err());
        let seen = lap0.next_lap_header();
        assert_ne!(seen, 0);
        lap0.clear_next_lap(seen);
        assert!(matches!(lap1.try_claim_read(2, 64).unwrap(), ReadAttempt::Empty));
        let mut cache = HeadCache::default();
        assert!(put(&lap1, &mut cache, b"lap 1"));
        // A late clear with the old value leaves the new record alone.
        lap0.clear_next_lap(seen);
        assert_eq!(take(&lap1).as_deref(), Some(&b"lap 1"[..]));
    }

    #[test]
    fn an_empty_laps_cleared_padding_still_ends_the_lap() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let lap1 = heap.shared_ring().with_end(512);
        // Lap 0 ended empty: both cursors at 256, a recycled block.
        let (t, h) = match heap.shared_ring() {
            Ring::Packed(p) => (p.tail, p.head),
        };
        t.pos.store(256, Ordering::Relaxed);
        h.pos.store(256, Ordering::Relaxed);
        // Lap 1 sealed empty, then its padding cleared by a late recycler.
        assert!(!lap1.close(5).unwrap());
        assert!(lap1.sealed());
        let Ring::Packed(p) = lap1;
        p.word(256).store(0, Ordering::Relaxed);
        assert_eq!(take(&lap1), None);
        assert_eq!(lap1.head_pos(), 512, "the empty lap read to its end");
        // Not so if the lap counts a message the reader has not read.
        t.count.store(1, Ordering::Relaxed);
        h.pos.store(256, Ordering::Relaxed);
        assert_eq!(take(&lap1), None);
        assert_eq!(lap1.head_pos(), 256);
    }

    #[test]
    fn a_message_put_back_by_a_redelivering_reader_is_lost_by_a_plain_one_that_dies() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring();
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"a"));
        let ReadAttempt::Claimed(c) = r.try_claim_read_with(1, 64, true).unwrap() else {
            panic!()
        };
        r.put_back(c).unwrap();
        // The request went with the put back: a plain reader's death loses
        // the message, as it would without redelivery anywhere.
        let ReadAttempt::Claimed(c) = r.try_claim_read(2, 64).unwrap() else {
            panic!()
        };
        let _never_released = c;
        // SAFETY: the "reader" holds no claim it will still use.
        let rec = unsafe { r.recover_single_reader() };
        assert_eq!((rec.lost_reads, rec.redelivered_reads), (1, 0));
    }

    #[test]
    fn a_dead_shared_reader_that_asked_for_redelivery_leaves_its_message_queued() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"one"));
        let ReadAttempt::Claimed(_rd) = r.try_claim_read_with(5, 64, true).unwrap() else {
            panic!()
        };
        // SAFETY: reader 5's claim is not used again.
        let rec = unsafe { r.recover_owner(5) };
        assert_eq!((rec.lost_reads, rec.redelivered_reads), (0, 1));
        assert_eq!(r.lock_holder(Side::Read), None, "the lock is free");
        let ReadAttempt::Claimed(c) = r.try_claim_read(6, 64).unwrap() else {
            panic!()
        };
        assert_eq!((r.payload_of(&c), c.index()), (&b"one"[..], 0));
    }

    #[test]
    fn a_dead_holders_claims_are_repaired_and_its_locks_freed() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"one"));
        // Writer 4 dies holding a claim; reader 5 dies holding "one".
        let _w = r.try_claim_write(4, 10, &mut cache).unwrap().unwrap();
        let ReadAttempt::Claimed(_rd) = r.try_claim_read(5, 64).unwrap() else {
            panic!()
        };
        assert_eq!(r.lock_holder(Side::Write).map(|h| h.0), Some(4));
        assert_eq!(r.lock_holder(Side::Read).map(|h| h.0), Some(5));
        // The single-mode repairs do nothing on a shared ring.
        // SAFETY: no claim above is used again.
        unsafe {
            assert_eq!(r.recover_single_writer(), Recovered::default());
            assert_eq!(r.recover_single_reader(), Recovered::default());
            assert_eq!(r.recover_owner(6), Recovered::default(), "not 6's");
            let w = r.recover_owner(4);
            assert_eq!((w.abandoned_writes, w.lost_reads), (1, 0));
            let rd = r.recover_owner(5);
            assert_eq!((rd.abandoned_writes, rd.lost_reads), (0, 1));
        }
        assert!(!r.locked(Side::Write) && !r.locked(Side::Read));
        // The old claims are revoked: their commit and release fail.
        assert!(r.commit(_w, 1, 0).is_err());
        assert!(r.release(_rd).is_err());
        assert!(put(&r, &mut cache, b"two"));
        assert_eq!(take(&r).unwrap(), b"two");
        assert!(take(&r).is_none());
    }

    #[test]
    fn a_leaked_claim_is_taken_back_by_its_owner() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let mut cache = HeadCache::default();
        let _leaked = r.try_claim_write(0, 10, &mut cache).unwrap().unwrap(); // never committed
        assert!(put(&r, &mut cache, b"after"), "owner 0 takes its lock back");
        assert!(put(&r, &mut cache, b"x"));
        let ReadAttempt::Claimed(_leaked) = r.try_claim_read(1, 64).unwrap() else {
            panic!()
        };
        // Taken back, the leaked read counts as lost: "x" comes next.
        assert_eq!(take(&r).unwrap(), b"x");
    }

    #[test]
    fn a_withdrawn_record_is_passed_over_and_counted() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        let at = |r: &Ring<'_>| r.tail_pos();
        let (a, b) = (at(&r), {
            assert!(put(&r, &mut cache, b"a"));
            at(&r)
        });
        assert!(put(&r, &mut cache, b"b"));
        assert!(put(&r, &mut cache, b"c"));
        assert_eq!(p.try_retract(b, 9).unwrap(), Some(true), "b withdrawn");
        assert!(!p.was_taken(b));
        assert_eq!(r.len(), 3);
        assert_eq!(take(&r).unwrap(), b"a");
        assert!(p.was_taken(a));
        // Not withdrawn twice, nor once read.
        assert!(p.try_retract(a, 9).unwrap() == Some(false));
        assert_eq!(take(&r).unwrap(), b"c", "b passed over");
        assert!(p.was_taken(b));
        assert_eq!(r.len(), 0, "the withdrawn one counted as read");
        // Busy while a reader holds its lock; then a held record is taken.
        let c = r.tail_pos();
        assert!(put(&r, &mut cache, b"d"));
        let ReadAttempt::Claimed(held) = r.try_claim_read(1, 64).unwrap() else {
            panic!()
        };
        assert_eq!(p.try_retract(c, 9).unwrap(), Some(false), "being read");
        r.release(held).unwrap();
        let d = r.tail_pos();
        assert!(put(&r, &mut cache, b"e"));
        assert!(put(&r, &mut cache, b"f"));
        let ReadAttempt::Claimed(held) = r.try_claim_read(1, 64).unwrap() else {
            panic!()
        };
        assert_eq!(p.try_retract(d + 16, 9).unwrap(), None, "lock busy");
        r.release(held).unwrap();
        // In single mode a withdrawn mark is corruption.
        let single = HeapPackedRing::new(256, 100, 40);
        let s = single.ring();
        let Ring::Packed(sp) = s;
        assert!(put(&s, &mut HeadCache::default(), b"z"));
        sp.word(0).fetch_or(WITHDRAWN, Ordering::Relaxed);
        assert!(s.try_claim_read(1, 64).is_err());
    }

    #[test]
    fn a_reader_killed_passing_over_a_withdrawn_record_is_repaired() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        assert!(put(&r, &mut cache, b"gone"));
        assert!(put(&r, &mut cache, b"next"));
        assert_eq!(p.try_retract(0, 9).unwrap(), Some(true));
        assert_eq!((p.head_pos(), r.len()), (16, 1), "passed over at the head");
        // Reader 5 killed inside `pass_over`, after each of its stores.
        for stores in 1..=2 {
            p.head.pos.store(READING, Ordering::Relaxed);
            p.head.count.store(stores - 1, Ordering::Relaxed);
            p.head.lock.store(TURN * 7 + 5 + 1, Ordering::Relaxed);
            // SAFETY: "reader 5" uses no claim any more.
            let rec = unsafe { r.recover_owner(5) };
            assert_eq!(rec, Recovered::default(), "no message lost (stores: {stores})");
            assert_eq!((p.head_pos(), r.len()), (16, 1), "stores: {stores}");
        }
        assert_eq!(take(&r).unwrap(), b"next");
    }

    /// Marks `owner` the holder of the readers' lock, as if it had died
    /// holding it (a repair by `recover_owner(owner)` frees it).
    fn hold_read_lock(p: &PackedRing<'_>, owner: u64) {
        let lock = p.head.lock.load(Ordering::Relaxed);
        p.head.lock.store(lock.wrapping_add(TURN) | (owner + 1), Ordering::Relaxed);
    }

    /// Commits `msg` tagged `tag` as writer 0; returns its position.
    fn offer(r: &Ring<'_>, cache: &mut HeadCache, msg: &[u8], tag: u64) -> u64 {
        let mut c = r.try_claim_write(0, msg.len(), cache).unwrap().unwrap();
        let pos = c.pos();
        r.payload_mut(&mut c)[..msg.len()].copy_from_slice(msg);
        r.commit(c, msg.len(), tag).unwrap();
        pos
    }

    #[test]
    fn an_offer_taken_keeps_its_tag_and_one_left_waiting_is_withdrawn_untagged() {
        // Every offer's sender is gone, unless a test says otherwise.
        let gone = |_: u32, _: u64| true;
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((0, false)), "no tag yet");
        offer(&r, &mut cache, b"one", 7);
        assert_eq!(take(&r).unwrap(), b"one");
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((7, false)), "taken");
        // Withdrawn by its sender: the tag goes with it.
        let two = offer(&r, &mut cache, b"two", 9);
        assert_eq!(p.try_retract(two, 0).unwrap(), Some(true));
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((0, false)), "withdrawn");
        // Left waiting by a sender that died: withdrawn here, untagged.
        let three = offer(&r, &mut cache, b"three", 11);
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((0, true)), "withdrawn now");
        assert!(take(&r).is_none(), "nothing left to read");
        assert!(p.was_taken(three), "passed over");
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((0, false)));
        // Its sender still attached: not withdrawn, looked at again later.
        let six = offer(&r, &mut cache, b"six", 17);
        p.set_offer_owner(3, 99);
        let live = |index: u32, word: u64| (index, word) != (3, 99);
        assert_eq!(p.last_offer_tag(1, live).unwrap(), None, "its sender waits");
        assert_eq!(take(&r).unwrap(), b"six");
        assert!(p.was_taken(six));
        assert_eq!(p.last_offer_tag(1, live).unwrap(), Some((17, false)));
        // A scribbled word naming the middle of a record: acted on never.
        let five = offer(&r, &mut cache, b"five, long enough", 15);
        p.tail.tag_at.store(five + 8 + 1, Ordering::Relaxed);
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((0, false)), "names nothing");
        assert_eq!(take(&r).unwrap(), b"five, long enough", "untouched");
        // Held by a reader: taken, whatever it does next.
        offer(&r, &mut cache, b"four", 13);
        let ReadAttempt::Claimed(held) = r.try_claim_read(5, 64).unwrap() else {
            panic!("four is there");
        };
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((13, false)), "held");
        r.release(held).unwrap();
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((13, false)));
    }

    #[test]
    fn a_withdrawal_killed_half_way_is_finished_by_the_repair_and_untagged() {
        // Every offer's sender is gone, unless a test says otherwise.
        let gone = |_: u32, _: u64| true;
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        // Withdrawer 5 killed after each of its stores before the last:
        // its position named, then its record marked.
        for marked in [false, true] {
            let pos = offer(&r, &mut cache, b"offer", 21);
            hold_read_lock(&p, 5);
            p.head.withdrawn_at.store(pos + 1, Ordering::Relaxed);
            if marked {
                p.word(pos).fetch_or(WITHDRAWN, Ordering::Relaxed);
            }
            assert_eq!(p.last_offer_tag(1, gone).unwrap(), None, "the withdrawer's lock is held");
            // SAFETY: "withdrawer 5" uses no claim any more.
            let rec = unsafe { r.recover_owner(5) };
            assert_eq!(rec, Recovered::default(), "no message lost (marked: {marked})");
            // A reader comes first: it passes the record over (it would
            // pass a marked one whatever the tag says).
            assert!(take(&r).is_none(), "passed over (marked: {marked})");
            assert!(p.was_taken(pos));
            assert_eq!(
                p.last_offer_tag(1, gone).unwrap(),
                Some((0, false)),
                "withdrawn, untagged (marked: {marked})"
            );
        }
        // A stale name (a withdrawal that finished) touches nothing.
        let pos = offer(&r, &mut cache, b"kept", 23);
        hold_read_lock(&p, 5);
        // SAFETY: as above.
        unsafe { r.recover_owner(5) };
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((0, true)), "still waiting: withdrawn now");
        assert!(p.was_taken(pos));
    }

    #[test]
    fn an_offer_withdrawn_and_passed_during_the_look_is_not_reported_taken() {
        // From the review of a6f7597. Withdrawer 5 (the offer's own
        // sender, timed out) killed after marking its record WITHDRAWN,
        // before untagging it. The look reads `tag_at` (still naming the
        // record); then, before it looks at the head, another process
        // reaps 5 (the repair finishes the withdrawal: untagged) and a
        // receiver passes the withdrawn record over. The head is past the
        // record: the look took that for "a receiver took it" and
        // reported the withdrawn offer's tag (a loss after a restart).
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        let pos = offer(&r, &mut cache, b"offer", 21);
        hold_read_lock(&p, 5);
        p.head.withdrawn_at.store(pos + 1, Ordering::Relaxed);
        p.word(pos).fetch_or(WITHDRAWN, Ordering::Relaxed);
        // The other processes act while the look asks whether the
        // offer's sender is gone (it is: it was killed).
        let gone = |_: u32, _: u64| {
            // SAFETY: "withdrawer 5" uses no claim any more.
            unsafe { r.recover_owner(5) };
            assert!(take(&r).is_none(), "withdrawn: passed over, not read");
            true
        };
        let found = p.last_offer_tag(2, gone).unwrap();
        assert!(p.was_taken(pos), "passed over");
        assert_eq!(p.tail.tag_at.load(Ordering::Relaxed), 0, "untagged by the repair");
        assert_eq!(found, Some((0, false)), "the offer was withdrawn: no receiver got it");
    }

    #[test]
    fn an_offer_put_back_after_its_send_returned_ok_is_not_withdrawn() {
        // From the review of de382f9. A receiver holds the offer in a
        // `recv_if` callback when its sender's deadline comes: the
        // sender's retract finds it held (its send returns Ok), and a look
        // reports it taken. The callback then declines (put back: the
        // offer waits at the head again). The sender is gone (returned,
        // then killed): a later look withdrew the message whose send had
        // returned Ok.
        let gone = |_: u32, _: u64| true;
        let heap = HeapPackedRing::new(256, 1, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        let pos = offer(&r, &mut cache, b"offer", 41);
        p.set_offer_owner(3, 99);
        let ReadAttempt::Claimed(held) = r.try_claim_read(5, 64).unwrap() else {
            panic!("the offer is there");
        };
        assert_eq!(p.try_retract(pos, 0).unwrap(), Some(false), "held: its send returns Ok");
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((41, false)), "held: taken");
        r.put_back(held).unwrap();
        let later = p.last_offer_tag(1, gone).unwrap();
        let left = take(&r);
        assert_eq!(
            (later, left.as_deref()),
            (Some((41, false)), Some(&b"offer"[..])),
            "reported taken, its send returned Ok: not withdrawn afterwards"
        );
    }

    #[test]
    fn a_scribbled_withdrawn_at_marks_no_queued_message() {
        // From the review of de382f9. A shared bounded ring (nothing is
        // ever withdrawn there), `head.withdrawn_at` scribbled to name the
        // second queued message, and a reader (5) dead holding the read
        // lock between claims. Its repair "finished the withdrawal": the
        // message was marked withdrawn and passed over, lost uncounted.
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        offer(&r, &mut cache, b"one", 0);
        let two = offer(&r, &mut cache, b"two", 0);
        offer(&r, &mut cache, b"three", 0);
        p.head.withdrawn_at.store(two + 1, Ordering::Relaxed);
        hold_read_lock(&p, 5);
        // SAFETY: "reader 5" holds no claim.
        let rec = unsafe { r.recover_owner(5) };
        assert_eq!(rec, Recovered::default());
        let got: Vec<Vec<u8>> = std::iter::from_fn(|| take(&r)).collect();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }

    #[test]
    fn an_offer_a_dead_redelivering_reader_held_stays_taken_for_its_sender() {
        // Every offer's sender is gone, unless a test says otherwise.
        let gone = |_: u32, _: u64| true;
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        let pos = offer(&r, &mut cache, b"held", 31);
        let ReadAttempt::Claimed(c) = p.try_claim_read_with(5, 64, true).unwrap() else {
            panic!("held is there");
        };
        let index = c.index();
        let _dead = c; // as if its holder died
        // SAFETY: "reader 5" uses no claim any more.
        let rec = unsafe { r.recover_owner(5) };
        assert_eq!(rec.redelivered_reads, 1);
        assert!(!p.was_taken(pos), "back at the head");
        assert_eq!(p.try_retract(pos, 0).unwrap(), Some(false), "not withdrawable");
        assert_eq!(p.last_offer_tag(1, gone).unwrap(), Some((31, false)), "taken, tag kept");
        let ReadAttempt::Claimed(again) = r.try_claim_read(6, 64).unwrap() else {
            panic!("redelivered");
        };
        assert_eq!((again.index(), r.payload_of(&again)), (index, &b"held"[..]));
        r.release(again).unwrap();
        assert!(p.was_taken(pos));
    }

    #[test]
    fn a_withdrawal_passes_over_scribbled_padding_once() {
        // A ring without a message limit whose head record is scribbled
        // into padding as long as the ring: passing over it lands on it
        // again, lap after lap; at most one padding in a row is followed
        // (was: up to u32::MAX turns).
        let heap = HeapPackedRing::new(256, u32::MAX, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        for m in [b"a", b"b", b"c"] {
            assert!(put(&r, &mut cache, m));
        }
        p.word(0).store(header(0, 256, true), Ordering::Relaxed);
        assert_eq!(p.try_retract(32, 9).unwrap(), Some(true));
        assert_eq!(p.head_pos(), 256, "one padding record passed, then stopped");
        assert!(r.try_claim_read(1, 64).is_err(), "the scribble is reported");
    }

    /// `take` and `unlock` try one exchange first: for every lock word,
    /// they must leave the word, and answer, as their general paths do.
    #[test]
    fn the_one_exchange_lock_paths_agree_with_the_general_ones() {
        let words = [
            0,
            TURN,
            5 * TURN,
            // The last turn before the count wraps.
            !(TURN - 1),
            WAITED,
            (7 * TURN) | WAITED,
            (3 * TURN) | 1,
            (3 * TURN) | 6,
            (3 * TURN) | 64,
            (3 * TURN) | 6 | WAITED,
            (3 * TURN) | 1 | WAITED,
            (3 * TURN) | HOLDER,
            1 << 17,
            (3 * TURN) | (1 << 20) | 2,
            0x1234_5678,
        ];
        let owners = [0u32, 5, 63];
        let fast = HeapPackedRing::new(256, 100, 40);
        let general = HeapPackedRing::new(256, 100, 40);
        let (Ring::Packed(f), Ring::Packed(g)) = (fast.shared_ring(), general.shared_ring());
        let answer = |r: Result<Option<u64>, CorruptError>| r.map_err(|e| e.0);
        for &w in &words {
            for &owner in &owners {
                f.tail.lock.store(w, Ordering::Relaxed);
                g.tail.lock.store(w, Ordering::Relaxed);
                let (a, b) = (f.take(Side::Write, owner), g.take_contended(Side::Write, owner));
                assert_eq!(answer(a), answer(b), "take of {w:#x} by {owner}");
                let (fw, gw) = (f.tail.lock.load(Ordering::Relaxed), g.tail.lock.load(Ordering::Relaxed));
                assert_eq!(fw, gw, "word after take of {w:#x} by {owner}");
                for token in [w & !WAITED, (3 * TURN) | (owner as u64 + 1), 0] {
                    f.tail.lock.store(w, Ordering::Relaxed);
                    g.tail.lock.store(w, Ordering::Relaxed);
                    let (a, b) = (f.unlock(Side::Write, token), g.unlock_marked(Side::Write, token));
                    assert_eq!(a, b, "unlock of {w:#x} with {token:#x}");
                    let (fw, gw) = (f.tail.lock.load(Ordering::Relaxed), g.tail.lock.load(Ordering::Relaxed));
                    assert_eq!(fw, gw, "word after unlock of {w:#x} with {token:#x}");
                }
            }
        }
    }

    #[test]
    fn a_scribbled_or_stale_lock_is_reported_or_freed() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        p.tail.lock.store(0x1234_5678, Ordering::Relaxed);
        assert!(r.try_claim_write(0, 8, &mut cache).is_err(), "no lock word");
        // A holder nobody can repair (not attached): freed on request.
        p.tail.lock.store(7 + 1, Ordering::Relaxed);
        assert!(r.try_claim_write(0, 8, &mut cache).unwrap().is_none());
        let (holder, word) = r.lock_holder(Side::Write).unwrap();
        assert_eq!(holder, 7);
        // SAFETY: nobody is attached as 7 in this test.
        unsafe { r.release_stale_lock(Side::Write, word, drop) };
        assert!(put(&r, &mut cache, b"ok"));
        assert_eq!(take(&r).unwrap(), b"ok");
    }

    #[test]
    fn threads_share_a_ring_in_order_per_writer() {
        let heap = HeapPackedRing::new(512, 64, 24);
        let r = heap.shared_ring();
        let per = if cfg!(miri) { 30 } else { 3000 };
        let got = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..2u8 {
                let r = &r;
                s.spawn(move || {
                    let mut cache = HeadCache::default();
                    for i in 0..per as u32 {
                        // Writer, index, then a length that varies.
                        let pad = vec![w; i as usize % 20];
                        let msg = [&[w][..], &i.to_le_bytes()[..], &pad[..]].concat();
                        let msg = &msg[..msg.len().min(24)];
                        // Each thread its own owner index, as each
                        // endpoint has its own attachment.
                        loop {
                            match r.try_claim_write(w as u32, msg.len(), &mut cache).unwrap() {
                                Some(mut c) => {
                                    r.payload_mut(&mut c).copy_from_slice(msg);
                                    r.commit(c, msg.len(), 0).unwrap();
                                    break;
                                }
                                None => std::thread::yield_now(),
                            }
                        }
                    }
                });
            }
            for me in 10..12u32 {
                let (r, got) = (&r, &got);
                s.spawn(move || loop {
                    if got.lock().unwrap().len() == 2 * per {
                        break;
                    }
                    match r.try_claim_read(me, 64).unwrap() {
                        ReadAttempt::Claimed(c) => {
                            let m = r.payload_of(&c).to_vec();
                            // Order is decided under the read lock, so record
                            // it before giving the lock back.
                            got.lock().unwrap().push(m);
                            r.release(c).unwrap();
                        }
                        _ => std::thread::yield_now(),
                    }
                });
            }
        });
        let got = got.into_inner().unwrap();
        for w in 0..2u8 {
            let seq: Vec<u32> = got
                .iter()
                .filter(|m| m[0] == w)
                .map(|m| u32::from_le_bytes(m[1..5].try_into().unwrap()))
                .collect();
            assert_eq!(seq, (0..per as u32).collect::<Vec<_>>(), "writer {w}");
        }
        assert_eq!(r.len(), 0);
    }

    #[test]
    #[should_panic(expected = "did not make it")]
    fn a_claim_on_another_ring_is_refused() {
        let (a, b) = (HeapPackedRing::new(256, 4, 8), HeapPackedRing::new(256, 4, 8));
        let c = a.ring().try_claim_write(0, 8, &mut HeadCache::default()).unwrap().unwrap();
        let _ = b.ring().commit(c, 1, 0);
    }

    /// Review of 1143e54: brings a rendezvous ring (limit 1) to where the
    /// next offer's record follows a padding record the head stands on.
    fn ring_at_padding(r: &Ring<'_>, cache: &mut HeadCache) {
        let Ring::Packed(p) = *r;
        loop {
            offer(r, cache, b"0123456789abcdefghijklmnopqrstu", 0);
            assert_eq!(take(r).unwrap(), b"0123456789abcdefghijklmnopqrstu");
            let left = p.size() - (p.head_pos() % p.size());
            if left < 32 && left > 0 {
                return;
            }
        }
    }

    /// From the review of 1143e54: a withdrawer killed at each point of
    /// its work on an offer that sits after a padding record; the repair
    /// finishes every one.
    #[test]
    fn interrupted_withdrawals_after_padding_are_finished() {
        let gone = |_: u32, _: u64| true;
        // stage: 1 withdrawn_at stored, 2 + marked, 3 + untagged,
        // 4 + padding passed (head at pos), 5 + pass_over's first store,
        // 6 + its second store.
        for stage in 1..=6u32 {
            let heap = HeapPackedRing::new(256, 1, 40);
            let r = heap.shared_ring();
            let Ring::Packed(p) = r;
            let mut cache = HeadCache::default();
            ring_at_padding(&r, &mut cache);
            let pad = p.head_pos();
            let pos = offer(&r, &mut cache, b"offer, twenty bytes!", 21);
            assert!(pos > pad && pos.is_multiple_of(256), "after the padding: {pad} {pos}");
            hold_read_lock(&p, 5);
            p.head.withdrawn_at.store(pos + 1, Ordering::Relaxed);
            if stage >= 2 {
                p.word(pos).fetch_or(WITHDRAWN, Ordering::Relaxed);
            }
            if stage >= 3 {
                p.tail.tag_at.store(0, Ordering::Relaxed);
            }
            let count = p.head.count.load(Ordering::Relaxed);
            if stage >= 4 {
                p.head.pos.store(pos, Ordering::Relaxed);
            }
            if stage >= 5 {
                p.head.pos.store(pos | READING, Ordering::Relaxed);
            }
            if stage >= 6 {
                p.head.count.store(count + 1, Ordering::Relaxed);
            }
            // SAFETY: "withdrawer 5" uses no claim any more.
            let rec = unsafe { r.recover_owner(5) };
            assert_eq!(rec, Recovered::default(), "stage {stage}");
            // Passed over by the repair itself (it stayed counted queued
            // until a reader came, before).
            assert_eq!(r.len(), 0, "right after the repair (stage {stage})");
            assert_eq!(
                p.last_offer_tag(1, gone).unwrap(),
                Some((0, false)),
                "withdrawn and untagged (stage {stage})"
            );
            assert!(take(&r).is_none(), "stage {stage}");
            assert!(p.was_taken(pos), "stage {stage}");
            assert_eq!(r.len(), 0, "stage {stage}");
        }
    }

    /// From the review of 1143e54.
    #[test]
    fn a_late_kept_store_does_not_unkeep_a_dead_redelivering_readers_offer() {
        // C's retract saw its offer (pos0) held, then was preempted; its
        // store lands late (emulated below), after a redelivering reader
        // died holding B's next offer and its repair marked it kept.
        let heap = HeapPackedRing::new(256, 1, 40);
        let r = heap.shared_ring();
        let Ring::Packed(p) = r;
        let mut cache = HeadCache::default();
        let pos0 = offer(&r, &mut cache, b"c", 5);
        let ReadAttempt::Claimed(r1) = r.try_claim_read(5, 64).unwrap() else { panic!() };
        assert_eq!(p.head.pos.load(Ordering::Relaxed), pos0 | READING, "C's retract loads this");
        r.release(r1).unwrap();
        let pos1 = offer(&r, &mut cache, b"b", 6);
        let ReadAttempt::Claimed(c) = p.try_claim_read_with(6, 64, true).unwrap() else { panic!() };
        let _dead = c;
        // SAFETY: "reader 6" uses no claim any more.
        let rec = unsafe { r.recover_owner(6) };
        assert_eq!(rec.redelivered_reads, 1);
        // C's late store, as `try_retract` makes it (it was a plain
        // store: it unkept the newer offer, which its own sender's
        // retract then withdrew though the dead reader had it).
        p.head.kept_at.fetch_max(pos0 + 1, Ordering::AcqRel);
        assert_eq!(
            p.try_retract(pos1, 0).unwrap(),
            Some(false),
            "taken by a dead redelivering reader: not withdrawable"
        );
    }

    /// Sends `msg` (as writer 0) in one step if `fast` and the ring
    /// allows, else by claim and commit: (sent either way, in one step).
    fn send_either(r: &Ring<'_>, cache: &mut HeadCache, msg: &[u8], fast: bool) -> (bool, bool) {
        if fast && r.try_send_now(0, msg, cache).unwrap() {
            return (true, true);
        }
        (put(r, cache, msg), false)
    }

    /// Receives (as reader 1) in one step if `fast` and the ring allows,
    /// else by claim and release: (the message, taken in one step).
    fn recv_either(r: &Ring<'_>, fast: bool) -> (Option<Vec<u8>>, bool) {
        let mut out = [0u8; 128];
        if fast {
            if let Some((len, _)) = r.try_recv_now(1, &mut out, false).unwrap() {
                return (Some(out[..len].to_vec()), true);
            }
        }
        (take(r), false)
    }

    /// One-step sends and receives, mixed at random with claims, over many
    /// laps of variable-sized records (single mode, then shared): every
    /// message arrives once, in order, intact; the one-step paths leave
    /// padding to the general ones and take everything else.
    #[test]
    fn one_step_sends_and_receives_mix_with_claims_over_many_laps() {
        for shared in [false, true] {
            let heap = HeapPackedRing::new(512, 1000, 100);
            let r = if shared { heap.shared_ring() } else { heap.ring() };
            let mut cache = HeadCache::default();
            let mut rng = 11u64;
            let (mut sent, mut got, mut fast_sends, mut fast_recvs) = (0u64, 0u64, 0u64, 0u64);
            let want = if cfg!(miri) { 400 } else { 5000 };
            while got < want {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let len = (rng >> 33) as usize % 101;
                let fast = (rng >> 21) & 3 != 0;
                let msg: Vec<u8> = (0..len).map(|i| (sent as usize + i) as u8).collect();
                if (rng >> 20) & 1 == 0 {
                    let (ok, quick) = send_either(&r, &mut cache, &msg, fast);
                    sent += ok as u64;
                    fast_sends += quick as u64;
                } else {
                    let (m, quick) = recv_either(&r, fast);
                    if let Some(m) = m {
                        assert!(m.iter().enumerate().all(|(i, &b)| b == (got as usize + i) as u8));
                        got += 1;
                        fast_recvs += quick as u64;
                    }
                }
                assert!(sent >= got && r.len() == sent - got);
                assert!(r.bytes().0 <= 512);
            }
            assert!(packed(&r).tail_pos() > want * 10, "went round many times");
            assert!(
                fast_sends > want / 4 && fast_recvs > want / 4,
                "shared {shared}: {fast_sends} sends and {fast_recvs} receives in one step"
            );
        }
    }

    /// What the one-step paths leave to the general ones: a write cursor
    /// moved under its writer, a scribbled header, a buffer too small, and
    /// another side's turn; none of them changes the ring.
    #[test]
    fn one_step_paths_leave_what_needs_a_look_to_the_general_ones() {
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.ring();
        let p = packed(&r);
        let mut cache = HeadCache::default();
        assert!(!r.try_send_now(0, b"first", &mut cache).unwrap(), "no claim yet: the general path looks");
        assert!(put(&r, &mut cache, b"first"));
        assert!(r.try_send_now(0, b"second", &mut cache).unwrap());
        // Too small a buffer: the message stays.
        let mut small = [0u8; 3];
        assert_eq!(r.try_recv_now(1, &mut small, false).unwrap(), None);
        assert_eq!(r.len(), 2);
        // A scribbled header at the head: left for the general path to
        // report, the head unmoved.
        let h = p.word(0).load(Ordering::Relaxed);
        p.word(0).store(h ^ (1 << SEQ_SHIFT), Ordering::Relaxed);
        let mut out = [0u8; 64];
        assert_eq!(r.try_recv_now(1, &mut out, false).unwrap(), None);
        assert!(r.try_claim_read(1, 64).is_err(), "the general path reports it");
        p.word(0).store(h, Ordering::Relaxed);
        assert_eq!(r.try_recv_now(1, &mut out, true).unwrap(), Some((5, 0)));
        assert_eq!(&out[..5], b"first");
        assert_eq!(p.head.redeliver.load(Ordering::Relaxed), 1, "redelivery asked for message 0");
        // A write cursor moved under its writer: not followed.
        let (pos, count) = p.tail_raw();
        p.tail.pos.store(pos + 8, Ordering::Relaxed);
        assert!(!r.try_send_now(0, b"third", &mut cache).unwrap());
        assert!(r.try_claim_write(0, 5, &mut cache).is_err(), "the general path reports it");
        p.tail.pos.store(pos, Ordering::Relaxed);
        assert_eq!(p.tail_raw(), (pos, count));
        assert!(r.try_send_now(0, b"third", &mut cache).unwrap());

        // Shared: another writer's or reader's turn is waited for by the
        // general path.
        let heap = HeapPackedRing::new(256, 100, 40);
        let r = heap.shared_ring();
        let p = packed(&r);
        let mut cache = HeadCache::default();
        assert!(r.try_send_now(0, b"a", &mut cache).unwrap());
        let token = p.take(Side::Write, 5).unwrap().expect("free");
        assert!(!r.try_send_now(0, b"b", &mut cache).unwrap(), "writer 5 has the turn");
        p.unlock(Side::Write, token);
        let token = p.take(Side::Read, 6).unwrap().expect("free");
        assert_eq!(r.try_recv_now(1, &mut out, false).unwrap(), None, "reader 6 has the turn");
        p.unlock(Side::Read, token);
        assert_eq!(r.try_recv_now(1, &mut out, false).unwrap(), Some((1, 0)));
        assert_eq!(r.try_recv_now(1, &mut out, false).unwrap(), None, "empty");
    }

    /// With a small count bound the writer's copy of the reader's progress
    /// says full every few messages: the one-step send then learns what
    /// the reader published in `freed` itself, instead of leaving it to
    /// the general path (about 120 instructions a message more with a
    /// bound of 4). A published position it cannot have reached is still
    /// the general path's to report.
    #[test]
    fn a_one_step_send_takes_room_the_reader_published() {
        for shared in [false, true] {
            let heap = HeapPackedRing::new(256, 4, 40);
            let r = if shared { heap.shared_ring() } else { heap.ring() };
            let p = packed(&r);
            let mut cache = HeadCache::default();
            let mut out = [0u8; 64];
            assert!(put(&r, &mut cache, b"m0"));
            for i in 1..40u8 {
                assert!(
                    r.try_send_now(0, &[i], &mut cache).unwrap(),
                    "message {i} (shared {shared}): room published, not taken in one step"
                );
                assert_eq!(r.try_recv_now(1, &mut out, false).unwrap().map(|(n, _)| n), Some(if i == 1 { 2 } else { 1 }));
            }
            // Fill the count bound; then a scribbled `freed` ahead of the
            // writer, by count or by position, is not taken as room. (In
            // shared mode `room_seen` already refuses it, before the lock.)
            while r.try_send_now(0, b"x", &mut cache).unwrap() {}
            let (pos, count) = p.tail_raw();
            let (freed_pos, freed_count) = (p.freed.pos.load(Ordering::Relaxed), p.freed.count.load(Ordering::Relaxed));
            for (scribbled_pos, scribbled_count) in [(freed_pos, count + 1), (pos + 8, count)] {
                p.freed.pos.store(scribbled_pos, Ordering::Relaxed);
                p.freed.count.store(scribbled_count, Ordering::Relaxed);
                assert!(!r.try_send_now(0, b"y", &mut cache).unwrap());
                assert!(r.try_claim_write(0, 1, &mut cache).is_err(), "the general path reports it");
                assert_eq!(p.tail_raw(), (pos & !WRITING, count));
            }
            p.freed.pos.store(freed_pos, Ordering::Relaxed);
            p.freed.count.store(freed_count, Ordering::Relaxed);
        }
    }

    /// Review of 55d93ac: a single-mode one-step send at a message count
    /// at its limit (scribbled up to it) was acknowledged and counted past
    /// it, where the general path's commit refuses it: a message sent `Ok`
    /// that no reader could ever take.
    #[test]
    fn a_one_step_send_refuses_a_count_at_the_limit_as_commit_does() {
        for fast in [false, true] {
            let heap = HeapPackedRing::new(256, 100, 40);
            let r = heap.ring();
            let p = packed(&r);
            for c in [p.tail, p.head, p.freed] {
                c.count.store(COUNT_LIMIT - 1, Ordering::Relaxed);
            }
            let mut cache = HeadCache::default();
            assert!(put(&r, &mut cache, b"first"));
            assert_eq!(p.tail.count.load(Ordering::Relaxed), COUNT_LIMIT);
            let general = |cache: &mut HeadCache| match r.try_claim_write(0, 6, cache) {
                Ok(Some(mut c)) => {
                    r.payload_mut(&mut c).copy_from_slice(b"second");
                    r.commit(c, 6, 0).map(Some)
                }
                other => other.map(|c| c.map(|_| ())),
            };
            let second = match fast.then(|| r.try_send_now(0, b"second", &mut cache)) {
                Some(Ok(true)) => Ok(Some(())),
                Some(Err(e)) => Err(e),
                // Declined (or not tried): the general path reports it.
                Some(Ok(false)) | None => general(&mut cache),
            };
            assert!(second.is_err(), "fast {fast}: a send at the count limit: {second:?}");
            assert_eq!(p.tail.count.load(Ordering::Relaxed), COUNT_LIMIT, "fast {fast}");
            assert_eq!(take(&r).as_deref(), Some(&b"first"[..]));
        }
    }
}
