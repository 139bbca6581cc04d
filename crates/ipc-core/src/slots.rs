//! A bounded multi-producer multi-consumer ring of variable-length slots,
//! lock-free, with per-slot sequence stamps, that survivors can repair when a
//! process dies in the middle of an operation.
//!
//! The algorithm follows Dmitry Vyukov's bounded MPMC queue (each slot
//! carries a stamp saying which lap it is ready for), with one change: a
//! writer or reader claims a *slot* by a compare-and-swap on its stamp that
//! also records the claimer's attachment index, and only then advances the
//! shared cursor (anyone who sees a claimed slot helps advance it). So at
//! every instant, a half-written or half-read slot names its owner, and
//! [`SlotRing::recover_owner`] can finish the work of a dead process. Commit
//! and release are compare-and-swaps from the state that names the owner,
//! so a claim that was repaired for any reason fails loudly (an error to
//! its holder) instead of overwriting the next lap.
//!
//! Claims borrow the ring's memory (`WriteClaim<'a>`, `ReadClaim<'a>`), so
//! no payload slice outlives the memory it points into; the repair
//! functions are `unsafe`, because their precondition (the owner is dead)
//! is one the type system cannot check.
//!
//! Stamp states for the slot at position `p` (capacity `c`):
//!
//! | stamp                    | meaning                                   |
//! |--------------------------|-------------------------------------------|
//! | `p`                      | free, ready for the writer of `p`         |
//! | `WRITING│owner│p`        | being written                             |
//! | `p+1`                    | committed, ready for a reader             |
//! | `SKIP│p+1`               | abandoned by a dead writer: readers skip  |
//! | `READING│owner│p+1`      | being read                                |
//! | `p+c`                    | released: free for the writer of `p+c`    |
//!
//! Every value read from shared memory is checked against this table; any
//! other stamp, or a length above the maximum, is reported as corrupt.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use crate::atomic::{spin_hint, AtomicU32, AtomicU64};

use crate::claim::{check_owner, revoked, Census, ReadAttempt, ReadClaim, Recovered, WriteClaim};
use crate::error::CorruptError;
use crate::layout::Cursor;

const WRITING: u64 = 1 << 63;
const READING: u64 = 1 << 62;
const SKIP: u64 = 1 << 61;
const OWNER_SHIFT: u32 = 53;
const OWNER_MASK: u64 = 0xFF << OWNER_SHIFT;
const SEQ_MASK: u64 = (1 << OWNER_SHIFT) - 1;

/// How many times a cursor may look stale before we call it corrupt.
const STALE_LIMIT: u32 = 1 << 16;

/// Most rounds one claim may take: far beyond what contention between 64
/// processes produces, so only a corrupt ring reaches it.
const ROUND_LIMIT: u32 = 1 << 22;

/// Cursors stay below this: 2^52 messages (over a year at 100 million a
/// second). A larger value can only come from a scribbling peer, and
/// would make `pos + 1` spill into the owner bits of a stamp.
const POS_LIMIT: u64 = 1 << 52;

fn load_pos(cursor: &Cursor) -> Result<u64, CorruptError> {
    let raw = cursor.pos.load(Ordering::Acquire);
    if raw < POS_LIMIT {
        Ok(raw)
    } else {
        Err(CorruptError(format!("cursor {raw:#x} out of range")))
    }
}

/// Someone claimed the slot at `pos` without moving `cursor` on yet:
/// help, and return where the cursor is now.
fn help_past(cursor: &Cursor, pos: u64) -> Result<u64, CorruptError> {
    let _ = cursor
        .pos
        .compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
    load_pos(cursor)
}

/// The stamp `s` fits no state for `pos`. If the cursor moved meanwhile,
/// follow it; otherwise count a stale round, and past [`STALE_LIMIT`] call
/// the ring corrupt.
fn recheck(
    cursor: &Cursor,
    pos: u64,
    s: u64,
    stale: &mut u32,
    what: &str,
) -> Result<u64, CorruptError> {
    let now = load_pos(cursor)?;
    if now == pos {
        *stale += 1;
        if *stale > STALE_LIMIT {
            return Err(CorruptError(format!(
                "slot stamp {s:#x} impossible for {what} position {pos}"
            )));
        }
        spin_hint();
    }
    Ok(now)
}

fn too_many_rounds(rounds: &mut u32, pos: u64) -> Result<(), CorruptError> {
    *rounds += 1;
    if *rounds > ROUND_LIMIT {
        return Err(CorruptError(format!("no progress at position {pos}")));
    }
    Ok(())
}

