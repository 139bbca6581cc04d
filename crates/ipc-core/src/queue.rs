//! The machinery shared by the buffer and the mailbox: a segment holding a
//! header, an attachment table and a ring; creation and validated opening;
//! attaching endpoints; blocking with spin-then-sleep; reaping dead peers;
//! disconnection.

use std::cell::Cell;
use std::mem::size_of;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{AttachError, CorruptError, CreateError, OpenError, SegmentError};
use crate::layout::{magic_state, Fixed, Flavor, Geometry, Header, Kind, ValidateError, MAGIC};
use crate::peers::{AttachFail, Attachment, PeerEntry, PeerInfo, PeerTable, Role};
use crate::ring::{Census, PackedRing, Recovered, Ring, Side, MAX_OWNER};
use crate::segment::Segment;
use crate::sync::{spin_for, Deadline, EventCount, SpinPolicy};
use crate::sys::LockFd;

/// How often a blocked call re-checks that its peers still live.
pub const LIVENESS_PERIOD: Duration = Duration::from_millis(100);

/// The longest sleep of a waiter whose asymmetric barrier failed.
const BARRIERLESS_SLEEP: Duration = Duration::from_millis(1);

/// Most blocks a chain of blocks of `block_size` bytes can span: twice
/// what /dev/shm (or, when it sets no limit, memory) can hold, at least
/// 1024. Only a bound on loops over chain indices read from shared memory
/// (a scribbled index cannot make us walk millions of missing blocks); a
/// real chain never comes near it.
pub fn max_chain_for(block_size: u64) -> u64 {
    let room = crate::sys::total_bytes(crate::segment::SHM_DIR)
        .or_else(crate::sys::memory_bytes)
        .unwrap_or(u64::MAX);
    (room / block_size.max(1))
        .saturating_mul(2)
        .clamp(1024, MAX_CHAIN)
}

/// How many times a chain block is created or opened before giving up
/// (each failure is another process's doing: it created, abandoned or
/// removed the block in between).
const CREATE_ATTEMPTS: u32 = 16;

/// How long `open` waits for a creator to publish the header.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Chain spans up to this many blocks are looked at index by index, a
/// `stat` each, rather than by listing the segment directory (see
/// `Queue::existing_blocks`).
const SHORT_SPAN: u64 = 64;

/// Most blocks an unbounded chain may span (a sanity bound on indices read
/// from shared memory, not a capacity limit in practice).
pub const MAX_CHAIN: u64 = 1 << 24;

/// Most drained blocks an unbounded queue keeps as spares for reuse.
const MAX_SPARES: u64 = 4;

/// Bytes of spare blocks an unbounded queue keeps at most (but always at
/// least one spare, whatever its size).
const SPARE_BYTES: u64 = 16 << 20;

/// Most chain-block mappings one process keeps for reuse per queue, and
/// their bytes at most (but always at least two).
const MAX_CACHED: u64 = 32;
const CACHED_BYTES: u64 = 128 << 20;

/// Ring positions stay below this (the ring's own bound, 2^52): a block is
/// recycled only while its next lap ends below it.
const LAP_POS_LIMIT: u64 = 1 << 52;

/// A chained block's identity word: the index it serves (modulo 2^32) and
/// its lap (see [`crate::layout::Chain::block_identity`]).
fn identity(index: u64, lap: u32) -> u64 {
    (u64::from(lap) << 32) | u64::from(index as u32)
}

/// (index modulo 2^32, lap) of an identity word.
fn split_identity(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// A block of an unbounded chain mapped in this process, with the end of
/// the lap in which it serves the index it was opened as: a view through
/// [`BlockView::ring`] writes and reads only that lap's positions.
#[derive(Debug, Clone)]
pub(crate) struct BlockView {
    pub(crate) q: Arc<Queue>,
    pub(crate) end: u64,
}

impl BlockView {
    /// The block's ring, bounded to this view's lap.
    pub(crate) fn ring(&self) -> Ring<'_> {
        self.q.ring().with_end(self.end)
    }
}

/// A chain message's index: its block's chain index (low 24 bits) above
/// its index within the block (low 40; a block's count runs on over its
/// recycled laps). It wraps after 2^24 blocks: unique enough to tell a
/// message from its neighbours, which is what a redelivering receiver
/// needs.
pub(crate) fn chain_message_index(block: u64, within: u64) -> u64 {
    block << 40 | within & ((1 << 40) - 1)
}

/// What the repairs of receivers that died holding a message have put
/// back for redelivery on a queue (see
/// [`Receiver::redeliver_if_killed`](crate::Receiver::redeliver_if_killed)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redeliveries {
    /// Messages put back so far (`Status::redelivered_reads`).
    pub count: u64,
    /// The index of the one put back last (as
    /// [`Receiver::recv_batch_indexed_until`](crate::Receiver::recv_batch_indexed_until)
    /// tells it), if any.
    pub last_index: Option<u64>,
}

/// Mappings of chain blocks this process made, kept so that a recycled
/// block (the same file under a new name) is not mapped and faulted in
/// again: tmpfs has no huge pages here, and first touches of a fresh
/// mapping cost more than the messages they carry.
///
/// A mapping keeps its file's memory allocated after the file is removed,
/// so the cache holds only files that still have a name: every use of it
/// first drops the mappings of files that have no link left (`fstat` of
/// the liveness descriptor each mapping keeps), and it is emptied when
/// one of the handle's endpoints is dropped and when a receiver sees the
/// end of the stream. What a handle that does nothing more keeps mapped is
/// bounded by the cache's size ([`MAX_CACHED`] blocks, [`CACHED_BYTES`]).
#[derive(Debug, Default)]
struct BlockCache {
    maps: std::collections::VecDeque<Arc<Queue>>,
}

impl BlockCache {
    /// The mapping of file `id`, if this process has one.
    fn find(&mut self, id: (u64, u64)) -> Option<Arc<Queue>> {
        self.sweep();
        let i = self.maps.iter().position(|m| m.seg.file_id() == id)?;
        let m = self.maps.remove(i)?;
        self.maps.push_back(m.clone());
        Some(m)
    }

    /// Drops the mappings of files that were removed (no link left).
    fn sweep(&mut self) {
        self.maps.retain(|m| m.linked());
    }
}

/// A mapped, validated queue segment.
#[derive(Debug)]
pub(crate) struct Queue {
    // Declared before `seg`: dropped while the mapping still exists.
    ring: Ring<'static>,
    /// When this process last looked for dead peers here.
    last_reap: Mutex<Instant>,
    /// The liveness locks, through this mapping's own open file
    /// description.
    locks: LockFd,
    seg: Segment,
    geo: Geometry,
    flavor: Flavor,
    /// For a block of an unbounded chain, its index (0: a main segment);
    /// copied from the header once, validated.
    block_index: u32,
    /// Most blocks the chain can span: as many as /dev/shm can hold.
    max_chain: u64,
    /// For the main segment of an unbounded queue: this process's mappings
    /// of its chain's blocks (see [`BlockCache`]).
    blocks: Mutex<BlockCache>,
}

