//! Direct addressing: a process registers a named port (`worker-3`) and
//! others send to it by name, without knowing any mailbox. Each message
//! carries its sender's name; the owner receives from anyone, or
//! selectively from one named sender.
//!
//! A port is a mailbox named `port.<name>` whose only receiver is the
//! registering process. When that process dies, the name is released: a
//! later `register` finds no live receiver, removes the stale mailbox and
//! takes the name. Messages are framed as `[name length: u8][sender
//! name][payload]`.
//!
//! ```
//! use ipc_core::mailbox::MailboxConfig;
//! use ipc_core::ports::{Port, PortSender};
//! # let pid = std::process::id();
//! # let (a, b) = (format!("doc-a-{pid}"), format!("doc-b-{pid}"));
//! let mut worker = Port::register(&a, &MailboxConfig::default())?;
//! let mut boss = Port::register(&b, &MailboxConfig::default())?;
//! boss.send_to(&a, b"job 1")?;
//! PortSender::new("client-7")?.send_to(&a, b"hello")?;
//! let hello = worker.recv_from("client-7", ipc_core::Deadline::Never)?;
//! assert_eq!(hello, b"hello");
//! let job = worker.recv()?; // kept aside while waiting for client-7
//! assert_eq!((job.from.as_str(), job.payload.as_slice()), (b.as_str(), &b"job 1"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::admin;
use crate::endpoint::{Receiver, Sender};
use crate::error::{
    AttachError, CorruptError, CreateError, OpenError, RecvError, SegmentError, SendError,
};
use crate::mailbox::{Mailbox, MailboxConfig};
use crate::peers::Role;
use crate::segment::{validate_name, MAX_NAME_LEN};
use crate::sync::Deadline;

/// Prefix of the mailboxes behind ports.
pub const PORT_PREFIX: &str = "port.";

/// Longest port name (so that the mailbox name stays valid).
pub const MAX_PORT_NAME: usize = 128;

/// Bytes of framing per message: length byte plus the longest name.
const FRAME_OVERHEAD: u32 = 1 + MAX_NAME_LEN as u32;

/// How long `register` lets a freshly created port wait for its owner to
/// attach before treating it as stale.
const CLAIM_PATIENCE: Duration = Duration::from_secs(1);

/// Name of the mailbox behind port `name`.
pub fn mailbox_name(name: &str) -> String {
    format!("{PORT_PREFIX}{name}")
}

fn validate_port_name(name: &str) -> Result<(), SegmentError> {
    validate_name(name)?;
    if name.len() > MAX_PORT_NAME {
        return Err(SegmentError::InvalidName {
            name: name.to_owned(),
            reason: format!("port names are at most {MAX_PORT_NAME} bytes"),
        });
    }
    Ok(())
}

/// Errors of registering a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A live process owns the name.
    #[error("port {name:?} is registered by live process {pid}")]
    NameTaken {
        /// The port name.
        name: String,
        /// The owner's pid.
        pid: u32,
    },
    /// The name is not valid.
    #[error(transparent)]
    Name(#[from] SegmentError),
    /// The mailbox could not be created.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// An existing mailbox of that name could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Attaching failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
}

/// A message received on a port, with its sender's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's name.
    pub from: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Sends to ports by name, stamping messages with its own name. Keeps one
/// link (sender) per destination.
#[derive(Debug)]
pub struct PortSender {
    me: String,
    links: HashMap<String, Sender>,
}

impl PortSender {
    /// A sender that signs its messages `me` (need not be registered).
    pub fn new(me: &str) -> Result<PortSender, SegmentError> {
        validate_port_name(me)?;
        Ok(PortSender {
            me: me.to_owned(),
            links: HashMap::new(),
        })
    }

    /// The name stamped on messages.
    pub fn name(&self) -> &str {
        &self.me
    }

    /// Largest payload port `to` accepts from us; `None` if no process has
    /// registered it. Does not attach.
    pub fn max_payload(&self, to: &str) -> Option<usize> {
        let mb = Mailbox::open(&mailbox_name(to)).ok()?;
        Some(mb.max_message().saturating_sub(1 + self.me.len()))
    }

    /// Sends `msg` to port `to`, waiting as its capacity says.
    /// `Disconnected` if no live process has registered `to`.
    pub fn send_to<M: AsRef<[u8]>>(&mut self, to: &str, msg: M) -> Result<(), SendError<M>> {
        self.send_to_until(to, msg, Deadline::Never)
    }

    /// Sends `msg` to port `to` if that needs no waiting.
    pub fn try_send_to<M: AsRef<[u8]>>(&mut self, to: &str, msg: M) -> Result<(), SendError<M>> {
        self.send_to_until(to, msg, Deadline::Now)
    }

