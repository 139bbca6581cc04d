//! The delivering side of a link: takes data frames from remote uplinks
//! (origins), puts each message into a local mailbox exactly once and in
//! order per origin, and acknowledges with credits, the mailbox's free
//! room, so the far senders wait when it is full. Used by an exporter
//! (messages of remote proxies into the exported mailbox) and by a puller
//! (messages of a far exported mailbox into the puller's local one).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipc_core::mailbox::{Capacity, Mailbox};

use ipc_core::{Deadline, Role, SendError, Sender};
use zenoh::{Session, Wait};

use crate::delivered::Delivered;
use crate::test_hook::Countdown;
use crate::wire::{self, Ack, FLAG_CANCEL, FLAG_CANCELLED, FLAG_RECEIVERS, FLAG_SENDERS_GONE};
use crate::{status, Options};

/// Frames waiting for the exporter's loop; when full, a frame is dropped
/// and its origin resends it (it is still in that origin's journal).
const FRAME_QUEUE: usize = 256;
/// Messages an unbounded mailbox grants a remote origin at a time.
const UNBOUNDED_WINDOW: u64 = 1024;
/// How long the loop sleeps at most between looks at the mailbox.
const TICK: Duration = Duration::from_millis(10);
/// ... and while an origin waits for credits.
const STARVED_TICK: Duration = Duration::from_micros(500);
/// Acknowledgements repeat this often even without progress (credits
/// grow as the mailbox drains; a lost acknowledgement is replaced).
const ACK_EVERY: Duration = Duration::from_millis(100);
/// A rendezvous offer waits this long for a receiver before the loop
/// looks at its other work (then offers again).
const OFFER: Duration = Duration::from_millis(20);
/// How long one look at the mailbox's last tag waits for a sender's
/// claim to end (a dead sender's is settled within a liveness period);
/// nothing is delivered until the look succeeds.
const TAG_WAIT: Duration = Duration::from_millis(500);
/// For the tests only: the bridge kills itself (SIGKILL) right after
/// publishing this many messages into mailboxes, before recording the
/// last one: the delivering side's window, which a kill from outside
/// hits only in a few runs of a hundred.
const KILL_AFTER_ENV: &str = "IPC_BRIDGE_TEST_KILL_AFTER_DELIVERING";
/// For the tests only: the bridge kills itself a moment after it starts
/// offering this many-th message to a rendezvous mailbox, while the offer
/// waits for a receiver (a test's receiver that pauses then leaves it
/// there at the kill).
const KILL_WHILE_OFFERING_ENV: &str = "IPC_BRIDGE_TEST_KILL_WHILE_OFFERING";
/// How long after starting that offer.
const KILL_WHILE_OFFERING_AFTER: Duration = Duration::from_millis(5);

/// The tag a message of `origin` carries into a mailbox: stored
/// with its commit (`Sender::send_tagged_batch_until`), so that a bridge
/// restarted after a kill between the commit and its record in the
/// delivered table learns from the mailbox that the message went in.
/// Keyed by the table's secret `salt`: otherwise a peer could pick an
/// origin id whose first message's tag equals another origin's next one.
fn tag_of(salt: u64, origin: u64, seq: u64) -> u64 {
    mix(mix(salt ^ origin) ^ mix(seq.wrapping_add(SEQ_SPREAD))).max(1)
}

/// Added to a sequence number before it is mixed (so that 0 is no fixed
/// point): the golden ratio's fraction, as splitmix64 steps.
const SEQ_SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sender the far senders' messages go in with, attached if it is not.
fn attached<'s>(
    sender: &'s mut Option<Sender>,
    mailbox: &Mailbox,
    name: &str,
) -> Result<&'s mut Sender> {
    if sender.is_none() {
        let tx = mailbox
            .sender()
            .with_context(|| format!("attaching to {name} as the far senders' proxy"))?;
        *sender = Some(tx);
    }
    Ok(sender.as_mut().expect("attached"))
}

