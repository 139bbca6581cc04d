//! The sending bridge's journal: messages it has taken from a proxy
//! mailbox but the far bridge has not acknowledged yet, kept in a state
//! file so that a bridge killed and started again resends them (the far
//! side drops what it already delivered, by sequence number).
//!
//! ```text
//! header (one page): magic, max message, origin, ring bytes,
//!                    acked (seq), start (pos), end (pos), cancel (seq),
//!                    source seq, source index (of the last entry),
//!                    source id, withdrawn (seq), source put-backs,
//!                    taker (the receiver journaling)
//! ring:              [ seq u64 | len u32, flags u32 | payload, padded to 8 ]...
//! ```
//!
//! Positions grow for ever (offset = pos % ring); an entry never straddles
//! the ring's end (a padding entry fills the rest of the lap). `end` is
//! the commit word: an entry is journaled once `end` has been stored past
//! it, after its bytes. `acked` is stored before `start` moves past the
//! entries it covers, so after a crash `start` may trail (the walk skips
//! acknowledged entries) but never leads.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::Path;

use crate::shm::{random_u64, StateFile};

const MAGIC: u64 = u64::from_le_bytes(*b"IPCBJRN1");
const HEADER: usize = 4096;
const OFF_MAGIC: usize = 0;
const OFF_MAX: usize = 8;
const OFF_ORIGIN: usize = 16;
const OFF_RING: usize = 24;
const OFF_ACKED: usize = 32;
const OFF_START: usize = 40;
const OFF_END: usize = 48;
/// A journaled message to withdraw instead of sending (0: none): a
/// rendezvous offer whose sender was told `Disconnected` while the far
/// side could not be asked.
const OFF_CANCEL: usize = 56;
/// Where the last journaled message came from: the sequence number it was
/// given here, then its index in the proxy's stream, both stored before
/// the commit word (in that order). Together they say which message a
/// proxy that redelivers one after this bridge was killed may repeat.
const OFF_SOURCE_SEQ: usize = 64;
const OFF_SOURCE_INDEX: usize = 72;
/// Which source mailbox those indexes count in (see [`Journal::set_source`]).
const OFF_SOURCE_ID: usize = 80;
/// The last message the far side confirmed it withdrew (a rendezvous
/// offer), stored before the acknowledgement that covers it: a restarted
/// bridge must not take an acknowledged withdrawal for a delivery.
const OFF_WITHDRAWN: usize = 88;
/// How many messages repairs had put back for redelivery in the source
/// when the last entry was taken from it (`Mailbox::redeliveries`),
/// stored with its index: says whether that message was put back later.
const OFF_SOURCE_PUT_BACKS: usize = 96;
/// The attachment identity (`Receiver::attachment_id`) of the receiver
/// that takes the messages journaled now, plus one (0: none): a restarted
/// bridge waits for that receiver's repair before it asks what was put
/// back.
const OFF_TAKER: usize = 104;
const ENTRY_HEADER: u64 = 16;
const PAD: u32 = 1;
/// Positions stay below this; a larger one is a scribble.
const POS_LIMIT: u64 = 1 << 62;

/// Bytes an entry of `len` payload bytes takes.
fn entry_size(len: usize) -> u64 {
    ENTRY_HEADER + (len as u64).div_ceil(8) * 8
}

/// The ring a journal for messages of up to `max_message` bytes gets:
/// room for four of the largest, at least 1 MiB.
pub fn ring_for(max_message: usize) -> u64 {
    (4 * entry_size(max_message))
        .next_power_of_two()
        .max(1 << 20)
}

/// A journal that cannot be used, and why.
#[derive(Debug)]
pub enum JournalError {
    /// The file could not be created, opened or mapped.
    Io(io::Error),
    /// The file is not a journal, or its words are inconsistent.
    Corrupt(String),
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io(e) => write!(f, "{e}"),
            JournalError::Corrupt(why) => write!(f, "journal is corrupt: {why}"),
        }
    }
}

impl std::error::Error for JournalError {}

