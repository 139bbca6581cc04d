//! Self-checking synthetic messages, for load generation and verification.
//!
//! Layout (little endian): producer id `u32`, reserved `u32`, sequence
//! number `u64`, FNV-1a checksum `u64` of everything else, then a payload
//! derived from (id, sequence). A torn, corrupt, duplicated or reordered
//! message is detected by [`Verifier`].
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

use std::collections::HashMap;

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

#[derive(Debug, Default)]
struct Stream {
    last: Option<u64>,
    seen: Vec<u64>,
}

impl Stream {
    /// Marks `seq` seen; false if it was already.
    fn mark(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let fresh = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        fresh
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
    /// Messages older than one already received from the same producer.
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
        if seq > 1 << 40 {
            // A sequence number this large would make the bitmap huge.
            self.corrupt += 1;
            return;
        }
        let s = self.streams.entry(id).or_default();
        if !s.mark(seq) {
            self.duplicates += 1;
        } else if s.last.is_some_and(|last| seq < last) {
            self.out_of_order += 1;
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
            .map(|(id, s)| (*id, s.seen.iter().map(|w| w.count_ones() as u64).sum()))
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
}
