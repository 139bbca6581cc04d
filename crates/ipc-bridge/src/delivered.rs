//! The receiving bridge's memory of what it delivered: per origin (a
//! sending bridge's journal), the last sequence number put into the
//! exported mailbox, kept in a state file so that a bridge killed and
//! started again drops the repeats a sender's journal resends.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::shm::StateFile;

const MAGIC: u64 = u64::from_le_bytes(*b"IPCBDLV1");
/// Origins remembered per exported mailbox; when full, the one idle for
/// longest is forgotten (documented: an origin silent that long that then
/// resends old messages would have them delivered again).
pub const ORIGINS: usize = 1024;
const HEADER: usize = 64;
const ENTRY: usize = 32;
const LEN: usize = HEADER + ORIGINS * ENTRY;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Last delivered sequence number per origin.
pub struct Delivered {
    file: StateFile,
    /// Where each origin's entry is (so that recording a delivery is one
    /// store, not a search: a bridge killed between putting a message in
    /// the mailbox and recording it would deliver it again).
    slots: std::collections::HashMap<u64, usize>,
    /// The idle stamp written with each record: the clock, read at most
    /// once a second (not once per message).
    stamp: u64,
    stamped_at: std::time::Instant,
}

impl Delivered {
    /// Opens the table at `path`, or creates an empty one.
    pub fn open_or_create(path: &Path) -> io::Result<Delivered> {
        let file = match StateFile::open(path, LEN) {
            Ok(f) => {
                if f.load(0) != MAGIC || f.len() != LEN {
                    return Err(io::Error::other(format!(
                        "{} is not a table of delivered messages",
                        path.display()
                    )));
                }
                f
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = StateFile::create(path, LEN)?;
                f.store(0, MAGIC);
                f
            }
            Err(e) => return Err(e),
        };
        file.lock_exclusive().map_err(|e| {
            io::Error::other(format!(
                "{} is in use by another ipc-bridge ({e}): one bridge per mailbox",
                path.display()
            ))
        })?;
        let mut slots = std::collections::HashMap::new();
        for i in 0..ORIGINS {
            let at = HEADER + i * ENTRY;
            let origin = file.load(at);
            if origin != 0 {
                slots.entry(origin).or_insert(at);
            }
        }
        Ok(Delivered {
            file,
            slots,
            stamp: now_s(),
            stamped_at: std::time::Instant::now(),
        })
    }

    /// This table's own random identity, chosen once (a puller names
    /// itself with it, so a restarted puller is the same puller).
    pub fn id(&self) -> io::Result<u64> {
        match self.file.load(8) {
            0 => {
                let id = crate::shm::random_u64()?;
                self.file.store(8, id);
                Ok(id)
            }
            id => Ok(id),
        }
    }

    /// A random secret of this table, chosen once, never sent: it keys
    /// the commit tags of the messages delivered with it, so that a peer
    /// cannot choose an origin whose tag matches another origin's next
    /// message (and make a restart take that message for delivered).
    pub fn salt(&self) -> io::Result<u64> {
        match self.file.load(16) {
            0 => {
                let salt = crate::shm::random_u64()?.max(1);
                self.file.store(16, salt);
                Ok(salt)
            }
            salt => Ok(salt),
        }
    }

    fn find(&self, origin: u64) -> Option<usize> {
        self.slots.get(&origin).copied()
    }

    /// The origins this table has an entry for.
    pub fn origins(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    /// True if `origin` has an entry (made by its first record).
    pub fn knows(&self, origin: u64) -> bool {
        self.slots.contains_key(&origin)
    }

    /// The last sequence number delivered for `origin` (0: none).
    pub fn last(&self, origin: u64) -> u64 {
        self.find(origin).map_or(0, |at| self.file.load(at + 8))
    }

    /// The last message of `origin` withdrawn at its request (0: none).
    pub fn cancelled(&self, origin: u64) -> u64 {
        self.find(origin).map_or(0, |at| self.file.load(at + 24))
    }

    /// Records that `seq` of `origin` was withdrawn, not delivered: it
    /// counts as done (a resend of it is a repeat), and acknowledgements
    /// of it say so. The mark first: a crash between the two stores leaves
    /// the message not done, and the origin asks again.
    pub fn record_cancelled(&mut self, origin: u64, seq: u64) {
        self.record(origin, seq - 1);
        let at = self.find(origin).expect("recorded");
        self.file.store(at + 24, seq);
        self.file.store(at + 8, seq);
    }

    /// Records that `seq` of `origin` is in the mailbox.
    pub fn record(&mut self, origin: u64, seq: u64) {
        let at = match self.find(origin) {
            Some(at) => at,
            None => {
                // A free entry, else the one idle for longest.
                let at = (0..ORIGINS)
                    .map(|i| HEADER + i * ENTRY)
                    .min_by_key(|&at| {
                        if self.file.load(at) == 0 {
                            0
                        } else {
                            self.file.load(at + 16).max(1)
                        }
                    })
                    .expect("at least one entry");
                // Sequence first, then the origin: a crash between the
                // two leaves the entry unclaimed, never another origin's
                // count under this one's name.
                let old = self.file.load(at);
                self.slots.remove(&old);
                self.file.store(at + 8, 0);
                self.file.store(at + 24, 0);
                self.file.store(at, origin);
                self.slots.insert(origin, at);
                at
            }
        };
        self.file.store(at + 8, seq);
        if self.stamped_at.elapsed().as_secs() >= 1 {
            self.stamp = now_s();
            self.stamped_at = std::time::Instant::now();
        }
        if self.file.load(at + 16) != self.stamp {
            self.file.store(at + 16, self.stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_counts_survive_a_reopen() {
        let path = std::env::temp_dir().join(format!("ipcb-dlv-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut d = Delivered::open_or_create(&path).unwrap();
        assert_eq!(d.last(5), 0);
        d.record(5, 1);
        d.record(9, 3);
        d.record(5, 2);
        drop(d);
        let d = Delivered::open_or_create(&path).unwrap();
        assert_eq!((d.last(5), d.last(9), d.last(1)), (2, 3, 0));
        std::fs::remove_file(&path).unwrap();
    }
}
