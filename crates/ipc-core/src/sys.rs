//! The only module that talks to the operating system: futex wait/wake on
//! shared (not `FUTEX_PRIVATE`) words, process liveness, free space of a file
//! system.
//!
//! Everything above this module is plain Rust over atomics in a mapping.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Outcome of [`futex_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutexWait {
    /// Woken by a `futex_wake`, or the word had already changed, or a signal
    /// arrived: the caller re-checks its condition in every case.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// Sleeps while `*word == expected`, at most `timeout` (forever if `None`).
///
/// Uses the shared futex operation so that a wake from another process that
/// maps the same page (at any address) reaches us.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWait {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned 32-bit atomic for the duration of the
    // call; FUTEX_WAIT only reads it. `ts_ptr` is null or points to a live
    // timespec on this stack frame.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        FutexWait::TimedOut
    } else {
        FutexWait::Woken
    }
}

/// Wakes up to `count` processes sleeping in [`futex_wait`] on `word`.
pub fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: `word` is a valid, aligned 32-bit atomic; FUTEX_WAKE does not
    // dereference the remaining arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// True while this address space is registered for global expedited
/// memory barriers. Cleared in a forked child, whose new address space is
/// not registered (see [`membarrier_ready`]).
static MEMBARRIER_REGISTERED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

extern "C" fn forget_registration_in_child() {
    MEMBARRIER_REGISTERED.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Registers this process for global expedited memory barriers, if it is
/// not yet (again in a forked child). True if the kernel supports them.
///
/// With it, a waiter about to sleep pays for a barrier on every CPU that
/// runs a registered process (`membarrier`, a few microseconds), so that
/// the processes that wake it can use a mere compiler fence on their hot
/// path instead of a full memory fence on every message.
pub fn membarrier_ready() -> bool {
    use std::sync::atomic::Ordering;
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    if MEMBARRIER_REGISTERED.load(Ordering::Acquire) {
        return true;
    }
    AT_FORK.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is safe in
        // a child between fork and anything else.
        unsafe { libc::pthread_atfork(None, None, Some(forget_registration_in_child)) };
    });
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            0u32,
            0i32,
        )
    };
    let ok = rc == 0;
    MEMBARRIER_REGISTERED.store(ok, Ordering::Release);
    ok
}

/// True if this process is registered (one load: for the hot path, which
/// must not register itself).
pub fn membarrier_registered() -> bool {
    MEMBARRIER_REGISTERED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A full memory barrier on every CPU running a registered process. False
/// if it failed (then the caller must not rely on it).
pub fn membarrier_global() -> bool {
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_GLOBAL_EXPEDITED,
            0u32,
            0i32,
        )
    };
    rc == 0
}

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: i32 = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: i32 = 1 << 2;

/// The id of the calling process.
pub fn current_pid() -> u32 {
    std::process::id()
}

/// What `/proc/PID/stat` tells about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Start time in clock ticks since boot (field 22): with the pid it
    /// identifies a process even after the pid is reused.
    pub start_time: u64,
    /// True for a zombie or dead task: it will never touch memory again.
    pub exited: bool,
}

/// Reads the start time and state of `pid`, or `None` if no such process.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    if pid == 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &str) -> Option<ProcessInfo> {
    // The command name (field 2) may contain spaces and parentheses: parse
    // from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?; // field 3
    let start_time = fields.nth(18)?.parse().ok()?; // field 22
    Some(ProcessInfo {
        start_time,
        exited: matches!(state, "Z" | "X" | "x"),
    })
}

/// True if the process `pid` that started at `start_time` still runs.
///
/// `start_time == 0` means "unknown": only the pid is checked. When /proc
/// cannot tell (out of file descriptors or memory, `hidepid`), `kill(pid,
/// 0)` decides, and a process that may exist counts as alive: declaring a
/// live peer dead would repair slots it still writes. The caller itself is
/// always alive.
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    if pid == 0 {
        return false;
    }
    if pid == current_pid() {
        // Us, unless the entry names an earlier process that had our pid.
        return start_time == 0 || own_start_time().is_none_or(|own| own == start_time);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match parse_stat(&stat) {
            Some(info) => !info.exited && (start_time == 0 || info.start_time == start_time),
            None => signal_zero_says_alive(pid),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => signal_zero_says_alive(pid),
    }
}

/// This process's start time, read once per process (a forked child
/// must not inherit its parent's answer).
fn own_start_time() -> Option<u64> {
    static OWN: std::sync::Mutex<Option<(u32, Option<u64>)>> = std::sync::Mutex::new(None);
    let pid = current_pid();
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    match *own {
        Some((p, start)) if p == pid => start,
        _ => {
            let start = process_info(pid).map(|i| i.start_time);
            *own = Some((pid, start));
            start
        }
    }
}

/// `kill(pid, 0)`: false only if no such process (ESRCH).
fn signal_zero_says_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only checks that the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &str) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "reads /proc/PID/stat, which Miri cannot open under isolation"
    )]
    fn own_process_is_alive_and_has_a_start_time() {
        let info = process_info(current_pid()).expect("own /proc entry");
        assert!(info.start_time > 0);
        assert!(process_alive(current_pid(), info.start_time));
        assert!(!process_alive(current_pid(), info.start_time + 1));
        // A pid above pid_max never exists.
        assert!(!process_alive(u32::MAX - 1, 0));
    }

    #[test]
    #[cfg_attr(miri, ignore = "membarrier(2) is a syscall Miri does not support")]
    fn membarrier_works_once_registered() {
        if membarrier_ready() {
            assert!(membarrier_global());
        } else {
            eprintln!("skipped: this kernel refuses membarrier registration");
        }
    }

    #[test]
    fn futex_wait_returns_at_once_when_word_differs() {
        let w = AtomicU32::new(5);
        assert_eq!(
            futex_wait(&w, 4, Some(Duration::from_secs(5))),
            FutexWait::Woken
        );
        assert_eq!(
            futex_wait(&w, 5, Some(Duration::from_millis(1))),
            FutexWait::TimedOut
        );
    }
}
