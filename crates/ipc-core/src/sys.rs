//! The only module that talks to the operating system: futex wait/wake on
//! shared (not `FUTEX_PRIVATE`) words, memory barriers, the liveness locks
//! (open-file-description byte locks the kernel drops when a process
//! dies), fork detection, free space of a file system.
//!
//! Everything above this module is plain Rust over atomics in a mapping.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
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
static MEMBARRIER_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Bumped in every forked child: a handle made under another generation
/// was inherited through `fork` and must stay inert.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The liveness descriptors of this process, to be renewed in a forked
/// child (null: free). A fixed array of atomics: the fork handler may not
/// lock or allocate.
static LOCK_FDS: [AtomicPtr<LockInner>; MAX_LOCK_FDS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_LOCK_FDS];
const MAX_LOCK_FDS: usize = 1024;

/// Threads between creating (or closing) a liveness descriptor and
/// registering (or deregistering) it: a fork must not fall in between,
/// or the child would keep a description that holds the parent's locks.
static OPENING: AtomicU32 = AtomicU32::new(0);
/// Forks under way in this process (their prepare handler has run).
static FORKING: AtomicU32 = AtomicU32::new(0);

/// Runs `f` where no fork can fall (see [`OPENING`]).
fn outside_fork<T>(f: impl FnOnce() -> T) -> T {
    loop {
        while FORKING.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
        OPENING.fetch_add(1, Ordering::SeqCst);
        if FORKING.load(Ordering::SeqCst) == 0 {
            break;
        }
        OPENING.fetch_sub(1, Ordering::SeqCst);
    }
    let out = f();
    OPENING.fetch_sub(1, Ordering::SeqCst);
    out
}

extern "C" fn before_fork() {
    FORKING.fetch_add(1, Ordering::SeqCst);
    // Only system calls and a registry store happen inside the gate: the
    // threads in it finish quickly and take no lock we could hold. Bounded
    // all the same: a fork from a signal handler that interrupted this
    // very thread inside the gate must not wait for ever (that child may
    // then keep one description un-renewed).
    for _ in 0..FORK_WAIT_ROUNDS {
        if OPENING.load(Ordering::SeqCst) == 0 {
            return;
        }
        // SAFETY: sched_yield takes no arguments.
        unsafe { libc::sched_yield() };
    }
}

/// How many yields a fork waits for openers to leave the gate.
const FORK_WAIT_ROUNDS: u32 = 100_000;

extern "C" fn after_fork_in_parent() {
    FORKING.fetch_sub(1, Ordering::SeqCst);
}

extern "C" fn in_forked_child() {
    // The child has one thread, no fork under way and nobody in the gate,
    // whatever the counters said when another thread of the parent was
    // forking too.
    FORKING.store(0, Ordering::SeqCst);
    OPENING.store(0, Ordering::SeqCst);
    MEMBARRIER_REGISTERED.store(false, Ordering::Relaxed);
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // The child shares its parent's open file descriptions, and with them
    // the parent's liveness locks: kept, they would make the parent look
    // alive after it died. Give each descriptor a new description of the
    // same file (no locks), or close it if that cannot be done.
    for slot in &LOCK_FDS {
        let p = slot.load(Ordering::Relaxed);
        if p.is_null() {
            continue;
        }
        // SAFETY: registered entries point to live boxed LockInners (an
        // owner deregisters before freeing), copied into the child as is.
        let inner = unsafe { &*p };
        inner.held.store(0, Ordering::Relaxed);
        if !renew_description(inner.fd) {
            inner.usable.store(false, Ordering::Relaxed);
            // SAFETY: close is async-signal-safe; the number is not closed
            // again (see `LockFd::drop`).
            unsafe { libc::close(inner.fd) };
        }
    }
}

