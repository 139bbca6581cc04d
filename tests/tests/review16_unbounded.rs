//! Review 16: unbounded chains of one-message blocks under load
//! (`review13_unbounded::stress_one_message_blocks` lost one message of
//! 20 000, uncounted, about once in six loaded runs, and sometimes left a
//! spare behind). Each test stages, with the pause points of the
//! `internals` feature (`ipc_core::pause`), the interleaving that a
//! descheduled thread made in the traced failures: a thread stops where
//! it was descheduled and goes on when the test lets it.
//!
//! Bounded waits only (a hang fails the test); no timing assertions.

use std::sync::mpsc;
use std::time::Duration;

use ipc_core::{Consumer, Producer, RecvError, SharedBuffer};
use ipc_tests::{within, ShmName};

mod unbounded_common;
use unbounded_common::*;

/// Long enough for a loaded 2-core machine.
const HANG: Duration = Duration::from_secs(20);

/// An unbounded buffer whose chained blocks hold one message each.
fn one_message_blocks(name: &ShmName) -> SharedBuffer {
    SharedBuffer::create_unbounded(
        name.as_str(),
        &ipc_core::BufferConfig {
            capacity: 1,
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A thread running `f` that stops at each of `points` in turn (the next
/// time it passes that pause point), tells the test, and waits there
/// until the test lets it go.
struct Staged<T> {
    at: mpsc::Receiver<&'static str>,
    go: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<T>,
}

impl<T: Send + 'static> Staged<T> {
    fn spawn(points: &[&'static str], f: impl FnOnce() -> T + Send + 'static) -> Staged<T> {
        let (at_tx, at) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let mut points: std::collections::VecDeque<_> = points.iter().copied().collect();
        let thread = std::thread::spawn(move || {
            ipc_core::pause::set(move |p| {
                if points.front() == Some(&p) {
                    points.pop_front();
                    let _ = at_tx.send(p);
                    // Let go by the test, or (the test failed) by its end.
                    let _ = go_rx.recv_timeout(HANG);
                }
            });
            let out = f();
            ipc_core::pause::clear();
            out
        });
        Staged { at, go, thread }
    }

    /// Waits until the thread stops at `point`.
    fn reaches(&self, point: &str) {
        let got = self.at.recv_timeout(HANG);
        assert_eq!(got, Ok(point), "the staged thread did not stop at {point}");
    }

    fn go(&self) {
        self.go.send(()).unwrap();
    }

    fn join(self) -> T {
        drop(self.go);
        let thread = self.thread;
        within(HANG, "the staged thread", move || thread.join().unwrap())
    }
}

/// Receives one message (parsed).
fn take(r: &mut Consumer) -> (u32, u64) {
    parse(&r.recv_timeout(HANG).unwrap())
}

/// Defect: a sender that read the chain's tail index `k` and was
/// descheduled before opening block `k` (`channel.rs`
/// `Tx::claim_unbounded` → `open_tail_block`) wrote its message into
/// whatever it found under `k`'s name later, without checking that the
/// receivers had not passed `k` meanwhile. A name behind the head is
/// made again by another descheduled sender, one that saw the tail at
/// `k - 1` before `k` was made (`Tx::grow`: it renames a spare to `k`'s
/// name, or creates `k` afresh, and only then finds the head past `k`
/// and removes it); the first one to open the renamed spare moves it on
/// to a fresh lap serving `k` (`Queue::check_block`). The late sender's
/// send succeeded, and the message was in no block the receivers would
/// ever read: lost, counted nowhere, the stream ending without it (as
/// traced in the stress test: message (1, 475) in a spare renamed to
/// block 1617 after the receivers had removed 1617).
///
/// Here: blocks 0, 1, 2 hold s0..s2 and are read (block 1 becomes a
/// spare); sender B finds block 2 full and stops in `grow` having seen
/// the tail at 2; s3 goes into block 3 (the spare), sender D reads the
/// tail index 3 and stops; s4 goes into block 4, the receiver reads s3
/// and s4 (blocks 2 and 3 become spares); B goes on, renames the spare
/// that was block 2 to block 3's name (moved on to a fresh lap) and
/// stops before it finds the head past 3; D goes on and sends.
#[test]
fn a_sender_late_to_a_block_the_receivers_passed_loses_no_message() {
    let name = ShmName::new("rv16-late");
    let buf = one_message_blocks(&name);
    let mut r = buf.consumer().unwrap();
    let mut s = buf.producer().unwrap();
    let mut b: Producer = buf.producer().unwrap();
    let mut d: Producer = buf.producer().unwrap();
    for i in 0..3 {
        s.send(msg(0, i)).unwrap();
    }
    for i in 0..3 {
        assert_eq!(take(&mut r), (0, i));
    }
    let late_grower = Staged::spawn(&["grow: tail checked", "grow: block made"], move || {
        b.send(msg(1, 0)).map_err(|e| e.to_string())
    });
    late_grower.reaches("grow: tail checked");
    s.send(msg(0, 3)).unwrap();
    let late_sender = Staged::spawn(&["send: tail index read"], move || {
        d.send(msg(2, 0)).map_err(|e| e.to_string())
    });
    late_sender.reaches("send: tail index read");
    s.send(msg(0, 4)).unwrap();
    assert_eq!(take(&mut r), (0, 3));
    assert_eq!(take(&mut r), (0, 4));
    late_grower.go();
    late_grower.reaches("grow: block made");
    late_sender.go();
    assert_eq!(late_sender.join(), Ok(()), "D's send");
    late_grower.go();
    assert_eq!(late_grower.join(), Ok(()), "B's send");
    drop(s);
    let mut got = Vec::new();
    let end = loop {
        match r.recv_timeout(HANG) {
            Ok(m) => got.push(parse(&m)),
            Err(e) => break e,
        }
        assert!(got.len() <= 2, "more messages than were sent: {got:?}");
    };
    got.sort();
    let st = buf.status();
    assert_eq!(
        (got, end),
        (vec![(1, 0), (2, 0)], RecvError::Disconnected),
        "B's and D's messages, then the end of the stream: {st:?}"
    );
    assert_eq!((st.lost_reads, st.abandoned_writes), (0, 0), "{st:?}");
    drop(r);
    assert_eq!(chain_files(&name), Vec::<String>::new());
}

/// Defect: a spare left in /dev/shm after the end of the stream (the
/// stress test's other failure: `files left [NAME.b00]`). A receiver
/// giving back a block it moved the head past (`queue.rs`
/// `Queue::retire`) looked at the senders' roster, was descheduled, and
/// renamed the block to a spare after the last sender had left and
/// another receiver had seen the end of the stream and removed the
/// spares (`retire_tail_block` → `drop_spares`): nothing removes that
/// spare any more, and the idle queue keeps a block's memory.
#[test]
fn a_block_given_back_as_the_stream_ends_leaves_no_spare() {
    let name = ShmName::new("rv16-spare");
    let buf = one_message_blocks(&name);
    let mut r1 = buf.consumer().unwrap();
    let mut r2 = buf.consumer().unwrap();
    let mut s = buf.producer().unwrap();
    for i in 0..3 {
        s.send(msg(0, i)).unwrap();
    }
    // r1 reads s0 and s1, then moves the head past block 1 and stops
    // giving it back, having seen a sender attached.
    let retirer = Staged::spawn(&["retire: senders looked at"], move || {
        let got = (take(&mut r1), take(&mut r1));
        (got, r1.recv_timeout(HANG))
    });
    retirer.reaches("retire: senders looked at");
    drop(s);
    assert_eq!(take(&mut r2), (0, 2));
    assert_eq!(r2.recv_timeout(HANG), Err(RecvError::Disconnected));
    retirer.go();
    let (got, end) = retirer.join();
    assert_eq!((got, end), (((0, 0), (0, 1)), Err(RecvError::Disconnected)));
    drop(r2);
    assert_eq!(
        chain_files(&name),
        Vec::<String>::new(),
        "the ended, idle queue keeps a block file"
    );
}
