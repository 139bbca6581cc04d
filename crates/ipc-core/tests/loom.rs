//! Model checks with loom of the packed ring on its in-process backend
//! ([`HeapPackedRing`], in single mode, shared by several writers and
//! readers, and as write-once laps), of the semaphore, and of the event
//! count's sleep/wake protocol over a modelled futex: every interleaving
//! (up to a preemption bound) of a few threads is explored.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ipc-core --release --test loom`
#![cfg(loom)]

use ipc_core::ring::{HeapPackedRing, ReadAttempt, ReadClaim, Ring, WriteAttempt, WriteClaim};
use ipc_core::sync::{Deadline, Semaphore, SpinPolicy};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    // Waiting loops yield to the other threads; give their retries room.
    b.max_branches = 100_000;
    b.check(f);
}

// Every commit and release goes through these two, so that a change of
// `Ring::commit`/`Ring::release`'s signature (say, returning a `Result`
// after an ownership check) is adapted here alone (`.unwrap()`).

/// Publishes `claim` with `len` bytes (tag 0).
fn commit(ring: &Ring<'_>, claim: WriteClaim<'_>, len: usize) {
    ring.commit(claim, len, 0).unwrap();
}

/// Frees a read slot.
fn release(ring: &Ring<'_>, claim: ReadClaim<'_>) {
    ring.release(claim).unwrap();
}

/// Writes one byte if there is room now (after another writer's turn on
/// a shared ring).
fn try_send(ring: &Ring<'_>, owner: u32, byte: u8) -> bool {
    loop {
        match ring
            .try_write(owner, 1, &mut Default::default(), true)
            .unwrap()
        {
            WriteAttempt::Claimed(mut c) => {
                ring.payload_mut(&mut c)[0] = byte;
                commit(ring, c, 1);
                return true;
            }
            WriteAttempt::Full => return false,
            WriteAttempt::Busy => thread::yield_now(),
        }
    }
}

/// Reads one byte if one is committed now (after another reader's turn on
/// a shared ring).
fn try_recv(ring: &Ring<'_>, owner: u32) -> Option<u8> {
    loop {
        match ring.try_claim_read(owner, 64).unwrap() {
            ReadAttempt::Claimed(c) => {
                let b = ring.payload_of(&c)[0];
                release(ring, c);
                return Some(b);
            }
            ReadAttempt::Empty | ReadAttempt::Writing => return None,
            ReadAttempt::Busy => thread::yield_now(),
            ReadAttempt::TooLong(n) => panic!("length {n}"),
        }
    }
}

/// Everything still readable, once the other threads are done.
fn drain(ring: &Ring<'_>) -> Vec<u8> {
    std::iter::from_fn(|| try_recv(ring, 30)).collect()
}

// The models use non-blocking attempts: a waiting loop would multiply the
// interleavings loom explores; the assertions hold whatever each attempt
// returned.

#[test]
fn concurrent_writers_and_reader_deliver_each_message_once() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 2, 8));
        let writers: Vec<_> = (0..2u8)
            .map(|w| {
                let heap = heap.clone();
                thread::spawn(move || assert!(try_send(&heap.shared_ring(), w as u32, 10 + w)))
            })
            .collect();
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.shared_ring(), 5));
        for w in writers {
            w.join().unwrap();
        }
        let mut got: Vec<u8> = reader.join().unwrap().into_iter().collect();
        got.extend(drain(&heap.shared_ring()));
        got.sort_unstable();
        assert_eq!(got, [10, 11]);
    });
}

#[test]
fn wrap_around_keeps_order_and_never_overwrites() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 2, 8));
        let ring = heap.shared_ring();
        assert!(try_send(&ring, 0, 0) && try_send(&ring, 0, 1));
        let h = heap.clone();
        // The third message fits only once the reader released the first.
        let writer = thread::spawn(move || try_send(&h.shared_ring(), 0, 2));
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.shared_ring(), 1));
        let sent_third = writer.join().unwrap();
        let mut got: Vec<u8> = reader.join().unwrap().into_iter().collect();
        got.extend(drain(&ring));
        let want: &[u8] = if sent_third { &[0, 1, 2] } else { &[0, 1] };
        assert_eq!(got, want);
    });
}

#[test]
fn two_readers_split_messages_without_loss() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 2, 8));
        let ring = heap.shared_ring();
        assert!(try_send(&ring, 0, 1) && try_send(&ring, 0, 2));
        let readers: Vec<_> = (0..2u32)
            .map(|r| {
                let heap = heap.clone();
                thread::spawn(move || try_recv(&heap.shared_ring(), 10 + r))
            })
            .collect();
        let mut got: Vec<u8> = readers
            .into_iter()
            .filter_map(|r| r.join().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [1, 2],
            "each reader finds a message: none is empty or taken twice"
        );
    });
}

