//! The attachment table: which processes are attached to a segment, in which
//! role, and whether they still live.
//!
//! Who is alive is held by the kernel, not read from `/proc`: each entry
//! `i` has a byte lock in the segment's file (an open-file-description
//! lock, see [`LockFd`]), taken before the entry is claimed and released
//! only after it is freed. The kernel drops it when its process dies,
//! however it dies, in whatever pid namespace, under whatever user, with or
//! without a zombie main thread. So an entry in use whose lock is free
//! belongs to a dead process; and a survivor that takes that lock owns the
//! entry exclusively while it repairs what the dead process held: nobody
//! can attach there, nor reap it, until it lets go. A reaper that dies
//! mid-way drops the lock too, and the next one redoes the (idempotent)
//! repair. Pid and start time are kept for display only.
//!
//! Each entry's state word packs `(state, generation, pid)`; every claim
//! of a free entry bumps the generation, so a stale compare-and-swap can
//! never hit a newer attachment that reused the entry. Counts of live
//! producers and consumers are not stored: they are derived by scanning
//! the table. For the hot path, a [`Roster`] keeps one bit per entry and
//! role; setting and clearing a bit is idempotent, and a bit whose entry is
//! free (a phantom, which only a scribbling peer can leave) is cleared by
//! the next reaper, never waited on.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sys::{self, Holder, LockFd};

const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const ALIVE: u64 = 2;
const REAPING: u64 = 3;

const STATE_SHIFT: u32 = 62;
const GEN_SHIFT: u32 = 32;
const GEN_MASK: u64 = (1 << 30) - 1;

fn pack(state: u64, generation: u64, pid: u32) -> u64 {
    (state << STATE_SHIFT) | ((generation & GEN_MASK) << GEN_SHIFT) | pid as u64
}

/// (state, generation, pid)
fn unpack(word: u64) -> (u64, u64, u32) {
    (
        word >> STATE_SHIFT,
        (word >> GEN_SHIFT) & GEN_MASK,
        word as u32,
    )
}

/// The part a process plays on a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Role {
    /// Writes messages.
    Producer = 1,
    /// Reads messages.
    Consumer = 2,
}

impl Role {
    /// The role on the other side.
    pub fn other(self) -> Role {
        match self {
            Role::Producer => Role::Consumer,
            Role::Consumer => Role::Producer,
        }
    }

    fn from_u32(v: u32) -> Option<Role> {
        match v {
            1 => Some(Role::Producer),
            2 => Some(Role::Consumer),
            _ => None,
        }
    }
}

/// One bit per attachment-table entry, per role: who is attached now.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct Roster {
    producers: AtomicU64,
    consumers: AtomicU64,
    /// Consumers inside a blocking receive now (for a rendezvous
    /// `try_send`); a bit per entry, so reaping a dead one clears it.
    waiting: AtomicU64,
}

impl Roster {
    fn mask(&self, role: Role) -> &AtomicU64 {
        match role {
            Role::Producer => &self.producers,
            Role::Consumer => &self.consumers,
        }
    }

    /// How many entries hold `role`.
    pub fn count(&self, role: Role) -> u32 {
        self.mask(role).load(Ordering::Acquire).count_ones()
    }

    /// True if some entry in `role` is attached (one load: hot-path safe).
    pub fn any(&self, role: Role) -> bool {
        self.mask(role).load(Ordering::Acquire) != 0
    }

    /// True if entry `index` holds `role`'s bit.
    pub(crate) fn has_role(&self, role: Role, index: u32) -> bool {
        self.mask(role).load(Ordering::Acquire) & (1u64 << (index % 64)) != 0
    }

    /// True if entry `index` is attached, in either role.
    pub(crate) fn has(&self, index: u32) -> bool {
        let bit = 1u64 << (index % 64);
        (self.producers.load(Ordering::Acquire) | self.consumers.load(Ordering::Acquire)) & bit
            != 0
    }

    fn set(&self, role: Role, index: u32) {
        self.mask(role).fetch_or(1 << index, Ordering::AcqRel);
    }