fn seq(stamp: u64) -> u64 {
    stamp & SEQ_MASK
}

fn owner_of(stamp: u64) -> u32 {
    ((stamp & OWNER_MASK) >> OWNER_SHIFT) as u32
}

fn claimed(flag: u64, owner: u32, seq: u64) -> u64 {
    flag | ((owner as u64) << OWNER_SHIFT) | seq
}

/// The header at the start of every slot, followed by the payload.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SlotHeader {
    stamp: AtomicU64,
    len: AtomicU32,
    /// Free for the layer above (sender's port id in mailboxes).
    tag: AtomicU32,
}

impl SlotHeader {
    /// Sets a fresh slot's stamp (free for the writer of position `pos`).
    pub fn init(&self, pos: u64) {
        self.stamp.store(pos, Ordering::Relaxed);
    }
}

/// A view of a ring inside a mapping.
#[derive(Debug, Clone, Copy)]
pub struct SlotRing<'a> {
    tail: &'a Cursor,
    head: &'a Cursor,
    slots: *mut u8,
    capacity: u64,
    limit: u64,
    end: u64,
    stride: usize,
    max_message: usize,
}

// SAFETY: the slot memory is shared between processes by design; every
// access goes through the stamp protocol (atomics) or raw copies into slots
// the caller has claimed.
unsafe impl Send for SlotRing<'_> {}
// SAFETY: as above.
unsafe impl Sync for SlotRing<'_> {}

impl<'a> SlotRing<'a> {
    /// Initializes the stamps of a fresh ring (slot `i` ready for the writer
    /// of position `i`).
    ///
    /// # Safety
    /// `slots` must point to `capacity * stride` writable bytes that no
    /// other process uses yet.
    pub unsafe fn init(slots: *mut u8, capacity: u32, stride: usize) {
        for i in 0..capacity as usize {
            // SAFETY: i < capacity, so the slot lies inside the region the
            // caller vouched for; slots are 64-byte aligned.
            let h = unsafe { &*(slots.add(i * stride) as *const SlotHeader) };
            h.stamp.store(i as u64, Ordering::Relaxed);
        }
    }

    /// A view over an initialized ring.
    ///
    /// # Safety
    /// `slots` must point to `capacity * stride` bytes mapped for as long as
    /// `'a`, initialized by [`SlotRing::init`]; `capacity` a power of two;
    /// `stride >= size_of::<SlotHeader>() + max_message`, a multiple of 8.
    /// At most `limit` messages are queued at once (`1..=capacity`).
    pub unsafe fn new(
        tail: &'a Cursor,
        head: &'a Cursor,
        slots: *mut u8,
        capacity: u32,
        limit: u32,
        stride: usize,
        max_message: usize,
    ) -> Self {
        debug_assert!(capacity.is_power_of_two() && capacity >= 2);
        debug_assert!(limit >= 1 && limit <= capacity);
        debug_assert!(stride >= std::mem::size_of::<SlotHeader>() + max_message);
        SlotRing {
            tail,
            head,
            slots,
            capacity: capacity as u64,
            limit: limit as u64,
            end: SEQ_MASK,
            stride,
            max_message,
        }
    }

    fn header(&self, pos: u64) -> &SlotHeader {
        let i = (pos & (self.capacity - 1)) as usize;
        // SAFETY: the index is masked below capacity, so the header lies in
        // the mapped slot region (see `new`).
        unsafe { &*(self.slots.add(i * self.stride) as *const SlotHeader) }
    }

    fn payload(&self, pos: u64) -> *mut u8 {
        let i = (pos & (self.capacity - 1)) as usize;
        // SAFETY: inside slot i, after its header (see `new`).
        unsafe {
            self.slots
                .add(i * self.stride + std::mem::size_of::<SlotHeader>())
        }
    }

    /// The same ring, writable only below position `end`: a write-once
    /// block of an unbounded chain is sealed once `end` messages went in.
    pub fn with_end(self, end: u64) -> Self {
        SlotRing { end, ..self }
    }

    /// True once the write cursor reached the end set by [`SlotRing::with_end`].
    pub fn sealed(&self) -> bool {
        self.tail_pos() >= self.end
    }