/// Reads the mailbox's last tag and settles the table with it (see
/// [`settle_last_tag`]); false if it must be looked at again (a sender held
/// its claim all the time, or the lock word was not one).
fn settle(
    tx: &mut Sender,
    origins: &mut HashMap<u64, Origin>,
    delivered: &mut Delivered,
    salt: u64,
    name: &str,
) -> bool {
    match tx.last_tag(Deadline::after(TAG_WAIT)) {
        Ok(tag) => settle_last_tag(origins, delivered, salt, tag),
        Err(SendError::Timeout(())) => {
            log::info!("{name}: a sender holds its claim; looking at the last tag again");
            return false;
        }
        Err(e @ SendError::Unsupported(..)) => {
            log::warn!("{name}: {e}: a message delivered just before a kill may come twice")
        }
        Err(e) => {
            // (A scribbled lock word is freed by reaping.)
            log::warn!("{name}: the last tag cannot be read ({e}): looking again");
            return false;
        }
    }
    true
}

/// Records the message the mailbox's last tag names if the table does not
/// have it yet (this bridge's predecessor was killed between putting it
/// in and recording it), and drops it from what waits to be delivered.
fn settle_last_tag(
    origins: &mut HashMap<u64, Origin>,
    delivered: &mut Delivered,
    salt: u64,
    tag: u64,
) {
    if tag == 0 {
        return;
    }
    for origin in delivered.origins() {
        let next = delivered.last(origin) + 1;
        if tag_of(salt, origin, next) != tag {
            continue;
        }
        log::info!(
            "origin {origin:016x}: message {next} went into the mailbox before a restart without being recorded: recorded now"
        );
        delivered.record(origin, next);
        if let Some(org) = origins.get_mut(&origin) {
            while org.pending.front().is_some_and(|(seq, _)| *seq <= next) {
                org.pending.pop_front();
                org.repeats += 1;
            }
            org.changed = true;
        }
    }
}

/// What the exporter knows of one origin (a remote proxy's journal).
struct Origin {
    /// Messages received in order, not yet in the mailbox.
    pending: VecDeque<(u64, Vec<u8>)>,
    /// When a frame last came.
    heard: Instant,
    /// The origin's journal holds messages up to this sequence number.
    written: u64,
    /// Its local senders have all gone.
    senders_gone: bool,
    /// Messages waiting at the origin to be taken (its demand).
    waiting: u32,
    /// Highest sequence number granted so far, and in the last ack.
    granted: u64,
    last_credit: u64,
    /// Something changed since the last acknowledgement.
    changed: bool,
    last_ack: Option<Instant>,
    repeats: u64,
    gaps: u64,
    /// The message offered last (rendezvous; 0: none yet).
    offered: u64,
}

/// What one downlink delivers into, and where its frames come from.
pub struct Spec {
    /// The mailbox messages are delivered into (the bridge attaches as a
    /// sender while an origin has something for it).
    pub target: Mailbox,
    /// Name in logs and of the status file.
    pub label: String,
    /// First status line ("exported by bridge A").
    pub title: String,
    /// The table of what was delivered per origin.
    pub delivered: Delivered,
    /// Key expression of the data frames (the last chunk is the origin).
    pub data_pattern: String,
    /// Key of the acknowledgements to an origin.
    pub ack_key: Box<dyn Fn(u64) -> String + Send>,
}

