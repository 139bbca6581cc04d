//! Commit tags on an unbounded mailbox (`Sender::send_tagged_batch_until`,
//! `Sender::last_tag`) across a real kill: the chain's last tag is kept in
//! its main segment, marked before the block's commit and settled after
//! it. A sender killed between the two leaves a mark that the next
//! `last_tag` settles from the block's own marks: the tag moves exactly
//! when the message went in, even once receivers drained the block and
//! moved past it (the block keeps its name until then). This is what lets
//! ipc-bridge's delivering side be killed between putting a message into
//! an unbounded mailbox and recording it without the message arriving
//! twice (`bridge_loopback::an_unbounded_exporter_killed_between_...`).

use ipc_core::mailbox::Mailbox;
use ipc_core::{Deadline, RecvError};
use ipc_tests::{pause_gate, unbounded_mailbox, ShmName, PATIENCE};

/// Set in a child run of this test binary: `NAME|TAG|POINT|FILL`.
const CHILD: &str = "IPC_TESTS_TAGS_UNBOUNDED_CHILD";

/// Untagged messages before the tagged one: it goes into block 1.
const FILL: u32 = ipc_core::mailbox::UNBOUNDED_BLOCK + 76;

const TEST: &str =
    "a_sender_killed_in_a_tagged_unbounded_commit_moves_the_tag_exactly_when_the_message_went_in";

/// The child: sends FILL untagged messages, then one tagged TAG, and
/// kills itself (SIGKILL) at pause point POINT of that send.
fn child(spec: &str) {
    let mut parts = spec.split('|');
    let name = parts.next().expect("NAME");
    let tag: u64 = parts.next().expect("TAG").parse().expect("a number");
    let point = parts.next().expect("POINT").to_owned();
    let fill: u32 = parts.next().expect("FILL").parse().expect("a number");
    let mb = Mailbox::open(name).expect("open");
    let mut tx = mb.sender().expect("sender");
    for i in 0..fill {
        tx.send(format!("fill {i:<55}").as_bytes()).expect("send");
    }
    println!("tagging");
    ipc_core::pause::set(move |p| {
        if p == point {
            // SAFETY: kill(2) of this very process; no memory is touched.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    });
    let _ = tx.send_tagged_batch_until([(tag, &b"tagged"[..])], Deadline::after(PATIENCE));
    println!("not killed");
}

/// A child sends `fill` untagged messages and one tagged `tag`, killed
/// at `point` of the tagged send.
fn kill_child_at(name: &ShmName, tag: u64, point: &str, fill: u32) {
    let spec = format!("{}|{tag}|{point}|{fill}", name.as_str());
    let (mut child, lines) = ipc_tests::rerun_as_child(TEST, CHILD, &spec);
    let lines: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(lines.iter().any(|l| l.contains("tagging")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("not killed")), "{lines:?}");
    assert!(child.wait_timeout(PATIENCE).is_some(), "the child ends");
}

/// Receives everything queued: the messages, until the queue is empty.
fn drain(rx: &mut ipc_core::endpoint::Receiver) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(m) => got.push(m),
            Err(RecvError::Timeout | RecvError::Empty | RecvError::Disconnected) => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_sender_killed_in_a_tagged_unbounded_commit_moves_the_tag_exactly_when_the_message_went_in() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let name = ShmName::new("tags-unbounded");
    // Blocks of `UNBOUNDED_BLOCK` (1024) messages: the fill below spans
    // several.
    let mb = unbounded_mailbox(&name);
    let mut rx = mb.receiver().unwrap();
    let mut tx = mb.sender().unwrap();
    assert_eq!(tx.last_tag(Deadline::Now).unwrap(), 0, "no tag yet");
    tx.send_tagged_batch_until([(5u64, &b"five"[..])], Deadline::Now)
        .unwrap();
    assert_eq!(tx.last_tag(Deadline::Now).unwrap(), 5);
    assert_eq!(drain(&mut rx), vec![b"five".to_vec()]);

    // Killed after the chain's mark, before the block's commit: the
    // message did not go in, and the tag stays.
    kill_child_at(&name, 9, "chain tag: marked", 0);
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 5);
    assert!(drain(&mut rx).is_empty(), "the withdrawn claim is not read");

    // Killed after the block's commit, before the chain's tag: the
    // message went in, and the tag moves, although the receiver drained
    // its block and the chain moved past it (more messages came after it,
    // in later blocks) before anyone looked.
    kill_child_at(&name, 11, "chain tag: committed", FILL);
    let mut rest = mb.sender().unwrap();
    for i in 0..2 * FILL {
        rest.send(format!("after {i:<54}").as_bytes()).unwrap();
    }
    let got = drain(&mut rx);
    assert_eq!(got.len(), 3 * FILL as usize + 1, "every message read once");
    assert_eq!(got[FILL as usize], b"tagged");
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 11);

    // Killed before its claim was marked anywhere: as if never sent.
    kill_child_at(&name, 13, "send: tail index read", 0);
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 11);
    assert!(drain(&mut rx).is_empty());

    // A tagged send that completes moves it, as on bounded queues.
    tx.send_tagged_batch_until([(17u64, &b"seventeen"[..])], Deadline::Now)
        .unwrap();
    assert_eq!(tx.last_tag(Deadline::Now).unwrap(), 17);
    assert_eq!(drain(&mut rx), vec![b"seventeen".to_vec()]);
    drop((rx, tx, rest, mb));
    Mailbox::unlink(name.as_str()).unwrap();
}

/// True if block `k` of `name`'s chain still has its name in /dev/shm.
fn block_exists(name: &ShmName, k: u64) -> bool {
    std::path::Path::new(&format!("/dev/shm/{}.b{k}", name.as_str())).exists()
}

