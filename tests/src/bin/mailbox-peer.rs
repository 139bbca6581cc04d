//! `mailbox-peer`: one endpoint of a mailbox or port in its own process, for
//! the multi-process mailbox tests (`tests/tests/mailbox_*.rs`, `ports.rs`).
//!
//! ```text
//! mailbox-peer send NAME [--count N] [--size B] [--id ID] [--start S]
//!                   [--op send|try|timeout|claim] [--timeout-ms T] [--retry]
//!                   [--stall-every K --stall-ms M] [--marker-dir D]
//!                   [--ready] [--patience-ms P]
//! mailbox-peer recv NAME [--count N] [--op recv|try|timeout|with|into|iter]
//!                   [--timeout-ms T] [--retry] [--stall-every K --stall-ms M]
//!                   [--pre-delay-ms D] [--marker-dir D] [--hold-ms H]
//!                   [--min-senders K] [--out FILE] [--ready] [--patience-ms P]
//! mailbox-peer repl NAME [--sender] [--receiver]
//! mailbox-peer ring ME PREV NEXT --position P --rounds N
//! mailbox-peer port-send ME TO [--count N] [--ready]
//! mailbox-peer port-own NAME [--count N]
//! ```
//!
//! Messages of `send`/`recv` are `[id: u32 LE][seq: u64 LE]` followed by a
//! pattern derived from `(id, seq)` up to `--size` bytes, so the receiver
//! can check each message's bytes and each sender's order.
//!
//! * `send` sends `seq = S..S+N`. With `--retry`, a `Full`/`Timeout` is
//!   retried with the message handed back by the error. With `--marker-dir`
//!   it checks, right after each successful send of `seq`, that the
//!   receiver's marker `D/took-ID-SEQ` exists (rendezvous proof) and counts
//!   the sends that returned early. Prints one line:
//!   `sent=N retries=R end=done|full|timeout|disconnected|... handback=none|same|different early=E`.
//! * `recv` receives up to `--count` messages (default: until end of
//!   stream). `--op with` receives in place; with `--marker-dir` it creates
//!   `D/took-ID-SEQ` inside the receive callback, then sleeps `--hold-ms`
//!   before releasing the slot. `--out FILE` records `(id, seq)` of each
//!   message (12 bytes each). Prints one line:
//!   `received=N bad=B disorder=D gaps=G retries=R end=count|disconnected|timeout|empty|gaveup|... ids=ID:COUNT:FIRST:LAST,...`
//!   (`disorder`: a sequence number not above the previous one of the same
//!   sender; `gaps`: not exactly the previous one plus one).
//! * `repl` reads one command a line on stdin, answers `begin` when it
//!   starts it and then one result line (see [`repl`]).
//! * `ring` registers port `ME`, prints `registered`, waits for a line on
//!   stdin, then passes a token around `PREV → ME → NEXT` (position 0 starts
//!   it) for `N` rounds, checking the sender's name and the token's value.
//! * `port-send` sends `ME-0 .. ME-(N-1)` to port `TO`, signed `ME`.
//! * `port-own` registers port `NAME`, prints `registered pid=PID` (or
//!   `taken pid=PID`), prints `msg FROM PAYLOAD` for `N` messages, then
//!   `done`, and keeps the port until stdin closes.
//!
//! `--ready` prints `ready` once attached and waits for a line on stdin
//! before starting. Every peer asks the kernel to SIGKILL it when its parent
//! dies. Exit codes: 0 ran the script (the result is on stdout), 1 error
//! (opening, attaching, I/O), 2 usage.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::{Duration, Instant};

use ipc_core::mailbox::{Mailbox, MailboxConfig};
use ipc_core::ports::{Port, PortError, PortSender};
use ipc_core::{Deadline, Receiver, RecvError, SendError, Sender};

const EXIT_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;

/// Bytes of the `(id, seq)` header of a test message.
const HEADER: usize = 12;

struct Args {
    pos: Vec<String>,
    map: HashMap<String, String>,
}

/// Options that take no value.
const FLAGS: &[&str] = &["retry", "ready", "sender", "receiver"];