/// Runs the downlink until `stop()` says so.
pub fn run(
    session: &Session,
    spec: Spec,
    o: &Options,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let Spec {
        target: mailbox,
        label,
        title,
        mut delivered,
        data_pattern,
        ack_key,
    } = spec;
    let name = label.as_str();
    let capacity = mailbox.capacity();
    let max = mailbox.max_message();

    let (tx, frames) = sync_channel::<(u64, Vec<u8>)>(FRAME_QUEUE);
    let _sub = session
        .declare_subscriber(data_pattern)
        .callback(move |sample| {
            if let Some(origin) = wire::origin_of(sample.key_expr().as_str()) {
                let _ = tx.try_send((origin, sample.payload().to_bytes().into_owned()));
            }
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("subscribing to {name}'s data: {e}"))?;

    let mut origins: HashMap<u64, Origin> = HashMap::new();
    let mut sender: Option<Sender> = None;
    // Every delivery is tagged: until the mailbox's last tag was read,
    // what the table says of the message delivered last may be one
    // behind. Until then the table is not written (`take_frame` defers
    // what would write it): a write could evict the entry the tag names.
    let mut tag_settled = false;
    let salt = delivered
        .salt()
        .with_context(|| format!("choosing {name}'s tag salt"))?;
    let mut kill_after = Countdown::from_env(KILL_AFTER_ENV);
    let mut kill_while_offering = Countdown::from_env(KILL_WHILE_OFFERING_ENV);
    let mut receivers_gone = false;
    let mut last_status = Instant::now() - Duration::from_secs(1);
    let mut starved = false;
    let mut turn = 0usize;
    while !stop() {
        // An origin that has used all its credit waits for the mailbox to
        // drain: look at it more often then.
        let tick = if starved { STARVED_TICK } else { TICK };
        let arrived = match frames.recv_timeout(tick) {
            Ok(frame) => Some(frame),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if !tag_settled && (arrived.is_some() || !origins.is_empty()) {
            // The last tag, before any frame may write the table and
            // before anything is delivered (looked at again until read).
            let tx = attached(&mut sender, &mailbox, name)?;
            tag_settled = settle(tx, &mut origins, &mut delivered, salt, name);
        }
        if let Some((origin, bytes)) = arrived {
            let settled = tag_settled;
            take_frame(&mut origins, &mut delivered, origin, &bytes, max, settled);
            for (origin, bytes) in frames.try_iter().take(FRAME_QUEUE) {
                take_frame(&mut origins, &mut delivered, origin, &bytes, max, settled);
            }
        }
        let st = mailbox.status();
        if st.live(Role::Consumer) > 0 {
            receivers_gone = false;
        }
        // Deliver, origin by origin (each one's order is kept).
        let mut keys: Vec<u64> = origins.keys().copied().collect();
        keys.sort_unstable();
        for key in keys.iter().take_while(|_| tag_settled) {
            let org = origins.get_mut(key).expect("listed");
            if org.pending.is_empty() {
                continue;
            }
            let tx = attached(&mut sender, &mailbox, name)?;
            let result = match capacity {
                Capacity::Zero => {
                    let hooks = (&mut kill_while_offering, &mut kill_after);
                    deliver_offer(tx, org, &mut delivered, *key, salt, hooks)
                }
                _ => deliver_batch(tx, org, &mut delivered, *key, salt, &mut kill_after),
            };
            if let Err(e) = result {
                if matches!(e, SendError::Disconnected(_)) {
                    receivers_gone = true;
                }
                let fatal = !matches!(
                    e,
                    SendError::Full(_) | SendError::Timeout(_) | SendError::Disconnected(_)
                );
                if fatal {
                    log::warn!("delivering to {name}: {e}");
                }
            }
        }
        // Acknowledge, with credits: the mailbox's room (as it is now,
        // after this turn's deliveries), less what earlier credits still
        // allow origins to send, shared among the origins that have used
        // theirs up and have messages waiting. So all origins together are
        // never granted more than the room.
        let st = mailbox.status();
        let queued: u64 = origins.values().map(|o| o.pending.len() as u64).sum();
        let room = match capacity {
            Capacity::Bounded(n) => u64::from(n).saturating_sub(st.len + queued),
            Capacity::Zero => 0,
            Capacity::Unbounded => UNBOUNDED_WINDOW.saturating_sub(queued),
        };
        let now = Instant::now();
        let taken = |key: &u64, org: &Origin| delivered.last(*key) + org.pending.len() as u64;
        let reserved: u64 = origins
            .iter()
            .map(|(key, org)| org.granted.saturating_sub(taken(key, org)))
            .sum();
        let mut avail = room.saturating_sub(reserved);
        turn = turn.wrapping_add(1);
        let single = origins.len() == 1;
        let mut hungry: Vec<u64> = keys
            .iter()
            .copied()
            .filter(|key| {
                let org = &origins[key];
                // Wants credit: has used its own, and has messages waiting
                // or journaled beyond it (or is the only origin, which then
                // gets the room in advance, for latency).
                let wants = org.waiting > 0 || org.written > org.granted || single;
                wants && org.granted <= taken(key, org) && now - org.heard < o.disconnect_after
            })
            .collect();
        if !hungry.is_empty() {
            let n = hungry.len();
            hungry.rotate_left(turn % n);
        }
        starved = !hungry.is_empty() && avail == 0;
        let mut left = hungry.len() as u64;
        for key in hungry {
            let org = origins.get_mut(&key).expect("listed");
            let base = delivered.last(key) + org.pending.len() as u64;
            let share = match capacity {
                // One offer at a time per origin.
                Capacity::Zero => 1,
                _ => avail.div_ceil(left),
            };
            avail = avail.saturating_sub(share);
            left -= 1;
            org.granted = org.granted.max(base + share);
        }
        let receivers = !receivers_gone && (st.live(Role::Consumer) > 0 || st.consumers_total == 0);
        for key in &keys {
            let org = origins.get_mut(key).expect("listed");
            let last = delivered.last(*key);
            let pending = org.pending.len() as u64;
            org.granted = org.granted.max(last + pending);
            let credit = org.granted;
            let due = org.last_ack.is_none_or(|t| now - t >= ACK_EVERY);
            let more = credit != org.last_credit;
            if (org.changed || due || more) && now - org.heard < o.disconnect_after {
                let cancelled = (last > 0 && delivered.cancelled(*key) == last).then_some(last);
                let ack = Ack {
                    flags: if receivers { FLAG_RECEIVERS } else { 0 }
                        | if cancelled.is_some() {
                            FLAG_CANCELLED
                        } else {
                            0
                        },
                    delivered: last,
                    credit,
                    received: last + pending,
                };
                if let Err(e) = session.put(ack_key(*key), ack.encode()).wait() {
                    log::debug!("acknowledging to {key:016x}: {e}");
                }
                org.changed = false;
                org.last_credit = credit;
                org.last_ack = Some(now);
            }
        }
        // An origin whose stream ended, or that was silent too long, is
        // done once everything it sent is in; with no origin left, the
        // proxy's sender goes, so the mailbox's receivers see the end.
        origins.retain(|key, org| {
            let done = org.pending.is_empty() && delivered.last(*key) >= org.written;
            !(done && now - org.heard > o.disconnect_after)
        });
        let idle = origins.iter().all(|(key, org)| {
            org.pending.is_empty()
                && (now - org.heard > o.disconnect_after
                    || (org.senders_gone && delivered.last(*key) >= org.written))
        });
        if idle && sender.take().is_some() {
            log::info!("{name}: every remote sender has gone");
        }
        if now - last_status >= Duration::from_millis(250) {
            last_status = now;
            let mut lines = vec![(
                "bridged",
                format!("{title}, {} remote origin(s)", origins.len()),
            )];
            for (key, org) in &origins {
                lines.push((
                    "  origin",
                    format!(
                        "{key:016x}: delivered up to {}, {} waiting for room, last frame {} ms ago, {} repeats dropped, {} out of order",
                        delivered.last(*key),
                        org.pending.len(),
                        (now - org.heard).as_millis(),
                        org.repeats,
                        org.gaps
                    ),
                ));
            }
            status::write(name, &lines);
        }
    }
    status::remove(name);
    Ok(())
}

/// Offers the next pending message of a rendezvous mailbox (one at a
/// time: the far sender waits for each), for up to [`OFFER`], tagged: an
/// offer taken carries its tag into the mailbox's last tag, one withdrawn
/// (timed out here, or by a restarted bridge after a kill) takes it away.
fn deliver_offer(
    tx: &mut Sender,
    org: &mut Origin,
    delivered: &mut Delivered,
    origin: u64,
    salt: u64,
    (kill_while_offering, kill_after): (&mut Countdown, &mut Countdown),
) -> Result<(), SendError<()>> {
    let Some((seq, msg)) = org.pending.pop_front() else {
        return Ok(());
    };
    if org.offered != seq {
        // Counted once per message, however often it is offered again.
        org.offered = seq;
        kill_while_offering.tick_later(KILL_WHILE_OFFERING_AFTER);
    }
    make_entry(delivered, origin);
    let offer = [(tag_of(salt, origin, seq), msg)];
    match tx.send_tagged_batch_until(offer, Deadline::after(OFFER)) {
        Ok(_) => {
            kill_after.tick();
            delivered.record(origin, seq);
            org.changed = true;
            Ok(())
        }
        Err(e) => Err(keep_pending(org, seq, e.error)),
    }
}

/// Gives `origin` its table entry before its first message, so that the
/// last tag can name that message after a restart (`settle_last_tag`
/// looks at entries).
fn make_entry(delivered: &mut Delivered, origin: u64) {
    if !delivered.knows(origin) {
        delivered.record(origin, delivered.last(origin));
    }
}

/// Puts message `seq`, which `e` gives back, at the front of `org`'s
/// pending messages again; the error, without it.
fn keep_pending(org: &mut Origin, seq: u64, e: SendError<Vec<u8>>) -> SendError<()> {
    let mut back = None;
    let e = e.map(|msg| back = Some(msg));
    org.pending
        .push_front((seq, back.expect("the error carries the message")));
    e
}

/// Puts every pending message that fits now into the mailbox with one
/// batch, recording each as delivered right after it was published: the
/// batch asks for the next message only once the one before is in, and
/// wakes the receivers only after the last is recorded. A bridge killed
/// between a publication and its record learns from the mailbox's last
/// tag, after a restart, that the message went in (`settle_last_tag`).
fn deliver_batch(
    tx: &mut Sender,
    org: &mut Origin,
    delivered: &mut Delivered,
    origin: u64,
    salt: u64,
    kill_after: &mut Countdown,
) -> Result<(), SendError<()>> {
    make_entry(delivered, origin);
    let mut batch = Recording {
        pending: &mut org.pending,
        delivered,
        origin,
        given: None,
        salt,
        kill_after,
    };
    let result = tx.send_tagged_batch_until(&mut batch, Deadline::Now);
    let given = batch.given.take();
    match result {
        Ok(n) => {
            org.changed |= n > 0;
            Ok(())
        }
        Err(e) => {
            org.changed |= e.sent > 0;
            let seq = given.expect("the failed message was given");
            Err(keep_pending(org, seq, e.error))
        }
    }
}

/// The pending messages of one origin as a batch to send, each with its
/// tag, recording each as delivered when the next is asked for (it was
/// published by then).
struct Recording<'a> {
    pending: &'a mut VecDeque<(u64, Vec<u8>)>,
    delivered: &'a mut Delivered,
    origin: u64,
    /// The message handed out last, not yet recorded.
    given: Option<u64>,
    /// The salt of the tags.
    salt: u64,
    kill_after: &'a mut Countdown,
}

impl Iterator for Recording<'_> {
    type Item = (u64, Vec<u8>);

    fn next(&mut self) -> Option<(u64, Vec<u8>)> {
        if let Some(seq) = self.given.take() {
            self.kill_after.tick();
            self.delivered.record(self.origin, seq);
        }
        let (seq, msg) = self.pending.pop_front()?;
        self.given = Some(seq);
        Some((tag_of(self.salt, self.origin, seq), msg))
    }
}

