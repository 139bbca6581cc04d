//! Processes, hand-shakes, deadlines and the two measurements every
//! contender shares: one-way throughput and round-trip latency.
//!
//! Each measurement forks: the parent keeps one end of the channel, the
//! child the other. The benchmark process has no threads, so `fork` is safe;
//! the child ends with `_exit`, so it never runs the parent's destructors
//! (which unlink segments and queues). Every child is killed and reaped by
//! PID when its [`Child`] guard drops.
//!
//! The hand-shake is the same for every contender, so that no contender
//! pays for another's set-up: the parent builds its ends, says *go*; each
//! child builds its ends, says *ready*; the parent says *go* again and
//! the measurement starts.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// How the ends of a channel wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Busy-wait (bounded), then fall back to sleeping.
    Spin,
    /// Sleep in the kernel at once.
    Sleep,
}

impl Mode {
    /// Both modes, in report order.
    pub const ALL: [Mode; 2] = [Mode::Spin, Mode::Sleep];

    /// A word for tables.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Spin => "spinning",
            Mode::Sleep => "sleeping",
        }
    }
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// One-way messages per second.
    Throughput,
    /// Ping-pong round-trip time.
    RoundTrip,
}

/// How long a spinning wait busy-waits before it yields or sleeps: the
/// budget of `ipc_core::sync::SpinPolicy::SPIN`, so that every contender
/// spins as long as ipc-core does.
pub const SPIN_BUDGET: Duration = ipc_core::sync::SpinPolicy::SPIN.spin;

/// The busy-wait budget of one wait: [`Spin::more`] says whether to keep
/// spinning.
#[derive(Debug, Default)]
pub struct Spin {
    started: Option<Instant>,
    tries: u32,
    spent: bool,
}

impl Spin {
    /// A fresh budget (the clock starts at the first failed try).
    pub fn new() -> Spin {
        Spin::default()
    }

    /// Counts one failed try; true while the [`SPIN_BUDGET`] lasts (the
    /// clock is read every 64 tries).
    pub fn more(&mut self) -> bool {
        if !self.spent {
            self.tries = self.tries.wrapping_add(1);
            let started = *self.started.get_or_insert_with(Instant::now);
            self.spent = self.tries.is_multiple_of(64) && started.elapsed() >= SPIN_BUDGET;
        }
        !self.spent
    }
}

/// The monotonic clock, nanoseconds, comparable across processes.
pub fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// When the current measurement gives up (monotonic nanoseconds).
static DEADLINE_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets the deadline of the current measurement (in this process).
pub fn set_deadline(timeout: Duration) {
    DEADLINE_NS.store(now_ns() + timeout.as_nanos() as u64, Ordering::Relaxed);
}

/// Set by SIGINT or SIGTERM: stop, clean up, exit 130.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fails once the current measurement's deadline has passed or the run was
/// interrupted.
pub fn check_deadline() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    if now_ns() > DEADLINE_NS.load(Ordering::Relaxed) {
        bail!("timed out");
    }
    Ok(())
}

/// How long a timed run may last before it stops early and reports what
/// it measured so far (calibration is only an estimate on a noisy
/// machine).
static TIME_BOX_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets the time box of timed runs (see [`TIME_BOX_NS`]).
pub fn set_time_box(d: Duration) {
    TIME_BOX_NS.store(d.as_nanos() as u64, Ordering::Relaxed);
}

/// True once a timed run that started at `start` has used its time box.
pub fn boxed_out(start: Instant) -> bool {
    start.elapsed().as_nanos() as u64 > TIME_BOX_NS.load(Ordering::Relaxed)
}

