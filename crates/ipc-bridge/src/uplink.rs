//! The taking side of a link: a bridge takes messages from a local
//! mailbox only as far as the far side has room (credits), journals each
//! one before the mailbox lets go of it, sends them in frames, and forgets
//! them once the far side acknowledges. Used by a proxy (remote senders'
//! messages on their way to an exported mailbox) and by an exporter
//! serving a remote puller (messages of the exported mailbox on their way
//! to the puller's local mailbox).
//!
//! When the far side is unreachable for `--disconnect-after`, or has no
//! receivers, the bridge lets go of the source mailbox, so its senders get
//! `Disconnected` (what was journaled stays, and goes once it is back).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver as Events, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipc_core::mailbox::Mailbox;
use ipc_core::{Deadline, RecvError, Role};
use zenoh::pubsub::Publisher;
use zenoh::qos::CongestionControl;
use zenoh::{Session, Wait};

use crate::journal::{Journal, Taken};
use crate::wire::{Ack, DataFrame, FLAG_CANCEL, FLAG_CANCELLED, FLAG_RECEIVERS, FLAG_SENDERS_GONE};
use crate::{status, Options};

/// A data frame carries at most this many bytes of messages (a single
/// larger message travels alone), and fits one network write (Zenoh's
/// batch, less room for Zenoh's own headers) if that is smaller: a frame
/// larger than a batch is cut in pieces and put together again.
const FRAME_BYTES: usize = 48 * 1024;
/// For the tests only: the bridge kills itself (SIGKILL) inside the
/// receive callback of this many-th message taken from a proxy, before
/// journaling it: the taking side's window.
const KILL_WHILE_JOURNALING_ENV: &str = "IPC_BRIDGE_TEST_KILL_WHILE_JOURNALING";
/// ... and right after journaling it (with its index), before the proxy
/// lets go of it: the restarted bridge must drop the redelivered repeat.
const KILL_AFTER_JOURNALING_ENV: &str = "IPC_BRIDGE_TEST_KILL_AFTER_JOURNALING";
/// Room left in a batch for Zenoh's headers and the key.
const BATCH_HEADROOM: usize = 128;
/// Messages a frame carries at most.
const FRAME_MESSAGES: u32 = 1024;
/// Heartbeats tell the far side we are here, how far our journal goes,
/// and whether our local senders have gone.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// If the far side's count of messages received stays behind what was
/// sent for this long, the rest is sent again (a frame was lost, or the
/// far bridge restarted).
const RESEND_AFTER: Duration = Duration::from_secs(1);
/// Longest wait for a message or an acknowledgement in one turn.
const TURN: Duration = Duration::from_millis(10);

/// A far bridge's liveliness token appeared (`Up`) or went (`Down`);
/// the text is `BRIDGE|KEY`.
pub enum Liveliness {
    /// The token was declared (or was there when we subscribed).
    Up(String),
    /// The token went: its bridge left or is unreachable.
    Down(String),
}

/// The link to the far mailbox, and the journal of what is on its way.
struct Link {
    /// Logs and the status file say this.
    remote: String,
    title: String,
    journal: Journal,
    publisher: Publisher<'static>,
    acks: Events<Vec<u8>>,
    tokens: Events<Liveliness>,
    alive: HashSet<String>,
    far_bridge: String,
    /// Highest sequence number the far side lets us send.
    credit: u64,
    /// Highest sequence number put on the wire.
    sent: u64,
    /// The far side's `received`, and since when it has not grown.
    received: u64,
    stalled_since: Instant,
    receivers: bool,
    down_since: Option<Instant>,
    last_ack: Option<Instant>,
    last_heartbeat: Instant,
    /// Data frames and messages put on the wire (resends included).
    frames: u64,
    framed: u64,
    senders_gone: bool,
    /// Messages waiting in the source mailbox (our demand for credits).
    waiting: u32,
    disconnect_after: Duration,
    /// Bytes of messages a frame carries at most.
    frame_bytes: usize,
}

impl Link {
    /// Takes in what the far side said.
    fn pump(&mut self) {
        while let Ok(ev) = self.tokens.try_recv() {
            self.on_liveliness(ev);
        }
        while let Ok(bytes) = self.acks.try_recv() {
            self.take_ack(&bytes);
        }
    }

