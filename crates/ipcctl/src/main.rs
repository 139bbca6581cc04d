//! `ipcctl`: segment lifecycle from the command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ipc_cli::{
    check_geometry, err, finish, init, out, parse_budget, parse_capacity, parse_max_message,
    parse_mode, parse_name, stop_requested, UsageError, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK,
};
use ipc_core::admin::{self, SegmentState};
use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::mailbox::{unbounded_block_for, Capacity, Mailbox, MailboxConfig};
use ipc_core::{Flavor, Kind, Role, Status};

/// Creates, inspects, lists and removes ipc-core shared-memory segments.
///
/// Exit codes: 0 success; 1 runtime error (the message names the segment
/// and the cause), `remove` refused, or `list`/`clean` skipped an entry
/// they could not inspect (the table is still printed); 2 usage error
/// (nothing created or changed); 3 a segment was truncated while being
/// inspected (SIGBUS); 130 interrupted by SIGINT/SIGTERM.
///
/// `list` and `clean` never follow symlinks and never block on FIFOs or
/// devices planted in /dev/shm: such entries are skipped.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a buffer segment, or with --mailbox a mailbox (fails if the
    /// name exists).
    Create {
        /// Segment name (letters, digits, '.', '_', '-').
        #[arg(value_parser = parse_name)]
        name: String,
        /// Most messages queued at once: 1 to 1048576, `unbounded` (senders
        /// never wait), or for a mailbox `0` (rendezvous). Capacity times
        /// the max message (rounded up) must stay within 16 GiB.
        #[arg(long, default_value = "64", value_parser = parse_capacity)]
        capacity: Capacity,
        /// Create a mailbox (message passing) instead of a buffer.
        #[arg(long)]
        mailbox: bool,
        /// A buffer for one producer and one consumer at a time (a second
        /// is refused while the first lives): the fastest path.
        #[arg(long, conflicts_with = "mailbox")]
        single: bool,
        /// Largest message in bytes, 1 to 64M (K, M, G suffixes allowed).
        #[arg(long, default_value = "64K", value_parser = parse_max_message)]
        max_message: u32,
        /// Permission bits in octal (600 owner only, 660 group too).
        #[arg(long, default_value = "600", value_parser = parse_mode)]
        mode: u32,
        /// Bounded and rendezvous queues: bytes of the ring that packs the
        /// messages (rounded down to a power of two; K, M, G suffixes). It
        /// must hold two of the largest messages plus 24 bytes. Default:
        /// room for `capacity` largest messages, at most 4M.
        #[arg(long, default_value = "0", value_parser = parse_budget)]
        budget: u64,
    },
    /// Show geometry, fill level, attached processes and their liveness.
    /// `queued` counts committed messages no receiver has taken yet
    /// (messages being written or read, an unbounded queue's in-place
    /// reads included, are shown apart, under "in flight"; withdrawn or
    /// abandoned ones not at all). "extra segments now" counts the chained
    /// blocks that exist in /dev/shm.
    Status {
        /// Segment name.
        #[arg(value_parser = parse_name)]
        name: String,
    },
    /// Remove a segment; refuses while live processes are attached.
    Remove {
        /// Segment name.
        #[arg(value_parser = parse_name)]
        name: String,
        /// Remove even with live processes attached (they keep their
        /// mapping until they exit).
        #[arg(long)]
        force: bool,
    },
    /// List ipc-core segments in /dev/shm with their state: live, idle
    /// (never attached), orphaned (no live process), corrupt, half-created
    /// (its creator died before finishing it), unreadable (could not be
    /// inspected: the cause is printed; exit code 1). QUEUED counts the
    /// committed messages no receiver has taken yet.
    List,
    /// Remove orphaned segments (attached once, no live process now),
    /// corrupt and half-created ones; with --idle also those nobody ever
    /// attached to. An orphan that still holds messages is kept (and
    /// named, with its count) unless --discard is given. Unreadable
    /// entries are kept and make the exit code 1.
    Clean {
        /// Also remove idle segments.
        #[arg(long)]
        idle: bool,
        /// Also remove orphans that still hold undelivered messages.
        #[arg(long)]
        discard: bool,
        /// Only segments whose name starts with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

fn main() {
    init("ipcctl");
    let args = Args::parse();
    finish("ipcctl", run(args.command));
}

fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Create {
            name,
            capacity,
            mailbox,
            single,
            max_message,
            mode,
            budget,
        } => {
            // Refused before anything is created (as are the buffer
            // checks below).
            let kind = if mailbox { Kind::Mailbox } else { Kind::Buffer };
            check_geometry(kind, capacity, max_message, budget)?;
            if mailbox {
                let config = MailboxConfig {
                    capacity,
                    max_message,
                    mode,
                    budget,
                };
                Mailbox::create(&name, &config)
                    .with_context(|| format!("creating mailbox {name}"))?;
            } else {
                let config = BufferConfig {
                    capacity: match capacity {
                        Capacity::Bounded(n) if n > 0 => n,
                        Capacity::Unbounded => unbounded_block_for(max_message),
                        Capacity::Zero | Capacity::Bounded(_) => {
                            return Err(UsageError(
                                "--capacity 0 (rendezvous) is for mailboxes (add --mailbox); a buffer needs at least 1"
                                    .to_owned(),
                            )
                            .into())
                        }
                    },
                    max_message,
                    mode,
                    budget,
                };
                match (capacity, single) {
                    (Capacity::Unbounded, true) => {
                        return Err(UsageError(
                            "--single goes with a bounded capacity, not unbounded".to_owned(),
                        )
                        .into())
                    }
                    (Capacity::Unbounded, false) => SharedBuffer::create_unbounded(&name, &config),
                    (_, true) => SharedBuffer::create_single(&name, &config),
                    (_, false) => SharedBuffer::create(&name, &config),
                }
                .with_context(|| format!("creating segment {name}"))?;
            }
            if stop_requested() {
                // Interrupted while reserving: do not leave what the
                // interrupted command made behind.
                let _ = admin::unlink_with_chain(&name);
                err!("ipcctl: interrupted; {name} was not kept");
                return Ok(EXIT_INTERRUPTED);
            }
            err!(
                "ipcctl: created {} {name}: capacity {capacity}, messages of up to {max_message} bytes, mode {mode:o}",
                if mailbox { "mailbox" } else { "buffer" }
            );
            Ok(EXIT_OK)
        }
        Command::Status { name } => {
            ipc_cli::set_sigbus_target("ipcctl", &format!("segment {name}"));
            let status =
                admin::inspect(&name).with_context(|| format!("opening segment {name}"))?;
            print_status(&status);
            print_bridge_status(&name);
            Ok(EXIT_OK)
        }
        Command::Remove { name, force } => {
            // A foreign or broken file of that name is removed only with
            // --force: it is not ours to judge.
            match admin::inspect(&name) {
                Ok(status) => {
                    let live = status.live(Role::Producer) + status.live(Role::Consumer);
                    if live > 0 && !force {
                        bail!(
                            "segment {name} has {live} live attached process(es); stop them or use --force"
                        );
                    }
                }
                Err(e) if !force => {
                    return Err(e).with_context(|| {
                        format!("refusing to remove {name} (use --force to remove it anyway)")
                    })
                }
                Err(_) => {}
            }
            admin::unlink_with_chain(&name).with_context(|| format!("removing segment {name}"))?;
            err!("ipcctl: removed {name}");
            Ok(EXIT_OK)
        }
        Command::List => list(),
        Command::Clean {
            idle,
            discard,
            prefix,
        } => clean(idle, discard, &prefix),
    }
}

