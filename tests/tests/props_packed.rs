//! Property tests of the packed ring (single-mode buffers' engine), over
//! heap memory: random operations of one writer and one reader, with
//! simulated deaths and their repair, against a model that tracks every
//! byte position; and the `packed_ops` fuzz target's harness
//! (fuzz/common/packed_harness.rs) run as ordinary code on random inputs.

#[path = "../../fuzz/common/packed_harness.rs"]
mod packed_harness;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_core::packed::{max_message_for, record_size};
use ipc_core::ring::{HeadCache, ReadAttempt, ReadClaim, WriteClaim};
use proptest::prelude::*;

const MARK: u64 = 1 << 63;

/// The model test's ring memory: the fuzz harness's.
use packed_harness::Region as Heap;

#[derive(Debug, Clone)]
enum Op {
    /// Claim room for this many bytes (modulo max + 1).
    Claim(usize),
    /// Commit the held claim with this many bytes (shrunk to the claim).
    Commit(usize),
    Abandon,
    /// Claim the next message, accepting this many bytes (modulo max + 2).
    Read(usize),
    Release,
    /// The writer dies: 0 holding its claim, 1 after the record's header
    /// but before both cursor stores, 2 between the count and position
    /// stores; then a new writer starts after the repair.
    WriterDies(u8),
    /// The reader dies: 0 holding its message, 1 inside release between
    /// the count and the position stores.
    ReaderDies(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => any::<usize>().prop_map(Op::Claim),
        4 => any::<usize>().prop_map(Op::Commit),
        1 => Just(Op::Abandon),
        5 => any::<usize>().prop_map(Op::Read),
        4 => Just(Op::Release),
        1 => (0..3u8).prop_map(Op::WriterDies),
        1 => (0..2u8).prop_map(Op::ReaderDies),
    ]
}

/// A record the model knows of: its position, bytes, and message (`None`
/// for padding).
#[derive(Debug, Clone)]
struct Rec {
    pos: u64,
    size: u64,
    msg: Option<(u64, Vec<u8>)>,
}

/// What the ring should hold.
struct Model {
    size: u64,
    limit: u64,
    /// Where the next record goes (the claim's position while one is held).
    tail: u64,
    /// Where the reader stands (the held record's position while reading).
    head: u64,
    committed: u64,
    released: u64,
    records: VecDeque<Rec>,
}

impl Model {
    /// (pad, record) bytes a claim of `want` takes at the tail.
    fn shape(&self, want: usize) -> (u64, u64) {
        let rec = record_size(want);
        let off = self.tail % self.size;
        let pad = if off + rec > self.size {
            self.size - off
        } else {
            0
        };
        (pad, rec)
    }

    fn fits(&self, want: usize) -> bool {
        let (pad, rec) = self.shape(want);
        self.tail + pad + rec + 8 - self.head <= self.size
            && self.committed - self.released < self.limit
    }
}

fn content(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i) as u8).collect()
}

