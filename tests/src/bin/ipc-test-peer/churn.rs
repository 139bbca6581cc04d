//! Torture trials: producers and consumers in separate processes, SIGKILLed
//! at random points (mid-send, mid-receive, blocked on a full or an empty
//! buffer, holding a write or a read claim, in a tight send loop),
//! replacements attaching to the same segment, then an exact accounting of
//! every message.
//!
//! Every scenario runs on an ordinary (MPMC) segment and on a
//! single-producer/single-consumer one (`SharedBuffer::create_single`, a
//! [`Case`] with `single`), except [`Scenario::UnboundedGrowth`], which runs
//! on an unbounded queue (`SharedBuffer::create_unbounded`, which has no
//! single mode). In single mode only one producer and one
//! consumer are attached at a time: a replacement is sometimes started
//! while the process it replaces still lives, and retries attaching while
//! it is refused with `RoleTaken` (giving up after the patience, which ends
//! the trial with a violation).
//!
//! Shared by `tests/tests/torture.rs` (through `#[path]`) and by
//! `ipc-test-peer churn`, which `scripts/soak.sh` runs for a long time.
//!
//! After each trial:
//! * every surviving peer exits within the patience (a hang is a violation;
//!   nothing else about timing is checked) with an expected code;
//! * no message fails its checksum (torn), none is delivered twice, none
//!   arrives out of order at one consumer, none was never sent;
//! * every message whose send returned success (the producer appended its
//!   sequence number to its ack file after `send` returned) is delivered
//!   exactly once (to a peer or to the final drain), except at most
//!   `lost_reads` of them: messages a consumer held when it was killed, which
//!   the segment counts when it repairs the slot;
//! * `lost_reads` and `abandoned_writes` never exceed the number of consumers
//!   and producers killed;
//! * no producer fails with `NoSpace` ("the queue cannot grow", exit 6 of
//!   the peer) while /dev/shm has room (reported as `NO SPACE`);
//! * once the segment is removed (`SharedBuffer::unlink`), nothing named
//!   `NAME` or `NAME.*` (an unbounded queue's blocks `NAME.bK`) is left in
//!   /dev/shm. Blocks still there before the removal are counted
//!   (`stale_blocks`), not a violation: a sender killed between creating a
//!   block it found stale and removing it leaves one until the queue goes.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::RecvError;
use ipc_tests::{ChildGuard, ShmName};

/// Exit code of a producer that saw every consumer gone.
const EXIT_DISCONNECTED: i32 = 3;

/// Exit code of a producer whose unbounded queue could not grow.
const EXIT_NO_SPACE: i32 = 6;

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// Where and when the kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A producer killed at a random instant while sending; a replacement
    /// producer attaches.
    KillProducer,
    /// A consumer killed at a random instant while receiving (some sleep
    /// inside the receive callback); a replacement consumer attaches.
    KillConsumer,
    /// A producer killed while holding a half-written slot claim.
    ProducerHoldsClaim,
    /// A consumer killed while sleeping inside `recv_with` (holding a read
    /// claim): the message it held is counted in `lost_reads`.
    ConsumerHoldsRead,
    /// A producer killed while blocked on a full buffer (no consumer yet).
    ProducerBlockedFull,
    /// A consumer killed while blocked on an empty buffer (no producer yet).
    ConsumerBlockedEmpty,
    /// The only consumer killed while the producer is blocked on full: the
    /// producer must get `Disconnected`, not hang.
    SoleConsumerDies,
    /// The only producer killed: consumers must get end of stream.
    SoleProducerDies,
    /// Producers killed one after another at random instants (within a
    /// few milliseconds of attaching) of a tight send loop into a roomy
    /// buffer drained by a fast consumer; the last one finishes.
    ProducerTightLoop,
    /// An unbounded queue of small blocks (4-16 messages each, so a new
    /// block every few sends) written by 2-4 producers at once, each killed
    /// 0-3 ms after attaching (often while it creates or opens a block) and
    /// replaced, 4-12 kills per trial, drained by 1-2 consumers. Guards the
    /// defect where a producer failed with "the queue cannot grow: cannot
    /// add block K ... does not exist" when a block vanished between its
    /// create and its open. Ordinary (multi) mode only.
    UnboundedGrowth,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 10] = [
        Scenario::KillProducer,
        Scenario::KillConsumer,
        Scenario::ProducerHoldsClaim,
        Scenario::ConsumerHoldsRead,
        Scenario::ProducerBlockedFull,
        Scenario::ConsumerBlockedEmpty,
        Scenario::SoleConsumerDies,
        Scenario::SoleProducerDies,
        Scenario::ProducerTightLoop,
        Scenario::UnboundedGrowth,
    ];

    /// Whether the scenario also runs on a single-producer/single-consumer
    /// segment (an unbounded queue has no single mode).
    pub fn has_single_mode(self) -> bool {
        self != Scenario::UnboundedGrowth
    }

    /// Every scenario that has a single mode.
    pub fn with_single_mode() -> impl Iterator<Item = Scenario> {
        Scenario::ALL.into_iter().filter(|s| s.has_single_mode())
    }

    /// Short name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillProducer => "kill-producer",
            Scenario::KillConsumer => "kill-consumer",
            Scenario::ProducerHoldsClaim => "producer-holds-claim",
            Scenario::ConsumerHoldsRead => "consumer-holds-read",
            Scenario::ProducerBlockedFull => "producer-blocked-full",
            Scenario::ConsumerBlockedEmpty => "consumer-blocked-empty",
            Scenario::SoleConsumerDies => "sole-consumer-dies",
            Scenario::SoleProducerDies => "sole-producer-dies",
            Scenario::ProducerTightLoop => "producer-tight-loop",
            Scenario::UnboundedGrowth => "unbounded-growth",
        }
    }
}