/// A snapshot of a queue segment, for status displays.
#[derive(Debug, Clone)]
pub struct Status {
    /// Segment name.
    pub name: String,
    /// Validated geometry.
    pub geometry: Geometry,
    /// Messages queued now: committed, not yet taken by a receiver
    /// (counted slot by slot; in-flight and skipped slots are not).
    pub len: u64,
    /// Messages being written (claimed, not committed) now.
    pub writing: u64,
    /// Messages being read (claimed, not released) now.
    pub reading: u64,
    /// Attached processes.
    pub peers: Vec<PeerInfo>,
    /// Producers (senders) that ever attached.
    pub producers_total: u32,
    /// Consumers (receivers) that ever attached.
    pub consumers_total: u32,
    /// Messages whose writer died mid-write (their send never succeeded).
    pub abandoned_writes: u64,
    /// Messages lost because the reader holding them died (or its
    /// callback panicked).
    pub lost_reads: u64,
    /// Messages put back for the next receiver because the receiver
    /// holding them died after asking for redelivery.
    pub redelivered_reads: u64,
    /// Claims found taken from a live holder at commit or release.
    pub revoked_claims: u64,
    /// Producers found dead (killed, or gone without detaching): what they
    /// were writing may be incomplete.
    pub dead_producers: u64,
    /// Consumers found dead.
    pub dead_consumers: u64,
    /// The pid of the last producer found dead (0: none), as that process
    /// saw itself (in its own pid namespace).
    pub last_dead_producer: u32,
    /// A producer died since the current stream began (the last time a
    /// producer attached alone to an empty queue): what is queued, or was
    /// received, may be incomplete.
    pub stream_incomplete: bool,
    /// Streams that ended incomplete (see `stream_incomplete`): a receiver
    /// that compares it with its value at attach learns of a death in an
    /// earlier stream it also read.
    pub incomplete_streams: u32,
    /// Capacity mode.
    pub flavor: Flavor,
    /// Extra segments of an unbounded chain alive now.
    pub chain_blocks: u64,
    /// For a chained segment of an unbounded queue: its index (0 for the
    /// queue's own segment).
    pub block_index: u32,
    /// One producer and one consumer at a time.
    pub single: bool,
    /// Bytes between the reader and the writer now (records and padding),
    /// over the whole chain for an unbounded queue.
    pub bytes_used: u64,
    /// The memory that holds messages: the packed ring's bytes (for an
    /// unbounded queue, the rings of its main segment and of every block
    /// of its chain).
    pub budget: u64,
}

impl Status {
    /// Attached processes in `role` that still run.
    pub fn live(&self, role: Role) -> usize {
        self.peers
            .iter()
            .filter(|p| p.alive && p.role == Some(role))
            .count()
    }
}

impl Queue {
    pub(crate) fn create(
        name: &str,
        geo: Geometry,
        mode: u32,
        flavor: Flavor,
        block_index: u32,
        single: bool,
        group: Option<u32>,
    ) -> Result<Queue, CreateError> {
        // `group` is given for a chained block only (the main segment's
        // group); users' names may not look like a chained block's.
        if group.is_none() {
            crate::segment::validate_name(name)?;
        }
        if !geo.is_packed() || (single && flavor != Flavor::Bounded) {
            return Err(CreateError::InvalidConfig(
                "every queue is a packed ring, and single mode serves bounded ones only".to_owned(),
            ));
        }
        if mode & !0o777 != 0 || mode & 0o600 != 0o600 {
            return Err(CreateError::InvalidConfig(format!(
                "mode {mode:o}: the owner must keep read and write (0600), and only permission bits (0777) are allowed"
            )));
        }
        let mut seg = Segment::create_in_group(name, geo.total_size as usize, mode, group)?;
        let base = seg.as_ptr();
        // SAFETY: the segment is new (O_EXCL), zero-filled, at least
        // `total_size` bytes, page aligned; openers read nothing but the
        // magic word until we publish it below.
        unsafe {
            let h = &mut *(base as *mut Header);
            geo.write_to(h);
            h.flavor = flavor as u32;
            h.single = single as u32;
            h.block_index = block_index;
            // A fresh block serves its own index, in its first lap.
            h.chain
                .block_identity
                .store(identity(block_index.into(), 0), Ordering::Relaxed);
            h.check = crate::layout::header_check_of(h);
            // The ring starts zero-filled, as the segment is.
        }
        // SAFETY: the header was written above and stays mapped.
        unsafe { &*(base as *const Header) }
            .magic
            .store(MAGIC, Ordering::Release);
        seg.finish_init();
        let fixed = Fixed::read(
            // SAFETY: as above.
            unsafe { &*(base as *const Header) },
        );
        Queue::assemble(seg, geo, flavor, &fixed).map_err(|e| {
            // Published but unusable: do not leave it behind.
            let _ = Segment::unlink(name);
            e.into()
        })
    }

