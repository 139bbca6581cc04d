//! Shared by the `packed_ops` fuzz target and `tests/tests/props_packed.rs`:
//! packed-ring operations over a heap region, in single mode (one writer,
//! one reader, and their deaths) or shared (four writers and four readers
//! taking turns under the lock words, their deaths, rendezvous
//! withdrawals) or shared and write-once (a block of an unbounded chain:
//! laps sealed, closed by a receiver, read in place after the head is
//! freed, the next lap's first header cleared), with the input choosing
//! the mode, the geometry, the first
//! ring words and cursors, the operations, and garbage written over record
//! headers, payload bytes, the cursor words and the lock words between
//! them. Every
//! call must return (a value or `CorruptError`): no panic, no endless
//! loop, no slice outside the ring, no payload longer than the maximum.

use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::layout::Cursor;
use ipc_core::packed::{max_message_for, MIN_RING};
use ipc_core::ring::{HeadCache, PackedRing, ReadAttempt, ReadClaim, Ring, Side, WriteClaim};

const COMMIT: u64 = 1 << 63;
const PAD: u64 = 1 << 62;
const MARK: u64 = 1 << 63; // WRITING in tail.pos, READING in head.pos
const WITHDRAWN: u64 = 1 << 31;
const SEQ_MASK: u64 = (1 << 30) - 1;
/// Counts a scribbler can set that make `+ 1` overflow (see
/// `avoid_known_bugs`).
const COUNT_EDGE: u64 = 1 << 62;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        (0..4).fold(0, |acc, i| acc | (self.byte() as u32) << (8 * i))
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, i| acc | (self.byte() as u64) << (8 * i))
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// The ring's memory and cursors, on the heap (also the model test's).
pub struct Region {
    /// The write cursor.
    pub tail: Cursor,
    /// The read cursor.
    pub head: Cursor,
    /// The lazily published read cursor.
    pub freed: Cursor,
    /// Owns the words; only `base` touches them after construction.
    _words: Box<[u64]>,
    base: *mut u64,
    size: u64,
}

impl Region {
    /// `size` zeroed bytes (a power of two >= 256).
    pub fn new(size: u64) -> Region {
        let mut words: Box<[u64]> = vec![0u64; (size / 8) as usize].into_boxed_slice();
        let base = words.as_mut_ptr();
        Region {
            tail: Cursor::default(),
            head: Cursor::default(),
            freed: Cursor::default(),
            _words: words,
            base,
            size,
        }
    }

    /// A packed view of the region.
    pub fn ring(&self, limit: u32, max_message: usize) -> PackedRing<'_> {
        assert!(max_message as u64 <= max_message_for(self.size));
        // SAFETY: `base` points to `size` bytes (a power of two >= MIN_RING),
        // 8-aligned, alive as long as `self`; the header words are read as
        // atomics of u64's size and alignment (`words` is `data`); one
        // writer and one reader (this thread) use it.
        unsafe {
            PackedRing::new(
                (&self.tail, &self.head, &self.freed),
                self.base.cast(),
                self.base as *const AtomicU64,
                self.size,
                limit,
                max_message,
            )
        }
    }

    /// True if `s` lies inside the ring's bytes.
    fn holds(&self, s: &[u8]) -> bool {
        let start = self.base as usize;
        let p = s.as_ptr() as usize;
        p >= start && p + s.len() <= start + self.size as usize
    }

    fn cursor_word(&self, i: u8) -> &AtomicU64 {
        let c = [&self.tail, &self.head, &self.freed][(i % 3) as usize];
        match i % 9 {
            0..=2 => &c.pos,
            3..=5 => &c.count,
            _ => &c.lock,
        }
    }
}

