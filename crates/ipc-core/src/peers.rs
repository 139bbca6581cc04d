//! The attachment table: which processes are attached to a segment, in which
//! role, and whether they still live.
//!
//! Each entry's state word packs `(state << 32) | pid`, so that claiming,
//! detaching and reaping are single compare-and-swaps. A process is
//! identified by pid *and* start time (from `/proc/PID/stat`), so a reused
//! pid never passes for a dead peer. Counts of live producers and consumers
//! are not stored: they are derived by scanning the table, so a process that
//! dies at any instant never leaves a wrong count behind. For the hot path,
//! a [`Roster`] keeps one bit per entry and role: setting and clearing a bit
//! is idempotent, so attach, detach and reaping keep it exact even when a
//! process dies between any two steps.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sys;

const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const ALIVE: u64 = 2;
const REAPING: u64 = 3;

fn pack(state: u64, pid: u32) -> u64 {
    (state << 32) | pid as u64
}

fn unpack(word: u64) -> (u64, u32) {
    (word >> 32, word as u32)
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

    /// True if some entry in `role` is attached (one load: hot-path safe).
    pub fn any(&self, role: Role) -> bool {
        self.mask(role).load(Ordering::Acquire) != 0
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
}

/// A view of one attached process, for status displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// Index in the table (also the owner id stamped on slots it holds).
    pub index: u32,
    /// Process id.
    pub pid: u32,
    /// Role, if the entry holds a valid one.
    pub role: Option<Role>,
    /// True if the process still runs.
    pub alive: bool,
}

/// The table, as a slice of entries in the mapping.
#[derive(Debug, Clone, Copy)]
pub struct PeerTable<'a> {
    entries: &'a [PeerEntry],
    roster: &'a Roster,
}