/// The segments in /dev/shm, or an error naming /dev/shm.
fn segments() -> Result<Vec<admin::SegmentInfo>> {
    admin::list_checked().with_context(|| format!("reading {}", ipc_core::segment::SHM_DIR))
}

fn list() -> Result<i32> {
    ipc_cli::set_sigbus_target("ipcctl", "a segment being listed");
    out!(
        "{:<32} {:<8} {:<12} {:>9} {:>10} {:>6}",
        "NAME",
        "KIND",
        "STATE",
        "QUEUED",
        "CAPACITY",
        "PEERS"
    );
    let mut skipped = 0;
    for s in segments()? {
        if stop_requested() {
            return Ok(EXIT_INTERRUPTED);
        }
        match (&s.status, &s.state) {
            (Some(st), _) => out!(
                "{:<32} {:<8} {:<12} {:>9} {:>10} {:>6}",
                s.name,
                st.geometry.kind.name(),
                s.state.word(),
                st.len,
                st.geometry.capacity,
                st.peers.iter().filter(|p| p.alive).count(),
            ),
            (None, SegmentState::Unreadable(cause)) => {
                skipped += 1;
                out!("{:<32} {:<8} unreadable: {cause}", s.name, "?");
            }
            (None, SegmentState::Corrupt(cause)) => {
                out!("{:<32} {:<8} {:<12} {cause}", s.name, "?", "corrupt")
            }
            (None, state) => out!("{:<32} {:<8} {:<12}", s.name, "?", state.word()),
        }
    }
    if skipped > 0 {
        err!("ipcctl: warning: {skipped} entr{} in /dev/shm could not be inspected (listed as unreadable)",
            if skipped == 1 { "y" } else { "ies" });
        return Ok(EXIT_FAILURE);
    }
    Ok(EXIT_OK)
}