    /// Sends `msg` to port `to` before `deadline`.
    pub fn send_to_until<M: AsRef<[u8]>>(
        &mut self,
        to: &str,
        msg: M,
        deadline: Deadline,
    ) -> Result<(), SendError<M>> {
        // A cached link may lead to a mailbox whose owner died and whose
        // name was registered again: on Disconnected, reopen once.
        let mut msg = msg;
        for attempt in 0..2 {
            if !self.links.contains_key(to) {
                let link = match Mailbox::open(&mailbox_name(to)) {
                    Ok(mb) => mb.sender(),
                    // Nobody registered the port (or its owner removed it).
                    Err(OpenError::Segment(SegmentError::NotFound(_))) => {
                        return Err(SendError::Disconnected(msg))
                    }
                    Err(e) => return Err(SendError::Unreachable(msg, format!("port {to:?}: {e}"))),
                };
                match link {
                    Ok(s) => {
                        self.links.insert(to.to_owned(), s);
                    }
                    Err(e) => return Err(SendError::Unreachable(msg, format!("port {to:?}: {e}"))),
                }
            }
            let link = self.links.get_mut(to).expect("just inserted");
            match send_framed(link, &self.me, msg, deadline) {
                Err(SendError::Disconnected(m)) if attempt == 0 => {
                    self.links.remove(to);
                    msg = m;
                }
                other => return other,
            }
        }
        Err(SendError::Disconnected(msg))
    }
}

fn send_framed<M: AsRef<[u8]>>(
    link: &mut Sender,
    me: &str,
    msg: M,
    deadline: Deadline,
) -> Result<(), SendError<M>> {
    let payload = msg.as_ref();
    let len = 1 + me.len() + payload.len();
    let max = link.max_message();
    if len > max {
        let (len, max) = (payload.len(), max.saturating_sub(1 + me.len()));
        return Err(SendError::TooLarge { msg, len, max });
    }
    let tx = link.tx_mut();
    let mut claimed = match tx.claim(len, deadline) {
        Ok(c) => c,
        Err(stop) => return Err(crate::channel::stop_to_send(stop, deadline, msg)),
    };
    let buf = claimed.buf(&tx.ep.q);
    buf[0] = me.len() as u8;
    buf[1..1 + me.len()].copy_from_slice(me.as_bytes());
    buf[1 + me.len()..len].copy_from_slice(payload);
    tx.commit(claimed, len, deadline)
        .map_err(|stop| crate::channel::stop_to_send(stop, deadline, msg))
}

/// (sender's name, payload) of a framed port message, in place.
fn split_frame(bytes: &[u8]) -> Result<(&[u8], &[u8]), RecvError> {
    let n = *bytes
        .first()
        .ok_or_else(|| CorruptError("empty port message".into()))? as usize;
    if bytes.len() < 1 + n {
        return Err(CorruptError(format!("port message frame of {} bytes", bytes.len())).into());
    }
    Ok((&bytes[1..1 + n], &bytes[1 + n..]))
}

fn unframe(bytes: &[u8]) -> Result<Message, RecvError> {
    let (from, payload) = split_frame(bytes)?;
    Ok(Message {
        from: String::from_utf8_lossy(from).into_owned(),
        payload: payload.to_vec(),
    })
}

/// A registered port: the receiving end of direct addressing, which can
/// also send to other ports under its own name. Releases the name on drop.
#[derive(Debug)]
pub struct Port {
    name: String,
    rx: Receiver,
    out: PortSender,
    stash: VecDeque<Message>,
    /// The mailbox file we created, so that we never remove another's.
    file: Option<FileId>,
}

/// Identifies a file in /dev/shm (device and inode).
type FileId = (u64, u64);

fn file_id(mb_name: &str) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(std::path::Path::new(crate::segment::SHM_DIR).join(mb_name)).ok()?;
    Some((m.dev(), m.ino()))
}