/// Runs the operations `data` describes. With `avoid_known_bugs`, garbage
/// never takes a shape that a known library bug turns into a panic (counts
/// at or above 2^62, where the `+ 1`s of commit, release and repair
/// overflow), so the rest stays covered by an ordinary test.
pub fn run(data: &[u8], avoid_known_bugs: bool) {
    let mut inp = Input(data);
    let mode = inp.byte();
    let shared = mode % 2 == 1;
    // A block of an unbounded chain: shared, read as a write-once lap.
    let write_once = shared && mode / 2 % 2 == 1;
    let size = MIN_RING << (inp.byte() % 4);
    let most = max_message_for(size) as usize;
    let max_message = match inp.byte() % 4 {
        0 => most,
        1 => 1,
        _ => inp.byte() as usize % (most + 1),
    };
    let limit = match inp.byte() % 4 {
        0 => 1,
        1 => u32::MAX,
        _ => 1 + inp.byte() as u32 % 64,
    };
    let region = Region::new(size);
    // Starting state: a few cursors and ring words, as a scribbler left them.
    for _ in 0..inp.byte() % 4 {
        poke(&mut inp, &region, max_message, avoid_known_bugs);
    }
    let packed = region.ring(limit, max_message);
    let packed = if shared {
        packed.shared(None, None)
    } else {
        packed
    };
    let packed = if write_once {
        packed.with_end(size * (1 + u64::from(inp.byte() % 3)))
    } else {
        packed
    };
    // Messages read in place after the head was freed past them.
    let mut detached: Vec<ReadClaim> = Vec::new();
    let ring = Ring::Packed(packed);
    let mut cache = HeadCache::default();
    // Claims with their owners: writers 0..4, readers 4..8 (single mode:
    // writer 0, reader 4).
    let mut writes: Vec<(u32, WriteClaim)> = Vec::new();
    let mut reads: Vec<(u32, ReadClaim)> = Vec::new();
    let owner = |inp: &mut Input<'_>, base: u32| {
        if shared {
            base + u32::from(inp.byte() % 4)
        } else {
            base
        }
    };
    let mut steps = 0;
    while !inp.done() && steps < 512 {
        steps += 1;
        match inp.byte() % 16 {
            0..=2 => {
                let want = match inp.byte() % 4 {
                    0 => max_message,
                    1 => max_message + 1 + inp.byte() as usize,
                    _ => inp.byte() as usize % (max_message + 1),
                };
                let exact = inp.byte() % 4 != 0;
                let me = owner(&mut inp, 0);
                if let Ok(Some(mut c)) = ring.try_claim_write_with(me, want, &mut cache, exact) {
                    assert!(want <= max_message, "a claim above the maximum");
                    let buf = ring.payload_mut(&mut c);
                    assert_eq!(buf.len(), want);
                    assert!(region.holds(buf), "write claim outside the ring");
                    buf.fill(0xAB);
                    if writes.len() < 3 {
                        writes.push((me, c));
                    } else {
                        let _ = ring.abandon(c);
                    }
                }
            }
            3 | 4 if !writes.is_empty() => {
                let (_, c) = writes.remove(inp.byte() as usize % writes.len());
                let len = match inp.byte() % 4 {
                    0 => usize::MAX,
                    _ => inp.byte() as usize % (max_message + 2),
                };
                let _ = ring.commit(c, len, 0);
            }
            5 if !writes.is_empty() => {
                let (_, c) = writes.remove(inp.byte() as usize % writes.len());
                let _ = ring.abandon(c);
            }
            6..=8 => {
                let max_len = match inp.byte() % 3 {
                    0 => usize::MAX,
                    1 => max_message,
                    _ => inp.byte() as usize,
                };
                let me = owner(&mut inp, 4);
                match ring.try_claim_read(me, max_len) {
                    Ok(ReadAttempt::Claimed(c)) => {
                        let p = ring.payload_of(&c);
                        assert!(p.len() <= max_message, "payload longer than the maximum");
                        assert!(p.len() <= max_len, "payload longer than asked");
                        assert!(region.holds(p), "read claim outside the ring");
                        std::hint::black_box(p.iter().map(|&b| b as u64).sum::<u64>());
                        if reads.len() < 3 {
                            reads.push((me, c));
                        } else {
                            let _ = ring.release(c);
                        }
                    }
                    Ok(ReadAttempt::TooLong(n)) => {
                        assert!(n > max_len && n <= max_message, "TooLong({n})")
                    }
                    Ok(ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy) | Err(_) => {}
                }
            }
            9 if !reads.is_empty() => {
                let (_, c) = reads.remove(inp.byte() as usize % reads.len());
                let _ = ring.release(c);
            }
            10 | 11 if shared => {
                // A writer or reader dies: its claims are dropped, and the
                // reaper repairs what it held.
                let dead = u32::from(inp.byte() % 8);
                writes.retain(|(o, _)| *o != dead);
                reads.retain(|(o, _)| *o != dead);
                cache = HeadCache::default();
                // SAFETY: the dead owner's claims were dropped just above.
                let r = unsafe { ring.recover_owner(dead) };
                assert!(r.abandoned_writes <= 1 && r.lost_reads <= 1, "{r:?}");
                if inp.byte() % 4 == 0 {
                    // A lock word naming nobody attached: freed.
                    for side in [Side::Write, Side::Read] {
                        if let Some((holder, word)) = ring.lock_holder(side) {
                            writes.retain(|(o, _)| *o != holder);
                            reads.retain(|(o, _)| *o != holder);
                            // SAFETY: that holder's claims were dropped.
                            unsafe { ring.release_stale_lock(side, word, drop) };
                        }
                    }
                }
            }
            10 => {
                // The writer dies: its claims are dropped, a new one starts.
                writes.clear();
                cache = HeadCache::default();
                // SAFETY: the dead writer's claims were dropped just above.
                let r = unsafe { ring.recover_single_writer() };
                assert!(r.abandoned_writes <= 1 && r.lost_reads == 0, "{r:?}");
            }
            11 => {
                reads.clear();
                // SAFETY: the dead reader's claims were dropped just above.
                let r = unsafe { ring.recover_single_reader() };
                assert!(r.lost_reads <= 1 && r.abandoned_writes == 0, "{r:?}");
            }
            12 | 13 => poke(&mut inp, &region, max_message, avoid_known_bugs),
            14 if write_once => {
                // A receiver seals the lap, or a recycler clears the next
                // lap's first header.
                if inp.byte() % 2 == 0 {
                    let me = owner(&mut inp, 4);
                    if let Ok(false) = packed.close(me) {
                        assert!(packed.sealed());
                    }
                } else {
                    let seen = packed.next_lap_header();
                    packed.clear_next_lap(seen);
                }
            }
            15 if write_once => {
                if inp.byte() % 2 == 0 && !reads.is_empty() {
                    let (_, c) = reads.remove(inp.byte() as usize % reads.len());
                    if packed.release_detached(&c).is_ok() && detached.len() < 3 {
                        detached.push(c);
                    }
                } else if !detached.is_empty() {
                    let c = detached.remove(inp.byte() as usize % detached.len());
                    let p = ring.payload_of(&c);
                    assert!(region.holds(p), "detached read outside the ring");
                    std::hint::black_box(p.iter().map(|&b| b as u64).sum::<u64>());
                }
            }
            _ => {
                let want = inp.u32() as usize;
                std::hint::black_box(packed.is_full_for(want));
                assert!(ring.len() <= packed.limit());
                let census = ring.census();
                assert!(census.writing <= 1 && census.reading <= 1, "{census:?}");
                let (used, total) = ring.bytes();
                assert!(used <= total && total == size);
                let pos = inp.u64();
                std::hint::black_box((
                    ring.is_empty(),
                    ring.tail_pos(),
                    ring.head_pos(),
                    ring.writing_at_head(),
                    ring.is_full_by_bytes(),
                    ring.was_taken(pos),
                    ring.try_retract(pos, 0).ok(),
                ));
            }
        }
    }
}