/// A scenario on one kind of segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Where and when the kill lands.
    pub scenario: Scenario,
    /// The segment is made by `SharedBuffer::create_single`: one producer
    /// and one consumer at a time.
    pub single: bool,
}

impl Case {
    /// `scenario` on an ordinary (MPMC) segment.
    pub fn multi(scenario: Scenario) -> Case {
        Case {
            scenario,
            single: false,
        }
    }

    /// `scenario` on a single-producer/single-consumer segment.
    pub fn single(scenario: Scenario) -> Case {
        Case {
            scenario,
            single: true,
        }
    }

    /// Every scenario on an ordinary segment, then every one that has a
    /// single mode in single mode.
    pub fn all() -> Vec<Case> {
        let multi = Scenario::ALL.iter().map(|&s| Case::multi(s));
        multi
            .chain(Scenario::with_single_mode().map(Case::single))
            .collect()
    }

    /// Short name, for reports: the scenario's, `single-` first in single
    /// mode.
    pub fn name(self) -> &'static str {
        if !self.single {
            return self.scenario.name();
        }
        match self.scenario {
            Scenario::KillProducer => "single-kill-producer",
            Scenario::KillConsumer => "single-kill-consumer",
            Scenario::ProducerHoldsClaim => "single-producer-holds-claim",
            Scenario::ConsumerHoldsRead => "single-consumer-holds-read",
            Scenario::ProducerBlockedFull => "single-producer-blocked-full",
            Scenario::ConsumerBlockedEmpty => "single-consumer-blocked-empty",
            Scenario::SoleConsumerDies => "single-sole-consumer-dies",
            Scenario::SoleProducerDies => "single-sole-producer-dies",
            Scenario::ProducerTightLoop => "single-producer-tight-loop",
            // Not run: an unbounded queue has no single mode (the trial
            // would run on an ordinary unbounded queue).
            Scenario::UnboundedGrowth => "single-unbounded-growth",
        }
    }
}

/// How trials run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `ipc-test-peer` binary.
    pub peer_exe: PathBuf,
    /// How long a surviving peer (or the final drain) may take before it
    /// counts as hung. Generous: the machine is small and noisy.
    pub patience: Duration,
}

/// What one trial saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Seed that drew the trial's parameters.
    pub seed: u64,
    /// Messages whose send returned success.
    pub acked: u64,
    /// Messages delivered (to peers and to the final drain).
    pub received: u64,
    /// Acknowledged messages never delivered.
    pub missing: u64,
    /// The segment's `lost_reads` counter.
    pub lost_reads: u64,
    /// The segment's `abandoned_writes` counter.
    pub abandoned_writes: u64,
    /// Processes killed.
    pub kills: u32,
    /// Peers that were refused with `RoleTaken` at least once before they
    /// attached (single mode: started while the one they replace lived).
    pub role_waits: u32,
    /// Unbounded queue: chain blocks made (the chain's tail index after the
    /// trial; a block remade after its creator died counts once).
    pub blocks: u64,
    /// Unbounded queue: `NAME.bK` files still in /dev/shm after the final
    /// drain, before the queue was removed.
    pub stale_blocks: u64,
    /// Unbounded queue: kills that left the next block half-created (its
    /// file there, unpublished, its creator's lock free), which the
    /// survivors had to remove and make again.
    pub half_created: u32,
    /// Everything that broke a guarantee.
    pub violations: Vec<String>,
    /// Wall time of the trial.
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

#[derive(Debug)]
struct Peer {
    label: String,
    role: Role,
    guard: ChildGuard,
    file: PathBuf,
    err: PathBuf,
    id: u32,
    count: u64,
    killed: bool,
    status: Option<ExitStatus>,
}

