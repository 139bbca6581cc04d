//! Hostile single-mode segments (the packed engine): while a producer and
//! a consumer process send and receive (short timeouts, messages of every
//! length so records wrap at every offset), the test scribbles over the
//! live segment through its own descriptor of /dev/shm/NAME: record
//! headers shaped like real ones (COMMIT, plausible sequences, lengths
//! near the maximum, PAD with wrong lengths), the three cursors' positions
//! and counts, the header's fields, and random bytes of the ring. Halfway
//! through, the producer is SIGKILLed and a replacement attaches, so the
//! dead writer's repair runs over scribbled state too. The peers must
//! neither hang, nor die by a signal (SIGSEGV, SIGBUS, abort on a huge
//! allocation: they run with a 1 GiB address-space limit), nor panic:
//! every operation returns an error (Corrupt, Disconnected, Timeout,
//! OpenError) or keeps working. Exiting with an error is fine.
//!
//! `HOSTILE_SEED=N` replays a run.

use std::fs::{File, OpenOptions};
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_core::layout::{Cursor, Geometry, Header};
use ipc_core::{BufferConfig, SharedBuffer};
use ipc_tests::{ChildGuard, ShmName};

const PEER: &str = env!("CARGO_BIN_EXE_ipc-test-peer");
/// A bound for a peer that runs about 1.5 s of operations: a hang fails
/// the test.
const PATIENCE: Duration = Duration::from_secs(60);

const COMMIT: u64 = 1 << 63;
const PAD: u64 = 1 << 62;
const MARK: u64 = 1 << 63;
const SEQ_MASK: u64 = (1 << 30) - 1;
const MAX_MESSAGE: u32 = 64;

use ipc_tests::SplitMix as Rng;

/// Which parts of the segment an attack hits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// Record headers shaped like real ones, at the cursors' positions or
    /// anywhere in the ring.
    RecordHeaders,
    /// The cursors' positions and counts, kept below 2^62.
    CursorsBelowLimit,
    /// The cursors' positions and counts, any value (edges included).
    CursorsAnything,
    /// Geometry and identity fields of the header.
    HeaderFields,
    /// Random bytes of the ring.
    RingBytes,
    /// All of the above, in turn.
    Mixed,
}

struct Segment {
    name: ShmName,
    geo: Geometry,
    file: File,
    _buf: SharedBuffer,
}

fn segment(tag: &str) -> Segment {
    let name = ShmName::new(tag);
    let buf = SharedBuffer::create_single(
        name.as_str(),
        &BufferConfig {
            capacity: 16,
            max_message: MAX_MESSAGE,
            budget: 512,
            ..Default::default()
        },
    )
    .expect("create_single");
    let geo = buf.geometry();
    assert!(geo.is_packed(), "single mode uses the packed engine");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .expect("open /dev/shm file");
    Segment {
        geo,
        name,
        file,
        _buf: buf,
    }
}

/// The six cursor words: tail, head, freed; pos then count.
fn cursor_words() -> [u64; 6] {
    let mut w = [0; 6];
    for (i, c) in [
        offset_of!(Header, tail),
        offset_of!(Header, head),
        offset_of!(Header, freed),
    ]
    .into_iter()
    .enumerate()
    {
        w[i] = (c + offset_of!(Cursor, pos)) as u64;
        w[i + 3] = (c + offset_of!(Cursor, count)) as u64;
    }
    w
}

impl Segment {
    fn read_u64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, off).expect("read");
        u64::from_le_bytes(b)
    }

    /// One write of a few bytes at an offset.
    fn scribble(&self, target: Target, rng: &mut Rng) -> (u64, Vec<u8>) {
        let g = &self.geo;
        let ring = g.slots_offset;
        let size = g.ring_bytes;
        let words = cursor_words();
        let target = if target == Target::Mixed {
            [
                Target::RecordHeaders,
                Target::CursorsBelowLimit,
                Target::CursorsAnything,
                Target::HeaderFields,
                Target::RingBytes,
            ][rng.below(5) as usize]
        } else {
            target
        };
        match target {
            Target::RecordHeaders => {
                let (tail, head) = (self.read_u64(words[0]), self.read_u64(words[1]));
                let at = match rng.below(3) {
                    0 => head & !MARK,
                    1 => tail & !MARK,
                    _ => rng.next(),
                };
                let at = (at % size) & !7;
                let count = self.read_u64(words[3 + rng.below(2) as usize]);
                let seq = count.wrapping_add(rng.below(3)).wrapping_sub(1) & SEQ_MASK;
                let max = MAX_MESSAGE as u64;
                let len = match rng.below(6) {
                    0 => rng.below(max + 1),
                    1 => max,
                    2 => max + 1 + rng.below(16),
                    3 => size - at, // a padding's true length
                    4 => (size - at).wrapping_sub(8 * (1 + rng.below(3))), // a wrong one
                    _ => rng.next() as u32 as u64,
                };
                let flags = [COMMIT, COMMIT, COMMIT | PAD, PAD, 0][rng.below(5) as usize];
                let v = flags | seq << 32 | len;
                (ring + at, v.to_le_bytes().to_vec())
            }
            Target::CursorsBelowLimit | Target::CursorsAnything => {
                let i = rng.below(6) as usize;
                let now = self.read_u64(words[i]);
                let mut v = match rng.below(6) {
                    0 => now.wrapping_add(8 * rng.below(16)),
                    1 => now.wrapping_sub(8 * rng.below(16)),
                    2 => now.wrapping_add(rng.below(8)), // misaligned
                    3 => now ^ MARK,
                    4 => rng.below(4096),
                    _ => rng.next(),
                };
                if target == Target::CursorsBelowLimit {
                    v &= (1 << 62) - 1;
                } else if rng.below(4) == 0 {
                    v = [u64::MAX, 1 << 62, 1 << 63, (1 << 62) - 8, u64::MAX - 1]
                        [rng.below(5) as usize];
                }
                (words[i], v.to_le_bytes().to_vec())
            }
            Target::HeaderFields => {
                let end = offset_of!(Header, tail) as u64;
                let off = 8 + rng.below(end - 8);
                (off, vec![rng.next() as u8; 1 + rng.below(4) as usize])
            }
            Target::RingBytes | Target::Mixed => {
                let off = ring + rng.below(size);
                (off, vec![rng.next() as u8; 1 + rng.below(8) as usize])
            }
        }
    }
}

