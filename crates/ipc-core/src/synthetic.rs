//! Self-checking synthetic messages, for load generation and verification.
//!
//! Layout (little endian): producer id `u32`, reserved `u32`, sequence
//! number `u64`, FNV-1a checksum `u64` of everything else, then a payload
//! derived from (id, sequence). A torn, corrupt, duplicated or reordered
//! message is detected by [`Verifier`].
//!
//! # Bounded memory
//!
//! The verifier's memory does not depend on what the messages claim, so a
//! forged message with a valid checksum cannot make it allocate without
//! bound. Per producer it keeps a bitmap of at most [`WINDOW`] sequence
//! numbers, starting at the lowest one not yet received (bitmap words
//! that fill up are dropped from the front, so an in-order stream uses
//! one word). A message more than [`WINDOW`] ahead slides the window
//! forward; the holes it leaves behind are forgotten, and a message that
//! later lands in such a hole is counted as out of order (it may in fact
//! be a duplicate: the verifier can no longer tell). Below the holes,
//! duplicates are still recognised exactly. At most [`MAX_PRODUCERS`]
//! producer ids are tracked, and sequence numbers above [`MAX_SEQ`] are
//! refused: messages from further ids, or with larger sequence numbers,
//! count as corrupt. Worst case: `MAX_PRODUCERS * WINDOW / 8` bytes of
//! bitmaps (32 MiB).
//!
//! ```
//! use ipc_core::synthetic::{encode, Verifier, HEADER_LEN};
//! let mut buf = vec![0; 64];
//! let mut v = Verifier::default();
//! for seq in 0..3 {
//!     encode(&mut buf, 7, seq);
//!     v.check(&buf);
//! }
//! v.check(&buf); // the same message again
//! assert_eq!((v.received, v.duplicates, v.corrupt), (4, 1, 0));
//! assert!(!v.is_clean());
//! ```

use std::collections::{HashMap, VecDeque};

