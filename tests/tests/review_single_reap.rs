//! Review reproducers: in single mode, reaping an attachment entry that a
//! process left in CLAIMING (killed between the FREE→CLAIMING CAS and the
//! roster `set_alone`, e.g. a second consumer that would have got
//! `RoleTaken`) runs `recover_single_reader`/`recover_single_writer`
//! against the ring's *live* single reader/writer: the reaper never checks
//! that the dead entry held the role bit.
//!
//! The state a killed attacher leaves (entry CLAIMING, role written, no
//! liveness lock held, no roster bit) is written directly into the table.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use ipc_core::sync::Deadline;
use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::ShmName;

const CLAIMING: u64 = 1 << 62;

/// Leaves entry `index` as an attacher killed right after its CAS
/// FREE→CLAIMING and its role store: CLAIMING, generation 1, some pid,
/// role `role` (1 producer, 2 consumer), no lock, no roster bit.
fn killed_mid_attach(name: &ShmName, buf: &SharedBuffer, index: u64, role: u32) {
    let g = buf.geometry();
    let file = OpenOptions::new().write(true).open(name.path()).unwrap();
    let entry = g.peers_offset + index * 64;
    let word = CLAIMING | (1u64 << 32) | 424242;
    file.write_all_at(&word.to_le_bytes(), entry).unwrap();
    file.write_all_at(&role.to_le_bytes(), entry + 16).unwrap();
}

fn single(name: &ShmName) -> SharedBuffer {
    SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity: 4,
            max_message: 64,
            ..Default::default()
        },
    )
    .expect("create_single")
}

#[test]
fn reaping_a_dead_claiming_consumer_hands_the_live_readers_slot_to_the_writer() {
    let name = ShmName::new("rv-single-reap-rd");
    let buf = single(&name);
    let mut p = buf.producer().unwrap();
    let mut c = buf.consumer().unwrap();
    let cap = buf.geometry().capacity as usize;
    for i in 0..cap {
        p.send(format!("message-{i:02}-aaaaaaaaaaaaaaaa")).unwrap();
    }
    assert!(p.try_send(b"no room").is_err(), "ring is full");
    let mut seen = None;
    let got = c.recv_with(|bytes| {
        let before = bytes.to_vec();
        // A second consumer was killed mid-attach (entry 5)...
        killed_mid_attach(&name, &buf, 5, 2);
        // ... and anyone (here: a status inspection from another mapping,
        // as `ipcctl status` does) reaps it.
        let other = SharedBuffer::open(name.as_str()).unwrap();
        let _ = other.status();
        // The ring is full and we still hold message 0: no write may land
        // in our slot.
        let extra = p.try_send(b"OVERWRITTEN-OVERWRITTEN-OVERWRITTEN").is_ok();
        // SAFETY: reading the slice we were given, volatile because the
        // library let a writer into it.
        let after: Vec<u8> = (0..bytes.len())
            .map(|i| unsafe { std::ptr::read_volatile(bytes.as_ptr().add(i)) })
            .collect();
        seen = Some((before.clone(), after.clone(), extra));
        (before, after, extra)
    });
    let (before, after, extra_send_ok) = seen.expect("callback ran");
    eprintln!("recv_with returned {:?}", got.as_ref().map(|_| ()));
    assert_eq!(
        String::from_utf8_lossy(&after),
        String::from_utf8_lossy(&before),
        "the live consumer's payload changed under its callback (extra send ok: {extra_send_ok})"
    );
    assert!(
        !extra_send_ok,
        "a send into a full ring succeeded while the live consumer held its slot"
    );
    drop(c);
    drop(p);
}

#[test]
fn reaping_a_dead_claiming_producer_revokes_the_live_writers_claim() {
    let name = ShmName::new("rv-single-reap-wr");
    let buf = single(&name);
    let mut p = buf.producer().unwrap();
    let mut c = buf.consumer().unwrap();
    let mut w = p.claim(Deadline::Never).expect("claim");
    w.buf()[..5].copy_from_slice(b"hello");
    // A second producer was killed mid-attach (entry 5); someone reaps.
    killed_mid_attach(&name, &buf, 5, 1);
    let other = SharedBuffer::open(name.as_str()).unwrap();
    let st = other.status();
    let committed = w.commit(5);
    assert!(
        committed.is_ok(),
        "the live single producer's commit failed: {committed:?} (abandoned_writes = {})",
        st.abandoned_writes
    );
    assert_eq!(c.try_recv().unwrap(), b"hello");
}

/// The same without any scribble-like state: a single consumer killed in
/// `detach` between `roster.clear` and the CAS ALIVE→FREE leaves its entry
/// ALIVE, lockless, with no roster bit. A replacement consumer attaches
/// (`set_alone` succeeds: the bit is clear) and reads; reaping the dead
/// entry then runs `recover_single_reader` on the replacement's claim.
#[test]
fn reaping_a_consumer_killed_mid_detach_revokes_its_replacements_read() {
    let name = ShmName::new("rv-single-reap-det");
    let buf = single(&name);
    let mut p = buf.producer().unwrap();
    p.send(b"first").unwrap();
    let mut c2 = buf.consumer().unwrap();
    let got = c2.recv_with(|bytes| {
        // The previous consumer (entry 5): ALIVE, role consumer, dead.
        let g = buf.geometry();
        let file = OpenOptions::new().write(true).open(name.path()).unwrap();
        let entry = g.peers_offset + 5 * 64;
        let word = (2u64 << 62) | (1u64 << 32) | 424242;
        file.write_all_at(&word.to_le_bytes(), entry).unwrap();
        file.write_all_at(&2u32.to_le_bytes(), entry + 16).unwrap();
        let _ = SharedBuffer::open(name.as_str()).unwrap().status();
        bytes.to_vec()
    });
    assert_eq!(
        got.map_err(|e| e.to_string()),
        Ok(b"first".to_vec()),
        "the live replacement consumer's read was revoked"
    );
}
