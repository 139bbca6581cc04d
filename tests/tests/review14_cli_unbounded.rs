//! Review 14: unbounded queues through the real binaries (`producer`,
//! `consumer`, `ipcctl`) and the public API: consumers and producers
//! killed mid-stream, the tools run during and after a live stream, fork
//! inside an in-place read, status on long chains, and block sizing at the
//! message-size limits.
//!
//! Bounded waits only (a hang fails the test); no timing assertions.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Duration;

use ipc_core::mailbox::{Capacity, Mailbox, MailboxConfig};
use ipc_core::{Deadline, RecvError};
use ipc_tests::{cmd, run, wait_until, within, ChildGuard, ShmName, PATIENCE};

mod unbounded_common;
use unbounded_common::{end_stream, files_of, unbounded_for};

/// Long enough for a loaded 2-core machine.
const HANG: Duration = Duration::from_secs(30);

/// One CLI message: 64 bytes, `seq` in decimal at the start (a pipe write
/// of 64 bytes is atomic, and the producer reads at most `--max-message`
/// 64 bytes, so each record is exactly one message).
const REC: usize = 64;

fn record(seq: u64) -> Vec<u8> {
    let mut r = format!("{seq:020}").into_bytes();
    r.resize(REC, b'.');
    r[REC - 1] = b'\n';
    r
}

fn parse_records(out: &[u8]) -> Vec<u64> {
    assert_eq!(out.len() % REC, 0, "output is not whole records");
    out.chunks(REC)
        .map(|c| std::str::from_utf8(&c[..20]).unwrap().parse().unwrap())
        .collect()
}

/// Chain blocks `NAME.bK` (K ≥ 1, not spares `NAME.b0J`).
fn live_blocks(name: &ShmName) -> usize {
    let prefix = format!("{}.b", name.as_str());
    files_of(name)
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix))
        .filter(|k| !k.starts_with('0'))
        .count()
}

fn status(name: &ShmName) -> ipc_core::Status {
    Mailbox::open(name.as_str()).expect("open").status()
}

/// Bytes waiting in the pipe behind `fd`.
fn fionread(fd: i32) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(r, 0);
    n as usize
}

fn ipcctl(args: &[&str]) -> std::process::Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

/// `ipcctl status NAME`'s value of line `key:` (first word).
fn status_field(name: &ShmName, key: &str) -> String {
    let out = ipcctl(&["status", name.as_str()]);
    assert!(out.status.success(), "ipcctl status: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}: in {text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn spawn_producer(name: &ShmName, max: &str) -> ChildGuard {
    ChildGuard::new(
        cmd("producer")
            .args([
                "--mailbox",
                name.as_str(),
                "--create",
                "--capacity",
                "unbounded",
            ])
            .args(["--max-message", max])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    )
}

fn spawn_consumer(name: &ShmName, extra: &[&str]) -> ChildGuard {
    ChildGuard::new(
        cmd("consumer")
            .args(["--mailbox", name.as_str()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    )
}

/// Drains a child's stdout on a thread.
fn drain(child: &mut ChildGuard) -> std::thread::JoinHandle<Vec<u8>> {
    let mut out = child.0.as_mut().unwrap().stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).unwrap();
        v
    })
}

fn wait_exit(child: &mut ChildGuard, what: &str) -> std::process::ExitStatus {
    child
        .wait_timeout(PATIENCE)
        .unwrap_or_else(|| panic!("{what} did not end"))
}

fn stderr_of(child: &mut ChildGuard) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.0.as_mut().unwrap().stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

// ---------------------------------------------------------------------
// Block sizing at the limits
// ---------------------------------------------------------------------

/// README (How it works, Unbounded) said each block for 64 MiB messages
/// was 128 MiB; `ipcctl create --capacity unbounded --max-message 64M`
/// maps 256 MiB (+8 KiB): a ring holds two of the largest records. README
/// was corrected to what the code does; this checks the two agree.
#[test]
fn unbounded_64mib_messages_take_the_256mib_blocks_readme_promises() {
    let name = ShmName::new("r14size64");
    let out = ipcctl(&[
        "create",
        name.as_str(),
        "--mailbox",
        "--capacity",
        "unbounded",
        "--max-message",
        "64M",
    ]);
    assert!(out.status.success(), "{out:?}");
    let size = std::fs::metadata(name.path()).unwrap().len();
    // (The review asked README's 128 MiB; README was wrong: a ring holds
    // two of the largest messages, 256 MiB, which README now says.)
    let promised = (256u64 << 20) + (12 << 10);
    assert!(
        size <= promised,
        "an unbounded queue for 64 MiB messages maps {size} bytes; README promises 256 MiB of ring plus 12 KiB"
    );
}

