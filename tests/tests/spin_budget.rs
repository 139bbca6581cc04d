//! The adaptive spin budget of a blocking receive: after one long wait
//! has shrunk it, a peer that answers within the policy's full budget is
//! met spinning again, rather than every wait sleeping from then on (and
//! paying a futex wake-up, 50 µs or more on a hypervisor, each time).
//!
//! What is observed is the segment's own record of sleeps: the epoch of
//! its `data_ready` event count moves once for each wake-up a sender had
//! to make for a receiver that went to sleep (or was about to).

use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ipc_core::layout::Header;
use ipc_core::sync::SpinPolicy;
use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::ShmName;

/// The `data_ready` epoch, read from the segment's file.
fn data_ready_epoch(name: &ShmName) -> u32 {
    let file = std::fs::File::open(name.path()).expect("segment file");
    let mut word = [0u8; 4];
    file.read_exact_at(&mut word, offset_of!(Header, data_ready) as u64)
        .expect("read the event count");
    u32::from_ne_bytes(word)
}

#[test]
fn a_receiver_met_within_its_full_spin_budget_spins_again_after_a_long_wait() {
    // The receiver spins at most BUDGET. One stall of three times that
    // makes it sleep and halves its budget; then every message comes
    // GAP after the last, more than the halved budget and well inside
    // the full one (the margin absorbs a late sleeper on a busy machine).
    const BUDGET: Duration = Duration::from_millis(200);
    const STALL: Duration = Duration::from_millis(600);
    const GAP: Duration = Duration::from_millis(125);
    const MESSAGES: u32 = 10;
    for single in [true, false] {
        let name = ShmName::new("spin-budget");
        let config = BufferConfig::default();
        let buf = if single {
            SharedBuffer::create_single(name.as_str(), &config)
        } else {
            SharedBuffer::create(name.as_str(), &config)
        }
        .expect("create");
        let mut rx = buf.consumer().expect("consumer");
        rx.set_spin_policy(SpinPolicy {
            spin: BUDGET,
            yields: 0,
        });
        let mut tx = buf.producer().expect("producer");
        let before = data_ready_epoch(&name);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(STALL);
            tx.send(b"after the stall").expect("send");
            for i in 0..MESSAGES {
                std::thread::sleep(GAP);
                tx.send(i.to_le_bytes()).expect("send");
            }
        });
        assert_eq!(rx.recv().expect("recv"), b"after the stall");
        for i in 0..MESSAGES {
            assert_eq!(rx.recv().expect("recv"), i.to_le_bytes());
        }
        sender.join().expect("sender");
        let wakes = data_ready_epoch(&name).wrapping_sub(before);
        // The stall's sleep, at most one more while the budget grows back,
        // and slack for a sender thread descheduled past the full budget
        // once or twice: far from one sleep per message.
        assert!(
            wakes <= 4,
            "single {single}: the receiver slept for {wakes} of {} messages",
            MESSAGES + 1
        );
        drop(buf);
        SharedBuffer::unlink(name.as_str()).expect("unlink");
    }
}