#[test]
fn dead_writer_is_skipped_while_a_live_one_is_delivered() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 2, 8));
        // Owner 7 claims (taking the writers' turn) and dies without committing.
        let ring = heap.shared_ring();
        let _dead = ring
            .try_claim_write(7, 1, &mut Default::default())
            .unwrap()
            .unwrap();
        let h = heap.clone();
        let live = thread::spawn(move || assert!(try_send(&h.shared_ring(), 1, 42)));
        let h = heap.clone();
        // SAFETY: owner 7 "died": its claim is never used again.
        let reaper =
            thread::spawn(move || unsafe { h.shared_ring().recover_owner(7) }.abandoned_writes);
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.shared_ring(), 3));
        live.join().unwrap();
        assert_eq!(reaper.join().unwrap(), 1);
        let mut got: Vec<u8> = reader.join().unwrap().into_iter().collect();
        got.extend(drain(&ring));
        assert_eq!(got, [42]);
    });
}

#[test]
fn dead_readers_message_returns_its_room_to_writers() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 2, 8));
        let ring = heap.shared_ring();
        assert!(try_send(&ring, 0, 1) && try_send(&ring, 0, 2));
        // Owner 9 claims message 1 and dies holding it.
        let ReadAttempt::Claimed(_held) = ring.try_claim_read(9, 64).unwrap() else {
            panic!("expected a message")
        };
        let h = heap.clone();
        // SAFETY: owner 9 "died": its claim is never used again.
        let reaper = thread::spawn(move || unsafe { h.shared_ring().recover_owner(9) }.lost_reads);
        let h = heap.clone();
        let writer = thread::spawn(move || try_send(&h.shared_ring(), 0, 3));
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.shared_ring(), 4));
        assert_eq!(reaper.join().unwrap(), 1);
        let sent = writer.join().unwrap();
        let mut got: Vec<u8> = reader.join().unwrap().into_iter().collect();
        got.extend(drain(&ring));
        if !sent {
            // Full until the reaper released the message: there is room now.
            assert!(try_send(&ring, 0, 3));
            got.extend(drain(&ring));
        }
        assert_eq!(got, [2, 3]);
    });
}

/// Bytes of the packed model's ring, and the lines its shadows stand for.
const PACKED_RING: u64 = 256;
const PACKED_LINE: u64 = 8;

/// The packed ring's model: one writer sends messages of `sizes` (each
/// claimed at the largest size and shrunk at commit), one
/// reader receives them, over a 256-byte ring that they wrap (padding
/// records included). Each 8 bytes of the ring have a loom `UnsafeCell`
/// shadow that the writer writes for every part of the ring its record
/// covers, before the commit, and the reader reads after its claim: loom
/// fails the model if the commit (header Release, the reader's Acquire)
/// does not order them, or if the writer reuses bytes the reader may
/// still read (its room checks: lazy `freed` and exact `head`, Acquire
/// against the reader's Release).
fn packed_model(sizes: &'static [usize]) {
    struct Spsc {
        heap: HeapPackedRing,
        shadow: Vec<UnsafeCell<u8>>,
    }
    // SAFETY: the shadows are shared on purpose; loom checks that every
    // two accesses to one are ordered, and fails the model if not.
    unsafe impl Sync for Spsc {}
    fn lines(pos: u64, len: usize) -> impl Iterator<Item = usize> {
        let off = pos % PACKED_RING;
        let end = off + 8 + (len as u64).div_ceil(8) * 8;
        (off / PACKED_LINE..end.div_ceil(PACKED_LINE)).map(|l| l as usize)
    }
    model(move || {
        let s = Arc::new(Spsc {
            heap: HeapPackedRing::new(PACKED_RING, 8, 100),
            shadow: (0..PACKED_RING / PACKED_LINE)
                .map(|_| UnsafeCell::new(0))
                .collect(),
        });
        let w = s.clone();
        let writer = thread::spawn(move || {
            let ring = w.heap.ring();
            let mut cache = Default::default();
            for (k, &len) in sizes.iter().enumerate() {
                // Claims of the largest size, shrunk at commit.
                let mut claim = loop {
                    match ring.try_claim_write(0, 100, &mut cache).unwrap() {
                        Some(c) => break c,
                        None => thread::yield_now(), // full
                    }
                };
                for l in lines(claim.pos(), len) {
                    // SAFETY: checked by loom (see above).
                    w.shadow[l].with_mut(|p| unsafe { *p = k as u8 + 1 });
                }
                ring.payload_mut(&mut claim)[..len].fill(k as u8 + 1);
                commit(&ring, claim, len);
            }
        });
        let ring = s.heap.ring();
        for (k, &len) in sizes.iter().enumerate() {
            let claim = loop {
                match ring.try_claim_read(1, 128).unwrap() {
                    ReadAttempt::Claimed(c) => break c,
                    ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy => {
                        thread::yield_now()
                    }
                    ReadAttempt::TooLong(n) => panic!("length {n}"),
                }
            };
            for l in lines(claim.pos(), len) {
                // SAFETY: checked by loom (see above).
                let shadow = s.shadow[l].with(|p| unsafe { *p });
                assert_eq!(shadow, k as u8 + 1, "message {k}: not written yet");
            }
            let payload = ring.payload_of(&claim);
            assert_eq!(payload.len(), len, "message {k}");
            assert!(payload.iter().all(|&b| b == k as u8 + 1), "message {k}");
            release(&ring, claim);
        }
        writer.join().unwrap();
        assert!(matches!(
            ring.try_claim_read(1, 128).unwrap(),
            ReadAttempt::Empty
        ));
    });
}