impl Args {
    fn parse(rest: &[String]) -> Args {
        let mut pos = Vec::new();
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                pos.push(k.clone());
                continue;
            };
            if FLAGS.contains(&key) {
                map.insert(key.to_owned(), String::new());
                continue;
            }
            let Some(v) = it.next() else {
                usage(&format!("--{key} needs a value"));
            };
            map.insert(key.to_owned(), v.clone());
        }
        Args { pos, map }
    }

    fn pos(&self, i: usize, what: &str) -> &str {
        self.pos
            .get(i)
            .map(String::as_str)
            .unwrap_or_else(|| usage(&format!("{what} is required")))
    }

    fn flag(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn str<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.map.get(key).map_or(default, String::as_str)
    }

    fn opt<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.map.get(key).map(|v| {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("--{key} {v:?} is not valid")))
        })
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.opt(key).unwrap_or(default)
    }

    fn ms(&self, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.num(key, default))
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("mailbox-peer: {msg}\nusage: mailbox-peer send|recv|repl|ring|port-send|port-own ... (see the source's module docs)");
    exit(EXIT_USAGE)
}

fn fail(msg: &str) -> ! {
    eprintln!("mailbox-peer[{}]: {msg}", std::process::id());
    exit(EXIT_ERROR)
}

fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // The parent may have died before the call: then we were re-parented.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        exit(EXIT_ERROR);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the test has gone: nothing left to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Reads one line of stdin; `None` at end of input.
fn read_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

fn ready_handshake(a: &Args) {
    if a.flag("ready") {
        say("ready");
        let _ = read_line();
    }
}

fn open(name: &str) -> Mailbox {
    Mailbox::open(name).unwrap_or_else(|e| fail(&format!("opening {name}: {e}")))
}

fn pattern(id: u32, seq: u64, k: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(k as u8) ^ (id as u8)
}

fn fill(buf: &mut [u8], id: u32, seq: u64) {
    buf[..4].copy_from_slice(&id.to_le_bytes());
    buf[4..HEADER].copy_from_slice(&seq.to_le_bytes());
    for (k, b) in buf.iter_mut().enumerate().skip(HEADER) {
        *b = pattern(id, seq, k);
    }
}

fn encode(id: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0; size.max(HEADER)];
    fill(&mut v, id, seq);
    v
}

/// `(id, seq)` of a well-formed test message.
fn decode(b: &[u8]) -> Option<(u32, u64)> {
    if b.len() < HEADER {
        return None;
    }
    let id = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(b[4..HEADER].try_into().expect("8 bytes"));
    b.iter()
        .enumerate()
        .skip(HEADER)
        .all(|(k, &x)| x == pattern(id, seq, k))
        .then_some((id, seq))
}

fn send_kind<M>(e: &SendError<M>) -> &'static str {
    match e {
        SendError::Full(_) => "full",
        SendError::Timeout(_) => "timeout",
        SendError::Disconnected(_) => "disconnected",
        SendError::TooLarge { .. } => "toolarge",
        SendError::NoSpace(..) => "nospace",
        SendError::Corrupt(..) => "corrupt",
        SendError::Inherited(_) => "inherited",
        SendError::Unreachable(..) => "unreachable",
        SendError::Unsupported(..) => "unsupported",
    }
}

fn recv_kind(e: &RecvError) -> &'static str {
    match e {
        RecvError::Empty => "empty",
        RecvError::Timeout => "timeout",
        RecvError::Disconnected => "disconnected",
        RecvError::BufferTooSmall { .. } => "buffertoosmall",
        RecvError::WrongSize { .. } => "wrongsize",
        RecvError::Corrupt(_) => "corrupt",
        RecvError::Inherited => "inherited",
        RecvError::Unreachable(_) => "unreachable",
        RecvError::Unsupported(_) => "unsupported",
    }
}

/// Sleeps `ms` before every `every`-th operation.
struct Stall {
    every: u64,
    pause: Duration,
}

impl Stall {
    fn from(a: &Args) -> Stall {
        Stall {
            every: a.num("stall-every", 0),
            pause: a.ms("stall-ms", 0),
        }
    }

    fn before(&self, i: u64) {
        if i.checked_rem(self.every) == Some(0) {
            std::thread::sleep(self.pause);
        }
    }
}

