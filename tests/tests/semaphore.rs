//! `ipc_core::sync::Semaphore` across processes: the semaphore is written
//! into a shared-memory segment by this test and used through the same
//! memory by `sem-peer` processes (see `tests/src/bin/sem-peer.rs`).
//!
//! * ping-pong on two semaphores, 1000 rounds, with the default
//!   spin-then-sleep policy and with sleeping at once: every post lets
//!   exactly one wait through;
//! * a peer asleep in `wait()` (seen in a futex wait in /proc/PID/wchan)
//!   is woken by a post from this process;
//! * `wait_timeout` gives up when no permit comes, and returns true when a
//!   permit is posted while it sleeps;
//! * N permits shared by 3 competing peer processes are taken exactly once.
//!
//! No timings are asserted; timeouts only turn a hang into a failure.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_core::segment::Segment;
use ipc_core::sync::Semaphore;
use ipc_tests::{ChildGuard, ShmName, PATIENCE};

const PEER: &str = env!("CARGO_BIN_EXE_sem-peer");

/// The block at the base of the segment; the same definition as in
/// `sem-peer` (both sides compile it identically).
#[repr(C)]
struct Shared {
    a: Semaphore,
    b: Semaphore,
    taken: AtomicU64,
    stop: AtomicU32,
}

/// A segment holding a [`Shared`], unlinked (by its [`ShmName`]) on drop.
struct Shm {
    seg: Segment,
    name: ShmName,
}

impl Shm {
    /// A fresh segment with semaphores `a` and `b` holding these permits.
    fn new(tag: &str, a: u32, b: u32) -> Shm {
        let name = ShmName::new(tag);
        let seg = Segment::create(name.as_str(), 4096, 0o600).expect("create segment");
        let base = seg.as_ptr().cast::<Shared>();
        assert!(seg.len() >= std::mem::size_of::<Shared>());
        assert!(base.is_aligned());
        // SAFETY: `base` points to the start of a fresh, page-aligned,
        // writable mapping of 4096 bytes (checked large enough and aligned
        // above) that no other process has opened yet and no Rust reference
        // points into; writing a whole `Shared` initialises it.
        unsafe {
            std::ptr::write(
                base,
                Shared {
                    a: Semaphore::new(a),
                    b: Semaphore::new(b),
                    taken: AtomicU64::new(0),
                    stop: AtomicU32::new(0),
                },
            )
        };
        Shm { seg, name }
    }

    fn shared(&self) -> &Shared {
        // SAFETY: `new` initialised a `Shared` at the base of the mapping,
        // which lives as long as `self`; every field is an atomic, so other
        // processes writing it concurrently is sound.
        unsafe { &*self.seg.as_ptr().cast::<Shared>() }
    }

    fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// A running `sem-peer`, killed by its PID on drop, with its stdout read
/// line by line on a thread.
struct Peer {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(PEER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sem-peer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child: ChildGuard::new(child),
            lines,
        }
    }

