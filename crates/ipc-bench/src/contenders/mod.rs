//! The contenders. Each is one small [`Transport`](crate::harness::Transport)
//! impl (a one-way channel: link, send end, receive end) wrapped in
//! [`OneToOne`], or a [`Contender`] of its own when it is not one-to-one.
//!
//! To add one: write a `Transport` impl in a module here and push it in
//! [`all`] under the name the report should show.

pub mod fd;
#[cfg(feature = "iceoryx2")]
pub mod iox;
pub mod ipc;
pub mod mailbox;
pub mod mq;
pub mod probe;

use crate::harness::{Contender, OneToOne};
use mailbox::{IpcMailbox, MailboxKind};

/// Row label of ipc-core's single-producer/single-consumer buffer
/// (`SharedBuffer::create_single`), one to one: the product's 1→1 fast
/// path, the one the ratios and targets are about.
pub const IPC: &str = "ipc-core spsc";
/// Row label of the same, in a ring that holds the whole queue depth of the
/// largest messages (throughput, 64 KiB and up; see `ipc::deep_budget`).
pub const IPC_DEEP: &str = "ipc-core spsc deep";
/// Row label of ipc-core's general (MPMC) buffer (`SharedBuffer::create`),
/// one to one.
pub const IPC_MPMC: &str = "ipc-core mpmc";
/// Row label of ipc-core's general buffer, four to four.
pub const IPC_4X4: &str = "ipc-core 4×4";
/// Row label of a bounded mailbox (`Capacity::Bounded(depth)`).
pub const MB_BOUNDED: &str = "mailbox bounded";
/// Row label of a rendezvous mailbox (`Capacity::Zero`).
pub const MB_ZERO: &str = "mailbox zero";
/// Row label of an unbounded mailbox (`Capacity::Unbounded`).
pub const MB_UNBOUNDED: &str = "mailbox unbounded";
/// Row label of the pipe.
pub const PIPE: &str = "pipe";
/// Row label of the Unix stream socket.
pub const UDS: &str = "unix socket";
/// Row label of the POSIX queue.
pub const MQ: &str = "POSIX mq";
/// Row label of iceoryx2.
pub const IOX: &str = "iceoryx2";
/// Row label of ipc-core spsc receiving in place (`recv_with`, zero copy),
/// 64 KiB and up.
pub const IPC_IN_PLACE: &str = "ipc-core spsc in place";
/// Row label of iceoryx2 receiving in place (the sample's payload looked
/// at where it lies), 64 KiB and up.
pub const IOX_IN_PLACE: &str = "iceoryx2 in place";
/// Row label of the cache-line probe.
pub const CACHE_LINE: &str = "cache-line probe";
/// Row label of the futex probe.
pub const FUTEX: &str = "futex probe";

/// Every contender this build has, in report order.
pub fn all() -> Vec<Box<dyn Contender>> {
    let mut v: Vec<Box<dyn Contender>> = vec![
        Box::new(OneToOne::new(
            IPC,
            ipc::IpcBuffer {
                single: true,
                deep: false,
            },
        )),
        Box::new(OneToOne::in_place(
            IPC_IN_PLACE,
            ipc::IpcBuffer {
                single: true,
                deep: false,
            },
        )),
        Box::new(OneToOne::new(
            IPC_DEEP,
            ipc::IpcBuffer {
                single: true,
                deep: true,
            },
        )),
        Box::new(OneToOne::new(
            IPC_MPMC,
            ipc::IpcBuffer {
                single: false,
                deep: false,
            },
        )),
        Box::new(ipc::IpcMany {
            name: IPC_4X4,
            producers: 4,
            consumers: 4,
        }),
        Box::new(OneToOne::new(MB_BOUNDED, IpcMailbox(MailboxKind::Bounded))),
        Box::new(OneToOne::new(MB_ZERO, IpcMailbox(MailboxKind::Zero))),
        Box::new(OneToOne::new(
            MB_UNBOUNDED,
            IpcMailbox(MailboxKind::Unbounded),
        )),
        Box::new(OneToOne::new(PIPE, fd::Pipe)),
        Box::new(OneToOne::new(UDS, fd::UnixStream)),
        Box::new(OneToOne::new(MQ, mq::PosixMq)),
    ];
    #[cfg(feature = "iceoryx2")]
    v.push(Box::new(OneToOne::new(IOX, iox::Iceoryx2)));
    #[cfg(feature = "iceoryx2")]
    v.push(Box::new(OneToOne::in_place(IOX_IN_PLACE, iox::Iceoryx2)));
    v.push(Box::new(OneToOne::new(CACHE_LINE, probe::CacheLine)));
    v.push(Box::new(OneToOne::new(FUTEX, probe::Futex)));
    v
}
