//! Security: segments are created owner-only (0600) unless asked otherwise,
//! another uid cannot attach, names cannot leave /dev/shm, and a symlink or
//! a FIFO planted under a segment's name is refused without harm.
//!
//! The other-uid checks need root (to run the consumer as `nobody` through
//! setpriv); without it they print "skipped: ..." on stderr and pass.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use ipc_tests::{bin, cmd, run, ShmName, PATIENCE};

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("segment file")
        .permissions()
        .mode()
        & 0o7777
}

fn ipcctl(args: &[&str]) -> std::process::Output {
    let mut c = cmd("ipcctl");
    c.args(args);
    run(c, PATIENCE)
}

#[test]
fn segments_are_owner_only_by_default() {
    let a = ShmName::new("mode-cli");
    let out = ipcctl(&[
        "create",
        a.as_str(),
        "--capacity",
        "4",
        "--max-message",
        "64",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode_of(&a.path()), 0o600);

    let b = ShmName::new("mode-lib");
    let _buf =
        ipc_core::SharedBuffer::create(b.as_str(), &ipc_core::BufferConfig::default()).unwrap();
    assert_eq!(mode_of(&b.path()), 0o600);

    let c = ShmName::new("mode-producer");
    let mut p = cmd("producer");
    p.args(["--segment", c.as_str(), "--create", "--max-message", "64"])
        .args(["--count", "1", "--size", "24", "--timeout", "1"]);
    let _ = run(p, PATIENCE);
    assert_eq!(mode_of(&c.path()), 0o600);
}

#[test]
fn mode_660_gives_0660_even_under_a_strict_umask() {
    let a = ShmName::new("mode660");
    let out = ipcctl(&["create", a.as_str(), "--max-message", "64", "--mode", "660"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode_of(&a.path()), 0o660);

    let b = ShmName::new("mode660-umask");
    let mut c = Command::new("sh");
    c.args([
        "-c",
        "umask 077; exec \"$0\" create \"$1\" --max-message 64 --mode 660",
    ])
    .arg(bin("ipcctl"))
    .arg(b.as_str());
    let out = run(c, PATIENCE);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode_of(&b.path()), 0o660);
}

/// Runs a workspace binary as `nobody` with group `group`, or `None` (after
/// printing why) when that is not possible here.
fn as_nobody(group: &str, tool: &str, args: &[&str]) -> Option<std::process::Output> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching to another uid needs root");
        return None;
    }
    let regid = format!("--regid={group}");
    let probe = Command::new("setpriv")
        .args(["--reuid=nobody", &regid, "--clear-groups", "true"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: setpriv cannot switch to nobody:{group}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped: setpriv is not available: {e}");
            return None;
        }
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", &regid, "--clear-groups"])
        .arg(bin(tool))
        .args(args);
    Some(run(c, PATIENCE))
}

#[test]
fn another_uid_cannot_attach() {
    let a = ShmName::new("other-uid");
    let out = ipcctl(&["create", a.as_str(), "--max-message", "64"]);
    assert!(out.status.success(), "{out:?}");
    for (tool, args) in [
        ("consumer", vec!["--segment", a.as_str(), "--timeout", "1"]),
        (
            "producer",
            vec!["--segment", a.as_str(), "--count", "1", "--size", "24"],
        ),
        ("ipcctl", vec!["status", a.as_str()]),
    ] {
        let Some(out) = as_nobody("nogroup", tool, &args) else {
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tool}: {stderr}");
        assert!(stderr.contains("permission denied"), "{tool}: {stderr}");
    }
    // A group-shared segment still refuses those outside the group...
    let b = ShmName::new("other-gid");
    let out = ipcctl(&["create", b.as_str(), "--max-message", "64", "--mode", "660"]);
    assert!(out.status.success(), "{out:?}");
    let args = ["--segment", b.as_str(), "--timeout", "1"];
    let Some(out) = as_nobody("nogroup", "consumer", &args) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    // ...and lets the group in (root's group, gid 0, owns the segment).
    let Some(out) = as_nobody("0", "consumer", &args) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains("no message for 1 s"), "{stderr}");
}

#[test]
fn names_cannot_escape_dev_shm() {
    let tag = ShmName::new("escape");
    let t = tag.as_str();
    let names = [
        format!("../{t}"),
        format!("a/{t}"),
        format!("/{t}"),
        format!("..%2f{t}"),
        "..".to_owned(),
        ".".to_owned(),
    ];
    for name in &names {
        for (tool, args) in [
            ("ipcctl", vec!["create", name.as_str()]),
            ("ipcctl", vec!["remove", name.as_str()]),
            ("producer", vec!["--segment", name.as_str(), "--create"]),
            (
                "consumer",
                vec!["--segment", name.as_str(), "--timeout", "1"],
            ),
        ] {
            let mut c = cmd(tool);
            c.args(&args);
            let out = run(c, PATIENCE);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(1 | 2)),
                "{tool} {args:?}: {:?}: {stderr}",
                out.status
            );
            assert!(
                stderr.contains("invalid segment name"),
                "{tool} {args:?}: {stderr}"
            );
        }
    }
    for p in ["/dev", "/dev/shm/a", "/", "/tmp"] {
        assert!(!Path::new(p).join(t).exists(), "something created {p}/{t}");
    }
}

#[test]
fn planted_symlink_or_fifo_is_refused_without_harm() {
    let link = ShmName::new("symlink");
    let target = std::env::temp_dir().join(format!("{}-target", link.as_str()));
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, link.path()).unwrap();
    let out = ipcctl(&["create", link.as_str(), "--max-message", "64"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let mut c = cmd("consumer");
    c.args(["--segment", link.as_str(), "--timeout", "1"]);
    let out = run(c, PATIENCE);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let mut c = cmd("producer");
    c.args(["--segment", link.as_str(), "--count", "1", "--size", "24"]);
    let out = run(c, PATIENCE);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 8);
    let _ = std::fs::remove_file(&target);

    let fifo = ShmName::new("fifo");
    let path = std::ffi::CString::new(fifo.path().to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let mut c = cmd("consumer");
    c.args(["--segment", fifo.as_str(), "--timeout", "1"]);
    let out = run(c, PATIENCE);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