impl<'a> PeerTable<'a> {
    /// Wraps the entries of a mapping (at most 64) and its roster.
    pub fn new(entries: &'a [PeerEntry], roster: &'a Roster) -> Self {
        debug_assert!(entries.len() <= 64);
        PeerTable {
            entries: &entries[..entries.len().min(64)],
            roster,
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

    /// Claims a free entry for the calling process. `None` if all are taken.
    pub fn attach(&self, role: Role) -> Option<u32> {
        self.attach_as(role, false).ok()
    }

    /// Claims a free entry; with `alone`, only if no other process holds
    /// `role` (refused with `Err(true)`). `Err(false)`: the table is full.
    pub fn attach_as(&self, role: Role, alone: bool) -> Result<u32, bool> {
        let pid = sys::current_pid();
        let start = sys::process_info(pid).map_or(0, |i| i.start_time);
        for (i, e) in self.entries.iter().enumerate() {
            if e.state
                .compare_exchange(
                    FREE,
                    pack(CLAIMING, pid),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                e.start_time.store(start, Ordering::Relaxed);
                e.role.store(role as u32, Ordering::Relaxed);
                // Before ALIVE: a death in between leaves a CLAIMING entry,
                // whose reaping clears the bit again.
                if alone {
                    if !self.roster.set_alone(role, i as u32) {
                        e.state.store(FREE, Ordering::Release);
                        return Err(true);
                    }
                } else {
                    self.roster.set(role, i as u32);
                }
                e.state.store(pack(ALIVE, pid), Ordering::Release);
                return Ok(i as u32);
            }
        }
        Err(false)
    }

    /// Releases the caller's own entry. The caller must hold no slot.
    pub fn detach(&self, index: u32) {
        if let Some(e) = self.entries.get(index as usize) {
            let pid = sys::current_pid();
            self.roster.clear(index);
            // Release: everything we committed happens-before a reader that
            // sees us gone.
            let _ = e.state.compare_exchange(
                pack(ALIVE, pid),
                FREE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// True if entry `index` is still held by the calling process (false if
    /// a peer overwrote it).
    pub fn holds(&self, index: u32) -> bool {
        self.entries
            .get(index as usize)
            .is_some_and(|e| e.state.load(Ordering::Relaxed) == pack(ALIVE, sys::current_pid()))
    }

    /// Number of attached processes in `role`, counting those not yet found
    /// dead (run [`PeerTable::reap_dead`] first for an exact figure).
    pub fn count(&self, role: Role) -> u32 {
        self.entries
            .iter()
            .filter(|e| {
                let (state, _) = unpack(e.state.load(Ordering::Acquire));
                (state == ALIVE || state == CLAIMING)
                    && e.role.load(Ordering::Relaxed) == role as u32
            })
            .count() as u32
    }

    /// Lists the occupied entries with a liveness check (reads /proc).
    pub fn list(&self) -> Vec<PeerInfo> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let (state, pid) = unpack(e.state.load(Ordering::Acquire));
                (state == ALIVE || state == CLAIMING).then(|| PeerInfo {
                    index: i as u32,
                    pid,
                    role: Role::from_u32(e.role.load(Ordering::Relaxed)),
                    alive: sys::process_alive(pid, e.start_time.load(Ordering::Relaxed)),
                })
            })
            .collect()
    }

    /// Finds entries whose process has died and releases them, calling
    /// `recover(index, role)` for each while the entry is still reserved (so
    /// the index cannot be reused while the caller repairs slots stamped
    /// with it). Returns how many were reaped. Reads /proc: a slow path.
    pub fn reap_dead(&self, mut recover: impl FnMut(u32, Option<Role>)) -> u32 {
        let me = sys::current_pid();
        let mut reaped = 0;
        for (i, e) in self.entries.iter().enumerate() {
            let word = e.state.load(Ordering::Acquire);
            let (state, pid) = unpack(word);
            let dead = match state {
                ALIVE => !sys::process_alive(pid, e.start_time.load(Ordering::Relaxed)),
                // Start time may not be written yet: judge by pid alone.
                CLAIMING => !sys::process_alive(pid, 0),
                // A reaper that died mid-way: take its work over.
                REAPING => !sys::process_alive(pid, 0),
                _ => false,
            };
            if !dead {
                continue;
            }
            if e.state
                .compare_exchange(word, pack(REAPING, me), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // Repair first, then give the place up: while the role bit
                // is set, a single-mode queue admits no replacement that
                // the repair could mistake for the dead process.
                recover(i as u32, Role::from_u32(e.role.load(Ordering::Relaxed)));
                self.roster.clear(i as u32);
                e.state.store(FREE, Ordering::Release);
                reaped += 1;
            }
        }
        reaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "attach reads /proc/self/stat (start time), which Miri cannot open under isolation"
    )]
    fn attach_count_detach() {
        let entries: Vec<PeerEntry> = (0..4).map(|_| PeerEntry::default()).collect();
        let roster = Roster::default();
        let t = PeerTable::new(&entries, &roster);
        let a = t.attach(Role::Producer).unwrap();
        let b = t.attach(Role::Consumer).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.count(Role::Producer), 1);
        assert_eq!(t.count(Role::Consumer), 1);
        assert!(roster.any(Role::Producer) && roster.any(Role::Consumer));
        assert!(t.holds(a));
        assert_eq!(t.reap_dead(|_, _| panic!("we are alive")), 0);
        t.detach(a);
        assert_eq!(t.count(Role::Producer), 0);
        assert!(!roster.any(Role::Producer));
        assert_eq!(t.list().len(), 1);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "reaping reads /proc/PID/stat, which Miri cannot open under isolation"
    )]
    fn dead_pid_is_reaped_once() {
        let entries: Vec<PeerEntry> = (0..2).map(|_| PeerEntry::default()).collect();
        // A pid above pid_max can never be alive.
        entries[1]
            .state
            .store(pack(ALIVE, u32::MAX - 1), Ordering::Relaxed);
        entries[1]
            .role
            .store(Role::Consumer as u32, Ordering::Relaxed);
        let roster = Roster::default();
        roster.set(Role::Consumer, 1);
        let t = PeerTable::new(&entries, &roster);
        let mut seen = vec![];
        assert_eq!(t.reap_dead(|i, r| seen.push((i, r))), 1);
        assert_eq!(seen, vec![(1, Some(Role::Consumer))]);
        assert_eq!(t.reap_dead(|_, _| panic!("reaped twice")), 0);
        assert_eq!(t.count(Role::Consumer), 0);
        assert!(!roster.any(Role::Consumer));
    }
}
