//! Review-2 reproducer: `Segment::create` (so `ipcctl create`,
//! `SharedBuffer::create`, `Mailbox::create`, `producer --create`)
//! deletes any regular file of the requested name whose first 8 bytes are
//! zero (or that is shorter than 8 bytes), once it is a second old and not
//! flocked: `unpublished_and_old` looks at the magic word only. README and
//! `--help` say create "fails if the name exists"; README says only "an
//! empty file, or a zero-headed file whose size is a multiple of 4096" is
//! taken for a half-created segment, and `ipcctl list` (which applies that
//! stricter `looks_unpublished` rule) does not even list this file. Another
//! program's file in /dev/shm (same user) is silently destroyed.

use std::time::Duration;

use ipc_tests::{cmd, run, ShmName, PATIENCE};

fn plant(name: &ShmName, bytes: &[u8]) {
    std::fs::write(name.path(), bytes).unwrap();
    // Setup, not a timing assertion: the rule takes files over a second old.
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn ipcctl_create_refuses_a_foreign_file_whose_first_word_is_zero() {
    let name = ShmName::new("rv2-foreign");
    let mut content = vec![0u8; 8];
    content.extend_from_slice(b"another program's precious data, not ours");
    plant(&name, &content);
    let list = run(
        {
            let mut c = cmd("ipcctl");
            c.arg("list");
            c
        },
        PATIENCE,
    );
    let listed = String::from_utf8_lossy(&list.stdout).contains(name.as_str());
    let mut c = cmd("ipcctl");
    c.args([
        "create",
        name.as_str(),
        "--capacity",
        "4",
        "--max-message",
        "64",
    ]);
    let out = run(c, PATIENCE);
    let now = std::fs::read(name.path()).unwrap_or_default();
    assert!(
        now == content,
        "ipcctl create (exit {:?}: {}) replaced a foreign {}-byte file that `ipcctl list` \
         {} (now {} bytes)",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim(),
        content.len(),
        if listed {
            "listed"
        } else {
            "does not even list"
        },
        now.len()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "create must fail: the name exists"
    );
}

#[test]
fn library_create_refuses_a_small_foreign_file() {
    let name = ShmName::new("rv2-foreign5");
    plant(&name, b"\0\0\0\0\0");
    let r = ipc_core::SharedBuffer::create(
        name.as_str(),
        &ipc_core::BufferConfig {
            capacity: 4,
            max_message: 64,
            ..Default::default()
        },
    );
    let size = std::fs::metadata(name.path()).map(|m| m.len()).unwrap_or(0);
    assert!(
        r.is_err() && size == 5,
        "SharedBuffer::create over a foreign 5-byte file: {:?}, file now {size} bytes",
        r.map(|_| ())
    );
}