impl From<io::Error> for JournalError {
    fn from(e: io::Error) -> Self {
        JournalError::Io(e)
    }
}

fn corrupt<T>(why: impl Into<String>) -> Result<T, JournalError> {
    Err(JournalError::Corrupt(why.into()))
}

/// Where a journaled message came from in its source mailbox: its index
/// in the source's stream, and how many messages repairs had put back
/// for redelivery there when it was taken (see
/// [`ipc_core::mailbox::Mailbox::settle_redeliveries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The message's index (`Receiver::recv_batch_indexed_until`).
    pub index: u64,
    /// `Mailbox::redeliveries().count` inside the receive callback.
    pub put_backs: u64,
}

/// An entry still waiting for its acknowledgement.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u64,
    pos: u64,
    len: u32,
}

/// The journal of one proxy (one origin).
pub struct Journal {
    file: StateFile,
    ring: u64,
    max_message: usize,
    origin: u64,
    acked: u64,
    start: u64,
    end: u64,
    pending: VecDeque<Pending>,
}

impl Journal {
    /// Opens the journal at `path`, or creates it (with a fresh origin) if
    /// there is none. A journal made for another largest message is refused.
    /// The file is locked (`flock`) while the journal is open: a second
    /// bridge serving the same proxy is refused.
    pub fn open_or_create(path: &Path, max_message: usize) -> Result<Journal, JournalError> {
        let j = match StateFile::open(path, HEADER) {
            Ok(file) => {
                Self::lock(&file)?;
                Self::recover(file, max_message)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let j = Self::create(path, max_message)?;
                Self::lock(&j.file)?;
                j
            }
            Err(e) => return Err(e.into()),
        };
        Ok(j)
    }

    fn lock(file: &StateFile) -> Result<(), JournalError> {
        file.lock_exclusive().map_err(|e| {
            JournalError::Io(io::Error::other(format!(
                "{} is in use by another ipc-bridge ({e}): one bridge per proxy",
                file.path().display()
            )))
        })
    }

    fn create(path: &Path, max_message: usize) -> Result<Journal, JournalError> {
        let ring = ring_for(max_message);
        let file = StateFile::create(path, HEADER + ring as usize)?;
        let origin = random_u64()?;
        file.store(OFF_MAX, max_message as u64);
        file.store(OFF_ORIGIN, origin);
        file.store(OFF_RING, ring);
        // Magic last: a file cut short by a crash here is refused, never
        // taken for an empty journal of another origin.
        file.store(OFF_MAGIC, MAGIC);
        Ok(Journal {
            file,
            ring,
            max_message,
            origin,
            acked: 0,
            start: 0,
            end: 0,
            pending: VecDeque::new(),
        })
    }

    fn recover(file: StateFile, max_message: usize) -> Result<Journal, JournalError> {
        if file.load(OFF_MAGIC) != MAGIC {
            return corrupt(format!("{} is not a bridge journal", file.path().display()));
        }
        let recorded_max = file.load(OFF_MAX);
        if recorded_max != max_message as u64 {
            return corrupt(format!(
                "made for messages of up to {recorded_max} bytes, the mailbox takes {max_message}"
            ));
        }
        let origin = file.load(OFF_ORIGIN);
        let ring = file.load(OFF_RING);
        if origin == 0 || ring != ring_for(max_message) || HEADER as u64 + ring != file.len() as u64
        {
            return corrupt(format!(
                "origin {origin:#x} or ring of {ring} bytes does not fit a file of {} bytes",
                file.len()
            ));
        }
        let acked = file.load(OFF_ACKED);
        let start = file.load(OFF_START);
        let end = file.load(OFF_END);
        if start > end
            || end - start > ring
            || end >= POS_LIMIT
            || !start.is_multiple_of(8)
            || !end.is_multiple_of(8)
        {
            return corrupt(format!("positions start {start}, end {end}"));
        }
        let mut j = Journal {
            file,
            ring,
            max_message,
            origin,
            acked,
            start,
            end,
            pending: VecDeque::new(),
        };
        j.walk()?;
        // Entries the walk skipped as acknowledged are free again.
        j.start = j.pending.front().map_or(j.end, |p| p.pos);
        j.file.store(OFF_START, j.start);
        Ok(j)
    }

