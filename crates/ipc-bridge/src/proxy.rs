//! The importing side (the host where remote senders live): a local proxy
//! mailbox, made like the far one, whose messages an [`uplink`] takes to
//! the exporting bridge.
//!
//! Local senders therefore see the far mailbox's capacity end to end
//! (plus the proxy's own, which mirrors it); a rendezvous send returns
//! only once a receiver on the far host took the message; when the far
//! mailbox's receivers have all gone, or its bridge has been unreachable
//! for `--disconnect-after`, local senders get `Disconnected`.

use std::sync::mpsc::{channel, Receiver as Events};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use zenoh::pubsub::Subscriber;
use zenoh::sample::SampleKind;
use zenoh::{Session, Wait};

use crate::shm::ensure_state_dir;
use crate::uplink::{self, Liveliness};
use crate::wire::{self, Exported};
use crate::Options;

/// Waits (until `stop()`) for the liveliness token of a bridge exporting
/// `remote`, which says how the mailbox is made. Returns it with the
/// token events (kept coming through the returned subscriber) and those
/// already read; `None` if stopped first.
#[allow(clippy::type_complexity)]
pub fn await_export(
    session: &Session,
    remote: &str,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<
    Option<(
        Exported,
        Events<Liveliness>,
        Vec<Liveliness>,
        Subscriber<()>,
    )>,
> {
    let (token_tx, tokens) = channel::<Liveliness>();
    let mailbox_name = remote.to_owned();
    let live = session
        .liveliness()
        .declare_subscriber(wire::alive_pattern(remote))
        .history(true)
        .callback(move |sample| {
            if let Some(e) = wire::parse_alive(&mailbox_name, sample.key_expr().as_str()) {
                let key = sample.key_expr().as_str().to_owned();
                let _ = token_tx.send(match sample.kind() {
                    SampleKind::Put => Liveliness::Up(format!("{}|{key}", e.bridge)),
                    SampleKind::Delete => Liveliness::Down(format!("{}|{key}", e.bridge)),
                });
            }
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("watching for {remote}'s exporter: {e}"))?;
    let started = Instant::now();
    let mut next_note = Duration::ZERO;
    let mut early = Vec::new();
    loop {
        if stop() {
            return Ok(None);
        }
        match tokens.recv_timeout(Duration::from_millis(100)) {
            Ok(Liveliness::Up(tag)) => {
                let key = tag.split_once('|').map_or("", |(_, k)| k).to_owned();
                early.push(Liveliness::Up(tag));
                let exported = wire::parse_alive(remote, &key).expect("parsed before");
                return Ok(Some((exported, tokens, early, live)));
            }
            Ok(other) => early.push(other),
            Err(_) => {}
        }
        if started.elapsed() >= next_note {
            log::info!("waiting for a bridge that exports {remote}");
            next_note += Duration::from_secs(10);
        }
    }
}

/// The far mailbox other than `remote` that a journal of proxy `local`
/// names, if any.
fn journal_for_another(dir: &std::path::Path, local: &str, remote: &str) -> Option<String> {
    let prefix = format!("{local}.to-");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let f = e.file_name().to_string_lossy().into_owned();
        let other = f
            .strip_prefix(&prefix)?
            .strip_suffix(".journal")?
            .to_owned();
        (other != remote).then_some(other)
    })
}

/// Serves the proxy `local` of the far mailbox `remote` until `stop()`.
pub fn run(
    session: &Session,
    remote: &str,
    local: &str,
    o: &Options,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let Some((exported, tokens, early, _live)) = await_export(session, remote, stop)? else {
        return Ok(());
    };
    let config = MailboxConfig {
        capacity: exported.capacity,
        max_message: exported.max_message as u32,
        mode: o.mode,
        budget: 0,
    };
    let proxy = Mailbox::open_or_create(local, &config)
        .with_context(|| format!("creating the proxy mailbox {local}"))?;
    if proxy.capacity() != exported.capacity || proxy.max_message() != exported.max_message {
        bail!(
            "mailbox {local} exists with capacity {:?} and messages up to {} bytes, but {remote} on bridge {} has {:?} and {} bytes: remove {local} or import under another name ({remote}=OTHER)",
            proxy.capacity(),
            proxy.max_message(),
            exported.bridge,
            exported.capacity,
            exported.max_message
        );
    }
    let dir = ensure_state_dir().context("creating the bridge's state folder")?;
    // A proxy serves one far mailbox while anything of its stream may be
    // left (its journal exists): what waits in it was sent to that one.
    if let Some(other) = journal_for_another(&dir, local, remote) {
        bail!(
            "{local} is the proxy of the far mailbox {other} (its journal {} is still there): messages waiting in it were sent to {other}; import {other} again to deliver them, or remove {local} and the journal first",
            dir.join(format!("{local}.to-{other}.journal")).display()
        );
    }
    let remote_owned = remote.to_owned();
    let remote_ack = remote.to_owned();
    log::info!(
        "proxy {local} of {remote} on bridge {} ({:?}, messages up to {} bytes)",
        exported.bridge,
        exported.capacity,
        exported.max_message
    );
    let spec = uplink::Spec {
        source: proxy,
        label: local.to_owned(),
        title: format!("proxy of mailbox {remote} on bridge"),
        // One journal per far mailbox: what waits for one is never sent
        // to another imported later under the same local name.
        journal: dir.join(format!("{local}.to-{remote}.journal")),
        max_message: exported.max_message,
        data_key: Box::new(move |origin| wire::data_key(&remote_owned, origin)),
        ack_key: Box::new(move |origin| wire::ack_key(&remote_ack, origin)),
        rendezvous: exported.capacity == Capacity::Zero,
        sole_receiver: true,
        far_bridge: exported.bridge.clone(),
    };
    uplink::run(session, spec, tokens, early, o, stop)
}
