//! Review 4 reproducers for the packed engine of single-mode buffers
//! (`SharedBuffer::create_single`). Each test fails on the code it was
//! written against and passes once the defect it names is fixed.
//!
//! The scribbling tests play a hostile (or buggy) peer: they map the
//! segment's file themselves and store into the cursors of the header, as
//! any process that can open the segment may.

use std::mem::offset_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_core::layout::{Cursor, Header};
use ipc_core::{BufferConfig, RecvError, SendError, SharedBuffer};
use ipc_tests::{Mapping, ShmName};

fn tail_pos(m: &Mapping) -> &AtomicU64 {
    m.word(offset_of!(Header, tail) + offset_of!(Cursor, pos))
}

fn tail_count(m: &Mapping) -> &AtomicU64 {
    m.word(offset_of!(Header, tail) + offset_of!(Cursor, count))
}

fn single(name: &ShmName, capacity: u32, max_message: u32) -> SharedBuffer {
    SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity,
            max_message,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Defect: a message count in the cursors that fits no state (more than
/// `capacity` messages between the reader and the writer) is never
/// reported: the writer takes the ring for full for ever. A blocked
/// `send` waits without end (here: until its timeout) while the ring is
/// empty and the consumer alive, and `len()` reports a full buffer.
/// `checked_freed` checks the positions against the ring's size, but not
/// the counts against the limit.
#[test]
fn a_count_gap_above_the_capacity_is_reported_not_waited_on() {
    let name = ShmName::new("rv4-count-gap");
    let buf = single(&name, 8, 64);
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    for i in 0..3u8 {
        tx.send([i]).unwrap();
        assert_eq!(rx.recv().unwrap(), [i]);
    }
    let m = Mapping::new(&name);
    // Eight more messages than the reader has released: impossible with a
    // capacity of 8 and nothing queued.
    tail_count(&m).fetch_add(8, Ordering::Relaxed);
    let started = Instant::now();
    let r = tx.send_timeout(b"x", Duration::from_secs(2));
    let waited = started.elapsed();
    assert!(
        matches!(r, Err(SendError::Corrupt(..))),
        "send on a ring whose counts fit no state: {r:?} after {waited:?} (want Corrupt), \
         while len() says {} queued of 8 and the ring is empty",
        buf.len()
    );
}

/// Defect: the writer re-reads its own cursor from shared memory at
/// every claim and trusts it. A write cursor moved forward (by a
/// scribbler) leaves the reader waiting on the zero header at the old
/// position for ever: the producer's message is counted as queued but
/// never delivered, and once the producer has gone a blocking `recv`
/// neither delivers it, nor reports Corrupt, nor ends the stream
/// (`queued() > 0` keeps it from `Disconnected`): it waits without end.
#[test]
fn a_write_cursor_moved_forward_does_not_wedge_the_reader() {
    let name = ShmName::new("rv4-tail-fwd");
    let buf = single(&name, 8, 64);
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    tx.send(b"first").unwrap();
    assert_eq!(rx.recv().unwrap(), b"first");
    let m = Mapping::new(&name);
    tail_pos(&m).fetch_add(64, Ordering::Relaxed);
    // The writer may find the moved cursor (Corrupt) or write past it;
    // either way the reader must not be left waiting for ever.
    match tx.send(b"second") {
        Ok(()) | Err(SendError::Corrupt(..)) => {}
        Err(e) => panic!("send after the scribble: {e:?}"),
    }
    drop(tx);
    let started = Instant::now();
    let r = rx.recv_timeout(Duration::from_secs(2));
    let waited = started.elapsed();
    assert!(
        !matches!(r, Err(RecvError::Timeout)),
        "recv after the only producer left: {r:?} after {waited:?} \
         (want the message, Corrupt or Disconnected; a recv() without deadline hangs for ever); \
         status: {} queued, {} producers live",
        buf.status().len,
        buf.status().live(ipc_core::Role::Producer)
    );
}

/// Defect: `PackedRing::fits` computes `pos + need - freed.pos` and
/// `count - freed.count` unchecked, where `pos`/`count` are the write
/// cursor as read from shared memory now and `freed` the writer's private
/// copy of the reader's progress. A write cursor moved back below that
/// copy (a scribbler) makes the subtraction overflow: in a build with
/// overflow checks (every debug build, so the tests and debug CLIs) the
/// library panics inside `try_send` instead of returning Corrupt.
#[test]
fn a_write_cursor_moved_back_is_corrupt_not_a_panic() {
    let name = ShmName::new("rv4-tail-back");
    let buf = single(&name, 4, 64);
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    // Fill to the count limit, drain, and send again: the writer then
    // reads the reader's exact position into its private copy.
    for round in 0..3u8 {
        for i in 0..4u8 {
            tx.try_send([round, i]).unwrap();
        }
        assert!(matches!(tx.try_send(b"full"), Err(SendError::Full(_))));
        for i in 0..4u8 {
            assert_eq!(rx.recv().unwrap(), [round, i]);
        }
    }
    tx.try_send(b"again").unwrap();
    let m = Mapping::new(&name);
    tail_pos(&m).store(0, Ordering::Relaxed);
    tail_count(&m).store(0, Ordering::Relaxed);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (0..8)
            .map(|i| tx.try_send([i]).map_err(|e| format!("{e:?}")))
            .collect::<Vec<_>>()
    }));
    match r {
        Ok(results) => assert!(
            results
                .iter()
                .any(|r| r.as_ref().is_err_and(|e| e.contains("Corrupt"))),
            "sends with a write cursor moved back: {results:?} (want Corrupt)"
        ),
        Err(p) => panic!(
            "try_send panicked inside the library on a scribbled write cursor: {:?}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or(p.downcast_ref::<&str>().copied())
        ),
    }
}