    /// Rebuilds the list of unacknowledged entries from `start` to `end`,
    /// checking every entry (bounded: positions only grow, up to `end`).
    fn walk(&mut self) -> Result<(), JournalError> {
        let mut pos = self.start;
        let mut last: Option<u64> = None;
        while pos < self.end {
            let off = (pos % self.ring) as usize;
            if off as u64 + ENTRY_HEADER > self.ring {
                return corrupt(format!("entry header at {pos} crosses the ring's end"));
            }
            let seq = self.file.load(HEADER + off);
            let word = self.file.load(HEADER + off + 8);
            let (len, flags) = (word as u32, (word >> 32) as u32);
            if flags == PAD {
                pos += self.ring - off as u64;
                continue;
            }
            if flags != 0 || len as usize > self.max_message {
                return corrupt(format!("entry at {pos}: length {len}, flags {flags:#x}"));
            }
            let size = entry_size(len as usize);
            if off as u64 + size > self.ring || pos + size > self.end {
                return corrupt(format!("entry at {pos} of {size} bytes runs past the end"));
            }
            if let Some(prev) = last {
                if seq != prev + 1 {
                    return corrupt(format!("entry at {pos}: seq {seq} after {prev}"));
                }
            } else if seq == 0 || seq > self.acked + 1 {
                return corrupt(format!(
                    "first entry at {pos}: seq {seq}, acknowledged up to {}",
                    self.acked
                ));
            }
            last = Some(seq);
            if seq > self.acked {
                self.pending.push_back(Pending { seq, pos, len });
            }
            pos += size;
        }
        if pos != self.end {
            return corrupt(format!(
                "entries end at {pos}, the journal says {}",
                self.end
            ));
        }
        match last {
            Some(l) if l < self.acked => corrupt(format!(
                "acknowledged up to {} beyond the last entry {l}",
                self.acked
            )),
            _ => Ok(()),
        }
    }

    /// The origin this journal sends as (random, chosen at creation).
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Highest sequence number the far side acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest sequence number journaled (`acked` if none waits).
    pub fn written(&self) -> u64 {
        self.pending.back().map_or(self.acked, |p| p.seq)
    }

