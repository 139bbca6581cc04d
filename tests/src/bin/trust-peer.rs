//! Helper processes for the `trust_*` regression tests (liveness that does
//! not trust /proc, fork-inert handles, hostile slots). Subcommands by argv:
//!
//! | subcommand | what it does |
//! |---|---|
//! | `produce-slow NAME COUNT INTERVAL_MS` | buffer producer: COUNT messages (8-byte LE sequence), one per interval, then detaches |
//! | `zombie-produce NAME COUNT INTERVAL_MS` | the same from a second thread, after the main thread left with the raw `exit` system call (a zombie thread-group leader) |
//! | `ns-exec PID CMD ARGS...` | run inside a fresh pid namespace as its init: make the next pid `PID`, run CMD, exit with its code |
//! | `consume NAME COUNT TIMEOUT_S` | buffer consumer: receives until end of stream; prints `received=N end=REASON in_order=BOOL` |
//! | `single-produce NAME INCARNATION` | single-mode producer: sends `[incarnation u32][seq u64]` in a tight loop forever; exits 3 on any error |
//! | `flip-consume NAME DURATION_MS` | buffer consumer calling `recv_into` with an 8-byte buffer and `recv_with` for DURATION_MS, ignoring errors |
//! | `hold-receiver NAME` | mailbox receiver that prints `ready` and sleeps |
//! | `receiver-killed NAME` | creates mailbox NAME, runs `hold-receiver` in a child, SIGKILLs it, then sends one message per 30 ms (at most 120); prints `disconnected_at=I late=N` or `disconnected_at=never late=N` (N: sends that succeeded 300 ms or more after the kill) |
//! | `send-try-recv NAME ROUNDS` | mailbox sender and receiver: `send` then `try_recv`, ROUNDS times; prints `empty=N` |
//! | `hold-claim NAME` | mailbox sender that claims room for a zero-copy message, prints `held` and holds it (the senders' turn) |
//! | `hold-read NAME` | mailbox receiver that takes a message in place, prints `held MESSAGE` and holds it (the receivers' turn) |
//!
//! Exit codes: 0 done, 2 usage, 3 library error (message on stderr).

use std::io::Write;
use std::time::Duration;

use ipc_core::mailbox::Mailbox;
use ipc_core::{Deadline, RecvError, SharedBuffer};

fn usage() -> ! {
    eprintln!("usage: trust-peer SUBCOMMAND ARGS (see the source)");
    std::process::exit(2)
}

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("trust-peer: {what}");
    std::process::exit(3)
}

fn arg<T: std::str::FromStr>(a: &[String], i: usize) -> T {
    a.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

fn send_slowly(tx: &mut ipc_core::Sender, count: u64, interval: Duration) {
    for i in 0..count {
        if let Err(e) = tx.send_timeout(i.to_le_bytes(), Duration::from_secs(30)) {
            fail(format!("send {i}: {e}"));
        }
        std::thread::sleep(interval);
    }
}

fn produce_slow(a: &[String]) {
    let name: String = arg(a, 0);
    let (count, ms): (u64, u64) = (arg(a, 1), arg(a, 2));
    let buf = SharedBuffer::open(&name).unwrap_or_else(|e| fail(e));
    let mut tx = buf.producer().unwrap_or_else(|e| fail(e));
    send_slowly(&mut tx, count, Duration::from_millis(ms));
}

fn zombie_produce(a: &[String]) -> ! {
    let name: String = arg(a, 0);
    let (count, ms): (u64, u64) = (arg(a, 1), arg(a, 2));
    let buf = SharedBuffer::open(&name).unwrap_or_else(|e| fail(e));
    let mut tx = buf.producer().unwrap_or_else(|e| fail(e));
    std::thread::spawn(move || {
        // Let the main thread become a zombie first.
        std::thread::sleep(Duration::from_millis(50));
        send_slowly(&mut tx, count, Duration::from_millis(ms));
        drop(tx);
        drop(buf);
        std::process::exit(0);
    });
    // The raw `exit` system call ends only the calling thread: the thread
    // group leader becomes a zombie ('Z' in /proc/PID/stat) while the
    // sending thread goes on. (pthread_exit would unwind through Rust
    // frames.)
    // SAFETY: ends this thread without returning; nothing on this stack is
    // used by the other thread.
    unsafe {
        libc::syscall(libc::SYS_exit, 0);
    }
    unreachable!("SYS_exit returned")
}

fn ns_exec(a: &[String]) {
    let pid: u32 = arg(a, 0);
    if a.len() < 2 {
        usage();
    }
    // Without --mount-proc, /proc is the parent's mount, but ns_last_pid
    // applies to the pid namespace of the writer: ours.
    if let Err(e) = std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)) {
        fail(format!("ns_last_pid: {e}"));
    }
    let st = std::process::Command::new(&a[1])
        .args(&a[2..])
        .status()
        .unwrap_or_else(|e| fail(format!("spawn {}: {e}", a[1])));
    std::process::exit(st.code().unwrap_or(4));
}

