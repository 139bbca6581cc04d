//! Bad input to the real binaries: each case must fail with a clear error
//! that names the segment and the cause, with the documented exit code
//! (1 runtime, 2 usage), and must leave /dev/shm as it found it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ipc_tests::{cmd, run, ChildGuard, ShmName, PATIENCE};

const RUNTIME: i32 = 1;
const USAGE: i32 = 2;

fn tool(name: &str, args: &[&str]) -> Output {
    let mut c = cmd(name);
    c.args(args);
    run(c, PATIENCE)
}

/// Runs `tool args` and checks that it failed with `code` (any of `codes`)
/// and that stderr contains every one of `needles`. Returns stderr.
fn expect_failure(tool_name: &str, args: &[&str], codes: &[i32], needles: &[&str]) -> String {
    let out = tool(tool_name, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let shown = format!("`{tool_name} {}`", args.join(" "));
    assert!(
        out.status.code().is_some_and(|c| codes.contains(&c)),
        "{shown}: expected exit code {codes:?}, got {:?}\nstderr:\n{stderr}",
        out.status
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{shown}: stderr should mention {needle:?}:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("panicked"),
        "{shown}: panicked instead of reporting an error:\n{stderr}"
    );
    stderr
}

fn create(name: &ShmName, extra: &[&str]) {
    let mut args = vec!["create", name.as_str()];
    args.extend_from_slice(extra);
    let out = tool("ipcctl", &args);
    assert!(
        out.status.success(),
        "ipcctl create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The segment's bytes, to show that a refused open left them untouched.
fn snapshot(name: &ShmName) -> Vec<u8> {
    std::fs::read(name.path()).expect("read segment file")
}

/// Segments of this name, including chained `NAME.*` ones.
fn files_named(name: &ShmName) -> Vec<String> {
    let prefix = format!("{}.", name.as_str());
    std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f == name.as_str() || f.starts_with(&prefix))
        .collect()
}

/// A producer, a consumer and `ipcctl status` each refuse the segment with
/// exit 1 and an error naming it and the cause; none changes a byte of it
/// or creates anything beside it; `ipcctl remove` refuses it without
/// --force.
fn every_tool_refuses(name: &ShmName, cause: &str) {
    let before = snapshot(name);
    let n = name.as_str();
    expect_failure("consumer", &["--segment", n], &[RUNTIME], &[n, cause]);
    expect_failure(
        "consumer",
        &["--segment", n, "--verify"],
        &[RUNTIME],
        &[n, cause],
    );
    expect_failure("producer", &["--segment", n], &[RUNTIME], &[n, cause]);
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "32"],
        &[RUNTIME],
        &[n, cause],
    );
    expect_failure("ipcctl", &["status", n], &[RUNTIME], &[n, cause]);
    expect_failure("ipcctl", &["remove", n], &[RUNTIME], &[n, cause, "--force"]);
    assert!(snapshot(name) == before, "{n} was modified");
    assert_eq!(files_named(name), vec![n.to_owned()]);
}

#[test]
fn missing_segment() {
    let name = ShmName::new("missing");
    let n = name.as_str();
    let cause = "does not exist";
    expect_failure("consumer", &["--segment", n], &[RUNTIME], &[n, cause]);
    expect_failure("producer", &["--segment", n], &[RUNTIME], &[n, cause]);
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "32"],
        &[RUNTIME],
        &[n, cause],
    );
    expect_failure("ipcctl", &["status", n], &[RUNTIME], &[n, cause]);
    expect_failure("ipcctl", &["remove", n], &[RUNTIME], &[n, cause]);
    assert!(files_named(&name).is_empty(), "something was created");
}

#[test]
fn foreign_file_in_dev_shm() {
    let name = ShmName::new("foreign");
    let mut bytes = vec![0u8; 8192];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    // Neither our magic nor zero (an uninitialized segment, which openers
    // wait for): certainly foreign.
    bytes[..8].copy_from_slice(b"NOTOURS!");
    std::fs::write(name.path(), &bytes).expect("write foreign file");
    every_tool_refuses(&name, "not an ipc-core segment");
}

