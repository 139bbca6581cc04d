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

/// A single-mode buffer, or the general one.
fn create(name: &ShmName, config: &BufferConfig, single: bool) -> SharedBuffer {
    if single {
        SharedBuffer::create_single(name.as_str(), config)
    } else {
        SharedBuffer::create(name.as_str(), config)
    }
    .expect("create")
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
        let buf = create(&name, &BufferConfig::default(), single);
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
        // The stall's sleep, one more while the budget grows back, and
        // slack for a sender thread descheduled past the full budget once
        // or twice (two sleeps each): fewer than half, where a budget that
        // stays halved sleeps for every message.
        assert!(
            wakes <= MESSAGES / 2,
            "single {single}: the receiver slept for {wakes} of {} messages",
            MESSAGES + 1
        );
        drop(buf);
        SharedBuffer::unlink(name.as_str()).expect("unlink");
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

#[test]
fn a_sender_waiting_on_a_slow_receiver_does_not_spin_its_budget_away() {
    // A sender's spin sees only the room the receiver publishes lazily (a
    // quarter of the ring at a time); its exact look before sleeping sees
    // each message freed. Room found by that look, or after a sleep, is
    // no sign that spinning would have found it: a receiver freeing one
    // message every GAP must not keep the sender spinning most of its
    // budget for each send. Measured: the sender thread's CPU time over
    // its wall time while it keeps pace with the receiver.
    const BUDGET: Duration = Duration::from_millis(100);
    const GAP: Duration = Duration::from_millis(10);
    const WARM_UP: u32 = 20;
    const MEASURED: u32 = 30;
    for single in [true, false] {
        let name = ShmName::new("spin-budget-tx");
        let config = BufferConfig {
            capacity: 64,
            ..BufferConfig::default()
        };
        let buf = create(&name, &config, single);
        let mut tx = buf.producer().expect("producer");
        tx.set_spin_policy(SpinPolicy {
            spin: BUDGET,
            yields: 0,
        });
        let mut rx = buf.consumer().expect("consumer");
        for i in 0..config.capacity {
            tx.try_send(i.to_le_bytes())
                .expect("room in the empty ring");
        }
        let total = config.capacity + WARM_UP + MEASURED;
        let receiver = std::thread::spawn(move || {
            for i in 0..total {
                std::thread::sleep(GAP);
                assert_eq!(rx.recv().expect("recv"), i.to_le_bytes());
            }
        });
        for i in config.capacity..config.capacity + WARM_UP {
            tx.send(i.to_le_bytes()).expect("send");
        }
        let (wall, cpu) = (std::time::Instant::now(), thread_cpu());
        for i in config.capacity + WARM_UP..total {
            tx.send(i.to_le_bytes()).expect("send");
        }
        let busy = (thread_cpu() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
        receiver.join().expect("receiver");
        // Spinning in vain for most of each wait is near 1; a budget that
        // shrinks as it should spins about a sixth of each gap.
        assert!(
            busy < 0.5,
            "single {single}: the sender was busy {:.0}% of the time it waited on a slow receiver",
            busy * 100.0
        );
        drop(tx);
        drop(buf);
        SharedBuffer::unlink(name.as_str()).expect("unlink");
    }
}
