//! Kernel byte streams: a pipe and a Unix domain stream socket. Messages
//! are fixed-size, so a message is `size` bytes read or written whole.
//!
//! Sleeping mode uses blocking descriptors; spinning mode makes them
//! non-blocking and retries on `EAGAIN` (bounded), then sleeps in `poll`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::harness::{check_deadline, Mode, Rx, Spin, Transport, Tx};

/// Waits until `fd` is ready for `events`, in `mode`; `spin` is the
/// budget of this wait. Spinning mode only spins (the caller retries the
/// non-blocking call) while the budget lasts, then sleeps in `poll`.
pub fn wait_fd(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    mode: Mode,
    spin: &mut Spin,
) -> Result<()> {
    if mode == Mode::Spin && spin.more() {
        std::hint::spin_loop();
        return Ok(());
    }
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, 100) };
    if r < 0 && Errno::last() != Errno::EINTR {
        return Err(Errno::last()).context("poll");
    }
    check_deadline()
}

/// One end of a byte-stream channel.
#[derive(Debug)]
pub struct FdEnd {
    fd: OwnedFd,
    mode: Mode,
}

impl FdEnd {
    fn new(fd: OwnedFd, mode: Mode) -> Result<FdEnd> {
        if mode == Mode::Spin {
            let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(FdEnd { fd, mode })
    }
}

impl Tx for FdEnd {
    fn send(&mut self, mut msg: &[u8]) -> Result<()> {
        let mut spin = Spin::new();
        while !msg.is_empty() {
            match nix::unistd::write(&self.fd, msg) {
                Ok(n) => msg = &msg[n..],
                Err(Errno::EAGAIN) => {
                    wait_fd(self.fd.as_fd(), libc::POLLOUT, self.mode, &mut spin)?
                }
                Err(Errno::EINTR) => check_deadline()?,
                Err(e) => return Err(e).context("write"),
            }
        }
        Ok(())
    }
}

impl Rx for FdEnd {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        let (mut got, mut spin) = (0, Spin::new());
        while got < buf.len() {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf[got..]) {
                Ok(0) => bail!("end of file after {got} bytes of a message"),
                Ok(n) => got += n,
                Err(Errno::EAGAIN) => wait_fd(self.fd.as_fd(), libc::POLLIN, self.mode, &mut spin)?,
                Err(Errno::EINTR) => check_deadline()?,
                Err(e) => return Err(e).context("read"),
            }
        }
        Ok(got)
    }
}

/// Both ends of a byte stream before each process takes its own; the end
/// a process does not use closes, so a dead peer reads as end of file.
#[derive(Debug)]
pub struct FdPair {
    tx: Option<OwnedFd>,
    rx: Option<OwnedFd>,
}

impl FdPair {
    fn take_tx(&mut self, mode: Mode) -> Result<FdEnd> {
        self.rx = None;
        FdEnd::new(self.tx.take().context("send end already taken")?, mode)
    }

    fn take_rx(&mut self, mode: Mode) -> Result<FdEnd> {
        self.tx = None;
        FdEnd::new(self.rx.take().context("receive end already taken")?, mode)
    }
}

/// An anonymous pipe with the default (64 KiB) buffer.
#[derive(Debug, Default)]
pub struct Pipe;

impl Transport for Pipe {
    type Link = FdPair;
    type Tx = FdEnd;
    type Rx = FdEnd;

    fn link(&self, _size: usize, _depth: u32, _mode: Mode) -> Result<FdPair> {
        let (r, w) = nix::unistd::pipe().context("pipe")?;
        Ok(FdPair {
            tx: Some(w),
            rx: Some(r),
        })
    }

    fn tx(&self, link: &mut FdPair, mode: Mode) -> Result<FdEnd> {
        link.take_tx(mode)
    }

    fn rx(&self, link: &mut FdPair, mode: Mode) -> Result<FdEnd> {
        link.take_rx(mode)
    }
}

/// A Unix domain stream socket pair with default buffer sizes, used one
/// way.
#[derive(Debug, Default)]
pub struct UnixStream;

impl Transport for UnixStream {
    type Link = FdPair;
    type Tx = FdEnd;
    type Rx = FdEnd;

    fn link(&self, _size: usize, _depth: u32, _mode: Mode) -> Result<FdPair> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("socketpair")?;
        Ok(FdPair {
            tx: Some(a),
            rx: Some(b),
        })
    }

    fn tx(&self, link: &mut FdPair, mode: Mode) -> Result<FdEnd> {
        link.take_tx(mode)
    }

    fn rx(&self, link: &mut FdPair, mode: Mode) -> Result<FdEnd> {
        link.take_rx(mode)
    }
}
