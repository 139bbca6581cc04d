//! Review 6: `recv_batch` whose callback forks. `recv_with` tells the child
//! `Inherited` (the claim is the parent's); `recv_batch` does so only if
//! the fork happened on the batch's first message: on a later one the
//! child is told `Ok(n)`, n counting neither the message its `f` just
//! handled nor the fact that it holds nothing. One test in this file, so
//! that the process forks while no other test thread runs.

use ipc_core::{BufferConfig, RecvError, SharedBuffer};
use ipc_tests::ShmName;

#[test]
fn recv_batch_tells_a_child_forked_in_its_callback_inherited() {
    let mut seen = Vec::new();
    for single in [false, true] {
        let name = ShmName::new("rv6-fork-batch");
        let c = BufferConfig {
            capacity: 8,
            max_message: 64,
            ..Default::default()
        };
        let buf = if single {
            SharedBuffer::create_single(name.as_str(), &c)
        } else {
            SharedBuffer::create(name.as_str(), &c)
        }
        .unwrap();
        let mut tx = buf.producer().unwrap();
        let mut rx = buf.consumer().unwrap();
        tx.send_batch([b"1", b"2", b"3"]).unwrap();
        let mut k = 0;
        let mut in_child = false;
        let r = rx.try_recv_batch(4, |_| {
            k += 1;
            if k == 2 {
                // SAFETY: the child only reports and `_exit`s.
                in_child = unsafe { libc::fork() } == 0;
            }
        });
        if in_child {
            let code = match r {
                Err(RecvError::Inherited) => 0,
                Ok(n) => 20 + n as i32,
                Err(_) => 30,
            };
            // SAFETY: leave without the parent's destructors or harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::wait(&mut status) };
        assert!(libc::WIFEXITED(status));
        let code = libc::WEXITSTATUS(status);
        assert_eq!(r.unwrap(), 3, "the parent takes the whole batch");
        seen.push((
            single,
            match code {
                0 => "Err(Inherited)".to_owned(),
                c @ 20..=29 => format!("Ok({})", c - 20),
                _ => "another error".to_owned(),
            },
        ));
    }
    assert!(
        seen.iter().all(|(_, s)| s == "Err(Inherited)"),
        "what recv_batch returned in a child forked by f on the 2nd message: {seen:?}"
    );
}
