//! What bridges say to each other: key expressions and the two frames
//! (data, acknowledgement), encoded little-endian and validated on
//! receipt. A frame that does not decode is dropped (and logged): the
//! sender's journal resends what was not acknowledged, so a garbled frame
//! costs time, never a message.

use std::fmt;

use ipc_core::mailbox::Capacity;

/// First bytes of every frame: "IPB" and the protocol version.
const MAGIC: u32 = u32::from_le_bytes(*b"IPB2");
const KIND_DATA: u8 = 1;
const KIND_ACK: u8 = 2;
const DATA_HEADER: usize = 32;
const ACK_LEN: usize = 32;

/// Data frame flag: the proxy's local senders have all gone and everything
/// they sent is in this or an earlier frame (end of this origin's stream).
pub const FLAG_SENDERS_GONE: u8 = 1;
/// Data frame flag: withdraw message `first_seq` (a rendezvous offer whose
/// sender is to be told `Disconnected`), unless it was delivered already.
pub const FLAG_CANCEL: u8 = 2;
/// Acknowledgement flag: the exported mailbox has live receivers, or has
/// not had any yet (so a send would wait, not fail).
pub const FLAG_RECEIVERS: u8 = 1;
/// Acknowledgement flag: message `delivered` was withdrawn at the origin's
/// request, not delivered.
pub const FLAG_CANCELLED: u8 = 2;

/// Key expression root of everything the bridges publish.
const ROOT: &str = "ipcb";

/// The liveliness token an exporting bridge holds for `mailbox`; the key
/// also says how the mailbox is made, so an importer learns it from the
/// token alone: `ipcb/<mailbox>/alive/<bridge>/<capacity>/<max message>`.
pub fn alive_key(mailbox: &str, bridge: &str, capacity: Capacity, max_message: usize) -> String {
    format!(
        "{ROOT}/{mailbox}/alive/{bridge}/{}/{max_message}",
        capacity_word(capacity)
    )
}

/// Every exporter's token for `mailbox`.
pub fn alive_pattern(mailbox: &str) -> String {
    format!("{ROOT}/{mailbox}/alive/**")
}

/// Data frames of one origin (a proxy's journal) for `mailbox`.
pub fn data_key(mailbox: &str, origin: u64) -> String {
    format!("{ROOT}/{mailbox}/data/{origin:016x}")
}

/// Data frames of every origin for `mailbox`.
pub fn data_pattern(mailbox: &str) -> String {
    format!("{ROOT}/{mailbox}/data/*")
}

/// Acknowledgements to one origin.
pub fn ack_key(mailbox: &str, origin: u64) -> String {
    format!("{ROOT}/{mailbox}/ack/{origin:016x}")
}

/// The channel of messages pulled from `mailbox` by `puller`: data and
/// acknowledgement keys are made from it as from a mailbox's name.
pub fn pull_channel(mailbox: &str, puller: u64) -> String {
    format!("{mailbox}/pull/{puller:016x}")
}

/// The liveliness token a pulling bridge holds for `mailbox`.
pub fn puller_key(mailbox: &str, puller: u64, bridge: &str) -> String {
    format!("{ROOT}/{mailbox}/puller/{puller:016x}/{bridge}")
}

/// Every puller's token for `mailbox`.
pub fn puller_pattern(mailbox: &str) -> String {
    format!("{ROOT}/{mailbox}/puller/*/*")
}

/// The puller and its bridge's name, from a token made by [`puller_key`].
pub fn parse_puller(mailbox: &str, key: &str) -> Option<(u64, String)> {
    let rest = key.strip_prefix(&format!("{ROOT}/{mailbox}/puller/"))?;
    let (id, bridge) = rest.split_once('/')?;
    let id = origin_of(&format!("x/{id}"))?;
    (!bridge.is_empty() && !bridge.contains('/')).then(|| (id, bridge.to_owned()))
}

/// The origin named by the last chunk of a data key.
pub fn origin_of(key: &str) -> Option<u64> {
    let hex = key.rsplit('/').next()?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().filter(|&o| o != 0)
}

/// What an exporter's token says about its mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The exporting bridge's name.
    pub bridge: String,
    /// The mailbox's buffering.
    pub capacity: Capacity,
    /// Its largest message.
    pub max_message: usize,
}

