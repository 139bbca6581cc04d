//! What the bridge tests share: starting `ipc-bridge` processes (killed by
//! PID when the test ends), free loopback ports, the bridge's status
//! files, and removal of its state files even when a test fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_tests::{cmd, ChildGuard, PATIENCE};

/// The bridge's state folder on this machine.
pub fn state_dir() -> PathBuf {
    PathBuf::from("/dev/shm/ipc-bridge")
}

/// Removes the bridge's state files of these mailboxes on drop (and the
/// state folder, once empty), even after a panic.
pub struct StateFiles(pub Vec<String>);

impl Drop for StateFiles {
    fn drop(&mut self) {
        if let Ok(dir) = std::fs::read_dir(state_dir()) {
            for e in dir.flatten() {
                let f = e.file_name().to_string_lossy().into_owned();
                if self
                    .0
                    .iter()
                    .any(|n| f.starts_with(&format!("{n}.")) || f.starts_with(&format!(".{n}.")))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(state_dir());
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A running `ipc-bridge`, killed (SIGKILL, by PID) on drop; its stderr
/// goes to a file printed if the test fails.
pub struct Bridge {
    pub child: ChildGuard,
    pub log: PathBuf,
    pub args: Vec<String>,
}

impl Bridge {
    /// Starts `ipc-bridge ARGS` (with `RUST_LOG=info`).
    pub fn start(args: &[&str]) -> Bridge {
        Self::start_with(cmd("ipc-bridge"), args)
    }

    /// Starts `ipc-bridge ARGS` through `command` (for another host).
    pub fn start_with(mut command: Command, args: &[&str]) -> Bridge {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("ipcb-log-{}-{n}", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // A test process that dies (killed, or a hung test stopped) takes
        // its bridges with it instead of leaving them running.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = ChildGuard::new(command.spawn().expect("spawn ipc-bridge"));
        Bridge {
            child,
            log,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL now.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            eprintln!("--- ipc-bridge {:?}:\n{}", self.args, self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The bridge's status file of `name` (empty if none).
pub fn status_of(name: &str) -> String {
    std::fs::read_to_string(state_dir().join(format!("{name}.status"))).unwrap_or_default()
}

/// Waits (at most [`PATIENCE`]) until `name`'s status contains `needle`.
pub fn wait_status(name: &str, needle: &str) {
    let start = Instant::now();
    loop {
        let s = status_of(name);
        if s.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "status of {name} never said {needle:?}; last:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `s{sender}-{i:06}` padded to `len` bytes.
pub fn tagged(sender: u32, i: u32, len: usize) -> Vec<u8> {
    let mut m = format!("s{sender}-{i:06}").into_bytes();
    m.resize(len.max(m.len()), b'.');
    m
}

/// (sender, index) of a message made by [`tagged`].
pub fn untag(m: &[u8]) -> (u32, u32) {
    let s = std::str::from_utf8(&m[..m.iter().position(|&b| b == b'.').unwrap_or(m.len())])
        .expect("utf8");
    let (a, b) = s[1..].split_once('-').expect("tagged");
    (a.parse().expect("sender"), b.parse().expect("index"))
}

/// Checks that `got` holds, per sender, exactly indexes 0..n (n from
/// `sent`), each once and in order; returns a description of the first
/// violation.
pub fn check_exactly_once(got: &[Vec<u8>], sent: &[(u32, u32)]) -> Result<(), String> {
    use std::collections::HashMap;
    let mut next: HashMap<u32, u32> = HashMap::new();
    for m in got {
        let (s, i) = untag(m);
        let e = next.entry(s).or_insert(0);
        if i != *e {
            return Err(format!("sender {s}: got {i}, expected {}", *e));
        }
        *e += 1;
    }
    for &(s, n) in sent {
        let have = next.get(&s).copied().unwrap_or(0);
        if have != n {
            return Err(format!("sender {s}: {have} delivered, {n} sent Ok"));
        }
    }
    Ok(())
}