    /// Sets the bit only if no entry holds `role`; false otherwise.
    fn set_alone(&self, role: Role, index: u32) -> bool {
        self.mask(role)
            .compare_exchange(0, 1 << index, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn clear(&self, index: u32) {
        let bit = !(1u64 << index);
        self.producers.fetch_and(bit, Ordering::AcqRel);
        self.consumers.fetch_and(bit, Ordering::AcqRel);
        self.waiting.fetch_and(bit, Ordering::AcqRel);
    }

    /// Marks entry `index` as waiting in a receive (or not).
    pub fn set_waiting(&self, index: u32, waiting: bool) {
        let bit = 1u64 << (index % 64);
        if waiting {
            self.waiting.fetch_or(bit, Ordering::SeqCst);
        } else {
            self.waiting.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// True if some consumer waits in a receive now.
    pub fn any_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) != 0
    }
}

/// One entry of the attachment table, in shared memory.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct PeerEntry {
    state: AtomicU64,
    start_time: AtomicU64,
    role: AtomicU32,
    /// A receiver of an unbounded queue reading a message in place after
    /// letting the other receivers go on: the chain index of its block + 1
    /// (0: none). See [`PeerTable::set_hold`].
    hold_block: AtomicU64,
    /// ... and the message's position in that block's ring.
    hold_pos: AtomicU64,
}

/// A view of one attached process, for status displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// Index in the table (also the owner id stamped on slots it holds).
    pub index: u32,
    /// Process id, as the process itself saw it (in its pid namespace).
    pub pid: u32,
    /// Role, if the entry holds a valid one.
    pub role: Option<Role>,
    /// True if the process still runs (its liveness lock is held).
    pub alive: bool,
}

/// True if a live process holds entry `i`'s liveness lock (when the
/// kernel cannot tell, alive: a live peer judged dead would be repaired
/// under it).
fn alive(locks: &LockFd, i: u32) -> bool {
    !matches!(locks.holder(i), Ok(Holder::Nobody))
}

/// Why [`PeerTable::attach_as`] failed.
#[derive(Debug)]
pub enum AttachFail {
    /// Every entry is taken.
    Full,
    /// `alone` was asked and another process holds the role.
    RoleTaken,
    /// The liveness lock could not be taken.
    Lock(std::io::Error),
}

/// The caller's own attachment: its entry and the state word it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// Index in the table.
    pub index: u32,
    word: u64,
}

impl Attachment {
    /// This attachment's identity: its entry and generation (see
    /// [`PeerTable::repaired`]).
    pub fn id(&self) -> u64 {
        (u64::from(self.index) << 32) | unpack(self.word).1
    }

    /// The entry's state word while this attachment holds it (its
    /// generation makes it unique: see [`PeerTable::still_attached`]).
    pub fn word(&self) -> u64 {
        self.word
    }
}

/// The table, as a slice of entries in the mapping.
#[derive(Debug, Clone, Copy)]
pub struct PeerTable<'a> {
    entries: &'a [PeerEntry],
    roster: &'a Roster,
    locks: &'a LockFd,
}

impl<'a> PeerTable<'a> {
    /// Wraps the entries of a mapping (at most 64), its roster and the
    /// mapping's liveness locks.
    pub fn new(entries: &'a [PeerEntry], roster: &'a Roster, locks: &'a LockFd) -> Self {
        debug_assert!(entries.len() <= 64);
        PeerTable {
            entries: &entries[..entries.len().min(64)],
            roster,
            locks,
        }
    }