/// A value for a cursor word: near the current one (with or without the
/// claim mark), small, or anything.
fn cursor_value(inp: &mut Input<'_>, now: u64, count: bool, avoid: bool) -> u64 {
    let v = match inp.byte() % 6 {
        0 => now.wrapping_add(8 * (inp.byte() as u64 % 8)),
        1 => now.wrapping_sub(8 * (inp.byte() as u64 % 8)),
        2 => now ^ MARK,
        3 => inp.byte() as u64 * 8,
        4 => [u64::MAX, 1 << 62, (1 << 62) - 8, 1 << 63, u64::MAX - 1][inp.byte() as usize % 5],
        _ => inp.u64(),
    };
    if avoid && count {
        v & !COUNT_EDGE
    } else {
        v
    }
}

/// Writes garbage into a record header (shaped like a real one), a
/// payload byte, or a cursor word.
fn poke(inp: &mut Input<'_>, region: &Region, max_message: usize, avoid: bool) {
    let words = region.size / 8;
    let kind = inp.byte();
    match kind % 4 {
        0 | 1 => {
            // Where: at the reader's or the writer's position, or anywhere.
            let at = match inp.byte() % 3 {
                0 => region.head.pos.load(Ordering::Relaxed) / 8,
                1 => region.tail.pos.load(Ordering::Relaxed) / 8,
                _ => inp.u64(),
            } % words;
            let off = at * 8;
            let count = [&region.head, &region.tail][(kind >> 2) as usize % 2]
                .count
                .load(Ordering::Relaxed);
            let seq = count.wrapping_add(inp.byte() as u64 % 3).wrapping_sub(1) & SEQ_MASK;
            let len = match inp.byte() % 6 {
                0 => inp.byte() as u64 % (max_message as u64 + 1),
                1 => max_message as u64,
                2 => max_message as u64 + 1 + inp.byte() as u64 % 16,
                3 => region.size - off,
                4 => (region.size - off).wrapping_sub(8 * (inp.byte() as u64 % 3)),
                _ => inp.u32() as u64,
            };
            let flags = [COMMIT, COMMIT | PAD, PAD, 0][inp.byte() as usize % 4]
                | if inp.byte().is_multiple_of(8) {
                    WITHDRAWN
                } else {
                    0
                };
            let value = if kind & 0x80 != 0 {
                inp.u64()
            } else {
                flags | seq << 32 | len
            };
            // SAFETY: `at` < words, inside the region; single-threaded, so
            // no atomic access races with this plain write.
            unsafe { region.base.add(at as usize).write(value) };
        }
        2 => {
            let at = inp.u64() % region.size;
            // SAFETY: inside the region; single-threaded.
            unsafe { region.base.cast::<u8>().add(at as usize).write(inp.byte()) };
        }
        _ => {
            let which = inp.byte();
            let word = region.cursor_word(which);
            let v = if which % 9 >= 6 {
                // A lock word: a holder (some out of range), maybe WAITED,
                // a turn; or anything.
                match inp.byte() % 3 {
                    0 => {
                        u64::from(inp.byte() % 10)
                            | u64::from(inp.byte() % 2) << 16
                            | inp.u64() << 32
                    }
                    1 => 0,
                    _ => inp.u64(),
                }
            } else {
                cursor_value(inp, word.load(Ordering::Relaxed), which % 9 >= 3, avoid)
            };
            word.store(v, Ordering::Relaxed);
        }
    }
}
