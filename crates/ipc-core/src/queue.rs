//! The machinery shared by the buffer and the mailbox: a segment holding a
//! header, an attachment table and a ring; creation and validated opening;
//! attaching endpoints; blocking with spin-then-sleep; reaping dead peers;
//! disconnection.

use std::mem::size_of;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{AttachError, CorruptError, CreateError, OpenError, RecvError, SegmentError};
use crate::layout::{magic_state, Geometry, Header, Kind, ValidateError, MAGIC};
use crate::peers::{PeerEntry, PeerInfo, PeerTable, Role};
use crate::ring::{ReadAttempt, Ring, WriteClaim, MAX_OWNER};
use crate::segment::Segment;
use crate::sync::{Deadline, EventCount, SpinPolicy};

/// How often a blocked call re-checks that its peers still live.
pub const LIVENESS_PERIOD: Duration = Duration::from_millis(100);

/// How long `open` waits for a creator to publish the header.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(2);

/// A mapped, validated queue segment.
#[derive(Debug)]
pub(crate) struct Queue {
    seg: Segment,
    geo: Geometry,
}

/// A snapshot of a queue segment, for status displays.
#[derive(Debug, Clone)]
pub struct Status {
    /// Segment name.
    pub name: String,
    /// Validated geometry.
    pub geometry: Geometry,
    /// Messages queued now.
    pub len: u64,
    /// Attached processes.
    pub peers: Vec<PeerInfo>,
    /// Producers (senders) that ever attached.
    pub producers_total: u32,
    /// Consumers (receivers) that ever attached.
    pub consumers_total: u32,
    /// Messages whose writer died mid-write (their send never succeeded).
    pub abandoned_writes: u64,
    /// Messages lost because the reader holding them died.
    pub lost_reads: u64,
    /// The layer above's flags word (mailbox capacity mode).
    pub user_flags: u32,
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
        user_flags: u32,
        user_value: u32,
    ) -> Result<Queue, CreateError> {
        let seg = Segment::create(name, geo.total_size as usize, mode)?;
        let base = seg.as_ptr();
        // SAFETY: the segment is new (O_EXCL), zero-filled, at least
        // `total_size` bytes, page aligned; openers read nothing but the
        // magic word until we publish it below.
        unsafe {
            let h = &mut *(base as *mut Header);
            geo.write_to(h);
            h.user_flags = user_flags;
            h.user_value = user_value;
            Ring::init(
                base.add(geo.slots_offset as usize),
                geo.slots,
                geo.slot_stride as usize,
            );
        }
        let q = Queue { seg, geo };
        q.header().magic.store(MAGIC, Ordering::Release);
        Ok(q)
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
                Err(SegmentError::Empty(_)) if waited < timeout => {
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
                Some(false) if waited < timeout => {
                    drop(seg);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Some(false) => return Err(not_ready(waited)),
                Some(true) => {}
            }
            let geo = Geometry::read_from(h, seg.len() as u64).map_err(|e| match e {
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
                    source: CorruptError(what),
                },
            })?;
            if let Some(expect) = expect.filter(|k| *k != geo.kind) {
                return Err(OpenError::WrongKind {
                    name: name.to_owned(),
                    found: geo.kind.name(),
                    expected: expect.name(),
                });
            }
            return Ok(Queue { seg, geo });
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
        PeerTable::new(entries)
    }

    pub(crate) fn ring_with_limit(&self, limit: u32) -> Ring<'_> {
        let h = self.header();
        // SAFETY: validated geometry: `slots` slots of `slot_stride` bytes
        // fit at `slots_offset`; initialized by the creator before the magic
        // was published.
        unsafe {
            Ring::new(
                &h.tail,
                &h.head,
                self.seg.as_ptr().add(self.geo.slots_offset as usize),
                self.geo.slots,
                limit.clamp(1, self.geo.slots),
                self.geo.slot_stride as usize,
                self.geo.max_message as usize,
            )
        }
    }

    pub(crate) fn ring(&self) -> Ring<'_> {
        self.ring_with_limit(self.geo.capacity)
    }

    /// Releases dead peers' attachments and repairs slots they held.
    pub(crate) fn reap(&self) -> u32 {
        let ring = self.ring();
        let c = &self.header().counters;
        let n = self.peers().reap_dead(|index, _role| {
            let r = ring.recover_owner(index);
            c.abandoned_writes
                .fetch_add(r.abandoned_writes, Ordering::Relaxed);
            c.lost_reads.fetch_add(r.lost_reads, Ordering::Relaxed);
        });
        if n > 0 {
            self.header().data_ready.notify();
            self.header().space_ready.notify();
        }
        n
    }

    pub(crate) fn status(&self) -> Status {
        self.reap();
        let h = self.header();
        Status {
            name: self.name().to_owned(),
            geometry: self.geo,
            len: self.ring().len(),
            peers: self.peers().list(),
            producers_total: h.counters.producers_total.load(Ordering::Relaxed),
            consumers_total: h.counters.consumers_total.load(Ordering::Relaxed),
            abandoned_writes: h.counters.abandoned_writes.load(Ordering::Relaxed),
            lost_reads: h.counters.lost_reads.load(Ordering::Relaxed),
            user_flags: h.user_flags,
        }
    }
}

