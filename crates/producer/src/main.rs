//! `producer`: writes into a shared-memory buffer, a mailbox or a port,
//! from stdin or synthetic.

use std::io::{ErrorKind, Read};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};
use ipc_cli::{
    check_geometry, fd_nonblocking, finish, init, parse_budget, parse_capacity, parse_count,
    parse_max_message, parse_message_size, parse_mode, parse_name, parse_timeout, read_fd,
    set_sigbus_target, stop_requested, wait_readable, Meter, UsageError, Wait, EXIT_OK, POLL,
};
use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::mailbox::{unbounded_block_for, Capacity, Mailbox, MailboxConfig};
use ipc_core::ports::PortSender;
use ipc_core::sync::{Deadline, SpinPolicy};
use ipc_core::Kind;
use ipc_core::{synthetic, SendError, Sender};

/// Streams stdin (or synthetic messages) into a shared-memory buffer
/// (--segment), a mailbox (--mailbox) or a process's named port (--to).
///
/// Without --count, reads stdin until end of file and sends what each read
/// returns as one message (at most the max message size), then detaches.
/// Receivers see end of stream once every producer has detached. A slot
/// is taken only once a read has returned data, so a producer idle on its
/// input never holds back other producers, and end of file needs no free
/// slot.
///
/// Exit codes: 0 success; 1 runtime error (the message names the target
/// and the cause, e.g. "full: no room for S s" after --timeout); 2 usage
/// error (nothing created); 3 the segment was truncated under us (SIGBUS);
/// 130 interrupted by SIGINT/SIGTERM (after detaching).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["segment", "mailbox", "to"])))]
struct Args {
    /// Shared-memory model: name of the buffer segment in /dev/shm (letters,
    /// digits, '.', '_', '-').
    #[arg(short, long, value_parser = parse_name)]
    segment: Option<String>,

    /// Message passing, indirect: name of the mailbox to send to.
    #[arg(short, long, value_parser = parse_name)]
    mailbox: Option<String>,

    /// Message passing, direct: name of the port (registered by a
    /// `consumer --port NAME`) to send to.
    #[arg(long, value_parser = parse_name)]
    to: Option<String>,

    /// With --to: the name this producer signs its messages with
    /// (default: producer-PID).
    #[arg(long, requires = "to", value_parser = parse_name)]
    from: Option<String>,

    /// Create the segment or mailbox (fails if it exists) instead of
    /// attaching to it.
    #[arg(long, conflicts_with = "to")]
    create: bool,

    /// With --create: most messages queued at once: 1 to 1048576,
    /// `unbounded` (the producer never waits; storage grows by extra
    /// segments), or for a mailbox `0` (rendezvous: each send waits for a
    /// receiver). Capacity times the max message must stay within 16 GiB.
    #[arg(long, default_value = "64", requires = "create", value_parser = parse_capacity)]
    capacity: Capacity,

    /// With --create of a segment: one producer and one consumer at a time
    /// (a second is refused while the first lives): the fastest path. Not
    /// for mailboxes.
    #[arg(
        long,
        requires = "create",
        requires = "segment",
        conflicts_with = "mailbox"
    )]
    single: bool,

    /// With --create: largest message in bytes, 1 to 64M (K, M, G suffixes
    /// allowed).
    #[arg(long, default_value = "64K", value_parser = parse_max_message, requires = "create")]
    max_message: u32,

    /// With --create: permission bits in octal (600 = owner only; 660 lets
    /// the group attach).
    #[arg(long, default_value = "600", value_parser = parse_mode, requires = "create")]
    mode: u32,

    /// With --create, for a bounded or rendezvous queue: bytes of the ring
    /// that packs the messages (rounded down to a power of two; K, M, G
    /// suffixes). It must hold two of the largest messages plus 24 bytes.
    /// Default: room for `capacity` largest messages, at most 4M.
    #[arg(long, default_value = "0", value_parser = parse_budget, requires = "create")]
    budget: u64,

    /// Synthetic mode: send this many (at least 1) self-checking messages
    /// instead of stdin.
    #[arg(long, requires = "size", value_parser = parse_count)]
    count: Option<u64>,

    /// Synthetic mode: bytes per message (at least 24).
    #[arg(long, value_parser = parse_message_size, requires = "count")]
    size: Option<u64>,

    /// Synthetic mode: producer id stamped on every message (default: pid).
    #[arg(long, requires = "count")]
    id: Option<u32>,

    /// Give up (exit 1, "full") if a send cannot complete for this many
    /// seconds: a finite number above 0, fractions allowed (default: wait).
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<f64>,

    /// How to wait when the buffer or mailbox is full (not with --to).
    #[arg(long, value_enum, default_value_t = Wait::Adaptive, conflicts_with = "to")]
    wait: Wait,
}