/// Removes mailbox `mb_name` only if it is still the file `expected`
/// (another registrant may have replaced it meanwhile).
fn unlink_if_same(mb_name: &str, expected: Option<FileId>) -> Result<(), SegmentError> {
    if expected.is_none() || file_id(mb_name) != expected {
        return Ok(());
    }
    match Mailbox::unlink(mb_name) {
        Ok(()) | Err(SegmentError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Port {
    /// Registers port `name` for this process. Fails with `NameTaken` if a
    /// live process holds it; a name left by a dead process is taken over.
    /// `config.max_message` is the largest payload.
    pub fn register(name: &str, config: &MailboxConfig) -> Result<Port, PortError> {
        validate_port_name(name)?;
        let mb_name = mailbox_name(name);
        let framed = MailboxConfig {
            max_message: config.max_message.saturating_add(FRAME_OVERHEAD),
            ..*config
        };
        let started = std::time::Instant::now();
        loop {
            match Mailbox::create(&mb_name, &framed) {
                Ok(mb) => {
                    let rx = mb.receiver()?;
                    return Ok(Port {
                        name: name.to_owned(),
                        rx,
                        out: PortSender::new(name)?,
                        stash: VecDeque::new(),
                        file: file_id(&mb_name),
                    });
                }
                Err(CreateError::Segment(SegmentError::AlreadyExists(_))) => {}
                Err(e) => return Err(e.into()),
            }
            let inspected = file_id(&mb_name);
            let status = match admin::inspect(&mb_name) {
                Ok(status) => status,
                // Removed meanwhile: try again.
                Err(OpenError::Segment(SegmentError::NotFound(_))) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(owner) = status
                .peers
                .iter()
                .find(|p| p.alive && p.role == Some(Role::Consumer))
            {
                return Err(PortError::NameTaken {
                    name: name.to_owned(),
                    pid: owner.pid,
                });
            }
            // Freshly created by another registrant who has not attached
            // yet? Give it a moment before calling the name stale.
            if status.consumers_total == 0 && started.elapsed() < CLAIM_PATIENCE {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            log::info!("port {name}: releasing the name left by a dead process");
            // Only the stale mailbox we looked at: another registrant may
            // have replaced it with a live one meanwhile.
            unlink_if_same(&mb_name, inspected)?;
        }
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reports `Disconnected` only after at least `n` senders have attached
    /// and all have gone (default 1).
    pub fn set_min_senders(&mut self, n: u32) {
        self.rx.set_min_producers(n);
    }

    /// Receives the next message from anyone, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Message, RecvError> {
        self.recv_until(Deadline::Never)
    }

    /// Receives a message from anyone if one is queued now.
    pub fn try_recv(&mut self) -> Result<Message, RecvError> {
        self.recv_until(Deadline::Now)
    }

    /// Receives from anyone, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message, RecvError> {
        self.recv_until(Deadline::after(timeout))
    }

    /// Receives from anyone before `deadline`. Note that a port never sees
    /// end of stream while anyone may still send: `Disconnected` only comes
    /// once senders attached and all have gone.
    pub fn recv_until(&mut self, deadline: Deadline) -> Result<Message, RecvError> {
        if let Some(m) = self.stash.pop_front() {
            return Ok(m);
        }
        self.rx.recv_with_until(deadline, unframe)?
    }

    /// Receives from anyone before `deadline` and hands the sender's name
    /// and the payload to `f` in place, in the shared slot (zero copy). The
    /// slot is released when `f` returns, so a receiver killed inside `f`
    /// loses only this message, and it is counted (`lost_reads`). Messages
    /// kept aside by [`Port::recv_from`] come first (those are copies).
    pub fn recv_with_until<R>(
        &mut self,
        deadline: Deadline,
        f: impl FnOnce(&str, &[u8]) -> R,
    ) -> Result<R, RecvError> {
        if let Some(m) = self.stash.pop_front() {
            return Ok(f(&m.from, &m.payload));
        }
        self.rx.recv_with_until(deadline, |bytes| {
            let (from, payload) = split_frame(bytes)?;
            Ok(f(&String::from_utf8_lossy(from), payload))
        })?
    }

    /// Receives the next message sent by `from`, before `deadline`.
    /// Messages from others that arrive meanwhile are kept, in order, for
    /// later `recv` calls.
    pub fn recv_from(&mut self, from: &str, deadline: Deadline) -> Result<Vec<u8>, RecvError> {
        if let Some(i) = self.stash.iter().position(|m| m.from == from) {
            return Ok(self.stash.remove(i).expect("index in range").payload);
        }
        loop {
            let m = self.rx.recv_with_until(deadline, unframe)??;
            if m.from == from {
                return Ok(m.payload);
            }
            self.stash.push_back(m);
        }
    }

    /// Sends to port `to`, signed with this port's name.
    pub fn send_to<M: AsRef<[u8]>>(&mut self, to: &str, msg: M) -> Result<(), SendError<M>> {
        self.out.send_to(to, msg)
    }

    /// Sends to port `to` before `deadline`.
    pub fn send_to_until<M: AsRef<[u8]>>(
        &mut self,
        to: &str,
        msg: M,
        deadline: Deadline,
    ) -> Result<(), SendError<M>> {
        self.out.send_to_until(to, msg, deadline)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // Only if the name still leads to our mailbox.
        let _ = unlink_if_same(&mailbox_name(&self.name), self.file);
    }
}
