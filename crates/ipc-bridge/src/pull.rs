//! The pulling side (a host whose receivers take from a far mailbox): a
//! local mailbox that a [`downlink`] fills from the far exporter, which
//! takes the far mailbox's messages for this host only as far as this
//! mailbox has room, so no host hoards messages it is not ready to take.
//! Each message goes to exactly one receiver, on whichever host.

use anyhow::{bail, Context, Result};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use zenoh::{Session, Wait};

use crate::delivered::Delivered;
use crate::proxy::await_export;
use crate::shm::ensure_state_dir;
use crate::{downlink, wire, Options};

/// The most messages a pulling host holds ahead of its receivers (the
/// local mailbox's capacity, or the far one's if smaller).
pub const PULL_WINDOW: u32 = 16;

/// Serves the local mailbox `local`, fed from the far mailbox `remote`,
/// until `stop()`.
pub fn run(
    session: &Session,
    remote: &str,
    local: &str,
    o: &Options,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let Some((exported, _tokens, _early, _live)) = await_export(session, remote, stop)? else {
        return Ok(());
    };
    let capacity = match exported.capacity {
        Capacity::Zero => bail!(
            "pulling from {remote}: it is a rendezvous mailbox on bridge {}, which cannot be pulled from (import it instead, or make it bounded)",
            exported.bridge
        ),
        Capacity::Bounded(n) => Capacity::Bounded(n.min(PULL_WINDOW)),
        Capacity::Unbounded => Capacity::Bounded(PULL_WINDOW),
    };
    let config = MailboxConfig {
        capacity,
        max_message: exported.max_message as u32,
        mode: o.mode,
        budget: 0,
    };
    let target = Mailbox::open_or_create(local, &config)
        .with_context(|| format!("creating the mailbox {local} that pulls from {remote}"))?;
    if target.capacity() != capacity || target.max_message() != exported.max_message {
        bail!(
            "mailbox {local} exists with capacity {:?} and messages up to {} bytes; pulling from {remote} needs {capacity:?} and {} bytes: remove {local} or pull under another name ({remote}=OTHER)",
            target.capacity(),
            target.max_message(),
            exported.max_message
        );
    }
    let dir = ensure_state_dir().context("creating the bridge's state folder")?;
    let delivered = Delivered::open_or_create(&dir.join(format!("{local}.delivered")))
        .with_context(|| format!("opening what was delivered to {local}"))?;
    let id = delivered.id().context("choosing this puller's identity")?;
    let channel_name = wire::pull_channel(remote, id);
    let _token = session
        .liveliness()
        .declare_token(wire::puller_key(remote, id, &o.bridge))
        .wait()
        .map_err(|e| anyhow::anyhow!("announcing the puller of {remote}: {e}"))?;
    log::info!(
        "{local} pulls from {remote} on bridge {} ({capacity:?}, messages up to {} bytes)",
        exported.bridge,
        exported.max_message
    );
    let spec = downlink::Spec {
        target,
        label: local.to_owned(),
        title: format!("pulls from mailbox {remote} on bridge {}", exported.bridge),
        delivered,
        data_pattern: wire::data_pattern(&channel_name),
        ack_key: Box::new(move |origin| wire::ack_key(&channel_name, origin)),
    };
    downlink::run(session, spec, o, stop)
}
