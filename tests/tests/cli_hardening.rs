//! Hardening of the command-line tools, each test a reproduction of an
//! issue, run against the real binaries: files planted in /dev/shm, signals
//! while blocked, kills mid-stream, idle producers, validation of every
//! numeric flag, resource limits, half-created and truncated segments.
//!
//! Every test uses unique names ([`ShmName`]) removed even on failure,
//! kills only the processes it started, and bounds every wait generously
//! (a hang fails the test; nothing asserts on speed).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ipc_tests::{cmd, run, wait_until, ChildGuard, ShmName, TempDir, PATIENCE};

const USAGE: i32 = 2;

fn tool(name: &str, args: &[&str]) -> Output {
    let mut c = cmd(name);
    c.args(args);
    run(c, PATIENCE)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout_of(out),
        stderr_of(out)
    );
}

/// Names in /dev/shm that contain `needle`.
fn shm_files_containing(needle: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.contains(needle))
        .collect();
    v.sort();
    v
}

/// A line of `ipcctl status NAME` starting with `key`, without the key.
fn status_field(name: &str, key: &str) -> Option<String> {
    let out = tool("ipcctl", &["status", name]);
    if !out.status.success() {
        return None;
    }
    stdout_of(&out)
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

/// The number in front of `status` line `key` (e.g. "lost:" -> 3).
fn status_number(name: &str, key: &str) -> Option<u64> {
    status_field(name, key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn live_producers(name: &str) -> u64 {
    status_number(name, "producers:").unwrap_or(0)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test spawned and has not reaped yet
    // (the ChildGuard owns it).
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits for `child` to exit within `limit`; if it does not, sends SIGTERM
/// and gives it `limit` again; panics if it is still running then.
fn exits_without_help(child: &mut ChildGuard, what: &str, limit: Duration) -> Output {
    if child.wait_timeout(limit).is_none() {
        kill(child.pid(), libc::SIGTERM);
        let answered = child.wait_timeout(limit).is_some();
        panic!(
            "{what} still ran after {limit:?} (blocked), and {}",
            if answered {
                "only SIGTERM ended it"
            } else {
                "it ignored SIGTERM"
            }
        );
    }
    ChildGuard(child.0.take()).output_timeout(PATIENCE)
}

// ---------------------------------------------------------------- item 1

/// A FIFO planted in /dev/shm made `ipcctl list` and `clean` block for
/// ever in open(2), deaf to SIGTERM; a planted symlink was followed. Both
/// must be skipped: not listed, not removed, the symlink's target untouched.
#[test]
fn list_and_clean_skip_a_planted_fifo_and_symlink() {
    let fifo = ShmName::new("hard-fifo");
    let link = ShmName::new("hard-link");
    let target = ShmName::new("hard-target");
    ok(
        &tool("ipcctl", &["create", target.as_str(), "--capacity", "2"]),
        "create",
    );
    let c_path = std::ffi::CString::new(fifo.path().to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    std::os::unix::fs::symlink(target.path(), link.path()).expect("symlink");
    let before = std::fs::read(target.path()).unwrap();

    for args in [
        vec!["list"],
        vec!["clean", "--prefix", fifo.as_str()],
        vec!["clean", "--idle", "--prefix", fifo.as_str()],
        vec!["clean", "--idle", "--prefix", link.as_str()],
    ] {
        let mut child = ChildGuard::new(
            cmd("ipcctl")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ipcctl"),
        );
        let out = exits_without_help(
            &mut child,
            &format!("ipcctl {}", args.join(" ")),
            Duration::from_secs(20),
        );
        ok(&out, &format!("ipcctl {}", args.join(" ")));
        let listed = stdout_of(&out);
        assert!(
            !listed.contains(fifo.as_str()) && !listed.contains(link.as_str()),
            "ipcctl {} showed a planted FIFO or symlink:\n{listed}",
            args.join(" ")
        );
        if args[0] == "list" {
            assert!(listed.contains(target.as_str()), "target not listed");
        }
    }
    let meta = std::fs::symlink_metadata(fifo.path()).expect("FIFO removed");
    assert!(meta.file_type().is_fifo());
    let meta = std::fs::symlink_metadata(link.path()).expect("symlink removed");
    assert!(meta.file_type().is_symlink());
    assert!(
        std::fs::read(target.path()).unwrap() == before,
        "target changed"
    );
}

// ---------------------------------------------------------------- item 2

/// True if process `pid` is inside write(2) now (/proc/PID/syscall).
fn in_write_syscall(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| {
        s.split_whitespace()
            .next()
            .and_then(|nr| nr.parse::<i64>().ok())
            == Some(libc::SYS_write)
    })
}

/// A consumer blocked writing to a stdout nobody reads must still stop on
/// SIGTERM and SIGINT: exit 130, detached (no dead entry left behind).
#[test]
fn consumer_blocked_on_a_full_stdout_stops_on_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let name = ShmName::new("hard-stdout");
        let n = name.as_str();
        ok(&tool("ipcctl", &["create", n, "--capacity", "4"]), "create");
        // stdout piped and never read: the pipe fills, then write blocks.
        let mut consumer = ChildGuard::new(
            cmd("consumer")
                .args(["--segment", n])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn consumer"),
        );
        let mut producer = ChildGuard::new(
            cmd("producer")
                .args(["--segment", n, "--count", "1000000", "--size", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn producer"),
        );
        // Blocked: inside write(2) once the pipe (64 KiB) is full, which
        // then never drains; the ring fills behind it.
        let pid = consumer.pid();
        wait_until("the consumer to block writing to its full stdout", || {
            in_write_syscall(pid) && status_number(n, "queued:").is_some_and(|q| q >= 3)
        });
        kill(consumer.pid(), sig);
        let Some(status) = consumer.wait_timeout(Duration::from_secs(20)) else {
            panic!("consumer blocked on stdout ignored signal {sig}");
        };
        assert_eq!(status.code(), Some(130), "signal {sig}: {status:?}");
        producer.kill();
        let st = tool("ipcctl", &["status", n]);
        ok(&st, "status");
        assert!(
            !stdout_of(&st).contains("consumer  dead"),
            "the consumer did not detach:\n{}",
            stdout_of(&st)
        );
    }
}

// ---------------------------------------------------------------- item 3

/// Splits a file of `size`-byte synthetic records back into records. A
/// torn record (a prefix written by a killed consumer) is skipped by
/// resynchronizing on the next valid record. Returns (sequence numbers in
/// file order, torn bytes skipped).
fn parse_records(bytes: &[u8], size: usize) -> (Vec<u64>, usize) {
    let mut seqs = Vec::new();
    let mut torn = 0;
    let mut at = 0;
    while at < bytes.len() {
        if at + size <= bytes.len() {
            if let Some((_, seq)) = ipc_core::synthetic::decode(&bytes[at..at + size]) {
                seqs.push(seq);
                at += size;
                continue;
            }
        }
        torn += 1;
        at += 1;
    }
    (seqs, torn)
}

/// A consumer killed mid-stream lost what was still in its stdout buffer
/// and reported `lost: 0`. Now every record reaches the output exactly
/// once, except at most the one being written at the kill, and such a
/// loss is counted.
#[test]
fn consumer_killed_mid_stream_loses_at_most_one_counted_record() {
    const N: u64 = 200_000;
    const SIZE: usize = 32;
    let name = ShmName::new("hard-kill");
    let n = name.as_str();
    let dir = TempDir::new("hard-kill");
    let out_path = dir.path().join("out.bin");
    ok(
        &tool("ipcctl", &["create", n, "--capacity", "64"]),
        "create",
    );
    let append = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .expect("open output")
    };
    let consumer = |file: std::fs::File| {
        ChildGuard::new(
            cmd("consumer")
                .args(["--segment", n])
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn consumer"),
        )
    };
    let mut first = consumer(append());
    let producer = ChildGuard::new(
        cmd("producer")
            .args(["--segment", n, "--count", &N.to_string()])
            .args(["--size", &SIZE.to_string(), "--id", "7"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    );
    wait_until("the first consumer to write", || {
        std::fs::metadata(&out_path).is_ok_and(|m| m.len() >= 64 * 1024)
    });
    // The replacement attaches before the kill, so the producer never
    // finds itself without a consumer (it would give up when full).
    let second = consumer(append());
    wait_until("the replacement to attach", || {
        status_number(n, "consumers:").is_some_and(|c| c >= 2)
    });
    assert!(
        first.wait_timeout(Duration::ZERO).is_none(),
        "the first consumer ended before it could be killed mid-stream"
    );
    first.kill();
    let at_kill = std::fs::metadata(&out_path).map_or(0, |m| m.len());
    let prod = producer.output_timeout(PATIENCE);
    ok(&prod, "producer");
    let out = second.output_timeout(PATIENCE);
    ok(&out, "replacement consumer");

    let bytes = std::fs::read(&out_path).expect("read output");
    assert!(
        bytes.len() as u64 > at_kill,
        "nothing was appended after the kill: not mid-stream"
    );
    let (seqs, torn) = parse_records(&bytes, SIZE);
    let mut seen = vec![0u32; N as usize];
    for &s in &seqs {
        assert!(s < N, "record {s} was never sent");
        seen[s as usize] += 1;
    }
    let duplicates: Vec<u64> = (0..N).filter(|&s| seen[s as usize] > 1).collect();
    let missing: Vec<u64> = (0..N).filter(|&s| seen[s as usize] == 0).collect();
    let lost = status_number(n, "lost:").expect("status lost");
    eprintln!(
        "records {N}: delivered {}, missing {}, torn bytes {torn}, lost counted {lost}",
        seqs.len(),
        missing.len()
    );
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert!(torn < SIZE, "{torn} torn bytes: more than one record");
    assert!(
        missing.len() <= 1,
        "{} records missing (first {:?}), lost counted {lost}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        missing.len() as u64 <= lost,
        "record {missing:?} missing but lost is {lost}"
    );
}

// ---------------------------------------------------------------- item 4

/// An orphaned mailbox that still holds messages is listed with its count
/// and kept by `ipcctl clean`; `clean --discard` removes it.
#[test]
fn clean_keeps_an_orphan_holding_messages_unless_discard() {
    let full = ShmName::new("hard-orph-full");
    let empty = ShmName::new("hard-orph-empty");
    for name in [&full, &empty] {
        ok(
            &tool(
                "ipcctl",
                &["create", name.as_str(), "--mailbox", "--capacity", "16"],
            ),
            "create",
        );
    }
    ok(
        &tool(
            "producer",
            &["--mailbox", full.as_str(), "--count", "5", "--size", "32"],
        ),
        "producer",
    );
    // The empty one: a message sent and taken, so it was attached once.
    ok(
        &tool(
            "producer",
            &["--mailbox", empty.as_str(), "--count", "1", "--size", "32"],
        ),
        "producer",
    );
    ok(
        &tool(
            "consumer",
            &["--mailbox", empty.as_str(), "--verify", "--count", "1"],
        ),
        "consumer",
    );
    let listed = tool("ipcctl", &["list"]);
    let line = stdout_of(&listed)
        .lines()
        .find(|l| l.starts_with(full.as_str()))
        .map(str::to_owned)
        .expect("orphan listed");
    assert!(
        line.contains("orphaned") && line.split_whitespace().any(|w| w == "5"),
        "the orphan's line should say orphaned and 5 queued: {line}"
    );
    let prefix = "ipct-hard-orph-";
    let cleaned = tool("ipcctl", &["clean", "--prefix", prefix]);
    assert!(
        full.path().exists(),
        "clean removed an orphan holding 5 messages: {}",
        stderr_of(&cleaned)
    );
    assert!(!empty.path().exists(), "clean kept the drained orphan");
    assert!(
        stderr_of(&cleaned).contains(full.as_str()),
        "clean should say it kept {full}: {}",
        stderr_of(&cleaned)
    );
    ok(
        &tool("ipcctl", &["clean", "--discard", "--prefix", prefix]),
        "clean --discard",
    );
    assert!(!full.path().exists(), "clean --discard kept it");
}

// ---------------------------------------------------------------- item 5

/// Two stdin producers on one buffer, one idle on its input: the idle one
/// must not hold back the other's messages.
#[test]
fn an_idle_stdin_producer_does_not_stall_another() {
    let name = ShmName::new("hard-idle");
    let n = name.as_str();
    let dir = TempDir::new("hard-idle");
    ok(
        &tool(
            "ipcctl",
            &["create", n, "--capacity", "4", "--max-message", "16"],
        ),
        "create",
    );
    // Idle: stdin is a pipe we keep open and never write to.
    let mut idle = ChildGuard::new(
        cmd("producer")
            .args(["--segment", n])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn idle producer"),
    );
    wait_until("the idle producer to attach", || live_producers(n) == 1);
    let input = dir.path().join("in.txt");
    let data = b"aaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbb\nccccccccccccccc\n";
    std::fs::write(&input, data).unwrap();
    let busy = ChildGuard::new(
        cmd("producer")
            .args(["--segment", n])
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    );
    let mut consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", n, "--count", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    );
    let out = exits_without_help(
        &mut consumer,
        "consumer behind an idle producer",
        Duration::from_secs(30),
    );
    ok(&out, "consumer");
    assert_eq!(out.stdout, data, "the busy producer's messages");
    ok(&busy.output_timeout(PATIENCE), "busy producer");
    drop(idle.0.as_mut().unwrap().stdin.take());
    ok(
        &idle.output_timeout(PATIENCE),
        "idle producer at end of file",
    );
}

// ---------------------------------------------------------------- item 6

/// Input that exactly fills the buffer: the producer needs no free slot
/// to see end of file, so `--timeout 1` does not make it fail "full".
#[test]
fn input_that_exactly_fills_the_buffer_ends_cleanly() {
    let name = ShmName::new("hard-exact");
    let n = name.as_str();
    let dir = TempDir::new("hard-exact");
    let input = dir.path().join("in.bin");
    std::fs::write(&input, [b'x'; 64]).unwrap();
    let mut c = cmd("producer");
    c.args(["--segment", n, "--create", "--capacity", "4"])
        .args(["--max-message", "16", "--timeout", "1"]);
    let out = ChildGuard::new(
        c.stdin(std::fs::File::open(&input).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    )
    .output_timeout(PATIENCE);
    ok(&out, "producer whose input fills the buffer exactly");
    assert_eq!(status_number(n, "queued:"), Some(4));
}

// ---------------------------------------------------------------- item 7

/// Every numeric flag is validated at parse time: exit 2, a message naming
/// the limit, nothing created.
#[test]
fn numeric_and_mode_flags_are_validated_before_anything_is_created() {
    let name = ShmName::new("hard-valid");
    let n = name.as_str();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "ipcctl",
            vec!["create", n, "--capacity", "1048577"],
            "1048576",
        ),
        (
            "ipcctl",
            vec!["create", n, "--max-message", "0"],
            "67108864",
        ),
        (
            "ipcctl",
            vec!["create", n, "--max-message", "67108865"],
            "67108864",
        ),
        (
            "ipcctl",
            vec!["create", n, "--max-message", "4G"],
            "67108864",
        ),
        (
            "ipcctl",
            // A ring's budget is bounded by half the segment limit.
            vec!["create", n, "--max-message", "64M", "--budget", "16G"],
            "8589934592",
        ),
        (
            "ipcctl",
            vec![
                "create",
                n,
                "--mailbox",
                "--capacity",
                "unbounded",
                "--budget",
                "1M",
            ],
            "unbounded",
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--capacity", "1048577"],
            "1048576",
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--max-message", "4G"],
            "67108864",
        ),
        (
            "producer",
            vec![
                "--segment",
                n,
                "--create",
                "--max-message",
                "64M",
                "--budget",
                "16G",
            ],
            "8589934592",
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--timeout=-1"],
            "timeout",
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--timeout", "nan"],
            "timeout",
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--timeout", "inf"],
            "timeout",
        ),
        (
            "producer",
            vec!["--mailbox", n, "--create", "--single"],
            "--single",
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--count", "0", "--size", "32"],
            "count",
        ),
        ("producer", vec!["--segment", n, "--id", "3"], "--id"),
        ("producer", vec!["--to", n, "--wait", "spin"], "--wait"),
        ("consumer", vec!["--segment", n, "--timeout=-1"], "timeout"),
        (
            "consumer",
            vec!["--segment", n, "--timeout", "nan"],
            "timeout",
        ),
        ("consumer", vec!["--segment", n, "--count", "0"], "count"),
        (
            "consumer",
            vec!["--port", n, "--max-message", "0"],
            "67108864",
        ),
        (
            "consumer",
            vec!["--port", n, "--max-message", "4G"],
            "67108864",
        ),
        ("consumer", vec!["--port", n, "--wait", "spin"], "--wait"),
    ];
    for (bin, args, needle) in cases {
        let out = tool(bin, &args);
        let shown = format!("`{bin} {}`", args.join(" "));
        let stderr = stderr_of(&out);
        assert_eq!(
            out.status.code(),
            Some(USAGE),
            "{shown}: expected usage error, got {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(needle),
            "{shown}: stderr should name {needle:?}:\n{stderr}"
        );
        assert!(
            shm_files_containing(n).is_empty(),
            "{shown} created {:?}",
            shm_files_containing(n)
        );
    }
}

// ---------------------------------------------------------------- item 8

/// `consumer --count N --remove` removes the segment after N messages.
#[test]
fn consumer_count_with_remove_removes_the_segment() {
    let name = ShmName::new("hard-remove");
    let n = name.as_str();
    ok(
        &tool("ipcctl", &["create", n, "--capacity", "16"]),
        "create",
    );
    ok(
        &tool(
            "producer",
            &["--segment", n, "--count", "10", "--size", "32"],
        ),
        "producer",
    );
    let out = tool(
        "consumer",
        &["--segment", n, "--verify", "--count", "4", "--remove"],
    );
    ok(&out, "consumer --count 4 --remove");
    assert!(
        !name.path().exists(),
        "consumer --count --remove left the segment"
    );
}

// ---------------------------------------------------------------- item 9

/// `ipcctl list` under RLIMIT_NOFILE=4 cannot open any entry: it must say
/// so (the entry listed as unreadable, a warning) and exit 1, not print an
/// empty table and exit 0. `clean` must not take such an entry for corrupt.
#[test]
fn list_with_too_few_descriptors_reports_unreadable_entries() {
    let name = ShmName::new("hard-nofile");
    let n = name.as_str();
    ok(&tool("ipcctl", &["create", n, "--capacity", "2"]), "create");
    for args in [vec!["list"], vec!["clean", "--idle", "--prefix", n]] {
        let mut c: Command = cmd("ipcctl");
        c.args(&args);
        // SAFETY: setrlimit is async-signal-safe; the closure touches no
        // memory shared with the parent.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 4,
                    rlim_max: 4,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = run(c, PATIENCE);
        let shown = format!("ipcctl {} (4 descriptors)", args.join(" "));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{shown}: exit code\nstdout:\n{}\nstderr:\n{}",
            stdout_of(&out),
            stderr_of(&out)
        );
        // list prints its table on stdout, clean its report on stderr.
        let said = format!("{}{}", stdout_of(&out), stderr_of(&out));
        assert!(
            said.lines()
                .any(|l| l.contains(n) && l.contains("unreadable")),
            "{shown}: {n} should be reported as unreadable:\n{said}"
        );
        assert!(name.path().exists(), "{shown} removed {n}");
    }
}

// --------------------------------------------------------------- item 10

/// "extra segments now" counts only the chained blocks that exist.
#[test]
fn status_counts_only_extra_segments_that_exist() {
    let name = ShmName::new("hard-chain");
    let n = name.as_str();
    ok(
        &tool(
            "ipcctl",
            &[
                "create",
                n,
                "--capacity",
                "unbounded",
                "--max-message",
                "256K",
            ],
        ),
        "create",
    );
    ok(
        &tool(
            "producer",
            &["--segment", n, "--count", "60", "--size", "200000"],
        ),
        "producer",
    );
    let blocks = || -> Vec<String> {
        shm_files_containing(n)
            .into_iter()
            .filter(|f| f.starts_with(&format!("{n}.b")))
            .collect()
    };
    let before = blocks();
    assert!(before.len() >= 2, "expected chained blocks: {before:?}");
    // One block vanishes (removed by hand, or by a crashed cleaner).
    std::fs::remove_file(Path::new("/dev/shm").join(&before[0])).unwrap();
    let capacity = status_field(n, "capacity:").expect("status");
    let shown: u64 = capacity
        .split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no extra segment count in {capacity:?}"));
    assert_eq!(
        shown,
        blocks().len() as u64,
        "status says {capacity:?}, /dev/shm has {:?}",
        blocks()
    );
}

// --------------------------------------------------------------- item 11

/// `ipcctl create` of a 1 GiB segment killed by SIGKILL while it reserves
/// the pages leaves a file without the magic word: `list` shows it as
/// half-created and `clean` removes it.
#[test]
fn a_half_created_segment_is_listed_and_cleaned() {
    let name = ShmName::new("hard-half");
    let n = name.as_str();
    let mut killed_mid_creation = false;
    for _ in 0..10 {
        let mut create = ChildGuard::new(
            cmd("ipcctl")
                .args(["create", n, "--capacity", "16", "--max-message", "64M"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ipcctl create"),
        );
        wait_until("ipcctl create to make the file", || {
            name.path().exists() || create.wait_timeout(Duration::ZERO).is_some()
        });
        create.kill();
        // The first 8 bytes only (the file may be 1 GiB).
        let mut magic = [0u8; 8];
        let published = std::fs::File::open(name.path())
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| magic == *b"IPCCORE1");
        if name.path().exists() && !published {
            killed_mid_creation = true;
            break;
        }
        let _ = std::fs::remove_file(name.path());
    }
    assert!(killed_mid_creation, "never caught ipcctl create mid-way");
    // It is "half-created" once its creator's lock is free and it is a
    // second old: poll, with a bound.
    wait_until("list to show the half-created segment", || {
        stdout_of(&tool("ipcctl", &["list"]))
            .lines()
            .any(|l| l.starts_with(n) && l.contains("half-created"))
    });
    let cleaned = tool("ipcctl", &["clean", "--prefix", n]);
    ok(&cleaned, "clean");
    assert!(
        !name.path().exists(),
        "clean kept the half-created segment: {}",
        stderr_of(&cleaned)
    );
}

// --------------------------------------------------------------- item 12

/// `truncate -s 0` of a live segment: attached tools end with a message
/// and exit code 3 instead of dying of SIGBUS.
#[test]
fn a_truncated_segment_ends_attached_tools_with_exit_3() {
    let name = ShmName::new("hard-sigbus");
    let n = name.as_str();
    ok(&tool("ipcctl", &["create", n, "--capacity", "4"]), "create");
    let consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", n, "--verify"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    );
    wait_until("the consumer to attach", || {
        status_number(n, "consumers:").is_some_and(|c| c == 1)
    });
    let producer = ChildGuard::new(
        cmd("producer")
            .args(["--segment", n, "--count", "100000000", "--size", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    );
    wait_until("the producer to attach", || live_producers(n) == 1);
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(name.path())
        .and_then(|f| f.set_len(0))
        .expect("truncate the segment");
    for (what, child) in [("consumer", consumer), ("producer", producer)] {
        let out = child.output_timeout(PATIENCE);
        let stderr = stderr_of(&out);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what}: {:?} (signal {:?})\n{stderr}",
            out.status,
            out.status.signal()
        );
        assert!(
            stderr.contains("segment truncated under us (SIGBUS)"),
            "{what}: {stderr}"
        );
    }
    std::io::stderr().flush().ok();
}
