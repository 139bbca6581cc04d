//! `ipc-bridge`: makes mailboxes and ports reachable from other hosts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use ipc_bridge::net::{NetOptions, Tls};
use ipc_bridge::{export, net, proxy, valid_bridge_name, Options};
use ipc_cli::{UsageError, EXIT_OK};

const ABOUT: &str = "Makes mailboxes and ports reachable from other hosts, through Zenoh (TCP or TLS), with no broker: one bridge per host.";

const LONG_ABOUT: &str = "Makes mailboxes and ports reachable from other hosts, through Zenoh \
(TCP or TLS), with no broker: one bridge per host, peers connected by the endpoints given.

The host that has a mailbox exports it (--export NAME). A host that sends to it imports it \
(--import NAME): the bridge there creates a local proxy mailbox made like the far one (same \
capacity, same largest message), and local programs use it as any mailbox. Every message a \
local send returned Ok for is delivered to the far mailbox exactly once, in order per sender, \
also across a bridge killed and started again (it is journaled in /dev/shm/ipc-bridge until the \
far side acknowledges it). Capacity is end to end: the bridge takes messages from the proxy only \
as far as the far mailbox has room, so a sender blocks (try_send: Full) while it is full; a \
rendezvous send returns once a receiver on the far host took the message. When the far mailbox's \
receivers have all gone, or its bridge has been unreachable for --disconnect-after, local senders \
get Disconnected. A host whose receivers share the work of a far mailbox pulls it (--pull \
NAME): the bridge there fills a local mailbox (capacity at most 16) from the far one, only as far \
as that local mailbox has room, so no host hoards messages it is not ready to take; each message \
goes to exactly one receiver, on whichever host. A port is exported, imported or pulled as \
port:NAME.

Only the names given to --export are reachable. Without TLS the link is unauthenticated and not \
encrypted: anyone who can reach the listening address can send to the exported mailboxes.

Two hosts, four commands:
  hostA$ ipcctl create jobs --mailbox --capacity 64
  hostA$ ipc-bridge --listen tcp/192.0.2.1:7447 --export jobs &
  hostB$ ipc-bridge --connect tcp/192.0.2.1:7447 --import jobs &
  hostB$ producer --mailbox jobs < work.txt       # and on hostA: consumer --mailbox jobs

Exit codes: 0 done, 1 runtime error, 2 usage error, 130 stopped by SIGINT/SIGTERM.";

#[derive(Parser, Debug)]
#[command(version, about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// Listen on this endpoint (tcp/ADDR:PORT or tls/ADDR:PORT; repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// Connect to a peer bridge at this endpoint (retried until it answers; repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<String>,
    /// Make this local mailbox (or port:NAME) reachable from the peers (repeatable).
    #[arg(long, value_name = "NAME")]
    export: Vec<String>,
    /// Offer a local proxy of a far mailbox, for local senders: REMOTE, or REMOTE=LOCAL for another local name (repeatable).
    #[arg(long, value_name = "REMOTE[=LOCAL]")]
    import: Vec<String>,
    /// Take messages of a far mailbox into a local one, for local receivers (work shared with the far host's receivers and other pullers): REMOTE or REMOTE=LOCAL (repeatable).
    #[arg(long, value_name = "REMOTE[=LOCAL]")]
    pull: Vec<String>,
    /// This bridge's name, shown to peers (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Seconds a far bridge may be unreachable before local senders get Disconnected.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    disconnect_after: f64,
    /// Milliseconds of silence after which a peer's link is declared lost (Zenoh lease; use the same on every bridge).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    lease_ms: u64,
    /// Largest write to the network, in bytes (1024 to 65535; Zenoh's batch size): messages are packed into writes of up to this size, and a larger message is sent in pieces. Smaller writes can be faster where the kernel paces large ones (BENCHMARKS.md: on the test machine, 2048 doubles a stream's throughput); use the same on every bridge.
    #[arg(long, value_name = "BYTES", default_value_t = ipc_bridge::net::MAX_BATCH)]
    batch_size: usize,
    /// Permission bits of the proxy mailboxes the bridge creates.
    #[arg(long, value_parser = ipc_cli::parse_mode, default_value = "600")]
    mode: u32,
    /// PEM file of the certificate authority that signed the peers' certificates (TLS).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM file of this bridge's certificate (needed to listen on tls/, or with --tls-mutual).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM file of this bridge's private key.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// Require a certificate signed by --tls-ca from every peer too (mutual TLS).
    #[arg(long)]
    tls_mutual: bool,
}

