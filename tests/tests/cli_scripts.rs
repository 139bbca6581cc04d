//! The shell scripts in scripts/: the demo runs clean (and cleans up when
//! interrupted), start/attach/teardown round trip, teardown refuses while a
//! live process is attached unless --force, and usage errors exit 2.
//!
//! The scripts use the binaries this test was built with (IPC_BIN_DIR), so
//! no release build runs inside the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipc_tests::{bin, cmd, run, ChildGuard, ShmName, PATIENCE};

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("scripts")
}

/// A command for `scripts/NAME`, run from `/` (the scripts must not care
/// where they are started from), using this build's binaries.
fn script(name: &str) -> Command {
    let bin_dir = bin("ipcctl").parent().expect("bin dir").to_path_buf();
    let mut c = Command::new(scripts_dir().join(name));
    c.current_dir("/").env("IPC_BIN_DIR", bin_dir);
    c
}

fn run_script(name: &str, args: &[&str]) -> Output {
    let mut c = script(name);
    c.args(args);
    run(c, PATIENCE)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status(name: &ShmName) -> String {
    let mut c = cmd("ipcctl");
    c.args(["status", name.as_str()]);
    text(&run(c, PATIENCE).stdout)
}

/// Polls `cond` until it holds; panics after [`PATIENCE`] (a hang, not a
/// timing assertion).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A directory under the system temp dir, removed with its contents on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ipct-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }

    fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.0)
            .expect("read temp dir")
            .next()
            .is_none()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// /dev/shm entries whose name starts with `prefix`.
fn shm_entries(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(prefix))
        .collect()
}

/// The demo's segments (`ipc-demo-PID-*`, and its port `port.ipc-demo-PID-*`),
/// removed on drop if a failing demo left them.
struct DemoSegments(String);

impl DemoSegments {
    fn left(&self) -> Vec<String> {
        let mut v = shm_entries(&self.0);
        v.extend(shm_entries(&format!("port.{}", self.0)));
        v
    }
}

impl Drop for DemoSegments {
    fn drop(&mut self) {
        for f in self.left() {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(f));
        }
    }
}