    /// Position of the next read.
    pub fn head_pos(&self) -> u64 {
        self.head.pos.load(Ordering::Acquire) & SEQ_MASK
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Most messages queued at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Largest payload.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Messages queued or in flight, clamped to the capacity.
    pub fn len(&self) -> u64 {
        let head = self.head.pos.load(Ordering::Acquire) & SEQ_MASK;
        let tail = self.tail.pos.load(Ordering::Acquire) & SEQ_MASK;
        tail.saturating_sub(head).min(self.capacity)
    }

    /// Looks at every slot between the cursors (at most the capacity): what
    /// is really there. A slow path, for status displays.
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        let head = self.head.pos.load(Ordering::Acquire) & SEQ_MASK;
        let tail = self.tail.pos.load(Ordering::Acquire) & SEQ_MASK;
        let end = tail.min(head.saturating_add(self.capacity));
        for pos in head..end {
            if self.header(pos).stamp.load(Ordering::Acquire) == pos + 1 {
                c.queued += 1;
            }
        }
        // Claims behind the read cursor (being read) or at the write
        // cursor: every slot's stamp says.
        for i in 0..self.capacity {
            let s = self.header(i).stamp.load(Ordering::Acquire);
            c.writing += u64::from(s & WRITING != 0);
            c.reading += u64::from(s & READING != 0);
        }
        c
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position of the next write (for rendezvous bookkeeping).
    pub fn tail_pos(&self) -> u64 {
        self.tail.pos.load(Ordering::Acquire) & SEQ_MASK
    }

    /// Claims the next free slot for `owner`, or `None` if the ring is full.
    ///
    /// `cached_head` is the caller's private copy of the read cursor: the
    /// shared one is re-read only when the ring looks full, so that a
    /// writer does not pull the readers' cache line on every message.
    pub fn try_claim_write(
        &self,
        owner: u32,
        cached_head: &mut u64,
    ) -> Result<Option<WriteClaim<'a>>, CorruptError> {
        check_owner(owner)?;
        let cap = self.capacity;
        let mut pos = load_pos(self.tail)?;
        let mut stale = 0;
        let mut rounds = 0;
        loop {
            too_many_rounds(&mut rounds, pos)?;
            if pos >= self.end {
                return Ok(None);
            }
            if pos.wrapping_sub(*cached_head) >= self.limit {
                *cached_head = load_pos(self.head)?;
                let queued = pos.wrapping_sub(*cached_head);
                if queued > cap && *cached_head <= pos {
                    return Err(CorruptError(format!(
                        "cursors impossible: read {cached_head}, write {pos}"
                    )));
                }
                if queued >= self.limit && *cached_head <= pos {
                    return Ok(None);
                }
            }
            let h = self.header(pos);
            let s = h.stamp.load(Ordering::Acquire);
            if s == pos {
                let mine = claimed(WRITING, owner, pos);
                if h.stamp
                    .compare_exchange_weak(s, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    // Failure means a helper advanced it already.
                    let _ = self.tail.pos.compare_exchange(
                        pos,
                        pos + 1,
                        Ordering::Release,
                        Ordering::Relaxed,
                    );
                    return Ok(Some(self.write_claim(pos, owner)));
                }
                continue;
            }
            let sq = seq(s);
            if (sq == pos && s & WRITING != 0) || (sq > pos && sq <= pos + cap) {
                // Claimed at this lap by someone else: help the cursor on.
                pos = help_past(self.tail, pos)?;
                continue;
            }
            if sq + cap == pos + 1 || (sq + cap == pos && s & WRITING != 0) {
                // Still holds the previous lap's message: full.
                return Ok(None);
            }
            pos = recheck(self.tail, pos, s, &mut stale, "write")?;
        }
    }

    /// The writable payload of a claimed slot: the claim's length (at most
    /// `max_message` bytes). The caller keeps the mapping alive as long as
    /// the claim.
    ///
    /// # Panics
    /// If the claim was not made on this ring.
    pub fn payload_mut<'c>(&self, claim: &'c mut WriteClaim<'_>) -> &'c mut [u8] {
        self.check_claim(claim.pos, claim.slot);
        // SAFETY: the claim belongs to this ring (checked above: its slot is
        // the one its position maps to, inside our mapping) and is held by
        // us (stamp WRITING|owner), so no other
        // process reads or writes its payload until we commit; the length
        // is at most the slot's payload.
        unsafe { std::slice::from_raw_parts_mut(claim.slot, claim.cap.min(self.max_message)) }
    }

