//! ipc-core's mailboxes (`ipc_core::mailbox`), one sender to one
//! receiver, in the three capacities: bounded (as deep as the other
//! contenders' queues), zero (rendezvous: every `send` waits until the
//! receiver has taken the message, so its throughput is bound by a round
//! trip) and unbounded (senders never wait; storage grows by chained
//! segments).
//!
//! The ends are the buffer's own types (`Sender` / `Receiver`), so they
//! copy in with `send` and out with `recv_into` as [`super::ipc`] does.

use anyhow::{Context, Result};
use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};

use super::ipc::{policy, IpcRx, IpcTx};
use crate::harness::{check_deadline, Mode, Transport, Tx};

/// Which capacity a mailbox contender creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxKind {
    /// `Capacity::Bounded(depth)`, the harness's queue depth.
    Bounded,
    /// `Capacity::Zero` (rendezvous).
    Zero,
    /// `Capacity::Unbounded`.
    Unbounded,
}

/// A mailbox contender.
#[derive(Debug)]
pub struct IpcMailbox(pub MailboxKind);

/// A mailbox created by the parent; its name (and an unbounded mailbox's
/// chained segments) is unlinked on drop.
#[derive(Debug)]
pub struct MailboxLink {
    name: String,
    size: usize,
    /// The creator's handle: keeps the segment mapped for the whole run.
    _creator: Mailbox,
}

impl Drop for MailboxLink {
    fn drop(&mut self) {
        let _ = Mailbox::unlink(&self.name);
    }
}

impl MailboxLink {
    /// Opens the mailbox by name, as an unrelated process would.
    fn open(&self) -> Result<Mailbox> {
        Mailbox::open(&self.name).with_context(|| format!("opening mailbox {}", self.name))
    }
}

/// Bytes an unbounded mailbox may hold before the benchmark's sender
/// pauses: a sender that outruns its receiver must not fill /dev/shm
/// (the throughput run sends up to four times what the time box lets the
/// receiver take). Far above what one time box moves at the queue's
/// steady state, so it does not pace a measurement.
const UNBOUNDED_BACKLOG: usize = 512 << 20;

/// Sending end: the ipc-core sender, plus the backlog guard for an
/// unbounded mailbox.
#[derive(Debug)]
pub struct MailboxTx {
    tx: IpcTx,
    /// Most messages queued before pausing, and how often (in sends) to
    /// look; `None` if the mailbox bounds itself.
    backlog: Option<(usize, u32)>,
    sends: u32,
}

impl Tx for MailboxTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if let Some((most, every)) = self.backlog {
            self.sends = self.sends.wrapping_add(1);
            if self.sends.is_multiple_of(every) {
                while self.tx.0.len() > most {
                    std::thread::yield_now();
                    check_deadline()?;
                }
            }
        }
        self.tx.send(msg)
    }
}

impl Transport for IpcMailbox {
    type Link = MailboxLink;
    type Tx = MailboxTx;
    type Rx = IpcRx;

    fn link(&self, size: usize, depth: u32, _mode: Mode) -> Result<MailboxLink> {
        let name = crate::harness::unique("mbx");
        let capacity = match self.0 {
            MailboxKind::Bounded => Capacity::Bounded(depth),
            MailboxKind::Zero => Capacity::Zero,
            MailboxKind::Unbounded => Capacity::Unbounded,
        };
        let config = MailboxConfig {
            capacity,
            max_message: size as u32,
            mode: 0o600,
            budget: 0,
        };
        let mb = Mailbox::create(&name, &config)
            .with_context(|| format!("creating mailbox {name} ({capacity})"))?;
        Ok(MailboxLink {
            name,
            size,
            _creator: mb,
        })
    }

    fn tx(&self, link: &mut MailboxLink, mode: Mode) -> Result<MailboxTx> {
        let mut s = link.open()?.sender().context("attaching a sender")?;
        s.set_spin_policy(policy(mode));
        let most = UNBOUNDED_BACKLOG / (link.size + 64);
        Ok(MailboxTx {
            tx: IpcTx(s),
            backlog: (self.0 == MailboxKind::Unbounded)
                .then(|| (most, (most / 4).clamp(1, 4096) as u32)),
            sends: 0,
        })
    }

    fn rx(&self, link: &mut MailboxLink, mode: Mode) -> Result<IpcRx> {
        let mut r = link.open()?.receiver().context("attaching a receiver")?;
        r.set_spin_policy(policy(mode));
        Ok(IpcRx(r))
    }
}