fn marker_path(dir: &Path, id: u32, seq: u64) -> PathBuf {
    dir.join(format!("took-{id}-{seq}"))
}

fn send_cmd(a: &Args) -> i32 {
    let name = a.pos(0, "NAME");
    let count: u64 = a.num("count", 100);
    let size: usize = a.num("size", 16);
    let id: u32 = a.num("id", 0);
    let start: u64 = a.num("start", 0);
    let op = a.str("op", "send");
    let timeout = a.ms("timeout-ms", 1000);
    let retry = a.flag("retry");
    let stall = Stall::from(a);
    let markers: Option<PathBuf> = a.opt("marker-dir");
    let patience = a.ms("patience-ms", 30_000);

    let mb = open(name);
    let mut tx: Sender = mb
        .sender()
        .unwrap_or_else(|e| fail(&format!("attaching a sender: {e}")));
    ready_handshake(a);
    let began = Instant::now();
    let (mut sent, mut retries, mut early) = (0u64, 0u64, 0u64);
    let mut end = "done";
    let mut handback = "none";
    'all: for (i, seq) in (start..start + count).enumerate() {
        stall.before(i as u64);
        let mut msg = encode(id, seq, size);
        loop {
            let r = match op {
                "send" => tx.send(msg),
                "try" => tx.try_send(msg),
                "timeout" => tx.send_timeout(msg, timeout),
                "claim" => match tx.claim(Deadline::Never) {
                    Ok(mut slot) => {
                        fill(&mut slot.buf()[..msg.len()], id, seq);
                        slot.commit(msg.len()).map_err(|e| e.map(|()| msg))
                    }
                    Err(e) => Err(e.map(|()| msg)),
                },
                other => usage(&format!("--op {other:?}: send, try, timeout or claim")),
            };
            match r {
                Ok(()) => {
                    if let Some(dir) = &markers {
                        if !marker_path(dir, id, seq).exists() {
                            early += 1;
                        }
                    }
                    sent += 1;
                    break;
                }
                Err(e) => {
                    let kind = send_kind(&e);
                    let back = e.into_inner();
                    handback = if back == encode(id, seq, size) && handback != "different" {
                        "same"
                    } else {
                        "different"
                    };
                    if retry && matches!(kind, "full" | "timeout") && began.elapsed() < patience {
                        retries += 1;
                        if op == "try" {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        msg = back;
                        continue;
                    }
                    end = if matches!(kind, "full" | "timeout") && retry {
                        "gaveup"
                    } else {
                        kind
                    };
                    break 'all;
                }
            }
        }
    }
    drop(tx);
    say(&format!(
        "sent={sent} retries={retries} end={end} handback={handback} early={early}"
    ));
    0
}

#[derive(Default)]
struct Tally {
    received: u64,
    bad: u64,
    disorder: u64,
    gaps: u64,
    /// id → (count, first, last)
    ids: BTreeMap<u32, (u64, u64, u64)>,
}

impl Tally {
    fn add(&mut self, d: Option<(u32, u64)>, out: &mut Option<BufWriter<File>>) {
        self.received += 1;
        let Some((id, seq)) = d else {
            self.bad += 1;
            return;
        };
        if let Some(w) = out {
            let mut rec = [0u8; HEADER];
            rec[..4].copy_from_slice(&id.to_le_bytes());
            rec[4..].copy_from_slice(&seq.to_le_bytes());
            w.write_all(&rec)
                .unwrap_or_else(|e| fail(&format!("recording: {e}")));
        }
        match self.ids.get_mut(&id) {
            None => {
                self.ids.insert(id, (1, seq, seq));
            }
            Some((n, _, last)) => {
                if seq <= *last {
                    self.disorder += 1;
                }
                if seq != *last + 1 {
                    self.gaps += 1;
                }
                *n += 1;
                *last = seq;
            }
        }
    }