#[test]
fn wrong_layout_version() {
    let name = ShmName::new("version");
    create(&name, &["--capacity", "4"]);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(name.path())
            .expect("open segment file");
        // The u32 layout version sits right after the 8-byte magic.
        f.seek(SeekFrom::Start(8)).expect("seek");
        f.write_all(&99u32.to_le_bytes()).expect("write version");
    }
    every_tool_refuses(&name, "version 99");
}

#[test]
fn truncated_segment() {
    let name = ShmName::new("truncated");
    create(&name, &["--capacity", "4"]);
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(name.path())
            .expect("open segment file");
        let len = f.metadata().expect("metadata").len();
        f.set_len(len / 2).expect("truncate");
    }
    every_tool_refuses(&name, "truncated");
}

#[test]
fn bad_command_line_arguments() {
    let name = ShmName::new("args");
    let n = name.as_str();

    // Parse errors: clap's usage error, exit 2, naming the argument.
    expect_failure(
        "ipcctl",
        &["create", n, "--capacity", "abc"],
        &[USAGE],
        &["'abc'", "--capacity"],
    );
    expect_failure(
        "producer",
        &["--segment", n, "--create", "--capacity", "four"],
        &[USAGE],
        &["'four'", "--capacity"],
    );
    expect_failure(
        "ipcctl",
        &["create", n, "--max-message", "lots"],
        &[USAGE],
        &["lots", "--max-message"],
    );
    expect_failure("ipcctl", &["create", n, "--bogus"], &[USAGE], &["--bogus"]);
    expect_failure(
        "consumer",
        &["--segment", n, "--bogus"],
        &[USAGE],
        &["--bogus"],
    );
    expect_failure(
        "producer",
        &["--segment", n, "--bogus"],
        &[USAGE],
        &["--bogus"],
    );
    expect_failure("consumer", &[], &[USAGE], &["--segment"]);
    expect_failure(
        "consumer",
        &["--segment", n, "--producers", "0"],
        &[USAGE],
        &["--producers"],
    );

    // Values wrong whatever the system's state: usage errors too.
    let either = [USAGE];
    expect_failure(
        "ipcctl",
        &["create", n, "--capacity", "0"],
        &either,
        &["capacity", "at least 1"],
    );
    expect_failure(
        "producer",
        &["--segment", n, "--create", "--capacity", "0"],
        &either,
        &["capacity", "at least 1"],
    );
    for bad in ["a/b", "/lead", "../up"] {
        expect_failure("ipcctl", &["create", bad], &either, &[bad, "'/'"]);
        expect_failure("consumer", &["--segment", bad], &either, &[bad, "'/'"]);
        expect_failure("producer", &["--segment", bad], &either, &[bad, "'/'"]);
    }
    expect_failure("ipcctl", &["create", ""], &either, &["name is empty"]);
    expect_failure("consumer", &["--segment", ""], &either, &["name is empty"]);
    expect_failure("producer", &["--segment", ""], &either, &["name is empty"]);
    assert!(
        files_named(&name).is_empty(),
        "a refused create left a file"
    );

    // --size against a real segment: below the 24-byte synthetic header,
    // and above the segment's max message.
    create(&name, &["--capacity", "4", "--max-message", "100"]);
    let before = snapshot(&name);
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "23"],
        &either,
        &["'23'", "--size", "24"],
    );
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "101"],
        &[USAGE],
        &["--size 101", "max message size 100", n],
    );
    // Nothing was queued; the attachment counters are checked in the
    // ignored test below.
    let after = snapshot(&name);
    assert_eq!(before.len(), after.len());
    assert_eq!(files_named(&name), vec![n.to_owned()]);
}