/// Replaces descriptor `fd` by a new open file description of the same
/// file, through /proc/self/fd. Only async-signal-safe calls, no
/// allocation: it runs in a forked child.
fn renew_description(fd: i32) -> bool {
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 10];
    let mut n = fd as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for k in 0..len {
        path[14 + k] = digits[len - 1 - k];
    }
    // SAFETY: `path` is NUL-terminated (at most 10 digits after 14 bytes,
    // in a 26-byte buffer of zeros); open, dup3 and close are
    // async-signal-safe.
    unsafe {
        let new = libc::open(
            path.as_ptr().cast(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        );
        if new < 0 {
            return false;
        }
        let ok = libc::dup3(new, fd, libc::O_CLOEXEC) == fd;
        libc::close(new);
        ok
    }
}

fn install_fork_handler() {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: the handler only touches atomics and calls close(2),
        // both safe in a child between fork and anything else.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(in_forked_child),
            )
        };
    });
}

/// This process's fork generation: it changes in a forked child, so a
/// handle can tell, with one load, that it was inherited.
#[inline]
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Registers this process for global expedited memory barriers, if it is
/// not yet (again in a forked child). True if the kernel supports them.
///
/// With it, a waiter about to sleep pays for a barrier on every CPU that
/// runs a registered process (`membarrier`, a few microseconds), so that
/// the processes that wake it can use a mere compiler fence on their hot
/// path instead of a full memory fence on every message.
pub fn membarrier_ready() -> bool {
    if MEMBARRIER_REGISTERED.load(Ordering::Acquire) {
        return true;
    }
    install_fork_handler();
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
    MEMBARRIER_REGISTERED.load(Ordering::Relaxed)
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

/// A monotonic clock in milliseconds with a resolution of a few (the
/// kernel's tick): read in the vDSO, a few nanoseconds, no system call.
pub fn coarse_clock_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

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

/// Where the liveness lock bytes start in a segment's file: far past any
/// data, so the locks never meet anything else (byte locks may lie beyond
/// the end of a file).
const LOCK_BASE: i64 = 1 << 32;

/// A segment's descriptor holding liveness locks: one byte lock per
/// attachment entry, an open-file-description (`F_OFD_SETLK`) write lock.
/// The kernel drops it when the last descriptor of the open file
/// description closes, that is when the process exits, however it dies,
/// whatever its pid namespace, user or thread state.
///
/// Locks held through one description never conflict with each other, so
/// the kernel cannot tell this process's own locks from free bytes: the
/// descriptor keeps its own record of the bytes it holds, and taking a
/// byte reserves it in that record first (so two threads of this process
/// never both take one).
///
/// Across `fork`, the child gets a new description of the same file (no
/// locks held, none inherited): the parent's locks stay the parent's.
/// Across `exec`, the descriptor closes (`O_CLOEXEC`).
#[derive(Debug)]
pub struct LockFd {
    inner: Box<LockInner>,
    slot: Option<usize>,
}

#[derive(Debug)]
struct LockInner {
    fd: i32,
    /// Bytes this description holds (or one of our threads is taking).
    held: AtomicU64,
    /// False once a fork handler could not renew the descriptor (and
    /// closed it): nothing may use it any more.
    usable: AtomicBool,
}

/// Who holds a liveness byte, as one description sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This description (this process, through this mapping).
    Us,
    /// Another open file description: a live process.
    Other,
    /// Nobody.
    Nobody,
}

