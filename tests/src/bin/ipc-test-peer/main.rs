//! `ipc-test-peer`: a producer or consumer process driven by arguments, for
//! the reliability tests (torture, hostile segments) and `scripts/soak.sh`.
//!
//! ```text
//! ipc-test-peer produce --segment NAME --id ID --count N --size BYTES --ack FILE
//!               [--hold-after K] [--zero-copy 1] [--wait adaptive|sleep|spin]
//!               [--op-timeout-ms MS] [--patience-s S] [--through-disconnection 1]
//! ipc-test-peer consume --segment NAME --out FILE [--min-producers N]
//!               [--hold-at K] [--slow-us US] [--buffered 1] [--wait ...] [--op-timeout-ms MS]
//!               [--patience-s S]
//! ipc-test-peer hostile --segment NAME --role producer|consumer
//!               [--duration-ms MS] [--op-timeout-ms MS] [--vary-len 1]
//! ipc-test-peer churn [--duration-s S | --trials N] [--parallel P] [--seed S]
//!               [--mode all|multi|single]
//! ```
//!
//! `produce` sends synthetic messages `0..N` stamped with `ID` and appends
//! each sequence number whose send returned success to `FILE` (8 bytes, little
//! endian, one `write(2)` each), so that a test can tell exactly which sends
//! succeeded even after a SIGKILL. With `--hold-after K` it claims a slot after
//! `K` messages, half-writes it, creates `FILE.hold` and sleeps: a process
//! killed while holding a write claim. `FILE.ready` is created once attached.
//! On a single-producer/single-consumer segment both `produce` and `consume`
//! retry attaching while the role is taken (`RoleTaken`), creating
//! `FILE.waited` if they had to, and give up (exit 5) after the patience.
//!
//! `consume` receives until end of stream and appends `(id u32, seq u64)` of
//! each message to `FILE` *inside* the receive callback, before the slot is
//! released (`u32::MAX, u64::MAX` for a message that fails its checksum).
//! With `--hold-at K` it sleeps inside the callback of its K-th message after
//! creating `FILE.hold`: a process killed while holding a read claim. With
//! `--buffered 1` it keeps records in memory and writes them 64 KiB at a
//! time and whenever a receive fails (so before any exit): a fast consumer
//! for tests that never kill it.
//!
//! `hostile` runs operations with short timeouts for a while, counting the
//! outcomes, while a test scribbles over the segment. With `--vary-len 1`
//! the producer's messages take every length from the synthetic header's
//! to the maximum (so a packed ring's records wrap at every offset).
//!
//! `churn` runs torture trials (see `churn.rs`) of every scenario, on
//! ordinary and single-producer/single-consumer segments (`--mode`), and
//! prints a summary per scenario and a total.
//!
//! Every peer asks the kernel to SIGKILL it when its parent dies, so that an
//! interrupted test or soak leaves no process behind.
//!
//! Exit codes: 0 done (producer sent everything, consumer saw end of stream),
//! 1 error (opening, attaching, I/O), 2 usage, 3 disconnected (every consumer
//! has gone), 4 corrupt shared state reported, 5 gave up after the patience,
//! 6 an unbounded queue could not grow (`SendError::NoSpace`).

mod churn;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::{Duration, Instant};

use ipc_core::buffer::SharedBuffer;
use ipc_core::sync::{Deadline, SpinPolicy};
use ipc_core::{synthetic, AttachError, RecvError, SendError};

const EXIT_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_DISCONNECTED: i32 = 3;
const EXIT_CORRUPT: i32 = 4;
const EXIT_GAVE_UP: i32 = 5;
const EXIT_NO_SPACE: i32 = 6;

struct Args {
    map: HashMap<String, String>,
}

