//! The `#[repr(C)]` layout of a segment and its validation.
//!
//! ```text
//! offset 0            Header (geometry, cursors, wait words, counters)
//! peers_offset        PEER_SLOTS x PeerEntry (attachment table)
//! slots_offset        the ring: `ring_bytes` bytes of packed records (the
//!                     name is the retired slot engine's)
//! ```
//!
//! Only fixed-width integers and atomics live here, and only offsets, never
//! pointers: every process maps the segment at its own address. The creator
//! writes everything, then publishes [`MAGIC`] with a Release store; openers
//! wait for it with Acquire and check the geometry against the real mapping
//! size before touching anything else. Each process keeps its own validated
//! copy of the geometry ([`Geometry`]) and never re-reads it from shared
//! memory, so a peer that scribbles on the header later cannot make us index
//! outside the mapping.

use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::atomic::AtomicU64 as CursorWord;

use crate::error::CorruptError;
use crate::peers::{PeerEntry, Roster};
use crate::sync::EventCount;

/// Identifies an ipc-core segment: ASCII "IPCCORE1" read as little endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IPCCORE1");

/// Layout version written by this build; openers refuse any other.
/// Version 2: liveness held by byte locks, generations in the attachment
/// table, claims marked in single mode's write cursor. Version 3: the
/// packed engine (single mode), message counts in the cursors, the
/// reader's lazily published `freed` cursor; chained blocks are recycled,
/// each carrying the chain index it serves and its lap in
/// [`Chain::block_identity`]. Version 4: shared packed rings (lock words
/// in the cursors). Version 5: every queue is packed, unbounded chains'
/// blocks too (write-once laps), and the attachment table records a
/// receiver's in-place read of a chain block (`hold_block`, `hold_pos`).
/// Version 6: the head cursor's redelivery request (`Cursor::redeliver`)
/// and the tail cursor's commit tags (`Cursor::tag`, `tag_pending`,
/// `tag_pos`), which a repair by an older build would not honour.
/// Version 7: rendezvous offers keep tags and can be redelivered
/// (`Cursor::tag_at`, `tag_owner_index`, `tag_owner`, `withdrawn_at`,
/// `kept_at`). Version 8: an unbounded chain's last tag and its mark
/// (`Chain::tag`, `tag_pending`, `tag_pos`, `tag_block`). Version 9: the
/// index of the message put back last (`Counters::last_put_back`), which
/// a repair by an older build would not store.
pub const LAYOUT_VERSION: u32 = 9;

/// [`Header::engine`]: fixed-size slots with sequence stamps, retired in
/// layout version 5 (every queue is packed): refused.
pub const ENGINE_SLOTS: u32 = 0;
/// [`Header::engine`]: packed records in a ring of bytes (single mode).
pub const ENGINE_PACKED: u32 = 1;

/// A packed ring's default budget when the creator gives none: room for
/// `capacity` messages of the largest size, but no more than this (and
/// never less than one largest message needs).
pub const DEFAULT_BUDGET_CAP: u64 = 4 << 20;

/// Size of the attachment table: at most this many processes attach at once.
pub const PEER_SLOTS: u32 = 64;

/// Largest slot count accepted.
pub const MAX_CAPACITY: u32 = 1 << 20;

/// Largest message size accepted (64 MiB).
pub const MAX_MESSAGE: u32 = 64 << 20;

/// Largest segment accepted (16 GiB), so that no geometry overflows.
pub const MAX_SEGMENT: u64 = 16 << 30;

/// What a segment holds: the shared-memory model or the message-passing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// A producer/consumer buffer.
    Buffer = 1,
    /// A mailbox (message passing).
    Mailbox = 2,
}

impl Kind {
    /// Human name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Buffer => "buffer",
            Kind::Mailbox => "mailbox",
        }
    }

    fn from_u32(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Buffer),
            2 => Some(Kind::Mailbox),
            _ => None,
        }
    }
}

/// How a queue buffers messages (stored in [`Header::flavor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Flavor {
    /// At most `capacity` messages wait; senders block when full.
    Bounded = 0,
    /// Rendezvous: a send completes only when a receiver took the message.
    Zero = 1,
    /// Senders never block; storage grows by chaining further segments.
    Unbounded = 2,
}

