//! Helpers for the multi-process integration tests: unique segment names
//! removed even when a test fails, paths of the workspace's binaries, and
//! child processes killed (by their own PID) when a test ends.

pub mod hosts;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A segment name unique to this test process and call, removed from
/// /dev/shm on drop (with any chained `NAME.*` segments), even on panic.
#[derive(Debug)]
pub struct ShmName(pub String);

impl ShmName {
    /// A fresh name containing `tag`, the pid and a counter.
    pub fn new(tag: &str) -> ShmName {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        ShmName(format!("ipct-{tag}-{}-{n}", std::process::id()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Path of the segment's file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.0)
    }
}

impl std::fmt::Display for ShmName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            let prefix = format!("{}.", self.0);
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Path of a binary of the workspace (`producer`, `consumer`, `ipcctl`),
/// built by `cargo build --workspace --bins` into the same profile folder
/// as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins; scripts/test.sh does it)",
        path.display()
    );
    path
}

/// A command for one of the workspace's binaries.
pub fn cmd(name: &str) -> Command {
    Command::new(bin(name))
}

/// Starts `trust-peer SUB NAME` (a peer that takes a claim or a message
/// and holds it, see its source) and waits for its first line, `held ...`,
/// which it returns with the peer.
pub fn trust_peer_holding(sub: &str, name: &str) -> (ChildGuard, String) {
    use std::io::BufRead;
    let mut child = ChildGuard::new(
        cmd("trust-peer")
            .args([sub, name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn trust-peer"),
    );
    let out = child.0.as_mut().unwrap().stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("peer output");
    assert!(line.starts_with("held"), "{sub}: {line:?}");
    (child, line.trim().to_owned())
}

/// Fails the test if `f` has not returned within `limit` (it is left
/// running on its thread: the test process ends anyway).
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

/// The first pass of pause point `point` (`ipc_core::pause`) held until
/// released: the tests' way to stage an interleaving. [`PauseArm::arm`]
/// goes in the thread that will pass the point; the [`PauseGate`] stays
/// with the thread that waits for it and lets it go.
pub fn pause_gate(point: &'static str) -> (PauseArm, PauseGate) {
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let arm = PauseArm {
        point,
        reached: reached_tx,
        go: go_rx,
    };
    (arm, PauseGate { reached, go })
}

/// The held side of [`pause_gate`].
pub struct PauseArm {
    point: &'static str,
    reached: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
}

impl PauseArm {
    /// From now on this thread stops at the point's first pass, until the
    /// gate opens (or [`PATIENCE`] passes); `ipc_core::pause::clear` ends it.
    pub fn arm(self) {
        let point = self.point;
        let mut once = Some(self);
        ipc_core::pause::set(move |p| {
            if p == point {
                if let Some(arm) = once.take() {
                    let _ = arm.reached.send(());
                    let _ = arm.go.recv_timeout(PATIENCE);
                }
            }
        });
    }
}

/// The waiting side of [`pause_gate`].
pub struct PauseGate {
    reached: std::sync::mpsc::Receiver<()>,
    go: std::sync::mpsc::Sender<()>,
}

impl PauseGate {
    /// Waits (at most [`PATIENCE`]) until the armed thread stands at the
    /// point; panics with `what` otherwise.
    pub fn reached(&self, what: &str) {
        self.reached.recv_timeout(PATIENCE).expect(what);
    }

    /// Lets the armed thread go on.
    pub fn open(&self) {
        let _ = self.go.send(());
    }
}

/// This test binary run again as a child, for the one test `test` (which
/// sees `var` set to `value` and plays the child's part), its standard
/// output piped; returns the child and the lines it prints.
pub fn rerun_as_child(
    test: &str,
    var: &str,
    value: &str,
) -> (
    ChildGuard,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut c = Command::new(std::env::current_exe().expect("the test binary"));
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, value)
        .stdout(std::process::Stdio::piped());
    let mut child = ChildGuard::new(c.spawn().expect("spawn the child"));
    let out = child.0.as_mut().unwrap().stdout.take().unwrap();
    (child, std::io::BufReader::new(out).lines())
}

/// A child process killed (SIGKILL, by its PID) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Wraps a spawned child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// Waits for exit at most `timeout`; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.0.as_mut().expect("child");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for exit and collects stdout/stderr (if piped), at most
    /// `timeout`; panics (after killing the child) if it does not end.
    pub fn output_timeout(mut self, timeout: Duration) -> Output {
        let child = self.0.take().expect("child");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(timeout) {
            Ok(out) => out.expect("wait_with_output"),
            Err(_) => {
                // SAFETY: kill(2) on a pid we spawned and have not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("process {pid} did not finish within {timeout:?}");
            }
        }
    }

    /// Sends SIGKILL now.
    pub fn kill(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion within `timeout`, capturing its output.
pub fn run(mut command: Command, timeout: Duration) -> Output {
    use std::process::Stdio;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::new(command.spawn().expect("spawn")).output_timeout(timeout)
}

/// Generous bound for one CLI run in tests: long enough for a loaded
/// 2-core machine, short enough that a hang fails the test.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `cond` until it holds; panics after [`PATIENCE`] (a hang, not a
/// timing assertion).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A directory under the system temp dir, removed with its contents on
/// drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory whose name contains `tag`, the pid and a counter.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ipct-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small deterministic generator (SplitMix64), for tests that draw their
/// own random inputs from a seed they can print.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)] // a generator, never exhausted
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Fewer than `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % max.max(1) as u64) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A segment's file mapped a second time, as another process would map
/// it: for tests that write the states a peer's stores (or a scribbler)
/// leave into a live segment. Unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: only atomics are accessed through it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the whole file of segment `name`, shared, read-write.
    pub fn new(name: &ShmName) -> Mapping {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.path())
            .expect("open the segment file");
        let len = f.metadata().expect("its size").len() as usize;
        // SAFETY: a shared mapping of the whole file, unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of {}", name.0);
        Mapping {
            ptr: ptr as *mut u8,
            len,
        }
    }

    /// The 8-byte word at `offset` (8-aligned, inside the file).
    pub fn word(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: inside the mapping, 8-aligned; the library accesses
        // these words as atomics too.
        unsafe { &*(self.ptr.add(offset) as *const std::sync::atomic::AtomicU64) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// A new unbounded mailbox `name` for messages of up to 64 bytes (chained
/// blocks of `UNBOUNDED_BLOCK` messages).
pub fn unbounded_mailbox(name: &ShmName) -> ipc_core::mailbox::Mailbox {
    use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
    Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Unbounded,
            max_message: 64,
            ..Default::default()
        },
    )
    .unwrap()
}