/// Bytes of the self-checking header; messages are at least this long.
pub const HEADER_LEN: usize = 24;

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Fills `buf` (at least [`HEADER_LEN`] bytes) with message `seq` of
/// producer `id`.
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`].
pub fn encode(buf: &mut [u8], id: u32, seq: u64) {
    assert!(
        buf.len() >= HEADER_LEN,
        "synthetic messages need {HEADER_LEN} bytes"
    );
    buf[0..4].copy_from_slice(&id.to_le_bytes());
    buf[4..8].copy_from_slice(&0u32.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut x = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    for b in &mut buf[HEADER_LEN..] {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *b = (x >> 56) as u8;
    }
    let sum = fnv1a(&[&buf[0..16], &buf[HEADER_LEN..]]);
    buf[16..24].copy_from_slice(&sum.to_le_bytes());
}

/// Decodes (id, seq) if the checksum holds.
pub fn decode(msg: &[u8]) -> Option<(u32, u64)> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    let sum = u64::from_le_bytes(msg[16..24].try_into().ok()?);
    if fnv1a(&[&msg[0..16], &msg[HEADER_LEN..]]) != sum {
        return None;
    }
    let id = u32::from_le_bytes(msg[0..4].try_into().ok()?);
    let seq = u64::from_le_bytes(msg[8..16].try_into().ok()?);
    Some((id, seq))
}

/// Sequence numbers a producer's bitmap covers at most (8 KiB of bits).
pub const WINDOW: u64 = 1 << 16;

/// Distinct producer ids a [`Verifier`] tracks at most.
pub const MAX_PRODUCERS: usize = 4096;

/// The largest sequence number a [`Verifier`] accepts; larger ones count
/// as corrupt.
pub const MAX_SEQ: u64 = 1 << 40;

/// Bits per bitmap word.
const WORD: u64 = 64;

/// What one producer has sent: every sequence number below `complete`
/// was received; those in `complete..base` were skipped by a slide of the
/// window and are unknown; `window` holds one bit per sequence number
/// from `base` (a multiple of [`WORD`]) on, at most [`WINDOW`] bits.
#[derive(Debug, Default)]
struct Stream {
    last: Option<u64>,
    complete: u64,
    base: u64,
    window: VecDeque<u64>,
    distinct: u64,
}

/// How a sequence number compares with what a [`Stream`] saw before.
#[derive(Debug, PartialEq, Eq)]
enum Mark {
    /// Not seen before.
    Fresh,
    /// Seen before.
    Duplicate,
    /// Fell into a hole the window slid past: unknown.
    Forgotten,
}

impl Stream {
    /// Records `seq` (at most [`MAX_SEQ`]).
    fn mark(&mut self, seq: u64) -> Mark {
        debug_assert!(seq <= MAX_SEQ);
        if seq < self.complete {
            return Mark::Duplicate;
        }
        if seq < self.base {
            self.distinct += 1;
            return Mark::Forgotten;
        }
        if seq - self.base >= WINDOW {
            self.slide(seq);
        }
        let offset = seq - self.base;
        let (word, bit) = ((offset / WORD) as usize, offset % WORD);
        if word >= self.window.len() {
            self.window.resize(word + 1, 0);
        }
        debug_assert!(self.window.len() as u64 * WORD <= WINDOW);
        if self.window[word] & (1 << bit) != 0 {
            return Mark::Duplicate;
        }
        self.window[word] |= 1 << bit;
        self.distinct += 1;
        // Drop full words from the front: an in-order stream keeps one.
        while self.window.front() == Some(&u64::MAX) {
            self.pop_front();
        }
        Mark::Fresh
    }

    /// Moves the window forward so that `seq` falls in its last word.
    fn slide(&mut self, seq: u64) {
        let new_base = (seq / WORD * WORD + WORD).saturating_sub(WINDOW);
        while self.base < new_base && !self.window.is_empty() {
            self.pop_front();
        }
        if self.window.is_empty() {
            // Nothing received at or above `base`: skip straight to `seq`.
            self.base = self.base.max(seq / WORD * WORD);
        }
    }

    /// Drops the window's first word; `complete` follows if it was full
    /// and nothing below it is missing.
    fn pop_front(&mut self) {
        if self.window.pop_front() == Some(u64::MAX) && self.complete == self.base {
            self.complete += WORD;
        }
        self.base += WORD;
    }
}

/// Checks a stream of synthetic messages: checksums, per-producer order,
/// duplicates.
#[derive(Debug, Default)]
pub struct Verifier {
    streams: HashMap<u32, Stream>,
    /// Messages checked.
    pub received: u64,
    /// Messages whose checksum failed (torn or corrupt).
    pub corrupt: u64,
    /// Messages older than one already received from the same producer
    /// (see the module docs for those that land in a forgotten hole).
    pub out_of_order: u64,
    /// Messages received twice.
    pub duplicates: u64,
}

impl Verifier {
    /// Checks one message.
    pub fn check(&mut self, msg: &[u8]) {
        self.received += 1;
        let Some((id, seq)) = decode(msg) else {
            self.corrupt += 1;
            return;
        };
        if seq > MAX_SEQ {
            self.corrupt += 1;
            return;
        }
        if !self.streams.contains_key(&id) && self.streams.len() >= MAX_PRODUCERS {
            self.corrupt += 1;
            return;
        }
        let s = self.streams.entry(id).or_default();
        match s.mark(seq) {
            Mark::Duplicate => self.duplicates += 1,
            Mark::Forgotten => self.out_of_order += 1,
            Mark::Fresh => {
                if s.last.is_some_and(|last| seq < last) {
                    self.out_of_order += 1;
                }
            }
        }
        s.last = Some(s.last.map_or(seq, |l| l.max(seq)));
    }

    /// Number of distinct producers seen.
    pub fn producers(&self) -> usize {
        self.streams.len()
    }

    /// (id, sequence numbers received) per producer, sorted by id.
    pub fn counts(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<_> = self
            .streams
            .iter()
            .map(|(id, s)| (*id, s.distinct))
            .collect();
        v.sort_unstable();
        v
    }

    /// True if nothing was corrupt, reordered or duplicated.
    pub fn is_clean(&self) -> bool {
        self.corrupt == 0 && self.out_of_order == 0 && self.duplicates == 0
    }

    /// One summary line: `received=N corrupt=N out_of_order=N duplicate=N producers=N`.
    pub fn summary(&self) -> String {
        format!(
            "received={} corrupt={} out_of_order={} duplicate={} producers={}",
            self.received,
            self.corrupt,
            self.out_of_order,
            self.duplicates,
            self.producers()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_corruption_and_reordering() {
        let mut v = Verifier::default();
        let mut a = vec![0; 40];
        encode(&mut a, 1, 5);
        v.check(&a);
        encode(&mut a, 1, 3);
        v.check(&a);
        a[30] ^= 1;
        v.check(&a);
        assert_eq!((v.out_of_order, v.corrupt, v.duplicates), (1, 1, 0));
        assert_eq!(v.counts(), vec![(1, 2)]);
    }

    fn msg(id: u32, seq: u64) -> Vec<u8> {
        let mut m = vec![0; HEADER_LEN + 8];
        encode(&mut m, id, seq);
        m
    }

    /// Largest bitmap any producer holds, in words.
    fn widest(v: &Verifier) -> usize {
        v.streams
            .values()
            .map(|s| s.window.len())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn forged_huge_sequence_numbers_do_not_grow_memory() {
        let mut v = Verifier::default();
        for seq in 0..10 {
            v.check(&msg(1, seq));
        }
        // Valid checksums, absurd sequence numbers.
        v.check(&msg(1, MAX_SEQ));
        v.check(&msg(1, MAX_SEQ + 1));
        v.check(&msg(1, u64::MAX));
        v.check(&msg(2, MAX_SEQ - 1));
        assert!(widest(&v) as u64 * WORD <= WINDOW, "{} words", widest(&v));
        assert!(widest(&v) <= 1, "a jump needs one word, not a window");
        assert_eq!((v.received, v.corrupt), (14, 2));
        // The genuine stream resumes: late, so out of order, never a panic.
        v.check(&msg(1, 10));
        assert_eq!((v.out_of_order, v.duplicates), (1, 0));
        assert!(!v.is_clean());
        assert_eq!(v.counts(), vec![(1, 12), (2, 1)]);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "safe code only; 4106 producers (fixed by MAX_PRODUCERS) take minutes under Miri"
    )]
    fn forged_producer_ids_are_capped() {
        let mut v = Verifier::default();
        for id in 0..MAX_PRODUCERS as u32 + 10 {
            v.check(&msg(id, WINDOW - 1));
        }
        assert_eq!(v.producers(), MAX_PRODUCERS);
        assert_eq!(v.corrupt, 10);
        assert!(widest(&v) as u64 * WORD <= WINDOW);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "safe code only; needs more than WINDOW (65536) messages: minutes under Miri"
    )]
    fn long_in_order_stream_keeps_one_word() {
        let mut v = Verifier::default();
        for seq in 0..100_000 {
            v.check(&msg(3, seq));
        }
        assert!(v.is_clean());
        assert!(widest(&v) <= 1);
        assert_eq!(v.counts(), vec![(3, 100_000)]);
        // Duplicates far behind the window are still recognised.
        v.check(&msg(3, 5));
        v.check(&msg(3, 99_999));
        assert_eq!((v.duplicates, v.out_of_order), (2, 0));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "safe code only; 6000 messages take over 2 minutes under Miri"
    )]
    fn reordering_and_holes_within_the_window() {
        let mut v = Verifier::default();
        for seq in (0..1000).rev() {
            v.check(&msg(4, seq));
        }
        assert_eq!((v.out_of_order, v.duplicates, v.corrupt), (999, 0, 0));
        assert_eq!(v.counts(), vec![(4, 1000)]);
        // A lost message: the rest still counts once each, no false alarm.
        let mut w = Verifier::default();
        for seq in (0..5000).filter(|&s| s != 77) {
            w.check(&msg(5, seq));
        }
        assert!(w.is_clean());
        w.check(&msg(5, 4999));
        assert_eq!(w.duplicates, 1);
        assert!(widest(&w) as u64 * WORD <= WINDOW);
    }

    #[test]
    fn a_jump_past_the_window_forgets_the_holes() {
        let mut v = Verifier::default();
        for seq in (0..70).filter(|&s| s != 66) {
            v.check(&msg(6, seq));
        }
        v.check(&msg(6, 3 * WINDOW));
        assert!(widest(&v) as u64 * WORD <= WINDOW);
        v.check(&msg(6, 5)); // below the hole: a known duplicate
        v.check(&msg(6, 66)); // the hole itself: late
        v.check(&msg(6, 3 * WINDOW)); // in the window: a duplicate
        assert_eq!((v.duplicates, v.out_of_order, v.corrupt), (2, 1, 0));
        // Past the hole the verifier no longer knows: a repeat counts as late.
        v.check(&msg(6, 67));
        assert_eq!((v.duplicates, v.out_of_order), (2, 2));
    }
}
