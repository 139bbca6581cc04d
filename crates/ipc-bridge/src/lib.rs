//! Mailboxes and ports across hosts: one `ipc-bridge` process per host,
//! peers connected through Zenoh (TCP, or TLS), no broker.
//!
//! * The host that has a mailbox **exports** it ([`export`]): remote
//!   messages go into it exactly once, in order per origin, as far as its
//!   free room allows (credits travel back with acknowledgements).
//! * A host that sends to it **imports** it ([`proxy`]): a local proxy
//!   mailbox made like the far one, which local programs use as any
//!   mailbox; the bridge journals what it takes from it ([`journal`]) until
//!   the far side acknowledges, so a bridge killed and started again loses
//!   nothing and the far side ([`delivered`]) drops what it already has.
//!
//! Layers, each importing only those below: [`wire`] (keys and frames),
//! [`shm`] (state files) → [`journal`], [`delivered`], [`status`] →
//! [`net`] (the Zenoh session) → [`export`], [`proxy`].

use std::time::Duration;

pub mod delivered;
pub mod downlink;
pub mod export;
pub mod journal;
pub mod net;
pub mod proxy;
pub mod pull;
pub mod shm;
pub mod status;
pub mod test_hook;
pub mod uplink;
pub mod wire;

/// What every exported or imported mailbox of one bridge shares.
#[derive(Debug, Clone)]
pub struct Options {
    /// This bridge's name, shown to its peers (default: the host name).
    pub bridge: String,
    /// A far bridge unreachable this long counts as gone: local senders
    /// of a proxy get `Disconnected`, and an exporter lets go of a silent
    /// origin (its receivers then see the end of the stream).
    pub disconnect_after: Duration,
    /// Permission bits of proxy mailboxes the bridge creates.
    pub mode: u32,
    /// Largest write to the network ([`net::NetOptions::batch_size`]):
    /// data frames are cut to fit one.
    pub batch_size: usize,
}

/// True if `name` can be a bridge's name: it appears in key expressions.
pub fn valid_bridge_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
