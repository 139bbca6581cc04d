//! Helpers shared by the mailbox tests (included with `#[path]` by
//! `mailbox_*.rs` and `ports.rs`; as a test target of its own it has only
//! its self-checks): driving `mailbox-peer` processes, the test-message
//! format (the same as the peer's), and temporary folders.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_tests::{ChildGuard, ShmName};

/// How long anything may take before a hang is called a failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Bytes of the `(id, seq)` header of a test message.
pub const HEADER: usize = 12;

pub fn peer_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mailbox-peer")
}

/// A command for the peer with `args`.
pub fn peer_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(peer_exe());
    c.args(args);
    c
}

pub fn config(capacity: Capacity) -> MailboxConfig {
    MailboxConfig {
        capacity,
        max_message: 64,
        ..Default::default()
    }
}

/// A fresh mailbox under a name removed (with its chain) when the guard
/// drops, even if the test fails.
pub fn mailbox(tag: &str, capacity: Capacity) -> (ShmName, Mailbox) {
    let name = ShmName::new(tag);
    let mb = Mailbox::create(name.as_str(), &config(capacity)).expect("create mailbox");
    (name, mb)
}

fn pattern(id: u32, seq: u64, k: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(k as u8) ^ (id as u8)
}

/// A test message: `[id LE][seq LE]` and a pattern, `size` bytes (at least
/// the header).
pub fn encode(id: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0; size.max(HEADER)];
    v[..4].copy_from_slice(&id.to_le_bytes());
    v[4..HEADER].copy_from_slice(&seq.to_le_bytes());
    for (k, b) in v.iter_mut().enumerate().skip(HEADER) {
        *b = pattern(id, seq, k);
    }
    v
}