fn clean(idle: bool, discard: bool, prefix: &str) -> Result<i32> {
    ipc_cli::set_sigbus_target("ipcctl", "a segment being inspected");
    let mut failed = false;
    for s in segments()?
        .into_iter()
        .filter(|s| s.name.starts_with(prefix))
    {
        if stop_requested() {
            return Ok(EXIT_INTERRUPTED);
        }
        let queued = s.status.as_ref().map_or(0, |st| st.len);
        let remove = match &s.state {
            SegmentState::Orphaned if queued > 0 && !discard => {
                err!(
                    "ipcctl: kept {} (orphaned, {queued} undelivered message(s); --discard removes it)",
                    s.name
                );
                false
            }
            SegmentState::Orphaned | SegmentState::Corrupt(_) | SegmentState::HalfCreated => true,
            SegmentState::Idle => idle,
            SegmentState::Live => false,
            SegmentState::Unreadable(cause) => {
                err!("ipcctl: skipped {}: unreadable: {cause}", s.name);
                failed = true;
                false
            }
        };
        if remove {
            match admin::unlink_with_chain(&s.name) {
                Ok(()) => err!("ipcctl: removed {} ({})", s.name, s.state.word()),
                Err(e) => {
                    err!("ipcctl: error: {e}");
                    failed = true;
                }
            }
        }
    }
    Ok(if failed { EXIT_FAILURE } else { EXIT_OK })
}

/// Chained blocks `NAME.bK` of `name` that exist in /dev/shm now (regular
/// files only).
fn existing_blocks(name: &str) -> usize {
    let Ok(dir) = std::fs::read_dir(ipc_core::segment::SHM_DIR) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            let file = e.file_name();
            let Some(file) = file.to_str() else {
                return false;
            };
            ipc_core::segment::is_block_name(file)
                && file.rsplit_once(".b").is_some_and(|(q, _)| q == name)
                && e.file_type().is_ok_and(|t| t.is_file())
        })
        .count()
}

/// What `ipc-bridge` says of a mailbox it exports or proxies, from its
/// status file (`/dev/shm/ipc-bridge/NAME.status`), if there is one. Only a
/// short regular file of printable text is shown (never a link or FIFO).
fn print_bridge_status(name: &str) {
    let dir = std::path::Path::new(ipc_core::segment::SHM_DIR).join("ipc-bridge");
    print_bridge_status_file(&dir.join(format!("{name}.status")));
    // An exporter serving remote pullers keeps one more status per puller.
    let prefix = format!("{name}.pull-");
    let mut pulls: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.starts_with(&prefix) && f.ends_with(".status")
        })
        .map(|e| e.path())
        .take(64)
        .collect();
    pulls.sort();
    for p in pulls {
        print_bridge_status_file(&p);
    }
}

