//! What the command-line tools share: exit codes, logging set-up, a stop
//! flag raised by SIGINT/SIGTERM, a SIGBUS handler for segments truncated
//! under us, unbuffered writes to stdout, value parsers for every numeric
//! flag, and a throughput meter.
#![deny(missing_docs)]

/// `println!` that never panics: a closed stdout (`| head`) ends the
/// program quietly (exit 0), any other write failure ends it with a message
/// and exit 1 (a full disk, `> /dev/full`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics: a failure to write to stderr is ignored
/// (there is nowhere left to report it).
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// What [`out!`] calls.
pub fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let done = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match done {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(EXIT_OK),
        Err(e) => {
            err!("cannot write to stdout: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    }
}

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipc_core::mailbox::{unbounded_block_for, Capacity};
use ipc_core::{Geometry, Kind, MAX_CAPACITY, MAX_MESSAGE};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: runtime failure (bad segment, verification failed, ...).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad command line (clap's own code).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the segment was truncated (or otherwise lost its pages)
/// while mapped, so touching it raised SIGBUS; the tool ends at once.
pub const EXIT_TRUNCATED: i32 = 3;
/// Exit code: stopped by SIGINT or SIGTERM (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// How long blocking calls wait before the tools look at the stop flag.
pub const POLL: Duration = Duration::from_millis(100);

/// Longest `--timeout` accepted, in seconds (about 31 years).
pub const MAX_TIMEOUT_SECS: f64 = 1e9;

static STOP: AtomicBool = AtomicBool::new(false);
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The SIGBUS message, set once by [`set_sigbus_target`] before any
/// segment is mapped, read by the handler (a leaked, never freed buffer).
static SIGBUS_MSG: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static SIGBUS_LEN: AtomicUsize = AtomicUsize::new(0);

const SIGBUS_FALLBACK: &[u8] =
    b"segment truncated under us (SIGBUS): its memory is gone; exiting with code 3\n";

extern "C" fn on_signal(sig: nix::libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::Relaxed);
    if !STOP.swap(true, Ordering::Relaxed) {
        // From now on SIGALRM every POLL interrupts whatever system call
        // blocks (a write to a full pipe, a read of an idle stdin), so a
        // signal that landed just before such a call cannot be missed.
        let every = nix::libc::timeval {
            tv_sec: 0,
            tv_usec: POLL.as_micros() as nix::libc::suseconds_t,
        };
        let timer = nix::libc::itimerval {
            it_interval: every,
            it_value: every,
        };
        // SAFETY: setitimer is a plain system call on a local value; it
        // touches no memory the interrupted code may hold.
        unsafe { nix::libc::setitimer(nix::libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    }
}

extern "C" fn on_alarm(_sig: nix::libc::c_int) {}

extern "C" fn on_sigbus(_sig: nix::libc::c_int) {
    let ptr = SIGBUS_MSG.load(Ordering::Acquire);
    let (ptr, len) = if ptr.is_null() {
        (SIGBUS_FALLBACK.as_ptr(), SIGBUS_FALLBACK.len())
    } else {
        (ptr as *const u8, SIGBUS_LEN.load(Ordering::Acquire))
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `ptr..ptr+len`
    // is either a static or a leaked buffer that is never freed. The
    // handler never returns, so the faulting access is never resumed.
    unsafe {
        nix::libc::write(2, ptr.cast(), len);
        nix::libc::_exit(EXIT_TRUNCATED);
    }
}

/// Names the segment in the SIGBUS message of `tool` (call it before
/// mapping the segment; later calls leak the previous message).
pub fn set_sigbus_target(tool: &str, what: &str) {
    let msg = format!(
        "{tool}: segment truncated under us (SIGBUS): {what} was truncated or its pages \
         were taken away while mapped; exiting with code {EXIT_TRUNCATED}\n"
    )
    .into_bytes()
    .into_boxed_slice();
    let len = msg.len();
    let ptr = Box::leak(msg).as_mut_ptr();
    SIGBUS_LEN.store(len, Ordering::Release);
    SIGBUS_MSG.store(ptr, Ordering::Release);
}

/// Sets up `env_logger` (RUST_LOG, default `warn`), the SIGINT/SIGTERM
/// handler that raises the stop flag, and the SIGBUS handler.
///
/// Without SA_RESTART, so a blocked `read`, `write` or futex wait returns
/// early and the tool notices the flag; once the flag is raised, SIGALRM
/// arrives every [`POLL`] so that no blocking call outlives it. SIGBUS
/// (the segment was truncated under us) prints one line and exits with
/// [`EXIT_TRUNCATED`] without resuming.
pub fn init(tool: &'static str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .format(move |buf, record| writeln!(buf, "{tool}: {}: {}", record.level(), record.args()))
        .init();
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let handlers: [(Signal, extern "C" fn(nix::libc::c_int)); 4] = [
        (Signal::SIGINT, on_signal),
        (Signal::SIGTERM, on_signal),
        (Signal::SIGALRM, on_alarm),
        (Signal::SIGBUS, on_sigbus),
    ];
    for (sig, handler) in handlers {
        let action = SigAction::new(
            SigHandler::Handler(handler),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handlers only store to atomics, call setitimer, or
        // write(2) and _exit(2): all async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            log::warn!("cannot install a {sig} handler: {e}");
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// How a write of one whole message to a file descriptor ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Every byte was written.
    All,
    /// A stop signal arrived first; this many bytes had been written.
    Stopped(usize),
    /// The reader went away (EPIPE); this many bytes had been written.
    Closed(usize),
}

/// Writes all of `bytes` to `fd` with write(2), no userspace buffering, so
/// that once this returns [`Written::All`] the bytes are in the kernel's
/// hands. An EINTR with the stop flag raised ends the write
/// ([`Written::Stopped`]); an EINTR without it retries.
pub fn write_all_fd(fd: i32, bytes: &[u8]) -> std::io::Result<Written> {
    let mut done = 0;
    while done < bytes.len() {
        if stop_requested() {
            return Ok(Written::Stopped(done));
        }
        let rest = &bytes[done..];
        // SAFETY: write(2) reads `rest.len()` bytes from a live slice.
        let n = unsafe { nix::libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(nix::libc::EINTR) => {}
            Some(nix::libc::EPIPE) => return Ok(Written::Closed(done)),
            _ => return Err(err),
        }
    }
    Ok(Written::All)
}

/// True if `fd` is open in non-blocking mode (`O_NONBLOCK`).
pub fn fd_nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL reads the descriptor's flags; no pointers.
    let fl = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFL) };
    fl >= 0 && fl & nix::libc::O_NONBLOCK != 0
}

/// Waits until `fd` has input (or end of file, or an error to report)
/// for at most `timeout`: true if a read would not block now.
pub fn wait_readable(fd: i32, timeout: std::time::Duration) -> std::io::Result<bool> {
    let mut p = nix::libc::pollfd {
        fd,
        events: nix::libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll(2) on one live pollfd.
    let n = unsafe { nix::libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(nix::libc::EINTR) => Ok(false),
            _ => Err(err),
        };
    }
    Ok(n > 0)
}

/// One read(2) of `fd` into `buf`, unbuffered, retried on EINTR unless a
/// signal asked us to stop; 0 at end of file or on stop.
pub fn read_fd(fd: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: read(2) writes at most `buf.len()` bytes into a live,
        // exclusively borrowed slice.
        let n = unsafe { nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(nix::libc::EINTR) {
            return Err(err);
        }
        if stop_requested() {
            return Ok(0);
        }
    }
}

/// An error in what the user asked for (exit code 2), found after
/// argument parsing because it depends on the segment (e.g. a message size
/// above the segment's maximum).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs a tool's `run`, prints an error once with its context chain, and
/// exits with the documented code: 2 for a [`UsageError`], 1 otherwise.
pub fn finish(tool: &str, result: anyhow::Result<i32>) -> ! {
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            err!("{tool}: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            }
        }
    };
    let code = if stop_requested() && code == EXIT_OK {
        log::info!("stopped by signal {}", STOP_SIGNAL.load(Ordering::Relaxed));
        EXIT_INTERRUPTED
    } else {
        code
    };
    std::process::exit(code)
}

/// Counts messages and bytes; shows progress when stderr is a terminal and
/// prints a summary line at the end.
#[derive(Debug)]
pub struct Meter {
    tool: &'static str,
    start: Instant,
    last_shown: Instant,
    tty: bool,
    /// Messages counted.
    pub messages: u64,
    /// Payload bytes counted.
    pub bytes: u64,
}

impl Meter {
    /// Starts the clock.
    pub fn new(tool: &'static str) -> Meter {
        let now = Instant::now();
        Meter {
            tool,
            start: now,
            last_shown: now,
            tty: std::io::stderr().is_terminal(),
            messages: 0,
            bytes: 0,
        }
    }

    /// Counts one message of `len` bytes.
    pub fn add(&mut self, len: usize) {
        self.messages += 1;
        self.bytes += len as u64;
        if self.tty
            && self.messages.is_multiple_of(1024)
            && self.last_shown.elapsed() > Duration::from_millis(500)
        {
            self.last_shown = Instant::now();
            use std::io::Write as _;
            let _ = write!(std::io::stderr(), "\r{}: {}   ", self.tool, self.line());
        }
    }

    fn line(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        format!(
            "{} messages, {} bytes in {:.3} s: {:.0} msg/s, {:.2} MB/s",
            self.messages,
            self.bytes,
            secs,
            self.messages as f64 / secs,
            self.bytes as f64 / secs / 1e6
        )
    }

    /// Prints the summary line on stderr.
    pub fn summary(&self) {
        if self.tty {
            use std::io::Write as _;
            let _ = write!(std::io::stderr(), "\r");
        }
        err!("{}: {}", self.tool, self.line());
    }
}

/// How a tool waits when the queue is full or empty (`--wait`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Spin briefly (adapting to how often it pays off), then sleep.
    Adaptive,
    /// Spin long (lowest latency, burns a core).
    Spin,
    /// Sleep at once (lowest CPU).
    Sleep,
}

impl Wait {
    /// The library's policy for this choice.
    pub fn policy(self) -> ipc_core::sync::SpinPolicy {
        use ipc_core::sync::SpinPolicy;
        match self {
            Wait::Adaptive => SpinPolicy::DEFAULT,
            Wait::Spin => SpinPolicy::SPIN,
            Wait::Sleep => SpinPolicy::SLEEP,
        }
    }
}

/// Parses a segment, mailbox or port name (checked like the library does,
/// so that a bad name is a usage error).
pub fn parse_name(s: &str) -> Result<String, String> {
    ipc_core::segment::validate_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses `--max-message`: a size (K, M, G suffixes) from 1 byte to
/// [`MAX_MESSAGE`] (64 MiB).
pub fn parse_max_message(s: &str) -> Result<u32, String> {
    let v = parse_size(s)?;
    if v == 0 || v > MAX_MESSAGE as u64 {
        return Err(format!(
            "the max message size must be 1 to {MAX_MESSAGE} bytes (64 MiB), got {v}"
        ));
    }
    Ok(v as u32)
}

/// Parses `--capacity`: `0`/`zero` (rendezvous), `unbounded`, or a number
/// of messages up to [`MAX_CAPACITY`] (2^20).
pub fn parse_capacity(s: &str) -> Result<Capacity, String> {
    let c: Capacity = s.parse()?;
    match c {
        Capacity::Bounded(n) if n > MAX_CAPACITY => Err(format!(
            "capacity {n} is above the limit of {MAX_CAPACITY} messages"
        )),
        c => Ok(c),
    }
}

/// Parses a count of messages (`--count`): a whole number, at least 1.
pub fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("the count must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number of messages")),
    }
}