impl Flavor {
    /// Reads the stored value.
    pub fn from_u32(v: u32) -> Option<Flavor> {
        match v {
            0 => Some(Flavor::Bounded),
            1 => Some(Flavor::Zero),
            2 => Some(Flavor::Unbounded),
            _ => None,
        }
    }
}

/// A counter on its own pair of cache lines (adjacent-line prefetch pulls
/// 128 bytes on x86), so that producers and consumers do not false-share.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct Cursor {
    /// The position: next slot to write (tail) or to read (head); in a
    /// packed ring, a byte position.
    pub pos: CursorWord,
    /// Packed ring: messages committed (tail) or released (head).
    pub count: CursorWord,
    /// Packed ring shared by several writers (tail) or readers (head): who
    /// holds this side's claim (see `packed::Lock`); unused otherwise.
    pub lock: CursorWord,
    /// Packed ring, head only: a reader that asked for redelivery stores
    /// here the count of the message it is about to hold, plus one; if it
    /// dies holding that message, the repair puts it back instead of
    /// counting it lost. 0 (or any other count): no redelivery.
    pub redeliver: CursorWord,
    /// Packed ring, tail only: the tag of the last tagged message
    /// committed (see `PackedRing::commit_tagged`); 0: none yet.
    pub tag: CursorWord,
    /// Packed ring, tail only: the tag of the claim at `tag_pos - 1`,
    /// stored before its commit, so that the repair of a writer killed
    /// right after the commit can still move it to `tag`.
    pub tag_pending: CursorWord,
    /// Packed ring, tail only: the position of the tagged claim being
    /// committed, plus one; 0 when no tagged commit is under way.
    pub tag_pos: CursorWord,
    /// Packed ring, tail only: the position of the record that carries
    /// `tag`, plus one; 0 when none does any more (a rendezvous offer
    /// withdrawn takes its tag with it: `PackedRing::last_offer_tag`).
    pub tag_at: CursorWord,
    /// Packed ring, tail only (rendezvous): the attachment index, plus
    /// one, of the sender of the tagged offer at `tag_at`, stored before
    /// its commit; with `tag_owner`, its attachment word: that offer is
    /// withdrawn by `PackedRing::last_offer_tag` only once its sender is
    /// no longer attached.
    pub tag_owner_index: CursorWord,
    /// Packed ring, tail only: see `tag_owner_index`.
    pub tag_owner: CursorWord,
    /// Packed ring, head only (shared rings): the position of the record
    /// withdrawn last, plus one, stored before its `WITHDRAWN` mark, so
    /// that the repair of a withdrawer killed in between finishes it.
    pub withdrawn_at: CursorWord,
    /// Packed ring, head only: the position of a record that a reader
    /// which had asked for redelivery died holding, plus one: it was
    /// taken, so its rendezvous sender can no longer withdraw it.
    pub kept_at: CursorWord,
}

/// Counters kept for status and for end-of-stream decisions.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct Counters {
    /// Producers that ever attached (monotonic).
    pub producers_total: AtomicU32,
    /// Consumers that ever attached (monotonic).
    pub consumers_total: AtomicU32,
    /// Messages whose producer died while writing them (never delivered,
    /// and their send never returned success).
    pub abandoned_writes: AtomicU64,
    /// Messages lost because the consumer that held them died mid-read
    /// (or its callback panicked).
    pub lost_reads: AtomicU64,
    /// Messages put back for the next receiver because the receiver that
    /// held them died and had asked for redelivery (`Receiver::redeliver_if_killed`).
    pub redelivered_reads: AtomicU64,
    /// The index of the message put back last (see `redelivered_reads`),
    /// plus one (0: none): stored before the count moves.
    pub last_put_back: AtomicU64,
    /// Claims whose commit or release found them taken away (repaired as
    /// a dead process's while their holder lived, or scribbled over).
    pub revoked_claims: AtomicU64,
    /// Producers found dead (killed, or exited without detaching): a
    /// stream they were writing may be incomplete.
    pub dead_producers: AtomicU64,
    /// Consumers found dead.
    pub dead_consumers: AtomicU64,
    /// The pid (as it saw itself) of the last producer found dead.
    pub last_dead_producer: AtomicU32,
    /// 1 from the moment a producer is found dead until a producer starts
    /// a new stream (attaches alone to an empty queue): what the queue
    /// holds may be an incomplete stream.
    pub stream_incomplete: AtomicU32,
    /// Streams that ended incomplete: bumped when a new stream clears
    /// `stream_incomplete`, so that a receiver that lived through both
    /// streams still learns of the death.
    pub incomplete_streams: AtomicU32,
}

