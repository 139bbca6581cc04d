//! `producer`: writes into a shared-memory buffer, from stdin or synthetic.

use std::io::{ErrorKind, Read};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipc_cli::{finish, init, parse_mode, parse_size, stop_requested, Meter, EXIT_OK, POLL};
use ipc_core::buffer::{BufferConfig, Producer, SharedBuffer};
use ipc_core::sync::{Deadline, SpinPolicy};
use ipc_core::{synthetic, SendError};

/// Streams stdin (or synthetic messages) into a shared-memory buffer.
///
/// Without --count, reads stdin until end of file and sends what each read
/// returns as one message (at most the segment's max message size), then
/// detaches. Consumers see end of stream once every producer has detached.
///
/// Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Name of the segment in /dev/shm (letters, digits, '.', '_', '-').
    #[arg(short, long)]
    segment: String,

    /// Create the segment (fails if it exists) instead of attaching to it.
    #[arg(long)]
    create: bool,

    /// With --create: most messages queued at once.
    #[arg(long, default_value_t = 64, requires = "create")]
    capacity: u32,

    /// With --create: largest message in bytes (K, M suffixes allowed).
    #[arg(long, default_value = "64K", value_parser = parse_size, requires = "create")]
    max_message: u64,

    /// With --create: permission bits in octal (600 = owner only; 660 lets
    /// the group attach).
    #[arg(long, default_value = "600", value_parser = parse_mode, requires = "create")]
    mode: u32,

    /// Synthetic mode: send this many self-checking messages instead of stdin.
    #[arg(long, requires = "size")]
    count: Option<u64>,

    /// Synthetic mode: bytes per message (at least 24).
    #[arg(long, value_parser = parse_size, requires = "count")]
    size: Option<u64>,

    /// Synthetic mode: producer id stamped on every message (default: pid).
    #[arg(long)]
    id: Option<u32>,

    /// Give up if the buffer stays full this many seconds (default: wait).
    #[arg(long)]
    timeout: Option<f64>,

    /// How to wait when the buffer is full.
    #[arg(long, value_enum, default_value_t = Wait::Adaptive)]
    wait: Wait,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Wait {
    /// Spin briefly, then sleep.
    Adaptive,
    /// Spin long (lowest latency, burns a core).
    Spin,
    /// Sleep at once (lowest CPU).
    Sleep,
}

fn main() {
    init("producer");
    let args = Args::parse();
    finish("producer", run(&args));
}

fn run(args: &Args) -> Result<i32> {
    let name = &args.segment;
    let buffer = if args.create {
        let max_message = u32::try_from(args.max_message)
            .with_context(|| format!("--max-message {} is too large", args.max_message))?;
        let config = BufferConfig {
            capacity: args.capacity,
            max_message,
            mode: args.mode,
        };
        SharedBuffer::create(name, &config).with_context(|| format!("creating segment {name}"))?
    } else {
        SharedBuffer::open(name).with_context(|| format!("opening segment {name}"))?
    };
    let mut producer = buffer
        .producer()
        .with_context(|| format!("attaching a producer to segment {name}"))?;
    producer.set_spin_policy(match args.wait {
        Wait::Adaptive => SpinPolicy::DEFAULT,
        Wait::Spin => SpinPolicy::SPIN,
        Wait::Sleep => SpinPolicy::SLEEP,
    });
    log::info!("attached to {name} as a producer");
    let mut meter = Meter::new("producer");
    let sender = Sender {
        producer: &mut producer,
        timeout: args.timeout,
        name,
    };
    match (args.count, args.size) {
        (Some(count), Some(size)) => synthetic_stream(sender, count, size, args.id, &mut meter)?,
        _ => stdin_stream(sender, &mut meter)?,
    }
    meter.summary();
    Ok(EXIT_OK)
}

/// Sends with the stop flag and the idle timeout in mind.
struct Sender<'a> {
    producer: &'a mut Producer,
    timeout: Option<f64>,
    name: &'a str,
}

impl Sender<'_> {
    /// Sends `msg`; `Ok(false)` if a signal asked us to stop.
    fn send(&mut self, msg: &[u8]) -> Result<bool> {
        let started = std::time::Instant::now();
        loop {
            if stop_requested() {
                return Ok(false);
            }
            match self.producer.send_until(msg, Deadline::after(POLL)) {
                Ok(()) => return Ok(true),
                Err(SendError::Timeout(_)) => {
                    if let Some(t) = self.timeout {
                        if started.elapsed().as_secs_f64() >= t {
                            bail!("segment {}: buffer stayed full for {t} s", self.name);
                        }
                    }
                }
                Err(e) => bail!("segment {}: {e}", self.name),
            }
        }
    }
}

fn synthetic_stream(
    mut sender: Sender<'_>,
    count: u64,
    size: u64,
    id: Option<u32>,
    meter: &mut Meter,
) -> Result<()> {
    let max = sender.producer.max_message() as u64;
    if size < synthetic::HEADER_LEN as u64 || size > max {
        bail!(
            "--size {size} must be between {} and the segment's max message size {max}",
            synthetic::HEADER_LEN
        );
    }
    let id = id.unwrap_or_else(std::process::id);
    let mut buf = vec![0u8; size as usize];
    for seq in 0..count {
        synthetic::encode(&mut buf, id, seq);
        if !sender.send(&buf)? {
            break;
        }
        meter.add(buf.len());
    }
    Ok(())
}

fn stdin_stream(mut sender: Sender<'_>, meter: &mut Meter) -> Result<()> {
    let mut buf = vec![0u8; sender.producer.max_message()];
    let mut stdin = std::io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                if stop_requested() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e).context("reading stdin"),
        };
        if !sender.send(&buf[..n])? {
            return Ok(());
        }
        meter.add(n);
    }
}
