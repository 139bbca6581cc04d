//! iceoryx2 0.10, publish-subscribe over `[u8]` slices (built with the
//! `iceoryx2` feature).
//!
//! The publisher loans a sample, copies the message in and sends it
//! (`RetryUntilDelivered`, no overflow: a full subscriber buffer makes the
//! publisher wait, as a bounded buffer does); the subscriber copies the
//! payload out (or, as "iceoryx2 in place", looks at it where it lies).
//! Spinning mode polls `receive`; sleeping mode pairs the
//! service with an event service and waits in `Listener::timed_wait`,
//! the way iceoryx2 applications sleep.

use std::time::Duration;

use anyhow::{anyhow, Result};
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::{event, publish_subscribe};

use crate::harness::{check_deadline, spin_until, Mode, Rx, Transport, Tx};

type Svc = ipc::Service;

fn err(what: &'static str) -> impl Fn(&dyn std::fmt::Debug) -> anyhow::Error {
    move |e| anyhow!("iceoryx2 {what}: {e:?}")
}

/// iceoryx2's files in /dev/shm (all named `iox2_*`).
fn global_files() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("/iox2_"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Quiets iceoryx2's own logger (call once at start). Returns true if
/// iceoryx2 had left global files before this run (then they are kept).
pub fn init() -> bool {
    set_log_level(LogLevel::Error);
    !global_files().is_empty() || std::path::Path::new("/tmp/iceoryx2").exists()
}

/// Removes what dead iceoryx2 nodes (children killed on error or at the
/// end of a time box) left, and, if iceoryx2 had nothing here before this
/// run, every iceoryx2 file: all of them are this run's, and every process
/// of this run has ended.
pub fn cleanup(existed_before: bool) {
    let _ = Node::<Svc>::list(Config::global_config(), |state| {
        if let NodeState::Dead(view) = state {
            let _ = view.blocking_remove_stale_resources(Duration::from_secs(1));
        }
        CallbackProgression::Continue
    });
    if existed_before {
        return;
    }
    for f in global_files() {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all("/tmp/iceoryx2");
}

/// The iceoryx2 contender.
#[derive(Debug, Default)]
pub struct Iceoryx2;

/// Service names and geometry; each process creates its own node.
#[derive(Debug)]
pub struct IoxLink {
    name: String,
    size: usize,
    depth: usize,
}

struct Opened {
    events: event::PortFactory<Svc>,
    service: publish_subscribe::PortFactory<Svc, [u8], ()>,
    _node: Node<Svc>,
}

fn open(link: &IoxLink) -> Result<Opened> {
    let node = NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(|e| err("node")(&e))?;
    let name = ServiceName::new(&link.name).map_err(|e| err("service name")(&e))?;
    let service = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(link.depth)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(|e| err("publish-subscribe service")(&e))?;
    let ev_name =
        ServiceName::new(&format!("{}/ev", link.name)).map_err(|e| err("event name")(&e))?;
    let events = node
        .service_builder(&ev_name)
        .event()
        .open_or_create()
        .map_err(|e| err("event service")(&e))?;
    Ok(Opened {
        events,
        service,
        _node: node,
    })
}

/// Publisher end. Fields drop in order: ports before services before node.
pub struct IoxTx {
    publisher: Publisher<Svc, [u8], ()>,
    notifier: Option<Notifier<Svc>>,
    _opened: Opened,
}

/// Subscriber end.
pub struct IoxRx {
    subscriber: Subscriber<Svc, [u8], ()>,
    listener: Option<Listener<Svc>>,
    _opened: Opened,
}

impl Transport for Iceoryx2 {
    type Link = IoxLink;
    type Tx = IoxTx;
    type Rx = IoxRx;

    fn link(&self, size: usize, depth: u32, _mode: Mode) -> Result<IoxLink> {
        Ok(IoxLink {
            name: crate::harness::unique("iox"),
            size,
            depth: depth as usize,
        })
    }

    fn tx(&self, link: &mut IoxLink, mode: Mode) -> Result<IoxTx> {
        let opened = open(link)?;
        let publisher = opened
            .service
            .publisher_builder()
            .initial_max_slice_len(link.size)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| err("publisher")(&e))?;
        let notifier = match mode {
            Mode::Sleep => Some(
                opened
                    .events
                    .notifier_builder()
                    .create()
                    .map_err(|e| err("notifier")(&e))?,
            ),
            Mode::Spin => None,
        };
        Ok(IoxTx {
            publisher,
            notifier,
            _opened: opened,
        })
    }

    fn rx(&self, link: &mut IoxLink, mode: Mode) -> Result<IoxRx> {
        let opened = open(link)?;
        let subscriber = opened
            .service
            .subscriber_builder()
            .create()
            .map_err(|e| err("subscriber")(&e))?;
        let listener = match mode {
            Mode::Sleep => Some(
                opened
                    .events
                    .listener_builder()
                    .create()
                    .map_err(|e| err("listener")(&e))?,
            ),
            Mode::Spin => None,
        };
        Ok(IoxRx {
            subscriber,
            listener,
            _opened: opened,
        })
    }
}

impl Tx for IoxTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let sample = spin_until(|| match self.publisher.loan_slice_uninit(msg.len()) {
            Ok(s) => Ok(Some(s)),
            // Every sample is still held by the subscriber: wait.
            Err(e) if format!("{e:?}").contains("ExceedsMaxLoan") => Ok(None),
            Err(e) => Err(err("loan")(&e)),
        })?;
        sample
            .write_from_slice(msg)
            .send()
            .map_err(|e| err("send")(&e))?;
        if let Some(n) = &self.notifier {
            n.notify().map_err(|e| err("notify")(&e))?;
        }
        Ok(())
    }

    fn connect(&mut self) -> Result<()> {
        if let Some(n) = &self.notifier {
            n.update_connections()
                .map_err(|e| err("notifier connect")(&e))?;
        }
        Ok(())
    }
}

impl Rx for IoxRx {
    /// A subscriber created before its publisher connects only when it
    /// next looks for samples; until then a full buffer makes the
    /// publisher drop messages (it sees no connected receiver to wait for).
    fn connect(&mut self) -> Result<()> {
        self.subscriber
            .has_samples()
            .map_err(|e| err("subscriber connect")(&e))?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_sample(&mut |p| {
            buf[..p.len()].copy_from_slice(p);
            Ok(p.len())
        })
    }

    fn recv_in_place(&mut self, look: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.recv_sample(look)
    }
}

impl IoxRx {
    /// Waits for the next sample (polling, or on the listener when
    /// sleeping) and hands its payload to `f` where it lies; the sample
    /// goes back to the publisher when `f` returns.
    fn recv_sample<R>(&mut self, f: &mut dyn FnMut(&[u8]) -> Result<R>) -> Result<R> {
        let mut take = |sub: &Subscriber<Svc, [u8], ()>| -> Result<Option<R>> {
            match sub.receive().map_err(|e| err("receive")(&e))? {
                Some(sample) => f(sample.payload()).map(Some),
                None => Ok(None),
            }
        };
        match &self.listener {
            None => spin_until(|| take(&self.subscriber)),
            Some(listener) => loop {
                if let Some(r) = take(&self.subscriber)? {
                    return Ok(r);
                }
                listener
                    .timed_wait(|_| {}, Duration::from_millis(100))
                    .map_err(|e| err("wait")(&e))?;
                check_deadline()?;
            },
        }
    }
}