fn main() {
    init("producer");
    let args = Args::parse();
    if args.segment.is_some() && matches!(args.capacity, Capacity::Zero | Capacity::Bounded(0)) {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "--capacity 0 (rendezvous) is for mailboxes; a buffer needs at least 1",
            )
            .exit();
    }
    finish("producer", run(&args));
}

/// Where messages go, opened but not yet attached (so that bad input is
/// refused before this process counts as a producer).
enum Target {
    Buffer(SharedBuffer),
    Mailbox(Mailbox),
    Port { out: PortSender, to: String },
}

/// Where messages go, attached.
enum Sink {
    Queue(Sender),
    Port { out: PortSender, to: String },
}

impl Sink {
    /// Sends each `size`-byte piece of `pieces` as a message, in order,
    /// before `deadline`: to a queue as one batch (one publication and at
    /// most one wake-up), to a port one by one. How many went, and why the
    /// next did not.
    fn send_pieces_until<'m>(
        &mut self,
        pieces: &'m [u8],
        size: usize,
        deadline: Deadline,
    ) -> (usize, Option<SendError<&'m [u8]>>) {
        match self {
            Sink::Queue(tx) => match tx.send_batch_until(pieces.chunks_exact(size), deadline) {
                Ok(n) => (n, None),
                Err(e) => (e.sent, Some(e.error)),
            },
            Sink::Port { out, to } => {
                for (done, msg) in pieces.chunks_exact(size).enumerate() {
                    if let Err(e) = out.send_to_until(to, msg, deadline) {
                        return (done, Some(e));
                    }
                }
                (pieces.len() / size, None)
            }
        }
    }
}

impl Target {
    fn open(args: &Args) -> Result<(Target, String)> {
        let max_message = args.max_message;
        if let Some(size) = args
            .size
            .filter(|&size| args.create && size > max_message as u64)
        {
            // Refused before anything is created.
            return Err(UsageError(format!(
                "--size {size} exceeds --max-message {}",
                args.max_message
            ))
            .into());
        }
        if args.create {
            let kind = if args.mailbox.is_some() {
                Kind::Mailbox
            } else {
                Kind::Buffer
            };
            check_geometry(kind, args.capacity, max_message, args.budget)?;
        }
        if let Some(name) = &args.segment {
            let what = format!("segment {name}");
            set_sigbus_target("producer", &what);
            let buffer = if args.create {
                let config = BufferConfig {
                    capacity: match args.capacity {
                        Capacity::Bounded(n) => n,
                        _ => unbounded_block_for(max_message),
                    },
                    max_message,
                    mode: args.mode,
                    budget: args.budget,
                };
                let created = match (args.capacity, args.single) {
                    (Capacity::Unbounded, false) => SharedBuffer::create_unbounded(name, &config),
                    (Capacity::Unbounded, true) => {
                        return Err(UsageError(
                            "--single goes with a bounded capacity, not unbounded".to_owned(),
                        )
                        .into())
                    }
                    (_, true) => SharedBuffer::create_single(name, &config),
                    (_, false) => SharedBuffer::create(name, &config),
                };
                created.with_context(|| format!("creating {what}"))?
            } else {
                SharedBuffer::open(name).with_context(|| format!("opening {what}"))?
            };
            Ok((Target::Buffer(buffer), what))
        } else if let Some(name) = &args.mailbox {
            let what = format!("mailbox {name}");
            set_sigbus_target("producer", &what);
            let mailbox = if args.create {
                let config = MailboxConfig {
                    capacity: args.capacity,
                    max_message,
                    mode: args.mode,
                    budget: args.budget,
                };
                Mailbox::create(name, &config).with_context(|| format!("creating {what}"))?
            } else {
                Mailbox::open(name).with_context(|| format!("opening {what}"))?
            };
            Ok((Target::Mailbox(mailbox), what))
        } else {
            let to = args.to.clone().expect("clap requires a target");
            let me = args
                .from
                .clone()
                .unwrap_or_else(|| format!("producer-{}", std::process::id()));
            let out = PortSender::new(&me).with_context(|| format!("--from {me}"))?;
            let what = format!("port {to}");
            set_sigbus_target("producer", &what);
            Ok((Target::Port { out, to }, what))
        }
    }

