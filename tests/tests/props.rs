//! Property tests of the ring's index arithmetic, over heap memory: random
//! operations from several simulated owners against a model, and garbage in
//! stamps, lengths and cursors. Also runs the fuzz targets' harnesses
//! (fuzz/common/*.rs) as ordinary code on random inputs, since cargo-fuzz
//! needs a nightly compiler that CI does not have.

#[path = "../../fuzz/common/header_harness.rs"]
mod header_harness;
#[path = "../../fuzz/common/ring_harness.rs"]
mod ring_harness;

use std::collections::BTreeMap;
use std::mem::size_of;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_core::layout::Cursor;
use ipc_core::ring::{ReadAttempt, ReadClaim, SlotHeader, SlotRing, WriteClaim};
use proptest::prelude::*;

/// A ring over a heap region.
struct Heap {
    tail: Cursor,
    head: Cursor,
    /// Owns the memory; only `ptr` touches it after construction.
    _region: Vec<u64>,
    ptr: *mut u64,
    cap: u32,
    stride: usize,
}

const MAX: usize = 16;

impl Heap {
    fn new(cap: u32) -> Heap {
        let stride = (size_of::<SlotHeader>() + MAX).div_ceil(64) * 64;
        let mut region = vec![0u64; cap as usize * stride / 8];
        let ptr = region.as_mut_ptr();
        // SAFETY: the vector holds cap * stride bytes, 8-byte aligned.
        unsafe { SlotRing::init(ptr.cast(), cap, stride) };
        Heap {
            tail: Cursor::default(),
            head: Cursor::default(),
            _region: region,
            ptr,
            cap,
            stride,
        }
    }

    fn ring(&self, limit: u32) -> SlotRing<'_> {
        // SAFETY: initialized by `new` with this geometry; the borrow keeps
        // the region alive as long as the ring.
        unsafe {
            SlotRing::new(
                &self.tail,
                &self.head,
                self.ptr.cast(),
                self.cap,
                limit,
                self.stride,
                MAX,
            )
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Claim(u32),
    Commit(usize, usize),
    Abandon(usize),
    Read(u32, usize),
    Release(usize),
    Die(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4u32).prop_map(Op::Claim),
        4 => (any::<usize>(), 8..=MAX).prop_map(|(i, l)| Op::Commit(i, l)),
        1 => any::<usize>().prop_map(Op::Abandon),
        4 => (0..4u32, prop_oneof![Just(MAX), 0..=MAX]).prop_map(|(o, m)| Op::Read(o, m)),
        4 => any::<usize>().prop_map(Op::Release),
        1 => (0..4u32).prop_map(Op::Die),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Writing(u32),
    Committed(Vec<u8>),
    Skipped,
    Reading(u32),
}

/// The specification: positions in order, a slot per position until its
/// message is released.
#[derive(Debug)]
struct Model {
    cap: u64,
    limit: u64,
    tail: u64,
    head: u64,
    slots: BTreeMap<u64, Slot>,
}

impl Model {
    fn claim(&mut self, owner: u32) -> Option<u64> {
        let pos = self.tail;
        if pos - self.head >= self.limit {
            return None;
        }
        if pos >= self.cap && self.slots.contains_key(&(pos - self.cap)) {
            // A reader of the previous lap still holds the slot.
            return None;
        }
        self.slots.insert(pos, Slot::Writing(owner));
        self.tail += 1;
        Some(pos)
    }

    fn read(&mut self, owner: u32, max_len: usize) -> Result<(u64, Vec<u8>), Option<usize>> {
        loop {
            if self.head == self.tail {
                return Err(None);
            }
            match self.slots.get(&self.head).cloned() {
                Some(Slot::Writing(_)) => return Err(None),
                Some(Slot::Skipped) => {
                    self.slots.remove(&self.head);
                    self.head += 1;
                }
                Some(Slot::Committed(m)) if m.len() > max_len => return Err(Some(m.len())),
                Some(Slot::Committed(m)) => {
                    let pos = self.head;
                    self.slots.insert(pos, Slot::Reading(owner));
                    self.head += 1;
                    return Ok((pos, m));
                }
                other => panic!("model: {other:?} at the head"),
            }
        }
    }