/// A mailbox name from the command line: NAME, or port:NAME for a port.
fn mailbox_arg(s: &str) -> Result<String> {
    let name = match s.strip_prefix("port:") {
        Some(port) => ipc_core::ports::mailbox_name(port),
        None => s.to_owned(),
    };
    ipc_core::segment::validate_name(&name).map_err(|e| UsageError(format!("{s:?}: {e}")))?;
    if !valid_bridge_name(&name.replace(['.'], "_")) {
        return Err(UsageError(format!(
            "{s:?}: only letters, digits, '-', '_' and '.' cross a bridge"
        ))
        .into());
    }
    Ok(name)
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let raw = raw.trim();
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "bridge".to_owned()
    } else {
        clean
    }
}

fn run(args: Args) -> Result<i32> {
    if args.export.is_empty() && args.import.is_empty() && args.pull.is_empty() {
        bail!(UsageError(
            "nothing to bridge: give --export, --import or --pull NAME".into()
        ));
    }
    if !(args.disconnect_after.is_finite()
        && args.disconnect_after > 0.0
        && args.disconnect_after <= 1e6)
    {
        bail!(UsageError(
            "--disconnect-after takes a positive number of seconds".into()
        ));
    }
    if !(100..=3_600_000).contains(&args.lease_ms) {
        bail!(UsageError("--lease-ms takes 100 to 3600000".into()));
    }
    let bridge = args.name.clone().unwrap_or_else(host_name);
    if !valid_bridge_name(&bridge) {
        bail!(UsageError(format!(
            "--name {bridge:?}: use up to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    let exports = args
        .export
        .iter()
        .map(|s| mailbox_arg(s))
        .collect::<Result<Vec<_>>>()?;
    let mut imports = Vec::new();
    let pulls = args.pull.iter().map(|s| (s, true));
    for (s, pull) in args.import.iter().map(|s| (s, false)).chain(pulls) {
        let (remote, local) = s.split_once('=').unwrap_or((s, s));
        imports.push((mailbox_arg(remote)?, mailbox_arg(local)?, pull));
    }
    let mut locals: Vec<&String> = exports
        .iter()
        .chain(imports.iter().map(|(_, l, _)| l))
        .collect();
    locals.sort();
    if locals.windows(2).any(|w| w[0] == w[1]) {
        bail!(UsageError(
            "a local mailbox is named twice in --export/--import/--pull".into()
        ));
    }
    let tls = match (
        &args.tls_ca,
        args.tls_cert.is_some() || args.tls_key.is_some() || args.tls_mutual,
    ) {
        (Some(ca), _) => Some(Tls {
            ca: ca.clone(),
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
            mutual: args.tls_mutual,
        }),
        (None, true) => bail!(UsageError(
            "--tls-cert, --tls-key and --tls-mutual need --tls-ca".into()
        )),
        (None, false) => None,
    };
    let net = NetOptions {
        listen: args.listen.clone(),
        connect: args.connect.clone(),
        lease: Duration::from_millis(args.lease_ms),
        tls,
        batch_size: args.batch_size,
    };
    net::config(&net).map_err(UsageError)?;
    if net.tls.is_none() {
        log::warn!("the link is not encrypted or authenticated (no --tls-ca)");
    }
    let options = Options {
        bridge,
        disconnect_after: Duration::from_secs_f64(args.disconnect_after),
        mode: args.mode,
        batch_size: args.batch_size,
    };
    let session = net::open(&net)?;
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for name in exports {
        let (session, options, failed) = (session.clone(), options.clone(), failed.clone());
        workers.push(std::thread::spawn(move || {
            let stop = || ipc_cli::stop_requested() || failed.load(Ordering::Relaxed);
            let r = export::run(&session, &name, &options, &stop);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r
        }));
    }
    for (remote, local, pull) in imports {
        let (session, options, failed) = (session.clone(), options.clone(), failed.clone());
        workers.push(std::thread::spawn(move || {
            let stop = || ipc_cli::stop_requested() || failed.load(Ordering::Relaxed);
            let r = if pull {
                ipc_bridge::pull::run(&session, &remote, &local, &options, &stop)
            } else {
                proxy::run(&session, &remote, &local, &options, &stop)
            };
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r
        }));
    }
    let mut first_error = None;
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("a bridge thread panicked"));
            }
        }
    }
    let _ = zenoh::Wait::wait(session.close());
    match first_error {
        Some(e) => Err(e),
        None => Ok(EXIT_OK),
    }
}

fn main() {
    ipc_cli::init("ipc-bridge");
    let args = Args::parse();
    ipc_cli::finish("ipc-bridge", run(args));
}