fn check_against_model(
    size: u64,
    limit: u32,
    max_message: usize,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let heap = Heap::new(size);
    let ring = heap.ring(limit, max_message);
    let mut m = Model {
        size,
        limit: limit as u64,
        tail: 0,
        head: 0,
        committed: 0,
        released: 0,
        records: VecDeque::new(),
    };
    let mut cache = HeadCache::default();
    let mut writing: Option<(WriteClaim, usize)> = None;
    let mut reading: Option<(ReadClaim, Rec)> = None;
    let mut next_id = 0u64;
    // Messages delivered (released by the reader) and lost (a dead reader's).
    let mut delivered: Vec<u64> = Vec::new();
    let mut lost: Vec<u64> = Vec::new();

    for op in ops {
        match op {
            Op::Claim(n) if writing.is_none() => {
                let want = n % (max_message + 1);
                let fits = m.fits(want);
                let (pad, _) = m.shape(want);
                match ring.try_claim_write(0, want, &mut cache, true) {
                    Ok(Some(mut c)) => {
                        prop_assert!(fits, "claimed {want} bytes where the model is full");
                        if pad > 0 {
                            m.records.push_back(Rec {
                                pos: m.tail,
                                size: pad,
                                msg: None,
                            });
                            m.tail += pad;
                        }
                        prop_assert_eq!(c.pos(), m.tail);
                        let id = next_id;
                        ring.payload_mut(&mut c).copy_from_slice(&content(id, want));
                        writing = Some((c, want));
                    }
                    Ok(None) => prop_assert!(!fits, "refused {} bytes with room", want),
                    Err(e) => prop_assert!(false, "claim: {e}"),
                }
            }
            Op::Commit(n) => {
                if let Some((c, want)) = writing.take() {
                    let len = n % (want + 1);
                    ring.commit(c, len).expect("commit");
                    let id = next_id;
                    next_id += 1;
                    let size = record_size(len);
                    m.records.push_back(Rec {
                        pos: m.tail,
                        size,
                        msg: Some((id, content(id, want)[..len].to_vec())),
                    });
                    m.tail += size;
                    m.committed += 1;
                }
            }
            Op::Abandon => {
                if let Some((c, _)) = writing.take() {
                    ring.abandon(c).expect("abandon");
                }
            }
            Op::Read(n) if reading.is_none() => {
                let max_len = n % (max_message + 2);
                // The reader passes at most one padding record.
                let front = m.records.front().cloned();
                let mut expect = front.clone();
                let mut after_pad = m.head;
                if let Some(Rec { msg: None, .. }) = &front {
                    let pad = m.records[0].clone();
                    prop_assert_eq!(pad.pos, m.head);
                    after_pad = pad.pos + pad.size;
                    expect = m.records.get(1).cloned();
                }
                match ring.try_claim_read(1, max_len) {
                    Ok(ReadAttempt::Claimed(c)) => {
                        let Some(rec) = expect else {
                            return Err(TestCaseError::fail("read a message the model lacks"));
                        };
                        let (_, msg) = rec.msg.clone().expect("a message after a pad");
                        prop_assert!(msg.len() <= max_len);
                        prop_assert_eq!(ring.payload_of(&c), &msg[..]);
                        prop_assert_eq!(c.pos(), rec.pos);
                        if front.as_ref().is_some_and(|f| f.msg.is_none()) {
                            m.records.pop_front();
                        }
                        m.head = rec.pos;
                        m.records.pop_front();
                        reading = Some((c, rec));
                    }
                    Ok(ReadAttempt::TooLong(len)) => {
                        let Some(Rec {
                            msg: Some((_, msg)),
                            ..
                        }) = expect
                        else {
                            return Err(TestCaseError::fail("TooLong where the model is empty"));
                        };
                        prop_assert_eq!(len, msg.len());
                        prop_assert!(len > max_len);
                        if front.as_ref().is_some_and(|f| f.msg.is_none()) {
                            m.records.pop_front();
                        }
                        m.head = after_pad;
                    }
                    Ok(ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy) => {
                        prop_assert!(expect.is_none(), "empty where the model holds {:?}", expect);
                        if front.is_some() {
                            m.records.pop_front(); // the padding passed
                        }
                        m.head = after_pad;
                    }
                    Err(e) => prop_assert!(false, "read: {e}"),
                }
            }
            Op::Release => {
                if let Some((c, rec)) = reading.take() {
                    ring.release(c).expect("release");
                    m.head = rec.pos + rec.size;
                    m.released += 1;
                    delivered.push(rec.msg.expect("a message").0);
                }
            }
            Op::WriterDies(how) => {
                let mut mid_commit = false;
                if let Some((c, want)) = writing.take() {
                    if how > 0 {
                        // Commit, then put back what the cursor stores did.
                        let (pos, count) = (
                            heap.tail.pos.load(Ordering::Relaxed),
                            heap.tail.count.load(Ordering::Relaxed),
                        );
                        let len = want / 2;
                        ring.commit(c, len).expect("commit");
                        heap.tail.pos.store(pos, Ordering::Relaxed);
                        if how == 1 {
                            heap.tail.count.store(count, Ordering::Relaxed);
                        }
                        let id = next_id;
                        next_id += 1;
                        m.records.push_back(Rec {
                            pos: m.tail,
                            size: record_size(len),
                            msg: Some((id, content(id, want)[..len].to_vec())),
                        });
                        m.tail += record_size(len);
                        m.committed += 1;
                        mid_commit = true;
                    } else {
                        let _dies_holding_it = c;
                    }
                } else if how == 0 {
                    // Dies without a claim: nothing to repair.
                }
                let had_claim = heap.tail.pos.load(Ordering::Relaxed) & MARK != 0;
                // SAFETY: the dead writer's claim was dropped above; its
                // replacement starts after the repair.
                let r = unsafe { ring.recover_single_writer() };
                cache = HeadCache::default();
                prop_assert_eq!(r.lost_reads, 0);
                prop_assert_eq!(
                    r.abandoned_writes,
                    u64::from(had_claim && !mid_commit),
                    "abandoned_writes (mid_commit {})",
                    mid_commit
                );
                prop_assert_eq!(heap.tail.pos.load(Ordering::Relaxed), m.tail);
                prop_assert_eq!(heap.tail.count.load(Ordering::Relaxed), m.committed);
            }
            Op::ReaderDies(how) => {
                let held = reading.take();
                let expect_lost = match &held {
                    Some((c, rec)) => {
                        let id = rec.msg.as_ref().expect("a message").0;
                        if how == 1 {
                            // Released as far as the count: delivered.
                            heap.head.count.fetch_add(1, Ordering::Relaxed);
                            delivered.push(id);
                            0
                        } else {
                            lost.push(id);
                            std::hint::black_box(c.pos());
                            1
                        }
                    }
                    None => 0,
                };
                if let Some((_, rec)) = &held {
                    m.head = rec.pos + rec.size;
                    m.released += 1;
                }
                drop(held);
                // SAFETY: the dead reader's claim was dropped above.
                let r = unsafe { ring.recover_single_reader() };
                prop_assert_eq!(r.lost_reads, expect_lost);
                prop_assert_eq!(r.abandoned_writes, 0);
                let head = heap.head.pos.load(Ordering::Relaxed);
                prop_assert_eq!(head, m.head);
                prop_assert_eq!(heap.head.count.load(Ordering::Relaxed), m.released);
            }
            _ => {}
        }
        // The cursors, counts and what status calls report, after each step.
        prop_assert_eq!(ring.tail_pos(), m.tail);
        prop_assert_eq!(ring.head_pos(), m.head);
        prop_assert_eq!(ring.len(), m.committed - m.released);
        prop_assert!(m.committed - m.released <= m.limit, "count bound");
        prop_assert!(m.tail - m.head <= size, "byte bound");
        prop_assert_eq!(ring.bytes_used(), m.tail - m.head);
        let census = ring.census();
        prop_assert_eq!(census.writing, u64::from(writing.is_some()));
        prop_assert_eq!(census.reading, u64::from(reading.is_some()));
        prop_assert_eq!(
            census.queued,
            m.committed - m.released - u64::from(reading.is_some())
        );
        if writing.is_none() {
            for want in [0, max_message / 2, max_message] {
                prop_assert_eq!(
                    ring.is_full_for(want),
                    !m.fits(want),
                    "is_full_for({})",
                    want
                );
            }
        }
    }

    // Drain: everything committed is delivered or lost, once each, in order.
    if let Some((c, rec)) = reading.take() {
        ring.release(c).expect("release");
        delivered.push(rec.msg.expect("a message").0);
    }
    if let Some((c, _)) = writing.take() {
        ring.abandon(c).expect("abandon");
    }
    loop {
        match ring.try_claim_read(1, usize::MAX).expect("drain") {
            ReadAttempt::Claimed(c) => {
                let Some(rec) = m.records.iter().find(|r| r.msg.is_some()).cloned() else {
                    return Err(TestCaseError::fail("drained a message the model lacks"));
                };
                let (id, msg) = rec.msg.clone().unwrap();
                prop_assert_eq!(ring.payload_of(&c), &msg[..]);
                ring.release(c).expect("release");
                while let Some(r) = m.records.pop_front() {
                    if r.msg.is_some() {
                        break;
                    }
                }
                delivered.push(id);
            }
            ReadAttempt::Empty => break,
            other => return Err(TestCaseError::fail(format!("drain: {other:?}"))),
        }
    }
    prop_assert!(m.records.iter().all(|r| r.msg.is_none()), "messages left");
    let mut all: Vec<u64> = delivered.iter().chain(&lost).copied().collect();
    all.sort_unstable();
    prop_assert_eq!(all, (0..next_id).collect::<Vec<_>>(), "exactly once");
    prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]), "in order");
    prop_assert!(ring.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn packed_ring_matches_the_model(
        (size, max_message) in prop_oneof![Just(256u64), Just(512), Just(1024)]
            .prop_flat_map(|size| (Just(size), 1..=max_message_for(size) as usize)),
        limit in prop_oneof![1..=4u32, 5..=64u32, Just(u32::MAX)],
        ops in prop::collection::vec(op(), 0..400),
    ) {
        check_against_model(size, limit, max_message, ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn packed_garbage_never_panics_or_loops(data in prop::collection::vec(any::<u8>(), 0..1500)) {
        packed_harness::run(&data, true);
    }
}

use ipc_tests::SplitMix;

/// The fuzz target's body, fed random inputs for two seconds.
#[test]
fn packed_fuzz_harness_runs_as_ordinary_code() {
    let seed = std::env::var("PACKED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = SplitMix(seed);
    let mut runs = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        packed_harness::run(&rng.bytes(2000), true);
        runs += 1;
    }
    eprintln!("packed harness: {runs} random inputs, seed {seed}");
}
