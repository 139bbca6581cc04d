//! Review-2 reproducers: `Queue::chain_indices` refuses legitimate chains.
//!
//! 1. `tail >= MAX_CHAIN` (2^24) is called corrupt. Block indices only
//!    ever grow (every block is written once, a drained chain keeps its
//!    indices, a new stream starts a new block), so an unbounded queue
//!    that has used 2^24 blocks is dead for good: with the CLI's default
//!    64 KiB max message a block holds 63 messages, so about 1.06e9
//!    messages over the queue's whole life (1024 per block at most: 1.7e10).
//!    The test starts at the state such a queue reaches (head = tail =
//!    2^24 - 1, that block drained and retired, as end of stream leaves
//!    it) instead of sending a billion messages; a control at index 5
//!    shows the same state is a working one.
//! 2. The span bound is `statvfs(/dev/shm)` blocks / block size + 2. A
//!    tmpfs mounted without a size limit (`size=0`, "unlimited") reports
//!    f_blocks = 0, so at most 2 blocks may be queued: the third refill of
//!    an unbounded queue whose consumer is behind fails with "chain block
//!    indices impossible". Needs root (private mount namespace); else
//!    prints "skipped".

use std::fs::OpenOptions;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ipc_core::layout::{Chain, Header};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_tests::ShmName;

fn write_u64(name: &ShmName, offset: usize, value: u64) {
    let file = OpenOptions::new().write(true).open(name.path()).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset as u64)
        .unwrap();
}

/// A fresh unbounded mailbox whose chain is at block `k`, drained and
/// retired (head = tail = k, no file for block k): what end of stream
/// leaves after `k` blocks.
fn at_block(tag: &str, k: u64) -> (ShmName, Mailbox) {
    let name = ShmName::new(tag);
    let mb = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Unbounded,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap();
    write_u64(
        &name,
        offset_of!(Header, chain) + offset_of!(Chain, head_block),
        k,
    );
    write_u64(
        &name,
        offset_of!(Header, chain) + offset_of!(Chain, tail_block),
        k,
    );
    (name, mb)
}

/// Sends 3 000 messages (three blocks of 1024) and receives them.
fn three_blocks_round_trip(mb: &Mailbox) -> Result<(), String> {
    let mut rx = mb.receiver().map_err(|e| e.to_string())?;
    let mut tx = mb.sender().map_err(|e| e.to_string())?;
    for i in 0..3000u32 {
        tx.send(i.to_le_bytes())
            .map_err(|e| format!("send {i}: {e}"))?;
        let got = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("recv {i}: {e}"))?;
        if got != i.to_le_bytes() {
            return Err(format!("message {i} came back as {got:?}"));
        }
    }
    Ok(())
}

#[test]
fn control_a_chain_at_block_5_keeps_working() {
    let (_name, mb) = at_block("rv2-chain5", 5);
    three_blocks_round_trip(&mb).unwrap();
}

#[test]
fn an_unbounded_queue_keeps_working_after_its_2_pow_24th_block() {
    let (_name, mb) = at_block("rv2-chainmax", (1 << 24) - 1);
    let r = three_blocks_round_trip(&mb);
    assert!(
        r.is_ok(),
        "an unbounded queue that has used 2^24 blocks (1.06e9 messages at 64 KiB max) is dead: {}",
        r.unwrap_err()
    );
}

#[test]
fn an_unbounded_queue_in_an_unlimited_tmpfs_may_hold_more_than_two_blocks() {
    use std::process::Command;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs on /dev/shm needs root");
        return;
    }
    let ipcctl = ipc_tests::bin("ipcctl").display().to_string();
    let producer = ipc_tests::bin("producer").display().to_string();
    let script = format!(
        "mount -t tmpfs -o size=0 tmpfs /dev/shm || exit 99\n\
         {ipcctl} create q --mailbox --capacity unbounded --max-message 1M || exit 98\n\
         {producer} --mailbox q --count 100 --size 1000\n"
    );
    let out = ipc_tests::run(
        {
            let mut c = Command::new("unshare");
            c.args(["-m", "sh", "-c", &script]);
            c
        },
        ipc_tests::PATIENCE,
    );
    match out.status.code() {
        Some(99) | Some(98) => {
            eprintln!(
                "skipped: cannot mount an unlimited tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        _ => {}
    }
    assert!(
        out.status.success(),
        "100 messages of 1000 B (7 blocks of 16) into an unbounded mailbox on an unlimited \
         tmpfs: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
