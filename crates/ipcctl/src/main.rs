//! `ipcctl`: segment lifecycle from the command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ipc_cli::{
    finish, init, parse_mode, parse_name, parse_size, UsageError, EXIT_FAILURE, EXIT_OK,
};
use ipc_core::admin::{self, SegmentState};
use ipc_core::buffer::{BufferConfig, SharedBuffer};
use ipc_core::mailbox::{unbounded_block_for, Capacity, Mailbox, MailboxConfig};
use ipc_core::Flavor;
use ipc_core::Role;
use ipc_core::Status;

/// Creates, inspects, lists and removes ipc-core shared-memory segments.
///
/// Exit codes: 0 success, 1 runtime error (or `remove` refused), 2 usage.
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
        /// Most messages queued at once: a number, `unbounded` (senders
        /// never wait), or for a mailbox `0` (rendezvous).
        #[arg(long, default_value = "64")]
        capacity: Capacity,
        /// Create a mailbox (message passing) instead of a buffer.
        #[arg(long)]
        mailbox: bool,
        /// A buffer for one producer and one consumer at a time (a second
        /// is refused while the first lives): the fastest path.
        #[arg(long, conflicts_with = "mailbox")]
        single: bool,
        /// Largest message in bytes (K, M suffixes allowed).
        #[arg(long, default_value = "64K", value_parser = parse_size)]
        max_message: u64,
        /// Permission bits in octal (600 owner only, 660 group too).
        #[arg(long, default_value = "600", value_parser = parse_mode)]
        mode: u32,
    },
    /// Show geometry, fill level, attached processes and their liveness.
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
    /// List ipc-core segments in /dev/shm with their state (live, idle,
    /// orphaned, corrupt).
    List,
    /// Remove orphaned segments (attached once, no live process now) and
    /// corrupt ones; with --idle also those nobody ever attached to.
    Clean {
        /// Also remove idle segments.
        #[arg(long)]
        idle: bool,
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
        } => {
            let max_message = u32::try_from(max_message)
                .with_context(|| format!("--max-message {max_message} is too large"))?;
            if mailbox {
                let config = MailboxConfig {
                    capacity,
                    max_message,
                    mode,
                };
                Mailbox::create(&name, &config)
                    .with_context(|| format!("creating mailbox {name}"))?;
            } else {
                let config = BufferConfig {
                    capacity: match capacity {
                        Capacity::Bounded(n) => n,
                        Capacity::Unbounded => unbounded_block_for(max_message),
                        Capacity::Zero => {
                            return Err(UsageError(
                                "--capacity 0 (rendezvous) is for mailboxes (add --mailbox); a buffer needs at least 1"
                                    .to_owned(),
                            )
                            .into())
                        }
                    },
                    max_message,
                    mode,
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
            eprintln!(
                "ipcctl: created {} {name}: capacity {capacity}, messages of up to {max_message} bytes, mode {mode:o}",
                if mailbox { "mailbox" } else { "buffer" }
            );
            Ok(EXIT_OK)
        }
        Command::Status { name } => {
            let status =
                admin::inspect(&name).with_context(|| format!("opening segment {name}"))?;
            print_status(&status);
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
            eprintln!("ipcctl: removed {name}");
            Ok(EXIT_OK)
        }
        Command::List => {
            println!(
                "{:<32} {:<8} {:<8} {:>9} {:>10} {:>6}",
                "NAME", "KIND", "STATE", "QUEUED", "CAPACITY", "PEERS"
            );
            for s in admin::list() {
                match &s.status {
                    Some(st) => println!(
                        "{:<32} {:<8} {:<8} {:>9} {:>10} {:>6}",
                        s.name,
                        st.geometry.kind.name(),
                        s.state.word(),
                        st.len,
                        st.geometry.capacity,
                        st.peers.iter().filter(|p| p.alive).count()
                    ),
                    None => println!("{:<32} {:<8} {:<8}", s.name, "?", s.state.word()),
                }
            }
            Ok(EXIT_OK)
        }
        Command::Clean { idle, prefix } => {
            let mut failed = false;
            for s in admin::list()
                .into_iter()
                .filter(|s| s.name.starts_with(&prefix))
            {
                let remove = match s.state {
                    SegmentState::Orphaned | SegmentState::Corrupt(_) => true,
                    SegmentState::Idle => idle,
                    SegmentState::Live => false,
                };
                if remove {
                    match admin::unlink_with_chain(&s.name) {
                        Ok(()) => eprintln!("ipcctl: removed {} ({})", s.name, s.state.word()),
                        Err(e) => {
                            eprintln!("ipcctl: error: {e}");
                            failed = true;
                        }
                    }
                }
            }
            Ok(if failed { EXIT_FAILURE } else { EXIT_OK })
        }
    }
}

fn print_status(s: &Status) {
    let g = &s.geometry;
    println!("segment:        {}", s.name);
    println!(
        "kind:           {}{}",
        g.kind.name(),
        if s.single {
            " (one producer and one consumer at a time)"
        } else {
            ""
        }
    );
    let capacity = match s.flavor {
        Flavor::Bounded => format!("{} messages ({} slots)", g.capacity, g.slots),
        Flavor::Zero => "0 (rendezvous)".to_owned(),
        Flavor::Unbounded => format!(
            "unbounded ({} messages per segment, {} extra segments now)",
            g.capacity, s.chain_blocks
        ),
    };
    println!("capacity:       {capacity}");
    println!("max message:    {} bytes", g.max_message);
    println!("size:           {} bytes", g.total_size);
    println!("queued:         {}", s.len);
    println!("state:          {}", admin::state_of(s).word());
    println!(
        "producers:      {} live, {} attached in total",
        s.live(Role::Producer),
        s.producers_total
    );
    println!(
        "consumers:      {} live, {} attached in total",
        s.live(Role::Consumer),
        s.consumers_total
    );
    println!(
        "abandoned:      {} (writer died mid-write)",
        s.abandoned_writes
    );
    println!(
        "lost:           {} (reader died holding a message)",
        s.lost_reads
    );
    for p in &s.peers {
        let role = match p.role {
            Some(Role::Producer) => "producer",
            Some(Role::Consumer) => "consumer",
            None => "?",
        };
        println!(
            "  peer {:>3}: pid {:<8} {:<9} {}",
            p.index,
            p.pid,
            role,
            if p.alive { "alive" } else { "dead" }
        );
    }
}