    fn on_liveliness(&mut self, ev: Liveliness) {
        {
            match ev {
                Liveliness::Up(bridge) => {
                    if self.alive.is_empty() {
                        log::info!("{}: bridge {bridge} is reachable", self.remote);
                        // A new far session (maybe a restarted bridge): it
                        // gives credits anew, and gets what it lacks again.
                        self.credit = self.journal.acked();
                        self.sent = self.journal.acked();
                    }
                    self.far_bridge = bridge.split('|').next().unwrap_or("").to_owned();
                    self.alive.insert(bridge);
                    self.down_since = None;
                }
                Liveliness::Down(bridge) => {
                    self.alive.remove(&bridge);
                    if self.alive.is_empty() {
                        log::warn!("{}: bridge {bridge} is unreachable", self.remote);
                        self.down_since = Some(Instant::now());
                    }
                }
            }
        }
    }

    fn take_ack(&mut self, bytes: &[u8]) {
        let ack = match Ack::decode(bytes) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("{}: {e}", self.remote);
                return;
            }
        };
        let withdrawn = ack.delivered;
        if ack.flags & FLAG_CANCELLED != 0
            && withdrawn > self.journal.withdrawn()
            && withdrawn > self.journal.acked()
            && withdrawn <= self.journal.written()
        {
            // In the journal, not in memory: after a restart the
            // acknowledgement alone would pass for a delivery. Only for a
            // message of ours not acknowledged yet (a late repeat of an
            // older withdrawal must not overwrite a newer one).
            self.journal.set_withdrawn(withdrawn);
        }
        if let Err(e) = self.journal.ack(ack.delivered) {
            log::warn!("{}: ignoring an acknowledgement: {e}", self.remote);
            return;
        }
        let now = Instant::now();
        self.last_ack = Some(now);
        self.credit = ack.credit;
        self.receivers = ack.flags & FLAG_RECEIVERS != 0;
        if ack.received != self.received {
            self.received = ack.received;
            self.stalled_since = now;
        }
        self.sent = self.sent.max(self.journal.acked());
    }

    /// True if local senders should be able to send: the far bridge is
    /// reachable (or was, less than `disconnect_after` ago) and its
    /// mailbox has receivers.
    fn open_for_senders(&self) -> bool {
        let reachable = !self.alive.is_empty()
            || self
                .down_since
                .is_some_and(|t| t.elapsed() < self.disconnect_after);
        reachable && self.receivers
    }

    /// Sends what the credits allow, resending after a stall.
    fn flush(&mut self) {
        let now = Instant::now();
        let acked = self.journal.acked();
        if self.sent > self.received.max(acked) && now - self.stalled_since > RESEND_AFTER {
            log::debug!(
                "{}: nothing received past {} for {:?}: sending again",
                self.remote,
                self.received,
                RESEND_AFTER
            );
            self.sent = self.received.max(acked);
            self.stalled_since = now;
        }
        if self.alive.is_empty() {
            return;
        }
        let limit = self.journal.written().min(self.credit);
        let cancel = self.journal.cancel();
        if cancel != 0 && self.sent < cancel {
            // A withdrawn rendezvous offer (the last message: offers go one
            // at a time): ask the far side to drop it instead.
            self.send_cancel(cancel);
            self.sent = cancel;
            return;
        }
        while self.sent < limit {
            let mut frame = DataFrame::new(self.sent + 1, self.journal.acked(), self.waiting, 0);
            while self.sent < limit && frame.count() < FRAME_MESSAGES {
                let msg = self.journal.get(self.sent + 1).expect("journaled");
                if !frame.is_empty() && frame.len() + 4 + msg.len() > self.frame_bytes {
                    break;
                }
                frame.push(msg);
                self.sent += 1;
            }
            let count = frame.count();
            if let Err(e) = self.publisher.put(frame.into_bytes()).wait() {
                log::debug!("{}: sending: {e}", self.remote);
            }
            self.frames += 1;
            self.framed += u64::from(count);
            if self.received >= self.sent - 1 {
                self.stalled_since = now;
            }
        }
        if now - self.last_heartbeat >= HEARTBEAT {
            self.heartbeat();
        }
    }

    fn send_cancel(&mut self, seq: u64) {
        let frame = DataFrame::new(seq, self.journal.acked(), self.waiting, FLAG_CANCEL);
        if let Err(e) = self.publisher.put(frame.into_bytes()).wait() {
            log::debug!("{}: cancel: {e}", self.remote);
        }
        self.last_heartbeat = Instant::now();
    }

    /// A rendezvous offer journaled as `seq`: waits until a far receiver
    /// took it (true: the local send may return Ok), or, once the far side
    /// is closed or we are stopping, withdraws it (false: the offer stays
    /// in the proxy, and its sender will be told `Disconnected`). The far
    /// side confirms a withdrawal, or says the message was taken already;
    /// if it cannot be asked, the journal marks the message to withdraw
    /// when it can.
    fn rendezvous(&mut self, seq: u64, stop: &(dyn Fn() -> bool + Sync)) -> bool {
        let mut asked: Option<Instant> = None;
        let mut stopping_since: Option<Instant> = None;
        loop {
            if self.journal.acked() >= seq {
                return !self.withdrawn_there(seq);
            }
            let closing = stop() || !self.open_for_senders();
            if closing {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                // Unreachable, or no answer for a while: withdraw here, and
                // there when it can be asked.
                if self.alive.is_empty() || since.elapsed() > Duration::from_secs(2) {
                    log::info!(
                        "{}: withdrawing a rendezvous offer the far side could not confirm",
                        self.remote
                    );
                    self.journal.set_cancel(seq);
                    return false;
                }
                if asked.is_none_or(|t| t.elapsed() > HEARTBEAT) {
                    self.send_cancel(seq);
                    asked = Some(Instant::now());
                }
                self.wait(TURN);
                continue;
            }
            stopping_since = None;
            self.flush();
            self.wait(TURN);
        }
    }

    /// True if the far side confirmed it withdrew message `seq`.
    fn withdrawn_there(&self, seq: u64) -> bool {
        self.journal.withdrawn() == seq && self.journal.acked() >= seq
    }

    fn heartbeat(&mut self) {
        let gone = self.senders_gone && self.journal.in_flight() == 0;
        let frame = DataFrame::new(
            self.journal.written() + 1,
            self.journal.acked(),
            self.waiting,
            if gone { FLAG_SENDERS_GONE } else { 0 },
        );
        if let Err(e) = self.publisher.put(frame.into_bytes()).wait() {
            log::debug!("{}: heartbeat: {e}", self.remote);
        }
        self.last_heartbeat = Instant::now();
    }

    /// Waits up to `d` for the far side to say something, then takes it in.
    fn wait(&mut self, d: Duration) {
        match self.acks.recv_timeout(d) {
            Ok(bytes) => self.take_ack(&bytes),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        self.pump();
    }

    fn status(&self, local: &str) {
        let state = if !self.alive.is_empty() {
            if self.receivers {
                "connected".to_owned()
            } else {
                "connected; the far side has no receivers (senders to it get Disconnected)"
                    .to_owned()
            }
        } else {
            match self.down_since {
                Some(t) => format!(
                    "far bridge unreachable for {} ms{}",
                    t.elapsed().as_millis(),
                    if self.open_for_senders() {
                        ""
                    } else {
                        " (senders to it get Disconnected)"
                    }
                ),
                None => "waiting for the far bridge".to_owned(),
            }
        };
        let last_ack = match self.last_ack {
            Some(t) => format!(
                "up to message {}, {} ms ago",
                self.journal.acked(),
                t.elapsed().as_millis()
            ),
            None => "none yet".to_owned(),
        };
        status::write(
            local,
            &[
                ("bridged", format!("{} {}", self.title, self.far_bridge)),
                ("link", state),
                (
                    "in flight",
                    format!(
                        "{} message(s) taken, not yet acknowledged",
                        self.journal.in_flight()
                    ),
                ),
                (
                    "credits",
                    format!(
                        "{} more message(s) the far mailbox has room for",
                        self.credit.saturating_sub(self.journal.written())
                    ),
                ),
                ("last ack", last_ack),
                (
                    "sent",
                    format!(
                        "{} message(s) in {} frame(s), resends included",
                        self.framed, self.frames
                    ),
                ),
            ],
        );
    }
}

