//! `consumer`: reads from a shared-memory buffer to stdout, or verifies.

use std::io::{ErrorKind, Write};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipc_cli::{finish, init, stop_requested, Meter, EXIT_FAILURE, EXIT_OK, POLL};
use ipc_core::buffer::{Consumer, SharedBuffer};
use ipc_core::sync::{Deadline, SpinPolicy};
use ipc_core::synthetic::Verifier;
use ipc_core::RecvError;

/// Reads messages from a shared-memory buffer and writes their payloads to
/// stdout, in order, until end of stream (every producer that attached has
/// detached and the buffer is drained).
///
/// Exit codes: 0 success, 1 runtime error or failed verification, 2 usage
/// error, 130 interrupted. A closed stdout (`consumer | head`) ends quietly.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Name of the segment in /dev/shm.
    #[arg(short, long)]
    segment: String,

    /// Check synthetic messages (checksum, per-producer order, duplicates)
    /// instead of printing them; print one summary line on stderr; exit 1
    /// on any error.
    #[arg(long)]
    verify: bool,

    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,

    /// Report end of stream only after this many producers have attached
    /// (for pipelines whose producers start after the consumer).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    producers: u32,

    /// Give up if no message arrives for this many seconds (default: wait).
    #[arg(long)]
    timeout: Option<f64>,

    /// Remove the segment's name once the stream has ended.
    #[arg(long)]
    remove: bool,

    /// How to wait when the buffer is empty.
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
    init("consumer");
    let args = Args::parse();
    finish("consumer", run(&args));
}

/// What one receive produced.
enum Next {
    Message,
    EndOfStream,
    Stopped,
}

fn run(args: &Args) -> Result<i32> {
    let name = &args.segment;
    let buffer = SharedBuffer::open(name).with_context(|| format!("opening segment {name}"))?;
    let mut consumer = buffer
        .consumer()
        .with_context(|| format!("attaching a consumer to segment {name}"))?;
    consumer.set_min_producers(args.producers);
    consumer.set_spin_policy(match args.wait {
        Wait::Adaptive => SpinPolicy::DEFAULT,
        Wait::Spin => SpinPolicy::SPIN,
        Wait::Sleep => SpinPolicy::SLEEP,
    });
    log::info!("attached to {name} as a consumer");
    let mut meter = Meter::new("consumer");
    let mut verifier = Verifier::default();
    let mut stdout = std::io::stdout().lock();
    let mut out_closed = false;
    let limit = args.count.unwrap_or(u64::MAX);
    while meter.messages < limit {
        let next = receive(&mut consumer, args.timeout, name, |bytes| {
            meter.add(bytes.len());
            if args.verify {
                verifier.check(bytes);
            } else if let Err(e) = stdout.write_all(bytes) {
                if e.kind() == ErrorKind::BrokenPipe {
                    out_closed = true;
                } else {
                    return Err(e).context("writing stdout");
                }
            }
            Ok(())
        })?;
        if out_closed {
            log::info!("stdout closed; stopping");
            break;
        }
        match next {
            Next::Message => {}
            Next::EndOfStream => {
                if args.remove {
                    SharedBuffer::unlink(name)
                        .with_context(|| format!("removing segment {name}"))?;
                }
                break;
            }
            Next::Stopped => break,
        }
    }
    if !out_closed {
        match stdout.flush() {
            Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e).context("writing stdout"),
            _ => {}
        }
    }
    meter.summary();
    if args.verify {
        eprintln!("consumer: verify: {}", verifier.summary());
        if !verifier.is_clean() {
            return Ok(EXIT_FAILURE);
        }
    }
    Ok(EXIT_OK)
}

/// Receives one message in place and hands it to `f`, polling the stop
/// flag and honouring the idle timeout.
fn receive(
    consumer: &mut Consumer,
    timeout: Option<f64>,
    name: &str,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Next> {
    let started = std::time::Instant::now();
    loop {
        if stop_requested() {
            return Ok(Next::Stopped);
        }
        match consumer.recv_with_until(Deadline::after(POLL), &mut f) {
            Ok(r) => return r.map(|()| Next::Message),
            Err(RecvError::Disconnected) => return Ok(Next::EndOfStream),
            Err(RecvError::Timeout) => {
                if let Some(t) = timeout {
                    if started.elapsed().as_secs_f64() >= t {
                        bail!("segment {name}: no message for {t} s");
                    }
                }
            }
            Err(e) => bail!("segment {name}: {e}"),
        }
    }
}