fn print_bridge_status_file(path: &std::path::Path) {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const LIMIT: u64 = 8192;
    let path = path.to_owned();
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return;
    };
    if !meta.is_file() || meta.len() > LIMIT {
        out!(
            "bridged:        ? ({} is not a short regular file)",
            path.display()
        );
        return;
    }
    let mut text = String::new();
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .and_then(|f| f.take(LIMIT).read_to_string(&mut text));
    if read.is_err() || text.chars().any(|c| c.is_control() && c != '\n') {
        out!(
            "bridged:        ? ({} is unreadable or not text)",
            path.display()
        );
        return;
    }
    for line in text.lines() {
        out!("{line}");
    }
    if let Ok(age) = meta.modified().map(|m| m.elapsed().unwrap_or_default()) {
        if age.as_secs() >= 5 {
            out!(
                "                (this is {} s old: is the bridge still running?)",
                age.as_secs()
            );
        }
    }
}

fn print_status(s: &Status) {
    let g = &s.geometry;
    out!("segment:        {}", s.name);
    out!(
        "kind:           {}{}",
        g.kind.name(),
        if s.single {
            " (one producer and one consumer at a time)"
        } else {
            ""
        }
    );
    let capacity = match s.flavor {
        Flavor::Bounded if g.is_packed() => format!("{} messages", g.capacity),
        Flavor::Bounded => format!("{} messages ({} slots)", g.capacity, g.slots),
        Flavor::Zero => "0 (rendezvous)".to_owned(),
        Flavor::Unbounded => format!(
            "unbounded ({} messages per segment, {} extra segments now)",
            g.capacity,
            existing_blocks(&s.name)
        ),
    };
    out!("capacity:       {capacity}");
    out!("max message:    {} bytes", g.max_message);
    out!("size:           {} bytes", g.total_size);
    if g.is_packed() {
        out!(
            "memory:         {} of {} bytes used (messages packed: each takes its length rounded up to 8, plus 8)",
            s.bytes_used,
            s.budget
        );
    } else {
        out!(
            "memory:         {} bytes ({} slots of {} bytes)",
            s.budget,
            g.slots,
            g.slot_stride
        );
    }
    out!("queued:         {}", s.len);
    if s.writing + s.reading > 0 {
        out!(
            "in flight:      {} being written, {} being read",
            s.writing,
            s.reading
        );
    }
    out!("state:          {}", admin::state_of(s).word());
    out!(
        "producers:      {} live, {} attached in total",
        s.live(Role::Producer),
        s.producers_total
    );
    out!(
        "consumers:      {} live, {} attached in total",
        s.live(Role::Consumer),
        s.consumers_total
    );
    out!(
        "abandoned:      {} (writer died mid-write)",
        s.abandoned_writes
    );
    out!(
        "lost:           {} (reader died holding a message, or its callback panicked)",
        s.lost_reads
    );
    out!(
        "redelivered:    {} (reader died holding a message it asked to have redelivered)",
        s.redelivered_reads
    );
    out!(
        "died:           {} producer(s), {} consumer(s) found dead{}",
        s.dead_producers,
        s.dead_consumers,
        if s.last_dead_producer != 0 {
            format!(" (last producer: pid {})", s.last_dead_producer)
        } else {
            String::new()
        }
    );
    if s.revoked_claims > 0 {
        out!(
            "revoked:        {} claim(s) found taken from a live holder (a scribbled segment?)",
            s.revoked_claims
        );
    }
    for p in &s.peers {
        let role = match p.role {
            Some(Role::Producer) => "producer",
            Some(Role::Consumer) => "consumer",
            None => "?",
        };
        out!(
            "  peer {:>3}: pid {:<8} {:<9} {}",
            p.index,
            p.pid,
            role,
            if p.alive { "alive" } else { "dead" }
        );
    }
}