    /// Messages journaled and not acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.pending.len() as u64
    }

    /// How many messages of the largest size surely fit now (padding at
    /// the ring's end included).
    pub fn room_for_largest(&self) -> u64 {
        let size = entry_size(self.max_message);
        let free = self.ring - (self.end - self.start);
        // One entry's worth may go to padding at the end of the ring.
        free.saturating_sub(size) / size
    }

    /// True if a message of `len` bytes fits now.
    pub fn has_room(&self, len: usize) -> bool {
        let (_, needed) = self.placement(len);
        self.end - self.start + needed <= self.ring
    }

    /// Where the next entry of `len` bytes goes, and the bytes it costs
    /// (with the padding to the ring's end if it would straddle it).
    fn placement(&self, len: usize) -> (u64, u64) {
        let size = entry_size(len);
        let off = self.end % self.ring;
        if off + size > self.ring {
            (self.end + self.ring - off, self.ring - off + size)
        } else {
            (self.end, size)
        }
    }

    /// Journals `msg` as the next sequence number, which it returns; `None`
    /// if there is no room (acknowledgements make room).
    pub fn append(&mut self, msg: &[u8]) -> Option<u64> {
        self.append_from(msg, None)
    }

    /// [`Journal::append`] of a message taken from the source mailbox as
    /// `taken` says (see [`Journal::last_source`]).
    pub fn append_taken(&mut self, msg: &[u8], taken: Taken) -> Option<u64> {
        self.append_from(msg, Some(taken))
    }

    /// Where the last journaled message came from, if it was appended with
    /// that. A source that redelivers the message its taker held when
    /// killed offers either that one (journaled already: this index) or
    /// the next.
    pub fn last_source(&self) -> Option<Taken> {
        let seq = self.file.load(OFF_SOURCE_SEQ);
        (seq != 0 && seq == self.written()).then(|| Taken {
            index: self.file.load(OFF_SOURCE_INDEX),
            put_backs: self.file.load(OFF_SOURCE_PUT_BACKS),
        })
    }

    /// The source index of the last journaled message (see
    /// [`Journal::last_source`]).
    pub fn last_source_index(&self) -> Option<u64> {
        self.last_source().map(|t| t.index)
    }

    /// Records which receiver takes the messages journaled from now on
    /// (see [`Journal::taker`]); stored before it takes any.
    pub fn set_taker(&mut self, id: u64) {
        self.file.store(OFF_TAKER, id.wrapping_add(1));
    }

    /// The attachment identity of the receiver that took the messages
    /// journaled last, if one was recorded.
    pub fn taker(&self) -> Option<u64> {
        self.file.load(OFF_TAKER).checked_sub(1)
    }

    /// Forgets the last entry, not yet acknowledged: its message went back
    /// to the source (this bridge was killed before the source let go of
    /// it, and the source put it back for its next receiver), so it must
    /// not be sent. It never was: entries are sent only once the receive
    /// that journaled them has returned. One store (`end`) drops it.
    pub fn drop_last(&mut self) {
        let Some(last) = self.pending.pop_back() else {
            return;
        };
        // The drop is the one store of `end`: killed before it, the next
        // run finds the entry and decides again, the same way. After it,
        // the source words name a sequence number past the last entry,
        // which is not believed (and the next append rewrites them).
        self.file.store(OFF_END, last.pos);
        self.end = last.pos;
    }

    /// Says which source mailbox the indexes of later appends count in
    /// (an identity of its file). If it is not the one the last entry's
    /// index came from, that index is forgotten: a mailbox removed and
    /// made again under the same name counts from 0 again.
    pub fn set_source(&mut self, id: u64) {
        if self.file.load(OFF_SOURCE_ID) != id {
            // Forgotten first: killed in between, nothing is believed.
            self.file.store(OFF_SOURCE_SEQ, 0);
            self.file.store(OFF_SOURCE_ID, id);
        }
    }

    /// [`Journal::append`], with where the message came from if that is
    /// known ([`Journal::append_taken`]).
    pub fn append_from(&mut self, msg: &[u8], taken: Option<Taken>) -> Option<u64> {
        assert!(msg.len() <= self.max_message, "message above the maximum");
        if !self.has_room(msg.len()) {
            return None;
        }
        let (pos, _) = self.placement(msg.len());
        if pos != self.end {
            let off = HEADER + (self.end % self.ring) as usize;
            self.file.store(off, 0);
            self.file.store(off + 8, u64::from(PAD) << 32);
        }
        let seq = self.written() + 1;
        let off = HEADER + (pos % self.ring) as usize;
        self.file.write(off + ENTRY_HEADER as usize, msg);
        self.file.store(off, seq);
        self.file.store(off + 8, msg.len() as u64);
        if let Some(taken) = taken {
            // Sequence first: killed between these stores, they name an
            // entry not yet committed, and are not believed.
            self.file.store(OFF_SOURCE_SEQ, seq);
            self.file.store(OFF_SOURCE_INDEX, taken.index);
            self.file.store(OFF_SOURCE_PUT_BACKS, taken.put_backs);
        } else if self.file.load(OFF_SOURCE_SEQ) != 0 {
            // The pair must not pass for this entry's.
            self.file.store(OFF_SOURCE_SEQ, 0);
        }
        let end = pos + entry_size(msg.len());
        // The commit: stored after the entry's bytes.
        self.file.store(OFF_END, end);
        self.end = end;
        self.pending.push_back(Pending {
            seq,
            pos,
            len: msg.len() as u32,
        });
        Some(seq)
    }

    /// The message to withdraw rather than send (0: none).
    pub fn cancel(&self) -> u64 {
        let c = self.file.load(OFF_CANCEL);
        if c > self.acked && c <= self.written() {
            c
        } else {
            0
        }
    }

    /// Marks message `seq` to be withdrawn rather than sent.
    pub fn set_cancel(&mut self, seq: u64) {
        self.file.store(OFF_CANCEL, seq);
    }

    /// The last message the far side confirmed it withdrew (0: none).
    pub fn withdrawn(&self) -> u64 {
        self.file.load(OFF_WITHDRAWN)
    }

    /// Records that the far side withdrew message `seq`; before the
    /// acknowledgement that covers it is taken.
    pub fn set_withdrawn(&mut self, seq: u64) {
        self.file.store(OFF_WITHDRAWN, seq);
    }

    /// The journaled message `seq` (acked < seq <= written).
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        let first = self.pending.front()?.seq;
        let p = self
            .pending
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        let off = HEADER + (p.pos % self.ring) as usize + ENTRY_HEADER as usize;
        Some(self.file.read(off, p.len as usize))
    }

    /// Records that the far side delivered everything up to `seq`, freeing
    /// those entries. An acknowledgement beyond what was journaled is
    /// refused (the far side is confused or hostile) and changes nothing.
    pub fn ack(&mut self, seq: u64) -> Result<(), String> {
        if seq <= self.acked {
            return Ok(());
        }
        if self.pending.is_empty() {
            // Nothing waits, so nothing can be lost by believing the far
            // side (our `acked` word was lost or scribbled): number the
            // next messages after what it has.
            self.file.store(OFF_ACKED, seq);
            self.acked = seq;
            return Ok(());
        }
        if seq > self.written() {
            return Err(format!(
                "acknowledgement of {seq}, only {} journaled",
                self.written()
            ));
        }
        self.file.store(OFF_ACKED, seq);
        self.acked = seq;
        while self.pending.front().is_some_and(|p| p.seq <= seq) {
            self.pending.pop_front();
        }
        self.start = self.pending.front().map_or(self.end, |p| p.pos);
        self.file.store(OFF_START, self.start);
        Ok(())
    }

    /// Removes the journal's file (once nothing waits in it).
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_file(self.file.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempPath(std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    fn temp(tag: &str) -> TempPath {
        let dir = std::env::temp_dir();
        TempPath(dir.join(format!("ipcb-test-{}-{tag}", std::process::id())))
    }

    #[test]
    fn entries_survive_a_reopen_until_acknowledged() {
        let p = temp("reopen");
        let mut j = Journal::open_or_create(&p.0, 100).unwrap();
        let origin = j.origin();
        for i in 0..10u8 {
            assert_eq!(j.append(&vec![i; i as usize * 7]), Some(u64::from(i) + 1));
        }
        j.ack(4).unwrap();
        assert!(j.ack(11).is_err());
        drop(j);
        let j = Journal::open_or_create(&p.0, 100).unwrap();
        assert_eq!(j.origin(), origin);
        assert_eq!((j.acked(), j.written(), j.in_flight()), (4, 10, 6));
        for seq in 5..=10u64 {
            let i = (seq - 1) as u8;
            assert_eq!(j.get(seq).unwrap(), &vec![i; i as usize * 7][..]);
        }
        assert!(j.get(4).is_none() && j.get(11).is_none());
        assert!(Journal::open_or_create(&p.0, 101).is_err());
    }

    fn taken(index: u64) -> Taken {
        Taken {
            index,
            put_backs: 3,
        }
    }

    #[test]
    fn the_last_entry_dropped_is_gone_across_a_reopen_and_the_next_takes_its_seq() {
        let p = temp("drop");
        let mut j = Journal::open_or_create(&p.0, 100).unwrap();
        j.append_taken(b"a", taken(40)).unwrap();
        j.append_taken(b"b", taken(41)).unwrap();
        assert_eq!(j.last_source(), Some(taken(41)));
        j.drop_last();
        assert_eq!((j.written(), j.in_flight()), (1, 1));
        assert_eq!(j.last_source(), None, "the pair named the entry dropped");
        drop(j);
        let mut j = Journal::open_or_create(&p.0, 100).unwrap();
        assert_eq!((j.written(), j.in_flight()), (1, 1));
        assert_eq!(j.get(1).unwrap(), b"a");
        assert_eq!(j.append(b"c"), Some(2), "the dropped seq is used again");
        drop(j);
        let j = Journal::open_or_create(&p.0, 100).unwrap();
        assert_eq!(j.get(2).unwrap(), b"c");
    }

    #[test]
    fn the_source_index_of_the_last_entry_survives_a_reopen_and_a_torn_append_is_not_believed() {
        let p = temp("source");
        let mut j = Journal::open_or_create(&p.0, 100).unwrap();
        assert_eq!(j.last_source_index(), None);
        j.append_taken(b"a", taken(40)).unwrap();
        j.append_taken(b"b", taken(41)).unwrap();
        assert_eq!(j.last_source_index(), Some(41));
        drop(j);
        let mut j = Journal::open_or_create(&p.0, 100).unwrap();
        assert_eq!(j.last_source(), Some(taken(41)));
        j.ack(2).unwrap();
        assert_eq!(
            j.last_source_index(),
            Some(41),
            "acknowledged, still the last"
        );
        // Killed after the source words of entry 3, before its commit.
        j.file.store(OFF_SOURCE_SEQ, 3);
        j.file.store(OFF_SOURCE_INDEX, 42);
        drop(j);
        let mut j = Journal::open_or_create(&p.0, 100).unwrap();
        assert_eq!(j.written(), 2);
        assert_eq!(j.last_source_index(), None, "names an entry not committed");
        // An append without an index leaves no claim about its source.
        j.append(b"c").unwrap();
        assert_eq!(j.last_source_index(), None);
        // Another source mailbox (made again under the name): forgotten.
        j.set_source(7);
        j.append_taken(b"d", taken(0)).unwrap();
        assert_eq!(j.last_source_index(), Some(0));
        j.set_source(7);
        assert_eq!(j.last_source_index(), Some(0), "the same source");
        j.set_source(8);
        assert_eq!(j.last_source_index(), None, "another source");
    }

    #[test]
    fn the_ring_wraps_with_padding_and_fills_up() {
        let p = temp("wrap");
        let mut j = Journal::open_or_create(&p.0, 200_000).unwrap();
        let ring = ring_for(200_000);
        let msg = vec![7u8; 150_000];
        let mut seq = 0;
        for round in 0..40 {
            while let Some(s) = j.append(&msg[..100_000 + round * 1000]) {
                seq = s;
            }
            assert!(j.in_flight() * 100_000 <= ring);
            // A crash here: the reopened journal has the same entries.
            let (acked, written) = (j.acked(), j.written());
            drop(j);
            j = Journal::open_or_create(&p.0, 200_000).unwrap();
            assert_eq!((j.acked(), j.written()), (acked, written));
            j.ack(seq - 1).unwrap();
        }
        assert_eq!(j.get(seq).unwrap().len(), 100_000 + 39 * 1000);
    }

    #[test]
    fn a_scribbled_journal_is_refused_not_trusted() {
        let p = temp("scribble");
        let mut j = Journal::open_or_create(&p.0, 64).unwrap();
        for _ in 0..5 {
            j.append(b"hello").unwrap();
        }
        drop(j);
        for (offset, value) in [
            (OFF_END, 3u64),
            (OFF_END, 1 << 40),
            (OFF_START, 24),
            (OFF_ACKED, 99),
            (HEADER, 77),
            (HEADER + 8, 1 << 20),
            (OFF_MAGIC, 1),
        ] {
            let f = StateFile::open(&p.0, HEADER).unwrap();
            let old = f.load(offset);
            f.store(offset, value);
            drop(f);
            assert!(
                matches!(
                    Journal::open_or_create(&p.0, 64),
                    Err(JournalError::Corrupt(_))
                ),
                "word {offset} = {value}"
            );
            StateFile::open(&p.0, HEADER).unwrap().store(offset, old);
        }
        assert_eq!(Journal::open_or_create(&p.0, 64).unwrap().written(), 5);
    }
}
