//! Shared by the `ring_ops` fuzz target and `tests/tests/props.rs`: ring
//! operations from several owners over a heap region, with the input
//! choosing the geometry, the operations, and garbage written over stamps,
//! lengths and cursors between them. Nothing may panic, loop forever or
//! return a payload longer than the maximum message.

use std::mem::size_of;
use std::sync::atomic::Ordering;

use ipc_core::layout::Cursor;
use ipc_core::ring::{ReadAttempt, ReadClaim, SlotHeader, SlotRing, WriteClaim};

const WRITING: u64 = 1 << 63;
const READING: u64 = 1 << 62;
const SKIP: u64 = 1 << 61;
const OWNERS: u32 = 4;

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

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, i| acc | (self.byte() as u64) << (8 * i))
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// Runs the operations `data` describes. With `avoid_known_bugs`, garbage
/// never takes a shape that a known library bug turns into a panic (see
/// RELIABILITY.md), so the rest stays covered by an ordinary test.
pub fn run(data: &[u8], avoid_known_bugs: bool) {
    let mut inp = Input(data);
    let cap = 2u32 << (inp.byte() % 4);
    let limit = 1 + inp.byte() as u32 % cap;
    let max_message = 1 + inp.byte() as usize % 64;
    let stride = (size_of::<SlotHeader>() + max_message).div_ceil(64) * 64;
    let mut region = vec![0u64; cap as usize * stride / 8];
    let base = region.as_mut_ptr();
    // SAFETY: the vector holds cap * stride bytes, 8-byte aligned, unused.
    unsafe { SlotRing::init(base.cast(), cap, stride) };
    let tail = Cursor::default();
    let head = Cursor::default();
    // SAFETY: initialized above with this geometry; `region` outlives `ring`.
    let ring = unsafe { SlotRing::new(&tail, &head, base.cast(), cap, limit, stride, max_message) };
    let mut writes: Vec<(u32, WriteClaim)> = Vec::new();
    let mut reads: Vec<(u32, ReadClaim)> = Vec::new();
    let mut cached_head = [0u64; OWNERS as usize];
    let mut steps = 0;
    while !inp.done() && steps < 512 {
        steps += 1;
        let op = inp.byte();
        let owner = (op >> 4) as u32 % OWNERS;
        match op % 10 {
            0 | 1 => {
                if let Ok(Some(c)) = ring.try_claim_write(owner, &mut cached_head[owner as usize]) {
                    writes.push((owner, c));
                }
            }
            2 if !writes.is_empty() => {
                let (_, mut c) = writes.remove(inp.byte() as usize % writes.len());
                let len = inp.byte() as usize % (max_message + 1);
                let buf = ring.payload_mut(&mut c);
                assert_eq!(buf.len(), max_message);
                buf[..len].fill(0xAB);
                let _ = ring.commit(c, len, 0);
            }
            3 if !writes.is_empty() => {
                let (_, c) = writes.remove(inp.byte() as usize % writes.len());
                let _ = ring.abandon(c);
            }
            4 | 5 => {
                let max_len = inp.byte() as usize;
                match ring.try_claim_read(owner, max_len) {
                    Ok(ReadAttempt::Claimed(c)) => {
                        let p = ring.payload_of(&c);
                        assert!(p.len() <= max_message, "payload longer than the maximum");
                        std::hint::black_box(p.iter().map(|&b| b as u64).sum::<u64>());
                        reads.push((owner, c));
                    }
                    Ok(ReadAttempt::TooLong(n)) => assert!(n > max_len),
                    Ok(ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy) | Err(_) => {}
                }
            }
            6 if !reads.is_empty() => {
                let (_, c) = reads.remove(inp.byte() as usize % reads.len());
                let _ = ring.release(c);
            }
            7 => {
                // The owner "dies": its claims are forgotten, then repaired.
                let dead = inp.byte() as u32 % OWNERS;
                writes.retain(|(o, _)| *o != dead);
                reads.retain(|(o, _)| *o != dead);
                // SAFETY: the dead owner's claims were dropped just above.
                let r = unsafe { ring.recover_owner(dead) };
                assert!(r.abandoned_writes + r.lost_reads <= cap as u64);
            }
            8 => poke(
                &mut inp,
                base,
                region_len(cap, stride),
                &tail,
                &head,
                avoid_known_bugs,
            ),
            _ => {
                let pos = inp.u64() % (4 * cap as u64 + 4);
                assert!(ring.len() <= cap as u64);
                std::hint::black_box((ring.is_empty(), ring.tail_pos(), ring.was_taken(pos)));
                if inp.byte() % 4 == 0 {
                    std::hint::black_box(ring.retract(pos));
                }
            }
        }
    }
}

fn region_len(cap: u32, stride: usize) -> usize {
    cap as usize * stride / 8
}

/// Writes a garbage word into a stamp, a length/tag word or a cursor.
fn poke(
    inp: &mut Input<'_>,
    base: *mut u64,
    words: usize,
    tail: &Cursor,
    head: &Cursor,
    avoid: bool,
) {
    let kind = inp.byte();
    let structured = {
        let flags = [0, WRITING, READING, SKIP, WRITING | READING][inp.byte() as usize % 5];
        let owner = (inp.byte() as u64 % (OWNERS as u64 + 1)) << 53;
        let seq = inp.byte() as u64 % 40;
        flags | owner | seq
    };
    let mut value = if kind & 0x80 != 0 {
        inp.u64()
    } else {
        structured
    };
    match kind % 4 {
        0 | 1 => {
            let at = (inp.u64() as usize % words) & !7 | (if kind % 4 == 1 { 1 } else { 0 });
            // Slot headers start every stride bytes; word 0 is the stamp,
            // word 1 the length and tag. Any word of the region is fair game.
            if avoid && value & READING != 0 && value & WRITING == 0 && value & ((1 << 53) - 1) == 0
            {
                value |= 1;
            }
            // SAFETY: `at` < words, inside the region; single-threaded, so
            // no atomic access races with this plain write.
            unsafe { base.add(at).write(value) };
        }
        c => {
            if avoid {
                // Keep clear of the 53-bit sequence's edge.
                value &= (1 << 52) - 1;
            }
            if c == 2 { tail } else { head }
                .pos
                .store(value, Ordering::Relaxed)
        }
    }
}