/// Defect: the default budget (`BufferConfig::budget == 0`) is documented
/// as "room for `capacity` largest messages", and `Sender::is_full` as
/// "true if a send would wait now". The default ring is
/// `capacity × record_size(max_message)` rounded up to a power of two,
/// which forgets the 8-byte header the writer zeroes after the last
/// record (and the padding at the wrap): with 4 messages of 56 bytes the
/// ring is 256 bytes and holds only 3. `try_send` says Full at 3 of 4
/// queued while `is_full()` says false.
#[test]
fn the_default_budget_holds_capacity_largest_messages() {
    let name = ShmName::new("rv4-budget");
    let buf = single(&name, 4, 56);
    let mut tx = buf.producer().unwrap();
    let big = [7u8; 56];
    let mut sent = 0;
    let mut refused = None;
    for _ in 0..4 {
        match tx.try_send(big) {
            Ok(()) => sent += 1,
            Err(e) => {
                refused = Some(format!("{e:?}"));
                break;
            }
        }
    }
    assert_eq!(
        sent,
        4,
        "a single buffer of capacity 4 and 56-byte messages (default budget, {} bytes of ring) \
         took {sent} largest messages; then {:?}, with len() {} and is_full() {}",
        buf.status().budget,
        refused,
        tx.len(),
        tx.is_full()
    );
}

/// The same defect at the wrap: capacity 2 of 112-byte messages, default
/// budget. With one message queued, `try_send` right after a `recv`
/// fails (the record would need padding to the ring's end first).
#[test]
fn the_default_budget_holds_capacity_largest_messages_across_the_wrap() {
    let name = ShmName::new("rv4-budget-wrap");
    let buf = single(&name, 2, 112);
    let mut tx = buf.producer().unwrap();
    let mut rx = buf.consumer().unwrap();
    let big = [1u8; 112];
    let mut problems = vec![];
    for i in 0..6 {
        // Keep one queued, then add a second: never more than capacity.
        if i == 0 {
            tx.try_send(big).unwrap();
        }
        match tx.try_send(big) {
            Ok(()) => {}
            Err(e) => problems.push(format!(
                "round {i}: try_send with {} of 2 queued: {e:?} (is_full() {})",
                tx.len(),
                tx.is_full()
            )),
        }
        if rx.try_recv().is_err() {
            break;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}