/// Parses a token key made by [`alive_key`] for `mailbox`.
pub fn parse_alive(mailbox: &str, key: &str) -> Option<Exported> {
    let rest = key.strip_prefix(&format!("{ROOT}/{mailbox}/alive/"))?;
    let mut parts = rest.split('/');
    let bridge = parts.next()?.to_owned();
    let capacity = parse_capacity(parts.next()?)?;
    let max_message = parts.next()?.parse().ok()?;
    if parts.next().is_some() || bridge.is_empty() {
        return None;
    }
    Some(Exported {
        bridge,
        capacity,
        max_message,
    })
}

fn capacity_word(c: Capacity) -> String {
    match c {
        Capacity::Zero => "zero".to_owned(),
        Capacity::Unbounded => "unbounded".to_owned(),
        Capacity::Bounded(n) => n.to_string(),
    }
}

fn parse_capacity(s: &str) -> Option<Capacity> {
    match s {
        "zero" => Some(Capacity::Zero),
        "unbounded" => Some(Capacity::Unbounded),
        n => n.parse().ok().filter(|&n| n > 0).map(Capacity::Bounded),
    }
}

/// A frame that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame(pub String);

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad frame: {}", self.0)
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, BadFrame> {
    Err(BadFrame(why.into()))
}

/// Builds a data frame: messages `first_seq`, `first_seq + 1`, ... .
pub struct DataFrame {
    buf: Vec<u8>,
    count: u32,
}

impl DataFrame {
    /// An empty frame (a heartbeat if sent as is) starting at `first_seq`,
    /// from a journal acknowledged up to `acked`.
    /// `waiting`: messages the sender has waiting to be taken (its demand
    /// for credits).
    pub fn new(first_seq: u64, acked: u64, waiting: u32, flags: u8) -> DataFrame {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.push(KIND_DATA);
        buf.push(flags);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&first_seq.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&waiting.to_le_bytes());
        buf.extend_from_slice(&acked.to_le_bytes());
        DataFrame { buf, count: 0 }
    }

    /// Appends the next message.
    pub fn push(&mut self, msg: &[u8]) {
        self.buf
            .extend_from_slice(&(msg.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(msg);
        self.count += 1;
        self.buf[16..20].copy_from_slice(&self.count.to_le_bytes());
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Messages so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// True if the frame carries no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded frame.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A decoded data frame: its flags, first sequence number, and messages
/// (borrowed from the frame's bytes).
#[derive(Debug)]
pub struct Data<'a> {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Sequence number of the first message (1 for an origin's first).
    pub first_seq: u64,
    /// The sender's journal was acknowledged up to this one: a receiving
    /// side that does not know the origin (its table was lost) starts
    /// after it.
    pub acked: u64,
    /// Messages waiting at the sender to be taken.
    pub waiting: u32,
    /// The messages, in order.
    pub messages: Vec<&'a [u8]>,
}

/// Decodes and validates a data frame; no message may exceed `max_message`.
pub fn decode_data(bytes: &[u8], max_message: usize) -> Result<Data<'_>, BadFrame> {
    if bytes.len() < DATA_HEADER {
        return bad(format!("data frame of {} bytes is too short", bytes.len()));
    }
    if u32::from_le_bytes(bytes[0..4].try_into().unwrap()) != MAGIC || bytes[4] != KIND_DATA {
        return bad("not a data frame (magic or kind)");
    }
    let flags = bytes[5];
    let first_seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let count = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    let waiting = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    let acked = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
    if first_seq == 0 || first_seq > 1 << 62 || acked >= first_seq {
        return bad(format!(
            "sequence {first_seq} (after {acked} acknowledged) out of range"
        ));
    }
    let mut messages = Vec::new();
    let mut at = DATA_HEADER;
    for i in 0..count {
        let Some(len) = bytes.get(at..at + 4) else {
            return bad(format!("message {i} of {count}: length cut off"));
        };
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len > max_message {
            return bad(format!(
                "message {i} of {count}: {len} bytes, the mailbox takes at most {max_message}"
            ));
        }
        at += 4;
        let Some(msg) = bytes.get(at..at + len) else {
            return bad(format!("message {i} of {count}: {len} bytes cut off"));
        };
        messages.push(msg);
        at += len;
    }
    if at != bytes.len() {
        return bad(format!("{} bytes after the last message", bytes.len() - at));
    }
    Ok(Data {
        flags,
        first_seq,
        acked,
        waiting,
        messages,
    })
}