struct Trial<'s> {
    settings: &'s Settings,
    rng: Rng,
    name: ShmName,
    dir: PathBuf,
    peers: Vec<Peer>,
    next_id: u32,
    size: u64,
    policies: Vec<&'static str>,
    op_timeouts: Vec<u64>,
    /// The segment is an unbounded queue (`capacity` messages per block).
    unbounded: bool,
    /// Inodes of the half-created blocks counted (one may outlive several
    /// kills: survivors remake it only once it is a second old).
    half_created: HashSet<u64>,
    report: Report,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl<'s> Trial<'s> {
    fn new(settings: &'s Settings, seed: u64, case: Case, capacity: u32) -> Trial<'s> {
        let name = ShmName::new("churn");
        let dir = std::env::temp_dir().join(name.as_str());
        std::fs::create_dir_all(&dir).expect("trial directory");
        let config = BufferConfig {
            capacity,
            max_message: 64,
            ..Default::default()
        };
        let unbounded = case.scenario == Scenario::UnboundedGrowth;
        if unbounded {
            SharedBuffer::create_unbounded(name.as_str(), &config)
        } else if case.single {
            SharedBuffer::create_single(name.as_str(), &config)
        } else {
            SharedBuffer::create(name.as_str(), &config)
        }
        .expect("creating the trial segment");
        let mut rng = Rng::new(seed);
        let size = rng.range(24, 64);
        Trial {
            settings,
            rng,
            name,
            dir,
            peers: Vec::new(),
            next_id: 1,
            size,
            policies: vec!["adaptive", "adaptive", "sleep"],
            op_timeouts: vec![0, 0, 150],
            unbounded,
            half_created: HashSet::new(),
            report: Report {
                scenario: case.name(),
                seed,
                ..Default::default()
            },
        }
    }

    fn spawn(&mut self, role: Role, count: u64, extra: &[String]) -> usize {
        let i = self.peers.len();
        let id = self.next_id;
        self.next_id += 1;
        let label = match role {
            Role::Producer => format!("producer#{i}(id {id})"),
            Role::Consumer => format!("consumer#{i}"),
        };
        let file = self.dir.join(format!("peer{i}"));
        let err = self.dir.join(format!("peer{i}.err"));
        let mut cmd = Command::new(&self.settings.peer_exe);
        let wait = self.rng.pick(&self.policies);
        let op = self.rng.pick(&self.op_timeouts);
        let patience = format!("{}", self.settings.patience.as_secs_f64());
        match role {
            Role::Producer => {
                let zero_copy = self.rng.range(0, 1);
                cmd.args(["produce", "--segment", self.name.as_str()])
                    .args(["--id", &id.to_string(), "--count", &count.to_string()])
                    .args(["--size", &self.size.to_string(), "--ack"])
                    .arg(&file)
                    .args(["--zero-copy", &zero_copy.to_string()]);
            }
            Role::Consumer => {
                cmd.args(["consume", "--segment", self.name.as_str(), "--out"])
                    .arg(&file);
            }
        }
        cmd.args(["--wait", wait, "--op-timeout-ms", &op.to_string()])
            .args(["--patience-s", &patience])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("stderr file"));
        let guard = ChildGuard::new(cmd.spawn().expect("spawning ipc-test-peer"));
        self.peers.push(Peer {
            label,
            role,
            guard,
            file,
            err,
            id,
            count,
            killed: false,
            status: None,
        });
        i
    }

    fn producer(&mut self, count: u64, extra: &[String]) -> usize {
        self.spawn(Role::Producer, count, extra)
    }

    fn consumer(&mut self, min_producers: u32, extra: &[String]) -> usize {
        let mut args = vec!["--min-producers".to_owned(), min_producers.to_string()];
        args.extend_from_slice(extra);
        self.spawn(Role::Consumer, 0, &args)
    }

    fn violation(&mut self, what: String) {
        self.report.violations.push(what);
    }

    /// Waits for `peer`'s marker file (`.ready`, `.hold`); false if the peer
    /// exited first or the patience ran out (the latter is a violation).
    fn wait_marker(&mut self, peer: usize, suffix: &str) -> bool {
        let path = with_suffix(&self.peers[peer].file, suffix);
        let start = Instant::now();
        loop {
            if path.exists() {
                return true;
            }
            let p = &mut self.peers[peer];
            if let Some(st) = p.guard.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                p.status = Some(st);
                return false;
            }
            if start.elapsed() > self.settings.patience {
                let label = self.peers[peer].label.clone();
                self.violation(format!("{label}: no {suffix} marker within the patience"));
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn sleep_ms(&mut self, lo: u64, hi: u64) {
        std::thread::sleep(Duration::from_millis(self.rng.range(lo, hi)));
    }

    fn sleep_us(&mut self, lo: u64, hi: u64) {
        std::thread::sleep(Duration::from_micros(self.rng.range(lo, hi)));
    }

    fn kill(&mut self, peer: usize) {
        let p = &mut self.peers[peer];
        if p.status.is_some() {
            return;
        }
        if let Some(c) = p.guard.0.as_mut() {
            // Child::kill sends SIGKILL to this child's own pid.
            let _ = c.kill();
            p.status = c.wait().ok();
        }
        p.killed = true;
        self.report.kills += 1;
    }

    fn acks(&self, peer: usize) -> usize {
        std::fs::metadata(&self.peers[peer].file).map_or(0, |m| m.len() as usize / 8)
    }

    fn stderr_of(&self, peer: usize) -> String {
        std::fs::read_to_string(&self.peers[peer].err).unwrap_or_default()
    }

    /// Waits for every peer not killed, drains the segment, checks.
    fn finish(mut self, start: Instant) -> Report {
        for i in 0..self.peers.len() {
            if self.peers[i].killed || self.peers[i].status.is_some() {
                continue;
            }
            let patience = self.settings.patience;
            let st = self.peers[i].guard.wait_timeout(patience);
            match st {
                Some(st) => self.peers[i].status = Some(st),
                None => {
                    let label = self.peers[i].label.clone();
                    self.violation(format!("{label} hung: still running after {patience:?}"));
                    self.kill(i);
                    self.report.kills -= 1;
                }
            }
        }
        let consumer_killed = self
            .peers
            .iter()
            .any(|p| p.killed && p.role == Role::Consumer);
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            if p.killed {
                continue;
            }
            let Some(st) = p.status else { continue };
            let ok = match (p.role, st.code()) {
                (_, Some(0)) => true,
                // Every consumer gone while the producer waited for room.
                (Role::Producer, Some(EXIT_DISCONNECTED)) => consumer_killed,
                _ => false,
            };
            let stderr = self.stderr_of(i);
            if p.role == Role::Producer
                && (st.code() == Some(EXIT_NO_SPACE) || stderr.contains("cannot grow"))
            {
                // The trials use a few MiB at most: /dev/shm having room
                // means a growth failure is the library's, not the system's.
                let free = ipc_core::sys::free_bytes("/dev/shm");
                let what = format!(
                    "NO SPACE: {} could not grow the queue while /dev/shm had {} bytes free ({st}): {}",
                    p.label,
                    free.map_or_else(|| "unknown".to_owned(), |f| f.to_string()),
                    stderr.trim()
                );
                self.violation(what);
                continue;
            }
            if !ok {
                let what = format!(
                    "{} ended with {st} ({}): {}",
                    p.label,
                    if st.code().is_none() {
                        "killed by a signal"
                    } else {
                        "unexpected exit code"
                    },
                    stderr.trim()
                );
                self.violation(what);
            }
        }
        self.report.role_waits = self
            .peers
            .iter()
            .filter(|p| with_suffix(&p.file, ".waited").exists())
            .count() as u32;
        let drained = self.drain();
        match ipc_core::admin::inspect(self.name.as_str()) {
            Ok(s) => {
                self.report.lost_reads = s.lost_reads;
                self.report.abandoned_writes = s.abandoned_writes;
            }
            Err(e) => self.violation(format!("inspecting the segment after the trial: {e}")),
        }
        self.account(drained);
        if self.unbounded {
            self.report.blocks = self.chain_tail();
            self.report.stale_blocks = self.files_left().len() as u64;
        }
        self.remove_segment();
        self.report.elapsed = start.elapsed();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.report
    }

    /// The chain's tail block index, read from the header of the main
    /// segment (0 if it cannot be read).
    fn chain_tail(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let offset = std::mem::offset_of!(ipc_core::layout::Header, chain)
            + std::mem::offset_of!(ipc_core::layout::Chain, tail_block);
        let mut word = [0u8; 8];
        std::fs::File::open(self.name.path())
            .and_then(|f| f.read_exact_at(&mut word, offset as u64))
            .map_or(0, |()| u64::from_le_bytes(word))
    }

    /// After a kill: whether the block after the chain's tail is there but
    /// unpublished (magic still zero) with nobody holding its creator's
    /// `flock`, i.e. the killed producer died creating it (each such file
    /// is counted once, by inode). A live creator
    /// holds the lock from just after its exclusive create until it
    /// publishes; our probe, like the library's own, only tries the lock
    /// without blocking, so at most it delays a creator by a few
    /// microseconds.
    fn left_half_created(&mut self) -> bool {
        use std::os::unix::fs::{FileExt, MetadataExt};
        use std::os::unix::io::AsRawFd;
        let path = PathBuf::from(format!("/dev/shm/{}.b{}", self.name, self.chain_tail() + 1));
        let Ok(file) = std::fs::File::open(&path) else {
            return false;
        };
        // SAFETY: flock on a descriptor we own; closing it releases it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return false;
        }
        let mut magic = [0u8; 8];
        let unpublished = file.read_exact_at(&mut magic, 0).is_err() || magic == [0u8; 8];
        unpublished
            && file
                .metadata()
                .is_ok_and(|m| self.half_created.insert(m.ino()))
    }

    /// Files of /dev/shm named `NAME.*`: an unbounded queue's blocks.
    fn files_left(&self) -> Vec<String> {
        let prefix = format!("{}.", self.name.as_str());
        std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|f| f.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the segment as a user would (`SharedBuffer::unlink`, which
    /// takes an unbounded queue's blocks along) and checks that nothing of
    /// it is left in /dev/shm. (`ShmName`'s drop sweeps up after us
    /// whatever the outcome.)
    fn remove_segment(&mut self) {
        if let Err(e) = SharedBuffer::unlink(self.name.as_str()) {
            self.violation(format!("removing the segment after the trial: {e}"));
        }
        let mut left = self.files_left();
        if self.name.path().exists() {
            left.push(self.name.as_str().to_owned());
        }
        if !left.is_empty() {
            left.sort();
            self.violation(format!(
                "left in /dev/shm after SharedBuffer::unlink: {}",
                left.join(", ")
            ));
        }
    }

    /// Receives what is left, as a last consumer.
    fn drain(&mut self) -> Vec<(u32, u64)> {
        let mut got = Vec::new();
        let buf = match SharedBuffer::open(self.name.as_str()) {
            Ok(b) => b,
            Err(e) => {
                self.violation(format!("final drain cannot open the segment: {e}"));
                return got;
            }
        };
        let mut rx = match buf.consumer() {
            Ok(rx) => rx,
            Err(e) => {
                self.violation(format!("final drain cannot attach: {e}"));
                return got;
            }
        };
        loop {
            match rx.recv_timeout(self.settings.patience) {
                Ok(m) => got.push(ipc_core::synthetic::decode(&m).unwrap_or((u32::MAX, u64::MAX))),
                Err(RecvError::Disconnected) => break,
                Err(e) => {
                    self.violation(format!("final drain: {e}"));
                    break;
                }
            }
        }
        got
    }

    fn account(&mut self, drained: Vec<(u32, u64)>) {
        let mut counts: HashMap<u32, u64> = HashMap::new();
        let mut acked: Vec<(u32, u64)> = Vec::new();
        for p in self.peers.iter().filter(|p| p.role == Role::Producer) {
            counts.insert(p.id, p.count);
            let bytes = std::fs::read(&p.file).unwrap_or_default();
            for (k, c) in bytes.chunks_exact(8).enumerate() {
                let seq = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                if seq != k as u64 {
                    self.report
                        .violations
                        .push(format!("{}: ack file out of order", p.label));
                }
                acked.push((p.id, seq));
            }
        }
        let mut streams: Vec<(String, Vec<(u32, u64)>)> = self
            .peers
            .iter()
            .filter(|p| p.role == Role::Consumer)
            .map(|p| {
                let bytes = std::fs::read(&p.file).unwrap_or_default();
                let recs = bytes
                    .chunks_exact(12)
                    .map(|c| {
                        (
                            u32::from_le_bytes(c[..4].try_into().expect("4 bytes")),
                            u64::from_le_bytes(c[4..].try_into().expect("8 bytes")),
                        )
                    })
                    .collect();
                (p.label.clone(), recs)
            })
            .collect();
        streams.push(("final drain".to_owned(), drained));
        let mut seen: HashSet<(u32, u64)> = HashSet::new();
        let mut problems = Vec::new();
        for (label, recs) in &streams {
            let mut last: HashMap<u32, u64> = HashMap::new();
            for &(id, seq) in recs {
                self.report.received += 1;
                if id == u32::MAX && seq == u64::MAX {
                    problems.push(format!("{label} received a torn or corrupt message"));
                    continue;
                }
                if counts.get(&id).is_none_or(|&n| seq >= n) {
                    problems.push(format!("{label} received ({id}, {seq}), never sent"));
                    continue;
                }
                if !seen.insert((id, seq)) {
                    problems.push(format!("({id}, {seq}) delivered twice"));
                }
                if last.get(&id).is_some_and(|&l| seq <= l) {
                    problems.push(format!("{label} received ({id}, {seq}) out of order"));
                }
                last.insert(id, seq);
            }
        }
        self.report.acked = acked.len() as u64;
        let missing: Vec<_> = acked.iter().filter(|m| !seen.contains(m)).collect();
        self.report.missing = missing.len() as u64;
        if self.report.missing > self.report.lost_reads {
            problems.push(format!(
                "{} acknowledged messages never delivered (lost_reads {}): {:?}",
                missing.len(),
                self.report.lost_reads,
                &missing[..missing.len().min(8)]
            ));
        }
        let killed = |role| {
            self.peers
                .iter()
                .filter(|p| p.killed && p.role == role)
                .count() as u64
        };
        if self.report.lost_reads > killed(Role::Consumer) {
            problems.push(format!(
                "lost_reads {} but only {} consumers killed",
                self.report.lost_reads,
                killed(Role::Consumer)
            ));
        }
        if self.report.abandoned_writes > killed(Role::Producer) {
            problems.push(format!(
                "abandoned_writes {} but only {} producers killed",
                self.report.abandoned_writes,
                killed(Role::Producer)
            ));
        }
        self.report.violations.extend(problems);
    }
}

/// Runs one trial of `case`, its parameters drawn from `seed`.
///
/// In single mode a scenario has one producer and one consumer where the
/// ordinary one may draw two, and a replacement is started, at random,
/// either after the kill or before it (then it waits for the role).
pub fn run_trial(settings: &Settings, case: Case, seed: u64) -> Report {
    let start = Instant::now();
    let single = case.single;
    let mut rng = Rng::new(seed ^ 0x5eed);
    let capacity = match case.scenario {
        Scenario::ProducerTightLoop => rng.pick(&[4, 16, 64]),
        // Messages per block: a new block every few sends.
        Scenario::UnboundedGrowth => rng.pick(&[4, 8, 16]),
        _ => rng.pick(&[1, 2, 3, 4, 8]),
    } as u32;
    let count = rng.range(50, 300);
    let mut t = Trial::new(settings, seed, case, capacity);
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // How many producers or consumers run side by side: one in single mode.
    let one_or_two = |rng: &mut Rng| if single { 1 } else { rng.range(1, 2) };
    // Single mode: start the replacement before the kill (true) or after.
    let early = |rng: &mut Rng| single && rng.range(0, 1) == 1;
    match case.scenario {
        Scenario::KillProducer => {
            let np = one_or_two(&mut rng) as u32;
            for _ in 0..one_or_two(&mut rng) {
                t.consumer(np + 1, &[]);
            }
            let ps: Vec<usize> = (0..np).map(|_| t.producer(count, &[])).collect();
            let victim = rng.pick(&ps);
            let early = early(&mut rng);
            if t.wait_marker(victim, ".ready") {
                if early {
                    t.producer(count, &[]);
                }
                t.sleep_ms(0, 40);
                t.kill(victim);
            }
            if !early {
                t.producer(count, &[]);
            }
        }
        Scenario::KillConsumer => {
            let np = one_or_two(&mut rng) as u32;
            let slow = rng.pick(&[0u64, 0, 50, 300]).to_string();
            let cs: Vec<usize> = (0..one_or_two(&mut rng))
                .map(|_| t.consumer(np, &args(&["--slow-us", &slow])))
                .collect();
            for _ in 0..np {
                t.producer(count, &[]);
            }
            let victim = rng.pick(&cs);
            let early = early(&mut rng);
            if t.wait_marker(victim, ".ready") {
                if early {
                    t.consumer(np, &[]);
                }
                t.sleep_ms(0, 40);
                t.kill(victim);
            }
            if !early {
                t.consumer(np, &[]);
            }
        }
        Scenario::ProducerHoldsClaim => {
            let np = one_or_two(&mut rng) as u32;
            for _ in 0..one_or_two(&mut rng) {
                t.consumer(np + 1, &[]);
            }
            let hold = rng.range(0, count / 2).to_string();
            let holder = t.producer(count, &args(&["--hold-after", &hold]));
            for _ in 1..np {
                t.producer(count, &[]);
            }
            let early = early(&mut rng);
            if t.wait_marker(holder, ".hold") {
                if early {
                    t.producer(count, &[]);
                }
                t.sleep_ms(0, 30);
                t.kill(holder);
            }
            if !early {
                t.producer(count, &[]);
            }
        }
        Scenario::ConsumerHoldsRead => {
            let np = one_or_two(&mut rng) as u32;
            let hold = rng.range(1, 5).to_string();
            let holder = t.consumer(np, &args(&["--hold-at", &hold]));
            if !single && rng.range(0, 1) == 1 {
                t.consumer(np, &[]);
            }
            for _ in 0..np {
                t.producer(count, &[]);
            }
            let early = early(&mut rng);
            if t.wait_marker(holder, ".hold") {
                if early {
                    t.consumer(np, &[]);
                }
                t.sleep_ms(0, 30);
                t.kill(holder);
            }
            if !early {
                t.consumer(np, &[]);
            }
        }
        Scenario::ProducerBlockedFull => {
            let victim = t.producer(count.max(capacity as u64 + 1), &[]);
            let start = Instant::now();
            while t.acks(victim) < capacity as usize && start.elapsed() < settings.patience {
                std::thread::sleep(Duration::from_millis(1));
            }
            let early = early(&mut rng);
            if early {
                t.producer(count, &[]);
            }
            t.sleep_ms(0, 30);
            t.kill(victim);
            for _ in 0..one_or_two(&mut rng) {
                t.consumer(2, &[]);
            }
            if !early {
                t.producer(count, &[]);
            }
        }
        Scenario::ConsumerBlockedEmpty => {
            let np = one_or_two(&mut rng) as u32;
            // Two consumers, one killed; in single mode one, then its
            // replacement.
            let cs: Vec<usize> = (0..if single { 1 } else { 2 })
                .map(|_| t.consumer(np, &[]))
                .collect();
            for &c in &cs {
                t.wait_marker(c, ".ready");
            }
            let early = early(&mut rng);
            if early {
                t.consumer(np, &[]);
            }
            t.sleep_ms(0, 150);
            t.kill(rng.pick(&cs));
            if single && !early {
                t.consumer(np, &[]);
            }
            for _ in 0..np {
                t.producer(count, &[]);
            }
        }
        Scenario::SoleConsumerDies => {
            let slow = rng.range(200, 1000).to_string();
            let c = t.consumer(1, &args(&["--slow-us", &slow]));
            t.producer(2000, &[]);
            if t.wait_marker(c, ".ready") {
                t.sleep_ms(5, 60);
                t.kill(c);
            }
        }
        Scenario::SoleProducerDies => {
            for _ in 0..one_or_two(&mut rng) {
                t.consumer(1, &[]);
            }
            let p = t.producer(1000, &[]);
            if t.wait_marker(p, ".ready") {
                t.sleep_ms(0, 50);
                t.kill(p);
            }
        }
        Scenario::ProducerTightLoop => {
            let kills = rng.range(4, 12) as u32;
            // Never finishes by itself: it is always killed mid-loop.
            let endless = 100_000_000;
            // Never killed, so it may record in batches: faster than the
            // producers, which then spend their time sending, not waiting.
            t.consumer(kills + 1, &args(&["--buffered", "1"]));
            let mut victim = t.producer(endless, &[]);
            for k in 0..kills {
                let last = k + 1 == kills;
                let n = if last { count } else { endless };
                let early = early(&mut rng);
                let mut next = None;
                if t.wait_marker(victim, ".ready") {
                    if early {
                        next = Some(t.producer(n, &[]));
                    }
                    t.sleep_us(0, 2000);
                    t.kill(victim);
                }
                victim = next.unwrap_or_else(|| t.producer(n, &[]));
            }
        }
        Scenario::UnboundedGrowth => {
            let lanes = rng.range(2, 4) as usize;
            let kills = rng.range(4, 12);
            // Which lane each kill hits; a lane's last producer is never
            // killed and sends `count` messages, the others more than they
            // can send in the few milliseconds before their kill (they
            // never wait: an unbounded queue is never full).
            let mut plan = vec![0u64; lanes];
            for _ in 0..kills {
                plan[rng.range(0, lanes as u64 - 1) as usize] += 1;
            }
            let doomed = 100_000;
            // Never killed: they may record in batches, and so keep up.
            let total = (lanes as u64 + kills) as u32;
            let cs: Vec<usize> = (0..rng.range(1, 2))
                .map(|_| {
                    let batch = rng.range(0, 1).to_string();
                    t.consumer(total, &args(&["--buffered", &batch]))
                })
                .collect();
            for &c in &cs {
                t.wait_marker(c, ".ready");
            }
            let spawn =
                |t: &mut Trial, left: u64| t.producer(if left == 0 { count } else { doomed }, &[]);
            let mut current: Vec<usize> = plan.iter().map(|&left| spawn(&mut t, left)).collect();
            while plan.iter().any(|&left| left > 0) {
                let lane = loop {
                    let l = rng.range(0, lanes as u64 - 1) as usize;
                    if plan[l] > 0 {
                        break l;
                    }
                };
                let victim = current[lane];
                if t.wait_marker(victim, ".ready") {
                    // Within 3 ms of attaching, a third of the time at once:
                    // its first sends open (or create) the tail block.
                    if rng.range(0, 2) > 0 {
                        t.sleep_us(0, 3000);
                    }
                    t.kill(victim);
                    if t.left_half_created() {
                        t.report.half_created += 1;
                    }
                }
                plan[lane] -= 1;
                current[lane] = spawn(&mut t, plan[lane]);
            }
        }
    }
    t.finish(start)
}

/// Totals over many trials.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Trials run.
    pub trials: u64,
    /// Processes killed.
    pub kills: u64,
    /// Messages acknowledged to producers.
    pub acked: u64,
    /// Messages delivered.
    pub received: u64,
    /// Acknowledged messages lost with a killed consumer.
    pub missing: u64,
    /// Sum of `lost_reads`.
    pub lost_reads: u64,
    /// Sum of `abandoned_writes`.
    pub abandoned_writes: u64,
    /// Peers that had to retry attaching while their role was taken.
    pub role_waits: u64,
    /// Unbounded chain blocks made.
    pub blocks: u64,
    /// Blocks left after the final drain, before the queue was removed.
    pub stale_blocks: u64,
    /// Kills that left a block half-created.
    pub half_created: u64,
    /// Trials with a violation, with their reports.
    pub failed: Vec<Report>,
    /// Longest trial.
    pub longest: Duration,
}

impl Summary {
    /// Adds a trial.
    pub fn add(&mut self, r: Report) {
        self.trials += 1;
        self.kills += r.kills as u64;
        self.acked += r.acked;
        self.received += r.received;
        self.missing += r.missing;
        self.lost_reads += r.lost_reads;
        self.abandoned_writes += r.abandoned_writes;
        self.role_waits += r.role_waits as u64;
        self.blocks += r.blocks;
        self.stale_blocks += r.stale_blocks;
        self.half_created += r.half_created as u64;
        self.longest = self.longest.max(r.elapsed);
        if !r.violations.is_empty() {
            self.failed.push(r);
        }
    }

    /// One line.
    pub fn line(&self) -> String {
        format!(
            "trials={} kills={} acked={} received={} lost_reads={} missing={} abandoned_writes={} role_waits={} blocks={} half_created_blocks={} stale_blocks={} longest_trial={:.2}s violations={}",
            self.trials,
            self.kills,
            self.acked,
            self.received,
            self.lost_reads,
            self.missing,
            self.abandoned_writes,
            self.role_waits,
            self.blocks,
            self.half_created,
            self.stale_blocks,
            self.longest.as_secs_f64(),
            self.failed.iter().map(|r| r.violations.len()).sum::<usize>()
        )
    }
}

/// Runs trials on `parallel` threads until `more(trials_started)` says stop.
/// Trial `i` uses case `cases[i % len]` and seed `seed + i`.
pub fn run_many(
    settings: &Settings,
    cases: &[Case],
    seed: u64,
    parallel: usize,
    more: impl Fn(usize) -> bool + Sync,
    on_report: impl Fn(&Report) + Sync,
) -> Summary {
    let next = AtomicUsize::new(0);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if !more(i) {
                    break;
                }
                let case = cases[i % cases.len()];
                let r = run_trial(settings, case, seed.wrapping_add(i as u64));
                on_report(&r);
                summary.lock().expect("summary").add(r);
            });
        }
    });
    summary.into_inner().expect("summary")
}

