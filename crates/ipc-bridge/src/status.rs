//! What `ipcctl status` shows of a bridged mailbox: a short text file per
//! mailbox in the bridge's state folder, `<mailbox>.status`, rewritten
//! (write then rename, so a reader never sees half of it) a few times a
//! second while the bridge runs.

use std::io::Write;
use std::path::PathBuf;

use crate::shm::state_dir;

/// The status file of `mailbox`.
pub fn path(mailbox: &str) -> PathBuf {
    state_dir().join(format!("{mailbox}.status"))
}

/// Replaces `mailbox`'s status with `lines` (`label: value`).
pub fn write(mailbox: &str, lines: &[(&str, String)]) {
    let target = path(mailbox);
    let tmp = state_dir().join(format!(".{mailbox}.status.{}", std::process::id()));
    let mut text = String::new();
    for (label, value) in lines {
        text.push_str(&format!("{:<16}{value}\n", format!("{label}:")));
    }
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        log::debug!("cannot write {}: {e}", target.display());
    }
}

/// Removes `mailbox`'s status (the bridge stopped serving it).
pub fn remove(mailbox: &str) {
    let _ = std::fs::remove_file(path(mailbox));
}