#[test]
fn demo_runs_clean_and_leaves_nothing_behind() {
    let tmp = TempDir::new("demo");
    let guard = ChildGuard::new(
        script("demo.sh")
            .env("TMPDIR", &tmp.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn demo.sh"),
    );
    let segments = DemoSegments(format!("ipc-demo-{}-", guard.pid()));
    let out = guard.output_timeout(PATIENCE);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{stderr}");
    assert!(
        stderr.contains("received=40000 corrupt=0 out_of_order=0 duplicate=0 producers=2"),
        "no clean verify summary:\n{stderr}"
    );
    assert!(stderr.contains("arrived identical"), "{stderr}");
    assert_eq!(segments.left(), Vec::<String>::new());
    assert!(tmp.is_empty(), "demo left temp files");
}

#[test]
fn interrupted_demo_stops_its_processes_and_cleans_up() {
    let tmp = TempDir::new("demo-int");
    let mut guard = ChildGuard::new(
        script("demo.sh")
            .env("TMPDIR", &tmp.0)
            // Enough work that the demo is surely still running when
            // interrupted; the interrupt, not the count, ends it.
            .env("DEMO_COUNT", "1000000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn demo.sh"),
    );
    let pid = guard.pid();
    let segments = DemoSegments(format!("ipc-demo-{pid}-"));
    let buf = ShmName(format!("ipc-demo-{pid}-buf"));
    // Wait until the consumer and both producers are attached, and note
    // their pids.
    let mut peers = Vec::new();
    wait_until("the demo's three processes", || {
        peers = status(&buf)
            .lines()
            .filter(|l| l.trim_end().ends_with("alive"))
            .filter_map(|l| l.split_whitespace().nth(3)?.parse::<i32>().ok())
            .collect();
        peers.len() == 3
    });

    // Ctrl-C (the terminal would also signal the children; the script
    // must not rely on that).
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let status = guard
        .wait_timeout(PATIENCE)
        .expect("the demo did not stop after SIGINT");
    assert_eq!(status.code(), Some(130), "interrupted demo: {status:?}");
    for p in peers {
        // SAFETY: signal 0 only checks existence.
        let alive = unsafe { libc::kill(p, 0) } == 0;
        assert!(!alive, "the demo left process {p} running");
    }
    assert_eq!(segments.left(), Vec::<String>::new());
    assert!(tmp.is_empty(), "demo left temp files");
    drop(buf);
}

#[test]
fn start_attach_teardown_round_trip() {
    let name = ShmName::new("script-trip");
    let n = name.as_str();
    let out = run_script("start.sh", &[n, "8", "1K"]);
    assert!(out.status.success(), "start.sh: {}", text(&out.stderr));
    let st = status(&name);
    assert!(st.contains("capacity:       8 messages"), "{st}");
    assert!(st.contains("max message:    1024 bytes"), "{st}");

    let out = run_script(
        "attach.sh",
        &[n, "producer", "--count", "5", "--size", "64", "--id", "7"],
    );
    assert!(
        out.status.success(),
        "attach.sh producer: {}",
        text(&out.stderr)
    );
    assert!(status(&name).contains("queued:         5"));
    let out = run_script("attach.sh", &[n, "consumer", "--verify"]);
    assert!(
        out.status.success(),
        "attach.sh consumer: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("received=5 corrupt=0 out_of_order=0 duplicate=0 producers=1"),
        "{}",
        text(&out.stderr)
    );

    // Data passes through stdin and stdout untouched.
    let mut c = script("attach.sh");
    c.args([n, "producer"]);
    let mut p = ChildGuard::new(
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    {
        use std::io::Write;
        let mut stdin = p.0.as_mut().expect("child").stdin.take().expect("stdin");
        stdin.write_all(b"hello through a script\n").expect("write");
    }
    let out = p.output_timeout(PATIENCE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_script("attach.sh", &[n, "consumer"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello through a script\n");

    // Exit codes pass through attach.sh.
    let out = run_script("attach.sh", &[n, "consumer", "--bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let missing = ShmName::new("script-missing");
    let out = run_script("attach.sh", &[missing.as_str(), "consumer"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not exist"));

    let out = run_script("teardown.sh", &[n]);
    assert!(out.status.success(), "teardown.sh: {}", text(&out.stderr));
    assert!(!name.path().exists(), "teardown.sh left the segment");
    let out = run_script("teardown.sh", &[n]);
    assert_eq!(out.status.code(), Some(1), "removing twice must fail");
}

#[test]
fn teardown_refuses_while_a_consumer_is_attached_unless_forced() {
    let name = ShmName::new("script-live");
    let n = name.as_str();
    let out = run_script("start.sh", &[n]);
    assert!(out.status.success(), "start.sh: {}", text(&out.stderr));
    let consumer = ChildGuard::new(
        script("attach.sh")
            .args([n, "consumer"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn attach.sh consumer"),
    );
    // attach.sh execs the consumer: the pid we started is the one attached.
    let line = format!("pid {:<8} consumer  alive", consumer.pid());
    wait_until("the consumer to attach", || status(&name).contains(&line));

    let out = run_script("teardown.sh", &[n]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "teardown.sh must refuse:\n{stderr}"
    );
    assert!(stderr.contains(n) && stderr.contains("live"), "{stderr}");
    assert!(name.path().exists(), "refused, yet the segment is gone");

    let out = run_script("teardown.sh", &[n, "--force"]);
    assert!(
        out.status.success(),
        "teardown.sh --force: {}",
        text(&out.stderr)
    );
    assert!(!name.path().exists(), "--force left the segment");
    drop(consumer);
}

#[test]
fn scripts_print_usage_and_check_arguments() {
    for s in ["start.sh", "attach.sh", "teardown.sh", "demo.sh"] {
        for flag in ["-h", "--help"] {
            let out = run_script(s, &[flag]);
            assert_eq!(out.status.code(), Some(0), "{s} {flag}");
            assert!(text(&out.stdout).contains("Usage:"), "{s} {flag}");
        }
    }
    let cases: &[(&str, &[&str], &str)] = &[
        ("start.sh", &[], "missing NAME"),
        ("start.sh", &["x", "1", "2", "3"], "too many arguments"),
        ("start.sh", &["--bogus"], "unknown option"),
        ("attach.sh", &[], "missing NAME"),
        ("attach.sh", &["x"], "missing role"),
        ("attach.sh", &["x", "reader"], "'producer' or 'consumer'"),
        ("teardown.sh", &[], "missing NAME"),
        ("teardown.sh", &["x", "y"], "more than one NAME"),
        (
            "teardown.sh",
            &["--orphans", "x"],
            "--orphans takes no NAME",
        ),
        ("teardown.sh", &["x", "--bogus"], "unknown option"),
        ("demo.sh", &["extra"], "unexpected argument"),
    ];
    for (s, args, needle) in cases {
        let out = run_script(s, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{s} {args:?}:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{s} {args:?}: want {needle:?} in\n{stderr}"
        );
    }
    // Arguments the binaries reject come back with their exit code.
    let name = ShmName::new("script-args");
    let out = run_script("start.sh", &[name.as_str(), "many"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("'many'"));
    assert!(!name.path().exists());
}

/// `teardown.sh --orphans` must run `ipcctl clean`. Checked against a stub
/// `ipcctl` that prints its arguments: the real one would remove every
/// orphaned segment on the machine, including those of tests running
/// beside this one.
#[test]
fn teardown_maps_its_arguments_onto_ipcctl() {
    use std::os::unix::fs::PermissionsExt;
    let stub = TempDir::new("stub-bin");
    let ipcctl = stub.0.join("ipcctl");
    std::fs::write(&ipcctl, "#!/bin/sh\necho \"ipcctl $*\"\n").expect("write stub");
    std::fs::set_permissions(&ipcctl, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (args, expected) in [
        (&["--orphans"][..], "ipcctl clean"),
        (&["some-name"][..], "ipcctl remove some-name"),
        (
            &["some-name", "--force"][..],
            "ipcctl remove some-name --force",
        ),
        (
            &["--force", "some-name"][..],
            "ipcctl remove some-name --force",
        ),
    ] {
        let mut c = script("teardown.sh");
        c.env("IPC_BIN_DIR", &stub.0).args(args);
        let out = run(c, PATIENCE);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), expected, "teardown.sh {args:?}");
    }
}
