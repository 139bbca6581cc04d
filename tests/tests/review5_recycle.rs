//! Review 5: reproducers for defects of chain-block recycling (spares,
//! the per-process block cache). Each test fails on the code it was
//! written against and passes once the defect is fixed.

#[path = "mailbox_common.rs"]
mod common;

use std::fs::OpenOptions;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_tests::{wait_until, ChildGuard, ShmName, TempDir};

/// Messages per chained block: its count bound (64-byte messages fill a
/// block by count; with 256 KiB messages allowed, blocks are 4 MiB rings).
const PER_BLOCK: u64 = ipc_core::mailbox::UNBOUNDED_BLOCK as u64;

fn cfg(max_message: u32) -> MailboxConfig {
    MailboxConfig {
        capacity: Capacity::Unbounded,
        max_message,
        ..Default::default()
    }
}

fn send_range(tx: &mut ipc_core::Sender, id: u32, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        tx.send(encode(id, seq, 64))
            .unwrap_or_else(|e| panic!("send {id}/{seq}: {e:?}"));
    }
}

fn recv_range(rx: &mut ipc_core::Receiver, id: u32, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let m = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(decode(&m), Some((id, seq)));
    }
}

fn spares(name: &str) -> Vec<String> {
    let prefix = format!("{name}.b0");
    chain_segments(name)
        .into_iter()
        .filter(|f| f.starts_with(&prefix))
        .collect()
}

/// Bytes of this process's mappings of removed (`(deleted)`) block files
/// of queue `name`, and how many such mappings there are.
fn deleted_block_mappings(name: &str) -> (u64, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let needle = format!("/dev/shm/{name}.b");
    let mut bytes = 0;
    let mut n = 0;
    for line in maps.lines() {
        if !(line.contains(&needle) && line.ends_with("(deleted)")) {
            continue;
        }
        let range = line.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        bytes += b - a;
        n += 1;
    }
    (bytes, n)
}

/// The block cache keeps removed blocks alive. A sender (its own handle)
/// streams twelve blocks that a receiver (another handle, as another
/// process would be) drains; the stream ends, and /dev/shm lists nothing
/// but the main segment ("an idle, drained queue holds only its main
/// segment"). Yet the sender's handle still maps every block it made:
/// files that are unlinked but whose tmpfs pages stay allocated, invisible
/// to `ls`, `ipcctl list` and `ipcctl clean`, counted in /dev/shm's usage
/// (up to 32 blocks / 128 MiB per process and queue, far above the "at
/// most 4 spares, 16 MiB" bound). Before recycling, a block's mapping
/// went with the view of it.
#[test]
fn an_idle_drained_queue_pins_no_removed_blocks_in_memory() {
    let name = ShmName::new("r5-pin");
    let mb_tx = Mailbox::create(name.as_str(), &cfg(256 << 10)).unwrap();
    let mb_rx = Mailbox::open(name.as_str()).unwrap();
    let mut tx = mb_tx.sender().unwrap();
    let mut rx = mb_rx.receiver().unwrap();
    let n = 12 * PER_BLOCK;
    send_range(&mut tx, 0, 0..n);
    recv_range(&mut rx, 0, 0..n);
    drop(tx);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)),
        Err(ipc_core::RecvError::Disconnected)
    );
    assert_eq!(
        chain_segments(name.as_str()),
        Vec::<String>::new(),
        "names: only the main segment is left"
    );
    let (bytes, maps) = deleted_block_mappings(name.as_str());
    assert_eq!(
        (bytes, maps),
        (0, 0),
        "{maps} removed block files ({} MiB) stay mapped, so allocated in /dev/shm, \
         by an idle handle of a drained queue",
        bytes >> 20
    );
}

/// A queue removed while its processes still stream (`ipcctl remove`,
/// `Mailbox::unlink`: "open handles keep working") goes on making spares
/// under its old names; its processes then end without an end of stream
/// (killed, or simply gone), leaving `NAME.b00` behind. A new queue of
/// that name, with another message size, is created: its first sender
/// that needs block 1 renames the old spare to `NAME.b1` without looking
/// at it, finds it is not one of its blocks, fails the send with
/// `Corrupt`, and leaves it there: from then on every send past block 0
/// fails, for ever (the name `NAME.b1` is taken by a file that is refused).
#[test]
fn a_leftover_spare_of_another_geometry_does_not_wedge_a_new_queue() {
    let name = ShmName::new("r5-foreign");
    {
        let old = Mailbox::create(name.as_str(), &cfg(256 << 10)).unwrap();
        let mut tx = old.sender().unwrap();
        let mut rx = old.receiver().unwrap();
        send_range(&mut tx, 0, 0..3 * PER_BLOCK);
        recv_range(&mut rx, 0, 0..2 * PER_BLOCK + 1);
        Mailbox::unlink(name.as_str()).unwrap();
        // The old handles keep working, and keep recycling by name.
        send_range(&mut tx, 0, 3 * PER_BLOCK..5 * PER_BLOCK);
        recv_range(&mut rx, 0, 2 * PER_BLOCK + 1..5 * PER_BLOCK);
        assert!(
            !spares(name.as_str()).is_empty(),
            "the removed queue made a spare: {:?}",
            chain_segments(name.as_str())
        );
        // Its processes go (no end of stream seen).
        drop(rx);
        drop(tx);
    }
    let new = Mailbox::create(name.as_str(), &cfg(64 << 10)).unwrap();
    let per = u64::from(new.status().geometry.capacity);
    let mut tx = new.sender().unwrap();
    let mut rx = new.receiver().unwrap();
    for seq in 0..3 * per {
        if let Err(e) = tx.send(encode(1, seq, 64)) {
            let again = tx.send(encode(1, seq, 64)).map_err(|e| e.to_string());
            panic!(
                "send {seq} (block 0 holds {per}) into a brand-new queue failed: {e:?}; \
                 sent again: {again:?}; /dev/shm: {:?}",
                chain_segments(name.as_str())
            );
        }
    }
    recv_range(&mut rx, 1, 0..3 * per);
}

