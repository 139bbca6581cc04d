//! Review 6: the producer's zero-copy stdin path (single-mode buffers)
//! against the copying path. Fails on the code it was written against.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::Duration;

use ipc_tests::{cmd, ChildGuard, ShmName, TempDir};

/// stdin a FIFO opened O_NONBLOCK that never had a writer: read(2) says end
/// of file at once (the copying path exits 0), but the zero-copy path
/// waits for poll(2) to report it readable, which it never does: the
/// producer hangs.
#[test]
fn zero_copy_producer_ends_at_eof_of_a_nonblocking_fifo_like_the_copying_one() {
    let dir = TempDir::new("r6-fifo");
    let fifo = dir.file("in");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut results = Vec::new();
    for single in [false, true] {
        let name = ShmName::new("r6-fifo");
        let stdin = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let mut c = cmd("producer");
        c.args([
            "--segment",
            name.as_str(),
            "--create",
            "--capacity",
            "8",
            "--max-message",
            "4K",
        ]);
        if single {
            c.arg("--single");
        }
        c.stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::new(c.spawn().unwrap());
        let st = child.wait_timeout(Duration::from_secs(5));
        results.push((single, st.map(|s| s.code())));
    }
    assert_eq!(
        results,
        [(false, Some(Some(0))), (true, Some(Some(0)))],
        "(single, exit within 5 s): the zero-copy producer did not end at end of file"
    );
}