    fn line(&self, retries: u64, end: &str) -> String {
        let ids: Vec<String> = self
            .ids
            .iter()
            .map(|(id, (n, first, last))| format!("{id}:{n}:{first}:{last}"))
            .collect();
        format!(
            "received={} bad={} disorder={} gaps={} retries={retries} end={end} ids={}",
            self.received,
            self.bad,
            self.disorder,
            self.gaps,
            if ids.is_empty() {
                "-".to_owned()
            } else {
                ids.join(",")
            }
        )
    }
}

fn recv_cmd(a: &Args) -> i32 {
    let name = a.pos(0, "NAME");
    let count: u64 = a.num("count", u64::MAX);
    let op = a.str("op", "recv");
    let timeout = a.ms("timeout-ms", 1000);
    let retry = a.flag("retry");
    let stall = Stall::from(a);
    let pre_delay = a.ms("pre-delay-ms", 0);
    let markers: Option<PathBuf> = a.opt("marker-dir");
    let hold = a.ms("hold-ms", 0);
    let patience = a.ms("patience-ms", 30_000);
    let mut out = a.opt::<PathBuf>("out").map(|p| {
        BufWriter::new(
            File::create(&p).unwrap_or_else(|e| fail(&format!("creating {}: {e}", p.display()))),
        )
    });

    let mb = open(name);
    let mut rx: Receiver = mb
        .receiver()
        .unwrap_or_else(|e| fail(&format!("attaching a receiver: {e}")));
    if let Some(k) = a.opt("min-senders") {
        rx.set_min_producers(k);
    }
    ready_handshake(a);
    let began = Instant::now();
    let mut t = Tally::default();
    let mut retries = 0u64;
    let mut end = "count";
    if op == "iter" {
        for m in rx.iter().take(count.min(usize::MAX as u64) as usize) {
            match m {
                Ok(m) => t.add(decode(&m), &mut out),
                Err(e) => {
                    end = recv_kind(&e);
                    break;
                }
            }
        }
        if t.received < count && end == "count" {
            end = "stopped";
        }
    } else {
        let mut buf = vec![0u8; rx.max_message()];
        let mut i = 0u64;
        while t.received < count {
            stall.before(i);
            i += 1;
            std::thread::sleep(pre_delay);
            let r = match op {
                "recv" => rx.recv().map(|m| decode(&m)),
                "try" => rx.try_recv().map(|m| decode(&m)),
                "timeout" => rx.recv_timeout(timeout).map(|m| decode(&m)),
                "into" => rx
                    .recv_into(&mut buf, Deadline::Never)
                    .map(|n| decode(&buf[..n])),
                "with" => rx.recv_with(|b| {
                    let d = decode(b);
                    if let (Some(dir), Some((id, seq))) = (&markers, d) {
                        File::create(marker_path(dir, id, seq))
                            .unwrap_or_else(|e| fail(&format!("creating a marker: {e}")));
                    }
                    std::thread::sleep(hold);
                    d
                }),
                other => usage(&format!(
                    "--op {other:?}: recv, try, timeout, into, with or iter"
                )),
            };
            match r {
                Ok(d) => t.add(d, &mut out),
                Err(e @ (RecvError::Empty | RecvError::Timeout))
                    if retry && began.elapsed() < patience =>
                {
                    let _ = e;
                    retries += 1;
                    if op == "try" {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                Err(e) => {
                    end = match e {
                        RecvError::Empty | RecvError::Timeout if retry => "gaveup",
                        e => recv_kind(&e),
                    };
                    break;
                }
            }
        }
    }
    if let Some(w) = out.as_mut() {
        w.flush()
            .unwrap_or_else(|e| fail(&format!("recording: {e}")));
    }
    drop(rx);
    say(&t.line(retries, end));
    0
}

fn send_result<M: AsRef<[u8]>>(r: Result<(), SendError<M>>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            let kind = send_kind(&e);
            let back = e.into_inner();
            format!("{kind} {}", String::from_utf8_lossy(back.as_ref()))
        }
    }
}

fn recv_result(r: Result<Vec<u8>, RecvError>) -> String {
    match r {
        Ok(m) => format!("msg {}", String::from_utf8_lossy(&m)),
        Err(e) => recv_kind(&e).to_owned(),
    }
}

