//! Hostile segments: while peer processes run sends and receives (with short
//! timeouts), the test scribbles random bytes over a live segment through its
//! own descriptor of /dev/shm/NAME: header fields, cursors, lock words, wait
//! words, counters, the attachment table, packed record headers (of a
//! shared bounded buffer's ring, and of an unbounded one's write-once first
//! block). The peers must
//! neither hang, nor die by a signal (SIGSEGV, SIGBUS, abort on a huge
//! allocation: they run with a 1 GiB address-space limit), nor panic: every
//! operation returns an error (Corrupt, Disconnected, Timeout, OpenError) or
//! keeps working. Exiting with an error is fine.

use std::fs::OpenOptions;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_core::layout::{Cursor, Geometry, Header};
use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::{ChildGuard, ShmName};

const PEER: &str = env!("CARGO_BIN_EXE_ipc-test-peer");
/// A bound for a peer that runs 1.5 s of operations: a hang fails the test.
const PATIENCE: Duration = Duration::from_secs(60);

const READING: u64 = 1 << 63;

use ipc_tests::SplitMix as Rng;

/// One write of a few bytes at an offset.
type Scribble = (u64, Vec<u8>);

/// Which parts of the segment an attack hits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// Geometry and identity fields of the header (first 72 bytes).
    HeaderFields,
    /// Cursors (kept below 2^52: see the ignored test for the rest), wait
    /// words, counters, roster, chain.
    SharedWords,
    /// The attachment table.
    PeerTable,
    /// Packed record headers shaped like real ones, at the cursors or
    /// anywhere.
    RecordHeaders,
    /// Single random bytes anywhere.
    Anywhere,
}

struct Segment {
    name: ShmName,
    geo: Geometry,
    file: std::fs::File,
    _buf: SharedBuffer,
}

/// A bounded buffer (the packed engine, shared by many), or with
/// `unbounded` an unbounded one (whose first block is the segment itself,
/// a write-once view of its ring).
fn segment_of(tag: &str, unbounded: bool) -> Segment {
    let name = ShmName::new(tag);
    let config = BufferConfig {
        capacity: 8,
        max_message: 64,
        budget: 512,
        ..Default::default()
    };
    let buf = if unbounded {
        SharedBuffer::create_unbounded(name.as_str(), &config)
    } else {
        SharedBuffer::create(name.as_str(), &config)
    }
    .expect("create");
    assert!(buf.geometry().is_packed());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .expect("open /dev/shm file");
    Segment {
        geo: buf.geometry(),
        name,
        file,
        _buf: buf,
    }
}

fn segment(tag: &str) -> Segment {
    segment_of(tag, true)
}

