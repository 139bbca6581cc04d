//! Shared by the `trust_*` test files: the helper binary, a small random
//! generator, a consumer loop, finding slot headers in a segment file
//! without the (soon private) `layout` module, and a shared mapping of a
//! segment file.
#![allow(dead_code)]

use std::time::Duration;

use ipc_core::{Receiver, RecvError};

/// The helper binary of these tests.
pub const PEER: &str = env!("CARGO_BIN_EXE_trust-peer");

/// Bound for anything that should finish: a hang fails the test.
pub const HANG: Duration = Duration::from_secs(60);

/// SplitMix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(t ^ ((std::process::id() as u64) << 32))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a consumer saw of a stream of 8-byte little-endian sequence
/// numbers 0, 1, 2, ...
#[derive(Debug)]
pub struct Seen {
    pub received: u64,
    pub in_order: bool,
    pub end: Result<(), RecvError>,
}

/// Receives until end of stream (or an error, or more than `expect`).
pub fn drain_sequence(rx: &mut Receiver, expect: u64) -> Seen {
    let mut received = 0u64;
    let mut in_order = true;
    loop {
        match rx.recv_timeout(HANG) {
            Ok(m) => {
                in_order &= m == received.to_le_bytes();
                received += 1;
                if received > expect {
                    return Seen {
                        received,
                        in_order,
                        end: Ok(()),
                    };
                }
            }
            Err(RecvError::Disconnected) => {
                return Seen {
                    received,
                    in_order,
                    end: Ok(()),
                }
            }
            Err(e) => {
                return Seen {
                    received,
                    in_order,
                    end: Err(e),
                }
            }
        }
    }
}

/// Bytes of the header at the start of every slot (ring.rs `SlotHeader`,
/// `#[repr(C)]`): stamp u64 at +0, length u32 at +8, tag u32 at +12; the
/// payload follows at +16.
pub const SLOT_HEADER: u64 = 16;
/// Offset of the length field in a slot header.
pub const LEN_OFFSET: u64 = 8;

/// Slot stride for a given maximum message (layout.rs `Geometry::new`):
/// `round_up(SLOT_HEADER + max_message, 64)`.
pub fn slot_stride(max_message: u64) -> u64 {
    (SLOT_HEADER + max_message).div_ceil(64) * 64
}

/// Offset in the segment file of the slot whose payload starts with
/// `marker`. Slots sit at `slots_offset + i * stride`, where
/// `slots_offset = round_up(round_up(size_of::<Header>(), 128) + 64 *
/// size_of::<PeerEntry>() (64), 128)` (layout.rs); rather than hard-code
/// the header's size, which changes with the layout, the test sends a
/// message with a unique marker and finds its payload: the slot header
/// is the 16 bytes before it.
/// Offset of the packed record header before `marker`'s payload.
pub fn find_record(path: &std::path::Path, marker: &[u8]) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let at = bytes.windows(marker.len()).position(|w| w == marker)? as u64;
    at.checked_sub(8)
}

/// A packed record header: committed, message `seq`, `len` bytes.
pub fn record_header(seq: u64, len: u64) -> u64 {
    1 << 63 | seq << 32 | len
}

pub fn find_slot(path: &std::path::Path, marker: &[u8]) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let at = bytes.windows(marker.len()).position(|w| w == marker)? as u64;
    at.checked_sub(SLOT_HEADER)
}

/// A shared read-write mapping of a whole segment file.
pub struct Mapped {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: the mapping is process-wide memory, accessed only through
// atomics.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    pub fn new(path: &std::path::Path) -> Mapped {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open segment file");
        let len = f.metadata().expect("stat").len() as usize;
        // SAFETY: a fresh shared mapping of a file we opened read-write;
        // it stays valid after the descriptor closes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Mapped {
            ptr: ptr as *mut u8,
            len,
        }
    }

    pub fn u32_at(&self, off: u64) -> &std::sync::atomic::AtomicU32 {
        assert!(off as usize + 4 <= self.len && off.is_multiple_of(4));
        // SAFETY: inside the mapping, aligned; shared memory is only
        // accessed atomically here.
        unsafe { &*(self.ptr.add(off as usize) as *const std::sync::atomic::AtomicU32) }
    }

    pub fn u64_at(&self, off: u64) -> &std::sync::atomic::AtomicU64 {
        assert!(off as usize + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: as in `u32_at`.
        unsafe { &*(self.ptr.add(off as usize) as *const std::sync::atomic::AtomicU64) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no reference outlives self.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// True if we run as root (the namespace and hidepid tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