#[test]
fn packed_ring_wraps_with_padding_in_order() {
    // 112-byte records: two fill the ring; the third pads the end and
    // starts again at 0 once the reader freed the first two.
    packed_model(&[100, 100, 100]);
}

#[test]
fn packed_ring_mixed_sizes_share_and_reuse_bytes() {
    packed_model(&[8, 100, 40, 0]);
}

/// Who races whom in [`shared_model`].
#[derive(Clone, Copy)]
enum Race {
    /// A writer thread per message.
    Writers,
    /// Two reader threads.
    Readers,
    /// One writer thread and one reader.
    Sides,
}

/// A shared packed ring (mailboxes, the general buffer): messages of
/// `lens[k]` bytes sent by writer `k`, each taken exactly once, with
/// writers racing each other, readers racing each other, or one of each
/// at once (`mode`). Each side takes its claims in turn under its lock
/// word; the shadow cells (as in [`packed_model`]) make loom check that a
/// reader reads only bytes their writer wrote before committing, and that
/// no writer overwrites bytes a reader still reads. (Preemption bound 2:
/// waiting loops on both sides.)
fn shared_model(lens: &'static [usize], mode: Race) {
    struct Shared {
        heap: HeapPackedRing,
        shadow: Vec<UnsafeCell<u8>>,
        taken: loom::sync::atomic::AtomicUsize,
    }
    // SAFETY: as in `packed_model`: loom checks every access.
    unsafe impl Sync for Shared {}
    fn lines(pos: u64, len: usize) -> impl Iterator<Item = usize> {
        let off = pos % PACKED_RING;
        let end = off + 8 + (len as u64).div_ceil(8) * 8;
        (off / PACKED_LINE..end.div_ceil(PACKED_LINE)).map(|l| l as usize)
    }
    fn send(s: &Shared, k: usize, len: usize) {
        let ring = s.heap.shared_ring();
        let mut cache = Default::default();
        let mut claim = loop {
            match ring.try_claim_write(k as u32, len, &mut cache).unwrap() {
                Some(c) => break c,
                None => thread::yield_now(), // busy or full
            }
        };
        for l in lines(claim.pos(), len) {
            // SAFETY: checked by loom (see above).
            s.shadow[l].with_mut(|p| unsafe { *p = k as u8 + 1 });
        }
        ring.payload_mut(&mut claim).fill(k as u8 + 1);
        commit(&ring, claim, len);
    }
    fn receive(s: &Shared, me: u32, lens: &[usize], want: usize) -> Vec<usize> {
        use loom::sync::atomic::Ordering::SeqCst;
        let ring = s.heap.shared_ring();
        let mut got = Vec::new();
        while got.len() < want && s.taken.load(SeqCst) < lens.len() {
            match ring.try_claim_read(me, 128).unwrap() {
                ReadAttempt::Claimed(c) => {
                    let payload = ring.payload_of(&c);
                    let k = payload.first().map_or(0, |&b| b - 1) as usize;
                    assert_eq!(payload.len(), lens[k], "message {k}");
                    assert!(payload.iter().all(|&b| b == k as u8 + 1));
                    for l in lines(c.pos(), lens[k]) {
                        // SAFETY: checked by loom (see above).
                        let shadow = s.shadow[l].with(|p| unsafe { *p });
                        assert_eq!(shadow, k as u8 + 1, "message {k}: not written yet");
                    }
                    got.push(k);
                    release(&ring, c);
                    s.taken.fetch_add(1, SeqCst);
                }
                _ => thread::yield_now(),
            }
        }
        got
    }
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 100_000;
    b.check(move || {
        let s = Arc::new(Shared {
            heap: HeapPackedRing::new(PACKED_RING, 8, 100),
            shadow: (0..PACKED_RING / PACKED_LINE)
                .map(|_| UnsafeCell::new(0))
                .collect(),
            taken: loom::sync::atomic::AtomicUsize::new(0),
        });
        let mut all = Vec::new();
        match mode {
            // Writers race each other; the reader drains after them.
            Race::Writers => {
                let writers: Vec<_> = lens
                    .iter()
                    .enumerate()
                    .map(|(k, &len)| {
                        let w = s.clone();
                        thread::spawn(move || send(&w, k, len))
                    })
                    .collect();
                writers.into_iter().for_each(|t| t.join().unwrap());
                all.extend(receive(&s, 10, lens, lens.len()));
            }
            // Readers race each other for what was sent before them.
            Race::Readers => {
                for (k, &len) in lens.iter().enumerate() {
                    send(&s, k, len);
                }
                let rs: Vec<_> = (0..2)
                    .map(|r| {
                        let rd = s.clone();
                        thread::spawn(move || receive(&rd, 10 + r, lens, usize::MAX))
                    })
                    .collect();
                rs.into_iter().for_each(|t| all.extend(t.join().unwrap()));
            }
            // One writer and one reader, both under their locks, at once.
            Race::Sides => {
                let w = s.clone();
                let writer = thread::spawn(move || {
                    for (k, &len) in lens.iter().enumerate() {
                        send(&w, k, len);
                    }
                });
                all.extend(receive(&s, 10, lens, lens.len()));
                writer.join().unwrap();
            }
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (0..lens.len()).collect::<Vec<_>>(),
            "each message once"
        );
        assert!(matches!(
            s.heap.shared_ring().try_claim_read(30, 128).unwrap(),
            ReadAttempt::Empty
        ));
    });
}

