//! Helper process for the `review_*` reproducers. Subcommands by argv:
//!
//! | subcommand | what it does |
//! |---|---|
//! | `fork-hold NAME keep\|drop` | opens buffer NAME, attaches a producer, forks a child that pauses (with `drop`: after dropping its inherited handles); prints `child=PID` then `ready`, and sleeps |
//!
//! Exit codes: 0 done, 2 usage, 3 library error.

use std::io::Write;
use std::time::Duration;

use ipc_core::SharedBuffer;

fn usage() -> ! {
    eprintln!("usage: review-peer SUBCOMMAND ARGS (see the source)");
    std::process::exit(2)
}

fn fork_hold(name: &str, drop_in_child: bool) {
    let buf = SharedBuffer::open(name).unwrap_or_else(|e| {
        eprintln!("review-peer: {e}");
        std::process::exit(3)
    });
    let p = buf.producer().unwrap_or_else(|e| {
        eprintln!("review-peer: {e}");
        std::process::exit(3)
    });
    // SAFETY: single-threaded here; the child pauses or drops then pauses.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        if drop_in_child {
            drop(p);
            drop(buf);
        } else {
            std::mem::forget(p);
            std::mem::forget(buf);
        }
        // SAFETY: plain system calls.
        unsafe {
            libc::pause();
            libc::_exit(0);
        }
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "child={pid}");
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let _keep = (buf, p);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("fork-hold") if a.len() == 4 => fork_hold(&a[2], a[3] == "drop"),
        _ => usage(),
    }
}
