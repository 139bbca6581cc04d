//! Shared by the `header` fuzz target and `tests/tests/props.rs`.

use std::mem::{size_of, MaybeUninit};

use ipc_core::layout::{magic_state, Fixed, Geometry, Header, Kind};
use ipc_core::packed::{max_message_for, MIN_RING};
use ipc_core::peers::PeerEntry;

/// Builds a header from `data` (raw bytes, or a valid header with a few
/// bytes changed, as the first byte decides), validates it against a
/// mapping length taken from the input, and checks what was accepted.
pub fn run(data: &[u8]) {
    let n = size_of::<Header>();
    let mut bytes = vec![0u8; n];
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut mapped = 0u64;
    if mode % 2 == 0 {
        let take = rest.len().min(n);
        bytes[..take].copy_from_slice(&rest[..take]);
        let tail = &rest[take..];
        let mut len = [0u8; 8];
        len[..tail.len().min(8)].copy_from_slice(&tail[..tail.len().min(8)]);
        mapped = u64::from_le_bytes(len);
    } else {
        // A valid header, then (offset, byte) pairs changed.
        let word = |i: usize| rest.get(i).copied().unwrap_or(0) as u32;
        let cap = word(0) | word(1) << 8 | (word(2) & 0x1f) << 16;
        let max = word(3) | word(4) << 8 | (word(5) & 0x3f) << 16;
        let kind = if word(6) % 2 == 0 {
            Kind::Buffer
        } else {
            Kind::Mailbox
        };
        let budget = (u64::from(word(7)) << 12) * u64::from(word(8) % 2);
        if let Ok(g) = Geometry::packed(kind, cap.max(1), max.max(1), budget) {
            let mut h = zeroed_header();
            g.write_to(&mut h);
            h.magic.store(
                ipc_core::layout::MAGIC,
                std::sync::atomic::Ordering::Relaxed,
            );
            // SAFETY: reading the bytes of a fully initialized header.
            let src = unsafe { std::slice::from_raw_parts(&h as *const Header as *const u8, n) };
            bytes.copy_from_slice(src);
            mapped = g.total_size;
        }
        let mut i = 7;
        while i + 1 < rest.len() {
            let off = rest[i] as usize % n.min(256);
            bytes[off] = rest[i + 1];
            i += 2;
        }
        mapped = mapped
            .wrapping_add(word(6) as u64 >> 1)
            .wrapping_sub(word(7) as u64);
    }
    let mut h = MaybeUninit::<Header>::zeroed();
    // SAFETY: `bytes` holds exactly size_of::<Header>() bytes; Header holds
    // only integers and atomics, for which every bit pattern is valid.
    let h = unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), h.as_mut_ptr() as *mut u8, n);
        h.assume_init()
    };
    let _ = magic_state(&h);
    if let Ok(g) = Geometry::read_from(&Fixed::read(&h), mapped) {
        let ring_end = g.slots_offset + g.ring_bytes;
        assert!(
            g.total_size <= mapped,
            "accepted a geometry larger than the mapping"
        );
        assert!(ring_end <= g.total_size, "ring past the end");
        assert!(
            g.peers_offset + g.peer_slots as u64 * size_of::<PeerEntry>() as u64 <= g.slots_offset,
            "peer table overlaps the ring"
        );
        assert!(g.peers_offset >= n as u64, "peer table overlaps the header");
        assert!(g.is_packed(), "only packed rings are accepted");
        assert!(g.ring_bytes.is_power_of_two() && g.ring_bytes >= MIN_RING);
        assert!(u64::from(g.max_message) <= max_message_for(g.ring_bytes));
        assert_eq!(g.slots_offset % 8, 0);
        assert!(
            g.peer_slots as u64 <= 256,
            "owner ids must fit in a lock word"
        );
    }
}

fn zeroed_header() -> Header {
    // SAFETY: all-zero bytes are a valid Header (integers and atomics).
    unsafe { MaybeUninit::<Header>::zeroed().assume_init() }
}
