//! Scribbled words that loops depend on: the chain indices of an unbounded
//! queue and the roster of attached processes. Before the fixes, a tail
//! index scribbled to 2^24 made `status` walk 16 million missing blocks
//! (71 s), a head index above the tail made the next sender create and
//! delete blocks for ever, and a roster bit with no live entry behind it
//! made a consumer wait for ever for end of stream. Now each is validated
//! (or repaired) before it is used: the operations return, with `Corrupt`
//! or the right answer. The hang limits below are generous bounds, not
//! timings.

use std::fs::OpenOptions;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::layout::{Chain, Header};
use ipc_core::{RecvError, SendError};
use ipc_tests::within;
use ipc_tests::{unbounded_mailbox, ShmName};

const LIMIT: Duration = Duration::from_secs(20);

fn write_u64(name: &ShmName, offset: usize, value: u64) {
    let file = OpenOptions::new().write(true).open(name.path()).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset as u64)
        .unwrap();
}

fn read_u64(name: &ShmName, offset: usize) -> u64 {
    let file = OpenOptions::new().read(true).open(name.path()).unwrap();
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, offset as u64).unwrap();
    u64::from_le_bytes(word)
}

#[test]
fn a_scribbled_tail_block_index_is_refused_not_walked() {
    let name = ShmName::new("hc-tail");
    let mb = unbounded_mailbox(&name);
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    tx.send(b"before").unwrap();
    write_u64(
        &name,
        offset_of!(Header, chain) + offset_of!(Chain, tail_block),
        1 << 24,
    );
    let status = within(LIMIT, "status", {
        let mb = mb.clone();
        move || mb.status()
    });
    assert_eq!(status.chain_blocks, 0, "an impossible chain is not counted");
    // The receiver stays attached (handed back), so senders are not told
    // that everyone has gone.
    let (got, _rx) = within(LIMIT, "recv", move || {
        (rx.recv_timeout(Duration::from_secs(2)), rx)
    });
    // The message in block 0 may come first; the chain itself is refused.
    assert!(
        matches!(got, Ok(_) | Err(RecvError::Corrupt(_))),
        "recv gave {got:?}"
    );
    let sent = within(LIMIT, "send", move || {
        (0..5000)
            .map(|i| tx.send(format!("m{i}")))
            .find(|r| r.is_err())
    });
    assert!(
        matches!(sent, Some(Err(SendError::Corrupt(..)))),
        "a sender past block 0 must see the chain corrupt, got {sent:?}"
    );
}

#[test]
fn a_head_block_index_above_the_tail_is_refused() {
    let name = ShmName::new("hc-head");
    let mb = unbounded_mailbox(&name);
    let mut tx = mb.sender().unwrap();
    let _rx = mb.receiver().unwrap();
    write_u64(
        &name,
        offset_of!(Header, chain) + offset_of!(Chain, head_block),
        7,
    );
    let sent = within(LIMIT, "send", move || {
        (0..5000)
            .map(|i| tx.send(format!("m{i}")))
            .find(|r| r.is_err())
    });
    assert!(
        matches!(sent, Some(Err(SendError::Corrupt(..)))),
        "got {sent:?}"
    );
    // Nothing was left behind by a create-and-delete loop.
    let blocks = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{}.b", name.as_str()))
        })
        .count();
    assert!(blocks <= 1, "{blocks} chain blocks left");
}

#[test]
fn a_phantom_producer_bit_does_not_hold_back_end_of_stream() {
    let name = ShmName::new("hc-phantom");
    let buf = SharedBuffer::create(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rx = buf.consumer().unwrap();
    let mut tx = buf.producer().unwrap();
    tx.send(b"only").unwrap();
    // A producer bit for entry 40, which nobody holds (the roster's first
    // word is the producers' mask).
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    let at = offset_of!(Header, roster) as u64;
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, at).unwrap();
    let mask = u64::from_le_bytes(word) | (1 << 40);
    file.write_all_at(&mask.to_le_bytes(), at).unwrap();
    drop(tx);
    let got = within(LIMIT, "the consumer's end of stream", move || {
        let first = rx.recv_timeout(Duration::from_secs(5));
        let second = rx.recv_timeout(Duration::from_secs(5));
        (first, second)
    });
    assert_eq!(got.0, Ok(b"only".to_vec()));
    assert_eq!(got.1, Err(RecvError::Disconnected));
}

#[test]
fn an_unbounded_queue_with_the_longest_name_grows() {
    // Exactly the longest name a user may give (blocks add ".bK").
    let base = format!("ipct-long-{}-", std::process::id());
    let pad = "l".repeat(ipc_core::segment::MAX_NAME_LEN - base.len());
    let name = ShmName(format!("{base}{pad}"));
    assert_eq!(name.as_str().len(), ipc_core::segment::MAX_NAME_LEN);
    let mb = unbounded_mailbox(&name);
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    for i in 0..3000u32 {
        tx.send(i.to_le_bytes()).unwrap();
    }
    assert!(mb.status().chain_blocks >= 1, "the chain grew");
    for i in 0..3000u32 {
        assert_eq!(rx.recv().unwrap(), i.to_le_bytes());
    }
}

/// Defect (found by `hostile::scribbled_bytes_anywhere`, whose peers
/// call `status` every few operations): a tail index scribbled to just
/// inside the plausibility bound (twice the blocks /dev/shm could hold:
/// millions for small blocks) passed validation, and `status` then
/// opened every index of the span, four times over, missing block by
/// missing block: minutes for one call. It now looks only at the blocks
/// that exist.
#[test]
fn status_over_a_scribbled_but_plausible_chain_span_visits_only_real_blocks() {
    let name = ShmName::new("hc-span");
    // Small blocks (8 KiB, where `unbounded_mailbox` makes 136 KiB ones):
    // the plausible span grows as blocks shrink, and only a span of
    // millions made the old walk outlast the limit.
    let buf = SharedBuffer::create_unbounded(
        name.as_str(),
        &BufferConfig {
            capacity: 8,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tx = buf.producer().unwrap();
    for i in 0..20u32 {
        tx.send(i.to_le_bytes()).unwrap();
    }
    let real = buf.status().chain_blocks;
    assert!(real >= 1, "the chain grew past its first segment");
    // The library's bound on a chain's span, less one: the largest span
    // it takes for plausible.
    let block = buf.geometry().total_size;
    let span = ipc_core::max_chain_for(block) - 1;
    eprintln!("chain span scribbled to {span} blocks (blocks of {block} bytes)");
    let tail = offset_of!(Header, chain) + offset_of!(Chain, tail_block);
    let head = offset_of!(Header, chain) + offset_of!(Chain, head_block);
    write_u64(&name, tail, read_u64(&name, head) + span);
    let status = within(LIMIT, "status", {
        let buf = buf.clone();
        move || buf.status()
    });
    assert_eq!(status.chain_blocks, real, "the blocks that exist, counted");
    drop(tx);
}