/// Calls `poll_once` until it yields a value: spins for [`SPIN_BUDGET`],
/// then yields the CPU between tries, checking the deadline every 1024
/// tries.
pub fn spin_until<T>(mut poll_once: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let mut spin = Spin::new();
    let mut spinning = true;
    loop {
        for _ in 0..1024 {
            if let Some(v) = poll_once()? {
                return Ok(v);
            }
            if spinning {
                spinning = spin.more();
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        check_deadline()?;
    }
}

/// A fresh name part: process id and a counter, so that names never clash
/// with another run or another measurement.
pub fn unique(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "ipc-bench-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

extern "C" fn on_alarm(_: libc::c_int) {}

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes SIGALRM interrupt blocking system calls of the parent (no
/// `SA_RESTART`) instead of killing it, so that a measurement stuck in
/// `read` fails with `EINTR` and cleans up. Call once at start.
pub fn install_alarm_handler() -> Result<()> {
    let action = signal::SigAction::new(
        SigHandler::Handler(on_alarm),
        signal::SaFlags::empty(),
        signal::SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { signal::sigaction(Signal::SIGALRM, &action) }.context("installing SIGALRM handler")?;
    let action = signal::SigAction::new(
        SigHandler::Handler(on_interrupt),
        signal::SaFlags::empty(),
        signal::SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic: async-signal-safe.
        unsafe { signal::sigaction(sig, &action) }.context("installing SIGINT handler")?;
    }
    Ok(())
}

/// A forked child process, killed (SIGKILL) and reaped on drop unless
/// [`Child::wait`] reaped it.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    reaped: bool,
}

impl Child {
    /// Forks; the child runs `body` and exits (0 on success, 1 on error,
    /// 101 on panic), killed by SIGALRM after `timeout` and by SIGKILL if
    /// the parent dies.
    pub fn spawn(timeout: Duration, body: impl FnOnce() -> Result<()>) -> Result<Child> {
        // SAFETY: the benchmark process is single-threaded (no thread is
        // ever started), so the child's copy of the heap and of every lock
        // is consistent.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Parent { child } => Ok(Child {
                pid: child,
                reaped: false,
            }),
            ForkResult::Child => {
                let code = child_main(timeout, body);
                // SAFETY: `_exit` ends the process without running atexit
                // handlers or the destructors of the parent's objects that
                // this copy of the stack still holds (they would unlink the
                // parent's segments and queues).
                unsafe { libc::_exit(code) }
            }
        }
    }

    /// Waits for the child and fails unless it exited with status 0.
    pub fn wait(mut self) -> Result<()> {
        let status = waitpid(self.pid, None).context("waitpid")?;
        self.reaped = true;
        match status {
            WaitStatus::Exited(_, 0) => Ok(()),
            other => Err(anyhow!("child {} ended with {other:?}", self.pid)),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = signal::kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

fn child_main(timeout: Duration, body: impl FnOnce() -> Result<()>) -> i32 {
    // SAFETY: plain prctl call; asks the kernel to kill us if the parent
    // dies, so no child outlives an interrupted benchmark.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    for sig in [Signal::SIGALRM, Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default action is always sound.
        let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    }
    let _ = nix::unistd::alarm::set(timeout.as_secs().max(1) as u32);
    set_deadline(timeout);
    match std::panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("ipc-bench child {}: {e:#}", std::process::id());
            1
        }
        Err(_) => 101,
    }
}

/// Pipes for the hand-shake between the parent and its children: one per
/// phase for the parent's go-aheads (so that a quick child cannot take a
/// second child's go-ahead), one for the children's answers.
#[derive(Debug)]
pub struct Handshake {
    build: (OwnedFd, OwnedFd),
    start: (OwnedFd, OwnedFd),
    ready: (OwnedFd, OwnedFd),
}

/// The parent's side of a [`Handshake`].
#[derive(Debug)]
pub struct ParentGate {
    build: OwnedFd,
    start: OwnedFd,
    ready: OwnedFd,
}

/// A child's side of a [`Handshake`].
#[derive(Debug)]
pub struct ChildGate {
    build: OwnedFd,
    start: OwnedFd,
    ready: OwnedFd,
}

impl Handshake {
    /// Creates the pipes (before forking).
    pub fn new() -> Result<Handshake> {
        Ok(Handshake {
            build: nix::unistd::pipe().context("pipe")?,
            start: nix::unistd::pipe().context("pipe")?,
            ready: nix::unistd::pipe().context("pipe")?,
        })
    }

    /// The parent keeps the writers of go-aheads and the reader of
    /// answers; the others close here.
    pub fn parent(self) -> ParentGate {
        ParentGate {
            build: self.build.1,
            start: self.start.1,
            ready: self.ready.0,
        }
    }

    /// Duplicates the child's ends (called in the child).
    pub fn child(&self) -> Result<ChildGate> {
        Ok(ChildGate {
            build: self.build.0.try_clone()?,
            start: self.start.0.try_clone()?,
            ready: self.ready.1.try_clone()?,
        })
    }
}

fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(&fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => check_deadline()?,
            Err(e) => return Err(e).context("hand-shake write"),
        }
    }
    Ok(())
}