/// Parses `--timeout`: seconds, a finite number above 0 and at most
/// [`MAX_TIMEOUT_SECS`] (fractions allowed).
pub fn parse_timeout(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("timeout {s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > MAX_TIMEOUT_SECS {
        return Err(format!(
            "timeout {s} must be a finite number of seconds above 0 and at most {MAX_TIMEOUT_SECS}"
        ));
    }
    Ok(v)
}

/// Checks, before anything is created, that a segment of `kind` with
/// `capacity` messages of `max_message` bytes fits the library's limits
/// (at most [`ipc_core::MAX_SEGMENT`] bytes in all, which the message names); the
/// error is a [`UsageError`].
pub fn check_geometry(
    kind: Kind,
    capacity: Capacity,
    max_message: u32,
    budget: u64,
) -> Result<(), UsageError> {
    let slots = match capacity {
        Capacity::Zero | Capacity::Bounded(0) => 1,
        Capacity::Bounded(n) => n,
        Capacity::Unbounded if budget != 0 => return Err(UsageError(
            "--budget sizes a bounded or rendezvous queue's ring; an unbounded one grows by blocks of their own size (at most 4 MiB, or what one largest message needs)"
                .to_owned(),
        )),
        Capacity::Unbounded => unbounded_block_for(max_message),
    };
    Geometry::packed(kind, slots, max_message, budget)
        .map(|_| ())
        .map_err(UsageError)
}