#[test]
fn packed_shared_writers_take_turns() {
    // Two writers (records of 48 and 112 bytes).
    shared_model(&[40, 100], Race::Writers);
}

#[test]
fn packed_shared_readers_split_the_messages() {
    // Two messages, two readers.
    shared_model(&[40, 100], Race::Readers);
}

#[test]
fn packed_shared_sides_run_at_once_and_wrap() {
    // Three 112-byte records: the third pads the end and wraps.
    shared_model(&[100, 100, 100], Race::Sides);
}

/// The one-step paths (`try_send_now`, `try_recv_now`: what `send` and
/// `recv_into` take when nothing special is due) racing each other, each
/// falling back to a claim where it declines (the first send, which has no
/// cursor of its own to check yet): four 56-byte messages (64-byte
/// records) through a ring of 256 bytes, so that the last one waits for
/// the reader to free the first, in order and intact, single mode and
/// shared. The content check is what loom can
/// see of the payload (the copies are plain memory): the header's Release
/// and Acquire, and the room checks against `freed` and the head, are
/// what it explores.
fn one_step_model(shared: bool) {
    const LENS: [usize; 4] = [56; 4];
    model(move || {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 8, 100));
        let w = heap.clone();
        let writer = thread::spawn(move || {
            let ring = if shared { w.shared_ring() } else { w.ring() };
            let mut cache = Default::default();
            for (k, &len) in LENS.iter().enumerate() {
                let msg = vec![k as u8 + 1; len];
                loop {
                    if ring.try_send_now(0, &msg, &mut cache).unwrap() {
                        break;
                    }
                    match ring.try_write(0, len, &mut cache, true).unwrap() {
                        WriteAttempt::Claimed(mut c) => {
                            ring.payload_mut(&mut c).copy_from_slice(&msg);
                            commit(&ring, c, len);
                            break;
                        }
                        WriteAttempt::Full | WriteAttempt::Busy => thread::yield_now(),
                    }
                }
            }
        });
        let ring = if shared {
            heap.shared_ring()
        } else {
            heap.ring()
        };
        let mut out = [0u8; 128];
        for (k, &len) in LENS.iter().enumerate() {
            let got = loop {
                if let Some((n, index)) = ring.try_recv_now(1, &mut out, false).unwrap() {
                    assert_eq!(index, k as u64, "message {k}'s index");
                    break out[..n].to_vec();
                }
                match ring.try_claim_read(1, 128).unwrap() {
                    ReadAttempt::Claimed(c) => {
                        let v = ring.payload_of(&c).to_vec();
                        release(&ring, c);
                        break v;
                    }
                    ReadAttempt::Empty | ReadAttempt::Writing | ReadAttempt::Busy => {
                        thread::yield_now()
                    }
                    ReadAttempt::TooLong(n) => panic!("length {n}"),
                }
            };
            assert_eq!(got.len(), len, "message {k}");
            assert!(got.iter().all(|&b| b == k as u8 + 1), "message {k}");
        }
        writer.join().unwrap();
        assert_eq!(ring.try_recv_now(1, &mut out, false).unwrap(), None);
        assert!(matches!(
            ring.try_claim_read(1, 128).unwrap(),
            ReadAttempt::Empty
        ));
    });
}

