//! The packed engine of single-mode buffers, through the public API and
//! the tools: memory sized in bytes, exact bounds, batches, claims of a
//! given length, and the CLI's zero-copy stdin.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use ipc_core::{BufferConfig, Deadline, RecvError, SendError, SharedBuffer};
use ipc_tests::{cmd, ChildGuard, ShmName};

fn single(name: &ShmName, capacity: u32, max_message: u32, budget: u64) -> SharedBuffer {
    SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity,
            max_message,
            budget,
            ..Default::default()
        },
    )
    .expect("create")
}

#[test]
fn a_buffer_for_large_messages_maps_its_budget_not_capacity_times_max() {
    // 64 queued 100-byte messages, messages of up to 1 MiB: the old slot
    // layout mapped 64 × 1 MiB; the packed ring maps its budget.
    let name = ShmName::new("pk-mem");
    let buf = single(&name, 64, 1 << 20, 0);
    let file = std::fs::metadata(name.path()).unwrap().len();
    let status = buf.status();
    assert_eq!(status.budget, 4 << 20, "default budget");
    assert!(file <= (4 << 20) + (64 << 10), "file of {file} bytes");
    let mut tx = buf.producer().unwrap();
    for i in 0..64u8 {
        tx.try_send([i; 100]).expect("64 small messages fit");
    }
    assert!(matches!(tx.try_send([0; 100]), Err(SendError::Full(_))));
    let status = buf.status();
    assert_eq!(status.len, 64);
    assert_eq!(status.bytes_used, 64 * (8 + 104));
    let mut rx = buf.consumer().unwrap();
    assert_eq!(rx.recv().unwrap(), [0; 100]);
    // Room again at once (crossbeam's bound: exact, not lazy).
    tx.try_send([64; 100]).unwrap();
    // A message of the maximum size still fits beside what is queued.
    tx.try_send(vec![9u8; 1 << 20]).unwrap_err(); // 64 queued: full by count
    for _ in 0..63 {
        rx.recv().unwrap();
    }
    tx.try_send(vec![9u8; 1 << 20])
        .expect("a max-size message fits");
    assert_eq!(rx.recv().unwrap(), [64; 100]);
    assert_eq!(rx.recv().unwrap().len(), 1 << 20);
    drop((tx, rx, buf));
    SharedBuffer::unlink(name.as_str()).unwrap();
}

#[test]
fn bytes_bound_before_the_count_when_messages_are_large() {
    let name = ShmName::new("pk-bytes");
    // A 4 KiB ring: 1000-byte messages take 1008 bytes: three fit (the
    // fourth would leave no room for the header zeroed after it).
    let buf = single(&name, 100, 1000, 4096);
    let mut tx = buf.producer().unwrap();
    let mut n = 0;
    while tx.try_send([1u8; 1000]).is_ok() {
        n += 1;
        assert!(n < 100);
    }
    assert_eq!(n, 4096 / 1008 - usize::from(4096 % 1008 < 8));
    assert!(buf.status().bytes_used <= 4096);
    let mut rx = buf.consumer().unwrap();
    rx.recv().unwrap();
    // The ring's end holds 64 bytes: the next large record pads them and
    // starts at 0, so it needs the second one's bytes too. A small one
    // fits at once.
    assert!(matches!(tx.try_send([2u8; 1000]), Err(SendError::Full(_))));
    tx.try_send([3u8; 40]).expect("a small one fits");
    rx.recv().unwrap();
    tx.try_send([2u8; 1000]).expect("room after two receives");
    drop((tx, rx, buf));
    SharedBuffer::unlink(name.as_str()).unwrap();
}