    fn max_payload(&self) -> Result<usize> {
        match self {
            Target::Buffer(b) => Ok(b.geometry().max_message as usize),
            Target::Mailbox(m) => Ok(m.max_message()),
            Target::Port { out, to } => out
                .max_payload(to)
                .with_context(|| format!("no live process has registered port {to}")),
        }
    }

    fn attach(self, policy: SpinPolicy, what: &str) -> Result<Sink> {
        let buffer = matches!(self, Target::Buffer(_));
        let mut tx = match self {
            Target::Buffer(b) => b.producer(),
            Target::Mailbox(m) => m.sender(),
            Target::Port { out, to } => return Ok(Sink::Port { out, to }),
        }
        .with_context(|| format!("attaching a producer to {what}"))?;
        if buffer {
            // Like the writer of a named pipe: on a segment whose consumers
            // have all left, wait for a new one instead of failing.
            tx.expect_new_receivers();
        }
        tx.set_spin_policy(policy);
        Ok(Sink::Queue(tx))
    }
}

fn run(args: &Args) -> Result<i32> {
    let (target, what) = Target::open(args)?;
    let max = target.max_payload()?;
    if let Some(size) = args.size.filter(|&size| size > max as u64) {
        return Err(UsageError(format!(
            "--size {size} exceeds the max message size {max} of {what}"
        ))
        .into());
    }
    let policy = args.wait.policy();
    // One producer at a time: a claim held while waiting for input holds
    // nobody else back, so stdin is read straight into the ring.
    // (A non-blocking stdin is read by copying: poll(2) never reports a
    // FIFO that no writer ever opened, where read(2) says end of file.)
    let zero_copy = matches!(&target, Target::Buffer(b) if b.is_single()) && !fd_nonblocking(0);
    let sink = target.attach(policy, &what)?;
    log::info!("attached to {what} as a producer");
    let mut meter = Meter::new("producer");
    let mut sender = Sending {
        sink,
        timeout: args.timeout,
        what,
    };
    let streamed = match (args.count, args.size) {
        (Some(count), Some(size)) => {
            synthetic_stream(&mut sender, count, size, args.id, &mut meter)
        }
        _ if zero_copy => stdin_zero_copy(&mut sender, max, &mut meter),
        _ => stdin_stream(&mut sender, max, &mut meter),
    };
    // Also after a failure: the count says what was sent successfully.
    meter.summary();
    streamed?;
    Ok(EXIT_OK)
}

/// Sends with the stop flag and the timeout in mind.
struct Sending {
    sink: Sink,
    timeout: Option<f64>,
    what: String,
}

