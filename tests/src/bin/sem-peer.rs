//! `sem-peer`: the other process of the cross-process semaphore tests
//! (`tests/tests/semaphore.rs`). It opens a segment the test created and
//! uses the [`Shared`] block at its base.
//!
//! ```text
//! sem-peer pong NAME ROUNDS [sleep]  ROUNDS times: wait on `a`, count it, post `b`
//! sem-peer wait NAME                 print `waiting`, wait on `a` (futex at once), count it
//! sem-peer timeout NAME MS           print `waiting`, `a.wait_timeout(MS)`, count a permit
//! sem-peer take NAME                 take permits of `a` until `stop` is set
//! ```
//!
//! `sleep` makes `pong` wait with [`SpinPolicy::SLEEP`] (straight to the
//! futex) instead of the default spin-then-sleep. Every command prints one
//! final line: `pong rounds=N`, `woken`, `got=true|false`, `took=K`.
//! `take` counts each permit in `taken` before checking `stop` again, so the
//! test knows when every permit it posted has been taken.
//!
//! The peer asks the kernel to SIGKILL it when its parent dies. Exit codes:
//! 0 done, 1 error (opening the segment), 2 usage.

use std::io::Write;
use std::process::exit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use ipc_core::segment::Segment;
use ipc_core::sync::{Deadline, Semaphore, SpinPolicy};

/// The block at the base of the test's segment. The same definition is in
/// `tests/tests/semaphore.rs`; both sides compile it identically.
#[repr(C)]
pub struct Shared {
    /// The semaphore peers wait on.
    pub a: Semaphore,
    /// The semaphore `pong` answers on.
    pub b: Semaphore,
    /// Permits of `a` taken by peers (after each successful wait).
    pub taken: AtomicU64,
    /// Set (then one permit per peer posted) to end `take`.
    pub stop: AtomicU32,
}

fn usage(msg: &str) -> ! {
    eprintln!("sem-peer: {msg}\nusage: sem-peer pong|wait|timeout|take NAME ... (see the source's module docs)");
    exit(2)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the test has gone: nothing left to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // The parent may have died before the call: then we were re-parented.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        exit(1);
    }
}

fn number<T: std::str::FromStr>(s: Option<&String>, what: &str) -> T {
    s.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage(&format!("{what}: expected a number")))
}

fn main() {
    die_with_parent();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(cmd), Some(name)) = (args.first(), args.get(1)) else {
        usage("expected a command and a segment name");
    };
    let seg = Segment::open(name).unwrap_or_else(|e| {
        eprintln!("sem-peer: opening {name}: {e}");
        exit(1)
    });
    assert!(
        seg.len() >= std::mem::size_of::<Shared>(),
        "segment too small"
    );
    assert!(seg.as_ptr().cast::<Shared>().is_aligned(), "misaligned");
    // SAFETY: the test wrote a `Shared` at the base of this page-aligned
    // mapping (checked large enough and aligned above) before starting us;
    // every field is an atomic, so shared references across processes are
    // sound; `seg` outlives `sh` (both live until the end of main).
    let sh: &Shared = unsafe { &*seg.as_ptr().cast::<Shared>() };
    match cmd.as_str() {
        "pong" => {
            let rounds: u64 = number(args.get(2), "ROUNDS");
            let policy = match args.get(3).map(String::as_str) {
                None => SpinPolicy::DEFAULT,
                Some("sleep") => SpinPolicy::SLEEP,
                Some(other) => usage(&format!("unknown policy {other}")),
            };
            for _ in 0..rounds {
                sh.a.wait_until(Deadline::Never, policy);
                sh.taken.fetch_add(1, Ordering::SeqCst);
                sh.b.post();
            }
            say(&format!("pong rounds={rounds}"));
        }
        "wait" => {
            say("waiting");
            sh.a.wait_until(Deadline::Never, SpinPolicy::SLEEP);
            sh.taken.fetch_add(1, Ordering::SeqCst);
            say("woken");
        }
        "timeout" => {
            let ms: u64 = number(args.get(2), "MS");
            say("waiting");
            let got = sh.a.wait_timeout(Duration::from_millis(ms));
            if got {
                sh.taken.fetch_add(1, Ordering::SeqCst);
            }
            say(&format!("got={got}"));
        }
        "take" => {
            let mut took = 0u64;
            loop {
                sh.a.wait();
                if sh.stop.load(Ordering::SeqCst) != 0 {
                    break;
                }
                took += 1;
                sh.taken.fetch_add(1, Ordering::SeqCst);
            }
            say(&format!("took={took}"));
        }
        other => usage(&format!("unknown command {other}")),
    }
}
