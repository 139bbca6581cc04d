//! Resources: a /dev/shm too small for a segment fails at creation with a
//! clear message (size asked, space free), never SIGBUS later; bad command
//! lines leave /dev/shm as they found it.
//!
//! The small /dev/shm is a 1 MiB tmpfs mounted in a private mount namespace
//! (`unshare -m`), which needs root: without it the test prints
//! "skipped: ..." on stderr and passes.

use std::path::Path;
use std::process::Command;

use ipc_core::layout::{Geometry, Kind};
use ipc_tests::{bin, run, ShmName, PATIENCE};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `script` with sh inside a private mount namespace whose /dev/shm
/// is a 1 MiB tmpfs. `None` (after printing why) when that cannot be set up.
fn in_small_shm(script: &str) -> Option<std::process::Output> {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs on /dev/shm needs root");
        return None;
    }
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: unshare -m / mount tmpfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped: cannot run unshare: {e}");
            return None;
        }
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs /dev/shm || exit 99\n{script}"
        ))
        .env("IPCCTL", bin("ipcctl"))
        .env("PRODUCER", bin("producer"))
        .env("CONSUMER", bin("consumer"));
    Some(run(cmd, PATIENCE))
}

#[test]
fn full_dev_shm_fails_at_create_with_sizes_not_sigbus() {
    let Some(out) = in_small_shm(r#"exec "$IPCCTL" create x --capacity 64 --max-message 64K"#)
    else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let asked = Geometry::packed(Kind::Buffer, 64, 64 * 1024, 0)
        .unwrap()
        .total_size;
    assert_eq!(
        out.status.code(),
        Some(1),
        "status {:?}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("not enough space") && stderr.contains(&format!("asked for {asked} bytes")),
        "{stderr}"
    );
    assert!(stderr.contains("free"), "names the free space: {stderr}");
}

#[test]
fn second_segment_that_does_not_fit_leaves_the_first_working() {
    // A ring of 512 KiB fits once in 1 MiB, not twice. The failed create
    // must not leave a partial file, and the first segment must carry
    // messages end to end afterwards.
    let script = r#"
"$IPCCTL" create a --capacity 8 --max-message 64K --budget 512K || exit 10
"$IPCCTL" create b --capacity 8 --max-message 64K --budget 512K 2>/tmp/ipct-b.err$$; rc=$?
cat /tmp/ipct-b.err$$ >&2; rm -f /tmp/ipct-b.err$$
[ "$rc" = 1 ] || exit 11
[ -e /dev/shm/b ] && exit 12
"$CONSUMER" --segment a --verify --timeout 30 & c=$!
"$PRODUCER" --segment a --count 2000 --size 60K || exit 13
wait $c || exit 14
"#;
    let Some(out) = in_small_shm(script) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status {:?}: {stderr}",
        out.status
    );
    assert!(stderr.contains("not enough space"), "{stderr}");
    assert!(stderr.contains("received=2000 corrupt=0"), "{stderr}");
}

fn shm_entries_with(tag: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(tag))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_command_lines_leave_dev_shm_unchanged() {
    let guard = ShmName::new("badcli");
    let n = guard.as_str();
    let tag = n.to_owned();
    let long = format!("{n}{}", "x".repeat(300));
    let escape = format!("../{n}");
    let nested = format!("sub/{n}");
    let before = shm_entries_with(&tag);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("ipcctl", vec!["create", n, "--capacity", "0"]),
        ("ipcctl", vec!["create", n, "--capacity", "99999999"]),
        ("ipcctl", vec!["create", n, "--max-message", "0"]),
        ("ipcctl", vec!["create", n, "--max-message", "100G"]),
        ("ipcctl", vec!["create", n, "--max-message", "12Q"]),
        ("ipcctl", vec!["create", n, "--mode", "7777"]),
        ("ipcctl", vec!["create", n, "--mode", "400"]),
        ("ipcctl", vec!["create", n, "--mode", "abc"]),
        ("ipcctl", vec!["create", &escape]),
        ("ipcctl", vec!["create", &nested]),
        ("ipcctl", vec!["create", ""]),
        ("ipcctl", vec!["create", &long]),
        ("ipcctl", vec!["status", n]),
        ("ipcctl", vec!["remove", n]),
        (
            "producer",
            vec!["--segment", n, "--count", "1", "--size", "24"],
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--capacity", "0"],
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--max-message", "0"],
        ),
        (
            "producer",
            vec!["--segment", n, "--create", "--timeout", "soon"],
        ),
        ("producer", vec!["--segment", &escape, "--create"]),
        ("consumer", vec!["--segment", n, "--timeout", "1"]),
        ("consumer", vec!["--segment", n, "--producers", "0"]),
        ("consumer", vec!["--segment", &nested]),
    ];
    for (tool, args) in &cases {
        let mut c = ipc_tests::cmd(tool);
        c.args(args);
        let out = run(c, PATIENCE);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{tool} {args:?}: status {:?}: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{tool} {args:?}: {stderr}");
        assert_eq!(
            shm_entries_with(&tag),
            before,
            "{tool} {args:?} changed /dev/shm"
        );
        assert!(
            !Path::new("/dev").join(n).exists(),
            "{tool} {args:?} escaped"
        );
    }
}

#[test]
fn producer_create_with_bad_size_leaves_nothing() {
    let guard = ShmName::new("badsize");
    let mut c = ipc_tests::cmd("producer");
    c.args([
        "--segment",
        guard.as_str(),
        "--create",
        "--max-message",
        "32",
    ])
    .args(["--count", "1", "--size", "64"]);
    let out = run(c, PATIENCE);
    assert!(matches!(out.status.code(), Some(1 | 2)), "{:?}", out.status);
    assert!(
        !guard.path().exists(),
        "segment left behind: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An unbounded mailbox that outgrows /dev/shm: the sender gets a clear
/// error naming the space, and every message it had sent successfully is
/// still there for the receiver, in order.
#[test]
fn unbounded_growth_refused_by_a_full_dev_shm_loses_nothing() {
    let Some(out) = in_small_shm(
        r#""$PRODUCER" --mailbox m --create --capacity unbounded --max-message 64 --count 100000 --size 64 --id 1
echo "producer_rc=$?" >&2
"$CONSUMER" --mailbox m --verify --remove
echo "consumer_rc=$?" >&2"#,
    ) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("producer_rc=1"),
        "the producer must fail: {stderr}"
    );
    assert!(
        stderr.contains("cannot grow") && stderr.contains("not enough space"),
        "a clear error: {stderr}"
    );
    let sent: u64 = stderr
        .split("producer: ")
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no producer summary: {stderr}"));
    assert!(sent > 0 && sent < 100_000, "{stderr}");
    assert!(stderr.contains("consumer_rc=0"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "received={sent} corrupt=0 out_of_order=0 duplicate=0 producers=1"
        )),
        "every message sent before the refusal is delivered: {stderr}"
    );
}