#[test]
fn one_step_sends_and_receives_race_in_order_single_mode() {
    one_step_model(false);
}

#[test]
fn one_step_sends_and_receives_race_in_order_shared() {
    one_step_model(true);
}

/// An unbounded queue's block (a write-once lap, `with_end`): a receiver
/// sealing the lap (`close`, as `read_chain` does once the chain moved
/// past it, or the end of the stream) races a sender's claim. Either the
/// sender claims first (the close waits for its commit and for the
/// message to be read) or the lap is sealed first (the sender gets no
/// claim): never a message written into a sealed lap, or one sealed
/// behind unread.
#[test]
fn packed_write_once_close_races_a_writer() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 8, 100));
        let h = heap.clone();
        let writer = thread::spawn(move || {
            let ring = h.shared_ring().with_end(PACKED_RING);
            let mut cache = Default::default();
            loop {
                match ring.try_write(0, 8, &mut cache, true).unwrap() {
                    WriteAttempt::Claimed(mut c) => {
                        ring.payload_mut(&mut c).fill(7);
                        commit(&ring, c, 8);
                        return true;
                    }
                    WriteAttempt::Busy => thread::yield_now(),
                    WriteAttempt::Full => {
                        assert!(ring.sealed());
                        return false;
                    }
                }
            }
        });
        let ring = heap.shared_ring().with_end(PACKED_RING);
        let mut got = 0;
        // A close waits for the writer's commit, and for its message to be
        // read (it is not sealed behind).
        while ring.close(5).unwrap() {
            if let ReadAttempt::Claimed(c) = ring.try_claim_read(6, 128).unwrap() {
                assert_eq!(ring.payload_of(&c), &[7; 8]);
                release(&ring, c);
                got += 1;
            }
            thread::yield_now();
        }
        assert!(ring.sealed());
        let wrote = writer.join().unwrap();
        loop {
            match ring.try_claim_read(6, 128).unwrap() {
                ReadAttempt::Claimed(c) => {
                    assert_eq!(ring.payload_of(&c), &[7; 8]);
                    release(&ring, c);
                    got += 1;
                }
                ReadAttempt::Empty => break,
                other => panic!("{other:?} in a sealed lap, its writer gone"),
            }
        }
        assert_eq!(got, usize::from(wrote));
        assert_eq!(ring.head_pos(), PACKED_RING, "read to the end of the lap");
    });
}