#[test]
fn budgets_too_small_or_too_large_are_refused_with_the_minimum() {
    let name = ShmName::new("pk-small");
    let err = SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity: 8,
            max_message: 4096,
            budget: 8192,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least 16384"), "{err}");
    assert!(!name.path().exists(), "nothing created");
    let err = SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            budget: 1 << 40,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("above the limit"), "{err}");
    // The tools say so too, with the usage exit code, creating nothing.
    let out = cmd("ipcctl")
        .args(["create", name.as_str(), "--single", "--max-message", "4K"])
        .args(["--budget", "8K"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16384"));
    assert!(!name.path().exists());
    let out = cmd("ipcctl")
        .args([
            "create",
            name.as_str(),
            "--budget",
            "1M",
            "--capacity",
            "unbounded",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unbounded queue has no ring to budget: {out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unbounded"));
    assert!(!name.path().exists());
}

#[test]
fn a_budget_is_rounded_down_and_shown_by_status() {
    let name = ShmName::new("pk-status");
    let out = cmd("ipcctl")
        .args(["create", name.as_str(), "--single", "--max-message", "1K"])
        .args(["--budget", "100K"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let buf = SharedBuffer::open(name.as_str()).unwrap();
    assert_eq!(buf.status().budget, 64 << 10);
    buf.producer().unwrap().send(b"hello").unwrap();
    let out = cmd("ipcctl")
        .args(["status", name.as_str()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("memory:         16 of 65536 bytes used"),
        "{text}"
    );
    drop(buf);
    SharedBuffer::unlink(name.as_str()).unwrap();
}

#[test]
fn batches_go_in_order_and_stop_at_full_with_a_count() {
    let name = ShmName::new("pk-batch");
    let buf = single(&name, 8, 64, 0);
    let mut tx = buf.producer().unwrap();
    let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; i as usize]).collect();
    let err = tx
        .send_batch_until(msgs.iter(), Deadline::Now)
        .expect_err("10 messages into 8");
    assert_eq!(err.sent, 8);
    assert!(matches!(err.error, SendError::Full(m) if m == &msgs[8]));
    let mut rx = buf.consumer().unwrap();
    let mut got = Vec::new();
    assert_eq!(rx.recv_batch(5, |m| got.push(m.to_vec())).unwrap(), 5);
    assert_eq!(rx.try_recv_batch(100, |m| got.push(m.to_vec())).unwrap(), 3);
    assert_eq!(got, msgs[..8]);
    assert_eq!(rx.try_recv_batch(100, |_| ()), Err(RecvError::Empty));
    drop(tx);
    assert_eq!(rx.recv_batch(100, |_| ()), Err(RecvError::Disconnected));
    drop((rx, buf));
    SharedBuffer::unlink(name.as_str()).unwrap();
}

#[test]
fn a_blocking_batch_streams_through_a_small_ring_across_threads() {
    for flavor in ["single", "general"] {
        let name = ShmName::new("pk-stream");
        let cfg = BufferConfig {
            capacity: 16,
            max_message: 200,
            budget: 1024,
            ..Default::default()
        };
        let buf = match flavor {
            "single" => SharedBuffer::create_single(name.as_str(), &cfg),
            _ => SharedBuffer::create(name.as_str(), &cfg),
        }
        .unwrap();
        let b = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut rx = b.consumer().unwrap();
            let mut next = 0u32;
            loop {
                match rx.recv_batch(7, |m| {
                    let n = (next % 200) as usize;
                    assert_eq!(m.len(), n, "message {next}");
                    assert!(m.iter().all(|&x| x == next as u8), "message {next}");
                    next += 1;
                }) {
                    Ok(_) => {}
                    Err(RecvError::Disconnected) => return next,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut tx = buf.producer().unwrap();
        for chunk in (0..20_000u32).collect::<Vec<_>>().chunks(50) {
            let msgs = chunk.iter().map(|&i| vec![i as u8; (i % 200) as usize]);
            assert_eq!(tx.send_batch(msgs).unwrap(), chunk.len());
        }
        drop(tx);
        assert_eq!(reader.join().unwrap(), 20_000, "{flavor}");
        drop(buf);
        SharedBuffer::unlink(name.as_str()).unwrap();
    }
}

#[test]
fn a_claim_of_a_given_length_needs_only_that_room_and_shrinks() {
    let name = ShmName::new("pk-claim");
    let buf = single(&name, 100, 1000, 4096);
    let mut tx = buf.producer().unwrap();
    // Four max-size messages do not fit; forty 16-byte claims do.
    for i in 0..40u8 {
        let mut slot = tx.claim_len(16, Deadline::Now).expect("room");
        assert_eq!(slot.buf().len(), 16);
        slot.buf()[..3].copy_from_slice(&[i; 3]);
        slot.commit(3).unwrap();
    }
    assert!(matches!(
        tx.claim_len(1001, Deadline::Now),
        Err(SendError::TooLarge {
            len: 1001,
            max: 1000,
            ..
        })
    ));
    // A claim dropped unused publishes nothing.
    drop(tx.claim_len(10, Deadline::Now).unwrap());
    let mut rx = buf.consumer().unwrap();
    for i in 0..40u8 {
        assert_eq!(rx.try_recv().unwrap(), [i; 3]);
    }
    assert_eq!(rx.try_recv(), Err(RecvError::Empty));
    assert_eq!(buf.status().abandoned_writes, 0);
    drop((tx, rx, buf));
    SharedBuffer::unlink(name.as_str()).unwrap();
}

#[test]
fn the_producer_streams_stdin_into_a_single_buffer_byte_for_byte() {
    let name = ShmName::new("pk-cli");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut producer = ChildGuard::new(
        cmd("producer")
            .args(["--segment", name.as_str(), "--create", "--single"])
            .args(["--max-message", "4K", "--capacity", "16"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = producer.0.as_mut().unwrap().stdin.take().unwrap();
    ipc_tests::wait_until("the segment", || name.path().exists());
    let consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", name.as_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read while we write: the pipes hold far less than the data.
    let reading = std::thread::spawn(move || consumer.output_timeout(Duration::from_secs(60)));
    // Written in uneven pieces, with pauses: the producer waits for input
    // without holding a claim (status shows nothing being written).
    for piece in data.chunks(777_777) {
        stdin.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let s = SharedBuffer::open(name.as_str()).unwrap().status();
        assert_eq!(s.writing, 0, "no claim held while stdin is idle");
    }
    drop(stdin);
    let out = reading.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout == data,
        "{} bytes of {}",
        out.stdout.len(),
        data.len()
    );
    assert!(producer
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .success());
}

#[test]
fn a_batch_asks_for_each_message_only_after_the_one_before_is_queued() {
    // ipc-bridge records a message as delivered when the batch asks for
    // the next one: that is sound only if the one before is queued by then.
    for flavor in ["single", "general"] {
        let name = ShmName::new("pk-lazy");
        let cfg = BufferConfig {
            capacity: 64,
            max_message: 100,
            budget: 1 << 16,
            ..Default::default()
        };
        let buf = if flavor == "single" {
            SharedBuffer::create_single(name.as_str(), &cfg)
        } else {
            SharedBuffer::create(name.as_str(), &cfg)
        }
        .expect("create");
        let mut tx = buf.producer().unwrap();
        let mut seen = Vec::new();
        let msgs = (0..20u64).map(|i| {
            seen.push((i, buf.status().len));
            vec![i as u8; 8]
        });
        assert_eq!(tx.send_batch(msgs).unwrap(), 20, "{flavor}");
        for (i, queued) in seen {
            assert_eq!(
                queued, i,
                "{flavor}: message {i} asked for with {queued} queued"
            );
        }
        drop(tx);
        drop(buf);
        SharedBuffer::unlink(name.as_str()).unwrap();
    }
}
