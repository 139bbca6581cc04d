//! ipc-core's bounded buffer: one producer to one consumer (a
//! [`Transport`], either flavor) and several to several ([`IpcMany`], the
//! general buffer).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use ipc_core::sync::{Deadline, SpinPolicy};
use ipc_core::{BufferConfig, Consumer, Producer, RecvError, SendError, SharedBuffer};

use crate::harness::{
    boxed_out, depth_for, now_ns, set_deadline, Child, Contender, Handshake, Measure, Mode, Rate,
    Rx, Transport, Tx,
};

/// The spin policy of `mode` (also used by the mailbox contenders).
pub fn policy(mode: Mode) -> SpinPolicy {
    match mode {
        Mode::Spin => SpinPolicy::SPIN,
        Mode::Sleep => SpinPolicy::SLEEP,
    }
}

/// A buffer segment created by the parent; its name is unlinked on drop.
#[derive(Debug)]
pub struct BufferLink {
    name: String,
    /// The creator's handle: keeps the segment mapped for the whole run.
    _creator: SharedBuffer,
}

impl BufferLink {
    /// A general (MPMC) buffer, or with `single` one for one producer and
    /// one consumer at a time (`create_single`), of at most `depth`
    /// messages in the library's default budget (as a user who gives none
    /// gets: room for `depth` of them, at most 4 MiB), or with `deep` in
    /// room for all `depth` (see [`deep_budget`]).
    fn create(size: usize, depth: u32, single: bool, deep: bool) -> Result<BufferLink> {
        let name = crate::harness::unique("buf");
        let config = BufferConfig {
            capacity: depth,
            max_message: size as u32,
            mode: 0o600,
            budget: if deep { deep_budget(size, depth) } else { 0 },
        };
        let buf = if single {
            SharedBuffer::create_single(&name, &config)
        } else {
            SharedBuffer::create(&name, &config)
        }
        .with_context(|| format!("creating segment {name}"))?;
        Ok(BufferLink {
            name,
            _creator: buf,
        })
    }

    /// Opens the segment by name, as an unrelated process would.
    fn open(&self) -> Result<SharedBuffer> {
        SharedBuffer::open(&self.name).with_context(|| format!("opening segment {}", self.name))
    }
}

impl Drop for BufferLink {
    fn drop(&mut self) {
        let _ = SharedBuffer::unlink(&self.name);
    }
}

/// A budget that holds `depth` messages of `size` bytes wherever the
/// wrap falls: what the "deep" row asks for, above the default's 4 MiB
/// at 64 KiB and 1 MiB (32 MiB for the throughput depths there).
pub fn deep_budget(size: usize, depth: u32) -> u64 {
    ((depth as u64 + 1) * (size as u64 + 16))
        .next_power_of_two()
        .max(4096)
}

/// Smallest message the "deep" row is measured at: below it the default
/// budget already holds the whole depth.
pub const DEEP_FROM: usize = 64 << 10;

/// ipc-core's bounded buffer, one producer and one consumer, copying in
/// (`send`) and out (`recv_into`) like the kernel channels do.
#[derive(Debug, Default)]
pub struct IpcBuffer {
    /// The single-producer/single-consumer flavor (`create_single`)
    /// rather than the general one (`create`).
    pub single: bool,
    /// A ring that holds the whole depth of the largest messages
    /// ([`deep_budget`]) rather than the default budget; measured from
    /// [`DEEP_FROM`] on, in throughput only.
    pub deep: bool,
}

/// Producer end (a buffer's producer or a mailbox's sender: one type).
#[derive(Debug)]
pub struct IpcTx(pub Producer);

/// Consumer end (a buffer's consumer or a mailbox's receiver).
#[derive(Debug)]
pub struct IpcRx(pub Consumer);

impl Tx for IpcTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.0.send(msg).map_err(|e| anyhow!("send: {e}"))
    }
}

impl Rx for IpcRx {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.0
            .recv_into(buf, Deadline::Never)
            .map_err(|e| anyhow!("recv: {e}"))
    }

    /// `recv_with`: the message is looked at in the ring, then released.
    fn recv_in_place(&mut self, look: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.0
            .recv_with_until(Deadline::Never, |m| look(m))
            .map_err(|e| anyhow!("recv_with: {e}"))?
    }
}

impl Transport for IpcBuffer {
    type Link = BufferLink;
    type Tx = IpcTx;
    type Rx = IpcRx;