fn read_exact(fd: &impl AsRawFd, buf: &mut [u8]) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => bail!("peer process exited during the hand-shake"),
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => check_deadline()?,
            Err(e) => return Err(e).context("hand-shake read"),
        }
    }
    Ok(())
}

impl ParentGate {
    /// Lets `n` children build their ends (the parent has built its own).
    pub fn build(&self, n: usize) -> Result<()> {
        write_all(&self.build, &vec![b'b'; n])
    }

    /// Lets `n` children start the measurement.
    pub fn start(&self, n: usize) -> Result<()> {
        write_all(&self.start, &vec![b's'; n])
    }

    /// Waits until `n` children said ready.
    pub fn wait_ready(&self, n: usize) -> Result<()> {
        read_exact(&self.ready, &mut vec![0; n])
    }

    /// Reads one fixed-size report from a child.
    pub fn read_report(&self) -> Result<[u64; 2]> {
        let mut b = [0u8; 16];
        read_exact(&self.ready, &mut b)?;
        Ok([
            u64::from_ne_bytes(b[..8].try_into().expect("8 bytes")),
            u64::from_ne_bytes(b[8..].try_into().expect("8 bytes")),
        ])
    }
}

impl ChildGate {
    /// Waits until the parent lets this child build its ends.
    pub fn wait_build(&self) -> Result<()> {
        read_exact(&self.build, &mut [0])
    }

    /// Waits until the parent starts the measurement.
    pub fn wait_start(&self) -> Result<()> {
        read_exact(&self.start, &mut [0])
    }

    /// Tells the parent this child is ready.
    pub fn ready(&self) -> Result<()> {
        write_all(&self.ready, b"r")
    }

    /// Sends one fixed-size report (16 bytes: atomic on a pipe).
    pub fn report(&self, a: u64, b: u64) -> Result<()> {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&a.to_ne_bytes());
        buf[8..].copy_from_slice(&b.to_ne_bytes());
        write_all(&self.ready, &buf)
    }
}

/// The sending end of a one-way channel.
pub trait Tx {
    /// Sends one message (all of `msg`).
    fn send(&mut self, msg: &[u8]) -> Result<()>;

    /// Called in the parent once the child built its ends, before the
    /// measurement: a chance to connect to ports that appeared since.
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The receiving end of a one-way channel.
pub trait Rx {
    /// Receives one message into `buf` (as long as the largest message);
    /// returns its length.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize>;

    /// Receives one message and hands it to `look` where it lies, in the
    /// transport's own memory, copying nothing out (zero copy); the
    /// message is released when `look` returns. Only the contenders that
    /// lend their memory have it (see [`OneToOne::in_place`]).
    fn recv_in_place(&mut self, look: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let _ = look;
        bail!("this contender has no in-place receive")
    }

    /// As [`Tx::connect`].
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A kind of one-way channel between two processes: one small impl per
/// contender. The harness creates a [`Transport::Link`] before forking and
/// each process takes its end from it.
pub trait Transport {
    /// What exists before the fork (names, descriptors, mappings); removes
    /// what it created when dropped in the parent.
    type Link;
    /// The sending end.
    type Tx: Tx;
    /// The receiving end.
    type Rx: Rx;

    /// True if this contender takes part in `measure` at `size` in `mode`.
    fn applies(&self, measure: Measure, size: usize, mode: Mode) -> bool {
        let _ = (measure, size, mode);
        true
    }

    /// Creates a channel for messages of `size` bytes holding up to `depth`
    /// messages (where the transport has such a setting).
    fn link(&self, size: usize, depth: u32, mode: Mode) -> Result<Self::Link>;

    /// Takes the sending end (in whichever process sends).
    fn tx(&self, link: &mut Self::Link, mode: Mode) -> Result<Self::Tx>;