/// What one uplink takes from, and where its frames go.
pub struct Spec {
    /// The mailbox the bridge takes messages from (it attaches as a
    /// receiver while the far side is open).
    pub source: Mailbox,
    /// Name in logs and of the status file.
    pub label: String,
    /// Status line before the far bridge's name ("proxy of mailbox M on bridge").
    pub title: String,
    /// The journal's file.
    pub journal: PathBuf,
    /// Largest message.
    pub max_message: usize,
    /// Key of the data frames, from the journal's origin.
    pub data_key: Box<dyn Fn(u64) -> String + Send>,
    /// Key of the acknowledgements, from the journal's origin.
    pub ack_key: Box<dyn Fn(u64) -> String + Send>,
    /// Rendezvous: a message is let go of only once the far side has it.
    pub rendezvous: bool,
    /// The bridge is the source's only receiver (a proxy): a message it
    /// holds when killed stays in the source for its next run, which
    /// drops the repeat by its index. With other receivers (an exported
    /// mailbox serving pullers) one of them may take it instead: the
    /// exporter's next run drops the journal's entry of a message put back
    /// so before it sends anything ([`forget_put_backs`]).
    pub sole_receiver: bool,
    /// The far bridge's name, until its token says otherwise.
    pub far_bridge: String,
}