/// An acknowledgement: what the exporter delivered for one origin, and how
/// far that origin may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Every message up to this sequence number is in the mailbox (or was
    /// taken by a receiver); 0 before the first.
    pub delivered: u64,
    /// The origin may send messages up to this sequence number: the
    /// mailbox's free room, end to end.
    pub credit: u64,
    /// The exporter holds every message up to this one (delivered, or
    /// waiting for room); a sender resends after it if it stops growing.
    pub received: u64,
}

impl Ack {
    /// Encodes the acknowledgement.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ACK_LEN);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.push(KIND_ACK);
        b.push(self.flags);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.delivered.to_le_bytes());
        b.extend_from_slice(&self.credit.to_le_bytes());
        b.extend_from_slice(&self.received.to_le_bytes());
        b
    }

    /// Decodes and validates an acknowledgement.
    pub fn decode(bytes: &[u8]) -> Result<Ack, BadFrame> {
        if bytes.len() != ACK_LEN {
            return bad(format!("acknowledgement of {} bytes", bytes.len()));
        }
        if u32::from_le_bytes(bytes[0..4].try_into().unwrap()) != MAGIC || bytes[4] != KIND_ACK {
            return bad("not an acknowledgement (magic or kind)");
        }
        let delivered = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let credit = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
        let received = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
        if credit < delivered || received < delivered {
            return bad(format!(
                "credit {credit} or received {received} below delivered {delivered}"
            ));
        }
        Ok(Ack {
            flags: bytes[5],
            delivered,
            credit,
            received,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frames_round_trip_and_reject_garbage() {
        let mut f = DataFrame::new(7, 6, 3, FLAG_SENDERS_GONE);
        f.push(b"abc");
        f.push(b"");
        f.push(&[9; 100]);
        let bytes = f.into_bytes();
        let d = decode_data(&bytes, 100).unwrap();
        assert_eq!(d.first_seq, 7);
        assert_eq!((d.flags, d.acked, d.waiting), (FLAG_SENDERS_GONE, 6, 3));
        assert_eq!(d.messages, vec![&b"abc"[..], &b""[..], &[9; 100][..]]);
        assert!(decode_data(&bytes, 99)
            .unwrap_err()
            .0
            .contains("at most 99"));
        for cut in 0..bytes.len() {
            assert!(decode_data(&bytes[..cut], 100).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_data(&longer, 100).is_err());
        let mut zero = bytes;
        zero[8..16].copy_from_slice(&0u64.to_le_bytes());
        assert!(decode_data(&zero, 100).is_err());
    }

    #[test]
    fn acks_round_trip_and_reject_garbage() {
        let a = Ack {
            flags: FLAG_RECEIVERS,
            delivered: 5,
            credit: 69,
            received: 7,
        };
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
        let mut b = a.encode();
        b[16..24].copy_from_slice(&4u64.to_le_bytes());
        assert!(Ack::decode(&b).is_err());
        assert!(Ack::decode(&a.encode()[..31]).is_err());
        assert!(Ack::decode(&DataFrame::new(1, 0, 0, 0).into_bytes()).is_err());
    }

    #[test]
    fn keys_name_the_mailbox_and_the_origin() {
        let k = alive_key("jobs", "hostA", Capacity::Bounded(64), 4096);
        assert_eq!(k, "ipcb/jobs/alive/hostA/64/4096");
        assert_eq!(
            parse_alive("jobs", &k),
            Some(Exported {
                bridge: "hostA".into(),
                capacity: Capacity::Bounded(64),
                max_message: 4096
            })
        );
        assert_eq!(parse_alive("job", &k), None);
        assert_eq!(
            parse_alive("jobs", "ipcb/jobs/alive/h/zero/8")
                .unwrap()
                .capacity,
            Capacity::Zero
        );
        assert_eq!(parse_alive("jobs", "ipcb/jobs/alive/h/0/8"), None);
        assert_eq!(origin_of(&data_key("jobs", 0xabc)), Some(0xabc));
        assert_eq!(origin_of("ipcb/jobs/data/xyz"), None);
        assert_eq!(origin_of(&data_key("jobs", 0)), None);
        let k = puller_key("jobs", 0x42, "hostB");
        assert_eq!(parse_puller("jobs", &k), Some((0x42, "hostB".into())));
        assert_eq!(parse_puller("jobs", "ipcb/jobs/puller/zz/hostB"), None);
        assert_eq!(
            data_key(&pull_channel("jobs", 0x42), 7),
            "ipcb/jobs/pull/0000000000000042/data/0000000000000007"
        );
    }
}
