//! A POSIX message queue (`mq_open`, via nix).
//!
//! The queue is made as deep as the others' buffers when the system lets
//! us (root may exceed `/proc/sys/fs/mqueue/msg_max`; [`raise_limits`]
//! lifts `RLIMIT_MSGQUEUE`), else the system's `msg_max` default of 10.

use std::ffi::CString;
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::mqueue::{mq_close, mq_open, mq_receive, mq_send, mq_unlink, MQ_OFlag, MqAttr, MqdT};
use nix::sys::stat::Mode as Perm;

use crate::contenders::fd::wait_fd;
use crate::harness::{check_deadline, Mode, Rx, Spin, Transport, Tx};

/// Lifts the per-user message-queue memory limit as far as allowed.
pub fn raise_limits() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if setrlimit(Resource::RLIMIT_MSGQUEUE, RLIM_INFINITY, RLIM_INFINITY).is_err() {
        log::info!("could not raise RLIMIT_MSGQUEUE: large POSIX mq messages may be n/a");
    }
}

/// A queue name; the queue is unlinked when this drops (in the parent).
#[derive(Debug)]
pub struct QueueName(CString);

impl Drop for QueueName {
    fn drop(&mut self) {
        let _ = mq_unlink(self.0.as_c_str());
    }
}

/// A POSIX message queue.
#[derive(Debug, Default)]
pub struct PosixMq;

/// One end of a POSIX message queue; closed on drop.
#[derive(Debug)]
pub struct MqEnd {
    q: Option<MqdT>,
    mode: Mode,
}

impl MqEnd {
    fn q(&self) -> &MqdT {
        self.q.as_ref().expect("open until dropped")
    }
}

impl Drop for MqEnd {
    fn drop(&mut self) {
        if let Some(q) = self.q.take() {
            let _ = mq_close(q);
        }
    }
}

fn open(name: &QueueName, flag: MQ_OFlag, mode: Mode) -> Result<MqEnd> {
    let mut flags = flag;
    if mode == Mode::Spin {
        flags |= MQ_OFlag::O_NONBLOCK;
    }
    let q = mq_open(name.0.as_c_str(), flags, Perm::empty(), None).context("mq_open")?;
    Ok(MqEnd { q: Some(q), mode })
}

impl Tx for MqEnd {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let mut spin = Spin::new();
        loop {
            match mq_send(self.q(), msg, 0) {
                Ok(()) => return Ok(()),
                Err(Errno::EAGAIN) => {
                    wait_fd(self.q().as_fd(), libc::POLLOUT, self.mode, &mut spin)?
                }
                Err(Errno::EINTR) => check_deadline()?,
                Err(e) => return Err(e).context("mq_send"),
            }
        }
    }
}

impl Rx for MqEnd {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        let (mut spin, mut prio) = (Spin::new(), 0);
        loop {
            match mq_receive(self.q(), buf, &mut prio) {
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN) => {
                    wait_fd(self.q().as_fd(), libc::POLLIN, self.mode, &mut spin)?
                }
                Err(Errno::EINTR) => check_deadline()?,
                Err(e) => return Err(e).context("mq_receive"),
            }
        }
    }
}

impl Transport for PosixMq {
    type Link = QueueName;
    type Tx = MqEnd;
    type Rx = MqEnd;

    fn link(&self, size: usize, depth: u32, _mode: Mode) -> Result<QueueName> {
        let name = QueueName(CString::new(format!("/{}", crate::harness::unique("mq")))?);
        let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR;
        let perm = Perm::from_bits_truncate(0o600);
        let mut result = Err(Errno::EINVAL);
        // Deepest first; RLIMIT_MSGQUEUE (800 KiB by default) caps depth × size.
        let fits = (760 * 1024 / (size as i64 + 64)).max(1);
        for d in [depth as i64, fits.min(depth as i64), 10, 1] {
            let attr = MqAttr::new(0, d, size as i64, 0);
            result = mq_open(name.0.as_c_str(), flags, perm, Some(&attr));
            if result.is_ok() {
                break;
            }
        }
        // Closing our descriptor leaves the queue; `name` unlinks it.
        let q = result.with_context(|| format!("mq_open of a queue for {size}-byte messages"))?;
        let _ = mq_close(q);
        Ok(name)
    }

    fn tx(&self, link: &mut QueueName, mode: Mode) -> Result<MqEnd> {
        open(link, MQ_OFlag::O_WRONLY, mode)
    }

    fn rx(&self, link: &mut QueueName, mode: Mode) -> Result<MqEnd> {
        open(link, MQ_OFlag::O_RDONLY, mode)
    }
}