/// Above the limit: refused with a clear usage error, nothing created.
#[test]
fn unbounded_above_64mib_is_a_usage_error_and_creates_nothing() {
    let name = ShmName::new("r14size65");
    let out = ipcctl(&[
        "create",
        name.as_str(),
        "--mailbox",
        "--capacity",
        "unbounded",
        "--max-message",
        "67108865",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max"), "unclear error: {err}");
    assert!(files_of(&name).is_empty());
    let r = Mailbox::create(
        name.as_str(),
        &MailboxConfig {
            capacity: Capacity::Unbounded,
            max_message: 0,
            ..Default::default()
        },
    );
    assert!(r.is_err(), "max_message 0 accepted");
    assert!(files_of(&name).is_empty());
}

/// 1-byte messages: 1024 of them fit in the main segment (no chain block),
/// the 1025th starts block 1; memory is small; a 2-byte send is refused.
#[test]
fn unbounded_one_byte_messages_fill_1024_per_block() {
    let name = ShmName::new("r14size1");
    let mb = unbounded_for(&name, 1);
    let size = std::fs::metadata(name.path()).unwrap().len();
    assert!(size <= 64 << 10, "1-byte unbounded queue maps {size}");
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    assert!(tx.send([1u8, 2]).is_err(), "2 bytes accepted with max 1");
    for i in 0..1024u32 {
        tx.send([i as u8]).unwrap();
    }
    assert_eq!(mb.status().len, 1024);
    assert_eq!(live_blocks(&name), 0, "1024 messages did not fit block 0");
    tx.send([9u8]).unwrap();
    assert_eq!(mb.status().len, 1025);
    assert_eq!(live_blocks(&name), 1);
    for i in 0..1024u32 {
        assert_eq!(rx.recv_timeout(HANG).unwrap(), [i as u8]);
    }
    assert_eq!(rx.recv_timeout(HANG).unwrap(), [9u8]);
    end_stream(&name, tx, rx, HANG);
}

// ---------------------------------------------------------------------
// Status on a long chain with a frozen sender
// ---------------------------------------------------------------------

/// A sender holds a zero-copy claim (its turn) while another passes it by
/// for 3000 messages (several blocks); a receiver reads one in place.
/// `status()` must count every committed message, the claim as writing,
/// the in-place read as reading, and every chain block that exists.
#[test]
fn status_on_a_long_chain_bypassing_a_frozen_claim() {
    let name = ShmName::new("r14chain");
    let mb = unbounded_for(&name, 64);
    let mut frozen = mb.sender().unwrap();
    let mut other = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    for i in 0..10u64 {
        other.send(i.to_le_bytes()).unwrap();
    }
    let mut slot = frozen.claim(Deadline::Never).unwrap();
    slot.buf()[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    for i in 10..3010u64 {
        other.send(i.to_le_bytes()).unwrap();
    }
    let st = mb.status();
    assert_eq!(st.len, 3010, "queued");
    assert_eq!(st.writing, 1, "writing");
    assert_eq!(st.reading, 0);
    assert_eq!(st.chain_blocks as usize, live_blocks(&name), "chain_blocks");
    assert!(
        st.chain_blocks >= 2,
        "3000 bypassing messages made {} blocks",
        st.chain_blocks
    );
    let name2 = name.as_str().to_owned();
    let inner = rx
        .recv_with(|b| {
            assert_eq!(b, 0u64.to_le_bytes());
            Mailbox::open(&name2).unwrap().status()
        })
        .unwrap();
    assert_eq!(inner.len, 3009, "queued during an in-place read");
    assert_eq!(inner.reading, 1, "reading during an in-place read");
    assert_eq!(inner.writing, 1);
    slot.commit(8).unwrap();
    let mut got = Vec::new();
    for _ in 0..3010 {
        let m = rx.recv_timeout(HANG).unwrap();
        got.push(u64::from_le_bytes(m[..8].try_into().unwrap()));
    }
    let mut want: Vec<u64> = (1..10).collect();
    want.push(u64::MAX);
    want.extend(10..3010);
    assert_eq!(got, want);
    let st = mb.status();
    assert_eq!(
        (st.len, st.writing, st.reading, st.lost_reads),
        (0, 0, 0, 0)
    );
}

/// `status().bytes_used` (printed by `ipcctl status` as "memory: X of Y
/// bytes used") on an unbounded queue counts only the main segment's ring
/// (`Queue::status` takes `self.ring().bytes()`), while `len` sums over
/// the chain: with 3010 messages of 8 bytes queued across three blocks
/// (16 bytes each: 48 160 bytes) it says 160 bytes are used.
#[test]
fn bytes_used_counts_the_whole_chain_like_len() {
    let name = ShmName::new("r14bytes");
    let mb = unbounded_for(&name, 64);
    let mut frozen = mb.sender().unwrap();
    let mut other = mb.sender().unwrap();
    let _rx = mb.receiver().unwrap();
    for i in 0..10u64 {
        other.send(i.to_le_bytes()).unwrap();
    }
    let slot = frozen.claim(Deadline::Never).unwrap();
    for i in 10..3010u64 {
        other.send(i.to_le_bytes()).unwrap();
    }
    let st = mb.status();
    assert_eq!(st.len, 3010);
    assert!(st.chain_blocks >= 2);
    assert!(
        st.bytes_used >= st.len * 16,
        "{} messages of 8 bytes queued over {} blocks, bytes_used says {} (of {})",
        st.len,
        st.chain_blocks,
        st.bytes_used,
        st.budget
    );
    drop(slot);
}

/// Two 64 MiB messages (the limit) through an unbounded mailbox, whole and
/// in order; the stream's end leaves only the main segment.
#[test]
fn unbounded_64mib_messages_go_through() {
    let name = ShmName::new("r14big");
    let mb = unbounded_for(&name, 64 << 20);
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    for k in 0..4u8 {
        let mut m = big.clone();
        m[0] = k;
        tx.send(&m).unwrap();
    }
    assert!(
        tx.send(vec![0u8; (64 << 20) + 1]).is_err(),
        "oversized accepted"
    );
    for k in 0..4u8 {
        let m = rx.recv_timeout(HANG).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert_eq!(m[0], k);
        assert_eq!(&m[1..], &big[1..]);
    }
    end_stream(&name, tx, rx, HANG);
}

// ---------------------------------------------------------------------
// fork inside an in-place read
// ---------------------------------------------------------------------

/// A `recv_with` callback forks. The child's inherited receiver and sender
/// are inert (`Inherited`), dropping them does nothing; it then attaches
/// anew through an inherited handle and receives the next message (not
/// held up by the parent's hold) and exits. The parent's hold stays, is
/// counted once, nothing is lost, the stream goes on.
#[test]
fn fork_inside_an_in_place_read_of_an_unbounded_mailbox() {
    let name = ShmName::new("r14fork");
    let mb = unbounded_for(&name, 64);
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    let mut rx2 = mb.receiver().unwrap();
    for i in 0..3u8 {
        tx.send([i]).unwrap();
    }
    let st_in = within(HANG, "fork in recv_with", move || {
        let r = rx.recv_with(|b| {
            assert_eq!(b, [0u8]);
            // SAFETY: the child calls only what it needs, then _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let code = (|| {
                    if !matches!(rx2.try_recv(), Err(RecvError::Inherited)) {
                        return 10;
                    }
                    if !matches!(tx.try_send([7u8]), Err(ipc_core::SendError::Inherited(_))) {
                        return 11;
                    }
                    drop(rx2);
                    let mut fresh = match mb.receiver() {
                        Ok(r) => r,
                        Err(_) => return 12,
                    };
                    match fresh.recv_timeout(Duration::from_secs(20)) {
                        Ok(m) if m == [1u8] => {}
                        _ => return 13,
                    }
                    drop(fresh);
                    0
                })();
                // SAFETY: leave without running the parent's destructors.
                unsafe { libc::_exit(code) };
            }
            let mut st = 0;
            // SAFETY: our child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            let code = libc::WEXITSTATUS(st);
            let s = mb.status();
            (code, s.reading, s.lost_reads, s.dead_consumers)
        });
        (r.map_err(|e| format!("{e:?}")), rx, tx)
    });
    let (r, mut rx, tx) = st_in;
    let (code, reading, lost, dead) = r.unwrap();
    assert_eq!(code, 0, "child check failed (code {code})");
    assert_eq!(reading, 1, "the parent's hold after the child left");
    assert_eq!(lost, 0, "lost after the child left");
    assert_eq!(dead, 0, "a consumer taken for dead");
    assert_eq!(rx.recv_timeout(HANG).unwrap(), [2u8]);
    drop(tx);
    assert!(matches!(
        rx.recv_timeout(HANG),
        Err(RecvError::Disconnected)
    ));
    let st = status(&name);
    assert_eq!((st.lost_reads, st.reading, st.len), (0, 0, 0));
}

