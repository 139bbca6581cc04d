//! Model checks of the ring and the semaphore with loom, on the in-process
//! backend ([`HeapRing`]): every interleaving (up to a preemption bound) of
//! a few threads is explored.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ipc-core --release --test loom`
#![cfg(loom)]

use ipc_core::ring::{HeapRing, ReadAttempt, Ring};
use ipc_core::sync::{Deadline, Semaphore, SpinPolicy};
use loom::sync::Arc;
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    // Waiting loops yield to the other threads; give their retries room.
    b.max_branches = 100_000;
    b.check(f);
}

/// Writes one byte if there is room now.
fn try_send(ring: &Ring<'_>, owner: u32, byte: u8) -> bool {
    match ring.try_claim_write(owner, &mut 0).unwrap() {
        Some(mut c) => {
            ring.payload_mut(&mut c)[0] = byte;
            ring.commit(c, 1, owner);
            true
        }
        None => false,
    }
}

/// Reads one byte if one is committed now.
fn try_recv(ring: &Ring<'_>, owner: u32) -> Option<u8> {
    match ring.try_claim_read(owner, 64).unwrap() {
        ReadAttempt::Claimed(c) => {
            let b = ring.payload_of(&c)[0];
            ring.release(c);
            Some(b)
        }
        ReadAttempt::Empty => None,
        ReadAttempt::TooLong(n) => panic!("length {n}"),
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
        let heap = Arc::new(HeapRing::new(2, 2));
        let writers: Vec<_> = (0..2u8)
            .map(|w| {
                let heap = heap.clone();
                thread::spawn(move || assert!(try_send(&heap.ring(), w as u32, 10 + w)))
            })
            .collect();
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.ring(), 5));
        for w in writers {
            w.join().unwrap();
        }
        let mut got: Vec<u8> = reader.join().unwrap().into_iter().collect();
        got.extend(drain(&heap.ring()));
        got.sort_unstable();
        assert_eq!(got, [10, 11]);
    });
}

#[test]
fn wrap_around_keeps_order_and_never_overwrites() {
    model(|| {
        let heap = Arc::new(HeapRing::new(2, 2));
        let ring = heap.ring();
        assert!(try_send(&ring, 0, 0) && try_send(&ring, 0, 1));
        let h = heap.clone();
        // The third message fits only once the reader released slot 0.
        let writer = thread::spawn(move || try_send(&h.ring(), 0, 2));
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.ring(), 1));
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
        let heap = Arc::new(HeapRing::new(2, 2));
        let ring = heap.ring();
        assert!(try_send(&ring, 0, 1) && try_send(&ring, 0, 2));
        let readers: Vec<_> = (0..2u32)
            .map(|r| {
                let heap = heap.clone();
                thread::spawn(move || try_recv(&heap.ring(), 10 + r))
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
        let heap = Arc::new(HeapRing::new(2, 2));
        // Owner 7 claims a slot and dies without committing.
        let ring = heap.ring();
        let _dead = ring.try_claim_write(7, &mut 0).unwrap().unwrap();
        let h = heap.clone();
        let live = thread::spawn(move || assert!(try_send(&h.ring(), 1, 42)));
        let h = heap.clone();
        let reaper = thread::spawn(move || h.ring().recover_owner(7).abandoned_writes);
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.ring(), 3));
        live.join().unwrap();
        assert_eq!(reaper.join().unwrap(), 1);
        let mut got: Vec<u8> = reader.join().unwrap().into_iter().collect();
        got.extend(drain(&ring));
        assert_eq!(got, [42]);
    });
}

#[test]
fn dead_reader_slot_returns_to_writers() {
    model(|| {
        let heap = Arc::new(HeapRing::new(2, 2));
        let ring = heap.ring();
        assert!(try_send(&ring, 0, 1) && try_send(&ring, 0, 2));
        // Owner 9 claims message 1 and dies holding it.
        let ReadAttempt::Claimed(_held) = ring.try_claim_read(9, 64).unwrap() else {
            panic!("expected a message")
        };
        let h = heap.clone();
        let reaper = thread::spawn(move || h.ring().recover_owner(9).lost_reads);
        let h = heap.clone();
        let writer = thread::spawn(move || try_send(&h.ring(), 0, 3));
        let h = heap.clone();
        let reader = thread::spawn(move || try_recv(&h.ring(), 4));
        assert_eq!(reaper.join().unwrap(), 1);
        let sent = writer.join().unwrap();
        let mut got: Vec<u8> = reader.join().unwrap().into_iter().collect();
        got.extend(drain(&ring));
        if !sent {
            // Full until the reaper released the slot: there is room now.
            assert!(try_send(&ring, 0, 3));
            got.extend(drain(&ring));
        }
        assert_eq!(got, [2, 3]);
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