    /// Takes the receiving end.
    fn rx(&self, link: &mut Self::Link, mode: Mode) -> Result<Self::Rx>;
}

/// Messages one run moved and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Messages received in the timed part.
    pub messages: u64,
    /// Seconds the timed part took.
    pub secs: f64,
}

impl Rate {
    /// Messages per second.
    pub fn per_sec(&self) -> f64 {
        self.messages as f64 / self.secs
    }
}

/// A contender as the driver sees it: one row of the report.
pub trait Contender {
    /// Label in tables (also the key ratios look up).
    fn name(&self) -> &str;
    /// True if this contender takes part in `measure` at `size` in `mode`.
    fn applies(&self, measure: Measure, size: usize, mode: Mode) -> bool;
    /// Measures one-way throughput: `count` timed messages of `size` bytes.
    fn throughput(&self, size: usize, count: u64, mode: Mode, timeout: Duration) -> Result<Rate>;
    /// Measures `count` round trips of `size` bytes each way.
    fn round_trip(
        &self,
        size: usize,
        count: u64,
        mode: Mode,
        timeout: Duration,
    ) -> Result<Histogram<u64>>;
}

/// A [`Transport`] measured one producer to one consumer.
#[derive(Debug)]
pub struct OneToOne<T> {
    /// Row label.
    pub name: &'static str,
    /// The channel kind.
    pub transport: T,
    /// Receive in place ([`Rx::recv_in_place`]: the consumer looks at each
    /// message where it lies and copies nothing out; the echo of a round
    /// trip sends straight from it) rather than into a buffer of our own,
    /// from [`IN_PLACE_FROM`] on: zero copy as a user of large messages
    /// would use it. The sender copies the message in either way.
    pub in_place: bool,
}

impl<T> OneToOne<T> {
    /// A contender that copies each message in and out.
    pub fn new(name: &'static str, transport: T) -> OneToOne<T> {
        OneToOne {
            name,
            transport,
            in_place: false,
        }
    }

    /// The same, receiving in place (see [`OneToOne::in_place`]).
    pub fn in_place(name: &'static str, transport: T) -> OneToOne<T> {
        OneToOne {
            in_place: true,
            ..OneToOne::new(name, transport)
        }
    }