/// Files one frame's messages: repeats are dropped, the next in order
/// queued, anything after a gap dropped (the origin resends it).
fn take_frame(
    origins: &mut HashMap<u64, Origin>,
    delivered: &mut Delivered,
    origin: u64,
    bytes: &[u8],
    max: usize,
    settled: bool,
) {
    let frame = match wire::decode_data(bytes, max) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("from origin {origin:016x}: {e}");
            return;
        }
    };
    let org = origins.entry(origin).or_insert_with(|| Origin {
        pending: VecDeque::new(),
        heard: Instant::now(),
        written: 0,
        senders_gone: false,
        waiting: 0,
        granted: 0,
        last_credit: 0,
        changed: true,
        last_ack: None,
        repeats: 0,
        gaps: 0,
        offered: 0,
    });
    org.heard = Instant::now();
    org.changed |= !frame.messages.is_empty();
    org.written = org
        .written
        .max(frame.first_seq - 1 + frame.messages.len() as u64);
    org.senders_gone = frame.flags & FLAG_SENDERS_GONE != 0;
    org.waiting = frame.waiting;
    if !settled && (frame.flags & FLAG_CANCEL != 0 || delivered.last(origin) < frame.acked) {
        // Both would write the table before the last tag was read (see
        // `run`): left for the origin's next frame (it repeats both).
        return;
    }
    // The origin's journal was acknowledged up to `acked`, so everything up
    // to it was delivered here. A table that does not know the origin, or
    // is behind it (this host lost its state: a reboot emptied /dev/shm, or
    // the origin was forgotten to make room), starts after it; otherwise
    // the resent messages would wait for earlier ones that never come.
    if org.pending.is_empty() && delivered.last(origin) < frame.acked {
        log::warn!(
            "origin {origin:016x}: this side had delivered up to {}, the origin says {} were acknowledged: continuing after {}",
            delivered.last(origin),
            frame.acked,
            frame.acked
        );
        delivered.record(origin, frame.acked);
    }
    if frame.flags & FLAG_CANCEL != 0 {
        // Withdraw message `first_seq` unless it is in the mailbox already
        // (then the acknowledgement says delivered, without the flag).
        let seq = frame.first_seq;
        if delivered.last(origin) < seq {
            org.pending.retain(|(s, _)| *s < seq);
            if org.pending.is_empty() && delivered.last(origin) == seq - 1 {
                delivered.record_cancelled(origin, seq);
            }
        }
        org.changed = true;
        return;
    }
    let mut next = delivered.last(origin) + org.pending.len() as u64 + 1;
    for (i, msg) in frame.messages.iter().enumerate() {
        let seq = frame.first_seq + i as u64;
        if seq < next {
            org.repeats += 1;
        } else if seq > next || seq > org.granted {
            // A gap (a frame lost on the way), or beyond the credit given
            // (a restarted exporter has given none yet): the origin
            // resends it, so what waits here stays bounded by credits.
            org.gaps += 1;
            break;
        } else {
            org.pending.push_back((seq, msg.to_vec()));
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(tag: &str) -> (std::path::PathBuf, Delivered) {
        let path = std::env::temp_dir().join(format!("ipcb-dl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let d = Delivered::open_or_create(&path).unwrap();
        (path, d)
    }

    #[test]
    fn a_peer_cannot_choose_an_origin_whose_tag_names_another_origins_next_message() {
        // Review of 409a297: with an unkeyed hash, origin O chosen as
        // below had tag(O, 1) == tag(A, 42), so after any restart A's
        // message 42, never delivered, was taken for delivered (lost).
        const C: u64 = SEQ_SPREAD;
        let (path, mut d) = table("forge");
        let salt = d.salt().unwrap();
        assert_eq!(d.salt().unwrap(), salt, "chosen once");
        let a = 0x1234_5678_9abc_def0u64;
        d.record(a, 41);
        let o = a ^ mix(42u64.wrapping_add(C)) ^ mix(1u64.wrapping_add(C));
        assert_ne!(tag_of(salt, o, 1), tag_of(salt, a, 42));
        d.record(o, 1);
        let mut origins = HashMap::new();
        settle_last_tag(&mut origins, &mut d, salt, tag_of(salt, o, 1));
        let (last_a, last_o) = (d.last(a), d.last(o));
        std::fs::remove_file(&path).unwrap();
        assert_eq!((last_a, last_o), (41, 1));
    }

    #[test]
    fn no_frame_writes_the_table_before_the_last_tag_is_read() {
        // Review of 409a297: a full table, A killed between publishing 7
        // and recording it; the first frame after the restart came from
        // an origin the table forgot and was recorded before the settle,
        // evicting A, whose message 7 then went in twice.
        let (path, mut d) = table("evict");
        let salt = d.salt().unwrap();
        let a = 1000u64;
        d.record(a, 6);
        for o in 1..crate::delivered::ORIGINS as u64 {
            d.record(2000 + o, 1);
        }
        let mut origins = HashMap::new();
        let frame = wire::DataFrame::new(6, 5, 0, 0).into_bytes();
        take_frame(&mut origins, &mut d, 999_999, &frame, 1024, false);
        assert!(!d.knows(999_999), "written before the settle");
        settle_last_tag(&mut origins, &mut d, salt, tag_of(salt, a, 7));
        let (known, last) = (d.knows(a), d.last(a));
        // Settled, the same frame is taken as before.
        take_frame(&mut origins, &mut d, 999_999, &frame, 1024, true);
        let caught_up = d.last(999_999);
        std::fs::remove_file(&path).unwrap();
        assert!(known && last == 7, "known {known}, last {last}");
        assert_eq!(caught_up, 5);
    }
}