    /// The roster of attached entries.
    pub fn roster(&self) -> &'a Roster {
        self.roster
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the table has no entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Claims a free entry for the calling process; with `alone`, only if
    /// no other process holds `role`.
    pub fn attach_as(&self, role: Role, alone: bool) -> Result<Attachment, AttachFail> {
        let pid = sys::current_pid();
        let start = sys::process_info(pid).map_or(0, |i| i.start_time);
        for (i, e) in self.entries.iter().enumerate() {
            let i = i as u32;
            if unpack(e.state.load(Ordering::Acquire)).0 != FREE {
                continue;
            }
            // The lock first: from here until the entry is free again, a
            // survivor that finds the lock free knows we are dead.
            match self.locks.take(i) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => return Err(AttachFail::Lock(err)),
            }
            let word = e.state.load(Ordering::Acquire);
            let (state, generation, _) = unpack(word);
            let claiming = pack(CLAIMING, generation + 1, pid);
            if state != FREE
                || e.state
                    .compare_exchange(word, claiming, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                self.locks.give_back(i);
                continue;
            }
            e.start_time.store(start, Ordering::Relaxed);
            e.role.store(role as u32, Ordering::Relaxed);
            e.hold_block.store(0, Ordering::Relaxed);
            if alone {
                if !self.roster.set_alone(role, i) {
                    e.state
                        .store(pack(FREE, generation + 1, 0), Ordering::Release);
                    self.locks.give_back(i);
                    return Err(AttachFail::RoleTaken);
                }
            } else {
                self.roster.set(role, i);
            }
            let alive = pack(ALIVE, generation + 1, pid);
            e.state.store(alive, Ordering::Release);
            return Ok(Attachment {
                index: i,
                word: alive,
            });
        }
        Err(AttachFail::Full)
    }

    /// Announces that entry `index` (the caller's) reads the message at
    /// `pos` of chain block `k` in place, after freeing the ring's head
    /// past it: the block keeps its name while a hold names it (see
    /// `Queue::retire`), and the reaper counts the message lost if the
    /// reader dies holding it.
    pub fn set_hold(&self, index: u32, k: u64, pos: u64) {
        if let Some(e) = self.entries.get(index as usize) {
            e.hold_pos.store(pos, Ordering::Relaxed);
            // SeqCst: pairs with the fence of a receiver retiring the
            // block (it sees the hold, or we see the head moved past).
            e.hold_block.store(k.saturating_add(1), Ordering::SeqCst);
        }
    }

    /// Ends entry `index`'s hold (the message let go).
    pub fn clear_hold(&self, index: u32) {
        if let Some(e) = self.entries.get(index as usize) {
            e.hold_block.store(0, Ordering::SeqCst);
        }
    }

    /// The (block, position) entry `index` holds, if any.
    pub fn hold_of(&self, index: u32) -> Option<(u64, u64)> {
        let e = self.entries.get(index as usize)?;
        let k = e.hold_block.load(Ordering::SeqCst);
        (k != 0).then(|| (k - 1, e.hold_pos.load(Ordering::Relaxed)))
    }

    /// The (block, position) holds of entries attached as receivers. A hold
    /// in an entry that is not (a scribble, or a stale word) counts for
    /// nothing: only a receiver's own hold, cleared when it lets go or by
    /// the reaper once it died, keeps a block's name.
    fn receivers_holds(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.entries.len() as u32)
            .filter(|&i| self.roster.has_role(Role::Consumer, i))
            .filter_map(|i| self.hold_of(i))
    }

    /// True if a receiver holds a message of block `k` at a position in
    /// `lap` (the positions of the lap it serves `k` in).
    pub fn holds_in(&self, k: u64, lap: std::ops::Range<u64>) -> bool {
        self.receivers_holds()
            .any(|(b, pos)| b == k && lap.contains(&pos))
    }

    /// Receivers holding a message read in place after freeing the head
    /// past it (an unbounded queue's), for status displays.
    pub fn holding(&self) -> u64 {
        self.receivers_holds().count() as u64
    }

    /// Releases the caller's own entry. The caller must hold no slot.
    pub fn detach(&self, me: Attachment) {
        let Some(e) = self.entries.get(me.index as usize) else {
            return;
        };
        self.roster.clear(me.index);
        let (_, generation, _) = unpack(me.word);
        // Release: everything we committed happens-before a reader that
        // sees us gone. Fails only if a scribbler changed the word.
        let _ = e.state.compare_exchange(
            me.word,
            pack(FREE, generation, 0),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.locks.give_back(me.index);
    }

    /// True if entry `index` is still the attachment whose word was
    /// `word` ([`Attachment::word`]): not detached, not reaped, not reused.
    pub fn still_attached(&self, index: u32, word: u64) -> bool {
        self.entries
            .get(index as usize)
            .is_some_and(|e| e.state.load(Ordering::Acquire) == word)
    }

    /// True once the attachment `id` ([`Attachment::id`]) has gone and,
    /// if it died, its repair is done: its entry is free, or attached
    /// again (a later generation, which a claim takes only once it is
    /// free). A reaper marks it `REAPING` only after taking its lock, and
    /// frees it only after the repair: until then the entry keeps this
    /// generation, not free.
    pub fn repaired(&self, id: u64) -> bool {
        let (index, generation) = ((id >> 32) as usize, id & GEN_MASK);
        self.entries.get(index).is_none_or(|e| {
            let (state, now, _) = unpack(e.state.load(Ordering::Acquire));
            state == FREE || now != generation
        })
    }

    /// True if the entry is still the caller's attachment.
    pub fn holds(&self, me: Attachment) -> bool {
        self.entries
            .get(me.index as usize)
            .is_some_and(|e| e.state.load(Ordering::Relaxed) == me.word)
    }

    /// Number of attached processes in `role`, counting those not yet found
    /// dead (run [`PeerTable::reap_dead`] first for an exact figure).
    pub fn count(&self, role: Role) -> u32 {
        self.entries
            .iter()
            .filter(|e| {
                let (state, _, _) = unpack(e.state.load(Ordering::Acquire));
                (state == ALIVE || state == CLAIMING)
                    && e.role.load(Ordering::Relaxed) == role as u32
            })
            .count() as u32
    }

    /// Lists the occupied entries with a liveness check (one `fcntl` each).
    pub fn list(&self) -> Vec<PeerInfo> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let (state, _, pid) = unpack(e.state.load(Ordering::Acquire));
                (state != FREE).then(|| PeerInfo {
                    index: i as u32,
                    pid,
                    role: Role::from_u32(e.role.load(Ordering::Relaxed)),
                    alive: state != REAPING && alive(self.locks, i as u32),
                })
            })
            .collect()
    }

    /// Finds entries whose process has died and releases them, calling
    /// `recover(index, role, pid)` for each while this process holds the
    /// entry's liveness lock (so that nobody can reuse the index while the
    /// caller repairs what it held). `role` is `Some` only if the entry
    /// still holds that role's roster bit: a process that died before
    /// publishing its bit, or while detaching after clearing it, may have a
    /// replacement in that role already, which a single-mode repair must
    /// not touch. Clears roster bits of free entries. Returns how many
    /// entries were reaped. One `fcntl` per entry in use.
    pub fn reap_dead(&self, mut recover: impl FnMut(u32, Option<Role>, u32)) -> u32 {
        let me = sys::current_pid();
        let mut reaped = 0;
        for (i, e) in self.entries.iter().enumerate() {
            let i = i as u32;
            if unpack(e.state.load(Ordering::Acquire)).0 == FREE && !self.roster.has(i) {
                continue;
            }
            if !matches!(self.locks.take(i), Ok(true)) {
                // A live process holds it (or the kernel cannot say).
                continue;
            }
            crate::pause::at("reap: entry taken");
            let word = e.state.load(Ordering::Acquire);
            let (state, generation, pid) = unpack(word);
            if state != FREE {
                // Ours while we hold the lock; the word is for display.
                let _ = e.state.compare_exchange(
                    word,
                    pack(REAPING, generation, me),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                // Repair first, then give the place up: while the role bit
                // is set, a single-mode queue admits no replacement that
                // the repair could mistake for the dead process.
                let role = Role::from_u32(e.role.load(Ordering::Relaxed))
                    .filter(|&r| self.roster.has_role(r, i));
                recover(i, role, pid);
                reaped += 1;
            } else {
                log::warn!("attachment entry {i} is free but marked attached: bit cleared");
            }
            self.roster.clear(i);
            e.state
                .store(pack(FREE, generation, 0), Ordering::Release);
            self.locks.give_back(i);
        }
        reaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn lock_file(tag: &str) -> (std::path::PathBuf, impl Fn() -> LockFd) {
        let path =
            std::env::temp_dir().join(format!("ipc-core-peers-{tag}-{}", std::process::id()));
        let p = path.clone();
        let open = move || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .unwrap();
            LockFd::for_file(&OwnedFd::from(f), "unused").unwrap()
        };
        (path, open)
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes fcntl locks on a file, which Miri cannot")]
    fn attach_count_detach() {
        let (path, open) = lock_file("attach");
        let locks = open();
        let entries: Vec<PeerEntry> = (0..4).map(|_| PeerEntry::default()).collect();
        let roster = Roster::default();
        let t = PeerTable::new(&entries, &roster, &locks);
        let a = t.attach_as(Role::Producer, false).unwrap();
        let b = t.attach_as(Role::Consumer, false).unwrap();
        assert_ne!(a.index, b.index);
        assert_eq!(t.count(Role::Producer), 1);
        assert_eq!(t.count(Role::Consumer), 1);
        assert!(roster.any(Role::Producer) && roster.any(Role::Consumer));
        assert!(t.holds(a));
        assert_eq!(t.reap_dead(|_, _, _| panic!("we are alive")), 0);
        // Another mapping (another open file description) sees us alive.
        let other = open();
        let seen = PeerTable::new(&entries, &roster, &other);
        assert_eq!(seen.reap_dead(|_, _, _| panic!("we are alive")), 0);
        assert!(seen.list().iter().all(|p| p.alive));
        t.detach(a);
        assert!(!t.holds(a));
        assert_eq!(t.count(Role::Producer), 0);
        assert!(!roster.any(Role::Producer));
        assert_eq!(t.list().len(), 1);
        // The entry comes back with a new generation.
        let c = t.attach_as(Role::Producer, false).unwrap();
        assert_eq!(c.index, a.index);
        assert_ne!(c.word, a.word);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes fcntl locks on a file, which Miri cannot")]
    fn an_entry_whose_lock_is_gone_is_reaped_once() {
        let (path, open) = lock_file("reap");
        let entries: Vec<PeerEntry> = (0..2).map(|_| PeerEntry::default()).collect();
        let roster = Roster::default();
        {
            // A "process" that attaches and dies: its description closes.
            let dying = open();
            let t = PeerTable::new(&entries, &roster, &dying);
            t.attach_as(Role::Producer, false).unwrap();
            let c = t.attach_as(Role::Consumer, false).unwrap();
            assert_eq!(c.index, 1);
        }
        let locks = open();
        let t = PeerTable::new(&entries, &roster, &locks);
        assert!(t.list().iter().all(|p| !p.alive));
        let mut seen = vec![];
        assert_eq!(t.reap_dead(|i, r, _| seen.push((i, r))), 2);
        assert_eq!(
            seen,
            vec![(0, Some(Role::Producer)), (1, Some(Role::Consumer))]
        );
        assert_eq!(t.reap_dead(|_, _, _| panic!("reaped twice")), 0);
        assert_eq!(t.count(Role::Consumer), 0);
        assert!(!roster.any(Role::Consumer) && !roster.any(Role::Producer));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes fcntl locks on a file, which Miri cannot")]
    fn a_phantom_roster_bit_is_cleared_not_waited_on() {
        let (path, open) = lock_file("phantom");
        let locks = open();
        let entries: Vec<PeerEntry> = (0..4).map(|_| PeerEntry::default()).collect();
        let roster = Roster::default();
        roster.set(Role::Producer, 3);
        let t = PeerTable::new(&entries, &roster, &locks);
        assert!(roster.any(Role::Producer));
        assert_eq!(t.reap_dead(|_, _, _| panic!("nothing to repair")), 0);
        assert!(!roster.any(Role::Producer));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "takes fcntl locks on a file, which Miri cannot")]
    fn single_role_is_refused_while_held() {
        let (path, open) = lock_file("alone");
        let locks = open();
        let entries: Vec<PeerEntry> = (0..4).map(|_| PeerEntry::default()).collect();
        let roster = Roster::default();
        let t = PeerTable::new(&entries, &roster, &locks);
        let a = t.attach_as(Role::Producer, true).unwrap();
        assert!(matches!(
            t.attach_as(Role::Producer, true),
            Err(AttachFail::RoleTaken)
        ));
        t.detach(a);
        t.attach_as(Role::Producer, true).unwrap();
        std::fs::remove_file(path).unwrap();
    }
}
