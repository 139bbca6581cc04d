//! `bridge-peer`: a mailbox endpoint run inside a test "host" (see
//! `ipc_tests::hosts`) for the `ipc-bridge` tests across hosts.
//!
//! ```text
//! bridge-peer create NAME CAPACITY MAX     CAPACITY: zero | unbounded | N
//! bridge-peer send NAME SENDER COUNT LEN   a patient sender: waits for a new
//!                                          receiver instead of failing, and
//!                                          sends a message again after
//!                                          Disconnected or a timeout; prints
//!                                          "sent K" (K sent Ok, in order)
//! bridge-peer recv NAME COUNT              receives COUNT messages (waiting
//!                                          for new senders after an end of
//!                                          stream), then half a second more
//!                                          for any extra; prints each one's
//!                                          tag on a line, then "end"
//! bridge-peer drain NAME                   receives until end of stream;
//!                                          prints each tag, then "end"
//! ```
//!
//! For the benchmark (`bridge-bench`), each printing one line of numbers:
//!
//! ```text
//! bridge-peer mb-send NAME COUNT LEN       COUNT sends of LEN bytes
//! bridge-peer mb-sink NAME COUNT           ns from the first to the last of COUNT
//! bridge-peer mb-echo IN OUT COUNT         receives from IN, sends it to OUT
//! bridge-peer mb-ping OUT IN COUNT LEN     round trips; prints p50 and p99 ns
//! bridge-peer tcp-sink PORT COUNT LEN      accepts one stream; ns from the
//!                                          first to the last byte of COUNT x LEN
//! bridge-peer tcp-send ADDR COUNT LEN      one write(2) per message
//! bridge-peer tcp-echo PORT COUNT LEN      echoes COUNT messages of LEN
//! bridge-peer tcp-ping ADDR COUNT LEN      round trips; prints p50 and p99 ns
//! ```
//!
//! Messages are `s<SENDER>-<INDEX, 6 digits>` padded with '.' to LEN bytes.
//! Every wait is bounded (3 minutes); exit 1 on any other error.

use std::io::Write;
use std::time::{Duration, Instant};

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{RecvError, SendError};

const PATIENCE: Duration = Duration::from_secs(180);

fn fail(msg: String) -> ! {
    eprintln!("bridge-peer: {msg}");
    std::process::exit(1)
}