/// A child forked in a callback attaches anew and is killed (SIGKILL)
/// while it reads message 1 in place: that loss is counted once; the
/// parent's hold on message 0 is untouched.
#[test]
fn a_forked_child_killed_in_its_own_read_is_counted_once_parent_hold_kept() {
    let name = ShmName::new("r14forkkill");
    let mb = unbounded_for(&name, 64);
    let mut tx = mb.sender().unwrap();
    let mut rx = mb.receiver().unwrap();
    for i in 0..3u8 {
        tx.send([i]).unwrap();
    }
    let out = within(HANG, "fork, kill child", move || {
        let r = rx.recv_with(|b| {
            assert_eq!(b, [0u8]);
            let mut fds = [0i32; 2];
            // SAFETY: a pipe for the child's "holding" byte.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: as above.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let mut fresh = match mb.receiver() {
                    Ok(r) => r,
                    // SAFETY: leave at once.
                    Err(_) => unsafe { libc::_exit(12) },
                };
                let _ = fresh.recv_with(|_| {
                    // SAFETY: tell the parent, then hang until killed.
                    unsafe {
                        libc::write(fds[1], b"h".as_ptr().cast(), 1);
                        loop {
                            libc::pause();
                        }
                    }
                });
                // SAFETY: not reached.
                unsafe { libc::_exit(13) };
            }
            let mut b = [0u8; 1];
            // SAFETY: read one byte from our pipe.
            let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
            let holding = mb.status();
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            let start = std::time::Instant::now();
            let mut s = mb.status();
            while s.lost_reads == 0 && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(20));
                s = mb.status();
            }
            let again = mb.status();
            (
                n,
                holding.reading,
                s.lost_reads,
                again.lost_reads,
                again.reading,
            )
        });
        (r.unwrap(), rx, tx)
    });
    let ((n, reading_both, lost, lost_again, reading_after), mut rx, tx) = out;
    assert_eq!(n, 1, "child never held");
    assert_eq!(reading_both, 2, "two in-place reads");
    assert_eq!(lost, 1, "the child's loss");
    assert_eq!(lost_again, 1, "counted once");
    assert_eq!(reading_after, 1, "the parent's own hold");
    assert_eq!(rx.recv_timeout(HANG).unwrap(), [2u8]);
    drop(tx);
    assert!(matches!(
        rx.recv_timeout(HANG),
        Err(RecvError::Disconnected)
    ));
    let st = status(&name);
    assert_eq!((st.lost_reads, st.reading), (1, 0));
}