impl Counters {
    /// The attach count of `role`.
    pub fn total(&self, role: crate::peers::Role) -> &AtomicU32 {
        match role {
            crate::peers::Role::Producer => &self.producers_total,
            crate::peers::Role::Consumer => &self.consumers_total,
        }
    }
}

/// Where an unbounded queue's chain of blocks starts and ends.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct Chain {
    /// Index of the oldest block still being read.
    pub head_block: AtomicU64,
    /// Index of the block being written.
    pub tail_block: AtomicU64,
    /// In a chained block (not in a main segment): which chain index the
    /// block serves now (low 32 bits, the index modulo 2^32) and in which
    /// lap (high 32 bits). A block serving its `lap`-th index holds ring
    /// positions `lap * slots .. (lap + 1) * slots`; a drained block is
    /// recycled for a later index by moving on one lap (see
    /// `channel.rs`), so a process still holding a view of an earlier lap
    /// finds it sealed and drained, never the new lap's messages.
    pub block_identity: AtomicU64,
    /// In a main segment: the tag of the last tagged message committed
    /// anywhere in the chain (0: none). Kept here, not in the blocks, so
    /// that it outlives the block its message went into.
    pub tag: AtomicU64,
    /// The tag of a tagged commit under way (see `tag_pos`).
    pub tag_pending: AtomicU64,
    /// Non-zero while a tagged commit is under way: 1 + the position of
    /// its claim in block `tag_block`. That block keeps its name until
    /// the mark is settled: its own tag marks say whether the message
    /// went in.
    pub tag_pos: AtomicU64,
    /// The block of the tagged commit under way.
    pub tag_block: AtomicU64,
}

/// The segment header, at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`] once initialized; zero while the creator works.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`Kind`] as u32.
    pub kind: u32,
    /// Most messages queued at once.
    pub capacity: u32,
    /// Number of slots in the ring (a power of two, at least `capacity`).
    pub slots: u32,
    /// Largest payload per message, bytes.
    pub max_message: u32,
    /// Bytes from one slot to the next.
    pub slot_stride: u32,
    /// Entries in the attachment table.
    pub peer_slots: u32,
    /// 1 if at most one producer and one consumer attach at a time (the
    /// fast path without compare-and-swaps), else 0.
    pub single: u32,
    /// Total bytes of the segment.
    pub total_size: u64,
    /// Offset of the attachment table.
    pub peers_offset: u64,
    /// Offset of slot 0.
    pub slots_offset: u64,
    /// Capacity mode (see `channel::Flavor`).
    pub flavor: u32,
    /// For a block of an unbounded chain: its index in the chain (0 for a
    /// main segment).
    pub block_index: u32,
    /// Set by any attached process that cannot take part in asymmetric
    /// barriers (membarrier refused): every wake-up then uses full fences.
    pub needs_fences: AtomicU32,
    /// [`ENGINE_SLOTS`] or [`ENGINE_PACKED`].
    pub engine: u32,
    /// Packed ring: its bytes (a power of two); 0 for slots.
    pub ring_bytes: u64,
    /// Checksum of every field above but the magic and `needs_fences`
    /// ([`header_check`]): a scribbled geometry is refused at open even
    /// when it would be self-consistent.
    pub check: u64,
    /// Next position to write.
    pub tail: Cursor,
    /// Next position to read.
    pub head: Cursor,
    /// Packed ring: what the reader has freed, published lazily (once per
    /// quarter of the ring) for the writer to read without pulling the
    /// reader's hot line.
    pub freed: Cursor,
    /// Consumers sleep here waiting for data.
    pub data_ready: EventCount,
    /// Producers sleep here waiting for space (or for a rendezvous).
    pub space_ready: EventCount,
    /// Statistics and attachment history.
    pub counters: Counters,
    /// Who is attached now, one bit per table entry and role.
    pub roster: Roster,
    /// The chain of blocks of an unbounded queue.
    pub chain: Chain,
}