/// Review of 7ee9f42: a restarted tagger that sends tagged messages
/// without asking for the last tag first overwrote the mark its killed
/// predecessor left, and the block that mark kept (drained, the head
/// past it) stayed in /dev/shm for the queue's whole life.
#[test]
fn a_tagged_send_over_a_killed_taggers_mark_gives_its_block_back() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let name = ShmName::new("tags-unbounded-over");
    let mb = unbounded_mailbox(&name);
    let mut rx = mb.receiver().unwrap();
    kill_child_at(&name, 11, "chain tag: committed", FILL);
    let mut rest = mb.sender().unwrap();
    for i in 0..2 * FILL {
        rest.send(format!("after {i:<54}").as_bytes()).unwrap();
    }
    assert_eq!(drain(&mut rx).len(), 3 * FILL as usize + 1);
    assert!(block_exists(&name, 1), "the marked block keeps its name");
    // The successor tags without settling first.
    let mut tx = mb.sender().unwrap();
    tx.send_tagged_batch_until([(21u64, &b"next"[..])], Deadline::after(PATIENCE))
        .unwrap();
    assert_eq!(drain(&mut rx), vec![b"next".to_vec()]);
    assert!(
        !block_exists(&name, 1),
        "block 1, drained and behind the head, is given back once its mark is gone"
    );
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 21);
    drop((rx, tx, rest, mb));
    Mailbox::unlink(name.as_str()).unwrap();
}

/// Review of 7ee9f42: at end of stream, a receiver that found the tail
/// block marked by a killed tagger ended the stream without sealing the
/// block, so a sender that attached meanwhile and claimed there had its
/// message come after the receiver said `Disconnected`.
#[test]
fn end_of_stream_over_a_marked_block_waits_for_a_sender_that_came_meanwhile() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let name = ShmName::new("tags-unbounded-eos");
    let mb = unbounded_mailbox(&name);
    // Killed between the mark and the commit, in block 1: the tail block
    // is marked, and no sender is left.
    kill_child_at(&name, 9, "chain tag: marked", FILL);
    let mut rx = mb.receiver().unwrap();
    let (arm, gate) = pause_gate("end of stream: drained");
    let reader = std::thread::spawn(move || {
        arm.arm();
        let mut got = Vec::new();
        let end = loop {
            match rx.recv_timeout(PATIENCE) {
                Ok(m) => got.push(m),
                Err(e) => break e,
            }
        };
        ipc_core::pause::clear();
        (got, end)
    });
    gate.reached("the receiver drains the queue and comes to its end");
    // A sender comes, and claims in the tail block, before the receiver
    // looks at that block.
    let mut tx = mb.sender().unwrap();
    let mut slot = tx.claim(Deadline::after(PATIENCE)).unwrap();
    slot.buf()[..4].copy_from_slice(b"late");
    gate.open();
    slot.commit(4).unwrap();
    drop(tx);
    let (got, end) = reader.join().unwrap();
    assert!(matches!(end, RecvError::Disconnected), "{end}");
    assert_eq!(got.len(), FILL as usize + 1, "every message, then the end");
    assert_eq!(got.last().unwrap(), b"late");
    drop(mb);
    Mailbox::unlink(name.as_str()).unwrap();
}

/// Review of 4bc3219: a tagger killed after its commit (its message in,
/// the chain's tag not yet moved) leaves a mark; its successor, tagging
/// without asking for the last tag first, was killed after marking: its
/// mark had replaced the first unsettled, and `last_tag` went back to an
/// older tag although message 11 had gone in (a bridge would send it
/// again). A tagged send now settles a mark it finds before its claim.
#[test]
fn a_mark_replaced_by_a_killed_successor_keeps_the_tag_that_went_in() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let name = ShmName::new("tags-unbounded-replaced");
    let mb = unbounded_mailbox(&name);
    let mut rx = mb.receiver().unwrap();
    kill_child_at(&name, 11, "chain tag: committed", FILL);
    kill_child_at(&name, 13, "chain tag: marked", 0);
    let mut tx = mb.sender().unwrap();
    assert_eq!(
        tx.last_tag(Deadline::after(PATIENCE)).unwrap(),
        11,
        "message 11 went in, 13 did not"
    );
    let got = drain(&mut rx);
    assert_eq!(got.len(), FILL as usize + 1);
    assert_eq!(got.last().unwrap(), b"tagged");
    drop((rx, tx, mb));
    Mailbox::unlink(name.as_str()).unwrap();
}

/// Review of 4bc3219: the end of stream seals a tail block a killed
/// tagger marked and leaves it for the mark; settling the mark then gave
/// it back only if the head had passed it, which a tail block's never
/// has: it stayed in /dev/shm while the queue was idle.
#[test]
fn a_marked_tail_block_left_at_end_of_stream_goes_once_settled() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let name = ShmName::new("tags-unbounded-idle");
    let mb = unbounded_mailbox(&name);
    let mut rx = mb.receiver().unwrap();
    kill_child_at(&name, 9, "chain tag: marked", FILL);
    assert_eq!(drain(&mut rx).len(), FILL as usize);
    assert!(block_exists(&name, 1), "kept for its mark");
    drop(rx);
    let mut tx = mb.sender().unwrap();
    assert_eq!(tx.last_tag(Deadline::after(PATIENCE)).unwrap(), 0);
    assert!(
        !block_exists(&name, 1),
        "the sealed, drained tail block goes once its mark is settled"
    );
    // The chain goes on in a new block.
    let mut rx = mb.receiver().unwrap();
    tx.send(b"again").unwrap();
    assert_eq!(drain(&mut rx), vec![b"again".to_vec()]);
    drop((rx, tx, mb));
    Mailbox::unlink(name.as_str()).unwrap();
}