// ---------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------

/// Writes records `from..to` into the producer's stdin.
fn feed(stdin: &mut std::process::ChildStdin, from: u64, to: u64) {
    let mut buf = Vec::with_capacity(((to - from) as usize) * REC);
    for s in from..to {
        buf.extend(record(s));
    }
    // One record per write(2): each atomic, each one message.
    for c in buf.chunks(REC) {
        stdin.write_all(c).unwrap();
    }
}

/// Two consumers on an unbounded mailbox streamed by `producer --create`;
/// consumer A is stuck writing to a full pipe (holding a message in place)
/// and is killed -9. Exactly that message is lost (`ipcctl status` lost:
/// 1), every other one arrives once and in order per consumer, B and the
/// producer exit 0, and only the main segment is left.
#[test]
fn cli_consumer_killed_mid_write_loses_exactly_its_message() {
    let name = ShmName::new("r14clikill");
    let mut prod = spawn_producer(&name, "64");
    let mut stdin = prod.0.as_mut().unwrap().stdin.take().unwrap();
    wait_until("mailbox created", || Mailbox::open(name.as_str()).is_ok());
    let mut a = spawn_consumer(&name, &[]);
    let a_out = a.0.as_mut().unwrap().stdout.take().unwrap();
    let mut b = spawn_consumer(&name, &[]);
    let b_reader = drain(&mut b);
    wait_until("two consumers", || status(&name).consumers_total == 2);
    let mut next = 0u64;
    // Fill A's pipe, then until A holds a message while B is idle.
    wait_until("consumer A holding a message", || {
        feed(&mut stdin, next, next + 256);
        next += 256;
        let mut ok = false;
        for _ in 0..200 {
            let s = status(&name);
            if s.len == 0 && s.reading == 1 && fionread(a_out.as_raw_fd()) > 65536 - REC {
                ok = true;
                break;
            }
            if s.len == 0 && s.reading == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        ok
    });
    a.kill();
    wait_until("the loss counted", || status(&name).lost_reads >= 1);
    // Several more blocks after the kill.
    feed(&mut stdin, next, next + 3000);
    next += 3000;
    drop(stdin);
    let pst = wait_exit(&mut prod, "producer");
    assert_eq!(pst.code(), Some(0), "producer: {}", stderr_of(&mut prod));
    let bst = wait_exit(&mut b, "consumer B");
    let b_err = stderr_of(&mut b);
    assert_eq!(bst.code(), Some(0), "consumer B: {b_err}");
    let b_got = parse_records(&b_reader.join().unwrap());
    let mut a_bytes = Vec::new();
    let mut a_out = a_out;
    a_out.read_to_end(&mut a_bytes).unwrap();
    let a_got = parse_records(&a_bytes);
    assert!(a_got.windows(2).all(|w| w[0] < w[1]), "A out of order");
    assert!(b_got.windows(2).all(|w| w[0] < w[1]), "B out of order");
    let mut all: Vec<u64> = a_got.iter().chain(&b_got).copied().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(all.len(), before, "duplicates");
    assert_eq!(all.len() as u64, next - 1, "exactly one message missing");
    assert_eq!(status_field(&name, "lost"), "1");
    assert_eq!(status_field(&name, "abandoned"), "0");
    assert_eq!(status_field(&name, "queued"), "0");
    assert_eq!(
        files_of(&name),
        vec![name.as_str().to_owned()],
        "left after the stream"
    );
}

/// `producer --create --capacity unbounded` killed -9 mid-stream (idle on
/// its stdin): the consumer drains everything sent, ends with exit 1 and a
/// warning naming the producer's pid (README), `--accept-incomplete`
/// would make it 0; nothing lost or abandoned; only the main segment left.
#[test]
fn cli_producer_killed_mid_stream_ends_the_stream_with_exit_1() {
    let name = ShmName::new("r14cliprod");
    let mut prod = spawn_producer(&name, "64");
    let mut stdin = prod.0.as_mut().unwrap().stdin.take().unwrap();
    wait_until("mailbox created", || Mailbox::open(name.as_str()).is_ok());
    let mut c = spawn_consumer(&name, &[]);
    let c_reader = drain(&mut c);
    feed(&mut stdin, 0, 2500);
    wait_until("all queued messages taken", || {
        let s = status(&name);
        s.len == 0 && s.reading == 0 && s.consumers_total == 1
    });
    let pid = prod.pid();
    prod.kill();
    drop(stdin);
    let cst = wait_exit(&mut c, "consumer");
    let err = stderr_of(&mut c);
    assert_eq!(cst.code(), Some(1), "consumer: {err}");
    assert!(
        err.contains(&pid.to_string()),
        "warning names no pid: {err}"
    );
    let got = parse_records(&c_reader.join().unwrap());
    assert_eq!(got, (0..2500).collect::<Vec<_>>());
    assert_eq!(status_field(&name, "lost"), "0");
    assert_eq!(status_field(&name, "abandoned"), "0");
    assert_eq!(
        files_of(&name),
        vec![name.as_str().to_owned()],
        "left after the stream"
    );
}

/// `ipcctl status`, `list`, `clean`, `clean --idle --discard` (restricted
/// to this test's prefix) while a stream spans several chain blocks (the
/// consumer stuck on a full stdout, so the blocks stay): every block stays,
/// the stream delivers everything once, in order; afterwards `clean` and
/// `list` report nothing but the main segment, and `remove` leaves nothing.
#[test]
fn cli_tools_during_and_after_a_live_unbounded_stream() {
    let name = ShmName::new("r14clitools");
    let mut prod = spawn_producer(&name, "64");
    let mut stdin = prod.0.as_mut().unwrap().stdin.take().unwrap();
    wait_until("mailbox created", || Mailbox::open(name.as_str()).is_ok());
    let mut c = spawn_consumer(&name, &[]);
    let c_out = c.0.as_mut().unwrap().stdout.take().unwrap();
    wait_until("consumer attached", || status(&name).consumers_total == 1);
    // The consumer's pipe takes 1024 records; 6000 more sit in blocks.
    feed(&mut stdin, 0, 7000);
    wait_until("queued", || status(&name).len >= 5000);
    let before = files_of(&name);
    assert!(live_blocks(&name) >= 3, "chain: {before:?}");
    for _ in 0..3 {
        let st = ipcctl(&["status", name.as_str()]);
        assert!(st.status.success(), "{st:?}");
        let l = ipcctl(&["list"]);
        let text = String::from_utf8_lossy(&l.stdout);
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{} ", name.as_str()))
                    || l.starts_with(&format!("{}.", name.as_str()))
            })
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "list shows blocks or misses the queue: {ours:?}"
        );
        assert!(ours[0].contains("live"), "{ours:?}");
        for args in [
            vec!["clean", "--prefix", name.as_str()],
            vec!["clean", "--idle", "--discard", "--prefix", name.as_str()],
        ] {
            let o = ipcctl(&args);
            assert!(o.status.success(), "{args:?}: {o:?}");
            assert!(
                !String::from_utf8_lossy(&o.stderr).contains("removed"),
                "{args:?} removed something of a live stream: {o:?}"
            );
        }
        let now = files_of(&name);
        for f in &before {
            if !f.contains(".b0") {
                assert!(now.contains(f), "{f} removed while live: {now:?}");
            }
        }
    }
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut c_out = c_out;
        c_out.read_to_end(&mut v).unwrap();
        v
    });
    feed(&mut stdin, 7000, 8000);
    drop(stdin);
    assert_eq!(wait_exit(&mut prod, "producer").code(), Some(0));
    let cst = wait_exit(&mut c, "consumer");
    assert_eq!(cst.code(), Some(0), "consumer: {}", stderr_of(&mut c));
    assert_eq!(
        parse_records(&reader.join().unwrap()),
        (0..8000).collect::<Vec<_>>()
    );
    assert_eq!(files_of(&name), vec![name.as_str().to_owned()]);
    assert_eq!(status_field(&name, "lost"), "0");
    // After: an orphan with nothing queued: clean removes it with its chain.
    let o = ipcctl(&["clean", "--prefix", name.as_str()]);
    assert!(o.status.success(), "{o:?}");
    assert!(files_of(&name).is_empty(), "left: {:?}", files_of(&name));
    let l = ipcctl(&["list"]);
    assert!(!String::from_utf8_lossy(&l.stdout).contains(name.as_str()));
}

/// Same streaming, consumer with `--remove`: at the end nothing is left
/// in /dev/shm.
#[test]
fn cli_consumer_remove_leaves_nothing_after_an_unbounded_stream() {
    let name = ShmName::new("r14cliremove");
    let mut prod = spawn_producer(&name, "64");
    let mut stdin = prod.0.as_mut().unwrap().stdin.take().unwrap();
    wait_until("mailbox created", || Mailbox::open(name.as_str()).is_ok());
    let mut c = spawn_consumer(&name, &["--remove"]);
    let r = drain(&mut c);
    feed(&mut stdin, 0, 5000);
    drop(stdin);
    assert_eq!(wait_exit(&mut prod, "producer").code(), Some(0));
    assert_eq!(wait_exit(&mut c, "consumer").code(), Some(0));
    assert_eq!(
        parse_records(&r.join().unwrap()),
        (0..5000).collect::<Vec<_>>()
    );
    assert!(files_of(&name).is_empty(), "left: {:?}", files_of(&name));
}
