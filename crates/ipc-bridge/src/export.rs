//! The exporting side (the host where the mailbox lives): announces the
//! mailbox, runs a [`downlink`] that delivers remote proxies' messages
//! into it, and for every remote puller an [`uplink`] that takes messages
//! from it (competing with the local receivers: each message goes to one
//! receiver) as far as that puller has room.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender as EventSender};
use std::time::Duration;

use anyhow::{Context, Result};
use ipc_core::mailbox::{Capacity, Mailbox};
use zenoh::sample::SampleKind;
use zenoh::{Session, Wait};

use crate::delivered::Delivered;
use crate::shm::ensure_state_dir;
use crate::uplink::Liveliness;
use crate::{downlink, uplink, wire, Options};

/// The journals of pullers of mailbox `name` in the state folder `dir`
/// (see [`pull_journal`]).
fn pull_journals(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.pull-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let file = e.file_name();
            let id = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|f| f.strip_suffix(".journal"));
            id.is_some_and(|id| id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit()))
        })
        .map(|e| e.path())
        .collect()
}

/// The journal of puller `id` of mailbox `name` in the state folder `dir`.
fn pull_journal(dir: &Path, name: &str, id: u64) -> PathBuf {
    dir.join(format!("{name}.pull-{id:016x}.journal"))
}

/// Serves the exported mailbox `name` until `stop()` says so.
pub fn run(
    session: &Session,
    name: &str,
    o: &Options,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let mailbox = Mailbox::open(name).with_context(|| {
        format!("exporting mailbox {name}: it must exist (ipcctl create {name} --mailbox ...)")
    })?;
    let capacity = mailbox.capacity();
    let max = mailbox.max_message();
    let dir = ensure_state_dir().context("creating the bridge's state folder")?;
    let delivered = Delivered::open_or_create(&dir.join(format!("{name}.delivered")))
        .with_context(|| format!("opening what was delivered to {name}"))?;
    // Every puller's journal, before any is served again: a message this
    // bridge's last run was killed holding went back to the mailbox, and
    // each later run's death may put back another (a puller that comes
    // back only after several restarts could not tell which were its).
    uplink::forget_put_backs(&pull_journals(&dir, name), &mailbox, max)?;
    let _token = session
        .liveliness()
        .declare_token(wire::alive_key(name, &o.bridge, capacity, max))
        .wait()
        .map_err(|e| anyhow::anyhow!("announcing {name}: {e}"))?;
    log::info!("exporting mailbox {name} ({capacity:?}, messages up to {max} bytes)");

    // Pullers announce themselves with liveliness tokens.
    let (ptx, pullers) = channel::<(u64, String, bool)>();
    let mailbox_name = name.to_owned();
    let _pull_sub = session
        .liveliness()
        .declare_subscriber(wire::puller_pattern(name))
        .history(true)
        .callback(move |sample| {
            if let Some((id, bridge)) =
                wire::parse_puller(&mailbox_name, sample.key_expr().as_str())
            {
                let _ = ptx.send((id, bridge, sample.kind() == SampleKind::Put));
            }
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("watching for pullers of {name}: {e}"))?;

    let failed = AtomicBool::new(false);
    let stop_all = || stop() || failed.load(Ordering::Relaxed);
    let pull_source = mailbox.clone();
    std::thread::scope(|scope| -> Result<()> {
        let (failed, stop_all) = (&failed, &stop_all);
        let serving = scope.spawn(move || {
            let mut routes: HashMap<u64, EventSender<Liveliness>> = HashMap::new();
            while !stop_all() {
                let Ok((id, bridge, up)) = pullers.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let tag = format!("{bridge}|{id:016x}");
                if capacity == Capacity::Zero {
                    if up {
                        log::warn!("{name}: bridge {bridge} wants to pull from a rendezvous mailbox, which is not supported");
                    }
                    continue;
                }
                if let Some(route) = routes.get(&id) {
                    let _ = route.send(if up { Liveliness::Up(tag) } else { Liveliness::Down(tag) });
                    continue;
                }
                if !up {
                    continue;
                }
                log::info!("{name}: bridge {bridge} pulls messages ({id:016x})");
                let (etx, events) = channel();
                routes.insert(id, etx);
                let channel_name = wire::pull_channel(name, id);
                let ack_channel = channel_name.clone();
                let spec = uplink::Spec {
                    source: pull_source.clone(),
                    label: format!("{name}.pull-{id:016x}"),
                    title: format!("{name} pulled by bridge"),
                    journal: pull_journal(&dir, name, id),
                    max_message: max,
                    data_key: Box::new(move |origin| wire::data_key(&channel_name, origin)),
                    ack_key: Box::new(move |origin| wire::ack_key(&ack_channel, origin)),
                    rendezvous: false,
                    sole_receiver: false,
                    far_bridge: bridge,
                };
                scope.spawn(move || {
                    let early = vec![Liveliness::Up(tag)];
                    if let Err(e) = uplink::run(session, spec, events, early, o, stop_all) {
                        log::error!("{name}: serving a puller: {e:#}");
                        failed.store(true, Ordering::Relaxed);
                    }
                });
            }
        });
        let spec = downlink::Spec {
            target: mailbox.clone(),
            label: name.to_owned(),
            title: format!("exported by bridge {}", o.bridge),
            delivered,
            data_pattern: wire::data_pattern(name),
            ack_key: Box::new({
                let name = name.to_owned();
                move |origin| wire::ack_key(&name, origin)
            }),
        };
        let result = downlink::run(session, spec, o, stop_all);
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        let _ = serving.join();
        result?;
        if failed.load(Ordering::Relaxed) && !stop() {
            anyhow::bail!("exporting {name} failed (see above)");
        }
        Ok(())
    })
}