/// Argument values that are wrong whatever the system's state are usage
/// errors (exit 2, as clap reports other bad values), and the `--size`
/// errors should name the segment like every other error.
#[test]
fn argument_value_errors_are_usage_errors() {
    let name = ShmName::new("args-strict");
    let n = name.as_str();
    expect_failure(
        "ipcctl",
        &["create", n, "--capacity", "0"],
        &[USAGE],
        &["capacity"],
    );
    expect_failure(
        "producer",
        &["--segment", n, "--create", "--capacity", "0"],
        &[USAGE],
        &["capacity"],
    );
    expect_failure("ipcctl", &["create", "a/b"], &[USAGE], &["'/'"]);
    expect_failure("consumer", &["--segment", "a/b"], &[USAGE], &["'/'"]);
    expect_failure("ipcctl", &["create", ""], &[USAGE], &["empty"]);
    create(&name, &["--capacity", "4", "--max-message", "100"]);
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "23"],
        &[USAGE],
        &["--size", "24"],
    );
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "101"],
        &[USAGE],
        &[n, "--size 101"],
    );
}

/// A producer refused for a bad `--size` must not attach to the segment:
/// attaching and detaching counts as a producer that came and went, which
/// turns an idle segment into an orphaned one and makes a consumer that
/// waits for its producer report end of stream at once.
#[test]
fn rejected_producer_does_not_attach() {
    let name = ShmName::new("reject-attach");
    let n = name.as_str();
    create(&name, &["--capacity", "4", "--max-message", "100"]);
    let mut consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", n, "--verify"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    );
    let start = Instant::now();
    while !String::from_utf8_lossy(&tool("ipcctl", &["status", n]).stdout)
        .contains("consumer  alive")
    {
        assert!(start.elapsed() < PATIENCE, "the consumer never attached");
        std::thread::sleep(Duration::from_millis(10));
    }
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "10"],
        &[USAGE],
        &["'10'", "--size"],
    );
    expect_failure(
        "producer",
        &["--segment", n, "--count", "1", "--size", "101"],
        &[USAGE],
        &["--size 101", n],
    );
    let status = String::from_utf8_lossy(&tool("ipcctl", &["status", n]).stdout).into_owned();
    assert!(
        status.contains("producers:      0 live, 0 attached in total"),
        "the rejected producer was counted as attached:\n{status}"
    );
    // The consumer must still wait for a real producer ...
    assert!(
        consumer.wait_timeout(Duration::ZERO).is_none(),
        "the consumer ended: a rejected producer looked like end of stream"
    );
    // ... and get its messages.
    let out = tool(
        "producer",
        &["--segment", n, "--count", "3", "--size", "32"],
    );
    assert!(out.status.success(), "{out:?}");
    let out = consumer.output_timeout(PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("received=3 corrupt=0"), "{stderr}");
}

/// A segment of the other model (a buffer used as a mailbox and the other
/// way round) is refused with its kind named, and left untouched.
#[test]
fn segment_of_the_other_model() {
    let buffer = ShmName::new("kind-buffer");
    let mailbox = ShmName::new("kind-mailbox");
    create(&buffer, &["--capacity", "4", "--max-message", "64"]);
    create(
        &mailbox,
        &["--mailbox", "--capacity", "4", "--max-message", "64"],
    );
    let (b, m) = (buffer.as_str(), mailbox.as_str());
    let (before_b, before_m) = (snapshot(&buffer), snapshot(&mailbox));
    let cause = "is a buffer, not a mailbox";
    expect_failure("consumer", &["--mailbox", b], &[RUNTIME], &[b, cause]);
    expect_failure(
        "producer",
        &["--mailbox", b, "--count", "1", "--size", "32"],
        &[RUNTIME],
        &[b, cause],
    );
    let cause = "is a mailbox, not a buffer";
    expect_failure("consumer", &["--segment", m], &[RUNTIME], &[m, cause]);
    expect_failure(
        "producer",
        &["--segment", m, "--count", "1", "--size", "32"],
        &[RUNTIME],
        &[m, cause],
    );
    assert!(snapshot(&buffer) == before_b, "{b} was modified");
    assert!(snapshot(&mailbox) == before_m, "{m} was modified");
}