fn need<T>(endpoint: &mut Option<T>) -> &mut T {
    endpoint
        .as_mut()
        .unwrap_or_else(|| fail("that endpoint is not attached"))
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Mappings of files under /dev/shm.
fn count_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map_or(0, |m| m.lines().filter(|l| l.contains("/dev/shm/")).count())
}

/// Interactive endpoint. Commands, one a line; each answered by `begin`
/// (the command has started) and one result line:
///
/// | command | result |
/// |---|---|
/// | `attach-sender`, `attach-receiver`, `drop-sender`, `drop-receiver` | `ok` |
/// | `open NAME` (drops both endpoints first) | `ok` |
/// | `send TEXT`, `try_send TEXT`, `send_timeout MS TEXT` | `ok` or `KIND TEXT-HANDED-BACK` |
/// | `recv`, `try_recv`, `recv_timeout MS` | `msg TEXT` or `KIND` |
/// | `len` | `len=L empty=E full=F cap=C\|none` |
/// | `recv_n N` | `got=G last=TEXT\|KIND` (receives `N` messages) |
/// | `fds` | `fds=N maps=M` (open descriptors, mappings of /dev/shm files) |
/// | `exit` | `bye` |
fn repl(a: &Args) -> i32 {
    let mut mb = open(a.pos(0, "NAME"));
    let mut tx: Option<Sender> = None;
    let mut rx: Option<Receiver> = None;
    let attach_tx = |mb: &Mailbox| {
        mb.sender()
            .unwrap_or_else(|e| fail(&format!("attaching a sender: {e}")))
    };
    let attach_rx = |mb: &Mailbox| {
        mb.receiver()
            .unwrap_or_else(|e| fail(&format!("attaching a receiver: {e}")))
    };
    if a.flag("sender") {
        tx = Some(attach_tx(&mb));
    }
    if a.flag("receiver") {
        rx = Some(attach_rx(&mb));
    }
    while let Some(line) = read_line() {
        say("begin");
        let mut words = line.splitn(3, ' ');
        let cmd = words.next().unwrap_or("");
        let arg1 = words.next().unwrap_or("").to_owned();
        let arg2 = words.next().unwrap_or("").to_owned();
        let ms = |s: &str| Duration::from_millis(s.parse().unwrap_or_else(|_| fail("bad MS")));
        let result = match cmd {
            "attach-sender" => {
                tx = Some(attach_tx(&mb));
                "ok".to_owned()
            }
            "attach-receiver" => {
                rx = Some(attach_rx(&mb));
                "ok".to_owned()
            }
            "drop-sender" => {
                tx = None;
                "ok".to_owned()
            }
            "drop-receiver" => {
                rx = None;
                "ok".to_owned()
            }
            "open" => {
                tx = None;
                rx = None;
                mb = open(&arg1);
                "ok".to_owned()
            }
            "send" => send_result(need(&mut tx).send(arg1.into_bytes())),
            "try_send" => send_result(need(&mut tx).try_send(arg1.into_bytes())),
            "send_timeout" => send_result(need(&mut tx).send_timeout(arg2.into_bytes(), ms(&arg1))),
            "recv" => recv_result(need(&mut rx).recv()),
            "try_recv" => recv_result(need(&mut rx).try_recv()),
            "recv_timeout" => recv_result(need(&mut rx).recv_timeout(ms(&arg1))),
            "len" => {
                let (len, empty, full, cap) = match (&tx, &rx) {
                    (_, Some(r)) => (r.len(), r.is_empty(), r.is_full(), r.capacity()),
                    (Some(s), None) => (s.len(), s.is_empty(), s.is_full(), s.capacity()),
                    (None, None) => fail("no endpoint attached"),
                };
                let cap = cap.map_or_else(|| "none".to_owned(), |c| c.to_string());
                format!("len={len} empty={empty} full={full} cap={cap}")
            }
            "fds" => format!("fds={} maps={}", count_fds(), count_maps()),
            "recv_n" => {
                let n: u64 = arg1.parse().unwrap_or_else(|_| fail("bad N"));
                let rx = need(&mut rx);
                let mut last = String::new();
                let mut got = 0;
                for _ in 0..n {
                    match rx.recv() {
                        Ok(m) => {
                            got += 1;
                            last = String::from_utf8_lossy(&m).into_owned();
                        }
                        Err(e) => {
                            last = recv_kind(&e).to_owned();
                            break;
                        }
                    }
                }
                format!("got={got} last={last}")
            }
            "exit" => {
                say("bye");
                break;
            }
            other => fail(&format!("unknown command {other:?}")),
        };
        say(&result);
    }
    drop(tx);
    drop(rx);
    0
}