/// A spare that is not usable any more (here: truncated to one page) is
/// taken all the same by a sender that has no mapping of it: renamed to the
/// next block's name, refused (`Truncated`), and left there; block 3's
/// name is then taken by a file every process refuses, and every later
/// send fails with `NoSpace` ("cannot add block 3"), for ever. A spare is
/// disposable: one that fails validation should be dropped and a block
/// made instead.
#[test]
fn a_damaged_spare_does_not_wedge_the_chain() {
    let name = ShmName::new("r5-trunc");
    let mb_a = Mailbox::create(name.as_str(), &cfg(256 << 10)).unwrap();
    let mut tx = mb_a.sender().unwrap();
    let mut rx = mb_a.receiver().unwrap();
    send_range(&mut tx, 0, 0..3 * PER_BLOCK);
    recv_range(&mut rx, 0, 0..2 * PER_BLOCK + 1);
    let spare = spares(name.as_str());
    assert_eq!(spare.len(), 1, "block 1 became a spare");
    OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{}", spare[0]))
        .unwrap()
        .set_len(4096)
        .unwrap();
    // Another process's handle (no cached mapping of the spare).
    let mb_b = Mailbox::open(name.as_str()).unwrap();
    let mut tx_b = mb_b.sender().unwrap();
    for seq in 0..2 * PER_BLOCK {
        if let Err(e) = tx_b.send(encode(1, seq, 64)) {
            let again = tx_b.send(encode(1, seq, 64)).map_err(|e| e.to_string());
            // A third handle: `mb_a` still caches the spare's old mapping
            // and would die of SIGBUS (see the next test).
            let other = Mailbox::open(name.as_str())
                .unwrap()
                .sender()
                .unwrap()
                .send(encode(2, 0, 64))
                .map_err(|e| e.to_string());
            panic!(
                "send {seq} failed because of a damaged spare: {e:?}; sent again: {again:?}; \
                 another sender: {other:?}; /dev/shm: {:?}",
                chain_segments(name.as_str())
            );
        }
    }
    recv_range(&mut rx, 0, 2 * PER_BLOCK + 1..3 * PER_BLOCK);
    recv_range(&mut rx, 1, 0..2 * PER_BLOCK);
}

const CHILD_ENV: &str = "REVIEW5_SIGBUS_CHILD";

/// The same damaged spare, in the process that drained it and so still
/// has it in its block cache: the cache is keyed by inode and hands the
/// old mapping back without looking at the file's size again (a fresh
/// open would refuse it as `Truncated`), so the next send that takes the
/// spare reads its slots past the end of the file and the process dies of
/// SIGBUS. (Run in a child process: the test harness would die too.)
#[test]
fn a_truncated_spare_never_faults_a_process_that_cached_it() {
    if let Some(name) = std::env::var_os(CHILD_ENV) {
        let name = name.into_string().unwrap();
        let mb = Mailbox::create(&name, &cfg(256 << 10)).unwrap();
        let mut tx = mb.sender().unwrap();
        let mut rx = mb.receiver().unwrap();
        send_range(&mut tx, 0, 0..3 * PER_BLOCK);
        recv_range(&mut rx, 0, 0..2 * PER_BLOCK + 1);
        let spare = spares(&name);
        assert_eq!(spare.len(), 1, "block 1 became a spare");
        OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{}", spare[0]))
            .unwrap()
            .set_len(4096)
            .unwrap();
        eprintln!("child: spare truncated, sending into block 3");
        let r = tx.send(encode(0, 3 * PER_BLOCK, 64));
        eprintln!(
            "child: send returned {:?}",
            r.as_ref().map_err(|e| e.to_string())
        );
        return;
    }
    let name = ShmName::new("r5-bus");
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe);
    c.args([
        "--exact",
        "a_truncated_spare_never_faults_a_process_that_cached_it",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, name.as_str())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = ChildGuard::new(c.spawn().unwrap()).output_timeout(Duration::from_secs(60));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success(),
        "the child died: {:?} (signal {:?}); its stderr:\n{}",
        out.status,
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// DESIGN: "a receiver that dies holding one loses that one, counted". A
/// receiver process killed in its callback while holding a message of
/// block 1, after the other receiver moved the head past block 1: the
/// block is removed (not recycled), the stream ends normally, and the
/// message is counted nowhere: `lost_reads` stays 0 although the queue
/// found the dead consumer. (Reaping repairs only blocks between head and
/// tail.)
#[test]
fn a_receiver_killed_holding_a_message_behind_the_head_is_counted_lost() {
    let name = ShmName::new("r5-lost");
    let mb = Mailbox::create(name.as_str(), &cfg(256 << 10)).unwrap();
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    let markers = TempDir::new("r5-lost");
    send_range(&mut tx, 0, 0..PER_BLOCK + 4);
    recv_range(&mut rx, 0, 0..PER_BLOCK);
    let dir = markers.path().to_str().unwrap().to_owned();
    let holder = spawn_bg(&[
        "recv",
        name.as_str(),
        "--count",
        "1",
        "--op",
        "with",
        "--marker-dir",
        &dir,
        "--hold-ms",
        "600000",
    ]);
    let took = markers.file(&format!("took-0-{PER_BLOCK}"));
    wait_until("the holder to take its message", || took.exists());
    let n = 4 * PER_BLOCK;
    send_range(&mut tx, 0, PER_BLOCK + 4..n);
    recv_range(&mut rx, 0, PER_BLOCK + 1..2 * PER_BLOCK + 1);
    drop(holder); // SIGKILL, by its pid
    recv_range(&mut rx, 0, 2 * PER_BLOCK + 1..n);
    drop(tx);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)),
        Err(ipc_core::RecvError::Disconnected)
    );
    let st = mb.status();
    assert!(st.dead_consumers >= 1, "the holder was found dead: {st:?}");
    assert_eq!(
        st.lost_reads, 1,
        "the message the dead receiver held is not counted as lost"
    );
}

