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