/// Two receivers of a write-once lap read in place after freeing the head
/// (`release_detached`): each message is taken once, and its bytes stay
/// the sender's while the other receiver goes on.
#[test]
fn packed_write_once_detached_reads_keep_their_bytes() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 8, 100));
        {
            let ring = heap.shared_ring().with_end(PACKED_RING);
            let mut cache = Default::default();
            for k in 1..=2u8 {
                let mut c = ring.try_claim_write(0, 40, &mut cache).unwrap().unwrap();
                ring.payload_mut(&mut c).fill(k);
                commit(&ring, c, 40);
            }
        }
        let taken = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let readers: Vec<_> = (0..2u32)
            .map(|me| {
                let (h, taken) = (heap.clone(), taken.clone());
                thread::spawn(move || {
                    use loom::sync::atomic::Ordering::SeqCst;
                    let ring = h.shared_ring().with_end(PACKED_RING);
                    let mut got = Vec::new();
                    while taken.load(SeqCst) < 2 {
                        match ring.try_claim_read(me + 1, 128).unwrap() {
                            ReadAttempt::Claimed(c) => {
                                ring.release_detached(&c).unwrap();
                                taken.fetch_add(1, SeqCst);
                                thread::yield_now();
                                let payload = ring.payload_of(&c);
                                let k = payload[0];
                                assert!(payload.iter().all(|&b| b == k), "bytes changed");
                                got.push(k);
                            }
                            _ => thread::yield_now(),
                        }
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<u8> = readers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, [1, 2]);
    });
}

#[test]
fn semaphore_wakes_its_waiter_and_keeps_count() {
    model(|| {
        let s = Arc::new(Semaphore::new(0));
        let s2 = s.clone();
        let waiter =
            thread::spawn(move || assert!(s2.wait_until(Deadline::Never, SpinPolicy::SLEEP)));
        s.post();
        s.post();
        waiter.join().unwrap();
        assert_eq!(s.value(), 1);
        assert!(s.try_wait() && !s.try_wait());
    });
}

// ---------------------------------------------------------------------------
// The sleep/wake protocol of `EventCount` (sync.rs).
//
// Waiter: `prepare` (ticket = epoch; sleepers += 1; armed = 1; fence),
// re-check the condition, then `wait(ticket)` = futex-wait on the epoch,
// then `cancel`. Notifier: change the condition, then `notify` (fence; if
// armed: disarm, epoch += 1, futex-wake everyone).
//
// Under loom `sleep_on` and `wake` do nothing, so the futex is modelled
// here the way the kernel builds it: a hash-bucket lock and a wait queue
// (a loom Mutex and Condvar). `futex_wait` sleeps, under the bucket lock,
// only while the epoch still equals the ticket; `futex_wake` takes the
// lock and wakes every sleeper, who re-check. The model wakes after every
// `notify` whether or not it bumped the epoch: a wake without a bump is
// spurious and changes nothing, since the epoch moves only in
// `wake_if_armed`, which always wakes after it. A lost wake-up is a waiter
// that decided to sleep (condition false after `prepare`) still asleep on
// an unchanged epoch once the notifier, having made the condition true, is
// gone: it would sleep for ever. The notifier says it is gone under the
// bucket lock and wakes the sleepers a last time, so such a sleeper sees
// it and panics "lost wake-up" (rather than leaving loom a deadlock, which
// it reports by aborting the whole test binary). A passing model proves,
// for every interleaving within the bounds, that a sleeper is always woken.
//
// The asymmetric barrier is modelled as a SeqCst fence on both sides (loom
// models neither membarrier nor compiler fences): the fence in `prepare`
// stands for `fence` + `heavy_barrier`, and the one in `notify` for both
// `notify` and `notify_light` (whose compiler fence is made a full barrier
// by the waiters' membarrier), so one model covers both.
//
// Negative check: `event_count_model_catches_a_lost_wakeup_without_the_waiter_fence`
// runs the same harness over a copy of `EventCount` whose `prepare` lacks
// the fence, and must fail with "lost wake-up". Tried by hand on sync.rs
// itself: deleting the fence in `prepare`, or turning `notify`'s into a
// compiler fence (`notify_light` without the waiters' membarrier), makes
// all three `event_count_*` models fail with "lost wake-up: asleep on
// epoch 0, its condition true, the notifier gone".
// ---------------------------------------------------------------------------

use ipc_core::sync::EventCount;
use loom::sync::atomic::{fence, AtomicU32};
use loom::sync::{Condvar, Mutex};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// What the harness needs of an event count.
trait Event: Default + Send + Sync + 'static {
    /// `prepare`, returning the ticket's epoch.
    fn prepare(&self) -> u32;
    fn cancel(&self);
    fn notify(&self);
    /// The epoch and armed words now.
    fn words(&self) -> (u32, u32);
    fn sleepers(&self) -> u32;
}

impl Event for EventCount {
    fn prepare(&self) -> u32 {
        EventCount::prepare(self).loom_epoch()
    }
    fn cancel(&self) {
        EventCount::cancel(self)
    }
    fn notify(&self) {
        EventCount::notify(self)
    }
    fn words(&self) -> (u32, u32) {
        self.loom_words()
    }
    fn sleepers(&self) -> u32 {
        EventCount::sleepers(self)
    }
}

/// An event count, its waiters' condition (a count of items), and the
/// futex under it: the bucket lock guards "the notifier is gone".
#[derive(Default)]
struct Shared<E> {
    ev: E,
    items: AtomicU32,
    bucket: Mutex<bool>,
    queue: Condvar,
}

impl<E: Event> Shared<E> {
    /// FUTEX_WAIT on the epoch: sleeps while it equals `ticket`, checked
    /// under the bucket lock so that no wake slips in between. Panics if it
    /// would sleep for ever.
    fn futex_wait(&self, ticket: u32) {
        let mut notifier_gone = self.bucket.lock().unwrap();
        while self.ev.words().0 == ticket {
            assert!(
                !*notifier_gone,
                "lost wake-up: asleep on epoch {ticket}, its condition true, the notifier gone"
            );
            notifier_gone = self.queue.wait(notifier_gone).unwrap();
        }
    }