/// Accounting at end of stream: the last block and the spares are
/// removed ("an idle, drained queue holds only its main segment"), yet
/// `Status::chain_blocks` ("extra segments of an unbounded chain alive
/// now") still counts one, because the head and tail indices stay on the
/// removed block.
#[test]
fn status_counts_no_chain_block_once_the_stream_has_ended() {
    let name = ShmName::new("r5-count");
    let mb = Mailbox::create(name.as_str(), &cfg(256 << 10)).unwrap();
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    send_range(&mut tx, 0, 0..3 * PER_BLOCK + 1);
    recv_range(&mut rx, 0, 0..3 * PER_BLOCK + 1);
    drop(tx);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)),
        Err(ipc_core::RecvError::Disconnected)
    );
    let files = chain_segments(name.as_str());
    let st = mb.status();
    assert_eq!(
        (st.chain_blocks, files.len()),
        (0, 0),
        "status counts {} chain blocks; /dev/shm holds {files:?}",
        st.chain_blocks
    );
}

/// (Added with the fix.) The live counterpart of the test above: a
/// receiver process holding a message of block 1 while another receiver
/// moves the head past block 1 keeps the block under its name (it is
/// still being read); once the holder lets go and ends, the block is gone
/// from its index (given back as a spare or removed), nothing is counted
/// lost, and the stream ends with only the main segment left.
#[test]
fn a_block_held_behind_the_head_is_given_back_by_its_last_reader() {
    let name = ShmName::new("r5-held");
    let mb = Mailbox::create(name.as_str(), &cfg(256 << 10)).unwrap();
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    let markers = TempDir::new("r5-held");
    send_range(&mut tx, 0, 0..PER_BLOCK + 4);
    recv_range(&mut rx, 0, 0..PER_BLOCK);
    let dir = markers.path().to_str().unwrap().to_owned();
    let mut holder = spawn_bg(&[
        "recv",
        name.as_str(),
        "--count",
        "1",
        "--op",
        "with",
        "--marker-dir",
        &dir,
        "--hold-ms",
        "1500",
    ]);
    let took = markers.file(&format!("took-0-{PER_BLOCK}"));
    wait_until("the holder to take its message", || took.exists());
    let n = 4 * PER_BLOCK;
    send_range(&mut tx, 0, PER_BLOCK + 4..n);
    recv_range(&mut rx, 0, PER_BLOCK + 1..2 * PER_BLOCK + 1);
    let b1 = format!("{}.b1", name.as_str());
    assert!(
        chain_segments(name.as_str()).contains(&b1),
        "block 1, still being read behind the head, keeps its name: {:?}",
        chain_segments(name.as_str())
    );
    let st = holder
        .wait_timeout(Duration::from_secs(30))
        .expect("holder ends");
    assert!(st.success(), "holder: {st:?}");
    assert!(
        !chain_segments(name.as_str()).contains(&b1),
        "block 1 given back by its last reader: {:?}",
        chain_segments(name.as_str())
    );
    recv_range(&mut rx, 0, 2 * PER_BLOCK + 1..n);
    drop(tx);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)),
        Err(ipc_core::RecvError::Disconnected)
    );
    assert_eq!(chain_segments(name.as_str()), Vec::<String>::new());
    assert_eq!(mb.status().lost_reads, 0);
}