fn register(name: &str) -> Port {
    Port::register(name, &MailboxConfig::default())
        .unwrap_or_else(|e| fail(&format!("registering port {name}: {e}")))
}

fn ring(a: &Args) -> i32 {
    let (me, prev, next) = (a.pos(0, "ME"), a.pos(1, "PREV"), a.pos(2, "NEXT"));
    let position: u64 = a.num("position", 0);
    let rounds: u64 = a.num("rounds", 10);
    let patience = a.ms("patience-ms", 30_000);
    let mut port = register(me);
    say("registered");
    let _ = read_line();
    let (mut bad_from, mut bad_token, mut last, mut received) = (0u64, 0u64, 0u64, 0u64);
    let mut end = "done";
    let send = |port: &mut Port, v: u64| -> bool {
        port.send_to_until(next, v.to_string(), Deadline::after(patience))
            .is_ok()
    };
    if position == 0 && !send(&mut port, 1) {
        end = "send-failed";
    }
    for k in 0..rounds {
        if end != "done" {
            break;
        }
        let m = match port.recv_timeout(patience) {
            Ok(m) => m,
            Err(e) => {
                end = recv_kind(&e);
                break;
            }
        };
        received += 1;
        if m.from != prev {
            bad_from += 1;
        }
        let v: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap_or(0);
        let expected = if position == 0 {
            3 * (k + 1)
        } else {
            3 * k + position
        };
        if v != expected {
            bad_token += 1;
        }
        last = v;
        let final_hop = position == 0 && k + 1 == rounds;
        if !final_hop && !send(&mut port, v + 1) {
            end = "send-failed";
        }
    }
    say(&format!(
        "ring received={received} bad_from={bad_from} bad_token={bad_token} last={last} end={end}"
    ));
    0
}

fn port_send(a: &Args) -> i32 {
    let (me, to) = (a.pos(0, "ME"), a.pos(1, "TO"));
    let count: u64 = a.num("count", 10);
    let mut out = PortSender::new(me).unwrap_or_else(|e| fail(&format!("port name {me}: {e}")));
    ready_handshake(a);
    let mut sent = 0;
    let mut end = "done";
    for i in 0..count {
        match out.send_to(to, format!("{me}-{i}")) {
            Ok(()) => sent += 1,
            Err(e) => {
                end = send_kind(&e);
                break;
            }
        }
    }
    drop(out);
    say(&format!("sent={sent} end={end}"));
    0
}

fn port_own(a: &Args) -> i32 {
    let name = a.pos(0, "NAME");
    let count: u64 = a.num("count", 0);
    let mut port = match Port::register(name, &MailboxConfig::default()) {
        Ok(p) => p,
        Err(PortError::NameTaken { pid, .. }) => {
            say(&format!("taken pid={pid}"));
            return 0;
        }
        Err(e) => fail(&format!("registering port {name}: {e}")),
    };
    say(&format!("registered pid={}", std::process::id()));
    for _ in 0..count {
        match port.recv() {
            Ok(m) => say(&format!(
                "msg {} {}",
                m.from,
                String::from_utf8_lossy(&m.payload)
            )),
            Err(e) => {
                say(recv_kind(&e));
                break;
            }
        }
    }
    say("done");
    while read_line().is_some() {}
    drop(port);
    0
}

fn main() {
    die_with_parent();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        usage("a command is required");
    };
    let a = Args::parse(rest);
    let code = match cmd.as_str() {
        "send" => send_cmd(&a),
        "recv" => recv_cmd(&a),
        "repl" => repl(&a),
        "ring" => ring(&a),
        "port-send" => port_send(&a),
        "port-own" => port_own(&a),
        other => usage(&format!("unknown command {other:?}")),
    };
    exit(code)
}