impl Args {
    fn parse(rest: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                usage(&format!("unexpected argument {k:?}"));
            };
            let Some(v) = it.next() else {
                usage(&format!("--{key} needs a value"));
            };
            map.insert(key.to_owned(), v.clone());
        }
        Args { map }
    }

    fn str(&self, key: &str) -> String {
        self.map
            .get(key)
            .cloned()
            .unwrap_or_else(|| usage(&format!("--{key} is required")))
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

    fn policy(&self) -> SpinPolicy {
        match self.map.get("wait").map(String::as_str) {
            None | Some("adaptive") => SpinPolicy::DEFAULT,
            Some("sleep") => SpinPolicy::SLEEP,
            Some("spin") => SpinPolicy::SPIN,
            Some(other) => usage(&format!("--wait {other:?}: adaptive, sleep or spin")),
        }
    }

    /// The deadline of one blocking call: `--op-timeout-ms` (0 or absent:
    /// block without a deadline).
    fn op_deadline(&self) -> Deadline {
        match self.num("op-timeout-ms", 0u64) {
            0 => Deadline::Never,
            ms => Deadline::after(Duration::from_millis(ms)),
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("ipc-test-peer: {msg}\nusage: ipc-test-peer produce|consume|hostile|churn --key value ... (see the source's module docs)");
    exit(EXIT_USAGE)
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("ipc-test-peer[{}]: {msg}", std::process::id());
    exit(code)
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

fn append_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| fail(EXIT_ERROR, &format!("opening {}: {e}", path.display())))
}

fn marker(path: &Path, suffix: &str) {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    if let Err(e) = File::create(PathBuf::from(p)) {
        fail(EXIT_ERROR, &format!("creating a marker: {e}"));
    }
}

/// One `write(2)` of a whole record (appends of a few bytes are atomic).
fn record(f: &mut File, bytes: &[u8]) {
    if let Err(e) = f.write_all(bytes) {
        fail(EXIT_ERROR, &format!("recording: {e}"));
    }
}

fn open(name: &str) -> SharedBuffer {
    SharedBuffer::open(name).unwrap_or_else(|e| fail(EXIT_ERROR, &format!("opening {name}: {e}")))
}

/// Attaches with `attach`, retrying every millisecond while a
/// single-producer/single-consumer segment refuses with `RoleTaken` (the
/// previous holder of the role still lives, or nobody has reaped it yet).
/// Gives up after `patience` (exit 5). Creates `FILE.waited` if it had to
/// wait, so that a test can tell the retry path was taken.
fn attach_retrying<T>(
    file: &Path,
    patience: Duration,
    mut attach: impl FnMut() -> Result<T, AttachError>,
) -> T {
    let start = Instant::now();
    let mut waited = false;
    loop {
        match attach() {
            Ok(end) => return end,
            Err(AttachError::RoleTaken { role, .. }) => {
                if !waited {
                    waited = true;
                    marker(file, ".waited");
                }
                if start.elapsed() > patience {
                    fail(
                        EXIT_GAVE_UP,
                        &format!("the {role} role stayed taken for {patience:?}"),
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => fail(EXIT_ERROR, &format!("attaching: {e}")),
        }
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The same error without the message (the variants the peers tell apart).
fn unit_error(e: SendError<&[u8]>) -> SendError<()> {
    match e {
        SendError::Full(_) => SendError::Full(()),
        SendError::Timeout(_) => SendError::Timeout(()),
        SendError::Disconnected(_) => SendError::Disconnected(()),
        SendError::Corrupt(_, c) => SendError::Corrupt((), c),
        SendError::NoSpace(_, why) => SendError::NoSpace((), why),
        other => {
            let text = other.to_string();
            fail(EXIT_ERROR, &format!("send: {text}"))
        }
    }
}

fn produce(a: &Args) -> ! {
    let name = a.str("segment");
    let id: u32 = a.num("id", std::process::id());
    let count: u64 = a.num("count", 100);
    let size: usize = a.num("size", 32);
    let ack_path = PathBuf::from(a.str("ack"));
    let hold_after: Option<u64> = a.opt("hold-after");
    let zero_copy = a.num("zero-copy", 0u8) != 0;
    let patience = Duration::from_secs_f64(a.num("patience-s", 30.0));
    // Tries a message again when every consumer has gone (one killed, its
    // replacement not attached yet), within the patience.
    let through_disconnection = a.num("through-disconnection", 0u8) != 0;
    let mut ack = append_file(&ack_path);
    let buffer = open(&name);
    let mut tx = attach_retrying(&ack_path, patience, || buffer.producer());
    tx.set_spin_policy(a.policy());
    marker(&ack_path, ".ready");
    let mut msg = vec![0u8; size];
    for seq in 0..count {
        if hold_after == Some(seq) {
            let mut slot = tx
                .claim(Deadline::Never)
                .unwrap_or_else(|e| fail(EXIT_DISCONNECTED, &format!("claiming: {e}")));
            synthetic::encode(&mut msg, id, seq);
            // Half a message: a reader must never see it.
            let half = size / 2;
            slot.buf()[..half].copy_from_slice(&msg[..half]);
            marker(&ack_path, ".hold");
            sleep_forever();
        }
        synthetic::encode(&mut msg, id, seq);
        let started = Instant::now();
        loop {
            let deadline = a.op_deadline();
            let r = if zero_copy {
                tx.claim(deadline).and_then(|mut slot| {
                    slot.buf()[..size].copy_from_slice(&msg);
                    slot.commit(size)
                })
            } else {
                tx.send_until(&msg[..], deadline).map_err(unit_error)
            };
            match r {
                Ok(()) => break,
                Err(SendError::Timeout(())) | Err(SendError::Full(())) => {
                    if started.elapsed() > patience {
                        fail(
                            EXIT_GAVE_UP,
                            &format!("send of {seq} blocked for {patience:?}"),
                        );
                    }
                }
                Err(SendError::Disconnected(()))
                    if through_disconnection && started.elapsed() <= patience =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(SendError::Disconnected(())) => {
                    fail(EXIT_DISCONNECTED, &format!("send of {seq}: disconnected"))
                }
                Err(SendError::Corrupt((), e)) => {
                    fail(EXIT_CORRUPT, &format!("send of {seq}: {e}"))
                }
                Err(e @ SendError::NoSpace(..)) => {
                    fail(EXIT_NO_SPACE, &format!("send of {seq}: {e}"))
                }
                Err(e) => fail(EXIT_ERROR, &format!("send of {seq}: {e}")),
            }
        }
        record(&mut ack, &seq.to_le_bytes());
    }
    exit(0)
}

fn consume(a: &Args) -> ! {
    let name = a.str("segment");
    let out_path = PathBuf::from(a.str("out"));
    let hold_at: Option<u64> = a.opt("hold-at");
    let slow = Duration::from_micros(a.num("slow-us", 0));
    let patience = Duration::from_secs_f64(a.num("patience-s", 30.0));
    // Records kept in memory and written 64 KiB at a time (and before any
    // exit): a fast consumer, for a test that never kills it.
    let buffered = a.num("buffered", 0u8) != 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut out = append_file(&out_path);
    let buffer = open(&name);
    let mut rx = attach_retrying(&out_path, patience, || buffer.consumer());
    rx.set_min_producers(a.num("min-producers", 1));
    rx.set_spin_policy(a.policy());
    marker(&out_path, ".ready");
    let mut n = 0u64;
    let mut idle = Instant::now();
    loop {
        let r = rx.recv_with_until(a.op_deadline(), |bytes| {
            let (id, seq) = synthetic::decode(bytes).unwrap_or((u32::MAX, u64::MAX));
            let mut rec = [0u8; 12];
            rec[..4].copy_from_slice(&id.to_le_bytes());
            rec[4..].copy_from_slice(&seq.to_le_bytes());
            if buffered {
                pending.extend_from_slice(&rec);
                if pending.len() >= 1 << 16 {
                    record(&mut out, &pending);
                    pending.clear();
                }
            } else {
                record(&mut out, &rec);
            }
            n += 1;
            if hold_at == Some(n) {
                marker(&out_path, ".hold");
                sleep_forever();
            }
            if !slow.is_zero() {
                std::thread::sleep(slow);
            }
        });
        if r.is_err() && !pending.is_empty() {
            record(&mut out, &pending);
            pending.clear();
        }
        match r {
            Ok(()) => idle = Instant::now(),
            Err(RecvError::Disconnected) => exit(0),
            Err(RecvError::Timeout) | Err(RecvError::Empty) => {
                if idle.elapsed() > patience {
                    fail(
                        EXIT_GAVE_UP,
                        &format!("no message nor end for {patience:?}"),
                    );
                }
            }
            Err(RecvError::Corrupt(e)) => fail(EXIT_CORRUPT, &format!("recv: {e}")),
            Err(e) => fail(EXIT_ERROR, &format!("recv: {e}")),
        }
    }
}

/// Counts of what the operations returned under attack.
#[derive(Default, Debug)]
struct Outcomes {
    ok: u64,
    corrupt: u64,
    timeout: u64,
    disconnected: u64,
    other: u64,
    open_errors: u64,
}

fn hostile(a: &Args) -> ! {
    let name = a.str("segment");
    let role = a.str("role");
    let duration = Duration::from_millis(a.num("duration-ms", 1000));
    let op = Duration::from_millis(a.num("op-timeout-ms", 20));
    let vary = a.num("vary-len", 0u8) != 0;
    let buffer = open(&name);
    let max = buffer.geometry().max_message as usize;
    let mut o = Outcomes::default();
    let start = Instant::now();
    let mut msg = vec![0u8; max.clamp(synthetic::HEADER_LEN, 256)];
    let mut small = vec![0u8; 8];
    let mut i = 0u64;
    match role.as_str() {
        "producer" => {
            let mut tx = buffer
                .producer()
                .unwrap_or_else(|e| fail(EXIT_ERROR, &format!("attaching: {e}")));
            tx.set_spin_policy(SpinPolicy::SLEEP);
            while start.elapsed() < duration {
                let len = if vary {
                    let lens = msg.len() - synthetic::HEADER_LEN + 1;
                    synthetic::HEADER_LEN + (i as usize * 37) % lens
                } else {
                    msg.len().min(max)
                };
                synthetic::encode(&mut msg[..len], 1, i);
                let r = if i.is_multiple_of(3) {
                    tx.claim(Deadline::after(op)).and_then(|mut s| {
                        s.buf()[..len].copy_from_slice(&msg[..len]);
                        s.commit(len)
                    })
                } else {
                    tx.send_timeout(&msg[..len], op).map_err(unit_error)
                };
                match r {
                    Ok(()) => o.ok += 1,
                    Err(SendError::Timeout(())) => o.timeout += 1,
                    Err(SendError::Disconnected(())) => o.disconnected += 1,
                    Err(SendError::Corrupt(..)) => o.corrupt += 1,
                    Err(_) => o.other += 1,
                }
                i += 1;
                side_checks(&name, &buffer, i, &mut o);
            }
        }
        "consumer" => {
            let mut rx = buffer
                .consumer()
                .unwrap_or_else(|e| fail(EXIT_ERROR, &format!("attaching: {e}")));
            rx.set_spin_policy(SpinPolicy::SLEEP);
            while start.elapsed() < duration {
                let r = match i % 3 {
                    0 => rx.recv_timeout(op).map(|v| v.len()),
                    1 => rx.recv_into(&mut small, Deadline::after(op)),
                    _ => rx.recv_with_until(Deadline::after(op), |b| {
                        // Touch every byte: must stay inside the mapping.
                        b.iter()
                            .fold(0usize, |acc, &x| acc.wrapping_add(x as usize))
                    }),
                };
                match r {
                    Ok(_) => o.ok += 1,
                    Err(RecvError::Timeout) | Err(RecvError::Empty) => o.timeout += 1,
                    Err(RecvError::Disconnected) => o.disconnected += 1,
                    Err(RecvError::Corrupt(_)) => o.corrupt += 1,
                    Err(_) => o.other += 1,
                }
                i += 1;
                side_checks(&name, &buffer, i, &mut o);
                if matches!(r, Err(RecvError::Disconnected)) {
                    std::thread::sleep(op);
                }
            }
        }
        other => usage(&format!("--role {other:?}: producer or consumer")),
    }
    println!(
        "ok={} corrupt={} timeout={} disconnected={} other={} open_errors={}",
        o.ok, o.corrupt, o.timeout, o.disconnected, o.other, o.open_errors
    );
    exit(0)
}

/// Every few operations: a status (reaps, reads the table) and a fresh
/// open (validates the header again).
fn side_checks(name: &str, buffer: &SharedBuffer, i: u64, o: &mut Outcomes) {
    if i.is_multiple_of(16) {
        let s = buffer.status();
        std::hint::black_box(s.peers.len());
    }
    if i % 16 == 8 {
        match SharedBuffer::open_timeout(name, Duration::from_millis(20)) {
            Ok(b) => std::hint::black_box(b.len()),
            Err(_) => {
                o.open_errors += 1;
                0
            }
        };
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let Some(cmd) = argv.get(1) else {
        usage("a command is required")
    };
    if cmd == "-h" || cmd == "--help" {
        println!("usage: ipc-test-peer produce|consume|hostile|churn --key value ...");
        exit(0);
    }
    let a = Args::parse(&argv[2..]);
    if cmd != "churn" {
        die_with_parent();
    }
    match cmd.as_str() {
        "produce" => produce(&a),
        "consume" => consume(&a),
        "hostile" => hostile(&a),
        "churn" => exit(churn::main(
            std::env::current_exe().expect("own path"),
            a.opt("duration-s"),
            a.opt("trials"),
            a.num("parallel", 2),
            a.opt("seed"),
            &a.map
                .get("mode")
                .cloned()
                .unwrap_or_else(|| "all".to_owned()),
        )),
        other => usage(&format!("unknown command {other:?}")),
    }
}