/// The fields of a [`Header`] that never change after creation, copied
/// out of shared memory once. Validation and every later use work on the
/// copy, so a peer that scribbles on the header after we looked cannot
/// make us use a value we did not check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    /// See [`Header::version`].
    pub version: u32,
    /// See [`Header::kind`].
    pub kind: u32,
    /// See [`Header::capacity`].
    pub capacity: u32,
    /// See [`Header::slots`].
    pub slots: u32,
    /// See [`Header::max_message`].
    pub max_message: u32,
    /// See [`Header::slot_stride`].
    pub slot_stride: u32,
    /// See [`Header::peer_slots`].
    pub peer_slots: u32,
    /// See [`Header::single`].
    pub single: u32,
    /// See [`Header::total_size`].
    pub total_size: u64,
    /// See [`Header::peers_offset`].
    pub peers_offset: u64,
    /// See [`Header::slots_offset`].
    pub slots_offset: u64,
    /// See [`Header::flavor`].
    pub flavor: u32,
    /// See [`Header::block_index`].
    pub block_index: u32,
    /// See [`Header::engine`].
    pub engine: u32,
    /// See [`Header::ring_bytes`].
    pub ring_bytes: u64,
    /// See [`Header::check`].
    pub check: u64,
}

impl Fixed {
    /// Copies the fixed fields out of `h`, each read once.
    pub fn read(h: &Header) -> Fixed {
        let h: *const Header = h;
        macro_rules! once {
            ($field:ident) => {
                // SAFETY: `h` comes from a live reference; a volatile read
                // of a plain integer field, which another process may be
                // writing (we validate the copy, never the original).
                unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*h).$field)) }
            };
        }
        Fixed {
            version: once!(version),
            kind: once!(kind),
            capacity: once!(capacity),
            slots: once!(slots),
            max_message: once!(max_message),
            slot_stride: once!(slot_stride),
            peer_slots: once!(peer_slots),
            single: once!(single),
            total_size: once!(total_size),
            peers_offset: once!(peers_offset),
            slots_offset: once!(slots_offset),
            flavor: once!(flavor),
            block_index: once!(block_index),
            engine: once!(engine),
            ring_bytes: once!(ring_bytes),
            check: once!(check),
        }
    }
}

/// Geometry of a segment, validated, in this process's own memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// What the segment holds.
    pub kind: Kind,
    /// Most messages queued at once.
    pub capacity: u32,
    /// Slots in the ring: a power of two, at least 2 and `capacity`.
    pub slots: u32,
    /// Largest payload per message.
    pub max_message: u32,
    /// Bytes from one slot to the next.
    pub slot_stride: u32,
    /// Entries in the attachment table.
    pub peer_slots: u32,
    /// Offset of the attachment table.
    pub peers_offset: u64,
    /// Offset of slot 0 (or of the packed ring).
    pub slots_offset: u64,
    /// Total bytes.
    pub total_size: u64,
    /// Packed ring bytes (a power of two), or 0 for the slot engine.
    pub ring_bytes: u64,
}

