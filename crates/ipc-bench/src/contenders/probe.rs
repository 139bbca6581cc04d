//! Physical-limit probes: the least two processes can do to hand each other
//! a word. Round trip only; they carry 8 bytes (a sequence number) whatever
//! the row's message size.
//!
//! * [`CacheLine`]: a store into a shared cache line, the other side spins
//!   on it (the cost of moving one line between cores, twice per round trip);
//! * [`Futex`]: a store and an unconditional `FUTEX_WAKE`; the other side
//!   sleeps in `FUTEX_WAIT` whenever the word has not changed yet (the cost
//!   of two kernel wake-ups per round trip).

use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result};
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

use crate::harness::{check_deadline, spin_until, Measure, Mode, Rx, Transport, Tx};

/// One page of anonymous memory shared with children forked after it was
/// mapped; unmapped when the last handle in a process drops.
#[derive(Debug)]
pub struct SharedPage(NonNull<libc::c_void>);

impl SharedPage {
    fn new() -> Result<Rc<SharedPage>> {
        // SAFETY: a fresh anonymous mapping, aliased by nothing in Rust.
        let p = unsafe {
            mmap_anonymous(
                None,
                std::num::NonZeroUsize::new(4096).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .context("mmap")?;
        Ok(Rc::new(SharedPage(p)))
    }

    fn word64(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped, zero-filled, page aligned and lives
        // as long as `self`; it is only ever accessed atomically.
        unsafe { &*(self.0.as_ptr() as *const AtomicU64) }
    }

    fn word32(&self) -> &AtomicU32 {
        // SAFETY: as in `word64`.
        unsafe { &*(self.0.as_ptr() as *const AtomicU32) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this page; no reference outlives `self`.
        let _ = unsafe { munmap(self.0, 4096) };
    }
}

fn seq_of(msg: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = msg.len().min(8);
    b[..n].copy_from_slice(&msg[..n]);
    u64::from_le_bytes(b)
}

fn put_seq(buf: &mut [u8], seq: u64) -> usize {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
    buf.len()
}

/// A bare shared cache line, spun on.
#[derive(Debug, Default)]
pub struct CacheLine;

/// One end of a probe channel.
#[derive(Debug)]
pub struct ProbeEnd {
    page: Rc<SharedPage>,
    last: u64,
}

impl Transport for CacheLine {
    type Link = Rc<SharedPage>;
    type Tx = ProbeEnd;
    type Rx = ProbeEnd;

    fn applies(&self, measure: Measure, _size: usize, mode: Mode) -> bool {
        measure == Measure::RoundTrip && mode == Mode::Spin
    }

    fn link(&self, _: usize, _: u32, _: Mode) -> Result<Rc<SharedPage>> {
        SharedPage::new()
    }

    fn tx(&self, link: &mut Rc<SharedPage>, _: Mode) -> Result<ProbeEnd> {
        Ok(ProbeEnd {
            page: link.clone(),
            last: 0,
        })
    }

    fn rx(&self, link: &mut Rc<SharedPage>, mode: Mode) -> Result<ProbeEnd> {
        self.tx(link, mode)
    }
}

impl Tx for ProbeEnd {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        // Values start at 1: the line starts at 0.
        self.page.word64().store(seq_of(msg) + 1, Ordering::Release);
        Ok(())
    }
}

impl Rx for ProbeEnd {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        let w = self.page.word64();
        let last = self.last;
        let v = spin_until(|| {
            let v = w.load(Ordering::Acquire);
            Ok((v != last).then_some(v))
        })?;
        self.last = v;
        Ok(put_seq(buf, v - 1))
    }
}

/// A bare futex word: store + `FUTEX_WAKE`, `FUTEX_WAIT` when unchanged.
#[derive(Debug, Default)]
pub struct Futex;

/// One end of the futex probe.
#[derive(Debug)]
pub struct FutexEnd {
    page: Rc<SharedPage>,
    last: u32,
}

fn futex(
    word: &AtomicU32,
    op: libc::c_int,
    val: u32,
    timeout: Option<&libc::timespec>,
) -> libc::c_long {
    let ts = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 in shared memory for the whole
    // call; shared (not PRIVATE) futex operations, as the word is shared
    // between processes.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, ts, 0usize, 0u32) }
}

impl Transport for Futex {
    type Link = Rc<SharedPage>;
    type Tx = FutexEnd;
    type Rx = FutexEnd;

    fn applies(&self, measure: Measure, _size: usize, mode: Mode) -> bool {
        measure == Measure::RoundTrip && mode == Mode::Sleep
    }

    fn link(&self, _: usize, _: u32, _: Mode) -> Result<Rc<SharedPage>> {
        SharedPage::new()
    }

    fn tx(&self, link: &mut Rc<SharedPage>, _: Mode) -> Result<FutexEnd> {
        Ok(FutexEnd {
            page: link.clone(),
            last: 0,
        })
    }

    fn rx(&self, link: &mut Rc<SharedPage>, mode: Mode) -> Result<FutexEnd> {
        self.tx(link, mode)
    }
}

impl Tx for FutexEnd {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let w = self.page.word32();
        w.store(seq_of(msg) as u32 + 1, Ordering::Release);
        futex(w, libc::FUTEX_WAKE, 1, None);
        Ok(())
    }
}

impl Rx for FutexEnd {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        let w = self.page.word32();
        let slice = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        loop {
            let v = w.load(Ordering::Acquire);
            if v != self.last {
                self.last = v;
                return Ok(put_seq(buf, v.wrapping_sub(1) as u64));
            }
            futex(w, libc::FUTEX_WAIT, v, Some(&slice));
            check_deadline()?;
        }
    }
}
