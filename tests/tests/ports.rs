//! Direct addressing across processes: ports registered by name, messages
//! signed with the sender's name, selective receive, and names released by
//! processes that die.

#[path = "mailbox_common.rs"]
mod common;

use std::time::Duration;

use common::*;
use ipc_core::mailbox::MailboxConfig;
use ipc_core::ports::{mailbox_name, Port, PortError, PortSender};
use ipc_core::{Deadline, RecvError};
use ipc_tests::ShmName;

/// A unique port name, and a guard removing its mailbox (`port.NAME`).
fn port_name(tag: &str) -> (String, ShmName) {
    let base = ShmName::new(tag);
    let name = base.as_str().to_owned();
    (name.clone(), ShmName(mailbox_name(&name)))
}

const ROUNDS: u64 = 300;

/// Three processes a → b → c → a pass a token `ROUNDS` times round, each
/// receiving on its own port and sending to the next by name; each checks
/// that every token comes from its predecessor and has the expected value.
#[test]
fn token_ring_of_three_processes() {
    let names: Vec<(String, ShmName)> = ["ra", "rb", "rc"].iter().map(|t| port_name(t)).collect();
    let rounds = ROUNDS.to_string();
    let mut peers: Vec<Peer> = (0..3)
        .map(|i| {
            let me = &names[i].0;
            let prev = &names[(i + 2) % 3].0;
            let next = &names[(i + 1) % 3].0;
            let pos = i.to_string();
            Peer::spawn(&[
                "ring",
                me,
                prev,
                next,
                "--position",
                &pos,
                "--rounds",
                &rounds,
            ])
        })
        .collect();
    for p in &mut peers {
        p.expect("registered");
    }
    for p in &mut peers {
        p.write("go");
    }
    for (i, mut p) in peers.into_iter().enumerate() {
        let last = if i == 0 {
            3 * ROUNDS
        } else {
            3 * (ROUNDS - 1) + i as u64
        };
        let r = kv(&p.line());
        check(
            &r,
            &[
                ("received", &rounds),
                ("bad_from", "0"),
                ("bad_token", "0"),
                ("last", &last.to_string()),
                ("end", "done"),
            ],
        );
        p.finish();
    }
    for (_, guard) in &names {
        assert!(
            !guard.path().exists(),
            "{guard} left after its owner exited"
        );
    }
}

/// `recv_from` takes the next message of one sender, keeping the others'
/// messages, in order, for later receives.
#[test]
fn recv_from_is_selective_and_keeps_the_rest_in_order() {
    let (me, _guard) = port_name("sel");
    let (x, y) = (format!("{me}-x"), format!("{me}-y"));
    let mut port = Port::register(&me, &MailboxConfig::default()).unwrap();
    // Nobody has sent yet: a timeout, not end of stream.
    assert_eq!(
        port.recv_from(&x, Deadline::after(Duration::from_millis(20))),
        Err(RecvError::Timeout)
    );
    let px = spawn_bg(&["port-send", &x, &me, "--count", "10"]);
    let py = spawn_bg(&["port-send", &y, &me, "--count", "10"]);
    check(&finish_bg(px), &[("sent", "10"), ("end", "done")]);
    check(&finish_bg(py), &[("sent", "10"), ("end", "done")]);
    for i in 0..10 {
        let m = port.recv_from(&y, Deadline::after(PATIENCE)).unwrap();
        assert_eq!(m, format!("{y}-{i}").as_bytes());
    }
    // Both senders have gone: nothing will ever come from z.
    assert_eq!(
        port.recv_from("z", Deadline::after(PATIENCE)),
        Err(RecvError::Disconnected)
    );
    let m = port.recv_from(&x, Deadline::Now).unwrap();
    assert_eq!(m, format!("{x}-0").as_bytes());
    for i in 1..10 {
        let m = port.try_recv().unwrap();
        assert_eq!(
            (m.from.as_str(), m.payload),
            (x.as_str(), format!("{x}-{i}").into_bytes())
        );
    }
    assert_eq!(port.try_recv(), Err(RecvError::Disconnected));
}

/// A live owner keeps its name (`NameTaken` with its pid, for this process
/// and for another); once it is SIGKILLed, a new process takes the name
/// over, and a sender that had a link to the dead owner reaches the new
/// one. A clean exit releases the name too.
#[test]
fn killed_owner_releases_the_name() {
    let (name, guard) = port_name("own");
    let mut first = Peer::spawn(&["port-own", &name, "--count", "1000"]);
    let pid = first.pid();
    assert_eq!(first.line(), format!("registered pid={pid}"));
    match Port::register(&name, &MailboxConfig::default()) {
        Err(PortError::NameTaken { name: n, pid: p }) => {
            assert_eq!((n.as_str(), p), (name.as_str(), pid))
        }
        other => panic!("{other:?}"),
    }
    let mut second = Peer::spawn(&["port-own", &name]);
    assert_eq!(second.line(), format!("taken pid={pid}"));
    second.finish();

    let mut out = PortSender::new("tester").unwrap();
    out.send_to(&name, b"before").unwrap();
    assert_eq!(first.line(), "msg tester before");
    first.kill();

    let mut third = Peer::spawn(&["port-own", &name, "--count", "1"]);
    let pid3 = third.pid();
    assert_eq!(third.line(), format!("registered pid={pid3}"));
    out.send_to_until(&name, b"after", Deadline::after(PATIENCE))
        .unwrap();
    assert_eq!(third.line(), "msg tester after");
    third.expect("done");
    match Port::register(&name, &MailboxConfig::default()) {
        Err(PortError::NameTaken { pid: p, .. }) => assert_eq!(p, pid3),
        other => panic!("{other:?}"),
    }
    third.finish();
    assert!(!guard.path().exists());
    let mine = Port::register(&name, &MailboxConfig::default()).unwrap();
    assert_eq!(mine.name(), name);
}