impl LockFd {
    /// A new open file description of the file open as `file`, for the
    /// locks alone. It must not be the description a mapping was made
    /// through: a mapping holds its description, and a forked child
    /// inherits the mapping, which would keep the locks held after this
    /// process died.
    ///
    /// The new description comes from /proc/self/fd; without /proc, from
    /// `shm_name` (checked to still be the same file).
    pub fn for_file(file: &OwnedFd, shm_name: &str) -> std::io::Result<LockFd> {
        install_fork_handler();
        let mut inner = Box::new(LockInner {
            fd: -1,
            held: AtomicU64::new(0),
            usable: AtomicBool::new(true),
        });
        let p = &mut *inner as *mut LockInner;
        let slot = outside_fork(|| {
            let fd = reopen(file.as_raw_fd())
                .or_else(|e| reopen_by_name(file, shm_name).map_err(|by_name| {
                    log::debug!("{shm_name}: reopening by name failed too: {by_name}");
                    e
                }))?;
            // SAFETY: `p` points into the box, alive and not yet shared.
            unsafe { (*p).fd = fd };
            let slot = LOCK_FDS.iter().position(|s| {
                s.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            });
            Ok::<_, std::io::Error>(slot)
        })?;
        if slot.is_none() {
            log::warn!(
                "more than {MAX_LOCK_FDS} mapped queues: a child forked now would keep this one's liveness locks"
            );
        }
        Ok(LockFd { inner, slot })
    }

    /// False if this descriptor was inherited through fork and could not
    /// be renewed (then nothing may attach through it).
    pub fn usable(&self) -> bool {
        self.inner.usable.load(Ordering::Relaxed)
    }

    /// `fstat` of the file, through this description: its current size
    /// and link count. `None` if the descriptor is unusable (closed after
    /// a fork) or `fstat` failed.
    pub fn fstat(&self) -> Option<libc::stat> {
        if !self.usable() {
            return None;
        }
        // SAFETY: a zeroed stat is a valid value; fstat only writes it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on our descriptor with a pointer to a live stat.
        (unsafe { libc::fstat(self.inner.fd, &mut st) } == 0).then_some(st)
    }

    fn fcntl(&self, cmd: libc::c_int, kind: libc::c_int, byte: u32) -> std::io::Result<libc::flock> {
        if !self.usable() {
            return Err(std::io::Error::other(
                "descriptor inherited through fork and closed",
            ));
        }
        // SAFETY: a zeroed flock is a valid value (l_pid must be 0 for OFD
        // locks); the kernel only reads it and, for F_OFD_GETLK, writes it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = LOCK_BASE + byte as i64;
        fl.l_len = 1;
        // SAFETY: fcntl with a pointer to a live, initialized flock.
        let rc = unsafe { libc::fcntl(self.inner.fd, cmd, &mut fl as *mut libc::flock) };
        if rc == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fl)
    }

    /// Takes the lock of `byte` (< 64) without waiting: `Ok(false)` if a
    /// live process holds it, this one included.
    pub fn take(&self, byte: u32) -> std::io::Result<bool> {
        let bit = 1u64 << byte;
        if self.inner.held.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return Ok(false);
        }
        let taken = match self.fcntl(libc::F_OFD_SETLK, libc::F_WRLCK, byte) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                Ok(false)
            }
            Err(e) => Err(e),
        };
        if !matches!(taken, Ok(true)) {
            self.inner.held.fetch_and(!bit, Ordering::AcqRel);
        }
        taken
    }

    /// Releases the lock of `byte`, if this description holds it.
    pub fn give_back(&self, byte: u32) {
        let bit = 1u64 << byte;
        if self.inner.held.load(Ordering::Acquire) & bit == 0 {
            return;
        }
        if let Err(e) = self.fcntl(libc::F_OFD_SETLK, libc::F_UNLCK, byte) {
            log::debug!("unlock of liveness byte {byte} failed: {e}");
        }
        self.inner.held.fetch_and(!bit, Ordering::AcqRel);
    }

    /// Who holds the lock of `byte`.
    pub fn holder(&self, byte: u32) -> std::io::Result<Holder> {
        if self.inner.held.load(Ordering::Acquire) & (1u64 << byte) != 0 {
            return Ok(Holder::Us);
        }
        let fl = self.fcntl(libc::F_OFD_GETLK, libc::F_WRLCK, byte)?;
        Ok(if fl.l_type == libc::F_UNLCK as libc::c_short {
            Holder::Nobody
        } else {
            Holder::Other
        })
    }
}

