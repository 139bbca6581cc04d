//! `consumer`: reads from a shared-memory buffer, a mailbox or a port to
//! stdout, or verifies synthetic messages.

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipc_cli::{
    err, finish, init, parse_count, parse_max_message, parse_name, parse_timeout,
    set_sigbus_target, stop_requested, write_all_fd, Meter, Wait, Written, EXIT_FAILURE, EXIT_OK,
    POLL,
};
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
/// Each message is written straight to stdout with write(2), no userspace
/// buffering, while its slot is still held: a message counts as delivered
/// only once write returned. A consumer killed (kill -9) mid-stream thus
/// loses at most the message it was writing; that one may appear in part
/// in the output, and it is counted as lost (`ipcctl status`: lost). With
/// --port the library hands over a copy first, so there a killed
/// consumer's message being written is lost without being counted. A
/// consumer stopped by SIGINT/SIGTERM in the middle of a write (stdout
/// full, nobody reading) says on stderr how much of that message was
/// written.
///
/// Exit codes: 0 success; 1 runtime error (the message names the source
/// and the cause) or failed verification; 2 usage error; 3 the segment was
/// truncated under us (SIGBUS); 130 interrupted by SIGINT/SIGTERM (after
/// detaching). A closed stdout (`consumer | head`) ends quietly.
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

    /// With --port: largest payload accepted, 1 to 64M (K, M, G suffixes
    /// allowed).
    #[arg(long, default_value = "64K", value_parser = parse_max_message, requires = "port")]
    max_message: u32,

    /// Check synthetic messages (checksum, per-producer order, duplicates)
    /// instead of printing them; print one summary line on stderr; exit 1
    /// on any error.
    #[arg(long)]
    verify: bool,

    /// Stop after this many messages (at least 1); with --remove, the
    /// segment or mailbox is removed then.
    #[arg(long, value_parser = parse_count)]
    count: Option<u64>,

    /// Report end of stream only after this many producers have attached
    /// (for pipelines whose producers start after the consumer).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    producers: u32,

    /// Give up (exit 1) if no message arrives for this many seconds: a
    /// finite number above 0, fractions allowed (default: wait).
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<f64>,

    /// Remove the segment or mailbox once the stream has ended or --count
    /// messages were received (even if other processes are attached: they
    /// keep their mapping).
    #[arg(long, conflicts_with = "port")]
    remove: bool,

    /// How to wait when the buffer or mailbox is empty (not with --port).
    #[arg(long, value_enum, default_value_t = Wait::Adaptive, conflicts_with = "port")]
    wait: Wait,

    /// Exit 0 at end of stream even if a producer died during the stream
    /// (killed, or gone without detaching) or abandoned a message: by
    /// default the consumer warns, naming the producer, and exits 1,
    /// since what it wrote out may be incomplete (not with --port).
    #[arg(long, conflicts_with = "port")]
    accept_incomplete: bool,
}

fn main() {
    init("consumer");
    let args = Args::parse();
    finish("consumer", run(&args));
}

