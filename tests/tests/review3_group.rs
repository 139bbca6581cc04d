//! Review-3 reproducer: a group-shared (0660) unbounded queue breaks as
//! soon as a group member who is not its owner grows the chain.
//!
//! `Queue::create` accepts 0660 (the owner keeps 0600), and a chain block
//! copies the segment's mode bits (`Queue::mode`), but not its group: a
//! block is created with the creating process's uid and *egid*. When the
//! member's primary group is not the segment's group, the block is
//! `member:member-primary 0660`, so the owner (in the segment's group
//! only) cannot open it: its consumer fails on block 1. (/dev/shm is
//! sticky, so the owner could not remove the drained block either.)
//! Needs root to take the two identities; else prints "skipped".

use std::process::Command;

use ipc_tests::{bin, run, ShmName, PATIENCE};

const SHARED_GID: u32 = 52000;
const OWNER: u32 = 52001;
const MEMBER: u32 = 52002;
const MEMBER_PRIMARY_GID: u32 = 52003;

fn peer(uid: u32, gid: u32, args: &[&str]) -> (bool, String) {
    let mut c = Command::new(bin("review3-peer"));
    c.args([
        "as",
        &uid.to_string(),
        &gid.to_string(),
        &SHARED_GID.to_string(),
    ]);
    c.args(args);
    let out = run(c, PATIENCE);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_group_member_growing_a_0660_chain_leaves_blocks_the_owner_can_read() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to take two identities");
        return;
    }
    let name = ShmName::new("rv3-group");
    let (ok, out) = peer(
        OWNER,
        SHARED_GID,
        &["create-unbounded", name.as_str(), "660"],
    );
    assert!(ok, "owner create: {out}");
    // The member (primary group 52003, also in 52000) sends 40 messages:
    // blocks 1 and 2 of 16 are its creation.
    let (ok, out) = peer(MEMBER, MEMBER_PRIMARY_GID, &["send", name.as_str(), "40"]);
    assert!(ok, "member send: {out}");
    let (ok, out) = peer(OWNER, SHARED_GID, &["recv", name.as_str(), "40"]);
    let blocks: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(name.as_str()))
        .map(|e| {
            use std::os::unix::fs::MetadataExt;
            let m = e.metadata().unwrap();
            format!(
                "{} {}:{} {:o}",
                e.file_name().to_string_lossy(),
                m.uid(),
                m.gid(),
                m.mode() & 0o7777
            )
        })
        .collect();
    assert!(
        ok,
        "the owner of a 0660 unbounded queue cannot read what a group member sent: {out}\n\
         files: {blocks:?}"
    );
}
