//! `consumer`: reads from a shared-memory buffer, a mailbox or a port to
//! stdout, or verifies synthetic messages.

use std::io::{ErrorKind, Write};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipc_cli::{finish, init, parse_name, stop_requested, Meter, Wait, EXIT_FAILURE, EXIT_OK, POLL};
use ipc_core::buffer::SharedBuffer;
use ipc_core::mailbox::{Mailbox, MailboxConfig};
use ipc_core::ports::Port;
use ipc_core::sync::Deadline;
use ipc_core::synthetic::Verifier;
use ipc_core::{Receiver, RecvError};

/// Reads messages from a shared-memory buffer (--segment), a mailbox
/// (--mailbox) or its own named port (--port) and writes their payloads to
/// stdout, in order, until end of stream (every producer that attached has
/// detached and everything is drained).
///
/// Exit codes: 0 success, 1 runtime error or failed verification, 2 usage
/// error, 130 interrupted. A closed stdout (`consumer | head`) ends quietly.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["segment", "mailbox", "port"])))]
struct Args {
    /// Shared-memory model: name of the buffer segment in /dev/shm.
    #[arg(short, long, value_parser = parse_name)]
    segment: Option<String>,

    /// Message passing, indirect: name of the mailbox to receive from.
    #[arg(short, long, value_parser = parse_name)]
    mailbox: Option<String>,

    /// Message passing, direct: register this port name and receive what
    /// producers send to it with `--to NAME` (the name is released on exit).
    #[arg(long, value_parser = parse_name)]
    port: Option<String>,

    /// With --port: receive only messages signed by this sender (others
    /// are kept aside, not lost, until the consumer exits).
    #[arg(long, requires = "port", value_parser = parse_name)]
    from: Option<String>,

    /// With --port: largest payload accepted (K, M suffixes allowed).
    #[arg(long, default_value = "64K", value_parser = ipc_cli::parse_size, requires = "port")]
    max_message: u64,

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

    /// Remove the segment or mailbox once the stream has ended.
    #[arg(long, conflicts_with = "port")]
    remove: bool,

    /// How to wait when the buffer is empty.
    #[arg(long, value_enum, default_value_t = Wait::Adaptive)]
    wait: Wait,
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

/// Where messages come from.
enum Source {
    Queue(Receiver),
    Port { port: Port, from: Option<String> },
}

impl Source {
    /// Receives one message into `f` before `deadline`.
    fn recv_with_until(
        &mut self,
        deadline: Deadline,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Result<()>, RecvError> {
        match self {
            Source::Queue(rx) => rx.recv_with_until(deadline, f),
            Source::Port { port, from: None } => port.recv_until(deadline).map(|m| f(&m.payload)),
            Source::Port {
                port,
                from: Some(from),
            } => port.recv_from(from, deadline).map(|p| f(&p)),
        }
    }
}

fn open_source(args: &Args) -> Result<(Source, String)> {
    let policy = args.wait.policy();
    let (mut rx, what) = if let Some(name) = &args.segment {
        let buffer = SharedBuffer::open(name).with_context(|| format!("opening segment {name}"))?;
        let rx = buffer
            .consumer()
            .with_context(|| format!("attaching a consumer to segment {name}"))?;
        (rx, format!("segment {name}"))
    } else if let Some(name) = &args.mailbox {
        let mailbox = Mailbox::open(name).with_context(|| format!("opening mailbox {name}"))?;
        let rx = mailbox
            .receiver()
            .with_context(|| format!("attaching a receiver to mailbox {name}"))?;
        (rx, format!("mailbox {name}"))
    } else {
        let name = args.port.as_ref().expect("clap requires a source");
        let config = MailboxConfig {
            max_message: u32::try_from(args.max_message)
                .with_context(|| format!("--max-message {} is too large", args.max_message))?,
            ..MailboxConfig::default()
        };
        let mut port =
            Port::register(name, &config).with_context(|| format!("registering port {name}"))?;
        port.set_min_senders(args.producers);
        let source = Source::Port {
            port,
            from: args.from.clone(),
        };
        return Ok((source, format!("port {name}")));
    };
    rx.set_min_producers(args.producers);
    rx.set_spin_policy(policy);
    Ok((Source::Queue(rx), what))
}

fn run(args: &Args) -> Result<i32> {
    let (mut source, what) = open_source(args)?;
    log::info!("attached to {what} as a consumer");
    let mut meter = Meter::new("consumer");
    let mut verifier = Verifier::default();
    let mut stdout = std::io::stdout().lock();
    let mut out_closed = false;
    let limit = args.count.unwrap_or(u64::MAX);
    while meter.messages < limit {
        let next = receive(&mut source, args.timeout, &what, |bytes| {
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
                    let name = args.segment.as_ref().or(args.mailbox.as_ref());
                    if let Some(name) = name {
                        // Both kinds unlink alike, chained blocks included.
                        Mailbox::unlink(name).with_context(|| format!("removing {what}"))?;
                    }
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
    source: &mut Source,
    timeout: Option<f64>,
    what: &str,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Next> {
    let started = std::time::Instant::now();
    loop {
        if stop_requested() {
            return Ok(Next::Stopped);
        }
        match source.recv_with_until(Deadline::after(POLL), &mut f) {
            Ok(r) => return r.map(|()| Next::Message),
            Err(RecvError::Disconnected) => return Ok(Next::EndOfStream),
            Err(RecvError::Timeout) => {
                if let Some(t) = timeout {
                    if started.elapsed().as_secs_f64() >= t {
                        bail!("{what}: no message for {t} s");
                    }
                }
            }
            Err(e) => bail!("{what}: {e}"),
        }
    }
}