fn tagged(sender: u32, i: u32, len: usize) -> Vec<u8> {
    let mut m = format!("s{sender}-{i:06}").into_bytes();
    m.resize(len.max(m.len()), b'.');
    m
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| fail(format!("missing argument {i}; see the source")))
    };
    let num = |i: usize| -> u32 {
        arg(i)
            .parse()
            .unwrap_or_else(|_| fail(format!("argument {i} is not a number")))
    };
    match arg(0) {
        "create" => {
            let capacity = match arg(2) {
                "zero" => Capacity::Zero,
                "unbounded" => Capacity::Unbounded,
                _ => Capacity::Bounded(num(2)),
            };
            let config = MailboxConfig {
                capacity,
                max_message: num(3),
                ..Default::default()
            };
            Mailbox::create(arg(1), &config).unwrap_or_else(|e| fail(format!("create: {e}")));
        }
        "send" => {
            let mb = open(arg(1));
            let (sender, count, len) = (num(2), num(3), num(4) as usize);
            let mut tx = mb.sender().unwrap_or_else(|e| fail(format!("attach: {e}")));
            tx.expect_new_receivers();
            let start = Instant::now();
            let mut i = 0;
            while i < count {
                match tx.send_timeout(tagged(sender, i, len), Duration::from_millis(200)) {
                    Ok(()) => i += 1,
                    Err(SendError::Disconnected(_) | SendError::Timeout(_)) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => fail(format!("send {i}: {e}")),
                }
                if start.elapsed() > PATIENCE {
                    fail(format!("stuck at {i} of {count}"));
                }
            }
            println!("sent {i}");
        }
        "recv" => {
            let mb = open(arg(1));
            let count = num(2) as usize;
            let mut rx = mb
                .receiver()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            let out = std::io::stdout();
            let mut out = out.lock();
            let start = Instant::now();
            let mut got = 0usize;
            let mut quiet_since: Option<Instant> = None;
            while quiet_since.is_none_or(|t| t.elapsed() < Duration::from_millis(500)) {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(m) => {
                        got += 1;
                        let tag = m.split(|&b| b == b'.').next().unwrap_or(&[]);
                        out.write_all(tag).and_then(|()| out.write_all(b"\n")).ok();
                    }
                    Err(RecvError::Timeout | RecvError::Disconnected) => rx.expect_new_senders(),
                    Err(e) => fail(format!("recv: {e}")),
                }
                if got >= count {
                    quiet_since.get_or_insert_with(Instant::now);
                }
                if start.elapsed() > PATIENCE {
                    fail(format!("received {got} of {count}"));
                }
            }
            writeln!(out, "end").ok();
        }
        "drain" => {
            let mb = open(arg(1));
            let mut rx = mb
                .receiver()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            let out = std::io::stdout();
            let mut out = out.lock();
            let start = Instant::now();
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(m) => {
                        let tag = m.split(|&b| b == b'.').next().unwrap_or(&[]);
                        out.write_all(tag).and_then(|()| out.write_all(b"\n")).ok();
                    }
                    Err(RecvError::Timeout) => {}
                    Err(RecvError::Disconnected) => break,
                    Err(e) => fail(format!("recv: {e}")),
                }
                if start.elapsed() > PATIENCE {
                    fail("no end of stream".into());
                }
            }
            writeln!(out, "end").ok();
        }
        "mb-send" => {
            let mut tx = open(arg(1))
                .sender()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            let msg = vec![7u8; num(3) as usize];
            for i in 0..num(2) {
                if let Err(e) = tx.send_timeout(&msg[..], PATIENCE) {
                    fail(format!("send {i}: {e}"));
                }
            }
        }
        "mb-sink" => {
            let mut rx = open(arg(1))
                .receiver()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            // The benchmark reuses its mailboxes round after round: the
            // senders of the round before have gone, wait for new ones.
            rx.expect_new_senders();
            let count = num(2);
            let mut first = None;
            for i in 0..count {
                if let Err(e) = rx.recv_with_until(ipc_core::Deadline::after(PATIENCE), |_| ()) {
                    fail(format!("recv {i}: {e}"));
                }
                first.get_or_insert_with(Instant::now);
            }
            println!("{}", first.map_or(0, |t| t.elapsed().as_nanos()));
        }
        "mb-echo" => {
            let mut rx = open(arg(1))
                .receiver()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            let mut tx = open(arg(2))
                .sender()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            for i in 0..num(3) {
                let m = rx
                    .recv_timeout(PATIENCE)
                    .unwrap_or_else(|e| fail(format!("recv {i}: {e}")));
                tx.send_timeout(m, PATIENCE)
                    .unwrap_or_else(|e| fail(format!("send {i}: {e}")));
            }
        }
        "mb-ping" => {
            let mut tx = open(arg(1))
                .sender()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            let mut rx = open(arg(2))
                .receiver()
                .unwrap_or_else(|e| fail(format!("attach: {e}")));
            let msg = vec![1u8; num(4) as usize];
            let mut rtts = Vec::new();
            for i in 0..num(3) {
                let t = Instant::now();
                tx.send_timeout(&msg[..], PATIENCE)
                    .unwrap_or_else(|e| fail(format!("send {i}: {e}")));
                rx.recv_timeout(PATIENCE)
                    .unwrap_or_else(|e| fail(format!("recv {i}: {e}")));
                rtts.push(t.elapsed().as_nanos());
            }
            print_percentiles(&mut rtts);
        }
        "tcp-sink" => {
            use std::io::Read;
            let l = std::net::TcpListener::bind(("0.0.0.0", num(1) as u16))
                .unwrap_or_else(|e| fail(format!("listen: {e}")));
            println!("listening");
            let (mut s, _) = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
            let total = u64::from(num(2)) * u64::from(num(3));
            let mut buf = vec![0u8; 1 << 16];
            let (mut got, mut first) = (0u64, None);
            while got < total {
                let n = s
                    .read(&mut buf)
                    .unwrap_or_else(|e| fail(format!("read: {e}")));
                if n == 0 {
                    fail(format!("stream ended after {got} of {total} bytes"));
                }
                first.get_or_insert_with(Instant::now);
                got += n as u64;
            }
            println!("{}", first.map_or(0, |t| t.elapsed().as_nanos()));
        }
        "tcp-send" => {
            use std::io::Write as _;
            let mut s = connect(arg(1));
            let msg = vec![7u8; num(3) as usize];
            for _ in 0..num(2) {
                s.write_all(&msg)
                    .unwrap_or_else(|e| fail(format!("write: {e}")));
            }
        }
        "tcp-echo" => {
            use std::io::{Read, Write as _};
            let l = std::net::TcpListener::bind(("0.0.0.0", num(1) as u16))
                .unwrap_or_else(|e| fail(format!("listen: {e}")));
            println!("listening");
            let (mut s, _) = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
            s.set_nodelay(true).ok();
            let mut buf = vec![0u8; num(3) as usize];
            for _ in 0..num(2) {
                s.read_exact(&mut buf)
                    .unwrap_or_else(|e| fail(format!("read: {e}")));
                s.write_all(&buf)
                    .unwrap_or_else(|e| fail(format!("write: {e}")));
            }
        }
        "tcp-ping" => {
            use std::io::{Read, Write as _};
            let mut s = connect(arg(1));
            s.set_nodelay(true).ok();
            let mut buf = vec![1u8; num(3) as usize];
            let mut rtts = Vec::new();
            for _ in 0..num(2) {
                let t = Instant::now();
                s.write_all(&buf)
                    .unwrap_or_else(|e| fail(format!("write: {e}")));
                s.read_exact(&mut buf)
                    .unwrap_or_else(|e| fail(format!("read: {e}")));
                rtts.push(t.elapsed().as_nanos());
            }
            print_percentiles(&mut rtts);
        }
        other => fail(format!("unknown command {other:?}")),
    }
}

fn open(name: &str) -> Mailbox {
    let start = Instant::now();
    loop {
        match Mailbox::open(name) {
            Ok(m) => return m,
            Err(e) if start.elapsed() > PATIENCE => fail(format!("open {name}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn print_percentiles(v: &mut [u128]) {
    v.sort_unstable();
    let at = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!("{} {}", at(0.5), at(0.99));
}

/// Connects to ADDR:PORT, retrying for a while (the listener may be starting).
fn connect(addr: &str) -> std::net::TcpStream {
    let start = Instant::now();
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(20) => {
                fail(format!("connect {addr}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