/// Largest message `--verify` copies out of its queue (a buffer of this
/// size is kept); larger ones are checked in place.
const SCRATCH_MAX: usize = 1 << 20;

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
    /// Receives one message into `f` before `deadline`: in place, or with
    /// a `scratch` buffer (of the queue's largest message) copied into it
    /// first, which a queue's small messages take by a faster path.
    fn recv_with_until(
        &mut self,
        deadline: Deadline,
        scratch: Option<&mut [u8]>,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Result<()>, RecvError> {
        match self {
            Source::Queue(rx) => match scratch {
                Some(buf) => rx.recv_into(buf, deadline).map(|n| f(&buf[..n])),
                None => rx.recv_with_until(deadline, f),
            },
            // In place: the slot is released only after `f` wrote it out.
            Source::Port { port, from: None } => port.recv_with_until(deadline, |_, p| f(p)),
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
        set_sigbus_target("consumer", &format!("segment {name}"));
        let buffer = SharedBuffer::open(name).with_context(|| format!("opening segment {name}"))?;
        let mut rx = buffer
            .consumer()
            .with_context(|| format!("attaching a consumer to segment {name}"))?;
        // Like the reader of a named pipe: on a segment whose producers
        // have all left and that holds nothing, wait for a new producer
        // instead of ending at once.
        rx.expect_new_senders();
        (rx, format!("segment {name}"))
    } else if let Some(name) = &args.mailbox {
        set_sigbus_target("consumer", &format!("mailbox {name}"));
        let mailbox = Mailbox::open(name).with_context(|| format!("opening mailbox {name}"))?;
        let rx = mailbox
            .receiver()
            .with_context(|| format!("attaching a receiver to mailbox {name}"))?;
        (rx, format!("mailbox {name}"))
    } else {
        let name = args.port.as_ref().expect("clap requires a source");
        set_sigbus_target("consumer", &format!("port {name}"));
        let config = MailboxConfig {
            max_message: args.max_message,
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
    let mut out_closed = false;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut ended = false;
    // Verifying writes nothing out: messages can be copied out of the
    // queue (released at once) rather than read in place, which is faster
    // for small ones; above SCRATCH_MAX they are read in place.
    let mut scratch = match &source {
        Source::Queue(rx) if args.verify && rx.max_message() <= SCRATCH_MAX => {
            Some(vec![0u8; rx.max_message()])
        }
        _ => None,
    };
    while meter.messages < limit {
        let next = receive(
            &mut source,
            args.timeout,
            &what,
            scratch.as_deref_mut(),
            |bytes| {
                meter.add(bytes.len());
                if args.verify {
                    verifier.check(bytes);
                    return Ok(());
                }
                // Straight to fd 1 while the slot is held: once this returns
                // the bytes are the kernel's, and only then is the slot freed.
                match write_all_fd(1, bytes)
                .with_context(|| format!("writing a message from {what} to stdout"))?
            {
                Written::All => {}
                Written::Closed(_) => out_closed = true,
                Written::Stopped(done) => err!(
                    "consumer: stopped while writing a message: {done} of its {} bytes were written, the rest is lost",
                    bytes.len()
                ),
            }
                Ok(())
            },
        )?;
        if out_closed {
            log::info!("stdout closed; stopping");
            break;
        }
        match next {
            Next::Message => {}
            Next::EndOfStream => {
                ended = true;
                break;
            }
            Next::Stopped => break,
        }
    }
    // A producer that died since this stream began (even before we
    // attached, and whoever found it dead) may have left it incomplete.
    let died = match &source {
        // At end of stream, and also after --count messages: either way
        // what was written out may be part of an incomplete stream.
        Source::Queue(rx) if ended || meter.messages >= limit => {
            let s = rx.status();
            (s.stream_incomplete || s.incomplete_streams != rx.incomplete_streams_at_attach())
                .then_some(s)
        }
        _ => None,
    };
    let incomplete = match died {
        Some(s) => {
            err!(
                "consumer: warning: the stream from {what} may be incomplete: a producer died \
                 without detaching (the last one pid {}; {} producer(s) died, {} message(s) \
                 abandoned mid-write in this segment's life){}",
                s.last_dead_producer,
                s.dead_producers,
                s.abandoned_writes,
                if args.accept_incomplete {
                    " (accepted: --accept-incomplete)"
                } else {
                    "; exit 1 (--accept-incomplete to accept)"
                }
            );
            !args.accept_incomplete
        }
        None => false,
    };
    if args.remove && (ended || meter.messages >= limit) {
        let name = args.segment.as_ref().or(args.mailbox.as_ref());
        if let Some(name) = name {
            // Detach first, then unlink; both kinds unlink alike, chained
            // blocks included.
            drop(source);
            Mailbox::unlink(name).with_context(|| format!("removing {what}"))?;
        }
    }
    meter.summary();
    if args.verify {
        err!("consumer: verify: {}", verifier.summary());
        if !verifier.is_clean() {
            return Ok(EXIT_FAILURE);
        }
    }
    Ok(if incomplete { EXIT_FAILURE } else { EXIT_OK })
}

/// Receives one message in place and hands it to `f`, polling the stop
/// flag and honouring the idle timeout.
fn receive(
    source: &mut Source,
    timeout: Option<f64>,
    what: &str,
    mut scratch: Option<&mut [u8]>,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Next> {
    let mut started: Option<std::time::Instant> = None;
    loop {
        if stop_requested() {
            return Ok(Next::Stopped);
        }
        // First without a deadline (no clock read when a message is
        // there, the common case), then in slices of POLL.
        let deadline = started.map_or(Deadline::Now, |_| Deadline::after(POLL));
        match source.recv_with_until(deadline, scratch.as_deref_mut(), &mut f) {
            Ok(r) => return r.map(|()| Next::Message),
            Err(RecvError::Disconnected) => return Ok(Next::EndOfStream),
            Err(RecvError::Empty | RecvError::Timeout) => match (started, timeout) {
                (None, _) => started = Some(std::time::Instant::now()),
                (Some(s), Some(t)) if s.elapsed().as_secs_f64() >= t => {
                    bail!("{what}: no message for {t} s")
                }
                _ => {}
            },
            Err(e) => bail!("{what}: {e}"),
        }
    }
}