impl Sending {
    /// Sends each `size`-byte piece of `pieces` (at least one byte each)
    /// as a message, in order, counting each in `meter` once it went in,
    /// also those before a failure. Returns how many went: fewer only if
    /// a signal asked us to stop.
    fn send_pieces(&mut self, pieces: &[u8], size: usize, meter: &mut Meter) -> Result<usize> {
        let total = pieces.len() / size;
        let mut done = 0;
        let mut started = None;
        while done < total {
            if stop_requested() {
                break;
            }
            // First without a deadline (no clock read when there is room,
            // the common case), then in slices of POLL; the timeout counts
            // from the last progress.
            let deadline = started.map_or(Deadline::Now, |_| Deadline::after(POLL));
            let (sent, failed) =
                self.sink
                    .send_pieces_until(&pieces[done * size..], size, deadline);
            done += sent;
            for _ in 0..sent {
                meter.add(size);
            }
            match failed {
                None => {}
                Some(SendError::Full(_) | SendError::Timeout(_)) => match started {
                    Some(s) if sent == 0 => give_up_if_full(s, self.timeout, &self.what)?,
                    _ => started = Some(std::time::Instant::now()),
                },
                Some(e) => bail!("{}: {e}", self.what),
            }
        }
        Ok(done)
    }
}

/// Fails once a send has found no room for longer than `--timeout`.
fn give_up_if_full(started: std::time::Instant, timeout: Option<f64>, what: &str) -> Result<()> {
    match timeout {
        Some(t) if started.elapsed().as_secs_f64() >= t => {
            bail!("{what}: full: no room for {t} s")
        }
        _ => Ok(()),
    }
}

fn synthetic_stream(
    sender: &mut Sending,
    count: u64,
    size: u64,
    id: Option<u32>,
    meter: &mut Meter,
) -> Result<()> {
    let id = id.unwrap_or_else(std::process::id);
    let size = size as usize;
    // Messages are made and sent a batch at a time: about 4 KiB of them.
    let batch = (4096 / size).clamp(1, 64) as u64;
    let mut buf = vec![0u8; size * batch as usize];
    let mut seq = 0;
    while seq < count {
        let n = (count - seq).min(batch);
        let pieces = &mut buf[..size * n as usize];
        for (i, msg) in pieces.chunks_exact_mut(size).enumerate() {
            synthetic::encode(msg, id, seq + i as u64);
        }
        if sender.send_pieces(pieces, size, meter)? < n as usize {
            break;
        }
        seq += n;
    }
    Ok(())
}

/// Streams stdin until end of file, one message per read. Each read goes
/// into a private buffer and only data already read is sent: a slot is
/// never held while waiting for input (an idle producer would hold back
/// every message queued behind that slot), and end of file needs no slot.
fn stdin_stream(sender: &mut Sending, max: usize, meter: &mut Meter) -> Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; max];
    loop {
        let n = read_some(&mut stdin, &mut buf)?;
        if n == 0 || sender.send_pieces(&buf[..n], n, meter)? == 0 {
            return Ok(());
        }
    }
}

/// Streams stdin until end of file into a single-mode buffer, reading
/// each chunk straight into the claimed record (zero copy). The claim is
/// taken only once input is there (poll), so a producer idle on an empty
/// pipe holds none; a record shrinks to what the read returned.
fn stdin_zero_copy(sender: &mut Sending, max: usize, meter: &mut Meter) -> Result<()> {
    let Sink::Queue(tx) = &mut sender.sink else {
        unreachable!("zero copy is for buffers")
    };
    loop {
        if stop_requested() {
            return Ok(());
        }
        if !wait_readable(0, POLL).context("waiting for stdin")? {
            continue;
        }
        let started = std::time::Instant::now();
        let mut slot = loop {
            if stop_requested() {
                return Ok(());
            }
            match tx.claim_len(max, Deadline::after(POLL)) {
                Ok(slot) => break slot,
                Err(SendError::Timeout(())) => {
                    give_up_if_full(started, sender.timeout, &sender.what)?
                }
                Err(e) => bail!("{}: {e}", sender.what),
            }
        };
        // Dropped unused at end of file (or on an error): given back.
        let n = read_fd(0, slot.buf()).context("reading stdin")?;
        if n == 0 {
            return Ok(());
        }
        slot.commit(n)
            .map_err(|e| anyhow::anyhow!("{}: {e}", sender.what))?;
        meter.add(n);
    }
}

/// One `read`, retried on EINTR unless a signal asked us to stop; 0 at end
/// of file or on stop.
fn read_some(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                if stop_requested() {
                    return Ok(0);
                }
            }
            Err(e) => return Err(e).context("reading stdin"),
        }
    }
}