    fn applies(&self, measure: Measure, size: usize, _mode: Mode) -> bool {
        // Round trips keep one message in flight at depth 4, where the
        // default budget already holds the depth at 64 KiB.
        !self.deep || (size >= DEEP_FROM && measure == Measure::Throughput)
    }

    fn link(&self, size: usize, depth: u32, _mode: Mode) -> Result<BufferLink> {
        BufferLink::create(size, depth, self.single, self.deep)
    }

    fn tx(&self, link: &mut BufferLink, mode: Mode) -> Result<IpcTx> {
        let mut p = link.open()?.producer()?;
        p.set_spin_policy(policy(mode));
        Ok(IpcTx(p))
    }

    fn rx(&self, link: &mut BufferLink, mode: Mode) -> Result<IpcRx> {
        let mut c = link.open()?.consumer()?;
        c.set_spin_policy(policy(mode));
        Ok(IpcRx(c))
    }
}

/// ipc-core's bounded buffer shared by several producer and consumer
/// processes (throughput only): the total rate of all of them.
#[derive(Debug)]
pub struct IpcMany {
    /// Row label.
    pub name: &'static str,
    /// Producer processes.
    pub producers: u32,
    /// Consumer processes.
    pub consumers: u32,
}

impl Contender for IpcMany {
    fn name(&self) -> &str {
        self.name
    }

    fn applies(&self, measure: Measure, _size: usize, _mode: Mode) -> bool {
        measure == Measure::Throughput
    }

    fn throughput(&self, size: usize, count: u64, mode: Mode, timeout: Duration) -> Result<Rate> {
        let link = BufferLink::create(size, depth_for(size), false, false)?;
        let hs = Handshake::new()?;
        set_deadline(timeout);
        let per_producer = count.div_ceil(self.producers as u64);
        let child_timeout = timeout + Duration::from_secs(5);
        let mut children = Vec::new();
        for _ in 0..self.producers {
            children.push(Child::spawn(child_timeout, || {
                let gate = hs.child()?;
                gate.wait_build()?;
                let mut p = link.open()?.producer()?;
                p.set_spin_policy(policy(mode));
                gate.ready()?;
                gate.wait_start()?;
                let msg = vec![0x5a; size];
                for _ in 0..per_producer {
                    match p.send(&msg[..]) {
                        Ok(()) => {}
                        // Consumers leave early only when the time box
                        // ends the run: then there is nothing left to do.
                        Err(SendError::Disconnected(_)) => break,
                        Err(e) => bail!("send: {e}"),
                    }
                }
                Ok(())
            })?);
        }
        for _ in 0..self.consumers {
            children.push(Child::spawn(child_timeout, || {
                let gate = hs.child()?;
                gate.wait_build()?;
                let mut c = link.open()?.consumer()?;
                c.set_spin_policy(policy(mode));
                c.set_min_producers(self.producers);
                gate.ready()?;
                gate.wait_start()?;
                let started = Instant::now();
                let mut buf = vec![0u8; size];
                let (mut n, mut last) = (0u64, now_ns());
                loop {
                    match c.recv_into(&mut buf, Deadline::Never) {
                        Ok(_) => {
                            n += 1;
                            last = now_ns();
                            if n & 255 == 0 && boxed_out(started) {
                                break;
                            }
                        }
                        Err(RecvError::Disconnected) => break,
                        Err(e) => bail!("recv: {e}"),
                    }
                }
                gate.report(n, last)
            })?);
        }
        let gate = hs.parent();
        let n = (self.producers + self.consumers) as usize;
        gate.build(n)?;
        gate.wait_ready(n)?;
        let start = now_ns();
        let started = Instant::now();
        gate.start(n)?;
        let (mut total, mut end) = (0u64, start);
        for _ in 0..self.consumers {
            let [got, last] = gate.read_report()?;
            total += got;
            end = end.max(last);
        }
        let expected = per_producer * self.producers as u64;
        if total == expected {
            for child in children {
                child.wait()?;
            }
        } else if total > expected {
            bail!("consumers got {total} messages, producers sent {expected}");
        } // else the time box cut the run short: the guards kill the producers.
        let secs = (end - start) as f64 / 1e9;
        debug_assert!(secs <= started.elapsed().as_secs_f64() + 1e-3);
        Ok(Rate {
            messages: total,
            secs,
        })
    }

    fn round_trip(&self, _: usize, _: u64, _: Mode, _: Duration) -> Result<Histogram<u64>> {
        bail!("not measured: round trip is a one-to-one measurement")
    }
}
