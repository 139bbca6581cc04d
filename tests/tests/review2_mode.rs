//! Review-2 reproducer: `SharedBuffer::create` with a mode that denies
//! the owner O_RDWR (0400, accepted by the library: only the CLI checks
//! modes) fails *after* publishing the segment. The creator's shm_open
//! (O_CREAT) gets a read-write descriptor whatever the mode, the header is
//! written and the magic published, then `Queue::assemble` reopens the
//! file through /proc/self/fd with O_RDWR for the liveness locks, which
//! the permission check refuses (and so does the fallback by name). The
//! caller gets an error, and a published, idle segment stays in /dev/shm.
//! Runs the creator as `nobody` (root bypasses the check); needs root and
//! setpriv, else prints "skipped".

use std::process::Command;

use ipc_tests::{run, ShmName, PATIENCE};

#[test]
fn a_failed_create_leaves_nothing_in_dev_shm() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the creator as nobody");
        return;
    }
    let name = ShmName::new("rv2-mode");
    let peer = ipc_tests::bin("review2-peer");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&peer)
        .args(["create-mode", name.as_str(), "400"]);
    let out = run(c, PATIENCE);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.code() == Some(2) || said.is_empty() {
        eprintln!(
            "skipped: setpriv failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let left = name.path().exists();
    assert!(
        out.status.success() || !left,
        "create as nobody with mode 0400 failed ({said}) but left {} in /dev/shm ({})",
        name.path().display(),
        ipc_core::admin::inspect(name.as_str())
            .map(|s| format!(
                "a published segment: {}",
                ipc_core::admin::state_of(&s).word()
            ))
            .unwrap_or_else(|e| e.to_string())
    );
}
