//! Self-checking synthetic messages, for load generation and verification.
//!
//! Layout (little endian): producer id `u32`, reserved `u32` (zero),
//! sequence number `u64`, checksum `u64`, then a payload derived from (id,
//! sequence). A torn, corrupt, duplicated or reordered message is detected
//! by [`Verifier`].
//!
//! Both sides work a 64-bit word at a time, so that generating and
//! checking cost less than moving the message through a buffer. The
//! payload is a SplitMix64 stream seeded by (id, sequence), one output
//! word per 8 bytes (the last, partial word truncated). The checksum
//! covers every byte but its own field, and the length: it folds the
//! length, then the header's two words (id with the reserved field, and
//! the sequence number), then the payload's 8-byte words, a partial last
//! word zero-padded, each with `h = m(h ^ w)`, where `m` multiplies by an
//! odd constant and xors in the high half, and finishes with SplitMix64's
//! output function. Every step and the finish are bijections, so:
//!
//! * damage confined to one 8-byte word of the message (any single bit
//!   flip in particular, and any damage to the checksum field alone) is
//!   always detected;
//! * anything else (a torn message that mixes two, a wrong length) goes
//!   unnoticed only if the 64-bit checksums happen to collide.
//!
//! The checksum guards against accidents, not attackers: anyone can
//! compute it, hence the bounds below. Words are read with
//! [`u64::from_le_bytes`], so a message need not be aligned.
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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// Bytes of the self-checking header; messages are at least this long.
pub const HEADER_LEN: usize = 24;

/// The golden-ratio increment of SplitMix64 (odd).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The odd multiplier of one checksum step.
const MIX: u64 = 0xd6e8_feb8_6659_fd93;

/// SplitMix64's output function: a bijection on `u64`.
#[inline(always)]
fn splitmix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One checksum step: folds the word `w` into `h`. For a fixed `h` it is
/// a bijection of `w`, and for a fixed `w` a bijection of `h` (xor, an odd
/// multiplier and an xorshift are each invertible).
#[inline(always)]
fn step(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(MIX);
    x ^ (x >> 32)
}

/// The 8 little-endian bytes of `chunk` (exactly 8 long) as a word.
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"))
}