    /// One receive into `buf` (or, in place, a look at the message where
    /// it lies), its stamp checked against `seq`.
    fn recv_checked(&self, rx: &mut impl Rx, buf: &mut [u8], seq: u64) -> Result<()> {
        let size = buf.len();
        if self.in_place {
            rx.recv_in_place(&mut |m| check_stamp(m, m.len(), size, seq))
        } else {
            let n = rx.recv(buf)?;
            check_stamp(buf, n, size, seq)
        }
    }
}

/// Smallest message the in-place rows are measured at: zero copy is for
/// large messages, where the copy out costs more than the hand-over.
pub const IN_PLACE_FROM: usize = 64 << 10;

/// Queue depth used for throughput: about 16 MiB in flight at most, 256
/// messages for small sizes.
pub fn depth_for(size: usize) -> u32 {
    ((16 << 20) / size.max(1)).clamp(4, 256) as u32
}

/// Messages of `size` bytes that ipc-core's buffer of [`depth_for`]`(size)`
/// holds in the library's default budget (room for the depth, at most
/// 4 MiB): the benchmark's ipc-core rings, and the memcpy ceiling's
/// "ring-sized" buffers.
pub fn default_ring_messages(size: usize) -> usize {
    let depth = depth_for(size);
    let ring = ipc_core::Geometry::packed(ipc_core::Kind::Buffer, depth, size as u32, 0)
        .map_or(0, |g| g.ring_bytes);
    // A record: an 8-byte header and the payload rounded up to 8.
    let per = 8 + size.div_ceil(8) as u64 * 8;
    // The ring keeps room for one record's padding at the wrap.
    ((ring.saturating_sub(8) / per).saturating_sub(1) as usize).clamp(1, depth as usize)
}

/// Queue depth used for round trips (only one message is ever in flight).
pub const ROUND_TRIP_DEPTH: u32 = 4;

/// A new latency histogram: 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn stamp(msg: &mut [u8], seq: u64) {
    let n = msg.len().min(8);
    msg[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

fn check_stamp(msg: &[u8], len: usize, want_len: usize, seq: u64) -> Result<()> {
    if len != want_len {
        bail!("message {seq}: got {len} bytes, expected {want_len}");
    }
    let n = len.min(8);
    let mut want = [0u8; 8];
    want[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
    if msg[..n] != want[..n] {
        let mut got = [0u8; 8];
        got[..n].copy_from_slice(&msg[..n]);
        bail!(
            "message {seq} lost, out of order or corrupt: got stamp {}",
            u64::from_le_bytes(got)
        );
    }
    Ok(())
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

impl<T: Transport> Contender for OneToOne<T> {
    fn name(&self) -> &str {
        self.name
    }

    fn applies(&self, measure: Measure, size: usize, mode: Mode) -> bool {
        (!self.in_place || size >= IN_PLACE_FROM) && self.transport.applies(measure, size, mode)
    }

    fn throughput(&self, size: usize, count: u64, mode: Mode, timeout: Duration) -> Result<Rate> {
        let t = &self.transport;
        let depth = depth_for(size);
        let warmup = (count / 32).max(2 * depth as u64);
        let mut link = t.link(size, depth, mode)?;
        let hs = Handshake::new()?;
        set_deadline(timeout);
        let child = Child::spawn(timeout + Duration::from_secs(5), || {
            let gate = hs.child()?;
            gate.wait_build()?;
            let mut tx = t.tx(&mut link, mode)?;
            gate.ready()?;
            gate.wait_start()?;
            let mut msg = payload(size);
            for seq in 0..warmup + count {
                stamp(&mut msg, seq);
                tx.send(&msg)?;
            }
            Ok(())
        })?;
        let gate = hs.parent();
        let mut rx = t.rx(&mut link, mode)?;
        gate.build(1)?;
        gate.wait_ready(1)?;
        rx.connect()?;
        gate.start(1)?;
        let mut buf = vec![0u8; size];
        for seq in 0..warmup {
            self.recv_checked(&mut rx, &mut buf, seq)?;
        }
        let start = Instant::now();
        let mut got = 0;
        for seq in warmup..warmup + count {
            self.recv_checked(&mut rx, &mut buf, seq)?;
            got += 1;
            // A clock read is cheap next to a message of a page or more:
            // large messages look every time, so a slow contender cannot
            // overrun the time box by 255 messages.
            if (got & 255 == 0 || size >= 4096) && boxed_out(start) {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        if got == count {
            drop(rx);
            child.wait()?;
        } else {
            // Cut short by the time box: kill the sender before closing
            // our end, so that it does not report a vanished receiver.
            drop(child);
        }
        Ok(Rate {
            messages: got,
            secs,
        })
    }

    fn round_trip(
        &self,
        size: usize,
        count: u64,
        mode: Mode,
        timeout: Duration,
    ) -> Result<Histogram<u64>> {
        let t = &self.transport;
        let warmup = (count / 40).max(10);
        let mut ping = t.link(size, ROUND_TRIP_DEPTH, mode)?;
        let mut pong = t.link(size, ROUND_TRIP_DEPTH, mode)?;
        let hs = Handshake::new()?;
        set_deadline(timeout);
        let child = Child::spawn(timeout + Duration::from_secs(5), || {
            let gate = hs.child()?;
            gate.wait_build()?;
            let mut rx = t.rx(&mut ping, mode)?;
            let mut tx = t.tx(&mut pong, mode)?;
            gate.ready()?;
            gate.wait_start()?;
            let mut buf = vec![0u8; size];
            for _ in 0..warmup + count {
                if self.in_place {
                    // Forwarded from where it lies: one copy, into the
                    // pong channel.
                    rx.recv_in_place(&mut |m| tx.send(m))?;
                } else {
                    let n = rx.recv(&mut buf)?;
                    tx.send(&buf[..n])?;
                }
            }
            Ok(())
        })?;
        let gate = hs.parent();
        let mut tx = t.tx(&mut ping, mode)?;
        let mut rx = t.rx(&mut pong, mode)?;
        gate.build(1)?;
        gate.wait_ready(1)?;
        tx.connect()?;
        rx.connect()?;
        gate.start(1)?;
        let mut msg = payload(size);
        let mut buf = vec![0u8; size];
        let mut hist = new_histogram();
        let mut start_all = Instant::now();
        let mut done = true;
        for seq in 0..warmup + count {
            if seq == warmup {
                start_all = Instant::now();
            }
            if seq > warmup && (seq & 63 == 0 || size >= 4096) && boxed_out(start_all) {
                done = false;
                break;
            }
            stamp(&mut msg, seq);
            let start = Instant::now();
            tx.send(&msg)?;
            let checked = self.recv_checked(&mut rx, &mut buf, seq);
            let ns = start.elapsed().as_nanos() as u64;
            checked?;
            if seq >= warmup {
                hist.record(ns.max(1))?;
            }
        }
        if done {
            drop((tx, rx));
            child.wait()?;
        } else {
            // As in `throughput`: the echo dies before our ends close.
            drop(child);
        }
        Ok(hist)
    }
}
