//! Helper process for the `review3_*` reproducers. Subcommands by argv:
//!
//! | subcommand | what it does |
//! |---|---|
//! | `as UID GID SUPP ACTION ARGS` | drops to uid UID, gid GID, supplementary group SUPP (needs root), then runs ACTION |
//! | `create-unbounded NAME OCTAL` | `SharedBuffer::create_unbounded` (16 slots of 64 B, mode OCTAL) |
//! | `send NAME N` | attaches a producer, sends N 8-byte messages, detaches |
//! | `recv NAME N` | attaches a consumer, receives N messages (10 s each) |
//!
//! Prints `ok` or `error: ...`. Exit codes: 0 ok, 1 failed, 2 usage.

use std::time::Duration;

use ipc_core::{BufferConfig, SharedBuffer};

fn usage() -> ! {
    eprintln!("usage: review3-peer SUBCOMMAND ARGS (see the source)");
    std::process::exit(2)
}

fn fail(e: impl std::fmt::Display) -> ! {
    println!("error: {e}");
    std::process::exit(1)
}

fn num(s: &str) -> u32 {
    s.parse().unwrap_or_else(|_| usage())
}

fn action(a: &[String]) {
    match a.first().map(String::as_str) {
        Some("create-unbounded") if a.len() == 3 => {
            let mode = u32::from_str_radix(&a[2], 8).unwrap_or_else(|_| usage());
            let b = SharedBuffer::create_unbounded(
                &a[1],
                &BufferConfig {
                    capacity: 16,
                    max_message: 64,
                    mode,
                    budget: 0,
                },
            )
            .unwrap_or_else(|e| fail(e));
            drop(b);
        }
        Some("send") if a.len() == 3 => {
            let b = SharedBuffer::open(&a[1]).unwrap_or_else(|e| fail(e));
            let mut tx = b.producer().unwrap_or_else(|e| fail(e));
            for i in 0..num(&a[2]) as u64 {
                tx.send(i.to_le_bytes())
                    .unwrap_or_else(|e| fail(format!("send {i}: {e}")));
            }
        }
        Some("recv") if a.len() == 3 => {
            let b = SharedBuffer::open(&a[1]).unwrap_or_else(|e| fail(e));
            let mut rx = b.consumer().unwrap_or_else(|e| fail(e));
            for i in 0..num(&a[2]) as u64 {
                let got = rx
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|e| fail(format!("recv {i}: {e}")));
                if got != i.to_le_bytes() {
                    fail(format!("message {i} came back as {got:?}"));
                }
            }
        }
        _ => usage(),
    }
    println!("ok");
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    match a.first().map(String::as_str) {
        Some("as") if a.len() >= 5 => {
            let (uid, gid, supp) = (num(&a[1]), num(&a[2]), num(&a[3]));
            // SAFETY: plain credential system calls on this process.
            unsafe {
                let groups = [supp as libc::gid_t];
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    fail(std::io::Error::last_os_error());
                }
            }
            action(&a[4..]);
        }
        _ => action(&a),
    }
}