/// Parses `--budget`: bytes of a single-mode buffer's packed ring (K, M,
/// G suffixes); 0 picks the default.
pub fn parse_budget(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// Parses a synthetic message size: at least the self-checking header.
pub fn parse_message_size(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    let min = ipc_core::synthetic::HEADER_LEN as u64;
    if v < min {
        return Err(format!(
            "{v} is below the {min} bytes of the self-checking header"
        ));
    }
    Ok(v)
}

/// Parses a permission mode given in octal (`600`, `0640`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let v = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 600 or 640"))?;
    if v > 0o777 || v & 0o600 != 0o600 {
        return Err(format!(
            "mode {s} must keep owner read and write (0600) and stay within 0777"
        ));
    }
    Ok(v)
}

/// Parses a size with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (a number, optionally with K, M or G)"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("{s} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("3"), Ok(3));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert_eq!(parse_mode("640"), Ok(0o640));
        assert!(parse_mode("400").is_err());
        assert!(parse_mode("9").is_err());
    }

    #[test]
    fn numeric_flags_are_range_checked() {
        assert_eq!(parse_max_message("64M"), Ok(MAX_MESSAGE));
        for bad in ["0", "67108865", "4G", "x"] {
            assert!(parse_max_message(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_capacity("1048576"),
            Ok(Capacity::Bounded(MAX_CAPACITY))
        );
        assert_eq!(parse_capacity("unbounded"), Ok(Capacity::Unbounded));
        assert!(parse_capacity("1048577").is_err());
        assert_eq!(parse_timeout("0.5"), Ok(0.5));
        for bad in ["-1", "0", "nan", "inf", "1e10", "soon"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert!(parse_count("0").is_err());
        assert_eq!(parse_count("3"), Ok(3));
        // A ring too small for the largest message, or a budget for a
        // queue that has no ring, is refused.
        assert!(check_geometry(Kind::Buffer, Capacity::Bounded(4), 1 << 20, 4096).is_err());
        assert!(check_geometry(Kind::Mailbox, Capacity::Unbounded, 64, 4096).is_err());
        // Bytes, not slots: the largest capacity of the largest messages
        // fits its default budget.
        assert!(check_geometry(
            Kind::Buffer,
            Capacity::Bounded(MAX_CAPACITY),
            MAX_MESSAGE,
            0
        )
        .is_ok());
        assert!(check_geometry(Kind::Mailbox, Capacity::Zero, 64, 0).is_ok());
        assert!(check_geometry(Kind::Buffer, Capacity::Unbounded, MAX_MESSAGE, 0).is_ok());
    }
}