    /// A claim's slot pointer must be the one its position maps to in this
    /// ring: a claim carried to another ring would address memory outside
    /// it (or freed memory).
    fn check_claim(&self, pos: u64, slot: *mut u8) {
        assert!(
            std::ptr::eq(slot, self.payload(pos)),
            "a ring claim used on a ring that did not make it"
        );
    }

    fn write_claim(&self, pos: u64, owner: u32) -> WriteClaim<'a> {
        WriteClaim {
            pos,
            owner,
            slot: self.payload(pos),
            cap: self.max_message,
            token: 0,
            _memory: PhantomData,
        }
    }

    /// Publishes a claimed slot holding `len` bytes (at most `max_message`).
    /// Fails, publishing nothing, if the claim is no longer the caller's
    /// (it was repaired as a dead process's, or scribbled over).
    pub fn commit(&self, claim: WriteClaim<'_>, len: usize, tag: u32) -> Result<(), CorruptError> {
        debug_assert!(len <= self.max_message);
        self.check_claim(claim.pos, claim.slot);
        let h = self.header(claim.pos);
        h.len
            .store(len.min(self.max_message) as u32, Ordering::Relaxed);
        h.tag.store(tag, Ordering::Relaxed);
        self.end_write(&claim, claim.pos + 1)
    }

    /// Gives a claimed slot up without a message: readers skip it.
    pub fn abandon(&self, claim: WriteClaim<'_>) -> Result<(), CorruptError> {
        self.check_claim(claim.pos, claim.slot);
        self.end_write(&claim, SKIP | (claim.pos + 1))
    }

    /// Moves a held write claim's stamp to `stamp` (committed or skipped).
    fn end_write(&self, claim: &WriteClaim<'_>, stamp: u64) -> Result<(), CorruptError> {
        let pos = claim.pos;
        let h = self.header(pos);
        h.stamp
            .compare_exchange(
                claimed(WRITING, claim.owner, pos),
                stamp,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map(drop)
            .map_err(|_| revoked("write", pos))
    }

    /// Seals a write-once ring (see [`SlotRing::with_end`]) at its current
    /// write position: every slot not yet claimed becomes skipped, so
    /// writers find it sealed and readers pass over the rest. A writer
    /// racing with this either claims its slot first (and its message is
    /// delivered) or finds it skipped and moves on. True if a writer still
    /// holds a claim in the ring (its message is yet to come).
    pub fn close(&self) -> Result<bool, CorruptError> {
        let mut pos = self.tail_pos();
        let mut steps = 0u64;
        let mut stepped_over = false;
        while pos < self.end {
            steps += 1;
            if steps > 2 * self.capacity + STALE_LIMIT as u64 {
                return Err(CorruptError(format!("cannot close the ring at {pos}")));
            }
            let h = self.header(pos);
            let poisoned = h
                .stamp
                .compare_exchange(pos, SKIP | (pos + 1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            let s = h.stamp.load(Ordering::Acquire);
            if poisoned || seq(s) > pos || s & WRITING != 0 {
                // A writer's claim we step over: its message is still to
                // come (or just came) in this block.
                stepped_over |= !poisoned;
                let _ = self.tail.pos.compare_exchange(
                    pos,
                    pos + 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            pos = self.tail_pos();
        }
        // A writer that claimed before we sealed, and moved the cursor on
        // itself, is still writing: its message is yet to come.
        let writing =
            (0..self.capacity).any(|i| self.header(i).stamp.load(Ordering::Acquire) & WRITING != 0);
        Ok(stepped_over || writing)
    }

    /// Withdraws a committed message that no reader has claimed yet (for
    /// rendezvous timeouts). False if a reader already has it.
    pub fn retract(&self, pos: u64) -> bool {
        self.header(pos)
            .stamp
            .compare_exchange(
                pos + 1,
                SKIP | (pos + 1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// True if the message at the read cursor is being written now (a
    /// writer claimed it and has not committed yet).
    pub fn writing_at_head(&self) -> bool {
        let pos = self.head.pos.load(Ordering::Acquire);
        if pos >= POS_LIMIT {
            return false;
        }
        let s = self.header(pos).stamp.load(Ordering::Acquire);
        s & WRITING != 0 && seq(s) == pos
    }

    /// True once the message committed at `pos` has been read and released
    /// (the slot has moved on to the next lap).
    pub fn was_taken(&self, pos: u64) -> bool {
        seq(self.header(pos).stamp.load(Ordering::Acquire)) >= pos + self.capacity
    }

    /// Claims the message at the head for `owner`. Skipped slots (abandoned
    /// or retracted by their writer) are released on the way.
    pub fn try_claim_read(
        &self,
        owner: u32,
        max_len: usize,
    ) -> Result<ReadAttempt<'a>, CorruptError> {
        check_owner(owner)?;
        let cap = self.capacity;
        let mut pos = load_pos(self.head)?;
        let mut stale = 0;
        let mut rounds = 0;
        loop {
            too_many_rounds(&mut rounds, pos)?;
            if pos >= self.end {
                // A write-once view reads only its own positions: what lies
                // beyond belongs to a later use of the same memory (a
                // recycled chain block), for views that know it.
                return Ok(ReadAttempt::Empty);
            }
            let h = self.header(pos);
            let s = h.stamp.load(Ordering::Acquire);
            let sq = seq(s);
            if s == pos + 1 || s == SKIP | (pos + 1) {
                let len = h.len.load(Ordering::Relaxed) as usize;
                let skip = s & SKIP != 0;
                if !skip && len > self.max_message {
                    return Err(CorruptError(format!(
                        "message length {len} exceeds the maximum {}",
                        self.max_message
                    )));
                }
                if !skip && len > max_len {
                    return Ok(ReadAttempt::TooLong(len));
                }
                let next = if skip {
                    pos + cap
                } else {
                    claimed(READING, owner, pos + 1)
                };
                if h.stamp
                    .compare_exchange_weak(s, next, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                let _ = self.head.pos.compare_exchange(
                    pos,
                    pos + 1,
                    Ordering::Release,
                    Ordering::Relaxed,
                );
                if skip {
                    pos = load_pos(self.head)?;
                    continue;
                }
                // The length was read once, after the Acquire load of the
                // committed stamp, and validated: only that copy is used.
                return Ok(ReadAttempt::Claimed(self.read_claim(pos, owner, len)));
            }
            if sq == pos && s & WRITING != 0 {
                return Ok(ReadAttempt::Writing);
            }
            let busy = s & (WRITING | READING) != 0;
            if sq == pos || (busy && sq + cap == pos + 1) {
                // Free at this lap, or a reader of the previous lap still
                // holds it: nothing to read yet.
                return Ok(ReadAttempt::Empty);
            }
            if (sq == pos + 1 && s & READING != 0) || (sq > pos + 1 && sq <= pos + cap + 1) {
                // Read at this lap by someone else: help the cursor on.
                pos = help_past(self.head, pos)?;
                continue;
            }
            pos = recheck(self.head, pos, s, &mut stale, "read")?;
        }
    }

    /// The payload of a claimed message. The caller keeps the mapping alive
    /// as long as the claim.
    ///
    /// # Panics
    /// If the claim was not made on this ring.
    pub fn payload_of<'c>(&self, claim: &'c ReadClaim<'_>) -> &'c [u8] {
        self.check_claim(claim.pos, claim.slot);
        // SAFETY: the claim belongs to this ring (checked above) and is held
        // by us: its writer has committed and nobody writes the slot until
        // we release it; `len` was bounded by `max_message`.
        unsafe { std::slice::from_raw_parts(claim.slot, claim.len.min(self.max_message)) }
    }

    /// The tag the writer stored with the message.
    pub fn tag_of(&self, claim: &ReadClaim<'_>) -> u32 {
        self.header(claim.pos).tag.load(Ordering::Relaxed)
    }

    fn read_claim(&self, pos: u64, owner: u32, len: usize) -> ReadClaim<'a> {
        ReadClaim {
            pos,
            owner,
            slot: self.payload(pos),
            len,
            token: 0,
            _memory: PhantomData,
        }
    }

    /// Frees a read slot for the writer of the next lap. Fails if the
    /// claim is no longer the caller's (repaired, or scribbled over).
    pub fn release(&self, claim: ReadClaim<'_>) -> Result<(), CorruptError> {
        self.check_claim(claim.pos, claim.slot);
        let pos = claim.pos;
        self.header(pos)
            .stamp
            .compare_exchange(
                claimed(READING, claim.owner, pos + 1),
                pos + self.capacity,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map(drop)
            .map_err(|_| revoked("read", pos))
    }

    /// Repairs every slot that `owner` left claimed: half-written slots
    /// become skipped, half-read slots are released. Idempotent.
    ///
    /// # Safety
    /// `owner` must be dead (or be the caller, holding no claim it will
    /// still use), and its index must stay reserved meanwhile: a live
    /// owner's claim would be taken from under it, and its payload slice
    /// handed to another process.
    pub unsafe fn recover_owner(&self, owner: u32) -> Recovered {
        let mut r = Recovered::default();
        for i in 0..self.capacity {
            let h = self.header(i);
            let s = h.stamp.load(Ordering::Acquire);
            if s & (WRITING | READING) == 0 || owner_of(s) != owner {
                continue;
            }
            let sq = seq(s);
            if sq >= POS_LIMIT || (s & READING != 0 && sq == 0) {
                // No claim ever carries these: a scribble, not ours to fix.
                continue;
            }
            let (next, counter) = if s & WRITING != 0 {
                (SKIP | (sq + 1), &mut r.abandoned_writes)
            } else {
                (sq - 1 + self.capacity, &mut r.lost_reads)
            };
            if h.stamp
                .compare_exchange(s, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                *counter += 1;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::MAX_OWNER;

    struct Heap {
        tail: Cursor,
        head: Cursor,
        slots: Vec<u64>,
        cap: u32,
        stride: usize,
    }

    impl Heap {
        fn new(cap: u32, max: usize) -> Heap {
            let stride = (std::mem::size_of::<SlotHeader>() + max).div_ceil(64) * 64;
            let mut slots = vec![0u64; cap as usize * stride / 8];
            // SAFETY: the vector holds cap * stride bytes, 8-aligned.
            unsafe { SlotRing::init(slots.as_mut_ptr().cast(), cap, stride) };
            Heap {
                tail: Cursor::default(),
                head: Cursor::default(),
                slots,
                cap,
                stride,
            }
        }

        fn ring(&mut self, max: usize) -> SlotRing<'_> {
            self.ring_limited(max, self.cap)
        }

        fn ring_limited(&mut self, max: usize, limit: u32) -> SlotRing<'_> {
            // SAFETY: built by `Heap::new` with the same geometry.
            unsafe {
                SlotRing::new(
                    &self.tail,
                    &self.head,
                    self.slots.as_mut_ptr().cast(),
                    self.cap,
                    limit,
                    self.stride,
                    max,
                )
            }
        }
    }

    fn recover_owner(r: &SlotRing<'_>, owner: u32) -> Recovered {
        // SAFETY: the tests call it only for owners that hold no claim
        // they will still use.
        unsafe { r.recover_owner(owner) }
    }

    fn put(r: &SlotRing<'_>, owner: u32, msg: &[u8]) -> bool {
        let mut cached_head = 0;
        match r.try_claim_write(owner, &mut cached_head).unwrap() {
            Some(mut c) => {
                r.payload_mut(&mut c)[..msg.len()].copy_from_slice(msg);
                r.commit(c, msg.len(), 0).unwrap();
                true
            }
            None => false,
        }
    }

    fn take(r: &SlotRing<'_>) -> Option<Vec<u8>> {
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

    #[test]
    fn fills_to_capacity_then_drains_in_order() {
        let mut heap = Heap::new(4, 16);
        let r = heap.ring(16);
        for lap in 0..3u8 {
            for i in 0..4u8 {
                assert!(put(&r, 0, &[lap, i]));
            }
            assert!(!put(&r, 0, b"x"), "fifth message fits in 4 slots");
            assert_eq!(r.len(), 4);
            for i in 0..4u8 {
                assert_eq!(take(&r).unwrap(), vec![lap, i]);
            }
            assert!(take(&r).is_none());
        }
    }

    #[test]
    fn limit_below_slot_count_is_honoured() {
        let mut heap = Heap::new(8, 4);
        let r = heap.ring_limited(4, 5);
        for round in 0..4 {
            for i in 0..5u8 {
                assert!(put(&r, 0, &[i]), "round {round} message {i}");
            }
            assert!(!put(&r, 0, b"x"));
            assert_eq!(take(&r).unwrap(), [0]);
            assert!(put(&r, 0, &[5]));
            assert!(!put(&r, 0, b"x"));
            for i in 1..6u8 {
                assert_eq!(take(&r).unwrap(), [i]);
            }
        }
    }

    #[test]
    fn dead_writer_and_reader_are_repaired() {
        let mut heap = Heap::new(2, 8);
        let r = heap.ring(8);
        let _lost_claim = r.try_claim_write(7, &mut 0).unwrap().unwrap();
        assert!(put(&r, 0, b"ok"));
        // The reader waits behind the half-written slot...
        assert!(matches!(
            r.try_claim_read(1, 8).unwrap(),
            ReadAttempt::Writing
        ));
        // ...until its dead owner is recovered.
        let rec = recover_owner(&r, 7);
        assert_eq!(rec.abandoned_writes, 1);
        assert_eq!(take(&r).unwrap(), b"ok");
        // A reader dying with a claim: the slot comes back to writers.
        assert!(put(&r, 0, b"a") && put(&r, 0, b"b"));
        let ReadAttempt::Claimed(_held) = r.try_claim_read(9, 8).unwrap() else {
            panic!("expected a message")
        };
        assert_eq!(recover_owner(&r, 9).lost_reads, 1);
        assert_eq!(take(&r).unwrap(), b"b");
        assert!(put(&r, 0, b"c") && put(&r, 0, b"d"));
    }

    #[test]
    fn out_of_range_cursors_and_stamps_are_reported() {
        let mut heap = Heap::new(2, 8);
        let r = heap.ring(8);
        heap_cursors(&r, u64::MAX - 3, 0);
        assert!(r.try_claim_write(0, &mut 0).is_err());
        heap_cursors(&r, 0, (1 << 53) - 1);
        assert!(r.try_claim_read(0, 8).is_err());
        heap_cursors(&r, 0, 0);
        r.header(1)
            .stamp
            .store(READING | (3 << OWNER_SHIFT), Ordering::Relaxed);
        assert_eq!(recover_owner(&r, 3), Recovered::default());
    }

    fn heap_cursors(r: &SlotRing<'_>, tail: u64, head: u64) {
        r.tail.pos.store(tail, Ordering::Relaxed);
        r.head.pos.store(head, Ordering::Relaxed);
    }

    #[test]
    fn garbage_stamps_are_reported_not_looped_on() {
        let mut heap = Heap::new(2, 8);
        let r = heap.ring(8);
        r.header(0).stamp.store(12345, Ordering::Relaxed);
        assert!(r.try_claim_write(0, &mut 0).is_err());
        r.header(0).stamp.store(1, Ordering::Relaxed);
        r.header(0).len.store(1 << 30, Ordering::Relaxed);
        assert!(r.try_claim_read(0, 8).is_err());
    }

    #[test]
    fn closed_write_once_ring_is_sealed_and_drains() {
        let mut heap = Heap::new(4, 8);
        let r = heap.ring(8).with_end(4);
        assert!(put(&r, 0, b"a"));
        let pending = r.try_claim_write(3, &mut 0).unwrap().unwrap();
        assert!(r.close().unwrap(), "stepped over the pending claim");
        assert!(r.sealed());
        assert!(!put(&r, 0, b"late"));
        r.commit(pending, 1, 0).unwrap();
        assert_eq!(take(&r).unwrap(), b"a");
        assert_eq!(take(&r).unwrap(), [0]);
        assert!(take(&r).is_none());
        assert_eq!(r.head_pos(), 4, "readers passed the skipped slots");
    }

    /// A write-once ring drained at the end of its lap goes on with the
    /// next lap (a recycled chain block): a view of the next lap writes
    /// and reads positions 4..8, and a view of the old lap, held by a
    /// process that slept through the whole first lap, neither writes nor
    /// reads there.
    #[test]
    fn a_view_of_an_earlier_lap_neither_writes_nor_reads_the_next_one() {
        let mut heap = Heap::new(4, 8);
        let old = heap.ring(4).with_end(4);
        for i in 0..4u8 {
            assert!(put(&old, 0, &[i]));
        }
        for i in 0..4u8 {
            assert_eq!(take(&old).unwrap(), [i]);
        }
        let next = old.with_end(8);
        assert!(old.sealed() && !next.sealed());
        assert!(put(&next, 1, b"n"));
        assert!(!put(&old, 2, b"stale"), "the old view is sealed");
        assert!(take(&old).is_none(), "the old view reads nothing beyond its end");
        assert_eq!(take(&next).unwrap(), b"n");
    }

    #[test]
    #[should_panic(expected = "did not make it")]
    fn a_claim_used_on_another_ring_is_refused() {
        let a = crate::ring::HeapRing::new(2, 2);
        let b = crate::ring::HeapRing::new(8, 8);
        let mut claim = a.ring().try_claim_write(0, 1, &mut Default::default()).unwrap().unwrap();
        b.ring().payload_mut(&mut claim).fill(1);
    }

    #[test]
    fn owner_index_beyond_the_stamp_bits_is_refused() {
        let heap = crate::ring::HeapRing::new(2, 2);
        assert!(heap.ring().try_claim_write(MAX_OWNER + 1, 1, &mut Default::default()).is_err());
        assert!(heap.ring().try_claim_read(MAX_OWNER + 1, 8).is_err());
    }

    #[test]
    fn retract_only_before_a_reader_claims() {
        let mut heap = Heap::new(2, 8);
        let r = heap.ring(8);
        let pos = r.tail_pos();
        assert!(put(&r, 0, b"x"));
        assert!(!r.was_taken(pos));
        assert!(r.retract(pos));
        assert!(take(&r).is_none());
        let pos = r.tail_pos();
        assert!(put(&r, 0, b"y"));
        assert_eq!(take(&r).unwrap(), b"y");
        assert!(r.was_taken(pos));
        assert!(!r.retract(pos));
    }

    #[test]
    fn a_repaired_claim_fails_at_commit_and_release_instead_of_overwriting() {
        let mut heap = Heap::new(2, 8);
        let r = heap.ring(8);
        // A live writer wrongly repaired: its commit must fail...
        let mut c = r.try_claim_write(7, &mut 0).unwrap().unwrap();
        r.payload_mut(&mut c)[0] = 1;
        assert_eq!(recover_owner(&r, 7).abandoned_writes, 1);
        assert!(r.commit(c, 1, 0).is_err());
        // ...and leave the ring as the repair left it: readers skip it.
        assert!(take(&r).is_none());
        assert!(put(&r, 0, b"next"));
        assert_eq!(take(&r).unwrap(), b"next");
        // A reader likewise: its release fails, the slot is not freed twice.
        assert!(put(&r, 0, b"a"));
        let ReadAttempt::Claimed(held) = r.try_claim_read(9, 8).unwrap() else {
            panic!("expected a message")
        };
        assert_eq!(recover_owner(&r, 9).lost_reads, 1);
        assert!(put(&r, 0, b"b") && put(&r, 0, b"c"));
        assert!(r.release(held).is_err(), "would free the slot of 'c'");
        assert_eq!(take(&r).unwrap(), b"b");
        assert_eq!(take(&r).unwrap(), b"c");
    }

    #[test]
    fn a_length_scribbled_after_validation_is_not_used() {
        let mut heap = Heap::new(2, 8);
        let r = heap.ring(8);
        assert!(put(&r, 0, b"abcd"));
        let ReadAttempt::Claimed(c) = r.try_claim_read(1, 4).unwrap() else {
            panic!("expected a message")
        };
        r.header(c.pos).len.store(4096, Ordering::Relaxed);
        assert_eq!(r.payload_of(&c), b"abcd");
        r.release(c).unwrap();
    }

    #[test]
    fn heap_ring_payloads_are_interior_mutable() {
        // The HeapRing doc example, where Miri found writes through a
        // pointer derived from a shared reference (payload bytes outside
        // any UnsafeCell): now checked under Stacked and Tree Borrows.
        let heap = crate::ring::HeapRing::new(4, 3);
        let ring = heap.ring();
        let other = heap.ring();
        for round in 0..3u8 {
            let mut claim = ring.try_claim_write(0, 2, &mut Default::default()).unwrap().expect("room");
            ring.payload_mut(&mut claim)[..2].copy_from_slice(&[round, b'i']);
            ring.commit(claim, 2, 0).unwrap();
            let ReadAttempt::Claimed(read) = other.try_claim_read(1, 64).unwrap() else {
                panic!("expected a message")
            };
            assert_eq!(other.payload_of(&read), [round, b'i']);
            other.release(read).unwrap();
        }
    }

    #[test]
    fn census_counts_what_is_really_there() {
        let mut heap = Heap::new(8, 8);
        let r = heap.ring(8);
        assert!(put(&r, 0, b"a") && put(&r, 0, b"b"));
        let _writing = r.try_claim_write(3, &mut 0).unwrap().unwrap();
        let abandoned = r.try_claim_write(3, &mut 0).unwrap().unwrap();
        r.abandon(abandoned).unwrap();
        assert!(put(&r, 0, b"c"));
        let ReadAttempt::Claimed(reading) = r.try_claim_read(1, 8).unwrap() else {
            panic!("expected a message")
        };
        assert_eq!(r.len(), 4, "the cursors span the slots from the read cursor on");
        assert_eq!(
            r.census(),
            Census {
                queued: 2,
                writing: 1,
                reading: 1
            }
        );
        r.release(reading).unwrap();
    }
}