fn hostile_peer(name: &str, role: &str, duration_ms: u64) -> ChildGuard {
    let mut cmd = Command::new(PEER);
    cmd.args(["hostile", "--segment", name, "--role", role])
        .args(["--duration-ms", &duration_ms.to_string()])
        .args(["--op-timeout-ms", "20", "--vary-len", "1"])
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

/// Collects a peer's exit: it must have ended by itself, without a signal
/// or a panic, with 0 or 1 (an error reported, such as a refused open).
fn judge(p: ChildGuard, what: &str) -> String {
    let out = p.output_timeout(PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some(),
        "{what}: died by a signal: {:?}; stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{what}: exit {:?}: {stderr}",
        out.status
    );
    format!("{} {}", stdout.trim(), stderr.trim())
}

/// Runs a producer and a consumer for 1.5 s under attack on `target`,
/// the producer replaced (after a SIGKILL) halfway; returns the outputs.
fn attack(target: Target, seed: u64) -> Vec<String> {
    let seg = segment("hostile-packed");
    let mut consumer = Some(hostile_peer(seg.name.as_str(), "consumer", 1500));
    let mut producer = hostile_peer(seg.name.as_str(), "producer", 1500);
    // Let them open and attach before the first scribble.
    std::thread::sleep(Duration::from_millis(150));
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut writes = 0;
    let mut replaced = None;
    while start.elapsed() < Duration::from_millis(1400) {
        if replaced.is_none() && start.elapsed() > Duration::from_millis(600) {
            // SIGKILL by pid (our own child), reaped; then a replacement,
            // whose attach repairs the dead writer over scribbled state.
            producer.kill();
            let status = producer.wait_timeout(Duration::ZERO);
            replaced = Some(format!("{status:?}"));
            producer = hostile_peer(seg.name.as_str(), "producer", 800);
        }
        let (off, bytes) = seg.scribble(target, &mut rng);
        seg.file.write_all_at(&bytes, off).expect("scribble");
        writes += 1;
        std::thread::sleep(Duration::from_micros(200 + rng.below(800)));
    }
    let mut outs = vec![judge(
        producer,
        &format!("{target:?} (seed {seed}): producer"),
    )];
    if let Some(c) = consumer.take() {
        outs.push(judge(c, &format!("{target:?} (seed {seed}): consumer")));
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
fn packed_scribbled_record_headers() {
    attack(Target::RecordHeaders, seed());
}

#[test]
fn packed_scribbled_cursors_below_2_62() {
    attack(Target::CursorsBelowLimit, seed());
}

#[test]
fn packed_scribbled_cursors_any_value() {
    attack(Target::CursorsAnything, seed());
}

#[test]
fn packed_scribbled_header_fields() {
    attack(Target::HeaderFields, seed());
}

#[test]
fn packed_scribbled_ring_bytes() {
    attack(Target::RingBytes, seed());
}

#[test]
fn packed_scribbled_everything_in_turn() {
    attack(Target::Mixed, seed());
}

/// Counts at `u64::MAX` on a quiet segment, with a record header whose
/// sequence they make due: the next producer's commit and the consumer's
/// release compute `count + 1` (see tests/packed_count_overflow.rs). A
/// debug-built peer must not panic.
#[test]
fn packed_counts_at_u64_max_do_not_panic_peers() {
    let seg = segment("hostile-packed-max");
    let words = cursor_words();
    for w in &words[3..] {
        seg.file
            .write_all_at(&u64::MAX.to_le_bytes(), *w)
            .expect("scribble");
    }
    let peers = [
        hostile_peer(seg.name.as_str(), "producer", 400),
        hostile_peer(seg.name.as_str(), "consumer", 400),
    ];
    for (p, role) in peers.into_iter().zip(["producer", "consumer"]) {
        judge(p, &format!("counts at u64::MAX: {role}"));
    }
}
