//! What a claim on a ring is: the types that the packed ring
//! ([`crate::packed`]) hands out, and that the layers above hold.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use crate::error::CorruptError;
use crate::layout::Counters;

pub(crate) fn revoked(what: &str, pos: u64) -> CorruptError {
    CorruptError(format!(
        "the {what} claim of position {pos} was taken from its holder (repaired as a dead process's, or overwritten)"
    ))
}

/// The largest owner index a stamp can carry.
pub const MAX_OWNER: u32 = 0xFF;


/// A slot claimed for writing, in memory that lives for `'a`. Commit it,
/// or abandon it (readers skip it).
#[derive(Debug)]
pub struct WriteClaim<'a> {
    pub(crate) pos: u64,
    pub(crate) owner: u32,
    pub(crate) slot: *mut u8,
    /// Writable bytes at `slot`.
    pub(crate) cap: usize,
    /// A shared packed ring: the lock word taken for this claim (0 else).
    pub(crate) token: u64,
    pub(crate) _memory: PhantomData<&'a ()>,
}

impl WriteClaim<'_> {
    /// The same claim, unbound from its memory's lifetime.
    ///
    /// # Safety
    /// The caller keeps the ring's memory alive as long as the claim.
    pub(crate) unsafe fn extend(self) -> WriteClaim<'static> {
        WriteClaim {
            pos: self.pos,
            owner: self.owner,
            slot: self.slot,
            cap: self.cap,
            token: self.token,
            _memory: PhantomData,
        }
    }

    /// The position claimed (to follow the message with [`crate::ring::Ring::was_taken`]).
    pub fn pos(&self) -> u64 {
        self.pos
    }
}

/// A slot claimed for reading, in memory that lives for `'a`. Release it
/// when done.
#[derive(Debug)]
pub struct ReadClaim<'a> {
    pub(crate) pos: u64,
    pub(crate) owner: u32,
    pub(crate) slot: *mut u8,
    pub(crate) len: usize,
    /// A shared packed ring: the lock word taken for this claim (0 else).
    pub(crate) token: u64,
    /// Messages released before this one: its index in the ring's stream.
    pub(crate) index: u64,
    pub(crate) _memory: PhantomData<&'a ()>,
}

impl ReadClaim<'_> {
    /// The same claim, unbound from its memory's lifetime.
    ///
    /// # Safety
    /// The caller keeps the ring's memory alive as long as the claim.
    pub(crate) unsafe fn extend(self) -> ReadClaim<'static> {
        ReadClaim {
            pos: self.pos,
            owner: self.owner,
            slot: self.slot,
            len: self.len,
            token: self.token,
            index: self.index,
            _memory: PhantomData,
        }
    }

    /// The position of the message held.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// How many messages the ring released before this one: the same
    /// number again if this message is put back and read anew.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// What a reader found.
#[derive(Debug)]
pub enum ReadAttempt<'a> {
    /// A message, claimed.
    Claimed(ReadClaim<'a>),
    /// No committed message at the head.
    Empty,
    /// The message at the head is being written now: one will be there
    /// soon (unless its writer dies, which reaping repairs).
    Writing,
    /// The next message is longer than the reader accepts; not claimed.
    TooLong(usize),
    /// Another reader of a shared ring is taking a message now: look again
    /// soon (its release wakes waiters).
    Busy,
}

/// What the slots between the cursors hold, for status displays.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Committed messages no reader has claimed yet.
    pub queued: u64,
    /// Slots claimed by a writer, not committed yet.
    pub writing: u64,
    /// Messages claimed by a reader, not released yet.
    pub reading: u64,
}

impl std::ops::Add for Census {
    type Output = Census;
    fn add(self, o: Census) -> Census {
        Census {
            queued: self.queued + o.queued,
            writing: self.writing + o.writing,
            reading: self.reading + o.reading,
        }
    }
}

/// What [`crate::ring::Ring::recover_owner`] repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Slots the dead process was writing: now skipped by readers.
    pub abandoned_writes: u64,
    /// Slots the dead process was reading: released, their message lost.
    pub lost_reads: u64,
    /// Messages the dead process was reading that stay queued, because it
    /// asked for redelivery: the next reader gets them again.
    pub redelivered_reads: u64,
    /// The index ([`ReadClaim::index`]) of the message put back for
    /// redelivery, if one was.
    pub put_back: Option<u64>,
}

impl Recovered {
    /// Adds what was repaired to a queue's loss counters. The put-back
    /// message's index, if any, is `last_put_back` (`put_back` in the
    /// queue's terms), stored before the count that tells of it.
    pub(crate) fn add_to(&self, c: &Counters, last_put_back: Option<u64>) {
        c.abandoned_writes
            .fetch_add(self.abandoned_writes, Ordering::Relaxed);
        c.lost_reads.fetch_add(self.lost_reads, Ordering::Relaxed);
        if self.redelivered_reads > 0 {
            // Unknown (0) where the caller cannot name it: whoever asks
            // then believes nothing was put back, rather than a wrong one.
            let last = last_put_back.map_or(0, |index| index + 1);
            c.last_put_back.store(last, Ordering::Relaxed);
            c.redelivered_reads
                .fetch_add(self.redelivered_reads, Ordering::Release);
        }
    }

    /// Adds `other`'s repairs to these.
    pub(crate) fn merge(&mut self, other: Recovered) {
        self.abandoned_writes += other.abandoned_writes;
        self.lost_reads += other.lost_reads;
        self.redelivered_reads += other.redelivered_reads;
        self.put_back = other.put_back.or(self.put_back);
    }
}


/// A writer's private copy of how far the reader has gone (shared memory
/// is read only when this copy says the ring is full), and in a packed
/// ring of where the writer itself stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadCache {
    /// The reader's position (a slot position, or bytes in a packed ring).
    pub pos: u64,
    /// Messages the reader has freed (packed ring).
    pub count: u64,
    /// Packed ring: the position and message count of the writer's last
    /// claim, so that a write cursor changed under it (by a scribbler) is
    /// found, not followed. `None` until the first claim.
    pub own: Option<(u64, u64)>,
}