fn scribble(seg: &Segment, target: Target, rng: &mut Rng) -> Scribble {
    let g = &seg.geo;
    match target {
        Target::HeaderFields => {
            let off = 8 + rng.below(64);
            (off, vec![rng.next() as u8; 1 + rng.below(4) as usize])
        }
        Target::SharedWords => {
            let words = [
                offset_of!(Header, tail),
                offset_of!(Header, head),
                offset_of!(Header, tail) + offset_of!(Cursor, lock),
                offset_of!(Header, head) + offset_of!(Cursor, lock),
                offset_of!(Header, tail) + offset_of!(Cursor, count),
                offset_of!(Header, head) + offset_of!(Cursor, count),
                offset_of!(Header, freed),
                offset_of!(Header, data_ready),
                offset_of!(Header, data_ready) + 4,
                offset_of!(Header, space_ready),
                offset_of!(Header, space_ready) + 4,
                offset_of!(Header, counters),
                offset_of!(Header, counters) + 8,
                offset_of!(Header, counters) + 16,
                offset_of!(Header, roster),
                offset_of!(Header, roster) + 8,
                offset_of!(Header, chain),
            ];
            let off = words[rng.below(words.len() as u64) as usize];
            let v = match rng.below(4) {
                0 => rng.below(64),
                1 => rng.next() & ((1 << 52) - 1),
                // A plausible lock word: a holder, maybe WAITED, a turn.
                2 => (1 + rng.below(8)) | rng.below(2) << 16 | rng.below(64) << 32,
                _ => rng.next() as u32 as u64,
            };
            (off as u64, v.to_le_bytes().to_vec())
        }
        Target::PeerTable => {
            let off = g.peers_offset + rng.below(g.peer_slots as u64 * 64);
            let v = match rng.below(3) {
                // A plausible state word: FREE/CLAIMING/ALIVE/REAPING + pid.
                0 => (rng.below(5) << 32) | rng.below(1 << 22),
                1 => rng.next(),
                _ => rng.below(4),
            };
            (off & !7, v.to_le_bytes().to_vec())
        }
        Target::RecordHeaders => {
            let size = g.ring_bytes;
            let read = |off: usize| {
                let mut b = [0u8; 8];
                seg.file.read_exact_at(&mut b, off as u64).expect("read");
                u64::from_le_bytes(b)
            };
            let at = match rng.below(3) {
                0 => read(offset_of!(Header, head)) & !(1 << 63),
                1 => read(offset_of!(Header, tail)) & !(1 << 63),
                _ => rng.next(),
            };
            let at = (at % size) & !7;
            let count = read(offset_of!(Header, head) + offset_of!(Cursor, count));
            let seq = count.wrapping_add(rng.below(4)).wrapping_sub(1) & ((1 << 30) - 1);
            let len = match rng.below(5) {
                0 => rng.below(g.max_message as u64 + 1),
                1 => g.max_message as u64 + 1 + rng.below(16),
                2 => size - at,
                3 => rng.below(g.max_message as u64 + 1) | 1 << 31, // withdrawn
                _ => rng.next() as u32 as u64,
            };
            let flags = [1 << 63, 1 << 63, 3 << 62, 1 << 62, 0][rng.below(5) as usize];
            let v: u64 = flags | seq << 32 | len;
            (g.slots_offset + at, v.to_le_bytes().to_vec())
        }
        Target::Anywhere => {
            let off = rng.below(g.total_size);
            (off, vec![rng.next() as u8])
        }
    }
}

fn hostile_peer(name: &str, role: &str, duration_ms: u64) -> ChildGuard {
    let mut cmd = Command::new(PEER);
    cmd.args(["hostile", "--segment", name, "--role", role])
        .args(["--duration-ms", &duration_ms.to_string()])
        .args(["--op-timeout-ms", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; it only limits the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ChildGuard::new(cmd.spawn().expect("spawn ipc-test-peer"))
}

/// Runs two producers and two consumers for 1.5 s under attack on `target`
/// (a bounded buffer's); returns their outputs.
fn attack(target: Target, seed: u64) -> Vec<String> {
    attack_on(target, seed, false)
}

/// [`attack`] on a bounded buffer's ring, or with `unbounded` on an
/// unbounded buffer's first block.
fn attack_on(target: Target, seed: u64, unbounded: bool) -> Vec<String> {
    let seg = segment_of("hostile", unbounded);
    let file = &seg.file;
    let mut peers: Vec<ChildGuard> = ["producer", "consumer", "producer", "consumer"]
        .iter()
        .map(|role| hostile_peer(seg.name.as_str(), role, 1500))
        .collect();
    // Let them open and attach before the first scribble.
    std::thread::sleep(Duration::from_millis(150));
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut writes = 0;
    while start.elapsed() < Duration::from_millis(1400) {
        let (off, bytes) = scribble(&seg, target, &mut rng);
        file.write_all_at(&bytes, off).expect("scribble");
        writes += 1;
        std::thread::sleep(Duration::from_micros(200 + rng.below(800)));
    }
    let mut outs = Vec::new();
    for (i, p) in peers.drain(..).enumerate() {
        let out = p.output_timeout(PATIENCE);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.code().is_some(),
            "{target:?} (seed {seed}): peer {i} died by a signal: {:?}; stderr: {stderr}",
            out.status
        );
        assert!(
            !stderr.contains("panicked"),
            "{target:?} (seed {seed}): peer {i} panicked: {stderr}"
        );
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{target:?} (seed {seed}): peer {i} exit {:?}: {stderr}",
            out.status
        );
        outs.push(format!("{} {}", stdout.trim(), stderr.trim()));
    }
    eprintln!("{target:?} seed {seed}: {writes} scribbles; peers: {outs:?}");
    outs
}