/// The checksum of `msg` (at least [`HEADER_LEN`] bytes): every byte but
/// the checksum field itself (bytes 16..24), and the length, a 64-bit
/// word per step. The 8-byte words are the header's two (id with the
/// reserved field, and the sequence number), then the payload's in order;
/// a payload that is not a whole number of words ends with its last 1 to 7
/// bytes, zero-padded, as one more word. The length seeds the state, and
/// a bijective finaliser (SplitMix64's) spreads the last step's bits.
fn checksum(msg: &[u8]) -> u64 {
    debug_assert!(msg.len() >= HEADER_LEN);
    let mut h = step(GOLDEN, msg.len() as u64);
    h = step(h, word(&msg[0..8]));
    h = step(h, word(&msg[8..16]));
    let mut chunks = msg[HEADER_LEN..].chunks_exact(8);
    for c in &mut chunks {
        h = step(h, word(c));
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        h = step(h, u64::from_le_bytes(last));
    }
    splitmix(h)
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
    // Whole words, computed once: written and folded into the checksum
    // as they are made (the same words, in the same order, as
    // `checksum` reads back; a test holds the two to each other).
    let head = id as u64; // the reserved field, bytes 4..8, is zero
    buf[0..8].copy_from_slice(&head.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut h = step(GOLDEN, buf.len() as u64);
    h = step(h, head);
    h = step(h, seq);
    // A SplitMix64 stream seeded by (id, seq): word i is
    // splitmix(seed + (i + 1) * GOLDEN), each independent of the others.
    let mut state = (id as u64).wrapping_mul(GOLDEN) ^ seq;
    let mut chunks = buf[HEADER_LEN..].chunks_exact_mut(8);
    for c in &mut chunks {
        state = state.wrapping_add(GOLDEN);
        let w = splitmix(state);
        c.copy_from_slice(&w.to_le_bytes());
        h = step(h, w);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        state = state.wrapping_add(GOLDEN);
        let n = tail.len();
        // The tail's bytes, zero-padded: what `checksum` folds in.
        let w = splitmix(state) & (u64::MAX >> (64 - 8 * n));
        tail.copy_from_slice(&w.to_le_bytes()[..n]);
        h = step(h, w);
    }
    buf[16..24].copy_from_slice(&splitmix(h).to_le_bytes());
}

/// Decodes (id, seq) if the checksum holds.
pub fn decode(msg: &[u8]) -> Option<(u32, u64)> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    let sum = u64::from_le_bytes(msg[16..24].try_into().ok()?);
    if checksum(msg) != sum {
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
    /// Each producer's stream, in the order first seen.
    streams: Vec<(u32, Stream)>,
    /// Where each producer's stream is in `streams`.
    index: HashMap<u32, usize>,
    /// The stream of the last message checked: a run of messages from
    /// one producer (the usual case) skips the hash lookup.
    hot: Option<usize>,
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
        // At most one hash lookup per message, none while the producer is
        // the last message's; a new producer beyond the cap is refused
        // before anything is stored.
        let at = match self.hot {
            Some(at) if self.streams[at].0 == id => at,
            _ => {
                let known = self.streams.len();
                match self.index.entry(id) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(_) if known >= MAX_PRODUCERS => {
                        self.corrupt += 1;
                        return;
                    }
                    Entry::Vacant(e) => {
                        self.streams.push((id, Stream::default()));
                        *e.insert(known)
                    }
                }
            }
        };
        self.hot = Some(at);
        let s = &mut self.streams[at].1;
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
            .iter()
            .map(|(_, s)| s.window.len())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn interleaved_producers_are_tracked_apart() {
        let mut v = Verifier::default();
        for seq in 0..100 {
            v.check(&msg(1, seq));
            v.check(&msg(2, seq));
            if seq % 10 == 0 {
                v.check(&msg(1, seq));
            }
        }
        v.check(&msg(2, 50));
        v.check(&msg(3, 0));
        v.check(&msg(2, 100));
        v.check(&msg(1, 99));
        assert_eq!(v.counts(), vec![(1, 100), (2, 101), (3, 1)]);
        assert_eq!((v.duplicates, v.out_of_order, v.corrupt), (12, 0, 0));
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

    /// Every single bit flip, in the header (checksum field included) or
    /// the payload, at several sizes and unaligned, is corrupt.
    #[test]
    fn every_single_bit_flip_is_corrupt() {
        // Under Miri the sizes that cover a header, a partial word and
        // whole words are enough; natively, larger messages too.
        let sizes: &[usize] = if cfg!(miri) {
            &[24, 25, 31]
        } else {
            &[24, 25, 31, 64, 1000]
        };
        let mut v = Verifier::default();
        let mut flips = 0;
        for &size in sizes {
            for (offset, id, seq) in [(0, 1, 0), (1, 7, 12345), (5, u32::MAX, MAX_SEQ)] {
                let mut store = vec![0u8; offset + size];
                let buf = &mut store[offset..];
                encode(buf, id, seq);
                assert_eq!(decode(buf), Some((id, seq)), "size {size}");
                for bit in 0..size * 8 {
                    buf[bit / 8] ^= 1 << (bit % 8);
                    assert_eq!(decode(buf), None, "size {size} bit {bit}");
                    v.check(buf);
                    flips += 1;
                    buf[bit / 8] ^= 1 << (bit % 8);
                }
                assert_eq!(decode(buf), Some((id, seq)));
            }
        }
        assert_eq!((v.received, v.corrupt, v.producers()), (flips, flips, 0));
    }

    /// `encode` folds the words it makes into the checksum itself; it
    /// must agree with `checksum`, which reads them back, at every length
    /// and alignment. A message cut short or extended is corrupt.
    #[test]
    fn encode_agrees_with_checksum_at_every_length() {
        for size in HEADER_LEN..=HEADER_LEN + 3 * 8 + 1 {
            for offset in 0..8 {
                let mut store = vec![0xa5u8; offset + size + 1];
                let buf = &mut store[offset..offset + size];
                encode(buf, 9, size as u64);
                assert_eq!(buf[4..8], [0; 4], "reserved");
                let sum = u64::from_le_bytes(buf[16..24].try_into().unwrap());
                assert_eq!(checksum(buf), sum, "size {size} offset {offset}");
                assert_eq!(decode(buf), Some((9, size as u64)));
                if size > HEADER_LEN {
                    assert_eq!(decode(&buf[..size - 1]), None, "cut, size {size}");
                }
                store[offset + size] = 0;
                let longer = &store[offset..offset + size + 1];
                assert_eq!(decode(longer), None, "extended, size {size}");
            }
        }
        // The payload follows (id, seq).
        let (mut a, mut b) = (vec![0; 64], vec![0; 64]);
        encode(&mut a, 1, 2);
        encode(&mut b, 1, 3);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        encode(&mut b, 2, 2);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }
}