/// One attached endpoint: the caller's entry in the attachment table.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) q: Arc<Queue>,
    pub(crate) me: u32,
    role: Role,
    cached_head: u64,
    pub(crate) policy: SpinPolicy,
}

/// The result of one attempt inside [`Endpoint::block_on`].
pub(crate) enum Step<T, E> {
    Ready(T),
    Wait,
    Fail(E),
}

/// Why [`Endpoint::block_on`] gave up.
pub(crate) enum Stop<E> {
    Timeout,
    Fail(E),
}

/// Why a write claim failed.
pub(crate) enum ClaimFail {
    Disconnected,
    Corrupt(CorruptError),
}

impl Endpoint {
    pub(crate) fn attach(q: Arc<Queue>, role: Role) -> Result<Endpoint, AttachError> {
        let table = q.peers();
        let me = match table.attach(role) {
            Some(i) => i,
            None => {
                q.reap();
                table
                    .attach(role)
                    .ok_or_else(|| AttachError::TooManyPeers {
                        name: q.name().to_owned(),
                        max: table.len(),
                    })?
            }
        };
        debug_assert!(me <= MAX_OWNER);
        let c = &q.header().counters;
        match role {
            Role::Producer => c.producers_total.fetch_add(1, Ordering::AcqRel),
            Role::Consumer => c.consumers_total.fetch_add(1, Ordering::AcqRel),
        };
        // Someone may wait for the first peer of this role.
        q.header().data_ready.notify();
        q.header().space_ready.notify();
        Ok(Endpoint {
            q,
            me,
            role,
            cached_head: 0,
            policy: SpinPolicy::DEFAULT,
        })
    }

    /// Every peer of `role` that attached has gone (and at least `min`
    /// attached). Scans the table: slow path only.
    pub(crate) fn all_gone(&self, role: Role, min: u32) -> bool {
        let c = &self.q.header().counters;
        let total = match role {
            Role::Producer => c.producers_total.load(Ordering::Acquire),
            Role::Consumer => c.consumers_total.load(Ordering::Acquire),
        };
        total >= min.max(1) && self.q.peers().count(role) == 0
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
        if deadline != Deadline::Now {
            for i in 0..self.policy.spins + self.policy.yields {
                match attempt(false) {
                    Step::Ready(v) => return Ok(v),
                    Step::Fail(e) => return Err(Stop::Fail(e)),
                    Step::Wait if i < self.policy.spins => std::hint::spin_loop(),
                    Step::Wait => std::thread::yield_now(),
                }
            }
        }
        let ev = ev(self.q.header());
        let mut last_reap = Instant::now();
        loop {
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
            let slice = remaining.map_or(LIVENESS_PERIOD, |r| r.min(LIVENESS_PERIOD));
            ev.wait(ticket, Some(slice));
            if last_reap.elapsed() >= LIVENESS_PERIOD {
                self.q.reap();
                last_reap = Instant::now();
            }
        }
    }