    pub(crate) fn open(
        name: &str,
        expect: Option<Kind>,
        timeout: Duration,
    ) -> Result<Queue, OpenError> {
        let start = Instant::now();
        loop {
            let waited = start.elapsed();
            let not_ready = |waited| OpenError::NotInitialized {
                name: name.to_owned(),
                waited,
            };
            let seg = match Segment::open(name) {
                Ok(seg) => seg,
                Err(SegmentError::Empty(_))
                    if waited < timeout && !Segment::abandoned_unpublished(name) =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(SegmentError::Empty(_)) => return Err(not_ready(waited)),
                Err(e) => return Err(e.into()),
            };
            if seg.len() < size_of::<Header>() {
                return Err(OpenError::NotOurs {
                    name: name.to_owned(),
                    reason: format!("{} bytes is too small for a header", seg.len()),
                });
            }
            // SAFETY: the mapping holds at least a header, page aligned.
            let h = unsafe { &*(seg.as_ptr() as *const Header) };
            match magic_state(h) {
                None => {
                    return Err(OpenError::NotOurs {
                        name: name.to_owned(),
                        reason: "unknown magic number".to_owned(),
                    })
                }
                Some(false) if waited < timeout && !Segment::abandoned_unpublished(name) => {
                    drop(seg);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Some(false) => return Err(not_ready(waited)),
                Some(true) => {}
            }
            // Every fixed field is read once, here; only the copy is
            // validated and used.
            let fixed = Fixed::read(h);
            if fixed.version != crate::layout::LAYOUT_VERSION {
                return Err(OpenError::VersionMismatch {
                    name: name.to_owned(),
                    found: fixed.version,
                    expected: crate::layout::LAYOUT_VERSION,
                });
            }
            if fixed.check != crate::layout::header_check(&fixed) {
                return Err(OpenError::Corrupt {
                    name: name.to_owned(),
                    problem: CorruptError("header checksum mismatch".to_owned()),
                });
            }
            let geo = Geometry::read_from(&fixed, seg.len() as u64).map_err(|e| match e {
                ValidateError::Version(found) => OpenError::VersionMismatch {
                    name: name.to_owned(),
                    found,
                    expected: crate::layout::LAYOUT_VERSION,
                },
                ValidateError::Truncated { expected, actual } => OpenError::Truncated {
                    name: name.to_owned(),
                    expected,
                    actual,
                },
                ValidateError::Corrupt(what) => OpenError::Corrupt {
                    name: name.to_owned(),
                    problem: CorruptError(what),
                },
            })?;
            if let Some(expect) = expect.filter(|k| *k != geo.kind) {
                return Err(OpenError::WrongKind {
                    name: name.to_owned(),
                    found: geo.kind.name(),
                    expected: expect.name(),
                });
            }
            let flavor = Flavor::from_u32(fixed.flavor).ok_or_else(|| OpenError::Corrupt {
                name: name.to_owned(),
                problem: CorruptError(format!("unknown capacity mode {}", fixed.flavor)),
            })?;
            if fixed.single > 1
                || (fixed.single == 1 && flavor != Flavor::Bounded)
                || !geo.is_packed()
            {
                return Err(OpenError::Corrupt {
                    name: name.to_owned(),
                    problem: CorruptError(format!(
                        "single mode {} or the {} engine impossible for this capacity mode",
                        fixed.single,
                        if geo.is_packed() { "packed" } else { "slot" }
                    )),
                });
            }
            return Ok(Queue::assemble(seg, geo, flavor, &fixed)?);
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.seg.name()
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: validated at open/create: the mapping holds a header.
        unsafe { &*(self.seg.as_ptr() as *const Header) }
    }

    pub(crate) fn peers(&self) -> PeerTable<'_> {
        // SAFETY: the geometry was validated against the mapping size, so
        // `peer_slots` entries fit at `peers_offset` (64-byte aligned).
        let entries = unsafe {
            std::slice::from_raw_parts(
                self.seg.as_ptr().add(self.geo.peers_offset as usize) as *const PeerEntry,
                self.geo.peer_slots as usize,
            )
        };
        PeerTable::new(entries, &self.header().roster, &self.locks)
    }

    /// False in a forked child whose liveness descriptor could not be
    /// renewed: it may not attach, nor judge who lives.
    pub(crate) fn usable(&self) -> bool {
        self.locks.usable()
    }

    /// Wraps a validated mapping, building its ring view once (the hot
    /// path then uses it without recomputing anything).
    fn assemble(
        mut seg: Segment,
        geo: Geometry,
        flavor: Flavor,
        fixed: &Fixed,
    ) -> Result<Queue, SegmentError> {
        // The ring's bound as the flavor says: `capacity` messages
        // (bounded), one slot per concurrent sender (zero), or write-once
        // (a block of an unbounded chain).
        // (A rendezvous ring is made for one offer at a time: see
        // `Capacity::flavor_and_slots`.)
        let (limit, end) = match flavor {
            Flavor::Bounded | Flavor::Zero => (geo.capacity, None),
            Flavor::Unbounded => (geo.capacity, Some(geo.lap_span())),
        };
        let base = seg.as_ptr();
        // SAFETY: the geometry was validated against the mapping (or just
        // written by us): the header sits at offset 0 and the engine's
        // memory (`slots` slots of `slot_stride` bytes, or `ring_bytes` of
        // packed ring) fits at `slots_offset`, initialized before the
        // magic was published. The mapping lives as long as `seg`, which
        // the Queue owns; the 'static view never leaves the Queue except
        // reborrowed for the Queue's own lifetime (see `ring`). The engine
        // and single mode are fixed at creation in the header (checked by
        // its checksum) and every process builds its view from them.
        let ring = unsafe {
            let h: &'static Header = &*(base as *const Header);
            let memory = base.add(geo.slots_offset as usize);
            let ring = PackedRing::new(
                (&h.tail, &h.head, &h.freed),
                memory,
                memory as *const crate::atomic::AtomicU64,
                geo.ring_bytes,
                limit,
                geo.max_message as usize,
            );
            let ring = match end {
                Some(end) => ring.with_end(end),
                None => ring,
            };
            Ring::Packed(if fixed.single == 1 {
                ring
            } else {
                ring.shared(Some((&h.space_ready, &h.data_ready)), Some(&h.counters))
            })
        };
        let fd = seg.take_fd().expect("a fresh segment has its descriptor");
        // The locks go on a description of their own, never mapped; the
        // mapping's descriptor closes here (the mapping stays).
        let locks = LockFd::for_file(&fd, seg.name()).map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => {
                SegmentError::PermissionDenied(seg.name().to_owned())
            }
            errno => SegmentError::Os {
                name: seg.name().to_owned(),
                op: "opening the liveness descriptor",
                source: nix::errno::Errno::from_raw(errno.unwrap_or(libc::EIO)),
            },
        })?;
        drop(fd);
        Ok(Queue {
            ring,
            last_reap: Mutex::new(Instant::now()),
            locks,
            seg,
            geo,
            flavor,
            block_index: fixed.block_index,
            max_chain: max_chain_for(geo.total_size),
            blocks: Mutex::new(BlockCache::default()),
        })
    }

    /// True while the mapped file still has a name (a link) somewhere:
    /// `fstat` of the liveness descriptor, which is the same file.
    fn linked(&self) -> bool {
        self.locks.fstat().is_some_and(|st| st.st_nlink > 0)
    }

    /// The ring, bounded as the flavor says.
    #[inline]
    pub(crate) fn ring(&self) -> &Ring<'_> {
        &self.ring
    }

    pub(crate) fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Wakes the sleepers of `ev` (one of this queue's event counts), with
    /// only a compiler fence when every attached process registered for
    /// asymmetric barriers.
    #[inline]
    pub(crate) fn notify(&self, ev: &EventCount) {
        // Registered here (and not just inherited across a fork), and so
        // is every attached process: the waiters' membarrier covers us.
        let light = cfg!(not(loom)) && crate::sys::membarrier_registered();
        if light && self.header().needs_fences.load(Ordering::Acquire) == 0 {
            ev.notify_light();
        } else {
            ev.notify();
        }
    }

    /// Wakes receivers sleeping for data.
    pub(crate) fn wake_receivers(&self) {
        self.notify(&self.header().data_ready);
    }

    /// Wakes senders sleeping for room (or for a rendezvous).
    pub(crate) fn wake_senders(&self) {
        self.notify(&self.header().space_ready);
    }

    /// Counts a claim found taken away at commit or release.
    pub(crate) fn count_revoked(&self) {
        self.header()
            .counters
            .revoked_claims
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what a repair of this segment's own ring found to its loss
    /// counters.
    pub(crate) fn count(&self, r: Recovered) {
        self.count_in(0, r);
    }

    /// Adds what a repair of chain block `k`'s ring (0: this segment's
    /// own) found to this segment's loss counters, with the index in the
    /// chain's terms of a message it put back.
    pub(crate) fn count_in(&self, k: u64, r: Recovered) {
        let put_back = r.put_back.map(|i| chain_message_index(k, i));
        r.add_to(&self.header().counters, put_back);
    }

    /// What repairs have put back for redelivery so far (see
    /// [`Redeliveries`]).
    pub(crate) fn redeliveries(&self) -> Redeliveries {
        let c = &self.header().counters;
        let count = c.redelivered_reads.load(Ordering::Acquire);
        let last = c.last_put_back.load(Ordering::Relaxed);
        Redeliveries {
            count,
            last_index: last.checked_sub(1),
        }
    }

    /// Reaps dead attachments now, waits until `deadline` until each of
    /// `gone` (attachment identities, [`Attachment::id`]) has
    /// gone and been repaired (by us or by other processes: an entry is
    /// freed only after its repair), and then says what repairs have put
    /// back so far; `None` if one was still there at the deadline.
    pub(crate) fn settle_redeliveries(
        &self,
        gone: &[u64],
        deadline: Deadline,
    ) -> Option<Redeliveries> {
        let peers = self.peers();
        loop {
            self.reap();
            if gone.iter().all(|&id| peers.repaired(id)) {
                return Some(self.redeliveries());
            }
            if deadline.passed() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// True if one producer and one consumer attach at a time.
    pub(crate) fn is_single(&self) -> bool {
        // Decided once at open: a peer scribbling on the header later must
        // not change how this process attaches.
        self.ring.is_single()
    }

    /// Reaps dead peers if [`LIVENESS_PERIOD`] has passed since this
    /// process last did so on this mapping.
    pub(crate) fn reap_if_due(&self) {
        let due = {
            let mut last = self.last_reap.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= LIVENESS_PERIOD;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            self.reap();
        }
    }

    /// Releases dead peers' attachments and repairs slots they held, in
    /// this segment and in every block of its chain.
    pub(crate) fn reap(&self) -> u32 {
        if !self.usable() {
            return 0;
        }
        let mut n = self
            .peers()
            .reap_dead(|index, role, pid| self.repair(index, role, pid));
        // A chained block's locks name the main segment's attachments, not
        // its own (always empty) table: only the main segment judges them.
        if self.block_index == 0 {
            n += self.free_stale_locks(0, self.ring());
        }
        // A chain's head and tail blocks too: receivers stand on the one,
        // senders on the other (a block between them becomes the head
        // before anyone needs its locks).
        if let Some((head, tail)) = self.chain_span() {
            let ends = if head == tail {
                vec![head]
            } else {
                vec![head, tail]
            };
            for k in ends.into_iter().filter(|&k| k > 0) {
                // Without waiting: a block not yet initialized has no lock
                // to free, and a sender's `try_send` reaps too.
                if let Ok(b) = self.open_block_cached_within(k, Duration::ZERO) {
                    n += self.free_stale_locks(k, &b.ring());
                }
            }
        }
        if n > 0 {
            self.wake_receivers();
            self.wake_senders();
        }
        n
    }

    /// Frees a shared ring's lock that names no process that can hold it
    /// (a scribbled word: reaping, which frees a dead holder's, would
    /// never see it): an index beyond the attachment table, or one not
    /// attached in a role that takes that lock (senders take the writers'
    /// lock; receivers the readers', and so do rendezvous senders
    /// withdrawing an offer). The lock word is read before the roster, and
    /// freed only if unchanged since: a holder that detached or was reaped
    /// in between gave its lock back before leaving the roster, which
    /// moved the word. `ring` is this queue's or one of its chain's blocks
    /// (whose locks name this queue's attachments): block `k` (0: ours).
    fn free_stale_locks(&self, k: u64, ring: &Ring<'_>) -> u32 {
        let mut freed = 0;
        let roster = &self.header().roster;
        for side in [Side::Write, Side::Read] {
            if let Some((holder, word)) = ring.lock_holder(side) {
                let can_hold = holder < self.geo.peer_slots
                    && match side {
                        // Receivers of an unbounded queue seal a block the
                        // chain has moved past (see `PackedRing::close`).
                        Side::Write => {
                            roster.has_role(Role::Producer, holder)
                                || (self.flavor == Flavor::Unbounded
                                    && roster.has_role(Role::Consumer, holder))
                        }
                        Side::Read => {
                            roster.has_role(Role::Consumer, holder)
                                || (self.flavor == Flavor::Zero
                                    && roster.has_role(Role::Producer, holder))
                        }
                    };
                if !can_hold {
                    log::warn!(
                        "{}: the {side:?} lock names attachment {holder}, which cannot hold it: freed",
                        self.name()
                    );
                    // SAFETY: no process attached at the holder's index
                    // can hold this lock (checked after reading the word,
                    // which `release_stale_lock` finds unchanged, or
                    // leaves).
                    unsafe { ring.release_stale_lock(side, word, |r| self.count_in(k, r)) };
                    freed += 1;
                }
            }
        }
        freed
    }

    /// Repairs every slot that attachment `index` left claimed, in this
    /// segment and in every block of its chain, and counts what was
    /// abandoned or lost. Called by the reaper while it holds the dead
    /// process's liveness lock.
    fn repair(&self, index: u32, role: Option<Role>, pid: u32) {
        let counters = &self.header().counters;
        match role {
            Some(Role::Producer) => {
                counters.last_dead_producer.store(pid, Ordering::Relaxed);
                counters.stream_incomplete.store(1, Ordering::Release);
                counters.dead_producers.fetch_add(1, Ordering::Relaxed)
            }
            Some(Role::Consumer) => counters.dead_consumers.fetch_add(1, Ordering::Relaxed),
            // Died attaching or detaching: it held nothing.
            None => 0,
        };
        // A message it read in place after freeing the head past it (an
        // unbounded queue): lost, unless it died before counting it freed,
        // which the repair of its read claim below counts instead.
        if let Some((k, pos)) = self.peers().hold_of(index) {
            let still_claimed = match k {
                0 => self.ring().reading_at(pos),
                k => self.open_block(k).is_ok_and(|b| b.ring().reading_at(pos)),
            };
            self.peers().clear_hold(index);
            if !still_claimed {
                self.count(Recovered {
                    lost_reads: 1,
                    ..Recovered::default()
                });
            }
        }
        // SAFETY: the owner of `index` is dead (its liveness lock was free
        // and is now held by us, so no replacement can attach there until
        // we release it); `role` is given only while its role bit is still
        // set, so in single mode no replacement of that role has started.
        unsafe {
            self.ring().recover_owner_counting(index, |r| self.count(r));
            crate::pause::at("repair: claims recovered");
            match role {
                Some(Role::Consumer) => self.count(self.ring().recover_single_reader()),
                Some(Role::Producer) => self.count(self.ring().recover_single_writer()),
                None => {}
            }
        }
        // SAFETY: as above.
        unsafe { self.repair_chain(index) };
        if role == Some(Role::Consumer) {
            // SAFETY: as above.
            unsafe { self.repair_behind_head(index) };
        }
    }

    /// Repairs the claims `index` left in the blocks of this segment's
    /// chain (if it heads one).
    ///
    /// # Safety
    /// As [`Ring::recover_owner`]: `index`'s owner holds no claim it will
    /// still use, and the index stays reserved meanwhile.
    unsafe fn repair_chain(&self, index: u32) {
        if let Some((head, tail)) = self.chain_span() {
            for k in self.existing_blocks(head, tail) {
                match self.open_block(k) {
                    // SAFETY: the caller's promise; blocks carry the main
                    // segment's owner indices.
                    Ok(b) => unsafe {
                        b.ring()
                            .recover_owner_counting(index, |r| self.count_in(k, r))
                    },
                    Err(e) => log::debug!("{}: block {k} not reachable: {e}", self.name()),
                }
            }
        }
    }

    /// Indices of this segment's chain blocks from `head` to `tail` (block
    /// 0, the segment itself, not included) that exist now, in order. A
    /// short span is looked at index by index; a longer one by one listing
    /// of the segment directory, since plausible indices scribbled apart
    /// can span millions of missing blocks (twice what /dev/shm could
    /// hold, for small blocks), a system call each: minutes for one
    /// status. If the directory cannot be listed, index by index after all
    /// (the span is validated, so bounded; a repair must reach the tail).
    fn existing_blocks(&self, head: u64, tail: u64) -> Vec<u64> {
        let first = head.max(1);
        let each_index = || {
            (first..=tail)
                .filter(|&k| Segment::exists(&self.block_name(k)))
                .collect()
        };
        if tail < first.saturating_add(SHORT_SPAN) {
            return each_index();
        }
        let Ok(dir) = std::fs::read_dir(crate::segment::SHM_DIR) else {
            return each_index();
        };
        let prefix = format!("{}.b", self.name());
        let mut found: Vec<u64> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let digits = name.to_str()?.strip_prefix(prefix.as_str())?;
                // Indices are written without leading zeros: `b0<j>` is a
                // spare, not a block of the chain.
                if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let k = digits.parse::<u64>().ok()?;
                (first..=tail).contains(&k).then_some(k)
            })
            .collect();
        found.sort_unstable();
        found
    }

    /// (head, tail) block indices of an unbounded chain, if this segment
    /// heads one and the indices are plausible.
    pub(crate) fn chain_span(&self) -> Option<(u64, u64)> {
        if self.flavor != Flavor::Unbounded || self.block_index != 0 {
            return None;
        }
        self.chain_indices().ok()
    }

    /// The chain's (head, tail) block indices, validated: the head never
    /// passes the tail, and the chain spans no more blocks than /dev/shm
    /// could hold (so no loop over them can run for long).
    pub(crate) fn chain_indices(&self) -> Result<(u64, u64), CorruptError> {
        let chain = &self.header().chain;
        // The head first: it only ever moves up to the tail, so a tail read
        // after it is at least as far.
        let head = chain.head_block.load(Ordering::Acquire);
        let tail = chain.tail_block.load(Ordering::Acquire);
        if head > tail || tail - head > self.max_chain {
            return Err(CorruptError(format!(
                "chain block indices impossible: head {head}, tail {tail} (at most {} blocks fit)",
                self.max_chain
            )));
        }
        Ok((head, tail))
    }

    /// Name of block `k` (k >= 1) of this segment's chain.
    pub(crate) fn block_name(&self, k: u64) -> String {
        format!("{}.b{k}", self.name())
    }

    /// Name of spare `j` of this segment's chain: `NAME.b0<j>`, a block
    /// name no chain index has (indices are written without leading
    /// zeros), so every tool takes it for one of the queue's blocks.
    fn spare_name(&self, j: u64) -> String {
        format!("{}.b0{j}", self.name())
    }

    /// How many drained blocks this chain keeps as spares.
    fn spares(&self) -> u64 {
        (SPARE_BYTES / self.geo.total_size.max(1)).clamp(1, MAX_SPARES)
    }

    /// Opens block `k` of the chain (block 0 is this segment itself),
    /// checks that it belongs here and serves index `k` now, and returns
    /// it with the end of the lap it serves `k` in. A block that has moved
    /// on to a later index (recycled since) is `NotFound`, as a removed
    /// one is.
    pub(crate) fn open_block(&self, k: u64) -> Result<BlockView, OpenError> {
        let name = self.block_name(k);
        let b = Queue::open(&name, Some(self.geo.kind), INIT_TIMEOUT)?;
        self.check_block(&name, k, Arc::new(b))
    }

    /// [`Queue::open_block`], reusing this process's mapping of the file
    /// when it has one (a recycled block is the same file).
    pub(crate) fn open_block_cached(&self, k: u64) -> Result<BlockView, OpenError> {
        self.open_block_cached_within(k, INIT_TIMEOUT)
    }

    /// [`Queue::open_block_cached`], waiting at most `patience` for a block
    /// still being initialized by its creator.
    fn open_block_cached_within(&self, k: u64, patience: Duration) -> Result<BlockView, OpenError> {
        let name = self.block_name(k);
        let (id, size) = Segment::file_stat_of(&name)?;
        // A mapping longer than the file now would fault past its end:
        // such a file is opened afresh (and refused, as truncated).
        let found = self.cache().find(id);
        let hit = found.filter(|b| {
            let fits = size >= b.seg.len() as u64;
            if !fits {
                self.cache_forget(id);
            }
            fits
        });
        let b = match hit {
            Some(b) => b,
            None => {
                let b = Arc::new(Queue::open(&name, Some(self.geo.kind), patience)?);
                self.cache_insert(&b);
                b
            }
        };
        self.check_block(&name, k, b)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BlockCache> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_insert(&self, b: &Arc<Queue>) {
        let most = (CACHED_BYTES / self.geo.total_size.max(1)).clamp(2, MAX_CACHED) as usize;
        let mut cache = self.cache();
        cache.sweep();
        let id = b.seg.file_id();
        cache.maps.retain(|m| m.seg.file_id() != id);
        while cache.maps.len() >= most {
            cache.maps.pop_front();
        }
        cache.maps.push_back(b.clone());
    }

    /// Drops this process's mapping of a block file that is gone.
    fn cache_forget(&self, id: (u64, u64)) {
        self.cache().maps.retain(|m| m.seg.file_id() != id);
    }

    /// Drops every block mapping this process keeps for reuse (endpoints
    /// keep the blocks they stand on).
    pub(crate) fn drop_cached_blocks(&self) {
        let maps = std::mem::take(&mut self.cache().maps);
        drop(maps);
    }

    /// Checks that the mapping `b` (opened as `name`) is block `k` of this
    /// chain now. A spare that a sender renamed to `name` and has not yet
    /// moved on to its next lap is moved on here, by whoever opens it
    /// first (the name says which index it is to serve; every opener
    /// computes the same identity, so a sender killed between the rename
    /// and this step leaves nothing to repair). Bounded: a word that keeps
    /// changing is corrupt.
    fn check_block(&self, name: &str, k: u64, b: Arc<Queue>) -> Result<BlockView, OpenError> {
        let corrupt = |what: String| OpenError::Corrupt {
            name: name.to_owned(),
            problem: CorruptError(what),
        };
        if b.geo != self.geo || b.flavor != self.flavor {
            // Another queue's block (a leftover of an earlier queue of
            // this name, with another geometry): not a scribble here.
            return Err(OpenError::NotOurs {
                name: name.to_owned(),
                reason: format!("not a block of {}: another geometry", self.name()),
            });
        }
        let slots = self.geo.lap_span();
        let word = &b.header().chain.block_identity;
        for _ in 0..4 {
            // Read before the identity: a record of a next lap here would
            // mean that lap had begun, which the identity (read after, so
            // at least as new) then says.
            let first = b.ring().with_end(slots).next_lap_header();
            let seen = word.load(Ordering::Acquire);
            let (index, lap) = split_identity(seen);
            // No overflow: lap < 2^32 and a lap spans at most 2^31.
            let end = (u64::from(lap) + 1) * slots;
            if end >= LAP_POS_LIMIT {
                return Err(corrupt(format!("block lap {lap} impossible")));
            }
            if index == k as u32 {
                // The lap began with both cursors at its start (a fresh
                // block at 0, a recycled one where its last lap ended):
                // cursors behind it mean a scribbled word.
                let ring = b.ring();
                if ring.head_pos() < end - slots || ring.tail_pos() < end - slots {
                    return Err(corrupt(format!(
                        "block {k}: lap {lap} impossible for its cursors"
                    )));
                }
                return Ok(BlockView { q: b, end });
            }
            // Indices compare modulo 2^32, as the chain goes past 2^32.
            if (k as u32).wrapping_sub(index) >= 1 << 31 {
                // It serves a later index now: recycled after we opened it.
                return Err(OpenError::Segment(SegmentError::NotFound(name.to_owned())));
            }
            // A spare renamed here: drained at the end of its lap, or it
            // is not one.
            let ring = b.ring().with_end(end);
            let census = ring.census();
            if lap == u32::MAX
                || end + slots >= LAP_POS_LIMIT
                || ring.tail_pos() != end
                || ring.head_pos() != end
                || census.reading != 0
                || census.writing != 0
            {
                if word.load(Ordering::Acquire) != seen {
                    // Another opener moved it on meanwhile, and its next
                    // lap is in use: look at the new word.
                    continue;
                }
                return Err(corrupt(format!(
                    "block {k}: a spare of block {index} lap {lap} that is not drained"
                )));
            }
            // The next lap starts where this one's first record lies, long
            // read: it must not pass for a new message (cleared only if it
            // still is that record, not one of a next lap begun meanwhile).
            ring.clear_next_lap(first);
            let _ = word.compare_exchange(
                seen,
                identity(k, lap + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        Err(corrupt(format!("block {k}: its identity keeps changing")))
    }

    /// Creates block `k` of the chain, or opens it if another process was
    /// first. The bool says whether we created it.
    pub(crate) fn create_block(&self, k: u64, mode: u32) -> Result<(BlockView, bool), CreateError> {
        // The header keeps the index modulo 2^32 (compared the same way in
        // `check_block`): a long-lived chain goes on past 2^32 blocks.
        let index = k as u32;
        let name = self.block_name(k);
        for _ in 0..CREATE_ATTEMPTS {
            // The queue's group, so that every member can read it.
            let group = Some(self.seg.gid());
            match Queue::create(&name, self.geo, mode, self.flavor, index, false, group) {
                Ok(b) => {
                    let b = Arc::new(b);
                    self.cache_insert(&b);
                    let end = self.geo.lap_span();
                    return Ok((BlockView { q: b, end }, true));
                }
                Err(CreateError::Segment(SegmentError::AlreadyExists(_))) => {}
                Err(e) => return Err(e),
            }
            match self.open_block_cached(k) {
                Ok(b) => return Ok((b, false)),
                // Gone between our create and our open (a sender that
                // found it abandoned removed it, or a receiver retired
                // it): create it again, or find the chain moved on.
                Err(OpenError::Segment(SegmentError::NotFound(_))) => {}
                // Its creator died before publishing it: make it again.
                Err(OpenError::NotInitialized { .. }) if Segment::remove_if_abandoned(&name) => {
                    log::info!("{name}: removed a block its creator left unfinished");
                }
                // A live creator (its lock held) is slow, stopped or
                // reserving a large block: wait for it again.
                Err(OpenError::NotInitialized { .. }) => {
                    log::debug!("{name}: its creator is still making it; waiting");
                }
                Err(e) => return Err(CreateError::InvalidConfig(e.to_string())),
            }
        }
        Err(CreateError::InvalidConfig(format!(
            "{name}: cannot create or open the block"
        )))
    }

    /// Moves a spare, if there is one, to the name of block `k`, for the
    /// next opener of `k` to move on to its next lap (see
    /// [`Queue::check_block`]). The file (device, inode) now named `k` if
    /// one was moved; `None` if there was none, or block `k` exists
    /// already.
    ///
    /// A spare that cannot be one of this queue's blocks (a regular file
    /// of another size: a leftover of an earlier queue of this name, or a
    /// truncated file) is removed, as spares are disposable; a name that is
    /// not a regular file, or a spare that cannot be renamed (another
    /// user's, in the sticky /dev/shm), is skipped: the next one is tried.
    pub(crate) fn take_spare(&self, k: u64) -> Option<(u64, u64)> {
        let name = self.block_name(k);
        for j in 0..self.spares() {
            let spare = self.spare_name(j);
            match Segment::lstat_of(&spare) {
                Some((_, size, true)) if size == self.geo.total_size => {}
                Some((id, size, true)) => {
                    if Segment::unlink_if_same(&spare, id) {
                        log::info!(
                            "{spare}: removed a spare of {size} bytes (blocks of {} have {})",
                            self.name(),
                            self.geo.total_size
                        );
                    }
                    continue;
                }
                _ => continue,
            }
            match Segment::rename_noreplace(&spare, &name) {
                Ok(()) => return Segment::lstat_of(&name).map(|(id, _, _)| id),
                // Block k exists (another sender was first): open it the
                // usual way.
                Err(SegmentError::AlreadyExists(_)) => return None,
                // Taken by another sender meanwhile, or refused: the next.
                Err(_) => {}
            }
        }
        None
    }

    /// Gives back block `k` once the chain's head has moved past it (the
    /// caller moved it): keeps it as a spare if it is drained to the end of
    /// its lap with nobody still reading in it and a spare place is free,
    /// else removes it. Both happen by name, atomically (a rename that
    /// never replaces, or an unlink); a process killed before either
    /// leaves the drained block under its old name, which nothing reads
    /// again and the queue's removal removes. A block a receiver still
    /// holds a message of keeps its name: the last receiver to let go
    /// gives it back ([`Queue::release_behind_head`]), or the reaper if
    /// that receiver died ([`Queue::repair_behind_head`]).
    pub(crate) fn retire_block(&self, k: u64, b: &BlockView) {
        self.retire(k, &b.q, b.end);
    }

    /// [`Queue::retire_block`] of block `k` mapped as `q`, drained in the
    /// lap that ends at `end`. Whoever calls it, the file moves or goes at
    /// most once: a rename that never replaces, an unlink of the same
    /// inode, each after checking that the name still holds this file in
    /// this lap.
    fn retire(&self, k: u64, q: &Queue, end: u64) {
        let name = self.block_name(k);
        let slots = self.geo.lap_span();
        let ring = q.ring().with_end(end);
        // Pairs with the fence of a receiver letting go of a message of
        // this block (`release_behind_head`): it sees the head past `k`,
        // or we see its message let go. And with a tagging sender's (or
        // `last_tag`'s) after it cleared the chain's tag mark.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.tag_marks(k) {
            // Its marks say whether a tagged message went in, until the
            // chain's last tag is settled: whoever clears the mark gives
            // the block back.
            return;
        }
        let census = ring.census();
        if census.reading != 0 || self.peers().holds_in(k, end.saturating_sub(slots)..end) {
            // A receiver still holds a message of it (in its callback, or
            // killed there): the block keeps its name (see above).
            return;
        }
        let lap = (end / slots).saturating_sub(1);
        let reusable = || {
            end + slots < LAP_POS_LIMIT
                && end / slots < u64::from(u32::MAX)
                && ring.tail_pos() == end
                && ring.head_pos() == end
                && census.writing == 0
                // Still this lap of index k (not taken on since)...
                && q.header().chain.block_identity.load(Ordering::Acquire)
                    == identity(k, lap as u32)
                // ...and the name still holds the file we drained.
                && Segment::file_id_of(&name).is_ok_and(|id| id == q.seg.file_id())
        };
        // Once no sender is attached (the end of the stream, or a pause),
        // a spare would outlive the receiver's clean-up of spares at the
        // end of the stream: remove the block instead.
        let streaming = self.header().roster.any(Role::Producer);
        crate::pause::at("retire: senders looked at");
        if streaming && reusable() {
            for j in 0..self.spares() {
                match Segment::rename_noreplace(&name, &self.spare_name(j)) {
                    Ok(()) => {
                        // The last sender may have left since we looked, and
                        // a receiver seen the end of the stream and removed
                        // the spares before our rename: nothing would remove
                        // this one. Looked at again after it (a sender that
                        // attached meanwhile begins a stream whose end
                        // removes the spares).
                        std::sync::atomic::fence(Ordering::SeqCst);
                        if !self.header().roster.any(Role::Producer)
                            && Segment::unlink_if_same(&self.spare_name(j), q.seg.file_id())
                        {
                            self.cache_forget(q.seg.file_id());
                        }
                        return;
                    }
                    Err(SegmentError::AlreadyExists(_)) => {}
                    // Removed meanwhile (the queue is being removed, or
                    // another receiver gave it back first).
                    Err(SegmentError::NotFound(_)) => return,
                    Err(_) => break,
                }
            }
        }
        if Segment::unlink_if_same(&name, q.seg.file_id()) {
            self.cache_forget(q.seg.file_id());
        }
    }

    /// True if the chain's tag mark names block `k`: a tagged commit
    /// under way there, or left by a writer killed in it.
    pub(crate) fn tag_marks(&self, k: u64) -> bool {
        let chain = &self.header().chain;
        chain.tag_pos.load(Ordering::Acquire) != 0 && chain.tag_block.load(Ordering::Relaxed) == k
    }

    /// After a receiver let go of a message of block `at.0`, read through
    /// `q` in the lap ending at `at.1`: if the head has moved past that
    /// block meanwhile, the receiver that moved it may have left it under
    /// its name because of this message (see [`Queue::retire_block`]);
    /// the last receiver to let go gives it back. Likewise after the
    /// chain's tag mark naming that block was cleared ([`Queue::tag_marks`]).
    pub(crate) fn release_behind_head(&self, at: (u64, u64), q: &Queue) {
        let (k, end) = at;
        if k == 0 {
            return;
        }
        // Pairs with the fence in `retire` (see there).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.header().chain.head_block.load(Ordering::Acquire) > k {
            self.retire(k, q, end);
        }
    }

    /// Block indices behind the chain's head (`head`) whose names still
    /// exist in /dev/shm: blocks kept because a receiver still held a
    /// message of them, or left by a process killed while retiring them.
    fn blocks_behind_head(&self, head: u64) -> Vec<u64> {
        let prefix = format!("{}.b", self.name());
        let Ok(dir) = std::fs::read_dir(crate::segment::SHM_DIR) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let file = e.file_name();
                let k = file.to_str()?.strip_prefix(&prefix)?;
                // Spares (`b0<j>`) and other names are not chain indices.
                if k.starts_with('0') || !k.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let k: u64 = k.parse().ok()?;
                (1..head).contains(&k).then_some(k)
            })
            .collect()
    }

    /// Repairs the claims `index` (a dead receiver) left in blocks behind
    /// the head that still have their name, counts them lost, and gives
    /// such blocks back (as spares, or removed) once nobody reads in them.
    ///
    /// # Safety
    /// As [`Queue::repair_chain`].
    unsafe fn repair_behind_head(&self, index: u32) {
        let Some((head, _)) = self.chain_span() else {
            return;
        };
        for k in self.blocks_behind_head(head) {
            match self.open_block(k) {
                Ok(b) => {
                    // SAFETY: the caller's promise.
                    unsafe {
                        b.ring()
                            .recover_owner_counting(index, |r| self.count_in(k, r))
                    };
                    self.retire(k, &b.q, b.end);
                }
                Err(e) => log::debug!("{}: block {k} not reachable: {e}", self.name()),
            }
        }
    }

    /// Removes the chain's spares and this process's block mappings: at
    /// end of stream, the memory of a drained queue goes back.
    pub(crate) fn drop_spares(&self) {
        for j in 0..MAX_SPARES {
            let _ = Segment::unlink(&self.spare_name(j));
        }
        self.cache().maps.clear();
    }

    /// Messages queued or in flight, across the whole chain for an
    /// unbounded queue.
    pub(crate) fn queued(&self) -> u64 {
        self.sum_over_chain(|r| r.len(), u64::from(self.geo.capacity))
    }

    /// What the whole queue (its chain included) really holds: a slow
    /// look at every slot in use, for status displays.
    pub(crate) fn census(&self) -> Census {
        let full = Census {
            queued: u64::from(self.geo.capacity),
            ..Census::default()
        };
        self.sum_over_chain(|r| r.census(), full)
    }

    /// Adds up `each` over this segment's ring and, for the head of an
    /// unbounded chain, every block of the chain: a block that is gone
    /// (drained and removed) adds nothing, one that cannot be opened adds
    /// `unknown` (so that it never passes for empty).
    fn sum_over_chain<T>(&self, each: impl Fn(&Ring<'_>) -> T, unknown: T) -> T
    where
        T: std::ops::Add<Output = T> + Default + Copy,
    {
        let Some((head, tail)) = self.chain_span() else {
            return each(self.ring());
        };
        (head == 0)
            .then_some(0)
            .into_iter()
            .chain(self.existing_blocks(head, tail))
            .map(|k| match k {
                0 => each(self.ring()),
                k => match self.open_block(k) {
                    Ok(b) => each(&b.ring()),
                    Err(OpenError::Segment(SegmentError::NotFound(_))) => T::default(),
                    Err(_) => unknown,
                },
            })
            .fold(T::default(), |a, b| a + b)
    }

    /// Bytes of messages held and bytes of ring mapped: this segment's
    /// ring, and for the head of an unbounded chain every block of it (the
    /// main segment's ring stays mapped after the chain moved past it).
    fn ring_bytes(&self) -> (u64, u64) {
        let (used, size) = self.ring().bytes();
        let Some((head, _)) = self.chain_span() else {
            return (used, size);
        };
        let chain_used = self.sum_over_chain(|r| r.bytes().0, 0);
        let chain_size = self.sum_over_chain(|r| r.bytes().1, self.geo.ring_bytes);
        // Block 0 is in the chain's sum only while the head is on it.
        let main_size = if head == 0 { 0 } else { size };
        (chain_used, chain_size + main_size)
    }

    /// Mode bits of the segment file, for chain blocks to copy.
    pub(crate) fn mode(&self) -> u32 {
        self.seg.mode()
    }

    pub(crate) fn status(&self) -> Status {
        self.reap();
        let h = self.header();
        let census = self.census();
        let (bytes_used, budget) = self.ring_bytes();
        Status {
            name: self.name().to_owned(),
            geometry: self.geo,
            len: census.queued,
            writing: census.writing,
            reading: census.reading + self.peers().holding(),
            peers: self.peers().list(),
            producers_total: h.counters.producers_total.load(Ordering::Relaxed),
            consumers_total: h.counters.consumers_total.load(Ordering::Relaxed),
            abandoned_writes: h.counters.abandoned_writes.load(Ordering::Relaxed),
            lost_reads: h.counters.lost_reads.load(Ordering::Relaxed),
            redelivered_reads: h.counters.redelivered_reads.load(Ordering::Relaxed),
            revoked_claims: h.counters.revoked_claims.load(Ordering::Relaxed),
            dead_producers: h.counters.dead_producers.load(Ordering::Relaxed),
            dead_consumers: h.counters.dead_consumers.load(Ordering::Relaxed),
            last_dead_producer: h.counters.last_dead_producer.load(Ordering::Relaxed),
            stream_incomplete: h.counters.stream_incomplete.load(Ordering::Acquire) != 0,
            incomplete_streams: h.counters.incomplete_streams.load(Ordering::Acquire),
            flavor: self.flavor,
            // Only blocks that exist: at end of stream the indices stay on
            // the last block, which is removed.
            chain_blocks: self.chain_span().map_or(0, |(head, tail)| {
                self.existing_blocks(head, tail).len() as u64
            }),
            block_index: self.block_index,
            single: self.is_single(),
            bytes_used,
            budget,
        }
    }
}

/// One attached endpoint: the caller's entry in the attachment table.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) q: Arc<Queue>,
    /// Our index in the attachment table (the owner id of our claims).
    pub(crate) me: u32,
    pub(crate) attachment: Attachment,
    /// The fork generation this endpoint was made in (see `inherited`).
    generation: u64,
    role: Role,
    /// Set by [`Endpoint::expect_new_peers`]: the other role's attach count
    /// then, and whether one of them was attached (or, for a consumer,
    /// messages were queued). `None`: every peer that ever attached counts
    /// (crossbeam's rule).
    other_at_attach: Option<(u32, bool)>,
    pub(crate) policy: SpinPolicy,
    /// The spin budget is `policy.spin >> spin_scale` (see `block_on`).
    spin_scale: Cell<u32>,
}

/// The spin budget shrinks to at most 1/2^6 of the policy's.
const MAX_SPIN_SCALE: u32 = 6;

/// The result of one attempt inside [`Endpoint::block_on`].
pub(crate) enum Step<T, E> {
    Ready(T),
    Wait,
    Fail(E),
}

impl<T, E> Step<T, E> {
    /// The same step with `f` applied to a ready value.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U, E> {
        match self {
            Step::Ready(v) => Step::Ready(f(v)),
            Step::Wait => Step::Wait,
            Step::Fail(e) => Step::Fail(e),
        }
    }
}

/// Why [`Endpoint::block_on`] gave up.
pub(crate) enum Stop<E> {
    Timeout,
    Fail(E),
}

impl Endpoint {
    pub(crate) fn attach(q: Arc<Queue>, role: Role) -> Result<Endpoint, AttachError> {
        if !q.usable() {
            return Err(AttachError::Inherited {
                name: q.name().to_owned(),
            });
        }
        // Before our roster bit is published: a process that sees us
        // attached must also see that we cannot take part in asymmetric
        // barriers, if we cannot.
        if cfg!(loom) || !crate::sys::membarrier_ready() {
            q.header().needs_fences.store(1, Ordering::SeqCst);
        }
        let table = q.peers();
        let alone = q.is_single();
        let failed = |fail: AttachFail| match fail {
            AttachFail::RoleTaken => AttachError::RoleTaken {
                name: q.name().to_owned(),
                role: match role {
                    Role::Producer => "producer",
                    Role::Consumer => "consumer",
                },
            },
            AttachFail::Full => AttachError::TooManyPeers {
                name: q.name().to_owned(),
                max: table.len(),
            },
            AttachFail::Lock(source) => AttachError::Lock {
                name: q.name().to_owned(),
                source,
            },
        };
        let attachment = match table.attach_as(role, alone) {
            Ok(a) => a,
            Err(AttachFail::Lock(e)) => return Err(failed(AttachFail::Lock(e))),
            Err(_) => {
                // Perhaps dead processes hold the places: reap, try again.
                q.reap();
                table.attach_as(role, alone).map_err(failed)?
            }
        };
        let me = attachment.index;
        debug_assert!(me <= MAX_OWNER);
        // After the roster bit (see `all_gone`): whoever counts us has
        // seen us attached.
        q.header()
            .counters
            .total(role)
            .fetch_add(1, Ordering::AcqRel);
        if role == Role::Producer {
            // Dead producers' bits must not make us look accompanied.
            q.reap();
            let counters = &q.header().counters;
            if q.header().roster.count(Role::Producer) == 1
                && q.queued() == 0
                && counters.stream_incomplete.swap(0, Ordering::AcqRel) != 0
            {
                // Alone on an empty queue: a new stream begins. The last
                // one was incomplete: say so to receivers that saw it.
                counters.incomplete_streams.fetch_add(1, Ordering::AcqRel);
            }
        }
        // Someone may wait for the first peer of this role.
        q.wake_receivers();
        q.wake_senders();
        Ok(Endpoint {
            q,
            me,
            attachment,
            generation: crate::sys::fork_generation(),
            role,
            other_at_attach: None,
            spin_scale: Cell::new(0),
            policy: SpinPolicy::DEFAULT,
        })
    }

    /// From now on, only peers of the other role that are attached now or
    /// attach later count for "every peer has gone" (and, for a consumer,
    /// messages queued now): used like a named pipe, a consumer that
    /// comes after every producer left and finds nothing waits for a new
    /// producer instead of ending at once, and a producer that comes after
    /// every consumer left waits for a new consumer instead of failing.
    pub(crate) fn expect_new_peers(&mut self) {
        let q = &self.q;
        let other = self.role.other();
        // The total first, then the roster, as in `all_gone`.
        let total = q.header().counters.total(other).load(Ordering::Acquire);
        let present =
            q.header().roster.any(other) || (self.role == Role::Consumer && q.queued() > 0);
        self.other_at_attach = Some((total, present));
    }

    /// True if this endpoint was inherited through fork: it belongs to the
    /// parent and must not be used here. One load.
    #[inline]
    pub(crate) fn inherited(&self) -> bool {
        self.generation != crate::sys::fork_generation()
    }

    /// Every peer of `role` that attached has gone (and at least `min`
    /// attached). Two loads: cheap enough for the hot path.
    pub(crate) fn all_gone(&self, role: Role, min: u32) -> bool {
        let h = self.q.header();
        // The total first, then the roster: an attacher sets its roster bit
        // before it counts itself, so whoever the total counts is seen in
        // the roster unless it has left. (The other order lets a first
        // attach fall between the two loads and pass for a departure.)
        let total = h.counters.total(role).load(Ordering::Acquire);
        if total < min.max(1) || h.roster.any(role) {
            return false;
        }
        match self.other_at_attach {
            None => true,
            // Only peers we have known count (see `expect_new_peers`).
            Some((then, present)) => present || total != then,
        }
    }

    /// A wait that spun in vain (its budget then `policy.spin >> scale`)
    /// and slept on the futex, begun at `started`, has ended: if it ended
    /// within the policy's full budget, spinning that long would have met
    /// the peer, so the budget grows back (one step below `scale`) instead
    /// of staying halved. Without this, one long wait would halve the
    /// budget below a peer's usual answer time, and every wait after it
    /// would spin in vain and sleep, each paying a wake-up. The caller
    /// calls this only when the look that spinning makes (`attempt(false)`)
    /// succeeded on waking: what the thorough looks find (a sender's exact
    /// view of the room, where spinning sees only what the reader
    /// published lazily) says nothing of what spinning would have met.
    /// The time includes the wake-up, so with a budget below a
    /// wake-up's cost (`SpinPolicy::DEFAULT`'s 20 µs here) this rarely
    /// applies; and a peer that could run only once this waiter slept
    /// (both on one CPU, a policy without yields) passes for one met in
    /// time, so such a waiter's budget swings between its top two steps.
    fn settle_spin_after_sleep(&self, (started, scale): (Instant, u32)) {
        if started.elapsed() <= self.policy.spin {
            self.spin_scale.set(scale.saturating_sub(1));
        }
    }

    /// Runs `attempt` until it is ready or fails, spinning, yielding, then
    /// sleeping on `ev` until `deadline`. `attempt(thorough)` is called with
    /// `thorough = true` when it may afford slow checks (peer scans). Dead
    /// peers are reaped every [`LIVENESS_PERIOD`] while asleep.
    pub(crate) fn block_on<T, E>(
        &self,
        ev: impl Fn(&Header) -> &EventCount,
        deadline: Deadline,
        mut attempt: impl FnMut(bool) -> Step<T, E>,
    ) -> Result<T, Stop<E>> {
        // When the wait began, and the spin budget's scale then: set if it
        // spun in vain and so may sleep (see `settle_spin_after_sleep`).
        let mut spun_from = None;
        if deadline != Deadline::Now {
            // Spin for a budget that halves each time spinning ends in
            // sleep and doubles back when it pays off (1/64 to 1 of the
            // policy's), so a peer that answers fast is met spinning and a
            // slow one does not cost a core.
            let started = Instant::now();
            let scale = self.spin_scale.get();
            let mut done = None;
            spin_for(self.policy.spin / (1 << scale), || match attempt(false) {
                Step::Wait => false,
                other => {
                    done = Some(other);
                    true
                }
            });
            for _ in 0..self.policy.yields {
                if done.is_some() {
                    break;
                }
                std::thread::yield_now();
                match attempt(false) {
                    Step::Wait => {}
                    other => done = Some(other),
                }
            }
            match done {
                Some(Step::Ready(v)) => {
                    self.spin_scale.set(scale.saturating_sub(1));
                    return Ok(v);
                }
                Some(Step::Fail(e)) => return Err(Stop::Fail(e)),
                _ => {
                    self.spin_scale.set((scale + 1).min(MAX_SPIN_SCALE));
                    spun_from = Some((started, scale));
                }
            }
        }
        let ev = ev(self.q.header());
        loop {
            // Dead peers are looked for here, at most once per period per
            // mapping, whichever call gets here: so even callers that poll
            // with short timeouts or `try_` calls notice a dead peer.
            self.q.reap_if_due();
            // A thorough look before arming: arming costs a barrier on
            // every CPU (see `EventCount::prepare`), worth paying only when
            // we are really about to sleep.
            match attempt(true) {
                Step::Ready(v) => return Ok(v),
                Step::Fail(e) => return Err(Stop::Fail(e)),
                Step::Wait if deadline.passed() => return Err(Stop::Timeout),
                Step::Wait => {}
            }
            let ticket = ev.prepare();
            match attempt(true) {
                Step::Ready(v) => {
                    ev.cancel();
                    return Ok(v);
                }
                Step::Fail(e) => {
                    ev.cancel();
                    return Err(Stop::Fail(e));
                }
                Step::Wait => {}
            }
            let remaining = deadline.remaining();
            if remaining == Some(Duration::ZERO) {
                ev.cancel();
                return Err(Stop::Timeout);
            }
            let mut slice = remaining.map_or(LIVENESS_PERIOD, |r| r.min(LIVENESS_PERIOD));
            if ticket.barrier_failed() {
                // Our barrier did not happen: from now on every process
                // fences fully, and this once we look again soon, in case
                // a notifier used a light fence before it saw the flag.
                self.q.header().needs_fences.store(1, Ordering::SeqCst);
                slice = slice.min(BARRIERLESS_SLEEP);
            }
            ev.wait(ticket, Some(slice));
            // Woken after spinning in vain: first the look that spinning
            // makes, which tells whether spinning longer would have done.
            if let Some(spun) = spun_from {
                match attempt(false) {
                    Step::Ready(v) => {
                        self.settle_spin_after_sleep(spun);
                        return Ok(v);
                    }
                    Step::Fail(e) => return Err(Stop::Fail(e)),
                    Step::Wait => {}
                }
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if self.inherited() {
            // The parent's attachment: leave it to the parent.
            return;
        }
        // A claim leaked with `mem::forget` would block readers forever:
        // give back anything still stamped with our index before leaving.
        // (Nothing, normally: every claim ends before its call returns.)
        // A sender of an unbounded queue may have claimed in any block of
        // its chain: those are opened and looked at too.
        // SAFETY: the owner is this endpoint, which is being dropped and
        // so holds no claim it will still use (claims borrow it); in single
        // mode it is the ring's only writer or reader.
        unsafe {
            let ring = self.q.ring();
            ring.recover_owner_counting(self.me, |r| self.q.count(r));
            if ring.is_single() {
                self.q.count(match self.role {
                    Role::Producer => ring.recover_single_writer(),
                    Role::Consumer => ring.recover_single_reader(),
                });
            }
            if self.role == Role::Producer {
                self.q.repair_chain(self.me);
            }
        }
        self.q.peers().clear_hold(self.me);
        self.q.peers().detach(self.attachment);
        // Blocks kept mapped for reuse go with any endpoint: a handle
        // whose endpoints are gone keeps no block's memory allocated.
        if self.q.flavor() == Flavor::Unbounded {
            self.q.drop_cached_blocks();
        }
        // Wake the other side so it can notice we have gone.
        match self.role {
            Role::Producer => self.q.wake_receivers(),
            Role::Consumer => self.q.wake_senders(),
        }
    }
}