/// A seed from the clock, or from `TORTURE_SEED`.
pub fn seed_from_env() -> u64 {
    std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// `ipc-test-peer churn`: runs trials of every case of `mode` (`all`,
/// `multi` or `single`) in turn for `duration_s` seconds (or `trials`
/// trials), prints one summary line per case and a total line, returns the
/// exit code (1 on any violation, 2 on a bad mode).
pub fn main(
    peer_exe: PathBuf,
    duration_s: Option<f64>,
    trials: Option<usize>,
    parallel: usize,
    seed: Option<u64>,
    mode: &str,
) -> i32 {
    let cases: Vec<Case> = match mode {
        "all" => Case::all(),
        "multi" => Scenario::ALL.iter().map(|&s| Case::multi(s)).collect(),
        "single" => Scenario::with_single_mode().map(Case::single).collect(),
        other => {
            eprintln!("churn: --mode {other:?}: all, multi or single");
            return 2;
        }
    };
    let seed = seed.unwrap_or_else(seed_from_env);
    let settings = Settings {
        peer_exe,
        patience: Duration::from_secs(30),
    };
    let start = Instant::now();
    let limit = duration_s.map(Duration::from_secs_f64);
    eprintln!(
        "churn: seed {seed}, {parallel} trials at a time, {} cases ({mode}), {}",
        cases.len(),
        match (limit, trials) {
            (_, Some(n)) => format!("{n} trials"),
            (Some(d), None) => format!("for {d:?}"),
            (None, None) => "60 s".to_owned(),
        }
    );
    let limit = limit.unwrap_or(Duration::from_secs(60));
    let last_line = Mutex::new(Instant::now());
    let per_case: Mutex<Vec<Summary>> = Mutex::new(vec![Summary::default(); cases.len()]);
    let summary = run_many(
        &settings,
        &cases,
        seed,
        parallel,
        |i| match trials {
            Some(n) => i < n,
            None => start.elapsed() < limit,
        },
        |r| {
            if let Some(k) = cases.iter().position(|c| c.name() == r.scenario) {
                per_case.lock().expect("per case")[k].add(r.clone());
            }
            for v in &r.violations {
                eprintln!("churn: VIOLATION [{} seed {}] {v}", r.scenario, r.seed);
            }
            let mut last = last_line.lock().expect("progress");
            if last.elapsed() > Duration::from_secs(10) {
                *last = Instant::now();
                eprintln!("churn: {:.0} s elapsed", start.elapsed().as_secs_f64());
            }
        },
    );
    let per_case = per_case.into_inner().expect("per case");
    for (case, s) in cases.iter().zip(&per_case) {
        println!("scenario={} {}", case.name(), s.line());
    }
    println!("{}", summary.line());
    if summary.failed.is_empty() {
        0
    } else {
        1
    }
}