/// How long a restarted exporter waits for the repair of its
/// predecessor's receivers, which other processes may be making (see
/// [`forget_put_backs`]).
const SETTLE_REPAIRS: Duration = Duration::from_secs(5);

/// Before an exporter serves pullers again, for each of its pull journals
/// at `paths`: a run killed while it held the message it had just
/// journaled (inside the receive callback, before the mailbox let go of
/// it) left that message put back into `source` for whichever receiver
/// comes next; its entry, never sent (entries go out only once their
/// receive has returned), is dropped. Known once that run's receivers
/// (each journal's taker) are repaired, exactly when the mailbox's
/// redelivery count moved by one since the message was taken and names
/// it last (one message at most is held for redelivery at a time). Moved
/// by more (another redelivering receiver died too), or a repair not
/// done in time, leave it to be sent, and said.
pub fn forget_put_backs(paths: &[PathBuf], source: &Mailbox, max_message: usize) -> Result<()> {
    let mut journals = Vec::new();
    for path in paths {
        let mut journal = Journal::open_or_create(path, max_message)
            .with_context(|| format!("opening the journal {}", path.display()))?;
        journal.set_source(source_id(source));
        journals.push(journal);
    }
    if journals.is_empty() {
        return Ok(());
    }
    let takers: Vec<u64> = journals.iter().filter_map(Journal::taker).collect();
    let settled = source.settle_redeliveries(&takers, Deadline::after(SETTLE_REPAIRS));
    let name = source.name();
    for journal in &mut journals {
        let Some(last) = journal.last_source().filter(|_| journal.in_flight() > 0) else {
            continue;
        };
        match settled {
            Some(r) if r.count == last.put_backs + 1 && r.last_index == Some(last.index) => {
                log::info!(
                    "{name}: message {} of {name}, journaled by a run killed before {name} let go of it, was put back there: not sent",
                    last.index
                );
                journal.drop_last();
            }
            Some(r) if r.count > last.put_backs + 1 => log::warn!(
                "{name}: {} messages were put back for redelivery since this bridge journaled message {} (another receiver asking for redelivery died too): it is sent, and may arrive twice",
                r.count - last.put_backs,
                last.index
            ),
            Some(_) => {}
            None => log::warn!(
                "{name}: a receiver of this bridge's last run was still unrepaired after {SETTLE_REPAIRS:?}: message {} is sent, and may arrive twice",
                last.index
            ),
        }
    }
    Ok(())
}

/// True if the message of `index`, the first taken since attaching
/// (`fresh`, cleared here), is the journal's last entry: journaled by a
/// run killed before the proxy let go of it, and redelivered.
fn journaled_before(journal: &Journal, fresh: &mut bool, index: u64) -> bool {
    std::mem::take(fresh) && journal.last_source_index() == Some(index)
}

/// An identity of `mailbox`'s file (its inode number, and its birth time
/// where the file system keeps one; not the change time, which writes
/// through the mapping move): another file made under the same name later
/// has another (0 if it cannot be read).
fn source_id(mailbox: &Mailbox) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let path = std::path::Path::new(ipc_core::segment::SHM_DIR).join(mailbox.name());
    std::fs::metadata(path).map_or(0, |m| {
        let born = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        m.ino() ^ born.rotate_left(32)
    })
}