/// A message size within 1..=[`MAX_MESSAGE`].
fn check_max_message(max_message: u32) -> Result<(), String> {
    if max_message == 0 || max_message > MAX_MESSAGE {
        return Err(format!(
            "max message size must be 1 to {MAX_MESSAGE} bytes, got {max_message}"
        ));
    }
    Ok(())
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Geometry {
    /// The offsets every geometry shares, for at most `capacity` queued
    /// messages (checked): the header, then the attachment table, then the
    /// ring (sized by [`Geometry::packed`]).
    fn base(kind: Kind, capacity: u32) -> Result<Geometry, String> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(format!(
                "capacity must be 1 to {MAX_CAPACITY} messages, got {capacity}"
            ));
        }
        let peers_offset = round_up(size_of::<Header>() as u64, 128);
        let slots_offset = round_up(
            peers_offset + PEER_SLOTS as u64 * size_of::<PeerEntry>() as u64,
            128,
        );
        Ok(Geometry {
            kind,
            capacity,
            slots: 0,
            max_message: 0,
            slot_stride: 0,
            peer_slots: PEER_SLOTS,
            peers_offset,
            slots_offset,
            total_size: slots_offset,
            ring_bytes: 0,
        })
    }

    /// The geometry of a packed ring of `budget` bytes (rounded down to a
    /// power of two; 0 picks a default, see [`DEFAULT_BUDGET_CAP`]) for at
    /// most `capacity` queued messages of up to `max_message` bytes. The
    /// segment is the ring plus the header and the attachment table.
    pub fn packed(
        kind: Kind,
        capacity: u32,
        max_message: u32,
        budget: u64,
    ) -> Result<Geometry, String> {
        use crate::packed::{max_message_for, min_ring_for, record_size};
        let mut geo = Geometry::base(kind, capacity)?;
        check_max_message(max_message)?;
        geo.max_message = max_message;
        let least = min_ring_for(max_message);
        let ring_bytes = if budget == 0 {
            // `capacity` records wherever the writer stands: one more for
            // the padding at the wrap, and the header zeroed after them.
            let rec = record_size(max_message as usize);
            let room = ((capacity as u64 + 1) * rec + 8).next_power_of_two();
            room.min(DEFAULT_BUDGET_CAP).max(least)
        } else {
            if budget > MAX_SEGMENT / 2 {
                return Err(format!(
                    "a budget of {budget} bytes is above the limit of {}",
                    MAX_SEGMENT / 2
                ));
            }
            let ring = 1u64 << (63 - budget.leading_zeros());
            if ring < least {
                let holds = if ring < crate::packed::MIN_RING {
                    String::new()
                } else {
                    format!(" holds messages of at most {} bytes;", max_message_for(ring))
                };
                return Err(format!(
                    "a budget of {budget} bytes is too small:{holds} {max_message}-byte messages need a budget of at least {least}"
                ));
            }
            ring
        };
        geo.ring_bytes = ring_bytes;
        geo.total_size = round_up(geo.slots_offset + ring_bytes, 4096);
        Ok(geo)
    }

    /// True for a packed ring.
    pub fn is_packed(&self) -> bool {
        self.ring_bytes != 0
    }

    /// The positions one lap of the ring spans: its bytes. A block of an
    /// unbounded chain serves one index per lap.
    pub fn lap_span(&self) -> u64 {
        self.ring_bytes
    }

    /// Writes the geometry into a zeroed header, without publishing it.
    pub fn write_to(&self, h: &mut Header) {
        h.version = LAYOUT_VERSION;
        h.kind = self.kind as u32;
        h.capacity = self.capacity;
        h.slots = self.slots;
        h.max_message = self.max_message;
        h.slot_stride = self.slot_stride;
        h.peer_slots = self.peer_slots;
        h.total_size = self.total_size;
        h.peers_offset = self.peers_offset;
        h.slots_offset = self.slots_offset;
        h.ring_bytes = self.ring_bytes;
        h.engine = ENGINE_PACKED;
    }

    /// Reads and checks the geometry of a published header against the size
    /// of the mapping that holds it. Every field is recomputed from
    /// (kind, capacity, max_message) and must match exactly.
    pub fn read_from(h: &Fixed, mapped_len: u64) -> Result<Geometry, ValidateError> {
        if h.version != LAYOUT_VERSION {
            return Err(ValidateError::Version(h.version));
        }
        let kind = Kind::from_u32(h.kind)
            .ok_or_else(|| ValidateError::Corrupt(format!("unknown segment kind {}", h.kind)))?;
        let geo = match h.engine {
            ENGINE_SLOTS => Err("the slot engine is retired: a segment of an older build".to_owned()),
            ENGINE_PACKED if h.ring_bytes.is_power_of_two() => {
                Geometry::packed(kind, h.capacity, h.max_message, h.ring_bytes)
            }
            e => Err(format!(
                "unknown engine {e} with a ring of {} bytes",
                h.ring_bytes
            )),
        }
        .map_err(ValidateError::Corrupt)?;
        let stored = Geometry {
            kind,
            capacity: h.capacity,
            slots: h.slots,
            max_message: h.max_message,
            slot_stride: h.slot_stride,
            peer_slots: h.peer_slots,
            peers_offset: h.peers_offset,
            slots_offset: h.slots_offset,
            total_size: h.total_size,
            ring_bytes: h.ring_bytes,
        };
        if stored != geo {
            return Err(ValidateError::Corrupt(format!(
                "header geometry is inconsistent: {stored:?}"
            )));
        }
        if mapped_len < geo.total_size {
            return Err(ValidateError::Truncated {
                expected: geo.total_size,
                actual: mapped_len,
            });
        }
        Ok(geo)
    }
}