    /// The next line the peer prints; panics if none comes in [`PATIENCE`].
    fn line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("sem-peer {}: no line ({e})", self.child.pid()))
    }

    /// Waits until the peer sleeps in a futex wait: it is single-threaded
    /// and does nothing else that waits on a futex.
    fn wait_blocked(&self) {
        let path = format!("/proc/{}/wchan", self.child.pid());
        let start = Instant::now();
        loop {
            let wchan = std::fs::read_to_string(&path).unwrap_or_default();
            if wchan.contains("futex") {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "sem-peer never blocked (wchan {wchan:?})"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Still running?
    fn running(&mut self) -> bool {
        let child = self.child.0.as_mut().expect("child");
        child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for a successful exit.
    fn finish(mut self) {
        let st = self
            .child
            .wait_timeout(PATIENCE)
            .unwrap_or_else(|| panic!("sem-peer {} did not exit", self.child.pid()));
        assert!(st.success(), "sem-peer failed: {st:?}");
    }
}

fn ping_pong(policy: Option<&str>) {
    const ROUNDS: u64 = 1000;
    let shm = Shm::new("sem-pong", 0, 0);
    let sh = shm.shared();
    let rounds = ROUNDS.to_string();
    let mut args = vec!["pong", shm.name(), &rounds];
    args.extend(policy);
    let peer = Peer::spawn(&args);
    for i in 1..=ROUNDS {
        sh.a.post();
        assert!(sh.b.wait_timeout(PATIENCE), "round {i}: no answer");
        // The peer passed its wait exactly once for this post, and has
        // nothing more to take.
        assert_eq!(sh.taken.load(Ordering::SeqCst), i, "round {i}");
        assert_eq!(sh.a.value(), 0, "round {i}: a permit left over");
    }
    assert_eq!(peer.line(), format!("pong rounds={ROUNDS}"));
    peer.finish();
    assert_eq!((sh.a.value(), sh.b.value()), (0, 0));
}

#[test]
fn ping_pong_between_two_processes() {
    ping_pong(None);
}

#[test]
fn ping_pong_sleeping_at_once() {
    ping_pong(Some("sleep"));
}

#[test]
fn a_post_wakes_a_peer_asleep_in_wait() {
    let shm = Shm::new("sem-wake", 0, 0);
    let sh = shm.shared();
    let mut peer = Peer::spawn(&["wait", shm.name()]);
    assert_eq!(peer.line(), "waiting");
    peer.wait_blocked();
    assert!(peer.running());
    assert_eq!(sh.taken.load(Ordering::SeqCst), 0);
    sh.a.post();
    assert_eq!(peer.line(), "woken");
    peer.finish();
    assert_eq!(sh.taken.load(Ordering::SeqCst), 1);
    assert_eq!(sh.a.value(), 0);
}

#[test]
fn wait_timeout_gives_up_without_a_permit() {
    let shm = Shm::new("sem-tmo", 0, 0);
    let sh = shm.shared();
    let peer = Peer::spawn(&["timeout", shm.name(), "50"]);
    assert_eq!(peer.line(), "waiting");
    assert_eq!(peer.line(), "got=false");
    peer.finish();
    assert_eq!(sh.taken.load(Ordering::SeqCst), 0);
    // The permit posted now stays for the next taker.
    sh.a.post();
    assert_eq!(sh.a.value(), 1);
    // In this process too: a free permit is taken, then there is none.
    assert!(sh.a.wait_timeout(Duration::from_millis(50)));
    assert!(!sh.a.wait_timeout(Duration::from_millis(50)));
}

#[test]
fn wait_timeout_returns_true_when_a_permit_comes() {
    let shm = Shm::new("sem-tmo-ok", 0, 0);
    let sh = shm.shared();
    let patience = PATIENCE.as_millis().to_string();
    let mut peer = Peer::spawn(&["timeout", shm.name(), &patience]);
    assert_eq!(peer.line(), "waiting");
    peer.wait_blocked();
    assert!(peer.running());
    sh.a.post();
    assert_eq!(peer.line(), "got=true");
    peer.finish();
    assert_eq!(sh.taken.load(Ordering::SeqCst), 1);
    assert_eq!(sh.a.value(), 0);
}

#[test]
fn permits_are_taken_exactly_once_by_competing_processes() {
    const PERMITS: u64 = 3000;
    const PEERS: usize = 3;
    let shm = Shm::new("sem-mpmc", 0, 0);
    let sh = shm.shared();
    let peers: Vec<Peer> = (0..PEERS)
        .map(|_| Peer::spawn(&["take", shm.name()]))
        .collect();
    // All of them asleep on the empty semaphore before the first post.
    for p in &peers {
        p.wait_blocked();
    }
    for _ in 0..PERMITS {
        sh.a.post();
    }
    let start = Instant::now();
    while sh.taken.load(Ordering::SeqCst) < PERMITS {
        assert!(
            start.elapsed() < PATIENCE,
            "only {} of {PERMITS} permits taken",
            sh.taken.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sh.a.value(), 0, "a permit was not taken");
    // Every work permit is counted: now one stop permit per peer.
    sh.stop.store(1, Ordering::SeqCst);
    for _ in 0..PEERS {
        sh.a.post();
    }
    let mut total = 0;
    for p in peers {
        let line = p.line();
        let took: u64 = line
            .strip_prefix("took=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        total += took;
        p.finish();
    }
    assert_eq!(total, PERMITS);
    assert_eq!(sh.taken.load(Ordering::SeqCst), PERMITS);
    assert_eq!(sh.a.value(), 0, "a stop permit was left over");
}