    fn die(&mut self, owner: u32) -> (u64, u64) {
        let (mut abandoned, mut lost) = (0, 0);
        self.slots.retain(|_, s| match s {
            Slot::Writing(o) if *o == owner => {
                *s = Slot::Skipped;
                abandoned += 1;
                true
            }
            Slot::Reading(o) if *o == owner => {
                lost += 1;
                false
            }
            _ => true,
        });
        (abandoned, lost)
    }
}

fn check_against_model(cap: u32, limit: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let heap = Heap::new(cap);
    let ring = heap.ring(limit);
    let mut m = Model {
        cap: cap as u64,
        limit: limit as u64,
        tail: 0,
        head: 0,
        slots: BTreeMap::new(),
    };
    let mut writes: Vec<(u32, u64, WriteClaim)> = Vec::new();
    let mut reads: Vec<(u32, u64, ReadClaim)> = Vec::new();
    let mut cached = [0u64; 4];
    let mut delivered: Vec<u64> = Vec::new();
    let mut committed: Vec<u64> = Vec::new();
    let mut lost = 0u64;
    for op in ops {
        match op {
            Op::Claim(o) => {
                let real = ring.try_claim_write(o, &mut cached[o as usize]).unwrap();
                let want = m.claim(o);
                prop_assert_eq!(real.as_ref().map(|c| c.pos()), want, "claim by {}", o);
                if let Some(c) = real {
                    writes.push((o, c.pos(), c));
                }
            }
            Op::Commit(i, len) if !writes.is_empty() => {
                let (_, pos, mut c) = writes.remove(i % writes.len());
                let mut msg = vec![0u8; len];
                // Messages are identified by their position: FIFO means in
                // the order of the write claims.
                msg[..8].copy_from_slice(&pos.to_le_bytes());
                committed.push(pos);
                ring.payload_mut(&mut c)[..len].copy_from_slice(&msg);
                ring.commit(c, len, 7).unwrap();
                m.slots.insert(pos, Slot::Committed(msg));
            }
            Op::Abandon(i) if !writes.is_empty() => {
                let (_, pos, c) = writes.remove(i % writes.len());
                ring.abandon(c).unwrap();
                m.slots.insert(pos, Slot::Skipped);
            }
            Op::Read(o, max_len) => {
                let real = ring.try_claim_read(o, max_len).unwrap();
                match (real, m.read(o, max_len)) {
                    (ReadAttempt::Claimed(c), Ok((pos, msg))) => {
                        prop_assert_eq!(ring.payload_of(&c), &msg[..], "FIFO order");
                        prop_assert_eq!(ring.tag_of(&c), 7);
                        delivered.push(u64::from_le_bytes(msg[..8].try_into().unwrap()));
                        reads.push((o, pos, c));
                    }
                    (ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy, Err(None)) => {}
                    (ReadAttempt::TooLong(n), Err(Some(k))) => prop_assert_eq!(n, k),
                    (real, want) => {
                        return Err(TestCaseError::fail(format!(
                            "read by {o}: ring {real:?}, model {want:?}"
                        )))
                    }
                }
            }
            Op::Release(i) if !reads.is_empty() => {
                let (_, pos, c) = reads.remove(i % reads.len());
                ring.release(c).unwrap();
                m.slots.remove(&pos);
            }
            Op::Die(o) => {
                writes.retain(|(w, ..)| *w != o);
                reads.retain(|(r, ..)| *r != o);
                // SAFETY: the dead owner's claims were dropped above.
                let r = unsafe { ring.recover_owner(o) };
                let (abandoned, l) = m.die(o);
                prop_assert_eq!((r.abandoned_writes, r.lost_reads), (abandoned, l));
                lost += l;
                // SAFETY: as above.
                let again = unsafe { ring.recover_owner(o) };
                prop_assert_eq!(again, Default::default(), "idempotent");
            }
            _ => {}
        }
        prop_assert!(
            ring.len() <= limit as u64,
            "len {} > limit {}",
            ring.len(),
            limit
        );
        prop_assert_eq!(ring.len(), m.tail - m.head);
        prop_assert_eq!(ring.tail_pos(), m.tail);
    }
    // Drain with a fresh owner after every claimant died: nothing committed
    // is lost except what dead readers held.
    drop((writes, reads));
    for o in 0..4 {
        // SAFETY: every claim was dropped just above.
        unsafe { ring.recover_owner(o) };
        m.die(o);
    }
    loop {
        match ring.try_claim_read(5, MAX).unwrap() {
            ReadAttempt::Claimed(c) => {
                let p = ring.payload_of(&c);
                delivered.push(u64::from_le_bytes(p[..8].try_into().unwrap()));
                ring.release(c).unwrap();
            }
            ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy => break,
            ReadAttempt::TooLong(n) => panic!("{n} bytes too long for MAX"),
        }
    }
    prop_assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "out of order: {:?}",
        delivered
    );
    prop_assert!(delivered.iter().all(|d| committed.contains(d)));
    // Every committed message was handed to exactly one reader (those that
    // died holding one count it in lost_reads, never as a second delivery).
    prop_assert_eq!(delivered.len(), committed.len());
    prop_assert!(lost <= delivered.len() as u64);
    prop_assert!(ring.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ring_matches_the_model(
        (cap, limit) in prop_oneof![Just(2u32), Just(4), Just(8)]
            .prop_flat_map(|cap| (Just(cap), 1..=cap)),
        ops in prop::collection::vec(op(), 0..300),
    ) {
        check_against_model(cap, limit, ops)?;
    }

}

proptest! {
    // Garbage makes many calls spin up to the ring's stale limit: fewer cases.
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics_or_loops(data in prop::collection::vec(any::<u8>(), 0..1000)) {
        ring_harness::run(&data, true);
    }

    #[test]
    fn header_bytes_are_validated(data in prop::collection::vec(any::<u8>(), 0..700)) {
        header_harness::run(&data);
    }
}

/// Every committed message that no dead reader held survives a writer's
/// death and is read in order.
#[test]
fn dead_writer_recovery_keeps_committed_messages() {
    let heap = Heap::new(8);
    let ring = heap.ring(8);
    let mut claims = Vec::new();
    for o in [0, 1, 0, 2, 1, 0] {
        claims.push((o, ring.try_claim_write(o, &mut 0).unwrap().unwrap()));
    }
    // Owner 1 dies holding two claims; the others commit theirs.
    for (o, mut c) in claims {
        if o != 1 {
            let pos = c.pos();
            ring.payload_mut(&mut c)[0] = pos as u8;
            ring.commit(c, 1, 0).unwrap();
        }
    }
    // SAFETY: owner 1's claims were dropped in the loop above.
    assert_eq!(unsafe { ring.recover_owner(1) }.abandoned_writes, 2);
    let mut got = vec![];
    while let ReadAttempt::Claimed(c) = ring.try_claim_read(3, MAX).unwrap() {
        got.push(ring.payload_of(&c)[0]);
        ring.release(c).unwrap();
    }
    assert_eq!(got, [0, 2, 3, 5]);
}

use ipc_tests::SplitMix;

/// The fuzz targets' bodies, fed random inputs for a few seconds each.
#[test]
fn fuzz_harnesses_run_as_ordinary_code() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = SplitMix(seed);
    let mut runs = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        header_harness::run(&rng.bytes(700));
        ring_harness::run(&rng.bytes(2000), true);
        runs += 1;
    }
    eprintln!("fuzz harnesses: {runs} random inputs each, seed {seed}");
}

