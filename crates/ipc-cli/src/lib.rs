//! What the command-line tools share: exit codes, logging set-up, a stop
//! flag raised by SIGINT/SIGTERM, and a throughput meter.
#![deny(missing_docs)]

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: runtime failure (bad segment, verification failed, ...).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad command line (clap's own code).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: stopped by SIGINT or SIGTERM (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// How long blocking calls wait before the tools look at the stop flag.
pub const POLL: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::Relaxed);
    STOP.store(true, Ordering::Relaxed);
}

/// Sets up `env_logger` (RUST_LOG, default `warn`) and the SIGINT/SIGTERM
/// handler that raises the stop flag. Without SA_RESTART, so a blocked
/// `read` or futex wait returns early and the tool notices the flag.
pub fn init(tool: &'static str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .format(move |buf, record| writeln!(buf, "{tool}: {}: {}", record.level(), record.args()))
        .init();
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to atomics, which is
        // async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            log::warn!("cannot install a {sig} handler: {e}");
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
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
            eprintln!("{tool}: error: {e:#}");
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
            eprint!("\r{}: {}   ", self.tool, self.line());
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
            eprint!("\r");
        }
        eprintln!("{}: {}", self.tool, self.line());
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
}