/// Why a header failed validation (mapped to `OpenError` by the caller, who
/// knows the segment's name).
#[derive(Debug)]
pub enum ValidateError {
    /// Another layout version.
    Version(u32),
    /// Shorter than the geometry needs.
    Truncated {
        /// Bytes needed.
        expected: u64,
        /// Bytes mapped.
        actual: u64,
    },
    /// Impossible geometry.
    Corrupt(String),
}

impl From<ValidateError> for CorruptError {
    fn from(v: ValidateError) -> Self {
        CorruptError(format!("{v:?}"))
    }
}

/// The checksum stored in [`Header::check`]: FNV-1a over the fields that
/// never change after creation.
pub fn header_check(h: &Fixed) -> u64 {
    let words: [u64; 17] = [
        h.version as u64,
        h.kind as u64,
        h.capacity as u64,
        h.slots as u64,
        h.max_message as u64,
        h.slot_stride as u64,
        h.peer_slots as u64,
        h.single as u64,
        h.total_size,
        h.peers_offset,
        h.slots_offset,
        h.flavor as u64,
        h.block_index as u64,
        h.engine as u64,
        h.ring_bytes,
        LAYOUT_VERSION as u64,
        MAGIC,
    ];
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            x ^= b as u64;
            x = x.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    x
}

/// [`header_check`] of a header being written by its creator.
pub fn header_check_of(h: &Header) -> u64 {
    header_check(&Fixed::read(h))
}

/// Reads the magic word: `Some(true)` ours and published, `Some(false)` not
/// yet published (zero), `None` foreign.
pub fn magic_state(h: &Header) -> Option<bool> {
    match h.magic.load(Ordering::Acquire) {
        MAGIC => Some(true),
        0 => Some(false),
        _ => None,
    }
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Header>().is_multiple_of(128));
const _: () = assert!(std::mem::align_of::<Header>() <= 4096);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_rounds_and_bounds() {
        let g = Geometry::packed(Kind::Buffer, 5, 100, 0).unwrap();
        assert_eq!(g.capacity, 5);
        assert!(g.ring_bytes.is_power_of_two());
        assert!(g.ring_bytes >= crate::packed::min_ring_for(100));
        assert_eq!(g.total_size % 4096, 0);
        assert!(g.slots_offset + g.ring_bytes <= g.total_size);
        // A budget is rounded down to a power of two.
        let g = Geometry::packed(Kind::Buffer, 5, 100, 5000).unwrap();
        assert_eq!(g.ring_bytes, 4096);
        assert!(Geometry::packed(Kind::Buffer, 0, 100, 0).is_err());
        assert!(Geometry::packed(Kind::Buffer, 4, 0, 0).is_err());
        assert!(Geometry::packed(Kind::Buffer, 4, 100, 100).is_err());
        assert!(Geometry::packed(Kind::Buffer, MAX_CAPACITY + 1, 100, 0).is_err());
    }
}