/// Runs `f` on a thread; fails if it does not return within `limit`.
fn returns_within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit)
        .expect("the ring operation never returned (it spins forever)");
}

#[test]
/// Was a bug (fixed in c746c33): `seq - 1` overflowed in recover_owner.
fn recover_owner_survives_a_reading_stamp_of_sequence_zero() {
    let heap = Heap::new(2);
    let ring = heap.ring(2);
    // Stamp READING | owner 3 | seq 0 in slot 0, as a hostile peer could.
    let stamp = (1u64 << 62) | (3u64 << 53);
    // SAFETY: word 0 of the region is slot 0's stamp; single-threaded.
    unsafe { heap.ptr.write(stamp) };
    // SAFETY: no claim of owner 3 exists (the stamp is a scribble).
    let r = unsafe { ring.recover_owner(3) };
    assert!(r.lost_reads <= 1);
}

#[test]
/// Was a bug (fixed in c746c33): the help-the-cursor path spun forever.
fn cursor_with_high_bits_does_not_spin_forever() {
    returns_within(Duration::from_secs(10), || {
        let heap = Heap::new(2);
        heap.tail.pos.store(3 << 62, Ordering::Relaxed);
        let ring = heap.ring(1);
        // Before the fix the second claim saw the first one's WRITING stamp
        // at the same position and tried to help the cursor on, forever.
        let _ = ring.try_claim_write(0, &mut 0);
        let _ = ring.try_claim_write(0, &mut 0);
    });
    returns_within(Duration::from_secs(10), || {
        let heap = Heap::new(2);
        let ring = heap.ring(2);
        let c = ring.try_claim_write(0, &mut 0).unwrap().unwrap();
        ring.commit(c, 0, 0).unwrap();
        let ReadAttempt::Claimed(r) = ring.try_claim_read(1, MAX).unwrap() else {
            panic!("expected a message")
        };
        let _ = r;
        heap.head.pos.store(1 << 60, Ordering::Relaxed);
        let _ = ring.try_claim_read(1, MAX);
    });
}