    /// Claims a slot to write into, waiting for space until `deadline`.
    /// `Disconnected` when it would wait but every consumer has gone.
    pub(crate) fn claim(
        &mut self,
        ring: &Ring<'_>,
        deadline: Deadline,
    ) -> Result<WriteClaim, Stop<ClaimFail>> {
        let me = self.me;
        let mut cached_head = self.cached_head;
        let r = self.block_on(
            |h| &h.space_ready,
            deadline,
            |thorough| match ring.try_claim_write(me, &mut cached_head) {
                Ok(Some(c)) => Step::Ready(c),
                Ok(None) if thorough && self.all_gone(Role::Consumer, 1) => {
                    Step::Fail(ClaimFail::Disconnected)
                }
                Ok(None) => Step::Wait,
                Err(e) => Step::Fail(ClaimFail::Corrupt(e)),
            },
        );
        self.cached_head = cached_head;
        r
    }

    /// Publishes a claimed slot and wakes sleeping consumers.
    pub(crate) fn commit(&self, ring: &Ring<'_>, claim: WriteClaim, len: usize, tag: u32) {
        ring.commit(claim, len, tag);
        self.q.header().data_ready.notify();
    }

    /// Receives one message into `f`, waiting until `deadline`. End of
    /// stream once at least `min_producers` attached, all have gone, and
    /// the ring is drained.
    pub(crate) fn recv_with<R>(
        &self,
        ring: &Ring<'_>,
        deadline: Deadline,
        max_len: usize,
        min_producers: u32,
        f: impl FnOnce(&[u8], u32) -> R,
    ) -> Result<R, RecvError> {
        let me = self.me;
        let attempt = |thorough: bool| match ring.try_claim_read(me, max_len) {
            Ok(ReadAttempt::Claimed(c)) => Step::Ready(c),
            Ok(ReadAttempt::TooLong(needed)) => Step::Fail(RecvError::BufferTooSmall {
                needed,
                available: max_len,
            }),
            Ok(ReadAttempt::Empty) if thorough && self.all_gone(Role::Producer, min_producers) => {
                // A producer may have committed just before detaching:
                // look once more now that we saw it gone.
                match ring.try_claim_read(me, max_len) {
                    Ok(ReadAttempt::Claimed(c)) => Step::Ready(c),
                    Ok(ReadAttempt::Empty) if ring.is_empty() => {
                        Step::Fail(RecvError::Disconnected)
                    }
                    Ok(ReadAttempt::Empty) => Step::Wait,
                    Ok(ReadAttempt::TooLong(needed)) => Step::Fail(RecvError::BufferTooSmall {
                        needed,
                        available: max_len,
                    }),
                    Err(e) => Step::Fail(RecvError::Corrupt(e)),
                }
            }
            Ok(ReadAttempt::Empty) => Step::Wait,
            Err(e) => Step::Fail(RecvError::Corrupt(e)),
        };
        let claim = self
            .block_on(|h| &h.data_ready, deadline, attempt)
            .map_err(|stop| match stop {
                Stop::Timeout if deadline == Deadline::Now => RecvError::Empty,
                Stop::Timeout => RecvError::Timeout,
                Stop::Fail(e) => e,
            })?;
        let out = f(ring.payload_of(&claim), ring.tag_of(&claim));
        ring.release(claim);
        self.q.header().space_ready.notify();
        Ok(out)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.q.peers().detach(self.me);
        // Wake the other side so it can notice we have gone.
        let h = self.q.header();
        match self.role {
            Role::Producer => h.data_ready.notify(),
            Role::Consumer => h.space_ready.notify(),
        }
    }
}