fn seed() -> u64 {
    std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[test]
fn scribbled_header_fields_refuse_new_opens_and_spare_attached_peers() {
    let outs = attack(Target::HeaderFields, seed());
    // Attached peers keep their own validated geometry: they carry on.
    assert!(outs.iter().any(|o| !o.contains("ok=0 ")), "{outs:?}");
}

#[test]
fn scribbled_cursors_wait_words_and_counters() {
    attack(Target::SharedWords, seed());
}

#[test]
fn scribbled_attachment_table() {
    attack(Target::PeerTable, seed());
}

#[test]
fn scribbled_record_headers_of_an_unbounded_block() {
    attack_on(Target::RecordHeaders, seed(), true);
}

#[test]
fn scribbled_packed_record_headers() {
    attack(Target::RecordHeaders, seed());
}

#[test]
fn scribbled_bytes_anywhere() {
    let s = seed();
    for i in 0..2 {
        attack_on(Target::Anywhere, s.wrapping_add(i), i == 1);
    }
}

/// A foreign or truncated file under the name is refused at open.
#[test]
fn garbage_file_is_refused_at_open() {
    let seg = segment("hostile-open");
    let file = OpenOptions::new()
        .write(true)
        .open(seg.name.path())
        .unwrap();
    let mut rng = Rng(seed());
    for _ in 0..50 {
        let off = rng.below(72);
        file.write_all_at(&[rng.next() as u8], off).unwrap();
        if let Ok(b) = SharedBuffer::open_timeout(seg.name.as_str(), Duration::from_millis(10)) {
            // Still valid (the byte did not change anything that matters).
            assert_eq!(b.geometry(), seg.geo);
        }
    }
    file.set_len(100).unwrap();
    assert!(SharedBuffer::open_timeout(seg.name.as_str(), Duration::from_millis(10)).is_err());
}

#[test]
/// Was a bug (fixed in c746c33): peers spun forever.
fn cursor_with_high_bits_does_not_hang_peers() {
    let seg = segment("hostile-cursor");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(seg.name.path())
        .unwrap();
    let peers: Vec<ChildGuard> = ["producer", "consumer"]
        .iter()
        .map(|role| hostile_peer(seg.name.as_str(), role, 500))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Set a bit above the sequence in both cursors, keeping their value.
    for off in [offset_of!(Header, tail), offset_of!(Header, head)] {
        let mut word = [0u8; 8];
        file.read_exact_at(&mut word, off as u64).unwrap();
        let v = u64::from_le_bytes(word) | 1 << 60;
        file.write_all_at(&v.to_le_bytes(), off as u64).unwrap();
    }
    for mut p in peers {
        assert!(
            p.wait_timeout(Duration::from_secs(20)).is_some(),
            "a peer still spins 20 s after the cursors were scribbled"
        );
    }
}

#[test]
/// Was a bug (fixed in c746c33, on slot stamps): `ipcctl status` panicked
/// repairing a dead owner's read claim. Now on the packed ring: the read
/// lock names a dead attachment and the read cursor is marked held at 0.
fn recover_owner_on_a_reading_stamp_of_seq_zero() {
    let seg = segment("hostile-reap");
    let file = OpenOptions::new()
        .write(true)
        .open(seg.name.path())
        .unwrap();
    // A process that has exited: its pid is dead.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id() as u64;
    gone.wait().unwrap();
    // Entry 5: ALIVE (2) with the dead pid, role consumer.
    let entry = seg.geo.peers_offset + 5 * 64;
    file.write_all_at(&((2u64 << 62) | pid).to_le_bytes(), entry)
        .unwrap();
    file.write_all_at(&2u32.to_le_bytes(), entry + 16).unwrap();
    // The read lock held by entry 5 (index + 1, one turn), the read cursor
    // marked held at position 0 with nothing committed there.
    let lock = offset_of!(Header, head) + offset_of!(Cursor, lock);
    file.write_all_at(&(6u64 | 1 << 32).to_le_bytes(), lock as u64)
        .unwrap();
    file.write_all_at(&READING.to_le_bytes(), offset_of!(Header, head) as u64)
        .unwrap();
    let out = ipc_tests::run(
        {
            let mut c = ipc_tests::cmd("ipcctl");
            c.args(["status", seg.name.as_str()]);
            c
        },
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "ipcctl status panicked: {stderr}"
    );
}