/// Runs the uplink until `stop()`. `tokens` reports the far side's
/// liveliness; `early` holds events already read from it.
pub fn run(
    session: &Session,
    spec: Spec,
    tokens: Events<Liveliness>,
    early: Vec<Liveliness>,
    o: &Options,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    let journal = Journal::open_or_create(&spec.journal, spec.max_message)
        .with_context(|| format!("opening the journal {}", spec.journal.display()))?;
    let origin = journal.origin();
    let (ack_tx, acks) = sync_channel::<Vec<u8>>(1024);
    let _ack_sub = session
        .declare_subscriber((spec.ack_key)(origin))
        .callback(move |sample| {
            let _ = ack_tx.try_send(sample.payload().to_bytes().into_owned());
        })
        .wait()
        .map_err(|e| anyhow::anyhow!("subscribing to acknowledgements: {e}"))?;
    let publisher = session
        .declare_publisher((spec.data_key)(origin))
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| anyhow::anyhow!("declaring {}'s data publisher: {e}", spec.label))?;
    if journal.in_flight() > 0 {
        log::info!(
            "{}: {} message(s) from before a restart are resent",
            spec.label,
            journal.in_flight()
        );
    }
    let acked = journal.acked();
    let mut link = Link {
        remote: spec.label.clone(),
        title: spec.title.clone(),
        journal,
        publisher,
        acks,
        tokens,
        alive: HashSet::new(),
        far_bridge: spec.far_bridge.clone(),
        credit: acked,
        sent: acked,
        received: acked,
        stalled_since: Instant::now(),
        receivers: true,
        down_since: None,
        last_ack: None,
        last_heartbeat: Instant::now() - HEARTBEAT,
        frames: 0,
        framed: 0,
        senders_gone: false,
        waiting: 0,
        disconnect_after: o.disconnect_after,
        frame_bytes: FRAME_BYTES.min(o.batch_size.saturating_sub(BATCH_HEADROOM)),
    };
    for ev in early {
        link.on_liveliness(ev);
    }
    link.pump();
    let rendezvous = spec.rendezvous;
    let max = spec.max_message;
    let proxy = spec.source;
    let local = spec.label.as_str();
    let mut rx: Option<ipc_core::Receiver> = None;
    // The receiver asked for redelivery, and has just attached: its first
    // message may be a redelivered one.
    let mut redelivered = false;
    let mut fresh = false;
    let sole = spec.sole_receiver;
    let mut kill_while_journaling =
        crate::test_hook::Countdown::from_env(KILL_WHILE_JOURNALING_ENV);
    let mut kill_after_journaling =
        crate::test_hook::Countdown::from_env(KILL_AFTER_JOURNALING_ENV);
    let mut last_status = Instant::now() - Duration::from_secs(1);
    while !stop() {
        link.pump();
        if link.last_heartbeat.elapsed() >= HEARTBEAT || link.journal.written() >= link.credit {
            let was = link.waiting;
            link.waiting = u32::try_from(proxy.status().len).unwrap_or(u32::MAX);
            // Out of credits and messages came: ask for credits now.
            if was == 0 && link.waiting > 0 && link.journal.written() >= link.credit {
                link.heartbeat();
            }
        }
        let open = link.open_for_senders();
        if !open && rx.take().is_some() {
            log::warn!("{local}: the far side is unreachable or has no receivers: senders to {local} now get Disconnected");
        }
        if open && rx.is_none() {
            let mut r = proxy
                .receiver()
                .with_context(|| format!("attaching to the proxy {local}"))?;
            // Senders that all left while we were detached ended their
            // stream: say so, then wait for a new one.
            let st = proxy.status();
            if st.live(Role::Producer) == 0 && st.len == 0 && st.producers_total > 0 {
                if !link.senders_gone {
                    log::info!("{local}: every local sender has gone");
                }
                link.senders_gone = true;
            }
            r.expect_new_senders();
            redelivered = false;
            // Killed while copying a message into the journal (inside the
            // receive callback), the bridge leaves it in the source for
            // the next receiver: a proxy's is its next run, which drops it
            // if it was journaled (by its index); an exported mailbox's
            // may be another, and the next run drops the journal's entry
            // instead (`forget_put_backs`). A rendezvous offer held so
            // stays the taken one: its sender can no longer withdraw it.
            match r.redeliver_if_killed() {
                Ok(()) => {
                    // A journal left by a run on another proxy of the
                    // same name (removed and made again) names none of
                    // this one's messages.
                    link.journal.set_source(source_id(&proxy));
                    link.journal.set_taker(r.attachment_id());
                    redelivered = true;
                    fresh = sole;
                }
                Err(e) => log::debug!("{local}: {e}"),
            }
            rx = Some(r);
        }
        link.flush();
        let mut took = 0u32;
        let mut declined = false;
        if let Some(r) = rx.as_mut() {
            while link.journal.written() < link.credit
                && link.journal.has_room(max)
                && took < FRAME_MESSAGES
            {
                let deadline = if took == 0 && link.sent == link.journal.written() {
                    Deadline::after(TURN)
                } else {
                    Deadline::Now
                };
                let l = &mut link;
                let result = if rendezvous {
                    // The local send returns when this does: once a
                    // receiver on the far host took the message; an offer
                    // withdrawn stays in the proxy for its sender to take
                    // back with `Disconnected` (or, if its sender's
                    // deadline came while we held it, it returned Ok and
                    // the offer is kept: our next attach takes it again).
                    r.recv_if_indexed_until(deadline, |index, msg| {
                        kill_while_journaling.tick();
                        l.senders_gone = false;
                        // The first offer after attaching may be one
                        // journaled by a run killed before the far side
                        // took it (or before the proxy let go of it).
                        if journaled_before(&l.journal, &mut fresh, index) {
                            let seq = l.journal.written();
                            log::info!("{local}: the offer journaled as {seq} before a restart, offered again: waiting for its fate");
                            if l.rendezvous(seq, stop) {
                                return Some(());
                            }
                            if !l.withdrawn_there(seq) {
                                return None;
                            }
                            // Withdrawn there, still offered here (and
                            // maybe no longer withdrawable: it was held):
                            // a new message to send.
                        }
                        let taken = redelivered.then(|| Taken {
                            index,
                            put_backs: proxy.redeliveries().count,
                        });
                        let seq = l.journal.append_from(msg, taken).expect("room checked");
                        kill_after_journaling.tick();
                        l.rendezvous(seq, stop).then_some(())
                    })
                    .map(|taken| {
                        if taken.is_none() {
                            declined = true;
                        }
                    })
                } else {
                    // Every message queued now, within credits and the
                    // journal's room, in one call: each is journaled in
                    // place before the mailbox lets go of it.
                    let max = (l.credit - l.journal.written())
                        .min(l.journal.room_for_largest())
                        .min(u64::from(FRAME_MESSAGES - took))
                        .max(1) as usize;
                    r.recv_batch_indexed_until(deadline, max, |index, msg| {
                        kill_while_journaling.tick();
                        // The first message after attaching may be one the
                        // proxy redelivered, journaled by a run killed
                        // before the proxy let go of it.
                        if journaled_before(&l.journal, &mut fresh, index) {
                            log::info!("{local}: a message journaled before a restart, redelivered by the proxy, dropped");
                        } else if redelivered {
                            let put_backs = proxy.redeliveries().count;
                            let taken = Taken { index, put_backs };
                            l.journal.append_taken(msg, taken).expect("room checked");
                            kill_after_journaling.tick();
                        } else {
                            l.journal.append(msg).expect("room checked");
                        }
                        l.senders_gone = false;
                    })
                    .map(|n| took += n as u32 - 1)
                };
                if declined {
                    // Let go of the proxy so its senders are told.
                    break;
                }
                match result {
                    Ok(()) => took += 1,
                    Err(RecvError::Timeout | RecvError::Empty) => break,
                    Err(RecvError::Disconnected) => {
                        if !link.senders_gone {
                            log::info!("{local}: every local sender has gone");
                        }
                        link.senders_gone = true;
                        r.expect_new_senders();
                        break;
                    }
                    Err(e) => return Err(e).with_context(|| format!("receiving from {local}")),
                }
            }
        }
        if declined {
            // The far side is closed, or we are stopping: the proxy's
            // senders are told `Disconnected` once we let go of it.
            if rx.take().is_some() {
                log::warn!(
                    "{local}: a rendezvous offer withdrawn: senders to {local} get Disconnected"
                );
            }
            while !stop() && !link.open_for_senders() {
                link.flush();
                link.wait(TURN);
            }
            continue;
        }
        if took == 0 && (rx.is_none() || link.journal.written() >= link.credit || link.senders_gone)
        {
            link.wait(TURN);
        }
        link.flush();
        if last_status.elapsed() >= Duration::from_millis(250) {
            last_status = Instant::now();
            link.status(local);
        }
    }
    drop(rx);
    // Give what is in flight a moment to be acknowledged before leaving
    // (it stays journaled either way).
    let until = Instant::now() + Duration::from_secs(1);
    while link.journal.in_flight() > 0 && Instant::now() < until {
        link.flush();
        link.wait(TURN);
    }
    status::remove(local);
    let live_senders = proxy.status().live(Role::Producer);
    if link.journal.in_flight() == 0 && proxy.status().len == 0 && live_senders == 0 {
        let _ = link.journal.remove();
    }
    Ok(())
}