    /// FUTEX_WAKE of every sleeper.
    fn futex_wake(&self) {
        let _bucket = self.bucket.lock().unwrap();
        self.queue.notify_all();
    }

    /// The queue's waiting loop (queue.rs): look, arm, look again, sleep,
    /// until `items >= want`. Returns how many times it slept.
    fn wait_for(&self, want: u32) -> u32 {
        let mut sleeps = 0;
        loop {
            if self.items.load(Acquire) >= want {
                return sleeps;
            }
            let ticket = self.ev.prepare();
            if self.items.load(Acquire) >= want {
                self.ev.cancel();
                return sleeps;
            }
            sleeps += 1;
            // `wait`: the futex call, then `cancel`.
            self.futex_wait(ticket);
            self.ev.cancel();
        }
    }

    /// A notifier: `rounds` times, one more item (a Release store, as a
    /// commit's stamp) then a notify; then it is gone.
    fn notifier(&self, rounds: u32) {
        for _ in 0..rounds {
            self.items.fetch_add(1, Release);
            self.ev.notify();
            self.futex_wake();
        }
        *self.bucket.lock().unwrap() = true;
        self.queue.notify_all();
    }
}

/// `waiters` threads each wait for `want` items while one notifier makes
/// `rounds` of them; checks liveness (in `futex_wait`), then the words.
fn event_count_model<E: Event>(waiters: usize, want: u32, rounds: u32) {
    model(move || {
        let s = Arc::new(Shared::<E>::default());
        let ws: Vec<_> = (0..waiters)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || s.wait_for(want))
            })
            .collect();
        s.notifier(rounds);
        let slept: u32 = ws.into_iter().map(|w| w.join().unwrap()).sum();
        let (epoch, _armed) = s.ev.words();
        assert_eq!(s.ev.sleepers(), 0, "every waiter withdrew");
        assert!(epoch <= rounds, "one bump per notify at most");
        // Somebody slept, so some notify found it armed and bumped.
        assert!(slept == 0 || epoch >= 1);
        // `armed` may stay 1 (a waiter that armed, then found its
        // condition true, leaves it so): one futex wake later, no loss.
    });
}

#[test]
fn event_count_never_loses_a_wakeup() {
    event_count_model::<EventCount>(1, 1, 1);
}

#[test]
fn event_count_rearmed_waiter_gets_the_second_notify() {
    // Woken by the first notify, the waiter re-arms (the first notify
    // disarmed) and must be woken again by the second.
    event_count_model::<EventCount>(1, 2, 2);
}

#[test]
fn event_count_one_notify_wakes_two_waiters() {
    // One disarm and one bump must release both sleepers.
    event_count_model::<EventCount>(2, 1, 1);
}

/// `EventCount` as in sync.rs, but without the waiter's fence in `prepare`
/// (the heavy half of the barrier): the mutant the negative check runs.
#[derive(Default)]
struct UnfencedEventCount {
    epoch: AtomicU32,
    sleepers: AtomicU32,
    armed: AtomicU32,
}

impl Event for UnfencedEventCount {
    fn prepare(&self) -> u32 {
        let ticket = self.epoch.load(SeqCst);
        self.sleepers.fetch_add(1, SeqCst);
        self.armed.store(1, SeqCst);
        // fence(SeqCst) and heavy_barrier() removed.
        ticket
    }
    fn cancel(&self) {
        let _ = self
            .sleepers
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
    }
    fn notify(&self) {
        fence(SeqCst);
        if self.armed.load(Relaxed) != 0 && self.armed.swap(0, SeqCst) != 0 {
            self.epoch.fetch_add(1, SeqCst);
        }
    }
    fn words(&self) -> (u32, u32) {
        (self.epoch.load(SeqCst), self.armed.load(SeqCst))
    }
    fn sleepers(&self) -> u32 {
        self.sleepers.load(Relaxed)
    }
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn event_count_model_catches_a_lost_wakeup_without_the_waiter_fence() {
    event_count_model::<UnfencedEventCount>(1, 1, 1);
}

/// Commits a one-byte rendezvous offer `byte` tagged `tag` as `writer`;
/// returns its position.
fn offer(ring: &Ring<'_>, writer: u32, byte: u8, tag: u64) -> u64 {
    let mut c = ring
        .try_write(writer, 1, &mut Default::default(), true)
        .unwrap()
        .claimed()
        .expect("room for the offer");
    let pos = c.pos();
    ring.payload_mut(&mut c)[0] = byte;
    ring.commit(c, 1, tag).unwrap();
    pos
}

/// From the review of 1e6b3f4: a rendezvous offer whose sender is gone,
/// a receiver taking it while the successor reads the last tag. The tag
/// must be the offer's if the receiver got it, and 0 (withdrawn by the
/// look, `true`) if it did not: never 0 for a message that went in (the
/// look took a receiver's take between its check and its lock for a
/// scribbled tag position).
#[test]
fn the_last_offer_tag_is_the_offers_when_a_receiver_takes_it_meanwhile() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 1, 8));
        let ring = heap.shared_ring();
        offer(&ring, 0, 42, 7);
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.shared_ring(), 5));
        let found = loop {
            match ring.last_offer_tag(1, |_, _| true).unwrap() {
                Some(found) => break found,
                None => thread::yield_now(),
            }
        };
        match reader.join().unwrap() {
            Some(b) => {
                assert_eq!(b, 42);
                assert_eq!(found, (7, false), "the offer went in: its tag");
            }
            None => assert_eq!(found, (0, true), "withdrawn by the look"),
        }
    });
}