/// `(id, seq)` of a well-formed test message.
pub fn decode(b: &[u8]) -> Option<(u32, u64)> {
    if b.len() < HEADER {
        return None;
    }
    let id = u32::from_le_bytes(b[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(b[4..HEADER].try_into().unwrap());
    b.iter()
        .enumerate()
        .skip(HEADER)
        .all(|(k, &x)| x == pattern(id, seq, k))
        .then_some((id, seq))
}

/// `key=value` words of a result line.
pub fn kv(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A running peer talking line by line over its stdin and stdout.
pub struct Peer {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Peer {
    /// Starts `mailbox-peer ARGS`.
    pub fn spawn(args: &[&str]) -> Peer {
        let mut child = peer_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mailbox-peer");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
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
            stdin,
            lines,
            what: args.join(" "),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The next line the peer prints (panics if it exits or stalls).
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("peer `{}` printed nothing within {PATIENCE:?}", self.what)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let st = self.child.wait_timeout(PATIENCE);
                panic!("peer `{}` exited ({st:?}) instead of answering", self.what)
            }
        }
    }

    /// The next line, which must be `want`.
    pub fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "peer `{}`", self.what);
    }

    pub fn write(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to peer");
        stdin.flush().expect("flush to peer");
    }

    /// Starts a repl command and waits until the peer has begun it.
    pub fn begin(&mut self, cmd: &str) {
        self.write(cmd);
        self.expect("begin");
    }

    /// Runs a repl command to completion; its result line.
    pub fn call(&mut self, cmd: &str) -> String {
        self.begin(cmd);
        self.line()
    }

    /// Waits until the peer sleeps in a futex wait (blocked in a mailbox
    /// operation: the peer is single-threaded and does nothing else that
    /// waits on a futex).
    pub fn wait_blocked(&self) {
        let path = format!("/proc/{}/wchan", self.pid());
        let start = Instant::now();
        loop {
            let wchan = std::fs::read_to_string(&path).unwrap_or_default();
            if wchan.contains("futex") {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "peer `{}` never blocked (wchan {wchan:?})",
                self.what
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Closes stdin and waits for a clean exit.
    pub fn finish(mut self) -> ExitStatus {
        self.stdin = None;
        let st = self
            .child
            .wait_timeout(PATIENCE)
            .unwrap_or_else(|| panic!("peer `{}` did not exit", self.what));
        assert!(st.success(), "peer `{}` failed: {st:?}", self.what);
        st
    }

    /// SIGKILL (by its pid) and reap.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// Runs a one-shot peer to completion; the `key=value`s of its last line.
pub fn run_peer(args: &[&str]) -> HashMap<String, String> {
    finish_bg(spawn_bg(args))
}

/// Starts a one-shot peer in the background (stdin closed).
pub fn spawn_bg(args: &[&str]) -> ChildGuard {
    ChildGuard::new(
        peer_cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mailbox-peer"),
    )
}

/// Waits for a background peer; the `key=value`s of its last line.
pub fn finish_bg(child: ChildGuard) -> HashMap<String, String> {
    let out = child.output_timeout(PATIENCE);
    assert!(out.status.success(), "peer failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    kv(last)
}

/// Asserts `key=value` pairs of a result.
#[track_caller]
pub fn check(r: &HashMap<String, String>, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert_eq!(
            r.get(*k).map(String::as_str),
            Some(*v),
            "{k} in result {r:?}"
        );
    }
}

/// A folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = ShmName::new(tag);
        let p = std::env::temp_dir().join(n.as_str());
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Entries of /dev/shm named `NAME.*` (an unbounded mailbox's chain).
pub fn chain_segments(name: &str) -> Vec<String> {
    let prefix = format!("{name}.");
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn message_format_round_trips() {
    let m = encode(7, 123_456_789, 40);
    assert_eq!(decode(&m), Some((7, 123_456_789)));
    let mut bad = m.clone();
    bad[20] ^= 1;
    assert_eq!(decode(&bad), None);
    assert_eq!(decode(&m[..5]), None);
}

// ---------------------------------------------------------------------
// Scenarios that hold for every capacity flavor, the test process being
// one endpoint and a `mailbox-peer repl` the other.
// ---------------------------------------------------------------------

/// The error's kind and the bytes it hands back.
pub fn split<M: AsRef<[u8]>>(e: ipc_core::SendError<M>) -> (&'static str, Vec<u8>) {
    use ipc_core::SendError as E;
    let kind = match &e {
        E::Full(_) => "full",
        E::Timeout(_) => "timeout",
        E::Disconnected(_) => "disconnected",
        E::TooLarge { .. } => "toolarge",
        E::NoSpace(..) => "nospace",
        E::Corrupt(..) => "corrupt",
        E::Inherited(_) => "inherited",
        E::Unreachable(..) => "unreachable",
        E::Unsupported(..) => "unsupported",
    };
    (kind, e.into_inner().as_ref().to_vec())
}

/// A peer blocked in `recv` gets each message the test sends, then
/// `Disconnected` when the test's sender goes.
pub fn recv_blocks_until_send(capacity: Capacity) {
    let (name, mb) = mailbox("recv", capacity);
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    let mut tx = mb.sender().unwrap();
    for m in ["7", "8", "9"] {
        p.begin("recv");
        p.wait_blocked();
        tx.send(m.as_bytes()).unwrap();
        assert_eq!(p.line(), format!("msg {m}"));
    }
    p.begin("recv");
    p.wait_blocked();
    drop(tx);
    p.expect("disconnected");
    p.finish();
}

/// `recv_timeout`: `Timeout` with nothing sent, the message when one comes
/// while it waits, `Disconnected` once the sender has gone.
pub fn recv_timeout(capacity: Capacity) {
    let (name, mb) = mailbox("recvto", capacity);
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    let mut tx = mb.sender().unwrap();
    assert_eq!(p.call("recv_timeout 1"), "timeout");
    p.begin("recv_timeout 30000");
    p.wait_blocked();
    tx.send(b"7").unwrap();
    p.expect("msg 7");
    drop(tx);
    assert_eq!(p.call("recv_timeout 30000"), "disconnected");
    p.finish();
}

/// `try_recv`: `Empty`, then the peer's message, then `Disconnected` once
/// the peer's sender has gone.
pub fn try_recv(capacity: Capacity) {
    use ipc_core::RecvError;
    let (name, mb) = mailbox("tryrecv", capacity);
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    let mut rx = mb.receiver().unwrap();
    assert_eq!(rx.try_recv(), Err(RecvError::Empty));
    p.begin("send 7");
    if capacity == Capacity::Zero {
        // The offer stands while the peer's send waits.
        p.wait_blocked();
        assert_eq!(rx.try_recv().unwrap(), b"7");
        p.expect("ok");
    } else {
        p.expect("ok");
        assert_eq!(rx.try_recv().unwrap(), b"7");
    }
    assert_eq!(rx.try_recv(), Err(RecvError::Empty));
    assert_eq!(p.call("drop-sender"), "ok");
    assert_eq!(rx.try_recv(), Err(RecvError::Disconnected));
    p.finish();
}

/// A peer blocked in `recv` wakes with `Disconnected` when the last
/// sender (here, in the test process) detaches.
pub fn disconnect_wakes_receiver(capacity: Capacity) {
    let (name, mb) = mailbox("wakerx", capacity);
    let tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    p.begin("recv");
    p.wait_blocked();
    drop(tx);
    p.expect("disconnected");
    p.finish();
}

/// A peer blocked in `send` wakes with `Disconnected`, getting its message
/// back, when the last receiver (in the test process) detaches.
pub fn disconnect_wakes_sender(capacity: Capacity) {
    let (name, mb) = mailbox("waketx", capacity);
    let rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    if let Capacity::Bounded(n) = capacity {
        for i in 0..n {
            assert_eq!(p.call(&format!("send fill{i}")), "ok");
        }
    }
    p.begin("send last");
    p.wait_blocked();
    drop(rx);
    p.expect("disconnected last");
    p.finish();
}

/// Once every receiver has gone, `send`, `try_send` and `send_timeout`
/// fail at once with `Disconnected`, handing the same bytes back.
pub fn send_after_disconnect(capacity: Capacity) {
    let (name, mb) = mailbox("sendafter", capacity);
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    let mut tx = mb.sender().unwrap();
    if capacity != Capacity::Zero {
        for m in ["1", "2", "3"] {
            tx.send(m.as_bytes()).unwrap();
        }
    }
    p.write("exit");
    p.expect("begin");
    p.expect("bye");
    p.finish();
    let (kind, back) = split(tx.send(b"4".to_vec()).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("disconnected", &b"4"[..]));
    let (kind, back) = split(tx.try_send(b"5".to_vec()).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("disconnected", &b"5"[..]));
    let (kind, back) = split(tx.send_timeout(b"6".to_vec(), PATIENCE).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("disconnected", &b"6"[..]));
    drop(name);
}

/// After the sender has gone, what it queued is still delivered, in order,
/// then every receive reports `Disconnected`.
pub fn recv_after_disconnect(capacity: Capacity) {
    use ipc_core::RecvError;
    let (name, mb) = mailbox("recvafter", capacity);
    let mut rx = mb.receiver().unwrap();
    let r = run_peer(&["send", name.as_str(), "--count", "3"]);
    let buffered = capacity != Capacity::Zero;
    if buffered {
        check(&r, &[("sent", "3"), ("end", "done")]);
        for seq in 0..3 {
            assert_eq!(decode(&rx.recv().unwrap()), Some((0, seq)));
        }
    } else {
        // Nobody was receiving: a rendezvous send cannot complete, and the
        // peer's blocking send would wait for ever; see the zero tests.
        unreachable!("use a buffered capacity");
    }
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.recv_timeout(PATIENCE), Err(RecvError::Disconnected));
}

/// A receiver killed by SIGKILL disconnects a sender that has to wait:
/// dead peers are found by the waiters' liveness checks.
pub fn killed_receiver_disconnects_waiting_sender(capacity: Capacity) {
    let (name, mb) = mailbox("killrx", capacity);
    let mut tx = mb.sender().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--receiver"]);
    assert_eq!(p.call("len"), {
        let cap = match capacity {
            Capacity::Zero | Capacity::Bounded(0) => "0".to_owned(),
            Capacity::Bounded(n) => n.to_string(),
            Capacity::Unbounded => "none".to_owned(),
        };
        format!(
            "len=0 empty=true full={} cap={cap}",
            capacity == Capacity::Zero
        )
    });
    if let Capacity::Bounded(n) = capacity {
        for i in 0..n {
            tx.send(format!("fill{i}")).unwrap();
        }
    }
    p.kill();
    let (kind, back) = split(tx.send_timeout(b"after".to_vec(), PATIENCE).unwrap_err());
    assert_eq!((kind, back.as_slice()), ("disconnected", &b"after"[..]));
}

/// A sender killed by SIGKILL ends the stream for a waiting receiver once
/// what it queued is drained.
pub fn killed_sender_disconnects_receiver(capacity: Capacity) {
    use ipc_core::RecvError;
    let (name, mb) = mailbox("killtx", capacity);
    let mut rx = mb.receiver().unwrap();
    let mut p = Peer::spawn(&["repl", name.as_str(), "--sender"]);
    // Any answer means the peer has attached its sender.
    assert!(p.call("len").starts_with("len=0"));
    if capacity != Capacity::Zero {
        assert_eq!(p.call("send queued"), "ok");
    }
    p.kill();
    if capacity != Capacity::Zero {
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"queued");
    }
    assert_eq!(rx.recv_timeout(PATIENCE), Err(RecvError::Disconnected));
}