impl Drop for LockFd {
    fn drop(&mut self) {
        outside_fork(|| {
            if let Some(slot) = self.slot {
                // Before the memory goes: a fork from now on does not see it.
                LOCK_FDS[slot].store(std::ptr::null_mut(), Ordering::Release);
            }
            if self.usable() {
                // SAFETY: we own this descriptor (opened in `for_file`),
                // and no other code closes it while it is usable.
                drop(unsafe { OwnedFd::from_raw_fd(self.inner.fd) });
            }
            // Otherwise the fork handler closed it already; its number may
            // belong to something else by now.
        });
    }
}

/// [`reopen`] without /proc: open the segment's name again, and make sure
/// it is still the same file.
fn reopen_by_name(file: &OwnedFd, shm_name: &str) -> std::io::Result<i32> {
    use nix::fcntl::OFlag;
    let new = nix::sys::mman::shm_open(
        format!("/{shm_name}").as_str(),
        OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let same = |fd: i32| nix::sys::stat::fstat(fd).map(|st| (st.st_dev, st.st_ino));
    match (same(file.as_raw_fd()), same(new.as_raw_fd())) {
        (Ok(a), Ok(b)) if a == b => Ok(std::os::fd::IntoRawFd::into_raw_fd(new)),
        _ => Err(std::io::Error::other(format!(
            "{shm_name:?} in /dev/shm is another file now"
        ))),
    }
}

/// A new open file description of the file open as `fd`, close-on-exec:
/// through /proc/self/fd (the name in /dev/shm may lead elsewhere by now).
fn reopen(fd: i32) -> std::io::Result<i32> {
    let path = format!("/proc/self/fd/{fd}\0");
    // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
    let new = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if new < 0 {
        // The errno as it is (EACCES, ENOENT without /proc, ...): callers
        // map it to a typed error.
        return Err(std::io::Error::last_os_error());
    }
    Ok(new)
}

/// Total bytes of the file system holding `path`; `None` if it does not
/// say (a tmpfs mounted without a size limit reports 0 blocks).
pub fn total_bytes(path: &str) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let total = st.blocks() as u64 * st.fragment_size() as u64;
    (total > 0).then_some(total)
}

/// Physical memory plus swap, in bytes (what an unlimited tmpfs can hold
/// at most), if the kernel says.
pub fn memory_bytes() -> Option<u64> {
    // SAFETY: sysinfo fills the struct we own.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    let unit = info.mem_unit.max(1) as u64;
    Some((info.totalram as u64 + info.totalswap as u64) * unit)
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
    fn own_process_has_a_start_time() {
        let info = process_info(current_pid()).expect("own /proc entry");
        assert!(info.start_time > 0 && !info.exited);
        // A pid above pid_max never exists.
        assert!(process_info(u32::MAX - 1).is_none());
    }

    #[test]
    #[cfg_attr(miri, ignore = "opens files and takes fcntl locks")]
    fn liveness_locks_conflict_between_descriptions_only() {
        let path = std::env::temp_dir().join(format!("ipc-core-lock-test-{}", current_pid()));
        let open = || -> OwnedFd {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
                .into()
        };
        let a = LockFd::for_file(&open(), "unused").unwrap();
        let b = LockFd::for_file(&open(), "unused").unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(a.holder(3).unwrap(), Holder::Nobody);
        assert!(a.take(3).unwrap());
        assert!(!a.take(3).unwrap(), "held by us already");
        assert_eq!(a.holder(3).unwrap(), Holder::Us);
        assert!(!b.take(3).unwrap());
        assert_eq!(b.holder(3).unwrap(), Holder::Other);
        assert!(b.take(4).unwrap());
        a.give_back(3);
        assert!(b.take(3).unwrap());
        drop(b);
        assert!(a.take(3).unwrap() && a.take(4).unwrap(), "released at close");
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