/// From the review of de382f9: a receiver reads the offer with `recv_if`
/// and declines it (put back) while its sender's deadline comes (retract).
/// Then the sender is gone and its successor looks at the last tag: if
/// the send returned Ok (retract false), the message must still be
/// delivered (the look withdrew it).
#[test]
fn an_offer_whose_send_returned_ok_is_never_withdrawn_by_a_look() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 1, 8));
        let ring = heap.shared_ring();
        let pos = offer(&ring, 0, 42, 7);
        let h = heap.clone();
        let reader = thread::spawn(move || {
            let ring = h.shared_ring();
            loop {
                match ring.try_claim_read(5, 64).unwrap() {
                    ReadAttempt::Claimed(c) => {
                        ring.put_back(c).unwrap();
                        return;
                    }
                    ReadAttempt::Busy => thread::yield_now(),
                    _ => return,
                }
            }
        });
        let withdrawn = loop {
            match ring.try_retract(pos, 0).unwrap() {
                Some(w) => break w,
                None => thread::yield_now(),
            }
        };
        reader.join().unwrap();
        let found = loop {
            match ring.last_offer_tag(1, |_, _| true).unwrap() {
                Some(found) => break found,
                None => thread::yield_now(),
            }
        };
        if !withdrawn {
            // The send returned Ok.
            assert_eq!(found, (7, false), "sent: its tag");
            assert_eq!(drain(&ring), vec![42], "sent: delivered");
        }
    });
}

/// Review of 1143e54: `try_retract`'s unlocked `kept_at` store of an
/// earlier offer (its sender C saw it held, then was preempted) lands
/// after the next offer's sender A stored `kept_at` for its own held
/// offer and returned Ok: A's mark is overwritten, the receiver declines
/// (put back), A is gone, and a look withdraws A's offer.
#[test]
fn a_late_kept_store_of_an_earlier_offer_does_not_unkeep_a_sent_offer() {
    model(|| {
        let heap = Arc::new(HeapPackedRing::new(PACKED_RING, 1, 8));
        let ring = heap.shared_ring();
        // C's offer, held by receiver R1.
        let pos0 = offer(&ring, 0, 41, 6);
        let ReadAttempt::Claimed(r1) = ring.try_claim_read(5, 64).unwrap() else {
            panic!("C's offer is there");
        };
        // C's deadline comes: its retract.
        let h = heap.clone();
        let sender_c = thread::spawn(move || {
            let ring = h.shared_ring();
            loop {
                match ring.try_retract(pos0, 2).unwrap() {
                    Some(w) => return w,
                    None => thread::yield_now(),
                }
            }
        });
        // R1 takes it; A offers the next message, receiver R2 holds it in
        // a recv_if callback when A's deadline comes.
        release(&ring, r1);
        let pos1 = offer(&ring, 1, 42, 7);
        let ReadAttempt::Claimed(r2) = ring.try_claim_read(6, 64).unwrap() else {
            panic!("A's offer is there");
        };
        let a_withdrawn = ring.try_retract(pos1, 3).unwrap();
        assert_eq!(a_withdrawn, Some(false), "held: A's send returns Ok");
        ring.put_back(r2).unwrap();
        assert!(!sender_c.join().unwrap(), "C's offer was taken");
        // A is gone; its successor looks at the last tag.
        let found = loop {
            match ring.last_offer_tag(9, |_, _| true).unwrap() {
                Some(found) => break found,
                None => thread::yield_now(),
            }
        };
        assert_eq!(
            (found, drain(&ring)),
            ((7, false), vec![42]),
            "A's send returned Ok: its offer must not be withdrawn"
        );
    });
}