fn consume(a: &[String]) {
    let name: String = arg(a, 0);
    let count: u64 = arg(a, 1);
    let timeout = Duration::from_secs(arg(a, 2));
    let buf = SharedBuffer::open(&name).unwrap_or_else(|e| fail(e));
    let mut rx = buf.consumer().unwrap_or_else(|e| fail(e));
    let mut got = 0u64;
    let mut in_order = true;
    let end = loop {
        match rx.recv_timeout(timeout) {
            Ok(m) => {
                in_order &= m == got.to_le_bytes();
                got += 1;
                if got > count {
                    break "too-many".to_owned();
                }
            }
            Err(RecvError::Disconnected) => break "disconnected".to_owned(),
            Err(e) => break format!("error:{e}"),
        }
    };
    println!("received={got} end={end} in_order={in_order}");
}

fn single_produce(a: &[String]) {
    let name: String = arg(a, 0);
    let inc: u32 = arg(a, 1);
    let buf = SharedBuffer::open(&name).unwrap_or_else(|e| fail(format!("open: {e}")));
    // The previous producer was just killed: attach reaps it, but allow
    // a few tries in case its exit is still being processed.
    let mut tx = None;
    for _ in 0..2000 {
        match buf.producer() {
            Ok(t) => {
                tx = Some(t);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let mut tx = tx.unwrap_or_else(|| fail("attach: role still taken after 2 s"));
    let mut msg = [0u8; 12];
    msg[..4].copy_from_slice(&inc.to_le_bytes());
    for seq in 0u64.. {
        msg[4..].copy_from_slice(&seq.to_le_bytes());
        if let Err(e) = tx.send_timeout(msg, Duration::from_secs(30)) {
            fail(format!("incarnation {inc} send {seq}: {e:?}: {e}"));
        }
    }
}

fn flip_consume(a: &[String]) {
    let name: String = arg(a, 0);
    let dur = Duration::from_millis(arg(a, 1));
    let buf = SharedBuffer::open(&name).unwrap_or_else(|e| fail(e));
    let mut rx = buf.consumer().unwrap_or_else(|e| fail(e));
    let start = std::time::Instant::now();
    let mut small = [0u8; 8];
    let (mut ok, mut err) = (0u64, 0u64);
    while start.elapsed() < dur {
        for _ in 0..64 {
            match rx.recv_into(&mut small, Deadline::after(Duration::from_millis(5))) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        match rx.recv_with_until(Deadline::after(Duration::from_millis(5)), |b| b.len()) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    println!("ok={ok} err={err}");
}

fn hold_receiver(a: &[String]) {
    let name: String = arg(a, 0);
    let mb = Mailbox::open(&name).unwrap_or_else(|e| fail(e));
    let _rx = mb.receiver().unwrap_or_else(|e| fail(e));
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Claims room in mailbox NAME for zero-copy writing (the senders' turn),
/// says "held", and holds it until killed.
fn hold_claim(a: &[String]) {
    let name: String = arg(a, 0);
    let mb = Mailbox::open(&name).unwrap_or_else(|e| fail(e));
    let mut tx = mb.sender().unwrap_or_else(|e| fail(e));
    let mut slot = tx
        .claim(Deadline::after(Duration::from_secs(30)))
        .unwrap_or_else(|e| fail(e));
    slot.buf()[..4].copy_from_slice(b"half");
    println!("held");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Takes a message of mailbox NAME in place (the receivers' turn), says
/// "held MESSAGE", and holds it until killed.
fn hold_read(a: &[String]) {
    let name: String = arg(a, 0);
    let mb = Mailbox::open(&name).unwrap_or_else(|e| fail(e));
    let mut rx = mb.receiver().unwrap_or_else(|e| fail(e));
    let _ = rx.recv_with_until(Deadline::after(Duration::from_secs(30)), |m| {
        println!("held {}", String::from_utf8_lossy(m));
        let _ = std::io::stdout().flush();
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    });
    fail("no message to hold");
}

fn receiver_killed(a: &[String]) {
    use ipc_core::mailbox::{Capacity, MailboxConfig};
    use ipc_core::SendError;
    use std::io::BufRead;
    let name: String = arg(a, 0);
    let cfg = MailboxConfig {
        capacity: Capacity::Bounded(512),
        max_message: 16,
        ..Default::default()
    };
    let mb = Mailbox::create(&name, &cfg).unwrap_or_else(|e| fail(e));
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(e));
    let mut child = std::process::Command::new(exe)
        .args(["hold-receiver", &name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(e));
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        let _ = Mailbox::unlink(&name);
        fail(format!("receiver said {line:?}"));
    }
    let mut tx = mb.sender().unwrap_or_else(|e| fail(e));
    tx.send(b"before").unwrap_or_else(|e| fail(e));
    // SIGKILL: it never detaches. Nothing here may call status() (it
    // reaps, which would hide the sender's own lapse).
    let _ = child.kill();
    let _ = child.wait();
    let killed = std::time::Instant::now();
    let mut late = 0;
    let mut at = None;
    for i in 0..120u32 {
        std::thread::sleep(Duration::from_millis(30));
        let is_late = killed.elapsed() >= Duration::from_millis(300);
        match tx.send(i.to_le_bytes()) {
            Ok(()) => late += is_late as u32,
            Err(SendError::Disconnected(_)) => {
                at = Some(i);
                break;
            }
            Err(e) => {
                let _ = Mailbox::unlink(&name);
                fail(format!("send {i}: {e:?}"));
            }
        }
    }
    let _ = Mailbox::unlink(&name);
    match at {
        Some(i) => println!("disconnected_at={i} late={late}"),
        None => println!("disconnected_at=never late={late}"),
    }
}

fn send_try_recv(a: &[String]) {
    let name: String = arg(a, 0);
    let rounds: u64 = arg(a, 1);
    let mb = Mailbox::open(&name).unwrap_or_else(|e| fail(e));
    let mut tx = mb.sender().unwrap_or_else(|e| fail(e));
    let mut rx = mb.receiver().unwrap_or_else(|e| fail(e));
    let mut empty = 0u64;
    for i in 0..rounds {
        if let Err(e) = tx.send_timeout(i.to_le_bytes(), Duration::from_secs(30)) {
            fail(format!("send {i}: {e}"));
        }
        match rx.try_recv() {
            Ok(_) => {}
            Err(RecvError::Empty) => {
                empty += 1;
                // Keep the balance: one message per round leaves.
                if let Err(e) = rx.recv_timeout(Duration::from_secs(30)) {
                    fail(format!("recv after Empty in round {i}: {e}"));
                }
            }
            Err(e) => fail(format!("try_recv {i}: {e}")),
        }
    }
    println!("empty={empty}");
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(sub) = argv.first() else { usage() };
    let a = &argv[1..];
    match sub.as_str() {
        "produce-slow" => produce_slow(a),
        "zombie-produce" => zombie_produce(a),
        "ns-exec" => ns_exec(a),
        "consume" => consume(a),
        "single-produce" => single_produce(a),
        "flip-consume" => flip_consume(a),
        "hold-receiver" => hold_receiver(a),
        "send-try-recv" => send_try_recv(a),
        "receiver-killed" => receiver_killed(a),
        "hold-claim" => hold_claim(a),
        "hold-read" => hold_read(a),
        _ => usage(),
    }
}
